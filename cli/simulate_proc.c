/* simulate_proc.c: the child processes of `cohort simulate` (docs/simulate.md,
 * "Processes"). Each child is started with posix_spawn (the aggregator and
 * clients initialise gRPC, which does not survive fork, and the simulator
 * itself never initialises it), leads a process group of its own so a
 * signal reaches anything it starts, and writes to its own log file so
 * stdout stays the command's result. A signal to the simulator only sets a
 * flag: the loops that wait on children poll it and take every child down
 * on the way out. */
#include "cli/simulate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int64_t fl_sim_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fl_sim_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short: the caller polls the flag */
}

/* ============================ signals ==================================== */

static volatile sig_atomic_t g_signal;
static struct sigaction g_old[3];
static const int SIGNALS[3] = {SIGINT, SIGTERM, SIGHUP};

static void on_signal(int sig) {
    g_signal = sig;
}

void fl_sim_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    g_signal = 0;
    for (int i = 0; i < 3; i++)
        sigaction(SIGNALS[i], &sa, &g_old[i]);
}

void fl_sim_signals_restore(void) {
    for (int i = 0; i < 3; i++)
        sigaction(SIGNALS[i], &g_old[i], NULL);
}

int fl_sim_interrupted(void) {
    return (int)g_signal;
}

/* ============================ children =================================== */

int fl_sim_spawn(fl_sim_proc *p, const char *exe, char *const argv[], char err[FL_ERR_LEN]) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int rc = FL_OK, have_fa = 0, have_at = 0, e;
    p->running = 0;
    p->pid = 0;
    if ((e = posix_spawn_file_actions_init(&fa))) goto fail;
    have_fa = 1;
    if ((e = posix_spawnattr_init(&at))) goto fail;
    have_at = 1;
    if ((e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) ||
        (e = posix_spawn_file_actions_addopen(&fa, 1, p->log, O_WRONLY | O_CREAT | O_TRUNC,
                                              0600)) ||
        (e = posix_spawn_file_actions_adddup2(&fa, 1, 2)))
        goto fail;
    /* Its own process group (so kill(-pid) reaches all of it and a Ctrl-C at
     * the terminal reaches only the simulator, which then stops the children
     * in order), an empty signal mask, and default dispositions for the
     * signals the simulator catches. */
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    for (int i = 0; i < 3; i++)
        sigaddset(&dfl, SIGNALS[i]);
    sigaddset(&dfl, SIGPIPE);
    if ((e = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                               POSIX_SPAWN_SETSIGDEF)) ||
        (e = posix_spawnattr_setpgroup(&at, 0)) || (e = posix_spawnattr_setsigmask(&at, &none)) ||
        (e = posix_spawnattr_setsigdefault(&at, &dfl)))
        goto fail;
    pid_t pid;
    if ((e = posix_spawn(&pid, exe, &fa, &at, argv, environ))) goto fail;
    p->pid = pid;
    p->running = 1;
    p->status = 0;
    p->killed = 0;
    goto cleanup;
fail:
    rc = fl_seterr(err, FL_EIO, "%s: cannot start %s: %s", p->name, exe, strerror(e));
cleanup:
    if (have_fa) posix_spawn_file_actions_destroy(&fa);
    if (have_at) posix_spawnattr_destroy(&at);
    return rc;
}

int fl_sim_reap(fl_sim_proc *p) {
    if (!p->running) return p->pid != 0;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid || (r < 0 && errno == ECHILD)) {
        p->status = r == p->pid ? st : 0;
        p->running = 0;
        return 1;
    }
    return 0;
}

void fl_sim_signal(fl_sim_proc *p, int sig) {
    if (p->running) {
        /* the group, then the leader, in case it left its group */
        kill(-p->pid, sig);
        kill(p->pid, sig);
    }
}

static int any_running(fl_sim_proc *procs, int n) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!fl_sim_reap(&procs[i]) && procs[i].running) k++;
    return k;
}

/* Waits up to ms for procs to exit; a signal to the simulator cuts a grace
 * period short (cut = 1), never the wait after SIGTERM. */
