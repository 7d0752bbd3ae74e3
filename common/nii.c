/* common/nii.c : NIfTI-1/2 reading (.nii, .nii.gz), header geometry, the voxel limit,
 * nii_create/nii_value. Writing is in nii_write.c.
 *
 * Hot path: a .nii.gz is read with one read() and inflated by zlib straight into the
 * final voxel buffer (header into a small buffer first, then the same stream continues
 * into the data); a .nii is pread() straight into the voxel buffer. Big-endian data is
 * swapped in place in one pass afterwards. */
#define _POSIX_C_SOURCE 200809L
#include "nii.h"
#include "err.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define NII1_HDR 348
#define NII2_HDR 540
/* Bytes of a NIfTI file before the extension region ends at the minimum vox_offset. */
#define NII1_MIN_OFFSET 352
#define NII2_MIN_OFFSET 544
/* Extensions between the header and the data are skipped; in a .gz they must be inflated
 * and discarded, so a header claiming a huge gap is refused rather than honoured. */
#define NII_MAX_GAP ((int64_t)256 << 20)
/* How much of a .nii.gz nii_read_header reads first (the header inflates from far less). */
#define NII_GZ_PREFIX ((size_t)128 << 10)
/* After the data is complete, at most this much further output is inflated looking for
 * the gzip trailer (to verify the CRC); beyond that the rest is ignored unread. */
#define NII_GZ_TAIL ((size_t)64 << 10)

/* ---- voxel limit ------------------------------------------------------------- */

static _Atomic int64_t g_max_voxels = NII_DEFAULT_MAX_VOXELS;
static pthread_once_t g_limit_once = PTHREAD_ONCE_INIT;

/* SEGKIT_MAX_VOXELS is read once; a value that is not a positive number is ignored. */
static void limit_from_env(void)
{
    const char *s = getenv("SEGKIT_MAX_VOXELS");
    if (!s || !*s) return;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || *end || !(d >= 1) || d > 4.6e18 || d != floor(d)) return;
    atomic_store(&g_max_voxels, (int64_t)d);
}

static int64_t max_voxels(void)
{
    pthread_once(&g_limit_once, limit_from_env);
    return atomic_load(&g_max_voxels);
}

int64_t nii_set_max_voxels(int64_t n)
{
    pthread_once(&g_limit_once, limit_from_env);   /* so a later first read cannot undo this */
    return atomic_exchange(&g_max_voxels, n);
}

static int check_limit(const char *name, const int64_t dim[3], int64_t nvox)
{
    const int64_t lim = max_voxels();
    if (nvox <= lim) return SEG_OK;
    return seg_err(SEG_ENOMEM, "%s: %lldx%lldx%lld = %lld voxels, over the limit of %lld voxels "
                   "(raise it with SEGKIT_MAX_VOXELS=N or segprep --max-voxels N)", name,
                   (long long)dim[0], (long long)dim[1], (long long)dim[2], (long long)nvox, (long long)lim);
}

/* ---- datatypes ------------------------------------------------------------------ */

int nii_dtype_size(int datatype)
{
    switch (datatype) {
    case NII_UINT8: case NII_INT8: return 1;
    case NII_INT16: case NII_UINT16: return 2;
    case NII_INT32: case NII_UINT32: case NII_FLOAT32: return 4;
    case NII_FLOAT64: return 8;
    default: return 0;
    }
}

const char *nii_dtype_name(int datatype)
{
    switch (datatype) {
    case NII_UINT8: return "uint8";
    case NII_INT8: return "int8";
    case NII_INT16: return "int16";
    case NII_UINT16: return "uint16";
    case NII_INT32: return "int32";
    case NII_UINT32: return "uint32";
    case NII_FLOAT32: return "float32";
    case NII_FLOAT64: return "float64";
    default: return "unknown";
    }
}

/* ---- header fields (read at an offset, optionally byte-swapped) -------------------- */

static uint16_t get16(const uint8_t *p, int sw) { uint16_t x; memcpy(&x, p, 2); return sw ? __builtin_bswap16(x) : x; }
static uint32_t get32(const uint8_t *p, int sw) { uint32_t x; memcpy(&x, p, 4); return sw ? __builtin_bswap32(x) : x; }
static uint64_t get64(const uint8_t *p, int sw) { uint64_t x; memcpy(&x, p, 8); return sw ? __builtin_bswap64(x) : x; }
static int16_t  geti16(const uint8_t *p, int sw) { return (int16_t)get16(p, sw); }
static int32_t  geti32(const uint8_t *p, int sw) { return (int32_t)get32(p, sw); }
static int64_t  geti64(const uint8_t *p, int sw) { return (int64_t)get64(p, sw); }
static double   getf32(const uint8_t *p, int sw) { uint32_t u = get32(p, sw); float f; memcpy(&f, &u, 4); return f; }
static double   getf64(const uint8_t *p, int sw) { uint64_t u = get64(p, sw); double d; memcpy(&d, &u, 8); return d; }

/* What the parser learned about where the data is. */
typedef struct {
    int     swap;        /* file byte order differs from the host's */
    size_t  hdr_size;    /* 348 or 540 */
    int64_t vox_offset;
    size_t  nbytes;      /* voxel data bytes */
} NiiLayout;

/* Version and byte order from sizeof_hdr (needs 4 bytes). */
static int sniff(const uint8_t *h, size_t n, const char *name, int *version, int *swap)
{
    if (n < 4) return seg_err(SEG_EFORMAT, "%s: %zu bytes, too short for a NIfTI header", name, n);
    const int32_t s = geti32(h, 0), t = geti32(h, 1);
    if (s == NII1_HDR || t == NII1_HDR) { *version = 1; *swap = s != NII1_HDR; return SEG_OK; }
    if (s == NII2_HDR || t == NII2_HDR) { *version = 2; *swap = s != NII2_HDR; return SEG_OK; }
    return seg_err(SEG_EFORMAT, "%s: not a NIfTI file (sizeof_hdr is %d, expected 348 or 540)", name, s);
}

/* Quaternion (b, c, d), offsets, voxel sizes and qfac -> affine, as the NIfTI-1 standard
 * defines it (nifti1.h, "METHOD 2"): a = sqrt(1 - b^2 - c^2 - d^2); when that is
 * (nearly) zero the quaternion is renormalised and a = 0 (a 180 degree rotation).
 * Non-positive voxel sizes count as 1; qfac < 0 negates the third column. */
static void qform_affine(double b, double c, double d, const double off[3], const double pd[3],
                         double qfac, double A[4][4])
{
    double a = 1.0 - (b * b + c * c + d * d);
    if (a < 1e-7) {
        const double r = 1.0 / sqrt(b * b + c * c + d * d);
        b *= r; c *= r; d *= r; a = 0.0;
    } else {
        a = sqrt(a);
    }
    const double xd = pd[0] > 0 ? pd[0] : 1.0, yd = pd[1] > 0 ? pd[1] : 1.0;
    double zd = pd[2] > 0 ? pd[2] : 1.0;
    if (qfac < 0) zd = -zd;
    A[0][0] = (a * a + b * b - c * c - d * d) * xd;
    A[0][1] = 2.0 * (b * c - a * d) * yd;
    A[0][2] = 2.0 * (b * d + a * c) * zd;
    A[1][0] = 2.0 * (b * c + a * d) * xd;
    A[1][1] = (a * a + c * c - b * b - d * d) * yd;
    A[1][2] = 2.0 * (c * d - a * b) * zd;
    A[2][0] = 2.0 * (b * d - a * c) * xd;
    A[2][1] = 2.0 * (c * d + a * b) * yd;
    A[2][2] = (a * a + d * d - c * c - b * b) * zd;
    for (int r = 0; r < 3; r++) A[r][3] = off[r];
    A[3][0] = A[3][1] = A[3][2] = 0.0; A[3][3] = 1.0;
}

/* Parse and validate a header image h[0..n) into v (no data) and L. Returns SEG_EFORMAT
 * for anything malformed, SEG_EIO when n is shorter than the header, SEG_ENOMEM over the
 * voxel limit. */
static int parse_header(const uint8_t *h, size_t n, const char *name, NiiVolume *v, NiiLayout *L)
{
    int ver, sw;
    TRY(sniff(h, n, name, &ver, &sw));
    const size_t hs = ver == 1 ? NII1_HDR : NII2_HDR;
    if (n < hs)
        return seg_err(SEG_EIO, "%s: truncated NIfTI-%d header (got %zu of %zu bytes)", name, ver, n, hs);

    int64_t dim[8];
    double pixdim[8], slope, inter, qb, qc, qd, qoff[3], srow[3][4];
    int datatype, qcode, scode;
    int64_t vox_offset;
    if (ver == 1) {
        if (memcmp(h + 344, "n+1\0", 4) != 0) {
            if (memcmp(h + 344, "ni1\0", 4) == 0)
                return seg_err(SEG_EFORMAT, "%s: a .hdr/.img pair header (magic ni1); only single-file .nii is supported", name);
            return seg_err(SEG_EFORMAT, "%s: bad NIfTI-1 magic (expected \"n+1\")", name);
        }
        for (int i = 0; i < 8; i++) dim[i] = geti16(h + 40 + 2 * i, sw);
        datatype = geti16(h + 70, sw);
        for (int i = 0; i < 8; i++) pixdim[i] = getf32(h + 76 + 4 * i, sw);
        const double vo = getf32(h + 108, sw);
        if (!(vo >= NII1_MIN_OFFSET) || vo > 9e15)
            return seg_err(SEG_EFORMAT, "%s: vox_offset %g is invalid (a single-file NIfTI-1 needs >= 352)", name, vo);
        vox_offset = (int64_t)vo;
        slope = getf32(h + 112, sw);
        inter = getf32(h + 116, sw);
        qcode = geti16(h + 252, sw);
        scode = geti16(h + 254, sw);
        qb = getf32(h + 256, sw); qc = getf32(h + 260, sw); qd = getf32(h + 264, sw);
        for (int i = 0; i < 3; i++) qoff[i] = getf32(h + 268 + 4 * i, sw);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 4; c++) srow[r][c] = getf32(h + 280 + 16 * r + 4 * c, sw);
    } else {
        if (memcmp(h + 4, "n+2\0\r\n\032\n", 8) != 0) {
            if (memcmp(h + 4, "ni2\0", 4) == 0)
                return seg_err(SEG_EFORMAT, "%s: a .hdr/.img pair header (magic ni2); only single-file .nii is supported", name);
            return seg_err(SEG_EFORMAT, "%s: bad NIfTI-2 magic (expected \"n+2\\0\\r\\n\\032\\n\")", name);
        }
        datatype = geti16(h + 12, sw);
        for (int i = 0; i < 8; i++) dim[i] = geti64(h + 16 + 8 * i, sw);
        for (int i = 0; i < 8; i++) pixdim[i] = getf64(h + 104 + 8 * i, sw);
        vox_offset = geti64(h + 168, sw);
        if (vox_offset < NII2_MIN_OFFSET)
            return seg_err(SEG_EFORMAT, "%s: vox_offset %lld is invalid (a single-file NIfTI-2 needs >= 544)",
                           name, (long long)vox_offset);
        slope = getf64(h + 176, sw);
        inter = getf64(h + 184, sw);
        qcode = geti32(h + 344, sw);
        scode = geti32(h + 348, sw);
        qb = getf64(h + 352, sw); qc = getf64(h + 360, sw); qd = getf64(h + 368, sw);
        for (int i = 0; i < 3; i++) qoff[i] = getf64(h + 376 + 8 * i, sw);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 4; c++) srow[r][c] = getf64(h + 400 + 32 * r + 8 * c, sw);
    }

    const int bpv = nii_dtype_size(datatype);
    if (!bpv)
        return seg_err(SEG_EFORMAT, "%s: unknown datatype %d (supported: uint8 int8 int16 uint16 int32 uint32 "
                       "float32 float64)", name, datatype);
    if (dim[0] < 1 || dim[0] > 7)
        return seg_err(SEG_EFORMAT, "%s: dim[0]=%lld, must be 1..7", name, (long long)dim[0]);
    for (int i = 1; i <= dim[0]; i++) {
        if (dim[i] < 1) return seg_err(SEG_EFORMAT, "%s: dim[%d]=%lld, must be >= 1", name, i, (long long)dim[i]);
        if (i >= 4 && dim[i] != 1)
            return seg_err(SEG_EFORMAT, "%s: dim[%d]=%lld; only 1D..3D volumes are supported (dims 4..7 must be 1)",
                           name, i, (long long)dim[i]);
    }
    for (int i = 0; i < 3; i++) v->dim[i] = i < dim[0] ? dim[i + 1] : 1;
    int64_t nvox;
    if (__builtin_mul_overflow(v->dim[0], v->dim[1], &nvox) || __builtin_mul_overflow(nvox, v->dim[2], &nvox))
        return seg_err(SEG_EFORMAT, "%s: dims %lldx%lldx%lld overflow", name,
                       (long long)v->dim[0], (long long)v->dim[1], (long long)v->dim[2]);
    TRY(check_limit(name, v->dim, nvox));
    size_t nbytes;
    if (__builtin_mul_overflow((size_t)nvox, (size_t)bpv, &nbytes))
        return seg_err(SEG_ENOMEM, "%s: %lld voxels of %d bytes do not fit in memory", name, (long long)nvox, bpv);
    uint64_t end;
    if (__builtin_add_overflow((uint64_t)vox_offset, (uint64_t)nbytes, &end) || end > (uint64_t)INT64_MAX)
        return seg_err(SEG_ENOMEM, "%s: %zu data bytes at offset %lld do not fit in a file", name, nbytes,
                       (long long)vox_offset);
    if (vox_offset - (int64_t)(ver == 1 ? NII1_MIN_OFFSET : NII2_MIN_OFFSET) > NII_MAX_GAP)
        return seg_err(SEG_EFORMAT, "%s: vox_offset %lld leaves an implausibly large extension area (over %lld bytes)",
                       name, (long long)vox_offset, (long long)NII_MAX_GAP);

    /* nifti1_io's rule: a zero or non-finite voxel size counts as 1 */
    for (int i = 1; i <= 3; i++) {
        if (pixdim[i] == 0 || !isfinite(pixdim[i])) pixdim[i] = 1.0;
        v->pixdim[i - 1] = fabs(pixdim[i]);
    }
    if (slope == 0 || !isfinite(slope)) { slope = 1.0; inter = 0.0; }
    else if (!isfinite(inter)) inter = 0.0;

    double (*A)[4] = v->affine;
    memset(v->affine, 0, sizeof v->affine);
    A[3][3] = 1.0;
    if (scode > 0) {
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 4; c++) A[r][c] = srow[r][c];
    } else if (qcode > 0) {
        qform_affine(qb, qc, qd, qoff, pixdim + 1, pixdim[0], A);
    } else {
        for (int i = 0; i < 3; i++) A[i][i] = v->pixdim[i];
    }
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            if (!isfinite(A[r][c]))
                return seg_err(SEG_EFORMAT, "%s: non-finite %s affine", name, scode > 0 ? "sform" : "qform");

    v->sform_code = scode;
    v->qform_code = qcode;
    v->datatype = datatype;
    v->bytes_per_voxel = bpv;
    v->slope = slope;
    v->inter = inter;
    v->version = ver;
    v->data = NULL;
    L->swap = sw;
    L->hdr_size = hs;
    L->vox_offset = vox_offset;
    L->nbytes = nbytes;
    return SEG_OK;
}

/* In-place byte swap of n elements of size bpv (2, 4 or 8). */
static void swap_data(void *data, size_t n, int bpv)
{
    if (bpv == 2) {
        uint16_t *p = data;
        for (size_t i = 0; i < n; i++) p[i] = __builtin_bswap16(p[i]);
    } else if (bpv == 4) {
        uint32_t *p = data;
        for (size_t i = 0; i < n; i++) p[i] = __builtin_bswap32(p[i]);
    } else if (bpv == 8) {
        uint64_t *p = data;
        for (size_t i = 0; i < n; i++) p[i] = __builtin_bswap64(p[i]);
    }
}

static int alloc_data(NiiVolume *v, const NiiLayout *L, const char *name)
{
    /* at least 1 byte so malloc(0) never returns NULL for a valid header */
    v->data = malloc(L->nbytes ? L->nbytes : 1);
    if (!v->data)
        return seg_err(SEG_ENOMEM, "%s: cannot allocate %zu bytes for %lldx%lldx%lld %s voxels", name, L->nbytes,
                       (long long)v->dim[0], (long long)v->dim[1], (long long)v->dim[2], nii_dtype_name(v->datatype));
    return SEG_OK;
}

/* ---- gzip ------------------------------------------------------------------------ */

typedef struct {
    z_stream       zs;
    const uint8_t *in;       /* unread compressed input */
    size_t         in_left;
    size_t         out_total; /* decompressed bytes produced so far (all members) */
    int            ended;     /* the current gzip member has ended */
    const char    *name;
} GzIn;

static int gz_open(GzIn *g, const void *buf, size_t n, const char *name)
{
    memset(g, 0, sizeof *g);
    g->in = buf; g->in_left = n; g->name = name;
    int zr = inflateInit2(&g->zs, 15 + 32);
    if (zr != Z_OK)
        return seg_err(zr == Z_MEM_ERROR ? SEG_ENOMEM : SEG_EIO, "%s: inflateInit2 failed (%d)", name, zr);
    return SEG_OK;
}

/* Inflate up to want bytes into dst; cross: go on into a following gzip member (a
 * concatenated .gz), else stop at the member's end. *got is what was produced; fewer than
 * want means the input ran out or the stream ended. A corrupt stream or a bad CRC is SEG_EIO. */
static int gz_pull(GzIn *g, void *dst, size_t want, size_t *got, int cross)
{
    uint8_t *out = dst;
    size_t done = 0;
    while (done < want) {
        if (g->ended) {
            if (!cross || g->in_left < 2 || g->in[0] != 0x1f || g->in[1] != 0x8b) break;   /* trailing bytes: ignored */
            if (inflateReset(&g->zs) != Z_OK) break;
            g->ended = 0;
        }
        const size_t ain = g->in_left < UINT_MAX ? g->in_left : UINT_MAX;
        const size_t aout = want - done < UINT_MAX ? want - done : UINT_MAX;
        g->zs.next_in = (Bytef *)g->in;
        g->zs.avail_in = (uInt)ain;
        g->zs.next_out = out + done;
        g->zs.avail_out = (uInt)aout;
        const int zr = inflate(&g->zs, Z_NO_FLUSH);
        const size_t used = ain - g->zs.avail_in, made = aout - g->zs.avail_out;
        g->in += used; g->in_left -= used;
        done += made; g->out_total += made;
        if (zr == Z_STREAM_END) { g->ended = 1; continue; }
        if (zr == Z_OK) continue;
        if (zr == Z_BUF_ERROR) break;   /* no progress possible: input exhausted */
        *got = done;
        if (zr == Z_MEM_ERROR) return seg_err(SEG_ENOMEM, "%s: out of memory while inflating", g->name);
        return seg_err(SEG_EIO, "%s: corrupt gzip data after %zu decompressed bytes (%s)", g->name, g->out_total,
                       g->zs.msg ? g->zs.msg : "inflate error");
    }
    *got = done;
    return SEG_OK;
}

/* The data is complete: read on to the member's end so its CRC and length are checked,
 * allowing at most NII_GZ_TAIL bytes of further output (never the whole rest of a bomb). */
static int gz_finish(GzIn *g)
{
    uint8_t scratch[4096];
    size_t extra = 0;
    while (!g->ended && extra < NII_GZ_TAIL) {
        size_t got;
        TRY(gz_pull(g, scratch, sizeof scratch, &got, 0));
        extra += got;
        if (!g->ended && got < sizeof scratch)
            return seg_err(SEG_EIO, "%s: truncated gzip data (the stream stops before its trailer, after %zu bytes)",
                           g->name, g->out_total);
    }
    return SEG_OK;
}

/* Skip n decompressed bytes (the extension area). */
static int gz_skip(GzIn *g, size_t n, size_t *skipped)
{
    uint8_t scratch[16384];
    *skipped = 0;
    while (*skipped < n) {
        const size_t want = n - *skipped < sizeof scratch ? n - *skipped : sizeof scratch;
        size_t got;
        TRY(gz_pull(g, scratch, want, &got, 1));
        *skipped += got;
        if (got < want) break;
    }
    return SEG_OK;
}

/* Parse a whole-or-prefix gzip image. complete: buf holds the whole file (so running out
 * of input means the file is truncated). Returns 1 (not an error) when a prefix was too
 * short for the header, so the caller can retry with the whole file. */
static int read_gz(const uint8_t *buf, size_t n, const char *name, int header_only, int complete, NiiVolume *v)
{
    GzIn g;
    NiiLayout L;
    uint8_t hdr[NII2_MIN_OFFSET];
    size_t got, skipped;
    TRY(gz_open(&g, buf, n, name));
    int rc = gz_pull(&g, hdr, NII1_MIN_OFFSET, &got, 1), ver = 0, sw;
    if (rc < 0) goto out;
    if (got == NII1_MIN_OFFSET && sniff(hdr, got, name, &ver, &sw) == SEG_OK && ver == 2) {
        size_t more;
        if ((rc = gz_pull(&g, hdr + got, NII2_MIN_OFFSET - got, &more, 1)) < 0) goto out;
        got += more;
    }
    const size_t need = ver == 2 ? NII2_MIN_OFFSET : NII1_MIN_OFFSET;
    if (got < need && !g.ended) {                   /* the compressed input ran out */
        if (!complete) { rc = 1; goto out; }
        if (!header_only || got < (ver == 2 ? NII2_HDR : NII1_HDR)) {
            rc = seg_err(SEG_EIO, "%s: truncated gzip data (got %zu of at least %zu header bytes)", name, got, need);
            goto out;
        }
    }
    if ((rc = parse_header(hdr, got, name, v, &L)) < 0) goto out;
    if (header_only) goto out;
    if (got < need) {
        rc = seg_err(SEG_EIO, "%s: truncated NIfTI data (got %zu of %lld bytes)", name, got,
                     (long long)L.vox_offset + (long long)L.nbytes);
        goto out;
    }
    if ((rc = gz_skip(&g, (size_t)L.vox_offset - got, &skipped)) < 0) goto out;
    if (skipped < (size_t)L.vox_offset - got) {
        rc = seg_err(SEG_EIO, "%s: truncated gzip data (got %zu of %lld bytes)", name, got + skipped,
                     (long long)L.vox_offset + (long long)L.nbytes);
        goto out;
    }
    if ((rc = alloc_data(v, &L, name)) < 0) goto out;
    if ((rc = gz_pull(&g, v->data, L.nbytes, &got, 1)) < 0) goto out;
    if (got < L.nbytes) {
        rc = seg_err(SEG_EIO, "%s: truncated gzip data (got %lld of %lld bytes)", name,
                     (long long)L.vox_offset + (long long)got, (long long)L.vox_offset + (long long)L.nbytes);
        goto out;
    }
    if ((rc = gz_finish(&g)) < 0) goto out;
    if (L.swap) swap_data(v->data, L.nbytes / (size_t)v->bytes_per_voxel, v->bytes_per_voxel);
out:
    inflateEnd(&g.zs);
    return rc;
}

/* ---- entry points ------------------------------------------------------------------ */

static int is_gzip(const uint8_t *b, size_t n) { return n >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

int nii_read_mem(const void *buf, size_t n, const char *name, int header_only, NiiVolume **out)
{
    *out = NULL;
    const uint8_t *b = buf;
    NiiVolume *v = calloc(1, sizeof *v);
    if (!v) return seg_err(SEG_ENOMEM, "%s: cannot allocate a volume", name);
    int rc;
    if (is_gzip(b, n)) {
        rc = read_gz(b, n, name, header_only, 1, v);
    } else {
        NiiLayout L;
        rc = parse_header(b, n, name, v, &L);
        if (rc == SEG_OK && !header_only) {
            const uint64_t end = (uint64_t)L.vox_offset + L.nbytes;
            if (end > n)
                rc = seg_err(SEG_EIO, "%s: truncated NIfTI data (got %zu of %llu bytes)", name, n, (unsigned long long)end);
            else if ((rc = alloc_data(v, &L, name)) == SEG_OK) {
                memcpy(v->data, b + L.vox_offset, L.nbytes);
                if (L.swap) swap_data(v->data, L.nbytes / (size_t)v->bytes_per_voxel, v->bytes_per_voxel);
            }
        }
    }
    if (rc < 0) { nii_free(v); return rc; }
    *out = v;
    return SEG_OK;
}

static int pread_all(int fd, void *dst, size_t n, off_t off, size_t *got)
{
    uint8_t *p = dst;
    *got = 0;
    while (*got < n) {
        const size_t chunk = n - *got < ((size_t)1 << 30) ? n - *got : ((size_t)1 << 30);
        const ssize_t r = pread(fd, p + *got, chunk, off + (off_t)*got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) break;
        *got += (size_t)r;
    }
    return 0;
}

uint64_t nii_hash(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    const uint64_t k = 0x9E3779B97F4A7C15ull;
    h ^= (uint64_t)n * k;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {   /* 8 bytes a step: xor, multiply, rotate */
        uint64_t x;
        memcpy(&x, b + i, 8);
        h = ((h ^ x) * k);
        h = (h << 31) | (h >> 33);
    }
    uint64_t t = 0;
    for (size_t j = 0; i < n; i++, j++) t |= (uint64_t)b[i] << (8 * j);
    h = (h ^ t) * k;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 32);
}

