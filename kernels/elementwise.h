/* elementwise.h: per-element math shared by the CPU and CUDA backends
 * (DESIGN.md §7). Both include this header, so only launch geometry and
 * memory movement differ between them; a formula is fixed in one place.
 * Everything here is `FL_HD static inline` and free of library calls other
 * than the float math functions both compilers provide. */
#ifndef FL_ELEMENTWISE_H
#define FL_ELEMENTWISE_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define FL_HD __host__ __device__
#else
#define FL_HD
#endif

FL_HD static inline float fl_relu(float x) {
    return x > 0.0f ? x : 0.0f;
}

FL_HD static inline float fl_relu_grad(float dy, float y) {
    return y > 0.0f ? dy : 0.0f;
}

/* Numerically stable sigmoid: never evaluates exp of a large positive value. */
FL_HD static inline float fl_sigmoid(float z) {
    if (z >= 0.0f) {
        float e = expf(-z);
        return 1.0f / (1.0f + e);
    }
    float e = expf(z);
    return e / (1.0f + e);
}

/* Binary log-loss from the logit: log(1 + exp(z)) - y z, stable for any z. */
FL_HD static inline float fl_bce_logit(float z, float y) {
    float m = z > 0.0f ? z : 0.0f;
    return m + log1pf(expf(-fabsf(z))) - y * z;
}

/* Gradient of a cross-entropy loss w.r.t. one logit, times scale: p is the
 * predicted probability (sigmoid or softmax) and y the target indicator (0 or
 * 1). The binary and the k-class heads share it, and so do both backends. */
FL_HD static inline float fl_xent_grad(float p, float y, float scale) {
    return scale * (p - y);
}

/* One dense layer's share of an example's squared gradient norm, with a2 =
 * ||a||^2 and g2 = ||g||^2: ||g a^T||_F^2 = a2 * g2 for the weights, g2 for
 * the bias (DESIGN.md §7). */
FL_HD static inline float fl_dense_sqnorm(float a2, float g2) {
    return (a2 + 1.0f) * g2;
}

/* min(1, C / sqrt(sqnorm)); 1 for a zero norm. */
FL_HD static inline float fl_clip_factor(float sqnorm, float clip) {
    float nrm = sqrtf(sqnorm);
    return nrm > clip ? clip / nrm : 1.0f;
}

FL_HD static inline float fl_sgd_update(float *w, float *v, float g, float lr, float mom,
                                        float wd) {
    float gg = g + wd * *w;
    if (mom != 0.0f) {
        *v = mom * *v + gg;
        gg = *v;
    }
    *w -= lr * gg;
    return *w;
}

/* One Adam coordinate. bc1 = 1 - beta1^t and bc2 = 1 - beta2^t are computed
 * once per step by the launcher. */
FL_HD static inline void fl_adam_update(float *w, float *m, float *v, float g, float lr, float b1,
                                        float b2, float eps, float wd, float bc1, float bc2) {
    float gg = g + wd * *w;
    *m = b1 * *m + (1.0f - b1) * gg;
    *v = b2 * *v + (1.0f - b2) * gg * gg;
    float mhat = *m / bc1, vhat = *v / bc2;
    *w -= lr * mhat / (sqrtf(vhat) + eps);
}

/* Stochastic rounding into Z_2^32: the integer part of a non-negative double,
 * bumped by one with probability equal to the fractional part. Computed in
 * double so that both backends give the same word: values up to 2^32 are exact
 * enough that floor() agrees; the u = rnd / 2^32 threshold is exact. */
FL_HD static inline uint32_t fl_quantize1(float x, uint32_t rnd, float clip, float scale) {
    float c = x < -clip ? -clip : (x > clip ? clip : x);
    if (c != c) c = 0.0f; /* NaN never reaches here (wire validates); be total anyway */
    double t = ((double)c + (double)clip) * (double)scale;
    double fl = floor(t);
    double frac = t - fl;
    uint64_t q = (uint64_t)fl;
    if ((double)rnd * 0x1.0p-32 < frac) q++;
    return (uint32_t)q;
}

#endif
