/* fedtest.c: see fedtest.h. */
#include "fedtest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Read by the SIGALRM handler, hence volatile sig_atomic_t-sized slots. */
static volatile pid_t g_pids[FT_MAX_PROCS];

static void track(pid_t pid) {
    for (int i = 0; i < FT_MAX_PROCS; i++)
        if (!g_pids[i]) {
            g_pids[i] = pid;
            return;
        }
    /* More children than slots: kill it at once rather than lose track. */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fprintf(stderr, "fedtest: more than %d processes\n", FT_MAX_PROCS);
    abort();
}

static void untrack(pid_t pid) {
    for (int i = 0; i < FT_MAX_PROCS; i++)
        if (g_pids[i] == pid) g_pids[i] = 0;
}

pid_t ft_spawn(const char *log_path, char *const argv[]) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return -1;
    track(pid);
    return pid;
}

static int decode(int status) {
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int ft_wait(pid_t pid, int timeout_ms) {
    int64_t until = ft_now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            untrack(pid);
            return decode(status);
        }
        if (r < 0 && errno != EINTR) {
            untrack(pid);
            return -SIGKILL; /* not ours or already reaped */
        }
        if (ft_now_ms() >= until) return FT_TIMEOUT;
        ft_sleep_ms(10);
    }
}

int ft_alive(pid_t pid) {
    for (int i = 0; i < FT_MAX_PROCS; i++)
        if (g_pids[i] == pid) {
            /* WNOWAIT: look without reaping, so ft_wait still gets the status. */
            siginfo_t si;
            memset(&si, 0, sizeof si);
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0) return 0;
            return si.si_pid == 0;
        }
    return 0;
}

void ft_kill(pid_t pid) {
    if (pid <= 0) return;
    for (int i = 0; i < FT_MAX_PROCS; i++)
        if (g_pids[i] == pid) {
            kill(pid, SIGKILL);
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
            }
            g_pids[i] = 0;
        }
}

void ft_kill_all(void) {
    for (int i = 0; i < FT_MAX_PROCS; i++)
        if (g_pids[i]) ft_kill(g_pids[i]);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "fedtest: watchdog expired: killing every child and exiting\n";
    for (int i = 0; i < FT_MAX_PROCS; i++)
        if (g_pids[i]) kill(g_pids[i], SIGKILL);
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(1);
}

void ft_watchdog(unsigned seconds) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = seconds ? on_alarm : SIG_DFL;
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds);
}

int ft_wait_port(const char *path, pid_t pid, int timeout_ms) {
    int64_t until = ft_now_ms() + timeout_ms;
    while (ft_now_ms() < until) {
        FILE *f = fopen(path, "r");
        int port = -1;
        if (f) {
            if (fscanf(f, "%d", &port) != 1) port = -1;
            fclose(f);
        }
        if (port > 0) return port;
        if (!ft_alive(pid)) return -1;
        ft_sleep_ms(10);
    }
    return -1;
}

int ft_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (!bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &len))
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

void ft_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int64_t ft_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ft_mkdirs(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0700) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(buf, 0700) && errno != EEXIST ? -1 : 0;
}

int ft_write_file(const char *path, const char *fmt, ...) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    return fclose(f) ? -1 : 0;
}

char *ft_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0, got;
    char chunk[65536];
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (n + got + 1 > cap) {
            cap = (n + got + 1) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        memcpy(buf + n, chunk, got);
        n += got;
    }
    fclose(f);
    if (!buf && !(buf = malloc(1))) return NULL;
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int ft_split_csv(const char *src, const char *dir, int n_sites, int max_rows) {
    char *text = ft_read_file(src, NULL);
    if (!text || n_sites < 1 || n_sites > 32) {
        free(text);
        return -1;
    }
    FILE *out[32] = {0};
    int count[32] = {0}, rc = 0;
    char *line = text, *nl = strchr(line, '\n');
    if (!nl) rc = -1;
    for (int s = 0; s < n_sites && !rc; s++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/site-%d.csv", dir, s + 1);
        if (!(out[s] = fopen(path, "w")) || fwrite(line, 1, (size_t)(nl - line + 1), out[s]) == 0)
            rc = -1;
    }
    long row = 0;
    for (line = nl ? nl + 1 : NULL; line && *line && !rc; line = nl ? nl + 1 : NULL, row++) {
        nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n == 0) continue;
        int s = (int)(row % n_sites);
        if (max_rows > 0 && count[s] >= max_rows) continue;
        count[s]++;
        if (fwrite(line, 1, n, out[s]) != n || fputc('\n', out[s]) == EOF) rc = -1;
    }
    for (int s = 0; s < n_sites; s++)
        if (out[s] && fclose(out[s])) rc = -1;
    free(text);
    return rc;
}

int ft_schema_with_levels(const char *src, const char *dst, const char *levels) {
    char *text = ft_read_file(src, NULL);
    if (!text) return -1;
    int rc = ft_write_file(dst, "%s\n[levels]\n%s", text, levels);
    free(text);
    return rc;
}

char *ft_sanitizer_report(const char *path) {
    static const char *const marks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:", "WARNING: ThreadSanitizer", NULL};
    char *text = ft_read_file(path, NULL);
    if (!text) return NULL;
    const char *hit = NULL;
    for (int i = 0; marks[i]; i++) {
        const char *p = strstr(text, marks[i]);
        if (p && (!hit || p < hit)) hit = p;
    }
    char *out = NULL;
    if (hit) {
        const char *start = hit;
        while (start > text && start[-1] != '\n')
            start--;
        size_t n = strlen(start) < 2000 ? strlen(start) : 2000;
        out = malloc(n + 1);
        if (out) {
            memcpy(out, start, n);
            out[n] = 0;
        }
    }
    free(text);
    return out;
}
