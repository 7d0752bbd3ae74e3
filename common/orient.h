/* common/orient.h : closest-canonical (RAS+) reorientation by axis permutation and flips
 * only (nibabel's as_closest_canonical), and the radiological axial slice view used by
 * the cache: slice[r][c] = canon[ni-1-c][nj-1-r][k] (rows anterior -> posterior, columns
 * patient right -> left, k inferior -> superior). Nothing is copied: an OrientMap turns
 * canonical or slice coordinates into element offsets of the original voxel array. */
#ifndef SEG_ORIENT_H
#define SEG_ORIENT_H
#include <stdint.h>

typedef struct OrientMap {
    int     perm[3];         /* canonical axis a is original axis perm[a] */
    int     flip[3];         /* 1: canonical axis a runs against original axis perm[a] */
    int64_t dim[3];          /* original dims */
    int64_t cdim[3];         /* canonical dims ni, nj, nk */
    int64_t origin;          /* element offset of canonical voxel (0,0,0) in the original array */
    int64_t stride[3];       /* element step for +1 along canonical axis a (may be negative) */
    double  canon_affine[4][4]; /* canonical voxel -> world */
} OrientMap;

/* Build the map for a volume of dims dim (x fastest) and voxel->world affine.
 * SEG_EFORMAT if the affine's 3x3 part is singular or not finite. */
int orient_init(OrientMap *m, const int64_t dim[3], const double affine[4][4]);

/* Offset in the original array of canonical voxel (i, j, k). */
static inline int64_t orient_offset(const OrientMap *m, int64_t i, int64_t j, int64_t k)
{
    return m->origin + i * m->stride[0] + j * m->stride[1] + k * m->stride[2];
}

/* Slice geometry: a slice has sh = nj rows and sw = ni columns; slice k pixel (r, c) is
 * canonical voxel (ni-1-c, nj-1-r, k). */
static inline int64_t orient_slice_offset(const OrientMap *m, int64_t r, int64_t c, int64_t k)
{
    return orient_offset(m, m->cdim[0] - 1 - c, m->cdim[1] - 1 - r, k);
}

/* Affine of a resampled slice stack: cached voxel (c, r, k) of a size x size grid made
 * from slices of sw x sh pixels -> world, with half-pixel-centre resampling
 * (src = (dst + 0.5) * n / size - 0.5). Its axes point patient L, P, S. */
void orient_resampled_affine(const OrientMap *m, int size, double out[4][4], double spacing[3]);

/* Voxel axis codes of an affine, like nibabel's aff2axcodes: e.g. "RAS", "LPS". */
void orient_axcodes(const double affine[4][4], char out[4]);

#endif
