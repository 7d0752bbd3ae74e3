build-b/common/nn/nn_pack.o: common/nn/nn_pack.c common/nn/nn_impl.h \
 common/nn/nn.h
common/nn/nn_impl.h:
common/nn/nn.h:
