/*
 * lg_watchdog.h - finds scripts stuck on a record, interrupts them, and
 * remembers the records they were stuck on across restarts ("poison").
 *
 * Each worker registers its Lua state (lg_watchdog_watch) and brackets
 * every pipeline run with lg_watch_begin/lg_watch_end. A watchdog thread
 * samples each state's progress (lg_lua_progress: run and record index)
 * every script_timeout/10 (at least 10 ms, at most 200 ms), together with
 * the CPU time of the worker's thread (pthread_getcpuclockid).
 *
 * The budget is CPU time, not wall time: a worker that is descheduled
 * (a busy node, a pod at its CPU limit, a stopped or frozen process) uses
 * none of it, so a normal record is not taken for a poison one because the
 * thread did not get to run. A script blocked off the CPU is caught by a
 * wall-clock backstop of max(10 x script_timeout, 30 s) instead; in the
 * sandbox that can only be print()/lugger.log() writing to a stderr pipe
 * nobody reads, or page faults on a swapping node.
 *
 * 1. No progress on one record for script_timeout of CPU time (or the
 *    backstop): the record is written to <state_dir>/poison.json first
 *    (fsync'd, so it survives whatever comes next), the stall is logged
 *    with pipeline, script, file and offset, and the state is interrupted
 *    (lg_lua_interrupt). Interpreted code raises "script_timeout: ..." at
 *    once; the driver fails that record (dead-letter output) and goes on
 *    with the next one.
 * 2. Still no progress after another script_timeout of CPU time (or the
 *    backstop) since the interrupt (a JIT-compiled loop or a long C
 *    function, which never see the hook): the worker is declared stuck
 *    and the `stuck` callback runs (on the watchdog thread) so the engine
 *    can abandon the worker and move its files to a fresh one. The thread
 *    is never killed or joined; it keeps what it holds.
 *
 * After a restart, lg_watchdog_poison fails the poisoned records of each
 * batch before any script sees them, so they go to the dead-letter output
 * with the reason instead of hanging the collector again.
 */
#ifndef LG_WATCHDOG_H
#define LG_WATCHDOG_H

#include <stddef.h>
#include <stdint.h>

#include "config/lg_config.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_lua.h"

typedef struct lg_watchdog lg_watchdog_t;
typedef struct lg_watch lg_watch_t;

/* What a stuck worker was doing; strings live until the callback
 * returns. */
typedef struct lg_watchdog_stall {
  int worker;           /* the id given to lg_watchdog_watch */
  const char *pipeline; /* pipeline name */
  const char *script;   /* script path, "" when unknown */
  const char *path;     /* file of the record, "" when unknown */
  uint64_t offset;      /* the record's first byte in that file */
  uint64_t stalled_ms;  /* wall time without progress, ms */
  lg_batch_t *batch;    /* the batch the worker holds */
} lg_watchdog_stall_t;

typedef struct lg_watchdog_opts {
  uint64_t timeout_ms;   /* settings.script_timeout: CPU time of the
                            worker's thread per record, ms; 0 = no thread
                            (poison markers from earlier runs still apply) */
  uint64_t backstop_ms;  /* wall-clock bound for a stall that uses no CPU;
                            0 = max(10 x timeout_ms, 30 s) */
  const char *state_dir; /* where poison.json lives; NULL = nowhere */
  /* Stage 2, on the watchdog thread. */
  void (*stuck)(void *ud, const lg_watchdog_stall_t *s);
  void *ud;
} lg_watchdog_opts_t;

/* Loads <state_dir>/poison.json (a corrupt file is logged and set aside)
 * and starts the thread. Returns NULL with `err` when out of memory or
 * the thread cannot start. */
lg_watchdog_t *lg_watchdog_create(const lg_watchdog_opts_t *o, char *err,
                                  size_t errlen);

/* Stops the thread. Watches of abandoned workers are left allocated (their
 * threads may still use them). NULL-safe. */
void lg_watchdog_destroy(lg_watchdog_t *wd);

/* Registers worker `worker`. NULL when `wd` is NULL or has no thread
 * (script_timeout 0); the lg_watch_* calls accept NULL. */
lg_watch_t *lg_watchdog_watch(lg_watchdog_t *wd, int worker);

/* Brackets one lg_lua_run of state `lua` with pipeline `pc` (its name and
 * scripts; must live until lg_watch_end) over `b`. Call both on the thread
 * that runs the script: its CPU time is what is measured. Between the two the
 * watchdog may sample and interrupt `lua`; after lg_watch_end it never
 * touches it (so the state may be closed). lg_watch_end returns 1 when
 * the watchdog has declared this worker stuck meanwhile: the caller must
 * then touch nothing shared (the engine has given its batch and queue up)
 * and end its thread; else 0. */
void lg_watch_begin(lg_watch_t *w, lg_lua_t *lua, lg_batch_t *b,
                    const lg_conf_pipeline_t *pc);
int lg_watch_end(lg_watch_t *w);

/* Marks records of `b` that are in the poison list as failed (reason in
 * the error text, which reaches the dead-letter output). Call before the
 * batch goes to its worker. Returns how many records it failed. A record
 * matches by file fingerprint or path, and offset and end offset. */
int lg_watchdog_poison(lg_watchdog_t *wd, lg_batch_t *b);

/* Adds record `i` of `b` to the poison list with `reason` and saves the
 * list (fsync'd), so that after a restart the record goes to the
 * dead-letter output before any script sees it. Used for records that
 * exhaust a fresh Lua state's memory (lg_worker.c). Any thread. Returns 0,
 * or a negative errno when the list could not be saved (it is still
 * applied until the process exits). NULL `wd`: 0, nothing done. */
int lg_watchdog_mark(lg_watchdog_t *wd, const lg_batch_t *b, uint32_t i,
                     const char *reason);

/* Poison entries loaded or added. */
size_t lg_watchdog_npoison(lg_watchdog_t *wd);

#endif
