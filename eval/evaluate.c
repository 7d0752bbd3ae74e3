/* eval/evaluate.c : checkpoint x cache evaluation: subject selection, batched inference,
 * thresholding into bit planes beside the cached reference planes. */
#include "evaluate.h"
#include "hunorm.h"
#include "maskpack.h"
#include "cache.h"
#include "err.h"
#include "predict.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct Evaluator {
    CacheReader    *cache;
    CacheCursor    *cur;
    PredictModel   *model;
    EvaluateOptions o;
    int             n, *idx;       /* selected subjects (cache indices) */
    int64_t         n_slices;
    int             size, C;
    size_t          pb;            /* bytes per plane */
    int             K;             /* the model's context: slices z-K..z+K in */
    int16_t        *img;           /* (batch + 2K) x size x size: the model's slice stack */
    uint8_t        *bits;          /* C planes of one slice */
    uint8_t        *presence;
    char            desc[300];
};

void evaluate_default_options(EvaluateOptions *o)
{
    o->threshold = 0.5f;
    o->batch = 8;
    o->threads = 0;
    memset(&o->dev, 0, sizeof o->dev);
}

void evaluate_close(Evaluator *e)
{
    if (!e) return;
    cache_cursor_close(e->cur);
    cache_close(e->cache);
    predict_model_close(e->model);
    free(e->idx); free(e->img); free(e->bits); free(e->presence);
    free(e);
}

int evaluate_open(const char *checkpoint, const char *cache_dir, int split, const EvaluateOptions *o, Evaluator **out)
{
    *out = NULL;
    Evaluator *e = calloc(1, sizeof *e);
    if (!e) return seg_err(SEG_ENOMEM, "evaluator");
    e->o = *o;
    if (e->o.batch < 1) e->o.batch = 1;
    int rc = cache_open(cache_dir, &e->cache);
    if (rc < 0) { rc = seg_err(rc, "cache %s: %s", cache_dir, seg_errmsg()); goto fail; }
    e->size = cache_size(e->cache);
    e->C = cache_n_channels(e->cache);
    e->pb = cache_plane_bytes(e->cache);
    rc = predict_model_open(checkpoint, e->size, e->o.batch, e->o.threads, &e->o.dev, &e->model);
    if (rc < 0) { rc = seg_err(rc, "checkpoint: %s", seg_errmsg()); goto fail; }
    const int trained = predict_model_trained_size(e->model);
    if (trained > 0 && trained != e->size) {
        /* a U-Net runs at any size, but its numbers at a size it never saw are not its own */
        rc = seg_err(SEG_EMISMATCH, "checkpoint %s was trained on %dx%d slices but cache %s holds %dx%d slices: "
                     "evaluate it on a cache prepared at its size (segprep --size %d), or evaluate a checkpoint "
                     "trained at %d", checkpoint, trained, trained, cache_dir, e->size, e->size, trained, e->size);
        goto fail;
    }
    snprintf(e->desc, sizeof e->desc, "%s", predict_model_desc(e->model));
    const LabelList *cl = cache_labels(e->cache), *ml = predict_model_labels(e->model);
    if (predict_model_n_classes(e->model) != e->C) {
        rc = seg_err(SEG_EMISMATCH, "checkpoint %s predicts %d structures but cache %s has %d: the model was trained on "
                     "a different label set", checkpoint, predict_model_n_classes(e->model), cache_dir, e->C);
        goto fail;
    }
    if (ml && ml->n == cl->n)
        for (int c = 0; c < cl->n; c++)
            if (strcmp(ml->names[c], cl->names[c])) {
                rc = seg_err(SEG_EMISMATCH, "checkpoint %s channel %d is '%s' but cache %s channel %d is '%s': the label "
                             "order differs", checkpoint, c, ml->names[c], cache_dir, c, cl->names[c]);
                goto fail;
            }
    const int ns = cache_n_subjects(e->cache);
    e->idx = malloc(sizeof(int) * (size_t)(ns ? ns : 1));
    if (!e->idx) { rc = seg_err(SEG_ENOMEM, "evaluator"); goto fail; }
    int per[3] = { 0, 0, 0 };
    for (int i = 0; i < ns; i++) {
        const CacheSubject *s = cache_subject(e->cache, i);
        if (s->split >= 0 && s->split < 3) per[s->split]++;
        if (split < 0 || s->split == split) { e->idx[e->n++] = i; e->n_slices += s->n_slices; }
    }
    if (e->n == 0) {
        rc = seg_err(SEG_EARG, "cache %s has no %s subjects (train %d, val %d, test %d): choose another --split",
                     cache_dir, split < 0 ? "" : cache_split_name(split), per[0], per[1], per[2]);
        goto fail;
    }
    e->K = predict_model_context(e->model);
    e->img = malloc(sizeof(int16_t) * (size_t)(e->o.batch + 2 * e->K) * (size_t)e->size * (size_t)e->size);
    e->bits = malloc(e->pb * (size_t)e->C);
    e->presence = malloc(cache_presence_bytes(e->cache));
    if (!e->img || !e->bits || !e->presence) { rc = seg_err(SEG_ENOMEM, "evaluator buffers"); goto fail; }
    if ((rc = cache_cursor_open(e->cache, &e->cur)) < 0) goto fail;
    *out = e;
    return SEG_OK;
fail:
    evaluate_close(e);
    return rc;
}

const LabelList *evaluate_labels(const Evaluator *e) { return cache_labels(e->cache); }
int evaluate_n_subjects(const Evaluator *e) { return e->n; }
int64_t evaluate_n_slices(const Evaluator *e) { return e->n_slices; }
const char *evaluate_subject_id(const Evaluator *e, int j) { return cache_subject(e->cache, e->idx[j])->id; }
const uint8_t *evaluate_subject_labelled(const Evaluator *e, int j) { return cache_subject_labelled(cache_subject(e->cache, e->idx[j])); }
const char *evaluate_model_desc(const Evaluator *e) { return e->desc; }

int evaluate_subject(Evaluator *e, int j, ReportSubject *s, Progress *p, int64_t *done)
{
    memset(s, 0, sizeof *s);
    const CacheSubject *cs = cache_subject(e->cache, e->idx[j]);
    const int size = e->size, C = e->C, nz = cs->n_slices, npx = size * size;
    snprintf(s->id, sizeof s->id, "%s", cs->id);
    memcpy(s->affine, cs->res_affine, sizeof s->affine);
    int rc = metrics_stack_init(&s->ref, size, size, nz, C, cs->res_spacing);
    if (rc == SEG_OK) rc = metrics_stack_init(&s->pred, size, size, nz, C, cs->res_spacing);
    if (rc == SEG_OK && !(s->ct = malloc(sizeof(int16_t) * (size_t)npx * (size_t)nz)))
        rc = seg_err(SEG_ENOMEM, "%s: CT of %d slices", cs->id, nz);
    /* logit of the threshold: sigmoid(x) > t <=> x > log(t / (1 - t)) */
    const float tl = logf(e->o.threshold / (1.f - e->o.threshold));
    uint8_t *tmp = malloc(e->pb);
    if (rc == SEG_OK && !tmp) rc = seg_err(SEG_ENOMEM, "plane");
    for (int z0 = 0; z0 < nz && rc == SEG_OK; z0 += e->o.batch) {
        const int nb = nz - z0 < e->o.batch ? nz - z0 : e->o.batch, K = e->K;
        /* the model's stack: slices z0-K .. z0+nb-1+K clamped to the subject (the ends repeat);
         * context slices are decoded image-only, a repeated one copied from the slot before */
        for (int j = 0; j < nb + 2 * K && rc == SEG_OK; j++) {
            const int zj = z0 - K + j, z = hunorm_context_z(zj, nz);
            int16_t *dst = e->img + (size_t)j * npx;
            if (j < K || j >= K + nb) {
                if (j > 0 && (zj < 0 || zj > nz - 1)) memcpy(dst, dst - npx, sizeof(int16_t) * (size_t)npx);
                else rc = cache_read_slice(e->cur, cs, z, dst, NULL, NULL, 0);
                continue;
            }
            rc = cache_read_slice(e->cur, cs, z, dst, e->bits, e->presence, 0);
            if (rc < 0) break;
            memcpy(s->ct + (size_t)z * npx, dst, sizeof(int16_t) * (size_t)npx);
            for (int c = 0; c < C && rc == SEG_OK; c++) {
                if (!maskpack_get(e->presence, c)) continue;
                uint8_t *pl = metrics_stack_plane(&s->ref, c, z);
                if (!pl) rc = SEG_ENOMEM;
                else memcpy(pl, e->bits + (size_t)c * e->pb, e->pb);
            }
        }
        const float *lg = NULL;
        if (rc == SEG_OK) rc = predict_model_forward(e->model, e->img, nb, &lg);
        for (int b = 0; b < nb && rc == SEG_OK; b++)
            for (int c = 0; c < C && rc == SEG_OK; c++) {
                if (!maskpack_pack_above(tmp, lg + ((size_t)b * C + c) * npx, (size_t)npx, tl)) continue;
                uint8_t *pl = metrics_stack_plane(&s->pred, c, z0 + b);
                if (!pl) rc = SEG_ENOMEM;
                else memcpy(pl, tmp, e->pb);
            }
        if (rc == SEG_OK && done) {
            *done += nb;
            if (p) progress_update(p, *done, cs->id);
        }
    }
    free(tmp);
    if (rc < 0) {
        rc = seg_err(rc, "subject %s: %s", cs->id, seg_errmsg());
        report_subject_free(s);
    }
    return rc;
}
