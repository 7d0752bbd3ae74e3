/* eval/predict_model.c : a segtrain checkpoint (common/ckpt.h) as an inference model:
 * the U-Net, its structure names, training size, HU window and 2.5D context. */
#include "ckpt.h"
#include "err.h"
#include "hunorm.h"
#include "predict.h"
#include "unet.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct PredictModel {
    Unet    *net;
    CkptInfo info;
    int      size, max_batch;
    int      K;            /* context: in_ch = 2K + 1 */
    float   *x;            /* (max_batch, in_ch, size, size) normalised input */
    char     desc[256];
};

int predict_model_open(const char *checkpoint, int size, int max_batch, int threads, const UnetDevice *dev,
                       PredictModel **out)
{
    *out = NULL;
    PredictModel *m = calloc(1, sizeof *m);
    if (!m) return seg_err(SEG_ENOMEM, "model");
    int rc = ckpt_read_info(checkpoint, &m->info);
    if (rc < 0) { free(m); return rc; }
    if (m->info.cfg.in_ch % 2 == 0) {
        rc = seg_err(SEG_EFORMAT, "%s: the model has %d input channels: a segkit model sees 2K+1 adjacent slices "
                     "(an odd count)", checkpoint, m->info.cfg.in_ch);
        predict_model_close(m);
        return rc;
    }
    m->K = (m->info.cfg.in_ch - 1) / 2;
    m->size = size > 0 ? size : m->info.size > 0 ? m->info.size : 256;
    m->max_batch = max_batch > 0 ? max_batch : 1;
    if (!(m->info.hu_hi > m->info.hu_lo)) { m->info.hu_lo = HUNORM_DEFAULT_LO; m->info.hu_hi = HUNORM_DEFAULT_HI; }
    rc = unet_create_on(&m->info.cfg, m->max_batch, m->size, m->size, threads, dev, &m->net);
    if (rc < 0) rc = seg_err(rc, "%s: model for %dx%d slices: %s", checkpoint, m->size, m->size, seg_errmsg());
    if (rc == SEG_OK) rc = ckpt_load_model(checkpoint, m->net);
    if (rc == SEG_OK && !(m->x = malloc(sizeof(float) * (size_t)m->max_batch * m->info.cfg.in_ch * m->size * m->size)))
        rc = seg_err(SEG_ENOMEM, "model input of %d slices", m->max_batch);
    if (rc < 0) { predict_model_close(m); return rc; }
    const UnetConfig *c = &m->info.cfg;
    int k = snprintf(m->desc, sizeof m->desc, "U-Net ");
    for (int i = 0; i < c->n_levels && k < (int)sizeof m->desc; i++)
        k += snprintf(m->desc + k, sizeof m->desc - (size_t)k, "%s%d", i ? "-" : "", c->features[i]);
    if (k < (int)sizeof m->desc)
        snprintf(m->desc + k, sizeof m->desc - (size_t)k, ", %d classes, %dx%d (trained at %d), epoch %d, HU [%g, %g]",
                 c->n_classes, m->size, m->size, m->info.size, m->info.epoch, m->info.hu_lo, m->info.hu_hi);
    k = (int)strlen(m->desc);
    if (m->K > 0 && k < (int)sizeof m->desc)
        snprintf(m->desc + k, sizeof m->desc - (size_t)k, ", context %d (%d slices)", m->K, c->in_ch);
    *out = m;
    return SEG_OK;
}

void predict_model_close(PredictModel *m)
{
    if (!m) return;
    unet_free(m->net);
    ckpt_info_free(&m->info);
    free(m->x);
    free(m);
}

int predict_model_size(const PredictModel *m) { return m->size; }
int predict_model_trained_size(const PredictModel *m) { return m->info.size; }
int predict_model_n_classes(const PredictModel *m) { return m->info.cfg.n_classes; }
const LabelList *predict_model_labels(const PredictModel *m) { return m->info.labels.n ? &m->info.labels : NULL; }
const char *predict_model_desc(const PredictModel *m) { return m->desc; }
int predict_model_context(const PredictModel *m) { return m->K; }

int predict_model_forward(PredictModel *m, const int16_t *hu, int n, const float **logits)
{
    if (n < 1 || n > m->max_batch) return seg_err(SEG_EARG, "model: batch of %d (1..%d)", n, m->max_batch);
    /* the training input (hunorm.h) under the checkpoint's window */
    const size_t npx = (size_t)m->size * m->size;
    const int ch = 2 * m->K + 1;
    if (m->K == 0) hunorm_apply(hu, m->x, (size_t)n * npx, m->info.hu_lo, m->info.hu_hi);
    else   /* x[b][c] = stack slice b + c */
        for (int b = 0; b < n; b++)
            for (int c = 0; c < ch; c++)
                hunorm_apply(hu + (size_t)(b + c) * npx, m->x + ((size_t)b * ch + c) * npx, npx, m->info.hu_lo, m->info.hu_hi);
    TRY(unet_forward(m->net, m->x, n, 0));
    *logits = unet_logits(m->net);
    return *logits ? SEG_OK : SEG_EGPU;
}
