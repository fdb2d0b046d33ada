/* testutil.h: helpers shared by the cmocka tests: fixture paths, temporary
 * files, and running a Cohort program as a real child process with its
 * stdout and stderr captured. */
#ifndef FL_TESTUTIL_H
#define FL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* A path under the bundled data dir / test fixtures dir / built binaries,
 * in a static buffer that the next call overwrites. */
const char *fl_test_data(const char *name);
const char *fl_test_fixture(const char *name);
const char *fl_test_bin(const char *name);

/* Writes text to a fresh file in a per-process temporary directory and
 * returns its path (malloc'd). The directory is removed at exit. */
char *fl_test_write_tmp(const char *name, const char *text);
/* The per-process temporary directory. */
const char *fl_test_tmpdir(void);
/* The whole file at path, NUL-terminated (malloc'd); *len its size when len
 * is not NULL. ft_read_file (fedtest.h), failing the test when the file
 * cannot be read. */
char *fl_test_slurp(const char *path, size_t *len);

typedef struct fl_proc_result {
    int exit_code; /* -signal when killed by a signal */
    char *out;     /* captured stdout, NUL-terminated */
    char *err;     /* captured stderr, NUL-terminated */
} fl_proc_result;

/* Runs argv[0] (a path) with argv, waits, captures both streams.
 * Returns 0 or -1 if the process could not be started. */
int fl_test_run(fl_proc_result *r, char *const argv[]);

/* Runs `cohort SUB ARGS...` (the built cohort binary; ARGS NULL-terminated,
 * at most 60) and returns the result; fails the test if it cannot start. */
fl_proc_result fl_test_cohort(const char *sub, ...);
void fl_proc_result_free(fl_proc_result *r);

#endif
