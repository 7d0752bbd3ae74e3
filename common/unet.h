/* common/unet.h : the 2D U-Net (the model segtrain trains and segeval runs).
 * Layout is PyTorch's tools/unet_ref.py: DoubleConv = (conv3x3 pad 1, no bias -> BN -> ReLU) x2,
 * encoder features f[0..L-1] with MaxPool 2x2, bottleneck 2*f[L-1], decoder
 * ConvTranspose 2x2 s2 (bias) -> concat(skip, up) -> DoubleConv, head conv1x1 (bias) to C.
 * All trainable parameters live in one float block (PyTorch state_dict order); grads and
 * the Adam moments have the same layout. Activations and scratch are allocated once in
 * unet_create for max_batch x H x W and reused by every step. */
#ifndef SEG_UNET_H
#define SEG_UNET_H
#include <stddef.h>
#include <stdint.h>

#define UNET_MAX_LEVELS 6

typedef struct UnetConfig {
    int in_ch;                         /* input channels (1) */
    int n_classes;                     /* output channels C (the cache's label count) */
    int n_levels;                      /* encoder levels L (4) */
    int features[UNET_MAX_LEVELS];     /* 32,64,128,256; bottleneck is 2*features[L-1] */
} UnetConfig;

/* One named tensor of the state dict: a view into the parameter block or the BN buffers. */
typedef struct UnetTensor {
    const char *name;      /* PyTorch state_dict key, e.g. "downs.0.net.1.running_mean" */
    int         ndim;
    int64_t     shape[4];
    size_t      count;     /* elements */
    float      *data;      /* view; num_batches_tracked is stored as a float count */
    int         trainable; /* 1: lives in the param block (has grad and Adam moments) */
    size_t      offset;    /* offset in the param block when trainable */
} UnetTensor;

typedef struct Unet Unet;

/* Where a model runs. kind UNET_CPU (common/nn, threads) or UNET_CUDA
 * (cuDNN/cuBLAS, common/gpu; needs a build with the CUDA toolkit); amp: UNET_AMP_* (GPU only). */
enum { UNET_CPU = 0, UNET_CUDA = 1, UNET_AUTO = 2 };
enum { UNET_AMP_OFF = 0, UNET_AMP_BF16 = 1, UNET_AMP_FP16 = 2, UNET_AMP_TF32 = 3 };
typedef struct UnetDevice {
    int kind;      /* UNET_CPU, UNET_CUDA, or UNET_AUTO before unet_device_resolve */
    int index;     /* CUDA device number */
    int amp;       /* UNET_AMP_* */
} UnetDevice;

/* Parse "auto", "cpu", "cuda" or "cuda:N" (SEG_EARG with the reason otherwise). */
int  unet_device_parse(const char *s, UnetDevice *d);
/* Parse "off", "bf16", "fp16" or "tf32" (fp32 tensors, TF32 tensor-core convolutions) into d->amp. */
int  unet_amp_parse(const char *s, UnetDevice *d);
/* Turn UNET_AUTO into cuda:0 when a usable GPU is there, else the CPU; check that a CUDA
 * request can be met (SEG_EGPU saying why not: no CUDA in this build, no driver, no device).
 * On the CPU d->amp becomes UNET_AMP_OFF. desc (may be NULL) gets what was chosen, for the
 * log: "cpu (no GPU: why)", "cuda:0 NVIDIA H100 ..., bf16", and a note when --amp was dropped. */
int  unet_device_resolve(UnetDevice *d, char *desc, size_t cap);
/* "fp32", "bf16", "fp16" or "tf32" for a UNET_AMP_* value. */
const char *unet_amp_name(int amp);
/* 1 when this build has the CUDA backend. */
int  unet_have_cuda(void);

/* The CPU kernel path the CPU backend runs ("avx512", "avx2" or "generic": cpuid's best, or the
 * one SEGKIT_CPU forces; docs/cpu.md). */
const char *unet_cpu_kernels(void);

/* Fill cfg with the default (1 -> 32,64,128,256 -> n_classes). */
void unet_default_config(UnetConfig *cfg, int n_classes);
/* Allocate a model and every buffer for batches up to max_batch at H x W (H, W divisible
 * by 2^L, else SEG_EARG). threads: compute threads (0 = all cores). Caller frees. */
int  unet_create(const UnetConfig *cfg, int max_batch, int H, int W, int threads, Unet **out);
/* The same on a device (NULL = CPU). On a GPU the host keeps only the state dict (params,
 * BN buffers, grads, Adam moments), plus a logits buffer once unet_logits is called; the
 * rest lives on the device. */
int  unet_create_on(const UnetConfig *cfg, int max_batch, int H, int W, int threads,
                    const UnetDevice *dev, Unet **out);
void unet_free(Unet *m);                               /* NULL-safe */
/* The state on the host views (unet_tensor, unet_params, grads, Adam) is the truth for
 * checkpoints. On a GPU: unet_sync_host copies the device state into them (waits);
 * unet_sync_device sends them to the device after the caller wrote them (ckpt loading).
 * unet_init marks them for upload at the next forward. Both are no-ops on the CPU. */
int  unet_sync_host(const Unet *m);
int  unet_sync_device(Unet *m);
/* Device memory the model holds (0 on the CPU). */
size_t unet_device_memory_bytes(const Unet *m);
/* GPU timing of the training steps since the last call (at most the last 512): busy = the
 * device's time on their work, wall = from the first one's start to the last one's end on
 * the device, steps = how many; waits for the device. SEG_EARG on the CPU. */
int  unet_gpu_step_times(Unet *m, double *busy_s, double *wall_s, int *steps);
/* Wait until the device has finished the queued work (no-op on the CPU). */
int  unet_wait(Unet *m);
const UnetConfig *unet_config(const Unet *m);
/* PyTorch default init (kaiming_uniform a=sqrt(5) weights, uniform bias, BN 1/0),
 * deterministic for a seed; zeroes Adam state and the step count. */
void unet_init(Unet *m, uint64_t seed);

/* The state dict: tensors in PyTorch order (params and BN buffers interleaved as PyTorch does). */
int                unet_n_tensors(const Unet *m);
const UnetTensor  *unet_tensor(const Unet *m, int i);
size_t unet_n_params(const Unet *m);                   /* trainable floats */
float *unet_params(Unet *m);                           /* the block; grads/m/v have its layout */
float *unet_grads(Unet *m);
float *unet_adam_m(Unet *m);
float *unet_adam_v(Unet *m);
int64_t *unet_adam_step_count(Unet *m);                /* Adam t, saved in checkpoints */

/* Forward x:(N,in_ch,H,W) with N <= max_batch. train=1: BN uses batch statistics and
 * updates running stats (momentum 0.1, unbiased var); train=0: running stats.
 * Logits (N,C,H,W) stay in the model until the next forward. */
int          unet_forward(Unet *m, const float *x, int N, int train);
/* On a GPU the first call after a forward copies them to the host (NULL on failure, with
 * the reason in seg_errmsg()). */
const float *unet_logits(const Unet *m);

/* Packed targets: for sample n and channel c, bits + (n*C + c)*(H*W/8) is the bit plane
 * (pixel p = y*W + x is bit p&7 of byte p>>3, LSB first); presence + n*((C+7)/8) has bit c
 * set when plane c is non-empty (absent planes may hold garbage and are treated as 0).
 *
 * The training loss (docs/loss.md): L_bce = BCE-with-logits, mean over N*C*H*W; L_dice =
 * 1 - mean over the channels with any target pixel in the batch of the soft Dice
 * (2*sum(p*y) + 1e-5) / (sum p + sum y + 1e-5), p = sigmoid(logit), sums over the whole batch
 * (0 when no channel has a target). UNET_LOSS_BCE: L_bce, UNET_LOSS_DICE: L_dice,
 * UNET_LOSS_BCE_DICE: L_bce + L_dice. */
enum { UNET_LOSS_BCE = 0, UNET_LOSS_DICE = 1, UNET_LOSS_BCE_DICE = 2 };
/* "bce", "dice", "bce+dice" <-> UNET_LOSS_*; parse returns SEG_EARG with the reason in seg_errmsg(). */
int         unet_loss_parse(const char *s, int *kind);
const char *unet_loss_name(int kind);                  /* "?" for an unknown kind */
/* Choose what unet_loss computes and unet_backward differentiates (a fresh model: UNET_LOSS_BCE).
 * SEG_EARG for an unknown kind. A loss computed before the change no longer feeds a backward. */
int         unet_set_loss(Unet *m, int kind);
/* The two parts of the last unet_loss: BCE mean and soft-Dice term (NaN when not computed:
 * the Dice term under UNET_LOSS_BCE, both before the first loss). */
void        unet_loss_parts(const Unet *m, double *bce, double *dice);

/* The chosen loss over the last forward (N = its batch, else SEG_EARG): SEG_OK and *loss, or
 * < 0 (bad batch, GPU failure). Keeps a copy of the targets: unet_backward forms d loss/d
 * logits from them tile by tile (never stored as a float tensor), so the caller may reuse its
 * buffers. Per-plane sums are combined in a fixed order: the same logits give the same loss
 * whatever the thread count. */
int   unet_loss(Unet *m, const uint8_t *bits, const uint8_t *presence, int N, float *loss);
/* unet_loss for partly labelled samples: labelled + n*((C+7)/8) has bit c set when channel c
 * of sample n is labelled (NULL: all are, = unet_loss bit for bit). An unlabelled plane is
 * unknown, not negative: no BCE term (the mean divides by the labelled elements), nothing in
 * the Dice sums of its channel, zero gradient from the following unet_backward (docs/loss.md). */
int   unet_loss_masked(Unet *m, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N,
                       float *loss);
/* unet_loss returning the loss, or NaN on failure (reason in seg_errmsg()). The name is older
 * than the Dice term: it computes whichever loss unet_set_loss chose (BCE by default). */
float unet_loss_bce(Unet *m, const uint8_t *bits, const uint8_t *presence, int N);
/* Backward of the last forward(train=1) + loss: overwrites the grads (on a GPU the device
 * grads; unet_sync_host brings them to unet_grads). */
int   unet_backward(Unet *m);
/* Scale grads so their global L2 norm is at most max_norm (<= 0: no-op); returns the norm
 * (NaN on a GPU failure, which the next unet_adam_step then reports). */
float unet_clip_grad(Unet *m, float max_norm);
/* One Adam step on the whole block (PyTorch Adam, no weight decay): t += 1. With fp16 AMP a
 * step whose gradients overflowed is skipped (t unchanged; returns 1). < 0: GPU error. */
int   unet_adam_step(Unet *m, float lr, float beta1, float beta2, float eps);

/* Per-channel counts over the last forward at threshold logit > 0 (prob > 0.5), added
 * into tp/fp/fn[C] (caller zeroes). Same target layout as unet_loss. */
int   unet_dice_counts(const Unet *m, const uint8_t *bits, const uint8_t *presence, int N,
                       int64_t *tp, int64_t *fp, int64_t *fn);
/* unet_dice_counts skipping the planes not set in labelled (layout as unet_loss_masked; NULL: all). */
int   unet_dice_counts_masked(const Unet *m, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
                              int N, int64_t *tp, int64_t *fp, int64_t *fn);

/* Forward FLOPs per H x W sample (2 x MACs of convs and transposed convs). */
double unet_flops_per_sample(const Unet *m);

/* Bytes of the model's buffer arena (parameters, Adam state, activations, gradients),
 * all mapped and touched by unet_create. */
size_t unet_memory_bytes(const Unet *m);
/* Per-phase wall-clock accounting (bench_unet --profile): enable (and reset) or disable;
 * unet_profile fills up to max (name, seconds) pairs summed since enabling; returns the count. */
void   unet_profile_enable(Unet *m, int on);
int    unet_profile(const Unet *m, const char **names, double *seconds, int max);

#endif
