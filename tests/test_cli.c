/* tests/test_cli.c : common/cli, the argument conventions of every program: --opt value and
 * --opt=value alike, "--" ends the options, a flag given a value and an unknown option are
 * usage errors, values that look like options ("-1000,1000") are taken, and
 * cli_refuse_unused names the first option a subcommand does not use. */
#include "cli.h"
#include "testutil.h"
#include <stdio.h>
#include <string.h>

typedef struct Parsed { int force, n_pos, failed, rc; const char *size, *window, *pos[8]; } Parsed;

/* a tiny program: --force (flag), --size V, --hu-window V, positionals */
static Parsed parse(int argc, const char **args)
{
    Parsed p;
    memset(&p, 0, sizeof p);
    char *argv[16];
    for (int i = 0; i < argc; i++) argv[i] = (char *)args[i];
    CliArgs c;
    const char *a, *next;
    cli_start(&c, "prog", argc, argv);
    while (cli_next(&c, &a, &next)) {
        if (c.positional) p.pos[p.n_pos++] = a;
        else if (!strcmp(a, "--force")) p.force = 1;
        else if (!strcmp(a, "--size")) { if (!next) { p.rc = cli_missing(&c, a); break; } p.size = next; cli_take(&c); }
        else if (!strcmp(a, "--hu-window")) { if (!next) { p.rc = cli_missing(&c, a); break; } p.window = next; cli_take(&c); }
        else { p.rc = cli_unknown(&c); break; }
    }
    p.failed = c.failed;
    return p;
}

int main(void)
{
    Parsed a = parse(5, (const char *[]){ "prog", "--size", "64", "in", "out" });
    Parsed b = parse(4, (const char *[]){ "prog", "--size=64", "in", "out" });
    CHECK(a.size && b.size && !strcmp(a.size, "64") && !strcmp(b.size, "64") && a.n_pos == 2 && b.n_pos == 2 &&
          !strcmp(b.pos[0], "in") && !strcmp(b.pos[1], "out") && !a.failed && !b.failed, "--size 64 == --size=64");
    Parsed c = parse(3, (const char *[]){ "prog", "--size=", "x" });
    CHECK(c.size && !strcmp(c.size, "") && c.n_pos == 1, "--size= gives an empty value, the next argument stays positional");
    Parsed d = parse(5, (const char *[]){ "prog", "--force", "--", "--size", "-x" });
    CHECK(d.force && !d.size && d.n_pos == 2 && !strcmp(d.pos[0], "--size") && !strcmp(d.pos[1], "-x") && !d.failed,
          "-- ends the options");
    Parsed e = parse(3, (const char *[]){ "prog", "--force=1", "x" });
    CHECK(e.failed && e.n_pos == 0, "a flag given a value is refused");
    Parsed f = parse(3, (const char *[]){ "prog", "--frobnicate", "x" });
    CHECK(f.failed && f.rc == 2, "an unknown option is refused (exit 2)");
    Parsed g = parse(3, (const char *[]){ "prog", "--hu-window", "-1000,1000" });
    CHECK(g.window && !strcmp(g.window, "-1000,1000") && !g.failed && g.n_pos == 0, "a value starting with '-' is taken");
    Parsed h = parse(2, (const char *[]){ "prog", "--size" });
    CHECK(h.failed && h.rc == 2, "a missing value is refused");
    Parsed i = parse(3, (const char *[]){ "prog", "-", "--force" });
    CHECK(i.n_pos == 1 && !strcmp(i.pos[0], "-") && i.force, "'-' alone is positional");

    char *argv[] = { "prog", "stat", "--check", "d", "-q", "--threads=2", NULL };
    CliArgs cl;
    const char *x, *nx;
    cli_start(&cl, "prog", 6, argv);
    while (cli_next(&cl, &x, &nx))
        if (!cl.positional && strcmp(x, "-q")) cli_take(&cl);
    static const char *const stat_ok[] = { "--check", NULL }, *const both[] = { "--check", "--threads", NULL };
    CHECK(cli_given(&cl, "--threads") && cli_given(&cl, "--check") && !cli_given(&cl, "--size"), "cli_given");
    CHECK(cli_refuse_unused(&cl, "stat", stat_ok) == 2, "--threads refused where the subcommand does not use it");
    CHECK(cli_refuse_unused(&cl, "stat", both) == 0, "all given options allowed (-q always is)");
    long v;
    double dv;
    CHECK(cli_long(&cl, "--n", "12", 1, 20, &v) == 0 && v == 12 && cli_long(&cl, "--n", "21", 1, 20, &v) < 0 &&
          cli_long(&cl, "--n", "1x", 1, 20, &v) < 0 && cli_long(&cl, "--n", NULL, 1, 20, &v) < 0, "cli_long ranges");
    CHECK(cli_double(&cl, "--x", "0.5", 0, 1, &dv) == 0 && dv == 0.5 && cli_double(&cl, "--x", "nan", 0, 1, &dv) < 0,
          "cli_double ranges");
    return t_report("test_cli");
}
