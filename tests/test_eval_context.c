/* tests/test_eval_context.c : segeval with 2.5D context checkpoints (in_ch = 2K+1), on a
 * synthetic 7-slice cache and the same volume as a NIfTI CT.
 * A random 2D model (in_ch 1) is saved, then widened to in_ch 3 with its first-convolution
 * weights on input channel J and zeros on the others: that model computes the 2D model's
 * output on slice z+J-1, clamped to the volume. So, for J = 0, 1, 2:
 *   - evaluate (batched inference over cached slices) predicts for slice z exactly what the
 *     2D model predicts for slice clamp(z+J-1), for batch sizes 1, 3 and 8 (stacks that
 *     start, end and cross batches at the volume's ends);
 *   - predict (NIfTI in, NIfTI out) does the same along the CT's axial axis;
 * the 2D model's evaluation equals a plain per-slice forward (in_ch 1 unchanged); an even
 * in_ch is refused naming the checkpoint. usage: test_eval_context */
#define _POSIX_C_SOURCE 200809L
#include "cache.h"
#include "maskpack.h"
#include "ckpt.h"
#include "err.h"
#include "evaluate.h"
#include "hunorm.h"
#include "nii.h"
#include "predict.h"
#define TSYNTH_WRITER_ONLY
#include "testsynth.h"
#include "testutil.h"
#include "unet.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

/* The checkpoint's model at its training size for batches of 1, loaded. */
static int open_model(const char *path, Unet **m, CkptInfo *info)
{
    *m = NULL;
    memset(info, 0, sizeof *info);
    int rc = ckpt_read_info(path, info);
    if (rc == 0 && (rc = unet_create(&info->cfg, 1, info->size, info->size, 1, m)) == 0) rc = ckpt_load_model(path, *m);
    return rc;   /* the caller frees *m and *info either way */
}

#define S 32
#define NZ 7
#define C 3
static const char *NAMES[C] = { "liver", "spleen", "kidney_left" };

static int16_t hu_of(int si, int z, int x, int y) { return (int16_t)(((x * 37 + y * 91 + z * 53 + (x * y * (z + 1)) % 17) % 400) * 5 - 1000); }
static int mask_of(int c, int z, int x, int y)
{
    const int dx = x - 10 - z, dy = y - 14;
    return c == 0 ? dx * dx + dy * dy < 30 : c == 1 ? (x > 20 && y > 4 && y < 12 + z) : (z == 3 && x < 6 && y < 6);
}

static int build_cache(const char *dir)
{
    const TSynthSubject s0 = { "s0", CACHE_SPLIT_TEST, NZ, -1 };
    return t_write_cache(dir, NAMES, C, S, &s0, 1, hu_of, mask_of);
}

/* A model of in_ch channels with base's weights; the first convolution's go to channel J. */
static int save_widened(const Unet *base, int in_ch, int J, const LabelList *labels, const char *path)
{
    UnetConfig cfg = *unet_config(base);
    cfg.in_ch = in_ch;
    Unet *m = NULL;
    TRY(unet_create(&cfg, 1, S, S, 1, &m));
    for (int i = 0; i < unet_n_tensors(m); i++) {
        const UnetTensor *t = unet_tensor(m, i), *b = unet_tensor(base, i);
        if (strcmp(t->name, "downs.0.net.0.weight")) { memcpy(t->data, b->data, sizeof(float) * t->count); continue; }
        memset(t->data, 0, sizeof(float) * t->count);
        for (int o = 0; o < (int)t->shape[0]; o++) memcpy(t->data + ((size_t)o * in_ch + J) * 9, b->data + (size_t)o * 9, sizeof(float) * 9);
    }
    CkptMeta meta = { .labels = labels, .size = S, .epoch = 1, .hu_lo = -1000, .hu_hi = 1000 };
    int rc = ckpt_save_model(path, m, &meta);
    unet_free(m);
    return rc;
}

/* Evaluate ckpt on the cache with the given batch; *pred (caller frees) gets the planes. */
static int eval_planes(const char *ckpt, const char *cache, int batch, ReportSubject *rs)
{
    EvaluateOptions o;
    evaluate_default_options(&o);
    o.batch = batch;
    o.threads = 1;
    Evaluator *e = NULL;
    TRY(evaluate_open(ckpt, cache, -1, &o, &e));
    int rc = evaluate_subject(e, 0, rs, NULL, NULL);
    evaluate_close(e);
    return rc;
}

static int plane_bit(const MetricsStack *m, int c, int z, int p)
{
    const uint8_t *pl = m->planes[(size_t)c * m->nz + z];
    return pl ? maskpack_get(pl, p) : 0;
}

/* Bits of a's slice z that differ from b's slice zb, over all channels. */
static int64_t plane_diff(const MetricsStack *a, int z, const MetricsStack *b, int zb)
{
    int64_t d = 0;
    for (int c = 0; c < C; c++)
        for (int p = 0; p < S * S; p++) d += plane_bit(a, c, z, p) != plane_bit(b, c, zb, p);
    return d;
}

static int clampz(int z) { return z < 0 ? 0 : z >= NZ ? NZ - 1 : z; }

int main(void)
{
    char dir[] = "/tmp/test_eval_context.XXXXXX", cache[256], base_ck[256], ctx_ck[3][256], even_ck[256], ct[256], out[256];
    CHECK(mkdtemp(dir) != NULL, "temp dir %s", dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    int rc = build_cache(cache);
    CHECK(rc == 0, "synthetic cache: %s", rc ? seg_errmsg() : "7 slices, 3 structures");
    if (rc) return t_report("test_eval_context");

    /* the 2D model and its widened twins */
    LabelList labels;
    labels_from_names(NAMES, C, &labels);
    UnetConfig cfg = { .in_ch = 1, .n_classes = C, .n_levels = 2, .features = { 4, 8 } };
    Unet *base = NULL;
    rc = unet_create(&cfg, 1, S, S, 1, &base);
    CHECK(rc == 0, "2D model");
    if (rc) return t_report("test_eval_context");
    unet_init(base, 12345);
    /* non-trivial running statistics and a head bias near the logits' middle, so that the
     * predictions are neither all empty nor all full */
    for (int i = 0; i < unet_n_tensors(base); i++) {
        const UnetTensor *t = unet_tensor(base, i);
        if (strstr(t->name, "running_mean")) for (size_t k = 0; k < t->count; k++) t->data[k] = 0.05f * (float)(k % 5) - 0.1f;
        if (strstr(t->name, "running_var")) for (size_t k = 0; k < t->count; k++) t->data[k] = 0.5f + 0.1f * (float)(k % 7);
    }
    snprintf(base_ck, sizeof base_ck, "%s/base.safetensors", dir);
    CkptMeta meta = { .labels = &labels, .size = S, .epoch = 1, .hu_lo = -1000, .hu_hi = 1000 };
    CHECK(ckpt_save_model(base_ck, base, &meta) == 0, "2D checkpoint saved");
    for (int J = 0; J < 3; J++) {
        snprintf(ctx_ck[J], sizeof ctx_ck[J], "%s/ctx_j%d.safetensors", dir, J);
        CHECK(save_widened(base, 3, J, &labels, ctx_ck[J]) == 0, "in_ch 3 checkpoint, 2D weights on channel %d", J);
    }
    snprintf(even_ck, sizeof even_ck, "%s/even.safetensors", dir);
    CHECK(save_widened(base, 2, 0, &labels, even_ck) == 0, "in_ch 2 checkpoint");

    /* in_ch 1: evaluation = a plain per-slice forward of the loaded checkpoint */
    ReportSubject rb;
    rc = eval_planes(base_ck, cache, 3, &rb);
    CHECK(rc == 0, "evaluate the 2D checkpoint: %s", rc ? seg_errmsg() : "ok");
    if (rc) return t_report("test_eval_context");
    {
        Unet *m = NULL;
        CkptInfo info;
        CacheReader *cr = NULL;
        CacheCursor *cur = NULL;
        int16_t hu[S * S];
        float x[S * S];
        int64_t diff = 0, ones = 0;
        int ok = open_model(base_ck, &m, &info) == 0 && cache_open(cache, &cr) == 0 && cache_cursor_open(cr, &cur) == 0;
        for (int z = 0; z < NZ && ok; z++) {
            ok = cache_read_slice(cur, cache_subject(cr, 0), z, hu, NULL, NULL, 0) == 0;
            hunorm_apply(hu, x, S * S, -1000, 1000);
            ok = ok && unet_forward(m, x, 1, 0) == 0;
            const float *lg = ok ? unet_logits(m) : NULL;
            for (int c = 0; c < C && lg; c++)
                for (int p = 0; p < S * S; p++) {
                    const int want = lg[(size_t)c * S * S + p] > 0.f;
                    ones += want;
                    diff += want != plane_bit(&rb.pred, c, z, p);
                }
        }
        CHECK(ok && diff == 0 && ones > 0 && ones < NZ * C * S * S,
              "in_ch 1: evaluate = a plain per-slice forward (%lld of %d bits set, %lld differ)", (long long)ones, NZ * C * S * S, (long long)diff);
        int varies = 0;
        for (int z = 1; z < NZ; z++) varies += plane_diff(&rb.pred, z, &rb.pred, z - 1) > 0;
        CHECK(varies == NZ - 1, "the 2D predictions differ from slice to slice (%d of %d pairs), so shifts show", varies, NZ - 1);
        cache_cursor_close(cur);
        cache_close(cr);
        unet_free(m);
        ckpt_info_free(&info);
    }

    /* in_ch 3 in evaluate: the prediction for z is the 2D one for clamp(z + J - 1) */
    for (int J = 0; J < 3; J++)
        for (int bi = 0; bi < 3; bi++) {
            const int batch = bi == 0 ? 1 : bi == 1 ? 3 : 8;
            ReportSubject rc3;
            rc = eval_planes(ctx_ck[J], cache, batch, &rc3);
            int64_t diff = 0, ref_same = 0;
            for (int z = 0; z < NZ && rc == 0; z++) {
                diff += plane_diff(&rc3.pred, z, &rb.pred, clampz(z + J - 1));
                ref_same += plane_diff(&rc3.ref, z, &rb.ref, z) == 0;
            }
            CHECK(rc == 0 && diff == 0 && ref_same == NZ, "evaluate, in_ch 3, weights on channel %d, batch %d: slice z predicted as the 2D "
                  "model predicts slice clamp(z%+d) (%lld bits differ); reference planes unchanged", J, batch, J - 1, (long long)diff);
            report_subject_free(&rc3);
        }
    {
        EvaluateOptions o;
        evaluate_default_options(&o);
        Evaluator *e = NULL;
        rc = evaluate_open(even_ck, cache, -1, &o, &e);
        CHECK(rc == SEG_EFORMAT && strstr(seg_errmsg(), "even.safetensors") && strstr(seg_errmsg(), "2 input channels"),
              "in_ch 2 refused naming the checkpoint: %s", seg_errmsg());
        evaluate_close(e);
    }

    /* predict on the same volume as a NIfTI (RAS identity: axial slice k is voxel plane k) */
    snprintf(ct, sizeof ct, "%s/ct.nii.gz", dir);
    {
        const int64_t dim[3] = { S, S, NZ };
        double aff[4][4] = { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } };
        NiiVolume *v = NULL;
        rc = nii_create(dim, NII_INT16, aff, &v);
        for (int z = 0; z < NZ && rc == 0; z++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) ((int16_t *)v->data)[((size_t)z * S + y) * S + x] = hu_of(0, z, x, y);
        if (rc == 0) rc = nii_write(ct, v, 1);
        nii_free(v);
        CHECK(rc == 0, "CT NIfTI written");
    }
    NiiVolume *seg[4] = { NULL, NULL, NULL, NULL };
    for (int k = 0; k < 4; k++) {
        PredictOptions po;
        predict_default_options(&po);
        po.verbosity = 0;
        po.threads = 1;
        po.batch = k == 3 ? 2 : 4;
        PredictInfo info;
        snprintf(out, sizeof out, "%s/pred%d", dir, k);
        rc = predict_ct(k == 0 ? base_ck : ctx_ck[k - 1], ct, out, &po, &info);
        char path[300];
        snprintf(path, sizeof path, "%s/segmentation.nii.gz", out);
        if (rc == 0) rc = nii_read(path, &seg[k]);
        CHECK(rc == 0, "predict with the %s checkpoint: %s", k ? "in_ch 3" : "2D", rc ? seg_errmsg() : "ok");
    }
    if (seg[0] && seg[1] && seg[2] && seg[3]) {
        int64_t labelled = 0;
        for (size_t i = 0; i < (size_t)S * S * NZ; i++) labelled += ((uint8_t *)seg[0]->data)[i] != 0;
        for (int J = 0; J < 3; J++) {
            int64_t diff = 0;
            for (int z = 0; z < NZ; z++)
                for (int p = 0; p < S * S; p++)
                    diff += ((uint8_t *)seg[J + 1]->data)[(size_t)z * S * S + p] != ((uint8_t *)seg[0]->data)[(size_t)clampz(z + J - 1) * S * S + p];
            CHECK(diff == 0 && labelled > 0, "predict, in_ch 3, weights on channel %d: axial slice k labelled as the 2D model labels "
                  "slice clamp(k%+d) (%lld voxels differ, %lld labelled)", J, J - 1, (long long)diff, (long long)labelled);
        }
    }
    for (int k = 0; k < 4; k++) nii_free(seg[k]);
    PredictOptions po;
    predict_default_options(&po);
    po.verbosity = 0;
    PredictInfo info;
    snprintf(out, sizeof out, "%s/pred_even", dir);
    rc = predict_ct(even_ck, ct, out, &po, &info);
    CHECK(rc == SEG_EFORMAT && strstr(seg_errmsg(), "even.safetensors"), "predict refuses in_ch 2: %s", seg_errmsg());

    report_subject_free(&rb);
    unet_free(base);
    labels_free(&labels);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
    return t_report("test_eval_context");
}
