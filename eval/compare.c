/* eval/compare.c : layouts of reference / prediction sets, pairing, label names, and
 * loading a pair into the radiological slice view. */
#include "compare.h"
#include "err.h"
#include "fsutil.h"
#include "nii.h"
#include "orient.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names and folders ---- */

static int is_nifti(const char *name)
{
    size_t n = strlen(name);
    return (n > 4 && !strcmp(name + n - 4, ".nii")) || (n > 7 && !strcmp(name + n - 7, ".nii.gz"));
}

/* name without .nii / .nii.gz into out[cap] */
static void stem_of(const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s", name);
    size_t n = strlen(out);
    if (n > 7 && !strcmp(out + n - 7, ".nii.gz")) out[n - 7] = 0;
    else if (n > 4 && !strcmp(out + n - 4, ".nii")) out[n - 4] = 0;
}

static void base_name(const char *path, char *out, size_t cap)
{
    char tmp[COMPARE_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    const char *b = strrchr(tmp, '/');
    snprintf(out, cap, "%s", b ? b + 1 : tmp);
}

static void dir_name(const char *path, char *out, size_t cap)
{
    char tmp[COMPARE_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    char *b = strrchr(tmp, '/');
    if (!b) snprintf(out, cap, ".");
    else if (b == tmp) snprintf(out, cap, "/");
    else { *b = 0; snprintf(out, cap, "%s", tmp); }
}

typedef struct Listing { int n, cap; char **names; } Listing;

static void listing_free(Listing *l)
{
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted entries of dir: NIfTI files (want_dirs = 0) or sub-folders (want_dirs = 1). */
static int list_dir(const char *dir, int want_dirs, Listing *out)
{
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) return seg_err(SEG_EIO, "%s: cannot open folder", dir);
    struct dirent *e;
    int rc = SEG_OK;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char p[COMPARE_PATH_MAX];
        if (fs_join(p, sizeof p, dir, e->d_name) < 0) continue;
        if (want_dirs ? !fs_is_dir(p) : !(is_nifti(e->d_name) && fs_is_file(p))) continue;
        if (out->n == out->cap) {
            int nc = out->cap ? out->cap * 2 : 64;
            char **nn = realloc(out->names, sizeof(char *) * (size_t)nc);
            if (!nn) { rc = seg_err(SEG_ENOMEM, "listing %s", dir); break; }
            out->names = nn; out->cap = nc;
        }
        if (!(out->names[out->n] = strdup(e->d_name))) { rc = seg_err(SEG_ENOMEM, "listing %s", dir); break; }
        out->n++;
    }
    closedir(d);
    if (rc < 0) { listing_free(out); return rc; }
    if (out->n) qsort(out->names, (size_t)out->n, sizeof(char *), cmp_str);
    return SEG_OK;
}

static int find_nifti(const char *dir, const char *stem, char *out, size_t cap)
{
    char name[512];
    snprintf(name, sizeof name, "%s.nii.gz", stem);
    if (fs_join(out, cap, dir, name) == 0 && fs_is_file(out)) return 1;
    snprintf(name, sizeof name, "%s.nii", stem);
    if (fs_join(out, cap, dir, name) == 0 && fs_is_file(out)) return 1;
    out[0] = 0;
    return 0;
}

/* ---- layouts ---- */

typedef struct Entry { char id[128]; CompareSide side; char ct[COMPARE_PATH_MAX]; } Entry;
typedef struct Found { int set; int n; Entry *e; } Found;

static int known_name(const char *stem, const LabelList *hint)
{
    if (hint && hint->n) return labels_find(hint, stem) >= 0;
    for (int i = 0; i < LABELS_TS_TOTAL_N; i++)
        if (!strcmp(labels_ts_total[i], stem)) return 1;
    return 0;
}

/* A subject folder: segmentations/ (masks) or segmentation.nii.gz (multilabel). 1 if so. */
static int subject_dir(const char *dir, Entry *e)
{
    char p[COMPARE_PATH_MAX];
    memset(e, 0, sizeof *e);
    base_name(dir, e->id, sizeof e->id);
    find_nifti(dir, "ct", e->ct, sizeof e->ct);
    if (fs_join(p, sizeof p, dir, "segmentations") == 0 && fs_is_dir(p)) {
        e->side.kind = COMPARE_MASKDIR;
        snprintf(e->side.path, sizeof e->side.path, "%s", p);
        return 1;
    }
    if (find_nifti(dir, "segmentation", p, sizeof p)) {
        e->side.kind = COMPARE_MULTILABEL;
        snprintf(e->side.path, sizeof e->side.path, "%s", p);
        return 1;
    }
    return 0;
}

static int push_entry(Found *f, const Entry *e)
{
    Entry *ne = realloc(f->e, sizeof(Entry) * (size_t)(f->n + 1));
    if (!ne) return seg_err(SEG_ENOMEM, "compare: %d subjects", f->n + 1);
    f->e = ne;
    f->e[f->n++] = *e;
    return SEG_OK;
}

static int classify(const char *path, const LabelList *hint, Found *out)
{
    memset(out, 0, sizeof *out);
    Entry e;
    memset(&e, 0, sizeof e);
    if (fs_is_file(path)) {
        if (!is_nifti(path)) return seg_err(SEG_EFORMAT, "%s: not a NIfTI file (.nii or .nii.gz)", path);
        char b[512];
        base_name(path, b, sizeof b);
        stem_of(b, e.id, sizeof e.id);
        e.side.kind = COMPARE_MULTILABEL;
        snprintf(e.side.path, sizeof e.side.path, "%s", path);
        char d[COMPARE_PATH_MAX];
        dir_name(path, d, sizeof d);
        if (!strcmp(e.id, "segmentation")) { base_name(d, e.id, sizeof e.id); find_nifti(d, "ct", e.ct, sizeof e.ct); }
        return push_entry(out, &e);
    }
    if (!fs_is_dir(path)) return seg_err(SEG_EIO, "%s: no such file or folder", path);
    if (subject_dir(path, &e)) return push_entry(out, &e);
    char b[512];
    base_name(path, b, sizeof b);
    Listing files, dirs;
    TRY(list_dir(path, 0, &files));
    int rc = list_dir(path, 1, &dirs);
    if (rc < 0) { listing_free(&files); return rc; }
    int n_known = 0;
    for (int i = 0; i < files.n; i++) {
        char st[512];
        stem_of(files.names[i], st, sizeof st);
        n_known += known_name(st, hint);
    }
    if (!strcmp(b, "segmentations") || n_known > 0) {
        char parent[COMPARE_PATH_MAX];
        dir_name(path, parent, sizeof parent);
        if (!strcmp(b, "segmentations")) { base_name(parent, e.id, sizeof e.id); find_nifti(parent, "ct", e.ct, sizeof e.ct); }
        else { snprintf(e.id, sizeof e.id, "%s", b); find_nifti(path, "ct", e.ct, sizeof e.ct); }
        e.side.kind = COMPARE_MASKDIR;
        snprintf(e.side.path, sizeof e.side.path, "%s", path);
        rc = push_entry(out, &e);
        goto done;
    }
    out->set = 1;
    for (int i = 0; i < dirs.n && rc == SEG_OK; i++) {
        char p[COMPARE_PATH_MAX];
        if (fs_join(p, sizeof p, path, dirs.names[i]) < 0) continue;
        if (subject_dir(p, &e)) rc = push_entry(out, &e);
    }
    if (rc == SEG_OK && out->n == 0) {
        /* nnU-Net: one multilabel file per case; images in ../imagesT?/<case>_0000.nii.gz */
        char parent[COMPARE_PATH_MAX], imgdir[COMPARE_PATH_MAX];
        dir_name(path, parent, sizeof parent);
        imgdir[0] = 0;
        if (!strncmp(b, "labels", 6)) {
            char alt[64];
            snprintf(alt, sizeof alt, "images%s", b + 6);
            fs_join(imgdir, sizeof imgdir, parent, alt);
        }
        for (int i = 0; i < files.n && rc == SEG_OK; i++) {
            memset(&e, 0, sizeof e);
            stem_of(files.names[i], e.id, sizeof e.id);
            e.side.kind = COMPARE_MULTILABEL;
            fs_join(e.side.path, sizeof e.side.path, path, files.names[i]);
            if (imgdir[0]) {
                char st[300];
                snprintf(st, sizeof st, "%s_0000", e.id);
                find_nifti(imgdir, st, e.ct, sizeof e.ct);
            }
            rc = push_entry(out, &e);
        }
    }
    if (rc == SEG_OK && out->n == 0)
        rc = seg_err(SEG_EFORMAT, "%s: no segmentation found (expected a multilabel .nii.gz, a segmentations/ "
                     "folder, masks named after structures, or subject folders)", path);
done:
    listing_free(&files);
    listing_free(&dirs);
    if (rc < 0) { free(out->e); memset(out, 0, sizeof *out); }
    return rc;
}

/* ---- labels ---- */

/* nnU-Net dataset.json "labels": v2 {"name": value} or v1 {"value": "name"}. 1 if parsed. */
static int labels_from_dataset_json(const char *path, ComparePlan *p)
{
    char *text = NULL;
    size_t n = 0;
    if (fs_read_all(path, &text, &n, 16u << 20) < 0) return 0;
    cJSON *root = cJSON_ParseWithLength(text, n);
    free(text);
    const cJSON *lab = root ? cJSON_GetObjectItemCaseSensitive(root, "labels") : NULL;
    if (!cJSON_IsObject(lab)) { cJSON_Delete(root); return 0; }
    int maxv = 0, cnt = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, lab) {
        int v = cJSON_IsNumber(it) ? it->valueint : cJSON_IsString(it) ? atoi(it->string) : -1;
        if (cJSON_IsArray(it)) v = -1;   /* region-based training: not a label value */
        if (v > maxv) maxv = v;
        if (v > 0) cnt++;
    }
    if (cnt == 0 || maxv > 65535) { cJSON_Delete(root); return 0; }
    const char **names = calloc((size_t)maxv + 1, sizeof *names);
    if (!names) { cJSON_Delete(root); return 0; }
    cJSON_ArrayForEach(it, lab) {
        if (cJSON_IsNumber(it) && it->valueint > 0 && it->valueint <= maxv) names[it->valueint] = it->string;
        else if (cJSON_IsString(it) && atoi(it->string) > 0) names[atoi(it->string)] = it->valuestring;
    }
    const char **list = calloc((size_t)cnt, sizeof *list);
    p->value_to_struct = malloc(sizeof(int) * ((size_t)maxv + 1));
    int ok = list && p->value_to_struct, k = 0;
    for (int v = 0; ok && v <= maxv; v++) {
        p->value_to_struct[v] = -1;
        if (v > 0 && names[v] && k < cnt) { list[k] = names[v]; p->value_to_struct[v] = k++; }
    }
    ok = ok && labels_from_names(list, k, &p->labels) == SEG_OK;
    if (ok) {
        p->n_values = maxv + 1;
        snprintf(p->labels_from, sizeof p->labels_from, "%s", path);
    } else { free(p->value_to_struct); p->value_to_struct = NULL; }
    free(list);
    free(names);
    cJSON_Delete(root);
    return ok;
}

static int identity_values(ComparePlan *p)
{
    p->n_values = p->labels.n + 1;
    p->value_to_struct = malloc(sizeof(int) * (size_t)p->n_values);
    if (!p->value_to_struct) return seg_err(SEG_ENOMEM, "compare: label table");
    p->value_to_struct[0] = -1;
    for (int v = 1; v < p->n_values; v++) p->value_to_struct[v] = v - 1;
    return SEG_OK;
}

/* Mask names found in every mask folder of both sides (the union, sorted). */
static int mask_names(const ComparePlan *p, Listing *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < p->n; i++)
        for (int side = 0; side < 2; side++) {
            const CompareSide *s = side ? &p->pairs[i].pred : &p->pairs[i].ref;
            if (s->kind != COMPARE_MASKDIR) continue;
            Listing l;
            TRY(list_dir(s->path, 0, &l));
            for (int j = 0; j < l.n; j++) {
                char st[512];
                stem_of(l.names[j], st, sizeof st);
                if (!strcmp(st, "ct")) continue;
                int dup = 0;
                for (int k = 0; k < out->n && !dup; k++) dup = !strcmp(out->names[k], st);
                if (dup) continue;
                if (out->n == out->cap) {
                    int nc = out->cap ? out->cap * 2 : 128;
                    char **nn = realloc(out->names, sizeof(char *) * (size_t)nc);
                    if (!nn) { listing_free(&l); return seg_err(SEG_ENOMEM, "compare: names"); }
                    out->names = nn; out->cap = nc;
                }
                out->names[out->n++] = strdup(st);
            }
            listing_free(&l);
        }
    if (out->n) qsort(out->names, (size_t)out->n, sizeof(char *), cmp_str);
    return SEG_OK;
}

static int settle_labels(ComparePlan *p, const char *labels_file)
{
    int any_ml = 0;
    for (int i = 0; i < p->n; i++)
        any_ml |= p->pairs[i].ref.kind == COMPARE_MULTILABEL || p->pairs[i].pred.kind == COMPARE_MULTILABEL;
    if (labels_file) {
        if (labels_from_dataset_json(labels_file, p)) return SEG_OK;
        int rc = labels_read_file(labels_file, &p->labels);
        if (rc < 0) return rc;
        snprintf(p->labels_from, sizeof p->labels_from, "%s", labels_file);
        return identity_values(p);
    }
    if (any_ml) {
        /* a dataset.json next to the multilabel files (nnU-Net) */
        for (int i = 0; i < p->n && i < 1; i++)
            for (int side = 0; side < 2; side++) {
                const CompareSide *s = side ? &p->pairs[i].pred : &p->pairs[i].ref;
                if (s->kind != COMPARE_MULTILABEL) continue;
                char d[COMPARE_PATH_MAX], dj[COMPARE_PATH_MAX];
                dir_name(s->path, d, sizeof d);
                for (int up = 0; up < 2; up++) {
                    if (fs_join(dj, sizeof dj, d, "dataset.json") == 0 && fs_is_file(dj) && labels_from_dataset_json(dj, p))
                        return SEG_OK;
                    char pd[COMPARE_PATH_MAX];
                    dir_name(d, pd, sizeof pd);
                    snprintf(d, sizeof d, "%s", pd);
                }
            }
    }
    Listing names;
    TRY(mask_names(p, &names));
    int all_ts = 1;
    for (int i = 0; i < names.n && all_ts; i++) all_ts = known_name(names.names[i], NULL);
    int rc;
    if (all_ts) {
        rc = labels_from_names(labels_ts_total, LABELS_TS_TOTAL_N, &p->labels);
        snprintf(p->labels_from, sizeof p->labels_from, "TotalSegmentator v2 'total' (117 structures, built in)");
    } else if (any_ml) {
        rc = seg_err(SEG_EFORMAT, "mask names such as '%s' are not TotalSegmentator's and a multilabel file needs "
                     "their label values: pass --labels (label_map.json or dataset.json)",
                     names.n ? names.names[0] : "?");
    } else {
        rc = labels_from_names((const char *const *)names.names, names.n, &p->labels);
        snprintf(p->labels_from, sizeof p->labels_from, "mask file names (%d, sorted)", names.n);
    }
    listing_free(&names);
    if (rc < 0) return rc;
    return identity_values(p);
}

static void note_unknown_files(ComparePlan *p)
{
    for (int i = 0; i < p->n && i < 1; i++)
        for (int side = 0; side < 2; side++) {
            const CompareSide *s = side ? &p->pairs[i].pred : &p->pairs[i].ref;
            if (s->kind != COMPARE_MASKDIR) continue;
            Listing l;
            if (list_dir(s->path, 0, &l) < 0) continue;
            for (int j = 0; j < l.n; j++) {
                char st[256];
                stem_of(l.names[j], st, sizeof st);
                if (strcmp(st, "ct") && labels_find(&p->labels, st) < 0) {
                    if (!p->n_unknown_files++) snprintf(p->unknown_example, sizeof p->unknown_example, "%s", l.names[j]);
                }
            }
            listing_free(&l);
        }
}

static int cmp_pair(const void *a, const void *b) { return strcmp(((const ComparePair *)a)->id, ((const ComparePair *)b)->id); }

int compare_plan(const char *ref, const char *pred, const char *labels_file, ComparePlan *out)
{
    memset(out, 0, sizeof *out);
    LabelList hint = { 0, NULL };
    if (labels_file && !labels_from_dataset_json(labels_file, out)) TRY(labels_read_file(labels_file, &hint));
    if (out->labels.n) { hint = out->labels; memset(&out->labels, 0, sizeof out->labels); free(out->value_to_struct); out->value_to_struct = NULL; out->n_values = 0; }
    Found fr, fp;
    int rc = classify(ref, &hint, &fr);
    if (rc < 0) { labels_free(&hint); return rc; }
    rc = classify(pred, &hint, &fp);
    labels_free(&hint);
    if (rc < 0) { free(fr.e); return rc; }
    if (fr.set != fp.set) {
        rc = seg_err(SEG_EMISMATCH, "%s is %s but %s is %s: give two single subjects or two sets",
                     ref, fr.set ? "a set of subjects" : "one subject", pred, fp.set ? "a set of subjects" : "one subject");
        goto out;
    }
    out->pairs = calloc((size_t)fr.n, sizeof *out->pairs);
    if (!out->pairs) { rc = seg_err(SEG_ENOMEM, "compare: %d pairs", fr.n); goto out; }
    int missing = 0;
    char miss_list[512] = "";
    for (int i = 0; i < fr.n; i++) {
        int j = -1;
        if (!fr.set) j = 0;
        else
            for (int k = 0; k < fp.n && j < 0; k++)
                if (!strcmp(fr.e[i].id, fp.e[k].id)) j = k;
        if (j < 0) {
            if (missing++ < 5) {
                size_t l = strlen(miss_list);
                snprintf(miss_list + l, sizeof miss_list - l, "%s%s", l ? ", " : "", fr.e[i].id);
            }
            continue;
        }
        ComparePair *pp = &out->pairs[out->n++];
        snprintf(pp->id, sizeof pp->id, "%s", fr.e[i].id);
        pp->ref = fr.e[i].side;
        pp->pred = fp.e[j].side;
        snprintf(pp->ct, sizeof pp->ct, "%s", fr.e[i].ct[0] ? fr.e[i].ct : fp.e[j].ct);
    }
    if (missing) {
        rc = seg_err(SEG_EMISMATCH, "%d reference subject(s) have no prediction in %s: %s%s", missing, pred, miss_list,
                     missing > 5 ? ", ..." : "");
        goto out;
    }
    out->n_extra_pred = fp.n - out->n;
    qsort(out->pairs, (size_t)out->n, sizeof *out->pairs, cmp_pair);
    rc = settle_labels(out, labels_file);
    if (rc == SEG_OK) note_unknown_files(out);
out:
    free(fr.e);
    free(fp.e);
    if (rc < 0) compare_plan_free(out);
    return rc;
}

void compare_plan_free(ComparePlan *p)
{
    if (!p) return;
    free(p->pairs);
    free(p->value_to_struct);
    labels_free(&p->labels);
    memset(p, 0, sizeof *p);
}

/* ---- loading ---- */

static int same_grid(const NiiVolume *a, const NiiVolume *b)
{
    for (int i = 0; i < 3; i++)
        if (a->dim[i] != b->dim[i]) return 0;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) {
            double tol = c == 3 ? 1e-3 : 1e-4 * (1.0 + fabs(a->affine[r][c]));
            if (fabs(a->affine[r][c] - b->affine[r][c]) > tol) return 0;
        }
    return 1;
}

static int grid_error(const char *what, const NiiVolume *a, const char *pa, const NiiVolume *b)
{
    return seg_err(SEG_EMISMATCH, "%s: grid %lldx%lldx%lld (origin %.2f,%.2f,%.2f) differs from the reference %s "
                   "%lldx%lldx%lld (origin %.2f,%.2f,%.2f): compare needs both on the same grid",
                   what, (long long)b->dim[0], (long long)b->dim[1], (long long)b->dim[2], b->affine[0][3], b->affine[1][3],
                   b->affine[2][3], pa, (long long)a->dim[0], (long long)a->dim[1], (long long)a->dim[2], a->affine[0][3],
                   a->affine[1][3], a->affine[2][3]);
}

/* Integer value of voxel i (raw fast paths for the usual mask types). */
static inline long voxel_int(const NiiVolume *v, size_t i)
{
    if (v->slope == 1.0 && v->inter == 0.0) {
        switch (v->datatype) {
        case NII_UINT8: return ((const uint8_t *)v->data)[i];
        case NII_INT16: return ((const int16_t *)v->data)[i];
        case NII_UINT16: return ((const uint16_t *)v->data)[i];
        case NII_INT32: return ((const int32_t *)v->data)[i];
        default: break;
        }
    }
    return lround(nii_value(v, i));
}

/* Add the voxels of v (mask or multilabel) into stack structure s (s < 0: multilabel). */
static int fill_stack(const ComparePlan *p, const OrientMap *om, const NiiVolume *v, int s, MetricsStack *st,
                      int64_t *n_unknown)
{
    for (int k = 0; k < st->nz; k++)
        for (int r = 0; r < st->ny; r++)
            for (int c = 0; c < st->nx; c++) {
                long val = voxel_int(v, (size_t)orient_slice_offset(om, r, c, k));
                if (val == 0) continue;
                int t = s;
                if (s < 0) {
                    t = val > 0 && val < p->n_values ? p->value_to_struct[val] : -1;
                    if (t < 0) { if (t == -1 && n_unknown) (*n_unknown)++; continue; }   /* -2: left out by --only */
                }
                TRY(metrics_stack_set(st, t, c, r, k));
            }
    return SEG_OK;
}

static int load_side(const ComparePlan *p, const CompareSide *side, const NiiVolume *geo, const char *geo_path,
                     const OrientMap *om, MetricsStack *st, int64_t *n_unknown)
{
    NiiVolume *v = NULL;
    int rc = SEG_OK;
    if (side->kind == COMPARE_MULTILABEL) {
        TRY(nii_read(side->path, &v));
        if (!same_grid(geo, v)) rc = grid_error(side->path, geo, geo_path, v);
        else rc = fill_stack(p, om, v, -1, st, n_unknown);
        nii_free(v);
        return rc;
    }
    for (int s = 0; s < p->labels.n && rc == SEG_OK; s++) {
        char path[COMPARE_PATH_MAX];
        if (!find_nifti(side->path, p->labels.names[s], path, sizeof path)) continue;   /* absent: empty */
        if ((rc = nii_read(path, &v)) < 0) break;
        if (!same_grid(geo, v)) rc = grid_error(path, geo, geo_path, v);
        else rc = fill_stack(p, om, v, s, st, NULL);
        nii_free(v);
        v = NULL;
    }
    return rc;
}

/* Any NIfTI file of the side, for the grid. */
static int side_geometry_path(const ComparePlan *p, const CompareSide *side, char *out, size_t cap)
{
    if (side->kind == COMPARE_MULTILABEL) { snprintf(out, cap, "%s", side->path); return SEG_OK; }
    for (int s = 0; s < p->labels.n; s++)
        if (find_nifti(side->path, p->labels.names[s], out, cap)) return SEG_OK;
    return seg_err(SEG_EFORMAT, "%s: none of the %d structures has a mask file", side->path, p->labels.n);
}

int compare_load(const ComparePlan *p, int i, ReportSubject *s, int64_t *n_unknown)
{
    memset(s, 0, sizeof *s);
    if (n_unknown) *n_unknown = 0;
    const ComparePair *pp = &p->pairs[i];
    snprintf(s->id, sizeof s->id, "%s", pp->id);
    char gpath[COMPARE_PATH_MAX];
    int rc = side_geometry_path(p, &pp->ref, gpath, sizeof gpath);
    if (rc < 0) {
        /* a reference with no mask files at all: take the grid from the prediction */
        if (side_geometry_path(p, &pp->pred, gpath, sizeof gpath) < 0) return rc;
    }
    NiiVolume *geo = NULL, *ct = NULL;
    TRY(nii_read_header(gpath, &geo));
    OrientMap om;
    rc = orient_init(&om, geo->dim, geo->affine);
    if (rc < 0) { rc = seg_err(rc, "%s: %s", gpath, seg_errmsg()); goto fail; }
    const int nx = (int)om.cdim[0], ny = (int)om.cdim[1], nz = (int)om.cdim[2];
    double sp[3];
    for (int c = 0; c < 3; c++) sp[c] = sqrt(om.canon_affine[0][c] * om.canon_affine[0][c] + om.canon_affine[1][c] * om.canon_affine[1][c] +
                                             om.canon_affine[2][c] * om.canon_affine[2][c]);
    /* (c, r, k) -> canonical (ni-1-c, nj-1-r, k) -> world */
    for (int r = 0; r < 4; r++) {
        s->affine[r][0] = -om.canon_affine[r][0];
        s->affine[r][1] = -om.canon_affine[r][1];
        s->affine[r][2] = om.canon_affine[r][2];
        s->affine[r][3] = om.canon_affine[r][3] + (nx - 1) * om.canon_affine[r][0] + (ny - 1) * om.canon_affine[r][1];
    }
    if ((rc = metrics_stack_init(&s->ref, nx, ny, nz, p->labels.n, sp)) < 0) goto fail;
    if ((rc = metrics_stack_init(&s->pred, nx, ny, nz, p->labels.n, sp)) < 0) goto fail;
    if ((rc = load_side(p, &pp->ref, geo, gpath, &om, &s->ref, n_unknown)) < 0) goto fail;
    if ((rc = load_side(p, &pp->pred, geo, gpath, &om, &s->pred, n_unknown)) < 0) goto fail;
    if (pp->ct[0] && nii_read(pp->ct, &ct) == SEG_OK && same_grid(geo, ct)) {
        s->ct = malloc(sizeof(int16_t) * (size_t)nx * ny * nz);
        if (s->ct) {
            int16_t *o = s->ct;
            for (int k = 0; k < nz; k++)
                for (int r = 0; r < ny; r++)
                    for (int c = 0; c < nx; c++) {
                        double hu = nii_value(ct, (size_t)orient_slice_offset(&om, r, c, k));
                        *o++ = (int16_t)(hu < -32768 ? -32768 : hu > 32767 ? 32767 : lround(hu));
                    }
        }
    }
    nii_free(ct);
    nii_free(geo);
    return SEG_OK;
fail:
    nii_free(ct);
    nii_free(geo);
    report_subject_free(s);
    return rc;
}

/* ---- one-sided structures and --only ---- */

int compare_one_sided(const ComparePlan *p, int i, uint8_t *out)
{
    const ComparePair *pp = &p->pairs[i];
    for (int t = 0; t < p->labels.n; t++) {
        char path[COMPARE_PATH_MAX];
        /* a multilabel file holds every structure (an absent value is an empty mask) */
        int in_ref = pp->ref.kind == COMPARE_MULTILABEL || find_nifti(pp->ref.path, p->labels.names[t], path, sizeof path);
        int in_pred = pp->pred.kind == COMPARE_MULTILABEL || find_nifti(pp->pred.path, p->labels.names[t], path, sizeof path);
        out[t] = in_ref && !in_pred ? COMPARE_REF_ONLY : !in_ref && in_pred ? COMPARE_PRED_ONLY : 0;
    }
    return SEG_OK;
}

/* names: an existing file (labels_read_file) or a comma-separated list. */
static int only_names(const char *only, LabelList *out)
{
    if (fs_is_file(only)) return labels_read_file(only, out);
    char *copy = strdup(only);
    const char **v = calloc(strlen(only) / 2 + 2, sizeof *v);
    if (!copy || !v) { free(copy); free(v); return seg_err(SEG_ENOMEM, "--only"); }
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (*tok) v[n++] = tok;
    int rc = n ? labels_from_names(v, n, out) : seg_err(SEG_EARG, "--only '%s': no structure names", only);
    free(copy);
    free(v);
    return rc;
}

int compare_select(ComparePlan *p, const char *only)
{
    LabelList want = { 0, NULL };
    TRY(only_names(only, &want));
    int *keep = calloc((size_t)p->labels.n, sizeof *keep), *newidx = malloc(sizeof(int) * (size_t)p->labels.n);
    const char **names = calloc((size_t)want.n, sizeof *names);
    int rc = keep && newidx && names ? SEG_OK : seg_err(SEG_ENOMEM, "--only");
    char bad[512] = "";
    int n_bad = 0;
    for (int i = 0; i < want.n && rc == SEG_OK; i++) {
        int t = labels_find(&p->labels, want.names[i]);
        if (t >= 0) { keep[t] = 1; continue; }
        size_t l = strlen(bad);
        if (n_bad++ < 5) snprintf(bad + l, sizeof bad - l, "%s'%s'", l ? ", " : "", want.names[i]);
    }
    if (rc == SEG_OK && n_bad)
        rc = seg_err(SEG_EARG, "--only %s: %d name(s) not among the %d structures (names from %s): %s%s", only, n_bad,
                     p->labels.n, p->labels_from, bad, n_bad > 5 ? ", ..." : "");
    int k = 0;
    for (int t = 0; t < p->labels.n && rc == SEG_OK; t++) {
        newidx[t] = keep[t] ? k : -2;
        if (keep[t]) names[k++] = p->labels.names[t];
    }
    LabelList sel = { 0, NULL };
    if (rc == SEG_OK) rc = labels_from_names(names, k, &sel);
    if (rc == SEG_OK) {
        for (int v = 0; v < p->n_values; v++)
            if (p->value_to_struct[v] >= 0) p->value_to_struct[v] = newidx[p->value_to_struct[v]];
        labels_free(&p->labels);
        p->labels = sel;
    }
    free(keep); free(newidx); free(names);
    labels_free(&want);
    return rc;
}
