/* tests/cuemu/cuemu_rt.cpp : the CUDA runtime of the emulator (see cuemu_internal.h): the
 * cudaXxx functions segkit's GPU backend calls, with the real headers' prototypes.
 *
 * Memory. Device allocations are host memory kept in a table, filled with 0xFF bytes (NaN
 * as floats) so that reading memory nobody wrote shows. Copies check their direction
 * against the table.
 * Streams. Every stream is a queue; nothing runs until the host waits (stream or event
 * synchronize, a synchronous copy, cudaFree) and then only what that wait needs, following
 * cudaStreamWaitEvent dependencies into other streams; the legacy default stream and the
 * blocking streams wait for each other, as in CUDA. Copies from pinned host memory read it
 * when they run, as DMA does; a pageable source is staged at the call, a pageable
 * destination makes the call synchronous, as in CUDA.
 * Kernels. A grid runs block after block; in a block every thread is a fiber with its own
 * stack, switched by a few instructions of assembly (x86-64) at __syncthreads and at warp
 * shuffles. Between two barriers the warps run one after another, each as far as it can, in
 * an order drawn afresh (seeded by the block, so runs repeat) for every phase, so a missing
 * barrier shows. The first block of each launch runs on fibers; when it never met a barrier
 * the  * others run as plain calls, which is much faster. */
#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <vector>
#include "cuemu.h"
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

/* ---- errors -------------------------------------------------------------------------------- */
namespace cuemu {
void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("cuemu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    abort();
}
} // namespace cuemu

static std::recursive_mutex g_lock;             /* the whole emulator: one host thread at a time */
#define LOCK() std::lock_guard<std::recursive_mutex> lock_(g_lock)
static cudaError_t g_last = cudaSuccess;        /* sticky until cudaGetLastError */
static int g_device = 0;

static cudaError_t fail(cudaError_t e)
{
    g_last = e;
    return e;
}

static int device_count(void)
{
    const char *s = getenv("CUEMU_DEVICE_COUNT");
    return s ? atoi(s) : 1;
}

/* ---- memory table ---------------------------------------------------------------------------- */
struct Alloc { size_t size; bool device; };
static std::map<uintptr_t, Alloc> g_allocs;     /* device and pinned host blocks by base address */
static size_t g_dev_bytes;

static const Alloc *find_alloc(const void *p, uintptr_t *base)
{
    const uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return NULL;
    --it;
    if (a >= it->first + (it->second.size ? it->second.size : 1)) return NULL;
    *base = it->first;
    return &it->second;
}

namespace cuemu {
bool is_device(const void *p)
{
    LOCK();
    uintptr_t b;
    const Alloc *a = find_alloc(p, &b);
    return a && a->device;
}

void check_device(const void *p, size_t bytes, const char *api, const char *what)
{
    LOCK();
    uintptr_t b;
    const Alloc *a = p ? find_alloc(p, &b) : NULL;
    if (!a || !a->device)
        fatal("%s: %s (%p, %zu bytes) is not device memory", api, what, p, bytes);
    if ((uintptr_t)p + bytes > b + a->size)
        fatal("%s: %s (%zu bytes at offset %zu) runs %zu bytes past the end of its %zu-byte device allocation", api, what,
              bytes, (size_t)((uintptr_t)p - b), (size_t)((uintptr_t)p + bytes - b - a->size), a->size);
}
} // namespace cuemu

static bool is_pinned(const void *p)
{
    uintptr_t b;
    const Alloc *a = find_alloc(p, &b);
    return a && !a->device;
}

/* ---- streams and events ---------------------------------------------------------------------- */
struct Op {
    uint64_t seq;
    std::function<void()> fn;          /* the work (empty for a wait) */
    CUstream_st *wait_s;               /* wait: until wait_s has run up to wait_seq */
    uint64_t wait_seq;
};

struct CUstream_st {
    std::deque<Op> q;
    uint64_t next_seq = 1, done_seq = 0;
    unsigned flags = 0;
    bool draining = false;
    bool destroyed = false;
};

struct CUevent_st {
    CUstream_st *s = NULL;             /* the last record: stream and its position there */
    uint64_t seq = 0, gen = 0;
    unsigned flags = 0;
    bool timed = false;                /* the last record ran and set t */
    bool destroyed = false;            /* cudaEventDestroy was called */
    int pending = 0;                   /* its record ops not yet run (they refer to it) */
    double t_ms = 0;
};

static CUstream_st g_legacy;
/* every stream ever created (destroyed ones stay: events may refer to them); never freed,
 * so they stay reachable for the leak checker after the globals are destroyed */
static std::vector<CUstream_st *> &g_streams = *new std::vector<CUstream_st *>{ &g_legacy };

static CUstream_st *stream_of(cudaStream_t s) { return s ? (CUstream_st *)s : &g_legacy; }

static uint64_t push(CUstream_st *s, std::function<void()> fn, CUstream_st *ws = NULL, uint64_t wseq = 0);

/* The legacy default stream and the blocking streams (created without cudaStreamNonBlocking)
 * wait for each other: work queued on one waits for what is queued on the others. */
static void implicit_waits(CUstream_st *s)
{
    if (s != &g_legacy && (s->flags & cudaStreamNonBlocking)) return;
    for (CUstream_st *o : g_streams) {
        if (o == s || o->destroyed || o->done_seq + 1 >= o->next_seq) continue;   /* nothing pending */
        if (s != &g_legacy && o != &g_legacy) continue;
        if (o != &g_legacy && (o->flags & cudaStreamNonBlocking)) continue;
        push(s, std::function<void()>(), o, o->next_seq - 1);
    }
}

static uint64_t push(CUstream_st *s, std::function<void()> fn, CUstream_st *ws, uint64_t wseq)
{
    if (!ws) implicit_waits(s);
    Op op;
    op.seq = s->next_seq++;
    op.fn = std::move(fn);
    op.wait_s = ws;
    op.wait_seq = wseq;
    s->q.push_back(std::move(op));
    return s->next_seq - 1;
}

/* Run stream s up to position seq (and whatever it waits for in other streams). */
static void run_until(CUstream_st *s, uint64_t seq)
{
    if (s->draining) cuemu::fatal("streams wait on each other in a cycle (cudaStreamWaitEvent): a deadlock on a GPU");
    s->draining = true;
    while (s->done_seq < seq && !s->q.empty()) {
        Op &op = s->q.front();
        if (op.wait_s && op.wait_s->done_seq < op.wait_seq) run_until(op.wait_s, op.wait_seq);
        std::function<void()> fn = std::move(op.fn);
        const uint64_t q = op.seq;
        s->q.pop_front();
        if (fn) fn();
        s->done_seq = q;
    }
    s->draining = false;
}

static void drain(CUstream_st *s) { run_until(s, s->next_seq - 1); }
static void drain_all(void) { for (size_t i = 0; i < g_streams.size(); i++) drain(g_streams[i]); }

namespace cuemu {
void enqueue(cudaStream_t s, std::function<void()> op)
{
    LOCK();
    push(stream_of(s), std::move(op));
}
} // namespace cuemu

static double now_ms(void)
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/* ---- fibers ---------------------------------------------------------------------------------- */
#if defined(__x86_64__)
extern "C" void cuemu_swap(void **save_sp, void *next_sp);
extern "C" void cuemu_tramp(void);
extern "C" void cuemu_fiber_main(void);
/* callee-saved registers on the old stack, stack pointers swapped, popped from the new one */
__asm__(".text\n"
        ".globl cuemu_swap\n"
        ".type cuemu_swap,@function\n"
        "cuemu_swap:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size cuemu_swap,.-cuemu_swap\n"
        ".globl cuemu_tramp\n"
        ".type cuemu_tramp,@function\n"
        "cuemu_tramp:\n"
        "  andq $-16, %rsp\n"
        "  call cuemu_fiber_main\n"
        "  ud2\n"
        ".size cuemu_tramp,.-cuemu_tramp\n");
#else
#error "the CUDA emulator's fibers are written for x86-64"
#endif

enum { F_READY, F_SYNC, F_SHFL, F_DONE };
struct Fiber {
    void *sp;
    int state;
    uint3 tid;
    unsigned long long val, res;       /* shuffle: what it gives, what it gets */
    unsigned src;                      /* shuffle: the lane it reads */
};

#define STACK_BYTES (64 << 10)
#define MAX_THREADS 1024
static char *g_stacks;                  /* MAX_THREADS stacks, a guard page below each */
static std::vector<Fiber> g_fib;
static int g_cur = -1;                  /* running fiber, -1: none (plain calls or the host) */
static void *g_sched_sp;
static const std::function<void()> *g_body;
static bool g_fiber_mode, g_barrier_seen;
static const char *g_kernel;

