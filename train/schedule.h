/* train/schedule.h : segtrain's learning-rate schedules, step by step.
 *   none     lr constant
 *   poly     lr * (1 - t/T)^0.9 (nnU-Net's decay; reaches 0 at the last step)
 *   cosine   lr * (1 + cos(pi t/T)) / 2
 *   plateau  lr constant between cuts; segtrain multiplies it by --plateau-factor when the
 *            monitored metric stalls (decided per validation, not here)
 * A warmup of W steps multiplies any of them by (t+1)/W for t < W. */
#ifndef SEG_SCHEDULE_H
#define SEG_SCHEDULE_H
#include <stdint.h>

enum { SCHED_NONE = 0, SCHED_POLY = 1, SCHED_COSINE = 2, SCHED_PLATEAU = 3 };
#define SCHED_POLY_POWER 0.9

/* "none", "poly", "cosine", "plateau" <-> SCHED_*; parse returns -1 for anything else. */
int         sched_parse(const char *s);
const char *sched_name(int kind);
/* The learning rate of step t (0-based) of a run of T steps, from lr (for plateau: the
 * current, possibly cut, rate). Steps past T keep the last rate. */
double      sched_lr(int kind, double lr, int64_t t, int64_t T, int warmup);

#endif
