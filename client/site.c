/* site.c: see site.h. */
#include "site.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"

int fl_site_features(const fl_site *s) {
    return s->enc.n_features;
}

int fl_site_classes(const fl_site *s) {
    return s->enc.n_classes;
}

void fl_site_close(fl_site *s) {
    if (!s) return;
    fl_dataset_free(&s->train);
    fl_dataset_free(&s->val);
    free(s->y);
    free(s->train_rows);
    free(s->val_rows);
    fl_encoder_free(&s->enc);
    fl_csv_free(&s->csv);
    fl_schema_free(&s->schema);
    fl_backend_close(s->be);
    memset(s, 0, sizeof *s);
}

int fl_site_open(fl_site *s, const char *csv_path, const char *schema_path, double val_frac,
                 uint64_t seed, enum fl_device device, char err[FL_ERR_LEN]) {
    memset(s, 0, sizeof *s);
    int32_t *test = NULL;
    int64_t n_test = 0;
    int rc = fl_schema_load(&s->schema, schema_path, err);
    if (!rc) rc = fl_csv_load(&s->csv, csv_path, err);
    if (!rc) rc = fl_encoder_init(&s->enc, &s->schema, &s->csv, err);
    if (rc) goto fail;
    for (int c = 0; c < s->enc.n_cols; c++) {
        const fl_enc_col *col = &s->enc.cols[c];
        int declared = 0;
        for (int l = 0; l < s->schema.n_levels; l++)
            if (!strcmp(s->schema.level_cols[l], col->name)) declared = 1;
        if (col->categorical && !declared) {
            rc = fl_seterr(err, FL_EINVAL,
                           "%s: categorical column '%s' needs declared [levels] in a federation "
                           "(every site must one-hot encode it identically)",
                           schema_path, col->name);
            goto fail;
        }
    }
    s->y = malloc((size_t)(s->csv.n_rows > 0 ? s->csv.n_rows : 1) * sizeof(int32_t));
    if (!s->y) {
        rc = fl_seterr(err, FL_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = fl_encoder_labels(s->y, &s->enc, &s->csv, err))) goto fail;
    rc = fl_split_stratified(&s->train_rows, &s->n_train, &s->val_rows, &s->n_val, &test, &n_test,
                             s->y, s->csv.n_rows, s->enc.n_classes, val_frac, 0.0, seed);
    free(test);
    if (rc) {
        fl_seterr(err, rc, "%s: cannot split the rows", csv_path);
        goto fail;
    }
    if ((rc = fl_backend_open(&s->be, device, err))) goto fail;
    return FL_OK;
fail:
    fl_site_close(s);
    return rc;
}

/* The flattened layout, shared with the wire conversion (proto/wire_stats.c):
 * [n_rows, (count, sum, sumsq) for every column, level counts of every
 * categorical column in column order]. */
static int64_t total_levels(const fl_encoder *enc) {
    int64_t n = 0;
    for (int c = 0; c < enc->n_cols; c++)
        if (enc->cols[c].categorical) n += enc->cols[c].n_levels;
    return n;
}

static int64_t stats_len(const fl_encoder *enc) {
    return 1 + 3 * (int64_t)enc->n_cols + total_levels(enc);
}

int fl_site_n_cols(const fl_site *s) {
    return s->enc.n_cols;
}

void fl_site_level_offsets(const fl_site *s, uint32_t *offsets) {
    uint32_t at = 0;
    for (int c = 0; c < s->enc.n_cols; c++) {
        offsets[c] = at;
        if (s->enc.cols[c].categorical) at += (uint32_t)s->enc.cols[c].n_levels;
    }
    offsets[s->enc.n_cols] = at;
}

int fl_site_stats(double **out, int64_t *n, fl_site *s, char err[FL_ERR_LEN]) {
    fl_stats st;
    *out = NULL;
    int rc = fl_stats_init(&st, &s->enc);
    if (rc) return fl_seterr(err, rc, "out of memory");
    rc = fl_stats_accumulate(&st, &s->enc, &s->csv, s->train_rows, s->n_train, err);
    int64_t len = stats_len(&s->enc), k = 1 + 3 * (int64_t)s->enc.n_cols;
    double *v = rc ? NULL : calloc((size_t)len, sizeof(double));
    if (!rc && !v) rc = fl_seterr(err, FL_ENOMEM, "out of memory");
    for (int c = 0; !rc && c < s->enc.n_cols; c++) {
        if (s->enc.cols[c].categorical) {
            int64_t nonmissing = 0;
            for (int l = 0; l < s->enc.cols[c].n_levels; l++) {
                v[k++] = (double)st.level_count[c][l];
                nonmissing += st.level_count[c][l];
            }
            v[1 + 3 * c] = (double)nonmissing;
        } else {
            v[1 + 3 * c] = (double)st.count[c];
            v[2 + 3 * c] = st.sum[c];
            v[3 + 3 * c] = st.sumsq[c];
        }
    }
    if (!rc) v[0] = (double)s->n_train;
    fl_stats_free(&st);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n = len;
    return FL_OK;
}

int fl_site_encode(fl_site *s, const double *stats, int64_t n, char err[FL_ERR_LEN]) {
    if (n != stats_len(&s->enc))
        return fl_seterr(err, FL_EINVAL,
                         "federation statistics have %lld values, this site's "
                         "schema needs %lld",
                         (long long)n, (long long)stats_len(&s->enc));
    fl_stats st;
    int rc = fl_stats_init(&st, &s->enc);
    if (rc) return fl_seterr(err, rc, "out of memory");
    int64_t k = 1 + 3 * (int64_t)s->enc.n_cols;
    for (int c = 0; c < s->enc.n_cols; c++) {
        if (s->enc.cols[c].categorical) {
            for (int l = 0; l < s->enc.cols[c].n_levels; l++)
                st.level_count[c][l] = (int64_t)llround(stats[k++]);
        } else {
            st.count[c] = (int64_t)llround(stats[1 + 3 * c]);
            st.sum[c] = stats[2 + 3 * c];
            st.sumsq[c] = stats[3 + 3 * c];
        }
    }
    rc = fl_encoder_finish(&s->enc, &st);
    fl_stats_free(&st);
    fl_dataset_free(&s->train);
    fl_dataset_free(&s->val);
    if (!rc)
        rc = fl_dataset_encode(&s->train, &s->enc, &s->csv, s->y, s->train_rows, s->n_train, err);
    if (!rc) rc = fl_dataset_encode(&s->val, &s->enc, &s->csv, s->y, s->val_rows, s->n_val, err);
    s->encoded = rc == FL_OK;
    return rc;
}

/* A model on the site's backend holding the serialised parameters. */
static int load_model(fl_model *m, float **params, fl_site *s, const uint8_t *blob, size_t len,
                      int batch, uint64_t seed, char *err) {
    fl_model_spec spec;
    int rc = fl_model_deserialize(&spec, params, blob, len, err);
    if (rc) return rc;
    if (spec.n_in != s->enc.n_features || spec.n_classes != s->enc.n_classes) {
        free(*params);
        *params = NULL;
        return fl_seterr(err, FL_EINVAL,
                         "global model expects %d features and %d classes; this "
                         "site has %d and %d",
                         spec.n_in, spec.n_classes, s->enc.n_features, s->enc.n_classes);
    }
    rc = fl_model_init(m, s->be, &spec, batch, seed, err);
    if (!rc) rc = fl_model_set_params(m, *params);
    if (rc) {
        fl_model_free(m);
        free(*params);
        *params = NULL;
    }
    return rc;
}

int fl_site_train(float **delta, int64_t *n_params, double *train_loss, fl_site *s,
                  const uint8_t *model, size_t model_len, const fl_train_config *cfg,
                  char err[FL_ERR_LEN]) {
    *delta = NULL;
    if (!s->encoded) return fl_seterr(err, FL_ESTATE, "train before the statistics round");
    fl_model m;
    float *global = NULL;
    fl_train_config c = *cfg;
    int rc = load_model(&m, &global, s, model, model_len, cfg->batch_size, cfg->seed, err);
    if (rc) return rc;
    if (c.prox_mu > 0.0) c.prox_ref = global;
    c.patience = 0; /* the federation decides when to stop, not the site */
    fl_train_result res;
    rc = fl_train(&res, &m, &s->train, NULL, &c, err);
    float *local = rc ? NULL : malloc((size_t)m.n_params * sizeof(float));
    if (!rc && !local) rc = fl_seterr(err, FL_ENOMEM, "out of memory");
    if (!rc) rc = fl_model_get_params(&m, local);
    if (!rc) {
        for (int64_t i = 0; i < m.n_params; i++)
            local[i] -= global[i];
        *delta = local;
        *n_params = m.n_params;
        local = NULL;
        fl_eval ev;
        *train_loss = fl_model_evaluate(&ev, &m, &s->train) == FL_OK ? ev.loss : NAN;
    }
    free(local);
    free(global);
    fl_model_free(&m);
    return rc;
}

int fl_score_bin(float p, int bins) {
    int b = (int)(p * (float)bins);
    return b < 0 ? 0 : (b >= bins ? bins - 1 : b);
}

void fl_site_eval_free(fl_site_eval *ev) {
    if (!ev) return;
    free(ev->hist);
    ev->hist = NULL;
    free(ev->scores);
    ev->scores = NULL;
}

int fl_site_evaluate(fl_site_eval *ev, fl_site *s, const uint8_t *model, size_t model_len, int bins,
                     char err[FL_ERR_LEN]) {
    memset(ev, 0, sizeof *ev);
    if (!s->encoded) return fl_seterr(err, FL_ESTATE, "evaluate before the statistics round");
    fl_model m;
    float *params = NULL, *probs = NULL;
    int rc = load_model(&m, &params, s, model, model_len, 256, 0, err);
    if (rc) return rc;
    int k = fl_model_spec_outputs(&m.spec);
    int64_t n = s->val.n;
    probs = malloc((size_t)(n > 0 ? n : 1) * (size_t)k * sizeof(float));
    if (!probs) rc = fl_seterr(err, FL_ENOMEM, "out of memory");
    if (!rc && n > 0) rc = fl_model_predict(&m, probs, s->val.X, n);
    if (!rc && k == 1) {
        ev->bins = bins;
        ev->hist = calloc(2 * (size_t)bins, sizeof(uint64_t));
        if (!ev->hist) rc = fl_seterr(err, FL_ENOMEM, "out of memory");
    }
    if (!rc) {
        ev->count = n;
        ev->loss_sum = n > 0 ? fl_logloss(probs, s->val.y, n, k) * (double)n : 0.0;
        ev->correct = n > 0 ? (int64_t)llround(fl_accuracy(probs, s->val.y, n, k) * (double)n) : 0;
        if (k == 1)
            for (int64_t i = 0; i < n; i++)
                ev->hist[(s->val.y[i] ? bins : 0) + fl_score_bin(probs[i], bins)]++;
    }
    if (!rc && k == 1) { /* the scores stay for the fairness audit */
        ev->scores = probs;
        probs = NULL;
    }
    free(probs);
    free(params);
    fl_model_free(&m);
    if (rc) fl_site_eval_free(ev);
    return rc;
}
