/*
 * lg_admin_http.h - the operations endpoint (settings.http): Prometheus
 * metrics, liveness and readiness, on one HTTP port (DESIGN.md, "Operations").
 *
 *   GET /metrics  200, every lg_metrics series in the Prometheus text
 *                 exposition format 0.0.4
 *   GET /healthz  200 "ok\n", or 503 with one "key: reason" line per
 *                 problem set with lg_admin_http_set_unhealthy (a script thread
 *                 that is stuck for good: only a restart recovers)
 *   GET /readyz   200 "ready\n", or 503 with one "key: reason" line per
 *                 reason set with lg_admin_http_set_unready or
 *                 lg_admin_http_set_unhealthy (not healthy is never ready), and
 *                 a "reload: ..." line while the last reloads failed
 *                 (lg_reload_status)
 *
 * The server is libmicrohttpd with its own thread; handlers only read the
 * metric registry and the reason table, never engine state.
 *
 * The reason table is process-wide and works whether or not the server
 * runs, so any module reports problems without knowing about HTTP:
 *
 *   lg_admin_http_set_unready("reload", "pipelines.web: nginx.lua:3: ...");
 *   lg_admin_http_set_unready("reload", NULL);   // fixed: ready again
 */
#ifndef LG_HTTP_H
#define LG_HTTP_H

#include <stddef.h>

typedef struct lg_http lg_admin_http_t;

/* Starts serving on `addr`: "host:port", ":port" (every address) or
 * "[v6addr]:port"; host must be a numeric address. Returns NULL with
 * `err` when the address is invalid or cannot be bound. */
lg_admin_http_t *lg_admin_http_start(const char *addr, char *err,
                                     size_t errlen);

/* Stops the server and joins its thread. NULL-safe. */
void lg_admin_http_stop(lg_admin_http_t *h);

/* Marks the collector not ready because of `key` (a short area name such
 * as "reload" or "watchdog.pipeline.web"; at most 63 bytes) with
 * `reason` (at most 1023 bytes kept), replacing the earlier reason of the
 * same key; reason NULL removes it. At most 32 keys at once (further
 * ones return -ENOSPC). Thread-safe. Returns 0 or a negative errno. */
int lg_admin_http_set_unready(const char *key, const char *reason);

/* The same for liveness: the process is broken beyond self-repair and
 * should be restarted (/healthz and /readyz fail). Thread-safe. */
int lg_admin_http_set_unhealthy(const char *key, const char *reason);

/* Writes the current problems as "key: reason\n" lines into `out`
 * (NUL-terminated, truncated to outlen). `which` 0 = readiness (both
 * tables), 1 = liveness only. Returns how many problems there are (0 =
 * ready/healthy). Thread-safe. */
int lg_admin_http_problems(int which, char *out, size_t outlen);

/* Forgets every reason (tests, and a fresh engine run). */
void lg_admin_http_reset(void);

#endif
