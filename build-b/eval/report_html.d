build-b/eval/report_html.o: eval/report_html.c eval/report.h \
 common/labels.h eval/metrics.h common/err.h common/fsutil.h eval/mesh.h
eval/report.h:
common/labels.h:
eval/metrics.h:
common/err.h:
common/fsutil.h:
eval/mesh.h:
