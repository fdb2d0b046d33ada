/* test_schema.c: the schema INI (core/schema.h). The three demo schemas load
 * with the roles the demo relies on; every rejected schema checks the code
 * and that the message names the file, the line and what was wrong; group
 * bins are checked at their edges. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "core/schema.h"

#define assert_err(rc, code, err, sub)                                                             \
    do {                                                                                           \
        assert_int_equal((rc), (code));                                                            \
        if (!strstr((err), (sub))) fail_msg("error '%s' does not contain '%s'", (err), (sub));     \
    } while (0)

static char g_demo[4096];
static const char *demo(const char *name) {
    snprintf(g_demo, sizeof g_demo, "%s/../%s", fl_test_data(""), name);
    return g_demo;
}

/* Loads schema text written to a temp file named name. */
static int load_text(fl_schema *s, const char *name, const char *text, char *err) {
    char *p = fl_test_write_tmp(name, text);
    int rc = fl_schema_load(s, p, err);
    free(p);
    return rc;
}

static int has(const fl_strlist *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->items[i], s)) return 1;
    return 0;
}

static void test_credit_demo(void **state) {
    (void)state;
    fl_schema s;
    char err[FL_ERR_LEN] = "";
    int rc = fl_schema_load(&s, demo("credit.schema.ini"), err);
    if (rc) fail_msg("%s", err);
    assert_string_equal(s.label, "Status");
    assert_string_equal(s.positive, "good");
    assert_int_equal(s.features_all, 0);
    assert_int_equal(s.features.n, 13);
    assert_true(has(&s.features, "Age") && has(&s.features, "Marital"));
    assert_int_equal(s.categorical.n, 4);
    assert_int_equal(s.sensitive.n, 2);
    assert_int_equal(s.missing.n, 2);
    assert_string_equal(s.missing.items[0], "");
    assert_string_equal(s.missing.items[1], "NA");
    assert_int_equal(s.n_groups, 2);
    const fl_group_def *age = fl_schema_group(&s, "Age");
    assert_non_null(age);
    assert_int_equal(age->kind, FL_GROUP_BINS);
    assert_int_equal(age->n_groups, 4);
    assert_true(isinf(age->lo[0]) && age->lo[0] < 0);
    assert_true(age->hi[0] == 25.0 && age->lo[1] == 25.0 && age->hi[1] == 40.0);
    assert_true(age->lo[3] == 60.0 && isinf(age->hi[3]));
    const fl_group_def *mar = fl_schema_group(&s, "Marital");
    assert_non_null(mar);
    assert_int_equal(mar->kind, FL_GROUP_CATEGORIES);
    assert_int_equal(mar->n_groups, 5);
    assert_null(fl_schema_group(&s, "Home"));
    fl_schema_free(&s);
    fl_schema_free(&s);
    fl_schema_free(NULL);
}