static int read_file(const char *path, int header_only, NiiVolume **out)
{
    *out = NULL;
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return seg_err(SEG_EIO, "%s: %s", path, strerror(errno));
    NiiVolume *v = NULL;
    uint8_t *buf = NULL;
    uint8_t head[NII2_MIN_OFFSET];
    size_t got;
    int rc, e;
    struct stat st;
    if (fstat(fd, &st) != 0) { rc = seg_err(SEG_EIO, "%s: %s", path, strerror(errno)); goto out; }
    if (!S_ISREG(st.st_mode)) { rc = seg_err(SEG_EIO, "%s: not a regular file", path); goto out; }
    const size_t size = (size_t)st.st_size;
    if ((e = pread_all(fd, head, sizeof head < size ? sizeof head : size, 0, &got)) < 0) {
        rc = seg_err(SEG_EIO, "%s: read failed: %s", path, strerror(-e));
        goto out;
    }
    if (is_gzip(head, got)) {
        /* header only: a prefix is enough (retry with the whole file if it was not) */
        size_t want = header_only && size > NII_GZ_PREFIX ? NII_GZ_PREFIX : size;
        for (;;) {
            if (!(buf = malloc(want ? want : 1))) { rc = seg_err(SEG_ENOMEM, "%s: cannot allocate %zu bytes", path, want); goto out; }
            if ((e = pread_all(fd, buf, want, 0, &got)) < 0) { rc = seg_err(SEG_EIO, "%s: read failed: %s", path, strerror(-e)); goto out; }
            if (got < want) { rc = seg_err(SEG_EIO, "%s: file shrank while reading (%zu of %zu bytes)", path, got, want); goto out; }
            if (!(v = calloc(1, sizeof *v))) { rc = seg_err(SEG_ENOMEM, "%s: cannot allocate a volume", path); goto out; }
            rc = read_gz(buf, want, path, header_only, want == size, v);
            if (rc >= 0 && !header_only) v->file_hash = nii_hash(0, buf, want);
            if (rc != 1) break;
            free(buf); buf = NULL; nii_free(v); v = NULL;
            want = size;
        }
        goto out;
    }
    if (!(v = calloc(1, sizeof *v))) { rc = seg_err(SEG_ENOMEM, "%s: cannot allocate a volume", path); goto out; }
    NiiLayout L;
    if ((rc = parse_header(head, got, path, v, &L)) < 0 || header_only) goto out;
    const uint64_t head_hash = nii_hash(0, head, got);
    const uint64_t end = (uint64_t)L.vox_offset + L.nbytes;
    if (end > size) {
        rc = seg_err(SEG_EIO, "%s: truncated NIfTI data (got %zu of %llu bytes)", path, size, (unsigned long long)end);
        goto out;
    }
    if ((rc = alloc_data(v, &L, path)) < 0) goto out;
    if ((e = pread_all(fd, v->data, L.nbytes, (off_t)L.vox_offset, &got)) < 0) {
        rc = seg_err(SEG_EIO, "%s: read failed: %s", path, strerror(-e));
        goto out;
    }
    if (got < L.nbytes) {
        rc = seg_err(SEG_EIO, "%s: truncated NIfTI data (got %llu of %llu bytes)", path,
                     (unsigned long long)(L.vox_offset + got), (unsigned long long)end);
        goto out;
    }
    v->file_hash = nii_hash(head_hash, v->data, L.nbytes);
    if (L.swap) swap_data(v->data, L.nbytes / (size_t)v->bytes_per_voxel, v->bytes_per_voxel);
out:
    close(fd);
    free(buf);
    if (rc < 0) { nii_free(v); return rc; }
    *out = v;
    return SEG_OK;
}

