/* shamir.c: Shamir sharing over GF(2^61 - 1), eight 32-bit limbs per 32-byte
 * secret. Layout and contract in shamir.h. Split evaluates each polynomial by
 * Horner's rule with branch-free reduction; combine uses the barycentric
 * Lagrange form (Berrut and Trefethen, SIAM Review 2004) so that checking
 * the shares beyond the first t costs O(t) each, not O(t^2). */
#include "core/bytes.h"
#include "crypto/shamir.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define P FL_SHAMIR_P

__extension__ typedef unsigned __int128 u128;

/* a, b < p. The result is < p, with no branch on the operands. */
static uint64_t f_reduce(uint64_t r) { /* r < 2^62 */
    uint64_t s = r - P;
    uint64_t keep_r = (uint64_t)0 - (s >> 63); /* all ones when r < p */
    return (s & ~keep_r) | (r & keep_r);
}
static uint64_t f_add(uint64_t a, uint64_t b) {
    return f_reduce(a + b);
}
static uint64_t f_sub(uint64_t a, uint64_t b) {
    return f_reduce(a + P - b);
}
static uint64_t f_mul(uint64_t a, uint64_t b) {
    u128 x = (u128)a * b; /* < 2^122 */
    uint64_t lo = (uint64_t)x & P, hi = (uint64_t)(x >> 61);
    return f_reduce(lo + hi); /* 2^61 = 1 mod p */
}
/* a^(p-2) = a^-1 for a != 0. Public values only (x coordinates). */
static uint64_t f_inv(uint64_t a) {
    uint64_t r = 1, e = P - 2;
    while (e) {
        if (e & 1) r = f_mul(r, a);
        a = f_mul(a, a);
        e >>= 1;
    }
    return r;
}

uint32_t fl_shamir_share_x(const uint8_t share[FL_SHAMIR_SHARE_BYTES]) {
    uint64_t x = fl_get_le64(share);
    return x > UINT32_MAX ? 0 : (uint32_t)x;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* 0 if xs (n values) are nonzero and distinct; else the offending index + 1. */
static size_t bad_xs(const uint32_t *xs, size_t n, uint32_t *scratch) {
    for (size_t i = 0; i < n; i++)
        if (xs[i] == 0) return i + 1;
    memcpy(scratch, xs, n * sizeof *xs);
    qsort(scratch, n, sizeof *scratch, cmp_u32);
    for (size_t i = 1; i < n; i++)
        if (scratch[i] == scratch[i - 1])
            for (size_t j = 0; j < n; j++)
                if (xs[j] == scratch[i]) return j + 1;
    return 0;
}

int fl_shamir_split(uint8_t *shares, const uint8_t secret[FL_SHAMIR_SECRET_BYTES],
                    const uint32_t *xs, size_t k, uint32_t t, fl_csprng *rng,
                    char err[FL_ERR_LEN]) {
    int rc = FL_OK;
    uint32_t *scratch = NULL;
    uint64_t *coef = NULL; /* (LIMBS, t): coefficient j of limb l at [l * t + j] */
    if (t < 1 || t > k || k > FL_SHAMIR_MAX_SHARES)
        return fl_seterr(err, FL_EINVAL,
                         "shamir: threshold %u with %zu shares (need 1 <= t <= k <= %d)", t, k,
                         FL_SHAMIR_MAX_SHARES);
    scratch = malloc(k * sizeof *scratch);
    if (!scratch) return fl_seterr(err, FL_ENOMEM, "shamir: out of memory for %zu shares", k);
    size_t bad = bad_xs(xs, k, scratch);
    if (bad) {
        rc = fl_seterr(err, FL_EINVAL, "shamir: share %zu has x = %u (x must be nonzero, distinct)",
                       bad - 1, xs[bad - 1]);
        goto cleanup;
    }
    coef = sodium_malloc((size_t)FL_SHAMIR_LIMBS * t * sizeof *coef);
    if (!coef) {
        rc = fl_seterr(err, FL_ENOMEM, "shamir: sodium_malloc of %u coefficients failed",
                       FL_SHAMIR_LIMBS * t);
        goto cleanup;
    }
    for (int l = 0; l < FL_SHAMIR_LIMBS; l++) {
        coef[(size_t)l * t] = fl_get_le32(secret + 4 * l);
        for (uint32_t j = 1; j < t; j++)
            coef[(size_t)l * t + j] = fl_csprng_below(rng, P);
    }
    for (size_t i = 0; i < k; i++) {
        uint8_t *sh = shares + i * FL_SHAMIR_SHARE_BYTES;
        uint64_t x = xs[i];
        fl_put_le64(sh, x);
        for (int l = 0; l < FL_SHAMIR_LIMBS; l++) {
            const uint64_t *c = coef + (size_t)l * t;
            uint64_t y = c[t - 1];
            for (uint32_t j = t - 1; j-- > 0;)
                y = f_add(f_mul(y, x), c[j]);
            fl_put_le64(sh + 8 + 8 * l, y);
        }
    }
cleanup:
    if (coef) {
        sodium_memzero(coef, (size_t)FL_SHAMIR_LIMBS * t * sizeof *coef);
        sodium_free(coef);
    }
    free(scratch);
    return rc;
}

/* Barycentric weights w_j = 1 / prod_{m != j} (x_j - x_m) of the first t
 * points, with one inversion for all of them (Montgomery's trick). */
static void weights(uint64_t *w, const uint64_t *x, uint32_t t, uint64_t *tmp) {
    for (uint32_t j = 0; j < t; j++) {
        uint64_t d = 1;
        for (uint32_t m = 0; m < t; m++)
            if (m != j) d = f_mul(d, f_sub(x[j], x[m]));
        w[j] = d;
    }
    /* batch inversion: tmp[j] = prod_{i<j} w_i */
    uint64_t acc = 1;
    for (uint32_t j = 0; j < t; j++) {
        tmp[j] = acc;
        acc = f_mul(acc, w[j]);
    }
    acc = f_inv(acc);
    for (uint32_t j = t; j-- > 0;) {
        uint64_t inv = f_mul(acc, tmp[j]);
        acc = f_mul(acc, w[j]);
        w[j] = inv;
    }
}

/* c_j(z) = l(z) w_j / (z - x_j), l(z) = prod_m (z - x_m): the Lagrange basis
 * at z, which is not one of the x_j. f(z) = sum_j c_j(z) f(x_j). */
static void basis_at(uint64_t *c, uint64_t z, const uint64_t *x, const uint64_t *w, uint32_t t,
                     uint64_t *tmp) {
    uint64_t l = 1, acc = 1;
    for (uint32_t j = 0; j < t; j++) {
        uint64_t d = f_sub(z, x[j]);
        l = f_mul(l, d);
        c[j] = d;
        tmp[j] = acc;
        acc = f_mul(acc, d);
    }
    acc = f_inv(acc);
    for (uint32_t j = t; j-- > 0;) {
        uint64_t inv = f_mul(acc, tmp[j]);
        acc = f_mul(acc, c[j]);
        c[j] = f_mul(f_mul(l, w[j]), inv);
    }
}

/* The eight limb values at z from the first t shares. */
static void eval_at(uint64_t out[FL_SHAMIR_LIMBS], const uint64_t *c, const uint8_t *shares,
                    uint32_t t) {
    for (int l = 0; l < FL_SHAMIR_LIMBS; l++)
        out[l] = 0;
    for (uint32_t j = 0; j < t; j++) {
        const uint8_t *sh = shares + (size_t)j * FL_SHAMIR_SHARE_BYTES + 8;
        for (int l = 0; l < FL_SHAMIR_LIMBS; l++)
            out[l] = f_add(out[l], f_mul(c[j], fl_get_le64(sh + 8 * l)));
    }
}

int fl_shamir_combine(uint8_t secret[FL_SHAMIR_SECRET_BYTES], const uint8_t *shares, size_t n,
                      uint32_t t, char err[FL_ERR_LEN]) {
    int rc = FL_OK;
    uint32_t *xs32 = NULL;
    uint64_t *x = NULL, *w = NULL, *c = NULL, *tmp = NULL;
    uint64_t v[FL_SHAMIR_LIMBS], u[FL_SHAMIR_LIMBS];
    if (t < 1 || t > FL_SHAMIR_MAX_SHARES)
        return fl_seterr(err, FL_EINVAL, "shamir: threshold %u (need 1..%d)", t,
                         FL_SHAMIR_MAX_SHARES);
    if (n < t) return fl_seterr(err, FL_ETHRESHOLD, "shamir: %zu shares, %u needed", n, t);
    if (n > FL_SHAMIR_MAX_SHARES)
        return fl_seterr(err, FL_EINVAL, "shamir: %zu shares (at most %d)", n,
                         FL_SHAMIR_MAX_SHARES);
    xs32 = malloc(2 * n * sizeof *xs32);
    x = malloc(n * sizeof *x);
    w = malloc(t * sizeof *w);
    c = malloc(t * sizeof *c);
    tmp = malloc(t * sizeof *tmp);
    if (!xs32 || !x || !w || !c || !tmp) {
        rc = fl_seterr(err, FL_ENOMEM, "shamir: out of memory for %zu shares", n);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *sh = shares + i * FL_SHAMIR_SHARE_BYTES;
        uint64_t xi = fl_get_le64(sh);
        if (xi > UINT32_MAX) {
            rc = fl_seterr(err, FL_EINVAL, "shamir: share %zu: x = %llu does not fit 32 bits", i,
                           (unsigned long long)xi);
            goto cleanup;
        }
        for (int l = 0; l < FL_SHAMIR_LIMBS; l++)
            if (fl_get_le64(sh + 8 + 8 * l) >= P) {
                rc = fl_seterr(err, FL_EINVAL,
                               "shamir: share %zu (x = %llu): value %d is not below p", i,
                               (unsigned long long)xi, l);
                goto cleanup;
            }
        xs32[i] = (uint32_t)xi;
        x[i] = xi;
    }
    size_t bad = bad_xs(xs32, n, xs32 + n);
    if (bad) {
        rc = fl_seterr(err, FL_EINVAL, "shamir: share %zu has x = %u (x must be nonzero, distinct)",
                       bad - 1, xs32[bad - 1]);
        goto cleanup;
    }
    weights(w, x, t, tmp);
    basis_at(c, 0, x, w, t, tmp);
    eval_at(v, c, shares, t);
    for (int l = 0; l < FL_SHAMIR_LIMBS; l++)
        if (v[l] > UINT32_MAX) {
            rc = fl_seterr(err, FL_ECRYPTO,
                           "shamir: the shares do not encode a secret (limb %d out of range): "
                           "corrupted shares or a wrong threshold",
                           l);
            goto cleanup;
        }
    for (size_t i = t; i < n; i++) {
        basis_at(c, x[i], x, w, t, tmp);
        eval_at(u, c, shares, t);
        const uint8_t *sh = shares + i * FL_SHAMIR_SHARE_BYTES + 8;
        uint64_t diff = 0;
        for (int l = 0; l < FL_SHAMIR_LIMBS; l++)
            diff |= u[l] ^ fl_get_le64(sh + 8 * l);
        if (diff) {
            rc = fl_seterr(err, FL_ECRYPTO,
                           "shamir: share %zu (x = %llu) disagrees with the first %u: a share is "
                           "corrupted or forged",
                           i, (unsigned long long)x[i], t);
            goto cleanup;
        }
    }
    for (int l = 0; l < FL_SHAMIR_LIMBS; l++)
        for (int b = 0; b < 4; b++)
            secret[4 * l + b] = (uint8_t)(v[l] >> (8 * b));
cleanup:
    if (rc) sodium_memzero(secret, FL_SHAMIR_SECRET_BYTES);
    sodium_memzero(v, sizeof v);
    sodium_memzero(u, sizeof u);
    free(xs32);
    free(x);
    free(w);
    free(c);
    free(tmp);
    return rc;
}
