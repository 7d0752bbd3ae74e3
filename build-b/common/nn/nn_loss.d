build-b/common/nn/nn_loss.o: common/nn/nn_loss.c common/nn/nn_impl.h \
 common/nn/nn.h
common/nn/nn_impl.h:
common/nn/nn.h:
