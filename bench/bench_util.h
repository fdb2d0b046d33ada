/* bench_util.h: timing helpers shared by the benchmarks in bench/. Each
 * benchmark prints its figures as ratios against a reference measured in the
 * same run (DESIGN.md §13), so the numbers mean something on any machine. */
#ifndef FL_BENCH_UTIL_H
#define FL_BENCH_UTIL_H

#include <string.h>
#include <time.h>

static inline double fl_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 1 when argv holds --json. */
static inline int fl_bench_json(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--json")) return 1;
    return 0;
}

#endif
