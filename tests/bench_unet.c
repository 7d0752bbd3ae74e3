/* tests/bench_unet.c : U-Net training/inference speed and memory on the CPU; one JSON object
 * on stdout (progress on stderr). A training step is forward(train) + loss (BCE unless --loss)
 * + backward + Adam, like the PyTorch peer's zero_grad+forward+loss+backward+step.
 *
 *   build/tests/bench_unet [--batch 8] [--size 256] [--features 32,64,128,256] [--classes 117]
 *                          [--threads 0] [--steps 5] [--warmup 1] [--infer-steps 5]
 *                          [--loss bce|dice|bce+dice] [--profile] [--peak] [--no-infer] [--no-train]
 * --profile adds the per-phase wall time of the timed training steps; --peak times a 4096^3
 * cblas_sgemm on the same threads (after the model is freed, so it does not count in the
 * peak RSS). GFLOP/s = unet_flops_per_sample * 3 * batch / step time (as the peer). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include "benchutil.h"
#include "maskpack.h"
#include "err.h"
#include "nn.h"
#include "unet.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_unet [--batch N] [--size S] [--features a,b,..] [--classes C] [--threads T]\n"
               "                  [--steps N] [--warmup N] [--infer-steps N] [--loss bce|dice|bce+dice]\n"
               "                  [--profile] [--peak] [--no-infer] [--no-train]\n");
}

static void print_times(const char *key, const double *v, int n)
{
    printf("  \"%s\": [", key);
    for (int i = 0; i < n; i++) printf("%s%.1f", i ? ", " : "", v[i] * 1e3);
    printf("],\n");
}

int main(int argc, char **argv)
{
    int batch = 8, size = 256, classes = 117, threads = 0, steps = 5, warmup = 1, isteps = 5;
    int profile = 0, peak = 0, infer = 1, train = 1, loss_kind = UNET_LOSS_BCE;
    UnetConfig cfg;
    unet_default_config(&cfg, classes);
    int feats[UNET_MAX_LEVELS], nf = 4;
    for (int i = 0; i < 4; i++) feats[i] = cfg.features[i];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--profile")) profile = 1;
        else if (!strcmp(a, "--peak")) peak = 1;
        else if (!strcmp(a, "--no-infer")) infer = 0;
        else if (!strcmp(a, "--no-train")) train = 0;
        else if (v && !strcmp(a, "--batch")) { batch = atoi(v); i++; }
        else if (v && !strcmp(a, "--size")) { size = atoi(v); i++; }
        else if (v && !strcmp(a, "--classes")) { classes = atoi(v); i++; }
        else if (v && !strcmp(a, "--threads")) { threads = atoi(v); i++; }
        else if (v && !strcmp(a, "--steps")) { steps = atoi(v); i++; }
        else if (v && !strcmp(a, "--warmup")) { warmup = atoi(v); i++; }
        else if (v && !strcmp(a, "--infer-steps")) { isteps = atoi(v); i++; }
        else if (v && !strcmp(a, "--loss")) {
            if (unet_loss_parse(v, &loss_kind) < 0) { fprintf(stderr, "bench_unet: %s\n", seg_errmsg()); usage(stderr); return 2; }
            i++;
        }
        else if (v && !strcmp(a, "--features")) {
            nf = 0;
            for (const char *p = v; *p && nf < UNET_MAX_LEVELS; ) {
                feats[nf++] = atoi(p);
                const char *c = strchr(p, ',');
                if (!c) break;
                p = c + 1;
            }
            i++;
        } else { usage(stderr); return 2; }
    }
    if (batch < 1 || size < 1 || classes < 1 || steps < 1 || warmup < 0 || isteps < 1 || nf < 1) { usage(stderr); return 2; }
    unet_default_config(&cfg, classes);
    cfg.n_levels = nf;
    for (int i = 0; i < nf; i++) cfg.features[i] = feats[i];

    Unet *m = NULL;
    const double t_create = b_now();
    int rc = unet_create(&cfg, batch, size, size, threads, &m);
    if (rc < 0) { fprintf(stderr, "bench_unet: %s\n", seg_errmsg()); return 1; }
    const double create_s = b_now() - t_create;
    unet_init(m, 1);
    unet_set_loss(m, loss_kind);
    const size_t HW = (size_t)size * size, CB = ((size_t)classes + 7) / 8;
    float *x = malloc(sizeof(float) * (size_t)batch * HW);
    uint8_t *bits = calloc((size_t)batch * classes * HW / 8, 1), *pres = calloc((size_t)batch * CB, 1);
    if (!x || !bits || !pres) { fprintf(stderr, "bench_unet: out of memory\n"); return 1; }
    uint64_t s = 7;
    for (size_t i = 0; i < (size_t)batch * HW; i++) x[i] = (float)((double)(b_rand(&s) >> 11) / 9007199254740992.0 * 2 - 1);
    for (size_t pl = 0; pl < (size_t)batch * classes; pl++) {       /* ~2% ones, as the peer */
        uint8_t *b = bits + pl * HW / 8;
        int any = 0;
        for (size_t q = 0; q < HW; q++)
            if (b_rand(&s) % 50 == 0) { maskpack_set(b, q); any = 1; }
        if (any) maskpack_set(pres + (pl / classes) * CB, pl % classes);
    }
    const double gflop_step = unet_flops_per_sample(m) * 3.0 * batch / 1e9;

    double *tt = calloc((size_t)(steps + warmup), sizeof(double));
    float loss = 0;
    struct rusage r0, r1;
    if (!train) steps = warmup = 0;
    for (int i = 0; i < warmup + steps; i++) {
        if (i == warmup) {
            getrusage(RUSAGE_SELF, &r0);
            if (profile) unet_profile_enable(m, 1);
        }
        const double t0 = b_now();
        rc = unet_forward(m, x, batch, 1);
        if (rc == 0) loss = unet_loss_bce(m, bits, pres, batch);
        if (rc == 0) rc = unet_backward(m);
        if (rc == 0) unet_adam_step(m, 1e-3f, 0.9f, 0.999f, 1e-8f);
        tt[i] = b_now() - t0;
        if (rc < 0) { fprintf(stderr, "bench_unet: %s\n", seg_errmsg()); return 1; }
        fprintf(stderr, "train step %d%s: %.3f s loss %.5f\n", i, i < warmup ? " (warmup)" : "", tt[i], loss);
    }
    getrusage(RUSAGE_SELF, &r1);
    const double user_s = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + 1e-6 * (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec);
    const double sys_s = (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + 1e-6 * (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
    if (!train) r0 = r1;
    const double minflt = steps ? (double)(r1.ru_minflt - r0.ru_minflt) / steps : 0;
    const char *pn[32];
    double ps[32];
    int np = profile && train ? unet_profile(m, pn, ps, 32) : 0;
    unet_profile_enable(m, 0);
    double *timed = tt + warmup;
    double all_steps[64];
    const int nshow = steps < 64 ? steps : 64;
    memcpy(all_steps, timed, sizeof(double) * (size_t)nshow);
    const double tmed = steps ? b_median(timed, steps) : 0;

    double i8 = 0, i1 = 0, i8min = 0, i1min = 0;
    if (infer) {
        double *ti = calloc((size_t)isteps + 1, sizeof(double));
        for (int pass = 0; pass < 2; pass++) {
            const int nb = pass == 0 ? batch : 1, reps = pass == 0 ? isteps : 2 * isteps;
            double *tv = calloc((size_t)reps, sizeof(double));
            for (int i = 0; i < reps + 1; i++) {
                const double t0 = b_now();
                unet_forward(m, x, nb, 0);
                if (i > 0) tv[i - 1] = b_now() - t0;
            }
            double mn = tv[0];
            for (int i = 1; i < reps; i++) if (tv[i] < mn) mn = tv[i];
            const double md = b_median(tv, reps);
            if (pass == 0) { i8 = md; i8min = mn; } else { i1 = md; i1min = mn; }
            fprintf(stderr, "inference batch %d: median %.3f s (min %.3f)\n", nb, md, mn);
            free(tv);
        }
        free(ti);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const size_t arena = unet_memory_bytes(m);
    const size_t nparams = unet_n_params(m);
    const double fl_sample = unet_flops_per_sample(m);
    unet_free(m);

    double peak_gf = 0;
    if (peak) {
        const int n = 4096;
        float *A = malloc(sizeof(float) * (size_t)n * n), *B = malloc(sizeof(float) * (size_t)n * n),
              *Cm = malloc(sizeof(float) * (size_t)n * n);
        if (A && B && Cm) {
            for (size_t i = 0; i < (size_t)n * n; i++) { A[i] = (float)(i % 7) * 0.01f; B[i] = (float)(i % 5) * 0.01f; Cm[i] = 0; }
            if (threads > 0) openblas_set_num_threads(threads);
            double tv[3];
            for (int r = 0; r < 4; r++) {
                const double t0 = b_now();
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, A, n, B, n, 0.f, Cm, n);
                if (r > 0) tv[r - 1] = b_now() - t0;
            }
            peak_gf = 2.0 * n * (double)n * n / b_median(tv, 3) / 1e9;
            fprintf(stderr, "sgemm 4096^3: %.1f GFLOP/s\n", peak_gf);
        }
        free(A); free(B); free(Cm);
    }

    printf("{\n");
    printf("  \"cpu_path\": \"%s\",\n", nn_cpu_name());   /* SEGKIT_CPU forces one (docs/cpu.md) */
    printf("  \"bench\": \"unet\",\n  \"batch\": %d,\n  \"size\": %d,\n  \"classes\": %d,\n  \"features\": [", batch, size, classes);
    for (int i = 0; i < nf; i++) printf("%s%d", i ? ", " : "", feats[i]);
    printf("],\n  \"threads\": %d,\n  \"loss\": \"%s\",\n  \"params\": %zu,\n", threads, unet_loss_name(loss_kind), nparams);
    printf("  \"gflop_forward_per_sample\": %.4f,\n  \"gflop_per_train_step\": %.2f,\n", fl_sample / 1e9, gflop_step);
    printf("  \"create_s\": %.3f,\n  \"arena_mib\": %.1f,\n", create_s, (double)arena / 1048576.0);
    if (train) {
        printf("  \"train_steps\": %d,\n  \"train_warmup\": %d,\n", steps, warmup);
        print_times("train_step_ms_all", all_steps, nshow);
        printf("  \"train_step_ms\": %.1f,\n  \"train_slices_per_s\": %.3f,\n  \"train_gflops\": %.1f,\n", tmed * 1e3,
               batch / tmed, gflop_step / tmed);
        printf("  \"train_user_s_per_step\": %.3f,\n  \"train_sys_s_per_step\": %.3f,\n  \"minflt_per_step\": %.0f,\n",
               user_s / steps, sys_s / steps, minflt);
        printf("  \"loss_last\": %.6f,\n", loss);
    }
    if (infer) {
        printf("  \"infer_b%d_ms\": %.1f,\n  \"infer_b%d_ms_min\": %.1f,\n  \"infer_b%d_slices_per_s\": %.3f,\n  \"infer_b%d_gflops\": %.1f,\n",
               batch, i8 * 1e3, batch, i8min * 1e3, batch, batch / i8, batch, fl_sample * batch / i8 / 1e9);
        printf("  \"infer_b1_ms\": %.1f,\n  \"infer_b1_ms_min\": %.1f,\n  \"infer_b1_slices_per_s\": %.3f,\n",
               i1 * 1e3, i1min * 1e3, 1.0 / i1);
    }
    if (peak) printf("  \"sgemm_4096_gflops\": %.1f,\n", peak_gf);
    if (peak && train) printf("  \"train_fraction_of_sgemm_peak\": %.3f,\n", gflop_step / tmed / peak_gf);
    if (np) {
        printf("  \"profile_s_per_step\": {");
        for (int i = 0; i < np; i++) printf("%s\"%s\": %.4f", i ? ", " : "", pn[i], ps[i] / steps);
        printf("},\n");
    }
    printf("  \"peak_rss_mib\": %.1f\n}\n", (double)ru.ru_maxrss / 1024.0);
    free(x); free(bits); free(pres); free(tt);
    return 0;
}
