/* report.c: see report.h; the document is described in docs/report.md and
 * DESIGN.md §11. The first half reads the aggregator's database (opened
 * read-only, inside one read transaction so a running aggregator's commits
 * cannot tear the snapshot) into the JSON twin; the second half renders that
 * JSON, and only that JSON, as HTML. Tables and meta keys that newer
 * aggregators add (fairness, chain_heads, meta "config") are optional: the
 * section then says "not recorded". The audit-log verifier (aggregator/audit.h)
 * is used when this build has it. */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/ini.h"

/* The verifier lands in its own change; until a tree has it, the report says
 * the verification is "not available" rather than failing to build. */
#if defined(__has_include)
#if __has_include("aggregator/audit.h")
#include "aggregator/audit.h"
#define FL_REPORT_HAVE_AUDIT 1
#endif
#endif

/* The numeric disparities of docs/fairness.md, in the order the report shows
 * them; four_fifths_rule_violated is a flag, not a trend. Ratios are charted
 * apart from differences because they live on another scale. */
static const char *const DISPARITIES[] = {"demographic_parity_difference",
                                          "equalized_odds_difference",
                                          "equalized_odds_difference_to_overall",
                                          "equal_opportunity_difference",
                                          "average_odds_difference",
                                          "generalized_entropy_index",
                                          "theil_index",
                                          "demographic_parity_ratio",
                                          "equalized_odds_ratio",
                                          "equalized_odds_ratio_to_overall",
                                          "disparate_impact",
                                          NULL};

static int is_ratio(const char *metric) {
    return strstr(metric, "ratio") || !strcmp(metric, "disparate_impact");
}

/* ================================================================ reading */

typedef struct rd {
    sqlite3 *db;
    const char *path;
    char *err;
    cJSON *warnings; /* borrowed from the document */
    int oom;         /* a cJSON allocation failed somewhere */
    fl_ini ini;      /* meta "config" parsed, when have_ini */
    int have_ini;
} rd;

static int db_fail(rd *r, const char *what) {
    return fl_seterr(r->err, FL_EIO, "%s: %s: %s", r->path, what, sqlite3_errmsg(r->db));
}

static int prep(rd *r, sqlite3_stmt **s, const char *sql) {
    if (sqlite3_prepare_v2(r->db, sql, -1, s, NULL) == SQLITE_OK) return FL_OK;
    *s = NULL;
    return db_fail(r, "query failed");
}

/* Steps s: 1 row, 0 done, negative on error (reported). */
static int step(rd *r, sqlite3_stmt *s) {
    int x = sqlite3_step(s);
    if (x == SQLITE_ROW) return 1;
    if (x == SQLITE_DONE) return 0;
    return db_fail(r, "read failed");
}

/* cJSON adds that remember an allocation failure instead of each caller
 * checking: the document is discarded at the end if any failed. */
static cJSON *chk(rd *r, cJSON *item) {
    if (!item) r->oom = 1;
    return item;
}

static cJSON *add_obj(rd *r, cJSON *o, const char *k) {
    return chk(r, cJSON_AddObjectToObject(o, k));
}

static cJSON *add_arr(rd *r, cJSON *o, const char *k) {
    return chk(r, cJSON_AddArrayToObject(o, k));
}

/* A number, or null when not finite (JSON has no NaN). */
static void add_num(rd *r, cJSON *o, const char *k, double v) {
    if (!o) return;
    chk(r, isfinite(v) ? cJSON_AddNumberToObject(o, k, v) : cJSON_AddNullToObject(o, k));
}

static void add_str(rd *r, cJSON *o, const char *k, const char *v) {
    if (!o) return;
    chk(r, v ? cJSON_AddStringToObject(o, k, v) : cJSON_AddNullToObject(o, k));
}

static void add_bool(rd *r, cJSON *o, const char *k, int v) {
    if (o) chk(r, cJSON_AddBoolToObject(o, k, v));
}

static void push(rd *r, cJSON *arr, cJSON *item) {
    if (!chk(r, item)) return;
    if (!arr || !cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        r->oom = 1;
    }
}

static void push_num(rd *r, cJSON *arr, double v) {
    push(r, arr, isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull());
}

static void warn(rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(rd *r, const char *fmt, ...) {
    char b[FL_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    push(r, r->warnings, cJSON_CreateString(b));
}

static void hex(char *out, const uint8_t *p, size_t n) {
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

/* A column as the JSON value of its SQLite type (blobs as hex). */
static void add_col(rd *r, cJSON *o, const char *k, sqlite3_stmt *s, int i) {
    switch (sqlite3_column_type(s, i)) {
    case SQLITE_INTEGER:
    case SQLITE_FLOAT:
        add_num(r, o, k, sqlite3_column_double(s, i));
        break;
    case SQLITE_TEXT:
        add_str(r, o, k, (const char *)sqlite3_column_text(s, i));
        break;
    case SQLITE_BLOB: {
        size_t n = (size_t)sqlite3_column_bytes(s, i);
        char *h = malloc(2 * n + 1);
        if (!h) {
            r->oom = 1;
            return;
        }
        hex(h, sqlite3_column_blob(s, i), n);
        add_str(r, o, k, h);
        free(h);
        break;
    }
    default:
        add_str(r, o, k, NULL);
    }
}

static double col_num(sqlite3_stmt *s, int i) {
    return sqlite3_column_type(s, i) == SQLITE_NULL ? NAN : sqlite3_column_double(s, i);
}

static const char *col_text(sqlite3_stmt *s, int i) {
    return (const char *)sqlite3_column_text(s, i);
}

static int has_table(rd *r, const char *name) {
    sqlite3_stmt *s = NULL;
    int yes = 0;
    if (sqlite3_prepare_v2(r->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                           -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        yes = sqlite3_step(s) == SQLITE_ROW;
    }
    sqlite3_finalize(s);
    return yes;
}

static int has_column(rd *r, const char *table, const char *col) {
    sqlite3_stmt *s = NULL;
    int yes = 0;
    if (sqlite3_prepare_v2(r->db, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2", -1, &s,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, col, -1, SQLITE_STATIC);
        yes = sqlite3_step(s) == SQLITE_ROW;
    }
    sqlite3_finalize(s);
    return yes;
}

/* meta[key] (malloc'd) or NULL when absent; *rc set on a read error. */
static char *meta_get(rd *r, const char *key, int *rc) {
    sqlite3_stmt *s = NULL;
    char *v = NULL;
    if ((*rc = prep(r, &s, "SELECT value FROM meta WHERE key = ?1"))) return NULL;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    int x = step(r, s);
    if (x < 0)
        *rc = x;
    else if (x && col_text(s, 0) && !(v = strdup(col_text(s, 0))))
        *rc = fl_seterr(r->err, FL_ENOMEM, "out of memory");
    sqlite3_finalize(s);
    return v;
}

/* Opens path read-only and checks that it is an aggregator database: every
 * table that store.c has always created must be there. */
static int open_db(rd *r) {
    static const char *const need[] = {"meta",   "sites",         "rounds", "models",
                                       "events", "participation", "metrics"};
    struct stat st;
    if (stat(r->path, &st))
        return fl_seterr(r->err, FL_EINVAL, "%s: cannot open: %s", r->path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fl_seterr(r->err, FL_EINVAL,
                         "%s: not a regular file (expected an aggregator database)", r->path);
    if (sqlite3_open_v2(r->path, &r->db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        return fl_seterr(r->err, FL_EINVAL, "%s: cannot open: %s", r->path,
                         r->db ? sqlite3_errmsg(r->db) : "out of memory");
    sqlite3_busy_timeout(r->db, 5000);
    sqlite3_stmt *s = NULL;
    int x = sqlite3_prepare_v2(r->db, "SELECT COUNT(*) FROM sqlite_master", -1, &s, NULL);
    if (x == SQLITE_OK) x = sqlite3_step(s) == SQLITE_ROW ? SQLITE_OK : sqlite3_errcode(r->db);
    sqlite3_finalize(s);
    if (x == SQLITE_NOTADB)
        return fl_seterr(r->err, FL_EINVAL,
                         "%s: not an SQLite database (expected a Cohort aggregator database)",
                         r->path);
    if (x != SQLITE_OK) return db_fail(r, "cannot read");
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        if (!has_table(r, need[i]))
            return fl_seterr(r->err, FL_EINVAL,
                             "%s: not a Cohort aggregator database (no table '%s')", r->path,
                             need[i]);
    /* One snapshot for every query below. */
    if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(r, "cannot start a read transaction");
    return FL_OK;
}

static const char *cfg(const rd *r, const char *section, const char *key) {
    return r->have_ini ? fl_ini_get(&r->ini, section, key, NULL) : NULL;
}

static void add_cfg_num(rd *r, cJSON *o, const char *k, const char *section, const char *key) {
    const char *v = cfg(r, section, key);
    char *end = NULL;
    double d = v ? strtod(v, &end) : NAN;
    add_num(r, o, k, end && end != v && !*end ? d : NAN);
}

/* ---------------------------------------------------------- federation */

static int read_sites(rd *r, cJSON *fed) {
    sqlite3_stmt *s = NULL;
    cJSON *arr = add_arr(r, fed, "sites");
    int rc = prep(r, &s, "SELECT site, name, n_examples, joined_at FROM sites ORDER BY site");
    int x = 0;
    while (!rc && (x = step(r, s)) > 0) {
        cJSON *o = cJSON_CreateObject();
        push(r, arr, o);
        add_col(r, o, "site", s, 0);
        add_col(r, o, "name", s, 1);
        add_col(r, o, "n_examples", s, 2);
        add_col(r, o, "joined_at", s, 3);
    }
    if (!rc && x < 0) rc = x;
    sqlite3_finalize(s);
    return rc;
}

static int read_events_summary(rd *r, cJSON *fed) {
    sqlite3_stmt *s = NULL;
    cJSON *ev = add_obj(r, fed, "events");
    cJSON *kinds = add_obj(r, ev, "by_kind");
    double total = 0;
    int rc = prep(r, &s, "SELECT kind, COUNT(*) FROM events GROUP BY kind ORDER BY kind");
    int x = 0;
    while (!rc && (x = step(r, s)) > 0) {
        add_num(r, kinds, col_text(s, 0) ? col_text(s, 0) : "", sqlite3_column_double(s, 1));
        total += sqlite3_column_double(s, 1);
    }
    if (!rc && x < 0) rc = x;
    sqlite3_finalize(s);
    add_num(r, ev, "total", total);
    if (rc) return rc;
    /* How the federation ended, when it did (aggregator/round.c "done"). */
    if ((rc =
             prep(r, &s, "SELECT detail FROM events WHERE kind = 'done' ORDER BY id DESC LIMIT 1")))
        return rc;
    if ((x = step(r, s)) < 0) rc = x;
    add_str(r, fed, "end", x > 0 ? col_text(s, 0) : NULL);
    sqlite3_finalize(s);
    return rc;
}

static int read_federation(rd *r, cJSON *doc, const char *config) {
    int rc = FL_OK;
    cJSON *fed = add_obj(r, doc, "federation");
    char *id = meta_get(r, "federation_id", &rc);
    if (rc) return rc;
    add_str(r, fed, "id", id ? id : cfg(r, "aggregator", "federation_id"));
    free(id);
    add_str(r, fed, "strategy", cfg(r, "federation", "strategy"));
    add_str(r, fed, "model", cfg(r, "model", "type"));
    add_cfg_num(r, fed, "rounds_planned", "federation", "rounds");
    add_cfg_num(r, fed, "min_sites", "federation", "min_sites");
    add_cfg_num(r, fed, "fraction", "federation", "fraction");
    add_str(r, fed, "allowed_sites", cfg(r, "aggregator", "sites"));
    add_bool(r, fed, "config_recorded", config != NULL);
    sqlite3_stmt *s = NULL;
    if ((rc = prep(r, &s,
                   "SELECT COUNT(*), MAX(round), MIN(committed_at), MAX(committed_at) "
                   "FROM rounds WHERE round >= 1")))
        return rc;
    int x = step(r, s);
    if (x > 0) {
        add_col(r, fed, "rounds_committed", s, 0);
        add_col(r, fed, "last_round", s, 1);
        add_col(r, fed, "first_commit_at", s, 2);
        add_col(r, fed, "last_commit_at", s, 3);
    }
    sqlite3_finalize(s);
    if (x < 0) return x;
    if ((rc = read_sites(r, fed))) return rc;
    return read_events_summary(r, fed);
}

/* ---------------------------------------------------------- lineage */

static int read_lineage(rd *r, cJSON *doc) {
    sqlite3_stmt *s = NULL;
    cJSON *arr = add_arr(r, doc, "lineage");
    int rc = prep(r, &s,
                  "SELECT m.round, m.sha256, m.blob, m.signature, r.committed_at, r.seed "
                  "FROM models m LEFT JOIN rounds r ON r.round = m.round ORDER BY m.round");
    int x = 0;
    while (!rc && (x = step(r, s)) > 0) {
        cJSON *o = cJSON_CreateObject();
        push(r, arr, o);
        add_col(r, o, "round", s, 0);
        add_col(r, o, "committed_at", s, 4);
        add_col(r, o, "seed", s, 5);
        add_col(r, o, "sha256", s, 1);
        /* The stored hash is only evidence if the stored model still has it. */
        const void *blob = sqlite3_column_blob(s, 2);
        size_t n = (size_t)sqlite3_column_bytes(s, 2);
        uint8_t h[32];
        crypto_hash_sha256(h, blob ? blob : (const void *)"", n);
        int ok = sqlite3_column_bytes(s, 1) == 32 &&
                 sodium_memcmp(h, sqlite3_column_blob(s, 1), 32) == 0;
        add_bool(r, o, "sha256_verified", ok);
        add_num(r, o, "model_bytes", (double)n);
        add_col(r, o, "signature", s, 3);
    }
    if (!rc && x < 0) rc = x;
    sqlite3_finalize(s);
    return rc;
}

/* ---------------------------------------------------------- rounds */

typedef struct round_ix {
    int *num;
    cJSON **obj;
    int n;
} round_ix;

static cJSON *round_find(const round_ix *ix, int round) {
    int lo = 0, hi = ix->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (ix->num[mid] == round) return ix->obj[mid];
        if (ix->num[mid] < round)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

static int read_rounds(rd *r, cJSON *doc, round_ix *ix) {
    sqlite3_stmt *s = NULL;
    cJSON *arr = add_arr(r, doc, "rounds");
    int rc = prep(r, &s, "SELECT COUNT(*) FROM rounds WHERE round >= 1");
    int x = rc ? rc : step(r, s);
    int cap = x > 0 ? sqlite3_column_int(s, 0) : 0;
    sqlite3_finalize(s);
    s = NULL;
    if (x < 0) return x;
    ix->num = malloc(((size_t)cap + 1) * sizeof *ix->num);
    ix->obj = malloc(((size_t)cap + 1) * sizeof *ix->obj);
    if (!ix->num || !ix->obj) return fl_seterr(r->err, FL_ENOMEM, "out of memory");
    if ((rc = prep(r, &s,
                   "SELECT round, committed_at, n_completed, n_dropped, seed FROM rounds "
                   "WHERE round >= 1 ORDER BY round")))
        return rc;
    while ((x = step(r, s)) > 0 && ix->n < cap) {
        cJSON *o = cJSON_CreateObject();
        push(r, arr, o);
        if (!o) break;
        ix->num[ix->n] = sqlite3_column_int(s, 0);
        ix->obj[ix->n++] = o;
        add_col(r, o, "round", s, 0);
        add_col(r, o, "committed_at", s, 1);
        add_col(r, o, "completed", s, 2);
        add_col(r, o, "dropped", s, 3);
        add_col(r, o, "seed", s, 4);
        add_obj(r, o, "metrics");
        add_arr(r, o, "participants");
    }
    sqlite3_finalize(s);
    if (x < 0) return x;
    /* Every metric the round committed (store.c keeps them by name). */
    if ((rc = prep(r, &s, "SELECT round, name, value FROM metrics WHERE round >= 1"))) return rc;
    while ((x = step(r, s)) > 0) {
        cJSON *o = round_find(ix, sqlite3_column_int(s, 0));
        if (o && col_text(s, 1))
            add_num(r, cJSON_GetObjectItemCaseSensitive(o, "metrics"), col_text(s, 1),
                    col_num(s, 2));
    }
    sqlite3_finalize(s);
    if (x < 0) return x;
    for (int i = 0; i < ix->n; i++) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(ix->obj[i], "metrics");
        static const char *const main_metrics[] = {"accuracy", "auc", "loss", "eval_examples"};
        for (size_t k = 0; k < sizeof main_metrics / sizeof *main_metrics; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, main_metrics[k]);
            add_num(r, ix->obj[i], main_metrics[k], cJSON_IsNumber(v) ? v->valuedouble : NAN);
        }
    }
    if ((rc = prep(r, &s,
                   "SELECT p.round, p.site, s.name, p.status, p.reason, p.n_examples, p.epsilon "
                   "FROM participation p LEFT JOIN sites s ON s.site = p.site "
                   "WHERE p.round >= 1 ORDER BY p.round, p.site")))
        return rc;
    while ((x = step(r, s)) > 0) {
        cJSON *ro = round_find(ix, sqlite3_column_int(s, 0));
        if (!ro) continue;
        cJSON *o = cJSON_CreateObject();
        push(r, cJSON_GetObjectItemCaseSensitive(ro, "participants"), o);
        add_col(r, o, "site", s, 1);
        add_col(r, o, "name", s, 2);
        add_col(r, o, "status", s, 3);
        add_col(r, o, "reason", s, 4);
        add_col(r, o, "n_examples", s, 5);
        add_col(r, o, "epsilon", s, 6);
    }
    sqlite3_finalize(s);
    return x < 0 ? x : FL_OK;
}

/* ---------------------------------------------------------- privacy */

/* The value after `word ` in text ("... accountant rdp, delta 1e-05"), copied
 * into out; 0 when absent. */
static int detail_word(char *out, size_t cap, const char *text, const char *word) {
    size_t wl = strlen(word);
    for (const char *p = text; p && (p = strstr(p, word)); p += wl) {
        if ((p != text && p[-1] != ' ' && p[-1] != '(' && p[-1] != ',') || p[wl] != ' ') continue;
        const char *v = p + wl + 1;
        size_t n = strcspn(v, " ,;)");
        if (!n || n >= cap) continue;
        memcpy(out, v, n);
        out[n] = 0;
        return 1;
    }
    return 0;
}

static int read_privacy(rd *r, cJSON *doc) {
    cJSON *pv = add_obj(r, doc, "privacy");
    const char *mode = cfg(r, "privacy", "mode");
    add_str(r, pv, "mode", mode);
    add_cfg_num(r, pv, "noise_multiplier", "privacy", "noise_multiplier");
    add_cfg_num(r, pv, "clip", "privacy", "clip");
    add_cfg_num(r, pv, "max_epsilon", "privacy", "max_epsilon");
    /* The accountant and delta as the sites reported them in "privacy"
     * events win over the configuration, which only says what was asked. */
    char acc[64] = "", delta[64] = "";
    double n_events = 0;
    sqlite3_stmt *s = NULL;
    int rc = prep(r, &s, "SELECT detail FROM events WHERE kind = 'privacy' ORDER BY id");
    int x = 0;
    while (!rc && (x = step(r, s)) > 0) {
        n_events++;
        const char *d = col_text(s, 0);
        if (d) {
            detail_word(acc, sizeof acc, d, "accountant");
            detail_word(delta, sizeof delta, d, "delta");
        }
    }
    if (!rc && x < 0) rc = x;
    sqlite3_finalize(s);
    if (rc) return rc;
    add_num(r, pv, "events", n_events);
    const char *acc_src = acc[0] ? "events" : NULL;
    if (!acc[0] && cfg(r, "privacy", "accountant")) {
        snprintf(acc, sizeof acc, "%s", cfg(r, "privacy", "accountant"));
        acc_src = "config";
    }
    const char *delta_src = delta[0] ? "events" : NULL;
    if (!delta[0] && cfg(r, "privacy", "delta")) {
        snprintf(delta, sizeof delta, "%s", cfg(r, "privacy", "delta"));
        delta_src = "config";
    }

    cJSON *sites = add_arr(r, pv, "sites");
    if ((rc = prep(r, &s,
                   "SELECT p.site, s.name, p.round, p.epsilon, p.status FROM participation p "
                   "LEFT JOIN sites s ON s.site = p.site WHERE p.round >= 1 "
                   "ORDER BY p.site, p.round")))
        return rc;
    cJSON *cur = NULL, *series = NULL;
    int cur_site = -1;
    double last = NAN, refused = 0, max_eps = NAN;
    while ((x = step(r, s)) > 0) {
        int site = sqlite3_column_int(s, 0);
        if (site != cur_site) {
            if (cur) {
                add_num(r, cur, "final_epsilon", last);
                add_num(r, cur, "refused", refused);
            }
            cur = cJSON_CreateObject();
            push(r, sites, cur);
            add_col(r, cur, "site", s, 0);
            add_col(r, cur, "name", s, 1);
            series = add_arr(r, cur, "epsilon");
            cur_site = site;
            last = NAN;
            refused = 0;
        }
        const char *st = col_text(s, 4);
        if (st && !strcmp(st, "refused")) refused++;
        double e = col_num(s, 3);
        if (!isfinite(e)) continue;
        cJSON *pt = cJSON_CreateObject();
        push(r, series, pt);
        add_col(r, pt, "round", s, 2);
        add_num(r, pt, "epsilon", e);
        last = e;
        if (!(max_eps >= e)) max_eps = e;
    }
    sqlite3_finalize(s);
    if (x < 0) return x;
    if (cur) {
        add_num(r, cur, "final_epsilon", last);
        add_num(r, cur, "refused", refused);
    }
    /* Sites that never reported a spend are not privacy data. */
    for (cJSON *it = sites ? sites->child : NULL; it;) {
        cJSON *next = it->next;
        if (!cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(it, "epsilon")))
            cJSON_Delete(cJSON_DetachItemViaPointer(sites, it));
        it = next;
    }
    int recorded = cJSON_GetArraySize(sites) > 0;
    if (!acc[0] && recorded) {
        /* Every Cohort site composes its ledger with the RDP accountant
         * (client/agent.c, docs/privacy.md); older aggregators did not
         * record it. */
        snprintf(acc, sizeof acc, "rdp");
        acc_src = "default";
    }
    add_str(r, pv, "accountant", acc[0] ? acc : NULL);
    add_str(r, pv, "accountant_source", acc_src);
    char *end = NULL;
    double dv = delta[0] ? strtod(delta, &end) : NAN;
    add_num(r, pv, "delta", end && !*end ? dv : NAN);
    add_str(r, pv, "delta_source", delta_src);
    add_str(r, pv, "sampling",
            recorded || (mode && !strcmp(mode, "record"))
                ? "Poisson sampling of each site's records (DP-SGD); neighbouring datasets "
                  "differ by adding or removing one record"
                : NULL);
    add_num(r, pv, "max_epsilon_spent", max_eps);
    add_str(r, pv, "status", recorded ? "recorded" : "not recorded");
    add_str(r, pv, "reason",
            recorded ? NULL
            : mode && !strcmp(mode, "none")
                ? "privacy mode is none: the sites trained without differential privacy"
                : "no site reported a privacy spend");
    return FL_OK;
}

/* ---------------------------------------------------------- secure aggregation */

static int read_secagg(rd *r, cJSON *doc) {
    cJSON *sa = add_obj(r, doc, "secagg");
    int in_config = r->have_ini && fl_ini_has_section(&r->ini, "secagg");
    cJSON *settings = add_obj(r, sa, "settings");
    for (int i = 0; in_config && i < r->ini.n_entries; i++)
        if (!strcmp(r->ini.entries[i].section, "secagg"))
            add_str(r, settings, r->ini.entries[i].key, r->ini.entries[i].value);
    int enabled = 0;
    char e[FL_ERR_LEN];
    if (in_config && fl_ini_get_bool(&enabled, &r->ini, "secagg", "enabled", 0, e)) {
        warn(r, "configuration: %s", e);
        enabled = 0;
    }
    if (in_config)
        add_bool(r, sa, "enabled", enabled);
    else
        add_str(r, sa, "enabled", NULL);
    add_cfg_num(r, sa, "threshold", "secagg", "threshold");
    add_cfg_num(r, sa, "neighbors", "secagg", "neighbors");

    /* Its events: key advertisements, unmasking, rounds aborted below the
     * threshold. Capped so a long federation keeps a readable report; the
     * counts by kind cover all of them. */
    enum { MAX_LISTED = 500 };
    cJSON *kinds = add_obj(r, sa, "events_by_kind");
    cJSON *list = add_arr(r, sa, "events");
    sqlite3_stmt *s = NULL;
    int rc = prep(r, &s,
                  "SELECT id, at, kind, site, round, detail FROM events "
                  "WHERE kind LIKE 'secagg%' ORDER BY id");
    int x = 0, n = 0;
    while (!rc && (x = step(r, s)) > 0) {
        const char *k = col_text(s, 2) ? col_text(s, 2) : "";
        cJSON *c = cJSON_GetObjectItemCaseSensitive(kinds, k);
        if (c)
            cJSON_SetNumberValue(c, c->valuedouble + 1);
        else
            add_num(r, kinds, k, 1);
        if (n++ >= MAX_LISTED) continue;
        cJSON *o = cJSON_CreateObject();
        push(r, list, o);
        add_col(r, o, "id", s, 0);
        add_col(r, o, "at", s, 1);
        add_col(r, o, "kind", s, 2);
        add_col(r, o, "site", s, 3);
        add_col(r, o, "round", s, 4);
        add_col(r, o, "detail", s, 5);
    }
    if (!rc && x < 0) rc = x;
    sqlite3_finalize(s);
    add_num(r, sa, "n_events", n);
    add_bool(r, sa, "events_truncated", n > MAX_LISTED);
    int recorded = in_config || n > 0;
    add_str(r, sa, "status", recorded ? "recorded" : "not recorded");
    add_str(r, sa, "reason",
            recorded ? NULL
                     : "no [secagg] section in the recorded configuration and no secure-"
                       "aggregation events");
    return rc;
}

/* ---------------------------------------------------------- fairness */

/* The trend entry for attribute name in trends (created on first sight). */
static cJSON *trend_for(rd *r, cJSON *trends, const char *name) {
    cJSON *t;
    cJSON_ArrayForEach(t, trends) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(t, "attribute");
        if (cJSON_IsString(a) && !strcmp(a->valuestring, name)) return t;
    }
    t = cJSON_CreateObject();
    push(r, trends, t);
    add_str(r, t, "attribute", name);
    add_arr(r, t, "rounds");
    cJSON *series = add_obj(r, t, "series");
    for (int i = 0; DISPARITIES[i]; i++)
        add_arr(r, series, DISPARITIES[i]);
    add_arr(r, t, "alerts");
    return t;
}

static void add_trends(rd *r, cJSON *trends, int round, const cJSON *m) {
    const cJSON *attrs = cJSON_GetObjectItemCaseSensitive(m, "attributes");
    const cJSON *a;
    cJSON_ArrayForEach(a, attrs) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(a, "attribute");
        if (!cJSON_IsString(name)) continue;
        cJSON *t = trend_for(r, trends, name->valuestring);
        if (!t) return;
        push_num(r, cJSON_GetObjectItemCaseSensitive(t, "rounds"), round);
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(a, "disparities");
        cJSON *series = cJSON_GetObjectItemCaseSensitive(t, "series");
        for (int i = 0; DISPARITIES[i]; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, DISPARITIES[i]);
            push_num(r, cJSON_GetObjectItemCaseSensitive(series, DISPARITIES[i]),
                     cJSON_IsNumber(v) ? v->valuedouble : NAN);
        }
        push_num(r, cJSON_GetObjectItemCaseSensitive(t, "alerts"),
                 cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(a, "alerts")));
    }
}

static int read_fairness(rd *r, cJSON *doc) {
    cJSON *fa = add_obj(r, doc, "fairness");
    if (!has_table(r, "fairness")) {
        add_str(r, fa, "status", "not recorded");
        add_str(r, fa, "reason",
                "this database has no fairness table (written by an aggregator "
                "without the fairness audit)");
        return FL_OK;
    }
    cJSON *trends = add_arr(r, fa, "trends");
    cJSON *alerts = add_arr(r, fa, "alerts_per_round");
    cJSON *latest = NULL;
    int latest_round = 0, n = 0;
    sqlite3_stmt *s = NULL;
    int rc = prep(r, &s, "SELECT round, metrics FROM fairness ORDER BY round");
    int x = 0;
    while (!rc && (x = step(r, s)) > 0) {
        int round = sqlite3_column_int(s, 0);
        const char *text = col_text(s, 1);
        cJSON *m = text ? cJSON_Parse(text) : NULL;
        if (!cJSON_IsObject(m)) {
            warn(r, "%s: fairness row for round %d: metrics is not a JSON object", r->path, round);
            cJSON_Delete(m);
            continue;
        }
        n++;
        add_trends(r, trends, round, m);
        cJSON *a = cJSON_CreateObject();
        push(r, alerts, a);
        add_num(r, a, "round", round);
        add_num(r, a, "alerts", cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(m, "alerts")));
        cJSON_Delete(latest);
        latest = m;
        latest_round = round;
    }
    if (!rc && x < 0) rc = x;
    sqlite3_finalize(s);
    add_num(r, fa, "rounds_recorded", n);
    add_str(r, fa, "status", latest ? "recorded" : "not recorded");
    if (latest) {
        add_num(r, fa, "last_round", latest_round);
        if (!cJSON_AddItemToObject(fa, "latest", latest)) {
            cJSON_Delete(latest);
            r->oom = 1;
        }
    } else {
        add_str(r, fa, "reason", "no round recorded a fairness audit");
    }
    return rc;
}

/* ---------------------------------------------------------- audit */

static void signature_status(rd *r, cJSON *doc, const char *status, const char *table, double bad) {
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(doc, "lineage")) {
        const char *v;
        double round = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e, "round"));
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "signature")))
            v = "unsigned";
        else if (!strcmp(status, "verified"))
            v = "verified";
        else if (!strcmp(status, "failed") && table && !strcmp(table, "models") && bad == round)
            v = "invalid";
        else
            v = "not checked";
        add_str(r, e, "signature_status", v);
    }
}

static int read_audit(rd *r, cJSON *doc, const char *db_path, const fl_report_options *opt) {
    cJSON *au = add_obj(r, doc, "audit");
    int chained = has_column(r, "events", "hash");
    add_bool(r, au, "chained", chained);
    add_str(r, au, "ca", opt && opt->ca_path ? opt->ca_path : NULL);
    if (has_table(r, "chain_heads")) {
        sqlite3_stmt *s = NULL;
        int rc = prep(r, &s, "SELECT COUNT(*) FROM chain_heads");
        int x = rc ? rc : step(r, s);
        if (x > 0) add_num(r, au, "chain_heads", sqlite3_column_double(s, 0));
        sqlite3_finalize(s);
        if (x < 0) return x;
    }
    const char *status;
    char table[32] = "";
    double bad = -1;
#ifdef FL_REPORT_HAVE_AUDIT
    fl_audit_report a;
    char e[FL_ERR_LEN] = "";
    memset(&a, 0, sizeof a);
    int arc = fl_audit_verify(&a, db_path, opt ? opt->ca_path : NULL, e);
    if (arc) {
        status = chained ? "error" : "not recorded";
        add_str(r, au, "reason", e[0] ? e : fl_strerror(arc));
    } else {
        status = a.ok ? "verified" : chained ? "failed" : "not recorded";
        snprintf(table, sizeof table, "%s", a.table);
        bad = a.ok ? -1 : (double)a.first_bad_id;
        add_bool(r, au, "ok", a.ok);
        add_num(r, au, "n_events", (double)a.n_events);
        add_num(r, au, "n_signatures", (double)a.n_signatures);
        add_num(r, au, "first_bad_id", a.ok ? NAN : (double)a.first_bad_id);
        add_str(r, au, "table", a.ok || !a.table[0] ? NULL : a.table);
        add_str(r, au, "reason", a.ok ? NULL : a.reason);
        add_str(r, au, "head", a.head[0] ? a.head : NULL);
    }
    if (!chained)
        add_str(r, au, "note",
                "the events table has no hash chain: this database was written "
                "before the audit log was chained");
#else
    (void)db_path;
    status = "not available";
    add_str(r, au, "reason", "this build of Cohort has no audit-log verifier");
#endif
    add_str(r, au, "status", status);
    signature_status(r, doc, status, table, bad);
    return FL_OK;
}

/* ---------------------------------------------------------- config, summary */

static void read_config(rd *r, cJSON *doc, const char *config, const char *sha) {
    cJSON *c = add_obj(r, doc, "config");
    add_str(r, c, "status", config ? "recorded" : "not recorded");
    add_str(r, c, "text", config);
    add_str(r, c, "sha256", sha);
    if (config) {
        uint8_t h[32];
        char hx[65];
        crypto_hash_sha256(h, (const unsigned char *)config, strlen(config));
        hex(hx, h, 32);
        add_str(r, c, "sha256_computed", hx);
        if (sha)
            add_bool(r, c, "sha256_matches", !strcmp(hx, sha));
        else
            add_str(r, c, "sha256_matches", NULL);
    } else {
        add_str(r, c, "reason", "the aggregator did not record its configuration in this database");
    }
}

/* Headline figures, all derived from the sections above. */
static void summarize(rd *r, cJSON *doc) {
    cJSON *s = add_obj(r, doc, "summary");
    const cJSON *fed = cJSON_GetObjectItemCaseSensitive(doc, "federation");
    const cJSON *rounds = cJSON_GetObjectItemCaseSensitive(doc, "rounds");
    const cJSON *last = cJSON_GetArrayItem(rounds, cJSON_GetArraySize(rounds) - 1);
    add_num(r, s, "rounds_committed",
            cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(fed, "rounds_committed")));
    add_num(r, s, "sites",
            (double)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(fed, "sites")));
    static const char *const k[] = {"accuracy", "auc", "loss"};
    for (size_t i = 0; i < 3; i++)
        add_num(r, s, k[i],
                last ? cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(last, k[i])) : NAN);
    double not_done = 0;
    const cJSON *ro, *p;
    cJSON_ArrayForEach(ro, rounds) {
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(ro, "participants")) {
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(p, "status");
            if (!cJSON_IsString(st) || strcmp(st->valuestring, "completed")) not_done++;
        }
    }
    add_num(r, s, "not_completed", not_done);
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(doc, "privacy");
    add_num(r, s, "max_epsilon_spent",
            cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(pv, "max_epsilon_spent")));
    const cJSON *fa = cJSON_GetObjectItemCaseSensitive(doc, "fairness");
    const cJSON *latest = cJSON_GetObjectItemCaseSensitive(fa, "latest");
    if (latest)
        add_num(r, s, "fairness_alerts",
                cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(latest, "alerts")));
    else
        add_num(r, s, "fairness_alerts", NAN);
    const cJSON *au = cJSON_GetObjectItemCaseSensitive(doc, "audit");
    add_str(r, s, "audit", cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(au, "status")));
}

static void now_iso(char out[32]) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int fl_report_build(cJSON **json, const char *db_path, const fl_report_options *opt,
                    char err[FL_ERR_LEN]) {
    *json = NULL;
    rd r = {.path = db_path, .err = err};
    char *config = NULL, *sha = NULL;
    round_ix ix = {0};
    cJSON *doc = cJSON_CreateObject();
    int rc = doc ? FL_OK : fl_seterr(err, FL_ENOMEM, "out of memory");
    if (rc) goto cleanup;
    if ((rc = open_db(&r))) goto cleanup;
    char at[32];
    if (opt && opt->generated_at)
        snprintf(at, sizeof at, "%s", opt->generated_at);
    else
        now_iso(at);
    add_num(&r, doc, "report_version", FL_REPORT_VERSION);
    add_str(&r, doc, "generator", "cohort report");
    add_str(&r, doc, "generated_at", at);
    add_str(&r, doc, "database", db_path);
    r.warnings = add_arr(&r, doc, "warnings");
    config = meta_get(&r, "config", &rc);
    if (!rc) sha = meta_get(&r, "config_sha256", &rc);
    if (rc) goto cleanup;
    if (config) {
        char e[FL_ERR_LEN];
        if (fl_ini_parse(&r.ini, "config", config, strlen(config), e) == FL_OK)
            r.have_ini = 1;
        else
            warn(&r, "%s: the recorded configuration does not parse: %s", db_path, e);
    }
    if ((rc = read_federation(&r, doc, config)) || (rc = read_lineage(&r, doc)) ||
        (rc = read_rounds(&r, doc, &ix)) || (rc = read_privacy(&r, doc)) ||
        (rc = read_secagg(&r, doc)) || (rc = read_fairness(&r, doc)) ||
        (rc = read_audit(&r, doc, db_path, opt)))
        goto cleanup;
    read_config(&r, doc, config, sha);
    summarize(&r, doc);
    if (r.oom) {
        rc = fl_seterr(err, FL_ENOMEM, "out of memory");
        goto cleanup;
    }
    *json = doc;
    doc = NULL;
cleanup:
    if (r.db) {
        sqlite3_exec(r.db, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(r.db);
    }
    if (r.have_ini) fl_ini_free(&r.ini);
    free(ix.num);
    free(ix.obj);
    free(config);
    free(sha);
    cJSON_Delete(doc);
    return rc;
}

/* ================================================================ rendering */

/* A growing text buffer; an allocation failure is remembered and reported
 * once at the end. */
typedef struct sb {
    char *p;
    size_t n, cap;
    int oom;
} sb;

static void sb_put(sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_puts(sb *b, const char *s) {
    sb_put(b, s, strlen(s));
}

/* Formatted markup. Never given text from the database: that goes through
 * sb_esc. */
static void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}

/* Text as HTML character data or a quoted attribute value: the five
 * characters that can end either are replaced (HTML Living Standard,
 * "13.1.2.6 Restrictions on the contents of raw text and escapable raw text
 * elements" does not apply: this is never placed inside <script>/<style>). */
static void sb_esc(sb *b, const char *s) {
    if (!s) return;
    const char *run = s;
    for (; *s; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            break;
        }
        if (rep) {
            sb_put(b, run, (size_t)(s - run));
            sb_puts(b, rep);
            run = s + 1;
        }
    }
    sb_put(b, run, (size_t)(s - run));
}

static const cJSON *jget(const cJSON *o, const char *k) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = jget(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *k) {
    const cJSON *v = jget(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

#define DASH "&#8212;"

static void sb_num(sb *b, double v, const char *fmt) {
    if (isfinite(v))
        sb_printf(b, fmt, v);
    else
        sb_puts(b, DASH);
}

static void td_num(sb *b, double v, const char *fmt) {
    sb_puts(b, "<td class=\"num\">");
    sb_num(b, v, fmt);
    sb_puts(b, "</td>");
}

static void td_text(sb *b, const char *s) {
    sb_puts(b, "<td>");
    if (s)
        sb_esc(b, s);
    else
        sb_puts(b, DASH);
    sb_puts(b, "</td>");
}

/* A disparity: counts and parameters (gei_alpha, groups_compared) as
 * integers, tiny indices with their significant digits, the rest with four
 * decimals. */
static void td_metric(sb *b, double v) {
    if (isfinite(v) && v == floor(v) && fabs(v) < 1e9)
        td_num(b, v, "%.0f");
    else if (isfinite(v) && fabs(v) < 1e-3)
        td_num(b, v, "%.3g");
    else
        td_num(b, v, "%.4f");
}

/* A rate or ratio: four decimals. */
#define F4 "%.4f"
/* A count. */
#define F0 "%.0f"

static void kv_text(sb *b, const char *k, const char *v) {
    sb_printf(b, "<tr><th scope=\"row\">%s</th>", k);
    td_text(b, v);
    sb_puts(b, "</tr>\n");
}

static void kv_num(sb *b, const char *k, double v, const char *fmt) {
    sb_printf(b, "<tr><th scope=\"row\">%s</th>", k);
    td_num(b, v, fmt);
    sb_puts(b, "</tr>\n");
}

static void not_recorded(sb *b, const cJSON *section) {
    const char *why = jstr(section, "reason");
    sb_puts(b, "<p class=\"na\"><strong>Not recorded.</strong> ");
    sb_esc(b, why ? why : "This database holds no data for this section.");
    sb_puts(b, "</p>\n");
}

static int recorded(const cJSON *section) {
    const char *st = jstr(section, "status");
    return st && !strcmp(st, "recorded");
}

static void badge(sb *b, const char *status) {
    const char *cls = "na";
    if (!status) status = "not recorded";
    if (!strcmp(status, "verified") || !strcmp(status, "completed")) cls = "ok";
    if (!strcmp(status, "failed") || !strcmp(status, "error") || !strcmp(status, "invalid") ||
        !strcmp(status, "dropped") || !strcmp(status, "refused") || !strcmp(status, "rejected"))
        cls = "bad";
    sb_printf(b, "<span class=\"badge %s\">", cls);
    sb_esc(b, status);
    sb_puts(b, "</span>");
}

/* ---------------------------------------------------------- SVG charts */

typedef struct series {
    const char *name;
    const double *x, *y; /* (n); NAN leaves a gap */
    int n;
} series;

typedef struct chart {
    const char *title, *xlabel, *ylabel;
    double ref;            /* a horizontal reference line, or NAN */
    const char *ref_label; /* its label */
    int diagonal;          /* draw y = x (calibration) */
    int integer_x;         /* x ticks on integers (rounds) */
} chart;

static const char *const PALETTE[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

/* A round step of about span/target: 1, 2 or 5 times a power of ten. */
static double nice_step(double span, int target) {
    double raw = span / target;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

static void tick_label(char out[32], double v, double step) {
    if (fabs(v) < step * 1e-9) v = 0; /* no "-0" */
    snprintf(out, 32, "%.6g", v);
}

/* A line chart as inline SVG: axes with round ticks, one polyline per
 * series (gaps where a value is missing), points where there are few, and a
 * legend under the plot. Sized by viewBox so it scales to the page. */
static void svg_chart(sb *b, const chart *c, const series *s, int ns) {
    const double W = 760, L = 64, R = 20, T = 30, PH = 220, XB = 46;
    double PW = W - L - R;
    /* As many legend entries per row as the longest name allows (about 6.3
     * px a character at 11 px), at most four. */
    size_t longest = 1;
    for (int i = 0; i < ns; i++)
        if (s[i].name && strlen(s[i].name) > longest) longest = strlen(s[i].name);
    int per_row = (int)(PW / (34 + 6.3 * (double)longest));
    per_row = per_row < 1 ? 1 : per_row > 4 ? 4 : per_row;
    int rows = (ns + per_row - 1) / per_row;
    double H = T + PH + XB + rows * 18 + 6;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < s[i].n; k++)
            if (isfinite(s[i].x[k]) && isfinite(s[i].y[k])) {
                x0 = fmin(x0, s[i].x[k]);
                x1 = fmax(x1, s[i].x[k]);
                y0 = fmin(y0, s[i].y[k]);
                y1 = fmax(y1, s[i].y[k]);
            }
    sb_printf(b,
              "<figure><svg class=\"chart\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" "
              "height=\"%.0f\" role=\"img\" aria-label=\"",
              W, H, W, H);
    sb_esc(b, c->title);
    sb_puts(b, "\"><title>");
    sb_esc(b, c->title);
    sb_printf(b, "</title><text class=\"ct\" x=\"%.0f\" y=\"18\">", L);
    sb_esc(b, c->title);
    sb_puts(b, "</text>");
    if (!isfinite(x0)) {
        sb_printf(b, "<text class=\"nodata\" x=\"%.0f\" y=\"%.0f\">no data</text></svg></figure>\n",
                  L + PW / 2, T + PH / 2);
        return;
    }
    if (isfinite(c->ref)) {
        y0 = fmin(y0, c->ref);
        y1 = fmax(y1, c->ref);
    }
    if (c->diagonal) {
        x0 = y0 = fmin(0, fmin(x0, y0));
        x1 = y1 = fmax(1, fmax(x1, y1));
    }
    if (x1 - x0 < 1e-12) {
        x0 -= c->integer_x ? 1 : 0.5;
        x1 += c->integer_x ? 1 : 0.5;
    }
    if (y1 - y0 < 1e-12 * fmax(1, fabs(y1))) {
        double d = fabs(y0) > 0 ? fabs(y0) * 0.05 : 0.5;
        y0 -= d;
        y1 += d;
    }
    double ys = nice_step(y1 - y0, 5), xs = nice_step(x1 - x0, 10);
    if (c->integer_x && xs < 1) xs = 1;
    y0 = floor(y0 / ys) * ys;
    y1 = ceil(y1 / ys) * ys;
#define PX(v) (L + ((v)-x0) / (x1 - x0) * PW)
#define PY(v) (T + (y1 - (v)) / (y1 - y0) * PH)
    sb_printf(b, "<rect class=\"plot\" x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\"/>", L,
              T, PW, PH);
    char lab[32];
    int ny = (int)floor((y1 - y0) / ys + 0.5);
    for (int i = 0; i <= ny; i++) {
        double v = y0 + i * ys, y = PY(v);
        tick_label(lab, v, ys);
        sb_printf(b,
                  "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                  "<text class=\"yt\" x=\"%.1f\" y=\"%.1f\">%s</text>",
                  L, y, L + PW, y, L - 6, y + 4, lab);
    }
    double xt0 = ceil(x0 / xs - 1e-9) * xs;
    for (int i = 0; i <= 40; i++) {
        double v = xt0 + i * xs;
        if (v > x1 + xs * 1e-9) break;
        double x = PX(v);
        tick_label(lab, v, xs);
        sb_printf(b,
                  "<line class=\"tick\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                  "<text class=\"xt\" x=\"%.1f\" y=\"%.1f\">%s</text>",
                  x, T + PH, x, T + PH + 4, x, T + PH + 16, lab);
    }
    sb_printf(b, "<text class=\"xl\" x=\"%.1f\" y=\"%.1f\">", L + PW / 2, T + PH + 34);
    sb_esc(b, c->xlabel);
    sb_printf(b, "</text><text class=\"yl\" transform=\"translate(14 %.1f) rotate(-90)\">",
              T + PH / 2);
    sb_esc(b, c->ylabel);
    sb_puts(b, "</text>");
    if (c->diagonal)
        sb_printf(b, "<line class=\"ref\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>",
                  PX(x0), PY(x0), PX(x1), PY(x1));
    if (isfinite(c->ref)) {
        sb_printf(b,
                  "<line class=\"ref\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                  "<text class=\"rl\" x=\"%.1f\" y=\"%.1f\">",
                  L, PY(c->ref), L + PW, PY(c->ref), L + PW - 4, PY(c->ref) - 4);
        sb_esc(b, c->ref_label);
        sb_puts(b, "</text>");
    }
    for (int i = 0; i < ns; i++) {
        const char *col = PALETTE[i % 10];
        const char *dash = i >= 20   ? " stroke-dasharray=\"2 3\""
                           : i >= 10 ? " stroke-dasharray=\"7 3\""
                                     : "";
        sb_printf(b, "<path class=\"line\" stroke=\"%s\"%s d=\"", col, dash);
        int pen = 0;
        for (int k = 0; k < s[i].n; k++) {
            if (!isfinite(s[i].x[k]) || !isfinite(s[i].y[k])) {
                pen = 0;
                continue;
            }
            sb_printf(b, "%s%.1f %.1f", pen ? "L" : "M", PX(s[i].x[k]), PY(s[i].y[k]));
            pen = 1;
        }
        sb_puts(b, "\"/>");
        /* Points where a line cannot show them: few values, or a value with
         * no neighbour. */
        for (int k = 0; k < s[i].n; k++) {
            if (!isfinite(s[i].x[k]) || !isfinite(s[i].y[k])) continue;
            int alone = (k == 0 || !isfinite(s[i].y[k - 1])) &&
                        (k == s[i].n - 1 || !isfinite(s[i].y[k + 1]));
            if (s[i].n <= 40 || alone)
                sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>",
                          PX(s[i].x[k]), PY(s[i].y[k]), col);
        }
    }
    for (int i = 0; i < ns; i++) {
        double lx = L + (i % per_row) * (PW / per_row), ly = T + PH + XB + (i / per_row) * 18 + 6;
        const char *dash = i >= 20   ? " stroke-dasharray=\"2 3\""
                           : i >= 10 ? " stroke-dasharray=\"7 3\""
                                     : "";
        sb_printf(b,
                  "<line class=\"key\" stroke=\"%s\"%s x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
                  "y2=\"%.1f\"/><text class=\"lg\" x=\"%.1f\" y=\"%.1f\">",
                  PALETTE[i % 10], dash, lx, ly, lx + 22, ly, lx + 27, ly + 4);
        sb_esc(b, s[i].name ? s[i].name : "?");
        sb_puts(b, "</text>");
    }
#undef PX
#undef PY
    sb_puts(b, "</svg></figure>\n");
}

/* Chart data pulled out of the document: up to MAX_SERIES series. */
enum { MAX_SERIES = 64 };
typedef struct chart_data {
    series s[MAX_SERIES];
    double *buf; /* x and y values of every series, one allocation */
    char names[MAX_SERIES][96];
    int ns;
} chart_data;

static double *chart_alloc(chart_data *d, sb *b, size_t n) {
    free(d->buf);
    d->buf = calloc(n ? n : 1, sizeof(double));
    if (!d->buf) b->oom = 1;
    return d->buf;
}

/* ---------------------------------------------------------- sections */

static const char *const CSS =
    ":root{--fg:#1b1f24;--mut:#57606a;--line:#d0d7de;--bg2:#f6f8fa;--ok:#1a7f37;--bad:#cf222e;"
    "--warn:#fff1e5}\n"
    "*{box-sizing:border-box}\n"
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,"
    "sans-serif;color:var(--fg);max-width:1120px;margin:0 auto;padding:24px}\n"
    "h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;border-bottom:2px solid var(--line);"
    "padding-bottom:4px;margin:36px 0 12px}h3{font-size:16px;margin:22px 0 8px}\n"
    ".sub{color:var(--mut);margin:0 0 16px}code,pre,.hash{font-family:ui-monospace,"
    "'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:12px}\n"
    ".hash{word-break:break-all}\n"
    "table{border-collapse:collapse;margin:8px 0 16px;width:100%}\n"
    "th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}\n"
    "thead th{background:var(--bg2)}td.num{text-align:right;font-variant-numeric:tabular-nums}\n"
    "table.kv{width:auto;min-width:50%}table.kv th{background:var(--bg2);font-weight:600;"
    "white-space:nowrap}table.kv td.num{text-align:left}\n"
    "tbody tr:nth-child(even){background:#fbfcfd}\n"
    "tr.alert td,tr.alert th{background:var(--warn)}tr.alert th::before{content:'\\26A0  ';"
    "color:var(--bad)}\n"
    ".badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;"
    "font-weight:600;border:1px solid}\n"
    ".badge.ok{color:var(--ok);border-color:var(--ok)}.badge.bad{color:#fff;background:var(--bad);"
    "border-color:var(--bad)}.badge.na{color:var(--mut);border-color:var(--line)}\n"
    ".na{color:var(--mut)}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}\n"
    ".card{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:150px}\n"
    ".card .k{color:var(--mut);font-size:12px}.card .v{font-size:20px;font-weight:600}\n"
    ".alerts{border:1px solid var(--bad);background:var(--warn);border-radius:6px;"
    "padding:8px 14px;margin:10px 0}\n"
    ".alerts h3{margin:4px 0;color:var(--bad)}.warnings{border:1px solid #d4a72c;"
    "background:#fff8c5;border-radius:6px;padding:8px 14px}\n"
    "nav.toc ol{columns:2;margin:6px 0}nav.toc a{color:#0969da;text-decoration:none}\n"
    "figure{margin:10px 0}svg.chart{max-width:100%;height:auto;font-size:11px;"
    "font-family:inherit}\n"
    "svg .plot{fill:#fff;stroke:var(--line)}svg .grid{stroke:#eaeef2}svg .tick{stroke:#8c959f}\n"
    "svg .yt{text-anchor:end;fill:var(--mut)}svg .xt{text-anchor:middle;fill:var(--mut)}\n"
    "svg .xl,svg .yl{text-anchor:middle;fill:var(--fg)}svg .ct{font-weight:600;font-size:13px}\n"
    "svg .line{fill:none;stroke-width:1.8}svg .key{stroke-width:2.5}svg .lg{fill:var(--fg)}\n"
    "svg .ref{stroke:var(--bad);stroke-dasharray:5 4;stroke-width:1.2}svg .rl{fill:var(--bad);"
    "text-anchor:end}svg .nodata{fill:var(--mut);text-anchor:middle}\n"
    "pre.config{background:var(--bg2);border:1px solid var(--line);padding:10px;"
    "white-space:pre-wrap;word-break:break-word}\n"
    "footer{color:var(--mut);font-size:12px;margin-top:40px;border-top:1px solid var(--line);"
    "padding-top:8px}\n"
    "@page{size:A4;margin:14mm 12mm}\n"
    "@media print{body{max-width:none;padding:0;font-size:10pt}\n"
    " *{-webkit-print-color-adjust:exact;print-color-adjust:exact}\n"
    " section{break-before:page;page-break-before:always}\n"
    " h2,h3{break-after:avoid;page-break-after:avoid}\n"
    " tr,figure,.card,.alerts{break-inside:avoid;page-break-inside:avoid}\n"
    " thead{display:table-header-group}\n"
    " nav.toc a{color:inherit}\n"
    " svg.chart{width:100%}}\n";

static void sec_open(sb *b, const char *id, const char *title) {
    sb_printf(b, "<section id=\"%s\">\n<h2>%s</h2>\n", id, title);
}

static void sec_close(sb *b) {
    sb_puts(b, "</section>\n");
}

static void card(sb *b, const char *k, const char *v_html) {
    sb_printf(b, "<div class=\"card\"><div class=\"k\">%s</div><div class=\"v\">%s</div></div>\n",
              k, v_html);
}

static void card_num(sb *b, const char *k, double v, const char *fmt) {
    char t[64];
    if (isfinite(v))
        snprintf(t, sizeof t, fmt, v);
    else
        snprintf(t, sizeof t, DASH);
    card(b, k, t);
}

static void html_header(sb *b, const cJSON *doc) {
    const cJSON *fed = jget(doc, "federation"), *sum = jget(doc, "summary");
    const char *id = jstr(fed, "id");
    sb_puts(b, "<header>\n<h1>Federation audit report");
    if (id) {
        sb_puts(b, ": ");
        sb_esc(b, id);
    }
    sb_puts(b, "</h1>\n<p class=\"sub\">Database <code>");
    sb_esc(b, jstr(doc, "database"));
    sb_puts(b, "</code> &middot; generated ");
    sb_esc(b, jstr(doc, "generated_at"));
    sb_printf(b,
              " by cohort report (report format %.0f). The JSON twin of this page holds every "
              "figure shown here.</p>\n<div class=\"cards\">\n",
              jnum(doc, "report_version"));
    char t[96];
    double planned = jnum(fed, "rounds_planned"), done = jnum(sum, "rounds_committed");
    if (isfinite(planned))
        snprintf(t, sizeof t, "%.0f of %.0f", isfinite(done) ? done : 0, planned);
    else
        snprintf(t, sizeof t, "%.0f", isfinite(done) ? done : 0);
    card(b, "Rounds committed", t);
    card_num(b, "Sites", jnum(sum, "sites"), F0);
    card_num(b, "Final accuracy", jnum(sum, "accuracy"), F4);
    card_num(b, "Final AUC", jnum(sum, "auc"), F4);
    card_num(b, "Site-rounds not completed", jnum(sum, "not_completed"), F0);
    card_num(b, "Largest &#949; spent", jnum(sum, "max_epsilon_spent"), "%.3g");
    card_num(b, "Fairness alerts (last round)", jnum(sum, "fairness_alerts"), F0);
    sb_puts(b, "<div class=\"card\"><div class=\"k\">Audit log</div><div class=\"v\">");
    badge(b, jstr(sum, "audit"));
    sb_puts(b, "</div></div>\n</div>\n");
    const cJSON *w = jget(doc, "warnings"), *it;
    if (cJSON_GetArraySize(w) > 0) {
        sb_puts(b,
                "<div class=\"warnings\"><strong>Warnings while reading the database</strong><ul>");
        cJSON_ArrayForEach(it, w) {
            sb_puts(b, "<li>");
            sb_esc(b, cJSON_GetStringValue(it));
            sb_puts(b, "</li>");
        }
        sb_puts(b, "</ul></div>\n");
    }
    sb_puts(b, "<nav class=\"toc\"><ol>"
               "<li><a href=\"#federation\">Federation</a></li>"
               "<li><a href=\"#lineage\">Model lineage</a></li>"
               "<li><a href=\"#participation\">Participants and dropouts</a></li>"
               "<li><a href=\"#performance\">Accuracy, AUC and loss</a></li>"
               "<li><a href=\"#privacy\">Privacy spend</a></li>"
               "<li><a href=\"#secagg\">Secure aggregation</a></li>"
               "<li><a href=\"#fairness\">Fairness (last round)</a></li>"
               "<li><a href=\"#fairness-trends\">Fairness trends</a></li>"
               "<li><a href=\"#audit\">Audit-log verification</a></li>"
               "<li><a href=\"#config\">Configuration</a></li>"
               "</ol></nav>\n</header>\n");
}

static void html_federation(sb *b, const cJSON *doc) {
    const cJSON *fed = jget(doc, "federation");
    sec_open(b, "federation", "1. Federation");
    sb_puts(b, "<table class=\"kv\"><tbody>\n");
    kv_text(b, "Federation id", jstr(fed, "id"));
    kv_text(b, "Strategy", jstr(fed, "strategy"));
    kv_text(b, "Model", jstr(fed, "model"));
    kv_num(b, "Rounds planned", jnum(fed, "rounds_planned"), F0);
    kv_num(b, "Rounds committed", jnum(fed, "rounds_committed"), F0);
    kv_num(b, "Minimum sites per stage", jnum(fed, "min_sites"), F0);
    kv_num(b, "Fraction of sites per round", jnum(fed, "fraction"), "%g");
    kv_text(b, "Allowed sites", jstr(fed, "allowed_sites"));
    kv_text(b, "First round committed", jstr(fed, "first_commit_at"));
    kv_text(b, "Last round committed", jstr(fed, "last_commit_at"));
    kv_text(b, "How it ended", jstr(fed, "end"));
    const cJSON *ev = jget(fed, "events");
    kv_num(b, "Audit events", jnum(ev, "total"), F0);
    sb_puts(b, "<tr><th scope=\"row\">Events by kind</th><td>");
    const cJSON *k;
    int first = 1;
    cJSON_ArrayForEach(k, jget(ev, "by_kind")) {
        sb_puts(b, first ? "" : ", ");
        sb_esc(b, k->string);
        sb_printf(b, " %.0f", cJSON_GetNumberValue(k));
        first = 0;
    }
    if (first) sb_puts(b, DASH);
    sb_puts(b, "</td></tr>\n</tbody></table>\n");
    if (!cJSON_IsTrue(jget(fed, "config_recorded")))
        sb_puts(b, "<p class=\"na\">The configuration was not recorded in this database: the "
                   "settings above that come from it are not recorded.</p>\n");
    sb_puts(b, "<h3>Sites</h3>\n<table><thead><tr><th>Site</th><th>Name (from its certificate)</th>"
               "<th>Examples</th><th>Joined</th></tr></thead><tbody>\n");
    const cJSON *s;
    cJSON_ArrayForEach(s, jget(fed, "sites")) {
        sb_puts(b, "<tr>");
        td_num(b, jnum(s, "site"), F0);
        td_text(b, jstr(s, "name"));
        td_num(b, jnum(s, "n_examples"), F0);
        td_text(b, jstr(s, "joined_at"));
        sb_puts(b, "</tr>\n");
    }
    sb_puts(b, "</tbody></table>\n");
    sec_close(b);
}

static void html_lineage(sb *b, const cJSON *doc) {
    sec_open(b, "lineage", "2. Model lineage");
    sb_puts(b, "<p>Each committed global model with its SHA-256 (recomputed from the stored model "
               "for this report) and the aggregator's signature. Round 0 is the initial "
               "model.</p>\n<table><thead><tr><th>Round</th><th>Committed</th><th>SHA-256</th>"
               "<th>Bytes</th><th>Hash</th><th>Signature</th><th>Signature check</th></tr>"
               "</thead><tbody>\n");
    const cJSON *e;
    int n = 0;
    cJSON_ArrayForEach(e, jget(doc, "lineage")) {
        n++;
        sb_puts(b, "<tr>");
        td_num(b, jnum(e, "round"), F0);
        td_text(b, jstr(e, "committed_at"));
        sb_puts(b, "<td class=\"hash\">");
        sb_esc(b, jstr(e, "sha256"));
        sb_puts(b, "</td>");
        td_num(b, jnum(e, "model_bytes"), F0);
        sb_puts(b, "<td>");
        badge(b, cJSON_IsTrue(jget(e, "sha256_verified")) ? "verified" : "failed");
        sb_puts(b, "</td><td class=\"hash\">");
        const char *sig = jstr(e, "signature");
        if (sig) {
            size_t len = strlen(sig);
            char head[25];
            snprintf(head, sizeof head, "%s", sig);
            sb_esc(b, head);
            sb_printf(b, "&#8230; (%zu bytes)", len / 2);
        } else {
            sb_puts(b, "none");
        }
        sb_puts(b, "</td><td>");
        badge(b, jstr(e, "signature_status"));
        sb_puts(b, "</td></tr>\n");
    }
    sb_puts(b, "</tbody></table>\n");
    if (!n)
        sb_puts(b, "<p class=\"na\"><strong>Not recorded.</strong> No model was committed.</p>\n");
    sec_close(b);
}

static void html_participation(sb *b, const cJSON *doc) {
    sec_open(b, "participation", "3. Participants and dropouts per round");
    sb_puts(b, "<table><thead><tr><th>Round</th><th>Selected</th><th>Completed</th>"
               "<th>Dropped</th><th>Refused</th><th>Examples trained</th>"
               "<th>Sites that did not complete, with the reason</th></tr></thead><tbody>\n");
    const cJSON *r, *p;
    int n = 0;
    cJSON_ArrayForEach(r, jget(doc, "rounds")) {
        n++;
        double sel = 0, done = 0, dropped = 0, refused = 0, ex = 0;
        cJSON_ArrayForEach(p, jget(r, "participants")) {
            const char *st = jstr(p, "status");
            sel++;
            if (st && !strcmp(st, "completed")) {
                done++;
                if (isfinite(jnum(p, "n_examples"))) ex += jnum(p, "n_examples");
            } else if (st && !strcmp(st, "refused")) {
                refused++;
            } else {
                dropped++;
            }
        }
        int has_parts = sel > 0;
        sb_puts(b, "<tr>");
        td_num(b, jnum(r, "round"), F0);
        td_num(b, has_parts ? sel : NAN, F0);
        td_num(b, has_parts ? done : jnum(r, "completed"), F0);
        td_num(b, has_parts ? dropped : jnum(r, "dropped"), F0);
        td_num(b, has_parts ? refused : NAN, F0);
        td_num(b, has_parts ? ex : NAN, F0);
        sb_puts(b, "<td>");
        int any = 0;
        cJSON_ArrayForEach(p, jget(r, "participants")) {
            const char *st = jstr(p, "status");
            if (st && !strcmp(st, "completed")) continue;
            sb_puts(b, any ? "<br>" : "");
            const char *name = jstr(p, "name");
            if (name)
                sb_esc(b, name);
            else
                sb_printf(b, "site %.0f", jnum(p, "site"));
            sb_puts(b, " ");
            badge(b, st ? st : "unknown");
            const char *why = jstr(p, "reason");
            sb_puts(b, " ");
            sb_esc(b, why ? why : "(no reason recorded)");
            any = 1;
        }
        if (!any) sb_puts(b, DASH);
        sb_puts(b, "</td></tr>\n");
    }
    sb_puts(b, "</tbody></table>\n");
    if (!n)
        sb_puts(b, "<p class=\"na\"><strong>Not recorded.</strong> No training round was "
                   "committed.</p>\n");
    sec_close(b);
}

/* Up to two per-round metrics of the document's rounds as chart series. */
static void round_series(chart_data *d, sb *b, const cJSON *rounds, const char *const *keys,
                         const char *const *labels, int nk) {
    int n = cJSON_GetArraySize(rounds);
    double *v = chart_alloc(d, b, (size_t)n * (size_t)(nk + 1));
    d->ns = 0;
    if (!v) return;
    const cJSON *r;
    int i = 0;
    cJSON_ArrayForEach(r, rounds) {
        v[i] = jnum(r, "round");
        for (int k = 0; k < nk; k++)
            v[(size_t)(k + 1) * n + i] = jnum(r, keys[k]);
        i++;
    }
    for (int k = 0; k < nk; k++)
        d->s[d->ns++] = (series){labels[k], v, v + (size_t)(k + 1) * n, n};
}

static void html_performance(sb *b, const cJSON *doc) {
    const cJSON *rounds = jget(doc, "rounds");
    sec_open(b, "performance", "4. Accuracy, AUC and loss per round");
    chart_data d = {0};
    static const char *const k1[] = {"accuracy", "auc"}, *const l1[] = {"accuracy", "AUC"};
    static const char *const k2[] = {"loss"}, *const l2[] = {"log-loss"};
    round_series(&d, b, rounds, k1, l1, 2);
    svg_chart(b,
              &(chart){"Global model on the sites' validation data: accuracy and AUC", "round",
                       "accuracy / AUC", NAN, NULL, 0, 1},
              d.s, d.ns);
    round_series(&d, b, rounds, k2, l2, 1);
    svg_chart(b, &(chart){"Global model: log-loss", "round", "log-loss", NAN, NULL, 0, 1}, d.s,
              d.ns);
    free(d.buf);
    sb_puts(b, "<table><thead><tr><th>Round</th><th>Accuracy</th><th>AUC</th><th>Log-loss</th>"
               "<th>Evaluated examples</th><th>Round time (s)</th><th>Bytes in</th>"
               "<th>Bytes out</th></tr></thead><tbody>\n");
    const cJSON *r;
    cJSON_ArrayForEach(r, rounds) {
        const cJSON *m = jget(r, "metrics");
        sb_puts(b, "<tr>");
        td_num(b, jnum(r, "round"), F0);
        td_num(b, jnum(r, "accuracy"), F4);
        td_num(b, jnum(r, "auc"), F4);
        td_num(b, jnum(r, "loss"), F4);
        td_num(b, jnum(r, "eval_examples"), F0);
        td_num(b, jnum(m, "t_round_ms") / 1000, "%.2f");
        td_num(b, jnum(m, "bytes_in"), F0);
        td_num(b, jnum(m, "bytes_out"), F0);
        sb_puts(b, "</tr>\n");
    }
    sb_puts(b, "</tbody></table>\n");
    sec_close(b);
}

static void html_privacy(sb *b, const cJSON *doc) {
    const cJSON *pv = jget(doc, "privacy");
    sec_open(b, "privacy", "5. Privacy spend per site");
    const char *acc = jstr(pv, "accountant"), *src = jstr(pv, "accountant_source");
    sb_puts(b, "<table class=\"kv\"><tbody>\n");
    kv_text(b, "Mode", jstr(pv, "mode"));
    sb_puts(b, "<tr><th scope=\"row\">Accountant</th><td>");
    if (acc) {
        sb_esc(b, !strcmp(acc, "rdp")   ? "RDP (R\xc3\xa9nyi DP of the sampled Gaussian, Balle et "
                                          "al. 2020 conversion)"
                  : !strcmp(acc, "pld") ? "PLD (privacy loss distribution)"
                                        : acc);
        if (src) {
            sb_puts(b, " <span class=\"na\">(from ");
            sb_esc(b, !strcmp(src, "default") ? "the sites' default: not recorded in this database"
                                              : src);
            sb_puts(b, ")</span>");
        }
    } else {
        sb_puts(b, DASH);
    }
    sb_puts(b, "</td></tr>\n");
    kv_num(b, "&#948; (delta)", jnum(pv, "delta"), "%g");
    kv_text(b, "Sampling assumption", jstr(pv, "sampling"));
    kv_num(b, "Noise multiplier", jnum(pv, "noise_multiplier"), "%g");
    kv_num(b, "Clipping norm", jnum(pv, "clip"), "%g");
    kv_num(b, "Each site's cap (max &#949;)", jnum(pv, "max_epsilon"), "%g");
    kv_num(b, "Privacy events in the audit log", jnum(pv, "events"), F0);
    sb_puts(b, "</tbody></table>\n");
    if (!recorded(pv)) {
        not_recorded(b, pv);
        sec_close(b);
        return;
    }
    const cJSON *sites = jget(pv, "sites"), *s, *pt;
    size_t total = 0;
    cJSON_ArrayForEach(s, sites) total += (size_t)cJSON_GetArraySize(jget(s, "epsilon"));
    chart_data d = {0};
    double *v = chart_alloc(&d, b, 2 * total);
    if (v) {
        size_t at = 0;
        cJSON_ArrayForEach(s, sites) {
            if (d.ns == MAX_SERIES) break;
            const cJSON *eps = jget(s, "epsilon");
            int n = cJSON_GetArraySize(eps), i = 0;
            double *x = v + at, *y = v + total + at;
            cJSON_ArrayForEach(pt, eps) {
                x[i] = jnum(pt, "round");
                y[i++] = jnum(pt, "epsilon");
            }
            at += (size_t)n;
            const char *name = jstr(s, "name");
            if (name)
                snprintf(d.names[d.ns], sizeof d.names[d.ns], "%s", name);
            else
                snprintf(d.names[d.ns], sizeof d.names[d.ns], "site %.0f", jnum(s, "site"));
            d.s[d.ns] = (series){d.names[d.ns], x, y, n};
            d.ns++;
        }
        char ref[64];
        snprintf(ref, sizeof ref, "cap \xce\xb5 = %g", jnum(pv, "max_epsilon"));
        char title[160];
        snprintf(title, sizeof title, "Cumulative \xce\xb5 per site (%s accountant, \xce\xb4 = %g)",
                 acc ? acc : "?", jnum(pv, "delta"));
        double cap = jnum(pv, "max_epsilon");
        svg_chart(b, &(chart){title, "round", "\xce\xb5 spent", cap > 0 ? cap : NAN, ref, 0, 1},
                  d.s, d.ns);
    }
    free(d.buf);
    sb_puts(b, "<table><thead><tr><th>Site</th><th>Final &#949;</th><th>Rounds with a spend</th>"
               "<th>Rounds refused</th></tr></thead><tbody>\n");
    cJSON_ArrayForEach(s, sites) {
        sb_puts(b, "<tr>");
        td_text(b, jstr(s, "name"));
        td_num(b, jnum(s, "final_epsilon"), "%.4g");
        td_num(b, (double)cJSON_GetArraySize(jget(s, "epsilon")), F0);
        td_num(b, jnum(s, "refused"), F0);
        sb_puts(b, "</tr>\n");
    }
    sb_puts(b, "</tbody></table>\n<p>Every &#949; above is cumulative over the site's rounds, "
               "under the accountant and &#948; stated in this section.</p>\n");
    sec_close(b);
}

static void html_secagg(sb *b, const cJSON *doc) {
    const cJSON *sa = jget(doc, "secagg");
    sec_open(b, "secagg", "6. Secure aggregation");
    if (!recorded(sa)) {
        not_recorded(b, sa);
        sec_close(b);
        return;
    }
    const cJSON *en = jget(sa, "enabled");
    sb_puts(b, "<table class=\"kv\"><tbody>\n");
    kv_text(b, "Enabled", cJSON_IsBool(en) ? (cJSON_IsTrue(en) ? "yes" : "no") : NULL);
    kv_num(b, "Threshold (share of a site's neighbours needed to unmask it)", jnum(sa, "threshold"),
           "%g");
    kv_num(b, "Neighbours per site (0: every site)", jnum(sa, "neighbors"), F0);
    const cJSON *k;
    cJSON_ArrayForEach(k, jget(sa, "settings")) {
        if (!strcmp(k->string, "enabled") || !strcmp(k->string, "threshold") ||
            !strcmp(k->string, "neighbors"))
            continue;
        sb_puts(b, "<tr><th scope=\"row\">");
        sb_esc(b, k->string);
        sb_puts(b, "</th>");
        td_text(b, cJSON_GetStringValue(k));
        sb_puts(b, "</tr>\n");
    }
    kv_num(b, "Secure-aggregation events", jnum(sa, "n_events"), F0);
    sb_puts(b, "</tbody></table>\n<p>Sites that dropped during a round are listed with their "
               "reasons in section 3.</p>\n");
    const cJSON *kinds = jget(sa, "events_by_kind"), *ev = jget(sa, "events"), *e;
    if (cJSON_GetArraySize(kinds) > 0) {
        sb_puts(b, "<table class=\"kv\"><thead><tr><th>Event</th><th>Count</th></tr></thead>"
                   "<tbody>\n");
        cJSON_ArrayForEach(e, kinds) {
            sb_puts(b, "<tr><th scope=\"row\">");
            sb_esc(b, e->string);
            sb_puts(b, "</th>");
            td_num(b, cJSON_GetNumberValue(e), F0);
            sb_puts(b, "</tr>\n");
        }
        sb_puts(b, "</tbody></table>\n");
    }
    /* Every event when they are few; otherwise the ones a reviewer must
     * see (a secure sum aborted below its threshold releases nothing) and
     * the rest in the JSON twin. */
    int n = cJSON_GetArraySize(ev), all = n <= 60, shown = 0;
    cJSON_ArrayForEach(e, ev) {
        const char *kind = jstr(e, "kind");
        if (!all && !(kind && (strstr(kind, "abort") || strstr(kind, "fail")))) continue;
        if (!shown++)
            sb_printf(b,
                      "<h3>%s</h3>\n<table><thead><tr><th>Round</th><th>Event</th><th>Site</th>"
                      "<th>Detail</th></tr></thead><tbody>\n",
                      all ? "Secure-aggregation events" : "Aborted or failed secure sums");
        sb_puts(b, "<tr>");
        td_num(b, jnum(e, "round"), F0);
        td_text(b, kind);
        td_text(b, jstr(e, "site"));
        td_text(b, jstr(e, "detail"));
        sb_puts(b, "</tr>\n");
    }
    if (shown) sb_puts(b, "</tbody></table>\n");
    if (!all && !shown) sb_puts(b, "<p>No secure sum was aborted or failed.</p>\n");
    if (!all)
        sb_printf(b, "<p class=\"na\">%.0f events in all; the JSON twin lists %s.</p>\n",
                  jnum(sa, "n_events"),
                  cJSON_IsTrue(jget(sa, "events_truncated")) ? "the first 500" : "each of them");
    sec_close(b);
}

static const char *const GROUP_COLS[] = {"selection_rate", "tpr",      "fpr", "fnr",
                                         "precision",      "accuracy", "auc"};

static void group_row(sb *b, const char *name, const cJSON *g, int overall) {
    sb_printf(b, "<tr%s><th scope=\"row\">", overall ? " class=\"overall\"" : "");
    sb_esc(b, name);
    sb_puts(b, "</th>");
    td_num(b, jnum(g, "count"), F0);
    const char *st = jstr(g, "status");
    if (st) {
        sb_printf(b, "<td class=\"na\" colspan=\"%d\">",
                  (int)(sizeof GROUP_COLS / sizeof *GROUP_COLS));
        sb_esc(b, st);
        sb_puts(b, "</td>");
    } else {
        for (size_t i = 0; i < sizeof GROUP_COLS / sizeof *GROUP_COLS; i++)
            td_num(b, jnum(g, GROUP_COLS[i]), F4);
    }
    sb_puts(b, "</tr>\n");
}

/* The alert on metric in alerts, or NULL. */
static const cJSON *alert_for(const cJSON *alerts, const char *metric) {
    const cJSON *a;
    cJSON_ArrayForEach(a, alerts) {
        const char *m = jstr(a, "metric");
        if (m && !strcmp(m, metric)) return a;
    }
    return NULL;
}

static void alert_list(sb *b, const cJSON *alerts) {
    const cJSON *a;
    sb_printf(b, "<div class=\"alerts\"><h3>%d fairness alert%s</h3><ul>\n",
              cJSON_GetArraySize(alerts), cJSON_GetArraySize(alerts) == 1 ? "" : "s");
    cJSON_ArrayForEach(a, alerts) {
        sb_puts(b, "<li><strong>");
        sb_esc(b, jstr(a, "attribute"));
        sb_puts(b, "</strong>: ");
        sb_esc(b, jstr(a, "metric"));
        sb_puts(b, " = ");
        sb_num(b, jnum(a, "value"), F4);
        sb_puts(b, " (limit ");
        sb_num(b, jnum(a, "limit"), "%g");
        sb_puts(b, ")</li>\n");
    }
    sb_puts(b, "</ul></div>\n");
}

static void calibration_chart(sb *b, const char *attr, const cJSON *groups) {
    chart_data d = {0};
    size_t total = 0;
    const cJSON *g, *c;
    cJSON_ArrayForEach(g, groups) total += (size_t)cJSON_GetArraySize(jget(g, "calibration"));
    if (!total) return;
    double *v = chart_alloc(&d, b, 2 * total);
    if (!v) return;
    size_t at = 0;
    cJSON_ArrayForEach(g, groups) {
        const cJSON *cal = jget(g, "calibration");
        int n = cJSON_GetArraySize(cal), i = 0;
        if (!n || d.ns == MAX_SERIES) continue;
        double *x = v + at, *y = v + total + at;
        cJSON_ArrayForEach(c, cal) {
            x[i] = jnum(c, "predicted");
            y[i++] = jnum(c, "observed");
        }
        at += (size_t)n;
        snprintf(d.names[d.ns], sizeof d.names[d.ns], "%s", g->string ? g->string : "?");
        d.s[d.ns] = (series){d.names[d.ns], x, y, n};
        d.ns++;
    }
    char title[160];
    snprintf(title, sizeof title, "Calibration by %s group (perfect calibration on the diagonal)",
             attr);
    svg_chart(
        b,
        &(chart){title, "predicted probability (bin)", "observed positive rate", NAN, NULL, 1, 0},
        d.s, d.ns);
    free(d.buf);
}

static void html_fairness(sb *b, const cJSON *doc) {
    const cJSON *fa = jget(doc, "fairness");
    const cJSON *m = jget(fa, "latest");
    sec_open(b, "fairness", "7. Fairness audit of the last round");
    if (!recorded(fa) || !cJSON_IsObject(m)) {
        not_recorded(b, fa);
        sec_close(b);
        return;
    }
    sb_printf(b,
              "<p>Round %.0f, from the securely summed per-group counts of every site: "
              "decision threshold ",
              jnum(fa, "last_round"));
    sb_num(b, jnum(m, "threshold"), "%g");
    sb_puts(b, ", groups with fewer than ");
    sb_num(b, jnum(m, "min_group_count"), F0);
    sb_puts(b, " examples are reported as insufficient data, scores in ");
    sb_num(b, jnum(m, "n_bins"), F0);
    sb_puts(b, " bins.</p>\n");
    const cJSON *alerts = jget(m, "alerts");
    if (cJSON_GetArraySize(alerts) > 0)
        alert_list(b, alerts);
    else
        sb_puts(b, "<p><span class=\"badge ok\">no alerts</span> No disparity crossed a "
                   "configured limit.</p>\n");
    const cJSON *a;
    cJSON_ArrayForEach(a, jget(m, "attributes")) {
        const char *attr = jstr(a, "attribute");
        sb_puts(b, "<h3>");
        sb_esc(b, attr ? attr : "?");
        sb_puts(b, "</h3>\n<table class=\"fairness\"><thead><tr><th>Group</th><th>Count</th>"
                   "<th>Selection rate</th><th>TPR</th><th>FPR</th><th>FNR</th><th>Precision</th>"
                   "<th>Accuracy</th><th>AUC</th></tr></thead><tbody>\n");
        if (cJSON_IsObject(jget(m, "overall")))
            group_row(b, "(all examples)", jget(m, "overall"), 1);
        const cJSON *g;
        cJSON_ArrayForEach(g, jget(a, "groups")) group_row(b, g->string ? g->string : "?", g, 0);
        sb_puts(b, "</tbody></table>\n");
        const cJSON *d = jget(a, "disparities"), *aa = jget(a, "alerts");
        if (!cJSON_IsObject(d)) {
            sb_puts(b, "<p class=\"na\">Disparities not computed");
            const char *why = jstr(a, "reason") ? jstr(a, "reason") : jstr(a, "disparities_reason");
            if (why) {
                sb_puts(b, ": ");
                sb_esc(b, why);
            }
            sb_puts(b, ".</p>\n");
        } else {
            sb_puts(b, "<table class=\"fairness disparities\"><thead><tr><th>Disparity</th>"
                       "<th>Value</th><th>Limit</th></tr></thead><tbody>\n");
            const cJSON *x;
            int ff = cJSON_IsTrue(jget(d, "four_fifths_rule_violated"));
            cJSON_ArrayForEach(x, d) {
                const cJSON *al = alert_for(aa, x->string);
                int hot = al || (ff && (!strcmp(x->string, "disparate_impact") ||
                                        !strcmp(x->string, "four_fifths_rule_violated")));
                sb_printf(b, "<tr%s><th scope=\"row\">", hot ? " class=\"alert\"" : "");
                sb_esc(b, x->string);
                sb_puts(b, "</th>");
                if (cJSON_IsBool(x))
                    td_text(b, cJSON_IsTrue(x) ? "yes" : "no");
                else if (cJSON_IsString(x)) /* a group's name (privileged_group, ...) */
                    td_text(b, x->valuestring);
                else
                    td_metric(b, cJSON_IsNumber(x) ? x->valuedouble : NAN);
                td_num(b, al ? jnum(al, "limit") : NAN, "%g");
                sb_puts(b, "</tr>\n");
            }
            sb_puts(b, "</tbody></table>\n");
        }
        calibration_chart(b, attr ? attr : "?", jget(a, "groups"));
    }
    const cJSON *sa = jget(m, "site_accuracy");
    if (cJSON_IsObject(sa)) {
        sb_puts(b, "<h3>Spread of accuracy across sites</h3>\n<table class=\"kv\"><tbody>\n");
        kv_num(b, "Mean site accuracy", jnum(sa, "mean"), F4);
        kv_num(b, "Variance", jnum(sa, "variance"), "%.6f");
        kv_num(b, "Sites", jnum(sa, "sites"), F0);
        sb_puts(b, "</tbody></table>\n");
    }
    sec_close(b);
}

static void html_fairness_trends(sb *b, const cJSON *doc) {
    const cJSON *fa = jget(doc, "fairness");
    sec_open(b, "fairness-trends", "8. Fairness trends over rounds");
    if (!recorded(fa)) {
        not_recorded(b, fa);
        sec_close(b);
        return;
    }
    const cJSON *t;
    cJSON_ArrayForEach(t, jget(fa, "trends")) {
        const char *attr = jstr(t, "attribute");
        const cJSON *rounds = jget(t, "rounds"), *series_o = jget(t, "series");
        int n = cJSON_GetArraySize(rounds);
        sb_puts(b, "<h3>");
        sb_esc(b, attr ? attr : "?");
        sb_puts(b, "</h3>\n");
        chart_data d = {0};
        int nm = 0;
        while (DISPARITIES[nm])
            nm++;
        double *v = chart_alloc(&d, b, (size_t)n * (size_t)(nm + 1));
        if (!v) return;
        const cJSON *x;
        int i = 0;
        cJSON_ArrayForEach(x, rounds) v[i++] = cJSON_GetNumberValue(x);
        int charted = 0;
        for (int ratio = 0; ratio <= 1; ratio++) {
            d.ns = 0;
            for (int k = 0; DISPARITIES[k]; k++) {
                if (is_ratio(DISPARITIES[k]) != ratio) continue;
                const cJSON *arr = jget(series_o, DISPARITIES[k]);
                double *y = v + (size_t)(k + 1) * n;
                int j = 0, any = 0;
                for (j = 0; j < n; j++)
                    y[j] = NAN;
                j = 0;
                cJSON_ArrayForEach(x, arr) {
                    if (j < n) y[j++] = cJSON_IsNumber(x) ? x->valuedouble : NAN;
                    any |= cJSON_IsNumber(x);
                }
                if (any) d.s[d.ns++] = (series){DISPARITIES[k], v, y, n};
            }
            if (!d.ns) continue;
            charted = 1;
            char title[160];
            snprintf(title, sizeof title, "%s: %s over rounds", attr ? attr : "?",
                     ratio ? "ratios (1 = parity)" : "differences and indices (0 = parity)");
            svg_chart(b,
                      &(chart){title, "round", ratio ? "ratio" : "difference / index",
                               ratio ? 0.8 : NAN, "four-fifths rule (0.8)", 0, 1},
                      d.s, d.ns);
        }
        if (!charted)
            sb_puts(b, "<p class=\"na\">No round computed a disparity for this attribute (fewer "
                       "than two groups with enough data).</p>\n");
        free(d.buf);
    }
    /* Rounds with alerts only: a long quiet federation stays short. */
    const cJSON *apr = jget(fa, "alerts_per_round"), *e;
    int with = 0;
    cJSON_ArrayForEach(e, apr) with += jnum(e, "alerts") > 0;
    sb_printf(b, "<h3>Alerts over rounds</h3>\n<p>%d of %d audited rounds raised an alert.</p>\n",
              with, cJSON_GetArraySize(apr));
    if (with) {
        sb_puts(b, "<table class=\"kv\"><thead><tr><th>Round</th><th>Alerts</th></tr></thead>"
                   "<tbody>\n");
        cJSON_ArrayForEach(e, apr) {
            if (!(jnum(e, "alerts") > 0)) continue;
            sb_printf(b, "<tr class=\"alert\"><th scope=\"row\">%.0f</th>", jnum(e, "round"));
            td_num(b, jnum(e, "alerts"), F0);
            sb_puts(b, "</tr>\n");
        }
        sb_puts(b, "</tbody></table>\n");
    }
    sec_close(b);
}

static void html_audit(sb *b, const cJSON *doc) {
    const cJSON *au = jget(doc, "audit");
    const char *st = jstr(au, "status");
    sec_open(b, "audit", "9. Audit-log verification");
    sb_puts(b, "<p>Result: ");
    badge(b, st);
    sb_puts(b, "</p>\n");
    if (st && !strcmp(st, "failed"))
        sb_puts(b, "<div class=\"alerts\"><h3>The audit log did NOT verify (FAILED)</h3><p>The "
                   "record below names the first row that does not match its hash chain or "
                   "signature. Treat every figure in this report as unverified.</p></div>\n");
    sb_puts(b, "<table class=\"kv\"><tbody>\n");
    const cJSON *ch = jget(au, "chained");
    kv_text(b, "Events hash-chained", cJSON_IsBool(ch) ? (cJSON_IsTrue(ch) ? "yes" : "no") : NULL);
    kv_num(b, "Event rows checked", jnum(au, "n_events"), F0);
    kv_num(b, "Signatures checked", jnum(au, "n_signatures"), F0);
    kv_num(b, "Signed chain heads", jnum(au, "chain_heads"), F0);
    sb_puts(b, "<tr><th scope=\"row\">Chain head (SHA-256)</th><td class=\"hash\">");
    sb_esc(b, jstr(au, "head") ? jstr(au, "head") : DASH);
    sb_puts(b, "</td></tr>\n");
    kv_text(b, "First bad table", jstr(au, "table"));
    kv_num(b, "First bad row", jnum(au, "first_bad_id"), F0);
    kv_text(b, "Reason", jstr(au, "reason"));
    kv_text(b, "CA certificate checked against", jstr(au, "ca"));
    kv_text(b, "Note", jstr(au, "note"));
    sb_puts(b, "</tbody></table>\n");
    sec_close(b);
}

static void html_config(sb *b, const cJSON *doc) {
    const cJSON *c = jget(doc, "config");
    sec_open(b, "config", "10. Configuration");
    if (!recorded(c)) {
        not_recorded(b, c);
        sec_close(b);
        return;
    }
    sb_puts(b, "<table class=\"kv\"><tbody>\n");
    sb_puts(b, "<tr><th scope=\"row\">SHA-256 recorded</th><td class=\"hash\">");
    sb_esc(b, jstr(c, "sha256") ? jstr(c, "sha256") : "not recorded");
    sb_puts(b, "</td></tr>\n<tr><th scope=\"row\">SHA-256 of the text below</th>"
               "<td class=\"hash\">");
    sb_esc(b, jstr(c, "sha256_computed"));
    sb_puts(b, "</td></tr>\n<tr><th scope=\"row\">Match</th><td>");
    const cJSON *mt = jget(c, "sha256_matches");
    if (cJSON_IsBool(mt))
        badge(b, cJSON_IsTrue(mt) ? "verified" : "failed");
    else
        sb_puts(b, DASH);
    sb_puts(b, "</td></tr>\n</tbody></table>\n<pre class=\"config\">");
    sb_esc(b, jstr(c, "text"));
    sb_puts(b, "</pre>\n");
    sec_close(b);
}

int fl_report_html(char **html, size_t *len, const cJSON *json, char err[FL_ERR_LEN]) {
    *html = NULL;
    *len = 0;
    if (!cJSON_IsObject(json) || !cJSON_IsNumber(jget(json, "report_version")))
        return fl_seterr(err, FL_EINVAL,
                         "report: expected a document made by fl_report_build "
                         "(an object with report_version)");
    sb b = {0};
    const char *id = jstr(jget(json, "federation"), "id");
    sb_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                "<meta name=\"generator\" content=\"cohort report\">\n<title>Cohort audit report");
    if (id) {
        sb_puts(&b, ": ");
        sb_esc(&b, id);
    }
    sb_puts(&b, "</title>\n<style>\n");
    sb_puts(&b, CSS);
    sb_puts(&b, "</style>\n</head>\n<body>\n");
    html_header(&b, json);
    sb_puts(&b, "<main>\n");
    html_federation(&b, json);
    html_lineage(&b, json);
    html_participation(&b, json);
    html_performance(&b, json);
    html_privacy(&b, json);
    html_secagg(&b, json);
    html_fairness(&b, json);
    html_fairness_trends(&b, json);
    html_audit(&b, json);
    html_config(&b, json);
    sb_puts(&b, "</main>\n<footer>Generated by <code>cohort report</code> from ");
    sb_esc(&b, jstr(json, "database"));
    sb_puts(&b, ". This page is self-contained: no script, no font or image from anywhere "
                "else.</footer>\n</body>\n</html>\n");
    if (b.oom) {
        free(b.p);
        return fl_seterr(err, FL_ENOMEM, "report: out of memory");
    }
    *html = b.p;
    *len = b.n;
    return FL_OK;
}
