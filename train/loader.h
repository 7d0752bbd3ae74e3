/* train/loader.h : batches for segtrain, decoded from the memory-mapped slice cache by
 * background threads into a small ring of preallocated batch slots.
 *
 * Memory is fixed at loader_create: prefetch slots of batch_size x (float image + packed
 * bit planes + presence bitmap), plus one scratch set per thread; nothing grows with the
 * dataset except the sample list (8 bytes per slice) and, when balanced, the structure index
 * (4 bytes per present structure of each slice). The batches come out in order and
 * their content depends only on (seed, epoch, position): the shuffle is a permutation
 * seeded by (seed, epoch) and each sample's augmentation by (seed, epoch, position), so the
 * number of threads and their timing never change what is trained on.
 *
 * Targets stay packed (maskpack.h): bits holds, per sample and channel, the plane of
 * cache_plane_bytes; planes of channels absent from the presence bitmap are not written
 * (they hold stale bytes), exactly what unet_loss_bce and unet_dice_counts read.
 *
 * Balanced sampling (balanced = 1): in every batch of n samples the first
 * loader_fg_slots(n, fg_fraction) positions are drawn foreground-first: a structure
 * uniformly among those present in at least one of the loader's samples, then a sample
 * uniformly among the samples holding it (an index built once at loader_create from the
 * presence bitmaps). The other positions take the epoch's permutation at those positions,
 * so an epoch keeps its length and batch count, and the permutation entries under the
 * foreground slots are skipped that epoch. Draws are seeded by (seed, epoch, position).
 *
 * 2.5D context (context = K > 0): the image of a sample is 2K+1 channels, the slices
 * z-K..z+K of the same subject (indices clamped to the subject's slices, so the edges
 * repeat), all under the same augmentation; the targets are the centre slice's. */
#ifndef SEG_LOADER_H
#define SEG_LOADER_H
#include <stddef.h>
#include <stdint.h>
#include "cache.h"

typedef struct LoaderOptions {
    int      batch_size;     /* samples per batch (>= 1) */
    int      threads;        /* decode threads (>= 1) */
    int      prefetch;       /* batch slots: how far the threads may run ahead (>= 2) */
    float    hu_lo, hu_hi;   /* HU window: clipped to it, then scaled linearly to [-1, 1] (hunorm.h) */
    int      shuffle;        /* new seeded permutation every epoch (else cache order) */
    int      aug;            /* augment: flips, rotation, intensity (see loader.c) */
    float    rot_deg;        /* rotation range +-rot_deg (aug) */
    float    int_scale;      /* intensity scale in 1 +- int_scale (aug) */
    float    int_shift;      /* intensity shift in +- int_shift, normalised units (aug) */
    uint64_t seed;
    int      balanced;       /* 1: a share of every batch is drawn foreground-first (above) */
    float    fg_fraction;    /* that share, in [0, 1] (balanced) */
    int      context;        /* K: 2K+1 adjacent slices as input channels (0..LOADER_MAX_CONTEXT) */
} LoaderOptions;

#define LOADER_MAX_CONTEXT 16

typedef struct LoaderBatch {
    int            n;        /* samples: batch_size, or fewer in an epoch's last batch */
    int            index;    /* batch number within the epoch */
    const float   *img;      /* (n, 2K+1, H, W), channels z-K..z+K (K = context) */
    const uint8_t *bits;     /* n x C planes (maskpack_plane) */
    const uint8_t *presence; /* n presence bitmaps (maskpack_bitmap) */
    const uint8_t *labelled; /* n labelled bitmaps (maskpack_bitmap): bit c set = channel c labelled in that sample's
                                subject; NULL when every subject of the split is fully labelled */
    const int     *fg;       /* n: the structure a foreground-first sample was drawn for, as
                                a channel of this batch (after a left-right flip's swap), else -1 */
} LoaderBatch;

typedef struct Loader Loader;

/* Defaults: batch 8, 1 thread, 3 slots, window [-1000, 1000], no shuffle, no aug,
 * rotation 15 degrees, intensity scale 0.1 and shift 0.1, uniform sampling (balanced 0,
 * fg_fraction 0.33), no context. */
void loader_default_options(LoaderOptions *o);
/* A loader over the slices of the cache's subjects in split (CACHE_SPLIT_*); max_slices > 0
 * keeps that many, evenly spaced over the split (for quick runs). r must outlive the
 * loader. Starts the threads (idle until loader_start_epoch). An empty split is allowed
 * (loader_n_samples 0). Balanced sampling reads every sample's presence bitmap here (no
 * decompression). SEG_EARG on bad options, SEG_ENOMEM, cache errors. */
int  loader_create(CacheReader *r, int split, int64_t max_slices, const LoaderOptions *o, Loader **out);
void loader_free(Loader *l);                              /* NULL-safe; stops the threads */
int64_t loader_n_samples(const Loader *l);
int     loader_n_batches(const Loader *l);
/* Structures present in at least one sample: what balanced draws choose from (0 when the
 * loader is not balanced; a balanced loader with none samples uniformly). */
int     loader_n_fg_structures(const Loader *l);
/* Foreground-first positions in a batch of n: round(n * fg_fraction) (half up), at least 1 when
 * fg_fraction > 0 and n >= 2, at most n. */
int     loader_fg_slots(int n, float fg_fraction);
/* Begin epoch (>= 0): new permutation, threads start filling. Abandons an epoch in flight. */
int  loader_start_epoch(Loader *l, int epoch);
/* Next batch of the epoch: returns 1 and fills *b (valid until the next call), 0 when the
 * epoch is done, or a negative code if a thread failed (corrupt record: SEG_EFORMAT naming
 * the subject and slice). Blocks while the batch is being prepared. */
int  loader_next(Loader *l, LoaderBatch *b);
/* Channel c's mirror under a left-right flip (kidney_left <-> kidney_right), else c. */
int  loader_lr_partner(const Loader *l, int c);

#endif
