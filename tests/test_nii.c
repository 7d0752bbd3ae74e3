/* tests/test_nii.c : the NIfTI reader/writer against nibabel.
 *   test_nii [FIXTURE_DIR]     every fixture in tests/fixtures/nii (made by
 *                              tools/make_nii_fixtures.py from nibabel) read with nii_read,
 *                              nii_read_header and nii_read_mem and compared with its
 *                              sidecar; every bad input gives its SEG_E* code and names the
 *                              file; the voxel limit (API and SEGKIT_MAX_VOXELS); gzip
 *                              trailer/bomb handling; nii_write round trips; the real example.
 *   test_nii --write-dir DIR   write the nii_write cases and a sidecar per file into DIR
 *                              (checked with nibabel by tests/test_nii_write.py).
 *   test_nii --bench DIR [RUNS] time nii_read of DIR/ct.nii.gz and every DIR/segmentations mask
 *                              against plain zlib on the same files, and nii_write; JSON. */
#define _POSIX_C_SOURCE 200809L
#include "err.h"
#include "util.h"
#include "fsutil.h"
#include "nii.h"
#include "testutil.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static const char *g_self;   /* argv[0], re-run for the environment-variable check */

/* ---- small helpers ------------------------------------------------------------------ */

static cJSON *load_json(const char *path)
{
    char *buf;
    size_t n;
    if (fs_read_all(path, &buf, &n, 0) < 0) { printf("cannot read %s: %s\n", path, seg_errmsg()); return NULL; }
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (!j) printf("bad JSON in %s\n", path);
    return j;
}

static double jnum(const cJSON *o, const char *key)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

/* A value from the sidecar: a number or "nan" / "inf" / "-inf". */
static double jval(const cJSON *x)
{
    if (cJSON_IsNumber(x)) return x->valuedouble;
    if (cJSON_IsString(x)) return strtod(x->valuestring, NULL);
    return NAN;
}

static int same_double(double a, double b)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b;
}

static int hex_decode(const char *hex, uint8_t **out, size_t *n)
{
    const size_t len = strlen(hex);
    *n = len / 2;
    *out = malloc(*n ? *n : 1);
    if (!*out) return -1;
    for (size_t i = 0; i < *n; i++) {
        unsigned x;
        if (sscanf(hex + 2 * i, "%2x", &x) != 1) return -1;
        (*out)[i] = (uint8_t)x;
    }
    return 0;
}

static const char *code_name(int rc)
{
    switch (rc) {
    case SEG_OK: return "OK";
    case SEG_EIO: return "EIO";
    case SEG_EFORMAT: return "EFORMAT";
    case SEG_ENOMEM: return "ENOMEM";
    case SEG_EARG: return "EARG";
    default: return "other";
    }
}

/* Largest |A - B| over the top 3 rows; the JSON affine is a 4x4 list of lists. */
static double affine_diff_json(const double A[4][4], const cJSON *J)
{
    double worst = 0;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            const double want = jval(cJSON_GetArrayItem(cJSON_GetArrayItem(J, r), c));
            const double d = fabs(A[r][c] - want);
            if (!(d <= worst)) worst = d;   /* NaN counts as worst */
        }
    return worst;
}

static int header_equal(const NiiVolume *a, const NiiVolume *b)
{
    return !memcmp(a->dim, b->dim, sizeof a->dim) && !memcmp(a->affine, b->affine, sizeof a->affine) &&
           !memcmp(a->pixdim, b->pixdim, sizeof a->pixdim) && a->datatype == b->datatype &&
           a->bytes_per_voxel == b->bytes_per_voxel && a->sform_code == b->sform_code &&
           a->qform_code == b->qform_code && same_double(a->slope, b->slope) && same_double(a->inter, b->inter) &&
           a->version == b->version;
}

/* ---- good fixtures -------------------------------------------------------------------- */

static void check_fixture(const char *dir, const char *json_name)
{
    char jpath[4200], path[4200];
    snprintf(jpath, sizeof jpath, "%s/%s", dir, json_name);
    cJSON *j = load_json(jpath);
    if (!j) { CHECK(0, "%s: sidecar readable", json_name); return; }
    const char *file = cJSON_GetObjectItemCaseSensitive(j, "file")->valuestring;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    NiiVolume *v = NULL, *h = NULL, *m = NULL, *mh = NULL;
    int rc = nii_read(path, &v);
    CHECK(rc == SEG_OK, "%s: nii_read -> %s %s", file, code_name(rc), rc ? seg_errmsg() : "");
    if (rc) { cJSON_Delete(j); return; }

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    int shape_ok = cJSON_GetArraySize(shape) == 3;
    for (int i = 0; i < 3 && shape_ok; i++) shape_ok = v->dim[i] == (int64_t)jval(cJSON_GetArrayItem(shape, i));
    const cJSON *pd = cJSON_GetObjectItemCaseSensitive(j, "pixdim");
    double pd_err = 0;
    for (int i = 0; i < 3; i++) pd_err = fmax(pd_err, fabs(v->pixdim[i] - jval(cJSON_GetArrayItem(pd, i))));
    CHECK(shape_ok && v->datatype == (int)jnum(j, "datatype") && v->version == (int)jnum(j, "version") &&
          v->bytes_per_voxel == nii_dtype_size(v->datatype) && v->sform_code == (int)jnum(j, "sform_code") &&
          v->qform_code == (int)jnum(j, "qform_code") && pd_err < 1e-6,
          "%s: %lldx%lldx%lld %s v%d sform %d qform %d pixdim %.4g,%.4g,%.4g", file, (long long)v->dim[0],
          (long long)v->dim[1], (long long)v->dim[2], nii_dtype_name(v->datatype), v->version, v->sform_code,
          v->qform_code, v->pixdim[0], v->pixdim[1], v->pixdim[2]);
    CHECK(v->slope == jnum(j, "slope") && v->inter == jnum(j, "inter"), "%s: scaling %.9g %.9g (nibabel %.9g %.9g)",
          file, v->slope, v->inter, jnum(j, "slope"), jnum(j, "inter"));

    const double d_exp = affine_diff_json(v->affine, cJSON_GetObjectItemCaseSensitive(j, "affine"));
    const double d_nib = affine_diff_json(v->affine, cJSON_GetObjectItemCaseSensitive(j, "affine_nibabel"));
    const char *note = cJSON_GetObjectItemCaseSensitive(j, "affine_note")->valuestring;
    if (!note[0])
        CHECK(d_exp < 1e-5 && d_nib < 1e-5, "%s: affine vs nibabel max|d|=%.3g", file, d_nib);
    else
        CHECK(d_exp < 1e-5, "%s: affine vs NIfTI-1 standard max|d|=%.3g (nibabel differs by %.3g: %s)", file, d_exp,
              d_nib, note);

    /* every raw byte and every scaled value, exactly */
    uint8_t *raw = NULL;
    size_t nraw;
    const size_t nvox = nii_nvox(v);
    int raw_ok = hex_decode(cJSON_GetObjectItemCaseSensitive(j, "raw_hex")->valuestring, &raw, &nraw) == 0 &&
                 nraw == nvox * (size_t)v->bytes_per_voxel && memcmp(raw, v->data, nraw) == 0;
    const cJSON *vals = cJSON_GetObjectItemCaseSensitive(j, "values");
    size_t bad = 0;
    int nvals = cJSON_GetArraySize(vals);
    for (size_t i = 0; i < nvox && (int)i < nvals; i++) {
        const double got = nii_value(v, i), want = jval(cJSON_GetArrayItem(vals, (int)i));
        if (!same_double(got, want) && bad++ < 3) printf("    %s[%zu] got %.17g want %.17g\n", file, i, got, want);
    }
    CHECK(raw_ok && bad == 0 && (size_t)nvals == nvox, "%s: %zu voxels exact (raw bytes %s, %zu scaled mismatches)",
          file, nvox, raw_ok ? "equal" : "DIFFER", bad);
    free(raw);

    rc = nii_read_header(path, &h);
    CHECK(rc == SEG_OK && h->data == NULL && header_equal(h, v), "%s: nii_read_header matches, no data", file);

    char *buf;
    size_t n;
    int mrc = fs_read_all(path, &buf, &n, 0);
    if (mrc == SEG_OK) {
        mrc = nii_read_mem(buf, n, file, 0, &m);
        if (mrc == SEG_OK) mrc = nii_read_mem(buf, n, file, 1, &mh);
        free(buf);
    }
    CHECK(mrc == SEG_OK && header_equal(m, v) && memcmp(m->data, v->data, nvox * (size_t)v->bytes_per_voxel) == 0 &&
          mh->data == NULL && header_equal(mh, v), "%s: nii_read_mem (full and header only) identical", file);
    nii_free(v); nii_free(h); nii_free(m); nii_free(mh);
    cJSON_Delete(j);
}

/* ---- bad inputs ------------------------------------------------------------------------ */

static int want_code(const char *s)
{
    if (!strcmp(s, "EIO")) return SEG_EIO;
    if (!strcmp(s, "EFORMAT")) return SEG_EFORMAT;
    if (!strcmp(s, "ENOMEM")) return SEG_ENOMEM;
    return 1;
}

static void check_bad(const char *dir)
{
    char jpath[4200], path[4200];
    snprintf(jpath, sizeof jpath, "%s/bad.json", dir);
    cJSON *j = load_json(jpath), *e;
    CHECK(j && cJSON_GetArraySize(j) >= 20, "bad.json lists %d bad inputs", j ? cJSON_GetArraySize(j) : 0);
    if (!j) return;
    cJSON_ArrayForEach(e, j) {
        const char *name = e->string;
        const int want = want_code(cJSON_GetObjectItemCaseSensitive(e, "code")->valuestring);
        const int header_ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "header_ok"));
        snprintf(path, sizeof path, "%s/%s", dir, name);
        NiiVolume *v = (NiiVolume *)1;
        int rc = nii_read(path, &v);
        CHECK(rc == want && v == NULL && strstr(seg_errmsg(), name) != NULL, "%s (%s): nii_read -> %s: %s", name,
              cJSON_GetObjectItemCaseSensitive(e, "what")->valuestring, code_name(rc), seg_errmsg());
        rc = nii_read_header(path, &v);
        if (header_ok) {
            CHECK(rc == SEG_OK && v && v->data == NULL, "%s: header alone reads (%s)", name, code_name(rc));
            nii_free(v);
        } else {
            CHECK(rc == want && v == NULL && strstr(seg_errmsg(), name) != NULL, "%s: nii_read_header -> %s", name,
                  code_name(rc));
        }
        char *buf;
        size_t n;
        if (fs_read_all(path, &buf, &n, 0) == SEG_OK) {
            char mname[300];
            snprintf(mname, sizeof mname, "mem:%s", name);
            rc = nii_read_mem(buf, n, mname, 0, &v);
            CHECK(rc == want && v == NULL && strstr(seg_errmsg(), mname) != NULL, "%s: nii_read_mem -> %s", name,
                  code_name(rc));
            free(buf);
        }
    }
    cJSON_Delete(j);
    NiiVolume *v = (NiiVolume *)1;
    int rc = nii_read("/nonexistent/dir/x.nii.gz", &v);
    CHECK(rc == SEG_EIO && v == NULL && strstr(seg_errmsg(), "/nonexistent/dir/x.nii.gz"), "missing file -> EIO: %s",
          seg_errmsg());
    rc = nii_read(dir, &v);
    CHECK(rc == SEG_EIO && strstr(seg_errmsg(), dir), "a directory -> EIO: %s", seg_errmsg());
}

/* ---- the voxel limit -------------------------------------------------------------------- */

static int run_child_rc(const char *env_value, const char *path)
{
    const pid_t pid = fork();
    if (pid == 0) {
        setenv("SEGKIT_MAX_VOXELS", env_value, 1);
        const char *wrap = getenv("SEGKIT_TEST_EXEC");   /* e.g. qemu-aarch64 for a cross build */
        if (wrap && *wrap) execlp(wrap, wrap, g_self, "--read-rc", path, (char *)NULL);
        else execl(g_self, g_self, "--read-rc", path, (char *)NULL);
        _exit(99);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) return 99;
    return WEXITSTATUS(st);
}

static void check_limit(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/dtype_int16.nii.gz", dir);   /* 5x4x3 = 60 voxels */
    NiiVolume *v = NULL;
    const int64_t old = nii_set_max_voxels(59);
    CHECK(old == NII_DEFAULT_MAX_VOXELS, "default limit is 2^31 (%lld)", (long long)old);
    int rc = nii_read(path, &v);
    CHECK(rc == SEG_ENOMEM && strstr(seg_errmsg(), path) && strstr(seg_errmsg(), "5x4x3") &&
          strstr(seg_errmsg(), "limit of 59") && strstr(seg_errmsg(), "SEGKIT_MAX_VOXELS"),
          "limit 59, 60 voxels -> ENOMEM: %s", seg_errmsg());
    rc = nii_read_header(path, &v);
    CHECK(rc == SEG_ENOMEM, "the header read enforces it too");
    const int64_t dim[3] = { 5, 4, 3 };
    const double I[4][4] = { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } };
    CHECK(nii_create(dim, NII_INT16, I, &v) == SEG_ENOMEM, "so does nii_create");
    nii_set_max_voxels(60);
    rc = nii_read(path, &v);
    CHECK(rc == SEG_OK, "limit 60 -> reads");
    nii_free(v);

    /* a 10^12-voxel header: refused by the limit before any allocation, with a message
     * that says how to raise it; with the limit raised, refused by the file size (plain)
     * or the allocation (gzip) -- never a crash or a read of garbage */
    nii_set_max_voxels(NII_DEFAULT_MAX_VOXELS);
    snprintf(path, sizeof path, "%s/huge_1e12.nii", dir);
    rc = nii_read(path, &v);
    CHECK(rc == SEG_ENOMEM && strstr(seg_errmsg(), "10000x10000x10000") && strstr(seg_errmsg(), "limit"),
          "10^12 voxels -> ENOMEM by the limit: %s", seg_errmsg());
    nii_set_max_voxels((int64_t)1 << 62);
    rc = nii_read_header(path, &v);
    CHECK(rc == SEG_OK && v->dim[0] == 10000 && v->dim[2] == 10000, "limit raised: the header alone reads");
    nii_free(v);
    rc = nii_read(path, &v);
    CHECK(rc == SEG_EIO && strstr(seg_errmsg(), "truncated"), "limit raised: plain file refused by its size: %s",
          seg_errmsg());
    nii_set_max_voxels(NII_DEFAULT_MAX_VOXELS);

    /* SEGKIT_MAX_VOXELS (read once, at first use, in a fresh process) */
    snprintf(path, sizeof path, "%s/dtype_int16.nii.gz", dir);
    const int r59 = run_child_rc("59", path), r60 = run_child_rc("60", path), rbad = run_child_rc("abc", path);
    CHECK(r59 == -SEG_ENOMEM && r60 == 0 && rbad == 0, "SEGKIT_MAX_VOXELS=59 -> %d, =60 -> %d, =abc (ignored) -> %d",
          r59, r60, rbad);
}

/* ---- gzip trailer handling, built at run time --------------------------------------------- */

/* gzip(hdr+data of a valid file, then extra zero bytes), optionally with a broken CRC. */
static uint8_t *gzip_with_extra(const uint8_t *nii, size_t n, size_t extra, int break_crc, size_t *out_n)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    const size_t cap = deflateBound(&zs, n + extra) + 64;
    uint8_t *out = malloc(cap), *zeros = calloc(extra ? extra : 1, 1);
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    zs.next_in = (Bytef *)nii;
    zs.avail_in = (uInt)n;
    deflate(&zs, Z_NO_FLUSH);
    zs.next_in = zeros;
    zs.avail_in = (uInt)extra;
    const int zr = deflate(&zs, Z_FINISH);
    *out_n = zs.total_out;
    deflateEnd(&zs);
    free(zeros);
    if (zr != Z_STREAM_END) { free(out); return NULL; }
    if (break_crc) out[*out_n - 8] ^= 0xff;
    return out;
}

