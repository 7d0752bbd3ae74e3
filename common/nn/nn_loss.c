/* common/nn/nn_loss.c : BCE-with-logits, the soft-Dice sums and Dice counts read straight
 * from bit-packed targets (16 pixels = 2 bytes = one AVX-512 mask), one plane per work item. The loss per
 * element is max(z,0) - z*t + log1p(exp(-|z|)), summed in double; exp and log1p are
 * vectorised here (relative error ~1e-7, well inside the 1e-6 asked of the loss). */
#include <math.h>
#include "nn_impl.h"

#if NN_AVX512
/* exp(x) for x <= 0: 2^k * p(r), x = k*ln2 + r, |r| <= ln2/2, Taylor to r^7 (err ~5e-9) */
static inline __m512 v_exp_neg(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.f));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.f / 5040.f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, k);
}

/* log1p(u) for u in [0, 1]: log(w) * u / (w - 1) with w = 1 + u (exact-rounding fix-up),
 * log(w) = e*ln2 + 2*atanh(s), s = (m-1)/(m+1), m = w or w/2 in [0.707, 1.414] */
static inline __m512 v_log1p01(__m512 u)
{
    const __m512 one = _mm512_set1_ps(1.f);
    const __m512 w = _mm512_add_ps(one, u);
    const __mmask16 big = _mm512_cmp_ps_mask(w, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
    const __m512 m = _mm512_mask_mul_ps(w, big, w, _mm512_set1_ps(0.5f));
    const __m512 e = _mm512_maskz_mov_ps(big, one);
    const __m512 s = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one));
    const __m512 s2 = _mm512_mul_ps(s, s);
    __m512 p = _mm512_set1_ps(1.f / 9.f);
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.f / 7.f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.f / 5.f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.f / 3.f));
    p = _mm512_fmadd_ps(p, s2, one);
    const __m512 lg = _mm512_fmadd_ps(e, _mm512_set1_ps(0.693147180559945309f),
                                      _mm512_mul_ps(_mm512_add_ps(s, s), p));
    const __m512 wm1 = _mm512_sub_ps(w, one);
    const __mmask16 exact = _mm512_cmp_ps_mask(wm1, _mm512_setzero_ps(), _CMP_EQ_OQ);
    const __m512 fixed = _mm512_mul_ps(lg, _mm512_div_ps(u, _mm512_mask_mov_ps(wm1, exact, one)));
    return _mm512_mask_mov_ps(fixed, exact, u);
}

static inline __mmask16 bits16(const uint8_t *b) { return (__mmask16)(b[0] | (b[1] << 8)); }

static inline __m512d v_sum_pd(__m512d acc, __m512 v)
{
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    return _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
#endif

#if NN_AVX2
/* The AVX2 versions of the same polynomials (8 lanes; masks as all-ones lanes). */
static inline __m256 v8_exp_neg(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-104.f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.f / 5040.f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    /* p * 2^k, k in [-150, 0], as two normal powers of two (2^k alone may be subnormal) */
    const __m256i ki = _mm256_cvtps_epi32(k), k1 = _mm256_srai_epi32(ki, 1), k2 = _mm256_sub_epi32(ki, k1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

static inline __m256 v8_log1p01(__m256 u)
{
    const __m256 one = _mm256_set1_ps(1.f);
    const __m256 w = _mm256_add_ps(one, u);
    const __m256 big = _mm256_cmp_ps(w, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    const __m256 m = _mm256_blendv_ps(w, _mm256_mul_ps(w, _mm256_set1_ps(0.5f)), big);
    const __m256 e = _mm256_and_ps(big, one);
    const __m256 s = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
    const __m256 s2 = _mm256_mul_ps(s, s);
    __m256 p = _mm256_set1_ps(1.f / 9.f);
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.f / 7.f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.f / 5.f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.f / 3.f));
    p = _mm256_fmadd_ps(p, s2, one);
    const __m256 lg = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693147180559945309f),
                                      _mm256_mul_ps(_mm256_add_ps(s, s), p));
    const __m256 wm1 = _mm256_sub_ps(w, one);
    const __m256 exact = _mm256_cmp_ps(wm1, _mm256_setzero_ps(), _CMP_EQ_OQ);
    const __m256 fixed = _mm256_mul_ps(lg, _mm256_div_ps(u, _mm256_blendv_ps(wm1, one, exact)));
    return _mm256_blendv_ps(fixed, u, exact);
}

