/* tests/bench_prep.c : segprep speed against the zlib decode floor, bytes per cached slice,
 * and the mask-packing comparison. JSON on stdout.
 *   bench_prep [--reps N] [--threads N] [DATASET_DIR]   (default: the real example subject) */
#include "prep.h"
#include "maskpack.h"
#include "util.h"
#include "benchutil.h"
#include "err.h"
#include "progress.h"
#include <dirent.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>


typedef struct Files { char **p; int n, cap; } Files;

static void collect(const char *dir, Files *f)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t n = strlen(path);
        if (n > 7 && !strcmp(path + n - 7, ".nii.gz")) {
            if (f->n == f->cap) f->p = realloc(f->p, sizeof(char *) * (size_t)(f->cap = f->cap ? 2 * f->cap : 256));
            f->p[f->n++] = strdup(path);
        } else if (e->d_type == DT_DIR || e->d_type == DT_LNK || e->d_type == DT_UNKNOWN) {
            collect(path, f);
        }
    }
    closedir(d);
}

/* Inflate every file in memory, one process, one thread: the decode floor. */
static double zlib_floor(const Files *f, int64_t *in_bytes, int64_t *out_bytes)
{
    static unsigned char out[1 << 20];
    *in_bytes = *out_bytes = 0;
    double t0 = util_now_s();
    for (int i = 0; i < f->n; i++) {
        FILE *fp = fopen(f->p[i], "rb");
        if (!fp) continue;
        fseek(fp, 0, SEEK_END);
        long n = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        unsigned char *buf = malloc((size_t)n);
        if (fread(buf, 1, (size_t)n, fp) != (size_t)n) n = 0;
        fclose(fp);
        z_stream zs = { 0 };
        inflateInit2(&zs, 15 + 32);
        zs.next_in = buf; zs.avail_in = (uInt)n;
        int rc;
        do {
            zs.next_out = out; zs.avail_out = sizeof out;
            rc = inflate(&zs, Z_NO_FLUSH);
            *out_bytes += (int64_t)(sizeof out - zs.avail_out);
        } while (rc == Z_OK);
        inflateEnd(&zs);
        *in_bytes += n;
        free(buf);
    }
    return util_now_s() - t0;
}

/* Compare mask packings over every slice of the cache: all planes vs present planes. */
static void packing(const char *cache_dir, FILE *o)
{
    CacheReader *r;
    CacheCursor *cur;
    if (cache_open(cache_dir, &r) < 0 || cache_cursor_open(r, &cur) < 0) return;
    const int C = cache_n_channels(r), size = cache_size(r);
    const size_t plane = cache_plane_bytes(r), all = plane * (size_t)C;
    uint8_t *bits = malloc(all), *packed = malloc(all), pres[64];
    int16_t *img = malloc((size_t)size * size * 2);
    size_t cap = ZSTD_compressBound(all);
    uint8_t *z_all = malloc(cap), *z_pres = malloc(cap), *dec = malloc(all);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    int64_t bytes_all = 0, bytes_pres = 0, slices = 0, present = 0;
    double t_all = 0, t_pres = 0, t_rec = 0;
    for (int i = 0; i < cache_n_subjects(r); i++) {
        const CacheSubject *s = cache_subject(r, i);
        for (int z = 0; z < s->n_slices; z++) {
            cache_read_slice(cur, s, z, img, bits, pres, 1);
            size_t np = 0;
            for (int c = 0; c < C; c++)
                if (maskpack_get(pres, c)) memcpy(packed + plane * np++, bits + plane * (size_t)c, plane);
            size_t za = ZSTD_compressCCtx(cc, z_all, cap, bits, all, 3);
            size_t zp = np ? ZSTD_compressCCtx(cc, z_pres, cap, packed, np * plane, 3) : 0;
            double t0 = util_now_s();
            for (int rep = 0; rep < 3; rep++) ZSTD_decompressDCtx(dc, dec, all, z_all, za);
            double t1 = util_now_s();
            for (int rep = 0; rep < 3 && np; rep++) ZSTD_decompressDCtx(dc, dec, all, z_pres, zp);
            double t2 = util_now_s();
            for (int rep = 0; rep < 3; rep++) cache_read_slice(cur, s, z, img, bits, pres, 0);
            double t3 = util_now_s();
            t_all += (t1 - t0) / 3; t_pres += (t2 - t1) / 3; t_rec += (t3 - t2) / 3;
            bytes_all += (int64_t)za; bytes_pres += (int64_t)zp + (C + 7) / 8;
            slices++; present += (int64_t)np;
        }
    }
    fprintf(o, "  \"mask_packing\": {\"slices\": %lld, \"mean_present_channels\": %.2f,\n"
               "    \"all_planes_zstd3\": {\"bytes_per_slice\": %.0f, \"decode_us_per_slice\": %.1f},\n"
               "    \"present_planes_zstd3\": {\"bytes_per_slice\": %.0f, \"decode_us_per_slice\": %.1f},\n"
               "    \"full_record_read_us_per_slice\": %.1f},\n",
            (long long)slices, slices ? (double)present / slices : 0, slices ? (double)bytes_all / slices : 0,
            slices ? 1e6 * t_all / slices : 0, slices ? (double)bytes_pres / slices : 0, slices ? 1e6 * t_pres / slices : 0,
            slices ? 1e6 * t_rec / slices : 0);
    ZSTD_freeCCtx(cc); ZSTD_freeDCtx(dc);
    free(bits); free(packed); free(img); free(z_all); free(z_pres); free(dec);
    cache_cursor_close(cur);
    cache_close(r);
}

int main(int argc, char **argv)
{
    const char *shared = getenv("SEGKIT_SHARED") ? getenv("SEGKIT_SHARED") : "../shared";
    char def[4200];
    snprintf(def, sizeof def, "%s/data/totalseg-example", shared);
    const char *dataset = def;
    int reps = 5;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);   /* as segprep's main does */
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    PrepOptions o;
    prep_default_options(&o);
    o.verbosity = 0; o.force = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) o.threads = atoi(argv[++i]);
        else dataset = argv[i];
    }
    if (reps < 1 || reps > 100) reps = 5;
    char cache[] = "/tmp/segkit_bench_prep_XXXXXX";
    if (!mkdtemp(cache)) { perror("mkdtemp"); return 1; }
    Files f = { 0 };
    collect(dataset, &f);
    if (f.n == 0) { fprintf(stderr, "bench_prep: no .nii.gz files under %s\n", dataset); return 1; }
    PrepStats st;
    if (prep_run(dataset, cache, &o, &st) < 0 || st.n_failed) {   /* warm-up: page cache, allocator */
        fprintf(stderr, "bench_prep: %s\n", seg_errmsg());
        return 1;
    }
    double *tp = malloc(sizeof(double) * (size_t)reps), *tz = malloc(sizeof(double) * (size_t)reps);
    int64_t zin = 0, zout = 0;
    for (int r = 0; r < reps; r++) {
        prep_run(dataset, cache, &o, &st);
        tp[r] = st.seconds;
        tz[r] = zlib_floor(&f, &zin, &zout);
    }
    double mp = b_median(tp, reps), mz = b_median(tz, reps);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\n  \"bench\": \"prep\",\n  \"dataset\": \"%s\",\n  \"reps\": %d,\n  \"threads\": %d,\n", dataset, reps, o.threads);
    printf("  \"subjects\": %d,\n  \"slices\": %lld,\n  \"files\": %d,\n", st.n_done, (long long)st.n_slices, f.n);
    printf("  \"segprep_s_median\": %.4f,\n  \"subjects_per_s\": %.2f,\n  \"slices_per_s\": %.1f,\n", mp, st.n_done / mp,
           (double)st.n_slices / mp);
    printf("  \"zlib_floor_s_median\": %.4f,\n  \"ratio_to_zlib_floor\": %.2f,\n", mz, mp / mz);
    printf("  \"input_gz_bytes\": %lld,\n  \"input_raw_bytes\": %lld,\n  \"cache_bytes_per_slice\": %.0f,\n",
           (long long)zin, (long long)zout, (double)st.bytes_out / (double)st.n_slices);
    printf("  \"input_gz_bytes_per_slice\": %.0f,\n", (double)zin / (double)st.n_slices);
    printf("  \"python_peer_s_per_subject_readme\": [2.536, 2.656],\n  \"speedup_vs_python_peer\": %.1f,\n",
           2.536 / (mp / (st.n_done ? st.n_done : 1)));
    packing(cache, stdout);
    printf("  \"peak_rss_mib\": %.1f\n}\n", ru.ru_maxrss / 1024.0);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache);
    if (system(cmd) != 0) fprintf(stderr, "bench_prep: could not remove %s\n", cache);
    return 0;
}
