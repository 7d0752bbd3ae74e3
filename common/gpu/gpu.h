/* common/gpu/gpu.h : the CUDA backend of the U-Net (cuDNN convolutions and BatchNorm,
 * cuBLAS for the 1x1 head, our own kernels for ReLU, pooling, concat, the packed-mask BCE,
 * Dice counts and Adam). Built only when the Makefile finds the CUDA toolkit
 * (SEG_HAVE_CUDA); common/gpu/unet_cuda.c (the CUDA entry of the backend table) is its only
 * caller, and the facade keeps the host copy of the state dict, so checkpoints are the same
 * whichever device trained them. The layers come from the same table as the CPU's.
 *
 * Device memory: the parameter block, its gradients, the Adam moments and the BatchNorm
 * buffers in the host layout (unet.h), plus every activation for max_batch, allocated once
 * by gpu_net_create. Work runs on one compute stream; inputs go up through pinned buffers
 * on a second stream, so the upload of batch k+1 overlaps the backward of batch k. */
#ifndef SEG_GPU_H
#define SEG_GPU_H
#include <stddef.h>
#include <stdint.h>
#include "unet.h"
#include "unet_layers.h"

#ifdef __cplusplus
extern "C" {
#endif


/* Is CUDA device `index` usable (driver, device, a kernel image for its architecture)?
 * SEG_OK and a description ("NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB") in desc, else SEG_EGPU
 * with the reason in seg_errmsg(). */
int gpu_probe(int index, char *desc, size_t cap);

typedef struct GpuNet GpuNet;

/* What the GPU model needs from the host model: the layer table (shapes and the offsets of
 * every tensor in the host parameter / buffer blocks, whose layout the device copies keep;
 * copied at create) and the batch geometry. */
typedef struct GpuNetDesc {
    const UnetLayers *net;
    int               max_batch, H, W;
    int               device, amp;          /* CUDA device index; UNET_AMP_* */
} GpuNetDesc;

int  gpu_net_create(const GpuNetDesc *d, GpuNet **out);
void gpu_net_free(GpuNet *g);                                      /* NULL-safe */
/* Device bytes the model holds (all buffers, cuDNN workspace included). */
size_t gpu_net_memory_bytes(const GpuNet *g);

/* Copy the whole state host -> device (params, BN buffers, Adam m/v) and back. download
 * also fetches the gradients when grads is not NULL. Both wait for the device. */
int gpu_net_upload(GpuNet *g, const float *params, const float *bufs, const float *adam_m, const float *adam_v);
int gpu_net_download(GpuNet *g, float *params, float *bufs, float *adam_m, float *adam_v, float *grads);

/* Forward of x:(N,in_ch,H,W) host floats; train=1 uses batch statistics and updates the
 * running ones (and num_batches_tracked). Returns once the work is queued. */
int gpu_net_forward(GpuNet *g, const float *x, int N, int train);
/* Copy the last forward's logits (N,C,H,W) to host memory (waits). */
int gpu_net_logits(GpuNet *g, float *out);
/* Per-plane loss sums of the last forward (targets as in unet_loss), planes[pl*4 + k] as
 * nn_loss_planes writes them (k = 0 BCE sum; with dice also 1..3 = sum p, sum p*t, sum t),
 * N*C*NN_LOSS_PLANE doubles. Keeps the targets on the device for gpu_net_backward and resets
 * its gradient to plain BCE (gpu_net_set_loss_grad changes that). Waits for the sums.
 * labelled (unet_loss_masked's layout, NULL = all): unlabelled planes get zero sums and zero
 * gradient, and the BCE part of the gradient divides by the labelled elements. */
int gpu_net_loss(GpuNet *g, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N, int dice,
                 double *planes);
/* What the next gpu_net_backward differentiates, set after gpu_net_loss: per element
 * bce_w/(n_labelled_planes*H*W)*(sigmoid(z) - t) + (a[c]*t + b[c])*p*(1-p) (a, b: C floats from nn_soft_dice,
 * or NULL for BCE alone). The coefficients are copied on the compute stream (queued, no wait). */
int gpu_net_set_loss_grad(GpuNet *g, float bce_w, const float *a, const float *b);
/* Backward of the last forward+loss: overwrites the gradients (queued, no wait). With fp16
 * the loss (both terms) is scaled; the gradients come back unscaled. */
int gpu_net_backward(GpuNet *g);
/* Sum of squared gradients (waits); then scale them by s (queued). */
int gpu_net_grad_sumsq(GpuNet *g, double *out);
int gpu_net_scale_grads(GpuNet *g, float s);
/* One Adam step at step count t (PyTorch formula, as nn_adam). *skipped = 1 when fp16 loss
 * scaling found an overflow in this step's gradients: nothing was changed and the scale was
 * halved (the caller does not count the step). */
int gpu_net_adam(GpuNet *g, float lr, float beta1, float beta2, float eps, int64_t t, int *skipped);
/* Dice counts of the last forward at logit > 0, added into tp/fp/fn[C] (waits). */
int gpu_net_dice(GpuNet *g, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N,
                 int64_t *tp, int64_t *fp, int64_t *fn);

/* Wait for all queued work (benchmarks). */
int gpu_net_wait(GpuNet *g);
/* Device time of the last training steps: per step, GPU busy seconds (forward to the end of
 * Adam, less the wait for the loss) and wall seconds between step starts; for benchmarks. */
int gpu_net_step_times(GpuNet *g, double *busy_s, double *wall_s, int *steps);

#ifdef __cplusplus
}
#endif
#endif
