build-b/common/fsutil.o: common/fsutil.c common/fsutil.h common/err.h
common/fsutil.h:
common/err.h:
