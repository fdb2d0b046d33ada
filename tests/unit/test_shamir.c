/* test_shamir.c: Shamir sharing over GF(2^61 - 1) (crypto/shamir.h): every
 * t-subset of k shares, in any order, rebuilds the secret; t - 1 shares are
 * FL_ETHRESHOLD; a corrupted extra share is detected (FL_ECRYPTO); zero,
 * duplicate and out-of-field inputs are FL_EINVAL; t = 1 and t = k edge
 * cases; a crude check that shares below the threshold say nothing: single values
 * look uniform and differ between two sharings of the same secret. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "crypto/csprng.h"
#include "crypto/shamir.h"

#define SB FL_SHAMIR_SHARE_BYTES

#define assert_rc(rc, code, err)                                                                   \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != (code))                                                                         \
            fail_msg("rc %d (%s), expected %d (%s); err: %s", rc_, fl_strerror(rc_), (code),       \
                     fl_strerror(code), (err));                                                    \
    } while (0)

static fl_csprng *seeded(unsigned char tag) {
    unsigned char seed[FL_CSPRNG_SEEDBYTES];
    memset(seed, tag, sizeof seed);
    fl_csprng *r = NULL;
    assert_int_equal(fl_csprng_new_seeded(&r, seed, NULL), FL_OK);
    return r;
}

/* Copies shares idx[0..n) into out, in that order. */
static size_t pick(uint8_t *out, const uint8_t *shares, const size_t *idx, size_t n) {
    for (size_t i = 0; i < n; i++)
        memcpy(out + i * SB, shares + idx[i] * SB, SB);
    return n;
}

/* Every t-subset of k = 6 shares, for every t, rebuilds the secret; so do
 * the subsets in reverse order and all k shares. */
static void test_any_t_of_k(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    fl_csprng *r = seeded(1);
    const uint32_t xs[6] = {7, 3, 1000000007u, 12, 4294967295u, 1};
    uint8_t secret[32], back[32], shares[6 * SB], sub[6 * SB];
    for (uint32_t t = 1; t <= 6; t++) {
        fl_csprng_bytes(r, secret, 32);
        if (t == 2) memset(secret, 0xff, 32); /* every limb at its maximum */
        if (t == 3) memset(secret, 0, 32);
        assert_rc(fl_shamir_split(shares, secret, xs, 6, t, r, err), FL_OK, err);
        for (size_t i = 0; i < 6; i++)
            assert_int_equal(fl_shamir_share_x(shares + i * SB), xs[i]);
        for (unsigned mask = 0; mask < 64; mask++) {
            size_t idx[6], m = 0;
            for (size_t i = 0; i < 6; i++)
                if (mask & (1u << i)) idx[m++] = i;
            if (m < t) {
                if (m == 0) continue;
                pick(sub, shares, idx, m);
                memset(back, 0xaa, 32);
                assert_rc(fl_shamir_combine(back, sub, m, t, err), FL_ETHRESHOLD, err);
                continue;
            }
            pick(sub, shares, idx, m);
            assert_rc(fl_shamir_combine(back, sub, m, t, err), FL_OK, err);
            assert_memory_equal(back, secret, 32);
            /* reversed order */
            for (size_t i = 0; i < m / 2; i++) {
                size_t tmp = idx[i];
                idx[i] = idx[m - 1 - i];
                idx[m - 1 - i] = tmp;
            }
            pick(sub, shares, idx, m);
            assert_rc(fl_shamir_combine(back, sub, m, t, err), FL_OK, err);
            assert_memory_equal(back, secret, 32);
        }
    }
    fl_csprng_free(r);
}

/* t - 1 shares: FL_ETHRESHOLD, with the counts in the message. */
static void test_too_few(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    fl_csprng *r = seeded(2);
    uint32_t xs[20];
    for (uint32_t i = 0; i < 20; i++)
        xs[i] = 100 + 3 * i;
    uint8_t secret[32], back[32], shares[20 * SB];
    fl_csprng_bytes(r, secret, 32);
    assert_rc(fl_shamir_split(shares, secret, xs, 20, 11, r, err), FL_OK, err);
    assert_rc(fl_shamir_combine(back, shares, 10, 11, err), FL_ETHRESHOLD, err);
    assert_non_null(strstr(err, "10 shares, 11 needed"));
    assert_rc(fl_shamir_combine(back, shares + 9 * SB, 11, 11, err), FL_OK, err);
    assert_memory_equal(back, secret, 32);
    fl_csprng_free(r);
}

/* A corrupted share beyond the first t is detected, whatever byte of its
 * values is changed; corrupting one of the first t with more shares present
 * is detected too (the extra ones no longer agree). With exactly t shares a
 * corruption cannot be detected, only noticed when a limb leaves 32 bits. */
static void test_corrupted_extra_share(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    fl_csprng *r = seeded(3);
    const uint32_t xs[7] = {1, 2, 3, 4, 5, 6, 7};
    uint8_t secret[32], back[32], shares[7 * SB], bad[7 * SB];
    fl_csprng_bytes(r, secret, 32);
    assert_rc(fl_shamir_split(shares, secret, xs, 7, 4, r, err), FL_OK, err);
    for (size_t victim = 0; victim < 7; victim++)
        for (size_t byte = 8; byte < SB; byte += 7) {
            memcpy(bad, shares, sizeof bad);
            /* a small change keeps the value below p, so it is a valid field
             * element that sits on no polynomial of the others */
            bad[victim * SB + byte] ^= 0x01;
            memset(back, 0x55, 32);
            assert_rc(fl_shamir_combine(back, bad, 7, 4, err), FL_ECRYPTO, err);
            /* one of the first t: the secret's limbs almost surely leave 32
             * bits, which is caught before the extra shares are compared */
            if (victim >= 4) assert_non_null(strstr(err, "disagrees"));
            uint8_t zero[32] = {0};
            assert_memory_equal(back, zero, 32); /* wiped, not a wrong secret */
        }
    fl_csprng_free(r);
}

static void test_bad_inputs(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    fl_csprng *r = seeded(4);
    uint8_t secret[32] = {1, 2, 3}, back[32], shares[4 * SB], bad[4 * SB];
    const uint32_t dup[4] = {5, 6, 5, 7}, zero[4] = {5, 0, 6, 7}, ok[4] = {5, 6, 7, 8};
    assert_rc(fl_shamir_split(shares, secret, dup, 4, 2, r, err), FL_EINVAL, err);
    assert_non_null(strstr(err, "x = 5"));
    assert_rc(fl_shamir_split(shares, secret, zero, 4, 2, r, err), FL_EINVAL, err);
    assert_non_null(strstr(err, "share 1 has x = 0"));
    assert_rc(fl_shamir_split(shares, secret, ok, 4, 0, r, err), FL_EINVAL, err);
    assert_rc(fl_shamir_split(shares, secret, ok, 4, 5, r, err), FL_EINVAL, err);
    assert_rc(fl_shamir_split(shares, secret, ok, 4, 3, r, err), FL_OK, err);

    /* duplicate x at combine */
    memcpy(bad, shares, sizeof bad);
    memcpy(bad + 2 * SB, shares, SB);
    assert_rc(fl_shamir_combine(back, bad, 4, 3, err), FL_EINVAL, err);
    assert_non_null(strstr(err, "x = 5"));
    /* zero x */
    memcpy(bad, shares, sizeof bad);
    memset(bad + SB, 0, 8);
    assert_rc(fl_shamir_combine(back, bad, 4, 3, err), FL_EINVAL, err);
    /* x beyond 32 bits */
    memcpy(bad, shares, sizeof bad);
    bad[3 * SB + 5] = 1;
    assert_rc(fl_shamir_combine(back, bad, 4, 3, err), FL_EINVAL, err);
    assert_int_equal(fl_shamir_share_x(bad + 3 * SB), 0);
    /* a value >= p */
    memcpy(bad, shares, sizeof bad);
    memset(bad + SB + 8 + 8 * 3, 0xff, 8);
    assert_rc(fl_shamir_combine(back, bad, 4, 3, err), FL_EINVAL, err);
    assert_non_null(strstr(err, "not below p"));
    assert_rc(fl_shamir_combine(back, shares, 4, 0, err), FL_EINVAL, err);
    assert_rc(fl_shamir_combine(back, shares, 4, 3, err), FL_OK, err);
    assert_memory_equal(back, secret, 32);
    fl_csprng_free(r);
}

/* Below the threshold a share's values are uniform field elements whatever
 * the secret: the same x from two sharings of the SAME secret differ, and the
 * top bits of many share values are spread evenly (loose bucket test). */
static void test_shares_look_random(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    fl_csprng *r = seeded(5);
    const uint32_t xs[3] = {10, 20, 30};
    uint8_t secret[32] = {0}, a[3 * SB], b[3 * SB];
    unsigned buckets[8] = {0};
    for (int rep = 0; rep < 1000; rep++) {
        assert_rc(fl_shamir_split(a, secret, xs, 3, 2, r, err), FL_OK, err);
        for (int l = 0; l < 8; l++) {
            uint64_t v = 0;
            for (int i = 7; i >= 0; i--)
                v = (v << 8) | a[8 + 8 * l + i];
            buckets[v >> 58]++; /* v < 2^61: top 3 bits */
        }
    }
    for (int i = 0; i < 8; i++)
        assert_true(buckets[i] > 800 && buckets[i] < 1200);
    assert_rc(fl_shamir_split(b, secret, xs, 3, 2, r, err), FL_OK, err);
    assert_memory_not_equal(a + 8, b + 8, SB - 8);
    fl_csprng_free(r);
}

/* Large k and t (a complete graph of 1024 sites shares among 1023). */
static void test_large(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    fl_csprng *r = seeded(6);
    size_t k = 1023;
    uint32_t t = 512;
    uint32_t *xs = malloc(k * sizeof *xs);
    uint8_t *shares = malloc(k * SB), secret[32], back[32];
    for (size_t i = 0; i < k; i++)
        xs[i] = (uint32_t)(i * 7919 + 1);
    fl_csprng_bytes(r, secret, 32);
    assert_rc(fl_shamir_split(shares, secret, xs, k, t, r, err), FL_OK, err);
    assert_rc(fl_shamir_combine(back, shares + 100 * SB, k - 100, t, err), FL_OK, err);
    assert_memory_equal(back, secret, 32);
    free(xs);
    free(shares);
    fl_csprng_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_any_t_of_k),
        cmocka_unit_test(test_too_few),
        cmocka_unit_test(test_corrupted_extra_share),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_shares_look_random),
        cmocka_unit_test(test_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
