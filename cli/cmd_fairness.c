/* cmd_fairness.c: `cohort fairness`, the fairness and bias audit of any
 * predictions file (DESIGN.md §4, §10). A thin front over core/fairness.h in
 * its file-audit mode: the groups are the distinct values seen in the
 * --sensitive column(s) (their observed pairs for two columns, "v1/v2"), the
 * rows are counted into the same layout the federation sums, and the figures
 * come from the same fl_fairness_compute. docs/fairness.md has the formulas.
 * Every bad cell is reported as file:line:column with what was expected. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/clikit.h"
#include "cli/commands.h"
#include "core/csv.h"
#include "core/fairness.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: cohort fairness --data F.csv --label COL (--pred COL | --score COL [--threshold "
        "T])\n"
        "                       --sensitive COL[,COL] [--positive VALUE] [--min-group-count N]\n"
        "                       [--bins N] [--privileged GROUP] [--max-dp-difference X]\n"
        "                       [--max-eo-difference X] [--min-disparate-impact X] [--json]\n"
        "\n"
        "Audits the predictions in F.csv per group of the sensitive column(s); with two\n"
        "columns the groups are their observed combinations, 'v1/v2'.\n"
        "  --label      the true label: 0/1, or any values with --positive\n"
        "  --pred       predicted labels (0/1, or values compared with --positive)\n"
        "  --score      scores P(label = 1) in [0, 1]; predicted positive when >= T\n"
        "               (default 0.5); also gives AUC and calibration on N bins (default 10)\n"
        "  --positive   the label value that counts as 1 (in --label and --pred)\n"
        "  --min-group-count  smaller groups are 'insufficient data' (default %d)\n"
        "  --privileged the reference group of average_odds_difference (default: the\n"
        "               group with the highest selection rate)\n"
        "  --max-dp-difference, --max-eo-difference, --min-disparate-impact  alert\n"
        "               limits (0 = off; disparate impact defaults to 0.8)\n",
        FL_FAIRNESS_MIN_GROUP_COUNT);
}

typedef struct args {
    const char *data, *label, *pred, *score, *sensitive, *positive, *privileged;
    double threshold, max_dp, max_eo, min_di;
    long min_group, bins;
    int json, have_threshold, have_bins;
} args;

/* Parses argv into a; 0, 2 (bad usage, already reported) or -1 (--help). */
static int parse(args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->threshold = 0.5;
    a->min_group = FL_FAIRNESS_MIN_GROUP_COUNT;
    a->bins = 10;
    a->min_di = 0.8;
    static const char *const takes[] = {"--data",
                                        "--label",
                                        "--pred",
                                        "--score",
                                        "--threshold",
                                        "--sensitive",
                                        "--positive",
                                        "--min-group-count",
                                        "--bins",
                                        "--privileged",
                                        "--max-dp-difference",
                                        "--max-eo-difference",
                                        "--min-disparate-impact"};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) return -1;
        if (!strcmp(f, "--json")) {
            a->json = 1;
            continue;
        }
        int known = 0;
        for (size_t k = 0; k < sizeof takes / sizeof takes[0]; k++)
            known |= !strcmp(f, takes[k]);
        if (!known) {
            fprintf(stderr, "cohort fairness: unknown option '%s'\n", f);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "cohort fairness: %s: expected a value\n", f);
            return 2;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(f, "--data"))
            a->data = v;
        else if (!strcmp(f, "--label"))
            a->label = v;
        else if (!strcmp(f, "--pred"))
            a->pred = v;
        else if (!strcmp(f, "--score"))
            a->score = v;
        else if (!strcmp(f, "--sensitive"))
            a->sensitive = v;
        else if (!strcmp(f, "--positive"))
            a->positive = v;
        else if (!strcmp(f, "--privileged"))
            a->privileged = v;
        else if (!strcmp(f, "--threshold")) {
            rc = fl_cli_double(&a->threshold, f, v, 0.0, 1.0);
            a->have_threshold = 1;
        } else if (!strcmp(f, "--min-group-count"))
            rc = fl_cli_long(&a->min_group, f, v, 0, 1000000000L);
        else if (!strcmp(f, "--bins")) {
            rc = fl_cli_long(&a->bins, f, v, 1, FL_FAIRNESS_MAX_BINS);
            a->have_bins = 1;
        } else if (!strcmp(f, "--max-dp-difference"))
            rc = fl_cli_double(&a->max_dp, f, v, 0.0, 1.0);
        else if (!strcmp(f, "--max-eo-difference"))
            rc = fl_cli_double(&a->max_eo, f, v, 0.0, 1.0);
        else if (!strcmp(f, "--min-disparate-impact"))
            rc = fl_cli_double(&a->min_di, f, v, 0.0, 1.0);
        if (rc) return rc;
    }
    const char *missing = !a->data        ? "--data"
                          : !a->label     ? "--label"
                          : !a->sensitive ? "--sensitive"
                                          : NULL;
    if (missing) {
        fprintf(stderr, "cohort fairness: %s is required (see 'cohort fairness --help')\n",
                missing);
        return 2;
    }
    if (!!a->pred == !!a->score) {
        fprintf(stderr,
                "cohort fairness: expected exactly one of --pred (predicted labels) and "
                "--score (scores in [0, 1]), got %s\n",
                a->pred ? "both" : "neither");
        return 2;
    }
    if (a->pred && (a->have_threshold || a->have_bins)) {
        fprintf(stderr, "cohort fairness: %s applies to --score, not to --pred\n",
                a->have_threshold ? "--threshold" : "--bins");
        return 2;
    }
    return 0;
}

