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

/* Fill cfg with the default (1 -> 32,64,128,256 -> n_classes). */
void unet_default_config(UnetConfig *cfg, int n_classes);
/* Allocate a model and every buffer for batches up to max_batch at H x W (H, W divisible
 * by 2^L, else SEG_EARG). threads: compute threads (0 = all cores). Caller frees. */
int  unet_create(const UnetConfig *cfg, int max_batch, int H, int W, int threads, Unet **out);
void unet_free(Unet *m);                               /* NULL-safe */
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
const float *unet_logits(const Unet *m);

/* Packed targets: for sample n and channel c, bits + (n*C + c)*(H*W/8) is the bit plane
 * (pixel p = y*W + x is bit p&7 of byte p>>3, LSB first); presence + n*((C+7)/8) has bit c
 * set when plane c is non-empty (absent planes may hold garbage and are treated as 0).
 * BCE-with-logits, mean over N*C*H*W (N = the last forward's batch, else NaN and SEG_EARG in
 * seg_errmsg). Keeps a copy of the targets: unet_backward forms d loss/d logits from them
 * tile by tile (never stored as a float tensor), so the caller may reuse its buffers. */
float unet_loss_bce(Unet *m, const uint8_t *bits, const uint8_t *presence, int N);
/* Backward of the last forward(train=1) + loss: overwrites the grads. */
int   unet_backward(Unet *m);
/* Scale grads so their global L2 norm is at most max_norm (<= 0: no-op); returns the norm. */
float unet_clip_grad(Unet *m, float max_norm);
/* One Adam step on the whole block (PyTorch Adam, no weight decay): t += 1. */
void  unet_adam_step(Unet *m, float lr, float beta1, float beta2, float eps);

/* Per-channel counts over the last forward at threshold logit > 0 (prob > 0.5), added
 * into tp/fp/fn[C] (caller zeroes). Same target layout as unet_loss_bce. */
void  unet_dice_counts(const Unet *m, const uint8_t *bits, const uint8_t *presence, int N,
                       int64_t *tp, int64_t *fp, int64_t *fn);

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
