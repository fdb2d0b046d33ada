/* backend.c: picks a backend once (DESIGN.md §7). */
#include "kernels/backend.h"

#include <string.h>

#include "core/log.h"

int fl_device_parse(enum fl_device *out, const char *s) {
    if (!s) return FL_EINVAL;
    if (!strcmp(s, "auto"))
        *out = FL_DEVICE_AUTO;
    else if (!strcmp(s, "cpu"))
        *out = FL_DEVICE_CPU;
    else if (!strcmp(s, "cuda"))
        *out = FL_DEVICE_CUDA;
    else
        return FL_EINVAL;
    return FL_OK;
}

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

void fl_backend_close(fl_backend *be) {
    if (be) be->ops->destroy(be);
}

const char *fl_backend_name(const fl_backend *be) {
    return be ? be->ops->name : "none";
}

const char *fl_backend_error(const fl_backend *be) {
    return be->last_error;
}
