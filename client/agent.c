/* agent.c: cohort-client, a site's agent (DESIGN.md §1, §5): outbound
 * connections only, mutual TLS, long polls for tasks, and the site's private
 * work done by client/site.c. Nothing but the vectors a task asks for
 * leaves the site.
 *
 *   [client]
 *   aggregator = 127.0.0.1:7443   ; host:port of the aggregator
 *   ca = pki/ca.crt
 *   cert = pki/site-1.crt
 *   key = pki/site-1.key
 *   crl = pki/ca.crl              ; optional: the aggregator's certificate must not be
 *                                 ; revoked (checked at every TLS handshake; the file
 *                                 ; is re-read when it changes)
 *   data = site-1.csv
 *   schema = site.schema.ini      ; categorical columns need declared [levels]
 *   state = site-1.db             ; the site's own SQLite state
 *   val_fraction = 0.2            ; local validation split (federated evaluation)
 *   seed = 1                      ; local split seed
 *   device = auto                 ; auto | cpu | cuda
 *   [privacy]                     ; the site's own cap (issue 5)
 *   max_epsilon = 3.0             ; required before this site trains with DP
 *   delta = 1e-5
 *
 * Privacy budget (docs/privacy.md "Budgets in the federation"): every DP
 * training run is a row of the `ledger` table in the state file, written
 * (durably) BEFORE the run starts, so a crash or a restart can only
 * over-count. A TRAIN task is refused, with the reason sent to the
 * aggregator, when composing every ledger row (all federations: it is the
 * same data) with the task's run under the RDP accountant at this site's
 * delta would exceed max_epsilon (or the federation's cap, if lower); also
 * when the site has no cap, or the task asks for no DP while a cap is set.
 * Every run counts, a round re-sent after an aggregator restart included:
 * the data was used again.
 *
 * Exit codes: 0 the federation finished (TASK_DONE), 1 runtime failure, 2 bad
 * configuration or data. SIGTERM stops it cleanly between calls. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/site.h"
#include "core/accountant.h"
#include "core/ini.h"
#include "core/fairness.h"
#include "core/filestamp.h"
#include "core/log.h"
#include "crypto/dpsource.h"
#include "crypto/pki.h"
#include "crypto/secagg.h"
#include "crypto/secagg_vec.h"
#include "net/rpc.h"
#include "proto/wire.h"
#include "proto/wire_stats.h"

#define M_JOIN "/cohort.v1.Federation/Join"
#define M_POLL "/cohort.v1.Federation/PollTask"
#define M_SUBMIT "/cohort.v1.Federation/Submit"
#define M_FETCH "/cohort.v1.Federation/FetchChunk"
#define POLL_TIMEOUT_MS 10000 /* also bounds how long SIGTERM waits */
#define CALL_TIMEOUT_MS 60000

typedef struct agent_config {
    char aggregator[256];
    char ca[FL_PATH_LEN], cert[FL_PATH_LEN], key[FL_PATH_LEN], data[FL_PATH_LEN],
        schema[FL_PATH_LEN], state[FL_PATH_LEN], crl[FL_PATH_LEN];
    double val_fraction;
    unsigned long long seed;
    enum fl_device device;
    double max_epsilon, delta;
    /* [faults] die_at = R:STAGE (tests and demos only): SIGKILL itself on
     * receiving the STAGE task of round R, i.e. die inside that stage. */
    int die_round;
    char die_stage[32];
} agent_config;

/* What the site trusts the aggregator with: with [client] crl, every TLS
 * handshake checks the aggregator's certificate against the CA and the CRL,
 * and its role (aggregator), after gRPC's own chain and host-name checks. A
 * refused certificate fails the handshake, so nothing is sent; the agent
 * then stops (fl_rpc_unary_retry does not retry it) and says why. */
typedef struct peer_trust {
    pthread_mutex_t mu;
    const char *ca, *crl; /* the agent's config */
    fl_pki_verifier *v;
    fl_file_stamp stamp;
} peer_trust;

typedef struct agent {
    agent_config cfg;
    peer_trust trust;
    fl_site site;
    fl_rpc_channel *ch;
    sqlite3 *db;
    char federation_id[FL_WIRE_ID_LEN];
    uint64_t n_params;
    uint8_t applied_stats[32]; /* hash of the totals the site encoded with */
    int have_applied;
    uint8_t *model; /* last fetched model */
    size_t model_len;
    uint8_t model_sha[32];
    double compute_ms; /* since the last state_record */
    int64_t bytes_up, bytes_down;
    uint32_t site_id; /* the aggregator's number for this site (Join) */
    /* The federation's initial model, from Join: built here rather than
     * downloaded when its SHA-256 matches a task's model. */
    char model_spec[FL_WIRE_SPEC_LEN];
    uint32_t n_features, n_classes;
    uint64_t init_seed;
    int init_tried;
    fl_signer *signer; /* the certificate key: signs secure-aggregation keys */
    fl_csprng *rng;    /* stochastic rounding of masked updates */
    /* The secure sum in progress (DESIGN.md §9), or NULL. */
    fl_secagg_client *sa;
    uint64_t sa_session;
    uint32_t sa_ids[FL_SECAGG_MAX_SITES];
    /* A secure-aggregation task this site could not do (its state is gone, a
     * peer's signature failed, ...): skipped until the stage moves on. */
    uint64_t skip_round;
    uint32_t skip_step;
    int skipping;
    /* The fairness audit's layout, built from the schema when a task asks. */
    fl_fairness_layout fair;
    char fair_spec[FL_WIRE_REASON_LEN];
    int have_fair;
} agent;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

/* ------------------------------------------------------------ trust */

static int check_aggregator(void *user, const char *pem, char *why, size_t why_len) {
    peer_trust *t = user;
    char name[FL_PKI_NAME_MAX] = "", e[FL_ERR_LEN] = "";
    int role = 0;
    pthread_mutex_lock(&t->mu);
    fl_pki_verifier *nv = NULL;
    int r = fl_pki_verifier_reload(&nv, &t->stamp, t->ca, t->crl, e);
    if (r < 0) {
        fl_warn("%s changed but does not load; the previous CRL stays in force: %s", t->crl, e);
    } else if (r > 0) {
        fl_pki_verifier_free(t->v);
        t->v = nv;
        fl_info("%s reloaded", t->crl);
    }
    e[0] = 0;
    int rc = fl_pki_verifier_check(t->v, pem, strlen(pem), name, &role, e);
    if (!rc && role != FL_ROLE_AGGREGATOR) {
        rc = FL_EAUTH;
        snprintf(e, sizeof e, "certificate '%s' has role %s, not aggregator", name,
                 fl_pki_role_name(role));
    }
    pthread_mutex_unlock(&t->mu);
    if (!rc) return 0;
    snprintf(why, why_len, "%s", e);
    fl_error("the aggregator's certificate is refused: %s", e);
    return 1;
}

/* ------------------------------------------------------------ config */

static int load_config(agent_config *c, const char *path, char *err) {
    memset(c, 0, sizeof *c);
    fl_ini ini;
    int rc = fl_ini_load(&ini, path, err);
    if (rc) return rc;
    static const char *const keys[] = {"aggregator", "ca",     "cert",  "key",
                                       "data",       "schema", "state", "val_fraction",
                                       "seed",       "device", "crl",   NULL};
    static const char *const pkeys[] = {"max_epsilon", "delta", NULL};
    static const char *const fkeys[] = {"die_at", NULL};
    for (int i = 0; i < ini.n_sections && !rc; i++)
        if (strcmp(ini.sections[i], "client") && strcmp(ini.sections[i], "privacy") &&
            strcmp(ini.sections[i], "faults"))
            rc = fl_seterr(err, FL_EINVAL, "%s: unknown section [%s]", path, ini.sections[i]);
    if (!rc) rc = fl_ini_check_keys(&ini, "client", keys, err);
    if (!rc) rc = fl_ini_check_keys(&ini, "privacy", pkeys, err);
    if (!rc) rc = fl_ini_check_keys(&ini, "faults", fkeys, err);
    const fl_ini_entry *die = fl_ini_find(&ini, "faults", "die_at");
    c->die_round = -1;
    if (!rc && die &&
        (sscanf(die->value, "%d:%31s", &c->die_round, c->die_stage) != 2 || c->die_round < 0))
        rc = fl_seterr(err, FL_EINVAL, "%s:%d: 'die_at': expected ROUND:STAGE, got '%s'", path,
                       die->line, die->value);
    struct {
        const char *key;
        char *dst;
    } paths[] = {{"ca", c->ca},     {"cert", c->cert},     {"key", c->key},
                 {"data", c->data}, {"schema", c->schema}, {"state", c->state}};
    for (size_t i = 0; i < sizeof paths / sizeof *paths && !rc; i++) {
        const char *v = fl_ini_get(&ini, "client", paths[i].key, NULL);
        if (!v || !*v)
            rc = fl_seterr(err, FL_EINVAL, "%s: [client] needs '%s'", path, paths[i].key);
        else
            fl_path_resolve(paths[i].dst, path, v);
    }
    const char *crl = fl_ini_get(&ini, "client", "crl", NULL);
    if (!rc && crl && *crl) fl_path_resolve(c->crl, path, crl);
    const char *agg = fl_ini_get(&ini, "client", "aggregator", NULL);
    if (!rc && (!agg || !*agg || strlen(agg) >= sizeof c->aggregator))
        rc = fl_seterr(err, FL_EINVAL, "%s: [client] needs 'aggregator' (host:port)", path);
    if (!rc) snprintf(c->aggregator, sizeof c->aggregator, "%s", agg);
    if (!rc)
        rc =
            fl_ini_get_double(&c->val_fraction, &ini, "client", "val_fraction", 0.2, 0.0, 0.9, err);
    long seed = 1;
    if (!rc) rc = fl_ini_get_int(&seed, &ini, "client", "seed", 1, 0, 1L << 62, err);
    c->seed = (unsigned long long)seed;
    const fl_ini_entry *d = fl_ini_find(&ini, "client", "device");
    c->device = FL_DEVICE_AUTO;
    if (!rc && d && fl_device_parse(&c->device, d->value))
        rc = fl_seterr(err, FL_EINVAL, "%s:%d: 'device': expected auto, cpu or cuda, got '%s'",
                       path, d->line, d->value);
    if (!rc)
        rc = fl_ini_get_double(&c->max_epsilon, &ini, "privacy", "max_epsilon", 0.0, 0.0, 1e6, err);
    if (!rc) rc = fl_ini_get_double(&c->delta, &ini, "privacy", "delta", 1e-5, 1e-300, 0.5, err);
    fl_ini_free(&ini);
    return rc;
}

/* A file named by client.ini: one that cannot be read is a configuration
 * error (exit 2). */
static int read_file(char **out, const char *path, char *err) {
    size_t len;
    int rc = fl_read_file(out, &len, path, err);
    return rc == FL_EIO ? FL_EINVAL : rc;
}

/* ------------------------------------------------------------ state */

static int state_open(agent *A, char *err) {
    if (sqlite3_open(A->cfg.state, &A->db) != SQLITE_OK)
        return fl_seterr(err, FL_EIO, "%s: cannot open: %s", A->cfg.state,
                         A->db ? sqlite3_errmsg(A->db) : "out of memory");
    char *msg = NULL;
    if (sqlite3_exec(A->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE IF NOT EXISTS tasks(id INTEGER PRIMARY KEY AUTOINCREMENT,"
                     " at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),"
                     " federation TEXT NOT NULL, round INTEGER NOT NULL, kind TEXT NOT NULL,"
                     " model_sha256 TEXT, n_examples INTEGER, outcome TEXT NOT NULL,"
                     " compute_ms REAL, bytes_up INTEGER, bytes_down INTEGER);"
                     "CREATE TABLE IF NOT EXISTS ledger(id INTEGER PRIMARY KEY AUTOINCREMENT,"
                     " at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),"
                     " federation TEXT NOT NULL, round INTEGER NOT NULL, q REAL NOT NULL,"
                     " sigma REAL NOT NULL, steps INTEGER NOT NULL, delta REAL NOT NULL,"
                     " epsilon_after REAL NOT NULL, accountant TEXT NOT NULL);",
                     NULL, NULL, &msg) != SQLITE_OK) {
        int rc = fl_seterr(err, FL_EIO, "%s: %s", A->cfg.state, msg ? msg : "?");
        sqlite3_free(msg);
        return rc;
    }
    return FL_OK;
}

/* Records a finished task with the time spent computing and the message
 * bytes sent and received for it since the last record (bench/round). */
static void state_record(agent *A, uint64_t round, const char *kind, int64_t n_examples,
                         const char *outcome) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(A->db,
                           "INSERT INTO tasks(federation, round, kind, model_sha256, n_examples,"
                           " outcome, compute_ms, bytes_up, bytes_down)"
                           " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                           -1, &s, NULL) != SQLITE_OK)
        return;
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, A->model_sha, 32);
    sqlite3_bind_text(s, 1, A->federation_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)round);
    sqlite3_bind_text(s, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, A->model ? hex : NULL, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 5, n_examples);
    sqlite3_bind_text(s, 6, outcome, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 7, A->compute_ms);
    sqlite3_bind_int64(s, 8, A->bytes_up);
    sqlite3_bind_int64(s, 9, A->bytes_down);
    if (sqlite3_step(s) != SQLITE_DONE) fl_warn("state: %s", sqlite3_errmsg(A->db));
    sqlite3_finalize(s);
    A->compute_ms = 0;
    A->bytes_up = A->bytes_down = 0;
}

/* ------------------------------------------------------------ calls */

/* A few minutes of retries (full jitter, 5 s cap; each retried attempt waits
 * up to 10 s for the connection): an aggregator restart or a network blip
 * must not end a site's agent. */
static const fl_rpc_backoff BACKOFF = {.max_attempts = 20, .base_ms = 100, .cap_ms = 5000};

/* One call with retries on UNAVAILABLE; *status receives the gRPC status. */
static int call(agent *A, const char *method, const uint8_t *req, size_t len, int64_t timeout_ms,
                uint8_t **resp, size_t *resp_len, int *status, char *err) {
    char details[512] = "";
    int rc = fl_rpc_unary_retry(A->ch, method, req, len, timeout_ms, &BACKOFF, resp, resp_len,
                                status, details, sizeof details, NULL);
    A->bytes_up += (int64_t)len;
    if (!rc) A->bytes_down += (int64_t)*resp_len;
    if (rc) fl_seterr(err, rc, "%s: %s: %s", method + 22, fl_rpc_status_name(*status), details);
    return rc;
}

static int join(agent *A, char *err) {
    fl_wire_join j;
    memset(&j, 0, sizeof j);
    snprintf(j.agent_version, sizeof j.agent_version, "cohort-client/0.1");
    j.n_examples = (uint64_t)A->site.n_train;
    j.n_features = (uint32_t)fl_site_features(&A->site);
    j.n_classes = (uint32_t)fl_site_classes(&A->site);
    /* The statistics layout, public (it follows from the schema): lets the
     * aggregator size a secure sum of statistics. */
    uint32_t off[FL_WIRE_MAX_COLUMNS + 1];
    int nc = fl_site_n_cols(&A->site);
    if (nc >= 1 && nc <= (int)FL_WIRE_MAX_COLUMNS) {
        fl_site_level_offsets(&A->site, off);
        j.n_level_offsets = (uint32_t)nc + 1;
        j.level_offsets = off;
    }
    uint8_t *req, *resp = NULL;
    size_t len, rlen;
    int status, rc = fl_wire_pack_join(&req, &len, &j, err);
    if (rc) return rc;
    rc = call(A, M_JOIN, req, len, CALL_TIMEOUT_MS, &resp, &rlen, &status, err);
    free(req);
    if (rc) return rc;
    fl_wire_join_response r;
    rc = fl_wire_unpack_join_response(&r, resp, rlen, NULL, err);
    free(resp);
    if (rc) return rc;
    snprintf(A->federation_id, sizeof A->federation_id, "%s", r.federation_id);
    A->n_params = r.n_params;
    A->site_id = r.site_id;
    snprintf(A->model_spec, sizeof A->model_spec, "%s", r.model_spec);
    A->n_features = r.n_features;
    A->n_classes = r.n_classes;
    A->init_seed = r.init_seed;
    fl_info("joined federation '%s' as site %u: model %s, %llu parameters, %u rounds",
            r.federation_id, r.site_id, r.model_spec, (unsigned long long)r.n_params, r.rounds);
    fl_wire_join_response_free(&r);
    return FL_OK;
}

/* The federation's initial model, made here with the aggregator's seeded
 * initialisation on the CPU reference backend (round.c setup_model): the
 * first round then downloads nothing (bench/round). Kept only when its
 * SHA-256 is the task's; anything else is fetched as usual. */
static void initial_model(agent *A, const fl_wire_task *t) {
    if (A->init_tried || A->model || !A->model_spec[0]) return;
    A->init_tried = 1;
    char err[FL_ERR_LEN];
    fl_model_spec spec;
    fl_backend *be = NULL;
    fl_model m;
    float *params = NULL;
    uint8_t *blob = NULL, h[32];
    size_t len = 0;
    if (fl_model_spec_parse(&spec, A->model_spec, (int)A->n_features, (int)A->n_classes, err) ||
        (int64_t)t->model.n_params != fl_model_spec_nparams(&spec) || fl_backend_cpu_open(&be, err))
        return;
    int rc = fl_model_init(&m, be, &spec, 1, A->init_seed, err);
    if (!rc) {
        params = malloc((size_t)fl_model_spec_nparams(&spec) * sizeof *params);
        rc = params ? fl_model_get_params(&m, params) : FL_ENOMEM;
        fl_model_free(&m);
    }
    if (!rc) rc = fl_model_serialize(&blob, &len, &spec, params);
    if (!rc) {
        crypto_hash_sha256(h, blob, len);
        if (!memcmp(h, t->model.sha256, 32) && len == t->model.total_bytes) {
            A->model = blob;
            A->model_len = len;
            memcpy(A->model_sha, h, 32);
            blob = NULL;
            fl_info("initial model built here (seed %llu), not downloaded",
                    (unsigned long long)A->init_seed);
        }
    }
    free(blob);
    free(params);
    fl_backend_close(be);
}

/* Fetches the task's model (chunks, SHA-256 checked) unless already held. */
static int fetch_model(agent *A, const fl_wire_task *t, char *err) {
    initial_model(A, t);
    if (A->model && !memcmp(A->model_sha, t->model.sha256, 32)) return FL_OK;
    uint64_t total = t->model.total_bytes;
    uint8_t *blob = malloc(total ? total : 1);
    if (!blob) return fl_seterr(err, FL_ENOMEM, "out of memory");
    uint64_t at = 0;
    int rc = FL_OK;
    while (at < total && !rc) {
        fl_wire_fetch f;
        memset(&f, 0, sizeof f);
        snprintf(f.federation_id, sizeof f.federation_id, "%s", A->federation_id);
        f.round = t->round;
        memcpy(f.sha256, t->model.sha256, 32);
        f.offset = at;
        /* Chunk-sized pieces: the aggregator then holds at most that much
         * per reply in flight to each site, not the whole model. */
        f.max_bytes = FL_WIRE_CHUNK_BYTES;
        uint8_t *req, *resp = NULL;
        size_t len, rlen;
        int status;
        if ((rc = fl_wire_pack_fetch(&req, &len, &f, err))) break;
        rc = call(A, M_FETCH, req, len, CALL_TIMEOUT_MS, &resp, &rlen, &status, err);
        free(req);
        if (rc) break;
        fl_wire_expect ex;
        memset(&ex, 0, sizeof ex);
        ex.fetch = &f;
        ex.total_bytes = total;
        fl_wire_chunk c;
        rc = fl_wire_unpack_chunk(&c, resp, rlen, &ex, err);
        free(resp);
        if (rc) break;
        if (!c.len)
            rc = fl_seterr(err, FL_EPROTO, "FetchChunk: empty chunk at %llu",
                           (unsigned long long)at);
        else
            memcpy(blob + at, c.data, c.len);
        at += c.len;
        fl_wire_chunk_free(&c);
    }
    uint8_t h[32];
    if (!rc) {
        crypto_hash_sha256(h, blob, total);
        if (memcmp(h, t->model.sha256, 32))
            rc = fl_seterr(err, FL_ECRYPTO, "FetchChunk: the model does not match its SHA-256");
    }
    if (rc) {
        free(blob);
        return rc;
    }
    free(A->model);
    A->model = blob;
    A->model_len = total;
    memcpy(A->model_sha, h, 32);
    return FL_OK;
}

/* Encodes the local data with the federation's summed statistics (once per
 * distinct totals). */
static int apply_totals(agent *A, const fl_wire_task *t, char *err) {
    if (!t->has_totals)
        return A->have_applied ? FL_OK
                               : fl_seterr(err, FL_EPROTO,
                                           "task without "
                                           "the federation's statistics");
    double *v;
    int64_t n;
    int rc = fl_wire_stats_to_vector(&v, &n, &t->totals, err);
    if (rc) return rc;
    uint8_t h[32];
    crypto_hash_sha256(h, (const uint8_t *)v, (size_t)n * sizeof(double));
    if (!A->have_applied || memcmp(h, A->applied_stats, 32)) {
        rc = fl_site_encode(&A->site, v, n, err);
        if (!rc) {
            memcpy(A->applied_stats, h, 32);
            A->have_applied = 1;
        }
    }
    free(v);
    return rc;
}

static void submit_base(fl_wire_submit *m, const agent *A, const fl_wire_task *t) {
    memset(m, 0, sizeof *m);
    snprintf(m->federation_id, sizeof m->federation_id, "%s", A->federation_id);
    m->round = t->round;
    m->step = t->step;
    m->kind = t->kind;
    m->stage = fl_wire_task_stage(t->kind);
    m->n_chunks = 1;
}

static int send_submit(agent *A, const fl_wire_submit *m, char *err) {
    uint8_t *req, *resp = NULL;
    size_t len, rlen;
    int status;
    int rc = fl_wire_pack_submit(&req, &len, m, err);
    if (rc) return rc;
    rc = call(A, M_SUBMIT, req, len, CALL_TIMEOUT_MS, &resp, &rlen, &status, err);
    free(req);
    free(resp);
    return rc;
}

/* ------------------------------------------------------------ privacy budget */

/* The ledger's phases plus `extra` (may be NULL), composed with the RDP
 * accountant at the site's delta. No rows: 0. */
static int ledger_epsilon(agent *A, const fl_dp_phase *extra, double *eps, int *n_rows, char *err) {
    sqlite3_stmt *s = NULL;
    fl_dp_phase *ph = NULL;
    int n = 0, cap = 0, rc = FL_OK;
    if (sqlite3_prepare_v2(A->db, "SELECT q, sigma, steps FROM ledger ORDER BY id", -1, &s, NULL) !=
        SQLITE_OK) {
        rc = fl_seterr(err, FL_EIO, "%s: ledger: %s", A->cfg.state, sqlite3_errmsg(A->db));
        goto cleanup;
    }
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW || extra) {
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            fl_dp_phase *g = realloc(ph, (size_t)cap * sizeof *ph);
            if (!g) {
                rc = fl_seterr(err, FL_ENOMEM, "out of memory");
                goto cleanup;
            }
            ph = g;
        }
        if (step != SQLITE_ROW) { /* the ledger is read: add this run */
            ph[n++] = *extra;
            break;
        }
        ph[n++] = (fl_dp_phase){sqlite3_column_double(s, 0), sqlite3_column_double(s, 1),
                                sqlite3_column_int64(s, 2)};
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        rc = fl_seterr(err, FL_EIO, "%s: ledger: %s", A->cfg.state, sqlite3_errmsg(A->db));
        goto cleanup;
    }
    *n_rows = extra ? n - 1 : n;
    *eps = 0.0;
    if (n) rc = fl_accountant_epsilon(eps, NULL, FL_ACCOUNTANT_RDP, ph, n, A->cfg.delta, err);
cleanup:
    sqlite3_finalize(s);
    free(ph);
    return rc;
}

/* Records a run before it happens (synchronous=FULL: durable at return). */
static int ledger_add(agent *A, uint64_t round, const fl_dp_phase *ph, double eps_after,
                      char *err) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(A->db,
                           "INSERT INTO ledger(federation, round, q, sigma, steps, delta,"
                           " epsilon_after, accountant) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, 'rdp')",
                           -1, &s, NULL) != SQLITE_OK)
        return fl_seterr(err, FL_EIO, "%s: ledger: %s", A->cfg.state, sqlite3_errmsg(A->db));
    sqlite3_bind_text(s, 1, A->federation_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)round);
    sqlite3_bind_double(s, 3, ph->q);
    sqlite3_bind_double(s, 4, ph->sigma);
    sqlite3_bind_int64(s, 5, ph->steps);
    sqlite3_bind_double(s, 6, A->cfg.delta);
    sqlite3_bind_double(s, 7, eps_after);
    int rc = sqlite3_step(s) == SQLITE_DONE
                 ? FL_OK
                 : fl_seterr(err, FL_EIO, "%s: ledger: %s", A->cfg.state, sqlite3_errmsg(A->db));
    sqlite3_finalize(s);
    return rc;
}

/* Decides whether this site trains on task t. Returns 0 with *refuse = 0
 * (train: *ph and *eps_after set, the ledger row written when DP is on),
 * 0 with *refuse = 1 (reason[] and *eps_now set), or an error. */
static int privacy_gate(agent *A, const fl_wire_task *t, int *refuse, char *reason,
                        size_t reason_len, fl_dp_phase *ph, double *eps_now, double *eps_after,
                        char *err) {
    const fl_wire_privacy *dp = &t->train.dp;
    double cap = A->cfg.max_epsilon;
    int rows = 0;
    *refuse = 0;
    *eps_now = *eps_after = NAN;
    int rc = ledger_epsilon(A, NULL, eps_now, &rows, err);
    if (rc) return rc;
    if (dp->mode == FL_WIRE_PRIVACY_NONE) {
        /* Training without noise has no finite epsilon: a capped site says no. */
        if (cap > 0.0) {
            *refuse = 1;
            snprintf(reason, reason_len,
                     "privacy budget: round %llu asks for no differential privacy, this site caps "
                     "epsilon at %g",
                     (unsigned long long)t->round, cap);
        }
        return FL_OK;
    }
    if (dp->mode != FL_WIRE_PRIVACY_RECORD) {
        *refuse = 1;
        snprintf(reason, reason_len, "privacy: mode %s is not supported by this site",
                 fl_wire_privacy_mode_name((int)dp->mode));
        return FL_OK;
    }
    if (!(cap > 0.0)) {
        *refuse = 1;
        snprintf(reason, reason_len,
                 "privacy budget: this site has no [privacy] max_epsilon and trains with DP only "
                 "under a cap");
        return FL_OK;
    }
    if (dp->max_epsilon > 0.0 && dp->max_epsilon < cap) cap = dp->max_epsilon;
    /* What fl_train's Poisson epochs do (core/train.c epoch_private): q =
     * batch / n capped at 1, ceil(n / batch) steps an epoch. */
    int64_t n = A->site.n_train, B = t->train.batch_size;
    ph->q = fmin(1.0, (double)B / (double)n);
    ph->sigma = dp->noise_multiplier;
    ph->steps = (int64_t)t->train.local_epochs * ((n + B - 1) / B);
    if ((rc = ledger_epsilon(A, ph, eps_after, &rows, err))) return rc;
    if (!(*eps_after <= cap)) {
        *refuse = 1;
        snprintf(reason, reason_len,
                 "privacy budget: round %llu would bring epsilon to %.4f > cap %g (RDP, delta %g)",
                 (unsigned long long)t->round, *eps_after, cap, A->cfg.delta);
        return FL_OK;
    }
    /* Written before training: a crash after this line over-counts, never under. */
    if ((rc = ledger_add(A, t->round, ph, *eps_after, err))) return rc;
    fl_info("privacy: round %llu trains with DP (q %.4g, sigma %g, clip %g, %lld steps): epsilon "
            "%.4f -> %.4f of cap %g (RDP, delta %g, %d earlier runs)",
            (unsigned long long)t->round, ph->q, ph->sigma, dp->clip, (long long)ph->steps,
            *eps_now, *eps_after, cap, A->cfg.delta, rows);
    return FL_OK;
}

static int send_refusal(agent *A, const fl_wire_task *t, const char *reason, double eps_now,
                        char *err) {
    fl_wire_submit m;
    submit_base(&m, A, t);
    m.result = FL_WIRE_RESULT_TRAIN;
    m.train.refused = true;
    snprintf(m.train.refusal_reason, sizeof m.train.refusal_reason, "%s", reason);
    if (isfinite(eps_now)) {
        m.train.epsilon_spent = eps_now;
        snprintf(m.train.accountant, sizeof m.train.accountant, "rdp");
    }
    fl_warn("refusing round %llu: %s", (unsigned long long)t->round, reason);
    int rc = send_submit(A, &m, err);
    state_record(A, t->round, "TRAIN", 0, rc ? "failed" : "refused");
    return rc;
}

/* ------------------------------------------------------ secure aggregation */

/* A secure-aggregation task this site cannot do (no state for it, a peer's
 * bad signature, too few neighbours): it drops out of this secure sum, which
 * the protocol tolerates, and keeps polling. The task stays on offer until
 * the stage ends, so it is remembered and skipped rather than retried. */
static int sa_skip(agent *A, const fl_wire_task *t, int rc, const char *why) {
    fl_warn("secure aggregation, %s of round %llu: dropping out of this secure sum: %s (%s)",
            fl_wire_task_kind_name((int)t->kind), (unsigned long long)t->round, why,
            fl_strerror(rc));
    fl_secagg_client_free(A->sa);
    A->sa = NULL;
    A->skipping = 1;
    A->skip_round = t->round;
    A->skip_step = t->step;
    state_record(A, t->round, fl_wire_task_kind_name((int)t->kind), 0, "dropped out");
    return FL_OK;
}

/* This task continues the secure sum this site holds state for. */
static int sa_current(const agent *A, const fl_wire_task *t) {
    return A->sa && t->secagg.session == A->sa_session;
}

/* Masks y (d words) with the shares the task forwards. */
static int sa_mask(agent *A, const fl_wire_task *t, uint32_t *y, char *err) {
    fl_secagg_ct *cts = calloc(t->n_shares ? t->n_shares : 1, sizeof *cts);
    if (!cts) return fl_seterr(err, FL_ENOMEM, "out of memory");
    int rc = FL_OK;
    for (uint32_t i = 0; i < t->n_shares && !rc; i++) {
        if (t->shares[i].len != FL_SECAGG_CT_BYTES)
            rc = fl_seterr(err, FL_EPROTO, "Task.masked_input.shares[%u]: %u bytes, expected %d", i,
                           t->shares[i].len, FL_SECAGG_CT_BYTES);
        cts[i].peer = t->shares[i].peer;
        memcpy(cts[i].ct, t->shares[i].data, FL_SECAGG_CT_BYTES);
    }
    if (!rc) rc = fl_secagg_client_mask(A->sa, y, cts, t->n_shares, err);
    free(cts);
    return rc;
}

/* int64 values as limbs (fl_secagg_encode_i64), masked: *out malloc'd. */
static int sa_mask_i64(agent *A, const fl_wire_task *t, uint32_t **out, const int64_t *v, int64_t n,
                       char *err) {
    uint64_t d = (uint64_t)n * FL_SECAGG_I64_WORDS;
    *out = NULL;
    if (d != t->secagg.vector_words)
        return fl_seterr(err, FL_EPROTO,
                         "secure sum of %llu words, this site's vector has %llu (layouts differ)",
                         (unsigned long long)t->secagg.vector_words, (unsigned long long)d);
    uint32_t *y = malloc(d * sizeof *y);
    if (!y) return fl_seterr(err, FL_ENOMEM, "out of memory");
    fl_secagg_encode_i64(y, v, (size_t)n);
    int rc = sa_mask(A, t, y, err);
    if (rc) {
        free(y);
        return rc;
    }
    *out = y;
    return FL_OK;
}

static int do_advertise(agent *A, const fl_wire_task *t, char *err) {
    fl_secagg_client_free(A->sa);
    A->sa = NULL;
    const fl_wire_secagg_config *c = &t->secagg;
    fl_secagg_params p;
    memset(&p, 0, sizeof p);
    memcpy(A->sa_ids, c->participants, c->n_participants * sizeof(uint32_t));
    p.federation_id = A->federation_id;
    p.round = c->session;
    p.graph_seed = c->graph_seed;
    p.ids = A->sa_ids;
    p.n = c->n_participants;
    p.degree = fl_secagg_degree(p.n, c->neighbors);
    /* The threshold follows from the federation's fraction: a site never
     * accepts a lower one from the aggregator. */
    p.threshold = fl_secagg_threshold(p.degree, c->threshold);
    p.d = c->vector_words;
    if (c->threshold_count != p.threshold) {
        fl_seterr(err, FL_EPROTO, "the aggregator asks for threshold %u, %g of %u neighbours is %u",
                  c->threshold_count, c->threshold, p.degree, p.threshold);
        return sa_skip(A, t, FL_EPROTO, err);
    }
    uint8_t enc[FL_SECAGG_KEY_BYTES], mask[FL_SECAGG_KEY_BYTES], msg[FL_SECAGG_ADVERT_MAX];
    int rc = fl_secagg_client_new(&A->sa, &p, A->site_id, NULL, err);
    if (!rc) rc = fl_secagg_client_advertise(A->sa, enc, mask, err);
    if (rc) return sa_skip(A, t, rc, err);
    A->sa_session = p.round;
    size_t ml = fl_secagg_advert_message(msg, A->federation_id, p.round, A->site_id, enc, mask);
    fl_wire_submit m;
    submit_base(&m, A, t);
    m.result = FL_WIRE_RESULT_KEYS;
    memcpy(m.keys.enc_pk, enc, sizeof enc);
    memcpy(m.keys.mask_pk, mask, sizeof mask);
    size_t sl = 0;
    if ((rc = fl_signer_sign(A->signer, m.keys.signature, &sl, msg, ml, err))) return rc;
    m.keys.signature_len = (uint32_t)sl;
    rc = send_submit(A, &m, err);
    state_record(A, t->round, "ADVERTISE_KEYS", 0, rc ? "failed" : "submitted");
    return rc;
}

static int do_share_keys(agent *A, const fl_wire_task *t, char *err) {
    if (!sa_current(A, t)) return sa_skip(A, t, FL_ESTATE, "no keys advertised for it");
    uint32_t n = t->n_site_keys;
    fl_secagg_peer_keys *peers = calloc(n, sizeof *peers);
    fl_secagg_ct *cts = calloc(n, sizeof *cts);
    fl_wire_share *sh = calloc(n, sizeof *sh);
    int rc = peers && cts && sh ? FL_OK : fl_seterr(err, FL_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < n && !rc; i++) {
        const fl_wire_site_keys *k = &t->site_keys[i];
        char name[FL_PKI_NAME_MAX], e[FL_ERR_LEN];
        int role = 0;
        /* The peer's certificate must come from the federation's CA and
         * carry the client role: only then does its signature mean that
         * site, and not the aggregator, made these keys. */
        rc =
            fl_pki_verify_cert((const char *)k->cert, k->cert_len, A->cfg.ca, NULL, name, &role, e);
        if (!rc && role != FL_ROLE_CLIENT) rc = FL_EAUTH;
        if (rc) {
            fl_seterr(err, rc, "site %u's certificate is refused: %s", k->site_id,
                      role != FL_ROLE_CLIENT && !e[0] ? "not a client" : e);
            break;
        }
        peers[i] = (fl_secagg_peer_keys){.site = k->site_id,
                                         .sig = k->keys.signature,
                                         .sig_len = k->keys.signature_len,
                                         .cert_pem = (const char *)k->cert,
                                         .cert_len = k->cert_len};
        memcpy(peers[i].enc_pk, k->keys.enc_pk, FL_SECAGG_KEY_BYTES);
        memcpy(peers[i].mask_pk, k->keys.mask_pk, FL_SECAGG_KEY_BYTES);
    }
    if (!rc) rc = fl_secagg_client_share(A->sa, cts, peers, n, err);
    if (rc && rc != FL_ENOMEM) {
        free(peers);
        free(cts);
        free(sh);
        return sa_skip(A, t, rc, err);
    }
    if (!rc) {
        for (uint32_t i = 0; i < n; i++) {
            sh[i].peer = cts[i].peer;
            sh[i].len = FL_SECAGG_CT_BYTES;
            memcpy(sh[i].data, cts[i].ct, FL_SECAGG_CT_BYTES);
        }
        fl_wire_submit m;
        submit_base(&m, A, t);
        m.result = FL_WIRE_RESULT_SHARES;
        m.shares.n = n;
        m.shares.shares = sh;
        rc = send_submit(A, &m, err);
        state_record(A, t->round, "SHARE_KEYS", 0, rc ? "failed" : "submitted");
    }
    free(peers);
    free(cts);
    free(sh);
    return rc;
}

static int do_unmask(agent *A, const fl_wire_task *t, char *err) {
    if (!sa_current(A, t)) return sa_skip(A, t, FL_ESTATE, "no masked input for it");
    size_t n = (size_t)t->n_survivors + t->n_dropped, got = 0;
    fl_secagg_reveal *rev = calloc(n ? n : 1, sizeof *rev);
    fl_wire_share *seed = calloc(n ? n : 1, sizeof *seed), *key = calloc(n ? n : 1, sizeof *key);
    int rc = rev && seed && key ? FL_OK : fl_seterr(err, FL_ENOMEM, "out of memory");
    if (!rc)
        rc = fl_secagg_client_unmask(A->sa, rev, &got, t->survivors, t->n_survivors, t->dropped,
                                     t->n_dropped, err);
    if (rc && rc != FL_ENOMEM) {
        free(rev);
        free(seed);
        free(key);
        return sa_skip(A, t, rc, err);
    }
    uint32_t ns = 0, nk = 0;
    for (size_t i = 0; !rc && i < got; i++) {
        fl_wire_share *w = rev[i].kind == FL_SECAGG_SEED ? &seed[ns++] : &key[nk++];
        w->peer = rev[i].peer;
        w->len = FL_SECAGG_SHARE_BYTES;
        memcpy(w->data, rev[i].share, FL_SECAGG_SHARE_BYTES);
    }
    if (!rc) {
        fl_wire_submit m;
        submit_base(&m, A, t);
        m.result = FL_WIRE_RESULT_UNMASK;
        m.unmask.seed_shares = (fl_wire_share_list){ns, seed};
        m.unmask.key_shares = (fl_wire_share_list){nk, key};
        rc = send_submit(A, &m, err);
        state_record(A, t->round, "UNMASK", 0, rc ? "failed" : "submitted");
    }
    /* Shares of other sites' secrets: wiped once sent. */
    if (rev) sodium_memzero(rev, n * sizeof *rev);
    if (seed) sodium_memzero(seed, n * sizeof *seed);
    if (key) sodium_memzero(key, n * sizeof *key);
    free(rev);
    free(seed);
    free(key);
    fl_secagg_client_free(A->sa);
    A->sa = NULL;
    return rc;
}

/* ------------------------------------------------------------ tasks */

static int do_stats(agent *A, const fl_wire_task *t, char *err) {
    int masked = t->kind == FL_WIRE_TASK_MASKED_INPUT;
    if (masked && !sa_current(A, t)) return sa_skip(A, t, FL_ESTATE, "no shares for it");
    double *v;
    int64_t n;
    int rc = fl_site_stats(&v, &n, &A->site, err);
    if (rc) return rc;
    int nc = fl_site_n_cols(&A->site);
    uint32_t *off = malloc(((size_t)nc + 1) * sizeof *off);
    int64_t *iv = masked ? malloc((size_t)n * sizeof *iv) : NULL;
    uint32_t *y = NULL;
    if (!off || (masked && !iv)) {
        free(v);
        free(off);
        free(iv);
        return FL_ENOMEM;
    }
    fl_site_level_offsets(&A->site, off);
    fl_wire_submit m;
    submit_base(&m, A, t);
    m.result = FL_WIRE_RESULT_STATS;
    if (masked) {
        rc = fl_sv_stats_encode(iv, v, n, (uint32_t)nc, err);
        if (!rc) rc = sa_mask_i64(A, t, &y, iv, n, err);
        if (rc && rc != FL_ENOMEM) rc = sa_skip(A, t, rc, err), y = NULL, masked = -1;
        m.stats.masked = y;
        m.stats.n_masked = y ? (uint64_t)n * FL_SECAGG_I64_WORDS : 0;
    } else {
        rc = fl_wire_stats_from_vector(&m.stats, v, n, (uint32_t)nc, off, err);
    }
    free(v);
    free(off);
    free(iv);
    if (!rc && masked >= 0) rc = send_submit(A, &m, err);
    if (masked) {
        m.stats.masked = NULL;
        free(y);
    } else
        fl_wire_stats_clear(&m.stats);
    return rc;
}

/* Sends a training result's vector (plain update or masked words) in chunks
 * of FL_WIRE_CHUNK_VALUES with the SHA-256 of the whole. */
static int send_train(agent *A, const fl_wire_task *t, const float *delta, const uint32_t *y,
                      int64_t n, double loss, int is_dp, double eps_after, char *err) {
    uint32_t chunks = fl_wire_chunk_count((uint64_t)n);
    uint8_t sha[32];
    crypto_hash_sha256(sha, delta ? (const uint8_t *)delta : (const uint8_t *)y, (size_t)n * 4);
    uint64_t upload_id;
    randombytes_buf(&upload_id, sizeof upload_id);
    upload_id |= 1;
    int rc = FL_OK;
    for (uint32_t k = 0; k < chunks && !rc; k++) {
        fl_wire_submit m;
        submit_base(&m, A, t);
        m.result = FL_WIRE_RESULT_TRAIN;
        uint64_t len, at = fl_wire_set_chunk(&m, (uint64_t)n, k, upload_id, sha, &len);
        if (delta) {
            m.train.update = (float *)delta + at;
            m.train.n_update = len;
        } else {
            m.train.masked = (uint32_t *)y + at;
            m.train.n_masked = len;
        }
        m.train.offset = at;
        m.train.n_examples = (uint64_t)A->site.n_train;
        m.train.train_loss = loss >= 0 ? loss : 0.0;
        if (is_dp) {
            /* The training loss is an exact statistic of the private rows,
             * outside the accountant: a DP site does not send it. */
            m.train.train_loss = 0.0;
            m.train.epsilon_spent = eps_after;
            snprintf(m.train.accountant, sizeof m.train.accountant, "rdp");
        }
        rc = send_submit(A, &m, err);
    }
    return rc;
}

static int do_train(agent *A, const fl_wire_task *t, char *err) {
    int masked = t->kind == FL_WIRE_TASK_MASKED_INPUT;
    if (masked && !sa_current(A, t)) return sa_skip(A, t, FL_ESTATE, "no shares for it");
    int rc = apply_totals(A, t, err);
    if (!rc) rc = fetch_model(A, t, err);
    if (rc) return rc;
    int refuse;
    char reason[FL_WIRE_REASON_LEN] = "";
    fl_dp_phase ph = {0};
    double eps_now, eps_after;
    if ((rc = privacy_gate(A, t, &refuse, reason, sizeof reason, &ph, &eps_now, &eps_after, err)))
        return rc;
    if (refuse) return send_refusal(A, t, reason, eps_now, err);
    int is_dp = t->train.dp.mode == FL_WIRE_PRIVACY_RECORD;
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
    fl_dp_source *src = NULL;
    if (is_dp) {
        c.dp_clip = t->train.dp.clip;
        c.dp_noise = t->train.dp.noise_multiplier;
        if ((rc = fl_dp_source_new(&src, (size_t)A->n_params, c.dp_noise * c.dp_clip, err)))
            return rc;
        c.noise = fl_dp_source_noise(src);
    }
    float *delta;
    int64_t n;
    double loss;
    int64_t t0 = fl_rpc_now_ms();
    rc = fl_site_train(&delta, &n, &loss, &A->site, A->model, A->model_len, &c, err);
    fl_dp_source_free(src);
    if (rc) return rc;
    uint32_t *y = NULL;
    if (masked) {
        /* Weighted, clipped, stochastically rounded into Z_2^32, then masked:
         * the aggregator learns only the weighted sum (docs/secagg.md). */
        const fl_wire_secagg_config *sc = &t->secagg;
        if ((uint64_t)n != sc->vector_words)
            rc = fl_seterr(err, FL_EPROTO, "secure sum of %llu words for an update of %lld",
                           (unsigned long long)sc->vector_words, (long long)n);
        y = rc ? NULL : malloc((size_t)n * sizeof *y);
        if (!rc && !y) rc = fl_seterr(err, FL_ENOMEM, "out of memory");
        if (!rc)
            rc = fl_secagg_quantize(y, delta, (uint64_t)n, sc->clip_range, sc->quantization_range,
                                    sc->weight, A->rng);
        if (!rc) rc = sa_mask(A, t, y, err);
        if (rc && rc != FL_ENOMEM) {
            free(delta);
            free(y);
            return sa_skip(A, t, rc, err);
        }
    }
    A->compute_ms += (double)(fl_rpc_now_ms() - t0);
    if (!rc) rc = send_train(A, t, masked ? NULL : delta, y, n, loss, is_dp, eps_after, err);
    free(delta);
    free(y);
    state_record(A, t->round, masked ? "MASKED_INPUT" : "TRAIN", A->site.n_train,
                 rc ? "failed" : "submitted");
    return rc;
}

/* The fairness audit's layout for the task's intersections (cached). */
static int fairness_layout(agent *A, const fl_wire_task *t, char *err) {
    if (A->have_fair && !strcmp(A->fair_spec, t->eval.fairness_intersections) &&
        A->fair.n_bins == (int)t->eval.fairness_bins)
        return FL_OK;
    fl_fairness_layout_free(&A->fair);
    A->have_fair = 0;
    int rc = fl_fairness_layout_init(&A->fair, &A->site.schema, t->eval.fairness_intersections,
                                     (int)t->eval.fairness_bins, err);
    if (rc) return rc;
    if (A->fair.n_counts != (int64_t)t->eval.n_fairness) {
        fl_fairness_layout_free(&A->fair);
        return fl_seterr(err, FL_EINVAL,
                         "fairness layout: this site's schema gives %lld counts, the federation "
                         "expects %u (check [schema] sensitive and [groups])",
                         (long long)A->fair.n_counts, t->eval.n_fairness);
    }
    snprintf(A->fair_spec, sizeof A->fair_spec, "%s", t->eval.fairness_intersections);
    A->have_fair = 1;
    return FL_OK;
}

static int do_evaluate(agent *A, const fl_wire_task *t, char *err) {
    int masked = t->kind == FL_WIRE_TASK_MASKED_INPUT;
    if (masked && !sa_current(A, t)) return sa_skip(A, t, FL_ESTATE, "no shares for it");
    int rc = apply_totals(A, t, err);
    if (!rc) rc = fetch_model(A, t, err);
    if (rc) return rc;
    int bins = (int)t->eval.n_bins;
    fl_site_eval ev;
    if ((rc = fl_site_evaluate(&ev, &A->site, A->model, A->model_len, bins, err))) return rc;
    uint64_t *fair = NULL;
    int64_t nf = t->eval.n_fairness;
    if (nf && ev.scores) {
        rc = fairness_layout(A, t, err);
        fair = rc ? NULL : calloc((size_t)nf, sizeof *fair);
        if (!rc && !fair) rc = fl_seterr(err, FL_ENOMEM, "out of memory");
        if (!rc)
            rc = fl_fairness_count(fair, &A->fair, A->site.val.groups, A->site.val.n_sensitive,
                                   A->site.val.y, ev.scores, ev.count, t->eval.fairness_threshold);
        if (rc == FL_EINVAL) fl_seterr(err, rc, "fairness counts: %s", fl_strerror(rc));
    }
    fl_wire_submit m;
    submit_base(&m, A, t);
    m.result = FL_WIRE_RESULT_EVAL;
    uint32_t *y = NULL;
    if (!rc && masked) {
        int64_t len = fl_sv_eval_len(bins, nf);
        int64_t *iv = malloc((size_t)len * sizeof *iv);
        fl_sv_eval e = {.loss_sum = ev.loss_sum,
                        .correct = ev.correct,
                        .count = ev.count,
                        .hist = ev.hist,
                        .fairness = fair};
        rc = iv ? fl_sv_eval_encode(iv, &e, bins, nf, err) : FL_ENOMEM;
        if (!rc) rc = sa_mask_i64(A, t, &y, iv, len, err);
        free(iv);
        if (rc && rc != FL_ENOMEM) {
            fl_site_eval_free(&ev);
            free(fair);
            return sa_skip(A, t, rc, err);
        }
        m.eval.masked = y;
        m.eval.n_masked = (uint64_t)len * FL_SECAGG_I64_WORDS;
    } else if (!rc) {
        m.eval.loss_sum = ev.loss_sum;
        m.eval.correct = (uint64_t)ev.correct;
        m.eval.count = (uint64_t)ev.count;
        if (ev.hist) {
            m.eval.n_hist = 2 * (uint32_t)ev.bins;
            m.eval.score_hist = ev.hist;
        }
        if (fair) {
            m.eval.n_fairness = (uint32_t)nf;
            m.eval.fairness = fair;
        }
    }
    if (!rc) rc = send_submit(A, &m, err);
    state_record(A, t->round, masked ? "MASKED_INPUT" : "EVALUATE", ev.count,
                 rc ? "failed" : "submitted");
    fl_site_eval_free(&ev);
    free(fair);
    free(y);
    return rc;
}

static int do_masked_input(agent *A, const fl_wire_task *t, char *err) {
    if (t->has_train) return do_train(A, t, err);
    if (t->has_eval) return do_evaluate(A, t, err);
    return do_stats(A, t, err);
}

/* Polls and works until TASK_DONE, a signal or a failure. */
static int run(agent *A, char *err) {
    int rc = join(A, err);
    uint64_t last_round = 0;
    while (!rc && !g_stop) {
        fl_wire_poll p;
        memset(&p, 0, sizeof p);
        snprintf(p.federation_id, sizeof p.federation_id, "%s", A->federation_id);
        p.last_round_seen = last_round;
        uint8_t *req, *resp = NULL;
        size_t len, rlen;
        int status = 0;
        if ((rc = fl_wire_pack_poll(&req, &len, &p, err))) break;
        rc = call(A, M_POLL, req, len, POLL_TIMEOUT_MS, &resp, &rlen, &status, err);
        free(req);
        if (rc && status == FL_RPC_FAILED_PRECONDITION) { /* aggregator restarted */
            fl_info("the aggregator does not know this site (restarted?): joining again");
            rc = join(A, err);
            continue;
        }
        if (rc && status == FL_RPC_DEADLINE_EXCEEDED) {
            rc = FL_OK;
            continue;
        }
        if (rc) break;
        fl_wire_expect ex;
        memset(&ex, 0, sizeof ex);
        ex.federation_id = A->federation_id;
        fl_wire_task t;
        rc = fl_wire_unpack_task(&t, resp, rlen, &ex, err);
        free(resp);
        if (rc) break;
        last_round = t.round > last_round ? t.round : last_round;
        if (A->skipping && t.round == A->skip_round && t.step == A->skip_step &&
            t.kind != FL_WIRE_TASK_DONE) {
            /* A task this site dropped out of: wait for the stage to move on. */
            fl_wire_task_free(&t);
            struct timespec ts = {0, 200 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        A->skipping = 0;
        if (A->cfg.die_round >= 0 && (uint64_t)A->cfg.die_round == t.round &&
            !strcmp(A->cfg.die_stage, fl_wire_task_kind_name((int)t.kind))) {
            fl_warn("[faults] die_at %d:%s: ending this process now", A->cfg.die_round,
                    A->cfg.die_stage);
            raise(SIGKILL);
        }
        switch (t.kind) {
        case FL_WIRE_TASK_NONE:
            break;
        case FL_WIRE_TASK_DONE:
            fl_info("the federation finished");
            state_record(A, t.round, "DONE", 0, "done");
            fl_wire_task_free(&t);
            return FL_OK;
        case FL_WIRE_TASK_STATS:
            rc = do_stats(A, &t, err);
            break;
        case FL_WIRE_TASK_TRAIN:
            rc = do_train(A, &t, err);
            break;
        case FL_WIRE_TASK_EVALUATE:
            rc = do_evaluate(A, &t, err);
            break;
        case FL_WIRE_TASK_ADVERTISE_KEYS:
            rc = do_advertise(A, &t, err);
            break;
        case FL_WIRE_TASK_SHARE_KEYS:
            rc = do_share_keys(A, &t, err);
            break;
        case FL_WIRE_TASK_MASKED_INPUT:
            rc = do_masked_input(A, &t, err);
            break;
        case FL_WIRE_TASK_UNMASK:
            rc = do_unmask(A, &t, err);
            break;
        default:
            rc = fl_seterr(err, FL_ENOTSUP, "task %s is not supported by this agent",
                           fl_wire_task_kind_name((int)t.kind));
        }
        if (rc == FL_EINVAL && strstr(err, "Submit")) {
            /* The aggregator refused the result (stale round after a restart,
             * say): log it and poll again rather than giving up. */
            fl_warn("result refused: %s", err);
            rc = FL_OK;
        } else if (rc == FL_ESTATE && strstr(err, "FAILED_PRECONDITION")) {
            /* A Submit or FetchChunk answered "join first" (the aggregator
             * restarted while this site worked on a task) or "not the
             * current global model" (the stage moved on): join again, which
             * an aggregator that knows the site treats as a no-op, and poll. */
            fl_info("%s: joining again", err);
            rc = join(A, err);
        }
        fl_wire_task_free(&t);
    }
    return rc;
}

int main(int argc, char **argv) {
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
        else {
            fprintf(stderr, "usage: cohort-client --config client.ini\n");
            return 2;
        }
    }
    if (!config) {
        fprintf(stderr, "usage: cohort-client --config client.ini\n");
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "cohort-client: libsodium failed to initialise\n");
        return 1;
    }
    agent *A = calloc(1, sizeof *A);
    char err[FL_ERR_LEN] = "";
    char *ca = NULL, *cert = NULL, *key = NULL;
    int rc = A ? load_config(&A->cfg, config, err) : FL_ENOMEM;
    if (!rc) {
        const char *slash = strrchr(A->cfg.cert, '/');
        char tag[80];
        snprintf(tag, sizeof tag, "client %.*s", (int)strcspn(slash ? slash + 1 : A->cfg.cert, "."),
                 slash ? slash + 1 : A->cfg.cert);
        fl_log_set_tag(tag);
    }
    if (!rc)
        rc = fl_site_open(&A->site, A->cfg.data, A->cfg.schema, A->cfg.val_fraction, A->cfg.seed,
                          A->cfg.device, err);
    if (!rc) rc = state_open(A, err);
    if (!rc && !(rc = read_file(&ca, A->cfg.ca, err)) && !(rc = read_file(&cert, A->cfg.cert, err)))
        rc = read_file(&key, A->cfg.key, err);
    if (!rc && A->cfg.crl[0]) {
        A->trust.ca = A->cfg.ca;
        A->trust.crl = A->cfg.crl;
        pthread_mutex_init(&A->trust.mu, NULL);
        fl_file_stamp_get(&A->trust.stamp, A->cfg.crl);
        rc = fl_pki_verifier_new(&A->trust.v, A->cfg.ca, A->cfg.crl, err);
    }
    if (!rc)
        rc = fl_rpc_channel_new_ex(&A->ch, A->cfg.aggregator, ca, cert, key, NULL,
                                   FL_WIRE_MAX_MESSAGE_BYTES,
                                   A->cfg.crl[0] ? check_aggregator : NULL, &A->trust, err);
    if (key) sodium_memzero(key, strlen(key));
    if (!rc) rc = fl_signer_new(&A->signer, A->cfg.key, err);
    if (!rc) rc = fl_csprng_new(&A->rng, err);
    if (!rc) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        /* What will stop this site working, seen coming (see the
         * aggregator's expiry_check). */
        const struct {
            const char *path, *what, *fix;
            double days;
        } items[] = {
            {A->cfg.crl, "the CRL", "ask the federation's CA for a re-signed ca.crl", 7},
            {A->cfg.cert, "this site's certificate", "ask the federation's CA for a new one", 30},
            {A->cfg.ca, "the federation CA", "ask the federation's CA what replaces it", 30},
        };
        char note[FL_PATH_LEN + 256];
        for (size_t i = 0; i < sizeof items / sizeof *items; i++)
            if (fl_pki_expiry_note(note, sizeof note, items[i].path, items[i].what, items[i].fix,
                                   items[i].days, time(NULL)))
                fl_warn("%s", note);
        fl_info("%lld training rows, %lld validation rows; aggregator %s",
                (long long)A->site.n_train, (long long)A->site.n_val, A->cfg.aggregator);
        rc = run(A, err);
    }
    if (rc) fprintf(stderr, "cohort-client: %s\n", err[0] ? err : fl_strerror(rc));
    free(ca);
    free(cert);
    free(key);
    if (A) {
        fl_rpc_channel_free(A->ch);
        if (A->trust.ca) {
            fl_pki_verifier_free(A->trust.v);
            pthread_mutex_destroy(&A->trust.mu);
        }
        fl_secagg_client_free(A->sa);
        fl_signer_free(A->signer);
        fl_csprng_free(A->rng);
        fl_fairness_layout_free(&A->fair);
        fl_site_close(&A->site);
        if (A->db) sqlite3_close(A->db);
        free(A->model);
        free(A);
    }
    return fl_exit_code(rc);
}
