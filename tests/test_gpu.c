/* tests/test_gpu.c : GPU backend parity with the CPU backend (the reference). Same init, same
 * batch: forward logits (train and eval mode), loss, every gradient tensor, the BatchNorm
 * running statistics, one Adam step and the Dice counts, for fp32 and the reduced-precision
 * modes, at the full batch and a smaller one; for the BCE loss and (fp32, fp16 loss scaling)
 * BCE + soft Dice, whose two parts (unet_loss_parts) must agree too. Skips (exit 77) with the reason when the build
 * has no CUDA backend or the machine no usable GPU; test_gpu_emu is this test linked with the
 * CUDA emulator (tests/cuemu), which runs it everywhere.
 *
 * fp32: per tensor, max |gpu - cpu| / max |cpu| <= 1e-4 (cuDNN with FMA math, no TF32;
 * cuBLAS pedantic fp32).
 * bf16, fp16, tf32: logits, loss, BatchNorm buffers and Adam within 6e-2 (bf16) or 2e-2
 * (fp16, tf32) on the same scale. Gradients need another yardstick: at a random init the
 * weight gradients behind BatchNorm are small differences of large sums, and a ReLU or
 * max-pool decision flipped by rounding moves them a lot. Rounding the CPU model's own
 * weights by the mode's unit roundoff (2^-8 bf16, 2^-11 fp16 and tf32) already moves its
 * gradients by 5-40% (relative L2) in these cases. So each gradient tensor's relative L2
 * error must stay within GRAD_FACTOR times what that weight perturbation does to it on the
 * CPU (RMS of two perturbations): the mode must not be noisier than rounding its weights
 * makes unavoidable (the emulator measures 1 to 3 times: AMP also rounds activations). A
 * wrong layout or a lost term gives errors of order 1 and more. Adam is checked on the same
 * gradients (the GPU's, handed to the CPU model), so it must agree to rounding in every mode.
 * The fp32 cases are sized so that the CPU's own gradients are well conditioned (a batch of 2
 * at 64x64 is not: BatchNorm over 2x4x4 bottleneck values moves its gradients by 2e-3 when
 * the weights move by 1e-7). */
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

