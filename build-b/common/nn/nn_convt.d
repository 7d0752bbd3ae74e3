build-b/common/nn/nn_convt.o: common/nn/nn_convt.c common/nn/nn_impl.h \
 common/nn/nn.h
common/nn/nn_impl.h:
common/nn/nn.h:
