/* common/nn/nn_team.c : a fixed team of compute threads with per-thread scratch.
 * The caller is thread 0; workers sleep on a condition variable between runs. nn_team_run
 * splits items into fixed contiguous shares so that per-thread partial sums (weight-gradient
 * partials) always cover the same tiles: results are reproducible. nn_team_run_dynamic hands
 * out items one at a time instead (for work with no per-thread state), so a thread slowed
 * by another process on its core does not hold the others up. */
#define NN_DISPATCH_TU
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "err.h"
#include "nn_impl.h"

struct NnTeam {
    int        n;             /* threads including the caller */
    int        generic;       /* 1: portable kernels */
    const NnKernels *k;       /* the kernel path (nn_cpu.c) */
    pthread_t *th;
    int        n_started;
    pthread_mutex_t mu;
    pthread_cond_t  cv_go, cv_done;
    uint64_t   gen;           /* bumped for every run */
    int        pending;       /* workers still busy with the current run */
    int        quit;
    NnTask     fn;
    void      *ctx;
    int        n_items;
    int        dynamic;
    atomic_int next;          /* next unclaimed item (dynamic runs) */
    double    *items;         /* NN_ITEM_DOUBLES of per-item results */
    float     *mem;           /* one block: scratch then acc for every thread */
    size_t     mem_bytes;
    size_t     scratch_floats, acc_floats;
};

typedef struct { NnTeam *t; int tid; } WorkerArg;

int nn_team_active(const NnTeam *t, int n_items)
{
    return n_items < t->n ? (n_items > 0 ? n_items : 0) : t->n;
}

static void run_share(NnTeam *t, int tid)
{
    if (t->dynamic) {
        for (int i; (i = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed)) < t->n_items; )
            t->fn(t->ctx, tid, i, i + 1);
        return;
    }
    long n = t->n_items;
    int na = nn_team_active(t, t->n_items);
    if (tid >= na) return;
    int b = (int)(n * tid / na), e = (int)(n * (tid + 1) / na);
    t->fn(t->ctx, tid, b, e);
}

static void *worker(void *arg)
{
    WorkerArg *wa = arg;
    NnTeam *t = wa->t;
    int tid = wa->tid;
    free(wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->quit && t->gen == seen) pthread_cond_wait(&t->cv_go, &t->mu);
        if (t->quit) break;
        seen = t->gen;
        pthread_mutex_unlock(&t->mu);
        run_share(t, tid);
        pthread_mutex_lock(&t->mu);
        if (--t->pending == 0) pthread_cond_signal(&t->cv_done);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static size_t round64(size_t floats) { return (floats + 15) / 16 * 16; }

int nn_team_create(int n_threads, size_t scratch_floats, size_t acc_floats, NnTeam **out)
{
    *out = NULL;
    if (n_threads < 0 || n_threads > 256)
        return seg_err(SEG_EARG, "nn_team_create: %d threads (0..256)", n_threads);
    if (n_threads == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)(c > 256 ? 256 : c) : 1;
    }
    const int path = nn_cpu_select();
    if (path < 0) return path;
    NnTeam *t = calloc(1, sizeof *t);
    if (!t) return seg_err(SEG_ENOMEM, "nn_team_create: team struct");
    t->n = n_threads;
    t->k = nn_cpu_kernels(path);
    t->generic = path == NN_CPU_GENERIC;
    t->scratch_floats = round64(scratch_floats);
    t->acc_floats = round64(acc_floats);
    t->mem_bytes = sizeof(float) * (t->scratch_floats + t->acc_floats) * (size_t)n_threads
                 + sizeof(double) * NN_ITEM_DOUBLES;
    if (t->mem_bytes) {
        /* one mapping, touched now, so the steps take no page faults on it */
        void *p = mmap(NULL, t->mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            const size_t bytes = t->mem_bytes;
            free(t);
            return seg_err(SEG_ENOMEM, "nn_team_create: %zu bytes of scratch (errno %d)", bytes, errno);
        }
        madvise(p, t->mem_bytes, MADV_HUGEPAGE);
        memset(p, 0, t->mem_bytes);
        t->mem = p;
        t->items = (double *)(void *)(t->mem + (t->scratch_floats + t->acc_floats) * (size_t)n_threads);
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv_go, NULL);
    pthread_cond_init(&t->cv_done, NULL);
    t->th = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!t->th) { nn_team_free(t); return seg_err(SEG_ENOMEM, "nn_team_create: thread table"); }
    for (int i = 1; i < n_threads; i++) {
        WorkerArg *wa = malloc(sizeof *wa);
        if (!wa) { nn_team_free(t); return seg_err(SEG_ENOMEM, "nn_team_create: worker arg"); }
        wa->t = t;
        wa->tid = i;
        int rc = pthread_create(&t->th[i], NULL, worker, wa);
        if (rc != 0) {
            free(wa);
            nn_team_free(t);
            return seg_err(SEG_ENOMEM, "nn_team_create: pthread_create: error %d", rc);
        }
        t->n_started = i;
    }
    *out = t;
    return SEG_OK;
}

void nn_team_free(NnTeam *t)
{
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    t->quit = 1;
    pthread_cond_broadcast(&t->cv_go);
    pthread_mutex_unlock(&t->mu);
    for (int i = 1; i <= t->n_started; i++) pthread_join(t->th[i], NULL);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv_go);
    pthread_cond_destroy(&t->cv_done);
    if (t->mem) munmap(t->mem, t->mem_bytes);
    free(t->th);
    free(t);
}

int    nn_team_size(const NnTeam *t) { return t->n; }
int    nn_team_generic(const NnTeam *t) { return t->generic; }
const char *nn_team_cpu(const NnTeam *t) { return t->k->name; }
const NnKernels *nn_team_kernels(const NnTeam *t) { return t->k; }
size_t nn_team_scratch_floats(const NnTeam *t) { return t->scratch_floats; }
float *nn_team_scratch(NnTeam *t, int tid) { return t->mem + (size_t)tid * t->scratch_floats; }
float *nn_team_acc(NnTeam *t, int tid)
{
    return t->mem + (size_t)t->n * t->scratch_floats + (size_t)tid * t->acc_floats;
}

double *nn_team_items(NnTeam *t) { return t->items; }

static void team_run(NnTeam *t, int n_items, NnTask fn, void *ctx, int dynamic)
{
    if (n_items <= 0) return;
    t->fn = fn;
    t->ctx = ctx;
    t->n_items = n_items;
    t->dynamic = dynamic;
    atomic_store_explicit(&t->next, 0, memory_order_relaxed);
    if (nn_team_active(t, n_items) == 1) {
        if (dynamic) for (int i = 0; i < n_items; i++) fn(ctx, 0, i, i + 1);
        else fn(ctx, 0, 0, n_items);
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->pending = t->n - 1;
    t->gen++;
    pthread_cond_broadcast(&t->cv_go);
    pthread_mutex_unlock(&t->mu);
    run_share(t, 0);
    pthread_mutex_lock(&t->mu);
    while (t->pending > 0) pthread_cond_wait(&t->cv_done, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

void nn_team_run(NnTeam *t, int n_items, NnTask fn, void *ctx) { team_run(t, n_items, fn, ctx, 0); }
void nn_team_run_dynamic(NnTeam *t, int n_items, NnTask fn, void *ctx) { team_run(t, n_items, fn, ctx, 1); }

size_t nn_min_scratch_floats(int max_ch)
{
    /* the widest tile any layer builds: 12 rows of a 9*C im2col + 12 rows of output */
    return (size_t)NN_MR * (9 * (size_t)max_ch + 4 * (size_t)max_ch) + 4096;
}
