/* fairness.c: the fairness and bias audit of DESIGN.md §10 (see fairness.h
 * for the count layout, docs/fairness.md for every formula and its source).
 * Sites only add integers into a fixed layout; everything with a division in
 * it happens in fl_fairness_compute, on sums, so the federation's figures are
 * exactly those of one site holding every row. */
#include "fairness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ============================== small helpers ============================== */

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* "a" + sep + "b" in a fresh string. */
static char *join2(const char *a, const char *sep, const char *b) {
    size_t na = strlen(a), ns = strlen(sep), nb = strlen(b);
    char *d = malloc(na + ns + nb + 1);
    if (!d) return NULL;
    memcpy(d, a, na);
    memcpy(d + na, sep, ns);
    memcpy(d + na + ns, b, nb + 1);
    return d;
}

/* FNV-1a 64 (Fowler, Noll, Vo; draft-eastlake-fnv): the fingerprint only has
 * to catch two parties configured differently, not a forger (the layout comes
 * from the signed configuration, not from a peer). */
static void fnv_bytes(uint64_t *h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 0x100000001b3ULL;
    }
}

/* Integers as 8 little-endian bytes and strings length-first, so the
 * description cannot be read two ways ("ab","c" vs "a","bc"). */
static void fnv_u64(uint64_t *h, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    fnv_bytes(h, b, 8);
}

static void fnv_str(uint64_t *h, const char *s) {
    size_t n = strlen(s);
    fnv_u64(h, n);
    fnv_bytes(h, s, n);
}

static void free_strv(char **v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ================================== layout ================================= */

void fl_fairness_layout_free(fl_fairness_layout *L) {
    if (!L) return;
    free_strv(L->attr_names, L->n_attr);
    free(L->attr_groups);
    for (int a = 0; a < L->n_audits; a++) {
        free(L->audits[a].name);
        free_strv(L->audits[a].labels, L->audits[a].n_groups);
    }
    free(L->audits);
    memset(L, 0, sizeof *L);
}

/* Offsets, total length (bounded), fingerprint. */
static int layout_finish(fl_fairness_layout *L, char err[FL_ERR_LEN]) {
    L->stride = 4 + 2 * (int64_t)L->n_bins;
    int64_t off = L->stride; /* block 0 is the overall block */
    for (int a = 0; a < L->n_audits; a++) {
        L->audits[a].offset = off;
        off += (int64_t)L->audits[a].n_groups * L->stride;
        if (off > FL_FAIRNESS_MAX_COUNTS)
            return fl_seterr(err, FL_EINVAL,
                             "fairness layout: %d bins and the groups up to audit '%s' need more "
                             "than %d counts (fewer bins or intersections)",
                             L->n_bins, L->audits[a].name, FL_FAIRNESS_MAX_COUNTS);
    }
    L->n_counts = off;
    uint64_t h = 0xcbf29ce484222325ULL;
    fnv_str(&h, "cohort.fairness.v1");
    fnv_u64(&h, (uint64_t)L->n_bins);
    fnv_u64(&h, (uint64_t)L->n_attr);
    for (int i = 0; i < L->n_attr; i++) {
        fnv_str(&h, L->attr_names[i]);
        fnv_u64(&h, (uint64_t)L->attr_groups[i]);
    }
    fnv_u64(&h, (uint64_t)L->n_audits);
    for (int a = 0; a < L->n_audits; a++) {
        const fl_fairness_audit *au = &L->audits[a];
        fnv_str(&h, au->name);
        fnv_u64(&h, (uint64_t)(int64_t)au->attr[0]);
        fnv_u64(&h, (uint64_t)(int64_t)au->attr[1]);
        fnv_u64(&h, (uint64_t)au->n_groups);
        for (int g = 0; g < au->n_groups; g++)
            fnv_str(&h, au->labels[g]);
    }
    L->fingerprint = h;
    snprintf(L->fingerprint_hex, sizeof L->fingerprint_hex, "%016llx", (unsigned long long)h);
    return FL_OK;
}

static int check_bins(int n_bins, char err[FL_ERR_LEN]) {
    if (n_bins < 0 || n_bins > FL_FAIRNESS_MAX_BINS)
        return fl_seterr(err, FL_EINVAL, "fairness layout: expected 0..%d score bins, got %d",
                         FL_FAIRNESS_MAX_BINS, n_bins);
    return FL_OK;
}

static int find_attr(const fl_schema *s, const char *name) {
    for (int i = 0; i < s->sensitive.n; i++)
        if (!strcmp(s->sensitive.items[i], name)) return i;
    return -1;
}

/* Copies [p, q) trimmed of blanks into a fresh string. */
static char *trimmed(const char *p, const char *q) {
    while (p < q && (*p == ' ' || *p == '\t'))
        p++;
    while (q > p && (q[-1] == ' ' || q[-1] == '\t'))
        q--;
    char *d = malloc((size_t)(q - p) + 1);
    if (!d) return NULL;
    memcpy(d, p, (size_t)(q - p));
    d[q - p] = '\0';
    return d;
}

static void sensitive_list(char *buf, size_t cap, const fl_schema *s) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < s->sensitive.n && used < cap; i++)
        used +=
            (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", s->sensitive.items[i]);
    if (!s->sensitive.n) snprintf(buf, cap, "none");
}

/* Parses one "A*B" item into attribute indices. */
static int parse_intersection(int ab[2], const fl_schema *s, const char *item, const char *all,
                              char err[FL_ERR_LEN]) {
    const char *star = strchr(item, '*');
    if (!star || strchr(star + 1, '*'))
        return fl_seterr(err, FL_EINVAL,
                         "fairness intersections '%s': expected 'A*B' (two sensitive attributes), "
                         "got '%s'",
                         all, item);
    char *part[2] = {trimmed(item, star), trimmed(star + 1, star + strlen(star))};
    int rc = FL_OK;
    if (!part[0] || !part[1]) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    for (int k = 0; k < 2; k++) {
        if (!part[k][0]) {
            rc = fl_seterr(err, FL_EINVAL,
                           "fairness intersections '%s': expected 'A*B' (two sensitive "
                           "attributes), got '%s'",
                           all, item);
            goto cleanup;
        }
        if ((ab[k] = find_attr(s, part[k])) < 0) {
            char list[256];
            sensitive_list(list, sizeof list, s);
            rc = fl_seterr(err, FL_EINVAL,
                           "fairness intersection '%s': '%s' is not a sensitive attribute of %s "
                           "(sensitive: %s)",
                           item, part[k], s->path ? s->path : "the schema", list);
            goto cleanup;
        }
    }
    if (ab[0] == ab[1])
        rc = fl_seterr(err, FL_EINVAL,
                       "fairness intersection '%s': expected two different attributes", item);
cleanup:
    free(part[0]);
    free(part[1]);
    return rc;
}

/* Parses "A*B[,C*D]" into *pairs (malloc'd, 2 per item). */
static int parse_intersections(int **pairs, int *n_pairs, const fl_schema *s, const char *spec,
                               char err[FL_ERR_LEN]) {
    *pairs = NULL;
    *n_pairs = 0;
    if (!spec) return FL_OK;
    const char *p = spec;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p) return FL_OK;
    int cap = 1;
    for (const char *c = spec; *c; c++)
        cap += *c == ',';
    int *v = malloc((size_t)cap * 2 * sizeof *v);
    int n = 0, rc = FL_OK;
    char *item = NULL;
    if (!v) return FL_ENOMEM;
    for (const char *start = spec;;) {
        const char *end = strchr(start, ',');
        if (!end) end = start + strlen(start);
        if (!(item = trimmed(start, end))) {
            rc = FL_ENOMEM;
            goto cleanup;
        }
        if ((rc = parse_intersection(&v[2 * n], s, item, spec, err))) goto cleanup;
        for (int k = 0; k < n; k++) {
            int same = v[2 * k] == v[2 * n] && v[2 * k + 1] == v[2 * n + 1];
            int swapped = v[2 * k] == v[2 * n + 1] && v[2 * k + 1] == v[2 * n];
            if (same || swapped) {
                rc = fl_seterr(err, FL_EINVAL, "fairness intersections '%s': '%s' is listed twice",
                               spec, item);
                goto cleanup;
            }
        }
        n++;
        free(item);
        item = NULL;
        if (!*end) break;
        start = end + 1;
    }
    *pairs = v;
    *n_pairs = n;
    v = NULL;
cleanup:
    free(item);
    free(v);
    return rc;
}

/* Labels of an intersection audit: the cartesian product, first attribute
 * outer, "g1/g2". */
static int product_labels(fl_fairness_audit *au, char *const *n1, int c1, char *const *n2, int c2) {
    if (!(au->labels = calloc((size_t)c1 * (size_t)c2, sizeof *au->labels))) return FL_ENOMEM;
    au->n_groups = c1 * c2;
    for (int i = 0; i < c1; i++)
        for (int j = 0; j < c2; j++)
            if (!(au->labels[i * c2 + j] = join2(n1[i], "/", n2[j]))) return FL_ENOMEM;
    return FL_OK;
}

int fl_fairness_layout_init(fl_fairness_layout *L, const fl_schema *s, const char *intersections,
                            int n_bins, char err[FL_ERR_LEN]) {
    memset(L, 0, sizeof *L);
    int *pairs = NULL, n_pairs = 0, rc;
    const fl_group_def **defs = NULL;
    if ((rc = check_bins(n_bins, err))) return rc;
    L->n_bins = n_bins;
    int na = s->sensitive.n;
    if (na && !(defs = calloc((size_t)na, sizeof *defs))) return FL_ENOMEM;
    for (int i = 0; i < na; i++) {
        if (!(defs[i] = fl_schema_group(s, s->sensitive.items[i]))) {
            rc = fl_seterr(err, FL_EINVAL,
                           "%s:%d: sensitive attribute '%s' has no [groups] entry: the fairness "
                           "audit needs a fixed group list, so that no site reveals which groups "
                           "it holds",
                           s->path ? s->path : "schema", s->sensitive.line, s->sensitive.items[i]);
            goto cleanup;
        }
    }
    if ((rc = parse_intersections(&pairs, &n_pairs, s, intersections, err))) goto cleanup;
    rc = FL_ENOMEM;
    if (na && (!(L->attr_names = calloc((size_t)na, sizeof *L->attr_names)) ||
               !(L->attr_groups = calloc((size_t)na, sizeof *L->attr_groups))))
        goto cleanup;
    if (na + n_pairs && !(L->audits = calloc((size_t)(na + n_pairs), sizeof *L->audits)))
        goto cleanup;
    for (int i = 0; i < na; i++) {
        L->n_attr++;
        if (!(L->attr_names[i] = xstrdup(s->sensitive.items[i]))) goto cleanup;
        L->attr_groups[i] = defs[i]->n_groups;
    }
    for (int i = 0; i < na; i++) {
        fl_fairness_audit *au = &L->audits[L->n_audits++];
        au->attr[0] = i;
        au->attr[1] = -1;
        if (!(au->name = xstrdup(s->sensitive.items[i]))) goto cleanup;
        if (!(au->labels = calloc((size_t)defs[i]->n_groups, sizeof *au->labels))) goto cleanup;
        au->n_groups = defs[i]->n_groups;
        for (int g = 0; g < au->n_groups; g++)
            if (!(au->labels[g] = xstrdup(defs[i]->names[g]))) goto cleanup;
    }
    for (int k = 0; k < n_pairs; k++) {
        int a = pairs[2 * k], b = pairs[2 * k + 1];
        fl_fairness_audit *au = &L->audits[L->n_audits++];
        au->attr[0] = a;
        au->attr[1] = b;
        if (!(au->name = join2(s->sensitive.items[a], "*", s->sensitive.items[b]))) goto cleanup;
        if ((int64_t)defs[a]->n_groups * defs[b]->n_groups > FL_FAIRNESS_MAX_COUNTS) {
            rc = fl_seterr(err, FL_EINVAL, "fairness intersection '%s': %d x %d groups is too many",
                           au->name, defs[a]->n_groups, defs[b]->n_groups);
            goto cleanup;
        }
        if (product_labels(au, defs[a]->names, defs[a]->n_groups, defs[b]->names,
                           defs[b]->n_groups))
            goto cleanup;
    }
    rc = layout_finish(L, err);
cleanup:
    if (rc) fl_fairness_layout_free(L);
    free(pairs);
    free(defs);
    return rc;
}

/* ------------------------------ file-audit mode ---------------------------- */

typedef struct obs_row {
    const char *const *cells; /* this row's n cells */
    int n;
    int64_t row;
} obs_row;

static int cmp_obs(const void *pa, const void *pb) {
    const obs_row *a = pa, *b = pb;
    for (int k = 0; k < a->n; k++) {
        int c = strcmp(a->cells[k], b->cells[k]);
        if (c) return c;
    }
    return (a->row > b->row) - (a->row < b->row); /* stable: row order within a group */
}

static int same_obs(const obs_row *a, const obs_row *b) {
    for (int k = 0; k < a->n; k++)
        if (strcmp(a->cells[k], b->cells[k])) return 0;
    return 1;
}

int fl_fairness_layout_observed(fl_fairness_layout *L, int32_t *groups, const char *const *names,
                                const char *const *cells, int n_cols, int64_t n, int n_bins,
                                char err[FL_ERR_LEN]) {
    memset(L, 0, sizeof *L);
    obs_row *rows = NULL;
    int rc;
    if ((rc = check_bins(n_bins, err))) return rc;
    if (n_cols < 1 || n_cols > 2 || n < 0)
        return fl_seterr(err, FL_EINVAL, "fairness: expected one or two sensitive columns, got %d",
                         n_cols);
    L->n_bins = n_bins;
    int64_t m = 0;
    if (n && !(rows = malloc((size_t)n * sizeof *rows))) return FL_ENOMEM;
    for (int64_t i = 0; i < n; i++) {
        const char *const *c = cells + i * n_cols;
        int ok = 1;
        for (int k = 0; k < n_cols; k++)
            ok &= c[k] && c[k][0];
        groups[i] = -1;
        if (ok) rows[m++] = (obs_row){c, n_cols, i};
    }
    if (m) qsort(rows, (size_t)m, sizeof *rows, cmp_obs);
    int ng = 0;
    for (int64_t i = 0; i < m; i++) {
        if (i && !same_obs(&rows[i - 1], &rows[i])) ng++;
        if (ng >= FL_FAIRNESS_MAX_OBSERVED) {
            rc = fl_seterr(err, FL_EINVAL,
                           "fairness: column%s '%s%s%s' ha%s more than %d distinct values; group "
                           "or bin them first (each distinct value is a group)",
                           n_cols > 1 ? "s" : "", names[0], n_cols > 1 ? "', '" : "",
                           n_cols > 1 ? names[1] : "", n_cols > 1 ? "ve" : "s",
                           FL_FAIRNESS_MAX_OBSERVED);
            goto cleanup;
        }
        groups[rows[i].row] = ng;
    }
    if (m) ng++;
    rc = FL_ENOMEM;
    if (!(L->attr_names = calloc(1, sizeof *L->attr_names)) ||
        !(L->attr_groups = calloc(1, sizeof *L->attr_groups)) ||
        !(L->audits = calloc(1, sizeof *L->audits)))
        goto cleanup;
    L->n_attr = 1;
    L->attr_groups[0] = ng;
    L->attr_names[0] = n_cols > 1 ? join2(names[0], "*", names[1]) : xstrdup(names[0]);
    if (!L->attr_names[0]) goto cleanup;
    fl_fairness_audit *au = &L->audits[L->n_audits++];
    au->attr[0] = 0;
    au->attr[1] = -1;
    if (!(au->name = xstrdup(L->attr_names[0]))) goto cleanup;
    if (ng && !(au->labels = calloc((size_t)ng, sizeof *au->labels))) goto cleanup;
    au->n_groups = ng;
    for (int64_t i = 0, g = 0; i < m; i++) {
        if (i && same_obs(&rows[i - 1], &rows[i])) continue;
        const char *const *c = rows[i].cells;
        if (!(au->labels[g++] = n_cols > 1 ? join2(c[0], "/", c[1]) : xstrdup(c[0]))) goto cleanup;
    }
    rc = layout_finish(L, err);
cleanup:
    if (rc) fl_fairness_layout_free(L);
    free(rows);
    return rc;
}

/* ================================= accessors =============================== */

const char *fl_fairness_audit_name(const fl_fairness_layout *L, int audit) {
    if (!L || audit < 0 || audit >= L->n_audits) return NULL;
    return L->audits[audit].name;
}

int fl_fairness_n_groups(const fl_fairness_layout *L, int audit) {
    if (!L || audit < 0 || audit >= L->n_audits) return 0;
    return L->audits[audit].n_groups;
}

const char *fl_fairness_group_label(const fl_fairness_layout *L, int audit, int group) {
    if (!L || audit < 0 || audit >= L->n_audits) return NULL;
    if (group < 0 || group >= L->audits[audit].n_groups) return NULL;
    return L->audits[audit].labels[group];
}

int64_t fl_fairness_block(const fl_fairness_layout *L, int audit, int group) {
    if (!L) return -1;
    if (audit == -1) return 0;
    if (audit < 0 || audit >= L->n_audits) return -1;
    if (group < 0 || group >= L->audits[audit].n_groups) return -1;
    return L->audits[audit].offset + (int64_t)group * L->stride;
}

/* ================================ site side ================================ */

/* The group of row i in audit au, or -1. Indices are already checked. */
static int row_group(const fl_fairness_layout *L, const fl_fairness_audit *au,
                     const int32_t *row_groups) {
    int32_t ga = row_groups[au->attr[0]];
    if (ga < 0) return -1;
    if (au->attr[1] < 0) return ga;
    int32_t gb = row_groups[au->attr[1]];
    if (gb < 0) return -1;
    return ga * L->attr_groups[au->attr[1]] + gb;
}

static void add_row(uint64_t *blk, int n_bins, int y, int pred, int bin) {
    blk[y ? (pred ? FL_FAIR_TP : FL_FAIR_FN) : (pred ? FL_FAIR_FP : FL_FAIR_TN)]++;
    if (n_bins) blk[FL_FAIR_HIST + (y ? n_bins : 0) + bin]++;
}

int fl_fairness_count(uint64_t *counts, const fl_fairness_layout *L, const int32_t *groups,
                      int n_attr, const int32_t *y, const float *score, int64_t n,
                      double threshold) {
    if (!counts || !L || n < 0 || n_attr != L->n_attr || !isfinite(threshold)) return FL_EINVAL;
    if (n && (!y || !score || (n_attr && !groups))) return FL_EINVAL;
    /* Validate everything first, so a bad row leaves the sum untouched: a
     * half-added batch would be silently wrong in the federation's total. */
    for (int64_t i = 0; i < n; i++) {
        if (y[i] != 0 && y[i] != 1) return FL_EINVAL;
        if (!(score[i] >= 0.0f && score[i] <= 1.0f)) return FL_EINVAL; /* NaN fails too */
        for (int a = 0; a < n_attr; a++)
            if (groups[i * n_attr + a] >= L->attr_groups[a]) return FL_EINVAL;
    }
    int B = L->n_bins;
    for (int64_t i = 0; i < n; i++) {
        int pred = (double)score[i] >= threshold;
        int bin = 0;
        if (B) {
            bin = (int)((double)score[i] * B);
            if (bin >= B) bin = B - 1;
        }
        add_row(counts, B, y[i], pred, bin);
        for (int a = 0; a < L->n_audits; a++) {
            const fl_fairness_audit *au = &L->audits[a];
            int g = row_group(L, au, groups ? groups + i * n_attr : NULL);
            if (g >= 0) add_row(counts + au->offset + (int64_t)g * L->stride, B, y[i], pred, bin);
        }
    }
    return FL_OK;
}

/* ============================== aggregator side ============================ */

void fl_fairness_options_init(fl_fairness_options *opt) {
    memset(opt, 0, sizeof *opt);
    opt->threshold = 0.5;
    opt->min_group_count = FL_FAIRNESS_MIN_GROUP_COUNT;
    opt->gei_alpha = 2.0;
    opt->min_disparate_impact = 0.8;
}

/* One block's figures; NaN where a rate is 0/0. */
typedef struct gstat {
    uint64_t tp, fp, tn, fn, n;
    const uint64_t *h0, *h1; /* (n_bins) each; NULL when n_bins is 0 */
    double sel, tpr, fpr, fnr, prec, acc, auc;
} gstat;

static double ratio_u(uint64_t num, uint64_t den) {
    return den ? (double)num / (double)den : NAN;
}

/* ROC AUC of the binned scores: the trapezoid rule on the ROC curve through
 * the bin edges, which is the Mann-Whitney statistic with every pair inside
 * one bin counted one half. NaN without both classes. */
static double hist_auc(const uint64_t *h0, const uint64_t *h1, int B) {
    if (!B) return NAN;
    double wins = 0.0, neg_below = 0.0, P = 0.0, N = 0.0;
    for (int j = 0; j < B; j++) {
        wins += (double)h1[j] * (neg_below + 0.5 * (double)h0[j]);
        neg_below += (double)h0[j];
        P += (double)h1[j];
        N += (double)h0[j];
    }
    return P > 0 && N > 0 ? wins / (P * N) : NAN;
}

static int load_block(gstat *g, const fl_fairness_layout *L, const uint64_t *blk, const char *what,
                      const char *label, char err[FL_ERR_LEN]) {
    int B = L->n_bins;
    g->tp = blk[FL_FAIR_TP];
    g->fp = blk[FL_FAIR_FP];
    g->tn = blk[FL_FAIR_TN];
    g->fn = blk[FL_FAIR_FN];
    g->n = g->tp + g->fp + g->tn + g->fn;
    if (g->n < g->tp) /* wrapped: no real sum gets near 2^64 */
        return fl_seterr(err, FL_EINVAL, "fairness counts: %s '%s': confusion counts overflow",
                         what, label);
    g->h0 = B ? blk + FL_FAIR_HIST : NULL;
    g->h1 = B ? blk + FL_FAIR_HIST + B : NULL;
    if (B) {
        uint64_t s0 = 0, s1 = 0;
        for (int j = 0; j < B; j++) {
            s0 += g->h0[j];
            s1 += g->h1[j];
        }
        if (s0 != g->tn + g->fp || s1 != g->tp + g->fn)
            return fl_seterr(err, FL_EINVAL,
                             "fairness counts: %s '%s': histograms hold %llu negatives and %llu "
                             "positives, the confusion counts %llu and %llu (a broken sum?)",
                             what, label, (unsigned long long)s0, (unsigned long long)s1,
                             (unsigned long long)(g->tn + g->fp),
                             (unsigned long long)(g->tp + g->fn));
    }
    g->sel = ratio_u(g->tp + g->fp, g->n);
    g->tpr = ratio_u(g->tp, g->tp + g->fn);
    g->fpr = ratio_u(g->fp, g->fp + g->tn);
    g->fnr = ratio_u(g->fn, g->tp + g->fn);
    g->prec = ratio_u(g->tp, g->tp + g->fp);
    g->acc = ratio_u(g->tp + g->tn, g->n);
    g->auc = hist_auc(g->h0, g->h1, B);
    return FL_OK;
}

/* ---------------------------- JSON building -------------------------------- */

/* cJSON_Add* return NULL on allocation failure and leave the key out; one
 * flag collects that so the caller checks once. */
typedef struct jw {
    int oom;
} jw;

static void jnum(jw *w, cJSON *o, const char *k, double v) {
    cJSON *r = isfinite(v) ? cJSON_AddNumberToObject(o, k, v) : cJSON_AddNullToObject(o, k);
    if (!r) w->oom = 1;
}

static void jstr(jw *w, cJSON *o, const char *k, const char *v) {
    if (!cJSON_AddStringToObject(o, k, v)) w->oom = 1;
}

static void jbool_or_null(jw *w, cJSON *o, const char *k, int v /* -1: null */) {
    cJSON *r = v < 0 ? cJSON_AddNullToObject(o, k) : cJSON_AddBoolToObject(o, k, v);
    if (!r) w->oom = 1;
}

static cJSON *jchild(jw *w, cJSON *o, const char *k, int array) {
    cJSON *r = array ? cJSON_AddArrayToObject(o, k) : cJSON_AddObjectToObject(o, k);
    if (!r) w->oom = 1;
    return r;
}

static void group_json(jw *w, cJSON *o, const gstat *g, int B, int with_calibration) {
    jnum(w, o, "count", (double)g->n);
    jnum(w, o, "selection_rate", g->sel);
    jnum(w, o, "tpr", g->tpr);
    jnum(w, o, "fpr", g->fpr);
    jnum(w, o, "fnr", g->fnr);
    jnum(w, o, "precision", g->prec);
    jnum(w, o, "accuracy", g->acc);
    jnum(w, o, "auc", g->auc);
    if (!with_calibration) return;
    cJSON *cal = jchild(w, o, "calibration", 1);
    if (!cal) return;
    /* The layout carries counts only, so a bin's mean prediction is taken at
     * its midpoint; empty bins are left out. */
    for (int j = 0; j < B; j++) {
        uint64_t c = g->h0[j] + g->h1[j];
        if (!c) continue;
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(cal, e)) {
            cJSON_Delete(e);
            w->oom = 1;
            return;
        }
        jnum(w, e, "lo", (double)j / B);
        jnum(w, e, "hi", (double)(j + 1) / B);
        jnum(w, e, "predicted", (j + 0.5) / B);
        jnum(w, e, "observed", (double)g->h1[j] / (double)c);
        jnum(w, e, "count", (double)c);
    }
}

/* ------------------------------ disparities -------------------------------- */

/* max - min over the defined values; NaN with fewer than two. */
static double range_of(const double *v, int n) {
    double lo = INFINITY, hi = -INFINITY;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i])) {
            lo = fmin(lo, v[i]);
            hi = fmax(hi, v[i]);
            k++;
        }
    return k >= 2 ? hi - lo : NAN;
}

/* min / max over the defined values; NaN with fewer than two or max 0. */
static double ratio_of(const double *v, int n) {
    double lo = INFINITY, hi = -INFINITY;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i])) {
            lo = fmin(lo, v[i]);
            hi = fmax(hi, v[i]);
            k++;
        }
    return k >= 2 && hi > 0.0 ? lo / hi : NAN;
}

/* Fairlearn's method="to_overall": the largest |v_g - overall|. */
static double diff_to(const double *v, int n, double overall) {
    double d = NAN;
    if (isnan(overall)) return NAN;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i])) d = isnan(d) ? fabs(v[i] - overall) : fmax(d, fabs(v[i] - overall));
    return d;
}

/* ... and the smallest min(v_g, overall) / max(v_g, overall). */
static double ratio_to(const double *v, int n, double overall) {
    double r = NAN;
    if (isnan(overall)) return NAN;
    for (int i = 0; i < n; i++) {
        if (isnan(v[i])) continue;
        double hi = fmax(v[i], overall), lo = fmin(v[i], overall);
        if (hi <= 0.0) continue; /* 0/0: both zero, nothing to compare */
        r = isnan(r) ? lo / hi : fmin(r, lo / hi);
    }
    return r;
}

/* The larger (or smaller) of two figures, ignoring an undefined one. */
static double max_def(double a, double b) {
    return isnan(a) ? b : isnan(b) ? a : fmax(a, b);
}
static double min_def(double a, double b) {
    return isnan(a) ? b : isnan(b) ? a : fmin(a, b);
}

/* Generalized entropy index of a population given as m distinct benefit
 * values v with weights w (Speicher et al. 2018, eq. 2; AIF360's
 * generalized_entropy_index): mean over individuals of ((b/mu)^a - 1) /
 * (a (a - 1)), the Theil index (b/mu) ln(b/mu) at a = 1 and -ln(b/mu) at
 * a = 0. NaN where undefined (no one, mean benefit 0, or a benefit 0 with
 * a <= 0, where the index is infinite). */
static double gei(const double *v, const double *w, int m, double alpha) {
    double n = 0.0, s = 0.0;
    for (int i = 0; i < m; i++) {
        n += w[i];
        s += w[i] * v[i];
    }
    if (!(n > 0.0) || !(s > 0.0)) return NAN;
    double mu = s / n, acc = 0.0;
    for (int i = 0; i < m; i++) {
        if (w[i] == 0.0) continue;
        double r = v[i] / mu;
        double t;
        if (alpha == 1.0)
            t = r > 0.0 ? r * log(r) : 0.0;
        else if (r == 0.0 && alpha <= 0.0)
            return NAN;
        else if (alpha == 0.0)
            t = -log(r);
        else
            t = (pow(r, alpha) - 1.0) / (alpha * (alpha - 1.0));
        acc += w[i] * t;
    }
    return acc / n;
}

/* Individual benefits b = yhat - y + 1 from confusion counts: FN 0, TP and
 * TN 1, FP 2 (AIF360 ClassificationMetric.generalized_entropy_index). */
static double gei_counts(uint64_t tp, uint64_t fp, uint64_t tn, uint64_t fn, double alpha) {
    double v[3] = {0.0, 1.0, 2.0};
    double w[3] = {(double)fn, (double)(tp + tn), (double)fp};
    return gei(v, w, 3, alpha);
}

static int limit_on(double x) {
    return !isnan(x) && x != 0.0;
}

/* Appends {"metric","value","limit","attribute"} to both arrays. */
static void add_alert(jw *w, cJSON *local, cJSON *all, const char *metric, double value,
                      double limit, const char *attribute) {
    cJSON *arrays[2] = {local, all};
    for (int k = 0; k < 2; k++) {
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(arrays[k], e)) {
            cJSON_Delete(e);
            w->oom = 1;
            return;
        }
        jstr(w, e, "metric", metric);
        jnum(w, e, "value", value);
        jnum(w, e, "limit", limit);
        jstr(w, e, "attribute", attribute);
    }
}

/* The privileged group's label given in the options for audit au, or NULL. */
static const char *option_privileged(const fl_fairness_options *opt, const char *audit) {
    for (int i = 0; i < opt->n_privileged; i++)
        if (opt->privileged_attr[i] && !strcmp(opt->privileged_attr[i], audit))
            return opt->privileged[i];
    return NULL;
}

/* Builds one attribute's object into arr, its alerts into all_alerts. */
static int audit_json(jw *w, cJSON *arr, cJSON *all_alerts, const fl_fairness_layout *L,
                      const fl_fairness_audit *au, const uint64_t *counts, const gstat *overall,
                      const fl_fairness_options *opt, char err[FL_ERR_LEN]) {
    int ng = au->n_groups, rc = FL_OK;
    gstat *g = calloc(ng ? (size_t)ng : 1, sizeof *g);
    double *sel = calloc(ng ? (size_t)ng : 1, sizeof *sel);
    double *tpr = calloc(ng ? (size_t)ng : 1, sizeof *tpr);
    double *fpr = calloc(ng ? (size_t)ng : 1, sizeof *fpr);
    int *idx = calloc(ng ? (size_t)ng : 1, sizeof *idx); /* included groups */
    if (!g || !sel || !tpr || !fpr || !idx) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    uint64_t total = 0;
    for (int k = 0; k < ng; k++) {
        if ((rc = load_block(&g[k], L, counts + au->offset + (int64_t)k * L->stride, "group",
                             au->labels[k], err)))
            goto cleanup;
        total += g[k].n;
    }
    if (total > overall->n) {
        rc = fl_seterr(err, FL_EINVAL,
                       "fairness counts: the groups of '%s' hold %llu rows, the overall block "
                       "only %llu (a broken sum?)",
                       au->name, (unsigned long long)total, (unsigned long long)overall->n);
        goto cleanup;
    }
    const char *priv_label = option_privileged(opt, au->name);
    int priv = -1;
    if (priv_label) {
        for (int k = 0; k < ng && priv < 0; k++)
            if (!strcmp(au->labels[k], priv_label)) priv = k;
        if (priv < 0) {
            rc = fl_seterr(err, FL_EINVAL, "fairness: privileged group '%s' is not a group of '%s'",
                           priv_label, au->name);
            goto cleanup;
        }
    }

    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(arr, o)) {
        cJSON_Delete(o);
        rc = FL_ENOMEM;
        goto cleanup;
    }
    jstr(w, o, "attribute", au->name);
    cJSON *gj = jchild(w, o, "groups", 0);
    uint64_t min_n = opt->min_group_count > 0 ? (uint64_t)opt->min_group_count : 1;
    int m = 0; /* included groups */
    for (int k = 0; k < ng && gj; k++) {
        cJSON *e = jchild(w, gj, au->labels[k], 0);
        if (!e) break;
        if (g[k].n < min_n) {
            jnum(w, e, "count", (double)g[k].n);
            jstr(w, e, "status", "insufficient data");
            continue;
        }
        group_json(w, e, &g[k], L->n_bins, L->n_bins > 0);
        idx[m] = k;
        sel[m] = g[k].sel;
        tpr[m] = g[k].tpr;
        fpr[m] = g[k].fpr;
        m++;
    }
    cJSON *local = cJSON_CreateArray(); /* this attribute's alerts; added last */
    if (!local) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    if (m < 2) {
        if (!cJSON_AddNullToObject(o, "disparities")) w->oom = 1;
        char why[160];
        snprintf(why, sizeof why, "%d group%s with at least %llu rows; disparities need at least 2",
                 m, m == 1 ? "" : "s", (unsigned long long)min_n);
        jstr(w, o, "reason", why);
        if (!cJSON_AddItemToObject(o, "alerts", local)) {
            cJSON_Delete(local);
            w->oom = 1;
        }
        goto cleanup;
    }

    double dpd = range_of(sel, m), dpr = ratio_of(sel, m);
    double eod = max_def(range_of(tpr, m), range_of(fpr, m));
    double eor = min_def(ratio_of(tpr, m), ratio_of(fpr, m));
    double eod_o = max_def(diff_to(tpr, m, overall->tpr), diff_to(fpr, m, overall->fpr));
    double eor_o = min_def(ratio_to(tpr, m, overall->tpr), ratio_to(fpr, m, overall->fpr));
    double eop = range_of(tpr, m);
    double di = dpr;
    /* Privileged group: the configured one, else the highest selection rate
     * (ties: first in definition order); average_odds_difference is then
     * reported for the unprivileged group furthest from it. */
    if (priv < 0) {
        for (int i = 0; i < m; i++)
            if (priv < 0 || sel[i] > g[priv].sel) priv = idx[i];
    }
    int priv_in = 0;
    for (int i = 0; i < m; i++)
        priv_in |= idx[i] == priv;
    double aod = NAN;
    int aod_group = -1;
    if (priv_in && !isnan(g[priv].tpr) && !isnan(g[priv].fpr)) {
        for (int i = 0; i < m; i++) {
            int k = idx[i];
            if (k == priv || isnan(g[k].tpr) || isnan(g[k].fpr)) continue;
            double v = 0.5 * ((g[k].fpr - g[priv].fpr) + (g[k].tpr - g[priv].tpr));
            if (aod_group < 0 || fabs(v) > fabs(aod)) {
                aod = v;
                aod_group = k;
            }
        }
    }
    /* Entropy indices over the individuals of the compared groups, and the
     * between-group component (each benefit replaced by its group's mean). */
    uint64_t tp = 0, fp = 0, tn = 0, fn = 0;
    double *bv = calloc((size_t)m, sizeof *bv), *bw = calloc((size_t)m, sizeof *bw);
    if (!bv || !bw) {
        free(bv);
        free(bw);
        cJSON_Delete(local);
        rc = FL_ENOMEM;
        goto cleanup;
    }
    for (int i = 0; i < m; i++) {
        const gstat *s = &g[idx[i]];
        tp += s->tp;
        fp += s->fp;
        tn += s->tn;
        fn += s->fn;
        bv[i] = (double)(s->tp + s->tn + 2 * s->fp) / (double)s->n;
        bw[i] = (double)s->n;
    }
    double gei_v = gei_counts(tp, fp, tn, fn, opt->gei_alpha);
    double theil = gei_counts(tp, fp, tn, fn, 1.0);
    double bgei = gei(bv, bw, m, opt->gei_alpha), btheil = gei(bv, bw, m, 1.0);
    free(bv);
    free(bw);

    cJSON *d = jchild(w, o, "disparities", 0);
    if (d) {
        jnum(w, d, "demographic_parity_difference", dpd);
        jnum(w, d, "demographic_parity_ratio", dpr);
        jnum(w, d, "equalized_odds_difference", eod);
        jnum(w, d, "equalized_odds_ratio", eor);
        jnum(w, d, "equalized_odds_difference_to_overall", eod_o);
        jnum(w, d, "equalized_odds_ratio_to_overall", eor_o);
        jnum(w, d, "equal_opportunity_difference", eop);
        jnum(w, d, "average_odds_difference", aod);
        jnum(w, d, "disparate_impact", di);
        jbool_or_null(w, d, "four_fifths_rule_violated", isnan(di) ? -1 : di < 0.8);
        jnum(w, d, "generalized_entropy_index", gei_v);
        jnum(w, d, "theil_index", theil);
        jnum(w, d, "gei_alpha", opt->gei_alpha);
        jnum(w, d, "between_group_generalized_entropy_index", bgei);
        jnum(w, d, "between_group_theil_index", btheil);
        jstr(w, d, "privileged_group", au->labels[priv]);
        if (aod_group >= 0)
            jstr(w, d, "average_odds_group", au->labels[aod_group]);
        else if (!cJSON_AddNullToObject(d, "average_odds_group"))
            w->oom = 1;
        jnum(w, d, "groups_compared", m);
    }
    const struct {
        const char *metric;
        double value, limit;
        int is_min, absval;
    } checks[] = {
        {"demographic_parity_difference", dpd, opt->max_demographic_parity_difference, 0, 0},
        {"demographic_parity_ratio", dpr, opt->min_demographic_parity_ratio, 1, 0},
        {"equalized_odds_difference", eod, opt->max_equalized_odds_difference, 0, 0},
        {"equalized_odds_ratio", eor, opt->min_equalized_odds_ratio, 1, 0},
        {"equal_opportunity_difference", eop, opt->max_equal_opportunity_difference, 0, 0},
        {"average_odds_difference", aod, opt->max_average_odds_difference, 0, 1},
        {"disparate_impact", di, opt->min_disparate_impact, 1, 0},
        {"generalized_entropy_index", gei_v, opt->max_generalized_entropy_index, 0, 0},
        {"theil_index", theil, opt->max_theil_index, 0, 0},
    };
    for (size_t c = 0; c < sizeof checks / sizeof checks[0]; c++) {
        double v = checks[c].value, lim = checks[c].limit;
        if (!limit_on(lim) || isnan(v)) continue; /* an undefined figure cannot be judged */
        double x = checks[c].absval ? fabs(v) : v;
        if (checks[c].is_min ? x < lim : x > lim)
            add_alert(w, local, all_alerts, checks[c].metric, v, lim, au->name);
    }
    if (!cJSON_AddItemToObject(o, "alerts", local)) {
        cJSON_Delete(local);
        w->oom = 1;
    }
cleanup:
    free(g);
    free(sel);
    free(tpr);
    free(fpr);
    free(idx);
    return rc;
}

static int check_options(const fl_fairness_layout *L, const fl_fairness_options *opt,
                         char err[FL_ERR_LEN]) {
    if (opt->min_group_count < 0)
        return fl_seterr(err, FL_EINVAL, "fairness: min_group_count: expected >= 0, got %lld",
                         (long long)opt->min_group_count);
    if (!isfinite(opt->gei_alpha))
        return fl_seterr(err, FL_EINVAL, "fairness: gei_alpha: expected a finite number");
    if (opt->n_privileged < 0 || (opt->n_privileged && (!opt->privileged_attr || !opt->privileged)))
        return fl_seterr(err, FL_EINVAL, "fairness: privileged groups: bad arrays");
    for (int i = 0; i < opt->n_privileged; i++) {
        int found = 0;
        for (int a = 0; a < L->n_audits && !found; a++)
            found = opt->privileged_attr[i] && !strcmp(opt->privileged_attr[i], L->audits[a].name);
        if (!found || !opt->privileged[i])
            return fl_seterr(err, FL_EINVAL,
                             "fairness: a privileged group is given for '%s', which is not an "
                             "audited attribute",
                             opt->privileged_attr[i] ? opt->privileged_attr[i] : "(null)");
    }
    if (opt->n_sites < 0 || (opt->n_sites && (!isfinite(opt->site_accuracy_sum) ||
                                              !isfinite(opt->site_accuracy_sumsq))))
        return fl_seterr(err, FL_EINVAL, "fairness: site accuracy sums: expected finite numbers");
    return FL_OK;
}

int fl_fairness_compute(cJSON **out, const fl_fairness_layout *L, const uint64_t *counts,
                        const fl_fairness_options *opt, char err[FL_ERR_LEN]) {
    fl_fairness_options defaults;
    cJSON *root = NULL;
    jw w = {0};
    int rc;
    *out = NULL;
    if (!L || !counts) return fl_seterr(err, FL_EINVAL, "fairness: no layout or counts");
    if (!opt) {
        fl_fairness_options_init(&defaults);
        opt = &defaults;
    }
    if ((rc = check_options(L, opt, err))) return rc;
    gstat overall;
    if ((rc = load_block(&overall, L, counts, "block", "overall", err))) return rc;
    rc = FL_ENOMEM;
    if (!(root = cJSON_CreateObject())) goto cleanup;
    jnum(&w, root, "threshold", opt->threshold);
    jnum(&w, root, "min_group_count", (double)opt->min_group_count);
    jnum(&w, root, "n_bins", L->n_bins);
    jstr(&w, root, "layout", L->fingerprint_hex);
    cJSON *oj = jchild(&w, root, "overall", 0);
    if (oj) group_json(&w, oj, &overall, L->n_bins, 0);
    cJSON *attrs = jchild(&w, root, "attributes", 1);
    cJSON *alerts = cJSON_CreateArray();
    if (!attrs || !alerts) {
        cJSON_Delete(alerts);
        goto cleanup;
    }
    for (int a = 0; a < L->n_audits; a++)
        if ((rc = audit_json(&w, attrs, alerts, L, &L->audits[a], counts, &overall, opt, err))) {
            cJSON_Delete(alerts);
            goto cleanup;
        }
    if (!cJSON_AddItemToObject(root, "alerts", alerts)) {
        cJSON_Delete(alerts);
        rc = FL_ENOMEM;
        goto cleanup;
    }
    if (opt->n_sites > 0) {
        cJSON *s = jchild(&w, root, "site_accuracy", 0);
        if (s) {
            double n = (double)opt->n_sites;
            double mean = opt->site_accuracy_sum / n;
            /* Population variance over the sites (every site is counted, so
             * there is no sample to correct for); rounding can push it just
             * below zero. */
            double var = fmax(0.0, opt->site_accuracy_sumsq / n - mean * mean);
            jnum(&w, s, "mean", mean);
            jnum(&w, s, "variance", var);
            jnum(&w, s, "sites", n);
        }
    }
    rc = w.oom ? FL_ENOMEM : FL_OK;
cleanup:
    if (rc) {
        cJSON_Delete(root);
        root = NULL;
    }
    *out = root;
    return rc;
}
