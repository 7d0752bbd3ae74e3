/* train/schedule.c : learning-rate schedules (see schedule.h). */
#include "schedule.h"
#include <math.h>
#include <string.h>

static const char *const k_names[] = { "none", "poly", "cosine", "plateau" };

int sched_parse(const char *s)
{
    for (int i = 0; s && i < 4; i++)
        if (!strcmp(s, k_names[i])) return i;
    return -1;
}

const char *sched_name(int kind) { return kind >= 0 && kind < 4 ? k_names[kind] : "?"; }

double sched_lr(int kind, double lr, int64_t t, int64_t T, int warmup)
{
    if (T < 1) T = 1;
    if (t > T - 1) t = T - 1;
    if (t < 0) t = 0;
    const double f = (double)t / (double)T;
    double r = lr;
    if (kind == SCHED_POLY) r = lr * pow(1.0 - f, SCHED_POLY_POWER);
    else if (kind == SCHED_COSINE) r = lr * 0.5 * (1.0 + cos(M_PI * f));
    if (warmup > 0 && t < warmup) r *= (double)(t + 1) / warmup;
    return r;
}
