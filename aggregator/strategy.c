/* strategy.c: the aggregation strategies of strategy.h. */
#include "strategy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const NAMES[] = {"fedavg",  "fedprox", "fedadam",
                                    "fedyogi", "median",  "trimmed_mean"};
#define N_KINDS ((int)(sizeof NAMES / sizeof NAMES[0]))

int fl_strategy_parse(int *kind, const char *name) {
    for (int i = 0; i < N_KINDS; i++)
        if (!strcmp(name, NAMES[i])) {
            *kind = i;
            return FL_OK;
        }
    return FL_EINVAL;
}

const char *fl_strategy_name(int kind) {
    return kind >= 0 && kind < N_KINDS ? NAMES[kind] : "unknown";
}

int fl_strategy_needs_plaintext(int kind) {
    return kind == FL_STRATEGY_MEDIAN || kind == FL_STRATEGY_TRIMMED_MEAN;
}

void fl_strategy_config_default(fl_strategy_config *cfg, int kind) {
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    cfg->server_lr = (kind == FL_STRATEGY_FEDADAM || kind == FL_STRATEGY_FEDYOGI) ? 0.01 : 1.0;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.99;
    cfg->tau = 1e-3;
    cfg->trim = 0.1;
    cfg->prox_mu = kind == FL_STRATEGY_FEDPROX ? 0.01 : 0.0;
}

void fl_strategy_free(fl_strategy *s) {
    if (!s) return;
    free(s->m);
    free(s->v);
    memset(s, 0, sizeof *s);
}

int fl_strategy_init(fl_strategy *s, const fl_strategy_config *cfg, int64_t n,
                     char err[FL_ERR_LEN]) {
    memset(s, 0, sizeof *s);
    if (cfg->kind < 0 || cfg->kind >= N_KINDS)
        return fl_seterr(err, FL_EINVAL, "strategy: unknown kind %d", cfg->kind);
    if (n < 1) return fl_seterr(err, FL_EINVAL, "strategy: no parameters");
    if (!(cfg->server_lr > 0.0))
        return fl_seterr(err, FL_EINVAL, "strategy: server_lr must be > 0");
    if (cfg->trim < 0.0 || cfg->trim >= 0.5)
        return fl_seterr(err, FL_EINVAL, "strategy: trim must be in [0, 0.5)");
    if (cfg->beta1 < 0.0 || cfg->beta1 >= 1.0 || cfg->beta2 < 0.0 || cfg->beta2 >= 1.0 ||
        !(cfg->tau > 0.0))
        return fl_seterr(err, FL_EINVAL, "strategy: beta1, beta2 in [0, 1) and tau > 0 needed");
    s->cfg = *cfg;
    s->n = n;
    if (cfg->kind == FL_STRATEGY_FEDADAM || cfg->kind == FL_STRATEGY_FEDYOGI) {
        s->m = calloc((size_t)n, sizeof(double));
        s->v = calloc((size_t)n, sizeof(double));
        if (!s->m || !s->v) {
            fl_strategy_free(s);
            return fl_seterr(err, FL_ENOMEM, "strategy: out of memory");
        }
        /* Reddi et al. initialise v to tau^2 so the first steps are bounded. */
        for (int64_t i = 0; i < n; i++)
            s->v[i] = cfg->tau * cfg->tau;
    }
    return FL_OK;
}

static int cmp_site(const void *a, const void *b) {
    int x = (*(const fl_update *const *)a)->site, y = (*(const fl_update *const *)b)->site;
    return (x > y) - (x < y);
}

/* Pointers to the updates in ascending site order (caller frees). */
static const fl_update **sorted(const fl_update *ups, int n_ups) {
    const fl_update **p = malloc((size_t)n_ups * sizeof *p);
    if (!p) return NULL;
    for (int i = 0; i < n_ups; i++)
        p[i] = &ups[i];
    qsort(p, (size_t)n_ups, sizeof *p, cmp_site);
    return p;
}

static int check_updates(const fl_update *ups, int n_ups, int64_t n, char *err) {
    if (n_ups < 1) return fl_seterr(err, FL_EINVAL, "strategy: no updates to aggregate");
    for (int i = 0; i < n_ups; i++) {
        if (!(ups[i].weight > 0.0) || !isfinite(ups[i].weight))
            return fl_seterr(err, FL_EINVAL, "strategy: site %d has weight %g (expected > 0)",
                             ups[i].site, ups[i].weight);
        for (int64_t j = 0; j < n; j++)
            if (!isfinite(ups[i].delta[j]))
                return fl_seterr(err, FL_ENUMERIC, "strategy: site %d update[%lld] is not finite",
                                 ups[i].site, (long long)j);
    }
    return FL_OK;
}

int fl_strategy_mean(double *mean, const fl_update *ups, int n_ups, int64_t n) {
    const fl_update **p = sorted(ups, n_ups);
    if (!p) return FL_ENOMEM;
    double wsum = 0.0;
    memset(mean, 0, (size_t)n * sizeof *mean);
    for (int i = 0; i < n_ups; i++) {
        double w = p[i]->weight;
        wsum += w;
        for (int64_t j = 0; j < n; j++)
            mean[j] += w * (double)p[i]->delta[j];
    }
    for (int64_t j = 0; j < n; j++)
        mean[j] /= wsum;
    free(p);
    return FL_OK;
}

int fl_strategy_apply_mean(fl_strategy *s, float *global, const double *mean,
                           char err[FL_ERR_LEN]) {
    const fl_strategy_config *c = &s->cfg;
    for (int64_t j = 0; j < s->n; j++)
        if (!isfinite(mean[j]))
            return fl_seterr(err, FL_ENUMERIC, "strategy: aggregate[%lld] is not finite",
                             (long long)j);
    s->t++;
    switch (c->kind) {
    case FL_STRATEGY_FEDADAM:
    case FL_STRATEGY_FEDYOGI:
        for (int64_t j = 0; j < s->n; j++) {
            double d = mean[j], d2 = d * d;
            s->m[j] = c->beta1 * s->m[j] + (1.0 - c->beta1) * d;
            if (c->kind == FL_STRATEGY_FEDADAM)
                s->v[j] = c->beta2 * s->v[j] + (1.0 - c->beta2) * d2;
            else {
                double sg = (s->v[j] - d2 > 0) - (s->v[j] - d2 < 0);
                s->v[j] = s->v[j] - (1.0 - c->beta2) * d2 * sg;
            }
            global[j] =
                (float)((double)global[j] + c->server_lr * s->m[j] / (sqrt(s->v[j]) + c->tau));
        }
        break;
    default:
        for (int64_t j = 0; j < s->n; j++)
            global[j] = (float)((double)global[j] + c->server_lr * mean[j]);
    }
    return FL_OK;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Coordinate-wise median or trimmed mean of the deltas. */
static int robust(fl_strategy *s, float *global, const fl_update *ups, int n_ups) {
    float *col = malloc((size_t)n_ups * sizeof *col);
    if (!col) return FL_ENOMEM;
    int k = s->cfg.kind == FL_STRATEGY_TRIMMED_MEAN ? (int)floor(s->cfg.trim * n_ups) : 0;
    for (int64_t j = 0; j < s->n; j++) {
        for (int i = 0; i < n_ups; i++)
            col[i] = ups[i].delta[j];
        qsort(col, (size_t)n_ups, sizeof *col, cmp_float);
        double v;
        if (s->cfg.kind == FL_STRATEGY_MEDIAN) {
            v = n_ups % 2 ? col[n_ups / 2]
                          : 0.5 * ((double)col[n_ups / 2 - 1] + (double)col[n_ups / 2]);
        } else {
            double sum = 0.0;
            for (int i = k; i < n_ups - k; i++)
                sum += col[i];
            v = sum / (n_ups - 2 * k);
        }
        global[j] = (float)((double)global[j] + v);
    }
    free(col);
    s->t++;
    return FL_OK;
}

int fl_strategy_apply(fl_strategy *s, float *global, const fl_update *ups, int n_ups,
                      char err[FL_ERR_LEN]) {
    int rc = check_updates(ups, n_ups, s->n, err);
    if (rc) return rc;
    /* Sorting values per coordinate makes the robust statistics independent
     * of arrival order without sorting the updates. */
    if (fl_strategy_needs_plaintext(s->cfg.kind)) return robust(s, global, ups, n_ups);
    double *mean = malloc((size_t)s->n * sizeof *mean);
    if (!mean) return fl_seterr(err, FL_ENOMEM, "strategy: out of memory");
    rc = fl_strategy_mean(mean, ups, n_ups, s->n);
    if (!rc) rc = fl_strategy_apply_mean(s, global, mean, err);
    free(mean);
    return rc;
}
