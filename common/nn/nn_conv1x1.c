/* common/nn/nn_conv1x1.c : the 1x1 head conv from NHWC features to NCHW class planes.
 * Forward computes each tile as W * x^T so the GEMM writes class rows of contiguous pixels
 * straight into the planes; backward takes dL/dy tile by tile from a callback (the loss
 * supplies it from the logits and bit-packed targets, so no gradient planes are stored). */
#include "nn_impl.h"

#define HEAD_T 256      /* pixels per tile (a multiple of 32: GEMM columns) */

static inline int imin(int a, int b) { return a < b ? a : b; }


size_t nn_conv1x1_acc_floats(int Ci, int Co) { return (size_t)Co * Ci + Co + 16; }

typedef struct {
    NnTeam *t;
    float *y;
    const NnOut *dx;
    const NnAct *x;
    const float *w, *b;
    int Ci, Co, N, HW, T, tps, na;
    NnGradFn dyfn;
    void *dyctx;
    float *dw, *db;
} Head;

static int head_tile(const NnTeam *t, int Ci, int Co, int HW)
{
    int T = HEAD_T;
    const size_t need_per = (size_t)Ci * 2 + Co;
    while (T > 32 && (size_t)T * need_per + 2 * NN_SLACK + Ci + 64 > nn_team_scratch_floats(t)) T -= 32;
    return T < HW ? T : HW;
}

/* xT[k*T + t] = view(x)[pbase + t][k] for t < nq: the tile transposed, 16x16 at a time */
static void transpose_tile(float *xT, int T, const NnAct *x, long pbase, int nq, int Ci, float *row)
{
    int t0 = 0;
#if NN_AVX512
    if (Ci % 16 == 0) {
        __m512 r[16];
        for (; t0 + 16 <= nq; t0 += 16)
            for (int c0 = 0; c0 < Ci; c0 += 16) {
                for (int i = 0; i < 16; i++) {
                    nn_v_act_view(row, x, pbase + t0 + i, c0, 16);
                    r[i] = _mm512_loadu_ps(row);
                }
                nn_transpose16(r);
                for (int i = 0; i < 16; i++) _mm512_storeu_ps(xT + (size_t)(c0 + i) * T + t0, r[i]);
            }
    }
#elif NN_AVX2
    if (Ci % 8 == 0) {
        __m256 r[8];
        for (; t0 + 8 <= nq; t0 += 8)
            for (int c0 = 0; c0 < Ci; c0 += 8) {
                for (int i = 0; i < 8; i++) {
                    nn_v_act_view(row, x, pbase + t0 + i, c0, 8);
                    r[i] = _mm256_loadu_ps(row);
                }
                nn_transpose8(r);
                for (int i = 0; i < 8; i++) _mm256_storeu_ps(xT + (size_t)(c0 + i) * T + t0, r[i]);
            }
    }
#endif
    for (int t = t0; t < nq; t++) {
        nn_v_act_view(row, x, pbase + t, 0, Ci);
        for (int k = 0; k < Ci; k++) xT[(size_t)k * T + t] = row[k];
    }
}

static void head_fwd_task(void *vctx, int tid, int b, int e)
{
    const Head *h = vctx;
    const int Ci = h->Ci, Co = h->Co, T = h->T;
    float *xT = nn_team_scratch(h->t, tid);            /* [Ci x T] */
    float *row = xT + (size_t)Ci * T + NN_SLACK;
    for (int it = b; it < e; it++) {
        const int n = it / h->tps, q0 = (it % h->tps) * T, nq = imin(T, h->HW - q0);
        transpose_tile(xT, T, h->x, (long)n * h->HW + q0, nq, Ci, row);
        /* logits rows (class-major, pixels contiguous) = bias + W * x^T, straight into the planes */
        nn_gemm_wb(h->t, Co, nq, Ci, h->w, Co, xT, T, h->y + (size_t)n * Co * h->HW + q0, h->HW, 0, h->b, 1);
    }
#if NN_AVX512
    _mm_sfence();                                    /* order the streamed logits */
#endif
}

