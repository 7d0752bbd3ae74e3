/* synth/synth_phantom.c : the synthetic torso phantom, its per-subject grids and files.
 *
 * The anatomy is a list of primitives (ellipsoids, tubes along polylines, elliptic cylinders,
 * vertebrae) in a nominal frame: mm, +x = patient LEFT, +y = anterior, +z = superior, z = 0 just
 * below the femoral heads, body ellipse 300 x 210 mm. A voxel gets the label of the first
 * primitive that contains it (so the list order is the overlap rule: bones, vessels, organs,
 * muscles, lungs, bowel) and otherwise a tissue (subcutaneous fat, body-wall muscle, visceral
 * fat) or air outside the body. Each subject scales this torso to its field of view (anisotropic:
 * the nominal z range [w0, w0 + Lw] fills the slices), rotates it about z and moves it. */
#define _POSIX_C_SOURCE 200809L
#include "synth_phantom.h"
#include "util.h"
#include "err.h"
#include "fsutil.h"
#include "labels.h"
#include "nii.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

/* ---- PRNG: splitmix64 seeding, xoshiro256** ------------------------------------------ */

void synth_rng_seed(SynthRng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ull);
    x = util_splitmix64(&x) ^ stream;
    for (int i = 0; i < 4; i++) r->s[i] = util_splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t synth_rng_next(SynthRng *r)
{
    uint64_t *s = r->s;
    const uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return out;
}

static inline double rng_u01(SynthRng *r) { return (double)(synth_rng_next(r) >> 11) * 0x1.0p-53; }

double synth_rng_range(SynthRng *r, double lo, double hi) { return lo + (hi - lo) * rng_u01(r); }

double synth_rng_normal(SynthRng *r)
{
    double u1 = 1.0 - rng_u01(r), u2 = rng_u01(r);   /* u1 in (0, 1] */
    return sqrt(-2.0 * log(u1)) * cos(2.0 * PI * u2);
}

static void rng_shuffle(SynthRng *r, int *a, int n)
{
    for (int i = 0; i < n; i++) a[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(synth_rng_next(r) % (uint64_t)(i + 1)), t = a[i];
        a[i] = a[j]; a[j] = t;
    }
}

/* stream ids: per subject (index << 8 | purpose), per dataset (high constants) */
enum { ST_GEOM = 1, ST_ANAT = 2, ST_NOISE = 3 };
#define ST_ORIENT 0x4F5249454E54ull
#define ST_SCALE  0x5343414C45ull
#define ST_SPLIT  0x53504C4954ull
static uint64_t stream_of(int index, int purpose) { return ((uint64_t)(unsigned)index << 8) | (uint64_t)purpose; }

/* ---- grids ----------------------------------------------------------------------------- */
void synth_default_options(SynthOptions *o)
{
    o->size[0] = 128; o->size[1] = 128; o->size[2] = 48;
    o->spacing[0] = o->spacing[1] = o->spacing[2] = 0;
    o->mask_level = 1;
    o->ct_level = 1;
}

/* The slice axis is always voxel axis k; the first five flip axes, the rest also swap the
 * in-plane axes (a first voxel axis along A-P). */
static const char *const g_orients[] = { "RAS", "LPS", "LAS", "RPS", "LPI", "PLS", "ARS", "PRI", "ALS" };
#define N_ORIENT ((int)(sizeof g_orients / sizeof g_orients[0]))
#define FIRST_PERMUTED 5
static const double g_scl[4][2] = { { 0, 0 }, { 0.5, -1024 }, { 1, 0 }, { 2, -1024 } };

static void axis_dir(char c, double d[3])
{
    d[0] = d[1] = d[2] = 0;
    switch (c) {
    case 'R': d[0] = 1; break;  case 'L': d[0] = -1; break;
    case 'A': d[1] = 1; break;  case 'P': d[1] = -1; break;
    case 'S': d[2] = 1; break;  default:  d[2] = -1; break;   /* 'I' */
    }
}

int synth_geometry(const SynthOptions *o, uint64_t seed, int index, SynthGeometry *g)
{
    for (int a = 0; a < 3; a++) {
        if (o->size[a] < 4 || o->size[a] > 4096) return seg_err(SEG_EARG, "size %d out of range 4..4096", o->size[a]);
        if (o->spacing[a] < 0 || o->spacing[a] > 50) return seg_err(SEG_EARG, "spacing %g out of range 0..50 mm", o->spacing[a]);
    }
    if (index < 0) return seg_err(SEG_EARG, "subject index %d", index);
    memset(g, 0, sizeof *g);
    SynthRng r;
    int perm[N_ORIENT], sperm[4];
    synth_rng_seed(&r, seed, ST_ORIENT);
    rng_shuffle(&r, perm, N_ORIENT);
    int has_perm = 0;   /* any 4 consecutive subjects include an axis permutation */
    for (int i = 0; i < 4; i++) has_perm |= perm[i] >= FIRST_PERMUTED;
    if (!has_perm)
        for (int i = 4; i < N_ORIENT; i++)
            if (perm[i] >= FIRST_PERMUTED) { int t = perm[3]; perm[3] = perm[i]; perm[i] = t; break; }
    synth_rng_seed(&r, seed, ST_SCALE);
    rng_shuffle(&r, sperm, 4);
    const char *code = g_orients[perm[index % N_ORIENT]];
    memcpy(g->orient, code, 4);
    g->slope = g_scl[sperm[index % 4]][0];
    g->inter = g_scl[sperm[index % 4]][1];

    synth_rng_seed(&r, seed, stream_of(index, ST_GEOM));
    for (int a = 0; a < 3; a++) {
        long n = lround(o->size[a] * synth_rng_range(&r, 0.9, 1.1));
        g->dim[a] = n < 4 ? 4 : n;
    }
    /* round to 0.01 mm: headers read back exactly as declared */
    double ip = o->spacing[0] > 0 ? o->spacing[0] : round(synth_rng_range(&r, 0.7, 1.5) * 100) / 100;
    double ip2 = o->spacing[1] > 0 ? o->spacing[1] : ip;
    double sl = o->spacing[2] > 0 ? o->spacing[2] : round(synth_rng_range(&r, 1.5, 5.0) * 100) / 100;
    g->spacing[0] = ip; g->spacing[1] = ip2; g->spacing[2] = sl;
    double centre[3] = { round(synth_rng_range(&r, -40, 40)), round(synth_rng_range(&r, -60, 40)),
                         round(synth_rng_range(&r, -400, 200)) };
    memset(g->affine, 0, sizeof g->affine);
    for (int a = 0; a < 3; a++) {
        double d[3];
        axis_dir(code[a], d);
        for (int w = 0; w < 3; w++) g->affine[w][a] = d[w] * g->spacing[a];
    }
    for (int w = 0; w < 3; w++) {
        double t = centre[w];
        for (int a = 0; a < 3; a++) t -= g->affine[w][a] * 0.5 * (double)(g->dim[a] - 1);
        g->affine[w][3] = t;
    }
    g->affine[3][3] = 1;
    return SEG_OK;
}

/* ---- primitives ------------------------------------------------------------------------ */
enum { K_ELL, K_TUBE, K_ECYL, K_VERT };
enum { T_FLAT, T_SHELL, T_LUMEN, T_STOMACH, T_LUNG, T_BOWEL };
enum { CLIP_NONE, CLIP_INNER, CLIP_CAVITY };
#define MAXPTS 12
#define MAXPRIM 160
#define ZBIN_LO (-100.0)
#define ZBIN_MM 10.0
#define NBIN 80

typedef struct Prim {
    int    kind, label, tex, clip;
    double hu, hu2;          /* T_SHELL: outer/inner; T_LUMEN: wall/lumen; T_STOMACH: fluid/gas */
    double frac;             /* T_SHELL: outer band of the normalised depth; T_LUMEN: lumen radius */
    double lo[3], hi[3];     /* bounding box in the nominal frame */
    double c[3], r[3], m[9]; /* K_ELL: local = m (q - c); K_ECYL: centre, radii (x, y); K_VERT: body */
    double z0, z1;           /* K_VERT: body z range (lo/hi add the disc halves) */
    double canal_y, canal_r, arch_hu;
    int    np;
    double p[MAXPTS][4];     /* K_TUBE: x, y, z, radius */
} Prim;

struct SynthPhantom {
    double w2n[3][4];        /* world RAS+ -> nominal frame */
    double fat, wall;        /* subcutaneous fat and body-wall thickness, nominal mm */
    double hu_fat, hu_wall, hu_visc, hu_disc;
    double fiss_z[2], fiss_h; /* lung fissures: oblique z at y = 0 (left, right), horizontal */
    int    nprim;
    Prim   prim[MAXPRIM];
    int    nbin[NBIN];
    uint8_t bin[NBIN][MAXPRIM];
    double noise_sigma;
};

static int ch(const char *name)
{
    for (int c = 0; c < LABELS_TS_TOTAL_N; c++)
        if (!strcmp(labels_ts_total[c], name)) return c + 1;
    return -1;
}

/* Builder state: the phantom, the anatomy stream, per-label intensity jitter. */
typedef struct Build {
    SynthPhantom *P;
    SynthRng     *r;
    double        jit[LABELS_TS_TOTAL_N + 1];
    int           rc;
} Build;

static Prim *add(Build *b, const char *name, int kind, int tex, double hu, double hu2, double frac, int clip)
{
    if (b->rc < 0) return NULL;
    int lab = 0;
    if (name) {
        lab = ch(name);
        if (lab < 0) { b->rc = seg_err(SEG_EARG, "synth_phantom: '%s' is not a TotalSegmentator structure", name); return NULL; }
    }
    if (b->P->nprim >= MAXPRIM) { b->rc = seg_err(SEG_ENOMEM, "synth_phantom: more than %d primitives", MAXPRIM); return NULL; }
    Prim *p = &b->P->prim[b->P->nprim++];
    memset(p, 0, sizeof *p);
    p->kind = kind; p->label = lab; p->tex = tex; p->clip = clip;
    p->hu = hu + b->jit[lab]; p->hu2 = hu2 + b->jit[lab]; p->frac = frac;
    return p;
}

/* Ellipsoid at c with radii r, turned by yaw about z then pitch about x (degrees). */
static void ell(Build *b, const char *name, int tex, double hu, double hu2, double frac, int clip,
                double cx, double cy, double cz, double rx, double ry, double rz, double yaw, double pitch)
{
    Prim *p = add(b, name, K_ELL, tex, hu, hu2, frac, clip);
    if (!p) return;
    double cy_ = cos(yaw * PI / 180), sy = sin(yaw * PI / 180), cp = cos(pitch * PI / 180), sp = sin(pitch * PI / 180);
    /* R = Rz(yaw) Rx(pitch); m = R^T */
    double R[9] = { cy_, -sy * cp, sy * sp,
                    sy,  cy_ * cp, -cy_ * sp,
                    0,   sp,       cp };
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) p->m[i * 3 + j] = R[j * 3 + i];
    p->c[0] = cx; p->c[1] = cy; p->c[2] = cz;
    p->r[0] = rx; p->r[1] = ry; p->r[2] = rz;
    for (int i = 0; i < 3; i++) {   /* exact half-extent of a rotated ellipsoid along axis i */
        double e = 0;
        for (int j = 0; j < 3; j++) e += R[i * 3 + j] * R[i * 3 + j] * p->r[j] * p->r[j];
        e = sqrt(e);
        p->lo[i] = p->c[i] - e; p->hi[i] = p->c[i] + e;
    }
}

/* Tube along n points {x, y, z, radius} (capsules: round joints and ends). */
static void tube(Build *b, const char *name, int tex, double hu, double hu2, double frac, int clip,
                 int n, const double (*pts)[4])
{
    Prim *p = add(b, name, K_TUBE, tex, hu, hu2, frac, clip);
    if (!p) return;
    if (n > MAXPTS) n = MAXPTS;
    p->np = n;
    for (int i = 0; i < 3; i++) { p->lo[i] = 1e30; p->hi[i] = -1e30; }
    for (int k = 0; k < n; k++) {
        memcpy(p->p[k], pts[k], sizeof p->p[k]);
        for (int i = 0; i < 3; i++) {
            if (pts[k][i] - pts[k][3] < p->lo[i]) p->lo[i] = pts[k][i] - pts[k][3];
            if (pts[k][i] + pts[k][3] > p->hi[i]) p->hi[i] = pts[k][i] + pts[k][3];
        }
    }
}

static void ecyl(Build *b, const char *name, int tex, double hu, double hu2, double frac, int clip,
                 double cx, double cy, double rx, double ry, double z0, double z1)
{
    Prim *p = add(b, name, K_ECYL, tex, hu, hu2, frac, clip);
    if (!p) return;
    p->c[0] = cx; p->c[1] = cy; p->r[0] = rx; p->r[1] = ry;
    p->lo[0] = cx - rx; p->hi[0] = cx + rx; p->lo[1] = cy - ry; p->hi[1] = cy + ry;
    p->lo[2] = z0; p->hi[2] = z1;
}

/* Body half-axes at nominal z: a wider pelvis, a narrower waist. */
static void body_axes(double z, double *a, double *b)
{
    double pel = exp(-((z - 110) / 70) * ((z - 110) / 70)), waist = exp(-((z - 320) / 80) * ((z - 320) / 80));
    *a = 150 * (1 + 0.06 * pel - 0.05 * waist);
    *b = 105 * (1 + 0.03 * pel - 0.02 * waist);
}

/* Normalised depth (0 centre .. 1 surface) of q in p, or -1 outside. */
static double depth(const Prim *p, const double q[3])
{
    switch (p->kind) {
    case K_ELL: {
        double d0 = q[0] - p->c[0], d1 = q[1] - p->c[1], d2 = q[2] - p->c[2], s = 0;
        for (int i = 0; i < 3; i++) {
            double l = (p->m[i * 3] * d0 + p->m[i * 3 + 1] * d1 + p->m[i * 3 + 2] * d2) / p->r[i];
            s += l * l;
        }
        return s < 1 ? sqrt(s) : -1;
    }
    case K_ECYL: {
        double dx = (q[0] - p->c[0]) / p->r[0], dy = (q[1] - p->c[1]) / p->r[1], s = dx * dx + dy * dy;
        return s < 1 ? sqrt(s) : -1;
    }
    case K_TUBE: {
        double best = -1;
        for (int k = 0; k + 1 < p->np; k++) {
            const double *a = p->p[k], *e = p->p[k + 1];
            double v[3] = { e[0] - a[0], e[1] - a[1], e[2] - a[2] }, w[3] = { q[0] - a[0], q[1] - a[1], q[2] - a[2] };
            double vv = v[0] * v[0] + v[1] * v[1] + v[2] * v[2], t = vv > 0 ? (v[0] * w[0] + v[1] * w[1] + v[2] * w[2]) / vv : 0;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double R = a[3] + t * (e[3] - a[3]), dx = w[0] - t * v[0], dy = w[1] - t * v[1], dz = w[2] - t * v[2];
            double d2 = dx * dx + dy * dy + dz * dz;
            if (d2 < R * R) {
                double rho = sqrt(d2) / R;
                if (best < 0 || rho < best) best = rho;
            }
        }
        return best;
    }
    default: return -1;
    }
}

/* Smooth pseudo-random field in [-1, 1] for lung vessels and bowel loops (no state, so the
 * phantom is a pure function of position). */
static double field(double x, double y, double z, double f)
{
    return sin(f * x + 1.3 + 0.4 * sin(0.7 * f * z)) * sin(1.1 * f * y + 0.7) * sin(0.9 * f * z + 0.3 * sin(f * x));
}

/* Evaluate primitive p at q: -1 if it does not claim q, else its label (0 = tissue) and *hu. */
static int prim_eval(const SynthPhantom *P, const Prim *p, const double q[3], double *hu)
{
    double rho;
    if (p->kind == K_VERT) {
        double dx = q[0] - p->c[0], dy = q[1] - p->c[1], s = (dx / p->r[0]) * (dx / p->r[0]) + (dy / p->r[1]) * (dy / p->r[1]);
        int in_z = q[2] >= p->z0 && q[2] <= p->z1;
        if (s < 1) {
            if (!in_z) { *hu = P->hu_disc; return 0; }
            double hz = 0.5 * (p->z1 - p->z0), ez = fabs(q[2] - 0.5 * (p->z0 + p->z1)) / hz;
            rho = sqrt(s) > ez ? sqrt(s) : ez;
            *hu = rho > 1 - p->frac ? p->hu : p->hu2;
            return p->label;
        }
        if (!in_z) return -1;
        double ay = q[1] - p->canal_y, ax = fabs(q[0]), d = sqrt(ax * ax + ay * ay), cr = p->canal_r;
        int arch = (d >= cr && d <= cr + 6) ||
                   (ax <= 4 && ay <= -cr && ay >= -cr - 20) ||             /* spinous process */
                   (fabs(ay) <= 4.5 && ax >= cr && ax <= cr + 22);         /* transverse processes */
        if (!arch) return -1;
        *hu = p->arch_hu;
        return p->label;
    }
    if ((rho = depth(p, q)) < 0) return -1;
    if (p->clip != CLIP_NONE) {
        double a, b;
        body_axes(q[2], &a, &b);
        double in = p->clip == CLIP_CAVITY ? P->fat + P->wall : P->fat;
        double ex = q[0] / (a - in), ey = q[1] / (b - in);
        if (ex * ex + ey * ey >= 1) return -1;
    }
    switch (p->tex) {
    case T_SHELL:   *hu = rho > 1 - p->frac ? p->hu : p->hu2; break;
    case T_LUMEN:   *hu = rho < p->frac ? p->hu2 : p->hu; break;
    case T_STOMACH: *hu = q[1] - p->c[1] > 0.45 * p->r[1] ? p->hu2 : p->hu; break;
    case T_BOWEL:   *hu = p->hu + 25 * field(q[0], q[1], q[2], 0.22); break;
    case T_LUNG: {
        double v = field(q[0], q[1], q[2], 0.3);
        *hu = v > 0.8 ? p->hu + 650 * (v - 0.8) / 0.2 : p->hu;   /* sparse bright vessels */
        int left = p->c[0] > 0;
        double oblique = P->fiss_z[left ? 0 : 1] - 0.9 * q[1];
        if (left) return ch(q[2] < oblique ? "lung_lower_lobe_left" : "lung_upper_lobe_left");
        if (q[2] < oblique) return ch("lung_lower_lobe_right");
        return ch(q[2] < P->fiss_h ? "lung_middle_lobe_right" : "lung_upper_lobe_right");
    }
    default: *hu = p->hu; break;
    }
    return p->label;
}

/* Label and HU at a point of the nominal frame. */
static int eval_nominal(const SynthPhantom *P, const double q[3], double *hu)
{
    double a, b;
    body_axes(q[2], &a, &b);
    double ex = q[0] / a, ey = q[1] / b, e = ex * ex + ey * ey;
    if (e >= 1) { *hu = -1000; return 0; }
    double zb = (q[2] - ZBIN_LO) / ZBIN_MM;
    if (zb >= 0 && zb < NBIN) {
        int bi = (int)zb;
        for (int k = 0; k < P->nbin[bi]; k++) {
            const Prim *p = &P->prim[P->bin[bi][k]];
            if (q[0] < p->lo[0] || q[0] > p->hi[0] || q[1] < p->lo[1] || q[1] > p->hi[1] ||
                q[2] < p->lo[2] || q[2] > p->hi[2]) continue;
            int lab = prim_eval(P, p, q, hu);
            if (lab >= 0) return lab;
        }
    }
    double fx = q[0] / (a - P->fat), fy = q[1] / (b - P->fat);
    if (fx * fx + fy * fy >= 1) { *hu = P->hu_fat; return 0; }
    double in = P->fat + P->wall, cx = q[0] / (a - in), cy = q[1] / (b - in);
    *hu = cx * cx + cy * cy >= 1 ? P->hu_wall : P->hu_visc;
    return 0;
}

/* ---- anatomy ------------------------------------------------------------------------- */
typedef struct Level { const char *name; double h; } Level;
/* S1 up to T1: body height + disc (mm); the disc is 6 mm in the lumbar spine, 5 above. */
static const Level g_levels[] = {
    { "vertebrae_S1", 24 }, { "vertebrae_L5", 28 }, { "vertebrae_L4", 28 }, { "vertebrae_L3", 28 },
    { "vertebrae_L2", 28 }, { "vertebrae_L1", 27 }, { "vertebrae_T12", 25 }, { "vertebrae_T11", 24 },
    { "vertebrae_T10", 23 }, { "vertebrae_T9", 22 }, { "vertebrae_T8", 22 }, { "vertebrae_T7", 21 },
    { "vertebrae_T6", 21 }, { "vertebrae_T5", 20 }, { "vertebrae_T4", 20 }, { "vertebrae_T3", 19 },
    { "vertebrae_T2", 19 }, { "vertebrae_T1", 19 },
};
#define N_LEVELS ((int)(sizeof g_levels / sizeof g_levels[0]))

static void build_anatomy(Build *B)
{
    SynthPhantom *P = B->P;
    SynthRng *r = B->r;
#define J(x) ((x) + synth_rng_range(r, -5, 5))          /* position jitter, +-5 mm */
#define S(x) ((x) * synth_rng_range(r, 0.92, 1.08))      /* size jitter, +-8 % */
    char nm[64];

    /* spine: z of each body (and vertebra centres used by the ribs) */
    double zc[N_LEVELS], z = 165 + synth_rng_range(r, -6, 6), hs = synth_rng_range(r, 0.95, 1.05);
    const double canal_y = -62, canal_r = 9;
    ecyl(B, "spinal_cord", T_FLAT, 35, 0, 0, CLIP_NONE, 0, canal_y, 5.5, 5.5, 300, 700);
    ecyl(B, NULL, T_FLAT, 12, 0, 0, CLIP_NONE, 0, canal_y, canal_r, canal_r, 150, 700);
    for (int i = 0; i < N_LEVELS; i++) {
        double disc = i <= 5 ? 6 : 5, h = g_levels[i].h * hs, body = h - disc;
        Prim *p = add(B, g_levels[i].name, K_VERT, T_SHELL, 850, 320, 0.2, CLIP_NONE);
        if (!p) return;
        int lumbar = i <= 5;
        p->r[0] = lumbar ? 22 : 18; p->r[1] = lumbar ? 17 : 15;
        p->c[0] = 0; p->c[1] = canal_y + canal_r + p->r[1];
        p->z0 = z; p->z1 = z + body;
        p->canal_y = canal_y; p->canal_r = canal_r;
        p->arch_hu = 650 + B->jit[p->label];
        p->lo[0] = -(canal_r + 23); p->hi[0] = canal_r + 23;
        p->lo[1] = canal_y - canal_r - 21; p->hi[1] = p->c[1] + p->r[1];
        p->lo[2] = z - disc / 2; p->hi[2] = z + body + disc / 2;
        zc[i] = z + body / 2;
        z += h;
    }
    ell(B, "sacrum", T_SHELL, 700, 250, 0.25, CLIP_NONE, 0, J(-68), J(zc[0] - 52), S(42), S(20), S(48), 0, 22);

    /* ribs: rib n leaves the transverse process of T n and runs around the wall just inside
     * the fat, descending anteriorly; 1-10 continue as costal cartilage. */
    double fat = P->fat, wall = P->wall;
    double y_st = 105 - fat - wall * 0.5 - 3;
    for (int side = -1; side <= 1; side += 2) {
        for (int n = 1; n <= 12; n++) {
            double zr = zc[6 + 12 - n] + synth_rng_range(r, -2, 2);   /* T12 is level 6 */
            double phimax = n <= 7 ? 150 : n == 8 ? 138 : n == 9 ? 128 : n == 10 ? 118 : n == 11 ? 100 : 75;
            double drop = n <= 10 ? 72 : n == 11 ? 35 : 22, a, b;
            body_axes(zr, &a, &b);
            double ar = a - fat - wall * 0.5, br = b - fat - wall * 0.5;
            double pts[MAXPTS][4];
            int np = 0;
            pts[np][0] = side * 26; pts[np][1] = canal_y + 2; pts[np][2] = zr; pts[np++][3] = 4.5;
            for (int k = 0; k <= 6; k++) {
                double t = k / 6.0, phi = (35 + t * (phimax - 35)) * PI / 180;
                pts[np][0] = side * ar * sin(phi); pts[np][1] = -br * cos(phi);
                pts[np][2] = zr + 6 * sin(PI * t) - drop * pow(t, 1.2); pts[np++][3] = 4.5;
            }
            snprintf(nm, sizeof nm, "rib_%s_%d", side > 0 ? "left" : "right", n);
            tube(B, nm, T_SHELL, 800, 250, 0.45, CLIP_NONE, np, (const double (*)[4])pts);
            if (n <= 10) {
                double c[3][4], *e = pts[np - 1];
                memcpy(c[0], e, sizeof c[0]);
                if (n <= 7) {
                    double phi = 166 * PI / 180;
                    c[1][0] = side * ar * sin(phi); c[1][1] = -br * cos(phi) - 1; c[1][2] = e[2] + 4;
                    c[2][0] = side * 13; c[2][1] = y_st; c[2][2] = e[2] + 10;
                } else {
                    double phi = (phimax + 12) * PI / 180;
                    c[1][0] = side * ar * sin(phi); c[1][1] = -br * cos(phi); c[1][2] = e[2] + 12;
                    c[2][0] = side * (20 + 13 * (n - 7)); c[2][1] = -br * cos(160 * PI / 180) - 4; c[2][2] = e[2] + 30;
                }
                c[1][3] = c[2][3] = 4;
                tube(B, "costal_cartilages", T_FLAT, 160, 0, 0, CLIP_NONE, 3, (const double (*)[4])c);
            }
        }
    }
    ecyl(B, "sternum", T_SHELL, 500, 200, 0.4, CLIP_NONE, 0, y_st, 14, 6, zc[11] - 30, 700);

    /* pelvis and femurs */
    for (int side = -1; side <= 1; side += 2) {
        const char *sd = side > 0 ? "left" : "right";
        double fx = J(85) * side, fy = J(5), fz = J(45);
        snprintf(nm, sizeof nm, "femur_%s", sd);
        ell(B, nm, T_SHELL, 1000, 300, 0.3, CLIP_NONE, fx, fy, fz, 21, 21, 21, 0, 0);
        double shaft[3][4] = { { fx, fy, fz, 13 }, { fx + side * 27, fy - 7, fz - 15, 15 }, { fx + side * 33, fy - 5, fz - 80, 14 } };
        tube(B, nm, T_SHELL, 1000, 300, 0.35, CLIP_NONE, 3, (const double (*)[4])shaft);
        snprintf(nm, sizeof nm, "hip_%s", sd);
        ell(B, nm, T_SHELL, 800, 230, 0.3, CLIP_NONE, side * J(95), J(-25), J(145), S(14), S(52), S(45), side * -25, 0);
        ell(B, nm, T_SHELL, 800, 230, 0.3, CLIP_NONE, side * J(78), J(-8), J(64), S(22), S(32), S(38), 0, 0);
        double pubis[2][4] = { { side * 70, 25, 55, 11 }, { side * 14, 52, 52, 10 } };
        tube(B, nm, T_SHELL, 800, 230, 0.35, CLIP_NONE, 2, (const double (*)[4])pubis);
    }

    /* vessels, oesophagus, trachea */
    double ab = J(265), ax = J(15);
    double aorta[9][4] = { { ax, -8, ab, 11 }, { ax - 1, -8, 330, 11 }, { ax + 2, -14, 400, 12 }, { ax + 10, -25, 470, 12 },
                           { ax + 9, -24, 550, 13 }, { ax, -5, 595, 14 }, { ax - 10, 25, 590, 14 }, { ax - 10, 35, 540, 14 },
                           { ax - 7, 32, 515, 14 } };
    tube(B, "aorta", T_FLAT, 210, 0, 0, CLIP_NONE, 9, (const double (*)[4])aorta);
    double vb = ab - 13;
    for (int side = -1; side <= 1; side += 2) {
        double art[4][4] = { { ax, -8, ab, 8 }, { side > 0 ? 45 : -20, 2, ab - 65, 7.5 }, { side * 58, 12, 130, 7 }, { side * 72, 40, 62, 7 } };
        tube(B, side > 0 ? "iliac_artery_left" : "iliac_artery_right", T_FLAT, 200, 0, 0, CLIP_NONE, 4, (const double (*)[4])art);
    }
    for (int side = -1; side <= 1; side += 2) {
        double ven[4][4] = { { -18, -12, vb, 9 }, { side > 0 ? 28 : -40, -5, vb - 62, 8.5 }, { side * 57, 5, 125, 8 }, { side * 68, 30, 60, 8 } };
        tube(B, side > 0 ? "iliac_vena_left" : "iliac_vena_right", T_FLAT, 140, 0, 0, CLIP_NONE, 4, (const double (*)[4])ven);
    }
    double ivc[5][4] = { { -18, -12, vb, 11 }, { -20, -10, 330, 11 }, { -24, -2, 400, 12 }, { -18, 8, 445, 12 }, { -10, 15, 470, 12 } };
    tube(B, "inferior_vena_cava", T_FLAT, 150, 0, 0, CLIP_NONE, 5, (const double (*)[4])ivc);
    double svc[2][4] = { { -28, 25, 520, 9 }, { -26, 20, 640, 9 } };
    tube(B, "superior_vena_cava", T_FLAT, 160, 0, 0, CLIP_NONE, 2, (const double (*)[4])svc);
    double pv[4][4] = { { -40, 8, J(392), 7 }, { -12, 2, 368, 7 }, { 25, -8, 364, 6.5 }, { 72, -30, 388, 6.5 } };
    tube(B, "portal_vein_and_splenic_vein", T_FLAT, 170, 0, 0, CLIP_NONE, 4, (const double (*)[4])pv);
    double eso[4][4] = { { 0, -12, 700, 8 }, { 2, -12, 480, 8 }, { 15, -2, 432, 8 }, { 35, 12, 412, 8 } };
    tube(B, "esophagus", T_LUMEN, 45, -900, 0.3, CLIP_NONE, 4, (const double (*)[4])eso);
    double tra[2][4] = { { 0, 8, J(560), 9 }, { 0, 10, 700, 9 } };
    tube(B, "trachea", T_LUMEN, 60, -1000, 0.75, CLIP_NONE, 2, (const double (*)[4])tra);

    /* organs (clipped to the body cavity) */
    ell(B, "heart", T_SHELL, 70, 180, 0.22, CLIP_CAVITY, J(15), J(30), J(495), S(62), S(48), S(52), 30, 0);
    ell(B, "gallbladder", T_FLAT, 10, 0, 0, CLIP_CAVITY, J(-48), J(48), J(352), S(14), S(15), S(26), 0, 0);
    ell(B, "adrenal_gland_left", T_FLAT, 35, 0, 0, CLIP_CAVITY, J(45), -28, J(388), 6, 12, 14, 20, 0);
    ell(B, "adrenal_gland_right", T_FLAT, 35, 0, 0, CLIP_CAVITY, J(-45), -28, J(385), 6, 12, 14, -20, 0);
    ell(B, "kidney_left", T_SHELL, 170, 110, 0.35, CLIP_CAVITY, J(65), J(-40), J(338), S(25), S(20), S(48), 25, 0);
    ell(B, "kidney_right", T_SHELL, 170, 110, 0.35, CLIP_CAVITY, J(-65), J(-40), J(322), S(25), S(20), S(48), -25, 0);
    double pz = J(0);
    double pan[4][4] = { { -25, 5, 345 + pz, 15 }, { 5, 8, 352 + pz, 12 }, { 40, -5, 362 + pz, 11 }, { 70, -25, 375 + pz, 10 } };
    tube(B, "pancreas", T_FLAT, 45, 0, 0, CLIP_CAVITY, 4, (const double (*)[4])pan);
    double duo[5][4] = { { -15, 18, 378, 10 }, { -45, 10, 362, 10 }, { -48, 5, 330, 10 }, { -25, 0, 312, 10 }, { 8, 3, 316, 10 } };
    tube(B, "duodenum", T_LUMEN, 35, -600, 0.3, CLIP_CAVITY, 5, (const double (*)[4])duo);
    ell(B, "spleen", T_FLAT, 70, 0, 0, CLIP_CAVITY, J(85), J(-42), J(400), S(28), S(48), S(46), -30, 0);
    double lx = J(-62), ly = J(12), lz = J(395);
    ell(B, "liver", T_FLAT, 55, 0, 0, CLIP_CAVITY, lx, ly, lz, S(78), S(70), S(66), 10, 0);
    ell(B, "liver", T_FLAT, 55, 0, 0, CLIP_CAVITY, lx + 67, ly + 33, lz + 23, S(42), S(24), S(32), 0, 0);
    ell(B, "stomach", T_STOMACH, 20, -900, 0, CLIP_CAVITY, J(52), J(18), J(398), S(36), S(32), S(42), 25, 0);
    ell(B, "urinary_bladder", T_FLAT, 8, 0, 0, CLIP_CAVITY, J(0), J(45), J(78), S(40), S(32), S(32), 0, 0);
    if (synth_rng_range(r, 0, 1) < 0.5)
        ell(B, "prostate", T_FLAT, 40, 0, 0, CLIP_CAVITY, J(0), J(28), J(38), S(18), S(14), S(16), 0, 0);
    double cj = J(0);
    double colon[12][4] = { { -85, 15, 215, 17 }, { -92, 0, 290, 17 }, { -80, 20, 335 + cj, 17 }, { -30, 62, 330 + cj, 17 },
                            { 30, 62, 335 + cj, 17 }, { 82, 25, 365 + cj, 17 }, { 92, 0, 300, 17 }, { 85, 5, 220, 16 },
                            { 55, 35, 165, 15 }, { 15, 25, 140, 15 }, { 0, -35, 120, 15 }, { 0, -40, 70, 14 } };
    tube(B, "colon", T_LUMEN, 40, -750, 0.65, CLIP_CAVITY, 12, (const double (*)[4])colon);

    /* muscles (clipped to the inside of the subcutaneous fat) */
    for (int side = -1; side <= 1; side += 2) {
        const char *sd = side > 0 ? "left" : "right";
        snprintf(nm, sizeof nm, "autochthon_%s", sd);
        ecyl(B, nm, T_FLAT, 50, 0, 0, CLIP_INNER, side * 30, -80, S(17), S(16), 120, 700);
        snprintf(nm, sizeof nm, "iliopsoas_%s", sd);
        double ps[5][4] = { { side * 30, -32, zc[5], 8 }, { side * 44, -26, 290, 14 }, { side * 60, -12, 205, 19 },
                            { side * 76, 12, 110, 18 }, { side * 82, 28, 40, 14 } };
        tube(B, nm, T_FLAT, 50, 0, 0, CLIP_INNER, 5, (const double (*)[4])ps);
        snprintf(nm, sizeof nm, "gluteus_minimus_%s", sd);
        ell(B, nm, T_FLAT, 45, 0, 0, CLIP_INNER, side * 112, -12, J(118), 10, 30, 30, 0, 0);
        snprintf(nm, sizeof nm, "gluteus_medius_%s", sd);
        ell(B, nm, T_FLAT, 50, 0, 0, CLIP_INNER, side * 122, -35, J(150), 18, 48, 45, 0, 0);
        snprintf(nm, sizeof nm, "gluteus_maximus_%s", sd);
        ell(B, nm, T_FLAT, 50, 0, 0, CLIP_INNER, side * 70, -85, J(85), S(62), 30, S(75), side * -15, 0);
    }

    /* lungs, then the small bowel filling the rest of the lower abdomen */
    double lz_l = J(525), lz_r = lz_l - 5 + synth_rng_range(r, -3, 3);
    ell(B, NULL, T_LUNG, -850, 0, 0, CLIP_CAVITY, 70, -5, lz_l, 62, 80, 148, 0, 0);
    ell(B, NULL, T_LUNG, -850, 0, 0, CLIP_CAVITY, -70, -5, lz_r, 64, 80, 150, 0, 0);
    P->prim[P->nprim - 2].hu += B->jit[ch("lung_upper_lobe_left")];
    P->prim[P->nprim - 1].hu += B->jit[ch("lung_upper_lobe_right")];
    P->fiss_z[0] = lz_l - 55; P->fiss_z[1] = lz_r - 50; P->fiss_h = lz_r - 40;
    ell(B, "small_bowel", T_BOWEL, 35, 0, 0, CLIP_CAVITY, J(5), J(35), J(262), S(78), S(45), S(75), 0, 0);
#undef J
#undef S
}

static void build_bins(SynthPhantom *P)
{
    for (int bi = 0; bi < NBIN; bi++) {
        double z0 = ZBIN_LO + bi * ZBIN_MM, z1 = z0 + ZBIN_MM;
        P->nbin[bi] = 0;
        for (int k = 0; k < P->nprim; k++)
            if (P->prim[k].hi[2] >= z0 && P->prim[k].lo[2] <= z1) P->bin[bi][P->nbin[bi]++] = (uint8_t)k;
    }
}

/* World extent of the grid along world axis w (voxel count x spacing) and its centre. */
static void world_extent(const SynthGeometry *g, int w, double *ext, double *centre, double *lo)
{
    double c = g->affine[w][3], e = 0, mn = g->affine[w][3];
    for (int a = 0; a < 3; a++) {
        double step = g->affine[w][a], span = step * (double)(g->dim[a] - 1);
        c += 0.5 * span;
        if (fabs(step) > 1e-9) e = fabs(step) * (double)g->dim[a];
        if (span < 0) mn += span;
    }
    *ext = e; *centre = c; *lo = mn;
}

int synth_phantom_new(uint64_t seed, int index, const SynthGeometry *g, SynthPhantom **out)
{
    *out = NULL;
    SynthPhantom *P = calloc(1, sizeof *P);
    if (!P) return seg_err(SEG_ENOMEM, "synth_phantom: %zu bytes", sizeof *P);
    SynthRng r;
    synth_rng_seed(&r, seed, stream_of(index, ST_ANAT));
    Build B = { .P = P, .r = &r, .rc = SEG_OK };
    for (int l = 1; l <= LABELS_TS_TOTAL_N; l++) B.jit[l] = synth_rng_range(&r, -20, 20);
    P->fat = synth_rng_range(&r, 12, 28);
    P->wall = synth_rng_range(&r, 8, 12);
    P->hu_fat = -105 + synth_rng_range(&r, -20, 20);
    P->hu_visc = -90 + synth_rng_range(&r, -20, 20);
    P->hu_wall = 45 + synth_rng_range(&r, -20, 20);
    P->hu_disc = 90 + synth_rng_range(&r, -20, 20);
    P->noise_sigma = synth_rng_range(&r, 10, 20);

    /* fit the torso into the field of view */
    double ex, ey, ez, cx, cy, cz, lox, loy, loz;
    world_extent(g, 0, &ex, &cx, &lox);
    world_extent(g, 1, &ey, &cy, &loy);
    world_extent(g, 2, &ez, &cz, &loz);
    double ratio = synth_rng_range(&r, 0.62, 0.78), fill = synth_rng_range(&r, 0.80, 0.92);
    double aw = fill * fmin(ex / 2, ey / (2 * ratio)) / 1.06;
    double sx = aw / 150, sy = aw * ratio / 105;
    double lw = synth_rng_range(&r, 450, 540), w0 = synth_rng_range(&r, 20, fmin(60, 600 - lw));
    double zlo = loz - 0.5 * fabs(g->affine[2][0] + g->affine[2][1] + g->affine[2][2]);
    double sz = ez / lw;
    double th = synth_rng_range(&r, -10, 10) * PI / 180, ct = cos(th), st = sin(th);
    double bx = cx + synth_rng_range(&r, -0.03, 0.03) * ex, by = cy + synth_rng_range(&r, -0.03, 0.03) * ey;
    /* u = R^T (p - b); nominal x = -u.x / sx (patient left), y = u.y / sy */
    double W[3][4] = {
        { -ct / sx, -st / sx, 0, (ct * bx + st * by) / sx },
        { -st / sy, ct / sy, 0, (st * bx - ct * by) / sy },
        { 0, 0, 1 / sz, w0 - zlo / sz },
    };
    memcpy(P->w2n, W, sizeof W);

    build_anatomy(&B);
    if (B.rc < 0) { free(P); return B.rc; }
    build_bins(P);
    *out = P;
    return SEG_OK;
}

void synth_phantom_free(SynthPhantom *p) { free(p); }

int synth_phantom_sample(const SynthPhantom *P, const double w[3], double *hu)
{
    double q[3];
    for (int i = 0; i < 3; i++) q[i] = P->w2n[i][0] * w[0] + P->w2n[i][1] * w[1] + P->w2n[i][2] * w[2] + P->w2n[i][3];
    return eval_nominal(P, q, hu);
}

void synth_render(const SynthPhantom *P, const SynthGeometry *g, uint64_t seed, int index, float *hu, uint8_t *labels)
{
    /* voxel -> nominal frame = w2n * affine */
    double V[3][4];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) {
            double s = j == 3 ? P->w2n[i][3] : 0;
            for (int k = 0; k < 3; k++) s += P->w2n[i][k] * g->affine[k][j];
            V[i][j] = s;
        }
    SynthRng r;
    synth_rng_seed(&r, seed, stream_of(index, ST_NOISE));
    size_t idx = 0;
    for (int64_t k = 0; k < g->dim[2]; k++)
        for (int64_t j = 0; j < g->dim[1]; j++)
            for (int64_t i = 0; i < g->dim[0]; i++, idx++) {
                double q[3], v;
                for (int a = 0; a < 3; a++) q[a] = V[a][0] * (double)i + V[a][1] * (double)j + V[a][2] * (double)k + V[a][3];
                int lab = eval_nominal(P, q, &v);
                v += P->noise_sigma * synth_rng_normal(&r);
                hu[idx] = (float)(v < -1024 ? -1024 : v > 3071 ? 3071 : v);
                labels[idx] = (uint8_t)lab;
            }
}

/* ---- files --------------------------------------------------------------------------- */
int synth_write_subject(const char *dir, const SynthGeometry *g, const float *hu, const uint8_t *labels,
                        const SynthOptions *o, int *n_drawn)
{
    char path[4096], segdir[4096];
    NiiVolume *ct = NULL, *m = NULL;
    uint32_t *order = NULL;   /* voxel indices grouped by label (counting sort) */
    size_t count[LABELS_TS_TOTAL_N + 1] = { 0 }, start[LABELS_TS_TOTAL_N + 2];
    int rc;
    if (n_drawn) *n_drawn = 0;
    if ((rc = fs_join(segdir, sizeof segdir, dir, "segmentations")) < 0) return rc;
    if ((rc = fs_mkdirs(segdir)) < 0) return rc;
    if ((rc = nii_create(g->dim, NII_INT16, g->affine, &ct)) < 0) goto out;
    size_t n = nii_nvox(ct);
    if (n > UINT32_MAX) { rc = seg_err(SEG_ENOMEM, "%s: %zu voxels, over 2^32", dir, n); goto out; }
    int16_t *d = ct->data;
    for (size_t i = 0; i < n; i++) {
        double s = g->slope != 0 ? (hu[i] - g->inter) / g->slope : hu[i];
        long v = lround(s);
        d[i] = (int16_t)(v < -32768 ? -32768 : v > 32767 ? 32767 : v);
        count[labels[i] <= LABELS_TS_TOTAL_N ? labels[i] : 0]++;
    }
    ct->slope = g->slope; ct->inter = g->inter;
    if ((rc = fs_join(path, sizeof path, dir, "ct.nii.gz")) < 0) goto out;
    if ((rc = nii_write(path, ct, o->ct_level)) < 0) goto out;
    nii_free(ct); ct = NULL;

    order = malloc(sizeof *order * (n - count[0] + 1));
    if (!order) { rc = seg_err(SEG_ENOMEM, "%s: label index of %zu voxels", dir, n - count[0]); goto out; }
    start[1] = 0;
    for (int l = 1; l <= LABELS_TS_TOTAL_N; l++) start[l + 1] = start[l] + count[l];
    for (size_t i = 0; i < n; i++)
        if (labels[i] && labels[i] <= LABELS_TS_TOTAL_N) order[start[labels[i]]++] = (uint32_t)i;
    /* start[l] now points past label l's run, i.e. at label l+1's first index */
    if ((rc = nii_create(g->dim, NII_UINT8, g->affine, &m)) < 0) goto out;
    uint8_t *md = m->data;
    int drawn = 0;
    for (int c = 0; c < LABELS_TS_TOTAL_N; c++) {
        const int lab = c + 1;
        const size_t b = start[lab] - count[lab], e = start[lab];
        for (size_t k = b; k < e; k++) md[order[k]] = 1;
        drawn += count[lab] > 0;
        char name[256];
        snprintf(name, sizeof name, "%s.nii.gz", labels_ts_total[c]);
        if ((rc = fs_join(path, sizeof path, segdir, name)) < 0) goto out;
        if ((rc = nii_write(path, m, o->mask_level)) < 0) goto out;
        for (size_t k = b; k < e; k++) md[order[k]] = 0;
    }
    if (n_drawn) *n_drawn = drawn;
out:
    nii_free(ct);
    nii_free(m);
    free(order);
    return rc;
}

int synth_make_subject(const SynthOptions *o, uint64_t seed, int index, const char *dir,
                       SynthGeometry *g_out, int *n_drawn)
{
    SynthGeometry g;
    SynthPhantom *P = NULL;
    float *hu = NULL;
    uint8_t *lab = NULL;
    int rc;
    if ((rc = synth_geometry(o, seed, index, &g)) < 0) return rc;
    size_t n = (size_t)g.dim[0] * (size_t)g.dim[1] * (size_t)g.dim[2];
    hu = malloc(n * sizeof *hu);
    lab = malloc(n);
    if (!hu || !lab) { rc = seg_err(SEG_ENOMEM, "%s: %zu voxels", dir, n); goto out; }
    if ((rc = synth_phantom_new(seed, index, &g, &P)) < 0) goto out;
    synth_render(P, &g, seed, index, hu, lab);
    rc = synth_write_subject(dir, &g, hu, lab, o, n_drawn);
    if (g_out) *g_out = g;
out:
    synth_phantom_free(P);
    free(hu);
    free(lab);
    return rc;
}

void synth_split(int n, uint64_t seed, int *split)
{
    if (n <= 0) return;
    int *perm = malloc(sizeof(int) * (size_t)n);
    int n_val = n >= 3 ? (int)lround(0.1 * n) : n == 2 ? 1 : 0, n_test = n >= 3 ? n_val : 0;
    if (n >= 3 && n_val < 1) n_val = n_test = 1;
    for (int i = 0; i < n; i++) split[i] = 0;
    if (!perm) {   /* no memory for a shuffle: take the last subjects, still deterministic */
        for (int i = 0; i < n_val; i++) split[n - 1 - i] = 1;
        for (int i = 0; i < n_test; i++) split[n - 1 - n_val - i] = 2;
        return;
    }
    SynthRng r;
    synth_rng_seed(&r, seed, ST_SPLIT);
    rng_shuffle(&r, perm, n);
    for (int i = 0; i < n_val; i++) split[perm[i]] = 1;
    for (int i = 0; i < n_test; i++) split[perm[n_val + i]] = 2;
    free(perm);
}
