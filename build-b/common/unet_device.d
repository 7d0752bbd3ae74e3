build-b/common/unet_device.o: common/unet_device.c common/err.h \
 common/unet.h
common/err.h:
common/unet.h:
