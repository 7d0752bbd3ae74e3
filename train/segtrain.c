/* train/segtrain.c : the segtrain command line: train the U-Net on a segprep cache. */
#define _POSIX_C_SOURCE 200809L
#include "cache.h"
#include "util.h"
#include "ckpt.h"
#include "err.h"
#include "fsutil.h"
#include "history.h"
#include "hunorm.h"
#include "labels.h"
#include "loader.h"
#include "prior.h"
#include "progress.h"
#include "cli.h"
#include "safetensors.h"
#include "schedule.h"
#include "unet.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <sys/stat.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

static int g_verbosity = 2;   /* 0 silent 1 errors 2 summary 3 progress details 4 debug */
#define LOG(l, ...) do { if (g_verbosity >= (l)) fprintf(stderr, __VA_ARGS__); } while (0)
static volatile sig_atomic_t g_stop;

static void on_signal(int sig) { g_stop = sig; }

static void usage(FILE *f)
{
    fprintf(f,
"segtrain " SEG_VERSION " : train the 2D U-Net on a segprep slice cache.\n"
"\n"
"usage:\n"
"  segtrain CACHE_DIR --out RUN_DIR [options]\n"
"  e.g. segtrain demo/cache --out runs/exp1 --epochs 20 --features 16,32,64,128\n"
"  segtrain CACHE_DIR --resume RUN_DIR [--epochs M]     continue from RUN_DIR's newest checkpoint\n"
"  segtrain forward CHECKPOINT IN.safetensors OUT.safetensors    (for tests; segtrain forward --help)\n"
"\n"
"Trains on the cache's train subjects and validates on its val subjects (their split was\n"
"set by segprep). Writes into RUN_DIR: label_map.json, checkpoint_epochN.safetensors\n"
"(PyTorch state-dict names, loadable with safetensors.torch.load_file) with its resume\n"
"state checkpoint_epochN.state.safetensors (Adam moments, schedule, history), best.safetensors\n"
"(highest validation Dice, ties and all-zero Dice broken by the validation loss; lowest\n"
"training loss when the cache has no val subjects), training_history.json (with the Dice\n"
"of every structure per validation) and training_history.png.\n"
"The defaults are a recipe that learns: BCE + soft Dice, balanced batches, the head bias\n"
"started at each structure's log prior (counted in the train split), poly lr decay.\n"
"\n"
"options:\n"
"  --out DIR           run directory (default with --resume: the checkpoint's directory)\n"
"  --epochs N          total epochs to reach, counted from the start of the run (default 10;\n"
"                      with --resume, the checkpoint's)\n"
"  --batch-size N      slices per step (default 8)\n"
"  --lr X              Adam learning rate (default 3e-3; betas 0.9, 0.999, eps 1e-8): the\n"
"                      schedule's peak\n"
"  --loss L            bce+dice (default: BCE with logits + soft Dice over the structures\n"
"                      present in the batch), bce, or dice (docs/loss.md)\n"
"  --sampling S        balanced (default): a share of every batch is drawn foreground-first\n"
"                      (a structure of the train split at random, then a slice holding it);\n"
"                      uniform: plain shuffling\n"
"  --fg-fraction F     that share with --sampling balanced (default 0.33)\n"
"  --context K         2.5D input: the network sees the 2K+1 slices around each slice\n"
"                      (edges repeated; default 0); checkpoints record it\n"
"  --features LIST     encoder widths, one per level (default 32,64,128,256); the slice size\n"
"                      must divide by 2^levels\n"
"  --seed N            weight init, shuffling and augmentation (default 42)\n"
"  --device D          auto (default: the GPU when one is usable, else the CPU), cpu, cuda\n"
"                      or cuda:N; checkpoints are the same whichever device wrote them\n"
"  --amp A             GPU precision: off (default, fp32), bf16 or fp16 (mixed precision on\n"
"                      tensor cores, fp32 master weights; fp16 with dynamic loss scaling),\n"
"                      or tf32 (fp32 tensors, TF32 tensor-core convolutions)\n"
"  --threads N         CPU compute threads (default: all cores); same seed + same threads =\n"
"                      identical weights\n"
"  --loader-threads N  background decode threads (default 1)\n"
"  --val-every N       validate every N epochs and after the last (default 1)\n"
"  --aug               augment: flips (left/right labels swapped), rotation up to 15 degrees,\n"
"                      intensity scale/shift (default off)\n"
"  --hu-window LO,HI   input normalisation: clip HU to [LO, HI], scale to [-1, 1]\n"
"                      (default -1000,1000); the cache keeps raw HU\n"
"  --lr-schedule S     poly (default: lr x (1 - step/steps)^0.9 over the run), cosine, none,\n"
"                      or plateau: cut the lr by --plateau-factor when the monitored metric\n"
"                      (val Dice, or train loss without val) has not improved for\n"
"                      --plateau-patience validations (default 2); floor --min-lr (1e-6)\n"
"  --warmup N          ramp the lr up linearly over the first N steps (default 0)\n"
"  --plateau-factor X  lr multiplier of the plateau schedule (default 0.5)\n"
"  --early-stop N      stop after N validations without improvement (default 0: never)\n"
"  --clip-grad X       clip the global gradient L2 norm to X (default 0: off)\n"
"  --limit-slices N    use N evenly spaced slices of each split (quick runs)\n"
"  --keep-last N       keep only the newest N epoch checkpoints (default 0: keep all)\n"
"  --resume RUN_DIR    continue from the newest checkpoint_epochN.safetensors in RUN_DIR that\n"
"                      has its .state file (or name one such FILE); options not given are\n"
"                      taken from the checkpoint\n"
"  --force             start over in a RUN_DIR that holds checkpoints (deletes them)\n"
"  --progress          force the progress bar (default on a terminal; elsewhere a plain line\n"
"                      every few seconds); --no-progress for one line per epoch\n"
"  -q, -v              quieter / more verbose\n"
"  -h, --help          this help;  -V, --version  the version\n"
"Options take --opt VALUE or --opt=VALUE; -- ends the options.\n"
"\n"
"example:\n"
"  segtrain demo/cache --out runs/exp1 --epochs 20\n"
"  segtrain demo/cache --resume runs/exp1 --epochs 40      # continue the same run to epoch 40\n"
"\n"
"exit status: 0 ok, 1 runtime error, 2 usage error, 130 interrupted (resume from the last\n"
"checkpoint).\n");
}

static void forward_usage(FILE *f)
{
    fprintf(f,
"usage: segtrain forward CHECKPOINT IN.safetensors OUT.safetensors [--train-mode] [--threads N]\n"
"                        [--device D] [--amp A]\n"
"Run CHECKPOINT on the tensor 'x' (N, in_ch, H, W) of IN and write its 'logits' (N, C, H, W) to\n"
"OUT: the hook the PyTorch comparison tests use. --train-mode: BatchNorm with batch\n"
"statistics (as in training) instead of the running ones.\n"
"example:\n  segtrain forward runs/exp1/best.safetensors x.safetensors logits.safetensors\n");
}

/* ---- options ---- */

enum {   /* bits of TrainOpts.given: which options the command line set */
    G_EPOCHS = 1 << 0, G_BATCH = 1 << 1, G_LR = 1 << 2, G_FEATURES = 1 << 3, G_SEED = 1 << 4, G_VALEVERY = 1 << 5,
    G_AUG = 1 << 6, G_HU = 1 << 7, G_SCHED = 1 << 8, G_PATIENCE = 1 << 9, G_FACTOR = 1 << 10, G_MINLR = 1 << 11,
    G_EARLY = 1 << 12, G_CLIP = 1 << 13, G_LIMIT = 1 << 14, G_KEEP = 1 << 15, G_LOSS = 1 << 16, G_SAMPLING = 1 << 17,
    G_FG = 1 << 18, G_WARMUP = 1 << 19, G_CONTEXT = 1 << 20,
};

typedef struct TrainOpts {
    int      epochs, batch_size, n_levels, features[UNET_MAX_LEVELS];
    double   lr, plateau_factor, min_lr, clip_grad, fg_fraction;
    uint64_t seed;
    int      threads, loader_threads, val_every, aug, sched, warmup, patience, early_stop, keep_last;
    int      loss, balanced, context;   /* UNET_LOSS_*, --sampling balanced, --context K */
    int64_t  limit_slices;
    float    hu_lo, hu_hi;
    int      force, progress;   /* progress: -1 auto (TTY), 0 off, 1 on */
    UnetDevice dev;             /* --device / --amp (resolved in open_run) */
    char     dev_desc[1024];
    unsigned given;
    const char *out, *resume, *cache;
} TrainOpts;

/* The recipe's defaults, chosen by measurement on held-out phantom sets (docs/recipe.md). */
#define DEFAULT_LR     3e-3
#define DEFAULT_SCHED  SCHED_POLY
#define DEFAULT_WARMUP 0

static void default_opts(TrainOpts *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 10;
    o->batch_size = 8;
    o->n_levels = 4;
    o->features[0] = 32; o->features[1] = 64; o->features[2] = 128; o->features[3] = 256;
    o->lr = DEFAULT_LR;
    o->sched = DEFAULT_SCHED;
    o->warmup = DEFAULT_WARMUP;
    o->loss = UNET_LOSS_BCE_DICE;
    o->balanced = 1;
    o->fg_fraction = 0.33;
    o->plateau_factor = 0.5;
    o->min_lr = 1e-6;
    o->seed = 42;
    o->loader_threads = 1;
    o->val_every = 1;
    o->patience = 2;
    o->hu_lo = HUNORM_DEFAULT_LO;
    o->hu_hi = HUNORM_DEFAULT_HI;
    o->progress = -1;
    o->dev.kind = UNET_AUTO;
}

static int usage_err(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "segtrain: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, " (see segtrain --help)\n");
    return -1;
}

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;
    if (!v) return usage_err("%s needs a value%s", flag, "");
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "segtrain: %s: '%s' is not an integer in %ld..%ld\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_double(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    if (!v) return usage_err("%s needs a value%s", flag, "");
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "segtrain: %s: '%s' is not a number in [%g, %g]\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_features(const char *v, TrainOpts *o)
{
    if (!v) return usage_err("%s needs a value%s", "--features", "");
    int n = 0;
    const char *p = v;
    while (*p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 1 || x > 4096 || n == UNET_MAX_LEVELS || (*end && *end != ',')) {
            fprintf(stderr, "segtrain: --features: '%s' is not a list of 1 to %d widths in 1..4096, e.g. 32,64,128,256\n",
                    v, UNET_MAX_LEVELS);
            return -1;
        }
        o->features[n++] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (!n) return usage_err("--features: empty list%s%s", "", "");
    o->n_levels = n;
    return 0;
}

static int parse_window(const char *v, float *lo, float *hi)
{
    double a, b;
    char extra;
    if (!v || sscanf(v, "%lf,%lf%c", &a, &b, &extra) != 2 || !(b > a) || a < -100000 || b > 100000) {
        fprintf(stderr, "segtrain: --hu-window: '%s' is not LO,HI with LO < HI (e.g. -1000,1000)\n", v ? v : "");
        return -1;
    }
    *lo = (float)a;
    *hi = (float)b;
    return 0;
}

/* ---- the training state saved next to each checkpoint ---- */

typedef struct RunState {
    int     epoch;            /* epochs completed */
    double  lr;               /* current learning rate */
    double  best;             /* best monitored value (NaN: none yet) */
    double  best_loss;        /* val loss at the best epoch: breaks ties of val Dice (NaN: none) */
    int     best_epoch;
    int     zero_dice;        /* validations in a row with Dice 0 (the model predicts nothing) */
    int     bad;              /* validations (or epochs) since the last improvement */
    int     plateau_bad;      /* the same, reset by each lr reduction */
    double *prior;            /* foreground fraction per channel the head bias started from */
    int     n_prior;          /* (0: not known, e.g. a run resumed from an older checkpoint) */
    History hist;
} RunState;

static cJSON *opts_json(const TrainOpts *o)
{
    cJSON *j = cJSON_CreateObject(), *f;
    if (!j) return NULL;
    cJSON_AddNumberToObject(j, "epochs", o->epochs);
    cJSON_AddNumberToObject(j, "batch_size", o->batch_size);
    cJSON_AddNumberToObject(j, "lr", o->lr);
    if ((f = cJSON_AddArrayToObject(j, "features")))
        for (int i = 0; i < o->n_levels; i++) cJSON_AddItemToArray(f, cJSON_CreateNumber(o->features[i]));
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);   /* as text: JSON numbers lose 64-bit seeds */
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddNumberToObject(j, "threads", o->threads);
    cJSON_AddNumberToObject(j, "val_every", o->val_every);
    cJSON_AddBoolToObject(j, "aug", o->aug);
    cJSON_AddNumberToObject(j, "hu_lo", o->hu_lo);
    cJSON_AddNumberToObject(j, "hu_hi", o->hu_hi);
    cJSON_AddStringToObject(j, "loss", unet_loss_name(o->loss));
    cJSON_AddStringToObject(j, "sampling", o->balanced ? "balanced" : "uniform");
    cJSON_AddNumberToObject(j, "fg_fraction", o->fg_fraction);
    cJSON_AddNumberToObject(j, "context", o->context);
    cJSON_AddStringToObject(j, "lr_schedule", sched_name(o->sched));
    cJSON_AddNumberToObject(j, "warmup", o->warmup);
    cJSON_AddNumberToObject(j, "plateau_patience", o->patience);
    cJSON_AddNumberToObject(j, "plateau_factor", o->plateau_factor);
    cJSON_AddNumberToObject(j, "min_lr", o->min_lr);
    cJSON_AddNumberToObject(j, "early_stop", o->early_stop);
    cJSON_AddNumberToObject(j, "clip_grad", o->clip_grad);
    cJSON_AddNumberToObject(j, "limit_slices", (double)o->limit_slices);
    cJSON_AddNumberToObject(j, "keep_last", o->keep_last);
    cJSON_AddStringToObject(j, "device", o->dev.kind == UNET_CUDA ? "cuda" : "cpu");   /* for the record only */
    cJSON_AddStringToObject(j, "amp", unet_amp_name(o->dev.amp));
    return j;
}

static char *state_json(const TrainOpts *o, const RunState *s)
{
    cJSON *j = cJSON_CreateObject();
    char *hist = history_to_json(&s->hist);
    cJSON *h = hist ? cJSON_Parse(hist) : NULL;
    free(hist);
    if (!j || !h) { cJSON_Delete(j); cJSON_Delete(h); return NULL; }
    cJSON_AddNumberToObject(j, "epoch", s->epoch);
    cJSON_AddNumberToObject(j, "lr", s->lr);
    cJSON_AddItemToObject(j, "best", isfinite(s->best) ? cJSON_CreateNumber(s->best) : cJSON_CreateNull());
    cJSON_AddItemToObject(j, "best_loss", isfinite(s->best_loss) ? cJSON_CreateNumber(s->best_loss) : cJSON_CreateNull());
    cJSON_AddNumberToObject(j, "best_epoch", s->best_epoch);
    cJSON_AddNumberToObject(j, "zero_dice", s->zero_dice);
    if (s->n_prior) cJSON_AddItemToObject(j, "head_prior", cJSON_CreateDoubleArray(s->prior, s->n_prior));
    cJSON_AddNumberToObject(j, "bad", s->bad);
    cJSON_AddNumberToObject(j, "plateau_bad", s->plateau_bad);
    cJSON_AddItemToObject(j, "options", opts_json(o));
    cJSON_AddItemToObject(j, "history", h);
    char *txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return txt;
}

static const cJSON *jget(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

/* Take the saved options the command line did not set; fill the run state. */
static int state_from_json(const char *txt, const char *path, TrainOpts *o, RunState *s)
{
    cJSON *j = cJSON_Parse(txt);
    const cJSON *op = jget(j, "options"), *h = jget(j, "history"), *v;
    if (!j || !cJSON_IsObject(op) || !cJSON_IsObject(h) || !cJSON_IsNumber(jget(j, "epoch")) || !cJSON_IsNumber(jget(j, "lr"))) {
        cJSON_Delete(j);
        return seg_err(SEG_EFORMAT, "%s: training state is incomplete", path);
    }
    s->epoch = jget(j, "epoch")->valueint;
    s->lr = jget(j, "lr")->valuedouble;
    v = jget(j, "best");
    s->best = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    s->best_epoch = cJSON_IsNumber(v = jget(j, "best_epoch")) ? v->valueint : 0;
    s->best_loss = cJSON_IsNumber(v = jget(j, "best_loss")) ? v->valuedouble : NAN;
    s->zero_dice = cJSON_IsNumber(v = jget(j, "zero_dice")) ? v->valueint : 0;
    const int np = cJSON_IsArray(v = jget(j, "head_prior")) ? cJSON_GetArraySize(v) : 0;
    if (np > 0 && (s->prior = malloc(sizeof(double) * (size_t)np))) {
        const cJSON *it;
        cJSON_ArrayForEach(it, v) s->prior[s->n_prior++] = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    }
    s->bad = cJSON_IsNumber(v = jget(j, "bad")) ? v->valueint : 0;
    s->plateau_bad = cJSON_IsNumber(v = jget(j, "plateau_bad")) ? v->valueint : 0;
    /* options given again but different change what an unbroken run would have done */
    const char *changed = NULL;
    if ((o->given & G_BATCH) && cJSON_IsNumber(v = jget(op, "batch_size")) && v->valueint != o->batch_size) changed = "--batch-size";
    if ((o->given & G_AUG) && cJSON_IsBool(v = jget(op, "aug")) && cJSON_IsTrue(v) != o->aug) changed = "--aug";
    if ((o->given & G_HU) && (cJSON_IsNumber(v = jget(op, "hu_lo")) && (float)v->valuedouble != o->hu_lo)) changed = "--hu-window";
    if ((o->given & G_HU) && (cJSON_IsNumber(v = jget(op, "hu_hi")) && (float)v->valuedouble != o->hu_hi)) changed = "--hu-window";
    if ((o->given & G_LIMIT) && cJSON_IsNumber(v = jget(op, "limit_slices")) && (int64_t)v->valuedouble != o->limit_slices)
        changed = "--limit-slices";
    if ((o->given & G_SEED) && cJSON_IsString(v = jget(op, "seed")) && strtoull(v->valuestring, NULL, 10) != o->seed) changed = "--seed";
    if (changed)
        LOG(2, "segtrain: note: %s differs from the checkpoint's setting: the run will not match an unbroken one\n", changed);
#define TAKE_INT(bit, key, field) if (!(o->given & (bit)) && cJSON_IsNumber(v = jget(op, key))) o->field = v->valueint
#define TAKE_DBL(bit, key, field) if (!(o->given & (bit)) && cJSON_IsNumber(v = jget(op, key))) o->field = v->valuedouble
    TAKE_INT(G_EPOCHS, "epochs", epochs);
    TAKE_INT(G_BATCH, "batch_size", batch_size);
    TAKE_INT(G_VALEVERY, "val_every", val_every);
    TAKE_INT(G_PATIENCE, "plateau_patience", patience);
    TAKE_INT(G_EARLY, "early_stop", early_stop);
    TAKE_INT(G_KEEP, "keep_last", keep_last);
    TAKE_DBL(G_FACTOR, "plateau_factor", plateau_factor);
    TAKE_DBL(G_MINLR, "min_lr", min_lr);
    TAKE_DBL(G_CLIP, "clip_grad", clip_grad);
    TAKE_DBL(G_LR, "lr", lr);
    TAKE_INT(G_WARMUP, "warmup", warmup);
    TAKE_DBL(G_FG, "fg_fraction", fg_fraction);
    /* runs from before these options trained BCE on uniform batches: keep doing that */
    if (!(o->given & G_LOSS)) o->loss = UNET_LOSS_BCE;
    if (!(o->given & G_LOSS) && cJSON_IsString(v = jget(op, "loss")) && unet_loss_parse(v->valuestring, &o->loss) < 0)
        o->loss = -1;
    if (!(o->given & G_SAMPLING)) o->balanced = cJSON_IsString(v = jget(op, "sampling")) && !strcmp(v->valuestring, "balanced");
    if (!(o->given & G_LIMIT) && cJSON_IsNumber(v = jget(op, "limit_slices")))   /* range first: the cast of a huge double is UB */
        o->limit_slices = v->valuedouble >= 0 && v->valuedouble < 1e15 ? (int64_t)v->valuedouble : -1;
    if (!(o->given & G_AUG) && cJSON_IsBool(v = jget(op, "aug"))) o->aug = cJSON_IsTrue(v);
    if (!(o->given & G_SCHED)) o->sched = cJSON_IsString(v = jget(op, "lr_schedule")) ? sched_parse(v->valuestring) : SCHED_NONE;
    if (!(o->given & G_SEED) && cJSON_IsString(v = jget(op, "seed"))) o->seed = strtoull(v->valuestring, NULL, 10);
    int saved_threads = cJSON_IsNumber(v = jget(op, "threads")) ? v->valueint : 0;
    if (saved_threads > 0 && o->threads > 0 && saved_threads != o->threads)
        LOG(2, "segtrain: note: the checkpoint was trained with %d threads, this run uses %d: "
               "results will differ slightly from an unbroken run\n", saved_threads, o->threads);
    if (!o->threads && saved_threads > 0 && saved_threads <= 1024) o->threads = saved_threads;
#undef TAKE_INT
#undef TAKE_DBL
    int bad_opts = o->epochs < 1 || o->epochs > 1000000 || o->batch_size < 1 || o->batch_size > 4096 || o->val_every < 1 ||
                   o->patience < 0 || o->early_stop < 0 || o->keep_last < 0 || !(o->plateau_factor > 0 && o->plateau_factor < 1) ||
                   !(o->min_lr >= 0) || !(o->clip_grad >= 0) || o->limit_slices < 0 || s->epoch < 0 || !(s->lr > 0 && s->lr <= 10) ||
                   !(o->lr > 0 && o->lr <= 10) || o->sched < 0 || o->loss < 0 || o->warmup < 0 || !(o->fg_fraction >= 0 && o->fg_fraction <= 1);
    if (bad_opts) {
        cJSON_Delete(j);
        return seg_err(SEG_EFORMAT, "%s: training state holds out-of-range options", path);
    }
    char *htxt = cJSON_PrintUnformatted(h);
    int rc = htxt ? history_from_json(htxt, strlen(htxt), path, &s->hist) : seg_err(SEG_ENOMEM, "%s", path);
    free(htxt);
    cJSON_Delete(j);
    return rc;
}

/* ---- run directory ---- */

static int is_run_file(const char *name)
{
    size_t n = strlen(name);
    return (!strncmp(name, "checkpoint_epoch", 16) && n > 12 && !strcmp(name + n - 12, ".safetensors")) ||
           !strcmp(name, "best.safetensors");
}

/* Refuse to start over in a run directory with checkpoints unless forced (then delete them). */
static int prepare_out(const char *out, int force, int resuming)
{
    DIR *d = opendir(out);
    if (!d) {
        if (errno != ENOENT) return seg_err(SEG_EIO, "%s: %s", out, strerror(errno));
        return fs_mkdirs(out);
    }
    struct dirent *e;
    int found = 0, rc = SEG_OK;
    char first[256] = "", path[4200];
    while ((e = readdir(d)))
        if (is_run_file(e->d_name) && !found++) snprintf(first, sizeof first, "%s", e->d_name);
    if (found && !resuming && !force) {
        closedir(d);
        return seg_err(SEG_EARG, "%s already holds a run (%s and %d more); continue it with --resume %s/<checkpoint>, "
                       "start over with --force, or pick another --out", out, first, found - 1, out);
    }
    if (found && force && !resuming) {
        rewinddir(d);
        while ((e = readdir(d)) && rc == SEG_OK) {
            if (!is_run_file(e->d_name) && strcmp(e->d_name, "training_history.json") && strcmp(e->d_name, "training_history.png"))
                continue;
            if ((rc = fs_join(path, sizeof path, out, e->d_name)) == SEG_OK && unlink(path) != 0)
                rc = seg_err(SEG_EIO, "%s: %s", path, strerror(errno));
        }
    }
    closedir(d);
    return rc;
}

static void remove_old_checkpoint(const char *out, int epoch)
{
    char name[64], path[4200], sp[4300];
    snprintf(name, sizeof name, "checkpoint_epoch%d.safetensors", epoch);
    if (fs_join(path, sizeof path, out, name) < 0 || ckpt_state_path(path, sp, sizeof sp) < 0) return;
    unlink(sp);
    unlink(path);
}

/* ---- validation ---- */

typedef struct ValResult { double loss, dice; int n_present; float *dice_c; /* C, NaN where absent */ } ValResult;

static int validate(Unet *m, Loader *val, int C, ValResult *r)
{
    int64_t *cnt = calloc((size_t)C * 3, sizeof *cnt);
    if (!cnt) return seg_err(SEG_ENOMEM, "validation counts");
    int64_t *tp = cnt, *fp = cnt + C, *fn = cnt + 2 * C;
    double sum = 0;
    int64_t n = 0;
    LoaderBatch b;
    int rc = loader_start_epoch(val, 0);
    while (rc >= 0 && (rc = loader_next(val, &b)) == 1) {
        if ((rc = unet_forward(m, b.img, b.n, 0)) < 0) break;
        float loss;
        if ((rc = unet_loss_masked(m, b.bits, b.presence, b.labelled, b.n, &loss)) < 0) break;
        sum += (double)loss * b.n;
        n += b.n;
        if ((rc = unet_dice_counts_masked(m, b.bits, b.presence, b.labelled, b.n, tp, fp, fn)) < 0) break;
        if (g_stop) break;
    }
    if (rc >= 0) {
        double dsum = 0;
        int np = 0;
        for (int c = 0; c < C; c++) {
            r->dice_c[c] = NAN;
            if (tp[c] + fn[c] == 0) continue;   /* structure absent from the whole val set */
            const double d = 2.0 * tp[c] / (double)(2 * tp[c] + fp[c] + fn[c]);
            r->dice_c[c] = (float)d;
            dsum += d;
            np++;
        }
        r->loss = n ? sum / n : NAN;
        r->dice = np ? dsum / np : NAN;
        r->n_present = np;
        rc = SEG_OK;
    }
    free(cnt);
    return rc;
}

/* ---- checkpoints of a run ---- */

static char *opts_text(const TrainOpts *o)
{
    cJSON *j = opts_json(o);
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return t;
}

/* checkpoint_epochN.safetensors + its state, or best.safetensors (weights only). */
static int save_run_ckpt(const char *out, const char *name, const TrainOpts *o, const RunState *s, int epoch,
                         const Unet *m, const CacheReader *cache)
{
    char path[4200];
    TRY(fs_join(path, sizeof path, out, name));
    char *tj = opts_text(o), *st = s ? state_json(o, s) : NULL;
    int rc = tj && (st || !s) ? SEG_OK : seg_err(SEG_ENOMEM, "checkpoint metadata");
    CkptMeta meta = { .labels = cache_labels(cache), .size = cache_size(cache), .epoch = epoch,
                      .hu_lo = o->hu_lo, .hu_hi = o->hu_hi, .train_json = tj };
    if (rc == SEG_OK) rc = s ? ckpt_save(path, m, &meta, st) : ckpt_save_model(path, m, &meta);
    free(tj);
    free(st);
    return rc;
}

static int labels_equal(const LabelList *a, const LabelList *b, char *why, size_t cap)
{
    if (a->n != b->n) { snprintf(why, cap, "%d structures vs %d", a->n, b->n); return 0; }
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->names[i], b->names[i])) {
            snprintf(why, cap, "channel %d is '%s' vs '%s'", i, a->names[i], b->names[i]);
            return 0;
        }
    return 1;
}

/* Report the error of status rc on stderr; the exit status for it. */
static int fail(int rc)
{
    const char *m = seg_errmsg();
    fprintf(stderr, "segtrain: %s\n", m[0] ? m : seg_strerror(rc));
    return EXIT_RUNTIME;
}

/* ---- segtrain forward ---- */

static int cmd_forward(const char *ckpt, const char *in, const char *outp, int train_mode, int threads, UnetDevice dev)
{
    StFile *f = NULL;
    Unet *m = NULL;
    CkptInfo info;
    int rc = st_open(in, &f);
    const StTensor *x = rc == SEG_OK ? st_find(f, "x") : NULL;
    if (rc == SEG_OK) rc = ckpt_read_info(ckpt, &info);
    if (rc == SEG_OK && (!x || x->ndim != 4 || x->shape[1] != info.cfg.in_ch || x->shape[0] < 1 || x->shape[0] > 4096)) {
        rc = seg_err(SEG_EFORMAT, "%s: needs a tensor 'x' of shape (N, %d, H, W) for %s (in_ch %d)", in, info.cfg.in_ch, ckpt, info.cfg.in_ch);
        ckpt_info_free(&info);
    }
    if (rc < 0) { st_close(f); return fail(rc); }
    int N = (int)x->shape[0], H = (int)x->shape[2], W = (int)x->shape[3], C = info.cfg.n_classes;
    float *xs = malloc(sizeof(float) * x->count);
    if (!xs) rc = seg_err(SEG_ENOMEM, "input");
    if (rc == SEG_OK) rc = unet_device_resolve(&dev, NULL, 0);
    if (rc == SEG_OK) { st_to_f32(x, xs); rc = unet_create_on(&info.cfg, N, H, W, threads, &dev, &m); }
    if (rc == SEG_OK) rc = ckpt_load_model(ckpt, m);
    if (rc == SEG_OK) rc = unet_forward(m, xs, N, train_mode);
    const float *lg = rc == SEG_OK ? unet_logits(m) : NULL;
    if (rc == SEG_OK && !lg) rc = SEG_EGPU;
    if (rc == SEG_OK) {
        StTensor t = { .name = "logits", .dtype = ST_F32, .ndim = 4, .shape = { N, C, H, W }, .data = lg };
        StMeta md = { "checkpoint", ckpt };
        rc = st_write(outp, &t, 1, &md, 1);
    }
    free(xs);
    unet_free(m);
    ckpt_info_free(&info);
    st_close(f);
    return rc < 0 ? fail(rc) : EXIT_OK;
}

/* ---- command line ---- */

/* Parse argv into o and the positional arguments. Returns -1 to go on, else an exit code. */
static int parse_args(int argc, char **argv, TrainOpts *o, const char **pos, int *npos, int *train_mode)
{
    long v;
    int help = 0;
    *npos = 0;
    CliArgs c;
    const char *a, *next;
    cli_start(&c, "segtrain", argc, argv);
    while (cli_next(&c, &a, &next)) {
        int took = 1;   /* the option consumed a value */
        if (c.positional) {
            if (*npos == 4) { fprintf(stderr, "segtrain: too many arguments (see segtrain --help)\n"); return EXIT_USAGE; }
            pos[(*npos)++] = a;
            took = 0;
        }
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { help = 1; took = 0; }
        else if (!strcmp(a, "-V") || !strcmp(a, "--version")) { printf("segtrain %s\n", SEG_VERSION); return EXIT_OK; }
        else if (!strcmp(a, "-q")) { g_verbosity--; took = 0; }
        else if (!strcmp(a, "-v")) { g_verbosity++; took = 0; }
        else if (!strcmp(a, "--aug")) { o->aug = 1; o->given |= G_AUG; took = 0; }
        else if (!strcmp(a, "--no-aug")) { o->aug = 0; o->given |= G_AUG; took = 0; }
        else if (!strcmp(a, "--force")) { o->force = 1; took = 0; }
        else if (!strcmp(a, "--progress")) { o->progress = 1; took = 0; }
        else if (!strcmp(a, "--no-progress")) { o->progress = 0; took = 0; }
        else if (!strcmp(a, "--train-mode")) { *train_mode = 1; took = 0; }
        else if (!strcmp(a, "--out")) { if (!next) goto missing; o->out = next; }
        else if (!strcmp(a, "--resume")) { if (!next) goto missing; o->resume = next; }
        else if (!strcmp(a, "--epochs")) { if (parse_long(a, next, 1, 1000000, &v)) return EXIT_USAGE; o->epochs = (int)v; o->given |= G_EPOCHS; }
        else if (!strcmp(a, "--batch-size")) { if (parse_long(a, next, 1, 4096, &v)) return EXIT_USAGE; o->batch_size = (int)v; o->given |= G_BATCH; }
        else if (!strcmp(a, "--lr")) { if (parse_double(a, next, 1e-12, 10, &o->lr)) return EXIT_USAGE; o->given |= G_LR; }
        else if (!strcmp(a, "--features")) { if (parse_features(next, o)) return EXIT_USAGE; o->given |= G_FEATURES; }
        else if (!strcmp(a, "--seed")) {
            char *end;
            if (!next || (o->seed = strtoull(next, &end, 10), *end || end == next || next[0] == '-')) {
                fprintf(stderr, "segtrain: --seed: '%s' is not a non-negative integer\n", next ? next : "");
                return EXIT_USAGE;
            }
            o->given |= G_SEED;
        }
        else if (!strcmp(a, "--threads")) { if (parse_long(a, next, 1, 1024, &v)) return EXIT_USAGE; o->threads = (int)v; }
        else if (!strcmp(a, "--device") || !strcmp(a, "--amp")) {
            if ((a[2] == 'd' ? unet_device_parse(next, &o->dev) : unet_amp_parse(next, &o->dev)) < 0) {
                fprintf(stderr, "segtrain: %s (see segtrain --help)\n", seg_errmsg());
                return EXIT_USAGE;
            }
        }
        else if (!strcmp(a, "--loader-threads")) { if (parse_long(a, next, 1, 64, &v)) return EXIT_USAGE; o->loader_threads = (int)v; }
        else if (!strcmp(a, "--val-every")) { if (parse_long(a, next, 1, 1000000, &v)) return EXIT_USAGE; o->val_every = (int)v; o->given |= G_VALEVERY; }
        else if (!strcmp(a, "--hu-window")) { if (parse_window(next, &o->hu_lo, &o->hu_hi)) return EXIT_USAGE; o->given |= G_HU; }
        else if (!strcmp(a, "--lr-schedule")) {
            if ((o->sched = sched_parse(next)) < 0) {
                fprintf(stderr, "segtrain: --lr-schedule: '%s' is not poly, cosine, none or plateau\n", next ? next : "");
                return EXIT_USAGE;
            }
            o->given |= G_SCHED;
        }
        else if (!strcmp(a, "--loss")) {
            if (unet_loss_parse(next ? next : "", &o->loss) < 0) {
                fprintf(stderr, "segtrain: --loss: '%s' is not bce+dice, bce or dice\n", next ? next : "");
                return EXIT_USAGE;
            }
            o->given |= G_LOSS;
        }
        else if (!strcmp(a, "--sampling")) {
            if (!next || (strcmp(next, "balanced") && strcmp(next, "uniform"))) {
                fprintf(stderr, "segtrain: --sampling: '%s' is not balanced or uniform\n", next ? next : "");
                return EXIT_USAGE;
            }
            o->balanced = !strcmp(next, "balanced");
            o->given |= G_SAMPLING;
        }
        else if (!strcmp(a, "--fg-fraction")) { if (parse_double(a, next, 0, 1, &o->fg_fraction)) return EXIT_USAGE; o->given |= G_FG; }
        else if (!strcmp(a, "--warmup")) { if (parse_long(a, next, 0, 100000000, &v)) return EXIT_USAGE; o->warmup = (int)v; o->given |= G_WARMUP; }
        else if (!strcmp(a, "--context")) { if (parse_long(a, next, 0, 15, &v)) return EXIT_USAGE; o->context = (int)v; o->given |= G_CONTEXT; }
        else if (!strcmp(a, "--plateau-patience")) { if (parse_long(a, next, 0, 1000000, &v)) return EXIT_USAGE; o->patience = (int)v; o->given |= G_PATIENCE; }
        else if (!strcmp(a, "--plateau-factor")) { if (parse_double(a, next, 1e-6, 0.999999, &o->plateau_factor)) return EXIT_USAGE; o->given |= G_FACTOR; }
        else if (!strcmp(a, "--min-lr")) { if (parse_double(a, next, 0, 10, &o->min_lr)) return EXIT_USAGE; o->given |= G_MINLR; }
        else if (!strcmp(a, "--early-stop")) { if (parse_long(a, next, 0, 1000000, &v)) return EXIT_USAGE; o->early_stop = (int)v; o->given |= G_EARLY; }
        else if (!strcmp(a, "--clip-grad")) { if (parse_double(a, next, 0, 1e12, &o->clip_grad)) return EXIT_USAGE; o->given |= G_CLIP; }
        else if (!strcmp(a, "--limit-slices")) { if (parse_long(a, next, 1, 1L << 40, &v)) return EXIT_USAGE; o->limit_slices = v; o->given |= G_LIMIT; }
        else if (!strcmp(a, "--keep-last")) { if (parse_long(a, next, 0, 1000000, &v)) return EXIT_USAGE; o->keep_last = (int)v; o->given |= G_KEEP; }
        else return cli_unknown(&c);
        if (took) cli_take(&c);
        continue;
    missing:
        return cli_missing(&c, a);
    }
    if (c.failed) return EXIT_USAGE;
    const int forward = *npos >= 1 && !strcmp(pos[0], "forward");
    if (help) { forward ? forward_usage(stdout) : usage(stdout); return EXIT_OK; }
    if (forward) {
        static const char *const forward_opts[] = { "--train-mode", "--threads", "--device", "--amp", NULL };
        if (cli_refuse_unused(&c, "forward", forward_opts)) return EXIT_USAGE;
    } else if (*train_mode) {
        fprintf(stderr, "segtrain: --train-mode belongs to segtrain forward (see segtrain forward --help)\n");
        return EXIT_USAGE;
    }
    return -1;
}

/* ---- a training run ---- */

typedef struct Run {
    TrainOpts    o;
    CacheReader *cache;
    Unet        *m;
    Loader      *tl, *vl;         /* train, val (NULL without val subjects) */
    CkptInfo     info;            /* of the --resume checkpoint */
    RunState     s;
    int          n_subj[3];       /* per CACHE_SPLIT_* */
    int          has_val;
    float       *dice_c;          /* per-structure val Dice of the last validation */
    double       t_run0;          /* when this process's first epoch started, */
    int          epoch0;          /* after how many epochs (for the whole-run ETA) */
    char         state_path[4300];
} Run;

static void close_run(Run *r)
{
    loader_free(r->tl);
    loader_free(r->vl);
    unet_free(r->m);
    cache_close(r->cache);
    ckpt_info_free(&r->info);
    free(r->s.prior);
    free(r->dice_c);
    history_free(&r->s.hist);
}

/* The --resume checkpoint must fit the cache; it fixes the model config (and, unless given,
 * the HU window). */
static int check_resume(Run *r)
{
    TrainOpts *o = &r->o;
    char why[256];
    int rc = ckpt_read_info(o->resume, &r->info);
    if (rc < 0) return seg_err(rc, "--resume: %s", seg_errmsg());
    if (!labels_equal(&r->info.labels, cache_labels(r->cache), why, sizeof why))
        return seg_err(SEG_EMISMATCH, "--resume: %s does not match the cache %s: labels differ (%s)", o->resume, o->cache, why);
    int size = cache_size(r->cache);
    if (r->info.size != size)
        return seg_err(SEG_EMISMATCH, "--resume: %s was trained on %dx%d slices, the cache %s has %dx%d", o->resume,
                       r->info.size, r->info.size, o->cache, size, size);
    int same = r->info.cfg.n_levels == o->n_levels;
    for (int i = 0; same && i < o->n_levels; i++) same = r->info.cfg.features[i] == o->features[i];
    if ((o->given & G_FEATURES) && !same)
        return seg_err(SEG_EMISMATCH, "--resume: --features differs from the model in %s", o->resume);
    o->n_levels = r->info.cfg.n_levels;
    memcpy(o->features, r->info.cfg.features, sizeof o->features);
    const int in_ch = r->info.cfg.in_ch;
    if (in_ch < 1 || in_ch % 2 == 0)
        return seg_err(SEG_EFORMAT, "--resume: %s has %d input channels (not 2K+1 slices of context)", o->resume, in_ch);
    if ((o->given & G_CONTEXT) && o->context != (in_ch - 1) / 2)
        return seg_err(SEG_EMISMATCH, "--resume: --context %d differs from the model in %s (context %d)", o->context, o->resume,
                       (in_ch - 1) / 2);
    o->context = (in_ch - 1) / 2;
    if (!(o->given & G_HU)) { o->hu_lo = r->info.hu_lo; o->hu_hi = r->info.hu_hi; }
    TRY(ckpt_state_path(o->resume, r->state_path, sizeof r->state_path));
    if (!fs_is_file(r->state_path))
        return seg_err(SEG_EIO, "--resume: %s: no training state beside it (%s); resuming needs both files", o->resume,
                       r->state_path);
    /* the saved options size the model and the loaders: read them before creating those */
    char *txt = NULL;
    rc = ckpt_read_state_json(r->state_path, r->info.id, &txt);
    if (rc == SEG_OK) rc = state_from_json(txt, r->state_path, o, &r->s);
    free(txt);
    if (rc < 0) return seg_err(rc, "--resume: %s", seg_errmsg());
    if (r->s.epoch != r->info.epoch)
        return seg_err(SEG_EMISMATCH, "--resume: %s is for epoch %d, its weights for epoch %d", r->state_path, r->s.epoch,
                       r->info.epoch);
    if (o->given & G_LR) r->s.lr = o->lr;   /* the plateau schedule's current rate starts again from it */
    return SEG_OK;
}

/* Count each channel's foreground fraction in the train split (prior.h) into the run state:
 * the head bias starts at its log prior, so the first steps are not spent pushing every
 * channel's output down. */
#define PRIOR_MAX_SLICES 4096
static int count_head_prior(Run *r)
{
    const int C = cache_n_channels(r->cache);
    int64_t used = 0;
    double t0 = util_now_s();
    free(r->s.prior);
    r->s.n_prior = 0;
    if (!(r->s.prior = malloc(sizeof(double) * (size_t)C))) return seg_err(SEG_ENOMEM, "head prior");
    int rc = prior_foreground(r->cache, CACHE_SPLIT_TRAIN, PRIOR_MAX_SLICES, r->s.prior, &used);
    if (rc < 0)
        return strstr(seg_errmsg(), r->o.cache) ? seg_err(rc, "counting the train split's structures: %s", seg_errmsg())
                                                : seg_err(rc, "%s: counting the train split's structures: %s", r->o.cache, seg_errmsg());
    r->s.n_prior = C;
    int present = 0;
    for (int c = 0; c < C; c++) present += r->s.prior[c] > 0;
    LOG(3, "segtrain: head bias at the log prior of each structure (%d of %d present in %lld train slices, %.2f s)\n", present,
        C, (long long)used, util_now_s() - t0);
    return SEG_OK;
}

/* Cache, resume checks, run directory, model and loaders; logs what it is about to do. */
static int open_run(Run *r)
{
    TrainOpts *o = &r->o;
    char path[4200];
    TRY(unet_device_resolve(&o->dev, o->dev_desc, sizeof o->dev_desc));   /* before anything is written */
    TRY(cache_open(o->cache, &r->cache));
    const int size = cache_size(r->cache), C = cache_n_channels(r->cache);
    if (o->resume) TRY(check_resume(r));
    int q = 1 << o->n_levels;
    if (size % q)
        return seg_err(SEG_EARG, "%s: slice size %d does not divide by 2^%d = %d (the U-Net pools %d times); rebuild the cache "
                       "with segprep --size %d or %d, or use fewer --features levels", o->cache, size, o->n_levels, q, o->n_levels,
                       size / q * q > 0 ? size / q * q : q, (size / q + 1) * q);
    for (int i = 0; i < cache_n_subjects(r->cache); i++) {
        int sp = cache_subject(r->cache, i)->split;
        if (sp >= 0 && sp < 3) r->n_subj[sp]++;
    }
    if (!r->n_subj[CACHE_SPLIT_TRAIN])
        return seg_err(SEG_EARG, "%s has no training subjects (%d val, %d test); give segprep a --split file that puts "
                       "subjects in train", o->cache, r->n_subj[CACHE_SPLIT_VAL], r->n_subj[CACHE_SPLIT_TEST]);
    /* the model first: when it does not fit (GPU memory), the run directory is untouched */
    UnetConfig cfg;
    unet_default_config(&cfg, C);
    cfg.in_ch = 2 * o->context + 1;
    cfg.n_levels = o->n_levels;
    memcpy(cfg.features, o->features, sizeof cfg.features);
    TRY(unet_create_on(&cfg, o->batch_size, size, size, o->threads, &o->dev, &r->m));
    TRY(unet_set_loss(r->m, o->loss));
    if (!o->resume) TRY(count_head_prior(r));   /* before the run directory is touched: a bad record stops here */
    int rc = prepare_out(o->out, o->force, o->resume != NULL);
    if (rc < 0) return seg_err(rc, "--out: %s", seg_errmsg());
    TRY(fs_join(path, sizeof path, o->out, "label_map.json"));
    TRY(labels_write_json(path, cache_labels(r->cache)));
    if (o->resume) {
        if ((rc = ckpt_load_model(o->resume, r->m)) < 0 || (rc = ckpt_load_state(r->state_path, r->m, r->info.id)) < 0)
            return seg_err(rc, "--resume: %s", seg_errmsg());
    } else {
        unet_init(r->m, o->seed);
        TRY(prior_init_head_bias(r->m, r->s.prior, r->s.n_prior));
    }

    LoaderOptions lo;
    loader_default_options(&lo);
    lo.batch_size = o->batch_size;
    lo.threads = o->loader_threads;
    lo.prefetch = o->loader_threads + 2;
    lo.hu_lo = o->hu_lo;
    lo.hu_hi = o->hu_hi;
    lo.seed = o->seed;
    lo.shuffle = 1;
    lo.aug = o->aug;
    lo.context = o->context;
    lo.balanced = o->balanced;
    lo.fg_fraction = (float)o->fg_fraction;
    TRY(loader_create(r->cache, CACHE_SPLIT_TRAIN, o->limit_slices, &lo, &r->tl));
    lo.shuffle = lo.aug = lo.balanced = 0;
    lo.threads = 1;
    lo.prefetch = 2;
    if (r->n_subj[CACHE_SPLIT_VAL]) TRY(loader_create(r->cache, CACHE_SPLIT_VAL, o->limit_slices, &lo, &r->vl));
    r->has_val = r->vl && loader_n_samples(r->vl) > 0;
    if (!(r->dice_c = malloc(sizeof(float) * (size_t)C))) return seg_err(SEG_ENOMEM, "per-structure Dice");
    strcpy(r->s.hist.monitor, r->has_val ? "val_dice" : "train_loss");
    snprintf(r->s.hist.loss, sizeof r->s.hist.loss, "%s", unet_loss_name(o->loss));
    if (!r->s.hist.n_ch) {   /* a resumed run keeps the structures its history already names */
        const LabelList *l = cache_labels(r->cache);
        TRY(history_set_structures(&r->s.hist, (const char *const *)l->names, l->n));
    }

    char fs[64] = "";
    for (int i = 0, k = 0; i < o->n_levels; i++) k += snprintf(fs + k, sizeof fs - (size_t)k, "%s%d", i ? "," : "", o->features[i]);
    LOG(2, "segtrain: %s: %d train / %d val / %d test subjects, %lld train slices%s, %dx%d, %d structures\n", o->cache,
        r->n_subj[0], r->n_subj[1], r->n_subj[2], (long long)loader_n_samples(r->tl), o->limit_slices ? " (--limit-slices)" : "",
        size, size, C);
    LOG(2, "segtrain: U-Net %s (%zu parameters, %.2f GFLOP per slice), batch %d, lr %g %s%s, %s loss, %s batches, %s, "
           "seed %llu\n", fs, unet_n_params(r->m), unet_flops_per_sample(r->m) * 1e-9, o->batch_size,
        o->sched == SCHED_PLATEAU ? r->s.lr : o->lr, sched_name(o->sched), o->warmup ? " with warmup" : "",
        unet_loss_name(o->loss), o->balanced ? "balanced" : "uniform", o->aug ? "augmentation on" : "no augmentation",
        (unsigned long long)o->seed);
    if (o->context) LOG(2, "segtrain: 2.5D input: %d slices (%d on each side) per sample\n", 2 * o->context + 1, o->context);
    if (o->balanced)
        LOG(3, "segtrain: balanced sampling: %.0f%% of every batch drawn foreground-first over the %d structures present in "
               "train\n", 100.0 * o->fg_fraction, loader_n_fg_structures(r->tl));
    if (o->dev.kind == UNET_CUDA)
        LOG(2, "segtrain: device %s, %.1f MiB of GPU memory\n", o->dev_desc, unet_device_memory_bytes(r->m) / 1048576.0);
    else
        LOG(2, "segtrain: device %s\n", o->dev_desc);
    if (o->dev.kind != UNET_CUDA) LOG(3, "segtrain: CPU kernels %s (SEGKIT_CPU=avx512|avx2|generic forces one)\n", unet_cpu_kernels());
    LOG(3, "segtrain: model buffers %.1f MiB; loader: %d decode thread(s), %d batch slots; %d compute thread(s)%s\n",
        unet_memory_bytes(r->m) / 1048576.0, o->loader_threads, o->loader_threads + 2,
        o->threads, o->threads ? "" : " (0 = all cores)");
    if (o->resume) LOG(2, "segtrain: resuming from %s after epoch %d\n", o->resume, r->s.epoch);
    if (!r->has_val)
        LOG(2, "segtrain: note: the cache has no validation subjects: training without validation "
               "(best.safetensors follows the training loss)\n");
    return SEG_OK;
}

/* The whole run's remaining time as "h:mm:ss" / "mm:ss": the remaining epochs at the mean
 * epoch time of this process so far (validation included), plus the rest of the current
 * epoch at its own rate; before any epoch has ended, the current epoch's rate stands for all. */
static void run_eta(const Run *r, int epoch, int64_t seen, int64_t n_epoch, double t_epoch0, char *buf, size_t n)
{
    const double now = util_now_s(), el = now - t_epoch0, frac = n_epoch > 0 ? (double)seen / (double)n_epoch : 0;
    const int done = epoch - 1 - r->epoch0, left = r->o.epochs - epoch;
    double per_epoch = done > 0 ? (t_epoch0 - r->t_run0) / done : (frac > 0 ? el / frac : -1);
    double rest = frac > 0 ? el / frac - el : per_epoch;
    if (per_epoch < 0 || rest < 0) { snprintf(buf, n, "--:--"); return; }
    long t = (long)(rest + left * per_epoch + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

/* One pass over the training split; fills train_loss and slices_per_s. Stops early (rc 0)
 * on a signal. */
static int train_epoch(Run *r, int epoch, HistoryEpoch *he)
{
    const int tty = r->o.progress >= 0 ? r->o.progress : isatty(fileno(stderr));
    char label[64], extra[96];
    snprintf(label, sizeof label, "epoch %d/%d", epoch, r->o.epochs);
    Progress pr;
    progress_start(&pr, label, "slices", loader_n_samples(r->tl), g_verbosity >= 2 && r->o.progress != 0, tty);
    const int64_t n_epoch = loader_n_samples(r->tl);
    double t0 = util_now_s(), sum = 0;
    int64_t seen = 0, skipped = 0;                   /* skipped: fp16 steps whose gradients overflowed */
    LoaderBatch b;
    const int64_t steps = (int64_t)loader_n_batches(r->tl), total = steps * r->o.epochs;
    const int per_step = r->o.sched == SCHED_POLY || r->o.sched == SCHED_COSINE;
    double lr = r->s.lr;
    int rc = loader_start_epoch(r->tl, epoch);
    while (rc >= 0 && !g_stop && (rc = loader_next(r->tl, &b)) == 1) {
        lr = sched_lr(r->o.sched, per_step ? r->o.lr : r->s.lr, (epoch - 1) * steps + b.index, total, r->o.warmup);
        if (b.index == 0) he->lr = lr;
        if ((rc = unet_forward(r->m, b.img, b.n, 1)) < 0) break;
        float loss;
        if ((rc = unet_loss_masked(r->m, b.bits, b.presence, b.labelled, b.n, &loss)) < 0) break;
        if (!isfinite(loss)) {
            rc = seg_err(SEG_EARG, "the loss became %g at epoch %d, batch %d: lower --lr or use --clip-grad", loss, epoch, b.index);
            break;
        }
        if ((rc = unet_backward(r->m)) < 0) break;
        if (r->o.clip_grad > 0) unet_clip_grad(r->m, (float)r->o.clip_grad);
        if ((rc = unet_adam_step(r->m, (float)lr, 0.9f, 0.999f, 1e-8f)) < 0) break;
        skipped += rc == 1;
        sum += (double)loss * b.n;
        seen += b.n;
        char eta[32];
        run_eta(r, epoch, seen, n_epoch, t0, eta, sizeof eta);
        snprintf(extra, sizeof extra, "loss %.4f  run ETA %s", sum / seen, eta);
        progress_update(&pr, seen, extra);
    }
    double el = util_now_s() - t0;
    if (rc < 0 && !strstr(seg_errmsg(), r->o.cache)) rc = seg_err(rc, "%s: %s", r->o.cache, seg_errmsg());
    if (rc < 0 || g_stop) {
        if (pr.drawn && pr.tty) fputc('\n', stderr);
        return rc < 0 ? rc : SEG_OK;
    }
    if (pr.tty) progress_finish(&pr, seen ? extra : NULL);   /* plain lines: the epoch line says it */
    if (r->o.dev.kind == UNET_CUDA && seen) {        /* is the GPU kept busy (loader, host work)? */
        double busy, wall;
        int ns;
        if (unet_gpu_step_times(r->m, &busy, &wall, &ns) == SEG_OK && ns > 1 && wall > 0)
            LOG(3, "segtrain: GPU busy %.1f%% of the last %d steps (idle %.2f ms per step)\n", 100.0 * busy / wall, ns,
                1e3 * (wall - busy) / (ns - 1));
    }
    if (skipped)
        LOG(2, "segtrain: fp16: %lld step(s) of this epoch skipped for gradient overflow (the loss scale adapts)\n",
            (long long)skipped);
    he->train_loss = seen ? sum / seen : NAN;
    he->slices_per_s = el > 0 ? seen / el : 0;
    return SEG_OK;
}

#define ZERO_DICE_WARN 3

/* Validation, best/plateau/early-stop bookkeeping, checkpoint, history files, log line. */
static int finish_epoch(Run *r, HistoryEpoch *he, double t0, int *stop)
{
    TrainOpts *o = &r->o;
    RunState *s = &r->s;
    char path[4200], name[64];
    int validated = 0;
    if (r->has_val && (he->epoch % o->val_every == 0 || he->epoch == o->epochs)) {
        ValResult vr = { NAN, NAN, 0, r->dice_c };
        int rc = validate(r->m, r->vl, cache_n_channels(r->cache), &vr);
        if (rc < 0) return seg_err(rc, "validation: %s", seg_errmsg());
        if (g_stop) return SEG_OK;
        he->val_loss = vr.loss;
        he->val_dice = vr.dice;
        he->val_structures = vr.n_present;
        he->val_dice_c = r->dice_c;
        validated = 1;
    }
    he->seconds = util_now_s() - t0;
    s->epoch = he->epoch;
    /* the monitored value: val Dice when validated this epoch, else (no val split) train loss.
     * Equal Dice (all zero early on, or no structure in val at all) is decided by the val loss. */
    int improved = 0, lr_cut = 0;
    if (r->has_val ? validated && isfinite(he->val_loss) : isfinite(he->train_loss)) {
        if (r->has_val) {
            const double d = isfinite(he->val_dice) ? he->val_dice : -1, bd = isfinite(s->best) ? s->best : -1;
            improved = !s->best_epoch || d > bd || (d == bd && he->val_loss < s->best_loss);
            if (improved) { s->best = he->val_dice; s->best_loss = he->val_loss; }
        } else {
            improved = !s->best_epoch || he->train_loss < s->best;
            if (improved) s->best = he->train_loss;
        }
        if (improved) { s->best_epoch = he->epoch; s->bad = 0; s->plateau_bad = 0; }
        else { s->bad++; s->plateau_bad++; }
        if (o->sched == SCHED_PLATEAU && s->plateau_bad > o->patience && s->lr > o->min_lr) {
            s->lr = fmax(s->lr * o->plateau_factor, o->min_lr);
            s->plateau_bad = 0;
            lr_cut = 1;
        }
    }
    if (validated && he->val_structures > 0) {
        s->zero_dice = he->val_dice > 0 ? 0 : s->zero_dice + 1;
        if (s->zero_dice == ZERO_DICE_WARN)
            LOG(1, "segtrain: warning: validation Dice has been 0 for %d validations in a row: the model predicts no "
                   "structure yet. Train longer, or try a higher --lr, --loss bce+dice, --sampling balanced (the defaults "
                   "do all three)\n", ZERO_DICE_WARN);
    }
    s->hist.best_epoch = s->best_epoch;
    TRY(history_add(&s->hist, he));
    snprintf(name, sizeof name, "checkpoint_epoch%d.safetensors", he->epoch);
    if (improved) TRY(save_run_ckpt(o->out, "best.safetensors", o, NULL, he->epoch, r->m, r->cache));
    TRY(save_run_ckpt(o->out, name, o, s, he->epoch, r->m, r->cache));
    if (o->keep_last > 0 && he->epoch - o->keep_last >= 1) remove_old_checkpoint(o->out, he->epoch - o->keep_last);
    TRY(fs_join(path, sizeof path, o->out, "training_history.json"));
    TRY(history_write_json(&s->hist, path));
    TRY(fs_join(path, sizeof path, o->out, "training_history.png"));
    TRY(history_plot(&s->hist, o->out, path));
    if (g_verbosity >= 2) {
        char val[128] = "", eta[48] = "";
        if (he->epoch < o->epochs) {
            char t[32];
            run_eta(r, he->epoch + 1, 0, 0, util_now_s(), t, sizeof t);
            snprintf(eta, sizeof eta, "  run ETA %s", t);
        }
        if (isfinite(he->val_loss))
            snprintf(val, sizeof val, "  val loss %.5f  val Dice %.4f (%d structures)", he->val_loss, he->val_dice, he->val_structures);
        fprintf(stderr, "epoch %d/%d  train loss %.5f%s  lr %.3g  %.1f s  %.2f slices/s%s%s%s\n", he->epoch, o->epochs,
                he->train_loss, val, he->lr, he->seconds, he->slices_per_s, improved ? "  *best" : "", lr_cut ? "  (lr reduced)" : "",
                eta);
    }
    if (o->early_stop > 0 && s->bad >= o->early_stop) {
        LOG(2, "segtrain: early stop: no improvement of %s in %d %s (best %.5g at epoch %d)\n", s->hist.monitor, s->bad,
            r->has_val ? "validations" : "epochs", s->best, s->best_epoch);
        *stop = 1;
    }
    return SEG_OK;
}

/* --resume ARG: a checkpoint file as given, or for a folder its newest checkpoint_epochN.safetensors
 * that has its .state file beside it. SEG_EARG when there is none. */
static int resolve_resume(const char *arg, char *out, size_t n)
{
    struct stat st;
    if (stat(arg, &st) < 0) return seg_err(SEG_EIO, "%s: %s", arg, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if ((size_t)snprintf(out, n, "%s", arg) >= n) return seg_err(SEG_EARG, "%s: path too long", arg);
        return SEG_OK;
    }
    DIR *d = opendir(arg);
    if (!d) return seg_err(SEG_EIO, "%s: %s", arg, strerror(errno));
    int best = -1, n_without_state = 0;
    char path[4300], state[4400];
    struct dirent *e;
    while ((e = readdir(d))) {
        int ep, len = 0;
        if (sscanf(e->d_name, "checkpoint_epoch%d.safetensors%n", &ep, &len) != 1 || e->d_name[len] || ep < 1) continue;
        snprintf(path, sizeof path, "%s/%s", arg, e->d_name);
        if (ckpt_state_path(path, state, sizeof state) < 0 || access(state, R_OK) < 0) { n_without_state++; continue; }
        if (ep > best) best = ep;
    }
    closedir(d);
    if (best < 0)
        return seg_err(SEG_EARG, "%s holds no checkpoint_epochN.safetensors with its .state file%s", arg,
                       n_without_state ? " (checkpoints without their state cannot be resumed)" : "");
    if ((size_t)snprintf(out, n, "%s/checkpoint_epoch%d.safetensors", arg, best) >= n)
        return seg_err(SEG_EARG, "%s: path too long", arg);
    return SEG_OK;
}

int main(int argc, char **argv)
{
    Run r;
    memset(&r, 0, sizeof r);
    default_opts(&r.o);
    TrainOpts *o = &r.o;
    const char *pos[4];
    int npos = 0, train_mode = 0;
    int code = parse_args(argc, argv, o, pos, &npos, &train_mode);
    if (code >= 0) return code;
    if (npos >= 1 && !strcmp(pos[0], "forward")) {
        if (npos != 4) { fprintf(stderr, "segtrain: usage: segtrain forward CHECKPOINT IN.safetensors OUT.safetensors\n"); return EXIT_USAGE; }
        return cmd_forward(pos[1], pos[2], pos[3], train_mode, o->threads, o->dev);
    }
    if (npos != 1) {
        if (npos == 0) usage(stderr);
        else fprintf(stderr, "segtrain: expected one CACHE_DIR (see segtrain --help)\n");
        return EXIT_USAGE;
    }
    o->cache = pos[0];
    char outbuf[4200], resume_buf[4300];
    if (o->resume && resolve_resume(o->resume, resume_buf, sizeof resume_buf) < 0) {
        fprintf(stderr, "segtrain: --resume: %s\n", seg_errmsg());
        return EXIT_USAGE;
    }
    if (o->resume) o->resume = resume_buf;
    if (!o->out && o->resume) {   /* default: continue in the checkpoint's directory */
        snprintf(outbuf, sizeof outbuf, "%s", o->resume);
        char *slash = strrchr(outbuf, '/');
        if (slash) *slash = 0;
        else strcpy(outbuf, ".");
        o->out = outbuf;
    }
    if (!o->out) { fprintf(stderr, "segtrain: --out RUN_DIR is required (see segtrain --help)\n"); return EXIT_USAGE; }

    double t_start = util_now_s();
    r.s.lr = o->lr;
    r.s.best = NAN;
    r.s.best_loss = NAN;
    history_init(&r.s.hist);
    int rc = open_run(&r), stop = 0;
    if (rc == SEG_OK && r.s.epoch >= o->epochs) {
        LOG(2, "segtrain: %s already has %d epochs (--epochs %d): nothing to do\n", o->resume, r.s.epoch, o->epochs);
        close_run(&r);
        return EXIT_OK;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    r.t_run0 = util_now_s();
    r.epoch0 = r.s.epoch;
    for (int epoch = r.s.epoch + 1; rc == SEG_OK && !stop && epoch <= o->epochs; epoch++) {
        double t0 = util_now_s();
        HistoryEpoch he = { .epoch = epoch, .val_loss = NAN, .val_dice = NAN, .lr = r.s.lr };
        rc = train_epoch(&r, epoch, &he);
        if (rc == SEG_OK && !g_stop) rc = finish_epoch(&r, &he, t0, &stop);
        if (g_stop) break;
    }
    if (rc < 0) code = fail(rc);
    else if (g_stop) {
        if (r.s.epoch > 0)
            LOG(1, "segtrain: interrupted during epoch %d; resume with: segtrain %s --resume %s   (from epoch %d)\n",
                r.s.epoch + 1, o->cache, o->out, r.s.epoch);
        else
            LOG(1, "segtrain: interrupted during epoch 1; no checkpoint was written yet\n");
        code = EXIT_INTERRUPTED;
    } else {
        if (r.s.best_epoch > 0 && r.has_val && !isfinite(r.s.best))
            LOG(2, "segtrain: done: %d epochs in %.1f s; no structure is present in the validation slices, so the best "
                   "epoch is %d by validation loss (%.5g) -> %s/best.safetensors\n", r.s.epoch, util_now_s() - t_start,
                r.s.best_epoch, r.s.best_loss, o->out);
        else if (r.s.best_epoch > 0)
            LOG(2, "segtrain: done: %d epochs in %.1f s; best %s %.5g at epoch %d -> %s/best.safetensors\n", r.s.epoch,
                util_now_s() - t_start, r.s.hist.monitor, r.s.best, r.s.best_epoch, o->out);
        else   /* a val split whose masks are all empty has no Dice to rank epochs by */
            LOG(2, "segtrain: done: %d epochs in %.1f s; no best.safetensors: %s was never defined (no structure present "
                   "in the validation slices?)\n", r.s.epoch, util_now_s() - t_start, r.s.hist.monitor);
        code = EXIT_OK;
    }
    close_run(&r);
    return code;
}
