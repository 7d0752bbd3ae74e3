build-b/train/loader.o: train/loader.c train/loader.h common/cache.h \
 common/labels.h common/err.h
train/loader.h:
common/cache.h:
common/labels.h:
common/err.h:
