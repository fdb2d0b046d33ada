/* fairness.h: the fairness and bias audit of DESIGN.md §10, split into the
 * part every site runs (integer counts on a fixed layout) and the part the
 * aggregator runs on the summed counts (rates, disparities, alerts, JSON).
 * docs/fairness.md gives every formula with its source.
 *
 * The layout is fixed before any data is seen: it comes from the schema's
 * [groups] (plus optional intersections such as "Age*Marital") and a number
 * of score bins on an equal grid over [0, 1]. Every site therefore sends a
 * vector of the same length, with a slot for every declared group whether or
 * not it holds rows of that group, and the vectors can be added, in the clear
 * or under secure aggregation, without revealing which site has which group.
 *
 * Count vector, all uint64 (B = n_bins, stride = 4 + 2B):
 *   block 0                the overall block (every row)
 *   then, audit by audit,  one block per group, in definition order
 *   a block:  TP, FP, TN, FN, hist0[B] (scores of label-0 rows), hist1[B]
 *             (scores of label-1 rows); a score s lands in bin
 *             min(floor(s B), B - 1).
 *
 * File-audit mode (`cohort fairness` on a predictions file) has no schema: its
 * layout has one audit whose groups are the distinct observed values of the
 * sensitive column(s), sorted byte-wise (fl_fairness_layout_observed). The
 * counts and the JSON are the same as in the federation. */
#ifndef FL_FAIRNESS_H
#define FL_FAIRNESS_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "schema.h"
#include "status.h"

#define FL_FAIRNESS_MAX_BINS 1000
/* Longest count vector a layout may have; the same as the wire format's
 * FL_WIRE_MAX_FAIRNESS, so every layout that builds also fits a message. */
#define FL_FAIRNESS_MAX_COUNTS 65536
/* Most groups one file-audit column (or column pair) may have. */
#define FL_FAIRNESS_MAX_OBSERVED 1000
/* Default minimum group size below which a group is "insufficient data". */
#define FL_FAIRNESS_MIN_GROUP_COUNT 30

/* Offsets inside one group block. */
enum { FL_FAIR_TP = 0, FL_FAIR_FP = 1, FL_FAIR_TN = 2, FL_FAIR_FN = 3, FL_FAIR_HIST = 4 };

/* One audit: a sensitive attribute, or the intersection of two. */
typedef struct fl_fairness_audit {
    char *name;     /* "Age", or "Age*Marital" for an intersection */
    int attr[2];    /* columns of the groups matrix; attr[1] = -1 for one attribute */
    int n_groups;   /* product of the attributes' group counts */
    char **labels;  /* (n_groups) "<25", or "<25/married" (first attribute outer) */
    int64_t offset; /* index in the count vector of group 0's block */
} fl_fairness_audit;

typedef struct fl_fairness_layout {
    int n_attr;        /* columns of the groups matrix fl_fairness_count takes */
    char **attr_names; /* (n_attr) */
    int *attr_groups;  /* (n_attr) groups defined for each attribute */
    int n_audits;
    fl_fairness_audit *audits; /* (n_audits) attributes in order, then intersections */
    int n_bins;                /* 0..FL_FAIRNESS_MAX_BINS; 0: no histograms (no AUC, calibration) */
    int64_t stride;            /* counts per block: 4 + 2 n_bins */
    int64_t n_counts;          /* stride * (1 + groups of all audits) */
    uint64_t fingerprint;      /* FNV-1a 64 of the canonical layout description */
    char fingerprint_hex[17];
} fl_fairness_layout;

/* Builds the layout from the schema's sensitive attributes, in the order of
 * its `sensitive` list (the column order of fl_dataset.groups), each with its
 * [groups] definition. intersections is NULL/"" or "A*B[,C*D...]" naming two
 * different sensitive attributes each. n_bins in [0, FL_FAIRNESS_MAX_BINS].
 * FL_EINVAL naming the schema file, line and attribute when a sensitive
 * attribute has no [groups] entry (a site may not derive groups from its own
 * data: that would reveal which groups it holds), an intersection that is
 * malformed, repeated or names an unknown attribute, or a layout longer than
 * FL_FAIRNESS_MAX_COUNTS. On failure *L holds nothing to free. */
int fl_fairness_layout_init(fl_fairness_layout *L, const fl_schema *s, const char *intersections,
                            int n_bins, char err[FL_ERR_LEN]);

/* File-audit mode: one audit over the distinct observed values of n_cols
 * columns (1 or 2). cells is (n, n_cols) row-major; a NULL or empty cell
 * puts its row in no group (groups[i] = -1; it still counts in the overall
 * block). With two columns a group is an observed pair, labelled "v1/v2" and
 * the audit "A*B"; groups are sorted byte-wise (first column first). Writes
 * each row's group to groups (n), ready for fl_fairness_count with n_attr 1.
 * FL_EINVAL when a column has more than FL_FAIRNESS_MAX_OBSERVED groups. */
int fl_fairness_layout_observed(fl_fairness_layout *L, int32_t *groups, const char *const *names,
                                const char *const *cells, int n_cols, int64_t n, int n_bins,
                                char err[FL_ERR_LEN]);

/* Frees what the layout owns; NULL or a zeroed layout is fine. */
void fl_fairness_layout_free(fl_fairness_layout *L);

/* Accessors. audit in [0, n_audits); group in [0, n_groups of the audit).
 * fl_fairness_block with audit -1 gives the overall block (offset 0). */
const char *fl_fairness_audit_name(const fl_fairness_layout *L, int audit);
int fl_fairness_n_groups(const fl_fairness_layout *L, int audit);
const char *fl_fairness_group_label(const fl_fairness_layout *L, int audit, int group);
int64_t fl_fairness_block(const fl_fairness_layout *L, int audit, int group);

/* Site side: adds n rows to counts (n_counts, caller-zeroed the first time;
 * added to, so several batches or sites can share one vector). groups is
 * (n, n_attr) as in fl_dataset (-1 or any negative = no group for that
 * attribute; such a row counts in the overall block and in no audit of that
 * attribute), y (n) in {0, 1}, score (n) = P(y = 1) in [0, 1]; a row is
 * predicted positive when score >= threshold. Checks everything before
 * adding anything: FL_EINVAL, with counts unchanged, when n_attr differs from
 * the layout, a label is not 0/1, a score is NaN or outside [0, 1], or a group
 * index is beyond its attribute's groups. */
int fl_fairness_count(uint64_t *counts, const fl_fairness_layout *L, const int32_t *groups,
                      int n_attr, const int32_t *y, const float *score, int64_t n,
                      double threshold);

/* Aggregator side options. Every limit is off when 0 or NaN; a "max" limit
 * alerts when the metric is above it, a "min" limit when below. */
typedef struct fl_fairness_options {
    double threshold;        /* the threshold the sites used; reported only */
    int64_t min_group_count; /* groups with fewer rows: "insufficient data" */
    double gei_alpha;        /* generalized entropy index alpha (default 2) */
    /* Privileged group per audit for average_odds_difference: privileged[i]
     * is a group label of the audit named privileged_attr[i]. Audits not
     * listed use the group with the highest selection rate. */
    const char *const *privileged_attr;
    const char *const *privileged;
    int n_privileged;
    /* alert limits */
    double max_demographic_parity_difference;
    double min_demographic_parity_ratio;
    double max_equalized_odds_difference;
    double min_equalized_odds_ratio;
    double max_equal_opportunity_difference;
    double max_average_odds_difference; /* on the absolute value */
    double min_disparate_impact;        /* default 0.8 (the four-fifths rule) */
    double max_generalized_entropy_index;
    double max_theil_index;
    /* client-level spread: sums over sites of each site's accuracy and its
     * square (secure sums); reported when n_sites > 0 */
    double site_accuracy_sum, site_accuracy_sumsq;
    int64_t n_sites;
} fl_fairness_options;

/* threshold 0.5, min_group_count FL_FAIRNESS_MIN_GROUP_COUNT, gei_alpha 2,
 * min_disparate_impact 0.8, every other limit off, no sites. */
void fl_fairness_options_init(fl_fairness_options *opt);

/* Aggregator side: the audit JSON from summed counts (n_counts) of layout L.
 * opt NULL = defaults. *out receives a new object the caller deletes:
 *   {"threshold","min_group_count","n_bins","layout" (fingerprint hex),
 *    "overall":{count,selection_rate,tpr,fpr,fnr,precision,accuracy,auc},
 *    "attributes":[{"attribute","groups":{label:{count,selection_rate,tpr,fpr,
 *        fnr,precision,accuracy,auc,calibration:[{lo,hi,predicted,observed,
 *        count}]} | {count,"status":"insufficient data"}},
 *      "disparities":{...} | null with "reason", "alerts":[...]}],
 *    "alerts":[{metric,value,limit,attribute}], "site_accuracy":{mean,
 *    variance,sites} (when opt->n_sites > 0)}
 * Undefined values (0/0) are null. FL_EINVAL when the counts contradict
 * themselves (histograms that do not add up to the confusion counts, an
 * audit with more rows than the overall block: a sign of a broken sum), an
 * unknown privileged group, or bad options; FL_ENOMEM. */
int fl_fairness_compute(cJSON **out, const fl_fairness_layout *L, const uint64_t *counts,
                        const fl_fairness_options *opt, char err[FL_ERR_LEN]);

#endif
