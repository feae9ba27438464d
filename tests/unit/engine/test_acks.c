/* Unit tests: the engine's acks (lg_acks.c): a file's in-flight batches
 * are released only from the head of its queue, so an early ack of a
 * later batch waits for the ones before it (checkpoints move in read
 * order); a batch is acked once every output it went to is done; the
 * memory budget is charged (with the reserve for a batch its worker has
 * not run yet, not on top of payloads it already has, and kept for the
 * records a processed batch still holds) and released, pausing at the
 * budget and resuming below three quarters; released batches go to the
 * engine's pool, big ones are freed. The engine struct is built by hand (no
 * sources, no loop): the file queues are filled as lg_engine_flow.c fills them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/lg_engine_internal.h"
#include "helpers/lg_test.h"

static engine_t *engine(uint64_t budget) {
  engine_t *e = calloc(1, sizeof *e);
  assert_non_null(e);
  e->mem_budget = budget;
  return e;
}

static void engine_free(engine_t *e) {
  while (e->pool != NULL) {
    lg_batch_t *b = e->pool;
    e->pool = b->next;
    lg_batch_destroy(b);
  }
  for (size_t k = 0; k < FILE_BUCKETS; k++)
    assert_null(e->files[k]); /* every queue emptied and removed */
  free(e);
}

/* A batch of `file`, in flight to `outputs` outputs, queued at the tail
 * of its file's queue and charged to the budget. */
static lg_batch_t *queue(engine_t *e, uint64_t file, int outputs) {
  const char *bodies[] = {"one", "two"};
  lg_batch_t *b = lg_test_batch_of(bodies, 2);
  b->file_key = file;
  b->pending = outputs;
  b->owner = calloc(1, sizeof(batch_state_t));
  assert_non_null(b->owner);
  file_queue_t *q = lg__file_queue(e, file, 1);
  assert_non_null(q);
  if (q->tail != NULL)
    ST(q->tail)->file_next = b;
  else
    q->head = b;
  q->tail = b;
  e->in_flight++;
  lg__charge(e, b);
  return b;
}

static void test_release_in_file_order(void **state) {
  (void)state;
  engine_t *e = engine(UINT64_MAX);
  lg_batch_t *a1 = queue(e, 100, 1);
  lg_batch_t *a2 = queue(e, 100, 1);
  lg_batch_t *a3 = queue(e, 100, 1);
  lg_batch_t *b1 = queue(e, 200, 1);
  assert_ptr_equal(lg__file_queue(e, 100, 0)->head, a1);
  assert_int_equal(e->in_flight, 4);
  /* a2 acked first: held behind a1. */
  lg__batch_output_done(e, a2);
  assert_true(ST(a2)->acked);
  assert_int_equal(e->in_flight, 4);
  assert_ptr_equal(lg__file_queue(e, 100, 0)->head, a1);
  /* Another file is not held by file 100. */
  lg__batch_output_done(e, b1);
  assert_int_equal(e->in_flight, 3);
  assert_null(lg__file_queue(e, 200, 0));
  /* a1 acked: a1 and a2 go together; a3 is now the head. */
  lg__batch_output_done(e, a1);
  assert_int_equal(e->in_flight, 1);
  file_queue_t *q = lg__file_queue(e, 100, 0);
  assert_non_null(q);
  assert_ptr_equal(q->head, a3);
  assert_ptr_equal(q->tail, a3);
  /* Released batches are reset into the pool. */
  assert_int_equal(e->pool_n, 3);
  assert_int_equal(e->pool->n, 0);
  assert_null(e->pool->owner);
  lg__batch_output_done(e, a3);
  assert_int_equal(e->in_flight, 0);
  assert_null(lg__file_queue(e, 100, 0));
  assert_int_equal(e->mem_used, 0);
  engine_free(e);
}

static void test_every_output(void **state) {
  (void)state;
  engine_t *e = engine(UINT64_MAX);
  lg_batch_t *b = queue(e, 1, 3);
  lg__batch_output_done(e, b);
  lg__batch_output_done(e, b);
  assert_false(ST(b)->acked);
  assert_int_equal(e->in_flight, 1);
  lg__batch_output_done(e, b);
  assert_int_equal(e->in_flight, 0);
  assert_null(lg__file_queue(e, 1, 0));
  engine_free(e);
}

/* What one batch charges: its arrays, and its payloads or, before its
 * worker ran, the reserve for them if larger: four times its bytes plus
 * the metadata each record will repeat. */
static uint64_t expected_mem(const lg_batch_t *b, int processed) {
  uint64_t m = b->data_cap + (uint64_t)b->recs_cap * sizeof(lg_rec_t) +
               (uint64_t)b->fields_cap * sizeof(lg_field_t);
  uint64_t out = 0;
  for (uint32_t k = 0; k < b->nout; k++)
    out += lg_payload_mem(&b->out[k]);
  uint64_t reserve = 4 * b->data_len + (uint64_t)b->n * b->meta->json_len;
  if (!processed && reserve > out)
    out = reserve;
  return m + out;
}

static void test_budget_pause_resume(void **state) {
  (void)state;
  engine_t *e = engine(0);
  lg_batch_t *probe = queue(e, 9, 1);
  uint64_t one = expected_mem(probe, 0);
  assert_int_equal(probe->mem_bytes, one);
  assert_int_equal(e->mem_used, one);
  assert_true(probe->meta->json_len > 0); /* the reserve counts metadata */
  /* Charging again after the worker ran replaces the first charge. */
  ST(probe)->processed = 1;
  lg__charge(e, probe);
  assert_int_equal(e->mem_used, expected_mem(probe, 1));
  lg__batch_output_done(e, probe);
  assert_int_equal(e->mem_used, 0);
  /* A batch that still has a payload (taken from the pool) is charged
   * that payload or the reserve, not both. */
  lg_batch_t *pooled = queue(e, 9, 1);
  uint64_t reserve = expected_mem(pooled, 0) - expected_mem(pooled, 1);
  assert_true(reserve > 0);
  pooled->out = calloc(1, sizeof *pooled->out);
  assert_non_null(pooled->out);
  pooled->nout = 1;
  assert_int_equal(lg_buf_reserve(&pooled->out[0].data, 1), 0);
  lg__charge(e, pooled);
  assert_int_equal(e->mem_used, expected_mem(pooled, 0));
  assert_true(e->mem_used < expected_mem(pooled, 1) + reserve);
  assert_int_equal(lg_buf_reserve(&pooled->out[0].data, 2 * reserve), 0);
  lg__charge(e, pooled);
  assert_int_equal(e->mem_used, expected_mem(pooled, 1));
  assert_int_equal(e->mem_used, expected_mem(pooled, 0));
  lg__batch_output_done(e, pooled);
  assert_int_equal(e->mem_used, 0);
  /* Back from its worker smaller than its reserve, a batch stays charged
   * what it was admitted with for the records it kept: all of them, half
   * (a script dropped one of two), none. */
  for (uint32_t kept = 2;; kept--) {
    lg_batch_t *b = queue(e, 11, 1);
    uint64_t admitted = expected_mem(b, 0);
    ST(b)->processed = 1;
    ST(b)->kept = kept;
    lg__charge(e, b);
    uint64_t keep = admitted / b->n * kept;
    uint64_t now = expected_mem(b, 1);
    assert_true(now < admitted);
    assert_int_equal(e->mem_used, keep > now ? keep : now);
    lg__batch_output_done(e, b);
    assert_int_equal(e->mem_used, 0);
    if (kept == 0)
      break;
  }
  /* Budget 0: the first charge paused, and nothing is below 0. */
  assert_true(e->paused);

  /* A budget of four batches: the fourth pauses, releasing down to
   * below three quarters resumes. */
  e->paused = 0;
  e->mem_budget = 4 * one;
  lg_batch_t *bs[4];
  for (int k = 0; k < 3; k++) {
    bs[k] = queue(e, 10 + (uint64_t)k, 1);
    assert_false(e->paused);
  }
  bs[3] = queue(e, 20, 1);
  assert_true(e->paused);
  lg__batch_output_done(e, bs[0]); /* 3/4 used: not below */
  assert_true(e->paused);
  lg__batch_output_done(e, bs[1]); /* 2/4 */
  assert_false(e->paused);
  lg__batch_output_done(e, bs[2]);
  lg__batch_output_done(e, bs[3]);
  assert_int_equal(e->mem_used, 0);
  engine_free(e);
}

/* The pool keeps at most POOL_MAX batches and never a big one. */
static void test_pool_bounds(void **state) {
  (void)state;
  engine_t *e = engine(UINT64_MAX);
  lg_batch_t *big = queue(e, 1, 1);
  char *more = realloc(big->data, 4 * BATCH_BYTES + 1);
  assert_non_null(more);
  big->data = more;
  big->data_cap = 4 * BATCH_BYTES + 1;
  lg__charge(e, big);
  lg__batch_output_done(e, big); /* freed (ASan would see it leak else) */
  assert_int_equal(e->pool_n, 0);
  assert_int_equal(e->mem_used, 0);
  for (int k = 0; k < POOL_MAX + 3; k++)
    lg__batch_output_done(e, queue(e, 2, 1));
  assert_int_equal(e->pool_n, POOL_MAX);
  int n = 0;
  for (lg_batch_t *b = e->pool; b != NULL; b = b->next)
    n++;
  assert_int_equal(n, POOL_MAX);
  assert_int_equal(e->in_flight, 0);
  engine_free(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_release_in_file_order),
      cmocka_unit_test(test_every_output),
      cmocka_unit_test(test_budget_pause_resume),
      cmocka_unit_test(test_pool_bounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
