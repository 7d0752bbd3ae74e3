/* common/cache.h : the segprep slice cache: an LMDB environment (data.mdb) in CACHE_DIR
 * holding, per axial slice, a zstd-compressed int16 image and the bit-packed masks of the
 * non-empty channels, plus per-subject geometry and the cache metadata. The on-disk format
 * is documented in docs/cache_format.md. Readers map the file read-only and may run while
 * segprep appends; every subject is committed in one transaction. */
#ifndef SEG_CACHE_H
#define SEG_CACHE_H
#include <stddef.h>
#include <stdint.h>
#include "labels.h"

#define CACHE_FORMAT_VERSION 2   /* 2: subjects may be partly labelled; version 1 caches are still read */
#define CACHE_LABELLED_MAX 1024   /* channels a partly labelled subject can describe */
#define CACHE_ID_MAX 128

enum { CACHE_SPLIT_TRAIN = 0, CACHE_SPLIT_VAL = 1, CACHE_SPLIT_TEST = 2 };
/* "train" / "val" / "test"; cache_split_parse returns -1 for anything else
 * (accepts "validation" for val). */
const char *cache_split_name(int split);
int         cache_split_parse(const char *s);

/* Per-subject geometry. Cached voxel (c, r, k): column c, row r of slice k. */
typedef struct CacheSubject {
    char     id[CACHE_ID_MAX];   /* folder name, e.g. "s0000" */
    int      split;              /* CACHE_SPLIT_* */
    uint32_t index;              /* key prefix of its slices */
    int      n_slices;           /* Z (inferior -> superior) */
    int64_t  dim[3];             /* original voxel dims of ct.nii.gz */
    double   spacing[3];         /* original pixdim (mm) */
    double   affine[4][4];       /* original voxel -> world (RAS mm) */
    int      perm[3], flip[3];   /* canonical axis a = original axis perm[a], reversed if flip[a] */
    int64_t  canon_dim[3];       /* ni, nj, nk after closest-canonical reorientation */
    double   canon_affine[4][4]; /* canonical voxel -> world (nibabel as_closest_canonical) */
    double   res_spacing[3];     /* mm per cached column, row, slice */
    double   res_affine[4][4];   /* cached voxel (c, r, k) -> world; axes point L, P, S */
    int64_t  n_voxels_set;       /* mask voxels set over all channels, after resampling */
    uint64_t fp_inputs;          /* fingerprint of the inputs as found: prep parameters, file names,
                                    sizes, mtimes (0: none, a cache from before fingerprints) */
    uint64_t fp_content;         /* hash of the input files' bytes, computed while segprep read them */
    int      partial;            /* 1: only the channels set in labelled[] have masks; the others
                                    are unknown (not negative) in every slice */
    uint8_t  labelled[CACHE_LABELLED_MAX / 8];   /* bit c: channel c labelled (used when partial) */
} CacheSubject;

/* Bit c of the subject's labelled bitmap, NULL when every channel is labelled. */
static inline const uint8_t *cache_subject_labelled(const CacheSubject *s) { return s->partial ? s->labelled : NULL; }

typedef struct CacheReader CacheReader;
typedef struct CacheCursor CacheCursor;

/* Open CACHE_DIR read-only (memory-mapped). SEG_EIO if missing, SEG_EFORMAT on a bad
 * magic or version, SEG_EDB from LMDB. Caller closes. */
int  cache_open(const char *dir, CacheReader **out);
void cache_close(CacheReader *r);                        /* NULL-safe */
/* Re-read the subject list (sees subjects committed since open). */
int  cache_refresh(CacheReader *r);

int              cache_size(const CacheReader *r);       /* slice side (H = W) */
int              cache_n_channels(const CacheReader *r); /* C */
int              cache_version(const CacheReader *r);    /* format version (1 or 2) */
const LabelList *cache_labels(const CacheReader *r);     /* channel names, owned by r */
int              cache_n_subjects(const CacheReader *r); /* complete subjects, sorted by id */
const CacheSubject *cache_subject(const CacheReader *r, int i);
/* Index of a subject by id, or -1. */
int              cache_find_subject(const CacheReader *r, const char *id);
/* Bytes of one packed plane (size*size/8) and of the presence bitmap ((C+7)/8): the layout
 * of maskpack.h, which the records use as is. */
size_t cache_plane_bytes(const CacheReader *r);
size_t cache_presence_bytes(const CacheReader *r);

/* A read handle for one thread (its own LMDB read transaction and zstd context). */
int  cache_cursor_open(CacheReader *r, CacheCursor **out);
void cache_cursor_close(CacheCursor *c);                 /* NULL-safe */
/* Decode slice z of subject s. img: size*size int16 HU (may be NULL). bits: C planes of
 * cache_plane_bytes each (may be NULL); planes of absent channels are zeroed only when
 * zero_absent, else left as they were. presence: cache_presence_bytes (may be NULL).
 * Verifies the record checksum: SEG_EFORMAT naming subject and slice on mismatch. */
int  cache_read_slice(CacheCursor *c, const CacheSubject *s, int z, int16_t *img,
                      uint8_t *bits, uint8_t *presence, int zero_absent);
/* Presence bitmap only, without decompressing. */
int  cache_read_presence(CacheCursor *c, const CacheSubject *s, int z, uint8_t *presence);

/* Stored size, present-channel count and set-voxel count of one record (no decompression). */
int  cache_slice_info(CacheCursor *c, const CacheSubject *s, int z, size_t *bytes, int *n_present, int64_t *n_set);
/* Total bytes of the LMDB data file. */
int64_t cache_file_bytes(const CacheReader *r);

/* ---- record format (common/cache_record.c) ---- */
/* Check a record's header, sizes and checksum; fills the counts. what names it in errors. */
int  cache_record_check(const void *rec, size_t n, int size, int n_channels, const char *what,
                        int *n_present, int64_t *n_set);
/* Copy the presence bitmap after checking the header and sizes (no checksum, no decompression). */
int  cache_record_presence(const void *rec, size_t n, int size, int n_channels, const char *what, uint8_t *presence);
/* Decode a checked record (see cache_read_slice for img/bits/presence/zero_absent). */
int  cache_record_decode(void *dctx, const void *rec, size_t n, int size, int n_channels, const char *what,
                         int16_t *img, uint8_t *bits, uint8_t *presence, int zero_absent);

/* ---- writer (segprep) ---- */
typedef struct CacheWriter CacheWriter;
/* Open or create CACHE_DIR for appending. A new cache takes size and labels; an existing
 * one must match them (SEG_EMISMATCH otherwise). */
int  cache_writer_open(const char *dir, int size, const LabelList *labels, CacheWriter **out);
void cache_writer_close(CacheWriter *w);                 /* NULL-safe */
/* 1 if subject id is already complete in the cache. */
int  cache_writer_has(CacheWriter *w, const char *id);
/* The cached record of subject id into *out: 1 found, 0 not there, < 0 error. */
int  cache_writer_get(CacheWriter *w, const char *id, CacheSubject *out);
/* Change subject id's split (the record only, one transaction; the slices stay). */
int  cache_writer_set_split(CacheWriter *w, const char *id, int split);
/* Remove subject id and its slices in one transaction. */
int  cache_writer_remove(CacheWriter *w, const char *id);
/* The ids of every cached subject: *ids (n strings, all malloc'd; free each, then the array). */
int  cache_writer_ids(CacheWriter *w, char ***ids, int *n);
/* One encoded slice, as produced by cache_encode_slice (owned by the caller). */
typedef struct CacheRecord { void *data; size_t size; int64_t n_set; } CacheRecord;
/* Encode one slice into rec->data (malloc'd): img is size*size int16 HU; planes[c] is the
 * packed bit plane of channel c or NULL when empty (an all-zero plane counts as absent).
 * zctx: a ZSTD_CCtx* owned by the calling thread; level: zstd level. */
int  cache_encode_slice(void *zctx, int level, int size, int n_channels, const int16_t *img,
                        const uint8_t *const *planes, CacheRecord *rec);
/* Commit a whole subject (geometry + its n_slices records) in one transaction; replaces
 * an existing subject of the same id. Grows the map as needed. */
int  cache_writer_put_subject(CacheWriter *w, CacheSubject *s, const CacheRecord *recs);

#endif
