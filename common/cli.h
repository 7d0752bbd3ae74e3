/* common/cli.h : the command-line conventions every segkit program shares, in one place.
 *   --opt value  and  --opt=value    the same
 *   --                               ends the options: what follows is positional, even "-x"
 *   -q / -v                          quieter / more verbose (each program counts them)
 *   a flag given a value (--force=1) is refused; so is an option a subcommand does not use
 *   (cli_refuse_unused), never silently ignored.
 * A program walks its arguments with cli_next and keeps its own table of options:
 *
 *   CliArgs c; const char *a, *next;
 *   cli_start(&c, "segprep", argc, argv);
 *   while (cli_next(&c, &a, &next)) {
 *       if (c.positional) pos[npos++] = a;
 *       else if (!strcmp(a, "--force")) force = 1;
 *       else if (!strcmp(a, "--size")) { if (!next) ...; size = atoi(next); cli_take(&c); }
 *       else return cli_unknown(&c);
 *   }
 *   if (c.failed) return 2;
 */
#ifndef SEG_CLI_H
#define SEG_CLI_H

#define CLI_MAX_SEEN 64

typedef struct CliArgs {
    int          argc;
    char       **argv;
    const char  *prog;           /* program name for messages, e.g. "segeval" */
    int          i;              /* index of the current argument in argv */
    int          ended;          /* "--" seen */
    int          positional;     /* the current argument is positional (a is the argument) */
    int          took;           /* the current option consumed its value (cli_take) */
    int          failed;         /* a usage error was printed; stop and exit 2 */
    const char  *inline_val;     /* the value of --opt=value, else NULL */
    char         name[64];       /* the current option's name (without "=value") */
    int          n_seen;
    char         seen[CLI_MAX_SEEN][40];   /* option names given, in order (for cli_refuse_unused) */
} CliArgs;

/* Start walking argv[1..argc-1]; prog names the program in error messages. */
void cli_start(CliArgs *c, const char *prog, int argc, char **argv);
/* Next argument: *a = an option's name ("--size", "-q"; "--size=8" gives "--size") or a
 * positional argument (c->positional = 1); *next = the option's value (the text after '='
 * or the following argument; NULL when there is none). Returns 0 at the end, and on a
 * usage error (c->failed = 1, message printed: a flag given "=value"). */
int  cli_next(CliArgs *c, const char **a, const char **next);
/* The current option used *next as its value (skips it when it was the following argument). */
void cli_take(CliArgs *c);
/* Print "PROG: unknown option 'X' (see PROG --help)", set failed; returns 2 (EXIT_USAGE). */
int  cli_unknown(CliArgs *c);
/* Print "PROG: OPT needs a value (see PROG --help)", set failed; returns 2. */
int  cli_missing(CliArgs *c, const char *opt);
/* Was option name given on the command line? */
int  cli_given(const CliArgs *c, const char *name);
/* Refuse every option given that is not in allowed (NULL-terminated names) nor in the
 * options every subcommand takes (-q -v -h --help -V --version --progress --no-progress):
 * "PROG SUB: --nsd-tol is not an option of SUB (see PROG SUB --help)". Returns 0 when all
 * are allowed, else 2 with the message printed. */
int  cli_refuse_unused(const CliArgs *c, const char *sub, const char *const *allowed);

/* Numbers with range checks; a NULL v is "needs a value". Each prints
 * "PROG: OPT: 'V' is not an integer in LO..HI" (or a number in [LO, HI]) and returns -1. */
int  cli_long(const CliArgs *c, const char *opt, const char *v, long lo, long hi, long *out);
int  cli_double(const CliArgs *c, const char *opt, const char *v, double lo, double hi, double *out);

#endif