namespace cuemu {
uint3 cur_tid, cur_bid;
dim3 cur_bdim, cur_gdim;
} // namespace cuemu

extern "C" void cuemu_fiber_main(void)
{
    (*g_body)();
    g_fib[g_cur].state = F_DONE;
    void *dummy;
    cuemu_swap(&dummy, g_sched_sp);
    abort();                            /* never resumed */
}

static void stacks_init(void)
{
    if (g_stacks) return;
    const size_t per = STACK_BYTES + 4096;
    g_stacks = (char *)mmap(NULL, per * MAX_THREADS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g_stacks == MAP_FAILED) cuemu::fatal("cannot map %d fiber stacks", MAX_THREADS);
    for (int i = 0; i < MAX_THREADS; i++)
        if (mprotect(g_stacks + per * i, 4096, PROT_NONE)) cuemu::fatal("cannot protect a fiber stack guard page");
    g_fib.resize(MAX_THREADS);
}

static void fiber_init(int i)
{
    char *top = g_stacks + (size_t)(STACK_BYTES + 4096) * (i + 1);
#if defined(__SANITIZE_ADDRESS__)
    /* a fiber leaves its frames' redzones poisoned when it is dropped: clean the stack */
    __asan_unpoison_memory_region(top - STACK_BYTES, STACK_BYTES);
#endif
    uint64_t *p = (uint64_t *)top;
    *--p = 0;
    *--p = (uint64_t)(uintptr_t)cuemu_tramp;     /* where cuemu_swap's ret goes */
    for (int k = 0; k < 6; k++) *--p = 0;          /* rbp rbx r12..r15 */
    g_fib[i].sp = p;
    g_fib[i].state = F_READY;
}

/* Leave the running fiber for the scheduler in state st. */
static void block_on(int st)
{
    if (!g_fiber_mode)
        cuemu::fatal("kernel %s: block %u of the grid used a barrier or shuffle that its first block did not; the "
                     "emulator cannot run such kernels", g_kernel, cuemu::cur_bid.x);
    g_barrier_seen = true;
    Fiber &f = g_fib[g_cur];
    f.state = st;
    cuemu_swap(&f.sp, g_sched_sp);
    cuemu::cur_tid = f.tid;             /* resumed */
}

namespace cuemu {
void check_kernel_ptr(const char *kernel, int arg, const void *p)
{
    if (!is_device(p)) fatal("kernel %s: argument %d (%p) is not device memory", kernel, arg, p);
}

void syncthreads() { block_on(F_SYNC); }

unsigned long long shfl_down_bits(unsigned mask, unsigned long long v, unsigned delta, int width)
{
    if (mask != 0xffffffffu) fatal("kernel %s: __shfl_down_sync with a partial mask (%#x): not emulated", g_kernel, mask);
    if (width != 32) fatal("kernel %s: __shfl_down_sync of width %d: not emulated", g_kernel, width);
    if (!g_fiber_mode) block_on(F_SHFL);                  /* reports the kernel and stops */
    Fiber &f = g_fib[g_cur];
    const unsigned lane = (unsigned)g_cur & 31;
    f.val = v;
    f.src = lane + delta < 32 ? g_cur + delta : g_cur;
    block_on(F_SHFL);
    return g_fib[g_cur].res;
}
} // namespace cuemu

static const char *state_name(int s)
{
    return s == F_READY ? "running" : s == F_SYNC ? "__syncthreads" : s == F_SHFL ? "__shfl_down_sync" : "exited";
}

/* Run warp w (lanes w..w+n) until each lane exited or waits at __syncthreads: its shuffles
 * complete as soon as all 32 lanes are in one, without waiting for the other warps (a warp
 * runs ahead of the others as far as the barriers let it). Lanes run in the order `ord`. */
