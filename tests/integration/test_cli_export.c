/* test_cli_export.c: `cohort export` (cli/cmd_export.c, core/onnx.c).
 *
 *  1. From a real federation's database (cohort simulate: two sites, two
 *     rounds, mlp:8,4 on the credit data): the Cohort file is byte for byte
 *     the blob the aggregator committed and signed, for the last round and
 *     for --round 1; the ONNX file is read by the onnx package (Debian's
 *     python3-onnx: onnx.checker with shape inference) and run node by node
 *     in numpy (tests/integration/onnx_eval.py), and its probabilities equal
 *     the Cohort model's own (fl_model_predict) on random inputs; its
 *     metadata names the round, the federation and the model's SHA-256.
 *  2. A three-class model from `cohort train --out` (--model): Softmax
 *     probabilities, again equal to the model's own.
 *  2b. With --schema and --data, the graph on raw columns (the encoder in
 *     ONNX): on the raw held-out split it gives cohort simulate's own
 *     accuracy and AUC.
 *  3. Refusals, each with a message naming the problem and no output file:
 *     bad usage (exit 2), a round without a model (2), a model blob altered
 *     after commit (1: its SHA-256), another round's blob altered (1: the
 *     audit log does not verify), the wrong CA (1), an output directory that
 *     does not exist (1). */
#include <dirent.h>
#include <math.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include <cjson/cJSON.h>

#include "core/model.h"
#include "kernels/backend.h"

#define ROWS 16

static char g_work[4096], g_db[4200], g_script[4096];
static double g_final_accuracy, g_final_auc; /* cohort simulate's own evaluation */

static const char *tmp(const char *name) {
    static char b[8][4200];
    static int i;
    char *p = b[i++ % 8];
    snprintf(p, sizeof b[0], "%s/%s", fl_test_tmpdir(), name);
    return p;
}

static int exists(const char *path) {
    return access(path, F_OK) == 0;
}

/* The model blob committed for round in db (malloc'd). */
static uint8_t *db_blob(const char *db, int round, size_t *len) {
    sqlite3 *h;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(h, "SELECT blob FROM models WHERE round = ?1", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_int(st, 1, round);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    *len = (size_t)sqlite3_column_bytes(st, 0);
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    memcpy(b, sqlite3_column_blob(st, 0), *len);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return b;
}

static void sql(const char *db, const char *stmt) {
    sqlite3 *h;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    char *e = NULL;
    if (sqlite3_exec(h, stmt, NULL, NULL, &e) != SQLITE_OK) fail_msg("%s: %s", stmt, e);
    sqlite3_close(h);
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    char *b = fl_test_slurp(from, &n);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
}

/* Random features (seeded), written as CSV for the script; X is (ROWS, d). */
static const char *write_features(float *X, int d) {
    uint32_t s = 12345;
    for (int i = 0; i < ROWS * d; i++) {
        s = s * 1664525u + 1013904223u;
        X[i] = (float)((int)(s >> 8) % 4001 - 2000) / 1000.0f;
    }
    const char *path = tmp("features.csv");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < d; j++)
            fprintf(f, "%.9g%c", (double)X[i * d + j], j + 1 < d ? ',' : '\n');
    fclose(f);
    return path;
}

/* Runs onnx_eval.py on model with ROWS random inputs, checks the graph's
 * shape and compares its probabilities with the Cohort model's own.
 * Returns the script's JSON (caller deletes). */
static cJSON *check_onnx(const char *onnx_path, const char *cohort_path, int want_outputs) {
    size_t len;
    uint8_t *blob = (uint8_t *)fl_test_slurp(cohort_path, &len);
    fl_model_spec spec;
    float *params;
    char err[FL_ERR_LEN] = "";
    if (fl_model_deserialize(&spec, &params, blob, len, err)) fail_msg("%s", err);
    free(blob);
    assert_int_equal(fl_model_spec_outputs(&spec), want_outputs);
    float *X = malloc(sizeof(float) * ROWS * (size_t)spec.n_in);
    float *P = malloc(sizeof(float) * ROWS * (size_t)want_outputs);
    assert_true(X && P);
    const char *csv = write_features(X, spec.n_in);
    fl_backend *be;
    fl_model m;
    assert_int_equal(fl_backend_cpu_open(&be, err), FL_OK);
    assert_int_equal(fl_model_init(&m, be, &spec, ROWS, 1, err), FL_OK);
    assert_int_equal(fl_model_set_params(&m, params), FL_OK);
    assert_int_equal(fl_model_predict(&m, P, X, ROWS), FL_OK);
    fl_model_free(&m);
    fl_backend_close(be);

    char *argv[] = {"/usr/bin/python3", g_script, (char *)onnx_path, (char *)csv, NULL};
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code != 0) fail_msg("onnx_eval.py exited %d:\n%s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("onnx_eval.py printed no JSON: %s", r.out);
    fl_proc_result_free(&r);

    assert_int_equal(cJSON_GetObjectItem(j, "ir_version")->valueint, 7);
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "opset"), 0)->valueint, 13);
    cJSON *in = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "inputs"), 0);
    assert_string_equal(cJSON_GetArrayItem(in, 0)->valuestring, "features");
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetArrayItem(in, 1), 1)->valueint, spec.n_in);
    cJSON *out = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "outputs"), 0);
    assert_string_equal(cJSON_GetArrayItem(out, 0)->valuestring, "probability");
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetArrayItem(out, 1), 1)->valueint, want_outputs);
    cJSON *ops = cJSON_GetObjectItem(j, "ops");
    assert_int_equal(cJSON_GetArraySize(ops), 2 * spec.n_hidden + 2);
    assert_string_equal(cJSON_GetArrayItem(ops, cJSON_GetArraySize(ops) - 1)->valuestring,
                        want_outputs == 1 ? "Sigmoid" : "Softmax");
    cJSON *prob = cJSON_GetObjectItem(j, "probability");
    assert_int_equal(cJSON_GetArraySize(prob), ROWS);
    double worst = 0;
    for (int i = 0; i < ROWS; i++) {
        cJSON *row = cJSON_GetArrayItem(prob, i);
        assert_int_equal(cJSON_GetArraySize(row), want_outputs);
        for (int k = 0; k < want_outputs; k++) {
            double d = fabs(cJSON_GetArrayItem(row, k)->valuedouble - P[i * want_outputs + k]);
            worst = d > worst ? d : worst;
        }
    }
    print_message("onnx vs cohort probabilities (%d rows x %d): max |diff| %.3g\n", ROWS,
                  want_outputs, worst);
    assert_true(worst < 1e-5);
    free(X);
    free(P);
    free(params);
    return j;
}

static const char *meta(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "metadata"), key);
    if (!cJSON_IsString(v)) fail_msg("metadata %s missing", key);
    return v->valuestring;
}

static int setup(void **state) {
    (void)state;
    snprintf(g_script, sizeof g_script, "%s", __FILE__);
    char *slash = strrchr(g_script, '/');
    assert_non_null(slash);
    snprintf(slash + 1, sizeof g_script - (size_t)(slash + 1 - g_script), "onnx_eval.py");
    if (!exists("/usr/bin/python3")) fail_msg("/usr/bin/python3 is missing (deploy/setup.sh)");
    snprintf(g_work, sizeof g_work, "%s", tmp("fed"));
    snprintf(g_db, sizeof g_db, "%s/aggregator.db", g_work);
    char ini_text[2048];
    snprintf(ini_text, sizeof ini_text,
             "[federation]\nsites = 2\nrounds = 2\npartition = iid\nseed = 7\n"
             "[data]\ncsv = %s/credit_data.csv\nschema = %s/../credit.schema.ini\n"
             "[model]\ntype = mlp:8,4\n"
             "[train]\nlocal_epochs = 1\nbatch_size = 64\n",
             COHORT_DATA_DIR, COHORT_DATA_DIR);
    char *ini = fl_test_write_tmp("fed.ini", ini_text);
    fl_proc_result r =
        fl_test_cohort("simulate", "--config", ini, "--workdir", g_work, "--json", NULL);
    free(ini);
    if (r.exit_code != 0) fail_msg("cohort simulate exited %d:\n%s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    cJSON *fin = cJSON_GetObjectItem(j, "final");
    assert_non_null(fin);
    g_final_accuracy = cJSON_GetObjectItem(fin, "accuracy")->valuedouble;
    g_final_auc = cJSON_GetObjectItem(fin, "auc")->valuedouble;
    cJSON_Delete(j);
    fl_proc_result_free(&r);
    return 0;
}

static void test_from_database(void **state) {
    (void)state;
    const char *cf = tmp("last.cohort"), *c1 = tmp("r1.cohort"), *ox = tmp("last.onnx");
    char ca[4300];
    snprintf(ca, sizeof ca, "%s/pki/ca.crt", g_work);
    fl_proc_result r = fl_test_cohort("export", "--db", g_db, "--format", "cohort", "--out", cf,
                                      "--ca", ca, "--json", NULL);
    if (r.exit_code != 0) fail_msg("export exited %d: %s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "round")->valueint, 2);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "signed")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "ca_checked")));
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "mlp:8,4");
    char hex[65];
    snprintf(hex, sizeof hex, "%s", cJSON_GetObjectItem(j, "model_sha256")->valuestring);
    cJSON_Delete(j);
    fl_proc_result_free(&r);
    /* Byte for byte what was committed, for the last round and round 1. */
    size_t a, b;
    uint8_t *x = (uint8_t *)fl_test_slurp(cf, &a), *y = db_blob(g_db, 2, &b);
    assert_int_equal(a, b);
    assert_memory_equal(x, y, a);
    free(x);
    free(y);
    r = fl_test_cohort("export", "--db", g_db, "--round", "1", "--format", "cohort", "--out", c1,
                       NULL);
    assert_int_equal(r.exit_code, 0);
    fl_proc_result_free(&r);
    x = (uint8_t *)fl_test_slurp(c1, &a);
    y = db_blob(g_db, 1, &b);
    assert_int_equal(a, b);
    assert_memory_equal(x, y, a);
    free(x);
    free(y);

    r = fl_test_cohort("export", "--db", g_db, "--format", "onnx", "--out", ox, NULL);
    if (r.exit_code != 0) fail_msg("export exited %d: %s", r.exit_code, r.err);
    assert_non_null(strstr(r.err, "round 2"));
    fl_proc_result_free(&r);
    j = check_onnx(ox, cf, 1);
    assert_string_equal(meta(j, "cohort.round"), "2");
    assert_string_equal(meta(j, "cohort.model"), "mlp:8,4");
    assert_string_equal(meta(j, "cohort.model_sha256"), hex);
    assert_string_equal(meta(j, "cohort.federation_id"), "sim");
    assert_string_equal(meta(j, "cohort.features"), "29");
    assert_int_equal(cJSON_GetObjectItem(j, "model_version")->valueint, 2);
    cJSON_Delete(j);
}

static void test_multiclass_file(void **state) {
    (void)state;
    /* Three classes from two features: a model file of `cohort train`. */
    char csv[8192] = "a,b,c\n";
    size_t n = strlen(csv);
    for (int i = 0; i < 150; i++) {
        int k = i % 3;
        n += (size_t)snprintf(csv + n, sizeof csv - n, "%d.%d,%d.%d,%c\n", k * 2 + i % 2, i % 10,
                              (k * 7) % 5, (i * 3) % 10, "xyz"[k]);
    }
    char *data = fl_test_write_tmp("three.csv", csv);
    char *schema = fl_test_write_tmp("three.ini", "[schema]\nlabel = c\n");
    const char *model = tmp("three.cohort"), *ox = tmp("three.onnx");
    fl_proc_result r = fl_test_cohort("train", "--data", data, "--schema", schema, "--model",
                                      "mlp:6", "--epochs", "5", "--out", model, NULL);
    if (r.exit_code != 0) fail_msg("train exited %d: %s", r.exit_code, r.err);
    fl_proc_result_free(&r);
    r = fl_test_cohort("export", "--model", model, "--format", "onnx", "--out", ox, "--json", NULL);
    if (r.exit_code != 0) fail_msg("export exited %d: %s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "classes")->valueint, 3);
    assert_null(cJSON_GetObjectItem(j, "round"));
    cJSON_Delete(j);
    fl_proc_result_free(&r);
    j = check_onnx(ox, model, 3);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "metadata"), "cohort.round"));
    /* Softmax rows sum to one. */
    cJSON *prob = cJSON_GetObjectItem(j, "probability");
    for (int i = 0; i < ROWS; i++) {
        double s = 0;
        for (int k = 0; k < 3; k++)
            s += cJSON_GetArrayItem(cJSON_GetArrayItem(prob, i), k)->valuedouble;
        assert_true(fabs(s - 1) < 1e-5);
    }
    cJSON_Delete(j);
    free(data);
    free(schema);
}

/* cohort export ARGS... must exit `code`, say `want` on stderr and leave
 * nothing at out. */
static void refused(int code, const char *want, const char *out, ...) {
    char *args[24];
    int n = 0;
    va_list ap;
    va_start(ap, out);
    for (const char *a; n < 23 && (a = va_arg(ap, const char *));)
        args[n++] = (char *)a;
    va_end(ap);
    args[n] = NULL;
    char *argv[26] = {(char *)fl_test_bin("cohort"), "export"};
    for (int i = 0; i <= n; i++)
        argv[i + 2] = args[i];
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code != code || !strstr(r.err, want))
        fail_msg("exit %d (want %d), stderr '%s' (want '%s')", r.exit_code, code, r.err, want);
    fl_proc_result_free(&r);
    if (!out) return;
    if (exists(out)) fail_msg("%s was written", out);
    /* nor is a temporary file left beside it (OUT.tmp.PID) */
    char dir[4300];
    snprintf(dir, sizeof dir, "%s", out);
    char *slash = strrchr(dir, '/');
    assert_non_null(slash);
    *slash = 0;
    size_t blen = strlen(slash + 1);
    DIR *d = opendir(dir);
    if (!d) return; /* the directory itself does not exist */
    for (struct dirent *e; (e = readdir(d));)
        if (!strncmp(e->d_name, slash + 1, blen) && !strncmp(e->d_name + blen, ".tmp.", 5))
            fail_msg("%s/%s was left behind", dir, e->d_name);
    closedir(d);
}

static void test_refusals(void **state) {
    (void)state;
    const char *o = tmp("refused.onnx");
    refused(2, "give one of --db and --model", o, "--format", "onnx", "--out", o, NULL);
    refused(2, "give one of --db and --model", o, "--db", g_db, "--model", "m", "--format", "onnx",
            "--out", o, NULL);
    refused(2, "--format: expected onnx or cohort", o, "--db", g_db, "--format", "pmml", "--out", o,
            NULL);
    refused(2, "--out is required", NULL, "--db", g_db, "--format", "onnx", NULL);
    refused(2, "--round", o, "--db", g_db, "--round", "two", "--format", "onnx", "--out", o, NULL);
    refused(2, "--round 9: ", o, "--db", g_db, "--round", "9", "--format", "onnx", "--out", o,
            NULL);
    refused(2, "no-such.cohort: cannot open", o, "--model", tmp("no-such.cohort"), "--format",
            "onnx", "--out", o, NULL);
    refused(1, "cannot create", NULL, "--db", g_db, "--format", "onnx", "--out",
            tmp("no-such-dir/m.onnx"), NULL);

    /* Another federation's CA: the stored aggregator certificate does not
     * chain to it. */
    const char *pki = tmp("other-pki");
    fl_proc_result r = fl_test_cohort("pki", "init", "--dir", pki, NULL);
    assert_int_equal(r.exit_code, 0);
    fl_proc_result_free(&r);
    char other_ca[4300];
    snprintf(other_ca, sizeof other_ca, "%s/ca.crt", pki);
    refused(1, "the audit log does not verify", o, "--db", g_db, "--format", "onnx", "--out", o,
            "--ca", other_ca, NULL);

    /* A copy of the database whose round-1 model was altered after commit:
     * round 1 fails its own SHA-256; round 2 is intact but the log as a
     * whole no longer verifies, so it is not exported either. */
    const char *bad = tmp("altered.db");
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "PRAGMA wal_checkpoint(TRUNCATE);");
    sql(g_db, cmd);
    copy_file(g_db, bad);
    sql(bad, "UPDATE models SET blob = substr(blob, 1, length(blob) - 4) || x'0000803f' "
             "WHERE round = 1");
    refused(1, "does not match the SHA-256 committed with it", o, "--db", bad, "--round", "1",
            "--format", "cohort", "--out", o, NULL);
    refused(1, "the audit log does not verify", o, "--db", bad, "--round", "2", "--format",
            "cohort", "--out", o, NULL);
}

/* With the federation's schema and a site's data file, the graph takes the
 * raw columns and encodes them itself. Run on the raw held-out test split
 * that `cohort simulate` evaluated (test.csv: strings, empty cells for
 * missing values), it gives simulate's own accuracy and AUC. */
static void test_raw_columns(void **state) {
    (void)state;
    const char *ox = tmp("raw.onnx");
    char schema[4300], data[4300], test_csv[4300];
    snprintf(schema, sizeof schema, "%s/sites/site.schema.ini", g_work);
    snprintf(data, sizeof data, "%s/sites/site-1.csv", g_work);
    snprintf(test_csv, sizeof test_csv, "%s/test.csv", g_work);
    fl_proc_result r = fl_test_cohort("export", "--db", g_db, "--format", "onnx", "--schema",
                                      schema, "--data", data, "--out", ox, NULL);
    if (r.exit_code != 0) fail_msg("export exited %d: %s", r.exit_code, r.err);
    fl_proc_result_free(&r);
    char *argv[] = {"/usr/bin/python3", g_script,     (char *)ox, test_csv, "--label",
                    "Status",           "--positive", "good",     NULL};
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code != 0) fail_msg("onnx_eval.py exited %d:\n%s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("onnx_eval.py printed no JSON: %s", r.out);
    fl_proc_result_free(&r);
    /* one input per feature column, named after it; categoricals one-hot
     * through ai.onnx.ml's LabelEncoder */
    cJSON *in = cJSON_GetObjectItem(j, "inputs");
    assert_int_equal(cJSON_GetArraySize(in), 13);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetArrayItem(in, 1), 0)->valuestring, "Home");
    assert_string_equal(meta(j, "cohort.inputs"), "columns");
    int label_encoders = 0;
    cJSON *op;
    cJSON_ArrayForEach(op, cJSON_GetObjectItem(j, "ops")) {
        label_encoders += !strcmp(op->valuestring, "LabelEncoder");
    }
    assert_int_equal(label_encoders, 4); /* Home, Marital, Records, Job */
    double acc = cJSON_GetObjectItem(j, "accuracy")->valuedouble;
    double auc = cJSON_GetObjectItem(j, "auc")->valuedouble;
    int n = cJSON_GetObjectItem(j, "n")->valueint;
    print_message("raw test split through the ONNX encoder: accuracy %.6f auc %.6f (n %d); "
                  "cohort simulate: %.6f %.6f\n",
                  acc, auc, n, g_final_accuracy, g_final_auc);
    assert_true(n > 800);
    assert_true(fabs(acc - g_final_accuracy) <= 1.0 / n + 1e-12);
    assert_true(fabs(auc - g_final_auc) < 1e-4);
    cJSON_Delete(j);

    /* the encoder options' own refusals */
    const char *bad = tmp("raw-refused.onnx");
    refused(2, "--schema and --data go together", bad, "--db", g_db, "--format", "onnx", "--schema",
            schema, "--out", bad, NULL);
    refused(2, "--schema and --data go with --format onnx", bad, "--db", g_db, "--format", "cohort",
            "--schema", schema, "--data", data, "--out", bad, NULL);
    char *plain = fl_test_write_tmp("plain.schema.ini", "[schema]\nlabel = Status\n"
                                                        "positive = good\ncategorical = Home\n");
    refused(2, "levels", bad, "--db", g_db, "--format", "onnx", "--schema", plain, "--data", data,
            "--out", bad, NULL);
    free(plain);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_database),
        cmocka_unit_test(test_multiclass_file),
        cmocka_unit_test(test_raw_columns),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
