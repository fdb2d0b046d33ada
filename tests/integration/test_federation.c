/* test_federation.c: a real federation on loopback (issue 3 acceptance;
 * DESIGN.md §1, §5, §6, §13): cohort-aggregator and cohort-client as child
 * processes with a throwaway PKI, the bundled credit data split over the
 * sites, and the aggregator's SQLite store read back for the verdict.
 *
 *  1. three sites, three rounds: every process exits 0, rounds 1..3 commit,
 *     accuracy >= 0.7 (this run is also the reference model for 3 and 5);
 *  2. refused connections: a certificate from another CA and a plaintext
 *     client fail the handshake (UNAVAILABLE, no handler runs); a revoked
 *     certificate, a site outside `sites =` and an operator certificate get
 *     PERMISSION_DENIED and an audit row 'refuse' naming them; a certificate
 *     revoked while the aggregator runs is refused from then on (the CRL
 *     file is watched and reloaded, audited 'crl'); and a site whose
 *     client.ini has a crl refuses an aggregator whose certificate is
 *     revoked, in the handshake, and stops with the reason;
 *  3. refused messages from a joined site: random bytes, a wrong-shape update,
 *     a NaN update, the replay of an accepted round-1 Submit in round 2 and of
 *     a round-2 Submit after it was accepted; each is refused with a reason
 *     naming the field, audited, and the committed models and metrics are
 *     bit-identical to the clean run;
 *  4. a site SIGKILLed in the middle of round 2 is recorded 'dropped' for
 *     round 2, which completes with the others;
 *  5. the aggregator SIGKILLed in the middle of round 2 and restarted with the
 *     same config ends with the same models as the uninterrupted run;
 *  6. a model above 64 MiB (mlp:4096,4096) travels in chunks both ways;
 *  7. chunked uploads spool to [aggregator] spool_dir: an upload whose chunks
 *     do not match its total_sha256 and a chunk sent twice are refused, the
 *     real upload is taken, nothing is left in the directory; the first
 *     chunk of an update sent while the federation evaluates is refused at
 *     once; a spool_dir that cannot be written stops the aggregator at start
 *     (exit 2).
 *  8. (last) a CRL about to expire is logged and audited by the aggregator
 *     at start, and a site warns in its log.
 *
 * Site 3 in cases 3 and 5 and site 1 in case 4 are played by this process
 * (ts_*: the same calls as client/agent.c on client/site.h), which is how the
 * bad messages are sent and how the kills land at a known point of a round
 * (the stage cannot end without that site's result). Its results are
 * bit-identical to a cohort-client's, so case 3 and 5 compare with case 1.
 * Every child is recorded and SIGKILLed in teardown; a watchdog does the same
 * if the binary hangs. Sanitizer reports in any child's log fail the test. */
#include "fedtest.h"
#include "testutil.h"

#include <dirent.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/site.h"
#include "crypto/pki.h"
#include "net/rpc.h"
#include "proto/wire.h"
#include "proto/wire_stats.h"

#define M_JOIN "/cohort.v1.Federation/Join"
#define M_POLL "/cohort.v1.Federation/PollTask"
#define M_SUBMIT "/cohort.v1.Federation/Submit"
#define M_FETCH "/cohort.v1.Federation/FetchChunk"

#define LEVELS                                                                                     \
    "Home = ignore,other,owner,parents,priv,rent\n"                                                \
    "Marital = divorced,married,separated,single,widow\n"                                          \
    "Records = no,yes\n"                                                                           \
    "Job = fixed,freelance,others,partime\n"

/* Limits against hangs only (sanitized builds are slow); nothing asserts
 * on time. */
#define START_MS 60000
#define RUN_MS 240000
#define BIG_RUN_MS 540000

#define MAX_ROUNDS 8

static char g_root[4096];    /* the per-process temporary directory */
static char g_pki[4200];     /* the federation's CA */
static char g_other[4200];   /* another CA */
static char g_data3[4200];   /* three sites, the whole credit data */
static char g_small[4200];   /* two sites, 200 rows each */
static char g_schema[4200];  /* credit.schema.ini + [levels] */
static char *g_ca_pem;       /* the federation CA certificate */
static char g_agg_log[4400]; /* the last aggregator started, for failure messages */

/* ---------------------------------------------------------------- paths */

static const char *pki_file(const char *dir, const char *name, const char *ext) {
    static char buf[8][4400];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s.%s", dir, name, ext);
    return buf[k];
}

static char *read_text(const char *path) {
    char *t = ft_read_file(path, NULL);
    if (!t) fail_msg("cannot read %s", path);
    return t;
}

/* The last ~3000 characters of a log, for failure messages (static). */
static const char *log_tail(const char *path) {
    static char buf[3100];
    size_t n = 0;
    char *t = ft_read_file(path, &n);
    if (!t) return "(no log)";
    snprintf(buf, sizeof buf, "%s", n > 3000 ? t + n - 3000 : t);
    free(t);
    return buf;
}

/* ------------------------------------------------------------------ db */

static sqlite3 *db_open(const char *path) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    return db;
}

/* One value of the first row of a query (printf format); the type asked
 * for. Missing file, table or row: *ok = 0. */
static sqlite3_value *q_value(sqlite3 **db, sqlite3_stmt **st, const char *path, const char *fmt,
                              va_list ap) {
    char sql[2048];
    vsnprintf(sql, sizeof sql, fmt, ap);
    *st = NULL;
    if (!(*db = db_open(path))) return NULL;
    if (sqlite3_prepare_v2(*db, sql, -1, st, NULL) != SQLITE_OK) return NULL;
    if (sqlite3_step(*st) != SQLITE_ROW) return NULL;
    return sqlite3_column_value(*st, 0);
}

static int64_t q_int(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int64_t q_int(const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sqlite3 *db;
    sqlite3_stmt *st;
    sqlite3_value *v = q_value(&db, &st, path, fmt, ap);
    va_end(ap);
    int64_t r = v && sqlite3_value_type(v) != SQLITE_NULL ? sqlite3_value_int64(v) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return r;
}

static double q_double(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static double q_double(const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sqlite3 *db;
    sqlite3_stmt *st;
    sqlite3_value *v = q_value(&db, &st, path, fmt, ap);
    va_end(ap);
    double r = v && sqlite3_value_type(v) != SQLITE_NULL ? sqlite3_value_double(v) : NAN;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return r;
}

/* malloc'd text or NULL. */
static char *q_text(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *q_text(const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sqlite3 *db;
    sqlite3_stmt *st;
    sqlite3_value *v = q_value(&db, &st, path, fmt, ap);
    va_end(ap);
    char *r = NULL;
    if (v && sqlite3_value_type(v) != SQLITE_NULL) {
        const char *t = (const char *)sqlite3_value_text(v);
        r = strdup(t ? t : "");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return r;
}

/* What a run committed, for comparing two runs bit for bit. */
typedef struct fed_result {
    int rounds; /* the last committed round */
    char sha[MAX_ROUNDS + 1][65];
    double loss[MAX_ROUNDS + 1], accuracy[MAX_ROUNDS + 1], auc[MAX_ROUNDS + 1];
    int64_t completed[MAX_ROUNDS + 1], dropped[MAX_ROUNDS + 1], examples[MAX_ROUNDS + 1];
} fed_result;

static void collect(fed_result *r, const char *db) {
    memset(r, 0, sizeof *r);
    r->rounds = (int)q_int(db, "SELECT max(round) FROM rounds");
    assert_true(r->rounds >= 0 && r->rounds <= MAX_ROUNDS);
    for (int k = 0; k <= r->rounds; k++) {
        char *sha = q_text(db, "SELECT hex(sha256) FROM models WHERE round = %d", k);
        if (!sha) fail_msg("%s: no model for round %d", db, k);
        snprintf(r->sha[k], sizeof r->sha[k], "%s", sha);
        free(sha);
        if (!k) continue;
        const char *m = "SELECT value FROM metrics WHERE round = %d AND name = '%s'";
        r->loss[k] = q_double(db, m, k, "loss");
        r->accuracy[k] = q_double(db, m, k, "accuracy");
        r->auc[k] = q_double(db, m, k, "auc");
        r->completed[k] = (int64_t)q_double(db, m, k, "completed");
        r->dropped[k] = (int64_t)q_double(db, m, k, "dropped");
        r->examples[k] = (int64_t)q_double(db, m, k, "eval_examples");
    }
}

static int same_double(double a, double b) {
    return (isnan(a) && isnan(b)) || !memcmp(&a, &b, sizeof a);
}

/* Models and the model-dependent metrics, bit for bit (the transport
 * figures, bytes and times, legitimately differ). */
static void assert_same_result(const fed_result *got, const fed_result *want, const char *what) {
    if (got->rounds != want->rounds)
        fail_msg("%s: %d rounds committed, the clean run committed %d", what, got->rounds,
                 want->rounds);
    for (int k = 0; k <= want->rounds; k++) {
        if (strcmp(got->sha[k], want->sha[k]))
            fail_msg("%s: round %d model %s, the clean run's is %s", what, k, got->sha[k],
                     want->sha[k]);
        if (!k) continue;
        if (!same_double(got->loss[k], want->loss[k]) ||
            !same_double(got->accuracy[k], want->accuracy[k]) ||
            !same_double(got->auc[k], want->auc[k]) || got->completed[k] != want->completed[k] ||
            got->dropped[k] != want->dropped[k] || got->examples[k] != want->examples[k])
            fail_msg("%s: round %d metrics differ: loss %.17g/%.17g accuracy %.17g/%.17g auc "
                     "%.17g/%.17g completed %lld/%lld dropped %lld/%lld examples %lld/%lld",
                     what, k, got->loss[k], want->loss[k], got->accuracy[k], want->accuracy[k],
                     got->auc[k], want->auc[k], (long long)got->completed[k],
                     (long long)want->completed[k], (long long)got->dropped[k],
                     (long long)want->dropped[k], (long long)got->examples[k],
                     (long long)want->examples[k]);
    }
}

/* ----------------------------------------------------------- processes */

typedef struct fed_opts {
    const char *sites; /* allow-list; default site-1,site-2,site-3 */
    int rounds, min_sites, join_timeout;
    double stage_timeout;
    const char *model;     /* default logreg */
    int fixed_port;        /* listen on this port instead of 0 (restarts keep it) */
    const char *extra;     /* appended to aggregator.ini (more sections) */
    const char *agg_extra; /* more [aggregator] keys ("key = value\n") */
    const char *agg_cert;  /* the aggregator's certificate name; default "aggregator" */
} fed_opts;

typedef struct fed {
    char dir[4300], ini[4400], db[4400], port_file[4400], agg_log[4400];
    int port, fixed_port;
    pid_t agg;
    pid_t cli[4];
    int n_logs;
    char logs[8][4400];
} fed;

static void fed_add_log(fed *F, const char *path) {
    for (int i = 0; i < F->n_logs; i++)
        if (!strcmp(F->logs[i], path)) return;
    if (F->n_logs < 8) snprintf(F->logs[F->n_logs++], sizeof F->logs[0], "%s", path);
}

static void fed_config(fed *F, const char *name, const fed_opts *o) {
    memset(F, 0, sizeof *F);
    snprintf(F->dir, sizeof F->dir, "%s/%s", g_root, name);
    assert_int_equal(ft_mkdirs(F->dir), 0);
    snprintf(F->ini, sizeof F->ini, "%s/aggregator.ini", F->dir);
    snprintf(F->db, sizeof F->db, "%s/aggregator.db", F->dir);
    snprintf(F->port_file, sizeof F->port_file, "%s/agg.port", F->dir);
    snprintf(F->agg_log, sizeof F->agg_log, "%s/aggregator.log", F->dir);
    F->fixed_port = o->fixed_port;
    assert_int_equal(
        ft_write_file(
            F->ini,
            "[aggregator]\n"
            "listen = 127.0.0.1:%d\n"
            "port_file = agg.port\n"
            "federation_id = fedtest\n"
            "db = aggregator.db\n"
            "ca = %s\ncrl = %s\ncert = %s\nkey = %s\n"
            "sites = %s\n"
            "join_timeout = %d\n"
            "stage_timeout = %g\n%s"
            "[federation]\nrounds = %d\nmin_sites = %d\n"
            "[model]\ntype = %s\n"
            "[train]\nlocal_epochs = 1\nbatch_size = 32\nlr = 0.1\n%s",
            o->fixed_port, pki_file(g_pki, "ca", "crt"), pki_file(g_pki, "ca", "crl"),
            pki_file(g_pki, o->agg_cert ? o->agg_cert : "aggregator", "crt"),
            pki_file(g_pki, o->agg_cert ? o->agg_cert : "aggregator", "key"),
            o->sites ? o->sites : "site-1,site-2,site-3", o->join_timeout ? o->join_timeout : 10,
            o->stage_timeout > 0 ? o->stage_timeout : 10.0, o->agg_extra ? o->agg_extra : "",
            o->rounds ? o->rounds : 3, o->min_sites ? o->min_sites : 2,
            o->model ? o->model : "logreg", o->extra ? o->extra : ""),
        0);
}

static void fed_start_aggregator(fed *F) {
    unlink(F->port_file);
    char bin[4200];
    snprintf(bin, sizeof bin, "%s", fl_test_bin("cohort-aggregator"));
    char *argv[] = {bin, "--config", F->ini, NULL};
    F->agg = ft_spawn(F->agg_log, argv);
    snprintf(g_agg_log, sizeof g_agg_log, "%s", F->agg_log);
    assert_true(F->agg > 0);
    fed_add_log(F, F->agg_log);
    F->port = ft_wait_port(F->port_file, F->agg, START_MS);
    if (F->port <= 0)
        fail_msg("the aggregator wrote no port file; its log:\n%s", log_tail(F->agg_log));
    if (F->fixed_port) assert_int_equal(F->port, F->fixed_port);
}

/* cohort-client for site-k on data_dir/site-k.csv. */
static pid_t fed_start_client(fed *F, int k, const char *data_dir) {
    char ini[4400], log[4400], name[32];
    snprintf(name, sizeof name, "site-%d", k);
    snprintf(ini, sizeof ini, "%s/client-%d.ini", F->dir, k);
    snprintf(log, sizeof log, "%s/client-%d.log", F->dir, k);
    assert_int_equal(ft_write_file(ini,
                                   "[client]\n"
                                   "aggregator = 127.0.0.1:%d\n"
                                   "ca = %s\ncrl = %s\ncert = %s\nkey = %s\n"
                                   "data = %s/site-%d.csv\n"
                                   "schema = %s\n"
                                   "state = %s/site-%d.db\n"
                                   "seed = %d\n"
                                   "device = cpu\n",
                                   F->port, pki_file(g_pki, "ca", "crt"),
                                   pki_file(g_pki, "ca", "crl"), pki_file(g_pki, name, "crt"),
                                   pki_file(g_pki, name, "key"), data_dir, k, g_schema, F->dir, k,
                                   k),
                     0);
    char bin[4200];
    snprintf(bin, sizeof bin, "%s", fl_test_bin("cohort-client"));
    char *argv[] = {bin, "--config", ini, NULL};
    pid_t pid = ft_spawn(log, argv);
    assert_true(pid > 0);
    fed_add_log(F, log);
    F->cli[k] = pid;
    return pid;
}

static const char *client_log(const fed *F, int k) {
    static char buf[4400];
    snprintf(buf, sizeof buf, "%s/client-%d.log", F->dir, k);
    return buf;
}

static const char *client_state(const fed *F, int k) {
    static char buf[4400];
    snprintf(buf, sizeof buf, "%s/site-%d.db", F->dir, k);
    return buf;
}

static void expect_exit(pid_t pid, int code, int timeout_ms, const char *what, const char *log) {
    int rc = ft_wait(pid, timeout_ms);
    if (rc == FT_TIMEOUT)
        fail_msg("%s still running after the limit; its log:\n%s", what, log_tail(log));
    if (rc != code)
        fail_msg("%s exited %d, expected %d; its log:\n%s", what, rc, code, log_tail(log));
}

/* Every log of the run, checked for sanitizer reports. */
static void fed_check_logs(const fed *F) {
    for (int i = 0; i < F->n_logs; i++) {
        char *rep = ft_sanitizer_report(F->logs[i]);
        if (rep) {
            char msg[2600];
            snprintf(msg, sizeof msg, "%s", rep);
            free(rep);
            fail_msg("sanitizer report in %s:\n%s", F->logs[i], msg);
        }
    }
}

static int64_t events(const fed *F, const char *where) {
    return q_int(F->db, "SELECT count(*) FROM events WHERE %s", where);
}

/* Polls sql (a count) on db until it is at least n, or fails. */
static void wait_count(const char *db, int64_t n, const char *sql, pid_t watch) {
    int64_t until = ft_now_ms() + RUN_MS;
    while (ft_now_ms() < until) {
        if (q_int(db, "%s", sql) >= n) return;
        if (watch > 0 && !ft_alive(watch))
            fail_msg("process %d exited while waiting for: %s", (int)watch, sql);
        ft_sleep_ms(5);
    }
    fail_msg("%s: gave up waiting for: %s", db, sql);
}

/* ------------------------------------------------- a site in this process */

enum { TS_BEFORE = 1, TS_ACCEPTED = 2 };

typedef struct tsite tsite;
/* Called before the site submits a TRAIN (delta set) or EVALUATE result
 * (TS_BEFORE), and after a Submit was accepted (TS_ACCEPTED, req = its
 * exact bytes). */
typedef void (*ts_hook)(tsite *ts, int when, const fl_wire_task *t, const float *delta, int64_t n,
                        const uint8_t *req, size_t len);

struct tsite {
    int k;
    fl_site site;
    fl_rpc_channel *ch;
    char fed[FL_WIRE_ID_LEN];
    uint8_t applied[32];
    int have_applied;
    uint8_t *model;
    size_t model_len;
    uint8_t model_sha[32];
    ts_hook hook;
    void *ctx;
    int joins;
};

/* The site open in this process: static, so that teardown can close it
 * after a failed assertion unwound the test's stack. */
static tsite g_site;
static tsite *g_ts;

static const fl_rpc_backoff TS_BACKOFF = {.max_attempts = 12, .base_ms = 50, .cap_ms = 1000};

static fl_rpc_channel *open_channel(int port, const char *ca_pem, const char *cert_path,
                                    const char *key_path) {
    char target[64], err[FL_ERR_LEN] = "";
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    char *cert = cert_path ? read_text(cert_path) : NULL;
    char *key = key_path ? read_text(key_path) : NULL;
    fl_rpc_channel *ch = NULL;
    int rc =
        fl_rpc_channel_new(&ch, target, ca_pem, cert, key, NULL, FL_WIRE_MAX_MESSAGE_BYTES, err);
    free(cert);
    if (key) sodium_memzero(key, strlen(key));
    free(key);
    if (rc) fail_msg("channel: %s", err);
    return ch;
}

static tsite *ts_open(int k, const char *data_dir, int port) {
    assert_null(g_ts);
    tsite *ts = &g_site;
    memset(ts, 0, sizeof *ts);
    ts->k = k;
    char csv[4400], name[32], err[FL_ERR_LEN] = "";
    snprintf(csv, sizeof csv, "%s/site-%d.csv", data_dir, k);
    snprintf(name, sizeof name, "site-%d", k);
    if (fl_site_open(&ts->site, csv, g_schema, 0.2, (uint64_t)k, FL_DEVICE_CPU, err))
        fail_msg("site %d: %s", k, err);
    g_ts = ts; /* from here on teardown closes it */
    ts->ch =
        open_channel(port, g_ca_pem, pki_file(g_pki, name, "crt"), pki_file(g_pki, name, "key"));
    return ts;
}

static void ts_close(tsite *ts) {
    fl_rpc_channel_free(ts->ch);
    fl_site_close(&ts->site);
    free(ts->model);
    memset(ts, 0, sizeof *ts);
    if (g_ts == ts) g_ts = NULL;
}

/* One call with the agent's retries on UNAVAILABLE; returns the status. */
static int ts_call(tsite *ts, const char *method, const uint8_t *req, size_t len,
                   int64_t timeout_ms, uint8_t **resp, size_t *resp_len, char details[512]) {
    int status = 0;
    uint8_t *r = NULL;
    size_t rl = 0;
    details[0] = 0;
    fl_rpc_unary_retry(ts->ch, method, req, len, timeout_ms, &TS_BACKOFF, &r, &rl, &status, details,
                       512, NULL);
    if (resp) {
        *resp = r;
        *resp_len = rl;
    } else {
        free(r);
    }
    return status;
}

static void ts_join(tsite *ts) {
    fl_wire_join j;
    memset(&j, 0, sizeof j);
    snprintf(j.agent_version, sizeof j.agent_version, "cohort-client/0.1");
    j.n_examples = (uint64_t)ts->site.n_train;
    j.n_features = (uint32_t)fl_site_features(&ts->site);
    j.n_classes = (uint32_t)fl_site_classes(&ts->site);
    uint8_t *req, *resp = NULL;
    size_t len, rlen;
    char err[FL_ERR_LEN] = "", details[512];
    assert_int_equal(fl_wire_pack_join(&req, &len, &j, err), FL_OK);
    int st = ts_call(ts, M_JOIN, req, len, 30000, &resp, &rlen, details);
    free(req);
    if (st != FL_RPC_OK) fail_msg("site %d: Join: %s: %s", ts->k, fl_rpc_status_name(st), details);
    fl_wire_join_response r;
    if (fl_wire_unpack_join_response(&r, resp, rlen, NULL, err)) fail_msg("JoinResponse: %s", err);
    free(resp);
    snprintf(ts->fed, sizeof ts->fed, "%s", r.federation_id);
    fl_wire_join_response_free(&r);
    ts->joins++;
}

/* Returns the status of the first failing call (OK when all went well). */
static int ts_fetch(tsite *ts, const fl_wire_task *t, char details[512]) {
    if (ts->model && !memcmp(ts->model_sha, t->model.sha256, 32)) return FL_RPC_OK;
    uint64_t total = t->model.total_bytes, at = 0;
    uint8_t *blob = malloc(total ? total : 1);
    assert_non_null(blob);
    char err[FL_ERR_LEN] = "";
    while (at < total) {
        fl_wire_fetch f;
        memset(&f, 0, sizeof f);
        snprintf(f.federation_id, sizeof f.federation_id, "%s", ts->fed);
        f.round = t->round;
        memcpy(f.sha256, t->model.sha256, 32);
        f.offset = at;
        f.max_bytes = FL_WIRE_CHUNK_BYTES;
        uint8_t *req, *resp = NULL;
        size_t len, rlen;
        assert_int_equal(fl_wire_pack_fetch(&req, &len, &f, err), FL_OK);
        int st = ts_call(ts, M_FETCH, req, len, 60000, &resp, &rlen, details);
        free(req);
        if (st != FL_RPC_OK) {
            free(blob);
            return st;
        }
        fl_wire_expect ex;
        memset(&ex, 0, sizeof ex);
        ex.fetch = &f;
        ex.total_bytes = total;
        fl_wire_chunk c;
        if (fl_wire_unpack_chunk(&c, resp, rlen, &ex, err)) fail_msg("Chunk: %s", err);
        free(resp);
        assert_true(c.len > 0);
        memcpy(blob + at, c.data, c.len);
        at += c.len;
        fl_wire_chunk_free(&c);
    }
    uint8_t h[32];
    crypto_hash_sha256(h, blob, total);
    assert_memory_equal(h, t->model.sha256, 32);
    free(ts->model);
    ts->model = blob;
    ts->model_len = total;
    memcpy(ts->model_sha, h, 32);
    return FL_RPC_OK;
}

static void ts_apply_totals(tsite *ts, const fl_wire_task *t) {
    char err[FL_ERR_LEN] = "";
    if (!t->has_totals) {
        assert_true(ts->have_applied);
        return;
    }
    double *v;
    int64_t n;
    if (fl_wire_stats_to_vector(&v, &n, &t->totals, err)) fail_msg("totals: %s", err);
    uint8_t h[32];
    crypto_hash_sha256(h, (const uint8_t *)v, (size_t)n * sizeof(double));
    if (!ts->have_applied || memcmp(h, ts->applied, 32)) {
        if (fl_site_encode(&ts->site, v, n, err)) fail_msg("encode: %s", err);
        memcpy(ts->applied, h, 32);
        ts->have_applied = 1;
    }
    free(v);
}

static void submit_base(fl_wire_submit *m, const tsite *ts, const fl_wire_task *t) {
    memset(m, 0, sizeof *m);
    snprintf(m->federation_id, sizeof m->federation_id, "%s", ts->fed);
    m->round = t->round;
    m->step = t->step;
    m->kind = t->kind;
    m->stage = fl_wire_task_stage(t->kind);
    m->n_chunks = 1;
}

static int ts_send(tsite *ts, const fl_wire_task *t, const fl_wire_submit *m, char details[512]) {
    uint8_t *req;
    size_t len;
    char err[FL_ERR_LEN] = "";
    if (fl_wire_pack_submit(&req, &len, m, err)) fail_msg("pack Submit: %s", err);
    int st = ts_call(ts, M_SUBMIT, req, len, 60000, NULL, NULL, details);
    if (st == FL_RPC_OK && ts->hook) ts->hook(ts, TS_ACCEPTED, t, NULL, 0, req, len);
    free(req);
    return st;
}

static int ts_stats(tsite *ts, const fl_wire_task *t, char details[512]) {
    char err[FL_ERR_LEN] = "";
    double *v;
    int64_t n;
    assert_int_equal(fl_site_stats(&v, &n, &ts->site, err), FL_OK);
    int nc = fl_site_n_cols(&ts->site);
    uint32_t *off = malloc(((size_t)nc + 1) * sizeof *off);
    assert_non_null(off);
    fl_site_level_offsets(&ts->site, off);
    fl_wire_submit m;
    submit_base(&m, ts, t);
    m.result = FL_WIRE_RESULT_STATS;
    assert_int_equal(fl_wire_stats_from_vector(&m.stats, v, n, (uint32_t)nc, off, err), FL_OK);
    free(v);
    free(off);
    int st = ts_send(ts, t, &m, details);
    fl_wire_stats_clear(&m.stats);
    return st;
}

/* Chunk k of an upload of delta (n values) whose whole has SHA-256 sha. */
static int ts_send_chunk(tsite *ts, const fl_wire_task *t, uint64_t upload_id,
                         const uint8_t sha[32], const float *delta, int64_t n, uint32_t k,
                         double loss, char details[512]) {
    fl_wire_submit m;
    submit_base(&m, ts, t);
    m.result = FL_WIRE_RESULT_TRAIN;
    uint64_t at = fl_wire_set_chunk(&m, (uint64_t)n, k, upload_id, sha, &m.train.n_update);
    m.train.update = (float *)delta + at;
    m.train.offset = at;
    m.train.n_examples = (uint64_t)ts->site.n_train;
    m.train.train_loss = loss >= 0 ? loss : 0.0;
    return ts_send(ts, t, &m, details);
}

static int ts_train(tsite *ts, const fl_wire_task *t, char details[512]) {
    char err[FL_ERR_LEN] = "";
    ts_apply_totals(ts, t);
    int st = ts_fetch(ts, t, details);
    if (st != FL_RPC_OK) return st;
    fl_train_config c;
    fl_train_config_default(&c);
    c.epochs = (int)t->train.local_epochs;
    c.batch_size = (int)t->train.batch_size;
    c.optimizer = t->train.optimizer == FL_WIRE_OPT_ADAM ? FL_OPT_ADAM : FL_OPT_SGD;
    c.lr = t->train.lr;
    c.momentum = t->train.momentum;
    c.weight_decay = t->train.weight_decay;
    c.prox_mu = t->train.prox_mu;
    c.seed = t->train.seed;
    float *delta;
    int64_t n;
    double loss;
    if (fl_site_train(&delta, &n, &loss, &ts->site, ts->model, ts->model_len, &c, err))
        fail_msg("train: %s", err);
    if (ts->hook) ts->hook(ts, TS_BEFORE, t, delta, n, NULL, 0);
    uint32_t chunks = fl_wire_chunk_count((uint64_t)n);
    uint8_t sha[32];
    crypto_hash_sha256(sha, (const uint8_t *)delta, (size_t)n * sizeof(float));
    uint64_t upload_id;
    randombytes_buf(&upload_id, sizeof upload_id);
    upload_id |= 1;
    for (uint32_t k = 0; k < chunks && st == FL_RPC_OK; k++)
        st = ts_send_chunk(ts, t, upload_id, sha, delta, n, k, loss, details);
    free(delta);
    return st;
}

static int ts_evaluate(tsite *ts, const fl_wire_task *t, char details[512]) {
    char err[FL_ERR_LEN] = "";
    ts_apply_totals(ts, t);
    int st = ts_fetch(ts, t, details);
    if (st != FL_RPC_OK) return st;
    fl_site_eval ev;
    if (fl_site_evaluate(&ev, &ts->site, ts->model, ts->model_len, (int)t->eval.n_bins, err))
        fail_msg("evaluate: %s", err);
    if (ts->hook) ts->hook(ts, TS_BEFORE, t, NULL, 0, NULL, 0);
    fl_wire_submit m;
    submit_base(&m, ts, t);
    m.result = FL_WIRE_RESULT_EVAL;
    m.eval.loss_sum = ev.loss_sum;
    m.eval.correct = (uint64_t)ev.correct;
    m.eval.count = (uint64_t)ev.count;
    if (ev.hist) {
        m.eval.n_hist = 2 * (uint32_t)ev.bins;
        m.eval.score_hist = ev.hist;
    }
    st = ts_send(ts, t, &m, details);
    fl_site_eval_free(&ev);
    return st;
}

/* Joins, then polls and works until TASK_DONE. A call answered
 * FAILED_PRECONDITION ("join first": the aggregator restarted) re-joins. */
static void ts_run(tsite *ts) {
    ts_join(ts);
    uint64_t last_round = 0;
    int64_t until = ft_now_ms() + RUN_MS;
    while (ft_now_ms() < until) {
        fl_wire_poll p;
        memset(&p, 0, sizeof p);
        snprintf(p.federation_id, sizeof p.federation_id, "%s", ts->fed);
        p.last_round_seen = last_round;
        uint8_t *req, *resp = NULL;
        size_t len, rlen;
        char err[FL_ERR_LEN] = "", details[512];
        assert_int_equal(fl_wire_pack_poll(&req, &len, &p, err), FL_OK);
        int st = ts_call(ts, M_POLL, req, len, 30000, &resp, &rlen, details);
        free(req);
        if (st == FL_RPC_FAILED_PRECONDITION) {
            ts_join(ts);
            continue;
        }
        if (st == FL_RPC_DEADLINE_EXCEEDED) continue;
        if (st != FL_RPC_OK)
            fail_msg("site %d: PollTask: %s: %s; the aggregator's log:\n%s", ts->k,
                     fl_rpc_status_name(st), details, log_tail(g_agg_log));
        fl_wire_expect ex;
        memset(&ex, 0, sizeof ex);
        ex.federation_id = ts->fed;
        fl_wire_task t;
        if (fl_wire_unpack_task(&t, resp, rlen, &ex, err)) fail_msg("Task: %s", err);
        free(resp);
        if (t.round > last_round) last_round = t.round;
        st = FL_RPC_OK;
        switch (t.kind) {
        case FL_WIRE_TASK_NONE:
            break;
        case FL_WIRE_TASK_DONE:
            fl_wire_task_free(&t);
            return;
        case FL_WIRE_TASK_STATS:
            st = ts_stats(ts, &t, details);
            break;
        case FL_WIRE_TASK_TRAIN:
            st = ts_train(ts, &t, details);
            break;
        case FL_WIRE_TASK_EVALUATE:
            st = ts_evaluate(ts, &t, details);
            break;
        default:
            fail_msg("unexpected task %s", fl_wire_task_kind_name((int)t.kind));
        }
        fl_wire_task_free(&t);
        if (st == FL_RPC_FAILED_PRECONDITION)
            ts_join(ts);
        else if (st != FL_RPC_OK && st != FL_RPC_INVALID_ARGUMENT)
            fail_msg("site %d: %s: %s; the aggregator's log:\n%s", ts->k, fl_rpc_status_name(st),
                     details, log_tail(g_agg_log));
    }
    fail_msg("site %d: the federation did not finish", ts->k);
}

/* ------------------------------------------------------------ fixtures */

static int group_setup(void **state) {
    (void)state;
    ft_watchdog(870); /* below ctest's TIMEOUT 900: never leave processes */
    if (sodium_init() < 0) return -1;
    snprintf(g_root, sizeof g_root, "%s", fl_test_tmpdir());
    snprintf(g_pki, sizeof g_pki, "%s/pki", g_root);
    snprintf(g_other, sizeof g_other, "%s/pki-other", g_root);
    snprintf(g_data3, sizeof g_data3, "%s/data3", g_root);
    snprintf(g_small, sizeof g_small, "%s/data-small", g_root);
    snprintf(g_schema, sizeof g_schema, "%s/site.schema.ini", g_root);
    char err[FL_ERR_LEN] = "";
    static const struct {
        const char *name;
        int role;
    } certs[] = {{"aggregator", FL_ROLE_AGGREGATOR},
                 {"site-1", FL_ROLE_CLIENT},
                 {"site-2", FL_ROLE_CLIENT},
                 {"site-3", FL_ROLE_CLIENT},
                 {"site-4", FL_ROLE_CLIENT},
                 {"site-9", FL_ROLE_CLIENT},
                 {"site-5", FL_ROLE_CLIENT},
                 {"op-1", FL_ROLE_OPERATOR},
                 {"aggregator-old", FL_ROLE_AGGREGATOR}};
    if (fl_pki_init(g_pki, "fedtest", 30, err) || fl_pki_init(g_other, "other", 30, err)) goto fail;
    for (size_t i = 0; i < sizeof certs / sizeof *certs; i++)
        if (fl_pki_issue(g_pki, certs[i].name, certs[i].role, 30, err)) goto fail;
    /* Revoked before any aggregator starts: it reads ca.crl at start. */
    if (fl_pki_revoke(g_pki, "site-4", err)) goto fail;
    /* An aggregator certificate revoked (a retired or stolen key): sites
     * with [client] crl refuse to talk to a server presenting it. */
    if (fl_pki_revoke(g_pki, "aggregator-old", err)) goto fail;
    /* A certificate with a federation site's name from a CA nobody trusts. */
    if (fl_pki_issue(g_other, "site-1", FL_ROLE_CLIENT, 30, err)) goto fail;
    char csv[4200];
    snprintf(csv, sizeof csv, "%s", fl_test_data("credit_data.csv"));
    char schema[4200];
    snprintf(schema, sizeof schema, "%s/../credit.schema.ini", COHORT_DATA_DIR);
    if (ft_mkdirs(g_data3) || ft_mkdirs(g_small) || ft_split_csv(csv, g_data3, 3, 0) ||
        ft_split_csv(csv, g_small, 2, 200) || ft_schema_with_levels(schema, g_schema, LEVELS)) {
        fprintf(stderr, "cannot write the site data under %s\n", g_root);
        return -1;
    }
    g_ca_pem = ft_read_file(pki_file(g_pki, "ca", "crt"), NULL);
    return g_ca_pem ? 0 : -1;
fail:
    fprintf(stderr, "pki: %s\n", err);
    return -1;
}

static int group_teardown(void **state) {
    (void)state;
    ft_kill_all();
    free(g_ca_pem);
    ft_watchdog(0);
    return 0;
}

static void *g_free_later; /* a test's buffer, freed by teardown */

/* Whatever happened in the test, no process outlives it. */
static int teardown(void **state) {
    (void)state;
    ft_kill_all();
    if (g_ts) ts_close(g_ts);
    free(g_free_later);
    g_free_later = NULL;
    return 0;
}

/* ---------------------------------------------- 1. the clean federation */

static fed_result g_ref;
static int g_have_ref;

/* Three cohort-client processes, three rounds; every process exits 0. */
static void clean_run(const char *name, fed_result *out, fed *F) {
    fed_opts o = {.rounds = 3};
    fed_config(F, name, &o);
    fed_start_aggregator(F);
    for (int k = 1; k <= 3; k++)
        fed_start_client(F, k, g_data3);
    for (int k = 1; k <= 3; k++)
        expect_exit(F->cli[k], 0, RUN_MS, "cohort-client", client_log(F, k));
    expect_exit(F->agg, 0, RUN_MS, "cohort-aggregator", F->agg_log);
    fed_check_logs(F);
    collect(out, F->db);
}

static const fed_result *reference(void) {
    if (!g_have_ref) {
        fed F;
        clean_run("reference", &g_ref, &F);
        g_have_ref = 1;
    }
    return &g_ref;
}

static void test_three_sites(void **state) {
    (void)state;
    fed F;
    fed_result r;
    clean_run("clean", &r, &F);
    assert_int_equal(r.rounds, 3);
    assert_int_equal(q_int(F.db, "SELECT count(*) FROM rounds WHERE round BETWEEN 1 AND 3"), 3);
    for (int k = 1; k <= 3; k++) {
        assert_int_equal(r.completed[k], 3);
        assert_int_equal(r.dropped[k], 0);
        assert_int_equal(q_int(F.db,
                               "SELECT count(*) FROM participation WHERE round = %d AND "
                               "status = 'completed'",
                               k),
                         3);
    }
    if (!(r.accuracy[3] >= 0.7)) fail_msg("final accuracy %.4f < 0.7", r.accuracy[3]);
    assert_true(r.auc[3] > 0.5);
    assert_int_equal(events(&F, "kind = 'done'"), 1);
    assert_int_equal(events(&F, "kind IN ('refuse', 'reject', 'dropout')"), 0);
    for (int k = 1; k <= 3; k++)
        assert_int_equal(
            q_int(client_state(&F, k), "SELECT count(*) FROM tasks WHERE kind = 'DONE'"), 1);
    /* Each site built the initial model itself from the federation's seed
     * (its SHA-256 matched the task's), so round 1 downloads only the new
     * model for evaluation. */
    for (int k = 1; k <= 3; k++) {
        char *log = read_text(client_log(&F, k));
        int built = strstr(log, "initial model built here") != NULL;
        free(log);
        if (!built)
            fail_msg("site %d downloaded the initial model:\n%s", k, log_tail(client_log(&F, k)));
    }
    g_ref = r;
    g_have_ref = 1;
}

/* ---------------------------------------------- 2. refused connections */

/* One Join, no retry: the status, details in det. */
static int join_once(int port, const char *ca_pem, const char *cert, const char *key,
                     char det[512]) {
    fl_rpc_channel *ch = open_channel(port, ca_pem, cert, key);
    fl_wire_join j;
    memset(&j, 0, sizeof j);
    snprintf(j.agent_version, sizeof j.agent_version, "fedtest");
    j.n_examples = 100;
    j.n_features = 26;
    j.n_classes = 2;
    uint8_t *req, *resp = NULL;
    size_t len, rlen = 0;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_wire_pack_join(&req, &len, &j, err), FL_OK);
    int status = -1;
    det[0] = 0;
    fl_rpc_unary(ch, M_JOIN, req, len, 10000, &resp, &rlen, &status, det, 512);
    free(req);
    free(resp);
    fl_rpc_channel_free(ch);
    return status;
}

/* A Join over a plaintext HTTP/2 channel (gRPC insecure credentials). */
static int plaintext_join(int port) {
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    grpc_init();
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(10000, GPR_TIMESPAN));
    grpc_slice method = grpc_slice_from_static_string(M_JOIN);
    grpc_call *c = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
                                            deadline, NULL);
    grpc_slice s = grpc_slice_from_static_string("");
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_byte_buffer *rb = NULL;
    grpc_metadata_array im, tm;
    grpc_metadata_array_init(&im);
    grpc_metadata_array_init(&tm);
    grpc_status_code st = GRPC_STATUS_OK;
    grpc_slice det;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &im;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &rb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &tm;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &det;
    int tag;
    assert_int_equal(grpc_call_start_batch(c, ops, 6, &tag, NULL), GRPC_CALL_OK);
    grpc_event ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    assert_null(rb);
    grpc_slice_unref(det);
    grpc_metadata_array_destroy(&im);
    grpc_metadata_array_destroy(&tm);
    grpc_byte_buffer_destroy(bb);
    grpc_call_unref(c);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    return (int)st;
}

static void test_refused_connections(void **state) {
    (void)state;
    fed F;
    fed_opts o = {.sites = "site-1,site-2,site-4,site-5", .rounds = 1, .join_timeout = 600};
    fed_config(&F, "refused", &o);
    fed_start_aggregator(&F);
    char det[512];
    int64_t before = events(&F, "kind = 'refuse'");
    assert_int_equal(before, 0);

    /* The control: an allow-listed site with a good certificate joins. */
    int st = join_once(F.port, g_ca_pem, pki_file(g_pki, "site-1", "crt"),
                       pki_file(g_pki, "site-1", "key"), det);
    if (st != FL_RPC_OK) fail_msg("valid site-1: %s: %s", fl_rpc_status_name(st), det);

    /* (a) The same name from another CA: the TLS handshake fails. */
    st = join_once(F.port, g_ca_pem, pki_file(g_other, "site-1", "crt"),
                   pki_file(g_other, "site-1", "key"), det);
    if (st != FL_RPC_UNAVAILABLE)
        fail_msg("another CA's certificate: %s (%s), expected UNAVAILABLE", fl_rpc_status_name(st),
                 det);

    /* (b) Revoked (listed in ca.crl), although in the allow-list. */
    st = join_once(F.port, g_ca_pem, pki_file(g_pki, "site-4", "crt"),
                   pki_file(g_pki, "site-4", "key"), det);
    if (st != FL_RPC_PERMISSION_DENIED || !strstr(det, "certificate refused"))
        fail_msg("revoked site-4: %s (%s), expected PERMISSION_DENIED", fl_rpc_status_name(st),
                 det);
    assert_int_equal(events(&F, "kind = 'refuse' AND site = 'site-4'"), 1);

    /* (c) A valid certificate for a site outside `sites =`. */
    st = join_once(F.port, g_ca_pem, pki_file(g_pki, "site-9", "crt"),
                   pki_file(g_pki, "site-9", "key"), det);
    if (st != FL_RPC_PERMISSION_DENIED || !strstr(det, "allow-list"))
        fail_msg("site-9: %s (%s), expected PERMISSION_DENIED naming the allow-list",
                 fl_rpc_status_name(st), det);
    assert_int_equal(
        events(&F, "kind = 'refuse' AND site = 'site-9' AND detail LIKE '%allow-list%'"), 1);

    /* An operator's certificate chains to the CA but is not a site's. */
    st = join_once(F.port, g_ca_pem, pki_file(g_pki, "op-1", "crt"), pki_file(g_pki, "op-1", "key"),
                   det);
    if (st != FL_RPC_PERMISSION_DENIED)
        fail_msg("operator op-1: %s (%s), expected PERMISSION_DENIED", fl_rpc_status_name(st), det);
    assert_int_equal(events(&F, "kind = 'refuse' AND site = 'op-1'"), 1);

    /* No client certificate at all. */
    st = join_once(F.port, g_ca_pem, NULL, NULL, det);
    if (st != FL_RPC_UNAVAILABLE)
        fail_msg("no client certificate: %s (%s), expected UNAVAILABLE", fl_rpc_status_name(st),
                 det);

    /* (d) Plaintext. */
    st = plaintext_join(F.port);
    if (st != FL_RPC_UNAVAILABLE)
        fail_msg("plaintext client: %s, expected UNAVAILABLE", fl_rpc_status_name(st));

    /* The handshake failures reached no handler: exactly the three refusals
     * above are in the audit log, and the one site joined. */
    assert_int_equal(events(&F, "kind = 'refuse'"), 3);
    assert_int_equal(events(&F, "kind = 'join' AND site = 'site-1'"), 1);
    assert_int_equal(events(&F, "site = 'site-1' AND kind <> 'join'"), 0);
    /* Every refusal is also in the aggregator's log. */
    char *log = read_text(F.agg_log);
    int logged = strstr(log, "site-4") && strstr(log, "site-9") && strstr(log, "op-1");
    free(log);
    if (!logged) fail_msg("refusals missing from the aggregator log:\n%s", log_tail(F.agg_log));

    /* (e) A certificate revoked while the aggregator runs: site-5 joins,
     * then `cohort pki revoke` re-signs ca.crl, and the aggregator refuses
     * site-5 from then on without a restart (it watches the CRL file). */
    st = join_once(F.port, g_ca_pem, pki_file(g_pki, "site-5", "crt"),
                   pki_file(g_pki, "site-5", "key"), det);
    if (st != FL_RPC_OK) fail_msg("site-5 before revocation: %s: %s", fl_rpc_status_name(st), det);
    char err[FL_ERR_LEN] = "";
    if (fl_pki_revoke(g_pki, "site-5", err)) fail_msg("revoke: %s", err);
    int64_t until = ft_now_ms() + 20000;
    do {
        ft_sleep_ms(200);
        st = join_once(F.port, g_ca_pem, pki_file(g_pki, "site-5", "crt"),
                       pki_file(g_pki, "site-5", "key"), det);
    } while (st == FL_RPC_OK && ft_now_ms() < until);
    if (st != FL_RPC_PERMISSION_DENIED || !strstr(det, "revoked"))
        fail_msg("site-5 after revocation: %s (%s), expected PERMISSION_DENIED naming the "
                 "revocation",
                 fl_rpc_status_name(st), det);
    assert_int_equal(events(&F, "kind = 'crl' AND detail LIKE '%reloaded%'"), 1);
    assert_int_equal(events(&F, "kind = 'refuse' AND site = 'site-5'"), 1);
    assert_true(ft_alive(F.agg));
    ft_kill(F.agg);
    fed_check_logs(&F);

    /* (f) The other way round: an aggregator presenting a revoked
     * certificate. A cohort-client with [client] crl (every client in these
     * tests has one) refuses it in the TLS handshake, sends nothing, and
     * stops at once with the reason instead of retrying. */
    fed G;
    fed_opts og = {.sites = "site-1,site-2", .rounds = 1, .agg_cert = "aggregator-old"};
    fed_config(&G, "revoked-aggregator", &og);
    fed_start_aggregator(&G);
    fed_start_client(&G, 1, g_data3);
    int rc = ft_wait(G.cli[1], 60000);
    if (rc == FT_TIMEOUT)
        fail_msg("the client is still running against a revoked aggregator:\n%s",
                 log_tail(client_log(&G, 1)));
    assert_int_equal(rc, 1);
    char *clog = read_text(client_log(&G, 1));
    int said = strstr(clog, "the aggregator's certificate is refused") && strstr(clog, "revoked");
    free(clog);
    if (!said) fail_msg("the client did not say why:\n%s", log_tail(client_log(&G, 1)));
    assert_int_equal(events(&G, "kind = 'join'"), 0);
    ft_kill(G.agg);
    fed_check_logs(&F);
}

/* ---------------------------------------------- 3. refused messages */

typedef struct bad_ctx {
    uint8_t *round1; /* the accepted round-1 TRAIN Submit, byte for byte */
    size_t round1_len;
    int sent_bad; /* the round-2 bad calls were made */
    int replayed; /* the accepted round-2 Submit was sent again */
    int status[6];
    char details[6][512];
} bad_ctx;

enum { BAD_BYTES, BAD_SHAPE, BAD_NAN, BAD_REPLAY, BAD_SECOND, BAD_N };
static const char *const BAD_NAMES[BAD_N] = {"random bytes", "wrong shape", "NaN update",
                                             "round-1 replay", "second round-2 submit"};

/* One Submit with these exact bytes, no retry. */
static int raw_submit(tsite *ts, const uint8_t *req, size_t len, char det[512]) {
    int status = -1;
    uint8_t *resp = NULL;
    size_t rlen = 0;
    det[0] = 0;
    fl_rpc_unary(ts->ch, M_SUBMIT, req, len, 10000, &resp, &rlen, &status, det, 512);
    free(resp);
    return status;
}

static void bad_hook(tsite *ts, int when, const fl_wire_task *t, const float *delta, int64_t n,
                     const uint8_t *req, size_t len) {
    bad_ctx *c = ts->ctx;
    if (t->kind != FL_WIRE_TASK_TRAIN) return;
    if (when == TS_ACCEPTED && t->round == 1 && !c->round1) {
        c->round1 = malloc(len);
        assert_non_null(c->round1);
        g_free_later = c->round1;
        memcpy(c->round1, req, len);
        c->round1_len = len;
        return;
    }
    if (when == TS_ACCEPTED && t->round == 2 && !c->replayed) {
        /* The same accepted bytes again: a second result for the task. */
        c->replayed = 1;
        c->status[BAD_SECOND] = raw_submit(ts, req, len, c->details[BAD_SECOND]);
        return;
    }
    if (when != TS_BEFORE || t->round != 2 || c->sent_bad) return;
    c->sent_bad = 1;
    assert_non_null(c->round1);
    char err[FL_ERR_LEN] = "";

    /* Random bytes (fixed seed): not a SubmitRequest. */
    uint8_t junk[256];
    uint32_t x = 0x9e3779b9u;
    for (size_t i = 0; i < sizeof junk; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk[i] = (uint8_t)x;
    }
    c->status[BAD_BYTES] = raw_submit(ts, junk, sizeof junk, c->details[BAD_BYTES]);

    /* A well-formed update of the wrong length. */
    fl_wire_submit m;
    submit_base(&m, ts, t);
    m.result = FL_WIRE_RESULT_TRAIN;
    m.train.update = (float *)delta;
    m.train.n_update = (uint64_t)n - 1;
    m.train.n_examples = (uint64_t)ts->site.n_train;
    uint8_t *buf;
    size_t blen;
    assert_int_equal(fl_wire_pack_submit(&buf, &blen, &m, err), FL_OK);
    c->status[BAD_SHAPE] = raw_submit(ts, buf, blen, c->details[BAD_SHAPE]);
    free(buf);

    /* A NaN: pack refuses one (a site never sends what the aggregator would
     * refuse), so pack a sentinel and overwrite its 4 bytes in the packed
     * repeated float field (little-endian IEEE, contiguous). */
    float *copy = malloc((size_t)n * sizeof(float));
    assert_non_null(copy);
    memcpy(copy, delta, (size_t)n * sizeof(float));
    const float sentinel = 1234567.125f;
    const int64_t at = n / 2;
    copy[at] = sentinel;
    m.train.update = copy;
    m.train.n_update = (uint64_t)n;
    float nan_value = NAN;
    copy[at] = nan_value;
    assert_int_equal(fl_wire_pack_submit(&buf, &blen, &m, err), FL_EINVAL); /* pack refuses NaN */
    copy[at] = sentinel;
    assert_int_equal(fl_wire_pack_submit(&buf, &blen, &m, err), FL_OK);
    uint8_t pat[4], nanb[4];
    memcpy(pat, &sentinel, 4);
    memcpy(nanb, &nan_value, 4);
    size_t hits = 0, where = 0;
    for (size_t i = 0; i + 4 <= blen; i++)
        if (!memcmp(buf + i, pat, 4)) {
            hits++;
            where = i;
        }
    assert_int_equal(hits, 1);
    memcpy(buf + where, nanb, 4);
    c->status[BAD_NAN] = raw_submit(ts, buf, blen, c->details[BAD_NAN]);
    free(buf);
    free(copy);

    /* The accepted round-1 update, byte for byte, during round 2. */
    c->status[BAD_REPLAY] = raw_submit(ts, c->round1, c->round1_len, c->details[BAD_REPLAY]);
}

static void test_refused_messages(void **state) {
    (void)state;
    const fed_result *ref = reference();
    fed F;
    fed_opts o = {.rounds = 3};
    fed_config(&F, "messages", &o);
    fed_start_aggregator(&F);
    fed_start_client(&F, 1, g_data3);
    fed_start_client(&F, 2, g_data3);
    bad_ctx c;
    memset(&c, 0, sizeof c);
    tsite *ts = ts_open(3, g_data3, F.port);
    ts->hook = bad_hook;
    ts->ctx = &c;
    ts_run(ts);
    ts_close(ts);
    for (int k = 1; k <= 2; k++)
        expect_exit(F.cli[k], 0, RUN_MS, "cohort-client", client_log(&F, k));
    expect_exit(F.agg, 0, RUN_MS, "cohort-aggregator", F.agg_log);
    fed_check_logs(&F);

    assert_true(c.sent_bad && c.replayed);
    /* Refused, each with a reason naming the field. */
    static const char *const want[BAD_N] = {"Submit", "Submit.train.update", "not finite",
                                            "Submit.round", "replay"};
    for (int i = 0; i < BAD_N; i++) {
        if (c.status[i] != FL_RPC_INVALID_ARGUMENT && c.status[i] != FL_RPC_FAILED_PRECONDITION)
            fail_msg("%s: %s (%s), expected INVALID_ARGUMENT or FAILED_PRECONDITION", BAD_NAMES[i],
                     fl_rpc_status_name(c.status[i]), c.details[i]);
        if (i != BAD_SECOND && !strstr(c.details[i], want[i]))
            fail_msg("%s: reason '%s' does not name '%s'", BAD_NAMES[i], c.details[i], want[i]);
    }
    /* The second submission of an accepted result is either a replay within
     * the TRAIN stage or a result for a stage that has moved on. */
    if (!strstr(c.details[BAD_SECOND], "replay") && !strstr(c.details[BAD_SECOND], "stage"))
        fail_msg("second round-2 submit: reason '%s'", c.details[BAD_SECOND]);
    /* Audited: the four malformed ones as 'reject' (wire validation), in
     * round 2, naming site-3; the replayed accepted result as 'refuse'. */
    assert_int_equal(events(&F, "kind = 'reject' AND site = 'site-3' AND round = 2"), 4);
    assert_int_equal(events(&F, "kind = 'reject' AND detail LIKE '%Submit.round%'"), 1);
    assert_int_equal(events(&F, "kind = 'reject' AND detail LIKE '%not finite%'"), 1);
    assert_int_equal(events(&F, "kind = 'reject' AND detail LIKE '%Submit.train.update%expected%'"),
                     1);
    assert_int_equal(events(&F, "kind = 'reject' AND site <> 'site-3'"), 0);
    assert_int_equal(events(&F, "kind = 'refuse' AND site = 'site-3' AND round = 2"), 1);
    /* And nothing changed: the same models and metrics as the clean run. */
    fed_result r;
    collect(&r, F.db);
    assert_same_result(&r, ref, "with refused messages");
    assert_int_equal(q_int(F.db, "SELECT count(*) FROM participation WHERE status <> 'completed'"),
                     0);
}

/* ---------------------------------------------- 4. a site killed */

typedef struct kill_site_ctx {
    fed *F;
    pid_t victim;
    int victim_k;
    int stopped, killed;
} kill_site_ctx;

/* Site 1 (this process) holds the round's progress: round 2 cannot begin
 * before site 1's round-1 evaluation, nor end TRAIN before its update. */
static void kill_site_hook(tsite *ts, int when, const fl_wire_task *t, const float *delta,
                           int64_t n, const uint8_t *req, size_t len) {
    (void)delta, (void)n, (void)req, (void)len;
    kill_site_ctx *c = ts->ctx;
    if (when != TS_BEFORE) return;
    if (t->kind == FL_WIRE_TASK_EVALUATE && t->round == 1 && !c->stopped) {
        /* The victim has finished round 1 (its evaluation is recorded):
         * freeze it before round 2 can begin. */
        wait_count(client_state(c->F, c->victim_k), 1,
                   "SELECT count(*) FROM tasks WHERE kind = 'EVALUATE' AND round = 1", c->victim);
        assert_int_equal(kill(c->victim, SIGSTOP), 0);
        c->stopped = 1;
    }
    if (t->kind == FL_WIRE_TASK_TRAIN && t->round == 2 && c->stopped && !c->killed) {
        /* Round 2's TRAIN stage is open and cannot close before this site
         * submits: the victim dies in the middle of the round. */
        assert_int_equal(
            q_int(client_state(c->F, c->victim_k), "SELECT count(*) FROM tasks WHERE round = 2"),
            0);
        ft_kill(c->victim);
        c->killed = 1;
    }
}

static void test_site_killed(void **state) {
    (void)state;
    fed F;
    fed_opts o = {.rounds = 2, .min_sites = 2, .stage_timeout = 3};
    fed_config(&F, "site-killed", &o);
    fed_start_aggregator(&F);
    fed_start_client(&F, 2, g_data3);
    pid_t victim = fed_start_client(&F, 3, g_data3);
    kill_site_ctx c = {.F = &F, .victim = victim, .victim_k = 3};
    tsite *ts = ts_open(1, g_data3, F.port);
    ts->hook = kill_site_hook;
    ts->ctx = &c;
    ts_run(ts);
    ts_close(ts);
    assert_true(c.killed);
    expect_exit(F.cli[2], 0, RUN_MS, "cohort-client site-2", client_log(&F, 2));
    expect_exit(F.agg, 0, RUN_MS, "cohort-aggregator", F.agg_log);
    fed_check_logs(&F);

    assert_int_equal(q_int(F.db, "SELECT count(*) FROM rounds WHERE round BETWEEN 1 AND 2"), 2);
    /* Round 1 had all three; in round 2 site 3 is dropped, the others
     * complete, and the round commits. */
    assert_int_equal(q_int(F.db, "SELECT count(*) FROM participation WHERE round = 1 AND "
                                 "status = 'completed'"),
                     3);
    char *st = q_text(F.db, "SELECT status FROM participation WHERE round = 2 AND site = 3");
    assert_non_null(st);
    assert_string_equal(st, "dropped");
    free(st);
    assert_int_equal(q_int(F.db, "SELECT count(*) FROM participation WHERE round = 2 AND "
                                 "site IN (1, 2) AND status = 'completed'"),
                     2);
    assert_int_equal(q_int(F.db, "SELECT n_completed FROM rounds WHERE round = 2"), 2);
    assert_int_equal(q_int(F.db, "SELECT n_dropped FROM rounds WHERE round = 2"), 1);
    assert_int_equal(events(&F, "kind = 'dropout' AND site = 'site-3' AND round = 2"), 1);
    double acc = q_double(F.db, "SELECT value FROM metrics WHERE round = 2 AND name = 'accuracy'");
    assert_true(acc >= 0.7);
}

/* ---------------------------------------------- 5. the aggregator killed */

typedef struct kill_agg_ctx {
    fed *F;
    int stopped, killed;
    int committed_at_kill;
} kill_agg_ctx;

/* Site 3 (this process) holds the rounds' progress. Site 2 is frozen before
 * round 2 begins, so its round-2 TRAIN task reaches it from the first
 * aggregator and its update goes to the second one (a site in the middle of
 * a task across the restart); site 1 has submitted its update before the
 * kill; site 3 submits after it. */
static void kill_agg_hook(tsite *ts, int when, const fl_wire_task *t, const float *delta, int64_t n,
                          const uint8_t *req, size_t len) {
    (void)delta, (void)n, (void)req, (void)len;
    kill_agg_ctx *c = ts->ctx;
    fed *F = c->F;
    if (when != TS_BEFORE) return;
    if (t->kind == FL_WIRE_TASK_EVALUATE && t->round == 1 && !c->stopped) {
        wait_count(client_state(F, 2), 1,
                   "SELECT count(*) FROM tasks WHERE kind = 'EVALUATE' AND round = 1", F->cli[2]);
        assert_int_equal(kill(F->cli[2], SIGSTOP), 0);
        c->stopped = 1;
    }
    if (t->kind == FL_WIRE_TASK_TRAIN && t->round == 2 && c->stopped && !c->killed) {
        wait_count(client_state(F, 1), 1,
                   "SELECT count(*) FROM tasks WHERE kind = 'TRAIN' AND round = 2", F->cli[1]);
        assert_int_equal(q_int(client_state(F, 2), "SELECT count(*) FROM tasks WHERE round = 2"),
                         0);
        ft_kill(F->agg);
        c->killed = 1;
        c->committed_at_kill = (int)q_int(F->db, "SELECT max(round) FROM rounds");
        fed_start_aggregator(F);
        assert_int_equal(kill(F->cli[2], SIGCONT), 0);
    }
}

static void test_aggregator_killed(void **state) {
    (void)state;
    const fed_result *ref = reference();
    fed F;
    int port = ft_free_port();
    assert_true(port > 0);
    fed_opts o = {.rounds = 3, .fixed_port = port};
    fed_config(&F, "aggregator-killed", &o);
    fed_start_aggregator(&F);
    fed_start_client(&F, 1, g_data3);
    fed_start_client(&F, 2, g_data3);
    kill_agg_ctx c = {.F = &F};
    tsite *ts = ts_open(3, g_data3, F.port);
    ts->hook = kill_agg_hook;
    ts->ctx = &c;
    ts_run(ts);
    int joins = ts->joins;
    ts_close(ts);
    assert_true(c.killed);
    assert_int_equal(c.committed_at_kill, 1); /* round 2 was in flight */
    assert_int_equal(joins, 2);               /* site 3 joined the restarted aggregator */
    for (int k = 1; k <= 2; k++)
        expect_exit(F.cli[k], 0, RUN_MS, "cohort-client", client_log(&F, k));
    expect_exit(F.agg, 0, RUN_MS, "restarted cohort-aggregator", F.agg_log);
    fed_check_logs(&F);
    /* The same models and metrics as the run that was never interrupted. */
    fed_result r;
    collect(&r, F.db);
    assert_same_result(&r, ref, "after the aggregator restart");
    assert_int_equal(events(&F, "kind = 'stage' AND round = 2 AND detail LIKE 'TRAIN%'"), 2);
    /* Site 2's update for the first aggregator's task was refused by the
     * second ("join first"); it joined again and trained round 2 anew. */
    assert_int_equal(q_int(client_state(&F, 2), "SELECT count(*) FROM tasks WHERE kind = 'TRAIN' "
                                                "AND round = 2 AND outcome = 'failed'"),
                     1);
    assert_int_equal(q_int(client_state(&F, 2), "SELECT count(*) FROM tasks WHERE kind = 'TRAIN' "
                                                "AND round = 2 AND outcome = 'submitted'"),
                     1);
}

/* With secure aggregation on, the aggregator SIGKILLed while round 2's
 * secure sum of updates waits for masked inputs, and restarted: the sites
 * join again, the round's secure sum starts over under a new session (the
 * old keys and shares are worthless to the new process), and the federation
 * finishes with an audit log that verifies. */
static void test_aggregator_killed_secagg(void **state) {
    (void)state;
    fed F;
    int port = ft_free_port();
    assert_true(port > 0);
    fed_opts o = {.rounds = 3, .fixed_port = port, .extra = "[secagg]\nenabled = true\n"};
    fed_config(&F, "aggregator-killed-secagg", &o);
    fed_start_aggregator(&F);
    for (int k = 1; k <= 3; k++)
        fed_start_client(&F, k, g_data3);
    wait_count(F.db, 1,
               "SELECT count(*) FROM events WHERE kind = 'stage' AND round = 2 AND "
               "detail LIKE 'MASKED_INPUT%'",
               F.agg);
    ft_kill(F.agg);
    int64_t committed = q_int(F.db, "SELECT max(round) FROM rounds");
    assert_int_equal(committed, 1);
    fed_start_aggregator(&F);
    for (int k = 1; k <= 3; k++)
        expect_exit(F.cli[k], 0, RUN_MS, "cohort-client", client_log(&F, k));
    expect_exit(F.agg, 0, RUN_MS, "restarted cohort-aggregator", F.agg_log);
    fed_check_logs(&F);
    assert_int_equal(q_int(F.db, "SELECT count(*) FROM rounds WHERE round BETWEEN 1 AND 3"), 3);
    for (int r = 1; r <= 3; r++)
        assert_int_equal(q_int(F.db, "SELECT n_completed FROM rounds WHERE round = %d", r), 3);
    /* round 2's secure sum of updates began twice: once per aggregator */
    assert_true(events(&F, "kind = 'secagg' AND round = 2 AND detail LIKE 'secure sum of "
                           "training updates:%'") >= 2);
    assert_true(q_double(F.db, "SELECT value FROM metrics WHERE round = 3 AND name = "
                               "'accuracy'") >= 0.7);
    char *argv[] = {(char *)fl_test_bin("cohort"), "verify", "--db", F.db, NULL};
    char bin[4200];
    snprintf(bin, sizeof bin, "%s", argv[0]);
    argv[0] = bin;
    fl_proc_result pr;
    assert_int_equal(fl_test_run(&pr, argv), 0);
    if (pr.exit_code) fail_msg("cohort verify: %s", pr.err);
    fl_proc_result_free(&pr);
}

/* ---------------------------------------------- 6. chunked transfers */

static void test_large_model(void **state) {
    (void)state;
    fed F;
    fed_opts o = {
        .sites = "site-1,site-2", .rounds = 1, .model = "mlp:4096,4096", .stage_timeout = 300};
    fed_config(&F, "large", &o);
    fed_start_aggregator(&F);
    fed_start_client(&F, 1, g_small);
    fed_start_client(&F, 2, g_small);
    for (int k = 1; k <= 2; k++)
        expect_exit(F.cli[k], 0, BIG_RUN_MS, "cohort-client", client_log(&F, k));
    expect_exit(F.agg, 0, BIG_RUN_MS, "cohort-aggregator", F.agg_log);
    fed_check_logs(&F);
    const int64_t mib64 = (int64_t)64 << 20;
    assert_int_equal(q_int(F.db, "SELECT count(*) FROM rounds WHERE round = 1"), 1);
    assert_int_equal(q_int(F.db, "SELECT n_completed FROM rounds WHERE round = 1"), 2);
    int64_t blob = q_int(F.db, "SELECT length(blob) FROM models WHERE round = 1");
    if (blob < mib64) fail_msg("the model is %lld bytes, below 64 MiB", (long long)blob);
    /* Both updates came up in chunks, and the models went down in chunks
     * (a message holds at most FL_WIRE_MAX_MESSAGE_BYTES). */
    double in = q_double(F.db, "SELECT value FROM metrics WHERE round = 1 AND name = 'bytes_in'");
    double out = q_double(F.db, "SELECT value FROM metrics WHERE round = 1 AND name = 'bytes_out'");
    assert_true(in >= 2.0 * (double)mib64);
    assert_true(out >= 2.0 * (double)mib64);
    assert_true(q_double(F.db, "SELECT value FROM metrics WHERE round = 1 AND name = 'n_params'") *
                    4 >=
                (double)mib64);
    assert_true(blob > (int64_t)FL_WIRE_MAX_MESSAGE_BYTES);
}

/* ------------------------------------ 7. chunked uploads, spooled */

enum { CH_TAMPERED, CH_TWICE, CH_UNEXPECTED, CH_N };

typedef struct chunk_ctx {
    int sent, sent_unexpected;
    int64_t n;
    uint32_t chunks;
    int status[CH_N], partial_ok;
    char details[CH_N][512];
} chunk_ctx;

/* Before its real round-1 update, site 2 (this process) sends two bad
 * uploads: one whose chunk 0 differs from what its total_sha256 covers
 * (refused at the last chunk, when the whole is checked), and one that
 * sends chunk 0 twice. Neither may reach the model. */
static void chunk_hook(tsite *ts, int when, const fl_wire_task *t, const float *delta, int64_t n,
                       const uint8_t *req, size_t len) {
    (void)req;
    (void)len;
    chunk_ctx *c = ts->ctx;
    if (when == TS_BEFORE && t->kind == FL_WIRE_TASK_EVALUATE && c->sent && !c->sent_unexpected) {
        /* The first chunk of an update while the federation evaluates:
         * refused at once, not after the whole upload is in. */
        c->sent_unexpected = 1;
        fl_wire_task as_train = *t;
        as_train.kind = FL_WIRE_TASK_TRAIN;
        float *zeros = calloc((size_t)c->n, sizeof(float));
        uint8_t sha[32];
        assert_non_null(zeros);
        crypto_hash_sha256(sha, (const uint8_t *)zeros, (size_t)c->n * sizeof(float));
        c->status[CH_UNEXPECTED] = ts_send_chunk(ts, &as_train, 0x3001, sha, zeros, c->n, 0, 0.5,
                                                 c->details[CH_UNEXPECTED]);
        free(zeros);
        return;
    }
    if (when != TS_BEFORE || t->kind != FL_WIRE_TASK_TRAIN || c->sent) return;
    c->sent = 1;
    c->n = n;
    c->chunks = fl_wire_chunk_count((uint64_t)n);
    if (c->chunks < 2) return;
    uint8_t sha[32];
    crypto_hash_sha256(sha, (const uint8_t *)delta, (size_t)n * sizeof(float));
    float *bad = malloc((size_t)n * sizeof(float));
    assert_non_null(bad);
    memcpy(bad, delta, (size_t)n * sizeof(float));
    bad[0] += 1.0f;
    char det[512];
    c->partial_ok = 1;
    for (uint32_t k = 0; k < c->chunks; k++) {
        int st = ts_send_chunk(ts, t, 0x1001, sha, bad, n, k, 0.5,
                               k + 1 < c->chunks ? det : c->details[CH_TAMPERED]);
        if (k + 1 < c->chunks)
            c->partial_ok &= st == FL_RPC_OK;
        else
            c->status[CH_TAMPERED] = st;
    }
    free(bad);
    c->partial_ok &= ts_send_chunk(ts, t, 0x2001, sha, delta, n, 0, 0.5, det) == FL_RPC_OK;
    c->status[CH_TWICE] = ts_send_chunk(ts, t, 0x2001, sha, delta, n, 0, 0.5, c->details[CH_TWICE]);
}

static void test_chunked_uploads(void **state) {
    (void)state;
    /* A spool directory that cannot take uploads stops the aggregator at
     * start, naming the key. */
    fed F;
    fed_opts bad = {
        .sites = "site-1,site-2", .rounds = 1, .agg_extra = "spool_dir = no/such/dir\n"};
    fed_config(&F, "chunked-bad", &bad);
    char bin[4200];
    snprintf(bin, sizeof bin, "%s", fl_test_bin("cohort-aggregator"));
    char *argv[] = {bin, "--config", F.ini, NULL};
    pid_t p = ft_spawn(F.agg_log, argv);
    assert_true(p > 0);
    expect_exit(p, 2, START_MS, "cohort-aggregator (bad spool_dir)", F.agg_log);
    if (!strstr(log_tail(F.agg_log), "spool_dir"))
        fail_msg("the error does not name spool_dir:\n%s", log_tail(F.agg_log));
    assert_int_equal(access(F.db, F_OK), -1); /* nothing half-written */

    /* mlp:1024,512 has about 550 K parameters: three chunks each way. */
    fed_opts o = {.sites = "site-1,site-2",
                  .rounds = 1,
                  .model = "mlp:1024,512",
                  .agg_extra = "spool_dir = spool\n"};
    fed_config(&F, "chunked", &o);
    char spool[4400];
    snprintf(spool, sizeof spool, "%s/spool", F.dir);
    assert_int_equal(ft_mkdirs(spool), 0);
    fed_start_aggregator(&F);
    fed_start_client(&F, 1, g_small);
    chunk_ctx c;
    memset(&c, 0, sizeof c);
    tsite *ts = ts_open(2, g_small, F.port);
    ts->hook = chunk_hook;
    ts->ctx = &c;
    ts_run(ts);
    ts_close(ts);
    expect_exit(F.cli[1], 0, RUN_MS, "cohort-client", client_log(&F, 1));
    expect_exit(F.agg, 0, RUN_MS, "cohort-aggregator", F.agg_log);
    fed_check_logs(&F);

    assert_true(c.sent);
    assert_true(c.chunks >= 3);
    assert_true(c.partial_ok); /* chunks are taken until the whole is known */
    assert_int_equal(c.status[CH_TAMPERED], FL_RPC_INVALID_ARGUMENT);
    if (!strstr(c.details[CH_TAMPERED], "Submit.total_sha256"))
        fail_msg("tampered upload: reason '%s'", c.details[CH_TAMPERED]);
    assert_int_equal(c.status[CH_TWICE], FL_RPC_INVALID_ARGUMENT);
    if (!strstr(c.details[CH_TWICE], "received twice"))
        fail_msg("repeated chunk: reason '%s'", c.details[CH_TWICE]);
    assert_true(c.sent_unexpected);
    assert_true(c.status[CH_UNEXPECTED] != FL_RPC_OK);
    if (!strstr(c.details[CH_UNEXPECTED], "does not match stage EVALUATE"))
        fail_msg("chunk during EVALUATE: reason '%s'", c.details[CH_UNEXPECTED]);
    assert_int_equal(events(&F, "kind = 'refuse' AND site = 'site-2' AND detail LIKE "
                                "'%does not match stage EVALUATE%'"),
                     1);
    assert_int_equal(events(&F, "kind = 'reject' AND site = 'site-2' AND detail LIKE "
                                "'%total_sha256%'"),
                     1);
    /* The real upload that followed was taken, and the round committed with
     * both sites' updates. */
    assert_int_equal(q_int(F.db, "SELECT n_completed FROM rounds WHERE round = 1"), 2);
    /* Uploads leave nothing behind in the spool directory. */
    DIR *d = opendir(spool);
    assert_non_null(d);
    struct dirent *e;
    int left = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) left++;
    closedir(d);
    assert_int_equal(left, 0);
}

/* ---------------------------------------------- 8. expiry, seen coming */

/* A CRL re-signed to expire in 3 days: the aggregator logs and audits it at
 * start ('expiry', naming the file and the fix), and a site warns in its
 * log. Runs last: it shortens the shared CRL. */
static void test_expiry_warning(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    if (fl_pki_crl_update(g_pki, 3, err)) fail_msg("crl: %s", err);
    fed F;
    fed_opts o = {.sites = "site-1,site-2", .rounds = 1, .join_timeout = 600};
    fed_config(&F, "expiry", &o);
    fed_start_aggregator(&F);
    fed_start_client(&F, 1, g_data3);
    wait_count(F.db, 1, "SELECT count(*) FROM events WHERE kind = 'join'", F.agg);
    assert_int_equal(events(&F, "kind = 'expiry' AND detail LIKE 'the CRL (%ca.crl) expires in "
                                "%cohort pki crl%'"),
                     1);
    /* This PKI's certificates and CA were made for 30 days: within the
     * 30-day window too. */
    assert_int_equal(events(&F, "kind = 'expiry' AND detail LIKE 'the aggregator''s certificate "
                                "(%aggregator.crt) expires in %cohort pki issue%'"),
                     1);
    assert_int_equal(events(&F, "kind = 'expiry' AND detail LIKE 'the federation CA (%ca.crt)%'"),
                     1);
    assert_int_equal(events(&F, "kind = 'expiry'"), 3);
    char *clog = read_text(client_log(&F, 1));
    int warned = strstr(clog, "the CRL (") && strstr(clog, "expires in");
    free(clog);
    if (!warned) fail_msg("the site did not warn:\n%s", log_tail(client_log(&F, 1)));
    ft_kill(F.cli[1]);
    ft_kill(F.agg);
    fed_check_logs(&F);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_three_sites, teardown),
        cmocka_unit_test_teardown(test_refused_connections, teardown),
        cmocka_unit_test_teardown(test_refused_messages, teardown),
        cmocka_unit_test_teardown(test_site_killed, teardown),
        cmocka_unit_test_teardown(test_aggregator_killed, teardown),
        cmocka_unit_test_teardown(test_aggregator_killed_secagg, teardown),
        cmocka_unit_test_teardown(test_chunked_uploads, teardown),
        cmocka_unit_test_teardown(test_large_model, teardown),
        cmocka_unit_test_teardown(test_expiry_warning, teardown),
    };
    /* FEDTEST_FILTER=test_site_killed runs one case (cases 3 and 5 then run
     * their own clean reference). */
    if (getenv("FEDTEST_FILTER")) cmocka_set_test_filter(getenv("FEDTEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
