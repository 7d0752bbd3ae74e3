/* tests/test_nn.c : every nn_ layer against PyTorch (tests/fixtures/nn/layers.bin, written by
 * tools/make_nn_fixtures.py): forward outputs, input/weight/bias gradients, BN running stats,
 * BCE loss and gradient from packed bits, Adam; the soft-Dice and BCE + soft-Dice losses and
 * their logit gradients (tests/fixtures/nn/loss.bin, docs/loss.md) against PyTorch fp64, a
 * double-precision central difference, thread counts 1..4 (bit-identical) and no targets. Each check runs on three teams: AVX-512
 * kernels on 2 threads, the portable kernels on 1 thread, and AVX-512 on 3 threads with a tiny
 * scratch (many small tiles, uneven shares). Tolerance: |got-ref| <= 1e-5*max|ref| + 1e-4*|ref| (fp32, different summation order) unless a check says otherwise. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "maskpack.h"
#include "nn.h"
#include "nn_tfile.h"
#include "testutil.h"

static NnTFile *g_fx, *g_lfx, *g_mfx;
static const char *g_team = "";

static const float *fx(const char *name, size_t *n, int64_t shape[4])
{
    const float *p = nn_tfile_get(g_fx, name, n, NULL, shape);
    if (!p) { printf("FAIL fixture tensor %s missing\n", name); exit(1); }
    return p;
}

static float *fcopy(const float *src, size_t n)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    if (!p) { printf("FAIL out of memory\n"); exit(1); }
    if (src) memcpy(p, src, sizeof(float) * n);
    return p;
}

/* NCHW (N,C,HW) -> NHWC with row stride ld (extra columns set to NaN: must never be read) */
static float *to_nhwc(const float *x, int N, int C, int HW, int ld)
{
    float *y = fcopy(NULL, (size_t)N * HW * ld);
    for (size_t i = 0; i < (size_t)N * HW * ld; i++) y[i] = NAN;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int q = 0; q < HW; q++) y[((size_t)n * HW + q) * ld + c] = x[((size_t)n * C + c) * HW + q];
    return y;
}

static float *to_nchw(const float *y, int N, int C, int HW, int ld)
{
    float *x = fcopy(NULL, (size_t)N * C * HW);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int q = 0; q < HW; q++) x[((size_t)n * C + c) * HW + q] = y[((size_t)n * HW + q) * ld + c];
    return x;
}

/* "tag.key" (key starting with a letter) or "tag key" into buf */
static const char *tagn(char *buf, const char *tag, const char *key)
{
    snprintf(buf, 64, key[0] == ' ' ? "%s%s" : "%s.%s", tag, key);
    return buf;
}

static int expect_close(const char *tag, const float *got, const float *ref, size_t n, double rtol)
{
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    const double atol = 1e-5 * mx + 1e-30;
    size_t bad = 0, worst_i = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= atol + rtol * fabs(ref[i]))) {
            if (bad < 5) printf("    %s[%zu] got %.8g ref %.8g\n", tag, i, got[i], ref[i]);
            bad++;
        }
        if (!(d <= worst)) { worst = d; worst_i = i; }
    }
    CHECK(bad == 0 && n > 0, "[%s] %-16s n=%zu max|d|=%.3g at %zu (atol %.2g rtol %.2g)%s", g_team, tag, n,
          worst, worst_i, atol, rtol, bad ? " MISMATCH" : "");
    return bad == 0;
}

static void t_conv(NnTeam *t, const char *tag)
{
    char nm[64];
    int64_t xs[4], ws[4];
    size_t nx, nw, ny;
    snprintf(nm, sizeof nm, "%s.x", tag); const float *x = fx(nm, &nx, xs);
    snprintf(nm, sizeof nm, "%s.w", tag); const float *w = fx(nm, &nw, ws);
    snprintf(nm, sizeof nm, "%s.y", tag); const float *yr = fx(nm, &ny, NULL);
    snprintf(nm, sizeof nm, "%s.dy", tag); const float *dyr = fx(nm, NULL, NULL);
    snprintf(nm, sizeof nm, "%s.dx", tag); const float *dxr = fx(nm, NULL, NULL);
    snprintf(nm, sizeof nm, "%s.dw", tag); const float *dwr = fx(nm, NULL, NULL);
    const int N = (int)xs[0], Ci = (int)xs[1], H = (int)xs[2], W = (int)xs[3], Co = (int)ws[0], HW = H * W;
    const int ldx = Ci + 3;                                   /* a view with ld > C */
    float *xh = to_nhwc(x, N, Ci, HW, ldx);
    float *wp = fcopy(NULL, nn_pack_floats(9 * Ci, Co)), *wpb = fcopy(NULL, nn_pack_floats(9 * Co, Ci));
    nn_conv3x3_pack(wp, w, Ci, Co);
    nn_conv3x3_pack_bwd(wpb, w, Ci, Co);
    float *yh = fcopy(NULL, (size_t)N * HW * Co);
    double *sum = calloc((size_t)Co, sizeof(double)), *sq = calloc((size_t)Co, sizeof(double));
    NnAct in = { .x = xh, .ld = ldx, .C = Ci };
    NnOut out = { .y = yh, .ld = Co, .C = Co };
    nn_conv3x3_forward(t, &out, 1, &in, 1, wp, N, H, W, sum, sq);
    float *y = to_nchw(yh, N, Co, HW, Co);
    snprintf(nm, sizeof nm, "%s fwd", tag);
    expect_close(nm, y, yr, ny, 1e-4);
    /* the BN statistics the conv sums on the side, against sums of the reference output */
    float *gs = fcopy(NULL, 2 * (size_t)Co), *rs = fcopy(NULL, 2 * (size_t)Co);
    for (int c = 0; c < Co; c++) {
        double s = 0, s2 = 0;
        for (int n = 0; n < N; n++)
            for (int q = 0; q < HW; q++) { double v = yr[((size_t)n * Co + c) * HW + q]; s += v; s2 += v * v; }
        rs[c] = (float)s; rs[Co + c] = (float)s2;
        gs[c] = (float)sum[c]; gs[Co + c] = (float)sq[c];
    }
    snprintf(nm, sizeof nm, "%s stats", tag);
    expect_close(nm, gs, rs, 2 * (size_t)Co, 1e-4);
    /* input gradient, written into two views with padded rows */
    float *dyh = to_nhwc(dyr, N, Co, HW, Co);
    float *dxh = fcopy(NULL, (size_t)N * HW * ldx);
    NnOut dxo = { .y = dxh, .ld = ldx, .C = Ci };
    nn_conv3x3_backward_data(t, &dxo, 1, dyh, Co, Co, wpb, N, H, W);
    float *dx = to_nchw(dxh, N, Ci, HW, ldx);
    snprintf(nm, sizeof nm, "%s dx", tag);
    expect_close(nm, dx, dxr, nx, 1e-4);
    /* weight gradient; called twice to check that it adds */
    float *dw = fcopy(NULL, nw), *dw2 = fcopy(dwr, nw);
    memset(dw, 0, sizeof(float) * nw);
    nn_conv3x3_backward_weights(t, dw, &in, 1, dyh, Co, Co, N, H, W);
    snprintf(nm, sizeof nm, "%s dw", tag);
    expect_close(nm, dw, dwr, nw, 1e-4);
    nn_conv3x3_backward_weights(t, dw, &in, 1, dyh, Co, Co, N, H, W);
    for (size_t i = 0; i < nw; i++) dw2[i] *= 2.f;
    snprintf(nm, sizeof nm, "%s dw+=", tag);
    expect_close(nm, dw, dw2, nw, 1e-4);
    free(xh); free(wp); free(wpb); free(yh); free(sum); free(sq); free(y); free(gs); free(rs);
    free(dyh); free(dxh); free(dx); free(dw); free(dw2);
}

static void t_cat(NnTeam *t, const char *tag)
{
    char nm[64], nm2[64];
    int64_t as[4], bs[4], ws[4];
    size_t na, nb, nw, ny;
    const float *a = fx(tagn(nm, tag, "a"), &na, as), *b = fx(tagn(nm, tag, "b"), &nb, bs), *w = fx(tagn(nm, tag, "w"), &nw, ws);
    const float *yr = fx(tagn(nm, tag, "y"), &ny, NULL), *dyr = fx(tagn(nm, tag, "dy"), NULL, NULL);
    const int N = (int)as[0], Ca = (int)as[1], Cb = (int)bs[1], H = (int)as[2], W = (int)as[3];
    const int Co = (int)ws[0], Ci = Ca + Cb, HW = H * W;
    float *ah = to_nhwc(a, N, Ca, HW, Ca + 1), *bh = to_nhwc(b, N, Cb, HW, Cb);
    float *wp = fcopy(NULL, nn_pack_floats(9 * Ci, Co)), *wpb = fcopy(NULL, nn_pack_floats(9 * Co, Ci));
    nn_conv3x3_pack(wp, w, Ci, Co);
    nn_conv3x3_pack_bwd(wpb, w, Ci, Co);
    NnAct in[2] = { { .x = ah, .ld = Ca + 1, .C = Ca }, { .x = bh, .ld = Cb, .C = Cb } };
    float *yh = fcopy(NULL, (size_t)N * HW * Co);
    NnOut out = { .y = yh, .ld = Co, .C = Co };
    nn_conv3x3_forward(t, &out, 1, in, 2, wp, N, H, W, NULL, NULL);
    float *y = to_nchw(yh, N, Co, HW, Co);
    expect_close(tagn(nm, tag, " fwd"), y, yr, ny, 1e-4);
    float *dyh = to_nhwc(dyr, N, Co, HW, Co);
    float *dah = fcopy(NULL, (size_t)N * HW * Ca), *dbh = fcopy(NULL, (size_t)N * HW * (Cb + 2));
    NnOut dxo[2] = { { .y = dah, .ld = Ca, .C = Ca }, { .y = dbh, .ld = Cb + 2, .C = Cb } };
    nn_conv3x3_backward_data(t, dxo, 2, dyh, Co, Co, wpb, N, H, W);
    float *da = to_nchw(dah, N, Ca, HW, Ca), *db = to_nchw(dbh, N, Cb, HW, Cb + 2);
    expect_close(tagn(nm, tag, " da"), da, fx(tagn(nm2, tag, "da"), NULL, NULL), na, 1e-4);
    expect_close(tagn(nm, tag, " db"), db, fx(tagn(nm2, tag, "db"), NULL, NULL), nb, 1e-4);
    float *dw = fcopy(NULL, nw);
    memset(dw, 0, sizeof(float) * nw);
    nn_conv3x3_backward_weights(t, dw, in, 2, dyh, Co, Co, N, H, W);
    expect_close(tagn(nm, tag, " dw"), dw, fx(tagn(nm2, tag, "dw"), NULL, NULL), nw, 1e-4);
    free(ah); free(bh); free(wp); free(wpb); free(yh); free(y); free(dyh); free(dah); free(dbh);
    free(da); free(db); free(dw);
}

static void t_bn(NnTeam *t, const char *tag, int relu)
{
    char nm[64];
    int64_t xs[4];
    size_t nx;
    snprintf(nm, sizeof nm, "%s.x", tag); const float *x = fx(nm, &nx, xs);
    const int N = (int)xs[0], C = (int)xs[1], HW = (int)(xs[2] * xs[3]);
    const long M = (long)N * HW;
    snprintf(nm, sizeof nm, "%s.gamma", tag); const float *gamma = fx(nm, NULL, NULL);
    snprintf(nm, sizeof nm, "%s.beta", tag); const float *beta = fx(nm, NULL, NULL);
    snprintf(nm, sizeof nm, "%s.rm0", tag); float *rm = fcopy(fx(nm, NULL, NULL), (size_t)C);
    snprintf(nm, sizeof nm, "%s.rv0", tag); float *rv = fcopy(fx(nm, NULL, NULL), (size_t)C);
    float *xh = to_nhwc(x, N, C, HW, C);
    double *sum = calloc((size_t)C, sizeof(double)), *sq = calloc((size_t)C, sizeof(double));
    for (long p = 0; p < M; p++)
        for (int c = 0; c < C; c++) { double v = xh[p * C + c]; sum[c] += v; sq[c] += v * v; }
    float *mean = fcopy(NULL, (size_t)C), *invstd = fcopy(NULL, (size_t)C);
    float *scale = fcopy(NULL, (size_t)C), *shift = fcopy(NULL, (size_t)C), nbt = 0.f;
    nn_bn_train_stats(C, sum, sq, M, gamma, beta, 1e-5f, 0.1f, mean, invstd, scale, shift, rm, rv, &nbt);
    char nm2[64];
    snprintf(nm, sizeof nm, "%s.rm1", tag);
    snprintf(nm2, sizeof nm2, "%s running_mean", tag); expect_close(nm2, rm, fx(nm, NULL, NULL), (size_t)C, 1e-5);
    snprintf(nm, sizeof nm, "%s.rv1", tag);
    snprintf(nm2, sizeof nm2, "%s running_var", tag); expect_close(nm2, rv, fx(nm, NULL, NULL), (size_t)C, 1e-5);
    snprintf(nm, sizeof nm, "%s.nbt1", tag);
    CHECK(nbt == fx(nm, NULL, NULL)[0], "[%s] %s num_batches_tracked %g", g_team, tag, nbt);
    float *yh = fcopy(NULL, (size_t)M * C);
    NnAct v = { .x = xh, .ld = C, .C = C, .scale = scale, .shift = shift, .relu = relu };
    nn_act_apply(t, yh, C, &v, M);
    float *y = to_nchw(yh, N, C, HW, C);
    snprintf(nm, sizeof nm, "%s.y", tag);
    snprintf(nm2, sizeof nm2, "%s fwd", tag); expect_close(nm2, y, fx(nm, NULL, NULL), nx, 1e-4);
    snprintf(nm, sizeof nm, "%s.dy", tag);
    float *g = to_nhwc(fx(nm, NULL, NULL), N, C, HW, C);
    float *dgamma = calloc((size_t)C, sizeof(float)), *dbeta = calloc((size_t)C, sizeof(float));
    nn_bn_backward(t, g, C, xh, C, C, M, mean, invstd, gamma, beta, relu, dgamma, dbeta);
    float *dx = to_nchw(g, N, C, HW, C);
    snprintf(nm, sizeof nm, "%s.dx", tag);
    snprintf(nm2, sizeof nm2, "%s dx", tag); expect_close(nm2, dx, fx(nm, NULL, NULL), nx, 2e-4);
    snprintf(nm, sizeof nm, "%s.dgamma", tag);
    snprintf(nm2, sizeof nm2, "%s dgamma", tag); expect_close(nm2, dgamma, fx(nm, NULL, NULL), (size_t)C, 1e-4);
    snprintf(nm, sizeof nm, "%s.dbeta", tag);
    snprintf(nm2, sizeof nm2, "%s dbeta", tag); expect_close(nm2, dbeta, fx(nm, NULL, NULL), (size_t)C, 1e-4);
    /* eval mode: the running statistics after the step */
    nn_bn_eval_params(C, gamma, beta, rm, rv, 1e-5f, scale, shift);
    v.relu = 0;
    nn_act_apply(t, yh, C, &v, M);
    free(y);
    y = to_nchw(yh, N, C, HW, C);
    snprintf(nm, sizeof nm, "%s.yeval", tag);
    snprintf(nm2, sizeof nm2, "%s eval", tag); expect_close(nm2, y, fx(nm, NULL, NULL), nx, 1e-4);
    free(rm); free(rv); free(xh); free(sum); free(sq); free(mean); free(invstd); free(scale); free(shift);
    free(yh); free(y); free(g); free(dgamma); free(dbeta); free(dx);
}

static void t_relu(NnTeam *t)
{
    int64_t xs[4];
    size_t nx;
    const float *x = fx("relu.x", &nx, xs);
    const int N = (int)xs[0], C = (int)xs[1], HW = (int)(xs[2] * xs[3]);
    float *xh = to_nhwc(x, N, C, HW, C), *yh = fcopy(NULL, nx);
    NnAct v = { .x = xh, .ld = C, .C = C, .relu = 1 };
    nn_act_apply(t, yh, C, &v, (long)N * HW);
    float *y = to_nchw(yh, N, C, HW, C);
    expect_close("relu fwd", y, fx("relu.y", NULL, NULL), nx, 0);
    free(xh); free(yh); free(y);
}

static void t_pool(NnTeam *t)
{
    int64_t xs[4];
    size_t nx, ny;
    const float *x = fx("pool.x", &nx, xs), *yr = fx("pool.y", &ny, NULL);
    const int N = (int)xs[0], C = (int)xs[1], H = (int)xs[2], W = (int)xs[3], HWo = (H / 2) * (W / 2);
    float *xh = to_nhwc(x, N, C, H * W, C), *yh = fcopy(NULL, ny);
    uint8_t *idx = malloc(ny);
    NnAct v = { .x = xh, .ld = C, .C = C };
    nn_maxpool_forward(t, yh, C, idx, &v, N, H, W);
    float *y = to_nchw(yh, N, C, HWo, C);
    expect_close("pool fwd", y, yr, ny, 0);
    float *dyh = to_nhwc(fx("pool.dy", NULL, NULL), N, C, HWo, C), *dxh = fcopy(NULL, nx);
    memset(dxh, 0, sizeof(float) * nx);
    nn_maxpool_backward(t, dxh, C, dyh, C, idx, C, N, H, W);
    float *dx = to_nchw(dxh, N, C, H * W, C);
    expect_close("pool dx", dx, fx("pool.dx", NULL, NULL), nx, 0);
    free(xh); free(yh); free(idx); free(y); free(dyh); free(dxh); free(dx);
}

static void t_convt(NnTeam *t)
{
    int64_t xs[4], ws[4];
    size_t nx, nw, ny;
    const float *x = fx("convt.x", &nx, xs), *w = fx("convt.w", &nw, ws), *b = fx("convt.b", NULL, NULL);
    const int N = (int)xs[0], Ci = (int)xs[1], H = (int)xs[2], W = (int)xs[3], Co = (int)ws[1];
    const float *yr = fx("convt.y", &ny, NULL);
    float *xh = to_nhwc(x, N, Ci, H * W, Ci);
    float *wp = fcopy(NULL, nn_pack_floats(Ci, 4 * Co)), *wpb = fcopy(NULL, nn_pack_floats(4 * Co, Ci));
    nn_convt_pack(wp, w, Ci, Co);
    nn_convt_pack_bwd(wpb, w, Ci, Co);
    float *yh = fcopy(NULL, ny);
    NnAct in = { .x = xh, .ld = Ci, .C = Ci };
    NnOut out = { .y = yh, .ld = Co, .C = Co };
    nn_convt_forward(t, &out, &in, wp, b, N, H, W);
    float *y = to_nchw(yh, N, Co, 4 * H * W, Co);
    expect_close("convt fwd", y, yr, ny, 1e-4);
    float *dyh = to_nhwc(fx("convt.dy", NULL, NULL), N, Co, 4 * H * W, Co), *dxh = fcopy(NULL, nx);
    float *dw = calloc(nw, sizeof(float)), *db = calloc((size_t)Co, sizeof(float));
    NnOut dxo = { .y = dxh, .ld = Ci, .C = Ci };
    nn_convt_backward(t, &dxo, dw, db, dyh, Co, Co, &in, wpb, N, H, W);
    float *dx = to_nchw(dxh, N, Ci, H * W, Ci);
    expect_close("convt dx", dx, fx("convt.dx", NULL, NULL), nx, 1e-4);
    expect_close("convt dw", dw, fx("convt.dw", NULL, NULL), nw, 1e-4);
    expect_close("convt db", db, fx("convt.db", NULL, NULL), (size_t)Co, 1e-4);
    free(xh); free(wp); free(wpb); free(yh); free(y); free(dyh); free(dxh); free(dw); free(db); free(dx);
}

static void t_head(NnTeam *t)
{
    int64_t xs[4], ws[4];
    size_t nx, nw, ny;
    const float *x = fx("head.x", &nx, xs), *w = fx("head.w", &nw, ws), *b = fx("head.b", NULL, NULL);
    const int N = (int)xs[0], Ci = (int)xs[1], HW = (int)(xs[2] * xs[3]), Co = (int)ws[0];
    const float *yr = fx("head.y", &ny, NULL);
    float *xh = to_nhwc(x, N, Ci, HW, Ci);
    float *wt = fcopy(NULL, nn_conv1x1_pack_floats(Ci, Co));
    nn_conv1x1_pack(wt, w, Ci, Co);
    float *y = fcopy(NULL, ny);
    NnAct in = { .x = xh, .ld = Ci, .C = Ci };
    nn_conv1x1_forward(t, y, &in, wt, b, Co, N, HW);
    expect_close("head fwd", y, yr, ny, 1e-4);
    NnNchwGrad gctx = { .dy = fx("head.dy", NULL, NULL), .C = Co, .HW = HW };
    float *dxh = fcopy(NULL, nx), *dw = calloc(nw, sizeof(float)), *db = calloc((size_t)Co, sizeof(float));
    NnOut dxo = { .y = dxh, .ld = Ci, .C = Ci };
    nn_conv1x1_backward(t, &dxo, dw, db, nn_nchw_grad, &gctx, &in, w, Co, N, HW);
    float *dx = to_nchw(dxh, N, Ci, HW, Ci);
    expect_close("head dx", dx, fx("head.dx", NULL, NULL), nx, 1e-4);
    expect_close("head dw", dw, fx("head.dw", NULL, NULL), nw, 1e-4);
    expect_close("head db", db, fx("head.db", NULL, NULL), (size_t)Co, 1e-4);
    free(xh); free(wt); free(y); free(dxh); free(dw); free(db); free(dx);
}

static void t_bce(NnTeam *t)
{
    int64_t zs[4];
    size_t nz;
    const float *z = fx("bce.z", &nz, zs), *tg = fx("bce.t", NULL, NULL), *dzr = fx("bce.dz", NULL, NULL);
    const int N = (int)zs[0], C = (int)zs[1], HW = (int)(zs[2] * zs[3]), CB = (C + 7) / 8;
    uint8_t *bits = calloc((size_t)N * C * HW / 8, 1), *pres = calloc((size_t)N * CB, 1);
    for (int pl = 0; pl < N * C; pl++) {
        int any = 0;
        for (int q = 0; q < HW; q++)
            if (tg[(size_t)pl * HW + q] > 0.5f) { maskpack_set(bits + (size_t)pl * HW / 8, q); any = 1; }
        if (any) maskpack_set(pres + (pl / C) * CB, pl % C);
        else memset(bits + (size_t)pl * HW / 8, 0xA5, (size_t)HW / 8);   /* absent: garbage, ignored */
    }
    const double count = (double)nz;
    const double loss = nn_bce_sum(t, z, bits, pres, N, C, HW) / count;
    const double ref64 = fx("bce.loss64", NULL, NULL)[0], ref32 = fx("bce.loss", NULL, NULL)[0];
    CHECK(fabs(loss - ref64) <= 1e-6 * fabs(ref64), "[%s] bce loss %.9g vs torch fp64 %.9g (rel %.2g, tol 1e-6); fp32 torch %.9g",
          g_team, loss, ref64, fabs(loss - ref64) / fabs(ref64), ref32);
    float *dz = fcopy(NULL, nz);
    for (int pl = 0; pl < N * C; pl++) {
        const int pr = maskpack_get(pres + (pl / C) * CB, pl % C);
        for (int q0 = 0; q0 < HW; q0 += 24) {                  /* tiles starting on bytes */
            const int nq = HW - q0 < 24 ? HW - q0 : 24;
            nn_bce_grad_row(t, dz + (size_t)pl * HW + q0, z + (size_t)pl * HW + q0, bits + (size_t)pl * HW / 8,
                            pr, q0, nq, (float)(1.0 / count), 0.f, 0.f);
        }
    }
    expect_close("bce dz", dz, dzr, nz, 1e-5);
    int64_t tp[8] = {0}, fp[8] = {0}, fn[8] = {0}, rtp[8] = {0}, rfp[8] = {0}, rfn[8] = {0};
    nn_dice_counts(t, z, bits, pres, NULL, N, C, HW, tp, fp, fn);
    int same = 1;
    for (int pl = 0; pl < N * C; pl++)
        for (int q = 0; q < HW; q++) {
            const int p = z[(size_t)pl * HW + q] > 0.f, y = tg[(size_t)pl * HW + q] > 0.5f, c = pl % C;
            rtp[c] += p && y; rfp[c] += p && !y; rfn[c] += !p && y;
        }
    for (int c = 0; c < C; c++) same &= tp[c] == rtp[c] && fp[c] == rfp[c] && fn[c] == rfn[c];
    CHECK(same, "[%s] dice counts tp/fp/fn (ch0: %lld/%lld/%lld ref %lld/%lld/%lld)", g_team,
          (long long)tp[0], (long long)fp[0], (long long)fn[0], (long long)rtp[0], (long long)rfp[0], (long long)rfn[0]);
    free(bits); free(pres); free(dz);
}

/* ---- soft Dice (loss.bin) ----------------------------------------------------------------- */
static const float *lfx(const char *name, size_t *n, int64_t shape[4])
{
    const float *p = nn_tfile_get(g_lfx, name, n, NULL, shape);
    if (!p) { printf("FAIL fixture tensor %s missing\n", name); exit(1); }
    return p;
}


/* loss (kind: 1 dice, 2 bce+dice) and dz through the nn_ calls, as unet.c makes them
 * (lab: the labelled bitmap, NULL = all) */
static double nn_loss_grad_lab(NnTeam *t, int kind, const float *z, const uint8_t *bits, const uint8_t *pres,
                               const uint8_t *lab, int N, int C, int HW, double *planes, float *a, float *b, float *dz)
{
    const double count = (double)nn_labelled_planes(lab, N, C) * HW;
    nn_loss_planes(t, z, bits, pres, lab, N, C, HW, 1, planes);
    const double bce = count > 0 ? nn_loss_bce_total(planes, N, C) / count : 0.0, dice = nn_soft_dice(planes, N, C, a, b);
    const float scale = kind == 1 || !(count > 0) ? 0.f : (float)(1.0 / count);
    const int CB = (C + 7) / 8;
    for (int pl = 0; pl < N * C; pl++) {
        const int c = pl % C, pr = maskpack_get(pres + (pl / C) * CB, c);
        if (lab && !maskpack_get(lab + (pl / C) * CB, c)) {
            memset(dz + (size_t)pl * HW, 0, sizeof(float) * HW);
            continue;
        }
        for (int q0 = 0; q0 < HW; q0 += 24) {                  /* tiles starting on bytes */
            const int nq = HW - q0 < 24 ? HW - q0 : 24;
            nn_bce_grad_row(t, dz + (size_t)pl * HW + q0, z + (size_t)pl * HW + q0, bits + (size_t)pl * HW / 8, pr, q0, nq,
                            scale, a[c], b[c]);
        }
    }
    return kind == 1 ? dice : bce + dice;
}

static double nn_loss_grad(NnTeam *t, int kind, const float *z, const uint8_t *bits, const uint8_t *pres, int N, int C,
                           int HW, double *planes, float *a, float *b, float *dz)
{
    return nn_loss_grad_lab(t, kind, z, bits, pres, NULL, N, C, HW, planes, a, b, dz);
}

/* the same loss in double, straight from the definition (independent of nn_loss.c) */
static double ref_loss(int kind, const double *z, const float *tg, int N, int C, int HW)
{
    double bce = 0, dsum = 0;
    int ns = 0;
    for (int c = 0; c < C; c++) {
        double P = 0, I = 0, Y = 0;
        for (int n = 0; n < N; n++)
            for (int q = 0; q < HW; q++) {
                const size_t i = ((size_t)n * C + c) * HW + q;
                const double v = z[i], y = tg[i] > 0.5f, p = 1.0 / (1.0 + exp(-v));
                bce += (v > 0 ? v : 0) - v * y + log1p(exp(-fabs(v)));
                P += p; I += p * y; Y += y;
            }
        if (Y > 0) { ns++; dsum += (2 * I + 1e-5) / (P + Y + 1e-5); }
    }
    const double dice = ns ? 1.0 - dsum / ns : 0.0;
    return kind == 1 ? dice : bce / ((double)N * C * HW) + dice;
}

static void t_dice_case(NnTeam *t, const char *tag)
{
    char nm[64], lbl[64];
    int64_t zs[4];
    size_t nz;
    const float *z = lfx(tagn(nm, tag, "z"), &nz, zs), *tg = lfx(tagn(nm, tag, "t"), NULL, NULL);
    const int N = (int)zs[0], C = (int)zs[1], HW = (int)(zs[2] * zs[3]);
    uint8_t *bits = malloc((size_t)N * C * HW / 8), *pres = malloc((size_t)N * ((C + 7) / 8));
    t_pack_targets(tg, N, C, HW, bits, pres);
    double *planes = malloc(sizeof(double) * NN_LOSS_PLANE * N * C), *pl2 = malloc(sizeof(double) * NN_LOSS_PLANE * N * C);
    float *a = malloc(sizeof(float) * C), *b = malloc(sizeof(float) * C), *a2 = malloc(sizeof(float) * C),
          *b2 = malloc(sizeof(float) * C), *dz = fcopy(NULL, nz), *dz2 = fcopy(NULL, nz);
    for (int kind = 1; kind <= 2; kind++) {
        const char *kn = kind == 1 ? "dice" : "bce+dice";
        snprintf(lbl, sizeof lbl, "%s.%s", tag, kn);
        const double loss = nn_loss_grad(t, kind, z, bits, pres, N, C, HW, planes, a, b, dz);
        snprintf(nm, sizeof nm, "%s.loss64", lbl);
        const double r64 = lfx(nm, NULL, NULL)[0];
        snprintf(nm, sizeof nm, "%s.loss", lbl);
        CHECK(fabs(loss - r64) <= 1e-6 * fabs(r64) + 1e-7, "[%s] %s loss %.9g vs torch fp64 %.9g (fp32 torch %.9g)", g_team, lbl,
              loss, r64, lfx(nm, NULL, NULL)[0]);
        snprintf(nm, sizeof nm, "%s.dz", lbl);
        snprintf(lbl, sizeof lbl, "%s.%s dz", tag, kn);
        expect_close(lbl, dz, lfx(nm, NULL, NULL), nz, 1e-4);
        /* thread counts 1 and 4, same kernels: bit-identical sums, coefficients and gradients */
        int same = 1;
        for (int th = 1; th <= 4; th += 3) {
            NnTeam *t2 = NULL;
            if (nn_team_create(th, 0, 0, &t2) < 0) { same = 0; break; }
            const double l2 = nn_loss_grad(t2, kind, z, bits, pres, N, C, HW, pl2, a2, b2, dz2);
            same &= nn_team_generic(t2) == nn_team_generic(t) && l2 == loss &&
                    !memcmp(planes, pl2, sizeof(double) * NN_LOSS_PLANE * N * C) && !memcmp(a, a2, sizeof(float) * C) &&
                    !memcmp(b, b2, sizeof(float) * C) && !memcmp(dz, dz2, sizeof(float) * nz);
            nn_team_free(t2);
        }
        CHECK(same, "[%s] %s.%s: 1 and 4 threads give bit-identical plane sums, loss, coefficients and gradient", g_team,
              tag, kn);
    }
    /* central differences of the bce+dice loss in double, at a spread of elements */
    double *zd = malloc(sizeof(double) * nz), gmax = 0;
    for (size_t i = 0; i < nz; i++) { zd[i] = z[i]; gmax = fmax(gmax, fabs(dz[i])); }
    int fd_bad = 0, fd_n = 0;
    double fd_worst = 0;
    for (size_t i = 3; i < nz; i += nz / 23) {
        const double h = 1e-3, z0 = zd[i];
        zd[i] = z0 + h;
        const double lp = ref_loss(2, zd, tg, N, C, HW);
        zd[i] = z0 - h;
        const double lm = ref_loss(2, zd, tg, N, C, HW);
        zd[i] = z0;
        const double fd = (lp - lm) / (2 * h), e = fabs(fd - dz[i]);
        fd_worst = fmax(fd_worst, e / gmax);
        if (!(e <= 1e-4 * fabs(fd) + 1e-5 * gmax)) { fd_bad++; printf("    fd %s[%zu]: analytic %.8g numeric %.8g\n", tag, i, dz[i], fd); }
        fd_n++;
    }
    CHECK(fd_bad == 0, "[%s] %s bce+dice: central differences (double, h 1e-3) at %d elements, worst |d|/max|g| %.2g", g_team,
          tag, fd_n, fd_worst);
    free(zd);
    free(bits); free(pres); free(planes); free(pl2); free(a); free(b); free(a2); free(b2); free(dz); free(dz2);
}

/* no target anywhere: the Dice term is 0 with zero gradient, bce+dice is BCE alone */
static void t_dice_empty(NnTeam *t)
{
    const int N = 2, C = 3, HW = 40, n = N * C * HW;
    float *z = fcopy(NULL, n), *dz = fcopy(NULL, n), *tg = fcopy(NULL, n), a[3], b[3];
    uint64_t s = 3;
    for (int i = 0; i < n; i++) { z[i] = (float)((double)(t_rand(&s) >> 11) / 9007199254740992.0 * 8 - 4); tg[i] = 0.f; }
    uint8_t bits[2 * 3 * 40 / 8], pres[2];
    t_pack_targets(tg, N, C, HW, bits, pres);
    double planes[2 * 3 * NN_LOSS_PLANE];
    const double l1 = nn_loss_grad(t, 1, z, bits, pres, N, C, HW, planes, a, b, dz);
    int zero = 1;
    for (int i = 0; i < n; i++) zero &= dz[i] == 0.f;
    CHECK(l1 == 0.0 && zero && a[0] == 0.f && b[2] == 0.f, "[%s] no targets: dice loss %g, gradient all zero", g_team, l1);
    const double l2 = nn_loss_grad(t, 2, z, bits, pres, N, C, HW, planes, a, b, dz), bce = nn_bce_sum(t, z, bits, pres, N, C, HW) / n;
    int same = 1;
    for (int i = 0; i < n; i++) {
        const float e = expf(-fabsf(z[i])), r = 1.f / (1.f + e);
        same &= fabsf(dz[i] - (z[i] < 0.f ? e * r : r) / n) <= 1e-6f / n;
    }
    CHECK(fabs(l2 - bce) <= 1e-12 && same, "[%s] no targets: bce+dice = bce %.9g (%.9g), gradient sigmoid/count", g_team, l2, bce);
    free(z); free(dz); free(tg);
}

/* ---- partly labelled samples (loss_masked.bin) --------------------------------------------- */
static const float *mfx(const char *name, size_t *n, int64_t shape[4])
{
    const float *p = nn_tfile_get(g_mfx, name, n, NULL, shape);
    if (!p) { printf("FAIL fixture tensor %s missing\n", name); exit(1); }
    return p;
}

static void pack_lab(const float *lab, int N, int C, uint8_t *out)
{
    const int CB = (C + 7) / 8;
    memset(out, 0, (size_t)N * CB);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            if (lab[n * C + c] > 0.5f) maskpack_set(out + n * CB, c);
}

static void t_masked(NnTeam *t)
{
    char nm[64];
    int64_t zs[4];
    size_t nz;
    const float *z = mfx("m.z", &nz, zs), *tg = mfx("m.t", NULL, NULL), *labf = mfx("m.lab", NULL, NULL);
    const int N = (int)zs[0], C = (int)zs[1], HW = (int)(zs[2] * zs[3]), CB = (C + 7) / 8;
    uint8_t *bits = malloc((size_t)N * C * HW / 8), *pres = malloc((size_t)N * CB), *lab = malloc((size_t)N * CB),
            *all = malloc((size_t)N * CB);
    t_pack_targets(tg, N, C, HW, bits, pres);
    pack_lab(labf, N, C, lab);
    for (int i = 0; i < N * CB; i++) all[i] = (uint8_t)(C >= 8 * (i % CB + 1) ? 0xFF : (1u << (C - 8 * (i % CB))) - 1);
    const size_t np = (size_t)NN_LOSS_PLANE * N * C;
    double *planes = malloc(sizeof(double) * np), *pl2 = malloc(sizeof(double) * np);
    float a[8], b[8], a2[8], b2[8], *dz = fcopy(NULL, nz), *dz2 = fcopy(NULL, nz);
    for (int kind = 1; kind <= 2; kind++) {
        const char *kn = kind == 1 ? "dice" : "bce+dice";
        const double loss = nn_loss_grad_lab(t, kind, z, bits, pres, lab, N, C, HW, planes, a, b, dz);
        snprintf(nm, sizeof nm, "m.%s.loss64", kn);
        const double r64 = mfx(nm, NULL, NULL)[0];
        CHECK(fabs(loss - r64) <= 1e-6 * fabs(r64) + 1e-7, "[%s] masked %s loss %.9g vs torch fp64 %.9g", g_team, kn, loss, r64);
        snprintf(nm, sizeof nm, "m.%s.dz", kn);
        char lbl[64];
        snprintf(lbl, sizeof lbl, "masked %s dz", kn);
        expect_close(lbl, dz, mfx(nm, NULL, NULL), nz, 1e-4);
        int zero = 1;
        for (int pl = 0; pl < N * C; pl++)
            if (!(labf[pl] > 0.5f))
                for (int q = 0; q < HW; q++) zero &= dz[(size_t)pl * HW + q] == 0.f && planes[(size_t)pl * NN_LOSS_PLANE + q % 4] == 0.0;
        CHECK(zero, "[%s] masked %s: unlabelled planes have zero sums and zero gradient", g_team, kn);
        /* an all-ones bitmap is NULL, bit for bit */
        const double l1 = nn_loss_grad_lab(t, kind, z, bits, pres, all, N, C, HW, planes, a, b, dz);
        const double l0 = nn_loss_grad_lab(t, kind, z, bits, pres, NULL, N, C, HW, pl2, a2, b2, dz2);
        CHECK(l1 == l0 && !memcmp(planes, pl2, sizeof(double) * np) && !memcmp(a, a2, sizeof(float) * C) &&
              !memcmp(b, b2, sizeof(float) * C) && !memcmp(dz, dz2, sizeof(float) * nz),
              "[%s] masked %s: an all-labelled bitmap gives the NULL loss, sums and gradient bit for bit", g_team, kn);
        /* sample 1 (nothing labelled) contributes nothing: the batch of samples 0 and 2 alone */
        const size_t pz = (size_t)C * HW, pb = (size_t)C * HW / 8;
        float *z2 = fcopy(NULL, 2 * pz), *dz3 = fcopy(NULL, 2 * pz);
        uint8_t *bits2 = malloc(2 * pb), pres2[2 * 8], lab2[2 * 8];
        memcpy(z2, z, sizeof(float) * pz); memcpy(z2 + pz, z + 2 * pz, sizeof(float) * pz);
        memcpy(bits2, bits, pb); memcpy(bits2 + pb, bits + 2 * pb, pb);
        memcpy(pres2, pres, CB); memcpy(pres2 + CB, pres + 2 * CB, CB);
        memcpy(lab2, lab, CB); memcpy(lab2 + CB, lab + 2 * CB, CB);
        const double l3 = nn_loss_grad_lab(t, kind, z, bits, pres, lab, N, C, HW, planes, a, b, dz);
        const double l2 = nn_loss_grad_lab(t, kind, z2, bits2, pres2, lab2, 2, C, HW, pl2, a2, b2, dz3);
        CHECK(l2 == l3 && !memcmp(a, a2, sizeof(float) * C) && !memcmp(b, b2, sizeof(float) * C) &&
              !memcmp(dz, dz3, sizeof(float) * pz) && !memcmp(dz + 2 * pz, dz3 + pz, sizeof(float) * pz),
              "[%s] masked %s: an all-unlabelled sample changes neither the loss nor the other gradients (%.9g, %.9g)",
              g_team, kn, l3, l2);
        free(z2); free(dz3); free(bits2);
    }
    /* Dice counts skip unlabelled planes: against a plain loop over the labelled ones */
    int64_t tp[8] = {0}, fp[8] = {0}, fn[8] = {0}, rt[8] = {0}, rf[8] = {0}, rn[8] = {0};
    nn_dice_counts(t, z, bits, pres, lab, N, C, HW, tp, fp, fn);
    for (int pl = 0; pl < N * C; pl++) {
        if (!(labf[pl] > 0.5f)) continue;
        for (int q = 0; q < HW; q++) {
            const int p = z[(size_t)pl * HW + q] > 0.f, y = tg[(size_t)pl * HW + q] > 0.5f;
            rt[pl % C] += p && y; rf[pl % C] += p && !y; rn[pl % C] += !p && y;
        }
    }
    CHECK(!memcmp(tp, rt, sizeof tp) && !memcmp(fp, rf, sizeof fp) && !memcmp(fn, rn, sizeof fn) && tp[1] == 0 && fp[1] == 0,
          "[%s] masked Dice counts: unlabelled planes skipped (channel 1, never labelled: tp %lld fp %lld)", g_team,
          (long long)tp[1], (long long)fp[1]);
    free(bits); free(pres); free(lab); free(all); free(planes); free(pl2); free(dz); free(dz2);
}

