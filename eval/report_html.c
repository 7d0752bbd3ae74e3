/* eval/report_html.c : the self-contained 3D page of a subject (meshes from mesh.c,
 * quantised to uint16 and base64-encoded inside the page, a hand-written WebGL renderer
 * with a Canvas 2D fallback, nothing loaded from the network) and index.html. */
#include "report.h"
#include "err.h"
#include "fsutil.h"
#include "mesh.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The viewer (eval/viewer.js, embedded at build time by the Makefile as a C array): reads
 * the JSON in #segdata, decodes the meshes, draws reference and prediction side by side (or
 * one of them); drag rotates, the wheel zooms. */
extern const unsigned char report_viewer_js[];
extern const size_t report_viewer_js_len;

static const char PAGE_CSS[] =
    "body{margin:0;font:13px/1.4 sans-serif;background:#1a1c21;color:#ddd;display:flex;height:100vh;overflow:hidden}"
    "#side{width:320px;min-width:320px;overflow:auto;padding:10px 12px;box-sizing:border-box;border-right:1px solid #333}"
    "#side h2{font-size:16px;margin:4px 0 8px}#side p{margin:4px 0;color:#aaa}"
    "#main{flex:1;position:relative;min-width:0}#view{width:100%;height:100%;display:block;cursor:grab}"
    "#ltag{position:absolute;top:8px;left:0;right:0;display:flex;justify-content:space-around;pointer-events:none;font-weight:bold;font-size:15px}"
    "#status{position:absolute;bottom:6px;left:10px;color:#999}"
    "#list label{display:flex;align-items:center;gap:6px;white-space:nowrap;padding:1px 0}"
    ".sw{display:inline-block;width:12px;height:12px;min-width:12px;border-radius:2px}"
    "button{margin:6px 4px 6px 0}a{color:#8cf}";

void report_mesh_default(ReportMeshOptions *o)
{
    o->smooth_iters = 4;
    o->decimate_mm = 2.0;
    o->max_triangles = 400000;
}

static void html_text(ReportBuf *b, const char *s);

static void safe_id(const char *id, char *out, size_t n)
{
    size_t i = 0;
    for (; id[i] && i + 1 < n; i++) {
        char c = id[i];
        out[i] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.') ? c : '_';
    }
    out[i] = 0;
}

/* {"nv":..,"nt":..,"w":2|4,"v":"<uint16 xyz>","i":"<indices>"} or null */
static int put_mesh(ReportBuf *b, const Mesh *m, const double lo[3], const double sc[3])
{
    if (m->nt == 0) { report_buf_printf(b, "null"); return SEG_OK; }
    uint16_t *q = malloc(sizeof(uint16_t) * 3 * (size_t)m->nv);
    int w = m->nv > 65535 ? 4 : 2;
    void *ix = malloc((size_t)w * 3 * (size_t)m->nt);
    if (!q || !ix) { free(q); free(ix); return seg_err(SEG_ENOMEM, "3d page: mesh of %d vertices", m->nv); }
    for (size_t i = 0; i < 3 * (size_t)m->nv; i++) {
        double t = (m->v[i] - lo[i % 3]) / sc[i % 3];
        q[i] = (uint16_t)(t < 0 ? 0 : t > 65535 ? 65535 : lround(t));
    }
    for (size_t i = 0; i < 3 * (size_t)m->nt; i++) {
        if (w == 4) ((uint32_t *)ix)[i] = m->t[i];
        else ((uint16_t *)ix)[i] = (uint16_t)m->t[i];
    }
    report_buf_printf(b, "{\"nv\":%d,\"nt\":%d,\"w\":%d,\"v\":\"", m->nv, m->nt, w);
    report_buf_base64(b, q, sizeof(uint16_t) * 3 * (size_t)m->nv);
    report_buf_printf(b, "\",\"i\":\"");
    report_buf_base64(b, ix, (size_t)w * 3 * (size_t)m->nt);
    report_buf_printf(b, "\"}");
    free(q);
    free(ix);
    return SEG_OK;
}

int report_html_3d(const ReportRun *r, const ReportSubject *s, const MetricsResult *row,
                   const ReportMeshOptions *o, char **name)
{
    *name = NULL;
    const int ns = s->ref.n_struct, nz = s->ref.nz;
    Mesh *mr = calloc((size_t)ns, sizeof *mr), *mp = calloc((size_t)ns, sizeof *mp);
    if (!mr || !mp) { free(mr); free(mp); return seg_err(SEG_ENOMEM, "3d page: %d structures", ns); }
    int rc = SEG_OK;
    int64_t tris_side[2] = { 0, 0 };
    for (int k = 0; k < ns && rc == SEG_OK; k++)
        for (int side = 0; side < 2 && rc == SEG_OK; side++) {
            const MetricsStack *st = side ? &s->pred : &s->ref;
            Mesh *m = side ? &mp[k] : &mr[k];
            rc = mesh_from_planes((const uint8_t *const *)st->planes + (size_t)k * nz, st->nx, st->ny, nz, s->affine,
                                  o->smooth_iters, m);
            if (rc == SEG_OK) rc = mesh_decimate(m, o->decimate_mm);
            tris_side[side] += m->nt;
        }
    /* over the budget (half per side, so a noisy prediction does not coarsen the reference):
     * coarser clusters; the area per triangle grows with the cell squared */
    double cell[2];
    for (int side = 0; side < 2; side++) {
        cell[side] = o->decimate_mm > 0 ? o->decimate_mm : 0.0;
        const int64_t budget = o->max_triangles / 2;
        Mesh *ms = side ? mp : mr;
        for (int round = 0; round < 4 && rc == SEG_OK && budget > 0 && tris_side[side] > budget; round++) {
            cell[side] = (cell[side] > 0 ? cell[side] : 1.0) * sqrt((double)tris_side[side] / budget) * 1.05;
            tris_side[side] = 0;
            for (int k = 0; k < ns && rc == SEG_OK; k++) {
                rc = mesh_decimate(&ms[k], cell[side]);
                tris_side[side] += ms[k].nt;
            }
        }
    }
    const int64_t tris = tris_side[0] + tris_side[1];
    double lo[3] = { INFINITY, INFINITY, INFINITY }, hi[3] = { -INFINITY, -INFINITY, -INFINITY };
    for (int k = 0; k < ns && rc == SEG_OK; k++)
        for (int side = 0; side < 2; side++) {
            const Mesh *m = side ? &mp[k] : &mr[k];
            for (int i = 0; i < m->nv; i++)
                for (int d = 0; d < 3; d++) {
                    if (m->v[3 * (size_t)i + d] < lo[d]) lo[d] = m->v[3 * (size_t)i + d];
                    if (m->v[3 * (size_t)i + d] > hi[d]) hi[d] = m->v[3 * (size_t)i + d];
                }
        }
    double sc[3], c[3], rad = 0;
    for (int d = 0; d < 3; d++) {
        if (!(hi[d] >= lo[d])) { lo[d] = 0; hi[d] = 1; }
        sc[d] = hi[d] > lo[d] ? (hi[d] - lo[d]) / 65535.0 : 1.0;
        c[d] = 0.5 * (lo[d] + hi[d]);
        rad += 0.25 * (hi[d] - lo[d]) * (hi[d] - lo[d]);
    }
    rad = sqrt(rad) > 1e-6 ? sqrt(rad) : 1.0;
    ReportBuf b = { 0 };
    char title[512], pretty[256];
    snprintf(title, sizeof title, "segkit 3D: %s (%s)", s->id, r->tag);
    report_buf_printf(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>");
    report_buf_printf(&b, "segkit 3D: ");
    for (const char *p = s->id; *p; p++) report_buf_printf(&b, (*p == '<' || *p == '&') ? "_" : "%c", *p);
    report_buf_printf(&b, "</title>\n<style>%s</style></head><body>\n<div id=\"side\"><h2>Subject ", PAGE_CSS);
    for (const char *p = s->id; *p; p++) report_buf_printf(&b, (*p == '<' || *p == '&') ? "_" : "%c", *p);
    report_buf_printf(&b, "</h2><p>Evaluation <b>");
    for (const char *p = r->tag; *p; p++) report_buf_printf(&b, (*p == '<' || *p == '&') ? "_" : "%c", *p);
    report_buf_printf(&b, "</b> &middot; %lld triangles &middot; marching cubes of the masks, Taubin-smoothed (%d steps), "
                          "vertex clustering at %.1f mm (reference) / %.1f mm (prediction).</p><p><a href=\"",
                      (long long)tris, o->smooth_iters, cell[0], cell[1]);
    char index_name[512];
    report_index_name(r, index_name, sizeof index_name);
    html_text(&b, index_name);
    report_buf_printf(&b, "\">&larr; report index</a></p>\n"
                          "<div>View: <label style=\"display:inline\"><input type=\"radio\" name=\"mode\" value=\"side\" checked>"
                          " side by side</label> <label style=\"display:inline\"><input type=\"radio\" name=\"mode\" value=\"ref\">"
                          " reference</label> <label style=\"display:inline\"><input type=\"radio\" name=\"mode\" value=\"pred\">"
                          " prediction</label></div>\n<div><button id=\"all\">all</button><button id=\"none\">none</button></div>"
                          "<div id=\"list\"></div></div>\n<div id=\"main\"><canvas id=\"view\"></canvas>"
                          "<div id=\"ltag\"><span>Reference</span><span>Prediction</span></div><div id=\"status\">"
                          "Rendering needs JavaScript.</div></div>\n<script type=\"application/json\" id=\"segdata\">");
    report_buf_printf(&b, "{\"title\":");
    report_buf_json_string(&b, title);
    report_buf_printf(&b, ",\"lo\":[%.9g,%.9g,%.9g],\"sc\":[%.9g,%.9g,%.9g],\"c\":[%.9g,%.9g,%.9g],\"r\":%.9g,\"s\":[",
                      lo[0], lo[1], lo[2], sc[0], sc[1], sc[2], c[0], c[1], c[2], rad);
    int first = 1;
    for (int k = 0; k < ns && rc == SEG_OK; k++) {
        if (mr[k].nt == 0 && mp[k].nt == 0) continue;
        uint8_t rgb[3];
        report_color(k, rgb);
        report_buf_printf(&b, "%s{\"n\":", first ? "" : ",\n");
        first = 0;
        report_buf_json_string(&b, report_pretty_name(r->labels->names[k], pretty, sizeof pretty));
        report_buf_printf(&b, ",\"c\":[%d,%d,%d],\"d\":", rgb[0], rgb[1], rgb[2]);
        report_buf_num(&b, row ? row[k].dice : NAN, "null");
        report_buf_printf(&b, ",\"r\":");
        rc = put_mesh(&b, &mr[k], lo, sc);
        report_buf_printf(&b, ",\"p\":");
        if (rc == SEG_OK) rc = put_mesh(&b, &mp[k], lo, sc);
        report_buf_printf(&b, "}");
    }
    report_buf_printf(&b, "]}</script>\n<script>\n");
    report_buf_put(&b, (const char *)report_viewer_js, report_viewer_js_len);
    report_buf_printf(&b, "</script>\n</body></html>\n");
    for (int k = 0; k < ns; k++) { mesh_free(&mr[k]); mesh_free(&mp[k]); }
    free(mr);
    free(mp);
    if (rc < 0) { free(b.s); return rc; }
    char fname[512];
    report_page_name(r, s->id, fname, sizeof fname);
    TRY(report_buf_write(&b, r->out_dir, fname));
    *name = strdup(fname);
    return *name ? SEG_OK : seg_err(SEG_ENOMEM, "3d page name");
}

/* ---- index.html ---- */

static void html_text(ReportBuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '<') report_buf_printf(b, "&lt;");
        else if (*s == '>') report_buf_printf(b, "&gt;");
        else if (*s == '&') report_buf_printf(b, "&amp;");
        else if (*s == '"') report_buf_printf(b, "&quot;");
        else report_buf_put(b, s, 1);
    }
}

static void cell(ReportBuf *b, double v, const char *fmt)
{
    report_buf_printf(b, "<td>");
    if (isfinite(v)) report_buf_printf(b, fmt, v);
    else report_buf_printf(b, "&ndash;");
    report_buf_printf(b, "</td>");
}

typedef struct { int s; double dice; } RankItem;
static int cmp_rank(const void *a, const void *b)
{
    const RankItem *x = a, *y = b;
    int fx = isfinite(x->dice), fy = isfinite(y->dice);
    if (fx != fy) return fy - fx;
    if (!fx) return x->s - y->s;
    return x->dice < y->dice ? 1 : x->dice > y->dice ? -1 : x->s - y->s;
}

int report_html_index(const ReportRun *r)
{
    const int ns = r->labels->n;
    MetricsSummary all;
    TRY(metrics_summarize(r->res, r->n_subjects, ns, -1, &all));
    RankItem *rk = malloc(sizeof *rk * (size_t)ns);
    MetricsSummary *per = malloc(sizeof *per * (size_t)ns);
    if (!rk || !per) { free(rk); free(per); return seg_err(SEG_ENOMEM, "index.html"); }
    int rc = SEG_OK;
    for (int s = 0; s < ns && rc == SEG_OK; s++) {
        rc = metrics_summarize(r->res, r->n_subjects, ns, s, &per[s]);
        rk[s].s = s;
        rk[s].dice = per[s].dice_mean;
    }
    if (rc < 0) { free(rk); free(per); return rc; }
    qsort(rk, (size_t)ns, sizeof *rk, cmp_rank);
    ReportBuf b = { 0 };
    report_buf_printf(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>segeval ");
    html_text(&b, r->tag);
    report_buf_printf(&b, "</title>\n<style>body{font:14px/1.45 sans-serif;margin:24px;max-width:1200px;color:#222}"
                          "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}"
                          "td:first-child,th:first-child{text-align:left}img{max-width:100%%;border:1px solid #ddd;margin:6px 0}"
                          ".sw{display:inline-block;width:11px;height:11px;margin-right:5px;border-radius:2px}</style></head><body>\n"
                          "<h1>segeval report: ");
    html_text(&b, r->tag);
    report_buf_printf(&b, "</h1>\n<p>Mode <b>%s</b>", r->mode);
    for (int i = 0; i + 1 < 4 && r->source[i]; i += 2) {
        report_buf_printf(&b, " &middot; %s <code>", r->source[i]);
        html_text(&b, r->source[i + 1]);
        report_buf_printf(&b, "</code>");
    }
    if (r->split) report_buf_printf(&b, " &middot; split <b>%s</b>", r->split);
    if (isfinite(r->threshold)) report_buf_printf(&b, " &middot; threshold %.2f", r->threshold);
    report_buf_printf(&b, " &middot; %d subjects, %d structures.</p>\n<h2>Overall</h2>\n<table>"
                          "<tr><th>measure</th><th>value</th></tr>", r->n_subjects, ns);
    struct { const char *k; double v; const char *f; } rows[] = {
        { "Dice, mean over pairs with a non-empty reference (TotalSegmentator's convention)", all.dice_mean, "%.4f" },
        { "Dice, median (same pairs)", all.dice_median, "%.4f" },
        { "Dice, mean with false positives on absent structures as 0 (nnU-Net's convention)", all.dice_mean_nnunet, "%.4f" },
        { "IoU, mean (non-empty reference)", all.iou_mean, "%.4f" },
        { "HD95 mean (mm; misses count as the volume diagonal)", all.hd95_mean, "%.2f" },
        { "HD95 median (mm)", all.hd95_median, "%.2f" },
        { "NSD mean", all.nsd_mean, "%.4f" },
        { "pairs with a non-empty reference", all.n_ref_present, "%.0f" },
        { "missed structures (n_missed)", all.n_missed, "%.0f" },
        { "both empty (n_both_empty, NaN, left out)", all.n_both_empty, "%.0f" },
        { "false positives on absent structures (n_fp_absent)", all.n_fp_absent, "%.0f" },
        { "false-positive rate (of pairs with an empty reference)", all.fp_rate, "%.4f" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        report_buf_printf(&b, "<tr><td>%s</td>", rows[i].k);
        cell(&b, rows[i].v, rows[i].f);
        report_buf_printf(&b, "</tr>");
    }
    for (int d = 0; d < METRICS_N_DETECT; d++) {
        report_buf_printf(&b, "<tr><td>detection success rate: fraction of present structures with Dice &ge; %.1f</td>",
                          metrics_detect_thresholds[d]);
        cell(&b, all.detect[d], "%.4f");
        report_buf_printf(&b, "</tr>");
    }
    if (r->seconds_inference > 0 && r->n_slices > 0)
        report_buf_printf(&b, "<tr><td>inference</td><td>%.1f s, %.2f slices/s</td></tr>", r->seconds_inference,
                          r->n_slices / r->seconds_inference);
    report_buf_printf(&b, "<tr><td>metrics</td><td>%.2f s</td></tr></table>\n", r->seconds_metrics);
    report_buf_printf(&b, "<p>Rules: Dice = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN) on each subject's 3D stack. "
                          "Surfaces are the voxels removed by a 6-connected erosion; distances are exact Euclidean distance "
                          "transforms in mm; HD95 is the larger of the two directed 95th percentiles (MONAI's and DeepMind's "
                          "rule); NSD uses a %.1f mm tolerance. Both empty: NaN, left out. Reference empty but predicted: Dice 0, "
                          "a false positive on an absent structure. Reference present but not predicted: Dice 0, NSD 0, HD95 = the "
                          "volume's diagonal. Details in <code>summary_", r->opt.nsd_tol_mm);
    html_text(&b, r->tag);
    report_buf_printf(&b, ".json</code> (<code>rules</code>).</p>\n<h2>Files</h2><ul>");
    const char *files[][2] = { { "evaluation_results", "csv" }, { "structure_summary", "csv" }, { "summary", "json" },
                               { "metrics_distribution", "png" }, { "structure_ranking", "png" },
                               { "segmentation_visualization", "png" } };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char fn[512], path[4096];
        snprintf(fn, sizeof fn, "%s_%s.%s", files[i][0], r->tag, files[i][1]);
        if (fs_join(path, sizeof path, r->out_dir, fn) < 0 || !fs_is_file(path)) continue;
        report_buf_printf(&b, "<li><a href=\"");
        html_text(&b, fn);
        report_buf_printf(&b, "\">");
        html_text(&b, fn);
        report_buf_printf(&b, "</a></li>");
    }
    for (int i = 0; i < r->n_html; i++) {
        report_buf_printf(&b, "<li><a href=\"");
        html_text(&b, r->html_pages[i]);
        report_buf_printf(&b, "\">");
        html_text(&b, r->html_pages[i]);
        report_buf_printf(&b, "</a> (interactive 3D, works offline)</li>");
    }
    report_buf_printf(&b, "</ul>\n");
    for (size_t i = 3; i < sizeof files / sizeof files[0]; i++) {
        char fn[512], path[4096];
        snprintf(fn, sizeof fn, "%s_%s.%s", files[i][0], r->tag, files[i][1]);
        if (fs_join(path, sizeof path, r->out_dir, fn) < 0 || !fs_is_file(path)) continue;
        report_buf_printf(&b, "<p><img src=\"");
        html_text(&b, fn);
        report_buf_printf(&b, "\" alt=\"%s\"></p>\n", files[i][0]);
    }
    report_buf_printf(&b, "<h2>Structures by mean Dice</h2>\n<table><tr><th>structure</th><th>label</th><th>present</th>"
                          "<th>Dice mean</th><th>Dice median</th><th>Dice (nnU-Net)</th><th>IoU</th><th>HD95 mm</th>"
                          "<th>NSD</th><th>missed</th><th>fp absent</th><th>both empty</th><th>vol ref mL</th><th>vol pred mL</th></tr>\n");
    for (int i = 0; i < ns; i++) {
        const int s = rk[i].s;
        const MetricsSummary *m = &per[s];
        uint8_t rgb[3];
        char pretty[256];
        report_color(s, rgb);
        report_buf_printf(&b, "<tr><td><span class=\"sw\" style=\"background:rgb(%d,%d,%d)\"></span>", rgb[0], rgb[1], rgb[2]);
        html_text(&b, report_pretty_name(r->labels->names[s], pretty, sizeof pretty));
        report_buf_printf(&b, "</td><td>%d</td><td>%d</td>", s + 1, m->n_ref_present);
        cell(&b, m->dice_mean, "%.4f"); cell(&b, m->dice_median, "%.4f"); cell(&b, m->dice_mean_nnunet, "%.4f");
        cell(&b, m->iou_mean, "%.4f"); cell(&b, m->hd95_mean, "%.2f"); cell(&b, m->nsd_mean, "%.4f");
        report_buf_printf(&b, "<td>%d</td><td>%d</td><td>%d</td>", m->n_missed, m->n_fp_absent, m->n_both_empty);
        cell(&b, m->vol_ref_mean_ml, "%.2f"); cell(&b, m->vol_pred_mean_ml, "%.2f");
        report_buf_printf(&b, "</tr>\n");
    }
    report_buf_printf(&b, "</table>\n</body></html>\n");
    free(rk);
    free(per);
    char index_name[512];
    report_index_name(r, index_name, sizeof index_name);
    return report_buf_write(&b, r->out_dir, index_name);
}

void report_page_name(const ReportRun *r, const char *id, char *out, size_t n)
{
    char sid[200];
    safe_id(id, sid, sizeof sid);
    snprintf(out, n, "3d_%s_%s.html", sid, r->tag);
}

void report_index_name(const ReportRun *r, char *out, size_t n) { snprintf(out, n, "index_%s.html", r->tag); }
