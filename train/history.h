/* train/history.h : segtrain's per-epoch record: training_history.json (also stored in
 * the resume state) and training_history.png (loss and Dice curves, drawn with plot.h). */
#ifndef SEG_HISTORY_H
#define SEG_HISTORY_H
#include <stddef.h>

typedef struct HistoryEpoch {
    int    epoch;            /* 1-based */
    double train_loss;       /* mean BCE over the epoch's batches */
    double val_loss;         /* NaN when not validated this epoch (or no val split) */
    double val_dice;         /* mean Dice over structures present in the val set, or NaN */
    int    val_structures;   /* how many structures were present in the val set */
    double lr;               /* learning rate used in this epoch */
    double seconds;          /* wall time of the epoch (training + validation) */
    double slices_per_s;     /* training slices per second */
    const float *val_dice_c; /* history_add input only: Dice per structure (History.n_ch values,
                                NaN where absent from the val set), or NULL when not validated */
} HistoryEpoch;

typedef struct History {
    int           n, cap;
    HistoryEpoch *e;         /* owned */
    char          monitor[32]; /* "val_dice" or "train_loss": what best.safetensors follows */
    char          loss[32];    /* the training loss's name ("bce+dice"), for the plot ("" unknown) */
    int           best_epoch;  /* 0 if none yet */
    int           n_ch;        /* structures with a per-structure Dice (0: none recorded) */
    char        **ch_names;    /* n_ch names, owned */
    float        *ch_dice;     /* cap x n_ch: row i is epoch e[i]'s Dice per structure (NaN: none) */
} History;

void history_init(History *h);
void history_free(History *h);                        /* NULL-safe, leaves h empty */
/* Name the n structures whose per-structure validation Dice is recorded (before the first
 * history_add; copies the names). SEG_ENOMEM, SEG_EARG (epochs already added). */
int  history_set_structures(History *h, const char *const *names, int n);
/* Append (the epoch must be greater than the last one); copies e->val_dice_c. SEG_ENOMEM, SEG_EARG. */
int  history_add(History *h, const HistoryEpoch *e);
/* Epoch i's Dice per structure (n_ch floats, NaN where none), or NULL when n_ch is 0. */
const float *history_structure_dice(const History *h, int i);
/* First quartile, median and third quartile of the finite values of epoch i's per-structure
 * Dice; returns how many there were (0: none, the three are then NaN). */
int  history_dice_quartiles(const History *h, int i, double *q1, double *median, double *q3);
/* JSON text {"monitor":..., "best_epoch":..., "loss":..., "structures": [names], "epochs":
 * [{..., "val_dice_per_structure": {name: Dice, ...}}, ...]} (NaN as null, structures absent
 * from the val set left out); malloc'd, caller frees; NULL on ENOMEM. */
char *history_to_json(const History *h);
/* Parse history_to_json's output; what names the source in errors (SEG_EFORMAT). */
int  history_from_json(const char *txt, size_t n, const char *what, History *h);
/* training_history.json, atomically. */
int  history_write_json(const History *h, const char *path);
/* training_history.png: loss panel (train, val) and Dice panel (mean over structures, and
 * the band between the first and third quartile of the per-structure Dice) side by side,
 * written atomically. title goes on top (e.g. the run directory). */
int  history_plot(const History *h, const char *title, const char *path);

#endif
