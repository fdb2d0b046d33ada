/* dgauss.c: exact discrete Gaussian sampling (Canonne, Kamath, Steinke 2020,
 * Algorithms 1-3) on CSPRNG bits, and the DP-SGD noise built on it. The
 * interface and the privacy argument are in dgauss.h and docs/privacy.md.
 *
 * Exactness. Every Bernoulli parameter is an exact rational with integer
 * numerator and denominator held in 128-bit integers (a compiler extension
 * of GCC and Clang; required below), and every uniform integer comes from
 * rejection sampling on uniform bits, so each output has exactly the
 * discrete Gaussian probability. The one exception: a Laplace proposal so
 * far out that |Y| >= 2^62 or (|Y| t den - num) >= 2^64 is rejected
 * outright instead of with probability 1 - exp(-gamma); there gamma >=
 * 2^128 / (2 num den t^2) >= 2^41 under the limits on num and den, so the
 * output distribution moves by less than exp(-2^41). */
#include "dgauss.h"

#include <math.h>

#if !defined(__SIZEOF_INT128__)
#error "dgauss.c needs unsigned __int128 (GCC or Clang on a 64-bit target)"
#endif

typedef unsigned __int128 u128;

/* ============================ Uniform and Bernoulli ======================= */

static unsigned bitlen64(uint64_t x) {
    return x ? 64u - (unsigned)__builtin_clzll(x) : 0u;
}

/* Uniform in [0, m), m >= 1: draw bitlen(m - 1) bits, reject >= m (fewer
 * than two draws on average). */
static u128 uniform_below(fl_csprng *r, u128 m) {
    if (m <= 1) return 0;
    u128 top = m - 1;
    uint64_t hi = (uint64_t)(top >> 64);
    if (!hi) {
        uint64_t m64 = (uint64_t)m;
        unsigned b = bitlen64((uint64_t)top);
        for (;;) {
            uint64_t x = fl_csprng_bits(r, b);
            if (x < m64) return x;
        }
    }
    unsigned b = bitlen64(hi);
    for (;;) {
        u128 x = ((u128)fl_csprng_bits(r, b) << 64) | fl_csprng_bits(r, 64);
        if (x < m) return x;
    }
}

/* Bernoulli(num/den), num <= den. */
static int bern(fl_csprng *r, u128 num, u128 den) {
    if (num >= den) return 1;
    if (num == 0) return 0;
    return uniform_below(r, den) < num;
}

/* Bernoulli(exp(-num/den)) for num <= den (CKS20 Alg. 1): count K while
 * A_K ~ Bernoulli(gamma/K) succeeds; P(K odd) = sum_j (-gamma)^j / j! =
 * exp(-gamma). Bernoulli(gamma/K) is drawn as Bernoulli(num/den) AND
 * Bernoulli(1/K), so no product num*K or den*K can overflow. */
static int bern_exp_le1(fl_csprng *r, u128 num, u128 den) {
    uint64_t k = 1;
    for (;;) {
        if (!bern(r, num, den)) break;
        if (k > 1 && fl_csprng_below(r, k) != 0) break;
        k++;
    }
    return (int)(k & 1);
}

/* Bernoulli(exp(-num/den)) for any num/den >= 0: exp(-gamma) =
 * exp(-1)^floor(gamma) exp(-frac(gamma)). Stops at the first failure, so
 * the expected work is constant whatever gamma is. */
static int bern_exp(fl_csprng *r, u128 num, u128 den) {
    u128 whole = num / den, rem = num % den;
    for (u128 i = 0; i < whole; i++)
        if (!bern_exp_le1(r, 1, 1)) return 0;
    return bern_exp_le1(r, rem, den);
}

int fl_dgauss_bernoulli_exp(int *out, uint64_t num, uint64_t den, fl_csprng *rng,
                            char err[FL_ERR_LEN]) {
    if (den == 0) return fl_seterr(err, FL_EINVAL, "den: expected > 0");
    if (!rng) return fl_seterr(err, FL_EINVAL, "rng: expected a generator");
    *out = bern_exp(rng, num, den);
    return 0;
}

/* ============================ Discrete Gaussian =========================== */

typedef struct dg {
    uint64_t num, den, t;
    u128 d; /* 2 num den t^2, the denominator of gamma */
} dg;

static uint64_t isqrt64(uint64_t v) {
    uint64_t x = (uint64_t)sqrt((double)v);
    while (x * x > v)
        x--;
    while ((x + 1) * (x + 1) <= v)
        x++;
    return x;
}

static int dg_init(dg *g, uint64_t num, uint64_t den, char *err) {
    if (num < 1 || num > FL_DGAUSS_MAX_NUM)
        return fl_seterr(err, FL_EINVAL, "sigma2 numerator: expected 1..2^43, got %llu",
                         (unsigned long long)num);
    if (den < 1 || den > FL_DGAUSS_MAX_DEN)
        return fl_seterr(err, FL_EINVAL, "sigma2 denominator: expected 1..2^20, got %llu",
                         (unsigned long long)den);
    g->num = num;
    g->den = den;
    /* Any integer t >= 1 gives a correct sampler (the rejection ratio below
     * is <= 1 for all t); t = floor(sigma) keeps the acceptance rate near
     * CKS20's choice floor(sigma) + 1 and makes t a power of two when sigma
     * is one, so the uniform draws need no rejection. */
    g->t = isqrt64(num / den);
    if (g->t == 0) g->t = 1;
    g->d = (u128)2 * num * den * ((u128)g->t * g->t);
    return 0;
}

/* One discrete Laplace sample with scale t (CKS20 Alg. 2 with s = 1):
 * U uniform in [0, t) accepted with probability exp(-U/t), plus t times a
 * geometric V with P(V >= v) = exp(-v), and a sign that counts 0 once.
 * Returns |Y| in *mag (a u128 so t V cannot overflow) and the sign. */
static void dlap(fl_csprng *r, uint64_t t, u128 *mag, int *neg) {
    for (;;) {
        uint64_t u = (uint64_t)uniform_below(r, t);
        if (!bern_exp_le1(r, u, t)) continue;
        u128 v = 0;
        while (bern_exp_le1(r, 1, 1))
            v++;
        u128 x = u + (u128)t * v;
        int b = (int)fl_csprng_bits(r, 1);
        if (b && x == 0) continue;
        *mag = x;
        *neg = b;
        return;
    }
}

/* One discrete Gaussian sample (CKS20 Alg. 3): a Laplace proposal Y of
 * scale t accepted with probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2))
 * = exp(-(|Y| t den - num)^2 / (2 num den t^2)). */
static int64_t dg_sample(const dg *g, fl_csprng *r) {
    const u128 two62 = (u128)1 << 62, two64 = (u128)1 << 64;
    for (;;) {
        u128 y;
        int neg;
        dlap(r, g->t, &y, &neg);
        if (y >= two62) continue; /* acceptance below exp(-2^41): see top */
        u128 a = y * g->t * g->den;
        u128 w = a >= g->num ? a - g->num : g->num - a;
        if (w >= two64) continue; /* likewise */
        if (bern_exp(r, w * w, g->d)) return neg ? -(int64_t)y : (int64_t)y;
    }
}

int fl_dgauss_sample(int64_t *out, size_t n, uint64_t num, uint64_t den, fl_csprng *rng,
                     char err[FL_ERR_LEN]) {
    dg g;
    int rc = dg_init(&g, num, den, err);
    if (rc) return rc;
    if (!rng) return fl_seterr(err, FL_EINVAL, "rng: expected a generator");
    if (n > 0 && !out) return fl_seterr(err, FL_EINVAL, "out: expected room for %zu samples", n);
    for (size_t i = 0; i < n; i++)
        out[i] = dg_sample(&g, rng);
    return 0;
}

/* ================================ DP-SGD noise ============================ */

static int noise_setup(dg *g, double *grid, double stddev, fl_csprng *rng, char *err) {
    if (!(stddev > 0.0) || !isfinite(stddev))
        return fl_seterr(err, FL_EINVAL, "stddev: expected a finite value > 0, got %g", stddev);
    if (!rng) return fl_seterr(err, FL_EINVAL, "rng: expected a generator");
    *grid = ldexp(stddev, -FL_DP_NOISE_GRID_BITS);
    if (!(*grid > 0.0))
        return fl_seterr(err, FL_EINVAL, "stddev: %g is too small for a 2^-%d grid", stddev,
                         FL_DP_NOISE_GRID_BITS);
    return dg_init(g, UINT64_C(1) << (2 * FL_DP_NOISE_GRID_BITS), 1, err);
}

int fl_dp_gaussian_noise(float *out, size_t n, double stddev, fl_csprng *rng,
                         char err[FL_ERR_LEN]) {
    dg g;
    double grid;
    int rc = noise_setup(&g, &grid, stddev, rng, err);
    if (rc) return rc;
    if (n > 0 && !out) return fl_seterr(err, FL_EINVAL, "out: expected room for %zu samples", n);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)((double)dg_sample(&g, rng) * grid);
    return 0;
}

int fl_dp_add_gaussian_noise(float *x, size_t n, double stddev, fl_csprng *rng,
                             char err[FL_ERR_LEN]) {
    dg g;
    double grid;
    int rc = noise_setup(&g, &grid, stddev, rng, err);
    if (rc) return rc;
    if (n > 0 && !x) return fl_seterr(err, FL_EINVAL, "x: expected a vector of %zu values", n);
    /* Check everything first so a failure leaves x untouched. */
    for (size_t i = 0; i < n; i++) {
        double v = (double)x[i] / grid;
        if (!isfinite(v) || fabs(v) > 0x1p52)
            return fl_seterr(err, FL_ENUMERIC,
                             "x[%zu]: %g is not finite or too large for a noise grid of %g", i,
                             (double)x[i], grid);
    }
    for (size_t i = 0; i < n; i++) {
        int64_t m = (int64_t)llround((double)x[i] / grid) + dg_sample(&g, rng);
        x[i] = (float)((double)m * grid);
    }
    return 0;
}
