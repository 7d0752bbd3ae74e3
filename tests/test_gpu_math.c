/* tests/test_gpu_math.c : the GPU kernels' per-element arithmetic (common/gpu/gpu_math.h),
 * compiled for the CPU and checked against the CPU backend (common/nn) on the same data:
 * BCE loss and gradient from packed targets (with the soft-Dice part and sums too), Adam, the
 * max-pool argmax and Dice counts.
 * Runs everywhere, GPU or not; the kernels around it are checked by test_gpu on a device. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "gpu_math.h"
#include "nn.h"
#include "testutil.h"

static float frand(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)((t_rand(s) >> 40) * (1.0 / 16777216.0));
}

/* logits with the awkward values too: 0, +-tiny, large magnitudes, exact ties */
static void fill_logits(float *z, size_t n, uint64_t *s)
{
    static const float special[] = { 0.f, -0.f, 1e-30f, -1e-30f, 17.f, -17.f, 88.f, -88.f, 100.f, -100.f, 1e6f, -1e6f };
    for (size_t i = 0; i < n; i++) {
        const uint64_t r = t_rand(s) % 16;
        z[i] = r < 12 && (t_rand(s) & 7) == 0 ? special[r] : frand(s, -12.f, 12.f);
    }
}

/* tol: the CPU's vector path uses its own exp approximation; its portable path uses expf */
static void test_bce(NnTeam *t, double tol, const char *what)
{
    const int N = 3, C = 11, HW = 40 * 24, CB = (C + 7) / 8;
    uint64_t s = 7;
    const size_t n = (size_t)N * C * HW;
    float *z = malloc(sizeof(float) * n), *dc = malloc(sizeof(float) * HW), *dg = malloc(sizeof(float) * n);
    uint8_t *bits = malloc(n / 8), pres[3 * 2];
    fill_logits(z, n, &s);
    for (size_t i = 0; i < n / 8; i++) bits[i] = (uint8_t)t_rand(&s);
    for (int i = 0; i < N * CB; i++) pres[i] = (uint8_t)t_rand(&s);
    pres[0] |= 1; pres[CB] &= (uint8_t)~1;     /* plane (0,0) present, (1,0) absent: garbage bits ignored */
    /* loss: the same elementwise formula summed in double, as the kernel's block sums do */
    double sg = 0;
    for (int pl = 0; pl < N * C; pl++) {
        const int pr = gm_present(pres, C, pl / C, pl % C);
        for (int q = 0; q < HW; q++) sg += gm_bce(z[(size_t)pl * HW + q], pr && gm_bit(bits + (size_t)pl * (HW / 8), q));
    }
    const double sc = nn_bce_sum(t, z, bits, pres, N, C, HW);
    CHECK(fabs(sg - sc) <= 1e-6 * fabs(sc) + 1e-3, "BCE sum: gpu_math %.9g, CPU backend %.9g", sg, sc);
    /* gradient, element by element */
    const float scale = 1.f / (float)n;
    double worst = 0;
    long bad = 0;
    for (int pl = 0; pl < N * C; pl++) {
        const int pr = gm_present(pres, C, pl / C, pl % C);
        const uint8_t *pb = bits + (size_t)pl * (HW / 8);
        nn_bce_grad_row(t, dc, z + (size_t)pl * HW, pb, pr, 0, HW, scale, 0.f, 0.f);
        for (int q = 0; q < HW; q++) {
            const float g = gm_bce_grad(z[(size_t)pl * HW + q], pr && gm_bit(pb, q), scale);
            dg[(size_t)pl * HW + q] = g;
            const double e = fabs((double)g - dc[q]) / (fabs(dc[q]) + 1e-30);
            if (e > worst && dc[q] != 0.f) worst = e;
            if (!(fabs((double)g - dc[q]) <= tol * fabs(dc[q]) + 1e-12 * scale)) bad++;
        }
    }
    CHECK(bad == 0, "BCE gradient vs the CPU's %s path: %ld of %zu elements differ beyond %.0e relative (worst %.2g)",
          what, bad, n, tol, worst);
    /* with the soft-Dice coefficients: gm_loss_grad against nn_bce_grad_row(a, b), and the
     * per-plane sums (gm_sigmoid) against nn_loss_planes */
    long bad2 = 0;
    double worst2 = 0, wsum = 0;
    double *planes = malloc(sizeof(double) * NN_LOSS_PLANE * N * C);
    nn_loss_planes(t, z, bits, pres, NULL, N, C, HW, 1, planes);
    for (int pl = 0; pl < N * C; pl++) {
        const int pr = gm_present(pres, C, pl / C, pl % C);
        const uint8_t *pb = bits + (size_t)pl * (HW / 8);
        const float a = -1e-4f * (float)(pl % 5), b = 3e-5f * (float)(pl % 3);
        nn_bce_grad_row(t, dc, z + (size_t)pl * HW, pb, pr, 0, HW, scale, a, b);
        double sp = 0, si = 0, sy = 0;
        for (int q = 0; q < HW; q++) {
            const int tt = pr && gm_bit(pb, q);
            const float g = gm_loss_grad(z[(size_t)pl * HW + q], tt, scale, a, b), p = gm_sigmoid(z[(size_t)pl * HW + q]);
            sp += p; si += tt ? p : 0.f; sy += tt;
            const double e = fabs((double)g - dc[q]);
            if (dc[q] != 0.f && e / fabs(dc[q]) > worst2) worst2 = e / fabs(dc[q]);
            if (!(e <= tol * fabs(dc[q]) + 1e-12 * scale)) bad2++;
        }
        const double *o = planes + (size_t)pl * NN_LOSS_PLANE;
        wsum = fmax(wsum, fmax(fabs(o[1] - sp) / (sp + 1e-30), fabs(o[2] - si) / (si + 1e-30)) + fabs(o[3] - sy));
    }
    CHECK(bad2 == 0, "BCE + soft-Dice gradient vs the CPU's %s path: %ld of %zu elements differ beyond %.0e relative (worst %.2g)",
          what, bad2, n, tol, worst2);
    CHECK(wsum <= 1e-6, "soft-Dice plane sums (sum p, sum p*t, sum t): gpu_math vs nn_loss_planes rel err %.1e", wsum);
    free(planes);
    /* sign and limit sanity that the CPU comparison cannot show on its own */
    CHECK(gm_bce_grad(100.f, 1, 1.f) == 0.f && fabsf(gm_bce_grad(-100.f, 0, 1.f)) < 1e-40f && gm_bce_grad(0.f, 1, 1.f) == -0.5f,
          "BCE gradient limits: 0 for confident right answers, -0.5 at z = 0 with target 1");
    CHECK(isfinite(gm_bce(-1e6f, 1)) && gm_bce(-1e6f, 1) == 1e6f, "BCE of a huge wrong logit is finite (%g)", gm_bce(-1e6f, 1));
    /* Dice counts: the kernel's per-element rule (z > 0 against present && bit) */
    int64_t tp[11] = { 0 }, fp[11] = { 0 }, fn[11] = { 0 }, tg[11] = { 0 }, fg[11] = { 0 }, ng[11] = { 0 };
    nn_dice_counts(t, z, bits, pres, NULL, N, C, HW, tp, fp, fn);
    for (int pl = 0; pl < N * C; pl++) {
        const int c = pl % C, pr = gm_present(pres, C, pl / C, c);
        for (int q = 0; q < HW; q++) {
            const int p = z[(size_t)pl * HW + q] > 0.f, tt = pr && gm_bit(bits + (size_t)pl * (HW / 8), q);
            tg[c] += p && tt; fg[c] += p && !tt; ng[c] += !p && tt;
        }
    }
    CHECK(!memcmp(tp, tg, sizeof tp) && !memcmp(fp, fg, sizeof fp) && !memcmp(fn, ng, sizeof fn),
          "Dice counts: the kernel rule matches nn_dice_counts for all %d channels", C);
    free(z); free(dc); free(dg); free(bits);
}

