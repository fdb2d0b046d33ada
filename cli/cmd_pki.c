/* cmd_pki.c: `cohort pki`, the federation CA from the command line
 * (DESIGN.md §4; files, roles and revocation in docs/pki.md). A thin layer
 * over crypto/pki.h: parse flags, call one function, print the result. Each
 * action accepts only its own flags, so a misplaced --role is bad usage
 * (exit 2) rather than silently ignored. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/clikit.h"
#include "cli/commands.h"
#include "crypto/pki.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: cohort pki init   --dir D [--name FEDERATION] [--days N]\n"
            "       cohort pki issue  --dir D --name N --role client|aggregator|operator "
            "[--days N]\n"
            "       cohort pki revoke --dir D (--name N | --serial HEX)\n"
            "       cohort pki crl    --dir D [--days N]\n"
            "       cohort pki list   --dir D [--json]\n"
            "  init    create the federation CA: D/ca.crt, D/ca.key (0600), D/ca.crl, "
            "D/index.txt\n"
            "          (--name: federation name, default 'cohort'; --days: default %d)\n"
            "  issue   key and certificate D/N.key (0600), D/N.crt for one participant\n"
            "          (--days: default %d, never beyond the CA)\n"
            "  revoke  revoke N's certificates (or one by serial) and re-sign D/ca.crl\n"
            "  crl     re-sign D/ca.crl (do it before its nextUpdate; --days: default %d)\n"
            "  list    the issued certificates and their status\n",
            FL_PKI_CA_DAYS, FL_PKI_CERT_DAYS, FL_PKI_CRL_DAYS);
}

typedef struct pki_opts {
    const char *dir, *name, *serial;
    int role, json;
    long days; /* 0: the action's default */
} pki_opts;

/* The flags (getopt values) each action accepts. */
static const struct {
    const char *action;
    const char *flags;
} allowed[] = {
    {"init", "dnD"}, {"issue", "dnrD"}, {"revoke", "dns"}, {"crl", "dD"}, {"list", "dj"},
};

static const char *flag_name(int c) {
    switch (c) {
    case 'd':
        return "--dir";
    case 'n':
        return "--name";
    case 'r':
        return "--role";
    case 'D':
        return "--days";
    case 's':
        return "--serial";
    default:
        return "--json";
    }
}

