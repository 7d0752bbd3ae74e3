/* tests/test_orient.c : closest-canonical orientation against hand-worked affines. */
#include "orient.h"
#include "err.h"
#include "testutil.h"
#include <math.h>
#include <string.h>

static int near4(const double a[4][4], const double b[4][4])
{
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            if (fabs(a[r][c] - b[r][c]) > 1e-9) return 0;
    return 1;
}

int main(void)
{
    OrientMap m;
    const int64_t dim[3] = { 4, 5, 6 };
    /* RAS: identity map */
    double ras[4][4] = { { 2, 0, 0, 10 }, { 0, 3, 0, 20 }, { 0, 0, 4, 30 }, { 0, 0, 0, 1 } };
    CHECK(orient_init(&m, dim, ras) == 0, "RAS affine accepted");
    CHECK(m.perm[0] == 0 && m.perm[1] == 1 && m.perm[2] == 2 && !m.flip[0] && !m.flip[1] && !m.flip[2], "RAS: no permutation, no flip");
    CHECK(near4(m.canon_affine, ras) && m.origin == 0 && m.stride[1] == 4 && m.stride[2] == 20, "RAS: canonical affine and strides");
    char codes[4];
    orient_axcodes(ras, codes);
    CHECK(!strcmp(codes, "RAS"), "axcodes RAS (%s)", codes);

    /* LPS (DICOM-like): x and y flipped */
    double lps[4][4] = { { -2, 0, 0, 10 }, { 0, -3, 0, 20 }, { 0, 0, 4, 30 }, { 0, 0, 0, 1 } };
    CHECK(orient_init(&m, dim, lps) == 0, "LPS affine accepted");
    CHECK(m.flip[0] && m.flip[1] && !m.flip[2], "LPS: x, y flipped");
    CHECK(orient_offset(&m, 0, 0, 0) == 3 + 4 * 4, "LPS: canonical (0,0,0) is original (3,4,0)");
    double want[4][4] = { { 2, 0, 0, 10 - 2 * 3 }, { 0, 3, 0, 20 - 3 * 4 }, { 0, 0, 4, 30 }, { 0, 0, 0, 1 } };
    CHECK(near4(m.canon_affine, want), "LPS: canonical affine moves the origin to the far corner");
    orient_axcodes(lps, codes);
    CHECK(!strcmp(codes, "LPS"), "axcodes LPS (%s)", codes);

    /* permuted: voxel axes (A->P, S, R->L) i.e. x along -y world, y along +z, z along -x */
    double perm[4][4] = { { 0, 0, -1.5, 0 }, { -1, 0, 0, 0 }, { 0, 2, 0, 0 }, { 0, 0, 0, 1 } };
    CHECK(orient_init(&m, dim, perm) == 0, "permuted affine accepted");
    CHECK(m.perm[0] == 2 && m.perm[1] == 0 && m.perm[2] == 1, "permuted: canonical R<-z, A<-x, S<-y (%d %d %d)", m.perm[0], m.perm[1], m.perm[2]);
    CHECK(m.flip[0] && m.flip[1] && !m.flip[2], "permuted: R and A flipped");
    CHECK(m.cdim[0] == 6 && m.cdim[1] == 4 && m.cdim[2] == 5, "permuted: canonical dims 6x4x5");
    orient_axcodes(perm, codes);
    CHECK(!strcmp(codes, "PSL"), "axcodes PSL (%s)", codes);
    /* every canonical voxel maps to the original voxel at the same world position */
    int ok = 1;
    for (int64_t i = 0; i < m.cdim[0]; i++)
        for (int64_t j = 0; j < m.cdim[1]; j++)
            for (int64_t k = 0; k < m.cdim[2]; k++) {
                int64_t off = orient_offset(&m, i, j, k);
                int64_t x = off % 4, y = (off / 4) % 5, z = off / 20;
                for (int r = 0; r < 3; r++) {
                    double wc = m.canon_affine[r][0] * i + m.canon_affine[r][1] * j + m.canon_affine[r][2] * k + m.canon_affine[r][3];
                    double wo = perm[r][0] * x + perm[r][1] * y + perm[r][2] * z + perm[r][3];
                    if (fabs(wc - wo) > 1e-9) ok = 0;
                }
            }
    CHECK(ok, "permuted: canonical offsets and canonical affine agree in world space");

    /* oblique (20 degrees about z) still picks the nearest axes */
    double a = 20 * M_PI / 180;
    double obl[4][4] = { { cos(a), -sin(a), 0, 0 }, { sin(a), cos(a), 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } };
    CHECK(orient_init(&m, dim, obl) == 0 && m.perm[0] == 0 && m.perm[1] == 1 && !m.flip[0], "oblique 20 deg: RAS");

    double sing[4][4] = { { 1, 1, 0, 0 }, { 1, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } };
    CHECK(orient_init(&m, dim, sing) == SEG_EFORMAT, "singular affine refused: %s", seg_errmsg());
    double nanaff[4][4] = { { NAN, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } };
    CHECK(orient_init(&m, dim, nanaff) == SEG_EFORMAT, "non-finite affine refused");

    /* resampled affine: cached voxel centres land on the source positions */
    CHECK(orient_init(&m, dim, ras) == 0, "RAS again");
    double res[4][4], sp[3];
    orient_resampled_affine(&m, 8, res, sp);
    /* cached column c'=0 samples source column (0.5)*4/8-0.5 = -0.25 -> canonical i = 4-1+0.25 */
    double wx = res[0][3], want_x = 2 * (3 + 0.25) + 10;
    CHECK(fabs(wx - want_x) < 1e-9, "resampled affine origin x %.3f (want %.3f)", wx, want_x);
    CHECK(fabs(sp[0] - 1.0) < 1e-12 && fabs(sp[1] - 3 * 5.0 / 8) < 1e-12 && fabs(sp[2] - 4) < 1e-12, "resampled spacing");
    orient_axcodes(res, codes);
    CHECK(!strcmp(codes, "LPS"), "resampled axes are L,P,S (%s)", codes);
    return t_report("test_orient");
}
