/* wire.c: packing, unpacking and validation of the wire protocol's messages
 * (proto/wire.h; rules and limits in docs/protocol.md, DESIGN.md §5). This is
 * the only file that includes the protobuf-c generated header: everything
 * past it sees the plain structs of wire.h, already checked.
 *
 * Unpacking runs in three steps. protobuf-c decodes the bytes (it rejects
 * broken encodings, and its allocations are bounded by the input, which is
 * itself bounded by FL_WIRE_MAX_MESSAGE_BYTES). The decoded message is copied
 * into the plain struct; this step checks only what the struct cannot
 * represent (a hash of the wrong size, a string too long for its array,
 * parallel arrays of different lengths). Then one validator per struct
 * checks everything else, and the expect fields. Packing runs the same
 * validator on the caller's struct first, so both sides apply one rule set;
 * the only difference is the code (FL_EPROTO for what a peer sent,
 * FL_EINVAL for what our own caller built). The header fields (federation
 * id, round, step, stage, kind) are copied and checked before the payload,
 * so a stale or misdirected message is refused as such whatever it carries.
 *
 * Unknown fields are ignored (forward compatibility). protobuf-c hands
 * strings over NUL-terminated, so text after an embedded NUL is never seen by
 * anyone; the visible part is checked like any other string. */
#include "wire.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cohort.pb-c.h"

/* The plain enums travel as the proto enums' integers. */
_Static_assert((int)FL_WIRE_TASK_DONE == (int)COHORT__V1__TASK_KIND__TASK_DONE, "task kinds");
_Static_assert((int)FL_WIRE_TASK_MASKED_INPUT == (int)COHORT__V1__TASK_KIND__TASK_MASKED_INPUT,
               "task kinds");
_Static_assert((int)FL_WIRE_STAGE_COMMIT == (int)COHORT__V1__STAGE__STAGE_COMMIT, "stages");
_Static_assert((int)FL_WIRE_STAGE_MASKED_INPUT == (int)COHORT__V1__STAGE__STAGE_MASKED_INPUT,
               "stages");
_Static_assert((int)FL_WIRE_PRIVACY_SITE == (int)COHORT__V1__PRIVACY_MODE__PRIVACY_SITE,
               "privacy modes");
_Static_assert((int)FL_WIRE_OPT_ADAM == (int)COHORT__V1__OPTIMIZER__OPTIMIZER_ADAM, "optimizers");
/* Limits that depend on each other. */
_Static_assert(1ull * FL_WIRE_MAX_CHUNKS * FL_WIRE_CHUNK_VALUES >= FL_WIRE_MAX_PARAMS,
               "a maximal update fits in FL_WIRE_MAX_CHUNKS chunks");
_Static_assert(FL_WIRE_MAX_MESSAGE_BYTES >= FL_WIRE_CHUNK_BYTES + 4096,
               "a full chunk and its header fit in one message");
_Static_assert(FL_WIRE_REASON_LEN <= FL_ERR_LEN, "a reason fits in an error buffer");

#define PATH_LEN 160

/* ============================ names ============================ */

const char *fl_wire_task_kind_name(int kind) {
    static const char *const n[] = {"NONE",         "STATS",          "TRAIN",
                                    "EVALUATE",     "ADVERTISE_KEYS", "SHARE_KEYS",
                                    "MASKED_INPUT", "UNMASK",         "DONE"};
    _Static_assert(sizeof n / sizeof *n == FL_WIRE_TASK_COUNT, "a name per task kind");
    return kind >= 0 && kind < FL_WIRE_TASK_COUNT ? n[kind] : "?";
}

const char *fl_wire_stage_name(int stage) {
    static const char *const n[] = {"NONE",           "SELECT",     "STATS",        "TRAIN",
                                    "ADVERTISE_KEYS", "SHARE_KEYS", "MASKED_INPUT", "UNMASK",
                                    "AGGREGATE",      "EVALUATE",   "COMMIT"};
    _Static_assert(sizeof n / sizeof *n == FL_WIRE_STAGE_COUNT, "a name per stage");
    return stage >= 0 && stage < FL_WIRE_STAGE_COUNT ? n[stage] : "?";
}

const char *fl_wire_privacy_mode_name(int mode) {
    static const char *const n[] = {"UNSPECIFIED", "NONE", "RECORD", "SITE"};
    _Static_assert(sizeof n / sizeof *n == FL_WIRE_PRIVACY_COUNT, "a name per mode");
    return mode >= 0 && mode < FL_WIRE_PRIVACY_COUNT ? n[mode] : "?";
}

static const char *optimizer_name(int opt) {
    static const char *const n[] = {"UNSPECIFIED", "SGD", "ADAM"};
    _Static_assert(sizeof n / sizeof *n == FL_WIRE_OPT_COUNT, "a name per optimizer");
    return opt >= 0 && opt < FL_WIRE_OPT_COUNT ? n[opt] : "?";
}

static const char *result_name(int r) {
    static const char *const n[] = {"none", "stats", "train", "eval", "keys", "shares", "unmask"};
    _Static_assert(sizeof n / sizeof *n == FL_WIRE_RESULT_COUNT, "a name per result");
    return r >= 0 && r < FL_WIRE_RESULT_COUNT ? n[r] : "?";
}

fl_wire_stage fl_wire_task_stage(fl_wire_task_kind kind) {
    switch (kind) {
    case FL_WIRE_TASK_STATS:
        return FL_WIRE_STAGE_STATS;
    case FL_WIRE_TASK_TRAIN:
        return FL_WIRE_STAGE_TRAIN;
    case FL_WIRE_TASK_EVALUATE:
        return FL_WIRE_STAGE_EVALUATE;
    case FL_WIRE_TASK_ADVERTISE_KEYS:
        return FL_WIRE_STAGE_ADVERTISE_KEYS;
    case FL_WIRE_TASK_SHARE_KEYS:
        return FL_WIRE_STAGE_SHARE_KEYS;
    case FL_WIRE_TASK_MASKED_INPUT:
        return FL_WIRE_STAGE_MASKED_INPUT;
    case FL_WIRE_TASK_UNMASK:
        return FL_WIRE_STAGE_UNMASK;
    default:
        return FL_WIRE_STAGE_NONE;
    }
}

/* ===================== errors and field paths ===================== */

/* Where a failure is reported, and with which code: FL_EPROTO for what a
 * peer sent, FL_EINVAL for what our own caller asked us to pack. */
typedef struct vctx {
    char *err;
    int code;
} vctx;

__attribute__((format(printf, 2, 3))) static int bad(vctx *v, const char *fmt, ...) {
    if (v->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->err, FL_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return v->code;
}

static int nomem(vctx *v, const char *path) {
    if (v->err) snprintf(v->err, FL_ERR_LEN, "%s: out of memory", path);
    return FL_ENOMEM;
}

/* path + suffix into buf, for messages about nested fields. */
__attribute__((format(printf, 3, 4))) static const char *sub(char buf[PATH_LEN], const char *path,
                                                             const char *fmt, ...) {
    size_t n = (size_t)snprintf(buf, PATH_LEN, "%s", path);
    if (n < PATH_LEN) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf + n, PATH_LEN - n, fmt, ap);
        va_end(ap);
    }
    return buf;
}

/* ========================= scalar checks ========================= */

static int want_u64(vctx *v, const char *path, uint64_t x, uint64_t lo, uint64_t hi) {
    if (x >= lo && x <= hi) return 0;
    return bad(v, "%s: %" PRIu64 ", expected %" PRIu64 "..%" PRIu64, path, x, lo, hi);
}

/* x finite and within the bounds; lo_open / hi_open exclude the bound itself,
 * hi = INFINITY means no upper bound. */
static int want_real(vctx *v, const char *path, double x, double lo, bool lo_open, double hi,
                     bool hi_open) {
    if (!isfinite(x)) return bad(v, "%s: not finite", path);
    if ((lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi)) return 0;
    if (isinf(hi)) return bad(v, "%s: %g, expected %s %g", path, x, lo_open ? ">" : ">=", lo);
    return bad(v, "%s: %g, expected in %c%g, %g%c", path, x, lo_open ? '(' : '[', lo, hi,
               hi_open ? ')' : ']');
}

static int want_enum(vctx *v, const char *path, int x, int count, bool zero_ok,
                     const char *(*name)(int)) {
    if (x < 0 || x >= count) return bad(v, "%s: %d, out of range (0..%d)", path, x, count - 1);
    if (x == 0 && !zero_ok) return bad(v, "%s: %s (0), not allowed", path, name(x));
    return 0;
}

/* ========================= string checks ========================= */

/* Length of s if it is NUL-terminated within cap bytes (a struct built for
 * packing might not be), else an error. */
static int want_terminated(vctx *v, const char *path, const char *s, size_t cap, size_t *n) {
    *n = strnlen(s, cap);
    if (*n == cap) return bad(v, "%s: not NUL-terminated within %zu bytes", path, cap);
    return 0;
}

/* Index of the first byte that is not well-formed UTF-8 text, or n. Rejects
 * overlong forms, surrogates, values above U+10FFFF and control characters
 * (C0, DEL, C1): this text ends up in logs, reports and the console. */
static size_t utf8_text_end(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], cp, min;
        size_t k;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) return i;
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (n - i <= k) return i;
        for (size_t j = 1; j <= k; j++) {
            unsigned d = s[i + j];
            if ((d & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (d & 0x3f);
        }
        if (cp < min || cp < 0xa0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += k + 1;
    }
    return n;
}

/* UTF-8 text (see utf8_text_end) in an array of cap bytes. */
static int want_text(vctx *v, const char *path, const char *s, size_t cap, bool nonempty) {
    size_t n;
    int rc = want_terminated(v, path, s, cap, &n);
    if (rc) return rc;
    if (nonempty && !n) return bad(v, "%s: empty", path);
    size_t at = utf8_text_end((const unsigned char *)s, n);
    if (at != n) return bad(v, "%s: not UTF-8 text (byte %zu)", path, at);
    return 0;
}

/* Printable ASCII only (version strings, accountant names). */
static int want_ascii(vctx *v, const char *path, const char *s, size_t cap) {
    size_t n;
    int rc = want_terminated(v, path, s, cap, &n);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return bad(v, "%s: byte %zu is not printable ASCII", path, i);
    return 0;
}

/* 1..cap-1 bytes, each in the allowed set: identifiers that end up in file
 * names, SQL rows and log lines stay plain. */
static int want_charset(vctx *v, const char *path, const char *s, size_t cap, const char *set) {
    size_t n;
    int rc = want_terminated(v, path, s, cap, &n);
    if (rc) return rc;
    if (!n) return bad(v, "%s: empty", path);
    for (size_t i = 0; i < n; i++)
        if (!strchr(set, s[i]))
            return bad(v, "%s: byte %zu ('%c') not allowed (expected one of %s)", path, i,
                       (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?', set);
    return 0;
}

#define ID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
#define SPEC_CHARS "abcdefghijklmnopqrstuvwxyz0123456789:,"

/* The federation id's syntax, then the expected value. */
static int want_fed(vctx *v, const char *msg, const char *fed, const fl_wire_expect *ex) {
    char p[PATH_LEN];
    int rc = want_charset(v, sub(p, msg, ".federation_id"), fed, FL_WIRE_ID_LEN, ID_CHARS);
    if (rc) return rc;
    if (ex && ex->federation_id && strcmp(fed, ex->federation_id))
        return bad(v, "%s: '%s', expected '%.64s'", p, fed, ex->federation_id);
    return 0;
}

/* ====================== ids, lists, uniqueness ====================== */

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* ids[0..n) are site ids (>= 1) without repeats. sorted, if not NULL, gets a
 * malloc'd sorted copy (caller frees) for a later disjointness check. */
static int want_ids(vctx *v, const char *path, const uint32_t *ids, uint32_t n, uint32_t **sorted) {
    uint32_t *s = NULL;
    int rc = 0;
    if (n > FL_WIRE_MAX_SITES)
        return bad(v, "%s: %" PRIu32 " sites, limit %d", path, n, FL_WIRE_MAX_SITES);
    if (n && !ids) return bad(v, "%s: missing array of %" PRIu32 " ids", path, n);
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == 0) return bad(v, "%s[%" PRIu32 "]: site id 0 (ids start at 1)", path, i);
    if (n) {
        s = malloc((size_t)n * sizeof *s);
        if (!s) return nomem(v, path);
        memcpy(s, ids, (size_t)n * sizeof *s);
        qsort(s, n, sizeof *s, cmp_u32);
        for (uint32_t i = 1; i < n; i++)
            if (s[i] == s[i - 1]) {
                rc = bad(v, "%s: site %" PRIu32 " appears twice", path, s[i]);
                goto cleanup;
            }
    }
    if (sorted) {
        *sorted = s;
        s = NULL;
    }
cleanup:
    free(s);
    return rc;
}

/* The first id in both sorted lists, or 0. */
static uint32_t common_id(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb) {
    uint32_t i = 0, j = 0;
    while (i < na && j < nb) {
        if (a[i] == b[j]) return a[i];
        if (a[i] < b[j])
            i++;
        else
            j++;
    }
    return 0;
}

/* A share list: peers valid and unique, each share 1..FL_WIRE_MAX_SHARE_BYTES.
 * sorted: as in want_ids. */
static int want_shares(vctx *v, const char *path, const fl_wire_share *sh, uint32_t n,
                       uint32_t **sorted) {
    char p[PATH_LEN];
    uint32_t *peers = NULL;
    int rc = 0;
    if (n > FL_WIRE_MAX_SITES)
        return bad(v, "%s: %" PRIu32 " shares, limit %d", path, n, FL_WIRE_MAX_SITES);
    if (n && !sh) return bad(v, "%s: missing array of %" PRIu32 " shares", path, n);
    for (uint32_t i = 0; i < n; i++) {
        if (sh[i].len < 1 || sh[i].len > FL_WIRE_MAX_SHARE_BYTES)
            return bad(v, "%s: %" PRIu32 " bytes, expected 1..%d",
                       sub(p, path, "[%" PRIu32 "].data", i), sh[i].len, FL_WIRE_MAX_SHARE_BYTES);
    }
    if (n) {
        peers = malloc((size_t)n * sizeof *peers);
        if (!peers) return nomem(v, path);
        for (uint32_t i = 0; i < n; i++)
            peers[i] = sh[i].peer;
        if ((rc = want_ids(v, sub(p, path, ".peer"), peers, n, sorted))) goto cleanup;
    } else if (sorted) {
        *sorted = NULL;
    }
cleanup:
    free(peers);
    return rc;
}

/* ========================= struct validators ========================= */

static int check_privacy(vctx *v, const char *path, const fl_wire_privacy *p) {
    char q[PATH_LEN];
    int rc;
    if ((rc = want_enum(v, sub(q, path, ".mode"), (int)p->mode, FL_WIRE_PRIVACY_COUNT, false,
                        fl_wire_privacy_mode_name)))
        return rc;
    bool on = p->mode != FL_WIRE_PRIVACY_NONE;
    if ((rc = want_real(v, sub(q, path, ".noise_multiplier"), p->noise_multiplier, 0, on, INFINITY,
                        false)))
        return rc;
    if ((rc = want_real(v, sub(q, path, ".clip"), p->clip, 0, on, INFINITY, false))) return rc;
    if ((rc = want_real(v, sub(q, path, ".delta"), p->delta, 0, on, 1, true))) return rc;
    return want_real(v, sub(q, path, ".max_epsilon"), p->max_epsilon, 0, false, INFINITY, false);
}

static int check_secagg(vctx *v, const char *path, const fl_wire_secagg_config *s) {
    char q[PATH_LEN];
    int rc;
    if ((rc = want_real(v, sub(q, path, ".threshold"), s->threshold, 0, s->enabled, 1, false)))
        return rc;
    if ((rc = want_u64(v, sub(q, path, ".neighbors"), s->neighbors, 0, FL_WIRE_MAX_SITES)))
        return rc;
    if ((rc = want_real(v, sub(q, path, ".clip_range"), s->clip_range, 0, s->enabled, INFINITY,
                        false)))
        return rc;
    if (s->enabled && s->quantization_range < 1)
        return bad(v, "%s: 0, expected >= 1", sub(q, path, ".quantization_range"));
    if ((rc = want_ids(v, sub(q, path, ".participants"), s->participants, s->n_participants, NULL)))
        return rc;
    if (s->threshold_count > s->n_participants)
        return bad(v, "%s: %" PRIu32 ", expected <= %" PRIu32 " (the participants)",
                   sub(q, path, ".threshold_count"), s->threshold_count, s->n_participants);
    if ((rc = want_u64(v, sub(q, path, ".vector_words"), s->vector_words, 0,
                       4ull * FL_WIRE_MAX_PARAMS)))
        return rc;
    return want_real(v, sub(q, path, ".weight"), s->weight, 0, false, 1e12, false);
}

static int check_model_ref(vctx *v, const char *path, const fl_wire_model_ref *m,
                           const fl_wire_expect *ex) {
    char q[PATH_LEN];
    int rc;
    if ((rc = want_u64(v, sub(q, path, ".n_params"), m->n_params, 1, FL_WIRE_MAX_PARAMS)))
        return rc;
    if (ex && ex->n_params && m->n_params != ex->n_params)
        return bad(v, "%s: %" PRIu64 ", expected %" PRIu64, q, m->n_params, ex->n_params);
    if ((rc =
             want_u64(v, sub(q, path, ".total_bytes"), m->total_bytes, 1, FL_WIRE_MAX_MODEL_BYTES)))
        return rc;
    /* A model blob holds every parameter as a float32 (core/model.h). */
    if (m->total_bytes < 4 * m->n_params)
        return bad(v, "%s: %" PRIu64 ", less than 4 bytes for each of %" PRIu64 " parameters", q,
                   m->total_bytes, m->n_params);
    return 0;
}

/* Statistics, plain or masked (see fl_wire_stats). */
static int check_stats(vctx *v, const char *path, const fl_wire_stats *s, bool masked,
                       const fl_wire_expect *ex) {
    char q[PATH_LEN];
    int rc;
    if ((rc = want_u64(v, sub(q, path, ".n_rows"), s->n_rows, 0, FL_WIRE_MAX_EXAMPLES))) return rc;
    if (masked) {
        if (s->n_cols || s->n_levels)
            return bad(v, "%s: plain statistics in a masked result", sub(q, path, ".count"));
        if ((rc = want_u64(v, sub(q, path, ".masked"), s->n_masked, 1, FL_WIRE_MAX_VECTOR_VALUES)))
            return rc;
        if (ex && ex->n_masked && s->n_masked != ex->n_masked)
            return bad(v, "%s: %" PRIu64 " values, expected %" PRIu64, q, s->n_masked,
                       ex->n_masked);
        if (!s->masked) return bad(v, "%s: missing array", q);
        return 0;
    }
    if (s->n_masked)
        return bad(v, "%s: %" PRIu64 " values in a plain result", sub(q, path, ".masked"),
                   s->n_masked);
    if ((rc = want_u64(v, sub(q, path, ".count"), s->n_cols, 1, FL_WIRE_MAX_COLUMNS))) return rc;
    if (ex && ex->n_cols && s->n_cols != ex->n_cols)
        return bad(v, "%s: %" PRIu32 " columns, expected %" PRIu32, q, s->n_cols, ex->n_cols);
    if (!s->count || !s->sum || !s->sumsq || !s->level_offsets)
        return bad(v, "%s: missing arrays for %" PRIu32 " columns", path, s->n_cols);
    if (s->n_levels > FL_WIRE_MAX_LEVELS)
        return bad(v, "%s: %" PRIu32 " values, limit %u", sub(q, path, ".level_counts"),
                   s->n_levels, FL_WIRE_MAX_LEVELS);
    if (s->n_levels && !s->level_counts)
        return bad(v, "%s: missing array of %" PRIu32 " values", q, s->n_levels);
    if (s->level_offsets[0] != 0)
        return bad(v, "%s: %" PRIu32 ", expected 0", sub(q, path, ".level_offsets[0]"),
                   s->level_offsets[0]);
    if (s->level_offsets[s->n_cols] != s->n_levels)
        return bad(v, "%s: %" PRIu32 ", expected %" PRIu32 " (the number of level counts)",
                   sub(q, path, ".level_offsets[%" PRIu32 "]", s->n_cols),
                   s->level_offsets[s->n_cols], s->n_levels);
    /* All offsets first: with them non-decreasing and ending at n_levels,
     * every column's range lies inside level_counts. */
    for (uint32_t c = 0; c < s->n_cols; c++) {
        uint32_t a = s->level_offsets[c], b = s->level_offsets[c + 1];
        if (b < a)
            return bad(v, "%s: %" PRIu32 ", less than the previous offset %" PRIu32,
                       sub(q, path, ".level_offsets[%" PRIu32 "]", c + 1), b, a);
        if (ex && ex->level_offsets && ex->n_cols && ex->level_offsets[c + 1] != b)
            return bad(v, "%s: %" PRIu32 ", expected %" PRIu32,
                       sub(q, path, ".level_offsets[%" PRIu32 "]", c + 1), b,
                       ex->level_offsets[c + 1]);
    }
    for (uint32_t c = 0; c < s->n_cols; c++) {
        uint32_t a = s->level_offsets[c], b = s->level_offsets[c + 1];
        if (s->count[c] > s->n_rows)
            return bad(v, "%s: %" PRIu64 ", more than n_rows %" PRIu64,
                       sub(q, path, ".count[%" PRIu32 "]", c), s->count[c], s->n_rows);
        if (!isfinite(s->sum[c]))
            return bad(v, "%s: not finite", sub(q, path, ".sum[%" PRIu32 "]", c));
        if ((rc = want_real(v, sub(q, path, ".sumsq[%" PRIu32 "]", c), s->sumsq[c], 0, false,
                            INFINITY, false)))
            return rc;
        /* Each level count is at most n_rows, so the running sum cannot wrap
         * before it exceeds n_rows. */
        uint64_t total = 0;
        for (uint32_t l = a; l < b; l++) {
            total += s->level_counts[l];
            if (s->level_counts[l] > s->n_rows || total > s->n_rows)
                return bad(
                    v, "%s: level counts of column %" PRIu32 " add up to more than n_rows %" PRIu64,
                    sub(q, path, ".level_counts[%" PRIu32 "]", l), c, s->n_rows);
        }
    }
    return 0;
}

static int check_keys(vctx *v, const char *path, const fl_wire_public_keys *k) {
    char q[PATH_LEN];
    if (k->signature_len < 1 || k->signature_len > FL_WIRE_MAX_SIGNATURE_BYTES)
        return bad(v, "%s: %" PRIu32 " bytes, expected 1..%d", sub(q, path, ".signature"),
                   k->signature_len, FL_WIRE_MAX_SIGNATURE_BYTES);
    return 0;
}

/* ====================== allocation and copies ====================== */

/* A malloc'd copy of n elements of sz bytes (NULL for n = 0). */
static int dup_array(vctx *v, const char *path, void **dst, const void *src, size_t n, size_t sz) {
    *dst = NULL;
    if (!n) return 0;
    void *d = malloc(n * sz);
    if (!d) return nomem(v, path);
    memcpy(d, src, n * sz);
    *dst = d;
    return 0;
}

/* A decoded string into a fixed array: refused when it does not fit. */
static int str_in(vctx *v, const char *path, char *dst, size_t cap, const char *src) {
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) return bad(v, "%s: %zu bytes, limit %zu", path, n, cap - 1);
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
    return 0;
}

/* A decoded byte string of exactly n bytes. */
static int fixed_in(vctx *v, const char *path, uint8_t *dst, size_t n, ProtobufCBinaryData b) {
    if (b.len != n) return bad(v, "%s: %zu bytes, expected %zu", path, b.len, n);
    memcpy(dst, b.data, n);
    return 0;
}

/* An optional byte string: absent, or exactly n bytes. */
static int fixed_opt_in(vctx *v, const char *path, uint8_t *dst, size_t n, bool *has,
                        ProtobufCBinaryData b) {
    *has = b.len != 0;
    if (!b.len) return 0;
    if (b.len != n) return bad(v, "%s: %zu bytes, expected %zu or none", path, b.len, n);
    memcpy(dst, b.data, n);
    return 0;
}

/* A decoded byte string into an inline buffer of cap bytes. */
static int var_in(vctx *v, const char *path, uint8_t *dst, uint32_t *len, size_t cap,
                  ProtobufCBinaryData b) {
    if (b.len > cap) return bad(v, "%s: %zu bytes, limit %zu", path, b.len, cap);
    if (b.len) memcpy(dst, b.data, b.len);
    *len = (uint32_t)b.len;
    return 0;
}

static ProtobufCBinaryData bin(const void *p, size_t n) {
    ProtobufCBinaryData b = {n, (uint8_t *)p};
    return b;
}

/* Temporaries of one pack call (arrays of sub-messages and pointers), freed
 * together when the call ends. */
typedef struct pk_arena {
    void **blk;
    size_t n, cap;
} pk_arena;

/* n zeroed elements of sz bytes, or NULL when out of memory. */
static void *pk_alloc(pk_arena *a, size_t n, size_t sz) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? 2 * a->cap : 16;
        void **nb = realloc(a->blk, nc * sizeof *nb);
        if (!nb) return NULL;
        a->blk = nb;
        a->cap = nc;
    }
    void *p = calloc(n ? n : 1, sz);
    if (p) a->blk[a->n++] = p;
    return p;
}

static void pk_free(pk_arena *a) {
    for (size_t i = 0; i < a->n; i++)
        free(a->blk[i]);
    free(a->blk);
}

/* Encodes pb into a malloc'd buffer. */
static int pack_pb(vctx *v, const char *msg, uint8_t **out, size_t *len,
                   const ProtobufCMessage *pb) {
    size_t n = protobuf_c_message_get_packed_size(pb);
    if (n > FL_WIRE_MAX_MESSAGE_BYTES)
        return bad(v, "%s: %zu bytes encoded, limit %u", msg, n, FL_WIRE_MAX_MESSAGE_BYTES);
    uint8_t *b = malloc(n ? n : 1);
    if (!b) return nomem(v, msg);
    size_t w = protobuf_c_message_pack(pb, b);
    if (w != n) {
        free(b);
        return bad(v, "%s: encoder wrote %zu of %zu bytes", msg, w, n);
    }
    *out = b;
    *len = n;
    return 0;
}

static int pack_begin(vctx *v, const char *msg, uint8_t **out, size_t *len, const void *m) {
    if (!out || !len || !m) return bad(v, "%s: NULL argument", msg);
    *out = NULL;
    *len = 0;
    return 0;
}

/* Decodes buf as desc's message; refuses oversized input first. */
static int unpack_pb(vctx *v, const char *msg, const ProtobufCMessageDescriptor *desc,
                     const uint8_t *buf, size_t len, ProtobufCMessage **pb) {
    static const uint8_t empty[1];
    *pb = NULL;
    if (!buf && len) return fl_seterr(v->err, FL_EINVAL, "%s: NULL buffer", msg);
    if (len > FL_WIRE_MAX_MESSAGE_BYTES)
        return bad(v, "%s: %zu bytes, limit %u", msg, len, FL_WIRE_MAX_MESSAGE_BYTES);
    *pb = protobuf_c_message_unpack(desc, NULL, len, buf ? buf : empty);
    if (!*pb)
        return bad(v, "%s: not a valid encoding (%zu bytes: truncated or malformed)", msg, len);
    return 0;
}

/* ======================= shared sub-messages ======================= */

static void privacy_in(fl_wire_privacy *p, const Cohort__V1__PrivacyPolicy *pb) {
    memset(p, 0, sizeof *p);
    if (!pb) return;
    p->mode = (fl_wire_privacy_mode)pb->mode;
    p->noise_multiplier = pb->noise_multiplier;
    p->clip = pb->clip;
    p->delta = pb->delta;
    p->max_epsilon = pb->max_epsilon;
}

static void privacy_out(Cohort__V1__PrivacyPolicy *pb, const fl_wire_privacy *p) {
    cohort__v1__privacy_policy__init(pb);
    pb->mode = (Cohort__V1__PrivacyMode)p->mode;
    pb->noise_multiplier = p->noise_multiplier;
    pb->clip = p->clip;
    pb->delta = p->delta;
    pb->max_epsilon = p->max_epsilon;
}

static void secagg_in(fl_wire_secagg_config *s, const Cohort__V1__SecAggConfig *pb) {
    memset(s, 0, sizeof *s);
    if (!pb) return;
    s->enabled = pb->enabled;
    s->threshold = pb->threshold;
    s->neighbors = pb->neighbors;
    s->clip_range = pb->clip_range;
    s->quantization_range = pb->quantization_range;
    s->graph_seed = pb->graph_seed;
    /* Over the limit: keep the count so validation names it, copy none. */
    s->n_participants = pb->n_participants > FL_WIRE_MAX_SITES ? FL_WIRE_MAX_SITES + 1
                                                               : (uint32_t)pb->n_participants;
    if (pb->n_participants <= FL_WIRE_MAX_SITES && pb->n_participants)
        memcpy(s->participants, pb->participants, pb->n_participants * sizeof(uint32_t));
    s->threshold_count = pb->threshold_count;
    s->vector_words = pb->vector_words;
    s->weight = pb->weight;
    s->session = pb->session;
}

static void secagg_out(Cohort__V1__SecAggConfig *pb, const fl_wire_secagg_config *s) {
    cohort__v1__sec_agg_config__init(pb);
    pb->enabled = s->enabled;
    pb->threshold = s->threshold;
    pb->neighbors = s->neighbors;
    pb->clip_range = s->clip_range;
    pb->quantization_range = s->quantization_range;
    pb->graph_seed = s->graph_seed;
    pb->n_participants = s->n_participants;
    pb->participants = (uint32_t *)s->participants;
    pb->threshold_count = s->threshold_count;
    pb->vector_words = s->vector_words;
    pb->weight = s->weight;
    pb->session = s->session;
}

static int stats_in(vctx *v, const char *path, fl_wire_stats *s,
                    const Cohort__V1__StatsResult *pb) {
    char q[PATH_LEN];
    int rc;
    s->n_rows = pb->n_rows;
    size_t n = pb->n_count;
    if (pb->n_sum != n || pb->n_sumsq != n)
        return bad(v, "%s: count, sum and sumsq hold %zu, %zu and %zu values (one per column)",
                   path, n, pb->n_sum, pb->n_sumsq);
    if (n > FL_WIRE_MAX_COLUMNS)
        return bad(v, "%s: %zu columns, limit %u", sub(q, path, ".count"), n, FL_WIRE_MAX_COLUMNS);
    if (!(n == 0 && pb->n_level_offsets == 0) && pb->n_level_offsets != n + 1)
        return bad(v, "%s: %zu values, expected %zu (columns + 1)", sub(q, path, ".level_offsets"),
                   pb->n_level_offsets, n + 1);
    if (pb->n_level_counts > FL_WIRE_MAX_LEVELS)
        return bad(v, "%s: %zu values, limit %u", sub(q, path, ".level_counts"), pb->n_level_counts,
                   FL_WIRE_MAX_LEVELS);
    if (pb->n_masked > FL_WIRE_MAX_VECTOR_VALUES)
        return bad(v, "%s: %zu values, limit %u", sub(q, path, ".masked"), pb->n_masked,
                   FL_WIRE_MAX_VECTOR_VALUES);
    if ((rc = dup_array(v, path, (void **)&s->count, pb->count, n, sizeof *s->count)) ||
        (rc = dup_array(v, path, (void **)&s->sum, pb->sum, n, sizeof *s->sum)) ||
        (rc = dup_array(v, path, (void **)&s->sumsq, pb->sumsq, n, sizeof *s->sumsq)) ||
        (rc = dup_array(v, path, (void **)&s->level_offsets, pb->level_offsets, pb->n_level_offsets,
                        sizeof *s->level_offsets)) ||
        (rc = dup_array(v, path, (void **)&s->level_counts, pb->level_counts, pb->n_level_counts,
                        sizeof *s->level_counts)) ||
        (rc = dup_array(v, path, (void **)&s->masked, pb->masked, pb->n_masked, sizeof *s->masked)))
        return rc;
    s->n_cols = (uint32_t)n;
    s->n_levels = (uint32_t)pb->n_level_counts;
    s->n_masked = pb->n_masked;
    return 0;
}

static void stats_out(Cohort__V1__StatsResult *pb, const fl_wire_stats *s) {
    cohort__v1__stats_result__init(pb);
    pb->n_rows = s->n_rows;
    pb->n_count = pb->n_sum = pb->n_sumsq = s->n_cols;
    pb->count = s->count;
    pb->sum = s->sum;
    pb->sumsq = s->sumsq;
    pb->n_level_offsets = s->n_cols ? (size_t)s->n_cols + 1 : 0;
    pb->level_offsets = s->level_offsets;
    pb->n_level_counts = s->n_levels;
    pb->level_counts = s->level_counts;
    pb->n_masked = s->n_masked;
    pb->masked = s->masked;
}

static void stats_free(fl_wire_stats *s) {
    free(s->count);
    free(s->sum);
    free(s->sumsq);
    free(s->level_offsets);
    free(s->level_counts);
    free(s->masked);
}

static int keys_in(vctx *v, const char *path, fl_wire_public_keys *k,
                   const Cohort__V1__PublicKeys *pb) {
    char q[PATH_LEN];
    int rc;
    memset(k, 0, sizeof *k);
    if (!pb) return bad(v, "%s: missing", path);
    if ((rc = fixed_in(v, sub(q, path, ".enc_pk"), k->enc_pk, FL_WIRE_KEY_BYTES, pb->enc_pk)) ||
        (rc = fixed_in(v, sub(q, path, ".mask_pk"), k->mask_pk, FL_WIRE_KEY_BYTES, pb->mask_pk)))
        return rc;
    return var_in(v, sub(q, path, ".signature"), k->signature, &k->signature_len,
                  FL_WIRE_MAX_SIGNATURE_BYTES, pb->signature);
}

static void keys_out(Cohort__V1__PublicKeys *pb, const fl_wire_public_keys *k) {
    cohort__v1__public_keys__init(pb);
    pb->enc_pk = bin(k->enc_pk, FL_WIRE_KEY_BYTES);
    pb->mask_pk = bin(k->mask_pk, FL_WIRE_KEY_BYTES);
    pb->signature = bin(k->signature, k->signature_len);
}

/* Encrypted shares (Task, Submit SHARE_KEYS) into a share list. */
static int enc_shares_in(vctx *v, const char *path, fl_wire_share **out, uint32_t *n_out,
                         Cohort__V1__EncryptedShare *const *pb, size_t n) {
    char q[PATH_LEN];
    int rc;
    if (n > FL_WIRE_MAX_SITES)
        return bad(v, "%s: %zu shares, limit %d", path, n, FL_WIRE_MAX_SITES);
    if (!n) return 0;
    fl_wire_share *sh = calloc(n, sizeof *sh);
    if (!sh) return nomem(v, path);
    *out = sh;
    *n_out = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        sh[i].peer = pb[i]->peer;
        if ((rc = var_in(v, sub(q, path, "[%zu].ciphertext", i), sh[i].data, &sh[i].len,
                         FL_WIRE_MAX_SHARE_BYTES, pb[i]->ciphertext)))
            return rc;
    }
    return 0;
}

/* Plain shares (Submit UNMASK) into a share list. */
static int peer_shares_in(vctx *v, const char *path, fl_wire_share_list *l,
                          Cohort__V1__PeerShare *const *pb, size_t n) {
    char q[PATH_LEN];
    int rc;
    if (n > FL_WIRE_MAX_SITES)
        return bad(v, "%s: %zu shares, limit %d", path, n, FL_WIRE_MAX_SITES);
    if (!n) return 0;
    l->shares = calloc(n, sizeof *l->shares);
    if (!l->shares) return nomem(v, path);
    l->n = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        l->shares[i].peer = pb[i]->peer;
        if ((rc = var_in(v, sub(q, path, "[%zu].share", i), l->shares[i].data, &l->shares[i].len,
                         FL_WIRE_MAX_SHARE_BYTES, pb[i]->share)))
            return rc;
    }
    return 0;
}

/* Arrays of sub-messages for packing a share list, from the arena. */
static Cohort__V1__EncryptedShare **enc_shares_out(pk_arena *a, const fl_wire_share *sh,
                                                   uint32_t n) {
    Cohort__V1__EncryptedShare *e = pk_alloc(a, n, sizeof *e);
    Cohort__V1__EncryptedShare **pp = pk_alloc(a, n, sizeof *pp);
    if (!e || !pp) return NULL;
    for (uint32_t i = 0; i < n; i++) {
        cohort__v1__encrypted_share__init(&e[i]);
        e[i].peer = sh[i].peer;
        e[i].ciphertext = bin(sh[i].data, sh[i].len);
        pp[i] = &e[i];
    }
    return pp;
}

static Cohort__V1__PeerShare **peer_shares_out(pk_arena *a, const fl_wire_share_list *l) {
    Cohort__V1__PeerShare *e = pk_alloc(a, l->n, sizeof *e);
    Cohort__V1__PeerShare **pp = pk_alloc(a, l->n, sizeof *pp);
    if (!e || !pp) return NULL;
    for (uint32_t i = 0; i < l->n; i++) {
        cohort__v1__peer_share__init(&e[i]);
        e[i].peer = l->shares[i].peer;
        e[i].share = bin(l->shares[i].data, l->shares[i].len);
        pp[i] = &e[i];
    }
    return pp;
}

/* ============================== Join ============================== */

static int join_check(vctx *v, const fl_wire_join *m) {
    int rc;
    if ((rc = want_ascii(v, "Join.agent_version", m->agent_version, FL_WIRE_VERSION_LEN)) ||
        (rc = want_u64(v, "Join.n_examples", m->n_examples, 1, FL_WIRE_MAX_EXAMPLES)) ||
        (rc = want_u64(v, "Join.n_features", m->n_features, 0, FL_WIRE_MAX_FEATURES)))
        return rc;
    if (m->n_classes && (rc = want_u64(v, "Join.n_classes", m->n_classes, 2, FL_WIRE_MAX_CLASSES)))
        return rc;
    if (m->n_level_offsets) {
        if (m->n_level_offsets < 2 || m->n_level_offsets > FL_WIRE_MAX_COLUMNS + 1)
            return bad(v, "Join.stats_level_offsets: %" PRIu32 " entries, expected 2..%u",
                       m->n_level_offsets, FL_WIRE_MAX_COLUMNS + 1);
        if (m->level_offsets[0] != 0)
            return bad(v, "Join.stats_level_offsets[0]: %" PRIu32 ", expected 0",
                       m->level_offsets[0]);
        for (uint32_t i = 1; i < m->n_level_offsets; i++)
            if (m->level_offsets[i] < m->level_offsets[i - 1] ||
                m->level_offsets[i] > FL_WIRE_MAX_LEVELS)
                return bad(v,
                           "Join.stats_level_offsets[%" PRIu32 "]: %" PRIu32
                           ", expected non-decreasing and <= %u",
                           i, m->level_offsets[i], FL_WIRE_MAX_LEVELS);
    }
    return 0;
}

int fl_wire_pack_join(uint8_t **out, size_t *len, const fl_wire_join *m, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EINVAL};
    int rc;
    if ((rc = pack_begin(&v, "Join", out, len, m)) || (rc = join_check(&v, m))) return rc;
    Cohort__V1__JoinRequest pb = COHORT__V1__JOIN_REQUEST__INIT;
    pb.agent_version = (char *)m->agent_version;
    pb.n_examples = m->n_examples;
    pb.n_features = m->n_features;
    pb.n_classes = m->n_classes;
    if (m->has_schema_sha256) pb.schema_sha256 = bin(m->schema_sha256, FL_WIRE_SHA256_BYTES);
    pb.n_stats_level_offsets = m->n_level_offsets;
    pb.stats_level_offsets = m->level_offsets;
    return pack_pb(&v, "Join", out, len, &pb.base);
}

int fl_wire_unpack_join(fl_wire_join *m, const uint8_t *buf, size_t len,
                        const fl_wire_expect *expect, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EPROTO};
    ProtobufCMessage *raw = NULL;
    int rc;
    (void)expect;
    if (!m) return fl_seterr(err, FL_EINVAL, "Join: NULL output");
    memset(m, 0, sizeof *m);
    if ((rc = unpack_pb(&v, "Join", &cohort__v1__join_request__descriptor, buf, len, &raw)))
        goto cleanup;
    const Cohort__V1__JoinRequest *pb = (const Cohort__V1__JoinRequest *)raw;
    if ((rc = str_in(&v, "Join.agent_version", m->agent_version, FL_WIRE_VERSION_LEN,
                     pb->agent_version)) ||
        (rc = fixed_opt_in(&v, "Join.schema_sha256", m->schema_sha256, FL_WIRE_SHA256_BYTES,
                           &m->has_schema_sha256, pb->schema_sha256)))
        goto cleanup;
    m->n_examples = pb->n_examples;
    m->n_features = pb->n_features;
    m->n_classes = pb->n_classes;
    if (pb->n_stats_level_offsets > FL_WIRE_MAX_COLUMNS + 1) {
        rc = bad(&v, "Join.stats_level_offsets: %zu entries, limit %u", pb->n_stats_level_offsets,
                 FL_WIRE_MAX_COLUMNS + 1);
        goto cleanup;
    }
    if (pb->n_stats_level_offsets) {
        m->level_offsets = malloc(pb->n_stats_level_offsets * sizeof(uint32_t));
        if (!m->level_offsets) {
            rc = nomem(&v, "Join.stats_level_offsets");
            goto cleanup;
        }
        memcpy(m->level_offsets, pb->stats_level_offsets,
               pb->n_stats_level_offsets * sizeof(uint32_t));
        m->n_level_offsets = (uint32_t)pb->n_stats_level_offsets;
    }
    rc = join_check(&v, m);
cleanup:
    if (raw) protobuf_c_message_free_unpacked(raw, NULL);
    if (rc) fl_wire_join_free(m);
    return rc;
}

void fl_wire_join_free(fl_wire_join *m) {
    if (!m) return;
    free(m->level_offsets);
    memset(m, 0, sizeof *m);
}

/* ========================== JoinResponse ========================== */

static int join_response_check(vctx *v, const fl_wire_join_response *m, const fl_wire_expect *ex) {
    int rc;
    if ((rc = want_fed(v, "JoinResponse", m->federation_id, ex)) ||
        (rc = want_charset(v, "JoinResponse.model_spec", m->model_spec, FL_WIRE_SPEC_LEN,
                           SPEC_CHARS)) ||
        (rc = want_u64(v, "JoinResponse.n_features", m->n_features, 1, FL_WIRE_MAX_FEATURES)) ||
        (rc = want_u64(v, "JoinResponse.n_classes", m->n_classes, 2, FL_WIRE_MAX_CLASSES)) ||
        (rc = want_u64(v, "JoinResponse.n_params", m->n_params, 1, FL_WIRE_MAX_PARAMS)))
        return rc;
    if (ex && ex->n_params && m->n_params != ex->n_params)
        return bad(v, "JoinResponse.n_params: %" PRIu64 ", expected %" PRIu64, m->n_params,
                   ex->n_params);
    if ((rc = check_privacy(v, "JoinResponse.privacy", &m->privacy)) ||
        (rc = check_secagg(v, "JoinResponse.secagg", &m->secagg)) ||
        (rc = want_u64(v, "JoinResponse.rounds", m->rounds, 1, FL_WIRE_MAX_ROUNDS)))
        return rc;
    if (m->site_id == 0) return bad(v, "JoinResponse.site_id: 0 (ids start at 1)");
    return 0;
}

int fl_wire_pack_join_response(uint8_t **out, size_t *len, const fl_wire_join_response *m,
                               char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EINVAL};
    int rc;
    if ((rc = pack_begin(&v, "JoinResponse", out, len, m)) ||
        (rc = join_response_check(&v, m, NULL)))
        return rc;
    Cohort__V1__JoinResponse pb = COHORT__V1__JOIN_RESPONSE__INIT;
    Cohort__V1__PrivacyPolicy priv;
    Cohort__V1__SecAggConfig sa;
    privacy_out(&priv, &m->privacy);
    secagg_out(&sa, &m->secagg);
    pb.federation_id = (char *)m->federation_id;
    pb.model_spec = (char *)m->model_spec;
    pb.n_features = m->n_features;
    pb.n_classes = m->n_classes;
    pb.n_params = m->n_params;
    pb.schema_sha256 = bin(m->schema_sha256, FL_WIRE_SHA256_BYTES);
    pb.privacy = &priv;
    pb.secagg = &sa;
    pb.rounds = m->rounds;
    pb.site_id = m->site_id;
    pb.init_seed = m->init_seed;
    return pack_pb(&v, "JoinResponse", out, len, &pb.base);
}

int fl_wire_unpack_join_response(fl_wire_join_response *m, const uint8_t *buf, size_t len,
                                 const fl_wire_expect *expect, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EPROTO};
    ProtobufCMessage *raw = NULL;
    int rc;
    if (!m) return fl_seterr(err, FL_EINVAL, "JoinResponse: NULL output");
    memset(m, 0, sizeof *m);
    if ((rc =
             unpack_pb(&v, "JoinResponse", &cohort__v1__join_response__descriptor, buf, len, &raw)))
        goto cleanup;
    const Cohort__V1__JoinResponse *pb = (const Cohort__V1__JoinResponse *)raw;
    if ((rc = str_in(&v, "JoinResponse.federation_id", m->federation_id, FL_WIRE_ID_LEN,
                     pb->federation_id)) ||
        (rc = str_in(&v, "JoinResponse.model_spec", m->model_spec, FL_WIRE_SPEC_LEN,
                     pb->model_spec)) ||
        (rc = fixed_in(&v, "JoinResponse.schema_sha256", m->schema_sha256, FL_WIRE_SHA256_BYTES,
                       pb->schema_sha256)))
        goto cleanup;
    m->n_features = pb->n_features;
    m->n_classes = pb->n_classes;
    m->n_params = pb->n_params;
    privacy_in(&m->privacy, pb->privacy);
    secagg_in(&m->secagg, pb->secagg);
    m->rounds = pb->rounds;
    m->site_id = pb->site_id;
    m->init_seed = pb->init_seed;
    rc = join_response_check(&v, m, expect);
cleanup:
    if (raw) protobuf_c_message_free_unpacked(raw, NULL);
    if (rc) fl_wire_join_response_free(m);
    return rc;
}

void fl_wire_join_response_free(fl_wire_join_response *m) {
    if (m) memset(m, 0, sizeof *m);
}

/* ============================ PollTask ============================ */

static int poll_check(vctx *v, const fl_wire_poll *m, const fl_wire_expect *ex) {
    int rc = want_fed(v, "PollTask", m->federation_id, ex);
    if (rc) return rc;
    if (ex && ex->round && m->last_round_seen > *ex->round)
        return bad(v, "PollTask.last_round_seen: %" PRIu64 ", ahead of the current round %" PRIu64,
                   m->last_round_seen, *ex->round);
    return 0;
}

int fl_wire_pack_poll(uint8_t **out, size_t *len, const fl_wire_poll *m, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EINVAL};
    int rc;
    if ((rc = pack_begin(&v, "PollTask", out, len, m)) || (rc = poll_check(&v, m, NULL))) return rc;
    Cohort__V1__PollTaskRequest pb = COHORT__V1__POLL_TASK_REQUEST__INIT;
    pb.federation_id = (char *)m->federation_id;
    pb.last_round_seen = m->last_round_seen;
    return pack_pb(&v, "PollTask", out, len, &pb.base);
}

int fl_wire_unpack_poll(fl_wire_poll *m, const uint8_t *buf, size_t len,
                        const fl_wire_expect *expect, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EPROTO};
    ProtobufCMessage *raw = NULL;
    int rc;
    if (!m) return fl_seterr(err, FL_EINVAL, "PollTask: NULL output");
    memset(m, 0, sizeof *m);
    if ((rc =
             unpack_pb(&v, "PollTask", &cohort__v1__poll_task_request__descriptor, buf, len, &raw)))
        goto cleanup;
    const Cohort__V1__PollTaskRequest *pb = (const Cohort__V1__PollTaskRequest *)raw;
    if ((rc = str_in(&v, "PollTask.federation_id", m->federation_id, FL_WIRE_ID_LEN,
                     pb->federation_id)))
        goto cleanup;
    m->last_round_seen = pb->last_round_seen;
    rc = poll_check(&v, m, expect);
cleanup:
    if (raw) protobuf_c_message_free_unpacked(raw, NULL);
    if (rc) fl_wire_poll_free(m);
    return rc;
}

void fl_wire_poll_free(fl_wire_poll *m) {
    if (m) memset(m, 0, sizeof *m);
}

/* ============================== Task ============================== */

/* The fields every task carries, checked before its payload. */
static int task_header_check(vctx *v, const fl_wire_task *m, const fl_wire_expect *ex) {
    int rc;
    if ((rc = want_enum(v, "Task.kind", (int)m->kind, FL_WIRE_TASK_COUNT, true,
                        fl_wire_task_kind_name)) ||
        (rc = want_enum(v, "Task.stage", (int)m->stage, FL_WIRE_STAGE_COUNT, true,
                        fl_wire_stage_name)))
        return rc;
    bool idle = m->kind == FL_WIRE_TASK_NONE || m->kind == FL_WIRE_TASK_DONE;
    if ((rc = want_fed(v, "Task", m->federation_id, ex))) return rc;
    if (ex && ex->round && m->round != *ex->round)
        return bad(v, "Task.round: %" PRIu64 ", expected %" PRIu64, m->round, *ex->round);
    /* An idle task carries no work, so an old round on it is harmless. */
    if (ex && ex->min_round && m->round < *ex->min_round && !idle)
        return bad(v, "Task.round: %" PRIu64 ", older than round %" PRIu64 " already seen",
                   m->round, *ex->min_round);
    if (ex && ex->step && m->step != ex->step)
        return bad(v, "Task.step: %" PRIu32 ", expected %" PRIu32, m->step, ex->step);
    if (ex && ex->stage && m->stage != ex->stage)
        return bad(v, "Task.stage: %s, expected %s", fl_wire_stage_name((int)m->stage),
                   fl_wire_stage_name((int)ex->stage));
    if (ex && ex->kind && m->kind != ex->kind)
        return bad(v, "Task.kind: %s, expected %s", fl_wire_task_kind_name((int)m->kind),
                   fl_wire_task_kind_name((int)ex->kind));
    if (!idle) {
        fl_wire_stage want = fl_wire_task_stage(m->kind);
        if (m->stage != want)
            return bad(v, "Task.stage: %s, expected %s for a %s task",
                       fl_wire_stage_name((int)m->stage), fl_wire_stage_name((int)want),
                       fl_wire_task_kind_name((int)m->kind));
        if (m->deadline_unix_ms <= 0)
            return bad(v, "Task.deadline_unix_ms: %" PRId64 ", expected > 0", m->deadline_unix_ms);
    } else if (m->deadline_unix_ms < 0) {
        return bad(v, "Task.deadline_unix_ms: %" PRId64 ", expected >= 0", m->deadline_unix_ms);
    }
    return 0;
}

static int train_config_check(vctx *v, const fl_wire_train_config *t) {
    int rc;
    if ((rc = want_u64(v, "Task.train.local_epochs", t->local_epochs, 1, FL_WIRE_MAX_EPOCHS)) ||
        (rc = want_u64(v, "Task.train.batch_size", t->batch_size, 1, FL_WIRE_MAX_BATCH)) ||
        (rc = want_enum(v, "Task.train.optimizer", (int)t->optimizer, FL_WIRE_OPT_COUNT, false,
                        optimizer_name)) ||
        (rc = want_real(v, "Task.train.lr", t->lr, 0, true, INFINITY, false)) ||
        (rc = want_real(v, "Task.train.momentum", t->momentum, 0, false, 1, true)) ||
        (rc =
             want_real(v, "Task.train.weight_decay", t->weight_decay, 0, false, INFINITY, false)) ||
        (rc = want_real(v, "Task.train.prox_mu", t->prox_mu, 0, false, INFINITY, false)))
        return rc;
    return check_privacy(v, "Task.train.dp", &t->dp);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Names (each NUL-terminated in its array) without repeats. */
static int want_unique_names(vctx *v, const char *path, const char **names, size_t n) {
    qsort(names, n, sizeof *names, cmp_name);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(names[i], names[i - 1]))
            return bad(v, "%s: '%s' appears twice", path, names[i]);
    return 0;
}

static int stats_spec_check(vctx *v, const fl_wire_stats_spec *s) {
    char q[PATH_LEN];
    const char **names = NULL;
    int rc;
    if ((rc = want_u64(v, "Task.stats.columns", s->n_cols, 1, FL_WIRE_MAX_COLUMNS))) return rc;
    if (!s->cols) return bad(v, "Task.stats.columns: missing array of %" PRIu32, s->n_cols);
    uint64_t levels = 0;
    uint32_t most = 0;
    for (uint32_t c = 0; c < s->n_cols; c++) {
        const fl_wire_stats_column *col = &s->cols[c];
        if ((rc = want_text(v, sub(q, "Task.stats.columns", "[%" PRIu32 "].name", c), col->name,
                            FL_WIRE_MAX_NAME, true)))
            return rc;
        if (!col->categorical && col->n_levels)
            return bad(v,
                       "Task.stats.columns[%" PRIu32 "].levels: %" PRIu32
                       " levels for a numeric column",
                       c, col->n_levels);
        if (col->categorical && !col->n_levels)
            return bad(v, "Task.stats.columns[%" PRIu32 "].levels: none for a categorical column",
                       c);
        levels += col->n_levels;
        if (levels > FL_WIRE_MAX_LEVELS)
            return bad(v, "Task.stats.columns: more than %u levels in all", FL_WIRE_MAX_LEVELS);
        if (col->n_levels && !col->levels)
            return bad(v, "Task.stats.columns[%" PRIu32 "].levels: missing array", c);
        for (uint32_t l = 0; l < col->n_levels; l++)
            if ((rc = want_text(
                     v, sub(q, "Task.stats.columns", "[%" PRIu32 "].levels[%" PRIu32 "]", c, l),
                     col->levels[l], FL_WIRE_MAX_NAME, true)))
                return rc;
        if (col->n_levels > most) most = col->n_levels;
    }
    /* Repeated names would make two slots of the layout ambiguous. */
    size_t cap = s->n_cols > most ? s->n_cols : most;
    names = malloc(cap * sizeof *names);
    if (!names) return nomem(v, "Task.stats");
    for (uint32_t c = 0; c < s->n_cols; c++)
        names[c] = s->cols[c].name;
    if ((rc = want_unique_names(v, "Task.stats.columns.name", names, s->n_cols))) goto cleanup;
    for (uint32_t c = 0; c < s->n_cols; c++) {
        for (uint32_t l = 0; l < s->cols[c].n_levels; l++)
            names[l] = s->cols[c].levels[l];
        if ((rc = want_unique_names(v, sub(q, "Task.stats.columns", "[%" PRIu32 "].levels", c),
                                    names, s->cols[c].n_levels)))
            goto cleanup;
    }
cleanup:
    free(names);
    return rc;
}

static int site_keys_check(vctx *v, const fl_wire_site_keys *k, uint32_t n) {
    char q[PATH_LEN];
    uint32_t *ids = NULL;
    int rc = 0;
    if (n > FL_WIRE_MAX_SITES)
        return bad(v, "Task.share_keys.sites: %" PRIu32 " sites, limit %d", n, FL_WIRE_MAX_SITES);
    if (n && !k) return bad(v, "Task.share_keys.sites: missing array of %" PRIu32, n);
    for (uint32_t i = 0; i < n; i++) {
        if ((rc = check_keys(v, sub(q, "Task.share_keys.sites", "[%" PRIu32 "].keys", i),
                             &k[i].keys)))
            return rc;
        if (k[i].cert_len < 1 || k[i].cert_len > FL_WIRE_MAX_CERT_BYTES || !k[i].cert)
            return bad(v,
                       "Task.share_keys.sites[%" PRIu32 "].certificate: %" PRIu32
                       " bytes, expected 1..%d",
                       i, k[i].cert_len, FL_WIRE_MAX_CERT_BYTES);
    }
    ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return nomem(v, "Task.share_keys");
    for (uint32_t i = 0; i < n; i++)
        ids[i] = k[i].site_id;
    rc = want_ids(v, "Task.share_keys.sites.site_id", ids, n, NULL);
    free(ids);
    return rc;
}

static int task_payload_check(vctx *v, const fl_wire_task *m, const fl_wire_expect *ex) {
    uint32_t *surv = NULL, *drop = NULL;
    int rc = 0;
    const char *kind = fl_wire_task_kind_name((int)m->kind);
    if (m->has_model && (rc = check_model_ref(v, "Task.model", &m->model, ex))) goto cleanup;
    if (m->has_train && (rc = train_config_check(v, &m->train))) goto cleanup;
    if (m->has_stats && (rc = stats_spec_check(v, &m->stats))) goto cleanup;
    if (m->has_eval) {
        if ((rc = want_u64(v, "Task.eval.n_bins", m->eval.n_bins, 1, FL_WIRE_MAX_BINS)) ||
            (rc = want_u64(v, "Task.eval.n_fairness", m->eval.n_fairness, 0,
                           FL_WIRE_MAX_FAIRNESS)) ||
            (rc = want_ascii(v, "Task.eval.fairness_intersections", m->eval.fairness_intersections,
                             FL_WIRE_REASON_LEN)) ||
            (rc = want_real(v, "Task.eval.fairness_threshold", m->eval.fairness_threshold, 0, false,
                            1, true)) ||
            (rc = want_u64(v, "Task.eval.fairness_bins", m->eval.fairness_bins, 0,
                           FL_WIRE_MAX_BINS)))
            goto cleanup;
    }
    if (m->has_secagg && (rc = check_secagg(v, "Task.secagg", &m->secagg))) goto cleanup;
    if (m->has_totals && (rc = check_stats(v, "Task.totals", &m->totals, false, NULL)))
        goto cleanup;
    if (m->n_site_keys && (rc = site_keys_check(v, m->site_keys, m->n_site_keys))) goto cleanup;
    if ((rc = want_shares(v, "Task.masked_input.shares", m->shares, m->n_shares, NULL)) ||
        (rc = want_ids(v, "Task.unmask.survivors", m->survivors, m->n_survivors, &surv)) ||
        (rc = want_ids(v, "Task.unmask.dropped", m->dropped, m->n_dropped, &drop)))
        goto cleanup;
    uint32_t both = common_id(surv, m->n_survivors, drop, m->n_dropped);
    if (both) {
        rc = bad(v, "Task.unmask: site %" PRIu32 " is both a survivor and dropped", both);
        goto cleanup;
    }

    /* What each kind needs. */
    switch (m->kind) {
    case FL_WIRE_TASK_STATS:
        if (!m->has_stats) rc = bad(v, "Task.stats: missing for a %s task", kind);
        break;
    case FL_WIRE_TASK_TRAIN:
        if (!m->has_model || !m->has_train)
            rc = bad(v, "Task.%s: missing for a %s task", m->has_model ? "train" : "model", kind);
        break;
    case FL_WIRE_TASK_EVALUATE:
        if (!m->has_model || !m->has_eval)
            rc = bad(v, "Task.%s: missing for a %s task", m->has_model ? "eval" : "model", kind);
        break;
    case FL_WIRE_TASK_ADVERTISE_KEYS:
    case FL_WIRE_TASK_SHARE_KEYS:
    case FL_WIRE_TASK_MASKED_INPUT:
    case FL_WIRE_TASK_UNMASK:
        if (!m->has_secagg || !m->secagg.enabled) {
            rc = bad(v, "Task.secagg: %s for a %s task", m->has_secagg ? "not enabled" : "missing",
                     kind);
            break;
        }
        if (m->kind == FL_WIRE_TASK_SHARE_KEYS && !m->n_site_keys)
            rc = bad(v, "Task.share_keys: no neighbour keys for a %s task", kind);
        if (m->kind == FL_WIRE_TASK_UNMASK && !m->n_survivors)
            rc = bad(v, "Task.unmask.survivors: empty for a %s task", kind);
        if (m->kind == FL_WIRE_TASK_MASKED_INPUT) {
            int what = (int)m->has_train + (int)m->has_stats + (int)m->has_eval;
            if (what != 1)
                rc = bad(v, "Task: %d of train, stats and eval for a %s task, expected exactly one",
                         what, kind);
            else if ((m->has_train || m->has_eval) && !m->has_model)
                rc = bad(v, "Task.model: missing for a %s task of %s", kind,
                         m->has_train ? "train" : "eval");
        }
        break;
    default:
        break;
    }
cleanup:
    free(surv);
    free(drop);
    return rc;
}

static int task_check(vctx *v, const fl_wire_task *m, const fl_wire_expect *ex) {
    int rc = task_header_check(v, m, ex);
    return rc ? rc : task_payload_check(v, m, ex);
}

static void model_ref_out(Cohort__V1__ModelRef *pb, const fl_wire_model_ref *r) {
    cohort__v1__model_ref__init(pb);
    pb->sha256 = bin(r->sha256, FL_WIRE_SHA256_BYTES);
    pb->total_bytes = r->total_bytes;
    pb->n_params = r->n_params;
}

int fl_wire_pack_task(uint8_t **out, size_t *len, const fl_wire_task *m, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EINVAL};
    pk_arena a = {0};
    int rc;
    if ((rc = pack_begin(&v, "Task", out, len, m)) || (rc = task_check(&v, m, NULL))) return rc;
    Cohort__V1__Task pb = COHORT__V1__TASK__INIT;
    Cohort__V1__ModelRef model;
    Cohort__V1__TrainConfig train = COHORT__V1__TRAIN_CONFIG__INIT;
    Cohort__V1__PrivacyPolicy dp;
    Cohort__V1__StatsSpec stats = COHORT__V1__STATS_SPEC__INIT;
    Cohort__V1__EvalSpec eval = COHORT__V1__EVAL_SPEC__INIT;
    Cohort__V1__SecAggConfig sa;
    Cohort__V1__StatsResult totals;
    Cohort__V1__ShareKeysPayload skp = COHORT__V1__SHARE_KEYS_PAYLOAD__INIT;
    Cohort__V1__MaskedInputPayload mip = COHORT__V1__MASKED_INPUT_PAYLOAD__INIT;
    Cohort__V1__UnmaskPayload ump = COHORT__V1__UNMASK_PAYLOAD__INIT;

    pb.kind = (Cohort__V1__TaskKind)m->kind;
    pb.federation_id = (char *)m->federation_id;
    pb.round = m->round;
    pb.step = m->step;
    pb.stage = (Cohort__V1__Stage)m->stage;
    pb.deadline_unix_ms = m->deadline_unix_ms;
    if (m->has_model) {
        model_ref_out(&model, &m->model);
        pb.model = &model;
    }
    if (m->has_train) {
        const fl_wire_train_config *t = &m->train;
        train.local_epochs = t->local_epochs;
        train.batch_size = t->batch_size;
        train.optimizer = (Cohort__V1__Optimizer)t->optimizer;
        train.lr = t->lr;
        train.momentum = t->momentum;
        train.weight_decay = t->weight_decay;
        train.prox_mu = t->prox_mu;
        train.seed = t->seed;
        privacy_out(&dp, &t->dp);
        train.dp = &dp;
        pb.train = &train;
    }
    if (m->has_stats) {
        uint32_t n = m->stats.n_cols;
        Cohort__V1__StatsColumn *cols = pk_alloc(&a, n, sizeof *cols);
        Cohort__V1__StatsColumn **pcols = pk_alloc(&a, n, sizeof *pcols);
        if (!cols || !pcols) {
            rc = nomem(&v, "Task.stats");
            goto cleanup;
        }
        for (uint32_t c = 0; c < n; c++) {
            const fl_wire_stats_column *src = &m->stats.cols[c];
            cohort__v1__stats_column__init(&cols[c]);
            cols[c].name = (char *)src->name;
            cols[c].categorical = src->categorical;
            if (src->n_levels) {
                char **lv = pk_alloc(&a, src->n_levels, sizeof *lv);
                if (!lv) {
                    rc = nomem(&v, "Task.stats");
                    goto cleanup;
                }
                for (uint32_t l = 0; l < src->n_levels; l++)
                    lv[l] = (char *)src->levels[l];
                cols[c].n_levels = src->n_levels;
                cols[c].levels = lv;
            }
            pcols[c] = &cols[c];
        }
        stats.n_columns = n;
        stats.columns = pcols;
        pb.stats = &stats;
    }
    if (m->has_eval) {
        eval.n_bins = m->eval.n_bins;
        eval.n_fairness = m->eval.n_fairness;
        eval.fairness_intersections = (char *)m->eval.fairness_intersections;
        eval.fairness_threshold = m->eval.fairness_threshold;
        eval.fairness_bins = m->eval.fairness_bins;
        pb.eval = &eval;
    }
    if (m->has_secagg) {
        secagg_out(&sa, &m->secagg);
        pb.secagg = &sa;
    }
    if (m->has_totals) {
        stats_out(&totals, &m->totals);
        pb.totals = &totals;
    }
    if (m->n_site_keys) {
        uint32_t n = m->n_site_keys;
        Cohort__V1__SiteKeys *sk = pk_alloc(&a, n, sizeof *sk);
        Cohort__V1__SiteKeys **psk = pk_alloc(&a, n, sizeof *psk);
        Cohort__V1__PublicKeys *pk = pk_alloc(&a, n, sizeof *pk);
        if (!sk || !psk || !pk) {
            rc = nomem(&v, "Task.share_keys");
            goto cleanup;
        }
        for (uint32_t i = 0; i < n; i++) {
            cohort__v1__site_keys__init(&sk[i]);
            sk[i].site_id = m->site_keys[i].site_id;
            keys_out(&pk[i], &m->site_keys[i].keys);
            sk[i].keys = &pk[i];
            sk[i].certificate = bin(m->site_keys[i].cert, m->site_keys[i].cert_len);
            psk[i] = &sk[i];
        }
        skp.n_sites = n;
        skp.sites = psk;
        pb.share_keys = &skp;
    }
    if (m->n_shares || m->kind == FL_WIRE_TASK_MASKED_INPUT) {
        mip.n_shares = m->n_shares;
        if (m->n_shares && !(mip.shares = enc_shares_out(&a, m->shares, m->n_shares))) {
            rc = nomem(&v, "Task.masked_input");
            goto cleanup;
        }
        pb.masked_input = &mip;
    }
    if (m->n_survivors || m->n_dropped) {
        ump.n_survivors = m->n_survivors;
        ump.survivors = m->survivors;
        ump.n_dropped = m->n_dropped;
        ump.dropped = m->dropped;
        pb.unmask = &ump;
    }
    rc = pack_pb(&v, "Task", out, len, &pb.base);
cleanup:
    pk_free(&a);
    return rc;
}

static int stats_spec_in(vctx *v, fl_wire_stats_spec *s, const Cohort__V1__StatsSpec *pb) {
    char q[PATH_LEN];
    int rc;
    if (pb->n_columns > FL_WIRE_MAX_COLUMNS)
        return bad(v, "Task.stats.columns: %zu, limit %u", pb->n_columns, FL_WIRE_MAX_COLUMNS);
    if (!pb->n_columns) return 0;
    s->cols = calloc(pb->n_columns, sizeof *s->cols);
    if (!s->cols) return nomem(v, "Task.stats");
    s->n_cols = (uint32_t)pb->n_columns;
    size_t levels = 0;
    for (size_t c = 0; c < pb->n_columns; c++) {
        const Cohort__V1__StatsColumn *src = pb->columns[c];
        fl_wire_stats_column *dst = &s->cols[c];
        if ((rc = str_in(v, sub(q, "Task.stats.columns", "[%zu].name", c), dst->name,
                         FL_WIRE_MAX_NAME, src->name)))
            return rc;
        dst->categorical = src->categorical;
        levels += src->n_levels;
        if (levels > FL_WIRE_MAX_LEVELS)
            return bad(v, "Task.stats.columns: more than %u levels in all", FL_WIRE_MAX_LEVELS);
        if (!src->n_levels) continue;
        dst->levels = calloc(src->n_levels, sizeof *dst->levels);
        if (!dst->levels) return nomem(v, "Task.stats");
        dst->n_levels = (uint32_t)src->n_levels;
        for (size_t l = 0; l < src->n_levels; l++)
            if ((rc = str_in(v, sub(q, "Task.stats.columns", "[%zu].levels[%zu]", c, l),
                             dst->levels[l], FL_WIRE_MAX_NAME, src->levels[l])))
                return rc;
    }
    return 0;
}

static int site_keys_in(vctx *v, fl_wire_task *m, const Cohort__V1__ShareKeysPayload *pb) {
    char q[PATH_LEN];
    int rc;
    if (pb->n_sites > FL_WIRE_MAX_SITES)
        return bad(v, "Task.share_keys.sites: %zu, limit %d", pb->n_sites, FL_WIRE_MAX_SITES);
    if (!pb->n_sites) return 0;
    m->site_keys = calloc(pb->n_sites, sizeof *m->site_keys);
    if (!m->site_keys) return nomem(v, "Task.share_keys");
    m->n_site_keys = (uint32_t)pb->n_sites;
    for (size_t i = 0; i < pb->n_sites; i++) {
        const Cohort__V1__SiteKeys *src = pb->sites[i];
        fl_wire_site_keys *dst = &m->site_keys[i];
        dst->site_id = src->site_id;
        if ((rc = keys_in(v, sub(q, "Task.share_keys.sites", "[%zu].keys", i), &dst->keys,
                          src->keys)))
            return rc;
        if (src->certificate.len > FL_WIRE_MAX_CERT_BYTES)
            return bad(v, "Task.share_keys.sites[%zu].certificate: %zu bytes, limit %d", i,
                       src->certificate.len, FL_WIRE_MAX_CERT_BYTES);
        if ((rc = dup_array(v, "Task.share_keys", (void **)&dst->cert, src->certificate.data,
                            src->certificate.len, 1)))
            return rc;
        dst->cert_len = (uint32_t)src->certificate.len;
    }
    return 0;
}

static int task_payload_in(vctx *v, fl_wire_task *m, const Cohort__V1__Task *pb) {
    int rc;
    if (pb->model) {
        m->has_model = true;
        if ((rc = fixed_in(v, "Task.model.sha256", m->model.sha256, FL_WIRE_SHA256_BYTES,
                           pb->model->sha256)))
            return rc;
        m->model.total_bytes = pb->model->total_bytes;
        m->model.n_params = pb->model->n_params;
    }
    if (pb->train) {
        const Cohort__V1__TrainConfig *t = pb->train;
        m->has_train = true;
        m->train.local_epochs = t->local_epochs;
        m->train.batch_size = t->batch_size;
        m->train.optimizer = (fl_wire_optimizer)t->optimizer;
        m->train.lr = t->lr;
        m->train.momentum = t->momentum;
        m->train.weight_decay = t->weight_decay;
        m->train.prox_mu = t->prox_mu;
        m->train.seed = t->seed;
        privacy_in(&m->train.dp, t->dp);
    }
    if (pb->stats) {
        m->has_stats = true;
        if ((rc = stats_spec_in(v, &m->stats, pb->stats))) return rc;
    }
    if (pb->eval) {
        m->has_eval = true;
        m->eval.n_bins = pb->eval->n_bins;
        m->eval.n_fairness = pb->eval->n_fairness;
        m->eval.fairness_threshold = pb->eval->fairness_threshold;
        m->eval.fairness_bins = pb->eval->fairness_bins;
        if ((rc = str_in(v, "Task.eval.fairness_intersections", m->eval.fairness_intersections,
                         sizeof m->eval.fairness_intersections, pb->eval->fairness_intersections)))
            return rc;
    }
    if (pb->secagg) {
        m->has_secagg = true;
        secagg_in(&m->secagg, pb->secagg);
    }
    if (pb->totals) {
        m->has_totals = true;
        if ((rc = stats_in(v, "Task.totals", &m->totals, pb->totals))) return rc;
    }
    if (pb->share_keys && (rc = site_keys_in(v, m, pb->share_keys))) return rc;
    if (pb->masked_input &&
        (rc = enc_shares_in(v, "Task.masked_input.shares", &m->shares, &m->n_shares,
                            pb->masked_input->shares, pb->masked_input->n_shares)))
        return rc;
    if (pb->unmask) {
        const Cohort__V1__UnmaskPayload *u = pb->unmask;
        if (u->n_survivors > FL_WIRE_MAX_SITES || u->n_dropped > FL_WIRE_MAX_SITES)
            return bad(v, "Task.unmask: %zu survivors and %zu dropped, limit %d each",
                       u->n_survivors, u->n_dropped, FL_WIRE_MAX_SITES);
        if ((rc = dup_array(v, "Task.unmask", (void **)&m->survivors, u->survivors, u->n_survivors,
                            sizeof *m->survivors)) ||
            (rc = dup_array(v, "Task.unmask", (void **)&m->dropped, u->dropped, u->n_dropped,
                            sizeof *m->dropped)))
            return rc;
        m->n_survivors = (uint32_t)u->n_survivors;
        m->n_dropped = (uint32_t)u->n_dropped;
    }
    return 0;
}

int fl_wire_unpack_task(fl_wire_task *m, const uint8_t *buf, size_t len,
                        const fl_wire_expect *expect, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EPROTO};
    ProtobufCMessage *raw = NULL;
    int rc;
    if (!m) return fl_seterr(err, FL_EINVAL, "Task: NULL output");
    memset(m, 0, sizeof *m);
    if ((rc = unpack_pb(&v, "Task", &cohort__v1__task__descriptor, buf, len, &raw))) goto cleanup;
    const Cohort__V1__Task *pb = (const Cohort__V1__Task *)raw;
    if ((rc =
             str_in(&v, "Task.federation_id", m->federation_id, FL_WIRE_ID_LEN, pb->federation_id)))
        goto cleanup;
    m->kind = (fl_wire_task_kind)pb->kind;
    m->round = pb->round;
    m->step = pb->step;
    m->stage = (fl_wire_stage)pb->stage;
    m->deadline_unix_ms = pb->deadline_unix_ms;
    if ((rc = task_header_check(&v, m, expect)) || (rc = task_payload_in(&v, m, pb)) ||
        (rc = task_payload_check(&v, m, expect)))
        goto cleanup;
cleanup:
    if (raw) protobuf_c_message_free_unpacked(raw, NULL);
    if (rc) fl_wire_task_free(m);
    return rc;
}

void fl_wire_task_free(fl_wire_task *m) {
    if (!m) return;
    if (m->stats.cols)
        for (uint32_t c = 0; c < m->stats.n_cols; c++)
            free(m->stats.cols[c].levels);
    free(m->stats.cols);
    stats_free(&m->totals);
    if (m->site_keys)
        for (uint32_t i = 0; i < m->n_site_keys; i++)
            free(m->site_keys[i].cert);
    free(m->site_keys);
    free(m->shares);
    free(m->survivors);
    free(m->dropped);
    memset(m, 0, sizeof *m);
}

/* =========================== FetchChunk =========================== */

static int fetch_check(vctx *v, const fl_wire_fetch *m, const fl_wire_expect *ex) {
    int rc;
    if ((rc = want_fed(v, "FetchChunk", m->federation_id, ex))) return rc;
    if (ex && ex->round && m->round != *ex->round)
        return bad(v, "FetchChunk.round: %" PRIu64 ", expected %" PRIu64, m->round, *ex->round);
    if ((rc = want_u64(v, "FetchChunk.offset", m->offset, 0, FL_WIRE_MAX_MODEL_BYTES))) return rc;
    return want_u64(v, "FetchChunk.max_bytes", m->max_bytes, 1, FL_WIRE_CHUNK_BYTES);
}

int fl_wire_pack_fetch(uint8_t **out, size_t *len, const fl_wire_fetch *m, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EINVAL};
    int rc;
    if ((rc = pack_begin(&v, "FetchChunk", out, len, m)) || (rc = fetch_check(&v, m, NULL)))
        return rc;
    Cohort__V1__FetchChunkRequest pb = COHORT__V1__FETCH_CHUNK_REQUEST__INIT;
    pb.federation_id = (char *)m->federation_id;
    pb.round = m->round;
    pb.sha256 = bin(m->sha256, FL_WIRE_SHA256_BYTES);
    pb.offset = m->offset;
    pb.max_bytes = m->max_bytes;
    return pack_pb(&v, "FetchChunk", out, len, &pb.base);
}

int fl_wire_unpack_fetch(fl_wire_fetch *m, const uint8_t *buf, size_t len,
                         const fl_wire_expect *expect, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EPROTO};
    ProtobufCMessage *raw = NULL;
    int rc;
    if (!m) return fl_seterr(err, FL_EINVAL, "FetchChunk: NULL output");
    memset(m, 0, sizeof *m);
    if ((rc = unpack_pb(&v, "FetchChunk", &cohort__v1__fetch_chunk_request__descriptor, buf, len,
                        &raw)))
        goto cleanup;
    const Cohort__V1__FetchChunkRequest *pb = (const Cohort__V1__FetchChunkRequest *)raw;
    if ((rc = str_in(&v, "FetchChunk.federation_id", m->federation_id, FL_WIRE_ID_LEN,
                     pb->federation_id)) ||
        (rc = fixed_in(&v, "FetchChunk.sha256", m->sha256, FL_WIRE_SHA256_BYTES, pb->sha256)))
        goto cleanup;
    m->round = pb->round;
    m->offset = pb->offset;
    m->max_bytes = pb->max_bytes;
    rc = fetch_check(&v, m, expect);
cleanup:
    if (raw) protobuf_c_message_free_unpacked(raw, NULL);
    if (rc) fl_wire_fetch_free(m);
    return rc;
}

void fl_wire_fetch_free(fl_wire_fetch *m) {
    if (m) memset(m, 0, sizeof *m);
}

/* ============================== Chunk ============================== */

static int chunk_check(vctx *v, const fl_wire_chunk *m, const fl_wire_expect *ex) {
    int rc;
    if ((rc = want_u64(v, "Chunk.total_bytes", m->total_bytes, 1, FL_WIRE_MAX_MODEL_BYTES)))
        return rc;
    if (ex && ex->total_bytes && m->total_bytes != ex->total_bytes)
        return bad(v, "Chunk.total_bytes: %" PRIu64 ", expected %" PRIu64, m->total_bytes,
                   ex->total_bytes);
    if (m->len > FL_WIRE_CHUNK_BYTES)
        return bad(v, "Chunk.data: %zu bytes, limit %u", m->len, FL_WIRE_CHUNK_BYTES);
    if (m->len && !m->data) return bad(v, "Chunk.data: missing array of %zu bytes", m->len);
    if (m->offset > m->total_bytes)
        return bad(v, "Chunk.offset: %" PRIu64 ", past the end (%" PRIu64 " bytes)", m->offset,
                   m->total_bytes);
    if (m->len > m->total_bytes - m->offset)
        return bad(
            v, "Chunk.data: %zu bytes at offset %" PRIu64 " run past the end (%" PRIu64 " bytes)",
            m->len, m->offset, m->total_bytes);
    /* An empty chunk before the end would let a fetch loop spin forever. */
    if (!m->len && m->offset != m->total_bytes)
        return bad(v, "Chunk.data: empty at offset %" PRIu64 " of %" PRIu64, m->offset,
                   m->total_bytes);
    if (ex && ex->fetch) {
        if (m->offset != ex->fetch->offset)
            return bad(v, "Chunk.offset: %" PRIu64 ", expected %" PRIu64, m->offset,
                       ex->fetch->offset);
        if (memcmp(m->sha256, ex->fetch->sha256, FL_WIRE_SHA256_BYTES))
            return bad(v, "Chunk.sha256: not the model requested");
        if (m->len > ex->fetch->max_bytes)
            return bad(v, "Chunk.data: %zu bytes, more than the %" PRIu32 " requested", m->len,
                       ex->fetch->max_bytes);
    }
    return 0;
}

int fl_wire_pack_chunk(uint8_t **out, size_t *len, const fl_wire_chunk *m, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EINVAL};
    int rc;
    if ((rc = pack_begin(&v, "Chunk", out, len, m)) || (rc = chunk_check(&v, m, NULL))) return rc;
    Cohort__V1__Chunk pb = COHORT__V1__CHUNK__INIT;
    pb.offset = m->offset;
    pb.data = bin(m->data, m->len);
    pb.total_bytes = m->total_bytes;
    pb.sha256 = bin(m->sha256, FL_WIRE_SHA256_BYTES);
    return pack_pb(&v, "Chunk", out, len, &pb.base);
}

int fl_wire_unpack_chunk(fl_wire_chunk *m, const uint8_t *buf, size_t len,
                         const fl_wire_expect *expect, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EPROTO};
    ProtobufCMessage *raw = NULL;
    int rc;
    if (!m) return fl_seterr(err, FL_EINVAL, "Chunk: NULL output");
    memset(m, 0, sizeof *m);
    if ((rc = unpack_pb(&v, "Chunk", &cohort__v1__chunk__descriptor, buf, len, &raw))) goto cleanup;
    const Cohort__V1__Chunk *pb = (const Cohort__V1__Chunk *)raw;
    if ((rc = fixed_in(&v, "Chunk.sha256", m->sha256, FL_WIRE_SHA256_BYTES, pb->sha256)))
        goto cleanup;
    if (pb->data.len > FL_WIRE_CHUNK_BYTES) {
        rc = bad(&v, "Chunk.data: %zu bytes, limit %u", pb->data.len, FL_WIRE_CHUNK_BYTES);
        goto cleanup;
    }
    m->offset = pb->offset;
    m->total_bytes = pb->total_bytes;
    if ((rc = dup_array(&v, "Chunk.data", (void **)&m->data, pb->data.data, pb->data.len, 1)))
        goto cleanup;
    m->len = pb->data.len;
    rc = chunk_check(&v, m, expect);
cleanup:
    if (raw) protobuf_c_message_free_unpacked(raw, NULL);
    if (rc) fl_wire_chunk_free(m);
    return rc;
}

void fl_wire_chunk_free(fl_wire_chunk *m) {
    if (!m) return;
    free(m->data);
    memset(m, 0, sizeof *m);
}

/* ============================= Submit ============================= */

/* The result a task kind is answered with (MASKED_INPUT: train, stats or
 * eval, so only train is listed and the caller widens it). */
static fl_wire_result_kind result_for(fl_wire_task_kind k) {
    switch (k) {
    case FL_WIRE_TASK_STATS:
        return FL_WIRE_RESULT_STATS;
    case FL_WIRE_TASK_TRAIN:
    case FL_WIRE_TASK_MASKED_INPUT:
        return FL_WIRE_RESULT_TRAIN;
    case FL_WIRE_TASK_EVALUATE:
        return FL_WIRE_RESULT_EVAL;
    case FL_WIRE_TASK_ADVERTISE_KEYS:
        return FL_WIRE_RESULT_KEYS;
    case FL_WIRE_TASK_SHARE_KEYS:
        return FL_WIRE_RESULT_SHARES;
    case FL_WIRE_TASK_UNMASK:
        return FL_WIRE_RESULT_UNMASK;
    default:
        return FL_WIRE_RESULT_NONE;
    }
}

/* Federation, round, step, stage, kind, chunking and the result's type:
 * everything that says whether this message belongs here at all. */
static int submit_header_check(vctx *v, const fl_wire_submit *m, const fl_wire_expect *ex) {
    int rc;
    if ((rc = want_enum(v, "Submit.kind", (int)m->kind, FL_WIRE_TASK_COUNT, true,
                        fl_wire_task_kind_name)) ||
        (rc = want_enum(v, "Submit.stage", (int)m->stage, FL_WIRE_STAGE_COUNT, true,
                        fl_wire_stage_name)) ||
        (rc = want_fed(v, "Submit", m->federation_id, ex)))
        return rc;
    if (ex && ex->round && m->round != *ex->round)
        return bad(v, "Submit.round: %" PRIu64 ", expected %" PRIu64, m->round, *ex->round);
    if (ex && ex->step && m->step != ex->step)
        return bad(v, "Submit.step: %" PRIu32 ", expected %" PRIu32, m->step, ex->step);
    if (ex && ex->stage && m->stage != ex->stage)
        return bad(v, "Submit.stage: %s, expected %s", fl_wire_stage_name((int)m->stage),
                   fl_wire_stage_name((int)ex->stage));
    if (ex && ex->kind && m->kind != ex->kind)
        return bad(v, "Submit.kind: %s, expected %s", fl_wire_task_kind_name((int)m->kind),
                   fl_wire_task_kind_name((int)ex->kind));
    fl_wire_result_kind want = result_for(m->kind);
    if (want == FL_WIRE_RESULT_NONE)
        return bad(v, "Submit.kind: %s, not a task that is answered",
                   fl_wire_task_kind_name((int)m->kind));
    if (m->stage != fl_wire_task_stage(m->kind))
        return bad(v, "Submit.stage: %s, expected %s for a %s result",
                   fl_wire_stage_name((int)m->stage),
                   fl_wire_stage_name((int)fl_wire_task_stage(m->kind)),
                   fl_wire_task_kind_name((int)m->kind));
    if ((rc = want_enum(v, "Submit.result", (int)m->result, FL_WIRE_RESULT_COUNT, true,
                        result_name)))
        return rc;
    bool masked_ok = m->kind == FL_WIRE_TASK_MASKED_INPUT &&
                     (m->result == FL_WIRE_RESULT_STATS || m->result == FL_WIRE_RESULT_EVAL);
    if (m->result != want && !masked_ok)
        return bad(v, "Submit.result: %s, expected %s for a %s task", result_name((int)m->result),
                   m->kind == FL_WIRE_TASK_MASKED_INPUT ? "train, stats or eval"
                                                        : result_name((int)want),
                   fl_wire_task_kind_name((int)m->kind));

    uint32_t n_chunks = m->n_chunks ? m->n_chunks : 1;
    if ((rc = want_u64(v, "Submit.n_chunks", n_chunks, 1, FL_WIRE_MAX_CHUNKS))) return rc;
    if (m->chunk_index >= n_chunks)
        return bad(v, "Submit.chunk_index: %" PRIu32 ", expected < n_chunks %" PRIu32,
                   m->chunk_index, n_chunks);
    if (n_chunks > 1) {
        if (m->result != FL_WIRE_RESULT_TRAIN || m->train.refused)
            return bad(v, "Submit.n_chunks: %" PRIu32 ", but only a training vector is chunked",
                       n_chunks);
        if (!m->upload_id) return bad(v, "Submit.upload_id: 0 in a chunked upload");
        if (!m->has_total_sha256) return bad(v, "Submit.total_sha256: missing in a chunked upload");
    }
    return 0;
}

/* The vector of a train result against the chunking fields. */
static int train_vector_check(vctx *v, const fl_wire_submit *m, const fl_wire_expect *ex) {
    const fl_wire_train_result *t = &m->train;
    bool masked = m->kind == FL_WIRE_TASK_MASKED_INPUT;
    const char *path = masked ? "Submit.train.masked" : "Submit.train.update";
    uint64_t n = masked ? t->n_masked : t->n_update;
    uint64_t total = ex ? (masked ? ex->n_masked : ex->n_params) : 0;
    uint32_t n_chunks = m->n_chunks ? m->n_chunks : 1;
    if (masked ? t->n_update : t->n_masked)
        return bad(v, "Submit.train.%s: %" PRIu64 " values in a %s result",
                   masked ? "update" : "masked", masked ? t->n_update : t->n_masked,
                   fl_wire_task_kind_name((int)m->kind));
    if (!n) return bad(v, "%s: empty", path);
    if (n && !(masked ? (const void *)t->masked : (const void *)t->update))
        return bad(v, "%s: missing array of %" PRIu64 " values", path, n);
    if (total) {
        uint32_t want_chunks = fl_wire_chunk_count(total);
        if (n_chunks != want_chunks)
            return bad(v,
                       "Submit.n_chunks: %" PRIu32 ", expected %" PRIu32 " for %" PRIu64 " values",
                       n_chunks, want_chunks, total);
        uint64_t want = m->chunk_index + 1 < n_chunks
                            ? FL_WIRE_CHUNK_VALUES
                            : total - (uint64_t)m->chunk_index * FL_WIRE_CHUNK_VALUES;
        if (n != want) {
            if (n_chunks > 1)
                return bad(v,
                           "%s: %" PRIu64 " values in chunk %" PRIu32 " of %" PRIu32
                           ", expected %" PRIu64,
                           path, n, m->chunk_index, n_chunks, want);
            return bad(v, "%s: %" PRIu64 " values, expected %" PRIu64, path, n, want);
        }
    } else if (m->chunk_index + 1 < n_chunks ? n != FL_WIRE_CHUNK_VALUES
                                             : n > FL_WIRE_CHUNK_VALUES) {
        return bad(v, "%s: %" PRIu64 " values in chunk %" PRIu32 " of %" PRIu32 ", expected %s %u",
                   path, n, m->chunk_index, n_chunks,
                   m->chunk_index + 1 < n_chunks ? "exactly" : "at most", FL_WIRE_CHUNK_VALUES);
    }
    if (!masked)
        for (uint64_t i = 0; i < n; i++)
            if (!isfinite(t->update[i]))
                return bad(v, "%s[%" PRIu64 "]: not finite", path,
                           (uint64_t)m->chunk_index * FL_WIRE_CHUNK_VALUES + i);
    return 0;
}

static int train_result_check(vctx *v, const fl_wire_submit *m, const fl_wire_expect *ex) {
    const fl_wire_train_result *t = &m->train;
    int rc;
    if ((rc = want_ascii(v, "Submit.train.accountant", t->accountant, FL_WIRE_ACCOUNTANT_LEN)) ||
        (rc = want_text(v, "Submit.train.refusal_reason", t->refusal_reason, FL_WIRE_REASON_LEN,
                        t->refused)) ||
        (rc = want_real(v, "Submit.train.train_loss", t->train_loss, 0, false, INFINITY, false)) ||
        (rc = want_real(v, "Submit.train.epsilon_spent", t->epsilon_spent, 0, false, INFINITY,
                        false)))
        return rc;
    if (t->refused) {
        if (t->n_update || t->n_masked)
            return bad(v, "Submit.train.%s: %" PRIu64 " values in a refusal",
                       t->n_update ? "update" : "masked", t->n_update ? t->n_update : t->n_masked);
        return want_u64(v, "Submit.train.n_examples", t->n_examples, 0, FL_WIRE_MAX_EXAMPLES);
    }
    if ((rc = want_u64(v, "Submit.train.n_examples", t->n_examples, 1, FL_WIRE_MAX_EXAMPLES)))
        return rc;
    return train_vector_check(v, m, ex);
}

static int eval_result_check(vctx *v, const fl_wire_eval_result *e, bool masked,
                             const fl_wire_expect *ex) {
    int rc;
    if ((rc = want_real(v, "Submit.eval.loss_sum", e->loss_sum, 0, false, INFINITY, false)) ||
        (rc = want_u64(v, "Submit.eval.count", e->count, 0, FL_WIRE_MAX_EXAMPLES)))
        return rc;
    if (e->correct > e->count)
        return bad(v, "Submit.eval.correct: %" PRIu64 ", more than count %" PRIu64, e->correct,
                   e->count);
    if (masked) {
        if (e->n_hist || e->n_fairness)
            return bad(v, "Submit.eval.%s: plain counts in a masked result",
                       e->n_hist ? "score_hist" : "fairness");
        if ((rc = want_u64(v, "Submit.eval.masked", e->n_masked, 1, FL_WIRE_MAX_VECTOR_VALUES)))
            return rc;
        if (ex && ex->n_masked && e->n_masked != ex->n_masked)
            return bad(v, "Submit.eval.masked: %" PRIu64 " values, expected %" PRIu64, e->n_masked,
                       ex->n_masked);
        if (!e->masked) return bad(v, "Submit.eval.masked: missing array");
        return 0;
    }
    if (e->n_masked)
        return bad(v, "Submit.eval.masked: %" PRIu64 " values in a plain result", e->n_masked);
    if ((rc = want_u64(v, "Submit.eval.score_hist", e->n_hist, 0, FL_WIRE_MAX_HIST)) ||
        (rc = want_u64(v, "Submit.eval.fairness", e->n_fairness, 0, FL_WIRE_MAX_FAIRNESS)))
        return rc;
    if (ex && ex->n_hist && e->n_hist != ex->n_hist)
        return bad(v, "Submit.eval.score_hist: %" PRIu32 " values, expected %" PRIu32, e->n_hist,
                   ex->n_hist);
    if (ex && ex->n_fairness && e->n_fairness != ex->n_fairness)
        return bad(v, "Submit.eval.fairness: %" PRIu32 " values, expected %" PRIu32, e->n_fairness,
                   ex->n_fairness);
    if ((e->n_hist && !e->score_hist) || (e->n_fairness && !e->fairness))
        return bad(v, "Submit.eval: missing array");
    return 0;
}

static int submit_payload_check(vctx *v, const fl_wire_submit *m, const fl_wire_expect *ex) {
    bool masked = m->kind == FL_WIRE_TASK_MASKED_INPUT;
    uint32_t *seed = NULL, *key = NULL;
    int rc = 0;
    switch (m->result) {
    case FL_WIRE_RESULT_STATS:
        return check_stats(v, "Submit.stats", &m->stats, masked, ex);
    case FL_WIRE_RESULT_TRAIN:
        return train_result_check(v, m, ex);
    case FL_WIRE_RESULT_EVAL:
        return eval_result_check(v, &m->eval, masked, ex);
    case FL_WIRE_RESULT_KEYS:
        return check_keys(v, "Submit.keys", &m->keys);
    case FL_WIRE_RESULT_SHARES:
        if (!m->shares.n) return bad(v, "Submit.shares: empty");
        return want_shares(v, "Submit.shares", m->shares.shares, m->shares.n, NULL);
    case FL_WIRE_RESULT_UNMASK:
        if ((rc = want_shares(v, "Submit.unmask.seed_shares", m->unmask.seed_shares.shares,
                              m->unmask.seed_shares.n, &seed)) ||
            (rc = want_shares(v, "Submit.unmask.key_shares", m->unmask.key_shares.shares,
                              m->unmask.key_shares.n, &key)))
            goto cleanup;
        /* Both shares of one peer would let the aggregator strip every mask
         * from that peer's input (DESIGN.md §9). */
        uint32_t both = common_id(seed, m->unmask.seed_shares.n, key, m->unmask.key_shares.n);
        if (both) rc = bad(v, "Submit.unmask: both shares of site %" PRIu32 " revealed", both);
        goto cleanup;
    default:
        return bad(v, "Submit.result: missing");
    }
cleanup:
    free(seed);
    free(key);
    return rc;
}

static int submit_check(vctx *v, const fl_wire_submit *m, const fl_wire_expect *ex) {
    int rc = submit_header_check(v, m, ex);
    return rc ? rc : submit_payload_check(v, m, ex);
}

int fl_wire_pack_submit(uint8_t **out, size_t *len, const fl_wire_submit *m, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EINVAL};
    pk_arena a = {0};
    int rc;
    if ((rc = pack_begin(&v, "Submit", out, len, m)) || (rc = submit_check(&v, m, NULL))) return rc;
    Cohort__V1__SubmitRequest pb = COHORT__V1__SUBMIT_REQUEST__INIT;
    Cohort__V1__StatsResult stats;
    Cohort__V1__TrainResult train = COHORT__V1__TRAIN_RESULT__INIT;
    Cohort__V1__EvalResult eval = COHORT__V1__EVAL_RESULT__INIT;
    Cohort__V1__PublicKeys keys;
    Cohort__V1__ShareKeysResult shares = COHORT__V1__SHARE_KEYS_RESULT__INIT;
    Cohort__V1__UnmaskResult unmask = COHORT__V1__UNMASK_RESULT__INIT;

    pb.federation_id = (char *)m->federation_id;
    pb.round = m->round;
    pb.step = m->step;
    pb.stage = (Cohort__V1__Stage)m->stage;
    pb.kind = (Cohort__V1__TaskKind)m->kind;
    pb.upload_id = m->upload_id;
    pb.chunk_index = m->chunk_index;
    pb.n_chunks = m->n_chunks ? m->n_chunks : 1;
    if (m->has_total_sha256) pb.total_sha256 = bin(m->total_sha256, FL_WIRE_SHA256_BYTES);
    switch (m->result) {
    case FL_WIRE_RESULT_STATS:
        stats_out(&stats, &m->stats);
        pb.result_case = COHORT__V1__SUBMIT_REQUEST__RESULT_STATS;
        pb.stats = &stats;
        break;
    case FL_WIRE_RESULT_TRAIN: {
        const fl_wire_train_result *t = &m->train;
        train.n_update = t->n_update;
        train.update = t->update;
        train.n_masked = t->n_masked;
        train.masked = t->masked;
        train.n_examples = t->n_examples;
        train.train_loss = t->train_loss;
        train.epsilon_spent = t->epsilon_spent;
        train.accountant = (char *)t->accountant;
        train.refused = t->refused;
        train.refusal_reason = (char *)t->refusal_reason;
        pb.result_case = COHORT__V1__SUBMIT_REQUEST__RESULT_TRAIN;
        pb.train = &train;
        break;
    }
    case FL_WIRE_RESULT_EVAL:
        eval.loss_sum = m->eval.loss_sum;
        eval.correct = m->eval.correct;
        eval.count = m->eval.count;
        eval.n_score_hist = m->eval.n_hist;
        eval.score_hist = m->eval.score_hist;
        eval.n_fairness = m->eval.n_fairness;
        eval.fairness = m->eval.fairness;
        eval.n_masked = m->eval.n_masked;
        eval.masked = m->eval.masked;
        pb.result_case = COHORT__V1__SUBMIT_REQUEST__RESULT_EVAL;
        pb.eval = &eval;
        break;
    case FL_WIRE_RESULT_KEYS:
        keys_out(&keys, &m->keys);
        pb.result_case = COHORT__V1__SUBMIT_REQUEST__RESULT_KEYS;
        pb.keys = &keys;
        break;
    case FL_WIRE_RESULT_SHARES:
        shares.n_shares = m->shares.n;
        if (!(shares.shares = enc_shares_out(&a, m->shares.shares, m->shares.n))) {
            rc = nomem(&v, "Submit.shares");
            goto cleanup;
        }
        pb.result_case = COHORT__V1__SUBMIT_REQUEST__RESULT_SHARES;
        pb.shares = &shares;
        break;
    case FL_WIRE_RESULT_UNMASK:
        unmask.n_seed_shares = m->unmask.seed_shares.n;
        unmask.n_key_shares = m->unmask.key_shares.n;
        if (!(unmask.seed_shares = peer_shares_out(&a, &m->unmask.seed_shares)) ||
            !(unmask.key_shares = peer_shares_out(&a, &m->unmask.key_shares))) {
            rc = nomem(&v, "Submit.unmask");
            goto cleanup;
        }
        pb.result_case = COHORT__V1__SUBMIT_REQUEST__RESULT_UNMASK;
        pb.unmask = &unmask;
        break;
    default:
        break;
    }
    rc = pack_pb(&v, "Submit", out, len, &pb.base);
cleanup:
    pk_free(&a);
    return rc;
}

static int submit_payload_in(vctx *v, fl_wire_submit *m, const Cohort__V1__SubmitRequest *pb) {
    int rc;
    switch (pb->result_case) {
    case COHORT__V1__SUBMIT_REQUEST__RESULT_STATS:
        return stats_in(v, "Submit.stats", &m->stats, pb->stats);
    case COHORT__V1__SUBMIT_REQUEST__RESULT_TRAIN: {
        const Cohort__V1__TrainResult *t = pb->train;
        fl_wire_train_result *d = &m->train;
        if ((rc = str_in(v, "Submit.train.accountant", d->accountant, FL_WIRE_ACCOUNTANT_LEN,
                         t->accountant)) ||
            (rc = str_in(v, "Submit.train.refusal_reason", d->refusal_reason, FL_WIRE_REASON_LEN,
                         t->refusal_reason)))
            return rc;
        if (t->n_update > FL_WIRE_CHUNK_VALUES || t->n_masked > FL_WIRE_CHUNK_VALUES)
            return bad(v, "Submit.train.%s: %zu values, limit %u per chunk",
                       t->n_update > FL_WIRE_CHUNK_VALUES ? "update" : "masked",
                       t->n_update > FL_WIRE_CHUNK_VALUES ? t->n_update : t->n_masked,
                       FL_WIRE_CHUNK_VALUES);
        if ((rc = dup_array(v, "Submit.train.update", (void **)&d->update, t->update, t->n_update,
                            sizeof *d->update)) ||
            (rc = dup_array(v, "Submit.train.masked", (void **)&d->masked, t->masked, t->n_masked,
                            sizeof *d->masked)))
            return rc;
        d->n_update = t->n_update;
        d->n_masked = t->n_masked;
        d->offset = (uint64_t)m->chunk_index * FL_WIRE_CHUNK_VALUES;
        d->n_examples = t->n_examples;
        d->train_loss = t->train_loss;
        d->epsilon_spent = t->epsilon_spent;
        d->refused = t->refused;
        return 0;
    }
    case COHORT__V1__SUBMIT_REQUEST__RESULT_EVAL: {
        const Cohort__V1__EvalResult *e = pb->eval;
        fl_wire_eval_result *d = &m->eval;
        if (e->n_score_hist > FL_WIRE_MAX_HIST || e->n_fairness > FL_WIRE_MAX_FAIRNESS ||
            e->n_masked > FL_WIRE_MAX_VECTOR_VALUES)
            return bad(v,
                       "Submit.eval: %zu histogram, %zu fairness and %zu masked values, limits "
                       "%u, %u and %u",
                       e->n_score_hist, e->n_fairness, e->n_masked, FL_WIRE_MAX_HIST,
                       FL_WIRE_MAX_FAIRNESS, FL_WIRE_MAX_VECTOR_VALUES);
        if ((rc = dup_array(v, "Submit.eval", (void **)&d->score_hist, e->score_hist,
                            e->n_score_hist, sizeof *d->score_hist)) ||
            (rc = dup_array(v, "Submit.eval", (void **)&d->fairness, e->fairness, e->n_fairness,
                            sizeof *d->fairness)) ||
            (rc = dup_array(v, "Submit.eval", (void **)&d->masked, e->masked, e->n_masked,
                            sizeof *d->masked)))
            return rc;
        d->n_hist = (uint32_t)e->n_score_hist;
        d->n_fairness = (uint32_t)e->n_fairness;
        d->n_masked = e->n_masked;
        d->loss_sum = e->loss_sum;
        d->correct = e->correct;
        d->count = e->count;
        return 0;
    }
    case COHORT__V1__SUBMIT_REQUEST__RESULT_KEYS:
        return keys_in(v, "Submit.keys", &m->keys, pb->keys);
    case COHORT__V1__SUBMIT_REQUEST__RESULT_SHARES:
        return enc_shares_in(v, "Submit.shares", &m->shares.shares, &m->shares.n,
                             pb->shares->shares, pb->shares->n_shares);
    case COHORT__V1__SUBMIT_REQUEST__RESULT_UNMASK:
        if ((rc = peer_shares_in(v, "Submit.unmask.seed_shares", &m->unmask.seed_shares,
                                 pb->unmask->seed_shares, pb->unmask->n_seed_shares)))
            return rc;
        return peer_shares_in(v, "Submit.unmask.key_shares", &m->unmask.key_shares,
                              pb->unmask->key_shares, pb->unmask->n_key_shares);
    default:
        return 0;
    }
}

static fl_wire_result_kind result_kind_in(Cohort__V1__SubmitRequest__ResultCase c) {
    switch (c) {
    case COHORT__V1__SUBMIT_REQUEST__RESULT_STATS:
        return FL_WIRE_RESULT_STATS;
    case COHORT__V1__SUBMIT_REQUEST__RESULT_TRAIN:
        return FL_WIRE_RESULT_TRAIN;
    case COHORT__V1__SUBMIT_REQUEST__RESULT_EVAL:
        return FL_WIRE_RESULT_EVAL;
    case COHORT__V1__SUBMIT_REQUEST__RESULT_KEYS:
        return FL_WIRE_RESULT_KEYS;
    case COHORT__V1__SUBMIT_REQUEST__RESULT_SHARES:
        return FL_WIRE_RESULT_SHARES;
    case COHORT__V1__SUBMIT_REQUEST__RESULT_UNMASK:
        return FL_WIRE_RESULT_UNMASK;
    default:
        return FL_WIRE_RESULT_NONE;
    }
}

int fl_wire_unpack_submit(fl_wire_submit *m, const uint8_t *buf, size_t len,
                          const fl_wire_expect *expect, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EPROTO};
    ProtobufCMessage *raw = NULL;
    int rc;
    if (!m) return fl_seterr(err, FL_EINVAL, "Submit: NULL output");
    memset(m, 0, sizeof *m);
    if ((rc = unpack_pb(&v, "Submit", &cohort__v1__submit_request__descriptor, buf, len, &raw)))
        goto cleanup;
    const Cohort__V1__SubmitRequest *pb = (const Cohort__V1__SubmitRequest *)raw;
    if ((rc = str_in(&v, "Submit.federation_id", m->federation_id, FL_WIRE_ID_LEN,
                     pb->federation_id)) ||
        (rc = fixed_opt_in(&v, "Submit.total_sha256", m->total_sha256, FL_WIRE_SHA256_BYTES,
                           &m->has_total_sha256, pb->total_sha256)))
        goto cleanup;
    m->round = pb->round;
    m->step = pb->step;
    m->stage = (fl_wire_stage)pb->stage;
    m->kind = (fl_wire_task_kind)pb->kind;
    m->upload_id = pb->upload_id;
    m->chunk_index = pb->chunk_index;
    m->n_chunks = pb->n_chunks ? pb->n_chunks : 1;
    m->result = result_kind_in(pb->result_case);
    /* The refusal flag decides whether chunking is allowed, so it is read
     * with the header. */
    if (m->result == FL_WIRE_RESULT_TRAIN) m->train.refused = pb->train->refused;
    if ((rc = submit_header_check(&v, m, expect)) || (rc = submit_payload_in(&v, m, pb)) ||
        (rc = submit_payload_check(&v, m, expect)))
        goto cleanup;
cleanup:
    if (raw) protobuf_c_message_free_unpacked(raw, NULL);
    if (rc) fl_wire_submit_free(m);
    return rc;
}

void fl_wire_submit_free(fl_wire_submit *m) {
    if (!m) return;
    switch (m->result) {
    case FL_WIRE_RESULT_STATS:
        stats_free(&m->stats);
        break;
    case FL_WIRE_RESULT_TRAIN:
        free(m->train.update);
        free(m->train.masked);
        break;
    case FL_WIRE_RESULT_EVAL:
        free(m->eval.score_hist);
        free(m->eval.fairness);
        free(m->eval.masked);
        break;
    case FL_WIRE_RESULT_SHARES:
        free(m->shares.shares);
        break;
    case FL_WIRE_RESULT_UNMASK:
        free(m->unmask.seed_shares.shares);
        free(m->unmask.key_shares.shares);
        break;
    default:
        break;
    }
    memset(m, 0, sizeof *m);
}

/* ========================== SubmitResponse ========================== */

static int submit_response_check(vctx *v, const fl_wire_submit_response *m) {
    /* A refusal always says why: the site logs it and the operator reads it. */
    return want_text(v, "SubmitResponse.reason", m->reason, FL_WIRE_REASON_LEN, !m->accepted);
}

int fl_wire_pack_submit_response(uint8_t **out, size_t *len, const fl_wire_submit_response *m,
                                 char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EINVAL};
    int rc;
    if ((rc = pack_begin(&v, "SubmitResponse", out, len, m)) || (rc = submit_response_check(&v, m)))
        return rc;
    Cohort__V1__SubmitResponse pb = COHORT__V1__SUBMIT_RESPONSE__INIT;
    pb.accepted = m->accepted;
    pb.reason = (char *)m->reason;
    return pack_pb(&v, "SubmitResponse", out, len, &pb.base);
}

int fl_wire_unpack_submit_response(fl_wire_submit_response *m, const uint8_t *buf, size_t len,
                                   const fl_wire_expect *expect, char err[FL_ERR_LEN]) {
    vctx v = {err, FL_EPROTO};
    ProtobufCMessage *raw = NULL;
    int rc;
    (void)expect;
    if (!m) return fl_seterr(err, FL_EINVAL, "SubmitResponse: NULL output");
    memset(m, 0, sizeof *m);
    if ((rc = unpack_pb(&v, "SubmitResponse", &cohort__v1__submit_response__descriptor, buf, len,
                        &raw)))
        goto cleanup;
    const Cohort__V1__SubmitResponse *pb = (const Cohort__V1__SubmitResponse *)raw;
    m->accepted = pb->accepted;
    if ((rc = str_in(&v, "SubmitResponse.reason", m->reason, FL_WIRE_REASON_LEN, pb->reason)))
        goto cleanup;
    rc = submit_response_check(&v, m);
cleanup:
    if (raw) protobuf_c_message_free_unpacked(raw, NULL);
    if (rc) fl_wire_submit_response_free(m);
    return rc;
}

void fl_wire_submit_response_free(fl_wire_submit_response *m) {
    if (m) memset(m, 0, sizeof *m);
}