static void test_other_demos(void **state) {
    (void)state;
    fl_schema s;
    char err[FL_ERR_LEN] = "";
    int rc = fl_schema_load(&s, demo("german_credit.schema.ini"), err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(s.features.n, 20);
    assert_int_equal(s.categorical.n, 13);
    assert_int_equal(s.n_groups, 3);
    assert_int_equal(fl_group_index(fl_schema_group(&s, "personal_status"), "male div/sep"), 2);
    fl_schema_free(&s);
    rc = fl_schema_load(&s, demo("flchain.schema.ini"), err);
    if (rc) fail_msg("%s", err);
    assert_string_equal(s.positive, "1.0");
    assert_int_equal(s.drop.n, 2);
    assert_true(has(&s.drop, "futime") && has(&s.drop, "chapter"));
    assert_int_equal(s.features.n, 8);
    assert_int_equal(fl_group_index(fl_schema_group(&s, "age"), "97.0"), 3);
    fl_schema_free(&s);
}

static void test_defaults(void **state) {
    (void)state;
    fl_schema s;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(load_text(&s, "min.ini", "[schema]\nlabel = y\n", err), 0);
    assert_int_equal(s.features_all, 1);
    assert_null(s.positive);
    assert_int_equal(s.missing.n, 1); /* default: just the empty cell */
    assert_string_equal(s.missing.items[0], "");
    assert_int_equal(s.label_line, 2);
    assert_int_equal(s.n_groups, 0);
    assert_int_equal(s.n_levels, 0);
    fl_schema_free(&s);
    /* 'missing =' is the empty token too; blanks around items are trimmed. */
    assert_int_equal(load_text(&s, "m.ini",
                               "[schema]\nlabel = y\nmissing =\nfeatures = *\n"
                               "categorical = a , b\n",
                               err),
                     0);
    assert_int_equal(s.missing.n, 1);
    assert_int_equal(s.features_all, 1);
    assert_int_equal(s.features.line, 4);
    assert_string_equal(s.categorical.items[0], "a");
    assert_string_equal(s.categorical.items[1], "b");
    assert_int_equal(s.categorical.line, 5);
    fl_schema_free(&s);
}

static void test_bins(void **state) {
    (void)state;
    fl_schema s;
    char err[FL_ERR_LEN] = "";
    int rc = load_text(&s, "bins.ini",
                       "[schema]\nlabel = y\nsensitive = t,x\n[groups]\n"
                       "t = <-1.5, -1.5-0, 0 - 2.5e1 ,>25\n"
                       "x = <=10,20-30\n",
                       err);
    if (rc) fail_msg("%s", err);
    const fl_group_def *t = fl_schema_group(&s, "t");
    assert_int_equal(t->line, 5);
    assert_int_equal(t->n_groups, 4);
    assert_string_equal(t->names[2], "0 - 2.5e1");
    assert_int_equal(fl_group_index(t, "-100"), 0);
    assert_int_equal(fl_group_index(t, "-1.5001"), 0);
    assert_int_equal(fl_group_index(t, "-1.5"), 1); /* lower edges are inclusive */
    assert_int_equal(fl_group_index(t, "0"), 2);
    assert_int_equal(fl_group_index(t, " 24.99 "), 2);
    assert_int_equal(fl_group_index(t, "25"), -1); /* in no bin: >25 is exclusive */
    assert_int_equal(fl_group_index(t, "25.0001"), 3);
    assert_int_equal(fl_group_index(t, "1e300"), 3);
    assert_int_equal(fl_group_index(t, ""), -1);
    assert_int_equal(fl_group_index(t, "abc"), -2);
    assert_int_equal(fl_group_index(t, "nan"), -2);
    assert_int_equal(fl_group_index(t, "12x"), -2);
    const fl_group_def *x = fl_schema_group(&s, "x");
    assert_int_equal(fl_group_index(x, "10"), 0); /* <= is inclusive */
    assert_int_equal(fl_group_index(x, "10.0001"), -1);
    assert_int_equal(fl_group_index(x, "15"), -1); /* gaps are allowed */
    assert_int_equal(fl_group_index(x, "20"), 1);
    assert_int_equal(fl_group_index(NULL, "20"), -1);
    fl_schema_free(&s);
}

static void test_categories_and_levels(void **state) {
    (void)state;
    fl_schema s;
    char err[FL_ERR_LEN] = "";
    int rc = load_text(&s, "cat.ini",
                       "[schema]\nlabel = y\ncategorical = m,home\nsensitive = m\n"
                       "[groups]\nm = 25-40,single\n"
                       "[levels]\nhome = rent, own ,other\ny = lo,mid,hi\n",
                       err);
    if (rc) fail_msg("%s", err);
    const fl_group_def *m = fl_schema_group(&s, "m");
    assert_int_equal(m->kind, FL_GROUP_CATEGORIES); /* categorical: text, not a bin */
    assert_int_equal(fl_group_index(m, "25-40"), 0);
    assert_int_equal(fl_group_index(m, "single"), 1);
    assert_int_equal(fl_group_index(m, "30"), -1);
    assert_int_equal(s.n_levels, 2);
    assert_string_equal(s.level_cols[0], "home");
    assert_int_equal(s.levels[0].n, 3);
    assert_string_equal(s.levels[0].items[1], "own");
    assert_int_equal(s.levels[0].line, 8);
    assert_string_equal(s.level_cols[1], "y");
    fl_schema_free(&s);
}

static void test_errors(void **state) {
    (void)state;
    fl_schema s;
    char err[FL_ERR_LEN] = "";
    struct {
        const char *text;
        int code;
        const char *msg;
    } cases[] = {
        {"[schema]\nlabel = y\nlabels = z\n", FL_EINVAL,
         "bad.ini:3: unknown key 'labels' in [schema]"},
        {"[schema]\nfeatures = *\n", FL_EINVAL, "bad.ini: [schema] needs a 'label'"},
        {"[schema]\nlabel =\n", FL_EPARSE,
         "bad.ini:2: key 'label' in [schema]: expected one value"},
        {"[schema]\nlabel = a,b\n", FL_EPARSE, "bad.ini:2: key 'label'"},
        {"label = y\n", FL_EPARSE, "bad.ini:1: key 'label' outside any section"},
        {"[schema]\nlabel = y\n[groupz]\nAge = <3\n", FL_EPARSE,
         "bad.ini:4: key 'Age' in unknown section [groupz]"},
        {"[schema]\nlabel = y\n[extra]\n", FL_EPARSE, "bad.ini: unknown section [extra]"},
        {"[schema]\nlabel = y\nsensitive = Age\n[groups]\nAge = <25,25-40\nSex = F,M\n", FL_EINVAL,
         "bad.ini:6: groups for 'Sex', which is not listed in sensitive"},
        {"[schema]\nlabel = y\nsensitive = Age\n[groups]\nAge = <25,20-40,>=40\n", FL_EINVAL,
         "bad.ini:5: groups for 'Age': bins '<25' and '20-40' overlap"},
        {"[schema]\nlabel = y\nsensitive = Age\n[groups]\nAge = >=60,<=60\n", FL_EINVAL,
         "bins '<=60' and '>=60' overlap"},
        {"[schema]\nlabel = y\nsensitive = Age\n[groups]\nAge = <25,young\n", FL_EPARSE,
         "bad.ini:5: groups for 'Age': expected a numeric bin like '<25'"},
        {"[schema]\nlabel = y\nsensitive = Age\n[groups]\nAge = 40-25\n", FL_EPARSE, "got '40-25'"},
        {"[schema]\nlabel = y\nsensitive = Age\n[groups]\nAge = <nan\n", FL_EPARSE, "got '<nan'"},
        {"[schema]\nlabel = y\nsensitive = M\ncategorical = M\n[groups]\nM = a,b,a\n", FL_EPARSE,
         "bad.ini:6: key 'M' in [groups]: 'a' is listed twice"},
        {"[schema]\nlabel = y\ncategorical = a,,b\n", FL_EPARSE,
         "bad.ini:3: key 'categorical' in [schema]: empty item"},
        {"[schema]\nlabel = y\ncategorical = a,b,a\n", FL_EPARSE,
         "bad.ini:3: key 'categorical' in [schema]: 'a' is listed twice"},
        {"[schema]\nlabel = y\nfeatures = *,Age\n", FL_EPARSE,
         "bad.ini:3: key 'features' in [schema]: '*' cannot be combined"},
        {"[schema]\nlabel = y\ncategorical = Home\ndrop = Home\n", FL_EINVAL,
         "bad.ini:4: column 'Home' is in both categorical (line 3) and drop"},
        {"[schema]\nlabel = y\nfeatures = a,b\ndrop = b\n", FL_EINVAL,
         "bad.ini:4: column 'b' is in both features"},
        {"[schema]\nlabel = y\nsensitive = s\ndrop = s\n", FL_EINVAL,
         "bad.ini:4: column 's' is in both sensitive"},
        {"[schema]\nlabel = y\ndrop = y\n", FL_EINVAL,
         "bad.ini:3: the label column 'y' cannot also be in drop"},
        {"[schema]\nlabel = y\nfeatures = a,y\n", FL_EINVAL,
         "bad.ini:3: the label column 'y' cannot also be in features"},
        {"[schema]\nlabel = y\npositive = NA\nmissing = ,NA\n", FL_EINVAL,
         "bad.ini:3: positive value 'NA' is also a missing token"},
        {"[schema]\nlabel = y\n[levels]\nHome = a,b\n", FL_EINVAL,
         "bad.ini:4: levels declared for 'Home', which is neither categorical nor the label"},
        {"[schema]\nlabel = y\ncategorical = Home\nmissing = ,NA\n[levels]\nHome = a,NA\n",
         FL_EINVAL, "bad.ini:6: level 'NA' of 'Home' is also a missing token"},
        {"[schema]\nlabel = y\ncategorical = Home\n[levels]\nHome =\n", FL_EPARSE,
         "bad.ini:5: levels for 'Home': expected a list"},
        {"[schema]\nlabel = y\npositive = yes\n[levels]\ny = a,b\n", FL_EINVAL,
         "bad.ini:5: the declared classes of 'y' do not include the positive value 'yes'"},
        {"[schema]\nlabel = y\nlabel = z\n", FL_EPARSE,
         "bad.ini:3: key 'label' in [schema] already set at line 2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = 0;
        int rc = load_text(&s, "bad.ini", cases[i].text, err);
        if (rc != cases[i].code || !strstr(err, cases[i].msg))
            fail_msg("case %zu: rc %d (want %d), err '%s' (want '%s')", i, rc, cases[i].code, err,
                     cases[i].msg);
        assert_null(s.path); /* nothing left to free */
    }
    assert_err(fl_schema_load(&s, "/nonexistent/s.ini", err), FL_EIO, err, "/nonexistent/s.ini");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_credit_demo),
        cmocka_unit_test(test_other_demos),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_bins),
        cmocka_unit_test(test_categories_and_levels),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
