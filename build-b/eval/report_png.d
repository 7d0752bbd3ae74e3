build-b/eval/report_png.o: eval/report_png.c eval/report.h \
 common/labels.h eval/metrics.h common/err.h common/fsutil.h \
 common/plot.h
eval/report.h:
common/labels.h:
eval/metrics.h:
common/err.h:
common/fsutil.h:
common/plot.h:
