/* test_dgauss.c: the CSPRNG (determinism of the seeded test generator,
 * unbiased bounded integers) and the exact samplers of crypto/dgauss.c:
 * Bernoulli(exp(-gamma)) frequencies, the discrete Gaussian's mean, variance
 * and a chi-square fit to its pmf, and the DP-SGD noise (grid, moments,
 * Kolmogorov-Smirnov against the normal CDF, snapping). Every statistical
 * check runs at a fixed seed, so it is deterministic and cannot flake; its
 * threshold is a 1e-6 tail so an honest sampler passes at any seed.
 * Throughput is printed, never asserted (DESIGN.md §13). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/csprng.h"
#include "crypto/dgauss.h"

static fl_csprng *seeded(unsigned char tag) {
    unsigned char seed[FL_CSPRNG_SEEDBYTES];
    memset(seed, tag, sizeof seed);
    fl_csprng *r = NULL;
    assert_int_equal(fl_csprng_new_seeded(&r, seed, NULL), FL_OK);
    return r;
}

/* Chi-square critical value for df degrees of freedom at a 1e-6 upper tail
 * (Wilson-Hilferty; z = 4.753). */
static double chi2_crit(int df) {
    double a = 2.0 / (9.0 * df), z = 4.753;
    double c = 1.0 - a + z * sqrt(a);
    return df * c * c * c;
}

/* ================================= CSPRNG ================================= */

static void test_csprng_seeded_is_reproducible(void **state) {
    fl_csprng *a = seeded(7), *b = seeded(7), *c = seeded(8);
    unsigned char x[5000], y[5000], z[5000];
    fl_csprng_bytes(a, x, sizeof x);
    fl_csprng_bytes(b, y, sizeof y);
    fl_csprng_bytes(c, z, sizeof z);
    assert_memory_equal(x, y, sizeof x);
    assert_memory_not_equal(x, z, sizeof x);
    assert_true(fl_csprng_is_deterministic(a));
    /* mixed-size reads stay in step */
    assert_int_equal(fl_csprng_u64(a), fl_csprng_u64(b));
    assert_int_equal(fl_csprng_bits(a, 13), fl_csprng_bits(b, 13));
    fl_csprng_free(a);
    fl_csprng_free(b);
    fl_csprng_free(c);
    fl_csprng_free(NULL);
}

static void test_csprng_os(void **state) {
    fl_csprng *a = NULL, *b = NULL;
    assert_int_equal(fl_csprng_new(&a, NULL), FL_OK);
    assert_int_equal(fl_csprng_new(&b, NULL), FL_OK);
    assert_false(fl_csprng_is_deterministic(a));
    unsigned char x[64], y[64];
    fl_csprng_bytes(a, x, sizeof x);
    fl_csprng_bytes(b, y, sizeof y);
    assert_memory_not_equal(x, y, sizeof x);
    /* past the reseed interval (1 MiB) it keeps working */
    unsigned char *big = malloc(3u << 20);
    assert_non_null(big);
    fl_csprng_bytes(a, big, 3u << 20);
    free(big);
    fl_csprng_free(a);
    fl_csprng_free(b);
}

static void test_csprng_below_unbiased(void **state) {
    fl_csprng *r = seeded(1);
    assert_int_equal(fl_csprng_below(r, 0), 0);
    assert_int_equal(fl_csprng_below(r, 1), 0);
    /* n = 6: chi-square over 600000 draws */
    long cnt[6] = {0};
    for (int i = 0; i < 600000; i++)
        cnt[fl_csprng_below(r, 6)]++;
    double chi = 0;
    for (int k = 0; k < 6; k++)
        chi += (cnt[k] - 1e5) * (cnt[k] - 1e5) / 1e5;
    assert_true(chi < chi2_crit(5));
    /* n just above 2^63: half the words are rejected; the result must still
     * be below n and land in both halves */
    uint64_t n = (UINT64_C(1) << 63) + 12345;
    int high = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t v = fl_csprng_below(r, n);
        assert_true(v < n);
        high += v >= n / 2;
    }
    assert_true(labs(high - 1000) < 5 * 23); /* 5 sd */
    /* bits: range and balance */
    long ones = 0;
    for (int i = 0; i < 100000; i++) {
        uint64_t v = fl_csprng_bits(r, 5);
        assert_true(v < 32);
        ones += (long)(v & 1);
    }
    assert_true(labs(ones - 50000) < 5 * 158); /* 5 sd */
    fl_csprng_free(r);
}

/* =============================== Bernoulli ================================ */

static void test_bernoulli_exp(void **state) {
    fl_csprng *r = seeded(2);
    uint64_t num[5] = {0, 1, 1, 3, 7}, den[5] = {1, 2, 1, 2, 3};
    int n = 200000;
    for (int c = 0; c < 5; c++) {
        double p = exp(-(double)num[c] / (double)den[c]);
        long hits = 0;
        for (int i = 0; i < n; i++) {
            int b;
            assert_int_equal(fl_dgauss_bernoulli_exp(&b, num[c], den[c], r, NULL), FL_OK);
            hits += b;
        }
        double sd = sqrt(n * p * (1 - p));
        assert_true(fabs(hits - n * p) <= 5 * sd + 1e-9);
    }
    int b;
    char err[FL_ERR_LEN];
    assert_int_equal(fl_dgauss_bernoulli_exp(&b, 1, 0, r, err), FL_EINVAL);
    assert_non_null(strstr(err, "den"));
    fl_csprng_free(r);
}

/* ============================ Discrete Gaussian =========================== */

/* Draws n samples of N_Z(0, num/den) and checks mean, variance and a
 * chi-square fit against the exact pmf (bins |z| <= cut, tails merged so
 * that each bin expects >= 20). */
static void check_dgauss(fl_csprng *r, uint64_t num, uint64_t den, size_t n) {
    double s2 = (double)num / (double)den, s = sqrt(s2);
    int cut = (int)ceil(12 * s) + 2;
    double norm = 0, var = 0;
    for (int z = -cut; z <= cut; z++) {
        double w = exp(-(double)z * z / (2 * s2));
        norm += w;
        var += w * z * z;
    }
    var /= norm;
    int64_t *x = malloc(n * sizeof *x);
    assert_non_null(x);
    assert_int_equal(fl_dgauss_sample(x, n, num, den, r, NULL), FL_OK);
    double mean = 0, m2 = 0;
    int width = 2 * cut + 1;
    long *cnt = calloc((size_t)width, sizeof(long));
    assert_non_null(cnt);
    for (size_t i = 0; i < n; i++) {
        mean += (double)x[i];
        m2 += (double)x[i] * (double)x[i];
        assert_true(x[i] >= -cut && x[i] <= cut);
        cnt[x[i] + cut]++;
    }
    mean /= (double)n;
    m2 /= (double)n;
    assert_true(fabs(mean) < 5 * sqrt(var / (double)n));
    /* var of z^2 is about 2 var^2 */
    assert_true(fabs(m2 - var) < 5 * sqrt(2.0 * var * var / (double)n));
    /* chi-square, merging bins from each tail inwards until >= 20 expected */
    double chi = 0, e_acc = 0;
    long o_acc = 0;
    int df = -1;
    for (int z = -cut; z <= cut; z++) {
        e_acc += (double)n * exp(-(double)z * z / (2 * s2)) / norm;
        o_acc += cnt[z + cut];
        if (e_acc >= 20 || z == cut) {
            chi += (o_acc - e_acc) * (o_acc - e_acc) / e_acc;
            df++;
            e_acc = 0;
            o_acc = 0;
        }
    }
    assert_true(df >= 3);
    assert_true(chi < chi2_crit(df));
    free(cnt);
    free(x);
}

static void test_dgauss_fit(void **state) {
    fl_csprng *r = seeded(3);
    check_dgauss(r, 1, 4, 200000);   /* sigma^2 = 1/4: mostly 0, +-1 */
    check_dgauss(r, 4, 1, 200000);   /* sigma = 2 */
    check_dgauss(r, 7, 3, 200000);   /* a rational that is no square */
    check_dgauss(r, 100, 1, 200000); /* sigma = 10 */
    fl_csprng_free(r);
}

static void test_dgauss_limits(void **state) {
    fl_csprng *r = seeded(4);
    int64_t x[4];
    char err[FL_ERR_LEN];
    assert_int_equal(fl_dgauss_sample(x, 4, 0, 1, r, err), FL_EINVAL);
    assert_non_null(strstr(err, "numerator"));
    assert_int_equal(fl_dgauss_sample(x, 4, 1, 0, r, err), FL_EINVAL);
    assert_non_null(strstr(err, "denominator"));
    assert_int_equal(fl_dgauss_sample(x, 4, FL_DGAUSS_MAX_NUM + 1, 1, r, err), FL_EINVAL);
    /* the largest scale works */
    assert_int_equal(fl_dgauss_sample(x, 4, FL_DGAUSS_MAX_NUM, 1, r, err), FL_OK);
    fl_csprng_free(r);
}

/* ============================== DP-SGD noise ============================== */

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_dp_noise(void **state) {
    fl_csprng *r = seeded(5);
    size_t n = 1000000;
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    double t0 = now();
    assert_int_equal(fl_dp_gaussian_noise(x, n, 1.0, r, NULL), FL_OK);
    double dt = now() - t0;
    print_message("dp noise: %.0f samples/s (1e6 in %.3f s, one core)\n", (double)n / dt, dt);
    double mean = 0, m2 = 0;
    for (size_t i = 0; i < n; i++) {
        /* stddev 1: the grid is 2^-21 and every value is exactly on it */
        double k = ldexp((double)x[i], FL_DP_NOISE_GRID_BITS);
        assert_float_equal(k, nearbyint(k), 0.0);
        mean += x[i];
        m2 += (double)x[i] * x[i];
    }
    mean /= (double)n;
    m2 /= (double)n;
    assert_true(fabs(mean) < 5 / sqrt((double)n));
    assert_true(fabs(m2 - 1) < 5 * sqrt(2.0 / (double)n));
    /* Kolmogorov-Smirnov against N(0, 1): sqrt(n) D < 1.95 (p = 0.001) */
    qsort(x, n, sizeof *x, cmp_float);
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double f = 0.5 * erfc(-(double)x[i] / M_SQRT2);
        double lo = f - (double)i / (double)n, hi = (double)(i + 1) / (double)n - f;
        if (lo > d) d = lo;
        if (hi > d) d = hi;
    }
    assert_true(sqrt((double)n) * d < 1.95);
    /* another scale: moments scale with it */
    assert_int_equal(fl_dp_gaussian_noise(x, 200000, 3.5, r, NULL), FL_OK);
    m2 = 0;
    for (size_t i = 0; i < 200000; i++)
        m2 += (double)x[i] * x[i];
    m2 /= 200000;
    assert_true(fabs(m2 / 12.25 - 1) < 5 * sqrt(2.0 / 200000));
    char err[FL_ERR_LEN];
    assert_int_equal(fl_dp_gaussian_noise(x, 10, 0.0, r, err), FL_EINVAL);
    assert_non_null(strstr(err, "stddev"));
    assert_int_equal(fl_dp_gaussian_noise(x, 10, NAN, r, err), FL_EINVAL);
    free(x);
    fl_csprng_free(r);
}

static void test_dp_add_noise_snaps(void **state) {
    fl_csprng *r = seeded(6);
    size_t n = 100000;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (size_t i = 0; i < n; i++)
        x[i] = y[i] = (float)(0.1 * sin((double)i) + 1e-7 * (double)i);
    assert_int_equal(fl_dp_add_gaussian_noise(y, n, 0.5, r, NULL), FL_OK);
    double grid = ldexp(0.5, -FL_DP_NOISE_GRID_BITS), mean = 0, m2 = 0;
    for (size_t i = 0; i < n; i++) {
        double k = (double)y[i] / grid;
        assert_float_equal(k, nearbyint(k), 1e-6); /* on the grid, whatever x was */
        double e = (double)y[i] - (double)x[i];
        mean += e;
        m2 += e * e;
    }
    mean /= (double)n;
    m2 /= (double)n;
    assert_true(fabs(mean) < 5 * 0.5 / sqrt((double)n));
    assert_true(fabs(m2 / 0.25 - 1) < 5 * sqrt(2.0 / (double)n));
    /* a non-finite input is refused and nothing is changed */
    memcpy(y, x, n * sizeof *x);
    y[17] = NAN;
    char err[FL_ERR_LEN];
    assert_int_equal(fl_dp_add_gaussian_noise(y, n, 0.5, r, err), FL_ENUMERIC);
    assert_non_null(strstr(err, "x[17]"));
    assert_memory_equal(y, x, 17 * sizeof *x);
    free(x);
    free(y);
    fl_csprng_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csprng_seeded_is_reproducible),
        cmocka_unit_test(test_csprng_os),
        cmocka_unit_test(test_csprng_below_unbiased),
        cmocka_unit_test(test_bernoulli_exp),
        cmocka_unit_test(test_dgauss_fit),
        cmocka_unit_test(test_dgauss_limits),
        cmocka_unit_test(test_dp_noise),
        cmocka_unit_test(test_dp_add_noise_snaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
