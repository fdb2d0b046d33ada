/* test_simulate.c: `cohort simulate` as a user runs it (docs/simulate.md):
 * real cohort-aggregator and cohort-client processes over mutual TLS on
 * loopback. A three-site federation completes and leaves no process behind;
 * bad federation.ini files fail with exit 2 naming the file and line; the
 * five-site acceptance run (deploy/demo/credit5.federation.ini) lands within
 * one point of `cohort train` on the same held-out split; a site killed by
 * [faults] shows up as a dropout while the federation still finishes; and an
 * interrupted simulation takes its children down with it. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char g_cohort[4096];
static int g_have_programs; /* cohort-aggregator and cohort-client are built */

static int setup(void **state) {
    snprintf(g_cohort, sizeof g_cohort, "%s", fl_test_bin("cohort"));
    char agg[4096];
    snprintf(agg, sizeof agg, "%s", fl_test_bin("cohort-aggregator"));
    g_have_programs = !access(agg, X_OK) && !access(fl_test_bin("cohort-client"), X_OK);
    if (!g_have_programs)
        fprintf(stderr, "cohort-aggregator / cohort-client not built: federation runs skipped\n");
    return 0;
}

#define NEED_PROGRAMS()                                                                            \
    do {                                                                                           \
        if (!g_have_programs) skip();                                                              \
    } while (0)

static const char *demo_dir(void) {
    static char b[4096];
    snprintf(b, sizeof b, "%s/..", COHORT_DATA_DIR);
    return b;
}

/* A federation.ini in the test's temporary directory: the credit data with
 * absolute paths, the demo's training settings, then `extra` (more keys or
 * sections, appended verbatim). */
static char *write_fed(const char *name, const char *federation, const char *extra) {
    char text[8192];
    snprintf(text, sizeof text,
             "[federation]\n%s"
             "[data]\ncsv = %s/credit_data.csv\nschema = %s/credit.schema.ini\n"
             "test_fraction = 0.2\n"
             "[model]\ntype = logreg\n"
             "[train]\nlocal_epochs = 10\nbatch_size = 64\noptimizer = sgd\nlr = 0.1\n"
             "weight_decay = 0.0001\n%s",
             federation, COHORT_DATA_DIR, demo_dir(), extra ? extra : "");
    return fl_test_write_tmp(name, text);
}

static char *tmp_path(const char *name) {
    static char b[4][4096];
    static int i;
    char *p = b[i++ % 4];
    snprintf(p, 4096, "%s/%s", fl_test_tmpdir(), name);
    return p;
}

/* cohort simulate --config ini --json [--workdir dir]: exit 0 and one JSON
 * object on stdout (caller deletes). */
static cJSON *simulate_json(const char *ini, const char *workdir) {
    char *argv[8];
    int n = 0;
    argv[n++] = g_cohort;
    argv[n++] = "simulate";
    argv[n++] = "--config";
    argv[n++] = (char *)ini;
    argv[n++] = "--json";
    if (workdir) {
        argv[n++] = "--workdir";
        argv[n++] = (char *)workdir;
    }
    argv[n] = NULL;
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code != 0) fail_msg("cohort simulate exited %d:\n%s", r.exit_code, r.err);
    cJSON *j = cJSON_Parse(r.out);
    if (!j || !cJSON_IsObject(j)) fail_msg("stdout is not one JSON object: %s", r.out);
    fl_proc_result_free(&r);
    return j;
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

/* 1 when some process still running has `needle` in its command line. */
static int process_with(const char *needle, pid_t *found) {
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *de;
    int hit = 0;
    while (!hit && (de = readdir(d))) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0 || pid == getpid()) continue;
        char path[64], buf[8192];
        snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++)
            if (!buf[i]) buf[i] = ' ';
        buf[n] = 0;
        char stat_path[64], st[512] = "";
        snprintf(stat_path, sizeof stat_path, "/proc/%ld/stat", pid);
        f = fopen(stat_path, "r");
        if (f) {
            if (!fgets(st, sizeof st, f)) st[0] = 0;
            fclose(f);
        }
        const char *rp = strrchr(st, ')');
        int zombie = rp && rp[1] == ' ' && rp[2] == 'Z';
        if (strstr(buf, needle) && !zombie) {
            hit = 1;
            if (found) *found = (pid_t)pid;
        }
    }
    closedir(d);
    return hit;
}

/* Every process the simulator reported has gone (its pid is free, or now
 * belongs to something that is not ours). */
static void assert_processes_gone(const cJSON *j, const char *workdir) {
    const cJSON *procs = get(j, "processes");
    assert_true(cJSON_IsArray(procs));
    const cJSON *p;
    cJSON_ArrayForEach(p, procs) {
        pid_t pid = (pid_t)num(p, "pid");
        assert_true(pid > 0);
        char path[64], buf[4096] = "";
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        FILE *f = fopen(path, "rb");
        if (!f) continue; /* gone */
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++)
            if (!buf[i]) buf[i] = ' ';
        buf[n] = 0;
        if (strstr(buf, "cohort-aggregator") || strstr(buf, "cohort-client"))
            fail_msg("%s (pid %d) is still running: %s", get(p, "name")->valuestring, (int)pid,
                     buf);
    }
    pid_t stray;
    if (workdir && process_with(workdir, &stray))
        fail_msg("process %d still runs from %s", (int)stray, workdir);
}

static int is_hex64(const char *s) {
    if (!s || strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!strchr("0123456789abcdef", s[i])) return 0;
    return 1;
}

static int exists(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

/* (a) Three sites, three rounds: the federation finishes, the figures are
 * there, the model hash is a SHA-256, and nothing is left running. */
static void test_three_sites(void **state) {
    NEED_PROGRAMS();
    char *ini =
        write_fed("three.ini", "sites = 3\nrounds = 3\npartition = by:Home\nseed = 42\n", NULL);
    const char *wd = tmp_path("three-work");
    cJSON *j = simulate_json(ini, wd);
    const cJSON *rounds = get(j, "rounds");
    assert_int_equal(cJSON_GetArraySize(rounds), 3);
    for (int i = 0; i < 3; i++) {
        const cJSON *r = cJSON_GetArrayItem(rounds, i);
        assert_int_equal((int)num(r, "round"), i + 1);
        assert_int_equal((int)num(r, "clients"), 3);
        assert_int_equal((int)num(r, "dropped"), 0);
        assert_true(num(r, "accuracy") > 0.5 && num(r, "accuracy") <= 1.0);
        assert_true(num(r, "auc") > 0.5);
        assert_true(num(r, "loss") > 0);
        assert_true(cJSON_IsNull(get(r, "epsilon")));
    }
    const cJSON *fin = get(j, "final");
    if (num(fin, "accuracy") < 0.75) fail_msg("final accuracy %.4f < 0.75", num(fin, "accuracy"));
    assert_true(num(fin, "auc") > 0.75);
    assert_int_equal((int)num(fin, "n"), 891);
    assert_true(is_hex64(get(j, "model_sha256")->valuestring));
    assert_string_equal(get(j, "model")->valuestring, "logreg");
    assert_string_equal(get(j, "partition")->valuestring, "by:Home");
    assert_string_equal(get(j, "strategy")->valuestring, "fedavg");
    assert_int_equal((int)num(j, "sites"), 3);
    assert_string_equal(get(j, "workdir")->valuestring, wd);
    assert_string_equal(get(get(j, "privacy"), "mode")->valuestring, "none");
    /* the site shares add up to everything but the test split */
    const cJSON *sr = get(get(j, "data"), "site_rows"), *x;
    double total = 0;
    cJSON_ArrayForEach(x, sr) total += x->valuedouble;
    assert_int_equal((int)total, 4454 - 891);
    const cJSON *p;
    cJSON_ArrayForEach(p, get(j, "processes")) {
        assert_string_equal(get(p, "status")->valuestring, "exit 0");
    }
    assert_processes_gone(j, wd);
    /* --workdir keeps the federation for inspection */
    assert_true(exists(wd, "aggregator.db"));
    assert_true(exists(wd, "pki/ca.crt"));
    assert_true(exists(wd, "pki/site-3.key"));
    assert_true(exists(wd, "sites/site-1.csv"));
    assert_true(exists(wd, "sites/site.schema.ini"));
    assert_true(exists(wd, "site-2.log"));
    char sha[65];
    snprintf(sha, sizeof sha, "%s", get(j, "model_sha256")->valuestring);
    cJSON_Delete(j);

    /* The same config again, in a temporary work directory: the same model
     * bit for bit (aggregation in site order, seeded everything), and the
     * directory is gone afterwards. */
    const char *tmp = tmp_path("tmpdirs");
    assert_int_equal(mkdir(tmp, 0700), 0);
    char *old = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
    setenv("TMPDIR", tmp, 1);
    j = simulate_json(ini, NULL);
    if (old) {
        setenv("TMPDIR", old, 1);
        free(old);
    } else {
        unsetenv("TMPDIR");
    }
    assert_true(cJSON_IsNull(get(j, "workdir")));
    assert_string_equal(get(j, "model_sha256")->valuestring, sha);
    DIR *d = opendir(tmp);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            fail_msg("temporary work directory left behind: %s", de->d_name);
    closedir(d);
    assert_processes_gone(j, NULL);
    cJSON_Delete(j);
    free(ini);
}

/* Runs cohort simulate on a bad config: exit 2, and stderr names `where`
 * and says `what`. */
static void expect_bad(const char *name, const char *text, const char *where, const char *what) {
    char *ini = fl_test_write_tmp(name, text);
    char *argv[] = {g_cohort, "simulate", "--config", ini, "--json", NULL};
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code != 2) fail_msg("%s: exit %d, expected 2: %s", name, r.exit_code, r.err);
    if (!strstr(r.err, where) || !strstr(r.err, what))
        fail_msg("%s: expected '%s' and '%s' in: %s", name, where, what, r.err);
    assert_string_equal(r.out, "");
    fl_proc_result_free(&r);
    free(ini);
}

/* (b) Bad federation.ini files: exit 2, nothing run, the file and line. */
static void test_bad_config(void **state) {
    char data[8192];
    snprintf(data, sizeof data, "[data]\ncsv = %s/credit_data.csv\nschema = %s/credit.schema.ini\n",
             COHORT_DATA_DIR, demo_dir());
    char t[12000];
    snprintf(t, sizeof t, "[federation]\nsites = 3\nroundz = 3\n%s", data);
    expect_bad("b1.ini", t, "b1.ini:3:", "unknown key 'roundz'");
    snprintf(t, sizeof t, "[federation]\nrounds = 3\nsites = 0\n%s", data);
    expect_bad("b2.ini", t, "b2.ini:3:", "'sites'");
    snprintf(t, sizeof t, "[federation]\nsites = 3\npartition = by\n%s", data);
    expect_bad("b3.ini", t, "b3.ini:3:", "partition");
    snprintf(t, sizeof t, "[federation]\nsites = 3\npartition = dirichlet:-1\n%s", data);
    expect_bad("b4.ini", t, "b4.ini:3:", "dirichlet");
    expect_bad("b5.ini",
               "[federation]\nsites = 3\n[data]\ncsv = no-such-file.csv\nschema = x.ini\n",
               "b5.ini:4:", "no-such-file.csv");
    snprintf(t, sizeof t, "[federation]\nsites = 3\n%s[fault]\nkill_site = 1@1:TRAIN\n", data);
    expect_bad("b6.ini", t, "b6.ini:6:", "unknown section [fault]");
    snprintf(t, sizeof t, "[federation]\nsites = 3\nmin_sites = 4\n%s", data);
    expect_bad("b7.ini", t, "b7.ini:3:", "min_sites");
    snprintf(t, sizeof t,
             "[federation]\nsites = 3\nrounds = 2\n%s[faults]\nkill_site = 2@3:TRAIN\n", data);
    expect_bad("b8.ini", t, "b8.ini:8:", "round 3");
    snprintf(t, sizeof t, "[federation]\nsites = 3\n%s[faults]\nkill_site = 2@1:SLEEP\n", data);
    expect_bad("b9.ini", t, "b9.ini:7:", "stage");
    snprintf(t, sizeof t, "[federation]\nsites = 3\npartition = by:Nope\n%s", data);
    expect_bad("b10.ini", t, "b10.ini:3:", "Nope");
    snprintf(t, sizeof t, "[federation]\nsites = 3\n%stest_fraction = 0\n", data);
    expect_bad("b11.ini", t, "b11.ini:6:", "test_fraction");
    snprintf(t, sizeof t, "[federation]\nsites = 3\n%stest_fraction = 0.95\n", data);
    expect_bad("b12.ini", t, "b12.ini:6:", "test_fraction");
    snprintf(t, sizeof t, "[federation]\nsites = 3\nstrategy = fedmagic\n%s", data);
    expect_bad("b13.ini", t, "b13.ini:3:", "strategy");
    snprintf(t, sizeof t, "[federation]\nsites = 3\n%s[model]\ntype = forest\n", data);
    expect_bad("b14.ini", t, "b14.ini:7:", "type");
    snprintf(t, sizeof t, "[federation]\nsites = 3\n%s[privacy]\nmode = maybe\n", data);
    expect_bad("b15.ini", t, "b15.ini:7:", "mode");
    /* 7 distinct housing values cannot make 8 sites */
    snprintf(t, sizeof t, "[federation]\nsites = 8\npartition = by:Home\n%s", data);
    expect_bad("b16.ini", t, "b16.ini:3:", "distinct values");
    /* usage */
    char *argv[] = {g_cohort, "simulate", "--json", NULL};
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    assert_int_equal(r.exit_code, 2);
    fl_proc_result_free(&r);
}

/* (c) The acceptance run: deploy/demo/credit5.federation.ini (5 sites,
 * by:Home, logreg, 10 rounds) against `cohort train --val-fraction 0` on the
 * same held-out rows (same seed and test fraction: the split is the same
 * call), within one point of accuracy. */
static void test_credit5_matches_centralized(void **state) {
    NEED_PROGRAMS();
    char ini[8192];
    snprintf(ini, sizeof ini, "%s/credit5.federation.ini", demo_dir());
    cJSON *fed = simulate_json(ini, NULL);
    char data[8192], schema[8192];
    snprintf(data, sizeof data, "%s/credit_data.csv", COHORT_DATA_DIR);
    snprintf(schema, sizeof schema, "%s/credit.schema.ini", demo_dir());
    char *argv[] = {g_cohort,  "train",  "--data",         data, "--schema",        schema,
                    "--model", "logreg", "--val-fraction", "0",  "--test-fraction", "0.2",
                    "--seed",  "42",     "--json",         NULL};
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    if (r.exit_code) fail_msg("cohort train exited %d: %s", r.exit_code, r.err);
    cJSON *cen = cJSON_Parse(r.out);
    assert_non_null(cen);
    fl_proc_result_free(&r);
    const cJSON *f = get(fed, "final"), *c = get(cen, "test");
    assert_int_equal(cJSON_GetArraySize(get(fed, "rounds")), 10);
    assert_int_equal((int)num(fed, "sites"), 5);
    /* the same test rows: the same count out of the same split call */
    assert_int_equal((int)num(f, "n"), (int)num(c, "n"));
    double fa = num(f, "accuracy"), ca = num(c, "accuracy");
    fprintf(stderr,
            "credit5: federated accuracy %.4f auc %.4f loss %.4f; centralized %.4f %.4f %.4f\n", fa,
            num(f, "auc"), num(f, "loss"), ca, num(c, "auc"), num(c, "loss"));
    if (fabs(fa - ca) > 0.01 + 1e-9)
        fail_msg("federated accuracy %.4f is more than one point from centralized %.4f", fa, ca);
    cJSON_Delete(fed);
    cJSON_Delete(cen);
}

/* (d) [faults] kill_site = 2@2:TRAIN: site-2's process is SIGKILLed as
 * round 2's TRAIN stage begins; the federation carries on with two sites and
 * records site-2 as dropped. A site can finish a stage within milliseconds
 * of its start, so its round-2 update may already be in: the dropout is then
 * recorded at round 3 (docs/simulate.md, "Faults"). */
static void test_kill_site(void **state) {
    NEED_PROGRAMS();
    char *ini = write_fed("fault.ini",
                          "sites = 3\nrounds = 3\npartition = by:Home\nseed = 42\n"
                          "stage_timeout = 2\n",
                          "[faults]\nkill_site = 2@2:TRAIN\n");
    const char *wd = tmp_path("fault-work");
    cJSON *j = simulate_json(ini, wd);
    const cJSON *rounds = get(j, "rounds");
    assert_int_equal(cJSON_GetArraySize(rounds), 3);
    const cJSON *r1 = cJSON_GetArrayItem(rounds, 0);
    assert_int_equal((int)num(r1, "dropped"), 0);
    assert_int_equal((int)num(r1, "clients"), 3);
    int dropout_round = 0;
    for (int i = 1; i < 3 && !dropout_round; i++) {
        const cJSON *r = cJSON_GetArrayItem(rounds, i), *s;
        cJSON_ArrayForEach(s, get(r, "dropped_sites")) {
            if (!strcmp(s->valuestring, "site-2")) dropout_round = i + 1;
        }
        if (dropout_round) {
            assert_int_equal((int)num(r, "dropped"), 1);
            assert_int_equal((int)num(r, "clients"), 2);
        }
    }
    if (!dropout_round) fail_msg("no round recorded site-2 as dropped");
    /* once gone, gone: the last round trains without it */
    const cJSON *r3 = cJSON_GetArrayItem(rounds, 2);
    assert_int_equal((int)num(r3, "clients"), 2);
    const cJSON *fa = cJSON_GetArrayItem(get(j, "faults"), 0);
    assert_non_null(fa);
    assert_true(cJSON_IsTrue(get(fa, "fired")));
    assert_int_equal((int)num(fa, "site"), 2);
    assert_int_equal((int)num(fa, "dropout_round"), dropout_round);
    const cJSON *p;
    cJSON_ArrayForEach(p, get(j, "processes")) {
        const char *name = get(p, "name")->valuestring, *st = get(p, "status")->valuestring;
        if (!strcmp(name, "site-2")) {
            assert_true(cJSON_IsTrue(get(p, "fault")));
            assert_string_equal(st, "killed by signal 9");
        } else {
            assert_string_equal(st, "exit 0");
        }
    }
    assert_true(num(get(j, "final"), "accuracy") > 0.7);
    assert_processes_gone(j, wd);
    cJSON_Delete(j);
    free(ini);
}

/* (f) Secure aggregation (issue #6): the six-site credit federation of
 * deploy/demo/credit6.secagg.federation.ini with every sum going through
 * SecAgg+ lands within half a point of the same run in the clear, and so
 * does the run where site 2 is killed while it computes its masked input in
 * round 3 (after sharing its keys: its masks are removed with its
 * neighbours' shares), against the same run in the clear: site 2 killed
 * while it trains in round 3, so that both leave its round-3 update out and
 * go on with five sites. The fairness section (Age, Marital) comes from
 * secure sums too. */
static cJSON *secagg_run(const char *name, const char *secagg, const char *faults,
                         const char *workdir) {
    char extra[512];
    /* an equalized-odds limit no model meets: every round raises an alert */
    snprintf(extra, sizeof extra,
             "[secagg]\n%s[faults]\n%s[fairness]\nmax_equalized_odds_difference = 0.001\n", secagg,
             faults);
    char fed[256];
    snprintf(fed, sizeof fed,
             "sites = 6\nrounds = 8\npartition = iid\nseed = 42\nmin_sites = 3\n"
             "stage_timeout = %s\n",
             *faults ? "2" : "30");
    char *ini = write_fed(name, fed, extra);
    cJSON *j = simulate_json(ini, workdir);
    free(ini);
    assert_int_equal(cJSON_GetArraySize(get(j, "rounds")), 8);
    return j;
}

static void test_secagg_matches_plain(void **state) {
    NEED_PROGRAMS();
    cJSON *plain = secagg_run("plain6.ini", "enabled = false\n", "", NULL);
    const char *wd = tmp_path("secagg-work");
    cJSON *sec = secagg_run("secagg6.ini", "enabled = true\n", "", wd);
    cJSON *kill =
        secagg_run("secagg6-kill.ini", "enabled = true\n", "kill_site = 2@3:MASKED_INPUT\n", NULL);
    cJSON *pkill =
        secagg_run("plain6-kill.ini", "enabled = false\n", "kill_site = 2@3:TRAIN\n", NULL);
    double pa = num(get(plain, "final"), "accuracy"), sa = num(get(sec, "final"), "accuracy"),
           ka = num(get(kill, "final"), "accuracy"), pka = num(get(pkill, "final"), "accuracy");
    fprintf(stderr,
            "secagg: final accuracy plain %.4f, secure %.4f; with site 2 killed in round 3: "
            "plain %.4f, secure %.4f\n",
            pa, sa, pka, ka);
    assert_true(cJSON_IsTrue(get(get(sec, "secagg"), "enabled")));
    assert_false(cJSON_IsTrue(get(get(plain, "secagg"), "enabled")));
    if (fabs(sa - pa) > 0.005 + 1e-9 || fabs(ka - pka) > 0.005 + 1e-9)
        fail_msg("secure aggregation moved the accuracy by more than half a point");
    /* the plain kill run left the same site out of the same rounds */
    for (int i = 2; i < 8; i++) {
        const cJSON *r = cJSON_GetArrayItem(get(pkill, "rounds"), i);
        assert_int_equal((int)num(r, "clients"), 5);
    }
    cJSON_Delete(pkill);
    /* the killed site: dropped in round 3, then absent (no longer asked, so
     * no stage waits for it), the rounds completing with 5 */
    const cJSON *rounds = get(kill, "rounds");
    assert_int_equal((int)num(cJSON_GetArrayItem(rounds, 1), "clients"), 6);
    for (int i = 2; i < 8; i++) {
        const cJSON *r = cJSON_GetArrayItem(rounds, i);
        assert_int_equal((int)num(r, "clients"), 5);
        assert_int_equal((int)num(r, "dropped"), i == 2 ? 1 : 0);
    }
    const cJSON *fa = cJSON_GetArrayItem(get(kill, "faults"), 0);
    assert_true(cJSON_IsTrue(get(fa, "fired")));
    assert_int_equal((int)num(fa, "dropout_round"), 3);
    /* the fairness audit of the last round, from secure sums */
    const cJSON *fair = get(sec, "fairness"), *a;
    assert_int_equal((int)num(get(fair, "overall"), "count"),
                     (int)num(cJSON_GetArrayItem(get(sec, "rounds"), 7), "eval_examples"));
    int seen = 0;
    cJSON_ArrayForEach(a, get(fair, "attributes")) {
        const char *at = get(a, "attribute")->valuestring;
        if (!strcmp(at, "Age")) {
            assert_non_null(cJSON_GetObjectItemCaseSensitive(get(a, "groups"), "25-40"));
            seen |= 1;
        }
        if (!strcmp(at, "Marital")) {
            assert_non_null(cJSON_GetObjectItemCaseSensitive(get(a, "groups"), "married"));
            seen |= 2;
        }
        assert_non_null(get(a, "disparities"));
    }
    assert_int_equal(seen, 3);
    /* the limit turned into alerts: in the audit JSON and in the audit log */
    assert_true(cJSON_GetArraySize(get(fair, "alerts")) > 0);
    char db[4200];
    snprintf(db, sizeof db, "%s/aggregator.db", wd);
    sqlite3 *h;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(h,
                                        "SELECT COUNT(*) FROM events WHERE kind = 'fairness_alert' "
                                        "AND detail LIKE 'equalized_odds_difference%'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_true(sqlite3_column_int(st, 0) >= 8);
    sqlite3_finalize(st);
    sqlite3_close(h);
    /* the plain run's audit counts the same rows the same way: same groups,
     * same figures, since both federations evaluate the same models */
    const cJSON *pf = get(plain, "fairness");
    assert_int_equal((int)num(get(pf, "overall"), "count"),
                     (int)num(get(fair, "overall"), "count"));
    cJSON_Delete(plain);
    cJSON_Delete(sec);
    cJSON_Delete(kill);
}

/* (e) SIGTERM to the simulator mid-run: it stops its aggregator and
 * clients and exits 1; nothing started from the work directory survives. */
static void test_interrupt(void **state) {
    NEED_PROGRAMS();
    char *ini = write_fed("long.ini", "sites = 3\nrounds = 100000\npartition = iid\n", NULL);
    const char *wd = tmp_path("long-work"), *out = tmp_path("long.out");
    char *argv[] = {g_cohort, "simulate", "--config", ini, "--workdir", (char *)wd, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, g_cohort, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    /* until every client runs and the federation is under way */
    char marker[4096];
    snprintf(marker, sizeof marker, "%s/sites/site-1.db", wd);
    for (int i = 0; i < 600 && access(marker, F_OK); i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(access(marker, F_OK), 0);
    assert_true(process_with(wd, NULL));
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_int_equal(kill(pid, SIGTERM), 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    pid_t stray;
    if (process_with(wd, &stray)) fail_msg("process %d survived the simulator", (int)stray);
    free(ini);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_three_sites),
        cmocka_unit_test(test_credit5_matches_centralized),
        cmocka_unit_test(test_kill_site),
        cmocka_unit_test(test_secagg_matches_plain),
        cmocka_unit_test(test_interrupt),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
