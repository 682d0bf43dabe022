/* raftd logging: one line per event, in etcd's capnslog layout
 * ("2026-11-21 05:21:22.599209 I | pkg: message"), written with a single
 * fwrite so lines from several members in one process never interleave. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "raftd.h"

void raftd_log_init(struct raftd_log *log, FILE *out,
                    enum raftd_log_level level)
{
    log->out = out;
    log->level = level;
}

int raftd_log_level_parse(const char *s, enum raftd_log_level *out)
{
    static const char *const names[] = {"debug", "info",  "warn",
                                        "error", "panic", "fatal"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum raftd_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void raftd_logf(const struct raftd_log *log, enum raftd_log_level level,
                const char *pkg, const char *fmt, ...)
{
    static const char letters[] = "DIWEPC";
    char line[1024];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    int n, m;

    if (log == NULL || log->out == NULL || level < log->level)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = snprintf(line, sizeof(line),
                 "%04d-%02d-%02d %02d:%02d:%02d.%06ld %c | %s: ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, (long)tv.tv_usec, letters[level],
                 pkg);
    if (n < 0)
        return;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2; /* truncated: keep one line per event */
    /* Keep one event on one line even if a value carried a newline. */
    for (int i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, log->out);
    fflush(log->out);
}
