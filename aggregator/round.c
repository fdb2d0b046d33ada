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
    uint64_t *hist; /* (2, hist_bins) */
    double *stats;  /* STATS result */
} site_state;

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
};

const char *fl_stage_name(int stage) {
    static const char *n[] = {"WAIT_SITES", "STATS", "TRAIN", "EVALUATE", "DONE"};
    return stage >= 0 && stage <= FL_STAGE_DONE ? n[stage] : "?";
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
        free(f->site[s].stats);
    }
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
    clear_stage(f);
    event(f, "stage", 0, "%s begins (deadline in %" PRId64 " ms)", fl_stage_name(stage),
          f->cfg.stage_timeout_ms);
}

static void begin_train(fl_federation *f, int64_t now_ms) {
    /* A seeded sample of the joined sites: the same sites for the same
     * round and join set, so a restarted round trains the same cohort. */
    int ids[FL_MAX_SITES], n = 0;
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        site_state *ss = &f->site[s];
        ss->selected = 0;
        ss->refused = 0;
        ss->reason[0] = 0;
        ss->epsilon = NAN;
        if (ss->joined) ids[n++] = s;
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
    begin_stage(f, FL_STAGE_TRAIN, now_ms);
    f->t_train_start = now_ms;
    f->bytes_in = f->bytes_out = 0;
    event(f, "select", 0, "%d of %d joined sites selected", k, n);
}

static void fail(fl_federation *f, const char *err) {
    snprintf(f->error, sizeof f->error, "%s", err);
    fl_error("federation stopped: %s", err);
    f->stage = FL_STAGE_DONE;
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
    char err[FL_ERR_LEN];
    if (save_stats(f, err)) {
        fail(f, err);
        return;
    }
    event(f, "stats", 0, "statistics summed over %d sites", got);
    f->round = 1;
    begin_train(f, now_ms);
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

/* EVALUATE -> COMMIT -> next round (or DONE). */
static void finish_evaluate(fl_federation *f, int64_t now_ms) {
    fl_round_metrics *m = &f->metrics[f->round];
    double loss = 0;
    int64_t correct = 0, count = 0;
    int bins = f->cfg.hist_bins, have_hist = 0;
    uint64_t *hist = calloc(2 * (size_t)bins, sizeof *hist);
    if (!hist) {
        fail(f, "out of memory");
        return;
    }
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        site_state *ss = &f->site[s];
        if (!ss->submitted) continue;
        loss += ss->loss_sum;
        correct += ss->correct;
        count += ss->count;
        if (ss->hist) {
            have_hist = 1;
            for (int b = 0; b < 2 * bins; b++)
                hist[b] += ss->hist[b];
        }
    }
    m->round = f->round;
    m->loss = count ? loss / (double)count : NAN;
    m->accuracy = count ? (double)correct / (double)count : NAN;
    m->auc = have_hist ? auc_from_hist(hist, hist + bins, bins) : NAN;
    free(hist);
    fl_metric mets[] = {{"loss", m->loss},
                        {"accuracy", m->accuracy},
                        {"auc", m->auc},
                        {"completed", m->completed},
                        {"dropped", m->dropped},
                        {"eval_examples", (double)count},
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
        parts[np++] =
            (fl_participation){s, ss->delta ? "completed" : (ss->refused ? "refused" : "dropped"),
                               ss->reason[0] ? ss->reason : NULL, ss->n_examples, ss->epsilon};
    }
    uint8_t *sb;
    size_t sl;
    char err[FL_ERR_LEN];
    if (strategy_blob(f, &sb, &sl)) {
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
                           .strategy_state_len = sl};
    int rc = fl_store_commit_round(f->store, &rec, err);
    free(sb);
    if (rc) {
        fail(f, err);
        return;
    }
    char hex[17];
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", f->sha[i]);
    event(f, "commit", 0, "model sha256 %s... accuracy %.4f auc %.4f loss %.4f (%lld examples)",
          hex, m->accuracy, m->auc, m->loss, (long long)count);
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        free(f->site[s].delta);
        f->site[s].delta = NULL;
    }
    if (f->round >= f->cfg.rounds) {
        f->stage = FL_STAGE_DONE;
        event(f, "done", 0, "%d rounds completed", f->round);
        return;
    }
    f->round++;
    begin_train(f, now_ms);
}

/* TRAIN -> EVALUATE: aggregate, or restart the round below min_sites. */
static void finish_train(fl_federation *f, int64_t now_ms) {
    fl_update ups[FL_MAX_SITES];
    int n = 0, dropped = 0, refused = 0, selected = 0;
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        site_state *ss = &f->site[s];
        if (!ss->selected) continue;
        selected++;
        refused += ss->refused;
        if (ss->delta)
            ups[n++] = (fl_update){s, (double)ss->n_examples, ss->delta};
        else {
            dropped++;
            if (!ss->refused) {
                snprintf(ss->reason, sizeof ss->reason, "no update before the deadline");
                event(f, "dropout", s, "no update before the TRAIN deadline");
            }
        }
    }
    if (n < f->cfg.min_sites && selected - refused < f->cfg.min_sites) {
        /* A refusal is final: a site's budget only shrinks, and a restarted
         * round selects the same sites, so restarting would loop forever.
         * End here; the committed rounds stand. */
        snprintf(f->end_reason, sizeof f->end_reason,
                 "round %d: %d of %d selected sites refused to train (privacy budget spent?), "
                 "fewer than min_sites %d can: the federation ends early",
                 f->round, refused, selected, f->cfg.min_sites);
        for (int s = 1; s <= f->cfg.n_allowed; s++) {
            free(f->site[s].delta);
            f->site[s].delta = NULL;
        }
        f->stage = FL_STAGE_DONE;
        event(f, "done", 0, "%s", f->end_reason);
        return;
    }
    if (n < f->cfg.min_sites) {
        event(f, "restart", 0, "%d updates, %d needed: the round starts again with the same seed",
              n, f->cfg.min_sites);
        for (int s = 1; s <= f->cfg.n_allowed; s++) {
            free(f->site[s].delta);
            f->site[s].delta = NULL;
        }
        begin_train(f, now_ms);
        return;
    }
    char err[FL_ERR_LEN];
    f->t_train_ms = (double)(now_ms - f->t_train_start);
    int64_t t0 = fl_now_ms();
    int rc = fl_strategy_apply(&f->strat, f->global, ups, n, err);
    if (!rc) rc = refresh_model(f);
    f->t_aggregate_ms = (double)(fl_now_ms() - t0);
    if (rc) {
        fail(f, err);
        return;
    }
    f->metrics[f->round].completed = n;
    f->metrics[f->round].dropped = dropped;
    event(f, "aggregate", 0, "%s over %d updates (%d dropped)",
          fl_strategy_name(f->cfg.strategy.kind), n, dropped);
    begin_stage(f, FL_STAGE_EVALUATE, now_ms);
    f->t_eval_start = now_ms;
}

static int all_submitted(const fl_federation *f, int only_selected) {
    for (int s = 1; s <= f->cfg.n_allowed; s++) {
        const site_state *ss = &f->site[s];
        if (!ss->joined || (only_selected && !ss->selected)) continue;
        if (!ss->submitted) return 0;
    }
    return 1;
}

static void advance(fl_federation *f, int64_t now_ms) {
    int late = now_ms >= f->stage_deadline;
    switch (f->stage) {
    case FL_STAGE_WAIT_SITES: {
        int n = n_joined(f);
        if (n == f->cfg.n_allowed || (now_ms >= f->join_deadline && n >= f->cfg.min_sites)) {
            event(f, "start", 0, "%d of %d sites joined", n, f->cfg.n_allowed);
            if (f->round == 0 && !f->stats) {
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
    default:
        break;
    }
}

int fl_fed_tick(fl_federation *f, int64_t now_ms) {
    int stage = f->stage, round = f->round;
    advance(f, now_ms);
    return stage != f->stage || round != f->round;
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
    t->round = f->round;
    t->stage = f->stage;
    t->deadline_ms = f->stage_deadline;
    switch (f->stage) {
    case FL_STAGE_DONE:
        t->kind = FL_TASK_DONE;
        break;
    case FL_STAGE_STATS:
        if (!ss->submitted) t->kind = FL_TASK_STATS;
        break;
    case FL_STAGE_TRAIN:
        if (ss->selected && !ss->submitted) t->kind = FL_TASK_TRAIN;
        break;
    case FL_STAGE_EVALUATE:
        if (!ss->submitted) t->kind = FL_TASK_EVALUATE;
        break;
    default:
        break;
    }
    if (t->kind == FL_TASK_TRAIN || t->kind == FL_TASK_EVALUATE) {
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

int fl_fed_submit(fl_federation *f, int site, const fl_result *r, int64_t now_ms,
                  char err[FL_ERR_LEN]) {
    if (site < 1 || site > f->cfg.n_allowed || !f->site[site].joined)
        return fl_seterr(err, FL_EAUTH, "submit from a site that has not joined");
    site_state *ss = &f->site[site];
    static const int expected[] = {FL_TASK_NONE, FL_TASK_STATS, FL_TASK_TRAIN, FL_TASK_EVALUATE,
                                   FL_TASK_NONE};
    if (r->round != f->round)
        return refuse(f, site, FL_EPROTO, err, "round %d, expected %d (stale or replayed)",
                      r->round, f->round);
    if (r->kind != expected[f->stage] || r->kind == FL_TASK_NONE)
        return refuse(f, site, FL_EPROTO, err, "result kind %d does not match stage %s", r->kind,
                      fl_stage_name(f->stage));
    if (ss->submitted)
        return refuse(f, site, FL_EPROTO, err, "a second %s result in round %d (replay)",
                      fl_stage_name(f->stage), f->round);
    if (f->stage == FL_STAGE_TRAIN && !ss->selected)
        return refuse(f, site, FL_EPROTO, err, "not selected for round %d", f->round);
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
        double eps = isfinite(r->epsilon) && r->epsilon > 0 ? r->epsilon : NAN;
        if (r->refused) {
            ss->refused = 1;
            ss->epsilon = eps;
            snprintf(ss->reason, sizeof ss->reason, "%s", r->reason ? r->reason : "refused");
            event(f, "refusal", site, "the site declined the round: %s", ss->reason);
            if (isfinite(eps)) event(f, "privacy", site, "epsilon %.6g spent, refused", eps);
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
        float *copy = malloc((size_t)r->n_params * sizeof(float));
        if (!copy) return FL_ENOMEM;
        memcpy(copy, r->delta, (size_t)r->n_params * sizeof(float));
        free(ss->delta);
        ss->delta = copy;
        ss->n_examples = r->n_examples;
        ss->train_loss = r->train_loss;
        ss->epsilon = eps;
        if (isfinite(eps)) event(f, "privacy", site, "epsilon %.6g spent after this round", eps);
        break;
    }
    case FL_TASK_EVALUATE: {
        if (r->count < 0 || r->correct < 0 || r->correct > r->count || !isfinite(r->loss_sum) ||
            r->loss_sum < 0)
            return refuse(f, site, FL_EINVAL, err, "evaluation counts are inconsistent");
        if (r->hist && r->hist_bins != f->cfg.hist_bins)
            return refuse(f, site, FL_EINVAL, err, "histogram of %d bins, expected %d",
                          r->hist_bins, f->cfg.hist_bins);
        free(ss->hist);
        ss->hist = NULL;
        if (r->hist) {
            ss->hist = malloc(2 * (size_t)r->hist_bins * sizeof(uint64_t));
            if (!ss->hist) return FL_ENOMEM;
            memcpy(ss->hist, r->hist, 2 * (size_t)r->hist_bins * sizeof(uint64_t));
        }
        ss->loss_sum = r->loss_sum;
        ss->correct = r->correct;
        ss->count = r->count;
        break;
    }
    default:
        break;
    }
    ss->submitted = 1;
    advance(f, now_ms);
    return FL_OK;
}
