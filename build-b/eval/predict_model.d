build-b/eval/predict_model.o: eval/predict_model.c train/ckpt.h \
 common/labels.h common/unet.h train/loader.h common/cache.h \
 common/labels.h common/err.h eval/predict.h
train/ckpt.h:
common/labels.h:
common/unet.h:
train/loader.h:
common/cache.h:
common/labels.h:
common/err.h:
eval/predict.h:
