/* status.h: the error codes every Cohort function returns (DESIGN.md §12).
 *
 * Functions return 0 on success and a negative FL_E* code on failure. Where a
 * caller needs the human-readable detail (which file, line, field, and what
 * was expected), the function takes a `char err[FL_ERR_LEN]` buffer, filled on
 * failure only. Library code never exits; programs map FL_EINVAL and
 * FL_EPARSE to exit code 2 (bad usage or input) and everything else to 1. */
#ifndef FL_STATUS_H
#define FL_STATUS_H

#include <stddef.h>

#define FL_OK 0
#define FL_EINVAL (-1)     /* bad argument, bad input, bad configuration */
#define FL_ENOMEM (-2)     /* allocation failed */
#define FL_EIO (-3)        /* file or socket I/O failed */
#define FL_EPROTO (-4)     /* peer broke the protocol */
#define FL_EAUTH (-5)      /* authentication or authorisation refused */
#define FL_EBUDGET (-6)    /* privacy budget would be exceeded */
#define FL_ETHRESHOLD (-7) /* too few participants to continue */
#define FL_EPARSE (-8)     /* malformed file content (CSV, INI, IDX) */
#define FL_ENOTSUP (-9)    /* not supported in this build or on this machine */
#define FL_EDEVICE (-10)   /* accelerator error */
#define FL_ESTATE (-11)    /* operation not valid in the current state */
#define FL_ECRYPTO (-12)   /* a cryptographic check failed */
#define FL_ETIMEOUT (-13)  /* deadline passed */
#define FL_ENUMERIC (-14)  /* non-finite value where a finite one was required */

#define FL_ERR_LEN 512

/* The short, static description of an FL_E* code. Never NULL. */
const char *fl_strerror(int code);

/* The process exit code for a status: 0 for FL_OK, 2 for bad input or usage
 * (FL_EINVAL, FL_EPARSE), 1 for any other failure. */
int fl_exit_code(int code);

/* snprintf into err (if not NULL, FL_ERR_LEN bytes) and return code. Lets a
 * failing function say what went wrong in one line:
 *     return fl_seterr(err, FL_EINVAL, "%s:%d: expected ...", path, line); */
int fl_seterr(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
