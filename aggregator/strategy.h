/* strategy.h: how the aggregator turns the sites' updates into the next
 * global model (DESIGN.md §2, §6). A strategy is pure policy over flat float
 * vectors: it never sees a transport, a protobuf or a site's identity beyond
 * its id, in the spirit of Flower's Strategy split.
 *
 * Updates are deltas: d_i = (site i's locally trained parameters) - (global
 * parameters it started from). Every strategy sums in ascending site-id order
 * in double precision, so the same updates give a bit-identical model in
 * whatever order they arrived.
 *
 *   fedavg        global += sum_i w_i d_i / sum_i w_i, w_i = examples at site i
 *                 (McMahan et al. 2017)
 *   fedprox       the same server step; the proximal term mu/2 ||w - w_global||^2
 *                 is added by the sites (Li et al. 2020)
 *   fedadam       server Adam on the averaged delta (Reddi et al. 2021, Alg. 2)
 *   fedyogi       server Yogi on the averaged delta (Reddi et al. 2021)
 *   median        coordinate-wise median of the deltas (Yin et al. 2018)
 *   trimmed_mean  coordinate-wise mean after dropping the trim fraction of the
 *                 largest and smallest values at each coordinate (Yin et al. 2018)
 *
 * median and trimmed_mean need every update in the clear, so they are refused
 * when secure aggregation is on (fl_strategy_needs_plaintext). */
#ifndef FL_STRATEGY_H
#define FL_STRATEGY_H

#include <stdint.h>

#include "core/status.h"

enum fl_strategy_kind {
    FL_STRATEGY_FEDAVG = 0,
    FL_STRATEGY_FEDPROX,
    FL_STRATEGY_FEDADAM,
    FL_STRATEGY_FEDYOGI,
    FL_STRATEGY_MEDIAN,
    FL_STRATEGY_TRIMMED_MEAN,
};

typedef struct fl_strategy_config {
    int kind;                 /* enum fl_strategy_kind */
    double server_lr;         /* fedadam / fedyogi eta (default 0.01); fedavg uses 1 */
    double beta1, beta2, tau; /* server optimiser (defaults 0.9, 0.99, 1e-3) */
    double trim;    /* trimmed_mean: fraction trimmed at each end, [0, 0.5) (default 0.1) */
    double prox_mu; /* fedprox: mu sent to the sites (default 0.01) */
} fl_strategy_config;

typedef struct fl_update {
    int site;           /* site id: the summation order */
    double weight;      /* examples (fedavg weighting); > 0 */
    const float *delta; /* (n) borrowed */
} fl_update;

typedef struct fl_strategy {
    fl_strategy_config cfg;
    int64_t n;
    double *m, *v; /* server optimiser state (n), NULL when unused */
    int64_t t;     /* server steps taken */
} fl_strategy;

/* Parses "fedavg" | "fedprox" | "fedadam" | "fedyogi" | "median" | "trimmed_mean". */
int fl_strategy_parse(int *kind, const char *name);
const char *fl_strategy_name(int kind);
void fl_strategy_config_default(fl_strategy_config *cfg, int kind);
int fl_strategy_needs_plaintext(int kind);

/* Caller owns *s; fl_strategy_free releases it. n = parameter count. */
int fl_strategy_init(fl_strategy *s, const fl_strategy_config *cfg, int64_t n,
                     char err[FL_ERR_LEN]);
void fl_strategy_free(fl_strategy *s);

/* The weighted mean of the deltas in site order (double precision): the
 * quantity every non-robust strategy starts from, and what secure
 * aggregation produces (a weighted sum and the sum of weights). */
int fl_strategy_mean(double *mean, const fl_update *ups, int n_ups, int64_t n);

/* Applies one round: global (n) += step(ups). The updates may come in any
 * order. FL_EINVAL without updates or with a non-positive weight; FL_ENUMERIC
 * if a delta holds a non-finite value (nothing is changed then). */
int fl_strategy_apply(fl_strategy *s, float *global, const fl_update *ups, int n_ups,
                      char err[FL_ERR_LEN]);

/* The same from an already-aggregated mean delta (secure aggregation gives
 * only the sum): fedavg/fedprox add it, fedadam/fedyogi step on it. */
int fl_strategy_apply_mean(fl_strategy *s, float *global, const double *mean, char err[FL_ERR_LEN]);

#endif
