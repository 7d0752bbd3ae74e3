/* eval/report.h : everything segeval writes into --out: the per-pair CSV, the
 * per-structure CSV, summary_<tag>.json (ours plus nnU-Net's summary.json keys), the PNG
 * figures (libpng through plot.h), the self-contained 3D pages and index.html.
 * File names follow the Python pipeline segeval replaces:
 *   evaluation_results_<tag>.csv     one row per subject x structure
 *   structure_summary_<tag>.csv      one row per structure
 *   summary_<tag>.json               means, medians, detection rates, nnU-Net keys
 *   metrics_distribution_<tag>.png   histograms of Dice and IoU
 *   structure_ranking_<tag>.png      every structure ranked by mean Dice
 *   segmentation_visualization_<tag>.png  CT slices with reference / prediction overlays
 *   3d_<subject>_<tag>.html          marching-cubes meshes, WebGL (Canvas 2D fallback), offline
 *   index_<tag>.html                 links and the key numbers */
#ifndef SEG_REPORT_H
#define SEG_REPORT_H
#include <stdint.h>
#include "labels.h"
#include "metrics.h"

/* One subject in the radiological axial view: voxel (c, r, k) is column c (patient right
 * -> left), row r (anterior -> posterior) of axial slice k (inferior -> superior). */
typedef struct ReportSubject {
    char         id[128];
    MetricsStack ref, pred;        /* same shape and structure count */
    int16_t     *ct;               /* ref.nx*ref.ny*ref.nz HU (slice-major), or NULL; owned */
    double       affine[4][4];     /* voxel (c, r, k) -> world RAS mm */
} ReportSubject;
void report_subject_free(ReportSubject *s);    /* NULL-safe, leaves it zeroed */

/* A finished evaluation: what the tables, JSON, figures and index are made of. */
typedef struct ReportRun {
    const char      *out_dir, *tag;
    const char      *mode;          /* "eval" or "compare" */
    const char      *source[4];     /* name/value pairs shown in the JSON and index, e.g.
                                       "checkpoint", path, "cache", dir (NULL-terminated) */
    const char      *split;         /* eval: split name; compare: NULL */
    double           threshold;     /* eval: probability threshold; compare: NaN */
    const LabelList *labels;        /* structures, channel order (label value = index + 1) */
    int              n_subjects;
    char           **subjects;      /* ids */
    const char *const *ref_files, *const *pred_files;  /* per subject, for nnU-Net's
                                       metric_per_case (NULL: "<source>#<id>") */
    const MetricsResult *res;       /* [subject * labels->n + structure] */
    MetricsOptions   opt;
    double           seconds_inference, seconds_metrics;  /* 0 if not measured */
    int64_t          n_slices;      /* slices run through the model (eval) */
    char           **html_pages;    /* 3d_*.html file names written, n_html of them */
    int              n_html;
    const uint8_t   *one_sided;     /* compare: [subject * labels->n + structure] 0, or 1/2 when
                                       the mask file is on the reference / prediction side only;
                                       NULL: none. Listed in the JSON's "one_sided". */
    int              missing_as_empty;  /* compare --missing-as-empty: those were scored */
} ReportRun;

/* evaluation_results_<tag>.csv and structure_summary_<tag>.csv. */
int report_csv(const ReportRun *r);
/* summary_<tag>.json. */
int report_json(const ReportRun *r);
/* metrics_distribution_<tag>.png and structure_ranking_<tag>.png (both tried; the first
 * error is returned). */
int report_png_charts(const ReportRun *r);
/* segmentation_visualization_<tag>.png: up to max_slices slices of s chosen where the
 * reference covers most structures, CT (or black) with reference contours and prediction
 * fills in per-structure colours, and a legend of the structures shown. */
int report_png_overlay(const ReportRun *r, const ReportSubject *s, int max_slices);

/* 3D page options. */
typedef struct ReportMeshOptions {
    int    smooth_iters;   /* Taubin steps (4) */
    double decimate_mm;    /* vertex-clustering cell (2.0 mm; 0: none) */
    int    max_triangles;  /* page budget (400000): the cell grows until the meshes fit */
} ReportMeshOptions;
void report_mesh_default(ReportMeshOptions *o);
/* 3d_<id>_<tag>.html for subject s (row: its MetricsResult per structure for the Dice shown,
 * may be NULL); *name (malloc'd, caller frees) gets the file name. Structures empty in
 * both reference and prediction are left out. */
int report_html_3d(const ReportRun *r, const ReportSubject *s, const MetricsResult *row,
                   const ReportMeshOptions *o, char **name);
/* index_<tag>.html linking everything written. */
int report_html_index(const ReportRun *r);
/* File names: "3d_<id>_<tag>.html" (id with characters outside [A-Za-z0-9._-] as '_') and
 * "index_<tag>.html", into out[n]. */
void report_page_name(const ReportRun *r, const char *id, char *out, size_t n);
void report_index_name(const ReportRun *r, char *out, size_t n);
/* Remove what an earlier run with this tag wrote in out_dir: the CSVs, the JSON, the
 * PNGs, index_<tag>.html and 3d_<id>_<tag>.html of every subject of r; only regular
 * files of those names, nothing else. SEG_EIO naming the file if one cannot be removed. */
int report_remove_outputs(const ReportRun *r);

/* Structure colour (deterministic, well spread hues) and a readable name:
 * "kidney_left" -> "kidney left" (into buf[n]). */
void report_color(int s, uint8_t rgb[3]);
const char *report_pretty_name(const char *name, char *buf, int n);

/* ---- helpers shared by the report_*.c files ---- */
/* A growable text buffer; on allocation failure it latches oom and drops output. */
typedef struct ReportBuf { char *s; size_t n, cap; int oom; } ReportBuf;
void report_buf_printf(ReportBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void report_buf_put(ReportBuf *b, const char *s, size_t n);
void report_buf_base64(ReportBuf *b, const void *data, size_t n);
void report_buf_json_string(ReportBuf *b, const char *s);   /* quoted and escaped */
/* Write b to out_dir/name atomically and free it. SEG_ENOMEM if it overflowed. */
int  report_buf_write(ReportBuf *b, const char *out_dir, const char *name);
/* A number for CSV/JS: "nan" (CSV) or "null" (JS) when not finite. */
void report_buf_num(ReportBuf *b, double v, const char *nan_text);

#endif
