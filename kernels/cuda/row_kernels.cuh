/* row_kernels.cuh: the CUDA backend's per-row reductions (DESIGN.md §7):
 * softmax cross-entropy, softmax probabilities and per-row squared norms.
 * One warp owns one row (FL_CUDA_BLOCK / 32 rows per block): its lanes stride
 * over the row's columns, which are contiguous in row-major storage, so loads
 * are coalesced, and warp shuffles combine the partial results without shared
 * memory or atomics. The reduction order is fixed, so results are
 * deterministic run to run; they differ from the CPU's sequential sums only
 * by rounding. Per-element math comes from kernels/elementwise.h.
 *
 * defines: fl_cuda_softmax_xent, fl_cuda_predict_softmax, fl_cuda_row_sqnorm */
#ifndef FL_ROW_KERNELS_CUH
#define FL_ROW_KERNELS_CUH

#include <math.h>

#include "cuda_common.cuh"

#define FL_ROWS_PER_BLOCK (FL_CUDA_BLOCK / FL_WARP)

/* ----------------------------------------------------------------------------
 * CUDA kernels */

/* The row this warp owns, or -1 past the end. Whole warps leave together, so
 * the full-mask shuffles below always see all 32 lanes. */
__device__ static inline int64_t fl_warp_row(int rows) {
    int64_t row = (int64_t)blockIdx.x * FL_ROWS_PER_BLOCK + threadIdx.x / FL_WARP;
    return row < rows ? row : -1;
}

/* The row's maximum and the sum of exp(z - max), as the CPU computes them
 * before taking the log-sum-exp or normalising. */
__device__ static inline void fl_warp_max_sumexp(const float *zr, int k, int lane, float *mx_out,
                                                 float *s_out) {
    float mx = -INFINITY;
    for (int j = lane; j < k; j += FL_WARP)
        mx = zr[j] > mx ? zr[j] : mx;
    mx = fl_warp_max(mx);
    float s = 0.0f;
    for (int j = lane; j < k; j += FL_WARP)
        s += expf(zr[j] - mx);
    *mx_out = mx;
    *s_out = fl_warp_sum(s);
}

/* z, dz (rows, k); loss, y (rows). A label outside [0, k) is a caller bug
 * (the CPU reads out of bounds): here it gives a NaN loss and a gradient
 * with no target, so it cannot fault the device and cannot go unnoticed. */
__global__ void fl_softmax_xent_kernel(float *loss, float *dz, const float *z, const int32_t *y,
                                       int rows, int k, float scale) {
    int64_t row = fl_warp_row(rows);
    if (row < 0) return;
    int lane = threadIdx.x % FL_WARP;
    const float *zr = z + row * k;
    float *dr = dz + row * k;
    int yi = y[row];
    int valid = yi >= 0 && yi < k;
    float zy = valid ? zr[yi] : NAN; /* read before any lane writes dz (which may alias z) */
    float mx, s;
    fl_warp_max_sumexp(zr, k, lane, &mx, &s);
    float lse = mx + logf(s);
    __syncwarp();
    if (lane == 0) loss[row] = lse - zy;
    for (int j = lane; j < k; j += FL_WARP)
        dr[j] = fl_xent_grad(expf(zr[j] - lse), j == yi ? 1.0f : 0.0f, scale);
}

/* p, z (rows, k): p = softmax(z) per row, normalised by the sum of the same
 * exponentials the CPU divides by. */
__global__ void fl_softmax_kernel(float *p, const float *z, int rows, int k) {
    int64_t row = fl_warp_row(rows);
    if (row < 0) return;
    int lane = threadIdx.x % FL_WARP;
    const float *zr = z + row * k;
    float *pr = p + row * k;
    float mx, s;
    fl_warp_max_sumexp(zr, k, lane, &mx, &s);
    /* p may alias z: every lane has read its columns before the sum above. */
    for (int j = lane; j < k; j += FL_WARP)
        pr[j] = expf(zr[j] - mx) / s;
}

/* X (rows, cols); out (rows). */
__global__ void fl_row_sqnorm_kernel(float *out, const float *X, int rows, int cols,
                                     int accumulate) {
    int64_t row = fl_warp_row(rows);
    if (row < 0) return;
    int lane = threadIdx.x % FL_WARP;
    const float *xr = X + row * cols;
    float s = 0.0f;
    for (int j = lane; j < cols; j += FL_WARP)
        s += xr[j] * xr[j];
    s = fl_warp_sum(s);
    if (lane == 0) out[row] = accumulate ? out[row] + s : s;
}

/* ----------------------------------------------------------------------------
 * kernel launchers */

static inline unsigned fl_row_grid(int rows) {
    return (unsigned)(((int64_t)rows + FL_ROWS_PER_BLOCK - 1) / FL_ROWS_PER_BLOCK);
}

static int fl_cuda_softmax_xent(fl_backend *be, float *d_loss, float *d_dz, const float *d_z,
                                const int32_t *d_y, int rows, int k, float scale) {
    fl_cuda *c = fl_cuda_of(be);
    if (rows < 0 || k < 1) return fl_cuda_einval(be, "softmax_xent: bad shape (%d, %d)", rows, k);
    if (rows == 0) return 0;
    fl_softmax_xent_kernel<<<fl_row_grid(rows), FL_CUDA_BLOCK, 0, c->stream>>>(d_loss, d_dz, d_z,
                                                                               d_y, rows, k, scale);
    fl_cuda_launched(be, "softmax_xent");
    return 0;
}

/* predict for k > 1. */
static int fl_cuda_predict_softmax(fl_backend *be, float *d_p, const float *d_z, int rows, int k) {
    fl_cuda *c = fl_cuda_of(be);
    if (rows == 0) return 0;
    fl_softmax_kernel<<<fl_row_grid(rows), FL_CUDA_BLOCK, 0, c->stream>>>(d_p, d_z, rows, k);
    fl_cuda_launched(be, "predict");
    return 0;
}

static int fl_cuda_row_sqnorm(fl_backend *be, float *d_out, const float *d_X, int rows, int cols,
                              int accumulate) {
    fl_cuda *c = fl_cuda_of(be);
    if (rows < 0 || cols < 0)
        return fl_cuda_einval(be, "row_sqnorm: negative shape (%d, %d)", rows, cols);
    if (rows == 0) return 0;
    /* cols == 0 still writes the rows (zero norms), as the CPU does. */
    fl_row_sqnorm_kernel<<<fl_row_grid(rows), FL_CUDA_BLOCK, 0, c->stream>>>(d_out, d_X, rows, cols,
                                                                             accumulate);
    fl_cuda_launched(be, "row_sqnorm");
    return 0;
}

#endif
