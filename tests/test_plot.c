/* tests/test_plot.c : font sanity (every glyph distinct, inked, inside its cell), text
 * extents upright and rotated, text shortening, data <-> pixel mapping, series and bar
 * pixels where expected, and the layout promise: charts of many sizes, ranges and long
 * labels leave no ink outside their box. PNG output is read back with libpng and must
 * match the canvas byte for byte. PLOT_TEST_OUT=dir keeps the PNGs for a look. */
#include "plot.h"
#include "maskpack.h"
#include "err.h"
#include "testutil.h"
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int is_bg(const PlotCanvas *c, int x, int y, PlotColor bg)
{
    const uint8_t *p = c->rgb + 3 * ((size_t)y * c->w + x);
    return p[0] == bg.r && p[1] == bg.g && p[2] == bg.b;
}

/* Bounding box of non-background pixels; 0 if none. */
static int ink_box(const PlotCanvas *c, PlotColor bg, int *x0, int *y0, int *x1, int *y1)
{
    *x0 = c->w; *y0 = c->h; *x1 = -1; *y1 = -1;
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++)
            if (!is_bg(c, x, y, bg)) {
                if (x < *x0) *x0 = x;
                if (x > *x1) *x1 = x;
                if (y < *y0) *y0 = y;
                if (y > *y1) *y1 = y;
            }
    return *x1 >= 0;
}

static int ink_outside(const PlotCanvas *c, int bx, int by, int bw, int bh)
{
    int n = 0;
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++)
            if ((x < bx || y < by || x >= bx + bw || y >= by + bh) && !is_bg(c, x, y, PLOT_WHITE)) n++;
    return n;
}

static void keep(const PlotCanvas *c, const char *name)
{
    const char *dir = getenv("PLOT_TEST_OUT");
    if (!dir) return;
    char p[1024];
    snprintf(p, sizeof p, "%s/%s.png", dir, name);
    if (plot_write_png(c, p) < 0) printf("  could not keep %s: %s\n", p, seg_errmsg());
}

int main(void)
{
    /* ---- font ---- */
    int distinct = 1, inked = 1, in_cell = 1;
    for (int ch = 33; ch < 127; ch++) {
        const uint8_t *g = plot_font_glyph(ch);
        int any = 0;
        for (int r = 0; r < 9; r++) { any |= g[r]; if (g[r] & ~0x1F) in_cell = 0; }
        if (!any) { inked = 0; printf("  glyph '%c' is empty\n", ch); }
        for (int o = 32; o < ch; o++)
            if (!memcmp(g, plot_font_glyph(o), 9)) { distinct = 0; printf("  glyphs '%c' and '%c' are identical\n", o, ch); }
    }
    CHECK(inked && distinct && in_cell, "94 printable glyphs: inked, pairwise distinct, 5 columns wide");
    CHECK(plot_font_glyph(200) == plot_font_glyph('?') && plot_font_glyph(7) == plot_font_glyph('?'), "non-printable -> '?'");
    CHECK(plot_text_width("", 3) == 0 && plot_text_width("a", 1) == 5 && plot_text_width("abc", 2) == 34 && plot_text_height(2) == 18,
          "text metrics: width 6*s*n - s, height 9*s");

    PlotCanvas c;
    CHECK(plot_canvas_init(&c, 0, 10, PLOT_WHITE) == SEG_EARG && plot_canvas_init(&c, 20000, 10, PLOT_WHITE) == SEG_EARG,
          "bad canvas sizes refused");
    CHECK(plot_canvas_init(&c, 200, 120, PLOT_WHITE) == 0, "canvas");
    int x0, y0, x1, y1;
    plot_text(&c, 10, 20, "HH", 2, PLOT_BLACK);
    ink_box(&c, PLOT_WHITE, &x0, &y0, &x1, &y1);
    CHECK(x0 == 10 && x1 == 10 + plot_text_width("HH", 2) - 1 && y0 == 20 && y1 == 20 + 7 * 2 - 1,
          "\"HH\" at scale 2 inks exactly its box: x %d..%d y %d..%d", x0, x1, y0, y1);
    plot_fill_rect(&c, 0, 0, c.w, c.h, PLOT_WHITE);
    plot_text(&c, 10, 20, "gjpqy", 3, PLOT_BLACK);
    ink_box(&c, PLOT_WHITE, &x0, &y0, &x1, &y1);
    CHECK(y1 == 20 + plot_text_height(3) - 1 && x1 <= 10 + plot_text_width("gjpqy", 3) - 1, "descenders reach the last row, no further");
    plot_fill_rect(&c, 0, 0, c.w, c.h, PLOT_WHITE);
    plot_text_up(&c, 50, 10, "HH.", 2, PLOT_BLACK);
    ink_box(&c, PLOT_WHITE, &x0, &y0, &x1, &y1);
    int tw = plot_text_width("HH.", 2);
    CHECK(x0 == 50 && x1 == 50 + 7 * 2 - 1 && y0 >= 10 && y1 == 10 + tw - 1, "rotated text inside its box: x %d..%d y %d..%d", x0, x1, y0, y1);
    /* reading bottom to top: the 'H' (ink on its top row = leftmost column here) is at the
     * bottom; the '.' (no ink on its top row) at the top */
    int top_col0 = 0, bot_col0 = 0;
    for (int y = 10; y < 10 + tw; y++) if (!is_bg(&c, 50, y, PLOT_WHITE)) { if (y < 10 + tw / 3) top_col0++; else bot_col0++; }
    CHECK(top_col0 == 0 && bot_col0 > 0, "rotation is counter-clockwise (first letter at the bottom)");
    plot_canvas_free(&c);

    char buf[64];
    int w = plot_text_fit(buf, sizeof buf, "a_very_long_structure_name_indeed", 2, 100);
    CHECK(w <= 100 && w == plot_text_width(buf, 2) && strlen(buf) > 3 && !strcmp(buf + strlen(buf) - 3, "..."),
          "plot_text_fit shortens with '...': \"%s\" (%d px)", buf, w);
    CHECK(plot_text_fit(buf, sizeof buf, "liver", 2, 100) == plot_text_width("liver", 2) && !strcmp(buf, "liver"), "short text unchanged");
    CHECK(plot_text_fit(buf, sizeof buf, "liver", 2, 10) == 0 && buf[0] == 0, "nothing fits -> empty");
    CHECK(plot_text_fit(buf, 8, "abcdefghijkl", 1, 1000) <= plot_text_width("abcd...", 1) && strlen(buf) < 8, "respects the buffer size");

    /* ---- axes mapping and series pixels ---- */
    CHECK(plot_canvas_init(&c, 400, 300, PLOT_WHITE) == 0, "canvas 400x300");
    PlotAxesSpec sp = { .x0 = 0, .x1 = 10, .y0 = -1, .y1 = 1, .title = "T", .xlabel = "x", .ylabel = "y", .scale = 1 };
    PlotAxes a;
    CHECK(plot_axes(&c, 0, 0, 400, 300, &sp, &a) == 0, "plot_axes");
    CHECK(fabs(plot_px(&a, 0) - a.x) < 1e-9 && fabs(plot_px(&a, 10) - (a.x + a.w - 1)) < 1e-9 &&
          fabs(plot_py(&a, 1) - a.y) < 1e-9 && fabs(plot_py(&a, -1) - (a.y + a.h - 1)) < 1e-9, "data corners map to the area corners");
    double xs[3] = { 2, 5, 8 }, ys[3] = { 0.5, NAN, -0.5 };
    PlotSeries s = { .name = "s", .x = xs, .y = ys, .n = 3, .color = PLOT_RGB(255, 0, 0), .marker = 3 };
    plot_series(&c, &a, &s);
    int hit = 1;
    for (int i = 0; i < 3; i += 2) {
        int px = (int)lround(plot_px(&a, xs[i])), py = (int)lround(plot_py(&a, ys[i]));
        const uint8_t *p = c.rgb + 3 * ((size_t)py * c.w + px);
        hit &= p[0] == 255 && p[1] == 0 && p[2] == 0;
    }
    int mid_x = (int)lround(plot_px(&a, 5)), red_mid = 0;
    for (int y = a.y; y < a.y + a.h; y++) { const uint8_t *p = c.rgb + 3 * ((size_t)y * c.w + mid_x); red_mid += p[0] == 255 && p[1] == 0; }
    CHECK(hit && red_mid == 0, "markers at the mapped points; NaN breaks the line");
    plot_canvas_free(&c);

    /* histogram bar heights: counts 2 and 5 over a fixed y range of 0..10 */
    CHECK(plot_canvas_init(&c, 300, 240, PLOT_WHITE) == 0, "canvas");
    double hv[7] = { 0.1, 0.2, 0.6, 0.7, 0.8, 0.9, 0.95 };
    PlotAxesSpec hs = { .x0 = 0, .x1 = 1, .y0 = 0, .y1 = 10, .scale = 1, .no_grid = 1 };
    CHECK(plot_histogram(&c, 0, 0, 300, 240, &hs, hv, 7, 2, PLOT_RGB(0, 0, 255)) == 0, "histogram");
    plot_axes(&c, 0, 0, 300, 240, &hs, &a);   /* same layout again, to know the area */
    int hb[2];
    for (int b = 0; b < 2; b++) {
        int px = (int)lround(plot_px(&a, 0.25 + 0.5 * b));
        hb[b] = 0;
        for (int y = a.y; y < a.y + a.h; y++) { const uint8_t *p = c.rgb + 3 * ((size_t)y * c.w + px); hb[b] += p[2] == 255 && p[0] == 0; }
    }
    double unit = (a.h - 1) / 10.0;
    CHECK(abs(hb[0] - (int)lround(2 * unit)) <= 1 && abs(hb[1] - (int)lround(5 * unit)) <= 1,
          "bar heights %d and %d px for counts 2 and 5 (%.1f px per count)", hb[0], hb[1], unit);
    plot_canvas_free(&c);

    /* ---- layout: no ink outside the box, whatever the sizes and labels ---- */
    const int M = 30;
    struct { int w, h, scale; double ymul; const char *title; } cases[] = {
        { 640, 400, 2, 1, "Training loss" },
        { 300, 200, 1, 1e6, "A long title that is wider than this small chart box, by far" },
        { 900, 300, 3, 1e-4, "Dice" },
        { 220, 140, 1, -3, "neg" },
        { 1200, 800, 2, 12345.678, "Validation" },
    };
    int n_cases = (int)(sizeof cases / sizeof cases[0]), outside = 0, fails = 0;
    for (int k = 0; k < n_cases; k++) {
        CHECK(plot_canvas_init(&c, cases[k].w + 2 * M, cases[k].h + 2 * M, PLOT_WHITE) == 0, "canvas %d", k);
        double ex[40], ey1[40], ey2[40];
        for (int i = 0; i < 40; i++) {
            ex[i] = i + 1;
            ey1[i] = cases[k].ymul * exp(-i / 10.0);
            ey2[i] = i % 3 ? cases[k].ymul * (0.5 + 0.3 * sin(i / 3.0)) : NAN;
        }
        PlotSeries ser[2] = {
            { .name = "train loss", .x = ex, .y = ey1, .n = 40, .color = plot_palette(0), .thickness = 2 },
            { .name = "validation loss with a long legend name", .x = ex, .y = ey2, .n = 40, .color = plot_palette(1), .marker = 2 },
        };
        PlotAxesSpec ls = { .auto_x = 1, .auto_y = 1, .x_integer = 1, .title = cases[k].title, .xlabel = "epoch",
                            .ylabel = "binary cross-entropy (mean over voxels)", .scale = cases[k].scale };
        int rc = plot_line_chart(&c, M, M, cases[k].w, cases[k].h, &ls, ser, 2, PLOT_LEGEND_TOP_RIGHT);
        if (rc) { fails++; printf("  case %d: %s\n", k, seg_errmsg()); }
        int o = ink_outside(&c, M, M, cases[k].w, cases[k].h);
        if (o) printf("  line chart %d: %d pixels outside its box\n", k, o);
        outside += o;
        snprintf(buf, sizeof buf, "line_%d", k);
        keep(&c, buf);
        plot_canvas_free(&c);
    }
    CHECK(fails == 0 && outside == 0, "%d line charts (scales 1-3, ranges 1e-4..1e6, long texts) stay inside their boxes", n_cases);

    /* bar chart of 117 names; height from plot_hbar_height; too small a box is refused */
    const int nb = 117;
    const char *names[117];
    char store[117][40];
    double vals[117];
    PlotColor cols[117];
    for (int i = 0; i < nb; i++) {
        snprintf(store[i], sizeof store[i], i % 9 == 0 ? "structure_with_a_long_name_%d" : "organ_%d", i);
        names[i] = store[i];
        vals[i] = (i * 37 % 100) / 100.0;
        cols[i] = plot_label_color(i);
    }
    int need = plot_hbar_height(nb, 1);
    CHECK(plot_canvas_init(&c, 600 + 2 * M, need + 2 * M, PLOT_WHITE) == 0, "bar canvas %d px tall", need);
    PlotAxesSpec bs = { .auto_x = 1, .title = "Dice per structure", .xlabel = "Dice", .scale = 1 };
    int rc = plot_hbar_chart(&c, M, M, 600, need, &bs, names, vals, nb, cols);
    CHECK(rc == 0, "117 bars fit in plot_hbar_height: %s", rc ? seg_errmsg() : "ok");
    CHECK(ink_outside(&c, M, M, 600, need) == 0, "bar chart ink inside its box");
    keep(&c, "hbar");
    plot_fill_rect(&c, 0, 0, c.w, c.h, PLOT_WHITE);
    rc = plot_hbar_chart(&c, M, M, 600, need / 2, &bs, names, vals, nb, cols);
    CHECK(rc == SEG_EARG && strstr(seg_errmsg(), "rows need"), "half the height refused: %s", seg_errmsg());
    plot_canvas_free(&c);

    /* 1, 2 and 3 bars at scales 1..3 with a long title (segeval's ranking of a reference
     * with one structure present): plot_hbar_height is always enough */
    int few_fail = 0;
    for (int sc = 1; sc <= 3; sc++)
        for (int k = 1; k <= 3; k++) {
            int h = plot_hbar_height(k, sc);
            if (plot_canvas_init(&c, 1300, h + 2 * M, PLOT_WHITE) < 0) { few_fail++; continue; }
            PlotAxesSpec fs = { .x0 = 0, .x1 = 1, .scale = sc, .xlabel = "mean Dice over subjects with the structure",
                                .title = "Structures by mean Dice (1 ranked; 116 never present in the reference)" };
            rc = plot_hbar_chart(&c, M, M, 1280, h, &fs, names, vals, k, cols);
            if (rc < 0) { fprintf(stderr, "  %d bars at scale %d: %s\n", k, sc, seg_errmsg()); few_fail++; }
            else if (ink_outside(&c, M, M, 1280, h)) few_fail++;
            plot_canvas_free(&c);
        }
    CHECK(few_fail == 0, "1, 2 and 3 bars (scales 1-3) lay out in plot_hbar_height and stay inside");

    /* overlay tile: image + packed mask */
    CHECK(plot_canvas_init(&c, 64, 64, PLOT_BLACK) == 0, "tile canvas");
    float img[16 * 16];
    uint8_t bits[16 * 16 / 8] = { 0 };
    for (int i = 0; i < 256; i++) img[i] = (float)(i % 16) * 100 - 800;
    for (int p = 0; p < 256; p++) if (p / 16 >= 8) maskpack_set(bits, p);
    plot_image_gray(&c, 0, 0, 64, 64, img, 16, 16, -800, 700);
    plot_mask_bits(&c, 0, 0, 64, 64, bits, 16, 16, PLOT_RGB(255, 0, 0), 0.5f);
    const uint8_t *p0 = c.rgb, *pr = c.rgb + 3 * (63 * 64 + 63), *pm = c.rgb + 3 * (10 * 64 + 63);
    CHECK(p0[0] == 0 && pm[0] == 255 && pm[1] == 255 && pr[0] == 255 && pr[1] == 128 && pr[2] == 128,
          "grey window and 50%% red blend where the mask is set");
    keep(&c, "tile");

    /* ---- PNG round trip ---- */
    char dir[] = "/tmp/test_plot.XXXXXX", path[256];
    CHECK(mkdtemp(dir) != NULL, "temp dir");
    snprintf(path, sizeof path, "%s/t.png", dir);
    rc = plot_write_png(&c, path);
    CHECK(rc == 0, "plot_write_png: %s", rc ? seg_errmsg() : "ok");
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    uint8_t *back = NULL;
    if (png_image_begin_read_from_file(&im, path)) {
        im.format = PNG_FORMAT_RGB;
        back = malloc(PNG_IMAGE_SIZE(im));
        if (back && !png_image_finish_read(&im, NULL, back, 0, NULL)) { free(back); back = NULL; }
    }
    CHECK(back && im.width == 64 && im.height == 64 && !memcmp(back, c.rgb, 64 * 64 * 3), "PNG reads back identical (libpng)");
    free(back);
    char tmpname[300];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(tmpname, F_OK) != 0, "no temp file left");
    snprintf(path, sizeof path, "%s/missing/t.png", dir);
    CHECK(plot_write_png(&c, path) == SEG_EIO && strstr(seg_errmsg(), "missing"), "unwritable path -> SEG_EIO: %s", seg_errmsg());
    snprintf(path, sizeof path, "%s/t.png", dir);
    unlink(path);
    rmdir(dir);
    plot_canvas_free(&c);
    return t_report("test_plot");
}
