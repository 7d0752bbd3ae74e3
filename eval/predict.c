/* eval/predict.c : `segeval predict` on a new CT: slices in the radiological view ->
 * model grid -> model -> probabilities back on the slice grid -> the input's voxel grid. */
#define _POSIX_C_SOURCE 200809L
#include "predict.h"
#include "hunorm.h"
#include "util.h"
#include "maskpack.h"
#include "err.h"
#include "fsutil.h"
#include "metrics.h"
#include "nii.h"
#include "orient.h"
#include "progress.h"
#include "resample.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void predict_default_options(PredictOptions *o)
{
    memset(o, 0, sizeof *o);
    o->threshold = 0.5f;
    o->batch = 8;
    o->verbosity = 2;
    o->progress_tty = -1;
}

int predict_unresample(const float *prob, int size, float *out, int sh, int sw)
{
    /* the inverse is the same half-pixel-centre bilinear rule with the sizes swapped */
    ResampleAxis ir = { 0 }, ic = { 0 };
    int rc = resample_axis_init(&ir, size, sh);
    if (rc == SEG_OK) rc = resample_axis_init(&ic, size, sw);
    if (rc == SEG_OK) resample_bilinear_f32(out, prob, &ir, &ic);
    resample_axis_free(&ir);
    resample_axis_free(&ic);
    return rc;
}

static int write_statistics(const char *out_dir, const LabelList *names, int C, const int64_t *cnt, const double *sum_hu,
                            double vox_ml)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return seg_err(SEG_ENOMEM, "statistics.json");
    for (int c = 0; c < C; c++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "volume_ml", (double)cnt[c] * vox_ml);
        if (cnt[c]) cJSON_AddNumberToObject(o, "mean_hu", sum_hu[c] / (double)cnt[c]);
        else cJSON_AddNullToObject(o, "mean_hu");
        cJSON_AddNumberToObject(o, "voxels", (double)cnt[c]);
        char fallback[32];
        snprintf(fallback, sizeof fallback, "class_%d", c + 1);
        cJSON_AddItemToObject(root, names ? names->names[c] : fallback, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return seg_err(SEG_ENOMEM, "statistics.json");
    char path[4096];
    int rc = fs_join(path, sizeof path, out_dir, "statistics.json");
    if (rc == SEG_OK) rc = fs_write_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

/* Unlink dir/name when it is a regular file or a link (never a folder or anything else). */
static int remove_file(const char *dir, const char *name)
{
    char path[4096];
    TRY(fs_join(path, sizeof path, dir, name));
    struct stat st;
    if (lstat(path, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISLNK(st.st_mode))) return SEG_OK;
    if (unlink(path) != 0) return seg_err(SEG_EIO, "%s: cannot remove the earlier run's output: %s", path, strerror(errno));
    return SEG_OK;
}

/* What an earlier predict wrote in out_dir, whatever its options: segmentation.nii.gz,
 * statistics.json and segmentations/<name>.nii.gz for this model's names (the folder
 * itself when that leaves it empty). Other files stay. */
static int remove_earlier(const char *out_dir, const LabelList *names, int C)
{
    TRY(remove_file(out_dir, "segmentation.nii.gz"));
    TRY(remove_file(out_dir, "statistics.json"));
    char dir[4096];
    TRY(fs_join(dir, sizeof dir, out_dir, "segmentations"));
    if (!fs_is_dir(dir)) return SEG_OK;
    for (int c = 0; c < C; c++) {
        char name[300];
        if (names) snprintf(name, sizeof name, "%s.nii.gz", names->names[c]);
        else snprintf(name, sizeof name, "class_%d.nii.gz", c + 1);
        TRY(remove_file(dir, name));
    }
    rmdir(dir);   /* fails, harmlessly, when something else is in it */
    return SEG_OK;
}

/* Per-structure masks in the input grid from the slice-view bit planes of pm. */
static int write_masks(const char *out_dir, const LabelList *names, const NiiVolume *ct, const OrientMap *om,
                       const MetricsStack *pm)
{
    char dir[4096];
    TRY(fs_join(dir, sizeof dir, out_dir, "segmentations"));
    TRY(fs_mkdirs(dir));
    NiiVolume *m = NULL;
    TRY(nii_create(ct->dim, NII_UINT8, ct->affine, &m));
    m->sform_code = ct->sform_code;   /* the input's codes, not "scanner" whatever it said */
    m->qform_code = ct->qform_code;
    const size_t nvox = nii_nvox(m);
    int rc = SEG_OK;
    for (int c = 0; c < pm->n_struct && rc == SEG_OK; c++) {
        memset(m->data, 0, nvox);
        uint8_t *d = m->data;
        for (int k = 0; k < pm->nz; k++) {
            const uint8_t *pl = pm->planes[(size_t)c * pm->nz + k];
            if (!pl) continue;
            for (int r = 0; r < pm->ny; r++)
                for (int x = 0; x < pm->nx; x++) {
                    size_t i = (size_t)r * pm->nx + x;
                    if (maskpack_get(pl, i)) d[orient_slice_offset(om, r, x, k)] = 1;
                }
        }
        char name[300], path[4096];
        if (names) snprintf(name, sizeof name, "%s.nii.gz", names->names[c]);
        else snprintf(name, sizeof name, "class_%d.nii.gz", c + 1);
        rc = fs_join(path, sizeof path, dir, name);
        if (rc == SEG_OK) rc = nii_write(path, m, 1);
    }
    nii_free(m);
    return rc;
}

int predict_ct(const char *checkpoint, const char *ct_path, const char *out_dir, const PredictOptions *o,
               PredictInfo *info)
{
    memset(info, 0, sizeof *info);
    const double t_start = util_now_s();
    NiiVolume *ct = NULL, *seg = NULL;
    PredictModel *model = NULL;
    ResampleAxis ar, ac, ir, ic;   /* slice -> model grid, and back */
    memset(&ar, 0, sizeof ar);
    memset(&ac, 0, sizeof ac);
    memset(&ir, 0, sizeof ir);
    memset(&ic, 0, sizeof ic);
    MetricsStack pm;
    memset(&pm, 0, sizeof pm);
    float *slice = NULL, *prob = NULL, *up = NULL, *best = NULL;
    int16_t *batch = NULL;
    uint16_t *lab = NULL;
    int64_t *cnt = NULL;
    double *sum_hu = NULL;
    int rc = nii_read(ct_path, &ct);
    if (rc < 0) return rc;
    OrientMap om;
    if ((rc = orient_init(&om, ct->dim, ct->affine)) < 0) { rc = seg_err(rc, "%s: %s", ct_path, seg_errmsg()); goto out; }
    const int sw = (int)om.cdim[0], sh = (int)om.cdim[1], nz = (int)om.cdim[2];
    const int nb_max = o->batch > 0 ? o->batch : 1;
    if ((rc = predict_model_open(checkpoint, 0, nb_max, o->threads, &o->dev, &model)) < 0) {
        rc = seg_err(rc, "checkpoint: %s", seg_errmsg());
        goto out;
    }
    const int size = predict_model_size(model), C = predict_model_n_classes(model), npx = size * size;
    const int K = predict_model_context(model);
    const LabelList *names = predict_model_labels(model);
    if (names && names->n != C) names = NULL;
    if ((rc = fs_mkdirs(out_dir)) < 0) goto out;
    if ((rc = remove_earlier(out_dir, names, C)) < 0) goto out;
    if ((rc = resample_axis_init(&ar, sh, size)) < 0 || (rc = resample_axis_init(&ac, sw, size)) < 0) goto out;
    double sp1[3] = { 1, 1, 1 };
    if ((rc = metrics_stack_init(&pm, sw, sh, nz, C, sp1)) < 0) goto out;
    rc = nii_create(ct->dim, C <= 255 ? NII_UINT8 : NII_UINT16, ct->affine, &seg);
    if (rc < 0) goto out;
    seg->sform_code = ct->sform_code;
    seg->qform_code = ct->qform_code;
    slice = malloc(sizeof(float) * (size_t)sw * sh);
    up = malloc(sizeof(float) * (size_t)sw * sh);
    best = malloc(sizeof(float) * (size_t)sw * sh);
    lab = malloc(sizeof(uint16_t) * (size_t)sw * sh);
    prob = malloc(sizeof(float) * (size_t)npx);
    batch = malloc(sizeof(int16_t) * (size_t)(nb_max + 2 * K) * npx);   /* the model's slice stack */
    cnt = calloc((size_t)C, sizeof *cnt);
    sum_hu = calloc((size_t)C, sizeof *sum_hu);
    if (!slice || !up || !best || !lab || !prob || !batch || !cnt || !sum_hu) {
        rc = seg_err(SEG_ENOMEM, "predict buffers for %dx%d slices", sw, sh);
        goto out;
    }
    if ((rc = resample_axis_init(&ir, size, sh)) < 0 || (rc = resample_axis_init(&ic, size, sw)) < 0) goto out;
    const float tl = logf(o->threshold / (1.f - o->threshold));
    Progress pr;
    progress_start(&pr, "segeval predict", "slices", nz, o->verbosity >= 2, o->progress_tty);
    for (int z0 = 0; z0 < nz && rc == SEG_OK; z0 += nb_max) {
        const int nb = nz - z0 < nb_max ? nz - z0 : nb_max;
        for (int j = 0; j < nb + 2 * K; j++) {   /* slices z0-K .. z0+nb-1+K, the volume's ends repeated */
            const int zj = z0 - K + j, z = hunorm_context_z(zj, nz);
            if (j > 0 && (zj < 0 || zj > nz - 1)) {
                memcpy(batch + (size_t)j * npx, batch + (size_t)(j - 1) * npx, sizeof(int16_t) * (size_t)npx);
                continue;
            }
            for (int r = 0; r < sh; r++)
                for (int c = 0; c < sw; c++)
                    slice[(size_t)r * sw + c] = (float)nii_value(ct, (size_t)orient_slice_offset(&om, r, c, z));
            resample_bilinear_i16(batch + (size_t)j * npx, slice, &ar, &ac);
        }
        const float *lg = NULL;
        if ((rc = predict_model_forward(model, batch, nb, &lg)) < 0) break;
        for (int b = 0; b < nb && rc == SEG_OK; b++) {
            const int k = z0 + b;
            for (size_t i = 0; i < (size_t)sw * sh; i++) { best[i] = o->threshold; lab[i] = 0; }
            for (int c = 0; c < C && rc == SEG_OK; c++) {
                const float *l = lg + ((size_t)b * C + c) * npx;
                float mx = -INFINITY;
                for (int i = 0; i < npx; i++) mx = l[i] > mx ? l[i] : mx;
                if (!(mx > tl)) continue;   /* bilinear mixes of probabilities <= t stay <= t */
                for (int i = 0; i < npx; i++) prob[i] = 1.f / (1.f + expf(-l[i]));
                resample_bilinear_f32(up, prob, &ir, &ic);
                uint8_t *pl = NULL;
                for (int r = 0; r < sh; r++)
                    for (int x = 0; x < sw; x++) {
                        const size_t i = (size_t)r * sw + x;
                        if (!(up[i] > o->threshold)) continue;
                        if (!pl && !(pl = metrics_stack_plane(&pm, c, k))) { rc = SEG_ENOMEM; break; }
                        maskpack_set(pl, i);
                        cnt[c]++;
                        sum_hu[c] += nii_value(ct, (size_t)orient_slice_offset(&om, r, x, k));
                        if (up[i] > best[i]) { best[i] = up[i]; lab[i] = (uint16_t)(c + 1); }
                    }
            }
            for (int r = 0; r < sh; r++)
                for (int x = 0; x < sw; x++) {
                    const uint16_t v = lab[(size_t)r * sw + x];
                    const int64_t off = orient_slice_offset(&om, r, x, k);
                    if (C <= 255) ((uint8_t *)seg->data)[off] = (uint8_t)v;
                    else ((uint16_t *)seg->data)[off] = v;
                }
        }
        progress_update(&pr, z0 + nb, NULL);
    }
    if (rc < 0) goto out;
    progress_finish(&pr, NULL);
    char path[4096];
    if ((rc = fs_join(path, sizeof path, out_dir, "segmentation.nii.gz")) < 0) goto out;
    if ((rc = nii_write(path, seg, 6)) < 0) goto out;
    if (o->per_structure && (rc = write_masks(out_dir, names, ct, &om, &pm)) < 0) goto out;
    const double vox_ml = fabs(ct->affine[0][0] * (ct->affine[1][1] * ct->affine[2][2] - ct->affine[1][2] * ct->affine[2][1])
                             - ct->affine[0][1] * (ct->affine[1][0] * ct->affine[2][2] - ct->affine[1][2] * ct->affine[2][0])
                             + ct->affine[0][2] * (ct->affine[1][0] * ct->affine[2][1] - ct->affine[1][1] * ct->affine[2][0])) / 1000.0;
    if (o->statistics && (rc = write_statistics(out_dir, names, C, cnt, sum_hu, vox_ml)) < 0) goto out;
    for (int i = 0; i < 3; i++) info->dim[i] = ct->dim[i];
    info->n_structures = C;
    info->n_slices = nz;
    for (int c = 0; c < C; c++) info->n_found += cnt[c] > 0;
    info->seconds = util_now_s() - t_start;
out:
    nii_free(ct);
    nii_free(seg);
    predict_model_close(model);
    resample_axis_free(&ar);
    resample_axis_free(&ac);
    resample_axis_free(&ir);
    resample_axis_free(&ic);
    metrics_stack_free(&pm);
    free(slice); free(prob); free(up); free(best); free(batch); free(lab); free(cnt); free(sum_hu);
    return rc;
}
