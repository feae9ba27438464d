/*
 * lg_output.h - outputs: where records go.
 *
 * Each type is a struct of callbacks in a static registry (lg_output.c),
 * with its options declared once in an lg_option_t table. The engine hands
 * an output chunks of encoded records (JSON lines, one record per "\n"),
 * each with an opaque `ref`. The output delivers them and reports every
 * chunk back through `ack`, on the loop thread, in the order submitted:
 *   status 0         delivered (the checkpoint may move past them)
 *   status < 0       failed for good (a permanent error); the engine sends
 *                    those records to the dead-letter output
 * Retriable failures (disk full, a pipe that blocks, a broker down) are
 * retried inside the output, with backoff, and never acked as failed;
 * meanwhile the unacked bytes keep the memory budget full, which pauses
 * the sources (backpressure).
 */
#ifndef LG_OUTPUT_H
#define LG_OUTPUT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/lg_option.h"

typedef struct lg_output lg_output_t;
struct lg_conf_output;

typedef void (*lg_output_ack_cb)(void *ud, void *ref, int status);

typedef struct lg_output_type {
  const char *name;            /* "stdout", "file", ... */
  const lg_option_t *options;  /* terminated by {NULL} */
  /* Sets up o->impl from the options. 0, or a negative errno with `err`. */
  int (*init)(lg_output_t *o, char *err, size_t errlen);
  /* Takes a chunk of `nrecs` records; must eventually ack it exactly
   * once. */
  int (*submit)(lg_output_t *o, const char *data, size_t len, uint32_t nrecs,
                void *ref);
  /* SIGHUP: reopen files and connections. May be NULL. */
  void (*reopen)(lg_output_t *o);
  /* Stops accepting chunks, delivers what is queued (within the
   * engine's timeout), releases everything, then calls lg__output_closed. */
  void (*exit)(lg_output_t *o);
  /* After exit, when the engine's drain timeout has passed: stop retrying
   * and give up on what is still queued, without acking it (those records
   * stay after the checkpoint and are read again at the next start); exit
   * then completes once a write already in progress returns. May be NULL
   * (the output then finishes exit on its own). */
  void (*abandon)(lg_output_t *o);
} lg_output_type_t;

struct lg_output {
  const lg_output_type_t *vt;
  const struct lg_conf_output *conf; /* name, type, option values */
  int index;                         /* bit in lg_rec_t.routes */
  uv_loop_t *loop;
  lg_output_ack_cb ack;
  void *ack_ud;
  void (*closed_cb)(void *ud);
  void *closed_ud;
  void *impl;
  /* Counters for metrics (loop thread only). */
  uint64_t records_out, bytes_out, errors, retries;
  /* Optional, set by the engine after lg_output_create (NULL otherwise):
   * calls `fn(arg, j, id, idlen)` for every record j (0-based line) of the
   * chunk submitted with `ref`, in order, with its stable record id
   * ("<fingerprint hex>:<offset>"). Outputs that send ids (the Kafka key
   * and header) use it at submit; without it they send no id. 0 or
   * -errno. */
  int (*rec_ids)(void *ud, void *ref,
                 void (*fn)(void *arg, uint32_t j, const char *id,
                            size_t idlen),
                 void *arg);
  void *rec_ids_ud;
};

/* Looks a type up in the registry; NULL if unknown. */
const lg_output_type_t *lg_output_type_find(const char *name);

/* The registry, terminated by NULL (for `lugger check` and docs). */
extern const lg_output_type_t *const lg_output_types[];

/* Creates and initialises an output for `conf` on `loop`. Returns NULL with
 * `err` filled on failure. */
lg_output_t *lg_output_create(uv_loop_t *loop, const struct lg_conf_output *conf,
                              int index, lg_output_ack_cb ack, void *ack_ud,
                              char *err, size_t errlen);

/* Submits a chunk of `len` bytes holding `nrecs` JSON lines; `data` stays
 * valid until its ack. The count is the caller's (the engine knows it)
 * so that no output has to scan the bytes for it. 0 or -errno. */
int lg_output_submit_n(lg_output_t *o, const char *data, size_t len,
                       uint32_t nrecs, void *ref);

/* lg_output_submit_n, counting the lines of `data` itself. 0 or -errno. */
int lg_output_submit(lg_output_t *o, const char *data, size_t len, void *ref);

/* SIGHUP. */
void lg_output_reopen(lg_output_t *o);

/* Drains and closes; `cb` runs when done and `o` is freed after it. */
void lg_output_close(lg_output_t *o, void (*cb)(void *ud), void *ud);

/* After lg_output_close, before its callback ran: the drain timeout has
 * passed; see `abandon`. The callback still runs once the output is done. */
void lg_output_abandon(lg_output_t *o);

/* For output implementations: report that exit finished. */
void lg__output_closed(lg_output_t *o);

/* Option value `name` of this output (declared in its table); NULL if the
 * type declares no such option. */
const lg_optval_t *lg_output_opt(const lg_output_t *o, const char *name);

/* The registered types (one per lg_output_<type>.c). */
extern const lg_output_type_t lg__output_stdout;
extern const lg_output_type_t lg__output_file;
extern const lg_output_type_t lg__output_kafka;

/* For the stdout and file outputs, which share one writer
 * (lg_output_file.c): it appends chunks to a file descriptor from the libuv
 * threadpool, one job at a time per output, coalescing queued chunks into
 * writev calls. lg__output_fd_init_stdout sets `o` up to write to fd 1. */
int lg__output_fd_init_stdout(lg_output_t *o, char *err, size_t errlen);
int lg__output_fd_submit(lg_output_t *o, const char *data, size_t len,
                         uint32_t nrecs, void *ref);
void lg__output_fd_exit(lg_output_t *o);
void lg__output_fd_abandon(lg_output_t *o);

#endif
