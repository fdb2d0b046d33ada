/* sites.c: fl_test_sites of sites.h. */
#include "sites.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/partition.h"
#include "testutil.h"

void fl_test_sites_open(fl_test_sites *w, int n, const char *partition, const char *tag) {
    char err[FL_ERR_LEN], spath[4096], path[4096];
    memset(w, 0, sizeof *w);
    assert_true(n >= 1 && n <= FL_TEST_MAX_SITES);
    w->n = n;
    snprintf(spath, sizeof spath, "%s/../credit.schema.ini", COHORT_DATA_DIR);
    if (fl_schema_load(&w->schema, spath, err)) fail_msg("%s", err);
    if (fl_csv_load(&w->csv, fl_test_data("credit_data.csv"), err)) fail_msg("%s", err);
    if (fl_encoder_init(&w->enc, &w->schema, &w->csv, err)) fail_msg("%s", err);
    w->y = malloc((size_t)w->csv.n_rows * sizeof(int32_t));
    if (fl_encoder_labels(w->y, &w->enc, &w->csv, err)) fail_msg("%s", err);
    int32_t *rest, *none;
    int64_t n_rest, n_none;
    assert_int_equal(fl_split_stratified(&rest, &n_rest, &none, &n_none, &w->test, &w->n_test, w->y,
                                         w->csv.n_rows, w->enc.n_classes, 0.0, 0.2, 42),
                     FL_OK);
    int *site_of = malloc((size_t)n_rest * sizeof(int));
    if (fl_partition(site_of, &w->csv, w->y, w->enc.n_classes, rest, n_rest, n, partition, 42, err))
        fail_msg("%s", err);
    snprintf(spath, sizeof spath, "%s/%s-site.schema.ini", fl_test_tmpdir(), tag);
    if (fl_schema_write_with_levels(spath, &w->schema, &w->enc, err)) fail_msg("%s", err);
    int32_t *rows = malloc((size_t)n_rest * sizeof(int32_t));
    for (int s = 0; s < n; s++) {
        int64_t k = 0;
        for (int64_t i = 0; i < n_rest; i++)
            if (site_of[i] == s) rows[k++] = rest[i];
        assert_true(k > 0);
        snprintf(path, sizeof path, "%s/%s-site-%d.csv", fl_test_tmpdir(), tag, s + 1);
        if (fl_csv_write_rows(path, &w->csv, rows, k, err)) fail_msg("%s", err);
        if (fl_site_open(&w->site[s], path, spath, 0.2, 100 + (uint64_t)s, FL_DEVICE_CPU, err))
            fail_msg("%s", err);
    }
    free(rows);
    free(site_of);
    free(rest);
    free(none);
}

void fl_test_sites_close(fl_test_sites *w) {
    for (int s = 0; s < w->n; s++)
        fl_site_close(&w->site[s]);
    fl_encoder_free(&w->enc);
    fl_csv_free(&w->csv);
    fl_schema_free(&w->schema);
    free(w->y);
    free(w->test);
}
