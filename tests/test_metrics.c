/* tests/test_metrics.c : eval/metrics against the numpy/scipy reference in
 * tests/fixtures/metrics/cases.json (tools/make_metric_fixtures.py), an O(n^2) brute-force
 * EDT on seeded random volumes, symmetry, and the summaries on a hand-made table.
 * usage: test_metrics [SEED] (run from the repo root) */
#include "err.h"
#include "fsutil.h"
#include "metrics.h"
#include "testutil.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FIXTURE "tests/fixtures/metrics/cases.json"

static int same(double got, double ref, double tol)
{
    if (isnan(ref) || isnan(got)) return isnan(ref) && isnan(got);
    return fabs(got - ref) <= tol * (1.0 + fabs(ref));
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;   /* null = NaN */
}

/* Fill structure 0 of m from an RLE list over the flat x-fastest index. */
static int fill_rle(MetricsStack *m, const cJSON *rle)
{
    int n = cJSON_GetArraySize(rle);
    for (int i = 0; i + 1 < n; i += 2) {
        long s = (long)cJSON_GetArrayItem(rle, i)->valuedouble, len = (long)cJSON_GetArrayItem(rle, i + 1)->valuedouble;
        for (long p = s; p < s + len; p++) {
            int x = (int)(p % m->nx), y = (int)((p / m->nx) % m->ny), z = (int)(p / ((long)m->nx * m->ny));
            TRY(metrics_stack_set(m, 0, x, y, z));
        }
    }
    return SEG_OK;
}

static void run_case(MetricsWork *w, const cJSON *c)
{
    const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
    const cJSON *dim = cJSON_GetObjectItem(c, "dim"), *spj = cJSON_GetObjectItem(c, "spacing");
    const cJSON *e = cJSON_GetObjectItem(c, "expect");
    int nx = cJSON_GetArrayItem(dim, 0)->valueint, ny = cJSON_GetArrayItem(dim, 1)->valueint,
        nz = cJSON_GetArrayItem(dim, 2)->valueint;
    double sp[3];
    for (int i = 0; i < 3; i++) sp[i] = cJSON_GetArrayItem(spj, i)->valuedouble;
    MetricsStack ref, pred;
    int rc = metrics_stack_init(&ref, nx, ny, nz, 1, sp);
    if (rc == 0) rc = metrics_stack_init(&pred, nx, ny, nz, 1, sp);
    if (rc == 0) rc = fill_rle(&ref, cJSON_GetObjectItem(c, "ref"));
    if (rc == 0) rc = fill_rle(&pred, cJSON_GetObjectItem(c, "pred"));
    MetricsOptions o;
    metrics_default_options(&o);
    o.nsd_tol_mm = jnum(c, "tol");
    MetricsResult r, rs;
    if (rc == 0) rc = metrics_subject(w, &ref, &pred, &o, &r);
    if (rc == 0) rc = metrics_subject(w, &pred, &ref, &o, &rs);   /* swapped */
    CHECK(rc == 0, "%s: computed (%s)", name, rc ? seg_errmsg() : "ok");
    if (rc) { metrics_stack_free(&ref); metrics_stack_free(&pred); return; }
    const double tol = 1e-9;
    const char *kase = cJSON_GetObjectItem(e, "case")->valuestring;
    CHECK(!strcmp(metrics_case_name(r.kase), kase), "%s: case %s (ref %s)", name, metrics_case_name(r.kase), kase);
    CHECK(r.tp == (int64_t)jnum(e, "tp") && r.fp == (int64_t)jnum(e, "fp") && r.fn == (int64_t)jnum(e, "fn") &&
          r.n_ref == (int64_t)jnum(e, "n_ref") && r.n_pred == (int64_t)jnum(e, "n_pred"),
          "%s: tp %lld fp %lld fn %lld (ref %g %g %g)", name, (long long)r.tp, (long long)r.fp, (long long)r.fn,
          jnum(e, "tp"), jnum(e, "fp"), jnum(e, "fn"));
    CHECK(r.n_surf_ref == (int64_t)jnum(e, "n_surf_ref") && r.n_surf_pred == (int64_t)jnum(e, "n_surf_pred"),
          "%s: surface voxels %lld/%lld (ref %g/%g)", name, (long long)r.n_surf_ref, (long long)r.n_surf_pred,
          jnum(e, "n_surf_ref"), jnum(e, "n_surf_pred"));
    CHECK(same(r.dice, jnum(e, "dice"), tol) && same(r.iou, jnum(e, "iou"), tol),
          "%s: dice %.12g iou %.12g (ref %.12g %.12g)", name, r.dice, r.iou, jnum(e, "dice"), jnum(e, "iou"));
    CHECK(same(r.hd95, jnum(e, "hd95"), tol), "%s: hd95 %.12g (ref %.12g)", name, r.hd95, jnum(e, "hd95"));
    CHECK(same(r.nsd, jnum(e, "nsd"), tol), "%s: nsd %.12g (ref %.12g)", name, r.nsd, jnum(e, "nsd"));
    CHECK(same(r.vol_ref_ml, jnum(e, "vol_ref_ml"), tol) && same(r.vol_pred_ml, jnum(e, "vol_pred_ml"), tol),
          "%s: volumes %.6g / %.6g mL", name, r.vol_ref_ml, r.vol_pred_ml);
    if (r.kase == METRICS_CASE_BOTH)
        CHECK(same(r.dice, rs.dice, 1e-15) && same(r.hd95, rs.hd95, 1e-12) && same(r.nsd, rs.nsd, 1e-12),
              "%s: symmetric under ref<->pred (hd95 %.6g vs %.6g)", name, r.hd95, rs.hd95);
    metrics_stack_free(&ref);
    metrics_stack_free(&pred);
}

static void check_edt_fixture(const cJSON *e)
{
    const cJSON *dim = cJSON_GetObjectItem(e, "dim"), *spj = cJSON_GetObjectItem(e, "spacing");
    int nx = cJSON_GetArrayItem(dim, 0)->valueint, ny = cJSON_GetArrayItem(dim, 1)->valueint,
        nz = cJSON_GetArrayItem(dim, 2)->valueint;
    double sp[3];
    for (int i = 0; i < 3; i++) sp[i] = cJSON_GetArrayItem(spj, i)->valuedouble;
    size_t n = (size_t)nx * ny * nz;
    uint8_t *f = calloc(n, 1);
    double *d = malloc(n * sizeof *d);
    const cJSON *rle = cJSON_GetObjectItem(e, "feat"), *ref = cJSON_GetObjectItem(e, "dist");
    for (int i = 0; i + 1 < cJSON_GetArraySize(rle); i += 2)
        for (int p = cJSON_GetArrayItem(rle, i)->valueint, k = 0; k < cJSON_GetArrayItem(rle, i + 1)->valueint; k++)
            f[p + k] = 1;
    int rc = metrics_edt(f, nx, ny, nz, sp, d);
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        double dd = fabs(d[i] - cJSON_GetArrayItem(ref, (int)i)->valuedouble);
        if (dd > worst) { worst = dd; wi = i; }
    }
    CHECK(rc == 0 && (int)n == cJSON_GetArraySize(ref) && worst < 1e-9,
          "edt vs scipy distance_transform_edt %dx%dx%d spacing %.1f/%.1f/%.1f: max|d| %.3g at %zu", nx, ny, nz,
          sp[0], sp[1], sp[2], worst, wi);
    free(f);
    free(d);
}

static void check_percentile_fixture(const cJSON *p)
{
    const cJSON *vals = cJSON_GetObjectItem(p, "values"), *qs = cJSON_GetObjectItem(p, "q"),
                *ex = cJSON_GetObjectItem(p, "expect");
    int n = cJSON_GetArraySize(vals);
    double *v = malloc(sizeof(double) * (size_t)n);
    for (int k = 0; k < cJSON_GetArraySize(qs); k++) {
        for (int i = 0; i < n; i++) v[i] = cJSON_GetArrayItem(vals, i)->valuedouble;
        double q = cJSON_GetArrayItem(qs, k)->valuedouble, want = cJSON_GetArrayItem(ex, k)->valuedouble;
        double got = metrics_percentile(v, (size_t)n, q);
        CHECK(same(got, want, 1e-12), "percentile q=%g of %d values: %.12g (numpy %.12g)", q, n, got, want);
    }
    free(v);
}

/* Brute force: distance from every voxel to every feature. */
static void check_edt_bruteforce(uint64_t *seed)
{
    for (int trial = 0; trial < 6; trial++) {
        int nx = 1 + (int)(t_rand(seed) % 17), ny = 1 + (int)(t_rand(seed) % 13), nz = 1 + (int)(t_rand(seed) % 9);
        double sp[3] = { 0.3 + (t_rand(seed) % 100) / 40.0, 0.3 + (t_rand(seed) % 100) / 40.0, 0.3 + (t_rand(seed) % 100) / 25.0 };
        size_t n = (size_t)nx * ny * nz;
        uint8_t *f = calloc(n, 1);
        double *d = malloc(n * sizeof *d);
        int density = 1 + (int)(t_rand(seed) % 20);
        for (size_t i = 0; i < n; i++) f[i] = (int)(t_rand(seed) % 100) < density;
        int rc = metrics_edt(f, nx, ny, nz, sp, d);
        double worst = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
            int x = (int)(i % nx), y = (int)(i / nx % ny), z = (int)(i / ((size_t)nx * ny));
            double best = INFINITY;
            for (size_t j = 0; j < n; j++) {
                if (!f[j]) continue;
                double dx = (x - (int)(j % nx)) * sp[0], dy = (y - (int)(j / nx % ny)) * sp[1],
                       dz = (z - (int)(j / ((size_t)nx * ny))) * sp[2];
                double v = dx * dx + dy * dy + dz * dz;
                if (v < best) best = v;
            }
            best = sqrt(best);
            double dd = (isinf(best) && isinf(d[i])) ? 0 : fabs(best - d[i]);
            if (!(dd <= worst)) worst = dd;
        }
        CHECK(rc == 0 && worst < 1e-9, "edt vs brute force %dx%dx%d density %d%%: max|d| %.3g", nx, ny, nz, density, worst);
        free(f);
        free(d);
    }
}

/* Summary rules on a hand-made 3-subject x 2-structure table. */
static void check_summary(void)
{
    MetricsResult t[6];
    memset(t, 0, sizeof t);
    /* structure 0: dice 0.8 (hd 2, nsd 0.9), both empty, fp on absent */
    t[0] = (MetricsResult){ .kase = METRICS_CASE_BOTH, .dice = 0.8, .iou = 0.8 / 1.2, .hd95 = 2, .nsd = 0.9, .vol_ref_ml = 10, .vol_pred_ml = 12 };
    t[2] = (MetricsResult){ .kase = METRICS_CASE_BOTH_EMPTY, .dice = NAN, .iou = NAN, .hd95 = NAN, .nsd = NAN };
    t[4] = (MetricsResult){ .kase = METRICS_CASE_FP_ABSENT, .dice = 0, .iou = 0, .hd95 = NAN, .nsd = NAN, .vol_pred_ml = 1 };
    /* structure 1: dice 0.4, 0.95, missed (hd = diag 100) */
    t[1] = (MetricsResult){ .kase = METRICS_CASE_BOTH, .dice = 0.4, .iou = 0.25, .hd95 = 6, .nsd = 0.5, .vol_ref_ml = 5, .vol_pred_ml = 4 };
    t[3] = (MetricsResult){ .kase = METRICS_CASE_BOTH, .dice = 0.95, .iou = 0.9, .hd95 = 1, .nsd = 1, .vol_ref_ml = 7, .vol_pred_ml = 7 };
    t[5] = (MetricsResult){ .kase = METRICS_CASE_MISSED, .dice = 0, .iou = 0, .hd95 = 100, .nsd = 0, .vol_ref_ml = 3 };
    MetricsSummary s0, s1, all;
    metrics_summarize(t, 3, 2, 0, &s0);
    metrics_summarize(t, 3, 2, 1, &s1);
    metrics_summarize(t, 3, 2, -1, &all);
    CHECK(s0.n_both_empty == 1 && s0.n_fp_absent == 1 && s0.n_ref_present == 1 && s0.n_ref_empty == 2,
          "summary s0 counts: both_empty %d fp_absent %d present %d", s0.n_both_empty, s0.n_fp_absent, s0.n_ref_present);
    CHECK(same(s0.dice_mean_nnunet, 0.4, 1e-12) && same(s0.dice_mean, 0.8, 1e-12),
          "summary s0: nnU-Net mean %.4g (0.4: fp counts 0), present-only mean %.4g (0.8)", s0.dice_mean_nnunet, s0.dice_mean);
    CHECK(same(s0.fp_rate, 0.5, 1e-12), "summary s0: fp rate %.3g (1 of 2 empty refs)", s0.fp_rate);
    CHECK(same(s1.dice_mean, 0.45, 1e-12) && same(s1.dice_median, 0.4, 1e-12) && same(s1.hd95_mean, 107.0 / 3, 1e-12) &&
          same(s1.hd95_median, 6, 1e-12) && same(s1.nsd_mean, 0.5, 1e-12) && s1.n_missed == 1,
          "summary s1: dice mean %.4g median %.4g, hd95 mean %.4g median %.4g, nsd %.3g, missed %d",
          s1.dice_mean, s1.dice_median, s1.hd95_mean, s1.hd95_median, s1.nsd_mean, s1.n_missed);
    CHECK(same(s1.detect[0], 2.0 / 3, 1e-12) && same(s1.detect[2], 1.0 / 3, 1e-12) && same(s1.detect[4], 1.0 / 3, 1e-12) &&
          isnan(s1.fp_rate), "summary s1: detection@0.1 %.3g @0.5 %.3g @0.9 %.3g, fp rate NaN (no empty ref)",
          s1.detect[0], s1.detect[2], s1.detect[4]);
    CHECK(all.n_pairs == 6 && all.n_ref_present == 4 && same(all.dice_mean, (0.8 + 0.4 + 0.95 + 0) / 4, 1e-12) &&
          same(all.detect[1], 3.0 / 4, 1e-12) && same(all.fp_rate, 0.5, 1e-12),
          "summary pooled: %d pairs, %d present, dice %.4g, detect@0.3 %.3g", all.n_pairs, all.n_ref_present,
          all.dice_mean, all.detect[1]);
}

/* The packed-plane path on a grid whose plane is not a whole number of bytes, against a
 * direct unpacked count. */
static void check_counts_random(MetricsWork *w, uint64_t *seed)
{
    int nx = 37, ny = 29, nz = 11;
    double sp[3] = { 1, 1, 1 };
    MetricsStack a, b;
    metrics_stack_init(&a, nx, ny, nz, 2, sp);
    metrics_stack_init(&b, nx, ny, nz, 2, sp);
    int64_t tp = 0, na = 0, nb = 0;
    for (int z = 0; z < nz; z++)
        for (int y = 0; y < ny; y++)
            for (int x = 0; x < nx; x++) {
                int va = t_rand(seed) % 3 == 0, vb = t_rand(seed) % 4 == 0;
                if (va) metrics_stack_set(&a, 1, x, y, z);
                if (vb) metrics_stack_set(&b, 1, x, y, z);
                na += va; nb += vb; tp += va && vb;
            }
    MetricsOptions o;
    metrics_default_options(&o);
    MetricsResult r[2];
    int rc = metrics_subject(w, &a, &b, &o, r);
    CHECK(rc == 0 && r[0].kase == METRICS_CASE_BOTH_EMPTY && r[1].tp == tp && r[1].n_ref == na && r[1].n_pred == nb &&
          r[1].tn == (int64_t)nx * ny * nz - na - nb + tp,
          "random %dx%dx%d counts: tp %lld (%lld) n_ref %lld (%lld) n_pred %lld (%lld)", nx, ny, nz,
          (long long)r[1].tp, (long long)tp, (long long)r[1].n_ref, (long long)na, (long long)r[1].n_pred, (long long)nb);
    MetricsStack c;
    metrics_stack_init(&c, nx, ny, nz + 1, 2, sp);
    CHECK(metrics_subject(w, &a, &c, &o, r) == SEG_EMISMATCH, "shape mismatch is SEG_EMISMATCH: %s", seg_errmsg());
    metrics_stack_free(&a); metrics_stack_free(&b); metrics_stack_free(&c);
}

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL);
    printf("test_metrics seed=%llu\n", (unsigned long long)seed);
    char *text = NULL;
    size_t n = 0;
    if (fs_read_all(FIXTURE, &text, &n, 0) < 0) {
        printf("FAIL cannot read %s: %s (run from the repo root)\n", FIXTURE, seg_errmsg());
        return 1;
    }
    cJSON *doc = cJSON_Parse(text);
    free(text);
    CHECK(doc != NULL, "parse %s", FIXTURE);
    if (!doc) return t_report("test_metrics");
    MetricsWork *w;
    if (metrics_work_create(&w) < 0) return 1;
    const cJSON *cases = cJSON_GetObjectItem(doc, "cases"), *c;
    CHECK(cJSON_GetArraySize(cases) >= 15, "%d fixture cases", cJSON_GetArraySize(cases));
    cJSON_ArrayForEach(c, cases) run_case(w, c);
    check_edt_fixture(cJSON_GetObjectItem(doc, "edt"));
    check_percentile_fixture(cJSON_GetObjectItem(doc, "percentile"));
    check_edt_bruteforce(&seed);
    check_counts_random(w, &seed);
    check_summary();
    metrics_work_free(w);
    cJSON_Delete(doc);
    return t_report("test_metrics");
}
