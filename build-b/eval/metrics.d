build-b/eval/metrics.o: eval/metrics.c eval/metrics.h common/err.h
eval/metrics.h:
common/err.h:
