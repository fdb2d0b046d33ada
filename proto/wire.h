/* wire.h: the wire protocol's messages as plain C structs, and the only way
 * in and out of their protobuf encoding (DESIGN.md §5; fields, limits and the
 * stage machine in docs/protocol.md; the schema in proto/cohort.proto).
 *
 * Every message has three functions:
 *
 *     int  fl_wire_pack_<msg>(uint8_t **out, size_t *len, const fl_wire_<msg> *m,
 *                             char err[FL_ERR_LEN]);
 *     int  fl_wire_unpack_<msg>(fl_wire_<msg> *m, const uint8_t *buf, size_t len,
 *                               const fl_wire_expect *expect, char err[FL_ERR_LEN]);
 *     void fl_wire_<msg>_free(fl_wire_<msg> *m);
 *
 * Unpack decodes, then checks every field (lengths, shapes, finite values,
 * enum ranges, byte strings of fixed size, strings) and, where expect says
 * so, the federation id, round, step, stage, kind and vector lengths. It
 * returns 0, or FL_EPROTO with the field named in err ("Submit.train.update:
 * 1023 values, expected 1024", "Submit.round: 3, expected 4"); FL_ENOMEM if
 * memory ran out. On failure *m is left zeroed: nothing is partially
 * returned. On success the caller owns *m and releases it with
 * fl_wire_<msg>_free, which also accepts a zeroed struct, a struct already
 * freed, and NULL.
 *
 * Pack runs the same checks (not the expect ones) and returns FL_EINVAL with
 * the field named in err (which may be NULL), so a site never sends what the
 * aggregator would refuse. It borrows every pointer in *m and writes a
 * malloc'd buffer to *out (the caller frees it). Structs built by hand for
 * packing are not passed to _free unless their arrays are malloc'd.
 *
 * String fields are fixed-size arrays holding NUL-terminated text. Arrays are
 * a pointer plus a count. Nothing here includes the generated protobuf-c
 * header: only proto/wire.c does. */
#ifndef FL_WIRE_H
#define FL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* ============================== limits ============================== */

/* One chunk of a large payload: model bytes per FetchChunk, and update or
 * masked values per Submit (1 MiB of float32 or uint32). Small chunks keep
 * the aggregator's memory near one model-sized buffer per site: a request
 * in flight is copied a few times on its way in (gRPC, protobuf, checks),
 * and each copy is a chunk, not a model (bench/round). */
#define FL_WIRE_CHUNK_BYTES (1u << 20)
#define FL_WIRE_CHUNK_VALUES (FL_WIRE_CHUNK_BYTES / 4u)
/* The most values of a vector that is never chunked (a masked statistics or
 * evaluation vector): 4 MiB. */
#define FL_WIRE_MAX_VECTOR_VALUES (1u << 20)
/* Largest encoded message: a full chunk plus the rest of its message. A gRPC
 * endpoint sets GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH to this. */
#define FL_WIRE_MAX_MESSAGE_BYTES (5u << 20)
/* Parameters of a model; values of a chunked vector in total. */
#define FL_WIRE_MAX_PARAMS (64u << 20)
#define FL_WIRE_MAX_CHUNKS (FL_WIRE_MAX_PARAMS / FL_WIRE_CHUNK_VALUES)
/* A serialised model: the parameters plus a header. */
#define FL_WIRE_MAX_MODEL_BYTES (4ull * FL_WIRE_MAX_PARAMS + (1u << 20))

#define FL_WIRE_ID_LEN 65      /* federation id: 1..64 of [A-Za-z0-9._-] */
#define FL_WIRE_VERSION_LEN 65 /* agent version: 0..64 printable ASCII */
#define FL_WIRE_SPEC_LEN 128   /* model spec: 1..127 of [a-z0-9:,] */
#define FL_WIRE_REASON_LEN 512 /* refusal and rejection reasons: UTF-8 */
#define FL_WIRE_ACCOUNTANT_LEN 32
#define FL_WIRE_MAX_NAME 128 /* bytes of a column or level name (UTF-8) */

#define FL_WIRE_MAX_SITES 1024
#define FL_WIRE_MAX_FEATURES (1u << 20)
#define FL_WIRE_MAX_CLASSES 1024
#define FL_WIRE_MAX_ROUNDS 100000u
#define FL_WIRE_MAX_EXAMPLES (1ull << 40)
#define FL_WIRE_MAX_EPOCHS 1000u
#define FL_WIRE_MAX_BATCH (1u << 20)
#define FL_WIRE_MAX_COLUMNS 4096u /* statistics columns */
#define FL_WIRE_MAX_LEVELS 16384u /* categorical levels over all columns */
#define FL_WIRE_MAX_BINS 4096u    /* score histogram bins per class */
#define FL_WIRE_MAX_HIST 65536u   /* score histogram counts in all */
#define FL_WIRE_MAX_FAIRNESS 65536u

#define FL_WIRE_SHA256_BYTES 32
#define FL_WIRE_KEY_BYTES 32 /* X25519 public key */
#define FL_WIRE_MAX_SIGNATURE_BYTES 128
#define FL_WIRE_MAX_CERT_BYTES 2048
#define FL_WIRE_MAX_SHARE_BYTES 256

/* ============================== enums ============================== */

/* Values equal the proto enums'; wire.c checks that at compile time. */
typedef enum fl_wire_task_kind {
    FL_WIRE_TASK_NONE = 0,
    FL_WIRE_TASK_STATS,
    FL_WIRE_TASK_TRAIN,
    FL_WIRE_TASK_EVALUATE,
    FL_WIRE_TASK_ADVERTISE_KEYS,
    FL_WIRE_TASK_SHARE_KEYS,
    FL_WIRE_TASK_MASKED_INPUT,
    FL_WIRE_TASK_UNMASK,
    FL_WIRE_TASK_DONE,
    FL_WIRE_TASK_COUNT
} fl_wire_task_kind;

typedef enum fl_wire_stage {
    FL_WIRE_STAGE_NONE = 0,
    FL_WIRE_STAGE_SELECT,
    FL_WIRE_STAGE_STATS,
    FL_WIRE_STAGE_TRAIN,
    FL_WIRE_STAGE_ADVERTISE_KEYS,
    FL_WIRE_STAGE_SHARE_KEYS,
    FL_WIRE_STAGE_MASKED_INPUT,
    FL_WIRE_STAGE_UNMASK,
    FL_WIRE_STAGE_AGGREGATE,
    FL_WIRE_STAGE_EVALUATE,
    FL_WIRE_STAGE_COMMIT,
    FL_WIRE_STAGE_COUNT
} fl_wire_stage;

/* 0 is refused: an absent policy must not read as "no privacy". */
typedef enum fl_wire_privacy_mode {
    FL_WIRE_PRIVACY_UNSPECIFIED = 0,
    FL_WIRE_PRIVACY_NONE,
    FL_WIRE_PRIVACY_RECORD,
    FL_WIRE_PRIVACY_SITE,
    FL_WIRE_PRIVACY_COUNT
} fl_wire_privacy_mode;

typedef enum fl_wire_optimizer {
    FL_WIRE_OPT_UNSPECIFIED = 0,
    FL_WIRE_OPT_SGD,
    FL_WIRE_OPT_ADAM,
    FL_WIRE_OPT_COUNT
} fl_wire_optimizer;

/* Which result a Submit carries. */
typedef enum fl_wire_result_kind {
    FL_WIRE_RESULT_NONE = 0,
    FL_WIRE_RESULT_STATS,
    FL_WIRE_RESULT_TRAIN,
    FL_WIRE_RESULT_EVAL,
    FL_WIRE_RESULT_KEYS,
    FL_WIRE_RESULT_SHARES,
    FL_WIRE_RESULT_UNMASK,
    FL_WIRE_RESULT_COUNT
} fl_wire_result_kind;

/* "TRAIN", "MASKED_INPUT", ...; "?" out of range. Static strings. */
const char *fl_wire_task_kind_name(int kind);
const char *fl_wire_stage_name(int stage);
const char *fl_wire_privacy_mode_name(int mode);

/* The stage in which a site answers a task of this kind, FL_WIRE_STAGE_NONE
 * for NONE and DONE (no answer). */
fl_wire_stage fl_wire_task_stage(fl_wire_task_kind kind);

/* Number of Submit chunks for a vector of n values (1 for n = 0). */
static inline uint32_t fl_wire_chunk_count(uint64_t n) {
    uint64_t c = n / FL_WIRE_CHUNK_VALUES + (n % FL_WIRE_CHUNK_VALUES != 0);
    return c < 1 ? 1u : c > UINT32_MAX ? UINT32_MAX : (uint32_t)c;
}

/* ========================= shared structs ========================= */

typedef struct fl_wire_privacy {
    fl_wire_privacy_mode mode;
    double noise_multiplier; /* sigma / clip; > 0 unless mode is NONE */
    double clip;             /* > 0 unless mode is NONE */
    double delta;            /* in (0, 1) unless mode is NONE */
    double max_epsilon;      /* the federation's cap per site; 0 = none */
} fl_wire_privacy;

typedef struct fl_wire_secagg_config {
    bool enabled;
    double threshold;            /* enabled: in (0, 1] */
    uint32_t neighbors;          /* 0 = all sites; <= FL_WIRE_MAX_SITES */
    double clip_range;           /* enabled: > 0 */
    uint32_t quantization_range; /* enabled: >= 1 */
    uint64_t graph_seed;
    uint32_t n_participants; /* <= FL_WIRE_MAX_SITES, unique ids >= 1 */
    uint32_t participants[FL_WIRE_MAX_SITES];
    uint32_t threshold_count; /* <= n_participants */
    uint64_t vector_words;    /* <= FL_WIRE_MAX_PARAMS * 4 */
    double weight;            /* >= 0, finite */
    uint64_t session;         /* one secure sum's id (crypto/secagg.h params.round) */
} fl_wire_secagg_config;

typedef struct fl_wire_model_ref {
    uint8_t sha256[FL_WIRE_SHA256_BYTES];
    uint64_t total_bytes; /* 1..FL_WIRE_MAX_MODEL_BYTES */
    uint64_t n_params;    /* 1..FL_WIRE_MAX_PARAMS */
} fl_wire_model_ref;

/* Column statistics (a STATS result, or the federation's totals in a Task),
 * laid out like core/dataset.h fl_stats: one entry per column; column c owns
 * level_counts[level_offsets[c] .. level_offsets[c+1]) (empty for a numeric
 * column). In the masked form (MASKED_INPUT) only masked is set. */
typedef struct fl_wire_stats {
    uint64_t n_rows;
    uint32_t n_cols;         /* <= FL_WIRE_MAX_COLUMNS */
    uint64_t *count;         /* (n_cols) each <= n_rows */
    double *sum, *sumsq;     /* (n_cols) finite; sumsq >= 0 */
    uint32_t *level_offsets; /* (n_cols + 1) non-decreasing, from 0 to n_levels */
    uint32_t n_levels;       /* <= FL_WIRE_MAX_LEVELS */
    uint64_t *level_counts;  /* (n_levels) a column's sum <= n_rows */
    uint64_t n_masked;       /* <= FL_WIRE_CHUNK_VALUES */
    uint32_t *masked;        /* (n_masked) */
} fl_wire_stats;

typedef struct fl_wire_public_keys {
    uint8_t enc_pk[FL_WIRE_KEY_BYTES];
    uint8_t mask_pk[FL_WIRE_KEY_BYTES];
    uint32_t signature_len; /* 1..FL_WIRE_MAX_SIGNATURE_BYTES */
    uint8_t signature[FL_WIRE_MAX_SIGNATURE_BYTES];
} fl_wire_public_keys;

/* A share (encrypted or plain) exchanged with one peer site. */
typedef struct fl_wire_share {
    uint32_t peer; /* site id, >= 1 */
    uint32_t len;  /* 1..FL_WIRE_MAX_SHARE_BYTES */
    uint8_t data[FL_WIRE_MAX_SHARE_BYTES];
} fl_wire_share;

/* ============================== Join ============================== */

typedef struct fl_wire_join {
    char agent_version[FL_WIRE_VERSION_LEN];
    uint64_t n_examples; /* 1..FL_WIRE_MAX_EXAMPLES: the FedAvg weight */
    uint32_t n_features; /* 0 = not stated */
    uint32_t n_classes;  /* 0 = not stated, else 2..FL_WIRE_MAX_CLASSES */
    bool has_schema_sha256;
    uint8_t schema_sha256[FL_WIRE_SHA256_BYTES];
    uint32_t n_level_offsets; /* 0 = not stated, else n_cols + 1 <= FL_WIRE_MAX_COLUMNS + 1 */
    uint32_t *level_offsets;  /* non-decreasing from 0 */
} fl_wire_join;

typedef struct fl_wire_join_response {
    char federation_id[FL_WIRE_ID_LEN];
    char model_spec[FL_WIRE_SPEC_LEN];
    uint32_t n_features; /* 1..FL_WIRE_MAX_FEATURES */
    uint32_t n_classes;  /* 2..FL_WIRE_MAX_CLASSES (2 = binary) */
    uint64_t n_params;   /* 1..FL_WIRE_MAX_PARAMS */
    uint8_t schema_sha256[FL_WIRE_SHA256_BYTES];
    fl_wire_privacy privacy;
    fl_wire_secagg_config secagg;
    uint32_t rounds;  /* 1..FL_WIRE_MAX_ROUNDS */
    uint32_t site_id; /* >= 1 */
    uint64_t init_seed;
} fl_wire_join_response;

/* ============================ PollTask ============================ */

typedef struct fl_wire_poll {
    char federation_id[FL_WIRE_ID_LEN];
    uint64_t last_round_seen;
} fl_wire_poll;

typedef struct fl_wire_train_config {
    uint32_t local_epochs; /* 1..FL_WIRE_MAX_EPOCHS */
    uint32_t batch_size;   /* 1..FL_WIRE_MAX_BATCH */
    fl_wire_optimizer optimizer;
    double lr;           /* > 0 */
    double momentum;     /* [0, 1) */
    double weight_decay; /* >= 0 */
    double prox_mu;      /* >= 0; 0 = plain FedAvg */
    uint64_t seed;
    fl_wire_privacy dp;
} fl_wire_train_config;

typedef struct fl_wire_stats_column {
    char name[FL_WIRE_MAX_NAME];
    bool categorical;
    uint32_t n_levels;                /* 0 for numeric columns */
    char (*levels)[FL_WIRE_MAX_NAME]; /* (n_levels) */
} fl_wire_stats_column;

typedef struct fl_wire_stats_spec {
    uint32_t n_cols; /* 1..FL_WIRE_MAX_COLUMNS; levels in all <= FL_WIRE_MAX_LEVELS */
    fl_wire_stats_column *cols;
} fl_wire_stats_spec;

typedef struct fl_wire_eval_spec {
    uint32_t n_bins;     /* 1..FL_WIRE_MAX_BINS */
    uint32_t n_fairness; /* <= FL_WIRE_MAX_FAIRNESS */
    char fairness_intersections[FL_WIRE_REASON_LEN];
    double fairness_threshold; /* in [0, 1]; 0 with n_fairness 0 */
    uint32_t fairness_bins;    /* <= FL_WIRE_MAX_BINS */
} fl_wire_eval_spec;

typedef struct fl_wire_site_keys {
    uint32_t site_id; /* >= 1, unique in the list */
    fl_wire_public_keys keys;
    uint32_t cert_len; /* 1..FL_WIRE_MAX_CERT_BYTES */
    uint8_t *cert;     /* (cert_len) DER */
} fl_wire_site_keys;

/* A task. Which parts are required depends on kind (docs/protocol.md):
 *   STATS: stats            TRAIN: model, train        EVALUATE: model, eval
 *   ADVERTISE_KEYS: secagg  SHARE_KEYS: secagg, site_keys (>= 1)
 *   MASKED_INPUT: secagg and exactly one of train (with model), stats, eval
 *                 (with model); shares may be empty
 *   UNMASK: secagg, survivors (>= 1)
 * Survivor and dropped ids are unique and the two lists disjoint. */
typedef struct fl_wire_task {
    fl_wire_task_kind kind;
    char federation_id[FL_WIRE_ID_LEN];
    uint64_t round;
    uint32_t step;
    fl_wire_stage stage;      /* fl_wire_task_stage(kind), or anything for NONE/DONE */
    int64_t deadline_unix_ms; /* > 0 except for NONE/DONE */
    bool has_model, has_train, has_stats, has_eval, has_secagg, has_totals;
    fl_wire_model_ref model;
    fl_wire_train_config train;
    fl_wire_stats_spec stats;
    fl_wire_eval_spec eval;
    fl_wire_secagg_config secagg;
    fl_wire_stats totals; /* plain form only */
    uint32_t n_site_keys; /* SHARE_KEYS: the neighbours' keys */
    fl_wire_site_keys *site_keys;
    uint32_t n_shares; /* MASKED_INPUT: shares for this site; peer = sender */
    fl_wire_share *shares;
    uint32_t n_survivors, n_dropped; /* UNMASK */
    uint32_t *survivors, *dropped;
} fl_wire_task;

/* =========================== FetchChunk =========================== */

typedef struct fl_wire_fetch {
    char federation_id[FL_WIRE_ID_LEN];
    uint64_t round;
    uint8_t sha256[FL_WIRE_SHA256_BYTES];
    uint64_t offset;    /* <= FL_WIRE_MAX_MODEL_BYTES */
    uint32_t max_bytes; /* 1..FL_WIRE_CHUNK_BYTES */
} fl_wire_fetch;

typedef struct fl_wire_chunk {
    uint64_t offset;
    uint64_t total_bytes; /* 1..FL_WIRE_MAX_MODEL_BYTES; offset + len <= total */
    uint8_t sha256[FL_WIRE_SHA256_BYTES];
    size_t len; /* <= FL_WIRE_CHUNK_BYTES; 0 only at the end of the blob */
    uint8_t *data;
} fl_wire_chunk;

/* ============================= Submit ============================= */

/* TRAIN: update holds this chunk's values. MASKED_INPUT: masked does.
 * A refusal carries neither. offset is the index of the chunk's first value
 * in the whole vector (chunk_index * FL_WIRE_CHUNK_VALUES), set by unpack. */
typedef struct fl_wire_train_result {
    uint64_t n_update;
    float *update; /* (n_update) finite */
    uint64_t n_masked;
    uint32_t *masked; /* (n_masked) */
    uint64_t offset;
    uint64_t n_examples;  /* 1..FL_WIRE_MAX_EXAMPLES unless refused */
    double train_loss;    /* finite, >= 0 */
    double epsilon_spent; /* finite, >= 0 */
    char accountant[FL_WIRE_ACCOUNTANT_LEN];
    bool refused;
    char refusal_reason[FL_WIRE_REASON_LEN]; /* non-empty when refused */
} fl_wire_train_result;

/* In the masked form (MASKED_INPUT) only masked is set. */
typedef struct fl_wire_eval_result {
    double loss_sum;         /* finite, >= 0 */
    uint64_t correct, count; /* correct <= count */
    uint32_t n_hist;
    uint64_t *score_hist; /* (n_hist) per class, n_bins bins each */
    uint32_t n_fairness;
    uint64_t *fairness; /* (n_fairness) */
    uint64_t n_masked;  /* <= FL_WIRE_CHUNK_VALUES */
    uint32_t *masked;
} fl_wire_eval_result;

typedef struct fl_wire_share_list {
    uint32_t n; /* <= FL_WIRE_MAX_SITES, peers unique */
    fl_wire_share *shares;
} fl_wire_share_list;

/* A site never reveals both kinds of share for the same peer (DESIGN.md §9):
 * a peer appears in at most one of the lists. */
typedef struct fl_wire_unmask_result {
    fl_wire_share_list seed_shares; /* survivors' self-mask seed shares */
    fl_wire_share_list key_shares;  /* dropped sites' mask-key shares */
} fl_wire_unmask_result;

/* A result, tagged twice: kind is the task it answers, result the member of
 * the union in use. They must agree: STATS-stats, TRAIN-train (update or
 * refusal), EVALUATE-eval, ADVERTISE_KEYS-keys, SHARE_KEYS-shares,
 * UNMASK-unmask, MASKED_INPUT-train, stats or eval in the masked form.
 *
 * Chunking (n_chunks > 1) applies to the vector of a train result: every
 * chunk but the last holds FL_WIRE_CHUNK_VALUES values, all share a non-zero
 * upload_id and carry total_sha256. */
typedef struct fl_wire_submit {
    char federation_id[FL_WIRE_ID_LEN];
    uint64_t round;
    uint32_t step;
    fl_wire_stage stage; /* = fl_wire_task_stage(kind) */
    fl_wire_task_kind kind;
    uint64_t upload_id;
    uint32_t chunk_index; /* < n_chunks */
    uint32_t n_chunks;    /* 1..FL_WIRE_MAX_CHUNKS (0 is read as 1) */
    bool has_total_sha256;
    uint8_t total_sha256[FL_WIRE_SHA256_BYTES];
    fl_wire_result_kind result;
    union {
        fl_wire_stats stats;
        fl_wire_train_result train;
        fl_wire_eval_result eval;
        fl_wire_public_keys keys;
        fl_wire_share_list shares; /* peer = recipient */
        fl_wire_unmask_result unmask;
    };
} fl_wire_submit;

/* Sets m's chunk fields for chunk k of an upload of n values (upload_id
 * and the SHA-256 of the whole only when there is more than one chunk, as
 * unpack requires) and returns the index of the chunk's first value;
 * *len = its number of values. */
static inline uint64_t fl_wire_set_chunk(fl_wire_submit *m, uint64_t n, uint32_t k,
                                         uint64_t upload_id, const uint8_t sha[32], uint64_t *len) {
    uint32_t chunks = fl_wire_chunk_count(n);
    m->n_chunks = chunks;
    m->chunk_index = k;
    if (chunks > 1) {
        m->upload_id = upload_id;
        m->has_total_sha256 = true;
        for (int i = 0; i < FL_WIRE_SHA256_BYTES; i++)
            m->total_sha256[i] = sha[i];
    }
    uint64_t at = (uint64_t)k * FL_WIRE_CHUNK_VALUES;
    *len = n - at < FL_WIRE_CHUNK_VALUES ? n - at : FL_WIRE_CHUNK_VALUES;
    return at;
}

typedef struct fl_wire_submit_response {
    bool accepted;
    char reason[FL_WIRE_REASON_LEN];
} fl_wire_submit_response;

/* ============================= expect ============================= */

/* What the receiver expects, checked by unpack before anything else looks
 * at the message. A zero / NULL field is not checked, so a designated
 * initialiser names only what matters:
 *     fl_wire_expect ex = {.federation_id = fed, .round = &cur, .stage = st};
 * Rounds are pointers because round 0 is a real round (the statistics round). */
typedef struct fl_wire_expect {
    const char *federation_id; /* every message that carries one */
    /* Submit, FetchChunk, Task: the exact round. PollTask: the current round,
     * which last_round_seen may not exceed. */
    const uint64_t *round;
    const uint64_t *min_round;     /* Task: round >= *min_round (never go back) */
    uint32_t step;                 /* Submit, Task */
    fl_wire_stage stage;           /* Submit, Task */
    fl_wire_task_kind kind;        /* Submit, Task */
    uint64_t n_params;             /* Submit update total; Task and JoinResponse n_params */
    uint64_t n_masked;             /* Submit masked vector total */
    uint32_t n_hist;               /* Submit eval score_hist */
    uint32_t n_fairness;           /* Submit eval fairness */
    uint32_t n_cols;               /* Submit stats columns */
    const uint32_t *level_offsets; /* Submit stats (n_cols + 1); needs n_cols */
    const fl_wire_fetch *fetch;    /* Chunk: the request it answers */
    uint64_t total_bytes;          /* Chunk: the ModelRef's */
} fl_wire_expect;

/* ============================ functions ============================ */

int fl_wire_pack_join(uint8_t **out, size_t *len, const fl_wire_join *m, char err[FL_ERR_LEN]);
int fl_wire_unpack_join(fl_wire_join *m, const uint8_t *buf, size_t len,
                        const fl_wire_expect *expect, char err[FL_ERR_LEN]);
void fl_wire_join_free(fl_wire_join *m);

int fl_wire_pack_join_response(uint8_t **out, size_t *len, const fl_wire_join_response *m,
                               char err[FL_ERR_LEN]);
int fl_wire_unpack_join_response(fl_wire_join_response *m, const uint8_t *buf, size_t len,
                                 const fl_wire_expect *expect, char err[FL_ERR_LEN]);
void fl_wire_join_response_free(fl_wire_join_response *m);

int fl_wire_pack_poll(uint8_t **out, size_t *len, const fl_wire_poll *m, char err[FL_ERR_LEN]);
int fl_wire_unpack_poll(fl_wire_poll *m, const uint8_t *buf, size_t len,
                        const fl_wire_expect *expect, char err[FL_ERR_LEN]);
void fl_wire_poll_free(fl_wire_poll *m);

int fl_wire_pack_task(uint8_t **out, size_t *len, const fl_wire_task *m, char err[FL_ERR_LEN]);
int fl_wire_unpack_task(fl_wire_task *m, const uint8_t *buf, size_t len,
                        const fl_wire_expect *expect, char err[FL_ERR_LEN]);
void fl_wire_task_free(fl_wire_task *m);

int fl_wire_pack_fetch(uint8_t **out, size_t *len, const fl_wire_fetch *m, char err[FL_ERR_LEN]);
int fl_wire_unpack_fetch(fl_wire_fetch *m, const uint8_t *buf, size_t len,
                         const fl_wire_expect *expect, char err[FL_ERR_LEN]);
void fl_wire_fetch_free(fl_wire_fetch *m);

int fl_wire_pack_chunk(uint8_t **out, size_t *len, const fl_wire_chunk *m, char err[FL_ERR_LEN]);
int fl_wire_unpack_chunk(fl_wire_chunk *m, const uint8_t *buf, size_t len,
                         const fl_wire_expect *expect, char err[FL_ERR_LEN]);
void fl_wire_chunk_free(fl_wire_chunk *m);

int fl_wire_pack_submit(uint8_t **out, size_t *len, const fl_wire_submit *m, char err[FL_ERR_LEN]);
int fl_wire_unpack_submit(fl_wire_submit *m, const uint8_t *buf, size_t len,
                          const fl_wire_expect *expect, char err[FL_ERR_LEN]);
void fl_wire_submit_free(fl_wire_submit *m);

int fl_wire_pack_submit_response(uint8_t **out, size_t *len, const fl_wire_submit_response *m,
                                 char err[FL_ERR_LEN]);
int fl_wire_unpack_submit_response(fl_wire_submit_response *m, const uint8_t *buf, size_t len,
                                   const fl_wire_expect *expect, char err[FL_ERR_LEN]);
void fl_wire_submit_response_free(fl_wire_submit_response *m);

#endif
