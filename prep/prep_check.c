/* prep/prep_check.c : input fingerprints (what makes a cached subject stale) and
 * segprep stat --check (the cache against its dataset, without writing anything). */
#include "prep.h"
#include "err.h"
#include "fsutil.h"
#include "nii.h"
#include "split.h"
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The last two components of path ("s0000/ct.nii.gz", "segmentations/liver.nii.gz"):
 * moving the whole dataset does not change a fingerprint. */
static const char *tail2(const char *path)
{
    const char *a = strrchr(path, '/');
    if (!a) return path;
    const char *b = a;
    while (b > path && b[-1] != '/') b--;
    return b;
}

static uint64_t hash_file(uint64_t h, const char *path)
{
    struct stat st;
    const char *t = tail2(path);
    h = nii_hash(h, t, strlen(t) + 1);
    if (stat(path, &st) != 0) return nii_hash(h, "?", 1);
    const int64_t v[3] = { (int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec, (int64_t)st.st_mtim.tv_nsec };
    return nii_hash(h, v, sizeof v);
}

uint64_t prep_fingerprint(int size, const LabelList *labels, const char *ct_path, char *const *mask_paths)
{
    uint64_t h = nii_hash(0, &size, sizeof size);
    h = hash_file(h, ct_path);
    for (int c = 0; c < labels->n; c++) {
        h = nii_hash(h, labels->names[c], strlen(labels->names[c]) + 1);
        h = mask_paths[c] ? hash_file(h, mask_paths[c]) : nii_hash(h, "missing", 8);
    }
    return h ? h : 1;
}

int prep_check(const char *cache_dir, const char *dataset, const char *split_file, FILE *out)
{
    CacheReader *r;
    TRY(cache_open(cache_dir, &r));
    const LabelList *labels = cache_labels(r);
    PrepNames subs = { 0 };
    char **paths = calloc((size_t)labels->n, sizeof *paths), ct[4300], sdir[4200], d2[4250], spath[4200];
    char **use = calloc((size_t)labels->n, sizeof *use);
    int rc = paths && use ? prep_list_subjects(dataset, 0, &subs, NULL) : seg_err(SEG_ENOMEM, "paths");
    char **ids = subs.v;
    const int n = subs.n;
    for (int c = 0; rc == SEG_OK && c < labels->n; c++)
        if (!(paths[c] = malloc(4300))) rc = seg_err(SEG_ENOMEM, "paths");
    SplitTable split = { 0 };
    int have_split = 0;
    snprintf(spath, sizeof spath, "%s", split_file ? split_file : "");
    if (!split_file) snprintf(spath, sizeof spath, "%s/meta.csv", dataset);
    if (rc == SEG_OK && (split_file || fs_is_file(spath))) {
        rc = split_read_csv(spath, &split);
        have_split = rc == SEG_OK;
    }
    cJSON *o = cJSON_CreateObject(), *lists[5];
    const char *names[5] = { "unchanged", "changed", "split_changed", "new_in_dataset", "gone_from_dataset" };
    for (int k = 0; k < 5; k++) lists[k] = o ? cJSON_CreateArray() : NULL;
    for (int i = 0; rc == SEG_OK && i < n; i++) {
        snprintf(sdir, sizeof sdir, "%s/%s", dataset, ids[i]);
        snprintf(d2, sizeof d2, "%s/segmentations", sdir);
        prep_find_nifti(ct, sizeof ct, sdir, "ct");
        for (int c = 0; c < labels->n; c++) use[c] = prep_find_nifti(paths[c], 4300, d2, labels->names[c]) ? paths[c] : NULL;
        const uint64_t fp = prep_fingerprint(cache_size(r), labels, ct, use);
        const CacheSubject *s = NULL;
        for (int j = 0; j < cache_n_subjects(r) && !s; j++)
            if (!strcmp(cache_subject(r, j)->id, ids[i])) s = cache_subject(r, j);
        const int sp = prep_subject_split(have_split ? &split : NULL, n, ids[i]);
        const int k = !s ? 3 : s->fp_inputs != fp ? 1 : s->split != sp ? 2 : 0;
        cJSON_AddItemToArray(lists[k], cJSON_CreateString(ids[i]));
    }
    for (int j = 0; rc == SEG_OK && j < cache_n_subjects(r); j++) {
        int found = 0;
        for (int i = 0; i < n && !found; i++) found = !strcmp(ids[i], cache_subject(r, j)->id);
        if (!found) cJSON_AddItemToArray(lists[4], cJSON_CreateString(cache_subject(r, j)->id));
    }
    if (rc == SEG_OK && !o) rc = seg_err(SEG_ENOMEM, "check");
    if (rc == SEG_OK) {
        cJSON_AddStringToObject(o, "cache", cache_dir);
        cJSON_AddStringToObject(o, "dataset", dataset);
        int stale = 0;
        for (int k = 0; k < 5; k++) {
            char key[48];
            snprintf(key, sizeof key, "n_%s", names[k]);
            cJSON_AddNumberToObject(o, key, cJSON_GetArraySize(lists[k]));
            if (k) stale += cJSON_GetArraySize(lists[k]);
        }
        cJSON_AddBoolToObject(o, "up_to_date", stale == 0);
        for (int k = 0; k < 5; k++) { cJSON_AddItemToObject(o, names[k], lists[k]); lists[k] = NULL; }
        char *txt = cJSON_Print(o);
        if (!txt) rc = seg_err(SEG_ENOMEM, "check");
        else { fprintf(out, "%s\n", txt); free(txt); }
    }
    for (int k = 0; k < 5; k++) cJSON_Delete(lists[k]);
    cJSON_Delete(o);
    split_free(&split);
    prep_names_free(&subs);
    for (int c = 0; paths && c < labels->n; c++) free(paths[c]);
    free(paths);
    free(use);
    cache_close(r);
    return rc;
}
