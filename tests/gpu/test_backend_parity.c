/* test_backend_parity.c: the CUDA backend held to the CPU reference (DESIGN.md
 * §7, §13), operation by operation, on the same fixed-seed inputs. Float
 * results must agree within a tolerance that grows with the value (llm.c's
 * validate_result: tol + |ref| * eps, first mismatches printed); the integer
 * kernels of secure aggregation (quantize, mod_add, mod_sub) bit for bit.
 * Shapes are deliberately awkward (rows not a multiple of a block's rows,
 * rows wider than a warp, vectors longer than one grid) so that every
 * launch-geometry path runs.
 *
 * Exits 77 (ctest SKIP_RETURN_CODE) with the reason when fl_backend_cuda_open
 * fails: no driver, no device, or a build without CUDA. With
 * COHORT_PARITY_SELFTEST=1 the second backend is another CPU backend, which
 * checks this harness itself on a machine without a GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "core/rng.h"
#include "kernels/backend.h"

static fl_backend *g_cpu; /* the reference */
static fl_backend *g_gpu; /* the backend under test */

/* ---------------------------------------------------------------- helpers */

/* Backend memory holding a copy of host data (or zeros when h is NULL). */
static void *up(fl_backend *be, const void *h, size_t bytes) {
    void *d = NULL;
    if (be->ops->alloc(be, &d, bytes) != 0) fail_msg("%s alloc: %s", be->ops->name, be->last_error);
    if (h && be->ops->upload(be, d, h, bytes) != 0)
        fail_msg("%s upload: %s", be->ops->name, be->last_error);
    return d;
}

/* A malloc'd host copy of backend memory. */
static void *down(fl_backend *be, const void *d, size_t bytes) {
    void *h = malloc(bytes ? bytes : 1);
    assert_non_null(h);
    if (be->ops->download(be, h, d, bytes) != 0)
        fail_msg("%s download: %s", be->ops->name, be->last_error);
    return h;
}

static void bfree(fl_backend *be, void *d) {
    be->ops->free(be, d);
}

/* An operation must succeed on its backend; the backend's text otherwise. */
#define OK(be, call)                                                                               \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != 0)                                                                              \
            fail_msg("line %d: %s: %s returned %d: %s", __LINE__, (be)->ops->name, #call, rc_,     \
                     (be)->last_error);                                                            \
    } while (0)

/* The same floats on both backends. */
typedef struct fpair {
    float *c, *g; /* CPU and GPU copies */
    size_t n;
} fpair;

static fpair fp_new(const float *h, size_t n) {
    fpair p = {up(g_cpu, h, n * sizeof(float)), up(g_gpu, h, n * sizeof(float)), n};
    return p;
}

static void fp_free(fpair *p) {
    bfree(g_cpu, p->c);
    bfree(g_gpu, p->g);
}

/* Like fpair, for 32-bit words. */
typedef struct upair {
    uint32_t *c, *g;
    size_t n;
} upair;

static upair up_new(const uint32_t *h, size_t n) {
    upair p = {up(g_cpu, h, n * sizeof(uint32_t)), up(g_gpu, h, n * sizeof(uint32_t)), n};
    return p;
}

static void up_free(upair *p) {
    bfree(g_cpu, p->c);
    bfree(g_gpu, p->g);
}

static float *rand_floats(uint64_t seed, size_t n, float lo, float hi) {
    fl_rng r;
    fl_rng_seed(&r, seed);
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * (float)fl_rng_uniform(&r);
    return x;
}

static uint32_t *rand_words(uint64_t seed, size_t n) {
    fl_rng r;
    fl_rng_seed(&r, seed);
    uint32_t *x = malloc(n * sizeof(uint32_t));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (uint32_t)(fl_rng_next(&r) >> 32);
    return x;
}

/* Compares the two copies of p: |gpu - cpu| <= tol + |cpu| * eps, NaN only
 * where the CPU has NaN, infinities equal. Prints the first 10 mismatches. */
static void check_fp(const char *what, const fpair *p, double tol, double eps) {
    float *c = down(g_cpu, p->c, p->n * sizeof(float));
    float *g = down(g_gpu, p->g, p->n * sizeof(float));
    size_t faults = 0;
    double worst = 0.0;
    for (size_t i = 0; i < p->n; i++) {
        int ok;
        if (isnan(c[i]) || isnan(g[i]))
            ok = isnan(c[i]) && isnan(g[i]);
        else if (isinf(c[i]) || isinf(g[i]))
            ok = c[i] == g[i];
        else {
            double d = fabs((double)c[i] - g[i]), t = tol + fabs(c[i]) * eps;
            ok = d <= t;
            if (d > worst) worst = d;
        }
        if (!ok && ++faults <= 10)
            fprintf(stderr, "  %s[%zu]: cpu %.9g, %s %.9g\n", what, i, c[i], g_gpu->ops->name,
                    g[i]);
    }
    free(c);
    free(g);
    if (faults)
        fail_msg("%s: %zu of %zu values outside tol %.3g + |ref| * %.3g", what, faults, p->n, tol,
                 eps);
    if (getenv("COHORT_PARITY_VERBOSE"))
        fprintf(stderr, "  %-28s n %-9zu max |diff| %.3g\n", what, p->n, worst);
}

/* Bit for bit. */
static void check_up(const char *what, const upair *p) {
    uint32_t *c = down(g_cpu, p->c, p->n * sizeof(uint32_t));
    uint32_t *g = down(g_gpu, p->g, p->n * sizeof(uint32_t));
    size_t faults = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (c[i] != g[i] && ++faults <= 10)
            fprintf(stderr, "  %s[%zu]: cpu %u, %s %u\n", what, i, c[i], g_gpu->ops->name, g[i]);
    }
    free(c);
    free(g);
    if (faults) fail_msg("%s: %zu of %zu words differ", what, faults, p->n);
}

/* Tolerances. Per-element float math agrees to a few ulps (the device's
 * libm); sums and GEMMs differ by summation order, which grows with their
 * length, so those tolerances are set per call from the length. */
#define ELEM_TOL 1e-6
#define ELEM_EPS 1e-5
#define SUM_EPS 1e-4 /* sums of positive terms: CPU sequential, GPU by tree */

/* ---------------------------------------------------------------- memory */

static void test_memory(void **state) {
    /* fresh memory is zero, whatever the size */
    const size_t sizes[] = {1, 3, 255, 256, 4097, 1 << 20};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        /* dirty a block and free it, so that the pool may hand the same
         * memory back: it must come back zeroed all the same */
        unsigned char *dirt = malloc(sizes[s]);
        assert_non_null(dirt);
        memset(dirt, 0xab, sizes[s]);
        bfree(g_gpu, up(g_gpu, dirt, sizes[s]));
        free(dirt);
        unsigned char *d = up(g_gpu, NULL, sizes[s]);
        unsigned char *h = down(g_gpu, d, sizes[s]);
        for (size_t i = 0; i < sizes[s]; i++)
            if (h[i]) fail_msg("alloc(%zu): byte %zu is %u", sizes[s], i, h[i]);
        free(h);
        bfree(g_gpu, d);
    }
    enum { N = 10000 };
    float *h = rand_floats(1, N, -1, 1);
    float *d = up(g_gpu, h, N * sizeof(float));
    bfree(g_gpu, up(g_gpu, h, N * sizeof(float))); /* reuse from the pool */
    float *e = up(g_gpu, NULL, N * sizeof(float));
    OK(g_gpu, g_gpu->ops->copy(g_gpu, e, d, N * sizeof(float)));
    float *back = down(g_gpu, e, N * sizeof(float));
    assert_memory_equal(back, h, N * sizeof(float));
    free(back);

    /* overlapping copies are memmove, both directions */
    OK(g_gpu, g_gpu->ops->copy(g_gpu, d + 3, d, (N - 3) * sizeof(float)));
    back = down(g_gpu, d, N * sizeof(float));
    assert_memory_equal(back, h, 3 * sizeof(float));
    assert_memory_equal(back + 3, h, (N - 3) * sizeof(float));
    free(back);
    OK(g_gpu, g_gpu->ops->copy(g_gpu, d, d + 3, (N - 3) * sizeof(float)));
    back = down(g_gpu, d, N * sizeof(float));
    assert_memory_equal(back, h, (N - 3) * sizeof(float));
    free(back);

    OK(g_gpu, g_gpu->ops->zero(g_gpu, e, N * sizeof(float)));
    OK(g_gpu, g_gpu->ops->sync(g_gpu));
    back = down(g_gpu, e, N * sizeof(float));
    for (int i = 0; i < N; i++)
        assert_true(back[i] == 0.0f);
    free(back);
    OK(g_gpu, g_gpu->ops->upload(g_gpu, e, h, 0)); /* zero bytes: no-op */
    bfree(g_gpu, d);
    bfree(g_gpu, e);
    bfree(g_gpu, NULL);
    free(h);
}

/* ---------------------------------------------------------------- sgemm */

static void run_sgemm(int ta, int tb, int m, int n, int k, int pad, float alpha, float beta,
                      uint64_t seed) {
    int lda = (ta ? k : m) + pad, ldb = (tb ? n : k) + pad, ldc = m + pad;
    size_t na = (size_t)lda * (ta ? m : k), nb = (size_t)ldb * (tb ? k : n), nc = (size_t)ldc * n;
    float *ha = rand_floats(seed, na, -1, 1), *hb = rand_floats(seed + 1, nb, -1, 1);
    float *hc = rand_floats(seed + 2, nc, -1, 1);
    fpair A = fp_new(ha, na), B = fp_new(hb, nb), C = fp_new(hc, nc);
    OK(g_cpu, g_cpu->ops->sgemm(g_cpu, ta, tb, m, n, k, alpha, A.c, lda, B.c, ldb, beta, C.c, ldc));
    OK(g_gpu, g_gpu->ops->sgemm(g_gpu, ta, tb, m, n, k, alpha, A.g, lda, B.g, ldb, beta, C.g, ldc));
    char what[64];
    snprintf(what, sizeof what, "sgemm(%c%c %dx%dx%d)", ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k);
    /* k products of terms in [-1, 1], of both signs: bounded by the terms,
     * since an entry can cancel to near zero. */
    check_fp(what, &C, 1e-6 * (k + 1) * (fabs(alpha) > 1.0 ? fabs(alpha) : 1.0), 1e-5);
    fp_free(&A);
    fp_free(&B);
    fp_free(&C);
    free(ha);
    free(hb);
    free(hc);
}

static void test_sgemm(void **state) {
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            run_sgemm(ta, tb, 37, 19, 23, 3, 1.0f, 0.0f, 10);
            run_sgemm(ta, tb, 129, 65, 300, 1, -0.5f, 0.75f, 20);
            run_sgemm(ta, tb, 1, 7, 1, 0, 2.0f, 1.0f, 30);
        }
    }
    /* a dense layer's three calls at MLP size (docs/kernels.md) */
    enum { B = 256, IN = 784, OUT = 64 };
    run_sgemm(1, 0, OUT, B, IN, 0, 1.0f, 0.0f, 40); /* Z = X W^T */
    run_sgemm(0, 0, IN, B, OUT, 0, 1.0f, 0.0f, 50); /* dX = dZ W */
    run_sgemm(0, 1, IN, OUT, B, 0, 1.0f, 0.0f, 60); /* dW = dZ^T X */
    /* k = 0: C = beta C */
    run_sgemm(0, 0, 5, 4, 0, 1, 1.0f, 0.5f, 70);
}

/* ---------------------------------------------------------------- dense-layer helpers */

static void test_bias_and_col_sum(void **state) {
    const int shapes[][2] = {{300, 37}, {1000, 1}, {7, 2000}, {1, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int R = shapes[s][0], C = shapes[s][1];
        float *hz = rand_floats(100 + s, (size_t)R * C, -2, 2),
              *hb = rand_floats(200 + s, C, -1, 1);
        fpair Z = fp_new(hz, (size_t)R * C), b = fp_new(hb, C), out = fp_new(hb, C);
        OK(g_cpu, g_cpu->ops->add_bias(g_cpu, Z.c, b.c, R, C));
        OK(g_gpu, g_gpu->ops->add_bias(g_gpu, Z.g, b.g, R, C));
        check_fp("add_bias", &Z, ELEM_TOL, ELEM_EPS);
        const float betas[] = {0.0f, 0.5f, 1.0f};
        for (size_t t = 0; t < 3; t++) {
            OK(g_cpu, g_cpu->ops->col_sum(g_cpu, out.c, Z.c, R, C, betas[t]));
            OK(g_gpu, g_gpu->ops->col_sum(g_gpu, out.g, Z.g, R, C, betas[t]));
            /* terms up to 3 in size, of both signs, so a column can cancel to
             * near zero: the bound is on the terms, not on the result */
            check_fp("col_sum", &out, 1e-6 * 3.0 * (R + 1), SUM_EPS);
        }
        OK(g_cpu, g_cpu->ops->col_sum(g_cpu, out.c, Z.c, 0, C, 0.5f));
        OK(g_gpu, g_gpu->ops->col_sum(g_gpu, out.g, Z.g, 0, C, 0.5f));
        check_fp("col_sum(no rows)", &out, 0, 0);
        fp_free(&Z);
        fp_free(&b);
        fp_free(&out);
        free(hz);
        free(hb);
    }
}

static void test_relu(void **state) {
    const size_t n = 3000017; /* longer than one grid of the grid-stride loop */
    float *hx = rand_floats(300, n, -1, 1), *hd = rand_floats(301, n, -1, 1);
    hx[0] = 0.0f;
    hx[1] = -0.0f;
    fpair x = fp_new(hx, n), y = fp_new(NULL, n), dy = fp_new(hd, n), dx = fp_new(NULL, n);
    OK(g_cpu, g_cpu->ops->relu_forward(g_cpu, y.c, x.c, (int64_t)n));
    OK(g_gpu, g_gpu->ops->relu_forward(g_gpu, y.g, x.g, (int64_t)n));
    check_fp("relu_forward", &y, 0, 0);
    OK(g_cpu, g_cpu->ops->relu_backward(g_cpu, dx.c, dy.c, y.c, (int64_t)n));
    OK(g_gpu, g_gpu->ops->relu_backward(g_gpu, dx.g, dy.g, y.g, (int64_t)n));
    check_fp("relu_backward", &dx, 0, 0);
    /* in place */
    OK(g_cpu, g_cpu->ops->relu_forward(g_cpu, x.c, x.c, (int64_t)n));
    OK(g_gpu, g_gpu->ops->relu_forward(g_gpu, x.g, x.g, (int64_t)n));
    check_fp("relu_forward(in place)", &x, 0, 0);
    fp_free(&x);
    fp_free(&y);
    fp_free(&dy);
    fp_free(&dx);
    free(hx);
    free(hd);
}

/* ---------------------------------------------------------------- losses */

static int32_t *labels(uint64_t seed, int n, int k) {
    fl_rng r;
    fl_rng_seed(&r, seed);
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    assert_non_null(y);
    for (int i = 0; i < n; i++)
        y[i] = (int32_t)fl_rng_below(&r, (uint64_t)k);
    return y;
}

static void test_sigmoid_xent(void **state) {
    const int R = 1003;
    float *hz = rand_floats(400, R, -8, 8);
    const float big[] = {0.0f, 30.0f, -30.0f, 100.0f, -100.0f, 1e4f, -1e4f, 88.7f, -88.7f};
    memcpy(hz, big, sizeof big);
    int32_t *hy = labels(401, R, 2);
    fpair z = fp_new(hz, R), loss = fp_new(NULL, R), dz = fp_new(NULL, R);
    int32_t *yc = up(g_cpu, hy, R * sizeof(int32_t)), *yg = up(g_gpu, hy, R * sizeof(int32_t));
    OK(g_cpu, g_cpu->ops->sigmoid_xent(g_cpu, loss.c, dz.c, z.c, yc, R, 0.125f));
    OK(g_gpu, g_gpu->ops->sigmoid_xent(g_gpu, loss.g, dz.g, z.g, yg, R, 0.125f));
    check_fp("sigmoid_xent loss", &loss, ELEM_TOL, ELEM_EPS);
    check_fp("sigmoid_xent dz", &dz, ELEM_TOL, ELEM_EPS);
    fp_free(&z);
    fp_free(&loss);
    fp_free(&dz);
    bfree(g_cpu, yc);
    bfree(g_gpu, yg);
    free(hz);
    free(hy);
}

static void test_softmax(void **state) {
    const int shapes[][2] = {{300, 10}, {17, 1000}, {64, 2}, {9, 1}, {1, 33}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int R = shapes[s][0], K = shapes[s][1];
        size_t n = (size_t)R * K;
        float *hz = rand_floats(500 + s, n, -6, 6);
        /* rows far outside exp's range, which only the max shift survives */
        for (int j = 0; j < K && R > 2; j++) {
            hz[j] += 900.0f;
            hz[K + j] -= 900.0f;
        }
        int32_t *hy = labels(600 + s, R, K);
        fpair z = fp_new(hz, n), loss = fp_new(NULL, R), dz = fp_new(NULL, n), p = fp_new(NULL, n);
        int32_t *yc = up(g_cpu, hy, R * sizeof(int32_t)), *yg = up(g_gpu, hy, R * sizeof(int32_t));
        OK(g_cpu, g_cpu->ops->softmax_xent(g_cpu, loss.c, dz.c, z.c, yc, R, K, 0.5f));
        OK(g_gpu, g_gpu->ops->softmax_xent(g_gpu, loss.g, dz.g, z.g, yg, R, K, 0.5f));
        /* log-sum-exp of logits near 900 is good to a few ulps of 900 */
        check_fp("softmax_xent loss", &loss, 1e-5 + 4 * 906.0 * 0x1.0p-24, 1e-5);
        check_fp("softmax_xent dz", &dz, 1e-5 + 4 * 906.0 * 0x1.0p-24, SUM_EPS);
        OK(g_cpu, g_cpu->ops->predict(g_cpu, p.c, z.c, R, K));
        OK(g_gpu, g_gpu->ops->predict(g_gpu, p.g, z.g, R, K));
        check_fp("predict", &p, 1e-6, SUM_EPS);
        /* softmax_xent with dz over the logits */
        OK(g_cpu, g_cpu->ops->softmax_xent(g_cpu, loss.c, z.c, z.c, yc, R, K, 1.0f));
        OK(g_gpu, g_gpu->ops->softmax_xent(g_gpu, loss.g, z.g, z.g, yg, R, K, 1.0f));
        check_fp("softmax_xent(in place) dz", &z, 1e-5 + 4 * 906.0 * 0x1.0p-24, SUM_EPS);
        fp_free(&z);
        fp_free(&loss);
        fp_free(&dz);
        fp_free(&p);
        bfree(g_cpu, yc);
        bfree(g_gpu, yg);
        free(hz);
        free(hy);
    }
}

/* ---------------------------------------------------------------- DP-SGD */

static void test_dp_ops(void **state) {
    const int shapes[][2] = {{256, 784}, {1001, 3}, {5, 4000}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int R = shapes[s][0], C = shapes[s][1];
        size_t n = (size_t)R * C;
        float *hx = rand_floats(700 + s, n, -1, 1), *hacc = rand_floats(710 + s, R, 0, 2);
        float *hg2 = rand_floats(720 + s, R, 0, 3);
        fpair X = fp_new(hx, n), sq = fp_new(hacc, R), acc = fp_new(hacc, R), g2 = fp_new(hg2, R);
        fpair f = fp_new(NULL, R);
        double sum_tol = 1e-6 * (1.0 + sqrt((double)C));
        for (int accumulate = 0; accumulate < 2; accumulate++) {
            OK(g_cpu, g_cpu->ops->row_sqnorm(g_cpu, sq.c, X.c, R, C, accumulate));
            OK(g_gpu, g_gpu->ops->row_sqnorm(g_gpu, sq.g, X.g, R, C, accumulate));
            check_fp("row_sqnorm", &sq, sum_tol, SUM_EPS);
        }
        OK(g_cpu, g_cpu->ops->norm_combine(g_cpu, acc.c, sq.c, g2.c, R));
        OK(g_gpu, g_gpu->ops->norm_combine(g_gpu, acc.g, sq.g, g2.g, R));
        check_fp("norm_combine", &acc, sum_tol, SUM_EPS);
        /* the same inputs on both sides from here, so each op is judged alone */
        float *hsq = down(g_cpu, acc.c, R * sizeof(float));
        hsq[0] = 0.0f; /* a zero norm */
        OK(g_gpu, g_gpu->ops->upload(g_gpu, acc.g, hsq, R * sizeof(float)));
        OK(g_cpu, g_cpu->ops->upload(g_cpu, acc.c, hsq, R * sizeof(float)));
        OK(g_cpu, g_cpu->ops->clip_factors(g_cpu, f.c, acc.c, R, 1.5f));
        OK(g_gpu, g_gpu->ops->clip_factors(g_gpu, f.g, acc.g, R, 1.5f));
        check_fp("clip_factors", &f, ELEM_TOL, ELEM_EPS);
        float *hf = down(g_cpu, f.c, R * sizeof(float));
        OK(g_gpu, g_gpu->ops->upload(g_gpu, f.g, hf, R * sizeof(float)));
        OK(g_cpu, g_cpu->ops->row_scale(g_cpu, X.c, f.c, R, C));
        OK(g_gpu, g_gpu->ops->row_scale(g_gpu, X.g, f.g, R, C));
        check_fp("row_scale", &X, ELEM_TOL, ELEM_EPS);
        free(hsq);
        free(hf);
        fp_free(&X);
        fp_free(&sq);
        fp_free(&acc);
        fp_free(&g2);
        fp_free(&f);
        free(hx);
        free(hacc);
        free(hg2);
    }
}

/* ---------------------------------------------------------------- vectors and optimisers */

static void test_axpy_scal(void **state) {
    const size_t n = 2500007;
    float *hx = rand_floats(800, n, -1, 1), *hy = rand_floats(801, n, -1, 1);
    fpair x = fp_new(hx, n), y = fp_new(hy, n);
    OK(g_cpu, g_cpu->ops->axpy(g_cpu, y.c, -0.37f, x.c, (int64_t)n));
    OK(g_gpu, g_gpu->ops->axpy(g_gpu, y.g, -0.37f, x.g, (int64_t)n));
    check_fp("axpy", &y, ELEM_TOL, ELEM_EPS);
    OK(g_cpu, g_cpu->ops->scal(g_cpu, y.c, 3.5f, (int64_t)n));
    OK(g_gpu, g_gpu->ops->scal(g_gpu, y.g, 3.5f, (int64_t)n));
    check_fp("scal", &y, ELEM_TOL, ELEM_EPS);
    fp_free(&x);
    fp_free(&y);
    free(hx);
    free(hy);
}

static void test_optimisers(void **state) {
    const size_t n = 100003;
    float *hw = rand_floats(900, n, -1, 1);
    fpair w = fp_new(hw, n), v = fp_new(NULL, n), m = fp_new(NULL, n);
    /* SGD without a velocity buffer, then with momentum */
    for (int t = 0; t < 3; t++) {
        float *hg = rand_floats(910 + t, n, -1, 1);
        fpair g = fp_new(hg, n);
        OK(g_cpu, g_cpu->ops->sgd_step(g_cpu, w.c, NULL, g.c, (int64_t)n, 0.05f, 0.0f, 0.01f));
        OK(g_gpu, g_gpu->ops->sgd_step(g_gpu, w.g, NULL, g.g, (int64_t)n, 0.05f, 0.0f, 0.01f));
        OK(g_cpu, g_cpu->ops->sgd_step(g_cpu, w.c, v.c, g.c, (int64_t)n, 0.05f, 0.9f, 0.01f));
        OK(g_gpu, g_gpu->ops->sgd_step(g_gpu, w.g, v.g, g.g, (int64_t)n, 0.05f, 0.9f, 0.01f));
        fp_free(&g);
        free(hg);
    }
    check_fp("sgd_step w", &w, ELEM_TOL, ELEM_EPS);
    check_fp("sgd_step v", &v, ELEM_TOL, ELEM_EPS);

    /* Adam from fresh moments, three steps */
    OK(g_cpu, g_cpu->ops->upload(g_cpu, w.c, hw, n * sizeof(float)));
    OK(g_gpu, g_gpu->ops->upload(g_gpu, w.g, hw, n * sizeof(float)));
    OK(g_cpu, g_cpu->ops->zero(g_cpu, v.c, n * sizeof(float)));
    OK(g_gpu, g_gpu->ops->zero(g_gpu, v.g, n * sizeof(float)));
    for (int t = 1; t <= 3; t++) {
        float *hg = rand_floats(920 + t, n, -1, 1);
        fpair g = fp_new(hg, n);
        OK(g_cpu, g_cpu->ops->adam_step(g_cpu, w.c, m.c, v.c, g.c, (int64_t)n, 1e-3f, 0.9f, 0.999f,
                                        1e-8f, 0.01f, t));
        OK(g_gpu, g_gpu->ops->adam_step(g_gpu, w.g, m.g, v.g, g.g, (int64_t)n, 1e-3f, 0.9f, 0.999f,
                                        1e-8f, 0.01f, t));
        fp_free(&g);
        free(hg);
    }
    check_fp("adam_step w", &w, ELEM_TOL, ELEM_EPS);
    check_fp("adam_step m", &m, 1e-7, ELEM_EPS);
    check_fp("adam_step v", &v, 1e-9, ELEM_EPS);
    fp_free(&w);
    fp_free(&v);
    fp_free(&m);
    free(hw);
}

/* ---------------------------------------------------------------- integer domain */

static void run_quantize(const float *hx, size_t n, float clip, float scale, uint64_t seed) {
    uint32_t *hr = rand_words(seed, n);
    fpair x = fp_new(hx, n);
    upair rnd = up_new(hr, n), q = up_new(NULL, n);
    OK(g_cpu, g_cpu->ops->quantize(g_cpu, q.c, x.c, rnd.c, (int64_t)n, clip, scale));
    OK(g_gpu, g_gpu->ops->quantize(g_gpu, q.g, x.g, rnd.g, (int64_t)n, clip, scale));
    char what[64];
    snprintf(what, sizeof what, "quantize(clip %g, scale %g)", (double)clip, (double)scale);
    check_up(what, &q);
    fp_free(&x);
    up_free(&rnd);
    up_free(&q);
    free(hr);
}

static void test_quantize(void **state) {
    const size_t n = 1000003;
    float *hx = rand_floats(1000, n, -3, 3);
    const float special[] = {0.0f,     -0.0f,     1.0f, -1.0f,  0.3f,    -0.55f,
                             INFINITY, -INFINITY, NAN,  1e-30f, -1e-30f, 2.5f};
    memcpy(hx, special, sizeof special);
    run_quantize(hx, n, 1.0f, 4.0f, 1001);
    run_quantize(hx, n, 1.0f, 1048576.0f, 1002);    /* 2^20: typical secure-aggregation grid */
    run_quantize(hx, n, 2.0f, 1000000.0f, 1003);    /* a scale that is not a power of two */
    run_quantize(hx, n, 1.0f, 2147483648.0f, 1004); /* 2^31: the top of the range wraps to 0 */
    run_quantize(hx, n, 0.01f, 3.0e11f, 1005);      /* past 2^32: reduced mod 2^32 */
    /* hand-picked rounding thresholds (see test_backend_cpu.c) */
    const float xs[] = {0.3f, 0.3f, -0.55f, -0.55f};
    const uint32_t rs[] = {858993663u, 858993664u, 3435973631u, 3435973632u};
    fpair x = fp_new(xs, 4);
    upair rnd = up_new(rs, 4), q = up_new(NULL, 4);
    OK(g_cpu, g_cpu->ops->quantize(g_cpu, q.c, x.c, rnd.c, 4, 1.0f, 4.0f));
    OK(g_gpu, g_gpu->ops->quantize(g_gpu, q.g, x.g, rnd.g, 4, 1.0f, 4.0f));
    check_up("quantize(thresholds)", &q);
    fp_free(&x);
    up_free(&rnd);
    up_free(&q);
    free(hx);
}

static void test_mod_add_sub(void **state) {
    const size_t n = 2000003;
    uint32_t *ha = rand_words(1100, n), *hb = rand_words(1101, n);
    ha[0] = 0xffffffffu;
    hb[0] = 1;
    upair acc = up_new(ha, n), x = up_new(hb, n);
    OK(g_cpu, g_cpu->ops->mod_add(g_cpu, acc.c, x.c, (int64_t)n));
    OK(g_gpu, g_gpu->ops->mod_add(g_gpu, acc.g, x.g, (int64_t)n));
    check_up("mod_add", &acc);
    OK(g_cpu, g_cpu->ops->mod_sub(g_cpu, acc.c, x.c, (int64_t)n));
    OK(g_gpu, g_gpu->ops->mod_sub(g_gpu, acc.g, x.g, (int64_t)n));
    OK(g_cpu, g_cpu->ops->mod_sub(g_cpu, acc.c, x.c, (int64_t)n));
    OK(g_gpu, g_gpu->ops->mod_sub(g_gpu, acc.g, x.g, (int64_t)n));
    check_up("mod_sub", &acc);
    up_free(&acc);
    up_free(&x);
    free(ha);
    free(hb);
}

/* ---------------------------------------------------------------- failure paths */

/* Misuse is refused with a reason, and the backend still works afterwards
 * (nothing reached the device to poison its context). */
static void test_errors(void **state) {
    if (strcmp(g_gpu->ops->name, "cuda") != 0) skip();
    fl_backend *be = g_gpu;
    float *d = up(be, NULL, 64 * sizeof(float));
    uint32_t *q = up(be, NULL, 64 * sizeof(uint32_t));
    be->last_error[0] = '\0';
    assert_int_equal(be->ops->sgemm(be, 0, 0, -1, 2, 2, 1.0f, d, 2, d, 2, 0.0f, d, 2), FL_EINVAL);
    assert_true(strlen(fl_backend_error(be)) > 0);
    assert_int_equal(be->ops->sgemm(be, 0, 0, 4, 2, 2, 1.0f, d, 2, d, 2, 0.0f, d, 4), FL_EINVAL);
    assert_int_equal(be->ops->sgd_step(be, d, NULL, d, 64, 0.1f, 0.9f, 0.0f), FL_EINVAL);
    assert_int_equal(be->ops->quantize(be, q, d, q, 64, 1.0f, -1.0f), FL_EINVAL);
    assert_int_equal(be->ops->quantize(be, q, d, q, 64, 1.0f, 1e30f), FL_EINVAL);
    assert_int_equal(be->ops->axpy(be, d, 1.0f, d, -1), FL_EINVAL);
    assert_int_equal(be->ops->softmax_xent(be, d, d, d, (const int32_t *)q, 4, 0, 1.0f), FL_EINVAL);
    void *huge = NULL;
    int rc = be->ops->alloc(be, &huge, (size_t)1 << 62);
    fprintf(stderr, "  (expected) %s\n", fl_backend_error(be));
    assert_int_equal(rc, FL_ENOMEM);
    assert_null(huge);
    /* empty operations are no-ops, not zero-block launches */
    OK(be, be->ops->relu_forward(be, d, d, 0));
    OK(be, be->ops->row_sqnorm(be, d, d, 0, 5, 0));
    OK(be, be->ops->sgemm(be, 0, 0, 0, 3, 2, 1.0f, d, 1, d, 2, 0.0f, d, 1));
    OK(be, be->ops->sync(be));
    bfree(be, d);
    bfree(be, q);
}

int main(void) {
    char err[FL_ERR_LEN] = "";
    int self = getenv("COHORT_PARITY_SELFTEST") && !strcmp(getenv("COHORT_PARITY_SELFTEST"), "1");
    int rc = self ? fl_backend_cpu_open(&g_gpu, err) : fl_backend_cuda_open(&g_gpu, err);
    if (rc != 0) {
        printf("SKIP: CUDA backend unavailable: %s\n", err);
        return 77;
    }
    if (fl_backend_cpu_open(&g_cpu, err) != 0) {
        fprintf(stderr, "cpu backend: %s\n", err);
        fl_backend_close(g_gpu);
        return 1;
    }
    fprintf(stderr, "parity: %s against the cpu reference%s\n", g_gpu->ops->name,
            self ? " (self-test)" : "");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory),           cmocka_unit_test(test_sgemm),
        cmocka_unit_test(test_bias_and_col_sum), cmocka_unit_test(test_relu),
        cmocka_unit_test(test_sigmoid_xent),     cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_dp_ops),           cmocka_unit_test(test_axpy_scal),
        cmocka_unit_test(test_optimisers),       cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_mod_add_sub),      cmocka_unit_test(test_errors),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    fl_backend_close(g_cpu);
    fl_backend_close(g_gpu);
    return failed ? 1 : 0;
}
