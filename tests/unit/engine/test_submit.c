/*
 * Unit tests: the engine hands a processed batch to its outputs
 * (lg__submit_to_outputs, lg_engine_flow.c), with a real `file` output on
 * a loop and the engine struct built by hand as in test_acks.c. An output
 * that cannot take the batch for want of memory (lg_output_submit
 * answering -ENOMEM: the test's __wrap_lg_output_submit, linked with
 * -Wl,--wrap=lg_output_submit) must not be taken as done with it: the
 * batch stays in flight, its file's checkpoint does not pass it, and the
 * tick hands it over again (lg__submit_again); then it is written and
 * acked. A batch behind it for that output waits behind it (order).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "config/lg_config.h"
#include "core/lg_util.h"
#include "engine/lg_engine_internal.h"
#include "helpers/lg_test.h"
#include "outputs/lg_output.h"

/* While submit_fails > 0, lg_output_submit answers -ENOMEM (one per
 * call), taking nothing, as it does when it cannot allocate. */
static int submit_fails, submit_calls;
int __real_lg_output_submit(lg_output_t *o, const lg_payload_t *pl, void *ref,
                            uint64_t lane);
int __wrap_lg_output_submit(lg_output_t *o, const lg_payload_t *pl, void *ref,
                            uint64_t lane);
int __wrap_lg_output_submit(lg_output_t *o, const lg_payload_t *pl, void *ref,
                            uint64_t lane) {
  submit_calls++;
  if (submit_fails > 0) {
    submit_fails--;
    return -ENOMEM;
  }
  return __real_lg_output_submit(o, pl, ref, lane);
}

static int nothing_in_flight(void *arg) {
  return ((engine_t *)arg)->in_flight == 0;
}

static void on_closed(void *ud) { (*(int *)ud)++; }

static int closed_one(void *arg) { return *(int *)arg >= 1; }

/* The engine struct, by hand, with one real `file` output (slot 0,
 * "out") writing to `path`. */
typedef struct fixture {
  engine_t *e;
  lg_conf_output_t *conf;
  lg_output_t *outputs[1];
  const char *names[1];
  output_ctx_t oc;
  char dir[512], path[600];
} fixture_t;

static void fixture_open(fixture_t *f) {
  memset(f, 0, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "%s", lg_test_tmpdir("lg_submit."));
  snprintf(f->path, sizeof f->path, "%s/out.jsonl", f->dir);
  engine_t *e = f->e = calloc(1, sizeof *e);
  assert_non_null(e);
  e->mem_budget = UINT64_MAX;
  assert_int_equal(uv_loop_init(&e->loop), 0);
  char err[512] = "";
  const char *kv[] = {"path", f->path, NULL};
  f->conf = lg_config_output_new("out", "file", kv, err, sizeof err);
  if (f->conf == NULL)
    fail_msg("%s", err);
  f->oc = (output_ctx_t){.e = e, .index = 0};
  f->outputs[0] = lg_output_create(&e->loop, f->conf, 0, lg__on_output_ack,
                                   &f->oc, err, sizeof err);
  if (f->outputs[0] == NULL)
    fail_msg("%s", err);
  f->names[0] = "out";
  e->outputs = f->outputs;
  e->output_names = f->names;
  e->noutputs = 1;
  e->slot_state[0] = SLOT_LIVE;
}

/* A processed batch of file 7 with records `bodies` (2) at offsets from
 * `at`, in flight at the tail of its file's queue, encoded for the
 * output; handed to the outputs as submit_batch does (a guard, the
 * outputs, the guard dropped). */
static lg_batch_t *submit(fixture_t *f, const char *const *bodies,
                          uint64_t at) {
  engine_t *e = f->e;
  lg_batch_t *b = lg_test_batch_of(bodies, 2);
  for (uint32_t j = 0; j < b->n; j++) {
    b->recs[j].offset += at;
    b->recs[j].end_offset += at;
  }
  b->file_key = 7;
  b->owner = calloc(1, sizeof(batch_state_t));
  assert_non_null(b->owner);
  b->out = calloc(1, sizeof *b->out);
  assert_non_null(b->out);
  b->nout = 1;
  lg_encoder_t enc = lg_output_encoder(f->outputs[0]);
  for (uint32_t j = 0; j < b->n; j++)
    assert_int_equal(lg_payload_add(&b->out[0], &enc, b, j, NULL), 0);
  file_queue_t *q = lg__file_queue(e, b->file_key, 1);
  assert_non_null(q);
  if (q->tail != NULL)
    ST(q->tail)->file_next = b;
  else
    q->head = b;
  q->tail = b;
  e->in_flight++;
  lg__charge(e, b);
  b->pending = 1;
  lg__submit_to_outputs(e, b);
  lg__batch_output_done(e, b);
  return b;
}

/* Closes the output and the loop, frees the engine; returns what the
 * output wrote (free it). */
static char *fixture_close(fixture_t *f) {
  engine_t *e = f->e;
  int closed = 0;
  lg_output_close(f->outputs[0], on_closed, &closed);
  lg_test_run_until(&e->loop, closed_one, &closed, 10000, "output closed");
  LG_TEST_LOOP_CLOSE(&e->loop);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(f->path, 1 << 20, &text, &len), 0);
  while (e->pool != NULL) {
    lg_batch_t *p = e->pool;
    e->pool = p->next;
    lg_batch_destroy(p);
  }
  lg_config_output_free(f->conf);
  free(e);
  assert_int_equal(lg_test_rmtree(f->dir), 0);
  return text;
}

static void test_output_out_of_memory_takes_the_batch_later(void **state) {
  (void)state;
  fixture_t f;
  fixture_open(&f);
  engine_t *e = f.e;
  submit_fails = 1;
  submit_calls = 0;
  const char *bodies[] = {"one", "two"};
  lg_batch_t *b = submit(&f, bodies, 0);
  assert_int_equal(submit_calls, 1);
  /* Not done with the output: still in flight, its checkpoint held. */
  assert_int_equal(e->in_flight, 1);
  assert_false(ST(b)->acked);
  assert_ptr_equal(lg__file_queue(e, 7, 0)->head, b);

  /* The tick hands it over again: written and acked. */
  lg__submit_again(e);
  assert_int_equal(submit_calls, 2);
  lg_test_run_until(&e->loop, nothing_in_flight, e, 10000, "the ack");
  assert_null(lg__file_queue(e, 7, 0));
  assert_null(e->submit_later);
  char *text = fixture_close(&f);
  assert_non_null(strstr(text, "\"body\":\"one\""));
  assert_non_null(strstr(text, "\"body\":\"two\""));
  free(text);
}

/* A batch for an output that another batch waits for (out of memory)
 * waits behind it, not handed over first: the output gets them in the
 * order they came (as a file output writes them). */
static void test_batch_behind_a_waiting_one_waits(void **state) {
  (void)state;
  fixture_t f;
  fixture_open(&f);
  engine_t *e = f.e;
  submit_fails = 1;
  submit_calls = 0;
  const char *first[] = {"one", "two"}, *second[] = {"three", "four"};
  submit(&f, first, 0);
  submit(&f, second, 100);
  assert_int_equal(submit_calls, 1); /* the second was not handed over */
  assert_int_equal(e->in_flight, 2);
  lg__submit_again(e);
  assert_int_equal(submit_calls, 3);
  lg_test_run_until(&e->loop, nothing_in_flight, e, 10000, "the acks");
  char *text = fixture_close(&f);
  const char *p1 = strstr(text, "\"body\":\"one\"");
  const char *p3 = strstr(text, "\"body\":\"three\"");
  if (p1 == NULL || p3 == NULL || p3 < p1)
    fail_msg("written out of order: %s", text);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_output_out_of_memory_takes_the_batch_later),
      cmocka_unit_test(test_batch_behind_a_waiting_one_waits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
