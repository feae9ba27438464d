/* Unit tests: lg_crew (the workers of one engine, asked in turn for a
 * waiting batch), with stand-in members whose give callback hands over
 * the batches of a small queue when the taker's version is theirs: the
 * order members are asked in, a refusal passing the take on, the taker's
 * own slot never asked, leaving (and a replaced member's leaving nothing),
 * slots out of range, and leave waiting for a give in progress (the
 * locking rule of lg_crew.h, on real threads).
 *
 * The crew with real workers (their queues and config versions) is tested
 * in test_worker.c (test_crew_takes_waiting_batch, test_crew_keeps_version). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "pipeline/lg_batch.h"
#include "pipeline/lg_crew.h"

/* A stand-in member: a queue of batches and the version it runs them
 * with. */
typedef struct member {
  pthread_mutex_t mu;
  int version;
  lg_batch_t *queue[4];
  int nqueue;
  int asked; /* give calls */
  /* For test_leave_waits_for_take: give blocks until `release`. */
  int block, in_give, release;
  pthread_cond_t cv;
} member_t;

static void member_init(member_t *m, int version, int nbatches,
                        lg_batch_t *batches) {
  memset(m, 0, sizeof *m);
  pthread_mutex_init(&m->mu, NULL);
  pthread_cond_init(&m->cv, NULL);
  m->version = version;
  for (int k = 0; k < nbatches; k++)
    m->queue[m->nqueue++] = &batches[k];
}

static void member_close(member_t *m) {
  pthread_mutex_destroy(&m->mu);
  pthread_cond_destroy(&m->cv);
}

static lg_batch_t *give(void *member, const void *taker) {
  member_t *m = member;
  lg_batch_t *b = NULL;
  pthread_mutex_lock(&m->mu);
  m->asked++;
  if (m->block) {
    m->in_give = 1;
    pthread_cond_broadcast(&m->cv);
    while (!m->release)
      pthread_cond_wait(&m->cv, &m->mu);
  }
  if (m->nqueue > 0 && m->version == *(const int *)taker) {
    b = m->queue[0];
    memmove(m->queue, m->queue + 1, (size_t)--m->nqueue * sizeof *m->queue);
  }
  pthread_mutex_unlock(&m->mu);
  return b;
}

/* Members m[0..n-1], each in the slot of its index, leave; the crew is
 * freed. */
static void crew_done(lg_crew_t *c, member_t *m, int n) {
  for (int k = 0; k < n; k++) {
    lg_crew_leave(c, k, &m[k]);
    member_close(&m[k]);
  }
  lg_crew_destroy(c);
}

/* Members are asked starting after the taker's slot, wrapping around; the
 * first batch given ends the take. */
static void test_take_order(void **state) {
  (void)state;
  lg_batch_t b[3][2];
  member_t m[3];
  lg_crew_t *c = lg_crew_create(3);
  assert_non_null(c);
  for (int k = 0; k < 3; k++) {
    member_init(&m[k], 1, 2, b[k]);
    lg_crew_join(c, k, &m[k], give);
  }
  int v = 1;
  assert_ptr_equal(lg_crew_take(c, 0, &v), &b[1][0]);
  assert_ptr_equal(lg_crew_take(c, 1, &v), &b[2][0]);
  assert_ptr_equal(lg_crew_take(c, 2, &v), &b[0][0]);
  assert_ptr_equal(lg_crew_take(c, 2, &v), &b[0][1]);
  /* Slot 0's queue is empty now: slot 2 goes on to slot 1. */
  assert_ptr_equal(lg_crew_take(c, 2, &v), &b[1][1]);
  assert_int_equal(m[0].asked, 3);
  assert_int_equal(m[1].asked, 2);
  assert_int_equal(m[2].asked, 1);
  crew_done(c, m, 3);
}

/* A member that refuses (another version) passes the take on to the next;
 * when all refuse nothing is taken. The taker's own slot is never asked. */
static void test_refusal_and_own_slot(void **state) {
  (void)state;
  lg_batch_t b[3];
  member_t m[3];
  lg_crew_t *c = lg_crew_create(3);
  assert_non_null(c);
  member_init(&m[0], 1, 1, &b[0]);
  member_init(&m[1], 2, 1, &b[1]);
  member_init(&m[2], 1, 1, &b[2]);
  for (int k = 0; k < 3; k++)
    lg_crew_join(c, k, &m[k], give);
  int v = 1;
  assert_ptr_equal(lg_crew_take(c, 0, &v), &b[2]);
  assert_int_equal(m[1].asked, 1);
  assert_null(lg_crew_take(c, 0, &v));
  assert_int_equal(m[0].asked, 0);
  assert_int_equal(m[1].asked, 2);
  assert_int_equal(m[2].asked, 2);
  crew_done(c, m, 3);
}

/* A member that left is never asked again; a member replaced in its slot
 * leaves nothing (its successor stays); slots out of range change nothing
 * and take nothing. */
static void test_leave_and_range(void **state) {
  (void)state;
  lg_batch_t b[3];
  member_t old, repl, taker;
  lg_crew_t *c = lg_crew_create(2);
  assert_non_null(c);
  assert_null(lg_crew_create(0));
  member_init(&old, 1, 1, &b[0]);
  member_init(&repl, 1, 1, &b[1]);
  member_init(&taker, 1, 1, &b[2]);
  lg_crew_join(c, 0, &taker, give);
  lg_crew_join(c, 1, &old, give);
  lg_crew_leave(c, 1, &old);
  int v = 1;
  assert_null(lg_crew_take(c, 0, &v));
  assert_int_equal(old.asked, 0);
  lg_crew_join(c, 1, &old, give);
  lg_crew_join(c, 1, &repl, give);
  lg_crew_leave(c, 1, &old);
  assert_ptr_equal(lg_crew_take(c, 0, &v), &b[1]);
  assert_int_equal(old.asked, 0);
  lg_crew_join(c, 2, &old, give);
  lg_crew_join(c, -1, &old, give);
  lg_crew_leave(c, 2, &repl);
  assert_null(lg_crew_take(c, 2, &v));
  assert_null(lg_crew_take(c, -1, &v));
  assert_null(lg_crew_take(c, 0, &v)); /* `repl` is empty, still in slot 1 */
  assert_int_equal(repl.asked, 2);
  assert_int_equal(old.asked, 0);
  assert_int_equal(taker.asked, 0);
  lg_crew_leave(c, 1, &repl);
  lg_crew_leave(c, 0, &taker);
  lg_crew_leave(NULL, 0, &taker);
  member_close(&old);
  member_close(&repl);
  member_close(&taker);
  lg_crew_destroy(c);
  lg_crew_destroy(NULL);
}

typedef struct race {
  lg_crew_t *c;
  member_t *m;
  lg_batch_t *taken;
  int left; /* lg_crew_leave returned; written by the leaving thread */
  int left_during_give;
  pthread_mutex_t mu;
} race_t;

static void *take_thread(void *arg) {
  race_t *r = arg;
  int v = 1;
  r->taken = lg_crew_take(r->c, 0, &v);
  return NULL;
}

static void *leave_thread(void *arg) {
  race_t *r = arg;
  lg_crew_leave(r->c, 1, r->m);
  pthread_mutex_lock(&r->mu);
  r->left = 1;
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* A member leaving while another's take is in its give callback waits
 * until the give is over: after lg_crew_leave a member's memory may go
 * (lg_worker_destroy), so no give may still run on it. */
static void test_leave_waits_for_take(void **state) {
  (void)state;
  lg_batch_t b;
  member_t m;
  lg_crew_t *c = lg_crew_create(2);
  assert_non_null(c);
  member_init(&m, 1, 1, &b);
  m.block = 1;
  lg_crew_join(c, 1, &m, give);
  race_t r = {.c = c, .m = &m};
  pthread_mutex_init(&r.mu, NULL);
  pthread_t taker, leaver;
  assert_int_equal(pthread_create(&taker, NULL, take_thread, &r), 0);
  pthread_mutex_lock(&m.mu);
  while (!m.in_give)
    pthread_cond_wait(&m.cv, &m.mu);
  pthread_mutex_unlock(&m.mu);
  assert_int_equal(pthread_create(&leaver, NULL, leave_thread, &r), 0);
  /* Long enough for a leave that ignored the take to have returned. */
  struct timespec ts = {0, 200 * 1000 * 1000};
  nanosleep(&ts, NULL);
  pthread_mutex_lock(&r.mu);
  r.left_during_give = r.left;
  pthread_mutex_unlock(&r.mu);
  pthread_mutex_lock(&m.mu);
  m.release = 1;
  pthread_cond_broadcast(&m.cv);
  pthread_mutex_unlock(&m.mu);
  pthread_join(taker, NULL);
  pthread_join(leaver, NULL);
  assert_int_equal(r.left_during_give, 0);
  assert_int_equal(r.left, 1);
  assert_ptr_equal(r.taken, &b);
  int v = 1;
  assert_null(lg_crew_take(c, 0, &v));
  assert_int_equal(m.asked, 1);
  pthread_mutex_destroy(&r.mu);
  member_close(&m);
  lg_crew_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_take_order),
      cmocka_unit_test(test_refusal_and_own_slot),
      cmocka_unit_test(test_leave_and_range),
      cmocka_unit_test(test_leave_waits_for_take),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
