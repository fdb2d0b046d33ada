/* backend.h: the table of compute operations (DESIGN.md §7).
 *
 * A backend is picked once, when a training engine starts, like libsodium
 * picks a ChaCha20 implementation: the CPU backend (OpenBLAS + plain loops)
 * is the reference and always builds; the CUDA backend (kernels/cuda/) builds
 * when nvcc is found and is used when a device is present. Callers only see
 * this table, so CPU and GPU receive identical arguments.
 *
 * Conventions:
 *  - Every pointer marked d_ is backend memory from ops->alloc: host memory on
 *    the CPU backend, device memory on CUDA. Host pointers are only accepted by
 *    upload/download.
 *  - sgemm follows cuBLAS/BLAS column-major argument order exactly. Matrices
 *    in Cohort are row-major, so a row-major (r, c) matrix is passed as a
 *    column-major (c, r) one; docs/kernels.md derives each layer's call.
 *  - Other matrices are row-major (rows, cols), shapes in the comments.
 *  - Operations may run asynchronously on the backend's stream; download and
 *    sync wait for all earlier work.
 *  - Every operation returns 0 or a negative FL_E* code (status.h); a
 *    backend keeps the last error's text for fl_backend_error().
 *  - Integer operations (quantize, mod_add, mod_sub) must agree bit for bit
 *    between backends; float ones within a size-aware tolerance. */
#ifndef FL_BACKEND_H
#define FL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

enum fl_device { FL_DEVICE_AUTO = 0, FL_DEVICE_CPU = 1, FL_DEVICE_CUDA = 2 };

typedef struct fl_backend fl_backend;

typedef struct fl_backend_ops {
    const char *name; /* "cpu" or "cuda" */

    /* ---- memory ---- */
    int (*alloc)(fl_backend *be, void **d_ptr, size_t bytes); /* zero-filled */
    void (*free)(fl_backend *be, void *d_ptr);                /* NULL is a no-op */
    int (*upload)(fl_backend *be, void *d_dst, const void *src, size_t bytes);
    int (*download)(fl_backend *be, void *dst, const void *d_src, size_t bytes);
    int (*copy)(fl_backend *be, void *d_dst, const void *d_src, size_t bytes);
    int (*zero)(fl_backend *be, void *d_ptr, size_t bytes);
    int (*sync)(fl_backend *be);

    /* ---- BLAS-3 (column-major, cuBLAS argument order; trans: 0 = N, 1 = T) ----
     * C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C */
    int (*sgemm)(fl_backend *be, int transa, int transb, int m, int n, int k, float alpha,
                 const float *d_A, int lda, const float *d_B, int ldb, float beta, float *d_C,
                 int ldc);

    /* ---- dense-layer helpers ---- */
    /* d_Z (rows, cols) += d_b (cols) broadcast over rows */
    int (*add_bias)(fl_backend *be, float *d_Z, const float *d_b, int rows, int cols);
    /* d_out (cols) = beta * d_out + sum over rows of d_G (rows, cols) */
    int (*col_sum)(fl_backend *be, float *d_out, const float *d_G, int rows, int cols, float beta);
    /* d_y (n) = max(d_x, 0); in place allowed */
    int (*relu_forward)(fl_backend *be, float *d_y, const float *d_x, int64_t n);
    /* d_dx (n) = d_dy * (d_y > 0); d_y is the forward output; in place allowed */
    int (*relu_backward)(fl_backend *be, float *d_dx, const float *d_dy, const float *d_y,
                         int64_t n);

    /* ---- losses: per-row loss and the gradient w.r.t. the logits ----
     * binary: d_z (rows, 1) logits, d_y in {0,1}; d_loss[i] = log-loss of row i,
     *   d_dz[i] = scale * (sigmoid(z_i) - y_i). */
    int (*sigmoid_xent)(fl_backend *be, float *d_loss, float *d_dz, const float *d_z,
                        const int32_t *d_y, int rows, float scale);
    /* k classes: d_z (rows, k), d_y in [0, k); d_dz = scale * (softmax(z) - onehot(y)). */
    int (*softmax_xent)(fl_backend *be, float *d_loss, float *d_dz, const float *d_z,
                        const int32_t *d_y, int rows, int k, float scale);
    /* probabilities: d_p (rows, k) from logits d_z; k == 1 means sigmoid */
    int (*predict)(fl_backend *be, float *d_p, const float *d_z, int rows, int k);

    /* ---- DP-SGD (per-example clipping without per-example gradients) ---- */
    /* d_out (rows) = (accumulate ? d_out : 0) + sum_j d_X[i, j]^2 */
    int (*row_sqnorm)(fl_backend *be, float *d_out, const float *d_X, int rows, int cols,
                      int accumulate);
    /* d_acc (rows) += (d_a2[i] + 1) * d_g2[i]: one dense layer's contribution to
     * each example's squared gradient norm, ||g a^T||^2 + ||g||^2 (weights + bias) */
    int (*norm_combine)(fl_backend *be, float *d_acc, const float *d_a2, const float *d_g2,
                        int rows);
    /* d_s (rows) = min(1, clip / sqrt(d_sqnorm[i])) (1 when the norm is 0) */
    int (*clip_factors)(fl_backend *be, float *d_s, const float *d_sqnorm, int rows, float clip);
    /* d_X (rows, cols) row i *= d_s[i] */
    int (*row_scale)(fl_backend *be, float *d_X, const float *d_s, int rows, int cols);

    /* ---- vectors ---- */
    /* d_y (n) += a * d_x */
    int (*axpy)(fl_backend *be, float *d_y, float a, const float *d_x, int64_t n);
    /* d_x (n) *= a */
    int (*scal)(fl_backend *be, float *d_x, float a, int64_t n);

    /* ---- optimisers on flat parameter vectors (n) ----
     * SGD: g' = g + wd * w; v = momentum * v + g'; w -= lr * v  (v unused if momentum == 0) */
    int (*sgd_step)(fl_backend *be, float *d_w, float *d_v, const float *d_g, int64_t n, float lr,
                    float momentum, float weight_decay);
    /* Adam (Kingma and Ba 2015) with L2 weight decay folded into the gradient;
     * t is the 1-based step count for bias correction. */
    int (*adam_step)(fl_backend *be, float *d_w, float *d_m, float *d_v, const float *d_g,
                     int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                     int64_t t);

    /* ---- integer domain (secure aggregation) ----
     * d_q[i] = floor((clamp(x_i, -clip, clip) + clip) * scale + u_i) mod 2^32 with
     * u_i = d_rnd[i] / 2^32: stochastic rounding from caller-provided CSPRNG words. */
    int (*quantize)(fl_backend *be, uint32_t *d_q, const float *d_x, const uint32_t *d_rnd,
                    int64_t n, float clip, float scale);
    /* d_acc (n) = d_acc + d_x mod 2^32 */
    int (*mod_add)(fl_backend *be, uint32_t *d_acc, const uint32_t *d_x, int64_t n);
    /* d_acc (n) = d_acc - d_x mod 2^32 */
    int (*mod_sub)(fl_backend *be, uint32_t *d_acc, const uint32_t *d_x, int64_t n);

    void (*destroy)(fl_backend *be);
} fl_backend_ops;

struct fl_backend {
    const fl_backend_ops *ops;
    void *impl; /* backend-private state */
    char last_error[FL_ERR_LEN];
};

/* Opens a backend. FL_DEVICE_AUTO takes CUDA when it is built and a device is
 * present, otherwise the CPU, logging one line that says why. FL_DEVICE_CUDA
 * fails (FL_ENOTSUP / FL_EDEVICE, reason in err) when it cannot be had.
 * The caller owns *out and releases it with fl_backend_close. */
int fl_backend_open(fl_backend **out, enum fl_device want, char err[FL_ERR_LEN]);
void fl_backend_close(fl_backend *be);

/* Parses "auto" | "cpu" | "cuda"; FL_EINVAL otherwise. */
int fl_device_parse(enum fl_device *out, const char *s);
const char *fl_backend_name(const fl_backend *be);
/* Text of the last failed operation on be. */
const char *fl_backend_error(const fl_backend *be);

/* Constructors of the individual backends (used by fl_backend_open and by
 * the tests that compare them). fl_backend_cuda_open is FL_ENOTSUP in a build
 * without CUDA. */
int fl_backend_cpu_open(fl_backend **out, char err[FL_ERR_LEN]);
int fl_backend_cuda_open(fl_backend **out, char err[FL_ERR_LEN]);
/* 1 when the CUDA backend was compiled into this build. */
int fl_backend_cuda_built(void);

#endif
