build-b/common/split.o: common/split.c common/split.h common/cache.h \
 common/labels.h common/err.h common/fsutil.h
common/split.h:
common/cache.h:
common/labels.h:
common/err.h:
common/fsutil.h:
