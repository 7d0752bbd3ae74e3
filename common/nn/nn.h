/* common/nn/nn.h : the U-Net's layers on the CPU, over flat NHWC float buffers.
 *
 * Layout: an activation of N samples, H x W pixels and C channels is a pixel-major array:
 * pixel p = (n*H + y)*W + x, channel c at data[p*ld + c], ld >= C (ld > C lets two tensors
 * share one buffer, e.g. the two halves of a concatenation). Weights stay in PyTorch layout
 * in the parameter block and are repacked into GEMM panels (nn_*_pack) before use.
 *
 * Every layer splits its pixels into tiles that fit the L2 cache and runs them on an
 * NnTeam (a fixed set of threads, each with preallocated scratch): the tile's GEMM operand
 * (padded row buffers for wide images, im2col for narrow ones) -> register-blocked GEMM
 * (nn_gemm.c: AVX-512, AVX2+FMA or OpenBLAS, picked per team: docs/cpu.md) -> epilogue.
 * Nothing here allocates after nn_team_create, and results do not depend on timing (each
 * thread owns a fixed range of tiles, so partial sums are always added in the same order
 * for a given thread count and kernel path).
 * BatchNorm+ReLU is applied lazily: producers store the raw conv output z, and consumers
 * read it through an NnAct that carries the per-channel scale/shift (relu(z*s + h)).
 *
 * Backward functions add (+=) into weight grads; input grads are overwritten. */
#ifndef SEG_NN_H
#define SEG_NN_H
#include <stddef.h>
#include <stdint.h>

/* ---- thread team ------------------------------------------------------------------- */
typedef struct NnTeam NnTeam;
/* Work callback: thread tid runs items [begin, end) (a fixed, contiguous share). */
typedef void (*NnTask)(void *ctx, int tid, int begin, int end);

/* Start n_threads-1 workers (0: all online cores); each thread gets scratch_floats of
 * tile scratch and acc_floats of accumulator space (see nn_*_acc_floats). SEG_ENOMEM/SEG_EARG.
 * The team runs one kernel path for its lifetime (docs/cpu.md): the best this CPU has
 * (cpuid), or SEGKIT_CPU=avx512|avx2|generic (SEG_EARG when this CPU lacks it);
 * SEGKIT_NN_GENERIC=1 also selects the portable kernels (for tests). */
int    nn_team_create(int n_threads, size_t scratch_floats, size_t acc_floats, NnTeam **out);
void   nn_team_free(NnTeam *t);                         /* NULL-safe; joins the workers */
int    nn_team_size(const NnTeam *t);
int    nn_team_generic(const NnTeam *t);                /* 1: portable kernels in use */
const char *nn_team_cpu(const NnTeam *t);               /* "avx512", "avx2" or "generic" */
/* The kernel path a team created now would run (static string; "unsupported" when
 * SEGKIT_CPU names a path this CPU lacks: nn_team_create then fails saying why). */
const char *nn_cpu_name(void);
float *nn_team_scratch(NnTeam *t, int tid);             /* scratch_floats, 64-byte aligned */
float *nn_team_acc(NnTeam *t, int tid);                 /* acc_floats, 64-byte aligned */
size_t nn_team_scratch_floats(const NnTeam *t);
/* Split n_items over the first nn_team_active() threads (a non-empty share each) and run
 * fn on them; returns when all are done. */
void   nn_team_run(NnTeam *t, int n_items, NnTask fn, void *ctx);
int    nn_team_active(const NnTeam *t, int n_items);    /* min(threads, n_items) */
/* The same, but items are handed out one at a time (fn sees begin+1 == end) to whichever
 * thread is free: for work whose results do not depend on which thread ran an item. */
void   nn_team_run_dynamic(NnTeam *t, int n_items, NnTask fn, void *ctx);
/* NN_ITEM_DOUBLES doubles shared by the team for per-item partial results (a layer keeps
 * per-item sums there to reduce them in item order: deterministic under dynamic runs). */
#define NN_ITEM_DOUBLES ((size_t)1 << 18)
double *nn_team_items(NnTeam *t);

/* Scratch floats per thread that every layer below needs at least for max_ch channels
 * (tiles shrink to fit what they get, but not below one 12-pixel block). */
size_t nn_min_scratch_floats(int max_ch);
#define NN_SCRATCH_DEFAULT ((size_t)320 * 1024)   /* 1.25 MiB per thread */

/* ---- activation views ---------------------------------------------------------------- */
/* A read view of an NHWC tensor: x*scale[c] + shift[c] (as stored when scale == NULL),
 * then max(0, .) when relu: the lazy BatchNorm+ReLU of a raw conv output. */
typedef struct NnAct {
    const float *x;
    int ld, C;
    const float *scale, *shift;
    int relu;
} NnAct;
/* A write view: C channels at y[p*ld + c]. */
typedef struct NnOut {
    float *y;
    int ld, C;
} NnOut;

/* y[p*ldy + c] = view(x) for P pixels: materialise a lazy view. */
void nn_act_apply(NnTeam *t, float *y, int ldy, const NnAct *x, long P);

/* ---- conv 3x3, pad 1, stride 1, no bias --------------------------------------------- */
/* Floats of a packed panel matrix for K rows and N columns (N rounded up to 32). */
size_t nn_pack_floats(int K, int N);
/* w:(Co,Ci,3,3) PyTorch -> wp for forward (K = 9*Ci, N = Co). */
void nn_conv3x3_pack(float *wp, const float *w, int Ci, int Co);
/* w:(Co,Ci,3,3) -> wp for the input gradient (flipped kernel, K = 9*Co, N = Ci). */
void nn_conv3x3_pack_bwd(float *wp, const float *w, int Ci, int Co);
/* y = conv(cat(in[0..n_in))) with packed weights, written to the n_out views (their C add up
 * to Co, in order). sum/sumsq (Co doubles, may be NULL): per-channel sums of y and y^2 over
 * all N*H*W pixels, for BatchNorm's batch statistics. Ci = sum of in[i].C. */
void nn_conv3x3_forward(NnTeam *t, const NnOut *out, int n_out, const NnAct *in, int n_in,
                        const float *wp, int N, int H, int W, double *sum, double *sumsq);
/* Input gradient: dx = conv(dy, flipped w) = nn_conv3x3_forward with wpb from _pack_bwd. */
void nn_conv3x3_backward_data(NnTeam *t, const NnOut *dx, int n_dx, const float *dy, int ldy,
                              int Co, const float *wpb, int N, int H, int W);
/* dw:(Co,Ci,3,3) += dL/dw, from the forward input views and dy (N,H,W,Co) ldy. */
void nn_conv3x3_backward_weights(NnTeam *t, float *dw, const NnAct *in, int n_in,
                                 const float *dy, int ldy, int Co, int N, int H, int W);
/* Accumulator floats per thread that _backward_weights needs (the team's acc_floats must be
 * at least the largest of the nn_*_acc_floats of the layers it runs). */
size_t nn_conv3x3_acc_floats(int Ci, int Co);

/* ---- transposed conv 2x2, stride 2, bias ------------------------------------------- */
/* w:(Ci,Co,2,2) -> wp for forward (K = Ci, N = 4*Co, column (a*2+b)*Co + co). */
void nn_convt_pack(float *wp, const float *w, int Ci, int Co);
/* w:(Ci,Co,2,2) -> wp for the input gradient (K = 4*Co, N = Ci). */
void nn_convt_pack_bwd(float *wp, const float *w, int Ci, int Co);
/* x:(N,H,W,Ci) -> y:(N,2H,2W,Co) (y->C == Co). */
void nn_convt_forward(NnTeam *t, const NnOut *y, const NnAct *x, const float *wp,
                      const float *b, int N, int H, int W);
/* dy:(N,2H,2W,Co) -> dx:(N,H,W,Ci) (dx may be NULL), dw:(Ci,Co,2,2) +=, db:(Co) +=. */
void nn_convt_backward(NnTeam *t, const NnOut *dx, float *dw, float *db, const float *dy,
                       int ldy, int Co, const NnAct *x, const float *wpb, int N, int H, int W);
size_t nn_convt_acc_floats(int Ci, int Co);

/* ---- conv 1x1 head with NCHW output -------------------------------------------------- */
/* wt: (Ci, Co) = w^T of w:(Co,Ci,1,1), plus 16 floats of slack; built by nn_conv1x1_pack. */
size_t nn_conv1x1_pack_floats(int Ci, int Co);
void   nn_conv1x1_pack(float *wt, const float *w, int Ci, int Co);
/* x:(N,HW,Ci) NHWC view -> y:(N,Co,HW) NCHW planes, + b. */
void nn_conv1x1_forward(NnTeam *t, float *y, const NnAct *x, const float *wt, const float *b,
                        int Co, int N, int HW);
/* Supplies dL/dy for sample n, pixels [q0, q0+nq), as Co rows of nq floats (row stride
 * ldd). Called from several threads at once, on disjoint tiles. */
typedef void (*NnGradFn)(void *ctx, int n, int q0, int nq, float *d, int ldd);
/* Gradient of the head: dx:(N,HW,Ci) overwritten (may be NULL), dw:(Co,Ci) +=, db:(Co) +=. */
void nn_conv1x1_backward(NnTeam *t, const NnOut *dx, float *dw, float *db, NnGradFn dyfn,
                         void *dyctx, const NnAct *x, const float *w, int Co, int N, int HW);
/* dyfn for a plain NCHW gradient array: ctx is an NnNchwGrad. */
typedef struct NnNchwGrad { const float *dy; int C, HW; } NnNchwGrad;
void nn_nchw_grad(void *ctx, int n, int q0, int nq, float *d, int ldd);
size_t nn_conv1x1_acc_floats(int Ci, int Co);

/* ---- packing many layers at once ---------------------------------------------------------- */
enum { NN_PACK_CONV3X3, NN_PACK_CONV3X3_BWD, NN_PACK_CONVT, NN_PACK_CONVT_BWD, NN_PACK_CONV1X1 };
#define NN_PACK_MAX_JOBS 64
/* One packing: kind, destination, PyTorch-layout weights and the layer's Ci, Co (as above). */
typedef struct NnPackJob { int kind; float *dst; const float *w; int Ci, Co; } NnPackJob;
/* Run all n jobs (same results as the nn_*_pack calls), one 32-column panel per work item. */
void nn_pack_many(NnTeam *t, const NnPackJob *jobs, int n);

/* ---- BatchNorm (train: batch stats; eval: running stats), eps, momentum ------------------ */
/* From the conv's sums over M values per channel: mean, invstd = 1/sqrt(var + eps) with the
 * biased variance, and the lazy-apply scale = gamma*invstd, shift = beta - mean*scale.
 * If rm/rv are not NULL, update them with momentum and the unbiased variance, nbt += 1. */
void nn_bn_train_stats(int C, const double *sum, const double *sumsq, long M,
                       const float *gamma, const float *beta, float eps, float momentum,
                       float *mean, float *invstd, float *scale, float *shift,
                       float *rm, float *rv, float *nbt);
/* Eval-mode scale/shift from the running statistics. */
void nn_bn_eval_params(int C, const float *gamma, const float *beta, const float *rm,
                       const float *rv, float eps, float *scale, float *shift);
/* Backward of a = relu(bn(z)) (relu = 0: a = bn(z)) in train mode, in place: g holds dL/da
 * on entry and dL/dz on return. z, g: (M pixels, C) with ld; dgamma/dbeta (C) +=. */
void nn_bn_backward(NnTeam *t, float *g, int ldg, const float *z, int ldz, int C, long M,
                    const float *mean, const float *invstd, const float *gamma,
                    const float *beta, int relu, float *dgamma, float *dbeta);
size_t nn_bn_acc_floats(int C);

/* ---- max pool 2x2 stride 2 --------------------------------------------------------------- */
/* x view (N,H,W,C) -> y (N,H/2,W/2,C) ldy, idx: argmax 0..3 ((dy*2+dx), first max wins, as
 * PyTorch) per output element, (N*H/2*W/2*C) bytes; idx may be NULL (inference). */
void nn_maxpool_forward(NnTeam *t, float *y, int ldy, uint8_t *idx, const NnAct *x,
                        int N, int H, int W);
/* dx (N,H,W,C) ld += scatter of dy (N,H/2,W/2,C) ldy through idx. */
void nn_maxpool_backward(NnTeam *t, float *dx, int lddx, const float *dy, int lddy,
                         const uint8_t *idx, int C, int N, int H, int W);

/* ---- BCE-with-logits and soft Dice from bit-packed targets ------------------------------- */
/* logits (N,C,HW) NCHW; bits + (n*C + c)*(HW/8) is target plane (n,c), pixel q = bit q&7 of
 * byte q>>3; presence + n*((C+7)/8) bit c = plane present (absent planes: target 0, not
 * read). labelled: same layout, bit c of sample n = plane (n,c) labelled; NULL = all labelled.
 * An unlabelled plane is unknown, not negative: no loss term, no Dice sums, no counts.
 * HW must be a multiple of 8. The loss definitions and gradient: docs/loss.md. */
#define NN_LOSS_PLANE 4          /* doubles per plane in nn_loss_planes' output */
#define NN_DICE_EPS 1e-5         /* soft-Dice smoothing */
/* One pass over the logits: for plane pl = n*C + c, out[pl*4 + 0] = BCE-with-logits sum and,
 * when dice, out[pl*4 + 1..3] = sum sigmoid(z), sum sigmoid(z)*t, sum t (1..3 untouched
 * otherwise); an unlabelled plane's four sums are 0 (its logits are not read). Sums in double; each plane's sums depend only on that plane, never on the
 * thread count or schedule. out: N*C*NN_LOSS_PLANE doubles, caller-owned. */
void   nn_loss_planes(NnTeam *t, const float *logits, const uint8_t *bits, const uint8_t *presence,
                      const uint8_t *labelled, int N, int C, int HW, int dice, double *out);
/* Number of labelled planes (N*C for labelled == NULL): the BCE mean divides by it times HW. */
long   nn_labelled_planes(const uint8_t *labelled, int N, int C);
/* The BCE sum (not the mean) over all N*C*HW, per-plane sums added in plane order (through
 * the team's item buffer, so independent of the thread count). */
double nn_bce_sum(NnTeam *t, const float *logits, const uint8_t *bits, const uint8_t *presence,
                  int N, int C, int HW);
/* From nn_loss_planes(dice = 1) output: the sum of the BCE parts in plane order, and the
 * soft-Dice term 1 - mean over channels with sum t > 0 of (2I + eps)/(P + Y + eps) (0 when no
 * channel has a target), with a[c], b[c] (C floats each) = its gradient coefficients: dL/dz =
 * (a[c]*t + b[c]) * p*(1-p), zero for channels without targets. Channel sums run over n in order. */
double nn_loss_bce_total(const double *planes, int N, int C);
double nn_soft_dice(const double *planes, int N, int C, float *a, float *b);
/* d = scale*(sigmoid(z) - t) + (a*t + b)*sigmoid(z)*(1 - sigmoid(z)) for plane (n,c),
 * pixels [q0, q0+nq), q0 % 8 == 0: the BCE gradient times scale plus the soft-Dice one
 * (a = b = 0: BCE alone, bit for bit what it was before the Dice term existed). */
void   nn_bce_grad_row(const NnTeam *t, float *d, const float *z, const uint8_t *plane_bits,
                       int present, int q0, int nq, float scale, float a, float b);
/* tp/fp/fn[C] += counts of (logit > 0) against the targets, unlabelled planes skipped
 * (needs nn_dice_acc_floats). */
void   nn_dice_counts(NnTeam *t, const float *logits, const uint8_t *bits,
                      const uint8_t *presence, const uint8_t *labelled, int N, int C, int HW,
                      int64_t *tp, int64_t *fp, int64_t *fn);
size_t nn_dice_acc_floats(int C);

/* ---- optimiser and vector helpers ------------------------------------------------------ */
/* PyTorch Adam (no weight decay, no amsgrad) on n floats; step is t after increment (>= 1).
 * Hyperparameters are doubles as in PyTorch (1 - beta is formed in double, then rounded). */
void   nn_adam(NnTeam *t, float *p, const float *g, float *m, float *v, size_t n, double lr,
               double beta1, double beta2, double eps, int64_t step);
double nn_sumsq(NnTeam *t, const float *x, size_t n);   /* sum of squares, in double */
void   nn_scale(NnTeam *t, float *x, size_t n, float s);

#endif
