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
 * Only the planes of present channels are transformed. With context, every input channel
 * (a neighbouring slice) goes through the same flips, rotation and intensity change.
 *
 * Balanced sampling: a CSR index (fg_struct, fg_off, fg_idx) from each present structure
 * to the samples holding it, read from the presence bitmaps once at loader_create. */
#define _POSIX_C_SOURCE 200809L
#include "loader.h"
#include "util.h"
#include "maskpack.h"
#include "hunorm.h"
#include "err.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Sample { int32_t subject, z; } Sample;

typedef struct Slot {
    float   *img;
    uint8_t *bits, *pres, *lab;
    int     *fg;
    int      n;
    int64_t  batch;          /* batch held, valid when it equals the one asked for */
} Slot;

typedef struct Worker {
    struct Loader *l;
    pthread_t      th;
    int            started;
    CacheCursor   *cur;
    int16_t       *hu;       /* H*W: the slice being decoded */
    uint8_t       *bits;     /* C planes (aug only) */
    uint8_t       *pres;     /* (aug only) */
    int32_t       *map;      /* H*W source pixel or -1 (aug only) */
} Worker;

struct Loader {
    CacheReader  *r;
    LoaderOptions o;
    int           H, W, C;
    size_t        plane, pbytes;
    int           partial;    /* some subject of the split is partly labelled: batches carry labelled[] */
    Sample       *samples;
    int64_t       n;
    int32_t      *perm;
    int           n_batches;
    int           CH;         /* input channels: 2 * context + 1 */
    int           n_fg;       /* structures with samples (balanced only) */
    int32_t      *fg_struct;  /* n_fg channels */
    int64_t      *fg_off;     /* n_fg + 1: fg_idx[fg_off[j] .. fg_off[j+1]) hold structure j */
    int32_t      *fg_idx;     /* sample indices */
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

static uint64_t mix(uint64_t z) { return util_splitmix64(&z); }   /* the output for state z */

static uint64_t next_u64(uint64_t *s) { return mix(*s += 0x632BE59BD9B4E019ull); }
static double next_unit(uint64_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }   /* [0, 1) */

/* ---- setup ---- */

void loader_default_options(LoaderOptions *o)
{
    memset(o, 0, sizeof *o);
    o->batch_size = 8;
    o->threads = 1;
    o->prefetch = 3;
    o->hu_lo = HUNORM_DEFAULT_LO;
    o->hu_hi = 1000;
    o->rot_deg = 15;
    o->int_scale = 0.1f;
    o->int_shift = 0.1f;
    o->fg_fraction = 0.33f;
}

int loader_fg_slots(int n, float fg_fraction)
{
    if (!(fg_fraction > 0) || n < 1) return 0;
    int k = (int)floorf((float)n * fg_fraction + 0.5f);   /* half rounds up */
    if (k < 1 && n >= 2) k = 1;
    return k > n ? n : k;
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
    for (int i = 0; i < l->Q && l->slots; i++) {
        free(l->slots[i].img); free(l->slots[i].bits); free(l->slots[i].pres); free(l->slots[i].lab); free(l->slots[i].fg);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv_work);
    pthread_cond_destroy(&l->cv_done);
    free(l->w); free(l->slots); free(l->samples); free(l->perm); free(l->lr);
    free(l->fg_struct); free(l->fg_off); free(l->fg_idx);
    free(l);
}

/* The CSR index structure -> samples holding it, from the presence bitmaps (one LMDB
 * lookup per sample, no decompression); n_fg counts the structures with any sample. */
static int build_fg_index(Loader *l)
{
    CacheCursor *cur = NULL;
    uint8_t *pres = malloc(l->pbytes * (size_t)(l->n ? l->n : 1));
    int64_t *cnt = calloc((size_t)l->C + 1, sizeof *cnt);
    int rc = pres && cnt ? cache_cursor_open(l->r, &cur) : seg_err(SEG_ENOMEM, "loader: presence of %lld samples", (long long)l->n);
    for (int64_t i = 0; i < l->n && rc == SEG_OK; i++) {
        uint8_t *p = pres + (size_t)i * l->pbytes;
        rc = cache_read_presence(cur, cache_subject(l->r, l->samples[i].subject), l->samples[i].z, p);
        for (int c = 0; c < l->C && rc == SEG_OK; c++) cnt[c] += maskpack_get(p, c);
    }
    cache_cursor_close(cur);
    int64_t total = 0;
    for (int c = 0; c < l->C; c++) { l->n_fg += cnt[c] > 0; total += cnt[c]; }
    if (rc == SEG_OK) {
        l->fg_struct = malloc(sizeof *l->fg_struct * (size_t)(l->n_fg + 1));
        l->fg_off = malloc(sizeof *l->fg_off * (size_t)(l->n_fg + 1));
        l->fg_idx = malloc(sizeof *l->fg_idx * (size_t)(total + 1));
        if (!l->fg_struct || !l->fg_off || !l->fg_idx) rc = seg_err(SEG_ENOMEM, "loader: index of %lld structure slices", (long long)total);
    }
    if (rc == SEG_OK) {
        /* cnt[c] becomes the write position of structure c (its rank j among present ones) */
        int j = 0;
        int64_t off = 0;
        for (int c = 0; c < l->C; c++) {
            if (!cnt[c]) { cnt[c] = -1; continue; }
            l->fg_struct[j] = c;
            l->fg_off[j++] = off;
            off += cnt[c];
            cnt[c] = l->fg_off[j - 1];
        }
        l->fg_off[j] = off;
        for (int64_t i = 0; i < l->n; i++) {
            const uint8_t *p = pres + (size_t)i * l->pbytes;
            for (int c = 0; c < l->C; c++)
                if (maskpack_get(p, c)) l->fg_idx[cnt[c]++] = (int32_t)i;
        }
    }
    free(pres);
    free(cnt);
    return rc;
}

int loader_create(CacheReader *r, int split, int64_t max_slices, const LoaderOptions *o, Loader **out)
{
    *out = NULL;
    if (o->batch_size < 1 || o->batch_size > 4096 || o->threads < 1 || o->threads > 256 || o->prefetch < 2 || o->prefetch > 64)
        return seg_err(SEG_EARG, "loader: batch size %d, threads %d, prefetch %d out of range", o->batch_size, o->threads, o->prefetch);
    if (!(o->hu_hi > o->hu_lo)) return seg_err(SEG_EARG, "loader: HU window [%g, %g] is empty", o->hu_lo, o->hu_hi);
    if (o->balanced && !(o->fg_fraction >= 0 && o->fg_fraction <= 1))
        return seg_err(SEG_EARG, "loader: foreground fraction %g is not in [0, 1]", o->fg_fraction);
    if (o->context < 0 || o->context > LOADER_MAX_CONTEXT)
        return seg_err(SEG_EARG, "loader: context %d is not in 0..%d", o->context, LOADER_MAX_CONTEXT);
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
    l->CH = 2 * o->context + 1;
    int rc = SEG_OK;

    int64_t total = 0;
    for (int i = 0; i < cache_n_subjects(r); i++)
        if (cache_subject(r, i)->split == split) {
            total += cache_subject(r, i)->n_slices;
            l->partial |= cache_subject(r, i)->partial;
        }
    if (l->partial && l->C > CACHE_LABELLED_MAX)
        { rc = seg_err(SEG_EFORMAT, "loader: partly labelled subjects in a cache of %d channels (at most %d)", l->C, CACHE_LABELLED_MAX); goto fail; }
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
    if (o->balanced && (rc = build_fg_index(l)) < 0) goto fail;

    size_t B = (size_t)o->batch_size, HW = (size_t)l->H * l->W;
    l->Q = o->prefetch;
    l->slots = calloc((size_t)l->Q, sizeof *l->slots);
    if (!l->slots) { rc = seg_err(SEG_ENOMEM, "loader slots"); goto fail; }
    for (int i = 0; i < l->Q; i++) {
        Slot *s = &l->slots[i];
        s->img = malloc(sizeof(float) * B * (size_t)l->CH * HW);
        s->bits = malloc(B * (size_t)l->C * l->plane);
        s->pres = malloc(B * l->pbytes);
        s->lab = malloc(B * l->pbytes);
        s->fg = malloc(sizeof(int) * B);
        s->batch = -1;
        if (!s->img || !s->bits || !s->pres || !s->lab || !s->fg) {
            rc = seg_err(SEG_ENOMEM, "loader: %d batch slots of %zu MB", l->Q,
                         (B * (HW * 4 * (size_t)l->CH + (size_t)l->C * l->plane)) >> 20);
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
int loader_n_fg_structures(const Loader *l) { return l->n_fg; }
int loader_lr_partner(const Loader *l, int c) { return c >= 0 && c < l->C ? l->lr[c] : c; }

/* ---- one sample ---- */

/* The sample at epoch position pos: a foreground-first draw when fg, else the permutation's.
 * *st: the structure drawn (-1 for the permutation). */
static int64_t sample_at(const Loader *l, int64_t pos, int fg, int *st)
{
    *st = -1;
    if (!fg) return l->perm[pos];
    /* its own stream (not the augmentation's), a pure function of (seed, epoch, position) */
    uint64_t rs = mix(mix(l->o.seed + 0x6A09E667F3BCC909ull) ^ mix((uint64_t)l->epoch * 0xBB67AE8584CAA73Bull + (uint64_t)pos));
    const int j = (int)(next_u64(&rs) % (uint64_t)l->n_fg);
    const int64_t n = l->fg_off[j + 1] - l->fg_off[j];
    *st = l->fg_struct[j];
    return l->fg_idx[l->fg_off[j] + (int64_t)(next_u64(&rs) % (uint64_t)n)];
}

/* The augmentation of one sample. */
typedef struct Aug {
    int    flip_lr, flip_ap;
    double ca, sa;
    float  gain, bias;
} Aug;

/* Warp one slice of HU into dst (H*W normalised) under a; map (or NULL): the
 * nearest source pixel of each output pixel, or -1 outside. */
static void warp_image(const Loader *l, const int16_t *hu, float *dst, int32_t *map, const Aug *a)
{
    const int H = l->H, W = l->W;
    const double cx = (W - 1) * 0.5, cy = (H - 1) * 0.5;
    const float lo = l->o.hu_lo, hi = l->o.hu_hi, sc = 2.0f / (hi - lo);
    /* inverse map: output pixel -> rotate back about the centre -> undo the flips */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double dx = x - cx, dy = y - cy;
            double sx = a->ca * dx + a->sa * dy + cx, sy = -a->sa * dx + a->ca * dy + cy;
            if (a->flip_lr) sx = (W - 1) - sx;
            if (a->flip_ap) sy = (H - 1) - sy;
            const size_t p = (size_t)y * W + x;
            if (map) {
                int ix = (int)floor(sx + 0.5), iy = (int)floor(sy + 0.5);
                map[p] = ix >= 0 && iy >= 0 && ix < W && iy < H ? iy * W + ix : -1;
            }
            /* bilinear on clipped HU; taps outside the slice read the window's low end */
            int x0 = (int)floor(sx), y0 = (int)floor(sy);
            float fx = (float)(sx - x0), fy = (float)(sy - y0), acc = 0;
            for (int t = 0; t < 4; t++) {
                int xx = x0 + (t & 1), yy = y0 + (t >> 1);
                float v = xx >= 0 && yy >= 0 && xx < W && yy < H ? hu[(size_t)yy * W + xx] : lo;
                v = v < lo ? lo : v > hi ? hi : v;
                acc += v * ((t & 1) ? fx : 1 - fx) * ((t >> 1) ? fy : 1 - fy);
            }
            dst[p] = ((acc - lo) * sc - 1.0f) * a->gain + a->bias;
        }
}

/* The context channels other than the centre (already in img channel K): slices z-K..z+K
 * clamped to the subject, decoded image-only, a repeated slice copied from its twin. */
static int fill_context(Worker *w, const CacheSubject *subj, int z, float *img, const Aug *a)
{
    const Loader *l = w->l;
    const int K = l->o.context;
    const size_t HW = (size_t)l->H * l->W;
    for (int ch = 0; ch < l->CH; ch++) {
        const int zc = hunorm_context_z(z - K + ch, subj->n_slices);
        float *dst = img + (size_t)ch * HW;
        if (ch == K) continue;
        if (zc == z) { memcpy(dst, img + (size_t)K * HW, sizeof(float) * HW); continue; }
        if (ch > 0 && zc == hunorm_context_z(z - K + ch - 1, subj->n_slices)) { memcpy(dst, dst - HW, sizeof(float) * HW); continue; }
        TRY(cache_read_slice(w->cur, subj, zc, w->hu, NULL, NULL, 0));
        if (a) warp_image(l, w->hu, dst, NULL, a);
        else hunorm_apply(w->hu, dst, HW, l->o.hu_lo, l->o.hu_hi);
    }
    return SEG_OK;
}

/* Decode the sample of epoch position pos (a foreground-first draw when fg) into slot
 * item i, augmented when asked. */
static int fill_one(Worker *w, Slot *s, int i, int64_t pos, int fg)
{
    Loader *l = w->l;
    const int C = l->C, K = l->o.context;
    const size_t HW = (size_t)l->H * l->W;
    int st;
    const Sample sm = l->samples[sample_at(l, pos, fg, &st)];
    const CacheSubject *subj = cache_subject(l->r, sm.subject);
    float *img = s->img + (size_t)i * l->CH * HW;
    uint8_t *bits = s->bits + (size_t)i * C * l->plane, *pres = s->pres + (size_t)i * l->pbytes;
    uint8_t *lab = s->lab + (size_t)i * l->pbytes;
    s->fg[i] = st;
    if (subj->partial) memcpy(lab, subj->labelled, l->pbytes);   /* C <= CACHE_LABELLED_MAX for such caches */
    else memset(lab, 0xFF, l->pbytes);
    if (!l->o.aug) {
        TRY(cache_read_slice(w->cur, subj, sm.z, w->hu, bits, pres, 0));
        hunorm_apply(w->hu, img + (size_t)K * HW, HW, l->o.hu_lo, l->o.hu_hi);
        return K ? fill_context(w, subj, sm.z, img, NULL) : SEG_OK;
    }
    TRY(cache_read_slice(w->cur, subj, sm.z, w->hu, w->bits, w->pres, 0));
    uint64_t rs = mix(l->o.seed ^ mix((uint64_t)l->epoch * 0x9E3779B97F4A7C15ull + (uint64_t)pos));
    uint64_t r0 = next_u64(&rs);
    Aug a;
    a.flip_lr = (int)(r0 & 1);
    a.flip_ap = (int)((r0 >> 1) & 1);
    const double ang = (2 * next_unit(&rs) - 1) * l->o.rot_deg * M_PI / 180.0;
    a.gain = (float)(1 + (2 * next_unit(&rs) - 1) * l->o.int_scale);
    a.bias = (float)((2 * next_unit(&rs) - 1) * l->o.int_shift);
    a.ca = cos(ang);
    a.sa = sin(ang);
    if (st >= 0 && a.flip_lr) s->fg[i] = l->lr[st];
    if (subj->partial && a.flip_lr) {   /* the labelled set follows the left/right swap */
        memset(lab, 0, l->pbytes);
        for (int c = 0; c < C; c++)
            if (maskpack_get(subj->labelled, c)) maskpack_set(lab, l->lr[c]);
    }
    warp_image(l, w->hu, img + (size_t)K * HW, w->map, &a);
    memset(pres, 0, l->pbytes);
    for (int c = 0; c < C; c++) {
        if (!maskpack_get(w->pres, c)) continue;
        const int dc = a.flip_lr ? l->lr[c] : c;
        const uint8_t *src = w->bits + (size_t)c * l->plane;
        uint8_t *dst = bits + (size_t)dc * l->plane;
        maskpack_set(pres, dc);
        for (size_t b = 0; b < l->plane; b++) {
            uint8_t byte = 0;
            for (int k = 0; k < 8; k++) {
                int32_t q = w->map[8 * b + k];
                if (q >= 0 && maskpack_get(src, q)) byte |= (uint8_t)(1u << k);
            }
            dst[b] = byte;
        }
    }
    return K ? fill_context(w, subj, sm.z, img, &a) : SEG_OK;
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
        const int n_fg = l->o.balanced && l->n_fg > 0 ? loader_fg_slots((int)n, l->o.fg_fraction) : 0;
        int rc = SEG_OK;
        for (int i = 0; i < n && rc == SEG_OK; i++) rc = fill_one(w, s, i, first + i, i < n_fg);

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
    b->labelled = l->partial ? s->lab : NULL;
    b->fg = s->fg;
    l->holding = (int)(l->next_read % l->Q);
    l->next_read++;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return 1;
}
