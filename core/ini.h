/* ini.h: the INI reader behind every Cohort config and schema file.
 *
 * A small parser of our own rather than libinih, because every error Cohort
 * reports about a config must name the file and line, and so must later
 * semantic checks ("unknown column 'X' at schema.ini:7"); each entry keeps its
 * line. Syntax: [section], key = value, full-line comments starting with ';'
 * or '#', inline comments after " ;" or " #", surrounding whitespace trimmed,
 * a UTF-8 BOM skipped. Keys before any section belong to section "". */
#ifndef FL_INI_H
#define FL_INI_H

#include "status.h"

typedef struct fl_ini_entry {
    char *section;
    char *key;
    char *value;
    int line;
} fl_ini_entry;

typedef struct fl_ini {
    char *path; /* as given to fl_ini_load, for error messages */
    fl_ini_entry *entries;
    int n_entries;
    char **sections; /* every [section] header seen, in order */
    int n_sections;
} fl_ini;

/* Parses the file at path into *ini (caller-owned; release with fl_ini_free).
 * On failure returns FL_EIO or FL_EPARSE with "path:line: what was expected" in
 * err, and *ini holds nothing to free. A key repeated within one section is an
 * error: silent last-one-wins hides typos in security settings. */
int fl_ini_load(fl_ini *ini, const char *path, char err[FL_ERR_LEN]);
/* The same, from a buffer; name stands in for the path in messages. */
int fl_ini_parse(fl_ini *ini, const char *name, const char *text, size_t len, char err[FL_ERR_LEN]);
void fl_ini_free(fl_ini *ini);

/* The entry for section/key, or NULL. Borrowed from ini. */
const fl_ini_entry *fl_ini_find(const fl_ini *ini, const char *section, const char *key);
/* The value, or def when absent. */
const char *fl_ini_get(const fl_ini *ini, const char *section, const char *key, const char *def);
int fl_ini_has_section(const fl_ini *ini, const char *section);

/* Typed getters: absent key gives def and 0; a present key that does not
 * parse (or is outside [lo, hi]) gives FL_EINVAL with "path:line: key 'k' in
 * [section]: expected ..." in err. */
int fl_ini_get_int(long *out, const fl_ini *ini, const char *section, const char *key, long def,
                   long lo, long hi, char err[FL_ERR_LEN]);
int fl_ini_get_double(double *out, const fl_ini *ini, const char *section, const char *key,
                      double def, double lo, double hi, char err[FL_ERR_LEN]);
int fl_ini_get_bool(int *out, const fl_ini *ini, const char *section, const char *key, int def,
                    char err[FL_ERR_LEN]);

/* Checks that every key in `section` is one of the NULL-terminated `known`
 * names; an unknown one is FL_EINVAL naming its line (catches typos). */
int fl_ini_check_keys(const fl_ini *ini, const char *section, const char *const *known,
                      char err[FL_ERR_LEN]);

/* Reads the whole file at path into *out (malloc'd, NUL-terminated, caller
 * frees; *len bytes before the NUL). FL_EIO naming the file when it cannot be
 * opened or read. Used for config files and the PEM files they name. */
int fl_read_file(char **out, size_t *len, const char *path, char err[FL_ERR_LEN]);

/* Paths in config files are relative to the file: out = dirname(base)/rel,
 * or rel itself when absolute. Empty rel gives "". */
#define FL_PATH_LEN 4096
void fl_path_resolve(char out[FL_PATH_LEN], const char *base, const char *rel);

#endif
