/* test_secagg_prims.c: the primitives under secure aggregation
 * (crypto/kx.h): X25519 agreement is symmetric and refuses low-order public
 * keys; derived keys are symmetric in the pair and differ per purpose, pair,
 * federation and round; XChaCha20-Poly1305 round-trips and detects a flipped
 * byte anywhere and any change of the associated data; the PRG is exactly
 * the ChaCha20-IETF keystream of kx.h (checked against
 * crypto_stream_chacha20_ietf), add then subtract gives the input back, and
 * the many-seed form equals one seed at a time, for lengths around the 1024-
 * word block. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/csprng.h"
#include "crypto/kx.h"

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

static void test_x25519(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    fl_csprng *r = seeded(1);
    uint8_t apk[32], ask[32], bpk[32], bsk[32], s1[32], s2[32];
    fl_kx_keypair(apk, ask, r);
    fl_kx_keypair(bpk, bsk, r);
    assert_memory_not_equal(apk, bpk, 32);
    assert_rc(fl_kx_shared(s1, ask, bpk, err), FL_OK, err);
    assert_rc(fl_kx_shared(s2, bsk, apk, err), FL_OK, err);
    assert_memory_equal(s1, s2, 32);
    /* low-order points: 0 and 1 (and a point of order 8) give a known secret */
    uint8_t low[3][32] = {{0}, {1}, {0}};
    static const uint8_t order8[32] = {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae,
                                       0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
                                       0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd,
                                       0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00};
    memcpy(low[2], order8, 32);
    for (int i = 0; i < 3; i++) {
        memset(s1, 0x77, 32);
        assert_rc(fl_kx_shared(s1, ask, low[i], err), FL_ECRYPTO, err);
        assert_non_null(strstr(err, "low-order"));
        assert_true(sodium_is_zero(s1, 32)); /* nothing left behind */
        assert_rc(fl_kx_agree(s1, ask, low[i], "cohort/test/v1", "fed", 1, 1, 2, err), FL_ECRYPTO,
                  err);
    }
    fl_csprng_free(r);
}

static void test_kdf(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    uint8_t sh[32], k[8][32];
    for (int i = 0; i < 32; i++)
        sh[i] = (uint8_t)(i * 13 + 5);
    assert_rc(fl_kx_derive(k[0], sh, "cohort/secagg-mask/v1", "fed-A", 7, 3, 9, err), FL_OK, err);
    assert_rc(fl_kx_derive(k[1], sh, "cohort/secagg-mask/v1", "fed-A", 7, 9, 3, err), FL_OK, err);
    assert_memory_equal(k[0], k[1], 32); /* (u, v) = (v, u) */
    /* purpose, federation, round and either site change the key */
    assert_rc(fl_kx_derive(k[2], sh, "cohort/secagg-enc/v1", "fed-A", 7, 3, 9, err), FL_OK, err);
    assert_rc(fl_kx_derive(k[3], sh, "cohort/secagg-mask/v1", "fed-B", 7, 3, 9, err), FL_OK, err);
    assert_rc(fl_kx_derive(k[4], sh, "cohort/secagg-mask/v1", "fed-A", 8, 3, 9, err), FL_OK, err);
    assert_rc(fl_kx_derive(k[5], sh, "cohort/secagg-mask/v1", "fed-A", 7, 4, 9, err), FL_OK, err);
    assert_rc(fl_kx_derive(k[6], sh, "cohort/secagg-mask/v1", "fed-A", 7, 3, 10, err), FL_OK, err);
    sh[0] ^= 1;
    assert_rc(fl_kx_derive(k[7], sh, "cohort/secagg-mask/v1", "fed-A", 7, 3, 9, err), FL_OK, err);
    for (int i = 1; i < 8; i++)
        for (int j = i + 1; j < 8; j++)
            assert_memory_not_equal(k[i], k[j], 32);
    for (int i = 2; i < 8; i++)
        assert_memory_not_equal(k[0], k[i], 32);
    /* the agreement from both ends gives the same key */
    fl_csprng *r = seeded(2);
    uint8_t apk[32], ask[32], bpk[32], bsk[32];
    fl_kx_keypair(apk, ask, r);
    fl_kx_keypair(bpk, bsk, r);
    assert_rc(fl_kx_agree(k[0], ask, bpk, "cohort/secagg-enc/v1", "f", 1, 11, 12, err), FL_OK, err);
    assert_rc(fl_kx_agree(k[1], bsk, apk, "cohort/secagg-enc/v1", "f", 1, 12, 11, err), FL_OK, err);
    assert_memory_equal(k[0], k[1], 32);
    /* bad context */
    char longfed[FL_KX_FED_MAX + 2];
    memset(longfed, 'x', sizeof longfed - 1);
    longfed[sizeof longfed - 1] = 0;
    assert_rc(fl_kx_derive(k[0], sh, "l", longfed, 1, 1, 2, err), FL_EINVAL, err);
    assert_non_null(strstr(err, "federation id"));
    assert_rc(fl_kx_derive(k[0], sh, "l", "", 1, 1, 2, err), FL_EINVAL, err);
    assert_rc(fl_kx_derive(k[0], sh, "", "f", 1, 1, 2, err), FL_EINVAL, err);
    assert_non_null(strstr(err, "label"));
    longfed[FL_KX_FED_MAX] = 0; /* exactly the maximum is fine */
    assert_rc(fl_kx_derive(k[0], sh, "l", longfed, 1, 1, 2, err), FL_OK, err);
    fl_csprng_free(r);
}

static void test_aead(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    fl_csprng *r = seeded(3);
    uint8_t key[32], pt[144], back[144], ct[144 + FL_KX_OVERHEAD], bad[sizeof ct], ct2[sizeof ct];
    fl_csprng_bytes(r, key, 32);
    fl_csprng_bytes(r, pt, sizeof pt);
    fl_kx_ad ad = {"cohort/secagg-share/v1", "fed-A", 5, 3, 9};
    assert_rc(fl_kx_seal(ct, pt, sizeof pt, key, &ad, r, err), FL_OK, err);
    assert_rc(fl_kx_open(back, ct, sizeof ct, key, &ad, err), FL_OK, err);
    assert_memory_equal(back, pt, sizeof pt);
    /* fresh random nonce: the same plaintext seals differently */
    assert_rc(fl_kx_seal(ct2, pt, sizeof pt, key, &ad, r, err), FL_OK, err);
    assert_memory_not_equal(ct, ct2, FL_KX_NONCE_BYTES);
    /* every flipped byte (nonce, body, tag) is detected and wipes the output */
    for (size_t i = 0; i < sizeof ct; i++) {
        memcpy(bad, ct, sizeof ct);
        bad[i] ^= 0x40;
        memset(back, 0x33, sizeof back);
        assert_rc(fl_kx_open(back, bad, sizeof bad, key, &ad, err), FL_ECRYPTO, err);
        assert_true(sodium_is_zero(back, sizeof back));
    }
    assert_non_null(strstr(err, "from site 3 to site 9"));
    /* any other associated data fails */
    fl_kx_ad other[6] = {ad, ad, ad, ad, ad, ad};
    other[0].label = "cohort/secagg-other/v1";
    other[1].federation_id = "fed-B";
    other[2].round = 6;
    other[3].sender = 9;
    other[3].recipient = 3; /* the reverse direction */
    other[4].sender = 4;
    other[5].recipient = 10;
    for (int i = 0; i < 6; i++)
        assert_rc(fl_kx_open(back, ct, sizeof ct, key, &other[i], err), FL_ECRYPTO, err);
    /* wrong key */
    key[31] ^= 1;
    assert_rc(fl_kx_open(back, ct, sizeof ct, key, &ad, err), FL_ECRYPTO, err);
    /* too short */
    assert_rc(fl_kx_open(back, ct, FL_KX_OVERHEAD - 1, key, &ad, err), FL_EINVAL, err);
    /* a bad context is refused before any work */
    other[0].federation_id = NULL;
    assert_rc(fl_kx_seal(ct, pt, sizeof pt, key, &other[0], r, err), FL_EINVAL, err);
    fl_csprng_free(r);
}

