/* test_secagg_inproc.c: the round state machine (aggregator/round.c) with
 * secure aggregation on, in one process and without the transport: three
 * credit-data sites run every secure sum (statistics, training updates,
 * evaluation counts) through crypto/secagg.h with real certificates and
 * signatures. Checks that the federation reaches the accuracy of the same
 * run without secure aggregation (within half a point), that a site which
 * drops out after sharing its keys is unmasked from its neighbours' shares
 * and the round completes, and that the statistics the sites encode with
 * are those of the plain sum. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator/round.h"
#include "client/site.h"
#include "core/metrics.h"
#include "core/ini.h"
#include "core/partition.h"
#include "crypto/pki.h"
#include "crypto/secagg.h"
#include "crypto/secagg_vec.h"
#include "sites.h"

#define MAX_SITES 5

typedef struct world {
    fl_test_sites sites; /* the credit data at n sites (tests/common/sites.h) */
    int n;
    fl_site *site;
    char pki[4096];
    char *cert[MAX_SITES];
    fl_secagg_client *sa[MAX_SITES];
    fl_csprng *rng;
    int dead[MAX_SITES]; /* stopped answering */
    int dead_round[MAX_SITES], dead_stage[MAX_SITES];
    /* the central test rows, for the final figures */
    fl_csv *csv;
    int32_t *y, *test;
    int64_t n_test;
} world;

static void make_world(world *w, int n_sites) {
    char err[FL_ERR_LEN];
    static int worlds;
    memset(w, 0, sizeof *w);
    char tag[32];
    snprintf(tag, sizeof tag, "sa%d", ++worlds);
    fl_test_sites_open(&w->sites, n_sites, "by:Home", tag);
    w->n = n_sites;
    w->site = w->sites.site;
    w->csv = &w->sites.csv;
    w->y = w->sites.y;
    w->test = w->sites.test;
    w->n_test = w->sites.n_test;
    /* A federation CA and one client certificate per site: the keys every
     * site advertises are signed with them. */
    snprintf(w->pki, sizeof w->pki, "%s/%s-pki", fl_test_tmpdir(), tag);
    if (fl_pki_init(w->pki, "secagg-test", 30, err)) fail_msg("%s", err);
    for (int s = 0; s < w->n; s++) {
        char name[32], path[4200];
        size_t len;
        snprintf(name, sizeof name, "site-%d", s + 1);
        if (fl_pki_issue(w->pki, name, FL_ROLE_CLIENT, 10, err)) fail_msg("%s", err);
        snprintf(path, sizeof path, "%s/%s.crt", w->pki, name);
        if (fl_read_file(&w->cert[s], &len, path, err)) fail_msg("%s", err);
    }
    assert_int_equal(fl_csprng_new(&w->rng, err), FL_OK);
}

static void free_world(world *w) {
    for (int s = 0; s < w->n; s++) {
        fl_secagg_client_free(w->sa[s]);
        free(w->cert[s]);
    }
    fl_csprng_free(w->rng);
    fl_test_sites_close(&w->sites);
}

static void train_cfg(fl_train_config *c, uint64_t seed) {
    fl_train_config_default(c);
    c->epochs = 1;
    c->optimizer = FL_OPT_SGD;
    c->lr = 0.1;
    c->batch_size = 32;
    c->seed = seed;
}

/* The site's input to a secure sum, quantized or as int64 limbs. */
static uint32_t *secure_input(world *w, int s, const fl_task *t, fl_result *r) {
    char err[FL_ERR_LEN];
    fl_site *site = &w->site[s];
    uint32_t *y = malloc(t->sa->d * sizeof *y);
    if (t->purpose == FL_TASK_TRAIN) {
        fl_train_config c;
        train_cfg(&c, t->seed);
        float *delta;
        int64_t n;
        double loss;
        if (fl_site_train(&delta, &n, &loss, site, t->model, t->model_len, &c, err))
            fail_msg("%s", err);
        assert_int_equal((uint64_t)n, t->sa->d);
        assert_int_equal(
            fl_secagg_quantize(y, delta, (uint64_t)n, 8.0, 1u << 30, t->sa_weight, w->rng), FL_OK);
        free(delta);
        r->n_examples = site->n_train;
        r->train_loss = loss;
        r->epsilon = NAN;
        return y;
    }
    int64_t n;
    int64_t *v;
    if (t->purpose == FL_TASK_STATS) {
        double *st;
        assert_int_equal(fl_site_stats(&st, &n, site, err), FL_OK);
        v = malloc((size_t)n * sizeof *v);
        assert_int_equal(fl_sv_stats_encode(v, st, n, (uint32_t)fl_site_n_cols(site), err), FL_OK);
        free(st);
    } else {
        fl_site_eval ev;
        assert_int_equal(fl_site_evaluate(&ev, site, t->model, t->model_len, 1000, err), FL_OK);
        n = fl_sv_eval_len(1000, 0);
        v = malloc((size_t)n * sizeof *v);
        fl_sv_eval e = {
            .loss_sum = ev.loss_sum, .correct = ev.correct, .count = ev.count, .hist = ev.hist};
        assert_int_equal(fl_sv_eval_encode(v, &e, 1000, 0, err), FL_OK);
        fl_site_eval_free(&ev);
    }
    assert_int_equal((uint64_t)n * FL_SECAGG_I64_WORDS, t->sa->d);
    fl_secagg_encode_i64(y, v, (size_t)n);
    free(v);
    return y;
}

