build-b/eval/mesh.o: eval/mesh.c eval/mesh.h common/err.h
eval/mesh.h:
common/err.h:
