/* tests/test_loader.c : the batch loader over a small synthetic cache written with the
 * cache writer: sample selection and order, HU normalisation, packed targets bit-exact,
 * seeded shuffles that are permutations and do not depend on the thread count, the
 * evenly spaced --limit-slices subset, abandoning an epoch, a corrupt record reported
 * with its subject and slice, and augmentation invariants (left/right labels follow a
 * left-right flip; identical output for 1 and 3 threads); balanced (foreground-first)
 * sampling: the share of drawn slots per batch, every present structure reached, draws
 * holding their structure, determinism; 2.5D context: channels are the neighbour slices
 * with edge replication, under the same augmentation as the centre. */
#include "cache.h"
#include "maskpack.h"
#include "err.h"
#include "loader.h"
#include "testsynth.h"
#include "testutil.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>


static int g_ch = 1;   /* input channels of the loader being hashed (2K+1) */

static int bit(const uint8_t *plane, int p) { return maskpack_get(plane, p); }
static int present(const uint8_t *pres, int c) { return maskpack_get(pres, c); }

/* The subject * 100 + slice that hu_of wrote into pixel (0, 0) of a normalised image. */
static int id_of(const float *img) { return (int)lrintf((img[0] + 1.0f) * 32767.5f - 32768.0f); }

/* FNV-1a over an epoch's batches: images and the planes of present channels only. */
static uint64_t epoch_hash(Loader *l, int epoch, int *n_batches, int *ids, int *n_ids)
{
    uint64_t h = 1469598103934665603ull;
    LoaderBatch b;
    *n_batches = 0;
    if (n_ids) *n_ids = 0;
    if (loader_start_epoch(l, epoch) < 0) return 0;
    int rc;
    while ((rc = loader_next(l, &b)) == 1) {
        (*n_batches)++;
        for (int i = 0; i < b.n; i++) {
            const uint8_t *p = (const uint8_t *)(b.img + (size_t)i * g_ch * S * S);
            for (size_t k = 0; k < (size_t)g_ch * S * S * 4; k++) h = (h ^ p[k]) * 1099511628211ull;
            const uint8_t *pres = b.presence + i;
            for (int c = 0; c < C; c++) {
                h = (h ^ (uint64_t)present(pres, c)) * 1099511628211ull;
                if (!present(pres, c)) continue;
                const uint8_t *pl = b.bits + ((size_t)i * C + c) * (S * S / 8);
                for (int k = 0; k < S * S / 8; k++) h = (h ^ pl[k]) * 1099511628211ull;
            }
            if (ids) ids[(*n_ids)++] = id_of(b.img + ((size_t)i * g_ch + g_ch / 2) * S * S);
        }
    }
    return rc < 0 ? 0 : h;
}

int main(void)
{
    char dir[] = "/tmp/test_loader.XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temp dir %s", dir);
    int rc = build_cache(dir);
    CHECK(rc == 0, "synthetic cache: %s", rc ? seg_errmsg() : "4 subjects");
    CacheReader *r = NULL;
    rc = cache_open(dir, &r);
    CHECK(rc == 0, "cache_open: %s", rc ? seg_errmsg() : "ok");
    if (!r) return t_report("test_loader");

    LoaderOptions o;
    loader_default_options(&o);
    o.batch_size = 4;
    o.hu_lo = -32768;
    o.hu_hi = 32767;
    Loader *l = NULL;
    rc = loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l);
    CHECK(rc == 0 && l, "loader_create (train)");
    if (!l) return t_report("test_loader");
    CHECK(loader_n_samples(l) == 17 && loader_n_batches(l) == 5, "17 train slices in 5 batches of <= 4");
    CHECK(loader_lr_partner(l, 0) == 1 && loader_lr_partner(l, 1) == 0 && loader_lr_partner(l, 2) == 2 &&
          loader_lr_partner(l, 3) == 4 && loader_lr_partner(l, 4) == 3, "left/right partners from the names");

    /* unshuffled: cache order, exact values and bits */
    LoaderBatch b;
    int pos = 0, vals_ok = 1, bits_ok = 1, pres_ok = 1, last_n = 0;
    CHECK(loader_start_epoch(l, 0) == 0, "start epoch 0");
    while ((rc = loader_next(l, &b)) == 1) {
        last_n = b.n;
        for (int i = 0; i < b.n; i++, pos++) {
            int si = pos < 10 ? 0 : 1, z = pos < 10 ? pos : pos - 10;
            const float *img = b.img + (size_t)i * S * S;
            for (int p = 0; p < S * S && vals_ok; p++) {
                float want = ((float)hu_of(si, z, p % S, p / S) + 32768.0f) * (2.0f / 65535.0f) - 1.0f;
                if (fabsf(img[p] - want) > 1e-6f) { vals_ok = 0; printf("  sample %d pixel %d: %g, want %g\n", pos, p, img[p], want); }
            }
            for (int c = 0; c < C; c++) {
                int want_present = 0;
                for (int p = 0; p < S * S; p++) want_present |= mask_of(c, z, p % S, p / S);
                if (present(b.presence + i, c) != want_present) pres_ok = 0;
                if (!want_present) continue;
                const uint8_t *pl = b.bits + ((size_t)i * C + c) * (S * S / 8);
                for (int p = 0; p < S * S; p++)
                    if (bit(pl, p) != mask_of(c, z, p % S, p / S)) { bits_ok = 0; break; }
            }
        }
    }
    CHECK(rc == 0 && pos == 17 && last_n == 1, "epoch ends after 17 samples (last batch of 1)");
    CHECK(vals_ok, "HU normalised: (clip(hu) - lo) * 2 / (hi - lo) - 1, cache order");
    CHECK(pres_ok && bits_ok, "presence bitmap and present planes bit-exact");
    CHECK(loader_next(l, &b) == 0, "further calls keep saying 'epoch done'");

    /* shuffled: permutations, seeded, independent of the thread count */
    loader_free(l);
    o.shuffle = 1;
    o.seed = 7;
    int ids[3][17], nid[3], nb;
    uint64_t h1[3], h3[3];
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0, "loader, shuffled, 1 thread");
    for (int e = 0; e < 3; e++) h1[e] = epoch_hash(l, e + 1, &nb, ids[e], &nid[e]);
    int perm_ok = 1;
    for (int e = 0; e < 3; e++) {
        int seen[2][10] = { { 0 } };
        for (int k = 0; k < nid[e]; k++) seen[ids[e][k] / 100][ids[e][k] % 100]++;
        for (int k = 0; k < 17; k++) perm_ok &= seen[k < 10 ? 0 : 1][k < 10 ? k : k - 10] == 1;
    }
    CHECK(perm_ok && nid[0] == 17, "every epoch visits each slice exactly once");
    CHECK(memcmp(ids[0], ids[1], sizeof ids[0]) && memcmp(ids[1], ids[2], sizeof ids[0]), "epochs differ in order");
    CHECK(epoch_hash(l, 2, &nb, NULL, NULL) == h1[1], "the same epoch again gives the same batches");
    /* abandon an epoch half way, then run another */
    loader_start_epoch(l, 1);
    loader_next(l, &b);
    CHECK(epoch_hash(l, 3, &nb, NULL, NULL) == h1[2], "abandoning an epoch leaves the next one intact");
    loader_free(l);
    o.threads = 3;
    o.prefetch = 4;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0, "loader, shuffled, 3 threads");
    for (int e = 0; e < 3; e++) h3[e] = epoch_hash(l, e + 1, &nb, NULL, NULL);
    CHECK(!memcmp(h1, h3, sizeof h1), "3 threads give the same batches as 1");
    /* the uniform shuffle as it was before balanced sampling and context existed */
    static const int ORDER1[17] = { 103, 104, 8, 0, 105, 100, 3, 102, 6, 5, 4, 9, 1, 101, 106, 7, 2 };
    CHECK(!memcmp(ids[0], ORDER1, sizeof ORDER1) && h1[0] == 0x4c63ebdbf4f23e59ull,
          "uniform mode unchanged: seed 7 epoch 1 in the recorded order, same bytes (hash %016llx)", (unsigned long long)h1[0]);
    loader_free(l);

    /* --limit-slices: evenly spaced, in cache order */
    o.shuffle = 0;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 5, &o, &l) == 0 && loader_n_samples(l) == 5, "5-slice subset");
    epoch_hash(l, 0, &nb, ids[0], &nid[0]);
    CHECK(nid[0] == 5 && ids[0][0] == 0 && ids[0][1] == 3 && ids[0][2] == 6 && ids[0][3] == 100 && ids[0][4] == 103,
          "subset a0 a3 a6 b0 b3: %d %d %d %d %d", ids[0][0], ids[0][1], ids[0][2], ids[0][3], ids[0][4]);
    loader_free(l);

    /* val split; a corrupt record is reported with subject and slice */
    CHECK(loader_create(r, CACHE_SPLIT_VAL, 0, &o, &l) == 0 && loader_n_samples(l) == 4, "val split: 4 slices");
    loader_free(l);
    CHECK(loader_create(r, CACHE_SPLIT_TEST, 0, &o, &l) == 0, "test split loader");
    loader_start_epoch(l, 0);
    while ((rc = loader_next(l, &b)) == 1) {}
    CHECK(rc == SEG_EFORMAT && strstr(seg_errmsg(), "d") && strstr(seg_errmsg(), "1"), "corrupt record -> SEG_EFORMAT: %s", seg_errmsg());
    loader_free(l);
    CHECK(loader_create(r, 42, 0, &o, &l) == 0 && loader_n_samples(l) == 0 && loader_n_batches(l) == 0, "a split with no subjects is empty");
    if (l) { loader_start_epoch(l, 0); CHECK(loader_next(l, &b) == 0, "and its epoch ends at once"); }
    loader_free(l);
    o.batch_size = 0;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == SEG_EARG, "batch size 0 refused");
    o.batch_size = 4;
    o.hu_hi = o.hu_lo;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == SEG_EARG, "empty HU window refused");

    /* augmentation */
    o.hu_lo = -32768;
    o.hu_hi = 32767;
    o.aug = 1;
    o.shuffle = 1;
    o.threads = 1;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0, "loader with augmentation");
    int flips[2] = { 0, 0 }, consistent = 1, sides_ok = 1, n_checked = 0;
    for (int e = 1; e <= 4; e++) {
        loader_start_epoch(l, e);
        while (loader_next(l, &b) == 1) {
            for (int i = 0; i < b.n; i++) {
                const float *img = b.img + (size_t)i * S * S;
                /* hu = 7x - 3y: the sign of the row's slope tells a left-right flip */
                double slope = 0;
                for (int x = 8; x < 24; x++) slope += img[16 * S + x + 1] - img[16 * S + x];
                int flipped = slope < 0;
                flips[flipped]++;
                /* kidney_right must stay on the low-column side, kidney_left on the high side,
                 * whatever the flip; liver (no partner) moves with the flip */
                double cx[C] = { 0 }, cn[C] = { 0 };
                for (int c = 0; c < C; c++) {
                    if (!present(b.presence + i, c)) continue;
                    const uint8_t *pl = b.bits + ((size_t)i * C + c) * (S * S / 8);
                    for (int p = 0; p < S * S; p++) if (bit(pl, p)) { cx[c] += p % S; cn[c]++; }
                }
                if (!cn[0] || !cn[1]) { sides_ok = 0; continue; }
                sides_ok &= cx[0] / cn[0] > S / 2.0 && cx[1] / cn[1] < S / 2.0;
                if (cn[2] > 0) { consistent &= (cx[2] / cn[2] < S / 2.0) == flipped; n_checked++; }
            }
        }
    }
    CHECK(flips[0] > 5 && flips[1] > 5, "both flip states occur (%d plain, %d flipped)", flips[0], flips[1]);
    CHECK(sides_ok, "kidney_left stays on the patient's left, kidney_right on the right (labels swap with the flip)");
    CHECK(consistent && n_checked > 10, "unpaired liver moves with the image (%d checks)", n_checked);
    uint64_t a1 = epoch_hash(l, 9, &nb, NULL, NULL);
    loader_free(l);
    o.threads = 3;
    o.prefetch = 5;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0, "augmenting loader, 3 threads");
    CHECK(epoch_hash(l, 9, &nb, NULL, NULL) == a1 && a1 != 0, "augmentation identical with 3 threads");
    loader_free(l);

    /* ---- balanced (foreground-first) sampling ---- */
    loader_default_options(&o);
    CHECK(o.balanced == 0 && fabsf(o.fg_fraction - 0.33f) < 1e-6f && o.context == 0, "defaults: uniform, fg_fraction 0.33, no context");
    CHECK(loader_fg_slots(4, 0.33f) == 1 && loader_fg_slots(8, 0.33f) == 3 && loader_fg_slots(2, 0.1f) == 1 &&
          loader_fg_slots(1, 0.33f) == 0 && loader_fg_slots(1, 0.5f) == 1 && loader_fg_slots(4, 0.5f) == 2 &&
          loader_fg_slots(4, 1.0f) == 4 && loader_fg_slots(4, 0.0f) == 0, "fg slots: round(n * f) half up, >= 1 from n = 2, <= n");
    o.batch_size = 4;
    o.hu_lo = -32768;
    o.hu_hi = 32767;
    o.shuffle = 1;
    o.seed = 11;
    o.balanced = 1;
    o.fg_fraction = 0.5f;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0, "balanced loader (fg_fraction 0.5)");
    CHECK(l && loader_n_fg_structures(l) == 4, "4 structures present in the train split (rib_left_1 never): %d",
          l ? loader_n_fg_structures(l) : -1);
    CHECK(l && loader_n_samples(l) == 17 && loader_n_batches(l) == 5, "same epoch length and batch count as uniform");
    int share_ok = 1, holds_ok = 1, uniform_ok = 1, drawn[C] = { 0 }, n_draws = 0, rib3_ok = 1, n_epoch = 0;
    for (int e = 0; e < 40 && l; e++) {
        loader_start_epoch(l, e);
        int n_in_epoch = 0;
        while (loader_next(l, &b) == 1) {
            const int k = loader_fg_slots(b.n, 0.5f);
            n_in_epoch += b.n;
            for (int i = 0; i < b.n; i++) {
                const int st = b.fg[i], id = id_of(b.img + (size_t)i * S * S), z = id % 100;
                if ((i < k) != (st >= 0)) share_ok = 0;
                if (st < 0) continue;
                if (st >= C) { holds_ok = 0; continue; }
                drawn[st]++;
                n_draws++;
                /* the drawn slice holds the structure: presence bit and its true plane */
                int any = 0;
                for (int p = 0; p < S * S; p++) any |= mask_of(st, z, p % S, p / S);
                const uint8_t *pl = b.bits + ((size_t)i * C + st) * (S * S / 8);
                int plane_ok = 1;
                for (int p = 0; p < S * S && plane_ok; p++) plane_ok = bit(pl, p) == mask_of(st, z, p % S, p / S);
                holds_ok &= any && present(b.presence + i, st) && plane_ok;
                if (st == 4) rib3_ok &= z == 3;
            }
        }
        n_epoch += n_in_epoch == 17;
    }
    /* batches of 4, 4, 4, 4, 1: 2 + 2 + 2 + 2 + 1 foreground-first slots per epoch */
    CHECK(share_ok && n_draws == 40 * 9 && n_epoch == 40, "the first round(n/2) slots of each batch are foreground-first (%d draws in 40 epochs)", n_draws);
    CHECK(holds_ok, "every foreground-first slice holds its structure (presence bit and mask)");
    CHECK(drawn[0] && drawn[1] && drawn[2] && drawn[4] && !drawn[3] && rib3_ok,
          "every present structure reached, the absent one never (draws %d %d %d %d %d; rib_right_1 only from slices 3)",
          drawn[0], drawn[1], drawn[2], drawn[3], drawn[4]);
    for (int c = 0; c < C; c++) if (c != 3) uniform_ok &= drawn[c] > n_draws / 4 / 2 && drawn[c] < n_draws / 4 * 2;
    CHECK(uniform_ok, "structures drawn about equally often (%d %d %d %d of %d)", drawn[0], drawn[1], drawn[2], drawn[4], n_draws);
    uint64_t bal1 = l ? epoch_hash(l, 5, &nb, NULL, NULL) : 0;
    CHECK(l && epoch_hash(l, 5, &nb, NULL, NULL) == bal1 && epoch_hash(l, 6, &nb, NULL, NULL) != bal1, "balanced epochs: rerun identical, epochs differ");
    loader_free(l);
    o.threads = 3;
    o.prefetch = 5;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0 && epoch_hash(l, 5, &nb, NULL, NULL) == bal1, "balanced: 3 threads give the same batches as 1");
    loader_free(l);
    /* balanced with fg_fraction 0 is uniform sampling, bit for bit */
    o.fg_fraction = 0;
    o.threads = 1;
    o.prefetch = 3;
    o.seed = 7;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0 && epoch_hash(l, 1, &nb, ids[0], &nid[0]) == h1[0],
          "balanced with fg_fraction 0 = the uniform shuffle");
    loader_free(l);
    /* augmentation + balanced: deterministic over threads; drawn structures follow the flip */
    o.fg_fraction = 0.33f;
    o.aug = 1;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0, "balanced, augmented loader");
    int aug_holds = 1, rib[2] = { 0, 0 };
    for (int e = 0; e < 30 && l; e++) {
        loader_start_epoch(l, e);
        while (loader_next(l, &b) == 1)
            for (int i = 0; i < b.n; i++) {
                if (b.fg[i] < 0) continue;
                aug_holds &= present(b.presence + i, b.fg[i]);
                if (b.fg[i] >= 3) rib[b.fg[i] - 3]++;   /* rib_right_1 draws, reported as rib_left_1 when flipped */
            }
    }
    CHECK(aug_holds && rib[0] > 0 && rib[1] > 0, "augmented: the reported structure (after a flip's left/right swap) is present "
          "(rib_right_1 drawn %d times plain, %d flipped into rib_left_1)", rib[1], rib[0]);
    uint64_t bal_aug = l ? epoch_hash(l, 3, &nb, NULL, NULL) : 0;
    loader_free(l);
    o.threads = 2;
    o.prefetch = 4;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0 && epoch_hash(l, 3, &nb, NULL, NULL) == bal_aug && bal_aug,
          "balanced + augmented: 2 threads give the same batches as 1");
    loader_free(l);
    o.fg_fraction = 1.5f;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == SEG_EARG, "fg_fraction 1.5 refused");
    /* a split without any structure: balanced falls back to uniform */
    loader_default_options(&o);
    o.balanced = 1;
    CHECK(loader_create(r, 42, 0, &o, &l) == 0 && loader_n_fg_structures(l) == 0, "balanced over an empty split: no structures");
    loader_free(l);

    /* ---- 2.5D context ---- */
    loader_default_options(&o);
    o.batch_size = 4;
    o.hu_lo = -32768;
    o.hu_hi = 32767;
    for (int K = 1; K <= 2; K++) {
        o.context = K;
        g_ch = 2 * K + 1;
        CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0, "context %d loader", K);
        if (!l) continue;
        int ctx_ok = 1, tgt_ok = 1;
        pos = 0;
        loader_start_epoch(l, 0);
        while (loader_next(l, &b) == 1)
            for (int i = 0; i < b.n; i++, pos++) {
                const int si = pos < 10 ? 0 : 1, z = pos < 10 ? pos : pos - 10, nz = SUBJ[si].n;
                for (int ch = 0; ch < g_ch; ch++) {
                    int zc = z - K + ch;
                    zc = zc < 0 ? 0 : zc >= nz ? nz - 1 : zc;
                    const float *img = b.img + ((size_t)i * g_ch + ch) * S * S;
                    for (int p = 0; p < S * S && ctx_ok; p++) {
                        float want = ((float)hu_of(si, zc, p % S, p / S) + 32768.0f) * (2.0f / 65535.0f) - 1.0f;
                        if (img[p] != want) { ctx_ok = 0; printf("  sample %d channel %d pixel %d: %g, want %g (slice %d)\n", pos, ch, p, img[p], want, zc); }
                    }
                }
                for (int c = 0; c < C; c++) {
                    int want_present = 0;
                    for (int p = 0; p < S * S; p++) want_present |= mask_of(c, z, p % S, p / S);
                    if (present(b.presence + i, c) != want_present) tgt_ok = 0;
                    const uint8_t *pl = b.bits + ((size_t)i * C + c) * (S * S / 8);
                    for (int p = 0; p < S * S && want_present; p++) tgt_ok &= bit(pl, p) == mask_of(c, z, p % S, p / S);
                }
            }
        CHECK(ctx_ok && pos == 17, "context %d: channel k is slice z-%d+k of the same subject, clamped at its ends, normalised exactly", K, K);
        CHECK(tgt_ok, "context %d: targets are the centre slice's", K);
        loader_free(l);
    }
    /* the subset keeps its neighbours: a3 sees a2 and a4 though they are not sampled */
    o.context = 1;
    g_ch = 3;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 5, &o, &l) == 0, "context 1 on the 5-slice subset");
    if (l) {
        loader_start_epoch(l, 0);
        loader_next(l, &b);
        CHECK(id_of(b.img + (size_t)1 * 3 * S * S) == 2 && id_of(b.img + (size_t)4 * S * S) == 3 &&
              id_of(b.img + (size_t)5 * S * S) == 4, "subset sample a3: channels a2 a3 a4");
        loader_free(l);
    }
    /* augmented: the centre channel is what the context-0 loader gives; neighbours are warped
     * the same way (slices differ only at pixel (0, 0), so only its footprint may differ) */
    o.aug = 1;
    o.shuffle = 1;
    o.seed = 5;
    o.context = 0;
    Loader *l0 = NULL;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l0) == 0, "augmented loader, no context");
    o.context = 1;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0, "augmented loader, context 1");
    int centre_same = 1, tgt_same = 1, max_diff_px = 0, n_cmp = 0;
    if (l && l0) {
        LoaderBatch b0;
        for (int e = 1; e <= 3; e++) {
            loader_start_epoch(l, e);
            loader_start_epoch(l0, e);
            while (loader_next(l, &b) == 1 && loader_next(l0, &b0) == 1) {
                centre_same &= b.n == b0.n;
                for (int i = 0; i < b.n && i < b0.n; i++, n_cmp++) {
                    const float *c3 = b.img + (size_t)i * 3 * S * S;
                    centre_same &= !memcmp(c3 + S * S, b0.img + (size_t)i * S * S, sizeof(float) * S * S);
                    tgt_same &= b.presence[i] == b0.presence[i];   /* C = 5: one presence byte */
                    for (int c = 0; c < C; c++)   /* planes of absent channels hold stale bytes */
                        if (present(b.presence + i, c))
                            tgt_same &= !memcmp(b.bits + ((size_t)i * C + c) * (S * S / 8), b0.bits + ((size_t)i * C + c) * (S * S / 8), S * S / 8);
                    for (int ch = 0; ch < 3; ch += 2) {
                        int d = 0;
                        for (int p = 0; p < S * S; p++) d += c3[(size_t)ch * S * S + p] != c3[S * S + p];
                        max_diff_px = d > max_diff_px ? d : max_diff_px;
                    }
                }
            }
        }
    }
    CHECK(centre_same && tgt_same && n_cmp == 51, "augmented context: centre channel and targets bit-identical to context 0 (%d samples)", n_cmp);
    CHECK(max_diff_px <= 4, "augmented context: neighbours under the same flips/rotation/intensity (at most %d pixels differ)", max_diff_px);
    uint64_t ctx1 = l ? epoch_hash(l, 2, &nb, NULL, NULL) : 0;
    loader_free(l);
    loader_free(l0);
    o.threads = 3;
    o.prefetch = 4;
    o.balanced = 1;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0, "augmented, balanced, context 1, 3 threads");
    uint64_t ctx3 = l ? epoch_hash(l, 2, &nb, NULL, NULL) : 0;
    loader_free(l);
    o.threads = 1;
    o.prefetch = 3;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == 0 && epoch_hash(l, 2, &nb, NULL, NULL) == ctx3 && ctx3 && ctx3 != ctx1,
          "augmented, balanced, context 1: 1 thread = 3 threads");
    loader_free(l);
    o.context = -1;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == SEG_EARG, "context -1 refused");
    o.context = LOADER_MAX_CONTEXT + 1;
    CHECK(loader_create(r, CACHE_SPLIT_TRAIN, 0, &o, &l) == SEG_EARG, "context %d refused", LOADER_MAX_CONTEXT + 1);
    g_ch = 1;

    cache_close(r);
    char p[256];
    snprintf(p, sizeof p, "%s/data.mdb", dir); unlink(p);
    snprintf(p, sizeof p, "%s/lock.mdb", dir); unlink(p);
    snprintf(p, sizeof p, "%s/label_map.json", dir); unlink(p);
    rmdir(dir);
    return t_report("test_loader");
}
