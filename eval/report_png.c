/* eval/report_png.c : the PNG figures through plot.h: Dice/IoU histograms, the structure
 * ranking, and the overlay grid of CT slices with reference and prediction. */
#include "report.h"
#include "err.h"
#include "fsutil.h"
#include "plot.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static PlotColor color_of(int s)
{
    uint8_t rgb[3];
    report_color(s, rgb);
    return PLOT_RGB(rgb[0], rgb[1], rgb[2]);
}

static int write_png(const PlotCanvas *c, const ReportRun *r, const char *prefix)
{
    char name[512], path[4096];
    snprintf(name, sizeof name, "%s_%s.png", prefix, r->tag);
    TRY(fs_join(path, sizeof path, r->out_dir, name));
    return plot_write_png(c, path);
}

/* ---- metrics_distribution_<tag>.png ---- */

static int distribution(const ReportRun *r)
{
    const int ns = r->labels->n;
    const size_t np = (size_t)r->n_subjects * (size_t)ns;
    double *dice = malloc(sizeof(double) * (np ? np : 1)), *iou = malloc(sizeof(double) * (np ? np : 1));
    if (!dice || !iou) { free(dice); free(iou); return seg_err(SEG_ENOMEM, "histograms"); }
    int n = 0;
    for (size_t i = 0; i < np; i++)
        if (r->res[i].kase == METRICS_CASE_BOTH || r->res[i].kase == METRICS_CASE_MISSED) {
            dice[n] = r->res[i].dice;
            iou[n] = r->res[i].iou;
            n++;
        }
    PlotCanvas c;
    int rc = plot_canvas_init(&c, 1400, 560, PLOT_WHITE);
    if (rc < 0) { free(dice); free(iou); return rc; }
    char t1[160], t2[160];
    double md = metrics_nanmean(dice, n), mi = metrics_nanmean(iou, n);
    snprintf(t1, sizeof t1, "Dice: %d pairs, mean %.3f", n, isfinite(md) ? md : 0.0);
    snprintf(t2, sizeof t2, "IoU: %d pairs, mean %.3f", n, isfinite(mi) ? mi : 0.0);
    PlotAxesSpec a = { .x0 = 0, .x1 = 1, .title = t1, .xlabel = "Dice (pairs with a non-empty reference)",
                       .ylabel = "pairs (subject x structure)",
                       .scale = 2, .auto_y = 1, .y_integer = 1 };
    rc = plot_histogram(&c, 10, 10, 680, 540, &a, dice, n, 20, PLOT_RGB(52, 110, 190));
    PlotAxesSpec b = a;
    b.title = t2;
    b.xlabel = "IoU (same pairs)";
    if (rc == SEG_OK) rc = plot_histogram(&c, 710, 10, 680, 540, &b, iou, n, 20, PLOT_RGB(214, 120, 40));
    if (rc == SEG_OK) rc = write_png(&c, r, "metrics_distribution");
    plot_canvas_free(&c);
    free(dice);
    free(iou);
    return rc;
}

/* ---- structure_ranking_<tag>.png ---- */

typedef struct { int s; double v; } Rank;
static int cmp_rank(const void *a, const void *b)
{
    const Rank *x = a, *y = b;
    return x->v < y->v ? 1 : x->v > y->v ? -1 : x->s - y->s;
}

static int ranking(const ReportRun *r)
{
    const int ns = r->labels->n;
    Rank *rk = malloc(sizeof *rk * (size_t)ns);
    char **names = calloc((size_t)ns, sizeof *names);
    double *v = malloc(sizeof(double) * (size_t)ns);
    PlotColor *cols = malloc(sizeof(PlotColor) * (size_t)ns);
    int rc = (rk && names && v && cols) ? SEG_OK : seg_err(SEG_ENOMEM, "ranking");
    int n = 0, absent = 0;
    for (int s = 0; s < ns && rc == SEG_OK; s++) {
        MetricsSummary m;
        if ((rc = metrics_summarize(r->res, r->n_subjects, ns, s, &m)) < 0) break;
        if (isfinite(m.dice_mean)) rk[n++] = (Rank){ s, m.dice_mean };
        else absent++;
    }
    if (rc == SEG_OK && n == 0) {
        /* nothing present anywhere: draw a figure that says so */
        PlotCanvas c;
        rc = plot_canvas_init(&c, 900, 120, PLOT_WHITE);
        if (rc == SEG_OK) {
            plot_text(&c, 20, 45, "No structure has a non-empty reference: nothing to rank.", 2, PLOT_BLACK);
            rc = write_png(&c, r, "structure_ranking");
            plot_canvas_free(&c);
        }
    } else if (rc == SEG_OK) {
        qsort(rk, (size_t)n, sizeof *rk, cmp_rank);
        for (int i = 0; i < n && rc == SEG_OK; i++) {
            char pretty[256];
            report_pretty_name(r->labels->names[rk[i].s], pretty, sizeof pretty);
            names[i] = strdup(pretty);
            if (!names[i]) rc = seg_err(SEG_ENOMEM, "ranking");
            v[i] = rk[i].v;
            cols[i] = color_of(rk[i].s);
        }
        char title[200];
        if (absent) snprintf(title, sizeof title, "Structures by mean Dice (%d ranked; %d never present in the reference)", n, absent);
        else snprintf(title, sizeof title, "Structures by mean Dice (%d)", n);
        PlotAxesSpec a = { .x0 = 0, .x1 = 1, .title = title, .xlabel = "mean Dice over subjects with the structure", .scale = 2 };
        int h = plot_hbar_height(n, 2);
        PlotCanvas c;
        if (rc == SEG_OK) rc = plot_canvas_init(&c, 1300, h + 20, PLOT_WHITE);
        if (rc == SEG_OK) {
            rc = plot_hbar_chart(&c, 10, 10, 1280, h, &a, (const char *const *)names, v, n, cols);
            if (rc == SEG_OK) rc = write_png(&c, r, "structure_ranking");
            plot_canvas_free(&c);
        }
    }
    if (names)
        for (int i = 0; i < ns; i++) free(names[i]);
    free(names); free(rk); free(v); free(cols);
    return rc;
}

int report_png_charts(const ReportRun *r)
{
    /* one failing chart does not keep the other from being drawn */
    const int rc = distribution(r);
    const int rc2 = ranking(r);
    return rc < 0 ? rc : rc2;
}

/* ---- segmentation_visualization_<tag>.png ---- */

static int plane_has(const MetricsStack *m, int s, int z)
{
    const uint8_t *p = m->planes[(size_t)s * (size_t)m->nz + (size_t)z];
    if (!p) return 0;
    for (size_t i = 0; i < m->plane_bytes; i++)
        if (p[i]) return 1;
    return 0;
}

/* Up to k slices spread over the reference's extent, each the slice with the most
 * reference structures in its part of the range. */
static int pick_slices(const ReportSubject *s, int k, int *out)
{
    const int nz = s->ref.nz, ns = s->ref.n_struct;
    int *cnt = calloc((size_t)nz, sizeof *cnt);
    if (!cnt) return 0;
    int z0 = -1, z1 = -1;
    for (int z = 0; z < nz; z++) {
        for (int t = 0; t < ns; t++) cnt[z] += plane_has(&s->ref, t, z) || plane_has(&s->pred, t, z);
        if (cnt[z]) { if (z0 < 0) z0 = z; z1 = z; }
    }
    if (z0 < 0) { z0 = 0; z1 = nz - 1; }
    int span = z1 - z0 + 1, n = k < span ? k : span;
    for (int i = 0; i < n; i++) {
        /* the middle half of each part, so that picks do not crowd at the part edges */
        int a = z0 + (int)((long)span * (4 * i + 1) / (4 * n)), b = z0 + (int)((long)span * (4 * i + 3) / (4 * n)) - 1;
        if (b < a) b = a;
        int best = a;
        for (int z = a; z <= b; z++)
            if (cnt[z] > cnt[best]) best = z;
        out[i] = best;
    }
    free(cnt);
    return n;
}

int report_png_overlay(const ReportRun *r, const ReportSubject *s, int max_slices)
{
    const int nx = s->ref.nx, ny = s->ref.ny, ns = s->ref.n_struct;
    if (max_slices < 1) max_slices = 1;
    int *zs = malloc(sizeof(int) * (size_t)max_slices);
    float *img = malloc(sizeof(float) * (size_t)nx * (size_t)ny);
    char *shown = calloc((size_t)ns, 1);
    if (!zs || !img || !shown) { free(zs); free(img); free(shown); return seg_err(SEG_ENOMEM, "overlay"); }
    const int n = pick_slices(s, max_slices, zs);
    /* tiles keep the physical aspect of a slice */
    const double ax = nx * s->ref.spacing[0], ay = ny * s->ref.spacing[1];
    const int tw = 300, th = (int)lround(tw * ay / ax) > 60 ? (int)lround(tw * ay / ax) : 60;
    const int scale = 2, lh = plot_text_height(scale), gap = 12, left = plot_text_width("Prediction", scale) + 24;
    const int W = left + n * (tw + gap) + gap > 900 ? left + n * (tw + gap) + gap : 900;
    for (int i = 0; i < n; i++)
        for (int t = 0; t < ns; t++)
            if (plane_has(&s->ref, t, zs[i]) || plane_has(&s->pred, t, zs[i])) shown[t] = 1;
    int n_shown = 0, colw = 0;
    for (int t = 0; t < ns; t++)
        if (shown[t]) {
            char pretty[256];
            int w = plot_text_width(report_pretty_name(r->labels->names[t], pretty, sizeof pretty), scale);
            if (w > colw) colw = w;
            n_shown++;
        }
    colw += lh + 24;   /* swatch + spacing */
    if (colw > W - 2 * gap) colw = W - 2 * gap;
    const int ncol = (W - 2 * gap) / colw > 0 ? (W - 2 * gap) / colw : 1, nrow = (n_shown + ncol - 1) / ncol;
    const int top = 16 + plot_text_height(scale + 1) + 14 + lh + 8;
    const int legend_y = top + 2 * (th + gap) + 10;
    const int H = legend_y + lh + 12 + nrow * (lh + 8) + 16;
    PlotCanvas c;
    int rc = plot_canvas_init(&c, W, H, PLOT_WHITE);
    if (rc < 0) { free(zs); free(img); free(shown); return rc; }
    char title[300], buf[300];
    snprintf(title, sizeof title, "Subject %s: reference (top) and prediction (bottom)", s->id);
    plot_text_fit(buf, sizeof buf, title, scale + 1, W - 2 * gap);
    plot_text(&c, gap, 16, buf, scale + 1, PLOT_BLACK);
    const int rows_y[2] = { top, top + th + gap };
    plot_text_align(&c, left - 12, rows_y[0] + th / 2, "Reference", scale, PLOT_BLACK, 1, 0);
    plot_text_align(&c, left - 12, rows_y[1] + th / 2, "Prediction", scale, PLOT_BLACK, 1, 0);
    for (int i = 0; i < n; i++) {
        const int z = zs[i], x = left + i * (tw + gap);
        snprintf(title, sizeof title, "slice %d of %d", z + 1, s->ref.nz);
        plot_text_fit(buf, sizeof buf, title, scale, tw);
        plot_text_align(&c, x + tw / 2, top - 8, buf, scale, PLOT_BLACK, 0, 1);
        if (s->ct) for (size_t p = 0; p < (size_t)nx * ny; p++) img[p] = s->ct[(size_t)z * nx * ny + p];
        else memset(img, 0, sizeof(float) * (size_t)nx * ny);
        for (int row = 0; row < 2; row++) {
            const MetricsStack *m = row ? &s->pred : &s->ref;
            plot_image_gray(&c, x, rows_y[row], tw, th, img, nx, ny, -160.f, 240.f);   /* soft-tissue window L40 W400 */
            for (int t = 0; t < ns; t++) {
                const uint8_t *p = m->planes[(size_t)t * m->nz + (size_t)z];
                if (p) plot_mask_bits(&c, x, rows_y[row], tw, th, p, nx, ny, color_of(t), 0.55f);
            }
            plot_rect(&c, x - 1, rows_y[row] - 1, tw + 2, th + 2, 1, PLOT_GRAY);
        }
    }
    snprintf(title, sizeof title, "%s (%d shown)%s", "Structures", n_shown, s->ct ? "" : ", no CT available: black background");
    plot_text_fit(buf, sizeof buf, title, scale, W - 2 * gap);
    plot_text(&c, gap, legend_y, buf, scale, PLOT_BLACK);
    int k = 0;
    for (int t = 0; t < ns; t++) {
        if (!shown[t]) continue;
        int col = k % ncol, row = k / ncol;
        int x = gap + col * colw, y = legend_y + lh + 12 + row * (lh + 8);
        plot_fill_rect(&c, x, y, lh, lh, color_of(t));
        char pretty[256];
        plot_text_fit(buf, sizeof buf, report_pretty_name(r->labels->names[t], pretty, sizeof pretty), scale, colw - lh - 16);
        plot_text(&c, x + lh + 8, y, buf, scale, PLOT_BLACK);
        k++;
    }
    rc = write_png(&c, r, "segmentation_visualization");
    plot_canvas_free(&c);
    free(zs); free(img); free(shown);
    return rc;
}
