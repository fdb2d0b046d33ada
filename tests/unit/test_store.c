/* test_store.c: the aggregator's SQLite store: a committed round survives
 * closing and reopening, commits are all-or-nothing (a duplicate round
 * changes nothing), and a model whose bytes no longer match its SHA-256 is
 * refused. */
#include "testutil.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator/store.h"

static void test_commit_reopen(void **state) {
    char path[4096], err[FL_ERR_LEN];
    snprintf(path, sizeof path, "%s/agg1.db", fl_test_tmpdir());
    fl_store *st;
    assert_int_equal(fl_store_open(&st, path, err), FL_OK);
    int last;
    assert_int_equal(fl_store_last_round(st, &last, err), FL_OK);
    assert_int_equal(last, -1);
    assert_int_equal(fl_store_meta_set(st, "federation_id", "fed-1", err), FL_OK);
    assert_int_equal(fl_store_site_join(st, 1, "site-1", 100, err), FL_OK);
    uint8_t model[] = "model bytes";
    fl_metric m[] = {{"accuracy", 0.8}, {"auc", NAN}};
    fl_participation p[] = {{1, "completed", NULL, 100, 0.5}, {2, "dropped", "deadline", 0, NAN}};
    fl_round_record r = {.round = 0,
                         .seed = 42,
                         .model = model,
                         .model_len = sizeof model,
                         .metrics = m,
                         .n_metrics = 2,
                         .parts = p,
                         .n_parts = 2};
    assert_int_equal(fl_store_commit_round(st, &r, err), FL_OK);
    /* the same round again: refused, nothing half-written */
    assert_int_equal(fl_store_commit_round(st, &r, err), FL_ESTATE);
    assert_int_equal(fl_store_event(st, "commit", NULL, 0, "round 0", err), FL_OK);
    fl_store_close(st);

    assert_int_equal(fl_store_open(&st, path, err), FL_OK);
    assert_int_equal(fl_store_last_round(st, &last, err), FL_OK);
    assert_int_equal(last, 0);
    char *v;
    assert_int_equal(fl_store_meta_get(st, "federation_id", &v, err), FL_OK);
    assert_string_equal(v, "fed-1");
    free(v);
    assert_int_equal(fl_store_meta_get(st, "nosuch", &v, err), FL_OK);
    assert_null(v);
    uint8_t *blob, sha[32];
    size_t len;
    assert_int_equal(fl_store_load_model(st, 0, &blob, &len, sha, err), FL_OK);
    assert_int_equal(len, sizeof model);
    assert_memory_equal(blob, model, len);
    free(blob);
    assert_float_equal(fl_store_metric(st, 0, "accuracy"), 0.8, 1e-12);
    assert_true(isnan(fl_store_metric(st, 0, "auc")));
    assert_int_equal(fl_store_load_model(st, 5, &blob, &len, sha, err), FL_EINVAL);
    /* tamper with the stored model: the hash check refuses it */
    assert_int_equal(sqlite3_exec(fl_store_db(st), "UPDATE models SET blob = x'00' WHERE round = 0",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(fl_store_load_model(st, 0, &blob, &len, sha, err), FL_ECRYPTO);
    assert_non_null(strstr(err, "SHA-256"));
    fl_store_close(st);
    fl_store_close(NULL);
}

static void test_open_failure(void **state) {
    fl_store *st;
    char err[FL_ERR_LEN];
    assert_int_equal(fl_store_open(&st, "/nonexistent-dir/x.db", err), FL_EIO);
    assert_non_null(strstr(err, "/nonexistent-dir/x.db"));
    assert_null(st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_reopen),
        cmocka_unit_test(test_open_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
