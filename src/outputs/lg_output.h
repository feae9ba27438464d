/*
 * lg_output.h - outputs: where records go, and the delivery layer every
 * output type shares.
 *
 * An output type is a struct of callbacks (lg_output_type_t) in a static
 * registry (lg_output.c) with one option table. It adds only what is its
 * own: its options, its encoding (worker thread), its request (loop
 * thread) and its reading of the answer per record: delivered, retry, or
 * rejected with a reason. Everything else is the delivery layer's
 * (lg_delivery*.c, see lg_delivery_internal.h), written once:
 *   - batching: records of many submitted batches are grouped into
 *     requests of at most `max_batch_size` records and `max_bytes` bytes,
 *     waiting at most `max_coalescing_delay` for a request to fill;
 *   - at most `max_in_flight` requests at a time per output;
 *   - retries with exponential backoff and full jitter (100 ms doubling to
 *     30 s), for at most `max_retry_time` (0: forever, never drop);
 *   - acks to the engine per submitted batch, in submit order per source
 *     lane, once every record is delivered or in the dead-letter output;
 *   - records rejected for good (or out of retry time) go to the
 *     dead-letter output, encoded by that output's encoder with the reason
 *     in "lugger.error";
 *   - reopen on SIGHUP; drain at close; abandon (no ack) after the
 *     shutdown timeout;
 *   - metrics per output (see lg_delivery_metrics.c) and the output's
 *     state on /readyz while it cannot deliver.
 *
 * Threads: encode runs on worker threads; every other callback, and every
 * function here, on the loop thread of the output.
 *
 * Adding an output type: one file with its conf struct (lg_out_limits_t
 * first), its option table (its own rows plus LG_OUT_DELIVERY_OPTIONS with
 * its defaults), init/send/close and optionally encode/reopen/cancel; one
 * line in the registry (lg_output.c); its tests, including the conformance
 * suite in tests/outputs/.
 */
#ifndef LG_OUTPUT_H
#define LG_OUTPUT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <uv.h>

#include "core/lg_option.h"
#include "pipeline/lg_payload.h"

typedef struct lg_output lg_output_t;
typedef struct lg_out_req lg_out_req_t;
struct lg_conf_output;
struct lg_batch;

/* ---- results ------------------------------------------------------------ */

/* What became of a record (or of a whole request) after one attempt. */
typedef enum lg_out_result {
  LG_OUT_DELIVERED = 0, /* the backend has it: ack it */
  LG_OUT_RETRY = 1,     /* not taken, may work later: send it again after
                           backoff (timeouts, 429, 5xx, broker down) */
  LG_OUT_REJECTED = 2,  /* never taken as it is (mapping error, too large):
                           send it to the dead-letter output with the
                           reason */
  LG_OUT_SPLIT = 3,     /* the request failed because of some record in it
                           that the answer does not name (ClickHouse parse
                           error, HTTP 413): send its two halves again
                           separately, at once; a request of one record is
                           rejected with the reason instead */
} lg_out_result_t;

/* ---- the typed config every type's conf struct starts with ------------ */

/* The delivery options (filled from LG_OUT_DELIVERY_OPTIONS rows). */
typedef struct lg_out_limits {
  int64_t max_batch_size;       /* records per request, >= 1 */
  int64_t max_bytes;            /* encoded bytes per request, >= 1 (a record
                                   larger than this goes alone) */
  int64_t max_coalescing_delay; /* ms a request may wait to fill; 0: send
                                   what is there whenever a request slot is
                                   free */
  int64_t max_in_flight;        /* requests at a time, >= 1 */
  int64_t max_retry_time;       /* ms a record may keep failing before it
                                   goes to the dead-letter output; 0: retry
                                   forever */
} lg_out_limits_t;

/* The five delivery option rows, for a type whose conf struct `T` has its
 * lg_out_limits_t as member `limits`. The defaults are the type's, in
 * config syntax ("500", "1MiB", "100ms", "0"). A type that documents
 * max_batch_size in its own words (Kafka) writes that row itself and uses
 * LG_OUT_DELIVERY_OPTIONS_REST for the other four. */
#define LG_OUT_DELIVERY_OPTIONS(T, batch, bytes, delay, inflight, retry)       \
  {.name = "max_batch_size",                                                   \
   .type = LG_OPT_INT,                                                         \
   .def = batch,                                                               \
   .check = lg_opt_check_positive,                                             \
   .doc = "Most records in one request.",                                      \
   .offset = offsetof(T, limits.max_batch_size)},                              \
      LG_OUT_DELIVERY_OPTIONS_REST(T, bytes, delay, inflight, retry)

#define LG_OUT_DELIVERY_OPTIONS_REST(T, bytes, delay, inflight, retry)         \
  {.name = "max_bytes",                                                        \
   .type = LG_OPT_BYTES,                                                       \
   .def = bytes,                                                               \
   .check = lg_opt_check_positive,                                             \
   .doc = "Most encoded bytes in one request (a larger record goes alone).",   \
   .offset = offsetof(T, limits.max_bytes)},                                   \
      {.name = "max_coalescing_delay",                                         \
       .type = LG_OPT_DURATION,                                                \
       .def = delay,                                                           \
       .check = lg_out_check_nonneg,                                           \
       .doc = "How long a request may wait for more records before it is "     \
              "sent (0: send at once).",                                       \
       .offset = offsetof(T, limits.max_coalescing_delay)},                    \
      {.name = "max_in_flight",                                                \
       .type = LG_OPT_INT,                                                     \
       .def = inflight,                                                        \
       .check = lg_opt_check_positive,                                         \
       .doc = "Most requests sent and not yet answered.",                      \
       .offset = offsetof(T, limits.max_in_flight)},                           \
  {                                                                            \
    .name = "max_retry_time", .type = LG_OPT_DURATION, .def = retry,           \
    .check = lg_out_check_nonneg,                                              \
    .doc = "How long a record may keep failing before it goes to the "         \
           "dead-letter output (0: retry forever).",                           \
    .offset = offsetof(T, limits.max_retry_time)                               \
  }

/* Option check: an integer (count, duration) that is not negative. */
int lg_out_check_nonneg(const lg_optval_t *v, char *err, size_t errlen);

/* ---- the type ----------------------------------------------------------- */

typedef struct lg_output_type {
  const char *name; /* "stdout", "file", ... */
  const char *doc;  /* one sentence for the docs */
  /* Option rows with offsets into the conf struct, terminated by {NULL};
   * include LG_OUT_DELIVERY_OPTIONS. */
  const lg_option_t *options;
  /* Size of the conf struct, whose first member is an lg_out_limits_t.
   * lg_output_create fills it from the parsed options (lg_opt_fill): init
   * reads its options from there, with defaults and required options
   * already applied. */
  size_t conf_size;

  /* Worker thread: see lg_encode_fn (lg_payload.h). NULL: JSON lines. */
  lg_encode_fn encode;

  /* Any thread, no side effects; NULL: nothing to check. Checks what the
   * option table cannot (option combinations) on the filled conf of output
   * `name`, so that the config load (`lugger check`, a reload) reports it
   * and not only the start. 0, or -EINVAL with a message in `err`
   * ("outputs.<name>.<key>: ..."). init runs only on a conf that passed. */
  int (*check)(const char *name, const void *conf, char *err, size_t errlen);

  /* Loop thread. Opens what the output needs and sets o->impl (checking
   * what `check` cannot, e.g. files that must exist). 0, or a negative
   * errno with a message in `err` ("outputs.<name>: ..."). */
  int (*init)(lg_output_t *o, const void *conf, char *err, size_t errlen);

  /* Loop thread. Sends request `r` (lg_out_req_recs, lg_out_req_iov) and
   * then (later, or before returning) calls lg_out_req_done(r, ...)
   * exactly once on the loop thread, having set per-record results with
   * lg_out_req_set where they differ. At most max_in_flight requests are
   * out at once; send is never called from within send. */
  void (*send)(lg_output_t *o, lg_out_req_t *r);

  /* 1: the type may answer records (or whole requests) REJECTED or SPLIT:
   * such records go to the dead-letter output, encoded again from their
   * batch, so batches routed to it keep their script's fields until their
   * outputs are done (lg_encoder_t.keep_fields). 0 (file, forward): it
   * only delivers or retries. Any output with max_retry_time > 0 keeps
   * fields too. */
  int rejects;

  /* 1: a request that is retried as a whole is sent again with exactly
   * its records, not merged with newer ones (ClickHouse deduplicates a
   * retried INSERT only if its block is byte-identical). */
  int frozen_retries;

  /* 1: requests are journaled in state_dir (lg_req_journal.h) once the
   * output calls lg_out_req_journal in send, and after a crash the
   * requests that were in flight are made again from the records read
   * again, with exactly their old records in their old order (and the
   * note given then), before any other request. For outputs whose
   * requests become something named by what they hold (S3 objects).
   * Implies frozen_retries. */
  int journal;

  /* SIGHUP: reopen files, reconnect. May be NULL. */
  void (*reopen)(lg_output_t *o);

  /* After the shutdown timeout: stop what is in flight as soon as possible
   * (the results no longer matter, nothing more is acked); every request
   * in flight must still end with lg_out_req_done. May be NULL. */
  void (*cancel)(lg_output_t *o);

  /* No request is in flight and none will come: release everything, then
   * call lg_output_closed(o) (from the last libuv close callback if the
   * output has handles). */
  void (*close)(lg_output_t *o);
} lg_output_type_t;

/* ---- an output ---------------------------------------------------------- */

/* Engine callback: the records of submission `ref` are settled, every one
 * delivered or in the dead-letter output (status 0), or some lost because
 * no dead-letter output took them (status < 0, a negative errno). */
typedef void (*lg_output_ack_cb)(void *ud, void *ref, int status);

/* What the engine and the output type's code see of an output. The
 * delivery layer's state is private (lg_delivery_internal.h). */
struct lg_output {
  const lg_output_type_t *vt;
  const struct lg_conf_output *conf; /* name, type, option values */
  const void *typed_conf;            /* the filled conf struct */
  const char *name;                  /* conf->name */
  int index;                         /* bit in lg_rec_t.routes */
  uv_loop_t *loop;
  void *impl; /* the type's state */
  /* Counters of this output object (the same counts, by output name, are
   * in /metrics): records acked as delivered and their bytes, attempts
   * that failed (a request or a record), records sent again. */
  uint64_t records_out, bytes_out, errors, retries;
};

/* Looks a type up in the registry; NULL if unknown. */
const lg_output_type_t *lg_output_type_find(const char *name);

/* The registry, terminated by NULL (for `lugger check` and docs). */
extern const lg_output_type_t *const lg_output_types[];

/* Adds a type that lg_output_type_find (and so the config loader) finds
 * after the registry's: for test doubles such as the conformance suite's
 * `mock` output (tests/outputs/). Not thread-safe; call before loading
 * configs. 0, or -ENOSPC past 8 types. */
int lg_output_register(const lg_output_type_t *t);

/* Checks output `conf` (its parsed option values) without creating it:
 * the options filled as lg_output_create fills them, the delivery limits,
 * and the type's check (option combinations). 0, or a negative errno with
 * a message in `err` ("outputs.<name>...: ..."). Any thread. */
int lg_output_check_conf(const struct lg_conf_output *conf, char *err,
                         size_t errlen);

/* Creates an output for `conf` on `loop`: fills its typed config, runs
 * the type's init and starts its delivery layer. `index` is its bit in
 * lg_rec_t.routes; `ack(ack_ud, ref, status)` reports each submission.
 * Returns NULL with `err` filled on failure. */
lg_output_t *lg_output_create(uv_loop_t *loop,
                              const struct lg_conf_output *conf, int index,
                              lg_output_ack_cb ack, void *ack_ud, char *err,
                              size_t errlen);

/* The encoder workers use for this output: its type's encode (or JSON
 * lines) bound to its typed config. Valid while `o` is open. */
lg_encoder_t lg_output_encoder(const lg_output_t *o);

/* Where records this output rejects go: `get(ud)` returns the current
 * dead-letter output when a record is rejected (it may change with a
 * reload), or NULL for none. Without it, or when it returns `o` itself,
 * rejected records are logged and reported lost (ack status < 0). */
void lg_output_set_dead_letter(lg_output_t *o, lg_output_t *(*get)(void *ud),
                               void *ud);

/* Submits the records of payload `p` (encoded with lg_output_encoder), as
 * one unit acked with `ref`. `lane` orders acks: submissions with the same
 * lane are acked in submit order (0 is a lane like any other). `p` must
 * stay valid and unchanged until the ack. A payload with no records is
 * acked at once. 0, -ESHUTDOWN after lg_output_close, or -ENOMEM. */
int lg_output_submit(lg_output_t *o, const lg_payload_t *p, void *ref,
                     uint64_t lane);

/* For tests and tools: submits `len` bytes of JSON lines (one record per
 * line, no batch behind them) on lane 0; the output copies them. Output
 * types that need fields of a record (Kafka's topic_field) see none. 0 or
 * -errno as lg_output_submit. */
int lg_output_submit_text(lg_output_t *o, const char *data, size_t len,
                          void *ref);

/* Engine callback: records of submission `ref` up to batch record `index`
 * of batch `b` (the last of them in the request) are about to be sent:
 * from now on the backend may have them, acked or not. After the last
 * submission of a request it is called once more with `ref` and `b`
 * NULL: what it records must be durable before it returns (the request
 * goes out then). */
typedef void (*lg_output_sent_cb)(void *ud, void *ref, const struct lg_batch *b,
                                  uint32_t index);

/* Sets the callback run on the loop thread right before each request is
 * sent (first tries and retries), once per submission in it, so that the
 * engine can record how far records may have reached the output (the
 * file sources count possible duplicates after a crash from it). NULL:
 * none. */
void lg_output_set_sent(lg_output_t *o, lg_output_sent_cb cb, void *ud);

/* Where the output may keep state (settings.state_dir): an output type
 * with `journal` keeps its request journal there and finds the requests
 * of the last run to make again. Call after lg_output_create, before the
 * first submission. Problems are logged (the output then runs without a
 * journal). */
void lg_output_set_state_dir(lg_output_t *o, const char *state_dir);

/* A file source reads the file whose fingerprint is `fingerprint` (the
 * batches' lg_batch_t.fingerprint) from its checkpoint, byte `offset`:
 * its records at offsets before `offset` were acked and are not read
 * again by this process. Only a checkpoint may be passed (never a start
 * at a file's end that skips records). A request of the last run waiting
 * for such records (lg_output_set_state_dir) stops waiting for them: they
 * were acked before the restart, so that request was answered then, and
 * it is made again from the records of it that are read again (or
 * dropped when there are none). Loop thread; any time after
 * lg_output_set_state_dir (does nothing when no request waits). */
void lg_output_file_resumed(lg_output_t *o, uint64_t fingerprint,
                            uint64_t offset);

/* A file source opens a file whose batches will have fingerprint
 * `fingerprint`, and whose first 1, 2, ..., n bytes hash
 * (lg_fp_update from LG_FP_INIT) to prefix[0..n-1] (n <= LG_FP_MAX). A
 * batch read while the file was shorter than LG_FP_MAX had as its
 * fingerprint the hash of every byte read so far, so its records lie
 * within those bytes: a run of a request of the last run with one of
 * these fingerprints, ending within its prefix, is byte for byte these
 * bytes, and its records read again now come with `fingerprint` (the
 * file grew past its old fingerprint's length). Such runs take
 * `fingerprint`, so the request is made again from them instead of
 * waiting for records that come under another id. Loop thread; before
 * the file's first batch; does nothing when no request waits. */
void lg_output_file_prefixes(lg_output_t *o, uint64_t fingerprint,
                             const uint64_t *prefix, uint32_t n);

/* For an output a reload created: the records of the file whose
 * fingerprint is `fingerprint` at offsets from `from` up to `to`
 * (exclusive) were read and handed on in this process before the output
 * existed, so they never come to it. A request of the last run waiting
 * for some of them (at offsets at or past the file's checkpoint, so not
 * acked before the crash) cannot be made again as it was: it is given up
 * at once (its records that come later go out like any others, their
 * journal entry is dropped), instead of holding what it gets until its
 * time limit (30 s). Loop thread; after lg_output_file_resumed of the
 * same file; does nothing when no request waits. */
void lg_output_file_read(lg_output_t *o, uint64_t fingerprint, uint64_t from,
                         uint64_t to);

/* True while a request of the last run (lg_output_set_state_dir) waits
 * for its records to be read again: only then do lg_output_file_resumed
 * and lg_output_file_prefixes do anything, so a source may skip
 * computing what they take when no output waits. Loop thread. */
int lg_output_waits_for_files(const lg_output_t *o);

/* A reload re-creates output `from` as `to` (same name, its config
 * changed; `to` created, lg_output_set_state_dir called, no submission
 * yet; `from` not closed yet): the requests of the last run `from` still
 * waits for (lg_output_set_state_dir) are `to`'s from now on, as they
 * are (same journal entries, the runs it knows passed), instead of being
 * given up at `from`'s close (their records sent in other requests: a
 * second copy of what they wrote before the crash). The records of them
 * `from` holds, and those that still come to `from` (batches processed
 * under the old config) of a file `to` waits for, go on to `to`,
 * encoded again by `to`: `from` acks them once `to` acked them; those
 * that cannot be (out of memory) `from` sends as new ones, and `to` gives
 * up the requests they are of (made again without them, the others would
 * be taken as written before the crash). Does nothing when nothing waits
 * or the two do not share a journal (then `from` gives them up at its
 * close). Loop thread; once the reload can no longer fail (a rejected
 * reload closes `to`: the requests would be given up with it). */
void lg_output_hand_over(lg_output_t *from, lg_output_t *to);

/* The collector stops: sources are paused for good, no records are read
 * again in this process. A request of the last run still waiting for
 * records (lg_output_set_state_dir) is from now on neither given up at
 * its time limit nor at lg_output_close: the records it holds stay
 * unacked (the checkpoint stays before them) and its journal entry stays,
 * so the next start reads them again and makes the request then, instead
 * of sending them in another request (a second copy of what it wrote
 * before the crash). Records waiting to fill a request
 * (max_coalescing_delay) are sent now, and those submitted from now on at
 * once; records waiting out a retry backoff are sent again now (not
 * before a backend's Retry-After), and retries from now on wait at most
 * 1 s: the stop's drain delivers what the output holds within
 * shutdown_timeout. Loop thread; once, before lg_output_close. */
void lg_output_stopping(lg_output_t *o);

/* 1 when the output has nothing more to do in this process: no record
 * pending or in a request, and every record not settled is held by a
 * request of the last run kept for the next start (lg_output_stopping;
 * the engine's drain need not wait for those); else 0. Loop thread. */
int lg_output_drained(lg_output_t *o);

/* Memory pressure: on (1) while the engine's memory budget is reached and
 * reading is paused, off (0) once it reads again. Under pressure, pending
 * records are sent without waiting for max_coalescing_delay to fill a
 * request, so they can be acked and their memory freed: requests (S3
 * objects) are smaller then, but reading does not stop for the delay. */
void lg_output_set_pressure(lg_output_t *o, int on);

/* SIGHUP: the type's reopen. */
void lg_output_reopen(lg_output_t *o);

/* Stops taking submissions and drains: sends and retries until every
 * record is settled and acked (with no time limit: see lg_output_abandon),
 * then closes the type; `cb(ud)` runs after that and `o` is freed after
 * it. Requests of the last run still waiting for records are given up
 * (their records sent in other requests), unless lg_output_stopping was
 * called: then they are kept, and only lg_output_abandon ends the close
 * while they hold records; or unless lg_output_hand_over gave them to
 * the output that replaces this one. */
void lg_output_close(lg_output_t *o, void (*cb)(void *ud), void *ud);

/* After lg_output_close, when the shutdown timeout has passed: stop
 * retrying, cancel what is in flight, and give up on every record not yet
 * settled without acking it (its batch stays after the checkpoint and is
 * read again at the next start). The close callback runs once the
 * requests in flight have ended. */
void lg_output_abandon(lg_output_t *o);

/* For output types: exit finished (see lg_output_type_t.close). */
void lg_output_closed(lg_output_t *o);

/* Option value `name` of this output as parsed (lg_optval_t: whether it
 * was set, its value); NULL if the type declares no such option. */
const lg_optval_t *lg_output_opt(const lg_output_t *o, const char *name);

/* The output's state for /readyz and logs: 0 delivering (or idle), 1
 * retrying (a record failed and waits for its next attempt). */
int lg_output_retrying(const lg_output_t *o);

struct lg_buf;

/* Appends every registered type's options as Markdown (a "#### `type =
 * \"<name>\"`" heading, its doc, and a table: option, type, default,
 * meaning), in registry order, for the README (`lugger check
 * --options-markdown`; a unit test checks the README holds exactly
 * this). Returns 0 or -ENOMEM. */
int lg_output_options_markdown(struct lg_buf *out);

/* ---- requests (for output types) --------------------------------------- */

/* A record of a request, as send sees it. */
typedef struct lg_out_rec {
  const char *data; /* encoded bytes */
  uint32_t len;
  uint32_t meta_len;
  const char *meta;             /* the encoder's side data (meta_len 0: none) */
  const struct lg_batch *batch; /* the record's batch, read-only; NULL
                                   for records submitted as text */
  uint32_t index;               /* the record in its batch */
} lg_out_rec_t;

/* The public part of a request; the rest is the layer's. */
struct lg_out_req {
  lg_output_t *o;
  uint32_t n;       /* records */
  size_t bytes;     /* their encoded bytes */
  uint32_t attempt; /* 0 on the first try of its oldest record */
  void *impl;       /* free for the output type */
};

/* The request's records, n entries, in order. */
const lg_out_rec_t *lg_out_req_recs(lg_out_req_t *r);

/* The request's bytes as a few contiguous pieces (records that are
 * adjacent in one payload form one piece), in order: *iov gets the array,
 * *niov its length. Valid until lg_out_req_done. Returns 0 or -ENOMEM. */
int lg_out_req_iov(lg_out_req_t *r, const struct iovec **iov, int *niov);

/* Sets the result of record `j` (0-based, request order); `reason` (copied;
 * may be NULL) says why for RETRY and REJECTED ("mapper_parsing_exception:
 * failed to parse field [status]"). Records without a result get the one
 * given to lg_out_req_done. SPLIT is for whole requests only. When the
 * result or reason cannot be kept (out of memory), the layer retries the
 * whole request instead of settling it from a partial answer. */
void lg_out_req_set(lg_out_req_t *r, uint32_t j, lg_out_result_t result,
                    const char *reason);

/* Ends request `r`: every record without a result of its own gets
 * `result`, with `reason` (copied; may be NULL). Loop thread; may be
 * called from within send. `r` is freed here. */
void lg_out_req_done(lg_out_req_t *r, lg_out_result_t result,
                     const char *reason);

/* Called on the loop thread when the journal write of request `r` ended:
 * `status` 0, its entry is durable and the output may send it; or a
 * negative errno (the write failed; logged with the journal's file): the
 * output must not send anything of it and ends it with LG_OUT_RETRY (the
 * retry journals it again). */
typedef void (*lg_out_journaled_cb)(lg_out_req_t *r, int status);

/* For a type with `journal`: records request `r` in the journal, with
 * `note` (NUL-terminated, copied, may be NULL; the output's own words
 * about the request, e.g. the S3 object keys it makes of it), durably,
 * before the output sends anything of it. The write runs on libuv's
 * threadpool (a slow disk does not stall the loop), together with the
 * other requests journaled meanwhile. Returns 1: `cb(r, status)` runs once
 * the write ended (never from within this call), and the output sends
 * nothing of `r` before; 0: nothing to wait for (no journal, a request
 * already journaled: a retry or one made again after a restart, or
 * records without a file behind them, which cannot be made again), send
 * at once; or -ENOMEM: end `r` with LG_OUT_RETRY. */
int lg_out_req_journal(lg_out_req_t *r, const char *note,
                       lg_out_journaled_cb cb);

/* The note journaled with request `r`: for a retry, or a request made
 * again after a restart (the records of the journaled request, in its
 * order, or some of them for a retry), the note given then; NULL for a
 * request not journaled (yet). */
const char *lg_out_req_note(lg_out_req_t *r);

/* 1 when `r` was made again after a restart from only some of the records
 * of its journaled request: the others were acked before the crash, so
 * the request was answered then; the output tells from its note which of
 * these records are in what it wrote (and delivers them without sending),
 * and sends the others. */
int lg_out_req_partly(lg_out_req_t *r);

/* While on (1), the layer sends no request: lg_out_req_done still
 * settles, acks and queues the records to retry, but nothing goes out
 * until it is turned off (0), which sends what waits (from within this
 * call). For an output that ends several requests for one cause (Kafka
 * after a failed delivery): every retried record is back in the queue, in
 * submit order, before any of them is sent again, so no request mixes
 * records retried early with newer ones that should follow records still
 * to be retried. Loop thread; not nested. */
void lg_output_hold_sends(lg_output_t *o, int on);

/* The answer said when to try again (an HTTP Retry-After): if records of
 * `r` are retried, the output sends nothing before `ms` milliseconds from
 * now, whatever its backoff says. Call before lg_out_req_done. */
void lg_out_req_retry_after(lg_out_req_t *r, int64_t ms);

/* ---- the registered types ------------------------------------------------ */

extern const lg_output_type_t lg__output_stdout;
extern const lg_output_type_t lg__output_file;
extern const lg_output_type_t lg__output_kafka;
extern const lg_output_type_t lg__output_forward;
extern const lg_output_type_t lg__output_elasticsearch;
extern const lg_output_type_t lg__output_loki;
extern const lg_output_type_t lg__output_clickhouse;
extern const lg_output_type_t lg__output_otlp;
extern const lg_output_type_t lg__output_http;
extern const lg_output_type_t lg__output_s3;
extern const lg_output_type_t lg__output_cloudwatch_logs;

#endif
