/* test_federation_inproc.c: a whole federation in one process, without the
 * transport: the bundled credit data split into a central test set and three
 * sites (partition by:Home), each site computing its statistics, encoding
 * with the federation's sums, training and evaluating through the real
 * round state machine. The federated logistic regression must come close to
 * the same model trained centrally. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator/round.h"
#include "client/site.h"
#include "core/metrics.h"
#include "core/partition.h"
#include "sites.h"

#define SITES 3

typedef fl_test_sites world;

static void make_world(world *w, const char *partition) {
    fl_test_sites_open(w, SITES, partition, "inproc");
}

static void free_world(world *w) {
    fl_test_sites_close(w);
}

/* One poll-and-work pass over every site. */
static void work(world *w, fl_federation *f, const double **applied) {
    char err[FL_ERR_LEN];
    for (int s = 0; s < SITES; s++) {
        fl_site *site = &w->site[s];
        fl_task t;
        assert_int_equal(fl_fed_poll(f, s + 1, &t, 0), FL_OK);
        fl_result r = {.kind = t.kind, .round = t.round};
        double *stats = NULL;
        float *delta = NULL;
        fl_site_eval ev = {0};
        if ((t.kind == FL_TASK_TRAIN || t.kind == FL_TASK_EVALUATE) && applied[s] != t.stats) {
            if (fl_site_encode(site, t.stats, t.n_stats, err)) fail_msg("%s", err);
            applied[s] = t.stats;
        }
        if (t.kind == FL_TASK_STATS) {
            assert_int_equal(fl_site_stats(&stats, &r.n_stats, site, err), FL_OK);
            r.stats = stats;
        } else if (t.kind == FL_TASK_TRAIN) {
            fl_train_config c;
            fl_train_config_default(&c);
            c.epochs = 1;
            c.optimizer = FL_OPT_SGD;
            c.lr = 0.1;
            c.batch_size = 32;
            c.seed = t.seed;
            if (fl_site_train(&delta, &r.n_params, &r.train_loss, site, t.model, t.model_len, &c,
                              err))
                fail_msg("%s", err);
            r.delta = delta;
            r.n_examples = site->n_train;
        } else if (t.kind == FL_TASK_EVALUATE) {
            assert_int_equal(fl_site_evaluate(&ev, site, t.model, t.model_len, 1000, err), FL_OK);
            r.loss_sum = ev.loss_sum;
            r.correct = ev.correct;
            r.count = ev.count;
            r.hist = ev.hist;
            r.hist_bins = ev.bins;
        } else {
            continue;
        }
        if (fl_fed_submit(f, s + 1, &r, 0, err)) fail_msg("submit: %s", err);
        free(stats);
        free(delta);
        fl_site_eval_free(&ev);
    }
}

static void test_three_sites_credit(void **state) {
    world w;
    make_world(&w, "by:Home");
    fl_fed_config c;
    fl_fed_config_default(&c);
    c.rounds = 8;
    c.min_sites = 2;
    c.n_allowed = SITES;
    for (int s = 0; s < SITES; s++)
        snprintf(c.allowed[s], FL_NAME_LEN, "site-%d", s + 1);
    char path[4096], err[FL_ERR_LEN];
    snprintf(path, sizeof path, "%s/inproc.db", fl_test_tmpdir());
    fl_store *st;
    assert_int_equal(fl_store_open(&st, path, err), FL_OK);
    fl_federation *f;
    assert_int_equal(fl_fed_open(&f, &c, st, 0, err), FL_OK);
    for (int s = 0; s < SITES; s++) {
        int id;
        char name[16];
        snprintf(name, sizeof name, "site-%d", s + 1);
        if (fl_fed_join(f, name, w.site[s].n_train, fl_site_features(&w.site[s]),
                        fl_site_classes(&w.site[s]), &id, 0, err))
            fail_msg("join: %s", err);
    }
    const double *applied[SITES] = {0};
    for (int guard = 0; fl_fed_stage(f) != FL_STAGE_DONE && guard < 100; guard++)
        work(&w, f, applied);
    assert_int_equal(fl_fed_stage(f), FL_STAGE_DONE);
    assert_null(fl_fed_error(f));
    const fl_round_metrics *m = fl_fed_metrics(f, c.rounds);
    assert_non_null(m);
    print_message("federated validation after %d rounds: accuracy %.4f auc %.4f\n", c.rounds,
                  m->accuracy, m->auc);
    /* the central test split, encoded with the federation's statistics */
    fl_dataset test;
    assert_int_equal(fl_dataset_encode(&test, &w.site[0].enc, &w.csv, w.y, w.test, w.n_test, err),
                     FL_OK);
    size_t len;
    const uint8_t *blob = fl_fed_model(f, &len, NULL);
    fl_model_spec spec;
    float *params;
    assert_int_equal(fl_model_deserialize(&spec, &params, blob, len, err), FL_OK);
    fl_model model;
    assert_int_equal(fl_model_init(&model, w.site[0].be, &spec, 256, 1, err), FL_OK);
    assert_int_equal(fl_model_set_params(&model, params), FL_OK);
    fl_eval ev;
    assert_int_equal(fl_model_evaluate(&ev, &model, &test), FL_OK);
    print_message("federated test: accuracy %.4f auc %.4f\n", ev.accuracy, ev.auc);
    assert_true(ev.accuracy >= 0.76);
    assert_true(ev.auc >= 0.78);
    fl_model_free(&model);
    free(params);
    fl_dataset_free(&test);
    fl_fed_free(f);
    fl_store_close(st);
    free_world(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_sites_credit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
