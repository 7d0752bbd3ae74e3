build-b/tools/synth_phantom.o: tools/synth_phantom.c \
 tools/synth_phantom.h common/err.h common/fsutil.h common/labels.h \
 common/nii.h
tools/synth_phantom.h:
common/err.h:
common/fsutil.h:
common/labels.h:
common/nii.h:
