/* test_audit.c: the tamper-evident audit log (aggregator/store.h writes it,
 * aggregator/audit.h checks it; docs/audit.md). A log written through the
 * store with a real aggregator key verifies, also against the federation CA;
 * every kind of tampering is found and its first bad row named: an edited
 * event (each field, with the append-only triggers dropped), an edit whose
 * hashes were recomputed down the chain (caught by the signed chain heads), a
 * deleted row (first, middle, end), a swapped pair, a forged model or chain
 * head signature, an altered model, a removed chain head, a changed
 * federation id or configuration. Store side: the triggers, the federation
 * binding, a key that is not the certificate's, a certificate swap after
 * signing, config / config_change events, the fairness table, a database from
 * before the chain. Verifier errors: missing file, not a database, another
 * CA, a certificate of the wrong role, an unsigned log. */
#include "testutil.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator/audit.h"
#include "aggregator/store.h"
#include "crypto/pki.h"

#define FED "fed-audit"

#define assert_ok(rc, err)                                                                         \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_) fail_msg("rc %d (%s): %s", rc_, fl_strerror(rc_), (err));                         \
    } while (0)

static char g_pki[1024], g_pki2[1024];

static const char *pki_file(const char *dir, const char *name) {
    static char buf[8][1100];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 1100, "%s/%s", dir, name);
    return b;
}

/* Two throwaway CAs: the federation's (an aggregator and a site) and another
 * one with an aggregator of its own. */
static int setup(void **state) {
    (void)state;
    char err[FL_ERR_LEN];
    snprintf(g_pki, sizeof g_pki, "%s/pki", fl_test_tmpdir());
    snprintf(g_pki2, sizeof g_pki2, "%s/pki-other", fl_test_tmpdir());
    if (fl_pki_init(g_pki, FED, 30, err) ||
        fl_pki_issue(g_pki, "aggregator", FL_ROLE_AGGREGATOR, 30, err) ||
        fl_pki_issue(g_pki, "site-1", FL_ROLE_CLIENT, 30, err) ||
        fl_pki_init(g_pki2, "other", 30, err) ||
        fl_pki_issue(g_pki2, "aggregator", FL_ROLE_AGGREGATOR, 30, err)) {
        fprintf(stderr, "pki: %s\n", err);
        return -1;
    }
    return 0;
}

static fl_signer *g_signer; /* borrowed by the open store */
static char *g_cert;

/* Opens a store bound to FED, signing with the named PKI's aggregator
 * (dir NULL: unsigned). */
static fl_store *open_store(const char *path, const char *dir) {
    char err[FL_ERR_LEN] = "";
    fl_store *st;
    assert_ok(fl_store_open(&st, path, err), err);
    assert_ok(fl_store_set_federation(st, FED, err), err);
    if (dir) {
        size_t len;
        fl_signer_free(g_signer);
        free(g_cert);
        assert_ok(fl_signer_new(&g_signer, pki_file(dir, "aggregator.key"), err), err);
        g_cert = fl_test_slurp(pki_file(dir, "aggregator.crt"), &len);
        assert_ok(fl_store_set_signer(st, g_signer, g_cert, len, err), err);
    }
    return st;
}

static void close_store(fl_store *st) {
    fl_store_close(st);
    fl_signer_free(g_signer);
    g_signer = NULL;
    free(g_cert);
    g_cert = NULL;
}

static void commit(fl_store *st, int round, const char *model) {
    char err[FL_ERR_LEN] = "";
    fl_metric m[] = {{"accuracy", 0.5 + round / 10.0}};
    fl_participation p[] = {{1, "completed", NULL, 100, 0.1}};
    fl_round_record r = {.round = round,
                         .seed = 7,
                         .model = (const uint8_t *)model,
                         .model_len = strlen(model),
                         .metrics = m,
                         .n_metrics = 1,
                         .parts = p,
                         .n_parts = round ? 1 : 0};
    assert_ok(fl_store_commit_round(st, &r, err), err);
}

/* A small federation's log: config, joins, three rounds with their stages
 * and commits, the end, and a final checkpoint. Returns the path (static). */
static const char *make_db(const char *name, int sign) {
    static char path[1100];
    char err[FL_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/%s.db", fl_test_tmpdir(), name);
    remove(path);
    fl_store *st = open_store(path, sign ? g_pki : NULL);
    static const char ini[] = "[aggregator]\nfederation_id = " FED "\n";
    assert_ok(fl_store_record_config(st, ini, sizeof ini - 1, err), err);
    assert_ok(fl_store_event(st, "join", "site-1", 0, "100 training examples", err), err);
    assert_ok(fl_store_event(st, "join", "site-2", 0, NULL, err), err);
    commit(st, 0, "model-0");
    for (int r = 1; r <= 2; r++) {
        char m[32];
        assert_ok(fl_store_event(st, "stage", NULL, r, "TRAIN", err), err);
        assert_ok(fl_store_event(st, "dropout", "site-2", r, "deadline", err), err);
        snprintf(m, sizeof m, "model-%d", r);
        commit(st, r, m);
        assert_ok(fl_store_event(st, "commit", NULL, r, "model", err), err);
    }
    assert_ok(fl_store_event(st, "done", NULL, 2, "2 rounds", err), err);
    assert_ok(fl_store_checkpoint(st, 2, err), err);
    close_store(st);
    return path;
}
/* make_db's shape: 1 config, 2 joins, round 1 and 2 with stage, dropout,
 * commit each, done: 10 events; 3 models; chain heads at 3 commits + the
 * checkpoint. */
#define N_EVENTS 10
#define N_SIGS (3 + 4)

static void sql(const char *path, const char *q) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, q, NULL, NULL, &msg) != SQLITE_OK) fail_msg("%s: %s", q, msg);
    sqlite3_close(db);
}

/* Runs q and returns SQLite's error message ("" on success; static). */
static const char *sql_err(const char *path, const char *q) {
    static char buf[256];
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    buf[0] = 0;
    if (sqlite3_exec(db, q, NULL, NULL, &msg) != SQLITE_OK)
        snprintf(buf, sizeof buf, "%s", msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(db);
    return buf;
}

/* Flips one byte in the middle of a blob, keeping it a blob of the same
 * length: what a bit error or a careless forger leaves. */
static void flip_byte(const char *path, const char *table, const char *col, const char *where) {
    sqlite3 *db;
    sqlite3_stmt *s;
    char q[256];
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    snprintf(q, sizeof q, "SELECT %s FROM %s WHERE %s", col, table, where);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int n = sqlite3_column_bytes(s, 0);
    assert_true(n > 20);
    uint8_t buf[256];
    memcpy(buf, sqlite3_column_blob(s, 0), (size_t)n);
    sqlite3_finalize(s);
    buf[n / 2] ^= 0x01;
    snprintf(q, sizeof q, "UPDATE %s SET %s = ?1 WHERE %s", table, col, where);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &s, NULL), SQLITE_OK);
    sqlite3_bind_blob(s, 1, buf, n, SQLITE_TRANSIENT);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    sqlite3_close(db);
}

#define NO_TRIGGERS                                                                                \
    "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete; "                               \
    "DROP TRIGGER chain_heads_no_update; DROP TRIGGER chain_heads_no_delete;"

static fl_audit_report verify(const char *path, const char *ca, int flags) {
    fl_audit_report r;
    char err[FL_ERR_LEN] = "";
    assert_ok(fl_audit_verify_ex(&r, path, ca, flags, err), err);
    return r;
}

/* The check fails at table/id with a reason containing sub. */
static void expect_bad(const char *path, const char *table, int64_t id, const char *sub) {
    fl_audit_report r = verify(path, NULL, 0);
    if (r.ok) fail_msg("%s: verified, expected %s row %lld: %s", path, table, (long long)id, sub);
    if (strcmp(r.table, table) || r.first_bad_id != id || !strstr(r.reason, sub))
        fail_msg("%s: got %s row %lld: '%s'; expected %s row %lld: '%s'", path, r.table,
                 (long long)r.first_bad_id, r.reason, table, (long long)id, sub);
}

static void test_untouched_log_verifies(void **state) {
    (void)state;
    const char *path = make_db("clean", 1);
    fl_audit_report r = verify(path, NULL, 0);
    assert_true(r.ok);
    assert_int_equal(r.n_events, N_EVENTS);
    assert_int_equal(r.n_signatures, N_SIGS);
    assert_int_equal(r.first_bad_id, -1);
    assert_string_equal(r.reason, "");
    /* head: the last row's hash, as stored */
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT hex(hash) FROM events WHERE id = 10", -1, &s, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    char want[65];
    snprintf(want, sizeof want, "%s", (const char *)sqlite3_column_text(s, 0));
    for (char *p = want; *p; p++)
        if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
    assert_string_equal(r.head, want);
    sqlite3_finalize(s);
    sqlite3_close(db);
    /* the plain API agrees, and so does the CA check */
    char err[FL_ERR_LEN] = "";
    assert_ok(fl_audit_verify(&r, path, pki_file(g_pki, "ca.crt"), err), err);
    assert_true(r.ok);
    /* a verifier never writes: the file still verifies after a second run */
    assert_ok(fl_audit_verify(&r, path, NULL, err), err);
    assert_true(r.ok);
}

static void test_triggers_refuse_update_and_delete(void **state) {
    (void)state;
    const char *path = make_db("triggers", 1);
    assert_non_null(
        strstr(sql_err(path, "UPDATE events SET detail = 'x' WHERE id = 2"), "append-only"));
    assert_non_null(strstr(sql_err(path, "DELETE FROM events WHERE id = 10"), "append-only"));
    assert_non_null(
        strstr(sql_err(path, "UPDATE chain_heads SET round = 9 WHERE id = 1"), "append-only"));
    assert_non_null(strstr(sql_err(path, "DELETE FROM chain_heads"), "append-only"));
    assert_true(verify(path, NULL, 0).ok);
}

/* Each field of a row, edited with the triggers dropped: that row is named. */
static void test_edited_row(void **state) {
    (void)state;
    static const struct {
        const char *set, *sub;
    } edits[] = {
        {"at = '2000-01-01T00:00:00.000Z'", "hash does not match its contents"},
        {"kind = 'joined'", "hash does not match its contents"},
        {"site = 'site-9'", "hash does not match its contents"},
        {"site = NULL", "hash does not match its contents"},
        {"round = round + 1", "hash does not match its contents"},
        {"detail = '1000 training examples'", "hash does not match its contents"},
        {"detail = NULL", "hash does not match its contents"},
        {"hash = randomblob(32)", "hash does not match its contents"},
        {"prev_hash = randomblob(32)", "prev_hash does not match the hash of row 1"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        const char *path = make_db("edited", 1);
        char q[512];
        snprintf(q, sizeof q, NO_TRIGGERS "UPDATE events SET %s WHERE id = 2", edits[i].set);
        sql(path, q);
        expect_bad(path, "events", 2, edits[i].sub);
    }
    /* "" and NULL differ in the encoding (row 3's detail is NULL) */
    const char *path = make_db("edited-empty", 1);
    sql(path, NO_TRIGGERS "UPDATE events SET detail = '' WHERE id = 3");
    expect_bad(path, "events", 3, "events row 3: hash does not match its contents");
}

/* An attacker without the key edits row 4 and recomputes every hash after
 * it: the chain is consistent again, but the signed heads are not. */
static void test_rewritten_chain(void **state) {
    (void)state;
    const char *path = make_db("rewritten", 1);
    sql(path, NO_TRIGGERS "UPDATE events SET detail = 'forged' WHERE id = 4");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    uint8_t prev[32];
    for (int id = 4; id <= N_EVENTS; id++) {
        sqlite3_stmt *s, *u;
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT at, kind, site, round, detail, prev_hash FROM "
                                            "events WHERE id = ?1",
                                            -1, &s, NULL),
                         SQLITE_OK);
        sqlite3_bind_int(s, 1, id);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        if (id == 4) memcpy(prev, sqlite3_column_blob(s, 5), 32);
        const char *at = (const char *)sqlite3_column_text(s, 0),
                   *kind = (const char *)sqlite3_column_text(s, 1),
                   *site = (const char *)sqlite3_column_text(s, 2),
                   *detail = (const char *)sqlite3_column_text(s, 4);
        uint8_t h[32];
        fl_audit_event_hash(h, id, at, strlen(at), kind, strlen(kind), site,
                            site ? strlen(site) : 0, sqlite3_column_int64(s, 3), detail,
                            detail ? strlen(detail) : 0, prev);
        sqlite3_finalize(s);
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE "
                                            "id = ?3",
                                            -1, &u, NULL),
                         SQLITE_OK);
        sqlite3_bind_blob(u, 1, prev, 32, SQLITE_TRANSIENT);
        sqlite3_bind_blob(u, 2, h, 32, SQLITE_TRANSIENT);
        sqlite3_bind_int(u, 3, id);
        assert_int_equal(sqlite3_step(u), SQLITE_DONE);
        sqlite3_finalize(u);
        memcpy(prev, h, 32);
    }
    sqlite3_close(db);
    /* round 0's head covers events 1..3 and still matches; round 1's covers
     * event 4 onwards (chain_heads row 2) */
    expect_bad(path, "chain_heads", 2, "head does not match the recomputed chain at events row 5");
}

static void test_deleted_row(void **state) {
    (void)state;
    const char *path = make_db("deleted-mid", 1);
    sql(path, NO_TRIGGERS "DELETE FROM events WHERE id = 4");
    expect_bad(path, "events", 5, "events row 5: follows row 3: row 4 is missing");

    path = make_db("deleted-two", 1);
    sql(path, NO_TRIGGERS "DELETE FROM events WHERE id IN (4, 5)");
    expect_bad(path, "events", 6, "rows 4..5 are missing");

    path = make_db("deleted-first", 1);
    sql(path, NO_TRIGGERS "DELETE FROM events WHERE id = 1");
    expect_bad(path, "events", 2, "the log starts here: row 1 is missing");

    /* renumbering after the deletion only moves the break to a link */
    path = make_db("deleted-renumbered", 1);
    sql(path, NO_TRIGGERS "DELETE FROM events WHERE id = 4; UPDATE events SET id = id - 1 "
                          "WHERE id > 4");
    expect_bad(path, "events", 4, "prev_hash does not match the hash of row 3");

    /* the end, after the last signed head: the head names a row that is gone */
    path = make_db("deleted-tail", 1);
    sql(path, NO_TRIGGERS "DELETE FROM events WHERE id = 10");
    expect_bad(path, "chain_heads", 4, "but the log ends at row 9");
}

static void test_reordered_pair(void **state) {
    (void)state;
    /* whole rows (every column but the id) swapped */
    const char *path = make_db("swapped", 1);
    sql(path, NO_TRIGGERS
        "CREATE TEMP TABLE t AS SELECT * FROM events WHERE id IN (5, 6);"
        "UPDATE events SET (at, kind, site, round, detail, prev_hash, hash) = (SELECT at, kind, "
        "site, round, detail, prev_hash, hash FROM t WHERE t.id = 11 - events.id) WHERE id IN "
        "(5, 6);");
    expect_bad(path, "events", 5, "prev_hash does not match the hash of row 4");
    /* only the contents swapped, the hashes left in place */
    path = make_db("swapped-contents", 1);
    sql(path, NO_TRIGGERS
        "CREATE TEMP TABLE t AS SELECT * FROM events WHERE id IN (5, 6);"
        "UPDATE events SET (at, kind, site, round, detail) = (SELECT at, kind, site, round, "
        "detail FROM t WHERE t.id = 11 - events.id) WHERE id IN (5, 6);");
    expect_bad(path, "events", 5, "hash does not match its contents");
}

static void test_forged_signatures(void **state) {
    (void)state;
    const char *path = make_db("forged-model", 1);
    flip_byte(path, "models", "signature", "round = 1");
    expect_bad(path, "models", 1, "models round 1: signature does not verify");

    path = make_db("forged-head", 1);
    sql(path, NO_TRIGGERS);
    flip_byte(path, "chain_heads", "signature", "id = 3");
    expect_bad(path, "chain_heads", 3, "chain_heads row 3: signature does not verify");

    /* a valid signature moved to another round */
    path = make_db("moved-signature", 1);
    sql(path, "UPDATE models SET signature = (SELECT signature FROM models WHERE round = 2) "
              "WHERE round = 1");
    expect_bad(path, "models", 1, "signature does not verify");

    /* a signature removed */
    path = make_db("stripped", 1);
    sql(path, "UPDATE models SET signature = NULL WHERE round = 2");
    expect_bad(path, "models", 2, "models round 2: not signed");

    /* a chain head removed: the round committed with it has none */
    path = make_db("head-removed", 1);
    sql(path, NO_TRIGGERS "DELETE FROM chain_heads WHERE id = 4; DELETE FROM chain_heads WHERE "
                          "id = 3");
    expect_bad(path, "models", 2, "no signed chain head was committed with it");
    path = make_db("head-removed-mid", 1);
    sql(path, NO_TRIGGERS "DELETE FROM chain_heads WHERE id = 2");
    expect_bad(path, "chain_heads", 3, "follows row 1");
}

static void test_model_altered(void **state) {
    (void)state;
    const char *path = make_db("model-blob", 1);
    sql(path, "UPDATE models SET blob = CAST('model-X' AS BLOB) WHERE round = 2");
    expect_bad(path, "models", 2, "models round 2: blob does not match its SHA-256");
    /* blob and SHA-256 replaced together: the signature no longer fits */
    path = make_db("model-both", 1);
    sql(path, "UPDATE models SET blob = CAST('model-X' AS BLOB), sha256 = "
              "(SELECT sha256 FROM models WHERE round = 0) WHERE round = 2");
    expect_bad(path, "models", 2, "blob does not match its SHA-256");
}

static void test_federation_and_config(void **state) {
    (void)state;
    const char *path = make_db("fed-changed", 1);
    sql(path, "UPDATE meta SET value = 'fed-other' WHERE key = 'federation_id'");
    expect_bad(path, "events", 1, "prev_hash is not the genesis of federation 'fed-other'");

    path = make_db("config-replaced", 1);
    sql(path, "UPDATE meta SET value = '[aggregator]' WHERE key = 'config'");
    expect_bad(path, "meta", 0, "meta config: does not match meta config_sha256");

    path = make_db("config-both", 1);
    sql(path, "UPDATE meta SET value = '[aggregator]' WHERE key = 'config';"
              "UPDATE meta SET value = lower(hex(randomblob(32))) WHERE key = 'config_sha256'");
    fl_audit_report r = verify(path, NULL, 0);
    assert_false(r.ok);
    assert_string_equal(r.table, "meta");
}

static void test_ca_and_certificate(void **state) {
    (void)state;
    const char *path = make_db("ca", 1);
    char err[FL_ERR_LEN] = "";
    fl_audit_report r;
    /* another federation's CA: the stored certificate is not its */
    assert_ok(fl_audit_verify(&r, path, pki_file(g_pki2, "ca.crt"), err), err);
    assert_false(r.ok);
    assert_string_equal(r.table, "meta");
    assert_non_null(strstr(r.reason, "does not verify against"));
    /* a CA file that is not there is the caller's error */
    assert_int_equal(fl_audit_verify(&r, path, "/nonexistent/ca.crt", err), FL_EIO);
    assert_non_null(strstr(err, "/nonexistent/ca.crt"));

    /* every signature replaced by another CA's aggregator: self-consistent,
     * so only --ca catches it */
    char other[1100];
    snprintf(other, sizeof other, "%s/other-signer.db", fl_test_tmpdir());
    remove(other);
    fl_store *st = open_store(other, g_pki2);
    commit(st, 0, "model-0");
    assert_ok(fl_store_event(st, "done", NULL, 0, NULL, err), err);
    assert_ok(fl_store_checkpoint(st, 0, err), err);
    close_store(st);
    assert_true(verify(other, NULL, 0).ok);
    r = verify(other, pki_file(g_pki, "ca.crt"), 0);
    assert_false(r.ok);
    assert_non_null(strstr(r.reason, "meta aggregator_cert: does not verify against"));

    /* a site's certificate in place of the aggregator's */
    path = make_db("wrong-role", 1);
    size_t len;
    char *site = fl_test_slurp(pki_file(g_pki, "site-1.crt"), &len), q[4096];
    snprintf(q, sizeof q, "UPDATE meta SET value = '%s' WHERE key = 'aggregator_cert'", site);
    free(site);
    sql(path, q);
    r = verify(path, NULL, 0);
    assert_false(r.ok);
    assert_non_null(strstr(r.reason, "role client, expected aggregator"));
}

static void test_unsigned_log(void **state) {
    (void)state;
    const char *path = make_db("unsigned", 0);
    fl_audit_report r = verify(path, NULL, 0);
    assert_false(r.ok);
    assert_string_equal(r.table, "meta");
    assert_non_null(strstr(r.reason, "not signed"));
    r = verify(path, NULL, FL_AUDIT_ALLOW_UNSIGNED);
    assert_true(r.ok);
    assert_int_equal(r.n_events, N_EVENTS);
    assert_int_equal(r.n_signatures, 0);
    /* the chain is still checked */
    sql(path, NO_TRIGGERS "UPDATE events SET kind = 'x' WHERE id = 7");
    r = verify(path, NULL, FL_AUDIT_ALLOW_UNSIGNED);
    assert_false(r.ok);
    assert_int_equal(r.first_bad_id, 7);
}

static void test_verifier_errors(void **state) {
    (void)state;
    fl_audit_report r;
    char err[FL_ERR_LEN] = "";
    char path[1100];
    snprintf(path, sizeof path, "%s/nosuch.db", fl_test_tmpdir());
    assert_int_equal(fl_audit_verify(&r, path, NULL, err), FL_EIO);
    assert_non_null(strstr(err, path));
    assert_false(r.ok);
    FILE *f = fopen(path, "r");
    assert_null(f); /* not created by the check */

    char *text = fl_test_write_tmp("notadb.db", "this is not a database, but it is long enough to "
                                                "have a header page worth of text in it ......\n");
    assert_int_equal(fl_audit_verify(&r, text, NULL, err), FL_EINVAL);
    assert_non_null(strstr(err, text));
    assert_non_null(strstr(err, "not a Cohort aggregator database"));
    free(text);

    snprintf(path, sizeof path, "%s/other-app.db", fl_test_tmpdir());
    sql(path, "CREATE TABLE meta(key TEXT, value TEXT); CREATE TABLE things(x);");
    assert_int_equal(fl_audit_verify(&r, path, NULL, err), FL_EINVAL);
    assert_non_null(strstr(err, "no table 'events'"));
}

static void test_store_binding_and_signer(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "", path[1100];
    snprintf(path, sizeof path, "%s/binding.db", fl_test_tmpdir());
    remove(path);
    fl_store *st = open_store(path, g_pki);
    /* another federation's id is refused, the same one is fine */
    assert_int_equal(fl_store_set_federation(st, "fed-x", err), FL_ESTATE);
    assert_non_null(strstr(err, "belongs to federation '" FED "'"));
    assert_int_equal(fl_store_meta_set(st, "federation_id", "fed-x", err), FL_ESTATE);
    assert_ok(fl_store_set_federation(st, FED, err), err);
    /* a key that is not the certificate's */
    fl_signer *site;
    size_t len;
    assert_ok(fl_signer_new(&site, pki_file(g_pki, "site-1.key"), err), err);
    char *cert = fl_test_slurp(pki_file(g_pki, "aggregator.crt"), &len);
    assert_int_equal(fl_store_set_signer(st, site, cert, len, err), FL_ECRYPTO);
    assert_non_null(strstr(err, "does not belong to its certificate"));
    commit(st, 0, "model-0");
    /* once something is signed, another certificate would orphan it */
    char *cert2 = fl_test_slurp(pki_file(g_pki, "site-1.crt"), &len);
    assert_int_equal(fl_store_set_signer(st, site, cert2, len, err), FL_ESTATE);
    assert_non_null(strstr(err, "another aggregator certificate"));
    fl_signer_free(site);
    free(cert);
    free(cert2);
    close_store(st);

    /* events chained before a federation id was set cannot be rebound */
    snprintf(path, sizeof path, "%s/unbound.db", fl_test_tmpdir());
    remove(path);
    assert_ok(fl_store_open(&st, path, err), err);
    assert_ok(fl_store_event(st, "restart", NULL, 0, NULL, err), err);
    assert_int_equal(fl_store_set_federation(st, FED, err), FL_ESTATE);
    assert_non_null(strstr(err, "before a federation id"));
    assert_int_equal(fl_store_event(st, NULL, NULL, 0, NULL, err), FL_EINVAL);
    fl_store_close(st);
    fl_audit_report r = verify(path, NULL, FL_AUDIT_ALLOW_UNSIGNED);
    assert_true(r.ok);
    assert_int_equal(r.n_events, 1);
}

static int64_t count(const char *path, const char *q) {
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t n = -1;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW) n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static void test_config_events(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "", path[1100];
    snprintf(path, sizeof path, "%s/config.db", fl_test_tmpdir());
    remove(path);
    fl_store *st = open_store(path, g_pki);
    assert_ok(fl_store_record_config(st, "a = 1\n", 6, err), err);
    assert_ok(fl_store_record_config(st, "a = 1\n", 6, err), err); /* same: nothing */
    close_store(st);
    st = open_store(path, g_pki);
    assert_ok(fl_store_record_config(st, "a = 2\n", 6, err), err);
    close_store(st);
    assert_int_equal(count(path, "SELECT COUNT(*) FROM events WHERE kind = 'config'"), 1);
    assert_int_equal(count(path, "SELECT COUNT(*) FROM events WHERE kind = 'config_change' AND "
                                 "detail LIKE 'sha256 % -> %'"),
                     1);
    /* the change names the old hash and the new one, which is in meta */
    assert_int_equal(count(path, "SELECT COUNT(*) FROM events e, meta m WHERE e.kind = "
                                 "'config_change' AND m.key = 'config_sha256' AND e.detail LIKE "
                                 "'% -> ' || m.value"),
                     1);
    assert_int_equal(count(path, "SELECT COUNT(*) FROM meta WHERE key = 'config' AND value = "
                                 "'a = 2\n'"),
                     1);
    fl_audit_report r = verify(path, NULL, 0);
    assert_true(r.ok);
    assert_int_equal(r.n_events, 2);
}

static void test_fairness_table(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "", path[1100];
    snprintf(path, sizeof path, "%s/fairness.db", fl_test_tmpdir());
    remove(path);
    fl_store *st = open_store(path, NULL);
    uint64_t counts[] = {1, 0x0102030405060708ull};
    fl_round_record r = {.round = 0,
                         .model = (const uint8_t *)"m",
                         .model_len = 1,
                         .fairness_counts = counts,
                         .n_fairness = 2,
                         .fairness_json = "{\"alerts\":0}"};
    assert_ok(fl_store_commit_round(st, &r, err), err);
    fl_round_record r1 = {.round = 1, .model = (const uint8_t *)"m", .model_len = 1};
    assert_ok(fl_store_commit_round(st, &r1, err), err); /* no fairness: no row */
    close_store(st);
    assert_int_equal(count(path, "SELECT COUNT(*) FROM fairness"), 1);
    assert_int_equal(count(path, "SELECT COUNT(*) FROM fairness WHERE round = 0 AND counts = "
                                 "x'01000000000000000807060504030201' AND metrics = "
                                 "'{\"alerts\":0}'"),
                     1);
}

/* A database written before the chain: empty events are migrated, rows that
 * were never chained are refused with the reason. */
static void test_old_database(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "", path[1100];
    static const char *old =
        "CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
        "  kind TEXT NOT NULL, site TEXT, round INTEGER NOT NULL, detail TEXT);";
    snprintf(path, sizeof path, "%s/old-empty.db", fl_test_tmpdir());
    remove(path);
    sql(path, old);
    fl_store *st;
    assert_ok(fl_store_open(&st, path, err), err);
    assert_ok(fl_store_event(st, "restart", NULL, 0, NULL, err), err);
    fl_store_close(st);

    snprintf(path, sizeof path, "%s/old-rows.db", fl_test_tmpdir());
    remove(path);
    sql(path, old);
    sql(path, "INSERT INTO events(at, kind, round) VALUES('2024-01-01', 'join', 0)");
    assert_int_equal(fl_store_open(&st, path, err), FL_ESTATE);
    assert_null(st);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "predates the hash-chained audit log"));
    fl_audit_report r;
    assert_int_equal(fl_audit_verify(&r, path, NULL, err), FL_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_untouched_log_verifies),
        cmocka_unit_test(test_triggers_refuse_update_and_delete),
        cmocka_unit_test(test_edited_row),
        cmocka_unit_test(test_rewritten_chain),
        cmocka_unit_test(test_deleted_row),
        cmocka_unit_test(test_reordered_pair),
        cmocka_unit_test(test_forged_signatures),
        cmocka_unit_test(test_model_altered),
        cmocka_unit_test(test_federation_and_config),
        cmocka_unit_test(test_ca_and_certificate),
        cmocka_unit_test(test_unsigned_log),
        cmocka_unit_test(test_verifier_errors),
        cmocka_unit_test(test_store_binding_and_signer),
        cmocka_unit_test(test_config_events),
        cmocka_unit_test(test_fairness_table),
        cmocka_unit_test(test_old_database),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
