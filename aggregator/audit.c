/* audit.c: see audit.h. The encodings the store writes the audit chain with,
 * and the verifier behind `cohort verify` and the report's verification
 * section (DESIGN.md §11, docs/audit.md). The verifier only reads: it opens
 * the database read-only and trusts nothing in it but the certificate it
 * checks against the CA when one is given. */
#include "aggregator/audit.h"

#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "crypto/pki.h"

/* ============================ Encodings ================================= */

static void hash_int(crypto_hash_sha256_state *h, int64_t v) {
    uint8_t b[8];
    fl_put_be64(b, (uint64_t)v);
    crypto_hash_sha256_update(h, b, 8);
}

/* A NULL text and "" differ: the presence byte comes before the length. */
static void hash_text(crypto_hash_sha256_state *h, const char *p, size_t n) {
    uint8_t tag = p ? 1 : 0;
    crypto_hash_sha256_update(h, &tag, 1);
    if (!p) return;
    hash_int(h, (int64_t)n);
    crypto_hash_sha256_update(h, (const uint8_t *)p, n);
}

static void hash_label(crypto_hash_sha256_state *h, const char *label) {
    hash_text(h, label, strlen(label));
}

void fl_audit_genesis(uint8_t out[32], const char *federation_id) {
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    hash_label(&h, FL_AUDIT_GENESIS_LABEL);
    hash_text(&h, federation_id ? federation_id : "", federation_id ? strlen(federation_id) : 0);
    crypto_hash_sha256_final(&h, out);
}

void fl_audit_event_hash(uint8_t out[32], int64_t id, const char *at, size_t at_len,
                         const char *kind, size_t kind_len, const char *site, size_t site_len,
                         int64_t round, const char *detail, size_t detail_len,
                         const uint8_t prev[32]) {
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    hash_label(&h, FL_AUDIT_EVENT_LABEL);
    hash_int(&h, id);
    hash_text(&h, at, at_len);
    hash_text(&h, kind, kind_len);
    hash_text(&h, site, site_len);
    hash_int(&h, round);
    hash_text(&h, detail, detail_len);
    crypto_hash_sha256_update(&h, prev, 32);
    crypto_hash_sha256_final(&h, out);
}

/* label, federation id, one integer, one hash: both signed messages. */
static int message(uint8_t **msg, size_t *len, const char *label, const char *federation_id,
                   int64_t v, const uint8_t hash[32]) {
    const char *fed = federation_id ? federation_id : "";
    size_t ll = strlen(label), fl = strlen(fed);
    size_t n = (1 + 8 + ll) + (1 + 8 + fl) + 8 + 32;
    uint8_t *p = malloc(n);
    *msg = p;
    *len = 0;
    if (!p) return FL_ENOMEM;
    *p++ = 1;
    fl_put_be64(p, ll);
    p += 8;
    memcpy(p, label, ll);
    p += ll;
    *p++ = 1;
    fl_put_be64(p, fl);
    p += 8;
    memcpy(p, fed, fl);
    p += fl;
    fl_put_be64(p, (uint64_t)v);
    p += 8;
    memcpy(p, hash, 32);
    *len = n;
    return FL_OK;
}

int fl_audit_model_message(uint8_t **msg, size_t *len, const char *federation_id, int64_t round,
                           const uint8_t sha256[32]) {
    return message(msg, len, FL_AUDIT_MODEL_LABEL, federation_id, round, sha256);
}

int fl_audit_head_message(uint8_t **msg, size_t *len, const char *federation_id, int64_t event_id,
                          const uint8_t head[32]) {
    return message(msg, len, FL_AUDIT_HEAD_LABEL, federation_id, event_id, head);
}

/* ============================ Verifier ================================== */

/* One verification run: the open database and what the checks share. */
typedef struct verifier {
    sqlite3 *db;
    const char *path;
    int flags;
    char *fed;       /* meta federation_id, "" when absent */
    char *cert;      /* meta aggregator_cert, NULL when absent */
    uint8_t *hashes; /* (n_hashes + 1, 32): [0] the genesis, [i] event row i's hash */
    int64_t n_hashes;
    int64_t config_event; /* the last config / config_change event row, 0 if none */
    char config_sha[65];  /* the SHA-256 it names */
    int64_t *head_rounds; /* rounds that have a signed chain head */
    int64_t n_head_rounds;
    fl_audit_report *out;
} verifier;

/* Records the first bad row; later findings are ignored. Returns 1 so a
 * check can `return bad(...)`. */
static int bad(verifier *v, const char *table, int64_t id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(verifier *v, const char *table, int64_t id, const char *fmt, ...) {
    if (!v->out->ok) return 1;
    v->out->ok = 0;
    v->out->first_bad_id = id;
    snprintf(v->out->table, sizeof v->out->table, "%s", table);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->out->reason, sizeof v->out->reason, fmt, ap);
    va_end(ap);
    return 1;
}

static void hex32(char out[65], const uint8_t h[32]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 15];
    }
    out[64] = 0;
}

/* A text column: pointer (NULL for SQL NULL) and length. */
static const char *col_text(sqlite3_stmt *s, int i, size_t *len) {
    if (sqlite3_column_type(s, i) == SQLITE_NULL) {
        *len = 0;
        return NULL;
    }
    const char *p = (const char *)sqlite3_column_text(s, i);
    *len = (size_t)sqlite3_column_bytes(s, i);
    return p ? p : "";
}

/* A 32-byte blob column, or NULL when it is anything else. */
static const uint8_t *col_hash(sqlite3_stmt *s, int i) {
    if (sqlite3_column_type(s, i) != SQLITE_BLOB || sqlite3_column_bytes(s, i) != 32) return NULL;
    return sqlite3_column_blob(s, i);
}

static int db_error(verifier *v, char *err, const char *what) {
    int code = sqlite3_errcode(v->db);
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
        return fl_seterr(err, FL_EINVAL, "%s: not a Cohort aggregator database (%s: %s)", v->path,
                         what, sqlite3_errmsg(v->db));
    return fl_seterr(err, FL_EIO, "%s: cannot read %s: %s", v->path, what, sqlite3_errmsg(v->db));
}

static int meta(verifier *v, const char *key, char **value, char *err) {
    *value = NULL;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(v->db, "SELECT value FROM meta WHERE key = ?1", -1, &s, NULL) !=
        SQLITE_OK)
        return db_error(v, err, "meta");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    int rc = FL_OK;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL) {
        size_t n;
        const char *p = col_text(s, 0, &n);
        if (!(*value = malloc(n + 1)))
            rc = fl_seterr(err, FL_ENOMEM, "audit: out of memory");
        else {
            memcpy(*value, p, n);
            (*value)[n] = 0;
        }
    }
    sqlite3_finalize(s);
    return rc;
}

/* The schema this verifier understands: every audited table, and events with
 * its hash chain. FL_EINVAL naming what is missing otherwise. */
static int check_schema(verifier *v, char *err) {
    static const char *const tables[] = {"meta", "events", "models", "chain_heads"};
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++) {
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(v->db,
                               "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
                               "name = ?1",
                               -1, &s, NULL) != SQLITE_OK)
            return db_error(v, err, "its schema");
        sqlite3_bind_text(s, 1, tables[i], -1, SQLITE_STATIC);
        int r = sqlite3_step(s), have = r == SQLITE_ROW && sqlite3_column_int(s, 0) > 0;
        sqlite3_finalize(s);
        if (r != SQLITE_ROW) return db_error(v, err, "its schema");
        if (!have)
            return fl_seterr(
                err, FL_EINVAL, "%s: not a Cohort aggregator database (no table '%s'%s)", v->path,
                tables[i],
                !strcmp(tables[i], "chain_heads") ? "; written before the audit log was signed"
                                                  : "");
    }
    sqlite3_stmt *s;
    int have = 0;
    if (sqlite3_prepare_v2(v->db,
                           "SELECT COUNT(*) FROM pragma_table_info('events') WHERE name IN "
                           "('prev_hash', 'hash')",
                           -1, &s, NULL) != SQLITE_OK)
        return db_error(v, err, "its schema");
    if (sqlite3_step(s) == SQLITE_ROW) have = sqlite3_column_int(s, 0) == 2;
    sqlite3_finalize(s);
    if (!have)
        return fl_seterr(err, FL_EINVAL,
                         "%s: the events table has no hash chain (prev_hash, hash): written "
                         "before the audit log was chained",
                         v->path);
    return FL_OK;
}

/* The stored certificate: present, of role aggregator, and issued by the CA
 * when one is given. Returns FL_EIO only when ca_path cannot be read. */
static int check_cert(verifier *v, const char *ca_path, char *err) {
    char name[FL_PKI_NAME_MAX], e2[FL_ERR_LEN] = "";
    int role = FL_ROLE_NONE;
    if (!v->cert) {
        if (ca_path)
            bad(v, "meta", 0,
                "meta aggregator_cert: absent, so nothing here can be checked against %s: no "
                "aggregator key was configured",
                ca_path);
        else if (!(v->flags & FL_AUDIT_ALLOW_UNSIGNED))
            bad(v, "meta", 0,
                "meta aggregator_cert: absent: the log is not signed (no aggregator key was "
                "configured)");
        return FL_OK;
    }
    size_t len = strlen(v->cert);
    if (ca_path) {
        int rc = fl_pki_verify_cert(v->cert, len, ca_path, NULL, name, &role, e2);
        if (rc == FL_EIO) return fl_seterr(err, FL_EIO, "%s", e2);
        if (rc) {
            bad(v, "meta", 0, "meta aggregator_cert: does not verify against %s: %s", ca_path, e2);
            return FL_OK;
        }
    } else if (fl_pki_peer_role(v->cert, len, name, &role, e2)) {
        bad(v, "meta", 0, "meta aggregator_cert: not a certificate: %s", e2);
        return FL_OK;
    }
    if (role != FL_ROLE_AGGREGATOR)
        bad(v, "meta", 0, "meta aggregator_cert: '%s' has role %s, expected aggregator", name,
            fl_pki_role_name(role));
    return FL_OK;
}

/* Remembers the configuration hash an event names: "sha256 HEX ..." for
 * config, "sha256 OLD -> NEW" for config_change. */
static void note_config(verifier *v, int64_t id, const char *kind, const char *detail) {
    const char *p = NULL;
    if (!detail) return;
    if (!strcmp(kind, "config") && !strncmp(detail, "sha256 ", 7))
        p = detail + 7;
    else if (!strcmp(kind, "config_change") && (p = strstr(detail, "-> ")))
        p += 3;
    else if (strcmp(kind, "config"))
        return;
    v->config_event = id;
    v->config_sha[0] = 0;
    if (p && strlen(p) >= 64) {
        memcpy(v->config_sha, p, 64);
        v->config_sha[64] = 0;
    }
}

/* Walks the chain in id order: contiguous ids from 1, each prev_hash the
 * previous row's hash, each hash its contents' hash. Stops at the first bad
 * row: whatever follows it hangs off a broken link. */
static int check_events(verifier *v, char *err) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(v->db,
                           "SELECT id, at, kind, site, round, detail, prev_hash, hash FROM events "
                           "ORDER BY id",
                           -1, &s, NULL) != SQLITE_OK)
        return db_error(v, err, "events");
    int64_t cap = 1024, expect = 1;
    int rc = FL_OK, r;
    v->hashes = malloc((size_t)cap * 32);
    if (!v->hashes) {
        rc = fl_seterr(err, FL_ENOMEM, "audit: out of memory");
        goto cleanup;
    }
    fl_audit_genesis(v->hashes, v->fed);
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0);
        v->out->n_events++;
        if (id != expect) {
            char gap[96];
            if (id - expect == 1)
                snprintf(gap, sizeof gap, "row %lld is missing", (long long)expect);
            else
                snprintf(gap, sizeof gap, "rows %lld..%lld are missing", (long long)expect,
                         (long long)id - 1);
            if (id < expect)
                bad(v, "events", id, "events row %lld: ids start at 1", (long long)id);
            else if (expect == 1)
                bad(v, "events", id, "events row %lld: the log starts here: %s", (long long)id,
                    gap);
            else
                bad(v, "events", id, "events row %lld: follows row %lld: %s", (long long)id,
                    (long long)expect - 1, gap);
            break;
        }
        size_t at_n, kind_n, site_n, detail_n;
        const char *at = col_text(s, 1, &at_n), *kind = col_text(s, 2, &kind_n),
                   *site = col_text(s, 3, &site_n), *detail = col_text(s, 5, &detail_n);
        const uint8_t *prev = col_hash(s, 6), *hash = col_hash(s, 7);
        const uint8_t *want = v->hashes + 32 * (size_t)(id - 1);
        if (!prev || sodium_memcmp(prev, want, 32)) {
            if (id == 1)
                bad(v, "events", id,
                    "events row 1: prev_hash is not the genesis of federation '%s' (the "
                    "federation id or the first rows were changed)",
                    v->fed);
            else
                bad(v, "events", id,
                    "events row %lld: prev_hash does not match the hash of row %lld (a row was "
                    "deleted, inserted or moved)",
                    (long long)id, (long long)id - 1);
            break;
        }
        uint8_t h[32];
        fl_audit_event_hash(h, id, at, at_n, kind, kind_n, site, site_n, sqlite3_column_int64(s, 4),
                            detail, detail_n, prev);
        if (!hash || sodium_memcmp(h, hash, 32)) {
            bad(v, "events", id, "events row %lld: hash does not match its contents",
                (long long)id);
            break;
        }
        if (id + 1 > cap) {
            uint8_t *p = realloc(v->hashes, (size_t)cap * 2 * 32);
            if (!p) {
                rc = fl_seterr(err, FL_ENOMEM, "audit: out of memory");
                goto cleanup;
            }
            v->hashes = p;
            cap *= 2;
        }
        memcpy(v->hashes + 32 * (size_t)id, h, 32);
        v->n_hashes = id;
        if (kind) note_config(v, id, kind, detail);
        expect++;
    }
    if (v->out->ok && r != SQLITE_DONE) rc = db_error(v, err, "events");
cleanup:
    sqlite3_finalize(s);
    return rc;
}

static int verify_sig(verifier *v, const uint8_t *sig, size_t sig_len, const char *label, int64_t n,
                      const uint8_t hash[32], char *err, char *why) {
    uint8_t *msg;
    size_t len;
    int rc = !strcmp(label, FL_AUDIT_MODEL_LABEL)
                 ? fl_audit_model_message(&msg, &len, v->fed, n, hash)
                 : fl_audit_head_message(&msg, &len, v->fed, n, hash);
    if (rc) return fl_seterr(err, rc, "audit: out of memory");
    rc = fl_verify(sig, sig_len, msg, len, v->cert, strlen(v->cert), why);
    free(msg);
    if (rc == FL_ENOMEM) return fl_seterr(err, rc, "audit: out of memory");
    return rc ? 1 : 0;
}

/* Each chain head: contiguous ids, event ids that never go back and exist,
 * the recomputed chain's hash at that event, a valid signature. */
static int check_heads(verifier *v, char *err) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(v->db,
                           "SELECT id, round, event_id, head, signature FROM chain_heads ORDER BY "
                           "id",
                           -1, &s, NULL) != SQLITE_OK)
        return db_error(v, err, "chain_heads");
    int64_t expect = 1, last_event = 0, cap = 0;
    int rc = FL_OK, r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0), round = sqlite3_column_int64(s, 1),
                ev = sqlite3_column_int64(s, 2);
        const uint8_t *head = col_hash(s, 3);
        if (id != expect) {
            bad(v, "chain_heads", id, "chain_heads row %lld: follows row %lld: rows are missing",
                (long long)id, (long long)expect - 1);
            break;
        }
        if (ev < last_event || ev < 0) {
            bad(v, "chain_heads", id,
                "chain_heads row %lld: names event %lld, before row %lld's event %lld",
                (long long)id, (long long)ev, (long long)id - 1, (long long)last_event);
            break;
        }
        if (ev > v->n_hashes) {
            bad(v, "chain_heads", id,
                "chain_heads row %lld: signs the chain up to events row %lld, but the log ends "
                "at row %lld (rows were removed from its end)",
                (long long)id, (long long)ev, (long long)v->n_hashes);
            break;
        }
        if (!head || sodium_memcmp(head, v->hashes + 32 * (size_t)ev, 32)) {
            bad(v, "chain_heads", id,
                "chain_heads row %lld: head does not match the recomputed chain at events row "
                "%lld (the events up to it were rewritten)",
                (long long)id, (long long)ev);
            break;
        }
        if (!v->cert) {
            bad(v, "chain_heads", id,
                "chain_heads row %lld: signed, but meta aggregator_cert is absent", (long long)id);
            break;
        }
        char why[FL_ERR_LEN] = "";
        int k = sqlite3_column_type(s, 4) == SQLITE_BLOB
                    ? verify_sig(v, sqlite3_column_blob(s, 4), (size_t)sqlite3_column_bytes(s, 4),
                                 FL_AUDIT_HEAD_LABEL, ev, head, err, why)
                    : 1;
        if (k < 0) {
            rc = k;
            goto cleanup;
        }
        if (k) {
            bad(v, "chain_heads", id,
                "chain_heads row %lld: signature does not verify with the aggregator "
                "certificate (forged or altered)",
                (long long)id);
            break;
        }
        v->out->n_signatures++;
        if (v->n_head_rounds == cap) {
            cap = cap ? 2 * cap : 64;
            int64_t *p = realloc(v->head_rounds, (size_t)cap * sizeof *p);
            if (!p) {
                rc = fl_seterr(err, FL_ENOMEM, "audit: out of memory");
                goto cleanup;
            }
            v->head_rounds = p;
        }
        v->head_rounds[v->n_head_rounds++] = round;
        last_event = ev;
        expect++;
    }
    if (v->out->ok && r != SQLITE_DONE && r != SQLITE_ROW) rc = db_error(v, err, "chain_heads");
cleanup:
    sqlite3_finalize(s);
    return rc;
}

static int has_head_round(const verifier *v, int64_t round) {
    for (int64_t i = 0; i < v->n_head_rounds; i++)
        if (v->head_rounds[i] == round) return 1;
    return 0;
}

/* Each model: its blob's SHA-256, its signature, and a signed chain head
 * committed with it (one transaction writes both). */
static int check_models(verifier *v, char *err) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(v->db,
                           "SELECT round, sha256, blob, signature FROM models ORDER BY round", -1,
                           &s, NULL) != SQLITE_OK)
        return db_error(v, err, "models");
    int rc = FL_OK, r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t round = sqlite3_column_int64(s, 0);
        const uint8_t *sha = col_hash(s, 1);
        const void *blob = sqlite3_column_blob(s, 2);
        size_t n = (size_t)sqlite3_column_bytes(s, 2);
        uint8_t h[32];
        crypto_hash_sha256(h, blob ? blob : (const void *)"", n);
        if (!sha || sodium_memcmp(h, sha, 32)) {
            bad(v, "models", round,
                "models round %lld: blob does not match its SHA-256 (the model was altered)",
                (long long)round);
            break;
        }
        if (sqlite3_column_type(s, 3) == SQLITE_NULL) {
            if (v->flags & FL_AUDIT_ALLOW_UNSIGNED) continue;
            bad(v, "models", round,
                "models round %lld: not signed (no aggregator key was configured when it was "
                "committed, or its signature was removed)",
                (long long)round);
            break;
        }
        if (!v->cert) {
            bad(v, "models", round, "models round %lld: signed, but meta aggregator_cert is absent",
                (long long)round);
            break;
        }
        char why[FL_ERR_LEN] = "";
        int k = sqlite3_column_type(s, 3) == SQLITE_BLOB
                    ? verify_sig(v, sqlite3_column_blob(s, 3), (size_t)sqlite3_column_bytes(s, 3),
                                 FL_AUDIT_MODEL_LABEL, round, sha, err, why)
                    : 1;
        if (k < 0) {
            rc = k;
            goto cleanup;
        }
        if (k) {
            bad(v, "models", round,
                "models round %lld: signature does not verify with the aggregator certificate "
                "(forged or altered)",
                (long long)round);
            break;
        }
        v->out->n_signatures++;
        if (!has_head_round(v, round)) {
            bad(v, "models", round,
                "models round %lld: no signed chain head was committed with it (chain_heads rows "
                "were removed)",
                (long long)round);
            break;
        }
    }
    if (v->out->ok && r != SQLITE_DONE && r != SQLITE_ROW) rc = db_error(v, err, "models");
cleanup:
    sqlite3_finalize(s);
    return rc;
}

/* meta config is the text whose SHA-256 the last config event names. */
static int check_config(verifier *v, char *err) {
    char *text = NULL, *sha = NULL;
    int rc = meta(v, "config", &text, err);
    if (!rc) rc = meta(v, "config_sha256", &sha, err);
    if (rc || (!text && !sha && !v->config_event)) goto cleanup;
    uint8_t h[32];
    char hex[65];
    crypto_hash_sha256(h, (const uint8_t *)(text ? text : ""), text ? strlen(text) : 0);
    hex32(hex, h);
    if (!text || !sha || strcmp(hex, sha))
        bad(v, "meta", 0, "meta config: does not match meta config_sha256");
    else if (!v->config_event)
        bad(v, "meta", 0, "meta config: no config event in the log records it");
    else if (strcmp(v->config_sha, sha))
        bad(v, "meta", 0,
            "meta config: its SHA-256 is not the one events row %lld records (the configuration "
            "was replaced)",
            (long long)v->config_event);
cleanup:
    free(text);
    free(sha);
    return rc;
}

int fl_audit_verify_ex(fl_audit_report *out, const char *db_path, const char *ca_path, int flags,
                       char err[FL_ERR_LEN]) {
    memset(out, 0, sizeof *out);
    out->first_bad_id = -1;
    out->ok = 1;
    verifier v = {.path = db_path, .flags = flags, .out = out};
    int rc = FL_OK;
    if (!db_path || !db_path[0]) {
        rc = fl_seterr(err, FL_EINVAL, "audit: no database path");
        goto cleanup;
    }
    /* Read-only and without creating anything: a missing file is an error,
     * never a new empty database. */
    if (sqlite3_open_v2(db_path, &v.db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        rc = fl_seterr(err, FL_EIO, "%s: cannot open: %s", db_path,
                       v.db ? sqlite3_errmsg(v.db) : "out of memory");
        goto cleanup;
    }
    sqlite3_busy_timeout(v.db, 5000);
    /* One read transaction: every table from the same snapshot, even while
     * the aggregator keeps writing. */
    if (sqlite3_exec(v.db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        (rc = check_schema(&v, err))) {
        if (!rc) rc = db_error(&v, err, "its schema");
        goto cleanup;
    }
    if ((rc = meta(&v, "federation_id", &v.fed, err)) ||
        (rc = meta(&v, "aggregator_cert", &v.cert, err)))
        goto cleanup;
    if (!v.fed && !(v.fed = strdup(""))) {
        rc = fl_seterr(err, FL_ENOMEM, "audit: out of memory");
        goto cleanup;
    }
    if ((rc = check_cert(&v, ca_path, err))) goto cleanup;
    if (out->ok && (rc = check_events(&v, err))) goto cleanup;
    if (out->ok && (rc = check_heads(&v, err))) goto cleanup;
    if (out->ok && (rc = check_models(&v, err))) goto cleanup;
    if (out->ok && (rc = check_config(&v, err))) goto cleanup;
    {
        /* The head as stored, whatever the checks found: what a reviewer
         * compares with a copy taken earlier. */
        sqlite3_stmt *s;
        uint8_t h[32];
        fl_audit_genesis(h, v.fed);
        hex32(out->head, h);
        if (sqlite3_prepare_v2(v.db, "SELECT hash FROM events ORDER BY id DESC LIMIT 1", -1, &s,
                               NULL) == SQLITE_OK) {
            if (sqlite3_step(s) == SQLITE_ROW) {
                const uint8_t *p = col_hash(s, 0);
                if (p)
                    hex32(out->head, p);
                else
                    snprintf(out->head, sizeof out->head, "%s", "(damaged)");
            }
            sqlite3_finalize(s);
        }
    }
cleanup:
    if (v.db) {
        sqlite3_exec(v.db, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(v.db);
    }
    free(v.fed);
    free(v.cert);
    free(v.hashes);
    free(v.head_rounds);
    if (rc) out->ok = 0;
    return rc;
}

int fl_audit_verify(fl_audit_report *out, const char *db_path, const char *ca_path,
                    char err[FL_ERR_LEN]) {
    return fl_audit_verify_ex(out, db_path, ca_path, 0, err);
}
