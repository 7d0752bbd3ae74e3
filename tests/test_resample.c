/* tests/test_resample.c : the resamplers against a direct, table-free evaluation of the
 * formulas (src = (dst+0.5)*n/size - 0.5 clamped; nearest floor((dst+0.5)*n/size)). */
#include "resample.h"
#include "maskpack.h"
#include "testutil.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static double ref_bilinear(const float *src, int sh, int sw, int size, int r, int c)
{
    double sy = (r + 0.5) * sh / size - 0.5, sx = (c + 0.5) * sw / size - 0.5;
    sy = sy < 0 ? 0 : sy > sh - 1 ? sh - 1 : sy;
    sx = sx < 0 ? 0 : sx > sw - 1 ? sw - 1 : sx;
    int y0 = (int)sy, x0 = (int)sx, y1 = y0 + 1 < sh ? y0 + 1 : y0, x1 = x0 + 1 < sw ? x0 + 1 : x0;
    double fy = sy - y0, fx = sx - x0;
    double a = src[y0 * sw + x0], b = src[y0 * sw + x1], cc = src[y1 * sw + x0], d = src[y1 * sw + x1];
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * cc + fx * d);
}

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 12345;
    printf("test_resample seed=%llu\n", (unsigned long long)seed);
    const int shapes[][3] = { { 101, 122, 256 }, { 512, 512, 256 }, { 7, 3, 16 }, { 1, 1, 8 }, { 300, 200, 64 }, { 256, 256, 256 } };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int sh = shapes[t][0], sw = shapes[t][1], size = shapes[t][2];
        float *src = malloc(sizeof(float) * (size_t)sh * sw);
        uint8_t *msk = malloc((size_t)sh * sw);
        int16_t *dst = malloc(sizeof(int16_t) * (size_t)size * size);
        uint8_t *bits = malloc((size_t)size * size / 8);
        for (int i = 0; i < sh * sw; i++) {
            src[i] = (float)((int)(t_rand(&seed) % 4000) - 2000);
            msk[i] = t_rand(&seed) % 5 == 0;
        }
        ResampleAxis rows, cols;
        resample_axis_init(&rows, sh, size);
        resample_axis_init(&cols, sw, size);
        resample_bilinear_i16(dst, src, &rows, &cols);
        int bad = 0;
        for (int r = 0; r < size; r++)
            for (int c = 0; c < size; c++) {
                double v = floor(ref_bilinear(src, sh, sw, size, r, c) + 0.5);
                if (dst[r * size + c] != (int16_t)v && bad++ < 3)
                    printf("  (%d,%d) got %d want %.0f\n", r, c, dst[r * size + c], v);
            }
        CHECK(bad == 0, "bilinear %dx%d -> %d matches the formula (%d differ)", sh, sw, size, bad);
        resample_nearest_bits(bits, msk, &rows, &cols, 0, sh - 1, 0, sw - 1);
        bad = 0;
        for (int r = 0; r < size; r++)
            for (int c = 0; c < size; c++) {
                int sy = (int)floor((r + 0.5) * sh / size), sx = (int)floor((c + 0.5) * sw / size);
                if (sy > sh - 1) sy = sh - 1;
                if (sx > sw - 1) sx = sw - 1;
                int p = r * size + c, got = maskpack_get(bits, p);
                if (got != msk[sy * sw + sx]) bad++;
            }
        CHECK(bad == 0, "nearest %dx%d -> %d matches the formula (%d differ)", sh, sw, size, bad);
        /* a bounding box restricted call gives the same plane when the box covers all set pixels */
        memset(msk, 0, (size_t)sh * sw);
        int y0 = sh / 3, x0 = sw / 4;
        msk[y0 * sw + x0] = 1;
        resample_nearest_bits(bits, msk, &rows, &cols, y0, y0, x0, x0);
        int set = 0;
        for (int p = 0; p < size * size; p++) set += maskpack_get(bits, p);
        int d0, d1, e0, e1;
        int has = resample_nearest_span(&rows, y0, y0, &d0, &d1) && resample_nearest_span(&cols, x0, x0, &e0, &e1);
        int want = has ? (d1 - d0 + 1) * (e1 - e0 + 1) : 0;
        CHECK(set == want, "one source pixel covers %d dst pixels (got %d)", want, set);
        resample_axis_free(&rows);
        resample_axis_free(&cols);
        free(src); free(msk); free(dst); free(bits);
    }
    /* hand-worked: 2 -> 4 upsampling of [0, 100]: positions -0.25,0.25,0.75,1.25 -> 0,25,75,100 */
    float two[2] = { 0, 100 };
    int16_t four[16];
    ResampleAxis r1, c4;
    resample_axis_init(&r1, 1, 4);
    resample_axis_init(&c4, 2, 4);
    resample_bilinear_i16(four, two, &r1, &c4);
    CHECK(four[0] == 0 && four[1] == 25 && four[2] == 75 && four[3] == 100, "2->4: %d %d %d %d", four[0], four[1], four[2], four[3]);
    resample_axis_free(&r1); resample_axis_free(&c4);
    return t_report("test_resample");
}