/* ------------------------------ reading cells ------------------------------ */

static void header_list(char *buf, size_t cap, const fl_csv *csv) {
    size_t used = 0;
    buf[0] = '\0';
    for (int c = 0; c < csv->n_cols && used < cap; c++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", c ? ", " : "", csv->header[c]);
}

/* The column named name for flag, or -1 after reporting it. */
static int column(const fl_csv *csv, const char *name, const char *flag) {
    int c = fl_csv_column(csv, name);
    if (c < 0) {
        char cols[1024];
        header_list(cols, sizeof cols, csv);
        fprintf(stderr, "cohort fairness: %s:1: no column '%s' (%s); the header has: %s\n",
                csv->path, name, flag, cols);
    }
    return c;
}

static void bad_cell(const fl_csv *csv, int64_t row, int col, const char *flag,
                     const char *expected) {
    const char *cell = fl_csv_cell(csv, row, col);
    fprintf(stderr, "cohort fairness: %s:%ld:%d: column '%s' (%s): expected %s, got %s%s%s\n",
            csv->path, (long)csv->line[row], col + 1, csv->header[col], flag, expected,
            cell[0] ? "'" : "", cell[0] ? cell : "an empty cell", cell[0] ? "'" : "");
}

/* A 0/1 cell, or with --positive: the positive value 1, any other value 0. */
static int binary_cells(int32_t *out, const fl_csv *csv, int col, const char *flag,
                        const char *positive) {
    for (int64_t i = 0; i < csv->n_rows; i++) {
        const char *s = fl_csv_cell(csv, i, col);
        if (positive) {
            if (!s[0]) {
                bad_cell(csv, i, col, flag, "a label value");
                return 2;
            }
            out[i] = !strcmp(s, positive);
        } else if (!strcmp(s, "0") || !strcmp(s, "1")) {
            out[i] = s[0] == '1';
        } else {
            bad_cell(csv, i, col, flag, "0 or 1 (or name the positive value with --positive)");
            return 2;
        }
    }
    return 0;
}

static int score_cells(float *out, const fl_csv *csv, int col) {
    for (int64_t i = 0; i < csv->n_rows; i++) {
        const char *s = fl_csv_cell(csv, i, col);
        char *end;
        double v = strtod(s, &end);
        while (*end == ' ' || *end == '\t')
            end++;
        if (end == s || *end || !(v >= 0.0 && v <= 1.0)) {
            bad_cell(csv, i, col, "--score", "a score in [0, 1]");
            return 2;
        }
        out[i] = (float)v;
    }
    return 0;
}

/* ---------------------------------- output --------------------------------- */

static void cell(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsNumber(v))
        printf(" %9.4f", v->valuedouble);
    else
        printf(" %9s", "-");
}

static void row_of(const char *name, const cJSON *g) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(g, "count");
    printf("%-24.24s %8.0f", name, cJSON_IsNumber(n) ? n->valuedouble : 0.0);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(g, "status");
    if (cJSON_IsString(st)) {
        printf("  %s\n", st->valuestring);
        return;
    }
    static const char *const k[] = {"selection_rate", "tpr",      "fpr", "fnr",
                                    "precision",      "accuracy", "auc"};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        cell(g, k[i]);
    printf("\n");
}

static void print_table(const cJSON *a, const args *ar) {
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(a, "groups");
    const cJSON *n_rows = cJSON_GetObjectItemCaseSensitive(a, "n_rows");
    printf("fairness audit of %s: %.0f rows, groups of '%s' (%d), ", ar->data, n_rows->valuedouble,
           cJSON_GetObjectItemCaseSensitive(a, "attribute")->valuestring,
           cJSON_GetArraySize(groups));
    if (ar->score)
        printf("predicted positive when %s >= %g\n\n", ar->score, ar->threshold);
    else
        printf("predictions from '%s'\n\n", ar->pred);
    printf("%-24s %8s %9s %9s %9s %9s %9s %9s %9s\n", "group", "count", "selected", "tpr", "fpr",
           "fnr", "precision", "accuracy", "auc");
    const cJSON *g;
    cJSON_ArrayForEach(g, groups) row_of(g->string, g);
    row_of("(overall)", cJSON_GetObjectItemCaseSensitive(a, "overall"));
    const cJSON *ung = cJSON_GetObjectItemCaseSensitive(a, "n_ungrouped");
    if (cJSON_IsNumber(ung) && ung->valuedouble > 0)
        printf("(%.0f rows with an empty sensitive cell are in no group)\n", ung->valuedouble);

    const cJSON *d = cJSON_GetObjectItemCaseSensitive(a, "disparities");
    if (!cJSON_IsObject(d)) {
        const cJSON *why = cJSON_GetObjectItemCaseSensitive(a, "reason");
        printf("\ndisparities: none (%s)\n",
               cJSON_IsString(why) ? why->valuestring : "not enough groups");
    } else {
        printf("\ndisparities (%d groups compared; privileged group '%s'):\n",
               (int)cJSON_GetObjectItemCaseSensitive(d, "groups_compared")->valuedouble,
               cJSON_GetObjectItemCaseSensitive(d, "privileged_group")->valuestring);
        const cJSON *v;
        cJSON_ArrayForEach(v, d) {
            if (!strcmp(v->string, "groups_compared") || !strcmp(v->string, "gei_alpha")) continue;
            if (cJSON_IsNumber(v))
                printf("  %-40s %.4f\n", v->string, v->valuedouble);
            else if (cJSON_IsBool(v))
                printf("  %-40s %s\n", v->string, cJSON_IsTrue(v) ? "yes" : "no");
            else if (cJSON_IsNull(v))
                printf("  %-40s -\n", v->string);
        }
    }
    const cJSON *alerts = cJSON_GetObjectItemCaseSensitive(a, "alerts");
    if (!cJSON_GetArraySize(alerts)) {
        printf("\nalerts: none\n");
        return;
    }
    printf("\nalerts:\n");
    const cJSON *al;
    cJSON_ArrayForEach(al, alerts) {
        printf("  %s = %.4f (limit %.4f)\n",
               cJSON_GetObjectItemCaseSensitive(al, "metric")->valuestring,
               cJSON_GetObjectItemCaseSensitive(al, "value")->valuedouble,
               cJSON_GetObjectItemCaseSensitive(al, "limit")->valuedouble);
    }
}

/* ---------------------------------- command -------------------------------- */

int cmd_fairness(int argc, char **argv) {
    args a;
    int rc = parse(&a, argc, argv);
    if (rc == -1) {
        usage(stdout);
        return 0;
    }
    if (rc) return rc;

    fl_csv csv = {0};
    fl_fairness_layout L = {0};
    int32_t *y = NULL, *pred = NULL, *groups = NULL;
    float *score = NULL;
    uint64_t *counts = NULL;
    const char **cells = NULL;
    char *sens = NULL;
    cJSON *root = NULL, *out = NULL;
    char err[FL_ERR_LEN] = "";
    int ret = 2;

    int st = fl_csv_load(&csv, a.data, err);
    if (st) {
        fprintf(stderr, "cohort fairness: %s\n", err[0] ? err : fl_strerror(st));
        ret = fl_exit_code(st);
        goto cleanup;
    }
    /* --sensitive A[,B] */
    if (!(sens = strdup(a.sensitive))) goto oom;
    const char *names[2];
    int scol[2], k = 0;
    for (char *save = NULL, *t = strtok_r(sens, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        if (k == 2 || !*t) {
            fl_cli_bad("--sensitive", a.sensitive, "one or two column names, 'A' or 'A,B'");
            goto cleanup;
        }
        names[k++] = t;
    }
    if (!k) {
        fl_cli_bad("--sensitive", a.sensitive, "one or two column names, 'A' or 'A,B'");
        goto cleanup;
    }
    if (k == 2 && !strcmp(names[0], names[1])) {
        fl_cli_bad("--sensitive", a.sensitive, "two different columns");
        goto cleanup;
    }
    int lcol = column(&csv, a.label, "--label");
    if (lcol < 0) goto cleanup;
    int pcol = column(&csv, a.pred ? a.pred : a.score, a.pred ? "--pred" : "--score");
    if (pcol < 0) goto cleanup;
    for (int i = 0; i < k; i++)
        if ((scol[i] = column(&csv, names[i], "--sensitive")) < 0) goto cleanup;

    int64_t n = csv.n_rows;
    if (!(y = malloc((size_t)n * sizeof *y)) || !(score = malloc((size_t)n * sizeof *score)) ||
        !(groups = malloc((size_t)n * sizeof *groups)) ||
        !(cells = malloc((size_t)n * (size_t)k * sizeof *cells)))
        goto oom;
    if (binary_cells(y, &csv, lcol, "--label", a.positive)) goto cleanup;
    if (a.pred) {
        if (!(pred = malloc((size_t)n * sizeof *pred))) goto oom;
        if (binary_cells(pred, &csv, pcol, "--pred", a.positive)) goto cleanup;
        /* A prediction is a score of exactly 0 or 1 at threshold 0.5. */
        for (int64_t i = 0; i < n; i++)
            score[i] = (float)pred[i];
    } else if (score_cells(score, &csv, pcol)) {
        goto cleanup;
    }
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < k; c++)
            cells[i * k + c] = fl_csv_cell(&csv, i, scol[c]);
    int n_bins = a.pred ? 0 : (int)a.bins;
    if ((st = fl_fairness_layout_observed(&L, groups, names, cells, k, n, n_bins, err))) {
        fprintf(stderr, "cohort fairness: %s: %s\n", csv.path, err[0] ? err : fl_strerror(st));
        ret = fl_exit_code(st);
        goto cleanup;
    }
    int64_t ungrouped = 0;
    for (int64_t i = 0; i < n; i++)
        ungrouped += groups[i] < 0;
    if (!(counts = calloc((size_t)L.n_counts, sizeof *counts))) goto oom;
    double thr = a.pred ? 0.5 : a.threshold;
    if ((st = fl_fairness_count(counts, &L, groups, 1, y, score, n, thr))) {
        fprintf(stderr, "cohort fairness: counting failed: %s\n", fl_strerror(st));
        ret = 1;
        goto cleanup;
    }

    fl_fairness_options opt;
    fl_fairness_options_init(&opt);
    opt.threshold = a.pred ? NAN : a.threshold;
    opt.min_group_count = a.min_group;
    opt.max_demographic_parity_difference = a.max_dp;
    opt.max_equalized_odds_difference = a.max_eo;
    opt.min_disparate_impact = a.min_di;
    const char *pattr[1] = {L.audits[0].name}, *pgrp[1] = {a.privileged};
    if (a.privileged) {
        opt.privileged_attr = pattr;
        opt.privileged = pgrp;
        opt.n_privileged = 1;
    }
    if ((st = fl_fairness_compute(&root, &L, counts, &opt, err))) {
        fprintf(stderr, "cohort fairness: %s\n", err[0] ? err : fl_strerror(st));
        ret = fl_exit_code(st);
        goto cleanup;
    }
    /* One audit object at the top level: the attribute's own object plus the
     * overall figures and the run's parameters. */
    out = cJSON_DetachItemFromArray(cJSON_GetObjectItemCaseSensitive(root, "attributes"), 0);
    if (!out) goto oom;
    cJSON_AddItemToObject(out, "overall", cJSON_DetachItemFromObject(root, "overall"));
    int ok = cJSON_AddNumberToObject(out, "n_rows", (double)n) &&
             cJSON_AddNumberToObject(out, "n_ungrouped", (double)ungrouped) &&
             cJSON_AddStringToObject(out, "data", a.data) &&
             (a.pred ? cJSON_AddNullToObject(out, "threshold")
                     : cJSON_AddNumberToObject(out, "threshold", a.threshold)) &&
             cJSON_AddNumberToObject(out, "min_group_count", (double)a.min_group) &&
             cJSON_AddNumberToObject(out, "n_bins", n_bins);
    if (!ok) goto oom;
    if (a.json) {
        ret = fl_cli_print_json(out) ? 1 : 0;
        out = NULL;
    } else {
        print_table(out, &a);
        ret = 0;
    }
    goto cleanup;
oom:
    fprintf(stderr, "cohort fairness: out of memory\n");
    ret = 1;
cleanup:
    cJSON_Delete(out);
    cJSON_Delete(root);
    fl_fairness_layout_free(&L);
    fl_csv_free(&csv);
    free(y);
    free(pred);
    free(score);
    free(groups);
    free(cells);
    free(counts);
    free(sens);
    return ret;
}
