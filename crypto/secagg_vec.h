/* secagg_vec.h: what the federation sums through secure aggregation, laid
 * out as int64 vectors that crypto/secagg.h carries as 16-bit limbs
 * (fl_secagg_encode_i64), so sums of counts are exact and sums of real
 * numbers are exact sums of fixed-point values (docs/secagg.md, "What goes
 * through it"). The aggregator and the agent both use these, so each layout
 * is defined once.
 *
 *   statistics: the vector of proto/wire_stats.h (n_rows, (count, sum,
 *               sumsq) per column, level counts), integers as they are, sum
 *               and sumsq in fixed point with FL_SV_STATS_FRAC fraction bits.
 *   evaluation: [loss_sum (fixed, FL_SV_EVAL_FRAC bits), correct, count,
 *               site accuracy (fixed), site accuracy^2 (fixed), 1 (sites),
 *               score histogram (2 * bins), fairness counts (n_fairness)].
 * A value whose fixed-point form would not fit in 2^62 is refused
 * (FL_ENUMERIC), never wrapped. Training updates do not go through here: they
 * are quantized with fl_secagg_quantize. */
#ifndef FL_SECAGG_VEC_H
#define FL_SECAGG_VEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define FL_SV_STATS_FRAC 16
#define FL_SV_EVAL_FRAC 24
#define FL_SV_EVAL_HEAD 6

/* Length of the statistics vector for n_cols columns with n_levels levels. */
int64_t fl_sv_stats_len(uint32_t n_cols, uint32_t n_levels);
int fl_sv_stats_encode(int64_t *out, const double *stats, int64_t n, uint32_t n_cols,
                       char err[FL_ERR_LEN]);
void fl_sv_stats_decode(double *out, const int64_t *sum, int64_t n, uint32_t n_cols);

typedef struct fl_sv_eval {
    double loss_sum;
    int64_t correct, count;
    double acc_sum, acc_sumsq; /* sum over sites of accuracy and its square */
    int64_t sites;
    const uint64_t *hist;     /* (2 * bins) or NULL (zeros) */
    const uint64_t *fairness; /* (n_fairness) or NULL (zeros) */
} fl_sv_eval;

int64_t fl_sv_eval_len(int bins, int64_t n_fairness);
/* Fills out (fl_sv_eval_len) from one site's evaluation; the site's own
 * accuracy correct / count goes into acc_sum, its square into acc_sumsq. */
int fl_sv_eval_encode(int64_t *out, const fl_sv_eval *e, int bins, int64_t n_fairness,
                      char err[FL_ERR_LEN]);
/* The sums back; hist and fairness point into the caller's arrays
 * (2 * bins and n_fairness uint64), written here. */
void fl_sv_eval_decode(fl_sv_eval *e, uint64_t *hist, uint64_t *fairness, const int64_t *sum,
                       int bins, int64_t n_fairness);

#endif
