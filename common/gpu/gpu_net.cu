/* common/gpu/gpu_net.cu : the U-Net on one CUDA device (see gpu.h). The same network as the
 * CPU backend (common/unet_cpu.c), from the same layer table (unet_layers.h); NCHW float32:
 *   conv3x3 (cuDNN) -> BatchNorm (cuDNN, batch statistics or running ones) -> ReLU (ours),
 *   MaxPool 2x2 and the skip concatenation (ours), ConvTranspose 2x2 s2 = cuDNN's backward-
 *   data of a stride-2 conv (+ bias, ours), head conv1x1 = cuBLAS strided-batched SGEMM.
 * Kept for backward: per conv its raw output z and its ReLU output a, the pooled maps, the
 * upsampled maps and the concatenations; gradients run through three ping-pong buffers and
 * one skip-gradient buffer per level, as on the CPU.
 * AMP (bf16 / fp16): the 3x3 convs and the transposed convs run on tensor cores with
 * half-precision NHWC inputs, weights and outputs (cast and transposed by our kernels from
 * the fp32 NCHW tensors and from a half KRSC copy of the fp32 master weights); BatchNorm,
 * the head, the loss and Adam stay fp32 NCHW. fp16 scales the loss (dynamic, from 2^16; halved on overflow, doubled after 2000
 * clean steps) and skips the steps whose gradients overflow. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern "C" {
#include "err.h"
}
#include "gpu.h"
#include "gpu_kernels.h"
#include "gpu_math.h"
#include "unet_layers.h"

/* CUDA, cuDNN and cuBLAS statuses -> SEG_EGPU with the call and file:line (err.h's CHECK_GEN) */
#define CU_TRY(x)   CHECK_GEN(cudaError_t, x, cudaSuccess, cudaGetErrorString, SEG_EGPU)
#define DNN_TRY(x)  CHECK_GEN(cudnnStatus_t, x, CUDNN_STATUS_SUCCESS, cudnnGetErrorString, SEG_EGPU)
#define BLAS_TRY(x) CHECK_GEN(cublasStatus_t, x, CUBLAS_STATUS_SUCCESS, cublasGetStatusString, SEG_EGPU)
#define KERNEL_CHECK() CU_TRY(cudaGetLastError())
/* every entry point: the calling thread may have another device current */
#define ON_DEVICE(g) CU_TRY(cudaSetDevice((g)->d.device))

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1
#define WS_LIMIT ((size_t)2 << 30)   /* largest cuDNN workspace an algorithm may ask for */
#define RING 512                     /* steps of timing events kept */

/* ---- probing --------------------------------------------------------------------------------- */
extern "C" int gpu_probe(int index, char *desc, size_t cap)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver)
            return seg_err(SEG_EGPU, "no NVIDIA GPU with a working driver on this machine (%s)", cudaGetErrorString(e));
        return seg_err(SEG_EGPU, "the CUDA runtime cannot start (%s)", cudaGetErrorString(e));
    }
    if (n < 1) return seg_err(SEG_EGPU, "the CUDA driver reports no device");
    if (index < 0 || index >= n) return seg_err(SEG_EGPU, "cuda:%d: this machine has %d CUDA device(s), cuda:0..cuda:%d", index, n, n - 1);
    cudaDeviceProp p;
    CU_TRY(cudaGetDeviceProperties(&p, index));
    if (p.major < 8)
        return seg_err(SEG_EGPU, "cuda:%d: %s is compute capability %d.%d; segkit's GPU backend needs 8.0 or newer",
                       index, p.name, p.major, p.minor);
    CU_TRY(cudaSetDevice(index));
    e = (cudaError_t)gk_check_image();
    if (e != cudaSuccess)
        return seg_err(SEG_EGPU, "cuda:%d: %s (sm_%d%d): the GPU kernels were not built for it (%s); rebuild with "
                       "NVCC_ARCH set for this GPU", index, p.name, p.major, p.minor, cudaGetErrorString(e));
    if (desc)
        snprintf(desc, cap, "cuda:%d %s, sm_%d%d, %.1f GiB, cuDNN %zu", index, p.name, p.major, p.minor,
                 p.totalGlobalMem / 1073741824.0, cudnnGetVersion());
    return SEG_OK;
}

/* ---- the model -------------------------------------------------------------------------------- */
/* One convolution geometry, PyTorch terms: x (N, xc, xh, xw) * w (k, xc, r, r) -> y (N, k, yh, yw).
 * A conv3x3 layer runs fwd / bwd-filter / bwd-data of it; a transposed conv is the same
 * stride-2 geometry run the other way (bwd-data forward; fwd and bwd-filter backward). */
enum { OP_FWD, OP_BWD_DATA, OP_BWD_FILTER, OP_N };
#define MAX_CAND 8
typedef struct Cand {             /* one cuDNN algorithm for one op, as the heuristics offered it */
    int algo;
    cudnnMathType_t math;
    size_t ws;                    /* its workspace at this batch size */
} Cand;
typedef struct Algo {
    int N;                        /* batch size these are for (0: unused) */
    Cand c[OP_N][MAX_CAND];       /* candidates in the heuristics' order; c[op][cur[op]] is in use */
    int nc[OP_N], cur[OP_N];
} Algo;

#define ALGO_SLOTS 4
typedef struct ConvGeo {
    int xc, xh, xw, k, r, pad, stride, yh, yw;
    size_t w;                     /* the weight's offset in params / grads */
    size_t hw;                    /* AMP: its offset in the half copy (64-element aligned) */
    int half;                     /* AMP runs it in half precision NHWC (else fp32 NCHW, e.g. 1 input channel) */
    Algo algo[ALGO_SLOTS];        /* per batch size seen (slot 0: the full batch) */
    int algo_next;
} ConvGeo;

/* The device side of one entry of the layer table (its offsets into params / grads / bufs
 * are the table's). */
typedef struct GLayer {
    ConvGeo geo;                  /* CONV3: its conv; UP: x = the output u (N, Co, 2h, 2w), y = the input (N, Ci, h, w) */
    float *y;                     /* CONV3: raw output z; UP: u; POOL: pooled output; CAT: the concatenation */
    float *a;                     /* CONV3: ReLU output (N, Co, H, W) */
    float *smean, *sinv;          /* CONV3: BatchNorm's saved batch statistics */
    float *dskip;                 /* CAT: gradient of the skip input */
} GLayer;

struct GpuNet {
    GpuNetDesc d;
    int L, C, amp;
    int hk;                               /* half kind of the convs: 0 none, UNET_AMP_BF16, UNET_AMP_FP16 */
    int deterministic;                    /* SEGKIT_CUDNN_DETERMINISTIC=1: deterministic algorithms only */
    cudnnMathType_t math;
    long HW;
    cudaStream_t st, cp;                  /* compute, copy */
    cudnnHandle_t dnn;
    cublasHandle_t blas;
    cudnnTensorDescriptor_t tx, ty, tbn;
    cudnnFilterDescriptor_t fw;
    cudnnConvolutionDescriptor_t cv;
    cudnnDataType_t dt;                   /* conv data type: float, bf16 or half */
    /* state, host layout */
    float *params, *grads, *adam_m, *adam_v, *bufs;
    void *hparams;                        /* AMP: half copy of params */
    int hparams_stale;
    int nbt_host[UNET_LAYERS_MAX];        /* offsets of num_batches_tracked in bufs */
    int *nbt_off;                         /* the same on the device */
    int n_nbt;
    /* layers: the table (a copy) and each entry's device state */
    UnetLayers net;
    GLayer lay[UNET_LAYERS_MAX];
    float *logits, *dlogits;
    float *gA, *gB, *gC, *gDZ;
    void *hA, *hB, *hW;                   /* AMP scratch: inputs, outputs, weight grads */
    size_t maxel, maxw;
    void *ws;
    size_t ws_bytes;
    /* inputs: two slots each, so the upload of the next batch overlaps this one's backward */
    float *xin[2], *x_pin[2];
    uint8_t *bits[2], *pres[2], *bits_pin[2], *pres_pin[2];
    uint8_t *lab[2], *lab_pin[2];         /* labelled bitmaps; has_lab[s] = 0: all labelled */
    int has_lab[2];
    long n_lab;                           /* labelled planes of the last loss */
    cudaEvent_t x_up[2], x_free[2], t_up[2], t_free[2];
    int xs, ts;                           /* slot of the last forward / loss */
    double *partial, *partial_pin;        /* per-plane loss sums (4 per plane), sumsq partials */
    float *coef, *coef_pin;               /* soft-Dice gradient coefficients a[C], b[C] */
    int use_coef;                         /* the next backward adds the Dice part */
    float bce_w;                          /* weight of the BCE part in the next backward (0 or 1) */
    unsigned long long *dice, *dice_pin;
    double *csum;                         /* gk_channel_sum partials */
    /* step */
    int last_N, last_train, have_loss;
    float loss_scale;
    int good_steps;
    /* timing ring */
    cudaEvent_t ev[RING][4];              /* forward start, loss end, backward start, adam end */
    unsigned char done[RING];             /* the slot's step reached its Adam end */
    int ring_n, ring_first;
    size_t mem_bytes;
};


static int dalloc(GpuNet *g, void **p, size_t bytes)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return seg_err(SEG_ENOMEM, "GPU: cannot allocate %.1f MiB of device memory (%.1f MiB held so far): %s; use a "
                       "smaller --batch-size", bytes / 1048576.0, g->mem_bytes / 1048576.0, cudaGetErrorString(e));
    }
    g->mem_bytes += bytes;
    return SEG_OK;
}
#define DALLOC(g, p, n) dalloc((g), (void **)&(p), (n))

static int halloc(void **p, size_t bytes)
{
    *p = NULL;
    cudaError_t e = cudaHostAlloc(p, bytes ? bytes : 16, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return seg_err(SEG_ENOMEM, "GPU: cannot allocate %.1f MiB of pinned host memory: %s", bytes / 1048576.0,
                       cudaGetErrorString(e));
    }
    return SEG_OK;
}
#define HALLOC(p, n) halloc((void **)&(p), (n))

static void geo_set(ConvGeo *g, int xc, int xh, int xw, int k, int r, int pad, int stride)
{
    memset(g, 0, sizeof *g);
    g->xc = xc; g->xh = xh; g->xw = xw; g->k = k; g->r = r; g->pad = pad; g->stride = stride;
    g->yh = (xh + 2 * pad - r) / stride + 1;
    g->yw = (xw + 2 * pad - r) / stride + 1;
}

extern "C" void gpu_net_free(GpuNet *g)
{
    if (!g) return;
    cudaSetDevice(g->d.device);
    if (g->st) cudaStreamSynchronize(g->st);
    if (g->cp) cudaStreamSynchronize(g->cp);
    for (int i = 0; i < g->net.n; i++) {
        GLayer *q = &g->lay[i];
        cudaFree(q->y); cudaFree(q->a); cudaFree(q->smean); cudaFree(q->sinv); cudaFree(q->dskip);
    }
    void *dev[] = { g->params, g->grads, g->adam_m, g->adam_v, g->bufs, g->hparams, g->nbt_off, g->logits, g->dlogits,
                    g->gA, g->gB, g->gC, g->gDZ, g->hA, g->hB, g->hW, g->ws, g->xin[0], g->xin[1], g->bits[0], g->bits[1],
                    g->pres[0], g->pres[1], g->lab[0], g->lab[1], g->partial, g->dice, g->csum, g->coef };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cudaFree(dev[i]);
    void *pin[] = { g->x_pin[0], g->x_pin[1], g->bits_pin[0], g->bits_pin[1], g->pres_pin[0], g->pres_pin[1],
                    g->lab_pin[0], g->lab_pin[1], g->partial_pin, g->dice_pin, g->coef_pin };
    for (size_t i = 0; i < sizeof pin / sizeof pin[0]; i++) if (pin[i]) cudaFreeHost(pin[i]);
    for (int s = 0; s < 2; s++) {
        cudaEvent_t evs[4] = { g->x_up[s], g->x_free[s], g->t_up[s], g->t_free[s] };
        for (int k = 0; k < 4; k++) if (evs[k]) cudaEventDestroy(evs[k]);
    }
    for (int r = 0; r < RING; r++) for (int k = 0; k < 4; k++) if (g->ev[r][k]) cudaEventDestroy(g->ev[r][k]);
    if (g->tx) cudnnDestroyTensorDescriptor(g->tx);
    if (g->ty) cudnnDestroyTensorDescriptor(g->ty);
    if (g->tbn) cudnnDestroyTensorDescriptor(g->tbn);
    if (g->fw) cudnnDestroyFilterDescriptor(g->fw);
    if (g->cv) cudnnDestroyConvolutionDescriptor(g->cv);
    if (g->dnn) cudnnDestroy(g->dnn);
    if (g->blas) cublasDestroy(g->blas);
    if (g->st) cudaStreamDestroy(g->st);
    if (g->cp) cudaStreamDestroy(g->cp);
    cudaGetLastError();
    free(g);
}

/* Every convolution geometry of the model (a conv3x3 layer or a transposed conv each). */
static int all_geos(GpuNet *g, ConvGeo **qs)
{
    int n = 0;
    for (int i = 0; i < g->net.n; i++)
        if (g->net.layer[i].kind == UNET_CONV3 || g->net.layer[i].kind == UNET_UP) qs[n++] = &g->lay[i].geo;
    return n;
}

static int create_buffers(GpuNet *g)
{
    const int C = g->C, NB = g->d.max_batch, H = g->d.H, W = g->d.W;
    g->n_nbt = 0;
    for (int i = 0; i < g->net.n; i++) {
        const UnetLayer *l = &g->net.layer[i];
        GLayer *q = &g->lay[i];
        const int h = H >> l->level, w = W >> l->level;
        const size_t P = (size_t)NB * h * w;
        switch (l->kind) {
        case UNET_CONV3:
            geo_set(&q->geo, l->cin, h, w, l->cout, 3, 1, 1);
            q->geo.w = l->w;
            g->nbt_host[g->n_nbt++] = (int)l->nbt;
            TRY(DALLOC(g, q->y, sizeof(float) * P * l->cout));
            TRY(DALLOC(g, q->a, sizeof(float) * P * l->cout));
            TRY(DALLOC(g, q->smean, sizeof(float) * l->cout));
            TRY(DALLOC(g, q->sinv, sizeof(float) * l->cout));
            if (P * (size_t)(l->cin > l->cout ? l->cin : l->cout) > g->maxel) g->maxel = P * (size_t)(l->cin > l->cout ? l->cin : l->cout);
            if ((size_t)l->cin * l->cout * 9 > g->maxw) g->maxw = (size_t)l->cin * l->cout * 9;
            break;
        case UNET_UP:              /* run as the backward-data of a stride-2 conv from u to the input */
            geo_set(&q->geo, l->cout, h, w, l->cin, 2, 0, 2);
            q->geo.w = l->w;
            TRY(DALLOC(g, q->y, sizeof(float) * P * l->cout));
            if ((size_t)l->cin * l->cout * 4 > g->maxw) g->maxw = (size_t)l->cin * l->cout * 4;
            break;
        case UNET_CAT:
            TRY(DALLOC(g, q->y, sizeof(float) * P * l->cout));
            TRY(DALLOC(g, q->dskip, sizeof(float) * P * l->cin));
            if (P * l->cout > g->maxel) g->maxel = P * l->cout;
            break;
        case UNET_POOL:
            TRY(DALLOC(g, q->y, sizeof(float) * (P / 4) * l->cin));
            break;
        }
    }
    TRY(DALLOC(g, g->nbt_off, sizeof(int) * g->n_nbt));
    /* on the compute stream (a non-blocking stream does not wait for the legacy one) */
    CU_TRY(cudaMemcpyAsync(g->nbt_off, g->nbt_host, sizeof(int) * g->n_nbt, cudaMemcpyHostToDevice, g->st));
    CU_TRY(cudaStreamSynchronize(g->st));
    const size_t P0 = (size_t)NB * H * W;     /* logits and dlogits have their own buffers */
    TRY(DALLOC(g, g->logits, sizeof(float) * P0 * C));
    TRY(DALLOC(g, g->dlogits, sizeof(float) * P0 * C));
    TRY(DALLOC(g, g->gA, sizeof(float) * g->maxel));
    TRY(DALLOC(g, g->gB, sizeof(float) * g->maxel));
    TRY(DALLOC(g, g->gC, sizeof(float) * g->maxel));
    TRY(DALLOC(g, g->gDZ, sizeof(float) * g->maxel));
    if (g->hk) {
        /* the half copy holds only the conv weights, each 128-byte aligned for tensor cores.
         * Tensor-core NHWC kernels want channel counts that divide by 8: a conv with fewer
         * (the first one reads 1 channel, and is cheap) stays fp32 NCHW */
        ConvGeo *qs[UNET_LAYERS_MAX];
        const int nq = all_geos(g, qs);
        size_t off = 0;
        for (int i = 0; i < nq; i++) {
            qs[i]->half = qs[i]->xc % 8 == 0 && qs[i]->k % 8 == 0;
            if (!qs[i]->half) continue;
            qs[i]->hw = (off + 63) & ~(size_t)63;
            off = qs[i]->hw + (size_t)qs[i]->k * qs[i]->xc * qs[i]->r * qs[i]->r;
        }
        TRY(DALLOC(g, g->hA, 2 * g->maxel));
        TRY(DALLOC(g, g->hB, 2 * g->maxel));
        TRY(DALLOC(g, g->hW, 2 * g->maxw));
        TRY(DALLOC(g, g->hparams, 2 * off));
    }
    const size_t np = g->net.n_params;
    TRY(DALLOC(g, g->params, sizeof(float) * np));
    TRY(DALLOC(g, g->grads, sizeof(float) * np));
    TRY(DALLOC(g, g->adam_m, sizeof(float) * np));
    TRY(DALLOC(g, g->adam_v, sizeof(float) * np));
    TRY(DALLOC(g, g->bufs, sizeof(float) * (g->net.n_bufs ? g->net.n_bufs : 1)));
    const size_t xin = (size_t)NB * g->net.cfg.in_ch * H * W, nb = (size_t)NB * C * (H * (size_t)W / 8),
                 np_ = (size_t)NB * ((C + 7) / 8);
    for (int s = 0; s < 2; s++) {
        TRY(DALLOC(g, g->xin[s], sizeof(float) * xin));
        TRY(DALLOC(g, g->bits[s], nb));
        TRY(DALLOC(g, g->pres[s], np_));
        TRY(HALLOC(g->x_pin[s], sizeof(float) * xin));
        TRY(HALLOC(g->bits_pin[s], nb));
        TRY(HALLOC(g->pres_pin[s], np_));
        TRY(DALLOC(g, g->lab[s], np_));
        TRY(HALLOC(g->lab_pin[s], np_));
        CU_TRY(cudaEventCreateWithFlags(&g->x_up[s], cudaEventDisableTiming));
        CU_TRY(cudaEventCreateWithFlags(&g->x_free[s], cudaEventDisableTiming));
        CU_TRY(cudaEventCreateWithFlags(&g->t_up[s], cudaEventDisableTiming));
        CU_TRY(cudaEventCreateWithFlags(&g->t_free[s], cudaEventDisableTiming));
    }
    const size_t npart = (size_t)4 * NB * C > GK_SUMSQ_BLOCKS ? (size_t)4 * NB * C : GK_SUMSQ_BLOCKS;
    TRY(DALLOC(g, g->partial, sizeof(double) * npart));
    TRY(HALLOC(g->partial_pin, sizeof(double) * npart));
    TRY(DALLOC(g, g->dice, sizeof(unsigned long long) * 3 * C));
    TRY(DALLOC(g, g->coef, sizeof(float) * 2 * C));
    TRY(HALLOC(g->coef_pin, sizeof(float) * 2 * C));
    int cmax = 0;                         /* gk_channel_sum runs for the biases of the UP layers and the head */
    for (int i = 0; i < g->net.n; i++)
        if ((g->net.layer[i].kind == UNET_UP || g->net.layer[i].kind == UNET_HEAD) && g->net.layer[i].cout > cmax)
            cmax = g->net.layer[i].cout;
    TRY(DALLOC(g, g->csum, sizeof(double) * (size_t)cmax * GK_CSUM_SPLIT));
    TRY(HALLOC(g->dice_pin, sizeof(unsigned long long) * 3 * C));
    for (int r = 0; r < RING; r++)
        for (int k = 0; k < 4; k++) CU_TRY(cudaEventCreate(&g->ev[r][k]));
    return SEG_OK;
}

/* ---- convolutions ----------------------------------------------------------------------------- */
/* Set the descriptors for geometry q at batch N: tx = x, ty = y, fw = w, cv = the conv. */
static int geo_desc(GpuNet *g, const ConvGeo *q, int N)
{
    /* half precision runs NHWC (tensor cores' native layout; our casts transpose for free);
     * an AMP model's fp32 convs may use TF32 */
    const cudnnTensorFormat_t fmt = q->half ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    const cudnnDataType_t dt = q->half ? g->dt : CUDNN_DATA_FLOAT;
    DNN_TRY(cudnnSetTensor4dDescriptor(g->tx, fmt, dt, N, q->xc, q->xh, q->xw));
    DNN_TRY(cudnnSetTensor4dDescriptor(g->ty, fmt, dt, N, q->k, q->yh, q->yw));
    DNN_TRY(cudnnSetFilter4dDescriptor(g->fw, dt, fmt, q->k, q->xc, q->r, q->r));
    DNN_TRY(cudnnSetConvolution2dDescriptor(g->cv, q->pad, q->pad, q->stride, q->stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                            CUDNN_DATA_FLOAT));
    DNN_TRY(cudnnSetConvolutionMathType(g->cv, q->half || g->amp == UNET_AMP_OFF ? g->math : CUDNN_DEFAULT_MATH));
    return SEG_OK;
}

static int ensure_ws(GpuNet *g, size_t bytes)
{
    if (bytes <= g->ws_bytes) return SEG_OK;
    CU_TRY(cudaStreamSynchronize(g->st));
    cudaFree(g->ws);
    g->mem_bytes -= g->ws_bytes;
    g->ws_bytes = 0;
    TRY(dalloc(g, &g->ws, bytes));
    g->ws_bytes = bytes;
    return SEG_OK;
}

/* Candidates from a heuristics list: usable ones within the workspace limit in the
 * heuristics' order (fastest predicted first); with g->deterministic, deterministic ones
 * only. fp32 (--amp off) pins FMA math, so no candidate can bring TF32 in. */
#define CANDS(perf, n, a, op) do {                                                                  \
        (a)->nc[op] = 0;                                                                            \
        for (int i_ = 0; i_ < (n) && (a)->nc[op] < MAX_CAND; i_++) {                               \
            if ((perf)[i_].status != CUDNN_STATUS_SUCCESS || (perf)[i_].memory > WS_LIMIT) continue; \
            if (g->deterministic && (perf)[i_].determinism != CUDNN_DETERMINISTIC) continue;       \
            Cand *k_ = &(a)->c[op][(a)->nc[op]++];                                                  \
            k_->algo = (int)(perf)[i_].algo;                                                        \
            k_->math = g->amp == UNET_AMP_OFF ? CUDNN_FMA_MATH : (perf)[i_].mathType;               \
            k_->ws = (perf)[i_].memory;                                                             \
        }                                                                                           \
        if (!(a)->nc[op]) return seg_err(SEG_EGPU, "cuDNN offers no algorithm for a conv %s (%dx%d, %d -> %d ch)", \
                                         op_name[op], q->xh, q->xw, q->xc, q->k);                   \
    } while (0)

static const char *const op_name[OP_N] = { "forward", "backward-data", "backward-filter" };

/* Workspace of candidate k for op (descriptors set; sets the math type). */
static cudnnStatus_t cand_ws(GpuNet *g, int op, const Cand *k, size_t *s)
{
    cudnnStatus_t st = cudnnSetConvolutionMathType(g->cv, k->math);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    switch (op) {
    case OP_FWD:
        return cudnnGetConvolutionForwardWorkspaceSize(g->dnn, g->tx, g->fw, g->cv, g->ty, (cudnnConvolutionFwdAlgo_t)k->algo, s);
    case OP_BWD_DATA:
        return cudnnGetConvolutionBackwardDataWorkspaceSize(g->dnn, g->fw, g->ty, g->cv, g->tx,
                                                            (cudnnConvolutionBwdDataAlgo_t)k->algo, s);
    default:
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(g->dnn, g->tx, g->ty, g->cv, g->fw,
                                                              (cudnnConvolutionBwdFilterAlgo_t)k->algo, s);
    }
}

/* cuDNN turning an algorithm down for these shapes, layout, alignment or workspace (older
 * versions say BAD_PARAM), or an engine that fails to build: worth trying another one. */
static int declined(cudnnStatus_t st)
{
    return (st >= 3000 && st < 5000) || st == CUDNN_STATUS_BAD_PARAM || st == CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER ||
           st == CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT;
}

/* Move op to its next candidate (caller checked there is one), skipping those whose
 * workspace query is itself declined; takes the exact workspace size when known. */
static void next_cand(GpuNet *g, Algo *a, int op)
{
    while (a->cur[op] + 1 < a->nc[op]) {
        Cand *nk = &a->c[op][++a->cur[op]];
        size_t sz = 0;
        const cudnnStatus_t st = cand_ws(g, op, nk, &sz);
        if (st == CUDNN_STATUS_SUCCESS) { if (sz > nk->ws) nk->ws = sz; return; }
        if (!declined(st)) return;                 /* let the run report it */
    }
}

static int geo_algo(GpuNet *g, ConvGeo *q, int N, Algo **out)
{
    for (int i = 0; i < ALGO_SLOTS; i++) if (q->algo[i].N == N) { *out = &q->algo[i]; return SEG_OK; }
    /* slot 0 keeps the full batch (chosen at create); the others take turns */
    Algo *a = q->algo[0].N == 0 ? &q->algo[0] : &q->algo[1 + q->algo_next++ % (ALGO_SLOTS - 1)];
    memset(a, 0, sizeof *a);
    int n;
    cudnnConvolutionFwdAlgoPerf_t pf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnConvolutionBwdFilterAlgoPerf_t pw[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    DNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(g->dnn, g->tx, g->fw, g->cv, g->ty, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, pf));
    CANDS(pf, n, a, OP_FWD);
    DNN_TRY(cudnnGetConvolutionBackwardDataAlgorithm_v7(g->dnn, g->fw, g->ty, g->cv, g->tx,
                                                        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, pd));
    CANDS(pd, n, a, OP_BWD_DATA);
    DNN_TRY(cudnnGetConvolutionBackwardFilterAlgorithm_v7(g->dnn, g->tx, g->ty, g->cv, g->fw,
                                                          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, pw));
    CANDS(pw, n, a, OP_BWD_FILTER);
    size_t need = 0;
    for (int op = 0; op < OP_N; op++) {           /* the exact sizes of the first choices, to size the workspace now */
        Cand *k = &a->c[op][0];
        size_t sz = 0;
        const cudnnStatus_t st = cand_ws(g, op, k, &sz);
        if (st == CUDNN_STATUS_SUCCESS && sz > k->ws) k->ws = sz;
        if (declined(st) && a->nc[op] > 1) next_cand(g, a, op);
        if (a->c[op][a->cur[op]].ws > need) need = a->c[op][a->cur[op]].ws;
    }
    if (ensure_ws(g, need) < 0) cudaGetLastError();   /* not fatal: run_op falls back to leaner candidates */
    a->N = N;
    *out = a;
    return SEG_OK;
}

/* Run op on geometry q at batch N with the current candidate, moving on to the next one when
 * cuDNN declines it (not supported for these shapes/layout/alignment, or an engine that
 * fails to build): fwd x=in1, w=in2 -> y=out; bwd-data dy=in1, w=in2 -> dx=out; bwd-filter
 * x=in1, dy=in2 -> dw=out. Descriptors must be set. */
static int run_op(GpuNet *g, ConvGeo *q, int N, int op, const void *in1, const void *in2, void *out)
{
    const float one = 1.f, zero = 0.f;
    Algo *a;
    TRY(geo_algo(g, q, N, &a));
    for (;;) {
        const Cand *k = &a->c[op][a->cur[op]];
        const int more = a->cur[op] + 1 < a->nc[op];
        int rc = ensure_ws(g, k->ws);
        if (rc < 0 && more) {                      /* no memory for this one's workspace: a leaner one */
            cudaGetLastError();
            next_cand(g, a, op);
            continue;
        }
        TRY(rc);
        cudnnStatus_t st = cudnnSetConvolutionMathType(g->cv, k->math);
        if (st == CUDNN_STATUS_SUCCESS) switch (op) {
        case OP_FWD:
            st = cudnnConvolutionForward(g->dnn, &one, g->tx, in1, g->fw, in2, g->cv, (cudnnConvolutionFwdAlgo_t)k->algo, g->ws,
                                         g->ws_bytes, &zero, g->ty, out);
            break;
        case OP_BWD_DATA:
            st = cudnnConvolutionBackwardData(g->dnn, &one, g->fw, in2, g->ty, in1, g->cv, (cudnnConvolutionBwdDataAlgo_t)k->algo,
                                              g->ws, g->ws_bytes, &zero, g->tx, out);
            break;
        default:
            st = cudnnConvolutionBackwardFilter(g->dnn, &one, g->tx, in1, g->ty, in2, g->cv,
                                                (cudnnConvolutionBwdFilterAlgo_t)k->algo, g->ws, g->ws_bytes, &zero, g->fw, out);
        }
        if (st == CUDNN_STATUS_SUCCESS) return SEG_OK;
        if (!declined(st) || !more)
            return seg_err(SEG_EGPU, "cuDNN conv %s (%dx%d, %d -> %d channels, batch %d, algorithm %d): %s", op_name[op],
                           q->xh, q->xw, q->xc, q->k, N, k->algo, cudnnGetErrorString(st));
        next_cand(g, a, op);                       /* declined: the next candidate, from now on */
    }
}

/* The weights of geometry q in the conv data type. */
static const void *wptr(GpuNet *g, const ConvGeo *q)
{
    return q->half ? (const void *)((const char *)g->hparams + 2 * q->hw) : (const void *)(g->params + q->w);
}

/* y = conv(x, w): fp32 in and out; AMP casts x to half NHWC, runs the conv in half, casts y back. */
static int op_fwd(GpuNet *g, ConvGeo *q, int N, const float *x, float *y)
{
    TRY(geo_desc(g, q, N));
    if (!q->half) return run_op(g, q, N, OP_FWD, x, wptr(g, q), y);
    gk_to_half_nhwc(g->st, g->hk, x, g->hA, N, q->xc, (long)q->xh * q->xw);
    TRY(run_op(g, q, N, OP_FWD, g->hA, wptr(g, q), g->hB));
    gk_from_half_nhwc(g->st, g->hk, g->hB, y, N, q->k, (long)q->yh * q->yw);
    return SEG_OK;
}

/* dx = conv's input gradient from dy (also the transposed conv's forward). dy_cast: dy's half
 * NHWC copy is still in hB (op_bwd_filter of the same dy just made it). */
static int op_bwd_data(GpuNet *g, ConvGeo *q, int N, const float *dy, float *dx, int dy_cast)
{
    TRY(geo_desc(g, q, N));
    if (!q->half) return run_op(g, q, N, OP_BWD_DATA, dy, wptr(g, q), dx);
    if (!dy_cast) gk_to_half_nhwc(g->st, g->hk, dy, g->hB, N, q->k, (long)q->yh * q->yw);
    TRY(run_op(g, q, N, OP_BWD_DATA, g->hB, wptr(g, q), g->hA));
    gk_from_half_nhwc(g->st, g->hk, g->hA, dx, N, q->xc, (long)q->xh * q->xw);
    return SEG_OK;
}

/* grads[q->w ..] = dL/dw from x and dy (overwritten). */
static int op_bwd_filter(GpuNet *g, ConvGeo *q, int N, const float *x, const float *dy)
{
    TRY(geo_desc(g, q, N));
    if (!q->half) return run_op(g, q, N, OP_BWD_FILTER, x, dy, g->grads + q->w);
    gk_to_half_nhwc(g->st, g->hk, x, g->hA, N, q->xc, (long)q->xh * q->xw);
    gk_to_half_nhwc(g->st, g->hk, dy, g->hB, N, q->k, (long)q->yh * q->yw);
    TRY(run_op(g, q, N, OP_BWD_FILTER, g->hA, g->hB, g->hW));
    gk_from_half_nhwc(g->st, g->hk, g->hW, g->grads + q->w, q->k, q->xc, (long)q->r * q->r);   /* KRSC -> KCRS */
    return SEG_OK;
}

/* BatchNorm tensor descriptors for conv c's output at batch N: tx = (N,Co,H,W) float, tbn. */
static int bn_desc(GpuNet *g, const GLayer *c, int N)
{
    DNN_TRY(cudnnSetTensor4dDescriptor(g->tx, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, c->geo.k, c->geo.yh, c->geo.yw));
    DNN_TRY(cudnnDeriveBNTensorDescriptor(g->tbn, g->tx, CUDNN_BATCHNORM_SPATIAL));
    return SEG_OK;
}

/* Layer i (CONV3): a = ReLU(BN(conv(in))). */
static int conv_forward(GpuNet *g, int i, const float *in, int N, int train)
{
    const float one = 1.f, zero = 0.f;
    GLayer *c = &g->lay[i];
    const UnetLayer *l = &g->net.layer[i];
    TRY(op_fwd(g, &c->geo, N, in, c->y));
    TRY(bn_desc(g, c, N));
    if (train)
        DNN_TRY(cudnnBatchNormalizationForwardTraining(g->dnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, g->tx, c->y, g->tx, c->a,
                                                       g->tbn, g->params + l->b, g->params + l->beta, BN_MOMENTUM,
                                                       g->bufs + l->rm, g->bufs + l->rv, BN_EPS, c->smean, c->sinv));
    else
        DNN_TRY(cudnnBatchNormalizationForwardInference(g->dnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, g->tx, c->y, g->tx, c->a,
                                                        g->tbn, g->params + l->b, g->params + l->beta, g->bufs + l->rm,
                                                        g->bufs + l->rv, BN_EPS));
    gk_relu(g->st, c->a, (long)N * c->geo.k * c->geo.yh * c->geo.yw);
    return SEG_OK;
}

/* Layer i (CONV3). da: dL/d(ReLU output) on entry (clobbered). Weight, gamma, beta grads;
 * dx when not NULL. */
static int conv_backward(GpuNet *g, int i, float *da, const float *in, float *dx, int N)
{
    const float one = 1.f, zero = 0.f;
    GLayer *c = &g->lay[i];
    const UnetLayer *l = &g->net.layer[i];
    gk_relu_bwd(g->st, da, c->a, (long)N * c->geo.k * c->geo.yh * c->geo.yw);
    TRY(bn_desc(g, c, N));
    DNN_TRY(cudnnBatchNormalizationBackward(g->dnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, g->tx, c->y, g->tx, da,
                                            g->tx, g->gDZ, g->tbn, g->params + l->b, g->grads + l->b,
                                            g->grads + l->beta, BN_EPS, c->smean, c->sinv));
    TRY(op_bwd_filter(g, &c->geo, N, in, g->gDZ));
    if (dx) TRY(op_bwd_data(g, &c->geo, N, g->gDZ, dx, 1));
    return SEG_OK;
}

/* ---- create / state -------------------------------------------------------------------------- */
/* Streams, handles, descriptors, buffers, and every algorithm for the full batch (so workspace
 * growth happens before training). gpu_net_create frees what it made when this fails. */
static int setup(GpuNet *g)
{
    CU_TRY(cudaSetDevice(g->d.device));
    CU_TRY(cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking));
    CU_TRY(cudaStreamCreateWithFlags(&g->cp, cudaStreamNonBlocking));
    DNN_TRY(cudnnCreate(&g->dnn));
    DNN_TRY(cudnnSetStream(g->dnn, g->st));
    DNN_TRY(cudnnCreateTensorDescriptor(&g->tx));
    DNN_TRY(cudnnCreateTensorDescriptor(&g->ty));
    DNN_TRY(cudnnCreateTensorDescriptor(&g->tbn));
    DNN_TRY(cudnnCreateFilterDescriptor(&g->fw));
    DNN_TRY(cudnnCreateConvolutionDescriptor(&g->cv));
    BLAS_TRY(cublasCreate(&g->blas));
    BLAS_TRY(cublasSetStream(g->blas, g->st));
    /* true fp32 for the head, TF32 only when asked for */
    BLAS_TRY(cublasSetMathMode(g->blas, g->amp == UNET_AMP_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
    TRY(create_buffers(g));
    ConvGeo *qs[UNET_LAYERS_MAX];
    const int nq = all_geos(g, qs);
    for (int i = 0; i < nq; i++) {
        Algo *a;
        TRY(geo_desc(g, qs[i], g->d.max_batch));
        TRY(geo_algo(g, qs[i], g->d.max_batch, &a));
    }
    CU_TRY(cudaStreamSynchronize(g->st));
    return SEG_OK;
}

extern "C" int gpu_net_create(const GpuNetDesc *d, GpuNet **out)
{
    *out = NULL;
    TRY(gpu_probe(d->device, NULL, 0));
    GpuNet *g = (GpuNet *)calloc(1, sizeof *g);
    if (!g) return seg_err(SEG_ENOMEM, "GPU model");
    g->d = *d;
    g->net = *d->net;
    g->d.net = &g->net;
    g->L = g->net.cfg.n_levels;
    g->C = g->net.cfg.n_classes;
    g->HW = (long)d->H * d->W;
    g->amp = d->amp;
    g->hk = d->amp == UNET_AMP_BF16 || d->amp == UNET_AMP_FP16 ? d->amp : 0;
    const char *det = getenv("SEGKIT_CUDNN_DETERMINISTIC");
    g->deterministic = det && det[0] == '1';
    /* fp32: FMA only (no TF32), the parity reference; tf32: cuDNN may use TF32 tensor cores */
    g->math = d->amp == UNET_AMP_OFF ? CUDNN_FMA_MATH : d->amp == UNET_AMP_TF32 ? CUDNN_DEFAULT_MATH : CUDNN_TENSOR_OP_MATH;
    g->dt = d->amp == UNET_AMP_BF16 ? CUDNN_DATA_BFLOAT16 : d->amp == UNET_AMP_FP16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
    g->loss_scale = d->amp == UNET_AMP_FP16 ? 65536.f : 1.f;
    g->hparams_stale = 1;
    const int rc = setup(g);
    if (rc < 0) { gpu_net_free(g); return rc; }
    *out = g;
    return SEG_OK;
}

extern "C" size_t gpu_net_memory_bytes(const GpuNet *g) { return g->mem_bytes; }

extern "C" int gpu_net_upload(GpuNet *g, const float *params, const float *bufs, const float *adam_m, const float *adam_v)
{
    const size_t np = sizeof(float) * g->net.n_params;
    ON_DEVICE(g);
    /* all on the compute stream, then wait: the streams are non-blocking, so plain cudaMemcpy
     * (legacy stream) would not be ordered before the next kernels */
    CU_TRY(cudaMemcpyAsync(g->params, params, np, cudaMemcpyHostToDevice, g->st));
    CU_TRY(cudaMemcpyAsync(g->adam_m, adam_m, np, cudaMemcpyHostToDevice, g->st));
    CU_TRY(cudaMemcpyAsync(g->adam_v, adam_v, np, cudaMemcpyHostToDevice, g->st));
    if (g->net.n_bufs) CU_TRY(cudaMemcpyAsync(g->bufs, bufs, sizeof(float) * g->net.n_bufs, cudaMemcpyHostToDevice, g->st));
    CU_TRY(cudaMemsetAsync(g->grads, 0, np, g->st));
    CU_TRY(cudaStreamSynchronize(g->st));
    g->hparams_stale = 1;
    g->have_loss = 0;
    g->last_N = 0;
    return SEG_OK;
}

extern "C" int gpu_net_download(GpuNet *g, float *params, float *bufs, float *adam_m, float *adam_v, float *grads)
{
    const size_t np = sizeof(float) * g->net.n_params;
    ON_DEVICE(g);
    if (params) CU_TRY(cudaMemcpyAsync(params, g->params, np, cudaMemcpyDeviceToHost, g->st));
    if (adam_m) CU_TRY(cudaMemcpyAsync(adam_m, g->adam_m, np, cudaMemcpyDeviceToHost, g->st));
    if (adam_v) CU_TRY(cudaMemcpyAsync(adam_v, g->adam_v, np, cudaMemcpyDeviceToHost, g->st));
    if (grads) CU_TRY(cudaMemcpyAsync(grads, g->grads, np, cudaMemcpyDeviceToHost, g->st));
    if (bufs && g->net.n_bufs) CU_TRY(cudaMemcpyAsync(bufs, g->bufs, sizeof(float) * g->net.n_bufs, cudaMemcpyDeviceToHost, g->st));
    CU_TRY(cudaStreamSynchronize(g->st));
    return SEG_OK;
}

/* ---- forward ---------------------------------------------------------------------------------- */
static void ring_record(GpuNet *g, int k)
{
    const int r = (g->ring_first + g->ring_n - 1 + RING) % RING;   /* the current step */
    cudaEventRecord(g->ev[r][k], g->st);
    g->done[r] = k == 3;
}

extern "C" int gpu_net_forward(GpuNet *g, const float *x, int N, int train)
{
    ON_DEVICE(g);
    if (N < 1 || N > g->d.max_batch)
        return seg_err(SEG_EARG, "unet_forward: batch %d (model holds 1..%d)", N, g->d.max_batch);
    const int L = g->L, *f = g->net.cfg.features, C = g->C;
    const int s = g->xs ^ 1;
    const size_t nx = (size_t)N * g->net.cfg.in_ch * g->HW;
    /* the pinned slot and the device slot were last used two forwards ago */
    CU_TRY(cudaEventSynchronize(g->x_up[s]));
    memcpy(g->x_pin[s], x, sizeof(float) * nx);
    CU_TRY(cudaStreamWaitEvent(g->cp, g->x_free[s], 0));
    CU_TRY(cudaMemcpyAsync(g->xin[s], g->x_pin[s], sizeof(float) * nx, cudaMemcpyHostToDevice, g->cp));
    CU_TRY(cudaEventRecord(g->x_up[s], g->cp));
    CU_TRY(cudaStreamWaitEvent(g->st, g->x_up[s], 0));
    g->xs = s;
    if (train) {
        if (g->ring_n == RING) { g->ring_first = (g->ring_first + 1) % RING; g->ring_n--; }
        g->ring_n++;
        ring_record(g, 0);
    }
    if (g->hk && g->hparams_stale) {
        ConvGeo *qs[UNET_LAYERS_MAX];
        const int nq = all_geos(g, qs);
        for (int i = 0; i < nq; i++)            /* KCRS fp32 -> KRSC half */
            if (qs[i]->half) gk_to_half_nhwc(g->st, g->hk, g->params + qs[i]->w, (char *)g->hparams + 2 * qs[i]->hw, qs[i]->k, qs[i]->xc,
                            (long)qs[i]->r * qs[i]->r);
        g->hparams_stale = 0;
    }
    const UnetLayers *t = &g->net;
    const float *in = g->xin[s];
    for (int l = 0; l < L; l++) {
        const int H = g->d.H >> l, W = g->d.W >> l;
        TRY(conv_forward(g, t->enc[l][0], l == 0 ? in : g->lay[t->pool[l - 1]].y, N, train));
        if (l == 0) CU_TRY(cudaEventRecord(g->x_free[s], g->st));   /* backward records it again */
        TRY(conv_forward(g, t->enc[l][1], g->lay[t->enc[l][0]].a, N, train));
        gk_pool_fwd(g->st, g->lay[t->enc[l][1]].a, g->lay[t->pool[l]].y, (long)N * f[l], H, W);
    }
    TRY(conv_forward(g, t->bott[0], g->lay[t->pool[L - 1]].y, N, train));
    TRY(conv_forward(g, t->bott[1], g->lay[t->bott[0]].a, N, train));
    const float *prev = g->lay[t->bott[1]].a;
    for (int l = L - 1; l >= 0; l--) {
        const long HW = (long)(g->d.H >> l) * (g->d.W >> l);
        GLayer *u = &g->lay[t->up[l]], *cat = &g->lay[t->cat[l]];
        TRY(op_bwd_data(g, &u->geo, N, prev, u->y, 0));
        gk_bias_add(g->st, u->y, g->params + t->layer[t->up[l]].b, N, f[l], HW);
        gk_concat(g->st, g->lay[t->enc[l][1]].a, u->y, cat->y, N, f[l], f[l], HW);
        TRY(conv_forward(g, t->dec[l][0], cat->y, N, train));
        TRY(conv_forward(g, t->dec[l][1], g->lay[t->dec[l][0]].a, N, train));
        prev = g->lay[t->dec[l][1]].a;
    }
    /* head: logits[n] (C, HW) = Wh (C, F) x a[n] (F, HW), column-major as (HW x F)(F x C) */
    const float one = 1.f, zero = 0.f;
    const int HW = (int)g->HW, F = f[0];
    BLAS_TRY(cublasSgemmStridedBatched(g->blas, CUBLAS_OP_N, CUBLAS_OP_N, HW, C, F, &one, prev, HW, (long long)F * HW,
                                       g->params + t->layer[t->head].w, F, 0, &zero, g->logits, HW, (long long)C * HW, N));
    gk_bias_add(g->st, g->logits, g->params + t->layer[t->head].b, N, C, g->HW);
    if (train) gk_inc(g->st, g->bufs, g->nbt_off, g->n_nbt);
    KERNEL_CHECK();
    g->last_N = N;
    g->last_train = train;
    g->have_loss = 0;
    return SEG_OK;
}

extern "C" int gpu_net_logits(GpuNet *g, float *out)
{
    ON_DEVICE(g);
    if (!g->last_N) return seg_err(SEG_EARG, "unet_logits: no forward yet");
    CU_TRY(cudaMemcpyAsync(out, g->logits, sizeof(float) * (size_t)g->last_N * g->C * g->HW, cudaMemcpyDeviceToHost, g->st));
    CU_TRY(cudaStreamSynchronize(g->st));
    return SEG_OK;
}

/* Upload targets into slot s through the copy stream (after the slot's last reader). */
static int upload_targets(GpuNet *g, int s, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
                          int N)
{
    const size_t nb = (size_t)N * g->C * (size_t)(g->HW / 8), np = (size_t)N * ((g->C + 7) / 8);
    CU_TRY(cudaEventSynchronize(g->t_up[s]));
    memcpy(g->bits_pin[s], bits, nb);
    memcpy(g->pres_pin[s], presence, np);
    CU_TRY(cudaStreamWaitEvent(g->cp, g->t_free[s], 0));
    CU_TRY(cudaMemcpyAsync(g->bits[s], g->bits_pin[s], nb, cudaMemcpyHostToDevice, g->cp));
    CU_TRY(cudaMemcpyAsync(g->pres[s], g->pres_pin[s], np, cudaMemcpyHostToDevice, g->cp));
    g->has_lab[s] = labelled != NULL;
    if (labelled) {
        memcpy(g->lab_pin[s], labelled, np);
        CU_TRY(cudaMemcpyAsync(g->lab[s], g->lab_pin[s], np, cudaMemcpyHostToDevice, g->cp));
    }
    CU_TRY(cudaEventRecord(g->t_up[s], g->cp));
    CU_TRY(cudaStreamWaitEvent(g->st, g->t_up[s], 0));
    return SEG_OK;
}

extern "C" int gpu_net_loss(GpuNet *g, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N,
                            int dice, double *planes)
{
    ON_DEVICE(g);
    if (N != g->last_N || N < 1) return seg_err(SEG_EARG, "unet_loss: batch %d but the last forward had %d", N, g->last_N);
    g->have_loss = 0;
    const int s = g->ts ^ 1;
    TRY(upload_targets(g, s, bits, presence, labelled, N));
    g->ts = s;
    g->n_lab = (long)N * g->C;
    if (labelled) {
        g->n_lab = 0;
        for (int n = 0; n < N; n++)
            for (int c = 0; c < g->C; c++) g->n_lab += gm_present(labelled, g->C, n, c);
    }
    gk_bce_sum(g->st, g->logits, g->bits[s], g->pres[s], g->has_lab[s] ? g->lab[s] : NULL, N, g->C, g->HW, dice,
               g->partial);
    KERNEL_CHECK();
    if (!g->last_train) CU_TRY(cudaEventRecord(g->t_free[s], g->st));
    if (g->last_train) ring_record(g, 1);
    const size_t np = (size_t)4 * N * g->C;
    CU_TRY(cudaMemcpyAsync(g->partial_pin, g->partial, sizeof(double) * np, cudaMemcpyDeviceToHost, g->st));
    CU_TRY(cudaStreamSynchronize(g->st));
    for (size_t i = 0; i < np; i++) planes[i] = dice || i % 4 == 0 ? g->partial_pin[i] : 0.0;
    g->use_coef = 0;
    g->bce_w = 1.f;
    g->have_loss = 1;
    return SEG_OK;
}

extern "C" int gpu_net_set_loss_grad(GpuNet *g, float bce_w, const float *a, const float *b)
{
    ON_DEVICE(g);
    g->bce_w = bce_w;
    g->use_coef = a && b;
    if (!g->use_coef) return SEG_OK;
    /* the pinned copy is free: gpu_net_loss waited for the stream, and this upload is the
     * only reader of coef_pin queued since */
    memcpy(g->coef_pin, a, sizeof(float) * g->C);
    memcpy(g->coef_pin + g->C, b, sizeof(float) * g->C);
    CU_TRY(cudaMemcpyAsync(g->coef, g->coef_pin, sizeof(float) * 2 * g->C, cudaMemcpyHostToDevice, g->st));
    return SEG_OK;
}

/* ---- backward --------------------------------------------------------------------------------- */
extern "C" int gpu_net_backward(GpuNet *g)
{
    ON_DEVICE(g);
    if (!g->last_N || !g->last_train || !g->have_loss)
        return seg_err(SEG_EARG, "unet_backward: needs forward(train=1) then unet_loss first");
    const UnetLayers *t = &g->net;
    const int N = g->last_N, L = g->L, *f = t->cfg.features, C = g->C, s = g->ts;
    const size_t head_w = t->layer[t->head].w, head_b = t->layer[t->head].b;
    ring_record(g, 2);
    const float scale = g->n_lab ? (float)(g->bce_w * g->loss_scale / ((double)g->n_lab * (double)g->HW)) : 0.f;
    gk_bce_grad(g->st, g->logits, g->bits[s], g->pres[s], g->has_lab[s] ? g->lab[s] : NULL, N, C, g->HW, scale, g->use_coef ? g->coef : NULL,
                g->use_coef ? g->coef + C : NULL, g->loss_scale, g->dlogits);
    CU_TRY(cudaEventRecord(g->t_free[s], g->st));
    /* head: dW (C,F) = sum_n dY[n] (C,HW) x A[n]^T; dA[n] (F,HW) = W^T dY[n]; db = sum dY */
    const float one = 1.f, zero = 0.f;
    const int HW = (int)g->HW, F = f[0];
    const float *a0 = g->lay[t->dec[0][1]].a;
    for (int n = 0; n < N; n++)
        BLAS_TRY(cublasSgemm(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, F, C, HW, &one, a0 + (size_t)n * F * HW, HW,
                             g->dlogits + (size_t)n * C * HW, HW, n ? &one : &zero, g->grads + head_w, F));
    gk_channel_sum(g->st, g->dlogits, N, C, g->HW, g->grads + head_b, g->csum);
    float *cur = g->gA, *oth = g->gB;
    BLAS_TRY(cublasSgemmStridedBatched(g->blas, CUBLAS_OP_N, CUBLAS_OP_T, HW, F, C, &one, g->dlogits, HW, (long long)C * HW,
                                       g->params + head_w, F, 0, &zero, cur, HW, (long long)F * HW, N));
    for (int l = 0; l < L; l++) {                              /* decoder, top level first */
        const long HWl = (long)(g->d.H >> l) * (g->d.W >> l);
        const int d1 = t->dec[l][0], d2 = t->dec[l][1];
        GLayer *u = &g->lay[t->up[l]], *cat = &g->lay[t->cat[l]];
        TRY(conv_backward(g, d2, cur, g->lay[d1].a, oth, N));
        TRY(conv_backward(g, d1, oth, cat->y, g->gC, N));
        gk_split(g->st, g->gC, cat->dskip, cur, N, f[l], f[l], HWl);
        const float *prev = l == L - 1 ? g->lay[t->bott[1]].a : g->lay[t->dec[l + 1][1]].a;
        gk_channel_sum(g->st, cur, N, f[l], HWl, g->grads + t->layer[t->up[l]].b, g->csum);
        TRY(op_bwd_filter(g, &u->geo, N, cur, prev));
        TRY(op_fwd(g, &u->geo, N, cur, oth));
        float *tmp = cur; cur = oth; oth = tmp;
    }
    TRY(conv_backward(g, t->bott[1], cur, g->lay[t->bott[0]].a, oth, N));
    TRY(conv_backward(g, t->bott[0], oth, g->lay[t->pool[L - 1]].y, cur, N));
    gk_pool_bwd(g->st, g->lay[t->enc[L - 1][1]].a, cur, g->lay[t->cat[L - 1]].dskip, (long)N * f[L - 1], g->d.H >> (L - 1),
                g->d.W >> (L - 1));
    for (int l = L - 1; l >= 0; l--) {                         /* encoder, deepest first */
        const int e1 = t->enc[l][0], e2 = t->enc[l][1];
        TRY(conv_backward(g, e2, g->lay[t->cat[l]].dskip, g->lay[e1].a, g->gA, N));
        if (l == 0) {
            TRY(conv_backward(g, e1, g->gA, g->xin[g->xs], NULL, N));
            CU_TRY(cudaEventRecord(g->x_free[g->xs], g->st));
        } else {
            TRY(conv_backward(g, e1, g->gA, g->lay[t->pool[l - 1]].y, g->gB, N));
            gk_pool_bwd(g->st, g->lay[t->enc[l - 1][1]].a, g->gB, g->lay[t->cat[l - 1]].dskip, (long)N * f[l - 1],
                        g->d.H >> (l - 1), g->d.W >> (l - 1));
        }
    }
    if (g->loss_scale != 1.f) gk_scale(g->st, g->grads, g->net.n_params, 1.f / g->loss_scale);
    KERNEL_CHECK();
    return SEG_OK;
}

extern "C" int gpu_net_grad_sumsq(GpuNet *g, double *out)
{
    ON_DEVICE(g);
    gk_sumsq(g->st, g->grads, g->net.n_params, g->partial);
    KERNEL_CHECK();
    CU_TRY(cudaMemcpyAsync(g->partial_pin, g->partial, sizeof(double) * GK_SUMSQ_BLOCKS, cudaMemcpyDeviceToHost, g->st));
    CU_TRY(cudaStreamSynchronize(g->st));
    double s = 0;
    for (int i = 0; i < GK_SUMSQ_BLOCKS; i++) s += g->partial_pin[i];
    *out = s;
    return SEG_OK;
}

extern "C" int gpu_net_scale_grads(GpuNet *g, float s)
{
    ON_DEVICE(g);
    gk_scale(g->st, g->grads, g->net.n_params, s);
    KERNEL_CHECK();
    return SEG_OK;
}

extern "C" int gpu_net_adam(GpuNet *g, float lr, float beta1, float beta2, float eps, int64_t t, int *skipped)
{
    ON_DEVICE(g);
    *skipped = 0;
    if (g->amp == UNET_AMP_FP16) {                 /* overflow check of this step's gradients */
        double ss;
        TRY(gpu_net_grad_sumsq(g, &ss));
        if (!isfinite(ss)) {
            g->loss_scale = g->loss_scale > 1.f ? g->loss_scale * 0.5f : 1.f;
            g->good_steps = 0;
            *skipped = 1;
            ring_record(g, 3);
            return SEG_OK;
        }
        if (++g->good_steps == 2000 && g->loss_scale < 16777216.f) { g->loss_scale *= 2.f; g->good_steps = 0; }
    }
    const double bc1 = 1.0 - pow((double)beta1, (double)t), bc2 = 1.0 - pow((double)beta2, (double)t);
    gk_adam(g->st, g->params, g->grads, g->adam_m, g->adam_v, g->net.n_params, beta1, beta2, (float)(1.0 - (double)beta1),
            (float)(1.0 - (double)beta2), eps, (float)((double)lr / bc1), (float)sqrt(bc2));
    KERNEL_CHECK();
    g->hparams_stale = 1;
    ring_record(g, 3);
    return SEG_OK;
}

extern "C" int gpu_net_dice(GpuNet *g, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled, int N,
                            int64_t *tp, int64_t *fp, int64_t *fn)
{
    if (N < 1 || N > g->last_N) return SEG_OK;
    /* the slot the loss did not use: a backward after this still finds the loss's targets */
    const int C = g->C, s = g->ts ^ 1;
    ON_DEVICE(g);
    TRY(upload_targets(g, s, bits, presence, labelled, N));
    CU_TRY(cudaMemsetAsync(g->dice, 0, sizeof(unsigned long long) * 3 * C, g->st));
    gk_dice(g->st, g->logits, g->bits[s], g->pres[s], g->has_lab[s] ? g->lab[s] : NULL, N, C, g->HW, g->dice, g->dice + C, g->dice + 2 * C);
    KERNEL_CHECK();
    CU_TRY(cudaEventRecord(g->t_free[s], g->st));
    CU_TRY(cudaMemcpyAsync(g->dice_pin, g->dice, sizeof(unsigned long long) * 3 * C, cudaMemcpyDeviceToHost, g->st));
    CU_TRY(cudaStreamSynchronize(g->st));
    for (int c = 0; c < C; c++) {
        tp[c] += (int64_t)g->dice_pin[c];
        fp[c] += (int64_t)g->dice_pin[C + c];
        fn[c] += (int64_t)g->dice_pin[2 * C + c];
    }
    return SEG_OK;
}

extern "C" int gpu_net_wait(GpuNet *g)
{
    ON_DEVICE(g);
    CU_TRY(cudaStreamSynchronize(g->st));
    KERNEL_CHECK();
    return SEG_OK;
}

extern "C" int gpu_net_step_times(GpuNet *g, double *busy_s, double *wall_s, int *steps)
{
    ON_DEVICE(g);
    *busy_s = *wall_s = 0;
    *steps = 0;
    CU_TRY(cudaStreamSynchronize(g->st));
    int r0 = -1, r1 = -1;
    for (int i = 0; i < g->ring_n; i++) {             /* complete steps only (forward, loss, backward, Adam) */
        const int r = (g->ring_first + i) % RING;
        float a = 0, b = 0;
        if (!g->done[r]) continue;
        if (cudaEventElapsedTime(&a, g->ev[r][0], g->ev[r][1]) != cudaSuccess ||
            cudaEventElapsedTime(&b, g->ev[r][2], g->ev[r][3]) != cudaSuccess) { cudaGetLastError(); continue; }
        *busy_s += (a + b) * 1e-3;
        ++*steps;
        if (r0 < 0) r0 = r;
        r1 = r;
    }
    if (r0 >= 0) {
        float w = 0;
        if (cudaEventElapsedTime(&w, g->ev[r0][0], g->ev[r1][3]) == cudaSuccess) *wall_s = w * 1e-3;
        else cudaGetLastError();
    }
    g->ring_n = 0;
    g->ring_first = 0;
    return SEG_OK;
}
