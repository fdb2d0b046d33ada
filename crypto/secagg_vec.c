/* secagg_vec.c: the int64 layouts of secagg_vec.h. */
#include "crypto/secagg_vec.h"

#include <math.h>

#define LIMIT 4611686018427387904.0 /* 2^62 */

static int fixed(int64_t *out, double x, int frac, const char *what, int64_t i, char *err) {
    double v = ldexp(x, frac);
    if (!isfinite(v) || fabs(v) >= LIMIT)
        return fl_seterr(err, FL_ENUMERIC,
                         "%s[%lld] = %g does not fit the secure sum's fixed point (2^%d)", what,
                         (long long)i, x, 62 - frac);
    *out = (int64_t)llround(v);
    return FL_OK;
}

static int count(int64_t *out, double x, const char *what, int64_t i, char *err) {
    if (!(x >= 0 && x < LIMIT) || x != floor(x))
        return fl_seterr(err, FL_ENUMERIC, "%s[%lld] = %g is not a count", what, (long long)i, x);
    *out = (int64_t)x;
    return FL_OK;
}

int64_t fl_sv_stats_len(uint32_t n_cols, uint32_t n_levels) {
    return 1 + 3 * (int64_t)n_cols + (int64_t)n_levels;
}

/* Position i of the statistics vector holds a real number (sum, sumsq). */
static int stats_is_real(int64_t i, uint32_t n_cols) {
    return i >= 1 && i < 1 + 3 * (int64_t)n_cols && (i - 1) % 3 != 0;
}

int fl_sv_stats_encode(int64_t *out, const double *stats, int64_t n, uint32_t n_cols,
                       char err[FL_ERR_LEN]) {
    int rc = FL_OK;
    for (int64_t i = 0; i < n && !rc; i++)
        rc = stats_is_real(i, n_cols) ? fixed(&out[i], stats[i], FL_SV_STATS_FRAC, "stats", i, err)
                                      : count(&out[i], stats[i], "stats", i, err);
    return rc;
}

void fl_sv_stats_decode(double *out, const int64_t *sum, int64_t n, uint32_t n_cols) {
    for (int64_t i = 0; i < n; i++)
        out[i] =
            stats_is_real(i, n_cols) ? ldexp((double)sum[i], -FL_SV_STATS_FRAC) : (double)sum[i];
}

int64_t fl_sv_eval_len(int bins, int64_t n_fairness) {
    return FL_SV_EVAL_HEAD + 2 * (int64_t)bins + n_fairness;
}

int fl_sv_eval_encode(int64_t *out, const fl_sv_eval *e, int bins, int64_t n_fairness,
                      char err[FL_ERR_LEN]) {
    double acc = e->count > 0 ? (double)e->correct / (double)e->count : 0.0;
    int rc = fixed(&out[0], e->loss_sum, FL_SV_EVAL_FRAC, "eval.loss_sum", 0, err);
    if (!rc) rc = count(&out[1], (double)e->correct, "eval.correct", 0, err);
    if (!rc) rc = count(&out[2], (double)e->count, "eval.count", 0, err);
    if (!rc) rc = fixed(&out[3], acc, FL_SV_EVAL_FRAC, "eval.accuracy", 0, err);
    if (!rc) rc = fixed(&out[4], acc * acc, FL_SV_EVAL_FRAC, "eval.accuracy2", 0, err);
    out[5] = e->count > 0;
    int64_t *h = out + FL_SV_EVAL_HEAD, *fa = h + 2 * (int64_t)bins;
    for (int64_t i = 0; i < 2 * (int64_t)bins && !rc; i++)
        rc = count(&h[i], e->hist ? (double)e->hist[i] : 0.0, "eval.hist", i, err);
    for (int64_t i = 0; i < n_fairness && !rc; i++)
        rc = count(&fa[i], e->fairness ? (double)e->fairness[i] : 0.0, "eval.fairness", i, err);
    return rc;
}

void fl_sv_eval_decode(fl_sv_eval *e, uint64_t *hist, uint64_t *fairness, const int64_t *sum,
                       int bins, int64_t n_fairness) {
    e->loss_sum = ldexp((double)sum[0], -FL_SV_EVAL_FRAC);
    e->correct = sum[1];
    e->count = sum[2];
    e->acc_sum = ldexp((double)sum[3], -FL_SV_EVAL_FRAC);
    e->acc_sumsq = ldexp((double)sum[4], -FL_SV_EVAL_FRAC);
    e->sites = sum[5];
    const int64_t *h = sum + FL_SV_EVAL_HEAD, *fa = h + 2 * (int64_t)bins;
    for (int64_t i = 0; i < 2 * (int64_t)bins; i++)
        hist[i] = (uint64_t)h[i];
    for (int64_t i = 0; i < n_fairness; i++)
        fairness[i] = (uint64_t)fa[i];
    e->hist = hist;
    e->fairness = fairness;
}
