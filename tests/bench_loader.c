/* tests/bench_loader.c : segtrain's data loader alone, in slices per second, against what a
 * training step consumes. JSON on stdout, notes on stderr.
 *   bench_loader [--cache DIR] [--batch N] [--seconds S] [--no-step] [DATASET_DIR]
 * Without --cache it builds a 256x256 cache of DATASET_DIR (default: the real example
 * subject, all in the train split) in a temp dir. Loader configurations: 1 and 2 decode
 * threads, with and without augmentation; each runs whole epochs for about --seconds.
 * Unless --no-step, one training step of the default U-Net (32,64,128,256, batch N) is timed
 * after a warm-up, and the loader/step ratio reported (the target is >= 20x). */
#include "cache.h"
#include "util.h"
#include "err.h"
#include "loader.h"
#include "prep.h"
#include "progress.h"
#include "unet.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static double run_loader(CacheReader *r, int threads, int aug, int batch, double seconds, int64_t *slices)
{
    LoaderOptions o;
    loader_default_options(&o);
    o.batch_size = batch;
    o.threads = threads;
    o.prefetch = threads + 2;
    o.shuffle = 1;
    o.aug = aug;
    Loader *l;
    *slices = 0;
    if (loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) < 0) { fprintf(stderr, "bench_loader: %s\n", seg_errmsg()); return -1; }
    LoaderBatch b;
    *slices = 0;
    double t0 = util_now_s(), el = 0;
    for (int e = 0; el < seconds || e < 2; e++) {
        if (loader_start_epoch(l, e) < 0) break;
        int rc;
        while ((rc = loader_next(l, &b)) == 1) *slices += b.n;
        if (rc < 0) { fprintf(stderr, "bench_loader: %s\n", seg_errmsg()); loader_free(l); return -1; }
        el = util_now_s() - t0;
    }
    loader_free(l);
    return el;
}

int main(int argc, char **argv)
{
    const char *dataset = NULL, *cache_dir = NULL;
    int batch = 8, step = 1;
    double seconds = 2.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cache") && i + 1 < argc) cache_dir = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-step")) step = 0;
        else dataset = argv[i];
    }
    if (batch < 1) batch = 8;
    char tmp[] = "/tmp/bench_loader.XXXXXX", split[4200], cmd[4300];
    int made = 0;
    if (!cache_dir) {
        const char *shared = getenv("SEGKIT_SHARED") ? getenv("SEGKIT_SHARED") : "../shared";
        static char ds[4200];
        if (!dataset) { snprintf(ds, sizeof ds, "%s/data/totalseg-example", shared); dataset = ds; }
        if (!mkdtemp(tmp)) { perror("mkdtemp"); return 1; }
        made = 1;
        snprintf(split, sizeof split, "%s/split.csv", tmp);
        FILE *f = fopen(split, "w");   /* every subject of the dataset trains */
        if (!f) { perror(split); return 1; }
        fprintf(f, "image_id;split\n");
        char lsdir[4300];
        snprintf(lsdir, sizeof lsdir, "ls '%s'", dataset);
        FILE *ls = popen(lsdir, "r");
        char name[512];
        while (ls && fgets(name, sizeof name, ls)) { name[strcspn(name, "\n")] = 0; if (name[0]) fprintf(f, "%s;train\n", name); }
        if (ls) pclose(ls);
        fclose(f);
        PrepOptions o;
        prep_default_options(&o);
        o.split_file = split;
        o.verbosity = 0;
        static char cd[4200];
        snprintf(cd, sizeof cd, "%s/cache", tmp);
        cache_dir = cd;
        PrepStats st;
        if (prep_run(dataset, cache_dir, &o, &st) < 0 || st.n_failed) { fprintf(stderr, "bench_loader: prep: %s\n", seg_errmsg()); return 1; }
    }
    CacheReader *r;
    if (cache_open(cache_dir, &r) < 0) { fprintf(stderr, "bench_loader: %s\n", seg_errmsg()); return 1; }
    const int size = cache_size(r), C = cache_n_channels(r);

    printf("{\"cache\": \"%s\", \"size\": %d, \"channels\": %d, \"batch\": %d, \"loader\": [", made ? "example (temp)" : cache_dir,
           size, C, batch);
    double best = 0;
    const int cfg[4][2] = { { 1, 0 }, { 2, 0 }, { 1, 1 }, { 2, 1 } };
    for (int k = 0; k < 4; k++) {
        int64_t n;
        double el = run_loader(r, cfg[k][0], cfg[k][1], batch, seconds, &n);
        double sps = el > 0 ? n / el : 0;
        if (!cfg[k][1] && sps > best) best = sps;
        printf("%s{\"threads\": %d, \"aug\": %s, \"slices\": %lld, \"seconds\": %.3f, \"slices_per_s\": %.1f}", k ? ", " : "",
               cfg[k][0], cfg[k][1] ? "true" : "false", (long long)n, el, sps);
        fprintf(stderr, "bench_loader: %d thread(s), aug %s: %.1f slices/s\n", cfg[k][0], cfg[k][1] ? "on" : "off", sps);
        fflush(stdout);
    }
    printf("]");
    if (step) {
        UnetConfig cfgu;
        unet_default_config(&cfgu, C);
        Unet *m = NULL;
        LoaderOptions o;
        loader_default_options(&o);
        o.batch_size = batch;
        Loader *l = NULL;
        LoaderBatch b;
        int ok = unet_create(&cfgu, batch, size, size, 0, &m) == 0 && loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0 &&
                 loader_start_epoch(l, 0) == 0 && loader_next(l, &b) == 1;
        double t_step = 0;
        if (ok) {
            unet_init(m, 1);
            for (int it = 0; it < 2 && ok; it++) {   /* the first step warms up (page faults, packing) */
                double t0 = util_now_s();
                ok = unet_forward(m, b.img, b.n, 1) == 0;
                unet_loss_bce(m, b.bits, b.presence, b.n);
                ok = ok && unet_backward(m) == 0;
                unet_adam_step(m, 1e-3f, 0.9f, 0.999f, 1e-8f);
                t_step = util_now_s() - t0;
            }
        }
        if (ok) {
            double consume = b.n / t_step;
            printf(", \"train_step\": {\"batch\": %d, \"seconds\": %.3f, \"slices_per_s\": %.3f}, \"loader_over_step\": %.1f", b.n,
                   t_step, consume, best / consume);
            fprintf(stderr, "bench_loader: a training step takes %.2f s for %d slices: the loader is %.0fx faster\n", t_step, b.n,
                    best / consume);
        } else {
            fprintf(stderr, "bench_loader: training step not timed: %s\n", seg_errmsg());
        }
        loader_free(l);
        unet_free(m);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf(", \"max_rss_mb\": %.1f}\n", ru.ru_maxrss / 1024.0);
    cache_close(r);
    if (made) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "bench_loader: could not remove %s\n", tmp);
    }
    return 0;
}
