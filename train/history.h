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
} HistoryEpoch;

typedef struct History {
    int           n, cap;
    HistoryEpoch *e;         /* owned */
    char          monitor[32]; /* "val_dice" or "train_loss": what best.safetensors follows */
    int           best_epoch;  /* 0 if none yet */
} History;

void history_init(History *h);
void history_free(History *h);                        /* NULL-safe, leaves h empty */
/* Append (the epoch must be greater than the last one). SEG_ENOMEM, SEG_EARG. */
int  history_add(History *h, const HistoryEpoch *e);
/* JSON text {"monitor":..., "best_epoch":..., "epochs":[{...}, ...]} (NaN as null);
 * malloc'd, caller frees; NULL on ENOMEM. */
char *history_to_json(const History *h);
/* Parse history_to_json's output; what names the source in errors (SEG_EFORMAT). */
int  history_from_json(const char *txt, size_t n, const char *what, History *h);
/* training_history.json, atomically. */
int  history_write_json(const History *h, const char *path);
/* training_history.png: loss panel (train, val) and Dice panel side by side, written
 * atomically. title goes on top (e.g. the run directory). */
int  history_plot(const History *h, const char *title, const char *path);

#endif
