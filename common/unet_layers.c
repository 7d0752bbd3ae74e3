/* common/unet_layers.c : the layer table (unet_layers.h). The one place that spells out the
 * network; its order is PyTorch's state_dict order (tools/unet_ref.py registers downs, ups,
 * bottleneck, head), so parameter offsets and checkpoint names follow from appending. */
#include <stdio.h>
#include <string.h>
#include "err.h"
#include "unet_layers.h"

typedef struct Builder {
    UnetLayers *t;
    int         err;                 /* a name did not fit (cannot happen for valid configs) */
} Builder;

static UnetLayer *add_layer(Builder *b, int kind, int cin, int cout, int level)
{
    UnetLayer *l = &b->t->layer[b->t->n++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->cin = cin;
    l->cout = cout;
    l->level = level;
    l->t0 = b->t->n_tensors;
    return l;
}

/* Append a tensor to l; returns its offset in its block. */
static size_t add_tensor(Builder *b, UnetLayer *l, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                         int64_t d3, int trainable)
{
    UnetLayers *t = b->t;
    UnetLayerTensor *e = &t->tensor[t->n_tensors++];
    const int64_t d[4] = { d0, d1, d2, d3 };
    memset(e, 0, sizeof *e);
    if ((size_t)snprintf(e->name, sizeof e->name, "%s", name) >= sizeof e->name) b->err = 1;
    e->ndim = ndim;
    e->count = 1;
    for (int k = 0; k < ndim; k++) { e->shape[k] = d[k]; e->count *= (size_t)d[k]; }
    e->trainable = trainable;
    size_t *n = trainable ? &t->n_params : &t->n_bufs;
    e->off = *n;
    *n += e->count;
    l->nt++;
    return e->off;
}

/* conv3x3 (no bias) + BatchNorm2d: PyTorch's nn.Sequential indices i_conv and i_conv + 1 */
static int conv3(Builder *b, const char *pre, int i_conv, int cin, int cout, int level)
{
    char nm[UNET_NAME_MAX + 16];
    UnetLayer *l = add_layer(b, UNET_CONV3, cin, cout, level);
    const int i_bn = i_conv + 1;
    snprintf(nm, sizeof nm, "%s.net.%d.weight", pre, i_conv); l->w = add_tensor(b, l, nm, 4, cout, cin, 3, 3, 1);
    snprintf(nm, sizeof nm, "%s.net.%d.weight", pre, i_bn); l->b = add_tensor(b, l, nm, 1, cout, 0, 0, 0, 1);
    snprintf(nm, sizeof nm, "%s.net.%d.bias", pre, i_bn); l->beta = add_tensor(b, l, nm, 1, cout, 0, 0, 0, 1);
    snprintf(nm, sizeof nm, "%s.net.%d.running_mean", pre, i_bn); l->rm = add_tensor(b, l, nm, 1, cout, 0, 0, 0, 0);
    snprintf(nm, sizeof nm, "%s.net.%d.running_var", pre, i_bn); l->rv = add_tensor(b, l, nm, 1, cout, 0, 0, 0, 0);
    snprintf(nm, sizeof nm, "%s.net.%d.num_batches_tracked", pre, i_bn);
    l->nbt = add_tensor(b, l, nm, 0, 0, 0, 0, 0, 0);
    return b->t->n - 1;
}

/* DoubleConv: (conv3x3 -> BN -> ReLU) x 2 at Sequential indices 0/1 and 3/4 */
static void double_conv(Builder *b, int *ids, const char *pre, int cin, int cout, int level)
{
    ids[0] = conv3(b, pre, 0, cin, cout, level);
    ids[1] = conv3(b, pre, 3, cout, cout, level);
}

int unet_layers_build(const UnetConfig *cfg, UnetLayers *out)
{
    const int L = cfg->n_levels, *f = cfg->features, C = cfg->n_classes;
    if (L < 1 || L > UNET_MAX_LEVELS || cfg->in_ch < 1 || C < 1)
        return seg_err(SEG_EARG, "unet_layers_build: n_levels %d, in_ch %d, n_classes %d", L, cfg->in_ch, C);
    for (int i = 0; i < L; i++)
        if (f[i] < 1) return seg_err(SEG_EARG, "unet_layers_build: features[%d] = %d", i, f[i]);
    memset(out, 0, sizeof *out);
    out->cfg = *cfg;
    Builder b = { out, 0 };
    char pre[32];
    for (int l = 0; l < L; l++) {                                 /* downs.l, then the pool below it */
        snprintf(pre, sizeof pre, "downs.%d", l);
        double_conv(&b, out->enc[l], pre, l == 0 ? cfg->in_ch : f[l - 1], f[l], l);
        add_layer(&b, UNET_POOL, f[l], f[l], l);
        out->pool[l] = out->n - 1;
    }
    out->layer[out->enc[0][0]].first = 1;
    for (int j = 0; j < L; j++) {                                 /* ups.2j (convT), ups.2j+1 (DoubleConv) */
        const int l = L - 1 - j, cin = j == 0 ? 2 * f[L - 1] : f[l + 1];
        char nm[UNET_NAME_MAX];
        UnetLayer *u = add_layer(&b, UNET_UP, cin, f[l], l);
        snprintf(nm, sizeof nm, "ups.%d.weight", 2 * j); u->w = add_tensor(&b, u, nm, 4, cin, f[l], 2, 2, 1);
        snprintf(nm, sizeof nm, "ups.%d.bias", 2 * j); u->b = add_tensor(&b, u, nm, 1, f[l], 0, 0, 0, 1);
        out->up[l] = out->n - 1;
        add_layer(&b, UNET_CAT, f[l], 2 * f[l], l);
        out->cat[l] = out->n - 1;
        snprintf(pre, sizeof pre, "ups.%d", 2 * j + 1);
        double_conv(&b, out->dec[l], pre, 2 * f[l], f[l], l);
    }
    double_conv(&b, out->bott, "bottleneck", f[L - 1], 2 * f[L - 1], L);
    UnetLayer *h = add_layer(&b, UNET_HEAD, f[0], C, 0);
    h->w = add_tensor(&b, h, "head.weight", 4, C, f[0], 1, 1, 1);
    h->b = add_tensor(&b, h, "head.bias", 1, C, 0, 0, 0, 1);
    out->head = out->n - 1;
    if (b.err) return seg_err(SEG_EARG, "unet_layers_build: a state-dict name is longer than %d", UNET_NAME_MAX - 1);
    return SEG_OK;
}

double unet_layers_flops(const UnetLayer *l, int H, int W)
{
    const double px = (double)(H >> l->level) * (double)(W >> l->level);
    switch (l->kind) {
    case UNET_CONV3: return 2.0 * px * l->cout * l->cin * 9.0;
    case UNET_UP:    return 2.0 * (px / 4.0) * l->cin * l->cout * 4.0;   /* from the level below */
    case UNET_HEAD:  return 2.0 * px * l->cin * l->cout;
    default:         return 0.0;
    }
}

double unet_layers_total_flops(const UnetLayers *t, int H, int W)
{
    double fl = 0;
    for (int i = 0; i < t->n; i++) fl += unet_layers_flops(&t->layer[i], H, W);
    return fl;
}

const char *unet_layers_kind_name(int kind)
{
    static const char *const names[] = { "conv3x3+bn+relu", "maxpool2x2", "convT2x2", "concat", "conv1x1" };
    return kind >= 0 && kind < (int)(sizeof names / sizeof names[0]) ? names[kind] : "?";
}
