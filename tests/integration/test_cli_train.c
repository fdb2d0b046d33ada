/* test_cli_train.c: `cohort train` as a user runs it, as a real process:
 * the accuracy targets on the three bundled datasets, bit-identical results
 * for the same seed, and bad input rejected with exit code 2 and a message
 * that names the file, line and column. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_cohort[4096];

static int setup(void **state) {
    snprintf(g_cohort, sizeof g_cohort, "%s", fl_test_bin("cohort"));
    return 0;
}

static char *demo(const char *name) {
    static char buf[8][4096];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 4096, "%s/../%s", COHORT_DATA_DIR, name);
    return b;
}

/* Runs cohort train --json and returns the parsed result (caller deletes). */
static cJSON *train_json(const char *csv, const char *schema, const char *model, const char *out) {
    char *argv[16];
    int n = 0;
    argv[n++] = g_cohort;
    argv[n++] = "train";
    argv[n++] = "--data";
    argv[n++] = (char *)csv;
    argv[n++] = "--schema";
    argv[n++] = (char *)schema;
    argv[n++] = "--model";
    argv[n++] = (char *)model;
    argv[n++] = "--json";
    if (out) {
        argv[n++] = "--out";
        argv[n++] = (char *)out;
    }
    argv[n] = NULL;
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code != 0) fail_msg("cohort train exited %d: %s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("stdout is not one JSON object: %s", r.out);
    fl_proc_result_free(&r);
    return j;
}

static double num(const cJSON *j, const char *obj, const char *key) {
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, obj);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) fail_msg("missing number %s.%s", obj, key);
    return v->valuedouble;
}

/* The bar: accuracy >= 0.79 and AUC >= 0.83 (scikit-learn's
 * LogisticRegression reaches 0.797 / 0.836 on one stratified 80/20 split).
 * On one split of 891 test rows the AUC moves by about +-0.013 with the
 * split alone (scikit-learn's own AUC over 50 such splits: mean 0.829, sd
 * 0.013), so the bar is checked on the mean of five seeded splits under the
 * scikit-learn protocol (80/20, no validation carve-out). The bundled schema
 * takes the money columns as ln(1 + v) and adds missing indicators for
 * Income, Assets and Debt (Income is missing in 8.5% of rows, and those
 * rows default more often): +0.016 AUC on the mean of 20 splits
 * (docs/data.md). `cohort train --model logreg` with its defaults (seed 42)
 * is run too; its figures are printed, and its bound leaves room for the
 * float rounding of another CPU's BLAS kernels on a single split (its
 * accuracy is 0.7901 here: one test row above the bar). */
static void test_credit_logreg(void **state) {
    double acc = 0, auc = 0;
    for (int seed = 0; seed < 5; seed++) {
        char s[16];
        snprintf(s, sizeof s, "%d", seed);
        char *argv[] = {g_cohort,         "train",
                        "--data",         (char *)fl_test_data("credit_data.csv"),
                        "--schema",       demo("credit.schema.ini"),
                        "--model",        "logreg",
                        "--val-fraction", "0",
                        "--epochs",       "40",
                        "--seed",         s,
                        "--json",         NULL};
        fl_proc_result r;
        assert_int_equal(fl_test_run(&r, argv), 0);
        if (r.exit_code != 0) fail_msg("cohort train exited %d: %s", r.exit_code, r.err);
        cJSON *j = cJSON_Parse(r.out);
        assert_non_null(j);
        acc += num(j, "test", "accuracy") / 5;
        auc += num(j, "test", "auc") / 5;
        assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "logreg");
        assert_string_equal(cJSON_GetObjectItem(j, "device")->valuestring, "cpu");
        cJSON_Delete(j);
        fl_proc_result_free(&r);
    }
    print_message("credit_data logreg, mean of 5 splits: accuracy %.4f auc %.4f\n", acc, auc);
    assert_true(acc >= 0.79);
    assert_true(auc >= 0.83);

    cJSON *j =
        train_json(fl_test_data("credit_data.csv"), demo("credit.schema.ini"), "logreg", NULL);
    print_message("credit_data logreg, defaults (seed 42): accuracy %.4f auc %.4f\n",
                  num(j, "test", "accuracy"), num(j, "test", "auc"));
    assert_true(num(j, "test", "accuracy") >= 0.785);
    assert_true(num(j, "test", "auc") >= 0.825);
    cJSON_Delete(j);
}

static void test_flchain_logreg(void **state) {
    cJSON *j = train_json(fl_test_data("flchain.csv"), demo("flchain.schema.ini"), "logreg", NULL);
    double auc = num(j, "test", "auc");
    print_message("flchain logreg: accuracy %.4f auc %.4f\n", num(j, "test", "accuracy"), auc);
    assert_true(auc >= 0.84);
    cJSON_Delete(j);
}

static void test_german_logreg(void **state) {
    cJSON *j = train_json(fl_test_data("german_credit.csv"), demo("german_credit.schema.ini"),
                          "logreg", NULL);
    double auc = num(j, "test", "auc");
    print_message("german_credit logreg: accuracy %.4f auc %.4f\n", num(j, "test", "accuracy"),
                  auc);
    assert_true(auc >= 0.80);
    cJSON_Delete(j);
}

static void test_same_seed_bit_identical(void **state) {
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/a.model", fl_test_tmpdir());
    snprintf(b, sizeof b, "%s/b.model", fl_test_tmpdir());
    cJSON *ja =
        train_json(fl_test_data("credit_data.csv"), demo("credit.schema.ini"), "mlp:16,8", a);
    cJSON *jb =
        train_json(fl_test_data("credit_data.csv"), demo("credit.schema.ini"), "mlp:16,8", b);
    char *sa = cJSON_PrintUnformatted(ja), *sb = cJSON_PrintUnformatted(jb);
    assert_string_equal(sa, sb);
    size_t la, lb;
    char *ma = fl_test_slurp(a, &la), *mb = fl_test_slurp(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ma, mb, la);
    free(ma);
    free(mb);
    cJSON_free(sa);
    cJSON_free(sb);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
}

/* Runs cohort train on (csv, schema) and expects exit 2 and every needle in stderr. */
static void expect_bad(const char *csv, const char *schema, const char *const *needles) {
    char *argv[] = {g_cohort,   "train",        "--data", (char *)csv,
                    "--schema", (char *)schema, "--json", NULL};
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code != 2) fail_msg("expected exit 2, got %d: %s", r.exit_code, r.err);
    assert_string_equal(r.out, ""); /* no half-written result */
    for (const char *const *n = needles; *n; n++)
        if (!strstr(r.err, *n)) fail_msg("stderr lacks '%s': %s", *n, r.err);
    fl_proc_result_free(&r);
}

static const char *SCHEMA = "[schema]\nlabel = y\npositive = yes\ncategorical = c\nmissing = ,NA\n";

static void test_bad_inputs(void **state) {
    char *schema = fl_test_write_tmp("s.ini", SCHEMA);
    /* text in a numeric column: line 3, column 1 */
    char *csv = fl_test_write_tmp("num.csv", "x,c,y\n1,a,yes\nabc,b,no\n2,a,no\n3,b,yes\n");
    const char *n1[] = {"num.csv:3:1", "expected a number", "abc", NULL};
    expect_bad(csv, schema, n1);
    free(csv);
    /* ragged row */
    csv = fl_test_write_tmp("rag.csv", "x,c,y\n1,a,yes\n2,b\n");
    const char *n2[] = {"rag.csv:3", "expected 3 fields", NULL};
    expect_bad(csv, schema, n2);
    free(csv);
    /* missing label value */
    csv = fl_test_write_tmp("lab.csv", "x,c,y\n1,a,yes\n2,b,\n3,a,no\n4,b,yes\n");
    const char *n3[] = {"lab.csv:3:3", "label", NULL};
    expect_bad(csv, schema, n3);
    free(csv);
    /* empty file */
    csv = fl_test_write_tmp("empty.csv", "");
    const char *n4[] = {"empty.csv", "empty", NULL};
    expect_bad(csv, schema, n4);
    free(csv);
    /* unknown column in the schema: names the schema file and line */
    char *bad_schema = fl_test_write_tmp("bad.ini", "[schema]\nlabel = y\npositive = yes\n"
                                                    "categorical = c,nosuch\n");
    csv = fl_test_write_tmp("ok.csv", "x,c,y\n1,a,yes\n2,b,no\n3,a,no\n4,b,yes\n");
    const char *n5[] = {"bad.ini:4", "nosuch", NULL};
    expect_bad(csv, bad_schema, n5);
    free(bad_schema);
    /* a missing file is named */
    const char *n6[] = {"does-not-exist.csv", NULL};
    expect_bad("does-not-exist.csv", schema, n6);
    free(csv);
    free(schema);
}

static void test_bad_usage(void **state) {
    char *argv[] = {g_cohort, "train", "--data", "x.csv", "--epochs", "zero", NULL};
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    assert_int_equal(r.exit_code, 2);
    assert_non_null(strstr(r.err, "--epochs"));
    fl_proc_result_free(&r);
    char *argv2[] = {g_cohort, "train", "--data", "x.csv", NULL};
    assert_int_equal(fl_test_run(&r, argv2), 0);
    assert_int_equal(r.exit_code, 2);
    assert_non_null(strstr(r.err, "--schema"));
    fl_proc_result_free(&r);
    char *argv3[] = {g_cohort, "nosuchcommand", NULL};
    assert_int_equal(fl_test_run(&r, argv3), 0);
    assert_int_equal(r.exit_code, 2);
    fl_proc_result_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_usage),     cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_credit_logreg), cmocka_unit_test(test_flchain_logreg),
        cmocka_unit_test(test_german_logreg), cmocka_unit_test(test_same_seed_bit_identical),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
