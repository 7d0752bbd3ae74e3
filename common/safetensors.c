/* common/safetensors.c : safetensors reader (validating) and atomic writer. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "err.h"
#include "fsutil.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c reads and writes tensor bytes as they are in memory: little-endian hosts only"
#endif

struct StFile {
    const uint8_t *data;      /* start of the data section */
    size_t         data_len;
    void          *map;       /* st_open: the mapping */
    size_t         map_len;
    StTensor      *t;
    int            nt;
    StMeta        *meta;
    int            nmeta;
    char           what[512];
};

static const struct { const char *name; size_t size; } g_dtypes[ST_N_DTYPES] = {
    [ST_BOOL] = { "BOOL", 1 }, [ST_U8] = { "U8", 1 },   [ST_I8] = { "I8", 1 },
    [ST_U16] = { "U16", 2 },   [ST_I16] = { "I16", 2 }, [ST_F16] = { "F16", 2 }, [ST_BF16] = { "BF16", 2 },
    [ST_U32] = { "U32", 4 },   [ST_I32] = { "I32", 4 }, [ST_F32] = { "F32", 4 },
    [ST_U64] = { "U64", 8 },   [ST_I64] = { "I64", 8 }, [ST_F64] = { "F64", 8 },
};

const char *st_dtype_name(StDtype t) { return (unsigned)t < ST_N_DTYPES ? g_dtypes[t].name : "?"; }
size_t st_dtype_size(StDtype t) { return (unsigned)t < ST_N_DTYPES ? g_dtypes[t].size : 0; }

int st_dtype_parse(const char *s)
{
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (!strcmp(s, g_dtypes[i].name)) return i;
    return -1;
}

/* ---- reading ---- */

void st_close(StFile *f)
{
    if (!f) return;
    for (int i = 0; i < f->nt; i++) free((char *)f->t[i].name);
    for (int i = 0; i < f->nmeta; i++) { free((char *)f->meta[i].key); free((char *)f->meta[i].value); }
    free(f->t);
    free(f->meta);
    if (f->map) munmap(f->map, f->map_len);
    free(f);
}

/* A JSON number that is an exact integer in [0, 2^53]. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int cmp_offset(const void *a, const void *b)
{
    const StTensor *x = a, *y = b;
    const uint8_t *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;   /* empty tensors first at a tie */
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int parse_tensor(StFile *f, const cJSON *it, StTensor *t)
{
    const char *nm = it->string;
    if (!cJSON_IsObject(it)) return seg_err(SEG_EFORMAT, "%s: tensor '%.100s' is not an object", f->what, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(dt) || st_dtype_parse(dt->valuestring) < 0)
        return seg_err(SEG_EFORMAT, "%s: tensor '%.100s': missing or unknown dtype", f->what, nm);
    t->dtype = (StDtype)st_dtype_parse(dt->valuestring);
    if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > ST_MAX_DIMS)
        return seg_err(SEG_EFORMAT, "%s: tensor '%.100s': shape must be an array of at most %d sizes", f->what, nm, ST_MAX_DIMS);
    t->ndim = 0;
    uint64_t count = 1;
    int overflow = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, sh) {
        uint64_t v;
        if (json_uint(d, &v) < 0) return seg_err(SEG_EFORMAT, "%s: tensor '%.100s': bad shape entry", f->what, nm);
        t->shape[t->ndim++] = (int64_t)v;
        if (v && count > UINT64_MAX / v) overflow = 1;
        count *= v;
    }
    size_t esz = st_dtype_size(t->dtype);
    if (overflow || count > SIZE_MAX / esz)
        return seg_err(SEG_EFORMAT, "%s: tensor '%.100s': shape too large", f->what, nm);
    uint64_t b, e;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_uint(cJSON_GetArrayItem(off, 0), &b) < 0 ||
        json_uint(cJSON_GetArrayItem(off, 1), &e) < 0 || b > e)
        return seg_err(SEG_EFORMAT, "%s: tensor '%.100s': data_offsets must be [begin, end] with begin <= end", f->what, nm);
    if (e > f->data_len)
        return seg_err(SEG_EFORMAT, "%s: tensor '%.100s': data [%llu, %llu) beyond the %zu data bytes (truncated file?)",
                       f->what, nm, (unsigned long long)b, (unsigned long long)e, f->data_len);
    if (e - b != count * esz)
        return seg_err(SEG_EFORMAT, "%s: tensor '%.100s': %llu bytes but shape x %s needs %llu", f->what, nm,
                       (unsigned long long)(e - b), st_dtype_name(t->dtype), (unsigned long long)(count * esz));
    t->count = (size_t)count;
    t->nbytes = (size_t)(e - b);
    t->data = f->data + b;
    t->name = strdup(nm);
    if (!t->name) return seg_err(SEG_ENOMEM, "%s: tensor names", f->what);
    return SEG_OK;
}

static int parse_meta(StFile *f, const cJSON *m)
{
    if (!cJSON_IsObject(m)) return seg_err(SEG_EFORMAT, "%s: __metadata__ is not an object", f->what);
    int n = cJSON_GetArraySize(m);
    f->meta = calloc(n ? (size_t)n : 1, sizeof *f->meta);
    if (!f->meta) return seg_err(SEG_ENOMEM, "%s: metadata", f->what);
    const cJSON *it;
    cJSON_ArrayForEach(it, m) {
        if (!cJSON_IsString(it))
            return seg_err(SEG_EFORMAT, "%s: metadata '%.100s' is not a string", f->what, it->string);
        for (int i = 0; i < f->nmeta; i++)
            if (!strcmp(f->meta[i].key, it->string))
                return seg_err(SEG_EFORMAT, "%s: metadata key '%.100s' appears twice", f->what, it->string);
        StMeta *e = &f->meta[f->nmeta];
        e->key = strdup(it->string);
        e->value = strdup(it->valuestring);
        f->nmeta++;
        if (!e->key || !e->value) return seg_err(SEG_ENOMEM, "%s: metadata", f->what);
    }
    return SEG_OK;
}

/* Tensors sorted by offset must tile the data section exactly, as the reference reader
 * demands: no overlap (two names aliasing bytes) and no unexplained bytes. */
static int check_layout(StFile *f)
{
    qsort(f->t, (size_t)f->nt, sizeof *f->t, cmp_offset);
    size_t pos = 0;
    for (int i = 0; i < f->nt; i++) {
        size_t b = (size_t)((const uint8_t *)f->t[i].data - f->data);
        if (b != pos)
            return seg_err(SEG_EFORMAT, "%s: tensor '%.100s' starts at data byte %zu, expected %zu (%s)", f->what,
                           f->t[i].name, b, pos, b < pos ? "overlaps the previous tensor" : "gap");
        pos = b + f->t[i].nbytes;
    }
    if (pos != f->data_len)
        return seg_err(SEG_EFORMAT, "%s: %zu data bytes but the tensors cover %zu", f->what, f->data_len, pos);
    char **names = malloc(sizeof *names * ((size_t)f->nt + 1));
    if (!names) return seg_err(SEG_ENOMEM, "%s", f->what);
    for (int i = 0; i < f->nt; i++) names[i] = (char *)f->t[i].name;
    qsort(names, (size_t)f->nt, sizeof *names, cmp_name);
    int rc = SEG_OK;
    for (int i = 1; i < f->nt && rc == SEG_OK; i++)
        if (!strcmp(names[i - 1], names[i])) rc = seg_err(SEG_EFORMAT, "%s: tensor '%.100s' appears twice", f->what, names[i]);
    free(names);
    return rc;
}

static int parse_into(StFile *f, const uint8_t *buf, size_t n)
{
    if (n < 8) return seg_err(SEG_EFORMAT, "%s: %zu bytes, too short for a safetensors file", f->what, n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    if (hlen < 2 || hlen > ST_MAX_HEADER)
        return seg_err(SEG_EFORMAT, "%s: header length %llu out of range (not a safetensors file?)", f->what,
                       (unsigned long long)hlen);
    if (hlen > n - 8)
        return seg_err(SEG_EFORMAT, "%s: header length %llu but only %zu bytes follow (truncated file?)", f->what,
                       (unsigned long long)hlen, n - 8);
    const char *hdr = (const char *)buf + 8;
    if (hdr[0] != '{') return seg_err(SEG_EFORMAT, "%s: header does not start with '{' (not a safetensors file?)", f->what);
    f->data = buf + 8 + hlen;
    f->data_len = n - 8 - (size_t)hlen;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) return seg_err(SEG_EFORMAT, "%s: header is not valid JSON (near byte %td)", f->what, end ? end - hdr + 8 : 8);
    int rc = SEG_OK;
    for (const char *p = end; p < hdr + hlen && rc == SEG_OK; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            rc = seg_err(SEG_EFORMAT, "%s: bytes after the JSON header", f->what);
    if (rc == SEG_OK && !cJSON_IsObject(root)) rc = seg_err(SEG_EFORMAT, "%s: header is not a JSON object", f->what);
    int n_items = rc == SEG_OK ? cJSON_GetArraySize(root) : 0;
    if (rc == SEG_OK && !(f->t = calloc((size_t)(n_items ? n_items : 1), sizeof *f->t)))
        rc = seg_err(SEG_ENOMEM, "%s: %d tensors", f->what, n_items);
    int seen_meta = 0;
    const cJSON *it;
    if (rc == SEG_OK) cJSON_ArrayForEach(it, root) {
        if (!it->string) { rc = seg_err(SEG_EFORMAT, "%s: unnamed header entry", f->what); break; }
        if (!strcmp(it->string, "__metadata__")) {
            if (seen_meta++) { rc = seg_err(SEG_EFORMAT, "%s: two __metadata__ entries", f->what); break; }
            if ((rc = parse_meta(f, it)) < 0) break;
            continue;
        }
        rc = parse_tensor(f, it, &f->t[f->nt]);
        if (f->t[f->nt].name) f->nt++;
        if (rc < 0) break;
    }
    cJSON_Delete(root);
    if (rc == SEG_OK) rc = check_layout(f);
    return rc;
}

int st_parse(const void *buf, size_t n, const char *what, StFile **out)
{
    *out = NULL;
    StFile *f = calloc(1, sizeof *f);
    if (!f) return seg_err(SEG_ENOMEM, "%s", what);
    snprintf(f->what, sizeof f->what, "%s", what ? what : "safetensors");
    int rc = parse_into(f, buf, n);
    if (rc < 0) { st_close(f); return rc; }
    *out = f;
    return SEG_OK;
}

int st_open(const char *path, StFile **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return seg_err(SEG_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return seg_err(SEG_EIO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    void *map = NULL;
    if (n > 0) {
        map = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) { int e = errno; close(fd); return seg_err(SEG_EIO, "%s: mmap: %s", path, strerror(e)); }
    }
    close(fd);
    StFile *f = calloc(1, sizeof *f);
    if (!f) { if (map) munmap(map, n); return seg_err(SEG_ENOMEM, "%s", path); }
    f->map = map;
    f->map_len = n;
    snprintf(f->what, sizeof f->what, "%s", path);
    int rc = parse_into(f, map ? map : (const void *)"", n);
    if (rc < 0) { st_close(f); return rc; }
    *out = f;
    return SEG_OK;
}

int st_n_tensors(const StFile *f) { return f->nt; }
const StTensor *st_tensor(const StFile *f, int i) { return i >= 0 && i < f->nt ? &f->t[i] : NULL; }
int st_n_meta(const StFile *f) { return f->nmeta; }
const StMeta *st_meta_at(const StFile *f, int i) { return i >= 0 && i < f->nmeta ? &f->meta[i] : NULL; }

const StTensor *st_find(const StFile *f, const char *name)
{
    for (int i = 0; i < f->nt; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

const char *st_meta(const StFile *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta[i].key, key)) return f->meta[i].value;
    return NULL;
}

static float half_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 0) {
        float v = ldexpf((float)man, -24);   /* zero and subnormals */
        return sign ? -v : v;
    }
    if (exp == 31) bits = sign | 0x7F800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

void st_to_f32(const StTensor *t, float *dst)
{
    const uint8_t *p = t->data;
    size_t es = st_dtype_size(t->dtype);
    if (t->dtype == ST_F32) { memcpy(dst, p, t->count * 4); return; }
    for (size_t i = 0; i < t->count; i++, p += es) {
        union { uint8_t b[8]; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; uint64_t u64; int64_t i64; double f64; } v;
        memcpy(v.b, p, es);
        switch (t->dtype) {
        case ST_BOOL: dst[i] = v.b[0] != 0; break;
        case ST_U8:   dst[i] = v.b[0]; break;
        case ST_I8:   dst[i] = (int8_t)v.b[0]; break;
        case ST_U16:  dst[i] = v.u16; break;
        case ST_I16:  dst[i] = v.i16; break;
        case ST_F16:  dst[i] = half_to_f32(v.u16); break;
        case ST_BF16: { uint32_t u = (uint32_t)v.u16 << 16; memcpy(&dst[i], &u, 4); break; }
        case ST_U32:  dst[i] = (float)v.u32; break;
        case ST_I32:  dst[i] = (float)v.i32; break;
        case ST_U64:  dst[i] = (float)v.u64; break;
        case ST_I64:  dst[i] = (float)v.i64; break;
        case ST_F64:  dst[i] = (float)v.f64; break;
        default:      dst[i] = 0; break;
        }
    }
}

int st_read_f32(const StFile *f, const char *name, int ndim, const int64_t *shape, float *dst, size_t count)
{
    const StTensor *t = st_find(f, name);
    if (!t) return seg_err(SEG_EFORMAT, "%s: no tensor '%s'", f->what, name);
    int same = t->count == count;
    if (same && shape) {
        same = t->ndim == ndim;
        for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    }
    if (!same) {
        char got[128] = "", want[128] = "";
        size_t g = 0, w = 0;
        for (int i = 0; i < t->ndim && g < sizeof got - 24; i++) g += (size_t)snprintf(got + g, sizeof got - g, "%s%lld", i ? "," : "", (long long)t->shape[i]);
        for (int i = 0; shape && i < ndim && w < sizeof want - 24; i++) w += (size_t)snprintf(want + w, sizeof want - w, "%s%lld", i ? "," : "", (long long)shape[i]);
        if (!shape) snprintf(want, sizeof want, "%zu elements", count);
        return seg_err(SEG_EMISMATCH, "%s: tensor '%s' has shape [%s], expected [%s]", f->what, name, got, want);
    }
    st_to_f32(t, dst);
    return SEG_OK;
}

/* ---- writing ---- */

static int check_tensors(const StTensor *t, int n, size_t *total)
{
    *total = 0;
    for (int i = 0; i < n; i++) {
        if (!t[i].name || !t[i].name[0] || !strcmp(t[i].name, "__metadata__"))
            return seg_err(SEG_EARG, "safetensors: tensor %d has an empty or reserved name", i);
        if ((unsigned)t[i].dtype >= ST_N_DTYPES || t[i].ndim < 0 || t[i].ndim > ST_MAX_DIMS)
            return seg_err(SEG_EARG, "safetensors: tensor '%s': bad dtype or rank", t[i].name);
        size_t count = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0) return seg_err(SEG_EARG, "safetensors: tensor '%s': negative dim", t[i].name);
            count *= (size_t)t[i].shape[d];
        }
        if (count && !t[i].data) return seg_err(SEG_EARG, "safetensors: tensor '%s' has no data", t[i].name);
        for (int j = 0; j < i; j++)
            if (!strcmp(t[i].name, t[j].name)) return seg_err(SEG_EARG, "safetensors: tensor name '%s' used twice", t[i].name);
        *total += count * st_dtype_size(t[i].dtype);
    }
    return SEG_OK;
}

/* The JSON header, padded with spaces so 8 + its length is a multiple of 8. */
static int make_header(const StTensor *t, int n, const StMeta *meta, int n_meta, char **out, size_t *len)
{
    *out = NULL;
    cJSON *root = cJSON_CreateObject(), *m = NULL;
    int ok = root != NULL;
    if (ok && n_meta > 0) {
        ok = (m = cJSON_AddObjectToObject(root, "__metadata__")) != NULL;
        for (int i = 0; ok && i < n_meta; i++) {
            if (!meta[i].key || !meta[i].value || cJSON_GetObjectItemCaseSensitive(m, meta[i].key)) {
                cJSON_Delete(root);
                return seg_err(SEG_EARG, "safetensors: metadata entry %d is NULL or repeated", i);
            }
            ok = cJSON_AddStringToObject(m, meta[i].key, meta[i].value) != NULL;
        }
    }
    size_t off = 0;
    char num[32];
    for (int i = 0; ok && i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name), *sh, *of;
        size_t count = 1;
        ok = e && cJSON_AddStringToObject(e, "dtype", st_dtype_name(t[i].dtype)) && (sh = cJSON_AddArrayToObject(e, "shape")) &&
             (of = cJSON_AddArrayToObject(e, "data_offsets"));
        for (int d = 0; ok && d < t[i].ndim; d++) {   /* raw integers: cJSON would print large ones as %g */
            snprintf(num, sizeof num, "%lld", (long long)t[i].shape[d]);
            count *= (size_t)t[i].shape[d];
            ok = cJSON_AddItemToArray(sh, cJSON_CreateRaw(num));
        }
        size_t nb = count * st_dtype_size(t[i].dtype);
        snprintf(num, sizeof num, "%zu", off);
        ok = ok && cJSON_AddItemToArray(of, cJSON_CreateRaw(num));
        snprintf(num, sizeof num, "%zu", off + nb);
        ok = ok && cJSON_AddItemToArray(of, cJSON_CreateRaw(num));
        off += nb;
    }
    char *txt = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!txt) return seg_err(SEG_ENOMEM, "safetensors: header");
    size_t l = strlen(txt), padded = (l + 8 + 7) / 8 * 8 - 8;
    char *h = realloc(txt, padded + 1);
    if (!h) { free(txt); return seg_err(SEG_ENOMEM, "safetensors: header"); }
    memset(h + l, ' ', padded - l);
    h[padded] = 0;
    if (padded > ST_MAX_HEADER) { free(h); return seg_err(SEG_EARG, "safetensors: header of %zu bytes is too large", padded); }
    *out = h;
    *len = padded;
    return SEG_OK;
}

int st_write_mem(const StTensor *t, int n, const StMeta *meta, int n_meta, void **buf, size_t *len)
{
    size_t total, hlen;
    char *hdr;
    *buf = NULL; *len = 0;
    TRY(check_tensors(t, n, &total));
    TRY(make_header(t, n, meta, n_meta, &hdr, &hlen));
    uint8_t *b = malloc(8 + hlen + total);
    if (!b) { free(hdr); return seg_err(SEG_ENOMEM, "safetensors: %zu bytes", 8 + hlen + total); }
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, hdr, hlen);
    free(hdr);
    size_t off = 8 + hlen;
    for (int i = 0; i < n; i++) {
        size_t nb = st_dtype_size(t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++) nb *= (size_t)t[i].shape[d];
        if (nb) memcpy(b + off, t[i].data, nb);
        off += nb;
    }
    *buf = b;
    *len = off;
    return SEG_OK;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int st_write(const char *path, const StTensor *t, int n, const StMeta *meta, int n_meta)
{
    size_t total, hlen;
    char *hdr, tmp[4200];
    TRY(check_tensors(t, n, &total));
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return seg_err(SEG_EARG, "%s: path too long", path);
    TRY(make_header(t, n, meta, n_meta, &hdr, &hlen));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { int e = errno; free(hdr); return seg_err(SEG_EIO, "%s: %s", tmp, strerror(e)); }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int bad = write_all(fd, len8, 8) || write_all(fd, hdr, hlen);
    free(hdr);
    for (int i = 0; i < n && !bad; i++) {
        size_t nb = st_dtype_size(t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++) nb *= (size_t)t[i].shape[d];
        bad = write_all(fd, t[i].data, nb);
    }
    const char *what = "write";
    if (!bad && fsync(fd) != 0) { bad = 1; what = "fsync"; }
    int e = errno;
    if (close(fd) != 0 && !bad) { bad = 1; what = "close"; e = errno; }
    if (bad) { unlink(tmp); return seg_err(SEG_EIO, "%s: %s failed: %s", path, what, strerror(e)); }
    if (rename(tmp, path) != 0) { e = errno; unlink(tmp); return seg_err(SEG_EIO, "%s: rename failed: %s", path, strerror(e)); }
    return fs_sync_parent(path);
}
