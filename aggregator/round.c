/* round.c: the round state machine of round.h. */
#include "round.h"

#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/rng.h"
#include "crypto/secagg_vec.h"
#include "kernels/backend.h"

typedef struct site_state {
    int joined;
    int64_t n_examples;
    int selected;  /* in this round's training cohort */
    int submitted; /* result received for the current stage */
    /* This round's TRAIN outcome, kept until the round commits (EVALUATE
     * clears only the per-stage fields). */
    int refused;
    char reason[256];
    double epsilon; /* privacy spent as the site reports it; NAN if none */
    float *delta;   /* (n_params) TRAIN result */
    double train_loss;
    double loss_sum; /* EVALUATE result */
    int64_t correct, count;
    uint64_t *hist;     /* (2, hist_bins) */
    uint64_t *fairness; /* (n_fairness) EVALUATE result */
    double *stats;      /* STATS result */
    int completed;      /* this round's update was received (plain or masked) */
    int sa_in;          /* in the current secure-sum stage's set (U0, U1, U2, U3) */
    /* Let a stage reach its deadline without answering and has not polled
     * since: left out of new stages (selection, secure sums, evaluation)
     * until it polls again, so a dead site costs one deadline, not one per
     * stage for the rest of the federation. */
    int missed;
} site_state;

/* Plain updates are summed as they arrive, exactly, in fixed point: each
 * value times the site's example count, scaled by 2^ACC_FRAC, into a 128-bit
 * integer per parameter. Integer addition does not depend on the order, so
 * the mean is bit-identical whatever order the updates arrive in, and the
 * aggregator holds one accumulator instead of a model-sized buffer per site
 * (issue #3; the robust strategies still need every update). |value| <
 * 2^ACC_RANGE and n_examples <= 2^40 keep 256 sites' sums below 2^127;
 * values below 2^-ACC_FRAC (far under float32's resolution of any delta
 * that moves a model) are dropped, the same way whatever the order. */
__extension__ typedef __int128 acc_t;
#define ACC_FRAC 48
#define ACC_RANGE 24

/* What one evaluation adds up to, plain or secure. */
typedef struct eval_sums {
    double loss;
    int64_t correct, count;
    uint64_t *hist; /* (2 * hist_bins) */
    int have_hist;
    uint64_t *fair; /* (n_fairness) */
    double acc_sum, acc_sumsq;
    int64_t sites;
} eval_sums;

struct fl_federation {
    fl_fed_config cfg;
    fl_store *store;
    fl_strategy strat;
    int strat_ready;
    int stage, round;
    int64_t join_deadline, stage_deadline;
    site_state site[FL_MAX_SITES + 1]; /* 1-based */
    int n_features, n_classes;
    fl_model_spec spec;
    int64_t n_params;
    float *global;
    uint8_t *model;
    size_t model_len;
    uint8_t sha[32];
    double *stats;
    int64_t n_stats;
    fl_round_metrics *metrics; /* (rounds + 1) */
    /* Instrumentation of the round in flight (DESIGN.md §13, bench/round). */
    int64_t t_train_start, t_eval_start;
    double t_train_ms, t_aggregate_ms, bytes_in, bytes_out;
    char error[FL_ERR_LEN];
    char end_reason[256]; /* ended before the last round: why */
    uint32_t step;        /* stage instances since start, echoed by results */
    /* The secure sum in flight (DESIGN.md §9). */
    fl_secagg_server *sa;
    fl_secagg_params sa_p;
    uint32_t sa_ids[FL_SECAGG_MAX_SITES];
    int purpose; /* FL_TASK_STATS / _TRAIN / _EVALUATE, or FL_TASK_NONE */
    int sa_attempt;
    double sa_weight_total; /* n_examples over U2 (TRAIN) */
    uint32_t sa_surv[FL_SECAGG_MAX_SITES], sa_drop[FL_SECAGG_MAX_SITES];
    uint32_t n_stats_cols; /* statistics layout (fl_fed_set_stats_len) */
    acc_t *acc;            /* (n_params) the round's exact sum of plain updates */
    int64_t acc_weight;    /* the sum of their example counts */
};

const char *fl_stage_name(int stage) {
    static const char *n[] = {"WAIT_SITES",     "STATS",      "TRAIN",        "EVALUATE", "DONE",
                              "ADVERTISE_KEYS", "SHARE_KEYS", "MASKED_INPUT", "UNMASK"};
    return stage >= 0 && stage <= FL_STAGE_UNMASK ? n[stage] : "?";
}

void fl_fed_config_default(fl_fed_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->federation_id, sizeof c->federation_id, "cohort");
    c->rounds = 10;
    c->min_sites = 2;
    c->fraction = 1.0;
    c->seed = 42;
    c->join_timeout_ms = 60000;
    c->stage_timeout_ms = 120000;
    snprintf(c->model, sizeof c->model, "logreg");
    c->local_epochs = 1;
    c->batch_size = 64;
    c->optimizer = 0;
    c->lr = 0.1;
    c->momentum = 0.0;
    c->weight_decay = 0.0;
    fl_strategy_config_default(&c->strategy, FL_STRATEGY_FEDAVG);
    c->hist_bins = 1000;
    c->sa_threshold = 0.66;
    c->sa_clip = 8.0;
    c->sa_levels = 1u << 30;
    c->fairness_threshold = 0.5;
}

/* ---------------------------------------------------------------- helpers */

static void event(fl_federation *f, const char *kind, int site, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void event(fl_federation *f, const char *kind, int site, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    char err[FL_ERR_LEN];
    const char *name = site > 0 ? f->cfg.allowed[site - 1] : NULL;
    if (fl_store_event(f->store, kind, name, f->round, detail, err))
        fl_warn("audit event not recorded: %s", err);
    fl_info("round %d %s%s%s: %s", f->round, kind, name ? " " : "", name ? name : "", detail);
}

static void clear_stage(fl_federation *f) {
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        site_state *ss = &f->site[s];
        ss->submitted = 0;
    }
}

static int n_joined(const fl_federation *f) {
    int n = 0;
    for (int s = 1; s <= f->cfg.n_allowed; s++)
        n += f->site[s].joined;
    return n;
}

static int64_t fl_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mix(uint64_t a, uint64_t b) {
    fl_rng r;
    fl_rng_seed(&r, a ^ (b * 0x9e3779b97f4a7c15ULL));
    return fl_rng_next(&r);
}

/* Serialises the global parameters into f->model and hashes them. */
static int refresh_model(fl_federation *f) {
    uint8_t *blob;
    size_t len;
    int rc = fl_model_serialize(&blob, &len, &f->spec, f->global);
    if (rc) return rc;
    free(f->model);
    f->model = blob;
    f->model_len = len;
    crypto_hash_sha256(f->sha, blob, len);
    return FL_OK;
}

/* Strategy state as bytes: t then m and v (doubles), for FedAdam / FedYogi. */
static int strategy_blob(const fl_federation *f, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (!f->strat.m) return FL_OK;
    size_t n = 8 + 2 * (size_t)f->n_params * sizeof(double);
    uint8_t *b = malloc(n);
    if (!b) return FL_ENOMEM;
    memcpy(b, &f->strat.t, 8);
    memcpy(b + 8, f->strat.m, (size_t)f->n_params * sizeof(double));
    memcpy(b + 8 + (size_t)f->n_params * sizeof(double), f->strat.v,
           (size_t)f->n_params * sizeof(double));
    *out = b;
    *len = n;
    return FL_OK;
}

static int setup_model(fl_federation *f, const float *params, char *err) {
    int rc = fl_model_spec_parse(&f->spec, f->cfg.model, f->n_features, f->n_classes, err);
    if (rc) return rc;
    f->n_params = fl_model_spec_nparams(&f->spec);
    free(f->global);
    f->global = malloc((size_t)f->n_params * sizeof(float));
    if (!f->global) return fl_seterr(err, FL_ENOMEM, "out of memory");
    if (params) {
        memcpy(f->global, params, (size_t)f->n_params * sizeof(float));
    } else {
        /* The initial model: the same seeded initialisation a site would make. */
        fl_backend *be;
        fl_model m;
        if ((rc = fl_backend_cpu_open(&be, err))) return rc;
        rc = fl_model_init(&m, be, &f->spec, 1, f->cfg.seed, err);
        if (!rc) rc = fl_model_get_params(&m, f->global);
        fl_model_free(&m);
        fl_backend_close(be);
        if (rc) return rc;
    }
    fl_strategy_free(&f->strat);
    if ((rc = fl_strategy_init(&f->strat, &f->cfg.strategy, f->n_params, err))) return rc;
    f->strat_ready = 1;
    return refresh_model(f);
}

/* Stats are kept in the store's meta table as exact hex floats. */
static int save_stats(fl_federation *f, char *err) {
    size_t cap = (size_t)f->n_stats * 32 + 1, n = 0;
    char *s = malloc(cap);
    if (!s) return FL_ENOMEM;
    s[0] = 0;
    for (int64_t i = 0; i < f->n_stats; i++)
        n += (size_t)snprintf(s + n, cap - n, i ? ",%a" : "%a", f->stats[i]);
    int rc = fl_store_meta_set(f->store, "stats", s, err);
    free(s);
    return rc;
}

static int load_stats(fl_federation *f, char *err) {
    char *s;
    int rc = fl_store_meta_get(f->store, "stats", &s, err);
    if (rc || !s) return rc;
    int64_t n = 1;
    for (char *p = s; *p; p++)
        n += *p == ',';
    f->stats = malloc((size_t)n * sizeof(double));
    if (!f->stats) {
        free(s);
        return FL_ENOMEM;
    }
    char *p = s;
    for (int64_t i = 0; i < n; i++) {
        f->stats[i] = strtod(p, &p);
        if (*p == ',') p++;
    }
    f->n_stats = n;
    free(s);
    return FL_OK;
}

/* ------------------------------------------------------------- lifecycle */

static int resume(fl_federation *f, char *err) {
    int last;
    int rc = fl_store_last_round(f->store, &last, err);
    if (rc || last < 0) return rc;
    uint8_t *blob, sha[32];
    size_t len;
    if ((rc = fl_store_load_model(f->store, last, &blob, &len, sha, err))) return rc;
    fl_model_spec spec;
    float *params;
    rc = fl_model_deserialize(&spec, &params, blob, len, err);
    free(blob);
    if (rc) return rc;
    f->n_features = spec.n_in;
    f->n_classes = spec.n_classes;
    rc = setup_model(f, params, err);
    free(params);
    if (rc) return rc;
    uint8_t *sb;
    size_t sl;
    if ((rc = fl_store_load_strategy(f->store, last, &sb, &sl, err))) return rc;
    if (sb && f->strat.m && sl == 8 + 2 * (size_t)f->n_params * sizeof(double)) {
        memcpy(&f->strat.t, sb, 8);
        memcpy(f->strat.m, sb + 8, (size_t)f->n_params * sizeof(double));
        memcpy(f->strat.v, sb + 8 + (size_t)f->n_params * sizeof(double),
               (size_t)f->n_params * sizeof(double));
    }
    free(sb);
    if ((rc = load_stats(f, err))) return rc;
    for (int r = 1; r <= last && r <= f->cfg.rounds; r++) {
        fl_round_metrics *m = &f->metrics[r];
        m->round = r;
        m->loss = fl_store_metric(f->store, r, "loss");
        m->accuracy = fl_store_metric(f->store, r, "accuracy");
        m->auc = fl_store_metric(f->store, r, "auc");
        m->completed = (int)fl_store_metric(f->store, r, "completed");
        m->dropped = (int)fl_store_metric(f->store, r, "dropped");
    }
    f->round = last;
    fl_info("resuming after committed round %d (model %02x%02x%02x%02x...)", last, f->sha[0],
            f->sha[1], f->sha[2], f->sha[3]);
    return FL_OK;
}

int fl_fed_open(fl_federation **out, const fl_fed_config *cfg, fl_store *store, int64_t now_ms,
                char err[FL_ERR_LEN]) {
    *out = NULL;
    if (cfg->n_allowed < 1 || cfg->n_allowed > FL_MAX_SITES)
        return fl_seterr(err, FL_EINVAL, "federation: 1..%d allowed sites needed", FL_MAX_SITES);
    if (cfg->min_sites < 1 || cfg->min_sites > cfg->n_allowed)
        return fl_seterr(err, FL_EINVAL,
                         "federation: min_sites %d must be in 1..%d (the allowed "
                         "sites)",
                         cfg->min_sites, cfg->n_allowed);
    if (cfg->rounds < 1) return fl_seterr(err, FL_EINVAL, "federation: rounds must be >= 1");
    if (!(cfg->fraction > 0.0 && cfg->fraction <= 1.0))
        return fl_seterr(err, FL_EINVAL, "federation: fraction must be in (0, 1]");
    if (cfg->hist_bins < 2 || cfg->hist_bins > FL_HIST_BINS_MAX)
        return fl_seterr(err, FL_EINVAL, "federation: hist_bins must be in 2..%d",
                         FL_HIST_BINS_MAX);
    if (cfg->secagg) {
        if (cfg->strategy.kind == FL_STRATEGY_MEDIAN ||
            cfg->strategy.kind == FL_STRATEGY_TRIMMED_MEAN)
            return fl_seterr(err, FL_EINVAL,
                             "[secagg] enabled with strategy %s: the aggregator sees only the "
                             "sum, so median and trimmed_mean cannot run (use fedavg, fedprox, "
                             "fedadam or fedyogi)",
                             fl_strategy_name(cfg->strategy.kind));
        if (!(cfg->sa_threshold > 0.5 && cfg->sa_threshold <= 1.0))
            return fl_seterr(err, FL_EINVAL,
                             "[secagg] threshold %g: expected in (0.5, 1] (a minority of a "
                             "site's neighbours must never be able to unmask it)",
                             cfg->sa_threshold);
        if (!(cfg->sa_clip > 0) || cfg->sa_levels < 2 || cfg->sa_levels > (1u << 30))
            return fl_seterr(err, FL_EINVAL,
                             "[secagg] clip_range > 0 and quantization_range in 2..2^30 expected");
        if (cfg->n_allowed > FL_SECAGG_MAX_SITES)
            return fl_seterr(err, FL_EINVAL, "[secagg]: at most %d sites", FL_SECAGG_MAX_SITES);
    }
    if (cfg->n_fairness < 0 || cfg->n_fairness > (1 << 22))
        return fl_seterr(err, FL_EINVAL, "federation: fairness layout of %lld counts",
                         (long long)cfg->n_fairness);
    fl_federation *f = calloc(1, sizeof *f);
    if (!f) return fl_seterr(err, FL_ENOMEM, "out of memory");
    f->cfg = *cfg;
    f->store = store;
    f->metrics = calloc((size_t)cfg->rounds + 1, sizeof *f->metrics);
    int rc = f->metrics ? resume(f, err) : FL_ENOMEM;
    if (rc) {
        fl_fed_free(f);
        return rc;
    }
    f->stage = f->round >= cfg->rounds ? FL_STAGE_DONE : FL_STAGE_WAIT_SITES;
    f->join_deadline = now_ms + cfg->join_timeout_ms;
    *out = f;
    return FL_OK;
}

void fl_fed_free(fl_federation *f) {
    if (!f) return;
    for (int s = 0; s <= FL_MAX_SITES; s++) {
        free(f->site[s].delta);
        free(f->site[s].hist);
        free(f->site[s].fairness);
        free(f->site[s].stats);
    }
    fl_secagg_server_free(f->sa);
    free(f->acc);
    fl_strategy_free(&f->strat);
    free(f->global);
    free(f->model);
    free(f->stats);
    free(f->metrics);
    free(f);
}

int fl_fed_stage(const fl_federation *f) {
    return f->stage;
}

int fl_fed_round(const fl_federation *f) {
    return f->round;
}

const fl_round_metrics *fl_fed_metrics(const fl_federation *f, int round) {
    return round >= 1 && round <= f->cfg.rounds && f->metrics[round].round == round
               ? &f->metrics[round]
               : NULL;
}

const uint8_t *fl_fed_model(const fl_federation *f, size_t *len, const uint8_t **sha256) {
    *len = f->model_len;
    if (sha256) *sha256 = f->sha;
    return f->model;
}

int64_t fl_fed_n_params(const fl_federation *f) {
    return f->n_params;
}

int fl_fed_features(const fl_federation *f) {
    return f->n_features;
}

int fl_fed_classes(const fl_federation *f) {
    return f->n_classes;
}

int fl_fed_site_id(const fl_federation *f, const char *name) {
    for (int s = 0; s < f->cfg.n_allowed; s++)
        if (!strcmp(f->cfg.allowed[s], name)) return s + 1;
    return 0;
}

int fl_fed_joined(const fl_federation *f, int site) {
    return site >= 1 && site <= f->cfg.n_allowed && f->site[site].joined;
}

const fl_fed_config *fl_fed_get_config(const fl_federation *f) {
    return &f->cfg;
}

void fl_fed_count_bytes(fl_federation *f, double in, double out) {
    f->bytes_in += in;
    f->bytes_out += out;
}

const char *fl_fed_end_reason(const fl_federation *f) {
    return f->end_reason[0] ? f->end_reason : NULL;
}

void fl_fed_audit(fl_federation *f, const char *kind, const char *site, const char *detail) {
    char err[FL_ERR_LEN];
    if (fl_store_event(f->store, kind, site, f->round, detail, err))
        fl_warn("audit event not recorded: %s", err);
    fl_warn("%s%s%s: %s", kind, site ? " " : "", site ? site : "", detail);
}

const char *fl_fed_error(const fl_federation *f) {
    return f->error[0] ? f->error : NULL;
}

/* ------------------------------------------------------------- stages */

static void begin_stage(fl_federation *f, int stage, int64_t now_ms) {
    f->stage = stage;
    f->stage_deadline = now_ms + f->cfg.stage_timeout_ms;
    f->step++;
    clear_stage(f);
    event(f, "stage", 0, "%s begins (deadline in %" PRId64 " ms)", fl_stage_name(stage),
          f->cfg.stage_timeout_ms);
}

static void begin_secure(fl_federation *f, int purpose, int64_t now_ms);

static void fail(fl_federation *f, const char *err);

/* Plain updates go straight into the exact accumulator (see acc_t). */
static int streaming(const fl_federation *f) {
    return !f->cfg.secagg && !fl_strategy_needs_plaintext(f->cfg.strategy.kind);
}

static void begin_train(fl_federation *f, int64_t now_ms) {
    if (streaming(f)) {
        if (!f->acc) f->acc = malloc((size_t)f->n_params * sizeof *f->acc);
        if (!f->acc) {
            fail(f, "out of memory for the update accumulator");
            return;
        }
        memset(f->acc, 0, (size_t)f->n_params * sizeof *f->acc);
        f->acc_weight = 0;
    }
    /* A seeded sample of the joined sites: the same sites for the same
     * round and join set, so a restarted round trains the same cohort. */
    int ids[FL_MAX_SITES], n = 0;
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        site_state *ss = &f->site[s];
        ss->selected = 0;
        ss->refused = 0;
        ss->completed = 0;
        ss->reason[0] = 0;
        ss->epsilon = NAN;
        if (ss->joined && !ss->missed) ids[n++] = s;
    }
    if (n < f->cfg.min_sites) {
        /* Too few sites answered lately to train without the absent ones:
         * ask them all rather than give up on sites that may come back. */
        n = 0;
        for (int s = 1; s <= f->cfg.n_allowed; s++)
            if (f->site[s].joined) ids[n++] = s;
    }
    int k = (int)ceil(f->cfg.fraction * n);
    if (k < f->cfg.min_sites) k = f->cfg.min_sites;
    if (k > n) k = n;
    fl_rng r;
    fl_rng_seed(&r, mix(f->cfg.seed, (uint64_t)f->round));
    for (int i = n - 1; i > 0; i--) {
        int j = (int)fl_rng_below(&r, (uint64_t)i + 1), t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
    }
    for (int i = 0; i < k; i++)
        f->site[ids[i]].selected = 1;
    f->t_train_start = now_ms;
    f->bytes_in = f->bytes_out = 0;
    if (f->cfg.secagg) {
        event(f, "select", 0, "%d of %d joined sites selected", k, n);
        begin_secure(f, FL_TASK_TRAIN, now_ms);
        return;
    }
    begin_stage(f, FL_STAGE_TRAIN, now_ms);
    event(f, "select", 0, "%d of %d joined sites selected", k, n);
}

static void begin_evaluate(fl_federation *f, int64_t now_ms) {
    f->t_eval_start = now_ms;
    if (f->cfg.secagg)
        begin_secure(f, FL_TASK_EVALUATE, now_ms);
    else
        begin_stage(f, FL_STAGE_EVALUATE, now_ms);
}

static void fail(fl_federation *f, const char *err) {
    snprintf(f->error, sizeof f->error, "%s", err);
    fl_error("federation stopped: %s", err);
    f->stage = FL_STAGE_DONE;
}

static void free_deltas(fl_federation *f) {
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        free(f->site[s].delta);
        f->site[s].delta = NULL;
    }
}

/* The statistics are in f->stats: keep them and start round 1. */
static void stats_done(fl_federation *f, int got, int64_t now_ms) {
    char err[FL_ERR_LEN];
    if (save_stats(f, err)) {
        fail(f, err);
        return;
    }
    event(f, "stats", 0, "statistics summed over %d sites%s", got,
          f->cfg.secagg ? " through secure aggregation" : "");
    f->round = 1;
    begin_train(f, now_ms);
}

/* STATS -> TRAIN: sum the sites' statistics in site order. */
static void finish_stats(fl_federation *f, int64_t now_ms) {
    int got = 0;
    for (int s = 1; s <= f->cfg.n_allowed; s++)
        got += f->site[s].submitted;
    if (got < f->cfg.min_sites) {
        event(f, "restart", 0, "statistics from %d sites, %d needed: asking again", got,
              f->cfg.min_sites);
        begin_stage(f, FL_STAGE_STATS, now_ms);
        return;
    }
    for (int64_t i = 0; i < f->n_stats; i++)
        f->stats[i] = 0.0;
    for (int s = 1; s <= f->cfg.n_allowed; s++)
        if (f->site[s].submitted)
            for (int64_t i = 0; i < f->n_stats; i++)
                f->stats[i] += f->site[s].stats[i];
    stats_done(f, got, now_ms);
}

static double auc_from_hist(const uint64_t *neg, const uint64_t *pos, int bins) {
    double np = 0, nn = 0, wins = 0, below = 0;
    for (int b = 0; b < bins; b++) {
        np += (double)pos[b];
        nn += (double)neg[b];
    }
    if (np == 0 || nn == 0) return NAN;
    for (int b = 0; b < bins; b++) {
        wins += (double)pos[b] * (below + 0.5 * (double)neg[b]);
        below += (double)neg[b];
    }
    return wins / (np * nn);
}

static void eval_sums_free(eval_sums *e) {
    free(e->hist);
    free(e->fair);
}

static int eval_sums_init(eval_sums *e, const fl_federation *f) {
    memset(e, 0, sizeof *e);
    e->hist = calloc(2 * (size_t)f->cfg.hist_bins, sizeof *e->hist);
    e->fair = calloc((size_t)f->cfg.n_fairness + 1, sizeof *e->fair);
    if (e->hist && e->fair) return FL_OK;
    eval_sums_free(e);
    return FL_ENOMEM;
}

/* The fairness audit of the summed counts: JSON for the store, alerts for
 * the audit log. *json NULL when the audit is off or had no rows. */
static void fairness_audit(fl_federation *f, const eval_sums *e, char **json) {
    *json = NULL;
    if (!f->cfg.n_fairness || !f->cfg.fairness_compute || e->count <= 0) return;
    char *alerts = NULL;
    int rc = f->cfg.fairness_compute(f->cfg.fairness_ctx, json, &alerts, e->fair, e->acc_sum,
                                     e->acc_sumsq, e->sites);
    if (rc) {
        event(f, "fairness", 0, "the audit could not be computed: %s", fl_strerror(rc));
        *json = NULL;
    }
    for (char *a = alerts, *nl; a && *a; a = nl ? nl + 1 : a + strlen(a)) {
        nl = strchr(a, '\n');
        if (nl) *nl = 0;
        if (*a) event(f, "fairness_alert", 0, "%s", a);
    }
    free(alerts);
}

/* EVALUATE -> COMMIT -> next round (or DONE). */
static void commit_round(fl_federation *f, eval_sums *e, int64_t now_ms) {
    fl_round_metrics *m = &f->metrics[f->round];
    int bins = f->cfg.hist_bins;
    int64_t count = e->count;
    m->round = f->round;
    m->loss = count ? e->loss / (double)count : NAN;
    m->accuracy = count ? (double)e->correct / (double)count : NAN;
    m->auc = e->have_hist ? auc_from_hist(e->hist, e->hist + bins, bins) : NAN;
    double acc_mean = e->sites ? e->acc_sum / (double)e->sites : NAN;
    double acc_var = e->sites ? e->acc_sumsq / (double)e->sites - acc_mean * acc_mean : NAN;
    if (acc_var < 0) acc_var = 0; /* rounding of the fixed-point sums */
    fl_metric mets[] = {{"loss", m->loss},
                        {"accuracy", m->accuracy},
                        {"auc", m->auc},
                        {"completed", m->completed},
                        {"dropped", m->dropped},
                        {"eval_examples", (double)count},
                        {"site_accuracy_mean", acc_mean},
                        {"site_accuracy_var", acc_var},
                        {"eval_sites", (double)e->sites},
                        {"secagg", f->cfg.secagg ? 1.0 : 0.0},
                        {"t_train_ms", f->t_train_ms},
                        {"t_aggregate_ms", f->t_aggregate_ms},
                        {"t_evaluate_ms", (double)(now_ms - f->t_eval_start)},
                        {"t_round_ms", (double)(now_ms - f->t_train_start)},
                        {"bytes_in", f->bytes_in},
                        {"bytes_out", f->bytes_out},
                        {"n_params", (double)f->n_params}};
    fl_participation parts[FL_MAX_SITES];
    int np = 0;
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        site_state *ss = &f->site[s];
        if (!ss->selected) continue;
        parts[np++] = (fl_participation){
            s, ss->completed ? "completed" : (ss->refused ? "refused" : "dropped"),
            ss->reason[0] ? ss->reason : NULL, ss->n_examples, ss->epsilon};
    }
    char *fjson = NULL;
    fairness_audit(f, e, &fjson);
    uint8_t *sb;
    size_t sl;
    char err[FL_ERR_LEN];
    if (strategy_blob(f, &sb, &sl)) {
        free(fjson);
        fail(f, "out of memory");
        return;
    }
    fl_round_record rec = {.round = f->round,
                           .seed = f->cfg.seed,
                           .model = f->model,
                           .model_len = f->model_len,
                           .metrics = mets,
                           .n_metrics = (int)(sizeof mets / sizeof *mets),
                           .parts = parts,
                           .n_parts = np,
                           .strategy_state = sb,
                           .strategy_state_len = sl,
                           .fairness_counts = fjson ? e->fair : NULL,
                           .n_fairness = fjson ? (size_t)f->cfg.n_fairness : 0,
                           .fairness_json = fjson};
    int rc = fl_store_commit_round(f->store, &rec, err);
    free(sb);
    free(fjson);
    if (rc) {
        fail(f, err);
        return;
    }
    char hex[17];
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", f->sha[i]);
    event(f, "commit", 0, "model sha256 %s... accuracy %.4f auc %.4f loss %.4f (%lld examples)",
          hex, m->accuracy, m->auc, m->loss, (long long)count);
    free_deltas(f);
    f->sa_attempt = 0;
    if (f->round >= f->cfg.rounds) {
        f->stage = FL_STAGE_DONE;
        event(f, "done", 0, "%d rounds completed", f->round);
        return;
    }
    f->round++;
    begin_train(f, now_ms);
}

static void finish_evaluate(fl_federation *f, int64_t now_ms) {
    eval_sums e;
    if (eval_sums_init(&e, f)) {
        fail(f, "out of memory");
        return;
    }
    int bins = f->cfg.hist_bins;
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        site_state *ss = &f->site[s];
        if (!ss->submitted) continue;
        e.loss += ss->loss_sum;
        e.correct += ss->correct;
        e.count += ss->count;
        if (ss->count > 0) {
            double a = (double)ss->correct / (double)ss->count;
            e.acc_sum += a;
            e.acc_sumsq += a * a;
            e.sites++;
        }
        if (ss->hist) {
            e.have_hist = 1;
            for (int b = 0; b < 2 * bins; b++)
                e.hist[b] += ss->hist[b];
        }
        if (ss->fairness)
            for (int64_t i = 0; i < f->cfg.n_fairness; i++)
                e.fair[i] += ss->fairness[i];
    }
    commit_round(f, &e, now_ms);
    eval_sums_free(&e);
}

/* Too few updates this round: end the federation when refusals (final: a
 * site's budget only shrinks) leave fewer than min_sites able to train,
 * otherwise start the round again with the same seed. Returns 1 when it did
 * either. */
static int short_round(fl_federation *f, int n, int refused, int selected, int64_t now_ms) {
    if (n >= f->cfg.min_sites) return 0;
    free_deltas(f);
    if (selected - refused < f->cfg.min_sites) {
        snprintf(f->end_reason, sizeof f->end_reason,
                 "round %d: %d of %d selected sites refused to train (privacy budget spent?), "
                 "fewer than min_sites %d can: the federation ends early",
                 f->round, refused, selected, f->cfg.min_sites);
        f->stage = FL_STAGE_DONE;
        event(f, "done", 0, "%s", f->end_reason);
        return 1;
    }
    event(f, "restart", 0, "%d updates, %d needed: the round starts again with the same seed", n,
          f->cfg.min_sites);
    begin_train(f, now_ms);
    return 1;
}

/* The round's selected sites: refused, dropped (recording why). */
static void count_outcomes(fl_federation *f, int *n, int *dropped, int *refused, int *selected,
                           const char *stage) {
    *n = *dropped = *refused = *selected = 0;
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        site_state *ss = &f->site[s];
        if (!ss->selected) continue;
        ++*selected;
        *refused += ss->refused;
        if (ss->completed) {
            ++*n;
            continue;
        }
        ++*dropped;
        if (!ss->refused && !ss->reason[0]) {
            snprintf(ss->reason, sizeof ss->reason, "no update before the deadline");
            event(f, "dropout", s, "no update before the %s deadline", stage);
        }
    }
}

/* Aggregation done (f->global holds the new model): on to evaluation. */
static void aggregated(fl_federation *f, int n, int dropped, int64_t t0, int rc, const char *err,
                       int64_t now_ms) {
    if (!rc) rc = refresh_model(f);
    f->t_aggregate_ms = (double)(fl_now_ms() - t0);
    if (rc) {
        fail(f, err && *err ? err : fl_strerror(rc));
        return;
    }
    f->metrics[f->round].completed = n;
    f->metrics[f->round].dropped = dropped;
    event(f, "aggregate", 0, "%s over %d updates (%d dropped)%s",
          fl_strategy_name(f->cfg.strategy.kind), n, dropped,
          f->cfg.secagg ? ", from their secure sum" : "");
    begin_evaluate(f, now_ms);
}

/* TRAIN -> EVALUATE: aggregate, or restart the round below min_sites. */
static void finish_train(fl_federation *f, int64_t now_ms) {
    fl_update ups[FL_MAX_SITES];
    int n, dropped, refused, selected;
    count_outcomes(f, &n, &dropped, &refused, &selected, "TRAIN");
    if (short_round(f, n, refused, selected, now_ms)) return;
    char err[FL_ERR_LEN] = "";
    f->t_train_ms = (double)(now_ms - f->t_train_start);
    int64_t t0 = fl_now_ms();
    int rc;
    if (streaming(f)) {
        double *mean = malloc((size_t)f->n_params * sizeof *mean);
        rc = mean ? FL_OK : fl_seterr(err, FL_ENOMEM, "out of memory");
        for (int64_t i = 0; !rc && i < f->n_params; i++)
            mean[i] = ldexp((double)f->acc[i], -ACC_FRAC) / (double)f->acc_weight;
        if (!rc) rc = fl_strategy_apply_mean(&f->strat, f->global, mean, err);
        free(mean);
    } else {
        int k = 0;
        for (int s = 1; s <= f->cfg.n_allowed; s++)
            if (f->site[s].selected && f->site[s].delta)
                ups[k++] = (fl_update){s, (double)f->site[s].n_examples, f->site[s].delta};
        rc = fl_strategy_apply(&f->strat, f->global, ups, k, err);
    }
    aggregated(f, n, dropped, t0, rc, err, now_ms);
}

/* ------------------------------------------------------- secure sums */

/* Words in the masked vector of a secure sum of `purpose`. */
static uint64_t secure_words(const fl_federation *f, int purpose) {
    switch (purpose) {
    case FL_TASK_STATS:
        return FL_SECAGG_I64_WORDS * (uint64_t)f->n_stats;
    case FL_TASK_TRAIN:
        return (uint64_t)f->n_params;
    default:
        return FL_SECAGG_I64_WORDS * (uint64_t)fl_sv_eval_len(f->cfg.hist_bins, f->cfg.n_fairness);
    }
}

static const char *purpose_name(int purpose) {
    return purpose == FL_TASK_STATS   ? "statistics"
           : purpose == FL_TASK_TRAIN ? "training updates"
                                      : "evaluation counts";
}

#define SECURE_ATTEMPTS 3

/* A secure sum could not complete: nothing was released. Statistics and
 * training start again (a few times); an evaluation commits the round
 * without figures. */
static void secure_failed(fl_federation *f, const char *why, int64_t now_ms) {
    int purpose = f->purpose;
    fl_secagg_server_free(f->sa);
    f->sa = NULL;
    f->purpose = FL_TASK_NONE;
    event(f, "secagg_abort", 0, "secure sum of %s aborted, nothing released: %s",
          purpose_name(purpose), why);
    if (purpose == FL_TASK_EVALUATE) {
        eval_sums e;
        if (eval_sums_init(&e, f)) {
            fail(f, "out of memory");
            return;
        }
        commit_round(f, &e, now_ms);
        eval_sums_free(&e);
        return;
    }
    if (++f->sa_attempt >= SECURE_ATTEMPTS) {
        char msg[FL_ERR_LEN];
        snprintf(msg, sizeof msg, "secure aggregation of %s failed %d times in a row: %s",
                 purpose_name(purpose), SECURE_ATTEMPTS, why);
        fail(f, msg);
        return;
    }
    if (purpose == FL_TASK_STATS)
        begin_secure(f, FL_TASK_STATS, now_ms);
    else {
        free_deltas(f);
        begin_train(f, now_ms);
    }
}

static void begin_secure(fl_federation *f, int purpose, int64_t now_ms) {
    int n = 0;
    for (int pass = 0; pass < 2 && n < 2; pass++) {
        /* the absent sites are left out unless that leaves fewer than two */
        n = 0;
        for (int s = 1; s <= f->cfg.n_allowed; s++) {
            site_state *ss = &f->site[s];
            ss->sa_in =
                ss->joined && (pass || !ss->missed) && (purpose != FL_TASK_TRAIN || ss->selected);
            if (ss->sa_in) f->sa_ids[n++] = (uint32_t)s;
        }
    }
    f->purpose = purpose;
    char err[FL_ERR_LEN];
    if (purpose == FL_TASK_STATS && f->n_stats < 1) {
        fail(f, "secure aggregation of statistics: no site stated its statistics layout at Join "
                "(agent too old?)");
        return;
    }
    if (n < 2) {
        snprintf(err, sizeof err, "%d participant(s), a secure sum needs at least 2", n);
        secure_failed(f, err, now_ms);
        return;
    }
    fl_secagg_params *p = &f->sa_p;
    memset(p, 0, sizeof *p);
    p->federation_id = f->cfg.federation_id;
    /* Binds keys and shares to this one secure sum: round, purpose, attempt. */
    p->round =
        ((uint64_t)f->round << 8) | ((uint64_t)purpose << 4) | (uint64_t)(f->sa_attempt & 15);
    p->graph_seed = mix(mix(f->cfg.seed, p->round), 0x5ec5a9ULL);
    p->ids = f->sa_ids;
    p->n = (uint32_t)n;
    p->degree = fl_secagg_degree(p->n, (uint32_t)f->cfg.sa_neighbors);
    p->threshold = fl_secagg_threshold(p->degree, f->cfg.sa_threshold);
    p->d = secure_words(f, purpose);
    fl_secagg_server_free(f->sa);
    f->sa = NULL;
    int rc = fl_secagg_server_new(&f->sa, p, err);
    if (rc) {
        fail(f, err);
        return;
    }
    begin_stage(f, FL_STAGE_ADVERTISE_KEYS, now_ms);
    event(f, "secagg", 0,
          "secure sum of %s: %d participants, %u neighbours each, threshold %u, %llu words",
          purpose_name(purpose), n, p->degree, p->threshold, (unsigned long long)p->d);
}

/* The unmasked sum of a secure sum: hand it to its purpose. */
static void secure_done(fl_federation *f, const uint32_t *sum, const uint32_t *surv, size_t n_surv,
                        int64_t now_ms) {
    int purpose = f->purpose;
    f->purpose = FL_TASK_NONE; /* a next secure sum sets its own */
    char err[FL_ERR_LEN] = "";
    if (purpose == FL_TASK_TRAIN) {
        double wsum = 0;
        for (size_t i = 0; i < n_surv; i++)
            wsum += (double)f->site[surv[i]].n_examples / f->sa_weight_total;
        int n, dropped, refused, selected;
        count_outcomes(f, &n, &dropped, &refused, &selected, "MASKED_INPUT");
        f->t_train_ms = (double)(now_ms - f->t_train_start);
        int64_t t0 = fl_now_ms();
        float *meanf = malloc((size_t)f->n_params * sizeof *meanf);
        double *mean = malloc((size_t)f->n_params * sizeof *mean);
        int rc = meanf && mean ? FL_OK : FL_ENOMEM;
        if (!rc) {
            fl_secagg_dequantize(meanf, sum, (uint64_t)f->n_params, f->cfg.sa_clip,
                                 f->cfg.sa_levels, wsum);
            for (int64_t i = 0; i < f->n_params; i++)
                mean[i] = meanf[i];
            rc = fl_strategy_apply_mean(&f->strat, f->global, mean, err);
        }
        free(meanf);
        free(mean);
        aggregated(f, (int)n_surv, dropped, t0, rc, err, now_ms);
        return;
    }
    int64_t len = (int64_t)(f->sa_p.d / FL_SECAGG_I64_WORDS);
    int64_t *v = malloc((size_t)len * sizeof *v);
    if (!v) {
        fail(f, "out of memory");
        return;
    }
    fl_secagg_decode_i64(v, sum, (size_t)len);
    if (purpose == FL_TASK_STATS) {
        double *st = malloc((size_t)len * sizeof *st);
        if (!st) {
            free(v);
            fail(f, "out of memory");
            return;
        }
        fl_sv_stats_decode(st, v, len, f->n_stats_cols);
        free(f->stats);
        f->stats = st;
        free(v);
        f->sa_attempt = 0;
        stats_done(f, (int)n_surv, now_ms);
        return;
    }
    eval_sums e;
    if (eval_sums_init(&e, f)) {
        free(v);
        fail(f, "out of memory");
        return;
    }
    fl_sv_eval ev;
    fl_sv_eval_decode(&ev, e.hist, e.fair, v, f->cfg.hist_bins, f->cfg.n_fairness);
    free(v);
    e.loss = ev.loss_sum;
    e.correct = ev.correct;
    e.count = ev.count;
    e.acc_sum = ev.acc_sum;
    e.acc_sumsq = ev.acc_sumsq;
    e.sites = ev.sites;
    for (int b = 0; b < 2 * f->cfg.hist_bins; b++)
        e.have_hist |= e.hist[b] != 0;
    commit_round(f, &e, now_ms);
    eval_sums_free(&e);
}

/* The end of a secure-sum stage (all expected results in, or the deadline). */
static void step_secure(fl_federation *f, int64_t now_ms) {
    char err[FL_ERR_LEN] = "";
    int rc = FL_OK;
    switch (f->stage) {
    case FL_STAGE_ADVERTISE_KEYS:
        rc = fl_secagg_server_close_advertise(f->sa, err);
        for (int s = 1; s <= f->cfg.n_allowed; s++) {
            site_state *ss = &f->site[s];
            if (ss->sa_in && !ss->submitted && f->purpose == FL_TASK_TRAIN && !ss->reason[0])
                snprintf(ss->reason, sizeof ss->reason, "no keys before the deadline");
            ss->sa_in = ss->sa_in && ss->submitted;
        }
        if (!rc) begin_stage(f, FL_STAGE_SHARE_KEYS, now_ms);
        break;
    case FL_STAGE_SHARE_KEYS:
        rc = fl_secagg_server_close_shares(f->sa, err);
        f->sa_weight_total = 0;
        for (int s = 1; s <= f->cfg.n_allowed; s++) {
            site_state *ss = &f->site[s];
            if (ss->sa_in && !fl_secagg_server_in_u2(f->sa, (uint32_t)s) &&
                f->purpose == FL_TASK_TRAIN && !ss->reason[0])
                snprintf(ss->reason, sizeof ss->reason, "no key shares before the deadline");
            ss->sa_in = ss->sa_in && fl_secagg_server_in_u2(f->sa, (uint32_t)s);
            if (ss->sa_in) f->sa_weight_total += (double)ss->n_examples;
        }
        if (!rc) begin_stage(f, FL_STAGE_MASKED_INPUT, now_ms);
        break;
    case FL_STAGE_MASKED_INPUT: {
        if (f->purpose == FL_TASK_TRAIN) {
            int n, dropped, refused, selected;
            count_outcomes(f, &n, &dropped, &refused, &selected, "MASKED_INPUT");
            if (n < f->cfg.min_sites) {
                fl_secagg_server_free(f->sa);
                f->sa = NULL;
                f->purpose = FL_TASK_NONE;
                short_round(f, n, refused, selected, now_ms);
                return;
            }
        }
        rc = fl_secagg_server_close_masked(f->sa, err);
        for (int s = 1; s <= f->cfg.n_allowed; s++)
            f->site[s].sa_in = f->site[s].sa_in && fl_secagg_server_in_u3(f->sa, (uint32_t)s);
        if (!rc) begin_stage(f, FL_STAGE_UNMASK, now_ms);
        break;
    }
    case FL_STAGE_UNMASK: {
        uint32_t *sum = malloc((size_t)f->sa_p.d * sizeof *sum);
        size_t n_surv = 0;
        if (!sum) {
            fail(f, "out of memory");
            return;
        }
        rc = fl_secagg_server_finish(f->sa, sum, f->sa_surv, &n_surv, err);
        if (!rc) {
            event(f, "secagg", 0, "secure sum of %s unmasked: %zu inputs", purpose_name(f->purpose),
                  n_surv);
            fl_secagg_server_free(f->sa);
            f->sa = NULL;
            secure_done(f, sum, f->sa_surv, n_surv, now_ms);
        }
        free(sum);
        break;
    }
    default:
        break;
    }
    if (rc) secure_failed(f, err[0] ? err : fl_strerror(rc), now_ms);
}

static int all_submitted(const fl_federation *f, int only_selected) {
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        const site_state *ss = &f->site[s];
        /* a selected site is waited for even when absent (selected only
         * when too few others answer); otherwise the absent are not */
        if (!ss->joined || (only_selected ? !ss->selected : ss->missed)) continue;
        if (!ss->submitted) return 0;
    }
    return 1;
}

static int all_secure_submitted(const fl_federation *f) {
    for (int s = 1; s <= f->cfg.n_allowed; s++)
        if (f->site[s].sa_in && !f->site[s].submitted) return 0;
    return 1;
}

/* The stage reached its deadline: the sites it waited for and that did not
 * answer are marked absent (site_state.missed). */
static void mark_missed(fl_federation *f) {
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        site_state *ss = &f->site[s];
        int expected = f->stage == FL_STAGE_TRAIN            ? ss->selected
                       : f->stage >= FL_STAGE_ADVERTISE_KEYS ? ss->sa_in
                                                             : ss->joined && !ss->missed;
        if (!expected || ss->submitted || ss->missed) continue;
        ss->missed = 1;
        event(f, "absent", s,
              "no answer before the %s deadline: left out of new stages until it polls again",
              fl_stage_name(f->stage));
    }
}

static void advance(fl_federation *f, int64_t now_ms) {
    int late = now_ms >= f->stage_deadline;
    if (late && f->stage != FL_STAGE_WAIT_SITES && f->stage != FL_STAGE_DONE) mark_missed(f);
    switch (f->stage) {
    case FL_STAGE_WAIT_SITES: {
        int n = n_joined(f);
        if (n == f->cfg.n_allowed || (now_ms >= f->join_deadline && n >= f->cfg.min_sites)) {
            event(f, "start", 0, "%d of %d sites joined", n, f->cfg.n_allowed);
            if (f->round == 0 && !f->stats) {
                if (f->cfg.secagg)
                    begin_secure(f, FL_TASK_STATS, now_ms);
                else
                    begin_stage(f, FL_STAGE_STATS, now_ms);
            } else {
                f->round++;
                begin_train(f, now_ms);
            }
        }
        break;
    }
    case FL_STAGE_STATS:
        if (late || all_submitted(f, 0)) finish_stats(f, now_ms);
        break;
    case FL_STAGE_TRAIN:
        if (late || all_submitted(f, 1)) finish_train(f, now_ms);
        break;
    case FL_STAGE_EVALUATE:
        if (late || all_submitted(f, 0)) finish_evaluate(f, now_ms);
        break;
    case FL_STAGE_ADVERTISE_KEYS:
    case FL_STAGE_SHARE_KEYS:
    case FL_STAGE_MASKED_INPUT:
    case FL_STAGE_UNMASK:
        if (late || all_secure_submitted(f)) step_secure(f, now_ms);
        break;
    default:
        break;
    }
}

int fl_fed_tick(fl_federation *f, int64_t now_ms) {
    int stage = f->stage, round = f->round;
    uint32_t step = f->step;
    advance(f, now_ms);
    return stage != f->stage || round != f->round || step != f->step;
}

int fl_fed_set_stats_len(fl_federation *f, int64_t n_stats, uint32_t n_cols, char err[FL_ERR_LEN]) {
    if (n_stats < 1 || n_stats > (1 << 24))
        return fl_seterr(err, FL_EINVAL, "statistics layout of %lld values", (long long)n_stats);
    if (f->n_stats && f->n_stats != n_stats)
        return fl_seterr(err, FL_EINVAL,
                         "statistics layout of %lld values, the federation's has %lld (check the "
                         "site's schema and [levels])",
                         (long long)n_stats, (long long)f->n_stats);
    f->n_stats = n_stats;
    f->n_stats_cols = n_cols;
    return FL_OK;
}

int fl_fed_purpose(const fl_federation *f) {
    return f->purpose;
}
/* ------------------------------------------------------------- events */

int fl_fed_join(fl_federation *f, const char *name, int64_t n_examples, int n_features,
                int n_classes, int *site, int64_t now_ms, char err[FL_ERR_LEN]) {
    int id = 0;
    for (int s = 0; s < f->cfg.n_allowed; s++)
        if (!strcmp(f->cfg.allowed[s], name)) id = s + 1;
    if (!id) {
        char e[FL_ERR_LEN];
        fl_seterr(err, FL_EAUTH, "site '%s' is not in the federation's allow-list", name);
        fl_store_event(f->store, "refuse", name, f->round, "join: not in the allow-list", e);
        fl_warn("join refused: '%s' is not in the allow-list", name);
        return FL_EAUTH;
    }
    if (n_examples < 1 || n_features < 1 || n_classes < 2)
        return fl_seterr(err, FL_EINVAL,
                         "join: n_examples, n_features >= 1 and n_classes >= 2 "
                         "expected");
    if (f->n_features == 0) {
        f->n_features = n_features;
        f->n_classes = n_classes;
        int rc = setup_model(f, NULL, err);
        if (!rc) {
            fl_round_record rec = {
                .round = 0, .seed = f->cfg.seed, .model = f->model, .model_len = f->model_len};
            rc = fl_store_commit_round(f->store, &rec, err);
        }
        if (rc) {
            f->n_features = 0;
            return rc;
        }
    } else if (n_features != f->n_features || n_classes != f->n_classes) {
        fl_seterr(err, FL_EINVAL,
                  "site '%s' encodes %d features and %d classes; the federation uses %d and %d "
                  "(check its schema and [levels])",
                  name, n_features, n_classes, f->n_features, f->n_classes);
        char e[FL_ERR_LEN];
        fl_store_event(f->store, "refuse", name, f->round, err, e);
        return FL_EINVAL;
    }
    site_state *ss = &f->site[id];
    if (!ss->joined || ss->n_examples != n_examples) {
        char e[FL_ERR_LEN];
        fl_store_site_join(f->store, id, name, n_examples, e);
    }
    if (!ss->joined) event(f, "join", id, "%lld training examples", (long long)n_examples);
    ss->joined = 1;
    ss->missed = 0;
    ss->n_examples = n_examples;
    *site = id;
    advance(f, now_ms);
    return FL_OK;
}

int fl_fed_poll(fl_federation *f, int site, fl_task *t, int64_t now_ms) {
    memset(t, 0, sizeof *t);
    advance(f, now_ms);
    if (site < 1 || site > f->cfg.n_allowed || !f->site[site].joined) return FL_EAUTH;
    site_state *ss = &f->site[site];
    ss->missed = 0; /* it is alive: back in new stages */
    t->round = f->round;
    t->stage = f->stage;
    t->deadline_ms = f->stage_deadline;
    t->step = f->step;
    int work = 0; /* the model and statistics go with it */
    switch (f->stage) {
    case FL_STAGE_DONE:
        t->kind = FL_TASK_DONE;
        break;
    case FL_STAGE_STATS:
        if (!ss->submitted) t->kind = FL_TASK_STATS;
        break;
    case FL_STAGE_TRAIN:
        if (ss->selected && !ss->submitted) t->kind = work = FL_TASK_TRAIN;
        break;
    case FL_STAGE_EVALUATE:
        if (!ss->submitted) t->kind = work = FL_TASK_EVALUATE;
        break;
    case FL_STAGE_ADVERTISE_KEYS:
        if (ss->sa_in && !ss->submitted) t->kind = FL_TASK_ADVERTISE_KEYS;
        break;
    case FL_STAGE_SHARE_KEYS:
        if (ss->sa_in && !ss->submitted) {
            t->kind = FL_TASK_SHARE_KEYS;
            fl_secagg_server_keys_for(f->sa, (uint32_t)site, &t->peer_keys, &t->n_peer_keys);
        }
        break;
    case FL_STAGE_MASKED_INPUT:
        if (ss->sa_in && !ss->submitted) {
            t->kind = FL_TASK_MASKED_INPUT;
            fl_secagg_server_shares_for(f->sa, (uint32_t)site, &t->cts, &t->n_cts);
            if (f->purpose == FL_TASK_TRAIN)
                t->sa_weight = (double)ss->n_examples / f->sa_weight_total;
            if (f->purpose != FL_TASK_STATS) work = f->purpose;
        }
        break;
    case FL_STAGE_UNMASK:
        if (ss->sa_in && !ss->submitted) {
            t->kind = FL_TASK_UNMASK;
            fl_secagg_server_unmask_request(f->sa, (uint32_t)site, f->sa_surv, &t->n_survivors,
                                            f->sa_drop, &t->n_dropped);
            t->survivors = f->sa_surv;
            t->dropped = f->sa_drop;
        }
        break;
    default:
        break;
    }
    if (t->kind >= FL_TASK_ADVERTISE_KEYS) {
        t->purpose = f->purpose;
        t->sa = &f->sa_p;
    }
    if (work) {
        t->model = f->model;
        t->model_len = f->model_len;
        t->model_sha256 = f->sha;
        t->stats = f->stats;
        t->n_stats = f->n_stats;
        t->seed = mix(mix(f->cfg.seed, (uint64_t)f->round), (uint64_t)site);
        t->prox_mu = f->cfg.strategy.prox_mu;
    }
    return FL_OK;
}

static int refuse(fl_federation *f, int site, int code, char *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int refuse(fl_federation *f, int site, int code, char *err, const char *fmt, ...) {
    char msg[FL_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fl_seterr(err, code, "%s", msg);
    event(f, "refuse", site, "submit: %s", msg);
    return code;
}

/* A TRAIN outcome's bookkeeping shared by the plain and the masked path:
 * a refusal, or the site's privacy spend. Returns 1 for a refusal. */
static int train_outcome(fl_federation *f, int site, const fl_result *r) {
    site_state *ss = &f->site[site];
    double eps = isfinite(r->epsilon) && r->epsilon > 0 ? r->epsilon : NAN;
    ss->epsilon = eps;
    if (r->refused) {
        ss->refused = 1;
        snprintf(ss->reason, sizeof ss->reason, "%s", r->reason ? r->reason : "refused");
        event(f, "refusal", site, "the site declined the round: %s", ss->reason);
        if (isfinite(eps)) event(f, "privacy", site, "epsilon %.6g spent, refused", eps);
        return 1;
    }
    ss->train_loss = r->train_loss;
    if (isfinite(eps)) event(f, "privacy", site, "epsilon %.6g spent after this round", eps);
    return 0;
}

/* ADVERTISE_KEYS .. UNMASK results, into the secure sum. */
static int submit_secure(fl_federation *f, int site, const fl_result *r, char *err) {
    site_state *ss = &f->site[site];
    char e[FL_ERR_LEN] = "";
    int rc = FL_OK;
    if (!ss->sa_in)
        return refuse(f, site, FL_EPROTO, err, "not a participant of this %s stage",
                      fl_stage_name(f->stage));
    if (r->step != f->step)
        return refuse(f, site, FL_EPROTO, err, "step %u, expected %u (stale or replayed)", r->step,
                      f->step);
    switch (r->kind) {
    case FL_TASK_ADVERTISE_KEYS: {
        if (!r->keys) return refuse(f, site, FL_EINVAL, err, "no keys");
        fl_secagg_peer_keys k = *r->keys;
        k.site = (uint32_t)site;
        rc = fl_secagg_server_advertise(f->sa, &k, e);
        break;
    }
    case FL_TASK_SHARE_KEYS:
        rc = fl_secagg_server_shares(f->sa, (uint32_t)site, r->cts, r->n_cts, e);
        break;
    case FL_TASK_MASKED_INPUT:
        if (f->purpose == FL_TASK_TRAIN && r->refused) {
            train_outcome(f, site, r);
            return FL_OK;
        }
        if (r->n_masked != f->sa_p.d)
            return refuse(f, site, FL_EINVAL, err, "masked vector of %llu words, expected %llu",
                          (unsigned long long)r->n_masked, (unsigned long long)f->sa_p.d);
        rc = fl_secagg_server_masked(f->sa, (uint32_t)site, r->masked, e);
        if (!rc && f->purpose == FL_TASK_TRAIN) {
            train_outcome(f, site, r);
            ss->completed = 1;
        }
        break;
    case FL_TASK_UNMASK:
        rc = fl_secagg_server_reveal(f->sa, (uint32_t)site, r->reveals, r->n_reveals, e);
        break;
    default:
        rc = FL_EPROTO;
    }
    if (rc) return refuse(f, site, rc, err, "%s", e[0] ? e : fl_strerror(rc));
    return FL_OK;
}

int fl_fed_accepts(fl_federation *f, int site, int round, int kind, char err[FL_ERR_LEN]) {
    if (site < 1 || site > f->cfg.n_allowed || !f->site[site].joined)
        return fl_seterr(err, FL_EAUTH, "submit from a site that has not joined");
    const site_state *ss = &f->site[site];
    static const int expected[] = {FL_TASK_NONE,       FL_TASK_STATS,        FL_TASK_TRAIN,
                                   FL_TASK_EVALUATE,   FL_TASK_NONE,         FL_TASK_ADVERTISE_KEYS,
                                   FL_TASK_SHARE_KEYS, FL_TASK_MASKED_INPUT, FL_TASK_UNMASK};
    if (round != f->round)
        return refuse(f, site, FL_EPROTO, err, "round %d, expected %d (stale or replayed)", round,
                      f->round);
    if (kind != expected[f->stage] || kind == FL_TASK_NONE)
        return refuse(f, site, FL_EPROTO, err, "result kind %d does not match stage %s", kind,
                      fl_stage_name(f->stage));
    if (ss->submitted)
        return refuse(f, site, FL_EPROTO, err, "a second %s result in round %d (replay)",
                      fl_stage_name(f->stage), f->round);
    if (f->stage == FL_STAGE_TRAIN && !ss->selected)
        return refuse(f, site, FL_EPROTO, err, "not selected for round %d", f->round);
    return FL_OK;
}

int fl_fed_submit(fl_federation *f, int site, const fl_result *r, int64_t now_ms,
                  char err[FL_ERR_LEN]) {
    int rc = fl_fed_accepts(f, site, r->round, r->kind, err);
    if (rc) return rc;
    site_state *ss = &f->site[site];
    switch (r->kind) {
    case FL_TASK_STATS: {
        if (r->n_stats < 1 || r->n_stats > (1 << 24) || (f->n_stats && r->n_stats != f->n_stats))
            return refuse(f, site, FL_EINVAL, err,
                          "statistics vector of %lld values, expected %lld", (long long)r->n_stats,
                          (long long)f->n_stats);
        for (int64_t i = 0; i < r->n_stats; i++)
            if (!isfinite(r->stats[i]))
                return refuse(f, site, FL_ENUMERIC, err, "statistics[%lld] is not finite",
                              (long long)i);
        if (!f->stats) {
            f->stats = calloc((size_t)r->n_stats, sizeof(double));
            if (!f->stats) return FL_ENOMEM;
            f->n_stats = r->n_stats;
        }
        double *copy = malloc((size_t)r->n_stats * sizeof(double));
        if (!copy) return FL_ENOMEM;
        memcpy(copy, r->stats, (size_t)r->n_stats * sizeof(double));
        free(ss->stats);
        ss->stats = copy;
        break;
    }
    case FL_TASK_TRAIN: {
        if (r->refused) {
            train_outcome(f, site, r);
            break;
        }
        if (r->n_params != f->n_params)
            return refuse(f, site, FL_EINVAL, err, "update of %lld values, expected %lld",
                          (long long)r->n_params, (long long)f->n_params);
        if (r->n_examples < 1)
            return refuse(f, site, FL_EINVAL, err, "update trained on %lld examples",
                          (long long)r->n_examples);
        for (int64_t i = 0; i < r->n_params; i++)
            if (!isfinite(r->delta[i]))
                return refuse(f, site, FL_ENUMERIC, err, "update[%lld] is not finite",
                              (long long)i);
        if (r->n_examples > ((int64_t)1 << 40))
            return refuse(f, site, FL_EINVAL, err, "update trained on %lld examples, limit 2^40",
                          (long long)r->n_examples);
        if (streaming(f)) {
            const double lim = ldexp(1.0, ACC_RANGE);
            for (int64_t i = 0; i < r->n_params; i++)
                if (fabs((double)r->delta[i]) >= lim)
                    return refuse(f, site, FL_EINVAL, err,
                                  "update[%lld] = %g is outside +-2^%d (a diverged site?)",
                                  (long long)i, (double)r->delta[i], ACC_RANGE);
            for (int64_t i = 0; i < r->n_params; i++)
                f->acc[i] += (acc_t)ldexp((double)r->delta[i], ACC_FRAC) * r->n_examples;
            f->acc_weight += r->n_examples;
            free(r->delta_owned); /* taken over: nothing to keep */
            ss->n_examples = r->n_examples;
            ss->completed = 1;
            train_outcome(f, site, r);
            break;
        }
        float *copy = r->delta_owned;
        if (!copy) {
            copy = malloc((size_t)r->n_params * sizeof(float));
            if (!copy) return FL_ENOMEM;
            memcpy(copy, r->delta, (size_t)r->n_params * sizeof(float));
        }
        free(ss->delta);
        ss->delta = copy;
        ss->n_examples = r->n_examples;
        ss->completed = 1;
        train_outcome(f, site, r);
        break;
    }
    case FL_TASK_EVALUATE: {
        if (r->count < 0 || r->correct < 0 || r->correct > r->count || !isfinite(r->loss_sum) ||
            r->loss_sum < 0)
            return refuse(f, site, FL_EINVAL, err, "evaluation counts are inconsistent");
        if (r->hist && r->hist_bins != f->cfg.hist_bins)
            return refuse(f, site, FL_EINVAL, err, "histogram of %d bins, expected %d",
                          r->hist_bins, f->cfg.hist_bins);
        if (f->cfg.n_fairness && r->fairness && r->n_fairness != f->cfg.n_fairness)
            return refuse(f, site, FL_EINVAL, err, "fairness counts: %lld, expected %lld",
                          (long long)r->n_fairness, (long long)f->cfg.n_fairness);
        free(ss->hist);
        ss->hist = NULL;
        free(ss->fairness);
        ss->fairness = NULL;
        if (r->hist) {
            ss->hist = malloc(2 * (size_t)r->hist_bins * sizeof(uint64_t));
            if (!ss->hist) return FL_ENOMEM;
            memcpy(ss->hist, r->hist, 2 * (size_t)r->hist_bins * sizeof(uint64_t));
        }
        if (f->cfg.n_fairness && r->fairness) {
            ss->fairness = malloc((size_t)f->cfg.n_fairness * sizeof(uint64_t));
            if (!ss->fairness) return FL_ENOMEM;
            memcpy(ss->fairness, r->fairness, (size_t)f->cfg.n_fairness * sizeof(uint64_t));
        }
        ss->loss_sum = r->loss_sum;
        ss->correct = r->correct;
        ss->count = r->count;
        break;
    }
    default:
        rc = submit_secure(f, site, r, err);
        if (rc) return rc;
    }
    ss->submitted = 1;
    advance(f, now_ms);
    return FL_OK;
}
