/* common/gpu/gpu_kernels.h : launchers of our own CUDA kernels (gpu_kernels.cu), used by
 * gpu_net.cu. All tensors are NCHW float in device memory; every launcher only queues work
 * on `s` (errors surface through cudaGetLastError at the caller's next check). */
#ifndef SEG_GPU_KERNELS_H
#define SEG_GPU_KERNELS_H
#include <cuda_runtime.h>
#include <stdint.h>

/* y = max(y, 0) over n floats. */
void gk_relu(cudaStream_t s, float *y, long n);
/* g = a > 0 ? g : 0 (the ReLU backward, a = the ReLU output). */
void gk_relu_bwd(cudaStream_t s, float *g, const float *a, long n);
/* MaxPool2d(2,2): x (NC planes of H x W) -> y (NC planes of H/2 x W/2). */
void gk_pool_fwd(cudaStream_t s, const float *x, float *y, long NC, int H, int W);
/* dx += the pool gradient: dy of each window goes to its argmax in x (as gm_argmax4). */
void gk_pool_bwd(cudaStream_t s, const float *x, const float *dy, float *dx, long NC, int H, int W);
/* y (N, Ca+Cb, HW) = cat(a (N,Ca,HW), b (N,Cb,HW)) along channels, and the inverse. */
void gk_concat(cudaStream_t s, const float *a, const float *b, float *y, int N, int Ca, int Cb, long HW);
void gk_split(cudaStream_t s, const float *y, float *a, float *b, int N, int Ca, int Cb, long HW);
/* y[n,c,:] += bias[c]. */
void gk_bias_add(cudaStream_t s, float *y, const float *bias, int N, int C, long HW);
/* out[c] = sum over n and pixels of dy[n,c,:] (bias gradients): GK_CSUM_SPLIT blocks per
 * channel write double partials to scratch (C * GK_CSUM_SPLIT), summed in a fixed order. */
#define GK_CSUM_SPLIT 32
void gk_channel_sum(cudaStream_t s, const float *dy, int N, int C, long HW, float *out, double *scratch);
/* Per-plane sums (gm_bce, gm_sigmoid; double accumulation), one block per plane pl = n*C+c:
 * partial[pl*4] = BCE-with-logits sum and, when dice, partial[pl*4 + 1..3] = sum p, sum p*t,
 * sum t (nn_loss_planes' layout). labelled (device, (C+7)/8 bytes per sample, NULL = all): the
 * planes whose bit is clear are unknown: their sums are 0 here, their gradient 0 in gk_bce_grad,
 * and gk_dice does not count them. */
void gk_bce_sum(cudaStream_t s, const float *z, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
                int N, int C, long HW, int dice, double *partial);
/* d = (sigmoid(z) - t) * scale for every element (gm_bce_grad); with coefficient arrays
 * (a, b: C floats on the device, else NULL) plus the soft-Dice part (a[c]*t + b[c]) * cscale
 * * p*(1-p) (gm_loss_grad; cscale: the fp16 loss scale, else 1). */
void gk_bce_grad(cudaStream_t s, const float *z, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
                 int N, int C, long HW, float scale, const float *a, const float *b, float cscale, float *d);
/* tp/fp/fn[c] += counts at z > 0 over all samples (integer atomics: deterministic). */
void gk_dice(cudaStream_t s, const float *z, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
             int N, int C, long HW, unsigned long long *tp, unsigned long long *fp, unsigned long long *fn);
/* Blocks gk_sumsq writes partial sums for. */
#define GK_SUMSQ_BLOCKS 512
/* partial[0..GK_SUMSQ_BLOCKS) = sums of x^2 over a fixed split of n floats. */
void gk_sumsq(cudaStream_t s, const float *x, size_t n, double *partial);
/* x *= a over n floats. */
void gk_scale(cudaStream_t s, float *x, size_t n, float a);
/* Adam over n parameters (gm_adam; a1 = 1-b1, a2 = 1-b2 rounded from double as nn_adam). */
void gk_adam(cudaStream_t s, float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
             float a1, float a2, float eps, float step_size, float bc2s);
/* buf[off[i]] += 1 for i < n (BatchNorm num_batches_tracked). */
void gk_inc(cudaStream_t s, float *buf, const int *off, int n);
/* AMP casts with a layout change, kind 1 = bfloat16, 2 = float16 (UNET_AMP_*): x (N, C, HW)
 * float NCHW <-> y (N, HW, C) half NHWC (for a filter (K, C, R, S) <-> (K, R, S, C) take
 * N = K, HW = R*S). Tiled through shared memory: coalesced both ways. */
void gk_to_half_nhwc(cudaStream_t s, int kind, const float *x, void *y, int N, int C, long HW);
void gk_from_half_nhwc(cudaStream_t s, int kind, const void *x, float *y, int N, int C, long HW);
/* cudaSuccess (0) when the current device can run these kernels, else the cudaError_t. */
int gk_check_image(void);

#endif
