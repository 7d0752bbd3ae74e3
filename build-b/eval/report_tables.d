build-b/eval/report_tables.o: eval/report_tables.c eval/report.h \
 common/labels.h eval/metrics.h common/err.h common/fsutil.h
eval/report.h:
common/labels.h:
eval/metrics.h:
common/err.h:
common/fsutil.h:
