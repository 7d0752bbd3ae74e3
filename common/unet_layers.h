/* common/unet_layers.h : the U-Net as data. One table of layers built from a UnetConfig:
 * each layer's kind, channels, resolution, its offsets into the parameter block and the
 * BatchNorm buffer block, and its state-dict tensors (PyTorch names, shapes, order).
 * Everything that lists the layers iterates this table: the CPU arena, the weight packing,
 * the accumulator sizing, the FLOP count, the checkpoint names and the GPU buffers; the
 * forward and backward passes walk the graph through its index arrays (enc, pool, bott,
 * up, cat, dec, head). Adding a layer or changing the input channels is one edit, in
 * unet_layers_build. Plain C, also included by the CUDA backend (C++). */
#ifndef SEG_UNET_LAYERS_H
#define SEG_UNET_LAYERS_H
#include <stddef.h>
#include <stdint.h>
#include "unet.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Layer kinds. CONV3: conv3x3 pad 1 (no bias) -> BatchNorm2d -> ReLU. POOL: MaxPool 2x2.
 * UP: ConvTranspose2d 2x2 stride 2 with bias. CAT: concat(skip, up) on channels (no tensors).
 * HEAD: conv1x1 with bias to the classes (logits). */
enum { UNET_CONV3 = 0, UNET_POOL, UNET_UP, UNET_CAT, UNET_HEAD };

#define UNET_LAYERS_MAX  (7 * UNET_MAX_LEVELS + 3)
#define UNET_TENSORS_MAX (6 * (4 * UNET_MAX_LEVELS + 2) + 2 * UNET_MAX_LEVELS + 2)
#define UNET_NAME_MAX    48

typedef struct UnetLayer {
    int    kind;          /* UNET_CONV3 .. UNET_HEAD */
    int    cin, cout;     /* input and output channels; CAT: cin = skip channels, cout = skip + up */
    int    level;         /* runs at (H >> level, W >> level); POOL: its input's; UP: its output's */
    int    first;         /* reads the network input (no input gradient needed) */
    size_t w, b;          /* param offsets: weight; bias (UP, HEAD) or BN gamma (CONV3) */
    size_t beta;          /* CONV3: BN beta (param offset) */
    size_t rm, rv, nbt;   /* CONV3: running mean, var, num_batches_tracked (buffer offsets) */
    int    t0, nt;        /* its state-dict tensors: tensor[t0 .. t0 + nt) */
} UnetLayer;

/* One state-dict entry: trainable ones live in the param block, the rest in the buffer block. */
typedef struct UnetLayerTensor {
    char    name[UNET_NAME_MAX];   /* PyTorch key, e.g. "downs.0.net.1.running_mean" */
    int     ndim;
    int64_t shape[4];
    size_t  count;
    int     trainable;
    size_t  off;                   /* offset in the param block (trainable) or the buffer block */
} UnetLayerTensor;

typedef struct UnetLayers {
    UnetConfig      cfg;
    int             n;                        /* layers, in state-dict order */
    UnetLayer       layer[UNET_LAYERS_MAX];
    int             n_tensors;                /* state dict, PyTorch order */
    UnetLayerTensor tensor[UNET_TENSORS_MAX];
    size_t          n_params, n_bufs;         /* floats in the param and buffer blocks */
    /* the graph: layer indices per level l (0 = full resolution) */
    int enc[UNET_MAX_LEVELS][2], pool[UNET_MAX_LEVELS], bott[2];
    int up[UNET_MAX_LEVELS], cat[UNET_MAX_LEVELS], dec[UNET_MAX_LEVELS][2], head;
} UnetLayers;

/* Fill *out from cfg (n_levels 1..UNET_MAX_LEVELS, positive channels, else SEG_EARG). */
int    unet_layers_build(const UnetConfig *cfg, UnetLayers *out);
/* Forward FLOPs of layer l for one H x W sample (2 x MACs; 0 for POOL and CAT). */
double unet_layers_flops(const UnetLayer *l, int H, int W);
/* Sum of unet_layers_flops over the table. */
double unet_layers_total_flops(const UnetLayers *t, int H, int W);
/* "conv3x3+bn+relu", "maxpool2x2", "convT2x2", "concat", "conv1x1" ("?" when unknown). */
const char *unet_layers_kind_name(int kind);

#ifdef __cplusplus
}
#endif
#endif
