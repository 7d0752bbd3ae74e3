/* eval/predict.h : running a trained U-Net on CT slices, and `segeval predict` on a new
 * CT: read any NIfTI CT, reorient to the radiological axial view, resample each slice to
 * the model's size (bilinear, half-pixel centres, as segprep does), run the model, map
 * the probabilities back to the slice's own sw x sh grid (bilinear on probabilities with
 * the inverse half-pixel mapping), threshold, and write the result into the INPUT's own
 * voxel grid and affine through the OrientMap (so it overlays the CT in any viewer).
 * A 2.5D checkpoint (in_ch = 2K+1) gets each slice with K neighbours on either side, the
 * volume's first and last slices repeated past its ends, as segtrain's loader does. */
#ifndef SEG_PREDICT_H
#define SEG_PREDICT_H
#include <stdint.h>
#include "labels.h"
#include "unet.h"

/* A model loaded from a checkpoint, ready for inference on size x size slices. */
typedef struct PredictModel PredictModel;

/* Load CHECKPOINT (with the segtrain checkpoint loader) for batches of up to max_batch
 * slices of size x size (size 0: the training size stored in the checkpoint, else 256), on
 * dev (a resolved device; NULL = CPU).
 * SEG_EIO/SEG_EFORMAT naming the file when it cannot be read as a segkit checkpoint, or
 * when its in_ch is even (a context model has 2K+1 input channels). */
int  predict_model_open(const char *checkpoint, int size, int max_batch, int threads, const UnetDevice *dev,
                        PredictModel **out);
void predict_model_close(PredictModel *m);                 /* NULL-safe */
int  predict_model_size(const PredictModel *m);            /* slice side H = W */
int  predict_model_trained_size(const PredictModel *m);    /* slice side it was trained at (0: not recorded) */
int  predict_model_n_classes(const PredictModel *m);
/* Structure names stored in the checkpoint (NULL when it has none). */
const LabelList *predict_model_labels(const PredictModel *m);
/* "U-Net 32-64-128-256, 117 classes, 256x256, step 1200" into a static-lifetime buffer of m. */
const char *predict_model_desc(const PredictModel *m);
/* 2.5D context K of the checkpoint: it sees 2K+1 adjacent slices (in_ch = 2K + 1). */
int  predict_model_context(const PredictModel *m);
/* Forward n <= max_batch slices with the training input normalisation. hu: a stack of
 * n + 2K consecutive int16 HU slices (size x size each; K = predict_model_context, the
 * caller repeats the volume's end slices where the context runs past them): slice b's
 * input channels are stack slices b..b+2K, its centre stack slice b+K. With K = 0 that is
 * just the n slices. Returns the logits (n, C, size, size), valid until the next call. */
int  predict_model_forward(PredictModel *m, const int16_t *hu, int n, const float **logits);

typedef struct PredictOptions {
    float threshold;        /* probability (0.5) */
    int   batch, threads;   /* slices per forward (8), compute threads (0: all) */
    UnetDevice dev;         /* resolved device; default CPU */
    int   per_structure;    /* also OUT/segmentations/<name>.nii.gz */
    int   statistics;       /* also OUT/statistics.json */
    int   verbosity, progress_tty;
} PredictOptions;
void predict_default_options(PredictOptions *o);

typedef struct PredictInfo {
    int64_t dim[3];
    int     n_structures, n_slices, n_found;   /* n_found: structures with any voxel */
    double  seconds;
} PredictInfo;

/* The whole `segeval predict`: OUT_DIR/segmentation.nii.gz (uint8 labels when C <= 255,
 * else uint16; label = channel + 1, 0 = background; where channels overlap, the most
 * probable wins), optional per-structure masks (each channel thresholded on its own, so
 * they may overlap) and statistics.json ({"name": {"volume_ml", "mean_hu", "voxels"}}).
 * The outputs keep the input's affine and its sform/qform codes. Before writing, what an
 * earlier predict may have left in OUT_DIR (those three kinds of file, for this model's
 * structure names) is removed, so no stale file sits beside the new ones. */
int  predict_ct(const char *checkpoint, const char *ct_path, const char *out_dir, const PredictOptions *o,
                PredictInfo *info);

/* Inverse of the cache's slice resampling, exposed for tests: probabilities prob
 * (size x size) -> out (sh x sw), bilinear with src = (dst + 0.5) * size / n - 0.5
 * clamped to the grid, per axis (resample.h with the sizes swapped). SEG_ENOMEM on failure. */
int  predict_unresample(const float *prob, int size, float *out, int sh, int sw);

#endif
