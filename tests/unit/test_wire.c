/* test_wire.c: the wire protocol (proto/wire.h, docs/protocol.md). Every
 * message survives pack -> unpack -> pack unchanged; every validation rule
 * refuses with the right code and names the field; a failed unpack leaves its
 * struct zeroed; the encoding of a float update stays within 10% of 4 bytes a
 * value. Inputs a well-behaved peer could never produce (NaN on the wire, an
 * enum out of range, an oversized string) are written with a tiny protobuf
 * encoder below, since pack refuses them. Every unpack reads from a heap copy
 * of exactly the message's size, so the ASan build catches any over-read. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "core/rng.h"
#include "proto/wire.h"

#define assert_err(rc, code, err, sub)                                                             \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != (code)) fail_msg("rc %d, expected %d (err '%s')", rc_, (code), (err));          \
        if (!strstr((err), (sub))) fail_msg("error '%s' does not contain '%s'", (err), (sub));     \
    } while (0)

/* True when n bytes at p are all zero: what a failed unpack leaves. */
static int all_zero(const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i]) return 0;
    return 1;
}

static uint8_t *heap_copy(const uint8_t *buf, size_t len) {
    uint8_t *c = malloc(len ? len : 1);
    assert_non_null(c);
    if (len) memcpy(c, buf, len);
    return c;
}

/* unpack_X on an exact-size heap copy; on failure the struct must be zero. */
#define DEFINE_UNPACK(name, type)                                                                  \
    static int unpack_##name(type *m, const uint8_t *buf, size_t len, const fl_wire_expect *ex,    \
                             char *err) {                                                          \
        uint8_t *c = heap_copy(buf, len);                                                          \
        err[0] = '\0';                                                                             \
        int rc = fl_wire_unpack_##name(m, c, len, ex, err);                                        \
        free(c);                                                                                   \
        if (rc) {                                                                                  \
            assert_true(all_zero(m, sizeof *m));                                                   \
            assert_true(err[0] != '\0');                                                           \
        }                                                                                          \
        return rc;                                                                                 \
    }
DEFINE_UNPACK(join, fl_wire_join)
DEFINE_UNPACK(join_response, fl_wire_join_response)
DEFINE_UNPACK(poll, fl_wire_poll)
DEFINE_UNPACK(task, fl_wire_task)
DEFINE_UNPACK(fetch, fl_wire_fetch)
DEFINE_UNPACK(chunk, fl_wire_chunk)
DEFINE_UNPACK(submit, fl_wire_submit)
DEFINE_UNPACK(submit_response, fl_wire_submit_response)

/* ====================== a minimal protobuf writer ====================== */

typedef struct pbw {
    uint8_t *b;
    size_t n, cap;
} pbw;

static void w_raw(pbw *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->b = realloc(w->b, w->cap);
        assert_non_null(w->b);
    }
    if (n) memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void w_varint(pbw *w, uint64_t x) {
    uint8_t t[10];
    size_t k = 0;
    while (x >= 0x80) {
        t[k++] = (uint8_t)(x | 0x80);
        x >>= 7;
    }
    t[k++] = (uint8_t)x;
    w_raw(w, t, k);
}
static void w_u(pbw *w, unsigned field, uint64_t x) {
    w_varint(w, (uint64_t)field << 3);
    w_varint(w, x);
}
static void w_bytes(pbw *w, unsigned field, const void *p, size_t n) {
    w_varint(w, (uint64_t)field << 3 | 2);
    w_varint(w, n);
    w_raw(w, p, n);
}
static void w_str(pbw *w, unsigned field, const char *s) {
    w_bytes(w, field, s, strlen(s));
}
static void w_msg(pbw *w, unsigned field, pbw *inner) {
    w_bytes(w, field, inner->b, inner->n);
    free(inner->b);
    memset(inner, 0, sizeof *inner);
}
static void w_double(pbw *w, unsigned field, double x) {
    w_varint(w, (uint64_t)field << 3 | 1);
    w_raw(w, &x, 8); /* little-endian hosts only, like protobuf-c's fast path */
}

/* ============================ fixtures ============================ */

static const uint64_t ROUND = 4;
static uint8_t SHA_A[32], SHA_B[32];

static void fill(uint8_t *p, size_t n, uint8_t seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + 7 * i);
}

static fl_wire_privacy privacy_record(void) {
    return (fl_wire_privacy){FL_WIRE_PRIVACY_RECORD, 1.1, 1.0, 1e-5, 3.0};
}

static fl_wire_join mk_join(void) {
    fl_wire_join m = {0};
    strcpy(m.agent_version, "cohort-agent 0.1.0");
    m.n_examples = 812;
    m.n_features = 23;
    m.n_classes = 2;
    m.has_schema_sha256 = true;
    memcpy(m.schema_sha256, SHA_A, 32);
    return m;
}

static fl_wire_join_response mk_join_response(void) {
    fl_wire_join_response m = {0};
    strcpy(m.federation_id, "fed-1");
    strcpy(m.model_spec, "mlp:64,32");
    m.n_features = 23;
    m.n_classes = 2;
    m.n_params = 23 * 64 + 64 + 64 * 32 + 32 + 33;
    memcpy(m.schema_sha256, SHA_A, 32);
    m.privacy = privacy_record();
    m.secagg = (fl_wire_secagg_config){.enabled = true,
                                       .threshold = 0.66,
                                       .neighbors = 4,
                                       .clip_range = 2.0,
                                       .quantization_range = 1u << 16};
    m.rounds = 10;
    m.site_id = 3;
    return m;
}

static fl_wire_task mk_task_train(void) {
    fl_wire_task m = {0};
    m.kind = FL_WIRE_TASK_TRAIN;
    strcpy(m.federation_id, "fed-1");
    m.round = ROUND;
    m.step = 9;
    m.stage = FL_WIRE_STAGE_TRAIN;
    m.deadline_unix_ms = 1800000000000;
    m.has_model = true;
    memcpy(m.model.sha256, SHA_B, 32);
    m.model.n_params = 1024;
    m.model.total_bytes = 4 * 1024 + 64;
    m.has_train = true;
    m.train = (fl_wire_train_config){.local_epochs = 2,
                                     .batch_size = 64,
                                     .optimizer = FL_WIRE_OPT_SGD,
                                     .lr = 0.1,
                                     .momentum = 0.9,
                                     .weight_decay = 1e-4,
                                     .prox_mu = 0.01,
                                     .seed = 42,
                                     .dp = privacy_record()};
    return m;
}

/* A statistics layout: two numeric columns and one categorical with 3
 * levels. The arrays are static: the fixtures are only packed. */
static uint64_t st_count[3] = {90, 100, 0};
static double st_sum[3] = {4500.5, -12.25, 0};
static double st_sumsq[3] = {250000, 80, 0};
static uint32_t st_off[4] = {0, 0, 0, 3};
static uint64_t st_levels[3] = {50, 30, 20};

static fl_wire_stats mk_stats(void) {
    return (fl_wire_stats){.n_rows = 100,
                           .n_cols = 3,
                           .count = st_count,
                           .sum = st_sum,
                           .sumsq = st_sumsq,
                           .level_offsets = st_off,
                           .n_levels = 3,
                           .level_counts = st_levels};
}

static char lv_home[3][FL_WIRE_MAX_NAME] = {"owner", "rent", "Zürich"};
static fl_wire_stats_column spec_cols[3] = {
    {"Age", false, 0, NULL}, {"Income", false, 0, NULL}, {"Home", true, 3, lv_home}};

static fl_wire_task mk_task_stats(void) {
    fl_wire_task m = {0};
    m.kind = FL_WIRE_TASK_STATS;
    strcpy(m.federation_id, "fed-1");
    m.round = 0;
    m.stage = FL_WIRE_STAGE_STATS;
    m.deadline_unix_ms = 1800000000000;
    m.has_stats = true;
    m.stats = (fl_wire_stats_spec){3, spec_cols};
    return m;
}

static uint8_t cert_a[300], cert_b[280];
static fl_wire_site_keys site_keys[2];
static fl_wire_share shares3[3];
static uint32_t survivors[3] = {1, 2, 5}, dropped[1] = {7};

static void init_secagg_fixtures(void) {
    for (int i = 0; i < 2; i++) {
        site_keys[i].site_id = (uint32_t)(i + 1);
        fill(site_keys[i].keys.enc_pk, 32, (uint8_t)(10 + i));
        fill(site_keys[i].keys.mask_pk, 32, (uint8_t)(20 + i));
        site_keys[i].keys.signature_len = 71;
        fill(site_keys[i].keys.signature, 71, (uint8_t)(30 + i));
    }
    fill(cert_a, sizeof cert_a, 1);
    fill(cert_b, sizeof cert_b, 2);
    site_keys[0].cert = cert_a;
    site_keys[0].cert_len = sizeof cert_a;
    site_keys[1].cert = cert_b;
    site_keys[1].cert_len = sizeof cert_b;
    for (int i = 0; i < 3; i++) {
        shares3[i].peer = (uint32_t)(2 * i + 1);
        shares3[i].len = (uint32_t)(100 + i);
        fill(shares3[i].data, shares3[i].len, (uint8_t)(40 + i));
    }
}

static fl_wire_task mk_task_secagg(fl_wire_task_kind kind) {
    fl_wire_task m = {0};
    m.kind = kind;
    strcpy(m.federation_id, "fed-1");
    m.round = ROUND;
    m.step = 11;
    m.stage = fl_wire_task_stage(kind);
    m.deadline_unix_ms = 1800000000000;
    m.has_secagg = true;
    m.secagg = (fl_wire_secagg_config){.enabled = true,
                                       .threshold = 0.66,
                                       .neighbors = 0,
                                       .clip_range = 2.0,
                                       .quantization_range = 1u << 16};
    if (kind == FL_WIRE_TASK_SHARE_KEYS) {
        m.n_site_keys = 2;
        m.site_keys = site_keys;
    } else if (kind == FL_WIRE_TASK_MASKED_INPUT) {
        fl_wire_task t = mk_task_train();
        m.has_model = true;
        m.model = t.model;
        m.has_train = true;
        m.train = t.train;
        m.n_shares = 3;
        m.shares = shares3;
    } else if (kind == FL_WIRE_TASK_UNMASK) {
        m.n_survivors = 3;
        m.survivors = survivors;
        m.n_dropped = 1;
        m.dropped = dropped;
    }
    return m;
}

static fl_wire_fetch mk_fetch(void) {
    fl_wire_fetch m = {0};
    strcpy(m.federation_id, "fed-1");
    m.round = ROUND;
    memcpy(m.sha256, SHA_B, 32);
    m.offset = 4096;
    m.max_bytes = 1000;
    return m;
}

static uint8_t chunk_data[1000];

static fl_wire_chunk mk_chunk(void) {
    fl_wire_chunk m = {0};
    m.offset = 4096;
    m.total_bytes = 5184;
    memcpy(m.sha256, SHA_B, 32);
    fill(chunk_data, sizeof chunk_data, 9);
    m.data = chunk_data;
    m.len = sizeof chunk_data;
    return m;
}

static fl_wire_submit mk_submit_header(fl_wire_task_kind kind, fl_wire_result_kind result) {
    fl_wire_submit m = {0};
    strcpy(m.federation_id, "fed-1");
    m.round = ROUND;
    m.step = 9;
    m.kind = kind;
    m.stage = fl_wire_task_stage(kind);
    m.n_chunks = 1;
    m.result = result;
    return m;
}

/* A TRAIN submit whose update (n floats, malloc'd: caller frees) is
 * i * 0.001 - 0.5. */
static fl_wire_submit mk_submit_train(uint64_t n, float **update) {
    fl_wire_submit m = mk_submit_header(FL_WIRE_TASK_TRAIN, FL_WIRE_RESULT_TRAIN);
    float *u = malloc((n ? n : 1) * sizeof *u);
    assert_non_null(u);
    for (uint64_t i = 0; i < n; i++)
        u[i] = (float)i * 0.001f - 0.5f;
    *update = u;
    m.train.update = u;
    m.train.n_update = n;
    m.train.n_examples = 812;
    m.train.train_loss = 0.43;
    m.train.epsilon_spent = 0.21;
    strcpy(m.train.accountant, "rdp");
    return m;
}

static uint64_t ev_hist[8] = {5, 10, 20, 15, 14, 20, 10, 6};
static uint64_t ev_fair[4] = {3, 4, 5, 6};
static uint32_t masked_words[6] = {0xdeadbeef, 1, 2, 3, 0xffffffff, 0};

static fl_wire_submit mk_submit_eval(void) {
    fl_wire_submit m = mk_submit_header(FL_WIRE_TASK_EVALUATE, FL_WIRE_RESULT_EVAL);
    m.eval = (fl_wire_eval_result){.loss_sum = 41.5,
                                   .correct = 80,
                                   .count = 100,
                                   .n_hist = 8,
                                   .score_hist = ev_hist,
                                   .n_fairness = 4,
                                   .fairness = ev_fair};
    return m;
}

/* ===================== pack / unpack / repack ===================== */

/* Packs m, unpacks it into out (caller frees), packs out again and checks
 * the two encodings are identical. */
#define ROUND_TRIP(name, m, out)                                                                   \
    do {                                                                                           \
        uint8_t *b1 = NULL, *b2 = NULL;                                                            \
        size_t n1 = 0, n2 = 0;                                                                     \
        char e_[FL_ERR_LEN] = "";                                                                  \
        int rc_ = fl_wire_pack_##name(&b1, &n1, &(m), e_);                                         \
        if (rc_) fail_msg("pack " #name ": %d %s", rc_, e_);                                       \
        rc_ = unpack_##name(&(out), b1, n1, NULL, e_);                                             \
        if (rc_) fail_msg("unpack " #name ": %d %s", rc_, e_);                                     \
        assert_int_equal(fl_wire_pack_##name(&b2, &n2, &(out), e_), 0);                            \
        assert_int_equal(n1, n2);                                                                  \
        assert_memory_equal(b1, b2, n1);                                                           \
        free(b1);                                                                                  \
        free(b2);                                                                                  \
    } while (0)

/* Packs m (which must be valid) into a malloc'd buffer. */
#define PACK(name, m, buf, len)                                                                    \
    do {                                                                                           \
        char e_[FL_ERR_LEN] = "";                                                                  \
        int rc_ = fl_wire_pack_##name(&(buf), &(len), &(m), e_);                                   \
        if (rc_) fail_msg("pack " #name ": %d %s", rc_, e_);                                       \
    } while (0)

static void test_round_trip_join(void **state) {
    (void)state;
    fl_wire_join a = mk_join(), b;
    ROUND_TRIP(join, a, b);
    assert_string_equal(b.agent_version, a.agent_version);
    assert_int_equal(b.n_examples, 812);
    assert_int_equal(b.n_features, 23);
    assert_int_equal(b.n_classes, 2);
    assert_true(b.has_schema_sha256);
    assert_memory_equal(b.schema_sha256, SHA_A, 32);
    fl_wire_join_free(&b);

    fl_wire_join_response c = mk_join_response(), d;
    ROUND_TRIP(join_response, c, d);
    assert_string_equal(d.federation_id, "fed-1");
    assert_string_equal(d.model_spec, "mlp:64,32");
    assert_int_equal(d.n_params, c.n_params);
    assert_int_equal(d.privacy.mode, FL_WIRE_PRIVACY_RECORD);
    assert_true(d.privacy.noise_multiplier == 1.1 && d.privacy.delta == 1e-5);
    assert_true(d.secagg.enabled && d.secagg.threshold == 0.66 && d.secagg.neighbors == 4);
    assert_int_equal(d.rounds, 10);
    assert_int_equal(d.site_id, 3);
    fl_wire_join_response_free(&d);
    fl_wire_join_response_free(&d);
    fl_wire_join_response_free(NULL);
}

static void test_round_trip_poll_fetch_chunk(void **state) {
    (void)state;
    fl_wire_poll p = {.last_round_seen = 3}, q;
    strcpy(p.federation_id, "fed-1");
    ROUND_TRIP(poll, p, q);
    assert_string_equal(q.federation_id, "fed-1");
    assert_int_equal(q.last_round_seen, 3);
    fl_wire_poll_free(&q);

    fl_wire_fetch f = mk_fetch(), g;
    ROUND_TRIP(fetch, f, g);
    assert_int_equal(g.round, ROUND);
    assert_int_equal(g.offset, 4096);
    assert_int_equal(g.max_bytes, 1000);
    assert_memory_equal(g.sha256, SHA_B, 32);
    fl_wire_fetch_free(&g);

    fl_wire_chunk c = mk_chunk(), d;
    ROUND_TRIP(chunk, c, d);
    assert_int_equal(d.len, sizeof chunk_data);
    assert_memory_equal(d.data, chunk_data, sizeof chunk_data);
    assert_int_equal(d.total_bytes, c.total_bytes);
    fl_wire_chunk_free(&d);
    fl_wire_chunk_free(&d);

    /* The final, empty chunk at the end of the blob is valid. */
    c.offset = c.total_bytes;
    c.len = 0;
    c.data = NULL;
    ROUND_TRIP(chunk, c, d);
    assert_int_equal(d.len, 0);
    fl_wire_chunk_free(&d);

    fl_wire_submit_response r = {.accepted = false}, s;
    strcpy(r.reason, "Submit.round: 3, expected 4");
    ROUND_TRIP(submit_response, r, s);
    assert_false(s.accepted);
    assert_string_equal(s.reason, r.reason);
    fl_wire_submit_response_free(&s);
}

static void test_round_trip_tasks(void **state) {
    (void)state;
    init_secagg_fixtures();
    fl_wire_task a = mk_task_train(), b;
    ROUND_TRIP(task, a, b);
    assert_int_equal(b.kind, FL_WIRE_TASK_TRAIN);
    assert_int_equal(b.stage, FL_WIRE_STAGE_TRAIN);
    assert_int_equal(b.round, ROUND);
    assert_int_equal(b.step, 9);
    assert_true(b.has_model && b.has_train && !b.has_stats && !b.has_eval);
    assert_memory_equal(b.model.sha256, SHA_B, 32);
    assert_int_equal(b.train.optimizer, FL_WIRE_OPT_SGD);
    assert_true(b.train.lr == 0.1 && b.train.prox_mu == 0.01);
    assert_int_equal(b.train.dp.mode, FL_WIRE_PRIVACY_RECORD);
    fl_wire_task_free(&b);

    /* TRAIN with the federation's statistics totals attached. */
    a.has_totals = true;
    a.totals = mk_stats();
    ROUND_TRIP(task, a, b);
    assert_true(b.has_totals);
    assert_int_equal(b.totals.n_cols, 3);
    assert_int_equal(b.totals.level_offsets[3], 3);
    assert_true(b.totals.sum[1] == -12.25);
    fl_wire_task_free(&b);

    fl_wire_task s = mk_task_stats();
    ROUND_TRIP(task, s, b);
    assert_int_equal(b.stats.n_cols, 3);
    assert_string_equal(b.stats.cols[2].name, "Home");
    assert_true(b.stats.cols[2].categorical);
    assert_int_equal(b.stats.cols[2].n_levels, 3);
    assert_string_equal(b.stats.cols[2].levels[2], "Zürich");
    fl_wire_task_free(&b);

    fl_wire_task e = mk_task_train();
    e.kind = FL_WIRE_TASK_EVALUATE;
    e.stage = FL_WIRE_STAGE_EVALUATE;
    e.has_train = false;
    e.has_eval = true;
    e.eval = (fl_wire_eval_spec){.n_bins = 100, .n_fairness = 16};
    ROUND_TRIP(task, e, b);
    assert_int_equal(b.eval.n_bins, 100);
    assert_int_equal(b.eval.n_fairness, 16);
    fl_wire_task_free(&b);

    fl_wire_task_kind kinds[] = {FL_WIRE_TASK_ADVERTISE_KEYS, FL_WIRE_TASK_SHARE_KEYS,
                                 FL_WIRE_TASK_MASKED_INPUT, FL_WIRE_TASK_UNMASK};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        fl_wire_task t = mk_task_secagg(kinds[k]);
        ROUND_TRIP(task, t, b);
        assert_int_equal(b.kind, kinds[k]);
        assert_true(b.has_secagg && b.secagg.enabled);
        if (kinds[k] == FL_WIRE_TASK_SHARE_KEYS) {
            assert_int_equal(b.n_site_keys, 2);
            assert_int_equal(b.site_keys[1].site_id, 2);
            assert_int_equal(b.site_keys[1].cert_len, sizeof cert_b);
            assert_memory_equal(b.site_keys[1].cert, cert_b, sizeof cert_b);
            assert_memory_equal(b.site_keys[0].keys.mask_pk, site_keys[0].keys.mask_pk, 32);
            assert_int_equal(b.site_keys[0].keys.signature_len, 71);
        }
        if (kinds[k] == FL_WIRE_TASK_MASKED_INPUT) {
            assert_int_equal(b.n_shares, 3);
            assert_int_equal(b.shares[2].peer, 5);
            assert_int_equal(b.shares[2].len, 102);
            assert_memory_equal(b.shares[2].data, shares3[2].data, 102);
        }
        if (kinds[k] == FL_WIRE_TASK_UNMASK) {
            assert_int_equal(b.n_survivors, 3);
            assert_int_equal(b.survivors[2], 5);
            assert_int_equal(b.n_dropped, 1);
            assert_int_equal(b.dropped[0], 7);
        }
        fl_wire_task_free(&b);
    }

    /* Idle tasks need nothing but the federation. */
    fl_wire_task none = {.kind = FL_WIRE_TASK_NONE, .round = ROUND};
    strcpy(none.federation_id, "fed-1");
    ROUND_TRIP(task, none, b);
    fl_wire_task_free(&b);
    none.kind = FL_WIRE_TASK_DONE;
    ROUND_TRIP(task, none, b);
    assert_int_equal(b.kind, FL_WIRE_TASK_DONE);
    fl_wire_task_free(&b);
    fl_wire_task_free(NULL);
}

static void test_round_trip_submits(void **state) {
    (void)state;
    init_secagg_fixtures();
    float *u;
    fl_wire_submit a = mk_submit_train(1024, &u), b;
    ROUND_TRIP(submit, a, b);
    assert_int_equal(b.kind, FL_WIRE_TASK_TRAIN);
    assert_int_equal(b.result, FL_WIRE_RESULT_TRAIN);
    assert_int_equal(b.train.n_update, 1024);
    assert_memory_equal(b.train.update, u, 1024 * sizeof(float));
    assert_int_equal(b.train.n_examples, 812);
    assert_string_equal(b.train.accountant, "rdp");
    assert_int_equal(b.n_chunks, 1);
    assert_int_equal(b.train.offset, 0);
    fl_wire_submit_free(&b);
    fl_wire_submit_free(&b);

    /* A refusal carries no vector. */
    a.train.refused = true;
    a.train.n_update = 0;
    a.train.update = NULL;
    strcpy(a.train.refusal_reason, "privacy budget: epsilon 3.02 would exceed cap 3.0 (rdp)");
    ROUND_TRIP(submit, a, b);
    assert_true(b.train.refused);
    assert_null(b.train.update);
    assert_string_equal(b.train.refusal_reason, a.train.refusal_reason);
    fl_wire_submit_free(&b);
    free(u);

    fl_wire_submit s = mk_submit_header(FL_WIRE_TASK_STATS, FL_WIRE_RESULT_STATS);
    s.stats = mk_stats();
    ROUND_TRIP(submit, s, b);
    assert_int_equal(b.stats.n_rows, 100);
    assert_int_equal(b.stats.n_cols, 3);
    assert_memory_equal(b.stats.count, st_count, sizeof st_count);
    assert_memory_equal(b.stats.level_offsets, st_off, sizeof st_off);
    assert_memory_equal(b.stats.level_counts, st_levels, sizeof st_levels);
    fl_wire_submit_free(&b);

    fl_wire_submit e = mk_submit_eval();
    ROUND_TRIP(submit, e, b);
    assert_true(b.eval.loss_sum == 41.5);
    assert_int_equal(b.eval.correct, 80);
    assert_int_equal(b.eval.n_hist, 8);
    assert_memory_equal(b.eval.score_hist, ev_hist, sizeof ev_hist);
    assert_memory_equal(b.eval.fairness, ev_fair, sizeof ev_fair);
    fl_wire_submit_free(&b);

    fl_wire_submit k = mk_submit_header(FL_WIRE_TASK_ADVERTISE_KEYS, FL_WIRE_RESULT_KEYS);
    k.keys = site_keys[0].keys;
    ROUND_TRIP(submit, k, b);
    assert_memory_equal(b.keys.enc_pk, site_keys[0].keys.enc_pk, 32);
    assert_int_equal(b.keys.signature_len, 71);
    fl_wire_submit_free(&b);

    fl_wire_submit sh = mk_submit_header(FL_WIRE_TASK_SHARE_KEYS, FL_WIRE_RESULT_SHARES);
    sh.shares = (fl_wire_share_list){3, shares3};
    ROUND_TRIP(submit, sh, b);
    assert_int_equal(b.shares.n, 3);
    assert_int_equal(b.shares.shares[1].peer, 3);
    assert_memory_equal(b.shares.shares[1].data, shares3[1].data, shares3[1].len);
    fl_wire_submit_free(&b);

    fl_wire_submit um = mk_submit_header(FL_WIRE_TASK_UNMASK, FL_WIRE_RESULT_UNMASK);
    um.unmask.seed_shares = (fl_wire_share_list){2, shares3};
    um.unmask.key_shares = (fl_wire_share_list){1, shares3 + 2};
    ROUND_TRIP(submit, um, b);
    assert_int_equal(b.unmask.seed_shares.n, 2);
    assert_int_equal(b.unmask.key_shares.n, 1);
    assert_int_equal(b.unmask.key_shares.shares[0].peer, 5);
    fl_wire_submit_free(&b);

    /* MASKED_INPUT: a masked training vector, statistics or evaluation. */
    fl_wire_submit mt = mk_submit_header(FL_WIRE_TASK_MASKED_INPUT, FL_WIRE_RESULT_TRAIN);
    mt.train.masked = masked_words;
    mt.train.n_masked = 6;
    mt.train.n_examples = 812;
    ROUND_TRIP(submit, mt, b);
    assert_int_equal(b.train.n_masked, 6);
    assert_memory_equal(b.train.masked, masked_words, sizeof masked_words);
    fl_wire_submit_free(&b);

    fl_wire_submit ms = mk_submit_header(FL_WIRE_TASK_MASKED_INPUT, FL_WIRE_RESULT_STATS);
    ms.stats = (fl_wire_stats){.n_masked = 6, .masked = masked_words};
    ROUND_TRIP(submit, ms, b);
    assert_int_equal(b.stats.n_masked, 6);
    assert_int_equal(b.stats.masked[0], 0xdeadbeef);
    fl_wire_submit_free(&b);

    fl_wire_submit me = mk_submit_header(FL_WIRE_TASK_MASKED_INPUT, FL_WIRE_RESULT_EVAL);
    me.eval = (fl_wire_eval_result){.n_masked = 6, .masked = masked_words};
    ROUND_TRIP(submit, me, b);
    assert_int_equal(b.eval.n_masked, 6);
    fl_wire_submit_free(&b);
    fl_wire_submit_free(NULL);
}

/* ======================== size of an update ======================== */

static void test_update_size(void **state) {
    (void)state;
    const uint64_t P = FL_WIRE_CHUNK_VALUES; /* a full chunk */
    float *u;
    fl_wire_submit a = mk_submit_train(P, &u);
    uint8_t *buf = NULL;
    size_t len = 0;
    PACK(submit, a, buf, len);
    assert_true((double)len <= 1.1 * 4.0 * (double)P);
    assert_true(len >= 4 * P); /* packed: 4 bytes a value, no per-value tags */
    assert_true(len <= FL_WIRE_MAX_MESSAGE_BYTES);

    char err[FL_ERR_LEN];
    fl_wire_expect ex = {.n_params = P};
    fl_wire_submit b;
    assert_int_equal(unpack_submit(&b, buf, len, &ex, err), 0);
    assert_int_equal(b.train.n_update, P);
    assert_memory_equal(b.train.update, u, P * sizeof(float));
    fl_wire_submit_free(&b);
    free(buf);

    /* Masked words are fixed32: the same 4 bytes a value. */
    fl_wire_submit m = mk_submit_header(FL_WIRE_TASK_MASKED_INPUT, FL_WIRE_RESULT_TRAIN);
    m.train.masked = (uint32_t *)u; /* any bits will do */
    m.train.n_masked = P;
    m.train.n_examples = 1;
    PACK(submit, m, buf, len);
    assert_true((double)len <= 1.1 * 4.0 * (double)P);
    free(buf);
    free(u);
}

/* ========================== chunked upload ========================== */

static void test_chunked_upload(void **state) {
    (void)state;
    const uint64_t P = 2 * (uint64_t)FL_WIRE_CHUNK_VALUES + 1000; /* three chunks */
    float *u;
    fl_wire_submit a = mk_submit_train(P, &u);
    fl_wire_expect ex = {.federation_id = "fed-1", .round = &ROUND, .n_params = P};
    char err[FL_ERR_LEN];
    assert_int_equal(fl_wire_chunk_count(P), 3);
    assert_int_equal(fl_wire_chunk_count(0), 1);
    assert_int_equal(fl_wire_chunk_count(FL_WIRE_CHUNK_VALUES), 1);
    a.n_chunks = 3;
    a.upload_id = 0x1234abcd;
    a.has_total_sha256 = true;
    memcpy(a.total_sha256, SHA_A, 32);
    for (uint32_t i = 0; i < 3; i++) {
        a.chunk_index = i;
        a.train.update = u + (uint64_t)i * FL_WIRE_CHUNK_VALUES;
        a.train.n_update = i < 2 ? FL_WIRE_CHUNK_VALUES : 1000;
        uint8_t *buf = NULL;
        size_t len = 0;
        PACK(submit, a, buf, len);
        fl_wire_submit b;
        assert_int_equal(unpack_submit(&b, buf, len, &ex, err), 0);
        assert_int_equal(b.chunk_index, i);
        assert_int_equal(b.train.offset, (uint64_t)i * FL_WIRE_CHUNK_VALUES);
        assert_int_equal(b.upload_id, 0x1234abcd);
        assert_memory_equal(b.total_sha256, SHA_A, 32);
        fl_wire_submit_free(&b);

        free(buf);
        /* The middle chunk one value short. */
        if (i == 1) {
            fl_wire_submit c = a;
            c.train.n_update = FL_WIRE_CHUNK_VALUES - 1;
            assert_err(
                fl_wire_pack_submit(&buf, &len, &c, err), FL_EINVAL, err,
                "Submit.train.update: 262143 values in chunk 1 of 3, expected exactly 262144");
        }
    }

    /* Chunk fields that do not add up. */
    fl_wire_submit c = a;
    uint8_t *buf = NULL;
    size_t len = 0;
    c.chunk_index = 3;
    assert_err(fl_wire_pack_submit(&buf, &len, &c, err), FL_EINVAL, err,
               "Submit.chunk_index: 3, expected < n_chunks 3");
    c = a;
    c.upload_id = 0;
    assert_err(fl_wire_pack_submit(&buf, &len, &c, err), FL_EINVAL, err,
               "Submit.upload_id: 0 in a chunked upload");
    c = a;
    c.has_total_sha256 = false;
    assert_err(fl_wire_pack_submit(&buf, &len, &c, err), FL_EINVAL, err,
               "Submit.total_sha256: missing");
    c = a;
    c.n_chunks = FL_WIRE_MAX_CHUNKS + 1;
    assert_err(fl_wire_pack_submit(&buf, &len, &c, err), FL_EINVAL, err,
               "Submit.n_chunks: 257, expected 1..256");
    /* A whole update sent as two chunks when it needs three. */
    c = a;
    c.n_chunks = 2;
    c.chunk_index = 0;
    c.train.update = u;
    c.train.n_update = FL_WIRE_CHUNK_VALUES;
    PACK(submit, c, buf, len);
    fl_wire_submit b;
    assert_err(unpack_submit(&b, buf, len, &ex, err), FL_EPROTO, err,
               "Submit.n_chunks: 2, expected 3 for 525288 values");
    free(buf);
    /* Only a training vector is chunked. */
    fl_wire_submit s = mk_submit_header(FL_WIRE_TASK_STATS, FL_WIRE_RESULT_STATS);
    s.stats = mk_stats();
    s.n_chunks = 2;
    s.upload_id = 1;
    s.has_total_sha256 = true;
    assert_err(fl_wire_pack_submit(&buf, &len, &s, err), FL_EINVAL, err,
               "Submit.n_chunks: 2, but only a training vector is chunked");
    /* A total_sha256 of the wrong size, written by hand. */
    pbw w = {0};
    w_str(&w, 1, "fed-1");
    w_bytes(&w, 9, SHA_A, 31);
    assert_err(unpack_submit(&b, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Submit.total_sha256: 31 bytes, expected 32 or none");
    free(w.b);
    free(u);
}

/* ====================== validation of updates ====================== */

static void test_update_shape_and_values(void **state) {
    (void)state;
    float *u;
    char err[FL_ERR_LEN];
    fl_wire_expect ex = {.federation_id = "fed-1", .round = &ROUND, .n_params = 1024};
    fl_wire_submit a = mk_submit_train(1023, &u), b;
    uint8_t *buf = NULL;
    size_t len = 0;
    PACK(submit, a, buf, len);
    assert_err(unpack_submit(&b, buf, len, &ex, err), FL_EPROTO, err,
               "Submit.train.update: 1023 values, expected 1024");
    free(buf);
    free(u);

    /* NaN and Inf: pack refuses them; on the wire, unpack names the index. */
    a = mk_submit_train(1024, &u);
    u[17] = NAN;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.train.update[17]: not finite");
    u[17] = 1234.5f; /* a marker to find in the encoding */
    PACK(submit, a, buf, len);
    const float marker = 1234.5f;
    uint8_t *at = NULL;
    for (size_t i = 0; i + 4 <= len && !at; i++)
        if (!memcmp(buf + i, &marker, 4)) at = buf + i;
    assert_non_null(at);
    const float bads[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        memcpy(at, &bads[i], 4);
        assert_err(unpack_submit(&b, buf, len, &ex, err), FL_EPROTO, err,
                   "Submit.train.update[17]: not finite");
    }
    free(buf);

    /* Scalars: a non-finite or negative loss, missing weight. */
    a.train.update[17] = 0;
    a.train.train_loss = NAN;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.train.train_loss: not finite");
    a.train.train_loss = 0.5;
    a.train.epsilon_spent = -1;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.train.epsilon_spent: -1, expected >= 0");
    a.train.epsilon_spent = 0;
    a.train.n_examples = 0;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.train.n_examples: 0, expected 1..");
    a.train.n_examples = 5;
    /* A masked vector in a plain TRAIN result, an empty update. */
    a.train.masked = masked_words;
    a.train.n_masked = 6;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.train.masked: 6 values in a TRAIN result");
    a.train.masked = NULL;
    a.train.n_masked = 0;
    a.train.n_update = 0;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.train.update: empty");
    /* A refusal must say why, and carry no update. */
    a.train.refused = true;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.train.refusal_reason: empty");
    strcpy(a.train.refusal_reason, "budget");
    a.train.n_update = 3;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.train.update: 3 values in a refusal");
    free(u);

    /* Masked input length against the expected vector. */
    fl_wire_submit mt = mk_submit_header(FL_WIRE_TASK_MASKED_INPUT, FL_WIRE_RESULT_TRAIN);
    mt.train.masked = masked_words;
    mt.train.n_masked = 6;
    mt.train.n_examples = 1;
    PACK(submit, mt, buf, len);
    fl_wire_expect exm = {.n_masked = 7};
    assert_err(unpack_submit(&b, buf, len, &exm, err), FL_EPROTO, err,
               "Submit.train.masked: 6 values, expected 7");
    free(buf);
}

/* ================= header: federation, round, stage, kind ================= */

static void test_replay_and_misdirection(void **state) {
    (void)state;
    float *u;
    char err[FL_ERR_LEN];
    fl_wire_submit a = mk_submit_train(16, &u), b;
    uint8_t *buf = NULL;
    size_t len = 0;
    PACK(submit, a, buf, len);
    const uint64_t next = ROUND + 1, zero = 0;

    fl_wire_expect ok = {.federation_id = "fed-1",
                         .round = &ROUND,
                         .step = 9,
                         .stage = FL_WIRE_STAGE_TRAIN,
                         .kind = FL_WIRE_TASK_TRAIN,
                         .n_params = 16};
    assert_int_equal(unpack_submit(&b, buf, len, &ok, err), 0);
    fl_wire_submit_free(&b);

    fl_wire_expect ex = ok;
    ex.federation_id = "fed-2";
    assert_err(unpack_submit(&b, buf, len, &ex, err), FL_EPROTO, err,
               "Submit.federation_id: 'fed-1', expected 'fed-2'");
    ex = ok;
    ex.round = &next;
    assert_err(unpack_submit(&b, buf, len, &ex, err), FL_EPROTO, err,
               "Submit.round: 4, expected 5");
    ex.round = &zero; /* round 0 is a real round: checked, not ignored */
    assert_err(unpack_submit(&b, buf, len, &ex, err), FL_EPROTO, err,
               "Submit.round: 4, expected 0");
    ex = ok;
    ex.step = 10;
    assert_err(unpack_submit(&b, buf, len, &ex, err), FL_EPROTO, err,
               "Submit.step: 9, expected 10");
    ex = ok;
    ex.stage = FL_WIRE_STAGE_EVALUATE;
    assert_err(unpack_submit(&b, buf, len, &ex, err), FL_EPROTO, err,
               "Submit.stage: TRAIN, expected EVALUATE");
    ex = ok;
    ex.kind = FL_WIRE_TASK_EVALUATE;
    assert_err(unpack_submit(&b, buf, len, &ex, err), FL_EPROTO, err,
               "Submit.kind: TRAIN, expected EVALUATE");
    /* A stale round is reported as such even when the payload is also wrong. */
    ex = ok;
    ex.round = &next;
    ex.n_params = 17;
    assert_err(unpack_submit(&b, buf, len, &ex, err), FL_EPROTO, err, "Submit.round: 4");
    free(buf);

    /* Stage and kind must agree, and the result must fit the kind. */
    a.stage = FL_WIRE_STAGE_EVALUATE;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.stage: EVALUATE, expected TRAIN for a TRAIN result");
    a.stage = FL_WIRE_STAGE_TRAIN;
    a.result = FL_WIRE_RESULT_EVAL;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.result: eval, expected train for a TRAIN task");
    a.result = FL_WIRE_RESULT_TRAIN;
    a.kind = FL_WIRE_TASK_DONE;
    a.stage = FL_WIRE_STAGE_NONE;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.kind: DONE, not a task that is answered");
    strcpy(a.federation_id, "fed 1");
    a.kind = FL_WIRE_TASK_TRAIN;
    a.stage = FL_WIRE_STAGE_TRAIN;
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.federation_id: byte 3 (' ') not allowed");
    a.federation_id[0] = '\0';
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.federation_id: empty");
    memset(a.federation_id, 'x', sizeof a.federation_id); /* no NUL */
    assert_err(fl_wire_pack_submit(&buf, &len, &a, err), FL_EINVAL, err,
               "Submit.federation_id: not NUL-terminated");
    free(u);

    /* A result with no oneof set. */
    pbw w = {0};
    w_str(&w, 1, "fed-1");
    w_u(&w, 4, FL_WIRE_STAGE_TRAIN);
    w_u(&w, 5, FL_WIRE_TASK_TRAIN);
    assert_err(unpack_submit(&b, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Submit.result: none, expected train for a TRAIN task");
    free(w.b);
}

/* ======================= enums out of range ======================= */

static void test_enums(void **state) {
    (void)state;
    char err[FL_ERR_LEN];
    fl_wire_submit b;
    pbw w = {0};
    w_str(&w, 1, "fed-1");
    w_u(&w, 5, 42);
    assert_err(unpack_submit(&b, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Submit.kind: 42, out of range (0..8)");
    free(w.b);
    memset(&w, 0, sizeof w);
    w_str(&w, 1, "fed-1");
    w_u(&w, 4, 11);
    w_u(&w, 5, FL_WIRE_TASK_TRAIN);
    assert_err(unpack_submit(&b, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Submit.stage: 11, out of range (0..10)");
    free(w.b);
    /* Negative enum values arrive as 10-byte varints. */
    memset(&w, 0, sizeof w);
    w_str(&w, 1, "fed-1");
    w_u(&w, 5, (uint64_t)-1);
    assert_err(unpack_submit(&b, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Submit.kind: -1, out of range");
    free(w.b);

    /* Task kind; privacy mode 0 (unspecified) and 9; optimizer 7. */
    fl_wire_task t;
    memset(&w, 0, sizeof w);
    w_u(&w, 1, 9);
    w_str(&w, 2, "fed-1");
    assert_err(unpack_task(&t, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Task.kind: 9, out of range (0..8)");
    free(w.b);

    fl_wire_join_response jr = mk_join_response(), jr2;
    jr.privacy.mode = FL_WIRE_PRIVACY_UNSPECIFIED;
    uint8_t *buf;
    size_t len;
    assert_err(fl_wire_pack_join_response(&buf, &len, &jr, err), FL_EINVAL, err,
               "JoinResponse.privacy.mode: UNSPECIFIED (0), not allowed");
    /* On the wire: a JoinResponse without a privacy policy at all. */
    memset(&w, 0, sizeof w);
    w_str(&w, 1, "fed-1");
    w_str(&w, 2, "logreg");
    w_u(&w, 3, 23);
    w_u(&w, 4, 2);
    w_u(&w, 5, 24);
    w_bytes(&w, 6, SHA_A, 32);
    w_u(&w, 9, 10);
    w_u(&w, 10, 1);
    assert_err(unpack_join_response(&jr2, w.b, w.n, NULL, err), FL_EPROTO, err,
               "JoinResponse.privacy.mode: UNSPECIFIED (0), not allowed");
    pbw pp = {0};
    w_u(&pp, 1, 9);
    w_msg(&w, 7, &pp);
    assert_err(unpack_join_response(&jr2, w.b, w.n, NULL, err), FL_EPROTO, err,
               "JoinResponse.privacy.mode: 9, out of range (0..3)");
    free(w.b);

    fl_wire_task tr = mk_task_train();
    tr.train.optimizer = (fl_wire_optimizer)7;
    assert_err(fl_wire_pack_task(&buf, &len, &tr, err), FL_EINVAL, err,
               "Task.train.optimizer: 7, out of range (0..2)");
    tr.train.optimizer = FL_WIRE_OPT_UNSPECIFIED;
    assert_err(fl_wire_pack_task(&buf, &len, &tr, err), FL_EINVAL, err,
               "Task.train.optimizer: UNSPECIFIED (0), not allowed");

    assert_string_equal(fl_wire_task_kind_name(FL_WIRE_TASK_MASKED_INPUT), "MASKED_INPUT");
    assert_string_equal(fl_wire_stage_name(FL_WIRE_STAGE_COMMIT), "COMMIT");
    assert_string_equal(fl_wire_stage_name(99), "?");
    assert_string_equal(fl_wire_privacy_mode_name(FL_WIRE_PRIVACY_SITE), "SITE");
    assert_int_equal(fl_wire_task_stage(FL_WIRE_TASK_UNMASK), FL_WIRE_STAGE_UNMASK);
    assert_int_equal(fl_wire_task_stage(FL_WIRE_TASK_DONE), FL_WIRE_STAGE_NONE);
}

/* ============================ strings ============================ */

static void test_strings(void **state) {
    (void)state;
    char err[FL_ERR_LEN], big[700];
    fl_wire_submit b;
    pbw w = {0};
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';

    big[100] = '\0';
    w_str(&w, 1, big);
    assert_err(unpack_submit(&b, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Submit.federation_id: 100 bytes, limit 64");
    free(w.b);
    big[100] = 'a';

    /* An oversized refusal reason inside the result. */
    memset(&w, 0, sizeof w);
    pbw tr = {0};
    w_u(&tr, 7, 1);
    w_str(&tr, 8, big);
    w_str(&w, 1, "fed-1");
    w_u(&w, 4, FL_WIRE_STAGE_TRAIN);
    w_u(&w, 5, FL_WIRE_TASK_TRAIN);
    w_msg(&w, 11, &tr);
    assert_err(unpack_submit(&b, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Submit.train.refusal_reason: 699 bytes, limit 511");
    free(w.b);

    /* Invalid UTF-8 and control characters in text fields. */
    fl_wire_submit_response r = {.accepted = false};
    const char *bad_text[] = {"\xc3\x28",  "\xe2\x82", "\xed\xa0\x80",    "\xc0\xaf",
                              "tab\there", "\xc2\x85", "\xf4\x90\x80\x80"};
    uint8_t *buf;
    size_t len;
    for (size_t i = 0; i < sizeof bad_text / sizeof *bad_text; i++) {
        strcpy(r.reason, bad_text[i]);
        assert_err(fl_wire_pack_submit_response(&buf, &len, &r, err), FL_EINVAL, err,
                   "SubmitResponse.reason: not UTF-8 text");
    }
    strcpy(r.reason, "refusé: ok — 日本 🙂");
    fl_wire_submit_response r2;
    ROUND_TRIP(submit_response, r, r2);
    fl_wire_submit_response_free(&r2);
    r.reason[0] = '\0';
    assert_err(fl_wire_pack_submit_response(&buf, &len, &r, err), FL_EINVAL, err,
               "SubmitResponse.reason: empty");
    r.accepted = true; /* an acceptance needs no reason */
    ROUND_TRIP(submit_response, r, r2);

    /* Agent version: printable ASCII; model spec: its own alphabet. */
    fl_wire_join j = mk_join();
    strcpy(j.agent_version, "agent\x01");
    assert_err(fl_wire_pack_join(&buf, &len, &j, err), FL_EINVAL, err,
               "Join.agent_version: byte 5 is not printable ASCII");
    fl_wire_join_response jr = mk_join_response();
    strcpy(jr.model_spec, "MLP:64");
    assert_err(fl_wire_pack_join_response(&buf, &len, &jr, err), FL_EINVAL, err,
               "JoinResponse.model_spec: byte 0 ('M') not allowed");

    /* A stats column name that does not fit. */
    fl_wire_task t;
    memset(&w, 0, sizeof w);
    pbw col = {0}, spec = {0};
    big[200] = '\0';
    w_str(&col, 1, big);
    w_msg(&spec, 1, &col);
    w_u(&w, 1, FL_WIRE_TASK_STATS);
    w_str(&w, 2, "fed-1");
    w_u(&w, 5, FL_WIRE_STAGE_STATS);
    w_u(&w, 6, 1);
    w_msg(&w, 9, &spec);
    assert_err(unpack_task(&t, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Task.stats.columns[0].name: 200 bytes, limit 127");
    free(w.b);
}

/* ====================== truncation and garbage ====================== */

static void test_truncated(void **state) {
    (void)state;
    float *u;
    char err[FL_ERR_LEN];
    fl_wire_submit a = mk_submit_train(300, &u), b;
    uint8_t *buf = NULL;
    size_t len = 0;
    PACK(submit, a, buf, len);
    /* Cut inside the result's length-delimited field: never a valid message. */
    assert_err(unpack_submit(&b, buf, len - 1, NULL, err), FL_EPROTO, err,
               "Submit: not a valid encoding");
    assert_err(unpack_submit(&b, buf, len / 2, NULL, err), FL_EPROTO, err,
               "Submit: not a valid encoding");
    /* Every prefix: refused, or (cut between fields) a valid shorter message. */
    for (size_t k = 0; k < len; k++) {
        int rc = unpack_submit(&b, buf, k, NULL, err);
        assert_true(rc == 0 || rc == FL_EPROTO);
        fl_wire_submit_free(&b);
    }
    free(buf);
    free(u);

    init_secagg_fixtures();
    fl_wire_task t = mk_task_secagg(FL_WIRE_TASK_SHARE_KEYS), t2;
    PACK(task, t, buf, len);
    for (size_t k = 0; k < len; k++) {
        int rc = unpack_task(&t2, buf, k, NULL, err);
        assert_true(rc == 0 || rc == FL_EPROTO);
        fl_wire_task_free(&t2);
    }
    assert_err(unpack_task(&t2, buf, len - 3, NULL, err), FL_EPROTO, err, "Task");
    free(buf);

    /* Empty input: every field at its default, which the checks refuse. */
    assert_err(unpack_submit(&b, NULL, 0, NULL, err), FL_EPROTO, err,
               "Submit.federation_id: empty");
    fl_wire_join j;
    assert_err(unpack_join(&j, (const uint8_t *)"", 0, NULL, err), FL_EPROTO, err,
               "Join.n_examples: 0");
    /* Too large to be a message at all. */
    assert_err(
        fl_wire_unpack_submit(&b, (const uint8_t *)"", FL_WIRE_MAX_MESSAGE_BYTES + 1, NULL, err),
        FL_EPROTO, err, "bytes, limit 5242880");
    assert_err(fl_wire_unpack_submit(&b, NULL, 5, NULL, err), FL_EINVAL, err, "NULL buffer");
    assert_int_equal(fl_wire_unpack_submit(NULL, (const uint8_t *)"abcde", 5, NULL, err),
                     FL_EINVAL);
}

static void test_garbage(void **state) {
    (void)state;
    fl_rng r;
    fl_rng_seed(&r, 2024);
    char err[FL_ERR_LEN];
    int ok = 0;
    for (int it = 0; it < 4000; it++) {
        size_t len = (size_t)fl_rng_below(&r, 300);
        uint8_t *buf = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)fl_rng_next(&r);
        /* Half the time, start like a real Submit to get past the first field. */
        if (len > 8 && (it & 1))
            memcpy(buf,
                   "\x0a\x05"
                   "fed-1",
                   7);
        int rcs[8];
        fl_wire_join m1;
        fl_wire_join_response m2;
        fl_wire_poll m3;
        fl_wire_task m4;
        fl_wire_fetch m5;
        fl_wire_chunk m6;
        fl_wire_submit m7;
        fl_wire_submit_response m8;
        rcs[0] = unpack_join(&m1, buf, len, NULL, err);
        rcs[1] = unpack_join_response(&m2, buf, len, NULL, err);
        rcs[2] = unpack_poll(&m3, buf, len, NULL, err);
        rcs[3] = unpack_task(&m4, buf, len, NULL, err);
        rcs[4] = unpack_fetch(&m5, buf, len, NULL, err);
        rcs[5] = unpack_chunk(&m6, buf, len, NULL, err);
        rcs[6] = unpack_submit(&m7, buf, len, NULL, err);
        rcs[7] = unpack_submit_response(&m8, buf, len, NULL, err);
        for (int k = 0; k < 8; k++) {
            assert_true(rcs[k] == 0 || rcs[k] == FL_EPROTO);
            ok += rcs[k] == 0;
        }
        fl_wire_join_free(&m1);
        fl_wire_join_response_free(&m2);
        fl_wire_poll_free(&m3);
        fl_wire_task_free(&m4);
        fl_wire_fetch_free(&m5);
        fl_wire_chunk_free(&m6);
        fl_wire_submit_free(&m7);
        fl_wire_submit_response_free(&m8);
        free(buf);
    }
    /* Almost nothing random is a valid message (an acceptance with no text
     * is, so a few are). */
    assert_true(ok < 400);
}

/* ========================= task validation ========================= */

static void test_task_rules(void **state) {
    (void)state;
    init_secagg_fixtures();
    char err[FL_ERR_LEN];
    uint8_t *buf;
    size_t len;
    fl_wire_task t = mk_task_train(), b;

    t.has_model = false;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.model: missing for a TRAIN task");
    t = mk_task_train();
    t.stage = FL_WIRE_STAGE_STATS;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.stage: STATS, expected TRAIN for a TRAIN task");
    t = mk_task_train();
    t.deadline_unix_ms = 0;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.deadline_unix_ms: 0, expected > 0");
    t = mk_task_train();
    t.model.total_bytes = 100;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.model.total_bytes: 100, less than 4 bytes for each of 1024 parameters");
    t = mk_task_train();
    t.train.lr = 0;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.train.lr: 0, expected > 0");
    t = mk_task_train();
    t.train.momentum = 1;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.train.momentum: 1, expected in [0, 1)");
    t = mk_task_train();
    t.train.dp.delta = 1;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.train.dp.delta: 1, expected in (0, 1)");
    t = mk_task_train();
    t.train.dp.noise_multiplier = INFINITY;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.train.dp.noise_multiplier: not finite");
    t = mk_task_train();
    t.train.local_epochs = 0;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.train.local_epochs: 0, expected 1..1000");

    /* The client's view: federation, never going back a round, n_params. */
    t = mk_task_train();
    PACK(task, t, buf, len);
    const uint64_t seen = ROUND + 1;
    fl_wire_expect ex = {.federation_id = "fed-1", .min_round = &seen};
    assert_err(unpack_task(&b, buf, len, &ex, err), FL_EPROTO, err,
               "Task.round: 4, older than round 5 already seen");
    fl_wire_expect ex2 = {.federation_id = "fed-1", .n_params = 1000};
    assert_err(unpack_task(&b, buf, len, &ex2, err), FL_EPROTO, err,
               "Task.model.n_params: 1024, expected 1000");
    fl_wire_expect ex3 = {.federation_id = "other"};
    assert_err(unpack_task(&b, buf, len, &ex3, err), FL_EPROTO, err,
               "Task.federation_id: 'fed-1', expected 'other'");
    fl_wire_expect ex4 = {.federation_id = "fed-1", .min_round = &ROUND};
    assert_int_equal(unpack_task(&b, buf, len, &ex4, err), 0);
    fl_wire_task_free(&b);
    free(buf);

    /* Statistics layout: names unique, levels only for categoricals. */
    t = mk_task_stats();
    fl_wire_stats_column cols[3];
    memcpy(cols, spec_cols, sizeof cols);
    t.stats.cols = cols;
    strcpy(cols[1].name, "Age");
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.stats.columns.name: 'Age' appears twice");
    memcpy(cols, spec_cols, sizeof cols);
    cols[0].n_levels = 3;
    cols[0].levels = lv_home;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.stats.columns[0].levels: 3 levels for a numeric column");
    memcpy(cols, spec_cols, sizeof cols);
    cols[2].n_levels = 0;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.stats.columns[2].levels: none for a categorical column");
    char dup_levels[2][FL_WIRE_MAX_NAME] = {"x", "x"};
    memcpy(cols, spec_cols, sizeof cols);
    cols[2].n_levels = 2;
    cols[2].levels = dup_levels;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.stats.columns[2].levels: 'x' appears twice");

    /* Secure aggregation. */
    t = mk_task_secagg(FL_WIRE_TASK_SHARE_KEYS);
    t.secagg.enabled = false;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.secagg: not enabled for a SHARE_KEYS task");
    t = mk_task_secagg(FL_WIRE_TASK_SHARE_KEYS);
    t.n_site_keys = 0;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.share_keys: no neighbour keys");
    fl_wire_site_keys dup[2];
    memcpy(dup, site_keys, sizeof dup);
    dup[1].site_id = 1;
    t = mk_task_secagg(FL_WIRE_TASK_SHARE_KEYS);
    t.site_keys = dup;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.share_keys.sites.site_id: site 1 appears twice");
    memcpy(dup, site_keys, sizeof dup);
    dup[0].keys.signature_len = 0;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.share_keys.sites[0].keys.signature: 0 bytes, expected 1..128");
    t = mk_task_secagg(FL_WIRE_TASK_UNMASK);
    uint32_t overlap[1] = {5};
    t.dropped = overlap;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.unmask: site 5 is both a survivor and dropped");
    uint32_t zero_id[3] = {1, 0, 2};
    t = mk_task_secagg(FL_WIRE_TASK_UNMASK);
    t.survivors = zero_id;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.unmask.survivors[1]: site id 0");
    t = mk_task_secagg(FL_WIRE_TASK_MASKED_INPUT);
    t.has_eval = true;
    t.eval = (fl_wire_eval_spec){.n_bins = 10, .n_fairness = 0};
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task: 2 of train, stats and eval for a MASKED_INPUT task, expected exactly one");

    /* A public key of the wrong size, on the wire. */
    pbw w = {0}, payload = {0}, sk = {0}, keys = {0};
    w_bytes(&keys, 1, SHA_A, 31);
    w_bytes(&keys, 2, SHA_A, 32);
    w_bytes(&keys, 3, SHA_A, 10);
    w_u(&sk, 1, 1);
    w_msg(&sk, 2, &keys);
    w_bytes(&sk, 3, cert_a, 10);
    w_msg(&payload, 1, &sk);
    w_u(&w, 1, FL_WIRE_TASK_SHARE_KEYS);
    w_str(&w, 2, "fed-1");
    w_u(&w, 5, FL_WIRE_STAGE_SHARE_KEYS);
    w_u(&w, 6, 1);
    w_msg(&w, 13, &payload);
    assert_err(unpack_task(&b, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Task.share_keys.sites[0].keys.enc_pk: 31 bytes, expected 32");
    free(w.b);
}

/* ========================= other messages ========================= */

static void test_other_rules(void **state) {
    (void)state;
    init_secagg_fixtures();
    char err[FL_ERR_LEN];
    uint8_t *buf;
    size_t len;

    fl_wire_join j = mk_join();
    j.n_examples = 0;
    assert_err(fl_wire_pack_join(&buf, &len, &j, err), FL_EINVAL, err,
               "Join.n_examples: 0, expected 1..");
    j = mk_join();
    j.n_classes = 1;
    assert_err(fl_wire_pack_join(&buf, &len, &j, err), FL_EINVAL, err,
               "Join.n_classes: 1, expected 2..1024");

    fl_wire_join_response jr = mk_join_response(), jr2;
    jr.n_classes = 1;
    assert_err(fl_wire_pack_join_response(&buf, &len, &jr, err), FL_EINVAL, err,
               "JoinResponse.n_classes: 1, expected 2..1024");
    jr = mk_join_response();
    jr.secagg.threshold = 0;
    assert_err(fl_wire_pack_join_response(&buf, &len, &jr, err), FL_EINVAL, err,
               "JoinResponse.secagg.threshold: 0, expected in (0, 1]");
    jr = mk_join_response();
    jr.site_id = 0;
    assert_err(fl_wire_pack_join_response(&buf, &len, &jr, err), FL_EINVAL, err,
               "JoinResponse.site_id: 0");
    jr = mk_join_response();
    PACK(join_response, jr, buf, len);
    fl_wire_expect exj = {.federation_id = "fed-1", .n_params = 7};
    assert_err(unpack_join_response(&jr2, buf, len, &exj, err), FL_EPROTO, err,
               "JoinResponse.n_params: 3649, expected 7");
    free(buf);

    fl_wire_poll p = {.last_round_seen = 9}, p2;
    strcpy(p.federation_id, "fed-1");
    PACK(poll, p, buf, len);
    fl_wire_expect exp = {.federation_id = "fed-1", .round = &ROUND};
    assert_err(unpack_poll(&p2, buf, len, &exp, err), FL_EPROTO, err,
               "PollTask.last_round_seen: 9, ahead of the current round 4");
    free(buf);

    fl_wire_fetch f = mk_fetch(), f2;
    f.max_bytes = FL_WIRE_CHUNK_BYTES + 1;
    assert_err(fl_wire_pack_fetch(&buf, &len, &f, err), FL_EINVAL, err,
               "FetchChunk.max_bytes: 1048577, expected 1..1048576");
    f = mk_fetch();
    PACK(fetch, f, buf, len);
    const uint64_t other = 3;
    fl_wire_expect exf = {.round = &other};
    assert_err(unpack_fetch(&f2, buf, len, &exf, err), FL_EPROTO, err,
               "FetchChunk.round: 4, expected 3");
    free(buf);

    /* Chunks against the request they answer. */
    fl_wire_chunk c = mk_chunk(), c2;
    fl_wire_fetch req = mk_fetch();
    fl_wire_expect exc = {.fetch = &req, .total_bytes = c.total_bytes};
    PACK(chunk, c, buf, len);
    assert_int_equal(unpack_chunk(&c2, buf, len, &exc, err), 0);
    fl_wire_chunk_free(&c2);
    req.offset = 0;
    assert_err(unpack_chunk(&c2, buf, len, &exc, err), FL_EPROTO, err,
               "Chunk.offset: 4096, expected 0");
    req = mk_fetch();
    req.max_bytes = 999;
    assert_err(unpack_chunk(&c2, buf, len, &exc, err), FL_EPROTO, err,
               "Chunk.data: 1000 bytes, more than the 999 requested");
    req = mk_fetch();
    req.sha256[0] ^= 1;
    assert_err(unpack_chunk(&c2, buf, len, &exc, err), FL_EPROTO, err,
               "Chunk.sha256: not the model requested");
    exc.fetch = NULL;
    exc.total_bytes = 1;
    assert_err(unpack_chunk(&c2, buf, len, &exc, err), FL_EPROTO, err,
               "Chunk.total_bytes: 5184, expected 1");
    free(buf);
    c = mk_chunk();
    c.offset = c.total_bytes - 10;
    assert_err(fl_wire_pack_chunk(&buf, &len, &c, err), FL_EINVAL, err,
               "Chunk.data: 1000 bytes at offset 5174 run past the end (5184 bytes)");
    c = mk_chunk();
    c.len = 0;
    assert_err(fl_wire_pack_chunk(&buf, &len, &c, err), FL_EINVAL, err,
               "Chunk.data: empty at offset 4096 of 5184");

    /* Statistics results. */
    fl_wire_submit s = mk_submit_header(FL_WIRE_TASK_STATS, FL_WIRE_RESULT_STATS), s2;
    s.stats = mk_stats();
    uint64_t cnt[3] = {90, 101, 0};
    s.stats.count = cnt;
    assert_err(fl_wire_pack_submit(&buf, &len, &s, err), FL_EINVAL, err,
               "Submit.stats.count[1]: 101, more than n_rows 100");
    s.stats = mk_stats();
    uint64_t lv[3] = {50, 30, 21};
    s.stats.level_counts = lv;
    assert_err(fl_wire_pack_submit(&buf, &len, &s, err), FL_EINVAL, err,
               "Submit.stats.level_counts[2]: level counts of column 2 add up to more than n_rows");
    s.stats = mk_stats();
    uint32_t off[4] = {0, 2, 1, 3};
    s.stats.level_offsets = off;
    assert_err(fl_wire_pack_submit(&buf, &len, &s, err), FL_EINVAL, err,
               "Submit.stats.level_offsets[2]: 1, less than the previous offset 2");
    /* Found by fuzz_wire: an offset past the end before a decreasing one must
     * be refused before any column's range is read (exact-size heap arrays,
     * so ASan sees an over-read). */
    s.stats = mk_stats();
    s.stats.level_offsets = malloc(4 * sizeof(uint32_t));
    s.stats.level_counts = malloc(2 * sizeof(uint64_t));
    memcpy(s.stats.level_offsets, (uint32_t[]){0, 5, 2, 2}, 4 * sizeof(uint32_t));
    memcpy(s.stats.level_counts, (uint64_t[]){1, 1}, 2 * sizeof(uint64_t));
    s.stats.n_levels = 2;
    assert_err(fl_wire_pack_submit(&buf, &len, &s, err), FL_EINVAL, err,
               "Submit.stats.level_offsets[2]: 2, less than the previous offset 5");
    free(s.stats.level_offsets);
    free(s.stats.level_counts);
    s.stats = mk_stats();
    double sq[3] = {1, -1, 0};
    s.stats.sumsq = sq;
    assert_err(fl_wire_pack_submit(&buf, &len, &s, err), FL_EINVAL, err,
               "Submit.stats.sumsq[1]: -1, expected >= 0");
    s.stats = mk_stats();
    PACK(submit, s, buf, len);
    uint32_t want_off[4] = {0, 0, 0, 4};
    fl_wire_expect exs = {.n_cols = 3, .level_offsets = want_off};
    assert_err(unpack_submit(&s2, buf, len, &exs, err), FL_EPROTO, err,
               "Submit.stats.level_offsets[3]: 3, expected 4");
    exs.n_cols = 4;
    assert_err(unpack_submit(&s2, buf, len, &exs, err), FL_EPROTO, err,
               "Submit.stats.count: 3 columns, expected 4");
    free(buf);
    /* Parallel arrays of different lengths, on the wire. */
    pbw w = {0}, sr = {0};
    w_u(&sr, 1, 10);
    uint64_t one = 1;
    w_bytes(&sr, 2, &one, 1); /* packed uint64 {1} */
    w_double(&sr, 3, 1.0);
    w_str(&w, 1, "fed-1");
    w_u(&w, 4, FL_WIRE_STAGE_STATS);
    w_u(&w, 5, FL_WIRE_TASK_STATS);
    w_msg(&w, 10, &sr);
    assert_err(unpack_submit(&s2, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Submit.stats: count, sum and sumsq hold 1, 1 and 0 values");
    free(w.b);
    /* A masked result with plain statistics in it. */
    s = mk_submit_header(FL_WIRE_TASK_MASKED_INPUT, FL_WIRE_RESULT_STATS);
    s.stats = mk_stats();
    s.stats.masked = masked_words;
    s.stats.n_masked = 6;
    assert_err(fl_wire_pack_submit(&buf, &len, &s, err), FL_EINVAL, err,
               "Submit.stats.count: plain statistics in a masked result");

    /* Evaluation results. */
    fl_wire_submit e = mk_submit_eval(), e2;
    e.eval.correct = 101;
    assert_err(fl_wire_pack_submit(&buf, &len, &e, err), FL_EINVAL, err,
               "Submit.eval.correct: 101, more than count 100");
    e = mk_submit_eval();
    e.eval.loss_sum = -INFINITY;
    assert_err(fl_wire_pack_submit(&buf, &len, &e, err), FL_EINVAL, err,
               "Submit.eval.loss_sum: not finite");
    e = mk_submit_eval();
    PACK(submit, e, buf, len);
    fl_wire_expect exe = {.n_hist = 16};
    assert_err(unpack_submit(&e2, buf, len, &exe, err), FL_EPROTO, err,
               "Submit.eval.score_hist: 8 values, expected 16");
    fl_wire_expect exe2 = {.n_hist = 8, .n_fairness = 5};
    assert_err(unpack_submit(&e2, buf, len, &exe2, err), FL_EPROTO, err,
               "Submit.eval.fairness: 4 values, expected 5");
    free(buf);

    /* Secure-aggregation results. */
    fl_wire_submit um = mk_submit_header(FL_WIRE_TASK_UNMASK, FL_WIRE_RESULT_UNMASK);
    um.unmask.seed_shares = (fl_wire_share_list){3, shares3};
    um.unmask.key_shares = (fl_wire_share_list){1, shares3 + 1};
    assert_err(fl_wire_pack_submit(&buf, &len, &um, err), FL_EINVAL, err,
               "Submit.unmask: both shares of site 3 revealed");
    fl_wire_submit sh = mk_submit_header(FL_WIRE_TASK_SHARE_KEYS, FL_WIRE_RESULT_SHARES);
    fl_wire_share two[2];
    memcpy(two, shares3, sizeof two);
    two[1].peer = two[0].peer;
    sh.shares = (fl_wire_share_list){2, two};
    assert_err(fl_wire_pack_submit(&buf, &len, &sh, err), FL_EINVAL, err,
               "Submit.shares.peer: site 1 appears twice");
    memcpy(two, shares3, sizeof two);
    two[1].len = FL_WIRE_MAX_SHARE_BYTES + 1;
    assert_err(fl_wire_pack_submit(&buf, &len, &sh, err), FL_EINVAL, err,
               "Submit.shares[1].data: 257 bytes, expected 1..256");
    /* An oversized ciphertext, on the wire. */
    uint8_t big[300] = {0};
    pbw es = {0}, res = {0};
    memset(&w, 0, sizeof w);
    w_u(&es, 1, 2);
    w_bytes(&es, 2, big, sizeof big);
    w_msg(&res, 1, &es);
    w_str(&w, 1, "fed-1");
    w_u(&w, 4, FL_WIRE_STAGE_SHARE_KEYS);
    w_u(&w, 5, FL_WIRE_TASK_SHARE_KEYS);
    w_msg(&w, 14, &res);
    assert_err(unpack_submit(&sh, w.b, w.n, NULL, err), FL_EPROTO, err,
               "Submit.shares[0].ciphertext: 300 bytes, limit 256");
    free(w.b);
    fl_wire_submit k = mk_submit_header(FL_WIRE_TASK_ADVERTISE_KEYS, FL_WIRE_RESULT_KEYS);
    k.keys = site_keys[0].keys;
    k.keys.signature_len = 0;
    assert_err(fl_wire_pack_submit(&buf, &len, &k, err), FL_EINVAL, err,
               "Submit.keys.signature: 0 bytes, expected 1..128");

    /* Misuse of the API itself. */
    assert_int_equal(fl_wire_pack_submit(NULL, &len, &k, err), FL_EINVAL);
    assert_int_equal(fl_wire_pack_submit(&buf, &len, NULL, NULL), FL_EINVAL);
}

/* The secure-aggregation round fields and the statistics layout a site
 * states at Join: round trips, and the checks that refuse bad ones. */
static void test_secagg_round_fields(void **state) {
    (void)state;
    char err[FL_ERR_LEN];
    uint8_t *buf;
    size_t len;
    fl_wire_join a = mk_join(), b;
    uint32_t off[4] = {0, 3, 3, 7};
    a.n_level_offsets = 4;
    a.level_offsets = off;
    ROUND_TRIP(join, a, b);
    assert_int_equal(b.n_level_offsets, 4);
    assert_memory_equal(b.level_offsets, off, sizeof off);
    fl_wire_join_free(&b);
    off[2] = 1; /* decreasing */
    assert_err(fl_wire_pack_join(&buf, &len, &a, err), FL_EINVAL, err,
               "Join.stats_level_offsets[2]: 1, expected non-decreasing");
    off[2] = 3;
    off[0] = 2;
    assert_err(fl_wire_pack_join(&buf, &len, &a, err), FL_EINVAL, err,
               "Join.stats_level_offsets[0]: 2, expected 0");

    fl_wire_task t = mk_task_secagg(FL_WIRE_TASK_ADVERTISE_KEYS), u;
    t.secagg.graph_seed = 77;
    t.secagg.n_participants = 3;
    t.secagg.participants[0] = 4;
    t.secagg.participants[1] = 1;
    t.secagg.participants[2] = 9;
    t.secagg.threshold_count = 2;
    t.secagg.vector_words = 1000;
    t.secagg.weight = 0.25;
    t.secagg.session = (5ull << 8) | 2u << 4;
    ROUND_TRIP(task, t, u);
    assert_int_equal(u.secagg.n_participants, 3);
    assert_int_equal(u.secagg.participants[2], 9);
    assert_int_equal(u.secagg.threshold_count, 2);
    assert_int_equal(u.secagg.vector_words, 1000);
    assert_true(u.secagg.weight == 0.25);
    assert_int_equal(u.secagg.session, (5ull << 8) | 2u << 4);
    assert_int_equal(u.secagg.graph_seed, 77);
    fl_wire_task_free(&u);
    t.secagg.participants[2] = 4;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err, "site 4 appears twice");
    t.secagg.participants[2] = 9;
    t.secagg.threshold_count = 4;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.secagg.threshold_count: 4, expected <= 3");
    t.secagg.threshold_count = 2;
    t.secagg.weight = NAN;
    assert_err(fl_wire_pack_task(&buf, &len, &t, err), FL_EINVAL, err,
               "Task.secagg.weight: not finite");
}

int main(void) {
    fill(SHA_A, 32, 1);
    fill(SHA_B, 32, 2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_join),
        cmocka_unit_test(test_secagg_round_fields),
        cmocka_unit_test(test_round_trip_poll_fetch_chunk),
        cmocka_unit_test(test_round_trip_tasks),
        cmocka_unit_test(test_round_trip_submits),
        cmocka_unit_test(test_update_size),
        cmocka_unit_test(test_chunked_upload),
        cmocka_unit_test(test_update_shape_and_values),
        cmocka_unit_test(test_replay_and_misdirection),
        cmocka_unit_test(test_enums),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_task_rules),
        cmocka_unit_test(test_other_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
