/* common/unet.c : the U-Net facade (unet.h). It validates, builds the layer table
 * (unet_layers.h), owns the arena with the host state dict (parameters, grads, Adam moments,
 * BN buffers, loss sums), computes the loss from the backend's per-plane sums, and hands
 * every step to the backend chosen at create (unet_backend.h: CPU or CUDA). It never asks
 * which backend it runs on. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "err.h"
#include "nn.h"
#include "unet.h"
#include "util.h"
#include "unet_backend.h"

static const char *const prof_names[UNET_PR_N] = {
    "pack weights", "conv3x3 fwd", "conv3x3 bwd data", "conv3x3 bwd weights", "bn+relu bwd",
    "maxpool fwd", "maxpool bwd", "convT fwd", "convT bwd", "head fwd", "head bwd",
    "loss", "adam" };

/* ---- create --------------------------------------------------------------------------------- */
/* The host state dict, then the backend's buffers; with a->base == NULL only measures. */
static void carve(Unet *m, UnetArena *a)
{
    const int C = m->cfg.n_classes, NB = m->max_batch;
    m->params = UNET_TAKEF(a, m->n_params);
    m->grads = UNET_TAKEF(a, m->n_params);
    m->adam_m = UNET_TAKEF(a, m->n_params);
    m->adam_v = UNET_TAKEF(a, m->n_params);
    m->bufs = UNET_TAKEF(a, m->n_bufs);
    m->planes = unet_arena_take(a, sizeof(double) * (size_t)NB * C * NN_LOSS_PLANE);
    m->coef_a = UNET_TAKEF(a, C);
    m->coef_b = UNET_TAKEF(a, C);
    m->be->carve(m, a);
}

/* The public state-dict views, from the layer table. */
static void point_tensors(Unet *m)
{
    for (int i = 0; i < m->n_tensors; i++) {
        const UnetLayerTensor *e = &m->net->tensor[i];
        UnetTensor *t = &m->tensors[i];
        t->name = e->name;
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->count = e->count;
        t->trainable = e->trainable;
        t->offset = e->trainable ? e->off : 0;
        t->data = (e->trainable ? m->params : m->bufs) + e->off;
    }
}

void unet_default_config(UnetConfig *cfg, int n_classes)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->in_ch = 1;
    cfg->n_classes = n_classes;
    cfg->n_levels = 4;
    for (int i = 0; i < 4; i++) cfg->features[i] = 32 << i;
}

int unet_create(const UnetConfig *cfg, int max_batch, int H, int W, int threads, Unet **out)
{
    return unet_create_on(cfg, max_batch, H, W, threads, NULL, out);
}

