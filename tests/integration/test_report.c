/* test_report.c: `cohort report` and aggregator/report.h (docs/report.md) on
 * the database of a real federation: `cohort simulate` runs three sites over
 * mutual TLS on loopback for three rounds with record-level DP and one site
 * killed in round 2, and a copy of its aggregator.db is completed with what
 * an older aggregator may not write (fairness rows in the documented shape,
 * when the federation wrote none) and with hostile text (a site named "<script>...", a refusal
 * reason that is an <img onerror> tag). The JSON twin must carry every section with the figures the
 * federation produced; the HTML must hold every section, its SVG charts and tables, print styles,
 * no script and no external reference, and every database string escaped. The CLI writes
 * atomically, names the file on every error and exits 2 on bad input. Databases without the newer
 * tables (no fairness, no hash chain, no recorded configuration) still
 * report, with "not recorded"; a tampered audit log is reported as failed.
 *
 * `test_report --chromium` is a separate ctest test (test_report_chromium):
 * it renders the report this test leaves in <build>/tests/artifacts in
 * headless Chromium (screenshot, DOM, PDF, no network, throwaway profile),
 * and exits 77 (skipped) when chromium is not installed. */
#include "fedtest.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aggregator/report.h"
#include "aggregator/store.h"

static char g_cohort[4096];
static char g_artifacts[2048]; /* <build>/tests/artifacts: kept after the run */
static char g_db[4096];        /* the federation's database, completed (see file comment) */
static char g_workdir[2048];
static int g_have_db;

#define INJECT_SITE "<script>alert('site')</script>"
#define INJECT_REASON "<img src=x onerror=alert(1)> & \"quoted\""

static char *tmp_path(const char *name) {
    static char b[32][4096];
    static int i;
    char *p = b[i++ % 32];
    snprintf(p, 4096, "%s/%s", fl_test_tmpdir(), name);
    return p;
}

static void sql(const char *db_path, const char *text) {
    sqlite3 *db = NULL;
    char *msg = NULL;
    if (sqlite3_open(db_path, &db) != SQLITE_OK ||
        sqlite3_exec(db, text, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s\n%s", db_path, msg ? msg : sqlite3_errmsg(db), text);
    sqlite3_free(msg);
    sqlite3_close(db);
}

/* A consistent copy of a (possibly WAL-mode) database. */
static void copy_db(const char *src, const char *dst) {
    unlink(dst);
    char q[8192];
    snprintf(q, sizeof q, "VACUUM INTO '%s';", dst);
    sql(src, q);
}

static const cJSON *get(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v) fail_msg("missing key '%s'", key);
    return v;
}

static double num(const cJSON *j, const char *key) {
    const cJSON *v = get(j, key);
    if (!cJSON_IsNumber(v)) fail_msg("'%s' is not a number", key);
    return v->valuedouble;
}

static const char *str(const cJSON *j, const char *key) {
    const cJSON *v = get(j, key);
    if (!cJSON_IsString(v)) fail_msg("'%s' is not a string", key);
    return v->valuestring;
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* count_of for binary data (a PDF holds NUL bytes). */
static int count_mem(const char *hay, size_t n, const char *needle) {
    size_t k = strlen(needle);
    int c = 0;
    for (size_t i = 0; i + k <= n; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, k)) c++;
    return c;
}

static int is_hex(const char *s, size_t len) {
    if (strlen(s) != len) return 0;
    for (; *s; s++)
        if (!strchr("0123456789abcdef", *s)) return 0;
    return 1;
}

/* One round's fairness metrics in the shape core/fairness.c produces
 * (docs/fairness.md): Age with an insufficient-data group, a rate that is
 * undefined (null), and in round 3 a demographic-parity alert. */
static void fairness_json(char *out, size_t cap, int round) {
    double dpd = 0.05 + 0.04 * round, di = 0.95 - 0.06 * round;
    const char *alert = round == 3 ? "{\"metric\":\"demographic_parity_difference\",\"value\":0.17,"
                                     "\"limit\":0.1,\"attribute\":\"Age\"}"
                                   : "";
    snprintf(
        out, cap,
        "{\"threshold\":0.5,\"min_group_count\":20,\"n_bins\":10,"
        "\"overall\":{\"count\":580,\"selection_rate\":0.31,\"tpr\":0.55,\"fpr\":0.12,"
        "\"fnr\":0.45,\"precision\":0.62,\"accuracy\":0.78,\"auc\":0.82},"
        "\"attributes\":[{\"attribute\":\"Age\",\"groups\":{"
        "\"<25\":{\"count\":120,\"selection_rate\":%.3f,\"tpr\":0.5,\"fpr\":0.1,\"fnr\":0.5,"
        "\"precision\":null,\"accuracy\":0.75,\"auc\":0.8,\"calibration\":["
        "{\"lo\":0,\"hi\":0.1,\"predicted\":0.05,\"observed\":0.02,\"count\":40},"
        "{\"lo\":0.5,\"hi\":0.6,\"predicted\":0.55,\"observed\":0.6,\"count\":30}]},"
        "\"25-40\":{\"count\":400,\"selection_rate\":0.3,\"tpr\":0.56,\"fpr\":0.12,\"fnr\":0.44,"
        "\"precision\":0.63,\"accuracy\":0.79,\"auc\":0.83,\"calibration\":["
        "{\"lo\":0.2,\"hi\":0.3,\"predicted\":0.25,\"observed\":0.3,\"count\":100}]},"
        "\">=60\":{\"count\":3,\"status\":\"insufficient data\"}},"
        "\"disparities\":{\"demographic_parity_difference\":%.3f,\"demographic_parity_ratio\":%.3f,"
        "\"equalized_odds_difference\":0.06,\"equalized_odds_ratio\":0.83,"
        "\"equalized_odds_difference_to_overall\":0.05,\"equalized_odds_ratio_to_overall\":0.85,"
        "\"equal_opportunity_difference\":0.06,\"average_odds_difference\":-0.04,"
        "\"disparate_impact\":%.3f,\"four_fifths_rule_violated\":false,"
        "\"generalized_entropy_index\":0.11,\"theil_index\":0.09,\"gei_alpha\":2,"
        "\"between_group_theil_index\":0.0000545,\"privileged_group\":\"25-40\"},"
        "\"alerts\":[%s]},"
        "{\"attribute\":\"Marital\",\"groups\":{\"married\":{\"count\":300,\"selection_rate\":0.3,"
        "\"tpr\":0.5,\"fpr\":0.1,\"fnr\":0.5,\"precision\":0.6,\"accuracy\":0.8,\"auc\":0.8}},"
        "\"disparities\":null,\"reason\":\"fewer than two groups with enough data\","
        "\"alerts\":[]}],"
        "\"alerts\":[%s],\"site_accuracy\":{\"mean\":0.77,\"variance\":0.0004,\"sites\":2}}",
        0.25 + 0.04 * round, dpd, di, di, alert, alert);
}

/* Fairness rows for rounds 1..3 in the documented shape, unless the table
 * has rows already (an aggregator with the fairness audit writes them).
 * Returns 1 when it inserted them. */
static int add_fairness_rows(sqlite3 *db) {
    sqlite3_stmt *s;
    int have_rows = 0;
    sqlite3_exec(db,
                 "CREATE TABLE IF NOT EXISTS fairness(round INTEGER PRIMARY KEY, counts BLOB NOT "
                 "NULL, metrics TEXT NOT NULL)",
                 NULL, NULL, NULL);
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM fairness", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        have_rows = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    if (have_rows) return 0;
    for (int r = 1; r <= 3; r++) {
        char m[8192];
        fairness_json(m, sizeof m, r);
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "INSERT INTO fairness(round, counts, metrics) "
                                            "VALUES(?1, zeroblob(64), ?2)",
                                            -1, &s, NULL),
                         SQLITE_OK);
        sqlite3_bind_int(s, 1, r);
        sqlite3_bind_text(s, 2, m, -1, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(s), SQLITE_DONE);
        sqlite3_finalize(s);
    }
    return 1;
}

/* Adds the fairness rows (when the federation wrote none), the hostile site
 * and reason, and the configuration (when the aggregator did not record it). */
static void complete_db(const char *path) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    if (add_fairness_rows(db))
        fprintf(stderr, "the federation wrote no fairness rows: synthetic ones added\n");
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO sites(site, name, n_examples, joined_at) "
                                        "VALUES(99, ?1, 0, '2026-01-01T00:00:00Z');"
                                        "",
                                        -1, &s, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(s, 1, INJECT_SITE, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO participation(round, site, status, reason, "
                                        "n_examples, epsilon) VALUES(1, 99, 'rejected', ?1, 0, "
                                        "NULL)",
                                        -1, &s, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(s, 1, INJECT_REASON, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    int have_config = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM meta WHERE key = 'config'", -1, &s, NULL) ==
        SQLITE_OK)
        have_config = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    if (!have_config) {
        char p[4096];
        snprintf(p, sizeof p, "%s/aggregator.ini", g_workdir);
        char *text = ft_read_file(p, NULL);
        assert_non_null(text);
        assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO meta(key, value) VALUES('config', ?1)",
                                            -1, &s, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(s, 1, text, -1, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(s), SQLITE_DONE);
        sqlite3_finalize(s);
        free(text);
    }
    sqlite3_close(db);
}

/* The federation: 3 sites, 3 rounds, DP-SGD at each site, site-3 killed as
 * round 2's training begins (it is then a dropout with a reason). */
static int setup(void **state) {
    (void)state;
    snprintf(g_cohort, sizeof g_cohort, "%s", fl_test_bin("cohort"));
    snprintf(g_artifacts, sizeof g_artifacts, "%s/../tests/artifacts", COHORT_BIN_DIR);
    char *real = ft_mkdirs(g_artifacts) ? NULL : realpath(g_artifacts, NULL);
    if (!real) {
        fprintf(stderr, "cannot create %s: %s\n", g_artifacts, strerror(errno));
        return -1;
    }
    snprintf(g_artifacts, sizeof g_artifacts, "%s", real);
    free(real);
    if (access(fl_test_bin("cohort-aggregator"), X_OK) ||
        access(fl_test_bin("cohort-client"), X_OK)) {
        fprintf(stderr, "cohort-aggregator / cohort-client not built: federation tests skipped\n");
        return 0;
    }
    ft_watchdog(900);
    char ini[8192];
    snprintf(ini, sizeof ini,
             "[federation]\nsites = 3\nrounds = 3\npartition = by:Home\nseed = 42\n"
             "stage_timeout = 2\n"
             "[data]\ncsv = %s/credit_data.csv\nschema = %s/../credit.schema.ini\n"
             "test_fraction = 0.2\n"
             "[model]\ntype = logreg\n"
             "[train]\nlocal_epochs = 2\nbatch_size = 64\noptimizer = sgd\nlr = 0.5\n"
             "[privacy]\nmode = record\nnoise_multiplier = 3.0\nclip = 1.0\ndelta = 1e-5\n"
             "max_epsilon = 10\n"
             "[secagg]\nenabled = false\n"
             "[faults]\nkill_site = 3@2:TRAIN\n",
             COHORT_DATA_DIR, COHORT_DATA_DIR);
    char *ini_path = fl_test_write_tmp("report.federation.ini", ini);
    snprintf(g_workdir, sizeof g_workdir, "%s", tmp_path("sim"));
    char *argv[] = {g_cohort, "simulate",  "--config", ini_path,
                    "--json", "--workdir", g_workdir,  NULL};
    fl_proc_result r;
    if (fl_test_run(&r, argv) || r.exit_code != 0) {
        fprintf(stderr, "cohort simulate failed (%d):\n%s\n", r.exit_code, r.err ? r.err : "");
        fl_proc_result_free(&r);
        free(ini_path);
        return -1;
    }
    fl_proc_result_free(&r);
    free(ini_path);
    char src[4096];
    snprintf(src, sizeof src, "%s/aggregator.db", g_workdir);
    snprintf(g_db, sizeof g_db, "%s/report-test.db", g_artifacts);
    copy_db(src, g_db);
    complete_db(g_db);
    g_have_db = 1;
    ft_watchdog(0);
    return 0;
}

#define NEED_DB()                                                                                  \
    do {                                                                                           \
        if (!g_have_db) skip();                                                                    \
    } while (0)

static cJSON *build(const char *db) {
    cJSON *j = NULL;
    char err[FL_ERR_LEN] = "";
    fl_report_options opt = {.generated_at = "2026-01-01T00:00:00Z"};
    int rc = fl_report_build(&j, db, &opt, err);
    if (rc) fail_msg("fl_report_build(%s): %d %s", db, rc, err);
    return j;
}

static char *html_of(const cJSON *j) {
    char *h = NULL, err[FL_ERR_LEN] = "";
    size_t n = 0;
    if (fl_report_html(&h, &n, j, err)) fail_msg("fl_report_html: %s", err);
    assert_int_equal(strlen(h), n);
    return h;
}

/* The participant of round r named name, or NULL. */
static const cJSON *participant(const cJSON *doc, int round, const char *name) {
    const cJSON *r, *p;
    cJSON_ArrayForEach(r, get(doc, "rounds")) {
        if ((int)num(r, "round") != round) continue;
        cJSON_ArrayForEach(p, get(r, "participants")) {
            const char *n = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "name"));
            if (n && !strcmp(n, name)) return p;
        }
    }
    return NULL;
}

/* Every section of the JSON twin, against what the federation did. */
static void test_json_sections(void **state) {
    (void)state;
    NEED_DB();
    cJSON *j = build(g_db);
    assert_int_equal((int)num(j, "report_version"), FL_REPORT_VERSION);
    assert_string_equal(str(j, "generated_at"), "2026-01-01T00:00:00Z");
    assert_int_equal(cJSON_GetArraySize(get(j, "warnings")), 0);

    const cJSON *fed = get(j, "federation");
    assert_string_equal(str(fed, "id"), "sim");
    assert_string_equal(str(fed, "strategy"), "fedavg");
    assert_string_equal(str(fed, "model"), "logreg");
    assert_int_equal((int)num(fed, "rounds_planned"), 3);
    assert_int_equal((int)num(fed, "rounds_committed"), 3);
    assert_int_equal(cJSON_GetArraySize(get(fed, "sites")), 4); /* 3 + the injected one */
    assert_true(num(get(fed, "events"), "total") > 10);

    /* lineage: the initial model and one per round, hashes recomputed */
    const cJSON *lin = get(j, "lineage"), *e;
    assert_true(cJSON_GetArraySize(lin) >= 3);
    int last = -1;
    cJSON_ArrayForEach(e, lin) {
        assert_true(is_hex(str(e, "sha256"), 64));
        assert_true(cJSON_IsTrue(get(e, "sha256_verified")));
        assert_true(num(e, "model_bytes") > 0);
        const char *ss = str(e, "signature_status");
        assert_true(!strcmp(ss, "verified") || !strcmp(ss, "unsigned") ||
                    !strcmp(ss, "not checked"));
        last = (int)num(e, "round");
    }
    assert_int_equal(last, 3);

    /* rounds: figures of a credit-data logistic regression, and site-3's
     * dropout with the aggregator's reason */
    const cJSON *rounds = get(j, "rounds"), *r;
    assert_int_equal(cJSON_GetArraySize(rounds), 3);
    cJSON_ArrayForEach(r, rounds) {
        assert_true(num(r, "accuracy") > 0.6 && num(r, "accuracy") < 1);
        assert_true(num(r, "auc") > 0.6 && num(r, "auc") <= 1);
        assert_true(num(r, "loss") > 0);
        /* site-3, killed in round 2, is absent afterwards: not selected */
        assert_true(cJSON_GetArraySize(get(r, "participants")) >= 2);
        assert_true(cJSON_IsNumber(get(get(r, "metrics"), "t_round_ms")));
    }
    const cJSON *p1 = participant(j, 1, "site-3");
    assert_non_null(p1);
    assert_string_equal(str(p1, "status"), "completed");
    int dropped = 0;
    for (int round = 2; round <= 3; round++) {
        const cJSON *p = participant(j, round, "site-3");
        if (p && !strcmp(str(p, "status"), "dropped")) {
            assert_true(strlen(str(p, "reason")) > 0);
            dropped++;
        }
    }
    assert_true(dropped >= 1);
    const cJSON *inj = participant(j, 1, INJECT_SITE);
    assert_non_null(inj);
    assert_string_equal(str(inj, "reason"), INJECT_REASON);

    /* privacy: every DP site's cumulative epsilon, named accountant and delta */
    const cJSON *pv = get(j, "privacy"), *s;
    assert_string_equal(str(pv, "status"), "recorded");
    assert_string_equal(str(pv, "mode"), "record");
    assert_string_equal(str(pv, "accountant"), "rdp");
    assert_true(fabs(num(pv, "delta") - 1e-5) < 1e-12);
    assert_true(num(pv, "max_epsilon") == 10);
    assert_non_null(strstr(str(pv, "sampling"), "Poisson"));
    assert_int_equal(cJSON_GetArraySize(get(pv, "sites")), 3);
    cJSON_ArrayForEach(s, get(pv, "sites")) {
        const cJSON *pts = get(s, "epsilon"), *pt;
        double prev = 0;
        assert_true(cJSON_GetArraySize(pts) >= 1);
        cJSON_ArrayForEach(pt, pts) {
            assert_true(num(pt, "epsilon") >= prev);
            prev = num(pt, "epsilon");
        }
        assert_true(num(s, "final_epsilon") == prev && prev > 0 && prev <= 10);
    }

    const cJSON *sa = get(j, "secagg");
    assert_string_equal(str(sa, "status"), "recorded");
    assert_true(cJSON_IsFalse(get(sa, "enabled")));

    /* fairness: the last round's tables, one trend point per audited round
     * for every audited attribute (the credit schema's Age and Marital) */
    const cJSON *fa = get(j, "fairness");
    assert_string_equal(str(fa, "status"), "recorded");
    assert_int_equal((int)num(fa, "last_round"), 3);
    int audited = (int)num(fa, "rounds_recorded");
    assert_true(audited >= 1 && audited <= 3);
    const cJSON *latest = get(fa, "latest"), *attr;
    assert_int_equal(cJSON_GetArraySize(get(latest, "attributes")), 2);
    assert_int_equal(cJSON_GetArraySize(get(fa, "trends")), 2);
    int k = 0;
    cJSON_ArrayForEach(attr, get(latest, "attributes")) {
        const char *name = str(attr, "attribute");
        assert_true(!strcmp(name, "Age") || !strcmp(name, "Marital"));
        assert_true(cJSON_GetArraySize(get(attr, "groups")) >= 2);
        const cJSON *trend = cJSON_GetArrayItem(get(fa, "trends"), k++), *series;
        assert_string_equal(str(trend, "attribute"), name);
        assert_int_equal(cJSON_GetArraySize(get(trend, "rounds")), audited);
        cJSON_ArrayForEach(series, get(trend, "series"))
            assert_int_equal(cJSON_GetArraySize(series), audited);
    }
    assert_int_equal((int)num(get(j, "summary"), "fairness_alerts"),
                     cJSON_GetArraySize(get(latest, "alerts")));

    /* audit: the real federation's chain and signatures verify */
    const cJSON *au = get(j, "audit");
    const char *st = str(au, "status");
    if (!strcmp(st, "not available") || !strcmp(st, "not recorded")) {
        fprintf(stderr, "audit verification %s in this tree\n", st);
    } else {
        assert_string_equal(st, "verified");
        assert_true(cJSON_IsTrue(get(au, "ok")));
        assert_true(num(au, "n_events") > 10);
        assert_true(num(au, "n_signatures") >= 3);
        assert_true(is_hex(str(au, "head"), 64));
    }

    const cJSON *cf = get(j, "config");
    assert_string_equal(str(cf, "status"), "recorded");
    assert_non_null(strstr(str(cf, "text"), "[aggregator]"));
    assert_true(is_hex(str(cf, "sha256_computed"), 64));
    /* the aggregator records the hash with the text: they must agree */
    const cJSON *m = get(cf, "sha256_matches");
    if (cJSON_IsString(get(cf, "sha256")))
        assert_true(cJSON_IsTrue(m));
    else
        assert_true(cJSON_IsNull(m));

    const cJSON *sum = get(j, "summary");
    assert_int_equal((int)num(sum, "rounds_committed"), 3);
    cJSON_Delete(j);
}

/* The text with the configuration's <pre> block cut out: the only place
 * where text from a config file (which may hold a URL in a comment) is
 * shown. */
static char *without_config(const char *h) {
    char *c = strdup(h);
    char *a = strstr(c, "<pre class=\"config\">");
    char *b = a ? strstr(a, "</pre>") : NULL;
    if (a && b) memmove(a, b + 6, strlen(b + 6) + 1);
    return c;
}

/* Every '<' in the page starts a tag (text is escaped), so the tags are the
 * whole markup: none may load anything, run anything or leave the page. */
static void assert_self_contained(const char *h) {
    char *c = without_config(h);
    if (strstr(c, "http://") || strstr(c, "https://")) fail_msg("an external URL in the report");
    assert_null(strstr(c, "url("));
    assert_null(strstr(c, "@import"));
    for (const char *p = c; (p = strchr(p, '<')); p++) {
        const char *e = strchr(p, '>');
        if (!e) fail_msg("unterminated tag: %.40s", p);
        char *tag = strndup(p, (size_t)(e - p));
        for (char *t = tag; *t; t++)
            if (*t >= 'A' && *t <= 'Z') *t = (char)(*t - 'A' + 'a');
        static const char *const banned[] = {"<script", "<img",     "<link",    "<iframe",
                                             "<object", "<embed",   "<base",    "<form",
                                             " src=",   " srcset=", " action=", "<meta http-equiv"};
        for (size_t i = 0; i < sizeof banned / sizeof *banned; i++)
            if (strstr(tag, banned[i]))
                fail_msg("markup '%s' in the report: %.80s", banned[i], tag);
        for (const char *a = tag; (a = strstr(a, " on")); a += 3) {
            size_t n = strspn(a + 3, "abcdefghijklmnopqrstuvwxyz");
            if (n && a[3 + n] == '=') fail_msg("an event handler in the report: %.80s", tag);
        }
        for (const char *a = tag; (a = strstr(a, "href=\"")); a += 6)
            if (a[6] != '#') fail_msg("a link out of the page: %.80s", tag);
        free(tag);
    }
    free(c);
}

static void test_html_sections(void **state) {
    (void)state;
    NEED_DB();
    cJSON *j = build(g_db);
    char *h = html_of(j);
    assert_true(!strncmp(h, "<!DOCTYPE html>", 15));
    static const char *const ids[] = {"federation", "lineage", "participation", "performance",
                                      "privacy",    "secagg",  "fairness",      "fairness-trends",
                                      "audit",      "config"};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        char want[64];
        snprintf(want, sizeof want, "<section id=\"%s\">", ids[i]);
        if (!strstr(h, want)) fail_msg("no %s", want);
    }
    /* accuracy/AUC, loss, epsilon; per attribute a calibration chart and
     * up to two trend charts */
    int svgs = count_of(h, "<svg");
    if (svgs < 5) fail_msg("%d SVG charts", svgs);
    assert_int_equal(count_of(h, "<svg"), count_of(h, "</svg>"));
    assert_true(count_of(h, "<table") >= 10);
    assert_int_equal(count_of(h, "<table"), count_of(h, "</table>"));
    assert_int_equal(count_of(h, "<table class=\"fairness\">"), 2);
    assert_int_equal(count_of(h, "<table class=\"fairness disparities\">") +
                         count_of(h, "Disparities not computed"),
                     2);
    assert_non_null(strstr(h, "no update before the deadline"));
    assert_non_null(strstr(h, "@media print"));
    assert_non_null(strstr(h, "break-before:page"));
    assert_non_null(strstr(h, "cap \xce\xb5 = 10"));
    /* hostile strings are text */
    assert_self_contained(h);
    assert_non_null(strstr(h, "&lt;script&gt;alert(&#39;site&#39;)&lt;/script&gt;"));
    assert_non_null(strstr(h, "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quoted&quot;"));
    free(h);
    cJSON_Delete(j);
}

static int run(fl_proc_result *r, char **argv) {
    assert_int_equal(fl_test_run(r, argv), 0);
    return r->exit_code;
}

/* No "<name>.tmp-XXXXXX" left in dir. */
static void assert_no_temp(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp-")) fail_msg("temporary file left: %s/%s", dir, de->d_name);
    closedir(d);
}

/* The CLI writes both files, prints their paths; they are the report and
 * its twin. Left in the artifacts directory for the Chromium test. */
static void test_cli_writes(void **state) {
    (void)state;
    NEED_DB();
    char html[4096], json[4096];
    snprintf(html, sizeof html, "%s/report.html", g_artifacts);
    snprintf(json, sizeof json, "%s/report.json", g_artifacts);
    char *argv[] = {g_cohort, "report", "--db", g_db, "--out", html, "--json", json, NULL};
    fl_proc_result r;
    if (run(&r, argv) != 0) fail_msg("cohort report exited %d: %s", r.exit_code, r.err);
    char want[8300];
    snprintf(want, sizeof want, "%s\n%s\n", html, json);
    assert_string_equal(r.out, want);
    fl_proc_result_free(&r);
    char *h = ft_read_file(html, NULL), *t = ft_read_file(json, NULL);
    assert_non_null(h);
    assert_non_null(t);
    struct stat st;
    assert_int_equal(stat(html, &st), 0);
    mode_t mask = umask(0);
    umask(mask);
    assert_int_equal(st.st_mode & 0777, 0666 & ~mask); /* as any new file, not mkstemp's 0600 */
    assert_self_contained(h);
    cJSON *j = cJSON_Parse(t);
    assert_non_null(j);
    assert_string_equal(str(get(j, "federation"), "id"), "sim");
    assert_string_equal(str(j, "database"), g_db);
    /* the twin is the single source: it renders to the very same page */
    char *again = html_of(j);
    assert_string_equal(again, h);
    free(again);
    cJSON_Delete(j);
    free(h);
    free(t);
    assert_no_temp(g_artifacts);
    fprintf(stderr, "report: %s\n", html);
}

/* Bad usage and bad input: exit 2 naming the file; nothing half-written. */
static void test_cli_errors(void **state) {
    (void)state;
    fl_proc_result r;
    const char *missing = tmp_path("no-such.db");
    char *a1[] = {g_cohort, "report", "--db", (char *)missing, "--out", tmp_path("x.html"), NULL};
    assert_int_equal(run(&r, a1), 2);
    assert_non_null(strstr(r.err, missing));
    fl_proc_result_free(&r);
    assert_int_equal(access(tmp_path("x.html"), F_OK), -1);

    char *text = fl_test_write_tmp("text.db", "this is not a database, just some text\n");
    char *a2[] = {g_cohort, "report", "--db", text, "--out", tmp_path("x.html"), NULL};
    assert_int_equal(run(&r, a2), 2);
    assert_non_null(strstr(r.err, text));
    assert_non_null(strstr(r.err, "not an SQLite database"));
    fl_proc_result_free(&r);
    free(text);

    const char *other = tmp_path("other.db");
    sql(other, "CREATE TABLE meta(key TEXT, value TEXT); CREATE TABLE things(x);");
    char *a3[] = {g_cohort, "report", "--db", (char *)other, "--json", tmp_path("x.json"), NULL};
    assert_int_equal(run(&r, a3), 2);
    assert_non_null(strstr(r.err, other));
    assert_non_null(strstr(r.err, "not a Cohort aggregator database"));
    fl_proc_result_free(&r);

    /* A minimal real database, for the output errors. */
    const char *db = tmp_path("cli-min.db");
    fl_store *st;
    char err[FL_ERR_LEN];
    assert_int_equal(fl_store_open(&st, db, err), 0);
    fl_store_close(st);

    const char *bad_out = tmp_path("no-such-dir/report.html");
    char *a4[] = {g_cohort, "report", "--db", (char *)db, "--out", (char *)bad_out, NULL};
    assert_int_equal(run(&r, a4), 2);
    assert_non_null(strstr(r.err, bad_out));
    assert_string_equal(r.out, "");
    fl_proc_result_free(&r);

    /* the HTML can be written but the JSON cannot: the old report stays */
    char *old = fl_test_write_tmp("old.html", "OLD REPORT");
    const char *bad_json = tmp_path("no-such-dir/report.json");
    char *a5[] = {g_cohort, "report", "--db",           (char *)db, "--out",
                  old,      "--json", (char *)bad_json, NULL};
    assert_int_equal(run(&r, a5), 2);
    assert_non_null(strstr(r.err, bad_json));
    fl_proc_result_free(&r);
    char *kept = ft_read_file(old, NULL);
    assert_string_equal(kept, "OLD REPORT");
    free(kept);
    free(old);
    assert_no_temp(fl_test_tmpdir());

    struct {
        char *argv[10];
        const char *needle;
    } usage[] = {
        {{g_cohort, "report", NULL}, "--db is required"},
        {{g_cohort, "report", "--db", (char *)db, NULL}, "--out"},
        {{g_cohort, "report", "--db", (char *)db, "--out", "a", "--json", "a", NULL}, "same file"},
        {{g_cohort, "report", "--db", (char *)db, "--frobnicate", NULL}, "unknown option"},
        {{g_cohort, "report", "--db", NULL}, "--db: expected a file name"},
        {{g_cohort, "report", "--db", (char *)db, "--db", (char *)db, "--out", "a", NULL},
         "given twice"},
        {{g_cohort, "report", "--db", (char *)db, "--out", tmp_path("y.html"), "--ca",
          tmp_path("no-ca.crt"), NULL},
         "no-ca.crt"},
    };
    for (size_t i = 0; i < sizeof usage / sizeof *usage; i++) {
        assert_int_equal(run(&r, usage[i].argv), 2);
        if (!strstr(r.err, usage[i].needle))
            fail_msg("case %zu: '%s' not in: %s", i, usage[i].needle, r.err);
        fl_proc_result_free(&r);
    }
    char *help[] = {g_cohort, "report", "--help", NULL};
    assert_int_equal(run(&r, help), 0);
    assert_non_null(strstr(r.out, "usage: cohort report"));
    fl_proc_result_free(&r);
}

/* A database from the store API alone: one committed round, nothing else.
 * Every optional section says "not recorded"; the page still renders. */
static void test_minimal_db(void **state) {
    (void)state;
    const char *path = tmp_path("minimal.db");
    fl_store *st;
    char err[FL_ERR_LEN];
    assert_int_equal(fl_store_open(&st, path, err), 0);
    uint8_t model[64] = {1, 2, 3};
    fl_metric mets[] = {{"accuracy", 0.7}, {"auc", 0.75}, {"loss", 0.6}};
    fl_participation parts[] = {{1, "completed", NULL, 100, NAN},
                                {2, "dropped", "no update before the deadline", 0, NAN}};
    assert_int_equal(fl_store_site_join(st, 1, "alpha", 100, err), 0);
    assert_int_equal(fl_store_site_join(st, 2, "beta", 50, err), 0);
    fl_round_record rec = {.round = 1,
                           .seed = 7,
                           .model = model,
                           .model_len = sizeof model,
                           .metrics = mets,
                           .n_metrics = 3,
                           .parts = parts,
                           .n_parts = 2};
    assert_int_equal(fl_store_commit_round(st, &rec, err), 0);
    /* A config with markup in it: shown as text. */
    assert_int_equal(
        fl_store_meta_set(st, "config",
                          "[aggregator]\nfederation_id = <b>bold</b>\n"
                          "; </pre><script>alert(1)</script> see https://example.org\n",
                          err),
        0);
    fl_store_close(st);
    cJSON *j = build(path);
    assert_string_equal(str(get(j, "federation"), "id"), "<b>bold</b>");
    assert_string_equal(str(get(j, "privacy"), "status"), "not recorded");
    assert_string_equal(str(get(j, "secagg"), "status"), "not recorded");
    assert_string_equal(str(get(j, "fairness"), "status"), "not recorded");
    assert_true(cJSON_IsNull(get(get(j, "config"), "sha256_matches")));
    assert_int_equal(cJSON_GetArraySize(get(j, "rounds")), 1);
    /* An unsigned log is not a verified one. */
    const char *au = str(get(j, "audit"), "status");
    assert_true(strcmp(au, "verified") != 0);
    char *h = html_of(j);
    assert_true(count_of(h, "Not recorded.") >= 3);
    assert_non_null(strstr(h, "&lt;b&gt;bold&lt;/b&gt;"));
    assert_null(strstr(h, "<b>"));
    assert_self_contained(h); /* the URL is inside the configuration only */
    assert_non_null(strstr(h, "https://example.org"));
    free(h);
    cJSON_Delete(j);
}

/* A database from before the audit log was chained and before fairness
 * existed (store.c's first schema): still a report. */
static void test_legacy_db(void **state) {
    (void)state;
    const char *path = tmp_path("legacy.db");
    sql(path,
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE sites(site INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
        "  n_examples INTEGER, joined_at TEXT NOT NULL);"
        "CREATE TABLE rounds(round INTEGER PRIMARY KEY, seed INTEGER NOT NULL,"
        "  committed_at TEXT NOT NULL, n_completed INTEGER NOT NULL, n_dropped INTEGER NOT NULL);"
        "CREATE TABLE models(round INTEGER PRIMARY KEY, sha256 BLOB NOT NULL, blob BLOB NOT NULL,"
        "  signature BLOB);"
        "CREATE TABLE metrics(round INTEGER NOT NULL, name TEXT NOT NULL, value REAL,"
        "  PRIMARY KEY(round, name));"
        "CREATE TABLE participation(round INTEGER NOT NULL, site INTEGER NOT NULL,"
        "  status TEXT NOT NULL, reason TEXT, n_examples INTEGER, epsilon REAL,"
        "  PRIMARY KEY(round, site));"
        "CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
        "  kind TEXT NOT NULL, site TEXT, round INTEGER NOT NULL, detail TEXT);"
        "INSERT INTO sites VALUES(1, 'site-1', 10, 'x');"
        "INSERT INTO rounds VALUES(1, 1, '2025-01-01T00:00:00Z', 1, 0);"
        "INSERT INTO models VALUES(1, x'00', x'01', NULL);"
        "INSERT INTO participation VALUES(1, 1, 'completed', NULL, 10, 0.5);"
        "INSERT INTO events(at, kind, site, round, detail) VALUES('x', 'privacy', 'site-1', 1,"
        "  'epsilon 0.5 spent after this round (accountant pld, delta 1e-06)');");
    cJSON *j = build(path);
    const cJSON *au = get(j, "audit");
    assert_true(cJSON_IsFalse(get(au, "chained")));
    const char *st = str(au, "status");
    assert_true(!strcmp(st, "not recorded") || !strcmp(st, "not available"));
    assert_string_equal(str(get(j, "fairness"), "status"), "not recorded");
    assert_string_equal(str(get(j, "config"), "status"), "not recorded");
    /* a bad stored hash is reported, not trusted */
    assert_true(cJSON_IsFalse(get(cJSON_GetArrayItem(get(j, "lineage"), 0), "sha256_verified")));
    /* the accountant and delta come from the sites' privacy events */
    const cJSON *pv = get(j, "privacy");
    assert_string_equal(str(pv, "accountant"), "pld");
    assert_string_equal(str(pv, "accountant_source"), "events");
    assert_true(fabs(num(pv, "delta") - 1e-6) < 1e-15);
    char *h = html_of(j);
    assert_non_null(strstr(h, "<section id=\"audit\">"));
    free(h);
    cJSON_Delete(j);
}

/* The fairness sections on rows with known values (the shape of
 * docs/fairness.md): an alert in round 3, an insufficient-data group, an
 * undefined precision, an attribute without disparities. */
static void test_fairness_values(void **state) {
    (void)state;
    const char *path = tmp_path("fair-values.db");
    fl_store *st;
    char err[FL_ERR_LEN];
    assert_int_equal(fl_store_open(&st, path, err), 0);
    uint8_t model[16] = {0};
    fl_metric mets[] = {{"accuracy", 0.7}, {"auc", 0.75}, {"loss", 0.6}};
    fl_round_record rec = {.round = 1,
                           .seed = 7,
                           .model = model,
                           .model_len = sizeof model,
                           .metrics = mets,
                           .n_metrics = 3};
    assert_int_equal(fl_store_commit_round(st, &rec, err), 0);
    fl_store_close(st);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(add_fairness_rows(db), 1);
    sqlite3_close(db);
    cJSON *j = build(path);
    const cJSON *fa = get(j, "fairness");
    assert_int_equal((int)num(fa, "last_round"), 3);
    const cJSON *trend = cJSON_GetArrayItem(get(fa, "trends"), 0);
    assert_string_equal(str(trend, "attribute"), "Age");
    const cJSON *dpd = get(get(trend, "series"), "demographic_parity_difference");
    assert_int_equal(cJSON_GetArraySize(dpd), 3);
    assert_true(fabs(cJSON_GetArrayItem(dpd, 0)->valuedouble - 0.09) < 1e-9);
    assert_true(fabs(cJSON_GetArrayItem(dpd, 2)->valuedouble - 0.17) < 1e-9);
    const cJSON *mar = cJSON_GetArrayItem(get(fa, "trends"), 1);
    assert_string_equal(str(mar, "attribute"), "Marital");
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(get(get(mar, "series"), "disparate_impact"), 0)));
    const cJSON *apr = get(fa, "alerts_per_round");
    assert_int_equal((int)num(cJSON_GetArrayItem(apr, 2), "alerts"), 1);
    assert_int_equal((int)num(cJSON_GetArrayItem(apr, 0), "alerts"), 0);
    assert_int_equal((int)num(get(j, "summary"), "fairness_alerts"), 1);
    char *h = html_of(j);
    /* accuracy/AUC, loss, Age's calibration and its two trend charts;
     * Marital has neither calibration nor disparities: a note, no empty
     * chart */
    int svgs = count_of(h, "<svg");
    if (svgs != 5) fail_msg("%d SVG charts, expected 5", svgs);
    assert_non_null(strstr(h, "No round computed a disparity for this attribute"));
    assert_non_null(strstr(h, "insufficient data"));
    assert_non_null(strstr(h, "<h3>1 fairness alert</h3>"));
    assert_non_null(
        strstr(h, "<tr class=\"alert\"><th scope=\"row\">demographic_parity_difference"));
    assert_non_null(strstr(h, "<tr class=\"alert\"><th scope=\"row\">3</th>"));
    assert_non_null(strstr(h, "1 of 3 audited rounds raised an alert"));
    assert_non_null(strstr(h, "Disparities not computed: fewer than two groups with enough data"));
    assert_non_null(strstr(h, "four-fifths rule (0.8)"));
    assert_non_null(strstr(h, "Calibration by Age group"));
    /* a group name, a parameter and a tiny index among the disparities */
    assert_non_null(strstr(h, "privileged_group</th><td>25-40</td>"));
    assert_non_null(strstr(h, "gei_alpha</th><td class=\"num\">2</td>"));
    assert_non_null(strstr(h, "between_group_theil_index</th><td class=\"num\">5.45e-05</td>"));
    assert_self_contained(h);
    free(h);
    cJSON_Delete(j);
}

/* Malformed or sparse fairness rows: a warning naming the row, no crash,
 * null rates shown as a dash. */
static void test_fairness_rows(void **state) {
    (void)state;
    const char *path = tmp_path("fair.db");
    fl_store *st;
    char err[FL_ERR_LEN];
    assert_int_equal(fl_store_open(&st, path, err), 0);
    fl_store_close(st);
    sql(path, "CREATE TABLE IF NOT EXISTS fairness(round INTEGER PRIMARY KEY, counts BLOB NOT "
              "NULL, metrics TEXT NOT NULL);"
              "INSERT INTO fairness VALUES(1, x'00', '{\"attributes\": [oops');"
              "INSERT INTO fairness VALUES(2, x'00', '{\"threshold\":0.5,\"overall\":{\"count\":0,"
              "\"tpr\":null},\"attributes\":[{\"attribute\":\"A\",\"groups\":{\"g\":{\"count\":1,"
              "\"status\":\"insufficient data\"}},\"disparities\":null,\"alerts\":[]}],"
              "\"alerts\":[]}');");
    cJSON *j = build(path);
    const cJSON *w = get(j, "warnings");
    assert_int_equal(cJSON_GetArraySize(w), 1);
    assert_non_null(strstr(cJSON_GetArrayItem(w, 0)->valuestring, "round 1"));
    assert_non_null(strstr(cJSON_GetArrayItem(w, 0)->valuestring, path));
    const cJSON *fa = get(j, "fairness");
    assert_int_equal((int)num(fa, "last_round"), 2);
    assert_int_equal((int)num(fa, "rounds_recorded"), 1);
    char *h = html_of(j);
    assert_non_null(strstr(h, "insufficient data"));
    assert_non_null(strstr(h, "Disparities not computed"));
    assert_non_null(strstr(h, "Warnings while reading the database"));
    free(h);
    cJSON_Delete(j);
    /* a document that is not a report */
    cJSON *bad = cJSON_CreateObject();
    char *h2 = NULL;
    size_t n;
    assert_int_equal(fl_report_html(&h2, &n, bad, err), FL_EINVAL);
    assert_null(h2);
    cJSON_Delete(bad);
}

/* Drops the append-only triggers of the copy, as an attacker with the file
 * would. */
static void drop_triggers(const char *path) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    char names[16][128];
    int n = 0;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type = 'trigger'",
                                        -1, &s, NULL),
                     SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW && n < 16)
        snprintf(names[n++], sizeof names[0], "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(db);
    for (int i = 0; i < n; i++) {
        char q[4096];
        snprintf(q, sizeof q, "DROP TRIGGER \"%s\";", names[i]);
        sql(path, q);
    }
}

/* An edited audit event and a forged model signature: the report says the
 * log failed, names the row, and flags the model; the CLI still writes the
 * report (the failure is its finding) and warns. */
static void test_tampered(void **state) {
    (void)state;
    NEED_DB();
    cJSON *j = build(g_db);
    const char *st = str(get(j, "audit"), "status");
    if (strcmp(st, "verified")) {
        cJSON_Delete(j);
        skip(); /* no verifier in this tree */
    }
    cJSON_Delete(j);
    const char *edited = tmp_path("edited.db");
    copy_db(g_db, edited);
    drop_triggers(edited);
    sql(edited, "UPDATE events SET detail = 'nothing happened' WHERE id = 5;");
    j = build(edited);
    const cJSON *au = get(j, "audit");
    assert_string_equal(str(au, "status"), "failed");
    assert_int_equal((int)num(au, "first_bad_id"), 5);
    assert_string_equal(str(au, "table"), "events");
    assert_string_equal(str(get(j, "summary"), "audit"), "failed");
    char *h = html_of(j);
    assert_non_null(strstr(h, "FAILED"));
    free(h);
    cJSON_Delete(j);

    const char *forged = tmp_path("forged.db");
    copy_db(g_db, forged);
    sql(forged, "UPDATE models SET signature = zeroblob(70) WHERE round = 2;");
    j = build(forged);
    assert_string_equal(str(get(j, "audit"), "status"), "failed");
    const cJSON *e;
    int flagged = 0;
    cJSON_ArrayForEach(e, get(j, "lineage")) {
        if ((int)num(e, "round") == 2) {
            assert_string_equal(str(e, "signature_status"), "invalid");
            flagged = 1;
        } else {
            assert_string_not_equal(str(e, "signature_status"), "verified");
        }
    }
    assert_true(flagged);
    cJSON_Delete(j);

    fl_proc_result r;
    char *argv[] = {g_cohort, "report", "--db", (char *)edited, "--out", tmp_path("edited.html"),
                    NULL};
    assert_int_equal(run(&r, argv), 0);
    assert_non_null(strstr(r.err, "did not verify"));
    fl_proc_result_free(&r);
}

/* ------------------------------------------------------------ Chromium */

/* chromium's path on PATH, or NULL. */
static const char *find_chromium(void) {
    static char b[4096];
    const char *path = getenv("PATH");
    static const char *const names[] = {"chromium", "chromium-browser"};
    for (size_t k = 0; k < 2; k++)
        for (const char *p = path; p && *p;) {
            size_t n = strcspn(p, ":");
            snprintf(b, sizeof b, "%.*s/%s", (int)n, p, names[k]);
            if (n && !access(b, X_OK)) return b;
            p += n + (p[n] == ':');
        }
    return NULL;
}

static int fail_chromium(const char *what, const fl_proc_result *r) {
    fprintf(stderr, "chromium: %s\nexit %d\n%s\n", what, r->exit_code, r->err ? r->err : "");
    return 1;
}

/* Renders report.html in headless Chromium with every background service
 * off, no network (the resolver maps every name to nothing), a throwaway
 * profile and HOME. Checks the screenshot, the DOM (charts and fairness
 * tables are elements; the injected script is text) and the PDF. */
static int chromium_check(void) {
    const char *chrome = find_chromium();
    if (!chrome) {
        fprintf(stderr, "chromium is not installed (deploy/setup.sh installs it): skipped\n");
        return 77;
    }
    char chrome_path[4096];
    snprintf(chrome_path, sizeof chrome_path, "%s", chrome);
    char art[4096], html[4096], url[4200], png[4200], pdf[4200], dom_path[4200];
    snprintf(art, sizeof art, "%s/../tests/artifacts", COHORT_BIN_DIR);
    char *real = realpath(art, NULL);
    if (!real) {
        fprintf(stderr, "%s: %s: run test_report first: skipped\n", art, strerror(errno));
        return 77;
    }
    snprintf(html, sizeof html, "%s/report.html", real);
    snprintf(url, sizeof url, "file://%s", html);
    snprintf(png, sizeof png, "--screenshot=%s/report.png", real);
    snprintf(pdf, sizeof pdf, "--print-to-pdf=%s/report.pdf", real);
    snprintf(dom_path, sizeof dom_path, "%s/report.dom.html", real);
    if (access(html, R_OK)) {
        /* test_report fails on its own if it should have written one */
        fprintf(stderr,
                "%s: %s: no report to render (test_report writes it when it can run a "
                "federation): skipped\n",
                html, strerror(errno));
        free(real);
        return 77;
    }
    /* no stale artifact can pass for this run's */
    static const char *const old[] = {"report.png", "report.pdf", "report.dom.html"};
    for (size_t i = 0; i < 3; i++) {
        char f[4200];
        snprintf(f, sizeof f, "%s/%s", real, old[i]);
        unlink(f);
    }
    char home[4096], profile[4200];
    snprintf(home, sizeof home, "%s/home", fl_test_tmpdir());
    snprintf(profile, sizeof profile, "--user-data-dir=%s/profile", home);
    ft_mkdirs(home);
    setenv("HOME", home, 1);
    setenv("XDG_CONFIG_HOME", home, 1);
    setenv("XDG_CACHE_HOME", home, 1);
    ft_watchdog(600);
#define CHROME_FLAGS                                                                               \
    chrome_path, "--headless", "--no-sandbox", "--disable-gpu", profile,                           \
        "--disable-background-networking", "--disable-component-update", "--disable-default-apps", \
        "--disable-extensions", "--disable-sync", "--disable-breakpad",                            \
        "--disable-client-side-phishing-detection", "--disable-domain-reliability",                \
        "--metrics-recording-only", "--no-first-run", "--no-default-browser-check", "--no-pings",  \
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"
    int rc = 0;
    fl_proc_result r;
    char *shot[] = {CHROME_FLAGS, "--window-size=1280,4000", png, url, NULL};
    if (fl_test_run(&r, shot) || r.exit_code != 0) rc = fail_chromium("screenshot failed", &r);
    fl_proc_result_free(&r);
    char png_file[4200];
    snprintf(png_file, sizeof png_file, "%s/report.png", real);
    size_t n = 0;
    char *img = rc ? NULL : ft_read_file(png_file, &n);
    /* PNG signature, then IHDR: width and height big-endian at 16 and 20 */
    if (!rc && (!img || n < 24 || memcmp(img, "\x89PNG\r\n\x1a\n", 8))) {
        fprintf(stderr, "%s: not a PNG\n", png_file);
        rc = 1;
    } else if (!rc) {
        const unsigned char *u = (const unsigned char *)img;
        unsigned w = (unsigned)u[16] << 24 | u[17] << 16 | u[18] << 8 | u[19];
        unsigned h = (unsigned)u[20] << 24 | u[21] << 16 | u[22] << 8 | u[23];
        if (w != 1280 || h != 4000 || n < 50000) {
            fprintf(stderr, "%s: %ux%u, %zu bytes: expected 1280x4000 with content\n", png_file, w,
                    h, n);
            rc = 1;
        }
    }
    free(img);

    char *dom[] = {CHROME_FLAGS, "--dump-dom", url, NULL};
    if (!rc && (fl_test_run(&r, dom) || r.exit_code != 0))
        rc = fail_chromium("--dump-dom failed", &r);
    else if (!rc) {
        const char *d = r.out;
        ft_write_file(dom_path, "%s", d);
        int svgs = count_of(d, "<svg"), tables = count_of(d, "<table class=\"fairness\"");
        if (svgs < 6 || tables < 2 || count_of(d, "<path class=\"line\"") < 8 ||
            !strstr(d, "<section id=\"fairness\">") || !strstr(d, "<section id=\"audit\">")) {
            fprintf(stderr, "DOM: %d <svg>, %d fairness tables: expected the charts and tables\n",
                    svgs, tables);
            rc = 1;
        }
        if (strstr(d, "<script") || strstr(d, "<img") || !strstr(d, "&lt;script&gt;")) {
            fprintf(stderr, "DOM: the injected site name is markup, not text\n");
            rc = 1;
        }
    }
    fl_proc_result_free(&r);

    char *print[] = {CHROME_FLAGS, "--no-pdf-header-footer", pdf, url, NULL};
    if (!rc && (fl_test_run(&r, print) || r.exit_code != 0))
        rc = fail_chromium("--print-to-pdf failed", &r);
    fl_proc_result_free(&r);
    char pdf_file[4200];
    snprintf(pdf_file, sizeof pdf_file, "%s/report.pdf", real);
    char *p = rc ? NULL : ft_read_file(pdf_file, &n);
    if (!rc) {
        /* one page per section at least (each starts a new page in print) */
        int pages = p ? count_mem(p, n, "/Type /Page\n") + count_mem(p, n, "/Type /Page ") +
                            count_mem(p, n, "/Type /Page/") + count_mem(p, n, "/Type /Page>")
                      : 0;
        if (!p || n < 5 || memcmp(p, "%PDF-", 5) || pages < 10) {
            fprintf(stderr, "%s: %d pages: expected a PDF with a page per section\n", pdf_file,
                    pages);
            rc = 1;
        } else {
            fprintf(stderr, "PDF: %d pages\n", pages);
        }
    }
    free(p);
    ft_watchdog(0);
    if (!rc)
        fprintf(stderr, "screenshot: %s/report.png\nPDF: %s\nDOM: %s\n", real, pdf_file, dom_path);
    printf("%s/report.png\n", real);
    free(real);
    return rc;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--chromium")) return chromium_check();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_sections),   cmocka_unit_test(test_html_sections),
        cmocka_unit_test(test_cli_writes),      cmocka_unit_test(test_cli_errors),
        cmocka_unit_test(test_minimal_db),      cmocka_unit_test(test_legacy_db),
        cmocka_unit_test(test_fairness_values), cmocka_unit_test(test_fairness_rows),
        cmocka_unit_test(test_tampered),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
