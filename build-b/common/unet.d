build-b/common/unet.o: common/unet.c common/err.h common/nn/nn.h \
 common/unet.h
common/err.h:
common/nn/nn.h:
common/unet.h:
