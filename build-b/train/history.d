build-b/train/history.o: train/history.c train/history.h common/err.h \
 common/fsutil.h common/plot.h
train/history.h:
common/err.h:
common/fsutil.h:
common/plot.h:
