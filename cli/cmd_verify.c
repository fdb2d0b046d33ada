/* cmd_verify.c: `cohort verify`, the audit log check (DESIGN.md §4, §11). A
 * thin front over fl_audit_verify (aggregator/audit.h): it opens the
 * aggregator's database read-only, walks the hash chain, checks the signed
 * chain heads and models, and names the first bad row. docs/audit.md says
 * what is checked and what a check cannot see.
 *
 * Exit codes: 0 the log verifies; 1 it does not (the first bad row and why
 * on stdout); 2 bad usage, or a file that cannot be read or is not an
 * aggregator database (named on stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator/audit.h"
#include "cli/clikit.h"
#include "cli/commands.h"

static void usage(FILE *f) {
    fprintf(f, "usage: cohort verify --db aggregator.db [--ca ca.crt] [--allow-unsigned] [--json]\n"
               "\n"
               "Checks the aggregator's tamper-evident audit log: every event row chained to the\n"
               "previous one, every chain head and model signed by the aggregator's key.\n"
               "  --db              the aggregator's SQLite database (opened read-only)\n"
               "  --ca              the federation CA certificate: the stored aggregator\n"
               "                    certificate must be issued by it (otherwise the signatures\n"
               "                    are only checked against the certificate the file carries)\n"
               "  --allow-unsigned  accept models committed without an aggregator key (the\n"
               "                    chain is still checked; nothing proves who wrote it)\n"
               "  --json            one JSON object on stdout\n"
               "Exit status: 0 verified, 1 tampering or a bad signature found, 2 bad usage or an\n"
               "unreadable database.\n");
}

int cmd_verify(int argc, char **argv) {
    const char *db = NULL, *ca = NULL;
    int json = 0, flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(f, "--json")) {
            json = 1;
        } else if (!strcmp(f, "--allow-unsigned")) {
            flags |= FL_AUDIT_ALLOW_UNSIGNED;
        } else if (!strcmp(f, "--db") || !strcmp(f, "--ca")) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "cohort verify: %s: expected a file name\n", f);
                return 2;
            }
            *(!strcmp(f, "--db") ? &db : &ca) = argv[++i];
        } else {
            fprintf(stderr, "cohort verify: unknown option '%s'\n", f);
            usage(stderr);
            return 2;
        }
    }
    if (!db) {
        fprintf(stderr, "cohort verify: --db is required\n");
        usage(stderr);
        return 2;
    }
    fl_audit_report r;
    char err[FL_ERR_LEN] = "";
    int rc = fl_audit_verify_ex(&r, db, ca, flags, err);
    if (rc) {
        /* The file, not the log, is the problem: bad input, exit 2. */
        fprintf(stderr, "cohort verify: %s\n", err[0] ? err : fl_strerror(rc));
        return 2;
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        if (!j) return 1;
        cJSON_AddBoolToObject(j, "ok", r.ok);
        cJSON_AddStringToObject(j, "db", db);
        cJSON_AddNumberToObject(j, "n_events", (double)r.n_events);
        cJSON_AddNumberToObject(j, "n_signatures", (double)r.n_signatures);
        cJSON_AddStringToObject(j, "head", r.head);
        cJSON_AddBoolToObject(j, "ca_checked", ca != NULL);
        if (!r.ok) {
            cJSON_AddStringToObject(j, "table", r.table);
            cJSON_AddNumberToObject(j, "first_bad_id", (double)r.first_bad_id);
            cJSON_AddStringToObject(j, "reason", r.reason);
        }
        if (fl_cli_print_json(j)) return 1;
    } else if (r.ok) {
        printf("ok: %lld events, %lld signatures, head %s\n", (long long)r.n_events,
               (long long)r.n_signatures, r.head);
    } else {
        printf("FAILED: %s\n", r.reason);
        printf("checked %lld events and %lld signatures; stored head %s (unverified)\n",
               (long long)r.n_events, (long long)r.n_signatures, r.head);
    }
    return r.ok ? 0 : 1;
}
