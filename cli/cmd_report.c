/* cmd_report.c: `cohort report` (DESIGN.md §4, §11): the audit report of an
 * aggregator database as one self-contained HTML file and, with --json, its
 * JSON twin. A thin front over aggregator/report.h; docs/report.md describes
 * the document. Each file is first written in full to a temporary file beside
 * its destination and renamed into place only when every file is complete, so
 * a failure never leaves a half-written report (a report already there stays
 * as it was). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aggregator/report.h"
#include "cli/commands.h"
#include "core/ini.h"

static void usage(FILE *f) {
    fprintf(f, "usage: cohort report --db aggregator.db --out report.html [--json report.json]\n"
               "                     [--ca ca.crt]\n"
               "\n"
               "Writes the audit report of an aggregator database: federation and model\n"
               "lineage, participants and dropouts, accuracy/AUC/loss, privacy spend per\n"
               "site, secure-aggregation settings, fairness tables and trends, the audit-log\n"
               "verification and the configuration. The database is only read.\n"
               "  --db F    the aggregator's database (required)\n"
               "  --out F   the HTML report: one self-contained file (no script, no network),\n"
               "            printable to PDF\n"
               "  --json F  the report's JSON twin (the same figures); --out or --json or both\n"
               "  --ca F    also check that the aggregator certificate stored in the database\n"
               "            chains to this CA certificate\n"
               "Prints the path of each file written. Exit 0 written, 1 runtime failure,\n"
               "2 bad usage, a missing or foreign database, or an output that cannot be\n"
               "created.\n");
}

typedef struct args {
    const char *db, *out, *json, *ca;
} args;

/* 0, 2 (bad usage, reported) or -1 (--help). */
static int parse(args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) return -1;
        const char **dst = !strcmp(f, "--db")     ? &a->db
                           : !strcmp(f, "--out")  ? &a->out
                           : !strcmp(f, "--json") ? &a->json
                           : !strcmp(f, "--ca")   ? &a->ca
                                                  : NULL;
        if (!dst) {
            fprintf(stderr, "cohort report: unknown option '%s'\n", f);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc || !argv[i + 1][0]) {
            fprintf(stderr, "cohort report: %s: expected a file name\n", f);
            return 2;
        }
        if (*dst) {
            fprintf(stderr, "cohort report: %s given twice\n", f);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!a->db) {
        fprintf(stderr, "cohort report: --db is required (see 'cohort report --help')\n");
        return 2;
    }
    if (!a->out && !a->json) {
        fprintf(stderr, "cohort report: --out (HTML) or --json is required (see 'cohort report "
                        "--help')\n");
        return 2;
    }
    if (a->out && a->json && !strcmp(a->out, a->json)) {
        fprintf(stderr, "cohort report: --out and --json name the same file '%s'\n", a->out);
        return 2;
    }
    return 0;
}

/* A file written in full under a temporary name beside its destination. */
typedef struct staged {
    const char *path;
    char tmp[FL_PATH_LEN];
    int live; /* tmp exists */
} staged;

/* Writes data to a new temporary file next to st->path. A destination that
 * cannot be created there is bad input (FL_EINVAL, exit 2); a failing write
 * is FL_EIO. */
static int stage(staged *st, const char *data, size_t len, char err[FL_ERR_LEN]) {
    if ((size_t)snprintf(st->tmp, sizeof st->tmp, "%s.tmp-XXXXXX", st->path) >= sizeof st->tmp)
        return fl_seterr(err, FL_EINVAL, "%s: path too long", st->path);
    int fd = mkstemp(st->tmp);
    if (fd < 0)
        return fl_seterr(err, FL_EINVAL, "%s: cannot create: %s", st->path, strerror(errno));
    st->live = 1;
    /* mkstemp makes 0600; a report is as readable as any file the user
     * creates. */
    mode_t mask = umask(0);
    umask(mask);
    int rc = FL_OK;
    if (fchmod(fd, 0666 & ~mask)) rc = fl_seterr(err, FL_EIO, "%s: %s", st->tmp, strerror(errno));
    for (size_t done = 0; !rc && done < len;) {
        ssize_t w = write(fd, data + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            rc = fl_seterr(err, FL_EIO, "%s: write failed: %s", st->path,
                           w < 0 ? strerror(errno) : "no progress");
        else
            done += (size_t)w;
    }
    if (!rc && fsync(fd))
        rc = fl_seterr(err, FL_EIO, "%s: write failed: %s", st->path, strerror(errno));
    if (close(fd) && !rc)
        rc = fl_seterr(err, FL_EIO, "%s: write failed: %s", st->path, strerror(errno));
    return rc;
}

static void unstage(staged *st) {
    if (st->live) unlink(st->tmp);
    st->live = 0;
}

int cmd_report(int argc, char **argv) {
    args a;
    int p = parse(&a, argc, argv);
    if (p) {
        if (p < 0) usage(stdout);
        return p < 0 ? 0 : p;
    }
    if (a.ca && access(a.ca, R_OK)) {
        fprintf(stderr, "cohort report: --ca %s: cannot read: %s\n", a.ca, strerror(errno));
        return 2;
    }
    char err[FL_ERR_LEN] = "";
    cJSON *doc = NULL;
    char *html = NULL, *text = NULL;
    size_t html_len = 0;
    staged files[2] = {{.path = a.out}, {.path = a.json}};
    fl_report_options opt = {.ca_path = a.ca};
    int rc = fl_report_build(&doc, a.db, &opt, err);
    if (!rc && a.out) rc = fl_report_html(&html, &html_len, doc, err);
    if (!rc && a.json && !(text = cJSON_Print(doc)))
        rc = fl_seterr(err, FL_ENOMEM, "out of memory");
    if (!rc && a.out) rc = stage(&files[0], html, html_len, err);
    if (!rc && a.json) {
        size_t n = strlen(text);
        text[n] = '\n'; /* cJSON_Print's buffer ends in the NUL we overwrite */
        rc = stage(&files[1], text, n + 1, err);
    }
    /* Every file is complete: now each replaces its destination. */
    for (int i = 0; i < 2 && !rc; i++) {
        if (!files[i].path) continue;
        if (rename(files[i].tmp, files[i].path))
            rc = fl_seterr(err, FL_EIO, "%s: cannot replace: %s", files[i].path, strerror(errno));
        else
            files[i].live = 0;
    }
    for (int i = 0; i < 2; i++)
        unstage(&files[i]);
    if (rc) {
        fprintf(stderr, "cohort report: %s\n", err[0] ? err : fl_strerror(rc));
        goto cleanup;
    }
    for (int i = 0; i < 2; i++)
        if (files[i].path) printf("%s\n", files[i].path);
    const cJSON *au = cJSON_GetObjectItemCaseSensitive(doc, "audit");
    const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(au, "status"));
    if (st && (!strcmp(st, "failed") || !strcmp(st, "error")))
        fprintf(stderr,
                "cohort report: warning: the audit log did not verify: %s (report "
                "section 9)\n",
                cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(au, "reason")));
    const cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(doc, "warnings"))
        fprintf(stderr, "cohort report: warning: %s\n", cJSON_GetStringValue(w));
cleanup:
    free(html);
    free(text);
    cJSON_Delete(doc);
    return fl_exit_code(rc);
}
