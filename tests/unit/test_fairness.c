/* test_fairness.c: core/fairness against Fairlearn's documented example
 * (whole, and split across three sites whose count vectors are summed), the
 * entropy indices against hand-computed values, insufficient-data groups,
 * alerts, binned AUC against the exact AUC of core/metrics within the bin
 * error, intersections, file-audit mode, and every layout, count and
 * compute error. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/fairness.h"
#include "core/metrics.h"
#include "core/schema.h"

/* ------------------------------------------------------------------ helpers */

/* cmocka's assert_float_equal compares in float; these figures need double. */
#define assert_near(a, b, tol)                                                                     \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.17g, expected %.17g", #a, a_, b_);         \
    } while (0)

static void load_schema(fl_schema *s, const char *name, const char *text) {
    char *path = fl_test_write_tmp(name, text);
    char err[FL_ERR_LEN] = "";
    if (fl_schema_load(s, path, err)) fail_msg("schema: %s", err);
    free(path);
}

/* The value at a '/'-free path of object keys separated by '|'. */
static const cJSON *at(const cJSON *j, const char *path) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *v = j;
    for (char *save = NULL, *k = strtok_r(buf, "|", &save); k; k = strtok_r(NULL, "|", &save)) {
        if (cJSON_IsArray(v))
            v = cJSON_GetArrayItem(v, atoi(k));
        else
            v = cJSON_GetObjectItemCaseSensitive(v, k);
        if (!v) fail_msg("no '%s' in path '%s'", k, path);
    }
    return v;
}

static double num(const cJSON *j, const char *path) {
    const cJSON *v = at(j, path);
    if (!cJSON_IsNumber(v)) fail_msg("'%s' is not a number", path);
    return v->valuedouble;
}

static void expect_null(const cJSON *j, const char *path) {
    if (!cJSON_IsNull(at(j, path))) fail_msg("'%s' is not null", path);
}

/* Fairlearn's example (fairlearn.metrics docs, "Getting started" /
 * demographic_parity_difference and equalized_odds_difference examples). */
static const int32_t FL_Y[18] = {0, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1};
static const int32_t FL_P[18] = {0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0};
static const char FL_G[19] = "bbabbcccaacabccbcc";

static const char *SCHEMA_G = "[schema]\nlabel = y\ncategorical = g\nsensitive = g\n"
                              "[groups]\ng = a,b,c\n";

/* Counts rows [lo, hi) of the example into counts. Predictions are scores of
 * exactly 0 or 1 at threshold 0.5. */
static void count_rows(uint64_t *counts, const fl_fairness_layout *L, int lo, int hi) {
    int32_t g[18];
    float s[18];
    for (int i = lo; i < hi; i++) {
        g[i] = FL_G[i] - 'a';
        s[i] = (float)FL_P[i];
    }
    assert_int_equal(fl_fairness_count(counts, L, g + lo, 1, FL_Y + lo, s + lo, hi - lo, 0.5),
                     FL_OK);
}

static cJSON *compute(const fl_fairness_layout *L, const uint64_t *counts,
                      const fl_fairness_options *opt) {
    cJSON *j = NULL;
    char err[FL_ERR_LEN] = "";
    int rc = fl_fairness_compute(&j, L, counts, opt, err);
    if (rc) fail_msg("compute: %s (%s)", fl_strerror(rc), err);
    return j;
}

/* Every figure of the example, by hand:
 *   row: 0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17
 *   grp: b  b  a  b  b  c  c  c  a  a  c  a  b  c  c  b  c  c
 *   y:   0  1  1  1  1  0  1  0  1  0  0  0  1  1  1  1  1  1
 *   p:   0  0  1  0  1  1  1  0  0  1  1  1  1  0  0  1  1  0
 *   a (rows 2 8 9 11):            TP 1 FN 1 FP 2 TN 0, n 4
 *     selection 3/4 = 0.75, TPR 1/2 = 0.5, FPR 2/2 = 1
 *   b (rows 0 1 3 4 12 15):       TP 3 FN 2 FP 0 TN 1, n 6
 *     selection 3/6 = 0.5, TPR 3/5 = 0.6, FPR 0/1 = 0
 *   c (rows 5 6 7 10 13 14 16 17): TP 2 FN 3 FP 2 TN 1, n 8
 *     selection 4/8 = 0.5, TPR 2/5 = 0.4, FPR 2/3
 *   overall: TP 6 FN 6 FP 4 TN 2, n 18: TPR 0.5, FPR 4/6
 * demographic parity: 0.75 - 0.5 = 0.25, ratio 0.5 / 0.75 = 2/3 (Fairlearn:
 * 0.25 and 0.66). Equalized odds: TPR range 0.2, FPR range 1 -> 1.0; ratios
 * 0.4/0.6 and 0/1 -> 0.0 (Fairlearn: 1.0 and 0.0). To overall: |TPR - 0.5|
 * at most 0.1, |FPR - 2/3| at most 2/3 -> 2/3; ratios TPR min(0.5/0.5,
 * 0.5/0.6, 0.4/0.5) = 0.8, FPR 0/(2/3) = 0 -> 0. */
static void check_example(const cJSON *j, int binned) {
    assert_near(num(j, "attributes|0|groups|a|selection_rate"), 0.75, 1e-12);
    assert_near(num(j, "attributes|0|groups|a|tpr"), 0.5, 1e-12);
    assert_near(num(j, "attributes|0|groups|a|fpr"), 1.0, 1e-12);
    assert_near(num(j, "attributes|0|groups|b|selection_rate"), 0.5, 1e-12);
    assert_near(num(j, "attributes|0|groups|b|tpr"), 0.6, 1e-12);
    assert_near(num(j, "attributes|0|groups|b|fpr"), 0.0, 1e-12);
    assert_near(num(j, "attributes|0|groups|c|selection_rate"), 0.5, 1e-12);
    assert_near(num(j, "attributes|0|groups|c|tpr"), 0.4, 1e-12);
    assert_near(num(j, "attributes|0|groups|c|fpr"), 2.0 / 3.0, 1e-12);
    /* a: FNR 1/2, precision 1/3, accuracy 1/4 */
    assert_near(num(j, "attributes|0|groups|a|fnr"), 0.5, 1e-12);
    assert_near(num(j, "attributes|0|groups|a|precision"), 1.0 / 3.0, 1e-12);
    assert_near(num(j, "attributes|0|groups|a|accuracy"), 0.25, 1e-12);
    assert_near(num(j, "attributes|0|groups|c|count"), 8, 0);
    assert_near(num(j, "overall|count"), 18, 0);
    assert_near(num(j, "overall|tpr"), 0.5, 1e-12);
    assert_near(num(j, "overall|fpr"), 4.0 / 6.0, 1e-12);
    assert_near(num(j, "overall|selection_rate"), 10.0 / 18.0, 1e-12);
    const cJSON *d = at(j, "attributes|0|disparities");
    assert_near(num(d, "demographic_parity_difference"), 0.25, 1e-12);
    assert_near(num(d, "demographic_parity_ratio"), 2.0 / 3.0, 1e-12);
    assert_near(num(d, "equalized_odds_difference"), 1.0, 1e-12);
    assert_near(num(d, "equalized_odds_ratio"), 0.0, 1e-12);
    assert_near(num(d, "equalized_odds_difference_to_overall"), 2.0 / 3.0, 1e-12);
    assert_near(num(d, "equalized_odds_ratio_to_overall"), 0.0, 1e-12);
    assert_near(num(d, "equal_opportunity_difference"), 0.2, 1e-12);
    /* Privileged: highest selection rate, a. AOD of b: ((0 - 1) + (0.6 - 0.5)) / 2
     * = -0.45; of c: ((2/3 - 1) + (0.4 - 0.5)) / 2 = -0.2167; b is furthest. */
    assert_string_equal(at(d, "privileged_group")->valuestring, "a");
    assert_string_equal(at(d, "average_odds_group")->valuestring, "b");
    assert_near(num(d, "average_odds_difference"), -0.45, 1e-12);
    assert_near(num(d, "disparate_impact"), 2.0 / 3.0, 1e-12);
    assert_true(cJSON_IsTrue(at(d, "four_fifths_rule_violated")));
    /* Benefits b = yhat - y + 1: TP+TN = 8 rows of 1, FP = 4 rows of 2, FN = 6
     * rows of 0; mean 16/18 = 8/9.
     * Theil = (1/18) [8 (9/8) ln(9/8) + 4 (9/4) ln(9/4)] = (ln(9/8) + ln(9/4)) / 2
     *       = ln(81/32) / 2 = 0.46435...
     * GEI(2) = (1/18) sum ((b/mu)^2 - 1) / 2 = [8 (81/64) + 4 (81/16) - 18] / 36
     *        = 12.375 / 36 = 0.34375 */
    assert_near(num(d, "theil_index"), 0.5 * log(81.0 / 32.0), 1e-12);
    assert_near(num(d, "generalized_entropy_index"), 0.34375, 1e-12);
    /* Between groups: mean benefits a 5/4, b 4/6, c 7/8 over mu 8/9, weights
     * 4, 6, 8. */
    double mu = 8.0 / 9.0, r[3] = {1.25 / mu, (4.0 / 6.0) / mu, 0.875 / mu}, w[3] = {4, 6, 8};
    double bt = 0.0, bg = 0.0;
    for (int i = 0; i < 3; i++) {
        bt += w[i] * r[i] * log(r[i]) / 18.0;
        bg += w[i] * (r[i] * r[i] - 1.0) / 2.0 / 18.0;
    }
    assert_near(num(d, "between_group_theil_index"), bt, 1e-12);
    assert_near(num(d, "between_group_generalized_entropy_index"), bg, 1e-12);
    if (!binned) { /* without score bins: no AUC, no calibration */
        expect_null(j, "overall|auc");
        expect_null(j, "attributes|0|groups|a|auc");
        assert_null(
            cJSON_GetObjectItemCaseSensitive(at(j, "attributes|0|groups|a"), "calibration"));
        return;
    }
    /* Scores of exactly 0 and 1: the ROC has one inner point (FPR, TPR), and
     * the AUC is (1 + TPR - FPR) / 2: overall (1 + 1/2 - 2/3) / 2 = 5/12, a
     * (1 + 1/2 - 1) / 2 = 1/4. */
    assert_near(num(j, "overall|auc"), 5.0 / 12.0, 1e-12);
    assert_near(num(j, "attributes|0|groups|a|auc"), 0.25, 1e-12);
}

static void example_options(fl_fairness_options *o) {
    fl_fairness_options_init(o);
    o->min_group_count = 1;
    o->min_disparate_impact = 0; /* alerts are tested on their own */
}

/* ------------------------------------------------------------------- tests */

static void test_fairlearn_example(void **state) {
    fl_schema s;
    fl_fairness_layout L;
    char err[FL_ERR_LEN] = "";
    load_schema(&s, "g.ini", SCHEMA_G);
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, 0, err), FL_OK);
    assert_int_equal(L.n_audits, 1);
    assert_int_equal(L.stride, 4);
    assert_int_equal(L.n_counts, 4 * (1 + 3));
    uint64_t *c = calloc((size_t)L.n_counts, sizeof *c);
    count_rows(c, &L, 0, 18);
    /* group a's block: TP 1, FP 2, TN 0, FN 1 */
    int64_t a = fl_fairness_block(&L, 0, 0);
    assert_int_equal(c[a + FL_FAIR_TP], 1);
    assert_int_equal(c[a + FL_FAIR_FP], 2);
    assert_int_equal(c[a + FL_FAIR_TN], 0);
    assert_int_equal(c[a + FL_FAIR_FN], 1);
    fl_fairness_options o;
    example_options(&o);
    cJSON *j = compute(&L, c, &o);
    check_example(j, 0);
    assert_near(num(j, "threshold"), 0.5, 0);
    assert_string_equal(at(j, "layout")->valuestring, L.fingerprint_hex);
    assert_int_equal(cJSON_GetArraySize(at(j, "alerts")), 0);
    assert_null(cJSON_GetObjectItemCaseSensitive(j, "site_accuracy"));
    cJSON_Delete(j);
    free(c);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
}

/* Three sites hold rows 0-5, 6-11 and 12-17; each counts its own rows into
 * the common layout and the vectors are added. The audit of the sum is the
 * audit of the whole, to the last bit. */
static void test_fairlearn_three_sites(void **state) {
    fl_schema s;
    fl_fairness_layout L;
    char err[FL_ERR_LEN] = "";
    load_schema(&s, "g3.ini", SCHEMA_G);
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, 4, err), FL_OK);
    int64_t n = L.n_counts;
    uint64_t *site[3], *sum = calloc((size_t)n, sizeof *sum), *whole = calloc((size_t)n, 8);
    for (int k = 0; k < 3; k++) {
        site[k] = calloc((size_t)n, sizeof *site[k]);
        count_rows(site[k], &L, 6 * k, 6 * k + 6);
        for (int64_t i = 0; i < n; i++)
            sum[i] += site[k][i];
    }
    count_rows(whole, &L, 0, 18);
    assert_memory_equal(sum, whole, (size_t)n * sizeof *sum);
    /* Site 0 (rows 0-5) holds one row of group a (row 2, a TP), yet sends a
     * slot for every group like the others: the vector's shape does not tell
     * which groups a site holds. */
    assert_int_equal(site[0][fl_fairness_block(&L, 0, 0) + FL_FAIR_TP] +
                         site[0][fl_fairness_block(&L, 0, 0) + FL_FAIR_FN],
                     1);
    fl_fairness_options o;
    example_options(&o);
    cJSON *j = compute(&L, sum, &o), *jw = compute(&L, whole, &o);
    check_example(j, 1);
    assert_true(cJSON_Compare(j, jw, 1));
    cJSON_Delete(j);
    cJSON_Delete(jw);
    for (int k = 0; k < 3; k++)
        free(site[k]);
    free(sum);
    free(whole);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
}

static void test_insufficient_data(void **state) {
    fl_schema s;
    fl_fairness_layout L;
    char err[FL_ERR_LEN] = "";
    load_schema(&s, "gi.ini", SCHEMA_G);
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, 0, err), FL_OK);
    uint64_t *c = calloc((size_t)L.n_counts, sizeof *c);
    count_rows(c, &L, 0, 18);
    fl_fairness_options o;
    example_options(&o);
    /* a has 4 rows: below 5, reported by count only and left out; b and c
     * both select half: parity difference 0, ratio 1. */
    o.min_group_count = 5;
    cJSON *j = compute(&L, c, &o);
    assert_near(num(j, "attributes|0|groups|a|count"), 4, 0);
    assert_string_equal(at(j, "attributes|0|groups|a|status")->valuestring, "insufficient data");
    assert_null(cJSON_GetObjectItemCaseSensitive(at(j, "attributes|0|groups|a"), "tpr"));
    assert_near(num(j, "attributes|0|disparities|demographic_parity_difference"), 0.0, 1e-12);
    assert_near(num(j, "attributes|0|disparities|groups_compared"), 2, 0);
    /* b vs c: TPR 0.6 / 0.4, FPR 0 / (2/3) */
    assert_near(num(j, "attributes|0|disparities|equalized_odds_difference"), 2.0 / 3.0, 1e-12);
    cJSON_Delete(j);
    /* Only c (8 rows) reaches 7: disparities are null, with the reason. */
    o.min_group_count = 7;
    j = compute(&L, c, &o);
    expect_null(j, "attributes|0|disparities");
    assert_non_null(strstr(at(j, "attributes|0|reason")->valuestring, "1 group with at least 7"));
    assert_int_equal(cJSON_GetArraySize(at(j, "attributes|0|alerts")), 0);
    cJSON_Delete(j);
    /* The default minimum is 30: everything is insufficient. */
    j = compute(&L, c, NULL);
    assert_near(num(j, "min_group_count"), FL_FAIRNESS_MIN_GROUP_COUNT, 0);
    expect_null(j, "attributes|0|disparities");
    cJSON_Delete(j);
    free(c);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
}

static void test_alerts(void **state) {
    fl_schema s;
    fl_fairness_layout L;
    char err[FL_ERR_LEN] = "";
    load_schema(&s, "ga.ini", SCHEMA_G);
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, 0, err), FL_OK);
    uint64_t *c = calloc((size_t)L.n_counts, sizeof *c);
    count_rows(c, &L, 0, 18);
    fl_fairness_options o;
    fl_fairness_options_init(&o); /* disparate impact limit 0.8 by default */
    o.min_group_count = 1;
    o.max_demographic_parity_difference = 0.2; /* 0.25: alert */
    o.max_equalized_odds_difference = NAN;     /* off */
    o.max_equal_opportunity_difference = 0.25; /* 0.2: no alert */
    o.max_average_odds_difference = 0.4;       /* |-0.45|: alert, signed value */
    o.max_theil_index = 0.5;                   /* 0.464: no alert */
    cJSON *j = compute(&L, c, &o);
    const cJSON *all = at(j, "alerts"), *local = at(j, "attributes|0|alerts");
    assert_int_equal(cJSON_GetArraySize(all), 3);
    assert_true(cJSON_Compare(all, local, 1));
    assert_string_equal(at(all, "0|metric")->valuestring, "demographic_parity_difference");
    assert_near(num(all, "0|value"), 0.25, 1e-12);
    assert_near(num(all, "0|limit"), 0.2, 1e-12);
    assert_string_equal(at(all, "0|attribute")->valuestring, "g");
    assert_string_equal(at(all, "1|metric")->valuestring, "average_odds_difference");
    assert_near(num(all, "1|value"), -0.45, 1e-12);
    assert_string_equal(at(all, "2|metric")->valuestring, "disparate_impact");
    assert_near(num(all, "2|limit"), 0.8, 1e-12);
    cJSON_Delete(j);
    /* A configured privileged group: c. AOD of a: ((1 - 2/3) + (0.5 - 0.4)) / 2
     * = 0.21667, of b: ((0 - 2/3) + (0.6 - 0.4)) / 2 = -0.23333: b. */
    const char *pa[] = {"g"}, *pg[] = {"c"};
    o.privileged_attr = pa;
    o.privileged = pg;
    o.n_privileged = 1;
    j = compute(&L, c, &o);
    assert_string_equal(at(j, "attributes|0|disparities|privileged_group")->valuestring, "c");
    assert_near(num(j, "attributes|0|disparities|average_odds_difference"),
                0.5 * ((0.0 - 2.0 / 3.0) + (0.6 - 0.4)), 1e-12);
    cJSON_Delete(j);
    /* Site spread: accuracies 0.5, 0.7, 0.9: mean 0.7, variance 0.08 / 3. */
    fl_fairness_options_init(&o);
    o.site_accuracy_sum = 0.5 + 0.7 + 0.9;
    o.site_accuracy_sumsq = 0.25 + 0.49 + 0.81;
    o.n_sites = 3;
    j = compute(&L, c, &o);
    assert_near(num(j, "site_accuracy|mean"), 0.7, 1e-12);
    assert_near(num(j, "site_accuracy|variance"), 0.08 / 3.0, 1e-12);
    assert_near(num(j, "site_accuracy|sites"), 3, 0);
    cJSON_Delete(j);
    free(c);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
}

/* Deterministic pseudo-random numbers (a 64-bit LCG, Knuth MMIX constants). */
static double lcg(uint64_t *x) {
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*x >> 11) / 9007199254740992.0;
}

static void test_auc_and_calibration(void **state) {
    fl_schema s;
    fl_fairness_layout L;
    char err[FL_ERR_LEN] = "";
    load_schema(&s, "gs.ini", SCHEMA_G);
    enum { N = 3000, B = 20 };
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, B, err), FL_OK);
    assert_int_equal(L.stride, 4 + 2 * B);
    static int32_t y[N], g[N];
    static float p[N];
    uint64_t x = 7;
    for (int i = 0; i < N; i++) {
        g[i] = (int32_t)(lcg(&x) * 3);
        y[i] = lcg(&x) < 0.4;
        /* informative but overlapping scores; exact 0 and 1 at the edges */
        double v = 0.5 * lcg(&x) + (y[i] ? 0.35 : 0.1) + 0.1 * g[i];
        p[i] = (float)(i % 500 == 0 ? 1.0 : i % 499 == 0 ? 0.0 : fmin(v, 1.0));
    }
    uint64_t *c = calloc((size_t)L.n_counts, sizeof *c);
    assert_int_equal(fl_fairness_count(c, &L, g, 1, y, p, N, 0.5), FL_OK);
    fl_fairness_options o;
    fl_fairness_options_init(&o);
    cJSON *j = compute(&L, c, &o);
    /* The binned AUC counts every positive/negative pair inside one bin as a
     * half; the exact AUC may give such a pair 0 or 1, so the two differ by at
     * most half the within-bin pairs: sum_j pos_j neg_j / (2 P N). */
    for (int a = -1; a < 3; a++) {
        float sp[N];
        int32_t sy[N];
        int m = 0;
        for (int i = 0; i < N; i++)
            if (a < 0 || g[i] == a) {
                sp[m] = p[i];
                sy[m++] = y[i];
            }
        double exact;
        assert_int_equal(fl_auc(&exact, sp, sy, m), FL_OK);
        const uint64_t *blk = c + fl_fairness_block(&L, a, a < 0 ? 0 : a);
        double within = 0, P = 0, Nn = 0;
        for (int k = 0; k < B; k++) {
            within += (double)blk[FL_FAIR_HIST + k] * (double)blk[FL_FAIR_HIST + B + k];
            P += (double)blk[FL_FAIR_HIST + B + k];
            Nn += (double)blk[FL_FAIR_HIST + k];
        }
        double bound = within / (2 * P * Nn);
        char path[64];
        snprintf(path, sizeof path, a < 0 ? "overall|auc" : "attributes|0|groups|%c|auc", 'a' + a);
        double binned = num(j, path);
        print_message("AUC %s: exact %.6f, binned %.6f, bound %.6f\n", path, exact, binned, bound);
        assert_true(fabs(binned - exact) <= bound + 1e-12);
        assert_true(bound < 0.05); /* the test means something */
    }
    /* Calibration: non-empty bins only, counts add up to the group, observed
     * rate within [0, 1], predicted the bin midpoint. */
    const cJSON *cal = at(j, "attributes|0|groups|b|calibration"), *e;
    double total = 0;
    cJSON_ArrayForEach(e, cal) {
        double lo = num(e, "lo"), hi = num(e, "hi");
        assert_near(hi - lo, 1.0 / B, 1e-12);
        assert_near(num(e, "predicted"), (lo + hi) / 2, 1e-12);
        assert_true(num(e, "observed") >= 0 && num(e, "observed") <= 1);
        assert_true(num(e, "count") > 0);
        total += num(e, "count");
    }
    assert_near(total, num(j, "attributes|0|groups|b|count"), 0);
    cJSON_Delete(j);
    free(c);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
}

static const char *SCHEMA_AM = "[schema]\nlabel = y\ncategorical = Marital\n"
                               "sensitive = Age,Marital\n"
                               "[groups]\nAge = <25,25-40,>=40\nMarital = married,single\n";

static void test_intersections(void **state) {
    fl_schema s;
    fl_fairness_layout L, L2, L3;
    char err[FL_ERR_LEN] = "";
    load_schema(&s, "am.ini", SCHEMA_AM);
    assert_int_equal(fl_fairness_layout_init(&L, &s, " Age * Marital ", 2, err), FL_OK);
    assert_int_equal(L.n_attr, 2);
    assert_int_equal(L.n_audits, 3);
    assert_string_equal(fl_fairness_audit_name(&L, 2), "Age*Marital");
    assert_int_equal(fl_fairness_n_groups(&L, 2), 6);
    assert_string_equal(fl_fairness_group_label(&L, 2, 0), "<25/married");
    assert_string_equal(fl_fairness_group_label(&L, 2, 1), "<25/single");
    assert_string_equal(fl_fairness_group_label(&L, 2, 5), ">=40/single");
    assert_null(fl_fairness_group_label(&L, 2, 6));
    assert_int_equal(L.stride, 8);
    assert_int_equal(L.n_counts, 8 * (1 + 3 + 2 + 6));
    assert_int_equal(fl_fairness_block(&L, 2, 5), L.n_counts - 8);
    /* The same description gives the same fingerprint; anything else differs. */
    assert_int_equal(fl_fairness_layout_init(&L2, &s, "Age*Marital", 2, err), FL_OK);
    assert_string_equal(L.fingerprint_hex, L2.fingerprint_hex);
    fl_fairness_layout_free(&L2);
    assert_int_equal(fl_fairness_layout_init(&L2, &s, "Age*Marital", 3, err), FL_OK);
    assert_int_equal(fl_fairness_layout_init(&L3, &s, "Marital*Age", 2, err), FL_OK);
    assert_true(L.fingerprint != L2.fingerprint && L.fingerprint != L3.fingerprint);
    assert_string_equal(fl_fairness_group_label(&L3, 2, 1), "married/25-40");
    fl_fairness_layout_free(&L2);
    fl_fairness_layout_free(&L3);

    /* rows: (Age group, Marital group, y, score) */
    int32_t g[] = {2, 1, 0, 0, -1, 0};
    int32_t y[] = {1, 0, 1};
    float p[] = {0.9f, 0.2f, 0.6f};
    uint64_t *c = calloc((size_t)L.n_counts, sizeof *c);
    assert_int_equal(fl_fairness_count(c, &L, g, 2, y, p, 3, 0.5), FL_OK);
    /* row 0: >=40/single, TP, score bin 1 of the positives */
    const uint64_t *b = c + fl_fairness_block(&L, 2, 5);
    assert_int_equal(b[FL_FAIR_TP], 1);
    assert_int_equal(b[FL_FAIR_HIST + 2 + 1], 1);
    /* row 1: <25/married, y 0, score 0.2: TN, negatives bin 0 */
    b = c + fl_fairness_block(&L, 2, 0);
    assert_int_equal(b[FL_FAIR_TN], 1);
    assert_int_equal(b[FL_FAIR_HIST + 0], 1);
    /* row 2: no Age group: in Marital 'married' (TP) but in no intersection */
    b = c + fl_fairness_block(&L, 1, 0);
    assert_int_equal(b[FL_FAIR_TP] + b[FL_FAIR_TN], 2);
    uint64_t inter = 0;
    for (int k = 0; k < 6; k++)
        inter += c[fl_fairness_block(&L, 2, k) + FL_FAIR_TP];
    assert_int_equal(inter, 1);
    assert_int_equal(c[FL_FAIR_TP], 2); /* overall has every row */
    /* and the audit of it: an Age audit holds 2 rows of the 3 */
    cJSON *j = compute(&L, c, NULL);
    assert_near(num(j, "attributes|0|groups|>=40|count"), 1, 0);
    assert_string_equal(at(j, "attributes|2|attribute")->valuestring, "Age*Marital");
    assert_near(num(j, "attributes|2|groups|<25/married|count"), 1, 0);
    cJSON_Delete(j);
    free(c);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
}

static void test_layout_errors(void **state) {
    fl_schema s;
    fl_fairness_layout L;
    char err[FL_ERR_LEN];
    /* a sensitive attribute without [groups]: error naming file, line, attribute */
    load_schema(&s, "nogroups.ini",
                "[schema]\nlabel = y\nsensitive = Age,Marital\n[groups]\nAge = <25,>=25\n");
    err[0] = '\0';
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, 10, err), FL_EINVAL);
    print_message("%s\n", err);
    assert_non_null(strstr(err, "nogroups.ini:3:"));
    assert_non_null(strstr(err, "'Marital'"));
    assert_non_null(strstr(err, "[groups]"));
    assert_null(L.audits);
    fl_schema_free(&s);

    load_schema(&s, "am2.ini", SCHEMA_AM);
    const char *bad[][2] = {
        {"Age", "expected 'A*B'"},
        {"Age*", "expected 'A*B'"},
        {"Age*Marital*Age", "expected 'A*B'"},
        {"Age*Income", "'Income' is not a sensitive attribute"},
        {"Age*Age", "two different attributes"},
        {"Age*Marital, Marital*Age", "listed twice"},
        {"Age*Marital,", "expected 'A*B'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(fl_fairness_layout_init(&L, &s, bad[i][0], 10, err), FL_EINVAL);
        if (!strstr(err, bad[i][1])) fail_msg("'%s': got '%s'", bad[i][0], err);
    }
    /* an unknown attribute names the schema and its sensitive list */
    assert_int_equal(fl_fairness_layout_init(&L, &s, "Age*Income", 10, err), FL_EINVAL);
    assert_non_null(strstr(err, "am2.ini (sensitive: Age, Marital)"));
    err[0] = '\0';
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, -1, err), FL_EINVAL);
    assert_non_null(strstr(err, "score bins"));
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, FL_FAIRNESS_MAX_BINS + 1, err),
                     FL_EINVAL);
    /* 1000 bins: 2004 counts a block; 12 blocks with the intersection still fit */
    err[0] = '\0';
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, 1000, err), FL_OK);
    fl_fairness_layout_free(&L);
    assert_int_equal(fl_fairness_layout_init(&L, &s, "Age*Marital", 1000, err), FL_OK);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
    /* 40 x 40 groups with 20 bins: (1 + 80 + 1600) * 44 counts */
    char text[2048] = "[schema]\nlabel = y\ncategorical = A,B\nsensitive = A,B\n[groups]\nA = ";
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 40; i++)
            snprintf(text + strlen(text), sizeof text - strlen(text), "%sv%d", i ? "," : "", i);
        strcat(text, k ? "\n" : "\nB = ");
    }
    load_schema(&s, "big.ini", text);
    err[0] = '\0';
    assert_int_equal(fl_fairness_layout_init(&L, &s, "A*B", 20, err), FL_EINVAL);
    assert_non_null(strstr(err, "65536"));
    fl_schema_free(&s);
    /* no sensitive attribute at all: only the overall block */
    load_schema(&s, "none.ini", "[schema]\nlabel = y\n");
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, 5, err), FL_OK);
    assert_int_equal(L.n_counts, 14);
    assert_int_equal(fl_fairness_layout_init(&L, &s, "A*B", 5, err), FL_EINVAL);
    fl_schema_free(&s);
    fl_fairness_layout_free(NULL);
}

static void test_count_errors(void **state) {
    fl_schema s;
    fl_fairness_layout L;
    char err[FL_ERR_LEN] = "";
    load_schema(&s, "gc.ini", SCHEMA_G);
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, 4, err), FL_OK);
    uint64_t *c = calloc((size_t)L.n_counts, sizeof *c), *zero = calloc((size_t)L.n_counts, 8);
    int32_t g[] = {0, 1}, gbad[] = {0, 3}, y[] = {1, 0}, ybad[] = {1, 2};
    float p[] = {0.5f, 0.25f}, pnan[] = {0.5f, NAN}, pbig[] = {1.5f, 0.2f}, pneg[] = {-0.1f, 0};
    /* each failure leaves the vector untouched (the first row is good) */
    assert_int_equal(fl_fairness_count(c, &L, g, 1, ybad, p, 2, 0.5), FL_EINVAL);
    assert_int_equal(fl_fairness_count(c, &L, g, 1, y, pnan, 2, 0.5), FL_EINVAL);
    assert_int_equal(fl_fairness_count(c, &L, g, 1, y, pbig, 2, 0.5), FL_EINVAL);
    assert_int_equal(fl_fairness_count(c, &L, g, 1, y, pneg, 2, 0.5), FL_EINVAL);
    assert_int_equal(fl_fairness_count(c, &L, gbad, 1, y, p, 2, 0.5), FL_EINVAL);
    assert_int_equal(fl_fairness_count(c, &L, g, 2, y, p, 1, 0.5), FL_EINVAL);
    assert_int_equal(fl_fairness_count(c, &L, g, 1, y, p, 2, NAN), FL_EINVAL);
    assert_memory_equal(c, zero, (size_t)L.n_counts * 8);
    /* score 0.5 at threshold 0.5 is positive (p >= t, as fl_confusion_at);
     * 0.25 with 4 bins is bin 1 */
    assert_int_equal(fl_fairness_count(c, &L, g, 1, y, p, 2, 0.5), FL_OK);
    assert_int_equal(c[FL_FAIR_TP], 1);
    assert_int_equal(c[FL_FAIR_HIST + 1], 1);
    assert_int_equal(c[FL_FAIR_HIST + 4 + 2], 1);
    free(c);
    free(zero);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
}

static void test_compute_errors(void **state) {
    fl_schema s;
    fl_fairness_layout L;
    char err[FL_ERR_LEN] = "";
    load_schema(&s, "ge.ini", SCHEMA_G);
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, 2, err), FL_OK);
    uint64_t *c = calloc((size_t)L.n_counts, sizeof *c);
    count_rows(c, &L, 0, 18);
    cJSON *j = (cJSON *)1;
    /* a histogram that does not add up to the confusion counts */
    c[fl_fairness_block(&L, 0, 1) + FL_FAIR_HIST]++;
    err[0] = '\0';
    assert_int_equal(fl_fairness_compute(&j, &L, c, NULL, err), FL_EINVAL);
    assert_null(j);
    assert_non_null(strstr(err, "group 'b'"));
    c[fl_fairness_block(&L, 0, 1) + FL_FAIR_HIST]--;
    /* an audit with more rows than the whole */
    c[fl_fairness_block(&L, 0, 2) + FL_FAIR_TN] += 5;
    c[fl_fairness_block(&L, 0, 2) + FL_FAIR_HIST] += 5;
    err[0] = '\0';
    assert_int_equal(fl_fairness_compute(&j, &L, c, NULL, err), FL_EINVAL);
    assert_non_null(strstr(err, "overall"));
    c[fl_fairness_block(&L, 0, 2) + FL_FAIR_TN] -= 5;
    c[fl_fairness_block(&L, 0, 2) + FL_FAIR_HIST] -= 5;
    /* unknown privileged group, unknown attribute, bad minimum */
    fl_fairness_options o;
    fl_fairness_options_init(&o);
    const char *pa[] = {"g"}, *pg[] = {"z"}, *pa2[] = {"h"};
    o.privileged_attr = pa;
    o.privileged = pg;
    o.n_privileged = 1;
    err[0] = '\0';
    assert_int_equal(fl_fairness_compute(&j, &L, c, &o, err), FL_EINVAL);
    assert_non_null(strstr(err, "'z' is not a group of 'g'"));
    o.privileged_attr = pa2;
    assert_int_equal(fl_fairness_compute(&j, &L, c, &o, err), FL_EINVAL);
    assert_non_null(strstr(err, "'h'"));
    fl_fairness_options_init(&o);
    o.min_group_count = -1;
    assert_int_equal(fl_fairness_compute(&j, &L, c, &o, err), FL_EINVAL);
    /* the repaired vector computes */
    j = compute(&L, c, NULL);
    cJSON_Delete(j);
    free(c);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
}

/* Rates that are 0/0 are null, never NaN; all selection rates 0 leave the
 * ratios undefined. */
static void test_undefined_rates(void **state) {
    fl_schema s;
    fl_fairness_layout L;
    char err[FL_ERR_LEN] = "";
    load_schema(&s, "gu.ini", SCHEMA_G);
    assert_int_equal(fl_fairness_layout_init(&L, &s, NULL, 0, err), FL_OK);
    int32_t g[] = {0, 0, 1, 1}, y[] = {0, 0, 0, 1};
    float p[] = {0, 0, 0, 0};
    uint64_t *c = calloc((size_t)L.n_counts, sizeof *c);
    assert_int_equal(fl_fairness_count(c, &L, g, 1, y, p, 4, 0.5), FL_OK);
    fl_fairness_options o;
    fl_fairness_options_init(&o);
    o.min_group_count = 1;
    cJSON *j = compute(&L, c, &o);
    expect_null(j, "attributes|0|groups|a|tpr");       /* no positives in a */
    expect_null(j, "attributes|0|groups|a|precision"); /* nothing predicted */
    assert_near(num(j, "attributes|0|groups|a|fpr"), 0, 0);
    assert_near(num(j, "attributes|0|groups|c|count"), 0, 0);
    assert_string_equal(at(j, "attributes|0|groups|c|status")->valuestring, "insufficient data");
    expect_null(j, "attributes|0|disparities|demographic_parity_ratio");
    expect_null(j, "attributes|0|disparities|disparate_impact");
    expect_null(j, "attributes|0|disparities|four_fifths_rule_violated");
    expect_null(j, "attributes|0|disparities|equal_opportunity_difference");
    assert_near(num(j, "attributes|0|disparities|demographic_parity_difference"), 0, 0);
    char *text = cJSON_PrintUnformatted(j);
    assert_null(strstr(text, ":nan"));
    assert_null(strstr(text, ":inf"));
    assert_null(strstr(text, ":-inf"));
    cJSON_free(text);
    cJSON_Delete(j);
    free(c);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
}

static void test_observed_layout(void **state) {
    const char *names[] = {"sex", "race"};
    const char *cells[] = {"m", "x", "f", "y", "m", "x", "f", "", "f", "x", NULL, "y", "m", "y"};
    int32_t g[7];
    fl_fairness_layout L;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_fairness_layout_observed(&L, g, names, cells, 2, 7, 5, err), FL_OK);
    assert_string_equal(fl_fairness_audit_name(&L, 0), "sex*race");
    /* observed pairs, sorted: f/x, f/y, m/x, m/y; empty or NULL cells: none */
    assert_int_equal(fl_fairness_n_groups(&L, 0), 4);
    assert_string_equal(fl_fairness_group_label(&L, 0, 0), "f/x");
    assert_string_equal(fl_fairness_group_label(&L, 0, 3), "m/y");
    int32_t want[] = {2, 1, 2, -1, 0, -1, 3};
    assert_memory_equal(g, want, sizeof want);
    assert_int_equal(L.n_counts, 14 * 5);
    fl_fairness_layout_free(&L);
    /* one column */
    const char *sex[] = {"m", "f", "m", "f", "f", NULL, "m"};
    assert_int_equal(fl_fairness_layout_observed(&L, g, names, sex, 1, 7, 0, err), FL_OK);
    assert_int_equal(fl_fairness_n_groups(&L, 0), 2);
    assert_string_equal(fl_fairness_audit_name(&L, 0), "sex");
    fl_fairness_layout_free(&L);
    /* too many distinct values */
    enum { M = FL_FAIRNESS_MAX_OBSERVED + 1 };
    static char buf[M][8];
    static const char *many[M];
    static int32_t gm[M];
    for (int i = 0; i < M; i++) {
        snprintf(buf[i], sizeof buf[i], "%d", i);
        many[i] = buf[i];
    }
    err[0] = '\0';
    assert_int_equal(fl_fairness_layout_observed(&L, gm, names, many, 1, M, 0, err), FL_EINVAL);
    assert_non_null(strstr(err, "'sex'"));
    assert_int_equal(fl_fairness_layout_observed(&L, gm, names, many, 1, M - 1, 0, err), FL_OK);
    fl_fairness_layout_free(&L);
    assert_int_equal(fl_fairness_layout_observed(&L, g, names, cells, 3, 2, 0, err), FL_EINVAL);
}

/* Random but consistent count vectors (as a secure sum would give): compute
 * always succeeds, and nothing undefined leaks out as NaN or infinity. */
static void test_random_counts(void **state) {
    fl_schema s;
    fl_fairness_layout L;
    char err[FL_ERR_LEN] = "";
    load_schema(&s, "gr.ini", SCHEMA_AM);
    assert_int_equal(fl_fairness_layout_init(&L, &s, "Age*Marital", 3, err), FL_OK);
    uint64_t *c = calloc((size_t)L.n_counts, sizeof *c);
    uint64_t x = 99;
    for (int trial = 0; trial < 300; trial++) {
        memset(c, 0, (size_t)L.n_counts * sizeof *c);
        int n = (int)(lcg(&x) * 60);
        int32_t g[120], y[60];
        float p[60];
        for (int i = 0; i < n; i++) {
            /* sparse groups, missing values, all-one-class batches */
            g[2 * i] = (int32_t)(lcg(&x) * 4) - 1;
            g[2 * i + 1] = (int32_t)(lcg(&x) * 3) - 1;
            y[i] = trial % 7 == 0 ? 1 : lcg(&x) < 0.5;
            p[i] = trial % 5 == 0 ? 0.0f : (float)lcg(&x);
        }
        assert_int_equal(fl_fairness_count(c, &L, g, 2, y, p, n, lcg(&x)), FL_OK);
        fl_fairness_options o;
        fl_fairness_options_init(&o);
        o.min_group_count = trial % 4;
        o.gei_alpha = trial % 3 == 0 ? 0.0 : trial % 3 == 1 ? -1.0 : 3.0;
        o.max_theil_index = 0.01;
        o.max_average_odds_difference = 0.01;
        cJSON *j = compute(&L, c, &o);
        char *text = cJSON_PrintUnformatted(j);
        assert_null(strstr(text, "nan"));
        assert_null(strstr(text, "inf\""));
        assert_null(strstr(text, ":inf"));
        assert_null(strstr(text, ":-inf"));
        cJSON_free(text);
        cJSON_Delete(j);
    }
    free(c);
    fl_fairness_layout_free(&L);
    fl_schema_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fairlearn_example),   cmocka_unit_test(test_fairlearn_three_sites),
        cmocka_unit_test(test_insufficient_data),   cmocka_unit_test(test_alerts),
        cmocka_unit_test(test_auc_and_calibration), cmocka_unit_test(test_intersections),
        cmocka_unit_test(test_layout_errors),       cmocka_unit_test(test_count_errors),
        cmocka_unit_test(test_compute_errors),      cmocka_unit_test(test_undefined_rates),
        cmocka_unit_test(test_observed_layout),     cmocka_unit_test(test_random_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
