/* prep/prep_subject.c : one subject -> encoded slice records. The CT and every mask are
 * decoded in parallel (one file per job); each mask is scanned once for the canonical
 * slices it touches (and their bounding boxes), and only those slices are resampled
 * into bit planes, straight from the original voxel array through the OrientMap. */
#include "prep.h"
#include "maskpack.h"
#include "err.h"
#include "nii.h"
#include "orient.h"
#include "resample.h"
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

struct PrepSubjectCtx {
    int         threads, level;
    ZSTD_CCtx **cctx;          /* one per thread */
};

int prep_subject_ctx_create(int threads, int zstd_level, PrepSubjectCtx **out)
{
    PrepSubjectCtx *c = calloc(1, sizeof *c);
    if (!c) return seg_err(SEG_ENOMEM, "prep context");
    c->threads = threads < 1 ? 1 : threads;
    c->level = zstd_level;
    c->cctx = calloc((size_t)c->threads, sizeof *c->cctx);
    for (int i = 0; c->cctx && i < c->threads; i++)
        if (!(c->cctx[i] = ZSTD_createCCtx())) break;
    if (!c->cctx || !c->cctx[c->threads - 1]) { prep_subject_ctx_free(c); return seg_err(SEG_ENOMEM, "zstd contexts"); }
    *out = c;
    return SEG_OK;
}

void prep_subject_ctx_free(PrepSubjectCtx *c)
{
    if (!c) return;
    for (int i = 0; c->cctx && i < c->threads; i++) ZSTD_freeCCtx(c->cctx[i]);
    free(c->cctx);
    free(c);
}

/* ---- the shared state of one subject ---- */
typedef struct Job {
    int      rc;
    char     msg[512];
    uint64_t hash;     /* phase 1: nii_hash of the file the job read (0: none) */
} Job;

typedef struct Subject {
    const char    *ct_path;
    char *const   *mask_paths;
    int            C, size;
    const NiiVolume *ct_hdr;   /* geometry reference */
    OrientMap      om;
    ResampleAxis   rows, cols;
    int64_t       *col_off;    /* [size] element offset of dst column c' along canonical i */
    int16_t       *ct_slices;  /* [nk][size*size] */
    uint8_t      **planes;     /* [nk*C], NULL = empty */
    size_t         plane_bytes;
    CacheRecord   *recs;       /* [nk] */
    Job           *jobs;       /* [1 + C] phase 1, then reused per slice */
    atomic_int     next;
    atomic_llong   bytes_in;
    PrepSubjectCtx *ctx;
} Subject;

static int job_fail(Job *j, int rc)
{
    j->rc = rc;
    snprintf(j->msg, sizeof j->msg, "%s", seg_errmsg());
    return rc;
}

/* SEG_OK if mask m is on the CT's grid, else SEG_EMISMATCH saying what differs. */
static int check_geometry(const NiiVolume *m, const NiiVolume *ct, const char *path)
{
    if (m->dim[0] != ct->dim[0] || m->dim[1] != ct->dim[1] || m->dim[2] != ct->dim[2])
        return seg_err(SEG_EMISMATCH, "%s: shape %lldx%lldx%lld differs from the CT's %lldx%lldx%lld", path,
                       (long long)m->dim[0], (long long)m->dim[1], (long long)m->dim[2],
                       (long long)ct->dim[0], (long long)ct->dim[1], (long long)ct->dim[2]);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) {
            double x = ct->affine[r][c], y = m->affine[r][c];
            if (fabs(x - y) > 1e-3 * fmax(1.0, fabs(x)))
                return seg_err(SEG_EMISMATCH, "%s: affine differs from the CT's (row %d col %d: %g vs %g)", path, r, c, y, x);
        }
    return SEG_OK;
}

/* Read one voxel of any datatype as a double (raw, unscaled). */
static inline double raw_value(const NiiVolume *v, int64_t off)
{
    switch (v->datatype) {
    case NII_UINT8:   return ((const uint8_t *)v->data)[off];
    case NII_INT8:    return ((const int8_t *)v->data)[off];
    case NII_INT16:   return ((const int16_t *)v->data)[off];
    case NII_UINT16:  return ((const uint16_t *)v->data)[off];
    case NII_INT32:   return ((const int32_t *)v->data)[off];
    case NII_UINT32:  return ((const uint32_t *)v->data)[off];
    case NII_FLOAT32: return ((const float *)v->data)[off];
    default:          return ((const double *)v->data)[off];
    }
}

/* CT: every canonical slice -> bilinear int16 at size x size. */
static int do_ct(Subject *S, Job *j)
{
    NiiVolume *v = NULL;
    int rc = nii_read(S->ct_path, &v);
    if (rc < 0) return job_fail(j, rc);
    j->hash = v->file_hash;
    const OrientMap *m = &S->om;
    const int64_t ni = m->cdim[0], nj = m->cdim[1], nk = m->cdim[2];
    float *src = malloc(sizeof(float) * (size_t)(ni * nj));
    if (!src) { nii_free(v); return job_fail(j, seg_err(SEG_ENOMEM, "%s: slice buffer", S->ct_path)); }
    const double slope = v->slope, inter = v->inter;
    for (int64_t k = 0; k < nk; k++) {
        for (int64_t r = 0; r < nj; r++) {
            float *row = src + r * ni;
            int64_t base = orient_slice_offset(m, r, 0, k), step = -m->stride[0];
            if (v->datatype == NII_INT16) {
                const int16_t *d = v->data;
                for (int64_t c = 0; c < ni; c++) row[c] = (float)(d[base + c * step] * slope + inter);
            } else {
                for (int64_t c = 0; c < ni; c++) row[c] = (float)(raw_value(v, base + c * step) * slope + inter);
            }
        }
        resample_bilinear_i16(S->ct_slices + (size_t)k * S->size * S->size, src, &S->rows, &S->cols);
    }
    free(src);
    nii_free(v);
    return SEG_OK;
}

/* A binary uint8 view of a mask: the data itself when it is uint8 with no offset, else a
 * converted copy (*owned set). Any non-zero scaled value is 1. */
static int binary_u8(const NiiVolume *v, const char *path, uint8_t **out, int *owned)
{
    if (v->datatype == NII_UINT8 && v->inter == 0 && v->slope != 0) { *out = v->data; *owned = 0; return SEG_OK; }
    size_t n = nii_nvox(v);
    uint8_t *b = malloc(n);
    if (!b) return seg_err(SEG_ENOMEM, "%s: %zu bytes", path, n);
    for (size_t i = 0; i < n; i++) b[i] = (raw_value(v, (int64_t)i) * v->slope + v->inter) != 0;
    *out = b; *owned = 1;
    return SEG_OK;
}

static inline int row_any(const uint8_t *p, int64_t n)
{
    uint64_t acc = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) { uint64_t w; memcpy(&w, p + i, 8); acc |= w; }
    for (; i < n; i++) acc |= p[i];
    return acc != 0;
}

typedef struct Box { int64_t i0, i1, j0, j1; } Box;

static inline void box_add(Box *b, int64_t i0, int64_t i1, int64_t j0, int64_t j1)
{
    if (i0 < b->i0) b->i0 = i0;
    if (i1 > b->i1) b->i1 = i1;
    if (j0 < b->j0) b->j0 = j0;
    if (j1 > b->j1) b->j1 = j1;
}

/* Canonical bounding box per slice of the non-zero voxels of a binary volume. */
static void scan_boxes(const OrientMap *m, const uint8_t *d, Box *box)
{
    const int64_t nx = m->dim[0], ny = m->dim[1], nz = m->dim[2];
    int ax_of[3];                      /* original axis -> canonical axis */
    for (int a = 0; a < 3; a++) ax_of[m->perm[a]] = a;
    for (int64_t k = 0; k < m->cdim[2]; k++) box[k] = (Box){ INT64_MAX, -1, INT64_MAX, -1 };
    for (int64_t z = 0; z < nz; z++)
        for (int64_t y = 0; y < ny; y++) {
            const uint8_t *row = d + (z * ny + y) * nx;
            if (!row_any(row, nx)) continue;
            int64_t x0 = 0, x1 = nx - 1;
            while (!row[x0]) x0++;
            while (!row[x1]) x1--;
            int64_t lo[3], hi[3];          /* canonical ranges of this run */
            int64_t o_lo[3] = { x0, y, z }, o_hi[3] = { x1, y, z };
            for (int a = 0; a < 3; a++) {
                int in = m->perm[a];
                int64_t p = o_lo[in], q = o_hi[in];
                if (m->flip[a]) { int64_t t = m->dim[in] - 1 - q; q = m->dim[in] - 1 - p; p = t; }
                lo[a] = p; hi[a] = q;
            }
            if (ax_of[0] != 2) {
                box_add(&box[lo[2]], lo[0], hi[0], lo[1], hi[1]);
            } else {                        /* x runs across slices: each voxel is its own slice */
                for (int64_t x = x0; x <= x1; x++) {
                    if (!row[x]) continue;
                    int64_t k = m->flip[2] ? nx - 1 - x : x;
                    box_add(&box[k], lo[0], hi[0], lo[1], hi[1]);
                }
            }
        }
}

static int do_mask(Subject *S, int c, Job *j)
{
    const char *path = S->mask_paths[c];
    if (!path) return SEG_OK;   /* an unlabelled channel (partly labelled subject): no planes */
    NiiVolume *v = NULL;
    uint8_t *bin = NULL;
    int owned = 0, rc = nii_read(path, &v);
    if (rc < 0) return job_fail(j, rc);
    j->hash = v->file_hash;
    if ((rc = check_geometry(v, S->ct_hdr, path)) < 0) {
        nii_free(v);
        return job_fail(j, rc);
    }
    if ((rc = binary_u8(v, path, &bin, &owned)) < 0) { nii_free(v); return job_fail(j, rc); }
    const OrientMap *m = &S->om;
    const int64_t ni = m->cdim[0], nj = m->cdim[1], nk = m->cdim[2];
    Box *box = malloc(sizeof(Box) * (size_t)nk);
    if (!box) { rc = seg_err(SEG_ENOMEM, "%s", path); goto out; }
    scan_boxes(m, bin, box);
    for (int64_t k = 0; k < nk; k++) {
        if (box[k].i1 < 0) continue;
        /* slice rows r = nj-1-j, columns c = ni-1-i */
        int dr0, dr1, dc0, dc1;
        if (!resample_nearest_span(&S->rows, (int)(nj - 1 - box[k].j1), (int)(nj - 1 - box[k].j0), &dr0, &dr1) ||
            !resample_nearest_span(&S->cols, (int)(ni - 1 - box[k].i1), (int)(ni - 1 - box[k].i0), &dc0, &dc1))
            continue;
        uint8_t *plane = calloc(1, S->plane_bytes);
        if (!plane) { rc = seg_err(SEG_ENOMEM, "%s: bit plane", path); goto out; }
        int any = 0;
        for (int r = dr0; r <= dr1; r++) {
            /* row base at canonical i = 0; col_off[c'] adds (ni-1-nearest[c'])*stride0 */
            const int64_t base = orient_offset(m, 0, nj - 1 - S->rows.nearest[r], k);
            size_t p0 = (size_t)r * S->size;
            for (int cc = dc0; cc <= dc1; cc++)
                if (bin[base + S->col_off[cc]]) {
                    size_t p = p0 + (size_t)cc;
                    maskpack_set(plane, p);
                    any = 1;
                }
        }
        if (any) S->planes[k * S->C + c] = plane;
        else free(plane);
    }
out:
    free(box);
    if (owned) free(bin);
    nii_free(v);
    return rc < 0 ? job_fail(j, rc) : SEG_OK;
}

static void *phase1(void *arg)
{
    Subject *S = arg;
    for (;;) {
        int job = atomic_fetch_add(&S->next, 1);
        if (job > S->C) break;
        if (job == 0) do_ct(S, &S->jobs[0]);
        else do_mask(S, job - 1, &S->jobs[job]);
    }
    return NULL;
}

typedef struct EncArg { Subject *S; int t; } EncArg;

static void *phase2(void *arg)
{
    EncArg *a = arg;
    Subject *S = a->S;
    for (;;) {
        int k = atomic_fetch_add(&S->next, 1);
        if (k >= S->om.cdim[2]) break;
        int rc = cache_encode_slice(S->ctx->cctx[a->t], S->ctx->level, S->size, S->C,
                                    S->ct_slices + (size_t)k * S->size * S->size,
                                    (const uint8_t *const *)S->planes + (size_t)k * S->C, &S->recs[k]);
        if (rc < 0) job_fail(&S->jobs[k], rc);
    }
    return NULL;
}

static void run_threads(Subject *S, int n, void *(*fn)(void *))
{
    pthread_t th[64];
    EncArg args[64];
    if (n > 64) n = 64;
    atomic_store(&S->next, 0);
    int started = 0;
    for (int t = 1; t < n; t++) {
        args[t] = (EncArg){ S, t };
        if (pthread_create(&th[t], NULL, fn, fn == phase2 ? (void *)&args[t] : (void *)S) != 0) break;
        started = t;
    }
    args[0] = (EncArg){ S, 0 };
    fn(fn == phase2 ? (void *)&args[0] : (void *)S);
    for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
}

int prep_subject(PrepSubjectCtx *ctx, const char *ct_path, char *const *mask_paths, int n_channels,
                 int size, CacheSubject *geo, CacheRecord **recs_out, int64_t *bytes_in)
{
    Subject S = { 0 };
    NiiVolume *hdr = NULL;
    int rc;
    *recs_out = NULL;
    S.ct_path = ct_path; S.mask_paths = mask_paths; S.C = n_channels; S.size = size; S.ctx = ctx;
    S.plane_bytes = maskpack_plane_bytes((size_t)size * size);
    if ((rc = nii_read_header(ct_path, &hdr)) < 0) return rc;
    S.ct_hdr = hdr;
    if ((rc = orient_init(&S.om, hdr->dim, hdr->affine)) < 0) {
        rc = seg_err(rc, "%s: %s", ct_path, seg_errmsg());
        nii_free(hdr);
        return rc;
    }
    const int64_t ni = S.om.cdim[0], nj = S.om.cdim[1], nk = S.om.cdim[2];
    if (ni > INT32_MAX || nj > INT32_MAX) { nii_free(hdr); return seg_err(SEG_EFORMAT, "%s: slice too large", ct_path); }
    if ((rc = resample_axis_init(&S.rows, (int)nj, size)) < 0 || (rc = resample_axis_init(&S.cols, (int)ni, size)) < 0)
        goto done;
    S.col_off = malloc(sizeof(int64_t) * (size_t)size);
    S.ct_slices = malloc((size_t)nk * size * size * sizeof(int16_t));
    S.planes = calloc((size_t)(nk * n_channels), sizeof(uint8_t *));
    S.recs = calloc((size_t)nk, sizeof(CacheRecord));
    S.jobs = calloc((size_t)(n_channels + 1 > nk ? n_channels + 1 : nk), sizeof(Job));
    if (!S.col_off || !S.ct_slices || !S.planes || !S.recs || !S.jobs) {
        rc = seg_err(SEG_ENOMEM, "%s: buffers for %lld slices", ct_path, (long long)nk);
        goto done;
    }
    for (int c = 0; c < size; c++) S.col_off[c] = (ni - 1 - S.cols.nearest[c]) * S.om.stride[0];

    run_threads(&S, ctx->threads, phase1);
    for (int j = 0; j <= n_channels; j++)
        if (S.jobs[j].rc < 0) { rc = seg_err(S.jobs[j].rc, "%s", S.jobs[j].msg); goto done; }
    uint64_t content = 0;   /* the files' content hashes in channel order (CT first), as they were read */
    for (int j = 0; j <= n_channels; j++) content = nii_hash(content, &S.jobs[j].hash, sizeof S.jobs[j].hash);

    memset(S.jobs, 0, sizeof(Job) * (size_t)nk);
    run_threads(&S, ctx->threads, phase2);
    for (int64_t k = 0; k < nk; k++)
        if (S.jobs[k].rc < 0) { rc = seg_err(S.jobs[k].rc, "%s", S.jobs[k].msg); goto done; }

    /* geometry */
    memset(geo, 0, sizeof *geo);
    geo->fp_content = content;
    geo->n_slices = (int)nk;
    for (int a = 0; a < 3; a++) {
        geo->dim[a] = hdr->dim[a];
        geo->spacing[a] = hdr->pixdim[a];
        geo->perm[a] = S.om.perm[a];
        geo->flip[a] = S.om.flip[a];
        geo->canon_dim[a] = S.om.cdim[a];
    }
    memcpy(geo->affine, hdr->affine, sizeof geo->affine);
    memcpy(geo->canon_affine, S.om.canon_affine, sizeof geo->canon_affine);
    orient_resampled_affine(&S.om, size, geo->res_affine, geo->res_spacing);
    for (int64_t k = 0; k < nk; k++) geo->n_voxels_set += S.recs[k].n_set;
    if (bytes_in) {
        struct stat st;
        int64_t b = stat(ct_path, &st) == 0 ? st.st_size : 0;
        for (int c = 0; c < n_channels; c++) b += mask_paths[c] && stat(mask_paths[c], &st) == 0 ? st.st_size : 0;
        *bytes_in = b;
    }
    *recs_out = S.recs;
    S.recs = NULL;
    rc = SEG_OK;
done:
    if (S.recs) {
        for (int64_t k = 0; k < nk; k++) free(S.recs[k].data);
        free(S.recs);
    }
    if (S.planes)
        for (int64_t i = 0; i < nk * n_channels; i++) free(S.planes[i]);
    free(S.planes);
    free(S.ct_slices);
    free(S.col_off);
    free(S.jobs);
    resample_axis_free(&S.rows);
    resample_axis_free(&S.cols);
    nii_free(hdr);
    return rc;
}
