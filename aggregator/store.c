/* store.c: see store.h. Every write goes through a prepared statement with
 * bound parameters; multi-row writes are wrapped in BEGIN IMMEDIATE ...
 * COMMIT so a crash leaves the previous state intact (SQLite's WAL gives the
 * atomicity; synchronous=FULL makes a commit durable before we reply). The
 * audit chain's encodings live in audit.c, so the writer here and the
 * verifier there cannot drift apart (docs/audit.md). */
#include "store.h"

#include <math.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aggregator/audit.h"
#include "crypto/pki.h"

struct fl_store {
    sqlite3 *db;
    char *path;
    const fl_signer *signer; /* borrowed; NULL: nothing is signed */
};

static const char *SCHEMA_SQL =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sites(site INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
    "  n_examples INTEGER, joined_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS rounds(round INTEGER PRIMARY KEY, seed INTEGER NOT NULL,"
    "  committed_at TEXT NOT NULL, n_completed INTEGER NOT NULL, n_dropped INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS models(round INTEGER PRIMARY KEY REFERENCES rounds(round),"
    "  sha256 BLOB NOT NULL, blob BLOB NOT NULL, signature BLOB);"
    "CREATE TABLE IF NOT EXISTS metrics(round INTEGER NOT NULL, name TEXT NOT NULL,"
    "  value REAL, PRIMARY KEY(round, name));"
    "CREATE TABLE IF NOT EXISTS participation(round INTEGER NOT NULL, site INTEGER NOT NULL,"
    "  status TEXT NOT NULL, reason TEXT, n_examples INTEGER, epsilon REAL,"
    "  PRIMARY KEY(round, site));"
    "CREATE TABLE IF NOT EXISTS strategy_state(round INTEGER PRIMARY KEY, blob BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS fairness(round INTEGER PRIMARY KEY, counts BLOB NOT NULL,"
    "  metrics TEXT NOT NULL);"
    /* The audit log (docs/audit.md): ids are assigned by the store, not by
     * AUTOINCREMENT, because each row's hash covers its id. */
    "CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
    "  kind TEXT NOT NULL, site TEXT, round INTEGER NOT NULL, detail TEXT,"
    "  prev_hash BLOB NOT NULL, hash BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS chain_heads(id INTEGER PRIMARY KEY, round INTEGER NOT NULL,"
    "  event_id INTEGER NOT NULL, head BLOB NOT NULL, signature BLOB NOT NULL, at TEXT NOT NULL);"
    /* Defence in depth: the verifier does not rely on these (whoever can
     * write the file can drop them), but they stop an honest mistake. */
    "CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events"
    "  BEGIN SELECT RAISE(ABORT, 'events is append-only (audit log)'); END;"
    "CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events"
    "  BEGIN SELECT RAISE(ABORT, 'events is append-only (audit log)'); END;"
    "CREATE TRIGGER IF NOT EXISTS chain_heads_no_update BEFORE UPDATE ON chain_heads"
    "  BEGIN SELECT RAISE(ABORT, 'chain_heads is append-only (audit log)'); END;"
    "CREATE TRIGGER IF NOT EXISTS chain_heads_no_delete BEFORE DELETE ON chain_heads"
    "  BEGIN SELECT RAISE(ABORT, 'chain_heads is append-only (audit log)'); END;";

static int dberr(fl_store *st, char *err, const char *what) {
    return fl_seterr(err, FL_EIO, "%s: %s: %s", st->path, what, sqlite3_errmsg(st->db));
}

static void now_iso(char buf[96]) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, 96, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

/* The number of columns of events named col (or of any name when col is
 * NULL); 0 when the table does not exist yet. */
static int64_t events_columns(sqlite3 *db, const char *col) {
    sqlite3_stmt *s;
    int64_t n = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT COUNT(*) FROM pragma_table_info('events') WHERE ?1 IS NULL "
                           "OR name = ?1",
                           -1, &s, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(s, 1, col, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW) n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

/* A database written before the audit log was chained: an empty events table
 * is simply recreated; rows that were never chained cannot be vouched for
 * after the fact, so such a store is refused (and left as it was) rather than
 * silently adopted. Runs before the schema is created. */
static int migrate_events(fl_store *st, char *err) {
    if (events_columns(st->db, NULL) == 0 || events_columns(st->db, "hash") > 0) return FL_OK;
    sqlite3_stmt *s;
    int64_t n = -1;
    if (sqlite3_prepare_v2(st->db, "SELECT COUNT(*) FROM events", -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW) n = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
    }
    if (n != 0)
        return fl_seterr(err, FL_ESTATE,
                         "%s: the events table predates the hash-chained audit log (no hash "
                         "column) and holds %lld rows that cannot be verified; keep that file for "
                         "the record and start this federation with a new database",
                         st->path, (long long)n);
    char *msg = NULL;
    if (sqlite3_exec(st->db, "DROP TABLE events;", NULL, NULL, &msg) != SQLITE_OK) {
        int rc = fl_seterr(err, FL_EIO, "%s: cannot migrate the events table: %s", st->path,
                           msg ? msg : "?");
        sqlite3_free(msg);
        return rc;
    }
    return FL_OK;
}

int fl_store_open(fl_store **out, const char *path, char err[FL_ERR_LEN]) {
    *out = NULL;
    fl_store *st = calloc(1, sizeof *st);
    if (!st) return fl_seterr(err, FL_ENOMEM, "store: out of memory");
    st->path = strdup(path);
    int rc = FL_OK;
    if (!st->path) {
        rc = fl_seterr(err, FL_ENOMEM, "store: out of memory");
        goto fail;
    }
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = fl_seterr(err, FL_EIO, "%s: cannot open: %s", path,
                       st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 5000);
    char *msg = NULL;
    if ((rc = migrate_events(st, err))) goto fail;
    if (sqlite3_exec(st->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
                     NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(st->db, SCHEMA_SQL, NULL, NULL, &msg) != SQLITE_OK) {
        rc = fl_seterr(err, FL_EIO, "%s: cannot initialise: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        goto fail;
    }
    *out = st;
    return FL_OK;
fail:
    fl_store_close(st);
    return rc;
}

void fl_store_close(fl_store *st) {
    if (!st) return;
    if (st->db) sqlite3_close(st->db);
    free(st->path);
    free(st);
}

struct sqlite3 *fl_store_db(fl_store *st) {
    return st->db;
}

/* Runs one statement with text/int parameters given as a format: 't' text,
 * 's' text of a given length (pointer + size_t), 'i' int64, 'd' double, 'b'
 * blob (pointer + size_t), 'n' null. */
static int exec1(fl_store *st, char *err, const char *sql, const char *fmt, ...) {
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) return dberr(st, err, sql);
    va_list ap;
    va_start(ap, fmt);
    for (int i = 0; fmt[i]; i++) {
        int k = i + 1;
        switch (fmt[i]) {
        case 't': {
            const char *v = va_arg(ap, const char *);
            if (v)
                sqlite3_bind_text(s, k, v, -1, SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(s, k);
            break;
        }
        case 's': {
            const char *v = va_arg(ap, const char *);
            size_t n = va_arg(ap, size_t);
            if (v)
                sqlite3_bind_text64(s, k, v, n, SQLITE_TRANSIENT, SQLITE_UTF8);
            else
                sqlite3_bind_null(s, k);
            break;
        }
        case 'i':
            sqlite3_bind_int64(s, k, va_arg(ap, int64_t));
            break;
        case 'd': {
            double v = va_arg(ap, double);
            if (isfinite(v))
                sqlite3_bind_double(s, k, v);
            else
                sqlite3_bind_null(s, k);
            break;
        }
        case 'b': {
            const void *p = va_arg(ap, const void *);
            size_t n = va_arg(ap, size_t);
            if (p)
                sqlite3_bind_blob64(s, k, p, n, SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(s, k);
            break;
        }
        default:
            sqlite3_bind_null(s, k);
        }
    }
    va_end(ap);
    int r = sqlite3_step(s);
    int rc = FL_OK;
    if (r == SQLITE_CONSTRAINT)
        rc = fl_seterr(err, FL_ESTATE, "%s: %s", st->path, sqlite3_errmsg(st->db));
    else if (r != SQLITE_DONE && r != SQLITE_ROW)
        rc = dberr(st, err, "write");
    sqlite3_finalize(s);
    return rc;
}

/* Opens a transaction, or a savepoint inside the caller's one: events are
 * appended both on their own and as part of a larger write. */
static int tx_begin(fl_store *st, int *own, char *err) {
    *own = sqlite3_get_autocommit(st->db) != 0;
    return exec1(st, err, *own ? "BEGIN IMMEDIATE" : "SAVEPOINT fl_store", "");
}

/* Commits what tx_begin opened when rc is 0, rolls it back otherwise. */
static int tx_end(fl_store *st, int own, int rc, char *err) {
    if (!rc) rc = exec1(st, err, own ? "COMMIT" : "RELEASE fl_store", "");
    if (rc) {
        char ignore[FL_ERR_LEN];
        if (own) {
            exec1(st, ignore, "ROLLBACK", "");
        } else {
            exec1(st, ignore, "ROLLBACK TO fl_store", "");
            exec1(st, ignore, "RELEASE fl_store", "");
        }
    }
    return rc;
}

/* The first column of the first row of sql as an integer, or -1. */
static int64_t scalar(fl_store *st, const char *sql) {
    sqlite3_stmt *s;
    int64_t v = -1;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) return -1;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static void to_hex(char *out, const uint8_t *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

static int meta_put(fl_store *st, const char *key, const char *value, size_t len, char *err) {
    return exec1(st, err,
                 "INSERT INTO meta(key, value) VALUES(?1, ?2) "
                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                 "ts", key, value, len);
}

/* The federation id the chain is bound to ("" when none was recorded).
 * *id malloc'd. */
static int federation(fl_store *st, char **id, char *err) {
    int rc = fl_store_meta_get(st, "federation_id", id, err);
    if (!rc && !*id && !(*id = strdup(""))) rc = FL_ENOMEM;
    if (rc == FL_ENOMEM) fl_seterr(err, rc, "store: out of memory");
    return rc;
}

/* The last event's id and hash: 0 and the genesis for an empty log. */
static int chain_tail(fl_store *st, int64_t *id, uint8_t hash[32], char *err) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1", -1, &s,
                           NULL) != SQLITE_OK)
        return dberr(st, err, "events");
    int rc = FL_OK, r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        *id = sqlite3_column_int64(s, 0);
        if (sqlite3_column_bytes(s, 1) != 32)
            rc = fl_seterr(err, FL_EIO,
                           "%s: events row %lld: hash is not 32 bytes (the audit log is "
                           "damaged; run cohort verify)",
                           st->path, (long long)*id);
        else
            memcpy(hash, sqlite3_column_blob(s, 1), 32);
    } else if (r == SQLITE_DONE) {
        char *fed = NULL;
        *id = 0;
        if (!(rc = federation(st, &fed, err))) fl_audit_genesis(hash, fed);
        free(fed);
    } else {
        rc = dberr(st, err, "events");
    }
    sqlite3_finalize(s);
    return rc;
}

/* Appends one chained event row; the caller holds a transaction. */
static int append_event(fl_store *st, const char *kind, const char *site, int round,
                        const char *detail, char *err) {
    if (!kind || !kind[0]) return fl_seterr(err, FL_EINVAL, "store: an event needs a kind");
    char at[96];
    now_iso(at);
    int64_t id;
    uint8_t prev[32], h[32];
    int rc = chain_tail(st, &id, prev, err);
    if (rc) return rc;
    id++;
    fl_audit_event_hash(h, id, at, strlen(at), kind, strlen(kind), site, site ? strlen(site) : 0,
                        round, detail, detail ? strlen(detail) : 0, prev);
    return exec1(st, err,
                 "INSERT INTO events(id, at, kind, site, round, detail, prev_hash, hash) "
                 "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                 "itttitbb", id, at, kind, site, (int64_t)round, detail, (const void *)prev,
                 (size_t)32, (const void *)h, (size_t)32);
}

/* Signs the chain's current head into a chain_heads row tagged with round;
 * the caller holds a transaction. only_if_new: nothing when the newest chain
 * head already covers the last event. */
static int sign_head(fl_store *st, int round, int only_if_new, const char *at, char *err) {
    if (!st->signer) return FL_OK;
    int64_t id;
    uint8_t head[32];
    int rc = chain_tail(st, &id, head, err);
    if (rc) return rc;
    if (only_if_new &&
        scalar(st, "SELECT event_id FROM chain_heads ORDER BY id DESC LIMIT 1") == id)
        return FL_OK;
    char *fed = NULL;
    uint8_t *msg = NULL, sig[FL_SIG_MAX];
    size_t len, sig_len;
    if ((rc = federation(st, &fed, err))) goto cleanup;
    if ((rc = fl_audit_head_message(&msg, &len, fed, id, head))) {
        fl_seterr(err, rc, "store: out of memory");
        goto cleanup;
    }
    if ((rc = fl_signer_sign(st->signer, sig, &sig_len, msg, len, err))) goto cleanup;
    rc = exec1(st, err,
               "INSERT INTO chain_heads(round, event_id, head, signature, at) "
               "VALUES(?1, ?2, ?3, ?4, ?5)",
               "iibbt", (int64_t)round, id, (const void *)head, (size_t)32, (const void *)sig,
               sig_len, at);
cleanup:
    free(fed);
    free(msg);
    return rc;
}

int fl_store_set_federation(fl_store *st, const char *federation_id, char err[FL_ERR_LEN]) {
    if (!federation_id || !federation_id[0])
        return fl_seterr(err, FL_EINVAL, "store: empty federation id");
    char *cur = NULL;
    int rc = fl_store_meta_get(st, "federation_id", &cur, err);
    if (rc) return rc;
    if (cur) {
        if (strcmp(cur, federation_id))
            rc = fl_seterr(err, FL_ESTATE,
                           "%s: belongs to federation '%s', not '%s' (federation_id); use that "
                           "federation's configuration or a new database",
                           st->path, cur, federation_id);
        free(cur);
        return rc;
    }
    /* The genesis of a chain already written names no federation: binding it
     * now would break every existing link. */
    int64_t n = scalar(st, "SELECT COUNT(*) FROM events");
    if (n != 0)
        return fl_seterr(err, FL_ESTATE,
                         "%s: %lld audit events were recorded before a federation id; start "
                         "federation '%s' with a new database",
                         st->path, (long long)n, federation_id);
    return meta_put(st, "federation_id", federation_id, strlen(federation_id), err);
}

int fl_store_set_signer(fl_store *st, const fl_signer *signer, const char *cert_pem,
                        size_t cert_len, char err[FL_ERR_LEN]) {
    if (!signer || !cert_pem) return fl_seterr(err, FL_EINVAL, "store: no signer or certificate");
    while (cert_len && cert_pem[cert_len - 1] == 0)
        cert_len--;
    if (!cert_len) return fl_seterr(err, FL_EINVAL, "store: empty aggregator certificate");
    /* A key that does not belong to the certificate would sign every round
     * with signatures no verifier accepts: refuse it at start-up instead. */
    static const char probe[] = "cohort/key-check/v1";
    uint8_t sig[FL_SIG_MAX];
    size_t sig_len;
    char e2[FL_ERR_LEN] = "";
    int rc = fl_signer_sign(signer, sig, &sig_len, (const uint8_t *)probe, sizeof probe - 1, err);
    if (rc) return rc;
    if (fl_verify(sig, sig_len, (const uint8_t *)probe, sizeof probe - 1, cert_pem, cert_len, e2))
        return fl_seterr(err, FL_ECRYPTO,
                         "%s: the aggregator key does not belong to its certificate (%s)", st->path,
                         e2);
    char *cur = NULL;
    if ((rc = fl_store_meta_get(st, "aggregator_cert", &cur, err))) return rc;
    int had = cur != NULL,
        same = cur && strlen(cur) == cert_len && !memcmp(cur, cert_pem, cert_len);
    free(cur);
    if (had && !same &&
        scalar(st, "SELECT (SELECT COUNT(*) FROM models WHERE signature IS NOT NULL) + "
                   "(SELECT COUNT(*) FROM chain_heads)") != 0)
        return fl_seterr(err, FL_ESTATE,
                         "%s: earlier rounds were signed with another aggregator certificate "
                         "(meta aggregator_cert); run with that certificate and key, or start a "
                         "new database",
                         st->path);
    if (!same && (rc = meta_put(st, "aggregator_cert", cert_pem, cert_len, err))) return rc;
    st->signer = signer;
    return FL_OK;
}

int fl_store_record_config(fl_store *st, const char *text, size_t len, char err[FL_ERR_LEN]) {
    uint8_t h[32];
    char hex[65], detail[160], *old = NULL;
    crypto_hash_sha256(h, (const uint8_t *)text, len);
    to_hex(hex, h, 32);
    int own, rc = fl_store_meta_get(st, "config_sha256", &old, err);
    if (rc) return rc;
    if (old && !strcmp(old, hex)) goto cleanup;
    if ((rc = tx_begin(st, &own, err))) goto cleanup;
    rc = meta_put(st, "config", text, len, err);
    if (!rc) rc = meta_put(st, "config_sha256", hex, 64, err);
    if (!rc && old) {
        snprintf(detail, sizeof detail, "sha256 %.64s -> %s", old, hex);
        rc = append_event(st, "config_change", NULL, 0, detail, err);
    } else if (!rc) {
        snprintf(detail, sizeof detail, "sha256 %s (%zu bytes)", hex, len);
        rc = append_event(st, "config", NULL, 0, detail, err);
    }
    rc = tx_end(st, own, rc, err);
cleanup:
    free(old);
    return rc;
}

int fl_store_checkpoint(fl_store *st, int round, char err[FL_ERR_LEN]) {
    if (!st->signer) return FL_OK;
    char at[96];
    now_iso(at);
    int own, rc = tx_begin(st, &own, err);
    if (rc) return rc;
    return tx_end(st, own, sign_head(st, round, 1, at, err), err);
}

int fl_store_meta_set(fl_store *st, const char *key, const char *value, char err[FL_ERR_LEN]) {
    if (!strcmp(key, "federation_id")) return fl_store_set_federation(st, value, err);
    return meta_put(st, key, value, strlen(value), err);
}

int fl_store_meta_get(fl_store *st, const char *key, char **value, char err[FL_ERR_LEN]) {
    *value = NULL;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT value FROM meta WHERE key = ?1", -1, &s, NULL))
        return dberr(st, err, "meta");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
    int rc = FL_OK;
    if (sqlite3_step(s) == SQLITE_ROW) {
        *value = strdup((const char *)sqlite3_column_text(s, 0));
        if (!*value) rc = FL_ENOMEM;
    }
    sqlite3_finalize(s);
    return rc;
}

int fl_store_site_join(fl_store *st, int site, const char *name, int64_t n_examples,
                       char err[FL_ERR_LEN]) {
    char at[96];
    now_iso(at);
    return exec1(st, err,
                 "INSERT INTO sites(site, name, n_examples, joined_at) VALUES(?1, ?2, ?3, ?4) "
                 "ON CONFLICT(site) DO UPDATE SET n_examples = excluded.n_examples",
                 "itit", (int64_t)site, name, n_examples, at);
}

int fl_store_last_round(fl_store *st, int *round, char err[FL_ERR_LEN]) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT MAX(round) FROM rounds", -1, &s, NULL))
        return dberr(st, err, "rounds");
    *round = -1;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
        *round = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return FL_OK;
}

static int load_blob(fl_store *st, const char *sql, int round, uint8_t **blob, size_t *len,
                     uint8_t *sha, int required, char *err) {
    *blob = NULL;
    *len = 0;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL)) return dberr(st, err, sql);
    sqlite3_bind_int(s, 1, round);
    int rc = FL_OK;
    if (sqlite3_step(s) == SQLITE_ROW) {
        const void *p = sqlite3_column_blob(s, 0);
        size_t n = (size_t)sqlite3_column_bytes(s, 0);
        *blob = malloc(n ? n : 1);
        if (!*blob)
            rc = FL_ENOMEM;
        else {
            if (n) memcpy(*blob, p, n);
            *len = n;
        }
        if (!rc && sha) {
            if (sqlite3_column_bytes(s, 1) != 32)
                rc = fl_seterr(err, FL_EIO, "%s: round %d: bad SHA-256", st->path, round);
            else
                memcpy(sha, sqlite3_column_blob(s, 1), 32);
        }
    } else if (required) {
        rc = fl_seterr(err, FL_EINVAL, "%s: no model for round %d", st->path, round);
    }
    sqlite3_finalize(s);
    if (rc) {
        free(*blob);
        *blob = NULL;
        *len = 0;
    }
    return rc;
}

int fl_store_load_model(fl_store *st, int round, uint8_t **blob, size_t *len, uint8_t sha256[32],
                        char err[FL_ERR_LEN]) {
    int rc = load_blob(st, "SELECT blob, sha256 FROM models WHERE round = ?1", round, blob, len,
                       sha256, 1, err);
    if (rc) return rc;
    uint8_t h[32];
    crypto_hash_sha256(h, *blob, *len);
    if (sodium_memcmp(h, sha256, 32) != 0) {
        free(*blob);
        *blob = NULL;
        return fl_seterr(err, FL_ECRYPTO, "%s: round %d: model does not match its SHA-256",
                         st->path, round);
    }
    return FL_OK;
}

int fl_store_load_strategy(fl_store *st, int round, uint8_t **blob, size_t *len,
                           char err[FL_ERR_LEN]) {
    return load_blob(st, "SELECT blob FROM strategy_state WHERE round = ?1", round, blob, len, NULL,
                     0, err);
}

int fl_store_commit_round(fl_store *st, const fl_round_record *r, char err[FL_ERR_LEN]) {
    char at[96];
    now_iso(at);
    int own, rc = tx_begin(st, &own, err);
    if (rc) return rc;
    int done = 0, dropped = 0;
    for (int i = 0; i < r->n_parts; i++) {
        if (!strcmp(r->parts[i].status, "completed"))
            done++;
        else
            dropped++;
    }
    char *fed = NULL;
    uint8_t sha[32], sig[FL_SIG_MAX], *msg = NULL, *counts = NULL;
    size_t sig_len = 0, msg_len;
    crypto_hash_sha256(sha, r->model, r->model_len);
    rc = exec1(st, err,
               "INSERT INTO rounds(round, seed, committed_at, n_completed, n_dropped) "
               "VALUES(?1, ?2, ?3, ?4, ?5)",
               "iitii", (int64_t)r->round, (int64_t)r->seed, at, (int64_t)done, (int64_t)dropped);
    /* The model's signature binds federation, round and content, so a model
     * cannot be moved to another round or federation and still verify. */
    if (!rc && st->signer) {
        if (!(rc = federation(st, &fed, err)) &&
            (rc = fl_audit_model_message(&msg, &msg_len, fed, r->round, sha)))
            fl_seterr(err, rc, "store: out of memory");
        if (!rc) rc = fl_signer_sign(st->signer, sig, &sig_len, msg, msg_len, err);
    }
    if (!rc)
        rc =
            exec1(st, err, "INSERT INTO models(round, sha256, blob, signature) VALUES(?1,?2,?3,?4)",
                  "ibbb", (int64_t)r->round, (const void *)sha, (size_t)32, (const void *)r->model,
                  r->model_len, (const void *)(st->signer ? sig : NULL), sig_len);
    for (int i = 0; i < r->n_metrics && !rc; i++)
        rc = exec1(st, err, "INSERT INTO metrics(round, name, value) VALUES(?1, ?2, ?3)", "itd",
                   (int64_t)r->round, r->metrics[i].name, r->metrics[i].value);
    for (int i = 0; i < r->n_parts && !rc; i++) {
        const fl_participation *p = &r->parts[i];
        rc = exec1(st, err,
                   "INSERT INTO participation(round, site, status, reason, n_examples, epsilon) "
                   "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                   "iittid", (int64_t)r->round, (int64_t)p->site, p->status, p->reason,
                   p->n_examples, p->epsilon);
    }
    if (!rc && r->strategy_state)
        rc = exec1(st, err, "INSERT INTO strategy_state(round, blob) VALUES(?1, ?2)", "ib",
                   (int64_t)r->round, (const void *)r->strategy_state, r->strategy_state_len);
    if (!rc && r->fairness_json) {
        /* Little-endian words, so the blob reads the same on any host. */
        counts = malloc(r->n_fairness * 8 + 1);
        if (!counts) rc = fl_seterr(err, FL_ENOMEM, "store: out of memory");
        for (size_t i = 0; !rc && i < r->n_fairness; i++)
            for (int b = 0; b < 8; b++)
                counts[8 * i + (size_t)b] = (uint8_t)(r->fairness_counts[i] >> (8 * b));
        if (!rc)
            rc = exec1(st, err, "INSERT INTO fairness(round, counts, metrics) VALUES(?1, ?2, ?3)",
                       "ibt", (int64_t)r->round, (const void *)counts, r->n_fairness * 8,
                       r->fairness_json);
    }
    if (!rc) rc = sign_head(st, r->round, 0, at, err);
    rc = tx_end(st, own, rc, err);
    free(fed);
    free(msg);
    free(counts);
    return rc;
}

int fl_store_event(fl_store *st, const char *kind, const char *site, int round, const char *detail,
                   char err[FL_ERR_LEN]) {
    int own, rc = tx_begin(st, &own, err);
    if (rc) return rc;
    return tx_end(st, own, append_event(st, kind, site, round, detail, err), err);
}

double fl_store_metric(fl_store *st, int round, const char *name) {
    sqlite3_stmt *s;
    double v = NAN;
    if (sqlite3_prepare_v2(st->db, "SELECT value FROM metrics WHERE round = ?1 AND name = ?2", -1,
                           &s, NULL))
        return NAN;
    sqlite3_bind_int(s, 1, round);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
        v = sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
    return v;
}
