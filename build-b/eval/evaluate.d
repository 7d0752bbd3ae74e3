build-b/eval/evaluate.o: eval/evaluate.c eval/evaluate.h common/labels.h \
 common/unet.h common/progress.h eval/report.h eval/metrics.h \
 common/cache.h common/labels.h common/err.h eval/predict.h
eval/evaluate.h:
common/labels.h:
common/unet.h:
common/progress.h:
eval/report.h:
eval/metrics.h:
common/cache.h:
common/labels.h:
common/err.h:
eval/predict.h:
