# segkit Makefile.
#   make            build everything: bin/segprep, bin/segtrain, bin/segeval, bin/synthct, the test,
#                   benchmark and fuzz-replay programs (and the CUDA emulator's twins when the headers are here)
#   make progs      only the four programs
#   make demo       install missing packages, build, run the phantom demo end to end
#   make test       install missing packages, build, run every test, then again under ASan+UBSan
#                   (each pass ends with "N passed, N failed, N skipped")
#   make check      the quick unit tests only; builds only those (CPU backend, no emulator, no
#                   benchmarks, no fuzzers; with CUDA on it builds them in $(BUILD)-cpu)
#   make test-asan  only the sanitizer pass (build in build-asan/, bin-asan/)
#   make bench      build the benchmarks, run them, JSON on stdout
#   make fuzz       libFuzzer targets for a fixed budget (clang)
# Options:
#   GPU=0|1         force the CUDA backend off/on (default: on when nvcc and cudnn.h are found)
#   CUDA_HOME=dir   CUDA toolkit location (default /usr/local/cuda)
#   NVCC_ARCH=...   GPU architectures (default sm_80 and sm_90 code plus compute_90 PTX)
#   OPT=...         optimisation flags (default -O2 -march=x86-64-v2: runs on any x86-64 since
#                   2009; the common/nn kernels are also built for AVX2 and AVX-512 and picked at
#                   run time, docs/cpu.md. OPT="-O2 -march=native" for a build for this CPU only)
#   SAN=1           sanitizer build (used by test-asan)
#
# Layering (the build enforces it): one archive per folder, each compiled with the include
# paths it may use, so a wrong #include fails to compile and a call into another program's
# folder fails to link.
#   common/ common/nn/ common/gpu/*.cu  -> $(BUILD)/libsegcommon.a  (-Icommon -Icommon/nn -Icommon/gpu)
#   prep/   -> $(BUILD)/libsegprep.a   + bin/segprep   (-Icommon -Iprep)
#   train/  -> $(BUILD)/libsegtrain.a  + bin/segtrain  (-Icommon -Itrain)
#   eval/   -> $(BUILD)/libsegeval.a   + bin/segeval   (-Icommon -Ieval)
#   synth/  -> $(BUILD)/libsegsynth.a  + bin/synthct   (-Icommon -Isynth)
#   tests/  may include and link what they test: every folder above, plus -Itests.
# A program links its own archive and libsegcommon.a only. eval/ generated sources
# (viewer.js embedded as a C array) are built into $(BUILD)/gen/.
CC       ?= cc
BUILD    ?= build
BIN      ?= bin
FLAGS_STAMP := $(BUILD)/flags.txt
CUDA_HOME ?= /usr/local/cuda
VERSION  := 0.1.0

# portable baseline (issue 18): x86-64-v2 everywhere; the common/nn kernels get their own
# flags in the per-ISA block after the sources
SEG_X86 := $(if $(filter x86_64%,$(shell $(CC) -dumpmachine)),1,0)
ifeq ($(SEG_X86),1)
  OPT ?= -O2 -march=x86-64-v2
else
  OPT ?= -O2
endif

CPPFLAGS += -I/usr/include/x86_64-linux-gnu/openblas-pthread -D_GNU_SOURCE -DSEG_VERSION='"$(VERSION)"'
CFLAGS   += -std=c11 -g $(OPT) -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation -pthread -fno-strict-aliasing
LDFLAGS  += -pthread -L/usr/lib/x86_64-linux-gnu/openblas-pthread
LDLIBS   += -llmdb -lzstd -lz -lopenblas -lcjson -lpng -lm

ifeq ($(SAN),1)
  CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
endif

# ---- optional CUDA backend --------------------------------------------------
HAVE_NVCC  := $(shell test -x $(CUDA_HOME)/bin/nvcc && echo 1 || echo 0)
HAVE_CUDNN := $(shell test -f $(CUDA_HOME)/include/cudnn.h -o -f /usr/include/cudnn.h && echo 1 || echo 0)
ifeq ($(HAVE_NVCC)$(HAVE_CUDNN),11)
  GPU ?= 1
else
  GPU ?= 0
endif
CU_SRC := $(wildcard common/gpu/*.cu)
ifeq ($(CU_SRC),)
  ifeq ($(GPU),1)
    $(info [segkit] CUDA toolkit found at $(CUDA_HOME), but this version has no GPU backend sources: CPU build)
  endif
  override GPU := 0
endif
ifeq ($(GPU),1)
  ifneq ($(SAN),1)
    NVCC      := $(CUDA_HOME)/bin/nvcc
    NVCC_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]
    NVCCFLAGS ?= -O3 -std=c++17 $(NVCC_ARCH) -Xcompiler -Wall,-fno-strict-aliasing
    CPPFLAGS  += -DSEG_HAVE_CUDA -I$(CUDA_HOME)/include
    CU_OBJS   := $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRC)) $(BUILD)/common/gpu/unet_cuda.o
    CUDA_LIBDIR := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib))
    LDFLAGS   += -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR)
    LDLIBS    += -lcudnn -lcublas -lcudart -lstdc++
    CU_TEST_BINS := $(patsubst tests/%.cu,$(BUILD)/tests/%,$(wildcard tests/test_*.cu))
  endif
endif
ifneq ($(CU_SRC),)
  $(info $(if $(filter 1,$(GPU)),[segkit] CUDA backend: on ($(CUDA_HOME)),[segkit] CUDA backend: off (CPU/OpenBLAS only; GPU=1 to force)))
endif

# ---- sources: one archive per folder ------------------------------------------
# Program folders: the file named like the program holds main(); the rest is the folder's archive.
PROG_DIRS   := prep train eval synth
MAINS       := prep/segprep.c train/segtrain.c eval/segeval.c synth/synthct.c
COMMON_SRC  := $(wildcard common/*.c common/nn/*.c)
COMMON_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(COMMON_SRC)) $(CU_OBJS)
LIBCOMMON   := $(BUILD)/libsegcommon.a

# ---- per-ISA kernels (issue 18, docs/cpu.md) ------------------------------------------
# The common/nn kernel sources (NN_KSRC) are built once per NN_ISAS entry instead of once
# (-DNN_ISA_<isa> selects the code and renames its functions), and nn_cpu.c picks a copy per
# thread team from cpuid or SEGKIT_CPU. Off x86-64 only the generic copy (OpenBLAS + C).
ifeq ($(SEG_X86),1)
  NN_ISAS := avx512 avx2 generic
  CPPFLAGS += -DSEG_NN_X86_PATHS
else
  NN_ISAS := generic
endif
NN_FLAGS_avx512  := -march=x86-64-v4 -mtune=znver3
NN_FLAGS_avx2    := -march=x86-64-v3 -mtune=znver3
NN_FLAGS_generic :=
NN_KSRC  := $(filter-out common/nn/nn_team.c common/nn/nn_tfile.c common/nn/nn_cpu.c,$(wildcard common/nn/*.c))
NN_OBJS  := $(foreach i,$(NN_ISAS),$(patsubst %.c,$(BUILD)/%.$(i).o,$(NN_KSRC)))
COMMON_OBJS := $(filter-out $(patsubst %.c,$(BUILD)/%.o,$(NN_KSRC)),$(COMMON_OBJS)) $(NN_OBJS)
define NN_ISA_RULE
$$(BUILD)/common/nn/%.$(1).o: common/nn/%.c $$(FLAGS_STAMP)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(DIR_INC) $$(CPPFLAGS) $$(CFLAGS) $$(NN_FLAGS_$(1)) -DNN_ISA_$(1) -MMD -MP -c $$< -o $$@
endef
$(foreach i,$(NN_ISAS),$(eval $(call NN_ISA_RULE,$(i))))
# ---- end of the per-ISA block ------------------------------------------------------------

dir_objs     = $(patsubst %.c,$(BUILD)/%.o,$(filter-out $(MAINS),$(wildcard $(1)/*.c))) $(GEN_OBJS_$(1))
LIBPREP     := $(BUILD)/libsegprep.a
LIBTRAIN    := $(BUILD)/libsegtrain.a
LIBEVAL     := $(BUILD)/libsegeval.a
LIBSYNTH    := $(BUILD)/libsegsynth.a
PROG_LIBS   := $(LIBPREP) $(LIBTRAIN) $(LIBEVAL) $(LIBSYNTH)
PROGS       := $(patsubst %.c,$(BIN)/%,$(notdir $(MAINS)))
TEST_SRC    := $(wildcard tests/test_*.c)
TEST_BINS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_SRC   := $(wildcard tests/bench_*.c)
BENCH_BINS  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(BENCH_SRC))
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)
REPLAY_BINS := $(patsubst tests/fuzz/fuzz_%.c,$(BUILD)/fuzz/replay_%,$(FUZZ_SRC))

# eval/viewer.js (the 3D viewer's script) is embedded into segeval as a C array
GEN_OBJS_eval := $(BUILD)/gen/viewer_js.o
$(BUILD)/gen/viewer_js.c: eval/viewer.js
	@mkdir -p $(dir $@)
	{ echo '/* generated by the Makefile from eval/viewer.js: do not edit */'; \
	  echo '#include <stddef.h>'; echo 'const unsigned char report_viewer_js[] = {'; \
	  od -An -v -tu1 $< | sed -e 's/  */ /g' -e 's/^ //' -e '/^$$/d' -e 's/ /, /g' -e 's/$$/,/'; \
	  echo '};'; echo 'const size_t report_viewer_js_len = sizeof report_viewer_js;'; } > $@.tmp && mv $@.tmp $@

