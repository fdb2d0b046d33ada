/* status.c: text for the FL_E* codes of status.h. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>

const char *fl_strerror(int code) {
    switch (code) {
    case FL_OK:
        return "success";
    case FL_EINVAL:
        return "invalid argument or input";
    case FL_ENOMEM:
        return "out of memory";
    case FL_EIO:
        return "input/output error";
    case FL_EPROTO:
        return "protocol error";
    case FL_EAUTH:
        return "authentication refused";
    case FL_EBUDGET:
        return "privacy budget exceeded";
    case FL_ETHRESHOLD:
        return "below threshold";
    case FL_EPARSE:
        return "malformed input";
    case FL_ENOTSUP:
        return "not supported";
    case FL_EDEVICE:
        return "accelerator error";
    case FL_ESTATE:
        return "invalid state";
    case FL_ECRYPTO:
        return "cryptographic check failed";
    case FL_ETIMEOUT:
        return "deadline exceeded";
    case FL_ENUMERIC:
        return "non-finite value";
    default:
        return "unknown error";
    }
}

int fl_exit_code(int code) {
    if (code == FL_OK) return 0;
    if (code == FL_EINVAL || code == FL_EPARSE) return 2;
    return 1;
}

int fl_seterr(char *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, FL_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return code;
}
