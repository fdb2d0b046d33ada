/* kx.c: X25519, BLAKE2b key derivation, XChaCha20-Poly1305 and the ChaCha20
 * mask PRG on libsodium. Encodings and contracts are in kx.h; the protocol
 * that uses them is docs/secagg.md. */
#include "core/bytes.h"
#include "crypto/kx.h"

#include <string.h>

#include <sodium.h>

/* Longest label accepted; labels are short constants such as
 * "cohort/secagg-mask/v1". */
#define LABEL_MAX 64
/* label + NUL + u16 + fed + u64 + two u32 */
#define CONTEXT_MAX (LABEL_MAX + 1 + 2 + FL_KX_FED_MAX + 8 + 8)

/* The keystream buffer of the PRG: 1024 words, 64 ChaCha20 blocks. Small
 * enough that it and the matching block of y stay in L1. */
#define PRG_WORDS 1024

/* chacha20 picks its fastest implementation (AVX2, SSSE3) in sodium_init;
 * without it every call would run the portable reference code. */
static void sodium_start(void) {
    if (sodium_init() < 0) return; /* cannot happen after the first success */
}

/* context(label, fed, round) || u32le(a) || u32le(b) into buf (CONTEXT_MAX);
 * returns its length, or 0 for a bad label or federation id. */
static size_t context(uint8_t *buf, const char *label, const char *fed, uint64_t round, uint32_t a,
                      uint32_t b) {
    if (!label || !fed) return 0;
    size_t ll = strnlen(label, LABEL_MAX + 1), fl = strnlen(fed, FL_KX_FED_MAX + 1);
    if (ll == 0 || ll > LABEL_MAX || fl == 0 || fl > FL_KX_FED_MAX) return 0;
    size_t n = 0;
    memcpy(buf, label, ll + 1); /* with its NUL: no label is a prefix of another's encoding */
    n += ll + 1;
    fl_put_le16(buf + n, (uint16_t)fl);
    n += 2;
    memcpy(buf + n, fed, fl);
    n += fl;
    fl_put_le64(buf + n, round);
    n += 8;
    fl_put_le32(buf + n, a);
    fl_put_le32(buf + n + 4, b);
    return n + 8;
}

static int bad_context(char *err, const char *label, const char *fed) {
    if (!label || !*label || strlen(label) > LABEL_MAX)
        return fl_seterr(err, FL_EINVAL, "kx: context label must be 1..%d bytes", LABEL_MAX);
    return fl_seterr(err, FL_EINVAL, "kx: federation id must be 1..%d bytes, got %zu",
                     FL_KX_FED_MAX, fed ? strlen(fed) : (size_t)0);
}

void fl_kx_keypair(uint8_t pk[FL_KX_KEY_BYTES], uint8_t sk[FL_KX_KEY_BYTES], fl_csprng *rng) {
    sodium_start();
    fl_csprng_bytes(rng, sk, FL_KX_KEY_BYTES);
    /* Fails only for a scalar that clamps to zero, which clamping rules out. */
    if (crypto_scalarmult_base(pk, sk) != 0) memset(pk, 0, FL_KX_KEY_BYTES);
}

int fl_kx_shared(uint8_t out[FL_KX_KEY_BYTES], const uint8_t sk[FL_KX_KEY_BYTES],
                 const uint8_t peer_pk[FL_KX_KEY_BYTES], char err[FL_ERR_LEN]) {
    sodium_start();
    /* libsodium already refuses an all-zero result (and small-order points);
     * the explicit check keeps that guarantee whatever the version. */
    if (crypto_scalarmult(out, sk, peer_pk) != 0 || sodium_is_zero(out, FL_KX_KEY_BYTES)) {
        sodium_memzero(out, FL_KX_KEY_BYTES);
        return fl_seterr(err, FL_ECRYPTO,
                         "kx: X25519 with this public key gives the all-zero secret "
                         "(a low-order point)");
    }
    return FL_OK;
}

int fl_kx_derive(uint8_t key[FL_KX_KEY_BYTES], const uint8_t shared[FL_KX_KEY_BYTES],
                 const char *label, const char *federation_id, uint64_t round, uint32_t a,
                 uint32_t b, char err[FL_ERR_LEN]) {
    uint8_t buf[CONTEXT_MAX];
    size_t n = context(buf, label, federation_id, round, a < b ? a : b, a < b ? b : a);
    if (!n) return bad_context(err, label, federation_id);
    crypto_generichash(key, FL_KX_KEY_BYTES, buf, n, shared, FL_KX_KEY_BYTES);
    return FL_OK;
}

