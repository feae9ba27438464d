/*
 * lg_engine.h - the collector: sources -> workers -> outputs -> acks ->
 * checkpoints, on one libuv loop.
 *
 * The sources (lg_source.h) read and frame records into batches on the
 * loop thread; the engine hands each batch to the worker that owns its
 * stream, gives the encoded records to the outputs, and turns output acks
 * into source acks, in stream order: a file's checkpoint passes a batch
 * only when that batch and every batch before it from the same file are
 * delivered (or dropped).
 *
 * Backpressure: bytes read but not yet acked are charged to
 * settings.memory_budget; at the budget the sources stop reading, below
 * three quarters of it they resume. The log files are the buffer.
 *
 * Signals: SIGTERM and SIGINT stop reading, drain in-flight batches within
 * settings.shutdown_timeout, write checkpoints and return 0. SIGHUP
 * reopens the outputs' files. `lugger run` blocks the three while it
 * loads the config; lg_engine_run unblocks them once its handlers are in
 * place, so one sent during start-up is handled, not fatal.
 */
#ifndef LG_ENGINE_H
#define LG_ENGINE_H

#include "config/lg_config.h"

typedef struct lg_engine_opts {
  int once; /* exit when every file is read to its end and delivered */
} lg_engine_opts_t;

/* Runs the collector with `conf` until a signal (or, with `once`, until
 * everything is read and delivered). Returns the process exit code:
 * 0 after a clean stop, 1 when start-up failed (the reason is logged). */
int lg_engine_run(const lg_config_t *conf, const lg_engine_opts_t *opts);

#endif