/* the 8 target bits of one byte as all-ones lanes */
static inline __m256 bits8(unsigned byte)
{
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)byte), sel), sel));
}

static inline __m256d v8_sum_pd(__m256d acc, __m256 v)
{
    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    return _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

static inline double v8_reduce_pd(__m256d v)
{
    double d[4];
    _mm256_storeu_pd(d, v);
    return (d[0] + d[1]) + (d[2] + d[3]);
}
#endif

static inline int tbit(const uint8_t *bits, long q) { return (bits[q >> 3] >> (q & 7)) & 1; }

/* Sums of one plane into o[NN_LOSS_PLANE] (added): BCE, then with dice sigmoid, sigmoid*t, t. */
static void loss_plane_generic(const float *z, const uint8_t *bits, int present, int HW, int dice, double *o)
{
    double s = 0, sp = 0, si = 0;
    long y = 0;
    for (int q = 0; q < HW; q++) {
        const float v = z[q], e = expf(-fabsf(v));
        const float l = (v > 0.f ? v : 0.f) + log1pf(e);
        const int t = present && tbit(bits, q);
        s += (double)(t ? l - v : l);
        if (dice) {
            const float r = 1.f / (1.f + e), p = v < 0.f ? e * r : r;
            sp += (double)p;
            if (t) { si += (double)p; y++; }
        }
    }
    o[0] += s;
    if (dice) { o[1] += sp; o[2] += si; o[3] += (double)y; }
}

#if NN_AVX512
static void loss_plane_avx512(const float *z, const uint8_t *bits, int present, int HW, int dice, double *o)
{
    __m512d acc = _mm512_setzero_pd(), accp = _mm512_setzero_pd(), acci = _mm512_setzero_pd();
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.f);
    long y = 0;
    int q = 0;
    for (; q + 16 <= HW; q += 16) {
        const __m512 v = _mm512_loadu_ps(z + q);
        const __m512 e = v_exp_neg(_mm512_sub_ps(zero, _mm512_abs_ps(v)));
        __m512 l = _mm512_add_ps(_mm512_max_ps(v, zero), v_log1p01(e));
        const __mmask16 tm = present ? bits16(bits + (q >> 3)) : 0;
        l = _mm512_mask_sub_ps(l, tm, l, v);
        acc = v_sum_pd(acc, l);
        if (dice) {
            const __m512 r = _mm512_div_ps(one, _mm512_add_ps(one, e));
            const __m512 p = _mm512_mask_mul_ps(r, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), e, r);
            accp = v_sum_pd(accp, p);
            acci = v_sum_pd(acci, _mm512_maskz_mov_ps(tm, p));
            y += __builtin_popcount((unsigned)tm);
        }
    }
    o[0] += _mm512_reduce_add_pd(acc);
    if (dice) {
        o[1] += _mm512_reduce_add_pd(accp);
        o[2] += _mm512_reduce_add_pd(acci);
        o[3] += (double)y;
    }
    if (q < HW) loss_plane_generic(z + q, bits + (q >> 3), present, HW - q, dice, o);
}
#endif

