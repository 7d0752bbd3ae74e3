/* common/nii.h : read and write NIfTI-1 / NIfTI-2 volumes (.nii and .nii.gz, zlib).
 * No reorientation or resampling here (see orient.h, resample.h). */
#ifndef SEG_NII_H
#define SEG_NII_H
#include <stddef.h>
#include <stdint.h>

/* NIfTI datatype codes we read and write. */
enum { NII_UINT8 = 2, NII_INT16 = 4, NII_INT32 = 8, NII_FLOAT32 = 16, NII_FLOAT64 = 64,
       NII_INT8 = 256, NII_UINT16 = 512, NII_UINT32 = 768 };

/* Default limit on voxels in one volume (2^31); see nii_set_max_voxels. */
#define NII_DEFAULT_MAX_VOXELS ((int64_t)1 << 31)

typedef struct NiiVolume {
    int64_t dim[3];        /* nx, ny, nz; a 2D file has nz = 1; dims 4..7 must be 1 */
    double  pixdim[3];     /* voxel size in mm (absolute values) */
    double  affine[4][4];  /* voxel (i,j,k,1) -> world RAS+ mm: sform if sform_code > 0,
                              else qform if qform_code > 0 (NIfTI-1 standard formula),
                              else diag(pixdim) with zero offset (NIfTI-1 method 1; note
                              nibabel's fallback differs: centred, x flipped) */
    int     sform_code, qform_code;
    int     datatype;      /* NII_* code; data is in host byte order */
    int     bytes_per_voxel;
    double  slope, inter;  /* scaling actually applied by nii_value: slope 1, inter 0 when
                              the file has scl_slope == 0 or non-finite */
    int     version;       /* 1 or 2, as read; nii_write writes version 1 */
    void   *data;          /* nx*ny*nz voxels, x fastest; owned; NULL after nii_read_header */
    uint64_t file_hash;    /* nii_read: nii_hash of the file's bytes as read (the compressed bytes
                              of a .nii.gz; header and data of a .nii), 0 after nii_read_header */
} NiiVolume;

/* A fast 64-bit hash of n bytes continuing from h (start with 0): the content part of
 * segprep's input fingerprints. Not cryptographic. */
uint64_t nii_hash(uint64_t h, const void *p, size_t n);

/* Read a whole volume. *out is owned by the caller (nii_free). Errors name the path:
 * SEG_EIO (missing, truncated, bad gzip or CRC), SEG_EFORMAT (not NIfTI, bad dims, unknown
 * datatype), SEG_ENOMEM (over the voxel limit, checked before allocating, or allocation
 * failure). Gzip is detected by its magic bytes, not the name; inflating stops once the
 * header-declared data is complete (plus at most 64 KiB looking for the CRC trailer).
 * Thread-safe. */
int  nii_read(const char *path, NiiVolume **out);
/* Same, header and geometry only (data stays NULL; a .nii.gz is only inflated as far as
 * the header; the data's presence is not checked). */
int  nii_read_header(const char *path, NiiVolume **out);
/* Parse a volume from an in-memory file image (plain or gzip), for fuzzing and tests;
 * name is used in messages. */
int  nii_read_mem(const void *buf, size_t n, const char *name, int header_only, NiiVolume **out);
void nii_free(NiiVolume *v);   /* NULL-safe */

/* Voxel idx (x fastest) as a scaled double: raw * slope + inter. */
double nii_value(const NiiVolume *v, size_t idx);
/* Number of voxels nx*ny*nz. */
size_t nii_nvox(const NiiVolume *v);

/* Allocate a zero-filled volume of the given dims/datatype with slope 1, inter 0,
 * sform = qform = affine (codes 1) and pixdim from the affine's column norms. */
int  nii_create(const int64_t dim[3], int datatype, const double affine[4][4], NiiVolume **out);
/* Write v as NIfTI-1 (little endian, vox_offset 352, sform and qform from v->affine,
 * scl_slope/scl_inter from v->slope/inter); gzip when path ends in ".gz" (level 1..9,
 * 0 = default 6). Written to a temp file and renamed, so a reader never sees half a file
 * (not fsync'ed, for speed: use fs_write_atomic where durability matters).
 * sform_code/qform_code: v's when > 0, else 1 (scanner); the qform is the affine's nearest
 * rotation as nibabel computes it, pixdim the column norms. SEG_EARG for bad v or level,
 * SEG_EIO naming the path for file errors. */
int  nii_write(const char *path, const NiiVolume *v, int gzip_level);

/* Bytes per voxel of a NII_* datatype code (0 if unsupported), and its name ("int16",
 * "unknown"). */
int  nii_dtype_size(int datatype);
const char *nii_dtype_name(int datatype);

/* Limit checked against every header before any allocation; overridable by the
 * SEGKIT_MAX_VOXELS environment variable (read once, at first use; a later call to this
 * function wins). Returns the previous value. */
int64_t nii_set_max_voxels(int64_t n);

#endif
