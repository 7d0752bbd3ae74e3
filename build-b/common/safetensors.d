build-b/common/safetensors.o: common/safetensors.c common/safetensors.h \
 common/err.h common/fsutil.h
common/safetensors.h:
common/err.h:
common/fsutil.h:
