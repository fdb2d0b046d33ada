/* test_backend_cpu.c: the CPU backend, the reference of DESIGN.md §7, checked
 * operation by operation against naive loops written here in double
 * precision (the llm.c habit: a plain reference beside the fast code). It also
 * pins the three GEMM calls of a dense layer derived in docs/kernels.md, and
 * the DP-SGD shortcut of §7 (per-example norms from row norms, clipping as a
 * row scale before the single weight GEMM) against explicit per-example
 * gradients. tests/gpu/test_backend_parity.c then holds the CUDA backend to
 * this one. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "core/rng.h"
#include "kernels/backend.h"

static fl_backend *g_be;

/* ---------------------------------------------------------------- helpers */

/* |got - want| <= atol + |want| * rtol, with the caller's line in the message. */
#define CHECK_NEAR(got, want, atol, rtol)                                                          \
    check_near((double)(got), (double)(want), (atol), (rtol), #got, __LINE__)

static void check_near(double got, double want, double atol, double rtol, const char *what,
                       int line) {
    double tol = atol + fabs(want) * rtol;
    if (!(fabs(got - want) <= tol))
        fail_msg("line %d: %s = %.9g, want %.9g (tolerance %.3g)", line, what, got, want, tol);
}

/* Backend memory: on the CPU backend it is host memory, so the tests fill
 * and read it directly; upload/download have their own test. */
static float *falloc(size_t n) {
    void *p = NULL;
    assert_int_equal(g_be->ops->alloc(g_be, &p, n * sizeof(float)), 0);
    return p;
}

static uint32_t *ualloc(size_t n) {
    void *p = NULL;
    assert_int_equal(g_be->ops->alloc(g_be, &p, n * sizeof(uint32_t)), 0);
    return p;
}

static int32_t *ialloc(size_t n) {
    void *p = NULL;
    assert_int_equal(g_be->ops->alloc(g_be, &p, n * sizeof(int32_t)), 0);
    return p;
}

static void bfree(void *p) {
    g_be->ops->free(g_be, p);
}

/* Uniform in [lo, hi). */
static void fill(fl_rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * (float)fl_rng_uniform(r);
}

static int setup(void **state) {
    char err[FL_ERR_LEN] = "";
    if (fl_backend_cpu_open(&g_be, err) != 0) {
        fprintf(stderr, "cpu backend: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    fl_backend_close(g_be);
    g_be = NULL;
    return 0;
}

/* ---------------------------------------------------------------- selection and memory */

static void test_open_and_parse(void **state) {
    enum fl_device d;
    assert_int_equal(fl_device_parse(&d, "auto"), 0);
    assert_int_equal(d, FL_DEVICE_AUTO);
    assert_int_equal(fl_device_parse(&d, "cpu"), 0);
    assert_int_equal(d, FL_DEVICE_CPU);
    assert_int_equal(fl_device_parse(&d, "cuda"), 0);
    assert_int_equal(d, FL_DEVICE_CUDA);
    assert_int_equal(fl_device_parse(&d, "gpu"), FL_EINVAL);
    assert_int_equal(fl_device_parse(&d, NULL), FL_EINVAL);
    assert_string_equal(fl_backend_name(g_be), "cpu");

    /* auto always yields a backend: CUDA where it can, the CPU otherwise. */
    fl_backend *be = NULL;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_backend_open(&be, FL_DEVICE_AUTO, err), 0);
    assert_non_null(be);
    fl_backend_close(be);
    assert_int_equal(fl_backend_open(&be, FL_DEVICE_CPU, err), 0);
    assert_string_equal(fl_backend_name(be), "cpu");
    fl_backend_close(be);
    fl_backend_close(NULL);

    /* Asking for CUDA where it cannot be had fails with a reason. */
    err[0] = '\0';
    int rc = fl_backend_open(&be, FL_DEVICE_CUDA, err);
    if (!fl_backend_cuda_built()) assert_int_equal(rc, FL_ENOTSUP);
    if (rc == 0) {
        assert_string_equal(fl_backend_name(be), "cuda");
        fl_backend_close(be);
    } else {
        assert_true(rc == FL_ENOTSUP || rc == FL_EDEVICE);
        assert_null(be);
        assert_true(strlen(err) > 0);
    }
}

static void test_memory(void **state) {
    const fl_backend_ops *o = g_be->ops;
    enum { N = 1000 };
    float *d = falloc(N), *e = falloc(N);
    for (int i = 0; i < N; i++)
        assert_true(d[i] == 0.0f); /* zero-filled */
    void *z = NULL;
    assert_int_equal(o->alloc(g_be, &z, 0), 0); /* zero bytes still a pointer */
    assert_non_null(z);
    bfree(z);

    float host[N], back[N];
    for (int i = 0; i < N; i++)
        host[i] = (float)i * 0.5f - 7.0f;
    assert_int_equal(o->upload(g_be, d, host, sizeof host), 0);
    assert_int_equal(o->copy(g_be, e, d, sizeof host), 0);
    assert_int_equal(o->download(g_be, back, e, sizeof back), 0);
    assert_memory_equal(back, host, sizeof host);

    /* Overlapping copy behaves as memmove. */
    assert_int_equal(o->copy(g_be, d + 1, d, (N - 1) * sizeof(float)), 0);
    assert_int_equal(o->sync(g_be), 0);
    assert_true(d[0] == host[0]);
    for (int i = 1; i < N; i++)
        assert_true(d[i] == host[i - 1]);

    assert_int_equal(o->zero(g_be, d, N * sizeof(float)), 0);
    for (int i = 0; i < N; i++)
        assert_true(d[i] == 0.0f);
    bfree(d);
    bfree(e);
    bfree(NULL);
}

/* ---------------------------------------------------------------- sgemm */

/* op(M)[i][j] of a column-major M with leading dimension ld. */
static double opel(const float *M, int ld, int trans, int i, int j) {
    return trans ? M[j + (size_t)i * ld] : M[i + (size_t)j * ld];
}

static void check_sgemm(int ta, int tb, int m, int n, int k, float alpha, float beta) {
    fl_rng r;
    fl_rng_seed(&r, 1000 + 10 * ta + tb);
    /* Leading dimensions larger than the minimum, so that a mixed-up ld or
     * a write into the padding shows. */
    int lda = (ta ? k : m) + 2, ldb = (tb ? n : k) + 3, ldc = m + 1;
    int acols = ta ? m : k, bcols = tb ? k : n;
    float *A = falloc((size_t)lda * acols), *B = falloc((size_t)ldb * bcols);
    float *C = falloc((size_t)ldc * n);
    fill(&r, A, (size_t)lda * acols, -1, 1);
    fill(&r, B, (size_t)ldb * bcols, -1, 1);
    fill(&r, C, (size_t)ldc * n, -1, 1);
    double *C0 = malloc(sizeof(double) * ldc * n);
    for (int i = 0; i < ldc * n; i++)
        C0[i] = C[i];

    assert_int_equal(g_be->ops->sgemm(g_be, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc),
                     0);
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < ldc; i++) {
            double got = C[i + (size_t)j * ldc];
            if (i >= m) { /* padding rows of C are not part of the result */
                assert_true(got == C0[i + j * ldc]);
                continue;
            }
            double s = 0.0;
            for (int p = 0; p < k; p++)
                s += opel(A, lda, ta, i, p) * opel(B, ldb, tb, p, j);
            CHECK_NEAR(got, alpha * s + beta * C0[i + j * ldc], 1e-5, 1e-5);
        }
    }
    free(C0);
    bfree(A);
    bfree(B);
    bfree(C);
}

static void test_sgemm_transposes(void **state) {
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            check_sgemm(ta, tb, 5, 3, 4, 1.0f, 0.0f);
            check_sgemm(ta, tb, 7, 6, 9, -0.75f, 0.5f);
            check_sgemm(ta, tb, 1, 8, 3, 2.0f, 1.0f);
        }
    }
    /* Negative sizes are refused, not passed to BLAS. */
    float x = 0.0f;
    assert_int_equal(g_be->ops->sgemm(g_be, 0, 0, -1, 1, 1, 1.0f, &x, 1, &x, 1, 0.0f, &x, 1),
                     FL_EINVAL);
}

/* The three calls of docs/kernels.md for a dense layer on row-major tensors:
 * X (B, in), W (out, in), Z and dZ (B, out). */
static void test_sgemm_dense_layer(void **state) {
    enum { B = 6, IN = 5, OUT = 3 };
    fl_rng r;
    fl_rng_seed(&r, 7);
    float *X = falloc(B * IN), *W = falloc(OUT * IN), *Z = falloc(B * OUT);
    float *dZ = falloc(B * OUT), *dX = falloc(B * IN), *dW = falloc(OUT * IN);
    fill(&r, X, B * IN, -1, 1);
    fill(&r, W, OUT * IN, -1, 1);
    fill(&r, dZ, B * OUT, -1, 1);
    const fl_backend_ops *o = g_be->ops;

    /* forward: Z = X W^T */
    assert_int_equal(o->sgemm(g_be, 1, 0, OUT, B, IN, 1.0f, W, IN, X, IN, 0.0f, Z, OUT), 0);
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < OUT; j++) {
            double s = 0.0;
            for (int i = 0; i < IN; i++)
                s += (double)X[b * IN + i] * W[j * IN + i];
            CHECK_NEAR(Z[b * OUT + j], s, 1e-6, 1e-5);
        }
    }
    /* input gradient: dX = dZ W */
    assert_int_equal(o->sgemm(g_be, 0, 0, IN, B, OUT, 1.0f, W, IN, dZ, OUT, 0.0f, dX, IN), 0);
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < IN; i++) {
            double s = 0.0;
            for (int j = 0; j < OUT; j++)
                s += (double)dZ[b * OUT + j] * W[j * IN + i];
            CHECK_NEAR(dX[b * IN + i], s, 1e-6, 1e-5);
        }
    }
    /* weight gradient: dW = dZ^T X */
    assert_int_equal(o->sgemm(g_be, 0, 1, IN, OUT, B, 1.0f, X, IN, dZ, OUT, 0.0f, dW, IN), 0);
    for (int j = 0; j < OUT; j++) {
        for (int i = 0; i < IN; i++) {
            double s = 0.0;
            for (int b = 0; b < B; b++)
                s += (double)dZ[b * OUT + j] * X[b * IN + i];
            CHECK_NEAR(dW[j * IN + i], s, 1e-6, 1e-5);
        }
    }
    bfree(X);
    bfree(W);
    bfree(Z);
    bfree(dZ);
    bfree(dX);
    bfree(dW);
}

/* ---------------------------------------------------------------- dense-layer helpers */

static void test_add_bias_col_sum(void **state) {
    enum { R = 7, C = 4 };
    fl_rng r;
    fl_rng_seed(&r, 11);
    float *Z = falloc(R * C), *b = falloc(C), *out = falloc(C);
    float Z0[R * C];
    fill(&r, Z, R * C, -2, 2);
    fill(&r, b, C, -1, 1);
    memcpy(Z0, Z, sizeof Z0);
    assert_int_equal(g_be->ops->add_bias(g_be, Z, b, R, C), 0);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++)
            assert_true(Z[i * C + j] == Z0[i * C + j] + b[j]);

    const float betas[] = {0.0f, 0.5f, 1.0f};
    for (size_t t = 0; t < sizeof betas / sizeof betas[0]; t++) {
        float init[C];
        for (int j = 0; j < C; j++)
            out[j] = init[j] = (float)j - 1.5f;
        assert_int_equal(g_be->ops->col_sum(g_be, out, Z, R, C, betas[t]), 0);
        for (int j = 0; j < C; j++) {
            double s = betas[t] * (double)init[j];
            for (int i = 0; i < R; i++)
                s += Z[i * C + j];
            CHECK_NEAR(out[j], s, 1e-6, 1e-6);
        }
    }
    /* No rows: only the beta scaling remains. */
    for (int j = 0; j < C; j++)
        out[j] = 2.0f;
    assert_int_equal(g_be->ops->col_sum(g_be, out, Z, 0, C, 0.25f), 0);
    for (int j = 0; j < C; j++)
        assert_true(out[j] == 0.5f);
    bfree(Z);
    bfree(b);
    bfree(out);
}

static void test_relu(void **state) {
    enum { N = 9 };
    const float xs[N] = {-3.0f, -1e-30f, -0.0f, 0.0f, 1e-30f, 0.5f, 2.0f, -INFINITY, INFINITY};
    float *x = falloc(N), *y = falloc(N), *dy = falloc(N), *dx = falloc(N);
    for (int i = 0; i < N; i++) {
        x[i] = xs[i];
        dy[i] = (float)(i + 1);
    }
    assert_int_equal(g_be->ops->relu_forward(g_be, y, x, N), 0);
    for (int i = 0; i < N; i++)
        assert_true(y[i] == (xs[i] > 0.0f ? xs[i] : 0.0f));
    assert_int_equal(g_be->ops->relu_backward(g_be, dx, dy, y, N), 0);
    for (int i = 0; i < N; i++)
        assert_true(dx[i] == (xs[i] > 0.0f ? (float)(i + 1) : 0.0f));
    /* in place, as the table allows */
    assert_int_equal(g_be->ops->relu_backward(g_be, dy, dy, y, N), 0);
    assert_memory_equal(dy, dx, N * sizeof(float));
    assert_int_equal(g_be->ops->relu_forward(g_be, x, x, N), 0);
    assert_memory_equal(x, y, N * sizeof(float));
    bfree(x);
    bfree(y);
    bfree(dy);
    bfree(dx);
}

/* ---------------------------------------------------------------- losses */

/* log(1 + e^z) - y z in double, computed stably. */
static double bce_ref(double z, double y) {
    return (z > 0 ? z : 0) + log1p(exp(-fabs(z))) - y * z;
}

static void test_sigmoid_xent(void **state) {
    enum { N = 12 };
    const float zs[N] = {0.0f,   0.3f,  -0.7f,  2.5f,   -4.0f,   15.0f,
                         -15.0f, 40.0f, -40.0f, 100.0f, -100.0f, 1e4f};
    const float scale = 0.25f;
    float *z = falloc(N), *loss = falloc(N), *dz = falloc(N);
    int32_t *y = ialloc(N);
    for (int i = 0; i < N; i++) {
        z[i] = zs[i];
        y[i] = (i * 7) % 3 == 0;
    }
    assert_int_equal(g_be->ops->sigmoid_xent(g_be, loss, dz, z, y, N, scale), 0);
    for (int i = 0; i < N; i++) {
        assert_true(isfinite(loss[i]) && isfinite(dz[i]));
        assert_true(loss[i] >= 0.0f);
        CHECK_NEAR(loss[i], bce_ref(zs[i], y[i]), 1e-6, 1e-6);
        double p = 1.0 / (1.0 + exp(-(double)zs[i]));
        CHECK_NEAR(dz[i], scale * (p - y[i]), 1e-7, 1e-6);
    }
    /* The gradient is the derivative of the loss (central differences on
     * the op itself, where the loss is smooth enough for float). */
    float zz[2], l2[2], g2[2];
    for (int i = 0; i < 5; i++) {
        const float h = 1e-2f;
        zz[0] = zs[i] + h;
        zz[1] = zs[i] - h;
        int32_t yy[2] = {y[i], y[i]};
        assert_int_equal(g_be->ops->sigmoid_xent(g_be, l2, g2, zz, yy, 2, 1.0f), 0);
        CHECK_NEAR(dz[i] / scale, (l2[0] - l2[1]) / (2.0 * h), 1e-3, 1e-3);
    }
    bfree(z);
    bfree(loss);
    bfree(dz);
    bfree(y);
}

/* Softmax cross-entropy of one row in double. */
static double softmax_ref(const float *z, int k, int y, double *p) {
    double mx = z[0];
    for (int j = 1; j < k; j++)
        mx = z[j] > mx ? z[j] : mx;
    double s = 0.0;
    for (int j = 0; j < k; j++)
        s += exp(z[j] - mx);
    double lse = mx + log(s);
    for (int j = 0; j < k; j++)
        p[j] = exp(z[j] - lse);
    return lse - z[y];
}

static void test_softmax_xent(void **state) {
    enum { R = 5, K = 4 };
    const float zs[R * K] = {
        0.1f,    -0.2f,  0.3f,   0.0f,     /* ordinary */
        1000.0f, 999.0f, -50.f,  0.0f,     /* large: exp would overflow without the max */
        -1000.f, -999.f, -998.f, -1001.0f, /* large negative */
        88.0f,   -88.0f, 0.0f,   87.5f,    /* near float's exp range */
        5.0f,    5.0f,   5.0f,   5.0f,     /* ties */
    };
    const int32_t ys[R] = {2, 1, 0, 3, 1};
    const float scale = 0.5f;
    float *z = falloc(R * K), *loss = falloc(R), *dz = falloc(R * K);
    int32_t *y = ialloc(R);
    memcpy(z, zs, sizeof zs);
    memcpy(y, ys, sizeof ys);
    assert_int_equal(g_be->ops->softmax_xent(g_be, loss, dz, z, y, R, K, scale), 0);
    for (int i = 0; i < R; i++) {
        double p[K], zmax = 0.0;
        double l = softmax_ref(zs + i * K, K, ys[i], p);
        for (int j = 0; j < K; j++)
            zmax = fmax(zmax, fabs(zs[i * K + j]));
        /* In float, log-sum-exp of logits near 1000 is only good to a few
         * ulps of 1000 (6e-5): the tolerance follows the row's magnitude. */
        double atol = 1e-6 + 4.0 * zmax * 0x1.0p-24;
        assert_true(isfinite(loss[i]));
        CHECK_NEAR(loss[i], l, atol, 1e-6);
        double sum = 0.0;
        for (int j = 0; j < K; j++) {
            assert_true(isfinite(dz[i * K + j]));
            CHECK_NEAR(dz[i * K + j], scale * (p[j] - (j == ys[i])), atol, 1e-5);
            sum += dz[i * K + j];
        }
        CHECK_NEAR(sum, 0.0, K * atol, 0); /* probabilities sum to one */
    }
    /* Central differences on the op for the ordinary row. */
    for (int j = 0; j < K; j++) {
        const float h = 1e-2f;
        float zp[K], zm[K], lp, lm, gp[K];
        memcpy(zp, zs, sizeof zp);
        memcpy(zm, zs, sizeof zm);
        zp[j] += h;
        zm[j] -= h;
        assert_int_equal(g_be->ops->softmax_xent(g_be, &lp, gp, zp, ys, 1, K, 1.0f), 0);
        assert_int_equal(g_be->ops->softmax_xent(g_be, &lm, gp, zm, ys, 1, K, 1.0f), 0);
        CHECK_NEAR(dz[j] / scale, (lp - lm) / (2.0 * h), 1e-3, 1e-3);
    }
    bfree(z);
    bfree(loss);
    bfree(dz);
    bfree(y);
}

static void test_predict(void **state) {
    enum { R = 4, K = 3 };
    const float zs[R * K] = {0.0f,   1.0f,   -1.0f,  500.0f, -500.0f, 0.0f,
                             -90.0f, -91.0f, -92.0f, 3.0f,   3.0f,    3.0f};
    float *z = falloc(R * K), *p = falloc(R * K);
    memcpy(z, zs, sizeof zs);
    /* k == 1: the sigmoid of each logit */
    assert_int_equal(g_be->ops->predict(g_be, p, z, R * K, 1), 0);
    for (int i = 0; i < R * K; i++) {
        assert_true(p[i] >= 0.0f && p[i] <= 1.0f);
        CHECK_NEAR(p[i], 1.0 / (1.0 + exp(-(double)zs[i])), 1e-7, 1e-6);
    }
    /* k > 1: softmax rows */
    assert_int_equal(g_be->ops->predict(g_be, p, z, R, K), 0);
    for (int i = 0; i < R; i++) {
        double ref[K], sum = 0.0;
        softmax_ref(zs + i * K, K, 0, ref);
        for (int j = 0; j < K; j++) {
            CHECK_NEAR(p[i * K + j], ref[j], 1e-7, 1e-5);
            sum += p[i * K + j];
        }
        CHECK_NEAR(sum, 1.0, 1e-6, 0);
    }
    bfree(z);
    bfree(p);
}

/* ---------------------------------------------------------------- DP-SGD */

static void test_row_sqnorm_combine(void **state) {
    enum { R = 6, C = 9 };
    fl_rng r;
    fl_rng_seed(&r, 21);
    float *X = falloc(R * C), *out = falloc(R), *acc = falloc(R), *a2 = falloc(R), *g2 = falloc(R);
    fill(&r, X, R * C, -3, 3);
    for (int acc_mode = 0; acc_mode < 2; acc_mode++) {
        for (int i = 0; i < R; i++)
            out[i] = 10.0f * (float)i;
        assert_int_equal(g_be->ops->row_sqnorm(g_be, out, X, R, C, acc_mode), 0);
        for (int i = 0; i < R; i++) {
            double s = acc_mode ? 10.0 * i : 0.0;
            for (int j = 0; j < C; j++)
                s += (double)X[i * C + j] * X[i * C + j];
            CHECK_NEAR(out[i], s, 1e-5, 1e-6);
        }
    }
    fill(&r, a2, R, 0, 4);
    fill(&r, g2, R, 0, 4);
    fill(&r, acc, R, 0, 1);
    float acc0[R];
    memcpy(acc0, acc, sizeof acc0);
    assert_int_equal(g_be->ops->norm_combine(g_be, acc, a2, g2, R), 0);
    for (int i = 0; i < R; i++)
        CHECK_NEAR(acc[i], acc0[i] + ((double)a2[i] + 1.0) * g2[i], 1e-6, 1e-6);
    bfree(X);
    bfree(out);
    bfree(acc);
    bfree(a2);
    bfree(g2);
}

static void test_clip_factors_row_scale(void **state) {
    enum { R = 6, C = 3 };
    const float sq[R] = {0.0f, 0.25f, 1.0f, 4.0f, 100.0f, INFINITY};
    const float clip = 1.0f;
    const float want[R] = {1.0f, 1.0f, 1.0f, 0.5f, 0.1f, 0.0f};
    float *s = falloc(R), *q = falloc(R), *X = falloc(R * C);
    memcpy(q, sq, sizeof sq);
    assert_int_equal(g_be->ops->clip_factors(g_be, s, q, R, clip), 0);
    for (int i = 0; i < R; i++)
        CHECK_NEAR(s[i], want[i], 0, 1e-7);
    assert_true(s[0] == 1.0f); /* zero norm: no division */

    for (int i = 0; i < R * C; i++)
        X[i] = (float)(i + 1);
    assert_int_equal(g_be->ops->row_scale(g_be, X, s, R, C), 0);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++)
            assert_true(X[i * C + j] == (float)(i * C + j + 1) * s[i]);
    bfree(s);
    bfree(q);
    bfree(X);
}

/* §7: the clipped sum of per-example gradients of a dense layer, from row
 * norms and one GEMM, equals explicit per-example clipping. A (B, in) are the
 * layer's inputs, G (B, out) its output gradients. */
static void test_dp_clipping_path(void **state) {
    enum { B = 8, IN = 5, OUT = 3 };
    const float clip = 0.8f;
    fl_rng r;
    fl_rng_seed(&r, 99);
    float *A = falloc(B * IN), *G = falloc(B * OUT), *a2 = falloc(B), *g2 = falloc(B);
    float *nrm = falloc(B), *s = falloc(B), *dW = falloc(OUT * IN), *db = falloc(OUT);
    fill(&r, A, B * IN, -1, 1);
    fill(&r, G, B * OUT, -1, 1);
    G[0] = G[1] = G[2] = 0.0f; /* one example with a zero gradient */

    /* explicit per-example gradients, clipped, summed, in double */
    double refW[OUT * IN] = {0}, refb[OUT] = {0};
    for (int b = 0; b < B; b++) {
        double n2 = 0.0;
        for (int o = 0; o < OUT; o++) {
            n2 += (double)G[b * OUT + o] * G[b * OUT + o]; /* bias part */
            for (int i = 0; i < IN; i++) {
                double gw = (double)G[b * OUT + o] * A[b * IN + i];
                n2 += gw * gw;
            }
        }
        double f = sqrt(n2) > clip ? clip / sqrt(n2) : 1.0;
        for (int o = 0; o < OUT; o++) {
            refb[o] += f * G[b * OUT + o];
            for (int i = 0; i < IN; i++)
                refW[o * IN + i] += f * G[b * OUT + o] * A[b * IN + i];
        }
    }

    const fl_backend_ops *o = g_be->ops;
    assert_int_equal(o->row_sqnorm(g_be, a2, A, B, IN, 0), 0);
    assert_int_equal(o->row_sqnorm(g_be, g2, G, B, OUT, 0), 0);
    assert_int_equal(o->zero(g_be, nrm, B * sizeof(float)), 0);
    assert_int_equal(o->norm_combine(g_be, nrm, a2, g2, B), 0);
    assert_int_equal(o->clip_factors(g_be, s, nrm, B, clip), 0);
    assert_int_equal(o->row_scale(g_be, G, s, B, OUT), 0);
    assert_int_equal(o->sgemm(g_be, 0, 1, IN, OUT, B, 1.0f, A, IN, G, OUT, 0.0f, dW, IN), 0);
    assert_int_equal(o->col_sum(g_be, db, G, B, OUT, 0.0f), 0);
    for (int i = 0; i < OUT * IN; i++)
        CHECK_NEAR(dW[i], refW[i], 1e-6, 1e-5);
    for (int i = 0; i < OUT; i++)
        CHECK_NEAR(db[i], refb[i], 1e-6, 1e-5);
    float *ptrs[] = {A, G, a2, g2, nrm, s, dW, db};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        bfree(ptrs[i]);
}

/* ---------------------------------------------------------------- vectors and optimisers */

static void test_axpy_scal(void **state) {
    enum { N = 33 };
    fl_rng r;
    fl_rng_seed(&r, 5);
    float *x = falloc(N), *y = falloc(N), y0[N];
    fill(&r, x, N, -1, 1);
    fill(&r, y, N, -1, 1);
    memcpy(y0, y, sizeof y0);
    assert_int_equal(g_be->ops->axpy(g_be, y, -0.3f, x, N), 0);
    for (int i = 0; i < N; i++)
        assert_true(y[i] == y0[i] + -0.3f * x[i]);
    assert_int_equal(g_be->ops->scal(g_be, y, 4.0f, N), 0);
    for (int i = 0; i < N; i++)
        assert_true(y[i] == (y0[i] + -0.3f * x[i]) * 4.0f);
    assert_int_equal(g_be->ops->scal(g_be, y, 0.0f, 0), 0); /* empty: no-op */
    bfree(x);
    bfree(y);
}

static void test_sgd_step(void **state) {
    enum { N = 17, STEPS = 3 };
    const float lr = 0.1f, wd = 0.01f;
    fl_rng r;
    fl_rng_seed(&r, 8);
    float *w = falloc(N), *v = falloc(N), *g = falloc(N);
    double rw[N], rv[N];

    /* plain SGD, no velocity buffer */
    fill(&r, w, N, -1, 1);
    for (int i = 0; i < N; i++)
        rw[i] = w[i];
    for (int t = 0; t < STEPS; t++) {
        fill(&r, g, N, -1, 1);
        assert_int_equal(g_be->ops->sgd_step(g_be, w, NULL, g, N, lr, 0.0f, wd), 0);
        for (int i = 0; i < N; i++)
            rw[i] -= lr * (g[i] + wd * rw[i]);
    }
    for (int i = 0; i < N; i++)
        CHECK_NEAR(w[i], rw[i], 1e-6, 1e-5);

    /* momentum 0 leaves a velocity buffer alone */
    for (int i = 0; i < N; i++)
        v[i] = 123.0f;
    assert_int_equal(g_be->ops->sgd_step(g_be, w, v, g, N, lr, 0.0f, 0.0f), 0);
    for (int i = 0; i < N; i++)
        assert_true(v[i] == 123.0f);

    /* heavy-ball momentum 0.9 */
    fill(&r, w, N, -1, 1);
    assert_int_equal(g_be->ops->zero(g_be, v, N * sizeof(float)), 0);
    for (int i = 0; i < N; i++) {
        rw[i] = w[i];
        rv[i] = 0.0;
    }
    for (int t = 0; t < STEPS; t++) {
        fill(&r, g, N, -1, 1);
        assert_int_equal(g_be->ops->sgd_step(g_be, w, v, g, N, lr, 0.9f, wd), 0);
        for (int i = 0; i < N; i++) {
            rv[i] = 0.9 * rv[i] + (g[i] + wd * rw[i]);
            rw[i] -= lr * rv[i];
        }
    }
    for (int i = 0; i < N; i++) {
        CHECK_NEAR(w[i], rw[i], 1e-6, 1e-5);
        CHECK_NEAR(v[i], rv[i], 1e-6, 1e-5);
    }
    bfree(w);
    bfree(v);
    bfree(g);
}

static void test_adam_step(void **state) {
    enum { N = 19, STEPS = 3 };
    const float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.05f;
    fl_rng r;
    fl_rng_seed(&r, 9);
    float *w = falloc(N), *m = falloc(N), *v = falloc(N), *g = falloc(N);
    double rw[N], rm[N] = {0}, rv[N] = {0};
    fill(&r, w, N, -1, 1);
    for (int i = 0; i < N; i++)
        rw[i] = w[i];
    for (int t = 1; t <= STEPS; t++) {
        fill(&r, g, N, -1, 1);
        g[0] = 0.0f; /* a zero gradient still moves w through decay */
        assert_int_equal(g_be->ops->adam_step(g_be, w, m, v, g, N, lr, b1, b2, eps, wd, t), 0);
        double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
        for (int i = 0; i < N; i++) {
            double gg = g[i] + (double)wd * rw[i];
            rm[i] = b1 * rm[i] + (1.0 - b1) * gg;
            rv[i] = b2 * rv[i] + (1.0 - b2) * gg * gg;
            rw[i] -= lr * (rm[i] / bc1) / (sqrt(rv[i] / bc2) + eps);
        }
    }
    for (int i = 0; i < N; i++) {
        CHECK_NEAR(w[i], rw[i], 1e-6, 1e-5);
        CHECK_NEAR(m[i], rm[i], 1e-7, 1e-5);
        CHECK_NEAR(v[i], rv[i], 1e-9, 1e-4);
    }
    bfree(w);
    bfree(m);
    bfree(v);
    bfree(g);
}

/* ---------------------------------------------------------------- integer domain */

static uint32_t quant1(float x, uint32_t rnd, float clip, float scale) {
    float *dx = falloc(1);
    uint32_t *dr = ualloc(1), *dq = ualloc(1);
    dx[0] = x;
    dr[0] = rnd;
    assert_int_equal(g_be->ops->quantize(g_be, dq, dx, dr, 1, clip, scale), 0);
    uint32_t q = dq[0];
    bfree(dx);
    bfree(dr);
    bfree(dq);
    return q;
}

static void test_quantize_words(void **state) {
    /* clip 1, scale 4: x maps to (x + 1) * 4 in [0, 8]. */
    assert_int_equal(quant1(0.0f, 0, 1.0f, 4.0f), 4); /* exact: never bumped */
    assert_int_equal(quant1(0.0f, 0xffffffffu, 1.0f, 4.0f), 4);
    assert_int_equal(quant1(0.5f, 0, 1.0f, 4.0f), 6);
    /* 0.3f is 0.300000011920928955078125, so t = 5.20000004768371582..., whose
     * fraction is exactly 858993664 / 2^32: the bump happens for rnd below
     * that word and not from it on. */
    assert_int_equal(quant1(0.3f, 0, 1.0f, 4.0f), 6);
    assert_int_equal(quant1(0.3f, 858993663u, 1.0f, 4.0f), 6);
    assert_int_equal(quant1(0.3f, 858993664u, 1.0f, 4.0f), 5);
    assert_int_equal(quant1(0.3f, 0xffffffffu, 1.0f, 4.0f), 5);
    /* -0.55f: t = 1.79999995231628418, fraction 3435973632 / 2^32 */
    assert_int_equal(quant1(-0.55f, 3435973631u, 1.0f, 4.0f), 2);
    assert_int_equal(quant1(-0.55f, 3435973632u, 1.0f, 4.0f), 1);
    /* clipping, infinities, NaN (treated as 0) */
    assert_int_equal(quant1(5.0f, 0, 1.0f, 4.0f), 8);
    assert_int_equal(quant1(-5.0f, 0, 1.0f, 4.0f), 0);
    assert_int_equal(quant1(INFINITY, 0, 1.0f, 4.0f), 8);
    assert_int_equal(quant1(-INFINITY, 0, 1.0f, 4.0f), 0);
    assert_int_equal(quant1(NAN, 0, 1.0f, 4.0f), 4);
    /* The top of the range wraps: with clip 1 and scale 2^31, x = 1 is 2^32 = 0
     * in Z_2^32, and 0.5 is 3 * 2^30. */
    assert_int_equal(quant1(1.0f, 0, 1.0f, 2147483648.0f), 0);
    assert_int_equal(quant1(0.5f, 0, 1.0f, 2147483648.0f), 3221225472u);
    assert_int_equal(quant1(0.0f, 0, 0.0f, 4.0f), 0); /* zero clip: everything is 0 */
}

/* Stochastic rounding is unbiased: the mean word is the exact value. */
static void test_quantize_unbiased(void **state) {
    enum { N = 200000 };
    const float clip = 1.0f, scale = 4.0f;
    fl_rng r;
    fl_rng_seed(&r, 2024);
    float *x = falloc(N);
    uint32_t *rnd = ualloc(N), *q = ualloc(N);
    const float vals[] = {0.3f, -0.55f, 0.0123f};
    for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
        for (int i = 0; i < N; i++) {
            x[i] = vals[v];
            rnd[i] = (uint32_t)(fl_rng_next(&r) >> 32);
        }
        assert_int_equal(g_be->ops->quantize(g_be, q, x, rnd, N, clip, scale), 0);
        double exact = ((double)vals[v] + clip) * scale, mean = 0.0;
        for (int i = 0; i < N; i++) {
            assert_true(q[i] == (uint32_t)floor(exact) || q[i] == (uint32_t)floor(exact) + 1);
            mean += q[i];
        }
        mean /= N;
        /* the standard deviation of one word is at most 1/2: allow 5 sigma */
        CHECK_NEAR(mean, exact, 5.0 * 0.5 / sqrt((double)N), 0);
    }
    bfree(x);
    bfree(rnd);
    bfree(q);
}

static void test_mod_add_sub(void **state) {
    enum { N = 64 };
    fl_rng r;
    fl_rng_seed(&r, 77);
    uint32_t *acc = ualloc(N), *x = ualloc(N), orig[N];
    acc[0] = 0xffffffffu, x[0] = 2;           /* wraps to 1 */
    acc[1] = 0x80000000u, x[1] = 0x80000000u; /* wraps to 0 */
    acc[2] = 0, x[2] = 0;
    for (int i = 3; i < N; i++) {
        acc[i] = (uint32_t)fl_rng_next(&r);
        x[i] = (uint32_t)fl_rng_next(&r);
    }
    memcpy(orig, acc, sizeof orig);
    assert_int_equal(g_be->ops->mod_add(g_be, acc, x, N), 0);
    assert_int_equal(acc[0], 1);
    assert_int_equal(acc[1], 0);
    for (int i = 0; i < N; i++)
        assert_true(acc[i] == (uint32_t)(((uint64_t)orig[i] + x[i]) % (1ull << 32)));
    assert_int_equal(g_be->ops->mod_sub(g_be, acc, x, N), 0);
    assert_memory_equal(acc, orig, sizeof orig); /* masks cancel exactly */
    acc[0] = 0;
    x[0] = 1;
    assert_int_equal(g_be->ops->mod_sub(g_be, acc, x, 1), 0);
    assert_int_equal(acc[0], 0xffffffffu);
    bfree(acc);
    bfree(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_and_parse),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_sgemm_transposes),
        cmocka_unit_test(test_sgemm_dense_layer),
        cmocka_unit_test(test_add_bias_col_sum),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_sigmoid_xent),
        cmocka_unit_test(test_softmax_xent),
        cmocka_unit_test(test_predict),
        cmocka_unit_test(test_row_sqnorm_combine),
        cmocka_unit_test(test_clip_factors_row_scale),
        cmocka_unit_test(test_dp_clipping_path),
        cmocka_unit_test(test_axpy_scal),
        cmocka_unit_test(test_sgd_step),
        cmocka_unit_test(test_adam_step),
        cmocka_unit_test(test_quantize_words),
        cmocka_unit_test(test_quantize_unbiased),
        cmocka_unit_test(test_mod_add_sub),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
