build-b/prep/prep_tools.o: prep/prep_tools.c prep/prep.h common/cache.h \
 common/labels.h common/labels.h common/err.h common/fsutil.h \
 common/nii.h common/progress.h
prep/prep.h:
common/cache.h:
common/labels.h:
common/labels.h:
common/err.h:
common/fsutil.h:
common/nii.h:
common/progress.h:
