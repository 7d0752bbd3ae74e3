build-b/train/schedule.o: train/schedule.c train/schedule.h
train/schedule.h:
