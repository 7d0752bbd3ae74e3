build-b/common/nn/nn_tfile.o: common/nn/nn_tfile.c common/err.h \
 common/fsutil.h common/nn/nn_tfile.h
common/err.h:
common/fsutil.h:
common/nn/nn_tfile.h:
