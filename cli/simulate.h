/* simulate.h: the parts of `cohort simulate` (DESIGN.md §4 "Federation config
 * for cohort simulate"; reference in docs/simulate.md): the federation.ini
 * reader and the aggregator.ini / client.ini it turns into
 * (simulate_config.c), and the child processes a simulated federation runs
 * (simulate_proc.c). cmd_simulate.c strings them together. */
#ifndef FL_SIMULATE_H
#define FL_SIMULATE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "aggregator/config.h"
#include "core/ini.h"
#include "core/model.h"

#define FL_SIM_MAX_SITES 256 /* the aggregator's allow-list limit (FL_MAX_SITES) */
#define FL_SIM_MAX_FAULTS 16
#define FL_SIM_STAGE_LEN 24
#define FL_SIM_SEED_MAX ((1ULL << 62) - 1 - FL_SIM_MAX_SITES)

/* ============================ federation.ini ============================ */

/* One [faults] kill_site entry: SIGKILL site `site` when the aggregator's
 * events show `stage` of `round` beginning. */
typedef struct fl_sim_fault {
    int site;  /* 1-based: site-<site> */
    int round; /* 1-based; the statistics stage runs before round 1 */
    char stage[FL_SIM_STAGE_LEN];
    int exists; /* the aggregator runs this stage today (secure-aggregation stages: not yet) */
    /* filled while the federation runs */
    int fired;
    pid_t pid;
} fl_sim_fault;

typedef struct fl_sim_config {
    char path[FL_PATH_LEN]; /* federation.ini as given, for messages */
    fl_ini ini;             /* kept: [privacy] and [secagg] are written through */
    /* [federation] */
    int sites, rounds, min_sites;
    int partition_line;
    char partition[256];
    uint64_t seed;
    char strategy[32];
    double fraction;
    long join_timeout;
    double stage_timeout;
    char device[16];
    /* [data] */
    char csv[FL_PATH_LEN], schema[FL_PATH_LEN]; /* resolved against path's directory */
    double test_fraction, val_fraction;
    /* [model] */
    char model[FL_SPEC_LEN];
    /* [train] */
    int local_epochs, batch_size, optimizer;
    double lr, momentum, weight_decay;
    /* [privacy], [secagg]: accepted and checked, not yet run (docs/simulate.md) */
    char privacy_mode[16]; /* none | record | site */
    int secagg_enabled;
    /* [faults] */
    fl_sim_fault faults[FL_SIM_MAX_FAULTS];
    int n_faults;
} fl_sim_config;

/* Loads and checks path strictly: unknown sections and keys, values out of
 * range, bad partition / strategy / model / fault syntax and a csv or schema
 * that cannot be read are FL_EINVAL (or FL_EPARSE / FL_EIO from the reader)
 * with "path:line: ..." in err. Caller frees with fl_sim_config_free. */
int fl_sim_config_load(fl_sim_config *c, const char *path, char err[FL_ERR_LEN]);
void fl_sim_config_free(fl_sim_config *c);

/* "path:line: " for the line of section/key in federation.ini (or "path: "
 * when the key is absent), into buf. For errors found after loading (an
 * unknown partition column, too few distinct values). */
const char *fl_sim_where(char *buf, size_t len, const fl_sim_config *c, const char *section,
                         const char *key);

/* Writes the aggregator's config (keys in docs/simulate.md, "Work
 * directory"). Paths in it are relative to its own directory. */
int fl_sim_write_aggregator_ini(const fl_sim_config *c, const char *path, char err[FL_ERR_LEN]);
/* Writes site `site`'s client.ini for an aggregator listening on port. */
int fl_sim_write_client_ini(const fl_sim_config *c, const char *path, int site, int port,
                            char err[FL_ERR_LEN]);

/* ============================ processes ================================= */

/* A child program with its output in a log file. */
typedef struct fl_sim_proc {
    char name[64];         /* "aggregator", "site-3" */
    char log[FL_PATH_LEN]; /* its stdout and stderr */
    pid_t pid;             /* 0 before the spawn */
    int running;           /* spawned and not yet reaped */
    int status;            /* waitpid status once reaped */
    int killed;            /* killed on purpose by a [faults] entry */
} fl_sim_proc;

/* Starts exe with argv (argv[0] included, NULL-terminated) via posix_spawn,
 * in a process group of its own, stdin from /dev/null, stdout and stderr to
 * p->log. posix_spawn and never fork: the children are gRPC programs, and
 * the parent must not carry anything across a fork (DESIGN.md §4). */
int fl_sim_spawn(fl_sim_proc *p, const char *exe, char *const argv[], char err[FL_ERR_LEN]);
/* Reaps p without blocking: 1 once it has exited (status in p->status). */
int fl_sim_reap(fl_sim_proc *p);
/* Sends sig to p's process group while it runs (never after the reap, when
 * the pid may belong to someone else). */
void fl_sim_signal(fl_sim_proc *p, int sig);
/* Waits up to grace_ms (cut short by a signal to the simulator) for the
 * running ones among procs to exit by themselves, then SIGTERMs them, waits
 * up to term_ms, then SIGKILLs and reaps whatever is left. Returns how many
 * needed a signal. */
int fl_sim_stop_all(fl_sim_proc *procs, int n, int64_t grace_ms, int64_t term_ms);
/* "exit 0", "exit 1", "killed by signal 9" into buf. */
const char *fl_sim_status_text(char *buf, size_t len, const fl_sim_proc *p);
/* The exit code, or -signal. */
int fl_sim_exit_code(const fl_sim_proc *p);
/* Copies the last `lines` lines of p's log to out, each prefixed. */
void fl_sim_log_tail(FILE *out, const fl_sim_proc *p, int lines);

/* SIGINT, SIGTERM and SIGHUP set a flag that the simulator's loops poll,
 * so every path still stops the children and cleans up. */
void fl_sim_signals_install(void);
void fl_sim_signals_restore(void);
int fl_sim_interrupted(void); /* the signal number, or 0 */

int64_t fl_sim_now_ms(void); /* CLOCK_MONOTONIC */
void fl_sim_sleep_ms(int ms);

/* rm -r of a directory tree (no symlinks followed). 0 or FL_EIO. */
int fl_sim_rmtree(const char *path, char err[FL_ERR_LEN]);

#endif
