/* ini.c: see ini.h for the accepted syntax and why this is our own parser. */
#include "ini.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dupn(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static void trim(const char **b, const char **e) {
    while (*b < *e && isspace((unsigned char)**b))
        (*b)++;
    while (*e > *b && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

void fl_ini_free(fl_ini *ini) {
    if (!ini) return;
    for (int i = 0; i < ini->n_entries; i++) {
        free(ini->entries[i].section);
        free(ini->entries[i].key);
        free(ini->entries[i].value);
    }
    for (int i = 0; i < ini->n_sections; i++)
        free(ini->sections[i]);
    free(ini->entries);
    free(ini->sections);
    free(ini->path);
    memset(ini, 0, sizeof *ini);
}

static int push_entry(fl_ini *ini, int *cap, const char *sec, const char *kb, const char *ke,
                      const char *vb, const char *ve, int line) {
    if (ini->n_entries == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        fl_ini_entry *ne = realloc(ini->entries, (size_t)nc * sizeof *ne);
        if (!ne) return FL_ENOMEM;
        ini->entries = ne;
        *cap = nc;
    }
    fl_ini_entry *e = &ini->entries[ini->n_entries];
    e->section = dupn(sec, strlen(sec));
    e->key = dupn(kb, (size_t)(ke - kb));
    e->value = dupn(vb, (size_t)(ve - vb));
    e->line = line;
    if (!e->section || !e->key || !e->value) {
        free(e->section);
        free(e->key);
        free(e->value);
        return FL_ENOMEM;
    }
    ini->n_entries++;
    return 0;
}

int fl_ini_parse(fl_ini *ini, const char *name, const char *text, size_t len,
                 char err[FL_ERR_LEN]) {
    memset(ini, 0, sizeof *ini);
    int rc = FL_OK, cap = 0, line = 0;
    char *section = dupn("", 0);
    ini->path = dupn(name, strlen(name));
    if (!section || !ini->path) {
        rc = FL_ENOMEM;
        goto cleanup;
    }
    const char *p = text, *end = text + len;
    if (len >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB &&
        (unsigned char)p[2] == 0xBF)
        p += 3;
    while (p < end) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *b = p, *e = le;
        p = nl ? nl + 1 : end;
        if (memchr(b, '\0', (size_t)(e - b))) {
            rc = fl_seterr(err, FL_EPARSE, "%s:%d: NUL byte in line", name, line);
            goto cleanup;
        }
        trim(&b, &e);
        if (b == e || *b == ';' || *b == '#') continue;
        /* Inline comment: ';' or '#' preceded by whitespace. */
        for (const char *q = b + 1; q < e; q++) {
            if ((*q == ';' || *q == '#') && isspace((unsigned char)q[-1])) {
                e = q;
                trim(&b, &e);
                break;
            }
        }
        if (*b == '[') {
            if (e[-1] != ']' || e - b < 3) {
                rc = fl_seterr(err, FL_EPARSE, "%s:%d: expected '[section]'", name, line);
                goto cleanup;
            }
            const char *sb = b + 1, *se = e - 1;
            trim(&sb, &se);
            free(section);
            section = dupn(sb, (size_t)(se - sb));
            if (!section) {
                rc = FL_ENOMEM;
                goto cleanup;
            }
            char **ns = realloc(ini->sections, (size_t)(ini->n_sections + 1) * sizeof *ns);
            if (!ns) {
                rc = FL_ENOMEM;
                goto cleanup;
            }
            ini->sections = ns;
            if (!(ns[ini->n_sections] = dupn(section, strlen(section)))) {
                rc = FL_ENOMEM;
                goto cleanup;
            }
            ini->n_sections++;
            continue;
        }
        const char *eq = memchr(b, '=', (size_t)(e - b));
        if (!eq) {
            rc = fl_seterr(err, FL_EPARSE, "%s:%d: expected 'key = value' or '[section]'", name,
                           line);
            goto cleanup;
        }
        const char *kb = b, *ke = eq, *vb = eq + 1, *ve = e;
        trim(&kb, &ke);
        trim(&vb, &ve);
        if (kb == ke) {
            rc = fl_seterr(err, FL_EPARSE, "%s:%d: expected a key before '='", name, line);
            goto cleanup;
        }
        for (int i = 0; i < ini->n_entries; i++) {
            const fl_ini_entry *o = &ini->entries[i];
            if (!strcmp(o->section, section) && strlen(o->key) == (size_t)(ke - kb) &&
                !strncmp(o->key, kb, (size_t)(ke - kb))) {
                rc = fl_seterr(err, FL_EPARSE, "%s:%d: key '%s' in [%s] already set at line %d",
                               name, line, o->key, section, o->line);
                goto cleanup;
            }
        }
        if ((rc = push_entry(ini, &cap, section, kb, ke, vb, ve, line)) != 0) goto cleanup;
    }
cleanup:
    free(section);
    if (rc != FL_OK) fl_ini_free(ini);
    return rc;
}

int fl_read_file(char **out, size_t *len, const char *path, char err[FL_ERR_LEN]) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return fl_seterr(err, FL_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = malloc(1);
    size_t n_read = 0, cap = 1, n;
    char chunk[8192];
    while (buf && (n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (n_read + n + 1 > cap) {
            cap = (n_read + n + 1) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        memcpy(buf + n_read, chunk, n);
        n_read += n;
    }
    int ioerr = ferror(f);
    fclose(f);
    if (!buf) return fl_seterr(err, FL_ENOMEM, "%s: out of memory", path);
    if (ioerr) {
        free(buf);
        return fl_seterr(err, FL_EIO, "%s: read error", path);
    }
    buf[n_read] = 0;
    *out = buf;
    *len = n_read;
    return FL_OK;
}

int fl_ini_load(fl_ini *ini, const char *path, char err[FL_ERR_LEN]) {
    memset(ini, 0, sizeof *ini);
    char *buf;
    size_t len;
    int rc = fl_read_file(&buf, &len, path, err);
    if (rc) return rc;
    rc = fl_ini_parse(ini, path, buf, len, err);
    free(buf);
    return rc;
}

const fl_ini_entry *fl_ini_find(const fl_ini *ini, const char *section, const char *key) {
    for (int i = 0; i < ini->n_entries; i++)
        if (!strcmp(ini->entries[i].section, section) && !strcmp(ini->entries[i].key, key))
            return &ini->entries[i];
    return NULL;
}

const char *fl_ini_get(const fl_ini *ini, const char *section, const char *key, const char *def) {
    const fl_ini_entry *e = fl_ini_find(ini, section, key);
    return e ? e->value : def;
}

int fl_ini_has_section(const fl_ini *ini, const char *section) {
    for (int i = 0; i < ini->n_sections; i++)
        if (!strcmp(ini->sections[i], section)) return 1;
    return 0;
}

int fl_ini_get_int(long *out, const fl_ini *ini, const char *section, const char *key, long def,
                   long lo, long hi, char err[FL_ERR_LEN]) {
    const fl_ini_entry *e = fl_ini_find(ini, section, key);
    if (!e) {
        *out = def;
        return FL_OK;
    }
    char *endp;
    errno = 0;
    long v = strtol(e->value, &endp, 10);
    if (errno || endp == e->value || *endp || v < lo || v > hi)
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key '%s' in [%s]: expected an integer in [%ld, %ld], got '%s'",
                         ini->path, e->line, key, section, lo, hi, e->value);
    *out = v;
    return FL_OK;
}

int fl_ini_get_double(double *out, const fl_ini *ini, const char *section, const char *key,
                      double def, double lo, double hi, char err[FL_ERR_LEN]) {
    const fl_ini_entry *e = fl_ini_find(ini, section, key);
    if (!e) {
        *out = def;
        return FL_OK;
    }
    char *endp;
    errno = 0;
    double v = strtod(e->value, &endp);
    if (errno || endp == e->value || *endp || !isfinite(v) || v < lo || v > hi)
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key '%s' in [%s]: expected a number in [%g, %g], got '%s'",
                         ini->path, e->line, key, section, lo, hi, e->value);
    *out = v;
    return FL_OK;
}

int fl_ini_get_bool(int *out, const fl_ini *ini, const char *section, const char *key, int def,
                    char err[FL_ERR_LEN]) {
    const fl_ini_entry *e = fl_ini_find(ini, section, key);
    if (!e) {
        *out = def;
        return FL_OK;
    }
    const char *v = e->value;
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1")) {
        *out = 1;
        return FL_OK;
    }
    if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off") || !strcmp(v, "0")) {
        *out = 0;
        return FL_OK;
    }
    return fl_seterr(err, FL_EINVAL, "%s:%d: key '%s' in [%s]: expected true or false, got '%s'",
                     ini->path, e->line, key, section, v);
}

int fl_ini_check_keys(const fl_ini *ini, const char *section, const char *const *known,
                      char err[FL_ERR_LEN]) {
    for (int i = 0; i < ini->n_entries; i++) {
        const fl_ini_entry *e = &ini->entries[i];
        if (strcmp(e->section, section)) continue;
        int ok = 0;
        for (const char *const *k = known; *k; k++)
            if (!strcmp(*k, e->key)) ok = 1;
        if (!ok)
            return fl_seterr(err, FL_EINVAL, "%s:%d: unknown key '%s' in [%s]", ini->path, e->line,
                             e->key, section);
    }
    return FL_OK;
}

void fl_path_resolve(char out[FL_PATH_LEN], const char *base, const char *rel) {
    if (!rel || !*rel) {
        out[0] = 0;
        return;
    }
    const char *slash = rel[0] == '/' ? NULL : strrchr(base, '/');
    if (!slash)
        snprintf(out, FL_PATH_LEN, "%s", rel);
    else
        snprintf(out, FL_PATH_LEN, "%.*s/%s", (int)(slash - base), base, rel);
}
