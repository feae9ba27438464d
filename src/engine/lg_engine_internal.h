/*
 * lg_engine_internal.h - what the engine's files share: the engine, its
 * config generations (plans) and the per-batch state, and the functions
 * one engine file calls in another. Not for use outside src/engine/.
 *
 *   lg_engine.c         run, signals, stop, tick, start-up of workers and
 * sources lg_engine_flow.c    a batch's path: source -> worker -> outputs;
 * stuck workers lg_acks.c           per-file ordered acks to the sources,
 * memory budget lg_dead_letter.c    output acks, and which output takes
 * rejected records lg_plan.c           config generations, output slots and
 * routes lg_engine_reload.c  hot reload: prepare, apply, discard
 */
#ifndef LG_ENGINE_INTERNAL_H
#define LG_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "config/lg_config.h"
#include "core/lg_buf.h"
#include "core/lg_metrics.h"
#include "core/lg_u64map.h"
#include "engine/lg_admin_http.h"
#include "engine/lg_engine.h"
#include "engine/lg_reload.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_stateless_warn.h"
#include "pipeline/lg_watchdog.h"
#include "pipeline/lg_worker.h"
#include "sources/lg_source.h"

#define FILE_BUCKETS 1024
#define POOL_MAX 8
#define BATCH_BYTES (1u << 20)
/* A new batch's arena: a batch is handed on once it holds BATCH_BYTES,
 * and the last read may go past that. */
#define BATCH_CAP (BATCH_BYTES + BATCH_BYTES / 4)
#define MAX_SLOTS 64 /* lg_rec_t.routes is a 64-bit mask */

/* A config, shared by the plans made from it, the outputs created from
 * its entries (an output keeps pointers into its lg_conf_output_t) and
 * the sources that keep it (lg_source_spec_t.conf_hold). */
typedef struct conf_ref {
  lg_config_t *c;
  int refs;
  int owned; /* the first config belongs to the caller of lg_engine_run */
} conf_ref_t;

/* One config generation, as the engine runs it. Output "slots" are
 * output indexes (bits of lg_rec_t.routes, positions of lg_batch_t.out):
 * an output kept by a reload keeps its slot, a new one takes a free slot,
 * and a removed one frees its slot only after it is closed. Engine source
 * ids (lg_batch_t.source_id) are stable across reloads too. */
typedef struct plan {
  uint64_t gen;
  conf_ref_t *conf;
  const lg_conf_output_t *slot_conf[MAX_SLOTS]; /* NULL = slot not used */
  const char *slot_name[MAX_SLOTS];             /* given to the workers */
  size_t nslots;                                /* highest used + 1 */
  uint64_t slots;                               /* used slots as a mask */
  int dead_letter;                              /* slot */
  uint64_t *pipeline_routes; /* per pipeline of conf: slot mask */
  int *src_pipeline;         /* per engine source id: pipeline, -1 none */
  int *src_idx;              /* per engine source id: index in conf, -1 */
  uint32_t nsrc;
  uint64_t inflight; /* batches given to workers under it, not back yet */
  const lg_encoder_t *encoders; /* the engine's, by slot */
  struct plan *next;            /* retired plans */
  /* per pipeline of conf (lg_metrics.h handles, never freed) */
  lg_metric_t **m_dropped, **m_failed, **m_batches;
} plan_t;

enum { SLOT_FREE = 0, SLOT_LIVE, SLOT_CLOSING };

/* Per-batch engine state, kept in lg_batch_t.owner. The batch's own
 * `next` belongs to whichever queue holds it (worker, done list, pool);
 * `file_next` orders the in-flight batches of one file. */
typedef struct batch_state {
  struct lg_batch *file_next;
  struct plan *plan;  /* processed with this generation; NULL once back */
  int dead_letter;    /* that generation's dead-letter slot */
  int acked;          /* every output acked */
  int processed;      /* back from its worker, encoded */
  int frozen;         /* its file's script is stuck: never delivered in this
                         run (1), and 2 for the batch the stuck thread holds,
                         which is never freed */
  uint64_t lane, seq; /* its log stream and place in it (lg_reorder.c) */
  uint64_t admitted;  /* bytes charged when it was read (lg_acks.c) */
  uint32_t kept;      /* records its scripts did not drop, once processed */
  /* Output slots (bits) that could not take the batch for want of memory:
   * it is handed to them again from the tick (lg__submit_again), on the
   * engine's submit_later list through submit_next. */
  uint64_t submit_later;
  struct lg_batch *submit_next;
  int submit_logged;
} batch_state_t;

#define ST(b) ((batch_state_t *)(b)->owner)

/* In-flight batches of one file, oldest first. */
typedef struct file_queue {
  uint64_t file_key;
  lg_batch_t *head, *tail;
  struct file_queue *next; /* hash chain */
} file_queue_t;

struct engine;
typedef struct output_ctx output_ctx_t;

/* Each output acks through its own context, so the engine knows which
 * output a failure came from. */
struct output_ctx {
  struct engine *e;
  int index; /* slot */
};

typedef struct reorder_lane reorder_lane_t;

typedef struct engine {
  uv_loop_t loop;
  const lg_config_t *conf;
  lg_engine_opts_t opts;
  lg_sources_t *sources; /* lg_source.h: every source, by engine id */
  lg_source_host_t source_host;
  int sources_started;
  int sources_closed; /* lg_sources_close is done (acks are ignored) */

  /* Batches some output must take again (out of memory), oldest first,
   * and the slots they wait for: a later batch for such a slot waits
   * behind them (lg__submit_again), so an output gets batches in order. */
  lg_batch_t *submit_later, *submit_later_tail;
  uint64_t submit_later_slots;
  lg_output_t **outputs; /* by slot */
  size_t noutputs;       /* slots ever used: highest + 1 */
  const char **output_names;
  lg_encoder_t encoders[MAX_SLOTS];   /* by slot: lg_output_encoder */
  int dead_letter;                    /* slot, of the current plan */
  lg_conf_output_t *dead_letter_conf; /* the built-in one, when used */
  unsigned char slot_state[MAX_SLOTS];
  conf_ref_t *slot_ref[MAX_SLOTS]; /* the config a slot's output came from */

  plan_t *plan;    /* current generation */
  plan_t *retired; /* older ones with batches still in workers */
  lg_reload_t *reload;
  uint32_t nsrc_metrics; /* entries of m.read and m.bytes (by source id) */
  int reload_open;       /* the reloader has not finished closing */
  int handles_closing;
  uint64_t reload_busy; /* slots not free when the reload began */

  lg_worker_t **workers;
  int nworkers;
  lg_crew_t *crew; /* the workers, for taking each other's stateless
                      batches; NULL with one worker */

  /* Batches processed by workers, waiting for the loop thread. */
  pthread_mutex_t done_mu;
  lg_batch_t *done_head, *done_tail;
  uv_async_t done_async;

  file_queue_t *files[FILE_BUCKETS];
  reorder_lane_t *lanes[FILE_BUCKETS]; /* lg_reorder.c, by lane */
  lg_batch_t *pool;
  int pool_n;
  uint64_t in_flight;

  uint64_t mem_used, mem_budget;
  /* Of mem_used: what sources hold outside batches (held_bytes). */
  uint64_t mem_held;
  int paused;
  int draining; /* lg_sources_drain is on */

  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t tick;
  uv_timer_t hard_stop; /* exit when outputs stay blocked after the timeout */
  int stopping;
  uint64_t stop_deadline;
  int closing_outputs;
  int timed_out; /* shutdown went past settings.shutdown_timeout */
  int exit_code;
  output_ctx_t *output_ctx;
  lg_admin_http_t *http; /* settings.http, NULL when off */

  /* Watchdog (lg_watchdog.h): stuck workers are reported from its thread
   * through `stuck` (under done_mu, woken by done_async) and handled on
   * the loop: their files freeze, the worker is replaced. */
  lg_watchdog_t *watchdog;
  /* What the stateless warning last named (lg_stateless_warn.h). */
  lg_stateless_warned_t *stateless_warned;
  struct stuck_report *stuck;
  /* Files whose script is stuck: the stuck batch's file key and place in
   * its stream (lg_reorder.c); the file's batches after it are discarded
   * or frozen until a restart. */
  struct stuck_file {
    uint64_t file_key, seq;
  } * stuck_files;
  size_t nstuck_files;
  uint64_t frozen; /* in-flight batches that wait for a restart */
  lg_metric_t *m_stuck;

  /* Where files were resumed at their checkpoints (lg__on_file_resumed),
   * one per fingerprint, the first (the start's: what the last run
   * acked): told to outputs created later by a reload too, which a
   * request of the last run in their journal may wait for. */
  struct resumed {
    uint64_t fp, offset;
  } * resumed;
  size_t nresumed, resumed_cap;
  /* Fingerprint -> its index in `resumed`: a start resumes thousands of
   * files, and a linear search for each made it quadratic. */
  lg_u64map_t resumed_ix;

  uint64_t records_in;

  /* Prometheus metrics (lg_metrics.h); arrays by source, pipeline, output
   * index. */
  struct {
    lg_metric_t **read, **bytes; /* per source */
    /* per pipeline: in each plan (pipelines change with reloads) */
    lg_metric_t *mem_used, *mem_budget, *dead_letter, *in_flight;
  } m;
} engine_t;

typedef struct stuck_report {
  int worker;
  lg_batch_t *batch;
  char msg[1024];
  struct stuck_report *next;
} stuck_report_t;

/* lg_reorder.c: the sequence of a newly queued batch of `lane` (0 or
 * -ENOMEM); a batch back from its worker (or `b` NULL: sequence `seq`
 * will never come back), calling emit for every batch now in sequence
 * (0 or -ENOMEM, nothing changed); freeing what is left at exit. */
int lg__reorder_assign(engine_t *e, uint64_t lane, uint64_t *seq);
int lg__reorder_done(engine_t *e, uint64_t lane, uint64_t seq, lg_batch_t *b,
                     void (*emit)(engine_t *, lg_batch_t *));
void lg__reorder_free(engine_t *e);

/* lg_acks.c */
void lg__free_state(batch_state_t *st);
file_queue_t *lg__file_queue(engine_t *e, uint64_t key, int create);
void lg__charge(engine_t *e, lg_batch_t *b);
/* After mem_used, in_flight or frozen changed: pauses the sources at the
 * budget, resumes them below 3/4 of it, and lets them drain what they hold
 * outside batches (lg_sources_drain) while that alone keeps them paused:
 * with no batch in flight to come back (frozen ones never do), only
 * reading a held line to its end frees memory. */
void lg__budget_changed(engine_t *e);
/* Memory pressure on (1) or off (0) for every live output
 * (lg_output_set_pressure: what waits to fill a request is sent now). */
void lg__outputs_pressure(engine_t *e, int on);
void lg__batch_output_done(engine_t *e, lg_batch_t *b);

/* Hands processed batch `b` to every output slot it has records for
 * (lg_output_submit), each counted in b->pending. A slot that cannot take
 * it for want of memory gets it again from the tick (lg__submit_again):
 * the batch stays pending for it, so its file's checkpoint does not pass
 * records never handed over. */
void lg__submit_to_outputs(engine_t *e, lg_batch_t *b);

/* Hands the batches some output could not take (out of memory) to those
 * outputs again; from the tick. */
void lg__submit_again(engine_t *e);

/* lg_dead_letter.c */
void lg__on_output_ack(void *ud, void *ref, int status);
lg_output_t *lg__dead_letter_output(void *ud);
void lg__on_output_sent(void *ud, void *ref, const lg_batch_t *b,
                        uint32_t index);

/* lg_plan.c */
void lg__conf_ref_release(conf_ref_t *r);
void lg__plan_free(plan_t *p);
void lg__retire_plans(engine_t *e);
int lg__create_output(engine_t *e, int k, const lg_conf_output_t *oc,
                      conf_ref_t *ref, char *err, size_t errlen);
int lg__plan_routes(plan_t *p, const int *src_conf, uint32_t nsrc,
                    const int *out_slot);
void lg__plan_set_slot(plan_t *p, int k, const lg_conf_output_t *oc);
lg_worker_version_t lg__plan_version(const plan_t *p);
int lg__start_outputs(engine_t *e);

/* lg_engine_flow.c */
lg_batch_t *lg__get_batch(void *ud);
/* lg_source_host_t.held_bytes: charges `delta` bytes sources hold outside
 * batches to the memory budget (lg_acks.c). */
void lg__on_held(void *ud, int64_t delta);
/* Gives batch `b` back (its records settled or dropped): reset into the
 * pool, or freed when the pool is full or `b` grew large (a huge line). */
void lg__put_batch(engine_t *e, lg_batch_t *b);
void lg__on_batch(void *ud, lg_batch_t *b);
void lg__on_file_resumed(void *ud, uint64_t fingerprint, uint64_t offset);
int lg__prefixes_wanted(void *ud);
void lg__on_file_prefixes(void *ud, uint64_t fingerprint,
                          const uint64_t *prefix, uint32_t n);
/* Tells output `o` where every file resumed so far did (an output a
 * reload created after the files were opened). */
void lg__tell_resumed(engine_t *e, lg_output_t *o);
/* Tells output `o`, which a reload creates now, the prefixes' hashes of
 * every file open (lg_output_file_prefixes), as their opens told the
 * outputs of then, under the files' fingerprints now. */
void lg__tell_prefixes(engine_t *e, lg_output_t *o);
/* Tells output `o`, which a reload creates now, what records of each file
 * were handed on before it existed (lg_output_file_read): the batches
 * handed on so far are processed under the old config. */
void lg__tell_read(engine_t *e, lg_output_t *o);
void lg__on_worker_done(void *ud, lg_batch_t *b);
void lg__on_stuck(void *ud, const lg_watchdog_stall_t *s);
void lg__on_done_async(uv_async_t *h);

/* lg_engine.c */
void lg__on_output_closed(void *ud);
void lg__begin_stop(engine_t *e, const char *why);
/* Runs the engine's tick at the next turn of the loop (and every 50 ms
 * after): --once looks at once whether everything is read and delivered. */
void lg__tick_soon(engine_t *e);
lg_worker_opts_t lg__worker_opts(engine_t *e);
/* Registers engine source `id`'s read metrics (records and bytes, labelled
 * source=`name`) into e->m.read[id] and e->m.bytes[id], which have room. */
void lg__source_metrics(engine_t *e, uint32_t id, const char *name);

/* lg_engine_reload.c */
extern const lg_reload_ops_t lg__reload_ops;

#endif
