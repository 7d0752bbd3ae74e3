/* eval/metrics.h : segmentation metrics shared by `segeval` (cache evaluation) and
 * `segeval compare`: confusion counts, Dice, IoU, HD95, normalised surface Dice (NSD)
 * and volumes per structure, and their aggregation over subjects.
 *
 * Masks are stacks of bit-packed planes (MetricsStack): plane z of structure s holds
 * nx x ny pixels, pixel p = y*nx + x (the packed layout of maskpack.h); a NULL plane is empty. Rules (named in every report):
 *   Dice = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN).
 *   Surface = mask voxels removed by a 6-connected erosion (outside the volume is
 *   background). Distances: exact Euclidean distance transform with the voxel spacing.
 *   HD95 = max of the two directed 95th percentiles (linear interpolation, numpy's
 *   default) of surface-to-surface distances (MONAI's and DeepMind's rule).
 *   NSD at tol mm = (#pred surface voxels within tol of the ref surface + #ref surface
 *   voxels within tol of the pred surface) / (#pred + #ref surface voxels).
 *   Cases: both empty -> Dice/IoU/HD95/NSD NaN (left out of every mean, counted);
 *   ref empty, pred not -> Dice = IoU = 0 (a false positive on an absent structure),
 *   HD95/NSD NaN; ref present, pred empty (a miss) -> Dice = IoU = NSD = 0 and HD95 =
 *   the volume's diagonal sqrt(sum (n_i*spacing_i)^2), never NaN. */
#ifndef SEG_METRICS_H
#define SEG_METRICS_H
#include <stddef.h>
#include <stdint.h>

/* The (subject, structure) cases above. */
enum { METRICS_CASE_BOTH = 0, METRICS_CASE_BOTH_EMPTY = 1, METRICS_CASE_FP_ABSENT = 2, METRICS_CASE_MISSED = 3,
       METRICS_CASE_ONE_SIDED = 4,     /* compare: a mask file on one side only: not scored, in no mean */
       METRICS_CASE_UNLABELLED = 5 };  /* eval: the structure is not labelled in that (partly labelled)
                                          cached subject: unknown, not scored, in no mean */
/* "tp_both", "both_empty", "fp_absent", "missed", "one_sided", "unlabelled". */
const char *metrics_case_name(int c);

/* Detection thresholds on Dice: 0.1 0.3 0.5 0.7 0.9. */
#define METRICS_N_DETECT 5
extern const double metrics_detect_thresholds[METRICS_N_DETECT];

typedef struct MetricsOptions {
    double nsd_tol_mm;     /* NSD tolerance (2.0) */
    double percentile;     /* Hausdorff percentile (95) */
    int    threads;        /* metrics_subject: structures in parallel on this many threads (1) */
} MetricsOptions;
void metrics_default_options(MetricsOptions *o);

/* n_struct stacks of nz planes of nx x ny pixels with one voxel spacing. */
typedef struct MetricsStack {
    int       nx, ny, nz, n_struct;
    size_t    plane_bytes;  /* (nx*ny + 7) / 8 */
    double    spacing[3];   /* mm per x, y, z */
    uint8_t **planes;       /* [s*nz + z]: malloc'd plane or NULL (empty); owned */
} MetricsStack;

/* Allocate the plane table (all planes NULL). SEG_EARG on bad sizes, SEG_ENOMEM. */
int  metrics_stack_init(MetricsStack *m, int nx, int ny, int nz, int n_struct, const double spacing[3]);
void metrics_stack_free(MetricsStack *m);                 /* NULL-safe, leaves m zeroed */
/* Plane (s, z), allocated zeroed on first use; NULL on ENOMEM (seg_err set). */
uint8_t *metrics_stack_plane(MetricsStack *m, int s, int z);
/* Set voxel (x, y, z) of structure s. SEG_ENOMEM if the plane cannot be allocated. */
int  metrics_stack_set(MetricsStack *m, int s, int x, int y, int z);
/* Set voxels of structure s. */
int64_t metrics_stack_count(const MetricsStack *m, int s);

typedef struct MetricsResult {
    int     kase;                  /* METRICS_CASE_* */
    int64_t tp, fp, fn, tn, n_ref, n_pred;
    double  dice, iou;             /* NaN when both empty */
    double  hd95, nsd;             /* mm, [0,1]; NaN unless ref present; miss: diagonal, 0 */
    double  vol_ref_ml, vol_pred_ml;
    int64_t n_surf_ref, n_surf_pred;
} MetricsResult;

typedef struct MetricsWork MetricsWork;   /* scratch buffers reused across calls; one per thread */
int  metrics_work_create(MetricsWork **out);
void metrics_work_free(MetricsWork *w);   /* NULL-safe */

/* Metrics of one structure given its nz ref and pred planes (entries may be NULL) on an
 * nx x ny x nz grid with spacing sp. Distances run only inside the bounding box of
 * ref | pred (exact: every surface voxel and every query lies inside it). */
int  metrics_structure(MetricsWork *w, int nx, int ny, int nz, const double sp[3],
                       const uint8_t *const *ref, const uint8_t *const *pred,
                       const MetricsOptions *o, MetricsResult *out);
/* All structures of two stacks of the same shape (SEG_EMISMATCH otherwise): out[s].
 * o->threads > 1 runs structures in parallel (largest first); w serves the calling thread. */
int  metrics_subject(MetricsWork *w, const MetricsStack *ref, const MetricsStack *pred,
                     const MetricsOptions *o, MetricsResult *out);

/* Exact Euclidean distance transform (mm) of an unpacked byte volume (x fastest):
 * dist[i] = distance from voxel i to the nearest voxel with feat != 0, INFINITY if there
 * is none. Separable, one Felzenszwalb-Huttenlocher lower envelope per line. */
int  metrics_edt(const uint8_t *feat, int nx, int ny, int nz, const double sp[3], double *dist);
/* q-th percentile (0..100) of v[n] with linear interpolation (numpy's default);
 * reorders v. NaN for n = 0. */
double metrics_percentile(double *v, size_t n, double q);

/* ---- aggregation over subjects ---- */
typedef struct MetricsSummary {
    int     n_pairs;               /* (subject, structure) pairs */
    int     n_ref_present;         /* pairs whose reference is non-empty */
    int     n_ref_empty;
    int     n_both_empty, n_fp_absent, n_missed;
    int     n_one_sided;           /* METRICS_CASE_ONE_SIDED pairs: not in n_pairs nor any mean */
    int     n_unlabelled;          /* METRICS_CASE_UNLABELLED pairs: likewise */
    /* "nnunet": NaN (both empty) left out, ref-empty false positives count as 0.
     * "present": only pairs with a non-empty reference (TotalSegmentator's). */
    double  dice_mean_nnunet, iou_mean_nnunet;
    double  dice_mean, dice_median, dice_std, iou_mean, iou_median;    /* present */
    double  hd95_mean, hd95_median, nsd_mean, nsd_median;             /* present (misses included) */
    double  vol_ref_mean_ml, vol_pred_mean_ml;                        /* present */
    double  detect[METRICS_N_DETECT];  /* of ref-present pairs, fraction with Dice >= t */
    double  fp_rate;                   /* n_fp_absent / n_ref_empty (NaN if none empty) */
} MetricsSummary;

/* Summary of structure s over n_subj subjects of res[subj*n_struct + s]; s < 0: every
 * pair of every structure pooled (means over pairs, not over structures). */
int  metrics_summarize(const MetricsResult *res, int n_subj, int n_struct, int s, MetricsSummary *out);
/* Mean of the finite values of v[n] (NaN if none). */
double metrics_nanmean(const double *v, int n);

#endif
