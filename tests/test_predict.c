/* tests/test_predict.c : the geometry of `segeval predict` without a model.
 * 1. predict_unresample reproduces linear ramps exactly (bilinear, half-pixel centres,
 *    clamped at the edges) for up- and down-sampling.
 * 2. Round trip on the real example subject: segprep's cached (resampled) liver and
 *    spleen planes, mapped back with predict_unresample + threshold 0.5 + the
 *    OrientMap's slice offsets, must match the original masks in the input grid
 *    (Dice > 0.97, centroids within 0.3 voxel): the inverse path lands where the
 *    forward path came from. usage: test_predict (from the repo root) */
#define _POSIX_C_SOURCE 200809L
#include "cache.h"
#include "maskpack.h"
#include "err.h"
#include "fsutil.h"
#include "nii.h"
#include "orient.h"
#include "predict.h"
#include "prep.h"
#include "testutil.h"
#include "testcache.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void check_ramps(void)
{
    const int cases[][3] = { { 256, 101, 122 }, { 128, 300, 257 }, { 64, 64, 64 }, { 32, 7, 45 } };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int size = cases[k][0], sh = cases[k][1], sw = cases[k][2];
        float *p = malloc(sizeof(float) * (size_t)size * size), *o = malloc(sizeof(float) * (size_t)sh * sw);
        for (int r = 0; r < size; r++)
            for (int c = 0; c < size; c++) p[(size_t)r * size + c] = 0.25f * r - 0.5f * c + 3.f;
        CHECK(predict_unresample(p, size, o, sh, sw) == 0, "unresample %d -> %dx%d", size, sh, sw);
        double worst = 0;
        for (int r = 0; r < sh; r++)
            for (int c = 0; c < sw; c++) {
                double sr = (r + 0.5) * size / sh - 0.5, sc = (c + 0.5) * size / sw - 0.5;
                sr = sr < 0 ? 0 : sr > size - 1 ? size - 1 : sr;
                sc = sc < 0 ? 0 : sc > size - 1 ? size - 1 : sc;
                double want = 0.25 * sr - 0.5 * sc + 3.0, d = fabs(o[(size_t)r * sw + c] - want);
                if (d > worst) worst = d;
            }
        CHECK(worst < 1e-3, "unresample %dx%d -> %dx%d reproduces a linear ramp: max|d| %.2g", size, size, sh, sw, worst);
        free(p);
        free(o);
    }
}

static void round_trip(const char *shared)
{
    char ex[4096], real[4096], tmp[] = "/tmp/test_predict.XXXXXX";
    snprintf(ex, sizeof ex, "%s/data/totalseg-example/s0000", shared);
    CacheReader *cr = NULL;
    CacheCursor *cur = NULL;
    int rc = realpath(ex, real) ? t_example_cache(shared, tmp, &cr, &cur) : 77;
    if (rc == 77) { T_SKIP("round trip on the real example: %s not found", ex); return; }
    CHECK(rc == 0, "cache of the example subject built (%s)", rc ? seg_errmsg() : "ok");
    if (rc) return;
    const CacheSubject *cs = cache_subject(cr, 0);
    const int size = cache_size(cr), C = cache_n_channels(cr);
    const size_t pb = cache_plane_bytes(cr);
    OrientMap om;
    rc = orient_init(&om, cs->dim, cs->affine);
    const int sw = (int)om.cdim[0], sh = (int)om.cdim[1], nz = (int)om.cdim[2];
    CHECK(rc == 0 && nz == cs->n_slices, "orientation: %dx%d slices, %d of them", sw, sh, nz);
    const char *names[] = { "liver", "spleen", "kidney_left" };
    uint8_t *bits = malloc(pb * (size_t)C), *pres = malloc(cache_presence_bytes(cr));
    float *prob = malloc(sizeof(float) * (size_t)size * size), *up = malloc(sizeof(float) * (size_t)sw * sh);
    for (size_t n = 0; n < sizeof names / sizeof names[0] && rc == 0; n++) {
        const int c = labels_find(cache_labels(cr), names[n]);
        char path[4400];
        snprintf(path, sizeof path, "%s/segmentations/%s.nii.gz", real, names[n]);
        NiiVolume *m = NULL;
        if (c < 0 || nii_read(path, &m) < 0) { CHECK(0, "%s: channel %d, %s", names[n], c, seg_errmsg()); continue; }
        const size_t nv = nii_nvox(m);
        uint8_t *back = calloc(nv, 1);
        for (int k = 0; k < nz; k++) {
            rc = cache_read_slice(cur, cs, k, NULL, bits, pres, 1);
            if (rc) break;
            for (int i = 0; i < size * size; i++) prob[i] = (float)maskpack_get(bits + (size_t)c * pb, i);
            if (predict_unresample(prob, size, up, sh, sw) < 0) { rc = -1; break; }
            for (int r = 0; r < sh; r++)
                for (int x = 0; x < sw; x++)
                    if (up[(size_t)r * sw + x] > 0.5f) back[orient_slice_offset(&om, r, x, k)] = 1;
        }
        int64_t tp = 0, na = 0, nb = 0;
        double ca[3] = { 0 }, cb[3] = { 0 };
        for (size_t i = 0; i < nv; i++) {
            const int a = nii_value(m, i) != 0, b = back[i];
            const double xyz[3] = { (double)(i % m->dim[0]), (double)(i / m->dim[0] % m->dim[1]), (double)(i / (m->dim[0] * m->dim[1])) };
            for (int d = 0; d < 3; d++) { ca[d] += a * xyz[d]; cb[d] += b * xyz[d]; }
            na += a; nb += b; tp += a && b;
        }
        const double dice = 2.0 * tp / (double)(na + nb);
        double shift = 0;
        for (int d = 0; d < 3; d++) { double v = fabs(ca[d] / na - cb[d] / nb); if (v > shift) shift = v; }
        CHECK(rc == 0 && dice > 0.97 && shift < 0.3, "%s: cache -> input grid round trip Dice %.4f (%lld vs %lld voxels), "
              "centroid shift %.3f voxel", names[n], dice, (long long)na, (long long)nb, shift);
        free(back);
        nii_free(m);
    }
    free(bits); free(pres); free(prob); free(up);
    cache_cursor_close(cur);
    cache_close(cr);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmp);
}

int main(void)
{
    const char *shared = getenv("SEGKIT_SHARED") ? getenv("SEGKIT_SHARED") : "../shared";
    check_ramps();
    round_trip(shared);
    return t_report("test_predict");
}
