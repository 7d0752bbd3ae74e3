/* tests/bench_eval.c : segeval's two costs on the real example subject, as JSON on stdout:
 * U-Net inference (slices/s at the cache's 256x256, batch 8, forward with train=0) and
 * the metrics over one subject (117 structures, Dice/IoU/HD95/NSD, against a perturbed
 * copy of its reference so that every present structure takes the distance path). The
 * metrics must cost less than a tenth of the inference of the same subject
 * ("metrics_under_tenth"). Metrics use all cores (structures in parallel), as segeval does.
 * usage: bench_eval [--reps N] [--threads N]   (run from the repo root; needs
 * $SEGKIT_SHARED/data/totalseg-example, default ../shared) */
#define _POSIX_C_SOURCE 200809L
#include "cache.h"
#include "util.h"
#include "maskpack.h"
#include "benchutil.h"
#include "err.h"
#include "fsutil.h"
#include "metrics.h"
#include "prep.h"
#include "testcache.h"
#include "progress.h"
#include "unet.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>



/* A prediction-like copy: every present structure shifted by 1..3 pixels along x and y,
 * every 7th structure dropped (a miss). */
static int perturb(const MetricsStack *ref, MetricsStack *pred)
{
    TRY(metrics_stack_init(pred, ref->nx, ref->ny, ref->nz, ref->n_struct, ref->spacing));
    for (int s = 0; s < ref->n_struct; s++) {
        if (s % 7 == 3) continue;
        const int dx = 1 + s % 3, dy = 1 + (s / 3) % 3;
        for (int z = 0; z < ref->nz; z++) {
            const uint8_t *p = ref->planes[(size_t)s * ref->nz + z];
            if (!p) continue;
            for (int y = 0; y < ref->ny; y++)
                for (int x = 0; x < ref->nx; x++) {
                    size_t i = (size_t)y * ref->nx + x;
                    if (!maskpack_get(p, i)) continue;
                    int X = x + dx, Y = y + dy;
                    if (X < ref->nx && Y < ref->ny) TRY(metrics_stack_set(pred, s, X, Y, z));
                }
        }
    }
    return SEG_OK;
}

int main(int argc, char **argv)
{
    int reps = 5, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    }
    if (reps < 1) reps = 1;
    const char *shared = getenv("SEGKIT_SHARED") ? getenv("SEGKIT_SHARED") : "../shared";
    char tmp[] = "/tmp/bench_eval.XXXXXX";
    CacheReader *cr = NULL;
    CacheCursor *cur = NULL;
    int rc = t_example_cache(shared, tmp, &cr, &cur);
    if (rc == 77) { fprintf(stderr, "bench_eval: the example subject is not under %s\n", shared); return 77; }
    if (rc < 0) { fprintf(stderr, "bench_eval: %s\n", seg_errmsg()); return 1; }
    const CacheSubject *cs = cache_subject(cr, 0);
    const int size = cache_size(cr), C = cache_n_channels(cr), nz = cs->n_slices;
    const size_t pb = cache_plane_bytes(cr);
    MetricsStack ref, pred;
    rc = metrics_stack_init(&ref, size, size, nz, C, cs->res_spacing);
    int16_t *img = malloc(sizeof(int16_t) * (size_t)size * size * (size_t)nz);
    uint8_t *bits = malloc(pb * (size_t)C), *pres = malloc(cache_presence_bytes(cr));
    for (int z = 0; z < nz && rc == 0; z++) {
        rc = cache_read_slice(cur, cs, z, img + (size_t)z * size * size, bits, pres, 0);
        for (int c = 0; c < C && rc == 0; c++)
            if (maskpack_get(pres, c)) memcpy(metrics_stack_plane(&ref, c, z), bits + (size_t)c * pb, pb);
    }
    if (rc == 0) rc = perturb(&ref, &pred);
    MetricsWork *w = NULL;
    if (rc == 0) rc = metrics_work_create(&w);
    MetricsResult *res = calloc((size_t)C, sizeof *res);
    MetricsOptions mo;
    metrics_default_options(&mo);
    const long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    mo.threads = threads > 0 ? threads : (int)(ncpu > 0 ? ncpu : 1);
    double *tm = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps && rc == 0; r++) {
        double t0 = util_now_s();
        rc = metrics_subject(w, &ref, &pred, &mo, res);
        tm[r] = util_now_s() - t0;
    }
    if (rc < 0) { fprintf(stderr, "bench_eval: %s\n", seg_errmsg()); return 1; }
    int n_both = 0;
    for (int c = 0; c < C; c++) n_both += res[c].kase == METRICS_CASE_BOTH;
    const double t_metrics = b_median(tm, reps);

    /* inference: the default U-Net for C classes, random weights, batch 8 */
    UnetConfig cfg;
    unet_default_config(&cfg, C);
    const int B = 8;
    Unet *net = NULL;
    rc = unet_create(&cfg, B, size, size, threads, &net);
    if (rc < 0) { fprintf(stderr, "bench_eval: %s\n", seg_errmsg()); return 1; }
    unet_init(net, 1);
    float *x = malloc(sizeof(float) * (size_t)B * size * size);
    for (size_t i = 0; i < (size_t)B * size * size; i++) {
        float v = img[i % ((size_t)size * size * nz)];
        v = v < -1000 ? -1000 : v > 1000 ? 1000 : v;
        x[i] = v / 1000.f;
    }
    int ireps = reps < 2 ? reps : 2;   /* a forward of 8 slices takes seconds on 2 cores */
    double *ti = malloc(sizeof(double) * (size_t)(ireps + 1));
    rc = unet_forward(net, x, B, 0);   /* warm-up */
    for (int r = 0; r < ireps && rc == 0; r++) {
        double t0 = util_now_s();
        rc = unet_forward(net, x, B, 0);
        ti[r] = util_now_s() - t0;
    }
    if (rc < 0) { fprintf(stderr, "bench_eval: %s\n", seg_errmsg()); return 1; }
    const double t_batch = b_median(ti, ireps), sps = B / t_batch, t_subject = nz / sps;
    fprintf(stderr, "bench_eval: metrics %.1f ms over %d structures (%d with both masks), inference %.2f slices/s "
                    "(%.2f s for the subject's %d slices): metrics = %.2f%% of inference\n",
            1e3 * t_metrics, C, n_both, sps, t_subject, nz, 100 * t_metrics / t_subject);
    printf("{\"size\": %d, \"subject_slices\": %d, \"structures\": %d, \"structures_both_present\": %d, "
           "\"metrics_s_per_subject\": %.5f, \"metrics_threads\": %d, \"inference_batch\": %d, \"inference_slices_per_s\": %.3f, "
           "\"inference_s_per_subject\": %.4f, \"metrics_over_inference\": %.5f, \"metrics_under_tenth\": %s, "
           "\"flops_per_slice\": %.4g}\n",
           size, nz, C, n_both, t_metrics, mo.threads, B, sps, t_subject, t_metrics / t_subject,
           t_metrics < 0.1 * t_subject ? "true" : "false", unet_flops_per_sample(net));
    unet_free(net);
    metrics_work_free(w);
    metrics_stack_free(&ref);
    metrics_stack_free(&pred);
    cache_cursor_close(cur);
    cache_close(cr);
    free(img); free(bits); free(pres); free(res); free(tm); free(ti); free(x);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "bench_eval: could not remove %s\n", tmp);
    return 0;   /* the verdict is "metrics_under_tenth" in the JSON */
}
