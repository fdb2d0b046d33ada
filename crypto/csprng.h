/* csprng.h: the cryptographically secure random generator behind every
 * privacy-relevant random choice in Cohort: DP noise, secure-aggregation
 * masks and seeds, stochastic rounding (DESIGN.md §8, §9).
 *
 * Construction: ChaCha20 (libsodium's crypto_stream_chacha20_ietf) with
 * "fast key erasure" (Bernstein, 2017): each refill produces 32 bytes of new
 * key plus a block of output and overwrites the old key, so a later memory
 * disclosure reveals nothing about earlier output. Handed-out bytes are wiped
 * from the buffer. The normal generator takes its key from the operating
 * system (randombytes_buf), mixes in fresh OS entropy every MiB, and rekeys
 * from the OS after fork(). The whole state lives in sodium_malloc memory
 * (guard pages, locked) and is wiped with sodium_memzero on free.
 *
 * fl_csprng_new_seeded is a DETERMINISTIC generator for reproducible tests
 * only: it never touches OS entropy, and anyone who knows the seed knows
 * every output. Nothing that protects a real person's data may use it. */
#ifndef FL_CSPRNG_H
#define FL_CSPRNG_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define FL_CSPRNG_SEEDBYTES 32

typedef struct fl_csprng fl_csprng;

/* A generator keyed from the operating system. *out is owned by the caller
 * and released with fl_csprng_free. FL_ECRYPTO if libsodium cannot start,
 * FL_ENOMEM if secure memory is unavailable. */
int fl_csprng_new(fl_csprng **out, char err[FL_ERR_LEN]);

/* TESTS ONLY: a deterministic generator whose whole output is fixed by
 * seed. The seed is copied into secure memory; the caller wipes its own. */
int fl_csprng_new_seeded(fl_csprng **out, const unsigned char seed[FL_CSPRNG_SEEDBYTES],
                         char err[FL_ERR_LEN]);

/* Wipes and releases the state. fl_csprng_free(NULL) does nothing. */
void fl_csprng_free(fl_csprng *r);

/* 1 for a seeded (test) generator, 0 for an OS-keyed one. */
int fl_csprng_is_deterministic(const fl_csprng *r);

/* n uniformly random bytes into buf. */
void fl_csprng_bytes(fl_csprng *r, void *buf, size_t n);

/* A uniformly random 64-bit word. */
uint64_t fl_csprng_u64(fl_csprng *r);

/* k uniformly random bits (0 <= k <= 64) in the low bits of the result,
 * drawn from a bit pool so that small draws do not waste a whole word. */
uint64_t fl_csprng_bits(fl_csprng *r, unsigned k);

/* Uniform in [0, n), n > 0, without modulo bias (rejection of the top
 * 2^64 mod n values). Returns 0 for n == 0. */
uint64_t fl_csprng_below(fl_csprng *r, uint64_t n);

#endif
