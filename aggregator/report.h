/* report.h: the audit report for compliance reviewers (DESIGN.md §11): one
 * JSON document built from the aggregator's SQLite database (read-only), and
 * a self-contained HTML rendering of that document (inline CSS and SVG, no
 * script, no external reference, print styles for PDF). The JSON twin is the
 * single source: the HTML shows nothing that is not in it, so a reviewer can
 * check one against the other. Sections: federation, model lineage,
 * participation and dropouts, accuracy/AUC/loss per round, privacy spend per
 * site, secure-aggregation settings, fairness of the last round and its
 * trends, audit-log verification, configuration. Every table or key that an
 * older database lacks is reported as "not recorded", never as an error.
 * docs/report.md describes the document and its JSON schema. */
#ifndef FL_REPORT_H
#define FL_REPORT_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "core/status.h"

/* Version of the JSON document's shape (key "report_version"). */
#define FL_REPORT_VERSION 1

typedef struct fl_report_options {
    /* Optional CA certificate: the audit verification then also checks that
     * the stored aggregator certificate chains to it. NULL: signatures are
     * checked against the stored certificate alone. */
    const char *ca_path;
    /* Optional fixed "generated_at" (ISO 8601); NULL: the current UTC time.
     * Lets tests and archives produce byte-identical reports. */
    const char *generated_at;
} fl_report_options;

/* Builds the report of the aggregator database at db_path, which is opened
 * read-only and never modified (the aggregator may be running). opt may be
 * NULL. On success *json is a new object the caller owns (cJSON_Delete).
 * Errors: FL_EINVAL when db_path is missing, not an SQLite file, or not a
 * Cohort aggregator database (err names the file and what is missing);
 * FL_EIO when reading fails; FL_ENOMEM. A failed audit verification is not
 * an error: it is the report's finding (audit.status "failed"). */
int fl_report_build(cJSON **json, const char *db_path, const fl_report_options *opt,
                    char err[FL_ERR_LEN]);

/* Renders a document made by fl_report_build as one HTML page. Every string
 * taken from the document is escaped, so text recorded by a site (its name,
 * a refusal reason) can never become markup. On success *html is a
 * NUL-terminated malloc'd buffer of *len bytes that the caller frees.
 * FL_EINVAL when json is not a report object; FL_ENOMEM. */
int fl_report_html(char **html, size_t *len, const cJSON *json, char err[FL_ERR_LEN]);

#endif
