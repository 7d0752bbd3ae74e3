/* common/plot.c : canvas, primitives, text, axes, charts and PNG output (see plot.h). */
#define _POSIX_C_SOURCE 200809L
#include "plot.h"
#include "maskpack.h"
#include "err.h"
#include "fsutil.h"
#include <errno.h>
#include <float.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GLYPH_W 5
#define GLYPH_H 9
#define CELL_W  6

/* ---- colours ---- */

PlotColor plot_palette(int i)
{
    static const PlotColor pal[10] = {
        { 31, 119, 180 }, { 230, 97, 1 },  { 44, 160, 44 },  { 214, 39, 40 },   { 148, 103, 189 },
        { 140, 86, 75 },  { 227, 119, 194 }, { 100, 100, 100 }, { 188, 189, 34 }, { 23, 190, 207 },
    };
    if (i < 0) i = -i;
    return pal[i % 10];
}

static PlotColor hsv(double h, double s, double v)
{
    h = fmod(h, 1.0) * 6.0;
    int k = (int)h;
    double f = h - k, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f)), r, g, b;
    switch (k) {
    case 0: r = v; g = t; b = p; break;
    case 1: r = q; g = v; b = p; break;
    case 2: r = p; g = v; b = t; break;
    case 3: r = p; g = q; b = v; break;
    case 4: r = t; g = p; b = v; break;
    default: r = v; g = p; b = q; break;
    }
    return PLOT_RGB(lround(r * 255), lround(g * 255), lround(b * 255));
}

PlotColor plot_label_color(int i)
{
    if (i < 0) i = -i;
    return hsv(0.07 + i * 0.381966, i % 2 ? 0.65 : 0.85, i % 3 == 2 ? 0.7 : 0.95);
}

/* ---- canvas ---- */

int plot_canvas_init(PlotCanvas *c, int w, int h, PlotColor bg)
{
    c->w = c->h = 0;
    c->rgb = NULL;
    if (w < 1 || h < 1 || w > 16384 || h > 16384) return seg_err(SEG_EARG, "plot: canvas size %dx%d out of range", w, h);
    c->rgb = malloc((size_t)w * h * 3);
    if (!c->rgb) return seg_err(SEG_ENOMEM, "plot: canvas %dx%d", w, h);
    c->w = w;
    c->h = h;
    for (size_t i = 0; i < (size_t)w * h; i++) {
        c->rgb[3 * i] = bg.r; c->rgb[3 * i + 1] = bg.g; c->rgb[3 * i + 2] = bg.b;
    }
    return SEG_OK;
}

void plot_canvas_free(PlotCanvas *c)
{
    if (!c) return;
    free(c->rgb);
    c->rgb = NULL;
    c->w = c->h = 0;
}

void plot_pixel(PlotCanvas *c, int x, int y, PlotColor col)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    uint8_t *p = c->rgb + 3 * ((size_t)y * c->w + x);
    p[0] = col.r; p[1] = col.g; p[2] = col.b;
}

void plot_blend(PlotCanvas *c, int x, int y, PlotColor col, float a)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    if (a <= 0) return;
    if (a > 1) a = 1;
    uint8_t *p = c->rgb + 3 * ((size_t)y * c->w + x);
    p[0] = (uint8_t)lrintf(p[0] + a * (col.r - p[0]));
    p[1] = (uint8_t)lrintf(p[1] + a * (col.g - p[1]));
    p[2] = (uint8_t)lrintf(p[2] + a * (col.b - p[2]));
}

void plot_fill_rect(PlotCanvas *c, int x, int y, int w, int h, PlotColor col)
{
    int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int x1 = x + w > c->w ? c->w : x + w, y1 = y + h > c->h ? c->h : y + h;
    for (int yy = y0; yy < y1; yy++)
        for (int xx = x0; xx < x1; xx++) {
            uint8_t *p = c->rgb + 3 * ((size_t)yy * c->w + xx);
            p[0] = col.r; p[1] = col.g; p[2] = col.b;
        }
}

void plot_rect(PlotCanvas *c, int x, int y, int w, int h, int t, PlotColor col)
{
    if (t < 1) t = 1;
    plot_fill_rect(c, x, y, w, t, col);
    plot_fill_rect(c, x, y + h - t, w, t, col);
    plot_fill_rect(c, x, y, t, h, col);
    plot_fill_rect(c, x + w - t, y, t, h, col);
}

void plot_line(PlotCanvas *c, double x0, double y0, double x1, double y1, int t, PlotColor col)
{
    if (t < 1) t = 1;
    if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1)) return;
    /* clamp far-away points so the step count stays bounded (the line is clipped anyway) */
    const double lim = 4.0 * (c->w > c->h ? c->w : c->h) + 100;
    if (fabs(x0) > lim || fabs(y0) > lim || fabs(x1) > lim || fabs(y1) > lim) {
        double dx = x1 - x0, dy = y1 - y0, tlo = 0, thi = 1;
        const double p[4] = { -dx, dx, -dy, dy }, q[4] = { x0 + lim, lim - x0, y0 + lim, lim - y0 };
        for (int i = 0; i < 4; i++) {                /* Liang-Barsky against the square [-lim, lim]^2 */
            if (p[i] == 0) { if (q[i] < 0) return; continue; }
            double r = q[i] / p[i];
            if (p[i] < 0) { if (r > tlo) tlo = r; } else if (r < thi) thi = r;
        }
        if (tlo > thi) return;
        x1 = x0 + thi * dx; y1 = y0 + thi * dy; x0 += tlo * dx; y0 += tlo * dy;
    }
    double dx = x1 - x0, dy = y1 - y0;
    int steps = (int)ceil(fmax(fabs(dx), fabs(dy)));
    if (steps < 1) steps = 1;
    int off = (t - 1) / 2;
    for (int i = 0; i <= steps; i++) {
        int x = (int)lround(x0 + dx * i / steps), y = (int)lround(y0 + dy * i / steps);
        if (t == 1) plot_pixel(c, x, y, col);
        else plot_fill_rect(c, x - off, y - off, t, t, col);
    }
}

void plot_circle(PlotCanvas *c, int cx, int cy, int r, int filled, PlotColor col)
{
    if (r < 0) return;
    for (int y = -r; y <= r; y++)
        for (int x = -r; x <= r; x++) {
            int d2 = x * x + y * y;
            if (d2 > r * r + r) continue;
            if (!filled && d2 < (r - 1) * (r - 1) + (r - 1)) continue;
            plot_pixel(c, cx + x, cy + y, col);
        }
}

/* ---- text ---- */

int plot_text_width(const char *s, int scale)
{
    if (scale < 1) scale = 1;
    size_t n = s ? strlen(s) : 0;
    return n ? (int)n * CELL_W * scale - scale : 0;
}

int plot_text_height(int scale)
{
    return GLYPH_H * (scale < 1 ? 1 : scale);
}

void plot_text(PlotCanvas *c, int x, int y, const char *s, int scale, PlotColor col)
{
    if (!s) return;
    if (scale < 1) scale = 1;
    for (; *s; s++, x += CELL_W * scale) {
        const uint8_t *g = plot_font_glyph((unsigned char)*s);
        for (int r = 0; r < GLYPH_H; r++)
            for (int k = 0; k < GLYPH_W; k++)
                if (g[r] & (0x10 >> k)) plot_fill_rect(c, x + k * scale, y + r * scale, scale, scale, col);
    }
}

void plot_text_up(PlotCanvas *c, int x, int y, const char *s, int scale, PlotColor col)
{
    if (!s) return;
    if (scale < 1) scale = 1;
    int w = plot_text_width(s, scale);
    /* glyph pixel (k, r) of the character starting at u along the text goes to
     * (x + r, y + w - 1 - (u + k)): the text's top edge faces left */
    int u = 0;
    for (; *s; s++, u += CELL_W * scale) {
        const uint8_t *g = plot_font_glyph((unsigned char)*s);
        for (int r = 0; r < GLYPH_H; r++)
            for (int k = 0; k < GLYPH_W; k++)
                if (g[r] & (0x10 >> k))
                    plot_fill_rect(c, x + r * scale, y + w - (u + (k + 1) * scale), scale, scale, col);
    }
}

void plot_text_align(PlotCanvas *c, int x, int y, const char *s, int scale, PlotColor col, int ha, int va)
{
    int w = plot_text_width(s, scale), h = plot_text_height(scale);
    int tx = ha < 0 ? x : ha == 0 ? x - w / 2 : x - w;
    int ty = va < 0 ? y : va == 0 ? y - h / 2 : y - h;
    plot_text(c, tx, ty, s, scale, col);
}

int plot_text_fit(char *out, size_t cap, const char *s, int scale, int max_w)
{
    if (!cap) return 0;
    out[0] = 0;
    if (!s) return 0;
    size_t n = strlen(s);
    if (plot_text_width(s, scale) <= max_w && n < cap) {
        memcpy(out, s, n + 1);
        return plot_text_width(out, scale);
    }
    if (plot_text_width("...", scale) > max_w || cap < 4) return 0;
    size_t keep = n < cap - 4 ? n : cap - 4;
    while (keep > 0 && plot_text_width("...", scale) + (int)keep * CELL_W * (scale < 1 ? 1 : scale) > max_w) keep--;
    memcpy(out, s, keep);
    memcpy(out + keep, "...", 4);
    return plot_text_width(out, scale);
}

/* ---- images ---- */

void plot_image_gray(PlotCanvas *c, int x, int y, int w, int h, const float *img, int iw, int ih, float lo, float hi)
{
    if (w <= 0 || h <= 0 || iw <= 0 || ih <= 0) return;
    float span = hi > lo ? hi - lo : 1;
    for (int yy = 0; yy < h; yy++) {
        int sy = (int)((int64_t)yy * ih / h);
        for (int xx = 0; xx < w; xx++) {
            float v = (img[(size_t)sy * iw + (size_t)((int64_t)xx * iw / w)] - lo) / span;
            v = v < 0 ? 0 : v > 1 ? 1 : v;   /* NaN also ends up 0 after the comparisons */
            uint8_t g = (uint8_t)lrintf(v * 255);
            plot_pixel(c, x + xx, y + yy, PLOT_RGB(g, g, g));
        }
    }
}

static void mask_common(PlotCanvas *c, int x, int y, int w, int h, const uint8_t *m, int packed, int iw, int ih,
                        PlotColor col, float alpha)
{
    if (w <= 0 || h <= 0 || iw <= 0 || ih <= 0) return;
    for (int yy = 0; yy < h; yy++) {
        int sy = (int)((int64_t)yy * ih / h);
        for (int xx = 0; xx < w; xx++) {
            size_t p = (size_t)sy * iw + (size_t)((int64_t)xx * iw / w);
            int set = packed ? maskpack_get(m, p) : m[p] != 0;
            if (set) plot_blend(c, x + xx, y + yy, col, alpha);
        }
    }
}

void plot_mask(PlotCanvas *c, int x, int y, int w, int h, const uint8_t *mask, int iw, int ih, PlotColor col, float alpha)
{
    mask_common(c, x, y, w, h, mask, 0, iw, ih, col, alpha);
}

void plot_mask_bits(PlotCanvas *c, int x, int y, int w, int h, const uint8_t *bits, int iw, int ih, PlotColor col, float alpha)
{
    mask_common(c, x, y, w, h, bits, 1, iw, ih, col, alpha);
}

/* ---- ticks ---- */

typedef struct Ticks {
    int    n;
    double v[64];
    char   s[64][32];
    int    maxw;
} Ticks;

/* Ticks at multiples of a 1/2/5 x 10^k step, at most max_n of them inside [lo, hi]. */
static void make_ticks(Ticks *t, double lo, double hi, int max_n, int integer, int scale)
{
    t->n = 0;
    t->maxw = 0;
    if (max_n < 2) max_n = 2;
    if (max_n > 60) max_n = 60;
    double span = hi - lo;
    if (!(span > 0)) return;
    double raw = span / max_n, mag = pow(10, floor(log10(raw))), step = mag;
    for (int i = 0; i < 4 && step < raw; i++) step = mag * (i == 0 ? 2 : i == 1 ? 5 : 10);
    if (integer && step < 1) step = 1;
    int dec = 0;
    if (!integer) {
        dec = (int)ceil(-log10(step) - 1e-9);
        if (dec < 0) dec = 0;
        if (dec > 12) dec = 12;
    }
    double first = ceil(lo / step - 1e-9) * step;
    for (int i = 0; t->n < 64; i++) {
        double v = first + i * step;
        if (v > hi + step * 1e-9) break;
        if (fabs(v) < step * 1e-9) v = 0;   /* no "-0.0" */
        t->v[t->n] = v;
        if (fabs(v) >= 1e7 || (v != 0 && fabs(v) < 1e-5)) snprintf(t->s[t->n], sizeof t->s[0], "%.3g", v);
        else snprintf(t->s[t->n], sizeof t->s[0], "%.*f", dec, v);
        int w = plot_text_width(t->s[t->n], scale);
        if (w > t->maxw) t->maxw = w;
        t->n++;
    }
}

/* ---- axes ---- */

double plot_px(const PlotAxes *a, double x)
{
    return a->x + (x - a->x0) / (a->x1 - a->x0) * (a->w - 1);
}

double plot_py(const PlotAxes *a, double y)
{
    return a->y + a->h - 1 - (y - a->y0) / (a->y1 - a->y0) * (a->h - 1);
}

static int has(const char *s) { return s && s[0]; }

int plot_axes(PlotCanvas *c, int bx, int by, int bw, int bh, const PlotAxesSpec *s, PlotAxes *a)
{
    int sc = s->scale < 1 ? 1 : s->scale, tsc = sc + 1;
    int th = plot_text_height(sc), pad = 4 * sc, tick = 3 * sc, cats = s->y_cats && s->n_cats > 0;
    char buf[512];
    memset(a, 0, sizeof *a);
    a->scale = sc;
    a->x0 = s->x0; a->x1 = s->x1;
    a->y0 = cats ? 0 : s->y0; a->y1 = cats ? s->n_cats : s->y1;
    if (!(a->x1 > a->x0)) { double m = fabs(a->x0) > 0 ? fabs(a->x0) * 0.1 : 1; a->x0 -= m; a->x1 += m; }
    if (!(a->y1 > a->y0)) { double m = fabs(a->y0) > 0 ? fabs(a->y0) * 0.1 : 1; a->y0 -= m; a->y1 += m; }
    if (!isfinite(a->x0) || !isfinite(a->x1) || !isfinite(a->y0) || !isfinite(a->y1))
        return seg_err(SEG_EARG, "plot '%s': axis range is not finite", has(s->title) ? s->title : "");

    int top = by + pad + (has(s->title) ? plot_text_height(tsc) + pad : 0);
    int bottom = by + bh - pad - (has(s->xlabel) ? th + pad : 0) - th - tick - pad;
    int left0 = bx + pad + (has(s->ylabel) ? th + pad : 0);
    int ah = bottom - top;
    if (ah < 2 * th) return seg_err(SEG_EARG, "plot '%s': box %dx%d too small for its text (need about %d px more height)",
                                    has(s->title) ? s->title : "", bw, bh, 2 * th - ah);
    /* y ticks: labels need room vertically, their width sets the left margin */
    Ticks yt = { 0 };
    int ylab_w;
    if (cats) {
        int row = ah / s->n_cats;
        if (row < th + 2)
            return seg_err(SEG_EARG, "plot '%s': %d rows need %d px of height, the box has %d (see plot_hbar_height)",
                           has(s->title) ? s->title : "", s->n_cats, plot_hbar_height(s->n_cats, sc), bh);
        ylab_w = 0;
        for (int i = 0; i < s->n_cats; i++) {
            int w = plot_text_width(s->y_cats[i], sc);
            if (w > ylab_w) ylab_w = w;
        }
        if (ylab_w > (bw * 2) / 5) ylab_w = (bw * 2) / 5;   /* long names get "..." */
    } else {
        make_ticks(&yt, a->y0, a->y1, ah / (th * 5 / 2) + 1, s->y_integer, sc);
        ylab_w = yt.maxw;
    }
    int left = left0 + ylab_w + tick + pad / 2;
    /* x ticks: as many as fit side by side without touching; the last label may hang
     * half its width past the data area, so keep that much room on the right */
    Ticks xt = { 0 };
    int right = bx + bw - pad, aw = 0;
    for (int pass = 0; pass < 2; pass++) {
        aw = right - left;
        if (aw < 4 * th) return seg_err(SEG_EARG, "plot '%s': box %dx%d too narrow for its labels (need about %d px more width)",
                                        has(s->title) ? s->title : "", bw, bh, 4 * th - aw);
        for (int want = aw / (3 * th) + 1; want >= 2; want--) {
            make_ticks(&xt, a->x0, a->x1, want, s->x_integer, sc);
            if (xt.n < 2 || (xt.maxw + 3 * CELL_W * sc) * xt.n <= aw) break;
        }
        int hang = xt.n ? (plot_text_width(xt.s[xt.n - 1], sc) + 1) / 2 : 0;
        double last_px = xt.n ? left + (xt.v[xt.n - 1] - a->x0) / (a->x1 - a->x0) * (aw - 1) : left;
        int need = (int)ceil(last_px + hang) - (bx + bw - pad);
        if (need <= 0) break;
        right -= need;
    }
    a->x = left; a->y = top; a->w = aw; a->h = ah;

    /* grid, frame, ticks */
    if (!s->no_grid) {
        for (int i = 0; i < xt.n; i++) plot_line(c, plot_px(a, xt.v[i]), a->y, plot_px(a, xt.v[i]), a->y + a->h - 1, 1, PLOT_LIGHT_GRAY);
        for (int i = 0; i < yt.n; i++) plot_line(c, a->x, plot_py(a, yt.v[i]), a->x + a->w - 1, plot_py(a, yt.v[i]), 1, PLOT_LIGHT_GRAY);
    }
    plot_rect(c, a->x - 1, a->y - 1, a->w + 2, a->h + 2, 1, PLOT_BLACK);
    for (int i = 0; i < xt.n; i++) {
        int px = (int)lround(plot_px(a, xt.v[i]));
        plot_fill_rect(c, px - (sc - 1) / 2, a->y + a->h + 1, sc, tick, PLOT_BLACK);
        plot_text_align(c, px, a->y + a->h + 1 + tick + sc, xt.s[i], sc, PLOT_BLACK, 0, -1);
    }
    for (int i = 0; i < yt.n; i++) {
        int py = (int)lround(plot_py(a, yt.v[i]));
        plot_fill_rect(c, a->x - 1 - tick, py - (sc - 1) / 2, tick, sc, PLOT_BLACK);
        plot_text_align(c, a->x - 1 - tick - pad / 2, py, yt.s[i], sc, PLOT_BLACK, 1, 0);
    }
    for (int i = 0; cats && i < s->n_cats; i++) {
        plot_text_fit(buf, sizeof buf, s->y_cats[i], sc, ylab_w);
        double yc = (plot_py(a, s->n_cats - i) + plot_py(a, s->n_cats - 1 - i)) / 2;
        plot_text_align(c, a->x - 1 - tick - pad / 2, (int)lround(yc), buf, sc, PLOT_BLACK, 1, 0);
    }
    /* title, axis labels: centred on the data area, shortened to the box */
    if (has(s->title)) {
        plot_text_fit(buf, sizeof buf, s->title, tsc, bw - 2 * pad);
        int cx = a->x + a->w / 2, w = plot_text_width(buf, tsc);
        if (cx - w / 2 < bx + pad) cx = bx + pad + w / 2;
        if (cx + (w - w / 2) > bx + bw - pad) cx = bx + bw - pad - (w - w / 2);
        plot_text_align(c, cx, by + pad, buf, tsc, PLOT_BLACK, 0, -1);
    }
    if (has(s->xlabel)) {
        plot_text_fit(buf, sizeof buf, s->xlabel, sc, bw - 2 * pad);
        int cx = a->x + a->w / 2, w = plot_text_width(buf, sc);
        if (cx + (w - w / 2) > bx + bw - pad) cx = bx + bw - pad - (w - w / 2);
        if (cx - w / 2 < bx + pad) cx = bx + pad + w / 2;
        plot_text_align(c, cx, by + bh - pad, buf, sc, PLOT_BLACK, 0, 1);
    }
    if (has(s->ylabel)) {
        int w = plot_text_fit(buf, sizeof buf, s->ylabel, sc, a->h);
        plot_text_up(c, bx + pad, a->y + (a->h - w) / 2, buf, sc, PLOT_BLACK);
    }
    return SEG_OK;
}

/* ---- series and legends ---- */

/* Clip the segment to the data area (Liang-Barsky); 0 if nothing is left. */
static int clip_seg(const PlotAxes *a, double *x0, double *y0, double *x1, double *y1)
{
    double dx = *x1 - *x0, dy = *y1 - *y0, t0 = 0, t1 = 1;
    const double p[4] = { -dx, dx, -dy, dy };
    const double q[4] = { *x0 - a->x, a->x + a->w - 1 - *x0, *y0 - a->y, a->y + a->h - 1 - *y0 };
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) { if (q[i] < 0) return 0; continue; }
        double r = q[i] / p[i];
        if (p[i] < 0) { if (r > t1) return 0; if (r > t0) t0 = r; }
        else { if (r < t0) return 0; if (r < t1) t1 = r; }
    }
    *x1 = *x0 + t1 * dx; *y1 = *y0 + t1 * dy;
    *x0 += t0 * dx; *y0 += t0 * dy;
    return 1;
}

void plot_series(PlotCanvas *c, const PlotAxes *a, const PlotSeries *s)
{
    int t = s->thickness < 1 ? 1 : s->thickness, have_prev = 0;
    double px = 0, py = 0;
    for (int i = 0; i < s->n; i++) {
        double x = s->x ? s->x[i] : i, y = s->y[i];
        if (!isfinite(x) || !isfinite(y)) { have_prev = 0; continue; }
        double cx = plot_px(a, x), cy = plot_py(a, y);
        if (have_prev) {
            double x0 = px, y0 = py, x1 = cx, y1 = cy;
            if (clip_seg(a, &x0, &y0, &x1, &y1)) plot_line(c, x0, y0, x1, y1, t, s->color);
        }
        if (s->marker > 0 && cx >= a->x && cx <= a->x + a->w - 1 && cy >= a->y && cy <= a->y + a->h - 1)
            plot_circle(c, (int)lround(cx), (int)lround(cy), s->marker, 1, s->color);
        px = cx; py = cy; have_prev = 1;
    }
}

void plot_band(PlotCanvas *c, const PlotAxes *a, const double *x, const double *lo, const double *hi, int n,
               PlotColor col, float alpha)
{
    const int ytop = a->y, ybot = a->y + a->h - 1;
    for (int i = 0; i + 1 < n; i++) {
        if (!isfinite(x[i]) || !isfinite(x[i + 1]) || !(x[i + 1] > x[i]) || !isfinite(lo[i]) || !isfinite(hi[i]) ||
            !isfinite(lo[i + 1]) || !isfinite(hi[i + 1]))
            continue;
        const double px0 = plot_px(a, x[i]), px1 = plot_px(a, x[i + 1]);
        /* each pixel column belongs to one segment: [ceil(px0), ceil(px1)) */
        for (int px = (int)ceil(px0); px < (int)ceil(px1); px++) {
            if (px < a->x || px > a->x + a->w - 1) continue;
            const double f = (px - px0) / (px1 - px0);
            double y0 = plot_py(a, lo[i] + f * (lo[i + 1] - lo[i])), y1 = plot_py(a, hi[i] + f * (hi[i + 1] - hi[i]));
            if (y0 < y1) { double t = y0; y0 = y1; y1 = t; }
            const int ya = y1 < ytop ? ytop : (int)lround(y1), yb = y0 > ybot ? ybot : (int)lround(y0);
            for (int py = ya; py <= yb; py++) plot_blend(c, px, py, col, alpha);
        }
    }
}

void plot_legend(PlotCanvas *c, const PlotAxes *a, const PlotSeries *s, int n, int corner)
{
    if (corner == PLOT_LEGEND_NONE || n <= 0) return;
    int sc = a->scale, th = plot_text_height(sc), pad = 4 * sc, sample = 6 * CELL_W * sc / 2, row = th + 2 * sc;
    int maxw = a->w - 2 * pad - sample - 3 * pad;
    if (maxw < plot_text_width("...", sc)) return;
    char buf[256];
    int tw = 0;
    for (int i = 0; i < n; i++) {
        int w = plot_text_fit(buf, sizeof buf, s[i].name ? s[i].name : "", sc, maxw);
        if (w > tw) tw = w;
    }
    int w = pad + sample + pad + tw + pad, h = pad + n * row - 2 * sc + pad;
    if (h > a->h - 2 * pad) return;   /* no room: better no legend than one over the frame */
    int x = corner == PLOT_LEGEND_TOP_LEFT || corner == PLOT_LEGEND_BOTTOM_LEFT ? a->x + pad : a->x + a->w - pad - w;
    int y = corner == PLOT_LEGEND_TOP_LEFT || corner == PLOT_LEGEND_TOP_RIGHT ? a->y + pad : a->y + a->h - pad - h;
    plot_fill_rect(c, x, y, w, h, PLOT_WHITE);
    plot_rect(c, x, y, w, h, 1, PLOT_GRAY);
    for (int i = 0; i < n; i++) {
        int ty = y + pad + i * row, cy = ty + th * 7 / 18;
        int t = s[i].thickness < 1 ? 1 : s[i].thickness;
        plot_line(c, x + pad, cy, x + pad + sample - 1, cy, t, s[i].color);
        if (s[i].marker > 0) plot_circle(c, x + pad + sample / 2, cy, s[i].marker, 1, s[i].color);
        plot_text_fit(buf, sizeof buf, s[i].name ? s[i].name : "", sc, maxw);
        plot_text(c, x + pad + sample + pad, ty, buf, sc, PLOT_BLACK);
    }
}

/* Range of the finite values with a 5% margin (a flat range gets +-0.5 or +-10%). */
static void data_range(const double *v, int n, double *lo, double *hi)
{
    double a = DBL_MAX, b = -DBL_MAX;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) { if (v[i] < a) a = v[i]; if (v[i] > b) b = v[i]; }
    if (a > b) { *lo = 0; *hi = 1; return; }
    if (a == b) { double m = a != 0 ? fabs(a) * 0.1 : 0.5; *lo = a - m; *hi = b + m; return; }
    double m = (b - a) * 0.05;
    *lo = a - m; *hi = b + m;
}

int plot_line_chart(PlotCanvas *c, int bx, int by, int bw, int bh, const PlotAxesSpec *s,
                    const PlotSeries *series, int n, int legend_corner)
{
    PlotAxesSpec sp = *s;
    if (s->auto_x || s->auto_y) {
        double xlo = DBL_MAX, xhi = -DBL_MAX, ylo = DBL_MAX, yhi = -DBL_MAX;
        for (int k = 0; k < n; k++)
            for (int i = 0; i < series[k].n; i++) {
                double x = series[k].x ? series[k].x[i] : i, y = series[k].y[i];
                if (!isfinite(x) || !isfinite(y)) continue;
                xlo = fmin(xlo, x); xhi = fmax(xhi, x);
                ylo = fmin(ylo, y); yhi = fmax(yhi, y);
            }
        double xs[2] = { xlo, xhi }, ys[2] = { ylo, yhi };
        if (s->auto_x) {
            if (xlo > xhi) { sp.x0 = 0; sp.x1 = 1; }
            else if (s->x_integer) { sp.x0 = floor(xlo); sp.x1 = ceil(xhi) > floor(xlo) ? ceil(xhi) : floor(xlo) + 1; }
            else data_range(xs, 2, &sp.x0, &sp.x1);
        }
        if (s->auto_y) data_range(ys, ylo > yhi ? 0 : 2, &sp.y0, &sp.y1);
    }
    PlotAxes a;
    TRY(plot_axes(c, bx, by, bw, bh, &sp, &a));
    for (int k = 0; k < n; k++) plot_series(c, &a, &series[k]);
    plot_legend(c, &a, series, n, legend_corner);
    return SEG_OK;
}

int plot_histogram(PlotCanvas *c, int bx, int by, int bw, int bh, const PlotAxesSpec *s,
                   const double *v, int n, int bins, PlotColor col)
{
    if (bins < 1 || bins > 100000) return seg_err(SEG_EARG, "plot_histogram: %d bins", bins);
    PlotAxesSpec sp = *s;
    if (s->auto_x) {
        double lo = DBL_MAX, hi = -DBL_MAX;
        for (int i = 0; i < n; i++)
            if (isfinite(v[i])) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i]; }
        if (lo > hi) { lo = 0; hi = 1; }
        if (lo == hi) { lo -= 0.5; hi += 0.5; }
        sp.x0 = lo; sp.x1 = hi;
    }
    if (!(sp.x1 > sp.x0)) return seg_err(SEG_EARG, "plot_histogram: empty range [%g, %g]", sp.x0, sp.x1);
    int64_t *cnt = calloc((size_t)bins, sizeof *cnt), maxc = 0;
    if (!cnt) return seg_err(SEG_ENOMEM, "plot_histogram");
    for (int i = 0; i < n; i++) {
        if (!isfinite(v[i]) || v[i] < sp.x0 || v[i] > sp.x1) continue;
        int b = (int)((v[i] - sp.x0) / (sp.x1 - sp.x0) * bins);
        if (b >= bins) b = bins - 1;   /* the top edge belongs to the last bin */
        if (++cnt[b] > maxc) maxc = cnt[b];
    }
    if (s->auto_y || !(sp.y1 > sp.y0)) { sp.y0 = 0; sp.y1 = maxc > 0 ? maxc * 1.08 : 1; }
    sp.y_integer = 1;
    PlotAxes a;
    int rc = plot_axes(c, bx, by, bw, bh, &sp, &a);
    if (rc == SEG_OK) {
        for (int b = 0; b < bins; b++) {
            if (!cnt[b]) continue;
            int x0 = (int)lround(plot_px(&a, sp.x0 + (sp.x1 - sp.x0) * b / bins));
            int x1 = (int)lround(plot_px(&a, sp.x0 + (sp.x1 - sp.x0) * (b + 1) / bins));
            int y0 = (int)lround(plot_py(&a, (double)cnt[b] < a.y1 ? (double)cnt[b] : a.y1)), y1 = a.y + a.h;
            plot_fill_rect(c, x0, y0, x1 - x0 > 1 ? x1 - x0 - (x1 - x0 > 3) : 1, y1 - y0, col);
        }
    }
    free(cnt);
    return rc;
}

int plot_hbar_height(int n, int scale)
{
    int sc = scale < 1 ? 1 : scale, th = plot_text_height(sc), pad = 4 * sc;
    /* plot_axes wants a data area of at least 2 text heights: 1 bar alone gets that much */
    int rows = n * (th + 2 + 2 * sc);
    if (rows < 2 * th) rows = 2 * th;
    return pad + plot_text_height(sc + 1) + pad + rows + 3 * sc + th + pad + th + pad + pad;
}

int plot_hbar_chart(PlotCanvas *c, int bx, int by, int bw, int bh, const PlotAxesSpec *s,
                    const char *const *labels, const double *v, int n, const PlotColor *colors)
{
    if (n < 1) return seg_err(SEG_EARG, "plot_hbar_chart: no bars");
    PlotAxesSpec sp = *s;
    sp.y_cats = labels;
    sp.n_cats = n;
    int sc = s->scale < 1 ? 1 : s->scale;
    char val[32];
    if (s->auto_x) {
        double lo = 0, hi = 0;
        for (int i = 0; i < n; i++)
            if (isfinite(v[i])) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i]; }
        if (hi == lo) hi = lo + 1;
        /* leave room at the end for the value text of the longest bar */
        sp.x0 = lo;
        sp.x1 = hi + (hi - lo) * 0.15;
    }
    PlotAxes a;
    TRY(plot_axes(c, bx, by, bw, bh, &sp, &a));
    double base = a.x0 > 0 ? a.x0 : 0;
    double row = (double)a.h / n;
    for (int i = 0; i < n; i++) {
        if (!isfinite(v[i])) continue;
        double x0 = plot_px(&a, base), x1 = plot_px(&a, v[i] < a.x1 ? v[i] : a.x1);
        if (x1 < a.x) x1 = a.x;
        int top = a.y + (int)lround(i * row + row * 0.15), h = (int)lround(row * 0.7);
        if (h < 1) h = 1;
        int l = (int)lround(fmin(x0, x1)), r = (int)lround(fmax(x0, x1));
        plot_fill_rect(c, l, top, r - l + 1, h, colors ? colors[i] : plot_palette(0));
        double av = fabs(v[i]);
        snprintf(val, sizeof val, av != 0 && (av < 1e-3 || av >= 1e6) ? "%.3g" : av < 10 ? "%.3f" : av < 1000 ? "%.1f" : "%.0f", v[i]);
        int w = plot_text_width(val, sc), cy = top + h / 2;
        if (r + 2 * sc + w <= a.x + a.w - sc) plot_text_align(c, r + 2 * sc, cy, val, sc, PLOT_BLACK, -1, 0);
        else if (r - l > w + 4 * sc) plot_text_align(c, r - 2 * sc, cy, val, sc, PLOT_WHITE, 1, 0);
    }
    return SEG_OK;
}

/* ---- PNG ---- */

typedef struct PngErr { jmp_buf jb; char msg[256]; } PngErr;

static void png_on_error(png_structp png, png_const_charp msg)
{
    PngErr *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    longjmp(e->jb, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

/* Separate from the caller so that no local modified after setjmp is read after longjmp. */
static int png_encode(FILE *fp, const PlotCanvas *c, PngErr *e)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e, png_on_error, png_on_warning);
    if (!png) { snprintf(e->msg, sizeof e->msg, "png_create_write_struct failed"); return -1; }
    png_infop info = png_create_info_struct(png);
    if (!info) { png_destroy_write_struct(&png, NULL); snprintf(e->msg, sizeof e->msg, "png_create_info_struct failed"); return -1; }
    if (setjmp(e->jb)) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 6);
    png_write_info(png, info);
    for (int y = 0; y < c->h; y++) png_write_row(png, c->rgb + (size_t)y * c->w * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int plot_write_png(const PlotCanvas *c, const char *path)
{
    char tmp[4200];
    if (!c->rgb || c->w < 1 || c->h < 1) return seg_err(SEG_EARG, "%s: empty canvas", path);
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return seg_err(SEG_EARG, "%s: path too long", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return seg_err(SEG_EIO, "%s: %s", tmp, strerror(errno));
    PngErr e;
    e.msg[0] = 0;
    int bad = png_encode(fp, c, &e) != 0;
    if (!bad && (fflush(fp) != 0 || fsync(fileno(fp)) != 0)) { bad = 1; snprintf(e.msg, sizeof e.msg, "%s", strerror(errno)); }
    if (fclose(fp) != 0 && !bad) { bad = 1; snprintf(e.msg, sizeof e.msg, "%s", strerror(errno)); }
    if (bad) { unlink(tmp); return seg_err(SEG_EIO, "%s: writing PNG failed: %s", path, e.msg); }
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return seg_err(SEG_EIO, "%s: rename failed: %s", path, strerror(err));
    }
    return fs_sync_parent(path);
}
