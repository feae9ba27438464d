/* A batch's path through the engine: from its source (the plan it runs
 * under, its pipeline) to its worker, back to the loop, and on to the
 * outputs; and the workers the watchdog found stuck. */
#include "engine/lg_engine_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_log.h"
#include "core/lg_util.h"
#include "pipeline/lg_meta.h"

/* ---- the path of a batch: source -> worker -> outputs -> ack ---- */

lg_batch_t *lg__get_batch(void *ud) {
  engine_t *e = ud;
  lg_batch_t *b = e->pool;
  if (b != NULL) {
    e->pool = b->next;
    e->pool_n--;
    b->next = NULL;
    /* Cut to a quiet file's few lines (lg__on_batch): full size again,
     * so a busy file taking it does not grow it by doubling. */
    lg_batch_unfit(b, BATCH_CAP);
    return b;
  }
  return lg_batch_create(BATCH_CAP);
}

void lg__put_batch(engine_t *e, lg_batch_t *b) {
  /* Keep a few batches for reuse; big ones (a huge line) are freed. */
  if (e->pool_n < POOL_MAX && b->data_cap <= 4 * BATCH_BYTES) {
    lg_batch_reset(b);
    b->next = e->pool;
    e->pool = b;
    e->pool_n++;
  } else {
    lg_batch_destroy(b);
  }
}

/* The pipeline of a batch in plan `p`: the source's, or the one its
 * source chose for it (e.g. a kubernetes source's select()). A chosen
 * index is of the config the source was started with; a reload may have
 * renumbered the pipelines, so it is found again by name. */
static int file_pipeline(engine_t *e, const plan_t *p, const lg_batch_t *b) {
  int def = b->source_id < p->nsrc ? p->src_pipeline[b->source_id] : -1;
  const lg_config_t *c0 = NULL, *c = p->conf->c;
  int chosen = lg_sources_chosen_pipeline(e->sources, b, &c0);
  if (chosen < 0 || (size_t)chosen >= c0->npipelines)
    return def;
  if (c == c0)
    return chosen;
  const char *name = c0->pipelines[chosen].name;
  for (size_t i = 0; i < c->npipelines; i++)
    if (strcmp(c->pipelines[i].name, name) == 0)
      return (int)i;
  return def; /* removed by a reload: the source's pipeline now */
}

static int file_stuck(const engine_t *e, uint64_t file_key) {
  for (size_t i = 0; i < e->nstuck_files; i++)
    if (e->stuck_files[i].file_key == file_key)
      return 1;
  return 0;
}

/* True for a batch of a stuck file that comes after the stuck batch in
 * the file's stream. */
static int behind_stuck(const engine_t *e, const lg_batch_t *b) {
  for (size_t i = 0; i < e->nstuck_files; i++)
    if (e->stuck_files[i].file_key == b->file_key &&
        ST(b)->seq > e->stuck_files[i].seq)
      return 1;
  return 0;
}

/* Source host hook: a file is read from `offset` on. Every output is told
 * (a journaling one may wait for records of it from the last run; the
 * others ignore it): which outputs a file's records went to before the
 * restart is not known. Kept for outputs a reload creates later
 * (lg__tell_resumed): the files are open by then and not resumed again.
 * Per file only the first is kept: the start's checkpoint is what the
 * last run acked; a later one (a source a reload re-added) also counts
 * this run's acks, to outputs that a new output was not one of. */
void lg__on_file_resumed(void *ud, uint64_t fingerprint, uint64_t offset) {
  engine_t *e = ud;
  for (size_t k = 0; k < e->noutputs; k++)
    if (e->slot_state[k] == SLOT_LIVE && e->outputs[k] != NULL)
      lg_output_file_resumed(e->outputs[k], fingerprint, offset);
  if (lg_u64map_get(&e->resumed_ix, fingerprint, NULL))
    return;
  if (LG_GROW(e->resumed, e->resumed_cap, e->nresumed + 1, 64) != 0 ||
      lg_u64map_add(&e->resumed_ix, fingerprint, e->nresumed) < 0) {
    lg_log_warn("engine", "out of memory keeping where a file resumed: an "
                          "output a reload adds may wait for its records");
    return;
  }
  e->resumed[e->nresumed++] = (struct resumed){fingerprint, offset};
}

/* Source host hook: a file opened near its start, and its prefixes'
 * hashes: every live output is told (lg_output_file_prefixes). */
void lg__on_file_prefixes(void *ud, uint64_t fingerprint,
                          const uint64_t *prefix, uint32_t n) {
  engine_t *e = ud;
  for (size_t k = 0; k < e->noutputs; k++)
    if (e->slot_state[k] == SLOT_LIVE && e->outputs[k] != NULL)
      lg_output_file_prefixes(e->outputs[k], fingerprint, prefix, n);
}

/* Source host hook: does a live output wait for records of the last run
 * (only such an output uses lg__on_file_prefixes)? Asked at each file
 * opened near its start, so the tail hashes its prefixes only then. */
int lg__prefixes_wanted(void *ud) {
  engine_t *e = ud;
  for (size_t k = 0; k < e->noutputs; k++)
    if (e->slot_state[k] == SLOT_LIVE && e->outputs[k] != NULL &&
        lg_output_waits_for_files(e->outputs[k]))
      return 1;
  return 0;
}

void lg__tell_resumed(engine_t *e, lg_output_t *o) {
  for (size_t i = 0; i < e->nresumed; i++)
    lg_output_file_resumed(o, e->resumed[i].fp, e->resumed[i].offset);
}

static void tell_read(void *ud, uint64_t fingerprint, uint64_t from,
                      uint64_t to) {
  lg_output_file_read(ud, fingerprint, from, to);
}

static void tell_prefixes(void *ud, uint64_t fingerprint,
                          const uint64_t *prefix, uint32_t n) {
  lg_output_file_prefixes(ud, fingerprint, prefix, n);
}

void lg__tell_prefixes(engine_t *e, lg_output_t *o) {
  if (e->sources != NULL && lg_output_waits_for_files(o))
    lg_sources_each_prefixes(e->sources, tell_prefixes, o);
}

void lg__tell_read(engine_t *e, lg_output_t *o) {
  if (e->sources != NULL && lg_output_waits_for_files(o))
    lg_sources_each_read(e->sources, tell_read, o);
}

void lg__on_batch(void *ud, lg_batch_t *b) {
  engine_t *e = ud;
  batch_state_t *st;
  file_queue_t *q;
  /* A file whose script is stuck reads on, but its checkpoint stays
   * before the stuck batch until a restart, which reads these records
   * again: dropping them here loses nothing. */
  if (e->nstuck_files > 0 && file_stuck(e, b->file_key)) {
    lg_sources_drop(e->sources, b);
    lg__put_batch(e, b);
    return;
  }
  /* Records that hung a script before the restart go to the dead-letter
   * output instead of to the script. */
  lg_watchdog_poison(e->watchdog, b);
  /* The batch holds bytes already read; it cannot be dropped, so wait
   * for memory rather than lose it. */
  while ((st = calloc(1, sizeof *st)) == NULL ||
         (q = lg__file_queue(e, b->file_key, 1)) == NULL) {
    free(st);
    lg_log_error("engine", "out of memory queueing a batch; retrying");
    uv_sleep(50);
  }
  b->owner = st;
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
    /* Bytes left for the worker to frame (b->raw_format) are counted now,
     * their records when the batch comes back (submit_batch). */
    lg_metric_add(e->m.read[b->source_id], b->n);
    lg_metric_add(
        e->m.bytes[b->source_id],
        (b->n > 0 ? b->recs[b->n - 1].end_offset - b->recs[0].offset : 0) +
            (b->raw_format != 0 ? b->data_len - b->raw_start : 0));
  }
  /* A batch is charged to the memory budget by its buffers' sizes, and
   * every batch starts with an arena of BATCH_CAP: a quiet file (most
   * files of a node) hands on a line or two at its end, and ~25 such
   * batches waiting for an output's coalescing delay filled the default
   * budget. Cut here, once the source is done with the batch and before
   * it is charged and queued: the engine owns the budget and the pool,
   * and every source's batches pass here (the tail's, the forward
   * source's). Nothing points into the arena now: records and fields
   * are offsets, the tail's framer keeps its carry in its own buffer
   * (lg_framer_cut) and the worker frames raw bytes only once it has the
   * batch. A busy file fills its batches and is not cut. */
  lg_batch_fit(b);
  lg__charge(e, b);
  /* Batches of one log stream (a file and the files that replaced it by
   * rotation: its lane) get consecutive sequence numbers and reach the
   * outputs in that order (lg_reorder.c). They go to one worker, which
   * keeps a stateful script's records in order; a stateless pipeline's
   * batches go to the worker with the fewest batches queued (the next in
   * turn on a tie), so one busy file uses them all and a worker slowed by
   * other files or by the machine gets fewer; a worker that runs out
   * takes them from another's queue (lg_crew.h). */
  uint64_t lane = b->lane != 0 ? b->lane : b->file_key;
  while (lg__reorder_assign(e, lane, &st->seq) != 0) {
    lg_log_error("engine", "out of memory queueing a batch; retrying");
    uv_sleep(50);
  }
  st->lane = lane;
  uint64_t w = lane % (uint64_t)e->nworkers;
  b->any_worker = b->pipeline >= 0 &&
                  (size_t)b->pipeline < p->conf->c->npipelines &&
                  p->conf->c->pipelines[b->pipeline].stateless;
  if (b->any_worker) {
    size_t least = SIZE_MAX;
    for (int k = 0; k < e->nworkers; k++) {
      uint64_t c = (lane + st->seq + (uint64_t)k) % (uint64_t)e->nworkers;
      size_t n = lg_worker_backlog(e->workers[c]);
      if (n < least) {
        least = n;
        w = c;
      }
    }
  }
  lg_worker_push(e->workers[w], b);
}

/* Worker thread: hand the processed batch back to the loop. */
void lg__on_worker_done(void *ud, lg_batch_t *b) {
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

/* Counts what the scripts did to the batch, for the metrics. */
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
    if ((r->flags & LG_REC_FAILED) && dl >= 0)
      failed++;
  }
  st->kept = b->n - (uint32_t)dropped;
  lg_metric_add(e->m.dead_letter, failed);
  const plan_t *p = st->plan;
  if (p != NULL && p->m_dropped != NULL && b->pipeline >= 0 &&
      (size_t)b->pipeline < p->conf->c->npipelines) {
    lg_metric_add(p->m_dropped[b->pipeline], dropped);
    lg_metric_add(p->m_failed[b->pipeline], failed);
    lg_metric_add(p->m_batches[b->pipeline], 1);
  }
}

/* Hands `b` to output slot k, counted in b->pending. */
static void submit_to(engine_t *e, lg_batch_t *b, uint32_t k) {
  if (e->outputs[k] == NULL || e->slot_state[k] != SLOT_LIVE) {
    lg_log_error("engine",
                 "output slot %u is closed: %u records of a "
                 "batch are not delivered",
                 k, b->n);
    return;
  }
  b->pending++;
  /* Behind a batch the output could not take yet: waits its turn. */
  int behind = k < 64 && (e->submit_later_slots >> k & 1);
  /* Acks come back in order per log stream (the lane the batch's
   * worker was chosen by). */
  int rc = behind ? -ENOMEM
                  : lg_output_submit(e->outputs[k], &b->out[k], b,
                                     b->lane != 0 ? b->lane : b->file_key);
  if (rc == -ENOMEM && k < 64) {
    /* The output took nothing: the batch stays pending for it (done
     * with it, its checkpoint would pass records never sent). */
    batch_state_t *st = ST(b);
    if (st->submit_later == 0) {
      st->submit_next = NULL;
      if (e->submit_later_tail != NULL)
        ST(e->submit_later_tail)->submit_next = b;
      else
        e->submit_later = b;
      e->submit_later_tail = b;
    }
    st->submit_later |= 1ull << k;
    e->submit_later_slots |= 1ull << k;
    if (!behind && !st->submit_logged) {
      st->submit_logged = 1;
      const lg_meta_kv_t *path = lg_meta_find(b->meta, "log.file.path", 13);
      lg_log_error("engine",
                   "output %s: out of memory taking %u record(s) of %.*s "
                   "(offsets %" PRIu64 " to %" PRIu64 "); trying again",
                   e->output_names[k], b->out[k].n,
                   path != NULL && path->str != NULL ? (int)path->str_len : 6,
                   path != NULL && path->str != NULL ? path->str : "a file",
                   b->n > 0 ? b->recs[0].offset : 0,
                   b->n > 0 ? b->recs[b->n - 1].end_offset : 0);
    }
    return;
  }
  if (rc != 0) {
    lg_log_error("engine", "output %s: submit failed: %s", e->output_names[k],
                 strerror(-rc));
    b->pending--;
  }
}

void lg__submit_to_outputs(engine_t *e, lg_batch_t *b) {
  for (uint32_t k = 0; k < b->nout && k < e->noutputs; k++)
    if (b->out[k].n > 0)
      submit_to(e, b, k);
}

void lg__submit_again(engine_t *e) {
  /* In order: one that waits again keeps those after it for its output
   * waiting (submit_later_slots). */
  lg_batch_t *list = e->submit_later;
  e->submit_later = e->submit_later_tail = NULL;
  e->submit_later_slots = 0;
  while (list != NULL) {
    lg_batch_t *b = list;
    batch_state_t *st = ST(b);
    list = st->submit_next;
    uint64_t slots = st->submit_later;
    st->submit_later = 0;
    st->submit_next = NULL;
    b->pending++; /* guard: no completion before all are submitted */
    for (; slots != 0; slots &= slots - 1) {
      b->pending--; /* its count from the first try: submit_to counts */
      submit_to(e, b, (uint32_t)__builtin_ctzll(slots));
    }
    lg__batch_output_done(e, b);
  }
}

/* Back from its worker and in sequence: to the outputs. */
static void submit_batch(engine_t *e, lg_batch_t *b) {
  ST(b)->processed = 1;
  if (e->nstuck_files > 0 && behind_stuck(e, b)) {
    /* Processed by another worker (a stateless pipeline) while the script
     * hung on an earlier batch of its file: delivering it would overtake
     * the stuck batch, and the restart, whose checkpoint is before that
     * batch, reads it again. Frozen like the batches queued behind the
     * stuck one. */
    plan_t *p = ST(b)->plan;
    ST(b)->plan = NULL;
    ST(b)->frozen = 1;
    e->frozen++;
    if (p != NULL && --p->inflight == 0 && p != e->plan)
      lg__retire_plans(e);
    lg__budget_changed(e); /* frozen batches never come back */
    return;
  }
  if (b->framed > 0) { /* framed by the worker (deferred framing) */
    e->records_in += b->framed;
    if (b->source_id < e->nsrc_metrics)
      lg_metric_add(e->m.read[b->source_id], b->framed);
  }
  count_batch(e, b);
  plan_t *p = ST(b)->plan;
  ST(b)->plan = NULL;
  /* Back from the worker, before the outputs see the batch (they read
   * its records and encoded bytes until they ack): output buffers that
   * kept a busy batch's size while holding a few records are cut, so
   * the charge below is what the batch carries. */
  lg_batch_fit(b);
  lg__charge(e, b); /* actual size, now that fields and JSON exist */
  b->pending = 1;   /* guard: no completion before all are submitted */
  lg__submit_to_outputs(e, b);
  /* The last batch of a retired generation is with the outputs: outputs
   * only it used can now drain and close. */
  if (p != NULL && --p->inflight == 0 && p != e->plan)
    lg__retire_plans(e);
  lg__batch_output_done(e, b);
}

/* ---- stuck workers (lg_watchdog.h) ---- */

static void skip_batch(engine_t *e, lg_batch_t *b);

/* Watchdog thread: a worker's script cannot be interrupted. */
void lg__on_stuck(void *ud, const lg_watchdog_stall_t *s) {
  engine_t *e = ud;
  stuck_report_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    lg_admin_http_set_unhealthy("watchdog",
                                "out of memory handling a stuck script");
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

/* Loop thread: freezes the stuck batch's file (its checkpoint stays before
 * the batch, later batches are discarded), says so on /readyz and
 * /healthz, and gives the worker's other files a fresh worker. */
static void freeze_stuck(engine_t *e, stuck_report_t *r) {
  char key[64];
  snprintf(key, sizeof key, "watchdog.worker.%d", r->worker);
  lg_admin_http_set_unhealthy(key, r->msg);
  lg_metric_add(e->m_stuck, 1);
  lg_batch_t *b = r->batch;
  ST(b)->frozen = 2;
  e->frozen++;
  /* Known as stuck before it is skipped: skipping it hands on the batches
   * of its file that were back early (a stateless pipeline), and those
   * must be frozen, not delivered (submit_batch). */
  struct stuck_file *nf =
      realloc(e->stuck_files, (e->nstuck_files + 1) * sizeof *e->stuck_files);
  if (nf != NULL) {
    e->stuck_files = nf;
    e->stuck_files[e->nstuck_files++] =
        (struct stuck_file){.file_key = b->file_key, .seq = ST(b)->seq};
  }
  skip_batch(e, b);
  if (r->worker < 0 || r->worker >= e->nworkers)
    return;
  lg_batch_t *queued = lg_worker_abandon(e->workers[r->worker]);
  char err[512];
  lg_worker_opts_t wo = lg__worker_opts(e);
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
      skip_batch(e, queued);
      queued = next;
    }
    lg__begin_stop(e, "a stuck worker could not be replaced");
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
      skip_batch(e, queued);
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

static void handle_stuck(engine_t *e, stuck_report_t *r) {
  freeze_stuck(e, r);
  /* The batches frozen never come back: with lines held outside batches
   * filling the budget, only a drain frees memory now. */
  lg__budget_changed(e);
}

void lg__on_done_async(uv_async_t *h) {
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
    while (lg__reorder_done(e, ST(b)->lane, ST(b)->seq, b, submit_batch) != 0) {
      lg_log_error("engine", "out of memory reordering a batch; retrying");
      uv_sleep(50);
    }
    b = next;
  }
}

/* A batch that will never come back from a worker: the batches after it
 * in its stream must not wait for it. */
static void skip_batch(engine_t *e, lg_batch_t *b) {
  while (lg__reorder_done(e, ST(b)->lane, ST(b)->seq, NULL, submit_batch) !=
         0) {
    lg_log_error("engine", "out of memory reordering a batch; retrying");
    uv_sleep(50);
  }
}
