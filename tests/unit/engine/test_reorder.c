/* Unit tests: the engine's reorder stage (lg_reorder.c): batches of one
 * lane leave in the sequence they were queued in, whatever order workers
 * return them in; a sequence given up (b NULL) does not hold the ones
 * after it; lanes are independent, also when they share a hash bucket;
 * a lane's state is freed once it has nothing in flight. No loop: the
 * stage is plain bookkeeping on the engine struct. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/lg_engine_internal.h"

/* Stand-in batches: only their addresses matter to the stage. */
static lg_batch_t bs[256];
static int emitted[512];
static size_t nemitted;

static void emit(engine_t *e, lg_batch_t *b) {
  (void)e;
  assert_true(b >= bs && b < bs + 256);
  emitted[nemitted++] = (int)(b - bs);
}

static engine_t *engine(void) {
  engine_t *e = calloc(1, sizeof *e);
  assert_non_null(e);
  nemitted = 0;
  return e;
}

/* Lanes with state (the lane struct is private to lg_reorder.c: count
 * the occupied buckets, so callers keep lanes in distinct buckets unless
 * they mean to share one). */
static int lane_count(const engine_t *e) {
  int n = 0;
  for (size_t k = 0; k < FILE_BUCKETS; k++)
    n += e->lanes[k] != NULL;
  return n;
}

static void assert_emitted(const int *want, size_t n) {
  assert_int_equal(nemitted, n);
  for (size_t k = 0; k < n; k++)
    if (emitted[k] != want[k])
      fail_msg("emitted[%zu] = %d, want %d", k, emitted[k], want[k]);
}

static uint64_t assign(engine_t *e, uint64_t lane) {
  uint64_t seq = 99;
  assert_int_equal(lg__reorder_assign(e, lane, &seq), 0);
  return seq;
}

static void done(engine_t *e, uint64_t lane, uint64_t seq, int batch) {
  assert_int_equal(
      lg__reorder_done(e, lane, seq, batch < 0 ? NULL : &bs[batch], emit), 0);
}

static void test_in_order(void **state) {
  (void)state;
  engine_t *e = engine();
  assert_int_equal(assign(e, 7), 0);
  assert_int_equal(assign(e, 7), 1);
  assert_int_equal(assign(e, 7), 2);
  assert_int_equal(lane_count(e), 1);
  done(e, 7, 0, 0);
  done(e, 7, 1, 1);
  done(e, 7, 2, 2);
  const int want[] = {0, 1, 2};
  assert_emitted(want, 3);
  /* Nothing in flight: the lane is gone, and a new one starts over. */
  assert_int_equal(lane_count(e), 0);
  assert_int_equal(assign(e, 7), 0);
  lg__reorder_free(e);
  free(e);
}

static void test_out_of_order(void **state) {
  (void)state;
  engine_t *e = engine();
  for (int k = 0; k < 4; k++)
    assert_int_equal(assign(e, 1), (uint64_t)k);
  done(e, 1, 3, 3);
  done(e, 1, 1, 1);
  assert_int_equal(nemitted, 0); /* held until 0 comes */
  done(e, 1, 0, 0);
  const int want1[] = {0, 1};
  assert_emitted(want1, 2);
  assert_int_equal(lane_count(e), 1);
  done(e, 1, 2, 2);
  const int want2[] = {0, 1, 2, 3};
  assert_emitted(want2, 4);
  assert_int_equal(lane_count(e), 0);
  lg__reorder_free(e);
  free(e);
}

/* A batch that never comes back (its worker is stuck) is given up with
 * b NULL: the batches after it go on, and nothing is emitted for it. */
static void test_skipped(void **state) {
  (void)state;
  engine_t *e = engine();
  for (int k = 0; k < 5; k++)
    assign(e, 2);
  done(e, 2, 1, 1);
  done(e, 2, 3, -1); /* given up while waiting */
  done(e, 2, 0, -1); /* the head given up */
  const int want1[] = {1};
  assert_emitted(want1, 1);
  done(e, 2, 4, 4);
  assert_emitted(want1, 1); /* 2 still missing */
  done(e, 2, 2, 2);
  const int want2[] = {1, 2, 4};
  assert_emitted(want2, 3);
  assert_int_equal(lane_count(e), 0);
  lg__reorder_free(e);
  free(e);
}

/* Lanes do not wait for each other, also two lanes in one hash bucket. */
static void test_lanes_independent(void **state) {
  (void)state;
  engine_t *e = engine();
  uint64_t a = 5, b = 5 + FILE_BUCKETS, c = 6;
  assign(e, a);
  assign(e, a);
  assign(e, b);
  assign(e, b);
  assign(e, c);
  assert_int_equal(lane_count(e), 2); /* a and b share a bucket */
  done(e, a, 1, 11);                  /* a waits for its 0 */
  done(e, b, 0, 20);
  done(e, c, 0, 30);
  done(e, b, 1, 21);
  const int want1[] = {20, 30, 21};
  assert_emitted(want1, 3);
  assert_null(e->lanes[c % FILE_BUCKETS]);
  assert_non_null(e->lanes[a % FILE_BUCKETS]); /* a still waits for 0 */
  done(e, a, 0, 10);
  const int want2[] = {20, 30, 21, 10, 11};
  assert_emitted(want2, 5);
  assert_int_equal(lane_count(e), 0); /* so b was freed as well */
  lg__reorder_free(e);
  free(e);
}

/* A batch the stage did not number (an unknown lane, or a sequence
 * already passed) is passed on at once, never held. */
static void test_not_from_stage(void **state) {
  (void)state;
  engine_t *e = engine();
  done(e, 42, 0, 0);
  assign(e, 3);
  assign(e, 3);
  done(e, 3, 0, 1);
  done(e, 3, 0, 2); /* seq 0 again: already submitted */
  const int want[] = {0, 1, 2};
  assert_emitted(want, 3);
  assert_int_equal(lane_count(e), 1);
  /* Unknown lane with b NULL: nothing to do. */
  assert_int_equal(lg__reorder_done(e, 43, 0, NULL, emit), 0);
  assert_int_equal(nemitted, 3);
  lg__reorder_free(e); /* lane 3 still has seq 1 in flight: freed here */
  free(e);
}

/* Many batches back in a shuffled order, some given up: out in sequence,
 * and waiting entries are freed at exit (ASan). */
static void test_shuffled(void **state) {
  (void)state;
  engine_t *e = engine();
  enum { N = 200 };
  int order[N];
  for (int k = 0; k < N; k++) {
    assert_int_equal(assign(e, 9), (uint64_t)k);
    order[k] = k;
  }
  srand(12345);
  for (int k = N - 1; k > 0; k--) {
    int j = rand() % (k + 1);
    int t = order[k];
    order[k] = order[j];
    order[j] = t;
  }
  for (int k = 0; k < N; k++) {
    int s = order[k];
    done(e, 9, (uint64_t)s, s % 7 == 3 ? -1 : s);
    /* Whatever has come out so far is a prefix of the sequence. */
    for (size_t m = 1; m < nemitted; m++)
      assert_true(emitted[m - 1] < emitted[m]);
  }
  size_t n = 0;
  for (int s = 0; s < N; s++)
    if (s % 7 != 3) {
      assert_int_equal(emitted[n], s);
      n++;
    }
  assert_int_equal(nemitted, n);
  assert_int_equal(lane_count(e), 0);
  /* Left waiting at exit. */
  for (int k = 0; k < 3; k++)
    assign(e, 9);
  done(e, 9, 2, 2);
  done(e, 9, 1, 1);
  lg__reorder_free(e);
  free(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_in_order),
      cmocka_unit_test(test_out_of_order),
      cmocka_unit_test(test_skipped),
      cmocka_unit_test(test_lanes_independent),
      cmocka_unit_test(test_not_from_stage),
      cmocka_unit_test(test_shuffled),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
