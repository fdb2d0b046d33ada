/* metrics.c: see metrics.h. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double clampp(double p) {
    return p < 1e-7 ? 1e-7 : (p > 1.0 - 1e-7 ? 1.0 - 1e-7 : p);
}

double fl_logloss(const float *probs, const int32_t *y, int64_t n, int k) {
    if (n <= 0) return NAN;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double p = k == 1 ? (y[i] ? probs[i] : 1.0 - probs[i]) : probs[i * k + y[i]];
        s -= log(clampp(p));
    }
    return s / (double)n;
}

static int argmax(const float *p, int k) {
    int best = 0;
    for (int j = 1; j < k; j++)
        if (p[j] > p[best]) best = j;
    return best;
}

double fl_accuracy(const float *probs, const int32_t *y, int64_t n, int k) {
    if (n <= 0) return NAN;
    int64_t ok = 0;
    for (int64_t i = 0; i < n; i++) {
        int pred = k == 1 ? probs[i] >= 0.5f : argmax(probs + i * k, k);
        ok += pred == y[i];
    }
    return (double)ok / (double)n;
}

fl_confusion fl_confusion_at(const float *p, const int32_t *y, int64_t n, double t) {
    fl_confusion c = {0, 0, 0, 0};
    for (int64_t i = 0; i < n; i++) {
        int pred = p[i] >= t;
        if (pred && y[i])
            c.tp++;
        else if (pred)
            c.fp++;
        else if (y[i])
            c.fn++;
        else
            c.tn++;
    }
    return c;
}

typedef struct {
    float s;
    int32_t y;
} scored;

static int cmp_scored(const void *a, const void *b) {
    float x = ((const scored *)a)->s, z = ((const scored *)b)->s;
    return (x > z) - (x < z);
}

int fl_auc(double *auc, const float *scores, const int32_t *y, int64_t n) {
    *auc = NAN;
    scored *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) return FL_ENOMEM;
    int64_t npos = 0;
    for (int64_t i = 0; i < n; i++) {
        v[i].s = scores[i];
        v[i].y = y[i] != 0;
        npos += v[i].y;
    }
    int64_t nneg = n - npos;
    if (npos == 0 || nneg == 0) {
        free(v);
        return FL_EINVAL;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_scored);
    /* Walk groups of equal scores in ascending order: a positive beats every
     * negative below its group and ties with the negatives inside it. */
    double wins = 0.0;
    int64_t neg_below = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i, pos = 0, neg = 0;
        while (j < n && v[j].s == v[i].s) {
            pos += v[j].y;
            neg += !v[j].y;
            j++;
        }
        wins += (double)pos * ((double)neg_below + 0.5 * (double)neg);
        neg_below += neg;
        i = j;
    }
    free(v);
    *auc = wins / ((double)npos * (double)nneg);
    return FL_OK;
}

int fl_auc_ovr(double *auc, const float *probs, const int32_t *y, int64_t n, int k) {
    *auc = NAN;
    float *s = malloc((size_t)(n > 0 ? n : 1) * sizeof *s);
    int32_t *b = malloc((size_t)(n > 0 ? n : 1) * sizeof *b);
    if (!s || !b) {
        free(s);
        free(b);
        return FL_ENOMEM;
    }
    double sum = 0.0;
    int used = 0;
    for (int c = 0; c < k; c++) {
        for (int64_t i = 0; i < n; i++) {
            s[i] = probs[i * k + c];
            b[i] = y[i] == c;
        }
        double a;
        if (fl_auc(&a, s, b, n) == FL_OK) {
            sum += a;
            used++;
        }
    }
    free(s);
    free(b);
    if (!used) return FL_EINVAL;
    *auc = sum / used;
    return FL_OK;
}

int fl_evaluate_probs(fl_eval *ev, const float *probs, const int32_t *y, int64_t n, int k) {
    memset(ev, 0, sizeof *ev);
    ev->n = n;
    ev->loss = fl_logloss(probs, y, n, k);
    ev->accuracy = fl_accuracy(probs, y, n, k);
    int rc = k == 1 ? fl_auc(&ev->auc, probs, y, n) : fl_auc_ovr(&ev->auc, probs, y, n, k);
    if (rc == FL_ENOMEM) return rc;
    if (k == 1) ev->cm = fl_confusion_at(probs, y, n, 0.5);
    return FL_OK;
}
