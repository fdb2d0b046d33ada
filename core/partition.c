/* partition.c: see partition.h. */
#include "partition.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dataset.h"
#include "core/rng.h"

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Gamma(a, 1) by Marsaglia and Tsang (2000), boosted for a < 1. */
static double gamma_draw(fl_rng *r, double a) {
    if (a < 1.0) return gamma_draw(r, a + 1.0) * pow(fl_rng_uniform(r) + 1e-300, 1.0 / a);
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = fl_rng_normal(r), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = fl_rng_uniform(r);
        if (log(u + 1e-300) < 0.5 * x * x + d - d * v + d * log(v)) return d * v;
    }
}

static int by_column(int *site_of, const fl_csv *csv, const int32_t *rows, int64_t n, int n_sites,
                     const char *col, fl_rng *rng, char *err) {
    int c = fl_csv_column(csv, col);
    if (c < 0)
        return fl_seterr(err, FL_EINVAL, "partition by:%s: no such column in %s", col, csv->path);
    const char **vals = malloc((size_t)(n > 0 ? n : 1) * sizeof *vals);
    if (!vals) return FL_ENOMEM;
    for (int64_t i = 0; i < n; i++)
        vals[i] = fl_csv_cell(csv, rows[i], c);
    qsort(vals, (size_t)n, sizeof *vals, cmp_str);
    int64_t nd = 0;
    for (int64_t i = 0; i < n; i++)
        if (i == 0 || strcmp(vals[i], vals[i - 1])) vals[nd++] = vals[i];
    if (nd < n_sites) {
        free(vals);
        return fl_seterr(err, FL_EINVAL,
                         "partition by:%s: %lld distinct values for %d sites (need at least one "
                         "value per site)",
                         col, (long long)nd, n_sites);
    }
    /* a seeded order of the sites, then values dealt round-robin */
    int32_t order[1024];
    for (int s = 0; s < n_sites; s++)
        order[s] = s;
    fl_rng_shuffle_i32(rng, order, n_sites);
    for (int64_t i = 0; i < n; i++) {
        const char *v = fl_csv_cell(csv, rows[i], c);
        int64_t lo = 0, hi = nd - 1;
        while (lo < hi) {
            int64_t mid = (lo + hi) / 2;
            if (strcmp(vals[mid], v) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        site_of[i] = order[lo % n_sites];
    }
    free(vals);
    return FL_OK;
}

int fl_partition(int *site_of, const fl_csv *csv, const int32_t *y, int n_classes,
                 const int32_t *rows, int64_t n, int n_sites, const char *mode, uint64_t seed,
                 char err[FL_ERR_LEN]) {
    if (n_sites < 1 || n_sites > 1024)
        return fl_seterr(err, FL_EINVAL, "partition: sites must be in 1..1024");
    if (n < n_sites)
        return fl_seterr(err, FL_EINVAL, "partition: %lld rows for %d sites", (long long)n,
                         n_sites);
    fl_rng rng;
    fl_rng_seed(&rng, seed);
    int rc = FL_OK;
    if (!strcmp(mode, "iid")) {
        int32_t *perm = malloc((size_t)n * sizeof *perm);
        if (!perm) return FL_ENOMEM;
        for (int64_t i = 0; i < n; i++)
            perm[i] = (int32_t)i;
        fl_rng_shuffle_i32(&rng, perm, n);
        for (int64_t i = 0; i < n; i++)
            site_of[perm[i]] = (int)(i % n_sites);
        free(perm);
    } else if (!strncmp(mode, "by:", 3)) {
        rc = by_column(site_of, csv, rows, n, n_sites, mode + 3, &rng, err);
    } else if (!strncmp(mode, "dirichlet:", 10)) {
        char *end;
        double alpha = strtod(mode + 10, &end);
        if (end == mode + 10 || *end || !(alpha > 0.0) || !isfinite(alpha))
            return fl_seterr(err, FL_EINVAL, "partition '%s': expected dirichlet:<alpha > 0>",
                             mode);
        double *share = malloc((size_t)n_sites * sizeof *share);
        int32_t *idx = malloc((size_t)n * sizeof *idx);
        if (!share || !idx) {
            free(share);
            free(idx);
            return FL_ENOMEM;
        }
        for (int k = 0; k < n_classes; k++) {
            int64_t m = 0;
            for (int64_t i = 0; i < n; i++)
                if (y[rows[i]] == k) idx[m++] = (int32_t)i;
            fl_rng_shuffle_i32(&rng, idx, m);
            double tot = 0;
            for (int s = 0; s < n_sites; s++)
                tot += share[s] = gamma_draw(&rng, alpha);
            int64_t at = 0;
            double acc = 0;
            for (int s = 0; s < n_sites; s++) {
                acc += share[s] / tot;
                int64_t upto = s == n_sites - 1 ? m : (int64_t)llround(acc * (double)m);
                for (; at < upto; at++)
                    site_of[idx[at]] = s;
            }
        }
        free(share);
        free(idx);
    } else {
        return fl_seterr(err, FL_EINVAL,
                         "partition '%s': expected iid, by:<column> or dirichlet:<alpha>", mode);
    }
    if (rc) return rc;
    /* every site must hold data: move one row from the largest site to each empty one */
    int64_t *count = calloc((size_t)n_sites, sizeof *count);
    if (!count) return FL_ENOMEM;
    for (int64_t i = 0; i < n; i++)
        count[site_of[i]]++;
    for (int s = 0; s < n_sites; s++) {
        if (count[s]) continue;
        int big = 0;
        for (int t = 1; t < n_sites; t++)
            if (count[t] > count[big]) big = t;
        for (int64_t i = 0; i < n; i++)
            if (site_of[i] == big) {
                site_of[i] = s;
                count[big]--;
                count[s]++;
                break;
            }
    }
    free(count);
    return FL_OK;
}

static int put_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) return fputs(s, f) < 0 ? -1 : 0;
    if (fputc('"', f) == EOF) return -1;
    for (const char *p = s; *p; p++) {
        if (*p == '"' && fputc('"', f) == EOF) return -1;
        if (fputc(*p, f) == EOF) return -1;
    }
    return fputc('"', f) == EOF ? -1 : 0;
}

int fl_csv_write_rows(const char *path, const fl_csv *csv, const int32_t *rows, int64_t n,
                      char err[FL_ERR_LEN]) {
    FILE *f = fopen(path, "wb");
    if (!f) return fl_seterr(err, FL_EIO, "%s: cannot create: %s", path, strerror(errno));
    int bad = 0;
    for (int c = 0; c < csv->n_cols; c++) {
        if (c) bad |= fputc(',', f) == EOF;
        bad |= put_field(f, csv->header[c]);
    }
    bad |= fputc('\n', f) == EOF;
    for (int64_t i = 0; i < n && !bad; i++) {
        for (int c = 0; c < csv->n_cols; c++) {
            if (c) bad |= fputc(',', f) == EOF;
            bad |= put_field(f, fl_csv_cell(csv, rows[i], c));
        }
        bad |= fputc('\n', f) == EOF;
    }
    bad |= fclose(f) != 0;
    return bad ? fl_seterr(err, FL_EIO, "%s: write failed", path) : FL_OK;
}

int fl_schema_write_with_levels(const char *out_path, const struct fl_schema *schema,
                                const struct fl_encoder *enc, char err[FL_ERR_LEN]) {
    const char *schema_path = schema->path;
    FILE *in = fopen(schema_path, "rb");
    if (!in) return fl_seterr(err, FL_EIO, "%s: cannot open: %s", schema_path, strerror(errno));
    FILE *out = fopen(out_path, "wb");
    if (!out) {
        fclose(in);
        return fl_seterr(err, FL_EIO, "%s: cannot create: %s", out_path, strerror(errno));
    }
    char buf[8192];
    size_t k;
    int bad = 0;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0)
        bad |= fwrite(buf, 1, k, out) != k;
    fclose(in);
    bad |= fputs("\n\n; levels of the whole dataset, declared so every site encodes alike\n"
                 "[levels]\n",
                 out) < 0;
    for (int c = 0; c < enc->n_cols; c++) {
        const fl_enc_col *col = &enc->cols[c];
        int declared = 0;
        for (int l = 0; l < schema->n_levels; l++)
            declared |= !strcmp(schema->level_cols[l], col->name);
        if (!col->categorical || declared) continue;
        bad |= fprintf(out, "%s = ", col->name) < 0;
        for (int l = 0; l < col->n_levels; l++)
            bad |= fprintf(out, l ? ",%s" : "%s", col->levels[l]) < 0;
        bad |= fputc('\n', out) == EOF;
    }
    bad |= fclose(out) != 0;
    return bad ? fl_seterr(err, FL_EIO, "%s: write failed", out_path) : FL_OK;
}
