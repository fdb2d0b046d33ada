/* test_cli_fairness.c: `cohort fairness` as a user runs it, as a real
 * process, on a predictions file holding Fairlearn's documented example:
 * the JSON figures (demographic parity difference 0.25 and ratio 2/3,
 * equalized odds difference 1 and ratio 0), the same audit from scores, from
 * named label values and on two intersected columns, the table, and every
 * kind of bad input rejected with exit code 2 and a message naming the
 * file, line, column and what was expected. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define assert_near(a, b, tol)                                                                     \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.17g, expected %.17g", #a, a_, b_);         \
    } while (0)

static char g_cohort[4096];
static char *g_csv; /* the example */

static const int Y[18] = {0, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1};
static const int P[18] = {0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0};
static const char G[19] = "bbabbcccaacabccbcc";

static int setup(void **state) {
    snprintf(g_cohort, sizeof g_cohort, "%s", fl_test_bin("cohort"));
    char text[4096];
    size_t n = (size_t)snprintf(text, sizeof text, "id,y,yhat,score,g,h,status,pstatus\n");
    for (int i = 0; i < 18; i++) {
        /* scores on the same side of 0.5 as the predictions */
        double s = (P[i] ? 0.55 : 0.05) + 0.02 * (i % 10);
        n += (size_t)snprintf(text + n, sizeof text - n, "%d,%d,%d,%.2f,%c,%c,%s,%s\n", i + 1, Y[i],
                              P[i], s, G[i], i % 2 ? 'y' : 'x', Y[i] ? "good" : "bad",
                              P[i] ? "good" : "bad");
    }
    g_csv = fl_test_write_tmp("example.csv", text);
    return 0;
}

static int teardown(void **state) {
    free(g_csv);
    return 0;
}

/* Runs `cohort fairness ARGS...` (NULL-terminated). */
#define run(...) fl_test_cohort("fairness", __VA_ARGS__)

static cJSON *parse_ok(fl_proc_result *r) {
    if (r->exit_code != 0) fail_msg("cohort fairness exited %d: %s", r->exit_code, r->err);
    cJSON *j = cJSON_Parse(r->out);
    if (!j) fail_msg("stdout is not one JSON object: %s", r->out);
    fl_proc_result_free(r);
    return j;
}

static const cJSON *at(const cJSON *j, const char *a, const char *b, const char *c) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, a);
    if (v && b) v = cJSON_GetObjectItemCaseSensitive(v, b);
    if (v && c) v = cJSON_GetObjectItemCaseSensitive(v, c);
    if (!v) fail_msg("no %s.%s.%s", a, b ? b : "", c ? c : "");
    return v;
}

static double num(const cJSON *j, const char *a, const char *b, const char *c) {
    const cJSON *v = at(j, a, b, c);
    if (!cJSON_IsNumber(v)) fail_msg("%s.%s.%s is not a number", a, b ? b : "", c ? c : "");
    return v->valuedouble;
}

/* The figures of the example; see tests/unit/test_fairness.c for the hand
 * computation of each. */
static void check_example(const cJSON *j) {
    assert_near(num(j, "n_rows", NULL, NULL), 18, 0);
    assert_near(num(j, "groups", "a", "selection_rate"), 0.75, 1e-12);
    assert_near(num(j, "groups", "a", "tpr"), 0.5, 1e-12);
    assert_near(num(j, "groups", "a", "fpr"), 1.0, 1e-12);
    assert_near(num(j, "groups", "b", "selection_rate"), 0.5, 1e-12);
    assert_near(num(j, "groups", "b", "tpr"), 0.6, 1e-12);
    assert_near(num(j, "groups", "b", "fpr"), 0.0, 1e-12);
    assert_near(num(j, "groups", "c", "tpr"), 0.4, 1e-12);
    assert_near(num(j, "groups", "c", "fpr"), 2.0 / 3.0, 1e-12);
    assert_near(num(j, "groups", "c", "count"), 8, 0);
    assert_near(num(j, "groups", "a", "precision"), 1.0 / 3.0, 1e-12);
    assert_near(num(j, "groups", "a", "accuracy"), 0.25, 1e-12);
    assert_near(num(j, "groups", "b", "fnr"), 0.4, 1e-12);
    assert_near(num(j, "disparities", "demographic_parity_difference", NULL), 0.25, 1e-12);
    assert_near(num(j, "disparities", "demographic_parity_ratio", NULL), 2.0 / 3.0, 1e-12);
    assert_near(num(j, "disparities", "equalized_odds_difference", NULL), 1.0, 1e-12);
    assert_near(num(j, "disparities", "equalized_odds_ratio", NULL), 0.0, 1e-12);
    assert_near(num(j, "disparities", "disparate_impact", NULL), 2.0 / 3.0, 1e-12);
    assert_true(cJSON_IsTrue(at(j, "disparities", "four_fifths_rule_violated", NULL)));
    assert_near(num(j, "disparities", "theil_index", NULL), 0.5 * log(81.0 / 32.0), 1e-12);
    assert_near(num(j, "overall", "tpr", NULL), 0.5, 1e-12);
    /* the default disparate impact limit, 0.8, raises the one alert */
    const cJSON *alerts = at(j, "alerts", NULL, NULL);
    assert_int_equal(cJSON_GetArraySize(alerts), 1);
    const cJSON *a0 = cJSON_GetArrayItem(alerts, 0);
    assert_string_equal(at(a0, "metric", NULL, NULL)->valuestring, "disparate_impact");
    assert_near(num(a0, "limit", NULL, NULL), 0.8, 1e-12);
}

static void test_predictions(void **state) {
    fl_proc_result r = run("--data", g_csv, "--label", "y", "--pred", "yhat", "--sensitive", "g",
                           "--min-group-count", "1", "--json", NULL);
    cJSON *j = parse_ok(&r);
    check_example(j);
    assert_string_equal(at(j, "attribute", NULL, NULL)->valuestring, "g");
    assert_true(cJSON_IsNull(at(j, "threshold", NULL, NULL)));
    assert_true(cJSON_IsNull(at(j, "groups", "a", "auc")));
    assert_int_equal(cJSON_GetArraySize(at(j, "groups", NULL, NULL)), 3);
    cJSON_Delete(j);
    /* extra alert limits from the command line */
    r = run("--data", g_csv, "--label", "y", "--pred", "yhat", "--sensitive", "g",
            "--min-group-count", "1", "--max-dp-difference", "0.2", "--min-disparate-impact", "0",
            "--json", NULL);
    j = parse_ok(&r);
    const cJSON *a0 = cJSON_GetArrayItem(at(j, "alerts", NULL, NULL), 0);
    assert_int_equal(cJSON_GetArraySize(at(j, "alerts", NULL, NULL)), 1);
    assert_string_equal(at(a0, "metric", NULL, NULL)->valuestring, "demographic_parity_difference");
    assert_string_equal(at(a0, "attribute", NULL, NULL)->valuestring, "g");
    cJSON_Delete(j);
}

static void test_scores_and_labels(void **state) {
    fl_proc_result r =
        run("--data", g_csv, "--label", "y", "--score", "score", "--threshold", "0.5",
            "--sensitive", "g", "--min-group-count", "1", "--bins", "4", "--json", NULL);
    cJSON *j = parse_ok(&r);
    check_example(j);
    assert_near(num(j, "threshold", NULL, NULL), 0.5, 0);
    assert_near(num(j, "n_bins", NULL, NULL), 4, 0);
    assert_true(cJSON_IsNumber(at(j, "groups", "a", "auc")));
    assert_true(cJSON_IsArray(at(j, "groups", "a", "calibration")));
    cJSON_Delete(j);
    /* named label values in both columns */
    r = run("--data", g_csv, "--label", "status", "--pred", "pstatus", "--positive", "good",
            "--sensitive", "g", "--min-group-count", "1", "--json", NULL);
    j = parse_ok(&r);
    check_example(j);
    cJSON_Delete(j);
    /* a higher threshold predicts fewer positives: rows with yhat 1 score
     * 0.55 + 0.02 (i mod 10), so at 0.7 only those with i mod 10 >= 8 stay */
    r = run("--data", g_csv, "--label", "y", "--score", "score", "--threshold", "0.7",
            "--sensitive", "g", "--min-group-count", "1", "--json", NULL);
    j = parse_ok(&r);
    assert_true(num(j, "overall", "selection_rate", NULL) < 10.0 / 18.0);
    cJSON_Delete(j);
}

static void test_intersection_and_minimum(void **state) {
    fl_proc_result r = run("--data", g_csv, "--label", "y", "--pred", "yhat", "--sensitive", "g,h",
                           "--min-group-count", "1", "--json", NULL);
    cJSON *j = parse_ok(&r);
    assert_string_equal(at(j, "attribute", NULL, NULL)->valuestring, "g*h");
    /* observed pairs only: a is on rows 2 8 9 11 (x, x, y, y), ... */
    const cJSON *groups = at(j, "groups", NULL, NULL), *g;
    double total = 0;
    cJSON_ArrayForEach(g, groups) {
        assert_non_null(strchr(g->string, '/'));
        total += num(g, "count", NULL, NULL);
    }
    assert_near(total, 18, 0);
    assert_near(num(j, "groups", "a/x", "count"), 2, 0);
    assert_near(num(j, "groups", "a/y", "count"), 2, 0);
    cJSON_Delete(j);
    /* the default minimum (30) leaves every group insufficient */
    r = run("--data", g_csv, "--label", "y", "--pred", "yhat", "--sensitive", "g", "--json", NULL);
    j = parse_ok(&r);
    assert_string_equal(at(j, "groups", "a", "status")->valuestring, "insufficient data");
    assert_true(cJSON_IsNull(at(j, "disparities", NULL, NULL)));
    assert_true(cJSON_IsString(at(j, "reason", NULL, NULL)));
    cJSON_Delete(j);
}

static void test_table(void **state) {
    fl_proc_result r = run("--data", g_csv, "--label", "y", "--pred", "yhat", "--sensitive", "g",
                           "--min-group-count", "1", NULL);
    assert_int_equal(r.exit_code, 0);
    assert_non_null(strstr(r.out, "demographic_parity_difference"));
    assert_non_null(strstr(r.out, "0.2500"));
    assert_non_null(strstr(r.out, "(overall)"));
    assert_non_null(strstr(r.out, "disparate_impact = 0.6667 (limit 0.8000)"));
    fl_proc_result_free(&r);
}

/* Bad input: exit 2, and stderr holds every expected piece. */
static void expect_bad(fl_proc_result r, const char *want1, const char *want2) {
    if (r.exit_code != 2) fail_msg("exit %d, expected 2 (stderr: %s)", r.exit_code, r.err);
    if (!strstr(r.err, want1) || (want2 && !strstr(r.err, want2)))
        fail_msg("stderr lacks '%s'/'%s': %s", want1, want2 ? want2 : "", r.err);
    print_message("%s", r.err);
    fl_proc_result_free(&r);
}

static void test_bad_input(void **state) {
    /* unknown columns, each named with its flag */
    expect_bad(run("--data", g_csv, "--label", "y", "--pred", "yhat", "--sensitive", "nope", NULL),
               "example.csv:1: no column 'nope' (--sensitive)", "the header has: id, y");
    expect_bad(run("--data", g_csv, "--label", "yy", "--pred", "yhat", "--sensitive", "g", NULL),
               "no column 'yy' (--label)", NULL);
    expect_bad(run("--data", g_csv, "--label", "y", "--score", "s", "--sensitive", "g", NULL),
               "no column 's' (--score)", NULL);
    /* a label that is not 0/1: line 4 of the file is the third data row */
    char *f = fl_test_write_tmp("badlabel.csv", "y,p,g\n0,1,a\n1,1,b\nyes,0,a\n");
    expect_bad(run("--data", f, "--label", "y", "--pred", "p", "--sensitive", "g", NULL),
               "badlabel.csv:4:1: column 'y' (--label): expected 0 or 1", "got 'yes'");
    free(f);
    f = fl_test_write_tmp("badpred.csv", "y,p,g\n0,1,a\n1,,b\n");
    expect_bad(run("--data", f, "--label", "y", "--pred", "p", "--sensitive", "g", NULL),
               "badpred.csv:3:2: column 'p' (--pred): expected 0 or 1", "got an empty cell");
    free(f);
    /* scores outside [0, 1] or not numbers */
    f = fl_test_write_tmp("badscore.csv", "g,y,s\na,0,0.2\nb,1,1.5\n");
    expect_bad(run("--data", f, "--label", "y", "--score", "s", "--sensitive", "g", NULL),
               "badscore.csv:3:3: column 's' (--score): expected a score in [0, 1]", "got '1.5'");
    free(f);
    f = fl_test_write_tmp("nanscore.csv", "g,y,s\na,0,0.2\nb,1,0.3\nb,1,high\n");
    expect_bad(run("--data", f, "--label", "y", "--score", "s", "--sensitive", "g", NULL),
               "nanscore.csv:4:3:", "got 'high'");
    free(f);
    f = fl_test_write_tmp("nan2.csv", "g,y,s\na,0,nan\n");
    expect_bad(run("--data", f, "--label", "y", "--score", "s", "--sensitive", "g", NULL),
               "nan2.csv:2:3:", "got 'nan'");
    free(f);
    /* an empty file, a header without rows, a ragged row */
    f = fl_test_write_tmp("empty.csv", "");
    expect_bad(run("--data", f, "--label", "y", "--pred", "p", "--sensitive", "g", NULL),
               "empty.csv", "empty file");
    free(f);
    f = fl_test_write_tmp("header.csv", "y,p,g\n");
    expect_bad(run("--data", f, "--label", "y", "--pred", "p", "--sensitive", "g", NULL),
               "header.csv", "no data rows");
    free(f);
    f = fl_test_write_tmp("ragged.csv", "y,p,g\n0,1,a\n1,1\n");
    expect_bad(run("--data", f, "--label", "y", "--pred", "p", "--sensitive", "g", NULL),
               "ragged.csv:3", NULL);
    free(f);
    /* usage: both or neither of --pred/--score, missing flags, bad values */
    expect_bad(run("--data", g_csv, "--label", "y", "--pred", "yhat", "--score", "score",
                   "--sensitive", "g", NULL),
               "exactly one of --pred", "got both");
    expect_bad(run("--data", g_csv, "--label", "y", "--sensitive", "g", NULL),
               "exactly one of --pred", "got neither");
    expect_bad(run("--data", g_csv, "--label", "y", "--pred", "yhat", NULL), "--sensitive",
               "required");
    expect_bad(run("--data", g_csv, "--label", "y", "--pred", "yhat", "--threshold", "0.3",
                   "--sensitive", "g", NULL),
               "--threshold applies to --score", NULL);
    expect_bad(run("--data", g_csv, "--label", "y", "--score", "score", "--threshold", "2",
                   "--sensitive", "g", NULL),
               "--threshold: expected a number in [0, 1]", NULL);
    expect_bad(
        run("--data", g_csv, "--label", "y", "--pred", "yhat", "--sensitive", "g,h,id", NULL),
        "--sensitive: expected one or two column names", NULL);
    expect_bad(run("--data", g_csv, "--label", "y", "--pred", "yhat", "--sensitive", "g",
                   "--min-group-count", "-3", NULL),
               "--min-group-count", NULL);
    expect_bad(run("--data", g_csv, "--label", "y", "--pred", "yhat", "--sensitive", "g",
                   "--privileged", "zz", "--min-group-count", "1", NULL),
               "'zz' is not a group of 'g'", NULL);
    expect_bad(run("--data", g_csv, "--bogus", NULL), "unknown option '--bogus'", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_predictions),
        cmocka_unit_test(test_scores_and_labels),
        cmocka_unit_test(test_intersection_and_minimum),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