static void run_warp(int w, int n, const int *ord)
{
    for (;;) {
        for (int k = 0; k < 32; k++) {
            if (ord[k] >= n) continue;
            const int i = w + ord[k];
            if (g_fib[i].state != F_READY) continue;
            g_cur = i;
            cuemu::cur_tid = g_fib[i].tid;
            cuemu_swap(&g_sched_sp, g_fib[i].sp);
        }
        g_cur = -1;
        int sh = 0;
        for (int i = w; i < w + n; i++) sh += g_fib[i].state == F_SHFL;
        if (!sh) return;
        if (sh != 32) {
            fprintf(stderr, "cuemu: kernel %s, block (%u,%u,%u): a full-mask shuffle in warp %d while lanes are elsewhere:",
                    g_kernel, cuemu::cur_bid.x, cuemu::cur_bid.y, cuemu::cur_bid.z, w / 32);
            for (int i = w; i < w + n; i++) fprintf(stderr, " %d:%s", i - w, state_name(g_fib[i].state));
            cuemu::fatal("deadlock or undefined behaviour on a GPU");
        }
        for (int i = w; i < w + 32; i++) g_fib[i].res = g_fib[g_fib[i].src].val;
        for (int i = w; i < w + 32; i++) g_fib[i].state = F_READY;
    }
}

/* Run one block with every thread on a fiber until all have exited. Between two barriers
 * the warps run one after another, each as far as it can, in an order drawn afresh for every
 * phase (and the lanes of a warp too), seeded by the block: a kernel that needs a barrier it
 * lacks sees another warp's writes too early or too late, reproducibly. */
static void run_block_fibers(int nt, uint64_t seed)
{
    for (int i = 0; i < nt; i++) fiber_init(i);
    const int nw = (nt + 31) / 32;
    int word[MAX_THREADS / 32], lane[32];
    uint64_t r = seed * 0x9E3779B97F4A7C15ull + 1;
    for (;;) {
        for (int i = 0; i < nw; i++) word[i] = i;
        for (int i = 0; i < 32; i++) lane[i] = i;
        for (int i = nw - 1; i > 0; i--) {                  /* Fisher-Yates with xorshift */
            r ^= r << 13; r ^= r >> 7; r ^= r << 17;
            std::swap(word[i], word[r % (uint64_t)(i + 1)]);
        }
        for (int i = 31; i > 0; i--) {
            r ^= r << 13; r ^= r >> 7; r ^= r << 17;
            std::swap(lane[i], lane[r % (uint64_t)(i + 1)]);
        }
        for (int k = 0; k < nw; k++) run_warp(word[k] * 32, std::min(32, nt - word[k] * 32), lane);
        int done = 0, sync = 0;
        for (int i = 0; i < nt; i++) { done += g_fib[i].state == F_DONE; sync += g_fib[i].state == F_SYNC; }
        if (done == nt) return;
        if (sync == nt) {
            for (int i = 0; i < nt; i++) g_fib[i].state = F_READY;
            continue;
        }
        cuemu::fatal("kernel %s, block (%u,%u,%u): %d of %d threads wait at __syncthreads while %d have exited: a barrier "
                     "not reached by the whole block", g_kernel, cuemu::cur_bid.x, cuemu::cur_bid.y, cuemu::cur_bid.z, sync,
                     nt, done);
    }
}

namespace cuemu {
bool launch_ok(const char *name, dim3 g, dim3 b, size_t shmem)
{
    const unsigned long long nt = (unsigned long long)b.x * b.y * b.z;
    if (nt == 0 || nt > MAX_THREADS || b.z > 64 || g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 || g.z > 65535 ||
        g.x > 2147483647u || shmem > 48 * 1024) {
        fprintf(stderr, "cuemu: kernel %s: launch of grid (%u,%u,%u) x block (%u,%u,%u) refused (invalid configuration)\n",
                name, g.x, g.y, g.z, b.x, b.y, b.z);
        fail(cudaErrorInvalidConfiguration);
        return false;
    }
    return true;
}

void run_grid(const char *name, dim3 g, dim3 b, const std::function<void()> &body)
{
    stacks_init();
    const int nt = (int)(b.x * b.y * b.z);
    const std::function<void()> *saved_body = g_body;
    const char *saved_kernel = g_kernel;
    g_body = &body;
    g_kernel = name;
    cur_gdim = g;
    cur_bdim = b;
    for (int i = 0; i < nt; i++) g_fib[i].tid = make_uint3(i % b.x, (i / b.x) % b.y, i / (b.x * b.y));
    bool first = true;
    g_barrier_seen = false;
    for (unsigned z = 0; z < g.z; z++)
        for (unsigned y = 0; y < g.y; y++)
            for (unsigned x = 0; x < g.x; x++) {
                cur_bid = make_uint3(x, y, z);
                g_fiber_mode = first || g_barrier_seen;
                if (g_fiber_mode) run_block_fibers(nt, ((uint64_t)z * g.y + y) * g.x + x);
                else
                    for (int i = 0; i < nt; i++) { cur_tid = g_fib[i].tid; body(); }
                first = false;
            }
    g_fiber_mode = false;
    g_body = saved_body;
    g_kernel = saved_kernel;
}
} // namespace cuemu

