/* filestamp.h: has a file changed? Its device, inode, size and modification
 * time, compared. Files Cohort rewrites (the CRL: `cohort pki revoke|crl`)
 * are replaced by rename, so a new version always has a new inode. */
#ifndef FL_FILESTAMP_H
#define FL_FILESTAMP_H

#include <sys/types.h>
#include <time.h>

typedef struct fl_file_stamp {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} fl_file_stamp;

/* 0, or -1 when path cannot be stat'ed (*s is then zeroed). */
int fl_file_stamp_get(fl_file_stamp *s, const char *path);
/* 1 when a and b name the same version of a file. */
int fl_file_stamp_same(const fl_file_stamp *a, const fl_file_stamp *b);

#endif
