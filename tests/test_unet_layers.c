/* tests/test_unet_layers.c : the layer table (common/unet_layers.h) against hand-computed
 * values and against the model built from it: the default network's layer and tensor
 * counts, PyTorch names in state_dict order, contiguous offsets, the FLOP count, the graph
 * indices, what a different input channel count changes, and the refusals. */
#include <stdio.h>
#include <string.h>
#include "err.h"
#include "testutil.h"
#include "unet.h"
#include "unet_layers.h"

static UnetLayers t, t3;    /* large: static */

int main(void)
{
    UnetConfig cfg;
    unet_default_config(&cfg, 117);
    int rc = unet_layers_build(&cfg, &t);
    CHECK(rc == SEG_OK, "build the default network: %s", rc ? seg_errmsg() : "ok");
    /* 4 levels: 4x(2 conv + pool) + 4x(up + cat + 2 conv) + 2 bottleneck convs + head */
    CHECK(t.n == 4 * 3 + 4 * 4 + 2 + 1, "%d layers (31)", t.n);
    CHECK(t.n_tensors == 6 * 18 + 2 * 4 + 2, "%d state-dict tensors (118)", t.n_tensors);
    CHECK(!strcmp(t.tensor[0].name, "downs.0.net.0.weight") && !strcmp(t.tensor[5].name, "downs.0.net.1.num_batches_tracked"),
          "first names: %s, %s", t.tensor[0].name, t.tensor[5].name);
    CHECK(!strcmp(t.tensor[48].name, "ups.0.weight") && !strcmp(t.tensor[50].name, "ups.1.net.0.weight"),
          "ups after downs: %s, %s", t.tensor[48].name, t.tensor[50].name);
    CHECK(!strcmp(t.tensor[t.n_tensors - 3].name, "bottleneck.net.4.num_batches_tracked") &&
          !strcmp(t.tensor[t.n_tensors - 1].name, "head.bias"), "bottleneck then head last: %s, %s",
          t.tensor[t.n_tensors - 3].name, t.tensor[t.n_tensors - 1].name);
    size_t np = 0, nb = 0;
    int contiguous = 1, owned = 0;
    for (int i = 0; i < t.n_tensors; i++) {
        const UnetLayerTensor *e = &t.tensor[i];
        size_t *n = e->trainable ? &np : &nb;
        if (e->off != *n) contiguous = 0;
        *n += e->count;
    }
    for (int i = 0; i < t.n; i++) owned += t.layer[i].nt;
    CHECK(contiguous && np == t.n_params && nb == t.n_bufs, "offsets contiguous in state-dict order (%zu params, %zu buffers)",
          t.n_params, t.n_bufs);
    CHECK(owned == t.n_tensors, "every tensor belongs to one layer (%d)", owned);
    /* 1 -> 32,64,128,256 -> 117: parameter count of tools/unet_ref.py's model */
    CHECK(t.n_params == 7766293, "%zu parameters (7766293, as PyTorch counts them)", t.n_params);
    const UnetLayer *e0 = &t.layer[t.enc[0][0]], *b1 = &t.layer[t.bott[1]], *u3 = &t.layer[t.up[3]],
                    *d0 = &t.layer[t.dec[0][0]], *h = &t.layer[t.head];
    CHECK(e0->kind == UNET_CONV3 && e0->cin == 1 && e0->cout == 32 && e0->first && e0->level == 0,
          "enc[0][0]: conv %d -> %d at level 0, reads the input", e0->cin, e0->cout);
    CHECK(b1->cin == 512 && b1->cout == 512 && b1->level == 4, "bottleneck: %d -> %d at level %d", b1->cin, b1->cout, b1->level);
    CHECK(u3->kind == UNET_UP && u3->cin == 512 && u3->cout == 256 && u3->level == 3, "up[3]: convT %d -> %d into level 3",
          u3->cin, u3->cout);
    CHECK(d0->cin == 64 && t.layer[t.cat[0]].cout == 64, "dec[0][0] reads the 64-channel concat");
    CHECK(h->kind == UNET_HEAD && h->cin == 32 && h->cout == 117, "head: conv1x1 32 -> 117");
    CHECK(!strcmp(t.tensor[h->t0].name, "head.weight") && t.tensor[h->t0].shape[0] == 117 && t.tensor[h->t0].shape[1] == 32,
          "the head's tensors: %s (117, 32, 1, 1)", t.tensor[h->t0].name);
    /* FLOPs by hand for 256x256: convs 2*9*Ci*Co*px, convT 2*4*Ci*Co*(px/4), head 2*F*C*px */
    double ref = 0;
    const int f[5] = { 32, 64, 128, 256, 512 };
    for (int l = 0; l < 4; l++) {
        const double px = (double)(256 >> l) * (256 >> l);
        ref += 2.0 * 9 * px * ((l ? f[l - 1] : 1) * f[l] + f[l] * f[l]);        /* encoder */
        ref += 2.0 * 9 * px * (2 * f[l] * f[l] + f[l] * f[l]);                  /* decoder */
        ref += 2.0 * 4 * (px / 4) * (l == 3 ? 512 : f[l + 1]) * f[l];           /* convT */
    }
    ref += 2.0 * 9 * (16.0 * 16) * (256.0 * 512 + 512.0 * 512) + 2.0 * 32 * 117 * 256 * 256;
    CHECK(unet_layers_total_flops(&t, 256, 256) == ref, "FLOPs per 256x256 sample %.6g (by hand %.6g)",
          unet_layers_total_flops(&t, 256, 256), ref);
    Unet *m = NULL;
    rc = unet_create(&cfg, 1, 64, 64, 1, &m);
    CHECK(rc == SEG_OK, "unet_create: %s", rc ? seg_errmsg() : "ok");
    if (m) {
        int same = unet_n_tensors(m) == t.n_tensors && unet_n_params(m) == t.n_params;
        for (int i = 0; same && i < t.n_tensors; i++) {
            const UnetTensor *u = unet_tensor(m, i);
            same = !strcmp(u->name, t.tensor[i].name) && u->count == t.tensor[i].count &&
                   u->offset == (t.tensor[i].trainable ? t.tensor[i].off : 0);
        }
        CHECK(same, "the model's state dict is the table's (names, sizes, offsets)");
        CHECK(unet_flops_per_sample(m) == unet_layers_total_flops(&t, 64, 64), "unet_flops_per_sample is the table's sum");
        unet_free(m);
    }
    /* three input channels: only the first conv's weight changes */
    UnetConfig c3 = cfg;
    c3.in_ch = 3;
    rc = unet_layers_build(&c3, &t3);
    CHECK(rc == SEG_OK && t3.n_params == t.n_params + 2 * 32 * 9 && t3.tensor[0].shape[1] == 3 && t3.n == t.n,
          "in_ch 3: %zu parameters (+576), first weight (32, %lld, 3, 3)", t3.n_params, (long long)t3.tensor[0].shape[1]);
    UnetConfig bad = cfg;
    bad.n_levels = UNET_MAX_LEVELS + 1;
    CHECK(unet_layers_build(&bad, &t3) == SEG_EARG, "n_levels %d refused: %s", bad.n_levels, seg_errmsg());
    bad = cfg;
    bad.features[2] = 0;
    CHECK(unet_layers_build(&bad, &t3) == SEG_EARG, "features[2] = 0 refused: %s", seg_errmsg());
    UnetConfig deep;
    memset(&deep, 0, sizeof deep);
    deep.in_ch = 64;
    deep.n_classes = 4096;
    deep.n_levels = UNET_MAX_LEVELS;
    for (int i = 0; i < UNET_MAX_LEVELS; i++) deep.features[i] = 8 << i;
    rc = unet_layers_build(&deep, &t3);
    CHECK(rc == SEG_OK && t3.n == UNET_LAYERS_MAX && t3.n_tensors == UNET_TENSORS_MAX,
          "the deepest network fills the table exactly (%d layers, %d tensors)", t3.n, t3.n_tensors);
    CHECK(!strcmp(unet_layers_kind_name(UNET_UP), "convT2x2") && !strcmp(unet_layers_kind_name(99), "?"), "kind names");
    return t_report("test_unet_layers");
}
