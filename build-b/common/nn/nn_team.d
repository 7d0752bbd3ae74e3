build-b/common/nn/nn_team.o: common/nn/nn_team.c common/err.h \
 common/nn/nn_impl.h common/nn/nn.h
common/err.h:
common/nn/nn_impl.h:
common/nn/nn.h:
