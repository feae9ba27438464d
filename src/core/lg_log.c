#include "core/lg_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

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

  /* The line is built on the stack, not the heap: an out-of-memory error
   * is logged too (a heap line would be dropped, or cut). A component
   * name is cut to 256 bytes; every byte may take 6 escaped. */
  size_t clen = strlen(component);
  if (clen > 256)
    clen = 256;
  char line[64 + LG_TIME_RFC3339_MAX + 6 * 256 + 6 * sizeof msg];
  char *p = line;
#define PUT(s, n) (memcpy(p, (s), (n)), p += (n))
  PUT("{\"time\":\"", 9);
  PUT(tbuf, tlen);
  PUT("\",\"level\":\"", 11);
  PUT(level_names[level], strlen(level_names[level]));
  PUT("\",\"component\":", 14);
  p = lg_json_put_string(p, component, clen);
  PUT(",\"msg\":", 7);
  p = lg_json_put_string(p, msg, mlen);
  PUT("}\n", 2);
#undef PUT
  ssize_t w = write(STDERR_FILENO, line, (size_t)(p - line));
  (void)w;
}
