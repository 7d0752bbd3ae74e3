build-b/common/font.o: common/font.c common/plot.h
common/plot.h:
