/*
 * lg_worker.h - worker threads: each owns one LuaJIT state and runs the
 * pipelines over the batches it is given, then encodes every kept record
 * as a JSON line into the batch's per-output buffers.
 *
 * A worker processes the batches given to it in the order given; a
 * stateless pipeline's batches may also be taken by an idle worker of the
 * same crew (lg_crew.h). Batches are numbered per log stream by the engine,
 * which delivers them in that order whichever worker processed them.
 */
#ifndef LG_WORKER_H
#define LG_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "config/lg_config.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_crew.h"
#include "pipeline/lg_payload.h"

typedef struct lg_worker lg_worker_t;

/* Called on the worker thread when a batch is processed and encoded. */
typedef void (*lg_worker_done_cb)(void *ud, lg_batch_t *b);

typedef struct lg_worker_opts {
  const lg_config_t *conf;
  const char *const *output_names; /* index = output index */
  size_t noutputs;
  int dead_letter;                 /* output index for failed records */
  const uint64_t *pipeline_routes; /* default routes per pipeline */
  const lg_encoder_t *encoders;    /* per output index; NULL: JSON lines */
  size_t memory_limit;             /* bytes per Lua state, 0 = none */
  lg_worker_done_cb done;
  void *ud;
  struct lg_watchdog *watchdog; /* NULL = none (lg_watchdog.h) */
  lg_crew_t *crew;              /* joined once ready, left at destroy or abandon
                                   (lg_crew.h); NULL = takes no other worker's batches */
  /* Worker 0 warns about stateless pipelines' state at its start
   * (lg_stateless_warn.h); NULL = always. */
  struct lg_stateless_warned *stateless_warned;
} lg_worker_opts_t;

/* What a worker processes batches with: one config generation. The
 * pointers must stay valid until the worker has moved on to a newer
 * version and every batch pushed before that has come back done. */
typedef struct lg_worker_version {
  uint64_t gen;                    /* config generation (0 = the first) */
  const lg_config_t *conf;         /* pipelines by index */
  const char *const *output_names; /* index = output index; NULL = unused */
  size_t noutputs;
  int dead_letter;
  const uint64_t *pipeline_routes; /* default routes per pipeline */
  const lg_encoder_t *encoders;    /* per output index: the output's encoder
                                      (lg_output_encoder); NULL: JSON lines */
} lg_worker_version_t;

/* Starts a worker thread and loads every pipeline's scripts in it.
 * Returns NULL with `err` (naming the script and line) when a script
 * fails to load or its init fails. lg_worker_spawn + lg_worker_ready. */
lg_worker_t *lg_worker_create(int id, const lg_worker_opts_t *o, char *err,
                              size_t errlen);

/* Starts a worker thread, which loads the scripts on its own: workers
 * started one after the other load theirs at the same time (start-up takes
 * one script load and init, not one per worker). Returns NULL with `err`
 * when the thread cannot start; lg_worker_ready must follow. */
lg_worker_t *lg_worker_spawn(int id, const lg_worker_opts_t *o, char *err,
                             size_t errlen);

/* Waits until spawned worker `w` has loaded its scripts. Returns 0, or -1
 * with `err` (naming the script and line) after a script failed to load
 * or its init failed; `w` is then freed. */
int lg_worker_ready(lg_worker_t *w, char *err, size_t errlen);

/* Hot reload, step 1 (any thread; it touches nothing the worker thread
 * changes): creates a fresh Lua state for worker `w` with every pipeline
 * of `v->conf` loaded and each script's init(params) run. `scripts[p]`,
 * when not NULL, gives pipeline p's entries with their text (src) so all
 * workers load the same bytes; NULL reads the files. Returns NULL with
 * `err` naming the script and line when a script fails to load or its
 * init fails. */
struct lg_lua;
struct lg_lua_script;
struct lg_lua *lg_worker_prepare(const lg_worker_t *w,
                                 const lg_worker_version_t *v,
                                 struct lg_lua_script *const *scripts,
                                 char *err, size_t errlen);

/* Hot reload, step 2 (the thread that calls lg_worker_push): every batch
 * pushed after this call is processed with version `v` and state `lua`
 * (owned by the worker from now on); every batch pushed before it with
 * the version before. The worker switches between two batches, so a batch
 * sees exactly one version, and a file's batches (always on one worker)
 * never go back to an older one. The old state is closed on the worker
 * thread. */
void lg_worker_swap(lg_worker_t *w, const lg_worker_version_t *v,
                    struct lg_lua *lua);

/* Queues a batch (thread-safe). */
void lg_worker_push(lg_worker_t *w, lg_batch_t *b);

/* Batches queued or in process. */
size_t lg_worker_backlog(lg_worker_t *w);

/* Stops after the queued batches and joins the thread. NULL-safe. Not for
 * an abandoned worker. */
void lg_worker_destroy(lg_worker_t *w);

/* Gives up a worker the watchdog declared stuck (lg_watchdog.h): returns
 * its queued batches, not yet started, as a list linked by `next` (the
 * caller re-queues them elsewhere), and detaches its thread, which never
 * calls `done` again and ends by itself if its script ever returns. The
 * worker's memory is never freed (the thread may still use it); do not
 * call lg_worker_destroy on it. */
lg_batch_t *lg_worker_abandon(lg_worker_t *w);

/* Encodes the kept records of `b` into payload b->out[k] by route, with
 * encoders[k] (`encoders` NULL: JSON lines for all); records that failed
 * in a script go to `dead_letter`, and so does a record an output's
 * encoder refuses (with the encoder's reason). Used by workers and
 * `lugger test`. Returns 0 or -ENOMEM. */
int lg_worker_encode(lg_batch_t *b, uint32_t noutputs, int dead_letter,
                     const lg_encoder_t *encoders);

#endif
