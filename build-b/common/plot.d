build-b/common/plot.o: common/plot.c common/plot.h common/err.h \
 common/fsutil.h
common/plot.h:
common/err.h:
common/fsutil.h:
