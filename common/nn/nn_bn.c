/* common/nn/nn_bn.c : BatchNorm2d (+ReLU) over NHWC tensors. The forward never writes the
 * normalised tensor: the conv that produced z also summed z and z^2 per channel, and the
 * consumers apply relu(z*scale + shift) as they read it. The backward rebuilds the ReLU mask
 * and x_hat from z in two passes: the per-channel reductions, then dz in place. */
#include <math.h>
#include "nn_impl.h"

#define BN_ROWS 512    /* pixels per work item */

void nn_bn_train_stats(int C, const double *sum, const double *sumsq, long M,
                       const float *gamma, const float *beta, float eps, float momentum,
                       float *mean, float *invstd, float *scale, float *shift,
                       float *rm, float *rv, float *nbt)
{
    for (int c = 0; c < C; c++) {
        const double mu = sum[c] / (double)M;
        double var = sumsq[c] / (double)M - mu * mu;
        if (var < 0) var = 0;
        const float is = (float)(1.0 / sqrt(var + (double)eps));
        mean[c] = (float)mu;
        invstd[c] = is;
        scale[c] = gamma[c] * is;
        shift[c] = beta[c] - (float)mu * scale[c];
        if (rm) {
            const double unb = M > 1 ? var * (double)M / (double)(M - 1) : var;
            rm[c] = (float)((1.0 - momentum) * rm[c] + momentum * mu);
            rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * unb);
        }
    }
    if (nbt) *nbt += 1.f;
}

void nn_bn_eval_params(int C, const float *gamma, const float *beta, const float *rm,
                       const float *rv, float eps, float *scale, float *shift)
{
    for (int c = 0; c < C; c++) {
        const float is = (float)(1.0 / sqrt((double)rv[c] + (double)eps));
        scale[c] = gamma[c] * is;
        shift[c] = beta[c] - rm[c] * scale[c];
    }
}

size_t nn_bn_acc_floats(int C) { return (size_t)4 * C + 16; }

typedef struct {
    NnTeam *t;
    float *g;
    const float *z;
    int ldg, ldz, C, relu, na;
    long M;
    const float *mean, *invstd, *gamma, *beta;
    float *scale, *shift;     /* derived: the forward's lazy transform (mask) */
    float *k1, *mb, *mg;      /* pass 2: gamma*invstd, sum1/M, sum2/M */
} BnBwd;

#if NN_AVX512
/* 16 channels from ch: the incoming gradient masked by the forward's ReLU (when fused)
 * and x_hat = (z - mean) * invstd; shared by both backward passes. */
static inline void gated_xhat16(const BnBwd *c, const float *g, const float *z, int ch, __m512 *gv, __m512 *xh)
{
    const __m512 zv = _mm512_loadu_ps(z + ch);
    __m512 gg = _mm512_loadu_ps(g + ch);
    if (c->relu) {
        const __m512 y = _mm512_fmadd_ps(zv, _mm512_loadu_ps(c->scale + ch), _mm512_loadu_ps(c->shift + ch));
        gg = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), gg);
    }
    *gv = gg;
    *xh = _mm512_mul_ps(_mm512_sub_ps(zv, _mm512_loadu_ps(c->mean + ch)), _mm512_loadu_ps(c->invstd + ch));
}
#elif NN_AVX2
/* the same for 8 channels */
static inline void gated_xhat8(const BnBwd *c, const float *g, const float *z, int ch, __m256 *gv, __m256 *xh)
{
    const __m256 zv = _mm256_loadu_ps(z + ch);
    __m256 gg = _mm256_loadu_ps(g + ch);
    if (c->relu) {
        const __m256 y = _mm256_fmadd_ps(zv, _mm256_loadu_ps(c->scale + ch), _mm256_loadu_ps(c->shift + ch));
        gg = _mm256_and_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ), gg);
    }
    *gv = gg;
    *xh = _mm256_mul_ps(_mm256_sub_ps(zv, _mm256_loadu_ps(c->mean + ch)), _mm256_loadu_ps(c->invstd + ch));
}
#endif

/* pass 1: per-thread sums of gm = g*mask and gm*x_hat, x_hat = (z - mean)*invstd */
static void bn_reduce_task(void *vctx, int tid, int b, int e)
{
    const BnBwd *c = vctx;
    const int C = c->C;
    double *s1 = (double *)nn_team_acc(c->t, tid), *s2 = s1 + C;
    memset(s1, 0, sizeof(double) * 2 * (size_t)C);
    float *f1 = nn_team_scratch(c->t, tid), *f2 = f1 + C;
    for (int it = b; it < e; it++) {
        const long p0 = (long)it * BN_ROWS, p1 = p0 + BN_ROWS < c->M ? p0 + BN_ROWS : c->M;
        memset(f1, 0, sizeof(float) * 2 * (size_t)C);
        for (long p = p0; p < p1; p++) {
            const float *g = c->g + p * c->ldg, *z = c->z + p * c->ldz;
            int ch = 0;
#if NN_AVX512
            for (; ch + 16 <= C; ch += 16) {
                __m512 gv, xh;
                gated_xhat16(c, g, z, ch, &gv, &xh);
                _mm512_storeu_ps(f1 + ch, _mm512_add_ps(_mm512_loadu_ps(f1 + ch), gv));
                _mm512_storeu_ps(f2 + ch, _mm512_fmadd_ps(gv, xh, _mm512_loadu_ps(f2 + ch)));
            }
#elif NN_AVX2
            for (; ch + 8 <= C; ch += 8) {
                __m256 gv, xh;
                gated_xhat8(c, g, z, ch, &gv, &xh);
                _mm256_storeu_ps(f1 + ch, _mm256_add_ps(_mm256_loadu_ps(f1 + ch), gv));
                _mm256_storeu_ps(f2 + ch, _mm256_fmadd_ps(gv, xh, _mm256_loadu_ps(f2 + ch)));
            }
#endif
            for (; ch < C; ch++) {
                float gv = g[ch];
                if (c->relu && !(z[ch] * c->scale[ch] + c->shift[ch] > 0.f)) gv = 0.f;
                f1[ch] += gv;
                f2[ch] += gv * ((z[ch] - c->mean[ch]) * c->invstd[ch]);
            }
        }
        for (int ch = 0; ch < C; ch++) { s1[ch] += f1[ch]; s2[ch] += f2[ch]; }
    }
}

