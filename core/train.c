/* train.c: the local training loop of train.h.
 *
 * Non-private runs shuffle once per epoch (seeded, reproducible) and take
 * consecutive batches. DP-SGD runs (Abadi et al. 2016) draw each batch by
 * Poisson sampling with rate q = batch_size / n from the caller's CSPRNG, so
 * that the accountant's subsampled-Gaussian analysis applies; clip each
 * example's gradient to dp_clip inside fl_model_backward; add
 * N(0, (dp_noise * dp_clip)^2) to the summed gradient; and divide by the
 * expected batch size, not the realised one (the realised size is private).
 * With a float-safe source (add_gaussian, crypto/dpnoise.h) the noised sum
 * is snapped to the noise grid; examples are clipped a hair below dp_clip
 * (by the factor dp_noise sqrt(n_params) 2^-grid_bits) so that snapping
 * cannot raise the sum's sensitivity above dp_clip (docs/privacy.md). */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/rng.h"

void fl_train_config_default(fl_train_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->epochs = 20;
    cfg->batch_size = 64;
    cfg->optimizer = FL_OPT_ADAM;
    cfg->lr = 1e-3;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->adam_eps = 1e-8;
    cfg->patience = 5;
    cfg->seed = 1;
}

/* Optimiser state and staging buffers owned by one fl_train call. */
typedef struct trainer {
    fl_model *m;
    const fl_train_config *cfg;
    float *d_m1, *d_m2, *d_best, *d_noise, *d_ref;
    float *h_x, *h_noise, *h_loss; /* host staging */
    int32_t *h_y;
    int64_t t;         /* optimiser steps so far */
    float dp_clip_eff; /* the per-example clip actually applied */
    int host_params;   /* d_ pointers are host memory (the CPU backend) */
} trainer;

static int check_config(const fl_train_config *c, const fl_dataset *train, const fl_model *m,
                        char *err) {
    if (c->epochs < 1) return fl_seterr(err, FL_EINVAL, "train: epochs must be >= 1");
    if (c->batch_size < 1) return fl_seterr(err, FL_EINVAL, "train: batch_size must be >= 1");
    if (!(c->lr > 0.0) || !isfinite(c->lr))
        return fl_seterr(err, FL_EINVAL, "train: lr must be a positive number");
    if (c->momentum < 0.0 || c->momentum >= 1.0)
        return fl_seterr(err, FL_EINVAL, "train: momentum must be in [0, 1)");
    if (c->weight_decay < 0.0) return fl_seterr(err, FL_EINVAL, "train: weight_decay must be >= 0");
    if (c->optimizer != FL_OPT_SGD && c->optimizer != FL_OPT_ADAM)
        return fl_seterr(err, FL_EINVAL, "train: unknown optimizer");
    if (c->dp_clip < 0.0 || c->dp_noise < 0.0)
        return fl_seterr(err, FL_EINVAL, "train: dp_clip and dp_noise must be >= 0");
    if (c->dp_clip > 0.0 && (!c->noise || !c->noise->gaussian || !c->noise->uniform32))
        return fl_seterr(err, FL_EINVAL, "train: DP-SGD needs a noise source");
    if (c->dp_clip > 0.0 && c->noise->add_gaussian &&
        (c->noise->grid_bits < 1 || c->noise->grid_bits > 60 ||
         !(c->dp_noise * sqrt((double)m->n_params) < ldexp(0.5, c->noise->grid_bits))))
        return fl_seterr(err, FL_EINVAL,
                         "train: dp_noise %g is too large for a noise grid of 2^-%d of its "
                         "standard deviation with %lld parameters",
                         c->dp_noise, c->noise->grid_bits, (long long)m->n_params);
    if (c->prox_mu > 0.0 && !c->prox_ref)
        return fl_seterr(err, FL_EINVAL, "train: prox_mu needs reference parameters");
    if (train->n < 1) return fl_seterr(err, FL_EINVAL, "train: the training set is empty");
    if (train->d != m->spec.n_in)
        return fl_seterr(err, FL_EINVAL, "train: data has %d features, the model expects %d",
                         train->d, m->spec.n_in);
    if (train->n_classes != m->spec.n_classes)
        return fl_seterr(err, FL_EINVAL, "train: data has %d classes, the model expects %d",
                         train->n_classes, m->spec.n_classes);
    return FL_OK;
}

static void trainer_free(trainer *T) {
    fl_backend *be = T->m->be;
    be->ops->free(be, T->d_m1);
    be->ops->free(be, T->d_m2);
    be->ops->free(be, T->d_best);
    be->ops->free(be, T->d_noise);
    be->ops->free(be, T->d_ref);
    free(T->h_x);
    free(T->h_noise);
    free(T->h_loss);
    free(T->h_y);
}

static int trainer_init(trainer *T, fl_model *m, const fl_train_config *cfg) {
    memset(T, 0, sizeof *T);
    T->m = m;
    T->cfg = cfg;
    fl_backend *be = m->be;
    size_t pb = (size_t)m->n_params * sizeof(float);
    size_t B = (size_t)m->max_batch;
    int rc = 0;
    if (cfg->optimizer == FL_OPT_ADAM || cfg->momentum > 0.0)
        rc = be->ops->alloc(be, (void **)&T->d_m1, pb);
    if (!rc && cfg->optimizer == FL_OPT_ADAM) rc = be->ops->alloc(be, (void **)&T->d_m2, pb);
    if (!rc) rc = be->ops->alloc(be, (void **)&T->d_best, pb);
    if (!rc && cfg->dp_clip > 0.0 && !cfg->noise->add_gaussian)
        rc = be->ops->alloc(be, (void **)&T->d_noise, pb);
    if (!rc && cfg->prox_mu > 0.0) {
        rc = be->ops->alloc(be, (void **)&T->d_ref, pb);
        if (!rc) rc = be->ops->upload(be, T->d_ref, cfg->prox_ref, pb);
    }
    if (rc) return rc;
    T->h_x = malloc(B * (size_t)m->spec.n_in * sizeof(float));
    T->h_y = malloc(B * sizeof(int32_t));
    T->h_loss = malloc(B * sizeof(float));
    if (cfg->dp_clip > 0.0) T->h_noise = malloc(pb);
    if (!T->h_x || !T->h_y || !T->h_loss || (cfg->dp_clip > 0.0 && !T->h_noise)) return FL_ENOMEM;
    T->host_params = !strcmp(be->ops->name, "cpu");
    T->dp_clip_eff = (float)cfg->dp_clip;
    if (cfg->dp_clip > 0.0 && cfg->noise->add_gaussian)
        T->dp_clip_eff = (float)(cfg->dp_clip * (1.0 - cfg->dp_noise * sqrt((double)m->n_params) *
                                                           ldexp(1.0, -cfg->noise->grid_bits)));
    return FL_OK;
}

/* Stages rows idx[0..rows) of ds into the model's input and label buffers. */
static int stage_batch(trainer *T, const fl_dataset *ds, const int32_t *idx, int rows) {
    fl_model *m = T->m;
    size_t d = (size_t)ds->d;
    for (int i = 0; i < rows; i++) {
        memcpy(T->h_x + (size_t)i * d, ds->X + (size_t)idx[i] * d, d * sizeof(float));
        T->h_y[i] = ds->y[idx[i]];
    }
    int rc = m->be->ops->upload(m->be, m->d_act[0], T->h_x, (size_t)rows * d * sizeof(float));
    if (!rc) rc = m->be->ops->upload(m->be, m->d_y, T->h_y, (size_t)rows * sizeof(int32_t));
    return rc;
}

/* Sum of the per-row losses of the last backward pass. */
static int batch_loss(trainer *T, int rows, double *sum) {
    int rc =
        T->m->be->ops->download(T->m->be, T->h_loss, T->m->d_loss, (size_t)rows * sizeof(float));
    if (rc) return rc;
    for (int i = 0; i < rows; i++)
        *sum += T->h_loss[i];
    return FL_OK;
}

static int optimizer_step(trainer *T) {
    fl_model *m = T->m;
    const fl_train_config *c = T->cfg;
    const fl_backend_ops *o = m->be->ops;
    int rc;
    if (c->prox_mu > 0.0) {
        /* grad of (mu/2)||w - w_ref||^2 is mu (w - w_ref) */
        if ((rc = o->axpy(m->be, m->d_grads, (float)c->prox_mu, m->d_params, m->n_params)))
            return rc;
        if ((rc = o->axpy(m->be, m->d_grads, -(float)c->prox_mu, T->d_ref, m->n_params))) return rc;
    }
    T->t++;
    if (c->optimizer == FL_OPT_ADAM)
        return o->adam_step(m->be, m->d_params, T->d_m1, T->d_m2, m->d_grads, m->n_params,
                            (float)c->lr, (float)c->beta1, (float)c->beta2, (float)c->adam_eps,
                            (float)c->weight_decay, T->t);
    return o->sgd_step(m->be, m->d_params, T->d_m1, m->d_grads, m->n_params, (float)c->lr,
                       (float)c->momentum, (float)c->weight_decay);
}

/* One non-private epoch over a fresh seeded permutation. */
static int epoch_plain(trainer *T, const fl_dataset *ds, int32_t *perm, fl_rng *rng,
                       double *loss_sum, int64_t *seen) {
    fl_model *m = T->m;
    int B = T->cfg->batch_size < m->max_batch ? T->cfg->batch_size : m->max_batch;
    fl_rng_shuffle_i32(rng, perm, ds->n);
    for (int64_t i = 0; i < ds->n; i += B) {
        int rows = (int)(ds->n - i < B ? ds->n - i : B);
        int rc = stage_batch(T, ds, perm + i, rows);
        if (!rc) rc = fl_model_forward(m, rows);
        if (!rc) rc = fl_model_backward(m, rows, 1.0f / (float)rows, 0.0f, 0);
        if (!rc) rc = batch_loss(T, rows, loss_sum);
        if (!rc) rc = optimizer_step(T);
        if (rc) return rc;
        *seen += rows;
    }
    return FL_OK;
}

/* grads <- (grads + noise) * inv_b. A float-safe source noises and snaps
 * in place: on the CPU backend d_grads is host memory (backend.h), on
 * others it goes through the host staging buffer. */
static int dp_noise_step(trainer *T, float inv_b) {
    fl_model *m = T->m;
    const fl_train_config *c = T->cfg;
    const fl_backend_ops *o = m->be->ops;
    const fl_noise_source *src = c->noise;
    size_t n = (size_t)m->n_params, bytes = n * sizeof(float);
    double stddev = c->dp_noise * c->dp_clip;
    int rc;
    if (!(stddev > 0.0)) return o->scal(m->be, m->d_grads, inv_b, m->n_params);
    if (src->add_gaussian) {
        float *h = T->host_params ? m->d_grads : T->h_noise;
        if (!T->host_params && (rc = o->download(m->be, h, m->d_grads, bytes))) return rc;
        if ((rc = src->add_gaussian(src->ctx, h, n, stddev, inv_b))) return rc;
        return T->host_params ? 0 : o->upload(m->be, m->d_grads, h, bytes);
    }
    rc = src->gaussian(src->ctx, T->h_noise, n, stddev);
    if (!rc) rc = o->upload(m->be, T->d_noise, T->h_noise, bytes);
    if (!rc) rc = o->axpy(m->be, m->d_grads, 1.0f, T->d_noise, m->n_params);
    if (!rc) rc = o->scal(m->be, m->d_grads, inv_b, m->n_params);
    return rc;
}

/* One DP-SGD epoch: n / batch_size steps, each on a Poisson sample. */
static int epoch_private(trainer *T, const fl_dataset *ds, int32_t *sample, uint32_t *coins,
                         double *loss_sum, int64_t *seen) {
    fl_model *m = T->m;
    const fl_train_config *c = T->cfg;
    const fl_backend_ops *o = m->be->ops;
    double q = (double)c->batch_size / (double)ds->n;
    if (q > 1.0) q = 1.0;
    /* include example i when coins[i] < q * 2^32 (exact for q = 1) */
    uint64_t thresh = (uint64_t)ldexp(q, 32);
    int64_t steps = (ds->n + c->batch_size - 1) / c->batch_size;
    float inv_b = 1.0f / (float)c->batch_size;
    for (int64_t s = 0; s < steps; s++) {
        int rc = c->noise->uniform32(c->noise->ctx, coins, (size_t)ds->n);
        if (rc) return rc;
        int64_t k = 0;
        for (int64_t i = 0; i < ds->n; i++)
            if ((uint64_t)coins[i] < thresh) sample[k++] = (int32_t)i;
        /* The first chunk overwrites the gradient; an empty sample zeroes it.
         * A Poisson batch can exceed the workspace: accumulate in chunks. */
        if (k == 0 && (rc = o->zero(m->be, m->d_grads, (size_t)m->n_params * sizeof(float))))
            return rc;
        for (int64_t i = 0; i < k; i += m->max_batch) {
            int rows = (int)(k - i < m->max_batch ? k - i : m->max_batch);
            rc = stage_batch(T, ds, sample + i, rows);
            if (!rc) rc = fl_model_forward(m, rows);
            if (!rc) rc = fl_model_backward(m, rows, 1.0f, T->dp_clip_eff, i > 0);
            if (!rc) rc = batch_loss(T, rows, loss_sum);
            if (rc) return rc;
        }
        *seen += k;
        if ((rc = dp_noise_step(T, inv_b))) return rc;
        if ((rc = optimizer_step(T))) return rc;
    }
    return FL_OK;
}