static void test_adam(NnTeam *t)
{
    const size_t n = 5000;
    uint64_t s = 11;
    float *p = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n), *m = calloc(n, sizeof(float)),
          *v = calloc(n, sizeof(float));
    float *p2 = malloc(sizeof(float) * n), *m2 = calloc(n, sizeof(float)), *v2 = calloc(n, sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = p2[i] = frand(&s, -1.f, 1.f);
    const double lr = 1e-3, b1 = 0.9f, b2 = 0.999f, eps = 1e-8;   /* segtrain passes floats */
    long bad = 0;
    for (int64_t step = 1; step <= 5; step++) {
        for (size_t i = 0; i < n; i++) g[i] = frand(&s, -1.f, 1.f) * (i % 7 == 0 ? 1e-6f : 1.f);
        nn_adam(t, p, g, m, v, n, lr, b1, b2, eps, step);
        /* the launcher's scalars: 1-beta in double then float, step size and sqrt(bc2) in double */
        const double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
        for (size_t i = 0; i < n; i++)
            gm_adam(p2 + i, m2 + i, v2 + i, g[i], (float)b1, (float)b2, (float)(1.0 - b1), (float)(1.0 - b2), (float)eps,
                    (float)(lr / bc1), (float)sqrt(bc2));
    }
    for (size_t i = 0; i < n; i++) bad += p[i] != p2[i] || m[i] != m2[i] || v[i] != v2[i];
    CHECK(bad == 0, "Adam, 5 steps over %zu parameters: gpu_math bit-identical to nn_adam (%ld differ)", n, bad);
    free(p); free(g); free(m); free(v); free(p2); free(m2); free(v2);
}

