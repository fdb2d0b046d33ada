/* store.c: see store.h. Every write goes through a prepared statement with
 * bound parameters; multi-row writes are wrapped in BEGIN IMMEDIATE ...
 * COMMIT so a crash leaves the previous state intact (SQLite's WAL gives the
 * atomicity; synchronous=FULL makes a commit durable before we reply). */
#include "store.h"

#include <math.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fl_store {
    sqlite3 *db;
    char *path;
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
    "CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
    "  kind TEXT NOT NULL, site TEXT, round INTEGER NOT NULL, detail TEXT);";

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
 * 'i' int64, 'd' double, 'b' blob (pointer + size_t), 'n' null. */
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

int fl_store_meta_set(fl_store *st, const char *key, const char *value, char err[FL_ERR_LEN]) {
    return exec1(st, err,
                 "INSERT INTO meta(key, value) VALUES(?1, ?2) "
                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                 "tt", key, value);
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
    int rc = exec1(st, err, "BEGIN IMMEDIATE", "");
    if (rc) return rc;
    int done = 0, dropped = 0;
    for (int i = 0; i < r->n_parts; i++) {
        if (!strcmp(r->parts[i].status, "completed"))
            done++;
        else
            dropped++;
    }
    uint8_t sha[32];
    crypto_hash_sha256(sha, r->model, r->model_len);
    rc = exec1(st, err,
               "INSERT INTO rounds(round, seed, committed_at, n_completed, n_dropped) "
               "VALUES(?1, ?2, ?3, ?4, ?5)",
               "iitii", (int64_t)r->round, (int64_t)r->seed, at, (int64_t)done, (int64_t)dropped);
    if (!rc)
        rc =
            exec1(st, err, "INSERT INTO models(round, sha256, blob, signature) VALUES(?1,?2,?3,?4)",
                  "ibbb", (int64_t)r->round, (const void *)sha, (size_t)32, (const void *)r->model,
                  r->model_len, (const void *)r->signature, r->signature_len);
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
    if (!rc) rc = exec1(st, err, "COMMIT", "");
    if (rc) {
        char ignore[FL_ERR_LEN];
        exec1(st, ignore, "ROLLBACK", "");
    }
    return rc;
}

int fl_store_event(fl_store *st, const char *kind, const char *site, int round, const char *detail,
                   char err[FL_ERR_LEN]) {
    char at[96];
    now_iso(at);
    return exec1(st, err,
                 "INSERT INTO events(at, kind, site, round, detail) VALUES(?1,?2,?3,?4,?5)",
                 "tttit", at, kind, site, (int64_t)round, detail);
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