/* The PRG is the ChaCha20-IETF keystream (nonce 0) read as little-endian
 * words, across and within 1024-word blocks. */
static void test_prg_is_chacha20(void **state) {
    (void)state;
    fl_csprng *r = seeded(4);
    uint8_t seed[32];
    fl_csprng_bytes(r, seed, 32);
    const uint64_t lens[] = {1, 15, 16, 17, 1023, 1024, 1025, 2048, 5000};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        uint64_t d = lens[li];
        uint32_t *y = calloc(d, 4);
        uint8_t *ks = malloc(d * 4);
        static const uint8_t nonce[12] = {0};
        crypto_stream_chacha20_ietf(ks, d * 4, nonce, seed);
        fl_kx_prg_add(y, d, seed, +1);
        for (uint64_t i = 0; i < d; i++) {
            uint32_t w = (uint32_t)ks[4 * i] | (uint32_t)ks[4 * i + 1] << 8 |
                         (uint32_t)ks[4 * i + 2] << 16 | (uint32_t)ks[4 * i + 3] << 24;
            if (y[i] != w)
                fail_msg("d = %llu: word %llu differs", (unsigned long long)d,
                         (unsigned long long)i);
        }
        fl_kx_prg_add(y, d, seed, -1);
        for (uint64_t i = 0; i < d; i++)
            assert_int_equal(y[i], 0);
        free(y);
        free(ks);
    }
    fl_csprng_free(r);
}

/* add then subtract returns any input; many seeds at once equal one at a
 * time; different seeds give different streams. */
static void test_prg_add_sub(void **state) {
    (void)state;
    fl_csprng *r = seeded(5);
    uint64_t d = 3 * 1024 + 77;
    uint32_t *x = malloc(d * 4), *y = malloc(d * 4), *z = malloc(d * 4);
    fl_csprng_bytes(r, x, d * 4);
    uint8_t seeds[5][32];
    int8_t signs[5] = {1, -1, -1, 1, 1};
    fl_csprng_bytes(r, seeds, sizeof seeds);
    memcpy(y, x, d * 4);
    fl_kx_prg_add(y, d, seeds[0], +1);
    assert_memory_not_equal(y, x, d * 4);
    fl_kx_prg_add(y, d, seeds[0], -1);
    assert_memory_equal(y, x, d * 4);

    memcpy(y, x, d * 4);
    memcpy(z, x, d * 4);
    fl_kx_prg_add_many(y, d, (const uint8_t(*)[32])seeds, signs, 5);
    for (int s = 0; s < 5; s++)
        fl_kx_prg_add(z, d, seeds[s], signs[s]);
    assert_memory_equal(y, z, d * 4);
    for (int s = 0; s < 5; s++)
        signs[s] = (int8_t)-signs[s];
    fl_kx_prg_add_many(y, d, (const uint8_t(*)[32])seeds, signs, 5);
    assert_memory_equal(y, x, d * 4);

    memset(y, 0, d * 4);
    memset(z, 0, d * 4);
    fl_kx_prg_add(y, d, seeds[1], 1);
    fl_kx_prg_add(z, d, seeds[2], 1);
    assert_memory_not_equal(y, z, d * 4);
    fl_kx_prg_add_many(y, 0, (const uint8_t(*)[32])seeds, signs, 5); /* d = 0: nothing */
    free(x);
    free(y);
    free(z);
    fl_csprng_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_x25519),      cmocka_unit_test(test_kdf),
        cmocka_unit_test(test_aead),        cmocka_unit_test(test_prg_is_chacha20),
        cmocka_unit_test(test_prg_add_sub),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
