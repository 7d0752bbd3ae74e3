/* common/plot.h : small raster plotting library: an RGB canvas, primitives, a built-in
 * bitmap font (common/font.c), axes with tick labels, line charts with legends,
 * histograms, horizontal bar charts, image/mask tiles for overlay grids, and PNG output
 * (libpng, written atomically). No global state; every function is thread-safe on
 * distinct canvases.
 *
 * Coordinates are pixels, origin top-left, x right, y down; everything is clipped to the
 * canvas. Text never leaves its box: layout functions measure with plot_text_width /
 * plot_text_height and shorten with plot_text_fit ("..."), and return SEG_EARG when a box
 * is too small to hold its text (the message says how much is needed).
 *
 *   PlotCanvas c;
 *   plot_canvas_init(&c, 800, 500, PLOT_WHITE);
 *   PlotAxesSpec sp = { .title = "Loss", .xlabel = "epoch", .ylabel = "BCE", .scale = 2, .auto_x = 1, .auto_y = 1 };
 *   PlotSeries s = { .name = "train", .x = ep, .y = loss, .n = n, .color = plot_palette(0), .thickness = 2 };
 *   plot_line_chart(&c, 0, 0, c.w, c.h, &sp, &s, 1, PLOT_LEGEND_TOP_RIGHT);
 *   plot_write_png(&c, "loss.png");
 *   plot_canvas_free(&c);
 */
#ifndef SEG_PLOT_H
#define SEG_PLOT_H
#include <stddef.h>
#include <stdint.h>

typedef struct PlotColor { uint8_t r, g, b; } PlotColor;
#define PLOT_RGB(r_, g_, b_) ((PlotColor){ (uint8_t)(r_), (uint8_t)(g_), (uint8_t)(b_) })
#define PLOT_WHITE      PLOT_RGB(255, 255, 255)
#define PLOT_BLACK      PLOT_RGB(0, 0, 0)
#define PLOT_GRAY       PLOT_RGB(110, 110, 110)
#define PLOT_LIGHT_GRAY PLOT_RGB(225, 225, 225)

/* 10 well-separated colours for series (cycles for i >= 10). */
PlotColor plot_palette(int i);
/* A distinct colour per label index for many labels (e.g. 117 structures): hues spaced
 * by the golden angle, alternating lightness. */
PlotColor plot_label_color(int i);

typedef struct PlotCanvas {
    int      w, h;
    uint8_t *rgb;     /* w*h*3 bytes, row-major RGB, owned (plot_canvas_free) */
} PlotCanvas;

/* Allocate a w x h canvas filled with bg. SEG_EARG for sizes outside 1..16384, SEG_ENOMEM. */
int  plot_canvas_init(PlotCanvas *c, int w, int h, PlotColor bg);
void plot_canvas_free(PlotCanvas *c);                     /* NULL-safe, leaves c empty */
/* Write c as an 8-bit RGB PNG: "<path>.tmp.<pid>", fsync, rename. SEG_EIO naming the file
 * (with libpng's message) on failure; an existing file at path is then left as it was. */
int  plot_write_png(const PlotCanvas *c, const char *path);

/* ---- primitives ---- */
void plot_pixel(PlotCanvas *c, int x, int y, PlotColor col);
/* Mix col into the pixel with weight alpha in [0, 1]. */
void plot_blend(PlotCanvas *c, int x, int y, PlotColor col, float alpha);
void plot_fill_rect(PlotCanvas *c, int x, int y, int w, int h, PlotColor col);
/* Outline drawn inside the rectangle, thickness t. */
void plot_rect(PlotCanvas *c, int x, int y, int w, int h, int t, PlotColor col);
/* Line from (x0,y0) to (x1,y1), thickness t >= 1 (square pen). */
void plot_line(PlotCanvas *c, double x0, double y0, double x1, double y1, int t, PlotColor col);
void plot_circle(PlotCanvas *c, int cx, int cy, int r, int filled, PlotColor col);

/* ---- text: 5x9 glyphs (7 above the baseline, 2 descender rows) in a 6x10 cell, printable
 * ASCII (other bytes draw as '?'), each glyph pixel a scale x scale block ---- */
int  plot_text_width(const char *s, int scale);           /* 6*scale per char minus the last gap */
int  plot_text_height(int scale);                         /* 9*scale */
/* Top-left of the text box at (x, y). */
void plot_text(PlotCanvas *c, int x, int y, const char *s, int scale, PlotColor col);
/* Rotated 90 degrees counter-clockwise (reads bottom to top), box top-left at (x, y):
 * the box is plot_text_height wide and plot_text_width tall. */
void plot_text_up(PlotCanvas *c, int x, int y, const char *s, int scale, PlotColor col);
/* Aligned at (x, y): ha -1/0/1 = x is the left edge / centre / right edge, va likewise for
 * top / middle / bottom. */
void plot_text_align(PlotCanvas *c, int x, int y, const char *s, int scale, PlotColor col, int ha, int va);
/* Copy s into out[cap], shortened with a trailing "..." so it is at most max_w pixels wide
 * (empty if even "..." does not fit). Returns the resulting width. */
int  plot_text_fit(char *out, size_t cap, const char *s, int scale, int max_w);

/* ---- images (for overlay grids) ---- */
/* Draw a iw x ih float image into the w x h box at (x, y), nearest neighbour, grey levels
 * mapping lo -> black and hi -> white (clamped). */
void plot_image_gray(PlotCanvas *c, int x, int y, int w, int h, const float *img, int iw, int ih, float lo, float hi);
/* Blend col with weight alpha wherever the mask is set, same geometry as plot_image_gray.
 * mask: iw*ih bytes (non-zero = set); plot_mask_bits: a packed plane (maskpack.h). */
void plot_mask(PlotCanvas *c, int x, int y, int w, int h, const uint8_t *mask, int iw, int ih, PlotColor col, float alpha);
void plot_mask_bits(PlotCanvas *c, int x, int y, int w, int h, const uint8_t *bits, int iw, int ih, PlotColor col, float alpha);

/* ---- axes and charts ---- */
typedef struct PlotAxesSpec {
    double x0, x1, y0, y1;        /* data range (ignored on an axis marked auto) */
    int    auto_x, auto_y;        /* charts: take the range from the data (with a margin) */
    const char *title, *xlabel, *ylabel;   /* NULL or "" for none */
    int    scale;                 /* text scale (>= 1; 0 means 1); the title uses scale + 1 */
    int    x_integer;             /* x ticks at whole numbers only (epochs, counts) */
    int    y_integer;
    int    no_grid;               /* no light grid lines at the ticks */
    /* Categorical y axis (bar charts): n_cats rows, row i (from the top) spans data
     * y in [n_cats-1-i, n_cats-i]; y0/y1 are then ignored and the labels replace y ticks. */
    const char *const *y_cats;
    int    n_cats;
} PlotAxesSpec;

/* Where the data area ended up, and its data range. */
typedef struct PlotAxes {
    int    x, y, w, h;            /* data area in canvas pixels */
    double x0, x1, y0, y1;
    int    scale;
} PlotAxes;

/* Lay out and draw title, axis labels, tick marks and labels, grid and frame inside the
 * box (bx, by, bw, bh); fills *a. SEG_EARG (with the size needed) if the text cannot fit. */
int    plot_axes(PlotCanvas *c, int bx, int by, int bw, int bh, const PlotAxesSpec *s, PlotAxes *a);
double plot_px(const PlotAxes *a, double x);             /* data x -> canvas x */
double plot_py(const PlotAxes *a, double y);             /* data y -> canvas y */

typedef struct PlotSeries {
    const char   *name;           /* legend text */
    const double *x, *y;          /* n points; x NULL means 0..n-1; a NaN y breaks the line */
    int           n;
    PlotColor     color;
    int           thickness;      /* 0 means 1 */
    int           marker;         /* radius of a dot at each point, 0 for none */
} PlotSeries;

/* Draw a series clipped to the data area. */
void plot_series(PlotCanvas *c, const PlotAxes *a, const PlotSeries *s);
/* Shade the band between lo[i] and hi[i] (linear between the n points x[i], increasing),
 * blended with alpha, clipped to the data area; a NaN bound breaks the band. */
void plot_band(PlotCanvas *c, const PlotAxes *a, const double *x, const double *lo, const double *hi, int n,
               PlotColor col, float alpha);
enum { PLOT_LEGEND_NONE = 0, PLOT_LEGEND_TOP_RIGHT, PLOT_LEGEND_TOP_LEFT, PLOT_LEGEND_BOTTOM_RIGHT, PLOT_LEGEND_BOTTOM_LEFT };
/* A framed legend (line sample + name per series) in a corner of the data area. */
void plot_legend(PlotCanvas *c, const PlotAxes *a, const PlotSeries *s, int n, int corner);

/* Axes + series + legend. With auto_x/auto_y the range covers every finite point. */
int  plot_line_chart(PlotCanvas *c, int bx, int by, int bw, int bh, const PlotAxesSpec *s,
                     const PlotSeries *series, int n, int legend_corner);
/* Histogram of the finite values in v[n] into `bins` equal bins over [x0, x1] (auto_x:
 * min..max of the data); values outside the range are not counted. y is the count. */
int  plot_histogram(PlotCanvas *c, int bx, int by, int bw, int bh, const PlotAxesSpec *s,
                    const double *v, int n, int bins, PlotColor col);
/* Horizontal bars: labels[i] on the left, bar length v[i] along x (from 0, or from x0 if
 * it is positive), the value printed at the bar's end. colors NULL: one colour.
 * s->y_cats is taken from labels. SEG_EARG if the rows do not fit (see plot_hbar_height). */
int  plot_hbar_chart(PlotCanvas *c, int bx, int by, int bw, int bh, const PlotAxesSpec *s,
                     const char *const *labels, const double *v, int n, const PlotColor *colors);
/* Box height a bar chart of n rows needs at this text scale (with title and x label). */
int  plot_hbar_height(int n, int scale);

/* The 5x9 glyph of printable ASCII c (rows top to bottom, bit 4 = leftmost column). */
const uint8_t *plot_font_glyph(int c);

#endif