static void check_gzip_tail(const char *dir)
{
    char path[4200], *nii;
    size_t n, gn;
    snprintf(path, sizeof path, "%s/dtype_int16.nii", dir);
    if (fs_read_all(path, &nii, &n, 0) < 0) { CHECK(0, "read %s", path); return; }
    NiiVolume *v = NULL;
    struct { size_t extra; int bad_crc, want; const char *what; } cases[] = {
        { 0, 0, SEG_OK, "exact stream" },
        { 0, 1, SEG_EIO, "bad CRC right after the data" },
        { 1000, 0, SEG_OK, "1 KB of trailing voxels, good CRC" },
        { 1000, 1, SEG_EIO, "1 KB of trailing voxels, bad CRC (within the checked tail)" },
        { (size_t)64 << 20, 1, SEG_OK, "64 MB bomb after the data, bad CRC: never inflated, so never seen" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *g = gzip_with_extra((const uint8_t *)nii, n, cases[i].extra, cases[i].bad_crc, &gn);
        if (!g) { CHECK(0, "deflate"); continue; }
        const double t0 = util_now_s();
        const int rc = nii_read_mem(g, gn, "tail.nii.gz", 0, &v);
        const double dt = util_now_s() - t0;
        CHECK(rc == cases[i].want && (rc != SEG_OK || v->dim[0] == 5), "%s (%zu compressed bytes, %.1f ms) -> %s %s",
              cases[i].what, gn, dt * 1e3, code_name(rc), rc ? seg_errmsg() : "");
        nii_free(v); v = NULL;
        free(g);
    }
    free(nii);
}

/* ---- nii_write ------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int         datatype;
    int64_t     dim[3];
    double      R[3][3];      /* direction columns (scaled by zoom below) */
    double      zoom[3], off[3];
    double      slope, inter;
    int         level, sform_code, orthogonal;
} WriteCase;

static const WriteCase g_cases[] = {
    { "w_int16_rot.nii.gz", NII_INT16, { 64, 48, 7 }, { { 0.9396926, -0.3420201, 0 }, { 0.3420201, 0.9396926, 0 }, { 0, 0, 1 } },
      { 0.8, 0.8, 2.5 }, { -120.5, 33.25, 410.0 }, 1, 0, 1, 0, 1 },
    { "w_uint8_LPS.nii.gz", NII_UINT8, { 33, 17, 5 }, { { -1, 0, 0 }, { 0, -1, 0 }, { 0, 0, 1 } },
      { 1.5, 1.5, 3 }, { 20, 30, -40 }, 1, 0, 0, 0, 1 },
    { "w_float32_PSR.nii", NII_FLOAT32, { 9, 8, 7 }, { { 0, 0, -1 }, { -1, 0, 0 }, { 0, 1, 0 } },
      { 1, 2, 3 }, { 5, 6, 7 }, 1, 0, 0, 0, 1 },
    { "w_float64_qfac.nii", NII_FLOAT64, { 6, 5, 4 }, { { 0.8660254, 0, 0.5 }, { 0, 1, 0 }, { 0.5, 0, -0.8660254 } },
      { 0.5, 0.75, 1.25 }, { -1, -2, -3 }, 1, 0, 0, 0, 1 },
    { "w_int16_scaled.nii.gz", NII_INT16, { 20, 10, 3 }, { { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 } },
      { 1, 1, 1 }, { 0, 0, 0 }, 0.5, -1024, 9, 2, 1 },
    { "w_uint16_ARS.nii", NII_UINT16, { 7, 6, 5 }, { { 0, 1, 0 }, { 1, 0, 0 }, { 0, 0, 1 } },
      { 2, 3, 4 }, { 1, 1, 1 }, 2.5, 0.25, 0, 0, 1 },
    { "w_int8.nii.gz", NII_INT8, { 4, 4, 4 }, { { 0, 0, 1 }, { 0, 1, 0 }, { -1, 0, 0 } },
      { 1, 1, 1 }, { 0, 0, 0 }, 1, 0, 5, 0, 1 },
    { "w_uint32.nii", NII_UINT32, { 3, 5, 7 }, { { 1, 0, 0 }, { 0, 0, -1 }, { 0, 1, 0 } },
      { 1, 1, 1 }, { 0, 0, 0 }, 1, 0, 0, 0, 1 },
    { "w_int32_shear.nii.gz", NII_INT32, { 5, 6, 7 }, { { 1, 0.3, 0 }, { 0, 1, 0.1 }, { 0, 0, 1 } },
      { 1, 1, 1 }, { 3, 2, 1 }, 1, 0, 1, 0, 0 },
    { "w_slice_2d.nii", NII_FLOAT32, { 11, 13, 1 }, { { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 } },
      { 0.7, 0.7, 1 }, { 0, 0, 0 }, 1, 0, 0, 0, 1 },
    { "w_near180.nii.gz", NII_INT16, { 4, 3, 2 }, { { 0, 1, 0 }, { 1, 0, 0 }, { 0, 0, -1 } },
      { 1, 1, 1 }, { 0, 0, 0 }, 1, 0, 1, 0, 1 },
};
#define N_CASES (sizeof g_cases / sizeof g_cases[0])

static void case_affine(const WriteCase *c, double A[4][4])
{
    memset(A, 0, 16 * sizeof(double));
    for (int r = 0; r < 3; r++) {
        for (int k = 0; k < 3; k++) A[r][k] = c->R[r][k] * c->zoom[k];
        A[r][3] = c->off[r];
    }
    A[3][3] = 1;
}

static void fill_random(NiiVolume *v, uint64_t *seed)
{
    const size_t n = nii_nvox(v);
    for (size_t i = 0; i < n; i++) {
        const uint64_t r = t_rand(seed);
        switch (v->datatype) {
        case NII_UINT8: ((uint8_t *)v->data)[i] = (uint8_t)(r % 3 == 0); break;   /* mask-like */
        case NII_INT8: ((int8_t *)v->data)[i] = (int8_t)r; break;
        case NII_INT16: ((int16_t *)v->data)[i] = (int16_t)((int64_t)(r % 4096) - 1024); break;
        case NII_UINT16: ((uint16_t *)v->data)[i] = (uint16_t)r; break;
        case NII_INT32: ((int32_t *)v->data)[i] = (int32_t)r; break;
        case NII_UINT32: ((uint32_t *)v->data)[i] = (uint32_t)r; break;
        case NII_FLOAT32: ((float *)v->data)[i] = (float)((double)(int64_t)r / 9.2e15); break;
        case NII_FLOAT64: ((double *)v->data)[i] = (double)(int64_t)r / 3e14; break;
        }
    }
}

static int write_sidecar(const char *path, const WriteCase *c, const NiiVolume *v)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "file", c->name);
    const double shape[3] = { (double)v->dim[0], (double)v->dim[1], (double)v->dim[2] };
    cJSON_AddItemToObject(j, "shape", cJSON_CreateDoubleArray(shape, 3));
    cJSON_AddNumberToObject(j, "datatype", v->datatype);
    cJSON_AddNumberToObject(j, "slope", v->slope);
    cJSON_AddNumberToObject(j, "inter", v->inter);
    cJSON_AddNumberToObject(j, "sform_code", c->sform_code > 0 ? c->sform_code : 1);
    cJSON_AddNumberToObject(j, "qform_code", v->qform_code > 0 ? v->qform_code : 1);
    cJSON_AddBoolToObject(j, "orthogonal", c->orthogonal);
    cJSON_AddBoolToObject(j, "gzip", strstr(c->name, ".gz") != NULL);
    cJSON *A = cJSON_AddArrayToObject(j, "affine");
    for (int r = 0; r < 4; r++) cJSON_AddItemToArray(A, cJSON_CreateDoubleArray(v->affine[r], 4));
    const size_t nb = nii_nvox(v) * (size_t)v->bytes_per_voxel;
    char *hex = malloc(2 * nb + 1);
    for (size_t i = 0; i < nb; i++) sprintf(hex + 2 * i, "%02x", ((const uint8_t *)v->data)[i]);
    hex[2 * nb] = 0;
    cJSON_AddStringToObject(j, "raw_hex", hex);
    free(hex);
    char *s = cJSON_Print(j), jpath[4300];
    snprintf(jpath, sizeof jpath, "%s.json", path);
    const int rc = fs_write_atomic(jpath, s, strlen(s));
    free(s);
    cJSON_Delete(j);
    return rc;
}

/* Write every case into dir and read each back: exact data, scaling as float32, the sform
 * (and, for orthogonal affines, the qform alone) reproducing the affine. */
static void check_write(const char *dir, int sidecars)
{
    uint64_t seed = 20240601;
    for (size_t k = 0; k < N_CASES; k++) {
        const WriteCase *c = &g_cases[k];
        double A[4][4];
        case_affine(c, A);
        NiiVolume *v = NULL, *r = NULL, *q = NULL;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, c->name);
        int rc = nii_create(c->dim, c->datatype, (const double(*)[4])A, &v);
        CHECK(rc == SEG_OK, "%s: nii_create", c->name);
        if (rc) continue;
        fill_random(v, &seed);
        v->slope = c->slope;
        v->inter = c->inter;
        v->sform_code = c->sform_code;
        v->qform_code = k % 3 == 2 ? 2 : 0;   /* 0: written as 1 (scanner); > 0 kept */
        const int want_q = v->qform_code > 0 ? v->qform_code : 1;
        rc = nii_write(path, v, c->level);
        CHECK(rc == SEG_OK, "%s: nii_write level %d %s", c->name, c->level, rc ? seg_errmsg() : "");
        if (sidecars) write_sidecar(path, c, v);
        if (rc == SEG_OK) rc = nii_read(path, &r);
        CHECK(rc == SEG_OK, "%s: read back %s", c->name, rc ? seg_errmsg() : "");
        if (rc) { nii_free(v); continue; }
        const size_t nb = nii_nvox(v) * (size_t)v->bytes_per_voxel;
        double worst = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++) worst = fmax(worst, fabs(r->affine[i][j] - A[i][j]) / (1 + fabs(A[i][j])));
        CHECK(r->dim[0] == c->dim[0] && r->dim[1] == c->dim[1] && r->dim[2] == c->dim[2] && r->datatype == c->datatype &&
              memcmp(r->data, v->data, nb) == 0, "%s: shape, datatype and %zu data bytes exact", c->name, nb);
        CHECK(r->slope == (double)(float)c->slope && r->inter == (double)(float)c->inter &&
              r->sform_code == (c->sform_code > 0 ? c->sform_code : 1) && r->qform_code == want_q && worst < 1e-6,
              "%s: scaling %g %g, codes %d/%d, sform affine rel err %.2g", c->name, r->slope, r->inter, r->sform_code,
              r->qform_code, worst);
        double pd_err = 0;
        for (int i = 0; i < 3; i++) pd_err = fmax(pd_err, fabs(r->pixdim[i] - v->pixdim[i]));

        /* the qform alone: clear sform_code in the written bytes and parse again */
        char *buf;
        size_t n;
        if (fs_read_all(path, &buf, &n, 0) == SEG_OK) {
            uInt hn = 352;
            uint8_t hdr[352], *img = (uint8_t *)buf;
            if (n > 2 && img[0] == 0x1f) {   /* the header only: inflate a prefix */
                z_stream zs;
                memset(&zs, 0, sizeof zs);
                inflateInit2(&zs, 31);
                zs.next_in = img; zs.avail_in = (uInt)n; zs.next_out = hdr; zs.avail_out = hn;
                inflate(&zs, Z_SYNC_FLUSH);
                inflateEnd(&zs);
                img = hdr;
            }
            img[254] = img[255] = 0;
            rc = nii_read_mem(img, 352, "qform-only", 1, &q);
            free(buf);
        }
        if (rc == SEG_OK && q) {
            double qw = 0;
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 4; j++) qw = fmax(qw, fabs(q->affine[i][j] - A[i][j]) / (1 + fabs(A[i][j])));
            if (c->orthogonal)
                CHECK(qw < 1e-6 && pd_err < 1e-6, "%s: qform alone reproduces the affine (rel err %.2g), pixdim from norms",
                      c->name, qw);
            else
                CHECK(qw > 1e-3 && qw < 0.5 && pd_err < 1e-6,
                      "%s: sheared affine: qform is the nearest rotation (differs by %.2g), sform exact", c->name, qw);
        } else {
            CHECK(0, "%s: qform-only parse %s", c->name, seg_errmsg());
        }
        nii_free(q); nii_free(r); nii_free(v);
        char tmp[4300];
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        CHECK(access(tmp, F_OK) != 0, "%s: no temp file left behind", c->name);
    }

    /* arguments nii_write refuses */
    const int64_t dim[3] = { 2, 2, 2 };
    const double I[4][4] = { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } };
    NiiVolume *v;
    char path[4200];
    snprintf(path, sizeof path, "%s/refused.nii.gz", dir);
    if (nii_create(dim, NII_UINT8, I, &v) == SEG_OK) {
        CHECK(nii_write(path, v, 10) == SEG_EARG && strstr(seg_errmsg(), path), "gzip level 10 -> EARG");
        v->datatype = 1024;
        CHECK(nii_write(path, v, 1) == SEG_EARG, "unknown datatype -> EARG: %s", seg_errmsg());
        v->datatype = NII_UINT8;
        CHECK(nii_write("/nonexistent/dir/a.nii", v, 0) == SEG_EIO && strstr(seg_errmsg(), "/nonexistent/dir/a.nii"),
              "unwritable directory -> EIO: %s", seg_errmsg());
        CHECK(access(path, F_OK) != 0, "nothing written for refused calls");
        nii_free(v);
    }
    CHECK(nii_create(dim, 1024, I, &v) == SEG_EARG, "nii_create: unknown datatype -> EARG");
}

