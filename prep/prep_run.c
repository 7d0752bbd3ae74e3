/* prep/prep_run.c : the dataset loop: find subjects, fix the label order and the split,
 * skip complete subjects, process the rest, commit each in its own transaction, and
 * report failures at the end. */
#include "prep.h"
#include "util.h"
#include "maskpack.h"
#include "err.h"
#include "fsutil.h"
#include "progress.h"
#include "split.h"
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void prep_default_options(PrepOptions *o)
{
    memset(o, 0, sizeof *o);
    o->size = 256;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = n > 0 ? (int)n : 1;
    o->verbosity = 2;
    o->zstd_level = 1;
    o->progress_tty = -1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int strlist_push(PrepNames *l, const char *s)
{
    if (l->n == l->cap) {
        char **t = realloc(l->v, sizeof(char *) * (size_t)(l->cap = l->cap ? 2 * l->cap : 64));
        if (!t) return seg_err(SEG_ENOMEM, "list");
        l->v = t;
    }
    if (!(l->v[l->n] = strdup(s))) return seg_err(SEG_ENOMEM, "list");
    l->n++;
    return SEG_OK;
}

void prep_names_free(PrepNames *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ct.nii.gz, or ct.nii; 0 if neither. */
int prep_find_nifti(char *out, size_t cap, const char *dir, const char *stem)
{
    snprintf(out, cap, "%s/%s.nii.gz", dir, stem);
    if (fs_is_file(out)) return 1;
    snprintf(out, cap, "%s/%s.nii", dir, stem);
    return fs_is_file(out);
}

int prep_list_subjects(const char *dataset, int verbosity, PrepNames *out, int *n_skipped)
{
    DIR *d = opendir(dataset);
    if (!d) return seg_err(SEG_EIO, "%s: cannot open dataset directory", dataset);
    struct dirent *e;
    char path[4200], f[4300];
    int rc = SEG_OK;
    while (rc == SEG_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dataset, e->d_name);
        if (!fs_is_dir(path)) continue;   /* meta.csv, README...: not subjects */
        const char *why = strlen(e->d_name) >= CACHE_ID_MAX ? "its name is too long for a subject id"
                        : !prep_find_nifti(f, sizeof f, path, "ct") ? "no ct.nii.gz or ct.nii in it" : NULL;
        if (!why) { rc = strlist_push(out, e->d_name); continue; }
        if (n_skipped) (*n_skipped)++;
        if (verbosity >= 1) fprintf(stderr, "segprep: skipping folder %s: %s\n", path, why);
    }
    closedir(d);
    if (rc == SEG_OK && out->n == 0)
        rc = seg_err(SEG_EIO, "%s: no subjects found (expected folders like s0000/ with ct.nii.gz)", dataset);
    if (out->n) qsort(out->v, (size_t)out->n, sizeof(char *), cmp_str);
    return rc;
}

/* Structure names in a segmentations/ folder, sorted. */
static int list_masks(const char *subject_dir, PrepNames *out)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/segmentations", subject_dir);
    DIR *d = opendir(path);
    if (!d) return seg_err(SEG_EIO, "%s: cannot open segmentations folder", path);
    struct dirent *e;
    int rc = SEG_OK;
    while (rc == SEG_OK && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        char name[512];
        if (n > 7 && n < sizeof name && !strcmp(e->d_name + n - 7, ".nii.gz")) { memcpy(name, e->d_name, n - 7); name[n - 7] = 0; }
        else if (n > 4 && n < sizeof name && !strcmp(e->d_name + n - 4, ".nii")) { memcpy(name, e->d_name, n - 4); name[n - 4] = 0; }
        else continue;
        rc = strlist_push(out, name);
    }
    closedir(d);
    if (out->n) qsort(out->v, (size_t)out->n, sizeof(char *), cmp_str);
    return rc;
}

static int choose_labels(const char *dataset, const char *first, const PrepOptions *o, LabelList *labels)
{
    if (o->labels_file) return labels_read_file(o->labels_file, labels);
    char dir[4200];
    PrepNames names = { 0 };
    snprintf(dir, sizeof dir, "%s/%s", dataset, first);
    int rc = list_masks(dir, &names);
    if (rc == SEG_OK && names.n == 0) rc = seg_err(SEG_EFORMAT, "%s/segmentations: no masks to define the labels", dir);
    if (rc == SEG_OK) {
        if (labels_is_ts_total((const char *const *)names.v, names.n))
            rc = labels_from_names(labels_ts_total, LABELS_TS_TOTAL_N, labels);
        else
            rc = labels_from_names((const char *const *)names.v, names.n, labels);
    }
    prep_names_free(&names);
    return rc;
}

int prep_subject_split(const SplitTable *t, int n_subjects, const char *id)
{
    const int sp = t ? split_lookup(t, id) : -1;
    return sp >= 0 ? sp : !t && n_subjects < PREP_SMALL_DATASET ? CACHE_SPLIT_TRAIN : split_hash(id);
}

typedef struct Failure { char id[CACHE_ID_MAX]; char msg[600]; } Failure;

/* A subject whose segmentations folder d2 lacks n_missing of the label files (NULL in paths):
 * lists every missing name on stderr, once. With --missing-masks empty the subject goes on
 * partly labelled (SEG_OK, or an error when no mask at all is there); else SEG_EIO. */
static int missing_masks(const PrepOptions *o, const char *d2, const LabelList *labels, char *const *paths, int n_missing,
                         int bar_drawn)
{
    if (o->verbosity >= 1 && (!o->missing_empty || o->verbosity >= 2)) {
        if (bar_drawn) fputc('\n', stderr);
        fprintf(stderr, "segprep: %s: %d of %d mask files missing%s:", d2, n_missing, labels->n,
                o->missing_empty ? " (cached as unlabelled)" : "");
        for (int c = 0; c < labels->n; c++)
            if (!paths[c]) fprintf(stderr, " %s", labels->names[c]);
        fputc('\n', stderr);
    }
    if (n_missing == labels->n) return seg_err(SEG_EIO, "%s: no mask file of any of the %d structures", d2, labels->n);
    if (o->missing_empty) return SEG_OK;
    int first = 0;
    while (paths[first]) first++;
    return seg_err(SEG_EIO, "%s: %d missing masks (%s.nii.gz%s); --missing-masks empty caches the subject partly labelled",
                   d2, n_missing, labels->names[first], n_missing > 1 ? " and others, listed above" : "");
}

/* The cache folder must not be the dataset or inside it, and a non-empty folder must be a
 * segkit cache (data.mdb), never some other folder that LMDB files would be dropped into. */
static int check_cache_dir(const char *dataset, const char *cache_dir)
{
    char rd[PATH_MAX], rc_[PATH_MAX], probe[PATH_MAX];
    if (!realpath(dataset, rd)) return seg_err(SEG_EIO, "%s: cannot open dataset directory", dataset);
    /* the cache may not exist yet: resolve its nearest existing ancestor */
    snprintf(probe, sizeof probe, "%s", cache_dir);
    char tail[PATH_MAX] = "";
    while (!realpath(probe, rc_)) {
        char *sl = strrchr(probe, '/');
        char t2[PATH_MAX];
        snprintf(t2, sizeof t2, "/%s%s", sl ? sl + 1 : probe, tail);
        snprintf(tail, sizeof tail, "%s", t2);
        if (!sl) { if (!getcwd(rc_, sizeof rc_)) return seg_err(SEG_EIO, "getcwd"); break; }
        if (sl == probe) { snprintf(rc_, sizeof rc_, "/"); break; }
        *sl = 0;
    }
    char full[2 * PATH_MAX];
    snprintf(full, sizeof full, "%s%s", strcmp(rc_, "/") ? rc_ : "", tail);
    const size_t nd = strlen(rd);
    if (!strcmp(full, rd))
        return seg_err(SEG_EARG, "%s: the cache folder is the dataset folder; give the cache its own folder", cache_dir);
    if (!strncmp(full, rd, nd) && full[nd] == '/')
        return seg_err(SEG_EARG, "%s: the cache folder is inside the dataset %s; put it outside the dataset", cache_dir, dataset);
    DIR *d = opendir(cache_dir);
    if (!d) return SEG_OK;   /* a new folder */
    struct dirent *e;
    char other[256] = "";
    int has_db = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!strcmp(e->d_name, "data.mdb")) has_db = 1;
        else if (strcmp(e->d_name, "lock.mdb") && strcmp(e->d_name, "label_map.json") && !other[0])
            snprintf(other, sizeof other, "%s", e->d_name);
    }
    closedir(d);
    if (!has_db && other[0])
        return seg_err(SEG_EARG, "%s: not empty and not a segkit cache (holds %s, no data.mdb); use an empty or new folder",
                       cache_dir, other);
    return SEG_OK;
}

/* --labels names checked against the first subject's mask files, up front: every name
 * with no file there is listed in one error (unless --missing-masks empty). */
static int check_label_names(const char *dataset, const char *first, const PrepOptions *o, const LabelList *labels)
{
    char dir[4200];
    PrepNames have = { 0 };
    snprintf(dir, sizeof dir, "%s/%s", dataset, first);
    TRY(list_masks(dir, &have));
    char msg[700] = "";
    int n_bad = 0, k = 0;
    for (int c = 0; c < labels->n; c++) {
        int found = 0;
        for (int j = 0; j < have.n && !found; j++) found = !strcmp(have.v[j], labels->names[c]);
        if (found) continue;
        if (n_bad++ < 12 && k < (int)sizeof msg - 1) k += snprintf(msg + k, sizeof msg - (size_t)k, "%s%s", n_bad > 1 ? ", " : "", labels->names[c]);
    }
    prep_names_free(&have);
    if (!n_bad || o->missing_empty) return SEG_OK;
    return seg_err(SEG_EARG, "%s: %d of its %d names have no mask file in %s/segmentations (%s%s); check the names, or use "
                   "--missing-masks empty for partly labelled data", o->labels_file, n_bad, labels->n, dir, msg,
                   n_bad > 12 ? ", ..." : "");
}

/* Cached subjects with no folder in the dataset any more: reported, removed with --prune. */
static int prune_gone(CacheWriter *w, const PrepNames *subs, const PrepOptions *o, PrepStats *st)
{
    char **ids;
    int n;
    TRY(cache_writer_ids(w, &ids, &n));
    int rc = SEG_OK;
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (int j = 0; j < subs->n && !found; j++) found = !strcmp(subs->v[j], ids[i]);
        if (found) continue;
        if (o->prune && rc == SEG_OK) rc = cache_writer_remove(w, ids[i]);
        if (rc == SEG_OK) st->n_gone++;
        if (rc == SEG_OK && o->verbosity >= 1)
            fprintf(stderr, "segprep: cached subject %s is no longer in the dataset: %s\n", ids[i],
                    o->prune ? "removed (--prune)" : "kept; --prune removes it");
    }
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
    return rc;
}

int prep_run(const char *dataset, const char *cache_dir, const PrepOptions *o, PrepStats *st)
{
    PrepNames subs = { 0 };
    LabelList labels = { 0 };
    SplitTable split = { 0 };
    CacheWriter *w = NULL;
    PrepSubjectCtx *ctx = NULL;
    Failure *fails = NULL;
    char **mask_paths = NULL, **use_paths = NULL;
    int have_split = 0, rc;
    memset(st, 0, sizeof *st);
    double t0 = util_now_s();

    if ((rc = check_cache_dir(dataset, cache_dir)) < 0) goto out;
    if ((rc = prep_list_subjects(dataset, o->verbosity, &subs, &st->n_folders_skipped)) < 0) goto out;
    if ((rc = choose_labels(dataset, subs.v[0], o, &labels)) < 0) goto out;
    if (o->labels_file && (rc = check_label_names(dataset, subs.v[0], o, &labels)) < 0) goto out;
    char split_path[4200];
    if (o->split_file) snprintf(split_path, sizeof split_path, "%s", o->split_file);
    else snprintf(split_path, sizeof split_path, "%s/meta.csv", dataset);
    if (o->split_file || fs_is_file(split_path)) {
        if ((rc = split_read_csv(split_path, &split)) < 0) goto out;
        have_split = 1;
        for (int i = 0; i < split.n; i++) {   /* ids with no subject folder: said, once each */
            int found = 0;
            for (int j = 0; j < subs.n && !found; j++) found = !strcmp(subs.v[j], split.ids[i]);
            if (found) continue;
            st->n_split_unmatched++;
            if (o->verbosity >= 1)
                fprintf(stderr, "segprep: %s names %s, but %s/%s is not a subject folder (missing, or no ct.nii.gz)\n",
                        split_path, split.ids[i], dataset, split.ids[i]);
        }
    }
    if ((rc = cache_writer_open(cache_dir, o->size, &labels, &w)) < 0) goto out;
    char lm[4200];
    snprintf(lm, sizeof lm, "%s/label_map.json", cache_dir);
    if ((rc = labels_write_json(lm, &labels)) < 0) goto out;
    if ((rc = prep_subject_ctx_create(o->threads, o->zstd_level, &ctx)) < 0) goto out;
    mask_paths = calloc((size_t)labels.n, sizeof(char *));
    use_paths = calloc((size_t)labels.n, sizeof(char *));
    fails = calloc((size_t)subs.n, sizeof(Failure));
    if (!mask_paths || !use_paths || !fails) { rc = seg_err(SEG_ENOMEM, "subject lists"); goto out; }
    for (int c = 0; c < labels.n; c++)
        if (!(mask_paths[c] = malloc(4300))) { rc = seg_err(SEG_ENOMEM, "paths"); goto out; }

    int n = o->limit > 0 && o->limit < subs.n ? o->limit : subs.n, warned_split = 0;
    st->n_subjects = n;
    if (o->verbosity >= 3)
        fprintf(stderr, "segprep: %d subjects, %d structures, %dx%d slices, %d threads, cache %s\n", n, labels.n,
                o->size, o->size, o->threads, cache_dir);
    Progress pr;
    progress_start(&pr, "segprep", "subjects", n, o->verbosity >= 2, o->progress_tty);
    for (int i = 0; i < n; i++) {
        const char *id = subs.v[i];
        char extra[96];
        snprintf(extra, sizeof extra, "%lld slices, %d failed", (long long)st->n_slices, st->n_failed);
        progress_update(&pr, i, extra);
        pr.done = i + 1;
        char sdir[4200], ct[4300];
        snprintf(sdir, sizeof sdir, "%s/%s", dataset, id);
        prep_find_nifti(ct, sizeof ct, sdir, "ct");
        int srt = SEG_OK, n_missing = 0;
        char d2[4250];
        snprintf(d2, sizeof d2, "%s/segmentations", sdir);
        for (int c = 0; c < labels.n; c++) {
            use_paths[c] = mask_paths[c];
            if (!prep_find_nifti(mask_paths[c], 4300, d2, labels.names[c])) { use_paths[c] = NULL; n_missing++; }
        }
        const uint64_t fp = prep_fingerprint(o->size, &labels, ct, use_paths);
        const int sp = prep_subject_split(have_split ? &split : NULL, subs.n, id);
        if (!warned_split && o->verbosity >= 2 && (!have_split ? subs.n < PREP_SMALL_DATASET : split_lookup(&split, id) < 0)) {
            warned_split = 1;
            if (!have_split) fprintf(stderr, "segprep: note: %d subjects and no meta.csv: all go to the train split\n", subs.n);
            else fprintf(stderr, "segprep: note: %s is not in %s; such subjects get the hash split\n", id, split_path);
        }
        CacheSubject old;
        const int have = o->force ? 0 : cache_writer_get(w, id, &old);
        if (have < 0) srt = have;
        else if (have && old.fp_inputs == fp) {   /* unchanged inputs: at most the split moves */
            if (old.split != sp) {
                if ((srt = cache_writer_set_split(w, id, sp)) == SEG_OK) {
                    st->n_split_changed++;
                    if (o->verbosity >= 1) {
                        if (pr.tty && pr.drawn) fputc('\n', stderr);
                        fprintf(stderr, "segprep: %s: split %s -> %s (not re-prepped: its files are unchanged)\n", id,
                                cache_split_name(old.split), cache_split_name(sp));
                    }
                }
            }
            if (srt == SEG_OK) { st->n_skipped++; continue; }
        } else if (have) {
            st->n_replaced++;
            if (o->verbosity >= 1) {
                if (pr.tty && pr.drawn) fputc('\n', stderr);
                fprintf(stderr, "segprep: %s: %s; re-prepping it (the cached one stays until the new one is written)\n", id,
                        old.fp_inputs ? "its files changed since it was cached" : "cached without a fingerprint (older segprep)");
            }
        }
        if (srt == SEG_OK && n_missing) srt = missing_masks(o, d2, &labels, use_paths, n_missing, pr.tty && pr.drawn);
        CacheSubject geo;
        CacheRecord *recs = NULL;
        int64_t bin = 0;
        if (srt == SEG_OK) srt = prep_subject(ctx, ct, use_paths, labels.n, o->size, &geo, &recs, &bin);
        if (srt == SEG_OK && n_missing) {
            geo.partial = 1;
            for (int c = 0; c < labels.n; c++)
                if (use_paths[c]) maskpack_set(geo.labelled, c);
            st->n_partial++;
        }
        if (srt == SEG_OK) {
            snprintf(geo.id, sizeof geo.id, "%s", id);
            geo.fp_inputs = fp;
            geo.split = sp;
            srt = cache_writer_put_subject(w, &geo, recs);
            if (srt == SEG_OK) {
                st->n_done++;
                st->n_slices += geo.n_slices;
                st->bytes_in += bin;
                for (int z = 0; z < geo.n_slices; z++) st->bytes_out += (int64_t)recs[z].size;
            }
            for (int z = 0; z < geo.n_slices; z++) free(recs[z].data);
            free(recs);
        }
        if (srt < 0) {
            Failure *f = &fails[st->n_failed++];
            snprintf(f->id, sizeof f->id, "%s", id);
            snprintf(f->msg, sizeof f->msg, "%s", seg_errmsg());
            if (o->verbosity >= 1) {
                if (pr.tty && pr.drawn) fputc('\n', stderr);
                fprintf(stderr, "segprep: subject %s failed: %s\n", id, f->msg);
            }
            if (o->strict) break;
            if (srt == SEG_EIO && strstr(f->msg, "writing subject")) { rc = srt; break; }   /* disk full: stop */
        }
    }
    if (rc == SEG_OK) rc = prune_gone(w, &subs, o, st);
    st->seconds = util_now_s() - t0;
    char extra[128];
    snprintf(extra, sizeof extra, "%lld slices, %d done, %d skipped, %d failed", (long long)st->n_slices, st->n_done,
             st->n_skipped, st->n_failed);
    progress_finish(&pr, extra);
    if (st->n_failed && o->verbosity >= 1) {
        fprintf(stderr, "segprep: %d subject(s) failed and are not in the cache:\n", st->n_failed);
        for (int i = 0; i < st->n_failed; i++) fprintf(stderr, "  %s: %s\n", fails[i].id, fails[i].msg);
    }
out:
    if (mask_paths)
        for (int c = 0; c < labels.n; c++) free(mask_paths[c]);
    free(mask_paths);
    free(use_paths);
    free(fails);
    prep_subject_ctx_free(ctx);
    cache_writer_close(w);
    split_free(&split);
    labels_free(&labels);
    prep_names_free(&subs);
    return rc;
}
