/* tests/test_maskpack.c : common/maskpack against a byte-per-pixel reference: the bit order
 * (pixel p = bit p&7 of byte p>>3), pack/unpack round trip, counts, the threshold packer
 * (every length, tails included), presence bitmaps and batch addressing. Seeded. */
#include "maskpack.h"
#include "testutil.h"
#include <stdlib.h>

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 20261203;
    printf("test_maskpack seed=%llu\n", (unsigned long long)seed);
    uint8_t b[2] = { 0 };
    maskpack_set(b, 0); maskpack_set(b, 9);
    CHECK(b[0] == 0x01 && b[1] == 0x02 && maskpack_get(b, 9) && !maskpack_get(b, 8), "bit order: LSB first");
    maskpack_clear(b, 9);
    CHECK(b[1] == 0 && maskpack_plane_bytes(64 * 64) == 512 && maskpack_plane_bytes(9) == 2 && maskpack_bitmap_bytes(117) == 15,
          "clear, plane and bitmap sizes");

    int bad_rt = 0, bad_cnt = 0, bad_thr = 0;
    for (size_t npx = 1; npx <= 200; npx++) {
        uint8_t src[200], back[200], plane[25], thr[25];
        float v[200];
        size_t want = 0;
        for (size_t p = 0; p < npx; p++) {
            src[p] = (uint8_t)(t_rand(&seed) % 3 == 0);
            want += src[p];
            v[p] = (float)(t_rand(&seed) % 1000) / 500.f - 1.f;
        }
        bad_rt += maskpack_pack(plane, src, npx) != want;
        maskpack_unpack(back, plane, npx);
        bad_rt += memcmp(src, back, npx) != 0;
        bad_cnt += maskpack_count(plane, maskpack_plane_bytes(npx)) != (int64_t)want;
        bad_cnt += maskpack_any(plane, maskpack_plane_bytes(npx)) != (want > 0);
        int any = maskpack_pack_above(thr, v, npx, 0.25f), ref_any = 0;
        for (size_t p = 0; p < npx; p++) { bad_thr += maskpack_get(thr, p) != (v[p] > 0.25f); ref_any |= v[p] > 0.25f; }
        bad_thr += any != ref_any;
        int64_t both = 0;
        for (size_t p = 0; p < npx; p++) both += src[p] && v[p] > 0.25f;
        bad_cnt += maskpack_count_and(plane, thr, maskpack_plane_bytes(npx)) != both;
    }
    CHECK(bad_rt == 0, "pack/unpack round trip, 1..200 pixels (%d bad)", bad_rt);
    CHECK(bad_cnt == 0, "count, count_and, any (%d bad)", bad_cnt);
    CHECK(bad_thr == 0, "pack_above = per-pixel threshold, tails included (%d bad)", bad_thr);

    /* a batch of N x C planes: presence and addressing */
    enum { N = 3, C = 11, HW = 16 * 8 };
    const size_t pb = maskpack_plane_bytes(HW);
    uint8_t bits[N * C * HW / 8] = { 0 }, pres[N * 2];
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            if ((n + c) % 3 == 0) maskpack_set(maskpack_plane(bits, n, C, c, pb), (size_t)(n * 7 + c));
    int bad_p = 0;
    for (int n = 0; n < N; n++) {
        maskpack_presence(maskpack_bitmap(pres, n, C), maskpack_cplane(bits, n, C, 0, pb), C, pb);
        for (int c = 0; c < C; c++) {
            bad_p += maskpack_get(maskpack_cbitmap(pres, n, C), c) != ((n + c) % 3 == 0);
            bad_p += maskpack_get(bits + ((size_t)n * C + c) * pb, (size_t)(n * 7 + c)) != ((n + c) % 3 == 0);
        }
    }
    CHECK(bad_p == 0, "presence bitmaps and plane addressing of a %dx%d batch (%d bad)", N, C, bad_p);
    return t_report("test_maskpack");
}
