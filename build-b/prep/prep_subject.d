build-b/prep/prep_subject.o: prep/prep_subject.c prep/prep.h \
 common/cache.h common/labels.h common/labels.h common/err.h common/nii.h \
 common/orient.h common/resample.h
prep/prep.h:
common/cache.h:
common/labels.h:
common/labels.h:
common/err.h:
common/nii.h:
common/orient.h:
common/resample.h:
