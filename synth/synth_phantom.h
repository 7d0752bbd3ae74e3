/* synth/synth_phantom.h : a synthetic torso CT phantom for bin/synthct.
 * The anatomy lives in a nominal patient frame (mm; +x patient LEFT, +y anterior, +z superior,
 * pelvis floor at z = 0); each subject draws a jittered copy of it, places it in world RAS+
 * (+x = patient right, as NIfTI and the real TotalSegmentator data) and samples it through its
 * own voxel->world affine, so flips and axis permutations of the grid are real and left/right
 * stays anatomically correct. One label per voxel, so structures never overlap.
 * Everything is deterministic for (seed, subject index): own PRNG (xoshiro256**), one stream
 * per purpose, independent of the thread that renders the subject. */
#ifndef SEG_SYNTH_PHANTOM_H
#define SEG_SYNTH_PHANTOM_H
#include <stdint.h>

/* ---- PRNG --------------------------------------------------------------------------- */
typedef struct SynthRng { uint64_t s[4]; } SynthRng;

/* Seed a stream from (seed, stream id) through splitmix64. */
void     synth_rng_seed(SynthRng *r, uint64_t seed, uint64_t stream);
uint64_t synth_rng_next(SynthRng *r);
/* Uniform in [lo, hi). */
double   synth_rng_range(SynthRng *r, double lo, double hi);
/* Standard normal (Box-Muller, no cached pair: the sequence depends only on the calls). */
double   synth_rng_normal(SynthRng *r);

/* ---- per-subject grid ------------------------------------------------------------------ */
typedef struct SynthOptions {
    int    size[3];        /* nominal dims W, H, D (slice axis last); each jittered by +-10% */
    double spacing[3];     /* in-plane x, in-plane y, slice mm; 0 = random (0.7-1.5, 1.5-5) */
    int    mask_level;     /* gzip level of the masks (1 = fast, they are mostly zeros) */
    int    ct_level;       /* gzip level of ct.nii.gz */
} SynthOptions;

void synth_default_options(SynthOptions *o);   /* 128x128x48, random spacing, levels 1 and 1 */

typedef struct SynthGeometry {
    int64_t dim[3];        /* voxel dims, x fastest */
    double  spacing[3];    /* mm per voxel axis */
    double  affine[4][4];  /* voxel -> world RAS+ mm */
    char    orient[4];     /* nibabel axis codes, e.g. "LPS" */
    double  slope, inter;  /* stored int16 * slope + inter = HU; slope 0 = no scaling in the file */
} SynthGeometry;

/* Draw subject index's dims, spacing, orientation, scaling and world position.
 * Orientations and scalings cycle through seeded permutations, so any 4 consecutive
 * subjects have 4 different orientations and both stored-value conventions. SEG_EARG on bad
 * options. */
int synth_geometry(const SynthOptions *o, uint64_t seed, int index, SynthGeometry *g);

/* ---- the phantom --------------------------------------------------------------------- */
typedef struct SynthPhantom SynthPhantom;

/* Draw subject index's anatomy (size, position, rotation, organ jitter, intensities) and fit
 * it to the field of view of g. *out is owned by the caller (synth_phantom_free). SEG_ENOMEM,
 * or SEG_EARG if a built-in structure name is not in labels_ts_total (a bug). */
int  synth_phantom_new(uint64_t seed, int index, const SynthGeometry *g, SynthPhantom **out);
void synth_phantom_free(SynthPhantom *p);   /* NULL-safe */

/* Label (0 = none, else TotalSegmentator channel + 1) and noiseless HU at world point
 * (x, y, z) RAS+ mm. */
int  synth_phantom_sample(const SynthPhantom *p, const double world[3], double *hu);

/* Rasterise onto g: hu[nvox] (noise included, clamped to -1024..3071) and labels[nvox]
 * (caller-owned, x fastest). Never fails. */
void synth_render(const SynthPhantom *p, const SynthGeometry *g, uint64_t seed, int index,
                  float *hu, uint8_t *labels);

/* ---- files ---------------------------------------------------------------------------- */
/* Write dir/ct.nii.gz (int16, g's scaling) and dir/segmentations/<name>.nii.gz for all 117
 * TotalSegmentator structures (uint8 0/1, same grid; undrawn ones all zero). *n_drawn gets the
 * number of non-empty masks (may be NULL). Errors name the file (SEG_EIO, SEG_ENOMEM). */
int  synth_write_subject(const char *dir, const SynthGeometry *g, const float *hu,
                         const uint8_t *labels, const SynthOptions *o, int *n_drawn);

/* The whole subject: geometry, phantom, render, write into dir. *n_drawn as above. */
int  synth_make_subject(const SynthOptions *o, uint64_t seed, int index, const char *dir,
                        SynthGeometry *g_out, int *n_drawn);

/* Deterministic split of n subjects into split[n] (0 train, 1 val, 2 test): ~80/10/10 and, when
 * n >= 3, at least one val and one test. */
void synth_split(int n, uint64_t seed, int *split);

#endif
