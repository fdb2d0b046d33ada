/* schema.h: the data schema INI of DESIGN.md §4 ([schema], [groups], and
 * [levels] for categorical levels declared up front).
 *
 *   [schema]
 *   label = Status            ; required
 *   positive = good           ; label value that counts as 1; absent = multi-class
 *   features = *              ; or a comma list; '*' = every column not named elsewhere
 *   categorical = Home,Job    ; others are numeric
 *   sensitive = Age,Marital   ; fairness attributes; not features unless listed in features
 *   drop = futime,chapter     ; columns never read
 *   missing = ,NA             ; tokens that mean missing (default: the empty cell)
 *   log = Income,Debt         ; numeric features taken as ln(1 + v) (v >= 0) before
 *                             ; imputation and standardisation (skewed amounts)
 *   missing_indicators = Income ; numeric features that get a 0/1 "was missing"
 *                             ; feature beside their value (missingness that informs)
 *   [groups]                  ; fairness groups: category lists or numeric bins
 *   Age = <25,25-40,40-60,>=60
 *   Marital = married,single
 *   [levels]                  ; declared categorical levels (federations must declare or
 *   Home = owner,rent,other   ; compute them so every site one-hot encodes identically)
 *
 * Loading checks only the file itself; fl_schema_bind checks it against a CSV
 * header (unknown columns are errors that name the schema line). */
#ifndef FL_SCHEMA_H
#define FL_SCHEMA_H

#include "status.h"

struct fl_csv;

/* A comma-separated list value, with the schema line it came from. */
typedef struct fl_strlist {
    char **items;
    int n;
    int line; /* 0 when absent from the file */
} fl_strlist;

enum fl_group_kind { FL_GROUP_CATEGORIES = 0, FL_GROUP_BINS = 1 };

/* One sensitive attribute's fixed group grid. For bins, group g holds values v
 * with lo[g] <= v < hi[g] (lo may be -INFINITY, hi +INFINITY): "<25" is
 * [-inf, 25), "25-40" is [25, 40), ">=60" is [60, inf). */
typedef struct fl_group_def {
    char *attr;
    int kind; /* enum fl_group_kind */
    int n_groups;
    char **names;    /* (n_groups) the group labels as written */
    double *lo, *hi; /* (n_groups) bins only */
    int line;
} fl_group_def;

typedef struct fl_schema {
    char *path;
    char *label;
    int label_line;
    char *positive;   /* NULL: classes are the sorted distinct label values */
    int features_all; /* features = * (or absent) */
    fl_strlist features, categorical, sensitive, drop, missing;
    fl_strlist log, missing_indicators; /* numeric feature transforms */
    fl_group_def *groups;
    int n_groups;
    fl_strlist *levels; /* (n_levels) declared levels; levels[i].items for column level_cols[i] */
    char **level_cols;
    int n_levels;
} fl_schema;

/* Parses and validates the schema file. FL_EIO / FL_EPARSE / FL_EINVAL with
 * "path:line: ..." in err: missing label, unknown key, a bin that does not
 * parse, overlapping bins, a column in both categorical and drop, ... */
int fl_schema_load(fl_schema *s, const char *path, char err[FL_ERR_LEN]);
void fl_schema_free(fl_schema *s);

/* The group definition for attr, or NULL. */
const fl_group_def *fl_schema_group(const fl_schema *s, const char *attr);
/* The group index of a raw cell under def, or -1 (missing or in no group).
 * Numeric bins need a number: a cell that is not one gives -2. */
int fl_group_index(const fl_group_def *def, const char *cell);

#endif
