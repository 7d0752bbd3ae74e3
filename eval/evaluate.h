/* eval/evaluate.h : evaluation of a checkpoint on the slice cache: the subjects of a
 * split, batched inference over their slices, thresholded predictions as bit planes next
 * to the cached reference planes (one ReportSubject per subject, on the cache's
 * resampled grid with its spacing res_spacing and affine res_affine). A 2.5D checkpoint
 * (in_ch = 2K+1) sees each cached slice with its K neighbours of the same subject on either
 * side (the subject's end slices repeated), as in training. */
#ifndef SEG_EVALUATE_H
#define SEG_EVALUATE_H
#include <stdint.h>
#include "labels.h"
#include "unet.h"
#include "progress.h"
#include "report.h"

typedef struct EvaluateOptions {
    float threshold;     /* probability (0.5) */
    int   batch;         /* slices per forward pass (8) */
    int   threads;       /* compute threads (0: all cores) */
    UnetDevice dev;      /* resolved device (unet_device_resolve); default CPU */
} EvaluateOptions;
void evaluate_default_options(EvaluateOptions *o);

typedef struct Evaluator Evaluator;

/* Open the cache and the checkpoint and select the subjects of split (CACHE_SPLIT_*, or
 * -1 for all). Errors, each naming the files: the checkpoint cannot be read (SEG_EIO /
 * SEG_EFORMAT); its class count, structure names or training slice size differ from the
 * cache's (SEG_EMISMATCH: the model is never run at a size it was not trained at); the split has no subject (SEG_EARG, listing the splits present). */
int  evaluate_open(const char *checkpoint, const char *cache_dir, int split, const EvaluateOptions *o, Evaluator **out);
void evaluate_close(Evaluator *e);                          /* NULL-safe */

const LabelList *evaluate_labels(const Evaluator *e);       /* the cache's structures */
int         evaluate_n_subjects(const Evaluator *e);
int64_t     evaluate_n_slices(const Evaluator *e);          /* over the selected subjects */
const char *evaluate_subject_id(const Evaluator *e, int j);
/* Subject j's labelled-channel bitmap (bit c: channel c labelled), NULL when fully labelled. */
const uint8_t *evaluate_subject_labelled(const Evaluator *e, int j);
const char *evaluate_model_desc(const Evaluator *e);

/* Run subject j: s gets the reference planes, the predicted planes (probability >
 * threshold), the CT slices and the resampled affine (caller frees with
 * report_subject_free). *done counts slices for the progress bar p (may be NULL). */
int  evaluate_subject(Evaluator *e, int j, ReportSubject *s, Progress *p, int64_t *done);

#endif
