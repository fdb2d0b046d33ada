/* clikit.c: see clikit.h. */
#include "cli/clikit.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fl_cli_bad(const char *flag, const char *val, const char *expected) {
    fprintf(stderr, "cohort: %s: expected %s, got '%s'\n", flag, expected, val);
    return 2;
}

int fl_cli_long(long *out, const char *flag, const char *val, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < lo || v > hi) {
        char what[96];
        snprintf(what, sizeof what, "an integer in [%ld, %ld]", lo, hi);
        return fl_cli_bad(flag, val, what);
    }
    *out = v;
    return 0;
}

int fl_cli_double(double *out, const char *flag, const char *val, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !isfinite(v) || v < lo || v > hi) {
        char what[96];
        snprintf(what, sizeof what, "a number in [%g, %g]", lo, hi);
        return fl_cli_bad(flag, val, what);
    }
    *out = v;
    return 0;
}

int fl_cli_u64(unsigned long long *out, const char *flag, const char *val) {
    char *end;
    errno = 0;
    if (val[0] == '-') return fl_cli_bad(flag, val, "a non-negative integer");
    unsigned long long v = strtoull(val, &end, 10);
    if (errno || end == val || *end) return fl_cli_bad(flag, val, "a non-negative integer");
    *out = v;
    return 0;
}

int fl_cli_print_json(cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return -1;
    int rc = puts(s) < 0 ? -1 : 0;
    if (fflush(stdout)) rc = -1;
    cJSON_free(s);
    return rc;
}

int fl_cli_parse_stats(double **out, int64_t *n_out, const char *text, const char *what,
                       char err[FL_ERR_LEN]) {
    int64_t n = 1;
    for (const char *p = text; *p; p++)
        n += *p == ',';
    double *v = malloc((size_t)n * sizeof(double));
    if (!v) return fl_seterr(err, FL_ENOMEM, "out of memory");
    const char *p = text;
    for (int64_t i = 0; i < n; i++) {
        char *e;
        v[i] = strtod(p, &e);
        if (e == p || (*e != ',' && *e != '\0')) {
            free(v);
            return fl_seterr(err, FL_EPARSE, "%s: malformed statistics", what);
        }
        p = *e ? e + 1 : e;
    }
    *out = v;
    *n_out = n;
    return FL_OK;
}

int fl_cli_write_file(const char *path, const void *buf, size_t len, char err[FL_ERR_LEN]) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return fl_seterr(err, FL_EINVAL, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return fl_seterr(err, FL_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    int ok = fwrite(buf, 1, len, f) == len;
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return fl_seterr(err, FL_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    return FL_OK;
}

int fl_cli_save_model(const char *path, const fl_model *m, char err[FL_ERR_LEN]) {
    float *params = malloc((size_t)m->n_params * sizeof(float));
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = FL_ENOMEM;
    if (!params) goto cleanup;
    if ((rc = fl_model_get_params(m, params))) goto cleanup;
    if ((rc = fl_model_serialize(&buf, &len, &m->spec, params))) goto cleanup;
    rc = fl_cli_write_file(path, buf, len, err);
cleanup:
    free(params);
    free(buf);
    return rc;
}
