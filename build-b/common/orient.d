build-b/common/orient.o: common/orient.c common/orient.h common/err.h
common/orient.h:
common/err.h:
