build-b/common/nn/nn_bn.o: common/nn/nn_bn.c common/nn/nn_impl.h \
 common/nn/nn.h
common/nn/nn_impl.h:
common/nn/nn.h:
