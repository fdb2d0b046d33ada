/* test_cli_pki.c: `cohort pki` as an operator runs it, as a real process
 * (DESIGN.md §4, docs/pki.md): init, issue for each role, list (text and
 * --json), revoke by name and by serial, crl; a second init refused with the
 * file named (exit 1); bad usage (missing or misplaced flags, unknown role or
 * action, bad name) exits 2 with a message naming the flag. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char g_cohort[4096];
static char g_dir[4096];

static int setup(void **state) {
    (void)state;
    snprintf(g_cohort, sizeof g_cohort, "%s", fl_test_bin("cohort"));
    snprintf(g_dir, sizeof g_dir, "%s/pki", fl_test_tmpdir());
    return 0;
}

/* Runs `cohort pki ARGS...` (NULL-terminated). */
#define pki(...) fl_test_cohort("pki", __VA_ARGS__)

static void expect(fl_proc_result r, int code, const char *in_stderr) {
    if (r.exit_code != code)
        fail_msg("exit %d, expected %d; stdout: %s; stderr: %s", r.exit_code, code, r.out, r.err);
    if (in_stderr && !strstr(r.err, in_stderr))
        fail_msg("stderr '%s' does not contain '%s'", r.err, in_stderr);
    fl_proc_result_free(&r);
}

static cJSON *list_json(void) {
    fl_proc_result r = pki("list", "--dir", g_dir, "--json", NULL);
    if (r.exit_code != 0) fail_msg("list exited %d: %s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("stdout is not one JSON object: %s", r.out);
    fl_proc_result_free(&r);
    return j;
}

static const cJSON *cert(const cJSON *j, int i) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "certificates");
    assert_true(cJSON_IsArray(arr));
    const cJSON *c = cJSON_GetArrayItem(arr, i);
    assert_non_null(c);
    return c;
}

static const char *str(const cJSON *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    if (!cJSON_IsString(v)) fail_msg("missing string %s", key);
    return v->valuestring;
}

static void test_lifecycle(void **state) {
    (void)state;
    expect(pki("init", "--dir", g_dir, "--name", "Demo Federation", "--days", "30", NULL), 0, NULL);
    struct stat st;
    char path[4200];
    snprintf(path, sizeof path, "%s/ca.key", g_dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    fl_proc_result r = pki("issue", "--dir", g_dir, "--name", "site1", "--role", "client", NULL);
    assert_int_equal(r.exit_code, 0);
    assert_non_null(strstr(r.out, "site1.crt"));
    fl_proc_result_free(&r);
    expect(
        pki("issue", "--dir", g_dir, "--name", "agg", "--role", "aggregator", "--days", "5", NULL),
        0, NULL);
    expect(pki("issue", "--dir", g_dir, "--name", "ops", "--role", "operator", NULL), 0, NULL);
    snprintf(path, sizeof path, "%s/agg.key", g_dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    cJSON *j = list_json();
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "certificates")), 3);
    assert_string_equal(str(cert(j, 0), "name"), "site1");
    assert_string_equal(str(cert(j, 0), "role"), "client");
    assert_string_equal(str(cert(j, 1), "role"), "aggregator");
    assert_string_equal(str(cert(j, 2), "role"), "operator");
    assert_string_equal(str(cert(j, 0), "status"), "valid");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cert(j, 0), "revoked_at")));
    char ops_serial[64];
    snprintf(ops_serial, sizeof ops_serial, "%s", str(cert(j, 2), "serial"));
    cJSON_Delete(j);

    expect(pki("revoke", "--dir", g_dir, "--name", "site1", NULL), 0, NULL);
    expect(pki("revoke", "--dir", g_dir, "--serial", ops_serial, NULL), 0, NULL);
    expect(pki("revoke", "--dir", g_dir, "--name", "site1", NULL), 1, "revoked already");
    expect(pki("revoke", "--dir", g_dir, "--name", "ghost", NULL), 2, "ghost");
    expect(pki("crl", "--dir", g_dir, "--days", "3", NULL), 0, NULL);
    j = list_json();
    assert_string_equal(str(cert(j, 0), "status"), "revoked");
    assert_int_equal(strlen(str(cert(j, 0), "revoked_at")), 20);
    assert_string_equal(str(cert(j, 1), "status"), "valid");
    assert_string_equal(str(cert(j, 2), "status"), "revoked");
    cJSON_Delete(j);

    r = pki("list", "--dir", g_dir, NULL);
    assert_int_equal(r.exit_code, 0);
    assert_non_null(strstr(r.out, "SERIAL"));
    assert_non_null(strstr(r.out, "agg"));
    assert_non_null(strstr(r.out, "revoked"));
    fl_proc_result_free(&r);

    /* A second init never touches the CA: runtime refusal naming the file. */
    expect(pki("init", "--dir", g_dir, NULL), 1, "ca.key exists");
    /* Issuing over an existing participant is refused the same way. */
    expect(pki("issue", "--dir", g_dir, "--name", "agg", "--role", "aggregator", NULL), 1,
           "agg.key exists");
}

static void test_bad_usage(void **state) {
    (void)state;
    expect(pki(NULL), 2, "usage");
    expect(pki("frobnicate", "--dir", g_dir, NULL), 2, "unknown action 'frobnicate'");
    expect(pki("issue", "--dir", g_dir, "--name", "x", NULL), 2, "--role");
    expect(pki("issue", "--dir", g_dir, "--role", "client", NULL), 2, "--name");
    expect(pki("issue", "--dir", g_dir, "--name", "x", "--role", "king", NULL), 2, "--role");
    expect(pki("issue", "--name", "x", "--role", "client", NULL), 2, "--dir");
    expect(pki("issue", "--dir", g_dir, "--name", "x", "--role", "client", "--days", "0", NULL), 2,
           "--days");
    expect(pki("issue", "--dir", g_dir, "--name", "bad/name", "--role", "client", NULL), 2, "name");
    expect(pki("init", "--dir", g_dir, "--role", "client", NULL), 2, "--role");
    expect(pki("list", "--dir", g_dir, "--bogus", NULL), 2, "--bogus");
    expect(pki("revoke", "--dir", g_dir, NULL), 2, "--name or --serial");
    expect(pki("revoke", "--dir", g_dir, "--serial", "zz", NULL), 2, "serial");
    expect(pki("list", "--dir", g_dir, "extra", NULL), 2, "extra");
    expect(pki("--help", NULL), 0, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_bad_usage),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