/* One poll-and-work pass over every site. */
static void work(world *w, fl_federation *f, const double **applied) {
    char err[FL_ERR_LEN];
    for (int s = 0; s < w->n; s++) {
        fl_site *site = &w->site[s];
        fl_task t;
        assert_int_equal(fl_fed_poll(f, s + 1, &t, 0), FL_OK);
        if (w->dead[s] ||
            (w->dead_round[s] && t.round == w->dead_round[s] && t.stage == w->dead_stage[s])) {
            w->dead[s] = 1;
            continue;
        }
        fl_result r = {.kind = t.kind, .round = t.round, .step = t.step};
        if (t.kind != FL_TASK_NONE && t.kind != FL_TASK_DONE && t.stats && applied[s] != t.stats) {
            if (fl_site_encode(site, t.stats, t.n_stats, err)) fail_msg("%s", err);
            applied[s] = t.stats;
        }
        uint8_t enc[32], mask[32], msg[FL_SECAGG_ADVERT_MAX], sig[FL_SIG_MAX];
        fl_secagg_peer_keys keys;
        fl_secagg_ct *cts = NULL;
        fl_secagg_reveal *rev = NULL;
        uint32_t *y = NULL;
        double *stats = NULL;
        float *delta = NULL;
        fl_site_eval ev = {0};
        switch (t.kind) {
        case FL_TASK_STATS:
            assert_int_equal(fl_site_stats(&stats, &r.n_stats, site, err), FL_OK);
            r.stats = stats;
            break;
        case FL_TASK_TRAIN: {
            fl_train_config c;
            train_cfg(&c, t.seed);
            if (fl_site_train(&delta, &r.n_params, &r.train_loss, site, t.model, t.model_len, &c,
                              err))
                fail_msg("%s", err);
            r.delta = delta;
            r.n_examples = site->n_train;
            r.epsilon = NAN;
            break;
        }
        case FL_TASK_EVALUATE:
            assert_int_equal(fl_site_evaluate(&ev, site, t.model, t.model_len, 1000, err), FL_OK);
            r.loss_sum = ev.loss_sum;
            r.correct = ev.correct;
            r.count = ev.count;
            r.hist = ev.hist;
            r.hist_bins = ev.bins;
            break;
        case FL_TASK_ADVERTISE_KEYS: {
            fl_secagg_client_free(w->sa[s]);
            assert_int_equal(fl_secagg_client_new(&w->sa[s], t.sa, (uint32_t)s + 1, NULL, err),
                             FL_OK);
            assert_int_equal(fl_secagg_client_advertise(w->sa[s], enc, mask, err), FL_OK);
            size_t ml =
                fl_secagg_advert_message(msg, "cohort", t.sa->round, (uint32_t)s + 1, enc, mask);
            char key[4200];
            snprintf(key, sizeof key, "%s/site-%d.key", w->pki, s + 1);
            size_t sl;
            if (fl_sign(sig, &sl, msg, ml, key, err)) fail_msg("%s", err);
            keys = (fl_secagg_peer_keys){
                .sig = sig, .sig_len = sl, .cert_pem = w->cert[s], .cert_len = strlen(w->cert[s])};
            memcpy(keys.enc_pk, enc, 32);
            memcpy(keys.mask_pk, mask, 32);
            r.keys = &keys;
            break;
        }
        case FL_TASK_SHARE_KEYS:
            cts = calloc(t.n_peer_keys, sizeof *cts);
            if (fl_secagg_client_share(w->sa[s], cts, t.peer_keys, t.n_peer_keys, err))
                fail_msg("share: %s", err);
            r.cts = cts;
            r.n_cts = t.n_peer_keys;
            break;
        case FL_TASK_MASKED_INPUT:
            y = secure_input(w, s, &t, &r);
            if (fl_secagg_client_mask(w->sa[s], y, t.cts, t.n_cts, err)) fail_msg("mask: %s", err);
            r.masked = y;
            r.n_masked = t.sa->d;
            break;
        case FL_TASK_UNMASK: {
            size_t n = t.n_survivors + t.n_dropped, got;
            rev = calloc(n ? n : 1, sizeof *rev);
            if (fl_secagg_client_unmask(w->sa[s], rev, &got, t.survivors, t.n_survivors, t.dropped,
                                        t.n_dropped, err))
                fail_msg("unmask: %s", err);
            r.reveals = rev;
            r.n_reveals = got;
            break;
        }
        default:
            continue;
        }
        if (fl_fed_submit(f, s + 1, &r, 0, err)) fail_msg("submit: %s", err);
        free(stats);
        free(delta);
        fl_site_eval_free(&ev);
        free(cts);
        free(rev);
        free(y);
    }
}

/* Runs a federation of `rounds` rounds; returns the central test accuracy. */
static double run(world *w, int secagg, int rounds, const char *db, int64_t *deadline_ticks) {
    char err[FL_ERR_LEN];
    fl_fed_config c;
    fl_fed_config_default(&c);
    c.rounds = rounds;
    c.min_sites = 2;
    c.n_allowed = w->n;
    c.secagg = secagg;
    c.stage_timeout_ms = 1000;
    for (int s = 0; s < w->n; s++)
        snprintf(c.allowed[s], FL_NAME_LEN, "site-%d", s + 1);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", fl_test_tmpdir(), db);
    fl_store *st;
    assert_int_equal(fl_store_open(&st, path, err), FL_OK);
    fl_federation *f;
    assert_int_equal(fl_fed_open(&f, &c, st, 0, err), FL_OK);
    for (int s = 0; s < w->n; s++) {
        int id;
        char name[16];
        snprintf(name, sizeof name, "site-%d", s + 1);
        uint32_t off[64];
        int nc = fl_site_n_cols(&w->site[s]);
        assert_true(nc < 64);
        fl_site_level_offsets(&w->site[s], off);
        assert_int_equal(
            fl_fed_set_stats_len(f, fl_sv_stats_len((uint32_t)nc, off[nc]), (uint32_t)nc, err),
            FL_OK);
        if (fl_fed_join(f, name, w->site[s].n_train, fl_site_features(&w->site[s]),
                        fl_site_classes(&w->site[s]), &id, 0, err))
            fail_msg("join: %s", err);
    }
    const double *applied[MAX_SITES] = {0};
    int64_t now = 0;
    for (int guard = 0; fl_fed_stage(f) != FL_STAGE_DONE && guard < 400; guard++) {
        uint32_t before = (uint32_t)fl_fed_round(f) * 1000u + (uint32_t)fl_fed_stage(f);
        work(w, f, applied);
        if ((uint32_t)fl_fed_round(f) * 1000u + (uint32_t)fl_fed_stage(f) == before) {
            now += 2000; /* nothing moved: a dead site holds the stage; pass its deadline */
            fl_fed_tick(f, now);
            ++*deadline_ticks;
        }
    }
    assert_int_equal(fl_fed_stage(f), FL_STAGE_DONE);
    assert_null(fl_fed_error(f));
    fl_dataset test;
    assert_int_equal(
        fl_dataset_encode(&test, &w->site[0].enc, w->csv, w->y, w->test, w->n_test, err), FL_OK);
    size_t len;
    const uint8_t *blob = fl_fed_model(f, &len, NULL);
    fl_model_spec spec;
    float *params;
    assert_int_equal(fl_model_deserialize(&spec, &params, blob, len, err), FL_OK);
    fl_model model;
    assert_int_equal(fl_model_init(&model, w->site[0].be, &spec, 256, 1, err), FL_OK);
    assert_int_equal(fl_model_set_params(&model, params), FL_OK);
    fl_eval ev;
    assert_int_equal(fl_model_evaluate(&ev, &model, &test), FL_OK);
    const fl_round_metrics *m = fl_fed_metrics(f, rounds);
    assert_non_null(m);
    print_message("%s: federated validation accuracy %.4f, central test accuracy %.4f auc %.4f\n",
                  secagg ? "secagg" : "plain", m->accuracy, ev.accuracy, ev.auc);
    assert_true(m->accuracy > 0.6); /* the secure evaluation sums are real counts */
    fl_model_free(&model);
    free(params);
    fl_dataset_free(&test);
    fl_fed_free(f);
    fl_store_close(st);
    return ev.accuracy;
}

static void test_secagg_matches_plain(void **state) {
    (void)state;
    world w;
    make_world(&w, 3);
    int64_t ticks = 0;
    double plain = run(&w, 0, 6, "plain.db", &ticks);
    double secure = run(&w, 1, 6, "secure.db", &ticks);
    assert_int_equal(ticks, 0); /* nobody dropped: no stage waited for its deadline */
    assert_true(fabs(plain - secure) <= 0.005);
    free_world(&w);
}

static void test_secagg_dropout_after_sharing(void **state) {
    (void)state;
    world w;
    make_world(&w, 5);
    /* site 3 dies as the training sum of round 2 asks for masked inputs:
     * its pairwise masks are rebuilt from its neighbours' key shares, and
     * later rounds go on without it (4 of 5 sites, threshold 3 of 4). */
    w.dead_round[2] = 2;
    w.dead_stage[2] = FL_STAGE_MASKED_INPUT;
    int64_t ticks = 0;
    double acc = run(&w, 1, 3, "dropout.db", &ticks);
    assert_true(ticks >= 1);
    assert_true(acc > 0.7);
    free_world(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secagg_matches_plain),
        cmocka_unit_test(test_secagg_dropout_after_sharing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
