build-b/common/nn/nn_conv1x1.o: common/nn/nn_conv1x1.c \
 common/nn/nn_impl.h common/nn/nn.h
common/nn/nn_impl.h:
common/nn/nn.h:
