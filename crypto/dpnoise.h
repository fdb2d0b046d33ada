/* dpnoise.h: fast, float-safe Gaussian noise for DP-SGD (DESIGN.md §7, §8;
 * the privacy argument is in docs/privacy.md, "Fast DP-SGD noise").
 *
 * Noise of standard deviation `stddev` is g Z: g = 2^e is a power of two
 * with stddev / g = s in [2^20, 2^21), and Z is an integer whose law is
 * within a factor exp(+-2^-53) of the discrete Gaussian N_Z(0, s^2) at every
 * |z| <= 12 s (the rest has mass below 2^-100). Z = K X1 + X2 (Micciancio and
 * Walter 2017, "Gaussian sampling over the integers: efficient, generic,
 * constant-time", the convolution lemma after Peikert 2010) with X1, X2 two
 * draws of a base discrete Gaussian of scale sigma0 ~ sqrt(2 s), each drawn
 * with one lookup in an alias table (Walker 1977; Vose 1991) built in exact
 * 256-bit integer arithmetic, from one 64-bit uniform word: no
 * floating-point number is ever sampled (Mironov 2012; Jin et al. 2022).
 * Every sample does the same operations whatever its value; the only
 * value-dependent branch is taken with probability 2^-48.
 *
 * Randomness: AES-256-CTR (OpenSSL EVP, AES-NI; about 8 GB/s here against
 * 2.3 GB/s for libsodium's ChaCha20) keyed from a private fl_csprng, with a
 * fresh key and counter for every vector and every GiB of keystream (fast
 * key erasure: once a vector is produced nothing in memory can regenerate
 * it). Keys, keystream and noise vectors live in sodium_malloc memory and
 * are wiped with sodium_memzero.
 *
 * A generator made with FL_DPNOISE_BACKGROUND keeps the next vector of the
 * last requested (n, stddev) ready on a worker thread: the noise does not
 * depend on the data, so it is drawn while the caller computes the
 * gradient. The results are the same as without the worker (the vectors are
 * drawn in the same order from the same keystream). A generator is used by
 * one caller thread at a time. */
#ifndef FL_DPNOISE_H
#define FL_DPNOISE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "crypto/csprng.h"

/* stddev / grid is in [2^GRID_BITS, 2^(GRID_BITS+1)). */
#define FL_DPNOISE_GRID_BITS 20
/* Accepted standard deviations: [2^-60, 2^60]. */
#define FL_DPNOISE_MIN_STDDEV 0x1p-60
#define FL_DPNOISE_MAX_STDDEV 0x1p60

/* Flags of fl_dpnoise_new. PORTABLE: the plain C code instead of the
 * AVX2/AVX-512 code picked at run time; NO_AVX512: at most AVX2. The values
 * are the same whatever the code path; these exist so tests can check that. */
#define FL_DPNOISE_BACKGROUND 1u
#define FL_DPNOISE_PORTABLE 2u
#define FL_DPNOISE_NO_AVX512 4u

typedef struct fl_dpnoise fl_dpnoise;

/* A generator whose keys come from a private fl_csprng: an OS-keyed one if
 * parent is NULL or not deterministic, or, for reproducible TESTS ONLY, one
 * seeded with 32 bytes drawn from a deterministic parent (fl_csprng_new_seeded).
 * parent is only read during this call. *out is owned by the caller and
 * released with fl_dpnoise_free. FL_ECRYPTO (libsodium or OpenSSL failed),
 * FL_ENOMEM, FL_EINVAL (unknown flags). */
int fl_dpnoise_new(fl_dpnoise **out, fl_csprng *parent, unsigned flags, char err[FL_ERR_LEN]);

/* Stops the worker, wipes every key, keystream and noise buffer, releases.
 * fl_dpnoise_free(NULL) does nothing. */
void fl_dpnoise_free(fl_dpnoise *nz);

/* The grid g = 2^e of noise with this stddev, and s = stddev / g. FL_EINVAL
 * unless stddev is finite and in [FL_DPNOISE_MIN_STDDEV, FL_DPNOISE_MAX_STDDEV]. */
int fl_dpnoise_grid(double *grid, double *s, double stddev, char err[FL_ERR_LEN]);

/* z[0..n) = integer noise in grid units (scale s, see fl_dpnoise_grid). */
int fl_dpnoise_sample(fl_dpnoise *nz, int32_t *z, size_t n, double stddev, char err[FL_ERR_LEN]);

/* out[0..n) = g Z_i: noise values with standard deviation stddev, on the
 * grid. Adding them to data in floating point is NOT float-safe; use
 * fl_dpnoise_add for that. */
int fl_dpnoise_gaussian(fl_dpnoise *nz, float *out, size_t n, double stddev, char err[FL_ERR_LEN]);

/* The float-safe way to noise a vector (Mironov's snapping, with integer
 * noise): x[i] <- scale * g * (round(x[i] / g) + Z_i), the rounding to the
 * nearest integer (ties to even) computed exactly, so the result is a
 * function of the integer vector round(x / g) + Z alone and no low-order bit
 * of x survives. scale (e.g. 1 / batch size) is applied after the noise and
 * so is post-processing. Snapping moves the L2 sensitivity by at most
 * g sqrt(n) <= stddev sqrt(n) 2^-20: clip to C (1 - sigma sqrt(n) 2^-20) to
 * keep it C (docs/privacy.md). FL_ENUMERIC if some x[i] is not finite or
 * |x[i] / g| > 2^50; x is then unspecified. */
int fl_dpnoise_add(fl_dpnoise *nz, float *x, size_t n, double stddev, float scale,
                   char err[FL_ERR_LEN]);

/* With FL_DPNOISE_BACKGROUND: start drawing a vector of (n, stddev) now, so
 * that the first fl_dpnoise_add/gaussian/sample of that shape need not wait.
 * A no-op without the flag. */
int fl_dpnoise_prefetch(fl_dpnoise *nz, size_t n, double stddev, char err[FL_ERR_LEN]);

/* TESTS: builds the sampler for stddev and checks, in exact integer
 * arithmetic, that the alias table realises the integer weights it was
 * built from, and that those weights are within a relative 2^-54 of the
 * base discrete Gaussian's probabilities. Reports the parameters. */
typedef struct fl_dpnoise_params {
    double grid, s, sigma0; /* grid g, s = stddev / g, base scale sigma0 */
    int32_t k;              /* Z = k X1 + X2 */
    int32_t support;        /* base support is |x| <= support */
    double max_rel_error;   /* max |realised / ideal - 1| over the base support */
} fl_dpnoise_params;
int fl_dpnoise_selfcheck(fl_dpnoise_params *p, double stddev, char err[FL_ERR_LEN]);

#endif
