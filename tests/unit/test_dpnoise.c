/* test_dpnoise.c: the fast DP-SGD noise of crypto/dpnoise.c. The sampler's
 * construction is checked exactly (fl_dpnoise_selfcheck: the alias table
 * realises its integer weights, which are within 2^-54 of the base discrete
 * Gaussian), and its output statistically: mean, variance and kurtosis,
 * Kolmogorov-Smirnov against the normal CDF, a chi-square over 64
 * equiprobable bins, and uniform residues modulo the combination factor K
 * and modulo 2^10 (what a wrong Micciancio-Walter combination would break).
 * Then the float-safety contract: outputs on the grid, snapping that keeps
 * no low-order bit of the input, and the same values from the worker
 * thread, the vector code and the portable code. Every statistical check
 * runs at a fixed seed, so it is deterministic and cannot flake; thresholds
 * are 1e-6 tails, so an honest sampler passes at any seed. Throughput is
 * printed, never asserted (DESIGN.md §13). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/csprng.h"
#include "crypto/dpnoise.h"

static fl_dpnoise *seeded(unsigned char tag, unsigned flags) {
    unsigned char seed[FL_CSPRNG_SEEDBYTES];
    memset(seed, tag, sizeof seed);
    fl_csprng *r = NULL;
    fl_dpnoise *nz = NULL;
    assert_int_equal(fl_csprng_new_seeded(&r, seed, NULL), FL_OK);
    char err[FL_ERR_LEN] = "";
    if (fl_dpnoise_new(&nz, r, flags, err)) fail_msg("fl_dpnoise_new: %s", err);
    fl_csprng_free(r);
    return nz;
}

/* Chi-square critical value for df degrees of freedom at a 1e-6 upper tail
 * (Wilson-Hilferty; z = 4.753). */
static double chi2_crit(int df) {
    double a = 2.0 / (9.0 * df), z = 4.753;
    double c = 1.0 - a + z * sqrt(a);
    return df * c * c * c;
}

static double normal_cdf(double x) {
    return 0.5 * erfc(-x / sqrt(2.0));
}

/* Standard normal quantile by bisection on erfc (tests only). */
static double normal_quantile(double p) {
    double lo = -12.0, hi = 12.0;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        if (normal_cdf(mid) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ================================ construction ============================ */

static void test_grid(void **state) {
    const double sd[] = {1.0, 0.75, 3.3, 1e-6, 12345.678, 0x1p-60, 0x1p60, 0.9999999999};
    for (size_t i = 0; i < sizeof sd / sizeof *sd; i++) {
        double g, s;
        assert_int_equal(fl_dpnoise_grid(&g, &s, sd[i], NULL), FL_OK);
        int e;
        assert_true(frexp(g, &e) == 0.5); /* a power of two */
        assert_true(s >= 0x1p20 && s < 0x1p21);
        assert_true(s * g == sd[i]); /* exact */
    }
    const double bad[] = {0.0, -1.0, NAN, INFINITY, 0x1p-61, 0x1p61};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[FL_ERR_LEN] = "";
        double g, s;
        assert_int_equal(fl_dpnoise_grid(&g, &s, bad[i], err), FL_EINVAL);
        assert_non_null(strstr(err, "stddev"));
    }
}

static void test_selfcheck(void **state) {
    const double sd[] = {1.0, 0.75, 0.5000001, 0.9999999, 3.3, 1e-3};
    for (size_t i = 0; i < sizeof sd / sizeof *sd; i++) {
        fl_dpnoise_params p;
        char err[FL_ERR_LEN] = "";
        if (fl_dpnoise_selfcheck(&p, sd[i], err)) fail_msg("stddev %g: %s", sd[i], err);
        double k2 = 1.0 + (double)p.k * p.k;
        print_message("stddev %-10g s %.1f K %d sigma0 %.2f support %d max rel error %.2g\n", sd[i],
                      p.s, p.k, p.sigma0, p.support, p.max_rel_error);
        assert_true(p.max_rel_error < 0x1p-54);
        assert_true(p.s / k2 >= 2.0); /* combination width */
        assert_true(fabs(p.sigma0 * p.sigma0 * k2 / (p.s * p.s) - 1.0) < 1e-12); /* Var */
        assert_true(p.support >= 13.5 * p.sigma0 && p.support < 32768);
    }
}

/* ================================ statistics ============================== */

#define NSTAT (1u << 21)

static void test_distribution(void **state) {
    const double sds[] = {1.0, 3.3};
    for (int c = 0; c < 2; c++) {
        double sd = sds[c], g, s;
        assert_int_equal(fl_dpnoise_grid(&g, &s, sd, NULL), FL_OK);
        fl_dpnoise_params p;
        assert_int_equal(fl_dpnoise_selfcheck(&p, sd, NULL), FL_OK);
        fl_dpnoise *nz = seeded((unsigned char)(11 + c), 0);
        int32_t *z = malloc(NSTAT * sizeof *z);
        assert_non_null(z);
        char err[FL_ERR_LEN] = "";
        if (fl_dpnoise_sample(nz, z, NSTAT, sd, err)) fail_msg("%s", err);
        /* moments */
        double m1 = 0, m2 = 0, m4 = 0;
        for (size_t i = 0; i < NSTAT; i++) {
            double v = z[i] / s;
            m1 += v;
            m2 += v * v;
            m4 += v * v * v * v;
        }
        m1 /= NSTAT;
        m2 /= NSTAT;
        m4 /= NSTAT;
        double n = NSTAT;
        print_message("sd %g: mean %.2e var %.6f kurtosis %.4f\n", sd, m1, m2, m4 / (m2 * m2));
        assert_true(fabs(m1) < 5.0 / sqrt(n));
        assert_true(fabs(m2 - 1.0) < 5.0 * sqrt(2.0 / n));
        assert_true(fabs(m4 / (m2 * m2) - 3.0) < 5.0 * sqrt(96.0 / n));
        /* residues: mod K (the combination factor) and mod 2^10 */
        const int mods[] = {p.k, 1024};
        for (int r = 0; r < 2; r++) {
            int mod = mods[r];
            double *cnt = calloc((size_t)mod, sizeof *cnt);
            for (size_t i = 0; i < NSTAT; i++) {
                int64_t v = z[i] % mod;
                cnt[v < 0 ? v + mod : v] += 1.0;
            }
            double e = n / mod, chi = 0;
            for (int j = 0; j < mod; j++)
                chi += (cnt[j] - e) * (cnt[j] - e) / e;
            print_message("  z mod %d: chi2 %.1f (df %d, 1e-6 critical %.1f)\n", mod, chi, mod - 1,
                          chi2_crit(mod - 1));
            assert_true(chi < chi2_crit(mod - 1));
            free(cnt);
        }
        /* 64 equiprobable bins of N(0, 1): z / s below the j-th 1/64 quantile */
        double edge[63];
        for (int j = 0; j < 63; j++)
            edge[j] = normal_quantile((j + 1) / 64.0);
        double bins[64] = {0};
        for (size_t i = 0; i < NSTAT; i++) {
            double v = z[i] / s;
            int lo = 0, hi = 63; /* first edge above v */
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (v < edge[mid])
                    hi = mid;
                else
                    lo = mid + 1;
            }
            bins[lo] += 1.0;
        }
        double chi = 0, e = n / 64;
        for (int j = 0; j < 64; j++)
            chi += (bins[j] - e) * (bins[j] - e) / e;
        print_message("  64 bins: chi2 %.1f (1e-6 critical %.1f)\n", chi, chi2_crit(63));
        assert_true(chi < chi2_crit(63));
        /* Kolmogorov-Smirnov against Phi(z / s); the lattice adds at most
         * phi(0) / s ~ 4e-7 to D. Critical value at 1e-6: sqrt(ln(2e6) / 2). */
        qsort(z, NSTAT, sizeof *z, cmp_i32);
        double d = 0;
        for (size_t i = 0; i < NSTAT;) {
            size_t j = i;
            while (j < NSTAT && z[j] == z[i])
                j++;
            double F = normal_cdf((z[i] + 0.5) / s); /* the lattice point's upper edge */
            double lo = fabs((double)i / n - normal_cdf((z[i] - 0.5) / s));
            double hi = fabs((double)j / n - F);
            d = fmax(d, fmax(lo, hi));
            i = j;
        }
        print_message("  KS: D sqrt(n) = %.3f (1e-6 critical %.3f)\n", d * sqrt(n),
                      sqrt(log(2e6) / 2));
        assert_true(d * sqrt(n) < sqrt(log(2e6) / 2));
        /* tails beyond 3 and 4 standard deviations */
        size_t t3 = 0, t4 = 0;
        for (size_t i = 0; i < NSTAT; i++) {
            t3 += fabs(z[i] / s) > 3.0;
            t4 += fabs(z[i] / s) > 4.0;
        }
        double p3 = 2 * normal_cdf(-3.0), p4 = 2 * normal_cdf(-4.0);
        assert_true(fabs(t3 - n * p3) < 5 * sqrt(n * p3));
        assert_true(fabs(t4 - n * p4) < 5 * sqrt(n * p4) + 1);
        free(z);
        fl_dpnoise_free(nz);
    }
}

/* ================================ float safety ============================ */

static void test_gaussian_on_grid(void **state) {
    const double sd = 0.37;
    double g, s;
    assert_int_equal(fl_dpnoise_grid(&g, &s, sd, NULL), FL_OK);
    fl_dpnoise *nz = seeded(21, 0);
    size_t n = 100003;
    float *out = malloc(n * sizeof *out);
    double m2 = 0;
    assert_int_equal(fl_dpnoise_gaussian(nz, out, n, sd, NULL), FL_OK);
    for (size_t i = 0; i < n; i++) {
        double u = (double)out[i] / g;
        assert_true(u == rint(u)); /* an integer number of grid steps */
        assert_true(fabs(out[i]) < 14.0 * sd);
        m2 += (double)out[i] * out[i];
    }
    assert_true(fabs(m2 / n / (sd * sd) - 1.0) < 5.0 * sqrt(2.0 / n));
    free(out);
    fl_dpnoise_free(nz);
}

/* add() is exactly scale * g * (round(x / g) + Z) with the Z that sample()
 * draws from the same seed; inputs that snap to the same grid point give
 * bit-identical outputs, so the output carries no low-order bit of x. */
static void test_add_snaps(void **state) {
    const double sd = 1.7;
    const float scale = 1.0f / 300.0f;
    double g, s;
    assert_int_equal(fl_dpnoise_grid(&g, &s, sd, NULL), FL_OK);
    size_t n = 50021;
    float *x = malloc(n * sizeof *x), *x2 = malloc(n * sizeof *x2);
    int32_t *z = malloc(n * sizeof *z);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(sin((double)i) * (i % 7 == 0 ? 300.0 : 1.0)); /* up to 300: > 2^24 g */
        /* a different float with the same grid point: x moved by well under g / 2 */
        x2[i] = x[i] + (float)(g * 0.25 * cos((double)i));
        if (rint((double)x2[i] / g) != rint((double)x[i] / g)) x2[i] = x[i];
    }
    fl_dpnoise *a = seeded(31, 0), *b = seeded(31, 0), *c = seeded(31, 0);
    assert_int_equal(fl_dpnoise_sample(a, z, n, sd, NULL), FL_OK);
    float *expect = malloc(n * sizeof *expect);
    float gs = (float)((double)scale * g);
    for (size_t i = 0; i < n; i++)
        expect[i] = (float)(rint((double)x[i] / g) + z[i]) * gs;
    assert_int_equal(fl_dpnoise_add(b, x, n, sd, scale, NULL), FL_OK);
    assert_int_equal(fl_dpnoise_add(c, x2, n, sd, scale, NULL), FL_OK);
    assert_memory_equal(x, expect, n * sizeof *x);
    assert_memory_equal(x, x2, n * sizeof *x);
    /* the same through the portable code (snapping included) */
    fl_dpnoise *d = seeded(31, FL_DPNOISE_PORTABLE);
    float *x3 = malloc(n * sizeof *x3);
    for (size_t i = 0; i < n; i++) { /* x2's input again */
        x3[i] = (float)(sin((double)i) * (i % 7 == 0 ? 300.0 : 1.0));
        float y = x3[i] + (float)(g * 0.25 * cos((double)i));
        if (rint((double)y / g) == rint((double)x3[i] / g)) x3[i] = y;
    }
    assert_int_equal(fl_dpnoise_add(d, x3, n, sd, scale, NULL), FL_OK);
    assert_memory_equal(x, x3, n * sizeof *x);
    free(x3);
    fl_dpnoise_free(d);
    /* a bad value is reported, naming x */
    x[777] = NAN;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_dpnoise_add(b, x, n, sd, scale, err), FL_ENUMERIC);
    assert_non_null(strstr(err, "x"));
    x[777] = 0.0f;
    x[5] = 1e30f;
    assert_int_equal(fl_dpnoise_add(b, x, n, sd, scale, err), FL_ENUMERIC);
    assert_int_equal(fl_dpnoise_add(b, x, n, -1.0, scale, err), FL_EINVAL);
    assert_non_null(strstr(err, "stddev"));
    free(x);
    free(x2);
    free(z);
    free(expect);
    fl_dpnoise_free(a);
    fl_dpnoise_free(b);
    fl_dpnoise_free(c);
}

/* The worker thread, the vector code and the portable code draw the same
 * values from the same seed, whatever the sequence of shapes asked for. */
static void test_paths_agree(void **state) {
    const unsigned flags[] = {0,
                              FL_DPNOISE_BACKGROUND,
                              FL_DPNOISE_PORTABLE,
                              FL_DPNOISE_NO_AVX512,
                              FL_DPNOISE_BACKGROUND | FL_DPNOISE_PORTABLE,
                              FL_DPNOISE_BACKGROUND | FL_DPNOISE_NO_AVX512};
    const size_t n1 = 10007, n2 = 3001;
    float *ref = NULL;
    size_t total = 4 * n1 + n2;
    for (size_t f = 0; f < sizeof flags / sizeof *flags; f++) {
        fl_dpnoise *nz = seeded(41, flags[f]);
        float *out = calloc(total, sizeof *out);
        int32_t *z = malloc(n2 * sizeof *z);
        if (flags[f] & FL_DPNOISE_BACKGROUND)
            assert_int_equal(fl_dpnoise_prefetch(nz, n1, 0.5, NULL), FL_OK);
        assert_int_equal(fl_dpnoise_add(nz, out, n1, 0.5, 1.0f, NULL), FL_OK);
        assert_int_equal(fl_dpnoise_add(nz, out + n1, n1, 0.5, 1.0f, NULL), FL_OK);
        assert_int_equal(fl_dpnoise_gaussian(nz, out + 2 * n1, n1, 0.5, NULL), FL_OK);
        assert_int_equal(fl_dpnoise_sample(nz, z, n2, 2.5, NULL), FL_OK);
        for (size_t i = 0; i < n2; i++)
            out[3 * n1 + i] = (float)z[i];
        assert_int_equal(fl_dpnoise_gaussian(nz, out + 3 * n1 + n2, n1, 0.5, NULL), FL_OK);
        if (!ref)
            ref = out;
        else {
            assert_memory_equal(ref, out, total * sizeof *out);
            free(out);
        }
        free(z);
        fl_dpnoise_free(nz);
    }
    free(ref);
    fl_dpnoise_free(NULL);
}

static void test_os_keyed(void **state) {
    fl_dpnoise *a = NULL, *b = NULL;
    assert_int_equal(fl_dpnoise_new(&a, NULL, 0, NULL), FL_OK);
    assert_int_equal(fl_dpnoise_new(&b, NULL, FL_DPNOISE_BACKGROUND, NULL), FL_OK);
    int32_t x[256], y[256];
    assert_int_equal(fl_dpnoise_sample(a, x, 256, 1.0, NULL), FL_OK);
    assert_int_equal(fl_dpnoise_sample(b, y, 256, 1.0, NULL), FL_OK);
    assert_memory_not_equal(x, y, sizeof x);
    char err[FL_ERR_LEN] = "";
    fl_dpnoise *c = NULL;
    assert_int_equal(fl_dpnoise_new(&c, NULL, 0x80, err), FL_EINVAL);
    assert_null(c);
    fl_dpnoise_free(a);
    fl_dpnoise_free(b);
}

/* ================================ throughput ============================== */

static void test_throughput(void **state) {
    const size_t n = 269322; /* the MLP 784-256-256-10 */
    int32_t *z = malloc(n * sizeof *z);
    float *x = calloc(n, sizeof *x);
    fl_dpnoise *nz = NULL, *bg = NULL;
    assert_int_equal(fl_dpnoise_new(&nz, NULL, 0, NULL), FL_OK);
    assert_int_equal(fl_dpnoise_new(&bg, NULL, FL_DPNOISE_BACKGROUND, NULL), FL_OK);
    double best = 1e30, best_add = 1e30, best_snap = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        assert_int_equal(fl_dpnoise_sample(nz, z, n, 1.0, NULL), FL_OK);
        best = fmin(best, now() - t0);
        t0 = now();
        assert_int_equal(fl_dpnoise_add(nz, x, n, 1.0, 1.0f, NULL), FL_OK);
        best_add = fmin(best_add, now() - t0);
        /* the worker has had the sample() time to draw the next vector */
        assert_int_equal(fl_dpnoise_prefetch(bg, n, 1.0, NULL), FL_OK);
        assert_int_equal(fl_dpnoise_sample(nz, z, n, 1.0, NULL), FL_OK);
        t0 = now();
        assert_int_equal(fl_dpnoise_add(bg, x, n, 1.0, 1.0f, NULL), FL_OK);
        best_snap = fmin(best_snap, now() - t0);
    }
    print_message("dpnoise, %zu samples, one core: sample %.2f ms (%.0f M samples/s); "
                  "add %.2f ms (%.0f M/s); add with the vector drawn ahead %.3f ms\n",
                  n, best * 1e3, n / best / 1e6, best_add * 1e3, n / best_add / 1e6,
                  best_snap * 1e3);
    free(z);
    free(x);
    fl_dpnoise_free(nz);
    fl_dpnoise_free(bg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid),         cmocka_unit_test(test_selfcheck),
        cmocka_unit_test(test_distribution), cmocka_unit_test(test_gaussian_on_grid),
        cmocka_unit_test(test_add_snaps),    cmocka_unit_test(test_paths_agree),
        cmocka_unit_test(test_os_keyed),     cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