# include paths per folder (pattern-specific: a folder sees common/ and itself only)
COMMON_INC := -Icommon -Icommon/nn -Icommon/gpu
TEST_INC   := $(COMMON_INC) -Iprep -Itrain -Ieval -Isynth -Itests
$(BUILD)/common/%.o: DIR_INC = $(COMMON_INC)
$(BUILD)/prep/%.o:   DIR_INC = -Icommon -Iprep
$(BUILD)/train/%.o:  DIR_INC = -Icommon -Itrain
$(BUILD)/eval/%.o:   DIR_INC = -Icommon -Ieval
$(BUILD)/synth/%.o:  DIR_INC = -Icommon -Isynth
$(BUILD)/gen/%.o:    DIR_INC =
$(BUILD)/tests/%.o:  DIR_INC = $(TEST_INC)

# ---- the CUDA emulator (tests/cuemu) -----------------------------------------
# The GPU backend's own source, compiled by g++ against the real CUDA headers and linked
# with an emulated runtime, cuDNN and cuBLAS, runs test_gpu on the CPU as test_gpu_emu.
# Needs only the headers (no GPU, no CUDA libraries). Sanitizer builds make the two test
# programs (ASan then sees the kernels' and the backend's memory accesses), not the CLIs.
# The emulated common archive is libsegcommon's objects with common/unet*.c recompiled
# with SEG_HAVE_CUDA and the .cu objects replaced by their emulated builds.
CXX      ?= g++
HAVE_CUDA_HEADERS := $(shell test -f $(CUDA_HOME)/include/cuda_runtime.h -a -f $(CUDA_HOME)/include/cudnn.h \
                       -a -f $(CUDA_HOME)/include/cublas_v2.h && test "$$(uname -m)" = x86_64 && echo 1 || echo 0)
ifeq ($(HAVE_CUDA_HEADERS),1)
  EMU       := $(BUILD)/cuemu
  EMU_FLAGS := -std=c++17 -g $(OPT) -Wall -Wno-unused-parameter -Wno-unused-function -pthread -fno-strict-aliasing \
               -Itests/cuemu -I$(CUDA_HOME)/include $(COMMON_INC) $(CPPFLAGS) -DSEG_HAVE_CUDA
  EMU_UNET  := $(patsubst common/%.c,$(EMU)/%.o,$(wildcard common/unet*.c))
  EMU_OBJS  := $(patsubst common/gpu/%.cu,$(EMU)/%.o,$(CU_SRC)) $(EMU)/cuemu_rt.o $(EMU)/cuemu_dnn.o $(EMU)/cuemu_blas.o \
               $(EMU_UNET) $(EMU)/unet_cuda.o
  EMU_LIBCOMMON := $(EMU)/libsegcommon.a
  EMU_LDLIBS = $(filter-out -lcudnn -lcublas -lcudart,$(LDLIBS))
  EMU_BINS  := $(BUILD)/tests/test_gpu_emu $(BUILD)/tests/test_gpu_kernels_emu
  ifeq ($(SAN),1)
    EMU_FLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  else
    EMU_BINS  += $(EMU)/bin/segtrain $(EMU)/bin/segeval $(EMU)/bin/bench_gpu
  endif
endif

