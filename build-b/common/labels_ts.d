build-b/common/labels_ts.o: common/labels_ts.c common/labels.h
common/labels.h:
