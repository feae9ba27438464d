#include "engine/lg_engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <uv.h>

#include "pipeline/lg_batch.h"
#include "core/lg_buf.h"
#include "sources/tail/lg_checkpoint.h"
#include "pipeline/lg_ffi.h"
#include "sources/kubernetes/lg_k8s.h"
#include "engine/lg_admin_http.h"
#include "core/lg_json.h"
#include "core/lg_log.h"
#include "core/lg_metrics.h"
#include "pipeline/lg_lua.h"
#include "outputs/lg_output.h"
#include "engine/lg_reload.h"
#include "sources/tail/lg_tail.h"
#include "pipeline/lg_watchdog.h"
#include "pipeline/lg_worker.h"

#define FILE_BUCKETS 1024
#define POOL_MAX 8
#define BATCH_BYTES (1u << 20)
#define MAX_SLOTS 64 /* lg_rec_t.routes is a 64-bit mask */

/* A config, shared by the plans made from it and the outputs created from
 * its entries (an output keeps pointers into its lg_conf_output_t). */
/* The runtime of a kubernetes source, by engine source id. */
struct conf_ref;
typedef struct k8s_slot {
  struct lg_k8s *rt;    /* NULL: not a kubernetes source (or removed) */
  const lg_config_t *c; /* the config it was created from (its select()
                           runs in that config's Lua state) */
  struct conf_ref *ref; /* holds c when a reload created it; NULL: c is
                           the start config */
  int select;           /* the source has select() */
} k8s_slot_t;

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
  struct plan *next; /* retired plans */
  /* per pipeline of conf (lg_metrics.h handles, never freed) */
  lg_metric_t **m_dropped, **m_failed, **m_batches;
} plan_t;

enum { SLOT_FREE = 0, SLOT_LIVE, SLOT_CLOSING };

/* Per-batch engine state, kept in lg_batch_t.owner. The batch's own
 * `next` belongs to whichever queue holds it (worker, done list, pool);
 * `file_next` orders the in-flight batches of one file. */
typedef struct batch_state {
  struct lg_batch *file_next;
  uint32_t nrecs_out[64]; /* records encoded for each output index */
  struct plan *plan; /* processed with this generation; NULL once back */
  int dead_letter;   /* that generation's dead-letter slot */
  int acked;     /* every output acked */
  int processed; /* back from its worker, encoded */
  int rerouted;  /* a chunk was re-sent to the dead-letter output */
  struct dl_chunk *dl_chunks; /* those chunks, with the error added */
  int frozen;    /* its file's script is stuck: never delivered in this
                    run (1), and 2 for the batch the stuck thread holds,
                    which is never freed */
} batch_state_t;

#define ST(b) ((batch_state_t *)(b)->owner)

/* A chunk an output rejected for good, rewritten for the dead-letter
 * output with the reason in each record; it lives until the batch goes. */
typedef struct dl_chunk {
  struct dl_chunk *next;
  lg_buf_t buf;
} dl_chunk_t;

static void free_state(batch_state_t *st) {
  if (st == NULL)
    return;
  for (dl_chunk_t *c = st->dl_chunks, *nx; c != NULL; c = nx) {
    nx = c->next;
    lg_buf_free(&c->buf);
    free(c);
  }
  free(st);
}

/* Copies `chunk` (JSON lines, one record object each) into `out` with
 * "lugger.error": `why` added as the last key of every record, the way a
 * record a script failed on carries its error. 0 or -ENOMEM. */
static int add_error_to_lines(const lg_buf_t *chunk, const char *why,
                              lg_buf_t *out) {
  const char *p = chunk->data, *end = chunk->data + chunk->len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    if (n >= 2 && p[0] == '{' && p[n - 1] == '}') {
      int rc = lg_buf_append(out, p, n - 1);
      if (rc == 0 && n > 2)
        rc = lg_buf_putc(out, ',');
      if (rc == 0)
        rc = lg_buf_append(out, "\"lugger.error\":", 15);
      if (rc == 0)
        rc = lg_json_append_string(out, why, strlen(why));
      if (rc == 0)
        rc = lg_buf_append(out, "}\n", 2);
      if (rc != 0)
        return rc;
    } else if (lg_buf_append(out, p, n) != 0 || lg_buf_putc(out, '\n') != 0) {
      return -ENOMEM; /* not a record object: passed on unchanged */
    }
    p += n + 1;
  }
  return 0;
}

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

typedef struct engine {
  uv_loop_t loop;
  const lg_config_t *conf;
  lg_engine_opts_t opts;
  lg_checkpoint_t *cp;
  lg_tail_t *tail;
  struct k8s_slot *k8s; /* by engine source id: kubernetes runtimes */
  uint32_t nk8s;         /* entries of k8s */

  lg_output_t **outputs; /* by slot */
  size_t noutputs;        /* slots ever used: highest + 1 */
  const char **output_names;
  int dead_letter; /* slot, of the current plan */
  lg_conf_output_t *dead_letter_conf; /* the built-in one, when used */
  unsigned char slot_state[MAX_SLOTS];
  conf_ref_t *slot_ref[MAX_SLOTS]; /* the config a slot's output came from */

  plan_t *plan;    /* current generation */
  plan_t *retired; /* older ones with batches still in workers */
  lg_reload_t *reload;
  uint32_t nsrc_metrics; /* entries of m.read and m.bytes (by source id) */
  int reload_open;   /* the reloader has not finished closing */
  int handles_closing;
  uint64_t reload_busy; /* slots not free when the reload began */

  lg_worker_t **workers;
  int nworkers;

  /* Batches processed by workers, waiting for the loop thread. */
  pthread_mutex_t done_mu;
  lg_batch_t *done_head, *done_tail;
  uv_async_t done_async;

  file_queue_t *files[FILE_BUCKETS];
  lg_batch_t *pool;
  int pool_n;
  uint64_t in_flight;

  uint64_t mem_used, mem_budget;
  int paused;

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
  struct stuck_report *stuck;
  uint64_t *stuck_files; /* file keys whose batches are discarded */
  size_t nstuck_files;
  uint64_t frozen; /* in-flight batches that wait for a restart */
  lg_metric_t *m_stuck;

  uint64_t records_in;

  /* Prometheus metrics (lg_metrics.h); arrays by source, pipeline, output
   * index. */
  struct {
    lg_metric_t **read, **bytes;            /* per source */
    /* per pipeline: in each plan (pipelines change with reloads) */
    lg_metric_t **delivered, **out_failed;  /* per output slot */
    lg_metric_t *mem_used, *mem_budget, *dead_letter, *in_flight;
  } m;
} engine_t;

/* ---- file queues ---- */

static file_queue_t *file_queue(engine_t *e, uint64_t key, int create) {
  file_queue_t **pp = &e->files[key % FILE_BUCKETS];
  for (file_queue_t *q = *pp; q; q = q->next)
    if (q->file_key == key)
      return q;
  if (!create)
    return NULL;
  file_queue_t *q = calloc(1, sizeof *q);
  if (q == NULL)
    return NULL;
  q->file_key = key;
  q->next = *pp;
  *pp = q;
  return q;
}

static void file_queue_remove(engine_t *e, file_queue_t *q) {
  file_queue_t **pp = &e->files[q->file_key % FILE_BUCKETS];
  while (*pp != q)
    pp = &(*pp)->next;
  *pp = q->next;
  free(q);
}

/* ---- memory accounting and backpressure ---- */

/* Bytes a batch holds. Before its worker has run, the fields scripts will
 * set and the encoded JSON are not allocated yet; they are reserved as
 * twice the bytes read (measured: encoded records are 1.2-1.6 times their
 * body) plus the source's metadata, which every record repeats (a pod's
 * path metadata is ~300 bytes, more than many records), so the budget
 * bounds what the batch will hold, not what it holds now. */
static uint64_t batch_mem(const lg_batch_t *b) {
  uint64_t m = b->data_cap + (uint64_t)b->recs_cap * sizeof(lg_rec_t) +
               (uint64_t)b->fields_cap * sizeof(lg_field_t);
  for (uint32_t k = 0; k < b->nout; k++)
    m += b->out[k].cap;
  if (b->owner != NULL && !ST(b)->processed) {
    m += 2 * b->data_len;
    if (b->meta != NULL)
      m += (uint64_t)b->n * b->meta->json_len;
  }
  return m;
}

static void charge(engine_t *e, lg_batch_t *b) {
  uint64_t m = batch_mem(b);
  e->mem_used += m - b->mem_bytes;
  b->mem_bytes = m;
  lg_metric_set(e->m.mem_used, (int64_t)e->mem_used);
  if (!e->paused && e->mem_used >= e->mem_budget) {
    e->paused = 1;
    lg_tail_pause(e->tail);
    lg_log_debug("engine", "memory budget reached (%llu bytes): pausing",
                 (unsigned long long)e->mem_used);
  }
}

static void release(engine_t *e, lg_batch_t *b) {
  e->mem_used -= b->mem_bytes;
  lg_metric_set(e->m.mem_used, (int64_t)e->mem_used);
  lg_metric_set(e->m.in_flight, (int64_t)e->in_flight - 1);
  free_state(ST(b));
  b->owner = NULL;
  e->in_flight--;
  /* Keep a few batches for reuse; big ones (a huge line) are freed. */
  if (e->pool_n < POOL_MAX && b->data_cap <= 4 * BATCH_BYTES) {
    lg_batch_reset(b);
    b->next = e->pool;
    e->pool = b;
    e->pool_n++;
  } else {
    lg_batch_destroy(b);
  }
  if (e->paused && e->mem_used < e->mem_budget / 4 * 3 && !e->stopping) {
    e->paused = 0;
    lg_tail_resume(e->tail);
    lg_log_debug("engine", "below the memory budget: resuming");
  }
}

/* ---- config generations ---- */

static void conf_ref_release(conf_ref_t *r) {
  if (r == NULL || --r->refs > 0)
    return;
  if (r->owned)
    lg_config_destroy(r->c);
  free(r);
}

static void plan_free(plan_t *p) {
  if (p == NULL)
    return;
  conf_ref_release(p->conf);
  free(p->pipeline_routes);
  free(p->src_pipeline);
  free(p->src_idx);
  free(p->m_dropped);
  free(p->m_failed);
  free(p->m_batches);
  free(p);
}

static void on_output_closed(void *ud);

/* Frees the retired plans whose batches are all back from the workers,
 * then closes the outputs no plan uses any more: they deliver what they
 * hold (acks still come), then close and free their slot. */
static void retire_plans(engine_t *e) {
  uint64_t used = e->plan != NULL ? e->plan->slots : 0;
  for (plan_t **pp = &e->retired; *pp != NULL;) {
    plan_t *p = *pp;
    if (p->inflight == 0) {
      *pp = p->next;
      lg_log_debug("engine", "config generation %llu retired",
                   (unsigned long long)p->gen);
      plan_free(p);
      continue;
    }
    used |= p->slots;
    pp = &p->next;
  }
  if (e->stopping >= 2)
    return; /* the shutdown closes every output */
  for (size_t k = 0; k < e->noutputs; k++) {
    if (e->slot_state[k] != SLOT_LIVE || ((used >> k) & 1))
      continue;
    lg_log_info("engine", "output %s: removed by a reload; delivering what "
                          "it holds, then closing it",
                e->output_names[k]);
    e->slot_state[k] = SLOT_CLOSING;
    lg_output_close(e->outputs[k], on_output_closed, &e->output_ctx[k]);
  }
}

/* ---- the path of a batch: tail -> worker -> outputs -> ack ---- */

static lg_batch_t *get_batch(void *ud) {
  engine_t *e = ud;
  lg_batch_t *b = e->pool;
  if (b != NULL) {
    e->pool = b->next;
    e->pool_n--;
    b->next = NULL;
    return b;
  }
  return lg_batch_create(BATCH_BYTES + BATCH_BYTES / 4);
}

/* The pipeline of a batch in plan `p`: the source's, or for a kubernetes
 * source with select() the one select() chose for the file (the tail set
 * it as an index of the start config's pipelines; a reload may have
 * renumbered them, so it is found again by name). */
static int file_pipeline(engine_t *e, const plan_t *p, const lg_batch_t *b) {
  int def = b->source_id < p->nsrc ? p->src_pipeline[b->source_id] : -1;
  if (b->source_id >= e->nk8s || e->k8s[b->source_id].rt == NULL ||
      !e->k8s[b->source_id].select)
    return def;
  /* The pipeline index is of the config the runtime was created from. */
  const lg_config_t *c0 = e->k8s[b->source_id].c, *c = p->conf->c;
  if (b->pipeline < 0 || (size_t)b->pipeline >= c0->npipelines)
    return def;
  if (c == c0)
    return b->pipeline;
  const char *name = c0->pipelines[b->pipeline].name;
  for (size_t i = 0; i < c->npipelines; i++)
    if (strcmp(c->pipelines[i].name, name) == 0)
      return (int)i;
  return def; /* removed by a reload: the source's pipeline now */
}

static int file_stuck(const engine_t *e, uint64_t file_key) {
  for (size_t i = 0; i < e->nstuck_files; i++)
    if (e->stuck_files[i] == file_key)
      return 1;
  return 0;
}

static void on_batch(void *ud, lg_batch_t *b) {
  engine_t *e = ud;
  batch_state_t *st;
  file_queue_t *q;
  /* A kubernetes file that select() gave several pipelines: each gets a
   * copy, queued right after the batch in the file's queue (same
   * checkpoint), so the file moves on once every copy is delivered. The
   * copies are made before the batch goes to its worker. */
  if (b->more_pipelines != 0) {
    lg_batch_t *copies[64];
    int ncopies = 0;
    for (uint64_t more = b->more_pipelines; more != 0; more &= more - 1) {
      lg_batch_t *c = lg_k8s_batch_clone(b);
      if (c == NULL) {
        lg_log_error("engine", "out of memory copying a batch for pipeline "
                               "%d: its records are not sent there",
                     __builtin_ctzll(more));
        continue;
      }
      c->pipeline = __builtin_ctzll(more);
      c->lane = b->lane; /* its stream's worker, like the batch */
      copies[ncopies++] = c;
    }
    b->more_pipelines = 0;
    on_batch(ud, b);
    for (int i = 0; i < ncopies; i++)
      on_batch(ud, copies[i]);
    return;
  }
  /* A file whose script is stuck reads on, but its checkpoint stays
   * before the stuck batch until a restart, which reads these records
   * again: dropping them here loses nothing. */
  if (e->nstuck_files > 0 && file_stuck(e, b->file_key)) {
    if (e->pool_n < POOL_MAX && b->data_cap <= 4 * BATCH_BYTES) {
      lg_batch_reset(b);
      b->next = e->pool;
      e->pool = b;
      e->pool_n++;
    } else {
      lg_batch_destroy(b);
    }
    return;
  }
  /* Records that hung a script before the restart go to the dead-letter
   * output instead of to the script. */
  lg_watchdog_poison(e->watchdog, b);
  /* The batch holds bytes already read; it cannot be dropped, so wait
   * for memory rather than lose it. */
  while ((st = calloc(1, sizeof *st)) == NULL ||
         (q = file_queue(e, b->file_key, 1)) == NULL) {
    free(st);
    lg_log_error("engine", "out of memory queueing a batch; retrying");
    uv_sleep(50);
  }
  b->owner = st;
  if (b->source_id < e->nk8s && e->k8s[b->source_id].rt != NULL)
    lg_k8s_filter_batch(e->k8s[b->source_id].rt, b);
  /* The batch is processed with the generation current now; the worker
   * switches generations at the same point of its queue. */
  plan_t *p = e->plan;
  st->plan = p;
  st->dead_letter = p->dead_letter;
  p->inflight++;
  b->pipeline = file_pipeline(e, p, b);
  if (q->tail)
    ST(q->tail)->file_next = b;
  else
    q->head = b;
  q->tail = b;
  e->in_flight++;
  lg_metric_set(e->m.in_flight, (int64_t)e->in_flight);
  e->records_in += b->n;
  if (b->source_id < e->nsrc_metrics) {
    lg_metric_add(e->m.read[b->source_id], b->n);
    lg_metric_add(e->m.bytes[b->source_id],
                  b->n > 0 ? b->recs[b->n - 1].end_offset - b->recs[0].offset
                           : 0);
  }
  charge(e, b);
  /* Batches of one log stream (a file and the files that replaced it by
   * rotation: its lane) always go to the same worker, so the stream keeps
   * its order across rotations; other streams spread over the workers. */
  uint64_t lane = b->lane != 0 ? b->lane : b->file_key;
  lg_worker_push(e->workers[lane % (uint64_t)e->nworkers], b);
}

/* Worker thread: hand the processed batch back to the loop. */
static void on_worker_done(void *ud, lg_batch_t *b) {
  engine_t *e = ud;
  pthread_mutex_lock(&e->done_mu);
  b->next = NULL;
  if (e->done_tail)
    e->done_tail->next = b;
  else
    e->done_head = b;
  e->done_tail = b;
  pthread_mutex_unlock(&e->done_mu);
  uv_async_send(&e->done_async);
}

/* Moves the file's checkpoint over every acked batch at the queue head. */
static void advance_file(engine_t *e, uint64_t file_key) {
  file_queue_t *q = file_queue(e, file_key, 0);
  if (q == NULL)
    return;
  lg_batch_t *last = NULL;
  while (q->head != NULL && ST(q->head)->acked) {
    lg_batch_t *b = q->head;
    q->head = ST(b)->file_next;
    if (q->head == NULL)
      q->tail = NULL;
    if (last != NULL)
      release(e, last);
    last = b;
  }
  if (last != NULL) {
    /* After a shutdown timeout the tail is closed (checkpoints already
     * written); a late ack then moves nothing: those records are read
     * again after the restart. */
    if (e->tail != NULL)
      lg_tail_ack(e->tail, file_key, last->checkpoint_offset);
    release(e, last);
  }
  if (q->head == NULL)
    file_queue_remove(e, q);
}

static void batch_output_done(engine_t *e, lg_batch_t *b) {
  if (--b->pending > 0)
    return;
  ST(b)->acked = 1;
  advance_file(e, b->file_key);
}


/* Output ack: `ref` is the batch. A permanent failure sends the chunk's
 * records to the dead-letter output instead, so nothing is lost; the
 * batch stays pending until the dead-letter output has them. */
static void on_output_ack(void *ud, void *ref, int status) {
  output_ctx_t *oc = ud;
  engine_t *e = oc->e;
  lg_batch_t *b = ref;
  if (status >= 0 && b->owner != NULL && (uint32_t)oc->index < 64)
    lg_metric_add(e->m.delivered[oc->index], ST(b)->nrecs_out[oc->index]);
  if (status < 0) {
    if (b->owner != NULL && (uint32_t)oc->index < 64)
      lg_metric_add(e->m.out_failed[oc->index], ST(b)->nrecs_out[oc->index]);
    int dl = e->dead_letter; /* the current one is always open */
    if (dl >= 0 && dl != oc->index && (uint32_t)oc->index < b->nout) {
      lg_log_error("engine",
                   "output %s rejected records for good (%s); sending them "
                   "to the dead-letter output %s",
                   e->output_names[oc->index], strerror(-status),
                   e->output_names[dl]);
      const lg_buf_t *chunk = &b->out[oc->index];
      ST(b)->rerouted = 1;
      char why[256];
      snprintf(why, sizeof why, "output %s rejected the records for good: %s",
               e->output_names[oc->index], strerror(-status));
      dl_chunk_t *c = b->owner != NULL ? calloc(1, sizeof *c) : NULL;
      if (c != NULL && add_error_to_lines(chunk, why, &c->buf) == 0) {
        c->next = ST(b)->dl_chunks;
        ST(b)->dl_chunks = c;
        chunk = &c->buf;
      } else if (c != NULL) {
        lg_buf_free(&c->buf); /* out of memory: the records go as they are */
        free(c);
      }
      if (lg_output_submit_n(e->outputs[dl], chunk->data, chunk->len,
                             ST(b)->nrecs_out[oc->index], b) == 0)
        return; /* still pending: the dead-letter ack completes it */
    }
    lg_log_error("engine",
                 "output %s failed for good (%s) and no dead-letter output "
                 "took the records: %u records of %s lost",
                 e->output_names[oc->index], strerror(-status), b->n,
                 b->meta ? "this file" : "a file");
  }
  batch_output_done(e, b);
}

/* Counts what the scripts did to the batch and how many records each
 * output gets, for the metrics. */
static void count_batch(engine_t *e, lg_batch_t *b) {
  batch_state_t *st = ST(b);
  uint64_t dropped = 0, failed = 0;
  int dl = st->dead_letter;
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    if (r->flags & LG_REC_DROPPED) {
      dropped++;
      continue;
    }
    if ((r->flags & LG_REC_FAILED) && dl >= 0) {
      failed++;
      st->nrecs_out[dl]++;
      continue;
    }
    for (uint64_t routes = r->routes; routes; routes &= routes - 1)
      st->nrecs_out[__builtin_ctzll(routes)]++;
  }
  lg_metric_add(e->m.dead_letter, failed);
  const plan_t *p = st->plan;
  if (p != NULL && p->m_dropped != NULL && b->pipeline >= 0 &&
      (size_t)b->pipeline < p->conf->c->npipelines) {
    lg_metric_add(p->m_dropped[b->pipeline], dropped);
    lg_metric_add(p->m_failed[b->pipeline], failed);
    lg_metric_add(p->m_batches[b->pipeline], 1);
  }
}

static void submit_batch(engine_t *e, lg_batch_t *b) {
  ST(b)->processed = 1;
  count_batch(e, b);
  plan_t *p = ST(b)->plan;
  ST(b)->plan = NULL;
  charge(e, b); /* actual size, now that fields and JSON exist */
  b->pending = 1; /* guard: no completion before all are submitted */
  for (uint32_t k = 0; k < b->nout && k < e->noutputs; k++) {
    if (b->out[k].len == 0)
      continue;
    if (e->outputs[k] == NULL || e->slot_state[k] != SLOT_LIVE) {
      lg_log_error("engine", "output slot %u is closed: %u records of a "
                             "batch are not delivered",
                   k, b->n);
      continue;
    }
    b->pending++;
    int rc = lg_output_submit_n(e->outputs[k], b->out[k].data, b->out[k].len,
                                ST(b)->nrecs_out[k], b);
    if (rc != 0) {
      lg_log_error("engine", "output %s: submit failed: %s",
                   e->output_names[k], strerror(-rc));
      b->pending--;
    }
  }
  /* The last batch of a retired generation is with the outputs: outputs
   * only it used can now drain and close. */
  if (p != NULL && --p->inflight == 0 && p != e->plan)
    retire_plans(e);
  batch_output_done(e, b);
}

/* ---- stuck workers (lg_watchdog.h) ---- */

typedef struct stuck_report {
  int worker;
  lg_batch_t *batch;
  char msg[1024];
  struct stuck_report *next;
} stuck_report_t;

/* Watchdog thread: a worker's script cannot be interrupted. */
static void on_stuck(void *ud, const lg_watchdog_stall_t *s) {
  engine_t *e = ud;
  stuck_report_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    lg_admin_http_set_unhealthy("watchdog", "out of memory handling a stuck script");
    return;
  }
  r->worker = s->worker;
  r->batch = s->batch;
  snprintf(r->msg, sizeof r->msg,
           "pipeline %s: script %s stuck on the record at file %s offset "
           "%llu (worker %d abandoned; restart to send the record to the "
           "dead-letter output)",
           s->pipeline, s->script[0] ? s->script : "?",
           s->path[0] ? s->path : "?", (unsigned long long)s->offset,
           s->worker);
  pthread_mutex_lock(&e->done_mu);
  r->next = e->stuck;
  e->stuck = r;
  pthread_mutex_unlock(&e->done_mu);
  uv_async_send(&e->done_async);
}

static lg_worker_opts_t worker_opts(engine_t *e);
static void begin_stop(engine_t *e, const char *why);

/* Loop thread: freezes the stuck batch's file (its checkpoint stays before
 * the batch, later batches are discarded), says so on /readyz and
 * /healthz, and gives the worker's other files a fresh worker. */
static void handle_stuck(engine_t *e, stuck_report_t *r) {
  char key[64];
  snprintf(key, sizeof key, "watchdog.worker.%d", r->worker);
  lg_admin_http_set_unhealthy(key, r->msg);
  lg_metric_add(e->m_stuck, 1);
  lg_batch_t *b = r->batch;
  ST(b)->frozen = 2;
  e->frozen++;
  uint64_t *nf = realloc(e->stuck_files,
                         (e->nstuck_files + 1) * sizeof *e->stuck_files);
  if (nf != NULL) {
    e->stuck_files = nf;
    e->stuck_files[e->nstuck_files++] = b->file_key;
  }
  if (r->worker < 0 || r->worker >= e->nworkers)
    return;
  lg_batch_t *queued = lg_worker_abandon(e->workers[r->worker]);
  char err[512];
  lg_worker_opts_t wo = worker_opts(e);
  e->workers[r->worker] = lg_worker_create(r->worker, &wo, err, sizeof err);
  if (e->workers[r->worker] == NULL) {
    lg_log_error("engine", "cannot replace stuck worker %d: %s; stopping",
                 r->worker, err);
    e->exit_code = 1;
    while (queued != NULL) { /* still in their file queues: freed there */
      lg_batch_t *next = queued->next;
      queued->next = NULL;
      ST(queued)->frozen = 1;
      e->frozen++;
      queued = next;
    }
    begin_stop(e, "a stuck worker could not be replaced");
    return;
  }
  int moved = 0, held = 0;
  while (queued != NULL) {
    lg_batch_t *next = queued->next;
    queued->next = NULL;
    if (file_stuck(e, queued->file_key)) {
      /* Behind the stuck batch in its file: never processed now. */
      ST(queued)->frozen = 1;
      e->frozen++;
      held++;
    } else {
      lg_worker_push(e->workers[r->worker], queued);
      moved++;
    }
    queued = next;
  }
  lg_log_error("engine",
               "%s; worker %d replaced with a fresh Lua state: %d queued "
               "batches moved to it, %d held with the stuck file",
               r->msg, r->worker, moved, held);
}

static void on_done_async(uv_async_t *h) {
  engine_t *e = h->data;
  pthread_mutex_lock(&e->done_mu);
  lg_batch_t *b = e->done_head;
  e->done_head = e->done_tail = NULL;
  stuck_report_t *stuck = e->stuck;
  e->stuck = NULL;
  pthread_mutex_unlock(&e->done_mu);
  while (stuck != NULL) {
    stuck_report_t *next = stuck->next;
    handle_stuck(e, stuck);
    free(stuck);
    stuck = next;
  }
  while (b != NULL) {
    lg_batch_t *next = b->next;
    b->next = NULL;
    submit_batch(e, b);
    b = next;
  }
}

/* ---- stopping ---- */

static void on_closed(uv_handle_t *h) { (void)h; }

/* A reload still loading scripts when everything else is done: its
 * init does not return (a loop), and its threadpool job would keep the
 * loop, and so the process, alive for ever. The checkpoints are written
 * and every output is closed, so exiting loses nothing. */
static void on_reload_stuck(uv_timer_t *h) {
  engine_t *e = h->data;
  lg_log_warn("engine", "a reload is still running its scripts' init after "
                        "the shutdown; exiting with checkpoints written");
  _exit(e->exit_code);
}

static void close_handles(engine_t *e) {
  e->handles_closing = 1;
  uv_close((uv_handle_t *)&e->done_async, on_closed);
  uv_close((uv_handle_t *)&e->sig_term, on_closed);
  uv_close((uv_handle_t *)&e->sig_int, on_closed);
  uv_close((uv_handle_t *)&e->sig_hup, on_closed);
  uv_close((uv_handle_t *)&e->tick, on_closed);
  if (e->reload_open)
    uv_timer_start(&e->hard_stop, on_reload_stuck, 1000, 0);
  else
    uv_close((uv_handle_t *)&e->hard_stop, on_closed);
}

static void on_reload_closed(void *ud) {
  engine_t *e = ud;
  e->reload_open = 0;
  if (e->handles_closing)
    uv_close((uv_handle_t *)&e->hard_stop, on_closed);
}

static void on_hard_stop(uv_timer_t *h) {
  engine_t *e = h->data;
  lg_log_warn("engine", "outputs still blocked after the shutdown timeout; "
                        "exiting with checkpoints written");
  _exit(e->exit_code);
}

static void outputs_closed(engine_t *e) {
  if (--e->closing_outputs == 0)
    close_handles(e);
}

/* An output finished closing and is freed: forget it and free its slot.
 * During the shutdown, count it. */
static void on_output_closed(void *ud) {
  output_ctx_t *oc = ud;
  engine_t *e = oc->e;
  int k = oc->index;
  e->outputs[k] = NULL;
  e->slot_state[k] = SLOT_FREE;
  conf_ref_release(e->slot_ref[k]);
  e->slot_ref[k] = NULL;
  if (e->closing_outputs > 0)
    outputs_closed(e);
}

/* Stops the runtime of kubernetes source `id` (joins its API thread) and
 * drops its hold on its config. */
static void close_k8s_one(engine_t *e, uint32_t id) {
  if (id >= e->nk8s)
    return;
  k8s_slot_t *ks = &e->k8s[id];
  lg_k8s_close(ks->rt); /* freed in its handles' close callbacks */
  conf_ref_release(ks->ref); /* the callbacks do not use the config */
  memset(ks, 0, sizeof *ks);
}

static void close_k8s(engine_t *e) {
  for (uint32_t s = 0; s < e->nk8s; s++)
    close_k8s_one(e, s);
}

static void on_tail_closed(void *ud) {
  engine_t *e = ud;
  e->tail = NULL;
  close_k8s(e);
  /* One count per output plus one for this function, so handles close
   * only after every output, however many close at once. */
  e->closing_outputs = 1;
  for (size_t k = 0; k < e->noutputs; k++) {
    if (e->slot_state[k] == SLOT_LIVE) {
      e->closing_outputs++;
      e->slot_state[k] = SLOT_CLOSING;
      lg_output_close(e->outputs[k], on_output_closed, &e->output_ctx[k]);
    } else if (e->slot_state[k] == SLOT_CLOSING) {
      e->closing_outputs++; /* closing since a reload removed it */
    }
  }
  /* After the shutdown timeout, outputs drop what is still queued without
   * acking it: the checkpoint does not cover those records, so they are
   * read again after the restart. */
  if (e->timed_out) {
    for (size_t k = 0; k < e->noutputs; k++)
      if (e->outputs[k] != NULL)
        lg_output_abandon(e->outputs[k]);
    /* A write blocked in the kernel (a stdout pipe nobody reads) keeps a
     * threadpool job, and so the loop, alive for ever. The checkpoints are
     * written and cover only delivered records, so exiting now loses
     * nothing. */
    uv_timer_start(&e->hard_stop, on_hard_stop, 1000, 0);
  }
  outputs_closed(e);
}

static void finish(engine_t *e) {
  if (e->stopping == 2)
    return;
  e->stopping = 2;
  if (e->in_flight > e->frozen) {
    lg_log_warn("engine",
                "shutdown timeout: %llu batches not delivered; they will be "
                "read again after the restart",
                (unsigned long long)e->in_flight);
    e->timed_out = 1;
  }
  lg_tail_save(e->tail);
  for (uint32_t s = 0; s < e->nk8s; s++)
    lg_k8s_detach(e->k8s[s].rt);
  lg_tail_close(e->tail, on_tail_closed, e);
}

static void begin_stop(engine_t *e, const char *why) {
  if (e->stopping)
    return;
  e->stopping = 1;
  /* No reload during the drain; one in progress is discarded. */
  lg_reload_t *r = e->reload;
  e->reload = NULL;
  lg_reload_close(r, on_reload_closed, e);
  lg_admin_http_set_unready("engine", "stopping");
  lg_log_info("engine", "%s: stopping; draining %llu in-flight batches", why,
              (unsigned long long)e->in_flight);
  if (e->tail != NULL) /* NULL when start-up failed before the sources */
    lg_tail_pause(e->tail);
  /* The loop's cached time can be a busy turn behind: the drain gets its
   * whole shutdown_timeout from now, not from the turn's start. */
  uv_update_time(&e->loop);
  e->stop_deadline = uv_now(&e->loop) + e->conf->settings.shutdown_timeout_ms;
}

static void on_signal(uv_signal_t *h, int signum) {
  engine_t *e = h->data;
  if (signum == SIGHUP) {
    if (e->stopping)
      return;
    lg_log_info("engine", "SIGHUP: reopening outputs and reloading");
    for (size_t k = 0; k < e->noutputs; k++)
      if (e->slot_state[k] == SLOT_LIVE)
        lg_output_reopen(e->outputs[k]);
    lg_reload_request(e->reload, "SIGHUP");
    return;
  }
  begin_stop(e, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* A kubernetes source has files waiting for their pod's metadata (at most
 * api_wait): --once is not done before they are read. */
static int k8s_waiting(const engine_t *e) {
  for (uint32_t s = 0; s < e->nk8s; s++)
    if (e->k8s[s].rt != NULL && lg_k8s_waiting(e->k8s[s].rt))
      return 1;
  return 0;
}

static void on_tick(uv_timer_t *h) {
  engine_t *e = h->data;
  if (e->stopping == 1) {
    if (e->in_flight == e->frozen || uv_now(&e->loop) >= e->stop_deadline)
      finish(e);
    return;
  }
  if (e->stopping) /* finishing: the tail may be closed already */
    return;
  if (e->opts.once && e->in_flight == e->frozen && lg_tail_idle(e->tail) &&
      !k8s_waiting(e)) {
    begin_stop(e, "--once: every file read and delivered");
    return;
  }
  if (e->opts.once && e->in_flight == 0 && lg_tail_read_to_end(e->tail)) {
    /* Emit a last line without LF now rather than after its timeout; only
     * once every file is read to its end, or a line whose rest is not read
     * yet (reading paused at the memory budget) would be cut in two. */
    lg_tail_flush(e->tail);
  }
}

/* Output hook: the stable id of each record in the chunk an output got for
 * batch `ref`, in chunk order. It mirrors lg_worker_encode's choice of
 * which records go to which output. */
static int output_rec_ids(void *ud, void *ref,
                          void (*fn)(void *arg, uint32_t j, const char *id,
                                     size_t idlen),
                          void *arg) {
  output_ctx_t *oc = ud;
  engine_t *e = oc->e;
  lg_batch_t *b = ref;
  int k = oc->index;
  /* A chunk re-sent to the dead-letter output has another output's
   * records: their order is not this output's. */
  if (k == e->dead_letter && b->owner != NULL && ST(b)->rerouted)
    return -EINVAL;
  int dl = b->owner != NULL ? ST(b)->dead_letter : e->dead_letter;
  char id[64];
  uint32_t j = 0;
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    if (r->flags & LG_REC_DROPPED)
      continue;
    int mine = ((r->flags & LG_REC_FAILED) && dl >= 0)
                   ? k == dl
                   : (int)((r->routes >> k) & 1);
    if (!mine)
      continue;
    int n = lg_ffi_rec_id(b, i, id, sizeof id);
    if (n < 0)
      return n;
    fn(arg, j++, id, (size_t)n);
  }
  return 0;
}

/* ---- start-up ---- */

/* Creates the output of slot `k` from `oc`, which lives in `ref`. */
static int create_output(engine_t *e, int k, const lg_conf_output_t *oc,
                         conf_ref_t *ref, char *err, size_t errlen) {
  e->output_names[k] = oc->name;
  e->output_ctx[k].e = e;
  e->output_ctx[k].index = k;
  e->outputs[k] = lg_output_create(&e->loop, oc, k, on_output_ack,
                                   &e->output_ctx[k], err, errlen);
  if (e->outputs[k] == NULL)
    return -EINVAL;
  e->outputs[k]->rec_ids = output_rec_ids;
  e->outputs[k]->rec_ids_ud = &e->output_ctx[k];
  e->slot_state[k] = SLOT_LIVE;
  /* By name: an output re-created by a reload counts on in its series. */
  e->m.delivered[k] = lg_metrics_counter(
      "lugger_records_delivered_total",
      "Records the output acknowledged as delivered.", "output", oc->name,
      NULL);
  e->m.out_failed[k] = lg_metrics_counter(
      "lugger_records_output_failed_total",
      "Records the output rejected for good.", "output", oc->name, NULL);
  if (ref != NULL)
    ref->refs++;
  e->slot_ref[k] = ref;
  if ((size_t)k >= e->noutputs)
    e->noutputs = (size_t)k + 1;
  return 0;
}

/* Default routes of each pipeline as slot masks, and the pipeline of each
 * engine source. `src_conf[id]` is the config index of engine source `id`
 * (-1: not in this config). */
static int plan_routes(plan_t *p, const int *src_conf, uint32_t nsrc,
                       const int *out_slot) {
  const lg_config_t *c = p->conf->c;
  p->pipeline_routes = calloc(c->npipelines + 1, sizeof *p->pipeline_routes);
  p->src_pipeline = calloc(nsrc + 1, sizeof *p->src_pipeline);
  p->src_idx = calloc(nsrc + 1, sizeof *p->src_idx);
  if (p->pipeline_routes == NULL || p->src_pipeline == NULL ||
      p->src_idx == NULL)
    return -ENOMEM;
  memcpy(p->src_idx, src_conf, nsrc * sizeof *src_conf);
  for (size_t q = 0; q < c->npipelines; q++)
    for (size_t k = 0; k < c->pipelines[q].noutputs; k++)
      p->pipeline_routes[q] |= 1ull << out_slot[c->pipelines[q].outputs[k]];
  size_t np = c->npipelines + 1;
  p->m_dropped = calloc(np, sizeof *p->m_dropped);
  p->m_failed = calloc(np, sizeof *p->m_failed);
  p->m_batches = calloc(np, sizeof *p->m_batches);
  if (p->m_dropped == NULL || p->m_failed == NULL || p->m_batches == NULL)
    return -ENOMEM;
  /* The registry is thread-safe and hands out the same handle for the
   * same pipeline name, so a kept pipeline keeps counting on. */
  for (size_t q = 0; q < c->npipelines; q++) {
    const char *n = c->pipelines[q].name;
    p->m_dropped[q] = lg_metrics_counter(
        "lugger_records_dropped_total", "Records the pipeline's scripts dropped.",
        "pipeline", n, NULL);
    p->m_failed[q] = lg_metrics_counter(
        "lugger_records_failed_total",
        "Records a script failed on (sent to the dead-letter output).",
        "pipeline", n, NULL);
    p->m_batches[q] = lg_metrics_counter(
        "lugger_batches_total", "Batches the pipeline processed.", "pipeline",
        n, NULL);
  }
  p->nsrc = nsrc;
  for (uint32_t id = 0; id < nsrc; id++)
    p->src_pipeline[id] =
        src_conf[id] >= 0 ? c->sources[src_conf[id]].pipeline : -1;
  return 0;
}

static void plan_set_slot(plan_t *p, int k, const lg_conf_output_t *oc) {
  p->slot_conf[k] = oc;
  p->slot_name[k] = oc->name;
  p->slots |= 1ull << k;
  if ((size_t)k >= p->nslots)
    p->nslots = (size_t)k + 1;
}

static lg_worker_version_t plan_version(const plan_t *p) {
  return (lg_worker_version_t){.gen = p->gen,
                               .conf = p->conf->c,
                               .output_names = p->slot_name,
                               .noutputs = p->nslots,
                               .dead_letter = p->dead_letter,
                               .pipeline_routes = p->pipeline_routes};
}

/* Generation 0: config outputs in slots 0..n-1, the built-in dead-letter
 * output after them; engine source id = config index. */
static int start_outputs(engine_t *e) {
  const lg_config_t *c = e->conf;
  char err[512];
  /* Without settings.dead_letter, records that scripts fail on go to a
   * JSON-lines file in the state directory: never silently away. */
  if (c->settings.dead_letter == NULL) {
    char path[4096];
    snprintf(path, sizeof path, "%s/dead-letter.jsonl", c->settings.state_dir);
    const char *kv[] = {"path", path, "fsync", "always", NULL};
    e->dead_letter_conf =
        lg_config_output_new("dead-letter", "file", kv, err, sizeof err);
    if (e->dead_letter_conf == NULL) {
      lg_log_error("engine", "dead-letter output: %s", err);
      return -EINVAL;
    }
  }
  size_t n = c->noutputs + (e->dead_letter_conf != NULL);
  if (n > MAX_SLOTS) {
    lg_log_error("engine", "outputs: at most 64 outputs (and the dead-letter "
                           "one) are supported");
    return -EINVAL;
  }
  e->outputs = calloc(MAX_SLOTS, sizeof *e->outputs);
  e->output_names = calloc(MAX_SLOTS, sizeof *e->output_names);
  e->output_ctx = calloc(MAX_SLOTS, sizeof *e->output_ctx);
  e->m.delivered = calloc(MAX_SLOTS, sizeof *e->m.delivered);
  e->m.out_failed = calloc(MAX_SLOTS, sizeof *e->m.out_failed);
  plan_t *p = e->plan = calloc(1, sizeof *p);
  conf_ref_t *ref = calloc(1, sizeof *ref);
  int *src_conf = calloc(c->nsources + 1, sizeof *src_conf);
  int *out_slot = calloc(c->noutputs + 1, sizeof *out_slot);
  if (e->outputs == NULL || e->output_names == NULL || e->output_ctx == NULL ||
      e->m.delivered == NULL || e->m.out_failed == NULL || p == NULL || ref == NULL || src_conf == NULL || out_slot == NULL) {
    free(ref);
    free(src_conf);
    free(out_slot);
    return -ENOMEM;
  }
  ref->c = (lg_config_t *)c;
  ref->refs = 1;
  p->conf = ref;
  for (size_t k = 0; k < n; k++) {
    const lg_conf_output_t *oc =
        k < c->noutputs ? &c->outputs[k] : e->dead_letter_conf;
    int rc = create_output(e, (int)k, oc, k < c->noutputs ? ref : NULL, err,
                           sizeof err);
    if (rc != 0) {
      lg_log_error("engine", "outputs.%s: %s", oc->name, err);
      free(src_conf);
      free(out_slot);
      return rc;
    }
    plan_set_slot(p, (int)k, oc);
    if (k < c->noutputs)
      out_slot[k] = (int)k;
  }
  e->dead_letter = p->dead_letter =
      c->settings.dead_letter
          ? lg_config_output_index(c, c->settings.dead_letter)
          : (int)c->noutputs;
  for (size_t i = 0; i < c->nsources; i++)
    src_conf[i] = (int)i;
  int rc = plan_routes(p, src_conf, (uint32_t)c->nsources, out_slot);
  free(src_conf);
  free(out_slot);
  return rc;
}

/* Registers the engine's metrics (lg_metrics.h), labelled by source,
 * pipeline and output name. Registration failures leave NULL handles,
 * which the update calls ignore. */
