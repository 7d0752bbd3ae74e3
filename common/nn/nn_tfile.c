/* common/nn/nn_tfile.c : reader for the named-tensor fixture files (see nn_tfile.h). */
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "fsutil.h"
#include "nn_tfile.h"

typedef struct {
    char       *name;
    int         ndim;
    int64_t     shape[4];
    size_t      count;
    float      *data;     /* own copy: the file's floats are not aligned */
} TEntry;

struct NnTFile {
    char   *blob;
    size_t  size;
    int     n;
    TEntry *e;
};

static int take(const NnTFile *f, size_t *pos, void *dst, size_t n, const char *path)
{
    if (n > f->size - *pos) return seg_err(SEG_EFORMAT, "%s: truncated at byte %zu", path, *pos);
    memcpy(dst, f->blob + *pos, n);
    *pos += n;
    return SEG_OK;
}

int nn_tfile_read(const char *path, NnTFile **out)
{
    *out = NULL;
    NnTFile *f = calloc(1, sizeof *f);
    if (!f) return seg_err(SEG_ENOMEM, "%s: tensor file struct", path);
    int rc = fs_read_all(path, &f->blob, &f->size, (size_t)1 << 30);
    if (rc < 0) { free(f); return rc; }
    size_t pos = 0;
    char magic[8];
    uint32_t n = 0;
    if ((rc = take(f, &pos, magic, 8, path)) < 0 || (rc = take(f, &pos, &n, 4, path)) < 0) goto fail;
    if (memcmp(magic, "SEGNNFX1", 8) != 0) { rc = seg_err(SEG_EFORMAT, "%s: bad magic", path); goto fail; }
    if (n > 100000) { rc = seg_err(SEG_EFORMAT, "%s: %u tensors", path, n); goto fail; }
    f->e = calloc(n ? n : 1, sizeof(TEntry));
    if (!f->e) { rc = seg_err(SEG_ENOMEM, "%s: %u entries", path, n); goto fail; }
    for (uint32_t i = 0; i < n; i++) {
        TEntry *e = &f->e[i];
        uint32_t len = 0, nd = 0;
        if ((rc = take(f, &pos, &len, 4, path)) < 0) goto fail;
        if (len == 0 || len > 4096 || len > f->size - pos) { rc = seg_err(SEG_EFORMAT, "%s: name length %u", path, len); goto fail; }
        e->name = malloc(len + 1);
        if (!e->name) { rc = seg_err(SEG_ENOMEM, "%s: name", path); goto fail; }
        f->n = (int)i + 1;
        if ((rc = take(f, &pos, e->name, len, path)) < 0) goto fail;
        e->name[len] = 0;
        if ((rc = take(f, &pos, &nd, 4, path)) < 0) goto fail;
        if (nd > 4) { rc = seg_err(SEG_EFORMAT, "%s: %s: ndim %u", path, e->name, nd); goto fail; }
        e->ndim = (int)nd;
        e->count = 1;
        for (uint32_t d = 0; d < nd; d++) {
            if ((rc = take(f, &pos, &e->shape[d], 8, path)) < 0) goto fail;
            if (e->shape[d] < 0 || e->shape[d] > (1LL << 31)) { rc = seg_err(SEG_EFORMAT, "%s: %s: dim %lld", path, e->name, (long long)e->shape[d]); goto fail; }
            e->count *= (size_t)e->shape[d];
        }
        if (e->count > (f->size - pos) / 4) { rc = seg_err(SEG_EFORMAT, "%s: %s: data past end", path, e->name); goto fail; }
        e->data = malloc(e->count ? e->count * 4 : 4);
        if (!e->data) { rc = seg_err(SEG_ENOMEM, "%s: %s: %zu floats", path, e->name, e->count); goto fail; }
        memcpy(e->data, f->blob + pos, e->count * 4);
        pos += e->count * 4;
    }
    free(f->blob);                                 /* every tensor has its own copy */
    f->blob = NULL;
    *out = f;
    return SEG_OK;
fail:
    nn_tfile_free(f);
    return rc;
}

void nn_tfile_free(NnTFile *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) { free(f->e[i].name); free(f->e[i].data); }
    free(f->e);
    free(f->blob);
    free(f);
}

const float *nn_tfile_get(const NnTFile *f, const char *name, size_t *count, int *ndim, int64_t shape[4])
{
    for (int i = 0; i < f->n; i++) {
        const TEntry *e = &f->e[i];
        if (strcmp(e->name, name) != 0) continue;
        if (count) *count = e->count;
        if (ndim) *ndim = e->ndim;
        if (shape) memcpy(shape, e->shape, sizeof e->shape);
        return e->data;
    }
    return NULL;
}

int         nn_tfile_count(const NnTFile *f) { return f->n; }
const char *nn_tfile_name(const NnTFile *f, int i) { return i >= 0 && i < f->n ? f->e[i].name : NULL; }