static void test_pool(NnTeam *t)
{
    const int N = 2, H = 8, W = 6, C = 5;
    uint64_t s = 3;
    const size_t n = (size_t)N * H * W * C, no = n / 4;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * no);
    uint8_t *idx = malloc(no);
    for (size_t i = 0; i < n; i++) x[i] = (float)(t_rand(&s) % 4);      /* many ties */
    NnAct a = { .x = x, .ld = C, .C = C };
    nn_maxpool_forward(t, y, C, idx, &a, N, H, W);
    long bad = 0;
    for (int b = 0; b < N; b++)
        for (int i = 0; i < H / 2; i++)
            for (int j = 0; j < W / 2; j++)
                for (int c = 0; c < C; c++) {
                    const float *p = x + (((size_t)b * H + 2 * i) * W + 2 * j) * C + c;
                    const size_t o = (((size_t)b * (H / 2) + i) * (W / 2) + j) * C + c;
                    const int k = gm_argmax4(p[0], p[C], p[(size_t)W * C], p[(size_t)W * C + C]);
                    bad += k != idx[o];
                }
    CHECK(bad == 0, "max-pool argmax with ties: gpu_math picks the CPU backend's element (%ld differ of %zu)", bad, no);
    CHECK(gm_argmax4(1.f, 1.f, 1.f, 1.f) == 0 && gm_argmax4(0.f, 2.f, 2.f, 1.f) == 1 && gm_argmax4(0.f, 0.f, 0.f, 3.f) == 3,
          "max-pool argmax: first maximum wins");
    free(x); free(y); free(idx);
}

int main(void)
{
    NnTeam *t = NULL;
    setenv("SEGKIT_NN_GENERIC", "1", 1);
    if (nn_team_create(1, NN_SCRATCH_DEFAULT, 1 << 16, &t) < 0) { printf("FAIL team: %s\n", seg_errmsg()); return 1; }
    test_bce(t, 1e-6, "portable");
    nn_team_free(t);
    unsetenv("SEGKIT_NN_GENERIC");
    if (nn_team_create(2, NN_SCRATCH_DEFAULT, 1 << 16, &t) < 0) { printf("FAIL team: %s\n", seg_errmsg()); return 1; }
    if (!nn_team_generic(t)) test_bce(t, 5e-5, "AVX-512");
    test_adam(t);
    test_pool(t);
    nn_team_free(t);
    return t_report("test_gpu_math");
}
