/* common/ckpt.h : segkit checkpoints, built on safetensors.h: written by segtrain, read by
 * segtrain (--resume, --init) and segeval (predict_model.c, as the inference model).
 *
 * A checkpoint is two files written side by side:
 *   NAME.safetensors        the model's state dict under PyTorch's names and shapes
 *                           (tools/unet_ref.py; num_batches_tracked as an I64 scalar), so
 *                           model.load_state_dict(safetensors.torch.load_file(NAME.safetensors))
 *                           works with strict=True. Metadata: "segkit" = "unet", "version",
 *                           "config" (JSON: in_ch, n_classes, n_levels, features), "labels"
 *                           (JSON array, channel order), "size", "hu_window" ([lo, hi]),
 *                           "epoch", "id", "segkit_version" and an informative "train" JSON.
 *   NAME.state.safetensors  the resume state: "adam.m", "adam.v" (F32, the parameter
 *                           block's layout), "adam.step" (I64), and segtrain's own state as
 *                           JSON in the "train_state" metadata; its "id" must equal the
 *                           weights file's, which is written after it (so a crash between the
 *                           two writes is detected, never silently mixed).
 * Each file is written atomically (temp file, fsync, rename). */
#ifndef SEG_CKPT_H
#define SEG_CKPT_H
#include "labels.h"
#include "unet.h"

#define CKPT_VERSION 1

/* What a checkpoint says about itself (ckpt_read_info). */
typedef struct CkptInfo {
    UnetConfig cfg;
    LabelList  labels;      /* owned: ckpt_info_free */
    int        size;        /* slice side trained on */
    int        epoch;
    float      hu_lo, hu_hi;
    char       id[40];
} CkptInfo;

/* Fields of the weights file's metadata that are not in the model. */
typedef struct CkptMeta {
    const LabelList *labels;
    int         size, epoch;
    float       hu_lo, hu_hi;
    const char *train_json;  /* optional: informative JSON (options), stored as "train" */
} CkptMeta;

/* Write a weights file alone (e.g. best.safetensors), with a fresh id. */
int  ckpt_save_model(const char *path, const Unet *m, const CkptMeta *meta);
/* Write a resumable checkpoint: the state file (ckpt_state_path) first, then the weights
 * file, both carrying one fresh id. train_state_json: the caller's own state (may be NULL). */
int  ckpt_save(const char *path, const Unet *m, const CkptMeta *meta, const char *train_state_json);

/* Read a weights file's metadata only. SEG_EIO (unreadable), SEG_EFORMAT (not a segkit
 * checkpoint, bad metadata), each naming the file. Caller frees with ckpt_info_free. */
int  ckpt_read_info(const char *path, CkptInfo *info);
void ckpt_info_free(CkptInfo *info);                    /* NULL-safe */
/* Load a weights file into m (whose config must equal the file's: SEG_EMISMATCH). Every
 * tensor of the model must be present with its shape, and no other (SEG_EFORMAT). */
int  ckpt_load_model(const char *path, Unet *m);
/* The "train_state" JSON of a state file (malloc'd, caller frees), without its tensors;
 * checks that the file's id equals expect_id (the weights file's) unless NULL. */
int  ckpt_read_state_json(const char *path, const char *expect_id, char **train_state_json);
/* Load a state file's Adam moments and step into m (same checks as above). */
int  ckpt_load_state(const char *path, Unet *m, const char *expect_id);
/* NAME.state.safetensors for NAME.safetensors (or NAME + ".state.safetensors"). */
int  ckpt_state_path(const char *weights_path, char *out, size_t cap);

#endif
