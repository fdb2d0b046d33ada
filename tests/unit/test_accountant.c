/* test_accountant.c: the RDP accountant against the published vectors of
 * Opacus and TensorFlow Privacy, the PLD accountant against closed forms
 * (q = 1: the Gaussian mechanism), direct numerical integration (a small
 * subsampled case), dp_accounting's PLD figures and its own bounds, input
 * validation, and noise calibration.
 *
 * It includes core/accountant.c itself (as llm.c's test_gpt2.c does) so it
 * can also check the PLD internals: the FFT composition against a direct
 * convolution in long double, and the floating-point estimate it reports. */
#include "testutil.h"

#include <math.h>
#include <string.h>

#include "core/accountant.c"

static double rel(double a, double b) {
    return fabs(a - b) / fabs(b);
}

/* ================================== RDP =================================== */

static void test_rdp_opacus_vector(void **state) {
    /* Opacus tests/accountants_test.py: q = 0.04, sigma = 1.5, 90 epochs
     * (2250 steps), delta = 1e-5, default orders: 7.32911117143. */
    fl_dp_phase p = {0.04, 1.5, 2250};
    double eps, order;
    char err[FL_ERR_LEN];
    assert_int_equal(fl_rdp_epsilon(&eps, &order, &p, 1, NULL, 0, 1e-5, err), FL_OK);
    assert_true(rel(eps, 7.32911117143) < 1e-6);
    assert_float_equal(order, 3.9, 1e-12);
}

static void test_rdp_tf_privacy_vector(void **state) {
    /* TF Privacy / dp_accounting: q = 0.0025, sigma = 1.3, 6000 steps. */
    fl_dp_phase p = {0.0025, 1.3, 6000};
    double eps, order;
    assert_int_equal(fl_rdp_epsilon(&eps, &order, &p, 1, NULL, 0, 1e-5, NULL), FL_OK);
    assert_true(rel(eps, 0.7242234026) < 1e-6);
    assert_float_equal(order, 19.0, 0.0);
}

static void test_rdp_composition_vector(void **state) {
    /* The module docstring of Opacus's and TF Privacy's rdp.py: two phases,
     * integer orders 2..32, delta = 1e-5: 0.336 at order 23. */
    fl_dp_phase p[2] = {{1e-5, 1.0, 10}, {1e-4, 3.0, 4}};
    double orders[31], eps, order;
    for (int i = 0; i < 31; i++)
        orders[i] = 2 + i;
    assert_int_equal(fl_rdp_epsilon(&eps, &order, p, 2, orders, 31, 1e-5, NULL), FL_OK);
    assert_true(rel(eps, 0.33634406) < 1e-6);
    assert_float_equal(order, 23.0, 0.0);
}

static void test_rdp_mironov2017_conversion(void **state) {
    /* The classical conversion eps = rdp - log(delta)/(a-1), which older TF
     * Privacy used; reference values from dp_accounting's RDP vector. */
    fl_dp_phase p = {0.0025, 1.3, 6000};
    double rdp[FL_RDP_N_DEFAULT_ORDERS], eps, order;
    const double *orders = fl_rdp_default_orders();
    assert_int_equal(fl_rdp_compute(rdp, &p, 1, orders, FL_RDP_N_DEFAULT_ORDERS, NULL), FL_OK);
    assert_int_equal(fl_rdp_to_epsilon(&eps, &order, rdp, orders, FL_RDP_N_DEFAULT_ORDERS, 1e-5,
                                       FL_RDP_CONV_MIRONOV2017, NULL),
                     FL_OK);
    assert_true(rel(eps, 0.9418705671679224) < 1e-6);
    double balle;
    assert_int_equal(fl_rdp_to_epsilon(&balle, NULL, rdp, orders, FL_RDP_N_DEFAULT_ORDERS, 1e-5,
                                       FL_RDP_CONV_BALLE2020, NULL),
                     FL_OK);
    assert_true(balle < eps);
}

static void test_rdp_gaussian_exact(void **state) {
    /* q = 1: the Gaussian mechanism, RDP = T a / (2 sigma^2) exactly. */
    fl_dp_phase p = {1.0, 2.0, 7};
    double orders[3] = {1.5, 2.0, 32.0}, rdp[3];
    assert_int_equal(fl_rdp_compute(rdp, &p, 1, orders, 3, NULL), FL_OK);
    for (int i = 0; i < 3; i++)
        assert_float_equal(rdp[i], 7 * orders[i] / 8.0, 1e-12);
}

static void test_rdp_fractional_matches_integer_limit(void **state) {
    /* The fractional series approaches the exact integer sum from both
     * sides: A(a) is continuous in a. */
    fl_dp_phase p = {0.05, 1.1, 1};
    double orders[3] = {3.0 - 1e-7, 3.0, 3.0 + 1e-7}, rdp[3];
    assert_int_equal(fl_rdp_compute(rdp, &p, 1, orders, 3, NULL), FL_OK);
    assert_true(rel(rdp[0], rdp[1]) < 1e-5);
    assert_true(rel(rdp[2], rdp[1]) < 1e-5);
}

static void test_rdp_zero_steps(void **state) {
    fl_dp_phase p = {0.5, 1.0, 0};
    double eps;
    assert_int_equal(fl_rdp_epsilon(&eps, NULL, &p, 1, NULL, 0, 1e-5, NULL), FL_OK);
    assert_float_equal(eps, 0.0, 0.0);
}

/* ============================ Input validation ============================ */

static void expect_einval(const fl_dp_phase *p, double delta, const char *field) {
    double eps;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_rdp_epsilon(&eps, NULL, p, 1, NULL, 0, delta, err), FL_EINVAL);
    assert_non_null(strstr(err, field));
    err[0] = 0;
    assert_int_equal(fl_pld_epsilon(&eps, NULL, p, 1, delta, NULL, err), FL_EINVAL);
    assert_non_null(strstr(err, field));
}

static void test_validation(void **state) {
    fl_dp_phase ok = {0.01, 1.0, 10};
    fl_dp_phase q0 = {0.0, 1.0, 10}, q2 = {1.5, 1.0, 10}, qn = {NAN, 1.0, 10};
    fl_dp_phase s0 = {0.01, 0.0, 10}, sn = {0.01, NAN, 10}, si = {0.01, INFINITY, 10};
    fl_dp_phase tn = {0.01, 1.0, -1};
    expect_einval(&q0, 1e-5, "q:");
    expect_einval(&q2, 1e-5, "q:");
    expect_einval(&qn, 1e-5, "q:");
    expect_einval(&s0, 1e-5, "sigma:");
    expect_einval(&sn, 1e-5, "sigma:");
    expect_einval(&si, 1e-5, "sigma:");
    expect_einval(&tn, 1e-5, "steps:");
    expect_einval(&ok, 0.0, "delta:");
    expect_einval(&ok, 1.0, "delta:");
    expect_einval(&ok, NAN, "delta:");

    double eps, orders[2] = {2.0, 1.0}, s;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_rdp_epsilon(&eps, NULL, &ok, 1, orders, 2, 1e-5, err), FL_EINVAL);
    assert_non_null(strstr(err, "orders[1]"));
    assert_int_equal(fl_dp_calibrate_sigma(&s, 0.01, 0, 1.0, 1e-5, FL_ACCOUNTANT_RDP, err),
                     FL_EINVAL);
    assert_non_null(strstr(err, "steps:"));
    assert_int_equal(fl_dp_calibrate_sigma(&s, 0.01, 10, -1.0, 1e-5, FL_ACCOUNTANT_RDP, err),
                     FL_EINVAL);
    assert_non_null(strstr(err, "epsilon:"));
    assert_int_equal(fl_dp_calibrate_sigma(&s, 0.01, 10, 1.0, 1e-5, 7, err), FL_EINVAL);
    assert_non_null(strstr(err, "accountant:"));
    fl_pld_options o = {1e-9, 0};
    assert_int_equal(fl_pld_epsilon(&eps, NULL, &ok, 1, 1e-5, &o, err), FL_EINVAL);
    assert_non_null(strstr(err, "interval:"));
    int a;
    assert_int_equal(fl_accountant_parse(&a, "moments", err), FL_EINVAL);
    assert_non_null(strstr(err, "accountant:"));
    assert_int_equal(fl_accountant_parse(&a, "pld", err), FL_OK);
    assert_int_equal(a, FL_ACCOUNTANT_PLD);
    assert_string_equal(fl_accountant_name(FL_ACCOUNTANT_RDP), "rdp");
}

/* =================================== PLD ================================== */

static void test_pld_tighter_than_rdp(void **state) {
    /* On each published vector the PLD upper bound is below RDP's, agrees
     * with dp_accounting's connect-the-dots PLD at the same interval (its
     * own pessimistic estimate: 6.768787, 0.640111, 0.0001537), and brackets
     * the truth with its certified lower bound. */
    fl_dp_phase a = {0.04, 1.5, 2250}, b = {0.0025, 1.3, 6000};
    fl_dp_phase c[2] = {{1e-5, 1.0, 10}, {1e-4, 3.0, 4}};
    const fl_dp_phase *cases[3] = {&a, &b, c};
    int nph[3] = {1, 1, 2};
    double ref[3] = {6.768787373891152, 0.6401109264445614, 0.00015365051913833475};
    for (int i = 0; i < 3; i++) {
        double pe, rdp;
        fl_pld_report r;
        char err[FL_ERR_LEN];
        assert_int_equal(fl_pld_epsilon(&pe, &r, cases[i], nph[i], 1e-5, NULL, err), FL_OK);
        assert_int_equal(fl_rdp_epsilon(&rdp, NULL, cases[i], nph[i], NULL, 0, 1e-5, NULL), FL_OK);
        assert_true(pe < rdp);
        assert_float_equal(pe, ref[i], 1e-4 + 1e-4 * ref[i]);
        assert_true(r.epsilon_lower <= pe);
        assert_true(pe - r.epsilon_lower <= 1.1 * r.error_bound + 1e-3);
        assert_float_equal(r.interval, FL_PLD_DEFAULT_INTERVAL, 0.0);
        assert_true(r.delta_slack < 1e-7);
    }
}

/* The Gaussian mechanism composed T times is mu-GDP with mu = sqrt(T)/sigma
 * (Dong, Roth, Su 2019): delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu
 * - mu/2). */
static double gdp_delta(double eps, double mu) {
    double a = -eps / mu + mu / 2, b = -eps / mu - mu / 2;
    return 0.5 * erfc(-a / M_SQRT2) - exp(eps) * 0.5 * erfc(-b / M_SQRT2);
}

static double gdp_eps(double delta, double mu) {
    double lo = 0, hi = 200;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        if (gdp_delta(mid, mu) > delta)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

static void test_pld_gaussian_closed_form(void **state) {
    fl_dp_phase p = {1.0, 3.0, 50};
    double mu = sqrt(50.0) / 3.0;
    double truth = gdp_eps(1e-5, mu), eps;
    fl_pld_report r;
    assert_int_equal(fl_pld_epsilon(&eps, &r, &p, 1, 1e-5, NULL, NULL), FL_OK);
    assert_true(r.epsilon_lower <= truth);
    assert_true(truth <= eps);
    assert_true(eps - truth < 1e-4);
    assert_true(eps - truth <= r.error_bound);
    /* delta for given eps: an upper bound, and close */
    double e[3] = {0.5, 2.0, 6.0};
    for (int i = 0; i < 3; i++) {
        double d, t = gdp_delta(e[i], mu);
        assert_int_equal(fl_pld_delta(&d, &p, 1, e[i], NULL, NULL), FL_OK);
        assert_true(d >= t);
        assert_true(rel(d, t) < 1e-3);
    }
}

/* One subsampled Gaussian step in one direction, in closed form: with P, Q
 * the pair of the direction and x* the point where the loss crosses e,
 * delta1(e) = P(loss > e) - e^e Q(loss > e). */
static double ncdf(double z) {
    return 0.5 * erfc(-z / M_SQRT2);
}

static double delta1(double e, double q, double s, int remove) {
    sgm m = {q, s, (long double)s * s, remove};
    if (remove) {
        double x = (double)xrem(&m, e); /* loss > e  <=>  x > x* */
        double p = (1 - q) * ncdf(-x / s) + q * ncdf(-(x - 1) / s), qq = ncdf(-x / s);
        if (x == -INFINITY) p = qq = 1.0;
        return p - exp(e) * qq;
    }
    double x = (double)xrem(&m, -e); /* loss > e  <=>  x < x' */
    if (x == -INFINITY) return 0.0;
    double p = ncdf(x / s), qq = (1 - q) * ncdf(x / s) + q * ncdf((x - 1) / s);
    return p - exp(e) * qq;
}

/* delta of two steps by direct integration over the first coordinate:
 * (p(x1)p(x2) - e^eps q(x1)q(x2))_+ = p(x1) (p(x2) - e^(eps - L(x1)) q(x2))_+,
 * so delta2(eps) = int p(x1) delta1(eps - L(x1)) dx1 (composite Simpson). */
static double delta2(double eps, double q, double s, int remove) {
    sgm m = {q, s, (long double)s * s, remove};
    double a = -14 * s, b = 1 + 14 * s, sum = 0;
    int n = 40000;
    double hx = (b - a) / n;
    for (int i = 0; i <= n; i++) {
        double x = a + i * hx, l = (double)lrem(&m, x);
        double p0 = exp(-x * x / (2 * s * s)) / (s * sqrt(2 * M_PI));
        double p1 = exp(-(x - 1) * (x - 1) / (2 * s * s)) / (s * sqrt(2 * M_PI));
        double px = remove ? (1 - q) * p0 + q * p1 : p0;
        double f = px * delta1(eps - (remove ? l : -l), q, s, remove);
        sum += f * (i == 0 || i == n ? 1 : (i % 2 ? 4 : 2));
    }
    return sum * hx / 3;
}

static void test_pld_subsampled_numerical(void **state) {
    double q = 0.2, s = 0.8;
    fl_dp_phase one = {q, s, 1}, two = {q, s, 2};
    double e[3] = {0.25, 1.0, 2.0};
    for (int i = 0; i < 3; i++) {
        double t1 = fmax(delta1(e[i], q, s, 1), delta1(e[i], q, s, 0));
        double t2 = fmax(delta2(e[i], q, s, 1), delta2(e[i], q, s, 0));
        double d1, d2;
        assert_int_equal(fl_pld_delta(&d1, &one, 1, e[i], NULL, NULL), FL_OK);
        assert_int_equal(fl_pld_delta(&d2, &two, 1, e[i], NULL, NULL), FL_OK);
        assert_true(d1 >= t1 * (1 - 1e-9));
        assert_true(rel(d1, t1) < 1e-5);
        assert_true(d2 >= t2 * (1 - 1e-7));
        assert_true(rel(d2, t2) < 1e-4);
    }
}

static void test_pld_phases_compose(void **state) {
    /* Splitting a phase in two changes nothing but round-off. */
    fl_dp_phase whole = {0.02, 1.2, 300}, split[2] = {{0.02, 1.2, 100}, {0.02, 1.2, 200}};
    double a, b;
    assert_int_equal(fl_pld_epsilon(&a, NULL, &whole, 1, 1e-6, NULL, NULL), FL_OK);
    assert_int_equal(fl_pld_epsilon(&b, NULL, split, 2, 1e-6, NULL, NULL), FL_OK);
    assert_true(rel(a, b) < 1e-6);
    /* more noise, less epsilon */
    fl_dp_phase more = {0.02, 1.3, 300};
    double c;
    assert_int_equal(fl_pld_epsilon(&c, NULL, &more, 1, 1e-6, NULL, NULL), FL_OK);
    assert_true(c < a);
}

static void test_pld_fft_against_direct(void **state) {
    /* One squaring by FFT against a direct convolution in long double: the
     * actual l1 error must sit below the estimate that goes into delta. */
    char err[FL_ERR_LEN];
    pld d = {0};
    assert_int_equal(pld_discretise(&d, 0.0025, 1.3, 1, 1e-3, err), FL_OK);
    double sum = d.inf;
    for (int64_t i = 0; i < d.n; i++)
        sum += d.p[i];
    assert_float_equal(sum, 1.0, 1e-12);
    assert_true(d.n > 0 && d.n < 100000);
    size_t cells = d.n > 0 && d.n < 100000 ? (size_t)(2 * d.n) : 1;
    long double *ex = calloc(cells, sizeof(long double));
    assert_non_null(ex);
    for (int64_t i = 0; i < d.n; i++)
        for (int64_t j = 0; j < d.n; j++)
            ex[i + j] += (long double)d.p[i] * d.p[j];
    double err0 = d.err;
    int64_t lo0 = d.lo;
    assert_int_equal(pld_convolve(&d, &d, &d, 0.0, err), FL_OK);
    long double l1 = 0;
    for (int64_t i = 0; i < d.n; i++)
        l1 += fabsl(d.p[i] - ex[i + d.lo - 2 * lo0]);
    assert_true((double)l1 <= d.err - 2 * err0);
    assert_true((double)l1 < 1e-13);
    free(ex);
    pld_free(&d);
}

/* ================================ Calibration ============================= */

static void test_calibrate_rdp_recovers_sigma(void **state) {
    double s, eps;
    assert_int_equal(
        fl_dp_calibrate_sigma(&s, 0.04, 2250, 7.32911117143, 1e-5, FL_ACCOUNTANT_RDP, NULL), FL_OK);
    assert_true(fabs(s - 1.5) < 2e-6);
    fl_dp_phase p = {0.04, s, 2250};
    assert_int_equal(fl_rdp_epsilon(&eps, NULL, &p, 1, NULL, 0, 1e-5, NULL), FL_OK);
    assert_true(eps <= 7.32911117143);
}

static void test_calibrate_pld(void **state) {
    double s, s_rdp, eps;
    assert_int_equal(fl_dp_calibrate_sigma(&s, 0.01, 200, 1.0, 1e-5, FL_ACCOUNTANT_PLD, NULL),
                     FL_OK);
    assert_int_equal(fl_dp_calibrate_sigma(&s_rdp, 0.01, 200, 1.0, 1e-5, FL_ACCOUNTANT_RDP, NULL),
                     FL_OK);
    assert_true(s < s_rdp);
    fl_dp_phase p = {0.01, s, 200};
    assert_int_equal(fl_pld_epsilon(&eps, NULL, &p, 1, 1e-5, NULL, NULL), FL_OK);
    assert_true(eps <= 1.0);
    p.sigma = s - 2e-6;
    assert_int_equal(fl_pld_epsilon(&eps, NULL, &p, 1, 1e-5, NULL, NULL), FL_OK);
    assert_true(eps > 1.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rdp_opacus_vector),
        cmocka_unit_test(test_rdp_tf_privacy_vector),
        cmocka_unit_test(test_rdp_composition_vector),
        cmocka_unit_test(test_rdp_mironov2017_conversion),
        cmocka_unit_test(test_rdp_gaussian_exact),
        cmocka_unit_test(test_rdp_fractional_matches_integer_limit),
        cmocka_unit_test(test_rdp_zero_steps),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_pld_tighter_than_rdp),
        cmocka_unit_test(test_pld_gaussian_closed_form),
        cmocka_unit_test(test_pld_subsampled_numerical),
        cmocka_unit_test(test_pld_phases_compose),
        cmocka_unit_test(test_pld_fft_against_direct),
        cmocka_unit_test(test_calibrate_rdp_recovers_sigma),
        cmocka_unit_test(test_calibrate_pld),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
