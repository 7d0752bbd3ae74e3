/* common/split.c : meta.csv parsing and the hash split. */
#include "split.h"
#include "cache.h"
#include "err.h"
#include "fsutil.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void split_free(SplitTable *t)
{
    if (!t) return;
    for (int i = 0; i < t->n; i++) free(t->ids[i]);
    free(t->ids); free(t->split);
    memset(t, 0, sizeof *t);
}

int split_hash(const char *id)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) { h ^= *p; h *= 1099511628211ull; }
    unsigned v = (unsigned)(h % 100);
    return v < 80 ? CACHE_SPLIT_TRAIN : v < 90 ? CACHE_SPLIT_VAL : CACHE_SPLIT_TEST;
}

int split_lookup(const SplitTable *t, const char *id)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->ids[i], id) == 0) return t->split[i];
    return -1;
}

/* Split one line into fields in place (no quoting beyond stripping surrounding quotes). */
static int fields(char *line, char sep, char **f, int max)
{
    int n = 0;
    char *p = line;
    for (;;) {
        char *e = strchr(p, sep);
        if (e) *e = 0;
        char *s = p, *t = p + strlen(p);
        while (*s == ' ' || *s == '\t') s++;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t' || t[-1] == '\r')) *--t = 0;
        if (t - s >= 2 && *s == '"' && t[-1] == '"') { s++; t[-1] = 0; }
        if (n < max) f[n] = s;
        n++;
        if (!e) break;
        p = e + 1;
    }
    return n;
}

int split_parse(const char *text, size_t len, const char *name, SplitTable *out)
{
    memset(out, 0, sizeof *out);
    char *buf = malloc(len + 1);
    if (!buf) return seg_err(SEG_ENOMEM, "%s", name);
    memcpy(buf, text, len);
    buf[len] = 0;
    if (memchr(buf, 0, len)) { free(buf); return seg_err(SEG_EFORMAT, "%s: contains NUL bytes (not a CSV file)", name); }
    char *p = buf;
    if ((unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF) p += 3;
    char *nl = strchr(p, '\n');
    if (nl) *nl = 0;
    char sep = strchr(p, ';') ? ';' : ',';
    enum { MAXF = 256 };
    char *f[MAXF];
    int nf = fields(p, sep, f, MAXF), col_id = -1, col_split = -1;
    for (int i = 0; i < nf && i < MAXF; i++) {
        if (!strcmp(f[i], "image_id")) col_id = i;
        if (!strcmp(f[i], "split")) col_split = i;
    }
    int rc = SEG_OK;
    if (col_id < 0 || col_split < 0) {
        rc = seg_err(SEG_EFORMAT, "%s: header must name columns 'image_id' and 'split' (separator ';')", name);
        goto out;
    }
    int cap = 0, line_no = 1;
    while (nl) {
        p = nl + 1;
        line_no++;
        nl = strchr(p, '\n');
        if (nl) *nl = 0;
        nf = fields(p, sep, f, MAXF);
        if (nf == 1 && !*f[0]) continue;   /* blank line */
        if (nf <= col_id || nf <= col_split || col_id >= MAXF || col_split >= MAXF) {
            rc = seg_err(SEG_EFORMAT, "%s:%d: only %d columns", name, line_no, nf);
            goto out;
        }
        int s = cache_split_parse(f[col_split]);
        if (s < 0) { rc = seg_err(SEG_EFORMAT, "%s:%d: unknown split '%s' (train, val or test)", name, line_no, f[col_split]); goto out; }
        if (!*f[col_id] || strlen(f[col_id]) >= CACHE_ID_MAX) { rc = seg_err(SEG_EFORMAT, "%s:%d: bad image_id", name, line_no); goto out; }
        if (out->n == cap) {
            cap = cap ? 2 * cap : 64;
            char **ids = realloc(out->ids, sizeof(char *) * (size_t)cap);
            if (ids) out->ids = ids;
            int *sp = realloc(out->split, sizeof(int) * (size_t)cap);
            if (sp) out->split = sp;
            if (!ids || !sp) { rc = seg_err(SEG_ENOMEM, "%s", name); goto out; }
        }
        out->ids[out->n] = strdup(f[col_id]);
        if (!out->ids[out->n]) { rc = seg_err(SEG_ENOMEM, "%s", name); goto out; }
        out->split[out->n++] = s;
    }
out:
    free(buf);
    if (rc < 0) split_free(out);
    return rc;
}

int split_read_csv(const char *path, SplitTable *out)
{
    char *buf; size_t n;
    memset(out, 0, sizeof *out);
    TRY(fs_read_all(path, &buf, &n, 256u << 20));
    int rc = split_parse(buf, n, path, out);
    free(buf);
    return rc;
}