/* sqrt(sum (a - ref)^2 / sum ref^2) */
static double rel_l2(const float *a, const float *ref, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

#define GRAD_FACTOR 4.0

typedef struct Case { const char *name; int L, f0, C, H, N; } Case;

/* Gradients of a CPU model like `ref` (same init) whose every weight was multiplied by
 * (1 + eps * u), u uniform in [-1, 1], on the same batch; NULL on failure. */
static float *perturbed_grads(const UnetConfig *cfg, const Case *k, int kind, double eps, uint64_t seed, const float *x,
                              const uint8_t *bits, const uint8_t *pres)
{
    Unet *m = NULL;
    if (unet_create(cfg, k->N, k->H, k->H, 2, &m) < 0) return NULL;
    unet_init(m, 17);
    unet_set_loss(m, kind);
    float *p = unet_params(m), *out = NULL;
    const size_t np = unet_n_params(m);
    uint64_t s = seed;
    for (size_t i = 0; i < np; i++) p[i] *= (float)(1.0 + eps * ((double)(t_rand(&s) >> 11) * (2.0 / 9007199254740992.0) - 1.0));
    float l;
    if (unet_forward(m, x, k->N, 1) == SEG_OK && unet_loss(m, bits, pres, k->N, &l) == SEG_OK && unet_backward(m) == SEG_OK &&
        (out = malloc(sizeof(float) * np)))
        memcpy(out, unet_grads(m), sizeof(float) * np);
    unet_free(m);
    return out;
}

static void run_case(const Case *k, int amp, double tol, int kind)
{
    char tag[112];
    snprintf(tag, sizeof tag, "%s %s, loss %s", k->name, unet_amp_name(amp), unet_loss_name(kind));
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
    unet_set_loss(cpu, kind);
    unet_set_loss(gpu, kind);
    const int C = k->C, N = k->N, H = k->H, CB = (C + 7) / 8;
    const size_t HW = (size_t)H * H, nl = (size_t)N * C * HW;
    uint64_t s = 99;
    float *x = malloc(sizeof(float) * N * HW), *lc = malloc(sizeof(float) * nl);
    uint8_t *bits = malloc(nl / 8), *pres = malloc((size_t)N * CB), *lab = malloc((size_t)N * CB);
    for (size_t i = 0; i < (size_t)N * HW; i++) x[i] = (float)((t_rand(&s) >> 40) * (2.0 / 16777216.0) - 1.0);
    for (size_t i = 0; i < nl / 8; i++) bits[i] = (uint8_t)(t_rand(&s) & t_rand(&s));
    for (int i = 0; i < N * CB; i++) pres[i] = (uint8_t)t_rand(&s);
    if (kind != UNET_LOSS_BCE)                   /* channel 1 without targets in the batch: left out of the Dice mean */
        for (int n = 0; n < N; n++) pres[n * CB] &= (uint8_t)~2u;

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
    if (kind != UNET_LOSS_BCE) {
        double bc, dc, bg, dg;
        unet_loss_parts(cpu, &bc, &dc);
        unet_loss_parts(gpu, &bg, &dg);
        CHECK(fabs(bg - bc) <= tol * 0.1 * bc && fabs(dg - dc) <= tol * 0.1 * dc && dc > 0, "%s: loss parts bce %.7f dice %.7f "
              "vs CPU %.7f %.7f", tag, bg, dg, bc, dc);
    }

    /* backward: every gradient tensor */
    rc = unet_backward(cpu);
    if (rc == SEG_OK) rc = unet_backward(gpu);
    if (rc == SEG_OK) rc = unet_sync_host(gpu);
    CHECK(rc == SEG_OK, "%s: backward ran (%s)", tag, rc ? seg_errmsg() : "ok");
    if (rc < 0) goto out;
    const double eps = amp == UNET_AMP_BF16 ? 0x1p-8 : 0x1p-11;
    float *pg = amp == UNET_AMP_OFF ? NULL : perturbed_grads(&cfg, k, kind, eps, 1234, x, bits, pres);
    float *pg2 = amp == UNET_AMP_OFF ? NULL : perturbed_grads(&cfg, k, kind, eps, 5678, x, bits, pres);
    CHECK(amp == UNET_AMP_OFF || (pg && pg2), "%s: gradients of the CPU model with weights perturbed by %.1e, twice (%s)",
          tag, eps, pg && pg2 ? "ok" : seg_errmsg());
    int bad = 0;
    double worst = 0, worst_sens = 0;
    const char *worst_name = "";
    for (int i = 0; i < unet_n_tensors(cpu); i++) {
        const UnetTensor *tc = unet_tensor(cpu, i), *tg = unet_tensor(gpu, i);
        if (!tc->trainable) continue;
        const float *gg = unet_grads(gpu) + tg->offset, *gc = unet_grads(cpu) + tc->offset;
        if (amp == UNET_AMP_OFF) {
            e = max_rel(gg, gc, tc->count);
            if (!(e <= tol)) { bad++; printf("  grad %s rel err %.2e\n", tc->name, e); }
            if (!(e <= worst)) { worst = e; worst_name = tc->name; }
        } else if (pg && pg2) {
            const double s1 = rel_l2(pg + tc->offset, gc, tc->count), s2 = rel_l2(pg2 + tc->offset, gc, tc->count);
            const double sens = sqrt(0.5 * (s1 * s1 + s2 * s2)), r = rel_l2(gg, gc, tc->count) / (sens + 1e-6);
            printf("  grad %-28s rel L2 %.2e, weights perturbed on the CPU %.2e (ratio %.2f)\n", tc->name,
                   rel_l2(gg, gc, tc->count), sens, r);
            if (!(r <= GRAD_FACTOR)) bad++;
            if (!(r <= worst)) { worst = r; worst_sens = sens; worst_name = tc->name; }
        }
    }
    if (amp == UNET_AMP_OFF)
        CHECK(bad == 0, "%s: all gradient tensors within %.0e (worst %.2e: %s)", tag, tol, worst, worst_name);
    else
        CHECK(bad == 0 && pg && pg2, "%s: all gradient tensors within %.0f x the CPU's own change under weights perturbed by %.1e "
              "(worst ratio %.2f: %s, whose perturbed change is %.2e)", tag, GRAD_FACTOR, eps, worst, worst_name, worst_sens);
    free(pg);
    free(pg2);
    /* partly labelled samples: a random labelled bitmap, the last sample with nothing labelled
     * (the loss's gradient there must be zero on both) */
    for (int i = 0; i < N * CB; i++) lab[i] = i / CB == N - 1 ? 0 : (uint8_t)t_rand(&s);
    if (kind != UNET_LOSS_BCE) {
        rc = unet_loss_masked(cpu, bits, pres, lab, N, &l_cpu);
        if (rc == SEG_OK) rc = unet_loss_masked(gpu, bits, pres, lab, N, &l_gpu);
        CHECK(rc == SEG_OK && fabs(l_gpu - l_cpu) <= tol * 0.1 * fabs(l_cpu), "%s: masked loss %.7f vs CPU %.7f", tag,
              rc ? NAN : l_gpu, rc ? NAN : l_cpu);
        if (rc == SEG_OK) rc = unet_backward(cpu);
        if (rc == SEG_OK) rc = unet_backward(gpu);
        if (rc == SEG_OK) rc = unet_sync_host(gpu);
        CHECK(rc == SEG_OK, "%s: masked backward ran (%s)", tag, rc ? seg_errmsg() : "ok");
        if (rc < 0) goto out;
        if (amp == UNET_AMP_OFF) {
            bad = 0;
            worst = 0;
            for (int i = 0; i < unet_n_tensors(cpu); i++) {
                const UnetTensor *tc = unet_tensor(cpu, i), *tg = unet_tensor(gpu, i);
                if (!tc->trainable) continue;
                e = max_rel(unet_grads(gpu) + tg->offset, unet_grads(cpu) + tc->offset, tc->count);
                if (!(e <= tol)) { bad++; printf("  masked grad %s rel err %.2e\n", tc->name, e); }
                if (!(e <= worst)) { worst = e; worst_name = tc->name; }
            }
            CHECK(bad == 0, "%s: masked loss, all gradient tensors within %.0e (worst %.2e: %s)", tag, tol, worst, worst_name);
        }
    }
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

    /* one Adam step from the same gradients (the GPU's, given to the CPU model too): the
     * update rule itself must agree to rounding, whatever the precision of the gradients */
    const float lr = 1e-2f;             /* large enough that stale weights anywhere show in the eval logits */
    const size_t np = unet_n_params(cpu);
    memcpy(unet_grads(cpu), unet_grads(gpu), sizeof(float) * np);
    int sc = unet_adam_step(cpu, lr, 0.9f, 0.999f, 1e-8f), sg = unet_adam_step(gpu, lr, 0.9f, 0.999f, 1e-8f);
    rc = sc < 0 ? sc : sg < 0 ? sg : unet_sync_host(gpu);
    CHECK(rc == SEG_OK && sg == 0 && *unet_adam_step_count(gpu) == 1, "%s: Adam step taken (%s)", tag, rc ? seg_errmsg() : "ok");
    if (rc < 0) goto out;
    long nbad = 0;
    for (size_t i = 0; i < np; i++)
        if (!(fabs(unet_params(gpu)[i] - unet_params(cpu)[i]) <= 1e-3 * lr + 1e-6 * fabs(unet_params(cpu)[i]))) nbad++;
    e = fmax(max_rel(unet_adam_m(gpu), unet_adam_m(cpu), np), max_rel(unet_adam_v(gpu), unet_adam_v(cpu), np));
    CHECK(nbad == 0 && e <= 1e-6, "%s: Adam on the same gradients: %ld of %zu parameters differ by more than lr/1000; "
          "moments rel err %.2e", tag, nbad, np, e);

    /* eval mode (running statistics), at a smaller batch than the model holds */
    const int Ne = N > 1 ? N - 1 : 1;
    rc = unet_forward(cpu, x, Ne, 0);
    if (rc == SEG_OK) rc = unet_forward(gpu, x, Ne, 0);
    lg = rc == SEG_OK ? unet_logits(gpu) : NULL;
    CHECK(lg != NULL, "%s: forward (eval, batch %d) ran (%s)", tag, Ne, lg ? "ok" : seg_errmsg());
    if (!lg) goto out;
    e = max_rel(lg, unet_logits(cpu), (size_t)Ne * C * HW);
    /* eval mode normalises with fixed statistics: reduced precision moves the logits less than
     * in training (measured 5 to 15 times less), so stale half weights after the step show */
    const double tol_eval = amp == UNET_AMP_OFF ? tol : tol / 5;
    CHECK(e <= tol_eval, "%s: logits (eval mode, batch %d, after the Adam step) rel err %.2e <= %.0e", tag, Ne, e, tol_eval);
    int64_t *cnt = calloc((size_t)6 * C, sizeof(int64_t));
    rc = unet_dice_counts(cpu, bits, pres, Ne, cnt, cnt + C, cnt + 2 * C);
    if (rc == SEG_OK) rc = unet_dice_counts(gpu, bits, pres, Ne, cnt + 3 * C, cnt + 4 * C, cnt + 5 * C);
    int64_t diff = 0;
    for (int i = 0; i < 3 * C; i++) diff += llabs(cnt[i] - cnt[3 * C + i]);
    /* only pixels whose logit sits within rounding of 0 may flip */
    const int64_t allow = (int64_t)(tol * 10 * (double)Ne * C * HW) + 2;
    CHECK(rc == SEG_OK && diff <= allow, "%s: Dice counts differ by %lld (<= %lld pixels near the threshold)", tag,
          (long long)diff, (long long)allow);
    /* masked: the same, and nothing counted for the planes left out */
    memset(cnt, 0, sizeof(int64_t) * 6 * C);
    rc = unet_dice_counts_masked(cpu, bits, pres, lab, Ne, cnt, cnt + C, cnt + 2 * C);
    if (rc == SEG_OK) rc = unet_dice_counts_masked(gpu, bits, pres, lab, Ne, cnt + 3 * C, cnt + 4 * C, cnt + 5 * C);
    int64_t *all = calloc((size_t)3 * C, sizeof(int64_t)), fewer = 1;
    if (rc == SEG_OK) rc = unet_dice_counts(cpu, bits, pres, Ne, all, all + C, all + 2 * C);
    diff = 0;
    for (int i = 0; i < 3 * C; i++) { diff += llabs(cnt[i] - cnt[3 * C + i]); fewer &= cnt[i] <= all[i]; }
    CHECK(rc == SEG_OK && diff <= allow && fewer, "%s: masked Dice counts differ by %lld (<= %lld), none above the unmasked",
          tag, (long long)diff, (long long)allow);
    free(all);
    free(cnt);
out:
    free(x); free(lc); free(bits); free(pres); free(lab);
    unet_free(cpu);
    unet_free(gpu);
}

/* Several training steps in a row, a new batch each (both input and target slots are
 * reused), with gradient clipping, and Dice counts on other targets between the loss and the
 * backward (the backward must still use the loss's targets): every step's loss, clip norm
 * and Dice counts, and the final eval logits, agree with the CPU. Then three eval forwards
 * queued back to back with no wait between them (as an inference loop does): the logits are
 * the last batch's. */
static void run_steps(const Case *k, int steps, int kind)
{
    char tag[112];
    snprintf(tag, sizeof tag, "%s fp32, loss %s, %d steps", k->name, unet_loss_name(kind), steps);
    UnetConfig cfg;
    unet_default_config(&cfg, k->C);
    cfg.n_levels = k->L;
    for (int l = 0; l < k->L; l++) cfg.features[l] = k->f0 << l;
    UnetDevice dev = { UNET_CUDA, 0, UNET_AMP_OFF };
    Unet *m[2] = { NULL, NULL };
    int rc = unet_create(&cfg, k->N, k->H, k->H, 2, &m[0]);
    if (rc == SEG_OK) rc = unet_create_on(&cfg, k->N, k->H, k->H, 0, &dev, &m[1]);
    CHECK(rc == SEG_OK, "%s: models created (%s)", tag, rc ? seg_errmsg() : "ok");
    if (rc < 0) { unet_free(m[0]); unet_free(m[1]); return; }
    const int C = k->C, N = k->N, CB = (C + 7) / 8;
    const size_t HW = (size_t)k->H * k->H, nl = (size_t)N * C * HW;
    float *x = malloc(sizeof(float) * N * HW);
    uint8_t *bits = malloc(nl / 8), *dbits = malloc(nl / 8), *pres = malloc((size_t)N * CB);
    int64_t *cnt = malloc(sizeof(int64_t) * 6 * C);
    double worst_loss = 0, worst_norm = 0;
    int64_t dice_diff = 0;
    for (int i = 0; i < 2; i++) { unet_init(m[i], 23); unet_set_loss(m[i], kind); }
    for (int t = 0; t < steps && rc == SEG_OK; t++) {
        uint64_t s = 1000 + t;
        for (size_t i = 0; i < (size_t)N * HW; i++) x[i] = (float)((t_rand(&s) >> 40) * (2.0 / 16777216.0) - 1.0);
        for (size_t i = 0; i < nl / 8; i++) { bits[i] = (uint8_t)(t_rand(&s) & t_rand(&s)); dbits[i] = (uint8_t)t_rand(&s); }
        for (int i = 0; i < N * CB; i++) pres[i] = (uint8_t)t_rand(&s);
        memset(cnt, 0, sizeof(int64_t) * 6 * C);
        float loss[2] = { 0, 0 }, norm[2] = { 0, 0 };
        for (int i = 0; i < 2 && rc == SEG_OK; i++) {
            rc = unet_forward(m[i], x, N, 1);
            if (rc == SEG_OK) rc = unet_loss(m[i], bits, pres, N, &loss[i]);
            if (rc == SEG_OK) rc = unet_dice_counts(m[i], dbits, pres, N, cnt + 3 * i * C, cnt + (3 * i + 1) * C, cnt + (3 * i + 2) * C);
            if (rc == SEG_OK) rc = unet_backward(m[i]);
            if (rc == SEG_OK) norm[i] = unet_clip_grad(m[i], 0.5f);
            if (rc == SEG_OK && unet_adam_step(m[i], 1e-3f, 0.9f, 0.999f, 1e-8f) < 0) rc = SEG_EGPU;
        }
        worst_loss = fmax(worst_loss, fabs(loss[1] - loss[0]) / fabs(loss[0]));
        worst_norm = fmax(worst_norm, fabs(norm[1] - norm[0]) / fabs(norm[0]));
        for (int i = 0; i < 3 * C; i++) dice_diff += llabs(cnt[i] - cnt[3 * C + i]);
        printf("  step %d: loss %.7f / %.7f, norm %.6g / %.6g, dice diff %lld\n", t, loss[0], loss[1], norm[0], norm[1], (long long)dice_diff);
    }
    CHECK(rc == SEG_OK, "%s: ran (%s)", tag, rc ? seg_errmsg() : "ok");
    CHECK(worst_loss <= 1e-5 && worst_norm <= 1e-4, "%s: every step's loss (worst rel err %.1e) and clipped gradient norm "
          "(%.1e) as on the CPU", tag, worst_loss, worst_norm);
    CHECK(dice_diff <= 2 * steps, "%s: Dice counts on other targets between loss and backward differ by %lld pixels",
          tag, (long long)dice_diff);
    const float *lg = rc == SEG_OK && unet_forward(m[1], x, N, 0) == SEG_OK ? unet_logits(m[1]) : NULL;
    if (lg && unet_forward(m[0], x, N, 0) == SEG_OK) {
        const double e = max_rel(lg, unet_logits(m[0]), nl);
        CHECK(e <= 1e-3, "%s: eval logits after the steps rel err %.2e <= 1e-3", tag, e);
    } else CHECK(0, "%s: eval forward after the steps (%s)", tag, seg_errmsg());
    float *xs = malloc(sizeof(float) * 3 * N * HW);
    uint64_t s = 77;
    for (size_t i = 0; i < 3 * (size_t)N * HW; i++) xs[i] = (float)((t_rand(&s) >> 40) * (2.0 / 16777216.0) - 1.0);
    rc = SEG_OK;
    for (int b = 0; b < 3 && rc == SEG_OK; b++) rc = unet_forward(m[1], xs + (size_t)b * N * HW, N, 0);
    lg = rc == SEG_OK ? unet_logits(m[1]) : NULL;
    if (lg && unet_forward(m[0], xs + 2 * (size_t)N * HW, N, 0) == SEG_OK) {
        const double e = max_rel(lg, unet_logits(m[0]), nl);
        CHECK(e <= 1e-3, "%s: three eval forwards back to back: the last batch's logits, rel err %.2e", tag, e);
    } else CHECK(0, "%s: three eval forwards back to back (%s)", tag, seg_errmsg());
    free(xs);
    free(x); free(bits); free(dbits); free(pres); free(cnt);
    unet_free(m[0]);
    unet_free(m[1]);
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
        { "segkit default (32..256; 117 classes; 32x32; batch 4)", 4, 32, 117, 32, 4 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i], UNET_AMP_OFF, 1e-4, UNET_LOSS_BCE);
        run_case(&cases[i], UNET_AMP_BF16, 6e-2, UNET_LOSS_BCE);
        run_case(&cases[i], UNET_AMP_FP16, 2e-2, UNET_LOSS_BCE);
        run_case(&cases[i], UNET_AMP_TF32, 2e-2, UNET_LOSS_BCE);
    }
    /* BCE + soft Dice: fp32 on both cases; fp16 scales both terms of the loss */
    run_case(&cases[0], UNET_AMP_OFF, 1e-4, UNET_LOSS_BCE_DICE);
    run_case(&cases[1], UNET_AMP_OFF, 1e-4, UNET_LOSS_BCE_DICE);
    run_case(&cases[0], UNET_AMP_FP16, 2e-2, UNET_LOSS_BCE_DICE);
    run_steps(&cases[0], 6, UNET_LOSS_BCE);
    run_steps(&cases[0], 3, UNET_LOSS_BCE_DICE);
    return t_report("test_gpu");
}
