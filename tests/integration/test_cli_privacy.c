/* test_cli_privacy.c: `cohort privacy` as a user runs it: calibration
 * followed by accounting gives back the target epsilon (to 1e-3, for both
 * accountants), a published vector through the command line, and bad usage
 * rejected with exit code 2 naming the flag. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static cJSON *run_json(char *const argv[]) {
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code != 0) fail_msg("%s %s exited %d: %s", argv[1], argv[2], r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("not JSON: %s", r.out);
    fl_proc_result_free(&r);
    return j;
}

static double num(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    if (!cJSON_IsNumber(v)) fail_msg("missing number '%s'", k);
    return v->valuedouble;
}

static void calibrate_then_account(const char *accountant, const char *q, const char *steps,
                                   double target) {
    char bin[4096], eps[64], sig[64];
    snprintf(bin, sizeof bin, "%s", fl_test_bin("cohort"));
    snprintf(eps, sizeof eps, "%.17g", target);
    char *a1[] = {
        bin,       "privacy",     "sigma",   "--q",  (char *)q,      "--epsilon",        eps,
        "--steps", (char *)steps, "--delta", "1e-5", "--accountant", (char *)accountant, "--json",
        NULL};
    cJSON *s = run_json(a1);
    snprintf(sig, sizeof sig, "%.17g", num(s, "sigma"));
    cJSON_Delete(s);
    char *a2[] = {
        bin,       "privacy",     "epsilon", "--q",  (char *)q,      "--sigma",          sig,
        "--steps", (char *)steps, "--delta", "1e-5", "--accountant", (char *)accountant, "--json",
        NULL};
    cJSON *e = run_json(a2);
    double got = num(e, "epsilon");
    print_message("%s: q %s, %s steps: sigma %s gives epsilon %.6f (target %.6f)\n", accountant, q,
                  steps, sig, got, target);
    assert_true(fabs(got - target) <= 1e-3);
    assert_string_equal(cJSON_GetObjectItem(e, "accountant")->valuestring, accountant);
    cJSON_Delete(e);
}

static void test_calibration_round_trip(void **state) {
    calibrate_then_account("rdp", "0.01", "1000", 2.0);
    calibrate_then_account("rdp", "0.004", "3000", 0.8);
    calibrate_then_account("pld", "0.01", "200", 1.5);
}

static void test_published_vector(void **state) {
    char bin[4096];
    snprintf(bin, sizeof bin, "%s", fl_test_bin("cohort"));
    char *a[] = {bin,       "privacy", "epsilon", "--q",  "0.04",   "--sigma", "1.5",
                 "--steps", "2250",    "--delta", "1e-5", "--json", NULL};
    cJSON *j = run_json(a);
    /* Opacus's accountant test: 7.32911117143 */
    assert_true(fabs(num(j, "epsilon") - 7.32911117143) <= 1e-6 * 7.32911117143);
    cJSON_Delete(j);
}

static void test_bad_usage(void **state) {
    char bin[4096];
    snprintf(bin, sizeof bin, "%s", fl_test_bin("cohort"));
    char *cases[][12] = {
        {bin, "privacy", "epsilon", "--q", "2", "--sigma", "1", "--steps", "3", "--delta", "1e-5",
         NULL},
        {bin, "privacy", "epsilon", "--q", "0.1", "--sigma", "-1", "--steps", "3", "--delta",
         "1e-5", NULL},
        {bin, "privacy", "nosuch", NULL},
    };
    const char *flag[] = {"--q", "--sigma", "nosuch"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fl_proc_result r;
        assert_int_equal(fl_test_run(&r, cases[i]), 0);
        if (r.exit_code != 2) fail_msg("case %zu: exit %d: %s", i, r.exit_code, r.err);
        if (!strstr(r.err, flag[i])) fail_msg("case %zu: stderr lacks '%s': %s", i, flag[i], r.err);
        fl_proc_result_free(&r);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calibration_round_trip),
        cmocka_unit_test(test_published_vector),
        cmocka_unit_test(test_bad_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