int fl_kx_agree(uint8_t key[FL_KX_KEY_BYTES], const uint8_t sk[FL_KX_KEY_BYTES],
                const uint8_t peer_pk[FL_KX_KEY_BYTES], const char *label,
                const char *federation_id, uint64_t round, uint32_t self, uint32_t peer,
                char err[FL_ERR_LEN]) {
    uint8_t shared[FL_KX_KEY_BYTES];
    int rc = fl_kx_shared(shared, sk, peer_pk, err);
    if (!rc) rc = fl_kx_derive(key, shared, label, federation_id, round, self, peer, err);
    sodium_memzero(shared, sizeof shared);
    if (rc) sodium_memzero(key, FL_KX_KEY_BYTES);
    return rc;
}

int fl_kx_seal(uint8_t *ct, const uint8_t *pt, size_t len, const uint8_t key[FL_KX_KEY_BYTES],
               const fl_kx_ad *ad, fl_csprng *rng, char err[FL_ERR_LEN]) {
    uint8_t adb[CONTEXT_MAX];
    size_t an = context(adb, ad->label, ad->federation_id, ad->round, ad->sender, ad->recipient);
    if (!an) return bad_context(err, ad->label, ad->federation_id);
    sodium_start();
    /* Random 192-bit nonces: collisions are negligible even with the key
     * shared by both directions of a pair. */
    fl_csprng_bytes(rng, ct, FL_KX_NONCE_BYTES);
    crypto_aead_xchacha20poly1305_ietf_encrypt(ct + FL_KX_NONCE_BYTES, NULL, pt, len, adb, an, NULL,
                                               ct, key);
    return FL_OK;
}

int fl_kx_open(uint8_t *pt, const uint8_t *ct, size_t ct_len, const uint8_t key[FL_KX_KEY_BYTES],
               const fl_kx_ad *ad, char err[FL_ERR_LEN]) {
    uint8_t adb[CONTEXT_MAX];
    if (ct_len < FL_KX_OVERHEAD)
        return fl_seterr(err, FL_EINVAL, "kx: ciphertext of %zu bytes, expected at least %d",
                         ct_len, FL_KX_OVERHEAD);
    size_t an = context(adb, ad->label, ad->federation_id, ad->round, ad->sender, ad->recipient);
    if (!an) return bad_context(err, ad->label, ad->federation_id);
    sodium_start();
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, ct + FL_KX_NONCE_BYTES,
                                                   ct_len - FL_KX_NONCE_BYTES, adb, an, ct,
                                                   key) != 0) {
        sodium_memzero(pt, ct_len - FL_KX_OVERHEAD);
        return fl_seterr(err, FL_ECRYPTO,
                         "kx: ciphertext from site %u to site %u does not authenticate "
                         "(wrong key, tampered, or another federation/round)",
                         ad->sender, ad->recipient);
    }
    return FL_OK;
}

/* ============================== mask PRG ============================== */

/* The hot loops: restrict and a constant trip count let the compiler
 * vectorise them at -O2 without alias checks. */
static void add_block(uint32_t *restrict y, const uint32_t *restrict k) {
    for (size_t i = 0; i < PRG_WORDS; i++)
        y[i] += k[i];
}
static void sub_block(uint32_t *restrict y, const uint32_t *restrict k) {
    for (size_t i = 0; i < PRG_WORDS; i++)
        y[i] -= k[i];
}

void fl_kx_prg_add_many(uint32_t *y, uint64_t d, const uint8_t (*seeds)[FL_KX_KEY_BYTES],
                        const int8_t *signs, size_t n) {
    /* xor_ic over a block of zeros is the keystream itself, starting at any
     * block counter: crypto_stream_chacha20_ietf would always start at 0. */
    static const uint8_t zeros[PRG_WORDS * 4];
    static const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
    _Alignas(64) uint32_t ks[PRG_WORDS];
    if (d == 0 || n == 0) return;
    sodium_start();
    for (uint64_t off = 0; off < d; off += PRG_WORDS) {
        size_t m = d - off < PRG_WORDS ? (size_t)(d - off) : PRG_WORDS;
        uint32_t ic = (uint32_t)(off / 16); /* 16 words per 64-byte block */
        for (size_t s = 0; s < n; s++) {
            crypto_stream_chacha20_ietf_xor_ic((uint8_t *)ks, zeros, m * 4, nonce, ic, seeds[s]);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
            for (size_t i = 0; i < m; i++)
                ks[i] = __builtin_bswap32(ks[i]);
#endif
            if (m == PRG_WORDS) {
                if (signs[s] > 0)
                    add_block(y + off, ks);
                else
                    sub_block(y + off, ks);
            } else if (signs[s] > 0) {
                for (size_t i = 0; i < m; i++)
                    y[off + i] += ks[i];
            } else {
                for (size_t i = 0; i < m; i++)
                    y[off + i] -= ks[i];
            }
        }
    }
    sodium_memzero(ks, sizeof ks);
}

void fl_kx_prg_add(uint32_t *y, uint64_t d, const uint8_t seed[FL_KX_KEY_BYTES], int sign) {
    int8_t s = sign < 0 ? -1 : 1;
    fl_kx_prg_add_many(y, d, (const uint8_t(*)[FL_KX_KEY_BYTES])seed, &s, 1);
}
