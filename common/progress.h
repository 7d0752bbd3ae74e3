/* common/progress.h : progress reporting for long work. On a TTY (stderr) a redrawn bar
 * with rate and ETA, throttled to 10 redraws/s; otherwise plain lines at most every
 * few seconds (and one at the end), so logs stay readable. */
#ifndef SEG_PROGRESS_H
#define SEG_PROGRESS_H
#include <stdint.h>

typedef struct Progress {
    const char *label;     /* e.g. "segprep" */
    const char *unit;      /* e.g. "subjects" */
    int64_t     total;     /* 0 if unknown */
    int64_t     done;
    double      t_start, t_last_draw;
    int         tty;       /* 1: redraw a bar on stderr */
    int         enabled;   /* 0: print nothing */
    int         drawn;     /* a bar is on screen */
} Progress;

/* Start; enabled = 0 silences it (e.g. -q). tty < 0 means isatty(stderr). */
void progress_start(Progress *p, const char *label, const char *unit, int64_t total, int enabled, int tty);
/* Set done and redraw if due; extra is appended (e.g. "loss 0.231"), may be NULL. */
void progress_update(Progress *p, int64_t done, const char *extra);
/* Final draw and newline. */
void progress_finish(Progress *p, const char *extra);
/* Width of the terminal on stderr (TIOCGWINSZ, else $COLUMNS, else 80). A bar line is cut
 * to this width - 1, so it never wraps and "\r" always returns to its start. */
int  progress_columns(void);

#endif
