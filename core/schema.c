/* schema.c: loads and validates the data schema INI of DESIGN.md §4 (see
 * schema.h for the format). It reads the file with our own INI reader so that
 * every later complaint can name the line a setting came from, and checks
 * everything that can be checked without the CSV: unknown sections and keys,
 * empty or duplicate list items, a column given two incompatible roles, group
 * bins that do not parse or overlap, groups for an attribute that is not
 * sensitive, declared levels for a column that is not categorical. Columns are
 * matched against a CSV header later, by fl_encoder_init.
 *
 * Group kind is decided by the attribute's type, not guessed from the text: a
 * sensitive attribute listed in `categorical` has category groups (each item
 * a cell value, matched exactly), any other has numeric bins. A category such
 * as "25-40" therefore stays a category, and a typo in a bin is an error
 * rather than a silent category. */
#include "schema.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ini.h"

/* ============================== small helpers ============================== */

static void strlist_free(fl_strlist *l) {
    if (!l) return;
    for (int i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

static int in_list(const fl_strlist *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->items[i], s)) return 1;
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A duplicated item of items[0..n), or NULL. Sorting a copy keeps this
 * O(n log n) on long (possibly hostile) lists. */
static const char *find_dup(char **items, int n, int *nomem) {
    *nomem = 0;
    if (n < 2) return NULL;
    char **tmp = malloc((size_t)n * sizeof *tmp);
    if (!tmp) {
        *nomem = 1;
        return NULL;
    }
    memcpy(tmp, items, (size_t)n * sizeof *tmp);
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_str_ptr);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (!strcmp(tmp[i - 1], tmp[i])) dup = tmp[i];
    free(tmp);
    return dup;
}

/* Splits a comma list, trimming blanks around each item. An empty value is
 * an empty list unless allow_empty_items, in which case it is the one empty
 * item (`missing =` means "the empty cell"). Empty items are errors for
 * column lists (",," is a typo there) and meaningful for `missing`. */
static int split_list(fl_strlist *out, const char *path, const char *sec, const char *key,
                      const char *value, int line, int allow_empty_items, char *err) {
    memset(out, 0, sizeof *out);
    out->line = line;
    int rc = 0, cap = 0;
    if (!*value && !allow_empty_items) return 0;
    const char *p = value;
    for (;;) {
        const char *c = strchr(p, ',');
        const char *b = p, *e = c ? c : p + strlen(p);
        while (b < e && isspace((unsigned char)*b))
            b++;
        while (e > b && isspace((unsigned char)e[-1]))
            e--;
        if (b == e && !allow_empty_items) {
            rc = fl_seterr(err, FL_EPARSE,
                           "%s:%d: key '%s' in [%s]: empty item in the list '%s' (expected "
                           "comma-separated names)",
                           path, line, key, sec, value);
            goto cleanup;
        }
        if (out->n == cap) {
            int nc = cap ? cap * 2 : 8;
            char **ni = realloc(out->items, (size_t)nc * sizeof *ni);
            if (!ni) {
                rc = FL_ENOMEM;
                goto cleanup;
            }
            out->items = ni;
            cap = nc;
        }
        char *item = malloc((size_t)(e - b) + 1);
        if (!item) {
            rc = FL_ENOMEM;
            goto cleanup;
        }
        memcpy(item, b, (size_t)(e - b));
        item[e - b] = 0;
        out->items[out->n++] = item;
        if (!c) break;
        p = c + 1;
    }
    int nomem;
    const char *dup = find_dup(out->items, out->n, &nomem);
    if (nomem) {
        rc = FL_ENOMEM;
    } else if (dup) {
        rc = fl_seterr(err, FL_EPARSE, "%s:%d: key '%s' in [%s]: '%s' is listed twice", path, line,
                       key, sec, dup);
    }
cleanup:
    if (rc) strlist_free(out);
    return rc;
}

/* Length of the decimal number at s ([+-]digits[.digits][e[+-]digits]), 0 if
 * none. Stricter than strtod on purpose: no "nan", "inf" or hex, which would
 * pass strtod and then poison training or a bin edge. */
static size_t number_prefix(const char *s) {
    size_t i = 0, digits = 0;
    if (s[i] == '+' || s[i] == '-') i++;
    while (isdigit((unsigned char)s[i]))
        i++, digits++;
    if (s[i] == '.') {
        i++;
        while (isdigit((unsigned char)s[i]))
            i++, digits++;
    }
    if (!digits) return 0;
    if (s[i] == 'e' || s[i] == 'E') {
        size_t j = i + 1;
        if (s[j] == '+' || s[j] == '-') j++;
        if (isdigit((unsigned char)s[j])) {
            while (isdigit((unsigned char)s[j]))
                j++;
            i = j;
        }
    }
    return i;
}

/* Parses the number at s into *v and returns its length, 0 if there is no
 * finite decimal number there. */
static size_t parse_number(double *v, const char *s) {
    size_t n = number_prefix(s);
    if (!n) return 0;
    char *end;
    *v = strtod(s, &end);
    if ((size_t)(end - s) != n || !isfinite(*v)) return 0;
    return n;
}

static const char *skip_blank(const char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* ================================== groups ================================= */

static void group_free(fl_group_def *g) {
    free(g->attr);
    for (int i = 0; i < g->n_groups; i++)
        free(g->names[i]);
    free(g->names);
    free(g->lo);
    free(g->hi);
    memset(g, 0, sizeof *g);
}

/* One bin: "<a", "<=a", ">a", ">=a" or "a-b" (a < b), as [lo, hi). The
 * inclusive and exclusive forms move the edge by one ulp so that every bin
 * stays half-open, which keeps fl_group_index a single comparison pair. */
static int parse_bin(double *lo, double *hi, const char *s) {
    double a, b;
    size_t n;
    s = skip_blank(s);
    if (s[0] == '<' || s[0] == '>') {
        int le = s[0] == '<', eq = s[1] == '=';
        const char *q = skip_blank(s + 1 + eq);
        if (!(n = parse_number(&a, q)) || *skip_blank(q + n)) return -1;
        if (le) {
            *lo = -INFINITY;
            *hi = eq ? nextafter(a, INFINITY) : a;
        } else {
            *lo = eq ? a : nextafter(a, INFINITY);
            *hi = INFINITY;
        }
        return 0;
    }
    if (!(n = parse_number(&a, s))) return -1;
    s = skip_blank(s + n);
    if (*s != '-') return -1;
    s = skip_blank(s + 1);
    if (!(n = parse_number(&b, s)) || *skip_blank(s + n)) return -1;
    if (!(a < b)) return -1;
    *lo = a;
    *hi = b;
    return 0;
}

static int cmp_bin_lo(const void *a, const void *b, const fl_group_def *g) {
    int i = *(const int *)a, j = *(const int *)b;
    return (g->lo[i] > g->lo[j]) - (g->lo[i] < g->lo[j]);
}

/* Insertion sort of bin indices by lower edge; group lists are short and
 * qsort offers no context pointer in C11. */
static void sort_bins(int *idx, const fl_group_def *g) {
    for (int i = 1; i < g->n_groups; i++) {
        int v = idx[i], j = i;
        while (j > 0 && cmp_bin_lo(&idx[j - 1], &v, g) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

static int parse_group(fl_group_def *g, const char *path, const char *attr, const char *value,
                       int line, int categorical, char *err) {
    memset(g, 0, sizeof *g);
    fl_strlist items;
    int *idx = NULL;
    int rc = split_list(&items, path, "groups", attr, value, line, 0, err);
    if (rc) return rc;
    g->line = line;
    g->kind = categorical ? FL_GROUP_CATEGORIES : FL_GROUP_BINS;
    g->attr = strdup(attr);
    if (!g->attr) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    if (!items.n) {
        rc = fl_seterr(err, FL_EPARSE, "%s:%d: groups for '%s': expected at least one group", path,
                       line, attr);
        goto cleanup;
    }
    g->n_groups = items.n;
    g->names = items.items;
    items.items = NULL;
    items.n = 0;
    if (categorical) goto cleanup;

    g->lo = malloc((size_t)g->n_groups * sizeof *g->lo);
    g->hi = malloc((size_t)g->n_groups * sizeof *g->hi);
    idx = malloc((size_t)g->n_groups * sizeof *idx);
    if (!g->lo || !g->hi || !idx) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    for (int i = 0; i < g->n_groups; i++) {
        if (parse_bin(&g->lo[i], &g->hi[i], g->names[i])) {
            rc = fl_seterr(err, FL_EPARSE,
                           "%s:%d: groups for '%s': expected a numeric bin like '<25', "
                           "'25-40', '>=60' (lower < upper), got '%s' (list '%s' in "
                           "categorical for category groups)",
                           path, line, attr, g->names[i], attr);
            goto cleanup;
        }
        idx[i] = i;
    }
    sort_bins(idx, g);
    for (int k = 1; k < g->n_groups; k++) {
        int a = idx[k - 1], b = idx[k];
        if (g->lo[b] < g->hi[a]) {
            rc = fl_seterr(err, FL_EINVAL, "%s:%d: groups for '%s': bins '%s' and '%s' overlap",
                           path, line, attr, g->names[a], g->names[b]);
            goto cleanup;
        }
    }
cleanup:
    free(idx);
    strlist_free(&items);
    if (rc) group_free(g);
    return rc;
}

const fl_group_def *fl_schema_group(const fl_schema *s, const char *attr) {
    if (!s || !attr) return NULL;
    for (int i = 0; i < s->n_groups; i++)
        if (!strcmp(s->groups[i].attr, attr)) return &s->groups[i];
    return NULL;
}

int fl_group_index(const fl_group_def *def, const char *cell) {
    if (!def || !cell) return -1;
    if (def->kind == FL_GROUP_CATEGORIES) {
        for (int g = 0; g < def->n_groups; g++)
            if (!strcmp(def->names[g], cell)) return g;
        return -1;
    }
    const char *s = skip_blank(cell);
    if (!*s) return -1;
    double v;
    size_t n = parse_number(&v, s);
    if (!n || *skip_blank(s + n)) return -2;
    for (int g = 0; g < def->n_groups; g++)
        if (def->lo[g] <= v && v < def->hi[g]) return g;
    return -1;
}

/* ================================== schema ================================= */

void fl_schema_free(fl_schema *s) {
    if (!s) return;
    free(s->path);
    free(s->label);
    free(s->positive);
    strlist_free(&s->features);
    strlist_free(&s->categorical);
    strlist_free(&s->sensitive);
    strlist_free(&s->drop);
    strlist_free(&s->missing);
    strlist_free(&s->log);
    strlist_free(&s->missing_indicators);
    for (int i = 0; i < s->n_groups; i++)
        group_free(&s->groups[i]);
    free(s->groups);
    for (int i = 0; i < s->n_levels; i++) {
        strlist_free(&s->levels[i]);
        free(s->level_cols[i]);
    }
    free(s->levels);
    free(s->level_cols);
    memset(s, 0, sizeof *s);
}

static int get_list(fl_strlist *out, const fl_ini *ini, const char *key, int allow_empty,
                    char *err) {
    const fl_ini_entry *e = fl_ini_find(ini, "schema", key);
    if (!e) {
        memset(out, 0, sizeof *out);
        return 0;
    }
    return split_list(out, ini->path, "schema", key, e->value, e->line, allow_empty, err);
}

/* A single-value key: present means non-empty and not a list. */
static int get_single(char **out, int *line, const fl_ini *ini, const char *key, char *err) {
    const fl_ini_entry *e = fl_ini_find(ini, "schema", key);
    *out = NULL;
    if (line) *line = 0;
    if (!e) return 0;
    if (!*e->value || strchr(e->value, ','))
        return fl_seterr(err, FL_EPARSE,
                         "%s:%d: key '%s' in [schema]: expected one value, got '%s'", ini->path,
                         e->line, key, e->value);
    if (!(*out = strdup(e->value))) return FL_ENOMEM;
    if (line) *line = e->line;
    return 0;
}

/* Column `name` may not appear in both lists: names the line of `b`. */
static int check_disjoint(const fl_schema *s, const fl_strlist *a, const char *an,
                          const fl_strlist *b, const char *bn, char *err) {
    for (int i = 0; i < b->n; i++)
        if (in_list(a, b->items[i]))
            return fl_seterr(err, FL_EINVAL, "%s:%d: column '%s' is in both %s (line %d) and %s",
                             s->path, b->line, b->items[i], an, a->line, bn);
    return 0;
}

static int schema_from_ini(fl_schema *s, const fl_ini *ini, char *err) {
    static const char *const known[] = {
        "label", "positive", "features", "categorical",        "sensitive",
        "drop",  "missing",  "log",      "missing_indicators", NULL};
    const char *path = ini->path;
    int rc;

    for (int i = 0; i < ini->n_entries; i++) {
        const fl_ini_entry *e = &ini->entries[i];
        if (!strcmp(e->section, "schema") || !strcmp(e->section, "groups") ||
            !strcmp(e->section, "levels"))
            continue;
        if (!*e->section)
            return fl_seterr(err, FL_EPARSE,
                             "%s:%d: key '%s' outside any section (expected [schema], [groups] "
                             "or [levels])",
                             path, e->line, e->key);
        return fl_seterr(err, FL_EPARSE,
                         "%s:%d: key '%s' in unknown section [%s] (expected [schema], [groups] "
                         "or [levels])",
                         path, e->line, e->key, e->section);
    }
    for (int i = 0; i < ini->n_sections; i++) {
        const char *sec = ini->sections[i];
        if (strcmp(sec, "schema") && strcmp(sec, "groups") && strcmp(sec, "levels"))
            return fl_seterr(err, FL_EPARSE,
                             "%s: unknown section [%s] (expected [schema], [groups] or [levels])",
                             path, sec);
    }
    if ((rc = fl_ini_check_keys(ini, "schema", known, err))) return rc;

    if ((rc = get_single(&s->label, &s->label_line, ini, "label", err))) return rc;
    if (!s->label)
        return fl_seterr(err, FL_EINVAL, "%s: [schema] needs a 'label' key naming the label column",
                         path);
    if ((rc = get_single(&s->positive, NULL, ini, "positive", err))) return rc;

    const fl_ini_entry *fe = fl_ini_find(ini, "schema", "features");
    if (!fe) {
        s->features_all = 1;
    } else if (!strcmp(fe->value, "*")) {
        s->features_all = 1;
        s->features.line = fe->line;
    } else {
        if ((rc = get_list(&s->features, ini, "features", 0, err))) return rc;
        if (!s->features.n)
            return fl_seterr(err, FL_EPARSE,
                             "%s:%d: key 'features' in [schema]: expected '*' or a list of columns",
                             path, fe->line);
        if (in_list(&s->features, "*"))
            return fl_seterr(err, FL_EPARSE,
                             "%s:%d: key 'features' in [schema]: '*' cannot be combined with "
                             "column names (list every feature instead)",
                             path, fe->line);
    }
    if ((rc = get_list(&s->categorical, ini, "categorical", 0, err))) return rc;
    if ((rc = get_list(&s->sensitive, ini, "sensitive", 0, err))) return rc;
    if ((rc = get_list(&s->drop, ini, "drop", 0, err))) return rc;
    if ((rc = get_list(&s->missing, ini, "missing", 1, err))) return rc;
    if ((rc = get_list(&s->log, ini, "log", 0, err))) return rc;
    if ((rc = get_list(&s->missing_indicators, ini, "missing_indicators", 0, err))) return rc;
    if (!fl_ini_find(ini, "schema", "missing")) {
        /* Default: only the empty cell is missing. */
        if (!(s->missing.items = malloc(sizeof *s->missing.items)) ||
            !(s->missing.items[0] = strdup("")))
            return FL_ENOMEM;
        s->missing.n = 1;
    }

    /* Roles that contradict each other. */
    const fl_strlist *lists[] = {&s->features, &s->sensitive, &s->drop};
    const char *lnames[] = {"features", "sensitive", "drop"};
    for (int k = 0; k < 3; k++)
        if (in_list(lists[k], s->label))
            return fl_seterr(err, FL_EINVAL, "%s:%d: the label column '%s' cannot also be in %s",
                             path, lists[k]->line, s->label, lnames[k]);
    if ((rc = check_disjoint(s, &s->features, "features", &s->drop, "drop", err))) return rc;
    if ((rc = check_disjoint(s, &s->categorical, "categorical", &s->drop, "drop", err))) return rc;
    if ((rc = check_disjoint(s, &s->sensitive, "sensitive", &s->drop, "drop", err))) return rc;
    /* The transforms are for numeric features. */
    const fl_strlist *tl[] = {&s->log, &s->missing_indicators};
    const char *tn[] = {"log", "missing_indicators"};
    for (int k = 0; k < 2; k++) {
        if (in_list(tl[k], s->label))
            return fl_seterr(err, FL_EINVAL, "%s:%d: the label column '%s' cannot be in %s", path,
                             tl[k]->line, s->label, tn[k]);
        if ((rc = check_disjoint(s, &s->categorical, "categorical", tl[k], tn[k], err)) ||
            (rc = check_disjoint(s, &s->drop, "drop", tl[k], tn[k], err)))
            return rc;
    }
    if (s->positive && in_list(&s->missing, s->positive)) {
        const fl_ini_entry *pe = fl_ini_find(ini, "schema", "positive");
        return fl_seterr(err, FL_EINVAL, "%s:%d: positive value '%s' is also a missing token", path,
                         pe->line, s->positive);
    }

    /* [groups] and [levels], in file order. */
    int ng = 0, nl = 0;
    for (int i = 0; i < ini->n_entries; i++) {
        ng += !strcmp(ini->entries[i].section, "groups");
        nl += !strcmp(ini->entries[i].section, "levels");
    }
    if (ng && !(s->groups = calloc((size_t)ng, sizeof *s->groups))) return FL_ENOMEM;
    if (nl && (!(s->levels = calloc((size_t)nl, sizeof *s->levels)) ||
               !(s->level_cols = calloc((size_t)nl, sizeof *s->level_cols))))
        return FL_ENOMEM;
    for (int i = 0; i < ini->n_entries; i++) {
        const fl_ini_entry *e = &ini->entries[i];
        if (!strcmp(e->section, "groups")) {
            if (!in_list(&s->sensitive, e->key))
                return fl_seterr(err, FL_EINVAL,
                                 "%s:%d: groups for '%s', which is not listed in sensitive", path,
                                 e->line, e->key);
            int cat = in_list(&s->categorical, e->key);
            if ((rc = parse_group(&s->groups[s->n_groups], path, e->key, e->value, e->line, cat,
                                  err)))
                return rc;
            s->n_groups++;
        } else if (!strcmp(e->section, "levels")) {
            int is_label = !strcmp(e->key, s->label);
            if (!is_label && !in_list(&s->categorical, e->key))
                return fl_seterr(err, FL_EINVAL,
                                 "%s:%d: levels declared for '%s', which is neither categorical "
                                 "nor the label",
                                 path, e->line, e->key);
            if (!(s->level_cols[s->n_levels] = strdup(e->key))) return FL_ENOMEM;
            fl_strlist *lv = &s->levels[s->n_levels];
            s->n_levels++; /* counted before parsing so that free sees the name */
            if ((rc = split_list(lv, path, "levels", e->key, e->value, e->line, 0, err))) return rc;
            if (!lv->n)
                return fl_seterr(err, FL_EPARSE, "%s:%d: levels for '%s': expected a list", path,
                                 e->line, e->key);
            for (int k = 0; k < lv->n; k++)
                if (in_list(&s->missing, lv->items[k]))
                    return fl_seterr(err, FL_EINVAL,
                                     "%s:%d: level '%s' of '%s' is also a missing token", path,
                                     e->line, lv->items[k], e->key);
            if (is_label && s->positive && !in_list(lv, s->positive))
                return fl_seterr(err, FL_EINVAL,
                                 "%s:%d: the declared classes of '%s' do not include the positive "
                                 "value '%s'",
                                 path, e->line, e->key, s->positive);
        }
    }
    return 0;
}

int fl_schema_load(fl_schema *s, const char *path, char err[FL_ERR_LEN]) {
    memset(s, 0, sizeof *s);
    fl_ini ini;
    int rc = fl_ini_load(&ini, path, err);
    if (rc) return rc;
    if (!(s->path = strdup(path))) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    rc = schema_from_ini(s, &ini, err);
cleanup:
    fl_ini_free(&ini);
    if (rc == FL_ENOMEM) fl_seterr(err, rc, "%s: out of memory", path);
    if (rc) fl_schema_free(s);
    return rc;
}
