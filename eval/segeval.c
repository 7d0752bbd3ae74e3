/* eval/segeval.c : the segeval command line: eval (default) | predict | compare. */
#define _POSIX_C_SOURCE 200809L
#include "cache.h"
#include "util.h"
#include "maskpack.h"
#include "compare.h"
#include "err.h"
#include "evaluate.h"
#include "fsutil.h"
#include "metrics.h"
#include "nii.h"
#include "predict.h"
#include "progress.h"
#include "report.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
static int g_verbosity = 2;   /* 0 silent 1 errors 2 summary 3 progress 4 debug */
#define LOG(l, ...) do { if (g_verbosity >= (l)) fprintf(stderr, __VA_ARGS__); } while (0)

static void usage(FILE *f)
{
    fprintf(f,
"segeval " SEG_VERSION " : score segmentation models and segmentations.\n"
"\n"
"usage:\n"
"  segeval CHECKPOINT CACHE_DIR --out DIR [--split test] [--tag TAG]     evaluate on a cache\n"
"  segeval predict CHECKPOINT CT.nii.gz OUT_DIR [--per-structure] [--statistics]\n"
"  segeval compare REF PRED --out DIR [--tag TAG] [--labels FILE] [--only NAMES|FILE]\n"
"                  [--missing-as-empty]                                   no model involved\n"
"\n"
"eval runs the model over every slice of every subject of the split, binarises at\n"
"--threshold and scores each subject's 3D stack on the cache's resampled grid.\n"
"predict writes OUT_DIR/segmentation.nii.gz (multilabel, label = channel + 1) in the\n"
"input's own grid and affine; --per-structure adds OUT_DIR/segmentations/<name>.nii.gz,\n"
"--statistics OUT_DIR/statistics.json (volume in mL and mean HU per structure).\n"
"compare scores PRED against REF; each is a multilabel NIfTI, a folder of per-structure\n"
"masks (segmentations/), a subject folder, or a dataset folder of subjects / of\n"
"nnU-Net-style case files (paired by id). Metrics use the files' own voxel spacing.\n""A structure whose mask file exists on one side only (e.g. TotalSegmentator v1 vs v2\n"
"masks) is not scored: it is named on stderr, left out of every mean and listed in the\n"
"summary JSON's one_sided; --missing-as-empty scores it as an empty mask instead.\n"
"eval refuses a checkpoint trained at another slice size than the cache's.\n"
"\n"
"outputs in --out: evaluation_results_TAG.csv, structure_summary_TAG.csv,\n"
"summary_TAG.json (with nnU-Net summary.json keys), metrics_distribution_TAG.png,\n"
"structure_ranking_TAG.png, segmentation_visualization_TAG.png, 3d_SUBJECT_TAG.html,\n"
"index_TAG.html. The CSVs and the JSON come first; a figure that cannot be drawn or\n"
"written is a warning (exit 0). An earlier run's files of the same tag are removed first\n"
"(predict likewise removes its own earlier segmentation.nii.gz, statistics.json and\n"
"segmentations/<name>.nii.gz); nothing else in the folder is touched.\n"
"\n"
"metric rules: Dice 2TP/(2TP+FP+FN), IoU TP/(TP+FP+FN); surfaces = voxels removed by a\n"
"6-connected erosion; exact Euclidean distances in mm; HD95 = max of the two directed\n"
"95th percentiles; NSD at --nsd-tol mm. Both empty: NaN (left out, counted). Reference\n"
"empty, prediction not: Dice 0, a false positive on an absent structure. Reference\n"
"present, prediction empty: Dice 0, NSD 0, HD95 = the volume's diagonal (counted).\n"
"\n"
"options:\n"
"  --out DIR          output folder (eval, compare; created)\n"
"  --tag TAG          name part of the output files (default: exp / compare)\n"
"  --split S          test (default), val, train or all (eval)\n"
"  --threshold P      probability threshold (default 0.5)\n"
"  --nsd-tol MM       NSD tolerance (default 2.0)\n"
"  --labels FILE      compare: structure names, i.e. what a multilabel file's values mean\n"
"                     (label_map.json, names list, dataset.json)\n"
"  --only NAMES|FILE  compare: score only these structures (a,b,c or a names file)\n"
"  --missing-as-empty compare: score a mask file missing on one side as an empty mask\n"
"  --batch N          slices per forward pass (default 8)\n"
"  --threads N        compute threads (default: all cores)\n"
"  --device D         auto (default: the GPU when usable), cpu, cuda or cuda:N\n"
"  --amp A            GPU precision: off (default), bf16, fp16 or tf32\n"
"  --max-3d N         3D pages for the first N subjects (default 3; 0: none)\n"
"  --decimate MM      3D mesh vertex clustering cell (default 2.0; 0: none)\n"
"  --overlay-slices N slices in the overlay figure (default 4)\n"
"  --per-structure    predict: one mask per structure as well\n"
"  --statistics       predict: statistics.json\n"
"  --progress         force the progress bar; --no-progress for plain lines\n"
"  -q, -v             quieter / more verbose\n"
"  -h, --help         this help;  -V, --version  the version\n"
"\n"
"example:\n"
"  segeval compare labelsTs/ pred/ --labels dataset.json --only liver,spleen --out cmp\n"
"  segeval compare v1/s0001 v2/s0001 --out cmp --tag v1v2        # one-sided names on stderr\n"
"\n"
"exit status: 0 ok, 1 runtime error, 2 usage error.\n");
}

typedef struct Args {
    const char *pos[4];
    int         npos;
    const char *out, *tag, *split, *labels, *only;
    double      threshold, nsd_tol, decimate;
    int         batch, threads, max_3d, overlay_slices, per_structure, statistics, progress_tty, missing_as_empty;
    UnetDevice  dev;
} Args;

/* --device/--amp to a usable device (before any output is written); logs it. */
static int resolve_device(Args *a)
{
    char desc[1024];
    const int amp = a->dev.amp;
    if (unet_device_resolve(&a->dev, desc, sizeof desc) < 0) {
        LOG(1, "segeval: %s\n", seg_errmsg());
        return -1;
    }
    LOG(a->dev.kind == UNET_CUDA || amp ? 2 : 3, "segeval: device %s\n", desc);   /* on the CPU: said only when asked */
    return 0;
}

static int fail(const char *what, int rc)
{
    LOG(1, "segeval: %s: %s\n", what, seg_errmsg()[0] ? seg_errmsg() : seg_strerror(rc));
    return EXIT_RUNTIME;
}

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    if (!v) { fprintf(stderr, "segeval: %s needs a value\n", flag); return -1; }
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "segeval: %s: '%s' is not a number in %g..%g\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out)
{
    double x;
    if (parse_num(flag, v, lo, hi, &x) < 0) return -1;
    if (x != floor(x)) { fprintf(stderr, "segeval: %s: '%s' is not an integer\n", flag, v); return -1; }
    *out = (int)x;
    return 0;
}

/* Threads for the metrics: --threads, else the online cores. */
static int n_threads(const Args *a)
{
    if (a->threads > 0) return a->threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Metrics of one loaded subject into row. */
static int score_subject(ReportRun *run, MetricsWork *w, ReportSubject *s, MetricsResult *row)
{
    double t0 = util_now_s();
    TRY(metrics_subject(w, &s->ref, &s->pred, &run->opt, row));
    run->seconds_metrics += util_now_s() - t0;
    return SEG_OK;
}

/* A figure that cannot be drawn or written is a warning, never a failed run. */
static void figure_warning(ReportRun *run, int *n_warn, const char *what, int rc)
{
    (*n_warn)++;
    LOG(1, "segeval: warning: %s not written (the results are): %s\n", what, seg_errmsg()[0] ? seg_errmsg() : seg_strerror(rc));
}

/* The results first (CSVs, JSON: a failure there fails the run), then the figures from
 * the kept subjects (keep[j] for j < n_keep), the charts and the index, each failure a
 * warning counted in *n_warn. */
static int finish_reports(ReportRun *run, ReportSubject *keep, int n_keep, const Args *a, const ReportMeshOptions *mo,
                          int *n_warn)
{
    int rc;
    *n_warn = 0;
    if ((rc = report_csv(run)) < 0) return seg_err(rc, "csv: %s", seg_errmsg());
    if ((rc = report_json(run)) < 0) return seg_err(rc, "summary json: %s", seg_errmsg());
    const int ns = run->labels->n;
    for (int j = 0; j < n_keep; j++) {
        if (j == 0 && (rc = report_png_overlay(run, &keep[0], a->overlay_slices)) < 0)
            figure_warning(run, n_warn, "segmentation_visualization", rc);
        if (j < a->max_3d) {
            char *name = NULL;
            if ((rc = report_html_3d(run, &keep[j], run->res + (size_t)j * ns, mo, &name)) < 0) {
                char what[200];
                snprintf(what, sizeof what, "3D page of %s", keep[j].id);
                figure_warning(run, n_warn, what, rc);
            } else run->html_pages[run->n_html++] = name;
        }
    }
    if ((rc = report_png_charts(run)) < 0) figure_warning(run, n_warn, "charts", rc);
    if ((rc = report_html_index(run)) < 0) figure_warning(run, n_warn, "index page", rc);
    return SEG_OK;
}

static void print_summary(const ReportRun *run)
{
    MetricsSummary m;
    if (metrics_summarize(run->res, run->n_subjects, run->labels->n, -1, &m) < 0) return;
    if (run->missing_as_empty) {   /* they were scored: count them from the flags */
        m.n_one_sided = 0;
        for (size_t i = 0; run->one_sided && i < (size_t)run->n_subjects * run->labels->n; i++) m.n_one_sided += run->one_sided[i] != 0;
    }
    printf("segeval %s: %d subjects x %d structures: Dice %.4f (mean over %d pairs with a reference; nnU-Net-style %.4f), "
           "HD95 %.2f mm, NSD@%.1fmm %.4f, missed %d, false positives on absent %d, both empty %d\n",
           run->tag, run->n_subjects, run->labels->n, m.dice_mean, m.n_ref_present, m.dice_mean_nnunet, m.hd95_mean,
           run->opt.nsd_tol_mm, m.nsd_mean, m.n_missed, m.n_fp_absent, m.n_both_empty);
    if (m.n_unlabelled)
        printf("segeval %s: %d (subject, structure) pair(s) not labelled in partly labelled subjects, left out of every "
               "mean\n", run->tag, m.n_unlabelled);
    if (m.n_one_sided)
        printf("segeval %s: %d (subject, structure) pair(s) with a mask file on one side only %s\n", run->tag,
               m.n_one_sided, run->missing_as_empty ? "scored as empty (--missing-as-empty)" : "left out of every mean");
    char index_name[512];
    report_index_name(run, index_name, sizeof index_name);
    printf("reports in %s/ (%s)\n", run->out_dir, index_name);
}

static void free_run_strings(ReportRun *run)
{
    for (int i = 0; i < run->n_html; i++) free(run->html_pages[i]);
    free(run->html_pages);
    run->html_pages = NULL;
    run->n_html = 0;
}

/* ---- compare ---- */

/* The parts of a report run that eval and compare share; subjects and html_pages are
 * allocated here (NULL on ENOMEM: the caller checks), freed by the caller as before. */
static void run_setup(ReportRun *run, const Args *a, const char *mode, const char *k1, const char *v1,
                      const char *k2, const char *v2, const LabelList *labels, int n_subjects)
{
    memset(run, 0, sizeof *run);
    run->out_dir = a->out;
    run->tag = a->tag ? a->tag : (!strcmp(mode, "eval") ? "exp" : mode);
    run->mode = mode;
    run->source[0] = k1; run->source[1] = v1;
    run->source[2] = k2; run->source[3] = v2;
    run->labels = labels;
    run->n_subjects = n_subjects;
    metrics_default_options(&run->opt);
    run->opt.nsd_tol_mm = a->nsd_tol;
    run->opt.threads = n_threads(a);
    run->subjects = calloc((size_t)(n_subjects > 0 ? n_subjects : 1), sizeof(char *));
    run->html_pages = calloc((size_t)(a->max_3d > 0 ? a->max_3d : 1), sizeof(char *));
}

static void mesh_options(ReportMeshOptions *mo, const Args *a)
{
    report_mesh_default(mo);
    mo->decimate_mm = a->decimate;
}

/* Subjects kept in memory for the figures, drawn after the results are written. */
static int n_keep_of(const Args *a, int n_subjects)
{
    int k = a->max_3d > 1 ? a->max_3d : 1;
    return k < n_subjects ? k : n_subjects;
}

static void free_kept(ReportSubject *keep, int n)
{
    for (int j = 0; keep && j < n; j++) report_subject_free(&keep[j]);
    free(keep);
}

/* The one-sided structures, once: "reference only: a, b; prediction only: c". */
static void log_one_sided(const ReportRun *run, const Args *a)
{
    const int ns = run->labels->n;
    char list[2][1024] = { "", "" };
    int cnt[2] = { 0, 0 };
    for (int t = 0; t < ns; t++)
        for (int side = 0; side < 2; side++) {
            int any = 0;
            for (int j = 0; j < run->n_subjects && !any; j++) any = run->one_sided[(size_t)j * ns + t] == side + 1;
            if (!any) continue;
            size_t l = strlen(list[side]);
            if (cnt[side]++ < 20) snprintf(list[side] + l, sizeof list[side] - l, "%s%s", l ? ", " : "", run->labels->names[t]);
            else if (cnt[side] == 21) snprintf(list[side] + l, sizeof list[side] - l, ", ...");
        }
    if (!cnt[0] && !cnt[1]) return;
    LOG(1, "segeval compare: warning: %d structure(s) have a mask file on one side only, %s: reference only (%d): %s; "
        "prediction only (%d): %s\n", cnt[0] + cnt[1],
        a->missing_as_empty ? "scored as empty masks (--missing-as-empty)"
                            : "left out of every mean (listed in the summary JSON's one_sided; --missing-as-empty scores them as empty)",
        cnt[0], cnt[0] ? list[0] : "none", cnt[1], cnt[1] ? list[1] : "none");
}

static int cmd_compare(const Args *a)
{
    if (a->npos != 3) { fprintf(stderr, "segeval: usage: segeval compare REF PRED --out DIR\n"); return EXIT_USAGE; }
    if (!a->out) { fprintf(stderr, "segeval: compare needs --out DIR\n"); return EXIT_USAGE; }
    ComparePlan plan;
    int rc = compare_plan(a->pos[1], a->pos[2], a->labels, &plan);
    if (rc < 0) return fail("compare", rc);
    if (a->only && (rc = compare_select(&plan, a->only)) < 0) { compare_plan_free(&plan); return fail("compare", rc); }
    LOG(2, "segeval compare: %d subject(s), %d structures (names from %s%s)\n", plan.n, plan.labels.n, plan.labels_from,
        a->only ? ", chosen by --only" : "");
    if (plan.n_extra_pred) LOG(2, "segeval compare: %d prediction subject(s) without a reference are ignored\n", plan.n_extra_pred);
    if (plan.n_unknown_files)
        LOG(2, "segeval compare: %d mask file(s) not in the structure list are ignored (e.g. %s)\n", plan.n_unknown_files,
            plan.unknown_example);
    if ((rc = fs_mkdirs(a->out)) < 0) { compare_plan_free(&plan); return fail(a->out, rc); }
    const int ns = plan.labels.n, n_keep = n_keep_of(a, plan.n);
    ReportRun run;
    run_setup(&run, a, "compare", "reference", a->pos[1], "prediction", a->pos[2], &plan.labels, plan.n);
    run.threshold = NAN;
    run.missing_as_empty = a->missing_as_empty;
    MetricsResult *res = calloc((size_t)plan.n * (size_t)ns, sizeof *res);
    uint8_t *one = calloc((size_t)plan.n * (size_t)ns + 1, 1);
    ReportSubject *keep = calloc((size_t)n_keep + 1, sizeof *keep);
    const char **rf = calloc((size_t)plan.n, sizeof(char *)), **pf = calloc((size_t)plan.n, sizeof(char *));
    if (rf && pf)
        for (int j = 0; j < plan.n; j++) { rf[j] = plan.pairs[j].ref.path; pf[j] = plan.pairs[j].pred.path; }
    run.ref_files = rf;
    run.pred_files = pf;
    run.one_sided = one;
    MetricsWork *w = NULL;
    if (!res || !one || !keep || !rf || !pf || !run.subjects || !run.html_pages)
        rc = seg_err(SEG_ENOMEM, "compare: results for %d subjects", plan.n);
    for (int j = 0; j < plan.n && rc == SEG_OK; j++) run.subjects[j] = plan.pairs[j].id;
    if (rc == SEG_OK && (rc = report_remove_outputs(&run)) < 0) rc = seg_err(rc, "%s", seg_errmsg());
    if (rc == SEG_OK) rc = metrics_work_create(&w);
    run.res = res;
    ReportMeshOptions mo;
    mesh_options(&mo, a);
    Progress pr;
    progress_start(&pr, "segeval compare", "subjects", plan.n, g_verbosity >= 2 && plan.n > 1, a->progress_tty);
    for (int j = 0; j < plan.n && rc == SEG_OK; j++) {
        ReportSubject s;
        int64_t unknown = 0;
        rc = compare_load(&plan, j, &s, &unknown);
        if (rc < 0) { rc = seg_err(rc, "subject %s: %s", plan.pairs[j].id, seg_errmsg()); break; }
        if (unknown) LOG(2, "segeval compare: %s: %lld voxels carry label values with no structure (ignored)\n", s.id, (long long)unknown);
        MetricsResult *row = res + (size_t)j * ns;
        rc = compare_one_sided(&plan, j, one + (size_t)j * ns);
        if (rc == SEG_OK) rc = score_subject(&run, w, &s, row);
        for (int t = 0; t < ns && rc == SEG_OK && !a->missing_as_empty; t++)
            if (one[(size_t)j * ns + t]) {
                /* one file, no pair: the counts stay, no score and no place in any mean */
                row[t].kase = METRICS_CASE_ONE_SIDED;
                row[t].dice = row[t].iou = row[t].hd95 = row[t].nsd = NAN;
            }
        if (j < n_keep) keep[j] = s;
        else report_subject_free(&s);
        progress_update(&pr, j + 1, NULL);
    }
    if (plan.n > 1) progress_finish(&pr, NULL);
    int n_warn = 0;
    if (rc == SEG_OK) log_one_sided(&run, a);
    if (rc == SEG_OK) rc = finish_reports(&run, keep, n_keep, a, &mo, &n_warn);
    if (rc == SEG_OK) print_summary(&run);
    if (rc == SEG_OK && n_warn) LOG(1, "segeval compare: %d figure(s) not written (see the warnings above); the results are complete\n", n_warn);
    metrics_work_free(w);
    free_kept(keep, n_keep);
    free_run_strings(&run);
    free(run.subjects);
    free(rf);
    free(pf);
    free(res);
    free(one);
    compare_plan_free(&plan);
    return rc < 0 ? fail("compare", rc) : EXIT_OK;
}

/* ---- eval ---- */

static int cmd_eval(const Args *a)
{
    if (a->npos != 2) { fprintf(stderr, "segeval: usage: segeval CHECKPOINT CACHE_DIR --out DIR\n"); return EXIT_USAGE; }
    if (!a->out) { fprintf(stderr, "segeval: evaluation needs --out DIR\n"); return EXIT_USAGE; }
    int split = -2;
    if (!strcmp(a->split, "all")) split = -1;
    else if ((split = cache_split_parse(a->split)) < 0) {
        fprintf(stderr, "segeval: --split: '%s' is not test, val, train or all\n", a->split);
        return EXIT_USAGE;
    }
    EvaluateOptions eo;
    evaluate_default_options(&eo);
    eo.threshold = (float)a->threshold;
    eo.batch = a->batch;
    eo.threads = a->threads;
    eo.dev = a->dev;
    Evaluator *ev = NULL;
    int rc = evaluate_open(a->pos[0], a->pos[1], split, &eo, &ev);
    if (rc < 0) return fail("eval", rc);
    const LabelList *labels = evaluate_labels(ev);
    const int ns = labels->n, nsub = evaluate_n_subjects(ev), n_keep = n_keep_of(a, nsub);
    LOG(2, "segeval: %d %s subject(s), %d slices, %d structures, model %s\n", nsub, a->split, (int)evaluate_n_slices(ev), ns,
        evaluate_model_desc(ev));
    if ((rc = fs_mkdirs(a->out)) < 0) { evaluate_close(ev); return fail(a->out, rc); }
    ReportRun run;
    run_setup(&run, a, "eval", "checkpoint", a->pos[0], "cache", a->pos[1], labels, nsub);
    run.split = a->split;
    run.threshold = a->threshold;
    MetricsResult *res = calloc((size_t)nsub * (size_t)ns, sizeof *res);
    ReportSubject *keep = calloc((size_t)n_keep + 1, sizeof *keep);
    MetricsWork *w = NULL;
    if (!res || !keep || !run.subjects || !run.html_pages) rc = seg_err(SEG_ENOMEM, "eval: results for %d subjects", nsub);
    for (int j = 0; j < nsub && rc == SEG_OK; j++) run.subjects[j] = (char *)evaluate_subject_id(ev, j);
    if (rc == SEG_OK && (rc = report_remove_outputs(&run)) < 0) rc = seg_err(rc, "%s", seg_errmsg());
    if (rc == SEG_OK) rc = metrics_work_create(&w);
    run.res = res;
    ReportMeshOptions mo;
    mesh_options(&mo, a);
    Progress pr;
    progress_start(&pr, "segeval", "slices", evaluate_n_slices(ev), g_verbosity >= 2, a->progress_tty);
    int64_t done = 0;
    for (int j = 0; j < nsub && rc == SEG_OK; j++) {
        ReportSubject s;
        double t0 = util_now_s();
        rc = evaluate_subject(ev, j, &s, &pr, &done);
        run.seconds_inference += util_now_s() - t0;
        if (rc < 0) break;
        run.n_slices += s.ref.nz;
        rc = score_subject(&run, w, &s, res + (size_t)j * ns);
        const uint8_t *lab = evaluate_subject_labelled(ev, j);
        for (int t = 0; lab && rc == SEG_OK && t < ns; t++) {   /* unknown in this subject: not scored */
            if (t < CACHE_LABELLED_MAX && maskpack_get(lab, t)) continue;
            MetricsResult *r = res + (size_t)j * ns + t;
            r->kase = METRICS_CASE_UNLABELLED;
            r->dice = r->iou = r->hd95 = r->nsd = NAN;
        }
        if (j < n_keep) keep[j] = s;
        else report_subject_free(&s);
    }
    int n_warn = 0;
    if (rc == SEG_OK) {
        char extra[64];
        snprintf(extra, sizeof extra, "metrics %.2f s", run.seconds_metrics);
        progress_finish(&pr, extra);
        LOG(2, "segeval: inference %.2f s (%.2f slices/s), metrics %.2f s (%.1f%% of inference)\n", run.seconds_inference,
            run.n_slices / (run.seconds_inference > 0 ? run.seconds_inference : 1), run.seconds_metrics,
            100 * run.seconds_metrics / (run.seconds_inference > 0 ? run.seconds_inference : 1));
        rc = finish_reports(&run, keep, n_keep, a, &mo, &n_warn);
    }
    if (rc == SEG_OK) print_summary(&run);
    if (rc == SEG_OK && n_warn) LOG(1, "segeval: %d figure(s) not written (see the warnings above); the results are complete\n", n_warn);
    metrics_work_free(w);
    free_kept(keep, n_keep);
    free_run_strings(&run);
    free(run.subjects);
    free(res);
    evaluate_close(ev);
    return rc < 0 ? fail("eval", rc) : EXIT_OK;
}

/* ---- predict ---- */

static int cmd_predict(const Args *a)
{
    if (a->npos != 4) {
        fprintf(stderr, "segeval: usage: segeval predict CHECKPOINT CT.nii.gz OUT_DIR [--per-structure] [--statistics]\n");
        return EXIT_USAGE;
    }
    PredictOptions po;
    predict_default_options(&po);
    po.threshold = (float)a->threshold;
    po.batch = a->batch;
    po.threads = a->threads;
    po.dev = a->dev;
    po.per_structure = a->per_structure;
    po.statistics = a->statistics;
    po.verbosity = g_verbosity;
    po.progress_tty = a->progress_tty;
    PredictInfo info;
    int rc = predict_ct(a->pos[1], a->pos[2], a->pos[3], &po, &info);
    if (rc < 0) return fail("predict", rc);
    printf("segeval predict: %s -> %s/segmentation.nii.gz (%lldx%lldx%lld, %d structures, %d slices in %.2f s, "
           "%d structures found)\n", a->pos[2], a->pos[3], (long long)info.dim[0], (long long)info.dim[1],
           (long long)info.dim[2], info.n_structures, info.n_slices, info.seconds, info.n_found);
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    Args a;
    memset(&a, 0, sizeof a);
    a.dev.kind = UNET_AUTO;
    a.split = "test";
    a.threshold = 0.5;
    a.nsd_tol = 2.0;
    a.decimate = 2.0;
    a.batch = 8;
    a.max_3d = 3;
    a.overlay_slices = 4;
    a.progress_tty = -1;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) { usage(stdout); return EXIT_OK; }
        else if (!strcmp(s, "-V") || !strcmp(s, "--version")) { printf("segeval %s\n", SEG_VERSION); return EXIT_OK; }
        else if (!strcmp(s, "-q")) g_verbosity--;
        else if (!strcmp(s, "-v")) g_verbosity++;
        else if (!strcmp(s, "--per-structure")) a.per_structure = 1;
        else if (!strcmp(s, "--statistics")) a.statistics = 1;
        else if (!strcmp(s, "--progress")) a.progress_tty = 1;
        else if (!strcmp(s, "--no-progress")) a.progress_tty = 0;
        else if (!strcmp(s, "--out")) { if (!next) goto missing; a.out = next; i++; }
        else if (!strcmp(s, "--tag")) { if (!next) goto missing; a.tag = next; i++; }
        else if (!strcmp(s, "--split")) { if (!next) goto missing; a.split = next; i++; }
        else if (!strcmp(s, "--labels")) { if (!next) goto missing; a.labels = next; i++; }
        else if (!strcmp(s, "--only")) { if (!next) goto missing; a.only = next; i++; }
        else if (!strcmp(s, "--missing-as-empty")) a.missing_as_empty = 1;
        else if (!strcmp(s, "--threshold")) { if (parse_num(s, next, 1e-6, 1 - 1e-6, &a.threshold) < 0) return EXIT_USAGE; i++; }
        else if (!strcmp(s, "--nsd-tol")) { if (parse_num(s, next, 0, 1e6, &a.nsd_tol) < 0) return EXIT_USAGE; i++; }
        else if (!strcmp(s, "--decimate")) { if (parse_num(s, next, 0, 1e3, &a.decimate) < 0) return EXIT_USAGE; i++; }
        else if (!strcmp(s, "--batch")) { if (parse_int(s, next, 1, 1024, &a.batch) < 0) return EXIT_USAGE; i++; }
        else if (!strcmp(s, "--threads")) { if (parse_int(s, next, 1, 256, &a.threads) < 0) return EXIT_USAGE; i++; }
        else if (!strcmp(s, "--device") || !strcmp(s, "--amp")) {
            if ((s[2] == 'd' ? unet_device_parse(next, &a.dev) : unet_amp_parse(next, &a.dev)) < 0) {
                fprintf(stderr, "segeval: %s (see segeval --help)\n", seg_errmsg());
                return EXIT_USAGE;
            }
            i++;
        }
        else if (!strcmp(s, "--max-3d")) { if (parse_int(s, next, 0, 10000, &a.max_3d) < 0) return EXIT_USAGE; i++; }
        else if (!strcmp(s, "--overlay-slices")) { if (parse_int(s, next, 1, 12, &a.overlay_slices) < 0) return EXIT_USAGE; i++; }
        else if (s[0] == '-' && s[1]) { fprintf(stderr, "segeval: unknown option '%s' (see segeval --help)\n", s); return EXIT_USAGE; }
        else if (a.npos < 4) a.pos[a.npos++] = s;
        else { fprintf(stderr, "segeval: too many arguments (see segeval --help)\n"); return EXIT_USAGE; }
        continue;
    missing:
        fprintf(stderr, "segeval: %s needs a value\n", s);
        return EXIT_USAGE;
    }
    if (a.npos == 0) { usage(stderr); return EXIT_USAGE; }
    if (a.tag && (!a.tag[0] || strchr(a.tag, '/'))) { fprintf(stderr, "segeval: --tag must be a non-empty name without '/'\n"); return EXIT_USAGE; }
    if (strcmp(a.pos[0], "compare") && (a.only || a.missing_as_empty)) {
        fprintf(stderr, "segeval: %s is a compare option (see segeval --help)\n", a.only ? "--only" : "--missing-as-empty");
        return EXIT_USAGE;
    }
    if (!strcmp(a.pos[0], "compare")) return cmd_compare(&a);    /* no model: no device */
    if (resolve_device(&a) < 0) return EXIT_RUNTIME;
    if (!strcmp(a.pos[0], "predict")) return cmd_predict(&a);
    if (!strcmp(a.pos[0], "eval")) { for (int i = 1; i < a.npos; i++) a.pos[i - 1] = a.pos[i]; a.npos--; }
    return cmd_eval(&a);
}
