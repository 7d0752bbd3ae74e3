build-b/tests/bench_unet.o: tests/bench_unet.c \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h \
 tests/benchutil.h common/err.h common/unet.h
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
tests/benchutil.h:
common/err.h:
common/unet.h:
