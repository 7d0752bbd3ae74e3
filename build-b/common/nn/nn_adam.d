build-b/common/nn/nn_adam.o: common/nn/nn_adam.c common/nn/nn_impl.h \
 common/nn/nn.h
common/nn/nn_impl.h:
common/nn/nn.h:
