/* partition.h: splitting one dataset's rows among simulated sites, for
 * `cohort simulate` (DESIGN.md §4 [federation] partition):
 *   iid            rows dealt at random, equal sizes (±1)
 *   by:<column>    each distinct value of the column goes to one site (values
 *                  sorted, dealt round-robin over the sites in a seeded order),
 *                  so sites differ the way hospitals or branches do
 *   dirichlet:<a>  per class, site shares drawn from Dirichlet(a) (Hsu et al.
 *                  2019): small a gives label-skewed sites
 * Every site gets at least one row (FL_EINVAL when that is impossible). */
#ifndef FL_PARTITION_H
#define FL_PARTITION_H

#include <stdint.h>

#include "core/csv.h"

/* site_of[i] in [0, n_sites) for each of the n rows listed in rows (indices
 * into csv), with labels y indexed by CSV row. */
int fl_partition(int *site_of, const fl_csv *csv, const int32_t *y, int n_classes,
                 const int32_t *rows, int64_t n, int n_sites, const char *mode, uint64_t seed,
                 char err[FL_ERR_LEN]);

/* Writes the header and the given rows of csv to path as RFC 4180 CSV
 * (fields quoted when they hold a comma, quote or line break). */
int fl_csv_write_rows(const char *path, const fl_csv *csv, const int32_t *rows, int64_t n,
                      char err[FL_ERR_LEN]);

struct fl_encoder;
struct fl_schema;
/* Copies the schema's file (schema->path) to out_path and appends a [levels]
 * section declaring, for every categorical column that has no declared
 * levels, the levels enc fitted (the whole file's vocabulary), so every
 * simulated site one-hot encodes identically. */
int fl_schema_write_with_levels(const char *out_path, const struct fl_schema *schema,
                                const struct fl_encoder *enc, char err[FL_ERR_LEN]);

#endif
