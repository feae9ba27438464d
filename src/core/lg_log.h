/*
 * lg_log.h - lugger's own log: one JSON object per line on stderr.
 *
 *   {"time":"2024-05-01T12:00:00.123456789Z","level":"error",
 *    "component":"source","msg":"/var/log/x.log: read: Permission denied"}
 *
 * Safe to call from any thread: each line is written with one write(2).
 * Messages name what they are about (file and offset, script and line).
 */
#ifndef LG_LOG_H
#define LG_LOG_H

typedef enum {
  LG_LOG_DEBUG = 0,
  LG_LOG_INFO = 1,
  LG_LOG_WARN = 2,
  LG_LOG_ERROR = 3,
} lg_log_level_t;

/* Lines below this level are not written. Default LG_LOG_INFO; the
 * environment variable LUGGER_LOG_LEVEL (debug|info|warn|error, any case;
 * "warning" too) sets it, and another value is logged as a warning. */
void lg_log_set_level(lg_log_level_t level);
lg_log_level_t lg_log_get_level(void);

/* Writes one log line. `component` is a short area name ("source",
 * "output.file", "pipeline.web"); `fmt` is printf-style. */
void lg_log(lg_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define lg_log_debug(c, ...) lg_log(LG_LOG_DEBUG, c, __VA_ARGS__)
#define lg_log_info(c, ...) lg_log(LG_LOG_INFO, c, __VA_ARGS__)
#define lg_log_warn(c, ...) lg_log(LG_LOG_WARN, c, __VA_ARGS__)
#define lg_log_error(c, ...) lg_log(LG_LOG_ERROR, c, __VA_ARGS__)

#endif
