/* kx.h: the libsodium primitives under secure aggregation (DESIGN.md §9,
 * docs/secagg.md "Primitives"): X25519 key agreement, BLAKE2b key
 * derivation bound to a purpose, a pair of sites, a federation and a round,
 * XChaCha20-Poly1305 (IETF) encryption of Shamir shares with the same
 * binding in the associated data, and the ChaCha20 PRG that expands a 256-bit
 * seed into the uint32 mask words added into a vector mod 2^32.
 *
 * Encodings (fixed, so another implementation can interoperate):
 *   context(label, fed, round) = label bytes || 0x00 || u16le(len(fed)) ||
 *                                fed || u64le(round)
 *   derive: BLAKE2b-256 keyed with the X25519 shared secret over
 *           context || u32le(min(a, b)) || u32le(max(a, b))
 *   AEAD:   nonce (24 random bytes) || ciphertext || tag (16); associated
 *           data context || u32le(sender) || u32le(recipient)
 *   PRG:    word i of PRG(seed) is the little-endian uint32 at byte 4i of the
 *           ChaCha20-IETF keystream with key = seed, nonce = 0, block counter
 *           from 0 (RFC 8439); at most 2^36 words.
 * Functions return 0 or a negative FL_E* code (core/status.h). Every secret
 * intermediate (shared secrets, keystream) is wiped before return. */
#ifndef FL_KX_H
#define FL_KX_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "crypto/csprng.h"

#define FL_KX_KEY_BYTES 32   /* X25519 public and secret keys, derived keys, seeds */
#define FL_KX_NONCE_BYTES 24 /* XChaCha20-Poly1305 nonce */
#define FL_KX_TAG_BYTES 16   /* Poly1305 tag */
#define FL_KX_OVERHEAD (FL_KX_NONCE_BYTES + FL_KX_TAG_BYTES)
#define FL_KX_FED_MAX 128                       /* longest federation id bound into a context */
#define FL_KX_PRG_MAX_WORDS (UINT64_C(1) << 36) /* 2^32 ChaCha20 blocks of 16 words */

/* A fresh X25519 key pair: sk is 32 bytes from rng, pk = X25519(sk, 9). */
void fl_kx_keypair(uint8_t pk[FL_KX_KEY_BYTES], uint8_t sk[FL_KX_KEY_BYTES], fl_csprng *rng);

/* X25519(sk, peer_pk) into out. FL_ECRYPTO (out wiped) when the result is
 * all zero, i.e. peer_pk is a low-order point: such a "secret" is known to
 * everyone. */
int fl_kx_shared(uint8_t out[FL_KX_KEY_BYTES], const uint8_t sk[FL_KX_KEY_BYTES],
                 const uint8_t peer_pk[FL_KX_KEY_BYTES], char err[FL_ERR_LEN]);

/* A 32-byte key for one purpose (label), one pair of sites (a, b in either
 * order give the same key), one federation and one round, from a shared
 * secret. FL_EINVAL if label or federation_id is NULL or too long. */
int fl_kx_derive(uint8_t key[FL_KX_KEY_BYTES], const uint8_t shared[FL_KX_KEY_BYTES],
                 const char *label, const char *federation_id, uint64_t round, uint32_t a,
                 uint32_t b, char err[FL_ERR_LEN]);

/* fl_kx_shared then fl_kx_derive; the shared secret never leaves. */
int fl_kx_agree(uint8_t key[FL_KX_KEY_BYTES], const uint8_t sk[FL_KX_KEY_BYTES],
                const uint8_t peer_pk[FL_KX_KEY_BYTES], const char *label,
                const char *federation_id, uint64_t round, uint32_t self, uint32_t peer,
                char err[FL_ERR_LEN]);

/* What an AEAD ciphertext is bound to besides its key. */
typedef struct fl_kx_ad {
    const char *label;
    const char *federation_id;
    uint64_t round;
    uint32_t sender, recipient;
} fl_kx_ad;

/* Encrypts pt (len bytes) into ct (len + FL_KX_OVERHEAD bytes): a random
 * nonce from rng, then XChaCha20-Poly1305 with ad. ct and pt must not
 * overlap. FL_EINVAL for a bad ad. */
int fl_kx_seal(uint8_t *ct, const uint8_t *pt, size_t len, const uint8_t key[FL_KX_KEY_BYTES],
               const fl_kx_ad *ad, fl_csprng *rng, char err[FL_ERR_LEN]);

/* Decrypts ct (ct_len >= FL_KX_OVERHEAD bytes) into pt (ct_len -
 * FL_KX_OVERHEAD bytes). FL_ECRYPTO when the tag does not verify (wrong key,
 * tampered bytes, or other associated data); pt is then wiped. */
int fl_kx_open(uint8_t *pt, const uint8_t *ct, size_t ct_len, const uint8_t key[FL_KX_KEY_BYTES],
               const fl_kx_ad *ad, char err[FL_ERR_LEN]);

/* y[i] += sign * PRG(seed)[i] mod 2^32 for i < d (sign +1 or -1;
 * d <= FL_KX_PRG_MAX_WORDS, the caller checks). The keystream is made 4 KiB
 * at a time into a buffer on the stack and wiped at the end. */
void fl_kx_prg_add(uint32_t *y, uint64_t d, const uint8_t seed[FL_KX_KEY_BYTES], int sign);

/* The same for n seeds at once: y[i] += sum_s signs[s] * PRG(seeds[s])[i].
 * Each 4 KiB block of y stays in the L1 cache while every seed's keystream is
 * added into it, so y is read and written once, not n times. */
void fl_kx_prg_add_many(uint32_t *y, uint64_t d, const uint8_t (*seeds)[FL_KX_KEY_BYTES],
                        const int8_t *signs, size_t n);

#endif
