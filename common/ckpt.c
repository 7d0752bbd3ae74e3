/* common/ckpt.c : checkpoint files (model state dict + resume state) over safetensors. */
#define _POSIX_C_SOURCE 200809L
#include "ckpt.h"
#include "err.h"
#include "safetensors.h"
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CKPT_KIND_MODEL "unet"
#define CKPT_KIND_STATE "unet-train-state"

static int is_counter(const char *name)
{
    size_t n = strlen(name), k = strlen("num_batches_tracked");
    return n >= k && !strcmp(name + n - k, "num_batches_tracked");
}

static void random_id(char out[40])
{
    unsigned char b[16];
    int fd = open("/dev/urandom", O_RDONLY);
    ssize_t got = fd >= 0 ? read(fd, b, sizeof b) : -1;
    if (fd >= 0) close(fd);
    if (got != (ssize_t)sizeof b) {   /* no urandom: time and pid still tell two saves apart */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 48);
        for (int i = 0; i < 16; i++) { x = x * 6364136223846793005ull + 1442695040888963407ull; b[i] = (uint8_t)(x >> 56); }
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static char *config_json(const UnetConfig *cfg)
{
    cJSON *o = cJSON_CreateObject(), *f;
    if (!o) return NULL;
    int ok = cJSON_AddNumberToObject(o, "in_ch", cfg->in_ch) && cJSON_AddNumberToObject(o, "n_classes", cfg->n_classes) &&
             cJSON_AddNumberToObject(o, "n_levels", cfg->n_levels) && (f = cJSON_AddArrayToObject(o, "features"));
    for (int i = 0; ok && i < cfg->n_levels; i++) ok = cJSON_AddItemToArray(f, cJSON_CreateNumber(cfg->features[i]));
    char *txt = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return txt;
}

static char *labels_json(const LabelList *l)
{
    cJSON *a = cJSON_CreateArray();
    int ok = a != NULL;
    for (int i = 0; ok && i < l->n; i++) ok = cJSON_AddItemToArray(a, cJSON_CreateString(l->names[i]));
    char *txt = ok ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return txt;
}

static int save_model(const char *path, const Unet *m, const CkptMeta *meta, const char *id)
{
    TRY(unet_sync_host(m));                  /* a GPU model's state comes back to the host views */
    int nt = unet_n_tensors(m), rc = SEG_OK;
    StTensor *ts = calloc((size_t)nt, sizeof *ts);
    int64_t *counters = calloc((size_t)nt, sizeof *counters);
    char *cfg = config_json(unet_config(m)), *lab = labels_json(meta->labels);
    char num[3][32], hu[96];
    if (!ts || !counters || !cfg || !lab) { rc = seg_err(SEG_ENOMEM, "%s: checkpoint", path); goto out; }
    for (int i = 0; i < nt; i++) {
        const UnetTensor *u = unet_tensor(m, i);
        ts[i].name = u->name;
        if (is_counter(u->name)) {
            /* PyTorch keeps BatchNorm's counter as a 0-d int64 tensor */
            counters[i] = (int64_t)llround(u->data[0]);
            ts[i].dtype = ST_I64;
            ts[i].ndim = 0;
            ts[i].data = &counters[i];
        } else {
            ts[i].dtype = ST_F32;
            ts[i].ndim = u->ndim;
            memcpy(ts[i].shape, u->shape, sizeof(int64_t) * (size_t)u->ndim);
            ts[i].data = u->data;
        }
    }
    snprintf(num[0], sizeof num[0], "%d", meta->size);
    snprintf(num[1], sizeof num[1], "%d", meta->epoch);
    snprintf(num[2], sizeof num[2], "%d", CKPT_VERSION);
    snprintf(hu, sizeof hu, "[%.9g, %.9g]", meta->hu_lo, meta->hu_hi);
    StMeta md[] = {
        { "format", "pt" }, { "segkit", CKPT_KIND_MODEL }, { "version", num[2] }, { "config", cfg }, { "labels", lab },
        { "size", num[0] }, { "hu_window", hu }, { "epoch", num[1] }, { "id", id }, { "segkit_version", SEG_VERSION },
        { "train", meta->train_json ? meta->train_json : "{}" },
    };
    rc = st_write(path, ts, nt, md, (int)(sizeof md / sizeof md[0]));
out:
    free(ts); free(counters); free(cfg); free(lab);
    return rc;
}

static int save_state(const char *path, const Unet *m, const char *id, const char *train_state_json)
{
    Unet *mm = (Unet *)m;   /* the accessors are not const; nothing is written */
    TRY(unet_sync_host(m));
    int64_t n = (int64_t)unet_n_params(m), step = *unet_adam_step_count(mm);
    char num[32];
    snprintf(num, sizeof num, "%d", CKPT_VERSION);
    StTensor ts[3] = {
        { .name = "adam.m", .dtype = ST_F32, .ndim = 1, .shape = { n }, .data = unet_adam_m(mm) },
        { .name = "adam.v", .dtype = ST_F32, .ndim = 1, .shape = { n }, .data = unet_adam_v(mm) },
        { .name = "adam.step", .dtype = ST_I64, .ndim = 0, .data = &step },
    };
    StMeta md[] = { { "segkit", CKPT_KIND_STATE }, { "version", num }, { "id", id },
                    { "train_state", train_state_json ? train_state_json : "{}" } };
    return st_write(path, ts, 3, md, 4);
}

int ckpt_save_model(const char *path, const Unet *m, const CkptMeta *meta)
{
    char id[40];
    random_id(id);
    return save_model(path, m, meta, id);
}

int ckpt_save(const char *path, const Unet *m, const CkptMeta *meta, const char *train_state_json)
{
    char id[40], sp[4300];
    random_id(id);
    TRY(ckpt_state_path(path, sp, sizeof sp));
    TRY(save_state(sp, m, id, train_state_json));
    return save_model(path, m, meta, id);
}

void ckpt_info_free(CkptInfo *info)
{
    if (!info) return;
    labels_free(&info->labels);
}

static int meta_int(const StFile *f, const char *path, const char *key, long lo, long hi, int *out)
{
    const char *v = st_meta(f, key);
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || x < lo || x > hi)
        return seg_err(SEG_EFORMAT, "%s: checkpoint metadata '%s' is %s", path, key, v ? "invalid" : "missing");
    *out = (int)x;
    return SEG_OK;
}

static int parse_info(const StFile *f, const char *path, CkptInfo *info)
{
    memset(info, 0, sizeof *info);
    const char *kind = st_meta(f, "segkit");
    if (!kind || strcmp(kind, CKPT_KIND_MODEL))
        return seg_err(SEG_EFORMAT, "%s: not a segkit U-Net checkpoint (metadata 'segkit' is %s%s%s)", path,
                       kind ? "'" : "missing", kind ? kind : "", kind ? "'" : "");
    int ver;
    TRY(meta_int(f, path, "version", 0, 1 << 30, &ver));
    if (ver != CKPT_VERSION)
        return seg_err(SEG_EFORMAT, "%s: checkpoint version %d, this build reads version %d", path, ver, CKPT_VERSION);
    TRY(meta_int(f, path, "size", 1, 1 << 16, &info->size));
    TRY(meta_int(f, path, "epoch", 0, 1 << 30, &info->epoch));
    const char *id = st_meta(f, "id");
    snprintf(info->id, sizeof info->id, "%s", id ? id : "");
    const char *txt = st_meta(f, "config");
    cJSON *o = txt ? cJSON_Parse(txt) : NULL;
    const cJSON *ic = cJSON_GetObjectItemCaseSensitive(o, "in_ch"), *nc = cJSON_GetObjectItemCaseSensitive(o, "n_classes");
    const cJSON *nl = cJSON_GetObjectItemCaseSensitive(o, "n_levels"), *fe = cJSON_GetObjectItemCaseSensitive(o, "features");
    int ok = cJSON_IsNumber(ic) && cJSON_IsNumber(nc) && cJSON_IsNumber(nl) && cJSON_IsArray(fe) && nl->valueint >= 1 &&
             nl->valueint <= UNET_MAX_LEVELS && cJSON_GetArraySize(fe) == nl->valueint && ic->valueint >= 1 && nc->valueint >= 1;
    if (ok) {
        info->cfg.in_ch = ic->valueint;
        info->cfg.n_classes = nc->valueint;
        info->cfg.n_levels = nl->valueint;
        for (int i = 0; i < nl->valueint; i++) {
            const cJSON *x = cJSON_GetArrayItem(fe, i);
            ok &= cJSON_IsNumber(x) && x->valueint >= 1 && x->valueint <= 65536;
            if (ok) info->cfg.features[i] = x->valueint;
        }
    }
    cJSON_Delete(o);
    if (!ok) return seg_err(SEG_EFORMAT, "%s: checkpoint metadata 'config' is missing or invalid", path);
    txt = st_meta(f, "labels");
    int rc = txt ? labels_parse(txt, strlen(txt), path, &info->labels) : seg_err(SEG_EFORMAT, "%s: no 'labels' metadata", path);
    if (rc < 0) return seg_err(SEG_EFORMAT, "%s: checkpoint labels: %s", path, seg_errmsg());
    if (info->labels.n != info->cfg.n_classes) {
        ckpt_info_free(info);
        return seg_err(SEG_EFORMAT, "%s: %d labels for %d output channels", path, info->labels.n, info->cfg.n_classes);
    }
    txt = st_meta(f, "hu_window");
    double lo, hi;
    if (!txt || sscanf(txt, " [ %lf , %lf ]", &lo, &hi) != 2 || !(hi > lo)) {
        ckpt_info_free(info);
        return seg_err(SEG_EFORMAT, "%s: checkpoint metadata 'hu_window' is missing or invalid", path);
    }
    info->hu_lo = (float)lo;
    info->hu_hi = (float)hi;
    return SEG_OK;
}

int ckpt_read_info(const char *path, CkptInfo *info)
{
    StFile *f;
    memset(info, 0, sizeof *info);
    TRY(st_open(path, &f));
    int rc = parse_info(f, path, info);
    st_close(f);
    return rc;
}

static int same_config(const UnetConfig *a, const UnetConfig *b)
{
    if (a->in_ch != b->in_ch || a->n_classes != b->n_classes || a->n_levels != b->n_levels) return 0;
    for (int i = 0; i < a->n_levels; i++)
        if (a->features[i] != b->features[i]) return 0;
    return 1;
}

static void config_str(const UnetConfig *c, char *out, size_t cap)
{
    size_t k = (size_t)snprintf(out, cap, "in %d, classes %d, features ", c->in_ch, c->n_classes);
    for (int i = 0; i < c->n_levels && k < cap; i++) k += (size_t)snprintf(out + k, cap - k, "%s%d", i ? "," : "", c->features[i]);
}

int ckpt_load_model(const char *path, Unet *m)
{
    StFile *f;
    CkptInfo info;
    TRY(st_open(path, &f));
    int rc = parse_info(f, path, &info);
    if (rc < 0) { st_close(f); return rc; }
    if (!same_config(&info.cfg, unet_config(m))) {
        char a[128], b[128];
        config_str(&info.cfg, a, sizeof a);
        config_str(unet_config(m), b, sizeof b);
        rc = seg_err(SEG_EMISMATCH, "%s: checkpoint model (%s) differs from this model (%s)", path, a, b);
    }
    int nt = unet_n_tensors(m);
    for (int i = 0; rc == SEG_OK && i < nt; i++) {
        const UnetTensor *u = unet_tensor(m, i);
        const StTensor *t = st_find(f, u->name);
        if (!t) { rc = seg_err(SEG_EFORMAT, "%s: tensor '%s' is missing", path, u->name); break; }
        if (is_counter(u->name)) {
            if (t->count != 1) rc = seg_err(SEG_EFORMAT, "%s: tensor '%s' is not a scalar", path, u->name);
            else st_to_f32(t, u->data);
        } else {
            rc = st_read_f32(f, u->name, u->ndim, u->shape, u->data, u->count);
            if (rc == SEG_EMISMATCH) rc = SEG_EFORMAT;
        }
    }
    if (rc == SEG_OK && st_n_tensors(f) != nt) {
        for (int i = 0; i < st_n_tensors(f); i++) {
            const char *name = st_tensor(f, i)->name;
            int known = 0;
            for (int k = 0; k < nt && !known; k++) known = !strcmp(unet_tensor(m, k)->name, name);
            if (!known) { rc = seg_err(SEG_EFORMAT, "%s: unexpected tensor '%s' (not part of this model)", path, name); break; }
        }
    }
    if (rc == SEG_OK) {   /* non-finite weights would only surface as NaN losses much later */
        const float *p = unet_params(m);
        size_t n = unet_n_params(m);
        for (size_t i = 0; i < n; i++)
            if (!isfinite(p[i])) { rc = seg_err(SEG_EFORMAT, "%s: non-finite weight at parameter %zu", path, i); break; }
    }
    if (rc == SEG_OK) rc = unet_sync_device(m);
    ckpt_info_free(&info);
    st_close(f);
    return rc;
}

/* Open a state file and check its kind and id. */
static int open_state(const char *path, const char *expect_id, StFile **out)
{
    StFile *f;
    *out = NULL;
    TRY(st_open(path, &f));
    const char *kind = st_meta(f, "segkit"), *id = st_meta(f, "id");
    int rc = SEG_OK;
    if (!kind || strcmp(kind, CKPT_KIND_STATE) || !st_meta(f, "train_state"))
        rc = seg_err(SEG_EFORMAT, "%s: not a segkit training state file", path);
    else if (expect_id && (!id || strcmp(id, expect_id)))
        rc = seg_err(SEG_EMISMATCH, "%s: belongs to another save than its weights file (id %s, weights %s); "
                     "the run was probably interrupted while saving: resume from an earlier epoch", path, id ? id : "none", expect_id);
    if (rc < 0) { st_close(f); return rc; }
    *out = f;
    return SEG_OK;
}

int ckpt_read_state_json(const char *path, const char *expect_id, char **train_state_json)
{
    StFile *f;
    *train_state_json = NULL;
    TRY(open_state(path, expect_id, &f));
    int rc = (*train_state_json = strdup(st_meta(f, "train_state"))) ? SEG_OK : seg_err(SEG_ENOMEM, "%s", path);
    st_close(f);
    return rc;
}

int ckpt_load_state(const char *path, Unet *m, const char *expect_id)
{
    StFile *f;
    TRY(open_state(path, expect_id, &f));
    size_t n = unet_n_params(m);
    int rc = st_read_f32(f, "adam.m", 1, NULL, unet_adam_m(m), n);
    if (rc == SEG_OK) rc = st_read_f32(f, "adam.v", 1, NULL, unet_adam_v(m), n);
    const StTensor *t = rc == SEG_OK ? st_find(f, "adam.step") : NULL;
    if (rc == SEG_OK && (!t || t->dtype != ST_I64 || t->count != 1))
        rc = seg_err(SEG_EFORMAT, "%s: no I64 scalar 'adam.step'", path);
    if (rc == SEG_OK) {
        int64_t step;
        memcpy(&step, t->data, 8);
        if (step < 0) rc = seg_err(SEG_EFORMAT, "%s: negative adam.step", path);
        else *unet_adam_step_count(m) = step;
    }
    st_close(f);
    if (rc == SEG_OK) rc = unet_sync_device(m);
    return rc;
}

int ckpt_state_path(const char *weights_path, char *out, size_t cap)
{
    const char *ext = ".safetensors";
    size_t n = strlen(weights_path), e = strlen(ext);
    int k;
    if (n > e && !strcmp(weights_path + n - e, ext))
        k = snprintf(out, cap, "%.*s.state%s", (int)(n - e), weights_path, ext);
    else
        k = snprintf(out, cap, "%s.state%s", weights_path, ext);
    if (k < 0 || (size_t)k >= cap) return seg_err(SEG_EARG, "%s: path too long", weights_path);
    return SEG_OK;
}
