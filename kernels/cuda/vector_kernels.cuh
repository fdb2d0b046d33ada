/* vector_kernels.cuh: the CUDA backend's per-element operations (DESIGN.md
 * §7): activations, the binary loss, DP-SGD's per-row factors, vector
 * updates, optimiser steps and the integer kernels of secure aggregation.
 * Each is one grid-stride kernel over the formula of kernels/elementwise.h,
 * which the CPU reference (kernels/cpu/backend_cpu.c) also uses, so only the
 * launch differs from the CPU. The integer kernels (quantize, mod_add,
 * mod_sub) therefore give the CPU's words bit for bit; float ones differ
 * only by contraction into FMA and the device's libm.
 *
 * defines: fl_fill_kernel, fl_cuda_relu_forward, fl_cuda_relu_backward, fl_cuda_add_bias,
 *          fl_cuda_scal, fl_cuda_axpy, fl_cuda_sigmoid_xent, fl_cuda_predict_sigmoid,
 *          fl_cuda_norm_combine, fl_cuda_clip_factors, fl_cuda_row_scale,
 *          fl_cuda_sgd_step, fl_cuda_adam_step, fl_cuda_quantize, fl_cuda_mod_add,
 *          fl_cuda_mod_sub */
#ifndef FL_VECTOR_KERNELS_CUH
#define FL_VECTOR_KERNELS_CUH

#include <math.h>

#include "cuda_common.cuh"

/* ----------------------------------------------------------------------------
 * CUDA kernels */

__global__ void fl_relu_forward_kernel(float *y, const float *x, int64_t n) {
    FL_FOR_EACH(i, n) y[i] = fl_relu(x[i]);
}

__global__ void fl_relu_backward_kernel(float *dx, const float *dy, const float *y, int64_t n) {
    FL_FOR_EACH(i, n) dx[i] = fl_relu_grad(dy[i], y[i]);
}

/* Z (rows, cols) row-major, flattened to total = rows * cols. */
__global__ void fl_add_bias_kernel(float *Z, const float *b, int64_t total, int cols) {
    FL_FOR_EACH(i, total) Z[i] += b[i % cols];
}

__global__ void fl_fill_kernel(float *x, float v, int64_t n) {
    FL_FOR_EACH(i, n) x[i] = v;
}

__global__ void fl_scal_kernel(float *x, float a, int64_t n) {
    FL_FOR_EACH(i, n) x[i] *= a;
}

__global__ void fl_axpy_kernel(float *y, float a, const float *x, int64_t n) {
    FL_FOR_EACH(i, n) y[i] += a * x[i];
}

__global__ void fl_sigmoid_xent_kernel(float *loss, float *dz, const float *z, const int32_t *y,
                                       int rows, float scale) {
    FL_FOR_EACH(i, rows) {
        float zi = z[i], yi = (float)y[i];
        loss[i] = fl_bce_logit(zi, yi);
        dz[i] = fl_xent_grad(fl_sigmoid(zi), yi, scale);
    }
}

__global__ void fl_sigmoid_kernel(float *p, const float *z, int rows) {
    FL_FOR_EACH(i, rows) p[i] = fl_sigmoid(z[i]);
}

__global__ void fl_norm_combine_kernel(float *acc, const float *a2, const float *g2, int rows) {
    FL_FOR_EACH(i, rows) acc[i] += fl_dense_sqnorm(a2[i], g2[i]);
}

__global__ void fl_clip_factors_kernel(float *s, const float *sq, int rows, float clip) {
    FL_FOR_EACH(i, rows) s[i] = fl_clip_factor(sq[i], clip);
}

/* X (rows, cols) row-major, flattened to total = rows * cols. */
__global__ void fl_row_scale_kernel(float *X, const float *s, int64_t total, int cols) {
    FL_FOR_EACH(i, total) X[i] *= s[i / cols];
}

/* v may be NULL when mom == 0: fl_sgd_update then never touches it. */
__global__ void fl_sgd_kernel(float *w, float *v, const float *g, int64_t n, float lr, float mom,
                              float wd) {
    FL_FOR_EACH(i, n) {
        float wi = w[i], vi = v ? v[i] : 0.0f;
        fl_sgd_update(&wi, &vi, g[i], lr, mom, wd);
        w[i] = wi;
        if (mom != 0.0f) v[i] = vi;
    }
}

__global__ void fl_adam_kernel(float *w, float *m, float *v, const float *g, int64_t n, float lr,
                               float b1, float b2, float eps, float wd, float bc1, float bc2) {
    FL_FOR_EACH(i, n) {
        float wi = w[i], mi = m[i], vi = v[i];
        fl_adam_update(&wi, &mi, &vi, g[i], lr, b1, b2, eps, wd, bc1, bc2);
        w[i] = wi;
        m[i] = mi;
        v[i] = vi;
    }
}

__global__ void fl_quantize_kernel(uint32_t *q, const float *x, const uint32_t *rnd, int64_t n,
                                   float clip, float scale) {
    FL_FOR_EACH(i, n) q[i] = fl_quantize1(x[i], rnd[i], clip, scale);
}

/* Unsigned arithmetic wraps, which is exactly addition in Z_2^32. */
__global__ void fl_mod_add_kernel(uint32_t *acc, const uint32_t *x, int64_t n) {
    FL_FOR_EACH(i, n) acc[i] += x[i];
}

__global__ void fl_mod_sub_kernel(uint32_t *acc, const uint32_t *x, int64_t n) {
    FL_FOR_EACH(i, n) acc[i] -= x[i];
}

/* ----------------------------------------------------------------------------
 * kernel launchers (the signatures of fl_backend_ops) */

/* Refuses a negative size; *empty is set when there is nothing to launch,
 * because a grid of zero blocks is a launch error. */
static int fl_cuda_size(fl_backend *be, const char *op, int64_t n, int *empty) {
    if (n < 0) return fl_cuda_einval(be, "%s: negative size %lld", op, (long long)n);
    *empty = n == 0;
    return 0;
}

#define FL_CUDA_SIZE(be, op, n)                                                                    \
    do {                                                                                           \
        int fl_empty_ = 0;                                                                         \
        int fl_rc_ = fl_cuda_size((be), (op), (n), &fl_empty_);                                    \
        if (fl_rc_ || fl_empty_) return fl_rc_;                                                    \
    } while (0)

#define FL_CUDA_SHAPE(be, op, rows, cols)                                                          \
    do {                                                                                           \
        if ((rows) < 0 || (cols) < 0)                                                              \
            return fl_cuda_einval((be), "%s: negative shape (%d, %d)", (op), (rows), (cols));      \
        if ((rows) == 0 || (cols) == 0) return 0;                                                  \
    } while (0)

static int fl_cuda_relu_forward(fl_backend *be, float *d_y, const float *d_x, int64_t n) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "relu_forward", n);
    fl_relu_forward_kernel<<<fl_cuda_grid(c, n), FL_CUDA_BLOCK, 0, c->stream>>>(d_y, d_x, n);
    fl_cuda_launched(be, "relu_forward");
    return 0;
}

static int fl_cuda_relu_backward(fl_backend *be, float *d_dx, const float *d_dy, const float *d_y,
                                 int64_t n) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "relu_backward", n);
    fl_relu_backward_kernel<<<fl_cuda_grid(c, n), FL_CUDA_BLOCK, 0, c->stream>>>(d_dx, d_dy, d_y,
                                                                                 n);
    fl_cuda_launched(be, "relu_backward");
    return 0;
}

static int fl_cuda_add_bias(fl_backend *be, float *d_Z, const float *d_b, int rows, int cols) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SHAPE(be, "add_bias", rows, cols);
    int64_t total = (int64_t)rows * cols;
    fl_add_bias_kernel<<<fl_cuda_grid(c, total), FL_CUDA_BLOCK, 0, c->stream>>>(d_Z, d_b, total,
                                                                                cols);
    fl_cuda_launched(be, "add_bias");
    return 0;
}

static int fl_cuda_scal(fl_backend *be, float *d_x, float a, int64_t n) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "scal", n);
    fl_scal_kernel<<<fl_cuda_grid(c, n), FL_CUDA_BLOCK, 0, c->stream>>>(d_x, a, n);
    fl_cuda_launched(be, "scal");
    return 0;
}

static int fl_cuda_axpy(fl_backend *be, float *d_y, float a, const float *d_x, int64_t n) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "axpy", n);
    fl_axpy_kernel<<<fl_cuda_grid(c, n), FL_CUDA_BLOCK, 0, c->stream>>>(d_y, a, d_x, n);
    fl_cuda_launched(be, "axpy");
    return 0;
}

static int fl_cuda_sigmoid_xent(fl_backend *be, float *d_loss, float *d_dz, const float *d_z,
                                const int32_t *d_y, int rows, float scale) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "sigmoid_xent", rows);
    fl_sigmoid_xent_kernel<<<fl_cuda_grid(c, rows), FL_CUDA_BLOCK, 0, c->stream>>>(
        d_loss, d_dz, d_z, d_y, rows, scale);
    fl_cuda_launched(be, "sigmoid_xent");
    return 0;
}

/* predict for k == 1; the k-class case is a row kernel (row_kernels.cuh). */
static int fl_cuda_predict_sigmoid(fl_backend *be, float *d_p, const float *d_z, int rows) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "predict", rows);
    fl_sigmoid_kernel<<<fl_cuda_grid(c, rows), FL_CUDA_BLOCK, 0, c->stream>>>(d_p, d_z, rows);
    fl_cuda_launched(be, "predict");
    return 0;
}

static int fl_cuda_norm_combine(fl_backend *be, float *d_acc, const float *d_a2, const float *d_g2,
                                int rows) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "norm_combine", rows);
    fl_norm_combine_kernel<<<fl_cuda_grid(c, rows), FL_CUDA_BLOCK, 0, c->stream>>>(d_acc, d_a2,
                                                                                   d_g2, rows);
    fl_cuda_launched(be, "norm_combine");
    return 0;
}

static int fl_cuda_clip_factors(fl_backend *be, float *d_s, const float *d_sqnorm, int rows,
                                float clip) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "clip_factors", rows);
    fl_clip_factors_kernel<<<fl_cuda_grid(c, rows), FL_CUDA_BLOCK, 0, c->stream>>>(d_s, d_sqnorm,
                                                                                   rows, clip);
    fl_cuda_launched(be, "clip_factors");
    return 0;
}

static int fl_cuda_row_scale(fl_backend *be, float *d_X, const float *d_s, int rows, int cols) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SHAPE(be, "row_scale", rows, cols);
    int64_t total = (int64_t)rows * cols;
    fl_row_scale_kernel<<<fl_cuda_grid(c, total), FL_CUDA_BLOCK, 0, c->stream>>>(d_X, d_s, total,
                                                                                 cols);
    fl_cuda_launched(be, "row_scale");
    return 0;
}

static int fl_cuda_sgd_step(fl_backend *be, float *d_w, float *d_v, const float *d_g, int64_t n,
                            float lr, float momentum, float weight_decay) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "sgd_step", n);
    /* On the CPU this is a crash; on the device it would be a fault that
     * poisons the context for every later operation. */
    if (momentum != 0.0f && !d_v) return fl_cuda_einval(be, "sgd_step: momentum without d_v");
    fl_sgd_kernel<<<fl_cuda_grid(c, n), FL_CUDA_BLOCK, 0, c->stream>>>(d_w, d_v, d_g, n, lr,
                                                                       momentum, weight_decay);
    fl_cuda_launched(be, "sgd_step");
    return 0;
}

static int fl_cuda_adam_step(fl_backend *be, float *d_w, float *d_m, float *d_v, const float *d_g,
                             int64_t n, float lr, float beta1, float beta2, float eps,
                             float weight_decay, int64_t t) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "adam_step", n);
    /* The bias corrections exactly as the CPU reference computes them (in
     * double on the host, then rounded), so both feed the same floats to
     * fl_adam_update. */
    float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    fl_adam_kernel<<<fl_cuda_grid(c, n), FL_CUDA_BLOCK, 0, c->stream>>>(
        d_w, d_m, d_v, d_g, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2);
    fl_cuda_launched(be, "adam_step");
    return 0;
}

static int fl_cuda_quantize(fl_backend *be, uint32_t *d_q, const float *d_x, const uint32_t *d_rnd,
                            int64_t n, float clip, float scale) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "quantize", n);
    /* fl_quantize1 converts a double in [0, 2 clip scale] to uint64. Outside
     * that range the conversion is undefined in C and saturates on the device,
     * so the words would differ between backends: such a range is refused. */
    double top = ((double)clip + (double)clip) * (double)scale;
    if (!(clip >= 0.0f) || !(scale >= 0.0f) || !(top < 0x1.0p64))
        return fl_cuda_einval(be,
                              "quantize: need 0 <= clip, 0 <= scale, 2*clip*scale < 2^64 "
                              "(clip %g, scale %g)",
                              (double)clip, (double)scale);
    fl_quantize_kernel<<<fl_cuda_grid(c, n), FL_CUDA_BLOCK, 0, c->stream>>>(d_q, d_x, d_rnd, n,
                                                                            clip, scale);
    fl_cuda_launched(be, "quantize");
    return 0;
}

static int fl_cuda_mod_add(fl_backend *be, uint32_t *d_acc, const uint32_t *d_x, int64_t n) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "mod_add", n);
    fl_mod_add_kernel<<<fl_cuda_grid(c, n), FL_CUDA_BLOCK, 0, c->stream>>>(d_acc, d_x, n);
    fl_cuda_launched(be, "mod_add");
    return 0;
}

static int fl_cuda_mod_sub(fl_backend *be, uint32_t *d_acc, const uint32_t *d_x, int64_t n) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_SIZE(be, "mod_sub", n);
    fl_mod_sub_kernel<<<fl_cuda_grid(c, n), FL_CUDA_BLOCK, 0, c->stream>>>(d_acc, d_x, n);
    fl_cuda_launched(be, "mod_sub");
    return 0;
}

#endif
