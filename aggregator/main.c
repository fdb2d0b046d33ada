/* main.c: cohort-aggregator, the federation's server (DESIGN.md §1, §5, §6).
 *
 * The gRPC service (net/rpc.h, mutual TLS) turns each call into one call on
 * the round state machine (aggregator/round.h) under one mutex; the main
 * thread ticks the state machine's deadlines. PollTask is a long poll: a call
 * with nothing to do is parked and answered when the federation reaches a
 * stage with a task for that site, or with TASK_NONE shortly before the
 * client's deadline.
 *
 * Identity: gRPC has verified the client certificate's chain; the service
 * then checks it against the CRL and requires role "client" (crypto/pki.h)
 * before anything else, and the site is the certificate's name, never a
 * message field. Everything refused is logged and recorded in the audit log.
 *
 *   cohort-aggregator --config aggregator.ini */
#define _GNU_SOURCE /* O_TMPFILE, mkostemp */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "aggregator/config.h"
#include "aggregator/round.h"
#include "aggregator/store.h"
#include "core/fairness.h"
#include "core/filestamp.h"
#include "core/log.h"
#include "crypto/pki.h"
#include "crypto/secagg_vec.h"
#include "net/rpc.h"
#include "proto/wire.h"
#include "proto/wire_stats.h"

#include <sodium.h>

enum { M_JOIN = 0, M_POLL, M_SUBMIT, M_FETCH, N_METHODS };
static const char *const METHODS[N_METHODS] = {
    "/cohort.v1.Federation/Join", "/cohort.v1.Federation/PollTask", "/cohort.v1.Federation/Submit",
    "/cohort.v1.Federation/FetchChunk"};

#define MAX_PARKED 1024
#define POLL_HOLD_MS 20000 /* answer a parked poll after this long at most */

typedef struct parked {
    fl_rpc_call *call;
    int site;
    int64_t answer_by; /* monotonic ms */
} parked;

/* A chunked update (float32) or masked vector (uint32) being received:
 * 4-byte values either way. The chunks are spooled to an unlinked file in
 * [aggregator] spool_dir, not held in memory: a site in flight costs the
 * aggregator one chunk of memory, not one model (issue #3), and an upload
 * is still taken or refused whole, once its SHA-256 is checked. When the
 * last chunk is in, the file is mapped read-only while the state machine
 * adds it (one site at a time: everything runs under the service lock). */
typedef struct upload {
    uint64_t id, round;
    uint32_t n_chunks, received;
    uint8_t *have;
    int fd;    /* spool file, -1 = none */
    void *map; /* the whole upload, mapped once complete (n * 4 bytes) */
    uint64_t n;
    uint8_t sha[32];
} upload;

typedef struct service {
    pthread_mutex_t mu;
    fl_agg_config cfg;
    fl_store *store;
    fl_federation *fed;
    fl_pki_verifier *verifier;
    parked park[MAX_PARKED];
    int n_park;
    upload up[FL_MAX_SITES + 1];
    uint32_t n_cols; /* statistics layout, from the first STATS submission */
    uint32_t *level_offsets;
    int done_seen[FL_MAX_SITES + 1];
    int64_t done_at;
    char *cert[FL_MAX_SITES + 1]; /* each site's certificate (PEM), for its peers (secagg) */
} service;

/* The fairness audit ([fairness] in aggregator.ini): the layout from the
 * sites' schema and the options; round.c calls fairness_compute at commit. */
typedef struct fairness_ctx {
    fl_schema schema;
    fl_fairness_layout layout;
    fl_fairness_options opt;
    int loaded;
} fairness_ctx;

static int fairness_compute(void *ctx, char **json, char **alerts, const uint64_t *counts,
                            double acc_sum, double acc_sumsq, int64_t sites) {
    fairness_ctx *F = ctx;
    fl_fairness_options o = F->opt;
    o.site_accuracy_sum = acc_sum;
    o.site_accuracy_sumsq = acc_sumsq;
    o.n_sites = sites;
    cJSON *j = NULL;
    char err[FL_ERR_LEN];
    *json = *alerts = NULL;
    int rc = fl_fairness_compute(&j, &F->layout, counts, &o, err);
    if (rc) {
        fl_warn("fairness audit: %s", err);
        return rc;
    }
    /* One line per alert, for the audit log. */
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(j, "alerts"), *a;
    size_t cap = 1, n = 0;
    cJSON_ArrayForEach(a, al) cap += 256;
    *alerts = malloc(cap);
    if (*alerts) (*alerts)[0] = 0;
    cJSON_ArrayForEach(a, al) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(a, "metric"),
                    *at = cJSON_GetObjectItemCaseSensitive(a, "attribute"),
                    *v = cJSON_GetObjectItemCaseSensitive(a, "value"),
                    *l = cJSON_GetObjectItemCaseSensitive(a, "limit");
        if (*alerts && n + 1 < cap)
            n += (size_t)snprintf(*alerts + n, cap - n, "%s of %s is %.4g, limit %.4g\n",
                                  cJSON_IsString(m) ? m->valuestring : "?",
                                  cJSON_IsString(at) ? at->valuestring : "?",
                                  cJSON_IsNumber(v) ? v->valuedouble : NAN,
                                  cJSON_IsNumber(l) ? l->valuedouble : NAN);
    }
    *json = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return *json ? FL_OK : FL_ENOMEM;
}

static int fairness_setup(fairness_ctx *F, fl_agg_config *cfg, char *err) {
    fl_fairness_options_init(&F->opt);
    if (!cfg->fairness_schema[0]) return FL_OK;
    int rc = fl_schema_load(&F->schema, cfg->fairness_schema, err);
    if (rc) return rc;
    F->loaded = 1;
    if (F->schema.sensitive.n == 0) return FL_OK; /* nothing to audit */
    rc = fl_fairness_layout_init(&F->layout, &F->schema, cfg->fed.fairness_intersections,
                                 cfg->fed.fairness_bins, err);
    if (rc) return rc;
    F->opt.threshold = cfg->fed.fairness_threshold;
    F->opt.min_group_count = cfg->min_group_count;
    double *lim[9] = {&F->opt.max_demographic_parity_difference,
                      &F->opt.min_demographic_parity_ratio,
                      &F->opt.max_equalized_odds_difference,
                      &F->opt.min_equalized_odds_ratio,
                      &F->opt.max_equal_opportunity_difference,
                      &F->opt.max_average_odds_difference,
                      &F->opt.min_disparate_impact,
                      &F->opt.max_generalized_entropy_index,
                      &F->opt.max_theil_index};
    for (int i = 0; i < 9; i++)
        *lim[i] = cfg->fair_limits[i];
    cfg->fed.n_fairness = F->layout.n_counts;
    cfg->fed.fairness_compute = fairness_compute;
    cfg->fed.fairness_ctx = F;
    fl_info("fairness audit: %d attribute(s), %lld counts per site, layout %s", F->layout.n_audits,
            (long long)F->layout.n_counts, F->layout.fingerprint_hex);
    return FL_OK;
}

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int64_t wall_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* A PEM file named by aggregator.ini: it must exist and hold something. */
static int read_file(char **out, const char *path, char *err) {
    size_t len;
    int rc = fl_read_file(out, &len, path, err);
    if (!rc && len == 0) {
        free(*out);
        *out = NULL;
        rc = fl_seterr(err, FL_EIO, "%s: empty", path);
    }
    return rc;
}

/* ------------------------------------------------------------ replies */

static void reply_msg(fl_rpc_call *call, int status, const char *details, uint8_t *buf,
                      size_t len) {
    fl_rpc_call_reply(call, status, details, buf, len);
    free(buf);
}

static void reply_error(fl_rpc_call *call, int status, const char *details) {
    fl_rpc_call_reply(call, status, details, NULL, 0);
}

/* The wire task for fl_task t; 0 or an FL_E* code. */
static int build_task(service *S, uint8_t **out, size_t *len, const fl_task *t, char *err) {
    const fl_fed_config *fc = fl_fed_get_config(S->fed);
    fl_wire_task w;
    memset(&w, 0, sizeof w);
    static const int kinds[] = {
        FL_WIRE_TASK_NONE,       FL_WIRE_TASK_STATS,        FL_WIRE_TASK_TRAIN,
        FL_WIRE_TASK_EVALUATE,   FL_WIRE_TASK_DONE,         FL_WIRE_TASK_ADVERTISE_KEYS,
        FL_WIRE_TASK_SHARE_KEYS, FL_WIRE_TASK_MASKED_INPUT, FL_WIRE_TASK_UNMASK};
    w.kind = (fl_wire_task_kind)kinds[t->kind];
    snprintf(w.federation_id, sizeof w.federation_id, "%s", fc->federation_id);
    w.round = (uint64_t)t->round;
    w.step = t->step;
    /* What the task asks for: a MASKED_INPUT task carries the inputs of the
     * task whose result it masks. */
    int what = t->kind == FL_TASK_MASKED_INPUT ? t->purpose : t->kind;
    fl_wire_site_keys *keys = NULL;
    fl_wire_share *shares = NULL;
    if (t->kind >= FL_TASK_ADVERTISE_KEYS) {
        fl_wire_secagg_config *sc = &w.secagg;
        w.has_secagg = true;
        sc->enabled = true;
        sc->threshold = fc->sa_threshold;
        sc->neighbors = (uint32_t)fc->sa_neighbors;
        sc->clip_range = fc->sa_clip;
        sc->quantization_range = fc->sa_levels;
        sc->graph_seed = t->sa->graph_seed;
        sc->n_participants = t->sa->n;
        memcpy(sc->participants, t->sa->ids, t->sa->n * sizeof(uint32_t));
        sc->threshold_count = t->sa->threshold;
        sc->vector_words = t->sa->d;
        sc->weight = t->sa_weight;
        sc->session = t->sa->round;
    }
    if (t->kind == FL_TASK_SHARE_KEYS) {
        keys = calloc(t->n_peer_keys ? t->n_peer_keys : 1, sizeof *keys);
        if (!keys) return FL_ENOMEM;
        for (size_t i = 0; i < t->n_peer_keys; i++) {
            const fl_secagg_peer_keys *k = &t->peer_keys[i];
            keys[i].site_id = k->site;
            memcpy(keys[i].keys.enc_pk, k->enc_pk, 32);
            memcpy(keys[i].keys.mask_pk, k->mask_pk, 32);
            keys[i].keys.signature_len = (uint32_t)k->sig_len;
            memcpy(keys[i].keys.signature, k->sig, k->sig_len);
            keys[i].cert_len = (uint32_t)k->cert_len;
            keys[i].cert = (uint8_t *)k->cert_pem;
        }
        w.n_site_keys = (uint32_t)t->n_peer_keys;
        w.site_keys = keys;
    }
    if (t->kind == FL_TASK_MASKED_INPUT && t->n_cts) {
        shares = calloc(t->n_cts, sizeof *shares);
        if (!shares) {
            free(keys);
            return FL_ENOMEM;
        }
        for (size_t i = 0; i < t->n_cts; i++) {
            shares[i].peer = t->cts[i].peer;
            shares[i].len = FL_SECAGG_CT_BYTES;
            memcpy(shares[i].data, t->cts[i].ct, FL_SECAGG_CT_BYTES);
        }
        w.n_shares = (uint32_t)t->n_cts;
        w.shares = shares;
    }
    if (t->kind == FL_TASK_UNMASK) {
        w.n_survivors = (uint32_t)t->n_survivors;
        w.survivors = (uint32_t *)t->survivors;
        w.n_dropped = (uint32_t)t->n_dropped;
        w.dropped = (uint32_t *)t->dropped;
    }
    w.stage = fl_wire_task_stage(w.kind);
    if (w.kind != FL_WIRE_TASK_NONE && w.kind != FL_WIRE_TASK_DONE)
        w.deadline_unix_ms = wall_ms() + (t->deadline_ms - fl_rpc_now_ms());
    fl_wire_stats_column *cols = NULL;
    int rc = FL_OK;
    if (what == FL_TASK_STATS) {
        /* The columns are each site's own business (its schema); the spec
         * names none, and the site answers for its encoder's columns. */
        cols = calloc(1, sizeof *cols);
        if (!cols) {
            free(keys);
            free(shares);
            return FL_ENOMEM;
        }
        snprintf(cols[0].name, sizeof cols[0].name, "*");
        w.has_stats = true;
        w.stats.n_cols = 1;
        w.stats.cols = cols;
    }
    if (what == FL_TASK_TRAIN || what == FL_TASK_EVALUATE) {
        w.has_model = true;
        memcpy(w.model.sha256, t->model_sha256, 32);
        w.model.total_bytes = t->model_len;
        w.model.n_params = (uint64_t)fl_fed_n_params(S->fed);
        if (t->stats) {
            if (!S->level_offsets)
                rc = fl_seterr(err, FL_ESTATE, "no statistics layout");
            else
                rc = fl_wire_stats_from_vector(&w.totals, t->stats, t->n_stats, S->n_cols,
                                               S->level_offsets, err);
            if (rc) {
                free(keys);
                free(shares);
                return rc;
            }
            w.has_totals = true;
        }
    }
    if (what == FL_TASK_TRAIN) {
        w.has_train = true;
        w.train.local_epochs = (uint32_t)fc->local_epochs;
        w.train.batch_size = (uint32_t)fc->batch_size;
        w.train.optimizer = fc->optimizer == 1 ? FL_WIRE_OPT_ADAM : FL_WIRE_OPT_SGD;
        w.train.lr = fc->lr;
        w.train.momentum = fc->momentum;
        w.train.weight_decay = fc->weight_decay;
        w.train.prox_mu = t->prox_mu;
        w.train.seed = t->seed;
        w.train.dp.mode = fc->dp_record ? FL_WIRE_PRIVACY_RECORD : FL_WIRE_PRIVACY_NONE;
        if (fc->dp_record) {
            w.train.dp.noise_multiplier = fc->dp_noise;
            w.train.dp.clip = fc->dp_clip;
            w.train.dp.delta = fc->dp_delta;
            w.train.dp.max_epsilon = fc->dp_max_epsilon;
        }
    }
    if (what == FL_TASK_EVALUATE) {
        w.has_eval = true;
        w.eval.n_bins = (uint32_t)fc->hist_bins;
        w.eval.n_fairness = (uint32_t)fc->n_fairness;
        if (fc->n_fairness) {
            snprintf(w.eval.fairness_intersections, sizeof w.eval.fairness_intersections, "%s",
                     fc->fairness_intersections);
            w.eval.fairness_threshold = fc->fairness_threshold;
            w.eval.fairness_bins = (uint32_t)fc->fairness_bins;
        }
    }
    rc = fl_wire_pack_task(out, len, &w, err);
    fl_wire_stats_clear(&w.totals);
    free(cols);
    free(keys);
    free(shares);
    return rc;
}

/* Answers a poll: the task, or parks the call when there is none yet. */
static void answer_poll(service *S, fl_rpc_call *call, int site, int park_if_none) {
    fl_task t;
    char err[FL_ERR_LEN] = "";
    int64_t now = fl_rpc_now_ms();
    if (fl_fed_poll(S->fed, site, &t, now)) {
        reply_error(call, FL_RPC_FAILED_PRECONDITION, "join first");
        return;
    }
    if (t.kind == FL_TASK_NONE && park_if_none && S->n_park < MAX_PARKED) {
        int64_t by = now + POLL_HOLD_MS, dl = fl_rpc_call_deadline(call);
        if (dl != INT64_MAX && dl - 1000 < by) by = dl - 1000;
        S->park[S->n_park++] = (parked){call, site, by};
        return;
    }
    if (t.kind == FL_TASK_DONE) {
        S->done_seen[site] = 1;
        if (!S->done_at) S->done_at = now;
    }
    uint8_t *buf;
    size_t len;
    if (build_task(S, &buf, &len, &t, err)) {
        fl_error("task for site %d: %s", site, err);
        reply_error(call, FL_RPC_INTERNAL, "cannot build the task");
        return;
    }
    fl_fed_count_bytes(S->fed, 0, (double)len);
    reply_msg(call, FL_RPC_OK, NULL, buf, len);
}

/* Re-polls every parked call: answers those that now have a task, and those
 * whose hold time is up (with TASK_NONE). Called with the mutex held. */
static void wake_parked(service *S) {
    int64_t now = fl_rpc_now_ms();
    int k = 0;
    for (int i = 0; i < S->n_park; i++) {
        parked p = S->park[i];
        if (fl_rpc_call_is_cancelled(p.call)) {
            reply_error(p.call, FL_RPC_CANCELLED, "cancelled");
            continue;
        }
        fl_task t;
        fl_fed_poll(S->fed, p.site, &t, now);
        if (t.kind != FL_TASK_NONE || now >= p.answer_by)
            answer_poll(S, p.call, p.site, 0);
        else
            S->park[k++] = p;
    }
    S->n_park = k;
}

/* ------------------------------------------------------------ handlers */

static int save_layout(service *S, char *err);

static void handle_join(service *S, fl_rpc_call *call, const char *name, const uint8_t *req,
                        size_t len) {
    char err[FL_ERR_LEN] = "";
    fl_wire_join j;
    if (fl_wire_unpack_join(&j, req, len, NULL, err)) {
        fl_fed_audit(S->fed, "reject", name, err);
        reply_error(call, FL_RPC_INVALID_ARGUMENT, err);
        return;
    }
    int site, rc = FL_OK;
    if (j.n_level_offsets && fl_fed_site_id(S->fed, name)) {
        /* The statistics layout: public (it follows from the schema), the
         * same at every site, and needed before a secure sum of statistics. */
        uint32_t nc = j.n_level_offsets - 1;
        rc = fl_fed_set_stats_len(S->fed, fl_sv_stats_len(nc, j.level_offsets[nc]), nc, err);
        if (!rc && !S->level_offsets) {
            S->level_offsets = malloc(j.n_level_offsets * sizeof(uint32_t));
            if (!S->level_offsets)
                rc = fl_seterr(err, FL_ENOMEM, "out of memory");
            else {
                memcpy(S->level_offsets, j.level_offsets, j.n_level_offsets * sizeof(uint32_t));
                S->n_cols = nc;
                rc = save_layout(S, err);
            }
        }
        if (rc) fl_fed_audit(S->fed, "refuse", name, err);
    }
    if (!rc)
        rc = fl_fed_join(S->fed, name, (int64_t)j.n_examples, (int)j.n_features, (int)j.n_classes,
                         &site, fl_rpc_now_ms(), err);
    if (!rc) {
        const char *pem = fl_rpc_call_peer_cert_pem(call);
        free(S->cert[site]);
        S->cert[site] = pem ? strdup(pem) : NULL;
    }
    fl_wire_join_free(&j);
    if (rc) {
        reply_error(call, rc == FL_EAUTH ? FL_RPC_PERMISSION_DENIED : FL_RPC_FAILED_PRECONDITION,
                    err);
        return;
    }
    const fl_fed_config *fc = fl_fed_get_config(S->fed);
    fl_wire_join_response r;
    memset(&r, 0, sizeof r);
    snprintf(r.federation_id, sizeof r.federation_id, "%s", fc->federation_id);
    snprintf(r.model_spec, sizeof r.model_spec, "%s", fc->model);
    r.n_features = (uint32_t)fl_fed_features(S->fed);
    r.n_classes = (uint32_t)fl_fed_classes(S->fed);
    r.n_params = (uint64_t)fl_fed_n_params(S->fed);
    r.privacy.mode = FL_WIRE_PRIVACY_NONE;
    if (fc->secagg) {
        r.secagg.enabled = true;
        r.secagg.threshold = fc->sa_threshold;
        r.secagg.neighbors = (uint32_t)fc->sa_neighbors;
        r.secagg.clip_range = fc->sa_clip;
        r.secagg.quantization_range = fc->sa_levels;
    }
    r.rounds = (uint32_t)fc->rounds;
    r.site_id = (uint32_t)site;
    r.init_seed = fc->seed;
    uint8_t *buf;
    size_t blen;
    if (fl_wire_pack_join_response(&buf, &blen, &r, err)) {
        fl_error("join response: %s", err);
        reply_error(call, FL_RPC_INTERNAL, "cannot build the response");
        return;
    }
    reply_msg(call, FL_RPC_OK, NULL, buf, blen);
    wake_parked(S);
}

static void submit_reply(fl_rpc_call *call, int rc, const char *err) {
    fl_wire_submit_response r;
    memset(&r, 0, sizeof r);
    r.accepted = rc == FL_OK;
    if (rc) snprintf(r.reason, sizeof r.reason, "%s", err);
    uint8_t *buf;
    size_t len;
    char e[FL_ERR_LEN];
    if (fl_wire_pack_submit_response(&buf, &len, &r, e)) {
        reply_error(call, FL_RPC_INTERNAL, "cannot build the response");
        return;
    }
    /* A refused result is a protocol answer (accepted = false), and also an
     * error status, so a client that ignores the body still sees it. */
    if (rc) {
        reply_error(call, rc == FL_EAUTH ? FL_RPC_PERMISSION_DENIED : FL_RPC_INVALID_ARGUMENT, err);
        free(buf);
        return;
    }
    reply_msg(call, FL_RPC_OK, NULL, buf, len);
}

static void upload_reset(upload *u) {
    if (u->map) munmap(u->map, u->n * 4);
    if (u->fd >= 0) close(u->fd);
    free(u->have);
    memset(u, 0, sizeof *u);
    u->fd = -1;
}

/* An anonymous file in dir for one upload of `bytes`, reserved up front so
 * that a full disk refuses the upload at its first chunk, not its last. */
static int spool_open(int *fd_out, const char *dir, uint64_t bytes, char *err) {
    int fd = -1;
#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
    if (fd < 0) { /* a file system without O_TMPFILE: create and unlink */
        char path[FL_PATH_LEN + 32];
        snprintf(path, sizeof path, "%s/.cohort-upload-XXXXXX", dir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0) unlink(path);
    }
    if (fd < 0)
        return fl_seterr(err, FL_EIO, "spool_dir %s: cannot create an upload file: %s", dir,
                         strerror(errno));
    int e = posix_fallocate(fd, 0, (off_t)bytes);
    if (e == EOPNOTSUPP || e == EINVAL) e = ftruncate(fd, (off_t)bytes) ? errno : 0;
    if (e) {
        close(fd);
        return fl_seterr(err, FL_EIO, "spool_dir %s: cannot reserve %llu bytes for an upload: %s",
                         dir, (unsigned long long)bytes, strerror(e));
    }
    *fd_out = fd;
    return FL_OK;
}

static int spool_write(int fd, const void *p, size_t len, uint64_t off, const char *dir,
                       char *err) {
    const uint8_t *b = p;
    while (len) {
        ssize_t w = pwrite(fd, b, len, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return fl_seterr(err, FL_EIO, "spool_dir %s: cannot write an upload chunk: %s", dir,
                             w < 0 ? strerror(errno) : "short write");
        b += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return FL_OK;
}

/* Collects a chunk of an update or masked vector (4-byte values, `vals`);
 * *complete when all chunks are in and their SHA-256 matches: then u->map
 * holds the whole vector until upload_reset. */
static int collect_chunk(service *S, int site, const fl_wire_submit *m, const void *vals,
                         uint64_t n_vals, int *complete, char *err) {
    upload *u = &S->up[site];
    uint64_t total = (uint64_t)fl_fed_n_params(S->fed);
    *complete = 0;
    if (u->id != m->upload_id || u->round != m->round) {
        upload_reset(u);
        u->have = calloc(m->n_chunks, 1);
        if (!u->have) return fl_seterr(err, FL_ENOMEM, "out of memory");
        int rc = spool_open(&u->fd, S->cfg.spool_dir, total * 4, err);
        if (rc) {
            upload_reset(u);
            return rc;
        }
        u->id = m->upload_id;
        u->round = m->round;
        u->n_chunks = m->n_chunks;
        u->n = total;
        memcpy(u->sha, m->total_sha256, 32);
    }
    if (m->n_chunks != u->n_chunks || memcmp(u->sha, m->total_sha256, 32))
        return fl_seterr(err, FL_EINVAL, "Submit: chunk fields differ within upload %llu",
                         (unsigned long long)u->id);
    if (u->have[m->chunk_index])
        return fl_seterr(err, FL_EINVAL, "Submit.chunk_index: %u received twice", m->chunk_index);
    uint64_t first = (uint64_t)m->chunk_index * FL_WIRE_CHUNK_VALUES;
    if (first + n_vals > total)
        return fl_seterr(err, FL_EINVAL, "Submit: chunk %u runs past the %llu values expected",
                         m->chunk_index, (unsigned long long)total);
    int rc = spool_write(u->fd, vals, (size_t)n_vals * 4, first * 4, S->cfg.spool_dir, err);
    if (rc) {
        upload_reset(u); /* the site starts this upload again */
        return rc;
    }
    u->have[m->chunk_index] = 1;
    if (++u->received < u->n_chunks) return FL_OK;
    void *p = mmap(NULL, u->n * 4, PROT_READ, MAP_SHARED, u->fd, 0);
    if (p == MAP_FAILED) {
        upload_reset(u);
        return fl_seterr(err, FL_EIO, "spool_dir %s: cannot map a finished upload: %s",
                         S->cfg.spool_dir, strerror(errno));
    }
    u->map = p;
    madvise(p, u->n * 4, MADV_SEQUENTIAL);
    uint8_t h[32];
    crypto_hash_sha256(h, (const uint8_t *)p, u->n * 4);
    if (memcmp(h, u->sha, 32)) {
        upload_reset(u);
        return fl_seterr(err, FL_EINVAL,
                         "Submit.total_sha256: the reassembled update does "
                         "not match");
    }
    *complete = 1;
    return FL_OK;
}

/* The statistics layout (columns and level offsets) is part of the
 * federation's state: a restarted aggregator needs it to send the summed
 * statistics with every task, so it lives in the store beside the sums. */
static int save_layout(service *S, char *err) {
    size_t cap = ((size_t)S->n_cols + 2) * 12, n = 0;
    char *txt = malloc(cap);
    if (!txt) return fl_seterr(err, FL_ENOMEM, "out of memory");
    n += (size_t)snprintf(txt, cap, "%u", S->n_cols);
    for (uint32_t c = 0; c <= S->n_cols; c++)
        n += (size_t)snprintf(txt + n, cap - n, ",%u", S->level_offsets[c]);
    int rc = fl_store_meta_set(S->store, "stats_layout", txt, err);
    free(txt);
    return rc;
}

static int load_layout(service *S, char *err) {
    char *txt;
    int rc = fl_store_meta_get(S->store, "stats_layout", &txt, err);
    if (rc || !txt) return rc;
    char *p = txt, *end;
    unsigned long n = strtoul(p, &end, 10);
    if (end == p || n > FL_WIRE_MAX_COLUMNS) rc = FL_EIO;
    uint32_t *off = rc ? NULL : malloc((n + 1) * sizeof *off);
    if (!rc && !off) rc = FL_ENOMEM;
    for (unsigned long c = 0; !rc && c <= n; c++) {
        p = end;
        if (*p != ',')
            rc = FL_EIO;
        else
            off[c] = (uint32_t)strtoul(p + 1, &end, 10);
    }
    free(txt);
    if (rc) {
        free(off);
        return fl_seterr(err, rc, "%s: meta stats_layout is damaged", S->cfg.db);
    }
    S->level_offsets = off;
    S->n_cols = (uint32_t)n;
    return FL_OK;
}

static void handle_submit(service *S, fl_rpc_call *call, const char *name, const uint8_t *req,
                          size_t len) {
    char err[FL_ERR_LEN] = "";
    int site = fl_fed_site_id(S->fed, name);
    if (!fl_fed_joined(S->fed, site)) {
        reply_error(call, FL_RPC_FAILED_PRECONDITION, "join first");
        return;
    }
    const fl_fed_config *fc = fl_fed_get_config(S->fed);
    uint64_t round = (uint64_t)fl_fed_round(S->fed);
    fl_wire_expect ex;
    memset(&ex, 0, sizeof ex);
    ex.federation_id = fc->federation_id;
    ex.round = &round;
    ex.n_params = (uint64_t)fl_fed_n_params(S->fed);
    ex.n_cols = S->level_offsets ? S->n_cols : 0;
    ex.level_offsets = S->level_offsets;
    fl_wire_submit m;
    int rc = fl_wire_unpack_submit(&m, req, len, &ex, err);
    if (rc) {
        fl_fed_audit(S->fed, "reject", name, err);
        submit_reply(call, FL_EINVAL, err);
        return;
    }
    fl_result r;
    memset(&r, 0, sizeof r);
    r.round = (int)m.round;
    r.step = m.step;
    double *vec = NULL;
    fl_secagg_peer_keys pk;
    fl_secagg_ct *cts = NULL;
    fl_secagg_reveal *rev = NULL;
    float *delta = NULL;
    int ready = 1, audited = 0;
    switch (m.kind) {
    case FL_WIRE_TASK_STATS:
        r.kind = FL_TASK_STATS;
        if (m.result != FL_WIRE_RESULT_STATS) {
            rc = fl_seterr(err, FL_EINVAL, "Submit: a STATS task needs a stats result");
            break;
        }
        rc = fl_wire_stats_to_vector(&vec, &r.n_stats, &m.stats, err);
        if (!rc && !S->level_offsets) {
            S->level_offsets = malloc(((size_t)m.stats.n_cols + 1) * sizeof(uint32_t));
            if (!S->level_offsets)
                rc = FL_ENOMEM;
            else {
                memcpy(S->level_offsets, m.stats.level_offsets,
                       ((size_t)m.stats.n_cols + 1) * sizeof(uint32_t));
                S->n_cols = m.stats.n_cols;
                rc = save_layout(S, err);
            }
        }
        r.stats = vec;
        break;
    case FL_WIRE_TASK_TRAIN:
        r.kind = FL_TASK_TRAIN;
        if (m.result != FL_WIRE_RESULT_TRAIN) {
            rc = fl_seterr(err, FL_EINVAL, "Submit: a TRAIN task needs a train result");
            break;
        }
        r.refused = m.train.refused;
        r.reason = m.train.refusal_reason;
        /* A site that reports no accountant spent no privacy it accounts for. */
        r.epsilon = m.train.accountant[0] ? m.train.epsilon_spent : NAN;
        r.n_examples = (int64_t)m.train.n_examples;
        r.train_loss = m.train.train_loss;
        if (!r.refused && (m.n_chunks > 1)) {
            /* Not expected now: refused (and audited) at this chunk. */
            if ((rc = fl_fed_accepts(S->fed, site, r.round, r.kind, err))) {
                audited = 1;
                break;
            }
            rc = collect_chunk(S, site, &m, m.train.update, m.train.n_update, &ready, err);
            if (!rc && ready) {
                r.delta = S->up[site].map;
                r.n_params = (int64_t)S->up[site].n;
            }
        } else if (!r.refused) {
            r.delta = m.train.update;
            r.n_params = (int64_t)m.train.n_update;
        }
        break;
    case FL_WIRE_TASK_EVALUATE:
        r.kind = FL_TASK_EVALUATE;
        if (m.result != FL_WIRE_RESULT_EVAL) {
            rc = fl_seterr(err, FL_EINVAL, "Submit: an EVALUATE task needs an eval result");
            break;
        }
        r.loss_sum = m.eval.loss_sum;
        r.correct = (int64_t)m.eval.correct;
        r.count = (int64_t)m.eval.count;
        if (m.eval.n_fairness) {
            r.fairness = m.eval.fairness;
            r.n_fairness = m.eval.n_fairness;
        }
        if (m.eval.n_hist) {
            r.hist = m.eval.score_hist;
            r.hist_bins = (int)(m.eval.n_hist / 2);
            if (m.eval.n_hist != 2 * (uint32_t)fc->hist_bins)
                rc = fl_seterr(err, FL_EINVAL, "Submit.eval.score_hist: %u counts, expected %d",
                               m.eval.n_hist, 2 * fc->hist_bins);
        }
        break;
    case FL_WIRE_TASK_ADVERTISE_KEYS:
        r.kind = FL_TASK_ADVERTISE_KEYS;
        if (m.result != FL_WIRE_RESULT_KEYS) {
            rc = fl_seterr(err, FL_EINVAL, "Submit: an ADVERTISE_KEYS task needs keys");
            break;
        }
        memset(&pk, 0, sizeof pk);
        memcpy(pk.enc_pk, m.keys.enc_pk, 32);
        memcpy(pk.mask_pk, m.keys.mask_pk, 32);
        pk.sig = m.keys.signature;
        pk.sig_len = m.keys.signature_len;
        /* The certificate the site authenticated with: its peers check the
         * signature against it, so the aggregator cannot substitute keys. */
        pk.cert_pem = S->cert[site];
        pk.cert_len = S->cert[site] ? strlen(S->cert[site]) : 0;
        r.keys = &pk;
        break;
    case FL_WIRE_TASK_SHARE_KEYS:
        r.kind = FL_TASK_SHARE_KEYS;
        if (m.result != FL_WIRE_RESULT_SHARES) {
            rc = fl_seterr(err, FL_EINVAL, "Submit: a SHARE_KEYS task needs shares");
            break;
        }
        cts = calloc(m.shares.n ? m.shares.n : 1, sizeof *cts);
        if (!cts) {
            rc = fl_seterr(err, FL_ENOMEM, "out of memory");
            break;
        }
        for (uint32_t i = 0; i < m.shares.n && !rc; i++) {
            if (m.shares.shares[i].len != FL_SECAGG_CT_BYTES)
                rc = fl_seterr(err, FL_EINVAL, "Submit.shares[%u]: %u bytes, expected %d", i,
                               m.shares.shares[i].len, FL_SECAGG_CT_BYTES);
            cts[i].peer = m.shares.shares[i].peer;
            memcpy(cts[i].ct, m.shares.shares[i].data, FL_SECAGG_CT_BYTES);
        }
        r.cts = cts;
        r.n_cts = m.shares.n;
        break;
    case FL_WIRE_TASK_MASKED_INPUT:
        r.kind = FL_TASK_MASKED_INPUT;
        if (m.result == FL_WIRE_RESULT_TRAIN) {
            r.refused = m.train.refused;
            r.reason = m.train.refusal_reason;
            r.epsilon = m.train.accountant[0] ? m.train.epsilon_spent : NAN;
            r.n_examples = (int64_t)m.train.n_examples;
            r.train_loss = m.train.train_loss;
            if (!r.refused && m.n_chunks > 1) {
                if ((rc = fl_fed_accepts(S->fed, site, r.round, r.kind, err))) {
                    audited = 1;
                    break;
                }
                rc = collect_chunk(S, site, &m, m.train.masked, m.train.n_masked, &ready, err);
                if (!rc && ready) {
                    r.masked = S->up[site].map;
                    r.n_masked = S->up[site].n;
                }
            } else if (!r.refused) {
                r.masked = m.train.masked;
                r.n_masked = m.train.n_masked;
            }
        } else if (m.result == FL_WIRE_RESULT_STATS) {
            r.masked = m.stats.masked;
            r.n_masked = m.stats.n_masked;
        } else if (m.result == FL_WIRE_RESULT_EVAL) {
            r.masked = m.eval.masked;
            r.n_masked = m.eval.n_masked;
        } else {
            rc = fl_seterr(err, FL_EINVAL, "Submit: a MASKED_INPUT task needs a masked vector");
        }
        break;
    case FL_WIRE_TASK_UNMASK: {
        r.kind = FL_TASK_UNMASK;
        if (m.result != FL_WIRE_RESULT_UNMASK) {
            rc = fl_seterr(err, FL_EINVAL, "Submit: an UNMASK task needs shares");
            break;
        }
        const fl_wire_share_list *lists[2] = {&m.unmask.seed_shares, &m.unmask.key_shares};
        size_t n = (size_t)lists[0]->n + lists[1]->n, k = 0;
        rev = calloc(n ? n : 1, sizeof *rev);
        if (!rev) {
            rc = fl_seterr(err, FL_ENOMEM, "out of memory");
            break;
        }
        for (int l = 0; l < 2 && !rc; l++)
            for (uint32_t i = 0; i < lists[l]->n && !rc; i++, k++) {
                const fl_wire_share *sh = &lists[l]->shares[i];
                if (sh->len != FL_SECAGG_SHARE_BYTES)
                    rc = fl_seterr(err, FL_EINVAL, "Submit.unmask: share of %u bytes, expected %d",
                                   sh->len, FL_SECAGG_SHARE_BYTES);
                rev[k].peer = sh->peer;
                rev[k].kind = l == 0 ? FL_SECAGG_SEED : FL_SECAGG_KEY;
                memcpy(rev[k].share, sh->data, FL_SECAGG_SHARE_BYTES);
            }
        r.reveals = rev;
        r.n_reveals = n;
        break;
    }
    default:
        rc = fl_seterr(err, FL_EINVAL, "Submit.kind: %s is not a result this federation takes",
                       fl_wire_task_kind_name((int)m.kind));
    }
    if (rc) {
        if (!audited) fl_fed_audit(S->fed, "reject", name, err);
    } else if (ready)
        rc = fl_fed_submit(S->fed, site, &r, fl_rpc_now_ms(), err);
    /* The state machine added (streaming strategies, masked) or copied
     * (median, trimmed mean) the upload, or refused it: the spool goes. */
    if (S->up[site].map) upload_reset(&S->up[site]);
    (void)delta;
    free(vec);
    free(cts);
    if (rev) sodium_memzero(rev, sizeof *rev * r.n_reveals);
    free(rev);
    fl_wire_submit_free(&m);
    submit_reply(call, rc, err);
    if (!rc) wake_parked(S);
}

static void handle_fetch(service *S, fl_rpc_call *call, const char *name, const uint8_t *req,
                         size_t len) {
    char err[FL_ERR_LEN] = "";
    const fl_fed_config *fc = fl_fed_get_config(S->fed);
    fl_wire_expect ex;
    memset(&ex, 0, sizeof ex);
    ex.federation_id = fc->federation_id;
    fl_wire_fetch f;
    if (fl_wire_unpack_fetch(&f, req, len, &ex, err)) {
        fl_fed_audit(S->fed, "reject", name, err);
        reply_error(call, FL_RPC_INVALID_ARGUMENT, err);
        return;
    }
    size_t mlen;
    const uint8_t *sha;
    const uint8_t *model = fl_fed_model(S->fed, &mlen, &sha);
    if (!model || memcmp(sha, f.sha256, 32)) {
        fl_wire_fetch_free(&f);
        reply_error(call, FL_RPC_FAILED_PRECONDITION,
                    "FetchChunk.sha256: not the current global model (poll again)");
        return;
    }
    if (f.offset > mlen) {
        fl_wire_fetch_free(&f);
        reply_error(call, FL_RPC_OUT_OF_RANGE, "FetchChunk.offset: past the end of the model");
        return;
    }
    fl_wire_chunk c;
    memset(&c, 0, sizeof c);
    c.offset = f.offset;
    c.total_bytes = mlen;
    memcpy(c.sha256, sha, 32);
    c.len = mlen - f.offset < f.max_bytes ? mlen - f.offset : f.max_bytes;
    c.data = (uint8_t *)model + f.offset;
    fl_wire_fetch_free(&f);
    uint8_t *buf;
    size_t blen;
    if (fl_wire_pack_chunk(&buf, &blen, &c, err)) {
        reply_error(call, FL_RPC_INTERNAL, "cannot build the chunk");
        return;
    }
    fl_fed_count_bytes(S->fed, 0, (double)blen);
    reply_msg(call, FL_RPC_OK, NULL, buf, blen);
}

static void on_call(void *user, fl_rpc_call *call) {
    service *S = user;
    const char *pem = fl_rpc_call_peer_cert_pem(call);
    char name[FL_PKI_NAME_MAX] = "", err[FL_ERR_LEN] = "";
    int role = 0;
    pthread_mutex_lock(&S->mu);
    if (!pem || fl_pki_verifier_check(S->verifier, pem, strlen(pem), name, &role, err) ||
        role != FL_ROLE_CLIENT) {
        char detail[FL_ERR_LEN + 64];
        snprintf(detail, sizeof detail, "certificate refused: %s",
                 err[0] ? err : (pem ? "role is not client" : "no certificate"));
        fl_fed_audit(S->fed, "refuse", name[0] ? name : fl_rpc_call_peer_cn(call), detail);
        reply_error(call, FL_RPC_PERMISSION_DENIED, detail);
        pthread_mutex_unlock(&S->mu);
        return;
    }
    size_t len;
    const uint8_t *req = fl_rpc_call_request(call, &len);
    fl_fed_count_bytes(S->fed, (double)len, 0);
    switch (fl_rpc_call_method(call)) {
    case M_JOIN:
        handle_join(S, call, name, req, len);
        break;
    case M_POLL: {
        const fl_fed_config *fc = fl_fed_get_config(S->fed);
        fl_wire_expect ex;
        memset(&ex, 0, sizeof ex);
        ex.federation_id = fc->federation_id;
        fl_wire_poll p;
        if (fl_wire_unpack_poll(&p, req, len, &ex, err)) {
            fl_fed_audit(S->fed, "reject", name, err);
            reply_error(call, FL_RPC_INVALID_ARGUMENT, err);
            break;
        }
        fl_wire_poll_free(&p);
        int site = fl_fed_site_id(S->fed, name);
        if (!fl_fed_joined(S->fed, site))
            reply_error(call, FL_RPC_FAILED_PRECONDITION, "join first");
        else
            answer_poll(S, call, site, 1);
        break;
    }
    case M_SUBMIT:
        handle_submit(S, call, name, req, len);
        break;
    case M_FETCH:
        handle_fetch(S, call, name, req, len);
        break;
    default:
        reply_error(call, FL_RPC_UNIMPLEMENTED, "unknown method");
    }
    pthread_mutex_unlock(&S->mu);
}

/* ------------------------------------------------------------ main */

/* Expiry is an outage that can be seen coming: the CRL expires 30 days after
 * it is signed (then every certificate is refused: fail closed), the
 * certificates after a year. Checked at start and every 6 hours; each item
 * close to its end (CRL: 7 days; certificates: 30) is logged and audited
 * ('expiry') with what to do. */
#define EXPIRY_CHECK_MS (6 * 3600 * 1000LL)

static void expiry_check(service *S) {
    const struct {
        const char *path, *what, *fix;
        double warn_days;
    } items[] = {
        {S->cfg.crl, "the CRL", "re-sign it with `cohort pki crl` and copy it here", 7},
        {S->cfg.cert, "the aggregator's certificate", "issue a new one with `cohort pki issue`",
         30},
        {S->cfg.ca, "the federation CA", "plan a new CA and re-issue every certificate", 30},
    };
    time_t now = time(NULL);
    char note[FL_PATH_LEN + 256];
    for (size_t i = 0; i < sizeof items / sizeof *items; i++) {
        if (!fl_pki_expiry_note(note, sizeof note, items[i].path, items[i].what, items[i].fix,
                                items[i].warn_days, now))
            continue;
        fl_warn("%s", note);
        pthread_mutex_lock(&S->mu);
        fl_fed_audit(S->fed, "expiry", NULL, note);
        pthread_mutex_unlock(&S->mu);
    }
}

/* A revocation takes effect without a restart: when the CRL file changes,
 * the verifier is rebuilt from it and swapped in under the service lock, so
 * a certificate revoked mid-federation is refused from its next call on.
 * A CRL that does not load (bad signature, expired) leaves the previous one
 * in force; both outcomes are audited ('crl'). */
static void crl_reload(service *S, fl_file_stamp *seen) {
    char err[FL_ERR_LEN] = "", detail[FL_PATH_LEN + FL_ERR_LEN + 128];
    fl_pki_verifier *v = NULL;
    int rc = fl_pki_verifier_reload(&v, seen, S->cfg.ca, S->cfg.crl, err);
    if (!rc) return;
    pthread_mutex_lock(&S->mu);
    if (rc < 0) {
        snprintf(detail, sizeof detail,
                 "%s changed but does not load; the previous CRL stays in force: %s", S->cfg.crl,
                 err);
        fl_warn("%s", detail);
    } else {
        fl_pki_verifier *old = S->verifier;
        S->verifier = v;
        v = old;
        snprintf(detail, sizeof detail, "%s reloaded: revocations in force from now on",
                 S->cfg.crl);
        fl_info("%s", detail);
    }
    fl_fed_audit(S->fed, "crl", NULL, detail);
    pthread_mutex_unlock(&S->mu);
    fl_pki_verifier_free(v);
}

static int write_port_file(const char *path, int port, char *err) {
    char tmp[FL_PATH_LEN + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return fl_seterr(err, FL_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    fprintf(f, "%d\n", port);
    if (fclose(f) || rename(tmp, path))
        return fl_seterr(err, FL_EIO, "%s: cannot write: %s", path, strerror(errno));
    return FL_OK;
}

/* The audit log's anchors (DESIGN.md §11, docs/audit.md): the store is bound
 * to the federation, signs each commit with the aggregator's own key (cert:
 * its certificate, PEM), and records the configuration it runs with (a
 * "config_change" event when a restart brings a different file). *signer is
 * the caller's, freed after the store is closed. */
static int open_audit(service *S, fl_signer **signer, const char *config, const char *cert,
                      char *err) {
    char *text = NULL;
    size_t len = 0;
    int rc = fl_store_set_federation(S->store, S->cfg.fed.federation_id, err);
    if (!rc) rc = fl_signer_new(signer, S->cfg.key, err);
    if (!rc) rc = fl_store_set_signer(S->store, *signer, cert, strlen(cert), err);
    if (!rc) rc = fl_read_file(&text, &len, config, err);
    if (!rc) rc = fl_store_record_config(S->store, text, len, err);
    free(text);
    return rc;
}

/* A line of /proc/self/status (VmRSS:, VmHWM:) into the store's meta, for
 * bench/round: the resident memory before the first site joins and at the
 * peak, so the bench can tell the per-site growth from the fixed cost. */
static void record_rss(service *S, const char *field, const char *key) {
    FILE *st = fopen("/proc/self/status", "r");
    char line[256];
    while (st && fgets(line, sizeof line, st))
        if (!strncmp(line, field, strlen(field))) {
            char e2[FL_ERR_LEN], kb[64];
            snprintf(kb, sizeof kb, "%ld", strtol(line + strlen(field), NULL, 10));
            fl_store_meta_set(S->store, key, kb, e2);
        }
    if (st) fclose(st);
}

static void usage(FILE *f) {
    fprintf(f, "usage: cohort-aggregator --config aggregator.ini\n");
}

int main(int argc, char **argv) {
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
        else if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "cohort-aggregator: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!config) {
        usage(stderr);
        return 2;
    }
    fl_log_set_tag("aggregator");
    /* Model-sized and chunk-sized buffers come and go every round. A fixed
     * mmap threshold keeps each of them in its own mapping, returned to the
     * system on free; glibc's default raises the threshold after the first
     * large free and then keeps freed chunks in its heaps (one per gRPC
     * thread), which made peak memory several models per site
     * (bench/round). */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    service *S = calloc(1, sizeof *S);
    char err[FL_ERR_LEN] = "";
    char *ca = NULL, *cert = NULL, *key = NULL;
    fl_rpc_server *srv = NULL;
    fl_signer *signer = NULL;
    int rc = S ? FL_OK : FL_ENOMEM;
    if (!rc) rc = fl_agg_config_load(&S->cfg, config, err);
    if (rc) {
        fprintf(stderr, "cohort-aggregator: %s\n", err);
        free(S);
        return fl_exit_code(rc);
    }
    pthread_mutex_init(&S->mu, NULL);
    for (int s = 0; s <= FL_MAX_SITES; s++)
        S->up[s].fd = -1;
    fairness_ctx fair;
    memset(&fair, 0, sizeof fair);
    { /* a spool directory that cannot take uploads is a configuration error */
        int fd;
        if (spool_open(&fd, S->cfg.spool_dir, 4096, err)) {
            char why[FL_ERR_LEN];
            snprintf(why, sizeof why, "%s", err);
            rc = fl_seterr(err, FL_EINVAL, "%s: [aggregator] spool_dir: %s", config, why);
        } else {
            close(fd);
        }
    }
    if (rc || (rc = fairness_setup(&fair, &S->cfg, err))) goto cleanup;
    if ((rc = read_file(&ca, S->cfg.ca, err)) || (rc = read_file(&cert, S->cfg.cert, err)) ||
        (rc = read_file(&key, S->cfg.key, err)))
        goto cleanup;
    /* Stamped before the load: a change after it is seen. `cohort pki
     * revoke|crl` replace the file by rename. */
    fl_file_stamp crl_seen;
    if (S->cfg.crl[0]) fl_file_stamp_get(&crl_seen, S->cfg.crl);
    if ((rc = fl_pki_verifier_new(&S->verifier, S->cfg.ca, S->cfg.crl[0] ? S->cfg.crl : NULL, err)))
        goto cleanup;
    if ((rc = fl_store_open(&S->store, S->cfg.db, err))) goto cleanup;
    if ((rc = open_audit(S, &signer, config, cert, err))) goto cleanup;
    if ((rc = fl_fed_open(&S->fed, &S->cfg.fed, S->store, fl_rpc_now_ms(), err))) goto cleanup;
    if ((rc = load_layout(S, err))) goto cleanup;
    fl_rpc_server_config sc = {.listen_addr = S->cfg.listen,
                               .ca_pem = ca,
                               .cert_pem = cert,
                               .key_pem = key,
                               .max_msg = FL_WIRE_MAX_MESSAGE_BYTES,
                               .methods = METHODS,
                               .n_methods = N_METHODS,
                               .threads = 2,
                               .on_call = on_call,
                               .user = S};
    if ((rc = fl_rpc_server_new(&srv, &sc, err))) goto cleanup;
    sodium_memzero(key, strlen(key));
    int port = fl_rpc_server_port(srv);
    fl_info("listening on %s (port %d), federation '%s', %d sites allowed, %d rounds",
            S->cfg.listen, port, S->cfg.fed.federation_id, S->cfg.fed.n_allowed, S->cfg.fed.rounds);
    record_rss(S, "VmRSS:", "start_rss_kb");
    if (S->cfg.port_file[0] && (rc = write_port_file(S->cfg.port_file, port, err))) goto cleanup;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* The loop: deadlines, parked polls, a changed CRL, and the end of the
     * federation (every joined site told DONE, or a grace period after the
     * first). */
    int64_t crl_checked = 0, expiry_checked = fl_rpc_now_ms();
    expiry_check(S);
    while (!g_stop) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (fl_rpc_now_ms() - expiry_checked >= EXPIRY_CHECK_MS) {
            expiry_checked = fl_rpc_now_ms();
            expiry_check(S);
        }
        if (S->cfg.crl[0] && fl_rpc_now_ms() - crl_checked >= 1000) {
            crl_checked = fl_rpc_now_ms();
            crl_reload(S, &crl_seen);
        }
        pthread_mutex_lock(&S->mu);
        int64_t now = fl_rpc_now_ms();
        fl_fed_tick(S->fed, now);
        wake_parked(S);
        int finished = 0;
        if (fl_fed_stage(S->fed) == FL_STAGE_DONE) {
            if (!S->done_at) S->done_at = now;
            int all = 1;
            for (int s = 1; s <= S->cfg.fed.n_allowed; s++)
                if (fl_fed_joined(S->fed, s) && !S->done_seen[s]) all = 0;
            finished = all || now - S->done_at > 10000;
        }
        pthread_mutex_unlock(&S->mu);
        if (finished) break;
    }
    if (fl_fed_error(S->fed)) {
        rc = FL_EIO;
        snprintf(err, sizeof err, "%s", fl_fed_error(S->fed));
    } else if (g_stop && fl_fed_stage(S->fed) != FL_STAGE_DONE) {
        fl_info("stopped by a signal in round %d; the next start resumes after the last committed "
                "round",
                fl_fed_round(S->fed));
    } else if (fl_fed_end_reason(S->fed)) {
        fl_warn("federation ended early: %s", fl_fed_end_reason(S->fed));
    } else {
        fl_info("federation finished after %d rounds", fl_fed_round(S->fed));
    }
    record_rss(S, "VmHWM:", "peak_rss_kb");
    {
        /* Sign the head once more, so the last events (the end of the
         * federation) are covered by a signature too. The service threads
         * still run: the store is theirs too until the server stops. */
        char e2[FL_ERR_LEN];
        pthread_mutex_lock(&S->mu);
        if (fl_store_checkpoint(S->store, fl_fed_round(S->fed), e2)) fl_warn("audit log: %s", e2);
        pthread_mutex_unlock(&S->mu);
    }
cleanup:
    if (srv) {
        pthread_mutex_lock(&S->mu);
        for (int i = 0; i < S->n_park; i++)
            reply_error(S->park[i].call, FL_RPC_UNAVAILABLE, "shutting down");
        S->n_park = 0;
        pthread_mutex_unlock(&S->mu);
        fl_rpc_server_free(srv);
    }
    if (rc) fprintf(stderr, "cohort-aggregator: %s\n", err[0] ? err : fl_strerror(rc));
    if (key) sodium_memzero(key, strlen(key));
    free(ca);
    free(cert);
    free(key);
    for (int s = 0; s <= FL_MAX_SITES; s++)
        upload_reset(&S->up[s]);
    free(S->level_offsets);
    for (int s = 0; s <= FL_MAX_SITES; s++)
        free(S->cert[s]);
    fl_fed_free(S->fed);
    fl_store_close(S->store);
    fl_pki_verifier_free(S->verifier);
    fl_signer_free(signer);
    fl_fairness_layout_free(&fair.layout);
    if (fair.loaded) fl_schema_free(&fair.schema);
    pthread_mutex_destroy(&S->mu);
    free(S);
    return fl_exit_code(rc);
}
