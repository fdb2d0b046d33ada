/* fuzz_wire.c: libFuzzer target for proto/wire.c (DESIGN.md §5, §13). The
 * first input byte picks the message type (low 3 bits) and whether unpack
 * checks against a fixed expectation (bit 3); the rest is the encoded
 * message. Beyond "no crash, no leak, no undefined behaviour" under ASan and
 * UBSan, it checks the property the aggregator relies on: whatever unpack
 * accepts, pack accepts too, and pack -> unpack -> pack gives the same bytes.
 * A violation aborts, which libFuzzer reports as a crash.
 *
 * Random bytes rarely get past the header checks (federation id, stage and
 * kind must agree), so `-seeds=DIR` first writes one valid message of every
 * kind into DIR; pass DIR as the corpus too. How to run it is in
 * docs/protocol.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "proto/wire.h"

static const uint64_t ROUND = 4;
static const uint8_t SHA[FL_WIRE_SHA256_BYTES] = {1, 2, 3};

static void die(const char *what, int rc, const char *err) {
    fprintf(stderr, "fuzz_wire: %s: %d %s\n", what, rc, err);
    abort();
}

/* unpack(data) -> pack -> unpack -> pack, for one message type. */
#define ROUND_TRIP(name, type)                                                                     \
    do {                                                                                           \
        type a, b;                                                                                 \
        uint8_t *p1 = NULL, *p2 = NULL;                                                            \
        size_t n1 = 0, n2 = 0;                                                                     \
        int rc = fl_wire_unpack_##name(&a, data, size, ex, err);                                   \
        if (rc) break;                                                                             \
        if ((rc = fl_wire_pack_##name(&p1, &n1, &a, err))) die("repack " #name, rc, err);          \
        if ((rc = fl_wire_unpack_##name(&b, p1, n1, NULL, err)))                                   \
            die("unpack of repacked " #name, rc, err);                                             \
        if ((rc = fl_wire_pack_##name(&p2, &n2, &b, err))) die("second pack " #name, rc, err);     \
        if (n1 != n2 || memcmp(p1, p2, n1)) die("pack not stable " #name, 0, "");                  \
        free(p1);                                                                                  \
        free(p2);                                                                                  \
        fl_wire_##name##_free(&a);                                                                 \
        fl_wire_##name##_free(&b);                                                                 \
    } while (0)

/* ============================== seeds ============================== */

static const char *g_seed_dir;
static int g_seed_n;

/* Writes selector byte + encoding as the next seed file. */
static void put_seed(unsigned sel, int rc, uint8_t *buf, size_t len, const char *err) {
    if (rc) die("seed", rc, err);
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%03d", g_seed_dir, g_seed_n++);
    FILE *f = fopen(path, "wb");
    if (!f || fputc((int)sel, f) == EOF || fwrite(buf, 1, len, f) != len || fclose(f))
        die("write seed", 0, path);
    free(buf);
}
#define SEED(sel, name, m)                                                                         \
    do {                                                                                           \
        uint8_t *b_ = NULL;                                                                        \
        size_t n_ = 0;                                                                             \
        int rc_ = fl_wire_pack_##name(&b_, &n_, &(m), err);                                        \
        put_seed((sel), rc_, b_, n_, err);                                                         \
    } while (0)

static void write_seeds(void) {
    char err[FL_ERR_LEN] = "";
    static float update[8] = {0.5f, -1, 2, 0, 1e-3f, 3, -7, 8};
    static uint32_t words[8] = {1, 2, 3, 4, 5, 6, 7, 0xffffffffu};
    static uint64_t count[2] = {9, 0}, levels[2] = {4, 5}, hist[4] = {1, 2, 3, 4};
    static double sum[2] = {1.5, 0}, sumsq[2] = {3, 0};
    static uint32_t offsets[3] = {0, 0, 2}, ids[2] = {1, 2}, dropped[1] = {3};
    static uint8_t cert[64], data[100];
    static char lv[2][FL_WIRE_MAX_NAME] = {"a", "b"};
    static fl_wire_stats_column cols[2] = {{"x", false, 0, NULL}, {"y", true, 2, lv}};
    const fl_wire_privacy dp = {FL_WIRE_PRIVACY_RECORD, 1.0, 1.0, 1e-5, 3.0};
    const fl_wire_secagg_config sa = {true, 0.5, 0, 1.0, 1024};
    const fl_wire_stats stats = {.n_rows = 10,
                                 .n_cols = 2,
                                 .count = count,
                                 .sum = sum,
                                 .sumsq = sumsq,
                                 .level_offsets = offsets,
                                 .n_levels = 2,
                                 .level_counts = levels};
    fl_wire_public_keys keys = {.signature_len = 64};
    fl_wire_share shares[2] = {{1, 40, {0}}, {2, 40, {0}}};
    fl_wire_site_keys sk[2] = {{1, keys, sizeof cert, cert}, {2, keys, sizeof cert, cert}};

    fl_wire_join j = {.agent_version = "agent 1", .n_examples = 10, .n_classes = 2};
    SEED(0, join, j);
    fl_wire_join_response jr = {.federation_id = "fed-1",
                                .model_spec = "mlp:4,2",
                                .n_features = 3,
                                .n_classes = 2,
                                .n_params = 8,
                                .privacy = dp,
                                .secagg = sa,
                                .rounds = 5,
                                .site_id = 1};
    SEED(1, join_response, jr);
    SEED(1 | 8, join_response, jr);
    fl_wire_poll p = {.federation_id = "fed-1", .last_round_seen = 3};
    SEED(2, poll, p);
    SEED(2 | 8, poll, p);

    fl_wire_task t = {.kind = FL_WIRE_TASK_TRAIN,
                      .federation_id = "fed-1",
                      .round = ROUND,
                      .step = 2,
                      .stage = FL_WIRE_STAGE_TRAIN,
                      .deadline_unix_ms = 1,
                      .has_model = true,
                      .has_train = true,
                      .has_totals = true,
                      .model = {.total_bytes = 64, .n_params = 8},
                      .train = {1, 8, FL_WIRE_OPT_ADAM, 0.1, 0.9, 0, 0, 7, dp},
                      .totals = stats};
    SEED(3, task, t);
    SEED(3 | 8, task, t);
    t.kind = FL_WIRE_TASK_MASKED_INPUT;
    t.stage = FL_WIRE_STAGE_MASKED_INPUT;
    t.has_secagg = true;
    t.secagg = sa;
    t.n_shares = 2;
    t.shares = shares;
    SEED(3, task, t);
    fl_wire_task s = {.kind = FL_WIRE_TASK_STATS,
                      .federation_id = "fed-1",
                      .stage = FL_WIRE_STAGE_STATS,
                      .deadline_unix_ms = 1,
                      .has_stats = true,
                      .stats = {2, cols}};
    SEED(3, task, s);
    fl_wire_task e = {.kind = FL_WIRE_TASK_EVALUATE,
                      .federation_id = "fed-1",
                      .round = ROUND,
                      .stage = FL_WIRE_STAGE_EVALUATE,
                      .deadline_unix_ms = 1,
                      .has_model = true,
                      .model = {.total_bytes = 64, .n_params = 8},
                      .has_eval = true,
                      .eval = {2, 0}};
    SEED(3, task, e);
    fl_wire_task k = {.kind = FL_WIRE_TASK_SHARE_KEYS,
                      .federation_id = "fed-1",
                      .round = 1,
                      .stage = FL_WIRE_STAGE_SHARE_KEYS,
                      .deadline_unix_ms = 1,
                      .has_secagg = true,
                      .secagg = sa,
                      .n_site_keys = 2,
                      .site_keys = sk};
    SEED(3, task, k);
    k.kind = FL_WIRE_TASK_UNMASK;
    k.stage = FL_WIRE_STAGE_UNMASK;
    k.n_site_keys = 0;
    k.n_survivors = 2;
    k.survivors = ids;
    k.n_dropped = 1;
    k.dropped = dropped;
    SEED(3, task, k);

    fl_wire_fetch f = {.federation_id = "fed-1", .round = ROUND, .max_bytes = 4096};
    memcpy(f.sha256, SHA, sizeof SHA);
    SEED(4, fetch, f);
    SEED(4 | 8, fetch, f);
    fl_wire_chunk c = {.total_bytes = 1000, .len = sizeof data, .data = data};
    memcpy(c.sha256, SHA, sizeof SHA);
    SEED(5, chunk, c);
    SEED(5 | 8, chunk, c);

    fl_wire_submit u = {.federation_id = "fed-1",
                        .round = ROUND,
                        .step = 2,
                        .stage = FL_WIRE_STAGE_TRAIN,
                        .kind = FL_WIRE_TASK_TRAIN,
                        .n_chunks = 1,
                        .result = FL_WIRE_RESULT_TRAIN};
    u.train = (fl_wire_train_result){
        .n_update = 8, .update = update, .n_examples = 10, .train_loss = 0.5, .accountant = "rdp"};
    SEED(6, submit, u);
    SEED(6 | 8, submit, u);
    u.n_chunks = 3;
    u.chunk_index = 2;
    u.upload_id = 77;
    u.has_total_sha256 = true;
    SEED(6, submit, u);
    fl_wire_submit r = u;
    r.n_chunks = 1;
    r.chunk_index = 0;
    r.train = (fl_wire_train_result){.refused = true, .refusal_reason = "budget"};
    SEED(6, submit, r);
    fl_wire_submit m = {.federation_id = "fed-1",
                        .round = ROUND,
                        .stage = FL_WIRE_STAGE_MASKED_INPUT,
                        .kind = FL_WIRE_TASK_MASKED_INPUT,
                        .result = FL_WIRE_RESULT_TRAIN};
    m.train = (fl_wire_train_result){.n_masked = 8, .masked = words, .n_examples = 3};
    SEED(6, submit, m);
    m.result = FL_WIRE_RESULT_STATS;
    m.stats = (fl_wire_stats){.n_masked = 8, .masked = words};
    SEED(6, submit, m);
    m.result = FL_WIRE_RESULT_EVAL;
    m.eval = (fl_wire_eval_result){.n_masked = 8, .masked = words};
    SEED(6, submit, m);
    fl_wire_submit st = {.federation_id = "fed-1",
                         .stage = FL_WIRE_STAGE_STATS,
                         .kind = FL_WIRE_TASK_STATS,
                         .result = FL_WIRE_RESULT_STATS};
    st.stats = stats;
    SEED(6, submit, st);
    fl_wire_submit ev = {.federation_id = "fed-1",
                         .round = ROUND,
                         .step = 2,
                         .stage = FL_WIRE_STAGE_EVALUATE,
                         .kind = FL_WIRE_TASK_EVALUATE,
                         .result = FL_WIRE_RESULT_EVAL};
    ev.eval = (fl_wire_eval_result){.loss_sum = 3,
                                    .correct = 4,
                                    .count = 5,
                                    .n_hist = 4,
                                    .score_hist = hist,
                                    .n_fairness = 4,
                                    .fairness = hist};
    SEED(6, submit, ev);
    fl_wire_submit ak = {.federation_id = "fed-1",
                         .stage = FL_WIRE_STAGE_ADVERTISE_KEYS,
                         .kind = FL_WIRE_TASK_ADVERTISE_KEYS,
                         .result = FL_WIRE_RESULT_KEYS};
    ak.keys = keys;
    SEED(6, submit, ak);
    fl_wire_submit sh = {.federation_id = "fed-1",
                         .stage = FL_WIRE_STAGE_SHARE_KEYS,
                         .kind = FL_WIRE_TASK_SHARE_KEYS,
                         .result = FL_WIRE_RESULT_SHARES};
    sh.shares = (fl_wire_share_list){2, shares};
    SEED(6, submit, sh);
    fl_wire_submit um = {.federation_id = "fed-1",
                         .stage = FL_WIRE_STAGE_UNMASK,
                         .kind = FL_WIRE_TASK_UNMASK,
                         .result = FL_WIRE_RESULT_UNMASK};
    um.unmask.seed_shares = (fl_wire_share_list){1, shares};
    um.unmask.key_shares = (fl_wire_share_list){1, shares + 1};
    SEED(6, submit, um);

    fl_wire_submit_response sr = {.accepted = false, .reason = "Submit.round: 3, expected 4"};
    SEED(7, submit_response, sr);
}

/* libFuzzer calls this once before reading the corpus. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    for (int i = 1; i < *argc; i++)
        if (!strncmp((*argv)[i], "-seeds=", 7)) g_seed_dir = (*argv)[i] + 7;
    if (g_seed_dir) {
        mkdir(g_seed_dir, 0755); /* may exist already */
        write_seeds();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[FL_ERR_LEN];
    if (size < 1) return 0;
    unsigned sel = data[0];
    data++;
    size--;
    fl_wire_fetch req = {.round = ROUND, .offset = 0, .max_bytes = 4096};
    memcpy(req.sha256, SHA, sizeof SHA);
    fl_wire_expect fixed = {.federation_id = "fed-1",
                            .round = &ROUND,
                            .step = 2,
                            .stage = FL_WIRE_STAGE_TRAIN,
                            .kind = FL_WIRE_TASK_TRAIN,
                            .n_params = 8,
                            .n_hist = 4,
                            .fetch = &req};
    const fl_wire_expect *ex = (sel & 8) ? &fixed : NULL;
    switch (sel & 7) {
    case 0:
        ROUND_TRIP(join, fl_wire_join);
        break;
    case 1:
        ROUND_TRIP(join_response, fl_wire_join_response);
        break;
    case 2:
        ROUND_TRIP(poll, fl_wire_poll);
        break;
    case 3:
        ROUND_TRIP(task, fl_wire_task);
        break;
    case 4:
        ROUND_TRIP(fetch, fl_wire_fetch);
        break;
    case 5:
        ROUND_TRIP(chunk, fl_wire_chunk);
        break;
    case 6:
        ROUND_TRIP(submit, fl_wire_submit);
        break;
    default:
        ROUND_TRIP(submit_response, fl_wire_submit_response);
        break;
    }
    return 0;
}
