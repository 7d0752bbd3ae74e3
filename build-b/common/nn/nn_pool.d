build-b/common/nn/nn_pool.o: common/nn/nn_pool.c common/nn/nn_impl.h \
 common/nn/nn.h
common/nn/nn_impl.h:
common/nn/nn.h:
