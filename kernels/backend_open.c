/* backend_open.c: picks a backend once (DESIGN.md §7): CUDA when asked for
 * or available, the CPU reference otherwise. Kept out of backend.c so that
 * only programs that call it link the CUDA backend. */
#include "kernels/backend.h"

#include "core/log.h"

int fl_backend_open(fl_backend **out, enum fl_device want, char err[FL_ERR_LEN]) {
    *out = NULL;
    if (want == FL_DEVICE_CPU) return fl_backend_cpu_open(out, err);
    char why[FL_ERR_LEN] = "";
    int rc = fl_backend_cuda_open(out, why);
    if (rc == 0) return 0;
    if (want == FL_DEVICE_CUDA) return fl_seterr(err, rc, "--device cuda: %s", why);
    fl_info("device auto: using the CPU backend (%s)", why);
    return fl_backend_cpu_open(out, err);
}