static void t_adam(NnTeam *t)
{
    size_t n;
    const float *p0 = fx("adam.p0", &n, NULL);
    float *p = fcopy(p0, n);
    float *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
    char nm[32];
    for (int s = 1; s <= 3; s++) {
        snprintf(nm, sizeof nm, "adam.g%d", s);
        nn_adam(t, p, fx(nm, NULL, NULL), m, v, n, 1e-2, 0.9, 0.999, 1e-8, s);
        snprintf(nm, sizeof nm, "adam.p%d", s);
        char tag[32];
        snprintf(tag, sizeof tag, "adam p step %d", s);
        expect_close(tag, p, fx(nm, NULL, NULL), n, 1e-6);
    }
    expect_close("adam m", m, fx("adam.m3", NULL, NULL), n, 1e-6);
    expect_close("adam v", v, fx("adam.v3", NULL, NULL), n, 1e-6);
    double ss = nn_sumsq(t, p, n), rs = 0;
    for (size_t i = 0; i < n; i++) rs += (double)p[i] * p[i];
    CHECK(fabs(ss - rs) <= 1e-6 * rs, "[%s] sumsq %.9g ref %.9g", g_team, ss, rs);
    free(p); free(m); free(v);
}

static void run_all(NnTeam *t)
{
    t_conv(t, "conv");
    t_conv(t, "convk");
    t_conv(t, "convw");
    t_conv(t, "conv1");
    t_cat(t, "cat");
    t_cat(t, "catw");
    t_bn(t, "bn", 0);
    t_bn(t, "bnrelu", 1);
    t_relu(t);
    t_pool(t);
    t_convt(t);
    t_head(t);
    t_bce(t);
    t_dice_case(t, "a");
    t_dice_case(t, "b");
    t_dice_empty(t);
    t_masked(t);
    t_adam(t);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "tests/fixtures/nn/layers.bin";
    int rc = nn_tfile_read(path, &g_fx);
    if (rc < 0) { printf("FAIL %s: %s\n", path, seg_errmsg()); return 1; }
    char lpath[512];
    const char *sl = strrchr(path, '/');
    snprintf(lpath, sizeof lpath, "%.*sloss.bin", sl ? (int)(sl - path + 1) : 0, path);
    rc = nn_tfile_read(lpath, &g_lfx);
    if (rc < 0) { printf("FAIL %s: %s\n", lpath, seg_errmsg()); return 1; }
    snprintf(lpath, sizeof lpath, "%.*sloss_masked.bin", sl ? (int)(sl - path + 1) : 0, path);
    rc = nn_tfile_read(lpath, &g_mfx);
    if (rc < 0) { printf("FAIL %s: %s\n", lpath, seg_errmsg()); return 1; }
    struct { const char *name; int threads; size_t scratch; int generic; } cfg[] = {
        { "best x2", 2, NN_SCRATCH_DEFAULT, 0 },          /* best = cpuid's or SEGKIT_CPU's path */
        { "generic x1", 1, NN_SCRATCH_DEFAULT, 1 },
        { "best x3 small tiles", 3, 12000, 0 },
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        if (cfg[i].generic) setenv("SEGKIT_NN_GENERIC", "1", 1); else unsetenv("SEGKIT_NN_GENERIC");
        NnTeam *t = NULL;
        rc = nn_team_create(cfg[i].threads, cfg[i].scratch, 1 << 16, &t);
        CHECK(rc == 0, "team %s created", cfg[i].name);
        if (rc < 0) { printf("  %s\n", seg_errmsg()); continue; }
        g_team = cfg[i].name;
        printf("-- %s: the %s kernels\n", cfg[i].name, nn_team_cpu(t));
        run_all(t);
        nn_team_free(t);
    }
    unsetenv("SEGKIT_NN_GENERIC");
    nn_tfile_free(g_fx);
    nn_tfile_free(g_lfx);
    nn_tfile_free(g_mfx);
    return t_report("test_nn");
}