static int register_metrics(engine_t *e) {
  const lg_config_t *c = e->conf;
  size_t ns = c->nsources ? c->nsources : 1;
  e->m.read = calloc(ns, sizeof *e->m.read);
  e->m.bytes = calloc(ns, sizeof *e->m.bytes);
  if (!e->m.read || !e->m.bytes)
    return -ENOMEM;
  e->nsrc_metrics = (uint32_t)c->nsources;
  for (size_t s = 0; s < c->nsources; s++) {
    const char *n = c->sources[s].name;
    e->m.read[s] = lg_metrics_counter("lugger_records_read_total",
                                      "Records read from the source's files.",
                                      "source", n, NULL);
    e->m.bytes[s] = lg_metrics_counter(
        "lugger_bytes_read_total", "Bytes of records read from the source's files.",
        "source", n, NULL);
  }
  e->m.dead_letter = lg_metrics_counter(
      "lugger_records_dead_letter_total",
      "Records sent to the dead-letter output because a script failed on them.",
      NULL);
  e->m.mem_used = lg_metrics_gauge(
      "lugger_memory_used_bytes",
      "Bytes read and not yet delivered, charged to settings.memory_budget.",
      NULL);
  e->m.mem_budget = lg_metrics_gauge("lugger_memory_budget_bytes",
                                     "settings.memory_budget.", NULL);
  lg_metric_set(e->m.mem_budget, (int64_t)e->mem_budget);
  e->m.in_flight = lg_metrics_gauge(
      "lugger_batches_in_flight", "Batches read and not yet delivered.", NULL);
  return 0;
}

/* Options for a worker of the current generation. */
static lg_worker_opts_t worker_opts(engine_t *e) {
  const plan_t *p = e->plan;
  return (lg_worker_opts_t){
      .conf = p->conf->c,
      .output_names = p->slot_name,
      .noutputs = p->nslots,
      .dead_letter = p->dead_letter,
      .pipeline_routes = p->pipeline_routes,
      .memory_limit = e->conf->settings.script_memory,
      .done = on_worker_done,
      .ud = e,
      .watchdog = e->watchdog,
  };
}

static int start_workers(engine_t *e) {
  const lg_config_t *c = e->conf;
  const plan_t *p = e->plan;
  e->nworkers = c->settings.workers > 0 ? c->settings.workers : 1;
  e->workers = calloc((size_t)e->nworkers, sizeof *e->workers);
  if (e->workers == NULL)
    return -ENOMEM;
  (void)p;
  lg_worker_opts_t wo = worker_opts(e);
  for (int w = 0; w < e->nworkers; w++) {
    char err[512];
    e->workers[w] = lg_worker_create(w, &wo, err, sizeof err);
    if (e->workers[w] == NULL) {
      lg_log_error("engine", "%s", err);
      return -EINVAL;
    }
  }
  return 0;
}

/* ---- hot reload (lg_reload.h) ---- */

/* A new generation, built off the loop thread, not yet running. */
typedef struct prepared {
  plan_t *plan;
  lg_lua_t **lua; /* per worker, init run */
  uint64_t new_slots; /* outputs to create */
  uint32_t *added, *removed; /* engine source ids to start and stop */
  size_t nadded, nremoved;
} prepared_t;

static void prepared_free(engine_t *e, prepared_t *pr) {
  if (pr == NULL)
    return;
  for (int w = 0; pr->lua != NULL && w < e->nworkers; w++)
    lg_lua_destroy(pr->lua[w]);
  free(pr->lua);
  free(pr->added);
  free(pr->removed);
  plan_free(pr->plan);
  free(pr);
}

static void reload_begin(void *ud) {
  engine_t *e = ud;
  e->reload_busy = 0;
  for (size_t k = 0; k < MAX_SLOTS; k++)
    if (e->slot_state[k] != SLOT_FREE)
      e->reload_busy |= 1ull << k;
}

/* Settings the running engine was built with; a reload cannot change
 * them (state, threads, listeners), so it warns and keeps them. */
static void check_settings(const lg_config_t *old, const lg_config_t *c) {
#define SAME_STR(a, b) ((a) == (b) || ((a) && (b) && strcmp((a), (b)) == 0))
  const char *changed[8];
  int n = 0;
  if (!SAME_STR(old->settings.state_dir, c->settings.state_dir))
    changed[n++] = "state_dir";
  if (old->settings.memory_budget != c->settings.memory_budget)
    changed[n++] = "memory_budget";
  if (old->settings.workers != c->settings.workers)
    changed[n++] = "workers";
  if (!SAME_STR(old->settings.http, c->settings.http))
    changed[n++] = "http";
  if (old->settings.checkpoint_interval_ms !=
      c->settings.checkpoint_interval_ms)
    changed[n++] = "checkpoint_interval";
  if (old->settings.rescan_interval_ms != c->settings.rescan_interval_ms)
    changed[n++] = "rescan_interval";
  if (old->settings.shutdown_timeout_ms != c->settings.shutdown_timeout_ms)
    changed[n++] = "shutdown_timeout";
#undef SAME_STR
  for (int i = 0; i < n; i++)
    lg_log_warn("reload",
                "%s: settings.%s changed: it takes effect after a restart",
                c->path, changed[i]);
}

/* Threadpool thread: diff `c` against the running generation and build
 * the new one with a fresh Lua state per worker. Reads e->plan, which
 * only a reload changes (reloads are serial), and e->reload_busy. */
static void *reload_prepare(void *ud, lg_config_t *c, lg_lua_script_t **texts,
                            char *err, size_t errlen) {
  engine_t *e = ud;
  const plan_t *cur = e->plan;
  const lg_config_t *old = cur->conf->c;
  prepared_t *pr = calloc(1, sizeof *pr);
  plan_t *p = calloc(1, sizeof *p);
  conf_ref_t *ref = calloc(1, sizeof *ref);
  int *out_slot = calloc(c->noutputs + 1, sizeof *out_slot);
  /* Ids of the running sources, then at most one new id per source. */
  size_t nids = e->plan->nsrc + c->nsources + 1;
  int *src_conf = malloc(nids * sizeof *src_conf);
  if (pr != NULL) {
    pr->added = calloc(nids, sizeof *pr->added);
    pr->removed = calloc(nids, sizeof *pr->removed);
  }
  if (pr == NULL || p == NULL || ref == NULL || out_slot == NULL ||
      src_conf == NULL || pr->added == NULL || pr->removed == NULL) {
    if (pr != NULL) {
      free(pr->added);
      free(pr->removed);
    }
    snprintf(err, errlen, "out of memory");
    free(pr);
    free(p);
    free(ref);
    free(out_slot);
    free(src_conf);
    lg_config_destroy(c);
    return NULL;
  }
  for (size_t i = 0; i < nids; i++)
    src_conf[i] = -1;
  ref->c = c;
  ref->refs = 1;
  ref->owned = 1;
  p->conf = ref;
  p->gen = cur->gen + 1;
  pr->plan = p;
  check_settings(e->conf, c);

  /* Sources: an unchanged one keeps its engine id and goes on reading
   * (only its pipeline may change); a removed one stops; a new or changed
   * one starts under a new id (ids are never reused, so a batch's
   * source_id always means one source). A kubernetes source's runtime
   * (with its API watch) goes and comes with its source. */
  uint32_t nold = cur->nsrc, nsrc = cur->nsrc;
  for (size_t i = 0; i < c->nsources; i++) {
    const lg_conf_source_t *ns = &c->sources[i];
    uint32_t id = nold;
    for (uint32_t k = 0; k < nold && id == nold; k++)
      if (cur->src_idx[k] >= 0 &&
          strcmp(old->sources[cur->src_idx[k]].name, ns->name) == 0)
        id = k;
    const lg_conf_source_t *os =
        id < nold ? &old->sources[cur->src_idx[id]] : NULL;
    if (os != NULL && lg_config_source_equal(os, ns)) {
      src_conf[id] = (int)i;
      continue;
    }
    src_conf[nsrc] = (int)i;
    pr->added[pr->nadded++] = nsrc++;
  }
  for (uint32_t id = 0; id < nold; id++) {
    if (cur->src_idx[id] < 0 || src_conf[id] >= 0)
      continue;
    pr->removed[pr->nremoved++] = id;
  }

  /* Outputs: an unchanged one keeps its slot (and its connections and
   * queued records); a new or changed one gets a free slot. */
  if (!(old->settings.dead_letter == c->settings.dead_letter ||
        (old->settings.dead_letter && c->settings.dead_letter &&
         strcmp(old->settings.dead_letter, c->settings.dead_letter) == 0))) {
    snprintf(err, errlen, "%s: settings.dead_letter: changing it needs a "
                          "restart",
             c->path);
    goto fail;
  }
  uint64_t taken = e->reload_busy;
  int builtin_dl = e->dead_letter_conf != NULL ? cur->dead_letter : -1;
  for (size_t i = 0; i < c->noutputs; i++) {
    int slot = -1;
    for (size_t k = 0; k < cur->nslots && slot < 0; k++)
      if ((int)k != builtin_dl && cur->slot_conf[k] != NULL &&
          lg_config_output_equal(cur->slot_conf[k], &c->outputs[i]))
        slot = (int)k;
    if (slot < 0) {
      for (int k = 0; k < MAX_SLOTS && slot < 0; k++)
        if (!((taken >> k) & 1))
          slot = k;
      if (slot < 0) {
        snprintf(err, errlen,
                 "%s: outputs.%s: no free output slot (64 outputs, counting "
                 "removed ones still delivering)",
                 c->path, c->outputs[i].name);
        goto fail;
      }
      taken |= 1ull << slot;
      pr->new_slots |= 1ull << slot;
    }
    out_slot[i] = slot;
    plan_set_slot(p, slot, &c->outputs[i]);
  }
  if (builtin_dl >= 0) {
    plan_set_slot(p, builtin_dl, e->dead_letter_conf);
    p->dead_letter = builtin_dl;
  } else {
    p->dead_letter = out_slot[lg_config_output_index(c, c->settings.dead_letter)];
  }
  if (plan_routes(p, src_conf, nsrc, out_slot) != 0) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }

  /* Fresh Lua states, one per worker, with init run: the slow part. */
  pr->lua = calloc((size_t)e->nworkers, sizeof *pr->lua);
  if (pr->lua == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  lg_worker_version_t v = plan_version(p);
  for (int w = 0; w < e->nworkers; w++) {
    pr->lua[w] = lg_worker_prepare(e->workers[w], &v, texts, err, errlen);
    if (pr->lua[w] == NULL)
      goto fail;
  }
  free(out_slot);
  free(src_conf);
  return pr;
fail:
  free(out_slot);
  free(src_conf);
  prepared_free(e, pr);
  return NULL;
}

/* Engine source ids grow with reloads that add sources. */
static int grow_source_metrics(engine_t *e, const plan_t *p) {
  if (p->nsrc <= e->nsrc_metrics)
    return 0;
  lg_metric_t **r = realloc(e->m.read, p->nsrc * sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  e->m.read = r;
  lg_metric_t **b = realloc(e->m.bytes, p->nsrc * sizeof *b);
  if (b == NULL)
    return -ENOMEM;
  e->m.bytes = b;
  for (uint32_t id = e->nsrc_metrics; id < p->nsrc; id++) {
    const char *n =
        p->src_idx[id] >= 0 ? p->conf->c->sources[p->src_idx[id]].name : "";
    e->m.read[id] = lg_metrics_counter("lugger_records_read_total",
                                       "Records read from the source's files.",
                                       "source", n, NULL);
    e->m.bytes[id] = lg_metrics_counter(
        "lugger_bytes_read_total",
        "Bytes of records read from the source's files.", "source", n, NULL);
  }
  e->nsrc_metrics = p->nsrc;
  return 0;
}

/* Starts source `sc` of config `ref` under engine id `id` (a reload added
 * it); a kubernetes source gets its runtime, which holds `ref`. */
static void add_source(engine_t *e, uint32_t id, conf_ref_t *ref,
                       const lg_conf_source_t *sc, int pipeline) {
  lg_tail_source_opts_t so = {
      .name = sc->name,
      .source_id = id,
      .pipeline = pipeline,
      .paths = (const char *const *)sc->paths,
      .npaths = sc->npaths,
      .exclude = (const char *const *)sc->exclude,
      .nexclude = sc->nexclude,
      .read_from_head = sc->read_from_head,
      .format = sc->format,
      .max_record_bytes = sc->max_record_bytes,
      .flush_timeout_ms = sc->flush_timeout_ms,
      .multiline = sc->multiline,
  };
  if (sc->k8s_downward)
    so.on_file = lg_k8s_downward_on_file;
  k8s_slot_t *ks = NULL;
  int rc = 0;
  if (sc->k8s != NULL) {
    if (id >= e->nk8s) {
      k8s_slot_t *g = realloc(e->k8s, (id + 1) * sizeof *g);
      if (g == NULL) {
        rc = -ENOMEM;
        goto out;
      }
      memset(g + e->nk8s, 0, (id + 1 - e->nk8s) * sizeof *g);
      e->k8s = g;
      e->nk8s = id + 1;
    }
    ks = &e->k8s[id];
    /* Batches carry pipeline indexes of the source's config: the
     * runtime's own (file_pipeline). */
    ks->rt = lg_k8s_create(&e->loop, ref->c, sc->name, id, sc->pipeline,
                           sc->k8s);
    if (ks->rt == NULL) {
      rc = -ENOMEM;
      goto out;
    }
    ks->c = ref->c;
    ks->ref = ref;
    ref->refs++;
    ks->select = sc->k8s->select_ref >= 0;
    lg_k8s_patterns(ks->rt, &so.paths, &so.npaths, &so.exclude, &so.nexclude);
    so.on_file = lg_k8s_on_file;
    so.file_ud = ks->rt;
  }
  rc = lg_tail_add_source(e->tail, &so);
  if (rc == 0 && ks != NULL)
    rc = lg_k8s_start(ks->rt, e->tail);
out:
  if (rc != 0)
    lg_log_error("engine", "sources.%s: cannot start it after a reload: %s",
                 sc->name, strerror(-rc));
  else
    lg_log_info("engine", "source %s: added by a reload", sc->name);
}

/* Loop thread: create the new outputs, then switch every worker at its
 * current queue position and make the new generation current. */
static int reload_apply(void *ud, void *prepared, char *err, size_t errlen) {
  engine_t *e = ud;
  prepared_t *pr = prepared;
  plan_t *p = pr->plan;
  if (e->stopping) {
    prepared_free(e, pr);
    snprintf(err, errlen, "the collector is stopping");
    return -ECANCELED;
  }
  for (int k = 0; k < MAX_SLOTS; k++) {
    if (!((pr->new_slots >> k) & 1))
      continue;
    char oerr[512];
    if (create_output(e, k, p->slot_conf[k], p->conf, oerr, sizeof oerr) != 0) {
      snprintf(err, errlen, "%s: outputs.%s: %s", p->conf->c->path,
               p->slot_conf[k]->name, oerr);
      /* Close the ones just created: no plan uses them. */
      prepared_free(e, pr);
      retire_plans(e);
      return -EINVAL;
    }
    lg_log_info("engine", "output %s: added by a reload", p->slot_conf[k]->name);
  }
  for (size_t k = 0; k < MAX_SLOTS; k++)
    if ((p->slots >> k) & 1)
      e->output_names[k] = p->slot_name[k];
  if (grow_source_metrics(e, p) != 0) {
    snprintf(err, errlen, "out of memory");
    prepared_free(e, pr);
    retire_plans(e);
    return -ENOMEM;
  }
  /* Removed sources stop first: what they framed already is handed on
   * now, under the old generation. */
  for (size_t i = 0; i < pr->nremoved; i++) {
    const lg_conf_source_t *os =
        &e->plan->conf->c->sources[e->plan->src_idx[pr->removed[i]]];
    lg_tail_remove_source(e->tail, pr->removed[i]);
    close_k8s_one(e, pr->removed[i]);
    lg_log_info("engine", "source %s: removed by a reload", os->name);
  }
  lg_worker_version_t v = plan_version(p);
  for (int w = 0; w < e->nworkers; w++) {
    lg_worker_swap(e->workers[w], &v, pr->lua[w]);
    pr->lua[w] = NULL;
  }
  plan_t *old = e->plan;
  old->next = e->retired;
  e->retired = old;
  e->plan = p;
  e->dead_letter = p->dead_letter;
  pr->plan = NULL;
  /* New sources start under the new generation; checkpoints of files
   * they follow are picked up as at a start. */
  for (size_t i = 0; i < pr->nadded; i++)
    add_source(e, pr->added[i], p->conf,
               &p->conf->c->sources[p->src_idx[pr->added[i]]],
               p->src_pipeline[pr->added[i]]);
  prepared_free(e, pr);
  retire_plans(e);
  lg_log_info("engine",
              "config generation %llu: %zu sources, %zu pipelines, %zu "
              "outputs",
              (unsigned long long)p->gen, p->conf->c->nsources,
              p->conf->c->npipelines, p->conf->c->noutputs);
  return 0;
}

static void reload_discard(void *ud, void *prepared) {
  prepared_free(ud, prepared);
}

static int start_sources(engine_t *e) {
  const lg_config_t *c = e->conf;
  lg_tail_opts_t to = {
      .rescan_interval_ms = c->settings.rescan_interval_ms,
      .checkpoint_interval_ms = c->settings.checkpoint_interval_ms,
      .batch_bytes = BATCH_BYTES,
      .read_bytes = 256 * 1024,
      .on_batch = on_batch,
      .get_batch = get_batch,
      .ud = e,
  };
  e->tail = lg_tail_create(&e->loop, e->cp, &to);
  if (e->tail == NULL)
    return -ENOMEM;
  e->k8s = calloc(c->nsources ? c->nsources : 1, sizeof *e->k8s);
  if (e->k8s == NULL)
    return -ENOMEM;
  e->nk8s = (uint32_t)c->nsources;
  for (size_t s = 0; s < c->nsources; s++) {
    const lg_conf_source_t *sc = &c->sources[s];
    lg_tail_source_opts_t so = {
        .name = sc->name,
        .source_id = (uint32_t)s,
        .pipeline = sc->pipeline,
        .paths = (const char *const *)sc->paths,
        .npaths = sc->npaths,
        .exclude = (const char *const *)sc->exclude,
        .nexclude = sc->nexclude,
        .read_from_head = sc->read_from_head,
        .format = sc->format,
        .max_record_bytes = sc->max_record_bytes,
        .flush_timeout_ms = sc->flush_timeout_ms,
        .multiline = sc->multiline,
    };
    if (sc->k8s != NULL) {
      /* A kubernetes source: the pod log layout, read by the same tailer
       * with a hook that gives each file its metadata. */
      e->k8s[s].rt = lg_k8s_create(&e->loop, c, sc->name, (uint32_t)s,
                                   sc->pipeline, sc->k8s);
      if (e->k8s[s].rt == NULL)
        return -ENOMEM;
      e->k8s[s].c = c;
      e->k8s[s].select = sc->k8s->select_ref >= 0;
      lg_k8s_patterns(e->k8s[s].rt, &so.paths, &so.npaths, &so.exclude,
                      &so.nexclude);
      so.on_file = lg_k8s_on_file;
      so.file_ud = e->k8s[s].rt;
    } else if (sc->k8s_downward) {
      so.on_file = lg_k8s_downward_on_file;
    }
    int rc = lg_tail_add_source(e->tail, &so);
    if (rc != 0) {
      lg_log_error("engine", "sources.%s: %s", sc->name, strerror(-rc));
      return rc;
    }
  }
  for (size_t s = 0; s < c->nsources; s++)
    if (e->k8s[s].rt != NULL && lg_k8s_start(e->k8s[s].rt, e->tail) != 0)
      return -ENOMEM;
  return lg_tail_start(e->tail);
}

static void engine_free(engine_t *e) {
  lg_admin_http_stop(e->http);
  for (int w = 0; e->workers && w < e->nworkers; w++)
    lg_worker_destroy(e->workers[w]);
  free(e->workers);
  /* After the workers, which use their watches until they end. */
  lg_watchdog_destroy(e->watchdog);
  free(e->stuck_files);
  while (e->stuck != NULL) {
    stuck_report_t *r = e->stuck;
    e->stuck = r->next;
    free(r);
  }
  while (e->pool) {
    lg_batch_t *b = e->pool;
    e->pool = b->next;
    lg_batch_destroy(b);
  }
  /* Batches still in flight after a shutdown timeout. */
  for (int i = 0; i < FILE_BUCKETS; i++) {
    while (e->files[i]) {
      file_queue_t *q = e->files[i];
      while (q->head) {
        lg_batch_t *b = q->head;
        q->head = ST(b)->file_next;
        /* The batch a stuck thread holds stays allocated (the thread may
         * still write to it); the watchdog's graveyard keeps it
         * reachable. */
        int held = ST(b)->frozen == 2;
        free_state(ST(b));
        if (!held)
          lg_batch_destroy(b);
      }
      e->files[i] = q->next;
      free(q);
    }
  }
  for (uint32_t s = 0; s < e->nk8s; s++)
    conf_ref_release(e->k8s[s].ref);
  free(e->k8s);
  free(e->outputs);
  free(e->output_names);
  free(e->output_ctx);
  free(e->m.read);
  free(e->m.bytes);
  free(e->m.delivered);
  free(e->m.out_failed);
  for (int k = 0; k < MAX_SLOTS; k++)
    conf_ref_release(e->slot_ref[k]);
  while (e->retired != NULL) {
    plan_t *p = e->retired;
    e->retired = p->next;
    plan_free(p);
  }
  plan_free(e->plan);
  lg_config_output_free(e->dead_letter_conf);
  lg_checkpoint_close(e->cp);
  pthread_mutex_destroy(&e->done_mu);
}

int lg_engine_run(const lg_config_t *conf, const lg_engine_opts_t *opts) {
  engine_t *e = calloc(1, sizeof *e);
  if (e == NULL)
    return 1;
  e->conf = conf;
  e->opts = *opts;
  e->mem_budget = conf->settings.memory_budget;
  e->dead_letter = -1;
  pthread_mutex_init(&e->done_mu, NULL);
  uv_loop_init(&e->loop);

  char err[512] = "";
  e->cp = lg_checkpoint_open(conf->settings.state_dir, err, sizeof err);
  if (e->cp == NULL) {
    lg_log_error("engine", "settings.state_dir: %s", err);
    e->exit_code = 1;
    goto out;
  }
  uv_async_init(&e->loop, &e->done_async, on_done_async);
  e->done_async.data = e;
  uv_signal_init(&e->loop, &e->sig_term);
  uv_signal_init(&e->loop, &e->sig_int);
  uv_signal_init(&e->loop, &e->sig_hup);
  e->sig_term.data = e->sig_int.data = e->sig_hup.data = e;
  uv_signal_start(&e->sig_term, on_signal, SIGTERM);
  uv_signal_start(&e->sig_int, on_signal, SIGINT);
  uv_signal_start(&e->sig_hup, on_signal, SIGHUP);
  /* `lugger run` blocked them during start-up; one that came meanwhile is
   * delivered now, to the handlers above. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
  uv_timer_init(&e->loop, &e->tick);
  e->tick.data = e;
  uv_timer_init(&e->loop, &e->hard_stop);
  e->hard_stop.data = e;

  /* The HTTP endpoint answers from the start: not ready until every
   * worker and source has started. */
  lg_admin_http_reset();
  lg_admin_http_set_unready("engine", "starting");
  if (conf->settings.http != NULL) {
    e->http = lg_admin_http_start(conf->settings.http, err, sizeof err);
    if (e->http == NULL) {
      lg_log_error("engine", "%s", err);
      e->exit_code = 1;
    }
  }

  if (e->exit_code == 0) {
    lg_watchdog_opts_t wdo = {.timeout_ms = conf->settings.script_timeout_ms,
                              .state_dir = conf->settings.state_dir,
                              .stuck = on_stuck,
                              .ud = e};
    e->watchdog = lg_watchdog_create(&wdo, err, sizeof err);
    if (e->watchdog == NULL) {
      lg_log_error("engine", "watchdog: %s", err);
      e->exit_code = 1;
    }
    e->m_stuck = lg_metrics_counter(
        "lugger_workers_abandoned_total",
        "Workers given up because their script was stuck (see /healthz).",
        NULL);
  }
  if (e->exit_code != 0 || start_outputs(e) != 0 || register_metrics(e) != 0 ||
      start_workers(e) != 0 ||
      start_sources(e) != 0) {
    e->exit_code = 1;
    begin_stop(e, "start-up failed");
    e->stop_deadline = 0;
  } else {
    lg_admin_http_set_unready("engine", NULL);
    lg_log_info("engine",
                "lugger %s running: %zu sources, %zu pipelines, %zu outputs, "
                "%d workers",
                LUGGER_VERSION, conf->nsources, conf->npipelines,
                conf->noutputs, e->nworkers);
    static const lg_reload_ops_t ops = {.prepare = reload_prepare,
                                        .apply = reload_apply,
                                        .discard = reload_discard,
                                        .begin = reload_begin};
    e->reload = lg_reload_create(&e->loop, conf, &ops, e);
    e->reload_open = e->reload != NULL;
    if (e->reload == NULL)
      lg_log_error("engine", "cannot watch the config for reloads (out of "
                             "memory)");
  }
  uv_timer_start(&e->tick, on_tick, 50, 50);
  if (e->tail == NULL) {
    /* Nothing to drain: close what was opened. */
    e->stopping = 2;
    on_tail_closed(e);
  }
  uv_run(&e->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&e->loop) != 0)
    lg_log_warn("engine", "libuv loop closed with handles still open");
out:
  engine_free(e);
  int rc = e->exit_code;
  free(e);
  return rc;
}
