/* store.h: the aggregator's durable state in one SQLite file (WAL mode,
 * synchronous=FULL), DESIGN.md §6. Everything that must survive a crash lives
 * here: the federation's identity and configuration, the sites that joined,
 * each committed round with its global model (blob + SHA-256), its metrics,
 * who took part and why others did not, the server optimiser's state, and the
 * audit events. A round is committed in one transaction, so after a SIGKILL
 * the store holds either the whole round or none of it; a restart resumes
 * from fl_store_last_round.
 *
 * The audit events are a hash chain (DESIGN.md §11, docs/audit.md): each row
 * stores the previous row's hash and the SHA-256 of its own canonical
 * encoding, starting from a genesis value bound to the federation id; triggers
 * refuse UPDATE and DELETE on them. Once a signer is set, each commit signs
 * the model and the current chain head with the aggregator's key;
 * aggregator/audit.h checks all of it. */
#ifndef FL_STORE_H
#define FL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

struct fl_signer; /* crypto/pki.h */

typedef struct fl_store fl_store;

/* A site's part in one round. */
typedef struct fl_participation {
    int site;
    const char *status; /* "completed" | "dropped" | "refused" | "rejected" */
    const char *reason; /* NULL or a short reason */
    int64_t n_examples;
    double epsilon; /* privacy spent this round as reported by the site; NAN if none */
} fl_participation;

typedef struct fl_metric {
    const char *name;
    double value;
} fl_metric;

/* Everything one round commits. Borrowed pointers. */
typedef struct fl_round_record {
    int round;
    uint64_t seed;
    const uint8_t *model; /* serialised model (core/model.h format) */
    size_t model_len;
    const uint8_t *signature; /* ignored: the store signs (fl_store_set_signer) */
    size_t signature_len;
    const fl_metric *metrics;
    int n_metrics;
    const fl_participation *parts;
    int n_parts;
    const uint8_t *strategy_state; /* opaque, NULL if none */
    size_t strategy_state_len;
    /* The round's summed fairness counts (core/fairness.h layout) and the
     * audit computed from them; stored when fairness_json is not NULL. The
     * counts are kept as n_fairness little-endian uint64 words. */
    const uint64_t *fairness_counts;
    size_t n_fairness;
    const char *fairness_json;
} fl_round_record;

/* Opens (creating when absent) the store at path. Caller owns *out. A store
 * whose events table predates the hash chain is migrated when it holds no
 * events and refused (FL_ESTATE, naming the file) when it does. */
int fl_store_open(fl_store **out, const char *path, char err[FL_ERR_LEN]);
void fl_store_close(fl_store *st);

/* Binds the store to a federation (meta "federation_id"): the audit chain's
 * genesis and every signature name it. The first call records it; a later
 * call with another id is FL_ESTATE (this database belongs to another
 * federation), as is a first call after events were chained without one. */
int fl_store_set_federation(fl_store *st, const char *federation_id, char err[FL_ERR_LEN]);

/* From now on, fl_store_commit_round signs the model and the audit chain's
 * head with signer (borrowed: it must outlive the store or the next call).
 * cert_pem (cert_len bytes) is the signer's certificate, stored as meta
 * "aggregator_cert" for verifiers; a different certificate replaces it only
 * while no model has been signed (FL_ESTATE otherwise: the old signatures
 * would no longer verify). FL_ECRYPTO when the key does not match the
 * certificate. */
int fl_store_set_signer(fl_store *st, const struct fl_signer *signer, const char *cert_pem,
                        size_t cert_len, char err[FL_ERR_LEN]);

/* Records the configuration file's text (meta "config", "config_sha256"):
 * a "config" event with its SHA-256 the first time, a "config_change" event
 * naming the old and new SHA-256 when it differs from the recorded one,
 * nothing when it is the same. */
int fl_store_record_config(fl_store *st, const char *text, size_t len, char err[FL_ERR_LEN]);

/* Signs the current chain head now (a chain_heads row tagged with round),
 * so events after the last commit are covered too, e.g. at shutdown. Does
 * nothing without a signer or when the head is signed already. */
int fl_store_checkpoint(fl_store *st, int round, char err[FL_ERR_LEN]);

/* Key/value metadata (federation id, config text, schema hash, ...).
 * get: *value malloc'd (caller frees) or NULL when absent. Changing a
 * recorded "federation_id" is refused as in fl_store_set_federation. */
int fl_store_meta_set(fl_store *st, const char *key, const char *value, char err[FL_ERR_LEN]);
int fl_store_meta_get(fl_store *st, const char *key, char **value, char err[FL_ERR_LEN]);

/* Records that a site joined (or re-joined): name from its certificate. */
int fl_store_site_join(fl_store *st, int site, const char *name, int64_t n_examples,
                       char err[FL_ERR_LEN]);

/* The last committed round (0 = only the initial model; -1 = empty store). */
int fl_store_last_round(fl_store *st, int *round, char err[FL_ERR_LEN]);

/* The model committed at round (*blob malloc'd; sha256 filled). FL_EINVAL if absent. */
int fl_store_load_model(fl_store *st, int round, uint8_t **blob, size_t *len, uint8_t sha256[32],
                        char err[FL_ERR_LEN]);
/* The strategy state saved with round (*blob malloc'd, NULL/0 when none). */
int fl_store_load_strategy(fl_store *st, int round, uint8_t **blob, size_t *len,
                           char err[FL_ERR_LEN]);

/* Commits a round atomically (model, SHA-256, metrics, participation,
 * strategy state, fairness, round row; with a signer, the model's signature
 * and a signed chain head). Committing a round twice is FL_ESTATE. */
int fl_store_commit_round(fl_store *st, const fl_round_record *rec, char err[FL_ERR_LEN]);

/* Appends an audit event (kind e.g. "join", "refuse", "stage", "dropout",
 * "commit"); site may be NULL, round 0 when not round-specific. The row is
 * chained to the previous one (docs/audit.md). */
int fl_store_event(fl_store *st, const char *kind, const char *site, int round, const char *detail,
                   char err[FL_ERR_LEN]);

/* The metric of a committed round, or NAN. */
double fl_store_metric(fl_store *st, int round, const char *name);

/* The underlying handle, for read-only reporting code. */
struct sqlite3 *fl_store_db(fl_store *st);

#endif
