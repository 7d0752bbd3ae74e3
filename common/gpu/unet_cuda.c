/* common/gpu/unet_cuda.c : the CUDA backend of the U-Net (unet_backend.h), glue between the
 * facade's host state dict and the device model of gpu_net.cu (gpu.h). Built only with the
 * CUDA toolkit (the Makefile adds it to the CUDA objects). The host copy of the state is the
 * truth for checkpoints: unet_init and checkpoint loading mark the device copy stale, and
 * the next forward uploads it. */
#include <stdlib.h>
#include "err.h"
#include "gpu.h"
#include "unet_backend.h"

typedef struct CudaNet {
    GpuNet *g;
    int dev_stale;                /* host state changed: upload before the next forward */
    int logits_fresh;             /* logits hold the last forward's */
    float *logits;                /* host copy, allocated by the first unet_logits */
} CudaNet;

#define CU(m) ((CudaNet *)(m)->bs)

static int cuda_create(Unet *m)
{
    m->bs = calloc(1, sizeof(CudaNet));
    return m->bs ? SEG_OK : seg_err(SEG_ENOMEM, "unet_create: CUDA model");
}

static void cuda_carve(Unet *m, UnetArena *a) { (void)m; (void)a; }   /* the device holds the rest */

static int cuda_start(Unet *m, int threads)
{
    const GpuNetDesc d = { .net = m->net, .max_batch = m->max_batch, .H = m->H, .W = m->W, .device = m->dev.index,
                           .amp = m->dev.amp };
    return gpu_net_create(&d, &CU(m)->g);
}

static void cuda_destroy(Unet *m)
{
    if (!m->bs) return;
    gpu_net_free(CU(m)->g);
    free(CU(m)->logits);
    free(m->bs);
    m->bs = NULL;
}

static void cuda_invalidate(Unet *m) { CU(m)->dev_stale = 1; }

static int cuda_sync_device(Unet *m)
{
    TRY(gpu_net_upload(CU(m)->g, m->params, m->bufs, m->adam_m, m->adam_v));
    CU(m)->dev_stale = 0;
    m->last_N = 0;
    m->have_loss = 0;
    return SEG_OK;
}

static int cuda_sync_host(const Unet *m)
{
    if (CU(m)->dev_stale) return SEG_OK;          /* stale: the host copy is the newer one */
    return gpu_net_download(CU(m)->g, m->params, m->bufs, m->adam_m, m->adam_v, m->grads);
}

static int cuda_forward(Unet *m, const float *x, int N, int train)
{
    if (CU(m)->dev_stale) TRY(cuda_sync_device(m));
    CU(m)->logits_fresh = 0;
    return gpu_net_forward(CU(m)->g, x, N, train);
}

static const float *cuda_logits(const Unet *m)
{
    CudaNet *c = CU(m);                           /* a cache of device data: logically const */
    if (c->logits_fresh) return c->logits;
    if (!c->logits && !(c->logits = malloc(sizeof(float) * (size_t)m->max_batch * m->cfg.n_classes * m->H * m->W))) {
        seg_err(SEG_ENOMEM, "unet_logits: host buffer for %d x %d logit planes", m->max_batch, m->cfg.n_classes);
        return NULL;
    }
    if (gpu_net_logits(c->g, c->logits) < 0) return NULL;
    c->logits_fresh = 1;
    return c->logits;
}

static int cuda_loss(Unet *m, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N, int dice)
{
    return gpu_net_loss(CU(m)->g, bits, presence, labelled, N, dice, m->planes);
}

static int cuda_loss_grad(Unet *m)
{
    const int dice = m->loss_kind != UNET_LOSS_BCE;
    return gpu_net_set_loss_grad(CU(m)->g, m->loss_kind == UNET_LOSS_DICE ? 0.f : 1.f, dice ? m->coef_a : NULL,
                                 dice ? m->coef_b : NULL);
}

static int cuda_backward(Unet *m) { return gpu_net_backward(CU(m)->g); }
static int cuda_grad_sumsq(Unet *m, double *ss) { return gpu_net_grad_sumsq(CU(m)->g, ss); }
static int cuda_scale_grads(Unet *m, float s) { return gpu_net_scale_grads(CU(m)->g, s); }

static int cuda_adam(Unet *m, float lr, float beta1, float beta2, float eps, int64_t t, int *skipped)
{
    return gpu_net_adam(CU(m)->g, lr, beta1, beta2, eps, t, skipped);
}

static int cuda_dice(const Unet *m, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N,
                     int64_t *tp, int64_t *fp, int64_t *fn)
{
    return gpu_net_dice(CU(m)->g, bits, presence, labelled, N, tp, fp, fn);
}

static size_t cuda_device_memory(const Unet *m) { return gpu_net_memory_bytes(CU(m)->g); }
static int    cuda_wait(Unet *m) { return gpu_net_wait(CU(m)->g); }

static int cuda_step_times(Unet *m, double *busy_s, double *wall_s, int *steps)
{
    return gpu_net_step_times(CU(m)->g, busy_s, wall_s, steps);
}

const UnetBackend unet_backend_cuda = {
    .name = "cuda",
    .probe = gpu_probe,
    .create = cuda_create,
    .carve = cuda_carve,
    .start = cuda_start,
    .destroy = cuda_destroy,
    .invalidate = cuda_invalidate,
    .forward = cuda_forward,
    .logits = cuda_logits,
    .loss = cuda_loss,
    .loss_grad = cuda_loss_grad,
    .backward = cuda_backward,
    .grad_sumsq = cuda_grad_sumsq,
    .scale_grads = cuda_scale_grads,
    .adam = cuda_adam,
    .dice = cuda_dice,
    .sync_host = cuda_sync_host,
    .sync_device = cuda_sync_device,
    .device_memory = cuda_device_memory,
    .wait = cuda_wait,
    .step_times = cuda_step_times,
};
