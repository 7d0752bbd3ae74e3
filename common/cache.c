/* common/cache.c : the LMDB side of the slice cache: metadata, subjects, reader cursors,
 * and the writer that commits one subject per transaction. Named databases:
 *   "meta"     key "format" -> JSON {magic, version, size, n_channels, labels, segkit_version}
 *   "subjects" key <id>     -> JSON geometry (CacheSubject)
 *   "slices"   key u32be subject index, u32be slice -> record (cache_record.c) */
#include "cache.h"
#include "maskpack.h"
#include "err.h"
#include "fsutil.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <zstd.h>

#define CACHE_MAGIC "segkit-cache"

struct CacheReader {
    MDB_env      *env;
    MDB_dbi       dbi_meta, dbi_subj, dbi_slices;
    char          dir[4096];
    int           size, n_channels, version;
    LabelList     labels;
    CacheSubject *subjects;
    int           n_subjects;
};

struct CacheCursor {
    CacheReader *r;
    MDB_txn     *txn;
    ZSTD_DCtx   *dctx;
};

struct CacheWriter {
    MDB_env  *env;
    MDB_dbi   dbi_meta, dbi_subj, dbi_slices;
    char      dir[4096];
    int       size, n_channels, version;
    uint32_t  next_index;
    size_t    mapsize;
};

const char *cache_split_name(int split)
{
    switch (split) {
    case CACHE_SPLIT_TRAIN: return "train";
    case CACHE_SPLIT_VAL:   return "val";
    case CACHE_SPLIT_TEST:  return "test";
    default:                return "?";
    }
}

int cache_split_parse(const char *s)
{
    if (!strcmp(s, "train")) return CACHE_SPLIT_TRAIN;
    if (!strcmp(s, "val") || !strcmp(s, "validation")) return CACHE_SPLIT_VAL;
    if (!strcmp(s, "test")) return CACHE_SPLIT_TEST;
    return -1;
}

static void slice_key(uint8_t k[8], uint32_t index, uint32_t z)
{
    for (int i = 0; i < 4; i++) { k[i] = (uint8_t)(index >> (24 - 8 * i)); k[4 + i] = (uint8_t)(z >> (24 - 8 * i)); }
}

/* ---- JSON <-> CacheSubject ---- */

static cJSON *num_array(const double *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static char *subject_to_json(const CacheSubject *s)
{
    double d[16];
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "id", s->id);
    cJSON_AddStringToObject(o, "split", cache_split_name(s->split));
    cJSON_AddNumberToObject(o, "index", s->index);
    cJSON_AddNumberToObject(o, "n_slices", s->n_slices);
    for (int i = 0; i < 3; i++) d[i] = (double)s->dim[i];
    cJSON_AddItemToObject(o, "dim", num_array(d, 3));
    cJSON_AddItemToObject(o, "spacing", num_array(s->spacing, 3));
    cJSON_AddItemToObject(o, "affine", num_array(&s->affine[0][0], 16));
    for (int i = 0; i < 3; i++) d[i] = s->perm[i];
    cJSON_AddItemToObject(o, "perm", num_array(d, 3));
    for (int i = 0; i < 3; i++) d[i] = s->flip[i];
    cJSON_AddItemToObject(o, "flip", num_array(d, 3));
    for (int i = 0; i < 3; i++) d[i] = (double)s->canon_dim[i];
    cJSON_AddItemToObject(o, "canon_dim", num_array(d, 3));
    cJSON_AddItemToObject(o, "canon_affine", num_array(&s->canon_affine[0][0], 16));
    cJSON_AddItemToObject(o, "res_spacing", num_array(s->res_spacing, 3));
    cJSON_AddItemToObject(o, "res_affine", num_array(&s->res_affine[0][0], 16));
    cJSON_AddNumberToObject(o, "n_voxels_set", (double)s->n_voxels_set);
    if (s->fp_inputs) {   /* 64-bit values as hex strings: JSON numbers are doubles */
        char hx[17];
        cJSON *f = cJSON_AddObjectToObject(o, "fingerprint");
        snprintf(hx, sizeof hx, "%016llx", (unsigned long long)s->fp_inputs);
        if (f) cJSON_AddStringToObject(f, "inputs", hx);
        snprintf(hx, sizeof hx, "%016llx", (unsigned long long)s->fp_content);
        if (f) cJSON_AddStringToObject(f, "content", hx);
    }
    if (s->partial) {   /* the labelled channels' indices; absent: every channel labelled */
        cJSON *a = cJSON_AddArrayToObject(o, "labelled");
        for (int c = 0; a && c < CACHE_LABELLED_MAX; c++)
            if (maskpack_get(s->labelled, c)) cJSON_AddItemToArray(a, cJSON_CreateNumber(c));
    }
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return txt;
}

