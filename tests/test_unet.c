/* tests/test_unet.c : the whole U-Net against PyTorch (tests/fixtures/nn/unet_l2.bin and
 * unet_l3.bin, from tools/make_nn_fixtures.py = tools/unet_ref.py): state-dict names and
 * order, logits, loss, Dice counts, every parameter gradient, BN running stats, the
 * parameters after one Adam step, and eval-mode logits (running stats); once with the
 * AVX-512 kernels on 2 threads and once with the portable kernels on 1. Also: central
 * finite differences of a few gradients, bit-identical gradients on a repeat, eval forward
 * leaves the running stats alone, same seed -> same init (within PyTorch's init bounds),
 * SEG_EARG for bad shapes and call order, gradient clipping, the default model's size and
 * FLOPs (7,766,293 params, 24.553 GFLOP), and a small model learning a toy task. unet_dice.bin
 * is the same check for the BCE + soft-Dice loss (docs/loss.md; one channel without targets
 * in the batch, one absent plane), loss parts included; the loss-kind API is checked too.
 * Tolerances (fp32 vs PyTorch fp32, different summation orders): logits/params rtol 1e-4 +
 * atol 1e-5*max|ref|; gradients rtol 1e-3 + atol 1e-4*max|ref| of the tensor (they pass
 * through up to 2L+2 BatchNorms, where the batch-statistics backward cancels); measured
 * worst gradient error is ~5e-6 of max|ref|. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "maskpack.h"
#include "nn_tfile.h"
#include "testutil.h"
#include "unet.h"

static NnTFile *g_fx;

static const float *fx(const char *name, size_t *n)
{
    const float *p = nn_tfile_get(g_fx, name, n, NULL, NULL);
    if (!p) { printf("FAIL fixture tensor %s missing\n", name); exit(1); }
    return p;
}

/* worst |got-ref| against atol + rtol*|ref|, atol = afrac*max|ref| */
static int close_to(const char *tag, const float *got, const float *ref, size_t n, double afrac, double rtol, int quiet)
{
    double mx = 0;
    for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    const double atol = afrac * mx + 1e-30;
    size_t bad = 0, wi = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= atol + rtol * fabs(ref[i]))) {
            if (bad < 3) printf("    %s[%zu] got %.8g ref %.8g\n", tag, i, got[i], ref[i]);
            bad++;
        }
        if (!(d <= worst)) { worst = d; wi = i; }
    }
    if (!quiet || bad)
        CHECK(bad == 0, "%-44s n=%-6zu max|d|=%.3g at %zu (max|ref| %.3g)", tag, n, worst, wi, mx);
    return bad == 0;
}


static int load_state(Unet *m, const char *prefix)
{
    int ok = 1;
    char nm[160];
    for (int i = 0; i < unet_n_tensors(m); i++) {
        const UnetTensor *t = unet_tensor(m, i);
        size_t n;
        snprintf(nm, sizeof nm, "%s.%s", prefix, t->name);
        const float *src = nn_tfile_get(g_fx, nm, &n, NULL, NULL);
        if (!src || n != t->count) { printf("    %s: %s\n", nm, src ? "size differs" : "missing"); ok = 0; continue; }
        memcpy(t->data, src, sizeof(float) * n);
    }
    return ok;
}

/* The model's loss (kind UNET_LOSS_*) in double from its logits, straight from the
 * definition (independent of nn_loss.c): BCE-with-logits mean and/or the soft-Dice term */
static double loss_at(Unet *m, const float *x, int N, const float *t, size_t n, int kind, int C)
{
    unet_forward(m, x, N, 1);
    const float *z = unet_logits(m);
    const size_t HW = n / ((size_t)N * C);
    double s = 0, dsum = 0;
    int ns = 0;
    for (size_t i = 0; i < n; i++) {
        const double v = z[i];
        s += (v > 0 ? v : 0) - v * t[i] + log1p(exp(-fabs(v)));
    }
    for (int c = 0; c < C; c++) {
        double P = 0, I = 0, Y = 0;
        for (int k = 0; k < N; k++)
            for (size_t q = 0; q < HW; q++) {
                const size_t i = ((size_t)k * C + c) * HW + q;
                const double p = 1.0 / (1.0 + exp(-(double)z[i]));
                P += p; I += p * t[i]; Y += t[i];
            }
        if (Y > 0) { ns++; dsum += (2 * I + 1e-5) / (P + Y + 1e-5); }
    }
    const double bce = s / (double)n, dice = ns ? 1.0 - dsum / ns : 0.0;
    return kind == UNET_LOSS_BCE ? bce : kind == UNET_LOSS_DICE ? dice : bce + dice;
}

static void t_fixture(const char *path, int threads, int kind)
{
    if (nn_tfile_read(path, &g_fx) < 0) { CHECK(0, "read %s: %s", path, seg_errmsg()); return; }
    size_t ncfg;
    const float *cf = fx("cfg", &ncfg);
    const int C = (int)cf[0], N = (int)cf[1], H = (int)cf[2], W = (int)cf[3], L = (int)ncfg - 4, HW = H * W;
    UnetConfig cfg;
    unet_default_config(&cfg, C);
    cfg.n_levels = L;
    for (int i = 0; i < L; i++) cfg.features[i] = (int)cf[4 + i];
    printf("-- %s: features", path);
    for (int i = 0; i < L; i++) printf(" %d", cfg.features[i]);
    printf(", C=%d, batch %d, %dx%d, %d threads, loss %s\n", C, N, H, W, threads, unet_loss_name(kind));
    Unet *m = NULL;
    int rc = unet_create(&cfg, N, H, W, threads, &m);
    CHECK(rc == 0, "unet_create: %s", rc ? seg_errmsg() : "ok");
    if (rc) { nn_tfile_free(g_fx); return; }
    if (kind != UNET_LOSS_BCE) CHECK(unet_set_loss(m, kind) == SEG_OK, "unet_set_loss(%s)", unet_loss_name(kind));

    /* the state dict: same names, same order as PyTorch (fixture order) */
    int same = 1, k = 0;
    for (int i = 0; i < nn_tfile_count(g_fx); i++) {
        const char *fn = nn_tfile_name(g_fx, i);
        if (strncmp(fn, "sd0.", 4) != 0) continue;
        const UnetTensor *t = unet_tensor(m, k++);
        if (!t || strcmp(t->name, fn + 4) != 0) { printf("    tensor %d: ours %s, torch %s\n", k - 1, t ? t->name : "-", fn + 4); same = 0; break; }
    }
    CHECK(same && k == unet_n_tensors(m), "state dict: %d tensors, names and order as PyTorch", unet_n_tensors(m));
    CHECK(load_state(m, "sd0"), "loaded the PyTorch initial state by name");

    const float *x = fx("x", NULL), *t = fx("t", NULL);
    uint8_t *bits = malloc((size_t)N * C * HW / 8), *pres = malloc((size_t)N * ((C + 7) / 8));
    t_pack_targets(t, N, C, HW, bits, pres);
    rc = unet_forward(m, x, N, 1);
    CHECK(rc == 0, "forward(train=1)");
    size_t nl;
    const float *lref = fx("logits", &nl);
    close_to("logits (train mode)", unet_logits(m), lref, nl, 1e-5, 1e-4, 0);
    const float loss = unet_loss_bce(m, bits, pres, N), lr = fx("loss", NULL)[0];
    CHECK(fabsf(loss - lr) <= 1e-5f * lr, "loss %.8f vs torch %.8f (rel %.2g, tol 1e-5)", loss, lr, fabs(loss - lr) / lr);
    double pb, pd;
    unet_loss_parts(m, &pb, &pd);
    if (kind == UNET_LOSS_BCE) CHECK(isnan(pd) && fabs(pb - loss) <= 1e-6 * loss, "loss parts: bce %.8f, dice NaN (not computed)", pb);
    else {
        const double rb = fx("loss_bce", NULL)[0], rd = fx("loss_dice", NULL)[0];
        CHECK(fabs(pb - rb) <= 1e-5 * rb && fabs(pd - rd) <= 1e-5 * rd, "loss parts: bce %.8f dice %.8f vs torch %.8f %.8f", pb, pd,
              rb, rd);
    }
    int64_t *tp = calloc((size_t)C, 8), *fpv = calloc((size_t)C, 8), *fnv = calloc((size_t)C, 8);
    unet_dice_counts(m, bits, pres, N, tp, fpv, fnv);
    int dice_ok = 1;
    for (int c = 0; c < C; c++) {
        int64_t a = 0, b = 0, d = 0;
        for (int n = 0; n < N; n++)
            for (int q = 0; q < HW; q++) {
                const int p = lref[((size_t)n * C + c) * HW + q] > 0.f, y = t[((size_t)n * C + c) * HW + q] > 0.5f;
                a += p && y; b += p && !y; d += !p && y;
            }
        /* logits within 1e-5 of torch: allow a pixel or two sitting on the threshold */
        dice_ok &= llabs(tp[c] - a) <= 2 && llabs(fpv[c] - b) <= 2 && llabs(fnv[c] - d) <= 2;
    }
    CHECK(dice_ok, "dice counts tp/fp/fn agree with the torch logits (ch0 %lld/%lld/%lld)",
          (long long)tp[0], (long long)fpv[0], (long long)fnv[0]);
    rc = unet_backward(m);
    CHECK(rc == 0, "backward");
    int ng = 0, gbad = 0;
    char nm[160];
    for (int i = 0; i < unet_n_tensors(m); i++) {
        const UnetTensor *tt = unet_tensor(m, i);
        if (!tt->trainable) continue;
        snprintf(nm, sizeof nm, "grad.%s", tt->name);
        size_t n;
        const float *g = fx(nm, &n);
        ng++;
        gbad += !close_to(nm, unet_grads(m) + tt->offset, g, n, 1e-4, 1e-3, 1);
    }
    CHECK(gbad == 0, "all %d parameter gradients match torch (rtol 1e-3, atol 1e-4*max|ref|)", ng);
    /* the worst tensor, for the log */
    {
        double worst = 0;
        const char *wn = "";
        for (int i = 0; i < unet_n_tensors(m); i++) {
            const UnetTensor *tt = unet_tensor(m, i);
            if (!tt->trainable) continue;
            snprintf(nm, sizeof nm, "grad.%s", tt->name);
            size_t n;
            const float *g = fx(nm, &n);
            double mx = 0, d = 0;
            for (size_t j = 0; j < n; j++) { if (fabs(g[j]) > mx) mx = fabs(g[j]); }
            for (size_t j = 0; j < n; j++) { double e = fabs(unet_grads(m)[tt->offset + j] - g[j]) / (mx + 1e-30); if (e > d) d = e; }
            if (d > worst) { worst = d; wn = tt->name; }
        }
        printf("     worst gradient: %s, max|d|/max|ref| = %.3g\n", wn, worst);
    }
    /* running stats updated by the forward, then one Adam step */
    int bbad = 0, pbad = 0;
    size_t n_ill = 0;
    unet_adam_step(m, 1e-3f, 0.9f, 0.999f, 1e-8f);
    CHECK(*unet_adam_step_count(m) == 1, "adam step count 1");
    for (int i = 0; i < unet_n_tensors(m); i++) {
        const UnetTensor *tt = unet_tensor(m, i);
        snprintf(nm, sizeof nm, "sd1.%s", tt->name);
        size_t n;
        const float *r = fx(nm, &n);
        if (!tt->trainable) { bbad += !close_to(nm, tt->data, r, n, 1e-5, 1e-4, 1); continue; }
        /* Adam's first step is lr*g/(|g| + eps'): ill-conditioned where |g| is at the level
         * of the gradients' own rounding. There only check |p1 - p0| <= lr. */
        char gn[160];
        snprintf(gn, sizeof gn, "grad.%s", tt->name);
        const float *g = fx(gn, NULL);
        snprintf(gn, sizeof gn, "sd0.%s", tt->name);
        const float *p0 = fx(gn, NULL);
        double gmax = 0;
        for (size_t j = 0; j < n; j++) gmax = fmax(gmax, fabs(g[j]));
        float *got = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * n);
        for (size_t j = 0; j < n; j++) {
            const int cond = fabs(g[j]) >= 1e-4 * gmax;
            got[j] = cond ? tt->data[j] : 0.f;
            ref[j] = cond ? r[j] : 0.f;
            if (!cond) { n_ill++; if (fabs(tt->data[j] - p0[j]) > 1.001e-3) pbad++; }
        }
        pbad += !close_to(nm, got, ref, n, 1e-5, 1e-4, 1);
        free(got); free(ref);
    }
    CHECK(bbad == 0, "BN running_mean/var/num_batches_tracked after the train forward match torch");
    CHECK(pbad == 0, "parameters after one Adam step (lr 1e-3) match torch (%zu with |g| < 1e-4 max|g|: step <= lr)", n_ill);
    /* eval mode uses the running statistics and does not touch them */
    float *rs_before = malloc(sizeof(float) * 4096 * 4);
    size_t nb = 0;
    for (int i = 0; i < unet_n_tensors(m); i++) {
        const UnetTensor *tt = unet_tensor(m, i);
        if (!tt->trainable) for (size_t j = 0; j < tt->count && nb < 4096 * 4; j++) rs_before[nb++] = tt->data[j];
    }
    rc = unet_forward(m, x, N, 0);
    CHECK(rc == 0, "forward(train=0)");
    close_to("logits (eval mode, running stats)", unet_logits(m), fx("logits_eval", NULL), nl, 1e-5, 1e-4, 0);
    size_t nb2 = 0;
    int untouched = 1;
    for (int i = 0; i < unet_n_tensors(m); i++) {
        const UnetTensor *tt = unet_tensor(m, i);
        if (!tt->trainable) for (size_t j = 0; j < tt->count && nb2 < nb; j++) untouched &= rs_before[nb2++] == tt->data[j];
    }
    CHECK(untouched && nb2 == nb, "eval forward leaves the %zu running-stat floats unchanged", nb);
    CHECK(unet_backward(m) == SEG_EARG, "backward after an eval forward -> SEG_EARG");
    free(rs_before);

    /* central finite differences on a few of the largest gradients, from the initial state */
    if (threads == 2) {
        load_state(m, "sd0");
        unet_forward(m, x, N, 1);
        unet_loss_bce(m, bits, pres, N);
        unet_backward(m);
        const size_t np = unet_n_params(m);
        float *g0 = malloc(sizeof(float) * np);
        memcpy(g0, unet_grads(m), sizeof(float) * np);
        int fd_ok = 1, tested = 0, skipped = 0;
        for (int i = 0; i < unet_n_tensors(m) && tested < 8; i++) {
            const UnetTensor *tt = unet_tensor(m, i);
            /* one entry from a spread of tensors: 3x3 weights, BN gamma/beta, convT, head */
            if (!tt->trainable || (i % 3 != 0 && strncmp(tt->name, "head", 4) && strncmp(tt->name, "ups.0.", 6))) continue;
            size_t best = 0;
            for (size_t j = 1; j < tt->count; j++) if (fabsf(g0[tt->offset + j]) > fabsf(g0[tt->offset + best])) best = j;
            const float ga = g0[tt->offset + best];
            if (fabsf(ga) < 1e-4f) continue;
            float *w = unet_params(m) + tt->offset + best;
            const float w0 = *w;
            /* fp32 forward + ReLU/maxpool kinks: a difference quotient is only trusted when
             * three step sizes agree (within 2%); a parameter next to a kink is skipped */
            double fds[3];
            int k = 0;
            for (double h = 1e-3; k < 3; h /= sqrt(10.0), k++) {
                *w = (float)(w0 + h);
                const double lp = loss_at(m, x, N, t, nl, kind, C);
                *w = (float)(w0 - h);
                const double lm = loss_at(m, x, N, t, nl, kind, C);
                *w = w0;
                fds[k] = (lp - lm) / ((double)(float)(w0 + h) - (double)(float)(w0 - h));
            }
            const double lo = fmin(fds[0], fmin(fds[1], fds[2])), hi = fmax(fds[0], fmax(fds[1], fds[2]));
            const double med = fds[0] + fds[1] + fds[2] - lo - hi;
            if (hi - lo > 0.02 * fabs(med)) { skipped++; continue; }
            const int ok = fabs(med - ga) <= 0.03 * fabs(ga);
            fd_ok &= ok;
            printf("     fd %-34s[%zu] analytic %+.6e numeric %+.6e (h 1e-3..1e-4 spread %.2f%%, off %.2f%%) %s\n",
                   tt->name, best, ga, med, 100 * (hi - lo) / fabs(med), 100 * fabs(med - ga) / fabs(ga), ok ? "" : "MISMATCH");
            tested++;
        }
        CHECK(fd_ok && tested >= 5, "central finite differences agree with backward on %d parameters (3%%; %d skipped at kinks)",
              tested, skipped);
        /* same thread count, same inputs -> bit-identical gradients (fixed work shares) */
        load_state(m, "sd0");
        unet_forward(m, x, N, 1);
        unet_loss_bce(m, bits, pres, N);
        unet_backward(m);
        CHECK(memcmp(g0, unet_grads(m), sizeof(float) * np) == 0, "a second forward/backward gives bit-identical gradients");
        free(g0);
    }
    free(bits); free(pres); free(tp); free(fpv); free(fnv);
    unet_free(m);
    nn_tfile_free(g_fx);
    g_fx = NULL;
}

