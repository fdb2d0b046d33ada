/* round.h: the aggregator's round state machine (DESIGN.md §6), free of any
 * transport: the gRPC service turns calls into fl_fed_join / fl_fed_poll /
 * fl_fed_submit and the main loop calls fl_fed_tick; tests drive it directly.
 *
 *   WAIT_SITES -> STATS -> ( TRAIN -> AGGREGATE -> EVALUATE -> COMMIT ) x rounds -> DONE
 *
 * WAIT_SITES waits until every allow-listed site joined, or the join deadline
 * passed with at least min_sites. STATS collects each site's imputation and
 * standardisation sums (core/dataset.h fl_stats, flattened) and adds them, so
 * every site encodes identically. Each round selects sites (a seeded sample of
 * the joined ones), sends TRAIN, waits for their deltas until the stage
 * deadline (stragglers are dropped and recorded), aggregates with the
 * strategy in site order, sends EVALUATE with the new model to every joined
 * site, and commits model, metrics and participation to the store in one
 * transaction. A round with fewer than min_sites updates is restarted with
 * the same seed, unless sites refused it (privacy budget): a refusal is final
 * (a site's budget only shrinks), so when the selected sites that did not
 * refuse are fewer than min_sites the federation ends early, recorded as a
 * "done" event with the reason (fl_fed_end_reason), rather than restart forever.
 *
 * Restart: fl_fed_open resumes after the last committed round in the store;
 * a round that was in flight is run again from its start with the same seed.
 * Not thread-safe: the caller serialises calls (one mutex in the service). */
#ifndef FL_ROUND_H
#define FL_ROUND_H

#include <stdint.h>

#include "aggregator/store.h"
#include "aggregator/strategy.h"
#include "core/model.h"
#include "crypto/secagg.h"

#define FL_MAX_SITES 256
#define FL_NAME_LEN 64
#define FL_HIST_BINS_MAX 4096

enum fl_stage {
    FL_STAGE_WAIT_SITES = 0,
    FL_STAGE_STATS,
    FL_STAGE_TRAIN,
    FL_STAGE_EVALUATE,
    FL_STAGE_DONE,
    /* A secure sum (DESIGN.md §9), of statistics, training updates or
     * evaluation counts (fl_fed_purpose): */
    FL_STAGE_ADVERTISE_KEYS,
    FL_STAGE_SHARE_KEYS,
    FL_STAGE_MASKED_INPUT,
    FL_STAGE_UNMASK,
};

enum fl_task_kind {
    FL_TASK_NONE = 0,
    FL_TASK_STATS,
    FL_TASK_TRAIN,
    FL_TASK_EVALUATE,
    FL_TASK_DONE,
    FL_TASK_ADVERTISE_KEYS,
    FL_TASK_SHARE_KEYS,
    FL_TASK_MASKED_INPUT,
    FL_TASK_UNMASK,
};

typedef struct fl_fed_config {
    char federation_id[FL_NAME_LEN];
    int rounds;
    int min_sites;
    double fraction; /* of the joined sites selected per round (at least min_sites) */
    uint64_t seed;
    int64_t join_timeout_ms, stage_timeout_ms;
    int n_allowed;
    char allowed[FL_MAX_SITES][FL_NAME_LEN]; /* site names (certificate CN) */
    char model[FL_SPEC_LEN];                 /* "logreg" | "mlp:..." */
    /* local training, sent with each TRAIN task */
    int local_epochs, batch_size, optimizer;
    double lr, momentum, weight_decay;
    fl_strategy_config strategy;
    int hist_bins; /* score histogram bins for federated AUC */
    /* [privacy]: record-level DP-SGD asked of every site in each TRAIN task
     * (docs/privacy.md); each site enforces its own budget and may refuse. */
    int dp_record;                                      /* 0 = no DP */
    double dp_noise, dp_clip, dp_delta, dp_max_epsilon; /* max_epsilon 0 = sites' own caps */
    /* [secagg]: statistics, updates and evaluation sums go through secure
     * aggregation (crypto/secagg.h); strategies median and trimmed_mean
     * need the individual updates and are refused with it. */
    int secagg;
    double sa_threshold; /* fraction of a site's neighbours needed to unmask it */
    int sa_neighbors;    /* 0 = every participant */
    double sa_clip;      /* clip range of an update's values before weighting */
    uint32_t sa_levels;  /* quantization levels over [-clip, clip] */
    /* [fairness]: per-group counts with every evaluation (core/fairness.h);
     * n_fairness = 0 turns it off. The layout object is the caller's. */
    int64_t n_fairness;
    char fairness_intersections[256];
    double fairness_threshold;
    int fairness_bins;
    /* From the summed counts and the sums of the sites' accuracy and its
     * square over `sites` sites, the audit's JSON (*json malloc'd) and the
     * number of alerts it raised, each recorded as a "fairness_alert" event
     * with its text in alerts (malloc'd, newline-separated, may be NULL). */
    int (*fairness_compute)(void *ctx, char **json, char **alerts, const uint64_t *counts,
                            double acc_sum, double acc_sumsq, int64_t sites);
    void *fairness_ctx;
} fl_fed_config;

void fl_fed_config_default(fl_fed_config *cfg);

/* What a site must do next. Pointers borrow from the federation and stay
 * valid until the next call that changes its state. */
typedef struct fl_task {
    int kind; /* enum fl_task_kind */
    int round;
    int stage;
    int64_t deadline_ms;
    const uint8_t *model; /* TRAIN / EVALUATE: serialised global model */
    size_t model_len;
    const uint8_t *model_sha256;
    const double *stats; /* TRAIN / EVALUATE: the summed statistics vector */
    int64_t n_stats;
    uint64_t seed; /* TRAIN: the site's training seed for this round */
    double prox_mu;
    uint32_t step; /* stage instance, echoed by the site's result */
    /* Secure-aggregation stages. purpose: FL_TASK_STATS, _TRAIN or
     * _EVALUATE, what the secure sum is of (MASKED_INPUT carries that
     * task's inputs as above). */
    int purpose;
    const fl_secagg_params *sa;
    double sa_weight;                     /* MASKED_INPUT of TRAIN */
    const fl_secagg_peer_keys *peer_keys; /* SHARE_KEYS */
    size_t n_peer_keys;
    const fl_secagg_ct *cts; /* MASKED_INPUT: addressed to this site */
    size_t n_cts;
    const uint32_t *survivors, *dropped; /* UNMASK */
    size_t n_survivors, n_dropped;
} fl_task;

/* A site's result. Only the fields of its kind are read. */
typedef struct fl_result {
    int kind;
    int round;
    /* STATS */
    const double *stats;
    int64_t n_stats;
    /* TRAIN */
    const float *delta;
    /* TRAIN: when not NULL, the same vector as delta in a malloc'd buffer the
     * state machine takes over on success (FL_OK) instead of copying it; on
     * any error it stays the caller's. */
    float *delta_owned;
    int64_t n_params;
    int64_t n_examples;
    double train_loss;
    int refused; /* the site declined (e.g. privacy budget) */
    const char *reason;
    /* TRAIN, completed or refused: the site's privacy spent so far as its
     * accountant reports it; NAN or <= 0 when it reports none. */
    double epsilon;
    /* EVALUATE */
    double loss_sum;
    int64_t correct, count;
    const uint64_t
        *hist; /* (2, hist_bins) binary tasks: negatives then positives; NULL otherwise */
    int hist_bins;
    const uint64_t *fairness; /* (n_fairness) per-group counts; NULL = none */
    int64_t n_fairness;
    /* Secure-aggregation stages (kind FL_TASK_ADVERTISE_KEYS ..): step as in
     * the task. MASKED_INPUT of TRAIN also carries n_examples, train_loss,
     * epsilon, refused and reason above (a refusal has no masked vector). */
    uint32_t step;
    const fl_secagg_peer_keys *keys; /* ADVERTISE_KEYS (site field ignored) */
    const fl_secagg_ct *cts;         /* SHARE_KEYS, peer = recipient */
    size_t n_cts;
    const uint32_t *masked; /* MASKED_INPUT, (n_masked) words */
    uint64_t n_masked;
    const fl_secagg_reveal *reveals; /* UNMASK */
    size_t n_reveals;
} fl_result;

typedef struct fl_round_metrics {
    int round;
    int completed, dropped;
    double loss, accuracy, auc;
} fl_round_metrics;

typedef struct fl_federation fl_federation;

/* Opens the federation on store (borrowed). Validates cfg; resumes from the
 * store's last committed round. n_features / n_classes come from the first
 * site to join (stored, and every later site must match). */
int fl_fed_open(fl_federation **out, const fl_fed_config *cfg, fl_store *store, int64_t now_ms,
                char err[FL_ERR_LEN]);
void fl_fed_free(fl_federation *f);

/* A site joined (name from its certificate). FL_EAUTH if not allow-listed;
 * FL_EINVAL if its data layout differs from the federation's. *site is its
 * id (1-based index in the allow-list). */
int fl_fed_join(fl_federation *f, const char *name, int64_t n_examples, int n_features,
                int n_classes, int *site, int64_t now_ms, char err[FL_ERR_LEN]);
/* The site's next task (FL_TASK_NONE: nothing yet, poll again). */
int fl_fed_poll(fl_federation *f, int site, fl_task *task, int64_t now_ms);
/* A result. Stale rounds, unexpected kinds, a second result for the same
 * task, wrong shapes and non-finite values are refused (FL_EPROTO /
 * FL_EINVAL / FL_ENUMERIC with the reason) and change nothing. */
int fl_fed_submit(fl_federation *f, int site, const fl_result *res, int64_t now_ms,
                  char err[FL_ERR_LEN]);
/* Whether a result of this kind for this round would be admitted from site
 * now (fl_fed_submit's first checks: joined, round, stage, not yet
 * submitted, selected), refused and audited as fl_fed_submit would. The
 * aggregator asks at every chunk of an upload, so a site that is not
 * expected to upload is stopped at its first chunk, not its last. */
int fl_fed_accepts(fl_federation *f, int site, int round, int kind, char err[FL_ERR_LEN]);
/* Advances on deadlines; returns 1 when the state changed (wake pollers). */
int fl_fed_tick(fl_federation *f, int64_t now_ms);

int fl_fed_stage(const fl_federation *f);
int fl_fed_round(const fl_federation *f);
const char *fl_stage_name(int stage);
/* The metrics of committed round r (1-based), or NULL. */
const fl_round_metrics *fl_fed_metrics(const fl_federation *f, int round);
/* Current global model (serialised) and its SHA-256. */
const uint8_t *fl_fed_model(const fl_federation *f, size_t *len, const uint8_t **sha256);
/* The model's parameter count, features and classes (0 before the first join). */
int64_t fl_fed_n_params(const fl_federation *f);
int fl_fed_features(const fl_federation *f);
int fl_fed_classes(const fl_federation *f);
/* The site id of an allow-listed name (1-based), or 0. */
int fl_fed_site_id(const fl_federation *f, const char *name);
/* 1 when the site has joined (since the aggregator started). */
int fl_fed_joined(const fl_federation *f, int site);
const fl_fed_config *fl_fed_get_config(const fl_federation *f);
/* Adds message bytes received from / sent to the sites to the current
 * round's transport figures (committed as metrics bytes_in / bytes_out). */
void fl_fed_count_bytes(fl_federation *f, double in, double out);
/* Records a refused or rejected call in the audit log. */
void fl_fed_audit(fl_federation *f, const char *kind, const char *site, const char *detail);

/* The statistics vector's length, from the layout a site states at Join
 * (public: it follows from the schema). Needed before a secure sum of
 * statistics; FL_EINVAL if it differs from the one already set. */
int fl_fed_set_stats_len(fl_federation *f, int64_t n_stats, uint32_t n_cols, char err[FL_ERR_LEN]);

/* The purpose of the secure sum in flight (FL_TASK_STATS / _TRAIN /
 * _EVALUATE), or FL_TASK_NONE. */
int fl_fed_purpose(const fl_federation *f);

/* Why the federation ended before its last round (every site's privacy
 * budget spent), or NULL. */
const char *fl_fed_end_reason(const fl_federation *f);

/* The last error that stopped the federation (store failure), or NULL. */
const char *fl_fed_error(const fl_federation *f);

#endif
