/* audit.c: see audit.h. The encodings the store writes the audit chain with,
 * and the verifier behind `cohort verify` and the report's verification
 * section (DESIGN.md §11, docs/audit.md). The verifier only reads: it opens
 * the database read-only and trusts nothing in it but the certificate it
 * checks against the CA when one is given. */
#include "aggregator/audit.h"

#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/pki.h"

/* ============================ Encodings ================================= */

static void put_u64(uint8_t b[8], uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        b[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void hash_int(crypto_hash_sha256_state *h, int64_t v) {
    uint8_t b[8];
    put_u64(b, (uint64_t)v);
    crypto_hash_sha256_update(h, b, 8);
}

/* A NULL text and "" differ: the presence byte comes before the length. */
static void hash_text(crypto_hash_sha256_state *h, const char *p, size_t n) {
    uint8_t tag = p ? 1 : 0;
    crypto_hash_sha256_update(h, &tag, 1);
    if (!p) return;
    hash_int(h, (int64_t)n);
    crypto_hash_sha256_update(h, (const uint8_t *)p, n);
}

static void hash_label(crypto_hash_sha256_state *h, const char *label) {
    hash_text(h, label, strlen(label));
}

void fl_audit_genesis(uint8_t out[32], const char *federation_id) {
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    hash_label(&h, FL_AUDIT_GENESIS_LABEL);
    hash_text(&h, federation_id ? federation_id : "", federation_id ? strlen(federation_id) : 0);
    crypto_hash_sha256_final(&h, out);
}

void fl_audit_event_hash(uint8_t out[32], int64_t id, const char *at, size_t at_len,
                         const char *kind, size_t kind_len, const char *site, size_t site_len,
                         int64_t round, const char *detail, size_t detail_len,
                         const uint8_t prev[32]) {
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    hash_label(&h, FL_AUDIT_EVENT_LABEL);
    hash_int(&h, id);
    hash_text(&h, at, at_len);
    hash_text(&h, kind, kind_len);
    hash_text(&h, site, site_len);
    hash_int(&h, round);
    hash_text(&h, detail, detail_len);
    crypto_hash_sha256_update(&h, prev, 32);
    crypto_hash_sha256_final(&h, out);
}

/* label, federation id, one integer, one hash: both signed messages. */
static int message(uint8_t **msg, size_t *len, const char *label, const char *federation_id,
                   int64_t v, const uint8_t hash[32]) {
    const char *fed = federation_id ? federation_id : "";
    size_t ll = strlen(label), fl = strlen(fed);
    size_t n = (1 + 8 + ll) + (1 + 8 + fl) + 8 + 32;
    uint8_t *p = malloc(n);
    *msg = p;
    *len = 0;
    if (!p) return FL_ENOMEM;
    *p++ = 1;
    put_u64(p, ll);
    p += 8;
    memcpy(p, label, ll);
    p += ll;
    *p++ = 1;
    put_u64(p, fl);
    p += 8;
    memcpy(p, fed, fl);
    p += fl;
    put_u64(p, (uint64_t)v);
    p += 8;
    memcpy(p, hash, 32);
    *len = n;
    return FL_OK;
}

int fl_audit_model_message(uint8_t **msg, size_t *len, const char *federation_id, int64_t round,
                           const uint8_t sha256[32]) {
    return message(msg, len, FL_AUDIT_MODEL_LABEL, federation_id, round, sha256);
}

int fl_audit_head_message(uint8_t **msg, size_t *len, const char *federation_id, int64_t event_id,
                          const uint8_t head[32]) {
    return message(msg, len, FL_AUDIT_HEAD_LABEL, federation_id, event_id, head);
}
