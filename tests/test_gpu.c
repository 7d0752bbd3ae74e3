/* tests/test_gpu.c : GPU backend parity with the CPU backend (the reference). Same init, same
 * batch: forward logits (train and eval mode), loss, every gradient tensor, the BatchNorm
 * running statistics, one Adam step and the Dice counts, for fp32 and both AMP modes, at the
 * full batch and a smaller one. Skips (exit 77) with the reason when the build has no CUDA
 * backend or the machine no usable GPU.
 *
 * Bounds, per tensor, as max |gpu - cpu| / max |cpu|:
 *   fp32 1e-4 (cuDNN with FMA math, no TF32; cuBLAS pedantic fp32);
 *   bf16 6e-2, fp16 and tf32 2e-2: the convolutions see inputs and weights rounded to 8 (bf16)
 *   or 11 (fp16, tf32) mantissa bits, which moves logits and gradients by about 2^-8 and
 *   2^-11 of their scale per layer; the measured maxima are printed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "unet.h"
#include "testutil.h"

static double max_rel(const float *a, const float *ref, size_t n)
{
    double mx = 0, d = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
        const double e = fabs((double)a[i] - ref[i]);
        if (!(e <= d)) d = e;                  /* NaN propagates */
    }
    return mx > 0 ? d / mx : d;
}

typedef struct Case { const char *name; int L, f0, C, H, N; } Case;

