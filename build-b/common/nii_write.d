build-b/common/nii_write.o: common/nii_write.c common/nii.h common/err.h
common/nii.h:
common/err.h:
