/* common/nn/nn_pack.c : weights from PyTorch layout into the GEMM's B operand: 32-column
 * panels (panel q at q*K*32, row k at + k*32, zero-padded past N). One panel is one work
 * item, so nn_pack_many spreads all of a model's packing over the team. */
#include "nn_impl.h"

size_t nn_pack_floats(int K, int N) { return (size_t)K * (size_t)((N + NN_NR - 1) / NN_NR * NN_NR); }
size_t nn_conv1x1_pack_floats(int Ci, int Co) { return (size_t)Ci * Co + NN_SLACK; }

/* K and N of a job's packed matrix (conv1x1: Ci rows of the Co-wide transpose) */
static void job_dims(const NnPackJob *j, int *K, int *N)
{
    switch (j->kind) {
    case NN_PACK_CONV3X3:     *K = 9 * j->Ci; *N = j->Co; break;
    case NN_PACK_CONV3X3_BWD: *K = 9 * j->Co; *N = j->Ci; break;
    case NN_PACK_CONVT:       *K = j->Ci; *N = 4 * j->Co; break;
    case NN_PACK_CONVT_BWD:   *K = 4 * j->Co; *N = j->Ci; break;
    default:                  *K = j->Ci; *N = j->Co; break;
    }
}

/* items of a job: its panels, or for conv1x1 blocks of 64 rows */
static int job_items(const NnPackJob *j)
{
    int K, N;
    job_dims(j, &K, &N);
    return j->kind == NN_PACK_CONV1X1 ? (K + 63) / 64 : (N + NN_NR - 1) / NN_NR;
}

static void pack_item(const NnPackJob *j, int q)
{
    const int Ci = j->Ci, Co = j->Co;
    const float *w = j->w;
    int K, N;
    job_dims(j, &K, &N);
    if (j->kind == NN_PACK_CONV1X1) {             /* wt[ci][co] = w[co][ci] */
        const int c1 = (q + 1) * 64 < Ci ? (q + 1) * 64 : Ci;
        for (int ci = q * 64; ci < c1; ci++)
            for (int co = 0; co < Co; co++) j->dst[(size_t)ci * Co + co] = w[(size_t)co * Ci + ci];
        if (c1 == Ci) memset(j->dst + (size_t)Ci * Co, 0, sizeof(float) * NN_SLACK);
        return;
    }
    float *p = j->dst + (size_t)q * K * NN_NR;
    const int n0 = q * NN_NR, nn = N - n0 < NN_NR ? N - n0 : NN_NR;
    if (nn < NN_NR) memset(p, 0, sizeof(float) * (size_t)K * NN_NR);
    /* blocks of 16 input rows: the 16*9 destination lines of a block stay in L1 while all
     * 32 columns of the panel are written into them */
    switch (j->kind) {
    case NN_PACK_CONV3X3:            /* B[tap*Ci + ci][co] = w[co][ci][tap] */
        for (int c0 = 0; c0 < Ci; c0 += 16) {
            const int c1 = c0 + 16 < Ci ? c0 + 16 : Ci;
            for (int jn = 0; jn < nn; jn++) {
                const float *src = w + ((size_t)(n0 + jn) * Ci) * 9;
                for (int ci = c0; ci < c1; ci++)
                    for (int tap = 0; tap < 9; tap++) p[(size_t)(tap * Ci + ci) * NN_NR + jn] = src[(size_t)ci * 9 + tap];
            }
        }
        break;
    case NN_PACK_CONV3X3_BWD:        /* B[tap*Co + co][ci] = w[co][ci][8 - tap] (flipped) */
        for (int c0 = 0; c0 < Co; c0 += 16) {
            const int c1 = c0 + 16 < Co ? c0 + 16 : Co;
            for (int jn = 0; jn < nn; jn++)
                for (int co = c0; co < c1; co++) {
                    const float *src = w + ((size_t)co * Ci + n0 + jn) * 9;
                    for (int tap = 0; tap < 9; tap++) p[(size_t)(tap * Co + co) * NN_NR + jn] = src[8 - tap];
                }
        }
        break;
    case NN_PACK_CONVT:              /* B[ci][ab*Co + co] = w[ci][co][ab] */
        for (int ci = 0; ci < Ci; ci++)
            for (int jn = 0; jn < nn; jn++) {
                const int n = n0 + jn, ab = n / Co, co = n % Co;
                p[(size_t)ci * NN_NR + jn] = w[((size_t)ci * Co + co) * 4 + ab];
            }
        break;
    case NN_PACK_CONVT_BWD:          /* B[ab*Co + co][ci] = w[ci][co][ab] */
        for (int jn = 0; jn < nn; jn++) {
            const float *src = w + (size_t)(n0 + jn) * Co * 4;
            for (int co = 0; co < Co; co++)
                for (int ab = 0; ab < 4; ab++) p[(size_t)(ab * Co + co) * NN_NR + jn] = src[co * 4 + ab];
        }
        break;
    default:
        break;
    }
}

typedef struct { const NnPackJob *jobs; int n; const int *first; } PackCtx;

static void pack_task(void *vctx, int tid, int b, int e)
{
    const PackCtx *c = vctx;
    int j = 0;
    for (int it = b; it < e; it++) {
        while (j + 1 < c->n && c->first[j + 1] <= it) j++;
        while (j > 0 && c->first[j] > it) j--;
        pack_item(&c->jobs[j], it - c->first[j]);
    }
    (void)tid;
}

void nn_pack_many(NnTeam *t, const NnPackJob *jobs, int n)
{
    int first[NN_PACK_MAX_JOBS + 1];
    if (n > NN_PACK_MAX_JOBS) {                  /* in slices, each within the table */
        nn_pack_many(t, jobs, NN_PACK_MAX_JOBS);
        nn_pack_many(t, jobs + NN_PACK_MAX_JOBS, n - NN_PACK_MAX_JOBS);
        return;
    }
    int total = 0;
    for (int i = 0; i < n; i++) { first[i] = total; total += job_items(&jobs[i]); }
    first[n] = total;
    PackCtx c = { jobs, n, first };
    nn_team_run_dynamic(t, total, pack_task, &c);
}

static void pack_one(int kind, float *dst, const float *w, int Ci, int Co)
{
    const NnPackJob j = { kind, dst, w, Ci, Co };
    for (int q = 0, nq = job_items(&j); q < nq; q++) pack_item(&j, q);
}

void nn_conv3x3_pack(float *wp, const float *w, int Ci, int Co) { pack_one(NN_PACK_CONV3X3, wp, w, Ci, Co); }
void nn_conv3x3_pack_bwd(float *wp, const float *w, int Ci, int Co) { pack_one(NN_PACK_CONV3X3_BWD, wp, w, Ci, Co); }
void nn_convt_pack(float *wp, const float *w, int Ci, int Co) { pack_one(NN_PACK_CONVT, wp, w, Ci, Co); }
void nn_convt_pack_bwd(float *wp, const float *w, int Ci, int Co) { pack_one(NN_PACK_CONVT_BWD, wp, w, Ci, Co); }
void nn_conv1x1_pack(float *wt, const float *w, int Ci, int Co) { pack_one(NN_PACK_CONV1X1, wt, w, Ci, Co); }
