/* cmd_export.c: `cohort export` (DESIGN.md §4): a global model out of the
 * aggregator's database, as the Cohort model file (`cohort train --out`'s
 * format, byte for byte what the aggregator committed and signed) or as ONNX
 * (core/onnx.h), for serving outside Cohort.
 *
 * Provenance first: a model leaves the database only when the whole audit
 * log verifies (fl_audit_verify_ex: hash chain, signed chain heads, every
 * model's SHA-256 and signature; against the federation CA with --ca), and
 * only when the blob read matches the SHA-256 committed with it. The ONNX
 * file carries the round, the federation, the model's SHA-256 and spec in
 * its metadata_props. The output is written to a temporary file and renamed:
 * nothing half-written is left on any failure.
 *
 * `--model F` exports a model file instead (no provenance: it is whatever
 * the file holds, checked for consistency by fl_model_deserialize).
 *
 * Exit codes: 0 written; 1 the audit log does not verify, the blob does not
 * match its SHA-256, or the output cannot be written; 2 bad usage, an
 * unreadable database or model file, or a round that has no model. */
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator/audit.h"
#include "cli/clikit.h"
#include "cli/commands.h"
#include "client/site.h"
#include "core/ini.h"
#include "core/onnx.h"

static void usage(FILE *f) {
    fprintf(f, "usage: cohort export --db aggregator.db [--round N] --format onnx|cohort --out F\n"
               "                     [--schema S.ini --data F.csv] [--ca ca.crt]\n"
               "                     [--allow-unsigned] [--json]\n"
               "       cohort export --model F.cohort --format onnx|cohort --out F [--json]\n"
               "\n"
               "Exports a global model: the model committed in round N (default: the last\n"
               "committed round) of an aggregator database, once its audit log verifies, or a\n"
               "model file written by `cohort train --out`.\n"
               "  --format onnx     an ONNX graph (IR 7, opset 13): input \"features\" (N, d),\n"
               "                    the encoded features; output \"probability\"\n"
               "  --format cohort   the Cohort model file, as committed and signed\n"
               "  --schema, --data  the federation's schema and a site's data file (for its\n"
               "                    header): the ONNX graph then takes the raw columns, one\n"
               "                    input each (float, NaN = missing; or string), and encodes\n"
               "                    them as the federation did\n"
               "  --ca              the federation CA: the database's aggregator certificate\n"
               "                    must chain to it\n"
               "  --allow-unsigned  accept a database whose models nobody signed\n"
               "  --json            one JSON object on stdout\n"
               "Exit status: 0 written; 1 the audit log or the model does not verify, or the\n"
               "output cannot be written; 2 bad usage or input.\n");
}

typedef struct model_src {
    char *stats; /* meta "stats": the federation's summed statistics (text), or NULL */
    uint8_t *blob;
    size_t len;
    int64_t round; /* -1: from a file */
    uint8_t sha[32];
    char federation[256];
    int signed_;
} model_src;

/* Reads round (or the last one, round < 0) from db in one read transaction.
 * 2 (with the message printed) for an unreadable database or no such round,
 * 1 for a blob that does not match its stored SHA-256. */
static int load_from_db(model_src *m, const char *db, long round) {
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int rc = 2;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "cohort export: %s: cannot open: %s\n", db, h ? sqlite3_errmsg(h) : "?");
        goto cleanup;
    }
    const char *sql = round < 0 ? "SELECT round, sha256, blob, signature IS NOT NULL FROM models "
                                  "ORDER BY round DESC LIMIT 1"
                                : "SELECT round, sha256, blob, signature IS NOT NULL FROM models "
                                  "WHERE round = ?1";
    if (sqlite3_exec(h, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "cohort export: %s: not an aggregator database: %s\n", db,
                sqlite3_errmsg(h));
        goto cleanup;
    }
    if (round >= 0) sqlite3_bind_int64(st, 1, round);
    int s = sqlite3_step(st);
    if (s != SQLITE_ROW) {
        if (s != SQLITE_DONE)
            fprintf(stderr, "cohort export: %s: %s\n", db, sqlite3_errmsg(h));
        else if (round < 0)
            fprintf(stderr, "cohort export: %s: no round has been committed yet\n", db);
        else
            fprintf(stderr, "cohort export: --round %ld: %s has no model committed in that round\n",
                    round, db);
        goto cleanup;
    }
    const void *sha = sqlite3_column_blob(st, 1);
    const void *blob = sqlite3_column_blob(st, 2);
    int sha_len = sqlite3_column_bytes(st, 1), blob_len = sqlite3_column_bytes(st, 2);
    m->round = sqlite3_column_int64(st, 0);
    m->signed_ = sqlite3_column_int(st, 3);
    if (!sha || sha_len != 32 || !blob || blob_len < 1) {
        fprintf(stderr, "cohort export: %s: round %lld: the model row is damaged\n", db,
                (long long)m->round);
        rc = 1;
        goto cleanup;
    }
    memcpy(m->sha, sha, 32);
    m->len = (size_t)blob_len;
    if (!(m->blob = malloc(m->len))) {
        fprintf(stderr, "cohort export: out of memory\n");
        rc = 1;
        goto cleanup;
    }
    memcpy(m->blob, blob, m->len);
    uint8_t h2[32];
    crypto_hash_sha256(h2, m->blob, m->len);
    if (sodium_memcmp(h2, m->sha, 32)) {
        fprintf(stderr,
                "cohort export: %s: round %lld: the model does not match the SHA-256 committed "
                "with it; nothing exported\n",
                db, (long long)m->round);
        rc = 1;
        goto cleanup;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(h, "SELECT key, value FROM meta WHERE key IN ('federation_id', 'stats')",
                           -1, &st, NULL) == SQLITE_OK)
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *k = (const char *)sqlite3_column_text(st, 0);
            const char *v = (const char *)sqlite3_column_text(st, 1);
            if (!k || !v) continue;
            if (!strcmp(k, "federation_id"))
                snprintf(m->federation, sizeof m->federation, "%s", v);
            else if (!(m->stats = strdup(v))) {
                fprintf(stderr, "cohort export: out of memory\n");
                rc = 1;
                goto cleanup;
            }
        }
    rc = 0;
cleanup:
    sqlite3_finalize(st);
    if (h) sqlite3_exec(h, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(h);
    return rc;
}

static int load_from_file(model_src *m, const char *path) {
    char err[FL_ERR_LEN] = "", *b;
    size_t n;
    if (fl_read_file(&b, &n, path, err)) {
        fprintf(stderr, "cohort export: --model %s\n", err);
        return 2;
    }
    m->blob = (uint8_t *)b;
    m->len = n;
    m->round = -1;
    crypto_hash_sha256(m->sha, m->blob, m->len);
    return 0;
}

int cmd_export(int argc, char **argv) {
    const char *db = NULL, *file = NULL, *format = NULL, *out = NULL, *ca = NULL, *schema = NULL,
               *data = NULL;
    long round = -1;
    int json = 0, flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(f, "--json")) {
            json = 1;
        } else if (!strcmp(f, "--allow-unsigned")) {
            flags |= FL_AUDIT_ALLOW_UNSIGNED;
        } else if (!strcmp(f, "--round")) {
            if (i + 1 >= argc) return fl_cli_bad(f, "", "a round number");
            if (fl_cli_long(&round, f, argv[++i], 0, 1L << 40)) return 2;
        } else if (!strcmp(f, "--db") || !strcmp(f, "--model") || !strcmp(f, "--format") ||
                   !strcmp(f, "--out") || !strcmp(f, "--ca") || !strcmp(f, "--schema") ||
                   !strcmp(f, "--data")) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "cohort export: %s: expected a value\n", f);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(f, "--db")) db = v;
            if (!strcmp(f, "--model")) file = v;
            if (!strcmp(f, "--format")) format = v;
            if (!strcmp(f, "--out")) out = v;
            if (!strcmp(f, "--ca")) ca = v;
            if (!strcmp(f, "--schema")) schema = v;
            if (!strcmp(f, "--data")) data = v;
        } else {
            fprintf(stderr, "cohort export: unknown option '%s'\n", f);
            usage(stderr);
            return 2;
        }
    }
    const char *problem =
        !db == !file                                         ? "give one of --db and --model"
        : !format                                            ? "--format is required"
        : strcmp(format, "onnx") && strcmp(format, "cohort") ? "--format: expected onnx or cohort"
        : !out                                               ? "--out is required"
        : file && (round >= 0 || ca || flags || schema || data)
            ? "--round, --ca, --allow-unsigned, --schema and --data go with --db"
        : !schema != !data                 ? "--schema and --data go together"
        : schema && strcmp(format, "onnx") ? "--schema and --data go with --format onnx"
                                           : NULL;
    if (problem) {
        fprintf(stderr, "cohort export: %s\n", problem);
        usage(stderr);
        return 2;
    }

    model_src m;
    memset(&m, 0, sizeof m);
    fl_site site;
    int site_open = 0;
    int rc = db ? load_from_db(&m, db, round) : load_from_file(&m, file);
    fl_model_spec spec;
    float *params = NULL;
    uint8_t *onnx = NULL;
    size_t onnx_len = 0;
    char err[FL_ERR_LEN] = "", hex[65], spec_name[FL_SPEC_LEN] = "";
    if (rc) goto cleanup;
    if (db) {
        /* The model was read first, so the check below covers its row. */
        fl_audit_report r;
        if (fl_audit_verify_ex(&r, db, ca, flags, err)) {
            fprintf(stderr, "cohort export: %s\n", err);
            rc = 2;
            goto cleanup;
        }
        if (!r.ok) {
            fprintf(stderr,
                    "cohort export: %s: the audit log does not verify (%s row %lld: %s); nothing "
                    "exported\n",
                    db, r.table, (long long)r.first_bad_id, r.reason);
            rc = 1;
            goto cleanup;
        }
    }
    if (fl_model_deserialize(&spec, &params, m.blob, m.len, err)) {
        fprintf(stderr, "cohort export: %s: %s\n", db ? db : file, err);
        rc = db ? 1 : 2;
        goto cleanup;
    }
    if (schema) {
        /* The federation's encoder: the schema bound to a site's header and
         * levels, fitted with the statistics the aggregator summed, as every
         * site and `cohort simulate`'s final evaluation fit it. */
        double *stats = NULL;
        int64_t n_stats = 0;
        if (!m.stats) {
            fprintf(stderr, "cohort export: %s: no federation statistics (meta stats)\n", db);
            rc = 2;
            goto cleanup;
        }
        if (fl_cli_parse_stats(&stats, &n_stats, m.stats, db, err) ||
            fl_site_open(&site, data, schema, 0.2, 1, FL_DEVICE_CPU, err) ||
            (site_open = 1, fl_site_encode(&site, stats, n_stats, err))) {
            fprintf(stderr, "cohort export: %s\n", err);
            free(stats);
            rc = 2;
            goto cleanup;
        }
        free(stats);
        if (site.enc.n_features != spec.n_in) {
            fprintf(stderr,
                    "cohort export: --schema %s with --data %s encodes %d features; the model "
                    "takes %d (not this federation's schema?)\n",
                    schema, data, site.enc.n_features, spec.n_in);
            rc = 2;
            goto cleanup;
        }
    }
    fl_model_spec_name(spec_name, &spec);
    sodium_bin2hex(hex, sizeof hex, m.sha, 32);
    const void *bytes = m.blob;
    size_t n_bytes = m.len;
    if (!strcmp(format, "onnx")) {
        char round_txt[32], n_in[32], classes[32];
        snprintf(round_txt, sizeof round_txt, "%lld", (long long)m.round);
        snprintf(n_in, sizeof n_in, "%d", spec.n_in);
        snprintf(classes, sizeof classes, "%d", spec.n_classes);
        fl_onnx_prop props[7] = {{"cohort.model", spec_name},
                                 {"cohort.model_sha256", hex},
                                 {"cohort.features", n_in},
                                 {"cohort.classes", classes},
                                 {"cohort.inputs", schema ? "columns" : "encoded"}};
        int np = 5;
        if (db) {
            props[np++] = (fl_onnx_prop){"cohort.round", round_txt};
            props[np++] = (fl_onnx_prop){"cohort.federation_id", m.federation};
        }
        if ((rc = fl_onnx_export(&onnx, &onnx_len, &spec, params, schema ? &site.enc : NULL,
                                 m.round < 0 ? 0 : m.round, props, np, err))) {
            fprintf(stderr, "cohort export: %s\n", err);
            rc = 1;
            goto cleanup;
        }
        bytes = onnx;
        n_bytes = onnx_len;
    }
    if (fl_cli_write_file(out, bytes, n_bytes, err)) {
        fprintf(stderr, "cohort export: %s\n", err);
        rc = 1;
        goto cleanup;
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        if (!j) {
            rc = 1;
            goto cleanup;
        }
        cJSON_AddStringToObject(j, "out", out);
        cJSON_AddStringToObject(j, "format", format);
        cJSON_AddNumberToObject(j, "bytes", (double)n_bytes);
        if (db) {
            cJSON_AddNumberToObject(j, "round", (double)m.round);
            cJSON_AddStringToObject(j, "federation_id", m.federation);
            cJSON_AddBoolToObject(j, "signed", m.signed_);
            cJSON_AddBoolToObject(j, "ca_checked", ca != NULL);
        }
        cJSON_AddStringToObject(j, "model", spec_name);
        cJSON_AddNumberToObject(j, "features", spec.n_in);
        cJSON_AddNumberToObject(j, "classes", spec.n_classes);
        cJSON_AddNumberToObject(j, "n_params", (double)fl_model_spec_nparams(&spec));
        cJSON_AddStringToObject(j, "model_sha256", hex);
        if (fl_cli_print_json(j)) rc = 1;
    } else {
        if (db)
            fprintf(stderr, "cohort export: wrote %s (%s, %zu bytes): round %lld of %s\n", out,
                    format, n_bytes, (long long)m.round, db);
        else
            fprintf(stderr, "cohort export: wrote %s (%s, %zu bytes) from %s\n", out, format,
                    n_bytes, file);
    }
cleanup:
    if (site_open) fl_site_close(&site);
    free(m.stats);
    free(m.blob);
    free(params);
    free(onnx);
    return rc;
}
