/* common/progress.c : TTY bar or plain log lines. */
#define _POSIX_C_SOURCE 200809L
#include "progress.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

void progress_start(Progress *p, const char *label, const char *unit, int64_t total, int enabled, int tty)
{
    p->label = label; p->unit = unit; p->total = total; p->done = 0;
    p->t_start = p->t_last_draw = util_now_s();
    p->tty = tty < 0 ? isatty(fileno(stderr)) : tty;
    p->enabled = enabled; p->drawn = 0;
}

int progress_columns(void)
{
    struct winsize ws;
    if (ioctl(fileno(stderr), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    const char *c = getenv("COLUMNS");
    long n = c ? strtol(c, NULL, 10) : 0;
    return n >= 20 && n <= 1000 ? (int)n : 80;
}

static void fmt_time(char *buf, size_t n, double s)
{
    if (s < 0 || s > 1e7) { snprintf(buf, n, "--:--"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

static void draw(Progress *p, const char *extra, int final)
{
    double now = util_now_s(), el = now - p->t_start;
    double rate = el > 0 ? (double)p->done / el : 0;
    char eta[32], elapsed[32];
    fmt_time(elapsed, sizeof elapsed, el);
    fmt_time(eta, sizeof eta, (p->total > 0 && rate > 0) ? (double)(p->total - p->done) / rate : -1);
    if (p->tty) {
        /* one line that never wraps: the bar shrinks (30 down to 10 cells, then none) and
         * the line is cut to the terminal's width - 1 */
        char right[512], line[1024], bar[31];
        snprintf(right, sizeof right, " %lld/%lld %s  %.2f %s/s  %s  ETA %s%s%s", (long long)p->done,
                 (long long)p->total, p->unit, rate, p->unit, elapsed, final ? "00:00" : eta, extra ? "  " : "",
                 extra ? extra : "");
        const int cols = progress_columns(), room = cols - 1 - (int)strlen(p->label) - 3 - (int)strlen(right);
        int w = room > 30 ? 30 : room;
        if (w >= 10 && p->total > 0) {
            int fill = (int)(w * (double)p->done / (double)p->total);
            for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
            bar[w] = 0;
            snprintf(line, sizeof line, "%s [%s]%s", p->label, bar, right);
        } else {
            snprintf(line, sizeof line, "%s%s", p->label, right);
        }
        if (cols > 1 && (int)strlen(line) > cols - 1) line[cols - 1] = 0;
        fprintf(stderr, "\r\033[K%s", line);
        if (final) fputc('\n', stderr);
    } else {
        fprintf(stderr, "%s: %lld/%lld %s, %.2f %s/s, elapsed %s, ETA %s%s%s\n",
                p->label, (long long)p->done, (long long)p->total, p->unit, rate, p->unit,
                elapsed, final ? "00:00" : eta, extra ? ", " : "", extra ? extra : "");
    }
    fflush(stderr);
    p->t_last_draw = now;
    p->drawn = 1;
}

void progress_update(Progress *p, int64_t done, const char *extra)
{
    p->done = done;
    if (!p->enabled) return;
    double gap = p->tty ? 0.1 : 5.0;
    if (util_now_s() - p->t_last_draw >= gap) draw(p, extra, 0);
}

void progress_finish(Progress *p, const char *extra)
{
    if (!p->enabled) return;
    draw(p, extra, 1);
}
