/* common/unet_cpu.c : the CPU backend of the U-Net (common/nn kernels on a thread team;
 * unet_backend.h). Its state is one CpuLayer per entry of the layer table.
 *
 * Memory plan (all in the model's arena, touched at create, reused by every step). Activations
 * are NHWC. Each conv keeps only its raw output z; BatchNorm+ReLU is applied lazily by every
 * reader (nn.h: NnAct), and backward rebuilds the ReLU mask and x_hat from z. Kept for backward:
 * per level the encoder's z1, z2, the pooled input and argmax bytes, the decoder's upsampled u,
 * z1, z2; the logits. The skip concatenation is never materialised (the decoder conv reads two
 * views); the CAT layer holds the skip's gradient (written by the decoder, completed by the pool
 * backward, consumed by the encoder). Gradients otherwise use two ping-pong buffers of the
 * largest activation. The logits' gradient is never stored: the head backward recomputes it
 * tile by tile from the logits and a copy of the packed targets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "err.h"
#include "nn.h"
#include "unet_backend.h"
#include "maskpack.h"
#include "util.h"

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f

typedef struct CpuLayer {
    /* views into the state dict (CONV3: w, gamma, beta, BN buffers; UP and HEAD: w, b) */
    float *w, *gw, *b, *gb, *beta, *gbeta, *rm, *rv, *nbt;
    float *wp, *wpb;                 /* packed for forward / input gradient (HEAD: wp only) */
    float *mean, *invstd, *scale, *shift;
    double *sum, *sumsq;
    float *y;                        /* CONV3: raw output z; UP: u; POOL: pooled output (P_out, cin) */
    uint8_t *idx;                    /* POOL: argmax bytes */
    float *dskip;                    /* CAT: gradient of the skip input */
} CpuLayer;

typedef struct CpuNet {
    NnTeam *team;
    CpuLayer lay[UNET_LAYERS_MAX];
    float *xin;                      /* (P_0, in_ch) */
    float *logits;                   /* (N, C, H, W) */
    float *ga, *gb;
    uint8_t *bits, *pres, *lab;      /* the loss's targets; lab when has_lab */
    int has_lab;
} CpuNet;

#define PROF(m, slot, stmt) do { double t0_ = (m)->prof_on ? util_now_s() : 0; stmt; \
    if ((m)->prof_on) (m)->prof[slot] += util_now_s() - t0_; } while (0)

#define CPU(m) ((CpuNet *)(m)->bs)
#define LAY(m, i) (&CPU(m)->lay[i])

/* pixels of the batch at a level */
static long pixels(const Unet *m, int level) { return (long)m->max_batch * (m->H >> level) * (m->W >> level); }

/* ---- create ------------------------------------------------------------------------------- */
static int cpu_create(Unet *m)
{
    m->bs = calloc(1, sizeof(CpuNet));
    return m->bs ? SEG_OK : seg_err(SEG_ENOMEM, "unet_create: CPU model");
}

static void cpu_carve(Unet *m, UnetArena *a)
{
    CpuNet *c = CPU(m);
    const UnetLayers *t = m->net;
    const int C = m->cfg.n_classes, NB = m->max_batch;
    size_t g = 0;                                    /* the largest gradient of any activation */
    for (int i = 0; i < t->n; i++) {
        const UnetLayer *l = &t->layer[i];
        CpuLayer *q = &c->lay[i];
        const long P = pixels(m, l->level);
        switch (l->kind) {
        case UNET_CONV3:
            q->wp = UNET_TAKEF(a, nn_pack_floats(9 * l->cin, l->cout));
            q->wpb = l->first ? NULL : UNET_TAKEF(a, nn_pack_floats(9 * l->cout, l->cin));
            q->mean = UNET_TAKEF(a, l->cout);
            q->invstd = UNET_TAKEF(a, l->cout);
            q->scale = UNET_TAKEF(a, l->cout);
            q->shift = UNET_TAKEF(a, l->cout);
            q->sum = unet_arena_take(a, sizeof(double) * (size_t)l->cout);
            q->sumsq = unet_arena_take(a, sizeof(double) * (size_t)l->cout);
            q->y = UNET_TAKEF(a, (size_t)P * l->cout);
            if ((size_t)P * l->cout > g) g = (size_t)P * l->cout;
            break;
        case UNET_POOL: {
            const long Po = pixels(m, l->level + 1);
            q->y = UNET_TAKEF(a, (size_t)Po * l->cin);
            q->idx = unet_arena_take(a, (size_t)Po * l->cin);
            if ((size_t)Po * l->cin > g) g = (size_t)Po * l->cin;
            break;
        }
        case UNET_UP:
            q->wp = UNET_TAKEF(a, nn_pack_floats(l->cin, 4 * l->cout));
            q->wpb = UNET_TAKEF(a, nn_pack_floats(4 * l->cout, l->cin));
            q->y = UNET_TAKEF(a, (size_t)P * l->cout);
            break;
        case UNET_CAT:
            q->dskip = UNET_TAKEF(a, (size_t)P * l->cin);
            break;
        case UNET_HEAD:
            q->wp = UNET_TAKEF(a, nn_conv1x1_pack_floats(l->cin, l->cout));
            break;
        }
    }
    const long P0 = pixels(m, 0);
    c->xin = UNET_TAKEF(a, (size_t)P0 * m->cfg.in_ch);
    c->logits = UNET_TAKEF(a, (size_t)P0 * C);
    c->bits = unet_arena_take(a, (size_t)NB * C * maskpack_plane_bytes((size_t)m->H * m->W));
    c->pres = unet_arena_take(a, (size_t)NB * maskpack_bitmap_bytes(C));
    c->lab = unet_arena_take(a, (size_t)NB * maskpack_bitmap_bytes(C));
    c->ga = UNET_TAKEF(a, g);
    c->gb = UNET_TAKEF(a, g);
}

/* Accumulator floats per thread: the largest any layer's backward-weights needs. */
static size_t acc_need(const UnetLayers *t)
{
    size_t need = nn_dice_acc_floats(t->cfg.n_classes);
    for (int i = 0; i < t->n; i++) {
        const UnetLayer *l = &t->layer[i];
        size_t a = 0, b = 0;
        if (l->kind == UNET_CONV3) { a = nn_conv3x3_acc_floats(l->cin, l->cout); b = nn_bn_acc_floats(l->cout); }
        else if (l->kind == UNET_UP) a = nn_convt_acc_floats(l->cin, l->cout);
        else if (l->kind == UNET_HEAD) a = nn_conv1x1_acc_floats(l->cin, l->cout);
        if (a > need) need = a;
        if (b > need) need = b;
    }
    return need;
}

static int cpu_start(Unet *m, int threads)
{
    CpuNet *c = CPU(m);
    const UnetLayers *t = m->net;
    int cmax = 0;                                    /* widest activation a conv reads or writes */
    for (int i = 0; i < t->n; i++) {
        const UnetLayer *l = &t->layer[i];
        CpuLayer *q = &c->lay[i];
        if ((l->kind == UNET_CONV3 || l->kind == UNET_CAT) && l->cout > cmax) cmax = l->cout;
        if (l->kind == UNET_CONV3) {
            q->beta = m->params + l->beta;
            q->gbeta = m->grads + l->beta;
            q->rm = m->bufs + l->rm;
            q->rv = m->bufs + l->rv;
            q->nbt = m->bufs + l->nbt;
        }
        if (l->kind == UNET_CONV3 || l->kind == UNET_UP || l->kind == UNET_HEAD) {
            q->w = m->params + l->w;
            q->gw = m->grads + l->w;
            q->b = m->params + l->b;                     /* CONV3: BN gamma */
            q->gb = m->grads + l->b;
        }
    }
    size_t scratch = NN_SCRATCH_DEFAULT;
    if (nn_min_scratch_floats(cmax) > scratch) scratch = nn_min_scratch_floats(cmax);
    return nn_team_create(threads, scratch, acc_need(t), &c->team);
}

static void cpu_destroy(Unet *m)
{
    if (!m->bs) return;
    nn_team_free(CPU(m)->team);
    free(m->bs);
    m->bs = NULL;
}

/* ---- forward -------------------------------------------------------------------------------- */
static NnAct act_of(const UnetLayer *l, const CpuLayer *q)
{
    return (NnAct){ .x = q->y, .ld = l->cout, .C = l->cout, .scale = q->scale, .shift = q->shift, .relu = 1 };
}
#define ACT(m, i) act_of(&(m)->net->layer[i], LAY(m, i))

static void conv_bn_forward(Unet *m, int i, const NnAct *in, int n_in, int N, int H, int W, int train)
{
    const UnetLayer *l = &m->net->layer[i];
    CpuLayer *c = LAY(m, i);
    NnTeam *team = CPU(m)->team;
    const NnOut out = { .y = c->y, .ld = l->cout, .C = l->cout };
    if (train) {
        PROF(m, UNET_PR_CONV_F, nn_conv3x3_forward(team, &out, 1, in, n_in, c->wp, N, H, W, c->sum, c->sumsq));
        nn_bn_train_stats(l->cout, c->sum, c->sumsq, (long)N * H * W, c->b, c->beta, BN_EPS, BN_MOMENTUM, c->mean,
                          c->invstd, c->scale, c->shift, c->rm, c->rv, c->nbt);
    } else {
        PROF(m, UNET_PR_CONV_F, nn_conv3x3_forward(team, &out, 1, in, n_in, c->wp, N, H, W, NULL, NULL));
        nn_bn_eval_params(l->cout, c->b, c->beta, c->rm, c->rv, BN_EPS, c->scale, c->shift);
    }
}

/* Pack the weights for the forward (bwd = 0) or the input gradients (bwd = 1). */
static void pack(Unet *m, int bwd)
{
    const UnetLayers *t = m->net;
    NnPackJob j[UNET_LAYERS_MAX];
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        const UnetLayer *l = &t->layer[i];
        const CpuLayer *q = LAY(m, i);
        int kind = -1;
        float *dst = bwd ? q->wpb : q->wp;
        if (l->kind == UNET_CONV3) kind = bwd ? NN_PACK_CONV3X3_BWD : NN_PACK_CONV3X3;
        else if (l->kind == UNET_UP) kind = bwd ? NN_PACK_CONVT_BWD : NN_PACK_CONVT;
        else if (l->kind == UNET_HEAD && !bwd) kind = NN_PACK_CONV1X1;
        if (kind >= 0 && dst) j[n++] = (NnPackJob){ kind, dst, q->w, l->cin, l->cout };
    }
    nn_pack_many(CPU(m)->team, j, n);
}

static int cpu_forward(Unet *m, const float *x, int N, int train)
{
    CpuNet *c = CPU(m);
    const UnetLayers *t = m->net;
    const int L = m->L, *f = m->cfg.features, Ci = m->cfg.in_ch;
    const long HW = (long)m->H * m->W;
    PROF(m, UNET_PR_PACK, pack(m, 0));
    if (Ci == 1) memcpy(c->xin, x, sizeof(float) * (size_t)N * HW);
    else
        for (int n = 0; n < N; n++)
            for (int k = 0; k < Ci; k++)
                for (long q = 0; q < HW; q++) c->xin[((size_t)n * HW + q) * Ci + k] = x[((size_t)n * Ci + k) * HW + q];
    NnAct in = { .x = c->xin, .ld = Ci, .C = Ci };
    for (int l = 0; l < L; l++) {
        const int H = m->H >> l, W = m->W >> l;
        CpuLayer *pool = LAY(m, t->pool[l]);
        NnAct lin = l == 0 ? in : (NnAct){ .x = LAY(m, t->pool[l - 1])->y, .ld = f[l - 1], .C = f[l - 1] };
        conv_bn_forward(m, t->enc[l][0], &lin, 1, N, H, W, train);
        NnAct a1 = ACT(m, t->enc[l][0]);
        conv_bn_forward(m, t->enc[l][1], &a1, 1, N, H, W, train);
        NnAct a2 = ACT(m, t->enc[l][1]);
        PROF(m, UNET_PR_POOL_F, nn_maxpool_forward(c->team, pool->y, f[l], train ? pool->idx : NULL, &a2, N, H, W));
    }
    {
        const int H = m->H >> L, W = m->W >> L;
        NnAct bin = { .x = LAY(m, t->pool[L - 1])->y, .ld = f[L - 1], .C = f[L - 1] };
        conv_bn_forward(m, t->bott[0], &bin, 1, N, H, W, train);
        NnAct a1 = ACT(m, t->bott[0]);
        conv_bn_forward(m, t->bott[1], &a1, 1, N, H, W, train);
    }
    NnAct prev = ACT(m, t->bott[1]);
    for (int l = L - 1; l >= 0; l--) {
        const int H = m->H >> l, W = m->W >> l;
        const UnetLayer *ul = &t->layer[t->up[l]];
        CpuLayer *u = LAY(m, t->up[l]);
        const NnOut uo = { .y = u->y, .ld = ul->cout, .C = ul->cout };
        PROF(m, UNET_PR_UP_F, nn_convt_forward(c->team, &uo, &prev, u->wp, u->b, N, H / 2, W / 2));
        NnAct cat[2] = { ACT(m, t->enc[l][1]), { .x = u->y, .ld = ul->cout, .C = ul->cout } };
        conv_bn_forward(m, t->dec[l][0], cat, 2, N, H, W, train);
        NnAct a1 = ACT(m, t->dec[l][0]);
        conv_bn_forward(m, t->dec[l][1], &a1, 1, N, H, W, train);
        prev = ACT(m, t->dec[l][1]);
    }
    const CpuLayer *h = LAY(m, t->head);
    PROF(m, UNET_PR_HEAD_F, nn_conv1x1_forward(c->team, c->logits, &prev, h->wp, h->b, m->cfg.n_classes, N, (int)HW));
    return SEG_OK;
}

static const float *cpu_logits(const Unet *m) { return CPU(m)->logits; }

/* ---- loss ----------------------------------------------------------------------------------- */
static int cpu_loss(Unet *m, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N, int dice)
{
    CpuNet *c = CPU(m);
    const int C = m->cfg.n_classes;
    const long HW = (long)m->H * m->W;
    PROF(m, UNET_PR_LOSS, {
        memcpy(c->bits, bits, (size_t)N * C * maskpack_plane_bytes((size_t)HW));
        memcpy(c->pres, presence, (size_t)N * maskpack_bitmap_bytes(C));
        c->has_lab = labelled != NULL;
        if (labelled) memcpy(c->lab, labelled, (size_t)N * maskpack_bitmap_bytes(C));
        nn_loss_planes(c->team, c->logits, c->bits, c->pres, c->has_lab ? c->lab : NULL, N, C, (int)HW, dice,
                       m->planes);
    });
    return SEG_OK;
}

static int cpu_loss_grad(Unet *m) { return SEG_OK; }     /* backward reads the coefficients from m */

typedef struct { Unet *m; float scale; int dice; } GradCtx;

/* dL/dlogits for sample n, pixels [q0, q0+nq): scale*(sigmoid(z) - t) (scale = 1/(N*C*H*W),
 * or 0 for Dice alone) + the Dice part (a[c]*t + b[c])*p*(1-p) */
static void bce_grad_tile(void *vctx, int n, int q0, int nq, float *d, int ldd)
{
    const GradCtx *g = vctx;
    const Unet *m = g->m;
    const CpuNet *cn = CPU(m);
    const int C = m->cfg.n_classes;
    const long HW = (long)m->H * m->W;
    for (int c = 0; c < C; c++) {
        const size_t pl = (size_t)n * C + c;
        if (cn->has_lab && !maskpack_get(maskpack_cbitmap(cn->lab, n, C), (size_t)c)) {
            memset(d + (size_t)c * ldd, 0, sizeof(float) * (size_t)nq);      /* unknown plane: no gradient */
            continue;
        }
        const int present = maskpack_get(maskpack_cbitmap(cn->pres, n, C), (size_t)c);
        nn_bce_grad_row(cn->team, d + (size_t)c * ldd, cn->logits + pl * HW + q0, cn->bits + pl * maskpack_plane_bytes((size_t)HW),
                        present, q0, nq, g->scale, g->dice ? m->coef_a[c] : 0.f, g->dice ? m->coef_b[c] : 0.f);
    }
}

/* ---- backward ------------------------------------------------------------------------------- */
/* g: dL/da of conv i's BN+ReLU output on entry; on return dL/dz. Then dW and, if dx, dx. */
static void conv_bn_backward(Unet *m, int i, float *g, const NnAct *in, int n_in, const NnOut *dx, int n_dx, int N,
                             int H, int W)
{
    const UnetLayer *l = &m->net->layer[i];
    CpuLayer *c = LAY(m, i);
    NnTeam *team = CPU(m)->team;
    const long P = (long)N * H * W;
    const int Co = l->cout;
    PROF(m, UNET_PR_BN_B, nn_bn_backward(team, g, Co, c->y, Co, Co, P, c->mean, c->invstd, c->b, c->beta, 1, c->gb,
                                         c->gbeta));
    PROF(m, UNET_PR_CONV_BW, nn_conv3x3_backward_weights(team, c->gw, in, n_in, g, Co, Co, N, H, W));
    if (dx) PROF(m, UNET_PR_CONV_BD, nn_conv3x3_backward_data(team, dx, n_dx, g, Co, Co, c->wpb, N, H, W));
}

static int cpu_backward(Unet *m)
{
    CpuNet *c = CPU(m);
    const UnetLayers *t = m->net;
    const int N = m->last_N, L = m->L, *f = m->cfg.features, C = m->cfg.n_classes;
    const long HW = (long)m->H * m->W;
    memset(m->grads, 0, sizeof(float) * m->n_params);
    PROF(m, UNET_PR_PACK, pack(m, 1));
    float *cur = c->ga, *oth = c->gb;
    {
        GradCtx gc = { m, m->loss_kind == UNET_LOSS_DICE || !m->n_lab ? 0.f : (float)(1.0 / ((double)m->n_lab * (double)HW)),
                       m->loss_kind != UNET_LOSS_BCE };
        NnAct a = ACT(m, t->dec[0][1]);
        const NnOut dx = { .y = cur, .ld = f[0], .C = f[0] };
        CpuLayer *h = LAY(m, t->head);
        PROF(m, UNET_PR_HEAD_B, nn_conv1x1_backward(c->team, &dx, h->gw, h->gb, bce_grad_tile, &gc, &a, h->w, C, N, (int)HW));
    }
    for (int l = 0; l < L; l++) {                              /* decoder, top level first */
        const int H = m->H >> l, W = m->W >> l;
        const UnetLayer *ul = &t->layer[t->up[l]];
        CpuLayer *u = LAY(m, t->up[l]);
        float *dskip = LAY(m, t->cat[l])->dskip;
        NnAct a1 = ACT(m, t->dec[l][0]);
        const NnOut o1 = { .y = oth, .ld = f[l], .C = f[l] };
        conv_bn_backward(m, t->dec[l][1], cur, &a1, 1, &o1, 1, N, H, W);
        NnAct cat[2] = { ACT(m, t->enc[l][1]), { .x = u->y, .ld = ul->cout, .C = ul->cout } };
        const NnOut o2[2] = { { .y = dskip, .ld = f[l], .C = f[l] }, { .y = cur, .ld = f[l], .C = f[l] } };
        conv_bn_backward(m, t->dec[l][0], oth, cat, 2, o2, 2, N, H, W);
        NnAct prev = l == L - 1 ? ACT(m, t->bott[1]) : ACT(m, t->dec[l + 1][1]);
        const NnOut o3 = { .y = oth, .ld = ul->cin, .C = ul->cin };
        PROF(m, UNET_PR_UP_B, nn_convt_backward(c->team, &o3, u->gw, u->gb, cur, ul->cout, ul->cout, &prev, u->wpb, N,
                                                H / 2, W / 2));
        float *tmp = cur; cur = oth; oth = tmp;
    }
    {
        const int H = m->H >> L, W = m->W >> L, Cb = t->layer[t->bott[0]].cout;
        const CpuLayer *pool = LAY(m, t->pool[L - 1]);
        NnAct a1 = ACT(m, t->bott[0]);
        const NnOut o1 = { .y = oth, .ld = Cb, .C = Cb };
        conv_bn_backward(m, t->bott[1], cur, &a1, 1, &o1, 1, N, H, W);
        NnAct pin = { .x = pool->y, .ld = f[L - 1], .C = f[L - 1] };
        const NnOut o2 = { .y = cur, .ld = f[L - 1], .C = f[L - 1] };
        conv_bn_backward(m, t->bott[0], oth, &pin, 1, &o2, 1, N, H, W);
        PROF(m, UNET_PR_POOL_B, nn_maxpool_backward(c->team, LAY(m, t->cat[L - 1])->dskip, f[L - 1], cur, f[L - 1],
                                                    pool->idx, f[L - 1], N, m->H >> (L - 1), m->W >> (L - 1)));
    }
    for (int l = L - 1; l >= 0; l--) {                         /* encoder, deepest first */
        const int H = m->H >> l, W = m->W >> l;
        NnAct a1 = ACT(m, t->enc[l][0]);
        const NnOut o1 = { .y = c->ga, .ld = f[l], .C = f[l] };
        conv_bn_backward(m, t->enc[l][1], LAY(m, t->cat[l])->dskip, &a1, 1, &o1, 1, N, H, W);
        if (l == 0) {
            NnAct xin = { .x = c->xin, .ld = m->cfg.in_ch, .C = m->cfg.in_ch };
            conv_bn_backward(m, t->enc[l][0], c->ga, &xin, 1, NULL, 0, N, H, W);
        } else {
            const CpuLayer *pool = LAY(m, t->pool[l - 1]);
            NnAct pin = { .x = pool->y, .ld = f[l - 1], .C = f[l - 1] };
            const NnOut o2 = { .y = c->gb, .ld = f[l - 1], .C = f[l - 1] };
            conv_bn_backward(m, t->enc[l][0], c->ga, &pin, 1, &o2, 1, N, H, W);
            PROF(m, UNET_PR_POOL_B, nn_maxpool_backward(c->team, LAY(m, t->cat[l - 1])->dskip, f[l - 1], c->gb, f[l - 1],
                                                        pool->idx, f[l - 1], N, m->H >> (l - 1), m->W >> (l - 1)));
        }
    }
    return SEG_OK;
}

/* ---- optimizer, metrics --------------------------------------------------------------------- */
static int cpu_grad_sumsq(Unet *m, double *ss)
{
    *ss = nn_sumsq(CPU(m)->team, m->grads, m->n_params);
    return SEG_OK;
}

static int cpu_scale_grads(Unet *m, float s)
{
    nn_scale(CPU(m)->team, m->grads, m->n_params, s);
    return SEG_OK;
}

static int cpu_adam(Unet *m, float lr, float beta1, float beta2, float eps, int64_t t, int *skipped)
{
    *skipped = 0;
    PROF(m, UNET_PR_ADAM, nn_adam(CPU(m)->team, m->params, m->grads, m->adam_m, m->adam_v, m->n_params, lr, beta1,
                                  beta2, eps, t));
    return SEG_OK;
}

static int cpu_dice(const Unet *m, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N,
                    int64_t *tp, int64_t *fp, int64_t *fn)
{
    nn_dice_counts(CPU(m)->team, CPU(m)->logits, bits, presence, labelled, N, m->cfg.n_classes, m->H * m->W, tp, fp, fn);
    return SEG_OK;
}

/* ---- the host is the device ----------------------------------------------------------------- */
static int    cpu_probe(int index, char *desc, size_t cap) { if (desc && cap) snprintf(desc, cap, "cpu"); return SEG_OK; }
static void   cpu_invalidate(Unet *m) { (void)m; }
static int    cpu_sync_host(const Unet *m) { (void)m; return SEG_OK; }
static int    cpu_sync_device(Unet *m) { (void)m; return SEG_OK; }
static size_t cpu_device_memory(const Unet *m) { (void)m; return 0; }
static int    cpu_wait(Unet *m) { (void)m; return SEG_OK; }

static int cpu_step_times(Unet *m, double *busy_s, double *wall_s, int *steps)
{
    *busy_s = *wall_s = 0;
    *steps = 0;
    return seg_err(SEG_EARG, "unet_gpu_step_times: the model is on the CPU");
}

const UnetBackend unet_backend_cpu = {
    .name = "cpu",
    .probe = cpu_probe,
    .create = cpu_create,
    .carve = cpu_carve,
    .start = cpu_start,
    .destroy = cpu_destroy,
    .invalidate = cpu_invalidate,
    .forward = cpu_forward,
    .logits = cpu_logits,
    .loss = cpu_loss,
    .loss_grad = cpu_loss_grad,
    .backward = cpu_backward,
    .grad_sumsq = cpu_grad_sumsq,
    .scale_grads = cpu_scale_grads,
    .adam = cpu_adam,
    .dice = cpu_dice,
    .sync_host = cpu_sync_host,
    .sync_device = cpu_sync_device,
    .device_memory = cpu_device_memory,
    .wait = cpu_wait,
    .step_times = cpu_step_times,
};

const char *unet_cpu_kernels(void) { return nn_cpu_name(); }
