build-b/common/nii.o: common/nii.c common/nii.h common/err.h
common/nii.h:
common/err.h:
