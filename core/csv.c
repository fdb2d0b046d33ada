/* csv.c: the RFC 4180 reader of csv.h, the first step of the data pipeline
 * (DESIGN.md §4). One linear pass over the bytes with a small state machine:
 * every byte is looked at a bounded number of times, so a hostile file costs
 * time proportional to its size (this parser is a libFuzzer target). Cell
 * bytes are copied, unquoted and NUL-terminated, into one arena; cells are
 * recorded as arena offsets while parsing (the arena moves when it grows) and
 * turned into pointers at the end.
 *
 * Accepted beyond the RFC, because real exports do it: LF as well as CRLF
 * line ends, a missing final line end, a UTF-8 BOM, and lines that are
 * completely empty (skipped: a trailing blank line is common and a one-column
 * file can still say "" for an empty cell). Rejected: NUL bytes, a bare CR
 * outside quotes, a quote inside an unquoted field, text after a closing
 * quote. "Column" in messages is the 1-based field number. */
#include "csv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct csv_parser {
    const char *name;
    const unsigned char *p;
    size_t len, i;
    int64_t line; /* physical line of p[i], 1-based */

    char *arena;
    size_t alen, acap;
    size_t *off; /* arena offset of every cell, header first */
    size_t noff, offcap;
    int32_t *rec_line; /* start line of every data record */
    size_t nrec, reccap;
    int n_cols; /* 0 until the header is read */
    char *err;
} csv_parser;

void fl_csv_free(fl_csv *csv) {
    if (!csv) return;
    free(csv->path);
    free(csv->header);
    free(csv->cells);
    free(csv->line);
    free(csv->arena);
    memset(csv, 0, sizeof *csv);
}

/* Returns buf grown (elements of size sz) to hold at least need elements,
 * or NULL with buf untouched; doubling keeps appends amortised O(1). */
static void *grow(void *buf, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap) return buf;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / sz) return NULL;
        nc *= 2;
    }
    void *nb = realloc(buf, nc * sz);
    if (nb) *cap = nc;
    return nb;
}

static int arena_put(csv_parser *P, char c) {
    if (P->alen == P->acap) {
        char *na = grow(P->arena, &P->acap, P->alen + 1, 1);
        if (!na) return FL_ENOMEM;
        P->arena = na;
    }
    P->arena[P->alen++] = c;
    return 0;
}

/* The header name of field f (0-based) once the header is known, for
 * messages; "" while reading the header itself. */
static const char *col_name(const csv_parser *P, int64_t f) {
    if (!P->n_cols || f >= P->n_cols) return "";
    return P->arena + P->off[f];
}

static int line_error(csv_parser *P, int64_t line, int64_t field, const char *what) {
    const char *cn = col_name(P, field);
    if (*cn)
        return fl_seterr(P->err, FL_EPARSE, "%s:%lld:%lld: %s (column '%s')", P->name,
                         (long long)line, (long long)field + 1, what, cn);
    return fl_seterr(P->err, FL_EPARSE, "%s:%lld:%lld: %s", P->name, (long long)line,
                     (long long)field + 1, what);
}

/* Parses one field starting at P->i into the arena (NUL-terminated) and
 * leaves P->i on the byte after it: a separator, a line end, or the end. */
static int parse_field(csv_parser *P, int64_t field) {
    int rc;
    if (P->i < P->len && P->p[P->i] == '"') {
        int64_t open_line = P->line;
        P->i++;
        for (;;) {
            if (P->i >= P->len)
                return line_error(P, open_line, field,
                                  "unterminated quoted field (expected a closing '\"')");
            unsigned char c = P->p[P->i];
            if (c == 0) return line_error(P, P->line, field, "NUL byte in quoted field");
            if (c == '"') {
                if (P->i + 1 < P->len && P->p[P->i + 1] == '"') {
                    if ((rc = arena_put(P, '"'))) return rc;
                    P->i += 2;
                    continue;
                }
                P->i++;
                break;
            }
            if (c == '\n') P->line++;
            if ((rc = arena_put(P, (char)c))) return rc;
            P->i++;
        }
        if (P->i < P->len) {
            unsigned char c = P->p[P->i];
            if (c != ',' && c != '\n' && c != '\r') {
                char what[96];
                snprintf(what, sizeof what,
                         "expected ',' or a line end after the closing quote, got '%c'",
                         (c >= 0x20 && c < 0x7f) ? c : '?');
                return line_error(P, P->line, field, what);
            }
        }
    } else {
        while (P->i < P->len) {
            unsigned char c = P->p[P->i];
            if (c == ',' || c == '\n' || c == '\r') break;
            if (c == '"')
                return line_error(P, P->line, field,
                                  "unexpected '\"' inside an unquoted field (quote the whole "
                                  "field and double the quotes inside it)");
            if (c == 0) return line_error(P, P->line, field, "NUL byte in field");
            if ((rc = arena_put(P, (char)c))) return rc;
            P->i++;
        }
    }
    return arena_put(P, '\0');
}

/* A header name with its position, sorted by name so that duplicates are
 * found in O(n log n): a fuzzed header may have millions of fields. */
typedef struct hdr_ref {
    const char *name;
    int col;
} hdr_ref;

static int cmp_hdr(const void *a, const void *b) {
    const hdr_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->col > y->col) - (x->col < y->col);
}

static int check_header(csv_parser *P) {
    for (int f = 0; f < P->n_cols; f++)
        if (!P->arena[P->off[f]]) return line_error(P, P->line, f, "empty column name in header");
    hdr_ref *refs = malloc((size_t)P->n_cols * sizeof *refs);
    if (!refs) return FL_ENOMEM;
    for (int f = 0; f < P->n_cols; f++)
        refs[f] = (hdr_ref){P->arena + P->off[f], f};
    qsort(refs, (size_t)P->n_cols, sizeof *refs, cmp_hdr);
    int rc = 0;
    for (int k = 1; k < P->n_cols; k++) {
        if (!strcmp(refs[k - 1].name, refs[k].name)) {
            rc = fl_seterr(P->err, FL_EPARSE,
                           "%s:%lld:%d: duplicate column name '%s' (also column %d)", P->name,
                           (long long)P->line, refs[k].col + 1, refs[k].name, refs[k - 1].col + 1);
            break;
        }
    }
    free(refs);
    return rc;
}

static int parse_all(csv_parser *P) {
    int rc;
    while (P->i < P->len) {
        /* Completely empty lines are skipped (see the file comment). */
        if (P->p[P->i] == '\n') {
            P->i++;
            P->line++;
            continue;
        }
        if (P->p[P->i] == '\r' && P->i + 1 < P->len && P->p[P->i + 1] == '\n') {
            P->i += 2;
            P->line++;
            continue;
        }
        if (P->p[P->i] == '\r' && P->i + 1 == P->len) {
            P->i++;
            continue;
        }
        if (P->line > INT32_MAX)
            return fl_seterr(P->err, FL_EPARSE, "%s: more than %d lines", P->name, INT32_MAX);
        int64_t rec_line = P->line, nf = 0;
        for (;;) {
            if (P->noff == P->offcap) {
                size_t *no = grow(P->off, &P->offcap, P->noff + 1, sizeof *P->off);
                if (!no) return FL_ENOMEM;
                P->off = no;
            }
            P->off[P->noff++] = P->alen;
            if ((rc = parse_field(P, nf))) return rc;
            nf++;
            if (P->i < P->len && P->p[P->i] == ',') {
                P->i++;
                continue;
            }
            break;
        }
        if (P->i < P->len) {
            if (P->p[P->i] == '\n') {
                P->i++;
                P->line++;
            } else if (P->p[P->i] == '\r') {
                if (P->i + 1 < P->len && P->p[P->i + 1] == '\n') {
                    P->i += 2;
                    P->line++;
                } else if (P->i + 1 == P->len) {
                    P->i++;
                } else {
                    return line_error(P, P->line, nf - 1,
                                      "bare carriage return (expected CRLF or LF line ends)");
                }
            }
        }
        if (!P->n_cols) {
            if (nf > INT32_MAX / 2)
                return fl_seterr(P->err, FL_EPARSE, "%s:%lld: too many columns", P->name,
                                 (long long)rec_line);
            P->n_cols = (int)nf;
            /* The header line is the one reported for header errors. */
            int64_t save = P->line;
            P->line = rec_line;
            rc = check_header(P);
            P->line = save;
            if (rc) return rc;
            continue;
        }
        if (nf != P->n_cols)
            return fl_seterr(P->err, FL_EPARSE, "%s:%lld: expected %d fields, got %lld", P->name,
                             (long long)rec_line, P->n_cols, (long long)nf);
        if (P->nrec == P->reccap) {
            int32_t *nr = grow(P->rec_line, &P->reccap, P->nrec + 1, sizeof *P->rec_line);
            if (!nr) return FL_ENOMEM;
            P->rec_line = nr;
        }
        P->rec_line[P->nrec++] = (int32_t)rec_line;
    }
    if (!P->n_cols)
        return fl_seterr(P->err, FL_EPARSE, "%s: empty file (expected a header line)", P->name);
    if (!P->nrec) return fl_seterr(P->err, FL_EPARSE, "%s: no data rows after the header", P->name);
    return 0;
}

int fl_csv_parse(fl_csv *csv, const char *name, const char *text, size_t len,
                 char err[FL_ERR_LEN]) {
    memset(csv, 0, sizeof *csv);
    csv_parser P;
    memset(&P, 0, sizeof P);
    P.name = name ? name : "<csv>";
    P.p = (const unsigned char *)(text ? text : "");
    P.len = text ? len : 0;
    P.line = 1;
    P.err = err;
    int rc;
    if (P.len >= 3 && P.p[0] == 0xEF && P.p[1] == 0xBB && P.p[2] == 0xBF) P.i = 3;
    if ((rc = parse_all(&P))) goto cleanup;

    size_t nc = (size_t)P.n_cols;
    csv->path = strdup(P.name);
    csv->header = malloc(nc * sizeof *csv->header);
    csv->cells = malloc(P.nrec * nc * sizeof *csv->cells);
    csv->line = malloc(P.nrec * sizeof *csv->line);
    if (!csv->path || !csv->header || !csv->cells || !csv->line) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    for (size_t f = 0; f < nc; f++)
        csv->header[f] = P.arena + P.off[f];
    for (size_t k = 0; k < P.nrec * nc; k++)
        csv->cells[k] = P.arena + P.off[nc + k];
    memcpy(csv->line, P.rec_line, P.nrec * sizeof *csv->line);
    csv->n_cols = P.n_cols;
    csv->n_rows = (int64_t)P.nrec;
    csv->arena = P.arena;
    P.arena = NULL;
cleanup:
    free(P.arena);
    free(P.off);
    free(P.rec_line);
    if (rc == FL_ENOMEM) fl_seterr(err, rc, "%s: out of memory", P.name);
    if (rc) fl_csv_free(csv);
    return rc;
}

int fl_csv_load(fl_csv *csv, const char *path, char err[FL_ERR_LEN]) {
    memset(csv, 0, sizeof *csv);
    int rc = 0;
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[65536];
    FILE *f = fopen(path, "rb");
    if (!f) return fl_seterr(err, FL_EIO, "%s: cannot open: %s", path, strerror(errno));
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        char *nb = grow(buf, &cap, len + n, 1);
        if (!nb) {
            rc = fl_seterr(err, FL_ENOMEM, "%s: out of memory reading the file", path);
            goto cleanup;
        }
        buf = nb;
        memcpy(buf + len, chunk, n);
        len += n;
    }
    if (ferror(f)) {
        rc = fl_seterr(err, FL_EIO, "%s: read error: %s", path, strerror(errno));
        goto cleanup;
    }
    rc = fl_csv_parse(csv, path, buf, len, err);
cleanup:
    fclose(f);
    free(buf);
    return rc;
}

int fl_csv_column(const fl_csv *csv, const char *name) {
    for (int c = 0; c < csv->n_cols; c++)
        if (!strcmp(csv->header[c], name)) return c;
    return -1;
}
