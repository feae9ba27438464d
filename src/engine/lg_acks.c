/* The engine's acks: in-flight batches queued per file in read order, the
 * file's checkpoint moved over every delivered batch at the queue head,
 * and the memory budget charged and released with each batch (pausing and
 * resuming the sources). */
#include "engine/lg_engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_log.h"

void lg__free_state(batch_state_t *st) {
  if (st == NULL)
    return;
  free(st);
}

/* ---- file queues ---- */

file_queue_t *lg__file_queue(engine_t *e, uint64_t key, int create) {
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
 * set and the encoded records are not allocated yet; they are reserved as
 * four times the bytes read plus the source's metadata, which every record
 * repeats (a pod's path metadata is ~300 bytes, more than many records),
 * so the budget bounds what the batch will hold, not what it holds now.
 * Four times, measured on the bench's CRI nginx lines: the JSON lines
 * take 1.7-2.0 times the bytes read and a parse script's fields 0.7 times
 * more, in buffers that grow by doubling (a batch ends up charged 5.8-7 times
 * what it read). A batch taken from the pool already has the buffers the
 * reservation stands for: the larger of the two is charged, not both (that
 * charged pooled batches twice and fresh ones too little, so reading ran
 * ahead with fresh batches and each of them stayed in the pool afterwards).
 * A batch far smaller than its buffers has them cut before it is charged
 * (lg_batch_fit, in lg__on_batch), its output buffers down to this
 * reserve (LG_BATCH_FIT_OUT_KEEP). */
static uint64_t batch_mem(const lg_batch_t *b) {
  uint64_t m = b->data_cap + (uint64_t)b->recs_cap * sizeof(lg_rec_t) +
               (uint64_t)b->fields_cap * sizeof(lg_field_t);
  uint64_t out = 0;
  for (uint32_t k = 0; k < b->nout; k++)
    out += lg_payload_mem(&b->out[k]);
  if (b->owner != NULL && !ST(b)->processed) {
    uint64_t reserve = 4 * (uint64_t)b->data_len;
    if (b->meta != NULL)
      reserve += (uint64_t)b->n * b->meta->json_len;
    if (reserve > out)
      out = reserve;
  }
  return m + out;
}

void lg__outputs_pressure(engine_t *e, int on) {
  for (size_t k = 0; k < e->noutputs; k++)
    if (e->outputs[k] != NULL && e->slot_state[k] == SLOT_LIVE)
      lg_output_set_pressure(e->outputs[k], on);
}

void lg__budget_changed(engine_t *e) {
  lg_metric_set(e->m.mem_used, (int64_t)e->mem_used);
  if (!e->paused && e->mem_used >= e->mem_budget) {
    e->paused = 1;
    lg_sources_pause(e->sources);
    /* What waits in outputs to fill a request counts against the budget:
     * sent now, it is acked and freed, instead of reading waiting for
     * max_coalescing_delay. */
    lg__outputs_pressure(e, 1);
    lg_log_debug("engine", "memory budget reached (%llu bytes): pausing",
                 (unsigned long long)e->mem_used);
  } else if (e->paused && e->mem_used < e->mem_budget / 4 * 3 && !e->stopping) {
    e->paused = 0;
    lg_sources_resume(e->sources);
    lg__outputs_pressure(e, 0);
    lg_log_debug("engine", "below the memory budget: resuming");
  }
  int drain =
      e->paused && !e->stopping && e->in_flight <= e->frozen && e->mem_held > 0;
  if (drain != e->draining) {
    e->draining = drain;
    lg_sources_drain(e->sources, drain);
  }
}

void lg__on_held(void *ud, int64_t delta) {
  engine_t *e = ud;
  e->mem_held = (uint64_t)((int64_t)e->mem_held + delta);
  e->mem_used = (uint64_t)((int64_t)e->mem_used + delta);
  lg__budget_changed(e);
}

void lg__charge(engine_t *e, lg_batch_t *b) {
  uint64_t m = batch_mem(b);
  batch_state_t *st = ST(b);
  if (st != NULL && !st->processed) {
    st->admitted = m;
  } else if (st != NULL && b->n > 0) {
    /* Back from its worker, a batch stays charged at least what it was
     * admitted with, for the records it still holds (scripts may have
     * dropped some). Else a batch that came out smaller than its reserve
     * (a payload buffer that doubled to less) let reading go on while
     * batches waited for their output, and the one or two more batches
     * read then stayed in the pool: +3.5 MiB max RSS in 1 run of 10 of
     * the bench's (a) at 32 MiB. `admitted` is of the batch as cut at
     * hand-off (lg_batch_fit): a quiet file's batch is not kept at its
     * arena's full size by this floor. */
    uint64_t keep = st->admitted / b->n * st->kept;
    if (keep > m)
      m = keep;
  }
  e->mem_used += m - b->mem_bytes;
  b->mem_bytes = m;
  if (e->mem_used >= e->mem_budget || e->draining)
    lg__budget_changed(
        e); /* only pauses (or ends a drain): a batch is in flight */
  else
    lg_metric_set(e->m.mem_used, (int64_t)e->mem_used);
}

static void release(engine_t *e, lg_batch_t *b) {
  e->mem_used -= b->mem_bytes;
  lg_metric_set(e->m.mem_used, (int64_t)e->mem_used);
  lg_metric_set(e->m.in_flight, (int64_t)e->in_flight - 1);
  lg__free_state(ST(b));
  b->owner = NULL;
  e->in_flight--;
  lg__put_batch(e, b);
  lg__budget_changed(e);
}

/* Moves the file's checkpoint over every acked batch at the queue head. */
static void advance_file(engine_t *e, uint64_t file_key) {
  file_queue_t *q = lg__file_queue(e, file_key, 0);
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
    /* One ack covers the batch and every earlier one of its file. After
     * a shutdown timeout the sources are closed (checkpoints already
     * written) and a late ack moves nothing: those records are read again
     * after the restart. */
    lg_sources_ack(e->sources, last);
    release(e, last);
  }
  if (q->head == NULL)
    file_queue_remove(e, q);
}

void lg__batch_output_done(engine_t *e, lg_batch_t *b) {
  if (--b->pending > 0)
    return;
  ST(b)->acked = 1;
  advance_file(e, b->file_key);
  /* --once: the last delivery may be the end of the run; the tick checks
   * from the top of the loop, not from inside the output's callback. */
  if (e->opts.once && e->in_flight == e->frozen)
    lg__tick_soon(e);
}
