/* shamir.h: Shamir t-of-k secret sharing of a 32-byte secret (Shamir, "How
 * to share a secret", CACM 1979), as secure aggregation shares each site's
 * self-mask seed and mask secret key among its neighbours (DESIGN.md §9,
 * docs/secagg.md "Shamir sharing").
 *
 * Field: integers modulo the Mersenne prime p = 2^61 - 1. The secret is
 * split into eight 32-bit limbs (little-endian), each shared with its own
 * random polynomial of degree t-1 whose constant term is the limb. A share is
 * FL_SHAMIR_SHARE_BYTES = 72 bytes: u64le(x) then the eight u64le values
 * f_0(x) .. f_7(x), each < p. x is the holder's site id (> 0, < 2^32), so
 * every share says whom it was made for. Any t shares give the secret back
 * by Lagrange interpolation at 0; fewer reveal nothing about it. */
#ifndef FL_SHAMIR_H
#define FL_SHAMIR_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "crypto/csprng.h"

#define FL_SHAMIR_SECRET_BYTES 32
#define FL_SHAMIR_SHARE_BYTES 72
#define FL_SHAMIR_LIMBS 8
#define FL_SHAMIR_P ((UINT64_C(1) << 61) - 1)
#define FL_SHAMIR_MAX_SHARES 65535

/* Splits secret into k shares (shares: k * FL_SHAMIR_SHARE_BYTES bytes,
 * share i for holder xs[i]) of which any t rebuild it. Coefficients come from
 * rng and are wiped. FL_EINVAL if t < 1, t > k, k > FL_SHAMIR_MAX_SHARES, or
 * an x is 0 or repeated (nothing is written then). FL_ENOMEM if secure
 * memory is short. The field arithmetic has no secret-dependent branches. */
int fl_shamir_split(uint8_t *shares, const uint8_t secret[FL_SHAMIR_SECRET_BYTES],
                    const uint32_t *xs, size_t k, uint32_t t, fl_csprng *rng, char err[FL_ERR_LEN]);

/* Rebuilds the secret from n shares (n * FL_SHAMIR_SHARE_BYTES bytes, any
 * order) made with threshold t. Uses the first t; every further share must
 * lie on the same polynomials, else FL_ECRYPTO (a corrupted or forged share;
 * secret wiped). FL_ETHRESHOLD if n < t, FL_EINVAL if t < 1, an x is 0 or
 * repeated, or a value is not below p. Intermediates are wiped. */
int fl_shamir_combine(uint8_t secret[FL_SHAMIR_SECRET_BYTES], const uint8_t *shares, size_t n,
                      uint32_t t, char err[FL_ERR_LEN]);

/* The x coordinate (holder) of a share; 0 if it does not fit 32 bits. */
uint32_t fl_shamir_share_x(const uint8_t share[FL_SHAMIR_SHARE_BYTES]);

#endif