int unet_create_on(const UnetConfig *cfg, int max_batch, int H, int W, int threads, const UnetDevice *dev, Unet **out)
{
    *out = NULL;
    if (dev && dev->kind != UNET_CPU && dev->kind != UNET_CUDA)
        return seg_err(SEG_EARG, "unet_create: device not resolved (call unet_device_resolve)");
    const UnetBackend *be = unet_backend_find(dev ? dev->kind : UNET_CPU);
    if (!be)
        return seg_err(SEG_EGPU, "this build of segkit has no CUDA backend (built without the CUDA toolkit or with GPU=0)");
    if (!cfg || cfg->n_levels < 1 || cfg->n_levels > UNET_MAX_LEVELS)
        return seg_err(SEG_EARG, "unet_create: n_levels %d (1..%d)", cfg ? cfg->n_levels : 0, UNET_MAX_LEVELS);
    if (cfg->in_ch < 1 || cfg->in_ch > 64 || cfg->n_classes < 1 || cfg->n_classes > 4096)
        return seg_err(SEG_EARG, "unet_create: in_ch %d, n_classes %d", cfg->in_ch, cfg->n_classes);
    for (int i = 0; i < cfg->n_levels; i++)
        if (cfg->features[i] < 1 || cfg->features[i] > 4096)
            return seg_err(SEG_EARG, "unet_create: features[%d] = %d", i, cfg->features[i]);
    const int L = cfg->n_levels;
    if (max_batch < 1 || H < 1 || W < 1 || H % (1 << L) || W % (1 << L))
        return seg_err(SEG_EARG, "unet_create: batch %d, %dx%d: H and W must be positive multiples of 2^%d = %d",
                       max_batch, H, W, L, 1 << L);
    if (((long)H * W) % 8)
        return seg_err(SEG_EARG, "unet_create: H*W = %ld is not a multiple of 8 (bit-packed targets)", (long)H * W);
    if ((double)max_batch * H * W * (cfg->n_classes + 8.0 * cfg->features[0]) > 4e9)
        return seg_err(SEG_EARG, "unet_create: batch %d at %dx%d is too large", max_batch, H, W);
    Unet *m = calloc(1, sizeof *m);
    if (!m) return seg_err(SEG_ENOMEM, "unet_create: model struct");
    m->cfg = *cfg;
    if (dev) m->dev = *dev;
    for (int i = L; i < UNET_MAX_LEVELS; i++) m->cfg.features[i] = 0;
    m->L = L;
    m->max_batch = max_batch;
    m->H = H;
    m->W = W;
    m->be = be;
    m->loss_kind = UNET_LOSS_BCE;
    m->loss_bce = m->loss_dice = NAN;
    int rc;
    m->net = malloc(sizeof *m->net);
    if (!m->net) { unet_free(m); return seg_err(SEG_ENOMEM, "unet_create: layer table"); }
    if ((rc = unet_layers_build(&m->cfg, m->net)) < 0) { unet_free(m); return rc; }
    m->n_params = m->net->n_params;
    m->n_bufs = m->net->n_bufs;
    m->n_tensors = m->net->n_tensors;
    m->tensors = calloc((size_t)m->n_tensors, sizeof(UnetTensor));
    if (!m->tensors) { unet_free(m); return seg_err(SEG_ENOMEM, "unet_create: tensor table"); }
    if ((rc = be->create(m)) < 0) { unet_free(m); return rc; }
    UnetArena a = { NULL, 0 };
    carve(m, &a);
    m->arena_bytes = (a.off + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    void *p = mmap(NULL, m->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        const size_t bytes = m->arena_bytes;
        m->arena_bytes = 0;
        unet_free(m);
        return seg_err(SEG_ENOMEM, "unet_create: %zu MiB of buffers (errno %d)", bytes >> 20, errno);
    }
    m->arena = p;
    madvise(p, m->arena_bytes, MADV_HUGEPAGE);
    memset(p, 0, m->arena_bytes);      /* touch it all now: no page faults inside the steps */
    a = (UnetArena){ p, 0 };
    carve(m, &a);
    point_tensors(m);
    if ((rc = be->start(m, threads)) < 0) { unet_free(m); return rc; }
    unet_init(m, 0);
    *out = m;
    return SEG_OK;
}

void unet_free(Unet *m)
{
    if (!m) return;
    if (m->be) m->be->destroy(m);
    if (m->arena) munmap(m->arena, m->arena_bytes);
    free(m->tensors);
    free(m->net);
    free(m);
}

const UnetConfig *unet_config(const Unet *m) { return &m->cfg; }
int               unet_n_tensors(const Unet *m) { return m->n_tensors; }
const UnetTensor *unet_tensor(const Unet *m, int i) { return i >= 0 && i < m->n_tensors ? &m->tensors[i] : NULL; }
size_t   unet_n_params(const Unet *m) { return m->n_params; }
float   *unet_params(Unet *m) { return m->params; }
float   *unet_grads(Unet *m) { return m->grads; }
float   *unet_adam_m(Unet *m) { return m->adam_m; }
float   *unet_adam_v(Unet *m) { return m->adam_v; }
int64_t *unet_adam_step_count(Unet *m) { return &m->adam_t; }
size_t   unet_memory_bytes(const Unet *m) { return m->arena_bytes; }
double   unet_flops_per_sample(const Unet *m) { return unet_layers_total_flops(m->net, m->H, m->W); }

/* ---- init ----------------------------------------------------------------------------------- */
static void fill_uniform(float *p, size_t n, double bound, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        const double u = (double)(util_splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);   /* [0,1) */
        p[i] = (float)((2.0 * u - 1.0) * bound);
    }
}

