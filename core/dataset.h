/* dataset.h: from a CSV and a schema to training tensors (DESIGN.md §4).
 *
 * The pipeline is split so a federation can run it site by site:
 *   1. fl_encoder_init: resolve the schema against the CSV header (column roles,
 *      categorical levels from [levels] or, for single-site use, fitted from the
 *      whole file's vocabulary), label classes.
 *   2. fl_encoder_labels: every row's class (a missing or unknown label fails).
 *   3. fl_split_stratified: deterministic seeded train/validation/test rows.
 *   4. fl_stats_*: counts and sums over the training rows only (mergeable
 *      across sites: this is what the federation's statistics round sums).
 *   5. fl_encoder_finish: means, standard deviations and modes from the stats.
 *   6. fl_dataset_encode: impute, one-hot, standardise the chosen rows.
 * Numeric columns in the schema's `log` are ln(1 + v) from step 4 on, so the
 * federation's statistics, imputation and scale are all of the transformed
 * value; a column in `missing_indicators` adds a 0/1 feature after its own.
 * fl_dataset_load_split runs all six for `cohort train`. */
#ifndef FL_DATASET_H
#define FL_DATASET_H

#include <stdint.h>

#include "csv.h"
#include "schema.h"
#include "status.h"

/* One input column of the CSV and where it lands in the encoded vector. */
typedef struct fl_enc_col {
    char *name;
    int csv_col;     /* index into the CSV header */
    int categorical; /* 1: one-hot over levels; 0: numeric, standardised */
    int offset;      /* first encoded feature of this column */
    /* numeric */
    double mean, std; /* imputation value and scale; std 1 when degenerate */
    int log;          /* schema `log`: the value is ln(1 + v), v >= 0 */
    int indicator;    /* schema `missing_indicators`: feature offset + 1 is 1 when missing */
    /* categorical */
    int n_levels;
    char **levels; /* (n_levels) sorted byte-wise unless declared in [levels] */
    int mode;      /* index of the most frequent level (ties: lowest index) */
} fl_enc_col;

typedef struct fl_encoder {
    int n_cols;
    fl_enc_col *cols;
    int n_features; /* encoded width: numeric columns + indicators + sum of n_levels */
    int label_col;
    int n_classes;        /* 2 for binary (class 1 = positive) */
    char **classes;       /* (n_classes) label values; binary: {"not <positive>", positive} */
    const char *positive; /* borrowed from the schema; NULL: y is the index into classes */
    int n_sensitive;
    int *sens_col;                 /* (n_sensitive) CSV column of each sensitive attribute */
    const fl_group_def **sens_def; /* (n_sensitive) borrowed from the schema; NULL = none */
    char **missing;                /* borrowed from the schema */
    int n_missing;
    int finished; /* fl_encoder_finish was called */
} fl_encoder;

/* Mergeable sufficient statistics, one slot per encoder column. */
typedef struct fl_stats {
    int n_cols;
    int64_t *count;        /* (n_cols) non-missing numeric values */
    double *sum, *sumsq;   /* (n_cols) */
    int *n_levels;         /* (n_cols) length of each level_count row, 0 for numeric */
    int64_t **level_count; /* (n_cols) each (n_levels) for categorical, NULL otherwise */
} fl_stats;

typedef struct fl_dataset {
    int64_t n; /* rows */
    int d;     /* encoded features */
    int n_classes;
    float *X;   /* (n, d) row-major */
    int32_t *y; /* (n) class index in [0, n_classes) */
    int n_sensitive;
    int32_t *groups;   /* (n, n_sensitive) group index per attribute, -1 = none */
    int32_t *src_line; /* (n) CSV line of each row, for messages; may be NULL */
} fl_dataset;

/* Resolves the schema against csv (both borrowed; the schema must outlive the
 * encoder). Errors (FL_EINVAL) name the schema line and the column: a column
 * named in the schema but absent from the CSV header, no label column, a
 * categorical column with more than 4096 levels. */
int fl_encoder_init(fl_encoder *enc, const fl_schema *schema, const fl_csv *csv,
                    char err[FL_ERR_LEN]);
void fl_encoder_free(fl_encoder *enc);

/* y[i] for every CSV row. FL_EINVAL "path:line:col: missing label value" or,
 * for declared classes, an unknown one. y has csv->n_rows entries. */
int fl_encoder_labels(int32_t *y, const fl_encoder *enc, const fl_csv *csv, char err[FL_ERR_LEN]);

/* Splits rows 0..n-1 into test (test_frac), validation (val_frac of the
 * whole) and train (the rest), stratified by y, deterministically from seed.
 * Outputs are malloc'd arrays of row indices in ascending order (caller
 * frees). Every class with at least 2 rows puts at least 1 in train. */
int fl_split_stratified(int32_t **train, int64_t *n_train, int32_t **val, int64_t *n_val,
                        int32_t **test, int64_t *n_test, const int32_t *y, int64_t n, int n_classes,
                        double val_frac, double test_frac, uint64_t seed);

int fl_stats_init(fl_stats *st, const fl_encoder *enc);
void fl_stats_free(fl_stats *st);
/* Adds the given rows (NULL = all rows) of csv. Text in a numeric column is
 * FL_EINVAL "path:line:col: column 'X': expected a number, got 'abc'". A
 * categorical value outside the encoder's levels is FL_EINVAL (unseen level). */
int fl_stats_accumulate(fl_stats *st, const fl_encoder *enc, const fl_csv *csv, const int32_t *rows,
                        int64_t n_rows, char err[FL_ERR_LEN]);
/* dst += src (same encoder). */
int fl_stats_merge(fl_stats *dst, const fl_stats *src);

/* Sets each column's mean/std/mode from st. A column with no observed value
 * gets mean 0, std 1, mode 0. */
int fl_encoder_finish(fl_encoder *enc, const fl_stats *st);

/* Encodes the given rows (NULL = all) of csv with labels y (indexed by CSV
 * row). Missing values are imputed (mean / mode), numeric values
 * standardised, categoricals one-hot. FL_EINVAL, naming path:line:col, for
 * text in a numeric column or a categorical level the encoder does not know
 * ("unseen level 'x' in column 'Home' (known: a, b, c)"). On failure *ds is
 * left empty. */
int fl_dataset_encode(fl_dataset *ds, const fl_encoder *enc, const fl_csv *csv, const int32_t *y,
                      const int32_t *rows, int64_t n_rows, char err[FL_ERR_LEN]);
void fl_dataset_free(fl_dataset *ds);
/* Copies rows [idx[0..n)] of src into dst (fresh arrays). */
int fl_dataset_subset(fl_dataset *dst, const fl_dataset *src, const int32_t *idx, int64_t n);

/* The single-site path of `cohort train`: bind, label, split, fit on train,
 * encode all three splits. csv must already be loaded (fl_csv_load; an empty
 * one is FL_EINVAL) and is only read. enc receives the fitted encoder (caller
 * frees with fl_encoder_free; it borrows *schema, which the caller keeps
 * alive). */
int fl_dataset_load_split(fl_dataset *train, fl_dataset *val, fl_dataset *test, fl_encoder *enc,
                          const fl_csv *csv, const fl_schema *schema, double val_frac,
                          double test_frac, uint64_t seed, char err[FL_ERR_LEN]);

/* True when cell is one of the encoder's missing tokens. */
int fl_encoder_is_missing(const fl_encoder *enc, const char *cell);

#endif
