#define _POSIX_C_SOURCE 200809L
/* eval/report_common.c : subject cleanup, colours, readable names and the text buffer
 * the report writers share. */
#include "report.h"
#include "plot.h"
#include "err.h"
#include "fsutil.h"
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void report_subject_free(ReportSubject *s)
{
    if (!s) return;
    metrics_stack_free(&s->ref);
    metrics_stack_free(&s->pred);
    free(s->ct);
    memset(s, 0, sizeof *s);
}

void report_color(int s, uint8_t rgb[3])
{
    /* one colour per structure everywhere: the PNG overlays and the 3D page agree */
    const PlotColor c = plot_label_color(s);
    rgb[0] = c.r; rgb[1] = c.g; rgb[2] = c.b;
}

const char *report_pretty_name(const char *name, char *buf, int n)
{
    int i = 0;
    for (; name[i] && i < n - 1; i++) buf[i] = name[i] == '_' ? ' ' : name[i];
    buf[i] = 0;
    return buf;
}

/* ---- ReportBuf ---- */

static int buf_reserve(ReportBuf *b, size_t extra)
{
    if (b->oom) return 0;
    if (b->n + extra + 1 <= b->cap) return 1;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->n + extra + 1) nc *= 2;
    char *ns = realloc(b->s, nc);
    if (!ns) { b->oom = 1; return 0; }
    b->s = ns; b->cap = nc;
    return 1;
}

void report_buf_put(ReportBuf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n)) return;
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

void report_buf_printf(ReportBuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k < sizeof tmp) { report_buf_put(b, tmp, (size_t)k); return; }
    if (!buf_reserve(b, (size_t)k)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

void report_buf_base64(ReportBuf *b, const void *data, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!buf_reserve(b, (n + 2) / 3 * 4)) return;
    const uint8_t *p = data;
    char *o = b->s + b->n;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18]; *o++ = tab[(v >> 12) & 63]; *o++ = tab[(v >> 6) & 63]; *o++ = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18]; *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->n = (size_t)(o - b->s);
    b->s[b->n] = 0;
}

void report_buf_json_string(ReportBuf *b, const char *s)
{
    report_buf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { char e[2] = { '\\', (char)c }; report_buf_put(b, e, 2); }
        else if (c < 0x20 || c == '<' || c == '>' || c == '&') report_buf_printf(b, "\\u%04x", c);   /* safe inside <script> */
        else report_buf_put(b, (const char *)&c, 1);
    }
    report_buf_put(b, "\"", 1);
}

void report_buf_num(ReportBuf *b, double v, const char *nan_text)
{
    if (!isfinite(v)) report_buf_printf(b, "%s", nan_text);
    else report_buf_printf(b, "%.6g", v);
}

int report_buf_write(ReportBuf *b, const char *out_dir, const char *name)
{
    char path[4096];
    int rc = fs_join(path, sizeof path, out_dir, name);
    if (rc == SEG_OK && b->oom) rc = seg_err(SEG_ENOMEM, "%s: out of memory while building it", path);
    if (rc == SEG_OK) rc = fs_write_atomic(path, b->s ? b->s : "", b->n);
    free(b->s);
    memset(b, 0, sizeof *b);
    return rc;
}

/* ---- earlier outputs ---- */

/* Unlink out_dir/name if it is a regular file (or a link); a folder or anything else
 * of that name is not ours and stays. */
static int remove_if_file(const char *out_dir, const char *name)
{
    char path[4096];
    TRY(fs_join(path, sizeof path, out_dir, name));
    struct stat st;
    if (lstat(path, &st) != 0) return SEG_OK;
    if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) return SEG_OK;
    if (unlink(path) != 0) return seg_err(SEG_EIO, "%s: cannot remove the earlier run's output: %s", path, strerror(errno));
    return SEG_OK;
}

int report_remove_outputs(const ReportRun *r)
{
    static const char *const files[][2] = { { "evaluation_results", "csv" }, { "structure_summary", "csv" },
                                            { "summary", "json" }, { "metrics_distribution", "png" },
                                            { "structure_ranking", "png" }, { "segmentation_visualization", "png" } };
    char name[600];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(name, sizeof name, "%s_%s.%s", files[i][0], r->tag, files[i][1]);
        TRY(remove_if_file(r->out_dir, name));
    }
    report_index_name(r, name, sizeof name);
    TRY(remove_if_file(r->out_dir, name));
    for (int j = 0; j < r->n_subjects; j++) {
        if (!r->subjects[j]) continue;
        report_page_name(r, r->subjects[j], name, sizeof name);
        TRY(remove_if_file(r->out_dir, name));
    }
    return SEG_OK;
}
