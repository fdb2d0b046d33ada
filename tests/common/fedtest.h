/* fedtest.h: helpers for integration tests that run a real federation
 * (DESIGN.md §13): child processes started with posix_spawn (never a bare
 * fork: gRPC does not survive one), each recorded so that a test can kill
 * every one of them on any path, waits with a limit, the aggregator's port
 * file, site CSVs and schema cut from the bundled credit data, and a scan of
 * the processes' logs for sanitizer reports.
 *
 * Timeouts here only bound how long a broken run can hang; no test asserts a
 * wall-clock time. Everything is single-threaded test code. */
#ifndef FL_FEDTEST_H
#define FL_FEDTEST_H

#include <stdint.h>
#include <sys/types.h>

#define FT_MAX_PROCS 64
/* ft_wait's answer when the process is still running at the limit. */
#define FT_TIMEOUT (-1000)

/* Starts argv[0] (a path) with argv, stdout and stderr appended to log_path
 * (created if absent). Records the pid for ft_kill_all. Returns the pid, or
 * -1 if it could not be started. */
pid_t ft_spawn(const char *log_path, char *const argv[]);

/* Waits up to timeout_ms for pid to exit and reaps it: its exit code, -signal
 * if a signal killed it, or FT_TIMEOUT (the process is left running). */
int ft_wait(pid_t pid, int timeout_ms);

/* 1 while pid runs (not yet reaped and not a zombie we could reap). */
int ft_alive(pid_t pid);

/* SIGKILL, then reap. Safe on a pid that already exited. */
void ft_kill(pid_t pid);

/* Kills (SIGKILL) and reaps every process started by ft_spawn still running. */
void ft_kill_all(void);

/* Arms SIGALRM: if the test binary is still running after `seconds`, every
 * recorded process is killed and the binary exits 1 (a hang never leaves
 * processes behind). 0 disarms. */
void ft_watchdog(unsigned seconds);

/* Waits for path (an aggregator's port_file) to hold a port; gives up when pid
 * exits or after timeout_ms. Returns the port or -1. */
int ft_wait_port(const char *path, pid_t pid, int timeout_ms);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int ft_free_port(void);

void ft_sleep_ms(int ms);
int64_t ft_now_ms(void);

/* mkdir -p. 0 or -1. */
int ft_mkdirs(const char *path);

/* Writes a whole file (printf format). 0 or -1. */
int ft_write_file(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The file's contents, NUL-terminated, malloc'd; NULL if unreadable. */
char *ft_read_file(const char *path, size_t *len);

/* Splits the CSV at src (header line, then one row per line, no quoted line
 * breaks) into dir/site-1.csv .. dir/site-<n>.csv, row i going to site
 * i % n + 1; with max_rows > 0 each site gets at most max_rows rows. 0 or -1. */
int ft_split_csv(const char *src, const char *dir, int n_sites, int max_rows);

/* Copies the schema at src to dst and appends a [levels] section (text). */
int ft_schema_with_levels(const char *src, const char *dst, const char *levels);

/* The first sanitizer report (AddressSanitizer, LeakSanitizer,
 * UndefinedBehaviorSanitizer "runtime error:") in the file at path, as a
 * malloc'd excerpt, or NULL when there is none. */
char *ft_sanitizer_report(const char *path);

#endif
