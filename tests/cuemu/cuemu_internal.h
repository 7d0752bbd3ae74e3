/* tests/cuemu/cuemu_internal.h : what the parts of the CUDA emulator share. The emulator
 * runs segkit's GPU backend (the .cu files of common/gpu, compiled as C++ by g++) on the CPU, for
 * tests on machines without a GPU: cuemu_rt.cpp is the runtime (memory, streams, events,
 * kernel launches on fibers), cuemu_dnn.cpp and cuemu_blas.cpp the cuDNN and cuBLAS
 * subsets the backend calls, computed by plain reference code. Device memory is host memory; every library
 * call checks that its tensors lie inside live device allocations. Work queued on a
 * stream runs lazily (only when the host waits for it, or another stream waits on an
 * event), so a missing wait in the backend shows up as wrong data, not as luck. */
#ifndef CUEMU_INTERNAL_H
#define CUEMU_INTERNAL_H
#include <cuda_runtime.h>
#include <functional>
#include <stddef.h>

namespace cuemu {

/* Print "cuemu: <message>" to stderr and abort (misuse of the API that real CUDA would
 * turn into a crash, a hang or silent garbage). */
[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Queue op on stream s (NULL: the legacy default stream); ops of one stream run in order. */
void enqueue(cudaStream_t s, std::function<void()> op);

/* fatal() unless [p, p + bytes) lies inside one live device allocation. api and what name
 * the call and the argument in the message. bytes 0 only checks p. */
void check_device(const void *p, size_t bytes, const char *api, const char *what);

/* Is p inside a live device allocation? */
bool is_device(const void *p);

/* Round n floats to TF32 (10 mantissa bits, to nearest), as tensor cores read fp32 data. */
void tf32_round(float *p, size_t n);

/* C = alpha * A B + beta * C (cuemu_blas.cpp): C m x n, A m x k, B k x n, each a base and two
 * strides, A(i,l) = a[i*ai + l*al] etc., one of each pair 1. beta 0: C is not read. */
void gemm(int m, int n, int k, float alpha, const float *a, ptrdiff_t ai, ptrdiff_t al, const float *b, ptrdiff_t bl,
          ptrdiff_t bj, float beta, float *c, ptrdiff_t ci, ptrdiff_t cj);

} // namespace cuemu
#endif
