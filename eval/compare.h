/* eval/compare.h : `segeval compare REF PRED`: find the subjects and structures of a
 * reference and a prediction given in the layouts TotalSegmentator and nnU-Net use, and
 * load each pair into metrics stacks (radiological axial view, the files' own spacing).
 *
 * REF and PRED may each be:
 *   a multilabel NIfTI file (.nii/.nii.gz)                     one subject
 *   a folder of per-structure masks (<name>.nii.gz; a `segmentations/` folder)
 *   a subject folder holding `segmentations/` or `segmentation.nii.gz` (+ ct.nii.gz)
 *   a dataset folder: subject folders as above (TotalSegmentator), or multilabel files
 *   named by case (nnU-Net's labelsTr/ and prediction folders)   many subjects, by id
 * Structure names: --labels FILE (label_map.json, a names list, or nnU-Net's dataset.json),
 * else a dataset.json beside the multilabel files, else TotalSegmentator's v2 'total'
 * list when the mask names belong to it (multilabel value v = structure v-1), else the
 * sorted union of the mask file names. */
#ifndef SEG_COMPARE_H
#define SEG_COMPARE_H
#include "labels.h"
#include "report.h"

#define COMPARE_PATH_MAX 4096

enum { COMPARE_MULTILABEL = 1, COMPARE_MASKDIR = 2 };

typedef struct CompareSide {
    int  kind;                       /* COMPARE_MULTILABEL or COMPARE_MASKDIR */
    char path[COMPARE_PATH_MAX];     /* the file, or the folder of masks */
} CompareSide;

typedef struct ComparePair {
    char        id[128];
    CompareSide ref, pred;
    char        ct[COMPARE_PATH_MAX];  /* CT for the figures, "" if none found */
} ComparePair;

typedef struct ComparePlan {
    int          n;
    ComparePair *pairs;              /* sorted by id */
    LabelList    labels;             /* the structures */
    int          n_values;           /* value_to_struct has n_values entries */
    int         *value_to_struct;    /* multilabel value -> structure index, or -1 */
    char         labels_from[COMPARE_PATH_MAX + 32];  /* where the names came from */
    int          n_extra_pred;       /* prediction subjects without a reference (ignored) */
    int          n_unknown_files;    /* mask files whose name is not a structure (ignored) */
    char         unknown_example[256];
} ComparePlan;

/* Resolve layouts, pair subjects by id and settle the structure list. labels_file may be
 * NULL. SEG_EIO (missing path), SEG_EFORMAT (no masks found, names that need --labels),
 * SEG_EMISMATCH (one subject vs a set, reference subjects missing from the prediction). */
int  compare_plan(const char *ref, const char *pred, const char *labels_file, ComparePlan *out);
void compare_plan_free(ComparePlan *p);   /* NULL-safe */

/* Load pair i: both sides and the CT (if any) into s (caller frees with
 * report_subject_free). SEG_EMISMATCH naming the files when grids differ. n_unknown
 * (may be NULL) gets the count of voxels whose multilabel value has no structure. */
int  compare_load(const ComparePlan *p, int i, ReportSubject *s, int64_t *n_unknown);

/* Which structures of pair i have a mask file on one side only (a folder of masks
 * lacking <name>.nii.gz that the other side has; a multilabel file holds every
 * structure): out[labels.n] gets 0, COMPARE_REF_ONLY or COMPARE_PRED_ONLY. */
enum { COMPARE_REF_ONLY = 1, COMPARE_PRED_ONLY = 2 };
int  compare_one_sided(const ComparePlan *p, int i, uint8_t *out);

/* --only: keep the structures named in `only` (a names file as --labels reads, or
 * "a,b,c"), in the plan's order; multilabel values of the others are skipped silently.
 * SEG_EARG listing names that are not structures of the plan. */
int  compare_select(ComparePlan *p, const char *only);

#endif
