build-b/common/labels.o: common/labels.c common/labels.h common/err.h \
 common/fsutil.h
common/labels.h:
common/err.h:
common/fsutil.h:
