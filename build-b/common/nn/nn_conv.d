build-b/common/nn/nn_conv.o: common/nn/nn_conv.c common/nn/nn_impl.h \
 common/nn/nn.h
common/nn/nn_impl.h:
common/nn/nn.h:
