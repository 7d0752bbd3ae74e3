/* common/cli.c : argv walking with --opt=value, "--", refused unused options. */
#include "cli.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_start(CliArgs *c, const char *prog, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    c->argc = argc;
    c->argv = argv;
    c->prog = prog;
    c->i = 0;
    c->took = 0;
}

static int fail(CliArgs *c)
{
    c->failed = 1;
    return 0;
}

int cli_next(CliArgs *c, const char **a, const char **next)
{
    if (c->failed) return 0;
    if (c->i > 0 && !c->positional) {           /* finish the previous option */
        if (c->inline_val && !c->took) {
            fprintf(stderr, "%s: %s takes no value ('%s=%s'; see %s --help)\n", c->prog, c->name, c->name,
                    c->inline_val, c->prog);
            return fail(c);
        }
        if (!c->inline_val && c->took) c->i++;
    }
    c->i++;
    c->positional = 0;
    c->took = 0;
    c->inline_val = NULL;
    if (c->i < c->argc && !c->ended && !strcmp(c->argv[c->i], "--")) { c->ended = 1; c->i++; }
    if (c->i >= c->argc) return 0;
    const char *s = c->argv[c->i];
    if (c->ended || s[0] != '-' || !s[1]) {     /* "-" alone is positional (stdin by convention) */
        c->positional = 1;
        *a = s;
        *next = NULL;
        return 1;
    }
    const char *eq = s[1] == '-' ? strchr(s, '=') : NULL;
    size_t n = eq ? (size_t)(eq - s) : strlen(s);
    if (n >= sizeof c->name) n = sizeof c->name - 1;
    memcpy(c->name, s, n);
    c->name[n] = 0;
    if (eq) c->inline_val = eq + 1;
    if (c->n_seen < CLI_MAX_SEEN) snprintf(c->seen[c->n_seen++], sizeof c->seen[0], "%s", c->name);
    *a = c->name;
    *next = eq ? c->inline_val : (c->i + 1 < c->argc ? c->argv[c->i + 1] : NULL);
    return 1;
}

void cli_take(CliArgs *c) { c->took = 1; }

int cli_unknown(CliArgs *c)
{
    fprintf(stderr, "%s: unknown option '%s' (see %s --help)\n", c->prog, c->name, c->prog);
    c->failed = 1;
    return 2;
}

int cli_missing(CliArgs *c, const char *opt)
{
    fprintf(stderr, "%s: %s needs a value (see %s --help)\n", c->prog, opt, c->prog);
    c->failed = 1;
    return 2;
}

int cli_given(const CliArgs *c, const char *name)
{
    for (int k = 0; k < c->n_seen; k++)
        if (!strcmp(c->seen[k], name)) return 1;
    return 0;
}

int cli_refuse_unused(const CliArgs *c, const char *sub, const char *const *allowed)
{
    static const char *const always[] = { "-q", "-v", "-h", "--help", "-V", "--version", "--progress", "--no-progress", NULL };
    for (int k = 0; k < c->n_seen; k++) {
        int ok = 0;
        for (int j = 0; !ok && always[j]; j++) ok = !strcmp(c->seen[k], always[j]);
        for (int j = 0; !ok && allowed && allowed[j]; j++) ok = !strcmp(c->seen[k], allowed[j]);
        if (!ok) {
            fprintf(stderr, "%s %s: %s is not an option of %s (see %s %s --help)\n", c->prog, sub, c->seen[k], sub,
                    c->prog, sub);
            return 2;
        }
    }
    return 0;
}

int cli_long(const CliArgs *c, const char *opt, const char *v, long lo, long hi, long *out)
{
    if (!v) { fprintf(stderr, "%s: %s needs a value (see %s --help)\n", c->prog, opt, c->prog); return -1; }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "%s: %s: '%s' is not an integer in %ld..%ld\n", c->prog, opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_double(const CliArgs *c, const char *opt, const char *v, double lo, double hi, double *out)
{
    if (!v) { fprintf(stderr, "%s: %s needs a value (see %s --help)\n", c->prog, opt, c->prog); return -1; }
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "%s: %s: '%s' is not a number in [%g, %g]\n", c->prog, opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}
