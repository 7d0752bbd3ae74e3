build-b/train/prior.o: train/prior.c train/prior.h common/cache.h \
 common/labels.h common/unet.h common/err.h
train/prior.h:
common/cache.h:
common/labels.h:
common/unet.h:
common/err.h:
