/* idx.c: see idx.h. The header is big-endian: a 4-byte magic (two zero bytes,
 * a type code 0x08 for unsigned bytes, the number of dimensions), then one
 * 4-byte size per dimension, then the data in row-major order. */
#include "idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads exactly n bytes or fails naming what was being read. */
static int read_exact(gzFile f, void *buf, size_t n, const char *path, const char *what,
                      char *err) {
    unsigned char *b = buf;
    while (n > 0) {
        unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int got = gzread(f, b, chunk);
        if (got <= 0)
            return fl_seterr(err, FL_EPARSE, "%s: truncated while reading %s", path, what);
        b += got;
        n -= (size_t)got;
    }
    return FL_OK;
}

/* Opens path and checks the magic for ndim dimensions; dims receives them. */
static int open_idx(gzFile *out, uint32_t *dims, int ndim, const char *path, char *err) {
    gzFile f = gzopen(path, "rb");
    if (!f) return fl_seterr(err, FL_EIO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char hdr[16];
    int rc = read_exact(f, hdr, 4 + 4 * (size_t)ndim, path, "the header", err);
    if (rc) {
        gzclose(f);
        return rc;
    }
    if (hdr[0] || hdr[1] || hdr[2] != 0x08 || hdr[3] != ndim) {
        gzclose(f);
        return fl_seterr(err, FL_EPARSE,
                         "%s: bad magic 0x%02x%02x%02x%02x (expected 0x000008%02x: unsigned "
                         "bytes, %d dimensions)",
                         path, hdr[0], hdr[1], hdr[2], hdr[3], ndim, ndim);
    }
    for (int i = 0; i < ndim; i++) {
        dims[i] = be32(hdr + 4 + 4 * i);
        if (dims[i] == 0 || dims[i] > (1u << 28)) {
            gzclose(f);
            return fl_seterr(err, FL_EPARSE, "%s: dimension %d is %u (expected 1..2^28)", path, i,
                             dims[i]);
        }
    }
    *out = f;
    return FL_OK;
}

int fl_idx_load(fl_dataset *ds, const char *images_path, const char *labels_path, int64_t max_rows,
                char err[FL_ERR_LEN]) {
    memset(ds, 0, sizeof *ds);
    gzFile fi = NULL, fl = NULL;
    unsigned char *pix = NULL, *lab = NULL;
    uint32_t di[3], dl[1];
    int rc = open_idx(&fi, di, 3, images_path, err);
    if (!rc) rc = open_idx(&fl, dl, 1, labels_path, err);
    if (rc) goto cleanup;
    if (di[0] != dl[0]) {
        rc = fl_seterr(err, FL_EPARSE, "%s has %u images but %s has %u labels", images_path, di[0],
                       labels_path, dl[0]);
        goto cleanup;
    }
    int64_t n = di[0];
    if (max_rows > 0 && max_rows < n) n = max_rows;
    size_t d = (size_t)di[1] * di[2];
    if (d > (1u << 24)) {
        rc = fl_seterr(err, FL_EPARSE, "%s: images of %ux%u are too large", images_path, di[1],
                       di[2]);
        goto cleanup;
    }
    pix = malloc((size_t)n * d);
    lab = malloc((size_t)n);
    ds->X = malloc((size_t)n * d * sizeof(float));
    ds->y = malloc((size_t)n * sizeof(int32_t));
    if (!pix || !lab || !ds->X || !ds->y) {
        rc = fl_seterr(err, FL_ENOMEM, "%s: out of memory", images_path);
        goto cleanup;
    }
    if ((rc = read_exact(fi, pix, (size_t)n * d, images_path, "the pixels", err))) goto cleanup;
    if ((rc = read_exact(fl, lab, (size_t)n, labels_path, "the labels", err))) goto cleanup;
    int maxlab = 1;
    for (int64_t i = 0; i < n; i++)
        maxlab = lab[i] > maxlab ? lab[i] : maxlab;
    for (size_t i = 0; i < (size_t)n * d; i++)
        ds->X[i] = (float)pix[i] * (1.0f / 255.0f);
    for (int64_t i = 0; i < n; i++)
        ds->y[i] = lab[i];
    ds->n = n;
    ds->d = (int)d;
    ds->n_classes = maxlab + 1;
cleanup:
    if (fi) gzclose(fi);
    if (fl) gzclose(fl);
    free(pix);
    free(lab);
    if (rc) fl_dataset_free(ds);
    return rc;
}

/* path of "<dir>/<prefix>-<kind>-idx<n>-ubyte", with ".gz" when only that exists */
static void idx_path(char *out, size_t n, const char *dir, const char *prefix, const char *kind,
                     int ndim) {
    struct stat st;
    snprintf(out, n, "%s/%s-%s-idx%d-ubyte", dir, prefix, kind, ndim);
    if (stat(out, &st) != 0) snprintf(out, n, "%s/%s-%s-idx%d-ubyte.gz", dir, prefix, kind, ndim);
}

int fl_idx_load_dir(fl_dataset *ds, const char *dir, int test, int64_t max_rows,
                    char err[FL_ERR_LEN]) {
    char img[4096], lab[4096];
    const char *prefix = test ? "t10k" : "train";
    idx_path(img, sizeof img, dir, prefix, "images", 3);
    idx_path(lab, sizeof lab, dir, prefix, "labels", 1);
    return fl_idx_load(ds, img, lab, max_rows, err);
}
