build-b/common/cache_record.o: common/cache_record.c common/cache.h \
 common/labels.h common/err.h
common/cache.h:
common/labels.h:
common/err.h:
