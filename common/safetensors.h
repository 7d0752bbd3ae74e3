/* common/safetensors.h : read and write safetensors files (the tensor file format of
 * Hugging Face's safetensors, which PyTorch users load with safetensors.torch.load_file).
 * Layout: u64 little-endian header length N; N bytes of JSON
 *   {"__metadata__": {"key": "value", ...},
 *    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 * padded with spaces; then the data section, each tensor's raw little-endian bytes at
 * [begin, end) relative to the start of the data section. Readers check everything
 * (header length, JSON, dtypes, shapes, offsets in bounds, contiguous and non-overlapping,
 * bytes = elements x dtype size), so a hostile file yields SEG_EFORMAT, never a crash. */
#ifndef SEG_SAFETENSORS_H
#define SEG_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_U16, ST_I16, ST_F16, ST_BF16,
    ST_U32, ST_I32, ST_F32, ST_U64, ST_I64, ST_F64, ST_N_DTYPES
} StDtype;

#define ST_MAX_DIMS   8
#define ST_MAX_HEADER (100u << 20)   /* the reference implementation's limit as well */

/* One tensor. On read, name and data point into the StFile (data may be unaligned:
 * copy it out with st_to_f32 or memcpy). On write, they are the caller's. */
typedef struct StTensor {
    const char *name;
    StDtype     dtype;
    int         ndim;                /* 0 = scalar */
    int64_t     shape[ST_MAX_DIMS];
    size_t      count;               /* elements (product of shape) */
    size_t      nbytes;              /* count x st_dtype_size */
    const void *data;
} StTensor;

/* A metadata entry (the "__metadata__" map holds strings only). */
typedef struct StMeta { const char *key, *value; } StMeta;

typedef struct StFile StFile;

/* "F32", "I64", ... and bytes per element; st_dtype_parse returns -1 for an unknown name. */
const char *st_dtype_name(StDtype t);
size_t      st_dtype_size(StDtype t);
int         st_dtype_parse(const char *s);

/* Parse and validate a safetensors image in memory. buf is borrowed: it must outlive *out.
 * what names the source in messages. SEG_EFORMAT (with the problem) or SEG_ENOMEM. */
int  st_parse(const void *buf, size_t n, const char *what, StFile **out);
/* Map path read-only and parse it. SEG_EIO naming the file if it cannot be read. */
int  st_open(const char *path, StFile **out);
void st_close(StFile *f);                                  /* NULL-safe */

/* Tensors in data-offset order. */
int             st_n_tensors(const StFile *f);
const StTensor *st_tensor(const StFile *f, int i);
const StTensor *st_find(const StFile *f, const char *name); /* NULL if absent */
/* Metadata value of key, or NULL. Entries by index for listing. */
const char *st_meta(const StFile *f, const char *key);
int         st_n_meta(const StFile *f);
const StMeta *st_meta_at(const StFile *f, int i);

/* Convert a tensor's elements to float (any numeric dtype; F16/BF16 exactly, integers
 * rounded to the nearest float). dst holds t->count floats. */
void st_to_f32(const StTensor *t, float *dst);
/* Find name, check its element count (and, when shape != NULL, its shape), convert into
 * dst. SEG_EFORMAT naming the file/tensor when missing, SEG_EMISMATCH on a size mismatch. */
int  st_read_f32(const StFile *f, const char *name, int ndim, const int64_t *shape, float *dst, size_t count);

/* Write tensors (data laid out back to back in the order given; the header is padded so
 * the data section starts 8-byte aligned) and metadata to path atomically ("<path>.tmp.<pid>",
 * fsync, rename, fsync of the directory). count/nbytes are derived from dtype and shape.
 * SEG_EARG for a bad tensor (empty or duplicate name, > ST_MAX_DIMS dims, negative dim,
 * NULL data), SEG_EIO naming the file on a write error (the old file is then untouched). */
int  st_write(const char *path, const StTensor *t, int n, const StMeta *meta, int n_meta);
/* The same into a malloc'd buffer (*buf, *len; caller frees). */
int  st_write_mem(const StTensor *t, int n, const StMeta *meta, int n_meta, void **buf, size_t *len);

#endif
