/* prep/prep.h : segprep's work: turn a TotalSegmentator-layout dataset into a slice cache
 * (prep_run), one subject at a time (prep_subject), plus the cache tools behind
 * `segprep stat|verify|export` (prep_tools.c). */
#ifndef SEG_PREP_H
#define SEG_PREP_H
#include <stdint.h>
#include <stdio.h>
#include "cache.h"
#include "labels.h"
#include "split.h"

typedef struct PrepOptions {
    int         size;          /* slice side (256) */
    const char *labels_file;   /* NULL: TotalSegmentator order or sorted names of the first subject */
    const char *split_file;    /* NULL: DATASET/meta.csv if present, else hash split */
    int         threads;       /* worker threads (>= 1) */
    int         limit;         /* process at most this many subjects (0: all) */
    int         force;         /* redo subjects already in the cache */
    int         strict;        /* stop at the first failed subject */
    int         verbosity;     /* 0 silent .. 4 debug */
    int         zstd_level;    /* record compression level */
    int         progress_tty;  /* -1 auto, 0 plain lines, 1 bar */
    int         prune;         /* --prune: remove cached subjects that are gone from the dataset */
    int         missing_empty; /* --missing-masks empty: a subject without some mask files is cached
                                  partly labelled (those channels unknown) instead of failing */
} PrepOptions;

typedef struct PrepStats {
    int     n_subjects, n_done, n_skipped, n_failed;
    int     n_partial;         /* subjects cached partly labelled (--missing-masks empty) */
    int     n_folders_skipped; /* dataset folders that are not subjects (reported on stderr) */
    int     n_replaced;        /* cached subjects whose input files changed: re-prepped */
    int     n_split_changed;   /* cached subjects whose split changed: record updated, not re-prepped */
    int     n_gone;            /* cached subjects no longer in the dataset (removed with --prune) */
    int     n_split_unmatched; /* split-file ids with no subject folder (reported on stderr) */
    int64_t n_slices;
    int64_t bytes_in;          /* .nii(.gz) bytes read */
    int64_t bytes_out;         /* record bytes written */
    double  seconds;
} PrepStats;

/* Per-subject work buffers and threads; one per prep_run. */
typedef struct PrepSubjectCtx PrepSubjectCtx;

void prep_default_options(PrepOptions *o);
/* Run over a dataset. Failed subjects are reported on stderr and counted; the return is
 * SEG_OK unless something outside a subject failed (cache, labels, split file). */
int  prep_run(const char *dataset, const char *cache_dir, const PrepOptions *o, PrepStats *st);
/* Names (subject ids), each owned; prep_names_free frees them and empties the list. */
typedef struct PrepNames { char **v; int n, cap; } PrepNames;
void prep_names_free(PrepNames *l);
/* The subject folders of dataset (those with a ct.nii[.gz]), sorted. Every other folder is
 * reported on stderr with why it is skipped (verbosity >= 1) and counted in *n_skipped (may
 * be NULL). SEG_EIO when there is no subject at all. */
int  prep_list_subjects(const char *dataset, int verbosity, PrepNames *out, int *n_skipped);
/* Below this many subjects a hash split would leave train or val empty or nearly so:
 * without a split file, such datasets go to train whole. */
#define PREP_SMALL_DATASET 10
/* The split segprep gives subject id of a dataset of n_subjects: the split file's t (NULL:
 * none), else train for a small dataset without one, else split_hash. */
int  prep_subject_split(const SplitTable *t, int n_subjects, const char *id);
/* DIR/STEM.nii.gz, else DIR/STEM.nii, into out: 1 when one exists. */
int  prep_find_nifti(char *out, size_t cap, const char *dir, const char *stem);
/* Fingerprint of a subject's inputs as found: the slice size, the label names and, per file
 * (the CT, then each channel's mask or its absence: mask_paths[c] NULL), its path's last two
 * components, size and modification time. A rerun skips a subject whose fingerprint is
 * unchanged and re-preps one whose fingerprint differs. Never 0. */
uint64_t prep_fingerprint(int size, const LabelList *labels, const char *ct_path, char *const *mask_paths);
/* segprep stat CACHE --check DATASET: per subject unchanged / changed / split changed /
 * new in the dataset / gone from it, as JSON on out (the split as segprep would set it). */
int  prep_check(const char *cache_dir, const char *dataset, const char *split_file, FILE *out);

/* Process one subject folder into n_slices encoded records (caller frees each .data and
 * the array) and its geometry. mask_paths[c] is the file of channel c. */
int  prep_subject(PrepSubjectCtx *ctx, const char *ct_path, char *const *mask_paths, int n_channels,
                  int size, CacheSubject *geo, CacheRecord **recs, int64_t *bytes_in);
int  prep_subject_ctx_create(int threads, int zstd_level, PrepSubjectCtx **out);
void prep_subject_ctx_free(PrepSubjectCtx *ctx);

/* segprep stat: JSON summary of the cache on out. */
int  prep_stat(const char *cache_dir, FILE *out);
/* segprep verify: re-read and decode every record with threads workers; prints a summary;
 * SEG_EFORMAT if any is bad (each bad record is named on stderr). */
int  prep_verify(const char *cache_dir, int threads, int verbosity);
/* segprep export: subject's cached slices back to OUT_DIR/ct.nii.gz + segmentations/. */
int  prep_export(const char *cache_dir, const char *subject, const char *out_dir, int verbosity);

#endif
