/* tests/test_gpu_kernels.cu : every launcher of common/gpu/gpu_kernels.cu against a plain
 * CPU loop, at sizes chosen to be awkward for the kernels' tiling and splitting (not
 * multiples of 32, fewer elements than blocks, ties in pooling windows). Built twice: by
 * nvcc for a real GPU (skips, exit 77, without one), and by g++ for the CUDA emulator
 * (tests/cuemu) as test_gpu_kernels_emu, which runs everywhere. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "gpu_kernels.h"
#include "gpu_math.h"
#include "testutil.h"

#define CU(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #x, \
    cudaGetErrorString(e_)); exit(1); } } while (0)

static float frand(uint64_t *s, float lo, float hi) { return lo + (hi - lo) * (float)((t_rand(s) >> 40) * (1.0 / 16777216.0)); }

/* A device copy of a host vector, and back. */
template <typename T> static T *up(const std::vector<T> &h)
{
    T *d = NULL;
    CU(cudaMalloc((void **)&d, sizeof(T) * (h.size() ? h.size() : 1)));
    if (h.size()) CU(cudaMemcpy(d, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice));
    return d;
}
/* Device memory for a kernel's output, not initialised (the emulator fills it with NaN). */
template <typename T> static T *dev(size_t n)
{
    T *d = NULL;
    CU(cudaMalloc((void **)&d, sizeof(T) * (n ? n : 1)));
    return d;
}
template <typename T> static std::vector<T> down(const T *d, size_t n)
{
    std::vector<T> h(n);
    CU(cudaDeviceSynchronize());
    CU(cudaGetLastError());
    if (n) CU(cudaMemcpy(h.data(), d, sizeof(T) * n, cudaMemcpyDeviceToHost));
    return h;
}
static std::vector<float> randv(size_t n, uint64_t seed, float lo = -3.f, float hi = 3.f)
{
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = frand(&seed, lo, hi);
    return v;
}

static void test_elementwise(void)
{
    const long n = 100003;
    std::vector<float> y = randv(n, 1), a = randv(n, 2), g = randv(n, 3);
    float *dy = up(y), *da = up(a), *dg = up(g);
    gk_relu(0, dy, n);
    gk_relu_bwd(0, dg, da, n);
    gk_scale(0, da, (size_t)n, -0.5f);
    std::vector<float> ry = down(dy, n), rg = down(dg, n), ra = down(da, n);
    long bad = 0;
    for (long i = 0; i < n; i++) {
        bad += ry[i] != (y[i] > 0.f ? y[i] : 0.f);
        bad += rg[i] != (a[i] > 0.f ? g[i] : 0.f);
        bad += ra[i] != a[i] * -0.5f;
    }
    CHECK(bad == 0, "relu, relu backward and scale over %ld floats: exact (%ld differ)", n, bad);
    cudaFree(dy); cudaFree(da); cudaFree(dg);
}

static void test_pool(void)
{
    const long NC = 7;
    const int H = 10, W = 6, Ho = H / 2, Wo = W / 2;
    uint64_t s = 5;
    std::vector<float> x(NC * H * W), dy = randv(NC * Ho * Wo, 6), dx = randv(NC * H * W, 7);
    for (auto &v : x) v = (float)(t_rand(&s) % 3);          /* many ties */
    float *dxp = up(x), *dyp = up(dy), *ddx = up(dx), *dyo = dev<float>(NC * Ho * Wo);
    gk_pool_fwd(0, dxp, dyo, NC, H, W);
    gk_pool_bwd(0, dxp, dyp, ddx, NC, H, W);
    std::vector<float> ry = down(dyo, NC * Ho * Wo), rdx = down(ddx, NC * H * W), want = dx;
    long bad = 0;
    for (long p = 0; p < NC; p++)
        for (int i = 0; i < Ho; i++)
            for (int j = 0; j < Wo; j++) {
                const float *q = &x[(p * H + 2 * i) * W + 2 * j];
                const int k = gm_argmax4(q[0], q[1], q[W], q[W + 1]);
                const long o = (p * Ho + i) * Wo + j;
                bad += ry[o] != q[(k >> 1) * W + (k & 1)];
                want[(p * H + 2 * i + (k >> 1)) * W + 2 * j + (k & 1)] += dy[o];
            }
    for (size_t i = 0; i < want.size(); i++) bad += rdx[i] != want[i];
    CHECK(bad == 0, "max pool forward and backward (accumulating into dx), %ld planes of %dx%d with ties: exact (%ld differ)",
          NC, H, W, bad);
    cudaFree(dxp); cudaFree(dyp); cudaFree(ddx); cudaFree(dyo);
}

static void test_concat(void)
{
    const int N = 2, Ca = 3, Cb = 5;
    const long HW = 37;
    std::vector<float> a = randv(N * Ca * HW, 8), b = randv(N * Cb * HW, 9), bias = randv(Ca + Cb, 10);
    float *da = up(a), *db = up(b), *dy = dev<float>(N * (Ca + Cb) * HW), *dbias = up(bias);
    float *da2 = dev<float>(a.size()), *db2 = dev<float>(b.size());
    gk_concat(0, da, db, dy, N, Ca, Cb, HW);
    std::vector<float> ry = down(dy, N * (Ca + Cb) * HW);
    gk_split(0, dy, da2, db2, N, Ca, Cb, HW);
    gk_bias_add(0, dy, dbias, N, Ca + Cb, HW);
    std::vector<float> ra = down(da2, a.size()), rb = down(db2, b.size()), rby = down(dy, ry.size());
    long bad = 0;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < Ca + Cb; c++)
            for (long q = 0; q < HW; q++) {
                const long i = ((long)n * (Ca + Cb) + c) * HW + q;
                const float v = c < Ca ? a[((long)n * Ca + c) * HW + q] : b[((long)n * Cb + c - Ca) * HW + q];
                bad += ry[i] != v;
                bad += rby[i] != v + bias[c];
            }
    bad += memcmp(ra.data(), a.data(), sizeof(float) * a.size()) != 0;
    bad += memcmp(rb.data(), b.data(), sizeof(float) * b.size()) != 0;
    CHECK(bad == 0, "concat, split (its inverse) and bias add, %d + %d channels of %ld pixels: exact (%ld differ)", Ca, Cb,
          HW, bad);
    cudaFree(da); cudaFree(db); cudaFree(dy); cudaFree(dbias); cudaFree(da2); cudaFree(db2);
}

static void test_channel_sum(int N, int C, long HW)
{
    std::vector<float> dy = randv((size_t)N * C * HW, 11 + HW);
    float *d = up(dy), *out = dev<float>(C);
    double *scratch = dev<double>((size_t)C * GK_CSUM_SPLIT);
    gk_channel_sum(0, d, N, C, HW, out, scratch);
    std::vector<float> r = down(out, C);
    double worst = 0;
    for (int c = 0; c < C; c++) {
        double s = 0, mag = 0;
        for (int n = 0; n < N; n++)
            for (long q = 0; q < HW; q++) { s += dy[((size_t)n * C + c) * HW + q]; mag += fabs(dy[((size_t)n * C + c) * HW + q]); }
        const double e = fabs(r[c] - s) / (mag + 1e-30);
        if (!(e <= worst)) worst = e;
    }
    CHECK(worst <= 1e-7, "channel sums, %d x %d channels of %ld pixels (%ld values per channel over %d blocks): rel err %.1e",
          N, C, HW, N * HW, GK_CSUM_SPLIT, worst);
    cudaFree(d); cudaFree(out); cudaFree(scratch);
}

static void test_loss(void)
{
    const int N = 2, C = 11, CB = (C + 7) / 8;
    const long HW = 24 * 40;
    const size_t n = (size_t)N * C * HW;
    uint64_t s = 21;
    std::vector<float> z = randv(n, 22, -9.f, 9.f);
    for (size_t i = 0; i < n; i += 97) z[i] = 0.f;             /* exact zeros: the Dice threshold */
    std::vector<uint8_t> bits(n / 8), pres(N * CB);
    for (auto &b : bits) b = (uint8_t)t_rand(&s);
    for (auto &p : pres) p = (uint8_t)t_rand(&s);
    pres[0] |= 1; pres[CB] &= (uint8_t)~1;
    std::vector<float> ca(C), cb(C);                           /* soft-Dice coefficients, some zero */
    for (int c = 0; c < C; c++) { ca[c] = c % 4 == 3 ? 0.f : -frand(&s, 0.f, 1e-3f); cb[c] = c % 4 == 3 ? 0.f : frand(&s, 0.f, 1e-4f); }
    float *dz = up(z), *dd = dev<float>(n), *dd2 = dev<float>(n), *da = up(ca), *dcb = up(cb);
    uint8_t *db = up(bits), *dp = up(pres);
    double *part = dev<double>((size_t)4 * N * C), *part2 = dev<double>((size_t)4 * N * C);
    unsigned long long *cnt = up(std::vector<unsigned long long>(3 * C, 7));   /* the kernel adds to these */
    const float scale = 1.f / (float)n, cscale = 1024.f;
    gk_bce_sum(0, dz, db, dp, NULL, N, C, HW, 0, part);
    gk_bce_sum(0, dz, db, dp, NULL, N, C, HW, 1, part2);
    gk_bce_grad(0, dz, db, dp, NULL, N, C, HW, scale, NULL, NULL, 1.f, dd);
    gk_bce_grad(0, dz, db, dp, NULL, N, C, HW, scale, da, dcb, cscale, dd2);
    gk_dice(0, dz, db, dp, NULL, N, C, HW, cnt, cnt + C, cnt + 2 * C);
    std::vector<double> rp = down(part, (size_t)4 * N * C), rp2 = down(part2, (size_t)4 * N * C);
    std::vector<float> rd = down(dd, n), rd2 = down(dd2, n);
    std::vector<unsigned long long> rc = down(cnt, 3 * C);
    std::vector<unsigned long long> want(3 * C, 7);
    double worst = 0, worst_d = 0;
    long bad = 0, bad2 = 0, ycount_bad = 0;
    for (int pl = 0; pl < N * C; pl++) {
        const int c = pl % C, pr = gm_present(pres.data(), C, pl / C, c);
        double sum = 0, sp = 0, si = 0, sy = 0;
        for (long q = 0; q < HW; q++) {
            const size_t i = (size_t)pl * HW + q;
            const int t = pr && gm_bit(&bits[(size_t)pl * (HW / 8)], q);
            sum += gm_bce(z[i], t);
            const double p = 1.0 / (1.0 + exp(-(double)z[i]));    /* double reference of the Dice sums */
            sp += p; si += t ? p : 0.0; sy += t;
            bad += rd[i] != gm_bce_grad(z[i], t, scale);
            bad2 += rd2[i] != gm_loss_grad(z[i], t, scale, ca[c] * cscale, cb[c] * cscale);
            const int pz = z[i] > 0.f;
            want[c] += pz && t; want[C + c] += pz && !t; want[2 * C + c] += !pz && t;
        }
        const double e = fmax(fabs(rp[4 * pl] - sum), fabs(rp2[4 * pl] - sum)) / (fabs(sum) + 1e-30);
        if (!(e <= worst)) worst = e;
        const double ed = fmax(fabs(rp2[4 * pl + 1] - sp) / (sp + 1e-30), fabs(rp2[4 * pl + 2] - si) / (si + 1e-30));
        if (!(ed <= worst_d)) worst_d = ed;
        ycount_bad += rp2[4 * pl + 3] != sy || (!pr && (rp2[4 * pl + 2] != 0.0 || sy != 0.0));
    }
    CHECK(worst <= 1e-6, "BCE sums per plane (%d planes, present and absent channels, with and without the Dice sums): "
          "rel err %.1e", N * C, worst);
    CHECK(worst_d <= 1e-6 && ycount_bad == 0, "soft-Dice sums per plane vs a double loop: sum p, sum p*t rel err %.1e; "
          "target counts exact (%ld planes differ)", worst_d, ycount_bad);
    CHECK(bad == 0, "BCE gradient without coefficients: equal to gm_bce_grad element by element (%ld differ)", bad);
    CHECK(bad2 == 0, "BCE + soft-Dice gradient (coefficients times the loss scale): equal to gm_loss_grad element by element "
          "(%ld differ)", bad2);
    CHECK(rc == want, "Dice counts added to what the counters held: exact");
    /* gm_loss_grad itself against the definition: scale*(p - t) + (a*t + b)*p*(1-p), in double */
    double gw = 0;
    for (int k = 0; k < 200; k++) {
        const float zz = frand(&s, -12.f, 12.f), a = -frand(&s, 0.f, 1.f), b = frand(&s, 0.f, 1.f);
        const int t = k & 1;
        const double p = 1.0 / (1.0 + exp(-(double)zz)), ref = 0.25 * (p - t) + (a * t + b) * p * (1 - p);
        gw = fmax(gw, fabs(gm_loss_grad(zz, t, 0.25f, a, b) - ref));
    }
    CHECK(gw <= 2e-7, "gm_loss_grad vs the definition in double at 200 points: max |d| %.1e", gw);
    cudaFree(dz); cudaFree(dd); cudaFree(dd2); cudaFree(da); cudaFree(dcb); cudaFree(db); cudaFree(dp); cudaFree(part);
    cudaFree(part2); cudaFree(cnt);
}

/* partly labelled samples: with a labelled bitmap each labelled plane gets the sums, gradient
 * and counts of the unmasked run bit for bit, an unlabelled one zero sums, zero gradient and no
 * counts; an all-ones bitmap is NULL bit for bit */
static void test_loss_masked(void)
{
    const int N = 3, C = 11, CB = (C + 7) / 8;
    const long HW = 16 * 24;
    const size_t n = (size_t)N * C * HW;
    uint64_t s = 61;
    std::vector<float> z = randv(n, 62, -9.f, 9.f);
    std::vector<uint8_t> bits(n / 8), pres(N * CB), lab(N * CB), all(N * CB, 0xFF);
    for (auto &b : bits) b = (uint8_t)t_rand(&s);
    for (auto &p : pres) p = (uint8_t)t_rand(&s);
    for (int i = 0; i < N * CB; i++) lab[i] = i / CB == 1 ? 0 : (uint8_t)t_rand(&s);   /* sample 1: nothing labelled */
    std::vector<float> ca(C), cb(C);
    for (int c = 0; c < C; c++) { ca[c] = -frand(&s, 0.f, 1e-3f); cb[c] = frand(&s, 0.f, 1e-4f); }
    float *dz = up(z), *da = up(ca), *dcb = up(cb), *dd[3] = { dev<float>(n), dev<float>(n), dev<float>(n) };
    uint8_t *db = up(bits), *dp = up(pres), *dl[3] = { NULL, up(all), up(lab) };
    double *part[3];
    unsigned long long *cnt[3];
    for (int k = 0; k < 3; k++) {
        part[k] = dev<double>((size_t)4 * N * C);
        cnt[k] = up(std::vector<unsigned long long>(3 * C, 0));
        gk_bce_sum(0, dz, db, dp, dl[k], N, C, HW, 1, part[k]);
        gk_bce_grad(0, dz, db, dp, dl[k], N, C, HW, 1.f / (float)n, da, dcb, 1.f, dd[k]);
        gk_dice(0, dz, db, dp, dl[k], N, C, HW, cnt[k], cnt[k] + C, cnt[k] + 2 * C);
    }
    std::vector<double> rp[3];
    std::vector<float> rd[3];
    std::vector<unsigned long long> rc[3];
    for (int k = 0; k < 3; k++) { rp[k] = down(part[k], (size_t)4 * N * C); rd[k] = down(dd[k], n); rc[k] = down(cnt[k], 3 * C); }
    CHECK(rp[1] == rp[0] && rd[1] == rd[0] && rc[1] == rc[0], "all-labelled bitmap: plane sums, gradient and Dice counts "
          "equal to NULL bit for bit");
    long bad_l = 0, bad_u = 0, n_u = 0;
    std::vector<unsigned long long> want(3 * C, 0);
    for (int pl = 0; pl < N * C; pl++) {
        const int c = pl % C, labelled = gm_present(lab.data(), C, pl / C, c), pr = gm_present(pres.data(), C, pl / C, c);
        n_u += !labelled;
        for (int k = 0; k < 4; k++) {
            if (labelled) bad_l += rp[2][4 * pl + k] != rp[0][4 * pl + k];
            else bad_u += rp[2][4 * pl + k] != 0.0;
        }
        for (long q = 0; q < HW; q++) {
            const size_t i = (size_t)pl * HW + q;
            if (!labelled) { bad_u += rd[2][i] != 0.f; continue; }
            bad_l += rd[2][i] != rd[0][i];
            const int t = pr && gm_bit(&bits[(size_t)pl * (HW / 8)], q), pz = z[i] > 0.f;
            want[c] += pz && t; want[C + c] += pz && !t; want[2 * C + c] += !pz && t;
        }
    }
    CHECK(n_u >= C && bad_l == 0 && bad_u == 0, "labelled bitmap (%ld of %d planes unlabelled, one whole sample): labelled "
          "planes as unmasked (%ld differ), unlabelled ones zero sums and zero gradient (%ld differ)", n_u, N * C, bad_l, bad_u);
    CHECK(rc[2] == want, "masked Dice counts: exactly the labelled planes' counts");
    for (int k = 0; k < 3; k++) { cudaFree(dd[k]); cudaFree(part[k]); cudaFree(cnt[k]); if (dl[k]) cudaFree(dl[k]); }
    cudaFree(dz); cudaFree(da); cudaFree(dcb); cudaFree(db); cudaFree(dp);
}

static void test_sumsq(size_t n)
{
    std::vector<float> x = randv(n, 31 + n);
    float *d = up(x);
    double *part = dev<double>(GK_SUMSQ_BLOCKS);
    gk_sumsq(0, d, n, part);
    std::vector<double> r = down(part, GK_SUMSQ_BLOCKS);
    double s = 0, want = 0;
    for (double v : r) s += v;
    for (float v : x) want += (double)v * v;
    CHECK(fabs(s - want) <= 1e-12 * want, "sum of squares of %zu floats over %d blocks: %.15g vs %.15g", n, GK_SUMSQ_BLOCKS, s,
          want);
    cudaFree(d); cudaFree(part);
}

static void test_adam_inc(void)
{
    const size_t n = 5003;
    std::vector<float> p = randv(n, 41), g = randv(n, 42), m = randv(n, 43, -0.1f, 0.1f), v = randv(n, 44, 0.f, 0.01f);
    float *dp = up(p), *dg = up(g), *dm = up(m), *dv = up(v);
    gk_adam(0, dp, dg, dm, dv, n, 0.9f, 0.999f, 0.1f, 0.001f, 1e-8f, 1e-3f / 0.19f, sqrtf(0.002f));
    std::vector<float> rp = down(dp, n), rm = down(dm, n), rv = down(dv, n);
    long bad = 0;
    for (size_t i = 0; i < n; i++) {
        gm_adam(&p[i], &m[i], &v[i], g[i], 0.9f, 0.999f, 0.1f, 0.001f, 1e-8f, 1e-3f / 0.19f, sqrtf(0.002f));
        bad += rp[i] != p[i] || rm[i] != m[i] || rv[i] != v[i];
    }
    CHECK(bad == 0, "Adam over %zu parameters: equal to gm_adam (%ld differ)", n, bad);
    std::vector<float> buf(20, 1.f);
    std::vector<int> off = { 3, 7, 19, 0 };
    float *db = up(buf);
    int *doff = up(off);
    gk_inc(0, db, doff, (int)off.size());
    std::vector<float> rb = down(db, buf.size());
    for (int o : off) buf[o] += 1.f;
    CHECK(rb == buf, "num_batches_tracked increments at %zu offsets", off.size());
    cudaFree(dp); cudaFree(dg); cudaFree(dm); cudaFree(dv); cudaFree(db); cudaFree(doff);
}

/* half bits of x as the kernels round (to nearest even), and back */
static uint16_t half_bits(int kind, float x)
{
    if (kind == 1) { __nv_bfloat16_raw r = __float2bfloat16(x); return r.x; }
    __half_raw r = __float2half(x);
    return r.x;
}
static float half_float(int kind, uint16_t b)
{
    if (kind == 1) { __nv_bfloat16_raw r; r.x = b; return __bfloat162float(__nv_bfloat16(r)); }
    __half_raw r;
    r.x = b;
    return __half2float(__half(r));
}

static void test_casts(int kind, int N, int C, long HW)
{
    const size_t n = (size_t)N * C * HW;
    std::vector<float> x = randv(n, 51 + C, -100.f, 100.f);
    float *dx = up(x), *back = dev<float>(n);
    uint16_t *dh = dev<uint16_t>(n);
    gk_to_half_nhwc(0, kind, dx, dh, N, C, HW);
    gk_from_half_nhwc(0, kind, dh, back, N, C, HW);
    std::vector<uint16_t> rh = down(dh, n);
    std::vector<float> rb = down(back, n);
    long bad = 0;
    for (int s = 0; s < N; s++)
        for (int c = 0; c < C; c++)
            for (long q = 0; q < HW; q++) {
                const uint16_t h = half_bits(kind, x[((size_t)s * C + c) * HW + q]);
                bad += rh[((size_t)s * HW + q) * C + c] != h;
                bad += rb[((size_t)s * C + c) * HW + q] != half_float(kind, h);
            }
    CHECK(bad == 0, "%s casts NCHW -> NHWC and back, (%d, %d, %ld): every element rounded and placed (%ld differ)",
          kind == 1 ? "bf16" : "fp16", N, C, HW, bad);
    cudaFree(dx); cudaFree(back); cudaFree(dh);
}

int main(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        printf("skip: no CUDA device\n");
        return 77;
    }
    if (gk_check_image() != 0) {
        printf("skip: the kernels were not built for this GPU\n");
        return 77;
    }
    test_elementwise();
    test_pool();
    test_concat();
    test_channel_sum(3, 7, 1000);
    test_channel_sum(1, 3, 5);          /* fewer values than blocks: most blocks sum nothing */
    test_channel_sum(2, 33, 64 * 64);
    test_loss();
    test_loss_masked();
    test_sumsq(12345);
    test_sumsq(100);                    /* fewer values than blocks */
    test_adam_inc();
    for (int kind = 1; kind <= 2; kind++) {
        test_casts(kind, 2, 40, 37);    /* neither dimension a multiple of the 32x32 tile */
        test_casts(kind, 1, 64, 9);     /* a KRSC 3x3 filter */
        test_casts(kind, 3, 8, 1024);
    }
    return t_report("test_gpu_kernels");
}
