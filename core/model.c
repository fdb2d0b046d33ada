/* model.c: logistic regression and the MLP on the backend table (model.h).
 * The three GEMMs of a dense layer and their column-major arguments are
 * derived in docs/kernels.md. */
#include "core/bytes.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* ======================= spec ======================= */

int fl_model_spec_outputs(const fl_model_spec *spec) {
    return spec->n_classes == 2 ? 1 : spec->n_classes;
}

static int layer_in(const fl_model_spec *s, int l) {
    return l == 0 ? s->n_in : s->hidden[l - 1];
}

static int layer_out(const fl_model_spec *s, int l) {
    return l == s->n_hidden ? fl_model_spec_outputs(s) : s->hidden[l];
}

int64_t fl_model_spec_nparams(const fl_model_spec *s) {
    int64_t n = 0;
    for (int l = 0; l <= s->n_hidden; l++)
        n += (int64_t)layer_out(s, l) * layer_in(s, l) + layer_out(s, l);
    return n;
}

int64_t fl_model_spec_macs(const fl_model_spec *s) {
    int64_t n = 0;
    for (int l = 0; l <= s->n_hidden; l++)
        n += (int64_t)layer_out(s, l) * layer_in(s, l);
    return n;
}

int fl_model_spec_parse(fl_model_spec *spec, const char *text, int n_in, int n_classes,
                        char err[FL_ERR_LEN]) {
    memset(spec, 0, sizeof *spec);
    if (n_in < 1 || n_in > (1 << 24))
        return fl_seterr(err, FL_EINVAL, "model: %d input features (expected 1..16777216)", n_in);
    if (n_classes < 2 || n_classes > FL_MAX_CLASSES)
        return fl_seterr(err, FL_EINVAL, "model: %d classes (expected 2..%d)", n_classes,
                         FL_MAX_CLASSES);
    spec->n_in = n_in;
    spec->n_classes = n_classes;
    if (!strcmp(text, "logreg")) return FL_OK;
    if (strncmp(text, "mlp:", 4) != 0)
        return fl_seterr(err, FL_EINVAL, "model '%s': expected 'logreg' or 'mlp:H1,H2,...'", text);
    const char *p = text + 4;
    while (*p) {
        char *end;
        long h = strtol(p, &end, 10);
        if (end == p || h < 1 || h > 65536 || (*end && *end != ','))
            return fl_seterr(err, FL_EINVAL,
                             "model '%s': expected hidden widths in 1..65536 separated by ','",
                             text);
        if (spec->n_hidden == FL_MAX_HIDDEN)
            return fl_seterr(err, FL_EINVAL, "model '%s': at most %d hidden layers", text,
                             FL_MAX_HIDDEN);
        spec->hidden[spec->n_hidden++] = (int)h;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) return fl_seterr(err, FL_EINVAL, "model '%s': trailing ','", text);
    }
    if (spec->n_hidden == 0)
        return fl_seterr(err, FL_EINVAL, "model '%s': expected at least one hidden width", text);
    return FL_OK;
}

void fl_model_spec_name(char buf[FL_SPEC_LEN], const fl_model_spec *spec) {
    if (spec->n_hidden == 0) {
        snprintf(buf, FL_SPEC_LEN, "logreg");
        return;
    }
    int n = snprintf(buf, FL_SPEC_LEN, "mlp:");
    for (int l = 0; l < spec->n_hidden && n < FL_SPEC_LEN; l++)
        n += snprintf(buf + n, (size_t)(FL_SPEC_LEN - n), l ? ",%d" : "%d", spec->hidden[l]);
}

/* ======================= lifetime ======================= */

static int be_alloc(fl_model *m, void **p, size_t bytes) {
    return m->be->ops->alloc(m->be, p, bytes);
}

void fl_model_free(fl_model *m) {
    if (!m || !m->be) return;
    const fl_backend_ops *o = m->be->ops;
    o->free(m->be, m->d_params);
    o->free(m->be, m->d_grads);
    for (int l = 0; l <= m->n_layers; l++)
        o->free(m->be, m->d_act[l]);
    for (int l = 0; l < m->n_layers; l++)
        o->free(m->be, m->d_dz[l]);
    o->free(m->be, m->d_loss);
    o->free(m->be, m->d_y);
    o->free(m->be, m->d_sq_a);
    o->free(m->be, m->d_sq_g);
    o->free(m->be, m->d_norm);
    o->free(m->be, m->d_clipf);
    memset(m, 0, sizeof *m);
}

int fl_model_init(fl_model *m, fl_backend *be, const fl_model_spec *spec, int max_batch,
                  uint64_t seed, char err[FL_ERR_LEN]) {
    memset(m, 0, sizeof *m);
    if (max_batch < 1) return fl_seterr(err, FL_EINVAL, "model: batch size must be >= 1");
    m->spec = *spec;
    m->be = be;
    m->max_batch = max_batch;
    m->n_layers = spec->n_hidden + 1;
    int64_t off = 0;
    for (int l = 0; l < m->n_layers; l++) {
        fl_layer *L = &m->layer[l];
        L->in = layer_in(spec, l);
        L->out = layer_out(spec, l);
        L->w_off = off;
        off += (int64_t)L->in * L->out;
        L->b_off = off;
        off += L->out;
    }
    m->n_params = off;
    size_t B = (size_t)max_batch;
    int rc = be_alloc(m, (void **)&m->d_params, (size_t)off * sizeof(float));
    if (!rc) rc = be_alloc(m, (void **)&m->d_grads, (size_t)off * sizeof(float));
    for (int l = 0; l <= m->n_layers && !rc; l++) {
        int w = l == 0 ? spec->n_in : m->layer[l - 1].out;
        rc = be_alloc(m, (void **)&m->d_act[l], B * (size_t)w * sizeof(float));
    }
    for (int l = 0; l < m->n_layers && !rc; l++)
        rc = be_alloc(m, (void **)&m->d_dz[l], B * (size_t)m->layer[l].out * sizeof(float));
    if (!rc) rc = be_alloc(m, (void **)&m->d_loss, B * sizeof(float));
    if (!rc) rc = be_alloc(m, (void **)&m->d_y, B * sizeof(int32_t));
    if (!rc) rc = be_alloc(m, (void **)&m->d_sq_a, B * sizeof(float));
    if (!rc) rc = be_alloc(m, (void **)&m->d_sq_g, B * sizeof(float));
    if (!rc) rc = be_alloc(m, (void **)&m->d_norm, B * sizeof(float));
    if (!rc) rc = be_alloc(m, (void **)&m->d_clipf, B * sizeof(float));
    if (rc) {
        fl_seterr(err, rc, "model: %s", fl_backend_error(be));
        goto fail;
    }
    if (spec->n_hidden > 0) {
        /* He-uniform (He et al. 2015) for ReLU layers: U(-a, a), a = sqrt(6 / fan_in). */
        float *host = calloc((size_t)off, sizeof(float));
        if (!host) {
            rc = fl_seterr(err, FL_ENOMEM, "model: out of memory");
            goto fail;
        }
        fl_rng rng;
        fl_rng_seed(&rng, seed);
        for (int l = 0; l < m->n_layers; l++) {
            const fl_layer *L = &m->layer[l];
            double a = sqrt(6.0 / L->in);
            for (int64_t i = 0; i < (int64_t)L->in * L->out; i++)
                host[L->w_off + i] = (float)((2.0 * fl_rng_uniform(&rng) - 1.0) * a);
        }
        rc = fl_model_set_params(m, host);
        free(host);
        if (rc) {
            fl_seterr(err, rc, "model: %s", fl_backend_error(be));
            goto fail;
        }
    }
    return FL_OK;
fail:
    fl_model_free(m);
    return rc;
}

int fl_model_get_params(const fl_model *m, float *params) {
    return m->be->ops->download(m->be, params, m->d_params, (size_t)m->n_params * sizeof(float));
}

int fl_model_set_params(fl_model *m, const float *params) {
    return m->be->ops->upload(m->be, m->d_params, params, (size_t)m->n_params * sizeof(float));
}

/* ======================= forward / backward ======================= */

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_) return rc_;                                                                       \
    } while (0)

int fl_model_forward(fl_model *m, int rows) {
    const fl_backend_ops *o = m->be->ops;
    if (rows < 1 || rows > m->max_batch) return FL_EINVAL;
    for (int l = 0; l < m->n_layers; l++) {
        const fl_layer *L = &m->layer[l];
        const float *W = m->d_params + L->w_off, *b = m->d_params + L->b_off;
        /* Z (B, out) = A (B, in) W^T: column-major Z^T = op_T(W) A^T. */
        TRY(o->sgemm(m->be, 1, 0, L->out, rows, L->in, 1.0f, W, L->in, m->d_act[l], L->in, 0.0f,
                     m->d_act[l + 1], L->out));
        TRY(o->add_bias(m->be, m->d_act[l + 1], b, rows, L->out));
        if (l < m->n_layers - 1)
            TRY(o->relu_forward(m->be, m->d_act[l + 1], m->d_act[l + 1], (int64_t)rows * L->out));
    }
    return FL_OK;
}

/* dW (+)= dZ^T A and db (+)= colsum(dZ) for layer l. */
static int weight_grads(fl_model *m, int l, int rows, float beta) {
    const fl_backend_ops *o = m->be->ops;
    const fl_layer *L = &m->layer[l];
    TRY(o->sgemm(m->be, 0, 1, L->in, L->out, rows, 1.0f, m->d_act[l], L->in, m->d_dz[l], L->out,
                 beta, m->d_grads + L->w_off, L->in));
    return o->col_sum(m->be, m->d_grads + L->b_off, m->d_dz[l], rows, L->out, beta);
}

/* dZ_{l-1} = (dZ_l W_l) * relu'(A_l). */
static int input_grads(fl_model *m, int l, int rows) {
    const fl_backend_ops *o = m->be->ops;
    const fl_layer *L = &m->layer[l];
    const float *W = m->d_params + L->w_off;
    TRY(o->sgemm(m->be, 0, 0, L->in, rows, L->out, 1.0f, W, L->in, m->d_dz[l], L->out, 0.0f,
                 m->d_dz[l - 1], L->in));
    return o->relu_backward(m->be, m->d_dz[l - 1], m->d_dz[l - 1], m->d_act[l],
                            (int64_t)rows * L->in);
}

int fl_model_backward(fl_model *m, int rows, float scale, float clip, int accumulate) {
    const fl_backend_ops *o = m->be->ops;
    if (rows < 1 || rows > m->max_batch) return FL_EINVAL;
    int last = m->n_layers - 1;
    int k = fl_model_spec_outputs(&m->spec);
    float beta = accumulate ? 1.0f : 0.0f;
    /* With clipping, the loss gradient starts unscaled: clip factors apply to
     * each example's own gradient, and scale is folded in with them. */
    float s0 = clip > 0.0f ? 1.0f : scale;
    if (k == 1)
        TRY(o->sigmoid_xent(m->be, m->d_loss, m->d_dz[last], m->d_act[last + 1], m->d_y, rows, s0));
    else
        TRY(o->softmax_xent(m->be, m->d_loss, m->d_dz[last], m->d_act[last + 1], m->d_y, rows, k,
                            s0));
    if (clip <= 0.0f) {
        for (int l = last; l >= 0; l--) {
            TRY(weight_grads(m, l, rows, beta));
            if (l > 0) TRY(input_grads(m, l, rows));
        }
        return FL_OK;
    }
    /* DP-SGD: every layer's dZ first (they do not depend on the weight
     * gradients), then each example's norm, then the same weight GEMMs on
     * row-scaled dZ. Backprop is linear in each example's upstream gradient,
     * so scaling row i of every dZ_l by s_i scales example i's whole gradient. */
    for (int l = last; l > 0; l--)
        TRY(input_grads(m, l, rows));
    TRY(o->zero(m->be, m->d_norm, (size_t)rows * sizeof(float)));
    for (int l = 0; l <= last; l++) {
        TRY(o->row_sqnorm(m->be, m->d_sq_a, m->d_act[l], rows, m->layer[l].in, 0));
        TRY(o->row_sqnorm(m->be, m->d_sq_g, m->d_dz[l], rows, m->layer[l].out, 0));
        TRY(o->norm_combine(m->be, m->d_norm, m->d_sq_a, m->d_sq_g, rows));
    }
    TRY(o->clip_factors(m->be, m->d_clipf, m->d_norm, rows, clip));
    if (scale != 1.0f) TRY(o->scal(m->be, m->d_clipf, scale, rows));
    for (int l = last; l >= 0; l--) {
        TRY(o->row_scale(m->be, m->d_dz[l], m->d_clipf, rows, m->layer[l].out));
        TRY(weight_grads(m, l, rows, beta));
    }
    return FL_OK;
}

int fl_model_predict(fl_model *m, float *probs, const float *X, int64_t n) {
    const fl_backend_ops *o = m->be->ops;
    int k = fl_model_spec_outputs(&m->spec);
    int last = m->n_layers - 1;
    for (int64_t i = 0; i < n; i += m->max_batch) {
        int rows = (int)(n - i < m->max_batch ? n - i : m->max_batch);
        TRY(o->upload(m->be, m->d_act[0], X + i * m->spec.n_in,
                      (size_t)rows * m->spec.n_in * sizeof(float)));
        TRY(fl_model_forward(m, rows));
        /* d_dz[last] is free outside backward: use it for the probabilities. */
        TRY(o->predict(m->be, m->d_dz[last], m->d_act[last + 1], rows, k));
        TRY(o->download(m->be, probs + i * k, m->d_dz[last], (size_t)rows * k * sizeof(float)));
    }
    return FL_OK;
}

/* ======================= serialisation ======================= */

static const char MAGIC[8] = {'C', 'O', 'H', 'O', 'R', 'T', 'M', '1'};

int fl_model_serialize(uint8_t **buf, size_t *len, const fl_model_spec *spec, const float *params) {
    int64_t np = fl_model_spec_nparams(spec);
    size_t hdr = 8 + 4 * (3 + (size_t)spec->n_hidden + 1) + 8;
    size_t n = hdr + (size_t)np * 4;
    uint8_t *b = malloc(n), *p = b;
    if (!b) return FL_ENOMEM;
    memcpy(p, MAGIC, 8);
    p += 8;
    fl_put_le32(p, 1), p += 4; /* format version */
    fl_put_le32(p, (uint32_t)spec->n_in), p += 4;
    fl_put_le32(p, (uint32_t)spec->n_classes), p += 4;
    fl_put_le32(p, (uint32_t)spec->n_hidden), p += 4;
    for (int l = 0; l < spec->n_hidden; l++)
        fl_put_le32(p, (uint32_t)spec->hidden[l]), p += 4;
    fl_put_le32(p, (uint32_t)np), fl_put_le32(p + 4, (uint32_t)((uint64_t)np >> 32)), p += 8;
    for (int64_t i = 0; i < np; i++) {
        uint32_t w;
        memcpy(&w, &params[i], 4);
        fl_put_le32(p, w), p += 4;
    }
    *buf = b;
    *len = n;
    return FL_OK;
}

int fl_model_deserialize(fl_model_spec *spec, float **params, const uint8_t *buf, size_t len,
                         char err[FL_ERR_LEN]) {
    *params = NULL;
    memset(spec, 0, sizeof *spec);
    if (len < 8 + 16 || memcmp(buf, MAGIC, 8) != 0)
        return fl_seterr(err, FL_EPARSE, "model: not a Cohort model (bad magic or too short)");
    const uint8_t *p = buf + 8, *end = buf + len;
    if (fl_get_le32(p) != 1)
        return fl_seterr(err, FL_EPARSE, "model: unsupported format version %u", fl_get_le32(p));
    uint32_t n_in = fl_get_le32(p + 4), n_classes = fl_get_le32(p + 8),
             n_hidden = fl_get_le32(p + 12);
    p += 16;
    if (n_in < 1 || n_in > (1u << 24) || n_classes < 2 || n_classes > FL_MAX_CLASSES ||
        n_hidden > FL_MAX_HIDDEN)
        return fl_seterr(err, FL_EPARSE, "model: invalid spec (inputs %u, classes %u, hidden %u)",
                         n_in, n_classes, n_hidden);
    if ((size_t)(end - p) < 4 * (size_t)n_hidden + 8)
        return fl_seterr(err, FL_EPARSE, "model: truncated header");
    spec->n_in = (int)n_in;
    spec->n_classes = (int)n_classes;
    spec->n_hidden = (int)n_hidden;
    for (uint32_t l = 0; l < n_hidden; l++, p += 4) {
        uint32_t h = fl_get_le32(p);
        if (h < 1 || h > 65536)
            return fl_seterr(err, FL_EPARSE, "model: hidden width %u out of range", h);
        spec->hidden[l] = (int)h;
    }
    uint64_t np = (uint64_t)fl_get_le32(p) | (uint64_t)fl_get_le32(p + 4) << 32;
    p += 8;
    if (np != (uint64_t)fl_model_spec_nparams(spec))
        return fl_seterr(err, FL_EPARSE, "model: %llu parameters, the spec needs %lld",
                         (unsigned long long)np, (long long)fl_model_spec_nparams(spec));
    if ((uint64_t)(end - p) != np * 4)
        return fl_seterr(err, FL_EPARSE, "model: %zu parameter bytes, expected %llu",
                         (size_t)(end - p), (unsigned long long)np * 4);
    float *w = malloc(np ? np * sizeof(float) : 1);
    if (!w) return FL_ENOMEM;
    for (uint64_t i = 0; i < np; i++, p += 4) {
        uint32_t u = fl_get_le32(p);
        memcpy(&w[i], &u, 4);
        if (!isfinite(w[i])) {
            free(w);
            return fl_seterr(err, FL_EPARSE, "model: parameter %llu is not finite",
                             (unsigned long long)i);
        }
    }
    *params = w;
    return FL_OK;
}