/* pass 2: dz = gamma*invstd * (gm - mean(gm) - x_hat * mean(gm*x_hat)), in place */
static void bn_apply_task(void *vctx, int tid, int b, int e)
{
    const BnBwd *c = vctx;
    const int C = c->C;
    const long p0 = (long)b * BN_ROWS, p1 = (long)e * BN_ROWS < c->M ? (long)e * BN_ROWS : c->M;
    for (long p = p0; p < p1; p++) {
        float *g = c->g + p * c->ldg;
        const float *z = c->z + p * c->ldz;
        int ch = 0;
#if NN_AVX512
        for (; ch + 16 <= C; ch += 16) {
            __m512 gv, xh;
            gated_xhat16(c, g, z, ch, &gv, &xh);
            __m512 d = _mm512_sub_ps(gv, _mm512_loadu_ps(c->mb + ch));
            d = _mm512_fnmadd_ps(xh, _mm512_loadu_ps(c->mg + ch), d);
            _mm512_storeu_ps(g + ch, _mm512_mul_ps(d, _mm512_loadu_ps(c->k1 + ch)));
        }
#elif NN_AVX2
        for (; ch + 8 <= C; ch += 8) {
            __m256 gv, xh;
            gated_xhat8(c, g, z, ch, &gv, &xh);
            __m256 d = _mm256_sub_ps(gv, _mm256_loadu_ps(c->mb + ch));
            d = _mm256_fnmadd_ps(xh, _mm256_loadu_ps(c->mg + ch), d);
            _mm256_storeu_ps(g + ch, _mm256_mul_ps(d, _mm256_loadu_ps(c->k1 + ch)));
        }
#endif
        for (; ch < C; ch++) {
            float gv = g[ch];
            if (c->relu && !(z[ch] * c->scale[ch] + c->shift[ch] > 0.f)) gv = 0.f;
            const float xh = (z[ch] - c->mean[ch]) * c->invstd[ch];
            g[ch] = (gv - c->mb[ch] - xh * c->mg[ch]) * c->k1[ch];
        }
    }
    (void)tid;
}

void nn_bn_backward(NnTeam *t, float *g, int ldg, const float *z, int ldz, int C, long M,
                    const float *mean, const float *invstd, const float *gamma,
                    const float *beta, int relu, float *dgamma, float *dbeta)
{
    /* per-channel constants live at the end of thread 0's scratch, after pass 1's floats */
    float *cst = nn_team_scratch(t, 0) + 2 * (size_t)C + 64;
    BnBwd c = { .t = t, .g = g, .z = z, .ldg = ldg, .ldz = ldz, .C = C, .relu = relu, .M = M,
                .mean = mean, .invstd = invstd, .gamma = gamma, .beta = beta,
                .scale = cst, .shift = cst + C, .k1 = cst + 2 * C, .mb = cst + 3 * C, .mg = cst + 4 * C };
    for (int ch = 0; ch < C; ch++) {
        c.scale[ch] = gamma[ch] * invstd[ch];
        c.shift[ch] = beta[ch] - mean[ch] * c.scale[ch];
    }
    const int items = (int)((M + BN_ROWS - 1) / BN_ROWS);
    nn_team_run(t, items, bn_reduce_task, &c);
    const int na = nn_team_active(t, items);
    for (int ch = 0; ch < C; ch++) {
        double s1 = 0, s2 = 0;
        for (int th = 0; th < na; th++) {
            const double *a = (const double *)nn_team_acc(t, th);
            s1 += a[ch];
            s2 += a[C + ch];
        }
        dbeta[ch] += (float)s1;
        dgamma[ch] += (float)s2;
        c.k1[ch] = c.scale[ch];
        c.mb[ch] = (float)(s1 / (double)M);
        c.mg[ch] = (float)(s2 / (double)M);
    }
    nn_team_run_dynamic(t, items, bn_apply_task, &c);
}

typedef struct { NnTeam *t; float *y; int ldy; const NnAct *x; long P; } ActApply;

static void act_apply_task(void *vctx, int tid, int b, int e)
{
    const ActApply *c = vctx;
    const long p1 = (long)e * BN_ROWS < c->P ? (long)e * BN_ROWS : c->P;
    for (long p = (long)b * BN_ROWS; p < p1; p++) nn_v_act_view(c->y + p * c->ldy, c->x, p, 0, c->x->C);
    (void)tid;
}

void nn_act_apply(NnTeam *t, float *y, int ldy, const NnAct *x, long P)
{
    ActApply c = { t, y, ldy, x, P };
    nn_team_run_dynamic(t, (int)((P + BN_ROWS - 1) / BN_ROWS), act_apply_task, &c);
}
