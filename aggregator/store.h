/* store.h: the aggregator's durable state in one SQLite file (WAL mode,
 * synchronous=FULL), DESIGN.md §6. Everything that must survive a crash lives
 * here: the federation's identity and configuration, the sites that joined,
 * each committed round with its global model (blob + SHA-256), its metrics,
 * who took part and why others did not, the server optimiser's state, and the
 * audit events. A round is committed in one transaction, so after a SIGKILL
 * the store holds either the whole round or none of it; a restart resumes
 * from fl_store_last_round. */
#ifndef FL_STORE_H
#define FL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

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
    const uint8_t *signature; /* NULL until models are signed */
    size_t signature_len;
    const fl_metric *metrics;
    int n_metrics;
    const fl_participation *parts;
    int n_parts;
    const uint8_t *strategy_state; /* opaque, NULL if none */
    size_t strategy_state_len;
} fl_round_record;

/* Opens (creating when absent) the store at path. Caller owns *out. */
int fl_store_open(fl_store **out, const char *path, char err[FL_ERR_LEN]);
void fl_store_close(fl_store *st);

/* Key/value metadata (federation id, config text, schema hash, ...).
 * get: *value malloc'd (caller frees) or NULL when absent. */
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
 * strategy state, round row). Committing a round twice is FL_ESTATE. */
int fl_store_commit_round(fl_store *st, const fl_round_record *rec, char err[FL_ERR_LEN]);

/* Appends an audit event (kind e.g. "join", "refuse", "stage", "dropout",
 * "commit"); site may be NULL, round 0 when not round-specific. */
int fl_store_event(fl_store *st, const char *kind, const char *site, int round, const char *detail,
                   char err[FL_ERR_LEN]);

/* The metric of a committed round, or NAN. */
double fl_store_metric(fl_store *st, int round, const char *name);

/* The underlying handle, for read-only reporting code. */
struct sqlite3 *fl_store_db(fl_store *st);

#endif
