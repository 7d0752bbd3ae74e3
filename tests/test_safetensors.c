/* tests/test_safetensors.c : safetensors round trip (bit-exact, every dtype, scalars, empty
 * tensors, metadata with escapes), a hand-written file as the format spec lays it out,
 * dtype conversions, ~40 malformed headers that must each give SEG_EFORMAT, and a seeded
 * mutation run (every mutated file either parses with in-bounds tensors or is refused). */
#include "safetensors.h"
#include "err.h"
#include "testutil.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A file image from a header text and data bytes (header length written as given). */
static size_t build(uint8_t *out, const char *hdr, const void *data, size_t dlen)
{
    uint64_t h = strlen(hdr);
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(h >> (8 * i));
    memcpy(out + 8, hdr, h);
    if (dlen) memcpy(out + 8 + h, data, dlen);
    return 8 + h + dlen;
}

static int parses(const char *hdr, size_t dlen, int *rc_out)
{
    static uint8_t buf[1 << 16], zeros[4096];
    size_t n = build(buf, hdr, zeros, dlen);
    StFile *f = NULL;
    int rc = st_parse(buf, n, "bad", &f);
    st_close(f);
    *rc_out = rc;
    return rc == 0;
}

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 20240611;
    printf("test_safetensors seed=%llu\n", (unsigned long long)seed);

    /* ---- round trip through a file ---- */
    float w[2 * 3 * 4];
    double d64[5];
    int64_t i64 = -1234567890123LL;
    uint16_t h16[3] = { 0x3C00, 0xC000, 0x0001 };
    uint8_t u8[7];
    for (int i = 0; i < 24; i++) w[i] = (float)((double)(t_rand(&seed) % 100000) / 977.0 - 50.0);
    for (int i = 0; i < 5; i++) d64[i] = (double)t_rand(&seed) / 3.0;
    for (int i = 0; i < 7; i++) u8[i] = (uint8_t)t_rand(&seed);
    StTensor ts[] = {
        { .name = "downs.0.net.0.weight", .dtype = ST_F32, .ndim = 3, .shape = { 2, 3, 4 }, .data = w },
        { .name = "scalar.num_batches_tracked", .dtype = ST_I64, .ndim = 0, .data = &i64 },
        { .name = "empty", .dtype = ST_F32, .ndim = 2, .shape = { 0, 5 }, .data = NULL },
        { .name = "d", .dtype = ST_F64, .ndim = 1, .shape = { 5 }, .data = d64 },
        { .name = "h \"quoted\" \\ name", .dtype = ST_F16, .ndim = 1, .shape = { 3 }, .data = h16 },
        { .name = "u", .dtype = ST_U8, .ndim = 1, .shape = { 7 }, .data = u8 },
    };
    const int nt = (int)(sizeof ts / sizeof ts[0]);
    StMeta meta[] = { { "format", "pt" }, { "labels", "[\"liver\", \"spleen\"]\n\ttab" }, { "epoch", "3" } };
    char dir[] = "/tmp/test_safetensors.XXXXXX", path[256];
    CHECK(mkdtemp(dir) != NULL, "temp dir %s", dir);
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    int rc = st_write(path, ts, nt, meta, 3);
    CHECK(rc == 0, "st_write: %s", rc ? seg_errmsg() : "ok");
    char tmpname[300];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(tmpname, F_OK) != 0, "no temp file left behind");
    StFile *f = NULL;
    rc = st_open(path, &f);
    CHECK(rc == 0, "st_open: %s", rc ? seg_errmsg() : "ok");
    if (f) {
        CHECK(st_n_tensors(f) == nt, "%d tensors", st_n_tensors(f));
        int ok = 1;
        for (int i = 0; i < nt; i++) {
            const StTensor *t = st_find(f, ts[i].name);
            size_t nb = st_dtype_size(ts[i].dtype);
            for (int k = 0; k < ts[i].ndim; k++) nb *= (size_t)ts[i].shape[k];
            if (!t || t->dtype != ts[i].dtype || t->ndim != ts[i].ndim || t->nbytes != nb ||
                memcmp(t->shape, ts[i].shape, sizeof(int64_t) * (size_t)ts[i].ndim) || (nb && memcmp(t->data, ts[i].data, nb))) {
                ok = 0;
                printf("  mismatch in tensor '%s'\n", ts[i].name);
            }
        }
        CHECK(ok, "all tensors bit-exact with dtype and shape (scalar, empty, escaped name)");
        CHECK(st_tensor(f, 0) && !strcmp(st_tensor(f, 0)->name, ts[0].name) && !strcmp(st_tensor(f, nt - 1)->name, "u"),
              "tensors listed in data-offset order");
        CHECK(st_meta(f, "labels") && !strcmp(st_meta(f, "labels"), meta[1].value) && st_meta(f, "epoch") &&
              !strcmp(st_meta(f, "epoch"), "3") && !st_meta(f, "nope") && st_n_meta(f) == 3, "metadata round trip");
        float got[24];
        int64_t shp[3] = { 2, 3, 4 }, wrong[3] = { 3, 2, 4 };
        CHECK(st_read_f32(f, "downs.0.net.0.weight", 3, shp, got, 24) == 0 && !memcmp(got, w, sizeof w), "st_read_f32 F32");
        CHECK(st_read_f32(f, "downs.0.net.0.weight", 3, wrong, got, 24) == SEG_EMISMATCH, "wrong shape -> SEG_EMISMATCH: %s", seg_errmsg());
        CHECK(st_read_f32(f, "missing", 0, NULL, got, 1) == SEG_EFORMAT, "missing tensor -> SEG_EFORMAT: %s", seg_errmsg());
        CHECK(st_read_f32(f, "scalar.num_batches_tracked", 0, NULL, got, 1) == 0 && got[0] == (float)i64, "I64 scalar -> float");
        CHECK(st_read_f32(f, "h \"quoted\" \\ name", 1, NULL, got, 3) == 0 && got[0] == 1.0f && got[1] == -2.0f &&
              got[2] == ldexpf(1.0f, -24), "F16 -> float (1, -2, smallest subnormal): %g %g %g", got[0], got[1], got[2]);
        st_close(f);
    }
    /* data section 8-aligned; same bytes from st_write_mem */
    void *mem = NULL;
    size_t mlen = 0;
    CHECK(st_write_mem(ts, nt, meta, 3, &mem, &mlen) == 0, "st_write_mem");
    if (mem) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = hl << 8 | ((uint8_t *)mem)[i];
        CHECK((8 + hl) % 8 == 0, "data section starts 8-byte aligned (header %llu)", (unsigned long long)hl);
        FILE *fp = fopen(path, "rb");
        uint8_t *disk = malloc(mlen + 1);
        size_t got_n = fp ? fread(disk, 1, mlen + 1, fp) : 0;
        if (fp) fclose(fp);
        CHECK(got_n == mlen && !memcmp(disk, mem, mlen), "file and memory images identical (%zu bytes)", mlen);
        free(disk);
    }
    StTensor dup[2] = { ts[0], ts[0] };
    CHECK(st_write(path, dup, 2, NULL, 0) == SEG_EARG, "duplicate names refused on write");
    StTensor noname = ts[0];
    noname.name = "";
    CHECK(st_write(path, &noname, 1, NULL, 0) == SEG_EARG, "empty name refused on write");
    char badpath[300];
    snprintf(badpath, sizeof badpath, "%s/no/such/dir/x.safetensors", dir);
    CHECK(st_write(badpath, ts, 1, NULL, 0) == SEG_EIO && strstr(seg_errmsg(), "x.safetensors"), "unwritable path -> SEG_EIO naming it: %s", seg_errmsg());
    CHECK(st_open(badpath, &f) == SEG_EIO && f == NULL, "missing file -> SEG_EIO");

    /* ---- a file written by hand as the format describes it ---- */
    {
        uint8_t buf[512];
        float a[2] = { 1.5f, -2.0f };
        uint16_t bf[2] = { 0x3F80, 0xC040 };   /* bf16 1.0, -3.0 */
        uint8_t data[12];
        memcpy(data, bf, 4);
        memcpy(data + 4, a, 8);
        size_t n = build(buf, "{\"__metadata__\":{\"k\":\"v\"},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                              "\"a\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[0,4]}}   ", data, 12);
        StFile *g = NULL;
        rc = st_parse(buf, n, "hand", &g);
        CHECK(rc == 0, "hand-written file parses: %s", rc ? seg_errmsg() : "ok");
        if (g) {
            float x[2];
            CHECK(st_read_f32(g, "a", 0, NULL, x, 2) == 0 && x[0] == 1.0f && x[1] == -3.0f, "BF16 values");
            CHECK(st_read_f32(g, "b", 0, NULL, x, 2) == 0 && x[0] == 1.5f && x[1] == -2.0f, "F32 values");
            CHECK(!strcmp(st_tensor(g, 0)->name, "a") && !strcmp(st_meta(g, "k"), "v"), "offset order and metadata");
            st_close(g);
        }
    }

    /* ---- malformed headers: each must be refused with SEG_EFORMAT ---- */
    static const struct { const char *hdr; size_t dlen; const char *why; } bad[] = {
        { "[]", 0, "not an object" },
        { "{\"a\":1}", 0, "tensor not an object" },
        { "{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype" },
        { "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing dtype" },
        { "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing shape" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing offsets" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "negative dim" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "fractional dim" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "string dim" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "9 dims" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}", 4, "shape overflow" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "reversed offsets" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "one offset" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "three offsets" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "negative offset" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 2, "offsets beyond data" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "bytes != shape x dtype" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "uncovered trailing bytes" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "gap at the start" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "overlap" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "aliasing" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "duplicate name" },
        { "{\"__metadata__\":{\"k\":1}}", 0, "non-string metadata" },
        { "{\"__metadata__\":[\"k\"]}", 0, "metadata not an object" },
        { "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "repeated metadata key" },
        { "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "two metadata maps" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "truncated JSON" },
        { "{} x", 0, "garbage after JSON" },
        { "{}{}", 0, "two objects" },
        { " {}", 0, "leading space" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 4, "huge offset" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0000001]}}", 4, "fractional offset" },
    };
    int nbad = (int)(sizeof bad / sizeof bad[0]), refused = 0;
    for (int i = 0; i < nbad; i++) {
        int r;
        if (parses(bad[i].hdr, bad[i].dlen, &r) || r != SEG_EFORMAT) printf("  accepted or wrong code (%d): %s\n", r, bad[i].why);
        else refused++;
    }
    CHECK(refused == nbad, "%d/%d malformed headers refused with SEG_EFORMAT", refused, nbad);
    int r;
    CHECK(parses("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, &r), "empty tensor at offset 0 accepted");
    CHECK(parses("{}      ", 0, &r), "padded empty header accepted");
    {
        uint8_t buf[64];
        StFile *g = NULL;
        memset(buf, 0, sizeof buf);
        CHECK(st_parse(buf, 7, "short", &g) == SEG_EFORMAT, "7-byte file refused");
        buf[0] = 0xFF; buf[1] = 0xFF; buf[2] = 0xFF; buf[3] = 0xFF; buf[7] = 0x7F;
        CHECK(st_parse(buf, 64, "hugelen", &g) == SEG_EFORMAT && strstr(seg_errmsg(), "header length"), "absurd header length refused: %s", seg_errmsg());
        size_t n = build(buf, "{}", NULL, 0);
        buf[0] = 40;   /* claims more header than the file holds */
        CHECK(st_parse(buf, n, "trunc", &g) == SEG_EFORMAT && strstr(seg_errmsg(), "truncated"), "header beyond EOF refused: %s", seg_errmsg());
    }

    /* ---- seeded mutations of a valid file ---- */
    if (mem) {
        uint8_t *m = malloc(mlen);
        int n_ok = 0, n_ref = 0, n_wrong = 0;
        for (int it = 0; it < 20000; it++) {
            memcpy(m, mem, mlen);
            int edits = 1 + (int)(t_rand(&seed) % 4);
            for (int e = 0; e < edits; e++) {
                size_t pos = t_rand(&seed) % (it % 2 ? 80 : mlen);   /* half aim at the length and header start */
                m[pos] = t_rand(&seed) % 3 == 0 ? (uint8_t)"0123456789[]{},:\"-."[t_rand(&seed) % 19] : (uint8_t)t_rand(&seed);
            }
            size_t len = it % 7 == 0 ? t_rand(&seed) % (mlen + 1) : mlen;
            StFile *g = NULL;
            int rr = st_parse(m, len, "mut", &g);
            if (rr == 0) {
                n_ok++;
                for (int i = 0; i < st_n_tensors(g); i++) {
                    const StTensor *t = st_tensor(g, i);
                    const uint8_t *p = t->data;
                    if (p < m || p + t->nbytes > m + len || t->nbytes != t->count * st_dtype_size(t->dtype)) n_wrong++;
                }
                st_close(g);
            } else if (rr == SEG_EFORMAT) n_ref++;
            else n_wrong++;
        }
        CHECK(n_wrong == 0, "20000 mutations: %d parsed (all in bounds), %d refused, %d wrong", n_ok, n_ref, n_wrong);
        free(m);
        free(mem);
    }
    unlink(path);
    rmdir(dir);
    return t_report("test_safetensors");
}
