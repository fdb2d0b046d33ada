/* test_privacy_budget.c: record-level DP in the federation with real
 * processes (docs/privacy.md "Budgets in the federation").
 *
 *  1. A 50-round `cohort simulate` (3 sites of different sizes, logreg, one
 *     local epoch, noise multiplier 1, cap 6): every site's cap is reached
 *     part-way. No site's ledger ever goes past its cap; sites past it sit
 *     out with the reason in the participation rows; when none can train
 *     the federation ends early with the reason instead of restarting the
 *     round forever; the JSON reports each site's epsilon.
 *  2. A client restarted with the same client.ini keeps its ledger: after a
 *     short simulation, site-1 joins a second federation (new aggregator,
 *     same state file) and its epsilon grows on from where it was. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CAP 6.0

static char g_cohort[4096], g_agg[4096], g_client[4096];
static int g_have_programs;

static int setup(void **state) {
    (void)state;
    snprintf(g_cohort, sizeof g_cohort, "%s", fl_test_bin("cohort"));
    snprintf(g_agg, sizeof g_agg, "%s", fl_test_bin("cohort-aggregator"));
    snprintf(g_client, sizeof g_client, "%s", fl_test_bin("cohort-client"));
    g_have_programs = !access(g_agg, X_OK) && !access(g_client, X_OK);
    return 0;
}

static char *write_fed(const char *name, int rounds, const char *cap) {
    char text[4096];
    snprintf(text, sizeof text,
             "[federation]\nsites = 3\nrounds = %d\npartition = by:Home\nseed = 7\n"
             "min_sites = 1\nstage_timeout = 10\n"
             "[data]\ncsv = %s/credit_data.csv\nschema = %s/../credit.schema.ini\n"
             "test_fraction = 0.2\n"
             "[model]\ntype = logreg\n"
             "[train]\nlocal_epochs = 1\nbatch_size = 64\noptimizer = sgd\nlr = 0.5\n"
             "[privacy]\nmode = record\nnoise_multiplier = 1.0\nclip = 1.0\ndelta = 1e-5\n"
             "max_epsilon = %s\n",
             rounds, COHORT_DATA_DIR, COHORT_DATA_DIR, cap);
    return fl_test_write_tmp(name, text);
}

static cJSON *simulate(const char *ini, const char *workdir) {
    char *argv[] = {g_cohort, "simulate",  "--config",      (char *)ini,
                    "--json", "--workdir", (char *)workdir, NULL};
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code != 0) fail_msg("cohort simulate exited %d:\n%s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("stdout is not JSON: %s", r.out);
    fl_proc_result_free(&r);
    return j;
}

static sqlite3 *open_db(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        fail_msg("%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
    return db;
}

/* The first column of the first row of sql, as a double (NAN for NULL). */
static double scalar(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    double v = NAN;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
        v = sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* Ledger rows of one site in order: epsilon_after never above the cap and
 * strictly growing (every run spends). Returns the row count. */
static int check_ledger(const char *dir, int site, double cap, double *last) {
    char name[64];
    snprintf(name, sizeof name, "sites/site-%d.db", site);
    sqlite3 *db = open_db(dir, name);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT epsilon_after, q, sigma, steps FROM ledger "
                                        "ORDER BY id",
                                        -1, &s, NULL),
                     SQLITE_OK);
    int n = 0;
    double prev = 0.0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        double e = sqlite3_column_double(s, 0);
        if (!(e <= cap))
            fail_msg("site %d: ledger row %d has epsilon %g > cap %g", site, n, e, cap);
        if (!(e > prev)) fail_msg("site %d: ledger row %d: epsilon %g after %g", site, n, e, prev);
        assert_true(sqlite3_column_double(s, 1) > 0 && sqlite3_column_double(s, 1) <= 1);
        assert_true(fabs(sqlite3_column_double(s, 2) - 1.0) < 1e-12);
        assert_true(sqlite3_column_int64(s, 3) >= 1);
        prev = e;
        n++;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    *last = prev;
    return n;
}

static void test_budget_reached(void **state) {
    (void)state;
    if (!g_have_programs) skip();
    char cap[32];
    snprintf(cap, sizeof cap, "%g", CAP);
    char *ini = write_fed("budget.ini", 50, cap);
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/budget-run", fl_test_tmpdir());
    cJSON *j = simulate(ini, dir);
    /* Every site spent its budget: the federation ended early, and said why. */
    const cJSON *ended = cJSON_GetObjectItemCaseSensitive(j, "ended_early");
    if (!cJSON_IsString(ended)) fail_msg("no ended_early in the JSON");
    assert_non_null(strstr(ended->valuestring, "refused"));
    const cJSON *rounds = cJSON_GetObjectItemCaseSensitive(j, "rounds");
    int n_rounds = cJSON_GetArraySize(rounds);
    assert_true(n_rounds >= 3 && n_rounds < 50);
    /* Per-round epsilon: the largest a site reported, never above the cap. */
    for (int i = 0; i < n_rounds; i++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(rounds, i), "epsilon");
        assert_true(cJSON_IsNumber(e) && e->valuedouble > 0 && e->valuedouble <= CAP);
    }
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(j, "privacy");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(pv, "mode")->valuestring, "record");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(pv, "accountant")->valuestring, "rdp");
    const cJSON *sites = cJSON_GetObjectItemCaseSensitive(pv, "sites");
    assert_int_equal(cJSON_GetArraySize(sites), 3);
    int first_refusal[4] = {0};
    for (int k = 1; k <= 3; k++) {
        const cJSON *s = cJSON_GetArrayItem(sites, k - 1);
        double eps = cJSON_GetObjectItemCaseSensitive(s, "epsilon")->valuedouble;
        int trained = cJSON_GetObjectItemCaseSensitive(s, "rounds_trained")->valueint;
        int refused = cJSON_GetObjectItemCaseSensitive(s, "rounds_refused")->valueint;
        assert_true(cJSON_GetObjectItemCaseSensitive(s, "cap")->valuedouble == CAP);
        double last;
        int rows = check_ledger(dir, k, CAP, &last);
        assert_int_equal(rows, trained);
        assert_true(trained >= 1 && refused >= 1);
        assert_true(fabs(last - eps) < 1e-9);
        /* The site trained until its budget ran out, then only refused:
         * the reason is in the aggregator's participation rows. */
        sqlite3 *agg = open_db(dir, "aggregator.db");
        char sql[512];
        snprintf(sql, sizeof sql,
                 "SELECT MIN(round) FROM participation WHERE site = %d AND status = 'refused' AND "
                 "reason LIKE 'privacy budget: round %% would bring epsilon to %% > cap %g (RDP, "
                 "delta 1e-05)'",
                 k, CAP);
        /* A site whose budget ran out in the round that ended the federation
         * has no committed refusal row (that round never committed). */
        double fr = scalar(agg, sql);
        first_refusal[k] = isfinite(fr) ? (int)fr : n_rounds;
        snprintf(sql, sizeof sql,
                 "SELECT COUNT(*) FROM participation WHERE site = %d AND status = 'completed' "
                 "AND round > %d",
                 k, first_refusal[k]);
        assert_true(scalar(agg, sql) == 0);
        snprintf(sql, sizeof sql,
                 "SELECT COUNT(*) FROM participation WHERE site = %d AND status = 'completed' "
                 "AND (epsilon IS NULL OR epsilon > %g)",
                 k, CAP);
        assert_true(scalar(agg, sql) == 0);
        snprintf(sql, sizeof sql,
                 "SELECT COUNT(*) FROM events WHERE kind = 'privacy' AND site = 'site-%d'", k);
        assert_true(scalar(agg, sql) >= trained - 1);
        sqlite3_close(agg);
    }
    /* Some site refused while others still trained (the caps are reached
     * part-way, at different rounds: the sites differ in size). */
    sqlite3 *agg = open_db(dir, "aggregator.db");
    assert_true(first_refusal[1] < n_rounds || first_refusal[2] < n_rounds ||
                first_refusal[3] < n_rounds);
    assert_true(scalar(agg, "SELECT COUNT(*) FROM participation WHERE status = 'refused'") >= 1);
    assert_true(scalar(agg, "SELECT COUNT(*) FROM events WHERE kind = 'done' AND detail LIKE "
                            "'%ends early%'") == 1);
    sqlite3_close(agg);
    cJSON_Delete(j);
    free(ini);
}

/* ------------------------------------------------ 2. restart keeps the ledger */

static pid_t spawn(char *const argv[], const char *log) {
    pid_t p = fork();
    if (p == 0) {
        FILE *o = freopen(log, "w", stderr);
        (void)o;
        execv(argv[0], argv);
        _exit(127);
    }
    return p;
}

/* Waits up to ms for pid; SIGKILL after that. Returns the exit status. */
static int wait_for(pid_t pid, int ms) {
    for (int t = 0; t < ms; t += 50) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -2;
}

static void test_restart_keeps_ledger(void **state) {
    (void)state;
    if (!g_have_programs) skip();
    char *ini = write_fed("restart.ini", 3, "1000");
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/restart-run", fl_test_tmpdir());
    cJSON *j = simulate(ini, dir);
    cJSON_Delete(j);
    double before;
    int rows = check_ledger(dir, 1, 1000.0, &before);
    assert_int_equal(rows, 3);
    /* A second federation on the same port (the client.ini is unchanged),
     * with site-1 only: a new aggregator database, the same site state. */
    char path[4096], agg_ini[4096], port[32];
    snprintf(path, sizeof path, "%s/agg.port", dir);
    char *p = fl_test_slurp(path, NULL);
    snprintf(port, sizeof port, "%d", atoi(p));
    free(p);
    snprintf(path, sizeof path, "%s/aggregator.ini", dir);
    char *text = fl_test_slurp(path, NULL), *out = calloc(1, 1 << 16);
    size_t at = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char b[512];
        if (!strncmp(line, "listen =", 8))
            snprintf(b, sizeof b, "listen = 127.0.0.1:%s", port);
        else if (!strncmp(line, "db =", 4))
            snprintf(b, sizeof b, "db = again.db");
        else if (!strncmp(line, "port_file =", 11))
            snprintf(b, sizeof b, "port_file = again.port");
        else if (!strncmp(line, "federation_id =", 15))
            snprintf(b, sizeof b, "federation_id = again");
        else if (!strncmp(line, "sites =", 7))
            snprintf(b, sizeof b, "sites = site-1");
        else if (!strncmp(line, "rounds =", 8))
            snprintf(b, sizeof b, "rounds = 2");
        else if (!strncmp(line, "min_sites =", 11))
            snprintf(b, sizeof b, "min_sites = 1");
        else
            snprintf(b, sizeof b, "%s", line);
        at += (size_t)snprintf(out + at, (1 << 16) - at, "%s\n", b);
    }
    snprintf(agg_ini, sizeof agg_ini, "%s/again.ini", dir);
    FILE *f = fopen(agg_ini, "w");
    assert_non_null(f);
    fputs(out, f);
    fclose(f);
    free(text);
    free(out);
    char client_ini[4096], agg_log[4096], client_log[4096];
    snprintf(client_ini, sizeof client_ini, "%s/site-1.ini", dir);
    snprintf(agg_log, sizeof agg_log, "%s/again-aggregator.log", dir);
    snprintf(client_log, sizeof client_log, "%s/again-site-1.log", dir);
    char *aargv[] = {g_agg, "--config", agg_ini, NULL};
    char *cargv[] = {g_client, "--config", client_ini, NULL};
    pid_t a = spawn(aargv, agg_log);
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    pid_t c = spawn(cargv, client_log);
    int crc = wait_for(c, 120000), arc = wait_for(a, 30000);
    if (crc != 0 || arc != 0) {
        char *l1 = fl_test_slurp(agg_log, NULL), *l2 = fl_test_slurp(client_log, NULL);
        fail_msg("aggregator %d, client %d\n--- aggregator\n%s\n--- client\n%s", arc, crc, l1, l2);
    }
    /* The restarted site composed its earlier runs: 2 more rows, epsilon
     * growing on from where it was, and the aggregator saw that figure. */
    double after;
    rows = check_ledger(dir, 1, 1000.0, &after);
    assert_int_equal(rows, 5);
    assert_true(after > before);
    sqlite3 *agg = open_db(dir, "again.db");
    double first = scalar(agg, "SELECT epsilon FROM participation WHERE round = 1 AND site = 1");
    sqlite3_close(agg);
    if (!(first > before))
        fail_msg("round 1 of the new federation reports %g <= %g", first, before);
    free(ini);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_reached),
        cmocka_unit_test(test_restart_keeps_ledger),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