static void t_api(void)
{
    UnetConfig cfg;
    unet_default_config(&cfg, 117);
    Unet *m = NULL;
    int rc = unet_create(&cfg, 1, 32, 48, 2, &m);
    CHECK(rc == 0, "default model at 32x48: %s", rc ? seg_errmsg() : "ok");
    if (rc) return;
    CHECK(unet_n_params(m) == 7766293, "default model has %zu params (torch: 7,766,293)", unet_n_params(m));
    CHECK(unet_n_tensors(m) == 118, "default state dict has %d tensors (torch: 118)", unet_n_tensors(m));
    /* every layer's work scales with the pixel count, so 32x48 -> 256x256 is exact */
    const double fl = unet_flops_per_sample(m) * (256.0 * 256.0) / (32.0 * 48.0);
    CHECK(fabs(fl - 24.553e9) < 0.0006e9, "flops per 256x256 sample %.4f GFLOP (peer: 24.553)", fl / 1e9);
    /* determinism: init(42), init(43), init(42) again on one model */
    const size_t npar = unet_n_params(m);
    float *p42 = malloc(sizeof(float) * npar);
    size_t nbuf = 0;
    for (int i = 0; i < unet_n_tensors(m); i++) if (!unet_tensor(m, i)->trainable) nbuf += unet_tensor(m, i)->count;
    float *b42 = malloc(sizeof(float) * nbuf);
    unet_init(m, 42);
    memcpy(p42, unet_params(m), sizeof(float) * npar);
    for (int i = 0, k = 0; i < unet_n_tensors(m); i++)
        if (!unet_tensor(m, i)->trainable) { memcpy(b42 + k, unet_tensor(m, i)->data, sizeof(float) * unet_tensor(m, i)->count); k += (int)unet_tensor(m, i)->count; }
    unet_init(m, 43);
    CHECK(memcmp(p42, unet_params(m), sizeof(float) * npar) != 0, "different seed -> different init");
    unet_init(m, 42);
    CHECK(memcmp(p42, unet_params(m), sizeof(float) * npar) == 0, "same seed -> identical init");
    int buf_same = 1;
    for (int i = 0, k = 0; i < unet_n_tensors(m); i++)
        if (!unet_tensor(m, i)->trainable) { buf_same &= memcmp(b42 + k, unet_tensor(m, i)->data, sizeof(float) * unet_tensor(m, i)->count) == 0; k += (int)unet_tensor(m, i)->count; }
    CHECK(buf_same, "same seed -> identical BN buffers");
    free(p42); free(b42);
    /* PyTorch's default bounds: weights and conv biases U(+-1/sqrt(fan_in)), BN 1/0, rv 1 */
    int bounds_ok = 1, reach_ok = 1;
    for (int i = 0; i < unet_n_tensors(m); i++) {
        const UnetTensor *t = unet_tensor(m, i);
        const char *nm = t->name;
        const size_t len = strlen(nm);
        double lo = 0, hi = 0;
        if (t->ndim == 4 || (t->ndim == 1 && i > 0 && unet_tensor(m, i - 1)->ndim == 4 && !strcmp(nm + len - 4, "bias"))) {
            const UnetTensor *w = t->ndim == 4 ? t : unet_tensor(m, i - 1);
            hi = 1.0 / sqrt((double)w->shape[1] * w->shape[2] * w->shape[3]);
            lo = -hi;
        } else if (strstr(nm, "running_var") || (t->trainable && !strcmp(nm + len - 6, "weight"))) lo = hi = 1.0;
        double mn = 1e9, mx = -1e9;
        for (size_t j = 0; j < t->count; j++) { mn = fmin(mn, t->data[j]); mx = fmax(mx, t->data[j]); }
        if (mn < lo - 1e-7 || mx > hi + 1e-7) { bounds_ok = 0; printf("    %s in [%g, %g], expected [%g, %g]\n", nm, mn, mx, lo, hi); }
        if (t->count >= 1000 && hi > lo && (mx < 0.95 * hi || mn > 0.95 * lo)) { reach_ok = 0; printf("    %s spans only [%g, %g] of +-%g\n", nm, mn, mx, hi); }
    }
    CHECK(bounds_ok, "init within PyTorch's bounds (kaiming_uniform a=sqrt(5); ConvT fan_in = dim1*k*k)");
    CHECK(reach_ok, "init fills the bounds (uniform, large tensors reach 95%% of the bound)");
    CHECK(*unet_adam_step_count(m) == 0, "init zeroes the Adam step count");
    /* argument and call-order errors */
    Unet *bad = NULL;
    CHECK(unet_create(&cfg, 1, 40, 48, 1, &bad) == SEG_EARG && !bad, "H=40 not divisible by 16 -> SEG_EARG (%s)", seg_errmsg());
    CHECK(unet_create(&cfg, 1, 32, 36, 1, &bad) == SEG_EARG && !bad, "W=36 not divisible by 16 -> SEG_EARG");
    CHECK(unet_create(&cfg, 0, 32, 32, 1, &bad) == SEG_EARG && !bad, "batch 0 -> SEG_EARG");
    UnetConfig c3 = cfg;
    c3.n_levels = 0;
    CHECK(unet_create(&c3, 1, 32, 32, 1, &bad) == SEG_EARG && !bad, "0 levels -> SEG_EARG");
    float *x = calloc(2 * 32 * 48, sizeof(float));
    CHECK(unet_forward(m, x, 2, 1) == SEG_EARG, "forward with batch 2 > max_batch 1 -> SEG_EARG");
    CHECK(unet_backward(m) == SEG_EARG, "backward before forward+loss -> SEG_EARG");
    CHECK(unet_forward(m, x, 1, 1) == 0, "forward on zeros");
    CHECK(unet_backward(m) == SEG_EARG, "backward without a loss -> SEG_EARG");
    CHECK(isnan(unet_loss_bce(m, NULL, NULL, 2)), "loss with a batch other than the forward's -> NaN");
    /* the loss kinds */
    int kind = -1, kinds_ok = 1;
    const char *names[] = { "bce", "dice", "bce+dice" };
    for (int k = 0; k < 3; k++) kinds_ok &= unet_loss_parse(names[k], &kind) == SEG_OK && kind == k && !strcmp(unet_loss_name(k), names[k]);
    CHECK(kinds_ok && UNET_LOSS_BCE == 0 && UNET_LOSS_DICE == 1 && UNET_LOSS_BCE_DICE == 2, "loss names parse to their kinds and back");
    CHECK(unet_loss_parse("focal", &kind) == SEG_EARG && kind == 2 && strstr(seg_errmsg(), "focal"), "unknown loss -> SEG_EARG (%s)",
          seg_errmsg());
    CHECK(unet_loss_parse("Dice", &kind) == SEG_EARG && unet_loss_parse("", &kind) == SEG_EARG && !strcmp(unet_loss_name(7), "?"),
          "names are exact and lower case; unet_loss_name of a bad kind is \"?\"");
    CHECK(unet_set_loss(m, 3) == SEG_EARG && unet_set_loss(m, -1) == SEG_EARG, "unet_set_loss of a bad kind -> SEG_EARG");
    {
        uint8_t *zb = calloc(32 * 48 * 117 / 8, 1), zp[15] = { 0 };
        double pb = 0, pd = 0;
        float l = 0;
        CHECK(unet_loss(m, zb, zp, 1, &l) == SEG_OK && unet_set_loss(m, UNET_LOSS_BCE_DICE) == SEG_OK && unet_backward(m) == SEG_EARG,
              "changing the loss kind after unet_loss: backward needs a new loss -> SEG_EARG");
        unet_loss_parts(m, &pb, &pd);
        CHECK(unet_loss(m, zb, zp, 1, &l) == SEG_OK && (unet_loss_parts(m, &pb, &pd), pd == 0.0 && fabs(l - pb) < 1e-7) &&
              unet_backward(m) == SEG_OK, "bce+dice with no targets at all: Dice term 0, loss = BCE %.6f", l);
        CHECK(unet_set_loss(m, UNET_LOSS_DICE) == SEG_OK && unet_loss(m, zb, zp, 1, &l) == SEG_OK && l == 0.f && unet_backward(m) == SEG_OK,
              "dice alone with no targets: loss 0, backward runs");
        free(zb);
    }
    /* clipping: norm in double, and the scaled grads have the asked norm */
    const size_t np = unet_n_params(m);
    float *g = unet_grads(m);
    uint64_t s = 5;
    double ss = 0;
    for (size_t i = 0; i < np; i++) { g[i] = (float)((double)(t_rand(&s) >> 11) / 9007199254740992.0 - 0.5); ss += (double)g[i] * g[i]; }
    const float norm = unet_clip_grad(m, 0.f);
    CHECK(fabs(norm - sqrt(ss)) < 1e-5 * sqrt(ss), "grad norm %.6f (ref %.6f), max_norm 0 leaves grads", norm, sqrt(ss));
    unet_clip_grad(m, 2.0f);
    const float n2 = unet_clip_grad(m, 0.f);
    CHECK(fabsf(n2 - 2.0f) < 1e-4f, "clip to 2.0 -> norm %.6f", n2);
    free(x);
    unet_free(m);
}

/* End to end: a small model learns a toy segmentation (class 0: x > 0.3, class 1: x < -0.3,
 * class 2: never present) with Adam; the loss must fall by at least 5x in 150 steps, the
 * Dice of class 0 exceed 0.9, and eval mode must then agree with the training result. */
static void t_learns(void)
{
    UnetConfig cfg;
    unet_default_config(&cfg, 3);
    cfg.n_levels = 2;
    cfg.features[0] = 8;
    cfg.features[1] = 16;
    const int N = 4, H = 32, W = 32, HW = H * W, C = 3;
    Unet *m = NULL;
    if (unet_create(&cfg, N, H, W, 2, &m) < 0) { CHECK(0, "toy model: %s", seg_errmsg()); return; }
    unet_init(m, 7);
    float *x = malloc(sizeof(float) * N * HW);
    uint8_t *bits = calloc((size_t)N * C * HW / 8, 1), *pres = calloc(N, 1);
    uint64_t s = 99;
    float first = 0, last = 0;
    for (int step = 0; step < 150; step++) {
        memset(bits, 0, (size_t)N * C * HW / 8);
        for (int n = 0; n < N; n++) {
            /* a smooth random field: sum of a few random waves */
            double a[3][3];
            for (int k = 0; k < 3; k++) for (int j = 0; j < 3; j++) a[k][j] = (double)(t_rand(&s) >> 11) / 9007199254740992.0;
            for (int y = 0; y < H; y++)
                for (int xx = 0; xx < W; xx++) {
                    double v = 0;
                    for (int k = 0; k < 3; k++) v += sin(6.283 * (a[k][0] * 3 * y / H + a[k][1] * 3 * xx / W + a[k][2])) / 2;
                    const int q = y * W + xx;
                    x[n * HW + q] = (float)v;
                    if (v > 0.3) maskpack_set(maskpack_plane(bits, n, C, 0, HW / 8), q);
                    if (v < -0.3) maskpack_set(maskpack_plane(bits, n, C, 1, HW / 8), q);
                }
            pres[n] = 0x3;
        }
        unet_forward(m, x, N, 1);
        const float loss = unet_loss_bce(m, bits, pres, N);
        unet_backward(m);
        unet_adam_step(m, 1e-2f, 0.9f, 0.999f, 1e-8f);
        if (step == 0) first = loss;
        last = loss;
    }
    CHECK(last < first / 5, "toy task: loss %.4f -> %.4f after 150 Adam steps", first, last);
    int64_t tp[3] = {0}, fp[3] = {0}, fn[3] = {0};
    unet_forward(m, x, N, 0);
    unet_dice_counts(m, bits, pres, N, tp, fp, fn);
    const double dice = 2.0 * tp[0] / (2.0 * tp[0] + fp[0] + fn[0] + 1e-9);
    CHECK(dice > 0.9, "toy task: eval-mode Dice of class 0 = %.3f (tp %lld fp %lld fn %lld)", dice,
          (long long)tp[0], (long long)fp[0], (long long)fn[0]);
    CHECK(fp[2] == 0, "toy task: the never-present class is never predicted (fp %lld)", (long long)fp[2]);
    free(x); free(bits); free(pres);
    unet_free(m);
}

