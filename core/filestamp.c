/* filestamp.c: see filestamp.h. */
#include "core/filestamp.h"

#include <string.h>
#include <sys/stat.h>

int fl_file_stamp_get(fl_file_stamp *s, const char *path) {
    struct stat st;
    memset(s, 0, sizeof *s);
    if (stat(path, &st)) return -1;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->size = st.st_size;
    s->mtime = st.st_mtim;
    return 0;
}

int fl_file_stamp_same(const fl_file_stamp *a, const fl_file_stamp *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}
