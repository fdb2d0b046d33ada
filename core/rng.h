/* rng.h: a small, seeded, deterministic generator (xoshiro256**, Blackman and
 * Vigna, "Scrambled linear pseudorandom number generators", 2018) for
 * everything that must be reproducible from a seed: data splits, shuffles,
 * parameter initialisation, partitions.
 *
 * NOT for anything secret or privacy-relevant: DP noise, masks, keys and
 * stochastic rounding use the CSPRNG in crypto/. */
#ifndef FL_RNG_H
#define FL_RNG_H

#include <stdint.h>

typedef struct fl_rng {
    uint64_t s[4];
} fl_rng;

/* Seeds the state by running splitmix64 over seed, so that nearby seeds give
 * unrelated streams. */
void fl_rng_seed(fl_rng *r, uint64_t seed);
uint64_t fl_rng_next(fl_rng *r);
/* Uniform in [0, n) without modulo bias; n > 0. */
uint64_t fl_rng_below(fl_rng *r, uint64_t n);
/* Uniform double in [0, 1) with 53 random bits. */
double fl_rng_uniform(fl_rng *r);
/* Standard normal (Box-Muller). Reproducible, not a privacy mechanism. */
double fl_rng_normal(fl_rng *r);
/* Fisher-Yates shuffle of a[0..n). */
void fl_rng_shuffle_i32(fl_rng *r, int32_t *a, int64_t n);

#endif
