build-b/eval/report_common.o: eval/report_common.c eval/report.h \
 common/labels.h eval/metrics.h common/plot.h common/err.h \
 common/fsutil.h
eval/report.h:
common/labels.h:
eval/metrics.h:
common/plot.h:
common/err.h:
common/fsutil.h:
