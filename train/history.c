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
    for (int i = 0; i < h->n_ch; i++) free(h->ch_names[i]);
    free(h->ch_names);
    free(h->ch_dice);
    history_init(h);
}

int history_set_structures(History *h, const char *const *names, int n)
{
    if (h->n || h->n_ch || n < 0) return seg_err(SEG_EARG, "history: structures set after epochs or twice");
    if (!n) return SEG_OK;
    if (!(h->ch_names = calloc((size_t)n, sizeof *h->ch_names))) return seg_err(SEG_ENOMEM, "history: %d names", n);
    for (int c = 0; c < n; c++) {
        if (!(h->ch_names[c] = strdup(names[c]))) {
            for (int k = 0; k < c; k++) free(h->ch_names[k]);
            free(h->ch_names);
            h->ch_names = NULL;
            return seg_err(SEG_ENOMEM, "history: names");
        }
    }
    h->n_ch = n;
    return SEG_OK;
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
        if (h->n_ch) {
            float *d = realloc(h->ch_dice, sizeof *d * (size_t)cap * (size_t)h->n_ch);
            if (!d) return seg_err(SEG_ENOMEM, "history: %d epochs of %d structures", cap, h->n_ch);
            h->ch_dice = d;
        }
        h->cap = cap;
    }
    if (h->n_ch) {
        float *row = h->ch_dice + (size_t)h->n * h->n_ch;
        for (int c = 0; c < h->n_ch; c++) row[c] = e->val_dice_c ? e->val_dice_c[c] : NAN;
    }
    h->e[h->n] = *e;
    h->e[h->n++].val_dice_c = NULL;   /* the row above is the stored copy */
    return SEG_OK;
}

const float *history_structure_dice(const History *h, int i)
{
    return h->n_ch && i >= 0 && i < h->n ? h->ch_dice + (size_t)i * h->n_ch : NULL;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* value at fraction f of the sorted v[n] (linear between neighbours, as numpy's default) */
static double quantile(const double *v, int n, double f)
{
    const double pos = f * (n - 1);
    const int k = (int)pos;
    return k + 1 < n ? v[k] + (pos - k) * (v[k + 1] - v[k]) : v[k];
}

int history_dice_quartiles(const History *h, int i, double *q1, double *median, double *q3)
{
    *q1 = *median = *q3 = NAN;
    const float *row = history_structure_dice(h, i);
    double *v = row ? malloc(sizeof *v * (size_t)h->n_ch) : NULL;
    if (!v) return 0;
    int n = 0;
    for (int c = 0; c < h->n_ch; c++)
        if (isfinite(row[c])) v[n++] = row[c];
    if (n) {
        qsort(v, (size_t)n, sizeof *v, cmp_double);
        *q1 = quantile(v, n, 0.25);
        *median = quantile(v, n, 0.5);
        *q3 = quantile(v, n, 0.75);
    }
    free(v);
    return n;
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
             (!h->loss[0] || cJSON_AddStringToObject(root, "loss", h->loss));
    if (ok && h->n_ch) {
        cJSON *names = cJSON_CreateStringArray((const char *const *)h->ch_names, h->n_ch);
        ok = names && cJSON_AddItemToObject(root, "structures", names);
        if (!ok) cJSON_Delete(names);
    }
    ok = ok && (arr = cJSON_AddArrayToObject(root, "epochs"));
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
        const float *row = history_structure_dice(h, i);
        int any = 0;
        for (int c = 0; ok && row && c < h->n_ch; c++) any |= isfinite(row[c]);
        if (ok && any) {
            cJSON *d = cJSON_AddObjectToObject(o, "val_dice_per_structure");
            ok = d != NULL;
            for (int c = 0; ok && c < h->n_ch; c++)
                if (isfinite(row[c])) ok = cJSON_AddNumberToObject(d, h->ch_names[c], row[c]) != NULL;
        }
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
    const cJSON *loss = cJSON_GetObjectItemCaseSensitive(root, "loss");
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(root, "structures");
    float *row = NULL;
    if (!cJSON_IsString(mon) || strlen(mon->valuestring) >= sizeof h->monitor || !cJSON_IsNumber(best) || !cJSON_IsArray(arr))
        rc = seg_err(SEG_EFORMAT, "%s: history lacks monitor, best_epoch or epochs", what);
    else if ((loss && (!cJSON_IsString(loss) || strlen(loss->valuestring) >= sizeof h->loss)) || (names && !cJSON_IsArray(names)))
        rc = seg_err(SEG_EFORMAT, "%s: history has a bad loss or structures entry", what);
    else {
        strcpy(h->monitor, mon->valuestring);
        if (loss) strcpy(h->loss, loss->valuestring);
        h->best_epoch = best->valueint;
    }
    if (rc == SEG_OK && names) {   /* optional: histories from before per-structure Dice have none */
        const int n = cJSON_GetArraySize(names);
        const char **nm = calloc((size_t)(n ? n : 1), sizeof *nm);
        row = malloc(sizeof *row * (size_t)(n ? n : 1));
        int k = 0;
        if (nm) cJSON_ArrayForEach(it, names) {
            if (!cJSON_IsString(it)) break;
            nm[k++] = it->valuestring;
        }
        if (!nm || !row) rc = seg_err(SEG_ENOMEM, "%s: history", what);
        else if (k != n) rc = seg_err(SEG_EFORMAT, "%s: history structures are not all names", what);
        else if ((rc = history_set_structures(h, nm, n)) < 0) rc = seg_err(rc, "%s: %s", what, seg_errmsg());
        free(nm);
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
        e.val_dice_c = NULL;
        const cJSON *pd = cJSON_GetObjectItemCaseSensitive(it, "val_dice_per_structure"), *d;
        if (pd && (!cJSON_IsObject(pd) || !h->n_ch)) bad = 1;
        else if (pd) {
            for (int c = 0; c < h->n_ch; c++) row[c] = NAN;
            cJSON_ArrayForEach(d, pd) {
                int c = 0;
                while (c < h->n_ch && strcmp(h->ch_names[c], d->string)) c++;
                if (c == h->n_ch || !cJSON_IsNumber(d)) { bad = 1; break; }
                row[c] = (float)d->valuedouble;
            }
            e.val_dice_c = row;
        }
        if (bad || e.epoch < 1) { rc = seg_err(SEG_EFORMAT, "%s: bad history entry %d", what, h->n); break; }
        if ((rc = history_add(h, &e)) < 0) { rc = seg_err(SEG_EFORMAT, "%s: %s", what, seg_errmsg()); break; }
    }
    cJSON_Delete(root);
    free(row);
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
    double *x = malloc(sizeof(double) * (size_t)(7 * n + 1));
    if (!x) { plot_canvas_free(&c); return seg_err(SEG_ENOMEM, "%s: history plot", path); }
    /* validation runs every --val-every epochs: its curves join the epochs that have a value */
    double *tl = x + n, *vx = x + 2 * n, *vl = x + 3 * n, *vd = x + 4 * n, *q1 = x + 5 * n, *q3 = x + 6 * n;
    int nv = 0, nq = 0;
    for (int i = 0; i < n; i++) {
        x[i] = h->e[i].epoch;
        tl[i] = h->e[i].train_loss;
        if (isfinite(h->e[i].val_loss) || isfinite(h->e[i].val_dice)) {
            double med;
            vx[nv] = h->e[i].epoch;
            vl[nv] = h->e[i].val_loss;
            vd[nv] = h->e[i].val_dice;
            nq += history_dice_quartiles(h, i, &q1[nv], &med, &q3[nv]) > 0;
            nv++;
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
    char ltitle[64];
    snprintf(ltitle, sizeof ltitle, "Loss (%s)", h->loss[0] ? h->loss : "BCE with logits");
    PlotAxesSpec ls = { .x0 = x0, .x1 = x1, .auto_y = 1, .x_integer = 1, .title = ltitle, .xlabel = "epoch",
                        .ylabel = "loss", .scale = sc };
    rc = plot_line_chart(&c, 0, top, W / 2, H - top, &ls, loss, any_val ? 2 : 1, PLOT_LEGEND_TOP_RIGHT);
    if (rc == SEG_OK) {
        const PlotColor dc = plot_palette(2);
        const PlotColor light = { (uint8_t)(dc.r + (255 - dc.r) * 3 / 4), (uint8_t)(dc.g + (255 - dc.g) * 3 / 4),
                                  (uint8_t)(dc.b + (255 - dc.b) * 3 / 4) };
        PlotSeries dice[2] = {
            { .name = "mean over structures", .x = vx, .y = vd, .n = nv, .color = dc, .thickness = 2, .marker = 3 },
            { .name = "structures: quartiles 1-3", .n = 0, .color = light, .thickness = 8 },
        };
        PlotAxesSpec ds = { .x0 = x0, .x1 = x1, .y0 = 0, .y1 = 1, .x_integer = 1, .title = "Validation Dice",
                            .xlabel = "epoch", .ylabel = "Dice over present structures", .scale = sc };
        PlotAxes a;
        rc = plot_axes(&c, W / 2, top, W / 2, H - top, &ds, &a);
        if (rc == SEG_OK && nq) plot_band(&c, &a, vx, q1, q3, nv, dc, 0.25f);
        if (rc == SEG_OK && any_val) {
            plot_series(&c, &a, &dice[0]);
            plot_legend(&c, &a, dice, nq ? 2 : 1, PLOT_LEGEND_TOP_LEFT);
        }
        if (rc == SEG_OK && !any_val)
            plot_text_align(&c, a.x + a.w / 2, a.y + a.h / 2, "no validation split", sc, PLOT_GRAY, 0, 0);
    }
    free(x);
    if (rc == SEG_OK) rc = plot_write_png(&c, path);
    else rc = seg_err(rc, "%s: %s", path, seg_errmsg());
    plot_canvas_free(&c);
    return rc;
}
