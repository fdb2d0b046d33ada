/* backend_cuda_stub.c: stands in for the CUDA backend in builds without
 * nvcc, so that --device cuda fails with a clear reason. */
#include "kernels/backend.h"

int fl_backend_cuda_open(fl_backend **out, char err[FL_ERR_LEN]) {
    *out = NULL;
    return fl_seterr(err, FL_ENOTSUP,
                     "this build has no CUDA backend (nvcc was not found at "
                     "configure time; see COHORT_CUDA)");
}

int fl_backend_cuda_built(void) {
    return 0;
}
