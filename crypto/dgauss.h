/* dgauss.h: exact discrete Gaussian sampling (Canonne, Kamath, Steinke 2020,
 * "The Discrete Gaussian for Differential Privacy", Algorithms 1-3) and the
 * DP-SGD noise built on it (DESIGN.md §7, §8; docs/privacy.md).
 *
 * Every sampler here uses only integer arithmetic on uniformly random bits
 * from the CSPRNG: no floating-point number is ever sampled, so there are
 * no float-bit artefacts for an attacker to read (Mironov 2012, "On
 * Significance of the Least Significant Bits For Differential Privacy";
 * Jin et al. 2022 for Gaussian samplers).
 *
 * DP-SGD noise of standard deviation s is g Z with Z ~ N_Z(0, 2^(2k)), the
 * discrete Gaussian of scale 2^k on the integers, k = FL_DP_NOISE_GRID_BITS,
 * and g = s 2^-k, so the noise lives on a grid 2^-21 of its own standard
 * deviation. docs/privacy.md bounds its distance to the continuous Gaussian
 * that the accountants assume. */
#ifndef FL_DGAUSS_H
#define FL_DGAUSS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "crypto/csprng.h"

#define FL_DP_NOISE_GRID_BITS 21

/* Limits of the exact sampler's rational variance num/den, chosen so every
 * intermediate fits in 128 bits (see dgauss.c). */
#define FL_DGAUSS_MAX_NUM (UINT64_C(1) << 43)
#define FL_DGAUSS_MAX_DEN (UINT64_C(1) << 20)

/* *out = 1 with probability exp(-num/den) exactly, else 0 (CKS20 Alg. 1,
 * extended to num/den > 1). den > 0; num/den may be any value. */
int fl_dgauss_bernoulli_exp(int *out, uint64_t num, uint64_t den, fl_csprng *rng,
                            char err[FL_ERR_LEN]);

/* n exact samples of the discrete Gaussian N_Z(0, sigma^2) with sigma^2 =
 * num/den: P(z) proportional to exp(-z^2 / (2 sigma^2)) on the integers
 * (CKS20 Alg. 3). 1 <= num <= 2^43, 1 <= den <= 2^20. */
int fl_dgauss_sample(int64_t *out, size_t n, uint64_t num, uint64_t den, fl_csprng *rng,
                     char err[FL_ERR_LEN]);

/* n samples of DP-SGD noise with standard deviation stddev (> 0, finite):
 * out[i] = stddev 2^-21 Z_i with Z_i ~ N_Z(0, 2^42). out is caller-owned. */
int fl_dp_gaussian_noise(float *out, size_t n, double stddev, fl_csprng *rng, char err[FL_ERR_LEN]);

/* The float-safe way to noise a vector (Mironov's snapping, with integer
 * noise): x[i] <- g (round(x[i] / g) + Z_i), g = stddev 2^-21, computed on
 * integers and only then scaled. The output is a function of the integer
 * vector round(x/g) + Z alone, so no low-order float bits of x survive.
 * Rounding to the grid adds at most g sqrt(n) to the L2 sensitivity; the
 * accountant's noise multiplier sigma is then sigma / (1 + sigma sqrt(n)
 * 2^-21) (docs/privacy.md). FL_ENUMERIC if some x[i] is not finite or too
 * large for the grid. */
int fl_dp_add_gaussian_noise(float *x, size_t n, double stddev, fl_csprng *rng,
                             char err[FL_ERR_LEN]);

#endif
