/*
 * lg_reload.h - hot reload of the config file and its scripts
 * (DESIGN.md, "Configuration" and "Operations": SIGHUP reloads).
 *
 * This module decides *when* to reload and does the slow, fallible part
 * off the loop thread; the engine decides *what* a new config means
 * (lg_engine.c) through two callbacks.
 *
 * When: the directories of the config file and of every script are
 * watched with inotify (lg_inotify.h). An event that names the config
 * file, a script, or `..data` (a Kubernetes ConfigMap update: the kubelet
 * writes a new timestamped directory, points `..data_tmp` at it and renames
 * it over `..data`) starts a debounce timer; a burst of events becomes one
 * reload, LG_RELOAD_DEBOUNCE_MS after the last event (at most
 * LG_RELOAD_DEBOUNCE_MAX_MS after the first). lg_reload_request (SIGHUP)
 * reloads at once. Reloads are serial: a request while one runs makes one
 * more run after it.
 *
 * How: on a libuv threadpool thread the config is loaded and checked
 * (lg_config_load), each script is read once (every worker gets the same
 * text, so one reload is one version even if the files change meanwhile),
 * and a fingerprint of all those bytes is taken. A watch event whose
 * fingerprint equals the running one is ignored (the state directory may
 * share the config's directory). Then `prepare` runs on that thread
 * (the engine builds fresh Lua states and runs their init), and `apply`
 * runs on the loop thread to swap them in. A failure at any step leaves
 * the running config in place, is logged with the file and line, and is
 * counted (lg_reload_stats).
 */
#ifndef LG_RELOAD_H
#define LG_RELOAD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/lg_config.h"
#include "pipeline/lg_lua.h"

#define LG_RELOAD_DEBOUNCE_MS 200
#define LG_RELOAD_DEBOUNCE_MAX_MS 2000
/* A reload still preparing after this long is logged (again every period):
 * a script's init may be looping; later changes wait for it. */
#define LG_RELOAD_SLOW_MS 10000

typedef struct lg_reload lg_reload_t;

typedef struct lg_reload_ops {
  /* Threadpool thread. Builds everything `conf` needs (ownership passes
   * to the callee). `scripts[p]` holds pipeline p's script entries with
   * their text (src, src_len) filled, valid during the call only. Returns
   * an opaque value for `apply`, or NULL with `err` filled. */
  void *(*prepare)(void *ud, lg_config_t *conf, lg_lua_script_t **scripts,
                   char *err, size_t errlen);
  /* Loop thread. Swaps `prepared` in. Returns 0, or a negative errno with
   * `err` filled (the callee has then freed `prepared`, and the running
   * config stays). */
  int (*apply)(void *ud, void *prepared, char *err, size_t errlen);
  /* Loop thread. Frees a prepared value that will not be applied (the
   * reloader is closing). */
  void (*discard)(void *ud, void *prepared);
  /* Loop thread, just before a reload's work is queued: the engine may
   * take a snapshot of loop-thread state that `prepare` reads. */
  void (*begin)(void *ud);
} lg_reload_ops_t;

typedef struct lg_reload_stats {
  uint64_t reloads;       /* successful reloads */
  uint64_t failures;      /* reloads that failed (the old config runs on) */
  uint64_t generation;    /* config generation running: 0 = the first */
  const char *last_error; /* the last failure's reason, "" if none; valid
                             until the next reload finishes */
} lg_reload_stats_t;

/* Starts watching `conf`'s file and scripts on `loop`. `conf` is the
 * running config (only read here, for paths); `running_fp` is
 * lg_reload_fingerprint(conf) taken before the scripts were loaded. When
 * the files differ from it by the time they are watched (a ConfigMap
 * updated while lugger started), a reload starts at once: no inotify
 * event will come for that change. Returns NULL on allocation failure; a
 * directory that cannot be watched is logged and leaves SIGHUP as the
 * way to reload. */
lg_reload_t *lg_reload_create(uv_loop_t *loop, const lg_config_t *conf,
                              uint64_t running_fp, const lg_reload_ops_t *ops,
                              void *ud);

/* Reloads now (SIGHUP), even if the files are unchanged. `why` is logged. */
void lg_reload_request(lg_reload_t *r, const char *why);

/* Counters for metrics and /readyz. */
void lg_reload_stats(const lg_reload_t *r, lg_reload_stats_t *out);

/* For /readyz and other threads (thread-safe, process-wide): the number
 * of reloads that failed since the last one that took effect (0 when the
 * running config is the newest one tried), with the last failure's
 * message copied into `buf` ("" when none). */
uint64_t lg_reload_status(char *buf, size_t buflen);

/* Stops watching; a reload in progress is discarded when it finishes.
 * `cb` runs once every handle is closed and no work is queued; `r` is
 * freed then. NULL-safe (cb is then called at once). */
void lg_reload_close(lg_reload_t *r, void (*cb)(void *ud), void *ud);

/* The fingerprint of what `conf` runs: a 64-bit FNV-1a (lg_fingerprint.h)
 * over the config text it was parsed from (conf->text_hash) and each
 * script's path, text as on disk now, and params. The engine takes it
 * before its workers read the scripts and hands it to lg_reload_create,
 * which compares it with the files as they are once it watches them. */
uint64_t lg_reload_fingerprint(const lg_config_t *conf);

#endif
