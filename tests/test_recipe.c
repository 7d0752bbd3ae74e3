/* tests/test_recipe.c : segtrain's start-up statistics and schedule. prior_foreground's
 * fractions against the masks the synthetic cache was written with (every slice, an evenly
 * spaced subset, an empty split); prior_init_head_bias sets log(p/(1-p)) with the clamps and
 * an untrained network then predicts each structure's prior where its head input is zero;
 * sched_lr's four schedules and the warmup at known steps; the history's per-structure
 * validation Dice and quartiles survive the JSON round trip that resume relies on. */
#include "history.h"
#include "prior.h"
#include "schedule.h"
#include "testsynth.h"
#include "testutil.h"
#include "unet.h"
#include <math.h>
#include <unistd.h>

/* Expected foreground fraction of channel c over the train subjects (a, b), counting only
 * the slices whose index in the split is in take[] (NULL: all). */
static double expected_frac(int c, const int *take, int n_take)
{
    long set = 0, slices = 0;
    for (int k = 0, pos = 0; k < 2; k++)
        for (int z = 0; z < SUBJ[k].n; z++, pos++) {
            int use = !take;
            for (int j = 0; take && j < n_take; j++) use |= take[j] == pos;
            if (!use) continue;
            slices++;
            for (int p = 0; p < S * S; p++) set += mask_of(c, z, p % S, p / S);
        }
    return (double)set / ((double)slices * S * S);
}

static void test_prior(const char *dir)
{
    CacheReader *r = NULL;
    int rc = cache_open(dir, &r);
    CHECK(rc == SEG_OK, "cache_open: %s", rc ? seg_errmsg() : "ok");
    if (rc) return;
    double f[C];
    int64_t used = -1;
    rc = prior_foreground(r, CACHE_SPLIT_TRAIN, 0, f, &used);
    CHECK(rc == SEG_OK && used == 17, "prior over every train slice: rc %d, %lld slices counted (17)", rc, (long long)used);
    double worst = 0;
    for (int c = 0; c < C; c++) worst = fmax(worst, fabs(f[c] - expected_frac(c, NULL, 0)));
    CHECK(worst < 1e-12, "fractions equal the written masks (worst error %.3g; liver %.5f)", worst, f[2]);
    CHECK(f[3] == 0 && f[4] > 0, "an absent structure counts 0, one in a single slice counts (%.5f)", f[4]);
    /* 4 of 17: positions j*17/4 = 0, 4, 8, 12 */
    const int take[4] = { 0, 4, 8, 12 };
    rc = prior_foreground(r, CACHE_SPLIT_TRAIN, 4, f, &used);
    worst = 0;
    for (int c = 0; c < C; c++) worst = fmax(worst, fabs(f[c] - expected_frac(c, take, 4)));
    CHECK(rc == SEG_OK && used == 4 && worst < 1e-12, "max_slices 4: evenly spaced slices 0,4,8,12 (used %lld, error %.3g)",
          (long long)used, worst);
    /* slice 1 of the test subject has a bad checksum: named in the error */
    rc = prior_foreground(r, CACHE_SPLIT_TEST, 0, f, &used);
    CHECK(rc == SEG_EFORMAT && strstr(seg_errmsg(), "subject d slice 1"), "a corrupt record in the split is an error naming it: %s", rc < 0 ? seg_errmsg() : "none");
    cache_close(r);
}

static void test_head_bias(void)
{
    UnetConfig cfg;
    unet_default_config(&cfg, 3);
    cfg.n_levels = 2;
    cfg.features[0] = 4;
    cfg.features[1] = 8;
    Unet *m = NULL;
    int rc = unet_create(&cfg, 1, 16, 16, 1, &m);
    CHECK(rc == SEG_OK, "unet_create: %s", rc ? seg_errmsg() : "ok");
    if (rc) return;
    unet_init(m, 3);
    const double frac[3] = { 0.02, 0.0, 0.9 };
    rc = prior_init_head_bias(m, frac, 3);
    const UnetTensor *hb = NULL, *hw = NULL;
    for (int i = 0; i < unet_n_tensors(m); i++) {
        if (!strcmp(unet_tensor(m, i)->name, "head.bias")) hb = unet_tensor(m, i);
        if (!strcmp(unet_tensor(m, i)->name, "head.weight")) hw = unet_tensor(m, i);
    }
    CHECK(rc == SEG_OK && hb && hw, "prior_init_head_bias: %s", rc ? seg_errmsg() : "ok");
    if (!hb || !hw) { unet_free(m); return; }
    CHECK(fabs(hb->data[0] - log(0.02 / 0.98)) < 1e-6, "bias = log(p/(1-p)) (%.5f)", hb->data[0]);
    CHECK(fabs(hb->data[1] - log(PRIOR_MIN / (1 - PRIOR_MIN))) < 1e-4, "p = 0 clamps to PRIOR_MIN (%.3f)", hb->data[1]);
    CHECK(fabs(hb->data[2]) < 1e-6, "p above PRIOR_MAX clamps to 0.5 (bias %.3g)", hb->data[2]);
    /* with the head's weights zeroed the logits are the bias: sigmoid = the prior */
    memset(hw->data, 0, sizeof(float) * hw->count);
    float x[16 * 16];
    for (int i = 0; i < 16 * 16; i++) x[i] = sinf((float)i);
    rc = unet_forward(m, x, 1, 0);
    const float *lg = rc == SEG_OK ? unet_logits(m) : NULL;
    CHECK(lg && fabs(1 / (1 + exp(-lg[0])) - 0.02) < 1e-6 && fabs(1 / (1 + exp(-lg[2 * 256 + 77])) - 0.5) < 1e-6,
          "untrained network predicts the prior (%.5f, %.5f)", lg ? 1 / (1 + exp(-lg[0])) : -1.0,
          lg ? 1 / (1 + exp(-lg[2 * 256 + 77])) : -1.0);
    rc = prior_init_head_bias(m, frac, 2);
    CHECK(rc == SEG_EARG, "a prior of the wrong length is refused: %s", rc ? seg_errmsg() : "accepted");
    unet_free(m);
}

static void test_schedule(void)
{
    const char *names[] = { "none", "poly", "cosine", "plateau" };
    int ok = 1;
    for (int k = 0; k < 4; k++) ok &= sched_parse(names[k]) == k && !strcmp(sched_name(k), names[k]);
    CHECK(ok && sched_parse("linear") == -1 && sched_parse("") == -1, "sched_parse / sched_name round trip, junk refused");
    const double lr = 3e-3;
    CHECK(sched_lr(SCHED_NONE, lr, 57, 100, 0) == lr && sched_lr(SCHED_PLATEAU, lr, 99, 100, 0) == lr, "none and plateau: constant");
    CHECK(sched_lr(SCHED_POLY, lr, 0, 100, 0) == lr, "poly: step 0 at the peak");
    CHECK(fabs(sched_lr(SCHED_POLY, lr, 50, 100, 0) - lr * pow(0.5, SCHED_POLY_POWER)) < 1e-15, "poly: half way = lr 0.5^0.9 (%.6g)",
          sched_lr(SCHED_POLY, lr, 50, 100, 0));
    CHECK(sched_lr(SCHED_POLY, lr, 99, 100, 0) < lr * 0.02 && sched_lr(SCHED_POLY, lr, 99, 100, 0) > 0, "poly: last step small, positive (%.3g)",
          sched_lr(SCHED_POLY, lr, 99, 100, 0));
    CHECK(fabs(sched_lr(SCHED_COSINE, lr, 50, 100, 0) - lr / 2) < 1e-15, "cosine: half way = lr/2");
    CHECK(sched_lr(SCHED_POLY, lr, 150, 100, 0) == sched_lr(SCHED_POLY, lr, 99, 100, 0), "steps past T keep the last rate");
    CHECK(fabs(sched_lr(SCHED_NONE, lr, 0, 100, 10) - lr / 10) < 1e-15 && fabs(sched_lr(SCHED_NONE, lr, 4, 100, 10) - lr / 2) < 1e-15 &&
          sched_lr(SCHED_NONE, lr, 10, 100, 10) == lr, "warmup 10: (t+1)/10 of the rate, full from step 10");
    CHECK(fabs(sched_lr(SCHED_POLY, lr, 4, 100, 10) - lr / 2 * pow(0.96, SCHED_POLY_POWER)) < 1e-15, "warmup multiplies the decay");
}

static void test_history(void)
{
    History h, g;
    history_init(&h);
    history_init(&g);
    const char *const names[4] = { "liver", "spleen", "aorta", "rib_left_1" };
    int rc = history_set_structures(&h, names, 4);
    snprintf(h.monitor, sizeof h.monitor, "val_dice");
    snprintf(h.loss, sizeof h.loss, "bce+dice");
    const float d1[4] = { 0.5f, 0.25f, 0.75f, NAN }, d2[4] = { 0.9f, 0.1f, 0.3f, 0.6f };
    HistoryEpoch e = { .epoch = 1, .train_loss = 1.5, .val_loss = 1.2, .val_dice = 0.5, .val_structures = 3, .lr = 3e-3,
                       .seconds = 2, .slices_per_s = 100, .val_dice_c = d1 };
    rc = rc ? rc : history_add(&h, &e);
    e.epoch = 2; e.val_dice_c = NULL; e.val_dice = NAN;
    rc = rc ? rc : history_add(&h, &e);
    e.epoch = 3; e.val_dice_c = d2; e.val_dice = 0.475;
    rc = rc ? rc : history_add(&h, &e);
    CHECK(rc == SEG_OK, "history with per-structure Dice: %s", rc ? seg_errmsg() : "ok");
    rc = history_set_structures(&h, names, 2);
    CHECK(rc == SEG_EARG, "structures cannot be renamed once epochs are recorded");
    double q1, med, q3;
    int n = history_dice_quartiles(&h, 0, &q1, &med, &q3);
    CHECK(n == 3 && fabs(med - 0.5) < 1e-6 && q1 <= med && med <= q3 && q1 >= 0.25 && q3 <= 0.75,
          "quartiles of (0.25, 0.5, 0.75; NaN left out): %d values, %.3f %.3f %.3f", n, q1, med, q3);
    n = history_dice_quartiles(&h, 1, &q1, &med, &q3);
    CHECK(n == 0 && isnan(med), "an epoch without validation has no quartiles");
    char *js = history_to_json(&h);
    CHECK(js && strstr(js, "\"val_dice_per_structure\"") && strstr(js, "\"structures\""), "JSON has the structures and per-structure Dice");
    rc = js ? history_from_json(js, strlen(js), "test", &g) : SEG_ENOMEM;
    CHECK(rc == SEG_OK && g.n == 3 && g.n_ch == 4 && !strcmp(g.ch_names[2], "aorta") && !strcmp(g.loss, "bce+dice"),
          "JSON round trip: %d epochs, %d structures (%s)", g.n, g.n_ch, rc ? seg_errmsg() : "ok");
    const float *a = rc == SEG_OK ? history_structure_dice(&g, 0) : NULL, *b = rc == SEG_OK ? history_structure_dice(&g, 2) : NULL;
    CHECK(a && b && a[0] == 0.5f && isnan(a[3]) && b[3] == 0.6f && isnan(history_structure_dice(&g, 1)[0]),
          "per-structure values survive (absent stays absent, unvalidated epoch empty)");
    free(js);
    history_free(&h);
    history_free(&g);
}

int main(void)
{
    char dir[] = "/tmp/segkit_recipe_XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    char cdir[64];
    snprintf(cdir, sizeof cdir, "%s/cache", dir);
    int rc = build_cache(cdir);
    CHECK(rc == SEG_OK, "synthetic cache: %s", rc ? seg_errmsg() : "ok");
    if (rc == SEG_OK) test_prior(cdir);
    test_head_bias();
    test_schedule();
    test_history();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return t_report("test_recipe");
}
