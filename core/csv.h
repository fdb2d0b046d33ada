/* csv.h: an RFC 4180 CSV reader (quoted fields with embedded commas, quotes
 * and newlines; CRLF or LF line ends; an optional UTF-8 BOM). The first record
 * is the header. Every record must have as many fields as the header.
 * Errors name the file, the physical line and the 1-based column. */
#ifndef FL_CSV_H
#define FL_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct fl_csv {
    char *path;     /* as given, for error messages */
    int n_cols;     /* number of header fields */
    char **header;  /* (n_cols) column names, NUL-terminated */
    int64_t n_rows; /* data records, header excluded */
    char **cells;   /* (n_rows, n_cols) NUL-terminated strings, row-major */
    int32_t *line;  /* (n_rows) physical line on which each record starts, 1-based */
    char *arena;    /* owns the bytes that header and cells point into */
} fl_csv;

/* Reads and parses the file at path into *csv (caller-owned; fl_csv_free).
 * Fails with FL_EIO (unreadable) or FL_EPARSE: empty file, no data rows,
 * ragged row ("path:line: expected N fields, got M"), unterminated quote,
 * a stray quote inside an unquoted field, duplicate or empty header names.
 * On failure *csv holds nothing to free. */
int fl_csv_load(fl_csv *csv, const char *path, char err[FL_ERR_LEN]);
/* The same on a buffer; name stands in for the path in messages. */
int fl_csv_parse(fl_csv *csv, const char *name, const char *text, size_t len, char err[FL_ERR_LEN]);
void fl_csv_free(fl_csv *csv);

/* Index of the header column named name, or -1. */
int fl_csv_column(const fl_csv *csv, const char *name);

static inline const char *fl_csv_cell(const fl_csv *csv, int64_t row, int col) {
    return csv->cells[row * csv->n_cols + col];
}

#endif
