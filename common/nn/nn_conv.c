/* common/nn/nn_conv.c : 3x3 convolution (pad 1, stride 1, no bias) over NHWC tensors.
 * Two ways to feed the GEMM:
 *  - wide images (the thin, expensive full-resolution layers): a tile of image rows is copied
 *    once, with the inputs' lazy BN+ReLU applied and a zero border, into padded row buffers.
 *    For kernel row ky, the 3*Ci inputs of output pixel x are then contiguous at
 *    row[ky] + x*Ci, so the GEMM reads A straight from the buffer with row stride Ci
 *    (implicit im2col: each input value is transformed once instead of 9 times).
 *  - narrow images (deep layers, W < 48, where rows are shorter than a few 12-pixel blocks):
 *    im2col of a tile of pixels into a [pixels x 9*Ci] block that stays in L2; deep layers
 *    split the 9 taps into K-blocks so the block still fits.
 * The input gradient is the same forward pass over dy with the flipped, transposed kernel
 * (no col2im scatter); the weight gradient is col^T * dy per tile, summed in per-thread
 * partials. */
#include "nn_impl.h"

#define L2_FLOATS ((size_t)160 * 1024)   /* col + output tile budget per thread (640 KiB) */
#define KC_TARGET 640                    /* K-block width (floats per im2col row) */

/* BatchNorm statistics of one output pixel row: s[c] += y[c], q[c] += y[c]^2. */
static inline void stats_add_row(const float *y, float *s, float *q, int Co)
{
    int ch = 0;
#if NN_AVX512
    for (; ch + 16 <= Co; ch += 16) {
        __m512 v = _mm512_loadu_ps(y + ch);
        _mm512_storeu_ps(s + ch, _mm512_add_ps(_mm512_loadu_ps(s + ch), v));
        _mm512_storeu_ps(q + ch, _mm512_fmadd_ps(v, v, _mm512_loadu_ps(q + ch)));
    }
#elif NN_AVX2
    for (; ch + 8 <= Co; ch += 8) {
        __m256 v = _mm256_loadu_ps(y + ch);
        _mm256_storeu_ps(s + ch, _mm256_add_ps(_mm256_loadu_ps(s + ch), v));
        _mm256_storeu_ps(q + ch, _mm256_fmadd_ps(v, v, _mm256_loadu_ps(q + ch)));
    }
#endif
    for (; ch < Co; ch++) { s[ch] += y[ch]; q[ch] += y[ch] * y[ch]; }
}

static inline int imin(int a, int b) { return a < b ? a : b; }

size_t nn_conv3x3_acc_floats(int Ci, int Co)
{
    const size_t a = (size_t)9 * Ci * Co + 4 * (size_t)Co, one = 18 * (size_t)Co;  /* Ci = 1: doubles */
    return (a > one ? a : one) + 16;
}

/* Unfold pixels [p0, p0+np) for taps [tap0, tap1) into col (row stride Kc). */
static void im2col(float *col, int Kc, const NnAct *in, int n_in, int Ci, long p0, int np,
                   int tap0, int tap1, int H, int W)
{
    const long HW = (long)H * W;
    long n = p0 / HW;
    int rem = (int)(p0 % HW), y = rem / W, x = rem % W;
    const int scalar1 = n_in == 1 && Ci == 1;
    for (int t = 0; t < np; t++) {
        float *row = col + (long)t * Kc;
        for (int tap = tap0; tap < tap1; tap++) {
            const int yy = y + tap / 3 - 1, xx = x + tap % 3 - 1;
            float *dst = row + (tap - tap0) * Ci;
            if (yy < 0 || yy >= H || xx < 0 || xx >= W) {
                if (scalar1) *dst = 0.f; else memset(dst, 0, sizeof(float) * (size_t)Ci);
                continue;
            }
            const long q = n * HW + (long)yy * W + xx;
            if (scalar1) {
                float v = in->x[q * in->ld];
                if (in->scale) v = v * in->scale[0] + in->shift[0];
                *dst = in->relu && v < 0.f ? 0.f : v;
                continue;
            }
            int c0 = 0;
            for (int v = 0; v < n_in; v++) {
                nn_v_act_view(dst + c0, &in[v], q, 0, in[v].C);
                c0 += in[v].C;
            }
        }
        if (++x == W) { x = 0; if (++y == H) { y = 0; n++; } }
    }
}

/* Taps per K-block and pixels per tile for a conv with Ci inputs and Co outputs. */
static void conv_tiling(const NnTeam *t, int Ci, int Co, long P, int extra_out, int *tpb, int *T)
{
    int k = KC_TARGET / (Ci > 0 ? Ci : 1);
    *tpb = k < 1 ? 1 : k > 9 ? 9 : k;
    const size_t Kc = (size_t)*tpb * Ci + 16;           /* + the bww row padding */
    const size_t fixed = 2 * NN_SLACK + 2 * (size_t)Co + 64;
    size_t avail = nn_team_scratch_floats(t);
    if (avail > L2_FLOATS + fixed) avail = L2_FLOATS + fixed;
    /* the output tile (or the bww dy tile) is counted in the L2 budget either way */
    int rows = nn_tile_rows(avail, Kc + (size_t)Co + 16, fixed, 384);
    while (rows > NN_MR && (size_t)rows * (Kc + (size_t)Co + 16) + fixed > nn_team_scratch_floats(t)) rows -= NN_MR;
    *T = nn_tile_balance(P, rows, nn_team_size(t));
    (void)extra_out;
}

typedef struct {
    NnTeam *t;
    const NnOut *out;
    int n_out;
    const NnAct *in;
    int n_in;
    const float *wp;
    int Ci, Co, H, W, T, tpb;
    long P;
    int stats;
    double *islot;               /* per-item statistics (dynamic runs), or NULL */
} ConvFwd;

static void conv_fwd_task(void *vctx, int tid, int b, int e)
{
    const ConvFwd *c = vctx;
    const int Ci = c->Ci, Co = c->Co, T = c->T, K = 9 * Ci;
    const int Kcmax = c->tpb * Ci;
    float *col = nn_team_scratch(c->t, tid);
    float *otile = col + (size_t)T * Kcmax + NN_SLACK;
    float *fs = otile + (c->n_out > 1 ? (size_t)T * Co : 0);   /* float tile sums, 2*Co */
    double *const ts = (double *)nn_team_acc(c->t, tid);       /* static runs: per thread */
    if (c->stats && !c->islot) memset(ts, 0, sizeof(double) * 2 * (size_t)Co);
    for (int it = b; it < e; it++) {
        double *ds = c->islot ? c->islot + (size_t)it * 2 * Co : ts, *dq = ds + Co;   /* dynamic: per item */
        if (c->stats && c->islot) memset(ds, 0, sizeof(double) * 2 * (size_t)Co);

        const long p0 = (long)it * T;
        const int np = (int)(c->P - p0 < T ? c->P - p0 : T);
        float *dst;
        long ldd;
        if (c->n_out == 1) { dst = c->out[0].y + p0 * c->out[0].ld; ldd = c->out[0].ld; }
        else { dst = otile; ldd = Co; }
        for (int tap0 = 0; tap0 < 9; tap0 += c->tpb) {
            const int tap1 = imin(9, tap0 + c->tpb), Kc = (tap1 - tap0) * Ci;
            im2col(col, Kc, c->in, c->n_in, Ci, p0, np, tap0, tap1, c->H, c->W);
            nn_gemm_f(c->t, np, Co, Kc, col, Kc, c->wp + (size_t)tap0 * Ci * NN_NR,
                      (long)K * NN_NR, NN_NR, dst, ldd, tap0 > 0, NULL);
        }
        if (c->stats) {
            float *s = fs, *q = fs + Co;
            memset(fs, 0, sizeof(float) * 2 * (size_t)Co);
            for (int r = 0; r < np; r++) stats_add_row(dst + r * ldd, s, q, Co);
            for (int ch = 0; ch < Co; ch++) { ds[ch] += s[ch]; dq[ch] += q[ch]; }
        }
        if (c->n_out > 1) {
            int c0 = 0;
            for (int v = 0; v < c->n_out; v++) {
                const NnOut *o = &c->out[v];
                for (int r = 0; r < np; r++)
                    memcpy(o->y + (p0 + r) * o->ld, otile + (long)r * Co + c0, sizeof(float) * (size_t)o->C);
                c0 += o->C;
            }
        }
    }
}

/* ---- one input channel (the image): direct, weights held in registers ---------------------- */
/* Three padded rows of the (transformed) input around output row y of sample n. */
static void fill_rows1(float *r, const NnAct *in, int n, int y, int H, int W)
{
    for (int ky = 0; ky < 3; ky++) {
        float *d = r + (size_t)ky * (W + 2);
        const int yy = y + ky - 1;
        d[0] = d[W + 1] = 0.f;
        if (yy < 0 || yy >= H) { memset(d, 0, sizeof(float) * (size_t)(W + 2)); continue; }
        const float *src = in->x + ((long)n * H + yy) * W * in->ld;
        for (int x = 0; x < W; x++) {
            float v = src[(long)x * in->ld];
            if (in->scale) v = v * in->scale[0] + in->shift[0];
            d[x + 1] = in->relu && v < 0.f ? 0.f : v;
        }
    }
}

typedef struct {
    NnTeam *t;
    const NnOut *out;
    const NnAct *in;
    const float *wp, *dy;
    int ldy, Co, H, W, N, stats;
    double *islot;
} Conv1;

static void conv1_fwd_task(void *vctx, int tid, int b, int e)
{
    const Conv1 *c = vctx;
    const int Co = c->Co, W = c->W, NQ = (Co + NN_NR - 1) / NN_NR;
    float *r = nn_team_scratch(c->t, tid);
    double *const ts = (double *)nn_team_acc(c->t, tid);       /* static runs: per thread */
    if (c->stats && !c->islot) memset(ts, 0, sizeof(double) * 2 * (size_t)Co);
    for (int it = b; it < e; it++) {                   /* one item = one image row */
        double *ds = c->islot ? c->islot + (size_t)it * 2 * Co : ts, *dq = ds + Co;   /* dynamic: per item */
        if (c->stats && c->islot) memset(ds, 0, sizeof(double) * 2 * (size_t)Co);
        const int n = it / c->H, y = it % c->H;
        fill_rows1(r, c->in, n, y, c->H, W);
        float *yrow = c->out->y + ((long)n * c->H + y) * W * c->out->ld;
        for (int q = 0; q < NQ; q++) {
            const float *w = c->wp + (size_t)q * 9 * NN_NR;     /* [tap][32] */
            const int nq = Co - q * NN_NR < NN_NR ? Co - q * NN_NR : NN_NR;
#if NN_AVX512
            if (!nn_team_generic(c->t)) {
                const __mmask16 k0 = nq >= 16 ? 0xFFFF : (__mmask16)((1u << nq) - 1);
                const __mmask16 k1 = nq <= 16 ? 0 : nq >= 32 ? 0xFFFF : (__mmask16)((1u << (nq - 16)) - 1);
                __m512 w0[9], w1[9];
                for (int tap = 0; tap < 9; tap++) {
                    w0[tap] = _mm512_loadu_ps(w + tap * NN_NR);
                    w1[tap] = _mm512_loadu_ps(w + tap * NN_NR + 16);
                }
                __m512 s0 = _mm512_setzero_ps(), s1 = s0, q0 = s0, q1 = s0;
                for (int x = 0; x < W; x++) {
                    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
                    for (int tap = 0; tap < 9; tap++) {
                        const __m512 v = _mm512_set1_ps(r[(tap / 3) * (W + 2) + x + tap % 3]);
                        a0 = _mm512_fmadd_ps(v, w0[tap], a0);
                        a1 = _mm512_fmadd_ps(v, w1[tap], a1);
                    }
                    float *yp = yrow + (long)x * c->out->ld + q * NN_NR;
                    _mm512_mask_storeu_ps(yp, k0, a0);
                    if (k1) _mm512_mask_storeu_ps(yp + 16, k1, a1);
                    s0 = _mm512_add_ps(s0, a0); s1 = _mm512_add_ps(s1, a1);
                    q0 = _mm512_fmadd_ps(a0, a0, q0); q1 = _mm512_fmadd_ps(a1, a1, q1);
                }
                if (c->stats) {
                    float fs[4][16];
                    _mm512_storeu_ps(fs[0], s0); _mm512_storeu_ps(fs[1], s1);
                    _mm512_storeu_ps(fs[2], q0); _mm512_storeu_ps(fs[3], q1);
                    for (int j = 0; j < nq; j++) { ds[q * NN_NR + j] += fs[j >> 4][j & 15]; dq[q * NN_NR + j] += fs[2 + (j >> 4)][j & 15]; }
                }
                continue;
            }
#elif NN_AVX2
            {   /* 32 columns as 4 ymm; the 9 taps' weights are re-read from L1 */
                __m256i km[4];
                for (int j = 0; j < 4; j++) km[j] = nn_mask8(nq - 8 * j);
                __m256 s[4], sq[4];
                for (int j = 0; j < 4; j++) s[j] = sq[j] = _mm256_setzero_ps();
                for (int x = 0; x < W; x++) {
                    __m256 a[4];
                    for (int j = 0; j < 4; j++) a[j] = _mm256_setzero_ps();
                    for (int tap = 0; tap < 9; tap++) {
                        const __m256 v = _mm256_broadcast_ss(r + (tap / 3) * (W + 2) + x + tap % 3);
                        for (int j = 0; j < 4; j++) a[j] = _mm256_fmadd_ps(v, _mm256_loadu_ps(w + tap * NN_NR + 8 * j), a[j]);
                    }
                    float *yp = yrow + (long)x * c->out->ld + q * NN_NR;
                    for (int j = 0; j < 4; j++) {
                        if (nq >= 8 * (j + 1)) _mm256_storeu_ps(yp + 8 * j, a[j]);
                        else if (nq > 8 * j) _mm256_maskstore_ps(yp + 8 * j, km[j], a[j]);
                        s[j] = _mm256_add_ps(s[j], a[j]);
                        sq[j] = _mm256_fmadd_ps(a[j], a[j], sq[j]);
                    }
                }
                if (c->stats) {
                    float fs[2][32];
                    for (int j = 0; j < 4; j++) { _mm256_storeu_ps(fs[0] + 8 * j, s[j]); _mm256_storeu_ps(fs[1] + 8 * j, sq[j]); }
                    for (int j = 0; j < nq; j++) { ds[q * NN_NR + j] += fs[0][j]; dq[q * NN_NR + j] += fs[1][j]; }
                }
                continue;
            }
#endif
            for (int x = 0; x < W; x++) {
                float *yp = yrow + (long)x * c->out->ld + q * NN_NR;
                for (int j = 0; j < nq; j++) {
                    float a = 0.f;
                    for (int tap = 0; tap < 9; tap++) a += r[(tap / 3) * (W + 2) + x + tap % 3] * w[tap * NN_NR + j];
                    yp[j] = a;
                    if (c->stats) { ds[q * NN_NR + j] += a; dq[q * NN_NR + j] += (double)a * a; }
                }
            }
        }
    }
}

static void conv1_bww_task(void *vctx, int tid, int b, int e)
{
    const Conv1 *c = vctx;
    const int Co = c->Co, W = c->W;
    float *r = nn_team_scratch(c->t, tid);
    double *acc = (double *)nn_team_acc(c->t, tid);     /* [9][Co] */
    memset(acc, 0, sizeof(double) * 9 * (size_t)Co);
    for (int it = b; it < e; it++) {
        const int n = it / c->H, y = it % c->H;
        fill_rows1(r, c->in, n, y, c->H, W);
        const float *dyr = c->dy + ((long)n * c->H + y) * W * c->ldy;
        for (int q = 0; q * NN_NR < Co; q++) {
            const int nq = Co - q * NN_NR < NN_NR ? Co - q * NN_NR : NN_NR;
#if NN_AVX512
            if (!nn_team_generic(c->t)) {
                const __mmask16 k0 = nq >= 16 ? 0xFFFF : (__mmask16)((1u << nq) - 1);
                const __mmask16 k1 = nq <= 16 ? 0 : nq >= 32 ? 0xFFFF : (__mmask16)((1u << (nq - 16)) - 1);
                __m512 a0[9], a1[9];
                for (int tap = 0; tap < 9; tap++) { a0[tap] = _mm512_setzero_ps(); a1[tap] = a0[tap]; }
                for (int x = 0; x < W; x++) {
                    const float *g = dyr + (long)x * c->ldy + q * NN_NR;
                    const __m512 g0 = _mm512_maskz_loadu_ps(k0, g), g1 = _mm512_maskz_loadu_ps(k1, g + 16);
                    for (int tap = 0; tap < 9; tap++) {
                        const __m512 v = _mm512_set1_ps(r[(tap / 3) * (W + 2) + x + tap % 3]);
                        a0[tap] = _mm512_fmadd_ps(v, g0, a0[tap]);
                        a1[tap] = _mm512_fmadd_ps(v, g1, a1[tap]);
                    }
                }
                for (int tap = 0; tap < 9; tap++) {
                    float f[32];
                    _mm512_storeu_ps(f, a0[tap]);
                    _mm512_storeu_ps(f + 16, a1[tap]);
                    for (int j = 0; j < nq; j++) acc[(size_t)tap * Co + q * NN_NR + j] += f[j];
                }
                continue;
            }
#elif NN_AVX2
            for (int j0 = 0; j0 < nq; j0 += 8) {   /* 8 columns at a time: 9 ymm accumulators */
                const __m256i km = nn_mask8(nq - j0);
                __m256 a[9];
                for (int tap = 0; tap < 9; tap++) a[tap] = _mm256_setzero_ps();
                for (int x = 0; x < W; x++) {
                    const __m256 g = _mm256_maskload_ps(dyr + (long)x * c->ldy + q * NN_NR + j0, km);
                    for (int tap = 0; tap < 9; tap++)
                        a[tap] = _mm256_fmadd_ps(_mm256_broadcast_ss(r + (tap / 3) * (W + 2) + x + tap % 3), g, a[tap]);
                }
                for (int tap = 0; tap < 9; tap++) {
                    float f[8];
                    _mm256_storeu_ps(f, a[tap]);
                    for (int j = 0; j < 8 && j0 + j < nq; j++) acc[(size_t)tap * Co + q * NN_NR + j0 + j] += f[j];
                }
            }
            continue;
#endif
            for (int tap = 0; tap < 9; tap++)
                for (int j = 0; j < nq; j++) {
                    float a = 0.f;
                    for (int x = 0; x < W; x++) a += r[(tap / 3) * (W + 2) + x + tap % 3] * dyr[(long)x * c->ldy + q * NN_NR + j];
                    acc[(size_t)tap * Co + q * NN_NR + j] += a;
                }
        }
    }
}

/* ---- implicit im2col over padded row buffers ------------------------------------------------ */
#define ROWS_MIN_W 48

/* Row-buffer path when rows hold several 12-pixel blocks, Ci is not tiny, and every output
 * view starts on a 32-column panel (the GEMM writes panels straight into the views). */
static int rows_ok(const NnTeam *t, int W, int Ci, int Co, const NnOut *out, int n_out)
{
    if (W < ROWS_MIN_W || Ci < 8) return 0;
    if ((size_t)3 * (W + 2) * Ci + NN_SLACK + 2 * (size_t)Co + 4096 > nn_team_scratch_floats(t)) return 0;
    for (int v = 0; v + 1 < n_out; v++) if (out[v].C % NN_NR) return 0;
    return 1;
}

/* Image rows per work item: the padded buffer ((R+2) rows of (W+2)*Ci) within budget. */
static int rows_per_item(const NnTeam *t, int W, int Ci, int H, long N)
{
    const size_t row = (size_t)(W + 2) * Ci;
    size_t avail = nn_team_scratch_floats(t) - NN_SLACK - 4096;   /* rows_ok: >= 3 rows */
    if (avail > L2_FLOATS) avail = L2_FLOATS;
    int R = (int)(avail / row) - 2;
    if (R > 8) R = 8;
    if (R < 1) R = 1;
    if (R > H) R = H;
    /* keep enough items for every thread */
    while (R > 1 && N * ((H + R - 1) / R) < 4L * nn_team_size(t)) R /= 2;
    return R;
}

/* Fill rows y0-1 .. y0+R (clipped to the image, else zero) of sample n into buf. */
static void fill_rows(float *buf, const NnAct *in, int n_in, int Ci, int n, int y0, int R, int H, int W)
{
    const size_t row = (size_t)(W + 2) * Ci;
    for (int r = 0; r < R + 2; r++) {
        float *dst = buf + (size_t)r * row;
        const int y = y0 - 1 + r;
        if (y < 0 || y >= H) { memset(dst, 0, sizeof(float) * row); continue; }
        memset(dst, 0, sizeof(float) * (size_t)Ci);                          /* x = -1 */
        memset(dst + (size_t)(W + 1) * Ci, 0, sizeof(float) * (size_t)Ci);  /* x = W  */
        const long p0 = ((long)n * H + y) * W;
        for (int x = 0; x < W; x++) {
            float *d = dst + (size_t)(x + 1) * Ci;
            int c0 = 0;
            for (int v = 0; v < n_in; v++) {
                nn_v_act_view(d + c0, &in[v], p0 + x, 0, in[v].C);
                c0 += in[v].C;
            }
        }
    }
}

typedef struct {
    NnTeam *t;
    const NnOut *out;
    int n_out;
    const NnAct *in;
    int n_in;
    const float *wp, *dy;
    int ldy, Ci, Co, H, W, R, ipn;   /* ipn: items per sample */
    int stats;
    double *islot;
} ConvRows;

static void rows_fwd_task(void *vctx, int tid, int b, int e)
{
    const ConvRows *c = vctx;
    const int Ci = c->Ci, Co = c->Co, W = c->W, K3 = 3 * Ci;
    const size_t row = (size_t)(W + 2) * Ci;
    float *buf = nn_team_scratch(c->t, tid);
    float *fs = buf + (size_t)(c->R + 2) * row + NN_SLACK;
    double *const ts = (double *)nn_team_acc(c->t, tid);       /* static runs: per thread */
    if (c->stats && !c->islot) memset(ts, 0, sizeof(double) * 2 * (size_t)Co);
    for (int it = b; it < e; it++) {
        double *ds = c->islot ? c->islot + (size_t)it * 2 * Co : ts, *dq = ds + Co;   /* dynamic: per item */
        if (c->stats && c->islot) memset(ds, 0, sizeof(double) * 2 * (size_t)Co);

        const int n = it / c->ipn, y0 = (it % c->ipn) * c->R;
        const int R = c->H - y0 < c->R ? c->H - y0 : c->R;
        fill_rows(buf, c->in, c->n_in, Ci, n, y0, R, c->H, W);
        for (int r = 0; r < R; r++) {
            const long p0 = ((long)n * c->H + y0 + r) * W;
            int c0 = 0;
            for (int v = 0; v < c->n_out; v++) {      /* each view: whole 32-wide panels */
                const NnOut *o = &c->out[v];
                nn_gemm_fs(c->t, W, o->C, K3, 3, buf + (size_t)r * row, Ci, (long)row,
                           c->wp + (size_t)c0 * 9 * Ci, (long)9 * Ci * NN_NR, NN_NR, (long)K3 * NN_NR,
                           o->y + p0 * o->ld, o->ld, 0, NULL);
                c0 += o->C;
            }
            if (c->stats) {
                float *s = fs, *q = fs + Co;
                const NnOut *o = &c->out[0];
                memset(fs, 0, sizeof(float) * 2 * (size_t)Co);
                for (int x = 0; x < W; x++) stats_add_row(o->y + (p0 + x) * o->ld, s, q, Co);
                for (int ch = 0; ch < Co; ch++) { ds[ch] += s[ch]; dq[ch] += q[ch]; }
            }
        }
    }
}

static void rows_bww_task(void *vctx, int tid, int b, int e)
{
    const ConvRows *c = vctx;
    const int Ci = c->Ci, Co = c->Co, W = c->W, K3 = 3 * Ci;
    const size_t row = (size_t)(W + 2) * Ci;
    float *buf = nn_team_scratch(c->t, tid);
    float *part = nn_team_acc(c->t, tid);       /* [9*Ci x Co], k = (ky*3 + kx)*Ci + ci */
    memset(part, 0, sizeof(float) * (size_t)9 * Ci * Co);
    for (int it = b; it < e; it++) {
        const int n = it / c->ipn, y0 = (it % c->ipn) * c->R;
        const int R = c->H - y0 < c->R ? c->H - y0 : c->R;
        fill_rows(buf, c->in, c->n_in, Ci, n, y0, R, c->H, W);
        for (int r = 0; r < R; r++) {
            const float *dy = c->dy + ((long)n * c->H + y0 + r) * W * c->ldy;
            for (int ky = 0; ky < 3; ky++)
                nn_gemm_w(c->t, K3, Co, W, buf + (size_t)(r + ky) * row, Ci, dy, c->ldy,
                          part + (size_t)ky * K3 * Co, Co, 1);
        }
    }
}

void nn_conv3x3_forward(NnTeam *t, const NnOut *out, int n_out, const NnAct *in, int n_in,
                        const float *wp, int N, int H, int W, double *sum, double *sumsq)
{
    ConvFwd c = { .t = t, .out = out, .n_out = n_out, .in = in, .n_in = n_in, .wp = wp,
                  .H = H, .W = W, .P = (long)N * H * W, .stats = sum != NULL };
    for (int i = 0; i < n_in; i++) c.Ci += in[i].C;
    for (int i = 0; i < n_out; i++) c.Co += out[i].C;
    /* Items go to whichever thread is free; the BN sums are kept per item and added in item
     * order, so the result does not depend on the schedule. A layer with more items than
     * the per-item table holds runs in fixed shares with per-thread sums instead. */
    int items, mode;
    Conv1 d = { .t = t, .out = out, .in = in, .wp = wp, .Co = c.Co, .H = H, .W = W, .N = N, .stats = c.stats };
    ConvRows r = { .t = t, .out = out, .n_out = n_out, .in = in, .n_in = n_in, .wp = wp, .Ci = c.Ci,
                   .Co = c.Co, .H = H, .W = W, .stats = c.stats };
    NnTask task;
    void *ctx;
    if (n_in == 1 && c.Ci == 1 && n_out == 1) {
        mode = 0; items = N * H; task = conv1_fwd_task; ctx = &d;
    } else if (rows_ok(t, W, c.Ci, c.Co, out, n_out)) {
        r.R = rows_per_item(t, W, c.Ci, H, N);
        r.ipn = (H + r.R - 1) / r.R;
        mode = 1; items = N * r.ipn; task = rows_fwd_task; ctx = &r;
    } else {
        conv_tiling(t, c.Ci, c.Co, c.P, n_out > 1, &c.tpb, &c.T);
        mode = 2; items = (int)((c.P + c.T - 1) / c.T); task = conv_fwd_task; ctx = &c;
    }
    double *islot = NULL;
    if (!c.stats || (size_t)items * 2 * c.Co <= NN_ITEM_DOUBLES) {
        if (c.stats) islot = nn_team_items(t);
        d.islot = r.islot = c.islot = islot;
        nn_team_run_dynamic(t, items, task, ctx);
    } else {
        nn_team_run(t, items, task, ctx);
    }
    (void)mode;
    if (sum) {
        for (int ch = 0; ch < c.Co; ch++) { sum[ch] = 0; sumsq[ch] = 0; }
        const int ns = islot ? items : nn_team_active(t, items);
        for (int i = 0; i < ns; i++) {
            const double *ds = islot ? islot + (size_t)i * 2 * c.Co : (const double *)nn_team_acc(t, i);
            const double *dq = ds + c.Co;
            for (int ch = 0; ch < c.Co; ch++) { sum[ch] += ds[ch]; sumsq[ch] += dq[ch]; }
        }
    }
}

void nn_conv3x3_backward_data(NnTeam *t, const NnOut *dx, int n_dx, const float *dy, int ldy,
                              int Co, const float *wpb, int N, int H, int W)
{
    const NnAct in = { .x = dy, .ld = ldy, .C = Co };
    nn_conv3x3_forward(t, dx, n_dx, &in, 1, wpb, N, H, W, NULL, NULL);
}

typedef struct {
    NnTeam *t;
    const NnAct *in;
    int n_in;
    const float *dy;
    int ldy, Ci, Co, H, W, T, tpb;
    long P;
    float *dw;
    int na;
} ConvBww;

/* Row strides of the weight-gradient operands: walking down 2 KiB-aligned rows would pile
 * every row into the same few L1 sets, so rows that are a multiple of 256 floats get 16 more. */
static inline int pad_ld(int n) { return n % 256 == 0 ? n + 16 : n; }

static void conv_bww_task(void *vctx, int tid, int b, int e)
{
    const ConvBww *c = vctx;
    const int Ci = c->Ci, Co = c->Co, T = c->T;
    const int ldcol = pad_ld(c->tpb * Ci), lddy = pad_ld(Co);
    float *col = nn_team_scratch(c->t, tid);
    float *dyt = col + (size_t)T * ldcol + NN_SLACK;   /* this tile of dy, rows lddy apart */
    float *part = nn_team_acc(c->t, tid);             /* [9*Ci x Co] */
    memset(part, 0, sizeof(float) * (size_t)9 * Ci * Co);
    for (int it = b; it < e; it++) {
        const long p0 = (long)it * T;
        const int np = (int)(c->P - p0 < T ? c->P - p0 : T);
        const float *dy = c->dy + p0 * c->ldy;
        long ldb = c->ldy;
        if (lddy != Co || c->ldy % 256 == 0) {
            for (int r = 0; r < np; r++) memcpy(dyt + (size_t)r * lddy, dy + r * c->ldy, sizeof(float) * (size_t)Co);
            dy = dyt;
            ldb = lddy;
        }
        for (int tap0 = 0; tap0 < 9; tap0 += c->tpb) {
            const int tap1 = imin(9, tap0 + c->tpb), Kc = (tap1 - tap0) * Ci;
            im2col(col, ldcol, c->in, c->n_in, Ci, p0, np, tap0, tap1, c->H, c->W);
            nn_gemm_w(c->t, Kc, Co, np, col, ldcol, dy, ldb, part + (size_t)tap0 * Ci * Co, Co, 1);
        }
    }
}

/* dw[co][ci][tap] += sum over threads of part[(tap*Ci + ci)*Co + co], rows k in 16-blocks */
static void conv_bww_reduce(void *vctx, int tid, int b, int e)
{
    const ConvBww *c = vctx;
    const int Ci = c->Ci, Co = c->Co, K = 9 * Ci;
    float acc[16][16];
    for (int kb = b * 16; kb < e * 16 && kb < K; kb += 16) {
        const int nk = imin(16, K - kb);
        for (int cb = 0; cb < Co; cb += 16) {
            const int nc = imin(16, Co - cb);
            for (int i = 0; i < nk; i++)
                for (int j = 0; j < nc; j++) acc[i][j] = 0.f;
            for (int th = 0; th < c->na; th++) {
                const float *part = nn_team_acc(c->t, th);
                for (int i = 0; i < nk; i++)
                    for (int j = 0; j < nc; j++) acc[i][j] += part[(size_t)(kb + i) * Co + cb + j];
            }
            for (int i = 0; i < nk; i++) {
                const int k = kb + i, tap = k / Ci, ci = k % Ci;
                for (int j = 0; j < nc; j++) c->dw[((size_t)(cb + j) * Ci + ci) * 9 + tap] += acc[i][j];
            }
        }
    }
    (void)tid;
}

void nn_conv3x3_backward_weights(NnTeam *t, float *dw, const NnAct *in, int n_in,
                                 const float *dy, int ldy, int Co, int N, int H, int W)
{
    ConvBww c = { .t = t, .in = in, .n_in = n_in, .dy = dy, .ldy = ldy, .Co = Co, .H = H,
                  .W = W, .P = (long)N * H * W, .dw = dw };
    for (int i = 0; i < n_in; i++) c.Ci += in[i].C;
    int items;
    if (n_in == 1 && c.Ci == 1) {
        Conv1 d = { .t = t, .in = in, .dy = dy, .ldy = ldy, .Co = Co, .H = H, .W = W, .N = N };
        items = N * H;
        nn_team_run(t, items, conv1_bww_task, &d);
        for (int th = 0, na = nn_team_active(t, items); th < na; th++) {
            const double *a = (const double *)nn_team_acc(t, th);
            for (int co = 0; co < Co; co++)
                for (int tap = 0; tap < 9; tap++) dw[(size_t)co * 9 + tap] += (float)a[(size_t)tap * Co + co];
        }
        return;
    }
    if (rows_ok(t, W, c.Ci, Co, NULL, 0)) {
        ConvRows r = { .t = t, .in = in, .n_in = n_in, .dy = dy, .ldy = ldy, .Ci = c.Ci, .Co = Co, .H = H, .W = W };
        r.R = rows_per_item(t, W, c.Ci, H, N);
        r.ipn = (H + r.R - 1) / r.R;
        items = N * r.ipn;
        nn_team_run(t, items, rows_bww_task, &r);
    } else {
        conv_tiling(t, c.Ci, Co, c.P, 0, &c.tpb, &c.T);
        items = (int)((c.P + c.T - 1) / c.T);
        nn_team_run(t, items, conv_bww_task, &c);
    }
    c.na = nn_team_active(t, items);
    nn_team_run(t, (9 * c.Ci + 15) / 16, conv_bww_reduce, &c);
}
