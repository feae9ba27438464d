#include "core/lg_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "core/lg_time.h"

static lg_log_level_t min_level = LG_LOG_INFO;
static int level_from_env_done;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void lg_log_set_level(lg_log_level_t level) {
  min_level = level;
  level_from_env_done = 1;
}

lg_log_level_t lg_log_get_level(void) {
  if (!level_from_env_done) {
    level_from_env_done = 1;
    const char *e = getenv("LUGGER_LOG_LEVEL");
    int found = e == NULL || e[0] == '\0';
    for (int i = 0; !found && i < 4; i++)
      if (strcasecmp(e, level_names[i]) == 0) {
        min_level = (lg_log_level_t)i;
        found = 1;
      }
    if (!found && strcasecmp(e, "warning") == 0) {
      min_level = LG_LOG_WARN;
      found = 1;
    }
    /* A value that is no level used to be ignored without a word: say it
     * (the flag is set, so this call does not come back here). */
    if (!found)
      lg_log(LG_LOG_WARN, "log",
             "LUGGER_LOG_LEVEL=%s is not a level (debug, info, warn, "
             "error); logging at info",
             e);
  }
  return min_level;
}

void lg_log(lg_log_level_t level, const char *component, const char *fmt, ...) {
  if (level < lg_log_get_level())
    return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  size_t mlen = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;

  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  char tbuf[LG_TIME_RFC3339_MAX];
  size_t tlen = lg_time_format_rfc3339(
      (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, tbuf);

  lg_buf_t b = LG_BUF_INIT;
  lg_buf_append(&b, "{\"time\":\"", 9);
  lg_buf_append(&b, tbuf, tlen);
  lg_buf_appendf(&b, "\",\"level\":\"%s\",\"component\":", level_names[level]);
  lg_json_append_string(&b, component, strlen(component));
  lg_buf_append(&b, ",\"msg\":", 7);
  lg_json_append_string(&b, msg, mlen);
  lg_buf_append(&b, "}\n", 2);
  if (b.data != NULL) {
    ssize_t w = write(STDERR_FILENO, b.data, b.len);
    (void)w;
  }
  lg_buf_free(&b);
}
