/* clikit.h: small helpers shared by the `cohort` subcommands: strict number
 * parsing of flag values (errors name the flag and what was expected), JSON
 * printing, writing a model file atomically. */
#ifndef FL_CLIKIT_H
#define FL_CLIKIT_H

#include <cjson/cJSON.h>

#include "core/model.h"

/* Each returns 0, or prints "cohort: FLAG: expected ..., got 'VALUE'" to
 * stderr and returns 2 (the exit code for bad usage). */
int fl_cli_long(long *out, const char *flag, const char *val, long lo, long hi);
int fl_cli_double(double *out, const char *flag, const char *val, double lo, double hi);
int fl_cli_u64(unsigned long long *out, const char *flag, const char *val);
int fl_cli_bad(const char *flag, const char *val, const char *expected);

/* Prints j unformatted on one line to stdout and deletes it. 0 or -1. */
int fl_cli_print_json(cJSON *j);

/* The federation's summed statistics as the aggregator keeps them (meta
 * "stats": comma-separated hex floats) into *out (malloc'd, *n values).
 * FL_EPARSE naming `what` when the text is malformed. */
int fl_cli_parse_stats(double **out, int64_t *n, const char *text, const char *what,
                       char err[FL_ERR_LEN]);

/* Writes len bytes to path via a temporary file beside it, fsync and
 * rename, so a crash or a full disk never leaves a half-written file. */
int fl_cli_write_file(const char *path, const void *buf, size_t len, char err[FL_ERR_LEN]);

/* Writes the model's spec and parameters to path with fl_cli_write_file. */
int fl_cli_save_model(const char *path, const fl_model *m, char err[FL_ERR_LEN]);

#endif
