/* eval/report_tables.c : evaluation_results_<tag>.csv, structure_summary_<tag>.csv and
 * summary_<tag>.json (cJSON). */
#include "report.h"
#include "err.h"
#include "fsutil.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SEG_VERSION
#define SEG_VERSION "0"
#endif

static const char *RULES[][2] = {
    { "dice", "2TP/(2TP+FP+FN) on the 3D stack of the subject" },
    { "iou", "TP/(TP+FP+FN)" },
    { "surface", "mask voxels removed by a 6-connected binary erosion (outside the volume is background)" },
    { "hd95", "max of the two directed 95th percentiles (numpy linear interpolation) of exact Euclidean "
              "surface-to-surface distances in mm with the voxel spacing (MONAI's and DeepMind's rule)" },
    { "nsd", "normalised surface Dice: (pred surface voxels within tol of the reference surface + reference "
             "surface voxels within tol of the predicted surface) / all surface voxels" },
    { "both_empty", "reference and prediction empty: Dice, IoU, HD95, NSD are NaN, left out of every mean, counted in n_both_empty" },
    { "fp_absent", "reference empty, prediction not: Dice = IoU = 0 (false positive on an absent structure), "
                   "HD95 and NSD NaN; counted in n_fp_absent" },
    { "missed", "reference present, prediction empty: Dice = IoU = NSD = 0, HD95 = the volume diagonal "
                "sqrt(sum((n_i*spacing_i)^2)) in mm (not NaN); counted in n_missed" },
    { "mean_present", "dice_mean/iou_mean/medians: pairs with a non-empty reference only (TotalSegmentator's convention)" },
    { "mean_nnunet", "dice_mean_nnunet/iou_mean_nnunet: NaN (both empty) left out, false positives on absent "
                     "structures count as 0 (nnU-Net's convention)" },
    { "detection", "detection_rate@t: of the (subject, structure) pairs with a non-empty reference, the fraction "
                   "with Dice >= t. fp_rate: of the pairs with an empty reference, the fraction with a non-empty prediction" },
    { "overall", "overall.*_macro: mean over structures of the per-structure values; overall.pooled: every pair of every structure pooled" },
};

static void out_name(char *buf, size_t n, const char *prefix, const char *tag, const char *ext)
{
    snprintf(buf, n, "%s_%s.%s", prefix, tag, ext);
}

/* ---- CSV ---- */

int report_csv(const ReportRun *r)
{
    const int ns = r->labels->n;
    ReportBuf b = { 0 };
    report_buf_printf(&b, "subject,structure,label,case,dice,iou,hd95_mm,nsd,tp,fp,fn,n_ref,n_pred,"
                          "vol_ref_ml,vol_pred_ml,surface_ref,surface_pred\n");
    for (int j = 0; j < r->n_subjects; j++)
        for (int s = 0; s < ns; s++) {
            const MetricsResult *m = &r->res[(size_t)j * ns + s];
            report_buf_printf(&b, "%s,%s,%d,%s,", r->subjects[j], r->labels->names[s], s + 1, metrics_case_name(m->kase));
            const double v[4] = { m->dice, m->iou, m->hd95, m->nsd };
            for (int k = 0; k < 4; k++) { report_buf_num(&b, v[k], "nan"); report_buf_put(&b, ",", 1); }
            report_buf_printf(&b, "%lld,%lld,%lld,%lld,%lld,%.6g,%.6g,%lld,%lld\n", (long long)m->tp, (long long)m->fp,
                              (long long)m->fn, (long long)m->n_ref, (long long)m->n_pred, m->vol_ref_ml, m->vol_pred_ml,
                              (long long)m->n_surf_ref, (long long)m->n_surf_pred);
        }
    char name[512];
    out_name(name, sizeof name, "evaluation_results", r->tag, "csv");
    TRY(report_buf_write(&b, r->out_dir, name));

    report_buf_printf(&b, "structure,label,n_subjects,n_ref_present,n_both_empty,n_fp_absent,n_missed,"
                          "dice_mean,dice_median,dice_std,iou_mean,iou_median,dice_mean_nnunet,iou_mean_nnunet,"
                          "hd95_mean_mm,hd95_median_mm,nsd_mean,nsd_median,vol_ref_mean_ml,vol_pred_mean_ml");
    for (int d = 0; d < METRICS_N_DETECT; d++) report_buf_printf(&b, ",detection_rate@%.1f", metrics_detect_thresholds[d]);
    report_buf_printf(&b, ",fp_rate\n");
    for (int s = 0; s < ns; s++) {
        MetricsSummary m;
        TRY(metrics_summarize(r->res, r->n_subjects, ns, s, &m));
        report_buf_printf(&b, "%s,%d,%d,%d,%d,%d,%d", r->labels->names[s], s + 1, m.n_pairs, m.n_ref_present,
                          m.n_both_empty, m.n_fp_absent, m.n_missed);
        const double v[] = { m.dice_mean, m.dice_median, m.dice_std, m.iou_mean, m.iou_median, m.dice_mean_nnunet,
                             m.iou_mean_nnunet, m.hd95_mean, m.hd95_median, m.nsd_mean, m.nsd_median,
                             m.vol_ref_mean_ml, m.vol_pred_mean_ml };
        for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) { report_buf_put(&b, ",", 1); report_buf_num(&b, v[k], "nan"); }
        for (int d = 0; d < METRICS_N_DETECT; d++) { report_buf_put(&b, ",", 1); report_buf_num(&b, m.detect[d], "nan"); }
        report_buf_put(&b, ",", 1);
        report_buf_num(&b, m.fp_rate, "nan");
        report_buf_put(&b, "\n", 1);
    }
    out_name(name, sizeof name, "structure_summary", r->tag, "csv");
    return report_buf_write(&b, r->out_dir, name);
}

/* ---- JSON ---- */

static void add_num(cJSON *o, const char *k, double v)
{
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);   /* NaN: JSON null */
}

static cJSON *summary_object(const MetricsSummary *m)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "n_pairs", m->n_pairs);
    cJSON_AddNumberToObject(o, "n_ref_present", m->n_ref_present);
    cJSON_AddNumberToObject(o, "n_both_empty", m->n_both_empty);
    cJSON_AddNumberToObject(o, "n_fp_absent", m->n_fp_absent);
    cJSON_AddNumberToObject(o, "n_missed", m->n_missed);
    if (m->n_one_sided) cJSON_AddNumberToObject(o, "n_one_sided", m->n_one_sided);
    if (m->n_unlabelled) cJSON_AddNumberToObject(o, "n_unlabelled", m->n_unlabelled);
    add_num(o, "dice_mean", m->dice_mean);
    add_num(o, "dice_median", m->dice_median);
    add_num(o, "dice_std", m->dice_std);
    add_num(o, "iou_mean", m->iou_mean);
    add_num(o, "iou_median", m->iou_median);
    add_num(o, "dice_mean_nnunet", m->dice_mean_nnunet);
    add_num(o, "iou_mean_nnunet", m->iou_mean_nnunet);
    add_num(o, "hd95_mean_mm", m->hd95_mean);
    add_num(o, "hd95_median_mm", m->hd95_median);
    add_num(o, "nsd_mean", m->nsd_mean);
    add_num(o, "nsd_median", m->nsd_median);
    add_num(o, "vol_ref_mean_ml", m->vol_ref_mean_ml);
    add_num(o, "vol_pred_mean_ml", m->vol_pred_mean_ml);
    for (int d = 0; d < METRICS_N_DETECT; d++) {
        char k[32];
        snprintf(k, sizeof k, "detection_rate@%.1f", metrics_detect_thresholds[d]);
        add_num(o, k, m->detect[d]);
    }
    add_num(o, "fp_rate", m->fp_rate);
    return o;
}

/* nnU-Net's per-label metric block. */
static cJSON *nnunet_block(double dice, double iou, double tp, double fp, double fn, double tn, double nref, double npred)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    add_num(o, "Dice", dice);
    add_num(o, "IoU", iou);
    add_num(o, "FN", fn);
    add_num(o, "FP", fp);
    add_num(o, "TN", tn);
    add_num(o, "TP", tp);
    add_num(o, "n_pred", npred);
    add_num(o, "n_ref", nref);
    return o;
}

int report_json(const ReportRun *r)
{
    const int ns = r->labels->n, nj = r->n_subjects;
    cJSON *root = cJSON_CreateObject();
    if (!root) return seg_err(SEG_ENOMEM, "summary json");
    cJSON_AddStringToObject(root, "tool", "segeval");
    cJSON_AddStringToObject(root, "version", SEG_VERSION);
    cJSON_AddStringToObject(root, "mode", r->mode);
    cJSON_AddStringToObject(root, "tag", r->tag);
    for (int i = 0; i + 1 < 4 && r->source[i]; i += 2) cJSON_AddStringToObject(root, r->source[i], r->source[i + 1]);
    if (r->split) cJSON_AddStringToObject(root, "split", r->split);
    add_num(root, "threshold", r->threshold);
    cJSON_AddNumberToObject(root, "nsd_tolerance_mm", r->opt.nsd_tol_mm);
    cJSON_AddNumberToObject(root, "hd_percentile", r->opt.percentile);
    cJSON_AddNumberToObject(root, "n_subjects", nj);
    cJSON_AddNumberToObject(root, "n_structures", ns);
    cJSON *subj = cJSON_AddArrayToObject(root, "subjects");
    for (int j = 0; j < nj; j++) cJSON_AddItemToArray(subj, cJSON_CreateString(r->subjects[j]));
    cJSON *rules = cJSON_AddObjectToObject(root, "rules");
    for (size_t i = 0; i < sizeof RULES / sizeof RULES[0]; i++) cJSON_AddStringToObject(rules, RULES[i][0], RULES[i][1]);

    /* per structure, and the macro means over structures */
    cJSON *per = cJSON_AddObjectToObject(root, "per_structure");
    double *macro = malloc(sizeof(double) * (size_t)ns * 6);
    if (!macro) { cJSON_Delete(root); return seg_err(SEG_ENOMEM, "summary json"); }
    int rc = SEG_OK;
    for (int s = 0; s < ns && rc == SEG_OK; s++) {
        MetricsSummary m;
        if ((rc = metrics_summarize(r->res, nj, ns, s, &m)) < 0) break;
        cJSON *o = summary_object(&m);
        cJSON_AddNumberToObject(o, "label", s + 1);
        cJSON_AddItemToObject(per, r->labels->names[s], o);
        macro[s] = m.dice_mean; macro[ns + s] = m.iou_mean; macro[2 * ns + s] = m.dice_mean_nnunet;
        macro[3 * ns + s] = m.iou_mean_nnunet; macro[4 * ns + s] = m.hd95_mean; macro[5 * ns + s] = m.nsd_mean;
    }
    MetricsSummary all;
    if (rc == SEG_OK) rc = metrics_summarize(r->res, nj, ns, -1, &all);
    if (rc < 0) { free(macro); cJSON_Delete(root); return rc; }
    cJSON *ov = cJSON_AddObjectToObject(root, "overall");
    static const char *mk[6] = { "dice_mean_macro", "iou_mean_macro", "dice_mean_nnunet_macro", "iou_mean_nnunet_macro",
                                 "hd95_mean_mm_macro", "nsd_mean_macro" };
    for (int k = 0; k < 6; k++) add_num(ov, mk[k], metrics_nanmean(macro + (size_t)k * ns, ns));
    cJSON_AddItemToObject(ov, "pooled", summary_object(&all));
    free(macro);
    cJSON *det = cJSON_AddObjectToObject(root, "detection");
    cJSON *th = cJSON_AddArrayToObject(det, "dice_thresholds");
    cJSON *rate = cJSON_AddArrayToObject(det, "success_rate");
    for (int d = 0; d < METRICS_N_DETECT; d++) {
        cJSON_AddItemToArray(th, cJSON_CreateNumber(metrics_detect_thresholds[d]));
        cJSON_AddItemToArray(rate, isfinite(all.detect[d]) ? cJSON_CreateNumber(all.detect[d]) : cJSON_CreateNull());
    }
    cJSON_AddNumberToObject(det, "n_pairs_ref_present", all.n_ref_present);
    cJSON_AddNumberToObject(det, "n_pairs_ref_empty", all.n_ref_empty);
    cJSON_AddNumberToObject(det, "n_false_positive_absent", all.n_fp_absent);
    add_num(det, "false_positive_rate", all.fp_rate);
    cJSON_AddStringToObject(det, "definition", RULES[10][1]);
    if (!strcmp(r->mode, "compare")) {
        /* structures whose mask file exists on one side only (union over subjects) */
        cJSON *os = cJSON_AddObjectToObject(root, "one_sided");
        cJSON *lr = cJSON_AddArrayToObject(os, "reference_only"), *lp = cJSON_AddArrayToObject(os, "prediction_only");
        int n_os = 0;
        for (int t = 0; t < ns; t++) {
            int in_r = 0, in_p = 0;
            for (int j = 0; r->one_sided && j < nj; j++) {
                const uint8_t f = r->one_sided[(size_t)j * ns + t];
                in_r |= f == 1; in_p |= f == 2; n_os += f != 0;
            }
            if (in_r) cJSON_AddItemToArray(lr, cJSON_CreateString(r->labels->names[t]));
            if (in_p) cJSON_AddItemToArray(lp, cJSON_CreateString(r->labels->names[t]));
        }
        cJSON_AddNumberToObject(os, "n_pairs", n_os);
        cJSON_AddBoolToObject(os, "scored_as_empty", r->missing_as_empty != 0);
        cJSON_AddStringToObject(os, "rule", r->missing_as_empty
            ? "--missing-as-empty: a mask file missing on one side was scored as an empty mask"
            : "a (subject, structure) whose mask file exists on one side only is not scored and is left out of every mean "
              "(case one_sided); --missing-as-empty scores it as an empty mask");
    }
    cJSON *tm = cJSON_AddObjectToObject(root, "timing");
    add_num(tm, "inference_s", r->seconds_inference);
    add_num(tm, "metrics_s", r->seconds_metrics);
    cJSON_AddNumberToObject(tm, "slices", (double)r->n_slices);
    if (r->seconds_inference > 0 && r->n_slices > 0) add_num(tm, "slices_per_s", r->n_slices / r->seconds_inference);

    /* nnU-Net summary.json keys: label values as strings, nanmean over cases */
    cJSON *mpc = cJSON_AddArrayToObject(root, "metric_per_case");
    double *acc = calloc((size_t)ns * 8, sizeof(double));
    int *cnt = calloc((size_t)ns * 2, sizeof(int));
    if (!acc || !cnt) { free(acc); free(cnt); cJSON_Delete(root); return seg_err(SEG_ENOMEM, "summary json"); }
    for (int j = 0; j < nj; j++) {
        cJSON *c = cJSON_CreateObject(), *ms = cJSON_AddObjectToObject(c, "metrics");
        for (int s = 0; s < ns; s++) {
            const MetricsResult *m = &r->res[(size_t)j * ns + s];
            char k[16];
            snprintf(k, sizeof k, "%d", s + 1);
            cJSON_AddItemToObject(ms, k, nnunet_block(m->dice, m->iou, (double)m->tp, (double)m->fp, (double)m->fn,
                                                      (double)m->tn, (double)m->n_ref, (double)m->n_pred));
            double *a = acc + (size_t)s * 8;
            if (m->kase == METRICS_CASE_ONE_SIDED || m->kase == METRICS_CASE_UNLABELLED) continue;   /* not scored: in no mean */
            if (isfinite(m->dice)) { a[0] += m->dice; a[1] += m->iou; cnt[2 * s]++; }
            a[2] += (double)m->tp; a[3] += (double)m->fp; a[4] += (double)m->fn; a[5] += (double)m->tn;
            a[6] += (double)m->n_ref; a[7] += (double)m->n_pred;
            cnt[2 * s + 1]++;
        }
        /* eval: the prediction comes from the checkpoint, the reference from the cache */
        const int cmp = !strcmp(r->mode, "compare");
        const char *src_pred = r->source[cmp ? 3 : 1], *src_ref = r->source[cmp ? 1 : 3];
        char ref[4200], pred[4200];
        if (r->ref_files && r->ref_files[j]) snprintf(ref, sizeof ref, "%s", r->ref_files[j]);
        else snprintf(ref, sizeof ref, "%s#%s", src_ref ? src_ref : "", r->subjects[j]);
        if (r->pred_files && r->pred_files[j]) snprintf(pred, sizeof pred, "%s", r->pred_files[j]);
        else snprintf(pred, sizeof pred, "%s#%s", src_pred ? src_pred : "", r->subjects[j]);
        cJSON_AddStringToObject(c, "prediction_file", pred);
        cJSON_AddStringToObject(c, "reference_file", ref);
        cJSON_AddItemToArray(mpc, c);
    }
    cJSON *mean = cJSON_AddObjectToObject(root, "mean");
    double fg[8] = { 0 };
    int fgn[2] = { 0, 0 };
    for (int s = 0; s < ns; s++) {
        const double *a = acc + (size_t)s * 8;
        int nd = cnt[2 * s], nc = cnt[2 * s + 1];
        double v[8] = { nd ? a[0] / nd : NAN, nd ? a[1] / nd : NAN };
        for (int k = 2; k < 8; k++) v[k] = nc ? a[k] / nc : NAN;
        char k[16];
        snprintf(k, sizeof k, "%d", s + 1);
        cJSON_AddItemToObject(mean, k, nnunet_block(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]));
        if (isfinite(v[0])) { fg[0] += v[0]; fg[1] += v[1]; fgn[0]++; }
        for (int q = 2; q < 8; q++) fg[q] += isfinite(v[q]) ? v[q] : 0;
        fgn[1]++;
    }
    cJSON_AddItemToObject(root, "foreground_mean",
                          nnunet_block(fgn[0] ? fg[0] / fgn[0] : NAN, fgn[0] ? fg[1] / fgn[0] : NAN, fg[2] / fgn[1], fg[3] / fgn[1],
                                       fg[4] / fgn[1], fg[5] / fgn[1], fg[6] / fgn[1], fg[7] / fgn[1]));
    cJSON_AddStringToObject(root, "nnunet_compat_note",
                            "metric_per_case/mean/foreground_mean follow nnU-Net v2's summary.json (labels as string keys = "
                            "label value, NaN written as null); mean is the mean over cases ignoring NaN, foreground_mean the "
                            "mean over labels of those means (labels that are NaN in every case are left out)");
    free(acc);
    free(cnt);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return seg_err(SEG_ENOMEM, "summary json: printing");
    char name[512], path[4096];
    out_name(name, sizeof name, "summary", r->tag, "json");
    rc = fs_join(path, sizeof path, r->out_dir, name);
    if (rc == SEG_OK) rc = fs_write_atomic(path, text, strlen(text));
    free(text);
    return rc;
}
