/* accountant.h: differential-privacy accounting for DP-SGD with Poisson
 * sampling (DESIGN.md §8; the user-facing account is docs/privacy.md).
 *
 * The mechanism is the sampled Gaussian mechanism (SGM): each step includes
 * every record independently with probability q, sums the clipped
 * per-record gradients (L2 norm <= C) and adds N(0, sigma^2 C^2) noise, so
 * sigma is the noise multiplier. Neighbouring datasets differ by adding or
 * removing one record. A training run is a schedule of phases, each a
 * (q, sigma, steps) triple; phases compose.
 *
 * Two accountants:
 *  - RDP: Renyi DP of the SGM (Mironov, Talwar, Zhang 2019, "Renyi
 *    Differential Privacy of the Sampled Gaussian Mechanism"), summed over the
 *    schedule per order, converted to (epsilon, delta) with Balle et al. 2020
 *    ("Hypothesis testing interpretations and Renyi differential privacy",
 *    Thm 21) at the best order. Mironov 2017's classical conversion is
 *    available as a named option for comparison with older tools.
 *  - PLD: the privacy loss distribution of the SGM, discretised on a grid of
 *    spacing h with the pessimistic "connect the dots" construction
 *    (Doroshenko, Ghazi, Kamath, Kumar, Manurangsi 2022), composed by FFT
 *    with exponentiation by squaring (Koskela, Jalko, Honkela 2020). The
 *    reported epsilon is an upper bound on the true epsilon; the report
 *    states how far above it can be (fl_pld_report). Tighter than RDP.
 *
 * All functions return 0 or a negative FL_E* code (core/status.h) and, when
 * err is not NULL, write a one-line reason naming the offending field. */
#ifndef FL_ACCOUNTANT_H
#define FL_ACCOUNTANT_H

#include <stdint.h>

#include "core/status.h"

/* One phase of a training schedule. */
typedef struct fl_dp_phase {
    double q;      /* Poisson sampling probability, in (0, 1] */
    double sigma;  /* noise multiplier: noise stddev / clipping norm, > 0 */
    int64_t steps; /* number of steps, >= 0 */
} fl_dp_phase;

enum fl_accountant { FL_ACCOUNTANT_RDP = 1, FL_ACCOUNTANT_PLD = 2 };

/* RDP -> (epsilon, delta) conversions.
 *  BALLE2020:   eps = rdp + log((a-1)/a) - (log(delta) + log(a)) / (a-1)
 *               (Balle et al. 2020, Thm 21; what Opacus and dp_accounting use)
 *  MIRONOV2017: eps = rdp - log(delta) / (a-1)
 *               (Mironov 2017, Prop 3; older TF Privacy releases; looser) */
enum fl_rdp_conversion { FL_RDP_CONV_BALLE2020 = 0, FL_RDP_CONV_MIRONOV2017 = 1 };

/* The default orders, identical to Opacus's: 1.1, 1.2, ..., 10.9 and the
 * integers 12..63 (151 orders). */
#define FL_RDP_N_DEFAULT_ORDERS 151
const double *fl_rdp_default_orders(void);

/* "rdp" / "pld"; "unknown" for anything else. */
const char *fl_accountant_name(int accountant);
/* Parses "rdp" or "pld" into *accountant. */
int fl_accountant_parse(int *accountant, const char *name, char err[FL_ERR_LEN]);

/* Checks q in (0,1], sigma > 0 and finite, steps >= 0; the message names the
 * field and the phase index. */
int fl_dp_phase_check(const fl_dp_phase *phase, int index, char err[FL_ERR_LEN]);

/* rdp[k] = RDP at orders[k] of the whole schedule (sum over phases of
 * steps * RDP of one SGM step). orders must be > 1 and <= 10000. An order
 * whose RDP overflows gets +INFINITY. rdp is caller-owned, n_orders long. */
int fl_rdp_compute(double *rdp, const fl_dp_phase *phases, int n_phases, const double *orders,
                   int n_orders, char err[FL_ERR_LEN]);

/* The smallest epsilon over the orders for the given delta in (0,1), and the
 * order that achieves it (NAN if every order is infinite, then *eps is
 * +INFINITY). conversion is an enum fl_rdp_conversion. Epsilon is >= 0. */
int fl_rdp_to_epsilon(double *eps, double *best_order, const double *rdp, const double *orders,
                      int n_orders, double delta, int conversion, char err[FL_ERR_LEN]);

/* fl_rdp_compute + fl_rdp_to_epsilon with the Balle et al. conversion.
 * orders == NULL selects the default orders (n_orders is then ignored).
 * best_order may be NULL. */
int fl_rdp_epsilon(double *eps, double *best_order, const fl_dp_phase *phases, int n_phases,
                   const double *orders, int n_orders, double delta, char err[FL_ERR_LEN]);

/* PLD accountant options. Zero fields select the defaults. */
typedef struct fl_pld_options {
    double interval;  /* h, the loss discretisation interval; default 1e-4 */
    double tail_mass; /* mass truncated (pessimistically) after each
                       * convolution, both tails together; default 1e-13.
                       * It must stay above the FFT round-off (~1e-15) or
                       * the support cannot shrink. */
} fl_pld_options;

#define FL_PLD_DEFAULT_INTERVAL 1e-4
#define FL_PLD_DEFAULT_TAIL_MASS 1e-13

/* What the PLD accountant knows about its own answer (docs/privacy.md).
 * With eta = delta_slack:
 *     epsilon_lower <= true epsilon(delta) <= epsilon, and
 *     epsilon <= true epsilon(delta - eta) + error_bound.
 * error_bound = T h^2/8 + h sqrt(T ln(1000/delta) / 2) for T total steps
 * (a Hoeffding bound on the connect-the-dots rounding); eta covers the
 * truncated tails, an estimate of the floating-point error of the FFTs (the
 * bounds are exact-arithmetic statements) and delta/1000 for the Hoeffding
 * tail. */
typedef struct fl_pld_report {
    double epsilon;       /* the answer: an upper bound */
    double epsilon_lower; /* a certified lower bound on the true epsilon */
    double error_bound;   /* a priori bound on epsilon - true epsilon */
    double delta_slack;   /* eta above */
    double interval;      /* h used */
    int64_t grid_points;  /* support of the larger composed distribution */
} fl_pld_report;

/* Epsilon of the schedule at delta with the PLD accountant: the maximum over
 * the add and the remove direction. report may be NULL; opts may be NULL
 * (defaults). Returns FL_EINVAL if the composed distribution would need more
 * than 2^23 grid points (use a larger interval), FL_ENOMEM on allocation
 * failure. *eps is +INFINITY when delta is below the mass at infinity. */
int fl_pld_epsilon(double *eps, fl_pld_report *report, const fl_dp_phase *phases, int n_phases,
                   double delta, const fl_pld_options *opts, char err[FL_ERR_LEN]);

/* An upper bound on delta(epsilon) of the schedule, epsilon >= 0. */
int fl_pld_delta(double *delta, const fl_dp_phase *phases, int n_phases, double epsilon,
                 const fl_pld_options *opts, char err[FL_ERR_LEN]);

/* Epsilon with the named accountant (RDP: default orders, Balle et al.;
 * PLD: default options). order may be NULL; it is NAN for PLD. */
int fl_accountant_epsilon(double *eps, double *order, int accountant, const fl_dp_phase *phases,
                          int n_phases, double delta, char err[FL_ERR_LEN]);

/* The smallest noise multiplier sigma for which `steps` steps at sampling
 * probability q stay within (target_eps, delta) under the named accountant,
 * found by a bracketing search (regula falsi, Illinois variant, falling back
 * to bisection) to an absolute width of 1e-6; *sigma is the upper end
 * of the final bracket, so it always meets the target. Searches sigma in
 * [0.05, 1e4]; FL_EINVAL if the target is met below 0.05 or not at all. */
int fl_dp_calibrate_sigma(double *sigma, double q, int64_t steps, double target_eps, double delta,
                          int accountant, char err[FL_ERR_LEN]);

#endif
