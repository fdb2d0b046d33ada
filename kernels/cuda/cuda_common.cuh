/* cuda_common.cuh: what every file of the CUDA backend shares (DESIGN.md §7):
 * the backend's private state, the mapping of CUDA and cuBLAS failures to
 * FL_E* codes with CUDA's own text in be->last_error, launch geometry, and the
 * warp reductions of the row kernels. Launchers return codes instead of
 * exiting (llm.c's cudaCheck exits; the aggregator daemon links this code).
 *
 * defines: fl_cuda, fl_cuda_of, fl_cuda_fail, fl_cublas_fail, FL_CUDA_TRY,
 *          FL_CUBLAS_TRY, fl_cuda_launched, fl_cuda_grid, fl_cuda_einval,
 *          fl_warp_sum, fl_warp_max */
#ifndef FL_CUDA_COMMON_CUH
#define FL_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern "C" {
#include "kernels/backend.h"
}
#include "kernels/elementwise.h"

/* ----------------------------------------------------------------------------
 * backend state */

/* One per fl_backend. Everything runs on `stream`, so the stream order is the
 * only synchronisation the operations need; download and sync wait on it. */
typedef struct fl_cuda {
    int device;          /* the device current when the backend was opened */
    int max_grid;        /* grid-stride kernels launch at most this many blocks */
    cudaStream_t stream; /* non-blocking: never serialised with the legacy stream */
    cublasHandle_t blas; /* bound to stream */
    /* Stream-ordered pool owned by this backend, so that freed blocks are
     * reused without a device-wide synchronisation; NULL where the device has
     * no stream-ordered allocator, and then alloc/free are cudaMalloc/cudaFree. */
    cudaMemPool_t pool;
    float *d_ones; /* (ones_len) all 1.0f, the vector col_sum multiplies by */
    int64_t ones_len;
} fl_cuda;

static inline fl_cuda *fl_cuda_of(fl_backend *be) {
    return (fl_cuda *)be->impl;
}

#define FL_CUDA_BLOCK 256 /* threads per block for every kernel */
#define FL_WARP 32

/* ----------------------------------------------------------------------------
 * errors */

/* The base name of a source path, so that messages stay short. */
static inline const char *fl_cuda_base(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Records a CUDA failure in be->last_error and returns its FL_E* code: an
 * allocation failure is FL_ENOMEM, everything else FL_EDEVICE. */
static int fl_cuda_fail(fl_backend *be, cudaError_t e, const char *what, const char *file,
                        int line) {
    /* The runtime also keeps a failed call's error as the "last error"; clear
     * it, or the next launch check would report this failure again. (Sticky
     * errors, which end the context, stay whatever is done here.) */
    (void)cudaGetLastError();
    int code = e == cudaErrorMemoryAllocation ? FL_ENOMEM : FL_EDEVICE;
    return fl_seterr(be->last_error, code, "cuda: %s: %s (%s at %s:%d)", what,
                     cudaGetErrorString(e), cudaGetErrorName(e), fl_cuda_base(file), line);
}

/* The same for cuBLAS: an invalid argument is the caller's (FL_EINVAL), a
 * failed allocation FL_ENOMEM, anything else the device's. */
static int fl_cublas_fail(fl_backend *be, cublasStatus_t s, const char *what, const char *file,
                          int line) {
    int code = s == CUBLAS_STATUS_ALLOC_FAILED    ? FL_ENOMEM
               : s == CUBLAS_STATUS_INVALID_VALUE ? FL_EINVAL
                                                  : FL_EDEVICE;
    return fl_seterr(be->last_error, code, "cublas: %s: %s (%s at %s:%d)", what,
                     cublasGetStatusString(s), cublasGetStatusName(s), fl_cuda_base(file), line);
}

#define FL_CUDA_TRY(be, call, what)                                                                \
    do {                                                                                           \
        cudaError_t fl_e_ = (call);                                                                \
        if (fl_e_ != cudaSuccess) return fl_cuda_fail((be), fl_e_, (what), __FILE__, __LINE__);    \
    } while (0)

#define FL_CUBLAS_TRY(be, call, what)                                                              \
    do {                                                                                           \
        cublasStatus_t fl_s_ = (call);                                                             \
        if (fl_s_ != CUBLAS_STATUS_SUCCESS)                                                        \
            return fl_cublas_fail((be), fl_s_, (what), __FILE__, __LINE__);                        \
    } while (0)

/* Checks the launch that just happened, as llm.c does after every kernel:
 * a bad configuration shows up here; a fault inside the kernel shows up at the
 * next synchronising call (download, sync), which reports it the same way. */
#define fl_cuda_launched(be, what) FL_CUDA_TRY((be), cudaGetLastError(), (what))

/* Misuse that would otherwise become a device fault, which poisons the whole
 * CUDA context: refused up front. */
static int fl_cuda_einval(fl_backend *be, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fl_cuda_einval(fl_backend *be, const char *fmt, ...) {
    char msg[FL_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fl_seterr(be->last_error, FL_EINVAL, "cuda: %s", msg);
}

/* ----------------------------------------------------------------------------
 * launch geometry */

/* Blocks for a grid-stride loop over n items: enough to fill the device,
 * never more than max_grid (the loop covers the rest), never zero. */
static inline unsigned fl_cuda_grid(const fl_cuda *c, int64_t n) {
    int64_t g = (n + FL_CUDA_BLOCK - 1) / FL_CUDA_BLOCK;
    if (g > c->max_grid) g = c->max_grid;
    return (unsigned)(g > 0 ? g : 1);
}

/* Grid-stride loop: i runs over [0, n) across the whole grid, in int64 so that
 * tensors beyond 2^31 elements need no special case. */
#define FL_FOR_EACH(i, n)                                                                          \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)gridDim.x * blockDim.x)

/* ----------------------------------------------------------------------------
 * warp reductions (every lane of the warp must call them; all get the result) */

__device__ static inline float fl_warp_sum(float v) {
    for (int off = FL_WARP / 2; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* The CPU reference's comparison `z > m ? z : m` rather than fmaxf: a NaN
 * never becomes the maximum, and a NaN logit still makes its row NaN through
 * the sum of exponentials, as on the CPU. */
__device__ static inline float fl_warp_max(float v) {
    for (int off = FL_WARP / 2; off > 0; off >>= 1) {
        float o = __shfl_xor_sync(0xffffffffu, v, off);
        v = o > v ? o : v;
    }
    return v;
}

#endif
