build-b/common/nn/nn_gemm.o: common/nn/nn_gemm.c common/nn/nn_impl.h \
 common/nn/nn.h
common/nn/nn_impl.h:
common/nn/nn.h:
