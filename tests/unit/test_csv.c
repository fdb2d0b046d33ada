/* test_csv.c: the RFC 4180 reader (core/csv.h). Success cases cover quoting,
 * line ends, the BOM and line numbering; every rejected input checks the
 * error code and that the message names the file, the line, the column and
 * what was expected. A small deterministic fuzz loop parses hostile buffers
 * allocated to their exact size, so the ASan build catches any read past the
 * end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "core/csv.h"
#include "core/rng.h"

#define assert_err(rc, code, err, sub)                                                             \
    do {                                                                                           \
        assert_int_equal((rc), (code));                                                            \
        if (!strstr((err), (sub))) fail_msg("error '%s' does not contain '%s'", (err), (sub));     \
    } while (0)

/* Parses a string literal (which may contain NUL bytes: len is explicit). */
static int parse(fl_csv *csv, const char *text, size_t len, char *err) {
    /* An exact-size heap copy: any read past len is an ASan error. */
    char *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    memcpy(buf, text, len);
    int rc = fl_csv_parse(csv, "data.csv", buf, len, err);
    free(buf);
    return rc;
}
#define PARSE(csv, lit, err) parse((csv), (lit), sizeof(lit) - 1, (err))

static void test_basic(void **state) {
    (void)state;
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(PARSE(&csv, "a,b,c\n1,2,3\n4,,6\n", err), 0);
    assert_int_equal(csv.n_cols, 3);
    assert_int_equal(csv.n_rows, 2);
    assert_string_equal(csv.header[0], "a");
    assert_string_equal(csv.header[2], "c");
    assert_string_equal(fl_csv_cell(&csv, 0, 1), "2");
    assert_string_equal(fl_csv_cell(&csv, 1, 1), "");
    assert_string_equal(fl_csv_cell(&csv, 1, 2), "6");
    assert_int_equal(csv.line[0], 2);
    assert_int_equal(csv.line[1], 3);
    assert_int_equal(fl_csv_column(&csv, "b"), 1);
    assert_int_equal(fl_csv_column(&csv, "z"), -1);
    assert_string_equal(csv.path, "data.csv");
    fl_csv_free(&csv);
    fl_csv_free(&csv); /* cleared: a second free is harmless */
    fl_csv_free(NULL);
}

static void test_quoted(void **state) {
    (void)state;
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(PARSE(&csv,
                           "name,note\n"
                           "\"Smith, J\",\"said \"\"hi\"\"\"\n"
                           "\"multi\nline\",\"\"\n"
                           "plain,\"x\"\n",
                           err),
                     0);
    assert_int_equal(csv.n_rows, 3);
    assert_string_equal(fl_csv_cell(&csv, 0, 0), "Smith, J");
    assert_string_equal(fl_csv_cell(&csv, 0, 1), "said \"hi\"");
    assert_string_equal(fl_csv_cell(&csv, 1, 0), "multi\nline");
    assert_string_equal(fl_csv_cell(&csv, 1, 1), "");
    assert_string_equal(fl_csv_cell(&csv, 2, 1), "x");
    /* Physical lines: the record after the two-line field starts on line 5. */
    assert_int_equal(csv.line[0], 2);
    assert_int_equal(csv.line[1], 3);
    assert_int_equal(csv.line[2], 5);
    fl_csv_free(&csv);
}

static void test_crlf_bom(void **state) {
    (void)state;
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(PARSE(&csv, "\xEF\xBB\xBFid,v\r\n1,\"a\r\nb\"\r\n2,c\r\n", err), 0);
    assert_string_equal(csv.header[0], "id"); /* BOM not part of the first name */
    assert_int_equal(csv.n_rows, 2);
    assert_string_equal(fl_csv_cell(&csv, 0, 1), "a\r\nb"); /* quoted line break kept */
    assert_string_equal(fl_csv_cell(&csv, 1, 1), "c");
    assert_int_equal(csv.line[1], 4);
    fl_csv_free(&csv);
}

static void test_line_ends_and_blanks(void **state) {
    (void)state;
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    /* No final line end; a trailing empty field; blank lines skipped. */
    assert_int_equal(PARSE(&csv, "\na,b\n\n1,\n\r\n2,3", err), 0);
    assert_int_equal(csv.n_rows, 2);
    assert_string_equal(fl_csv_cell(&csv, 0, 1), "");
    assert_string_equal(fl_csv_cell(&csv, 1, 1), "3");
    assert_int_equal(csv.line[0], 4);
    assert_int_equal(csv.line[1], 6);
    fl_csv_free(&csv);
    /* A final CR alone is a line end too. */
    assert_int_equal(PARSE(&csv, "a\n\"x\"\r", err), 0);
    assert_int_equal(csv.n_rows, 1);
    assert_string_equal(fl_csv_cell(&csv, 0, 0), "x");
    fl_csv_free(&csv);
    /* One column: "" is an empty cell, not a skipped line. */
    assert_int_equal(PARSE(&csv, "a\n\"\"\n1\n", err), 0);
    assert_int_equal(csv.n_rows, 2);
    assert_string_equal(fl_csv_cell(&csv, 0, 0), "");
    fl_csv_free(&csv);
}

static void test_empty_and_header_only(void **state) {
    (void)state;
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    assert_err(parse(&csv, "", 0, err), FL_EPARSE, err, "data.csv: empty file");
    assert_null(csv.cells);
    assert_err(PARSE(&csv, "\xEF\xBB\xBF", err), FL_EPARSE, err, "data.csv: empty file");
    assert_err(PARSE(&csv, "\n\r\n\n", err), FL_EPARSE, err, "data.csv: empty file");
    assert_err(PARSE(&csv, "a,b,c\n", err), FL_EPARSE, err, "data.csv: no data rows");
    assert_err(PARSE(&csv, "a,b,c", err), FL_EPARSE, err, "no data rows");
    assert_err(PARSE(&csv, "a,b,c\n\n\n", err), FL_EPARSE, err, "no data rows");
}

static void test_ragged(void **state) {
    (void)state;
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    assert_err(PARSE(&csv, "a,b,c\n1,2,3\n1,2\n", err), FL_EPARSE, err,
               "data.csv:3: expected 3 fields, got 2");
    assert_err(PARSE(&csv, "a,b\n1,2\n\"x\ny\",2\n1,2,3\n", err), FL_EPARSE, err,
               "data.csv:5: expected 2 fields, got 3");
    assert_err(PARSE(&csv, "a,b\n1,2,\n", err), FL_EPARSE, err,
               "data.csv:2: expected 2 fields, got 3");
    assert_null(csv.header);
}

static void test_quote_errors(void **state) {
    (void)state;
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    /* Reported at the line and field where the quote opened. */
    assert_err(PARSE(&csv, "a,b,c\n1,2,3\n1,2,\"open\nmore\n", err), FL_EPARSE, err,
               "data.csv:3:3: unterminated quoted field");
    assert_true(strstr(err, "column 'c'") != NULL);
    assert_err(PARSE(&csv, "a,b\n1,ab\"c\n", err), FL_EPARSE, err,
               "data.csv:2:2: unexpected '\"' inside an unquoted field");
    assert_err(PARSE(&csv, "a,b\n\"x\"y,2\n", err), FL_EPARSE, err,
               "data.csv:2:1: expected ',' or a line end after the closing quote, got 'y'");
    assert_err(PARSE(&csv, "a,b\n1, \"2\"\n", err), FL_EPARSE, err,
               "data.csv:2:2: unexpected '\"'");
}

static void test_nul_and_cr(void **state) {
    (void)state;
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    assert_err(PARSE(&csv, "a,b\n1,x\0y\n", err), FL_EPARSE, err, "data.csv:2:2: NUL byte");
    assert_err(PARSE(&csv, "a,b\n1,2\n\"q\0\",3\n", err), FL_EPARSE, err,
               "data.csv:3:1: NUL byte in quoted field");
    assert_err(PARSE(&csv, "a\0,b\n1,2\n", err), FL_EPARSE, err, "data.csv:1:1: NUL byte");
    assert_err(PARSE(&csv, "a,b\n1,2\r3,4\n", err), FL_EPARSE, err,
               "data.csv:2:2: bare carriage return");
}

static void test_header_errors(void **state) {
    (void)state;
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    assert_err(PARSE(&csv, "a,b,a\n1,2,3\n", err), FL_EPARSE, err,
               "data.csv:1:3: duplicate column name 'a' (also column 1)");
    assert_err(PARSE(&csv, "\n\na,,c\n1,2,3\n", err), FL_EPARSE, err,
               "data.csv:3:2: empty column name");
}

static void test_load_files(void **state) {
    (void)state;
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_csv_load(&csv, fl_test_data("credit_data.csv"), err), 0);
    assert_int_equal(csv.n_cols, 14);
    assert_int_equal(csv.n_rows, 4454);
    assert_string_equal(csv.header[0], "Status");
    assert_string_equal(fl_csv_cell(&csv, 0, 2), "rent");
    assert_int_equal(csv.line[4453], 4455);
    fl_csv_free(&csv);

    assert_int_equal(fl_csv_load(&csv, fl_test_fixture("csv_quoted.csv"), err), 0);
    assert_int_equal(csv.n_cols, 3);
    assert_int_equal(csv.n_rows, 3);
    assert_string_equal(fl_csv_cell(&csv, 0, 1), "Main St, 5");
    assert_string_equal(fl_csv_cell(&csv, 1, 1), "the \"old\" mill");
    assert_string_equal(fl_csv_cell(&csv, 2, 1), "line one\nline two");
    assert_int_equal(csv.line[2], 4);
    fl_csv_free(&csv);

    char *p = fl_test_write_tmp("ragged.csv", "x,y\n1,2\n3\n");
    assert_err(fl_csv_load(&csv, p, err), FL_EPARSE, err, "ragged.csv:3: expected 2 fields, got 1");
    free(p);
    p = fl_test_write_tmp("empty.csv", "");
    assert_err(fl_csv_load(&csv, p, err), FL_EPARSE, err, "empty.csv: empty file");
    free(p);
    assert_err(fl_csv_load(&csv, "/nonexistent/dir/x.csv", err), FL_EIO, err,
               "/nonexistent/dir/x.csv: cannot open");
    assert_err(fl_csv_load(&csv, fl_test_tmpdir(), err), FL_EIO, err, fl_test_tmpdir());
}

/* Deterministic fuzzing over an alphabet rich in the parser's special
 * bytes: no crash, no read past the buffer (ASan), and every result is
 * either a consistent table or an error with a message. */
static void test_mini_fuzz(void **state) {
    (void)state;
    static const char alpha[] = {'a', 'b', ',', ',', '"', '"', '\n', '\r', '\0', ' ', 'x'};
    fl_rng rng;
    fl_rng_seed(&rng, 12345);
    char buf[96];
    int ok = 0;
    for (int it = 0; it < 20000; it++) {
        size_t len = (size_t)fl_rng_below(&rng, sizeof buf + 1);
        for (size_t i = 0; i < len; i++)
            buf[i] = alpha[fl_rng_below(&rng, sizeof alpha)];
        fl_csv csv;
        char err[FL_ERR_LEN] = "";
        int rc = parse(&csv, buf, len, err);
        if (rc == 0) {
            ok++;
            assert_true(csv.n_cols >= 1 && csv.n_rows >= 1);
            for (int64_t r = 0; r < csv.n_rows; r++) {
                assert_true(csv.line[r] >= 1);
                for (int c = 0; c < csv.n_cols; c++)
                    (void)strlen(fl_csv_cell(&csv, r, c));
            }
            fl_csv_free(&csv);
        } else {
            assert_int_equal(rc, FL_EPARSE);
            assert_true(strncmp(err, "data.csv", 8) == 0);
            assert_null(csv.arena);
        }
    }
    assert_true(ok > 0);
}

/* A long row of quote pairs and a wide header: linear, and still parsed. */
static void test_large_inputs(void **state) {
    (void)state;
    size_t n = 1u << 20;
    char *buf = malloc(2 * n + 16);
    assert_non_null(buf);
    size_t len = 0;
    memcpy(buf, "h\n\"", 3);
    len = 3;
    for (size_t i = 0; i < n / 2; i++) {
        buf[len++] = '"';
        buf[len++] = '"';
    }
    buf[len++] = '"';
    buf[len++] = '\n';
    fl_csv csv;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_csv_parse(&csv, "big.csv", buf, len, err), 0);
    assert_int_equal(strlen(fl_csv_cell(&csv, 0, 0)), n / 2);
    fl_csv_free(&csv);
    /* 100k distinct header names, then one duplicate at the end. */
    len = 0;
    for (int i = 0; i < 100000; i++)
        len += (size_t)sprintf(buf + len, "c%d,", i);
    len += (size_t)sprintf(buf + len, "c7\n");
    assert_err(fl_csv_parse(&csv, "wide.csv", buf, len, err), FL_EPARSE, err,
               "wide.csv:1:100001: duplicate column name 'c7' (also column 8)");
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_quoted),
        cmocka_unit_test(test_crlf_bom),
        cmocka_unit_test(test_line_ends_and_blanks),
        cmocka_unit_test(test_empty_and_header_only),
        cmocka_unit_test(test_ragged),
        cmocka_unit_test(test_quote_errors),
        cmocka_unit_test(test_nul_and_cr),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_load_files),
        cmocka_unit_test(test_mini_fuzz),
        cmocka_unit_test(test_large_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
