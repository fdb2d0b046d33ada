/* metrics.h: evaluation metrics (DESIGN.md §2): log-loss, accuracy, exact
 * ROC AUC with ties, confusion counts. Scores are the model's probabilities:
 * (n) P(class 1) for binary tasks, (n, k) rows of class probabilities for
 * k > 2 classes (pass k = 1 for the binary layout). */
#ifndef FL_METRICS_H
#define FL_METRICS_H

#include <stdint.h>

#include "core/status.h"

typedef struct fl_confusion {
    int64_t tp, fp, tn, fn;
} fl_confusion;

typedef struct fl_eval {
    int64_t n;
    double loss;     /* mean log-loss */
    double accuracy; /* fraction correct (argmax, or p >= 0.5 for binary) */
    double auc;      /* ROC AUC; macro one-vs-rest for k > 2; NaN if undefined */
    fl_confusion cm; /* binary tasks only, at threshold 0.5 */
} fl_eval;

/* Mean log-loss; probabilities clamped to [1e-7, 1 - 1e-7]. */
double fl_logloss(const float *probs, const int32_t *y, int64_t n, int k);
double fl_accuracy(const float *probs, const int32_t *y, int64_t n, int k);
/* Confusion counts of a binary task at threshold t (p >= t predicts 1). */
fl_confusion fl_confusion_at(const float *p, const int32_t *y, int64_t n, double t);

/* Exact ROC AUC of scores for the binary labels y (1 = positive): the
 * Mann-Whitney statistic with tied scores counted one half, i.e. the area
 * under the ROC curve through the tied points' corners. FL_EINVAL when only
 * one class is present (*auc = NaN). O(n log n). */
int fl_auc(double *auc, const float *scores, const int32_t *y, int64_t n);
/* Macro average over classes of the one-vs-rest AUC, skipping absent classes. */
int fl_auc_ovr(double *auc, const float *probs, const int32_t *y, int64_t n, int k);

/* All of the above in one pass over a model's outputs. */
int fl_evaluate_probs(fl_eval *ev, const float *probs, const int32_t *y, int64_t n, int k);

#endif
