#include "lg_engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <uv.h>

#include "lg_batch.h"
#include "lg_buf.h"
#include "lg_checkpoint.h"
#include "lg_ffi.h"
#include "lg_k8s.h"
#include "lg_log.h"
#include "lg_metrics.h"
#include "lg_output.h"
#include "lg_tail.h"
#include "lg_worker.h"

#define FILE_BUCKETS 1024
#define POOL_MAX 8
#define BATCH_BYTES (1u << 20)

/* Per-batch engine state, kept in lg_batch_t.owner. The batch's own
 * `next` belongs to whichever queue holds it (worker, done list, pool);
 * `file_next` orders the in-flight batches of one file. */
typedef struct batch_state {
  struct lg_batch *file_next;
  uint32_t nrecs_out[64]; /* records encoded for each output index */
  int acked;     /* every output acked */
  int processed; /* back from its worker, encoded */
  int rerouted;  /* a chunk was re-sent to the dead-letter output */
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

typedef struct engine {
  uv_loop_t loop;
  const lg_config_t *conf;
  lg_engine_opts_t opts;
  lg_checkpoint_t *cp;
  lg_tail_t *tail;
  lg_k8s_t **k8s; /* per source: its kubernetes runtime, or NULL */

  lg_output_t **outputs;
  size_t noutputs; /* config outputs, then the built-in dead-letter one */
  const char **output_names;
  int dead_letter;
  lg_conf_output_t *dead_letter_conf; /* the built-in one, when used */
  uint64_t *pipeline_routes;

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

  uint64_t records_in;

  /* Prometheus metrics (lg_metrics.h); arrays by source, pipeline, output
   * index. */
  struct {
    lg_metric_t **read, **bytes;            /* per source */
    lg_metric_t **dropped, **failed, **batches; /* per pipeline */
    lg_metric_t **delivered, **out_failed;  /* per output */
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
 * body), so the budget bounds what the batch will hold, not what it
 * holds now. */
static uint64_t batch_mem(const lg_batch_t *b) {
  uint64_t m = b->data_cap + (uint64_t)b->recs_cap * sizeof(lg_rec_t) +
               (uint64_t)b->fields_cap * sizeof(lg_field_t);
  for (uint32_t k = 0; k < b->nout; k++)
    m += b->out[k].cap;
  if (b->owner != NULL && !ST(b)->processed)
    m += 2 * b->data_len;
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
  free(b->owner);
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

static void on_batch(void *ud, lg_batch_t *b) {
  engine_t *e = ud;
  batch_state_t *st;
  file_queue_t *q;
  /* The batch holds bytes already read; it cannot be dropped, so wait
   * for memory rather than lose it. */
  while ((st = calloc(1, sizeof *st)) == NULL ||
         (q = file_queue(e, b->file_key, 1)) == NULL) {
    free(st);
    lg_log_error("engine", "out of memory queueing a batch; retrying");
    uv_sleep(50);
  }
  b->owner = st;
  if (e->k8s != NULL && e->k8s[b->source_id] != NULL)
    lg_k8s_filter_batch(e->k8s[b->source_id], b);
  if (q->tail)
    ST(q->tail)->file_next = b;
  else
    q->head = b;
  q->tail = b;
  e->in_flight++;
  lg_metric_set(e->m.in_flight, (int64_t)e->in_flight);
  e->records_in += b->n;
  if (b->source_id < e->conf->nsources) {
    lg_metric_add(e->m.read[b->source_id], b->n);
    lg_metric_add(e->m.bytes[b->source_id],
                  b->n > 0 ? b->recs[b->n - 1].end_offset - b->recs[0].offset
                           : 0);
  }
  charge(e, b);
  /* Batches of one file always go to the same worker: order is kept. */
  lg_worker_push(e->workers[b->file_key % (uint64_t)e->nworkers], b);
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

/* Each output acks through its own context, so the engine knows which
 * output a failure came from. */
struct output_ctx {
  struct engine *e;
  int index;
};

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
    int dl = e->dead_letter;
    if (dl >= 0 && dl != oc->index && (uint32_t)oc->index < b->nout) {
      lg_log_error("engine",
                   "output %s rejected records for good (%s); sending them "
                   "to the dead-letter output %s",
                   e->output_names[oc->index], strerror(-status),
                   e->output_names[dl]);
      const lg_buf_t *chunk = &b->out[oc->index];
      ST(b)->rerouted = 1;
      if (lg_output_submit(e->outputs[dl], chunk->data, chunk->len, b) == 0)
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
  int dl = e->dead_letter;
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
  if (b->pipeline >= 0 && (size_t)b->pipeline < e->conf->npipelines) {
    lg_metric_add(e->m.dropped[b->pipeline], dropped);
    lg_metric_add(e->m.failed[b->pipeline], failed);
    lg_metric_add(e->m.batches[b->pipeline], 1);
  }
}

static void submit_batch(engine_t *e, lg_batch_t *b) {
  ST(b)->processed = 1;
  count_batch(e, b);
  charge(e, b); /* actual size, now that fields and JSON exist */
  b->pending = 1; /* guard: no completion before all are submitted */
  for (uint32_t k = 0; k < b->nout && k < e->noutputs; k++) {
    if (b->out[k].len == 0)
      continue;
    b->pending++;
    int rc = lg_output_submit(e->outputs[k], b->out[k].data, b->out[k].len, b);
    if (rc != 0) {
      lg_log_error("engine", "output %s: submit failed: %s",
                   e->output_names[k], strerror(-rc));
      b->pending--;
    }
  }
  batch_output_done(e, b);
}

static void on_done_async(uv_async_t *h) {
  engine_t *e = h->data;
  pthread_mutex_lock(&e->done_mu);
  lg_batch_t *b = e->done_head;
  e->done_head = e->done_tail = NULL;
  pthread_mutex_unlock(&e->done_mu);
  while (b != NULL) {
    lg_batch_t *next = b->next;
    b->next = NULL;
    submit_batch(e, b);
    b = next;
  }
}

/* ---- stopping ---- */

static void on_closed(uv_handle_t *h) { (void)h; }

static void close_handles(engine_t *e) {
  uv_close((uv_handle_t *)&e->done_async, on_closed);
  uv_close((uv_handle_t *)&e->sig_term, on_closed);
  uv_close((uv_handle_t *)&e->sig_int, on_closed);
  uv_close((uv_handle_t *)&e->sig_hup, on_closed);
  uv_close((uv_handle_t *)&e->tick, on_closed);
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

/* An output finished closing and is freed: forget it. */
static void on_output_closed(void *ud) {
  output_ctx_t *oc = ud;
  oc->e->outputs[oc->index] = NULL;
  outputs_closed(oc->e);
}

static void close_k8s(engine_t *e) {
  for (size_t s = 0; e->k8s != NULL && s < e->conf->nsources; s++) {
    lg_k8s_close(e->k8s[s]); /* freed in its handles' close callbacks */
    e->k8s[s] = NULL;
  }
}

static void on_tail_closed(void *ud) {
  engine_t *e = ud;
  e->tail = NULL;
  close_k8s(e);
  /* One count per output plus one for this function, so handles close
   * only after every output, however many close at once. */
  e->closing_outputs = (int)e->noutputs + 1;
  for (size_t k = 0; k < e->noutputs; k++)
    if (e->outputs[k] != NULL)
      lg_output_close(e->outputs[k], on_output_closed, &e->output_ctx[k]);
    else
      e->closing_outputs--;
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
  if (e->in_flight > 0) {
    lg_log_warn("engine",
                "shutdown timeout: %llu batches not delivered; they will be "
                "read again after the restart",
                (unsigned long long)e->in_flight);
    e->timed_out = 1;
  }
  lg_tail_save(e->tail);
  for (size_t s = 0; e->k8s != NULL && s < e->conf->nsources; s++)
    lg_k8s_detach(e->k8s[s]);
  lg_tail_close(e->tail, on_tail_closed, e);
}

static void begin_stop(engine_t *e, const char *why) {
  if (e->stopping)
    return;
  e->stopping = 1;
  lg_log_info("engine", "%s: stopping; draining %llu in-flight batches", why,
              (unsigned long long)e->in_flight);
  lg_tail_pause(e->tail);
  e->stop_deadline = uv_now(&e->loop) + e->conf->settings.shutdown_timeout_ms;
}

static void on_signal(uv_signal_t *h, int signum) {
  engine_t *e = h->data;
  if (signum == SIGHUP) {
    lg_log_info("engine", "SIGHUP: reopening outputs");
    for (size_t k = 0; k < e->noutputs; k++)
      lg_output_reopen(e->outputs[k]);
    return;
  }
  begin_stop(e, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_tick(uv_timer_t *h) {
  engine_t *e = h->data;
  if (e->stopping == 1) {
    if (e->in_flight == 0 || uv_now(&e->loop) >= e->stop_deadline)
      finish(e);
    return;
  }
  if (e->opts.once && e->in_flight == 0 && lg_tail_idle(e->tail)) {
    begin_stop(e, "--once: every file read and delivered");
    return;
  }
  if (e->opts.once && e->in_flight == 0) {
    /* Emit a last line without LF now rather than after its timeout. */
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
  char id[64];
  uint32_t j = 0;
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    if (r->flags & LG_REC_DROPPED)
      continue;
    int mine = ((r->flags & LG_REC_FAILED) && e->dead_letter >= 0)
                   ? k == e->dead_letter
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
  e->noutputs = c->noutputs + (e->dead_letter_conf != NULL);
  if (e->noutputs > 64) {
    lg_log_error("engine", "outputs: at most 64 outputs (and the dead-letter "
                           "one) are supported");
    return -EINVAL;
  }
  e->outputs = calloc(e->noutputs, sizeof *e->outputs);
  e->output_names = calloc(e->noutputs, sizeof *e->output_names);
  e->output_ctx = calloc(e->noutputs, sizeof *e->output_ctx);
  if (e->outputs == NULL || e->output_names == NULL || e->output_ctx == NULL)
    return -ENOMEM;
  for (size_t k = 0; k < e->noutputs; k++) {
    const lg_conf_output_t *oc =
        k < c->noutputs ? &c->outputs[k] : e->dead_letter_conf;
    e->output_names[k] = oc->name;
    e->output_ctx[k].e = e;
    e->output_ctx[k].index = (int)k;
    e->outputs[k] = lg_output_create(&e->loop, oc, (int)k, on_output_ack,
                                     &e->output_ctx[k], err, sizeof err);
    if (e->outputs[k] == NULL) {
      lg_log_error("engine", "outputs.%s: %s", oc->name, err);
      return -EINVAL;
    }
    e->outputs[k]->rec_ids = output_rec_ids;
    e->outputs[k]->rec_ids_ud = &e->output_ctx[k];
  }
  e->dead_letter = c->settings.dead_letter
                       ? lg_config_output_index(c, c->settings.dead_letter)
                       : (int)c->noutputs;
  return 0;
}

/* Registers the engine's metrics (lg_metrics.h), labelled by source,
 * pipeline and output name. Registration failures leave NULL handles,
 * which the update calls ignore. */
static int register_metrics(engine_t *e) {
  const lg_config_t *c = e->conf;
  size_t ns = c->nsources ? c->nsources : 1, np = c->npipelines ? c->npipelines : 1;
  e->m.read = calloc(ns, sizeof *e->m.read);
  e->m.bytes = calloc(ns, sizeof *e->m.bytes);
  e->m.dropped = calloc(np, sizeof *e->m.dropped);
  e->m.failed = calloc(np, sizeof *e->m.failed);
  e->m.batches = calloc(np, sizeof *e->m.batches);
  e->m.delivered = calloc(e->noutputs, sizeof *e->m.delivered);
  e->m.out_failed = calloc(e->noutputs, sizeof *e->m.out_failed);
  if (!e->m.read || !e->m.bytes || !e->m.dropped || !e->m.failed ||
      !e->m.batches || !e->m.delivered || !e->m.out_failed)
    return -ENOMEM;
  for (size_t s = 0; s < c->nsources; s++) {
    const char *n = c->sources[s].name;
    e->m.read[s] = lg_metrics_counter("lugger_records_read_total",
                                      "Records read from the source's files.",
                                      "source", n, NULL);
    e->m.bytes[s] = lg_metrics_counter(
        "lugger_bytes_read_total", "Bytes of records read from the source's files.",
        "source", n, NULL);
  }
  for (size_t p = 0; p < c->npipelines; p++) {
    const char *n = c->pipelines[p].name;
    e->m.dropped[p] = lg_metrics_counter(
        "lugger_records_dropped_total", "Records the pipeline's scripts dropped.",
        "pipeline", n, NULL);
    e->m.failed[p] = lg_metrics_counter(
        "lugger_records_failed_total",
        "Records a script failed on (sent to the dead-letter output).",
        "pipeline", n, NULL);
    e->m.batches[p] = lg_metrics_counter(
        "lugger_batches_total", "Batches the pipeline processed.", "pipeline",
        n, NULL);
  }
  for (size_t k = 0; k < e->noutputs; k++) {
    e->m.delivered[k] = lg_metrics_counter(
        "lugger_records_delivered_total",
        "Records the output acknowledged as delivered.", "output",
        e->output_names[k], NULL);
    e->m.out_failed[k] = lg_metrics_counter(
        "lugger_records_output_failed_total",
        "Records the output rejected for good.", "output", e->output_names[k],
        NULL);
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

static int start_workers(engine_t *e) {
  const lg_config_t *c = e->conf;
  e->pipeline_routes = calloc(c->npipelines + 1, sizeof *e->pipeline_routes);
  if (e->pipeline_routes == NULL)
    return -ENOMEM;
  for (size_t p = 0; p < c->npipelines; p++)
    for (size_t k = 0; k < c->pipelines[p].noutputs; k++)
      e->pipeline_routes[p] |= 1ull << c->pipelines[p].outputs[k];
  e->nworkers = c->settings.workers > 0 ? c->settings.workers : 1;
  e->workers = calloc((size_t)e->nworkers, sizeof *e->workers);
  if (e->workers == NULL)
    return -ENOMEM;
  lg_worker_opts_t wo = {
      .conf = c,
      .output_names = e->output_names,
      .noutputs = e->noutputs,
      .dead_letter = e->dead_letter,
      .pipeline_routes = e->pipeline_routes,
      .done = on_worker_done,
      .ud = e,
  };
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
    };
    if (sc->k8s != NULL) {
      /* A kubernetes source: the pod log layout, read by the same tailer
       * with a hook that gives each file its metadata. */
      e->k8s[s] = lg_k8s_create(&e->loop, c, sc->name, (uint32_t)s,
                                sc->pipeline, sc->k8s);
      if (e->k8s[s] == NULL)
        return -ENOMEM;
      lg_k8s_patterns(e->k8s[s], &so.paths, &so.npaths, &so.exclude,
                      &so.nexclude);
      so.on_file = lg_k8s_on_file;
      so.file_ud = e->k8s[s];
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
    if (e->k8s[s] != NULL && lg_k8s_start(e->k8s[s], e->tail) != 0)
      return -ENOMEM;
  return lg_tail_start(e->tail);
}

static void engine_free(engine_t *e) {
  for (int w = 0; e->workers && w < e->nworkers; w++)
    lg_worker_destroy(e->workers[w]);
  free(e->workers);
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
        free(b->owner);
        lg_batch_destroy(b);
      }
      e->files[i] = q->next;
      free(q);
    }
  }
  free(e->k8s);
  free(e->outputs);
  free(e->output_names);
  free(e->output_ctx);
  free(e->pipeline_routes);
  free(e->m.read);
  free(e->m.bytes);
  free(e->m.dropped);
  free(e->m.failed);
  free(e->m.batches);
  free(e->m.delivered);
  free(e->m.out_failed);
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
  uv_timer_init(&e->loop, &e->tick);
  e->tick.data = e;
  uv_timer_init(&e->loop, &e->hard_stop);
  e->hard_stop.data = e;

  if (start_outputs(e) != 0 || register_metrics(e) != 0 ||
      start_workers(e) != 0 ||
      start_sources(e) != 0) {
    e->exit_code = 1;
    begin_stop(e, "start-up failed");
    e->stop_deadline = 0;
  } else {
    lg_log_info("engine",
                "lugger %s running: %zu sources, %zu pipelines, %zu outputs, "
                "%d workers",
                LUGGER_VERSION, conf->nsources, conf->npipelines,
                conf->noutputs, e->nworkers);
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