void unet_init(Unet *m, uint64_t seed)
{
    uint64_t s = seed ^ 0x5E6B17C0DEull;
    for (int i = 0; i < m->n_tensors; i++) {
        UnetTensor *t = &m->tensors[i];
        const char *nm = t->name;
        const size_t len = strlen(nm);
        if (!t->trainable) {                         /* running_mean 0, running_var 1, count 0 */
            const int is_var = len > 11 && !strcmp(nm + len - 11, "running_var");
            for (size_t k = 0; k < t->count; k++) t->data[k] = is_var ? 1.f : 0.f;
            continue;
        }
        if (t->ndim == 1 && i > 0 && m->tensors[i - 1].ndim == 4 && strcmp(nm + len - 4, "bias") == 0) {
            /* conv / convT bias: bound from the weight's fan_in, as PyTorch */
            const UnetTensor *w = &m->tensors[i - 1];
            const double fan_in = (double)w->shape[1] * (double)(w->shape[2] * w->shape[3]);
            fill_uniform(t->data, t->count, 1.0 / sqrt(fan_in), &s);
        } else if (t->ndim == 1) {                   /* BatchNorm weight 1, bias 0 */
            const int is_w = strcmp(nm + len - 6, "weight") == 0;
            for (size_t k = 0; k < t->count; k++) t->data[k] = is_w ? 1.f : 0.f;
        } else {
            /* kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = size(1)*k*k
             * for Conv2d (Co,Ci,k,k) and ConvTranspose2d (Ci,Co,k,k) alike, as PyTorch computes it */
            const double fan_in = (double)t->shape[1] * (double)(t->shape[2] * t->shape[3]);
            fill_uniform(t->data, t->count, 1.0 / sqrt(fan_in), &s);
        }
    }
    memset(m->grads, 0, sizeof(float) * m->n_params);
    memset(m->adam_m, 0, sizeof(float) * m->n_params);
    memset(m->adam_v, 0, sizeof(float) * m->n_params);
    m->adam_t = 0;
    m->have_loss = 0;
    m->last_N = 0;
    m->be->invalidate(m);
}

/* ---- the device copy ------------------------------------------------------------------------ */
int    unet_sync_host(const Unet *m) { return m->be->sync_host(m); }
int    unet_sync_device(Unet *m) { return m->be->sync_device(m); }
size_t unet_device_memory_bytes(const Unet *m) { return m->be->device_memory(m); }
int    unet_wait(Unet *m) { return m->be->wait(m); }

int unet_gpu_step_times(Unet *m, double *busy_s, double *wall_s, int *steps)
{
    return m->be->step_times(m, busy_s, wall_s, steps);
}

const float *unet_logits(const Unet *m) { return m->be->logits(m); }

/* ---- forward -------------------------------------------------------------------------------- */
int unet_forward(Unet *m, const float *x, int N, int train)
{
    if (N < 1 || N > m->max_batch)
        return seg_err(SEG_EARG, "unet_forward: batch %d (model holds 1..%d)", N, m->max_batch);
    TRY(m->be->forward(m, x, N, train));
    m->last_N = N;
    m->last_train = train;
    m->have_loss = 0;
    return SEG_OK;
}

/* ---- loss ------------------------------------------------------------------------------------ */
static const char *const loss_names[] = { "bce", "dice", "bce+dice" };

int unet_loss_parse(const char *s, int *kind)
{
    for (int k = 0; k < 3; k++)
        if (s && !strcmp(s, loss_names[k])) { *kind = k; return SEG_OK; }
    return seg_err(SEG_EARG, "loss '%s': expected bce, dice or bce+dice", s ? s : "(null)");
}

const char *unet_loss_name(int kind) { return kind >= 0 && kind < 3 ? loss_names[kind] : "?"; }

int unet_set_loss(Unet *m, int kind)
{
    if (kind < 0 || kind > 2) return seg_err(SEG_EARG, "unet_set_loss: unknown loss kind %d", kind);
    m->loss_kind = kind;
    m->have_loss = 0;
    return SEG_OK;
}

void unet_loss_parts(const Unet *m, double *bce, double *dice)
{
    if (bce) *bce = m->loss_bce;
    if (dice) *dice = m->loss_dice;
}