int fl_model_evaluate(fl_eval *ev, fl_model *m, const fl_dataset *ds) {
    int k = fl_model_spec_outputs(&m->spec);
    float *p = malloc((size_t)(ds->n > 0 ? ds->n : 1) * (size_t)k * sizeof(float));
    if (!p) return FL_ENOMEM;
    int rc = fl_model_predict(m, p, ds->X, ds->n);
    if (!rc) rc = fl_evaluate_probs(ev, p, ds->y, ds->n, k);
    free(p);
    return rc;
}

int fl_train(fl_train_result *res, fl_model *m, const fl_dataset *train, const fl_dataset *val,
             const fl_train_config *cfg, char err[FL_ERR_LEN]) {
    memset(res, 0, sizeof *res);
    res->best_val_loss = NAN;
    int rc = check_config(cfg, train, m, err);
    if (rc) return rc;
    int dp = cfg->dp_clip > 0.0;
    trainer T;
    int32_t *idx = malloc((size_t)train->n * sizeof(int32_t));
    uint32_t *coins = dp ? malloc((size_t)train->n * sizeof(uint32_t)) : NULL;
    rc = trainer_init(&T, m, cfg);
    if (!rc && (!idx || (dp && !coins))) rc = FL_ENOMEM;
    if (rc) {
        fl_seterr(err, rc, "train: %s",
                  rc == FL_ENOMEM ? "out of memory" : fl_backend_error(m->be));
        goto cleanup;
    }
    for (int64_t i = 0; i < train->n; i++)
        idx[i] = (int32_t)i;
    fl_rng rng;
    fl_rng_seed(&rng, cfg->seed);
    const fl_backend_ops *o = m->be->ops;
    size_t pbytes = (size_t)m->n_params * sizeof(float);
    int use_val = val && val->n > 0;
    double best = INFINITY;
    int since_best = 0;
    if (dp)
        res->sample_rate = cfg->batch_size >= train->n ? 1.0 : (double)cfg->batch_size / train->n;
    for (int e = 1; e <= cfg->epochs; e++) {
        double loss_sum = 0.0;
        int64_t seen = 0;
        int64_t t0 = T.t;
        rc = dp ? epoch_private(&T, train, idx, coins, &loss_sum, &seen)
                : epoch_plain(&T, train, idx, &rng, &loss_sum, &seen);
        if (rc) {
            fl_seterr(err, rc, "train: epoch %d: %s", e, fl_backend_error(m->be));
            goto cleanup;
        }
        res->steps += T.t - t0;
        res->examples += seen;
        res->epochs_run = e;
        fl_epoch_report r = {e, seen ? loss_sum / (double)seen : NAN, NAN, NAN, 0};
        if (!isfinite(r.train_loss) && seen) {
            rc = fl_seterr(err, FL_ENUMERIC,
                           "train: epoch %d: the training loss is not finite (lower the "
                           "learning rate)",
                           e);
            goto cleanup;
        }
        if (use_val) {
            fl_eval ev;
            if ((rc = fl_model_evaluate(&ev, m, val))) {
                fl_seterr(err, rc, "train: validation: %s", fl_backend_error(m->be));
                goto cleanup;
            }
            r.val_loss = ev.loss;
            r.val_accuracy = ev.accuracy;
            if (ev.loss < best) {
                best = ev.loss;
                since_best = 0;
                r.improved = 1;
                res->best_epoch = e;
                res->best_val_loss = ev.loss;
                if ((rc = o->copy(m->be, T.d_best, m->d_params, pbytes))) goto cleanup;
            } else {
                since_best++;
            }
        } else {
            res->best_epoch = e;
        }
        if (cfg->on_epoch) cfg->on_epoch(cfg->ctx, &r);
        if (use_val && cfg->patience > 0 && since_best >= cfg->patience) break;
    }
    if (use_val && res->best_epoch > 0 && res->best_epoch != res->epochs_run)
        rc = o->copy(m->be, m->d_params, T.d_best, pbytes);
    if (!rc) rc = o->sync(m->be);
    if (rc) fl_seterr(err, rc, "train: %s", fl_backend_error(m->be));
cleanup:
    trainer_free(&T);
    free(idx);
    free(coins);
    return rc;
}
