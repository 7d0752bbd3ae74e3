/* common/nn/nn_pool.c : MaxPool2d(2, 2) over NHWC, reading its input through an NnAct
 * (so the pooled encoder output is never stored in normalised form). The argmax of each
 * output element is kept as one byte for the backward scatter. */
#include "nn_impl.h"

#define POOL_ROWS 64    /* output pixels per work item */

typedef struct {
    NnTeam *t;
    float *y;
    int ldy;
    uint8_t *idx;
    const NnAct *x;
    float *dx;
    int lddx;
    const float *dy;
    int lddy;
    const uint8_t *cidx;
    int C, H, W;
    long Po;
} Pool;

/* input pixel of output pixel o's window element ab (0..3) */
static inline long pool_src(long o, int ab, int H, int W)
{
    const int Ho = H / 2, Wo = W / 2;
    const long n = o / ((long)Ho * Wo);
    const int r = (int)(o % ((long)Ho * Wo)), i = r / Wo, j = r % Wo;
    return (n * H + 2 * i + (ab >> 1)) * (long)W + 2 * j + (ab & 1);
}

static void pool_fwd_task(void *vctx, int tid, int b, int e)
{
    const Pool *c = vctx;
    const int C = c->C;
    float *v = nn_team_scratch(c->t, tid);     /* 4 rows of C: the window, transformed */
    const long o1 = (long)e * POOL_ROWS < c->Po ? (long)e * POOL_ROWS : c->Po;
    for (long o = (long)b * POOL_ROWS; o < o1; o++) {
        for (int ab = 0; ab < 4; ab++) nn_v_act_view(v + (size_t)ab * C, c->x, pool_src(o, ab, c->H, c->W), 0, C);
        float *y = c->y + o * c->ldy;
        uint8_t *id = c->idx ? c->idx + o * C : NULL;
        int ch = 0;
#if NN_AVX512
        for (; ch + 16 <= C; ch += 16) {
            __m512 m = _mm512_loadu_ps(v + ch);
            __m512i k = _mm512_setzero_si512();
            for (int ab = 1; ab < 4; ab++) {
                const __m512 w = _mm512_loadu_ps(v + (size_t)ab * C + ch);
                const __mmask16 gt = _mm512_cmp_ps_mask(w, m, _CMP_GT_OQ);
                m = _mm512_mask_mov_ps(m, gt, w);
                k = _mm512_mask_mov_epi32(k, gt, _mm512_set1_epi32(ab));
            }
            _mm512_storeu_ps(y + ch, m);
            if (id) _mm_storeu_si128((__m128i *)(id + ch), _mm512_cvtepi32_epi8(k));
        }
#elif NN_AVX2
        for (; ch + 8 <= C; ch += 8) {
            __m256 m = _mm256_loadu_ps(v + ch);
            __m256i k = _mm256_setzero_si256();
            for (int ab = 1; ab < 4; ab++) {
                const __m256 w = _mm256_loadu_ps(v + (size_t)ab * C + ch);
                const __m256 gt = _mm256_cmp_ps(w, m, _CMP_GT_OQ);
                m = _mm256_blendv_ps(m, w, gt);
                k = _mm256_blendv_epi8(k, _mm256_set1_epi32(ab), _mm256_castps_si256(gt));
            }
            _mm256_storeu_ps(y + ch, m);
            if (id) {   /* 8 int32 -> 8 bytes */
                const __m128i k16 = _mm_packs_epi32(_mm256_castsi256_si128(k), _mm256_extracti128_si256(k, 1));
                _mm_storel_epi64((__m128i *)(void *)(id + ch), _mm_packus_epi16(k16, k16));
            }
        }
#endif
        for (; ch < C; ch++) {
            float m = v[ch];
            int k = 0;
            for (int ab = 1; ab < 4; ab++)
                if (v[(size_t)ab * C + ch] > m) { m = v[(size_t)ab * C + ch]; k = ab; }
            y[ch] = m;
            if (id) id[ch] = (uint8_t)k;
        }
    }
}

void nn_maxpool_forward(NnTeam *t, float *y, int ldy, uint8_t *idx, const NnAct *x,
                        int N, int H, int W)
{
    Pool c = { .t = t, .y = y, .ldy = ldy, .idx = idx, .x = x, .C = x->C, .H = H, .W = W,
               .Po = (long)N * (H / 2) * (W / 2) };
    nn_team_run_dynamic(t, (int)((c.Po + POOL_ROWS - 1) / POOL_ROWS), pool_fwd_task, &c);
}

static void pool_bwd_task(void *vctx, int tid, int b, int e)
{
    const Pool *c = vctx;
    const int C = c->C;
    const long o1 = (long)e * POOL_ROWS < c->Po ? (long)e * POOL_ROWS : c->Po;
    for (long o = (long)b * POOL_ROWS; o < o1; o++) {
        const float *dy = c->dy + o * c->lddy;
        const uint8_t *id = c->cidx + o * C;
        float *dx[4];
        for (int ab = 0; ab < 4; ab++) dx[ab] = c->dx + pool_src(o, ab, c->H, c->W) * c->lddx;
        int ch = 0;
#if NN_AVX512
        for (; ch + 16 <= C; ch += 16) {
            const __m512 g = _mm512_loadu_ps(dy + ch);
            const __m512i k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(id + ch)));
            for (int ab = 0; ab < 4; ab++) {
                const __mmask16 sel = _mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(ab));
                if (sel)
                    _mm512_mask_storeu_ps(dx[ab] + ch, sel, _mm512_add_ps(_mm512_loadu_ps(dx[ab] + ch), g));
            }
        }
#elif NN_AVX2
        for (; ch + 8 <= C; ch += 8) {
            const __m256 g = _mm256_loadu_ps(dy + ch);
            const __m256i k = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(id + ch)));
            for (int ab = 0; ab < 4; ab++) {
                const __m256i sel = _mm256_cmpeq_epi32(k, _mm256_set1_epi32(ab));
                if (!_mm256_testz_si256(sel, sel))
                    _mm256_maskstore_ps(dx[ab] + ch, sel, _mm256_add_ps(_mm256_loadu_ps(dx[ab] + ch), g));
            }
        }
#endif
        for (; ch < C; ch++) dx[id[ch]][ch] += dy[ch];
    }
    (void)tid;
}

void nn_maxpool_backward(NnTeam *t, float *dx, int lddx, const float *dy, int lddy,
                         const uint8_t *idx, int C, int N, int H, int W)
{
    Pool c = { .t = t, .dx = dx, .lddx = lddx, .dy = dy, .lddy = lddy, .cidx = idx, .C = C,
               .H = H, .W = W, .Po = (long)N * (H / 2) * (W / 2) };
    nn_team_run_dynamic(t, (int)((c.Po + POOL_ROWS - 1) / POOL_ROWS), pool_bwd_task, &c);
}