/* docs/loss.md with a labelled bitmap, in double from the definition: the bce+dice loss and
 * d loss / d logits (dz, N*C*HW) */
static double ref_masked(const float *z, const float *t, const uint8_t *lab, int N, int C, int HW, double *dz)
{
    const int CB = (C + 7) / 8;
    double bce = 0, nl = 0, dsum = 0;
    double *P = calloc((size_t)C, 8), *I = calloc((size_t)C, 8), *Y = calloc((size_t)C, 8);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            if (!maskpack_get(lab + n * CB, c)) continue;
            nl += HW;
            for (int q = 0; q < HW; q++) {
                const size_t i = ((size_t)n * C + c) * HW + q;
                const double v = z[i], y = t[i] > 0.5f, p = 1.0 / (1.0 + exp(-v));
                bce += (v > 0 ? v : 0) - v * y + log1p(exp(-fabs(v)));
                P[c] += p; I[c] += p * y; Y[c] += y;
            }
        }
    int ns = 0;
    for (int c = 0; c < C; c++) if (Y[c] > 0) { ns++; dsum += (2 * I[c] + 1e-5) / (P[c] + Y[c] + 1e-5); }
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int q = 0; q < HW; q++) {
                const size_t i = ((size_t)n * C + c) * HW + q;
                dz[i] = 0;
                if (!maskpack_get(lab + n * CB, c)) continue;
                const double v = z[i], y = t[i] > 0.5f, p = 1.0 / (1.0 + exp(-v)), den = P[c] + Y[c] + 1e-5;
                dz[i] = (p - y) / nl;
                if (Y[c] > 0) dz[i] += -(2 * y * den - (2 * I[c] + 1e-5)) / (ns * den * den) * p * (1 - p);
            }
    free(P); free(I); free(Y);
    return bce / nl + (ns ? 1.0 - dsum / ns : 0.0);
}

