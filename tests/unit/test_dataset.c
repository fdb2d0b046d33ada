/* test_dataset.c: from CSV + schema to tensors (core/dataset.h). Exact
 * values on a five-row fixture (layout, imputation, standardisation, groups),
 * the split's determinism and stratification, mergeable statistics, the
 * three bundled datasets end to end, and every bad-input case with its code
 * and message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "core/dataset.h"

#define assert_err(rc, code, err, sub)                                                             \
    do {                                                                                           \
        assert_int_equal((rc), (code));                                                            \
        if (!strstr((err), (sub))) fail_msg("error '%s' does not contain '%s'", (err), (sub));     \
    } while (0)

#define assert_near(a, b, tol)                                                                     \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.12g, expected %.12g", #a, a_, b_);         \
    } while (0)

static char g_demo[4096];
static const char *demo(const char *name) {
    snprintf(g_demo, sizeof g_demo, "%s/../%s", fl_test_data(""), name);
    return g_demo;
}

/* Writes csv and schema text to temp files and loads both. */
static void load_pair(fl_csv *csv, fl_schema *s, const char *csv_name, const char *csv_text,
                      const char *schema_name, const char *schema_text) {
    char err[FL_ERR_LEN] = "";
    char *p = fl_test_write_tmp(csv_name, csv_text);
    if (fl_csv_load(csv, p, err)) fail_msg("%s", err);
    free(p);
    p = fl_test_write_tmp(schema_name, schema_text);
    if (fl_schema_load(s, p, err)) fail_msg("%s", err);
    free(p);
}

static void load_small(fl_csv *csv, fl_schema *s) {
    char err[FL_ERR_LEN] = "";
    if (fl_csv_load(csv, fl_test_fixture("ds_small.csv"), err)) fail_msg("%s", err);
    if (fl_schema_load(s, fl_test_fixture("ds_small.schema.ini"), err)) fail_msg("%s", err);
}

/* Fits enc on all rows of csv. */
static void fit_all(fl_encoder *enc, const fl_csv *csv) {
    fl_stats st;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_stats_init(&st, enc), 0);
    if (fl_stats_accumulate(&st, enc, csv, NULL, 0, err)) fail_msg("%s", err);
    assert_int_equal(fl_encoder_finish(enc, &st), 0);
    fl_stats_free(&st);
}

static void test_encoder_layout(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    char err[FL_ERR_LEN] = "";
    load_small(&csv, &s);
    if (fl_encoder_init(&enc, &s, &csv, err)) fail_msg("%s", err);
    /* '*': every column but the label and the sensitive one, in CSV order. */
    assert_int_equal(enc.n_cols, 3);
    assert_string_equal(enc.cols[0].name, "age");
    assert_string_equal(enc.cols[1].name, "home");
    assert_string_equal(enc.cols[2].name, "income");
    assert_int_equal(enc.cols[0].categorical, 0);
    assert_int_equal(enc.cols[1].categorical, 1);
    assert_int_equal(enc.cols[1].csv_col, 1);
    assert_int_equal(enc.cols[1].n_levels, 2); /* NA is missing, not a level */
    assert_string_equal(enc.cols[1].levels[0], "own");
    assert_string_equal(enc.cols[1].levels[1], "rent");
    assert_int_equal(enc.cols[0].offset, 0);
    assert_int_equal(enc.cols[1].offset, 1);
    assert_int_equal(enc.cols[2].offset, 3);
    assert_int_equal(enc.n_features, 4);
    assert_int_equal(enc.label_col, 3);
    assert_int_equal(enc.n_classes, 2);
    assert_string_equal(enc.classes[0], "not good");
    assert_string_equal(enc.classes[1], "good");
    assert_int_equal(enc.n_sensitive, 1);
    assert_int_equal(enc.sens_col[0], 4);
    assert_non_null(enc.sens_def[0]);
    assert_int_equal(enc.finished, 0);
    assert_true(fl_encoder_is_missing(&enc, "NA"));
    assert_true(fl_encoder_is_missing(&enc, ""));
    assert_false(fl_encoder_is_missing(&enc, "na"));

    int32_t y[5];
    assert_int_equal(fl_encoder_labels(y, &enc, &csv, err), 0);
    int32_t want[5] = {1, 0, 1, 1, 0};
    assert_memory_equal(y, want, sizeof want);
    fl_encoder_free(&enc);
    fl_encoder_free(&enc);
    fl_encoder_free(NULL);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

static void test_impute_standardise_onehot(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    fl_dataset ds;
    char err[FL_ERR_LEN] = "";
    load_small(&csv, &s);
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    fit_all(&enc, &csv);
    assert_int_equal(enc.finished, 1);
    /* age 20..60: mean 40, population variance 200. */
    assert_near(enc.cols[0].mean, 40.0, 1e-12);
    assert_near(enc.cols[0].std, sqrt(200.0), 1e-9);
    /* income 100,300,200,400 (one missing): mean 250, variance 12500. */
    assert_near(enc.cols[2].mean, 250.0, 1e-12);
    assert_near(enc.cols[2].std, sqrt(12500.0), 1e-9);
    /* home: own 2, rent 2: the tie goes to the lowest index. */
    assert_int_equal(enc.cols[1].mode, 0);

    int32_t y[5];
    assert_int_equal(fl_encoder_labels(y, &enc, &csv, err), 0);
    if (fl_dataset_encode(&ds, &enc, &csv, y, NULL, 0, err)) fail_msg("%s", err);
    assert_int_equal(ds.n, 5);
    assert_int_equal(ds.d, 4);
    assert_int_equal(ds.n_classes, 2);
    assert_int_equal(ds.n_sensitive, 1);
    const float *x = ds.X;
    /* row 0: 20,rent,100 */
    assert_near(x[0], (20 - 40) / sqrt(200.0), 1e-6);
    assert_near(x[1], 0, 0);
    assert_near(x[2], 1, 0);
    assert_near(x[3], (100 - 250) / sqrt(12500.0), 1e-6);
    /* row 1: income missing -> mean -> 0 after standardising */
    assert_near(x[4 + 3], 0, 0);
    assert_near(x[4 + 1], 1, 0); /* own */
    /* row 3: home NA -> the mode, 'own' */
    assert_near(x[12 + 1], 1, 0);
    assert_near(x[12 + 2], 0, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(ds.src_line[i], i + 2);
    int32_t groups[5] = {0, 1, 0, 1, 0};
    assert_memory_equal(ds.groups, groups, sizeof groups);
    int32_t want_y[5] = {1, 0, 1, 1, 0};
    assert_memory_equal(ds.y, want_y, sizeof want_y);

    /* A subset copies rows in the order given. */
    fl_dataset sub;
    int32_t idx[2] = {3, 0};
    assert_int_equal(fl_dataset_subset(&sub, &ds, idx, 2), 0);
    assert_int_equal(sub.n, 2);
    assert_memory_equal(sub.X, ds.X + 12, 4 * sizeof(float));
    assert_memory_equal(sub.X + 4, ds.X, 4 * sizeof(float));
    assert_int_equal(sub.y[0], 1);
    assert_int_equal(sub.groups[0], 1);
    assert_int_equal(sub.src_line[1], 2);
    fl_dataset_free(&sub);
    int32_t bad[1] = {5};
    assert_int_equal(fl_dataset_subset(&sub, &ds, bad, 1), FL_EINVAL);

    /* Chosen rows only. */
    fl_dataset two;
    int32_t rows[2] = {4, 1};
    assert_int_equal(fl_dataset_encode(&two, &enc, &csv, y, rows, 2, err), 0);
    assert_memory_equal(two.X, ds.X + 16, 4 * sizeof(float));
    assert_int_equal(two.src_line[1], 3);
    fl_dataset_free(&two);

    fl_dataset_free(&ds);
    fl_dataset_free(&ds);
    fl_dataset_free(NULL);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

static void test_sensitive_as_feature(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    fl_dataset ds;
    char err[FL_ERR_LEN] = "";
    load_pair(&csv, &s, "sf.csv",
              "age,home,income,status,sex\n20,rent,1,good,F\n35,own,2,bad,M\n70,own,3,bad,\n",
              "sf.ini",
              "[schema]\nlabel = status\npositive = good\nfeatures = sex,age\n"
              "categorical = home,sex\nsensitive = age,sex\n[groups]\n"
              "age = <30,30-60,>=60\nsex = F,M\n");
    if (fl_encoder_init(&enc, &s, &csv, err)) fail_msg("%s", err);
    /* Explicit list: its order, and sensitive columns listed there are features. */
    assert_int_equal(enc.n_cols, 2);
    assert_string_equal(enc.cols[0].name, "sex");
    assert_int_equal(enc.cols[0].categorical, 1);
    assert_int_equal(enc.cols[0].n_levels, 2);
    assert_string_equal(enc.cols[1].name, "age");
    assert_int_equal(enc.cols[1].offset, 2);
    assert_int_equal(enc.n_features, 3);
    assert_int_equal(enc.n_sensitive, 2);
    fit_all(&enc, &csv);
    int32_t y[3];
    assert_int_equal(fl_encoder_labels(y, &enc, &csv, err), 0);
    assert_int_equal(fl_dataset_encode(&ds, &enc, &csv, y, NULL, 0, err), 0);
    int32_t groups[6] = {0, 0, 1, 1, 2, -1}; /* (row, attribute); missing sex -> -1 */
    assert_memory_equal(ds.groups, groups, sizeof groups);
    /* Missing sex imputed with the mode (F and M tie: F). */
    assert_near(ds.X[6 + 0], 1, 0);
    fl_dataset_free(&ds);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

static void test_multiclass_and_declared(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    char err[FL_ERR_LEN] = "";
    const char *text = "x,k,y\n1,p,c\n2,q,a\n3,p,b\n4,r,a\n";
    load_pair(&csv, &s, "mc.csv", text, "mc.ini", "[schema]\nlabel = y\ncategorical = k\n");
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    assert_int_equal(enc.n_classes, 3); /* sorted distinct values */
    assert_string_equal(enc.classes[0], "a");
    assert_string_equal(enc.classes[2], "c");
    int32_t y[4];
    assert_int_equal(fl_encoder_labels(y, &enc, &csv, err), 0);
    int32_t want[4] = {2, 0, 1, 0};
    assert_memory_equal(y, want, sizeof want);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);

    /* Declared classes and levels keep their declared order. */
    load_pair(&csv, &s, "mc.csv", text, "mcd.ini",
              "[schema]\nlabel = y\ncategorical = k\n[levels]\ny = c,b,a\nk = r,q,p,z\n");
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    assert_string_equal(enc.classes[0], "c");
    assert_int_equal(enc.cols[1].n_levels, 4);
    assert_string_equal(enc.cols[1].levels[0], "r");
    assert_int_equal(enc.n_features, 5);
    assert_int_equal(fl_encoder_labels(y, &enc, &csv, err), 0);
    int32_t want2[4] = {0, 2, 1, 2};
    assert_memory_equal(y, want2, sizeof want2);
    fit_all(&enc, &csv);
    assert_int_equal(enc.cols[1].mode, 2); /* p seen twice */
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);

    /* A label value outside the declared classes. */
    load_pair(&csv, &s, "mc.csv", text, "mcu.ini", "[schema]\nlabel = y\n[levels]\ny = a,b\n");
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    assert_err(fl_encoder_labels(y, &enc, &csv, err), FL_EINVAL, err,
               "mc.csv:2:3: unknown label value 'c' in column 'y' (expected one of: a, b)");
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);

    /* One class only cannot be learned. */
    load_pair(&csv, &s, "one.csv", "x,y\n1,a\n2,a\n", "one.ini", "[schema]\nlabel = y\n");
    assert_err(fl_encoder_init(&enc, &s, &csv, err), FL_EINVAL, err,
               "one.ini:2: label 'y' has 1 distinct value(s)");
    assert_null(enc.cols);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

static void test_unknown_column(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    char err[FL_ERR_LEN] = "";
    const char *text = "a,b,y\n1,2,x\n3,4,z\n";
    struct {
        const char *schema, *msg;
    } cases[] = {
        {"[schema]\nlabel = y\nfeatures = a,nope\n",
         "uc.ini:3: unknown column 'nope' in features (not in the header of"},
        {"; comment\n[schema]\nlabel = why\n", "uc.ini:3: unknown column 'why' for label"},
        {"[schema]\nlabel = y\ncategorical = a,B\n", "uc.ini:3: unknown column 'B' in categorical"},
        {"[schema]\nlabel = y\nsensitive = s\n[groups]\ns = <1\n",
         "uc.ini:3: unknown column 's' in sensitive"},
        {"[schema]\nlabel = y\n\ndrop = gone\n", "uc.ini:4: unknown column 'gone' in drop"},
        {"[schema]\nlabel = y\ncategorical = k\n[levels]\nk = p\n",
         "uc.ini:3: unknown column 'k' in categorical"},
        {"[schema]\nlabel = y\nsensitive = a\ndrop = b\nfeatures = *\n",
         "uc.ini:5: no feature columns"},
        {"[schema]\nlabel = y\nmissing_indicators = amount\n",
         "uc.ini:3: unknown column 'amount' in missing_indicators"},
        /* a transform of a column that is not a feature */
        {"[schema]\nlabel = y\nfeatures = a\nlog = b\n",
         "uc.ini:4: column 'b' in log is not a feature"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        load_pair(&csv, &s, "uc.csv", text, "uc.ini", cases[i].schema);
        err[0] = 0;
        int rc = fl_encoder_init(&enc, &s, &csv, err);
        if (rc != FL_EINVAL || !strstr(err, cases[i].msg))
            fail_msg("case %zu: rc %d, err '%s' (want '%s')", i, rc, err, cases[i].msg);
        assert_true(strstr(err, "uc.csv") != NULL || i == 6 || i == 8);
        assert_null(enc.cols);
        fl_schema_free(&s);
        fl_csv_free(&csv);
    }
}

static void test_missing_label(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    fl_dataset tr, va, te;
    char err[FL_ERR_LEN] = "";
    int32_t y[3];
    load_pair(&csv, &s, "ml.csv", "a,b,c,status\n1,2,3,good\n4,5,6,\n7,8,9,bad\n", "ml.ini",
              "[schema]\nlabel = status\npositive = good\n");
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    assert_err(fl_encoder_labels(y, &enc, &csv, err), FL_EINVAL, err,
               "ml.csv:3:4: missing label value in column 'status'");
    fl_encoder_free(&enc);
    /* The same through the one-call path, with the NA token. */
    fl_csv_free(&csv);
    fl_schema_free(&s);
    load_pair(&csv, &s, "ml2.csv", "a,status\n1,good\n2,bad\n3,NA\n", "ml2.ini",
              "[schema]\nlabel = status\npositive = good\nmissing = ,NA\n");
    assert_err(fl_dataset_load_split(&tr, &va, &te, &enc, &csv, &s, 0.0, 0.3, 1, err), FL_EINVAL,
               err, "ml2.csv:4:2: missing label value in column 'status'");
    assert_null(tr.X);
    assert_null(enc.cols);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

static void test_text_in_numeric(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    fl_stats st;
    fl_dataset ds;
    char err[FL_ERR_LEN] = "";
    load_pair(&csv, &s, "tn.csv",
              "age,home,income,status\n20,rent,100,good\n30,own,5e2,bad\n40,rent,abc,good\n"
              "50,own,nan,bad\n60,own,inf,bad\n70,own, 7 ,bad\n",
              "tn.ini", "[schema]\nlabel = status\npositive = good\ncategorical = home\n");
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    assert_int_equal(fl_stats_init(&st, &enc), 0);
    assert_err(fl_stats_accumulate(&st, &enc, &csv, NULL, 0, err), FL_EINVAL, err,
               "tn.csv:4:3: column 'income': expected a number, got 'abc'");
    assert_int_equal(st.count[2], 0); /* a failed accumulate adds nothing */
    int32_t r1[1] = {3}, r2[1] = {4}, ok[3] = {0, 1, 5};
    assert_err(fl_stats_accumulate(&st, &enc, &csv, r1, 1, err), FL_EINVAL, err,
               "tn.csv:5:3: column 'income': expected a number, got 'nan'");
    assert_err(fl_stats_accumulate(&st, &enc, &csv, r2, 1, err), FL_EINVAL, err,
               "tn.csv:6:3: column 'income': expected a number, got 'inf'");
    assert_int_equal(fl_stats_accumulate(&st, &enc, &csv, ok, 3, err), 0);
    assert_int_equal(st.count[2], 3);
    assert_near(st.sum[2], 607, 1e-12); /* 100 + 5e2 + " 7 " */
    assert_int_equal(fl_encoder_finish(&enc, &st), 0);
    int32_t y[7] = {1, 0, 1, 0, 0, 0, 0};
    int32_t rows[2] = {0, 2};
    assert_err(fl_dataset_encode(&ds, &enc, &csv, y, rows, 2, err), FL_EINVAL, err,
               "tn.csv:4:3: column 'income': expected a number, got 'abc'");
    assert_null(ds.X);
    fl_stats_free(&st);
    fl_stats_free(&st);
    fl_stats_free(NULL);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

/* Declared [levels] fix the vocabulary; a value outside it at evaluation
 * time is an error, not a silent all-zero encoding. */
static void test_unseen_level(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    fl_stats st;
    fl_dataset ds;
    char err[FL_ERR_LEN] = "";
    load_pair(&csv, &s, "ul.csv", "x,home,y\n1,rent,a\n2,own,b\n3,rent,a\n4,castle,b\n", "ul.ini",
              "[schema]\nlabel = y\npositive = a\ncategorical = home\n"
              "[levels]\nhome = rent,own\n");
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    assert_int_equal(fl_stats_init(&st, &enc), 0);
    int32_t train[3] = {0, 1, 2};
    assert_int_equal(fl_stats_accumulate(&st, &enc, &csv, train, 3, err), 0);
    assert_int_equal(st.level_count[1][0], 2);
    assert_int_equal(st.level_count[1][1], 1);
    assert_int_equal(fl_encoder_finish(&enc, &st), 0);
    int32_t y[4];
    assert_int_equal(fl_encoder_labels(y, &enc, &csv, err), 0);
    int32_t test[1] = {3};
    assert_err(fl_dataset_encode(&ds, &enc, &csv, y, test, 1, err), FL_EINVAL, err,
               "ul.csv:5:2: unseen level 'castle' in column 'home' (known: rent, own)");
    assert_null(ds.X);
    assert_err(fl_stats_accumulate(&st, &enc, &csv, NULL, 0, err), FL_EINVAL, err,
               "ul.csv:5:2: unseen level 'castle'");
    fl_stats_free(&st);
    fl_encoder_free(&enc);

    fl_dataset tr, va, te;
    assert_err(fl_dataset_load_split(&tr, &va, &te, &enc, &csv, &s, 0.0, 0.5, 3, err), FL_EINVAL,
               err, "ul.csv:5:2: unseen level 'castle' in column 'home'");
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

static void test_sensitive_bin_text(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    fl_dataset ds;
    char err[FL_ERR_LEN] = "";
    load_pair(&csv, &s, "sb.csv", "x,age,y\n1,30,a\n2,old,b\n3,,a\n", "sb.ini",
              "[schema]\nlabel = y\npositive = a\nsensitive = age\n[groups]\nage = <40,>=40\n");
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    fit_all(&enc, &csv);
    int32_t y[3] = {1, 0, 1};
    assert_err(fl_dataset_encode(&ds, &enc, &csv, y, NULL, 0, err), FL_EINVAL, err,
               "sb.csv:3:2: column 'age': expected a number for its fairness bins, got 'old'");
    int32_t rows[2] = {0, 2};
    assert_int_equal(fl_dataset_encode(&ds, &enc, &csv, y, rows, 2, err), 0);
    assert_int_equal(ds.groups[0], 0);
    assert_int_equal(ds.groups[1], -1); /* missing */
    fl_dataset_free(&ds);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

static void test_too_many_levels(void **state) {
    (void)state;
    size_t cap = 5000 * 16 + 32;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t len = (size_t)sprintf(text, "id,y\n");
    for (int i = 0; i < 5000; i++)
        len += (size_t)sprintf(text + len, "v%d,%d\n", i, i % 2);
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    char err[FL_ERR_LEN] = "";
    load_pair(&csv, &s, "tm.csv", text, "tm.ini", "[schema]\nlabel = y\ncategorical = id\n");
    assert_err(fl_encoder_init(&enc, &s, &csv, err), FL_EINVAL, err,
               "tm.ini:3: categorical column 'id' has more than 4096 distinct values");
    free(text);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

static int is_sorted_unique(const int32_t *a, int64_t n) {
    for (int64_t i = 1; i < n; i++)
        if (a[i] <= a[i - 1]) return 0;
    return 1;
}

static void test_split(void **state) {
    (void)state;
    enum { N = 1000 };
    int32_t y[N];
    for (int i = 0; i < N; i++)
        y[i] = (i % 10) < 3; /* 700 of class 0, 300 of class 1 */
    int32_t *tr, *va, *te, *tr2, *va2, *te2;
    int64_t ntr, nva, nte, ntr2, nva2, nte2;
    assert_int_equal(fl_split_stratified(&tr, &ntr, &va, &nva, &te, &nte, y, N, 2, 0.1, 0.2, 42),
                     0);
    assert_int_equal(ntr + nva + nte, N);
    assert_int_equal(nte, 200);
    assert_int_equal(nva, 100);
    assert_true(is_sorted_unique(tr, ntr) && is_sorted_unique(va, nva) &&
                is_sorted_unique(te, nte));
    /* Stratified: each part keeps the 30% share of class 1 exactly here. */
    int ones_te = 0, ones_va = 0, ones_tr = 0;
    for (int64_t i = 0; i < nte; i++)
        ones_te += y[te[i]];
    for (int64_t i = 0; i < nva; i++)
        ones_va += y[va[i]];
    for (int64_t i = 0; i < ntr; i++)
        ones_tr += y[tr[i]];
    assert_int_equal(ones_te, 60);
    assert_int_equal(ones_va, 30);
    assert_int_equal(ones_tr, 210);
    /* A partition: every row exactly once. */
    char seen[N] = {0};
    for (int64_t i = 0; i < ntr; i++)
        seen[tr[i]]++;
    for (int64_t i = 0; i < nva; i++)
        seen[va[i]]++;
    for (int64_t i = 0; i < nte; i++)
        seen[te[i]]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);

    /* Same seed: identical. */
    assert_int_equal(
        fl_split_stratified(&tr2, &ntr2, &va2, &nva2, &te2, &nte2, y, N, 2, 0.1, 0.2, 42), 0);
    assert_int_equal(nte2, nte);
    assert_memory_equal(te, te2, (size_t)nte * sizeof *te);
    assert_memory_equal(va, va2, (size_t)nva * sizeof *va);
    assert_memory_equal(tr, tr2, (size_t)ntr * sizeof *tr);
    free(tr2);
    free(va2);
    free(te2);
    /* Another seed: same sizes, different rows. */
    assert_int_equal(
        fl_split_stratified(&tr2, &ntr2, &va2, &nva2, &te2, &nte2, y, N, 2, 0.1, 0.2, 43), 0);
    assert_int_equal(nte2, nte);
    assert_true(memcmp(te, te2, (size_t)nte * sizeof *te) != 0);
    free(tr2);
    free(va2);
    free(te2);
    free(tr);
    free(va);
    free(te);
}

static void test_split_edges(void **state) {
    (void)state;
    int32_t *tr, *va, *te;
    int64_t ntr, nva, nte;
    /* Classes of 1 and 2 rows with large fractions: a 2-row class keeps one
     * row in train. */
    int32_t y[3] = {0, 1, 1};
    assert_int_equal(fl_split_stratified(&tr, &ntr, &va, &nva, &te, &nte, y, 3, 2, 0.45, 0.5, 7),
                     0);
    int ones = 0;
    for (int64_t i = 0; i < ntr; i++)
        ones += y[tr[i]];
    assert_int_equal(ones, 1);
    assert_int_equal(ntr + nva + nte, 3);
    free(tr);
    free(va);
    free(te);
    /* No test or validation: everything in train, empty arrays still freeable. */
    assert_int_equal(fl_split_stratified(&tr, &ntr, &va, &nva, &te, &nte, y, 3, 2, 0, 0, 7), 0);
    assert_int_equal(ntr, 3);
    assert_int_equal(nva + nte, 0);
    assert_non_null(va);
    free(tr);
    free(va);
    free(te);
    /* Bad arguments. */
    assert_int_equal(fl_split_stratified(&tr, &ntr, &va, &nva, &te, &nte, y, 3, 2, 0.5, 0.5, 7),
                     FL_EINVAL);
    assert_null(tr);
    assert_int_equal(fl_split_stratified(&tr, &ntr, &va, &nva, &te, &nte, y, 3, 2, -0.1, 0.2, 7),
                     FL_EINVAL);
    assert_int_equal(fl_split_stratified(&tr, &ntr, &va, &nva, &te, &nte, y, 3, 2, NAN, 0.2, 7),
                     FL_EINVAL);
    assert_int_equal(fl_split_stratified(&tr, &ntr, &va, &nva, &te, &nte, y, 3, 1, 0.1, 0.2, 7),
                     FL_EINVAL); /* label 1 out of range for one class */
}

/* The statistics round sums per-site fl_stats: two halves merged must
 * equal the whole. */
static void test_stats_merge(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    fl_stats whole, a, b;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_csv_load(&csv, fl_test_data("credit_data.csv"), err), 0);
    if (fl_schema_load(&s, demo("credit.schema.ini"), err)) fail_msg("%s", err);
    if (fl_encoder_init(&enc, &s, &csv, err)) fail_msg("%s", err);
    int64_t n = csv.n_rows, h = n / 2;
    int32_t *rows = malloc((size_t)n * sizeof *rows);
    for (int64_t i = 0; i < n; i++)
        rows[i] = (int32_t)i;
    assert_int_equal(fl_stats_init(&whole, &enc), 0);
    assert_int_equal(fl_stats_init(&a, &enc), 0);
    assert_int_equal(fl_stats_init(&b, &enc), 0);
    assert_int_equal(fl_stats_accumulate(&whole, &enc, &csv, NULL, 0, err), 0);
    assert_int_equal(fl_stats_accumulate(&a, &enc, &csv, rows, h, err), 0);
    assert_int_equal(fl_stats_accumulate(&b, &enc, &csv, rows + h, n - h, err), 0);
    assert_int_equal(fl_stats_merge(&a, &b), 0);
    for (int c = 0; c < enc.n_cols; c++) {
        assert_int_equal(a.count[c], whole.count[c]);
        assert_near(a.sum[c], whole.sum[c], 1e-9 * fabs(whole.sum[c]));
        assert_near(a.sumsq[c], whole.sumsq[c], 1e-9 * fabs(whole.sumsq[c]));
        assert_int_equal(a.n_levels[c], whole.n_levels[c]);
        for (int k = 0; k < a.n_levels[c]; k++)
            assert_int_equal(a.level_count[c][k], whole.level_count[c][k]);
    }
    /* Income has 381 missing cells, Home 6 missing. */
    int income = -1, home = -1;
    for (int c = 0; c < enc.n_cols; c++) {
        if (!strcmp(enc.cols[c].name, "Income")) income = c;
        if (!strcmp(enc.cols[c].name, "Home")) home = c;
    }
    assert_int_equal(whole.count[income], 4454 - 381);
    int64_t hs = 0;
    for (int k = 0; k < whole.n_levels[home]; k++)
        hs += whole.level_count[home][k];
    assert_int_equal(hs, 4454 - 6);

    /* Stats of another shape do not merge or finish. */
    fl_stats other;
    fl_encoder small;
    fl_csv csv2;
    fl_schema s2;
    load_small(&csv2, &s2);
    assert_int_equal(fl_encoder_init(&small, &s2, &csv2, err), 0);
    assert_int_equal(fl_stats_init(&other, &small), 0);
    assert_int_equal(fl_stats_merge(&a, &other), FL_EINVAL);
    assert_int_equal(fl_encoder_finish(&enc, &other), FL_EINVAL);
    /* An encoder applied to a file with another layout is refused. */
    assert_err(fl_stats_accumulate(&other, &small, &csv, NULL, 0, err), FL_EINVAL, err,
               "is not column");
    /* Encoding before fitting is a state error. */
    fl_dataset ds;
    int32_t y[5] = {0};
    assert_err(fl_dataset_encode(&ds, &small, &csv2, y, NULL, 0, err), FL_ESTATE, err,
               "fl_encoder_finish");
    fl_stats_free(&other);
    fl_encoder_free(&small);
    fl_schema_free(&s2);
    fl_csv_free(&csv2);

    free(rows);
    fl_stats_free(&whole);
    fl_stats_free(&a);
    fl_stats_free(&b);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

/* `cohort train` must load the CSV first: an empty fl_csv is refused with a
 * message, not read. */
static void test_not_loaded(void **state) {
    (void)state;
    fl_csv csv = {0};
    fl_schema s;
    fl_encoder enc;
    fl_dataset tr, va, te;
    char err[FL_ERR_LEN] = "";
    if (fl_schema_load(&s, fl_test_fixture("ds_small.schema.ini"), err)) fail_msg("%s", err);
    assert_err(fl_dataset_load_split(&tr, &va, &te, &enc, &csv, &s, 0.1, 0.2, 0, err), FL_EINVAL,
               err, "fl_csv_load");
    assert_err(fl_encoder_init(&enc, &s, &csv, err), FL_EINVAL, err, "not loaded");
    fl_schema_free(&s);
}

/* Degenerate columns: constant (std 1) and all missing (mean 0, std 1). */
static void test_degenerate_columns(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    char err[FL_ERR_LEN] = "";
    load_pair(&csv, &s, "dg.csv", "c,m,y\n5,,a\n5,,b\n5,,a\n", "dg.ini",
              "[schema]\nlabel = y\npositive = a\n");
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    fit_all(&enc, &csv);
    assert_near(enc.cols[0].mean, 5, 0);
    assert_near(enc.cols[0].std, 1, 0);
    assert_near(enc.cols[1].mean, 0, 0);
    assert_near(enc.cols[1].std, 1, 0);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

/* The single-site path on a bundled dataset: sizes, stratification, and
 * train columns standardised to mean 0 and (population) std 1. */
static void check_demo(const char *data, const char *schema, int want_features,
                       int want_sensitive) {
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    fl_dataset tr, va, te;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_csv_load(&csv, fl_test_data(data), err), 0);
    if (fl_schema_load(&s, demo(schema), err)) fail_msg("%s", err);
    if (fl_dataset_load_split(&tr, &va, &te, &enc, &csv, &s, 0.1, 0.2, 0, err)) fail_msg("%s", err);
    assert_int_equal(enc.n_features, want_features);
    assert_int_equal(tr.d, want_features);
    assert_int_equal(tr.n + va.n + te.n, csv.n_rows);
    assert_true(llabs(te.n - (int64_t)llround(0.2 * (double)csv.n_rows)) <= 2);
    assert_int_equal(tr.n_sensitive, want_sensitive);
    double pos_all = 0, pos_te = 0;
    for (int64_t i = 0; i < tr.n; i++)
        pos_all += tr.y[i];
    for (int64_t i = 0; i < va.n; i++)
        pos_all += va.y[i];
    for (int64_t i = 0; i < te.n; i++)
        pos_all += te.y[i];
    for (int64_t i = 0; i < te.n; i++)
        pos_te += te.y[i];
    assert_near(pos_te / (double)te.n, pos_all / (double)csv.n_rows, 0.005);
    for (int c = 0; c < enc.n_cols; c++) {
        const fl_enc_col *col = &enc.cols[c];
        if (col->categorical) continue;
        double m = 0, m2 = 0;
        int64_t nn = 0;
        for (int64_t i = 0; i < tr.n; i++) {
            float v = tr.X[i * tr.d + col->offset];
            assert_true(isfinite(v));
            m += v;
            m2 += (double)v * v;
            nn++;
        }
        m /= (double)nn;
        assert_near(m, 0, 1e-4);
        /* Imputed cells sit at 0 and shrink the spread: std <= 1. */
        double sd = sqrt(m2 / (double)nn - m * m);
        assert_true(sd <= 1.0 + 1e-4 && sd > 0.5);
    }
    for (int64_t i = 0; i < te.n * te.n_sensitive; i++)
        assert_true(te.groups[i] >= -1 && te.groups[i] < 8);
    fl_dataset_free(&tr);
    fl_dataset_free(&va);
    fl_dataset_free(&te);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

static void test_demo_datasets(void **state) {
    (void)state;
    /* credit: 9 numeric + 3 missing indicators (Income, Assets, Debt) +
     * Home 6 + Marital 5 + Records 2 + Job 4. */
    check_demo("credit_data.csv", "credit.schema.ini", 29, 2);
    /* german: 7 numeric + 54 levels over 13 categorical columns. */
    check_demo("german_credit.csv", "german_credit.schema.ini", 61, 3);
    /* flchain: 7 numeric + sex 2; futime and chapter dropped. */
    check_demo("flchain.csv", "flchain.schema.ini", 9, 2);

    /* credit keeps all 13 non-label columns, Age and Marital included. */
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_csv_load(&csv, fl_test_data("credit_data.csv"), err), 0);
    assert_int_equal(fl_schema_load(&s, demo("credit.schema.ini"), err), 0);
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    assert_int_equal(enc.n_cols, 13);
    for (int c = 0; c < enc.n_cols; c++)
        assert_true(enc.cols[c].csv_col != enc.label_col);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);

    /* Same seed, same split; the groups of the first test row are stable. */
    fl_dataset a[3], b[3];
    fl_encoder e1, e2;
    assert_int_equal(fl_csv_load(&csv, fl_test_data("german_credit.csv"), err), 0);
    assert_int_equal(fl_schema_load(&s, demo("german_credit.schema.ini"), err), 0);
    assert_int_equal(fl_dataset_load_split(&a[0], &a[1], &a[2], &e1, &csv, &s, 0.1, 0.2, 9, err),
                     0);
    assert_int_equal(fl_dataset_load_split(&b[0], &b[1], &b[2], &e2, &csv, &s, 0.1, 0.2, 9, err),
                     0);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(a[k].n, b[k].n);
        assert_memory_equal(a[k].X, b[k].X, (size_t)(a[k].n * a[k].d) * sizeof(float));
        assert_memory_equal(a[k].src_line, b[k].src_line, (size_t)a[k].n * sizeof(int32_t));
        fl_dataset_free(&a[k]);
        fl_dataset_free(&b[k]);
    }
    fl_encoder_free(&e1);
    fl_encoder_free(&e2);
    fl_schema_free(&s);
    fl_csv_free(&csv);
}

/* Schema `log` and `missing_indicators`: ln(1 + v) before the statistics,
 * so the mean and scale are of the transformed values; a 0/1 feature after
 * the value; a negative value to log and roles that contradict the
 * transforms, with the file, line and column named (unknown columns and
 * non-features: test_unknown_column). */
static void test_transforms(void **state) {
    (void)state;
    fl_csv csv;
    fl_schema s;
    fl_encoder enc;
    fl_dataset ds;
    char err[FL_ERR_LEN] = "";
    load_pair(&csv, &s, "tf.csv", "amt,n,k,y\n0,1,a,p\n3,,b,q\n,3,a,p\n", "tf.ini",
              "[schema]\nlabel = y\npositive = p\ncategorical = k\nlog = amt\n"
              "missing_indicators = amt,n\n");
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    /* amt [value, missing], n [value, missing], k two levels. */
    assert_int_equal(enc.n_features, 6);
    assert_int_equal(enc.cols[0].log, 1);
    assert_int_equal(enc.cols[0].indicator, 1);
    assert_int_equal(enc.cols[1].log, 0);
    assert_int_equal(enc.cols[1].offset, 2);
    assert_int_equal(enc.cols[2].offset, 4);
    fit_all(&enc, &csv);
    double l0 = log1p(0.0), l3 = log1p(3.0), m = (l0 + l3) / 2, sd = fabs(l3 - l0) / 2;
    assert_near(enc.cols[0].mean, m, 1e-12);
    assert_near(enc.cols[0].std, sd, 1e-12);
    int32_t y[3] = {1, 0, 1};
    assert_int_equal(fl_dataset_encode(&ds, &enc, &csv, y, NULL, 0, err), 0);
    const float want[3][6] = {{(float)((l0 - m) / sd), 0, -1, 0, 1, 0},
                              {(float)((l3 - m) / sd), 0, 0, 1, 0, 1},
                              {0, 1, 1, 0, 1, 0}};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 6; j++)
            assert_near(ds.X[i * 6 + j], want[i][j], 1e-6);
    fl_dataset_free(&ds);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);

    /* A negative amount cannot be logged: the cell is named. */
    load_pair(&csv, &s, "tfneg.csv", "amt,y\n2,p\n-1,q\n", "tfneg.ini",
              "[schema]\nlabel = y\npositive = p\nlog = amt\n");
    assert_int_equal(fl_encoder_init(&enc, &s, &csv, err), 0);
    fl_stats st;
    assert_int_equal(fl_stats_init(&st, &enc), 0);
    assert_err(fl_stats_accumulate(&st, &enc, &csv, NULL, 0, err), FL_EINVAL, err,
               "tfneg.csv:3:1: column 'amt' is in the schema's log list: expected a number >= 0, "
               "got '-1'");
    fl_stats_free(&st);
    fl_encoder_free(&enc);
    fl_schema_free(&s);
    fl_csv_free(&csv);

    /* Roles that contradict the transforms are refused when the schema loads. */
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"[schema]\nlabel = y\ncategorical = k\nlog = k\n", "column 'k' is in both categorical"},
        {"[schema]\nlabel = y\ndrop = d\nmissing_indicators = d\n", "column 'd' is in both drop"},
        {"[schema]\nlabel = y\nlog = y\n", "the label column 'y' cannot be in log"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *p = fl_test_write_tmp("tfbad.ini", bad[i].text);
        int rc = fl_schema_load(&s, p, err);
        free(p);
        assert_true(rc != 0);
        if (!strstr(err, bad[i].want)) fail_msg("'%s': error '%s'", bad[i].text, err);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoder_layout),
        cmocka_unit_test(test_impute_standardise_onehot),
        cmocka_unit_test(test_sensitive_as_feature),
        cmocka_unit_test(test_multiclass_and_declared),
        cmocka_unit_test(test_unknown_column),
        cmocka_unit_test(test_missing_label),
        cmocka_unit_test(test_text_in_numeric),
        cmocka_unit_test(test_unseen_level),
        cmocka_unit_test(test_sensitive_bin_text),
        cmocka_unit_test(test_too_many_levels),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_split_edges),
        cmocka_unit_test(test_stats_merge),
        cmocka_unit_test(test_not_loaded),
        cmocka_unit_test(test_degenerate_columns),
        cmocka_unit_test(test_transforms),
        cmocka_unit_test(test_demo_datasets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