float unet_loss_bce(Unet *m, const uint8_t *bits, const uint8_t *presence, int N)
{
    float l;
    return unet_loss(m, bits, presence, N, &l) < 0 ? NAN : l;
}

int unet_loss(Unet *m, const uint8_t *bits, const uint8_t *presence, int N, float *loss)
{
    return unet_loss_masked(m, bits, presence, NULL, N, loss);
}

int unet_loss_masked(Unet *m, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N,
                     float *loss)
{
    *loss = NAN;
    if (N != m->last_N || N < 1)
        return seg_err(SEG_EARG, "unet_loss: batch %d but the last forward had %d", N, m->last_N);
    const int C = m->cfg.n_classes, dice = m->loss_kind != UNET_LOSS_BCE;
    const long HW = (long)m->H * m->W;
    m->have_loss = 0;
    m->loss_bce = m->loss_dice = NAN;
    TRY(m->be->loss(m, bits, presence, labelled, N, dice));
    /* the BCE mean is over labelled elements only; none labelled: 0 with zero gradient */
    m->n_lab = nn_labelled_planes(labelled, N, C);
    m->loss_bce = m->n_lab ? nn_loss_bce_total(m->planes, N, C) / ((double)m->n_lab * (double)HW) : 0.0;
    if (dice) m->loss_dice = nn_soft_dice(m->planes, N, C, m->coef_a, m->coef_b);
    TRY(m->be->loss_grad(m));
    m->have_loss = 1;
    const double l = m->loss_kind == UNET_LOSS_BCE ? m->loss_bce
                   : m->loss_kind == UNET_LOSS_DICE ? m->loss_dice : m->loss_bce + m->loss_dice;
    *loss = (float)l;
    return SEG_OK;
}

/* ---- backward, optimizer -------------------------------------------------------------------- */
int unet_backward(Unet *m)
{
    if (!m->last_N || !m->last_train || !m->have_loss)
        return seg_err(SEG_EARG, "unet_backward: needs forward(train=1) then unet_loss first");
    return m->be->backward(m);
}

float unet_clip_grad(Unet *m, float max_norm)
{
    double ss;
    if ((m->be_rc = m->be->grad_sumsq(m, &ss)) < 0) return NAN;
    const double norm = sqrt(ss);
    if (max_norm > 0.f) {
        const double coef = (double)max_norm / (norm + 1e-6);      /* torch.nn.utils.clip_grad_norm_ */
        if (coef < 1.0 && (m->be_rc = m->be->scale_grads(m, (float)coef)) < 0) return NAN;
    }
    return (float)norm;
}

int unet_adam_step(Unet *m, float lr, float beta1, float beta2, float eps)
{
    int skipped = 0;
    if (m->be_rc < 0) { const int rc = m->be_rc; m->be_rc = 0; return rc; }
    TRY(m->be->adam(m, lr, beta1, beta2, eps, m->adam_t + 1, &skipped));
    if (!skipped) m->adam_t++;
    return skipped;
}

int unet_dice_counts(const Unet *m, const uint8_t *bits, const uint8_t *presence, int N,
                     int64_t *tp, int64_t *fp, int64_t *fn)
{
    return unet_dice_counts_masked(m, bits, presence, NULL, N, tp, fp, fn);
}

int unet_dice_counts_masked(const Unet *m, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
                            int N, int64_t *tp, int64_t *fp, int64_t *fn)
{
    if (N < 1 || N > m->last_N) return seg_err(SEG_EARG, "unet_dice_counts: batch %d, last forward %d", N, m->last_N);
    return m->be->dice(m, bits, presence, labelled, N, tp, fp, fn);
}

/* ---- profiling ------------------------------------------------------------------------------ */
void unet_profile_enable(Unet *m, int on)
{
    m->prof_on = on;
    memset(m->prof, 0, sizeof m->prof);
}

int unet_profile(const Unet *m, const char **names, double *seconds, int max)
{
    int n = 0;
    for (int i = 0; i < UNET_PR_N && n < max; i++, n++) {
        names[n] = prof_names[i];
        seconds[n] = m->prof[i];
    }
    return n;
}
