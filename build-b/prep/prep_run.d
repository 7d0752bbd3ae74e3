build-b/prep/prep_run.o: prep/prep_run.c prep/prep.h common/cache.h \
 common/labels.h common/labels.h common/err.h common/fsutil.h \
 common/progress.h common/split.h
prep/prep.h:
common/cache.h:
common/labels.h:
common/labels.h:
common/err.h:
common/fsutil.h:
common/progress.h:
common/split.h:
