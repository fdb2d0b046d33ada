/* train.h: the local training loop (DESIGN.md §2, §7, §8): mini-batch SGD
 * with momentum or Adam, L2 weight decay, early stopping on validation loss,
 * and DP-SGD (Poisson sampling, per-example clipping, Gaussian noise from a
 * caller-provided CSPRNG source). Used by `cohort train` and, one round at a
 * time, by the client agent. */
#ifndef FL_TRAIN_H
#define FL_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "core/dataset.h"
#include "core/metrics.h"
#include "core/model.h"

enum fl_optimizer { FL_OPT_SGD = 0, FL_OPT_ADAM = 1 };

/* Randomness that privacy depends on. Core code never generates it itself:
 * the caller passes a CSPRNG-backed source (crypto/csprng.h), and tests may
 * pass a seeded one. Each function returns 0 or a negative FL_E* code. */
typedef struct fl_noise_source {
    void *ctx;
    /* out[0..n) = independent N(0, stddev^2) samples */
    int (*gaussian)(void *ctx, float *out, size_t n, double stddev);
    /* out[0..n) = independent uniform 32-bit words (Poisson sampling) */
    int (*uniform32)(void *ctx, uint32_t *out, size_t n);
    /* Optional, the float-safe way (crypto/dpnoise.h, docs/privacy.md):
     * x[0..n) <- scale * g * (round(x / g) + Z) on host memory, Z integer
     * noise of standard deviation stddev / g, on a grid g <= stddev *
     * 2^-grid_bits. When set, fl_train uses it instead of gaussian() and
     * clips each example to dp_clip * (1 - dp_noise sqrt(n_params)
     * 2^-grid_bits), so that the snapped sum's L2 sensitivity stays dp_clip. */
    int (*add_gaussian)(void *ctx, float *x, size_t n, double stddev, float scale);
    int grid_bits;
} fl_noise_source;

typedef struct fl_epoch_report {
    int epoch;         /* 1-based */
    double train_loss; /* mean over the examples seen this epoch */
    double val_loss;   /* NaN without a validation set */
    double val_accuracy;
    int improved; /* validation loss improved (best parameters kept) */
} fl_epoch_report;

typedef struct fl_train_config {
    int epochs;     /* maximum epochs */
    int batch_size; /* batch size; with DP-SGD the expected (Poisson) batch size */
    int optimizer;  /* enum fl_optimizer */
    double lr, momentum, weight_decay;
    double beta1, beta2, adam_eps;
    int patience;  /* stop after this many epochs without validation improvement; 0 = never */
    uint64_t seed; /* shuffling (non-private runs) */
    /* DP-SGD: on when dp_clip > 0. Noise stddev is dp_noise * dp_clip. */
    double dp_clip, dp_noise;
    const fl_noise_source *noise; /* required when dp_clip > 0 */
    /* FedProx: adds (mu/2)||w - w_ref||^2 to the objective when mu > 0
     * (w_ref: host copy of the round's global parameters). */
    double prox_mu;
    const float *prox_ref;
    void (*on_epoch)(void *ctx, const fl_epoch_report *r);
    void *ctx;
} fl_train_config;

typedef struct fl_train_result {
    int epochs_run;
    int best_epoch; /* the epoch whose parameters the model holds at return */
    double best_val_loss;
    int64_t steps;      /* optimiser steps taken */
    double sample_rate; /* DP-SGD q = batch_size / n (0 when not private) */
    int64_t examples;   /* examples processed */
} fl_train_result;

/* Sensible defaults: 20 epochs, batch 64, Adam lr 1e-3 (betas 0.9, 0.999,
 * eps 1e-8), no weight decay, patience 5, seed 1, not private. */
void fl_train_config_default(fl_train_config *cfg);

/* Trains m on train (validation set val may be NULL: no early stopping).
 * With early stopping, m holds the parameters of the best validation epoch
 * at return. Errors: FL_EINVAL (config, with the field named in err),
 * FL_ENUMERIC (loss became non-finite), backend errors. */
int fl_train(fl_train_result *res, fl_model *m, const fl_dataset *train, const fl_dataset *val,
             const fl_train_config *cfg, char err[FL_ERR_LEN]);

/* Evaluates m on ds (loss, accuracy, AUC, confusion). */
int fl_model_evaluate(fl_eval *ev, fl_model *m, const fl_dataset *ds);

#endif
