/* common/maskpack.h : the packed mask layout every stage shares (segprep writes it into the
 * cache, the loader batches it, the loss and Dice counts read it, segeval predicts and scores
 * with it). This header is the one description of it:
 *
 *   plane      one binary mask of npx pixels in maskpack_plane_bytes(npx) = (npx + 7) / 8
 *              bytes; pixel p is bit (p & 7) of byte (p >> 3), least significant bit first.
 *              (Slice planes are size*size pixels, size a multiple of 8, so size*size/8 bytes.)
 *   planes     a batch of N samples x C channels: sample n, channel c is the plane at
 *              bits + (n*C + c) * plane_bytes (maskpack_plane).
 *   presence   per sample, maskpack_bitmap_bytes(C) = (C + 7) / 8 bytes; bit c (same bit
 *              order) is set when channel c's plane holds a set pixel. A plane whose presence
 *              bit is clear is empty by definition and its bytes may be stale.
 *   labelled   same layout as presence; bit c set when channel c has a mask in that sample's
 *              subject (partly labelled subjects, cache format 2).
 *
 * Bit indices are size_t (pixels) or int (channels); every helper is a plain function over
 * caller-owned bytes, nothing allocates. common/unet*.c, common/nn/ and common/gpu/ still
 * read the layout with their own inline code (same layout). */
#ifndef SEG_MASKPACK_H
#define SEG_MASKPACK_H
#include <stddef.h>
#include <stdint.h>

/* Bytes of a plane of npx pixels, and of a presence/labelled bitmap of C channels. */
static inline size_t maskpack_plane_bytes(size_t npx) { return (npx + 7) / 8; }
static inline size_t maskpack_bitmap_bytes(int C) { return ((size_t)C + 7) / 8; }

/* Bit i of a plane or a bitmap (pixel i, or channel i). */
static inline int  maskpack_get(const uint8_t *bits, size_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }
static inline void maskpack_set(uint8_t *bits, size_t i) { bits[i >> 3] |= (uint8_t)(1u << (i & 7)); }
static inline void maskpack_clear(uint8_t *bits, size_t i) { bits[i >> 3] &= (uint8_t)~(1u << (i & 7)); }

/* Plane of sample n, channel c in a batch of C channels. */
static inline uint8_t *maskpack_plane(uint8_t *bits, int n, int C, int c, size_t plane_bytes)
{
    return bits + ((size_t)n * (size_t)C + (size_t)c) * plane_bytes;
}
static inline const uint8_t *maskpack_cplane(const uint8_t *bits, int n, int C, int c, size_t plane_bytes)
{
    return bits + ((size_t)n * (size_t)C + (size_t)c) * plane_bytes;
}
/* Sample n's presence (or labelled) bitmap in a batch of C channels. */
static inline uint8_t *maskpack_bitmap(uint8_t *bitmaps, int n, int C) { return bitmaps + (size_t)n * maskpack_bitmap_bytes(C); }
static inline const uint8_t *maskpack_cbitmap(const uint8_t *bitmaps, int n, int C)
{
    return bitmaps + (size_t)n * maskpack_bitmap_bytes(C);
}

/* Pack npx bytes (non-zero = set) into plane (maskpack_plane_bytes(npx), overwritten).
 * Returns the number of set pixels. */
size_t  maskpack_pack(uint8_t *plane, const uint8_t *src, size_t npx);
/* Pack the threshold v[p] > t of npx floats into plane (overwritten). Returns 1 when any
 * pixel is set. */
int     maskpack_pack_above(uint8_t *plane, const float *v, size_t npx, float t);
/* Unpack a plane into npx bytes of 0/1. */
void    maskpack_unpack(uint8_t *dst, const uint8_t *plane, size_t npx);
/* Set bits in n bytes (popcount), and set bits of a AND b. */
int64_t maskpack_count(const uint8_t *plane, size_t n);
int64_t maskpack_count_and(const uint8_t *a, const uint8_t *b, size_t n);
/* 1 when any of the n bytes is non-zero. */
int     maskpack_any(const uint8_t *plane, size_t n);
/* One sample's presence bitmap (maskpack_bitmap_bytes(C), overwritten) from its C planes. */
void    maskpack_presence(uint8_t *presence, const uint8_t *planes, int C, size_t plane_bytes);

#endif