static int get_nums(const cJSON *o, const char *key, double *out, int n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) return -1;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, a) {
        if (!cJSON_IsNumber(it)) return -1;
        out[i++] = it->valuedouble;
    }
    return 0;
}

static int subject_from_json(const char *txt, size_t n, CacheSubject *s)
{
    memset(s, 0, sizeof *s);
    cJSON *o = cJSON_ParseWithLength(txt, n);
    if (!o) return -1;
    double d[16];
    int bad = 0;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id"), *sp = cJSON_GetObjectItemCaseSensitive(o, "split");
    const cJSON *ix = cJSON_GetObjectItemCaseSensitive(o, "index"), *nz = cJSON_GetObjectItemCaseSensitive(o, "n_slices");
    const cJSON *nv = cJSON_GetObjectItemCaseSensitive(o, "n_voxels_set");
    if (!cJSON_IsString(id) || strlen(id->valuestring) >= CACHE_ID_MAX || !cJSON_IsString(sp) ||
        !cJSON_IsNumber(ix) || !cJSON_IsNumber(nz) || nz->valuedouble < 0 || nz->valuedouble > 1e7 ||
        ix->valuedouble < 0 || ix->valuedouble > 4e9) bad = 1;
    if (!bad) {
        strcpy(s->id, id->valuestring);
        s->split = cache_split_parse(sp->valuestring);
        s->index = (uint32_t)ix->valuedouble;
        s->n_slices = (int)nz->valuedouble;
        s->n_voxels_set = cJSON_IsNumber(nv) && nv->valuedouble >= 0 && nv->valuedouble < 9e18 ? (int64_t)nv->valuedouble : 0;
        bad |= s->split < 0;
        /* range-check before every cast: a corrupt record must not reach undefined behaviour */
#define IN_RANGE(x, lo, hi) ((x) >= (lo) && (x) <= (hi))
        bad |= get_nums(o, "dim", d, 3);
        for (int i = 0; i < 3; i++) { bad |= !IN_RANGE(d[i], 1, 1e9); s->dim[i] = bad ? 0 : (int64_t)d[i]; }
        bad |= get_nums(o, "spacing", s->spacing, 3);
        bad |= get_nums(o, "affine", &s->affine[0][0], 16);
        bad |= get_nums(o, "perm", d, 3);
        for (int i = 0; i < 3; i++) { bad |= !IN_RANGE(d[i], 0, 2); s->perm[i] = bad ? 0 : (int)d[i]; }
        bad |= get_nums(o, "flip", d, 3);
        for (int i = 0; i < 3; i++) { bad |= !IN_RANGE(d[i], 0, 1); s->flip[i] = bad ? 0 : (int)d[i]; }
        bad |= get_nums(o, "canon_dim", d, 3);
        for (int i = 0; i < 3; i++) { bad |= !IN_RANGE(d[i], 1, 1e9); s->canon_dim[i] = bad ? 0 : (int64_t)d[i]; }
#undef IN_RANGE
        bad |= get_nums(o, "canon_affine", &s->canon_affine[0][0], 16);
        bad |= get_nums(o, "res_spacing", s->res_spacing, 3);
        bad |= get_nums(o, "res_affine", &s->res_affine[0][0], 16);
        const cJSON *fp = cJSON_GetObjectItemCaseSensitive(o, "fingerprint");
        if (fp) {
            const cJSON *fi = cJSON_GetObjectItemCaseSensitive(fp, "inputs"), *fc = cJSON_GetObjectItemCaseSensitive(fp, "content");
            unsigned long long a = 0, b = 0;
            bad |= !cJSON_IsString(fi) || !cJSON_IsString(fc) || sscanf(fi->valuestring, "%16llx", &a) != 1 ||
                   sscanf(fc->valuestring, "%16llx", &b) != 1;
            s->fp_inputs = a;
            s->fp_content = b;
        }
        const cJSON *lab = cJSON_GetObjectItemCaseSensitive(o, "labelled"), *it;
        if (lab) {
            s->partial = 1;
            bad |= !cJSON_IsArray(lab);
            cJSON_ArrayForEach(it, lab) {
                if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= CACHE_LABELLED_MAX) { bad = 1; break; }
                const int c = (int)it->valuedouble;
                maskpack_set(s->labelled, c);
            }
        }
    }
    cJSON_Delete(o);
    return bad ? -1 : 0;
}

static char *format_json(int size, const LabelList *labels)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "magic", CACHE_MAGIC);
    cJSON_AddNumberToObject(o, "version", CACHE_FORMAT_VERSION);
    cJSON_AddNumberToObject(o, "size", size);
    cJSON_AddNumberToObject(o, "n_channels", labels->n);
    cJSON *a = cJSON_AddArrayToObject(o, "labels");
    for (int i = 0; a && i < labels->n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(labels->names[i]));
    cJSON_AddStringToObject(o, "record", "SKSL v1: header, presence bitmap, zstd(int16 image), zstd(present bit planes)");
    cJSON_AddStringToObject(o, "segkit_version", SEG_VERSION);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return txt;
}

/* Parse the "format" value: checks magic and version, fills size and labels. */
static int parse_format(const char *dir, const char *txt, size_t n, int *size, LabelList *labels, int *version)
{
    cJSON *o = cJSON_ParseWithLength(txt, n);
    if (!o) return seg_err(SEG_EFORMAT, "%s: cache metadata is not valid JSON", dir);
    int rc = SEG_OK;
    const cJSON *magic = cJSON_GetObjectItemCaseSensitive(o, "magic"), *ver = cJSON_GetObjectItemCaseSensitive(o, "version");
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(o, "size"), *lab = cJSON_GetObjectItemCaseSensitive(o, "labels");
    if (!cJSON_IsString(magic) || strcmp(magic->valuestring, CACHE_MAGIC))
        rc = seg_err(SEG_EFORMAT, "%s: not a segkit cache (bad magic)", dir);
    else if (!cJSON_IsNumber(ver) || ver->valueint < 1 || ver->valueint > CACHE_FORMAT_VERSION)
        rc = seg_err(SEG_EFORMAT, "%s: cache format version %d, this build reads versions 1 to %d (a newer segkit wrote it; "
                     "update segkit or re-run segprep --force)", dir, cJSON_IsNumber(ver) ? ver->valueint : -1, CACHE_FORMAT_VERSION);
    else if (!cJSON_IsNumber(sz) || sz->valueint < 8 || sz->valueint > 8192 || sz->valueint % 8)
        rc = seg_err(SEG_EFORMAT, "%s: bad slice size in cache metadata", dir);
    else if (!cJSON_IsArray(lab) || cJSON_GetArraySize(lab) < 1 || cJSON_GetArraySize(lab) > 65535)
        rc = seg_err(SEG_EFORMAT, "%s: bad label list in cache metadata", dir);
    if (rc == SEG_OK) {
        int nl = cJSON_GetArraySize(lab), i = 0;
        const char **names = calloc((size_t)nl, sizeof *names);
        const cJSON *it;
        if (!names) rc = seg_err(SEG_ENOMEM, "%s", dir);
        else {
            cJSON_ArrayForEach(it, lab) names[i++] = cJSON_IsString(it) ? it->valuestring : "";
            rc = labels_from_names(names, nl, labels);
            if (rc < 0) rc = seg_err(SEG_EFORMAT, "%s: cache labels: %s", dir, seg_errmsg());
            free(names);
        }
        *size = sz->valueint;
        *version = ver->valueint;
    }
    cJSON_Delete(o);
    return rc;
}

static int open_env(const char *dir, int readonly, size_t mapsize, MDB_env **out)
{
    char path[4200];
    MDB_env *env;
    *out = NULL;
    if (!fs_is_dir(dir)) return seg_err(SEG_EIO, "%s: no such cache directory", dir);
    if (readonly) {
        TRY(fs_join(path, sizeof path, dir, "data.mdb"));
        if (!fs_is_file(path)) return seg_err(SEG_EIO, "%s: not a cache (no data.mdb; run segprep first)", dir);
    }
    int rc = mdb_env_create(&env);
    if (rc) return seg_err(SEG_EDB, "%s: mdb_env_create: %s", dir, mdb_strerror(rc));
    mdb_env_set_maxdbs(env, 8);
    mdb_env_set_maxreaders(env, 256);
    if (mapsize) mdb_env_set_mapsize(env, mapsize);
    /* NOMETASYNC: one fsync per commit instead of two; a system crash can lose the last
     * subject but never breaks the database */
    unsigned flags = readonly ? MDB_RDONLY | MDB_NOTLS : MDB_NOTLS | MDB_NOMETASYNC;
    rc = mdb_env_open(env, dir, flags, 0644);
    if (rc && readonly && (rc == EACCES || rc == EROFS)) {
        /* a read-only cache directory cannot hold the lock file: nobody can write it either */
        mdb_env_close(env);
        if ((rc = mdb_env_create(&env)) == 0) {
            mdb_env_set_maxdbs(env, 8);
            rc = mdb_env_open(env, dir, flags | MDB_NOLOCK, 0644);
        }
    }
    if (rc) {
        mdb_env_close(env);
        return seg_err(rc == EACCES || rc == EROFS || rc == ENOENT ? SEG_EIO : SEG_EDB, "%s: cannot open cache: %s",
                       dir, mdb_strerror(rc));
    }
    *out = env;
    return SEG_OK;
}

/* ---- reader ---- */

static int begin_read(MDB_env *env, const char *dir, MDB_txn **txn)
{
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_MAP_RESIZED) {   /* a writer grew the map: adopt its size and retry */
        mdb_env_set_mapsize(env, 0);
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, txn);
    }
    if (rc) return seg_err(SEG_EDB, "%s: read transaction: %s", dir, mdb_strerror(rc));
    return SEG_OK;
}

static int cmp_subject(const void *a, const void *b)
{
    return strcmp(((const CacheSubject *)a)->id, ((const CacheSubject *)b)->id);
}

int cache_refresh(CacheReader *r)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    TRY(begin_read(r->env, r->dir, &txn));
    int rc = mdb_cursor_open(txn, r->dbi_subj, &cur);
    if (rc) { mdb_txn_abort(txn); return seg_err(SEG_EDB, "%s: %s", r->dir, mdb_strerror(rc)); }
    CacheSubject *subs = NULL;
    int n = 0, cap = 0, err = SEG_OK;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (n == cap) {
            CacheSubject *t = realloc(subs, sizeof *subs * (size_t)(cap = cap ? 2 * cap : 64));
            if (!t) { err = seg_err(SEG_ENOMEM, "%s: subject list", r->dir); break; }
            subs = t;
        }
        if (subject_from_json(v.mv_data, v.mv_size, &subs[n]) < 0) {
            err = seg_err(SEG_EFORMAT, "%s: corrupt subject record '%.*s'", r->dir, (int)(k.mv_size < 100 ? k.mv_size : 100),
                          (const char *)k.mv_data);
            break;
        }
        n++;
    }
    if (err == SEG_OK && rc != MDB_NOTFOUND) err = seg_err(SEG_EDB, "%s: reading subjects: %s", r->dir, mdb_strerror(rc));
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (err < 0) { free(subs); return err; }
    if (n > 1) qsort(subs, (size_t)n, sizeof *subs, cmp_subject);
    free(r->subjects);
    r->subjects = subs;
    r->n_subjects = n;
    return SEG_OK;
}

int cache_open(const char *dir, CacheReader **out)
{
    *out = NULL;
    CacheReader *r = calloc(1, sizeof *r);
    if (!r) return seg_err(SEG_ENOMEM, "cache reader");
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    int rc = open_env(dir, 1, 0, &r->env);
    MDB_txn *txn = NULL;
    if (rc == SEG_OK) rc = begin_read(r->env, dir, &txn);
    if (rc == SEG_OK) {
        int e = mdb_dbi_open(txn, "meta", 0, &r->dbi_meta);
        if (!e) e = mdb_dbi_open(txn, "subjects", 0, &r->dbi_subj);
        if (!e) e = mdb_dbi_open(txn, "slices", 0, &r->dbi_slices);
        if (e == MDB_NOTFOUND) rc = seg_err(SEG_EFORMAT, "%s: not a segkit cache (missing tables)", dir);
        else if (e) rc = seg_err(SEG_EDB, "%s: %s", dir, mdb_strerror(e));
    }
    if (rc == SEG_OK) {
        MDB_val k = { 6, "format" }, v;
        int e = mdb_get(txn, r->dbi_meta, &k, &v);
        if (e == MDB_NOTFOUND) rc = seg_err(SEG_EFORMAT, "%s: not a segkit cache (no format record)", dir);
        else if (e) rc = seg_err(SEG_EDB, "%s: %s", dir, mdb_strerror(e));
        else rc = parse_format(dir, v.mv_data, v.mv_size, &r->size, &r->labels, &r->version);
        r->n_channels = r->labels.n;
    }
    if (txn) {   /* commit, even read-only: dbi handles opened in an aborted txn are closed */
        int e = rc == SEG_OK ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), 0);
        if (e) rc = seg_err(SEG_EDB, "%s: %s", dir, mdb_strerror(e));
    }
    if (rc == SEG_OK) rc = cache_refresh(r);
    if (rc < 0) { cache_close(r); return rc; }
    *out = r;
    return SEG_OK;
}

void cache_close(CacheReader *r)
{
    if (!r) return;
    if (r->env) mdb_env_close(r->env);
    labels_free(&r->labels);
    free(r->subjects);
    free(r);
}

int cache_size(const CacheReader *r) { return r->size; }
int cache_n_channels(const CacheReader *r) { return r->n_channels; }
int cache_version(const CacheReader *r) { return r->version; }
const LabelList *cache_labels(const CacheReader *r) { return &r->labels; }
int cache_n_subjects(const CacheReader *r) { return r->n_subjects; }
const CacheSubject *cache_subject(const CacheReader *r, int i) { return i >= 0 && i < r->n_subjects ? &r->subjects[i] : NULL; }
size_t cache_plane_bytes(const CacheReader *r) { return maskpack_plane_bytes((size_t)r->size * r->size); }
size_t cache_presence_bytes(const CacheReader *r) { return maskpack_bitmap_bytes(r->n_channels); }

int cache_find_subject(const CacheReader *r, const char *id)
{
    for (int i = 0; i < r->n_subjects; i++)
        if (!strcmp(r->subjects[i].id, id)) return i;
    return -1;
}

int64_t cache_file_bytes(const CacheReader *r)
{
    char path[4200];
    struct stat st;
    if (fs_join(path, sizeof path, r->dir, "data.mdb") < 0 || stat(path, &st) != 0) return -1;
    return (int64_t)st.st_size;
}

int cache_cursor_open(CacheReader *r, CacheCursor **out)
{
    *out = NULL;
    CacheCursor *c = calloc(1, sizeof *c);
    if (!c) return seg_err(SEG_ENOMEM, "cache cursor");
    c->r = r;
    c->dctx = ZSTD_createDCtx();
    if (!c->dctx) { free(c); return seg_err(SEG_ENOMEM, "zstd context"); }
    int rc = begin_read(r->env, r->dir, &c->txn);
    if (rc < 0) { ZSTD_freeDCtx(c->dctx); free(c); return rc; }
    *out = c;
    return SEG_OK;
}

void cache_cursor_close(CacheCursor *c)
{
    if (!c) return;
    if (c->txn) mdb_txn_abort(c->txn);
    ZSTD_freeDCtx(c->dctx);
    free(c);
}

/* Fetch the raw record; renews the snapshot once if the key is newer than it. */
static int get_record(CacheCursor *c, const CacheSubject *s, int z, MDB_val *v)
{
    if (z < 0 || z >= s->n_slices) return seg_err(SEG_EARG, "%s: slice %d of subject %s out of range (0..%d)",
                                                  c->r->dir, z, s->id, s->n_slices - 1);
    uint8_t key[8];
    slice_key(key, s->index, (uint32_t)z);
    MDB_val k = { 8, key };
    int rc = mdb_get(c->txn, c->r->dbi_slices, &k, v);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_reset(c->txn);
        rc = mdb_txn_renew(c->txn);
        if (rc == MDB_MAP_RESIZED) { mdb_env_set_mapsize(c->r->env, 0); rc = mdb_txn_renew(c->txn); }
        if (rc == 0) rc = mdb_get(c->txn, c->r->dbi_slices, &k, v);
    }
    if (rc == MDB_NOTFOUND) return seg_err(SEG_EFORMAT, "%s: subject %s slice %d is missing", c->r->dir, s->id, z);
    if (rc) return seg_err(SEG_EDB, "%s: subject %s slice %d: %s", c->r->dir, s->id, z, mdb_strerror(rc));
    return SEG_OK;
}

int cache_read_slice(CacheCursor *c, const CacheSubject *s, int z, int16_t *img, uint8_t *bits, uint8_t *presence,
                     int zero_absent)
{
    MDB_val v;
    char what[CACHE_ID_MAX + 64];
    TRY(get_record(c, s, z, &v));
    snprintf(what, sizeof what, "subject %s slice %d", s->id, z);
    return cache_record_decode(c->dctx, v.mv_data, v.mv_size, c->r->size, c->r->n_channels, what, img, bits, presence,
                               zero_absent);
}

int cache_read_presence(CacheCursor *c, const CacheSubject *s, int z, uint8_t *presence)
{
    MDB_val v;
    char what[CACHE_ID_MAX + 64];
    TRY(get_record(c, s, z, &v));
    snprintf(what, sizeof what, "subject %s slice %d", s->id, z);
    return cache_record_presence(v.mv_data, v.mv_size, c->r->size, c->r->n_channels, what, presence);
}

int cache_slice_info(CacheCursor *c, const CacheSubject *s, int z, size_t *bytes, int *n_present, int64_t *n_set)
{
    MDB_val v;
    char what[CACHE_ID_MAX + 64];
    TRY(get_record(c, s, z, &v));
    snprintf(what, sizeof what, "subject %s slice %d", s->id, z);
    if (bytes) *bytes = v.mv_size;
    return cache_record_check(v.mv_data, v.mv_size, c->r->size, c->r->n_channels, what, n_present, n_set);
}

/* ---- writer ---- */

int cache_writer_open(const char *dir, int size, const LabelList *labels, CacheWriter **out)
{
    *out = NULL;
    TRY(fs_mkdirs(dir));
    CacheWriter *w = calloc(1, sizeof *w);
    if (!w) return seg_err(SEG_ENOMEM, "cache writer");
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    char path[4200];
    struct stat st;
    size_t cur = (fs_join(path, sizeof path, dir, "data.mdb") == 0 && stat(path, &st) == 0) ? (size_t)st.st_size : 0;
    w->mapsize = (size_t)1 << 30;
    const char *env_map = getenv("SEGKIT_CACHE_INITIAL_MAP");   /* test knob: exercise map growth */
    if (env_map && atoll(env_map) > 0) w->mapsize = (size_t)atoll(env_map);
    while (w->mapsize < 2 * cur) w->mapsize *= 2;
    int rc = open_env(dir, 0, w->mapsize, &w->env);
    MDB_txn *txn = NULL;
    if (rc == SEG_OK) {
        int e = mdb_txn_begin(w->env, NULL, 0, &txn);
        if (!e) e = mdb_dbi_open(txn, "meta", MDB_CREATE, &w->dbi_meta);
        if (!e) e = mdb_dbi_open(txn, "subjects", MDB_CREATE, &w->dbi_subj);
        if (!e) e = mdb_dbi_open(txn, "slices", MDB_CREATE, &w->dbi_slices);
        if (e) rc = seg_err(SEG_EDB, "%s: %s", dir, mdb_strerror(e));
    }
    if (rc == SEG_OK) {
        MDB_val k = { 6, "format" }, v;
        int e = mdb_get(txn, w->dbi_meta, &k, &v);
        if (e == MDB_NOTFOUND) {   /* new cache */
            w->version = CACHE_FORMAT_VERSION;
            char *txt = format_json(size, labels);
            if (!txt) rc = seg_err(SEG_ENOMEM, "%s", dir);
            else {
                MDB_val nv = { strlen(txt), txt };
                e = mdb_put(txn, w->dbi_meta, &k, &nv, 0);
                if (e) rc = seg_err(SEG_EDB, "%s: %s", dir, mdb_strerror(e));
                free(txt);
            }
        } else if (e) {
            rc = seg_err(SEG_EDB, "%s: %s", dir, mdb_strerror(e));
        } else {
            LabelList have = { 0 };
            int have_size = 0;
            rc = parse_format(dir, v.mv_data, v.mv_size, &have_size, &have, &w->version);
            if (rc == SEG_OK && have_size != size)
                rc = seg_err(SEG_EMISMATCH, "%s: the cache holds %dx%d slices, not %dx%d (use --force or another directory)",
                             dir, have_size, have_size, size, size);
            if (rc == SEG_OK) {
                int i = 0;
                while (i < have.n && i < labels->n && !strcmp(have.names[i], labels->names[i])) i++;
                if (i < have.n || i < labels->n)
                    rc = seg_err(SEG_EMISMATCH, "%s: the cache was built with a different label list (%d channels, now %d; "
                                 "channel %d is %s in the cache, %s now); use --force or another directory", dir, have.n,
                                 labels->n, i, i < have.n ? have.names[i] : "(none)", i < labels->n ? labels->names[i] : "(none)");
            }
            labels_free(&have);
        }
    }
    if (rc == SEG_OK) {   /* next subject index: past every existing one */
        MDB_cursor *cur;
        MDB_val k, v;
        if (mdb_cursor_open(txn, w->dbi_slices, &cur) == 0) {
            if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) {
                const uint8_t *p = k.mv_data;
                w->next_index = ((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]) + 1;
            }
            mdb_cursor_close(cur);
        }
        int e = mdb_txn_commit(txn);
        txn = NULL;
        if (e) rc = seg_err(e == MDB_MAP_FULL ? SEG_EIO : SEG_EDB, "%s: %s", dir, mdb_strerror(e));
    }
    if (txn) mdb_txn_abort(txn);
    if (rc < 0) { cache_writer_close(w); return rc; }
    w->size = size;
    w->n_channels = labels->n;
    *out = w;
    return SEG_OK;
}

void cache_writer_close(CacheWriter *w)
{
    if (!w) return;
    if (w->env) mdb_env_close(w->env);
    free(w);
}

int cache_writer_has(CacheWriter *w, const char *id)
{
    MDB_txn *txn;
    if (mdb_txn_begin(w->env, NULL, MDB_RDONLY, &txn)) return 0;
    MDB_val k = { strlen(id), (void *)id }, v;
    int found = mdb_get(txn, w->dbi_subj, &k, &v) == 0;
    mdb_txn_abort(txn);
    return found;
}

int cache_writer_get(CacheWriter *w, const char *id, CacheSubject *out)
{
    MDB_txn *txn;
    int e = mdb_txn_begin(w->env, NULL, MDB_RDONLY, &txn);
    if (e) return seg_err(SEG_EDB, "%s: %s", w->dir, mdb_strerror(e));
    MDB_val k = { strlen(id), (void *)id }, v;
    e = mdb_get(txn, w->dbi_subj, &k, &v);
    int rc = e == MDB_NOTFOUND ? 0 : e ? seg_err(SEG_EDB, "%s: subject %s: %s", w->dir, id, mdb_strerror(e))
           : subject_from_json(v.mv_data, v.mv_size, out) < 0 ? seg_err(SEG_EFORMAT, "%s: corrupt subject record %s", w->dir, id) : 1;
    mdb_txn_abort(txn);
    return rc;
}

/* Rewrite (json != NULL) or delete (json NULL, with its slices) subject id's record. */
static int rewrite_subject(CacheWriter *w, const char *id, const char *json, const CacheSubject *old)
{
    MDB_txn *txn;
    int e = mdb_txn_begin(w->env, NULL, 0, &txn);
    if (e) return seg_err(SEG_EDB, "%s: %s", w->dir, mdb_strerror(e));
    MDB_val k = { strlen(id), (void *)id }, jv = { json ? strlen(json) : 0, (void *)json };
    if (json) e = mdb_put(txn, w->dbi_subj, &k, &jv, 0);
    else {
        e = mdb_del(txn, w->dbi_subj, &k, NULL);
        for (int z = 0; z < old->n_slices && (e == 0 || e == MDB_NOTFOUND); z++) {
            uint8_t key[8];
            slice_key(key, old->index, (uint32_t)z);
            MDB_val sk = { 8, key };
            e = mdb_del(txn, w->dbi_slices, &sk, NULL);
        }
        if (e == MDB_NOTFOUND) e = 0;
    }
    if (e) { mdb_txn_abort(txn); return seg_err(SEG_EDB, "%s: subject %s: %s", w->dir, id, mdb_strerror(e)); }
    e = mdb_txn_commit(txn);
    return e ? seg_err(SEG_EDB, "%s: subject %s: %s", w->dir, id, mdb_strerror(e)) : SEG_OK;
}

int cache_writer_set_split(CacheWriter *w, const char *id, int split)
{
    CacheSubject s;
    int rc = cache_writer_get(w, id, &s);
    if (rc <= 0) return rc < 0 ? rc : seg_err(SEG_EARG, "%s: no subject %s", w->dir, id);
    s.split = split;
    char *json = subject_to_json(&s);
    if (!json) return seg_err(SEG_ENOMEM, "%s: subject %s", w->dir, id);
    rc = rewrite_subject(w, id, json, &s);
    free(json);
    return rc;
}

int cache_writer_remove(CacheWriter *w, const char *id)
{
    CacheSubject s;
    int rc = cache_writer_get(w, id, &s);
    if (rc <= 0) return rc < 0 ? rc : seg_err(SEG_EARG, "%s: no subject %s", w->dir, id);
    return rewrite_subject(w, id, NULL, &s);
}

int cache_writer_ids(CacheWriter *w, char ***ids, int *n)
{
    *ids = NULL;
    *n = 0;
    MDB_txn *txn;
    MDB_cursor *cur;
    int e = mdb_txn_begin(w->env, NULL, MDB_RDONLY, &txn);
    if (e) return seg_err(SEG_EDB, "%s: %s", w->dir, mdb_strerror(e));
    if ((e = mdb_cursor_open(txn, w->dbi_subj, &cur))) { mdb_txn_abort(txn); return seg_err(SEG_EDB, "%s: %s", w->dir, mdb_strerror(e)); }
    MDB_val k, v;
    int rc = SEG_OK, cap = 0;
    for (e = mdb_cursor_get(cur, &k, &v, MDB_FIRST); e == 0 && rc == SEG_OK; e = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (*n == cap) {
            char **t = realloc(*ids, sizeof *t * (size_t)(cap = cap ? 2 * cap : 64));
            if (!t) { rc = seg_err(SEG_ENOMEM, "subject ids"); break; }
            *ids = t;
        }
        char *s = malloc(k.mv_size + 1);
        if (!s) { rc = seg_err(SEG_ENOMEM, "subject ids"); break; }
        memcpy(s, k.mv_data, k.mv_size);
        s[k.mv_size] = 0;
        (*ids)[(*n)++] = s;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc < 0) {
        for (int i = 0; i < *n; i++) free((*ids)[i]);
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

/* One attempt at the subject transaction; returns an LMDB code. */
static int put_subject_txn(CacheWriter *w, CacheSubject *s, const CacheRecord *recs, const char *json)
{
    MDB_txn *txn;
    int e = mdb_txn_begin(w->env, NULL, 0, &txn);
    if (e) return e;
    MDB_val k = { strlen(s->id), s->id }, v;
    e = mdb_get(txn, w->dbi_subj, &k, &v);
    if (e == 0) {   /* replacing: drop the old slices */
        CacheSubject old;
        if (subject_from_json(v.mv_data, v.mv_size, &old) == 0) {
            for (int z = 0; z < old.n_slices && (e == 0 || e == MDB_NOTFOUND); z++) {
                uint8_t key[8];
                slice_key(key, old.index, (uint32_t)z);
                MDB_val sk = { 8, key };
                e = mdb_del(txn, w->dbi_slices, &sk, NULL);
            }
            if (e == MDB_NOTFOUND) e = 0;
        } else e = 0;
    } else if (e == MDB_NOTFOUND) e = 0;
    for (int z = 0; z < s->n_slices && e == 0; z++) {
        uint8_t key[8];
        slice_key(key, s->index, (uint32_t)z);
        MDB_val sk = { 8, key }, sv = { recs[z].size, recs[z].data };
        e = mdb_put(txn, w->dbi_slices, &sk, &sv, MDB_APPEND);
    }
    if (e == 0) {
        MDB_val jv = { strlen(json), (void *)json };
        e = mdb_put(txn, w->dbi_subj, &k, &jv, 0);
    }
    if (e) { mdb_txn_abort(txn); return e; }
    return mdb_txn_commit(txn);
}

int cache_writer_put_subject(CacheWriter *w, CacheSubject *s, const CacheRecord *recs)
{
    if (s->partial && w->version < 2)
        return seg_err(SEG_EMISMATCH, "%s: subject %s is partly labelled, which needs a version-2 cache; this cache is version "
                       "%d: rebuild it with segprep --force", w->dir, s->id, w->version);
    if (s->partial && w->n_channels > CACHE_LABELLED_MAX)
        return seg_err(SEG_EARG, "%s: subject %s: partly labelled subjects are limited to %d channels (the cache has %d)",
                       w->dir, s->id, CACHE_LABELLED_MAX, w->n_channels);
    s->index = w->next_index;
    char *json = subject_to_json(s);
    if (!json) return seg_err(SEG_ENOMEM, "%s: subject %s", w->dir, s->id);
    size_t need = strlen(json);
    for (int z = 0; z < s->n_slices; z++) need += recs[z].size + 64;
    int e;
    for (int attempt = 0;; attempt++) {
        e = put_subject_txn(w, s, recs, json);
        if (e != MDB_MAP_FULL || attempt >= 8) break;
        size_t grow = w->mapsize * 2;
        while (grow < w->mapsize + 4 * need) grow *= 2;
        int r = mdb_env_set_mapsize(w->env, grow);
        if (r) { e = r; break; }
        w->mapsize = grow;
    }
    free(json);
    if (e == ENOSPC || e == EIO || e == EDQUOT) {
        /* LMDB reports a failed page write as EIO: say when it is really a full disk */
        struct statvfs fs;
        int full = e == ENOSPC || (statvfs(w->dir, &fs) == 0 && (double)fs.f_bavail * fs.f_frsize < 2.0 * need);
        return seg_err(SEG_EIO, "%s: writing subject %s: %s (the cache keeps every subject committed before)",
                       w->dir, s->id, full ? "no space left on device" : mdb_strerror(e));
    }
    if (e) return seg_err(SEG_EDB, "%s: writing subject %s: %s", w->dir, s->id, mdb_strerror(e));
    w->next_index++;
    return SEG_OK;
}
