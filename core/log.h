/* log.h: leveled logging to stderr. stdout is reserved for a command's
 * result (--json), so every diagnostic goes here. Secrets are never passed to
 * these functions. */
#ifndef FL_LOG_H
#define FL_LOG_H

enum fl_log_level { FL_LOG_DEBUG = 0, FL_LOG_INFO, FL_LOG_WARN, FL_LOG_ERROR, FL_LOG_OFF };

/* Process-wide threshold; messages below it are dropped. Default FL_LOG_INFO,
 * or the value of the COHORT_LOG environment variable (debug|info|warn|error|off). */
void fl_log_set_level(enum fl_log_level level);
enum fl_log_level fl_log_get_level(void);
/* A short tag printed on each line, e.g. the program or site name. */
void fl_log_set_tag(const char *tag);

void fl_log(enum fl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define fl_debug(...) fl_log(FL_LOG_DEBUG, __VA_ARGS__)
#define fl_info(...) fl_log(FL_LOG_INFO, __VA_ARGS__)
#define fl_warn(...) fl_log(FL_LOG_WARN, __VA_ARGS__)
#define fl_error(...) fl_log(FL_LOG_ERROR, __VA_ARGS__)

#endif
