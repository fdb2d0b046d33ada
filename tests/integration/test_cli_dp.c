/* test_cli_dp.c: `cohort train` with DP-SGD as a user runs it, as a real
 * process (DESIGN.md §4, §8): on the bundled credit data it exits 0 and
 * reports the privacy it spent (accountant, delta, order, noise multiplier,
 * clip, sampling rate, steps, Poisson sampling), that epsilon is the one
 * `cohort privacy epsilon` gives for the same schedule (to 1e-9), a target
 * --dp-epsilon is met to 1e-3, every epoch runs (no early stopping), and
 * every bad flag value exits 2 naming the flag. The noise comes from the OS,
 * so only the accounting is compared exactly; accuracy is checked loosely. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_cohort[4096];
static char g_schema[4096];

static int setup(void **state) {
    snprintf(g_cohort, sizeof g_cohort, "%s", fl_test_bin("cohort"));
    snprintf(g_schema, sizeof g_schema, "%s/../credit.schema.ini", COHORT_DATA_DIR);
    return 0;
}

/* cohort train on the credit data with the given extra flags (NULL-ended);
 * returns the process result. */
static void run_train(fl_proc_result *r, const char *const *extra) {
    char *argv[48];
    int n = 0;
    argv[n++] = g_cohort;
    argv[n++] = "train";
    argv[n++] = "--data";
    argv[n++] = (char *)fl_test_data("credit_data.csv");
    argv[n++] = "--schema";
    argv[n++] = g_schema;
    argv[n++] = "--json";
    for (const char *const *e = extra; *e && n < 47; e++)
        argv[n++] = (char *)*e;
    argv[n] = NULL;
    assert_int_equal(fl_test_run(r, argv), 0);
}

static cJSON *train_ok(const char *const *extra) {
    fl_proc_result r;
    run_train(&r, extra);
    if (r.exit_code != 0) fail_msg("cohort train exited %d: %s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("stdout is not one JSON object: %s", r.out);
    fl_proc_result_free(&r);
    return j;
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) fail_msg("missing number '%s'", key);
    return v->valuedouble;
}

static const char *str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v)) fail_msg("missing string '%s'", key);
    return v->valuestring;
}

static const cJSON *privacy(const cJSON *j) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "privacy");
    if (!cJSON_IsObject(p)) fail_msg("no \"privacy\" object in the result");
    return p;
}

/* epsilon from `cohort privacy epsilon` for the schedule in p. */
static double privacy_cli_epsilon(const cJSON *p) {
    char q[64], sigma[64], steps[32], delta[64];
    snprintf(q, sizeof q, "%.17g", num(p, "sample_rate"));
    snprintf(sigma, sizeof sigma, "%.17g", num(p, "noise_multiplier"));
    snprintf(steps, sizeof steps, "%.0f", num(p, "steps"));
    snprintf(delta, sizeof delta, "%.17g", num(p, "delta"));
    char *argv[] = {g_cohort,
                    "privacy",
                    "epsilon",
                    "--q",
                    q,
                    "--sigma",
                    sigma,
                    "--steps",
                    steps,
                    "--delta",
                    delta,
                    "--accountant",
                    (char *)str(p, "accountant"),
                    "--json",
                    NULL};
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code != 0) fail_msg("cohort privacy exited %d: %s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    double eps = num(j, "epsilon");
    cJSON_Delete(j);
    fl_proc_result_free(&r);
    return eps;
}

/* The fields every DP result carries, and their consistency with the run. */
static void check_privacy(const cJSON *j, const char *accountant, double clip, int epochs,
                          int batch) {
    const cJSON *p = privacy(j);
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(j, "train");
    double n = num(tr, "n");
    assert_string_equal(str(p, "accountant"), accountant);
    assert_string_equal(str(p, "sampling"), "poisson");
    assert_true(num(p, "epsilon") > 0.0 && isfinite(num(p, "epsilon")));
    assert_true(num(p, "delta") == 1e-5);
    assert_true(num(p, "clip") == clip);
    assert_true(num(p, "noise_multiplier") > 0.0);
    assert_true(fabs(num(p, "sample_rate") - batch / n) < 1e-15);
    double steps = epochs * ceil(n / batch);
    assert_true(num(p, "steps") == steps);
    assert_true(num(tr, "steps") == steps);
    const cJSON *order = cJSON_GetObjectItemCaseSensitive(p, "order");
    if (!strcmp(accountant, "rdp"))
        assert_true(cJSON_IsNumber(order) && order->valuedouble > 1.0);
    else
        assert_true(cJSON_IsNull(order));
}

static void test_dp_credit_rdp(void **state) {
    const char *extra[] = {"--dp-clip", "1", "--dp-noise", "1", "--epochs", "5", NULL};
    cJSON *j = train_ok(extra);
    check_privacy(j, "rdp", 1.0, 5, 64);
    const cJSON *p = privacy(j);
    assert_true(num(p, "noise_multiplier") == 1.0);
    double eps = num(p, "epsilon"), ref = privacy_cli_epsilon(p);
    print_message("credit logreg DP-SGD (sigma 1, C 1, 5 epochs): epsilon %.6f (cohort privacy: "
                  "%.6f), test accuracy %.4f auc %.4f\n",
                  eps, ref, num(cJSON_GetObjectItem(j, "test"), "accuracy"),
                  num(cJSON_GetObjectItem(j, "test"), "auc"));
    assert_true(fabs(eps - ref) <= 1e-9);
    /* DP costs accuracy, but the model still learns (majority class: 0.72) */
    assert_true(num(cJSON_GetObjectItem(j, "test"), "auc") >= 0.70);
    cJSON_Delete(j);
}

static void test_dp_credit_pld_mlp(void **state) {
    const char *extra[] = {
        "--dp-clip", "0.5",     "--dp-noise", "1.3",      "--dp-batch", "128", "--accountant",
        "pld",       "--model", "mlp:16,8",   "--epochs", "3",          NULL};
    cJSON *j = train_ok(extra);
    check_privacy(j, "pld", 0.5, 3, 128);
    const cJSON *p = privacy(j);
    double eps = num(p, "epsilon"), ref = privacy_cli_epsilon(p);
    print_message("credit mlp:16,8 DP-SGD (PLD): epsilon %.6f (cohort privacy: %.6f)\n", eps, ref);
    assert_true(fabs(eps - ref) <= 1e-9);
    cJSON_Delete(j);
}

static void test_dp_epsilon_target(void **state) {
    const char *acc[] = {"rdp", "pld"};
    for (int a = 0; a < 2; a++) {
        const char *extra[] = {
            "--dp-clip", "1", "--dp-epsilon", "2", "--epochs", "4", "--accountant", acc[a], NULL};
        cJSON *j = train_ok(extra);
        check_privacy(j, acc[a], 1.0, 4, 64);
        const cJSON *p = privacy(j);
        double eps = num(p, "epsilon");
        print_message("--dp-epsilon 2 (%s): sigma %.6f, epsilon %.6f\n", acc[a],
                      num(p, "noise_multiplier"), eps);
        assert_true(fabs(eps - 2.0) <= 1e-3);
        assert_true(eps <= 2.0 + 1e-9); /* calibration errs on the safe side */
        assert_true(num(p, "target_epsilon") == 2.0);
        assert_true(fabs(privacy_cli_epsilon(p) - eps) <= 1e-9);
        cJSON_Delete(j);
    }
}

/* Early stopping on the validation loss is not part of the accounted
 * mechanism: DP runs train every epoch and return the last iterate. */
static void test_dp_runs_every_epoch(void **state) {
    const char *extra[] = {"--dp-clip",  "1", "--dp-noise", "3",   "--epochs", "6",
                           "--patience", "1", "--lr",       "0.5", NULL};
    cJSON *j = train_ok(extra);
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(j, "train");
    assert_true(num(tr, "epochs") == 6);
    assert_true(num(tr, "best_epoch") == 6);
    cJSON_Delete(j);
}

static void expect_bad(const char *const *extra, const char *needle) {
    fl_proc_result r;
    run_train(&r, extra);
    if (r.exit_code != 2)
        fail_msg("expected exit 2 for %s, got %d: %s", needle, r.exit_code, r.err);
    assert_string_equal(r.out, "");
    if (!strstr(r.err, needle)) fail_msg("stderr lacks '%s': %s", needle, r.err);
    fl_proc_result_free(&r);
}

static void test_dp_bad_flags(void **state) {
    struct {
        const char *args[8];
        const char *flag;
    } cases[] = {
        {{"--dp-clip", "0", "--dp-noise", "1", NULL}, "--dp-clip"},
        {{"--dp-clip", "-1", "--dp-noise", "1", NULL}, "--dp-clip"},
        {{"--dp-clip", "abc", "--dp-noise", "1", NULL}, "--dp-clip"},
        {{"--dp-clip", "1", "--dp-noise", "0", NULL}, "--dp-noise"},
        {{"--dp-clip", "1", "--dp-noise", "nan", NULL}, "--dp-noise"},
        {{"--dp-clip", "1", NULL}, "--dp-noise"},
        {{"--dp-clip", "1", "--dp-noise", "1", "--dp-epsilon", "2", NULL}, "--dp-epsilon"},
        {{"--dp-noise", "1", NULL}, "--dp-clip"},
        {{"--dp-epsilon", "1", NULL}, "--dp-clip"},
        {{"--dp-clip", "1", "--dp-noise", "1", "--dp-delta", "0", NULL}, "--dp-delta"},
        {{"--dp-clip", "1", "--dp-noise", "1", "--dp-delta", "1", NULL}, "--dp-delta"},
        {{"--dp-clip", "1", "--dp-noise", "1", "--accountant", "moments", NULL}, "--accountant"},
        {{"--dp-clip", "1", "--dp-noise", "1", "--dp-batch", "0", NULL}, "--dp-batch"},
        {{"--dp-clip", "1", "--dp-noise", "1", "--dp-batch", "100000", NULL}, "--dp-batch"},
        {{"--dp-clip", "1", "--dp-epsilon", "-2", NULL}, "--dp-epsilon"},
        {{"--dp-clip", "1", "--dp-epsilon", "1e-7", NULL}, "--dp-epsilon"},
        {{"--dp-batch", "32", NULL}, "--dp-clip"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_bad(cases[i].args, cases[i].flag);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dp_bad_flags),        cmocka_unit_test(test_dp_credit_rdp),
        cmocka_unit_test(test_dp_credit_pld_mlp),   cmocka_unit_test(test_dp_epsilon_target),
        cmocka_unit_test(test_dp_runs_every_epoch),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
