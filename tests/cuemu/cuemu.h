/* tests/cuemu/cuemu.h : the device side of the CUDA emulator, force-included (g++ -include)
 * into segkit's .cu files when they are compiled as C++ for the emulated build. It brings
 * in the real CUDA, cuDNN and cuBLAS headers (types and prototypes), then gives the kernel
 * language what g++ lacks: threadIdx/blockIdx/blockDim/gridDim, __shared__ (one copy per
 * variable: blocks run one after another; not poisoned between blocks, unlike the NaN-filled
 * device memory: g++ 12 ignores section attributes inside templates), __syncthreads, __shfl_down_sync, atomicAdd, and
 * the launch: tools/cuemu_launch.pl rewrites `k<<<grid, block, shmem, stream>>>(args)` into
 * `cuemu::Launch("k", grid, block, shmem, stream).go(k, args)`, which queues the grid on
 * the stream. Each thread of a block runs on its own fiber, so barriers and warp shuffles
 * behave as on the device (cuemu_rt.cpp schedules them). */
#ifndef CUEMU_H
#define CUEMU_H
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <string.h>
#include <tuple>
#include <type_traits>
#include "cuemu_internal.h"

namespace cuemu {

/* The running thread's coordinates (set by the scheduler on every switch). */
extern uint3 cur_tid, cur_bid;
extern dim3 cur_bdim, cur_gdim;

/* __syncthreads of the running thread. */
void syncthreads();
/* One lane's part of a shuffle-down: its value in, the value of lane + delta out (its own
 * when that lane is past the width). All 32 lanes of the warp must take part (full mask). */
unsigned long long shfl_down_bits(unsigned mask, unsigned long long v, unsigned delta, int width);
/* Run a grid now: every block, every thread running body (called by queued launches). */
void run_grid(const char *name, dim3 grid, dim3 block, const std::function<void()> &body);
/* A launch configuration was refused (block too large...): the error for cudaGetLastError. */
bool launch_ok(const char *name, dim3 grid, dim3 block, size_t shmem);
/* fatal() when a kernel argument is a pointer outside device memory (NULL passes). */
void check_kernel_ptr(const char *kernel, int arg, const void *p);
template <typename T> inline void check_arg(const char *, int, const T &) {}
template <typename T> inline void check_arg(const char *k, int i, T *const &p) { if (p) check_kernel_ptr(k, i, (const void *)p); }
template <typename Tup, size_t... I> inline void check_args(const char *k, const Tup &t, std::index_sequence<I...>)
{
    (check_arg(k, (int)I, std::get<I>(t)), ...);
}

/* Copy-initialisation: only the implicit conversions a launch allows (no void* -> float*). */
template <typename T> inline T implicit(T v) { return v; }

struct Launch {
    const char *name;
    dim3 grid, block;
    size_t shmem;
    cudaStream_t stream;
    Launch(const char *n, dim3 g, dim3 b, size_t sh = 0, cudaStream_t s = 0) : name(n), grid(g), block(b), shmem(sh), stream(s) {}
    /* Arguments are converted to the kernel's parameter types and copied now, as a real
     * launch does; the grid runs when the stream gets to it. */
    template <typename... P, typename... A> void go(void (*k)(P...), A &&...a)
    {
        static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
        if (!launch_ok(name, grid, block, shmem)) return;
        std::tuple<typename std::decay<P>::type...> args(implicit<P>(std::forward<A>(a))...);
        check_args(name, args, std::index_sequence_for<P...>{});
        const char *nm = name;
        const dim3 g = grid, b = block;
        enqueue(stream, [=]() { run_grid(nm, g, b, [&]() { std::apply(k, args); }); });
    }
};

} // namespace cuemu

#define threadIdx (cuemu::cur_tid)
#define blockIdx (cuemu::cur_bid)
#define blockDim (cuemu::cur_bdim)
#define gridDim (cuemu::cur_gdim)
#undef __shared__
#define __shared__ static
#define __syncthreads() cuemu::syncthreads()

template <typename T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
    unsigned long long b = 0;
    memcpy(&b, &v, sizeof v);
    b = cuemu::shfl_down_bits(mask, b, delta, width);
    T r;
    memcpy(&r, &b, sizeof r);
    return r;
}

/* nvcc's C++ overload of the runtime call (the header declares it for nvcc only). */
template <typename T> static inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, T *entry)
{
    return ::cudaFuncGetAttributes(a, (const void *)entry);
}

/* Blocks run one thread at a time, so atomics are plain read-modify-writes. */
template <typename T> static inline T cuemu_atomic_add(T *p, T v) { T o = *p; *p = o + v; return o; }
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) { return cuemu_atomic_add(p, v); }
static inline unsigned atomicAdd(unsigned *p, unsigned v) { return cuemu_atomic_add(p, v); }
static inline int atomicAdd(int *p, int v) { return cuemu_atomic_add(p, v); }
static inline float atomicAdd(float *p, float v) { return cuemu_atomic_add(p, v); }
static inline double atomicAdd(double *p, double v) { return cuemu_atomic_add(p, v); }

#endif
