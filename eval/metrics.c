/* eval/metrics.c : confusion counts on packed planes, 6-connected surfaces, exact
 * anisotropic EDT (Felzenszwalb-Huttenlocher), HD95, NSD, volumes, summaries. */
#include "metrics.h"
#include "maskpack.h"
#include "err.h"
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double metrics_detect_thresholds[METRICS_N_DETECT] = { 0.1, 0.3, 0.5, 0.7, 0.9 };

const char *metrics_case_name(int c)
{
    switch (c) {
    case METRICS_CASE_BOTH: return "tp_both";
    case METRICS_CASE_BOTH_EMPTY: return "both_empty";
    case METRICS_CASE_FP_ABSENT: return "fp_absent";
    case METRICS_CASE_MISSED: return "missed";
    case METRICS_CASE_ONE_SIDED: return "one_sided";
    case METRICS_CASE_UNLABELLED: return "unlabelled";
    default: return "?";
    }
}

void metrics_default_options(MetricsOptions *o)
{
    o->nsd_tol_mm = 2.0;
    o->percentile = 95.0;
    o->threads = 1;
}

/* ---- stacks ---- */

int metrics_stack_init(MetricsStack *m, int nx, int ny, int nz, int n_struct, const double spacing[3])
{
    memset(m, 0, sizeof *m);
    if (nx < 1 || ny < 1 || nz < 1 || n_struct < 1)
        return seg_err(SEG_EARG, "metrics: bad stack shape %dx%dx%d, %d structures", nx, ny, nz, n_struct);
    m->planes = calloc((size_t)n_struct * (size_t)nz, sizeof *m->planes);
    if (!m->planes) return seg_err(SEG_ENOMEM, "metrics: plane table %d x %d", n_struct, nz);
    m->nx = nx; m->ny = ny; m->nz = nz; m->n_struct = n_struct;
    m->plane_bytes = maskpack_plane_bytes((size_t)nx * (size_t)ny);
    for (int i = 0; i < 3; i++) m->spacing[i] = spacing[i];
    return SEG_OK;
}

void metrics_stack_free(MetricsStack *m)
{
    if (!m) return;
    if (m->planes)
        for (size_t i = 0; i < (size_t)m->n_struct * (size_t)m->nz; i++) free(m->planes[i]);
    free(m->planes);
    memset(m, 0, sizeof *m);
}

uint8_t *metrics_stack_plane(MetricsStack *m, int s, int z)
{
    uint8_t **pp = &m->planes[(size_t)s * (size_t)m->nz + (size_t)z];
    if (!*pp) {
        *pp = calloc(1, m->plane_bytes);
        if (!*pp) seg_err(SEG_ENOMEM, "metrics: plane of %zu bytes", m->plane_bytes);
    }
    return *pp;
}

int metrics_stack_set(MetricsStack *m, int s, int x, int y, int z)
{
    uint8_t *p = metrics_stack_plane(m, s, z);
    if (!p) return SEG_ENOMEM;
    size_t i = (size_t)y * (size_t)m->nx + (size_t)x;
    maskpack_set(p, i);
    return SEG_OK;
}

int64_t metrics_stack_count(const MetricsStack *m, int s)
{
    int64_t c = 0;
    for (int z = 0; z < m->nz; z++) {
        const uint8_t *p = m->planes[(size_t)s * (size_t)m->nz + (size_t)z];
        if (p) c += maskpack_count(p, m->plane_bytes);
    }
    return c;
}

/* ---- scratch ---- */

struct MetricsWork {
    uint8_t *a, *b;          /* padded unpacked ref / pred */
    uint8_t *sa, *sb;        /* unpadded surface masks */
    double  *dist;           /* EDT output */
    double  *da, *db;        /* directed distances of ref / pred surface voxels */
    size_t   cap_a, cap_b, cap_sa, cap_sb, cap_dist, cap_da, cap_db;
    double  *lf, *ld, *lz, *lh;   /* line buffers for the EDT */
    int     *lv;
    int      cap_line;
};

int metrics_work_create(MetricsWork **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? SEG_OK : seg_err(SEG_ENOMEM, "metrics: workspace");
}

void metrics_work_free(MetricsWork *w)
{
    if (!w) return;
    free(w->a); free(w->b); free(w->sa); free(w->sb); free(w->dist); free(w->da); free(w->db);
    free(w->lf); free(w->ld); free(w->lz); free(w->lh); free(w->lv);
    free(w);
}

static int grow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n <= *cap) return SEG_OK;
    size_t want = n + n / 4;
    void *q = realloc(*p, want * elem);
    if (!q) return seg_err(SEG_ENOMEM, "metrics: %zu x %zu bytes of scratch", want, elem);
    *p = q; *cap = want;
    return SEG_OK;
}

static int grow_lines(MetricsWork *w, int n)
{
    if (n <= w->cap_line) return SEG_OK;
    free(w->lf); free(w->ld); free(w->lz); free(w->lh); free(w->lv);
    w->lh = malloc(sizeof(double) * (size_t)n);
    w->lf = malloc(sizeof(double) * (size_t)n);
    w->ld = malloc(sizeof(double) * (size_t)n);
    w->lz = malloc(sizeof(double) * (size_t)(n + 1));
    w->lv = malloc(sizeof(int) * (size_t)n);
    if (!w->lf || !w->ld || !w->lz || !w->lh || !w->lv) { w->cap_line = 0; return seg_err(SEG_ENOMEM, "metrics: line buffers of %d", n); }
    w->cap_line = n;
    return SEG_OK;
}

/* ---- EDT ---- */

/* Lower envelope of parabolas w*(p-q)^2 + f[q] over the finite f (f = INFINITY: no
 * feature on that line position); d[p] = its value at p. h is scratch of n doubles. */
static void edt_line(const double *f, double *d, int n, double w, int *v, double *z, double *h)
{
    int k = -1;
    const double w2 = 2.0 * w;
    for (int q = 0; q < n; q++) {
        if (f[q] == INFINITY) continue;
        h[q] = f[q] + w * (double)q * (double)q;
        if (k < 0) { k = 0; v[0] = q; z[0] = -INFINITY; z[1] = INFINITY; continue; }
        double s;
        for (;;) {
            const int p = v[k];
            s = (h[q] - h[p]) / (w2 * (double)(q - p));
            if (s <= z[k]) k--;   /* never below 0: z[0] = -inf */
            else break;
        }
        k++; v[k] = q; z[k] = s; z[k + 1] = INFINITY;
    }
    if (k < 0) { for (int p = 0; p < n; p++) d[p] = INFINITY; return; }
    int j = 0;
    for (int p = 0; p < n; p++) {
        while (z[j + 1] < (double)p) j++;
        const double t = (double)(p - v[j]);
        d[p] = w * t * t + f[v[j]];
    }
}

/* Squared EDT into d (see metrics_edt), using w's line buffers. With need != NULL the
 * last pass only runs on the z columns holding a voxel with need != 0 (elsewhere d is
 * left at the y-pass values). */
static void edt_sq(MetricsWork *w, const uint8_t *feat, const uint8_t *need, int nx, int ny, int nz, const double sp[3],
                   double *d)
{
    const size_t sxy = (size_t)nx * (size_t)ny;
    const double wx = sp[0] * sp[0], wy = sp[1] * sp[1], wz = sp[2] * sp[2];
    /* x: two sweeps of index distance to the nearest feature */
    for (size_t row = 0; row < (size_t)ny * (size_t)nz; row++) {
        const uint8_t *fr = feat + row * (size_t)nx;
        double *dr = d + row * (size_t)nx;
        int last = -1;
        for (int x = 0; x < nx; x++) {
            if (fr[x]) last = x;
            dr[x] = last < 0 ? INFINITY : (double)(x - last);
        }
        last = -1;
        for (int x = nx - 1; x >= 0; x--) {
            if (fr[x]) last = x;
            if (last >= 0 && (double)(last - x) < dr[x]) dr[x] = (double)(last - x);
            if (dr[x] != INFINITY) dr[x] = wx * dr[x] * dr[x];
        }
    }
    /* y, then z: lower envelopes along each line */
    if (ny > 1)
        for (int z = 0; z < nz; z++)
            for (int x = 0; x < nx; x++) {
                double *base = d + (size_t)z * sxy + (size_t)x;
                int any = 0;
                for (int y = 0; y < ny; y++) { w->lf[y] = base[(size_t)y * (size_t)nx]; any |= w->lf[y] != INFINITY; }
                if (!any) continue;
                edt_line(w->lf, w->ld, ny, wy, w->lv, w->lz, w->lh);
                for (int y = 0; y < ny; y++) base[(size_t)y * (size_t)nx] = w->ld[y];
            }
    if (nz > 1)
        for (size_t i = 0; i < sxy; i++) {
            double *base = d + i;
            if (need) {
                int want = 0;
                for (int z = 0; z < nz && !want; z++) want = need[i + (size_t)z * sxy];
                if (!want) continue;
            }
            int any = 0;
            for (int z = 0; z < nz; z++) { w->lf[z] = base[(size_t)z * sxy]; any |= w->lf[z] != INFINITY; }
            if (!any) continue;
            edt_line(w->lf, w->ld, nz, wz, w->lv, w->lz, w->lh);
            for (int z = 0; z < nz; z++) base[(size_t)z * sxy] = w->ld[z];
        }
}

int metrics_edt(const uint8_t *feat, int nx, int ny, int nz, const double sp[3], double *dist)
{
    if (nx < 1 || ny < 1 || nz < 1) return seg_err(SEG_EARG, "metrics_edt: bad shape %dx%dx%d", nx, ny, nz);
    MetricsWork *w;
    TRY(metrics_work_create(&w));
    int n = nx > ny ? nx : ny;
    if (nz > n) n = nz;
    int rc = grow_lines(w, n);
    if (rc == SEG_OK) {
        edt_sq(w, feat, NULL, nx, ny, nz, sp, dist);
        size_t nv = (size_t)nx * (size_t)ny * (size_t)nz;
        for (size_t i = 0; i < nv; i++) dist[i] = sqrt(dist[i]);
    }
    metrics_work_free(w);
    return rc;
}

/* ---- percentiles ---- */

static void swapd(double *a, double *b) { double t = *a; *a = *b; *b = t; }

/* Reorder v so that v[k] is the k-th smallest, v[0..k-1] <= v[k] <= v[k+1..] (Hoare's select). */
static void select_kth(double *v, size_t n, size_t kk)
{
    ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, k = (ptrdiff_t)kk;
    while (lo < hi) {
        ptrdiff_t mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo]) swapd(&v[mid], &v[lo]);
        if (v[hi] < v[lo]) swapd(&v[hi], &v[lo]);
        if (v[hi] < v[mid]) swapd(&v[hi], &v[mid]);
        const double piv = v[mid];
        ptrdiff_t i = lo, j = hi;
        do {
            while (v[i] < piv) i++;
            while (piv < v[j]) j--;
            if (i <= j) { swapd(&v[i], &v[j]); i++; j--; }
        } while (i <= j);
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return;
    }
}

double metrics_percentile(double *v, size_t n, double q)
{
    if (n == 0) return NAN;
    double pos = q / 100.0 * (double)(n - 1);
    if (pos < 0) pos = 0;
    if (pos > (double)(n - 1)) pos = (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    double t = pos - (double)lo;
    select_kth(v, n, lo);
    double a = v[lo];
    if (t == 0 || lo + 1 >= n) return a;
    double b = v[lo + 1];
    for (size_t i = lo + 2; i < n; i++) if (v[i] < b) b = v[i];
    /* numpy's _lerp: exact at both ends */
    return t >= 0.5 ? b - (b - a) * (1.0 - t) : a + (b - a) * t;
}

/* ---- one structure ---- */

/* Bounding box of the set bits of nz planes (NULL = empty) on an nx-wide grid; 0 if none. */
static int planes_bbox(const uint8_t *const *pl, int nx, int nz, size_t pb, int box[6])
{
    int x0 = nx, x1 = -1, y0 = -1, y1 = -1, z0 = -1, z1 = -1;
    for (int z = 0; z < nz; z++) {
        const uint8_t *p = pl[z];
        if (!p) continue;
        int any = 0;
        for (size_t b = 0; b < pb; b++) {
            if (b + 8 <= pb) {   /* skip empty words quickly */
                uint64_t wd;
                memcpy(&wd, p + b, 8);
                if (!wd) { b += 7; continue; }
            }
            const unsigned byte = p[b];
            if (!byte) continue;
            any = 1;
            const size_t i0 = b * 8;
            const int y = (int)(i0 / (size_t)nx), x = (int)(i0 - (size_t)y * (size_t)nx);
            if (y0 < 0 || y < y0) y0 = y;
            if (x + 8 <= nx) {   /* the byte lies within one row */
                const int lo = x + __builtin_ctz(byte), hi = x + 31 - __builtin_clz(byte);
                if (lo < x0) x0 = lo;
                if (hi > x1) x1 = hi;
                if (y > y1) y1 = y;
            } else {
                for (unsigned bits = byte; bits; bits &= bits - 1) {
                    const size_t i = i0 + (size_t)__builtin_ctz(bits);
                    const int yy = (int)(i / (size_t)nx), xx = (int)(i - (size_t)yy * (size_t)nx);
                    if (xx < x0) x0 = xx;
                    if (xx > x1) x1 = xx;
                    if (yy > y1) y1 = yy;
                }
            }
        }
        if (any) { if (z0 < 0) z0 = z; z1 = z; }
    }
    if (z0 < 0) return 0;
    box[0] = x0; box[1] = x1; box[2] = y0; box[3] = y1; box[4] = z0; box[5] = z1;
    return 1;
}

/* Unpack the planes' bits inside box into out, padded by one zero voxel on every side. */
static void unpack_padded(const uint8_t *const *pl, int nx, size_t pb, const int box[6], uint8_t *out)
{
    const int bx = box[1] - box[0] + 1, by = box[3] - box[2] + 1, bz = box[5] - box[4] + 1;
    const size_t px = (size_t)bx + 2, pxy = px * (size_t)(by + 2);
    memset(out, 0, pxy * (size_t)(bz + 2));
    for (int z = box[4]; z <= box[5]; z++) {
        const uint8_t *p = pl[z];
        if (!p) continue;
        uint8_t *oz = out + (size_t)(z - box[4] + 1) * pxy;
        size_t b0 = ((size_t)box[2] * (size_t)nx) / 8, b1 = (((size_t)box[3] + 1) * (size_t)nx + 7) / 8;
        if (b1 > pb) b1 = pb;
        for (size_t b = b0; b < b1; b++) {
            unsigned byte = p[b];
            while (byte) {
                int bit = __builtin_ctz(byte);
                byte &= byte - 1;
                size_t i = b * 8 + (size_t)bit;
                int x = (int)(i % (size_t)nx), y = (int)(i / (size_t)nx);
                if (x < box[0] || x > box[1] || y < box[2] || y > box[3]) continue;
                oz[(size_t)(y - box[2] + 1) * px + (size_t)(x - box[0] + 1)] = 1;
            }
        }
    }
}

/* Surface (voxels removed by a 6-connected erosion) of the padded mask a into the
 * unpadded s (bx x by x bz); returns the number of surface voxels. */
static int64_t surface6(const uint8_t *a, int bx, int by, int bz, uint8_t *s)
{
    const size_t px = (size_t)bx + 2, pxy = px * (size_t)(by + 2);
    int64_t n = 0;
    for (int z = 0; z < bz; z++)
        for (int y = 0; y < by; y++) {
            const uint8_t *r = a + (size_t)(z + 1) * pxy + (size_t)(y + 1) * px + 1;
            uint8_t *o = s + ((size_t)z * (size_t)by + (size_t)y) * (size_t)bx;
            for (int x = 0; x < bx; x++) {
                const uint8_t *c = r + x;
                uint8_t v = c[0] && !(c[-1] && c[1] && c[-(ptrdiff_t)px] && c[px] && c[-(ptrdiff_t)pxy] && c[pxy]);
                o[x] = v;
                n += v;
            }
        }
    return n;
}

/* Distances (mm) from each surface voxel of s_from to the nearest voxel of s_to, into out. */
static int directed(MetricsWork *w, const uint8_t *s_to, const uint8_t *s_from, int bx, int by, int bz,
                    const double sp[3], double *out)
{
    edt_sq(w, s_to, s_from, bx, by, bz, sp, w->dist);
    size_t n = (size_t)bx * (size_t)by * (size_t)bz, k = 0;
    for (size_t i = 0; i < n; i++)
        if (s_from[i]) out[k++] = sqrt(w->dist[i]);
    return SEG_OK;
}

int metrics_structure(MetricsWork *w, int nx, int ny, int nz, const double sp[3],
                      const uint8_t *const *ref, const uint8_t *const *pred,
                      const MetricsOptions *o, MetricsResult *out)
{
    const size_t pb = maskpack_plane_bytes((size_t)nx * (size_t)ny);
    MetricsResult r;
    memset(&r, 0, sizeof r);
    for (int z = 0; z < nz; z++) {
        int64_t a = ref[z] ? maskpack_count(ref[z], pb) : 0;
        int64_t b = pred[z] ? maskpack_count(pred[z], pb) : 0;
        r.n_ref += a; r.n_pred += b;
        if (a && b) r.tp += maskpack_count_and(ref[z], pred[z], pb);
    }
    r.fp = r.n_pred - r.tp;
    r.fn = r.n_ref - r.tp;
    r.tn = (int64_t)nx * ny * nz - r.tp - r.fp - r.fn;
    const double vox_ml = sp[0] * sp[1] * sp[2] / 1000.0;
    r.vol_ref_ml = (double)r.n_ref * vox_ml;
    r.vol_pred_ml = (double)r.n_pred * vox_ml;
    r.hd95 = r.nsd = NAN;
    if (r.n_ref == 0 && r.n_pred == 0) {
        r.kase = METRICS_CASE_BOTH_EMPTY;
        r.dice = r.iou = NAN;
        *out = r;
        return SEG_OK;
    }
    r.dice = 2.0 * (double)r.tp / (double)(2 * r.tp + r.fp + r.fn);
    r.iou = (double)r.tp / (double)(r.tp + r.fp + r.fn);
    if (r.n_ref == 0) { r.kase = METRICS_CASE_FP_ABSENT; *out = r; return SEG_OK; }
    if (r.n_pred == 0) {
        r.kase = METRICS_CASE_MISSED;
        double ex = nx * sp[0], ey = ny * sp[1], ez = nz * sp[2];
        r.hd95 = sqrt(ex * ex + ey * ey + ez * ez);
        r.nsd = 0.0;
        *out = r;
        return SEG_OK;
    }
    r.kase = METRICS_CASE_BOTH;

    int box[6], bb[6];
    planes_bbox(ref, nx, nz, pb, box);
    planes_bbox(pred, nx, nz, pb, bb);
    for (int i = 0; i < 6; i += 2) {
        if (bb[i] < box[i]) box[i] = bb[i];
        if (bb[i + 1] > box[i + 1]) box[i + 1] = bb[i + 1];
    }
    const int bx = box[1] - box[0] + 1, by = box[3] - box[2] + 1, bz = box[5] - box[4] + 1;
    const size_t npad = (size_t)(bx + 2) * (size_t)(by + 2) * (size_t)(bz + 2);
    const size_t nbox = (size_t)bx * (size_t)by * (size_t)bz;
    TRY(grow((void **)&w->a, &w->cap_a, npad, 1));
    TRY(grow((void **)&w->b, &w->cap_b, npad, 1));
    TRY(grow((void **)&w->sa, &w->cap_sa, nbox, 1));
    TRY(grow((void **)&w->sb, &w->cap_sb, nbox, 1));
    TRY(grow((void **)&w->dist, &w->cap_dist, nbox, sizeof(double)));
    int nl = bx > by ? bx : by;
    if (bz > nl) nl = bz;
    TRY(grow_lines(w, nl));

    unpack_padded(ref, nx, pb, box, w->a);
    unpack_padded(pred, nx, pb, box, w->b);
    r.n_surf_ref = surface6(w->a, bx, by, bz, w->sa);
    r.n_surf_pred = surface6(w->b, bx, by, bz, w->sb);
    TRY(grow((void **)&w->da, &w->cap_da, (size_t)r.n_surf_ref, sizeof(double)));
    TRY(grow((void **)&w->db, &w->cap_db, (size_t)r.n_surf_pred, sizeof(double)));
    directed(w, w->sa, w->sb, bx, by, bz, sp, w->db);   /* pred surface -> ref surface */
    directed(w, w->sb, w->sa, bx, by, bz, sp, w->da);   /* ref surface -> pred surface */
    int64_t within = 0;
    for (int64_t i = 0; i < r.n_surf_ref; i++) within += w->da[i] <= o->nsd_tol_mm;
    for (int64_t i = 0; i < r.n_surf_pred; i++) within += w->db[i] <= o->nsd_tol_mm;
    r.nsd = (double)within / (double)(r.n_surf_ref + r.n_surf_pred);
    double h1 = metrics_percentile(w->da, (size_t)r.n_surf_ref, o->percentile);
    double h2 = metrics_percentile(w->db, (size_t)r.n_surf_pred, o->percentile);
    r.hd95 = h1 > h2 ? h1 : h2;
    *out = r;
    return SEG_OK;
}

typedef struct SubjectJob {
    const MetricsStack *ref, *pred;
    const MetricsOptions *o;
    MetricsResult *out;
    const int *order;
    atomic_int next;
    pthread_mutex_t lock;
    int rc;
    char msg[512];
} SubjectJob;

typedef struct { SubjectJob *job; MetricsWork *w; } SubjectWorker;

static void *subject_worker(void *arg)
{
    SubjectWorker *sw = arg;
    SubjectJob *j = sw->job;
    const int nz = j->ref->nz;
    for (;;) {
        const int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->ref->n_struct) break;
        const int s = j->order[i];
        int rc = metrics_structure(sw->w, j->ref->nx, j->ref->ny, nz, j->ref->spacing,
                                   (const uint8_t *const *)j->ref->planes + (size_t)s * (size_t)nz,
                                   (const uint8_t *const *)j->pred->planes + (size_t)s * (size_t)nz, j->o, &j->out[s]);
        if (rc < 0) {
            pthread_mutex_lock(&j->lock);
            if (j->rc == SEG_OK) { j->rc = rc; snprintf(j->msg, sizeof j->msg, "%s", seg_errmsg()); }
            pthread_mutex_unlock(&j->lock);
            atomic_store(&j->next, j->ref->n_struct);
            break;
        }
    }
    return NULL;
}

typedef struct { int s; int64_t cost; } Cost;
static int cmp_cost(const void *a, const void *b)
{
    const Cost *x = a, *y = b;
    return x->cost < y->cost ? 1 : x->cost > y->cost ? -1 : x->s - y->s;
}

int metrics_subject(MetricsWork *w, const MetricsStack *ref, const MetricsStack *pred,
                    const MetricsOptions *o, MetricsResult *out)
{
    if (ref->nx != pred->nx || ref->ny != pred->ny || ref->nz != pred->nz || ref->n_struct != pred->n_struct)
        return seg_err(SEG_EMISMATCH, "metrics: reference %dx%dx%d (%d structures) vs prediction %dx%dx%d (%d)",
                       ref->nx, ref->ny, ref->nz, ref->n_struct, pred->nx, pred->ny, pred->nz, pred->n_struct);
    const int ns = ref->n_struct;
    int nt = o->threads > 1 ? o->threads : 1;
    if (nt > ns) nt = ns;
    if (nt > 64) nt = 64;
    Cost *cost = malloc(sizeof *cost * (size_t)ns);
    int *order = malloc(sizeof(int) * (size_t)ns);
    if (!cost || !order) { free(cost); free(order); return seg_err(SEG_ENOMEM, "metrics: %d structures", ns); }
    /* the largest structures first, so that the threads finish together */
    for (int s = 0; s < ns; s++) cost[s] = (Cost){ s, metrics_stack_count(ref, s) + metrics_stack_count(pred, s) };
    qsort(cost, (size_t)ns, sizeof *cost, cmp_cost);
    for (int i = 0; i < ns; i++) order[i] = cost[i].s;
    free(cost);
    SubjectJob job = { .ref = ref, .pred = pred, .o = o, .out = out, .order = order, .rc = SEG_OK };
    atomic_init(&job.next, 0);
    pthread_mutex_init(&job.lock, NULL);
    SubjectWorker workers[64];
    pthread_t tid[64];
    int started = 0, rc = SEG_OK;
    workers[0] = (SubjectWorker){ &job, w };
    for (int t = 1; t < nt; t++) {
        workers[t].job = &job;
        if (metrics_work_create(&workers[t].w) < 0) break;
        if (pthread_create(&tid[t], NULL, subject_worker, &workers[t]) != 0) { metrics_work_free(workers[t].w); break; }
        started = t;
    }
    subject_worker(&workers[0]);
    for (int t = 1; t <= started; t++) {
        pthread_join(tid[t], NULL);
        metrics_work_free(workers[t].w);
    }
    pthread_mutex_destroy(&job.lock);
    free(order);
    if (job.rc < 0) rc = seg_err(job.rc, "%s", job.msg);
    return rc;
}

/* ---- summaries ---- */

double metrics_nanmean(const double *v, int n)
{
    double s = 0;
    int k = 0;
    for (int i = 0; i < n; i++) if (isfinite(v[i])) { s += v[i]; k++; }
    return k ? s / k : NAN;
}

static double median_of(double *v, int n) { return metrics_percentile(v, (size_t)n, 50.0); }

int metrics_summarize(const MetricsResult *res, int n_subj, int n_struct, int s, MetricsSummary *out)
{
    memset(out, 0, sizeof *out);
    int s0 = s < 0 ? 0 : s, s1 = s < 0 ? n_struct : s + 1;
    size_t cap = (size_t)n_subj * (size_t)(s1 - s0);
    double *buf = malloc(sizeof(double) * (cap ? cap : 1) * 7);
    if (!buf) return seg_err(SEG_ENOMEM, "metrics: summary of %zu pairs", cap);
    double *dn = buf, *in = buf + cap, *dp = buf + 2 * cap, *ip = buf + 3 * cap, *hd = buf + 4 * cap,
           *ns = buf + 5 * cap, *tmp = buf + 6 * cap;
    int k_nn = 0, k_p = 0;
    double vr = 0, vp = 0;
    int det[METRICS_N_DETECT] = { 0 };
    for (int j = 0; j < n_subj; j++)
        for (int t = s0; t < s1; t++) {
            const MetricsResult *r = &res[(size_t)j * (size_t)n_struct + (size_t)t];
            if (r->kase == METRICS_CASE_ONE_SIDED) { out->n_one_sided++; continue; }
            if (r->kase == METRICS_CASE_UNLABELLED) { out->n_unlabelled++; continue; }
            out->n_pairs++;
            if (r->kase == METRICS_CASE_BOTH_EMPTY) { out->n_both_empty++; out->n_ref_empty++; continue; }
            dn[k_nn] = r->dice; in[k_nn] = r->iou; k_nn++;
            if (r->kase == METRICS_CASE_FP_ABSENT) { out->n_fp_absent++; out->n_ref_empty++; continue; }
            if (r->kase == METRICS_CASE_MISSED) out->n_missed++;
            out->n_ref_present++;
            dp[k_p] = r->dice; ip[k_p] = r->iou; hd[k_p] = r->hd95; ns[k_p] = r->nsd; k_p++;
            vr += r->vol_ref_ml; vp += r->vol_pred_ml;
            for (int d = 0; d < METRICS_N_DETECT; d++) det[d] += r->dice >= metrics_detect_thresholds[d];
        }
    out->dice_mean_nnunet = metrics_nanmean(dn, k_nn);
    out->iou_mean_nnunet = metrics_nanmean(in, k_nn);
    out->dice_mean = metrics_nanmean(dp, k_p);
    out->iou_mean = metrics_nanmean(ip, k_p);
    out->hd95_mean = metrics_nanmean(hd, k_p);
    out->nsd_mean = metrics_nanmean(ns, k_p);
    double ss = 0;
    for (int i = 0; i < k_p; i++) ss += (dp[i] - out->dice_mean) * (dp[i] - out->dice_mean);
    out->dice_std = k_p ? sqrt(ss / k_p) : NAN;
    memcpy(tmp, dp, sizeof(double) * (size_t)k_p); out->dice_median = median_of(tmp, k_p);
    memcpy(tmp, ip, sizeof(double) * (size_t)k_p); out->iou_median = median_of(tmp, k_p);
    memcpy(tmp, hd, sizeof(double) * (size_t)k_p); out->hd95_median = median_of(tmp, k_p);
    memcpy(tmp, ns, sizeof(double) * (size_t)k_p); out->nsd_median = median_of(tmp, k_p);
    out->vol_ref_mean_ml = k_p ? vr / k_p : NAN;
    out->vol_pred_mean_ml = k_p ? vp / k_p : NAN;
    for (int d = 0; d < METRICS_N_DETECT; d++) out->detect[d] = k_p ? (double)det[d] / k_p : NAN;
    out->fp_rate = out->n_ref_empty ? (double)out->n_fp_absent / out->n_ref_empty : NAN;
    free(buf);
    return SEG_OK;
}