static int parse_args(pki_opts *o, const char *flags, int argc, char **argv) {
    static const struct option longopts[] = {
        {"dir", required_argument, 0, 'd'},    {"name", required_argument, 0, 'n'},
        {"role", required_argument, 0, 'r'},   {"days", required_argument, 0, 'D'},
        {"serial", required_argument, 0, 's'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 1;
        }
        if (c == '?' || c == ':') {
            fprintf(stderr, "cohort pki %s: unknown option or missing value in '%s'\n", argv[0],
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (!strchr(flags, c)) {
            fprintf(stderr, "cohort pki %s: %s is not an option of this action\n", argv[0],
                    flag_name(c));
            usage(stderr);
            return 2;
        }
        switch (c) {
        case 'd':
            o->dir = optarg;
            break;
        case 'n':
            o->name = optarg;
            break;
        case 's':
            o->serial = optarg;
            break;
        case 'j':
            o->json = 1;
            break;
        case 'D':
            if (fl_cli_long(&o->days, "--days", optarg, 1, FL_PKI_MAX_DAYS)) return 2;
            break;
        case 'r':
            o->role = fl_pki_role_parse(optarg);
            if (o->role == FL_ROLE_NONE)
                return fl_cli_bad("--role", optarg, "client, aggregator or operator");
            break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cohort pki %s: unexpected argument '%s'\n", argv[0], argv[optind]);
        return 2;
    }
    if (!o->dir) {
        fprintf(stderr, "cohort pki %s: --dir is required (the CA directory)\n", argv[0]);
        return 2;
    }
    return 0;
}

static int fail(const char *action, int rc, const char *err) {
    fprintf(stderr, "cohort pki %s: %s\n", action, err[0] ? err : fl_strerror(rc));
    return fl_exit_code(rc);
}

static const char *status_of(const fl_pki_entry *e, const char *now) {
    if (e->revoked) return "revoked";
    return strcmp(e->not_after, now) <= 0 ? "expired" : "valid";
}

static int list(const pki_opts *o) {
    fl_pki_entry *e = NULL;
    size_t n = 0;
    char err[FL_ERR_LEN] = "", now[21];
    int rc = fl_pki_list(&e, &n, o->dir, err);
    if (rc) return fail("list", rc, err);
    /* ISO 8601 UTC strings of equal length order like the times they name. */
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (o->json) {
        cJSON *j = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(j, "certificates");
        for (size_t i = 0; i < n; i++) {
            cJSON *c = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "name", e[i].name);
            cJSON_AddStringToObject(c, "role", fl_pki_role_name(e[i].role));
            cJSON_AddStringToObject(c, "serial", e[i].serial);
            cJSON_AddStringToObject(c, "status", status_of(&e[i], now));
            cJSON_AddStringToObject(c, "not_after", e[i].not_after);
            if (e[i].revoked)
                cJSON_AddStringToObject(c, "revoked_at", e[i].revoked_at);
            else
                cJSON_AddNullToObject(c, "revoked_at");
            cJSON_AddItemToArray(arr, c);
        }
        rc = fl_cli_print_json(j) ? 1 : 0;
    } else {
        printf("%-32s  %-8s  %-10s  %-20s  %s\n", "SERIAL", "STATUS", "ROLE", "NOT AFTER", "NAME");
        for (size_t i = 0; i < n; i++)
            printf("%-32s  %-8s  %-10s  %-20s  %s\n", e[i].serial, status_of(&e[i], now),
                   fl_pki_role_name(e[i].role), e[i].not_after, e[i].name);
        rc = fflush(stdout) ? 1 : 0;
    }
    free(e);
    return rc;
}

/* The newest index row for name: the one issue just appended. */
static void print_issued(const char *dir, const char *name) {
    fl_pki_entry *e = NULL;
    size_t n = 0;
    if (fl_pki_list(&e, &n, dir, NULL) == 0)
        for (size_t i = n; i-- > 0;)
            if (!strcmp(e[i].name, name)) {
                printf("issued %s certificate '%s': %s/%s.crt, %s/%s.key (serial %s, until %s)\n",
                       fl_pki_role_name(e[i].role), name, dir, name, dir, name, e[i].serial,
                       e[i].not_after);
                break;
            }
    free(e);
}

int cmd_pki(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *action = argv[1];
    const char *flags = NULL;
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (!strcmp(action, allowed[i].action)) flags = allowed[i].flags;
    if (!flags) {
        fprintf(stderr,
                "cohort pki: unknown action '%s' (expected init, issue, revoke, crl or "
                "list)\n",
                action);
        usage(stderr);
        return 2;
    }
    pki_opts o;
    int rc = parse_args(&o, flags, argc - 1, argv + 1);
    if (rc) return rc == 1 ? 0 : rc;
    char err[FL_ERR_LEN] = "";
    if (!strcmp(action, "init")) {
        rc = fl_pki_init(o.dir, o.name, o.days ? (int)o.days : FL_PKI_CA_DAYS, err);
        if (rc) return fail(action, rc, err);
        printf("created federation CA '%s CA': %s/ca.crt, %s/ca.key (0600), %s/ca.crl, "
               "%s/index.txt\n",
               o.name ? o.name : "cohort", o.dir, o.dir, o.dir, o.dir);
    } else if (!strcmp(action, "issue")) {
        if (!o.name || !o.role) {
            fprintf(stderr, "cohort pki issue: %s is required\n", !o.name ? "--name" : "--role");
            return 2;
        }
        rc = fl_pki_issue(o.dir, o.name, o.role, o.days ? (int)o.days : FL_PKI_CERT_DAYS, err);
        if (rc) return fail(action, rc, err);
        print_issued(o.dir, o.name);
    } else if (!strcmp(action, "revoke")) {
        if (!o.name == !o.serial) {
            fprintf(stderr, "cohort pki revoke: expected exactly one of --name or --serial\n");
            return 2;
        }
        rc =
            o.name ? fl_pki_revoke(o.dir, o.name, err) : fl_pki_revoke_serial(o.dir, o.serial, err);
        if (rc) return fail(action, rc, err);
        printf("revoked %s '%s'; %s/ca.crl re-signed\n", o.name ? "certificate" : "serial",
               o.name ? o.name : o.serial, o.dir);
    } else if (!strcmp(action, "crl")) {
        rc = fl_pki_crl_update(o.dir, o.days ? (int)o.days : FL_PKI_CRL_DAYS, err);
        if (rc) return fail(action, rc, err);
        printf("%s/ca.crl re-signed\n", o.dir);
    } else {
        return list(&o);
    }
    return fflush(stdout) ? 1 : 0;
}
