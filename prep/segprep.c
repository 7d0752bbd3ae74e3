/* prep/segprep.c : the segprep command line. */
#include "prep.h"
#include "cli.h"
#include "err.h"
#include "nii.h"
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fprintf(f,
"segprep " SEG_VERSION " : build the slice cache segtrain and segeval read.\n"
"\n"
"usage:\n"
"  segprep [options] DATASET_DIR CACHE_DIR    decode, reorient, resample, pack, store\n"
"                                             (CACHE_DIR may be given as --out CACHE_DIR)\n"
"  segprep stat CACHE_DIR [--check DATASET_DIR]  JSON summary on stdout; --check: which\n"
"                                             subjects are unchanged, changed, moved split,\n"
"                                             new or gone (nothing is written)\n"
"  segprep verify CACHE_DIR                   re-read every record and check its checksum\n"
"  segprep export CACHE_DIR SUBJECT OUT_DIR   cached slices back to NIfTI (ct.nii.gz + segmentations/)\n"
"  segprep SUBCOMMAND --help                  that subcommand's help\n"
"\n"
"DATASET_DIR holds one folder per subject (s0000/ ...) with ct.nii.gz and\n"
"segmentations/<structure>.nii.gz (TotalSegmentator v2 layout), optionally meta.csv\n"
"(';'-separated, columns image_id and split = train|val|test).\n"
"\n"
"options:\n"
"  --size N        slice side after resampling (default 256; a multiple of 8)\n"
"  --labels FILE   channel order: label_map.json, a JSON array or one name per line\n"
"                  (default: TotalSegmentator's v2 order when the masks are its 117\n"
"                  structures, else the sorted mask names of the first subject)\n"
"  --split FILE    meta.csv giving each subject's split (default DATASET_DIR/meta.csv,\n"
"                  else a deterministic 80/10/10 split by a hash of the subject id;\n"
"                  datasets of fewer than 10 subjects go to train whole)\n"
"  --threads N     worker threads (default: all cores)\n"
"  --limit N       process only the first N subjects\n"
"  --level N       zstd level of the records (default 1)\n"
"  --force         redo subjects that are already in the cache\n"
"  --strict        stop at the first subject that fails\n"
"  --prune         remove cached subjects whose folder is gone from the dataset\n"
"                  (without it they are reported and kept)\n"
"  --missing-masks M  error (default): a subject lacking some mask files fails, every\n"
"                  missing name listed; empty: it is cached partly labelled, the\n"
"                  missing structures unknown (never counted as negatives in training\n"
"                  or scoring), e.g. a CTA with only its vessels labelled\n"
"  --max-voxels N  refuse volumes with more voxels (default 2^31; env SEGKIT_MAX_VOXELS)\n"
"  --progress      force the progress bar; --no-progress for plain lines\n"
"  -q, -v          quieter / more verbose\n"
"  -h, --help      this help;  -V, --version  the version\n"
"Options take --opt VALUE or --opt=VALUE; -- ends the options.\n"
"\n"
"example:\n"
"  segprep data/Totalsegmentator_dataset_v201 cache/ts256 --threads 8\n"
"\n"
"exit status: 0 ok, 1 runtime error, 2 usage error or some subjects failed.\n");
}

static int parse_int(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;
    if (!v) { fprintf(stderr, "segprep: %s needs a value\n", flag); return -1; }
    long x = strtol(v, &end, 10);
    if (*end || end == v || x < lo || x > hi) {
        fprintf(stderr, "segprep: %s: '%s' is not an integer in %ld..%ld\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* The subcommand pos names ("stat", "verify", "export"), or NULL for a preparation run. */
static const char *sub_name(const char *pos)
{
    static const char *const subs[] = { "stat", "verify", "export", NULL };
    for (int k = 0; subs[k]; k++)
        if (!strcmp(pos, subs[k])) return subs[k];
    return NULL;
}

static void sub_usage(FILE *f, const char *sub)
{
    if (!strcmp(sub, "stat"))
        fprintf(f, "usage: segprep stat CACHE_DIR [--check DATASET_DIR] [--split FILE]\n"
                   "A JSON summary of the cache on stdout (subjects, slices, splits, size, labels, bytes).\n"
                   "--check DATASET_DIR: also compare it with the dataset: which subjects are unchanged,\n"
                   "changed, moved split, new or gone, and whether the cache is up to date. Writes nothing.\n"
                   "example:\n  segprep stat demo/cache --check demo/dataset\n");
    else if (!strcmp(sub, "verify"))
        fprintf(f, "usage: segprep verify CACHE_DIR [--threads N]\n"
                   "Re-read and decompress every record and check its checksum; exit 1 naming the first bad one.\n"
                   "example:\n  segprep verify demo/cache\n");
    else
        fprintf(f, "usage: segprep export CACHE_DIR SUBJECT OUT_DIR    (or --out OUT_DIR)\n"
                   "Write a cached subject's slices back to NIfTI: OUT_DIR/ct.nii.gz and\n"
                   "OUT_DIR/segmentations/<structure>.nii.gz, on the cache's resampled grid.\n"
                   "example:\n  segprep export demo/cache s0003 --out /tmp/s0003\n");
}

/* Messages already name the file; what (may be NULL) names the subcommand. */
static int fail(const char *what, int rc)
{
    fprintf(stderr, "segprep: %s%s%s\n", what ? what : "", what ? ": " : "", seg_errmsg()[0] ? seg_errmsg() : seg_strerror(rc));
    return EXIT_RUNTIME;
}

int main(int argc, char **argv)
{
    /* keep freed volumes in the heap: fresh pages cost a fault each on this kind of VM */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    PrepOptions o;
    prep_default_options(&o);
    const char *check_dataset = NULL, *out = NULL;
    const char *pos[4];
    int npos = 0;
    long v;
    CliArgs c;
    const char *a, *next;
    int help = 0;
    cli_start(&c, "segprep", argc, argv);
    while (cli_next(&c, &a, &next)) {
        if (c.positional) { if (npos == 4) { fprintf(stderr, "segprep: too many arguments (see segprep --help)\n"); return EXIT_USAGE; } pos[npos++] = a; }
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) help = 1;
        else if (!strcmp(a, "-V") || !strcmp(a, "--version")) { printf("segprep %s\n", SEG_VERSION); return EXIT_OK; }
        else if (!strcmp(a, "-q")) o.verbosity--;
        else if (!strcmp(a, "-v")) o.verbosity++;
        else if (!strcmp(a, "--force")) o.force = 1;
        else if (!strcmp(a, "--strict")) o.strict = 1;
        else if (!strcmp(a, "--prune")) o.prune = 1;
        else if (!strcmp(a, "--out")) { if (!next) goto missing; out = next; cli_take(&c); }
        else if (!strcmp(a, "--check")) { if (!next) goto missing; check_dataset = next; cli_take(&c); }
        else if (!strcmp(a, "--progress")) o.progress_tty = 1;
        else if (!strcmp(a, "--no-progress")) o.progress_tty = 0;
        else if (!strcmp(a, "--size")) {
            if (parse_int(a, next, 8, 8192, &v) < 0) return EXIT_USAGE;
            if (v % 8) { fprintf(stderr, "segprep: --size must be a multiple of 8\n"); return EXIT_USAGE; }
            o.size = (int)v; cli_take(&c);
        } else if (!strcmp(a, "--threads")) { if (parse_int(a, next, 1, 256, &v) < 0) return EXIT_USAGE; o.threads = (int)v; cli_take(&c); }
        else if (!strcmp(a, "--limit")) { if (parse_int(a, next, 1, 1L << 30, &v) < 0) return EXIT_USAGE; o.limit = (int)v; cli_take(&c); }
        else if (!strcmp(a, "--level")) { if (parse_int(a, next, 1, 19, &v) < 0) return EXIT_USAGE; o.zstd_level = (int)v; cli_take(&c); }
        else if (!strcmp(a, "--max-voxels")) {
            if (parse_int(a, next, 1, 0x7fffffffffffffffL, &v) < 0) return EXIT_USAGE;
            nii_set_max_voxels(v); cli_take(&c);
        }
        else if (!strcmp(a, "--labels")) { if (!next) goto missing; o.labels_file = next; cli_take(&c); }
        else if (!strcmp(a, "--split")) { if (!next) goto missing; o.split_file = next; cli_take(&c); }
        else if (!strcmp(a, "--missing-masks")) {
            if (!next) goto missing;
            if (strcmp(next, "error") && strcmp(next, "empty")) {
                fprintf(stderr, "segprep: --missing-masks: '%s' is not error or empty\n", next);
                return EXIT_USAGE;
            }
            o.missing_empty = !strcmp(next, "empty"); cli_take(&c);
        }
        else return cli_unknown(&c);
        continue;
    missing:
        return cli_missing(&c, a);
    }
    if (c.failed) return EXIT_USAGE;
    const char *sub = npos ? sub_name(pos[0]) : NULL;
    if (help) { sub ? sub_usage(stdout, sub) : usage(stdout); return EXIT_OK; }
    if (npos == 0 && !out) { usage(stderr); return EXIT_USAGE; }
    if (sub) {                                   /* refuse what this subcommand does not use */
        static const char *const stat_opts[] = { "--check", "--split", NULL }, *const verify_opts[] = { "--threads", NULL },
                                 *const export_opts[] = { "--out", NULL };
        const char *const *allowed = !strcmp(sub, "stat") ? stat_opts : !strcmp(sub, "verify") ? verify_opts : export_opts;
        if (cli_refuse_unused(&c, sub, allowed)) return EXIT_USAGE;
    } else if (check_dataset) {
        fprintf(stderr, "segprep: --check belongs to segprep stat (see segprep stat --help)\n");
        return EXIT_USAGE;
    }
    if (out) {                                   /* --out OUT: the last positional argument */
        if (npos == 4) { fprintf(stderr, "segprep: too many arguments (see segprep --help)\n"); return EXIT_USAGE; }
        pos[npos++] = out;
    }
    int rc;
    if (!strcmp(pos[0], "stat")) {
        if (npos != 2) { fprintf(stderr, "segprep: usage: segprep stat CACHE_DIR [--check DATASET_DIR]\n"); return EXIT_USAGE; }
        rc = check_dataset ? prep_check(pos[1], check_dataset, o.split_file, stdout) : prep_stat(pos[1], stdout);
        return rc < 0 ? fail("stat", rc) : EXIT_OK;
    }
    if (!strcmp(pos[0], "verify")) {
        if (npos != 2) { fprintf(stderr, "segprep: usage: segprep verify CACHE_DIR\n"); return EXIT_USAGE; }
        rc = prep_verify(pos[1], o.threads, o.verbosity);
        return rc < 0 ? fail("verify", rc) : EXIT_OK;
    }
    if (!strcmp(pos[0], "export")) {
        if (npos != 4) { fprintf(stderr, "segprep: usage: segprep export CACHE_DIR SUBJECT OUT_DIR\n"); return EXIT_USAGE; }
        rc = prep_export(pos[1], pos[2], pos[3], o.verbosity);
        return rc < 0 ? fail("export", rc) : EXIT_OK;
    }
    if (npos != 2) { fprintf(stderr, "segprep: expected DATASET_DIR CACHE_DIR (see segprep --help)\n"); return EXIT_USAGE; }
    PrepStats st;
    rc = prep_run(pos[0], pos[1], &o, &st);
    if (rc < 0) return fail(NULL, rc);
    char partial[48] = "";
    if (st.n_partial) snprintf(partial, sizeof partial, " (%d partly labelled)", st.n_partial);
    if (o.verbosity >= 2 && (st.n_replaced || st.n_split_changed || st.n_gone || st.n_folders_skipped || st.n_split_unmatched))
        fprintf(stderr, "segprep: %d re-prepped (files changed), %d split(s) updated, %d gone from the dataset (%s), %d "
                "folder(s) without a CT skipped, %d split-file id(s) without a folder\n", st.n_replaced, st.n_split_changed,
                st.n_gone, o.prune ? "removed" : "kept", st.n_folders_skipped, st.n_split_unmatched);
    if (o.verbosity >= 2)
        fprintf(stderr, "segprep: %d subjects: %d written%s, %d already cached, %d failed; %lld slices in %.2f s "
                "(%.1f subjects/s, %.0f slices/s); %.0f bytes per slice\n",
                st.n_subjects, st.n_done, partial, st.n_skipped, st.n_failed, (long long)st.n_slices, st.seconds,
                st.seconds > 0 ? st.n_done / st.seconds : 0, st.seconds > 0 ? st.n_slices / st.seconds : 0,
                st.n_slices ? (double)st.bytes_out / (double)st.n_slices : 0);
    return st.n_failed ? EXIT_USAGE : EXIT_OK;
}
