/* common/unet_backend.h : what a U-Net backend implements, and the model state it shares with
 * the facade (common/unet.c, which validates, keeps the host state dict and the loss, and
 * dispatches through m->be). Backends: unet_backend_cpu (common/unet_cpu.c, always built) and
 * unet_backend_cuda (common/gpu/unet_cuda.c, built with the CUDA toolkit). unet_backend_find
 * (common/unet_device.c) is the only place that knows which ones this build has.
 * Internal to the unet module: callers use unet.h. */
#ifndef SEG_UNET_BACKEND_H
#define SEG_UNET_BACKEND_H
#include <stddef.h>
#include <stdint.h>
#include "unet.h"
#include "unet_layers.h"

/* Phases of bench_unet --profile (the CPU backend times them; unet.c names them). */
enum { UNET_PR_PACK, UNET_PR_CONV_F, UNET_PR_CONV_BD, UNET_PR_CONV_BW, UNET_PR_BN_B, UNET_PR_POOL_F, UNET_PR_POOL_B,
       UNET_PR_UP_F, UNET_PR_UP_B, UNET_PR_HEAD_F, UNET_PR_HEAD_B, UNET_PR_LOSS, UNET_PR_ADAM, UNET_PR_N };

/* A bump allocator over the model's one arena; with base == NULL it only measures. */
typedef struct UnetArena { char *base; size_t off; } UnetArena;

static inline void *unet_arena_take(UnetArena *a, size_t bytes)
{
    a->off = (a->off + 63) & ~(size_t)63;
    void *p = a->base ? a->base + a->off : NULL;
    a->off += bytes;
    return p;
}
#define UNET_TAKEF(a, n) ((float *)unet_arena_take((a), sizeof(float) * (size_t)(n)))

typedef struct UnetBackend UnetBackend;

struct Unet {
    UnetConfig cfg;
    int L, max_batch, H, W;
    UnetDevice dev;
    const UnetBackend *be;
    void *bs;                                     /* the backend's own state (be->create) */
    UnetLayers *net;                              /* the layer table */
    /* the host state dict: parameters (PyTorch order), grads, Adam moments, BN buffers */
    size_t n_params, n_bufs;
    float *params, *grads, *adam_m, *adam_v, *bufs;
    int64_t adam_t;
    UnetTensor *tensors;                          /* views; names point into net */
    int n_tensors;
    /* the last step */
    int last_N, last_train, have_loss;
    int be_rc;                                    /* a backend failure in unet_clip_grad, for unet_adam_step */
    /* loss: UNET_LOSS_*, the last parts, per-plane sums, the Dice gradient coefficients */
    int loss_kind;
    double loss_bce, loss_dice;
    long n_lab;                                   /* labelled planes of the last loss */
    double *planes;                               /* max_batch*C*NN_LOSS_PLANE */
    float *coef_a, *coef_b;                       /* C each */
    /* the arena: the state above plus the backend's host buffers (be->carve) */
    void *arena;
    size_t arena_bytes;
    int prof_on;
    double prof[UNET_PR_N];
};

/* Every entry is set (no NULLs). "Queued" entries may return before the device finished. */
struct UnetBackend {
    const char *name;
    /* Is device `index` usable? SEG_OK and what it is in desc, else SEG_EGPU and why. */
    int    (*probe)(int index, char *desc, size_t cap);
    /* Allocate m->bs (m->cfg, m->net and the shape are set); carve lays out the backend's host
     * buffers after the state dict (called twice: measuring, then for real); start runs once
     * the arena and the state dict exist. destroy frees m->bs after any of them failed. */
    int    (*create)(Unet *m);
    void   (*carve)(Unet *m, UnetArena *a);
    int    (*start)(Unet *m, int threads);
    void   (*destroy)(Unet *m);
    /* The host state was rewritten (unet_init): the device copy is stale. */
    void   (*invalidate)(Unet *m);
    int    (*forward)(Unet *m, const float *x, int N, int train);
    const float *(*logits)(const Unet *m);        /* NULL on failure (seg_errmsg) */
    /* Per-plane sums into m->planes (nn_loss_planes' layout); keeps the targets for backward. */
    int    (*loss)(Unet *m, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N, int dice);
    /* After unet.c set loss_kind, n_lab and (Dice) coef_a/coef_b: what backward differentiates. */
    int    (*loss_grad)(Unet *m);
    int    (*backward)(Unet *m);                  /* overwrites the grads */
    int    (*grad_sumsq)(Unet *m, double *ss);
    int    (*scale_grads)(Unet *m, float s);
    /* Adam at step t; *skipped = 1 when the step was dropped (fp16 overflow). */
    int    (*adam)(Unet *m, float lr, float beta1, float beta2, float eps, int64_t t, int *skipped);
    int    (*dice)(const Unet *m, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N,
                   int64_t *tp, int64_t *fp, int64_t *fn);
    int    (*sync_host)(const Unet *m);
    int    (*sync_device)(Unet *m);
    size_t (*device_memory)(const Unet *m);
    int    (*wait)(Unet *m);
    int    (*step_times)(Unet *m, double *busy_s, double *wall_s, int *steps);
};

extern const UnetBackend unet_backend_cpu;       /* common/unet_cpu.c */
extern const UnetBackend unet_backend_cuda;      /* common/gpu/unet_cuda.c, CUDA builds only */

/* The backend for a device kind (UNET_CPU, UNET_CUDA), NULL when this build has none. */
const UnetBackend *unet_backend_find(int kind);

#endif
