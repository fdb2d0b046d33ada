/* site.h: what a site's agent does with its private data, free of any
 * transport (DESIGN.md §2, §4): load and split the CSV, compute the
 * statistics the federation sums, encode with the federation's summed
 * statistics, train one round from the global model and return the delta,
 * and evaluate a model on the local validation split as sums the aggregator
 * can add (loss, correct, count, score histograms).
 *
 * Nothing here leaves the site except the vectors returned by
 * fl_site_stats / fl_site_train / fl_site_evaluate. */
#ifndef FL_SITE_H
#define FL_SITE_H

#include <stdint.h>

#include "core/dataset.h"
#include "core/model.h"
#include "core/train.h"

typedef struct fl_site {
    fl_schema schema;
    fl_csv csv;
    fl_encoder enc;
    int32_t *y; /* (csv.n_rows) labels */
    int32_t *train_rows, *val_rows;
    int64_t n_train, n_val;
    int encoded; /* fl_site_encode done for the current stats */
    fl_dataset train, val;
    fl_backend *be;
} fl_site;

/* Loads csv_path with schema_path and splits it (stratified, seeded) into
 * local training and validation rows. Every categorical column must have
 * declared [levels] (FL_EINVAL otherwise: sites would encode differently). */
int fl_site_open(fl_site *s, const char *csv_path, const char *schema_path, double val_frac,
                 uint64_t seed, enum fl_device device, char err[FL_ERR_LEN]);
void fl_site_close(fl_site *s);

/* Encoded width and classes (what Join reports). */
int fl_site_features(const fl_site *s);
int fl_site_classes(const fl_site *s);

/* The statistics vector of the local training rows: [n_rows, then (count,
 * sum, sumsq) for every encoder column, then the level counts of every
 * categorical column in column order]. *out malloc'd. */
int fl_site_stats(double **out, int64_t *n, fl_site *s, char err[FL_ERR_LEN]);
/* Encoder columns, and the offsets of each column's level counts in the
 * level part of the statistics vector (n_cols + 1 entries). */
int fl_site_n_cols(const fl_site *s);
void fl_site_level_offsets(const fl_site *s, uint32_t *offsets);

/* Fixes the encoding from the federation's summed statistics and encodes the
 * local splits. FL_EINVAL when the vector's length does not fit. */
int fl_site_encode(fl_site *s, const double *stats, int64_t n, char err[FL_ERR_LEN]);

/* Trains from the serialised global model for cfg->epochs epochs and returns
 * the delta (local - global) in *delta (malloc'd, n_params floats). */
int fl_site_train(float **delta, int64_t *n_params, double *train_loss, fl_site *s,
                  const uint8_t *model, size_t model_len, const fl_train_config *cfg,
                  char err[FL_ERR_LEN]);

typedef struct fl_site_eval {
    double loss_sum;
    int64_t correct, count;
    uint64_t *hist; /* (2, bins) score histogram of negatives then positives (binary only) */
    int bins;
    float *scores; /* (count) P(y = 1) of each validation row (binary only), else NULL */
} fl_site_eval;

/* Evaluates the serialised model on the local validation split. */
int fl_site_evaluate(fl_site_eval *ev, fl_site *s, const uint8_t *model, size_t model_len, int bins,
                     char err[FL_ERR_LEN]);
void fl_site_eval_free(fl_site_eval *ev);

/* The bin of a probability on a grid of `bins` equal bins over [0, 1]. */
int fl_score_bin(float p, int bins);

#endif
