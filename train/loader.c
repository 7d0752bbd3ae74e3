/* train/loader.c : prefetching batch loader (see loader.h).
 *
 * Threads claim batch numbers in order; batch b goes to slot b % Q once the consumer has
 * released batch b - Q, so at most Q batches exist at any time. The consumer takes
 * batches strictly in order and releases the previous one on its next call.
 *
 * Augmentation (opt-in), drawn per sample from (seed, epoch, position):
 *   left-right flip (p 0.5; channels named *_left / *_right swap so a flipped left kidney
 *   is still labelled as the kidney on that side), anterior-posterior flip (p 0.5),
 *   rotation uniform in +-rot_deg about the centre (image bilinear, masks nearest,
 *   outside filled with the window's low end and no structure), then intensity
 *   x * (1 + u * int_scale) + v * int_shift with u, v uniform in [-1, 1].
 * Only the planes of present channels are transformed. */
#define _POSIX_C_SOURCE 200809L
#include "loader.h"
#include "err.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Sample { int32_t subject, z; } Sample;

typedef struct Slot {
    float   *img;
    uint8_t *bits, *pres;
    int      n;
    int64_t  batch;          /* batch held, valid when it equals the one asked for */
} Slot;

typedef struct Worker {
    struct Loader *l;
    pthread_t      th;
    int            started;
    CacheCursor   *cur;
    int16_t       *hu;       /* H*W */
    uint8_t       *bits;     /* C planes (aug only) */
    uint8_t       *pres;     /* (aug only) */
    int32_t       *map;      /* H*W source pixel or -1 (aug only) */
} Worker;

struct Loader {
    CacheReader  *r;
    LoaderOptions o;
    int           H, W, C;
    size_t        plane, pbytes;
    Sample       *samples;
    int64_t       n;
    int32_t      *perm;
    int           n_batches;
    int          *lr;         /* left-right partner of each channel */
    Slot         *slots;
    int           Q;
    Worker       *w;
    int           nw;
    pthread_mutex_t mu;
    pthread_cond_t  cv_work, cv_done;
    int           active, quit, busy;
    int           epoch;
    uint64_t      gen;        /* bumped by every start_epoch: stale work is dropped */
    int64_t       next_claim, next_read, released;
    int           holding;
    int           err;
    char          errmsg[1024];
};

/* ---- random numbers: splitmix64, so every draw is a pure function of its inputs ---- */

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t next_u64(uint64_t *s) { return mix(*s += 0x632BE59BD9B4E019ull); }
static double next_unit(uint64_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }   /* [0, 1) */

/* ---- setup ---- */

void loader_default_options(LoaderOptions *o)
{
    memset(o, 0, sizeof *o);
    o->batch_size = 8;
    o->threads = 1;
    o->prefetch = 3;
    o->hu_lo = -1000;
    o->hu_hi = 1000;
    o->rot_deg = 15;
    o->int_scale = 0.1f;
    o->int_shift = 0.1f;
}

/* "x_left..." <-> "x_right...": the first occurrence of the side word is swapped. */
static int find_partner(const LabelList *l, int c)
{
    const char *name = l->names[c], *from[2] = { "left", "right" }, *to[2] = { "right", "left" };
    char buf[512];
    for (int k = 0; k < 2; k++) {
        const char *p = strstr(name, from[k]);
        if (!p) continue;
        int pre = (int)(p - name);
        if (snprintf(buf, sizeof buf, "%.*s%s%s", pre, name, to[k], p + strlen(from[k])) >= (int)sizeof buf) continue;
        int j = labels_find(l, buf);
        if (j >= 0) return j;
    }
    return c;
}

static void *worker_main(void *arg);

void loader_free(Loader *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->quit = 1;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nw; i++) {
        Worker *w = &l->w[i];
        if (w->started) pthread_join(w->th, NULL);
        cache_cursor_close(w->cur);
        free(w->hu); free(w->bits); free(w->pres); free(w->map);
    }
    for (int i = 0; i < l->Q && l->slots; i++) { free(l->slots[i].img); free(l->slots[i].bits); free(l->slots[i].pres); }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv_work);
    pthread_cond_destroy(&l->cv_done);
    free(l->w); free(l->slots); free(l->samples); free(l->perm); free(l->lr);
    free(l);
}

int loader_create(CacheReader *r, int split, int64_t max_slices, const LoaderOptions *o, Loader **out)
{
    *out = NULL;
    if (o->batch_size < 1 || o->batch_size > 4096 || o->threads < 1 || o->threads > 256 || o->prefetch < 2 || o->prefetch > 64)
        return seg_err(SEG_EARG, "loader: batch size %d, threads %d, prefetch %d out of range", o->batch_size, o->threads, o->prefetch);
    if (!(o->hu_hi > o->hu_lo)) return seg_err(SEG_EARG, "loader: HU window [%g, %g] is empty", o->hu_lo, o->hu_hi);
    Loader *l = calloc(1, sizeof *l);
    if (!l) return seg_err(SEG_ENOMEM, "loader");
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_done, NULL);
    l->r = r;
    l->o = *o;
    l->H = l->W = cache_size(r);
    l->C = cache_n_channels(r);
    l->plane = cache_plane_bytes(r);
    l->pbytes = cache_presence_bytes(r);
    l->holding = -1;
    int rc = SEG_OK;

    int64_t total = 0;
    for (int i = 0; i < cache_n_subjects(r); i++)
        if (cache_subject(r, i)->split == split) total += cache_subject(r, i)->n_slices;
    l->n = max_slices > 0 && max_slices < total ? max_slices : total;
    l->samples = malloc(sizeof *l->samples * (size_t)(l->n + 1));
    l->perm = malloc(sizeof *l->perm * (size_t)(l->n + 1));
    l->lr = malloc(sizeof *l->lr * (size_t)l->C);
    if (!l->samples || !l->perm || !l->lr) { rc = seg_err(SEG_ENOMEM, "loader: %lld samples", (long long)l->n); goto fail; }
    if (l->n > INT32_MAX) { rc = seg_err(SEG_EARG, "loader: %lld slices is more than this build handles", (long long)l->n); goto fail; }
    /* evenly spaced subset: sample k is slice floor(k * total / n) of the split, in cache order */
    int64_t k = 0, pos = 0;
    for (int i = 0; i < cache_n_subjects(r) && k < l->n; i++) {
        const CacheSubject *s = cache_subject(r, i);
        if (s->split != split) continue;
        for (int z = 0; z < s->n_slices && k < l->n; z++, pos++)
            if ((k * total) / l->n == pos) { l->samples[k].subject = i; l->samples[k].z = z; k++; }
    }
    l->n = k;
    l->n_batches = (int)((l->n + o->batch_size - 1) / o->batch_size);
    /* only mutual pairs swap, so the mapping is a permutation whatever the names */
    for (int c = 0; c < l->C; c++) l->lr[c] = find_partner(cache_labels(r), c);
    for (int c = 0; c < l->C; c++)
        if (l->lr[c] != c && find_partner(cache_labels(r), l->lr[c]) != c) l->lr[c] = c;

    size_t B = (size_t)o->batch_size, HW = (size_t)l->H * l->W;
    l->Q = o->prefetch;
    l->slots = calloc((size_t)l->Q, sizeof *l->slots);
    if (!l->slots) { rc = seg_err(SEG_ENOMEM, "loader slots"); goto fail; }
    for (int i = 0; i < l->Q; i++) {
        Slot *s = &l->slots[i];
        s->img = malloc(sizeof(float) * B * HW);
        s->bits = malloc(B * (size_t)l->C * l->plane);
        s->pres = malloc(B * l->pbytes);
        s->batch = -1;
        if (!s->img || !s->bits || !s->pres) {
            rc = seg_err(SEG_ENOMEM, "loader: %d batch slots of %zu MB", l->Q, (B * (HW * 4 + (size_t)l->C * l->plane)) >> 20);
            goto fail;
        }
    }
    l->nw = o->threads;
    l->w = calloc((size_t)l->nw, sizeof *l->w);
    if (!l->w) { rc = seg_err(SEG_ENOMEM, "loader threads"); goto fail; }
    for (int i = 0; i < l->nw; i++) {
        Worker *w = &l->w[i];
        w->l = l;
        if ((rc = cache_cursor_open(r, &w->cur)) < 0) goto fail;
        w->hu = malloc(sizeof *w->hu * HW);
        if (!w->hu) { rc = seg_err(SEG_ENOMEM, "loader scratch"); goto fail; }
        if (o->aug) {
            w->bits = malloc((size_t)l->C * l->plane);
            w->pres = malloc(l->pbytes);
            w->map = malloc(sizeof *w->map * HW);
            if (!w->bits || !w->pres || !w->map) { rc = seg_err(SEG_ENOMEM, "loader scratch"); goto fail; }
        }
    }
    for (int i = 0; i < l->nw; i++) {
        if (pthread_create(&l->w[i].th, NULL, worker_main, &l->w[i]) != 0) { rc = seg_err(SEG_ENOMEM, "loader: cannot start a thread"); goto fail; }
        l->w[i].started = 1;
    }
    *out = l;
    return SEG_OK;
fail:
    loader_free(l);
    return rc;
}

int64_t loader_n_samples(const Loader *l) { return l->n; }
int loader_n_batches(const Loader *l) { return l->n_batches; }
int loader_lr_partner(const Loader *l, int c) { return c >= 0 && c < l->C ? l->lr[c] : c; }

/* ---- one sample ---- */

void loader_normalise_hu(const int16_t *hu, float *dst, size_t n, float lo, float hi)
{
    const float sc = 2.0f / (hi - lo);
    for (size_t i = 0; i < n; i++) {
        float v = hu[i];
        v = v < lo ? lo : v > hi ? hi : v;
        dst[i] = (v - lo) * sc - 1.0f;
    }
}

/* Decode sample at epoch position pos into slot item i, augmented when asked. */
static int fill_one(Worker *w, Slot *s, int i, int64_t pos)
{
    Loader *l = w->l;
    const int H = l->H, W = l->W, C = l->C;
    const size_t HW = (size_t)H * W;
    const Sample sm = l->samples[l->perm[pos]];
    const CacheSubject *subj = cache_subject(l->r, sm.subject);
    float *img = s->img + (size_t)i * HW;
    uint8_t *bits = s->bits + (size_t)i * C * l->plane, *pres = s->pres + (size_t)i * l->pbytes;
    if (!l->o.aug) {
        TRY(cache_read_slice(w->cur, subj, sm.z, w->hu, bits, pres, 0));
        loader_normalise_hu(w->hu, img, HW, l->o.hu_lo, l->o.hu_hi);
        return SEG_OK;
    }
    TRY(cache_read_slice(w->cur, subj, sm.z, w->hu, w->bits, w->pres, 0));
    uint64_t rs = mix(l->o.seed ^ mix((uint64_t)l->epoch * 0x9E3779B97F4A7C15ull + (uint64_t)pos));
    uint64_t r0 = next_u64(&rs);
    const int flip_lr = (int)(r0 & 1), flip_ap = (int)((r0 >> 1) & 1);
    const double ang = (2 * next_unit(&rs) - 1) * l->o.rot_deg * M_PI / 180.0;
    const float gain = (float)(1 + (2 * next_unit(&rs) - 1) * l->o.int_scale);
    const float bias = (float)((2 * next_unit(&rs) - 1) * l->o.int_shift);
    const double ca = cos(ang), sa = sin(ang), cx = (W - 1) * 0.5, cy = (H - 1) * 0.5;
    const float lo = l->o.hu_lo, hi = l->o.hu_hi, sc = 2.0f / (hi - lo);
    /* inverse map: output pixel -> rotate back about the centre -> undo the flips */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double dx = x - cx, dy = y - cy;
            double sx = ca * dx + sa * dy + cx, sy = -sa * dx + ca * dy + cy;
            if (flip_lr) sx = (W - 1) - sx;
            if (flip_ap) sy = (H - 1) - sy;
            const size_t p = (size_t)y * W + x;
            int ix = (int)floor(sx + 0.5), iy = (int)floor(sy + 0.5);
            w->map[p] = ix >= 0 && iy >= 0 && ix < W && iy < H ? iy * W + ix : -1;
            /* bilinear on clipped HU; taps outside the slice read the window's low end */
            int x0 = (int)floor(sx), y0 = (int)floor(sy);
            float fx = (float)(sx - x0), fy = (float)(sy - y0), acc = 0;
            for (int t = 0; t < 4; t++) {
                int xx = x0 + (t & 1), yy = y0 + (t >> 1);
                float v = xx >= 0 && yy >= 0 && xx < W && yy < H ? w->hu[(size_t)yy * W + xx] : lo;
                v = v < lo ? lo : v > hi ? hi : v;
                acc += v * ((t & 1) ? fx : 1 - fx) * ((t >> 1) ? fy : 1 - fy);
            }
            img[p] = ((acc - lo) * sc - 1.0f) * gain + bias;
        }
    memset(pres, 0, l->pbytes);
    for (int c = 0; c < C; c++) {
        if (!((w->pres[c >> 3] >> (c & 7)) & 1)) continue;
        const int dc = flip_lr ? l->lr[c] : c;
        const uint8_t *src = w->bits + (size_t)c * l->plane;
        uint8_t *dst = bits + (size_t)dc * l->plane;
        pres[dc >> 3] |= (uint8_t)(1u << (dc & 7));
        for (size_t b = 0; b < l->plane; b++) {
            uint8_t byte = 0;
            for (int k = 0; k < 8; k++) {
                int32_t q = w->map[8 * b + k];
                if (q >= 0 && ((src[q >> 3] >> (q & 7)) & 1)) byte |= (uint8_t)(1u << k);
            }
            dst[b] = byte;
        }
    }
    return SEG_OK;
}

static void *worker_main(void *arg)
{
    Worker *w = arg;
    Loader *l = w->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->quit && !(l->active && !l->err && l->next_claim < l->n_batches && l->next_claim < l->released + l->Q))
            pthread_cond_wait(&l->cv_work, &l->mu);
        if (l->quit) break;
        int64_t b = l->next_claim++;
        uint64_t gen = l->gen;
        Slot *s = &l->slots[b % l->Q];
        l->busy++;
        pthread_mutex_unlock(&l->mu);

        int64_t first = b * l->o.batch_size, n = l->n - first < l->o.batch_size ? l->n - first : l->o.batch_size;
        int rc = SEG_OK;
        for (int i = 0; i < n && rc == SEG_OK; i++) rc = fill_one(w, s, i, first + i);

        pthread_mutex_lock(&l->mu);
        l->busy--;
        if (gen == l->gen) {
            if (rc < 0) {
                if (!l->err) { l->err = rc; snprintf(l->errmsg, sizeof l->errmsg, "%s", seg_errmsg()); }
            } else {
                s->n = (int)n;
                s->batch = b;
            }
        }
        pthread_cond_broadcast(&l->cv_done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- epochs ---- */

int loader_start_epoch(Loader *l, int epoch)
{
    if (epoch < 0) return seg_err(SEG_EARG, "loader: epoch %d", epoch);
    pthread_mutex_lock(&l->mu);
    l->gen++;
    l->active = 0;
    while (l->busy > 0) pthread_cond_wait(&l->cv_done, &l->mu);
    for (int64_t i = 0; i < l->n; i++) l->perm[i] = (int32_t)i;
    if (l->o.shuffle) {   /* Fisher-Yates from a stream that depends only on (seed, epoch) */
        uint64_t rs = mix(l->o.seed * 0xD1B54A32D192ED03ull + (uint64_t)epoch + 1);
        for (int64_t i = l->n - 1; i > 0; i--) {
            int64_t j = (int64_t)(next_u64(&rs) % (uint64_t)(i + 1));
            int32_t t = l->perm[i]; l->perm[i] = l->perm[j]; l->perm[j] = t;
        }
    }
    for (int i = 0; i < l->Q; i++) l->slots[i].batch = -1;
    l->epoch = epoch;
    l->next_claim = l->next_read = l->released = 0;
    l->holding = -1;
    l->err = 0;
    l->active = 1;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return SEG_OK;
}

int loader_next(Loader *l, LoaderBatch *b)
{
    pthread_mutex_lock(&l->mu);
    if (!l->active) { pthread_mutex_unlock(&l->mu); return seg_err(SEG_EARG, "loader_next before loader_start_epoch"); }
    if (l->holding >= 0) {
        l->released++;
        l->holding = -1;
        pthread_cond_broadcast(&l->cv_work);
    }
    if (l->next_read >= l->n_batches) { pthread_mutex_unlock(&l->mu); return 0; }
    Slot *s = &l->slots[l->next_read % l->Q];
    while (s->batch != l->next_read && !l->err) pthread_cond_wait(&l->cv_done, &l->mu);
    if (s->batch != l->next_read) {
        int rc = seg_err(l->err, "%s", l->errmsg);
        pthread_mutex_unlock(&l->mu);
        return rc;
    }
    b->n = s->n;
    b->index = (int)l->next_read;
    b->img = s->img;
    b->bits = s->bits;
    b->presence = s->pres;
    l->holding = (int)(l->next_read % l->Q);
    l->next_read++;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return 1;
}