# ---- a changed compiler or flags rebuild everything ---------------------------------------
# $(BUILD)/flags.txt holds the flags the objects in $(BUILD) were built with; every compile
# rule depends on it, and it is rewritten (so newer) when they differ, e.g. a tree built with
# OPT=-march=native before and the portable default now.
FLAGS_NOW   := $(CC) $(CXX) $(CPPFLAGS) $(CFLAGS) $(NVCCFLAGS) $(EMU_FLAGS) $(foreach i,$(NN_ISAS),$(NN_FLAGS_$(i)))
ifneq ($(file < $(FLAGS_STAMP)),$(FLAGS_NOW))
  $(shell mkdir -p $(BUILD))
  $(file > $(FLAGS_STAMP),$(FLAGS_NOW))
endif

.PHONY: all progs check-bins check-aarch64 deps deps-test demo test check test-asan asan-run bench fuzz clean
.SECONDARY:
all: $(PROGS) $(TEST_BINS) $(CU_TEST_BINS) $(BENCH_BINS) $(REPLAY_BINS) $(EMU_BINS)
progs: $(PROGS)
check-bins: $(TEST_BINS)

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(DIR_INC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@
# Per-file flags (e.g. one kernel object per instruction set in common/nn): a
# target-specific variable here, e.g. $(BUILD)/common/nn/nn_gemm_avx512.o: CFLAGS += -mavx512f.
# New common/*.c, common/nn/*.c and common/gpu/*.cu files join libsegcommon.a by themselves;
# new common/unet*.c files are also rebuilt with SEG_HAVE_CUDA for the emulator (EMU_UNET).
$(BUILD)/gen/%.o: $(BUILD)/gen/%.c $(FLAGS_STAMP)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(COMMON_INC) $(CPPFLAGS) $(NVCCFLAGS) -c $< -o $@

$(LIBCOMMON): $(COMMON_OBJS)
$(LIBPREP):   $(call dir_objs,prep)
$(LIBTRAIN):  $(call dir_objs,train)
$(LIBEVAL):   $(call dir_objs,eval)
$(LIBSYNTH):  $(call dir_objs,synth)
$(LIBCOMMON) $(PROG_LIBS):
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# a program: its main object, its own folder's archive, the common archive (nothing else)
$(BIN)/segprep:  $(BUILD)/prep/segprep.o   $(LIBPREP)  $(LIBCOMMON)
$(BIN)/segtrain: $(BUILD)/train/segtrain.o $(LIBTRAIN) $(LIBCOMMON)
$(BIN)/segeval:  $(BUILD)/eval/segeval.o   $(LIBEVAL)  $(LIBCOMMON)
$(BIN)/synthct:  $(BUILD)/synth/synthct.o  $(LIBSYNTH) $(LIBCOMMON)
$(PROGS):
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
# tests and benchmarks link every folder's archive
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(PROG_LIBS) $(LIBCOMMON)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
# GPU tests written in CUDA (the GPU build; their emulated twins are below)
$(BUILD)/tests/test_%.cu.o: tests/test_%.cu $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(COMMON_INC) $(CPPFLAGS) -Itests $(NVCCFLAGS) -c $< -o $@
$(CU_TEST_BINS): $(BUILD)/tests/%: $(BUILD)/tests/%.cu.o $(LIBCOMMON)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# emulated GPU build: launches rewritten, then C++ with the emulator's kernel language
$(EMU)/%.cpp: common/gpu/%.cu tools/cuemu_launch.pl
	@mkdir -p $(dir $@)
	perl tools/cuemu_launch.pl $< < $< > $@.tmp && mv $@.tmp $@
$(EMU)/%.o: $(EMU)/%.cpp tests/cuemu/cuemu.h tests/cuemu/cuemu_internal.h common/gpu/gpu_kernels.h common/gpu/gpu_math.h common/gpu/gpu.h common/unet_layers.h $(FLAGS_STAMP)
	$(CXX) $(EMU_FLAGS) -include cuemu.h -c $< -o $@
$(EMU)/cuemu_%.o: tests/cuemu/cuemu_%.cpp tests/cuemu/cuemu.h tests/cuemu/cuemu_internal.h $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_FLAGS) -c $< -o $@
# the C side of the U-Net (common/unet*.c) and the CUDA backend's entry, built with SEG_HAVE_CUDA
$(EMU_UNET): $(EMU)/%.o: common/%.c $(wildcard common/unet*.h) common/gpu/gpu.h $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(COMMON_INC) $(CPPFLAGS) -DSEG_HAVE_CUDA $(CFLAGS) -c $< -o $@
$(EMU)/unet_cuda.o: common/gpu/unet_cuda.c $(wildcard common/unet*.h) common/gpu/gpu.h $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(COMMON_INC) $(CPPFLAGS) -DSEG_HAVE_CUDA $(CFLAGS) -c $< -o $@
$(EMU)/test_%.o: tests/test_%.cu tests/cuemu/cuemu.h tests/cuemu/cuemu_internal.h common/gpu/gpu_kernels.h common/gpu/gpu_math.h $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_FLAGS) -Itests -include cuemu.h -x c++ -c $< -o $@
$(EMU_LIBCOMMON): $(EMU_OBJS) $(filter-out $(BUILD)/common/unet%.o $(CU_OBJS),$(COMMON_OBJS))
	rm -f $@ && ar rcs $@ $^
