/* test_cli_verify.c: `cohort verify` as a reviewer runs it, as a real process
 * (DESIGN.md §4, §11, docs/audit.md), on a database written through the
 * store with a real aggregator key from a throwaway CA: exit 0 and "ok: N
 * events, M signatures, head HEX" (and the --json twin), also with --ca;
 * exit 1 naming the first bad row for an edited event, a forged model
 * signature, another CA; exit 2 naming the file for a missing or non-Cohort
 * database or CA file, and for bad usage. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator/audit.h"
#include "aggregator/store.h"
#include "core/ini.h"
#include "crypto/pki.h"

static char g_cohort[4096], g_pki[2048], g_pki2[2048], g_db[4096], g_ca[4096], g_ca2[4096];

#define assert_ok(rc, err)                                                                         \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_) fail_msg("rc %d (%s): %s", rc_, fl_strerror(rc_), (err));                         \
    } while (0)

/* A federation's database: config, joins, rounds 0..3, the end; signed by
 * the aggregator of dir's CA. */
static void write_db(const char *path, const char *dir) {
    char err[FL_ERR_LEN] = "", p[4200];
    fl_store *st;
    fl_signer *signer;
    remove(path);
    assert_ok(fl_store_open(&st, path, err), err);
    assert_ok(fl_store_set_federation(st, "fed-cli", err), err);
    snprintf(p, sizeof p, "%s/aggregator.key", dir);
    assert_ok(fl_signer_new(&signer, p, err), err);
    snprintf(p, sizeof p, "%s/aggregator.crt", dir);
    char *cert;
    size_t len;
    assert_ok(fl_read_file(&cert, &len, p, err), err);
    assert_ok(fl_store_set_signer(st, signer, cert, len, err), err);
    static const char ini[] = "[aggregator]\nfederation_id = fed-cli\n";
    assert_ok(fl_store_record_config(st, ini, sizeof ini - 1, err), err);
    assert_ok(fl_store_event(st, "join", "site-1", 0, "50 training examples", err), err);
    for (int r = 0; r <= 3; r++) {
        char model[32];
        snprintf(model, sizeof model, "model of round %d", r);
        if (r) assert_ok(fl_store_event(st, "stage", NULL, r, "TRAIN", err), err);
        fl_round_record rec = {
            .round = r, .seed = 1, .model = (const uint8_t *)model, .model_len = strlen(model)};
        assert_ok(fl_store_commit_round(st, &rec, err), err);
        assert_ok(fl_store_event(st, "commit", NULL, r, "model", err), err);
    }
    assert_ok(fl_store_event(st, "done", NULL, 3, NULL, err), err);
    assert_ok(fl_store_checkpoint(st, 3, err), err);
    fl_store_close(st);
    fl_signer_free(signer);
    free(cert);
}
/* 1 config + 1 join + 3 stages + 4 commits + done; 4 models and 5 heads. */
#define N_EVENTS 10
#define N_SIGS 9

static int setup(void **state) {
    (void)state;
    char err[FL_ERR_LEN];
    snprintf(g_cohort, sizeof g_cohort, "%s", fl_test_bin("cohort"));
    snprintf(g_pki, sizeof g_pki, "%s/pki", fl_test_tmpdir());
    snprintf(g_pki2, sizeof g_pki2, "%s/pki2", fl_test_tmpdir());
    snprintf(g_ca, sizeof g_ca, "%s/ca.crt", g_pki);
    snprintf(g_ca2, sizeof g_ca2, "%s/ca.crt", g_pki2);
    snprintf(g_db, sizeof g_db, "%s/aggregator.db", fl_test_tmpdir());
    if (fl_pki_init(g_pki, "fed-cli", 30, err) ||
        fl_pki_issue(g_pki, "aggregator", FL_ROLE_AGGREGATOR, 30, err) ||
        fl_pki_init(g_pki2, "elsewhere", 30, err)) {
        fprintf(stderr, "pki: %s\n", err);
        return -1;
    }
    return 0;
}

/* Runs `cohort verify ARGS...` (NULL-terminated). */
#define verify(...) fl_test_cohort("verify", __VA_ARGS__)

static void expect(fl_proc_result r, int code, const char *in_stdout, const char *in_stderr) {
    if (r.exit_code != code)
        fail_msg("exit %d, expected %d; stdout: %s; stderr: %s", r.exit_code, code, r.out, r.err);
    if (in_stdout && !strstr(r.out, in_stdout))
        fail_msg("stdout '%s' does not contain '%s'", r.out, in_stdout);
    if (in_stderr && !strstr(r.err, in_stderr))
        fail_msg("stderr '%s' does not contain '%s'", r.err, in_stderr);
    fl_proc_result_free(&r);
}

static void sql(const char *path, const char *q) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, q, NULL, NULL, &msg) != SQLITE_OK) fail_msg("%s: %s", q, msg);
    sqlite3_close(db);
}

static void test_ok(void **state) {
    (void)state;
    write_db(g_db, g_pki);
    fl_audit_report rep;
    char err[FL_ERR_LEN] = "", want[256];
    assert_ok(fl_audit_verify(&rep, g_db, NULL, err), err);
    snprintf(want, sizeof want, "ok: %d events, %d signatures, head %s\n", N_EVENTS, N_SIGS,
             rep.head);
    fl_proc_result r = verify("--db", g_db, NULL);
    if (r.exit_code != 0 || strcmp(r.out, want))
        fail_msg("exit %d, stdout '%s', expected '%s'; stderr %s", r.exit_code, r.out, want, r.err);
    fl_proc_result_free(&r);
    expect(verify("--db", g_db, "--ca", g_ca, NULL), 0, want, NULL);

    r = verify("--json", "--db", g_db, "--ca", g_ca, NULL);
    assert_int_equal(r.exit_code, 0);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("not JSON: %s", r.out);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok")));
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "n_events")->valuedouble, N_EVENTS);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "n_signatures")->valuedouble, N_SIGS);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "head")->valuestring, rep.head);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ca_checked")));
    assert_null(cJSON_GetObjectItemCaseSensitive(j, "reason"));
    cJSON_Delete(j);
    fl_proc_result_free(&r);
}

static void test_tampered(void **state) {
    (void)state;
    char db[4200];
    snprintf(db, sizeof db, "%s/edited.db", fl_test_tmpdir());
    write_db(db, g_pki);
    sql(db, "DROP TRIGGER events_no_update; UPDATE events SET detail = '5000 training examples' "
            "WHERE id = 2");
    expect(verify("--db", db, NULL), 1, "FAILED: events row 2: hash does not match its contents",
           NULL);

    fl_proc_result r = verify("--db", db, "--json", NULL);
    assert_int_equal(r.exit_code, 1);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("not JSON: %s", r.out);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "ok")));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "table")->valuestring, "events");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "first_bad_id")->valuedouble, 2);
    assert_non_null(
        strstr(cJSON_GetObjectItemCaseSensitive(j, "reason")->valuestring, "events row 2"));
    cJSON_Delete(j);
    fl_proc_result_free(&r);

    /* a deleted row, named by the row after the gap */
    snprintf(db, sizeof db, "%s/deleted.db", fl_test_tmpdir());
    write_db(db, g_pki);
    sql(db, "DROP TRIGGER events_no_delete; DELETE FROM events WHERE id = 6");
    expect(verify("--db", db, NULL), 1, "events row 7: follows row 5: row 6 is missing", NULL);

    /* a model signature with one bit flipped */
    snprintf(db, sizeof db, "%s/forged.db", fl_test_tmpdir());
    write_db(db, g_pki);
    sql(db, "UPDATE models SET signature = CAST(substr(signature, 1, 30) || x'00' || "
            "substr(signature, 32) AS BLOB) WHERE round = 3");
    expect(verify("--db", db, NULL), 1, "models round 3: signature does not verify", NULL);

    /* the right signatures, but the federation's CA did not issue the key */
    expect(verify("--db", g_db, "--ca", g_ca2, NULL), 1,
           "meta aggregator_cert: does not verify against", NULL);
}

static void test_bad_input(void **state) {
    (void)state;
    char path[4200];
    snprintf(path, sizeof path, "%s/missing.db", fl_test_tmpdir());
    expect(verify("--db", path, NULL), 2, NULL, path);
    char *text = fl_test_write_tmp("text.db", "[aggregator]\nthis is an ini file, not a "
                                              "database; sqlite needs a page of header ......\n");
    expect(verify("--db", text, NULL), 2, NULL, "not a Cohort aggregator database");
    free(text);
    snprintf(path, sizeof path, "%s/empty.db", fl_test_tmpdir());
    sql(path, "CREATE TABLE t(x)");
    expect(verify("--db", path, NULL), 2, NULL, "no table 'meta'");
    expect(verify("--db", g_db, "--ca", "/nonexistent/ca.crt", NULL), 2, NULL,
           "/nonexistent/ca.crt");
    expect(verify(NULL), 2, NULL, "--db is required");
    expect(verify("--db", NULL), 2, NULL, "--db: expected a file name");
    expect(verify("--db", g_db, "--frobnicate", NULL), 2, NULL, "unknown option '--frobnicate'");
    expect(verify("--help", NULL), 0, "usage: cohort verify", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
