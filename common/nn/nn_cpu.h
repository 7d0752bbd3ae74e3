/* common/nn/nn_cpu.h : run-time kernel dispatch (internal; the public part is nn_cpu_name()
 * and nn_team_cpu() in nn.h). docs/cpu.md has the whole story.
 *
 * The kernel sources (every common/nn/nn_*.c except nn_team.c, nn_tfile.c, nn_cpu.c) are
 * compiled once per instruction set, with -DNN_ISA_avx512 / -DNN_ISA_avx2 / -DNN_ISA_generic
 * and that set's -march flags. This header, included by nn_impl.h before nn.h, renames
 * their public functions per copy (nn_conv3x3_forward -> nn_conv3x3_forward_avx2), so the
 * three copies link side by side. nn_cpu.c then defines the public names: the functions
 * that take an NnTeam call through the team's table (NnKernels, chosen when the team is
 * created); the team-less ones (packing, sizes, BN parameters, loss reductions: scalar,
 * cold) keep their plain names in the generic copy and are not dispatched. */
#ifndef SEG_NN_CPU_H
#define SEG_NN_CPU_H

/* A kernel file compiled on its own, without the Makefile's per-ISA rules (e.g. the
 * libFuzzer build compiles every .c once): it is the generic copy, and nn_cpu.c (without
 * SEG_NN_X86_PATHS) dispatches to nothing else. nn_cpu.c and nn_team.c define
 * NN_DISPATCH_TU: they are the dispatcher, not a copy. */
#if !defined(NN_ISA_avx512) && !defined(NN_ISA_avx2) && !defined(NN_ISA_generic) && !defined(NN_DISPATCH_TU)
#define NN_ISA_generic
#endif

#if defined(NN_ISA_avx512)
#define NN_SUFFIX _avx512
#elif defined(NN_ISA_avx2)
#define NN_SUFFIX _avx2
#elif defined(NN_ISA_generic)
#define NN_SUFFIX _generic
#endif

#ifdef NN_SUFFIX
#define NN_CAT_(a, b) a##b
#define NN_CAT(a, b) NN_CAT_(a, b)
#define NN_SYM(f) NN_CAT(f, NN_SUFFIX)
/* dispatched through the team's table: renamed in every copy */
#define nn_act_apply                NN_SYM(nn_act_apply)
#define nn_adam                     NN_SYM(nn_adam)
#define nn_bce_grad_row             NN_SYM(nn_bce_grad_row)
#define nn_bce_sum                  NN_SYM(nn_bce_sum)
#define nn_bn_backward              NN_SYM(nn_bn_backward)
#define nn_conv1x1_backward         NN_SYM(nn_conv1x1_backward)
#define nn_conv1x1_forward          NN_SYM(nn_conv1x1_forward)
#define nn_conv3x3_backward_data    NN_SYM(nn_conv3x3_backward_data)
#define nn_conv3x3_backward_weights NN_SYM(nn_conv3x3_backward_weights)
#define nn_conv3x3_forward          NN_SYM(nn_conv3x3_forward)
#define nn_convt_backward           NN_SYM(nn_convt_backward)
#define nn_convt_forward            NN_SYM(nn_convt_forward)
#define nn_dice_counts              NN_SYM(nn_dice_counts)
#define nn_loss_planes              NN_SYM(nn_loss_planes)
#define nn_maxpool_backward         NN_SYM(nn_maxpool_backward)
#define nn_maxpool_forward          NN_SYM(nn_maxpool_forward)
#define nn_pack_many                NN_SYM(nn_pack_many)
#define nn_scale                    NN_SYM(nn_scale)
#define nn_sumsq                    NN_SYM(nn_sumsq)
/* internal to the kernels (nn_impl.h) */
#define nn_gemm_f                   NN_SYM(nn_gemm_f)
#define nn_gemm_fs                  NN_SYM(nn_gemm_fs)
#define nn_gemm_w                   NN_SYM(nn_gemm_w)
#define nn_gemm_wb                  NN_SYM(nn_gemm_wb)
#ifndef NN_ISA_generic
/* team-less: the generic copy's are the public ones; the others are renamed out of the way */
#define nn_bn_acc_floats            NN_SYM(nn_bn_acc_floats)
#define nn_bn_eval_params           NN_SYM(nn_bn_eval_params)
#define nn_bn_train_stats           NN_SYM(nn_bn_train_stats)
#define nn_conv1x1_acc_floats       NN_SYM(nn_conv1x1_acc_floats)
#define nn_conv1x1_pack             NN_SYM(nn_conv1x1_pack)
#define nn_conv1x1_pack_floats      NN_SYM(nn_conv1x1_pack_floats)
#define nn_conv3x3_acc_floats       NN_SYM(nn_conv3x3_acc_floats)
#define nn_conv3x3_pack             NN_SYM(nn_conv3x3_pack)
#define nn_conv3x3_pack_bwd         NN_SYM(nn_conv3x3_pack_bwd)
#define nn_convt_acc_floats         NN_SYM(nn_convt_acc_floats)
#define nn_convt_pack               NN_SYM(nn_convt_pack)
#define nn_convt_pack_bwd           NN_SYM(nn_convt_pack_bwd)
#define nn_dice_acc_floats          NN_SYM(nn_dice_acc_floats)
#define nn_labelled_planes          NN_SYM(nn_labelled_planes)
#define nn_loss_bce_total           NN_SYM(nn_loss_bce_total)
#define nn_nchw_grad                NN_SYM(nn_nchw_grad)
#define nn_pack_floats              NN_SYM(nn_pack_floats)
#define nn_soft_dice                NN_SYM(nn_soft_dice)
#endif
#endif /* NN_SUFFIX */

/* X(ret, name, (params), (args)) for every dispatched function; the first parameter is the
 * team whose table is used. Keep in step with the renames above and with nn.h. */
#define NN_KERNELS(X)                                                                            \
    X(void, nn_act_apply, (NnTeam *t, float *y, int ldy, const NnAct *x, long P), (t, y, ldy, x, P)) \
    X(void, nn_adam, (NnTeam *t, float *p, const float *g, float *m, float *v, size_t n, double lr, \
                      double beta1, double beta2, double eps, int64_t step),                     \
      (t, p, g, m, v, n, lr, beta1, beta2, eps, step))                                           \
    X(void, nn_bce_grad_row, (const NnTeam *t, float *d, const float *z, const uint8_t *plane_bits, \
                              int present, int q0, int nq, float scale, float a, float b),       \
      (t, d, z, plane_bits, present, q0, nq, scale, a, b))                                       \
    X(double, nn_bce_sum, (NnTeam *t, const float *logits, const uint8_t *bits,                  \
                           const uint8_t *presence, int N, int C, int HW),                       \
      (t, logits, bits, presence, N, C, HW))                                                     \
    X(void, nn_bn_backward, (NnTeam *t, float *g, int ldg, const float *z, int ldz, int C, long M, \
                             const float *mean, const float *invstd, const float *gamma,         \
                             const float *beta, int relu, float *dgamma, float *dbeta),          \
      (t, g, ldg, z, ldz, C, M, mean, invstd, gamma, beta, relu, dgamma, dbeta))                 \
    X(void, nn_conv1x1_backward, (NnTeam *t, const NnOut *dx, float *dw, float *db, NnGradFn dyfn, \
                                  void *dyctx, const NnAct *x, const float *w, int Co, int N, int HW), \
      (t, dx, dw, db, dyfn, dyctx, x, w, Co, N, HW))                                             \
    X(void, nn_conv1x1_forward, (NnTeam *t, float *y, const NnAct *x, const float *wt, const float *b, \
                                 int Co, int N, int HW),                                         \
      (t, y, x, wt, b, Co, N, HW))                                                               \
    X(void, nn_conv3x3_backward_data, (NnTeam *t, const NnOut *dx, int n_dx, const float *dy, int ldy, \
                                       int Co, const float *wpb, int N, int H, int W),           \
      (t, dx, n_dx, dy, ldy, Co, wpb, N, H, W))                                                  \
    X(void, nn_conv3x3_backward_weights, (NnTeam *t, float *dw, const NnAct *in, int n_in,       \
                                          const float *dy, int ldy, int Co, int N, int H, int W), \
      (t, dw, in, n_in, dy, ldy, Co, N, H, W))                                                   \
    X(void, nn_conv3x3_forward, (NnTeam *t, const NnOut *out, int n_out, const NnAct *in, int n_in, \
                                 const float *wp, int N, int H, int W, double *sum, double *sumsq), \
      (t, out, n_out, in, n_in, wp, N, H, W, sum, sumsq))                                        \
    X(void, nn_convt_backward, (NnTeam *t, const NnOut *dx, float *dw, float *db, const float *dy, \
                                int ldy, int Co, const NnAct *x, const float *wpb, int N, int H, int W), \
      (t, dx, dw, db, dy, ldy, Co, x, wpb, N, H, W))                                             \
    X(void, nn_convt_forward, (NnTeam *t, const NnOut *y, const NnAct *x, const float *wp,       \
                               const float *b, int N, int H, int W),                             \
      (t, y, x, wp, b, N, H, W))                                                                 \
    X(void, nn_dice_counts, (NnTeam *t, const float *logits, const uint8_t *bits,                \
                             const uint8_t *presence, const uint8_t *labelled, int N, int C, int HW, \
                             int64_t *tp, int64_t *fp, int64_t *fn),                             \
      (t, logits, bits, presence, labelled, N, C, HW, tp, fp, fn))                               \
    X(void, nn_loss_planes, (NnTeam *t, const float *logits, const uint8_t *bits, const uint8_t *presence, \
                             const uint8_t *labelled, int N, int C, int HW, int dice, double *out), \
      (t, logits, bits, presence, labelled, N, C, HW, dice, out))                                \
    X(void, nn_maxpool_backward, (NnTeam *t, float *dx, int lddx, const float *dy, int lddy,     \
                                  const uint8_t *idx, int C, int N, int H, int W),               \
      (t, dx, lddx, dy, lddy, idx, C, N, H, W))                                                  \
    X(void, nn_maxpool_forward, (NnTeam *t, float *y, int ldy, uint8_t *idx, const NnAct *x,     \
                                 int N, int H, int W),                                           \
      (t, y, ldy, idx, x, N, H, W))                                                              \
    X(void, nn_pack_many, (NnTeam *t, const NnPackJob *jobs, int n), (t, jobs, n))               \
    X(void, nn_scale, (NnTeam *t, float *x, size_t n, float s), (t, x, n, s))                    \
    X(double, nn_sumsq, (NnTeam *t, const float *x, size_t n), (t, x, n))

/* The kernel paths, best first. */
enum { NN_CPU_AVX512 = 0, NN_CPU_AVX2 = 1, NN_CPU_GENERIC = 2, NN_CPU_N = 3 };

#ifndef NN_SUFFIX
#include "nn.h"
#define NN_KFIELD(r, f, p, a) r (*f) p;
/* One kernel path: its name and its copy of every dispatched function. */
typedef struct NnKernels {
    const char *name;
    NN_KERNELS(NN_KFIELD)
} NnKernels;
#undef NN_KFIELD

/* The path a new team gets: SEGKIT_NN_GENERIC=1 (tests) -> generic; else SEGKIT_CPU if
 * set (avx512|avx2|generic; SEG_EARG, with a message naming what the CPU has, when it is
 * unknown or this CPU or build lacks it); else the best this CPU supports (cpuid, once). */
int nn_cpu_select(void);
const NnKernels *nn_cpu_kernels(int path);
const NnKernels *nn_team_kernels(const NnTeam *t);    /* nn_team.c */
#endif

#endif
