/* tests/cuemu/cuemu_internal.h : what the parts of the CUDA emulator share. The emulator
 * runs segkit's GPU backend (the .cu files of common/gpu, compiled as C++ by g++) on the CPU, for
 * tests on machines without a GPU: cuemu_rt.cpp is the runtime (memory, streams, events,
 * kernel launches on fibers), cuemu_dnn.cpp the cuDNN and cuBLAS subset the backend
 * calls, computed by plain reference loops. Device memory is host memory; every library
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

} // namespace cuemu
#endif
