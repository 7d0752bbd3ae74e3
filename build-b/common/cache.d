build-b/common/cache.o: common/cache.c common/cache.h common/labels.h \
 common/err.h common/fsutil.h
common/cache.h:
common/labels.h:
common/err.h:
common/fsutil.h:
