/* Unit tests: lg_source (the source interface and the set the engine
 * holds), with the real `file` type on a real loop: a config's file
 * source reads a real file into batches through the host's callbacks, an
 * ack moves its checkpoint (written at close, off the loop thread), pause
 * stops reading,
 * remove and close free everything (uv_loop_close() == 0), and the
 * registry answers the config's type lookups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/lg_config.h"
#include "core/lg_util.h"
#include "helpers/lg_test.h"
#include "sources/lg_source.h"

static char dir[256];

typedef struct host {
  lg_batch_t *got[16];
  size_t ngot, nrecs;
  int released;
} host_t;

static void on_batch(void *ud, lg_batch_t *b) {
  host_t *h = ud;
  assert_true(h->ngot < 16);
  h->got[h->ngot++] = b;
  h->nrecs += b->n;
}

static lg_batch_t *get_batch(void *ud) {
  (void)ud;
  return lg_batch_create(1 << 16);
}

static void release_conf(void *ud, void *hold) {
  host_t *h = ud;
  assert_ptr_equal(hold, h);
  h->released++;
}

static int has_records(void *arg) { return ((host_t *)arg)->nrecs >= 3; }

static void on_closed(void *ud) { *(int *)ud = 1; }

static int is_set(void *arg) { return *(int *)arg; }

/* libuv's threadpool held busy (pool_hold): POOL_JOBS jobs, more than its
 * threads, each waiting for pool_release; the work queued after them
 * waits too. */
#define POOL_JOBS 128
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static int pool_held;
static uv_work_t pool_jobs[POOL_JOBS];

static void pool_wait(uv_work_t *w) {
  (void)w;
  pthread_mutex_lock(&pool_mu);
  while (pool_held)
    pthread_cond_wait(&pool_cv, &pool_mu);
  pthread_mutex_unlock(&pool_mu);
}

static void pool_done(uv_work_t *w, int status) { (void)w, (void)status; }

static void pool_hold(uv_loop_t *loop) {
  pool_held = 1;
  for (int i = 0; i < POOL_JOBS; i++)
    assert_int_equal(uv_queue_work(loop, &pool_jobs[i], pool_wait, pool_done),
                     0);
}

static void pool_release(void) {
  pthread_mutex_lock(&pool_mu);
  pool_held = 0;
  pthread_cond_broadcast(&pool_cv);
  pthread_mutex_unlock(&pool_mu);
}

static lg_config_t *config_of(const char *log) {
  char conf[512], text[1024];
  snprintf(conf, sizeof conf, "%s/lugger.lua", dir);
  snprintf(text, sizeof text,
           "return { settings = { state_dir = '%s' },\n"
           "  sources = { app = { type = 'file', paths = { '%s' },\n"
           "                      read_from = 'head' } },\n"
           "  pipelines = { p = { sources = { 'app' }, outputs = { 'o' } } },\n"
           "  outputs = { o = { type = 'stdout' } } }\n",
           dir, log);
  lg_test_write_file(conf, text);
  lg_config_t *c = NULL;
  lg_config_errors_t errs = {0};
  int rc = lg_config_load(conf, &c, &errs);
  if (rc != 0)
    fail_msg("config: %s", errs.n ? errs.msgs[0] : "?");
  lg_config_errors_free(&errs);
  return c;
}

static void test_file_source_reads_acks_closes(void **state) {
  (void)state;
  char log[512], cp[512];
  snprintf(log, sizeof log, "%s/app.log", dir);
  snprintf(cp, sizeof cp, "%s/checkpoints.json", dir);
  lg_test_write_file(log, "one\ntwo\nthree\n");
  lg_config_t *c = config_of(log);
  assert_non_null(c->sources[0].stype);
  assert_ptr_equal(c->sources[0].stype, lg_config_source_type("file"));

  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  host_t h = {0};
  lg_source_host_t host = {.loop = &loop,
                           .state_dir = dir,
                           .rescan_interval_ms = 1000,
                           .checkpoint_interval_ms = 60000,
                           .batch_bytes = 1 << 16,
                           .on_batch = on_batch,
                           .get_batch = get_batch,
                           .release_conf = release_conf,
                           .ud = &h};
  char err[256];
  lg_sources_t *set = lg_sources_create(&host, err, sizeof err);
  assert_non_null(set);
  /* A file source does not keep its config: the hold is given back at
   * once. */
  lg_source_spec_t spec = {
      .id = 3, .conf = c, .sc = &c->sources[0], .pipeline = 0, .conf_hold = &h};
  assert_int_equal(lg_sources_add(set, &spec, err, sizeof err), 0);
  assert_int_equal(h.released, 1);
  assert_int_equal(lg_sources_add(set, &spec, err, sizeof err), -EEXIST);
  assert_int_equal(h.released, 2);
  assert_int_equal(lg_sources_start(set), 0);

  lg_test_run_until(&loop, has_records, &h, 5000, "3 records");
  assert_int_equal(h.nrecs, 3);
  lg_batch_t *b = h.got[h.ngot - 1];
  assert_int_equal(b->source_id, 3);
  const lg_config_t *chosen_conf = NULL;
  assert_int_equal(lg_sources_chosen_pipeline(set, b, &chosen_conf), -1);
  assert_int_equal(b->checkpoint_offset, 14);

  /* Read to the end, nothing left: idle. */
  assert_true(lg_sources_read_to_end(set));
  assert_true(lg_sources_idle(set));
  const char *first = NULL;
  assert_int_equal(lg_sources_unreadable(set, &first), 0);

  /* The ack moves the checkpoint, which the close writes: on libuv's
   * threadpool, not on the loop thread (its fsyncs can take seconds), and
   * the close ends only once it has landed. With the pool held busy the
   * close returns, the loop runs on, and nothing is written yet. */
  lg_sources_ack(set, b);
  lg_sources_pause(set);
  lg_sources_resume(set);
  pool_hold(&loop);
  int closed = 0;
  lg_sources_close(set, on_closed, &closed);
  char *text = NULL;
  size_t len = 0;
  assert_true(lg_util_read_file(cp, 0, &text, &len) != 0 ||
              strstr(text, "\"offset\":14}") == NULL);
  free(text);
  text = NULL;
  lg_test_run_for(&loop, 100);
  assert_int_equal(closed, 0);
  pool_release();
  lg_test_run_until(&loop, is_set, &closed, 5000, "the sources closed");
  lg_sources_ack(set, b); /* ignored after the close */
  for (size_t i = 0; i < h.ngot; i++)
    lg_batch_destroy(h.got[i]);
  lg_sources_destroy(set);
  LG_TEST_LOOP_CLOSE(&loop);
  assert_int_equal(lg_util_read_file(cp, 0, &text, &len), 0);
  assert_non_null(strstr(text, "app.log"));
  assert_non_null(strstr(text, "\"offset\":14}"));
  free(text);
  lg_config_destroy(c);
}

static void test_registry(void **state) {
  (void)state;
  assert_non_null(lg_source_type_find("file"));
  assert_non_null(lg_source_type_find("kubernetes"));
  assert_null(lg_source_type_find("nope"));
  assert_ptr_equal(lg_source_type_find("file")->conf,
                   lg_config_source_type("file"));
  assert_null(lg_config_source_type("nope"));
  char names[256];
  lg_config_source_type_names(names, sizeof names);
  assert_non_null(strstr(names, "file, kubernetes"));
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "%s", lg_test_tmpdir("lg_test_source_"));
  return 0;
}

static int teardown(void **state) {
  (void)state;
  return lg_test_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_file_source_reads_acks_closes, setup,
                                      teardown),
      cmocka_unit_test(test_registry),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