void nn_conv1x1_forward(NnTeam *t, float *y, const NnAct *x, const float *wt, const float *b,
                        int Co, int N, int HW)
{
    Head h = { .t = t, .y = y, .x = x, .w = wt, .b = b, .Ci = x->C, .Co = Co, .N = N, .HW = HW };
    h.T = head_tile(t, h.Ci, Co, HW);
    h.tps = (HW + h.T - 1) / h.T;
    nn_team_run_dynamic(t, N * h.tps, head_fwd_task, &h);
}

static void head_bwd_task(void *vctx, int tid, int b, int e)
{
    const Head *h = vctx;
    const int Ci = h->Ci, Co = h->Co, T = h->T;
    float *dl = nn_team_scratch(h->t, tid);            /* [Co x T] */
    float *xt = dl + (size_t)Co * T + NN_SLACK;        /* [T x Ci] */
    float *part = nn_team_acc(h->t, tid), *dbp = part + (size_t)Co * Ci;
    memset(part, 0, sizeof(float) * ((size_t)Co * Ci + Co));
    for (int it = b; it < e; it++) {
        const int n = it / h->tps, q0 = (it % h->tps) * T, nq = imin(T, h->HW - q0);
        const long pbase = (long)n * h->HW + q0;
        h->dyfn(h->dyctx, n, q0, nq, dl, T);
        for (int c = 0; c < Co; c++) {
            const float *r = dl + (size_t)c * T;
            float s = 0.f;
            int t = 0;
#if NN_AVX512
            __m512 v = _mm512_setzero_ps();
            for (; t + 16 <= nq; t += 16) v = _mm512_add_ps(v, _mm512_loadu_ps(r + t));
            s = _mm512_reduce_add_ps(v);
#elif NN_AVX2
            __m256 v = _mm256_setzero_ps();
            for (; t + 8 <= nq; t += 8) v = _mm256_add_ps(v, _mm256_loadu_ps(r + t));
            s = nn_hsum8(v);
#endif
            for (; t < nq; t++) s += r[t];
            dbp[c] += s;
        }
        for (int t = 0; t < nq; t++) nn_v_act_view(xt + (size_t)t * Ci, h->x, pbase + t, 0, Ci);
        nn_gemm_f(h->t, Co, Ci, nq, dl, T, xt, NN_NR, Ci, part, Ci, 1, NULL);
        if (h->dx)
            nn_gemm_w(h->t, nq, Ci, Co, dl, T, h->w, Ci, h->dx->y + pbase * h->dx->ld, h->dx->ld, 0);
    }
}

void nn_conv1x1_backward(NnTeam *t, const NnOut *dx, float *dw, float *db, NnGradFn dyfn,
                         void *dyctx, const NnAct *x, const float *w, int Co, int N, int HW)
{
    Head h = { .t = t, .dx = dx, .x = x, .w = w, .Ci = x->C, .Co = Co, .N = N, .HW = HW,
               .dyfn = dyfn, .dyctx = dyctx, .dw = dw, .db = db };
    h.T = head_tile(t, h.Ci, Co, HW);
    h.tps = (HW + h.T - 1) / h.T;
    const int items = N * h.tps;
    nn_team_run(t, items, head_bwd_task, &h);
    h.na = nn_team_active(t, items);
    for (int th = 0; th < h.na; th++) {
        const float *part = nn_team_acc(t, th), *dbp = part + (size_t)Co * h.Ci;
        for (size_t i = 0; i < (size_t)Co * h.Ci; i++) dw[i] += part[i];
        for (int c = 0; c < Co; c++) db[c] += dbp[c];
    }
}

void nn_nchw_grad(void *ctx, int n, int q0, int nq, float *d, int ldd)
{
    const NnNchwGrad *g = ctx;
    for (int c = 0; c < g->C; c++)
        memcpy(d + (size_t)c * ldd, g->dy + ((size_t)n * g->C + c) * g->HW + q0, sizeof(float) * (size_t)nq);
}
