/* common/nn/nn_adam.c : Adam exactly as PyTorch 1.13's single-tensor path writes it
 * (m, v in place; denom = sqrt(v)/sqrt(1-b2^t) + eps; p += -(lr/(1-b1^t)) * m/denom),
 * and the two reductions gradient clipping needs. All over the flat parameter block. */
#include <math.h>
#include "nn_impl.h"

#define CHUNK 16384     /* floats per work item */

typedef struct {
    NnTeam *t;
    float *p, *m, *v, *x;
    const float *g;
    size_t n;
    float b1, b2, a1, a2, eps, step_size, bc2s, s;
} Vec;

static void adam_task(void *vctx, int tid, int b, int e)
{
    const Vec *c = vctx;
    const size_t i1 = (size_t)e * CHUNK < c->n ? (size_t)e * CHUNK : c->n;
    const float b1 = c->b1, b2 = c->b2, a1 = c->a1, a2 = c->a2;
    for (size_t i = (size_t)b * CHUNK; i < i1; i++) {
        const float g = c->g[i];
        const float m = c->m[i] * b1 + a1 * g;
        const float v = c->v[i] * b2 + a2 * (g * g);
        c->m[i] = m;
        c->v[i] = v;
        const float denom = sqrtf(v) / c->bc2s + c->eps;
        c->p[i] += -c->step_size * (m / denom);
    }
    (void)tid;
}

void nn_adam(NnTeam *t, float *p, const float *g, float *m, float *v, size_t n, double lr,
             double beta1, double beta2, double eps, int64_t step)
{
    const double bc1 = 1.0 - pow(beta1, (double)step);
    const double bc2 = 1.0 - pow(beta2, (double)step);
    Vec c = { .t = t, .p = p, .m = m, .v = v, .g = g, .n = n, .b1 = (float)beta1, .b2 = (float)beta2,
              .a1 = (float)(1.0 - beta1), .a2 = (float)(1.0 - beta2), .eps = (float)eps,
              .step_size = (float)(lr / bc1), .bc2s = (float)sqrt(bc2) };
    nn_team_run_dynamic(t, (int)((n + CHUNK - 1) / CHUNK), adam_task, &c);
}

static void sumsq_task(void *vctx, int tid, int b, int e)
{
    const Vec *c = vctx;
    const size_t i1 = (size_t)e * CHUNK < c->n ? (size_t)e * CHUNK : c->n;
    double s = 0;
    for (size_t i0 = (size_t)b * CHUNK; i0 < i1; i0 += 256) {
        const size_t i2 = i0 + 256 < i1 ? i0 + 256 : i1;
        float f = 0.f;
        for (size_t i = i0; i < i2; i++) f += c->g[i] * c->g[i];
        s += f;
    }
    *(double *)nn_team_acc(c->t, tid) = s;
}

double nn_sumsq(NnTeam *t, const float *x, size_t n)
{
    Vec c = { .t = t, .g = x, .n = n };
    const int items = (int)((n + CHUNK - 1) / CHUNK);
    nn_team_run(t, items, sumsq_task, &c);
    double s = 0;
    for (int th = 0; th < nn_team_active(t, items); th++) s += *(const double *)nn_team_acc(t, th);
    return s;
}

static void scale_task(void *vctx, int tid, int b, int e)
{
    const Vec *c = vctx;
    const size_t i1 = (size_t)e * CHUNK < c->n ? (size_t)e * CHUNK : c->n;
    for (size_t i = (size_t)b * CHUNK; i < i1; i++) c->x[i] *= c->s;
    (void)tid;
}

void nn_scale(NnTeam *t, float *x, size_t n, float s)
{
    Vec c = { .t = t, .x = x, .n = n, .s = s };
    nn_team_run_dynamic(t, (int)((n + CHUNK - 1) / CHUNK), scale_task, &c);
}
