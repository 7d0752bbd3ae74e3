/* prep/prep_tools.c : segprep stat | verify | export over an existing cache. */
#include "prep.h"
#include "maskpack.h"
#include "err.h"
#include "fsutil.h"
#include "nii.h"
#include "progress.h"
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

int prep_stat(const char *cache_dir, FILE *out)
{
    CacheReader *r;
    CacheCursor *cur = NULL;
    TRY(cache_open(cache_dir, &r));
    int rc = cache_cursor_open(r, &cur);
    cJSON *o = cJSON_CreateObject();
    if (rc == SEG_OK && !o) rc = seg_err(SEG_ENOMEM, "stat");
    int64_t n_slices = 0, rec_bytes = 0, present = 0, vox = 0, per_split[3] = { 0 }, slices_split[3] = { 0 };
    for (int i = 0; rc == SEG_OK && i < cache_n_subjects(r); i++) {
        const CacheSubject *s = cache_subject(r, i);
        per_split[s->split]++;
        slices_split[s->split] += s->n_slices;
        for (int z = 0; z < s->n_slices && rc == SEG_OK; z++) {
            size_t b; int np; int64_t ns;
            rc = cache_slice_info(cur, s, z, &b, &np, &ns);
            rec_bytes += (int64_t)b; present += np; vox += ns;
        }
        n_slices += s->n_slices;
    }
    if (rc == SEG_OK) {
        cJSON_AddStringToObject(o, "cache", cache_dir);
        cJSON_AddNumberToObject(o, "format_version", cache_version(r));
        cJSON_AddNumberToObject(o, "size", cache_size(r));
        cJSON_AddNumberToObject(o, "n_channels", cache_n_channels(r));
        cJSON_AddNumberToObject(o, "n_subjects", cache_n_subjects(r));
        cJSON_AddNumberToObject(o, "n_slices", (double)n_slices);
        cJSON *sp = cJSON_AddObjectToObject(o, "subjects_per_split");
        cJSON *ss = cJSON_AddObjectToObject(o, "slices_per_split");
        for (int k = 0; k < 3; k++) {
            cJSON_AddNumberToObject(sp, cache_split_name(k), (double)per_split[k]);
            cJSON_AddNumberToObject(ss, cache_split_name(k), (double)slices_split[k]);
        }
        cJSON_AddNumberToObject(o, "record_bytes", (double)rec_bytes);
        cJSON_AddNumberToObject(o, "bytes_per_slice", n_slices ? (double)rec_bytes / (double)n_slices : 0);
        cJSON_AddNumberToObject(o, "file_bytes", (double)cache_file_bytes(r));
        cJSON_AddNumberToObject(o, "mean_present_channels_per_slice", n_slices ? (double)present / (double)n_slices : 0);
        cJSON_AddNumberToObject(o, "mask_voxels_set", (double)vox);
        cJSON *pl = cJSON_AddObjectToObject(o, "partly_labelled");   /* subject id -> its labelled structures */
        for (int i = 0; pl && i < cache_n_subjects(r); i++) {
            const CacheSubject *s = cache_subject(r, i);
            if (!s->partial) continue;
            cJSON *a = cJSON_AddArrayToObject(pl, s->id);
            for (int c = 0; a && c < cache_n_channels(r) && c < CACHE_LABELLED_MAX; c++)
                if (maskpack_get(s->labelled, c)) cJSON_AddItemToArray(a, cJSON_CreateString(cache_labels(r)->names[c]));
        }
        cJSON *lab = cJSON_AddArrayToObject(o, "labels");
        for (int c = 0; c < cache_n_channels(r); c++) cJSON_AddItemToArray(lab, cJSON_CreateString(cache_labels(r)->names[c]));
        char *txt = cJSON_Print(o);
        if (!txt) rc = seg_err(SEG_ENOMEM, "stat");
        else { fprintf(out, "%s\n", txt); free(txt); }
    }
    cJSON_Delete(o);
    cache_cursor_close(cur);
    cache_close(r);
    return rc;
}

/* verify: subjects are handed out to threads one at a time; each thread has its own
 * cursor and buffers; the calling thread also draws the progress. */
typedef struct Verify {
    CacheReader    *r;
    int             verbosity;
    atomic_int      next_subject;
    atomic_llong    done, bad;
    atomic_int      fatal;           /* first non-corruption error code, 0 if none */
    pthread_mutex_t lock;            /* serialises messages and the fatal message */
    char            fatal_msg[1024];
} Verify;

typedef struct VerifyArg { Verify *v; Progress *pr; } VerifyArg;   /* pr: NULL except for the caller */

static void *verify_worker(void *arg)
{
    Verify *v = ((VerifyArg *)arg)->v;
    Progress *pr = ((VerifyArg *)arg)->pr;
    CacheReader *r = v->r;
    const int size = cache_size(r), C = cache_n_channels(r);
    int16_t *img = malloc((size_t)size * size * 2);
    uint8_t *bits = malloc(cache_plane_bytes(r) * (size_t)C), *pres = malloc(cache_presence_bytes(r));
    CacheCursor *cur = NULL;
    int rc = (img && bits && pres) ? cache_cursor_open(r, &cur) : seg_err(SEG_ENOMEM, "verify buffers");
    for (int i; rc == SEG_OK && !atomic_load(&v->fatal) && (i = atomic_fetch_add(&v->next_subject, 1)) < cache_n_subjects(r);) {
        const CacheSubject *s = cache_subject(r, i);
        for (int z = 0; z < s->n_slices; z++) {
            int e = cache_read_slice(cur, s, z, img, bits, pres, 1);
            if (e < 0 && e != SEG_EFORMAT && e != SEG_EZSTD) { rc = e; break; }
            if (e < 0) {
                atomic_fetch_add(&v->bad, 1);
                pthread_mutex_lock(&v->lock);
                if (v->verbosity >= 1) fprintf(stderr, "\nverify: %s\n", seg_errmsg());
                pthread_mutex_unlock(&v->lock);
            }
            long long d = atomic_fetch_add(&v->done, 1) + 1;
            if (pr) progress_update(pr, d, NULL);
        }
    }
    if (rc < 0) {
        pthread_mutex_lock(&v->lock);
        if (!atomic_load(&v->fatal)) {
            snprintf(v->fatal_msg, sizeof v->fatal_msg, "%s", seg_errmsg());
            atomic_store(&v->fatal, rc);
        }
        pthread_mutex_unlock(&v->lock);
    }
    cache_cursor_close(cur);
    free(img); free(bits); free(pres);
    return NULL;
}

int prep_verify(const char *cache_dir, int threads, int verbosity)
{
    CacheReader *r;
    TRY(cache_open(cache_dir, &r));
    int64_t total = 0;
    for (int i = 0; i < cache_n_subjects(r); i++) total += cache_subject(r, i)->n_slices;
    Progress pr;
    progress_start(&pr, "verify", "slices", total, verbosity >= 2, -1);
    Verify v = { .r = r, .verbosity = verbosity };
    pthread_mutex_init(&v.lock, NULL);
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    pthread_t th[64];
    VerifyArg helper = { &v, NULL }, mine = { &v, &pr };
    int started = 0;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&th[t], NULL, verify_worker, &helper) != 0) break;
        started = t;
    }
    verify_worker(&mine);
    for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
    progress_finish(&pr, NULL);
    const long long bad = atomic_load(&v.bad);
    int rc = atomic_load(&v.fatal);
    if (rc < 0) rc = seg_err(rc, "%s", v.fatal_msg);
    if (rc == SEG_OK && verbosity >= 2)
        fprintf(stderr, "verify: %d subjects, %lld slices, %lld bad (%d threads)\n", cache_n_subjects(r), (long long)total, bad,
                started + 1);
    if (rc == SEG_OK && bad) rc = seg_err(SEG_EFORMAT, "%s: %lld of %lld records are corrupt", cache_dir, bad, (long long)total);
    pthread_mutex_destroy(&v.lock);
    cache_close(r);
    return rc;
}

int prep_export(const char *cache_dir, const char *subject, const char *out_dir, int verbosity)
{
    CacheReader *r;
    CacheCursor *cur = NULL;
    NiiVolume *ct = NULL, *mask = NULL;
    TRY(cache_open(cache_dir, &r));
    int rc = SEG_OK, idx = cache_find_subject(r, subject);
    const CacheSubject *s = cache_subject(r, idx);
    const int size = cache_size(r), C = cache_n_channels(r);
    const size_t plane = cache_plane_bytes(r), npx = (size_t)size * size;
    uint8_t *bits = NULL;
    if (idx < 0) { rc = seg_err(SEG_EARG, "%s: no subject '%s' in the cache", cache_dir, subject); goto out; }
    const int64_t dim[3] = { size, size, s->n_slices };
    bits = malloc(plane * (size_t)C * (size_t)s->n_slices);
    if (!bits) { rc = seg_err(SEG_ENOMEM, "export: %zu bytes", plane * (size_t)C * (size_t)s->n_slices); goto out; }
    if ((rc = cache_cursor_open(r, &cur)) < 0) goto out;
    if ((rc = nii_create(dim, NII_INT16, s->res_affine, &ct)) < 0) goto out;
    for (int z = 0; z < s->n_slices && rc == SEG_OK; z++)
        rc = cache_read_slice(cur, s, z, (int16_t *)ct->data + (size_t)z * npx, bits + (size_t)z * C * plane, NULL, 1);
    if (rc < 0) goto out;
    char path[4300];
    snprintf(path, sizeof path, "%s/segmentations", out_dir);
    if ((rc = fs_mkdirs(path)) < 0) goto out;
    snprintf(path, sizeof path, "%s/ct.nii.gz", out_dir);
    if ((rc = nii_write(path, ct, 1)) < 0) goto out;
    if ((rc = nii_create(dim, NII_UINT8, s->res_affine, &mask)) < 0) goto out;
    for (int c = 0; c < C && rc == SEG_OK; c++) {
        uint8_t *m = mask->data;
        for (int z = 0; z < s->n_slices; z++) {
            const uint8_t *p = bits + ((size_t)z * C + c) * plane;
            for (size_t i = 0; i < npx; i++) m[(size_t)z * npx + i] = maskpack_get(p, i);
        }
        snprintf(path, sizeof path, "%s/segmentations/%s.nii.gz", out_dir, cache_labels(r)->names[c]);
        rc = nii_write(path, mask, 1);
    }
    if (rc == SEG_OK && verbosity >= 2)
        fprintf(stderr, "export: %s -> %s (ct.nii.gz %dx%dx%d, %d masks)\n", subject, out_dir, size, size, s->n_slices, C);
out:
    nii_free(ct);
    nii_free(mask);
    free(bits);
    cache_cursor_close(cur);
    cache_close(r);
    return rc;
}
