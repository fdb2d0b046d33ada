/* report.c: the cost of `cohort report` on a long federation (docs/report.md,
 * DESIGN.md §11). It writes a synthetic aggregator database through the
 * store API (aggregator/store.h): a signed audit log (throwaway CA), the
 * recorded configuration, R rounds of S sites each with metrics,
 * participation (dropouts and refusals with reasons, cumulative epsilon),
 * privacy and secure-aggregation events, and a fairness audit per round in
 * core/fairness.c's JSON shape (three attributes, five groups, ten
 * calibration bins). Then it times fl_report_build (which includes the full
 * audit-log verification) and fl_report_html, taking the median of several
 * runs, against a reference measured in the same run: one plain read of
 * every row of every table of the same database.
 *
 *   report [--json] [--rounds R] [--sites S] [--model-bytes N] [--runs K] [--keep]
 *
 * Defaults: 100 rounds, 20 sites, 16 KiB models, 5 runs. The goal for the
 * defaults is under 2 s for build + HTML. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aggregator/report.h"
#include "aggregator/store.h"
#include "bench/bench_util.h"
#include "core/ini.h"
#include "crypto/pki.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;

/* xorshift64*: reproducible synthetic data, not for anything secret. */
static double unif(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (double)((g_rng * 0x2545f4914f6cdd1dULL) >> 11) / 9007199254740992.0;
}

/* One round's fairness metrics: three attributes, five groups each. */
static int fairness_text(char **out, int round) {
    static const char *const attrs[] = {"Age", "Marital", "Job"};
    static const char *const groups[3][5] = {
        {"<25", "25-40", "40-60", ">=60", "unknown"},
        {"married", "single", "separated", "widow", "divorced"},
        {"fixed", "partime", "freelance", "others", "none"}};
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b) return -1;
#define OUT(...) n += (size_t)snprintf(b + n, cap - n, __VA_ARGS__)
    OUT("{\"threshold\":0.5,\"min_group_count\":20,\"n_bins\":10,\"overall\":{\"count\":%d,"
        "\"selection_rate\":0.31,\"tpr\":0.55,\"fpr\":0.12,\"fnr\":0.45,\"precision\":0.62,"
        "\"accuracy\":0.78,\"auc\":0.82},\"attributes\":[",
        4000 + round);
    int alerts = 0;
    for (int a = 0; a < 3; a++) {
        OUT("%s{\"attribute\":\"%s\",\"groups\":{", a ? "," : "", attrs[a]);
        for (int g = 0; g < 5; g++) {
            if (g == 4) {
                OUT(",\"%s\":{\"count\":7,\"status\":\"insufficient data\"}", groups[a][g]);
                continue;
            }
            OUT("%s\"%s\":{\"count\":%d,\"selection_rate\":%.4f,\"tpr\":%.4f,\"fpr\":%.4f,"
                "\"fnr\":%.4f,\"precision\":%.4f,\"accuracy\":%.4f,\"auc\":%.4f,\"calibration\":[",
                g ? "," : "", groups[a][g], 200 + 100 * g, 0.2 + 0.1 * unif(), 0.5 + 0.1 * unif(),
                0.1 + 0.05 * unif(), 0.4 + 0.1 * unif(), 0.6 + 0.1 * unif(), 0.75 + 0.1 * unif(),
                0.8 + 0.05 * unif());
            for (int k = 0; k < 10; k++)
                OUT("%s{\"lo\":%.1f,\"hi\":%.1f,\"predicted\":%.2f,\"observed\":%.4f,\"count\":%d}",
                    k ? "," : "", k / 10.0, (k + 1) / 10.0, (k + 0.5) / 10, (k + unif()) / 10.0,
                    20 + k);
            OUT("]}");
        }
        double dpd = 0.05 + 0.1 * unif(), di = 0.7 + 0.3 * unif();
        int alert = dpd > 0.12;
        alerts += alert;
        OUT("},\"disparities\":{\"demographic_parity_difference\":%.4f,"
            "\"demographic_parity_ratio\":%.4f,\"equalized_odds_difference\":%.4f,"
            "\"equalized_odds_ratio\":%.4f,\"equalized_odds_difference_to_overall\":%.4f,"
            "\"equalized_odds_ratio_to_overall\":%.4f,\"equal_opportunity_difference\":%.4f,"
            "\"average_odds_difference\":%.4f,\"disparate_impact\":%.4f,"
            "\"four_fifths_rule_violated\":%s,\"generalized_entropy_index\":%.4f,"
            "\"theil_index\":%.4f},\"alerts\":[",
            dpd, di, 0.1 * unif(), 0.8 + 0.2 * unif(), 0.05 * unif(), 0.85 + 0.1 * unif(),
            0.1 * unif(), 0.05 - 0.1 * unif(), di, di < 0.8 ? "true" : "false", 0.1 + 0.02 * unif(),
            0.08 + 0.02 * unif());
        if (alert)
            OUT("{\"metric\":\"demographic_parity_difference\",\"value\":%.4f,\"limit\":0.12,"
                "\"attribute\":\"%s\"}",
                dpd, attrs[a]);
        OUT("]}");
    }
    OUT("],\"alerts\":[],\"site_accuracy\":{\"mean\":0.77,\"variance\":0.0004,\"sites\":20}}");
#undef OUT
    (void)alerts;
    *out = b;
    return n < cap ? 0 : -1;
}

/* The synthetic federation's database at dir/aggregator.db. */
static int make_db(const char *dir, const char *db, int rounds, int sites, size_t model_bytes,
                   char err[FL_ERR_LEN]) {
    char pki[4096], key[4200], crt[4200];
    snprintf(pki, sizeof pki, "%s/pki", dir);
    snprintf(key, sizeof key, "%s/aggregator.key", pki);
    snprintf(crt, sizeof crt, "%s/aggregator.crt", pki);
    fl_store *st = NULL;
    fl_signer *signer = NULL;
    char *cert = NULL, *fair = NULL;
    uint8_t *model = malloc(model_bytes ? model_bytes : 1);
    double *eps = calloc((size_t)sites + 1, sizeof *eps);
    fl_participation *parts = calloc((size_t)sites, sizeof *parts);
    size_t cert_len = 0;
    int rc = model && eps && parts ? 0 : FL_ENOMEM;
    if (!rc) rc = fl_pki_init(pki, "bench", 30, err);
    if (!rc) rc = fl_pki_issue(pki, "aggregator", FL_ROLE_AGGREGATOR, 30, err);
    if (!rc) rc = fl_signer_new(&signer, key, err);
    if (!rc) rc = fl_read_file(&cert, &cert_len, crt, err);
    if (!rc) rc = fl_store_open(&st, db, err);
    if (!rc) rc = fl_store_set_federation(st, "bench", err);
    if (!rc) rc = fl_store_set_signer(st, signer, cert, cert_len, err);
    char config[16384];
    int cn = snprintf(config, sizeof config, "[aggregator]\nfederation_id = bench\nsites = ");
    for (int s = 1; s <= sites && cn < 12000; s++)
        cn += snprintf(config + cn, sizeof config - (size_t)cn, "%ssite-%d", s > 1 ? "," : "", s);
    cn += snprintf(config + cn, sizeof config - (size_t)cn,
                   "\n[federation]\nrounds = %d\nmin_sites = %d\nstrategy = fedavg\n"
                   "[model]\ntype = mlp:64,32\n"
                   "[privacy]\nmode = record\nnoise_multiplier = 1.1\nclip = 1.0\n"
                   "delta = 1e-5\nmax_epsilon = 8\n"
                   "[secagg]\nenabled = true\nthreshold = 0.66\nneighbors = 8\n",
                   rounds, sites / 2 > 0 ? sites / 2 : 1);
    if (!rc) rc = fl_store_record_config(st, config, (size_t)cn, err);
    for (int s = 1; s <= sites && !rc; s++) {
        char name[32];
        snprintf(name, sizeof name, "site-%d", s);
        rc = fl_store_site_join(st, s, name, 500 + 37 * s, err);
        if (!rc) rc = fl_store_event(st, "join", name, 0, "joined with 1 certificate", err);
    }
    for (int r = 0; r <= rounds && !rc; r++) {
        for (size_t i = 0; i < model_bytes; i++)
            model[i] = (uint8_t)(unif() * 256);
        int np = 0, done = 0;
        for (int s = 1; s <= sites && r > 0 && !rc; s++) {
            char name[32], detail[128];
            snprintf(name, sizeof name, "site-%d", s);
            double u = unif();
            const char *status = u < 0.04 ? "dropped" : u < 0.06 ? "refused" : "completed";
            const char *reason = NULL;
            if (!strcmp(status, "completed")) {
                eps[s] += 0.04 * (1 + (double)s / sites);
                done++;
            } else if (!strcmp(status, "dropped")) {
                reason = "no update before the deadline";
            } else {
                reason = "privacy budget: the round would exceed the cap";
            }
            /* a dropped site reports nothing; a refusing one its ledger */
            int gone = !strcmp(status, "dropped");
            parts[np++] = (fl_participation){s, status, reason, 500 + 37 * s, gone ? NAN : eps[s]};
            if (gone) {
                rc = fl_store_event(st, "dropout", name, r, "no update before the deadline", err);
                continue;
            }
            snprintf(detail, sizeof detail, "epsilon %.6g spent after this round", eps[s]);
            rc = fl_store_event(st, "privacy", name, r, detail, err);
        }
        /* as aggregator/round.c records them: one secure sum for the
         * update, one for the evaluation, now and then an abort */
        static const char *const sums[] = {"update", "evaluation"};
        for (int k = 0; k < 2 && r > 0 && !rc; k++) {
            char detail[160];
            snprintf(detail, sizeof detail,
                     "secure sum of %s: %d participants, 8 neighbours each, threshold 6, %zu "
                     "words",
                     sums[k], done, model_bytes / 4);
            rc = fl_store_event(st, "secagg", NULL, r, detail, err);
            if (!rc && unif() < 0.02)
                rc = fl_store_event(st, "secagg_abort", NULL, r,
                                    "secure sum aborted, nothing released: 5 of 8 neighbours "
                                    "left, threshold 6",
                                    err);
            else if (!rc) {
                snprintf(detail, sizeof detail, "secure sum of %s unmasked: %d inputs", sums[k],
                         done);
                rc = fl_store_event(st, "secagg", NULL, r, detail, err);
            }
        }
        if (!rc && r > 0 && (rc = fairness_text(&fair, r))) snprintf(err, FL_ERR_LEN, "fairness");
        double acc = 0.6 + 0.18 * (1 - exp(-r / 15.0)) + 0.005 * unif();
        fl_metric m[] = {{"accuracy", acc},
                         {"auc", acc + 0.04},
                         {"loss", 0.7 - 0.25 * (1 - exp(-r / 15.0))},
                         {"completed", done},
                         {"dropped", np - done},
                         {"eval_examples", 4000},
                         {"t_round_ms", 900 + 100 * unif()},
                         {"bytes_in", 20.0 * (double)model_bytes},
                         {"bytes_out", 20.0 * (double)model_bytes}};
        uint64_t counts[64] = {0};
        fl_round_record rec = {.round = r,
                               .seed = 42,
                               .model = model,
                               .model_len = model_bytes,
                               .metrics = r ? m : NULL,
                               .n_metrics = r ? (int)(sizeof m / sizeof *m) : 0,
                               .parts = parts,
                               .n_parts = np,
                               .fairness_counts = counts,
                               .n_fairness = 64,
                               .fairness_json = r ? fair : NULL};
        if (!rc) rc = fl_store_commit_round(st, &rec, err);
        if (!rc) rc = fl_store_event(st, "commit", NULL, r, "model committed", err);
        free(fair);
        fair = NULL;
    }
    if (!rc) rc = fl_store_event(st, "done", NULL, rounds, "all rounds completed", err);
    if (!rc) rc = fl_store_checkpoint(st, rounds, err);
    fl_store_close(st);
    fl_signer_free(signer);
    free(cert);
    free(model);
    free(eps);
    free(parts);
    return rc;
}

/* The reference: every row of every table read once. */
static double scan_all(const char *db_path) {
    sqlite3 *db;
    double t0 = fl_bench_now();
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) return NAN;
    sqlite3_stmt *t, *s;
    sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type = 'table'", -1, &t, NULL);
    while (sqlite3_step(t) == SQLITE_ROW) {
        char q[256];
        snprintf(q, sizeof q, "SELECT * FROM \"%s\"", (const char *)sqlite3_column_text(t, 0));
        if (sqlite3_prepare_v2(db, q, -1, &s, NULL) != SQLITE_OK) continue;
        while (sqlite3_step(s) == SQLITE_ROW)
            for (int i = 0; i < sqlite3_column_count(s); i++)
                (void)sqlite3_column_blob(s, i);
        sqlite3_finalize(s);
    }
    sqlite3_finalize(t);
    sqlite3_close(db);
    return fl_bench_now() - t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb;
    (void)flag;
    (void)f;
    return remove(path);
}

int main(int argc, char **argv) {
    int json = fl_bench_json(argc, argv), rounds = 100, sites = 20, runs = 5, keep = 0;
    long model_bytes = 16384;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sites") && i + 1 < argc)
            sites = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--model-bytes") && i + 1 < argc)
            model_bytes = atol(argv[++i]);
        else if (!strcmp(argv[i], "--keep"))
            keep = 1;
        else if (strcmp(argv[i], "--json")) {
            fprintf(stderr, "usage: report [--json] [--rounds R] [--sites S] [--model-bytes N] "
                            "[--runs K] [--keep]\n");
            return 2;
        }
    }
    if (rounds < 1 || sites < 1 || sites > 1000 || runs < 1 || runs > 100 || model_bytes < 1 ||
        model_bytes > (1L << 26)) {
        fprintf(stderr, "report: rounds >= 1, sites 1..1000, runs 1..100, model-bytes 1..64 MiB\n");
        return 2;
    }
    char dir[] = "/tmp/cohort-bench-report-XXXXXX", db[256], err[FL_ERR_LEN] = "";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(db, sizeof db, "%s/aggregator.db", dir);
    double t0 = fl_bench_now();
    int rc = make_db(dir, db, rounds, sites, (size_t)model_bytes, err);
    double t_make = fl_bench_now() - t0;
    double *tb = calloc((size_t)runs, sizeof *tb), *th = calloc((size_t)runs, sizeof *th);
    double *tt = calloc((size_t)runs, sizeof *tt), *tr = calloc((size_t)runs, sizeof *tr);
    size_t html_bytes = 0, json_bytes = 0;
    const char *audit = "?";
    cJSON *keep_doc = NULL;
    if (!rc && !(tb && th && tt && tr)) rc = FL_ENOMEM;
    for (int k = 0; k < runs && !rc; k++) {
        tr[k] = scan_all(db);
        cJSON *doc = NULL;
        char *html = NULL;
        double a = fl_bench_now();
        rc = fl_report_build(&doc, db, NULL, err);
        double b = fl_bench_now();
        if (!rc) rc = fl_report_html(&html, &html_bytes, doc, err);
        double c = fl_bench_now();
        tb[k] = b - a;
        th[k] = c - b;
        tt[k] = c - a;
        if (!rc) {
            char *t = cJSON_PrintUnformatted(doc);
            json_bytes = t ? strlen(t) : 0;
            free(t);
        }
        free(html);
        cJSON_Delete(keep_doc);
        keep_doc = doc;
    }
    if (!rc) {
        const cJSON *au = cJSON_GetObjectItemCaseSensitive(keep_doc, "audit");
        audit = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(au, "status"));
        if (!audit) audit = "?";
    }
    if (rc) {
        fprintf(stderr, "report: %s (%s)\n", err, fl_strerror(rc));
    } else {
        qsort(tb, (size_t)runs, sizeof *tb, cmp_double);
        qsort(th, (size_t)runs, sizeof *th, cmp_double);
        qsort(tt, (size_t)runs, sizeof *tt, cmp_double);
        qsort(tr, (size_t)runs, sizeof *tr, cmp_double);
        double mb = tb[runs / 2], mh = th[runs / 2], mt = tt[runs / 2], mr = tr[runs / 2];
        if (json)
            printf("{\"rounds\":%d,\"sites\":%d,\"seconds\":%.6f,\"build_seconds\":%.6f,"
                   "\"html_seconds\":%.6f,\"reference_scan_seconds\":%.6f,\"ratio_to_scan\":%.2f,"
                   "\"html_bytes\":%zu,\"json_bytes\":%zu,\"model_bytes\":%ld,\"runs\":%d,"
                   "\"audit\":\"%s\",\"goal_seconds\":2}\n",
                   rounds, sites, mt, mb, mh, mr, mt / mr, html_bytes, json_bytes, model_bytes,
                   runs, audit);
        else
            printf("report of %d rounds x %d sites (database written in %.2f s; %zu B HTML, %zu B "
                   "JSON; audit %s)\n"
                   "  fl_report_build  %8.4f s (reads everything, verifies the audit log)\n"
                   "  fl_report_html   %8.4f s\n"
                   "  total            %8.4f s  (goal < 2 s)\n"
                   "  reference scan   %8.4f s  (every row of every table once)\n"
                   "  total / scan     %8.1f x\n",
                   rounds, sites, t_make, html_bytes, json_bytes, audit, mb, mh, mt, mr, mt / mr);
    }
    cJSON_Delete(keep_doc);
    free(tb);
    free(th);
    free(tt);
    free(tr);
    if (keep)
        fprintf(stderr, "database kept: %s\n", db);
    else
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc ? 1 : 0;
}
