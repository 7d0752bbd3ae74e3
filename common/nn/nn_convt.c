/* common/nn/nn_convt.c : ConvTranspose2d with kernel 2, stride 2 (and bias) over NHWC.
 * Every input pixel produces a 2x2 block of output pixels, so the layer is one GEMM
 * [pixels x Ci] * [Ci x 4*Co] whose row is scattered into the four output pixels; the
 * backward gathers the four dy pixels back into a row and runs the two transposed GEMMs. */
#include "nn_impl.h"

static inline int imin(int a, int b) { return a < b ? a : b; }

size_t nn_convt_acc_floats(int Ci, int Co) { return (size_t)4 * Ci * Co + 4 * (size_t)Co + 16; }

typedef struct {
    NnTeam *t;
    const NnOut *y;
    const NnOut *dx;
    const NnAct *x;
    const float *wp, *b, *dy;
    int ldy, Ci, Co, H, W, T, na;
    long P;
    float *dw, *db;
} ConvT;

static int convt_tile(const NnTeam *t, int Ci, int Co, long P)
{
    const size_t per_row = (size_t)Ci + 4 * (size_t)Co, fixed = 2 * NN_SLACK + 4 * (size_t)Co + 64;
    size_t avail = nn_team_scratch_floats(t);
    if (avail > 160 * 1024 + fixed) avail = 160 * 1024 + fixed;
    return nn_tile_balance(P, nn_tile_rows(avail, per_row, fixed, 384), nn_team_size(t));
}

/* output pixel index of input pixel p's (a, b) child */
static inline long child(long p, int a, int b, int H, int W)
{
    const long HW = (long)H * W;
    const long n = p / HW;
    const int r = (int)(p % HW), i = r / W, j = r % W;
    return (n * 2 * H + 2 * i + a) * (2L * W) + 2 * j + b;
}

static void convt_fwd_task(void *vctx, int tid, int b, int e)
{
    const ConvT *c = vctx;
    const int Ci = c->Ci, Co = c->Co, T = c->T, N4 = 4 * Co;
    float *xt = nn_team_scratch(c->t, tid);
    float *ot = xt + (size_t)T * Ci + NN_SLACK;
    float *b4 = ot + (size_t)T * N4 + NN_SLACK;
    for (int ab = 0; ab < 4; ab++) memcpy(b4 + ab * Co, c->b, sizeof(float) * (size_t)Co);
    for (int it = b; it < e; it++) {
        const long p0 = (long)it * T;
        const int np = (int)(c->P - p0 < T ? c->P - p0 : T);
        for (int r = 0; r < np; r++) nn_v_act_view(xt + (size_t)r * Ci, c->x, p0 + r, 0, Ci);
        nn_gemm_f(c->t, np, N4, Ci, xt, Ci, c->wp, (long)Ci * NN_NR, NN_NR, ot, N4, 0, b4);
        for (int r = 0; r < np; r++)
            for (int ab = 0; ab < 4; ab++)
                memcpy(c->y->y + child(p0 + r, ab >> 1, ab & 1, c->H, c->W) * c->y->ld,
                       ot + (size_t)r * N4 + ab * Co, sizeof(float) * (size_t)Co);
    }
}

void nn_convt_forward(NnTeam *t, const NnOut *y, const NnAct *x, const float *wp,
                      const float *b, int N, int H, int W)
{
    ConvT c = { .t = t, .y = y, .x = x, .wp = wp, .b = b, .Ci = x->C, .Co = y->C, .H = H,
                .W = W, .P = (long)N * H * W };
    c.T = convt_tile(t, c.Ci, c.Co, c.P);
    nn_team_run_dynamic(t, (int)((c.P + c.T - 1) / c.T), convt_fwd_task, &c);
}

static void convt_bwd_task(void *vctx, int tid, int b, int e)
{
    const ConvT *c = vctx;
    const int Ci = c->Ci, Co = c->Co, T = c->T, N4 = 4 * Co;
    float *xt = nn_team_scratch(c->t, tid);
    float *dg = xt + (size_t)T * Ci + NN_SLACK;
    float *part = nn_team_acc(c->t, tid), *dbp = part + (size_t)Ci * N4;
    memset(part, 0, sizeof(float) * ((size_t)Ci * N4 + N4));
    for (int it = b; it < e; it++) {
        const long p0 = (long)it * T;
        const int np = (int)(c->P - p0 < T ? c->P - p0 : T);
        for (int r = 0; r < np; r++) {
            float *row = dg + (size_t)r * N4;
            for (int ab = 0; ab < 4; ab++)
                memcpy(row + ab * Co, c->dy + child(p0 + r, ab >> 1, ab & 1, c->H, c->W) * c->ldy,
                       sizeof(float) * (size_t)Co);
            nn_v_add(dbp, row, N4);
            nn_v_act_view(xt + (size_t)r * Ci, c->x, p0 + r, 0, Ci);
        }
        nn_gemm_w(c->t, Ci, N4, np, xt, Ci, dg, N4, part, N4, 1);
        if (c->dx)
            nn_gemm_f(c->t, np, Ci, N4, dg, N4, c->wp, (long)N4 * NN_NR, NN_NR,
                      c->dx->y + p0 * c->dx->ld, c->dx->ld, 0, NULL);
    }
}

/* dw[ci][co][ab] += sum of partials [ci][ab*Co + co]; items are input channels */
static void convt_bwd_reduce(void *vctx, int tid, int b, int e)
{
    const ConvT *c = vctx;
    const int Co = c->Co, N4 = 4 * Co;
    for (int ci = b; ci < e; ci++)
        for (int th = 0; th < c->na; th++) {
            const float *part = nn_team_acc(c->t, th) + (size_t)ci * N4;
            for (int co = 0; co < Co; co++)
                for (int ab = 0; ab < 4; ab++) c->dw[((size_t)ci * Co + co) * 4 + ab] += part[ab * Co + co];
        }
    (void)tid;
}

void nn_convt_backward(NnTeam *t, const NnOut *dx, float *dw, float *db, const float *dy,
                       int ldy, int Co, const NnAct *x, const float *wpb, int N, int H, int W)
{
    ConvT c = { .t = t, .dx = dx, .x = x, .wp = wpb, .dy = dy, .ldy = ldy, .Ci = x->C, .Co = Co,
                .H = H, .W = W, .P = (long)N * H * W, .dw = dw, .db = db };
    c.T = convt_tile(t, c.Ci, Co, c.P);
    const int items = (int)((c.P + c.T - 1) / c.T);
    nn_team_run(t, items, convt_bwd_task, &c);
    c.na = nn_team_active(t, items);
    for (int th = 0; th < c.na; th++) {
        const float *dbp = nn_team_acc(t, th) + (size_t)c.Ci * 4 * Co;
        for (int co = 0; co < Co; co++)
            for (int ab = 0; ab < 4; ab++) db[co] += dbp[ab * Co + co];
    }
    nn_team_run(t, c.Ci, convt_bwd_reduce, &c);
}