static void wait_until(fl_sim_proc *procs, int n, int64_t ms, int cut) {
    int64_t end = fl_sim_now_ms() + ms;
    while (any_running(procs, n) && fl_sim_now_ms() < end && !(cut && g_signal))
        fl_sim_sleep_ms(20);
}

int fl_sim_stop_all(fl_sim_proc *procs, int n, int64_t grace_ms, int64_t term_ms) {
    if (grace_ms > 0) wait_until(procs, n, grace_ms, 1);
    int signalled = 0;
    for (int i = 0; i < n; i++)
        if (procs[i].running) {
            fl_sim_signal(&procs[i], SIGTERM);
            signalled++;
        }
    if (signalled) wait_until(procs, n, term_ms, 0);
    for (int i = 0; i < n; i++)
        if (procs[i].running) {
            fl_sim_signal(&procs[i], SIGKILL);
            /* SIGKILL cannot be ignored: this wait ends */
            int st;
            if (waitpid(procs[i].pid, &st, 0) == procs[i].pid) procs[i].status = st;
            procs[i].running = 0;
        }
    return signalled;
}

int fl_sim_exit_code(const fl_sim_proc *p) {
    if (WIFEXITED(p->status)) return WEXITSTATUS(p->status);
    if (WIFSIGNALED(p->status)) return -WTERMSIG(p->status);
    return -1;
}

const char *fl_sim_status_text(char *buf, size_t len, const fl_sim_proc *p) {
    if (p->running)
        snprintf(buf, len, "running");
    else if (!p->pid)
        snprintf(buf, len, "not started");
    else if (WIFEXITED(p->status))
        snprintf(buf, len, "exit %d", WEXITSTATUS(p->status));
    else if (WIFSIGNALED(p->status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(p->status));
    else
        snprintf(buf, len, "status 0x%x", p->status);
    return buf;
}

void fl_sim_log_tail(FILE *out, const fl_sim_proc *p, int lines) {
    FILE *f = fopen(p->log, "r");
    if (!f) return;
    /* Read the last 16 KiB at most: enough for a few dozen log lines. */
    char buf[16384];
    long start = 0;
    if (!fseek(f, 0, SEEK_END)) {
        long size = ftell(f);
        start = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    }
    fseek(f, start, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    int seen = 0;
    size_t at = n;
    if (at && buf[at - 1] == '\n') at--;
    while (at > 0) {
        if (buf[at - 1] == '\n' && ++seen == lines) break;
        at--;
    }
    fprintf(out, "---- last lines of %s ----\n", p->log);
    for (char *line = buf + at; *line;) {
        char *nl = strchr(line, '\n');
        int len = nl ? (int)(nl - line) : (int)strlen(line);
        fprintf(out, "  %s | %.*s\n", p->name, len, line);
        line += len + (nl ? 1 : 0);
    }
}

/* ============================ files ====================================== */

int fl_sim_rmtree(const char *path, char err[FL_ERR_LEN]) {
    struct stat st;
    if (lstat(path, &st))
        return errno == ENOENT ? FL_OK : fl_seterr(err, FL_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path))
            return fl_seterr(err, FL_EIO, "%s: cannot remove: %s", path, strerror(errno));
        return FL_OK;
    }
    DIR *d = opendir(path);
    if (!d) return fl_seterr(err, FL_EIO, "%s: %s", path, strerror(errno));
    int rc = FL_OK;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        size_t len = strlen(path) + strlen(de->d_name) + 2;
        char *child = malloc(len);
        if (!child) {
            rc = fl_seterr(err, FL_ENOMEM, "out of memory");
            break;
        }
        snprintf(child, len, "%s/%s", path, de->d_name);
        rc = fl_sim_rmtree(child, err);
        free(child);
    }
    closedir(d);
    if (!rc && rmdir(path))
        rc = fl_seterr(err, FL_EIO, "%s: cannot remove: %s", path, strerror(errno));
    return rc;
}
