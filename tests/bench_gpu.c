/* tests/bench_gpu.c : U-Net training and inference throughput on a CUDA GPU; one JSON object on
 * stdout (progress on stderr). Skips (exit 77) without a usable GPU.
 *
 *   build/tests/bench_gpu [--batches 8,32,64] [--amps off,bf16] [--size 256] [--classes 117]
 *                         [--steps 10] [--blocks 5] [--cache DIR] [--loader-threads 4]
 *   build/tests/bench_gpu --probe      exit 0 when a GPU is usable, 77 (and why) when not
 *
 * For each precision and batch size: `blocks` timed blocks of `steps` training steps each
 * (forward(train) + BCE loss + backward + Adam, the batch uploaded from host memory every
 * step, as segtrain does), after 3 warm-up steps; slices/s is the median block's. GPU idle
 * per step = (wall time from the first step's start to the last step's end on the device -
 * the device's busy time) / steps. With --cache the same is measured with batches from the
 * real loader (shuffled, decoded from the cache by --loader-threads threads): if its idle
 * time is no larger, the loader is not the bottleneck. Inference: forward(eval) blocks, with
 * the logits left on the device and with them copied to the host (what segeval does). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cache.h"
#include "benchutil.h"
#include "err.h"
#include "loader.h"
#include "unet.h"

static int parse_list(const char *s, int *v, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 1 || x > 4096) return -1;
        v[n++] = (int)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

typedef struct Batch { const float *x; const uint8_t *bits, *pres; int n; } Batch;
typedef int (*NextFn)(void *ctx, Batch *b);

typedef struct Synth { float *x; uint8_t *bits, *pres; int n; } Synth;
static int synth_next(void *ctx, Batch *b)
{
    const Synth *s = ctx;
    *b = (Batch){ s->x, s->bits, s->pres, s->n };
    return 1;
}

typedef struct LoaderSrc { Loader *l; int epoch; } LoaderSrc;
static int loader_src_next(void *ctx, Batch *b)
{
    LoaderSrc *s = ctx;
    LoaderBatch lb;
    int rc = loader_next(s->l, &lb);
    if (rc == 0) {                                   /* epoch done: next epoch */
        TRY(loader_start_epoch(s->l, ++s->epoch));
        rc = loader_next(s->l, &lb);
    }
    if (rc != 1) return rc < 0 ? rc : seg_err(SEG_EARG, "loader: empty epoch");
    *b = (Batch){ lb.img, lb.bits, lb.presence, lb.n };
    return 1;
}

static int train_step(Unet *m, NextFn next, void *ctx)
{
    Batch b;
    float loss;
    TRY(next(ctx, &b));
    TRY(unet_forward(m, b.x, b.n, 1));
    TRY(unet_loss(m, b.bits, b.pres, b.n, &loss));
    TRY(unet_backward(m));
    const int rc = unet_adam_step(m, 1e-4f, 0.9f, 0.999f, 1e-8f);
    return rc < 0 ? rc : b.n;
}

/* Median slices/s over blocks of steps, and the device idle ms per step. */
static int time_train(Unet *m, NextFn next, void *ctx, int steps, int blocks, double *sps, double *idle_ms)
{
    double v[64], idle = 0;
    for (int i = 0; i < 3; i++) { int rc = train_step(m, next, ctx); if (rc < 0) return rc; }
    TRY(unet_wait(m));
    double busy, wall;
    int ns;
    TRY(unet_gpu_step_times(m, &busy, &wall, &ns));  /* reset the step timing */
    for (int k = 0; k < blocks; k++) {
        long sl = 0;
        const double t0 = b_now();
        for (int i = 0; i < steps; i++) { int rc = train_step(m, next, ctx); if (rc < 0) return rc; sl += rc; }
        TRY(unet_wait(m));
        v[k] = sl / (b_now() - t0);
        TRY(unet_gpu_step_times(m, &busy, &wall, &ns));
        idle += ns > 1 ? (wall - busy) / (ns - 1) : 0;   /* gaps between ns steps */
    }
    *sps = b_median(v, blocks);
    *idle_ms = 1e3 * idle / blocks;
    return SEG_OK;
}

static int time_infer(Unet *m, const float *x, int N, int steps, int blocks, int download, double *sps)
{
    double v[64];
    for (int k = -1; k < blocks; k++) {
        const double t0 = b_now();
        for (int i = 0; i < steps; i++) {
            TRY(unet_forward(m, x, N, 0));
            if (download && !unet_logits(m)) return SEG_EGPU;
        }
        TRY(unet_wait(m));
        if (k >= 0) v[k] = (double)steps * N / (b_now() - t0);
    }
    *sps = b_median(v, blocks);
    return SEG_OK;
}

int main(int argc, char **argv)
{
    int batches[8] = { 8, 32, 64 }, nb = 3, size = 256, C = 117, steps = 10, blocks = 5, lthreads = 4;
    int amps[4] = { UNET_AMP_OFF, UNET_AMP_BF16 }, na = 2;
    const char *cache_dir = NULL;
    int probe = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--probe")) { probe = 1; continue; }
        if (!v) { fprintf(stderr, "bench_gpu: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--batches")) { if ((nb = parse_list(v, batches, 8)) < 1) return 2; }
        else if (!strcmp(a, "--amps")) {
            na = 0;
            for (const char *p = v; *p && na < 4;) {
                char w[16];
                size_t k = strcspn(p, ",");
                snprintf(w, sizeof w, "%.*s", (int)k, p);
                UnetDevice d = { 0 };
                if (unet_amp_parse(w, &d) < 0) { fprintf(stderr, "bench_gpu: %s\n", seg_errmsg()); return 2; }
                amps[na++] = d.amp;
                p += k + (p[k] == ',');
            }
        }
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--classes")) C = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--blocks")) blocks = atoi(v) > 64 ? 64 : atoi(v);
        else if (!strcmp(a, "--cache")) cache_dir = v;
        else if (!strcmp(a, "--loader-threads")) lthreads = atoi(v);
        else { fprintf(stderr, "bench_gpu: unknown option %s\n", a); return 2; }
        i++;
    }
    if (steps < 1 || blocks < 1 || size < 16) { fprintf(stderr, "bench_gpu: bad --steps/--blocks/--size\n"); return 2; }
    UnetDevice dev = { UNET_CUDA, 0, 0 };
    char desc[256];
    if (unet_device_resolve(&dev, desc, sizeof desc) < 0) { fprintf(stderr, "skip: %s\n", seg_errmsg()); return 77; }
    if (probe) { fprintf(stderr, "bench_gpu: %s\n", desc); return 0; }
    CacheReader *cache = NULL;
    if (cache_dir) {
        if (cache_open(cache_dir, &cache) < 0) { fprintf(stderr, "bench_gpu: %s\n", seg_errmsg()); return 1; }
        size = cache_size(cache);
        C = cache_n_channels(cache);
    }
    UnetConfig cfg;
    unet_default_config(&cfg, C);
    int maxb = 0;
    for (int i = 0; i < nb; i++) if (batches[i] > maxb) maxb = batches[i];
    const size_t HW = (size_t)size * size, CB = (size_t)(C + 7) / 8;
    Synth sy = { malloc(sizeof(float) * maxb * HW), malloc((size_t)maxb * C * HW / 8), malloc((size_t)maxb * CB), 0 };
    if (!sy.x || !sy.bits || !sy.pres) { fprintf(stderr, "bench_gpu: out of memory\n"); return 1; }
    uint64_t s = 1;
    for (size_t i = 0; i < (size_t)maxb * HW; i++) sy.x[i] = (float)((b_rand(&s) >> 40) * (2.0 / 16777216.0) - 1.0);
    for (size_t i = 0; i < (size_t)maxb * C * HW / 8; i++) sy.bits[i] = (uint8_t)(b_rand(&s) & b_rand(&s) & b_rand(&s));
    memset(sy.pres, 0xff, (size_t)maxb * CB);
    printf("{\n  \"device\": \"%s\",\n  \"size\": %d, \"classes\": %d, \"steps_per_block\": %d, \"blocks\": %d,\n  \"runs\": [", desc, size, C,
           steps, blocks);
    int first = 1, rc = SEG_OK;
    for (int ia = 0; ia < na && rc == SEG_OK; ia++)
        for (int ib = 0; ib < nb && rc == SEG_OK; ib++) {
            const int N = batches[ib];
            dev.amp = amps[ia];
            fprintf(stderr, "bench_gpu: batch %d, %s ...\n", N, unet_amp_name(dev.amp));
            Unet *m = NULL;
            double tr = 0, idle = 0, trl = -1, idlel = -1, inf = 0, infd = 0;
            rc = unet_create_on(&cfg, N, size, size, 0, &dev, &m);
            sy.n = N;
            if (rc == SEG_OK) rc = time_train(m, synth_next, &sy, steps, blocks, &tr, &idle);
            if (rc == SEG_OK && cache) {
                LoaderOptions lo;
                loader_default_options(&lo);
                lo.batch_size = N;
                lo.threads = lthreads;
                lo.prefetch = lthreads + 2;
                lo.shuffle = 1;
                Loader *l = NULL;
                rc = loader_create(cache, CACHE_SPLIT_TRAIN, 0, &lo, &l);
                LoaderSrc src = { l, 0 };
                if (rc == SEG_OK) rc = loader_start_epoch(l, 0);
                if (rc == SEG_OK) rc = time_train(m, loader_src_next, &src, steps, blocks, &trl, &idlel);
                loader_free(l);
            }
            if (rc == SEG_OK) rc = time_infer(m, sy.x, N, steps, blocks, 0, &inf);
            if (rc == SEG_OK) rc = time_infer(m, sy.x, N, steps, blocks, 1, &infd);
            if (rc == SEG_OK) {
                printf("%s\n    {\"batch\": %d, \"precision\": \"%s\", \"train_slices_per_s\": %.1f, \"gpu_idle_ms_per_step\": %.2f, "
                       "\"infer_slices_per_s\": %.1f, \"infer_with_download_slices_per_s\": %.1f, \"gpu_memory_mib\": %.0f",
                       first ? "" : ",", N, unet_amp_name(dev.amp), tr, idle, inf, infd, unet_device_memory_bytes(m) / 1048576.0);
                if (trl >= 0)
                    printf(", \"train_loader_slices_per_s\": %.1f, \"loader_gpu_idle_ms_per_step\": %.2f, \"loader_threads\": %d", trl,
                           idlel, lthreads);
                printf("}");
                first = 0;
            }
            unet_free(m);
        }
    printf("\n  ]\n}\n");
    if (rc < 0) fprintf(stderr, "bench_gpu: %s\n", seg_errmsg());
    free(sy.x); free(sy.bits); free(sy.pres);
    cache_close(cache);
    return rc < 0 ? 1 : 0;
}
