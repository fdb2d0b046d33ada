/* testutil.c: see testutil.h. */
#include "testutil.h"

#include "fedtest.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char g_path[4096];
static char g_tmpdir[256];

const char *fl_test_data(const char *name) {
    snprintf(g_path, sizeof g_path, "%s/%s", COHORT_DATA_DIR, name);
    return g_path;
}

const char *fl_test_fixture(const char *name) {
    snprintf(g_path, sizeof g_path, "%s/%s", COHORT_TEST_DATA_DIR, name);
    return g_path;
}

const char *fl_test_bin(const char *name) {
    snprintf(g_path, sizeof g_path, "%s/%s", COHORT_BIN_DIR, name);
    return g_path;
}

static void rm_tmpdir(void) {
    if (!g_tmpdir[0]) return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmpdir);
}

const char *fl_test_tmpdir(void) {
    if (!g_tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/cohort-test-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(g_tmpdir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(rm_tmpdir);
    }
    return g_tmpdir;
}

char *fl_test_slurp(const char *path, size_t *len) {
    size_t n = 0;
    char *b = ft_read_file(path, &n);
    if (!b) fail_msg("%s: cannot read", path);
    if (len) *len = n;
    return b;
}

char *fl_test_write_tmp(const char *name, const char *text) {
    size_t n = strlen(fl_test_tmpdir()) + strlen(name) + 2;
    char *path = malloc(n);
    if (!path) abort();
    snprintf(path, n, "%s/%s", fl_test_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        abort();
    }
    fwrite(text, 1, strlen(text), f);
    fclose(f);
    return path;
}

static int append(char **buf, size_t *len, size_t *cap, const char *data, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t nc = (*len + n + 1) * 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

int fl_test_run(fl_proc_result *r, char *const argv[]) {
    memset(r, 0, sizeof *r);
    int po[2], pe[2];
    if (pipe(po) || pipe(pe)) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawn_file_actions_addclose(&fa, po[0]);
    posix_spawn_file_actions_addclose(&fa, pe[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        close(po[0]);
        close(pe[0]);
        return -1;
    }
    size_t lo = 0, co = 0, le = 0, ce = 0;
    append(&r->out, &lo, &co, "", 0);
    append(&r->err, &le, &ce, "", 0);
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    char buf[65536];
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            } else if (i == 0) {
                append(&r->out, &lo, &co, buf, (size_t)n);
            } else {
                append(&r->err, &le, &ce, buf, (size_t)n);
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    return 0;
}

void fl_proc_result_free(fl_proc_result *r) {
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

fl_proc_result fl_test_cohort(const char *sub, ...) {
    char *argv[64], bin[4096];
    int n = 0;
    snprintf(bin, sizeof bin, "%s", fl_test_bin("cohort"));
    argv[n++] = bin;
    argv[n++] = (char *)sub;
    va_list ap;
    va_start(ap, sub);
    for (const char *a = va_arg(ap, const char *); a && n < 63; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    return r;
}
