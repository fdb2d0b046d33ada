/* test_round.c: the aggregator's round state machine driven in-process by
 * three simulated sites: the full stage sequence, refusals that change
 * nothing (stale round, replay, wrong shape, NaN, unknown site), a straggler
 * dropped at the deadline, a round below min_sites restarted, and a restart
 * from the store that resumes after the last committed round. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "aggregator/round.h"
#include "core/model.h"
#include <stdlib.h>

#define NP 4 /* logreg with 3 features: 3 weights + 1 bias */

static void config(fl_fed_config *c, int rounds) {
    fl_fed_config_default(c);
    c->rounds = rounds;
    c->min_sites = 2;
    c->n_allowed = 3;
    for (int i = 0; i < 3; i++)
        snprintf(c->allowed[i], FL_NAME_LEN, "site-%d", i + 1);
    c->stage_timeout_ms = 1000;
    c->join_timeout_ms = 1000;
    c->hist_bins = 4;
}

static fl_store *open_store(const char *name) {
    char path[4096], err[FL_ERR_LEN];
    snprintf(path, sizeof path, "%s/%s", fl_test_tmpdir(), name);
    fl_store *st;
    assert_int_equal(fl_store_open(&st, path, err), FL_OK);
    return st;
}

static void join_all(fl_federation *f, int64_t now) {
    char err[FL_ERR_LEN];
    int id;
    for (int s = 1; s <= 3; s++) {
        char name[16];
        snprintf(name, sizeof name, "site-%d", s);
        assert_int_equal(fl_fed_join(f, name, 100 * s, 3, 2, &id, now, err), FL_OK);
        assert_int_equal(id, s);
    }
}

static void submit_stats(fl_federation *f, int64_t now) {
    char err[FL_ERR_LEN];
    double v[5] = {1, 2, 3, 4, 5};
    for (int s = 1; s <= 3; s++) {
        fl_task t;
        assert_int_equal(fl_fed_poll(f, s, &t, now), FL_OK);
        assert_int_equal(t.kind, FL_TASK_STATS);
        fl_result r = {.kind = FL_TASK_STATS, .round = t.round, .stats = v, .n_stats = 5};
        assert_int_equal(fl_fed_submit(f, s, &r, now, err), FL_OK);
    }
}

/* Every site that has a task does it: TRAIN with delta (s/10) everywhere,
 * EVALUATE with fixed counts. Sites in skip[] stay silent. */
static void step_sites(fl_federation *f, int64_t now, const int *skip) {
    char err[FL_ERR_LEN];
    for (int s = 1; s <= 3; s++) {
        if (skip && skip[s]) continue;
        fl_task t;
        assert_int_equal(fl_fed_poll(f, s, &t, now), FL_OK);
        if (t.kind == FL_TASK_TRAIN) {
            float d[NP];
            for (int i = 0; i < NP; i++)
                d[i] = (float)s / 10.0f;
            fl_result r = {.kind = FL_TASK_TRAIN,
                           .round = t.round,
                           .delta = d,
                           .n_params = NP,
                           .n_examples = 100 * s};
            assert_int_equal(fl_fed_submit(f, s, &r, now, err), FL_OK);
        } else if (t.kind == FL_TASK_EVALUATE) {
            uint64_t h[8] = {10, 5, 0, 0, 0, 0, 5, 10}; /* negatives low, positives high */
            fl_result r = {.kind = FL_TASK_EVALUATE,
                           .round = t.round,
                           .loss_sum = 3.0,
                           .correct = 25,
                           .count = 30,
                           .hist = h,
                           .hist_bins = 4};
            assert_int_equal(fl_fed_submit(f, s, &r, now, err), FL_OK);
        }
    }
}

static void test_full_federation(void **state) {
    fl_fed_config c;
    config(&c, 3);
    fl_store *st = open_store("round1.db");
    fl_federation *f;
    char err[FL_ERR_LEN];
    assert_int_equal(fl_fed_open(&f, &c, st, 0, err), FL_OK);
    int id;
    assert_int_equal(fl_fed_join(f, "intruder", 10, 3, 2, &id, 0, err), FL_EAUTH);
    assert_non_null(strstr(err, "allow-list"));
    assert_int_equal(fl_fed_stage(f), FL_STAGE_WAIT_SITES);
    join_all(f, 0);
    assert_int_equal(fl_fed_join(f, "site-2", 10, 4, 2, &id, 0, err), FL_EINVAL); /* layout */
    assert_int_equal(fl_fed_stage(f), FL_STAGE_STATS);
    submit_stats(f, 0);
    assert_int_equal(fl_fed_stage(f), FL_STAGE_TRAIN);
    assert_int_equal(fl_fed_round(f), 1);

    /* refusals change nothing */
    float nan_delta[NP] = {0, NAN, 0, 0}, short_delta[NP - 1] = {0};
    fl_result bad = {
        .kind = FL_TASK_TRAIN, .round = 1, .delta = nan_delta, .n_params = NP, .n_examples = 5};
    assert_int_equal(fl_fed_submit(f, 1, &bad, 0, err), FL_ENUMERIC);
    bad.delta = short_delta;
    bad.n_params = NP - 1;
    assert_int_equal(fl_fed_submit(f, 1, &bad, 0, err), FL_EINVAL);
    assert_non_null(strstr(err, "expected 4"));
    bad.round = 0;
    assert_int_equal(fl_fed_submit(f, 1, &bad, 0, err), FL_EPROTO);
    assert_non_null(strstr(err, "stale"));
    fl_result ev = {.kind = FL_TASK_EVALUATE, .round = 1, .count = 1};
    assert_int_equal(fl_fed_submit(f, 1, &ev, 0, err), FL_EPROTO);
    assert_int_equal(fl_fed_submit(f, 9, &ev, 0, err), FL_EAUTH);

    size_t len;
    const uint8_t *sha0;
    fl_fed_model(f, &len, &sha0);
    uint8_t before[32];
    memcpy(before, sha0, 32);
    /* round 1: all three train; a replayed update is refused */
    step_sites(f, 0, NULL);
    assert_int_equal(fl_fed_stage(f), FL_STAGE_EVALUATE);
    float d[NP] = {0};
    fl_result replay = {
        .kind = FL_TASK_TRAIN, .round = 1, .delta = d, .n_params = NP, .n_examples = 5};
    assert_int_equal(fl_fed_submit(f, 1, &replay, 0, err), FL_EPROTO);
    const uint8_t *sha1;
    fl_fed_model(f, &len, &sha1);
    assert_memory_not_equal(before, sha1, 32);
    step_sites(f, 0, NULL);
    const fl_round_metrics *m = fl_fed_metrics(f, 1);
    assert_non_null(m);
    assert_int_equal(m->completed, 3);
    assert_float_equal(m->accuracy, 75.0 / 90.0, 1e-12);
    assert_float_equal(m->loss, 9.0 / 90.0, 1e-12);
    /* histogram AUC: pos {0,0,5,10} vs neg {10,5,0,0} per site: perfectly separated */
    assert_float_equal(m->auc, 1.0, 1e-12);

    /* round 2: site 3 is a straggler, dropped at the deadline */
    int skip[4] = {0, 0, 0, 1};
    step_sites(f, 10, skip);
    assert_int_equal(fl_fed_stage(f), FL_STAGE_TRAIN);
    assert_int_equal(fl_fed_tick(f, 5000), 1);
    assert_int_equal(fl_fed_stage(f), FL_STAGE_EVALUATE);
    /* site 3 is absent now: the evaluation does not wait for it */
    step_sites(f, 5000, skip);
    m = fl_fed_metrics(f, 2);
    assert_non_null(m);
    assert_int_equal(m->completed, 2);
    assert_int_equal(m->dropped, 1);

    /* round 3 (site 3, absent since round 2's deadline, is not selected):
     * only one site answers: below min_sites, restarted, and the restart
     * asks the absent sites too rather than end the federation */
    assert_int_equal(fl_fed_round(f), 3);
    int skip2[4] = {0, 0, 1, 1};
    step_sites(f, 5000, skip2);
    fl_fed_tick(f, 20000);
    assert_int_equal(fl_fed_stage(f), FL_STAGE_TRAIN);
    assert_int_equal(fl_fed_round(f), 3);
    step_sites(f, 20000, NULL);
    step_sites(f, 20000, NULL);
    assert_int_equal(fl_fed_stage(f), FL_STAGE_DONE);
    fl_task t;
    assert_int_equal(fl_fed_poll(f, 1, &t, 20000), FL_OK);
    assert_int_equal(t.kind, FL_TASK_DONE);
    uint8_t final_sha[32];
    const uint8_t *fs;
    fl_fed_model(f, &len, &fs);
    memcpy(final_sha, fs, 32);
    fl_fed_free(f);

    /* reopen: nothing left to do, same model */
    assert_int_equal(fl_fed_open(&f, &c, st, 0, err), FL_OK);
    assert_int_equal(fl_fed_stage(f), FL_STAGE_DONE);
    fl_fed_model(f, &len, &fs);
    assert_memory_equal(fs, final_sha, 32);
    fl_fed_free(f);
    fl_store_close(st);
}

/* Killed after round 1 and reopened: round 2 and 3 run and give the model an
 * uninterrupted run gives. */
static void test_resume_same_model(void **state) {
    fl_fed_config c;
    config(&c, 3);
    char err[FL_ERR_LEN];
    uint8_t want[32], got[32];
    size_t len;
    const uint8_t *sha;
    for (int pass = 0; pass < 2; pass++) {
        fl_store *st = open_store(pass ? "resume-b.db" : "resume-a.db");
        fl_federation *f;
        assert_int_equal(fl_fed_open(&f, &c, st, 0, err), FL_OK);
        join_all(f, 0);
        submit_stats(f, 0);
        step_sites(f, 0, NULL); /* round 1 train */
        step_sites(f, 0, NULL); /* round 1 evaluate -> commit */
        if (pass == 1) {
            step_sites(f, 0, NULL); /* round 2 train, then "crash" before commit */
            fl_fed_free(f);
            assert_int_equal(fl_fed_open(&f, &c, st, 0, err), FL_OK);
            assert_int_equal(fl_fed_round(f), 1);
            join_all(f, 0);
            assert_int_equal(fl_fed_round(f), 2);
        }
        while (fl_fed_stage(f) != FL_STAGE_DONE)
            step_sites(f, 0, NULL);
        fl_fed_model(f, &len, &sha);
        memcpy(pass ? got : want, sha, 32);
        fl_fed_free(f);
        fl_store_close(st);
    }
    assert_memory_equal(want, got, 32);
}

/* FedAvg sums plain updates as they arrive, in exact fixed point: the same
 * updates in any order give a bit-identical model, equal to the weighted
 * mean within float rounding; a value beyond the accumulator's range is
 * refused and changes nothing. */
static void test_arrival_order(void **state) {
    (void)state;
    fl_fed_config c;
    config(&c, 1);
    char err[FL_ERR_LEN];
    static const int orders[2][3] = {{1, 2, 3}, {3, 1, 2}};
    float d[4][NP];
    for (int s = 1; s <= 3; s++)
        for (int i = 0; i < NP; i++) /* values of many magnitudes and signs */
            d[s][i] = (float)((s * 7 + i * 13) % 11 - 5) * powf(10.0f, (float)(i - s));
    uint8_t sha[2][32];
    float got[NP], want[NP];
    for (int pass = 0; pass < 2; pass++) {
        fl_store *st = open_store(pass ? "order-b.db" : "order-a.db");
        fl_federation *f;
        assert_int_equal(fl_fed_open(&f, &c, st, 0, err), FL_OK);
        join_all(f, 0);
        submit_stats(f, 0);
        size_t len;
        const uint8_t *h, *blob = fl_fed_model(f, &len, &h);
        fl_model_spec spec;
        float *p0;
        assert_int_equal(fl_model_deserialize(&spec, &p0, blob, len, err), FL_OK);
        if (pass == 0) {
            float big[NP] = {0, 0, 33554432.0f, 0}; /* 2^25: out of range */
            fl_result r = {
                .kind = FL_TASK_TRAIN, .round = 1, .delta = big, .n_params = NP, .n_examples = 1};
            assert_int_equal(fl_fed_submit(f, 1, &r, 0, err), FL_EINVAL);
            assert_non_null(strstr(err, "outside"));
        }
        for (int k = 0; k < 3; k++) {
            int s = orders[pass][k];
            fl_result r = {.kind = FL_TASK_TRAIN,
                           .round = 1,
                           .delta = d[s],
                           .n_params = NP,
                           .n_examples = 100 * s};
            assert_int_equal(fl_fed_submit(f, s, &r, 0, err), FL_OK);
        }
        assert_int_equal(fl_fed_stage(f), FL_STAGE_EVALUATE);
        blob = fl_fed_model(f, &len, &h);
        memcpy(sha[pass], h, 32);
        float *p1;
        assert_int_equal(fl_model_deserialize(&spec, &p1, blob, len, err), FL_OK);
        for (int i = 0; i < NP; i++) {
            double m = (100.0 * d[1][i] + 200.0 * d[2][i] + 300.0 * d[3][i]) / 600.0;
            want[i] = (float)((double)p0[i] + m);
            got[i] = p1[i];
            assert_float_equal(got[i], want[i], 1e-6 * (1.0 + fabs(want[i])));
        }
        free(p0);
        free(p1);
        fl_fed_free(f);
        fl_store_close(st);
    }
    assert_memory_equal(sha[0], sha[1], 32);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_federation),
        cmocka_unit_test(test_resume_same_model),
        cmocka_unit_test(test_arrival_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