$(BUILD)/tests/test_gpu_kernels_emu: $(EMU)/test_gpu_kernels.o $(EMU)/gpu_kernels.o $(EMU)/cuemu_rt.o
	$(CXX) $(LDFLAGS) $^ -lm -o $@
# programs on the emulated GPU: their main object and archive, then the emulated common archive
$(BUILD)/tests/test_gpu_emu: $(BUILD)/tests/test_gpu.o $(PROG_LIBS)
$(EMU)/bin/segtrain: $(BUILD)/train/segtrain.o $(LIBTRAIN)
$(EMU)/bin/segeval: $(BUILD)/eval/segeval.o $(LIBEVAL)
$(EMU)/bin/bench_gpu: $(BUILD)/tests/bench_gpu.o $(PROG_LIBS)
$(BUILD)/tests/test_gpu_emu $(EMU)/bin/segtrain $(EMU)/bin/segeval $(EMU)/bin/bench_gpu: $(EMU_LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $(filter %.o,$^) $(filter $(PROG_LIBS),$^) $(EMU_LIBCOMMON) $(EMU_LDLIBS) -o $@

$(BUILD)/fuzz/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay_main.c $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(COMMON_INC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

deps:
	@tools/install_deps.sh
deps-test:
	@tools/install_deps.sh test

demo: deps
	@$(MAKE) --no-print-directory progs
	@tools/demo.sh

# check: the C unit tests against the CPU backend, built in their own folder when this
# build has CUDA (so the two configurations never share objects)
CHECK_BUILD := $(if $(filter 1,$(GPU)),$(BUILD)-cpu,$(BUILD))
# check-aarch64: the same C unit tests cross-built for aarch64 and run under qemu-aarch64
# (generic kernels; one-time toolchain setup in tools/cross_aarch64.sh, docs/cpu.md)
check-aarch64:
	@tools/cross_aarch64.sh

check: deps-test
	@$(MAKE) --no-print-directory GPU=0 BUILD=$(CHECK_BUILD) check-bins
	@SEGKIT_BUILD=$(CHECK_BUILD) tests/run_tests.sh --quick

test: deps-test
	@$(MAKE) --no-print-directory all
	@tests/run_tests.sh
	@echo "== the same suite under AddressSanitizer + UndefinedBehaviorSanitizer"
	@$(MAKE) --no-print-directory asan-run

test-asan: deps-test
	@$(MAKE) --no-print-directory asan-run

asan-run:
	@$(MAKE) --no-print-directory all SAN=1 GPU=0 BUILD=build-asan BIN=bin-asan
	@SEGKIT_BIN=bin-asan SEGKIT_BUILD=build-asan ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run_tests.sh

bench: deps-test
	@$(MAKE) --no-print-directory progs $(BENCH_BINS)
	@tests/run_bench.sh

fuzz:
	@tools/install_deps.sh fuzz
	@$(MAKE) --no-print-directory $(BUILD)/tests/test_cache $(REPLAY_BINS)
	@tests/fuzz/run_fuzz.sh

clean:
	rm -rf build build-cpu build-asan bin bin-asan

-include $(COMMON_OBJS:.o=.d) $(foreach d,$(PROG_DIRS),$(patsubst %.c,$(BUILD)/%.d,$(wildcard $(d)/*.c))) \
         $(TEST_BINS:=.d) $(BENCH_BINS:=.d)
