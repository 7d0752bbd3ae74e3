/* tests/test_cache.c : record encode/decode round trip (bit-exact), checksum and header
 * checks, and a writer/reader round trip through LMDB incl. replace and reopen; the writer's
 * get / set_split / ids / remove, fingerprints and labelled channels in the subject record. */
#include "cache.h"
#include "maskpack.h"
#include "err.h"
#include "testutil.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 && argv[1][0] != '-' ? strtoull(argv[1], NULL, 0) : 777;
    printf("test_cache seed=%llu\n", (unsigned long long)seed);
    const int size = 64, C = 13;
    const size_t plane = (size_t)size * size / 8, npx = (size_t)size * size;
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    int16_t *img = malloc(npx * 2), *img2 = malloc(npx * 2);
    uint8_t *planes_mem = calloc((size_t)C, plane), *bits = malloc((size_t)C * plane), pres[2];
    const uint8_t *planes[13];
    for (size_t i = 0; i < npx; i++) img[i] = (int16_t)(t_rand(&seed) % 65536);
    int64_t want_set = 0;
    for (int c = 0; c < C; c++) {
        planes[c] = NULL;
        if (c % 3 == 1) continue;                         /* absent */
        uint8_t *p = planes_mem + c * plane;
        if (c != 12)                                      /* c = 12: present pointer but all zero */
            for (size_t i = 0; i < plane; i++) { p[i] = (uint8_t)(t_rand(&seed) & t_rand(&seed)); want_set += __builtin_popcount(p[i]); }
        planes[c] = p;
    }
    CacheRecord rec;
    CHECK(cache_encode_slice(cctx, 3, size, C, img, planes, &rec) == 0, "encode");
    if (argc > 2 && !strcmp(argv[1], "--corpus")) {   /* seed corpus for tests/fuzz/fuzz_record.c */
        char path[4200];
        snprintf(path, sizeof path, "%s/record.bin", argv[2]);
        FILE *f = fopen(path, "wb");
        int ok = f && fwrite(rec.data, 1, rec.size, f) == rec.size;
        if (f) fclose(f);
        return ok ? 0 : 1;
    }
    CHECK(rec.n_set == want_set, "n_set %lld", (long long)rec.n_set);
    memset(bits, 0xAB, (size_t)C * plane);
    CHECK(cache_record_decode(dctx, rec.data, rec.size, size, C, "rec", img2, bits, pres, 1) == 0, "decode");
    CHECK(memcmp(img, img2, npx * 2) == 0, "image bit-exact");
    int ok = 1;
    for (int c = 0; c < C; c++) {
        int present = maskpack_get(pres, c);
        int want = planes[c] && c != 12;
        if (present != want) ok = 0;
        const uint8_t *exp = want ? planes[c] : NULL;
        for (size_t i = 0; i < plane; i++)
            if (bits[c * plane + i] != (exp ? exp[i] : 0)) { ok = 0; break; }
    }
    CHECK(ok, "masks bit-exact, presence right, absent planes zeroed, empty plane counted absent");
    int np; int64_t ns;
    CHECK(cache_record_check(rec.data, rec.size, size, C, "rec", &np, &ns) == 0 && np == 8, "check: %d present", np);
    /* every single-byte corruption is caught by the header checks or the checksum */
    int caught = 0, tries = 0;
    for (size_t i = 0; i < rec.size; i += 1 + rec.size / 97, tries++) {
        uint8_t *p = rec.data;
        p[i] ^= 0x5A;
        if (cache_record_decode(dctx, rec.data, rec.size, size, C, "rec", img2, bits, pres, 1) < 0) caught++;
        p[i] ^= 0x5A;
    }
    CHECK(caught == tries, "corruption caught %d/%d", caught, tries);
    CHECK(cache_record_decode(dctx, rec.data, rec.size - 1, size, C, "rec", img2, bits, pres, 1) == SEG_EFORMAT, "truncated record refused");
    CHECK(cache_record_decode(dctx, rec.data, rec.size, size, C + 1, "rec", img2, bits, pres, 1) == SEG_EFORMAT, "channel mismatch refused");

    /* LMDB writer -> reader */
    char dir[] = "/tmp/segkit_test_cache_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temp dir %s", dir);
    const char *names[13] = { "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m" };
    LabelList labels;
    labels_from_names(names, C, &labels);
    CacheWriter *w;
    CHECK(cache_writer_open(dir, size, &labels, &w) == 0, "writer open: %s", seg_errmsg());
    CacheSubject s = { 0 };
    strcpy(s.id, "s0001");
    s.split = CACHE_SPLIT_VAL;
    s.n_slices = 3;
    s.res_spacing[0] = 1.5;
    for (int a = 0; a < 3; a++) { s.dim[a] = s.canon_dim[a] = 4 + a; s.perm[a] = a; }
    CacheRecord recs[3] = { rec, rec, rec };
    CHECK(cache_writer_put_subject(w, &s, recs) == 0, "put subject");
    strcpy(s.id, "s0000");
    s.split = CACHE_SPLIT_TRAIN;
    s.n_slices = 2;
    CHECK(cache_writer_put_subject(w, &s, recs) == 0, "put second subject");
    CHECK(cache_writer_has(w, "s0000") && !cache_writer_has(w, "s0002"), "has");
    s.n_slices = 1;                                       /* replace s0000 with one slice */
    s.fp_inputs = 0xfedcba9876543210ull;                  /* with fingerprints, partly labelled */
    s.fp_content = 0x0123456789abcdefull;
    s.partial = 1;
    s.labelled[0] = 0x05;                                 /* channels 0 and 2 */
    s.labelled[1] = 0x10;                                 /* channel 12 */
    CHECK(cache_writer_put_subject(w, &s, recs) == 0, "replace subject");
    CacheSubject got;
    CHECK(cache_writer_get(w, "s0000", &got) == 1 && got.fp_inputs == s.fp_inputs && got.fp_content == s.fp_content &&
          got.partial && got.labelled[0] == 0x05 && got.labelled[1] == 0x10 && got.labelled[2] == 0,
          "fingerprints (all 64 bits) and labelled channels round trip");
    CHECK(cache_writer_get(w, "s0009", &got) == 0, "get of an absent subject: 0");
    CHECK(cache_writer_set_split(w, "s0001", CACHE_SPLIT_TEST) == 0 && cache_writer_get(w, "s0001", &got) == 1 &&
          got.split == CACHE_SPLIT_TEST && got.n_slices == 3 && got.res_spacing[0] == 1.5, "set_split changes the split only");
    strcpy(s.id, "s0005");
    s.partial = 0;
    s.n_slices = 2;
    CHECK(cache_writer_put_subject(w, &s, recs) == 0, "put a third subject");
    char **ids = NULL;
    int n_ids = 0;
    CHECK(cache_writer_ids(w, &ids, &n_ids) == 0 && n_ids == 3 && !strcmp(ids[2], "s0005"), "ids: %d", n_ids);
    for (int i = 0; i < n_ids; i++) free(ids[i]);
    free(ids);
    CHECK(cache_writer_remove(w, "s0005") == 0 && !cache_writer_has(w, "s0005"), "remove");
    CHECK(cache_writer_remove(w, "s0005") == SEG_EARG, "removing an absent subject: SEG_EARG");
    cache_writer_set_split(w, "s0001", CACHE_SPLIT_VAL);
    cache_writer_close(w);
    LabelList other;
    labels_from_names(names, C - 1, &other);
    CHECK(cache_writer_open(dir, size, &other, &w) == SEG_EMISMATCH, "reopen with other labels refused: %s", seg_errmsg());
    CHECK(cache_writer_open(dir, 32, &labels, &w) == SEG_EMISMATCH, "reopen with other size refused");
    CacheReader *r;
    CHECK(cache_open(dir, &r) == 0, "reader open: %s", seg_errmsg());
    CHECK(cache_n_subjects(r) == 2 && cache_n_channels(r) == C && cache_size(r) == size, "2 subjects, %d channels", cache_n_channels(r));
    const CacheSubject *s0 = cache_subject(r, 0), *s1 = cache_subject(r, 1);
    CHECK(!strcmp(s0->id, "s0000") && s0->n_slices == 1 && s0->split == CACHE_SPLIT_TRAIN, "s0000 replaced: 1 slice");
    CHECK(cache_version(r) == CACHE_FORMAT_VERSION && cache_subject_labelled(s0) == s0->labelled && !cache_subject_labelled(s1),
          "version %d; labelled bitmap only for the partly labelled subject", cache_version(r));
    CHECK(!strcmp(s1->id, "s0001") && s1->split == CACHE_SPLIT_VAL && s1->res_spacing[0] == 1.5, "s0001 geometry kept");
    CacheCursor *cur;
    CHECK(cache_cursor_open(r, &cur) == 0, "cursor");
    CHECK(cache_read_slice(cur, s1, 2, img2, bits, pres, 1) == 0 && memcmp(img, img2, npx * 2) == 0, "read back slice 2");
    uint8_t pres2[2];
    CHECK(cache_read_presence(cur, s1, 1, pres2) == 0 && pres2[0] == pres[0] && pres2[1] == pres[1], "presence without decoding");
    CHECK(cache_read_slice(cur, s1, 3, img2, bits, pres, 1) == SEG_EARG, "slice out of range refused");
    cache_cursor_close(cur);
    cache_close(r);
    CHECK(cache_open("/nonexistent/cache", &r) == SEG_EIO, "missing cache: %s", seg_errmsg());
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    labels_free(&labels); labels_free(&other);
    free(rec.data); free(img); free(img2); free(planes_mem); free(bits);
    ZSTD_freeCCtx(cctx); ZSTD_freeDCtx(dctx);
    return t_report("test_cache");
}
