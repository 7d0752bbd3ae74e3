/* train/history.c : per-epoch history, its JSON and its PNG. */
#include "history.h"
#include "err.h"
#include "fsutil.h"
#include "plot.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void history_init(History *h)
{
    memset(h, 0, sizeof *h);
    strcpy(h->monitor, "val_dice");
}

void history_free(History *h)
{
    if (!h) return;
    free(h->e);
    history_init(h);
}

int history_add(History *h, const HistoryEpoch *e)
{
    if (h->n && e->epoch <= h->e[h->n - 1].epoch)
        return seg_err(SEG_EARG, "history: epoch %d after epoch %d", e->epoch, h->e[h->n - 1].epoch);
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 32;
        HistoryEpoch *t = realloc(h->e, sizeof *t * (size_t)cap);
        if (!t) return seg_err(SEG_ENOMEM, "history: %d epochs", cap);
        h->e = t;
        h->cap = cap;
    }
    h->e[h->n++] = *e;
    return SEG_OK;
}

static cJSON *num_or_null(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

char *history_to_json(const History *h)
{
    cJSON *root = cJSON_CreateObject(), *arr;
    if (!root) return NULL;
    int ok = cJSON_AddStringToObject(root, "monitor", h->monitor) && cJSON_AddNumberToObject(root, "best_epoch", h->best_epoch) &&
             (arr = cJSON_AddArrayToObject(root, "epochs"));
    for (int i = 0; ok && i < h->n; i++) {
        const HistoryEpoch *e = &h->e[i];
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(arr, o) && cJSON_AddNumberToObject(o, "epoch", e->epoch) &&
             cJSON_AddItemToObject(o, "train_loss", num_or_null(e->train_loss)) &&
             cJSON_AddItemToObject(o, "val_loss", num_or_null(e->val_loss)) &&
             cJSON_AddItemToObject(o, "val_dice", num_or_null(e->val_dice)) &&
             cJSON_AddNumberToObject(o, "val_structures", e->val_structures) &&
             cJSON_AddItemToObject(o, "lr", num_or_null(e->lr)) &&
             cJSON_AddItemToObject(o, "seconds", num_or_null(e->seconds)) &&
             cJSON_AddItemToObject(o, "slices_per_s", num_or_null(e->slices_per_s));
    }
    char *txt = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    return txt;
}

static double get_num(const cJSON *o, const char *k, int *bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsNumber(v)) return v->valuedouble;
    if (!cJSON_IsNull(v)) *bad = 1;
    return NAN;
}

int history_from_json(const char *txt, size_t n, const char *what, History *h)
{
    history_init(h);
    cJSON *root = cJSON_ParseWithLength(txt, n);
    if (!root) return seg_err(SEG_EFORMAT, "%s: history is not valid JSON", what);
    const cJSON *mon = cJSON_GetObjectItemCaseSensitive(root, "monitor");
    const cJSON *best = cJSON_GetObjectItemCaseSensitive(root, "best_epoch");
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "epochs"), *it;
    int rc = SEG_OK;
    if (!cJSON_IsString(mon) || strlen(mon->valuestring) >= sizeof h->monitor || !cJSON_IsNumber(best) || !cJSON_IsArray(arr))
        rc = seg_err(SEG_EFORMAT, "%s: history lacks monitor, best_epoch or epochs", what);
    else {
        strcpy(h->monitor, mon->valuestring);
        h->best_epoch = best->valueint;
    }
    if (rc == SEG_OK) cJSON_ArrayForEach(it, arr) {
        int bad = 0;
        HistoryEpoch e;
        e.epoch = (int)get_num(it, "epoch", &bad);
        e.train_loss = get_num(it, "train_loss", &bad);
        e.val_loss = get_num(it, "val_loss", &bad);
        e.val_dice = get_num(it, "val_dice", &bad);
        double vs = get_num(it, "val_structures", &bad);
        e.val_structures = isfinite(vs) ? (int)vs : 0;
        e.lr = get_num(it, "lr", &bad);
        e.seconds = get_num(it, "seconds", &bad);
        e.slices_per_s = get_num(it, "slices_per_s", &bad);
        if (bad || e.epoch < 1) { rc = seg_err(SEG_EFORMAT, "%s: bad history entry %d", what, h->n); break; }
        if ((rc = history_add(h, &e)) < 0) { rc = seg_err(SEG_EFORMAT, "%s: %s", what, seg_errmsg()); break; }
    }
    cJSON_Delete(root);
    if (rc < 0) history_free(h);
    return rc;
}

int history_write_json(const History *h, const char *path)
{
    char *txt = history_to_json(h);
    if (!txt) return seg_err(SEG_ENOMEM, "%s: history JSON", path);
    size_t n = strlen(txt);
    txt[n] = '\n';   /* replaces the NUL: the write takes n + 1 bytes, a final newline */
    int rc = fs_write_atomic(path, txt, n + 1);
    free(txt);
    return rc;
}

int history_plot(const History *h, const char *title, const char *path)
{
    const int W = 1400, H = 560, top = 44, sc = 2;
    PlotCanvas c;
    TRY(plot_canvas_init(&c, W, H, PLOT_WHITE));
    int n = h->n, rc = SEG_OK;
    double *x = malloc(sizeof(double) * (size_t)(5 * n + 1));
    if (!x) { plot_canvas_free(&c); return seg_err(SEG_ENOMEM, "%s: history plot", path); }
    /* validation runs every --val-every epochs: its curves join the epochs that have a value */
    double *tl = x + n, *vx = x + 2 * n, *vl = x + 3 * n, *vd = x + 4 * n;
    int nv = 0;
    for (int i = 0; i < n; i++) {
        x[i] = h->e[i].epoch;
        tl[i] = h->e[i].train_loss;
        if (isfinite(h->e[i].val_loss) || isfinite(h->e[i].val_dice)) {
            vx[nv] = h->e[i].epoch;
            vl[nv] = h->e[i].val_loss;
            vd[nv++] = h->e[i].val_dice;
        }
    }
    int any_val = nv > 0;
    double x0 = n ? x[0] - 0.5 : 0.5, x1 = n ? x[n - 1] + 0.5 : 1.5;
    char head[512];
    snprintf(head, sizeof head, "segtrain run %s", title && title[0] ? title : "");
    char fit[512];
    plot_text_fit(fit, sizeof fit, head, sc + 1, W - 20);
    plot_text_align(&c, W / 2, 10, fit, sc + 1, PLOT_BLACK, 0, -1);

    /* legends go where the curves are not: a falling loss leaves the top right free, a
     * rising Dice the top left */
    PlotSeries loss[2] = {
        { .name = "train", .x = x, .y = tl, .n = n, .color = plot_palette(0), .thickness = 2, .marker = 3 },
        { .name = "validation", .x = vx, .y = vl, .n = nv, .color = plot_palette(1), .thickness = 2, .marker = 3 },
    };
    PlotAxesSpec ls = { .x0 = x0, .x1 = x1, .auto_y = 1, .x_integer = 1, .title = "Loss (BCE with logits)", .xlabel = "epoch",
                        .ylabel = "loss", .scale = sc };
    rc = plot_line_chart(&c, 0, top, W / 2, H - top, &ls, loss, any_val ? 2 : 1, PLOT_LEGEND_TOP_RIGHT);
    if (rc == SEG_OK) {
        PlotSeries dice = { .name = "validation Dice", .x = vx, .y = vd, .n = nv, .color = plot_palette(2), .thickness = 2, .marker = 3 };
        PlotAxesSpec ds = { .x0 = x0, .x1 = x1, .y0 = 0, .y1 = 1, .x_integer = 1, .title = "Validation Dice",
                            .xlabel = "epoch", .ylabel = "mean Dice over present structures", .scale = sc };
        rc = plot_line_chart(&c, W / 2, top, W / 2, H - top, &ds, &dice, any_val, PLOT_LEGEND_TOP_LEFT);
        if (rc == SEG_OK && !any_val) {
            PlotAxes a;   /* the same layout again, to centre a note in its data area */
            plot_axes(&c, W / 2, top, W / 2, H - top, &ds, &a);
            plot_text_align(&c, a.x + a.w / 2, a.y + a.h / 2, "no validation split", sc, PLOT_GRAY, 0, 0);
        }
    }
    free(x);
    if (rc == SEG_OK) rc = plot_write_png(&c, path);
    else rc = seg_err(rc, "%s: %s", path, seg_errmsg());
    plot_canvas_free(&c);
    return rc;
}
