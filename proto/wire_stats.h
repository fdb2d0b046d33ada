/* wire_stats.h: between the wire's Stats message (fl_wire_stats) and the
 * flat statistics vector that the round state machine sums and the site
 * encodes from (client/site.h): [n_rows, (count, sum, sumsq) for each column,
 * then every level count in column order]. Both the aggregator and the agent
 * convert with these two functions, so the layout is defined once. */
#ifndef FL_WIRE_STATS_H
#define FL_WIRE_STATS_H

#include "proto/wire.h"

/* *v (malloc'd, *n values) from s. Counts above 2^53 cannot be represented
 * exactly and are refused (FL_EINVAL). */
int fl_wire_stats_to_vector(double **v, int64_t *n, const fl_wire_stats *s, char err[FL_ERR_LEN]);

/* s from v with the given layout (n_cols columns, level_offsets (n_cols + 1)).
 * s owns its arrays afterwards (fl_wire_stats_clear). FL_EINVAL when n does
 * not match the layout or a count is negative or not an integer. */
int fl_wire_stats_from_vector(fl_wire_stats *s, const double *v, int64_t n, uint32_t n_cols,
                              const uint32_t *level_offsets, char err[FL_ERR_LEN]);
void fl_wire_stats_clear(fl_wire_stats *s);

#endif
