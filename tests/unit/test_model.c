/* test_model.c: the models' forward/backward passes against finite
 * differences (logistic regression and the MLP, binary and multi-class), the
 * DP-SGD clipped-sum fast path against explicit per-example gradients clipped
 * one at a time, spec parsing, and the serialisation round trip. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"
#include "core/rng.h"

#define ROWS 7

typedef struct fixture {
    fl_backend *be;
    fl_model m;
    float X[ROWS * 6];
    int32_t y[ROWS];
} fixture;

static void setup_model(fixture *f, const char *spec_text, int n_in, int n_classes) {
    char err[FL_ERR_LEN];
    assert_int_equal(fl_backend_cpu_open(&f->be, err), FL_OK);
    fl_model_spec spec;
    assert_int_equal(fl_model_spec_parse(&spec, spec_text, n_in, n_classes, err), FL_OK);
    assert_int_equal(fl_model_init(&f->m, f->be, &spec, ROWS, 7, err), FL_OK);
    fl_rng r;
    fl_rng_seed(&r, 99);
    for (int i = 0; i < ROWS * n_in; i++)
        f->X[i] = (float)fl_rng_normal(&r);
    for (int i = 0; i < ROWS; i++)
        f->y[i] = (int32_t)fl_rng_below(&r, (uint64_t)n_classes);
    /* random (not zero) parameters so every path carries gradient */
    float *p = malloc((size_t)f->m.n_params * sizeof(float));
    for (int64_t i = 0; i < f->m.n_params; i++)
        p[i] = (float)(0.5 * fl_rng_normal(&r));
    assert_int_equal(fl_model_set_params(&f->m, p), FL_OK);
    free(p);
    memcpy(f->m.d_act[0], f->X, sizeof(float) * ROWS * (size_t)n_in); /* CPU: host memory */
    memcpy(f->m.d_y, f->y, sizeof f->y);
}

static void teardown_model(fixture *f) {
    fl_model_free(&f->m);
    fl_backend_close(f->be);
}

static double total_loss(fl_model *m, int rows) {
    assert_int_equal(fl_model_forward(m, rows), FL_OK);
    assert_int_equal(fl_model_backward(m, rows, 1.0f, 0.0f, 0), FL_OK);
    double s = 0.0;
    for (int i = 0; i < rows; i++)
        s += m->d_loss[i];
    return s;
}

static void gradient_check(const char *spec_text, int n_in, int n_classes) {
    fixture f;
    setup_model(&f, spec_text, n_in, n_classes);
    fl_model *m = &f.m;
    total_loss(m, ROWS);
    float *g = malloc((size_t)m->n_params * sizeof(float));
    memcpy(g, m->d_grads, (size_t)m->n_params * sizeof(float));
    const float h = 2e-3f;
    double num = 0.0, den = 0.0, l0 = total_loss(m, ROWS);
    int64_t kinks = 0;
    for (int64_t i = 0; i < m->n_params; i++) {
        float w = m->d_params[i];
        m->d_params[i] = w + h;
        double lp = total_loss(m, ROWS);
        m->d_params[i] = w - h;
        double lm = total_loss(m, ROWS);
        m->d_params[i] = w;
        double fd = (lp - lm) / (2.0 * h);
        /* A ReLU switching inside [w - h, w + h] makes the one-sided slopes
         * disagree: the loss is not differentiable there, so skip the point. */
        if (fabs((lp - l0) / h - (l0 - lm) / h) > 1e-2 * (1.0 + fabs(fd))) {
            kinks++;
            continue;
        }
        /* float32 loss sums limit the finite difference to about 1e-3 */
        if (fabs(fd - g[i]) > 3e-3 + 1e-2 * fabs(fd))
            fail_msg("%s: param %lld: analytic %.6f, finite difference %.6f", spec_text,
                     (long long)i, g[i], fd);
        num += (fd - g[i]) * (fd - g[i]);
        den += (fd + g[i]) * (fd + g[i]);
    }
    assert_true(sqrt(num) <= 1e-3 * sqrt(den) + 1e-6);
    assert_true(kinks * 10 <= m->n_params);
    free(g);
    teardown_model(&f);
}

static void test_gradcheck_logreg_binary(void **state) {
    gradient_check("logreg", 5, 2);
}

static void test_gradcheck_logreg_multiclass(void **state) {
    gradient_check("logreg", 4, 3);
}

static void test_gradcheck_mlp_binary(void **state) {
    gradient_check("mlp:6,5", 5, 2);
}

static void test_gradcheck_mlp_multiclass(void **state) {
    gradient_check("mlp:8,4,3", 6, 4);
}

/* DP-SGD fast path == sum over examples of (own gradient clipped to C). */
static void dp_check(const char *spec_text, int n_in, int n_classes, float clip) {
    fixture f;
    setup_model(&f, spec_text, n_in, n_classes);
    fl_model *m = &f.m;
    int64_t np = m->n_params;
    double *ref = calloc((size_t)np, sizeof(double));
    int clipped = 0;
    for (int i = 0; i < ROWS; i++) {
        /* one example alone: its own gradient, materialised */
        memcpy(m->d_act[0], f.X + i * n_in, sizeof(float) * (size_t)n_in);
        m->d_y[0] = f.y[i];
        assert_int_equal(fl_model_forward(m, 1), FL_OK);
        assert_int_equal(fl_model_backward(m, 1, 1.0f, 0.0f, 0), FL_OK);
        double nrm = 0.0;
        for (int64_t j = 0; j < np; j++)
            nrm += (double)m->d_grads[j] * m->d_grads[j];
        nrm = sqrt(nrm);
        double s = nrm > clip ? clip / nrm : 1.0;
        clipped += nrm > clip;
        for (int64_t j = 0; j < np; j++)
            ref[j] += s * m->d_grads[j];
    }
    assert_true(clipped > 0 && clipped < ROWS); /* both branches exercised */
    memcpy(m->d_act[0], f.X, sizeof(float) * ROWS * (size_t)n_in);
    memcpy(m->d_y, f.y, sizeof f.y);
    assert_int_equal(fl_model_forward(m, ROWS), FL_OK);
    assert_int_equal(fl_model_backward(m, ROWS, 1.0f, clip, 0), FL_OK);
    double num = 0.0, den = 0.0;
    for (int64_t j = 0; j < np; j++) {
        num += (m->d_grads[j] - ref[j]) * (m->d_grads[j] - ref[j]);
        den += ref[j] * ref[j];
    }
    if (sqrt(num) > 1e-5 * sqrt(den))
        fail_msg("%s: clipped sum differs: relative error %.3g", spec_text, sqrt(num / den));
    free(ref);
    teardown_model(&f);
}

static void test_dp_clipped_sum_logreg(void **state) {
    dp_check("logreg", 5, 2, 1.5f);
}

static void test_dp_clipped_sum_mlp(void **state) {
    dp_check("mlp:6,5", 5, 3, 1.0f);
}

static void test_spec_parse(void **state) {
    fl_model_spec s;
    char err[FL_ERR_LEN], name[FL_SPEC_LEN];
    assert_int_equal(fl_model_spec_parse(&s, "mlp:64,32", 10, 2, err), FL_OK);
    assert_int_equal(s.n_hidden, 2);
    fl_model_spec_name(name, &s);
    assert_string_equal(name, "mlp:64,32");
    assert_int_equal(fl_model_spec_nparams(&s), 10 * 64 + 64 + 64 * 32 + 32 + 32 + 1);
    const char *bad[] = {"mlp:", "mlp:0", "mlp:64,", "mlp:a", "tree", "mlp:1,2,3,4,5,6,7,8,9"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        assert_int_equal(fl_model_spec_parse(&s, bad[i], 10, 2, err), FL_EINVAL);
        assert_non_null(strstr(err, "model"));
    }
    assert_int_equal(fl_model_spec_parse(&s, "logreg", 10, 1, err), FL_EINVAL);
}

static void test_serialize_roundtrip(void **state) {
    fixture f;
    setup_model(&f, "mlp:4,3", 5, 3);
    float *p = malloc((size_t)f.m.n_params * sizeof(float));
    assert_int_equal(fl_model_get_params(&f.m, p), FL_OK);
    uint8_t *buf;
    size_t len;
    assert_int_equal(fl_model_serialize(&buf, &len, &f.m.spec, p), FL_OK);
    fl_model_spec s2;
    float *p2;
    char err[FL_ERR_LEN];
    assert_int_equal(fl_model_deserialize(&s2, &p2, buf, len, err), FL_OK);
    assert_memory_equal(&s2, &f.m.spec, sizeof s2);
    assert_memory_equal(p2, p, (size_t)f.m.n_params * sizeof(float));
    free(p2);
    /* truncation, bad magic, a NaN parameter: each refused with a reason */
    assert_int_equal(fl_model_deserialize(&s2, &p2, buf, len - 1, err), FL_EPARSE);
    assert_non_null(strstr(err, "parameter bytes"));
    buf[0] = 'X';
    assert_int_equal(fl_model_deserialize(&s2, &p2, buf, len, err), FL_EPARSE);
    assert_non_null(strstr(err, "magic"));
    buf[0] = 'C';
    float nan = NAN;
    memcpy(buf + len - 4, &nan, 4);
    assert_int_equal(fl_model_deserialize(&s2, &p2, buf, len, err), FL_EPARSE);
    assert_non_null(strstr(err, "not finite"));
    free(buf);
    free(p);
    teardown_model(&f);
}

static void test_init_deterministic(void **state) {
    char err[FL_ERR_LEN];
    fl_backend *be;
    assert_int_equal(fl_backend_cpu_open(&be, err), FL_OK);
    fl_model_spec spec;
    assert_int_equal(fl_model_spec_parse(&spec, "mlp:16,8", 12, 2, err), FL_OK);
    fl_model a, b, c;
    assert_int_equal(fl_model_init(&a, be, &spec, 4, 5, err), FL_OK);
    assert_int_equal(fl_model_init(&b, be, &spec, 4, 5, err), FL_OK);
    assert_int_equal(fl_model_init(&c, be, &spec, 4, 6, err), FL_OK);
    size_t nb = (size_t)a.n_params * sizeof(float);
    assert_memory_equal(a.d_params, b.d_params, nb);
    assert_memory_not_equal(a.d_params, c.d_params, nb);
    fl_model_free(&a);
    fl_model_free(&b);
    fl_model_free(&c);
    fl_model_free(NULL);
    fl_backend_close(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck_logreg_binary),
        cmocka_unit_test(test_gradcheck_logreg_multiclass),
        cmocka_unit_test(test_gradcheck_mlp_binary),
        cmocka_unit_test(test_gradcheck_mlp_multiclass),
        cmocka_unit_test(test_dp_clipped_sum_logreg),
        cmocka_unit_test(test_dp_clipped_sum_mlp),
        cmocka_unit_test(test_spec_parse),
        cmocka_unit_test(test_serialize_roundtrip),
        cmocka_unit_test(test_init_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