/* ---- the real example ----------------------------------------------------------------------- */

static void check_real(const char *fixtures)
{
    const char *shared = getenv("SEGKIT_SHARED") ? getenv("SEGKIT_SHARED") : "../shared";
    char dir[4200], path[4300], jpath[4300];
    snprintf(dir, sizeof dir, "%s/data/totalseg-example/s0000", shared);
    snprintf(jpath, sizeof jpath, "%s/real_example.json", fixtures);
    if (!fs_is_dir(dir) || !fs_is_file(jpath)) {
        T_SKIP("real example: %s (or %s) not present", dir, jpath);
        return;
    }
    cJSON *j = load_json(jpath), *e;
    NiiVolume *ct = NULL;
    cJSON_ArrayForEach(e, j) {
        snprintf(path, sizeof path, "%s/%s", dir, e->string);
        NiiVolume *v = NULL;
        int rc = nii_read(path, &v);
        CHECK(rc == SEG_OK, "%s: reads %s", e->string, rc ? seg_errmsg() : "");
        if (rc) continue;
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const size_t n = nii_nvox(v);
        double sum = 0, mn = INFINITY, mx = -INFINITY, wsum = 0;
        for (size_t i = 0; i < n; i++) {
            const double x = nii_value(v, i);
            sum += x; wsum += (double)(i % 1009) * x;
            mn = fmin(mn, x); mx = fmax(mx, x);
        }
        CHECK(v->dim[0] == jval(cJSON_GetArrayItem(shape, 0)) && v->dim[1] == jval(cJSON_GetArrayItem(shape, 1)) &&
              v->dim[2] == jval(cJSON_GetArrayItem(shape, 2)) && v->datatype == (int)jnum(e, "datatype") &&
              affine_diff_json(v->affine, cJSON_GetObjectItemCaseSensitive(e, "affine")) < 1e-5,
              "%s: %lldx%lldx%lld %s, affine as nibabel", e->string, (long long)v->dim[0], (long long)v->dim[1],
              (long long)v->dim[2], nii_dtype_name(v->datatype));
        CHECK(sum == jnum(e, "sum") && mn == jnum(e, "min") && mx == jnum(e, "max") && wsum == jnum(e, "index_weighted_sum"),
              "%s: sum %.0f min %g max %g weighted %.0f as nibabel", e->string, sum, mn, mx, wsum);
        if (!strcmp(e->string, "ct.nii.gz")) ct = v;
        else nii_free(v);
    }
    cJSON_Delete(j);
    /* every mask present reads with the CT's geometry */
    snprintf(path, sizeof path, "%s/segmentations", dir);
    DIR *d = opendir(path);
    int nmask = 0, nok = 0;
    struct dirent *de;
    while (d && ct && (de = readdir(d))) {
        if (!strstr(de->d_name, ".nii")) continue;
        char mp[4600];
        snprintf(mp, sizeof mp, "%s/%s", path, de->d_name);
        NiiVolume *m = NULL;
        nmask++;
        if (nii_read(mp, &m) == SEG_OK && !memcmp(m->dim, ct->dim, sizeof m->dim) &&
            !memcmp(m->affine, ct->affine, sizeof m->affine) && m->datatype == NII_UINT8)
            nok++;
        else
            printf("    %s: %s\n", de->d_name, seg_errmsg());
        nii_free(m);
    }
    if (d) closedir(d);
    CHECK(nmask > 0 && nok == nmask, "%d/%d masks read as uint8 with the CT's shape and affine", nok, nmask);
    nii_free(ct);
}

/* ---- bench ------------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The zlib floor for one file: read it whole, inflate it whole into a buffer of the size
 * its gzip trailer states. Returns decompressed bytes or 0. */
static size_t zlib_floor(const char *path, const uint8_t *pre, size_t pre_n)
{
    char *buf = (char *)pre;
    size_t n = pre_n;
    if (!pre && fs_read_all(path, &buf, &n, 0) < 0) return 0;
    const uint8_t *b = (const uint8_t *)buf;
    const size_t isize = (size_t)b[n - 4] | (size_t)b[n - 3] << 8 | (size_t)b[n - 2] << 16 | (size_t)b[n - 1] << 24;
    uint8_t *out = malloc(isize);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    inflateInit2(&zs, 15 + 32);
    zs.next_in = (Bytef *)b; zs.avail_in = (uInt)n; zs.next_out = out; zs.avail_out = (uInt)isize;
    const int zr = inflate(&zs, Z_FINISH);
    const size_t got = zs.total_out;
    inflateEnd(&zs);
    free(out);
    if (!pre) free(buf);
    return zr == Z_STREAM_END ? got : 0;
}

static int bench(const char *dir, int runs)
{
    char **files = NULL, path[4300];
    int nf = 0;
    snprintf(path, sizeof path, "%s/ct.nii.gz", dir);
    files = realloc(files, sizeof *files * (size_t)(nf + 1));
    files[nf++] = strdup(path);
    snprintf(path, sizeof path, "%s/segmentations", dir);
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!strstr(de->d_name, ".nii.gz")) continue;
        char *p = malloc(strlen(path) + strlen(de->d_name) + 2);
        sprintf(p, "%s/%s", path, de->d_name);
        files = realloc(files, sizeof *files * (size_t)(nf + 1));
        files[nf++] = p;
    }
    if (d) closedir(d);
    qsort(files + 1, (size_t)(nf - 1), sizeof *files, cmp_str);
    /* warm the page cache and keep the compressed bytes for the in-memory variant */
    char **mem = calloc((size_t)nf, sizeof *mem);
    size_t *mem_n = calloc((size_t)nf, sizeof *mem_n), bytes_in = 0, bytes_out = 0;
    for (int i = 0; i < nf; i++) {
        if (fs_read_all(files[i], &mem[i], &mem_n[i], 0) < 0) { fprintf(stderr, "%s\n", seg_errmsg()); return 1; }
        bytes_in += mem_n[i];
    }
    double *t_nii = calloc((size_t)runs, sizeof(double)), *t_zlib = calloc((size_t)runs, sizeof(double));
    double *t_zmem = calloc((size_t)runs, sizeof(double)), *t_nmem = calloc((size_t)runs, sizeof(double));
    double *t_write = calloc((size_t)runs, sizeof(double)), *t_deflate = calloc((size_t)runs, sizeof(double));
    double *t_dfile = calloc((size_t)runs, sizeof(double));
    NiiVolume **vols = calloc((size_t)nf, sizeof *vols);
    char tmpdir[] = "/tmp/nii_bench.XXXXXX";
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    for (int r = -1; r < runs; r++) {   /* r = -1: warm-up */
        double t0 = util_now_s();
        size_t out = 0;
        for (int i = 0; i < nf; i++) {
            NiiVolume *v;
            if (nii_read(files[i], &v) < 0) { fprintf(stderr, "%s\n", seg_errmsg()); return 1; }
            out += nii_nvox(v) * (size_t)v->bytes_per_voxel;
            nii_free(v);
        }
        double t1 = util_now_s();
        size_t zout = 0;
        for (int i = 0; i < nf; i++) zout += zlib_floor(files[i], NULL, 0);
        double t2 = util_now_s();
        for (int i = 0; i < nf; i++) zlib_floor(NULL, (const uint8_t *)mem[i], mem_n[i]);
        double t3 = util_now_s();
        for (int i = 0; i < nf; i++) {
            nii_free(vols[i]);
            if (nii_read_mem(mem[i], mem_n[i], files[i], 0, &vols[i]) < 0) { fprintf(stderr, "%s\n", seg_errmsg()); return 1; }
        }
        double t4 = util_now_s();
        for (int i = 0; i < nf; i++) {
            const char *base = strrchr(files[i], '/') + 1;
            char op[4400];
            snprintf(op, sizeof op, "%s/%s", tmpdir, base);
            if (nii_write(op, vols[i], 1) < 0) { fprintf(stderr, "%s\n", seg_errmsg()); return 1; }
        }
        double t5 = util_now_s();
        for (int i = 0; i < nf; i++) {   /* the deflate floor: same data, level 1, into memory */
            const size_t nb = nii_nvox(vols[i]) * (size_t)vols[i]->bytes_per_voxel;
            uLongf cap = compressBound(nb);
            uint8_t *o = malloc(cap);
            z_stream zs;
            memset(&zs, 0, sizeof zs);
            deflateInit2(&zs, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
            zs.next_in = vols[i]->data; zs.avail_in = (uInt)nb; zs.next_out = o; zs.avail_out = (uInt)cap;
            deflate(&zs, Z_FINISH);
            deflateEnd(&zs);
            free(o);
        }
        double t6 = util_now_s();
        for (int i = 0; i < nf; i++) {   /* ... and written to a file in place (no temp + rename) */
            const size_t nb = nii_nvox(vols[i]) * (size_t)vols[i]->bytes_per_voxel;
            uLongf cap = compressBound(nb);
            uint8_t *o = malloc(cap);
            z_stream zs;
            memset(&zs, 0, sizeof zs);
            deflateInit2(&zs, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
            zs.next_in = vols[i]->data; zs.avail_in = (uInt)nb; zs.next_out = o; zs.avail_out = (uInt)cap;
            deflate(&zs, Z_FINISH);
            char op[4400];
            snprintf(op, sizeof op, "%s/%s.raw", tmpdir, strrchr(files[i], '/') + 1);
            FILE *f = fopen(op, "wb");
            if (!f || fwrite(o, 1, zs.total_out, f) != zs.total_out) { perror(op); return 1; }
            fclose(f);
            deflateEnd(&zs);
            free(o);
        }
        double t7 = util_now_s();
        if (zout < out || zout - out > (size_t)nf * 65536) {   /* zlib's output also holds the headers */
            fprintf(stderr, "size mismatch: voxels %zu, whole files %zu\n", out, zout);
            return 1;
        }
        bytes_out = out;
        if (r >= 0) {
            t_nii[r] = t1 - t0; t_zlib[r] = t2 - t1; t_zmem[r] = t3 - t2; t_nmem[r] = t4 - t3;
            t_write[r] = t5 - t4; t_deflate[r] = t6 - t5; t_dfile[r] = t7 - t6;
        }
    }
    for (int i = 0; i < nf; i++) {
        const char *base = strrchr(files[i], '/') + 1;
        char op[4400];
        snprintf(op, sizeof op, "%s/%s", tmpdir, base);
        unlink(op);
        snprintf(op, sizeof op, "%s/%s.raw", tmpdir, base);
        unlink(op);
        nii_free(vols[i]);
        free(files[i]);
        free(mem[i]);
    }
    rmdir(tmpdir);
    const double a = median(t_nii, runs), b = median(t_zlib, runs), c = median(t_zmem, runs), e = median(t_nmem, runs);
    const double w = median(t_write, runs), f = median(t_deflate, runs), g = median(t_dfile, runs);
    printf("{\"files\": %d, \"compressed_bytes\": %zu, \"voxel_bytes\": %zu, \"runs\": %d,\n"
           " \"nii_read_ms\": %.2f, \"zlib_read_inflate_ms\": %.2f, \"ratio_nii_read_vs_zlib\": %.3f,\n"
           " \"nii_read_mem_ms\": %.2f, \"zlib_inflate_mem_ms\": %.2f, \"ratio_mem\": %.3f,\n"
           " \"nii_write_gz1_ms\": %.2f, \"zlib_deflate1_mem_ms\": %.2f, \"ratio_write_vs_deflate\": %.3f,\n"
           " \"zlib_deflate1_fwrite_ms\": %.2f, \"ratio_write_vs_deflate_fwrite\": %.3f}\n",
           nf, bytes_in, bytes_out, runs, a * 1e3, b * 1e3, a / b, e * 1e3, c * 1e3, e / c, w * 1e3, f * 1e3, w / f,
           g * 1e3, w / g);
    free(files); free(mem); free(mem_n); free(vols);
    free(t_nii); free(t_zlib); free(t_zmem); free(t_nmem); free(t_write); free(t_deflate); free(t_dfile);
    return 0;
}

/* ---- main ---------------------------------------------------------------------------------------- */

static int rm_written(const char *dir)
{
    for (size_t k = 0; k < N_CASES; k++) {
        char p[4300];
        snprintf(p, sizeof p, "%s/%s", dir, g_cases[k].name);
        unlink(p);
    }
    return rmdir(dir);
}

int main(int argc, char **argv)
{
    g_self = argv[0];
    if (argc == 3 && !strcmp(argv[1], "--read-rc")) {   /* child of check_limit */
        NiiVolume *v;
        const int rc = nii_read(argv[2], &v);
        nii_free(v);
        return -rc;
    }
    if (argc >= 3 && !strcmp(argv[1], "--bench")) return bench(argv[2], argc > 3 ? atoi(argv[3]) : 7);
    if (argc == 3 && !strcmp(argv[1], "--write-dir")) {
        if (fs_mkdirs(argv[2]) < 0) { fprintf(stderr, "%s\n", seg_errmsg()); return 1; }
        check_write(argv[2], 1);
        return t_report("test_nii --write-dir");
    }
    const char *dir = argc > 1 ? argv[1] : "tests/fixtures/nii";
    DIR *d = opendir(dir);
    if (!d) { printf("FAIL cannot open fixture dir %s (run from the repo root)\n", dir); return 1; }
    char **names = NULL;
    int nn = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const size_t l = strlen(de->d_name);
        if (l > 5 && !strcmp(de->d_name + l - 5, ".json") && strcmp(de->d_name, "bad.json") &&
            strcmp(de->d_name, "real_example.json")) {
            names = realloc(names, sizeof *names * (size_t)(nn + 1));
            names[nn++] = strdup(de->d_name);
        }
    }
    closedir(d);
    qsort(names, (size_t)nn, sizeof *names, cmp_str);
    CHECK(nn >= 40, "%d good fixtures in %s", nn, dir);
    for (int i = 0; i < nn; i++) { check_fixture(dir, names[i]); free(names[i]); }
    free(names);
    check_bad(dir);
    check_limit(dir);
    check_gzip_tail(dir);
    char tmp[] = "/tmp/test_nii.XXXXXX";
    if (mkdtemp(tmp)) {
        check_write(tmp, 0);
        CHECK(rm_written(tmp) == 0, "temp dir %s cleaned up", tmp);
    } else {
        CHECK(0, "mkdtemp: %s", strerror(errno));
    }
    check_real(dir);
    return t_report("test_nii");
}
