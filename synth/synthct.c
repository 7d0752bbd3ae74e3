/* synth/synthct.c : the synthct command line: a synthetic CT phantom dataset in the
 * TotalSegmentator v2 layout (the anatomy and the files are in synth_phantom.c). */
#define _POSIX_C_SOURCE 200809L
#include "synth_phantom.h"
#include "util.h"
#include "cli.h"
#include "err.h"
#include "fsutil.h"
#include "progress.h"
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
#define MARKER "synthct.json"

static void usage(FILE *f)
{
    fprintf(f,
"synthct " SEG_VERSION " : write a synthetic torso CT dataset (TotalSegmentator v2 layout).\n"
"\n"
"usage: synthct [options] OUT_DIR    (or --out OUT_DIR)\n"
"\n"
"Writes OUT_DIR/s0000 ... each with ct.nii.gz (int16 HU) and segmentations/<name>.nii.gz\n"
"for all 117 TotalSegmentator 'total' structures (uint8 0/1; those the phantom does not draw\n"
"are empty), OUT_DIR/meta.csv (image_id;split, ~80/10/10) and OUT_DIR/" MARKER " (the\n"
"parameters). Subjects differ in dims, spacing, orientation, int16 scaling, body size,\n"
"position, rotation, organ placement, intensities and noise; the same seed gives the same files.\n"
"\n"
"options:\n"
"  --subjects N     number of subjects (default 12)\n"
"  --seed S         random seed, an unsigned 64-bit integer (default 1)\n"
"  --size WxHxD     nominal voxel dims, each jittered by +-10%% (default 128x128x48)\n"
"  --spacing S      fix the spacing in mm: IN_PLANExSLICE, XxYxZ or one value for all\n"
"                   (default random: in-plane 0.7-1.5, slices 1.5-5)\n"
"  --threads N      subjects generated in parallel (default 2)\n"
"  --force          write into a non-empty OUT_DIR that is not a synthct output\n"
"  -q, -v           quieter / more verbose\n"
"  -h, --help       this help;  -V, --version  the version\n"
"Options take --opt VALUE or --opt=VALUE; -- ends the options.\n"
"\n"
"example:\n"
"  synthct --subjects 20 --seed 7 --size 160x160x60 demo/dataset\n"
"\n"
"A previous synthct output in OUT_DIR is overwritten (subject folders beyond --subjects\n"
"are removed). Exit status: 0 ok, 1 runtime error, 2 usage error.\n");
}

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;
    if (!v) { fprintf(stderr, "synthct: %s needs a value\n", flag); return -1; }
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "synthct: %s: '%s' is not an integer in %ld..%ld\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* "AxBxC" into up to 3 positive numbers; returns how many, or -1. */
static int parse_triple(const char *v, double out[3], int integer)
{
    int n = 0;
    const char *p = v;
    while (n < 3) {
        char *end;
        errno = 0;
        double x = strtod(p, &end);
        if (errno || end == p || !(x > 0) || (integer && x != (double)(long)x)) return -1;
        out[n++] = x;
        if (*end == 0) return n;
        if (*end != 'x' && *end != 'X') return -1;
        p = end + 1;
    }
    return -1;
}

/* ---- output directory ------------------------------------------------------------------ */
static int is_subject_name(const char *s, long *idx)
{
    if (s[0] != 's' || strlen(s) < 5) return 0;
    for (const char *c = s + 1; *c; c++) if (*c < '0' || *c > '9') return 0;
    *idx = strtol(s + 1, NULL, 10);
    return 1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path) != 0 ? -1 : 0;
}

/* Create OUT_DIR or check that it may be overwritten; remove stale subject folders of a
 * previous synthct output. */
static int prepare_out(const char *out, int n_subjects, int force)
{
    TRY(fs_mkdirs(out));
    char marker[4096];
    TRY(fs_join(marker, sizeof marker, out, MARKER));
    int ours = fs_is_file(marker);
    DIR *d = opendir(out);
    if (!d) return seg_err(SEG_EIO, "%s: %s", out, strerror(errno));
    struct dirent *e;
    int n_other = 0, rc = SEG_OK;
    char path[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        long idx;
        if (ours && is_subject_name(e->d_name, &idx) && idx >= n_subjects) {
            if ((rc = fs_join(path, sizeof path, out, e->d_name)) < 0) break;
            if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
                rc = seg_err(SEG_EIO, "%s: cannot remove the stale subject folder: %s", path, strerror(errno));
                break;
            }
        }
        n_other++;
    }
    closedir(d);
    if (rc < 0) return rc;
    if (n_other && !ours && !force)
        return seg_err(SEG_EARG, "%s: not empty and not a synthct output (no %s); use --force to write into it",
                       out, MARKER);
    return SEG_OK;
}

static int write_marker(const char *out, const SynthOptions *o, uint64_t seed, int n)
{
    char path[4096], buf[1024];
    TRY(fs_join(path, sizeof path, out, MARKER));
    int len = snprintf(buf, sizeof buf,
        "{\n  \"generator\": \"synthct\",\n  \"version\": \"%s\",\n  \"seed\": %" PRIu64 ",\n  \"subjects\": %d,\n"
        "  \"size\": [%d, %d, %d],\n  \"spacing\": [%g, %g, %g]\n}\n",
        SEG_VERSION, seed, n, o->size[0], o->size[1], o->size[2], o->spacing[0], o->spacing[1], o->spacing[2]);
    return fs_write_atomic(path, buf, (size_t)len);
}

static int write_meta(const char *out, uint64_t seed, int n)
{
    static const char *const names[3] = { "train", "val", "test" };
    char path[4096];
    TRY(fs_join(path, sizeof path, out, "meta.csv"));
    int *split = malloc(sizeof(int) * (size_t)n);
    char *buf = malloc(32 + 24 * (size_t)n);
    if (!split || !buf) { free(split); free(buf); return seg_err(SEG_ENOMEM, "meta.csv: %d subjects", n); }
    synth_split(n, seed, split);
    size_t len = (size_t)sprintf(buf, "image_id;split\n");
    for (int i = 0; i < n; i++) len += (size_t)sprintf(buf + len, "s%04d;%s\n", i, names[split[i]]);
    int rc = fs_write_atomic(path, buf, len);
    free(split); free(buf);
    return rc;
}

/* ---- workers ------------------------------------------------------------------------- */
typedef struct Job {
    const SynthOptions *o;
    const char *out;
    uint64_t seed;
    int n, next, done, failed, lines;
    char errmsg[1200];
    Progress prog;
    pthread_mutex_t mu;
} Job;

static void *worker(void *arg)
{
    Job *J = arg;
    for (;;) {
        pthread_mutex_lock(&J->mu);
        int i = J->failed ? J->n : J->next++;
        pthread_mutex_unlock(&J->mu);
        if (i >= J->n) return NULL;
        char name[32], dir[4096];
        snprintf(name, sizeof name, "s%04d", i);
        SynthGeometry g;
        int drawn = 0, rc = fs_join(dir, sizeof dir, J->out, name);
        if (rc == SEG_OK) rc = synth_make_subject(J->o, J->seed, i, dir, &g, &drawn);
        pthread_mutex_lock(&J->mu);
        if (rc < 0) {
            if (!J->failed) snprintf(J->errmsg, sizeof J->errmsg, "%s: %s", name, seg_errmsg()[0] ? seg_errmsg() : seg_strerror(rc));
            J->failed = 1;
        } else {
            J->done++;
            char extra[200];
            snprintf(extra, sizeof extra, "%s %s %" PRId64 "x%" PRId64 "x%" PRId64 " %.2fx%.2fx%.2f mm, scl %g/%g, %d structures",
                     name, g.orient, g.dim[0], g.dim[1], g.dim[2], g.spacing[0], g.spacing[1], g.spacing[2],
                     g.slope, g.inter, drawn);
            if (J->lines) {
                if (J->prog.tty && J->prog.drawn) fprintf(stderr, "\r\033[K");
                fprintf(stderr, "synthct: [%d/%d] %s\n", J->done, J->n, extra);
                J->prog.drawn = 0;
            }
            if (J->prog.tty) progress_update(&J->prog, J->done, name);
        }
        pthread_mutex_unlock(&J->mu);
    }
}

int main(int argc, char **argv)
{
    SynthOptions o;
    synth_default_options(&o);
    long n = 12, threads = 2;
    uint64_t seed = 1;
    int force = 0, verbosity = 2;
    const char *out = NULL;
    CliArgs c;
    const char *a, *next;
    cli_start(&c, "synthct", argc, argv);
    while (cli_next(&c, &a, &next)) {
        if (c.positional) {
            if (out) { fprintf(stderr, "synthct: too many arguments (see synthct --help)\n"); return EXIT_USAGE; }
            out = a;
        }
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return EXIT_OK; }
        else if (!strcmp(a, "-V") || !strcmp(a, "--version")) { printf("synthct %s\n", SEG_VERSION); return EXIT_OK; }
        else if (!strcmp(a, "-q")) verbosity--;
        else if (!strcmp(a, "-v")) verbosity++;
        else if (!strcmp(a, "--force")) force = 1;
        else if (!strcmp(a, "--out")) {
            if (!next) goto missing;
            if (out) { fprintf(stderr, "synthct: OUT_DIR given twice (see synthct --help)\n"); return EXIT_USAGE; }
            out = next; cli_take(&c);
        }
        else if (!strcmp(a, "--subjects")) { if (parse_long(a, next, 1, 99999, &n) < 0) return EXIT_USAGE; cli_take(&c); }
        else if (!strcmp(a, "--threads")) { if (parse_long(a, next, 1, 256, &threads) < 0) return EXIT_USAGE; cli_take(&c); }
        else if (!strcmp(a, "--seed")) {
            char *end;
            if (!next) goto missing;
            errno = 0;
            unsigned long long s = strtoull(next, &end, 0);
            if (errno || *end || end == next || next[0] == '-') {
                fprintf(stderr, "synthct: --seed: '%s' is not an unsigned integer\n", next);
                return EXIT_USAGE;
            }
            seed = s; cli_take(&c);
        } else if (!strcmp(a, "--size")) {
            double t[3];
            if (!next) goto missing;
            if (parse_triple(next, t, 1) != 3 || t[0] < 8 || t[1] < 8 || t[2] < 4 || t[0] > 2048 || t[1] > 2048 || t[2] > 2048) {
                fprintf(stderr, "synthct: --size: '%s' is not WxHxD (8..2048 in-plane, 4..2048 slices)\n", next);
                return EXIT_USAGE;
            }
            for (int k = 0; k < 3; k++) o.size[k] = (int)t[k];
            cli_take(&c);
        } else if (!strcmp(a, "--spacing")) {
            double t[3];
            if (!next) goto missing;
            int k = parse_triple(next, t, 0);
            if (k < 1 || t[0] > 50 || (k > 1 && t[1] > 50) || (k > 2 && t[2] > 50)) {
                fprintf(stderr, "synthct: --spacing: '%s' is not S, IN_PLANExSLICE or XxYxZ (mm, 0 < s <= 50)\n", next);
                return EXIT_USAGE;
            }
            if (k == 1) o.spacing[0] = o.spacing[1] = o.spacing[2] = t[0];
            else if (k == 2) { o.spacing[0] = o.spacing[1] = t[0]; o.spacing[2] = t[1]; }
            else for (int c = 0; c < 3; c++) o.spacing[c] = t[c];
            cli_take(&c);
        }
        else return cli_unknown(&c);
        continue;
    missing:
        return cli_missing(&c, a);
    }
    if (c.failed) return EXIT_USAGE;
    if (!out) { usage(stderr); return EXIT_USAGE; }

    double t0 = util_now_s();
    int rc;
    if ((rc = prepare_out(out, (int)n, force)) < 0 || (rc = write_marker(out, &o, seed, (int)n)) < 0) {
        fprintf(stderr, "synthct: %s\n", seg_errmsg());
        return EXIT_RUNTIME;
    }
    Job J;
    memset(&J, 0, sizeof J);
    J.o = &o; J.out = out; J.seed = seed; J.n = (int)n;
    pthread_mutex_init(&J.mu, NULL);
    progress_start(&J.prog, "synthct", "subjects", n, verbosity >= 2, -1);
    J.lines = verbosity >= 3 || (verbosity >= 2 && !J.prog.tty);
    if (threads > n) threads = n;
    pthread_t tid[256];
    int started = 0;
    for (int t = 0; t < threads; t++) {
        if (pthread_create(&tid[t], NULL, worker, &J) != 0) break;
        started++;
    }
    if (started == 0) worker(&J);   /* no thread could start: do the work here */
    for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
    pthread_mutex_destroy(&J.mu);
    if (J.failed) {
        if (J.prog.tty && J.prog.drawn) fputc('\n', stderr);
        fprintf(stderr, "synthct: %s\n", J.errmsg);
        return EXIT_RUNTIME;
    }
    if ((rc = write_meta(out, seed, (int)n)) < 0) {
        fprintf(stderr, "synthct: %s\n", seg_errmsg());
        return EXIT_RUNTIME;
    }
    if (J.prog.tty && J.prog.drawn) progress_finish(&J.prog, NULL);
    if (verbosity >= 2)
        fprintf(stderr, "synthct: %d subject%s in %s (seed %" PRIu64 ", %d thread%s, %.1f s)\n", J.n, J.n == 1 ? "" : "s",
                out, seed, started ? started : 1, started > 1 ? "s" : "", util_now_s() - t0);
    return EXIT_OK;
}
