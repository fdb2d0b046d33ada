/* cmd_privacy.c: `cohort privacy epsilon|sigma`, privacy accounting from the
 * command line (DESIGN.md §4, §8): the epsilon a DP-SGD schedule spends, or
 * the noise multiplier a target needs. A thin front over core/accountant.h;
 * docs/privacy.md explains the accountants. Every epsilon printed names its
 * accountant, delta and sampling assumption. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/clikit.h"
#include "cli/commands.h"
#include "core/accountant.h"

static void usage(FILE *f) {
    fprintf(f, "usage: cohort privacy epsilon --q Q --sigma S --steps T --delta D\n"
               "                              [--accountant rdp|pld] [--interval H] [--json]\n"
               "       cohort privacy sigma --q Q --epsilon E --steps T --delta D\n"
               "                              [--accountant rdp|pld] [--json]\n"
               "\n"
               "DP-SGD with Poisson sampling (each record in each step with probability Q),\n"
               "per-example clipping to norm C and Gaussian noise of stddev S*C, T steps,\n"
               "neighbouring datasets differing by adding or removing one record.\n"
               "  epsilon  the (epsilon, D) guarantee of the schedule\n"
               "  sigma    the smallest noise multiplier S meeting (E, D) in T steps\n"
               "  --accountant  rdp (default: Renyi DP, Balle et al. 2020 conversion) or\n"
               "                pld (privacy loss distribution: tighter, an upper bound)\n"
               "  --interval    PLD loss discretisation (default 1e-4)\n");
}

typedef struct args {
    const char *verb;
    double q, sigma, eps, delta, interval;
    long steps;
    int accountant, json;
    int have_q, have_sigma, have_eps, have_delta, have_steps;
} args;

static int need(const char *flag, int have) {
    if (have) return 0;
    fprintf(stderr, "cohort privacy: %s is required (see 'cohort privacy --help')\n", flag);
    return 2;
}

/* Parses argv into a; 0, 2 (bad usage, already reported) or -1 (--help). */
static int parse(args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->accountant = FL_ACCOUNTANT_RDP;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    a->verb = argv[1];
    if (!strcmp(a->verb, "--help") || !strcmp(a->verb, "-h")) return -1;
    if (strcmp(a->verb, "epsilon") && strcmp(a->verb, "sigma")) {
        fprintf(stderr, "cohort privacy: expected 'epsilon' or 'sigma', got '%s'\n", a->verb);
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) return -1;
        if (!strcmp(f, "--json")) {
            a->json = 1;
            continue;
        }
        int takes = !strcmp(f, "--q") || !strcmp(f, "--sigma") || !strcmp(f, "--steps") ||
                    !strcmp(f, "--delta") || !strcmp(f, "--epsilon") ||
                    !strcmp(f, "--accountant") || !strcmp(f, "--interval");
        if (!takes) {
            fprintf(stderr, "cohort privacy: unknown option '%s'\n", f);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "cohort privacy: %s: expected a value\n", f);
            return 2;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(f, "--q")) {
            rc = fl_cli_double(&a->q, f, v, 0.0, 1.0);
            if (!rc && a->q <= 0.0) rc = fl_cli_bad(f, v, "a sampling probability in (0, 1]");
            a->have_q = 1;
        } else if (!strcmp(f, "--sigma")) {
            rc = fl_cli_double(&a->sigma, f, v, 0.0, 1e6);
            if (!rc && a->sigma <= 0.0) rc = fl_cli_bad(f, v, "a noise multiplier > 0");
            a->have_sigma = 1;
        } else if (!strcmp(f, "--epsilon")) {
            rc = fl_cli_double(&a->eps, f, v, 0.0, 1e6);
            if (!rc && a->eps <= 0.0) rc = fl_cli_bad(f, v, "a target epsilon > 0");
            a->have_eps = 1;
        } else if (!strcmp(f, "--delta")) {
            rc = fl_cli_double(&a->delta, f, v, 0.0, 1.0);
            if (!rc && (a->delta <= 0.0 || a->delta >= 1.0))
                rc = fl_cli_bad(f, v, "a probability in (0, 1)");
            a->have_delta = 1;
        } else if (!strcmp(f, "--steps")) {
            rc = fl_cli_long(&a->steps, f, v, 0, 1000000000L);
            a->have_steps = 1;
        } else if (!strcmp(f, "--interval")) {
            rc = fl_cli_double(&a->interval, f, v, 1e-7, 1.0);
        } else if (!strcmp(f, "--accountant")) {
            if (fl_accountant_parse(&a->accountant, v, NULL))
                rc = fl_cli_bad(f, v, "'rdp' or 'pld'");
        }
        if (rc) return rc;
    }
    int rc =
        need("--q", a->have_q) || need("--steps", a->have_steps) || need("--delta", a->have_delta);
    if (rc) return 2;
    if (!strcmp(a->verb, "epsilon") && need("--sigma", a->have_sigma)) return 2;
    if (!strcmp(a->verb, "sigma")) {
        if (need("--epsilon", a->have_eps)) return 2;
        if (a->steps < 1) return fl_cli_bad("--steps", "0", "at least 1 step to calibrate for");
    }
    return 0;
}

static int cmd_epsilon(const args *a) {
    fl_dp_phase ph = {a->q, a->sigma, (int64_t)a->steps};
    char err[FL_ERR_LEN] = "";
    double eps, order = NAN;
    fl_pld_report rep = {0};
    int rc;
    if (a->accountant == FL_ACCOUNTANT_PLD) {
        fl_pld_options o = {a->interval, 0.0};
        rc = fl_pld_epsilon(&eps, &rep, &ph, 1, a->delta, &o, err);
    } else {
        rc = fl_rdp_epsilon(&eps, &order, &ph, 1, NULL, 0, a->delta, err);
    }
    if (rc) {
        fprintf(stderr, "cohort privacy epsilon: %s\n", err[0] ? err : fl_strerror(rc));
        return fl_exit_code(rc);
    }
    if (a->json) {
        cJSON *j = cJSON_CreateObject();
        if (!j) return 1;
        if (isfinite(eps))
            cJSON_AddNumberToObject(j, "epsilon", eps);
        else
            cJSON_AddNullToObject(j, "epsilon");
        if (isnan(order))
            cJSON_AddNullToObject(j, "order");
        else
            cJSON_AddNumberToObject(j, "order", order);
        cJSON_AddStringToObject(j, "accountant", fl_accountant_name(a->accountant));
        cJSON_AddNumberToObject(j, "delta", a->delta);
        cJSON_AddNumberToObject(j, "q", a->q);
        cJSON_AddNumberToObject(j, "sigma", a->sigma);
        cJSON_AddNumberToObject(j, "steps", (double)a->steps);
        cJSON_AddStringToObject(j, "sampling", "poisson");
        cJSON_AddStringToObject(j, "adjacency", "add_remove_one");
        if (a->accountant == FL_ACCOUNTANT_RDP) {
            cJSON_AddStringToObject(j, "conversion", "balle2020");
        } else {
            cJSON_AddNumberToObject(j, "epsilon_lower", rep.epsilon_lower);
            cJSON_AddNumberToObject(j, "error_bound", rep.error_bound);
            cJSON_AddNumberToObject(j, "interval", rep.interval);
        }
        return fl_cli_print_json(j) ? 1 : 0;
    }
    if (a->accountant == FL_ACCOUNTANT_RDP)
        printf("epsilon = %.6g at delta = %g (RDP accountant, Balle et al. 2020 conversion, best "
               "order %g; Poisson sampling q = %g, noise multiplier sigma = %g, %ld steps, "
               "add/remove-one adjacency)\n",
               eps, a->delta, order, a->q, a->sigma, a->steps);
    else
        printf("epsilon <= %.6g at delta = %g (PLD accountant, pessimistic discretisation h = %g; "
               "true epsilon >= %.6g; Poisson sampling q = %g, noise multiplier sigma = %g, %ld "
               "steps, add/remove-one adjacency)\n",
               eps, a->delta, rep.interval, rep.epsilon_lower, a->q, a->sigma, a->steps);
    return 0;
}

static int cmd_sigma(const args *a) {
    char err[FL_ERR_LEN] = "";
    double sigma, eps = NAN, order;
    int rc = fl_dp_calibrate_sigma(&sigma, a->q, (int64_t)a->steps, a->eps, a->delta, a->accountant,
                                   err);
    if (!rc) {
        fl_dp_phase ph = {a->q, sigma, (int64_t)a->steps};
        rc = fl_accountant_epsilon(&eps, &order, a->accountant, &ph, 1, a->delta, err);
    }
    if (rc) {
        fprintf(stderr, "cohort privacy sigma: %s\n", err[0] ? err : fl_strerror(rc));
        return fl_exit_code(rc);
    }
    if (a->json) {
        cJSON *j = cJSON_CreateObject();
        if (!j) return 1;
        cJSON_AddNumberToObject(j, "sigma", sigma);
        cJSON_AddNumberToObject(j, "epsilon", a->eps);
        cJSON_AddNumberToObject(j, "achieved_epsilon", eps);
        cJSON_AddStringToObject(j, "accountant", fl_accountant_name(a->accountant));
        cJSON_AddNumberToObject(j, "delta", a->delta);
        cJSON_AddNumberToObject(j, "q", a->q);
        cJSON_AddNumberToObject(j, "steps", (double)a->steps);
        cJSON_AddStringToObject(j, "sampling", "poisson");
        cJSON_AddStringToObject(j, "adjacency", "add_remove_one");
        return fl_cli_print_json(j) ? 1 : 0;
    }
    printf("sigma = %.7g (noise multiplier; %s accountant gives epsilon = %.6g <= %g at delta = "
           "%g with Poisson sampling q = %g, %ld steps, add/remove-one adjacency)\n",
           sigma, a->accountant == FL_ACCOUNTANT_PLD ? "PLD" : "RDP", eps, a->eps, a->delta, a->q,
           a->steps);
    return 0;
}

int cmd_privacy(int argc, char **argv) {
    args a;
    int rc = parse(&a, argc, argv);
    if (rc < 0) {
        usage(stdout);
        return 0;
    }
    if (rc) return rc;
    return !strcmp(a.verb, "epsilon") ? cmd_epsilon(&a) : cmd_sigma(&a);
}
