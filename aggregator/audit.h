/* audit.h: the tamper-evident audit log's encodings and its verifier
 * (DESIGN.md §11; docs/audit.md has the format and what it can and cannot
 * detect). aggregator/store.c writes the chain with the encodings below;
 * `cohort verify` and `cohort report` check a database with fl_audit_verify.
 *
 * Every encoding is a sequence of self-delimiting fields, so two different
 * tuples never encode to the same bytes:
 *   text   0x01, length as 8-byte big-endian, the bytes (a NULL text: 0x00)
 *   int    8-byte big-endian two's complement
 *   hash   the 32 bytes
 * and each starts with a context label (a text field), so a hash or a
 * signature made for one purpose is never valid for another. */
#ifndef FL_AUDIT_H
#define FL_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define FL_AUDIT_GENESIS_LABEL "cohort/audit-genesis/v1"
#define FL_AUDIT_EVENT_LABEL "cohort/event/v1"
#define FL_AUDIT_MODEL_LABEL "cohort/model/v1"
#define FL_AUDIT_HEAD_LABEL "cohort/chain-head/v1"

/* The chain's starting value: SHA-256(text label, text federation_id). A
 * store not bound to a federation uses "". */
void fl_audit_genesis(uint8_t out[32], const char *federation_id);

/* One event row's hash: SHA-256(text label, int id, text at, text kind,
 * text site, int round, text detail, hash prev). site and detail may be
 * NULL (encoded apart from ""); lengths are explicit so text may come
 * straight from SQLite. */
void fl_audit_event_hash(uint8_t out[32], int64_t id, const char *at, size_t at_len,
                         const char *kind, size_t kind_len, const char *site, size_t site_len,
                         int64_t round, const char *detail, size_t detail_len,
                         const uint8_t prev[32]);

/* The messages the aggregator signs (ECDSA P-256, crypto/pki.h).
 *   model:      text label, text federation_id, int round, hash model SHA-256
 *   chain head: text label, text federation_id, int event_id, hash head
 * Each writes *len bytes into msg (malloc'd, caller frees); FL_ENOMEM. */
int fl_audit_model_message(uint8_t **msg, size_t *len, const char *federation_id, int64_t round,
                           const uint8_t sha256[32]);
int fl_audit_head_message(uint8_t **msg, size_t *len, const char *federation_id, int64_t event_id,
                          const uint8_t head[32]);

typedef struct fl_audit_report {
    int ok;                  /* 1: chain and all signatures verify */
    int64_t n_events;        /* event rows checked */
    int64_t n_signatures;    /* model and chain-head signatures checked */
    int64_t first_bad_id;    /* id of the first bad row, or -1 */
    char table[32];          /* table of the first bad row: "events" | "models" | "chain_heads"
                              * ("meta": the certificate or the configuration) */
    char reason[FL_ERR_LEN]; /* what is wrong with it */
    char head[65];           /* hex SHA-256 of the last event row */
} fl_audit_report;

/* Flags for fl_audit_verify_ex. */
#define FL_AUDIT_ALLOW_UNSIGNED 1 /* unsigned models (no signer configured) are not a failure */

/* Checks the audit log of the aggregator database at db_path, opened
 * read-only: every event row's id follows the previous one, its prev_hash is
 * the previous row's hash (the genesis for the first) and its hash matches
 * its contents; every chain head names an existing event, equals the
 * recomputed chain there and carries a valid signature; every model's blob
 * matches its SHA-256 and its signature verifies, and every signed round has
 * a signed chain head. Signatures are checked against the certificate stored
 * in meta "aggregator_cert", which must carry role aggregator.
 *
 * Returns 0 when the check ran (result in out->ok; when 0, first_bad_id,
 * table and reason name the first bad row: events, then chain heads, then
 * models, in id/round order), FL_EIO / FL_EINVAL when path cannot be opened
 * read-only or is not a Cohort aggregator database. ca_path: optional CA
 * certificate; when given, the stored aggregator certificate must chain to it
 * (fl_pki_verify_cert: also within its validity period) and have role
 * aggregator. A model without a signature fails the check (a log nobody
 * signed proves nothing about who wrote it); fl_audit_verify_ex with
 * FL_AUDIT_ALLOW_UNSIGNED accepts it. */
int fl_audit_verify(fl_audit_report *out, const char *db_path, const char *ca_path,
                    char err[FL_ERR_LEN]);
int fl_audit_verify_ex(fl_audit_report *out, const char *db_path, const char *ca_path, int flags,
                       char err[FL_ERR_LEN]);

#endif
