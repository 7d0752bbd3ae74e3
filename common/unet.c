/* common/unet.c : the 2D U-Net on the CPU (see unet.h for the architecture and API).
 *
 * Memory plan (everything in one arena, mapped and touched in unet_create, reused by every
 * step; no allocation afterwards). Activations are NHWC. Each conv keeps only its raw output
 * z; BatchNorm+ReLU is applied lazily by every reader (nn.h: NnAct), and backward rebuilds
 * the ReLU mask and x_hat from z. Kept for backward: per level the encoder's z1, z2, the
 * pooled input and argmax bytes, the decoder's upsampled u, z1, z2; the logits. The skip
 * concatenation is never materialised (the decoder conv reads two views). Gradients use
 * two ping-pong buffers of the largest level, plus one skip-gradient buffer per level
 * (written by the decoder, completed by the pool backward, consumed by the encoder). The
 * logits' gradient is never stored: the head backward recomputes it tile by tile from the
 * logits and a copy of the packed targets. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include "err.h"
#include "nn.h"
#include "unet.h"
#ifdef SEG_HAVE_CUDA
#include "gpu.h"
#else
typedef struct GpuNet GpuNet;
#endif

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f

typedef struct ConvL {           /* conv3x3 (no bias) -> BatchNorm2d -> ReLU */
    int Ci, Co;
    float *w, *gw, *gamma, *beta, *ggamma, *gbeta;
    float *rm, *rv, *nbt;
    float *wp, *wpb;             /* packed for forward / input gradient */
    float *mean, *invstd, *scale, *shift;
    double *sum, *sumsq;
    float *z;                    /* raw conv output, (P, Co) */
} ConvL;

typedef struct { ConvL c1, c2; } Block;

typedef struct UpL {             /* ConvTranspose2d k2 s2 into level l */
    int Ci, Co;
    float *w, *b, *gw, *gb, *wp, *wpb;
    float *u;                    /* (P_l, Co) */
} UpL;

enum { PR_PACK, PR_CONV_F, PR_CONV_BD, PR_CONV_BW, PR_BN_B, PR_POOL_F, PR_POOL_B, PR_UP_F,
       PR_UP_B, PR_HEAD_F, PR_HEAD_B, PR_LOSS, PR_ADAM, PR_N };
static const char *const prof_names[PR_N] = {
    "pack weights", "conv3x3 fwd", "conv3x3 bwd data", "conv3x3 bwd weights", "bn+relu bwd",
    "maxpool fwd", "maxpool bwd", "convT fwd", "convT bwd", "head fwd", "head bwd",
    "loss", "adam" };

struct Unet {
    UnetConfig cfg;
    int L, max_batch, H, W;
    UnetDevice dev;
    GpuNet *gpu;                                  /* the device model (dev.kind == UNET_CUDA) */
    int dev_stale;                                /* host state changed: upload before the next forward */
    int gpu_rc;                                   /* a GPU failure in unet_clip_grad, for unet_adam_step */
    int logits_fresh;                             /* host logits hold the last forward's */
    NnTeam *team;
    /* parameters (trainable, PyTorch order) and BN buffers */
    size_t n_params, n_bufs;
    float *params, *grads, *adam_m, *adam_v, *bufs;
    int64_t adam_t;
    UnetTensor *tensors;
    int n_tensors;
    char *names;
    /* layers */
    Block enc[UNET_MAX_LEVELS], dec[UNET_MAX_LEVELS], bott;
    UpL up[UNET_MAX_LEVELS];
    float *head_w, *head_b, *head_gw, *head_gb, *head_wt;
    /* activations and gradients */
    float *xin;                                   /* (P_0, in_ch) */
    float *pool[UNET_MAX_LEVELS + 1];             /* pool[l]: input of level l (l >= 1) */
    uint8_t *pidx[UNET_MAX_LEVELS + 1];
    float *dskip[UNET_MAX_LEVELS];
    float *ga, *gb;
    float *logits;
    uint8_t *bits, *pres, *lab;                   /* lab: the loss's labelled bitmap when has_lab */
    int has_lab;
    long n_lab;                                   /* labelled planes of the last loss */
    int last_N, last_train, have_loss;
    /* loss: UNET_LOSS_*, the last parts, per-plane sums, the Dice gradient coefficients */
    int loss_kind;
    double loss_bce, loss_dice;
    double *planes;                               /* max_batch*C*NN_LOSS_PLANE */
    float *coef_a, *coef_b;                       /* C each */
    /* arena */
    void *arena;
    size_t arena_bytes;
    /* profile */
    int prof_on;
    double prof[PR_N];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define PROF(m, slot, stmt) do { double t0_ = (m)->prof_on ? now_s() : 0; stmt; \
    if ((m)->prof_on) (m)->prof[slot] += now_s() - t0_; } while (0)

/* ---- the state dict table ----------------------------------------------------------------- */
typedef struct {
    Unet *m;
    int pass;                    /* 0: count, 1: fill */
    size_t n_params, n_bufs, name_bytes;
    int n;
} Spec;

static void spec_add(Spec *s, const char *name, int ndim, const int64_t *shape, int trainable,
                     float **view, float **gview)
{
    size_t count = 1;
    for (int d = 0; d < ndim; d++) count *= (size_t)shape[d];
    const size_t len = strlen(name) + 1;
    if (s->pass == 1) {
        UnetTensor *t = &s->m->tensors[s->n];
        char *nm = s->m->names + s->name_bytes;
        memcpy(nm, name, len);
        t->name = nm;
        t->ndim = ndim;
        for (int d = 0; d < 4; d++) t->shape[d] = d < ndim ? shape[d] : 0;
        t->count = count;
        t->trainable = trainable;
        t->offset = trainable ? s->n_params : 0;
        t->data = trainable ? s->m->params + s->n_params : s->m->bufs + s->n_bufs;
        *view = t->data;
        if (gview) *gview = trainable ? s->m->grads + s->n_params : NULL;
    }
    if (trainable) s->n_params += count; else s->n_bufs += count;
    s->name_bytes += len;
    s->n++;
}

static void spec_conv(Spec *s, const char *pre, int i_conv, int i_bn, ConvL *c, int ci, int co)
{
    char nm[128];
    int64_t w4[4] = { co, ci, 3, 3 }, v1[1] = { co };
    c->Ci = ci;
    c->Co = co;
    snprintf(nm, sizeof nm, "%s.net.%d.weight", pre, i_conv); spec_add(s, nm, 4, w4, 1, &c->w, &c->gw);
    snprintf(nm, sizeof nm, "%s.net.%d.weight", pre, i_bn); spec_add(s, nm, 1, v1, 1, &c->gamma, &c->ggamma);
    snprintf(nm, sizeof nm, "%s.net.%d.bias", pre, i_bn); spec_add(s, nm, 1, v1, 1, &c->beta, &c->gbeta);
    snprintf(nm, sizeof nm, "%s.net.%d.running_mean", pre, i_bn); spec_add(s, nm, 1, v1, 0, &c->rm, NULL);
    snprintf(nm, sizeof nm, "%s.net.%d.running_var", pre, i_bn); spec_add(s, nm, 1, v1, 0, &c->rv, NULL);
    snprintf(nm, sizeof nm, "%s.net.%d.num_batches_tracked", pre, i_bn); spec_add(s, nm, 0, NULL, 0, &c->nbt, NULL);
}

static void spec_block(Spec *s, const char *pre, Block *b, int ci, int co)
{
    spec_conv(s, pre, 0, 1, &b->c1, ci, co);
    spec_conv(s, pre, 3, 4, &b->c2, co, co);
}

/* downs.*, ups.*, bottleneck.*, head.*: PyTorch registers downs and ups before bottleneck */
static void spec_model(Spec *s)
{
    Unet *m = s->m;
    const int L = m->L, *f = m->cfg.features;
    char nm[128];
    for (int i = 0; i < L; i++) {
        snprintf(nm, sizeof nm, "downs.%d", i);
        spec_block(s, nm, &m->enc[i], i == 0 ? m->cfg.in_ch : f[i - 1], f[i]);
    }
    for (int j = 0; j < L; j++) {
        const int l = L - 1 - j, cin = j == 0 ? 2 * f[L - 1] : f[l + 1];
        UpL *u = &m->up[l];
        int64_t w4[4] = { cin, f[l], 2, 2 }, v1[1] = { f[l] };
        u->Ci = cin;
        u->Co = f[l];
        snprintf(nm, sizeof nm, "ups.%d.weight", 2 * j); spec_add(s, nm, 4, w4, 1, &u->w, &u->gw);
        snprintf(nm, sizeof nm, "ups.%d.bias", 2 * j); spec_add(s, nm, 1, v1, 1, &u->b, &u->gb);
        snprintf(nm, sizeof nm, "ups.%d", 2 * j + 1);
        spec_block(s, nm, &m->dec[l], 2 * f[l], f[l]);
    }
    spec_block(s, "bottleneck", &m->bott, f[L - 1], 2 * f[L - 1]);
    int64_t hw[4] = { m->cfg.n_classes, f[0], 1, 1 }, hb[1] = { m->cfg.n_classes };
    spec_add(s, "head.weight", 4, hw, 1, &m->head_w, &m->head_gw);
    spec_add(s, "head.bias", 1, hb, 1, &m->head_b, &m->head_gb);
}

/* ---- arena -------------------------------------------------------------------------------- */
typedef struct { char *base; size_t off; } Arena;

static void *take(Arena *a, size_t bytes)
{
    a->off = (a->off + 63) & ~(size_t)63;
    void *p = a->base ? a->base + a->off : NULL;
    a->off += bytes;
    return p;
}
#define TAKEF(a, n) ((float *)take((a), sizeof(float) * (size_t)(n)))

static void carve_conv(Arena *a, ConvL *c, long P, int need_bwd)
{
    c->wp = TAKEF(a, nn_pack_floats(9 * c->Ci, c->Co));
    c->wpb = need_bwd ? TAKEF(a, nn_pack_floats(9 * c->Co, c->Ci)) : NULL;
    c->mean = TAKEF(a, c->Co);
    c->invstd = TAKEF(a, c->Co);
    c->scale = TAKEF(a, c->Co);
    c->shift = TAKEF(a, c->Co);
    c->sum = take(a, sizeof(double) * (size_t)c->Co);
    c->sumsq = take(a, sizeof(double) * (size_t)c->Co);
    c->z = TAKEF(a, (size_t)P * c->Co);
}

/* Lay out every buffer; with a->base == NULL only measures. */
static void carve(Unet *m, Arena *a)
{
    const int L = m->L, *f = m->cfg.features, C = m->cfg.n_classes, NB = m->max_batch;
    long P[UNET_MAX_LEVELS + 1];
    for (int l = 0; l <= L; l++) P[l] = (long)NB * (m->H >> l) * (m->W >> l);
    m->params = TAKEF(a, m->n_params);
    m->grads = TAKEF(a, m->n_params);
    m->adam_m = TAKEF(a, m->n_params);
    m->adam_v = TAKEF(a, m->n_params);
    m->bufs = TAKEF(a, m->n_bufs);
    m->planes = take(a, sizeof(double) * (size_t)NB * C * NN_LOSS_PLANE);
    m->coef_a = TAKEF(a, C);
    m->coef_b = TAKEF(a, C);
    if (m->dev.kind == UNET_CUDA) return;         /* the device holds the rest; host logits on demand */
    for (int l = 0; l < L; l++) {
        carve_conv(a, &m->enc[l].c1, P[l], l > 0);
        carve_conv(a, &m->enc[l].c2, P[l], 1);
        carve_conv(a, &m->dec[l].c1, P[l], 1);
        carve_conv(a, &m->dec[l].c2, P[l], 1);
        UpL *u = &m->up[l];
        u->wp = TAKEF(a, nn_pack_floats(u->Ci, 4 * u->Co));
        u->wpb = TAKEF(a, nn_pack_floats(4 * u->Co, u->Ci));
        u->u = TAKEF(a, (size_t)P[l] * u->Co);
        m->dskip[l] = TAKEF(a, (size_t)P[l] * f[l]);
    }
    carve_conv(a, &m->bott.c1, P[L], 1);
    carve_conv(a, &m->bott.c2, P[L], 1);
    for (int l = 1; l <= L; l++) {
        m->pool[l] = TAKEF(a, (size_t)P[l] * f[l - 1]);
        m->pidx[l] = take(a, (size_t)P[l] * f[l - 1]);
    }
    m->head_wt = TAKEF(a, nn_conv1x1_pack_floats(f[0], C));
    m->xin = TAKEF(a, (size_t)P[0] * m->cfg.in_ch);
    m->logits = TAKEF(a, (size_t)P[0] * C);
    m->bits = take(a, (size_t)P[0] * C / 8);
    m->pres = take(a, (size_t)NB * ((C + 7) / 8));
    m->lab = take(a, (size_t)NB * ((C + 7) / 8));
    size_t g = (size_t)P[L] * 2 * f[L - 1];
    for (int l = 0; l <= L; l++) {
        if (l < L && (size_t)P[l] * f[l] > g) g = (size_t)P[l] * f[l];
        if (l > 0 && (size_t)P[l] * f[l - 1] > g) g = (size_t)P[l] * f[l - 1];
    }
    m->ga = TAKEF(a, g);
    m->gb = TAKEF(a, g);
}

static size_t acc_need(const Unet *m)
{
    size_t need = nn_dice_acc_floats(m->cfg.n_classes);
    const ConvL *cs[4 * UNET_MAX_LEVELS + 2];
    int n = 0;
    for (int l = 0; l < m->L; l++) {
        cs[n++] = &m->enc[l].c1; cs[n++] = &m->enc[l].c2; cs[n++] = &m->dec[l].c1; cs[n++] = &m->dec[l].c2;
        const size_t u = nn_convt_acc_floats(m->up[l].Ci, m->up[l].Co);
        if (u > need) need = u;
    }
    cs[n++] = &m->bott.c1;
    cs[n++] = &m->bott.c2;
    for (int i = 0; i < n; i++) {
        size_t c = nn_conv3x3_acc_floats(cs[i]->Ci, cs[i]->Co);
        if (c > need) need = c;
        c = nn_bn_acc_floats(cs[i]->Co);
        if (c > need) need = c;
    }
    const size_t h = nn_conv1x1_acc_floats(m->cfg.features[0], m->cfg.n_classes);
    return h > need ? h : need;
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
#ifndef SEG_HAVE_CUDA
    if (dev && dev->kind == UNET_CUDA)
        return seg_err(SEG_EGPU, "this build of segkit has no CUDA backend (built without the CUDA toolkit or with GPU=0)");
#endif
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
    m->loss_kind = UNET_LOSS_BCE;
    m->loss_bce = m->loss_dice = NAN;
    Spec s = { .m = m, .pass = 0 };
    spec_model(&s);
    m->n_params = s.n_params;
    m->n_bufs = s.n_bufs;
    m->n_tensors = s.n;
    m->tensors = calloc((size_t)s.n, sizeof(UnetTensor));
    m->names = malloc(s.name_bytes);
    if (!m->tensors || !m->names) { unet_free(m); return seg_err(SEG_ENOMEM, "unet_create: tensor table"); }
    Arena a = { NULL, 0 };
    carve(m, &a);
    m->arena_bytes = (a.off + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    void *p = mmap(NULL, m->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        const size_t bytes = m->arena_bytes;
        unet_free(m);
        return seg_err(SEG_ENOMEM, "unet_create: %zu MiB of buffers (errno %d)", bytes >> 20, errno);
    }
    m->arena = p;
    madvise(p, m->arena_bytes, MADV_HUGEPAGE);
    memset(p, 0, m->arena_bytes);      /* touch it all now: no page faults inside the steps */
    a.base = p;
    a.off = 0;
    carve(m, &a);
    s = (Spec){ .m = m, .pass = 1 };
    spec_model(&s);
    if (m->dev.kind == UNET_CUDA) {
#ifdef SEG_HAVE_CUDA
        GpuNetDesc d = { .cfg = m->cfg, .max_batch = max_batch, .H = H, .W = W, .device = m->dev.index,
                         .amp = m->dev.amp, .tensors = m->tensors, .n_tensors = m->n_tensors, .n_params = m->n_params,
                         .n_bufs = m->n_bufs, .params = m->params, .bufs = m->bufs };
        int rc = gpu_net_create(&d, &m->gpu);
        if (rc < 0) { unet_free(m); return rc; }
#endif
        unet_init(m, 0);
        *out = m;
        return SEG_OK;
    }
    int fmax = 2 * cfg->features[L - 1];
    for (int i = 0; i < L; i++) if (2 * cfg->features[i] > fmax) fmax = 2 * cfg->features[i];
    size_t scratch = NN_SCRATCH_DEFAULT;
    if (nn_min_scratch_floats(fmax) > scratch) scratch = nn_min_scratch_floats(fmax);
    int rc = nn_team_create(threads, scratch, acc_need(m), &m->team);
    if (rc < 0) { unet_free(m); return rc; }
    unet_init(m, 0);
    *out = m;
    return SEG_OK;
}

void unet_free(Unet *m)
{
    if (!m) return;
#ifdef SEG_HAVE_CUDA
    gpu_net_free(m->gpu);
    if (m->gpu) free(m->logits);                      /* malloc'd by unet_logits; on the CPU it is in the arena */
#endif
    nn_team_free(m->team);
    if (m->arena) munmap(m->arena, m->arena_bytes);
    free(m->tensors);
    free(m->names);
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

/* ---- init ----------------------------------------------------------------------------------- */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill_uniform(float *p, size_t n, double bound, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        const double u = (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);   /* [0,1) */
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
    m->dev_stale = m->gpu != NULL;
}

/* ---- the device copy ------------------------------------------------------------------------ */
#ifdef SEG_HAVE_CUDA
int unet_sync_host(const Unet *m)
{
    if (!m->gpu || m->dev_stale) return SEG_OK;       /* stale: the host copy is the newer one */
    return gpu_net_download(m->gpu, m->params, m->bufs, m->adam_m, m->adam_v, m->grads);
}

int unet_sync_device(Unet *m)
{
    if (!m->gpu) return SEG_OK;
    TRY(gpu_net_upload(m->gpu, m->params, m->bufs, m->adam_m, m->adam_v));
    m->dev_stale = 0;
    m->last_N = 0;
    m->have_loss = 0;
    return SEG_OK;
}

size_t unet_device_memory_bytes(const Unet *m) { return m->gpu ? gpu_net_memory_bytes(m->gpu) : 0; }
int unet_wait(Unet *m) { return m->gpu ? gpu_net_wait(m->gpu) : SEG_OK; }

int unet_gpu_step_times(Unet *m, double *busy_s, double *wall_s, int *steps)
{
    if (!m->gpu) return seg_err(SEG_EARG, "unet_gpu_step_times: the model is on the CPU");
    return gpu_net_step_times(m->gpu, busy_s, wall_s, steps);
}
#else
int unet_sync_host(const Unet *m) { (void)m; return SEG_OK; }
int unet_sync_device(Unet *m) { (void)m; return SEG_OK; }
size_t unet_device_memory_bytes(const Unet *m) { (void)m; return 0; }
int unet_wait(Unet *m) { (void)m; return SEG_OK; }
int unet_gpu_step_times(Unet *m, double *busy_s, double *wall_s, int *steps)
{
    (void)m; *busy_s = *wall_s = 0; *steps = 0;
    return seg_err(SEG_EARG, "unet_gpu_step_times: the model is on the CPU");
}
#endif

const float *unet_logits(const Unet *m)
{
#ifdef SEG_HAVE_CUDA
    if (m->gpu && !m->logits_fresh) {                 /* a cache of device data: logically const */
        Unet *mm = (Unet *)m;
        if (!mm->logits && !(mm->logits = malloc(sizeof(float) * (size_t)m->max_batch * m->cfg.n_classes * m->H * m->W))) {
            seg_err(SEG_ENOMEM, "unet_logits: host buffer for %d x %d logit planes", m->max_batch, m->cfg.n_classes);
            return NULL;
        }
        if (gpu_net_logits(m->gpu, mm->logits) < 0) return NULL;
        mm->logits_fresh = 1;
    }
#endif
    return m->logits;
}

/* ---- forward -------------------------------------------------------------------------------- */
static NnAct act_of(const ConvL *c)
{
    return (NnAct){ .x = c->z, .ld = c->Co, .C = c->Co, .scale = c->scale, .shift = c->shift, .relu = 1 };
}

static void conv_bn_forward(Unet *m, ConvL *c, const NnAct *in, int n_in, int N, int H, int W, int train)
{
    const NnOut out = { .y = c->z, .ld = c->Co, .C = c->Co };
    if (train) {
        PROF(m, PR_CONV_F, nn_conv3x3_forward(m->team, &out, 1, in, n_in, c->wp, N, H, W, c->sum, c->sumsq));
        nn_bn_train_stats(c->Co, c->sum, c->sumsq, (long)N * H * W, c->gamma, c->beta, BN_EPS, BN_MOMENTUM,
                          c->mean, c->invstd, c->scale, c->shift, c->rm, c->rv, c->nbt);
    } else {
        PROF(m, PR_CONV_F, nn_conv3x3_forward(m->team, &out, 1, in, n_in, c->wp, N, H, W, NULL, NULL));
        nn_bn_eval_params(c->Co, c->gamma, c->beta, c->rm, c->rv, BN_EPS, c->scale, c->shift);
    }
}

static void add_job(NnPackJob *j, int *n, int kind, float *dst, const float *w, int Ci, int Co)
{
    if (dst) j[(*n)++] = (NnPackJob){ kind, dst, w, Ci, Co };
}

static void pack_forward(Unet *m)
{
    NnPackJob j[4 * UNET_MAX_LEVELS + 8];
    int n = 0;
    for (int l = 0; l < m->L; l++) {
        ConvL *cs[4] = { &m->enc[l].c1, &m->enc[l].c2, &m->dec[l].c1, &m->dec[l].c2 };
        for (int k = 0; k < 4; k++) add_job(j, &n, NN_PACK_CONV3X3, cs[k]->wp, cs[k]->w, cs[k]->Ci, cs[k]->Co);
        add_job(j, &n, NN_PACK_CONVT, m->up[l].wp, m->up[l].w, m->up[l].Ci, m->up[l].Co);
    }
    add_job(j, &n, NN_PACK_CONV3X3, m->bott.c1.wp, m->bott.c1.w, m->bott.c1.Ci, m->bott.c1.Co);
    add_job(j, &n, NN_PACK_CONV3X3, m->bott.c2.wp, m->bott.c2.w, m->bott.c2.Ci, m->bott.c2.Co);
    add_job(j, &n, NN_PACK_CONV1X1, m->head_wt, m->head_w, m->cfg.features[0], m->cfg.n_classes);
    nn_pack_many(m->team, j, n);
}

static void forward_cpu(Unet *m, const float *x, int N, int train);

int unet_forward(Unet *m, const float *x, int N, int train)
{
    if (N < 1 || N > m->max_batch)
        return seg_err(SEG_EARG, "unet_forward: batch %d (model holds 1..%d)", N, m->max_batch);
#ifdef SEG_HAVE_CUDA
    if (m->gpu) {
        if (m->dev_stale) TRY(unet_sync_device(m));
        m->logits_fresh = 0;
        TRY(gpu_net_forward(m->gpu, x, N, train));
    } else
#endif
        forward_cpu(m, x, N, train);
    m->last_N = N;
    m->last_train = train;
    m->have_loss = 0;
    return SEG_OK;
}

/* The CPU forward (unet_forward checked N). */
static void forward_cpu(Unet *m, const float *x, int N, int train)
{
    const int L = m->L, *f = m->cfg.features, Ci = m->cfg.in_ch;
    const long HW = (long)m->H * m->W;
    PROF(m, PR_PACK, pack_forward(m));
    if (Ci == 1) memcpy(m->xin, x, sizeof(float) * (size_t)N * HW);
    else
        for (int n = 0; n < N; n++)
            for (int c = 0; c < Ci; c++)
                for (long q = 0; q < HW; q++) m->xin[((size_t)n * HW + q) * Ci + c] = x[((size_t)n * Ci + c) * HW + q];
    NnAct in = { .x = m->xin, .ld = Ci, .C = Ci };
    for (int l = 0; l < L; l++) {
        const int H = m->H >> l, W = m->W >> l;
        NnAct lin = l == 0 ? in : (NnAct){ .x = m->pool[l], .ld = f[l - 1], .C = f[l - 1] };
        conv_bn_forward(m, &m->enc[l].c1, &lin, 1, N, H, W, train);
        NnAct a1 = act_of(&m->enc[l].c1);
        conv_bn_forward(m, &m->enc[l].c2, &a1, 1, N, H, W, train);
        NnAct a2 = act_of(&m->enc[l].c2);
        PROF(m, PR_POOL_F, nn_maxpool_forward(m->team, m->pool[l + 1], f[l], train ? m->pidx[l + 1] : NULL, &a2, N, H, W));
    }
    {
        const int H = m->H >> L, W = m->W >> L;
        NnAct bin = { .x = m->pool[L], .ld = f[L - 1], .C = f[L - 1] };
        conv_bn_forward(m, &m->bott.c1, &bin, 1, N, H, W, train);
        NnAct a1 = act_of(&m->bott.c1);
        conv_bn_forward(m, &m->bott.c2, &a1, 1, N, H, W, train);
    }
    NnAct prev = act_of(&m->bott.c2);
    for (int l = L - 1; l >= 0; l--) {
        const int H = m->H >> l, W = m->W >> l;
        UpL *u = &m->up[l];
        const NnOut uo = { .y = u->u, .ld = u->Co, .C = u->Co };
        PROF(m, PR_UP_F, nn_convt_forward(m->team, &uo, &prev, u->wp, u->b, N, H / 2, W / 2));
        NnAct cat[2] = { act_of(&m->enc[l].c2), { .x = u->u, .ld = u->Co, .C = u->Co } };
        conv_bn_forward(m, &m->dec[l].c1, cat, 2, N, H, W, train);
        NnAct a1 = act_of(&m->dec[l].c1);
        conv_bn_forward(m, &m->dec[l].c2, &a1, 1, N, H, W, train);
        prev = act_of(&m->dec[l].c2);
    }
    PROF(m, PR_HEAD_F, nn_conv1x1_forward(m->team, m->logits, &prev, m->head_wt, m->head_b, m->cfg.n_classes, N, (int)HW));
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
#ifdef SEG_HAVE_CUDA
    if (m->gpu) TRY(gpu_net_loss(m->gpu, bits, presence, labelled, N, dice, m->planes));
    else
#endif
    PROF(m, PR_LOSS, {
        memcpy(m->bits, bits, (size_t)N * C * (size_t)(HW / 8));
        memcpy(m->pres, presence, (size_t)N * ((C + 7) / 8));
        m->has_lab = labelled != NULL;
        if (labelled) memcpy(m->lab, labelled, (size_t)N * ((C + 7) / 8));
        nn_loss_planes(m->team, m->logits, m->bits, m->pres, m->has_lab ? m->lab : NULL, N, C, (int)HW, dice,
                       m->planes);
    });
    /* the BCE mean is over labelled elements only; none labelled: 0 with zero gradient */
    m->n_lab = nn_labelled_planes(labelled, N, C);
    m->loss_bce = m->n_lab ? nn_loss_bce_total(m->planes, N, C) / ((double)m->n_lab * (double)HW) : 0.0;
    if (dice) m->loss_dice = nn_soft_dice(m->planes, N, C, m->coef_a, m->coef_b);
#ifdef SEG_HAVE_CUDA
    if (m->gpu)
        TRY(gpu_net_set_loss_grad(m->gpu, m->loss_kind == UNET_LOSS_DICE ? 0.f : 1.f, dice ? m->coef_a : NULL,
                                  dice ? m->coef_b : NULL));
#endif
    m->have_loss = 1;
    const double l = m->loss_kind == UNET_LOSS_BCE ? m->loss_bce
                   : m->loss_kind == UNET_LOSS_DICE ? m->loss_dice : m->loss_bce + m->loss_dice;
    *loss = (float)l;
    return SEG_OK;
}

typedef struct { Unet *m; float scale; int dice; } GradCtx;

/* dL/dlogits for sample n, pixels [q0, q0+nq): scale*(sigmoid(z) - t) (scale = 1/(N*C*H*W),
 * or 0 for Dice alone) + the Dice part (a[c]*t + b[c])*p*(1-p) */
static void bce_grad_tile(void *vctx, int n, int q0, int nq, float *d, int ldd)
{
    const GradCtx *g = vctx;
    const Unet *m = g->m;
    const int C = m->cfg.n_classes, CB = (C + 7) / 8;
    const long HW = (long)m->H * m->W;
    for (int c = 0; c < C; c++) {
        const size_t pl = (size_t)n * C + c;
        if (m->has_lab && !((m->lab[(size_t)n * CB + (c >> 3)] >> (c & 7)) & 1)) {
            memset(d + (size_t)c * ldd, 0, sizeof(float) * (size_t)nq);      /* unknown plane: no gradient */
            continue;
        }
        const int present = (m->pres[(size_t)n * CB + (c >> 3)] >> (c & 7)) & 1;
        nn_bce_grad_row(m->team, d + (size_t)c * ldd, m->logits + pl * HW + q0, m->bits + pl * (size_t)(HW / 8),
                        present, q0, nq, g->scale, g->dice ? m->coef_a[c] : 0.f, g->dice ? m->coef_b[c] : 0.f);
    }
}

/* ---- backward ------------------------------------------------------------------------------- */
static void pack_backward(Unet *m)
{
    NnPackJob j[4 * UNET_MAX_LEVELS + 8];
    int n = 0;
    for (int l = 0; l < m->L; l++) {
        ConvL *cs[4] = { &m->enc[l].c1, &m->enc[l].c2, &m->dec[l].c1, &m->dec[l].c2 };
        for (int k = 0; k < 4; k++) add_job(j, &n, NN_PACK_CONV3X3_BWD, cs[k]->wpb, cs[k]->w, cs[k]->Ci, cs[k]->Co);
        add_job(j, &n, NN_PACK_CONVT_BWD, m->up[l].wpb, m->up[l].w, m->up[l].Ci, m->up[l].Co);
    }
    add_job(j, &n, NN_PACK_CONV3X3_BWD, m->bott.c1.wpb, m->bott.c1.w, m->bott.c1.Ci, m->bott.c1.Co);
    add_job(j, &n, NN_PACK_CONV3X3_BWD, m->bott.c2.wpb, m->bott.c2.w, m->bott.c2.Ci, m->bott.c2.Co);
    nn_pack_many(m->team, j, n);
}

/* g: dL/da of conv c's BN+ReLU output on entry; on return dL/dz. Then dW and, if dx, dx. */
static void conv_bn_backward(Unet *m, ConvL *c, float *g, const NnAct *in, int n_in,
                             const NnOut *dx, int n_dx, int N, int H, int W)
{
    const long P = (long)N * H * W;
    PROF(m, PR_BN_B, nn_bn_backward(m->team, g, c->Co, c->z, c->Co, c->Co, P, c->mean, c->invstd, c->gamma,
                                    c->beta, 1, c->ggamma, c->gbeta));
    PROF(m, PR_CONV_BW, nn_conv3x3_backward_weights(m->team, c->gw, in, n_in, g, c->Co, c->Co, N, H, W));
    if (dx) PROF(m, PR_CONV_BD, nn_conv3x3_backward_data(m->team, dx, n_dx, g, c->Co, c->Co, c->wpb, N, H, W));
}

int unet_backward(Unet *m)
{
    if (!m->last_N || !m->last_train || !m->have_loss)
        return seg_err(SEG_EARG, "unet_backward: needs forward(train=1) then unet_loss first");
#ifdef SEG_HAVE_CUDA
    if (m->gpu) return gpu_net_backward(m->gpu);
#endif
    const int N = m->last_N, L = m->L, *f = m->cfg.features, C = m->cfg.n_classes;
    const long HW = (long)m->H * m->W;
    memset(m->grads, 0, sizeof(float) * m->n_params);
    PROF(m, PR_PACK, pack_backward(m));
    float *cur = m->ga, *oth = m->gb;
    {
        GradCtx gc = { m, m->loss_kind == UNET_LOSS_DICE || !m->n_lab ? 0.f : (float)(1.0 / ((double)m->n_lab * (double)HW)),
                       m->loss_kind != UNET_LOSS_BCE };
        NnAct a = act_of(&m->dec[0].c2);
        const NnOut dx = { .y = cur, .ld = f[0], .C = f[0] };
        PROF(m, PR_HEAD_B, nn_conv1x1_backward(m->team, &dx, m->head_gw, m->head_gb, bce_grad_tile, &gc, &a,
                                               m->head_w, C, N, (int)HW));
    }
    for (int l = 0; l < L; l++) {                              /* decoder, top level first */
        const int H = m->H >> l, W = m->W >> l;
        Block *d = &m->dec[l];
        UpL *u = &m->up[l];
        NnAct a1 = act_of(&d->c1);
        const NnOut o1 = { .y = oth, .ld = f[l], .C = f[l] };
        conv_bn_backward(m, &d->c2, cur, &a1, 1, &o1, 1, N, H, W);
        NnAct cat[2] = { act_of(&m->enc[l].c2), { .x = u->u, .ld = u->Co, .C = u->Co } };
        const NnOut o2[2] = { { .y = m->dskip[l], .ld = f[l], .C = f[l] }, { .y = cur, .ld = f[l], .C = f[l] } };
        conv_bn_backward(m, &d->c1, oth, cat, 2, o2, 2, N, H, W);
        NnAct prev = l == L - 1 ? act_of(&m->bott.c2) : act_of(&m->dec[l + 1].c2);
        const NnOut o3 = { .y = oth, .ld = u->Ci, .C = u->Ci };
        PROF(m, PR_UP_B, nn_convt_backward(m->team, &o3, u->gw, u->gb, cur, u->Co, u->Co, &prev, u->wpb, N, H / 2, W / 2));
        float *t = cur; cur = oth; oth = t;
    }
    {
        const int H = m->H >> L, W = m->W >> L;
        NnAct a1 = act_of(&m->bott.c1);
        const NnOut o1 = { .y = oth, .ld = m->bott.c1.Co, .C = m->bott.c1.Co };
        conv_bn_backward(m, &m->bott.c2, cur, &a1, 1, &o1, 1, N, H, W);
        NnAct pin = { .x = m->pool[L], .ld = f[L - 1], .C = f[L - 1] };
        const NnOut o2 = { .y = cur, .ld = f[L - 1], .C = f[L - 1] };
        conv_bn_backward(m, &m->bott.c1, oth, &pin, 1, &o2, 1, N, H, W);
        PROF(m, PR_POOL_B, nn_maxpool_backward(m->team, m->dskip[L - 1], f[L - 1], cur, f[L - 1], m->pidx[L],
                                               f[L - 1], N, m->H >> (L - 1), m->W >> (L - 1)));
    }
    for (int l = L - 1; l >= 0; l--) {                         /* encoder, deepest first */
        const int H = m->H >> l, W = m->W >> l;
        Block *e = &m->enc[l];
        NnAct a1 = act_of(&e->c1);
        const NnOut o1 = { .y = m->ga, .ld = f[l], .C = f[l] };
        conv_bn_backward(m, &e->c2, m->dskip[l], &a1, 1, &o1, 1, N, H, W);
        if (l == 0) {
            NnAct xin = { .x = m->xin, .ld = m->cfg.in_ch, .C = m->cfg.in_ch };
            conv_bn_backward(m, &e->c1, m->ga, &xin, 1, NULL, 0, N, H, W);
        } else {
            NnAct pin = { .x = m->pool[l], .ld = f[l - 1], .C = f[l - 1] };
            const NnOut o2 = { .y = m->gb, .ld = f[l - 1], .C = f[l - 1] };
            conv_bn_backward(m, &e->c1, m->ga, &pin, 1, &o2, 1, N, H, W);
            PROF(m, PR_POOL_B, nn_maxpool_backward(m->team, m->dskip[l - 1], f[l - 1], m->gb, f[l - 1], m->pidx[l],
                                                   f[l - 1], N, m->H >> (l - 1), m->W >> (l - 1)));
        }
    }
    return SEG_OK;
}

float unet_clip_grad(Unet *m, float max_norm)
{
    double ss;
#ifdef SEG_HAVE_CUDA
    if (m->gpu && (m->gpu_rc = gpu_net_grad_sumsq(m->gpu, &ss)) < 0) return NAN;
    if (!m->gpu)
#endif
        ss = nn_sumsq(m->team, m->grads, m->n_params);
    const double norm = sqrt(ss);
    if (max_norm > 0.f) {
        const double coef = (double)max_norm / (norm + 1e-6);      /* torch.nn.utils.clip_grad_norm_ */
        if (coef < 1.0) {
#ifdef SEG_HAVE_CUDA
            if (m->gpu && (m->gpu_rc = gpu_net_scale_grads(m->gpu, (float)coef)) < 0) return NAN;
            if (!m->gpu)
#endif
                nn_scale(m->team, m->grads, m->n_params, (float)coef);
        }
    }
    return (float)norm;
}

int unet_adam_step(Unet *m, float lr, float beta1, float beta2, float eps)
{
#ifdef SEG_HAVE_CUDA
    if (m->gpu) {
        int skipped = 0;
        if (m->gpu_rc < 0) { const int rc = m->gpu_rc; m->gpu_rc = 0; return rc; }
        TRY(gpu_net_adam(m->gpu, lr, beta1, beta2, eps, m->adam_t + 1, &skipped));
        if (!skipped) m->adam_t++;
        return skipped;
    }
#endif
    m->adam_t++;
    PROF(m, PR_ADAM, nn_adam(m->team, m->params, m->grads, m->adam_m, m->adam_v, m->n_params, lr, beta1, beta2,
                             eps, m->adam_t));
    return SEG_OK;
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
#ifdef SEG_HAVE_CUDA
    if (m->gpu) return gpu_net_dice(m->gpu, bits, presence, labelled, N, tp, fp, fn);
#endif
    nn_dice_counts(m->team, m->logits, bits, presence, labelled, N, m->cfg.n_classes, m->H * m->W, tp, fp, fn);
    return SEG_OK;
}

double unet_flops_per_sample(const Unet *m)
{
    const int L = m->L, *f = m->cfg.features;
    double fl = 0;
    for (int l = 0; l <= L; l++) {
        const double px = (double)(m->H >> l) * (double)(m->W >> l);
        const ConvL *cs[4];
        int n = 0;
        if (l < L) { cs[n++] = &m->enc[l].c1; cs[n++] = &m->enc[l].c2; cs[n++] = &m->dec[l].c1; cs[n++] = &m->dec[l].c2; }
        else { cs[n++] = &m->bott.c1; cs[n++] = &m->bott.c2; }
        for (int i = 0; i < n; i++) fl += 2.0 * px * cs[i]->Co * cs[i]->Ci * 9.0;
        if (l < L) fl += 2.0 * (px / 4.0) * m->up[l].Ci * m->up[l].Co * 4.0;
    }
    fl += 2.0 * (double)m->H * m->W * f[0] * m->cfg.n_classes;
    return fl;
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
    for (int i = 0; i < PR_N && n < max; i++, n++) {
        names[n] = prof_names[i];
        seconds[n] = m->prof[i];
    }
    return n;
}