static void run_case(const Case *k, int amp, double tol)
{
    char tag[96];
    snprintf(tag, sizeof tag, "%s %s", k->name, unet_amp_name(amp));
    UnetConfig cfg;
    unet_default_config(&cfg, k->C);
    cfg.n_levels = k->L;
    for (int l = 0; l < k->L; l++) cfg.features[l] = k->f0 << l;
    UnetDevice dev = { UNET_CUDA, 0, amp };
    Unet *cpu = NULL, *gpu = NULL;
    int rc = unet_create(&cfg, k->N, k->H, k->H, 2, &cpu);
    if (rc == SEG_OK) rc = unet_create_on(&cfg, k->N, k->H, k->H, 0, &dev, &gpu);
    CHECK(rc == SEG_OK, "%s: models created (%s)", tag, rc ? seg_errmsg() : "ok");
    if (rc < 0) { unet_free(cpu); unet_free(gpu); return; }
    unet_init(cpu, 17);
    unet_init(gpu, 17);
    const int C = k->C, N = k->N, H = k->H, CB = (C + 7) / 8;
    const size_t HW = (size_t)H * H, nl = (size_t)N * C * HW;
    uint64_t s = 99;
    float *x = malloc(sizeof(float) * N * HW), *lc = malloc(sizeof(float) * nl);
    uint8_t *bits = malloc(nl / 8), *pres = malloc((size_t)N * CB);
    for (size_t i = 0; i < (size_t)N * HW; i++) x[i] = (float)((t_rand(&s) >> 40) * (2.0 / 16777216.0) - 1.0);
    for (size_t i = 0; i < nl / 8; i++) bits[i] = (uint8_t)(t_rand(&s) & t_rand(&s));
    for (int i = 0; i < N * CB; i++) pres[i] = (uint8_t)t_rand(&s);

    /* forward, train mode */
    rc = unet_forward(cpu, x, N, 1);
    if (rc == SEG_OK) rc = unet_forward(gpu, x, N, 1);
    const float *lg = rc == SEG_OK ? unet_logits(gpu) : NULL;
    CHECK(lg != NULL, "%s: forward (train) ran (%s)", tag, lg ? "ok" : seg_errmsg());
    if (!lg) goto out;
    memcpy(lc, unet_logits(cpu), sizeof(float) * nl);
    double e = max_rel(lg, lc, nl);
    CHECK(e <= tol, "%s: logits (train mode) rel err %.2e <= %.0e", tag, e, tol);
    float l_cpu, l_gpu;
    rc = unet_loss(cpu, bits, pres, N, &l_cpu);
    if (rc == SEG_OK) rc = unet_loss(gpu, bits, pres, N, &l_gpu);
    CHECK(rc == SEG_OK && fabs(l_gpu - l_cpu) <= tol * 0.1 * fabs(l_cpu), "%s: loss %.7f vs CPU %.7f", tag,
          rc ? NAN : l_gpu, rc ? NAN : l_cpu);

    /* backward: every gradient tensor */
    rc = unet_backward(cpu);
    if (rc == SEG_OK) rc = unet_backward(gpu);
    if (rc == SEG_OK) rc = unet_sync_host(gpu);
    CHECK(rc == SEG_OK, "%s: backward ran (%s)", tag, rc ? seg_errmsg() : "ok");
    if (rc < 0) goto out;
    int bad = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < unet_n_tensors(cpu); i++) {
        const UnetTensor *tc = unet_tensor(cpu, i), *tg = unet_tensor(gpu, i);
        if (!tc->trainable) continue;
        e = max_rel(unet_grads(gpu) + tg->offset, unet_grads(cpu) + tc->offset, tc->count);
        if (!(e <= tol)) { bad++; printf("  grad %s rel err %.2e\n", tc->name, e); }
        if (!(e <= worst)) { worst = e; worst_name = tc->name; }
    }
    CHECK(bad == 0, "%s: all gradient tensors within %.0e (worst %.2e: %s)", tag, tol, worst, worst_name);
    /* BatchNorm buffers after one training forward */
    bad = 0;
    worst = 0;
    for (int i = 0; i < unet_n_tensors(cpu); i++) {
        const UnetTensor *tc = unet_tensor(cpu, i), *tg = unet_tensor(gpu, i);
        if (tc->trainable) continue;
        e = max_rel(tg->data, tc->data, tc->count);
        if (!(e <= tol)) { bad++; printf("  buffer %s rel err %.2e\n", tc->name, e); }
        if (!(e <= worst)) worst = e;
    }
    CHECK(bad == 0, "%s: BatchNorm running mean/var and counters within %.0e (worst %.2e)", tag, tol, worst);

    /* one Adam step: where the gradient is clearly non-zero the update is the same */
    const float lr = 1e-3f;
    int sc = unet_adam_step(cpu, lr, 0.9f, 0.999f, 1e-8f), sg = unet_adam_step(gpu, lr, 0.9f, 0.999f, 1e-8f);
    rc = sc < 0 ? sc : sg < 0 ? sg : unet_sync_host(gpu);
    CHECK(rc == SEG_OK && sg == 0 && *unet_adam_step_count(gpu) == 1, "%s: Adam step taken (%s)", tag, rc ? seg_errmsg() : "ok");
    if (rc < 0) goto out;
    long nbad = 0, nchk = 0;
    const size_t np = unet_n_params(cpu);
    double gmax = 0;
    for (size_t i = 0; i < np; i++) if (fabs(unet_grads(cpu)[i]) > gmax) gmax = fabs(unet_grads(cpu)[i]);
    for (size_t i = 0; i < np; i++) {
        if (fabs(unet_grads(cpu)[i]) < 1e-2 * gmax) continue;
        nchk++;
        if (!(fabs(unet_params(gpu)[i] - unet_params(cpu)[i]) <= 20 * tol * lr + 1e-6 * fabs(unet_params(cpu)[i]))) nbad++;
    }
    e = max_rel(unet_adam_m(gpu), unet_adam_m(cpu), np);
    CHECK(nbad == 0 && e <= tol, "%s: Adam: %ld of %ld checked parameters differ; first moment rel err %.2e", tag, nbad, nchk, e);

    /* eval mode (running statistics), at a smaller batch than the model holds */
    const int Ne = N > 1 ? N - 1 : 1;
    rc = unet_forward(cpu, x, Ne, 0);
    if (rc == SEG_OK) rc = unet_forward(gpu, x, Ne, 0);
    lg = rc == SEG_OK ? unet_logits(gpu) : NULL;
    CHECK(lg != NULL, "%s: forward (eval, batch %d) ran (%s)", tag, Ne, lg ? "ok" : seg_errmsg());
    if (!lg) goto out;
    e = max_rel(lg, unet_logits(cpu), (size_t)Ne * C * HW);
    CHECK(e <= tol, "%s: logits (eval mode, batch %d) rel err %.2e <= %.0e", tag, Ne, e, tol);
    int64_t *cnt = calloc((size_t)6 * C, sizeof(int64_t));
    rc = unet_dice_counts(cpu, bits, pres, Ne, cnt, cnt + C, cnt + 2 * C);
    if (rc == SEG_OK) rc = unet_dice_counts(gpu, bits, pres, Ne, cnt + 3 * C, cnt + 4 * C, cnt + 5 * C);
    int64_t diff = 0;
    for (int i = 0; i < 3 * C; i++) diff += llabs(cnt[i] - cnt[3 * C + i]);
    /* only pixels whose logit sits within rounding of 0 may flip */
    const int64_t allow = (int64_t)(tol * 10 * (double)Ne * C * HW) + 2;
    CHECK(rc == SEG_OK && diff <= allow, "%s: Dice counts differ by %lld (<= %lld pixels near the threshold)", tag,
          (long long)diff, (long long)allow);
    free(cnt);
out:
    free(x); free(lc); free(bits); free(pres);
    unet_free(cpu);
    unet_free(gpu);
}

int main(void)
{
    if (!unet_have_cuda()) {
        printf("skip: this build has no CUDA backend (no CUDA toolkit at build time, or GPU=0)\n");
        return 77;
    }
    UnetDevice d = { UNET_CUDA, 0, 0 };
    char desc[256];
    if (unet_device_resolve(&d, desc, sizeof desc) < 0) {
        printf("skip: no usable GPU: %s\n", seg_errmsg());
        return 77;
    }
    printf("device: %s\n", desc);
    const Case cases[] = {
        { "small (8,16; 5 classes; 32x32; batch 3)", 2, 8, 5, 32, 3 },
        { "segkit default (32..256; 117 classes; 64x64; batch 2)", 4, 32, 117, 64, 2 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i], UNET_AMP_OFF, 1e-4);
        run_case(&cases[i], UNET_AMP_BF16, 6e-2);
        run_case(&cases[i], UNET_AMP_FP16, 2e-2);
        run_case(&cases[i], UNET_AMP_TF32, 2e-2);
    }
    return t_report("test_gpu");
}