#if NN_AVX2
static void loss_plane_avx2(const float *z, const uint8_t *bits, int present, int HW, int dice, double *o)
{
    __m256d acc = _mm256_setzero_pd(), accp = acc, acci = acc;
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    long y = 0;
    int q = 0;
    for (; q + 8 <= HW; q += 8) {
        const __m256 v = _mm256_loadu_ps(z + q);
        const __m256 e = v8_exp_neg(_mm256_sub_ps(zero, _mm256_and_ps(v, absm)));
        __m256 l = _mm256_add_ps(_mm256_max_ps(v, zero), v8_log1p01(e));
        const unsigned tb = present ? bits[q >> 3] : 0u;
        const __m256 tm = bits8(tb);
        l = _mm256_sub_ps(l, _mm256_and_ps(tm, v));
        acc = v8_sum_pd(acc, l);
        if (dice) {
            const __m256 r = _mm256_div_ps(one, _mm256_add_ps(one, e));
            const __m256 p = _mm256_blendv_ps(r, _mm256_mul_ps(e, r), _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
            accp = v8_sum_pd(accp, p);
            acci = v8_sum_pd(acci, _mm256_and_ps(tm, p));
            y += __builtin_popcount(tb);
        }
    }
    o[0] += v8_reduce_pd(acc);
    if (dice) {
        o[1] += v8_reduce_pd(accp);
        o[2] += v8_reduce_pd(acci);
        o[3] += (double)y;
    }
    if (q < HW) loss_plane_generic(z + q, bits + (q >> 3), present, HW - q, dice, o);
}
#endif

typedef struct {
    NnTeam *t;
    const float *z;
    const uint8_t *bits, *presence, *labelled;   /* labelled: NULL = every plane */
    int N, C, HW, dice, pl0;
    double *out;
} Bce;

static inline int present_bit(const uint8_t *presence, int C, int n, int c)
{
    return (presence[(size_t)n * ((C + 7) / 8) + (c >> 3)] >> (c & 7)) & 1;
}

/* items are planes pl0 + i; each writes only its own NN_LOSS_PLANE doubles at out + i*4 */
static void loss_task(void *vctx, int tid, int b, int e)
{
    const Bce *c = vctx;
    (void)tid;
    for (int i = b; i < e; i++) {
        const int pl = c->pl0 + i, n = pl / c->C, ch = pl % c->C;
        const float *z = c->z + (size_t)pl * c->HW;
        const uint8_t *bits = c->bits + (size_t)pl * (c->HW / 8);
        const int pr = present_bit(c->presence, c->C, n, ch);
        double *o = c->out + (size_t)i * NN_LOSS_PLANE;
        o[0] = o[1] = o[2] = o[3] = 0;
        if (c->labelled && !present_bit(c->labelled, c->C, n, ch)) continue;   /* unknown: contributes nothing */
#if NN_AVX512
        if (!nn_team_generic(c->t)) { loss_plane_avx512(z, bits, pr, c->HW, c->dice, o); continue; }
#elif NN_AVX2
        loss_plane_avx2(z, bits, pr, c->HW, c->dice, o);
        continue;
#endif
        loss_plane_generic(z, bits, pr, c->HW, c->dice, o);
    }
}

void nn_loss_planes(NnTeam *t, const float *logits, const uint8_t *bits, const uint8_t *presence,
                    const uint8_t *labelled, int N, int C, int HW, int dice, double *out)
{
    Bce c = { .t = t, .z = logits, .bits = bits, .presence = presence, .labelled = labelled, .N = N, .C = C,
              .HW = HW, .dice = dice, .pl0 = 0, .out = out };
    nn_team_run_dynamic(t, N * C, loss_task, &c);
}

double nn_bce_sum(NnTeam *t, const float *logits, const uint8_t *bits, const uint8_t *presence,
                  int N, int C, int HW)
{
    /* per-plane sums in the team's item buffer, a chunk at a time, added in plane order */
    const int chunk = (int)(NN_ITEM_DOUBLES / NN_LOSS_PLANE);
    Bce c = { .t = t, .z = logits, .bits = bits, .presence = presence, .N = N, .C = C, .HW = HW,
              .dice = 0, .out = nn_team_items(t) };
    double s = 0;
    for (c.pl0 = 0; c.pl0 < N * C; c.pl0 += chunk) {
        const int n = N * C - c.pl0 < chunk ? N * C - c.pl0 : chunk;
        nn_team_run_dynamic(t, n, loss_task, &c);
        for (int i = 0; i < n; i++) s += c.out[(size_t)i * NN_LOSS_PLANE];
    }
    return s;
}

long nn_labelled_planes(const uint8_t *labelled, int N, int C)
{
    if (!labelled) return (long)N * C;
    long k = 0;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) k += present_bit(labelled, C, n, c);
    return k;
}

double nn_loss_bce_total(const double *planes, int N, int C)
{
    double s = 0;
    for (long pl = 0; pl < (long)N * C; pl++) s += planes[pl * NN_LOSS_PLANE];
    return s;
}

double nn_soft_dice(const double *planes, int N, int C, float *a, float *b)
{
    int ns = 0;
    for (int c = 0; c < C; c++) {
        double Y = 0;
        for (int n = 0; n < N; n++) Y += planes[((long)n * C + c) * NN_LOSS_PLANE + 3];
        ns += Y > 0;
    }
    double dsum = 0;
    for (int c = 0; c < C; c++) {
        double P = 0, I = 0, Y = 0;
        for (int n = 0; n < N; n++) {
            const double *o = planes + ((long)n * C + c) * NN_LOSS_PLANE;
            P += o[1]; I += o[2]; Y += o[3];
        }
        if (!(Y > 0)) { a[c] = b[c] = 0.f; continue; }
        const double den = P + Y + NN_DICE_EPS, num = 2.0 * I + NN_DICE_EPS;
        dsum += num / den;
        a[c] = (float)(-2.0 / (ns * den));
        b[c] = (float)(num / (ns * den * den));
    }
    return ns ? 1.0 - dsum / ns : 0.0;
}

void nn_bce_grad_row(const NnTeam *t, float *d, const float *z, const uint8_t *plane_bits,
                     int present, int q0, int nq, float scale, float a, float b)
{
    const uint8_t *bits = plane_bits + (q0 >> 3);
    const int dice = a != 0.f || b != 0.f;
    int q = 0;
#if NN_AVX512
    if (!nn_team_generic(t)) {
        const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.f), sc = _mm512_set1_ps(scale);
        const __m512 vb = _mm512_set1_ps(b), vab = _mm512_set1_ps(a + b);
        for (; q + 16 <= nq; q += 16) {
            const __m512 v = _mm512_loadu_ps(z + q);
            const __m512 e = v_exp_neg(_mm512_sub_ps(zero, _mm512_abs_ps(v)));
            const __m512 r = _mm512_div_ps(one, _mm512_add_ps(one, e));
            /* sigmoid: 1/(1+e) for z >= 0, e/(1+e) = 1 - 1/(1+e) for z < 0 */
            __m512 sg = _mm512_mask_mul_ps(r, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), e, r);
            const __mmask16 tm = present ? bits16(bits + (q >> 3)) : 0;
            sg = _mm512_mask_sub_ps(sg, tm, sg, one);
            __m512 g = _mm512_mul_ps(sg, sc);
            if (dice) {   /* + (a*t + b) * p(1-p), p(1-p) = e/(1+e)^2 on both sides of 0 */
                const __m512 pq = _mm512_mul_ps(_mm512_mul_ps(e, r), r);
                g = _mm512_fmadd_ps(_mm512_mask_mov_ps(vb, tm, vab), pq, g);
            }
            _mm512_storeu_ps(d + q, g);
        }
    }
#elif NN_AVX2
    {
        const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f), sc = _mm256_set1_ps(scale);
        const __m256 vb = _mm256_set1_ps(b), vab = _mm256_set1_ps(a + b);
        const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        for (; q + 8 <= nq; q += 8) {
            const __m256 v = _mm256_loadu_ps(z + q);
            const __m256 e = v8_exp_neg(_mm256_sub_ps(zero, _mm256_and_ps(v, absm)));
            const __m256 r = _mm256_div_ps(one, _mm256_add_ps(one, e));
            __m256 sg = _mm256_blendv_ps(r, _mm256_mul_ps(e, r), _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
            const __m256 tm = bits8(present ? bits[q >> 3] : 0u);
            sg = _mm256_sub_ps(sg, _mm256_and_ps(tm, one));
            __m256 g = _mm256_mul_ps(sg, sc);
            if (dice) {
                const __m256 pq = _mm256_mul_ps(_mm256_mul_ps(e, r), r);
                g = _mm256_fmadd_ps(_mm256_blendv_ps(vb, vab, tm), pq, g);
            }
            _mm256_storeu_ps(d + q, g);
        }
    }
#endif
    for (; q < nq; q++) {
        const float v = z[q], e = expf(-fabsf(v)), r = 1.f / (1.f + e);
        float sg = v < 0.f ? e * r : r;
        const int tt = present && tbit(bits, q);
        if (tt) sg -= 1.f;
        d[q] = dice ? fmaf(tt ? a + b : b, e * r * r, sg * scale) : sg * scale;
    }
}

size_t nn_dice_acc_floats(int C) { return (size_t)6 * C + 16; }

static void dice_task(void *vctx, int tid, int b, int e)
{
    const Bce *c = vctx;
    int64_t *acc = (int64_t *)nn_team_acc(c->t, tid);       /* tp, fp, fn per channel */
    memset(acc, 0, sizeof(int64_t) * 3 * (size_t)c->C);
    for (int pl = b; pl < e; pl++) {
        const int n = pl / c->C, ch = pl % c->C;
        const float *z = c->z + (size_t)pl * c->HW;
        const uint8_t *bits = c->bits + (size_t)pl * (c->HW / 8);
        if (c->labelled && !present_bit(c->labelled, c->C, n, ch)) continue;
        const int pr = present_bit(c->presence, c->C, n, ch);
        int64_t tp = 0, fp = 0, fn = 0;
        int q = 0;
#if NN_AVX512
        const __m512 zero = _mm512_setzero_ps();
        for (; q + 16 <= c->HW; q += 16) {
            const unsigned pm = _mm512_cmp_ps_mask(_mm512_loadu_ps(z + q), zero, _CMP_GT_OQ);
            const unsigned tm = pr ? bits16(bits + (q >> 3)) : 0u;
            tp += __builtin_popcount(pm & tm);
            fp += __builtin_popcount(pm & ~tm & 0xFFFFu);
            fn += __builtin_popcount(~pm & tm & 0xFFFFu);
        }
#elif NN_AVX2
        for (; q + 8 <= c->HW; q += 8) {
            const unsigned pm = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(z + q), _mm256_setzero_ps(), _CMP_GT_OQ));
            const unsigned tm = pr ? bits[q >> 3] : 0u;
            tp += __builtin_popcount(pm & tm);
            fp += __builtin_popcount(pm & ~tm & 0xFFu);
            fn += __builtin_popcount(~pm & tm & 0xFFu);
        }
#endif
        for (; q < c->HW; q++) {
            const int p = z[q] > 0.f, tt = pr && tbit(bits, q);
            tp += p && tt;
            fp += p && !tt;
            fn += !p && tt;
        }
        acc[ch] += tp;
        acc[c->C + ch] += fp;
        acc[2 * c->C + ch] += fn;
    }
}

void nn_dice_counts(NnTeam *t, const float *logits, const uint8_t *bits,
                    const uint8_t *presence, const uint8_t *labelled, int N, int C, int HW,
                    int64_t *tp, int64_t *fp, int64_t *fn)
{
    Bce c = { .t = t, .z = logits, .bits = bits, .presence = presence, .labelled = labelled, .N = N, .C = C, .HW = HW };
    const int items = N * C;
    nn_team_run(t, items, dice_task, &c);
    for (int th = 0; th < nn_team_active(t, items); th++) {
        const int64_t *a = (const int64_t *)nn_team_acc(t, th);
        for (int ch = 0; ch < C; ch++) { tp[ch] += a[ch]; fp[ch] += a[C + ch]; fn[ch] += a[2 * C + ch]; }
    }
}
