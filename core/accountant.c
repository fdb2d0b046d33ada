/* accountant.c: RDP and PLD accounting of the Poisson-sampled Gaussian
 * mechanism, and noise calibration. The interface and the guarantees are in
 * accountant.h; the user-facing account, with the proofs sketched, is
 * docs/privacy.md (DESIGN.md §8).
 *
 * Sections: input checks; RDP (Mironov, Talwar, Zhang 2019, §3.3); RDP to
 * (epsilon, delta) (Balle et al. 2020, Thm 21); FFT; PLD discretisation
 * (connect the dots, Doroshenko et al. 2022); PLD composition and
 * epsilon/delta queries; calibration. */
#include "accountant.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ============================== Input checks ============================== */

static const double default_orders[FL_RDP_N_DEFAULT_ORDERS] = {
    1.1, 1.2, 1.3, 1.4, 1.5,  1.6,  1.7,  1.8,  1.9,  2.0,  2.1,  2.2,  2.3,  2.4,  2.5, 2.6, 2.7,
    2.8, 2.9, 3.0, 3.1, 3.2,  3.3,  3.4,  3.5,  3.6,  3.7,  3.8,  3.9,  4.0,  4.1,  4.2, 4.3, 4.4,
    4.5, 4.6, 4.7, 4.8, 4.9,  5.0,  5.1,  5.2,  5.3,  5.4,  5.5,  5.6,  5.7,  5.8,  5.9, 6.0, 6.1,
    6.2, 6.3, 6.4, 6.5, 6.6,  6.7,  6.8,  6.9,  7.0,  7.1,  7.2,  7.3,  7.4,  7.5,  7.6, 7.7, 7.8,
    7.9, 8.0, 8.1, 8.2, 8.3,  8.4,  8.5,  8.6,  8.7,  8.8,  8.9,  9.0,  9.1,  9.2,  9.3, 9.4, 9.5,
    9.6, 9.7, 9.8, 9.9, 10.0, 10.1, 10.2, 10.3, 10.4, 10.5, 10.6, 10.7, 10.8, 10.9, 12,  13,  14,
    15,  16,  17,  18,  19,   20,   21,   22,   23,   24,   25,   26,   27,   28,   29,  30,  31,
    32,  33,  34,  35,  36,   37,   38,   39,   40,   41,   42,   43,   44,   45,   46,  47,  48,
    49,  50,  51,  52,  53,   54,   55,   56,   57,   58,   59,   60,   61,   62,   63};

const double *fl_rdp_default_orders(void) {
    return default_orders;
}

const char *fl_accountant_name(int accountant) {
    switch (accountant) {
    case FL_ACCOUNTANT_RDP:
        return "rdp";
    case FL_ACCOUNTANT_PLD:
        return "pld";
    default:
        return "unknown";
    }
}

int fl_accountant_parse(int *accountant, const char *name, char err[FL_ERR_LEN]) {
    if (name && !strcmp(name, "rdp")) {
        *accountant = FL_ACCOUNTANT_RDP;
        return 0;
    }
    if (name && !strcmp(name, "pld")) {
        *accountant = FL_ACCOUNTANT_PLD;
        return 0;
    }
    return fl_seterr(err, FL_EINVAL, "accountant: expected 'rdp' or 'pld', got '%s'",
                     name ? name : "(null)");
}

int fl_dp_phase_check(const fl_dp_phase *p, int index, char err[FL_ERR_LEN]) {
    if (!(p->q > 0.0 && p->q <= 1.0))
        return fl_seterr(err, FL_EINVAL,
                         "phase %d: q: expected a sampling probability in (0, 1], got %g", index,
                         p->q);
    if (!(p->sigma > 0.0) || !isfinite(p->sigma))
        return fl_seterr(err, FL_EINVAL,
                         "phase %d: sigma: expected a finite noise multiplier > 0, got %g", index,
                         p->sigma);
    if (p->steps < 0)
        return fl_seterr(err, FL_EINVAL, "phase %d: steps: expected >= 0, got %lld", index,
                         (long long)p->steps);
    return 0;
}

static int check_phases(const fl_dp_phase *phases, int n_phases, char *err) {
    if (n_phases < 0 || (n_phases > 0 && !phases))
        return fl_seterr(err, FL_EINVAL, "phases: expected an array of %d phases", n_phases);
    for (int i = 0; i < n_phases; i++) {
        int rc = fl_dp_phase_check(&phases[i], i, err);
        if (rc) return rc;
    }
    return 0;
}

static int check_delta(double delta, char *err) {
    if (!(delta > 0.0 && delta < 1.0))
        return fl_seterr(err, FL_EINVAL, "delta: expected a probability in (0, 1), got %g", delta);
    return 0;
}

/* ================================== RDP =================================== */

/* log(e^a + e^b) */
static double log_add(double a, double b) {
    if (a < b) {
        double t = a;
        a = b;
        b = t;
    }
    if (b == -INFINITY) return a;
    return a + log1p(exp(b - a));
}

/* log(e^a - e^b) for a >= b; -INFINITY when they are equal. */
static double log_sub(double a, double b) {
    if (b == -INFINITY) return a;
    if (a <= b) return -INFINITY;
    double d = b - a; /* < 0 */
    return a + (d > -M_LN2 ? log(-expm1(d)) : log1p(-exp(d)));
}

/* log(erfc(x)), accurate where erfc underflows: for x >= 26 the asymptotic
 * series erfc(x) = e^{-x^2}/(x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4) - ...),
 * whose truncation error after five terms is below 1e-13 relative there. */
static double log_erfc(double x) {
    if (x < 26.0) return log(erfc(x));
    double r = 1.0 / (2.0 * x * x), term = 1.0, s = 1.0;
    for (int k = 1; k <= 5; k++) {
        term *= -(2.0 * k - 1.0) * r;
        s += term;
    }
    return -x * x - log(x) - 0.5 * log(M_PI) + log(s);
}

/* A signed number kept as (log |v|, sign). */
typedef struct slog {
    double l;
    int s;
} slog;

static void slog_add(slog *acc, double lt, int sign) {
    if (lt == -INFINITY) return;
    if (acc->l == -INFINITY) {
        acc->l = lt;
        acc->s = sign;
    } else if (acc->s == sign) {
        acc->l = log_add(acc->l, lt);
    } else if (acc->l >= lt) {
        acc->l = log_sub(acc->l, lt);
    } else {
        acc->l = log_sub(lt, acc->l);
        acc->s = sign;
    }
}

/* log A_alpha for integer alpha (Mironov et al. 2019, §3.3, the binomial
 * expansion of E_{z~mu0}[(mu(z)/mu0(z))^alpha]):
 *   A = sum_{i=0..alpha} C(alpha,i) (1-q)^(alpha-i) q^i exp((i^2-i)/(2 sigma^2)),
 * summed in log space around the largest term. */
static double log_a_int(double q, double sigma, int alpha) {
    double lq = log(q), l1q = log1p(-q), s2 = 2.0 * sigma * sigma;
    double lc = 0.0, m = -INFINITY, s = 0.0;
    for (int pass = 0; pass < 2; pass++) {
        lc = 0.0;
        for (int i = 0; i <= alpha; i++) {
            if (i > 0) lc += log((double)(alpha - i + 1)) - log((double)i);
            double t = lc + i * lq + (alpha - i) * l1q + ((double)i * i - i) / s2;
            if (pass == 0 && t > m) m = t;
            if (pass == 1) s += exp(t - m);
        }
    }
    return m + log(s);
}

/* log A_alpha for fractional alpha (Mironov et al. 2019, §3.3): the integral
 * split at z0 = sigma^2 log(1/q - 1) + 1/2, where the two mixture densities
 * cross, and each half expanded in a binomial series with generalised
 * coefficients C(alpha, i), which change sign for i > alpha + 1:
 *   A0 = sum_i C(alpha,i) q^i (1-q)^(alpha-i) e^{(i^2-i)/(2s^2)} erfc((i-z0)/(sqrt2 s))/2
 *   A1 = sum_i C(alpha,i) q^(alpha-i) (1-q)^i e^{(j^2-j)/(2s^2)} erfc((z0-j)/(sqrt2 s))/2,
 * with j = alpha - i. Terms are summed with their signs (an alternating tail,
 * so the truncation error is below the first omitted term); the loop stops
 * once both terms are decreasing and below e^-36 of the running total.
 * Returns NAN if it has not converged after 10^7 terms. */
static double log_a_frac(double q, double sigma, double alpha) {
    double lq = log(q), l1q = log1p(-q), s2 = 2.0 * sigma * sigma, rs = M_SQRT2 * sigma;
    double z0 = sigma * sigma * (log1p(-q) - log(q)) + 0.5;
    slog a0 = {-INFINITY, 1}, a1 = {-INFINITY, 1};
    double lc = 0.0, last0 = INFINITY, last1 = INFINITY;
    int sign = 1;
    for (long i = 0; i < 10000000L; i++) {
        if (i > 0) {
            double f = alpha - (double)i + 1.0;
            lc += log(fabs(f)) - log((double)i);
            if (f < 0) sign = -sign;
        }
        double j = alpha - (double)i;
        double s0 = lc + i * lq + j * l1q + ((double)i * i - i) / s2 - M_LN2 +
                    log_erfc(((double)i - z0) / rs);
        double s1 = lc + j * lq + i * l1q + (j * j - j) / s2 - M_LN2 + log_erfc((z0 - j) / rs);
        slog_add(&a0, s0, sign);
        slog_add(&a1, s1, sign);
        double total = log_add(a0.s > 0 ? a0.l : -INFINITY, a1.s > 0 ? a1.l : -INFINITY);
        if ((double)i > alpha + 1.0 && s0 < last0 && s1 < last1 && fmax(s0, s1) < total - 36.0) {
            if (a0.s < 0 || a1.s < 0) return NAN;
            return log_add(a0.l, a1.l);
        }
        last0 = s0;
        last1 = s1;
    }
    return NAN;
}

/* RDP of one SGM step at order alpha (> 1). */
static double rdp_step(double q, double sigma, double alpha) {
    if (q >= 1.0) return alpha / (2.0 * sigma * sigma);
    double la = (alpha == floor(alpha) && alpha <= 1e6) ? log_a_int(q, sigma, (int)alpha)
                                                        : log_a_frac(q, sigma, alpha);
    return la / (alpha - 1.0);
}

int fl_rdp_compute(double *rdp, const fl_dp_phase *phases, int n_phases, const double *orders,
                   int n_orders, char err[FL_ERR_LEN]) {
    int rc = check_phases(phases, n_phases, err);
    if (rc) return rc;
    if (n_orders <= 0 || !orders || !rdp)
        return fl_seterr(err, FL_EINVAL, "orders: expected at least one order");
    for (int k = 0; k < n_orders; k++)
        if (!(orders[k] > 1.0 && orders[k] <= 10000.0))
            return fl_seterr(err, FL_EINVAL, "orders[%d]: expected an order in (1, 10000], got %g",
                             k, orders[k]);
    for (int k = 0; k < n_orders; k++) {
        double total = 0.0;
        for (int p = 0; p < n_phases; p++) {
            if (phases[p].steps == 0) continue;
            double r = rdp_step(phases[p].q, phases[p].sigma, orders[k]);
            if (isnan(r))
                return fl_seterr(err, FL_ENUMERIC,
                                 "phase %d: RDP series at order %g did not converge (q=%g, "
                                 "sigma=%g)",
                                 p, orders[k], phases[p].q, phases[p].sigma);
            total += r * (double)phases[p].steps;
        }
        rdp[k] = total;
    }
    return 0;
}

/* ========================= RDP -> (epsilon, delta) ======================== */

int fl_rdp_to_epsilon(double *eps, double *best_order, const double *rdp, const double *orders,
                      int n_orders, double delta, int conversion, char err[FL_ERR_LEN]) {
    int rc = check_delta(delta, err);
    if (rc) return rc;
    if (conversion != FL_RDP_CONV_BALLE2020 && conversion != FL_RDP_CONV_MIRONOV2017)
        return fl_seterr(err, FL_EINVAL, "conversion: unknown RDP conversion %d", conversion);
    if (n_orders <= 0 || !orders || !rdp)
        return fl_seterr(err, FL_EINVAL, "orders: expected at least one order");
    double best = INFINITY, arg = NAN, ld = log(delta);
    for (int k = 0; k < n_orders; k++) {
        double a = orders[k];
        if (!(a > 1.0))
            return fl_seterr(err, FL_EINVAL, "orders[%d]: expected an order > 1, got %g", k, a);
        if (isnan(rdp[k]) || rdp[k] < 0.0)
            return fl_seterr(err, FL_EINVAL, "rdp[%d]: expected a value >= 0, got %g", k, rdp[k]);
        if (isinf(rdp[k])) continue;
        /* D_a >= KL for a > 1, and TV <= sqrt(1 - e^-KL) (Bretagnolle-Huber):
         * when that is <= delta the mechanism is (0, delta)-DP outright, which
         * both conversions miss (they stay > 0 even at rdp = 0). */
        if (-expm1(-rdp[k]) <= delta * delta) {
            best = 0.0;
            arg = a;
            break;
        }
        double e = conversion == FL_RDP_CONV_BALLE2020
                       ? rdp[k] + log1p(-1.0 / a) - (ld + log(a)) / (a - 1.0)
                       : rdp[k] - ld / (a - 1.0);
        if (e < best) {
            best = e;
            arg = a;
        }
    }
    *eps = best < 0.0 ? 0.0 : best;
    if (best_order) *best_order = arg;
    return 0;
}

int fl_rdp_epsilon(double *eps, double *best_order, const fl_dp_phase *phases, int n_phases,
                   const double *orders, int n_orders, double delta, char err[FL_ERR_LEN]) {
    if (!orders) {
        orders = default_orders;
        n_orders = FL_RDP_N_DEFAULT_ORDERS;
    }
    int rc = check_delta(delta, err);
    if (rc) return rc;
    if (n_orders <= 0) return fl_seterr(err, FL_EINVAL, "orders: expected at least one order");
    double *rdp = malloc(sizeof(double) * (size_t)n_orders);
    if (!rdp) return fl_seterr(err, FL_ENOMEM, "rdp: out of memory");
    rc = fl_rdp_compute(rdp, phases, n_phases, orders, n_orders, err);
    if (rc) goto cleanup;
    rc = fl_rdp_to_epsilon(eps, best_order, rdp, orders, n_orders, delta, FL_RDP_CONV_BALLE2020,
                           err);
cleanup:
    free(rdp);
    return rc;
}

/* =================================== FFT ================================== */

/* An iterative radix-2 complex FFT. Twiddles come from cos/sin of each
 * angle (not a recurrence), so each is within a few ulp; the error analysis
 * in pld_convolve relies on that (Higham, "Accuracy and Stability of
 * Numerical Algorithms", 2nd ed., §24.1). */
typedef struct cpx {
    double re, im;
} cpx;

#define FL_PLD_MAX_FFT ((size_t)1 << 23)

static cpx *twiddles(size_t n) {
    cpx *w = malloc(sizeof(cpx) * (n / 2 + 1));
    if (!w) return NULL;
    for (size_t k = 0; k <= n / 2; k++) {
        double a = -2.0 * M_PI * (double)k / (double)n;
        w[k].re = cos(a);
        w[k].im = sin(a);
    }
    return w;
}

static void fft(cpx *x, size_t n, const cpx *w, int inverse) {
    for (size_t i = 1, j = 0; i < n; i++) {
        size_t bit = n >> 1;
        for (; j & bit; bit >>= 1)
            j ^= bit;
        j ^= bit;
        if (i < j) {
            cpx t = x[i];
            x[i] = x[j];
            x[j] = t;
        }
    }
    for (size_t len = 2; len <= n; len <<= 1) {
        size_t half = len >> 1, step = n / len;
        for (size_t i = 0; i < n; i += len) {
            for (size_t j = 0; j < half; j++) {
                cpx tw = w[j * step];
                if (inverse) tw.im = -tw.im;
                cpx u = x[i + j], v = x[i + j + half];
                double vr = v.re * tw.re - v.im * tw.im, vi = v.re * tw.im + v.im * tw.re;
                x[i + j].re = u.re + vr;
                x[i + j].im = u.im + vi;
                x[i + j + half].re = u.re - vr;
                x[i + j + half].im = u.im - vi;
            }
        }
    }
}

/* ============================ PLD discretisation ========================== */

/* A discrete privacy loss distribution: P-masses p[i] at loss (lo + i) h,
 * plus a mass at +infinity. err bounds the l1 floating-point error of p;
 * moved is the total P-mass moved by pessimistic tail handling (each such
 * move changes delta(eps) by at most the mass moved). steps counts the
 * composed SGM steps. */
typedef struct pld {
    int64_t lo;
    int64_t n;
    double *p;
    double inf;
    double err;
    double moved;
    int64_t steps;
} pld;

static void pld_free(pld *d) {
    free(d->p);
    d->p = NULL;
    d->n = 0;
}

/* The SGM with sensitivity 1 reduces to one dimension (Mironov et al. 2019,
 * §3): mu0 = N(0, s^2), mu1 = N(1, s^2), mix = (1-q) mu0 + q mu1. Remove
 * direction: P = mix, Q = mu0; add direction: P = mu0, Q = mix. Both losses
 * are monotone in x through
 *   Lrem(x) = log(1 - q + q exp((2x - 1) / (2 s^2))),   Ladd(x) = -Lrem(x). */
typedef struct sgm {
    long double q, s, s2;
    int remove; /* 1: remove direction; 0: add direction */
} sgm;

static long double lrem(const sgm *m, long double x) {
    long double u = (2.0L * x - 1.0L) / (2.0L * m->s2);
    if (m->q >= 1.0L) return u;
    if (u > 0) return u + logl(m->q) + log1pl((1.0L - m->q) * expl(-u) / m->q);
    return log1pl(m->q * expm1l(u));
}

/* The inverse of Lrem: -inf when L <= log(1-q), +inf for L = +inf. */
static long double xrem(const sgm *m, long double l) {
    if (l == INFINITY) return INFINITY;
    if (l == -INFINITY) return -INFINITY;
    if (m->q >= 1.0L) return 0.5L + m->s2 * l;
    long double e = expm1l(l);
    if (l > 40.0L) return 0.5L + m->s2 * (l + log1pl(-(1.0L - m->q) * expl(-l)) - logl(m->q));
    if (e <= -m->q) return -INFINITY;
    return 0.5L + m->s2 * log1pl(e / m->q);
}

/* Standard normal mass of [a, b], a <= b, accurate in both tails; adds to
 * *e a bound on its absolute error: erfcl is within a few ulp, and the
 * subtraction turns that into 8 LDBL_EPSILON times the larger operand. */
static long double nmass(long double a, long double b, long double *e) {
    if (!(a < b)) return 0.0L;
    const long double r = 0.70710678118654752440L;
    long double x, y, v;
    if (a >= 0) {
        x = 0.5L * erfcl(a * r);
        y = 0.5L * erfcl(b * r);
        v = x - y;
    } else if (b <= 0) {
        x = 0.5L * erfcl(-b * r);
        y = 0.5L * erfcl(-a * r);
        v = x - y;
    } else {
        x = 0.5L * erfcl(-a * r);
        y = 0.5L * erfcl(b * r);
        v = 1.0L - x - y;
        x = 1.0L;
    }
    *e += 8.0L * LDBL_EPSILON * x;
    return v;
}

/* Densities of mu0 and of the mixture at x. */
static long double phi0(const sgm *m, long double x) {
    return expl(-x * x / (2.0L * m->s2)) / (m->s * 2.50662827463100050242L);
}

static long double pdens(const sgm *m, long double x, int mixture) {
    long double f0 = phi0(m, x);
    if (!mixture) return f0;
    return (1.0L - m->q) * f0 + m->q * phi0(m, x - 1.0L);
}

/* Gauss-Legendre, 8 nodes on [-1, 1] (Abramowitz and Stegun, Table 25.4). */
static const long double gl_x[4] = {0.18343464249564980494L, 0.52553240991632898582L,
                                    0.79666647741362673959L, 0.96028985649753623168L};
static const long double gl_w[4] = {0.36268378337836198297L, 0.31370664587788728734L,
                                    0.22238103445337447054L, 0.10122853629037625915L};

static const long double gl4_x[2] = {0.33998104358485626480L, 0.86113631159405257522L};
static const long double gl4_w[2] = {0.65214515486254614263L, 0.34785484513745385737L};

/* For the x-interval [xa, xb] that holds the losses [ek, ek + h): P, its
 * P-mass, and D = P - e^{ek} Q = int (p(x) - e^{ek} q(x)) dx, the numerator
 * of the connect-the-dots split. Written as int q(x) e^{ek} expm1(L(x) - ek)
 * dx the integrand has no cancellation, so D is accurate to about
 * LDBL_EPSILON (|ek| + 2) / h relative to P, where subtracting the two
 * Gaussian masses would lose everything to rounding for small h. Narrow
 * intervals (the integrand changes by a factor below e^0.5 across them) use
 * 8-point Gauss-Legendre, whose error is then below 1e-18 relative; wide
 * ones (a handful, where the loss flattens) use normal masses. Adds a bound
 * on the absolute errors of P and D to *e. */
static void cell(const sgm *m, long double xa, long double xb, long double ek, long double *P,
                 long double *D, long double *e) {
    long double w = xb - xa, big = fabsl(xa) > fabsl(xb) ? fabsl(xa) : fabsl(xb);
    long double kappa = w * (big + 2.0L) / m->s2 + w / m->s;
    if (isfinite(xa) && isfinite(xb) && kappa <= 0.5L) {
        /* Below kappa = 0.1 four nodes already err by < 1e-19 relative. */
        int four = kappa <= 0.1L;
        const long double *nx = four ? gl4_x : gl_x, *nw = four ? gl4_w : gl_w;
        int half = four ? 2 : 4;
        long double c = 0.5L * (xa + xb), r = 0.5L * w, ps = 0.0L, ds = 0.0L, g = expl(ek);
        for (int i = 0; i < 2 * half; i++) {
            long double x = c + (i < half ? -1.0L : 1.0L) * r * nx[i % half], wt = nw[i % half];
            long double lx = m->remove ? lrem(m, x) : -lrem(m, x);
            long double d = expm1l(lx - ek);
            if (d < 0.0L) d = 0.0L;
            ps += wt * pdens(m, x, m->remove);
            ds += wt * pdens(m, x, !m->remove) * g * d;
        }
        *P = ps * r;
        *D = ds * r;
        *e += *P * (16.0L * LDBL_EPSILON * (fabsl(ek) + 2.0L) + 1e-18L);
        return;
    }
    long double e0 = 0.0L, e1 = 0.0L;
    long double m0 = nmass(xa / m->s, xb / m->s, &e0);
    long double m1 = nmass((xa - 1.0L) / m->s, (xb - 1.0L) / m->s, &e1);
    long double mix = (1.0L - m->q) * m0 + m->q * m1;
    long double mixe = (1.0L - m->q) * e0 + m->q * e1 + 4.0L * LDBL_EPSILON * mix;
    long double Q = m->remove ? m0 : mix, g = expl(ek);
    *P = m->remove ? mix : m0;
    *D = *P - Q * g;
    *e += (m->remove ? mixe : e0) + (m->remove ? e0 : mixe) * g + 4.0L * LDBL_EPSILON * *P;
}

/* The per-step PLD of one direction on the grid {i h}, by connect the dots
 * (Doroshenko et al. 2022). The true pair restricted to the loss interval
 * I_k = [e_k, e_k + h) has P-mass P_k and Q-mass Q_k, and dQ/dP = e^-L lies
 * in [e^-(e_k+h), e^-e_k] there. Split P_k into atoms at e_k and e_k + h that
 * keep both masses:
 *   p_hi = (P_k - Q_k e^{e_k}) / (1 - e^{-h}),   p_lo = P_k - p_hi.
 * The true pair is a post-processing of this discrete pair (send each atom
 * back to I_k with the kernel lambda(x) dP / p), so the discrete PLD
 * dominates the true one, and domination survives composition: every delta
 * computed from it is an upper bound. Its delta(eps) curve interpolates the
 * true one at the grid points, linearly in e^eps.
 * Tails: x beyond 10 standard deviations (P-mass < 1e-23) is handled
 * pessimistically and counted in `moved`: loss below the grid is collapsed
 * onto its first point (rounding a loss up is pessimistic), loss above it is
 * split between its last point and +infinity. */
static int pld_discretise(pld *out, double q, double sigma, int remove, double h, char *err) {
    sgm m = {q, sigma, (long double)sigma * sigma, remove};
    long double z = 10.0L, lmin, lmax;
    if (remove) {
        lmin = lrem(&m, -z * m.s);
        lmax = lrem(&m, 1.0L + z * m.s);
    } else {
        lmin = -lrem(&m, z * m.s);
        lmax = -lrem(&m, -z * m.s);
    }
    int64_t ia = (int64_t)floorl(lmin / h), ib = (int64_t)ceill(lmax / h);
    if (ib <= ia) ib = ia + 1;
    if (ib - ia + 1 > (int64_t)(FL_PLD_MAX_FFT / 2))
        return fl_seterr(err, FL_EINVAL,
                         "interval: a single step needs %lld grid points at h=%g (sigma=%g); "
                         "use a larger interval",
                         (long long)(ib - ia + 1), h, sigma);
    out->lo = ia;
    out->n = ib - ia + 1;
    out->p = calloc((size_t)out->n, sizeof(double));
    if (!out->p) return fl_seterr(err, FL_ENOMEM, "pld: out of memory");
    out->inf = 0.0;
    out->moved = 0.0;
    out->steps = 1;
    long double denom = -expm1l(-(long double)h), P, D, e = 0.0L;
    /* x-interval of losses [l1, l2): increasing map for remove, decreasing
     * for add */
#define XA(l1, l2) (remove ? xrem(&m, (l1)) : xrem(&m, -(l2)))
#define XB(l1, l2) (remove ? xrem(&m, (l2)) : xrem(&m, -(l1)))
    long double lo_l = (long double)ia * h, hi_l = (long double)ib * h;
    cell(&m, XA(-INFINITY, lo_l), XB(-INFINITY, lo_l), 0.0L, &P, &D, &e);
    out->p[0] += (double)P;
    out->moved += (double)P;
    long double xprev = remove ? xrem(&m, lo_l) : xrem(&m, -lo_l);
    for (int64_t k = ia; k < ib; k++) {
        long double ek = (long double)k * h, x2 = remove ? xrem(&m, ek + h) : xrem(&m, -(ek + h));
        long double xa = remove ? xprev : x2, xb = remove ? x2 : xprev;
        xprev = x2;
        if (!(xa < xb)) continue;
        cell(&m, xa, xb, ek, &P, &D, &e);
        if (P <= 0.0L) continue;
        long double hi = D / denom;
        if (hi < 0.0L) hi = 0.0L;
        if (hi > P) hi = P;
        out->p[k - ia] += (double)(P - hi);
        out->p[k - ia + 1] += (double)hi;
    }
    /* Above the grid: an atom at hi_l keeping the Q-mass (Q e^{hi_l} = P - D)
     * and the rest of the P-mass at +infinity. */
    cell(&m, XA(hi_l, INFINITY), XB(hi_l, INFINITY), hi_l, &P, &D, &e);
    long double at = P - D;
    if (at < 0.0L) at = 0.0L;
    if (at > P) at = P;
    out->p[out->n - 1] += (double)at;
    out->inf = (double)(P - at);
    out->moved += (double)P;
#undef XA
#undef XB
    /* Each split divides the error of D by 1 - e^-h and gives it to both
     * atoms; then every mass is rounded to double. */
    out->err = (double)(2.0L * e / denom) + 2.0 * DBL_EPSILON;
    return 0;
}

/* ========================= PLD composition, queries ======================= */

static double l2norm(const double *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += x[i] * x[i];
    return sqrt(s);
}

/* Drops negative round-off, then moves the lower tail (cumulative mass <=
 * tail/2) up onto the first kept point and the upper tail (<= tail/2) to
 * +infinity. Both moves are pessimistic (a loss only ever increases). */
static void pld_truncate(pld *d, double tail) {
    double lo_mass = 0.0, hi_mass = 0.0;
    int64_t a = 0, b = d->n - 1;
    for (int64_t i = 0; i < d->n; i++)
        if (d->p[i] < 0.0) d->p[i] = 0.0;
    while (a < b && lo_mass + d->p[a] <= tail / 2)
        lo_mass += d->p[a++];
    while (b > a && hi_mass + d->p[b] <= tail / 2)
        hi_mass += d->p[b--];
    if (a > 0) {
        memmove(d->p, d->p + a, sizeof(double) * (size_t)(b - a + 1));
        d->p[0] += lo_mass;
    }
    d->lo += a;
    d->n = b - a + 1;
    d->inf += hi_mass;
    d->moved += lo_mass + hi_mass;
}

/* out = a composed with b (the distribution of the sum of independent
 * losses). out may alias a or b. Small inputs are convolved directly, large
 * ones by FFT, packing both real sequences into one complex transform.
 * Floating-point error: the worst-case analysis of a radix-2 FFT (Higham,
 * "Accuracy and Stability of Numerical Algorithms", §24.1: l2 relative
 * error <= ~14 log2(N) u) gives an l1 bound near sqrt(N) 50 log2(N) u
 * (|a|_2 + |b|_2), about 1e-11 for a first squaring, and composing T steps
 * multiplies it by T: far above what happens (2e-15 measured against a long
 * double direct convolution on the same input). So out->err carries the
 * standard random-rounding estimate instead, sqrt(N) sqrt(log2 N) u (|a|_2
 * |b|_1 + |a|_1 |b|_2) times 2, which tests/unit/test_accountant.c checks
 * against a direct convolution in long double. It is added to every delta
 * we report; docs/privacy.md states that it is an estimate. */
static int pld_convolve(pld *out, const pld *a, const pld *b, double tail, char *err) {
    int64_t n = a->n + b->n - 1;
    double suma = 0.0, sumb = 0.0;
    for (int64_t i = 0; i < a->n; i++)
        suma += a->p[i];
    for (int64_t i = 0; i < b->n; i++)
        sumb += b->p[i];
    double fp;
    double *r = NULL;
    cpx *z = NULL, *w = NULL;
    int rc = 0;
    if ((a->n < b->n ? a->n : b->n) <= 64) {
        r = calloc((size_t)n, sizeof(double));
        if (!r) {
            rc = fl_seterr(err, FL_ENOMEM, "pld: out of memory");
            goto cleanup;
        }
        for (int64_t i = 0; i < a->n; i++)
            for (int64_t j = 0; j < b->n; j++)
                r[i + j] += a->p[i] * b->p[j];
        fp = 2.0 * (double)(a->n + b->n) * DBL_EPSILON * suma * sumb;
    } else {
        size_t N = 1;
        int lg = 0;
        while (N < (size_t)n) {
            N <<= 1;
            lg++;
        }
        if (N > FL_PLD_MAX_FFT) {
            rc = fl_seterr(err, FL_EINVAL,
                           "interval: the composed privacy loss needs %lld grid points; use a "
                           "larger interval",
                           (long long)n);
            goto cleanup;
        }
        z = calloc(N, sizeof(cpx));
        w = twiddles(N);
        r = malloc(sizeof(double) * (size_t)n);
        if (!z || !w || !r) {
            rc = fl_seterr(err, FL_ENOMEM, "pld: out of memory (FFT of size %zu)", N);
            goto cleanup;
        }
        for (int64_t i = 0; i < a->n; i++)
            z[i].re = a->p[i];
        if (a == b) {
            fft(z, N, w, 0);
            for (size_t k = 0; k < N; k++) {
                double re = z[k].re * z[k].re - z[k].im * z[k].im;
                z[k].im = 2.0 * z[k].re * z[k].im;
                z[k].re = re;
            }
        } else {
            for (int64_t i = 0; i < b->n; i++)
                z[i].im = b->p[i];
            fft(z, N, w, 0);
            /* With Z = FFT(a + i b): A_k = (Z_k + conj Z_{N-k}) / 2 and
             * B_k = (Z_k - conj Z_{N-k}) / 2i, so A_k B_k =
             * (Z_k^2 - conj(Z_{N-k})^2) / 4i. Pairs (k, N-k) are done
             * together so the update can be in place. */
            for (size_t k = 0; k <= N / 2; k++) {
                size_t m = (N - k) & (N - 1);
                cpx zk = z[k], zm = z[m];
                /* P_k = (zk^2 - conj(zm)^2) / (4i) */
                double ar = zk.re * zk.re - zk.im * zk.im, ai = 2.0 * zk.re * zk.im;
                double br = zm.re * zm.re - zm.im * zm.im, bi = -2.0 * zm.re * zm.im;
                double dr = ar - br, di = ai - bi;
                cpx pk = {di / 4.0, -dr / 4.0};
                /* P_m = (zm^2 - conj(zk)^2) / (4i) */
                double cr = zm.re * zm.re - zm.im * zm.im, ci = 2.0 * zm.re * zm.im;
                double er = zk.re * zk.re - zk.im * zk.im, ei = -2.0 * zk.re * zk.im;
                double fr = cr - er, fi = ci - ei;
                cpx pm = {fi / 4.0, -fr / 4.0};
                z[k] = pk;
                z[m] = pm;
            }
        }
        fft(z, N, w, 1);
        for (int64_t i = 0; i < n; i++)
            r[i] = z[i].re / (double)N;
        double na2 = l2norm(a->p, a->n), nb2 = a == b ? na2 : l2norm(b->p, b->n);
        fp = 2.0 * sqrt((double)N) * sqrt((double)lg) * DBL_EPSILON * (na2 * sumb + suma * nb2);
    }
    {
        pld res;
        res.lo = a->lo + b->lo;
        res.n = n;
        res.p = r;
        res.inf = a->inf + b->inf - a->inf * b->inf;
        res.err = a->err * sumb + b->err * suma + a->err * b->err + fp;
        res.moved = a->moved + b->moved;
        res.steps = a->steps + b->steps;
        r = NULL;
        pld_truncate(&res, tail);
        if (out == a || out == b) {
            /* the caller's input is replaced; free its storage */
            free(out->p);
        }
        *out = res;
    }
cleanup:
    free(r);
    free(z);
    free(w);
    return rc;
}

/* out = d composed with itself `times` times (exponentiation by squaring;
 * Koskela et al. 2020 compose in the Fourier domain directly, squaring keeps
 * the truncation pessimistic at every stage). d is consumed. */
static int pld_power(pld *out, pld *d, int64_t times, double tail, char *err) {
    int rc = 0;
    pld acc = {0, 1, NULL, 0.0, 0.0, 0.0, 0};
    acc.p = malloc(sizeof(double));
    if (!acc.p) return fl_seterr(err, FL_ENOMEM, "pld: out of memory");
    acc.p[0] = 1.0;
    while (times > 0) {
        if (times & 1) {
            rc = pld_convolve(&acc, &acc, d, tail, err);
            if (rc) goto cleanup;
        }
        times >>= 1;
        if (times > 0) {
            rc = pld_convolve(d, d, d, tail, err);
            if (rc) goto cleanup;
        }
    }
    *out = acc;
    acc.p = NULL;
cleanup:
    pld_free(&acc);
    return rc;
}

/* The composed PLD of the whole schedule in one direction. */
static int pld_schedule(pld *out, const fl_dp_phase *phases, int n_phases, int remove, double h,
                        double tail, char *err) {
    int rc = 0;
    pld acc = {0, 1, NULL, 0.0, 0.0, 0.0, 0}, step = {0}, pw = {0};
    acc.p = malloc(sizeof(double));
    if (!acc.p) return fl_seterr(err, FL_ENOMEM, "pld: out of memory");
    acc.p[0] = 1.0;
    for (int i = 0; i < n_phases; i++) {
        if (phases[i].steps == 0) continue;
        rc = pld_discretise(&step, phases[i].q, phases[i].sigma, remove, h, err);
        if (rc) goto cleanup;
        rc = pld_power(&pw, &step, phases[i].steps, tail, err);
        if (rc) goto cleanup;
        rc = pld_convolve(&acc, &acc, &pw, tail, err);
        if (rc) goto cleanup;
        pld_free(&pw);
        pld_free(&step);
    }
    *out = acc;
    acc.p = NULL;
cleanup:
    pld_free(&acc);
    pld_free(&step);
    pld_free(&pw);
    return rc;
}

/* delta(eps) = inf + sum_j p_j (1 - e^{eps - e_j})_+ is linear in e^eps
 * between grid points. Walking down from the top with A_i = sum_{j>i} p_j
 * and S_i = sum_{j>i} p_j e^{e_i - e_j} (S_{i-1} = e^-h (S_i + p_i), no
 * overflow) gives delta(e_i) = inf + A_i - S_i. */

/* The smallest eps with delta(eps) + slack <= target; +INFINITY if none,
 * possibly negative. */
static double pld_eps_for(const pld *d, double h, double target, double slack) {
    double base = d->inf + slack - target;
    if (base > 0.0) return INFINITY;
    double A = 0.0, S = 0.0, eh = exp(-h);
    int64_t i = d->n - 1;
    for (; i >= 0; i--) {
        if (base + A - S > 0.0) break;
        A += d->p[i];
        S = eh * (S + d->p[i]);
    }
    /* Now (A, S) describe the segment just above grid point i (index i may
     * be -1: below the support); the answer lies in that segment. For eps
     * there: delta(eps) = inf + A - e^{eps - e_i} S. */
    if (S <= 0.0) return (double)(d->lo + i + 1) * h;
    double arg = (base + A) / S;
    if (arg <= 0.0) return -INFINITY;
    return (double)(d->lo + i) * h + log(arg);
}

static double pld_delta_at(const pld *d, double h, double eps) {
    double A = 0.0, S = 0.0, eh = exp(-h);
    int64_t k = (int64_t)floor(eps / h) - d->lo; /* grid point at or below eps */
    if (k >= d->n - 1) return d->inf;
    for (int64_t i = d->n - 1; i > k && i >= 0; i--) {
        A += d->p[i];
        S = eh * (S + d->p[i]);
    }
    if (k < 0) {
        /* carry S down to grid point k below the support */
        S *= exp(-(double)(-1 - k) * h);
    }
    double v = d->inf + A - exp(eps - (double)(d->lo + k) * h) * S;
    return v < d->inf ? d->inf : v;
}

static int pld_prepare(double *h, double *tail, const fl_dp_phase *phases, int n_phases,
                       const fl_pld_options *opts, char *err) {
    int rc = check_phases(phases, n_phases, err);
    if (rc) return rc;
    *h = opts && opts->interval != 0.0 ? opts->interval : FL_PLD_DEFAULT_INTERVAL;
    *tail = opts && opts->tail_mass != 0.0 ? opts->tail_mass : FL_PLD_DEFAULT_TAIL_MASS;
    if (!(*h >= 1e-7 && *h <= 1.0))
        return fl_seterr(err, FL_EINVAL, "interval: expected a discretisation in [1e-7, 1], got %g",
                         *h);
    if (!(*tail >= 0.0 && *tail <= 1e-6))
        return fl_seterr(err, FL_EINVAL, "tail_mass: expected a value in [0, 1e-6], got %g", *tail);
    return 0;
}

int fl_pld_epsilon(double *eps, fl_pld_report *report, const fl_dp_phase *phases, int n_phases,
                   double delta, const fl_pld_options *opts, char err[FL_ERR_LEN]) {
    double h, tail;
    int rc = pld_prepare(&h, &tail, phases, n_phases, opts, err);
    if (rc) return rc;
    rc = check_delta(delta, err);
    if (rc) return rc;
    double hi = 0.0, lo = 0.0, slack_max = 0.0, t_bound = 0.0;
    int64_t points = 0;
    /* Hoeffding tail budget for the connect-the-dots rounding. */
    double eta_h = delta * 1e-3;
    for (int remove = 1; remove >= 0; remove--) {
        pld d = {0};
        rc = pld_schedule(&d, phases, n_phases, remove, h, tail, err);
        if (rc) return rc;
        double e_up = pld_eps_for(&d, h, delta, d.err);
        /* Coupling the true loss L with the discrete one L': given the data,
         * log(r'/r) for each step lies in an interval of length h and
         * E[r'/r] = 1, so by Hoeffding's lemma and inequality the sum
         * L - L' >= -t except with probability eta_h, for
         * t = T h^2/8 + h sqrt(T ln(1/eta_h)/2). Hence
         * delta'(eps) <= delta(eps - t) + eta_h + moved, which gives both
         * the a priori bound and the certified lower bound. */
        double T = (double)d.steps;
        double t = T * h * h / 8.0 + h * sqrt(T * log(1.0 / eta_h) / 2.0);
        double eta = eta_h + d.moved;
        double e_lo = pld_eps_for(&d, h, delta + eta, -d.err) - t;
        if (e_up > hi) hi = e_up;
        if (e_lo > lo) lo = e_lo;
        if (eta + 2.0 * d.err > slack_max) slack_max = eta + 2.0 * d.err;
        if (t > t_bound) t_bound = t;
        if (d.n > points) points = d.n;
        pld_free(&d);
    }
    if (lo > hi) lo = hi;
    *eps = hi;
    if (report) {
        report->epsilon = hi;
        report->epsilon_lower = lo;
        report->error_bound = t_bound;
        report->delta_slack = slack_max;
        report->interval = h;
        report->grid_points = points;
    }
    return 0;
}

int fl_pld_delta(double *delta, const fl_dp_phase *phases, int n_phases, double epsilon,
                 const fl_pld_options *opts, char err[FL_ERR_LEN]) {
    double h, tail;
    int rc = pld_prepare(&h, &tail, phases, n_phases, opts, err);
    if (rc) return rc;
    if (!(epsilon >= 0.0) || !isfinite(epsilon))
        return fl_seterr(err, FL_EINVAL, "epsilon: expected a finite value >= 0, got %g", epsilon);
    double worst = 0.0;
    for (int remove = 1; remove >= 0; remove--) {
        pld d = {0};
        rc = pld_schedule(&d, phases, n_phases, remove, h, tail, err);
        if (rc) return rc;
        double v = pld_delta_at(&d, h, epsilon) + d.err;
        if (v > worst) worst = v;
        pld_free(&d);
    }
    *delta = worst > 1.0 ? 1.0 : worst;
    return 0;
}

/* ================================ Calibration ============================= */

int fl_accountant_epsilon(double *eps, double *order, int accountant, const fl_dp_phase *phases,
                          int n_phases, double delta, char err[FL_ERR_LEN]) {
    if (accountant == FL_ACCOUNTANT_RDP)
        return fl_rdp_epsilon(eps, order, phases, n_phases, NULL, 0, delta, err);
    if (accountant == FL_ACCOUNTANT_PLD) {
        if (order) *order = NAN;
        return fl_pld_epsilon(eps, NULL, phases, n_phases, delta, NULL, err);
    }
    return fl_seterr(err, FL_EINVAL, "accountant: expected rdp or pld, got %d", accountant);
}

/* f = log(eps(sigma) / target), clamped to [-50, 50]: <= 0 when sigma
 * meets the target. A sigma the PLD cannot evaluate (a grid too large for
 * a tiny sigma) counts as not meeting it, so the search only ever returns a
 * sigma that was evaluated and met the target. */
static int excess(double *f, double sigma, double q, int64_t steps, double target, double delta,
                  int accountant, char *err) {
    fl_dp_phase ph = {q, sigma, steps};
    double e;
    int rc = fl_accountant_epsilon(&e, NULL, accountant, &ph, 1, delta, err);
    if (rc == FL_EINVAL && accountant == FL_ACCOUNTANT_PLD) {
        *f = 1.0;
        return 0;
    }
    if (rc) return rc;
    double v = log(e / target);
    *f = v > 50.0 ? 50.0 : (v < -50.0 || isnan(v) ? -50.0 : v);
    return 0;
}

int fl_dp_calibrate_sigma(double *sigma, double q, int64_t steps, double target_eps, double delta,
                          int accountant, char err[FL_ERR_LEN]) {
    const double smin = 0.05, smax = 1e4;
    fl_dp_phase ph = {q, 1.0, steps};
    int rc = fl_dp_phase_check(&ph, 0, err);
    if (rc) return rc;
    rc = check_delta(delta, err);
    if (rc) return rc;
    if (steps <= 0)
        return fl_seterr(err, FL_EINVAL, "steps: expected > 0 steps to calibrate for, got %lld",
                         (long long)steps);
    if (!(target_eps > 0.0) || !isfinite(target_eps))
        return fl_seterr(err, FL_EINVAL, "epsilon: expected a finite target > 0, got %g",
                         target_eps);
    if (accountant != FL_ACCOUNTANT_RDP && accountant != FL_ACCOUNTANT_PLD)
        return fl_seterr(err, FL_EINVAL, "accountant: expected rdp or pld, got %d", accountant);
    double hi, fhi, flo;
    /* RDP is looser than PLD, so the RDP answer brackets the PLD one. */
    if (accountant == FL_ACCOUNTANT_PLD) {
        rc = fl_dp_calibrate_sigma(&hi, q, steps, target_eps, delta, FL_ACCOUNTANT_RDP, err);
        if (rc) return rc;
        rc = excess(&fhi, hi, q, steps, target_eps, delta, accountant, err);
        if (rc) return rc;
        if (fhi > 0.0)
            return fl_seterr(err, FL_ENUMERIC, "pld: epsilon above the RDP bound at sigma %g", hi);
    } else {
        for (hi = 1.0;; hi *= 2.0) {
            if (hi > smax)
                return fl_seterr(err, FL_EINVAL,
                                 "epsilon: target %g at delta %g is not met by any sigma <= %g",
                                 target_eps, delta, smax);
            rc = excess(&fhi, hi, q, steps, target_eps, delta, accountant, err);
            if (rc) return rc;
            if (fhi <= 0.0) break;
        }
    }
    double lo = hi;
    for (;;) {
        lo /= 2.0;
        if (lo < smin) {
            rc = excess(&flo, smin, q, steps, target_eps, delta, accountant, err);
            if (rc) return rc;
            if (flo <= 0.0)
                return fl_seterr(err, FL_EINVAL,
                                 "epsilon: target %g at delta %g is met even at sigma = %g; "
                                 "calibration searches sigma >= %g",
                                 target_eps, delta, smin, smin);
            lo = smin;
            break;
        }
        rc = excess(&flo, lo, q, steps, target_eps, delta, accountant, err);
        if (rc) return rc;
        if (flo > 0.0) break;
        hi = lo;
        fhi = flo;
    }
    /* Bracketed search on [lo, hi] (f(lo) > 0 >= f(hi)) until hi - lo <=
     * 1e-6: the Illinois variant of regula falsi, each point nudged half a
     * tolerance into the bracket so a one-sided approach still closes it,
     * and a bisection whenever the bracket fails to halve in two steps. */
    const double tol = 1e-6;
    int side = 0, slow = 0;
    double width = hi - lo;
    while (hi - lo > tol) {
        double c = hi - fhi * (hi - lo) / (fhi - flo);
        if (slow >= 2 || !(c > lo && c < hi)) {
            c = 0.5 * (lo + hi);
            slow = 0;
        }
        if (c < lo + 0.5 * tol) c = lo + 0.5 * tol;
        if (c > hi - 0.5 * tol) c = hi - 0.5 * tol;
        double fc;
        rc = excess(&fc, c, q, steps, target_eps, delta, accountant, err);
        if (rc) return rc;
        if (fc > 0.0) {
            lo = c;
            flo = fc;
            if (side == -1) fhi *= 0.5;
            side = -1;
        } else {
            hi = c;
            fhi = fc;
            if (side == 1) flo *= 0.5;
            side = 1;
        }
        if (hi - lo > 0.5 * width)
            slow++;
        else {
            slow = 0;
            width = hi - lo;
        }
    }
    *sigma = hi;
    return 0;
}
