/*
 * lg_worker.h - worker threads: each owns one LuaJIT state and runs the
 * pipelines over the batches it is given, then encodes every kept record
 * as a JSON line into the batch's per-output buffers.
 *
 * Batches of one file always go to the same worker and are processed in
 * the order given, so records of a file keep their order.
 */
#ifndef LG_WORKER_H
#define LG_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "lg_batch.h"
#include "lg_config.h"

typedef struct lg_worker lg_worker_t;

/* Called on the worker thread when a batch is processed and encoded. */
typedef void (*lg_worker_done_cb)(void *ud, lg_batch_t *b);

typedef struct lg_worker_opts {
  const lg_config_t *conf;
  const char *const *output_names; /* index = output index */
  size_t noutputs;
  int dead_letter;        /* output index for failed records */
  const uint64_t *pipeline_routes; /* default routes per pipeline */
  size_t memory_limit;    /* bytes per Lua state, 0 = none */
  lg_worker_done_cb done;
  void *ud;
} lg_worker_opts_t;

/* Starts a worker thread and loads every pipeline's scripts in it.
 * Returns NULL with `err` (naming the script and line) when a script
 * fails to load or its init fails. */
lg_worker_t *lg_worker_create(int id, const lg_worker_opts_t *o, char *err,
                              size_t errlen);

/* Queues a batch (thread-safe). */
void lg_worker_push(lg_worker_t *w, lg_batch_t *b);

/* Batches queued or in process. */
size_t lg_worker_backlog(lg_worker_t *w);

/* Stops after the queued batches and joins the thread. NULL-safe. */
void lg_worker_destroy(lg_worker_t *w);

/* Encodes the kept records of `b` into b->out[k] by route; records that
 * failed go to `dead_letter`. Used by workers and `lugger test`. Returns 0
 * or -ENOMEM. */
int lg_worker_encode(lg_batch_t *b, uint32_t noutputs, int dead_letter);

#endif
