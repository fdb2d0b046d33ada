/* wire_stats.c: see wire_stats.h. */
#include "wire_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EXACT (9007199254740992.0) /* 2^53 */

int fl_wire_stats_to_vector(double **v, int64_t *n, const fl_wire_stats *s, char err[FL_ERR_LEN]) {
    int64_t len = 1 + 3 * (int64_t)s->n_cols + s->n_levels;
    double *x = malloc((size_t)len * sizeof *x);
    if (!x) return fl_seterr(err, FL_ENOMEM, "out of memory");
    if ((double)s->n_rows >= EXACT) {
        free(x);
        return fl_seterr(err, FL_EINVAL, "Stats.n_rows: too large to sum exactly");
    }
    x[0] = (double)s->n_rows;
    for (uint32_t c = 0; c < s->n_cols; c++) {
        x[1 + 3 * c] = (double)s->count[c];
        x[2 + 3 * c] = s->sum[c];
        x[3 + 3 * c] = s->sumsq[c];
    }
    for (uint32_t l = 0; l < s->n_levels; l++)
        x[1 + 3 * (int64_t)s->n_cols + l] = (double)s->level_counts[l];
    *v = x;
    *n = len;
    return FL_OK;
}

void fl_wire_stats_clear(fl_wire_stats *s) {
    free(s->count);
    free(s->sum);
    free(s->sumsq);
    free(s->level_offsets);
    free(s->level_counts);
    free(s->masked);
    memset(s, 0, sizeof *s);
}

static int as_count(uint64_t *out, double x) {
    if (!(x >= 0.0) || x >= EXACT || x != floor(x)) return -1;
    *out = (uint64_t)x;
    return 0;
}

int fl_wire_stats_from_vector(fl_wire_stats *s, const double *v, int64_t n, uint32_t n_cols,
                              const uint32_t *level_offsets, char err[FL_ERR_LEN]) {
    memset(s, 0, sizeof *s);
    uint32_t n_levels = level_offsets[n_cols];
    if (n != 1 + 3 * (int64_t)n_cols + n_levels)
        return fl_seterr(err, FL_EINVAL, "statistics: %lld values, the layout needs %lld",
                         (long long)n, (long long)(1 + 3 * (int64_t)n_cols + n_levels));
    s->n_cols = n_cols;
    s->n_levels = n_levels;
    s->count = calloc(n_cols ? n_cols : 1, sizeof *s->count);
    s->sum = calloc(n_cols ? n_cols : 1, sizeof *s->sum);
    s->sumsq = calloc(n_cols ? n_cols : 1, sizeof *s->sumsq);
    s->level_offsets = calloc((size_t)n_cols + 1, sizeof *s->level_offsets);
    s->level_counts = calloc(n_levels ? n_levels : 1, sizeof *s->level_counts);
    if (!s->count || !s->sum || !s->sumsq || !s->level_offsets || !s->level_counts) {
        fl_wire_stats_clear(s);
        return fl_seterr(err, FL_ENOMEM, "out of memory");
    }
    memcpy(s->level_offsets, level_offsets, ((size_t)n_cols + 1) * sizeof *level_offsets);
    int bad = as_count(&s->n_rows, v[0]);
    for (uint32_t c = 0; c < n_cols && !bad; c++) {
        bad |= as_count(&s->count[c], v[1 + 3 * c]);
        s->sum[c] = v[2 + 3 * c];
        s->sumsq[c] = v[3 + 3 * c];
        bad |= !isfinite(s->sum[c]) || !isfinite(s->sumsq[c]);
    }
    for (uint32_t l = 0; l < n_levels && !bad; l++)
        bad |= as_count(&s->level_counts[l], v[1 + 3 * (int64_t)n_cols + l]);
    if (bad) {
        fl_wire_stats_clear(s);
        return fl_seterr(err, FL_EINVAL,
                         "statistics: a count is not a non-negative integer or a "
                         "sum is not finite");
    }
    return FL_OK;
}
