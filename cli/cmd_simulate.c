/* cmd_simulate.c: `cohort simulate`, a whole federation on this machine
 * (DESIGN.md §4; reference in docs/simulate.md). From one federation.ini it
 * holds a test split out centrally, partitions the rest among N sites,
 * creates a throwaway PKI, and runs the real programs: one cohort-aggregator
 * and N cohort-client processes talking gRPC over mutual TLS on 127.0.0.1.
 * While they run it follows the aggregator's audit events (progress, and the
 * [faults] kills); afterwards it reads the per-round figures from the
 * aggregator's store and evaluates the last committed model on the held-out
 * split, with the encoder the federation itself fitted. The test split is
 * the one `cohort train --val-fraction 0 --test-fraction T --seed S` holds
 * out, so the two commands' test figures compare like with like. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aggregator/store.h"
#include "cli/clikit.h"
#include "cli/commands.h"
#include "cli/simulate.h"
#include "client/site.h"
#include "core/dataset.h"
#include "core/log.h"
#include "core/partition.h"
#include "core/train.h"
#include "crypto/pki.h"

#define PORT_WAIT_MS 30000
/* The PKI lives as long as the work directory; 90 days keeps it clear of
 * the aggregator's 30-day expiry warning. */
#define CERT_DAYS 90
#define CLIENT_GRACE_MS 15000 /* clients leave by themselves after the last round */
#define TERM_WAIT_MS 5000

static void usage(FILE *f) {
    fprintf(f,
            "usage: cohort simulate --config federation.ini [options]\n"
            "  --config F     the federation to simulate (docs/simulate.md)\n"
            "  --json         print the result as one JSON object on stdout\n"
            "  --workdir D    build the federation in D (created; must be empty) and keep it\n"
            "  --keep         keep the temporary work directory\n"
            "  --timeout S    give up after S seconds (default: from rounds and stage_timeout)\n");
}

typedef struct sim_opts {
    const char *config, *workdir;
    int json, keep;
    long timeout_s;
} sim_opts;

static int parse_args(sim_opts *o, int argc, char **argv) {
    static const struct option longopts[] = {{"config", required_argument, 0, 'c'},
                                             {"workdir", required_argument, 0, 'w'},
                                             {"json", no_argument, 0, 'j'},
                                             {"keep", no_argument, 0, 'k'},
                                             {"timeout", required_argument, 0, 't'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'w':
            o->workdir = optarg;
            break;
        case 'j':
            o->json = 1;
            break;
        case 'k':
            o->keep = 1;
            break;
        case 't':
            if (fl_cli_long(&o->timeout_s, "--timeout", optarg, 1, 7 * 86400)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "cohort simulate: unknown or incomplete option '%s'\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cohort simulate: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!o->config) {
        fprintf(stderr, "cohort simulate: --config is required\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

/* dir/name into out. make_workdir keeps the directory's path short enough
 * for every name the simulator puts under it, so this never truncates. */
static const char *wpath(char out[FL_PATH_LEN], const char *dir, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *wpath(char out[FL_PATH_LEN], const char *dir, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    size_t dl = strnlen(dir, FL_PATH_LEN - 1), nl = strlen(name);
    if (dl + 1 + nl >= FL_PATH_LEN) nl = FL_PATH_LEN - 2 - dl;
    memcpy(out, dir, dl);
    out[dl] = '/';
    memcpy(out + dl + 1, name, nl);
    out[dl + 1 + nl] = 0;
    return out;
}

/* ============================ data ======================================= */

/* The whole dataset, its central test rows and the sites' shares. */
typedef struct sim_data {
    fl_schema schema;
    fl_csv csv;
    fl_encoder enc; /* levels from the whole file: every site encodes alike */
    int32_t *y;     /* (csv.n_rows) */
    int32_t *test, *rest;
    int64_t n_test, n_rest;
    int *site_of; /* (n_rest) 0-based site of rest[i] */
    int64_t site_rows[FL_SIM_MAX_SITES];
} sim_data;

static void data_free(sim_data *d) {
    free(d->y);
    free(d->test);
    free(d->rest);
    free(d->site_of);
    fl_encoder_free(&d->enc);
    fl_csv_free(&d->csv);
    fl_schema_free(&d->schema);
}

static int data_load(sim_data *d, const fl_sim_config *c, char *err) {
    int32_t *none = NULL;
    int64_t n_none = 0;
    int rc = fl_schema_load(&d->schema, c->schema, err);
    if (!rc) rc = fl_csv_load(&d->csv, c->csv, err);
    if (rc) goto cleanup;
    if (d->csv.n_rows > INT32_MAX) {
        rc = fl_seterr(err, FL_EINVAL, "%s: %lld rows, at most %d supported", c->csv,
                       (long long)d->csv.n_rows, INT32_MAX);
        goto cleanup;
    }
    if ((rc = fl_encoder_init(&d->enc, &d->schema, &d->csv, err))) goto cleanup;
    if (!(d->y = malloc((size_t)d->csv.n_rows * sizeof *d->y))) {
        rc = fl_seterr(err, FL_ENOMEM, "out of memory");
        goto cleanup;
    }
    if ((rc = fl_encoder_labels(d->y, &d->enc, &d->csv, err))) goto cleanup;
    /* Exactly the call fl_dataset_load_split makes for `cohort train
     * --val-fraction 0`: the same seed and test_fraction give the same test
     * rows, so the federated and centralized figures are on one test set. */
    if ((rc = fl_split_stratified(&d->rest, &d->n_rest, &none, &n_none, &d->test, &d->n_test, d->y,
                                  d->csv.n_rows, d->enc.n_classes, 0.0, c->test_fraction,
                                  c->seed))) {
        rc = fl_seterr(err, rc, "%s: cannot split the rows", c->csv);
        goto cleanup;
    }
    if (!(d->site_of = malloc((size_t)(d->n_rest > 0 ? d->n_rest : 1) * sizeof *d->site_of))) {
        rc = fl_seterr(err, FL_ENOMEM, "out of memory");
        goto cleanup;
    }
    char why[FL_ERR_LEN];
    if ((rc = fl_partition(d->site_of, &d->csv, d->y, d->enc.n_classes, d->rest, d->n_rest,
                           c->sites, c->partition, c->seed, why))) {
        char w[FL_PATH_LEN + 32];
        rc = fl_seterr(err, rc, "%s%s", fl_sim_where(w, sizeof w, c, "federation", "partition"),
                       why);
        goto cleanup;
    }
    for (int64_t i = 0; i < d->n_rest; i++)
        d->site_rows[d->site_of[i]]++;
cleanup:
    free(none);
    return rc;
}

/* sites/site.schema.ini, sites/site-K.csv, and test.csv (kept for
 * inspection; no site ever reads it). */
static int data_write(const sim_data *d, const fl_sim_config *c, const char *dir, char *err) {
    char path[FL_PATH_LEN];
    int32_t *rows = malloc((size_t)(d->n_rest > 0 ? d->n_rest : 1) * sizeof *rows);
    int rc = FL_OK;
    if (!rows) return fl_seterr(err, FL_ENOMEM, "out of memory");
    wpath(path, dir, "sites");
    if (mkdir(path, 0700)) {
        rc = fl_seterr(err, FL_EIO, "%s: cannot create: %s", path, strerror(errno));
        goto cleanup;
    }
    wpath(path, dir, "sites/site.schema.ini");
    if ((rc = fl_schema_write_with_levels(path, &d->schema, &d->enc, err))) goto cleanup;
    for (int s = 0; s < c->sites; s++) {
        int64_t k = 0;
        for (int64_t i = 0; i < d->n_rest; i++)
            if (d->site_of[i] == s) rows[k++] = d->rest[i];
        wpath(path, dir, "sites/site-%d.csv", s + 1);
        if ((rc = fl_csv_write_rows(path, &d->csv, rows, k, err))) goto cleanup;
    }
    wpath(path, dir, "test.csv");
    rc = fl_csv_write_rows(path, &d->csv, d->test, d->n_test, err);
cleanup:
    free(rows);
    return rc;
}

/* ============================ work directory, PKI ======================== */

static int make_workdir(char out[FL_PATH_LEN], const sim_opts *o, int *temp, char *err) {
    char tmp[FL_PATH_LEN];
    *temp = 0;
    if (o->workdir) {
        snprintf(tmp, sizeof tmp, "%s", o->workdir);
        if (mkdir(tmp, 0700) && errno != EEXIST)
            return fl_seterr(err, FL_EINVAL, "--workdir %s: cannot create: %s", tmp,
                             strerror(errno));
        DIR *d = opendir(tmp);
        if (!d) return fl_seterr(err, FL_EINVAL, "--workdir %s: %s", tmp, strerror(errno));
        struct dirent *de;
        int empty = 1;
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
        closedir(d);
        if (!empty)
            return fl_seterr(err, FL_EINVAL,
                             "--workdir %s: not empty (a simulation needs a fresh directory)", tmp);
    } else {
        const char *base = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/cohort-sim-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmp))
            return fl_seterr(err, FL_EIO, "%s: cannot create a temporary directory: %s", tmp,
                             strerror(errno));
        *temp = 1;
    }
    /* Absolute, because the children's configs are passed by path. */
    if (!realpath(tmp, out)) return fl_seterr(err, FL_EIO, "%s: %s", tmp, strerror(errno));
    if (strlen(out) > FL_PATH_LEN - 300)
        return fl_seterr(err, FL_EINVAL, "%s: path too long for a work directory", out);
    return FL_OK;
}

static int make_pki(const char *dir, int sites, char *err) {
    char pki[FL_PATH_LEN], name[32];
    wpath(pki, dir, "pki");
    int rc = fl_pki_init(pki, "sim", CERT_DAYS, err);
    if (!rc) rc = fl_pki_issue(pki, "aggregator", FL_ROLE_AGGREGATOR, CERT_DAYS, err);
    for (int s = 1; !rc && s <= sites; s++) {
        snprintf(name, sizeof name, "site-%d", s);
        rc = fl_pki_issue(pki, name, FL_ROLE_CLIENT, CERT_DAYS, err);
    }
    return rc;
}

/* cohort-aggregator and cohort-client are built next to cohort. */
static int find_program(char out[FL_PATH_LEN], const char *name, char *err) {
    char self[FL_PATH_LEN];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return fl_seterr(err, FL_EIO, "/proc/self/exe: %s", strerror(errno));
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    wpath(out, self, "%s", name);
    if (access(out, X_OK))
        return fl_seterr(err, FL_EIO, "%s: not found next to cohort (build the %s target)", out,
                         name);
    return FL_OK;
}

/* ============================ the run ==================================== */

typedef struct sim_run {
    const sim_opts *o;
    const fl_sim_config *c;
    char dir[FL_PATH_LEN];
    char agg_exe[FL_PATH_LEN], client_exe[FL_PATH_LEN];
    fl_sim_proc procs[1 + FL_SIM_MAX_SITES]; /* [0] the aggregator, [k] site-k */
    int n_procs;
    int port;
    sqlite3 *events; /* read-only view of the aggregator's store */
    int64_t last_event;
    int client_failed; /* a client exited non-zero without being killed by a fault */
} sim_run;

static int wait_port(sim_run *r, char *err) {
    char path[FL_PATH_LEN];
    wpath(path, r->dir, "agg.port");
    int64_t end = fl_sim_now_ms() + PORT_WAIT_MS;
    fl_sim_proc *agg = &r->procs[0];
    for (;;) {
        if (fl_sim_interrupted()) return fl_seterr(err, FL_ESTATE, "interrupted");
        FILE *f = fopen(path, "r");
        if (f) {
            char buf[32] = "";
            int got = fgets(buf, sizeof buf, f) != NULL;
            fclose(f);
            /* the newline marks a complete write */
            if (got && strchr(buf, '\n')) {
                char *e;
                long port = strtol(buf, &e, 10);
                if (port < 1 || port > 65535 || (*e != '\n' && *e != '\r'))
                    return fl_seterr(err, FL_EPROTO, "%s: expected a port number, got '%s'", path,
                                     buf);
                r->port = (int)port;
                return FL_OK;
            }
        }
        if (fl_sim_reap(agg)) {
            char st[64];
            fl_sim_log_tail(stderr, agg, 20);
            return fl_seterr(err, FL_EIO, "the aggregator stopped before listening (%s)",
                             fl_sim_status_text(st, sizeof st, agg));
        }
        if (fl_sim_now_ms() > end)
            return fl_seterr(err, FL_ETIMEOUT, "the aggregator wrote no port file within %d s",
                             PORT_WAIT_MS / 1000);
        fl_sim_sleep_ms(20);
    }
}

static int start_aggregator(sim_run *r, char *err) {
    char ini[FL_PATH_LEN];
    wpath(ini, r->dir, "aggregator.ini");
    int rc = fl_sim_write_aggregator_ini(r->c, ini, err);
    if (rc) return rc;
    fl_sim_proc *p = &r->procs[0];
    snprintf(p->name, sizeof p->name, "aggregator");
    wpath(p->log, r->dir, "aggregator.log");
    char *argv[] = {r->agg_exe, "--config", ini, NULL};
    if ((rc = fl_sim_spawn(p, r->agg_exe, argv, err))) return rc;
    r->n_procs = 1;
    fl_debug("aggregator: pid %d, log %s", (int)p->pid, p->log);
    if ((rc = wait_port(r, err))) return rc;
    fl_info("aggregator listening on 127.0.0.1:%d (pid %d)", r->port, (int)p->pid);
    return FL_OK;
}

static int start_clients(sim_run *r, char *err) {
    for (int s = 1; s <= r->c->sites; s++) {
        char ini[FL_PATH_LEN];
        wpath(ini, r->dir, "site-%d.ini", s);
        int rc = fl_sim_write_client_ini(r->c, ini, s, r->port, err);
        if (rc) return rc;
        fl_sim_proc *p = &r->procs[s];
        snprintf(p->name, sizeof p->name, "site-%d", s);
        wpath(p->log, r->dir, "site-%d.log", s);
        char *argv[] = {r->client_exe, "--config", ini, NULL};
        if ((rc = fl_sim_spawn(p, r->client_exe, argv, err))) return rc;
        r->n_procs = s + 1;
    }
    fl_info("%d clients started", r->c->sites);
    return FL_OK;
}

/* The [faults] entries waiting for this stage event. The statistics stage
 * is logged as round 0 (it runs before round 1). */
static void fire_faults(sim_run *r, fl_sim_config *c, const char *stage, int round) {
    for (int i = 0; i < c->n_faults; i++) {
        fl_sim_fault *f = &c->faults[i];
        int want = strcmp(f->stage, "STATS") ? f->round : 0;
        if (f->fired || strcmp(f->stage, stage) || round != want) continue;
        fl_sim_proc *p = &r->procs[f->site];
        f->fired = 1;
        f->pid = p->pid;
        if (!p->running) {
            /* its own [faults] die_at hook ended it on receiving the task */
            p->killed = 1;
            fl_warn("fault: site-%d ended itself in round %d %s", f->site, f->round, f->stage);
            continue;
        }
        fl_sim_signal(p, SIGKILL);
        p->killed = 1;
        fl_warn("fault: killed site-%d (pid %d) as round %d %s began", f->site, (int)p->pid,
                f->round, f->stage);
    }
}

/* New audit events since the last call: progress on stderr, and faults. */
static void poll_events(sim_run *r, fl_sim_config *c) {
    if (!r->events) {
        char path[FL_PATH_LEN];
        wpath(path, r->dir, "aggregator.db");
        if (access(path, R_OK)) return;
        if (sqlite3_open_v2(path, &r->events, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
            sqlite3_close(r->events);
            r->events = NULL;
            return;
        }
        sqlite3_busy_timeout(r->events, 200);
    }
    sqlite3_stmt *s = NULL;
    /* The table may not exist for a moment after the file does: try again
     * on the next poll. */
    if (sqlite3_prepare_v2(r->events,
                           "SELECT id, kind, IFNULL(site, ''), round, IFNULL(detail, '') "
                           "FROM events WHERE id > ?1 ORDER BY id",
                           -1, &s, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(s, 1, r->last_event);
    while (sqlite3_step(s) == SQLITE_ROW) {
        r->last_event = sqlite3_column_int64(s, 0);
        const char *kind = (const char *)sqlite3_column_text(s, 1);
        const char *site = (const char *)sqlite3_column_text(s, 2);
        int round = sqlite3_column_int(s, 3);
        const char *detail = (const char *)sqlite3_column_text(s, 4);
        if (!strcmp(kind, "stage")) {
            char stage[FL_SIM_STAGE_LEN];
            snprintf(stage, sizeof stage, "%.*s", (int)strcspn(detail, " "), detail);
            fl_debug("round %d: %s", round, detail);
            fire_faults(r, c, stage, round);
        } else if (!strcmp(kind, "commit")) {
            fl_info("round %d committed: %s", round, detail);
        } else if (!strcmp(kind, "dropout") || !strcmp(kind, "refuse") ||
                   !strcmp(kind, "refusal") || !strcmp(kind, "restart")) {
            fl_warn("round %d: %s%s%s", round, site, *site ? ": " : "", detail);
        } else if (!strcmp(kind, "start") || !strcmp(kind, "done")) {
            fl_info("%s", detail);
        }
    }
    sqlite3_finalize(s);
}

/* Until the aggregator exits (0 = the federation finished), the overall
 * deadline passes, the simulator is interrupted, or too few sites are left
 * for the federation ever to finish. */
static int supervise(sim_run *r, fl_sim_config *c, char *err) {
    const fl_sim_config *cc = c;
    int64_t budget_ms = r->o->timeout_s > 0
                            ? r->o->timeout_s * 1000
                            : (int64_t)((cc->rounds * 4 + 2) * cc->stage_timeout * 1000) +
                                  cc->join_timeout * 1000 + 120000;
    int64_t start = fl_sim_now_ms(), starved_since = 0;
    int64_t starve_ms = (int64_t)(2 * cc->stage_timeout * 1000) + 30000;
    fl_sim_proc *agg = &r->procs[0];
    for (;;) {
        poll_events(r, c);
        if (fl_sim_interrupted())
            return fl_seterr(err, FL_ESTATE, "interrupted by signal %d", fl_sim_interrupted());
        int live = 0;
        for (int s = 1; s <= cc->sites; s++) {
            fl_sim_proc *p = &r->procs[s];
            if (!p->running) continue;
            if (fl_sim_reap(p)) {
                char st[64];
                int code = fl_sim_exit_code(p);
                if (p->killed) continue;
                if (code != 0) {
                    r->client_failed = 1;
                    fl_error("%s stopped (%s) while the federation ran", p->name,
                             fl_sim_status_text(st, sizeof st, p));
                    fl_sim_log_tail(stderr, p, 12);
                } else {
                    fl_debug("%s finished (exit 0)", p->name);
                }
                continue;
            }
            live++;
        }
        if (fl_sim_reap(agg)) {
            poll_events(r, c); /* the last events: commit, done */
            char st[64];
            if (fl_sim_exit_code(agg) != 0) {
                fl_sim_log_tail(stderr, agg, 20);
                return fl_seterr(err, FL_EIO, "the aggregator failed (%s); log: %s",
                                 fl_sim_status_text(st, sizeof st, agg), agg->log);
            }
            return FL_OK;
        }
        int64_t now = fl_sim_now_ms();
        /* Clients leave on their own once the federation is done, so a short
         * spell below min_sites is normal at the end; a long one is not. */
        if (live < cc->min_sites) {
            if (!starved_since) starved_since = now;
            if (now - starved_since > starve_ms) {
                fl_sim_log_tail(stderr, agg, 12);
                return fl_seterr(err, FL_ETHRESHOLD,
                                 "only %d site%s running, min_sites is %d: the federation cannot "
                                 "finish",
                                 live, live == 1 ? "" : "s", cc->min_sites);
            }
        } else {
            starved_since = 0;
        }
        if (now - start > budget_ms) {
            fl_sim_log_tail(stderr, agg, 12);
            return fl_seterr(err, FL_ETIMEOUT,
                             "the federation did not finish within %" PRId64
                             " s (--timeout to change)",
                             budget_ms / 1000);
        }
        /* A pending kill should land as early in its stage as possible. */
        int pending = 0;
        for (int i = 0; i < cc->n_faults; i++)
            pending |= cc->faults[i].exists && !cc->faults[i].fired;
        fl_sim_sleep_ms(pending ? 2 : 50);
    }
}

/* ============================ results ==================================== */

typedef struct sim_round {
    int round, completed, dropped;
    double accuracy, auc, loss, epsilon, eval_examples;
    char dropped_sites[256]; /* "site-2,site-4" */
} sim_round;

/* A site's privacy ledger, read from its own state file (client/agent.c). */
typedef struct sim_site_privacy {
    double epsilon;       /* the last run's epsilon_after; NAN if it never trained with DP */
    int trained, refused; /* DP training runs; TRAIN tasks it refused */
} sim_site_privacy;

typedef struct sim_result {
    sim_site_privacy priv[FL_SIM_MAX_SITES + 1]; /* 1-based */
    char end_reason[256]; /* the federation ended before its last round: why */
    sim_round *rounds;
    int n_rounds;
    uint8_t sha256[32];
    uint8_t *model;
    size_t model_len;
    double *stats; /* the federation's summed statistics */
    int64_t n_stats;
    fl_eval final;
} sim_result;

static void result_free(sim_result *res) {
    free(res->rounds);
    free(res->model);
    free(res->stats);
}

static double col_or_nan(sqlite3_stmt *s, int i) {
    return sqlite3_column_type(s, i) == SQLITE_NULL ? NAN : sqlite3_column_double(s, i);
}

static int read_rounds(sim_result *res, fl_store *st, int last, char *err) {
    sqlite3 *db = fl_store_db(st);
    sqlite3_stmt *q = NULL, *p = NULL;
    int rc = FL_OK;
    if (!(res->rounds = calloc((size_t)last, sizeof *res->rounds)))
        return fl_seterr(err, FL_ENOMEM, "out of memory");
    if (sqlite3_prepare_v2(
            db,
            "SELECT r.round, r.n_completed, r.n_dropped, "
            " (SELECT value FROM metrics m WHERE m.round = r.round AND name = "
            "'accuracy'),"
            " (SELECT value FROM metrics m WHERE m.round = r.round AND name = 'auc'),"
            " (SELECT value FROM metrics m WHERE m.round = r.round AND name = "
            "'loss'),"
            " (SELECT MAX(epsilon) FROM participation x WHERE x.round = r.round),"
            " (SELECT value FROM metrics m WHERE m.round = r.round AND name = "
            "'eval_examples') "
            "FROM rounds r WHERE r.round BETWEEN 1 AND ?1 ORDER BY r.round",
            -1, &q, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT site FROM participation WHERE round = ?1 AND status != "
                           "'completed' ORDER BY site",
                           -1, &p, NULL) != SQLITE_OK) {
        rc = fl_seterr(err, FL_EIO, "aggregator.db: %s", sqlite3_errmsg(db));
        goto cleanup;
    }
    sqlite3_bind_int(q, 1, last);
    while (sqlite3_step(q) == SQLITE_ROW && res->n_rounds < last) {
        sim_round *x = &res->rounds[res->n_rounds++];
        x->round = sqlite3_column_int(q, 0);
        x->completed = sqlite3_column_int(q, 1);
        x->dropped = sqlite3_column_int(q, 2);
        x->accuracy = col_or_nan(q, 3);
        x->auc = col_or_nan(q, 4);
        x->loss = col_or_nan(q, 5);
        x->epsilon = col_or_nan(q, 6);
        x->eval_examples = col_or_nan(q, 7);
        sqlite3_reset(p);
        sqlite3_bind_int(p, 1, x->round);
        size_t at = 0;
        while (sqlite3_step(p) == SQLITE_ROW && at + 16 < sizeof x->dropped_sites)
            at += (size_t)snprintf(x->dropped_sites + at, sizeof x->dropped_sites - at, "%ssite-%d",
                                   at ? "," : "", sqlite3_column_int(p, 0));
    }
cleanup:
    sqlite3_finalize(q);
    sqlite3_finalize(p);
    return rc;
}

/* Each site's ledger and refusals, from sites/site-K.db. A site whose file
 * cannot be read keeps NAN / 0: the summary says what is known. */
static void read_privacy(sim_result *res, const char *dir, int sites) {
    for (int k = 1; k <= sites && k <= FL_SIM_MAX_SITES; k++) {
        sim_site_privacy *p = &res->priv[k];
        p->epsilon = NAN;
        char path[FL_PATH_LEN];
        wpath(path, dir, "sites/site-%d.db", k);
        sqlite3 *db = NULL;
        sqlite3_stmt *q = NULL;
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
            sqlite3_prepare_v2(db,
                               "SELECT (SELECT epsilon_after FROM ledger ORDER BY id DESC LIMIT 1),"
                               " (SELECT COUNT(*) FROM ledger),"
                               " (SELECT COUNT(*) FROM tasks WHERE kind = 'TRAIN' AND"
                               "  outcome = 'refused')",
                               -1, &q, NULL) == SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW) {
            p->epsilon = col_or_nan(q, 0);
            p->trained = sqlite3_column_int(q, 1);
            p->refused = sqlite3_column_int(q, 2);
        }
        sqlite3_finalize(q);
        sqlite3_close(db);
    }
}

/* The aggregator's reason for ending early (aggregator/round.c), if any. */
static void read_end_reason(sim_result *res, fl_store *st) {
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(fl_store_db(st),
                           "SELECT detail FROM events WHERE kind = 'done' AND detail LIKE "
                           "'%ends early%' ORDER BY id DESC LIMIT 1",
                           -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW && sqlite3_column_text(q, 0))
        snprintf(res->end_reason, sizeof res->end_reason, "%s",
                 (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
}

static int read_store(sim_result *res, const char *dir, char *err) {
    char path[FL_PATH_LEN];
    wpath(path, dir, "aggregator.db");
    fl_store *st = NULL;
    char *stats = NULL;
    int last = -1;
    int rc = access(path, R_OK) ? fl_seterr(err, FL_EIO, "%s: missing", path)
                                : fl_store_open(&st, path, err);
    if (!rc) rc = fl_store_last_round(st, &last, err);
    if (!rc && last < 1) rc = fl_seterr(err, FL_ESTATE, "%s: no round was committed", path);
    if (!rc) rc = read_rounds(res, st, last, err);
    if (!rc) rc = fl_store_load_model(st, last, &res->model, &res->model_len, res->sha256, err);
    if (!rc) rc = fl_store_meta_get(st, "stats", &stats, err);
    if (!rc && !stats) rc = fl_seterr(err, FL_ESTATE, "%s: no federation statistics", path);
    if (!rc) rc = fl_cli_parse_stats(&res->stats, &res->n_stats, stats, "aggregator.db", err);
    if (!rc) read_end_reason(res, st);
    free(stats);
    fl_store_close(st);
    return rc;
}

/* The last model on the central test split. The encoder is the
 * federation's: site-1's data and schema (its levels are everyone's)
 * finished with the statistics the aggregator summed, which is what every
 * site trained with. */
static int evaluate_final(sim_result *res, const sim_data *d, const fl_sim_config *c,
                          const char *dir, char *err) {
    char csv[FL_PATH_LEN], schema[FL_PATH_LEN];
    wpath(csv, dir, "sites/site-1.csv");
    wpath(schema, dir, "sites/site.schema.ini");
    fl_site site;
    fl_dataset test = {0};
    fl_model m = {0};
    fl_model_spec spec;
    float *params = NULL;
    enum fl_device dev = FL_DEVICE_CPU;
    fl_device_parse(&dev, c->device);
    int rc = fl_site_open(&site, csv, schema, c->val_fraction, c->seed + 1, dev, err);
    if (rc) return rc;
    if ((rc = fl_site_encode(&site, res->stats, res->n_stats, err))) goto cleanup;
    if ((rc = fl_dataset_encode(&test, &site.enc, &d->csv, d->y, d->test, d->n_test, err)))
        goto cleanup;
    if ((rc = fl_model_deserialize(&spec, &params, res->model, res->model_len, err))) goto cleanup;
    if (spec.n_in != test.d) {
        rc = fl_seterr(err, FL_EPROTO, "the final model takes %d features, the test split has %d",
                       spec.n_in, test.d);
        goto cleanup;
    }
    if ((rc = fl_model_init(&m, site.be, &spec, 256, c->seed, err))) goto cleanup;
    if ((rc = fl_model_set_params(&m, params)) || (rc = fl_model_evaluate(&res->final, &m, &test)))
        rc = fl_seterr(err, rc, "evaluation: %s", fl_backend_error(site.be));
cleanup:
    free(params);
    fl_model_free(&m);
    fl_dataset_free(&test);
    fl_site_close(&site);
    return rc;
}

/* ============================ output ===================================== */

static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

/* The first round from the fault's own on that lists its site as dropped:
 * the fault's round itself, or the next one when the site had already
 * delivered that stage's result before the kill landed. 0 if none. */
static int dropout_round(const sim_result *res, const fl_sim_fault *f) {
    char name[32];
    snprintf(name, sizeof name, "site-%d", f->site);
    size_t n = strlen(name);
    for (int i = 0; f->fired && i < res->n_rounds; i++) {
        const sim_round *x = &res->rounds[i];
        if (x->round < f->round) continue;
        for (const char *p = x->dropped_sites; (p = strstr(p, name)); p += n)
            if ((p == x->dropped_sites || p[-1] == ',') && (p[n] == ',' || p[n] == 0))
                return x->round;
    }
    return 0;
}

/* The fairness audit of the last round that has one (the aggregator's
 * fairness table, aggregator/store.h), or NULL. */
static cJSON *fairness_json(const char *dir) {
    char path[FL_PATH_LEN];
    wpath(path, dir, "aggregator.db");
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    cJSON *out = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT round, metrics FROM fairness ORDER BY round DESC LIMIT 1",
                           -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        out = cJSON_Parse((const char *)sqlite3_column_text(s, 1));
        if (out) cJSON_AddNumberToObject(out, "round", sqlite3_column_int(s, 0));
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
}

/* The record-level DP summary: the federation's settings and each site's
 * ledger (its cap is federation.ini's max_epsilon, copied into client.ini). */
static void privacy_json(cJSON *pv, const sim_result *res, const fl_sim_config *c) {
    double noise = 1.0, clip = 1.0, delta = 1e-5, cap = NAN;
    fl_ini_get_double(&noise, &c->ini, "privacy", "noise_multiplier", 1.0, 0.0, 1e6, NULL);
    fl_ini_get_double(&clip, &c->ini, "privacy", "clip", 1.0, 0.0, 1e6, NULL);
    fl_ini_get_double(&delta, &c->ini, "privacy", "delta", 1e-5, 1e-300, 0.5, NULL);
    if (fl_ini_find(&c->ini, "privacy", "max_epsilon"))
        fl_ini_get_double(&cap, &c->ini, "privacy", "max_epsilon", NAN, 0.0, 1e6, NULL);
    cJSON_AddStringToObject(pv, "mode", "record");
    cJSON_AddStringToObject(pv, "accountant", "rdp");
    cJSON_AddNumberToObject(pv, "delta", delta);
    cJSON_AddNumberToObject(pv, "noise_multiplier", noise);
    cJSON_AddNumberToObject(pv, "clip", clip);
    cJSON *sites = cJSON_AddArrayToObject(pv, "sites");
    for (int k = 1; k <= c->sites && k <= FL_SIM_MAX_SITES; k++) {
        const sim_site_privacy *p = &res->priv[k];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "site", k);
        add_num(o, "epsilon", p->epsilon);
        add_num(o, "cap", cap);
        cJSON_AddNumberToObject(o, "rounds_trained", p->trained);
        cJSON_AddNumberToObject(o, "rounds_refused", p->refused);
        cJSON_AddItemToArray(sites, o);
    }
}

static cJSON *result_json(const sim_run *r, const sim_result *res, const sim_data *d,
                          const fl_sim_config *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON *rounds = cJSON_AddArrayToObject(j, "rounds");
    for (int i = 0; i < res->n_rounds; i++) {
        const sim_round *x = &res->rounds[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "round", x->round);
        cJSON_AddNumberToObject(o, "clients", x->completed);
        cJSON_AddNumberToObject(o, "dropped", x->dropped);
        add_num(o, "accuracy", x->accuracy);
        add_num(o, "auc", x->auc);
        add_num(o, "loss", x->loss);
        add_num(o, "epsilon", x->epsilon);
        add_num(o, "eval_examples", x->eval_examples);
        cJSON *ds = cJSON_AddArrayToObject(o, "dropped_sites");
        char names[256];
        snprintf(names, sizeof names, "%s", x->dropped_sites);
        char *save = NULL;
        for (char *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save))
            cJSON_AddItemToArray(ds, cJSON_CreateString(t));
        cJSON_AddItemToArray(rounds, o);
    }
    cJSON *f = cJSON_AddObjectToObject(j, "final");
    add_num(f, "accuracy", res->final.accuracy);
    add_num(f, "auc", res->final.auc);
    add_num(f, "loss", res->final.loss);
    cJSON_AddNumberToObject(f, "n", (double)res->final.n);
    cJSON_AddNumberToObject(f, "round", res->n_rounds ? res->rounds[res->n_rounds - 1].round : 0);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", res->sha256[i]);
    cJSON_AddStringToObject(j, "model_sha256", hex);
    cJSON_AddStringToObject(j, "model", c->model);
    cJSON_AddNumberToObject(j, "sites", c->sites);
    cJSON_AddStringToObject(j, "partition", c->partition);
    cJSON_AddStringToObject(j, "strategy", c->strategy);
    cJSON_AddNumberToObject(j, "seed", (double)c->seed);
    cJSON *data = cJSON_AddObjectToObject(j, "data");
    cJSON_AddStringToObject(data, "csv", c->csv);
    cJSON_AddNumberToObject(data, "rows", (double)d->csv.n_rows);
    cJSON_AddNumberToObject(data, "test_rows", (double)d->n_test);
    cJSON *sr = cJSON_AddArrayToObject(data, "site_rows");
    for (int s = 0; s < c->sites; s++)
        cJSON_AddItemToArray(sr, cJSON_CreateNumber((double)d->site_rows[s]));
    if (res->end_reason[0]) cJSON_AddStringToObject(j, "ended_early", res->end_reason);
    cJSON *pv = cJSON_AddObjectToObject(j, "privacy");
    if (!strcmp(c->privacy_mode, "record")) {
        privacy_json(pv, res, c);
    } else if (strcmp(c->privacy_mode, "none")) {
        /* Not run yet: say so rather than let a reader assume it was. */
        cJSON_AddStringToObject(pv, "mode", "none");
        cJSON_AddStringToObject(pv, "requested", c->privacy_mode);
        cJSON_AddBoolToObject(pv, "implemented", 0);
    } else {
        cJSON_AddStringToObject(pv, "mode", "none");
    }
    cJSON *sa = cJSON_AddObjectToObject(j, "secagg");
    cJSON_AddBoolToObject(sa, "enabled", c->secagg_enabled);
    if (c->secagg_enabled) {
        double th = 0.66;
        long nb = 0;
        fl_ini_get_double(&th, &c->ini, "secagg", "threshold", 0.66, 0.0, 1.0, NULL);
        fl_ini_get_int(&nb, &c->ini, "secagg", "neighbors", 0, 0, FL_SIM_MAX_SITES, NULL);
        cJSON_AddNumberToObject(sa, "threshold", th);
        cJSON_AddNumberToObject(sa, "neighbors", (double)nb);
    }
    cJSON *fair = fairness_json(r->dir);
    if (fair)
        cJSON_AddItemToObject(j, "fairness", fair);
    else
        cJSON_AddNullToObject(j, "fairness");
    cJSON *fa = cJSON_AddArrayToObject(j, "faults");
    for (int i = 0; i < c->n_faults; i++) {
        const fl_sim_fault *x = &c->faults[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "site", x->site);
        cJSON_AddNumberToObject(o, "round", x->round);
        cJSON_AddStringToObject(o, "stage", x->stage);
        cJSON_AddBoolToObject(o, "fired", x->fired);
        if (x->fired)
            cJSON_AddNumberToObject(o, "pid", (double)x->pid);
        else
            cJSON_AddNullToObject(o, "pid");
        int dr = dropout_round(res, x);
        if (dr)
            cJSON_AddNumberToObject(o, "dropout_round", dr);
        else
            cJSON_AddNullToObject(o, "dropout_round");
        cJSON_AddItemToArray(fa, o);
    }
    cJSON *pr = cJSON_AddArrayToObject(j, "processes");
    for (int i = 0; i < r->n_procs; i++) {
        char st[64];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", r->procs[i].name);
        cJSON_AddNumberToObject(o, "pid", (double)r->procs[i].pid);
        cJSON_AddStringToObject(o, "status", fl_sim_status_text(st, sizeof st, &r->procs[i]));
        cJSON_AddBoolToObject(o, "fault", r->procs[i].killed);
        cJSON_AddItemToArray(pr, o);
    }
    if (r->o->keep || r->o->workdir)
        cJSON_AddStringToObject(j, "workdir", r->dir);
    else
        cJSON_AddNullToObject(j, "workdir");
    return j;
}

/* " %*.*f", or a dash in the same width for a missing figure. */
static void print_num(FILE *out, int width, int prec, double v) {
    if (isfinite(v))
        fprintf(out, " %*.*f", width, prec, v);
    else
        fprintf(out, " %*s", width, "-");
}

static void result_print(FILE *out, const sim_run *r, const sim_result *res, const sim_data *d,
                         const fl_sim_config *c) {
    fprintf(out, "cohort simulate: %d sites (%s), %s, %s, %d rounds\n", c->sites, c->partition,
            c->model, c->strategy, c->rounds);
    fprintf(out, "%5s %7s %7s %9s %7s %7s %8s  %s\n", "round", "sites", "dropped", "accuracy",
            "auc", "loss", "epsilon", "dropped sites");
    for (int i = 0; i < res->n_rounds; i++) {
        const sim_round *x = &res->rounds[i];
        fprintf(out, "%5d %7d %7d", x->round, x->completed, x->dropped);
        print_num(out, 9, 4, x->accuracy);
        print_num(out, 7, 4, x->auc);
        print_num(out, 7, 4, x->loss);
        print_num(out, 8, 3, x->epsilon);
        fprintf(out, "  %s\n", x->dropped_sites);
    }
    fprintf(out,
            "final model on the central test split (%lld rows): accuracy %.4f  auc %.4f  "
            "loss %.4f\n",
            (long long)d->n_test, res->final.accuracy, res->final.auc, res->final.loss);
    if (res->end_reason[0]) fprintf(out, "ended early: %s\n", res->end_reason);
    if (!strcmp(c->privacy_mode, "record"))
        for (int k = 1; k <= c->sites && k <= FL_SIM_MAX_SITES; k++) {
            const sim_site_privacy *p = &res->priv[k];
            fprintf(out, "site-%d privacy: epsilon", k);
            print_num(out, 0, 4, p->epsilon);
            fprintf(out, " (RDP) after %d DP rounds, %d refused\n", p->trained, p->refused);
        }
    fprintf(out, "model sha256 ");
    for (int i = 0; i < 32; i++)
        fprintf(out, "%02x", res->sha256[i]);
    fprintf(out, "\n");
    if (r->o->keep || r->o->workdir) fprintf(out, "work directory: %s\n", r->dir);
}

/* ============================ the command ================================ */

static void warn_unimplemented(const fl_sim_config *c) {
    if (!strcmp(c->privacy_mode, "site"))
        fl_warn("[privacy] mode = %s is not implemented in the federation yet: this run trains "
                "without differential privacy",
                c->privacy_mode);
    int killed = 0;
    for (int i = 0; i < c->n_faults; i++) {
        if (!c->faults[i].exists)
            fl_warn("[faults] kill_site = %d@%d:%s: a federation %s secure aggregation has no %s "
                    "stage; this fault will not fire",
                    c->faults[i].site, c->faults[i].round, c->faults[i].stage,
                    c->secagg_enabled ? "with" : "without", c->faults[i].stage);
        else
            killed++;
    }
    if (c->sites - killed < c->min_sites)
        fl_warn("[faults] leave %d sites, fewer than min_sites = %d: the federation cannot finish",
                c->sites - killed, c->min_sites);
}

int cmd_simulate(int argc, char **argv) {
    sim_opts o;
    int prc = parse_args(&o, argc, argv);
    if (prc) return prc == 1 ? 0 : prc;
    fl_log_set_tag("simulate");
    char err[FL_ERR_LEN] = "";
    fl_sim_config cfg;
    sim_data data;
    sim_result res;
    sim_run *r = NULL;
    int rc, temp = 0, made_dir = 0, stage_runtime = 0;
    memset(&data, 0, sizeof data);
    memset(&res, 0, sizeof res);
    fl_sim_signals_install();
    if ((rc = fl_sim_config_load(&cfg, o.config, err))) {
        fprintf(stderr, "cohort simulate: %s\n", err);
        fl_sim_signals_restore();
        return fl_exit_code(rc);
    }
    warn_unimplemented(&cfg);
    /* Everything about the input is checked before anything is created, so
     * bad input is exit 2 and leaves nothing behind. */
    if ((rc = data_load(&data, &cfg, err))) {
        if (rc == FL_EIO) rc = FL_EINVAL;
        goto cleanup;
    }
    if (!(r = calloc(1, sizeof *r))) {
        rc = fl_seterr(err, FL_ENOMEM, "out of memory");
        goto cleanup;
    }
    r->o = &o;
    r->c = &cfg;
    if ((rc = find_program(r->agg_exe, "cohort-aggregator", err)) ||
        (rc = find_program(r->client_exe, "cohort-client", err)))
        goto cleanup;
    if ((rc = make_workdir(r->dir, &o, &temp, err))) goto cleanup;
    made_dir = 1;
    stage_runtime = 1;
    fl_info("%s: %lld rows: %lld held out for the final test, %d sites (%s) in %s", cfg.csv,
            (long long)data.csv.n_rows, (long long)data.n_test, cfg.sites, cfg.partition, r->dir);
    if ((rc = make_pki(r->dir, cfg.sites, err))) goto cleanup;
    if ((rc = data_write(&data, &cfg, r->dir, err))) goto cleanup;
    if ((rc = start_aggregator(r, err))) goto cleanup;
    if ((rc = start_clients(r, err))) goto cleanup;
    if ((rc = supervise(r, &cfg, err))) goto cleanup;
    /* The federation is over: clients that did not leave are asked to. */
    if (fl_sim_stop_all(r->procs + 1, r->n_procs - 1, CLIENT_GRACE_MS, TERM_WAIT_MS))
        fl_warn("some clients had to be stopped after the federation finished");
    for (int s = 1; s < r->n_procs; s++) {
        fl_sim_proc *p = &r->procs[s];
        if (!p->killed && WIFEXITED(p->status) && WEXITSTATUS(p->status) != 0 &&
            !r->client_failed) {
            char st[64];
            r->client_failed = 1;
            fl_error("%s: %s", p->name, fl_sim_status_text(st, sizeof st, p));
            fl_sim_log_tail(stderr, p, 12);
        }
    }
    if ((rc = read_store(&res, r->dir, err))) goto cleanup;
    read_privacy(&res, r->dir, cfg.sites);
    if ((rc = evaluate_final(&res, &data, &cfg, r->dir, err))) goto cleanup;
    if (o.json) {
        if (fl_cli_print_json(result_json(r, &res, &data, &cfg))) rc = FL_EIO;
    } else {
        result_print(stdout, r, &res, &data, &cfg);
    }
    if (!rc && r->client_failed) rc = fl_seterr(err, FL_EIO, "a client process failed (see above)");
cleanup:
    if (r) {
        /* every path: no child outlives the simulator */
        int any = 0;
        for (int i = 0; i < r->n_procs; i++)
            any |= r->procs[i].running;
        if (any) fl_sim_stop_all(r->procs, r->n_procs, 0, TERM_WAIT_MS);
        if (r->events) sqlite3_close(r->events);
    }
    if (rc) {
        if (stage_runtime && rc == FL_EINVAL) rc = FL_EIO; /* after the input checks: runtime */
        fprintf(stderr, "cohort simulate: %s\n", err[0] ? err : fl_strerror(rc));
    }
    if (made_dir) {
        char e2[FL_ERR_LEN];
        int interrupted = fl_sim_interrupted() != 0;
        if (temp && !o.keep && (!rc || interrupted)) {
            if (fl_sim_rmtree(r->dir, e2)) fl_warn("%s", e2);
        } else if (rc) {
            fprintf(stderr, "cohort simulate: work directory kept for inspection: %s\n", r->dir);
        }
    }
    free(r);
    result_free(&res);
    data_free(&data);
    fl_sim_config_free(&cfg);
    fl_sim_signals_restore();
    return fl_exit_code(rc);
}
