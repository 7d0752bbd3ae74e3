build-b/eval/compare.o: eval/compare.c eval/compare.h common/labels.h \
 eval/report.h eval/metrics.h common/err.h common/fsutil.h common/nii.h \
 common/orient.h
eval/compare.h:
common/labels.h:
eval/report.h:
eval/metrics.h:
common/err.h:
common/fsutil.h:
common/nii.h:
common/orient.h:
