/* eval/mesh.c : marching cubes with a case table derived from the cube's faces,
 * Taubin smoothing and vertex-clustering decimation.
 *
 * The table: for each of the 256 corner configurations, every cube face contributes
 * segments between the crossed edges of its boundary. Walking a face's corners
 * counter-clockwise seen from outside the cube, each maximal run of inside corners is cut
 * off by one segment from the edge where the walk leaves the run to the edge where it
 * entered it (so on an ambiguous face, two diagonal inside corners stay separated; the
 * neighbouring cube sees the same face and makes the same choice, so no cracks). A
 * crossed edge is shared by two faces that walk it in opposite directions, so the
 * segments chain head to tail into closed loops; each loop is fanned into triangles. One
 * orientation check on the single-corner case fixes the winding for all cases. */
#include "mesh.h"
#include "util.h"
#include "maskpack.h"
#include "err.h"
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MC_MAX_TRI 12

const int mesh_edge_corners[12][2] = {
    { 0, 1 }, { 0, 2 }, { 0, 4 }, { 1, 3 }, { 1, 5 }, { 2, 3 },
    { 2, 6 }, { 3, 7 }, { 4, 5 }, { 4, 6 }, { 5, 7 }, { 6, 7 } };

static int           g_ntri[256];
static signed char   g_tri[256][MC_MAX_TRI][3];
static int           g_edge_of[8][8];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void corner_pos(int c, double p[3]) { p[0] = c & 1; p[1] = (c >> 1) & 1; p[2] = (c >> 2) & 1; }

static void build_case(int cfg, int flip)
{
    int next[12];
    for (int e = 0; e < 12; e++) next[e] = -1;
    for (int a = 0; a < 3; a++)
        for (int side = 0; side < 2; side++) {
            const int b = (a + 1) % 3, c = (a + 2) % 3;
            static const int uv[4][2] = { { 0, 0 }, { 1, 0 }, { 1, 1 }, { 0, 1 } };
            int q[4], in[4];
            for (int k = 0; k < 4; k++) {
                int kk = side ? k : 3 - k;   /* CCW seen from outside: (b, c) order on +a, reversed on -a */
                q[k] = (side << a) | (uv[kk][0] << b) | (uv[kk][1] << c);
                in[k] = (cfg >> q[k]) & 1;
            }
            for (int k = 0; k < 4; k++) {
                if (!(in[k] && !in[(k + 1) % 4])) continue;          /* edge k leaves a run */
                int j = k;                                           /* find the run's entry edge */
                for (int s = 0; s < 4; s++) {
                    int prev = (j + 3) % 4;
                    if (!in[prev]) { j = prev; break; }
                    j = prev;
                }
                int e_leave = g_edge_of[q[k]][q[(k + 1) % 4]];
                int e_enter = g_edge_of[q[j]][q[(j + 1) % 4]];
                next[e_leave] = e_enter;
            }
        }
    int seen[12] = { 0 }, nt = 0;
    for (int e0 = 0; e0 < 12; e0++) {
        if (next[e0] < 0 || seen[e0]) continue;
        int loop[12], n = 0;
        for (int e = e0; !seen[e]; e = next[e]) { seen[e] = 1; loop[n++] = e; }
        for (int i = 1; i + 1 < n; i++) {
            g_tri[cfg][nt][0] = (signed char)loop[0];
            g_tri[cfg][nt][1] = (signed char)(flip ? loop[i + 1] : loop[i]);
            g_tri[cfg][nt][2] = (signed char)(flip ? loop[i] : loop[i + 1]);
            nt++;
        }
    }
    g_ntri[cfg] = nt;
}

static void build_table(void)
{
    for (int e = 0; e < 12; e++) {
        g_edge_of[mesh_edge_corners[e][0]][mesh_edge_corners[e][1]] = e;
        g_edge_of[mesh_edge_corners[e][1]][mesh_edge_corners[e][0]] = e;
    }
    /* Winding: with only corner 0 inside, the normal must point away from corner 0. */
    build_case(1, 0);
    double p[3][3], ca[3], cb[3];
    for (int i = 0; i < 3; i++) {
        const int *ec = mesh_edge_corners[g_tri[1][0][i]];
        corner_pos(ec[0], ca); corner_pos(ec[1], cb);
        for (int d = 0; d < 3; d++) p[i][d] = 0.5 * (ca[d] + cb[d]);
    }
    double u[3], v[3];
    for (int d = 0; d < 3; d++) { u[d] = p[1][d] - p[0][d]; v[d] = p[2][d] - p[0][d]; }
    double nrm[3] = { u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0] };
    int flip = nrm[0] + nrm[1] + nrm[2] < 0;
    for (int cfg = 0; cfg < 256; cfg++) build_case(cfg, flip);
}

int mesh_case(int cfg, int tri[][3])
{
    pthread_once(&g_once, build_table);
    cfg &= 255;
    for (int i = 0; i < g_ntri[cfg]; i++)
        for (int k = 0; k < 3; k++) tri[i][k] = g_tri[cfg][i][k];
    return g_ntri[cfg];
}

void mesh_free(Mesh *m)
{
    if (!m) return;
    free(m->v);
    free(m->t);
    memset(m, 0, sizeof *m);
}

typedef struct { Mesh *m; int cap_v, cap_t; } Builder;

static int add_vertex(Builder *b, float x, float y, float z)
{
    if (b->m->nv == b->cap_v) {
        int nc = b->cap_v ? b->cap_v * 2 : 4096;
        float *nv = realloc(b->m->v, sizeof(float) * 3 * (size_t)nc);
        if (!nv) return seg_err(SEG_ENOMEM, "mesh: %d vertices", nc);
        b->m->v = nv; b->cap_v = nc;
    }
    float *p = b->m->v + 3 * (size_t)b->m->nv;
    p[0] = x; p[1] = y; p[2] = z;
    return b->m->nv++;
}

static int add_tri(Builder *b, uint32_t a, uint32_t c, uint32_t d)
{
    if (b->m->nt == b->cap_t) {
        int nc = b->cap_t ? b->cap_t * 2 : 8192;
        uint32_t *nt = realloc(b->m->t, sizeof(uint32_t) * 3 * (size_t)nc);
        if (!nt) return seg_err(SEG_ENOMEM, "mesh: %d triangles", nc);
        b->m->t = nt; b->cap_t = nc;
    }
    uint32_t *p = b->m->t + 3 * (size_t)b->m->nt++;
    p[0] = a; p[1] = c; p[2] = d;
    return SEG_OK;
}

int mesh_march(const float *f, int nx, int ny, int nz, float iso, Mesh *out)
{
    pthread_once(&g_once, build_table);
    memset(out, 0, sizeof *out);
    if (nx < 2 || ny < 2 || nz < 2) return SEG_OK;
    const size_t sxy = (size_t)nx * (size_t)ny;
    /* vertex ids of crossed grid edges: x and y edges of two z levels, z edges between them */
    int32_t *ex = malloc(sizeof(int32_t) * sxy * 5);
    if (!ex) return seg_err(SEG_ENOMEM, "mesh: edge cache %dx%d", nx, ny);
    int32_t *ey = ex + 2 * sxy, *ez = ex + 4 * sxy;
    Builder b = { out, 0, 0 };
    int rc = SEG_OK;
    for (size_t i = 0; i < sxy; i++) ex[i] = ey[i] = -1;
    static const int off[8][3] = { { 0, 0, 0 }, { 1, 0, 0 }, { 0, 1, 0 }, { 1, 1, 0 },
                                   { 0, 0, 1 }, { 1, 0, 1 }, { 0, 1, 1 }, { 1, 1, 1 } };
    for (int z = 0; z + 1 < nz && rc == SEG_OK; z++) {
        int32_t *exn = ex + (size_t)((z + 1) & 1) * sxy, *eyn = ey + (size_t)((z + 1) & 1) * sxy;
        for (size_t i = 0; i < sxy; i++) exn[i] = eyn[i] = ez[i] = -1;
        for (int y = 0; y + 1 < ny && rc == SEG_OK; y++)
            for (int x = 0; x + 1 < nx; x++) {
                float val[8];
                int cfg = 0;
                for (int c = 0; c < 8; c++) {
                    val[c] = f[(size_t)(z + off[c][2]) * sxy + (size_t)(y + off[c][1]) * (size_t)nx + (size_t)(x + off[c][0])];
                    cfg |= (val[c] > iso) << c;
                }
                if (cfg == 0 || cfg == 255) continue;
                uint32_t vid[12];
                int have[12] = { 0 };
                for (int t = 0; t < g_ntri[cfg] && rc == SEG_OK; t++) {
                    for (int k = 0; k < 3; k++) {
                        int e = g_tri[cfg][t][k];
                        if (have[e]) continue;
                        int c0 = mesh_edge_corners[e][0], c1 = mesh_edge_corners[e][1];
                        int axis = __builtin_ctz((unsigned)(c0 ^ c1));
                        int gx = x + off[c0][0], gy = y + off[c0][1], gz = z + off[c0][2];
                        size_t gi = (size_t)gy * (size_t)nx + (size_t)gx;
                        int32_t *slot = axis == 0 ? &ex[(size_t)(gz & 1) * sxy + gi]
                                      : axis == 1 ? &ey[(size_t)(gz & 1) * sxy + gi] : &ez[gi];
                        if (*slot < 0) {
                            float t01 = (iso - val[c0]) / (val[c1] - val[c0]);
                            float p[3] = { (float)gx, (float)gy, (float)gz };
                            p[axis] += t01;
                            int id = add_vertex(&b, p[0], p[1], p[2]);
                            if (id < 0) { rc = id; break; }
                            *slot = id;
                        }
                        vid[e] = (uint32_t)*slot;
                        have[e] = 1;
                    }
                    if (rc == SEG_OK)
                        rc = add_tri(&b, vid[g_tri[cfg][t][0]], vid[g_tri[cfg][t][1]], vid[g_tri[cfg][t][2]]);
                }
            }
    }
    free(ex);
    if (rc < 0) mesh_free(out);
    return rc;
}

int mesh_from_planes(const uint8_t *const *planes, int nx, int ny, int nz, const double affine[4][4],
                     int smooth_iters, Mesh *out)
{
    memset(out, 0, sizeof *out);
    const size_t pb = maskpack_plane_bytes((size_t)nx * (size_t)ny);
    int x0 = nx, x1 = -1, y0 = ny, y1 = -1, z0 = nz, z1 = -1;
    for (int z = 0; z < nz; z++) {
        const uint8_t *p = planes[z];
        if (!p) continue;
        for (size_t bi = 0; bi < pb; bi++) {
            unsigned byte = p[bi];
            while (byte) {
                size_t i = bi * 8 + (size_t)__builtin_ctz(byte);
                byte &= byte - 1;
                int x = (int)(i % (size_t)nx), y = (int)(i / (size_t)nx);
                if (x < x0) x0 = x;
                if (x > x1) x1 = x;
                if (y < y0) y0 = y;
                if (y > y1) y1 = y;
                if (z < z0) z0 = z;
                if (z > z1) z1 = z;
            }
        }
    }
    if (x1 < 0) return SEG_OK;
    /* field over the box plus one background voxel on each side */
    const int fx = x1 - x0 + 3, fy = y1 - y0 + 3, fz = z1 - z0 + 3;
    float *f = calloc((size_t)fx * (size_t)fy * (size_t)fz, sizeof *f);
    if (!f) return seg_err(SEG_ENOMEM, "mesh: field %dx%dx%d", fx, fy, fz);
    for (int z = z0; z <= z1; z++) {
        const uint8_t *p = planes[z];
        if (!p) continue;
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++) {
                size_t i = (size_t)y * (size_t)nx + (size_t)x;
                if (maskpack_get(p, i))
                    f[((size_t)(z - z0 + 1) * (size_t)fy + (size_t)(y - y0 + 1)) * (size_t)fx + (size_t)(x - x0 + 1)] = 1.f;
            }
    }
    int rc = mesh_march(f, fx, fy, fz, 0.5f, out);
    free(f);
    if (rc < 0) return rc;
    for (int i = 0; i < out->nv; i++) {
        float *v = out->v + 3 * (size_t)i;
        double c[3] = { v[0] + x0 - 1, v[1] + y0 - 1, v[2] + z0 - 1 };
        for (int r = 0; r < 3; r++)
            v[r] = (float)(affine[r][0] * c[0] + affine[r][1] * c[1] + affine[r][2] * c[2] + affine[r][3]);
    }
    /* an affine with negative determinant mirrors the mesh: restore outward winding */
    const double lin[3][3] = { { affine[0][0], affine[0][1], affine[0][2] }, { affine[1][0], affine[1][1], affine[1][2] },
                               { affine[2][0], affine[2][1], affine[2][2] } };
    if (util_det3(lin) < 0)
        for (int t = 0; t < out->nt; t++) {
            uint32_t tmp = out->t[3 * (size_t)t + 1];
            out->t[3 * (size_t)t + 1] = out->t[3 * (size_t)t + 2];
            out->t[3 * (size_t)t + 2] = tmp;
        }
    if (smooth_iters > 0 && (rc = mesh_smooth(out, smooth_iters)) < 0) mesh_free(out);
    return rc;
}

int mesh_smooth(Mesh *m, int iters)
{
    if (m->nv == 0) return SEG_OK;
    double *acc = malloc(sizeof(double) * 3 * (size_t)m->nv);
    int *cnt = malloc(sizeof(int) * (size_t)m->nv);
    if (!acc || !cnt) { free(acc); free(cnt); return seg_err(SEG_ENOMEM, "mesh: smoothing %d vertices", m->nv); }
    const double step[2] = { 0.5, -0.53 };   /* Taubin lambda, mu */
    for (int it = 0; it < 2 * iters; it++) {
        memset(acc, 0, sizeof(double) * 3 * (size_t)m->nv);
        memset(cnt, 0, sizeof(int) * (size_t)m->nv);
        for (int t = 0; t < m->nt; t++) {
            const uint32_t *tr = m->t + 3 * (size_t)t;
            for (int k = 0; k < 3; k++) {
                uint32_t a = tr[k], b = tr[(k + 1) % 3];
                for (int d = 0; d < 3; d++) {
                    acc[3 * (size_t)a + d] += m->v[3 * (size_t)b + d];
                    acc[3 * (size_t)b + d] += m->v[3 * (size_t)a + d];
                }
                cnt[a]++; cnt[b]++;
            }
        }
        const double s = step[it & 1];
        for (int i = 0; i < m->nv; i++) {
            if (!cnt[i]) continue;
            for (int d = 0; d < 3; d++) {
                float *v = &m->v[3 * (size_t)i + d];
                *v = (float)(*v + s * (acc[3 * (size_t)i + d] / cnt[i] - *v));
            }
        }
    }
    free(acc);
    free(cnt);
    return SEG_OK;
}

/* ---- decimation: open-addressing hash of grid cells ---- */

static uint64_t hash64(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}

int mesh_decimate(Mesh *m, double cell)
{
    if (cell <= 0 || m->nv == 0) return SEG_OK;
    size_t cap = 1;
    while (cap < (size_t)m->nv * 2) cap <<= 1;
    uint64_t *keys = malloc(sizeof(uint64_t) * cap);
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    uint32_t *map = malloc(sizeof(uint32_t) * (size_t)m->nv);
    double *sum = calloc(3 * (size_t)m->nv, sizeof(double));
    int *cnt = calloc((size_t)m->nv, sizeof(int));
    if (!keys || !ids || !map || !sum || !cnt) {
        free(keys); free(ids); free(map); free(sum); free(cnt);
        return seg_err(SEG_ENOMEM, "mesh: decimating %d vertices", m->nv);
    }
    for (size_t i = 0; i < cap; i++) ids[i] = -1;
    int nc = 0;
    for (int i = 0; i < m->nv; i++) {
        const float *v = m->v + 3 * (size_t)i;
        int64_t c[3];
        for (int d = 0; d < 3; d++) c[d] = (int64_t)floor(v[d] / cell);
        uint64_t key = ((uint64_t)(c[0] & 0x1fffff) << 42) | ((uint64_t)(c[1] & 0x1fffff) << 21) | (uint64_t)(c[2] & 0x1fffff);
        size_t h = hash64(key) & (cap - 1);
        while (ids[h] >= 0 && keys[h] != key) h = (h + 1) & (cap - 1);
        if (ids[h] < 0) { ids[h] = nc++; keys[h] = key; }
        int id = ids[h];
        map[i] = (uint32_t)id;
        for (int d = 0; d < 3; d++) sum[3 * (size_t)id + d] += v[d];
        cnt[id]++;
    }
    for (int id = 0; id < nc; id++)
        for (int d = 0; d < 3; d++) m->v[3 * (size_t)id + d] = (float)(sum[3 * (size_t)id + d] / cnt[id]);
    m->nv = nc;
    int nt = 0;
    for (int t = 0; t < m->nt; t++) {
        uint32_t a = map[m->t[3 * (size_t)t]], b = map[m->t[3 * (size_t)t + 1]], c = map[m->t[3 * (size_t)t + 2]];
        if (a == b || b == c || a == c) continue;
        m->t[3 * (size_t)nt] = a; m->t[3 * (size_t)nt + 1] = b; m->t[3 * (size_t)nt + 2] = c;
        nt++;
    }
    m->nt = nt;
    /* drop clusters no triangle uses any more (cnt is reused as the new index) */
    for (int id = 0; id < nc; id++) cnt[id] = -1;
    for (size_t i = 0; i < 3 * (size_t)nt; i++) cnt[m->t[i]] = 0;
    int nv = 0;
    for (int id = 0; id < nc; id++)
        if (cnt[id] == 0) {
            if (nv != id) memcpy(m->v + 3 * (size_t)nv, m->v + 3 * (size_t)id, 3 * sizeof(float));
            cnt[id] = nv++;
        }
    for (size_t i = 0; i < 3 * (size_t)nt; i++) m->t[i] = (uint32_t)cnt[m->t[i]];
    m->nv = nv;
    free(keys); free(ids); free(map); free(sum); free(cnt);
    return SEG_OK;
}

/* ---- checks ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int64_t mesh_open_edges(const Mesh *m)
{
    /* count directed edges (a, b) whose twin (b, a) is missing, with a sorted edge list */
    size_t n = 3 * (size_t)m->nt;
    if (n == 0) return 0;
    uint64_t *e = malloc(sizeof(uint64_t) * n);
    if (!e) return -1;
    for (int t = 0; t < m->nt; t++)
        for (int k = 0; k < 3; k++)
            e[3 * (size_t)t + k] = ((uint64_t)m->t[3 * (size_t)t + k] << 32) | m->t[3 * (size_t)t + (k + 1) % 3];
    qsort(e, n, sizeof *e, cmp_u64);
    int64_t open = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t twin = (e[i] << 32) | (e[i] >> 32);
        size_t lo = 0, hi = n;
        while (lo < hi) { size_t mid = (lo + hi) / 2; if (e[mid] < twin) lo = mid + 1; else hi = mid; }
        if (lo >= n || e[lo] != twin) open++;
    }
    free(e);
    return open;
}

double mesh_volume(const Mesh *m)
{
    double vol = 0;
    for (int t = 0; t < m->nt; t++) {
        const float *a = m->v + 3 * (size_t)m->t[3 * (size_t)t], *b = m->v + 3 * (size_t)m->t[3 * (size_t)t + 1],
                    *c = m->v + 3 * (size_t)m->t[3 * (size_t)t + 2];
        vol += (double)a[0] * ((double)b[1] * c[2] - (double)b[2] * c[1])
             - (double)a[1] * ((double)b[0] * c[2] - (double)b[2] * c[0])
             + (double)a[2] * ((double)b[0] * c[1] - (double)b[1] * c[0]);
    }
    return vol / 6.0;
}
