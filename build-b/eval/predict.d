build-b/eval/predict.o: eval/predict.c eval/predict.h common/labels.h \
 common/unet.h common/err.h common/fsutil.h eval/metrics.h common/nii.h \
 common/orient.h common/progress.h common/resample.h
eval/predict.h:
common/labels.h:
common/unet.h:
common/err.h:
common/fsutil.h:
eval/metrics.h:
common/nii.h:
common/orient.h:
common/progress.h:
common/resample.h:
