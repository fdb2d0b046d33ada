/* backend_cpu.c: the reference backend (DESIGN.md §7): OpenBLAS sgemm and
 * plain loops over the per-element math of elementwise.h. Memory is ordinary
 * 64-byte-aligned host memory, so upload/download are memcpy. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/elementwise.h"

static int cpu_alloc(fl_backend *be, void **d_ptr, size_t bytes) {
    size_t n = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n ? n : 64);
    if (!p) return fl_seterr(be->last_error, FL_ENOMEM, "cpu: cannot allocate %zu bytes", bytes);
    memset(p, 0, n ? n : 64);
    *d_ptr = p;
    return 0;
}

static void cpu_free(fl_backend *be, void *d_ptr) {
    free(d_ptr);
}

static int cpu_copy(fl_backend *be, void *d_dst, const void *d_src, size_t bytes) {
    if (bytes) memmove(d_dst, d_src, bytes);
    return 0;
}

static int cpu_zero(fl_backend *be, void *d_ptr, size_t bytes) {
    if (bytes) memset(d_ptr, 0, bytes);
    return 0;
}

static int cpu_sync(fl_backend *be) {
    return 0;
}

static int cpu_sgemm(fl_backend *be, int transa, int transb, int m, int n, int k, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta, float *C,
                     int ldc) {
    if (m < 0 || n < 0 || k < 0)
        return fl_seterr(be->last_error, FL_EINVAL, "sgemm: negative size");
    cblas_sgemm(CblasColMajor, transa ? CblasTrans : CblasNoTrans,
                transb ? CblasTrans : CblasNoTrans, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return 0;
}

static int cpu_add_bias(fl_backend *be, float *Z, const float *b, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        float *z = Z + (size_t)i * cols;
        for (int j = 0; j < cols; j++)
            z[j] += b[j];
    }
    return 0;
}

static int cpu_col_sum(fl_backend *be, float *out, const float *G, int rows, int cols, float beta) {
    for (int j = 0; j < cols; j++)
        out[j] *= beta;
    for (int i = 0; i < rows; i++) {
        const float *g = G + (size_t)i * cols;
        for (int j = 0; j < cols; j++)
            out[j] += g[j];
    }
    return 0;
}

static int cpu_relu_forward(fl_backend *be, float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = fl_relu(x[i]);
    return 0;
}

static int cpu_relu_backward(fl_backend *be, float *dx, const float *dy, const float *y,
                             int64_t n) {
    for (int64_t i = 0; i < n; i++)
        dx[i] = fl_relu_grad(dy[i], y[i]);
    return 0;
}

static int cpu_sigmoid_xent(fl_backend *be, float *loss, float *dz, const float *z,
                            const int32_t *y, int rows, float scale) {
    for (int i = 0; i < rows; i++) {
        float yi = (float)y[i];
        loss[i] = fl_bce_logit(z[i], yi);
        dz[i] = fl_xent_grad(fl_sigmoid(z[i]), yi, scale);
    }
    return 0;
}

static int cpu_softmax_xent(fl_backend *be, float *loss, float *dz, const float *z,
                            const int32_t *y, int rows, int k, float scale) {
    for (int i = 0; i < rows; i++) {
        const float *zi = z + (size_t)i * k;
        float *di = dz + (size_t)i * k;
        float mx = zi[0];
        for (int j = 1; j < k; j++)
            mx = zi[j] > mx ? zi[j] : mx;
        float s = 0.0f;
        for (int j = 0; j < k; j++)
            s += expf(zi[j] - mx);
        float lse = mx + logf(s);
        loss[i] = lse - zi[y[i]];
        for (int j = 0; j < k; j++)
            di[j] = fl_xent_grad(expf(zi[j] - lse), j == y[i] ? 1.0f : 0.0f, scale);
    }
    return 0;
}

static int cpu_predict(fl_backend *be, float *p, const float *z, int rows, int k) {
    if (k == 1) {
        for (int i = 0; i < rows; i++)
            p[i] = fl_sigmoid(z[i]);
        return 0;
    }
    for (int i = 0; i < rows; i++) {
        const float *zi = z + (size_t)i * k;
        float *pi = p + (size_t)i * k;
        float mx = zi[0];
        for (int j = 1; j < k; j++)
            mx = zi[j] > mx ? zi[j] : mx;
        float s = 0.0f;
        for (int j = 0; j < k; j++)
            s += (pi[j] = expf(zi[j] - mx));
        for (int j = 0; j < k; j++)
            pi[j] /= s;
    }
    return 0;
}

/* Sum of squares with eight independent partial sums, so the compiler can
 * keep them in one vector register without reassociating a serial sum. */
static float sqsum(const float *restrict x, int n) {
    float acc[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; u++)
            acc[u] += x[j + u] * x[j + u];
    float s = 0.0f;
    for (; j < n; j++)
        s += x[j] * x[j];
    for (int u = 0; u < 8; u++)
        s += acc[u];
    return s;
}

static int cpu_row_sqnorm(fl_backend *be, float *out, const float *X, int rows, int cols,
                          int accumulate) {
    for (int i = 0; i < rows; i++) {
        float s = sqsum(X + (size_t)i * cols, cols);
        out[i] = accumulate ? out[i] + s : s;
    }
    return 0;
}

static int cpu_norm_combine(fl_backend *be, float *acc, const float *a2, const float *g2,
                            int rows) {
    for (int i = 0; i < rows; i++)
        acc[i] += fl_dense_sqnorm(a2[i], g2[i]);
    return 0;
}

static int cpu_clip_factors(fl_backend *be, float *s, const float *sq, int rows, float clip) {
    for (int i = 0; i < rows; i++)
        s[i] = fl_clip_factor(sq[i], clip);
    return 0;
}

static int cpu_row_scale(fl_backend *be, float *X, const float *s, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        float *x = X + (size_t)i * cols;
        float f = s[i];
        for (int j = 0; j < cols; j++)
            x[j] *= f;
    }
    return 0;
}

static int cpu_axpy(fl_backend *be, float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
    return 0;
}

static int cpu_scal(fl_backend *be, float *x, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] *= a;
    return 0;
}

static int cpu_sgd_step(fl_backend *be, float *restrict w, float *restrict v,
                        const float *restrict g, int64_t n, float lr, float mom, float wd) {
    for (int64_t i = 0; i < n; i++)
        fl_sgd_update(&w[i], v ? &v[i] : NULL, g[i], lr, mom, wd);
    return 0;
}

static int cpu_adam_step(fl_backend *be, float *restrict w, float *restrict m, float *restrict v,
                         const float *restrict g, int64_t n, float lr, float b1, float b2,
                         float eps, float wd, int64_t t) {
    float bc1 = (float)(1.0 - pow((double)b1, (double)t));
    float bc2 = (float)(1.0 - pow((double)b2, (double)t));
    for (int64_t i = 0; i < n; i++)
        fl_adam_update(&w[i], &m[i], &v[i], g[i], lr, b1, b2, eps, wd, bc1, bc2);
    return 0;
}

static int cpu_quantize(fl_backend *be, uint32_t *q, const float *x, const uint32_t *rnd, int64_t n,
                        float clip, float scale) {
    for (int64_t i = 0; i < n; i++)
        q[i] = fl_quantize1(x[i], rnd[i], clip, scale);
    return 0;
}

static int cpu_mod_add(fl_backend *be, uint32_t *acc, const uint32_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        acc[i] += x[i]; /* unsigned wrap-around is mod 2^32 */
    return 0;
}

static int cpu_mod_sub(fl_backend *be, uint32_t *acc, const uint32_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        acc[i] -= x[i];
    return 0;
}

static void cpu_destroy(fl_backend *be) {
    free(be);
}

static const fl_backend_ops cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .sgemm = cpu_sgemm,
    .add_bias = cpu_add_bias,
    .col_sum = cpu_col_sum,
    .relu_forward = cpu_relu_forward,
    .relu_backward = cpu_relu_backward,
    .sigmoid_xent = cpu_sigmoid_xent,
    .softmax_xent = cpu_softmax_xent,
    .predict = cpu_predict,
    .row_sqnorm = cpu_row_sqnorm,
    .norm_combine = cpu_norm_combine,
    .clip_factors = cpu_clip_factors,
    .row_scale = cpu_row_scale,
    .axpy = cpu_axpy,
    .scal = cpu_scal,
    .sgd_step = cpu_sgd_step,
    .adam_step = cpu_adam_step,
    .quantize = cpu_quantize,
    .mod_add = cpu_mod_add,
    .mod_sub = cpu_mod_sub,
    .destroy = cpu_destroy,
};

int fl_backend_cpu_open(fl_backend **out, char err[FL_ERR_LEN]) {
    fl_backend *be = calloc(1, sizeof *be);
    if (!be) return fl_seterr(err, FL_ENOMEM, "cpu backend: out of memory");
    be->ops = &cpu_ops;
    *out = be;
    return 0;
}