int nii_read(const char *path, NiiVolume **out) { return read_file(path, 0, out); }
int nii_read_header(const char *path, NiiVolume **out) { return read_file(path, 1, out); }

void nii_free(NiiVolume *v)
{
    if (!v) return;
    free(v->data);
    free(v);
}

size_t nii_nvox(const NiiVolume *v)
{
    return (size_t)v->dim[0] * (size_t)v->dim[1] * (size_t)v->dim[2];
}

double nii_value(const NiiVolume *v, size_t idx)
{
    double raw;
    switch (v->datatype) {
    case NII_UINT8:   raw = ((const uint8_t *)v->data)[idx]; break;
    case NII_INT8:    raw = ((const int8_t *)v->data)[idx]; break;
    case NII_INT16:   raw = ((const int16_t *)v->data)[idx]; break;
    case NII_UINT16:  raw = ((const uint16_t *)v->data)[idx]; break;
    case NII_INT32:   raw = ((const int32_t *)v->data)[idx]; break;
    case NII_UINT32:  raw = ((const uint32_t *)v->data)[idx]; break;
    case NII_FLOAT32: raw = ((const float *)v->data)[idx]; break;
    case NII_FLOAT64: raw = ((const double *)v->data)[idx]; break;
    default:          return NAN;
    }
    return raw * v->slope + v->inter;
}

int nii_create(const int64_t dim[3], int datatype, const double affine[4][4], NiiVolume **out)
{
    *out = NULL;
    const int bpv = nii_dtype_size(datatype);
    if (!bpv) return seg_err(SEG_EARG, "nii_create: unknown datatype %d", datatype);
    for (int i = 0; i < 3; i++)
        if (dim[i] < 1) return seg_err(SEG_EARG, "nii_create: dim[%d]=%lld, must be >= 1", i, (long long)dim[i]);
    int64_t nvox;
    if (__builtin_mul_overflow(dim[0], dim[1], &nvox) || __builtin_mul_overflow(nvox, dim[2], &nvox))
        return seg_err(SEG_EARG, "nii_create: dims %lldx%lldx%lld overflow", (long long)dim[0], (long long)dim[1],
                       (long long)dim[2]);
    TRY(check_limit("nii_create", dim, nvox));
    size_t nbytes;
    if (__builtin_mul_overflow((size_t)nvox, (size_t)bpv, &nbytes))
        return seg_err(SEG_ENOMEM, "nii_create: %lld voxels of %d bytes do not fit in memory", (long long)nvox, bpv);
    NiiVolume *v = calloc(1, sizeof *v);
    if (!v) return seg_err(SEG_ENOMEM, "nii_create: cannot allocate a volume");
    if (!(v->data = calloc(nbytes, 1))) {
        free(v);
        return seg_err(SEG_ENOMEM, "nii_create: cannot allocate %zu bytes for %lldx%lldx%lld %s voxels", nbytes,
                       (long long)dim[0], (long long)dim[1], (long long)dim[2], nii_dtype_name(datatype));
    }
    for (int i = 0; i < 3; i++) v->dim[i] = dim[i];
    memcpy(v->affine, affine, sizeof v->affine);
    for (int c = 0; c < 3; c++)
        v->pixdim[c] = sqrt(affine[0][c] * affine[0][c] + affine[1][c] * affine[1][c] + affine[2][c] * affine[2][c]);
    v->sform_code = v->qform_code = 1;
    v->datatype = datatype;
    v->bytes_per_voxel = bpv;
    v->slope = 1.0;
    v->inter = 0.0;
    v->version = 1;
    *out = v;
    return SEG_OK;
}
