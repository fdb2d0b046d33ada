/* test_ini.c: the INI reader every config and schema goes through
 * (core/ini.h): syntax, comments, line numbers kept for later messages, the
 * typed getters' range checks, and each syntax error naming file and line. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "core/ini.h"

#define assert_err(rc, code, err, sub)                                                             \
    do {                                                                                           \
        assert_int_equal((rc), (code));                                                            \
        if (!strstr((err), (sub))) fail_msg("error '%s' does not contain '%s'", (err), (sub));     \
    } while (0)

static int parse(fl_ini *ini, const char *text, size_t len, char *err) {
    char *buf = malloc(len ? len : 1); /* exact size: overreads are ASan errors */
    assert_non_null(buf);
    memcpy(buf, text, len);
    int rc = fl_ini_parse(ini, "t.ini", buf, len, err);
    free(buf);
    return rc;
}
#define PARSE(ini, lit, err) parse((ini), (lit), sizeof(lit) - 1, (err))

static void test_syntax(void **state) {
    (void)state;
    fl_ini ini;
    char err[FL_ERR_LEN] = "";
    int rc = PARSE(&ini,
                   "\xEF\xBB\xBF"
                   "top = 1\r\n"
                   "; a comment\n"
                   "# another\n"
                   "\n"
                   "[ net ]\n"
                   "  host =  example.org   ; inline\n"
                   "url = http://x/#frag # trailing\n"
                   "expr = a=b\n"
                   "empty =\n"
                   "[data]\n"
                   "missing = ,NA\n",
                   err);
    if (rc) fail_msg("%s", err);
    assert_string_equal(ini.path, "t.ini");
    assert_string_equal(fl_ini_get(&ini, "", "top", NULL), "1");
    assert_string_equal(fl_ini_get(&ini, "net", "host", NULL), "example.org");
    /* '#' not preceded by a blank is part of the value. */
    assert_string_equal(fl_ini_get(&ini, "net", "url", NULL), "http://x/#frag");
    assert_string_equal(fl_ini_get(&ini, "net", "expr", NULL), "a=b");
    assert_string_equal(fl_ini_get(&ini, "net", "empty", "def"), "");
    assert_string_equal(fl_ini_get(&ini, "data", "missing", NULL), ",NA");
    assert_string_equal(fl_ini_get(&ini, "data", "nope", "def"), "def");
    assert_null(fl_ini_find(&ini, "net", "missing"));
    const fl_ini_entry *e = fl_ini_find(&ini, "net", "host");
    assert_non_null(e);
    assert_int_equal(e->line, 6);
    assert_int_equal(fl_ini_find(&ini, "", "top")->line, 1);
    assert_int_equal(fl_ini_find(&ini, "data", "missing")->line, 11);
    assert_true(fl_ini_has_section(&ini, "net"));
    assert_true(fl_ini_has_section(&ini, "data"));
    assert_false(fl_ini_has_section(&ini, "other"));
    assert_int_equal(ini.n_sections, 2);
    fl_ini_free(&ini);
    fl_ini_free(&ini);
    fl_ini_free(NULL);

    assert_int_equal(parse(&ini, "", 0, err), 0);
    assert_int_equal(ini.n_entries, 0);
    fl_ini_free(&ini);
}

static void test_syntax_errors(void **state) {
    (void)state;
    fl_ini ini;
    char err[FL_ERR_LEN] = "";
    assert_err(PARSE(&ini, "[a]\nx = 1\nbroken line\n", err), FL_EPARSE, err,
               "t.ini:3: expected 'key = value' or '[section]'");
    assert_null(ini.entries);
    assert_err(PARSE(&ini, "[a\n", err), FL_EPARSE, err, "t.ini:1: expected '[section]'");
    assert_err(PARSE(&ini, "[]\n", err), FL_EPARSE, err, "t.ini:1: expected '[section]'");
    assert_err(PARSE(&ini, "\n = 3\n", err), FL_EPARSE, err, "t.ini:2: expected a key before '='");
    assert_err(PARSE(&ini, "[a]\nk = 1\n[b]\nk = 2\n[a]\nk = 3\n", err), FL_EPARSE, err,
               "t.ini:6: key 'k' in [a] already set at line 2");
    assert_err(PARSE(&ini, "a = 1\nb = x\0y\n", err), FL_EPARSE, err, "t.ini:2: NUL byte");
}

static void test_typed(void **state) {
    (void)state;
    fl_ini ini;
    char err[FL_ERR_LEN] = "";
    int rc = PARSE(&ini,
                   "[f]\nsites = 5\nbig = 99\nword = five\nfrac = 0.25\nnan = nan\n"
                   "on = yes\noff = false\nmaybe = perhaps\n",
                   err);
    if (rc) fail_msg("%s", err);
    long v;
    double d;
    int b;
    assert_int_equal(fl_ini_get_int(&v, &ini, "f", "sites", 1, 1, 10, err), 0);
    assert_int_equal(v, 5);
    assert_int_equal(fl_ini_get_int(&v, &ini, "f", "absent", 7, 1, 10, err), 0);
    assert_int_equal(v, 7);
    assert_err(fl_ini_get_int(&v, &ini, "f", "big", 1, 1, 10, err), FL_EINVAL, err,
               "t.ini:3: key 'big' in [f]: expected an integer in [1, 10], got '99'");
    assert_err(fl_ini_get_int(&v, &ini, "f", "word", 1, 1, 10, err), FL_EINVAL, err,
               "t.ini:4: key 'word'");
    assert_int_equal(fl_ini_get_double(&d, &ini, "f", "frac", 0, 0, 1, err), 0);
    assert_true(d == 0.25);
    assert_err(fl_ini_get_double(&d, &ini, "f", "nan", 0, 0, 1, err), FL_EINVAL, err,
               "t.ini:6: key 'nan' in [f]: expected a number");
    assert_err(fl_ini_get_double(&d, &ini, "f", "word", 0, 0, 1, err), FL_EINVAL, err,
               "got 'five'");
    assert_int_equal(fl_ini_get_bool(&b, &ini, "f", "on", 0, err), 0);
    assert_int_equal(b, 1);
    assert_int_equal(fl_ini_get_bool(&b, &ini, "f", "off", 1, err), 0);
    assert_int_equal(b, 0);
    assert_int_equal(fl_ini_get_bool(&b, &ini, "f", "absent", 1, err), 0);
    assert_int_equal(b, 1);
    assert_err(fl_ini_get_bool(&b, &ini, "f", "maybe", 0, err), FL_EINVAL, err,
               "t.ini:9: key 'maybe' in [f]: expected true or false, got 'perhaps'");

    static const char *const known[] = {"sites", "big", "word", "frac", "nan", "on", "off", NULL};
    assert_err(fl_ini_check_keys(&ini, "f", known, err), FL_EINVAL, err,
               "t.ini:9: unknown key 'maybe' in [f]");
    static const char *const all[] = {"sites", "big", "word",  "frac", "nan",
                                      "on",    "off", "maybe", NULL};
    assert_int_equal(fl_ini_check_keys(&ini, "f", all, err), 0);
    fl_ini_free(&ini);
}

static void test_load(void **state) {
    (void)state;
    fl_ini ini;
    char err[FL_ERR_LEN] = "";
    char *p = fl_test_write_tmp("c.ini", "[s]\nk = v\n");
    assert_int_equal(fl_ini_load(&ini, p, err), 0);
    assert_string_equal(ini.path, p);
    assert_string_equal(fl_ini_get(&ini, "s", "k", NULL), "v");
    fl_ini_free(&ini);
    free(p);
    p = fl_test_write_tmp("bad.ini", "[s]\nk v\n");
    assert_err(fl_ini_load(&ini, p, err), FL_EPARSE, err, "bad.ini:2: expected 'key = value'");
    free(p);
    assert_err(fl_ini_load(&ini, "/nonexistent/c.ini", err), FL_EIO, err,
               "/nonexistent/c.ini: cannot open");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_typed),
        cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