/* ---- the runtime API ------------------------------------------------------------------------- */
extern "C" {

cudaError_t cudaGetLastError(void) { LOCK(); cudaError_t e = g_last; g_last = cudaSuccess; return e; }
cudaError_t cudaPeekAtLastError(void) { LOCK(); return g_last; }

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "unknown error";
    }
}

cudaError_t cudaGetDeviceCount(int *n)
{
    LOCK();
    *n = device_count();
    return *n > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int d)
{
    LOCK();
    if (d < 0 || d >= device_count()) return fail(cudaErrorInvalidDevice);
    g_device = d;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *d) { LOCK(); *d = g_device; return cudaSuccess; }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d)
{
    LOCK();
    if (d < 0 || d >= device_count()) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuemu (CUDA emulated on the CPU)");
    const char *cc = getenv("CUEMU_CC");               /* compute capability, e.g. "75" to test a refusal */
    const int v = cc ? atoi(cc) : 90;
    p->major = v / 10;
    p->minor = v % 10;
    p->totalGlobalMem = (size_t)80 << 30;
    p->maxThreadsPerBlock = MAX_THREADS;
    p->warpSize = 32;
    p->multiProcessorCount = 132;
    p->sharedMemPerBlock = 48 << 10;
    return cudaSuccess;
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, const void *f)
{
    if (!a || !f) return fail(cudaErrorInvalidValue);
    memset(a, 0, sizeof *a);
    a->maxThreadsPerBlock = MAX_THREADS;
    const char *cc = getenv("CUEMU_CC");
    a->binaryVersion = a->ptxVersion = cc ? atoi(cc) : 90;
    return cudaSuccess;
}

/* memory */
static cudaError_t alloc(void **p, size_t bytes, bool device)
{
    LOCK();
    if (!p) return fail(cudaErrorInvalidValue);
    *p = NULL;
    const char *lim = device ? getenv("CUEMU_MEM_LIMIT") : NULL;   /* bytes of device memory, to test running out */
    if (lim && g_dev_bytes + bytes > strtoull(lim, NULL, 10)) return fail(cudaErrorMemoryAllocation);
    void *q = NULL;
    if (posix_memalign(&q, 256, bytes ? bytes : 1)) return fail(cudaErrorMemoryAllocation);
    memset(q, 0xff, bytes);
    g_allocs[(uintptr_t)q] = Alloc{ bytes, device };
    if (device) g_dev_bytes += bytes;
    *p = q;
    return cudaSuccess;
}

static cudaError_t release(void *p, bool device)
{
    LOCK();
    if (!p) return cudaSuccess;
    drain_all();                                        /* both free calls synchronize the device */
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end() || it->second.device != device) {
        fprintf(stderr, "cuemu: %s(%p): not the start of a live %s allocation\n", device ? "cudaFree" : "cudaFreeHost", p,
                device ? "device" : "pinned host");
        return fail(cudaErrorInvalidValue);
    }
    if (device) g_dev_bytes -= it->second.size;
    g_allocs.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) { return alloc(p, bytes, true); }
cudaError_t cudaFree(void *p) { return release(p, true); }
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags) { return alloc(p, bytes, false); }
cudaError_t cudaMallocHost(void **p, size_t bytes) { return alloc(p, bytes, false); }
cudaError_t cudaFreeHost(void *p) { return release(p, false); }

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total)
{
    LOCK();
    *total = (size_t)80 << 30;
    *free_b = *total - g_dev_bytes;
    return cudaSuccess;
}

