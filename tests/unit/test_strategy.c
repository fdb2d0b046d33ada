/* test_strategy.c: the aggregation strategies against hand-computed values,
 * bit-identical results whatever the arrival order, and refusal of NaN
 * updates and bad weights without touching the global model. */
#include "testutil.h"

#include <math.h>
#include <string.h>

#include "aggregator/strategy.h"
#include "core/rng.h"

static void init(fl_strategy *s, int kind, int64_t n) {
    fl_strategy_config c;
    fl_strategy_config_default(&c, kind);
    char err[FL_ERR_LEN];
    assert_int_equal(fl_strategy_init(s, &c, n, err), FL_OK);
}

static void test_fedavg_weighted(void **state) {
    float d1[] = {1, 2}, d2[] = {4, -1};
    fl_update u[] = {{2, 3.0, d1}, {1, 1.0, d2}};
    float g[] = {10, 10};
    fl_strategy s;
    init(&s, FL_STRATEGY_FEDAVG, 2);
    char err[FL_ERR_LEN];
    assert_int_equal(fl_strategy_apply(&s, g, u, 2, err), FL_OK);
    /* (3*1 + 1*4)/4 = 1.75; (3*2 - 1)/4 = 1.25 */
    assert_float_equal(g[0], 11.75, 1e-6);
    assert_float_equal(g[1], 11.25, 1e-6);
    fl_strategy_free(&s);
}

static void test_order_independent_bits(void **state) {
    enum { N = 1000, K = 9 };
    static float d[K][N];
    fl_rng r;
    fl_rng_seed(&r, 5);
    fl_update u[K];
    for (int i = 0; i < K; i++) {
        for (int j = 0; j < N; j++)
            d[i][j] = (float)(fl_rng_normal(&r) * pow(10, i % 4));
        u[i] = (fl_update){i, 1.0 + (double)fl_rng_below(&r, 100), d[i]};
    }
    int kinds[] = {FL_STRATEGY_FEDAVG, FL_STRATEGY_FEDADAM, FL_STRATEGY_MEDIAN,
                   FL_STRATEGY_TRIMMED_MEAN};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        static float ga[N], gb[N];
        memset(ga, 0, sizeof ga);
        memset(gb, 0, sizeof gb);
        fl_strategy sa, sb;
        init(&sa, kinds[k], N);
        init(&sb, kinds[k], N);
        char err[FL_ERR_LEN];
        assert_int_equal(fl_strategy_apply(&sa, ga, u, K, err), FL_OK);
        fl_update v[K];
        memcpy(v, u, sizeof u);
        for (int i = K - 1; i > 0; i--) { /* a different arrival order */
            int j = (int)fl_rng_below(&r, (uint64_t)i + 1);
            fl_update t = v[i];
            v[i] = v[j];
            v[j] = t;
        }
        assert_int_equal(fl_strategy_apply(&sb, gb, v, K, err), FL_OK);
        assert_memory_equal(ga, gb, sizeof ga);
        fl_strategy_free(&sa);
        fl_strategy_free(&sb);
    }
}

static void test_fedadam_fedyogi_step(void **state) {
    float d[] = {0.5f};
    fl_update u[] = {{0, 1.0, d}};
    char err[FL_ERR_LEN];
    for (int kind = FL_STRATEGY_FEDADAM; kind <= FL_STRATEGY_FEDYOGI; kind++) {
        float g[] = {0.0f};
        fl_strategy s;
        init(&s, kind, 1);
        assert_int_equal(fl_strategy_apply(&s, g, u, 1, err), FL_OK);
        double tau = 1e-3, m = 0.1 * 0.5, v0 = tau * tau, d2 = 0.25, v;
        if (kind == FL_STRATEGY_FEDADAM)
            v = 0.99 * v0 + 0.01 * d2;
        else
            v = v0 - 0.01 * d2 * (v0 - d2 > 0 ? 1 : -1);
        assert_float_equal(g[0], 0.01 * m / (sqrt(v) + tau), 1e-7);
        fl_strategy_free(&s);
    }
}

static void test_median_trimmed(void **state) {
    float a[] = {1}, b[] = {2}, c[] = {100}, e[] = {3}, f[] = {-50};
    fl_update u[] = {{0, 1, a}, {1, 1, b}, {2, 1, c}, {3, 1, e}, {4, 1, f}};
    char err[FL_ERR_LEN];
    float g[] = {0};
    fl_strategy s;
    init(&s, FL_STRATEGY_MEDIAN, 1);
    assert_int_equal(fl_strategy_apply(&s, g, u, 5, err), FL_OK);
    assert_float_equal(g[0], 2.0, 0);
    g[0] = 0;
    assert_int_equal(fl_strategy_apply(&s, g, u, 4, err), FL_OK); /* even: (2 + 3) / 2 */
    assert_float_equal(g[0], 2.5, 0);
    fl_strategy_free(&s);
    fl_strategy_config cfg;
    fl_strategy_config_default(&cfg, FL_STRATEGY_TRIMMED_MEAN);
    cfg.trim = 0.2; /* drops one value at each end of five */
    assert_int_equal(fl_strategy_init(&s, &cfg, 1, err), FL_OK);
    g[0] = 0;
    assert_int_equal(fl_strategy_apply(&s, g, u, 5, err), FL_OK);
    assert_float_equal(g[0], 2.0, 1e-6); /* mean of 1, 2, 3 */
    fl_strategy_free(&s);
    assert_true(fl_strategy_needs_plaintext(FL_STRATEGY_MEDIAN));
    assert_false(fl_strategy_needs_plaintext(FL_STRATEGY_FEDAVG));
}

static void test_refusals(void **state) {
    float ok[] = {1, 1}, bad[] = {1, NAN};
    float g[] = {5, 5};
    char err[FL_ERR_LEN];
    fl_strategy s;
    init(&s, FL_STRATEGY_FEDAVG, 2);
    fl_update u[] = {{0, 1, ok}, {7, 1, bad}};
    assert_int_equal(fl_strategy_apply(&s, g, u, 2, err), FL_ENUMERIC);
    assert_non_null(strstr(err, "site 7"));
    assert_float_equal(g[0], 5, 0);
    assert_float_equal(g[1], 5, 0);
    fl_update w[] = {{0, 0.0, ok}};
    assert_int_equal(fl_strategy_apply(&s, g, w, 1, err), FL_EINVAL);
    assert_int_equal(fl_strategy_apply(&s, g, w, 0, err), FL_EINVAL);
    fl_strategy_free(&s);
    int kind;
    assert_int_equal(fl_strategy_parse(&kind, "fedyogi"), FL_OK);
    assert_int_equal(kind, FL_STRATEGY_FEDYOGI);
    assert_int_equal(fl_strategy_parse(&kind, "fedsgd"), FL_EINVAL);
    fl_strategy_config c;
    fl_strategy_config_default(&c, FL_STRATEGY_TRIMMED_MEAN);
    c.trim = 0.5;
    assert_int_equal(fl_strategy_init(&s, &c, 2, err), FL_EINVAL);
    assert_non_null(strstr(err, "trim"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fedavg_weighted),
        cmocka_unit_test(test_order_independent_bits),
        cmocka_unit_test(test_fedadam_fedyogi_step),
        cmocka_unit_test(test_median_trimmed),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
