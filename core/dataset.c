/* dataset.c: turns a parsed CSV and a schema into training tensors, in the
 * six steps listed in dataset.h (DESIGN.md §4). The steps are separate so a
 * federation can run them site by site: the only thing that crosses sites is
 * fl_stats (integer counts and float sums, summed by secure aggregation),
 * and everything fitted from it (means, standard deviations, modes) is a pure
 * function of those sums, so every site encodes identically.
 *
 * Decisions the header leaves open, made here:
 * - Feature order: the order of an explicit `features` list, or the CSV's
 *   column order for `features = *`. Sites whose files order columns
 *   differently must list features explicitly to get the same layout.
 * - Numbers: optional blanks, [+-]digits[.digits][e[+-]digits]. "nan", "inf"
 *   and hex are text, not numbers: they would poison the sums.
 * - Categorical values and missing tokens match cells byte for byte.
 * - Without `positive` and without declared classes, the classes are the
 *   sorted distinct label values of the whole file; fewer than two is an
 *   error (nothing to learn).
 * - Every function that could fail halfway leaves its output untouched or
 *   empty: fl_stats_accumulate sums into a scratch fl_stats first. */
#include "dataset.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rng.h"

#define FL_MAX_LEVELS 4096

/* ============================== small helpers ============================== */

static int in_list(const fl_strlist *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->items[i], s)) return 1;
    return 0;
}

static const char *schema_path(const fl_schema *s) {
    return s->path ? s->path : "<schema>";
}

/* Same syntax as the bin edges in schema.c (kept in step with it): a
 * decimal number with optional surrounding blanks, finite. */
static int parse_number(double *v, const char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    const char *b = s;
    size_t digits = 0;
    if (*s == '+' || *s == '-') s++;
    while (isdigit((unsigned char)*s))
        s++, digits++;
    if (*s == '.') {
        s++;
        while (isdigit((unsigned char)*s))
            s++, digits++;
    }
    if (!digits) return -1;
    if (*s == 'e' || *s == 'E') {
        const char *q = s + 1;
        if (*q == '+' || *q == '-') q++;
        if (isdigit((unsigned char)*q)) {
            while (isdigit((unsigned char)*q))
                q++;
            s = q;
        }
    }
    const char *num_end = s;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s) return -1;
    char *end;
    *v = strtod(b, &end);
    if (end != num_end || !isfinite(*v)) return -1;
    return 0;
}

/* "a, b, c" or "a, b, ... (4096 levels)" for messages, bounded by cap. */
static void fmt_levels(char *buf, size_t cap, char *const *levels, int n) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t need = strlen(levels[i]) + 2;
        if (len + need + 24 >= cap) {
            snprintf(buf + len, cap - len, "%s... (%d in all)", i ? ", " : "", n);
            return;
        }
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", levels[i]);
    }
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Level lookup by binary search over a sorted permutation, so that encoding
 * costs O(log levels) per cell even for declared (unsorted) levels. */
typedef struct level_index {
    const char **sorted; /* the level strings, sorted */
    int *pos;            /* pos[k]: index in the column's levels of sorted[k] */
    int n;
} level_index;

typedef struct sort_pair {
    const char *s;
    int i;
} sort_pair;

static int cmp_pair(const void *a, const void *b) {
    return strcmp(((const sort_pair *)a)->s, ((const sort_pair *)b)->s);
}

static void level_index_free(level_index *li) {
    free(li->sorted);
    free(li->pos);
    memset(li, 0, sizeof *li);
}

static int level_index_build(level_index *li, char *const *levels, int n) {
    memset(li, 0, sizeof *li);
    size_t m = n > 0 ? (size_t)n : 1;
    sort_pair *tmp = malloc(m * sizeof *tmp);
    li->sorted = malloc(m * sizeof *li->sorted);
    li->pos = malloc(m * sizeof *li->pos);
    if (!tmp || !li->sorted || !li->pos) {
        free(tmp);
        level_index_free(li);
        return FL_ENOMEM;
    }
    for (int i = 0; i < n; i++)
        tmp[i] = (sort_pair){levels[i], i};
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_pair);
    for (int i = 0; i < n; i++) {
        li->sorted[i] = tmp[i].s;
        li->pos[i] = tmp[i].i;
    }
    li->n = n;
    free(tmp);
    return 0;
}

static int level_find(const level_index *li, const char *s) {
    int lo = 0, hi = li->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(li->sorted[mid], s);
        if (!c) return li->pos[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* One level_index per categorical encoder column (numeric ones stay empty). */
static int lookups_build(level_index **out, const fl_encoder *enc) {
    *out = calloc(enc->n_cols > 0 ? (size_t)enc->n_cols : 1, sizeof **out);
    if (!*out) return FL_ENOMEM;
    for (int c = 0; c < enc->n_cols; c++) {
        if (!enc->cols[c].categorical) continue;
        if (level_index_build(&(*out)[c], enc->cols[c].levels, enc->cols[c].n_levels)) {
            for (int k = 0; k < c; k++)
                level_index_free(&(*out)[k]);
            free(*out);
            *out = NULL;
            return FL_ENOMEM;
        }
    }
    return 0;
}

static void lookups_free(level_index *lk, int n) {
    if (!lk) return;
    for (int c = 0; c < n; c++)
        level_index_free(&lk[c]);
    free(lk);
}

int fl_encoder_is_missing(const fl_encoder *enc, const char *cell) {
    for (int i = 0; i < enc->n_missing; i++)
        if (!strcmp(enc->missing[i], cell)) return 1;
    return 0;
}

/* The encoder was built from a CSV with the same columns in the same
 * places: encoding another site's or another split's file with a different
 * layout would silently mix columns up. */
static int check_layout(const fl_encoder *enc, const fl_csv *csv, char *err) {
    if (enc->label_col < 0 || enc->label_col >= csv->n_cols)
        return fl_seterr(err, FL_EINVAL, "%s: has %d columns, the encoder expects the label at %d",
                         csv->path, csv->n_cols, enc->label_col + 1);
    for (int c = 0; c < enc->n_cols; c++) {
        const fl_enc_col *col = &enc->cols[c];
        if (col->csv_col >= csv->n_cols || strcmp(csv->header[col->csv_col], col->name))
            return fl_seterr(err, FL_EINVAL,
                             "%s: column '%s' is not column %d as in the file the encoder was "
                             "built from",
                             csv->path, col->name, col->csv_col + 1);
    }
    for (int s = 0; s < enc->n_sensitive; s++)
        if (enc->sens_col[s] >= csv->n_cols)
            return fl_seterr(err, FL_EINVAL, "%s: has %d columns, too few for the encoder",
                             csv->path, csv->n_cols);
    return 0;
}

/* ================================= encoder ================================= */

void fl_encoder_free(fl_encoder *enc) {
    if (!enc) return;
    for (int c = 0; c < enc->n_cols; c++) {
        fl_enc_col *col = &enc->cols[c];
        free(col->name);
        for (int k = 0; k < col->n_levels; k++)
            free(col->levels[k]);
        free(col->levels);
    }
    free(enc->cols);
    for (int k = 0; k < enc->n_classes; k++)
        free(enc->classes[k]);
    free(enc->classes);
    free(enc->sens_col);
    free(enc->sens_def);
    memset(enc, 0, sizeof *enc);
}

/* Every column the schema names must exist in the CSV header. */
static int check_known(const fl_schema *s, const fl_csv *csv, const fl_strlist *l, const char *key,
                       char *err) {
    for (int i = 0; i < l->n; i++)
        if (fl_csv_column(csv, l->items[i]) < 0)
            return fl_seterr(err, FL_EINVAL,
                             "%s:%d: unknown column '%s' in %s (not in the header of %s)",
                             schema_path(s), l->line, l->items[i], key, csv->path);
    return 0;
}

static int check_columns(const fl_schema *s, const fl_csv *csv, char *err) {
    int rc;
    if (fl_csv_column(csv, s->label) < 0)
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: unknown column '%s' for label (not in the header of %s)",
                         schema_path(s), s->label_line, s->label, csv->path);
    if ((rc = check_known(s, csv, &s->features, "features", err))) return rc;
    if ((rc = check_known(s, csv, &s->categorical, "categorical", err))) return rc;
    if ((rc = check_known(s, csv, &s->sensitive, "sensitive", err))) return rc;
    if ((rc = check_known(s, csv, &s->drop, "drop", err))) return rc;
    if ((rc = check_known(s, csv, &s->log, "log", err))) return rc;
    if ((rc = check_known(s, csv, &s->missing_indicators, "missing_indicators", err))) return rc;
    for (int g = 0; g < s->n_groups; g++)
        if (fl_csv_column(csv, s->groups[g].attr) < 0)
            return fl_seterr(err, FL_EINVAL,
                             "%s:%d: unknown column '%s' in [groups] (not in the header of %s)",
                             schema_path(s), s->groups[g].line, s->groups[g].attr, csv->path);
    for (int k = 0; k < s->n_levels; k++)
        if (fl_csv_column(csv, s->level_cols[k]) < 0)
            return fl_seterr(err, FL_EINVAL,
                             "%s:%d: unknown column '%s' in [levels] (not in the header of %s)",
                             schema_path(s), s->levels[k].line, s->level_cols[k], csv->path);
    return 0;
}

static const fl_strlist *declared_levels(const fl_schema *s, const char *col) {
    for (int k = 0; k < s->n_levels; k++)
        if (!strcmp(s->level_cols[k], col)) return &s->levels[k];
    return NULL;
}

static int copy_strings(char ***out, int *n_out, char *const *src, int n) {
    *out = calloc(n > 0 ? (size_t)n : 1, sizeof **out);
    if (!*out) return FL_ENOMEM;
    for (int i = 0; i < n; i++) {
        if (!((*out)[i] = strdup(src[i]))) {
            for (int k = 0; k < i; k++)
                free((*out)[k]);
            free(*out);
            *out = NULL;
            return FL_ENOMEM;
        }
    }
    *n_out = n;
    return 0;
}

/* The sorted distinct non-missing values of column csv_col over the whole
 * file; more than FL_MAX_LEVELS is *too_many (set to the count seen so far)
 * and leaves *out empty. */
static int fit_levels(char ***out, int *n_out, int *too_many, const fl_encoder *enc,
                      const fl_csv *csv, int csv_col) {
    *out = NULL;
    *n_out = 0;
    *too_many = 0;
    int rc = 0;
    size_t n = csv->n_rows > 0 ? (size_t)csv->n_rows : 1;
    char **v = malloc(n * sizeof *v);
    if (!v) return FL_ENOMEM;
    size_t m = 0;
    for (int64_t r = 0; r < csv->n_rows; r++) {
        const char *cell = fl_csv_cell(csv, r, csv_col);
        if (!fl_encoder_is_missing(enc, cell)) v[m++] = (char *)cell;
    }
    qsort(v, m, sizeof *v, cmp_str_ptr);
    size_t u = 0;
    for (size_t i = 0; i < m; i++)
        if (!u || strcmp(v[u - 1], v[i])) v[u++] = v[i];
    if (u > FL_MAX_LEVELS) {
        *too_many = (int)(u > INT32_MAX ? INT32_MAX : u);
        goto cleanup;
    }
    rc = copy_strings(out, n_out, v, (int)u);
cleanup:
    free(v);
    return rc;
}

static int init_classes(fl_encoder *enc, const fl_schema *s, const fl_csv *csv, char *err) {
    int rc, too_many;
    if (s->positive) {
        enc->positive = s->positive;
        enc->classes = calloc(2, sizeof *enc->classes);
        if (!enc->classes) return FL_ENOMEM;
        size_t n = strlen(s->positive) + 5;
        enc->classes[0] = malloc(n);
        enc->classes[1] = strdup(s->positive);
        enc->n_classes = 2;
        if (!enc->classes[0] || !enc->classes[1]) return FL_ENOMEM;
        snprintf(enc->classes[0], n, "not %s", s->positive);
        return 0;
    }
    const fl_strlist *decl = declared_levels(s, s->label);
    if (decl) return copy_strings(&enc->classes, &enc->n_classes, decl->items, decl->n);
    if ((rc = fit_levels(&enc->classes, &enc->n_classes, &too_many, enc, csv, enc->label_col)))
        return rc;
    if (too_many)
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: label '%s' has more than %d distinct values in %s (expected "
                         "classes; set 'positive' for a binary label)",
                         schema_path(s), s->label_line, s->label, FL_MAX_LEVELS, csv->path);
    if (enc->n_classes < 2)
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: label '%s' has %d distinct value(s) in %s, expected at least 2 "
                         "(declare the classes in [levels] or set 'positive')",
                         schema_path(s), s->label_line, s->label, enc->n_classes, csv->path);
    return 0;
}

int fl_encoder_init(fl_encoder *enc, const fl_schema *schema, const fl_csv *csv,
                    char err[FL_ERR_LEN]) {
    memset(enc, 0, sizeof *enc);
    int rc, nf = 0;
    int *fcols = NULL;
    if (csv->n_cols < 1 || !csv->header || !csv->path || !schema->label)
        return fl_seterr(err, FL_EINVAL, "encoder: the CSV or the schema is not loaded");
    if ((rc = check_columns(schema, csv, err))) goto cleanup;
    enc->label_col = fl_csv_column(csv, schema->label);
    enc->missing = schema->missing.items;
    enc->n_missing = schema->missing.n;

    fcols = malloc((size_t)csv->n_cols * sizeof *fcols);
    if (!fcols) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    if (schema->features_all) {
        for (int c = 0; c < csv->n_cols; c++) {
            const char *name = csv->header[c];
            if (c == enc->label_col || in_list(&schema->sensitive, name) ||
                in_list(&schema->drop, name))
                continue;
            fcols[nf++] = c;
        }
    } else {
        for (int i = 0; i < schema->features.n; i++)
            fcols[nf++] = fl_csv_column(csv, schema->features.items[i]);
    }
    if (!nf) {
        rc = fl_seterr(err, FL_EINVAL,
                       "%s:%d: no feature columns in %s ('*' leaves out the label, sensitive and "
                       "dropped columns)",
                       schema_path(schema),
                       schema->features.line ? schema->features.line : schema->label_line,
                       csv->path);
        goto cleanup;
    }

    if (!(enc->cols = calloc((size_t)nf, sizeof *enc->cols))) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    enc->n_cols = nf;
    int offset = 0;
    for (int i = 0; i < nf; i++) {
        fl_enc_col *col = &enc->cols[i];
        col->csv_col = fcols[i];
        col->mean = 0.0;
        col->std = 1.0;
        if (!(col->name = strdup(csv->header[fcols[i]]))) {
            rc = FL_ENOMEM;
            goto cleanup;
        }
        col->categorical = in_list(&schema->categorical, col->name);
        col->offset = offset;
        if (!col->categorical) {
            col->log = in_list(&schema->log, col->name);
            col->indicator = in_list(&schema->missing_indicators, col->name);
            offset += 1 + col->indicator;
            continue;
        }
        const fl_strlist *decl = declared_levels(schema, col->name);
        if (decl) {
            rc = copy_strings(&col->levels, &col->n_levels, decl->items, decl->n);
        } else {
            int too_many;
            rc = fit_levels(&col->levels, &col->n_levels, &too_many, enc, csv, col->csv_col);
            if (!rc && too_many)
                rc = fl_seterr(err, FL_EINVAL,
                               "%s:%d: categorical column '%s' has more than %d distinct values "
                               "in %s (is it numeric?)",
                               schema_path(schema), schema->categorical.line, col->name,
                               FL_MAX_LEVELS, csv->path);
        }
        if (rc) goto cleanup;
        if (col->n_levels > FL_MAX_LEVELS) {
            rc = fl_seterr(err, FL_EINVAL, "%s:%d: column '%s' declares more than %d levels",
                           schema_path(schema), decl ? decl->line : 0, col->name, FL_MAX_LEVELS);
            goto cleanup;
        }
        offset += col->n_levels;
    }
    enc->n_features = offset;
    /* A transform of a column that is not a feature would silently do nothing. */
    const fl_strlist *tl[] = {&schema->log, &schema->missing_indicators};
    const char *tn[] = {"log", "missing_indicators"};
    for (int k = 0; k < 2 && !rc; k++)
        for (int i = 0; i < tl[k]->n && !rc; i++) {
            int found = 0;
            for (int c = 0; c < nf && !found; c++)
                found = !strcmp(enc->cols[c].name, tl[k]->items[i]);
            if (!found)
                rc = fl_seterr(err, FL_EINVAL, "%s:%d: column '%s' in %s is not a feature",
                               schema_path(schema), tl[k]->line, tl[k]->items[i], tn[k]);
        }
    if (rc) goto cleanup;

    if ((rc = init_classes(enc, schema, csv, err))) goto cleanup;

    enc->n_sensitive = schema->sensitive.n;
    if (enc->n_sensitive) {
        enc->sens_col = malloc((size_t)enc->n_sensitive * sizeof *enc->sens_col);
        enc->sens_def = malloc((size_t)enc->n_sensitive * sizeof *enc->sens_def);
        if (!enc->sens_col || !enc->sens_def) {
            rc = FL_ENOMEM;
            goto cleanup;
        }
        for (int s = 0; s < enc->n_sensitive; s++) {
            enc->sens_col[s] = fl_csv_column(csv, schema->sensitive.items[s]);
            enc->sens_def[s] = fl_schema_group(schema, schema->sensitive.items[s]);
        }
    }
cleanup:
    free(fcols);
    if (rc == FL_ENOMEM) fl_seterr(err, rc, "%s: out of memory", csv->path);
    if (rc) fl_encoder_free(enc);
    return rc;
}

int fl_encoder_labels(int32_t *y, const fl_encoder *enc, const fl_csv *csv, char err[FL_ERR_LEN]) {
    int rc = check_layout(enc, csv, err);
    if (rc) return rc;
    level_index li = {0};
    if (!enc->positive && (rc = level_index_build(&li, enc->classes, enc->n_classes))) return rc;
    const char *label = csv->header[enc->label_col];
    for (int64_t r = 0; r < csv->n_rows; r++) {
        const char *cell = fl_csv_cell(csv, r, enc->label_col);
        if (fl_encoder_is_missing(enc, cell)) {
            rc = fl_seterr(err, FL_EINVAL, "%s:%d:%d: missing label value in column '%s'",
                           csv->path, csv->line[r], enc->label_col + 1, label);
            goto cleanup;
        }
        if (enc->positive) {
            y[r] = !strcmp(cell, enc->positive);
            continue;
        }
        int k = level_find(&li, cell);
        if (k < 0) {
            char known[256];
            fmt_levels(known, sizeof known, enc->classes, enc->n_classes);
            rc = fl_seterr(err, FL_EINVAL,
                           "%s:%d:%d: unknown label value '%.80s' in column '%s' (expected one "
                           "of: %s)",
                           csv->path, csv->line[r], enc->label_col + 1, cell, label, known);
            goto cleanup;
        }
        y[r] = k;
    }
cleanup:
    level_index_free(&li);
    return rc;
}

/* ================================== split ================================== */

int fl_split_stratified(int32_t **train, int64_t *n_train, int32_t **val, int64_t *n_val,
                        int32_t **test, int64_t *n_test, const int32_t *y, int64_t n, int n_classes,
                        double val_frac, double test_frac, uint64_t seed) {
    *train = *val = *test = NULL;
    *n_train = *n_val = *n_test = 0;
    if (n < 0 || n > INT32_MAX || n_classes < 1 || (n && !y) || !isfinite(val_frac) ||
        !isfinite(test_frac) || val_frac < 0 || test_frac < 0 || val_frac + test_frac >= 1.0)
        return FL_EINVAL;
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= n_classes) return FL_EINVAL;

    int rc = 0;
    size_t m = n > 0 ? (size_t)n : 1;
    int64_t *start = calloc((size_t)n_classes + 1, sizeof *start);
    int32_t *by_class = malloc(m * sizeof *by_class);
    unsigned char *where = malloc(m); /* 0 train, 1 val, 2 test */
    *train = malloc(m * sizeof **train);
    *val = malloc(m * sizeof **val);
    *test = malloc(m * sizeof **test);
    if (!start || !by_class || !where || !*train || !*val || !*test) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    /* Counting sort: rows of class c, in ascending order, at start[c]. */
    for (int64_t i = 0; i < n; i++)
        start[y[i] + 1]++;
    for (int c = 0; c < n_classes; c++)
        start[c + 1] += start[c];
    {
        int64_t *fill = calloc((size_t)n_classes, sizeof *fill);
        if (!fill) {
            rc = FL_ENOMEM;
            goto cleanup;
        }
        for (int64_t i = 0; i < n; i++)
            by_class[start[y[i]] + fill[y[i]]++] = (int32_t)i;
        free(fill);
    }
    /* One generator for all classes, consumed in class order, so the split
     * depends on the seed and the labels only. */
    fl_rng rng;
    fl_rng_seed(&rng, seed);
    for (int c = 0; c < n_classes; c++) {
        int32_t *rows = by_class + start[c];
        int64_t nc = start[c + 1] - start[c];
        fl_rng_shuffle_i32(&rng, rows, nc);
        int64_t nt = (int64_t)floor(test_frac * (double)nc + 0.5);
        int64_t nv = (int64_t)floor(val_frac * (double)nc + 0.5);
        int64_t keep = nc >= 2 ? 1 : 0;
        while (nt + nv > nc - keep) {
            if (nv > 0)
                nv--;
            else
                nt--;
        }
        for (int64_t k = 0; k < nc; k++)
            where[rows[k]] = k < nt ? 2 : (k < nt + nv ? 1 : 0);
    }
    for (int64_t i = 0; i < n; i++) {
        if (where[i] == 2)
            (*test)[(*n_test)++] = (int32_t)i;
        else if (where[i] == 1)
            (*val)[(*n_val)++] = (int32_t)i;
        else
            (*train)[(*n_train)++] = (int32_t)i;
    }
cleanup:
    free(start);
    free(by_class);
    free(where);
    if (rc) {
        free(*train);
        free(*val);
        free(*test);
        *train = *val = *test = NULL;
        *n_train = *n_val = *n_test = 0;
    }
    return rc;
}

/* ================================== stats ================================== */

void fl_stats_free(fl_stats *st) {
    if (!st) return;
    if (st->level_count)
        for (int c = 0; c < st->n_cols; c++)
            free(st->level_count[c]);
    free(st->level_count);
    free(st->n_levels);
    free(st->count);
    free(st->sum);
    free(st->sumsq);
    memset(st, 0, sizeof *st);
}

int fl_stats_init(fl_stats *st, const fl_encoder *enc) {
    memset(st, 0, sizeof *st);
    size_t n = enc->n_cols > 0 ? (size_t)enc->n_cols : 1;
    st->count = calloc(n, sizeof *st->count);
    st->sum = calloc(n, sizeof *st->sum);
    st->sumsq = calloc(n, sizeof *st->sumsq);
    st->n_levels = calloc(n, sizeof *st->n_levels);
    st->level_count = calloc(n, sizeof *st->level_count);
    st->n_cols = enc->n_cols;
    if (!st->count || !st->sum || !st->sumsq || !st->n_levels || !st->level_count) goto nomem;
    for (int c = 0; c < enc->n_cols; c++) {
        if (!enc->cols[c].categorical) continue;
        int nl = enc->cols[c].n_levels;
        st->n_levels[c] = nl;
        if (!(st->level_count[c] = calloc(nl > 0 ? (size_t)nl : 1, sizeof **st->level_count)))
            goto nomem;
    }
    return 0;
nomem:
    fl_stats_free(st);
    return FL_ENOMEM;
}

static int unseen_level(char *err, const fl_csv *csv, int64_t r, const fl_enc_col *col,
                        const char *cell) {
    char known[256];
    fmt_levels(known, sizeof known, col->levels, col->n_levels);
    return fl_seterr(err, FL_EINVAL, "%s:%d:%d: unseen level '%.80s' in column '%s' (known: %s)",
                     csv->path, csv->line[r], col->csv_col + 1, cell, col->name, known);
}

static int not_a_number(char *err, const fl_csv *csv, int64_t r, int csv_col, const char *name,
                        const char *cell) {
    return fl_seterr(err, FL_EINVAL, "%s:%d:%d: column '%s': expected a number, got '%.80s'",
                     csv->path, csv->line[r], csv_col + 1, name, cell);
}

/* The value of a present numeric cell, transformed as the column says. */
static int numeric_cell(double *v, char *err, const fl_csv *csv, int64_t r, const fl_enc_col *col,
                        const char *cell) {
    if (parse_number(v, cell)) return not_a_number(err, csv, r, col->csv_col, col->name, cell);
    if (col->log) {
        if (!(*v >= 0))
            return fl_seterr(err, FL_EINVAL,
                             "%s:%d:%d: column '%s' is in the schema's log list: expected a number "
                             ">= 0, got '%.80s'",
                             csv->path, csv->line[r], col->csv_col + 1, col->name, cell);
        *v = log1p(*v);
    }
    return 0;
}

static int row_of(int64_t *r, const fl_csv *csv, const int32_t *rows, int64_t i, char *err) {
    *r = rows ? rows[i] : i;
    if (*r < 0 || *r >= csv->n_rows)
        return fl_seterr(err, FL_EINVAL, "%s: row index %lld out of range [0, %lld)", csv->path,
                         (long long)*r, (long long)csv->n_rows);
    return 0;
}

int fl_stats_accumulate(fl_stats *st, const fl_encoder *enc, const fl_csv *csv, const int32_t *rows,
                        int64_t n_rows, char err[FL_ERR_LEN]) {
    if (st->n_cols != enc->n_cols)
        return fl_seterr(err, FL_EINVAL, "statistics for %d columns, encoder has %d", st->n_cols,
                         enc->n_cols);
    int rc = check_layout(enc, csv, err);
    if (rc) return rc;
    fl_stats tmp;
    level_index *lk = NULL;
    if ((rc = fl_stats_init(&tmp, enc))) return rc;
    if ((rc = lookups_build(&lk, enc))) goto cleanup;
    int64_t n = rows ? n_rows : csv->n_rows;
    for (int64_t i = 0; i < n; i++) {
        int64_t r;
        if ((rc = row_of(&r, csv, rows, i, err))) goto cleanup;
        for (int c = 0; c < enc->n_cols; c++) {
            const fl_enc_col *col = &enc->cols[c];
            const char *cell = fl_csv_cell(csv, r, col->csv_col);
            if (fl_encoder_is_missing(enc, cell)) continue;
            if (col->categorical) {
                int k = level_find(&lk[c], cell);
                if (k < 0) {
                    rc = unseen_level(err, csv, r, col, cell);
                    goto cleanup;
                }
                tmp.level_count[c][k]++;
            } else {
                double v;
                if ((rc = numeric_cell(&v, err, csv, r, col, cell))) goto cleanup;
                tmp.count[c]++;
                tmp.sum[c] += v;
                tmp.sumsq[c] += v * v;
            }
        }
    }
    rc = fl_stats_merge(st, &tmp);
cleanup:
    lookups_free(lk, enc->n_cols);
    fl_stats_free(&tmp);
    if (rc == FL_ENOMEM) fl_seterr(err, rc, "%s: out of memory", csv->path);
    return rc;
}

int fl_stats_merge(fl_stats *dst, const fl_stats *src) {
    if (dst->n_cols != src->n_cols) return FL_EINVAL;
    for (int c = 0; c < dst->n_cols; c++)
        if (dst->n_levels[c] != src->n_levels[c] || !dst->level_count[c] != !src->level_count[c])
            return FL_EINVAL;
    for (int c = 0; c < dst->n_cols; c++) {
        dst->count[c] += src->count[c];
        dst->sum[c] += src->sum[c];
        dst->sumsq[c] += src->sumsq[c];
        for (int k = 0; k < dst->n_levels[c]; k++)
            dst->level_count[c][k] += src->level_count[c][k];
    }
    return 0;
}

int fl_encoder_finish(fl_encoder *enc, const fl_stats *st) {
    if (st->n_cols != enc->n_cols) return FL_EINVAL;
    for (int c = 0; c < enc->n_cols; c++)
        if (enc->cols[c].categorical &&
            (st->n_levels[c] != enc->cols[c].n_levels || !st->level_count[c]))
            return FL_EINVAL;
    for (int c = 0; c < enc->n_cols; c++) {
        fl_enc_col *col = &enc->cols[c];
        if (col->categorical) {
            int64_t best = 0;
            col->mode = 0;
            for (int k = 0; k < col->n_levels; k++) {
                if (st->level_count[c][k] > best) {
                    best = st->level_count[c][k];
                    col->mode = k;
                }
            }
            continue;
        }
        if (st->count[c] <= 0) {
            col->mean = 0.0;
            col->std = 1.0;
            continue;
        }
        double cnt = (double)st->count[c];
        double mean = st->sum[c] / cnt;
        /* Population variance from the sums: what a federation can compute
         * from securely aggregated sums alone. Rounding can make it a hair
         * negative for constant columns. */
        double var = st->sumsq[c] / cnt - mean * mean;
        double sd = var > 0 ? sqrt(var) : 0.0;
        if (!isfinite(mean) || !isfinite(sd)) return FL_ENUMERIC;
        col->mean = mean;
        col->std = sd < 1e-12 ? 1.0 : sd;
    }
    enc->finished = 1;
    return 0;
}

/* ================================= encoding ================================ */

void fl_dataset_free(fl_dataset *ds) {
    if (!ds) return;
    free(ds->X);
    free(ds->y);
    free(ds->groups);
    free(ds->src_line);
    memset(ds, 0, sizeof *ds);
}

/* Allocates the arrays of a dataset of n rows (zeroed X); never NULL on
 * success, even for n == 0, so callers need not special-case empty splits. */
static int dataset_alloc(fl_dataset *ds, int64_t n, int d, int n_classes, int n_sensitive) {
    memset(ds, 0, sizeof *ds);
    size_t un = n > 0 ? (size_t)n : 1, ud = d > 0 ? (size_t)d : 1;
    if (un > SIZE_MAX / sizeof(float) / ud) return FL_ENOMEM;
    ds->X = calloc(un * ud, sizeof *ds->X);
    ds->y = malloc(un * sizeof *ds->y);
    ds->src_line = malloc(un * sizeof *ds->src_line);
    if (n_sensitive) ds->groups = malloc(un * (size_t)n_sensitive * sizeof *ds->groups);
    if (!ds->X || !ds->y || !ds->src_line || (n_sensitive && !ds->groups)) {
        fl_dataset_free(ds);
        return FL_ENOMEM;
    }
    ds->n = n;
    ds->d = d;
    ds->n_classes = n_classes;
    ds->n_sensitive = n_sensitive;
    return 0;
}

int fl_dataset_encode(fl_dataset *ds, const fl_encoder *enc, const fl_csv *csv, const int32_t *y,
                      const int32_t *rows, int64_t n_rows, char err[FL_ERR_LEN]) {
    memset(ds, 0, sizeof *ds);
    if (!enc->finished)
        return fl_seterr(err, FL_ESTATE, "encoder not fitted: call fl_encoder_finish first");
    if (!y) return fl_seterr(err, FL_EINVAL, "%s: no labels given to encode", csv->path);
    int rc = check_layout(enc, csv, err);
    if (rc) return rc;
    int64_t n = rows ? n_rows : csv->n_rows;
    if (n < 0) return fl_seterr(err, FL_EINVAL, "negative row count %lld", (long long)n);
    level_index *lk = NULL;
    if ((rc = dataset_alloc(ds, n, enc->n_features, enc->n_classes, enc->n_sensitive)))
        return fl_seterr(err, rc, "%s: out of memory for %lld rows", csv->path, (long long)n);
    if ((rc = lookups_build(&lk, enc))) goto cleanup;
    for (int64_t i = 0; i < n; i++) {
        int64_t r;
        if ((rc = row_of(&r, csv, rows, i, err))) goto cleanup;
        if (y[r] < 0 || y[r] >= enc->n_classes) {
            rc = fl_seterr(err, FL_EINVAL, "%s:%d: label index %d out of range [0, %d)", csv->path,
                           csv->line[r], y[r], enc->n_classes);
            goto cleanup;
        }
        ds->y[i] = y[r];
        ds->src_line[i] = csv->line[r];
        float *x = ds->X + (size_t)i * (size_t)enc->n_features;
        for (int c = 0; c < enc->n_cols; c++) {
            const fl_enc_col *col = &enc->cols[c];
            const char *cell = fl_csv_cell(csv, r, col->csv_col);
            int missing = fl_encoder_is_missing(enc, cell);
            if (col->categorical) {
                int k = missing ? (col->n_levels ? col->mode : -1) : level_find(&lk[c], cell);
                if (k < 0 && !missing) {
                    rc = unseen_level(err, csv, r, col, cell);
                    goto cleanup;
                }
                if (k >= 0) x[col->offset + k] = 1.0f;
                continue;
            }
            double v;
            if (col->indicator) x[col->offset + 1] = missing ? 1.0f : 0.0f;
            if (missing) {
                /* Mean imputation: standardised, the mean is exactly 0. */
                x[col->offset] = 0.0f;
                continue;
            }
            if ((rc = numeric_cell(&v, err, csv, r, col, cell))) goto cleanup;
            x[col->offset] = (float)((v - col->mean) / col->std);
        }
        for (int s = 0; s < enc->n_sensitive; s++) {
            const char *cell = fl_csv_cell(csv, r, enc->sens_col[s]);
            int g = -1;
            if (!fl_encoder_is_missing(enc, cell) && enc->sens_def[s]) {
                g = fl_group_index(enc->sens_def[s], cell);
                if (g == -2) {
                    rc = fl_seterr(err, FL_EINVAL,
                                   "%s:%d:%d: column '%s': expected a number for its fairness "
                                   "bins, got '%.80s'",
                                   csv->path, csv->line[r], enc->sens_col[s] + 1,
                                   csv->header[enc->sens_col[s]], cell);
                    goto cleanup;
                }
            }
            ds->groups[(size_t)i * (size_t)enc->n_sensitive + (size_t)s] = g;
        }
    }
cleanup:
    lookups_free(lk, enc->n_cols);
    if (rc == FL_ENOMEM) fl_seterr(err, rc, "%s: out of memory", csv->path);
    if (rc) fl_dataset_free(ds);
    return rc;
}

int fl_dataset_subset(fl_dataset *dst, const fl_dataset *src, const int32_t *idx, int64_t n) {
    memset(dst, 0, sizeof *dst);
    if (n < 0 || (n && !idx)) return FL_EINVAL;
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= src->n) return FL_EINVAL;
    int rc = dataset_alloc(dst, n, src->d, src->n_classes, src->n_sensitive);
    if (rc) return rc;
    size_t d = (size_t)src->d, ns = (size_t)src->n_sensitive;
    for (int64_t i = 0; i < n; i++) {
        size_t j = (size_t)idx[i];
        if (d) memcpy(dst->X + (size_t)i * d, src->X + j * d, d * sizeof *dst->X);
        dst->y[i] = src->y[j];
        if (ns)
            memcpy(dst->groups + (size_t)i * ns, src->groups + j * ns, ns * sizeof *dst->groups);
        if (src->src_line) dst->src_line[i] = src->src_line[j];
    }
    if (!src->src_line) {
        free(dst->src_line);
        dst->src_line = NULL;
    }
    return 0;
}

/* ============================== single-site path =========================== */

int fl_dataset_load_split(fl_dataset *train, fl_dataset *val, fl_dataset *test, fl_encoder *enc,
                          const fl_csv *csv, const fl_schema *schema, double val_frac,
                          double test_frac, uint64_t seed, char err[FL_ERR_LEN]) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    memset(test, 0, sizeof *test);
    memset(enc, 0, sizeof *enc);
    int32_t *y = NULL, *tr = NULL, *va = NULL, *te = NULL;
    int64_t ntr = 0, nva = 0, nte = 0;
    fl_stats st;
    memset(&st, 0, sizeof st);
    int rc;
    if (csv->n_cols < 1 || !csv->cells || !csv->path) {
        rc = fl_seterr(err, FL_EINVAL, "no data: load the CSV with fl_csv_load first");
        goto cleanup;
    }
    if (csv->n_rows > INT32_MAX) {
        rc = fl_seterr(err, FL_EINVAL, "%s: %lld rows, at most %d supported", csv->path,
                       (long long)csv->n_rows, INT32_MAX);
        goto cleanup;
    }
    if ((rc = fl_encoder_init(enc, schema, csv, err))) goto cleanup;
    if (!(y = malloc((size_t)(csv->n_rows > 0 ? csv->n_rows : 1) * sizeof *y))) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    if ((rc = fl_encoder_labels(y, enc, csv, err))) goto cleanup;
    rc = fl_split_stratified(&tr, &ntr, &va, &nva, &te, &nte, y, csv->n_rows, enc->n_classes,
                             val_frac, test_frac, seed);
    if (rc) {
        rc = fl_seterr(err, rc,
                       "split: expected 0 <= val_frac, 0 <= test_frac, val_frac + test_frac < 1 "
                       "(got %g and %g)",
                       val_frac, test_frac);
        goto cleanup;
    }
    if ((rc = fl_stats_init(&st, enc))) goto cleanup;
    if ((rc = fl_stats_accumulate(&st, enc, csv, tr, ntr, err))) goto cleanup;
    if ((rc = fl_encoder_finish(enc, &st))) {
        rc = fl_seterr(err, rc, "%s: a numeric column's sums overflowed", csv->path);
        goto cleanup;
    }
    if ((rc = fl_dataset_encode(train, enc, csv, y, tr, ntr, err))) goto cleanup;
    if ((rc = fl_dataset_encode(val, enc, csv, y, va, nva, err))) goto cleanup;
    if ((rc = fl_dataset_encode(test, enc, csv, y, te, nte, err))) goto cleanup;
    fl_debug("%s: %lld rows, %d features, %d classes; train %lld, val %lld, test %lld", csv->path,
             (long long)csv->n_rows, enc->n_features, enc->n_classes, (long long)ntr,
             (long long)nva, (long long)nte);
cleanup:
    free(y);
    free(tr);
    free(va);
    free(te);
    fl_stats_free(&st);
    if (rc == FL_ENOMEM) fl_seterr(err, rc, "%s: out of memory", csv->path ? csv->path : "data");
    if (rc) {
        fl_dataset_free(train);
        fl_dataset_free(val);
        fl_dataset_free(test);
        fl_encoder_free(enc);
    }
    return rc;
}
