/* backend_cuda.cu: the CUDA backend (DESIGN.md §7, docs/kernels.md): the
 * fl_backend_ops table on one device, one non-blocking stream and one cuBLAS
 * handle bound to it. This file holds memory, BLAS and the table; the kernels
 * and their launchers are in vector_kernels.cuh (per-element) and
 * row_kernels.cuh (per-row reductions), both over the formulas of
 * kernels/elementwise.h that the CPU reference uses too. Memory comes from a
 * stream-ordered pool owned by the backend, so the allocations of every
 * training step are reused instead of going back to the driver. Failures
 * return FL_E* codes with CUDA's own text in be->last_error; nothing exits.
 * tests/gpu/test_backend_parity.c checks every operation against the CPU. */
#include <stdlib.h>

#include "cuda_common.cuh"
#include "row_kernels.cuh"
#include "vector_kernels.cuh"

extern "C" {
#include "core/log.h"
}

#ifndef COHORT_CUDA_ARCHS
#define COHORT_CUDA_ARCHS "(unknown)"
#endif

/* ----------------------------------------------------------------------------
 * memory */

/* Blocks are rounded up to 256 bytes: every pointer handed out is aligned for
 * any vector load, and a zero-byte request still gets a distinct pointer, as
 * on the CPU. */
#define FL_CUDA_ALIGN ((size_t)256)

/* Zero-filled, as the table requires; the memset is ordered on the stream
 * before any later operation, so nobody can see the old contents. */
static int fl_cuda_alloc(fl_backend *be, void **d_ptr, size_t bytes) {
    fl_cuda *c = fl_cuda_of(be);
    *d_ptr = NULL;
    if (bytes > SIZE_MAX - FL_CUDA_ALIGN)
        return fl_seterr(be->last_error, FL_ENOMEM, "cuda: alloc: %zu bytes is too large", bytes);
    size_t n = bytes ? (bytes + FL_CUDA_ALIGN - 1) & ~(FL_CUDA_ALIGN - 1) : FL_CUDA_ALIGN;
    void *p = NULL;
    cudaError_t e =
        c->pool ? cudaMallocFromPoolAsync(&p, n, c->pool, c->stream) : cudaMalloc(&p, n);
    if (e != cudaSuccess) {
        char what[64];
        snprintf(what, sizeof what, "alloc of %zu bytes", bytes);
        return fl_cuda_fail(be, e, what, __FILE__, __LINE__);
    }
    e = cudaMemsetAsync(p, 0, n, c->stream);
    if (e != cudaSuccess) {
        int rc = fl_cuda_fail(be, e, "alloc: zero fill", __FILE__, __LINE__);
        if (c->pool)
            cudaFreeAsync(p, c->stream);
        else
            cudaFree(p);
        return rc;
    }
    *d_ptr = p;
    return 0;
}

/* Stream-ordered: the block goes back to the pool once the work queued before
 * this call is done, so freeing a buffer a queued kernel still reads is safe.
 * A failure cannot be returned; it is kept in last_error. */
static void fl_cuda_free(fl_backend *be, void *d_ptr) {
    fl_cuda *c = fl_cuda_of(be);
    if (!d_ptr) return;
    cudaError_t e = c->pool ? cudaFreeAsync(d_ptr, c->stream) : cudaFree(d_ptr);
    if (e != cudaSuccess) fl_cuda_fail(be, e, "free", __FILE__, __LINE__);
}

/* From ordinary (pageable) host memory, CUDA copies src to a staging buffer
 * before returning, so the caller may reuse src at once. */
static int fl_cuda_upload(fl_backend *be, void *d_dst, const void *src, size_t bytes) {
    fl_cuda *c = fl_cuda_of(be);
    if (!bytes) return 0;
    FL_CUDA_TRY(be, cudaMemcpyAsync(d_dst, src, bytes, cudaMemcpyHostToDevice, c->stream),
                "upload");
    return 0;
}

/* Waits for all earlier work on the stream, then for the copy itself. */
static int fl_cuda_download(fl_backend *be, void *dst, const void *d_src, size_t bytes) {
    fl_cuda *c = fl_cuda_of(be);
    if (bytes)
        FL_CUDA_TRY(be, cudaMemcpyAsync(dst, d_src, bytes, cudaMemcpyDeviceToHost, c->stream),
                    "download");
    FL_CUDA_TRY(be, cudaStreamSynchronize(c->stream), "download: synchronize");
    return 0;
}

/* The CPU backend's copy is memmove; cudaMemcpy is undefined for overlapping
 * ranges, so an overlapping copy goes through a temporary block. */
static int fl_cuda_copy(fl_backend *be, void *d_dst, const void *d_src, size_t bytes) {
    fl_cuda *c = fl_cuda_of(be);
    if (!bytes || d_dst == d_src) return 0;
    const char *s = (const char *)d_src;
    char *d = (char *)d_dst;
    if (d < s + bytes && s < d + bytes) {
        void *tmp = NULL;
        int rc = fl_cuda_alloc(be, &tmp, bytes);
        if (rc) return rc;
        cudaError_t e = cudaMemcpyAsync(tmp, d_src, bytes, cudaMemcpyDeviceToDevice, c->stream);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(d_dst, tmp, bytes, cudaMemcpyDeviceToDevice, c->stream);
        fl_cuda_free(be, tmp);
        if (e != cudaSuccess) return fl_cuda_fail(be, e, "copy (overlapping)", __FILE__, __LINE__);
        return 0;
    }
    FL_CUDA_TRY(be, cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice, c->stream),
                "copy");
    return 0;
}

static int fl_cuda_zero(fl_backend *be, void *d_ptr, size_t bytes) {
    fl_cuda *c = fl_cuda_of(be);
    if (!bytes) return 0;
    FL_CUDA_TRY(be, cudaMemsetAsync(d_ptr, 0, bytes, c->stream), "zero");
    return 0;
}

/* Also where a fault inside an earlier kernel surfaces. */
static int fl_cuda_sync(fl_backend *be) {
    FL_CUDA_TRY(be, cudaStreamSynchronize(fl_cuda_of(be)->stream), "synchronize");
    return 0;
}

/* ----------------------------------------------------------------------------
 * BLAS */

/* Checked here with BLAS's own rules, so that a bad call is FL_EINVAL with the
 * offending argument named rather than cuBLAS's bare INVALID_VALUE. */
static int fl_cuda_sgemm(fl_backend *be, int transa, int transb, int m, int n, int k, float alpha,
                         const float *d_A, int lda, const float *d_B, int ldb, float beta,
                         float *d_C, int ldc) {
    fl_cuda *c = fl_cuda_of(be);
    if (m < 0 || n < 0 || k < 0)
        return fl_cuda_einval(be, "sgemm: negative size (m %d, n %d, k %d)", m, n, k);
    int arows = transa ? k : m, brows = transb ? n : k;
    if (lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1))
        return fl_cuda_einval(be,
                              "sgemm: leading dimension too small (lda %d, ldb %d, ldc %d for "
                              "op(A) %dx%d, op(B) %dx%d)",
                              lda, ldb, ldc, m, k, k, n);
    if (m == 0 || n == 0) return 0;
    FL_CUBLAS_TRY(be,
                  cublasSgemm(c->blas, transa ? CUBLAS_OP_T : CUBLAS_OP_N,
                              transb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, d_A, lda, d_B,
                              ldb, &beta, d_C, ldc),
                  "sgemm");
    return 0;
}

/* The ones vector col_sum multiplies by, grown geometrically so that a
 * training run sizes it once. */
static int fl_cuda_ones(fl_backend *be, int64_t len) {
    fl_cuda *c = fl_cuda_of(be);
    if (len <= c->ones_len) return 0;
    int64_t want = c->ones_len * 2 > len ? c->ones_len * 2 : len;
    if (want < 1024) want = 1024;
    void *p = NULL;
    int rc = fl_cuda_alloc(be, &p, (size_t)want * sizeof(float));
    if (rc) return rc;
    fl_fill_kernel<<<fl_cuda_grid(c, want), FL_CUDA_BLOCK, 0, c->stream>>>((float *)p, 1.0f, want);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        fl_cuda_free(be, p);
        return fl_cuda_fail(be, e, "col_sum: ones", __FILE__, __LINE__);
    }
    fl_cuda_free(be, c->d_ones);
    c->d_ones = (float *)p;
    c->ones_len = want;
    return 0;
}

/* out (cols) = beta * out + G^T 1: the row-major G (rows, cols) is the
 * column-major (cols, rows) matrix that gemv multiplies by a ones vector.
 * Unlike the CPU loop, beta == 0 does not read out (BLAS rules), so a NaN
 * left in out is overwritten instead of kept. */
static int fl_cuda_col_sum(fl_backend *be, float *d_out, const float *d_G, int rows, int cols,
                           float beta) {
    fl_cuda *c = fl_cuda_of(be);
    if (rows < 0 || cols < 0)
        return fl_cuda_einval(be, "col_sum: negative shape (%d, %d)", rows, cols);
    if (cols == 0) return 0;
    /* gemv returns early without applying beta when there is nothing to sum. */
    if (rows == 0) return fl_cuda_scal(be, d_out, beta, cols);
    int rc = fl_cuda_ones(be, rows);
    if (rc) return rc;
    const float one = 1.0f;
    FL_CUBLAS_TRY(be,
                  cublasSgemv(c->blas, CUBLAS_OP_N, cols, rows, &one, d_G, cols, c->d_ones, 1,
                              &beta, d_out, 1),
                  "col_sum");
    return 0;
}

static int fl_cuda_predict(fl_backend *be, float *d_p, const float *d_z, int rows, int k) {
    if (rows < 0 || k < 1) return fl_cuda_einval(be, "predict: bad shape (%d, %d)", rows, k);
    return k == 1 ? fl_cuda_predict_sigmoid(be, d_p, d_z, rows)
                  : fl_cuda_predict_softmax(be, d_p, d_z, rows, k);
}

/* ----------------------------------------------------------------------------
 * the table */

/* Waits for queued work so that nothing still runs on memory being released;
 * blocks the caller never freed go with the pool. */
static void fl_cuda_destroy(fl_backend *be) {
    if (!be) return;
    fl_cuda *c = fl_cuda_of(be);
    if (c) {
        if (c->stream) {
            fl_cuda_free(be, c->d_ones);
            cudaStreamSynchronize(c->stream);
        }
        if (c->blas) cublasDestroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
        if (c->pool) cudaMemPoolDestroy(c->pool);
        free(c);
    }
    free(be);
}

static const fl_backend_ops fl_cuda_ops = {
    .name = "cuda",
    .alloc = fl_cuda_alloc,
    .free = fl_cuda_free,
    .upload = fl_cuda_upload,
    .download = fl_cuda_download,
    .copy = fl_cuda_copy,
    .zero = fl_cuda_zero,
    .sync = fl_cuda_sync,
    .sgemm = fl_cuda_sgemm,
    .add_bias = fl_cuda_add_bias,
    .col_sum = fl_cuda_col_sum,
    .relu_forward = fl_cuda_relu_forward,
    .relu_backward = fl_cuda_relu_backward,
    .sigmoid_xent = fl_cuda_sigmoid_xent,
    .softmax_xent = fl_cuda_softmax_xent,
    .predict = fl_cuda_predict,
    .row_sqnorm = fl_cuda_row_sqnorm,
    .norm_combine = fl_cuda_norm_combine,
    .clip_factors = fl_cuda_clip_factors,
    .row_scale = fl_cuda_row_scale,
    .axpy = fl_cuda_axpy,
    .scal = fl_cuda_scal,
    .sgd_step = fl_cuda_sgd_step,
    .adam_step = fl_cuda_adam_step,
    .quantize = fl_cuda_quantize,
    .mod_add = fl_cuda_mod_add,
    .mod_sub = fl_cuda_mod_sub,
    .destroy = fl_cuda_destroy,
};

/* ----------------------------------------------------------------------------
 * opening */

/* Sets up the state of a backend whose impl is already zeroed; on failure
 * the reason is in be->last_error and fl_cuda_destroy releases what exists. */
static int fl_cuda_init(fl_backend *be) {
    fl_cuda *c = fl_cuda_of(be);
    FL_CUDA_TRY(be, cudaGetDevice(&c->device), "cudaGetDevice");
    cudaDeviceProp prop;
    FL_CUDA_TRY(be, cudaGetDeviceProperties(&prop, c->device), "cudaGetDeviceProperties");

    /* A device older than every architecture this build compiled for would
     * fail at the first launch; say so now, while the CPU can still be
     * chosen instead. */
    cudaFuncAttributes fa;
    cudaError_t e = cudaFuncGetAttributes(&fa, fl_relu_forward_kernel);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return fl_seterr(
            be->last_error, FL_ENOTSUP,
            "CUDA device %d (%s, sm_%d%d) cannot run this build's kernels (built for "
            "CUDA architectures %s; rebuild with -DCOHORT_CUDA_ARCHITECTURES=%d%d): %s",
            c->device, prop.name, prop.major, prop.minor, COHORT_CUDA_ARCHS, prop.major, prop.minor,
            cudaGetErrorString(e));
    }
    /* 32 blocks of 256 threads per SM is several waves: enough to hide
     * memory latency, few enough that grid-stride loops do real work. */
    c->max_grid = prop.multiProcessorCount * 32;

    FL_CUDA_TRY(be, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking),
                "cudaStreamCreate");
    FL_CUBLAS_TRY(be, cublasCreate(&c->blas), "cublasCreate");
    FL_CUBLAS_TRY(be, cublasSetStream(c->blas, c->stream), "cublasSetStream");
    /* Full FP32 GEMMs, never TF32: the CPU reference and the DP-SGD norms
     * assume single precision products. */
    FL_CUBLAS_TRY(be, cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");

    int pools = 0;
    FL_CUDA_TRY(be, cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, c->device),
                "cudaDeviceGetAttribute");
    if (pools) {
        cudaMemPoolProps props;
        memset(&props, 0, sizeof props);
        props.allocType = cudaMemAllocationTypePinned;
        props.location.type = cudaMemLocationTypeDevice;
        props.location.id = c->device;
        FL_CUDA_TRY(be, cudaMemPoolCreate(&c->pool, &props), "cudaMemPoolCreate");
        /* Keep freed memory in the pool across synchronisations instead of
         * returning it to the driver at every download. */
        uint64_t keep = UINT64_MAX;
        FL_CUDA_TRY(be, cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep),
                    "cudaMemPoolSetAttribute");
    }
    fl_info("cuda: device %d, %s (sm_%d%d, %d SMs, %.1f GiB)%s", c->device, prop.name, prop.major,
            prop.minor, prop.multiProcessorCount, (double)prop.totalGlobalMem / (1 << 30),
            pools ? "" : ", no stream-ordered allocator: plain cudaMalloc");
    return 0;
}

int fl_backend_cuda_open(fl_backend **out, char err[FL_ERR_LEN]) {
    *out = NULL;
    /* cudart loads the driver (libcuda) lazily, here: a machine without a
     * driver or without a device gets an error code, never a load failure. */
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        int code =
            e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ? FL_ENOTSUP : FL_EDEVICE;
        return fl_seterr(err, code, "no CUDA device: %s (%s)%s", cudaGetErrorString(e),
                         cudaGetErrorName(e),
                         e == cudaErrorInsufficientDriver
                             ? "; the NVIDIA driver is missing or older than this CUDA runtime"
                             : "");
    }
    if (count == 0) return fl_seterr(err, FL_ENOTSUP, "no CUDA device: the driver reports none");

    fl_backend *be = (fl_backend *)calloc(1, sizeof *be);
    fl_cuda *c = (fl_cuda *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return fl_seterr(err, FL_ENOMEM, "cuda backend: out of memory");
    }
    be->ops = &fl_cuda_ops;
    be->impl = c;
    int rc = fl_cuda_init(be);
    if (rc) {
        fl_seterr(err, rc, "%s", be->last_error);
        fl_cuda_destroy(be);
        return rc;
    }
    *out = be;
    return 0;
}

int fl_backend_cuda_built(void) {
    return 1;
}
