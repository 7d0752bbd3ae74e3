/* common/cache_record.c : one slice record: a 32-byte little-endian header, the presence
 * bitmap, a zstd frame of the int16 image and a zstd frame of the present bit planes.
 * Layout (docs/cache_format.md):
 *   0 u32 magic 0x4C534B53 ("SKSL")   4 u16 version       6 u16 header bytes (32 + bitmap, 8-aligned)
 *   8 u16 size                        10 u16 channels     12 u16 present channels  14 u16 flags (0)
 *  16 u32 image frame bytes           20 u32 mask frame bytes
 *  24 u32 CRC-32 (zlib) of the whole record with these 4 bytes zeroed
 *  28 u32 mask voxels set             32 presence bitmap (bit c of byte c/8, LSB first)
 * Flag 1 (always set by this writer): the image frame holds the row-delta of the int16
 * pixels (d[0] = x[0], d[i] = x[i] - x[i-1] within a row, wrapping), byte-shuffled (all
 * low bytes, then all high bytes): 18% smaller than raw int16 at a lower zstd level. */
#include "cache.h"
#include "maskpack.h"
#include "err.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define REC_MAGIC   0x4C534B53u
#define REC_VERSION 1
#define REC_HDR     32
#define REC_FLAG_DELTA_SHUFFLE 1

/* Per-thread scratch for the image transform (grows, never shrinks; freed at thread exit). */
typedef struct Scratch { uint8_t *p; size_t n; } Scratch;
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *v)
{
    Scratch *s = v;
    free(s->p);
    free(s);
}

static void scratch_key_init(void) { pthread_key_create(&g_scratch_key, scratch_free); }

static uint8_t *scratch(size_t n)
{
    pthread_once(&g_scratch_once, scratch_key_init);
    Scratch *s = pthread_getspecific(g_scratch_key);
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) return NULL;
        if (pthread_setspecific(g_scratch_key, s) != 0) { free(s); return NULL; }
    }
    if (n > s->n) {
        uint8_t *p = realloc(s->p, n);
        if (!p) return NULL;
        s->p = p; s->n = n;
    }
    return s->p;
}

static void delta_shuffle(uint8_t *out, const int16_t *img, int size)
{
    const size_t n = (size_t)size * size;
    for (int r = 0; r < size; r++) {
        const int16_t *row = img + (size_t)r * size;
        uint16_t prev = 0;
        for (int c = 0; c < size; c++) {
            uint16_t v = (uint16_t)row[c], d = (uint16_t)(v - prev);
            prev = v;
            size_t i = (size_t)r * size + c;
            out[i] = (uint8_t)d;
            out[n + i] = (uint8_t)(d >> 8);
        }
    }
}

static void undelta_unshuffle(int16_t *img, const uint8_t *in, int size)
{
    const size_t n = (size_t)size * size;
    for (int r = 0; r < size; r++) {
        uint16_t acc = 0;
        for (int c = 0; c < size; c++) {
            size_t i = (size_t)r * size + c;
            acc = (uint16_t)(acc + (uint16_t)(in[i] | in[n + i] << 8));
            img[i] = (int16_t)acc;
        }
    }
}

static void put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static unsigned get16(const uint8_t *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static size_t header_bytes(int n_channels) { return REC_HDR + ((maskpack_bitmap_bytes(n_channels) + 7) & ~(size_t)7); }

static uint32_t record_crc(const uint8_t *rec, size_t n)
{
    static const uint8_t zero[4] = { 0 };
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, rec, 24);
    c = crc32(c, zero, 4);
    c = crc32_z(c, rec + 28, n - 28);
    return (uint32_t)c;
}

int cache_encode_slice(void *zctx, int level, int size, int n_channels, const int16_t *img,
                       const uint8_t *const *planes, CacheRecord *rec)
{
    ZSTD_CCtx *cctx = zctx;
    const size_t plane = maskpack_plane_bytes((size_t)size * size), img_bytes = (size_t)size * size * 2;
    const size_t hdr = header_bytes(n_channels);
    if (size <= 0 || size > 65535 || (size * size) % 8 || n_channels <= 0 || n_channels > 65535)
        return seg_err(SEG_EARG, "cache record: bad size %d or channel count %d", size, n_channels);
    int n_present = 0;
    int64_t n_set = 0;
    uint8_t *present = calloc(1, (size_t)n_channels);
    if (!present) return seg_err(SEG_ENOMEM, "cache record");
    for (int c = 0; c < n_channels; c++)
        if (planes[c] && maskpack_any(planes[c], plane)) {
            present[c] = 1; n_present++;
            n_set += maskpack_count(planes[c], plane);
        }
    size_t cap = hdr + ZSTD_compressBound(img_bytes) + ZSTD_compressBound((size_t)n_present * plane);
    uint8_t *out = calloc(1, cap);
    if (!out) { free(present); return seg_err(SEG_ENOMEM, "cache record: %zu bytes", cap); }
    uint8_t *tr = scratch(img_bytes);
    if (!tr) { free(present); free(out); return seg_err(SEG_ENOMEM, "cache record: scratch"); }
    delta_shuffle(tr, img, size);
    size_t zi = ZSTD_compressCCtx(cctx, out + hdr, cap - hdr, tr, img_bytes, level);
    if (ZSTD_isError(zi)) { free(present); free(out); return seg_err(SEG_EZSTD, "compress image: %s", ZSTD_getErrorName(zi)); }
    size_t zm = 0;
    if (n_present) {
        /* one frame over the present planes, fed plane by plane (they are not contiguous) */
        size_t r = ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only);
        if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
        if (!ZSTD_isError(r)) r = ZSTD_CCtx_setPledgedSrcSize(cctx, (unsigned long long)n_present * plane);
        ZSTD_outBuffer ob = { out + hdr + zi, cap - hdr - zi, 0 };
        int left = n_present;
        for (int c = 0; c < n_channels && !ZSTD_isError(r); c++) {
            if (!present[c]) continue;
            ZSTD_inBuffer ib = { planes[c], plane, 0 };
            ZSTD_EndDirective mode = --left == 0 ? ZSTD_e_end : ZSTD_e_continue;
            do { r = ZSTD_compressStream2(cctx, &ob, &ib, mode); }
            while (!ZSTD_isError(r) && (ib.pos < ib.size || (mode == ZSTD_e_end && r != 0)));
        }
        if (ZSTD_isError(r)) { free(present); free(out); return seg_err(SEG_EZSTD, "compress masks: %s", ZSTD_getErrorName(r)); }
        zm = ob.pos;
    }
    put32(out, REC_MAGIC); put16(out + 4, REC_VERSION); put16(out + 6, (unsigned)hdr);
    put16(out + 8, (unsigned)size); put16(out + 10, (unsigned)n_channels); put16(out + 12, (unsigned)n_present);
    put16(out + 14, REC_FLAG_DELTA_SHUFFLE); put32(out + 16, (uint32_t)zi); put32(out + 20, (uint32_t)zm);
    put32(out + 28, (uint32_t)(n_set > 0xffffffffLL ? 0xffffffffu : (uint32_t)n_set));
    for (int c = 0; c < n_channels; c++)
        if (present[c]) maskpack_set(out + REC_HDR, c);
    rec->size = hdr + zi + zm;
    put32(out + 24, record_crc(out, rec->size));
    rec->data = out;
    rec->n_set = n_set;
    free(present);
    return SEG_OK;
}

static int check(const void *recp, size_t n, int size, int n_channels, const char *what,
                 int *n_present, int64_t *n_set, int with_crc)
{
    const uint8_t *rec = recp;
    const size_t hdr = header_bytes(n_channels);
    if (n < REC_HDR || get32(rec) != REC_MAGIC)
        return seg_err(SEG_EFORMAT, "%s: not a slice record (bad magic or %zu bytes)", what, n);
    if (get16(rec + 4) != REC_VERSION)
        return seg_err(SEG_EFORMAT, "%s: record version %u, this build reads %d", what, get16(rec + 4), REC_VERSION);
    if (get16(rec + 6) != hdr || get16(rec + 8) != (unsigned)size || get16(rec + 10) != (unsigned)n_channels)
        return seg_err(SEG_EFORMAT, "%s: record header does not match the cache (size %u, channels %u)", what,
                       get16(rec + 8), get16(rec + 10));
    uint64_t zi = get32(rec + 16), zm = get32(rec + 20);
    if (n < hdr || (uint64_t)n != hdr + zi + zm)
        return seg_err(SEG_EFORMAT, "%s: record is %zu bytes, header says %llu", what, n, (unsigned long long)(hdr + zi + zm));
    if (with_crc && record_crc(rec, n) != get32(rec + 24))
        return seg_err(SEG_EFORMAT, "%s: checksum mismatch (corrupt record)", what);
    if (get16(rec + 14) & ~REC_FLAG_DELTA_SHUFFLE)
        return seg_err(SEG_EFORMAT, "%s: unknown record flags 0x%x", what, get16(rec + 14));
    int np = 0;
    for (int c = 0; c < n_channels; c++) np += maskpack_get(rec + REC_HDR, c);
    if (np != (int)get16(rec + 12) || (np == 0) != (zm == 0))
        return seg_err(SEG_EFORMAT, "%s: presence bitmap disagrees with the header", what);
    if (n_present) *n_present = np;
    if (n_set) *n_set = get32(rec + 28);
    return SEG_OK;
}

int cache_record_check(const void *rec, size_t n, int size, int n_channels, const char *what,
                       int *n_present, int64_t *n_set)
{
    return check(rec, n, size, n_channels, what, n_present, n_set, 1);
}

int cache_record_presence(const void *rec, size_t n, int size, int n_channels, const char *what, uint8_t *presence)
{
    TRY(check(rec, n, size, n_channels, what, NULL, NULL, 0));
    memcpy(presence, (const uint8_t *)rec + REC_HDR, maskpack_bitmap_bytes(n_channels));
    return SEG_OK;
}

int cache_record_decode(void *dctxp, const void *recp, size_t n, int size, int n_channels, const char *what,
                        int16_t *img, uint8_t *bits, uint8_t *presence, int zero_absent)
{
    ZSTD_DCtx *dctx = dctxp;
    const uint8_t *rec = recp;
    int np;
    TRY(cache_record_check(rec, n, size, n_channels, what, &np, NULL));
    const size_t hdr = header_bytes(n_channels), plane = maskpack_plane_bytes((size_t)size * size);
    const size_t img_bytes = (size_t)size * size * 2, zi = get32(rec + 16), zm = get32(rec + 20);
    const uint8_t *pres = rec + REC_HDR;
    if (presence) memcpy(presence, pres, maskpack_bitmap_bytes(n_channels));
    if (img) {
        const int shuffled = get16(rec + 14) & REC_FLAG_DELTA_SHUFFLE;
        uint8_t *dst = shuffled ? scratch(img_bytes) : (uint8_t *)img;
        if (!dst) return seg_err(SEG_ENOMEM, "%s: scratch", what);
        size_t r = ZSTD_decompressDCtx(dctx, dst, img_bytes, rec + hdr, zi);
        if (ZSTD_isError(r)) return seg_err(SEG_EZSTD, "%s: image: %s", what, ZSTD_getErrorName(r));
        if (r != img_bytes) return seg_err(SEG_EFORMAT, "%s: image is %zu bytes, expected %zu", what, r, img_bytes);
        if (shuffled) undelta_unshuffle(img, dst, size);
    }
    if (!bits) return SEG_OK;
    /* stream the mask frame straight into each present channel's plane */
    size_t r = ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
    if (ZSTD_isError(r)) return seg_err(SEG_EZSTD, "%s: %s", what, ZSTD_getErrorName(r));
    ZSTD_inBuffer ib = { rec + hdr + zi, zm, 0 };
    for (int c = 0; c < n_channels; c++) {
        uint8_t *dst = bits + (size_t)c * plane;
        if (!maskpack_get(pres, c)) {
            if (zero_absent) memset(dst, 0, plane);
            continue;
        }
        ZSTD_outBuffer ob = { dst, plane, 0 };
        while (ob.pos < ob.size) {
            size_t before_in = ib.pos, before_out = ob.pos;
            r = ZSTD_decompressStream(dctx, &ob, &ib);
            if (ZSTD_isError(r)) return seg_err(SEG_EZSTD, "%s: masks: %s", what, ZSTD_getErrorName(r));
            if (ib.pos == before_in && ob.pos == before_out)
                return seg_err(SEG_EFORMAT, "%s: mask data ends early (channel %d)", what, c);
        }
    }
    (void)np;
    return SEG_OK;
}
