/* log.c: see log.h. One fprintf per line so that concurrent processes
 * writing to one terminal interleave whole lines. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_level = -1;
static char g_tag[64] = "cohort";

static int level_from_env(void) {
    const char *e = getenv("COHORT_LOG");
    if (!e) return FL_LOG_INFO;
    if (!strcmp(e, "debug")) return FL_LOG_DEBUG;
    if (!strcmp(e, "warn")) return FL_LOG_WARN;
    if (!strcmp(e, "error")) return FL_LOG_ERROR;
    if (!strcmp(e, "off")) return FL_LOG_OFF;
    return FL_LOG_INFO;
}

void fl_log_set_level(enum fl_log_level level) {
    g_level = (int)level;
}

enum fl_log_level fl_log_get_level(void) {
    if (g_level < 0) g_level = level_from_env();
    return (enum fl_log_level)g_level;
}

void fl_log_set_tag(const char *tag) {
    snprintf(g_tag, sizeof g_tag, "%s", tag ? tag : "");
}

void fl_log(enum fl_log_level level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    if ((int)level < (int)fl_log_get_level() || level >= FL_LOG_OFF) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: %s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            g_tag, names[level], msg);
}