/* Check a copy's pointers against its kind; the kind with the host side resolved. */
static cudaMemcpyKind check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, const char *api)
{
    const bool dd = cuemu::is_device(dst), sd = cuemu::is_device(src);
    if (kind == cudaMemcpyDefault) kind = sd ? (dd ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost)
                                             : (dd ? cudaMemcpyHostToDevice : cudaMemcpyHostToHost);
    const bool want_dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    const bool want_sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (want_dd) cuemu::check_device(dst, n, api, "the destination");
    else if (dd) cuemu::fatal("%s: the destination %p is device memory but the kind says host", api, dst);
    if (want_sd) cuemu::check_device(src, n, api, "the source");
    else if (sd) cuemu::fatal("%s: the source %p is device memory but the kind says host", api, src);
    return kind;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s)
{
    LOCK();
    if (!n) return cudaSuccess;
    kind = check_copy(dst, src, n, kind, "cudaMemcpyAsync");
    CUstream_st *st = stream_of(s);
    const void *host = kind == cudaMemcpyHostToDevice ? src : kind == cudaMemcpyDeviceToHost ? dst : NULL;
    if (host && !is_pinned(host)) {
        if (kind == cudaMemcpyDeviceToHost) {            /* pageable destination: returns when the copy is done */
            drain(st);
            memcpy(dst, src, n);
            return cudaSuccess;
        }
        /* pageable source: staged now (the caller may reuse it on return), written in stream order */
        std::shared_ptr<std::vector<char>> stage = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + n);
        push(st, [=]() { memcpy(dst, stage->data(), n); });
        return cudaSuccess;
    }
    push(st, [=]() { memcpy(dst, src, n); });
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    LOCK();
    if (!n) return cudaSuccess;
    check_copy(dst, src, n, kind, "cudaMemcpy");
    push(&g_legacy, [=]() { memcpy(dst, src, n); });   /* after the legacy and blocking streams' work */
    drain(&g_legacy);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    LOCK();
    if (!n) return cudaSuccess;
    cuemu::check_device(p, n, "cudaMemsetAsync", "the destination");
    push(stream_of(s), [=]() { memset(p, v, n); });
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n) { return cudaMemsetAsync(p, v, n, 0); }   /* async for device memory */

/* streams */
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    LOCK();
    CUstream_st *st = new CUstream_st;
    st->flags = flags;
    g_streams.push_back(st);
    *s = st;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    LOCK();
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    CUstream_st *st = (CUstream_st *)s;
    if (st->destroyed || std::find(g_streams.begin(), g_streams.end(), st) == g_streams.end())
        return fail(cudaErrorInvalidResourceHandle);
    drain(st);                          /* its work completes, as on a device */
    st->destroyed = true;               /* kept: events recorded on it may still be waited on */
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) { LOCK(); drain(stream_of(s)); return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { LOCK(); drain_all(); return cudaSuccess; }

/* events */
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    LOCK();
    CUevent_st *ev = new CUevent_st;
    ev->flags = flags;
    *e = ev;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    LOCK();
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    CUevent_st *ev = (CUevent_st *)e;
    ev->destroyed = true;               /* freed by its last queued record op, or now */
    if (!ev->pending) delete ev;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    LOCK();
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    CUevent_st *ev = (CUevent_st *)e;
    CUstream_st *st = stream_of(s);
    const uint64_t gen = ++ev->gen;
    ev->timed = false;
    ev->s = st;
    ev->pending++;
    ev->seq = push(st, [ev, gen]() {
        if (--ev->pending == 0 && ev->destroyed) { delete ev; return; }
        if (ev->gen != gen) return;                     /* re-recorded since */
        ev->t_ms = now_ms();
        ev->timed = true;
    });
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    LOCK();
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    CUevent_st *ev = (CUevent_st *)e;
    if (ev->s) run_until(ev->s, ev->seq);
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e)
{
    LOCK();
    CUevent_st *ev = (CUevent_st *)e;
    return !ev->s || ev->s->done_seq >= ev->seq ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags)
{
    LOCK();
    if (!e) return fail(cudaErrorInvalidResourceHandle);
    CUevent_st *ev = (CUevent_st *)e;
    CUstream_st *st = stream_of(s);
    if (ev->s && ev->s->done_seq < ev->seq && ev->s != st) push(st, std::function<void()>(), ev->s, ev->seq);
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    LOCK();
    CUevent_st *x = (CUevent_st *)a, *y = (CUevent_st *)b;
    if (!x || !y || (x->flags & cudaEventDisableTiming) || (y->flags & cudaEventDisableTiming) || !x->s || !y->s)
        return fail(cudaErrorInvalidResourceHandle);
    if (!x->timed || !y->timed) return fail(cudaErrorNotReady);
    *ms = (float)(y->t_ms - x->t_ms);
    return cudaSuccess;
}

} // extern "C"
