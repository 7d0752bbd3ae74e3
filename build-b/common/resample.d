build-b/common/resample.o: common/resample.c common/resample.h \
 common/err.h
common/resample.h:
common/err.h:
