/* common/orient.c : closest-canonical orientation from an affine (permute/flip only). */
#include "orient.h"
#include "util.h"
#include "err.h"
#include <math.h>
#include <string.h>

/* Orthogonal polar factor of a (the rotation nearest to it, = U V^T of its SVD), by
 * Newton's iteration X <- (X + X^-T) / 2. Returns -1 if a is singular. */
static int polar_orthogonal(const double a[3][3], double q[3][3])
{
    double x[3][3];
    memcpy(x, a, sizeof x);
    for (int it = 0; it < 100; it++) {
        double d = util_det3(x);
        if (!(fabs(d) > 1e-300) || !isfinite(d)) return -1;
        double inv_t[3][3];   /* (x^-1)^T = cofactor(x) / det */
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++) {
                int r1 = (r + 1) % 3, r2 = (r + 2) % 3, c1 = (c + 1) % 3, c2 = (c + 2) % 3;
                inv_t[r][c] = (x[r1][c1] * x[r2][c2] - x[r1][c2] * x[r2][c1]) / d;
            }
        double diff = 0;
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++) {
                double nx = 0.5 * (x[r][c] + inv_t[r][c]);
                diff += fabs(nx - x[r][c]);
                x[r][c] = nx;
            }
        if (diff < 1e-15) break;
    }
    memcpy(q, x, sizeof x);
    return 0;
}

/* For each voxel axis: the world axis it is closest to and the sign (nibabel io_orientation). */
static int io_orientation(const double affine[4][4], int out_ax[3], int sign[3])
{
    double rs[3][3], q[3][3];
    for (int c = 0; c < 3; c++) {
        double z = 0;
        for (int r = 0; r < 3; r++) z += affine[r][c] * affine[r][c];
        z = sqrt(z);
        if (!isfinite(z)) return -1;
        if (z == 0) z = 1;
        for (int r = 0; r < 3; r++) rs[r][c] = affine[r][c] / z;
    }
    if (polar_orthogonal(rs, q) < 0) return -1;
    for (int in = 0; in < 3; in++) {
        int best = 0;
        for (int r = 1; r < 3; r++)
            if (fabs(q[r][in]) > fabs(q[best][in])) best = r;
        if (fabs(q[best][in]) < 1e-12) return -1;
        out_ax[in] = best;
        sign[in] = q[best][in] < 0 ? -1 : 1;
        for (int c = 0; c < 3; c++) q[best][c] = 0;   /* a world axis is taken once */
    }
    return 0;
}

static void matmul4(const double a[4][4], const double b[4][4], double out[4][4])
{
    double t[4][4];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            double s = 0;
            for (int k = 0; k < 4; k++) s += a[r][k] * b[k][c];
            t[r][c] = s;
        }
    memcpy(out, t, sizeof t);
}

int orient_init(OrientMap *m, const int64_t dim[3], const double affine[4][4])
{
    int out_ax[3], sign[3];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            if (!isfinite(affine[r][c])) return seg_err(SEG_EFORMAT, "affine has a non-finite entry");
    if (io_orientation(affine, out_ax, sign) < 0)
        return seg_err(SEG_EFORMAT, "affine is singular: no orientation can be derived");
    memset(m, 0, sizeof *m);
    const int64_t st[3] = { 1, dim[0], dim[0] * dim[1] };
    double cm[4][4] = { { 0 } };   /* canonical index -> original index */
    cm[3][3] = 1;
    for (int in = 0; in < 3; in++) {
        int a = out_ax[in];
        m->perm[a] = in;
        m->flip[a] = sign[in] < 0;
    }
    for (int a = 0; a < 3; a++) {
        int in = m->perm[a];
        m->dim[a] = dim[a];
        m->cdim[a] = dim[in];
        m->stride[a] = m->flip[a] ? -st[in] : st[in];
        if (m->flip[a]) m->origin += (dim[in] - 1) * st[in];
        cm[in][a] = m->flip[a] ? -1 : 1;
        cm[in][3] = m->flip[a] ? (double)(dim[in] - 1) : 0;
    }
    matmul4(affine, cm, m->canon_affine);
    return SEG_OK;
}

void orient_resampled_affine(const OrientMap *m, int size, double out[4][4], double spacing[3])
{
    const double ni = (double)m->cdim[0], nj = (double)m->cdim[1];
    /* cached (c', r', k) -> canonical (i, j, k): i = ni-1-c with c = (c'+0.5)*ni/size - 0.5 */
    double t[4][4] = {
        { -ni / size, 0, 0, ni - 0.5 - 0.5 * ni / size },
        { 0, -nj / size, 0, nj - 0.5 - 0.5 * nj / size },
        { 0, 0, 1, 0 },
        { 0, 0, 0, 1 } };
    matmul4(m->canon_affine, t, out);
    for (int c = 0; c < 3; c++) {
        double s = 0;
        for (int r = 0; r < 3; r++) s += out[r][c] * out[r][c];
        spacing[c] = sqrt(s);
    }
}

void orient_axcodes(const double affine[4][4], char out[4])
{
    static const char pos[3] = { 'R', 'A', 'S' }, neg[3] = { 'L', 'P', 'I' };
    int out_ax[3], sign[3];
    if (io_orientation(affine, out_ax, sign) < 0) { strcpy(out, "???"); return; }
    for (int i = 0; i < 3; i++) out[i] = sign[i] > 0 ? pos[out_ax[i]] : neg[out_ax[i]];
    out[3] = 0;
}
