/* common/nn/nn_tfile.h : read the named-tensor files written by tools/make_nn_fixtures.py
 * ("SEGNNFX1", then per tensor: name, shape, float32 data; little-endian). Used by the
 * reference tests; handy for debugging dumps too. */
#ifndef SEG_NN_TFILE_H
#define SEG_NN_TFILE_H
#include <stddef.h>
#include <stdint.h>

typedef struct NnTFile NnTFile;

/* Read the whole file. SEG_EIO (missing/short), SEG_EFORMAT (bad magic or sizes). */
int  nn_tfile_read(const char *path, NnTFile **out);
void nn_tfile_free(NnTFile *f);                         /* NULL-safe */
/* The tensor called name (owned by f), or NULL; *count / ndim / shape[4] filled if not NULL. */
const float *nn_tfile_get(const NnTFile *f, const char *name, size_t *count, int *ndim, int64_t shape[4]);
int          nn_tfile_count(const NnTFile *f);
const char  *nn_tfile_name(const NnTFile *f, int i);

#endif
