/* backend.c: what every backend shares (DESIGN.md §7). Picking one is in
 * backend_open.c, apart, so that a program that only ever opens the CPU
 * backend (the aggregator) does not link the CUDA one and its libraries. */
#include "kernels/backend.h"

#include <string.h>

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

void fl_backend_close(fl_backend *be) {
    if (be) be->ops->destroy(be);
}

const char *fl_backend_name(const fl_backend *be) {
    return be ? be->ops->name : "none";
}

const char *fl_backend_error(const fl_backend *be) {
    return be->last_error;
}
