build-b/train/ckpt.o: train/ckpt.c train/ckpt.h common/labels.h \
 common/unet.h common/err.h common/safetensors.h
train/ckpt.h:
common/labels.h:
common/unet.h:
common/err.h:
common/safetensors.h:
