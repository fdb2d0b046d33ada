/* sites.h: the bundled credit data as the sites of an in-process
 * federation (tests that drive aggregator/round.h directly): 20% held out
 * centrally, the rest partitioned among n sites, each site's CSV written to
 * the test's temporary directory with a schema that declares every level,
 * and opened as a client/site.h site with a 20% local validation split. */
#ifndef FL_TEST_SITES_H
#define FL_TEST_SITES_H

#include "client/site.h"
#include "core/csv.h"
#include "core/dataset.h"
#include "core/schema.h"

#define FL_TEST_MAX_SITES 8

typedef struct fl_test_sites {
    int n;
    fl_schema schema;
    fl_csv csv;
    fl_encoder enc;
    int32_t *y;    /* (csv.n_rows) labels */
    int32_t *test; /* the central test rows */
    int64_t n_test;
    fl_site site[FL_TEST_MAX_SITES];
} fl_test_sites;

/* n sites, partition "iid" | "by:<column>" | "dirichlet:<a>" (seed 42);
 * tag keeps the files of several worlds in one test apart. Fails the test
 * on any error. */
void fl_test_sites_open(fl_test_sites *w, int n, const char *partition, const char *tag);
void fl_test_sites_close(fl_test_sites *w);

#endif