/* partly labelled samples through the model (unet_loss_masked, unet_backward,
 * unet_dice_counts_masked) on the unet_dice.bin model */
static void t_masked(void)
{
    NnTFile *f = NULL;
    if (nn_tfile_read("tests/fixtures/nn/unet_dice.bin", &f) < 0) { CHECK(0, "read unet_dice.bin: %s", seg_errmsg()); return; }
    g_fx = f;
    size_t ncfg;
    const float *cf = fx("cfg", &ncfg);
    const int C = (int)cf[0], N = (int)cf[1], H = (int)cf[2], W = (int)cf[3], L = (int)ncfg - 4, HW = H * W, CB = (C + 7) / 8;
    printf("-- partly labelled samples (unet_dice.bin model, bce+dice)\n");
    UnetConfig cfg;
    unet_default_config(&cfg, C);
    cfg.n_levels = L;
    for (int i = 0; i < L; i++) cfg.features[i] = (int)cf[4 + i];
    Unet *m = NULL;
    if (unet_create(&cfg, N, H, W, 2, &m) < 0) { CHECK(0, "unet_create: %s", seg_errmsg()); nn_tfile_free(f); return; }
    unet_set_loss(m, UNET_LOSS_BCE_DICE);
    load_state(m, "sd0");
    const float *x = fx("x", NULL), *t = fx("t", NULL);
    const size_t nb = (size_t)N * C * HW / 8, np = unet_n_params(m), nz = (size_t)N * C * HW;
    uint8_t *bits = malloc(nb), *bits2 = malloc(nb), pres[16], pres2[16], all[16], lab[16] = { 0 };
    t_pack_targets(t, N, C, HW, bits, pres);
    memset(all, 0xFF, sizeof all);                   /* bits past C are ignored */
    lab[0] = (uint8_t)(0x1F & ~0x02);                /* sample 0: all but channel 1 */
    lab[CB] = 0x09;                                   /* sample 1: channels 0 and 3 */
    float *g0 = malloc(sizeof(float) * np), *g1 = malloc(sizeof(float) * np);
    float l0 = 0, l1 = 0;
    int rc = unet_forward(m, x, N, 1);
    rc |= unet_loss(m, bits, pres, N, &l0) | unet_backward(m);
    memcpy(g0, unet_grads(m), sizeof(float) * np);
    rc |= unet_loss_masked(m, bits, pres, all, N, &l1) | unet_backward(m);
    CHECK(rc == 0 && l0 == l1 && !memcmp(g0, unet_grads(m), sizeof(float) * np),
          "an all-labelled bitmap: loss %.8f and every gradient bit for bit as unet_loss (NULL)", l1);
    rc = unet_loss_masked(m, bits, pres, lab, N, &l1) | unet_backward(m);
    memcpy(g1, unet_grads(m), sizeof(float) * np);
    double *dz = malloc(sizeof(double) * nz);
    const double r = ref_masked(unet_logits(m), t, lab, N, C, HW, dz);
    CHECK(rc == 0 && fabs(l1 - r) <= 1e-6 * r && l1 != l0, "masked loss %.8f vs the definition in double %.8f (unmasked %.8f)", l1, r, l0);
    /* head bias gradient = sum of d loss / d logits over each channel's planes */
    const UnetTensor *hb = NULL;
    for (int i = 0; i < unet_n_tensors(m); i++) {
        const UnetTensor *tt = unet_tensor(m, i);
        if (tt->trainable && tt->ndim == 1 && (int)tt->count == C) hb = tt;
    }
    int hb_ok = hb != NULL;
    for (int c = 0; hb && c < C; c++) {
        double s = 0, sa = 0;
        for (int n = 0; n < N; n++)
            for (int q = 0; q < HW; q++) { s += dz[((size_t)n * C + c) * HW + q]; sa += fabs(dz[((size_t)n * C + c) * HW + q]); }
        const float gg = g1[hb->offset + c];
        if (!(fabs(gg - s) <= 1e-5 * sa + 1e-9)) { hb_ok = 0; printf("    head bias grad[%d] %.9g ref %.9g\n", c, gg, s); }
    }
    CHECK(hb_ok, "masked head-bias gradient (%s) = sum of the reference d loss/d logits per channel", hb ? hb->name : "?");
    /* unlabelled planes are never read: other bits and presence there change nothing */
    memcpy(bits2, bits, nb);
    memcpy(pres2, pres, sizeof pres);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            if (!maskpack_get(lab + n * CB, c)) {
                memset(bits2 + ((size_t)n * C + c) * HW / 8, 0xA7, (size_t)HW / 8);
                pres2[n * CB + c / 8] ^= (uint8_t)(1u << (c % 8));   /* flip the presence bit */
            }
    float l2 = 0;
    rc = unet_loss_masked(m, bits2, pres2, lab, N, &l2) | unet_backward(m);
    CHECK(rc == 0 && l2 == l1 && !memcmp(g1, unet_grads(m), sizeof(float) * np),
          "targets of unlabelled planes are ignored: same loss and gradients bit for bit");
    /* Dice counts skip unlabelled planes */
    int64_t *cnt = calloc((size_t)6 * C, 8);
    rc = unet_dice_counts_masked(m, bits2, pres2, lab, N, cnt, cnt + C, cnt + 2 * C);
    const float *z = unet_logits(m);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            if (!maskpack_get(lab + n * CB, c)) continue;
            for (int q = 0; q < HW; q++) {
                const size_t i = ((size_t)n * C + c) * HW + q;
                const int p = z[i] > 0.f, y = t[i] > 0.5f;
                cnt[3 * C + c] += p && y; cnt[4 * C + c] += p && !y; cnt[5 * C + c] += !p && y;
            }
        }
    CHECK(rc == 0 && !memcmp(cnt, cnt + 3 * C, sizeof(int64_t) * 3 * C) && cnt[1] + cnt[C + 1] + cnt[2 * C + 1] == 0,
          "masked Dice counts = a loop over the labelled planes (channel 1, never labelled, counts nothing)");
    free(cnt); free(dz); free(g0); free(g1); free(bits); free(bits2);
    unet_free(m);
    nn_tfile_free(f);
    g_fx = NULL;
}

int main(void)
{
    t_fixture("tests/fixtures/nn/unet_l2.bin", 2, UNET_LOSS_BCE);
    t_fixture("tests/fixtures/nn/unet_dice.bin", 2, UNET_LOSS_BCE_DICE);
    setenv("SEGKIT_NN_GENERIC", "1", 1);             /* the portable kernels, whole model */
    printf("-- portable kernels (SEGKIT_NN_GENERIC=1):\n");
    t_fixture("tests/fixtures/nn/unet_l2.bin", 1, UNET_LOSS_BCE);
    t_fixture("tests/fixtures/nn/unet_dice.bin", 1, UNET_LOSS_BCE_DICE);
    unsetenv("SEGKIT_NN_GENERIC");
    t_fixture("tests/fixtures/nn/unet_l3.bin", 2, UNET_LOSS_BCE);
    t_masked();
    t_api();
    t_learns();
    return t_report("test_unet");
}
