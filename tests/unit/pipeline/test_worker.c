/* Unit tests: lg_worker (a thread with its own Lua state runs each batch
 * through its pipeline's scripts, encodes the kept records per output and
 * hands the batch back; here through a uv_async_t to a libuv loop, as the
 * engine does): fields, drops, routes, script errors to the dead-letter
 * output, order of batches, a pipeline without scripts, a pipeline index
 * the config does not have, load errors, and a hot swap between two
 * batches. */
#include <errno.h>
#include <pthread.h>
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
#include "helpers/lg_test.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_lua.h"
#include "pipeline/lg_payload.h"
#include "pipeline/lg_worker.h"

static const char *dir;

/* Batches handed back by the worker thread, then moved to the loop. */
typedef struct back {
  uv_async_t async;
  pthread_mutex_t mu;
  lg_batch_t *pending[64];
  size_t npending;
  lg_batch_t *got[64]; /* on the loop, in the order handed back */
  size_t ngot;
  int wrong_thread; /* done ran on the loop thread */
  pthread_t loop_thread;
} back_t;

static void on_done(void *ud, lg_batch_t *b) {
  back_t *bk = ud;
  if (pthread_equal(pthread_self(), bk->loop_thread))
    bk->wrong_thread = 1;
  pthread_mutex_lock(&bk->mu);
  bk->pending[bk->npending++] = b;
  pthread_mutex_unlock(&bk->mu);
  uv_async_send(&bk->async);
}

static void on_async(uv_async_t *a) {
  back_t *bk = a->data;
  pthread_mutex_lock(&bk->mu);
  for (size_t k = 0; k < bk->npending; k++)
    bk->got[bk->ngot++] = bk->pending[k];
  bk->npending = 0;
  pthread_mutex_unlock(&bk->mu);
}

static size_t want_n;
static int got_enough(void *arg) { return ((back_t *)arg)->ngot >= want_n; }

static void back_init(back_t *bk, uv_loop_t *loop) {
  memset(bk, 0, sizeof *bk);
  pthread_mutex_init(&bk->mu, NULL);
  bk->loop_thread = pthread_self();
  assert_int_equal(uv_async_init(loop, &bk->async, on_async), 0);
  bk->async.data = bk;
}

static void back_close(back_t *bk, uv_loop_t *loop) {
  uv_close((uv_handle_t *)&bk->async, NULL);
  LG_TEST_LOOP_CLOSE(loop);
  pthread_mutex_destroy(&bk->mu);
  for (size_t k = 0; k < bk->ngot; k++)
    lg_batch_destroy(bk->got[k]);
}

/* Record j of output k's payload, NUL-terminated (static, one at a time). */
static const char *out_line(const lg_batch_t *b, uint32_t k, uint32_t j) {
  static char buf[4096];
  assert_true(k < b->nout);
  assert_true(j < b->out[k].n);
  uint32_t len;
  const char *p = lg_payload_rec(&b->out[k], j, &len);
  assert_true(len < sizeof buf);
  memcpy(buf, p, len);
  buf[len] = '\0';
  return buf;
}

static const char *const names[] = {"main", "errors", "dead"};
static const uint64_t routes[] = {1, 1};

static lg_worker_opts_t opts_for(const lg_config_t *c, back_t *bk) {
  return (lg_worker_opts_t){.conf = c,
                            .output_names = names,
                            .noutputs = 3,
                            .dead_letter = 2,
                            .pipeline_routes = routes,
                            .done = on_done,
                            .ud = bk};
}

static const char *SCRIPT = "function process(rec)\n"
                            "  if rec.body == 'drop' then return false end\n"
                            "  rec.n = 2^53 + 0\n"
                            "  if rec.body == 'bad' then error('boom') end\n"
                            "  if rec.body == 'err' then return 'errors' end\n"
                            "end\n";

static lg_batch_t *batch(int pipeline, const char *const *bodies, size_t n) {
  lg_batch_t *b = lg_test_batch_of(bodies, n);
  b->pipeline = pipeline;
  return b;
}

static void test_process_and_hand_back(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  back_t bk;
  back_init(&bk, &loop);
  lg_conf_script_t cs = {.path = (char *)lg_test_script(dir, SCRIPT)};
  lg_conf_pipeline_t pcs[2] = {
      {.name = "p", .scripts = &cs, .nscripts = 1},
      {.name = "plain"},
  };
  lg_config_t conf = {.pipelines = pcs, .npipelines = 2};
  lg_worker_opts_t o = opts_for(&conf, &bk);
  char err[512];
  lg_worker_t *w = lg_worker_create(0, &o, err, sizeof err);
  assert_non_null(w);

  const char *b1[] = {"a", "drop", "bad", "err", "z"};
  const char *b3[] = {"plain"};
  enum { NB = 8 };
  lg_batch_t *sent[NB];
  sent[0] = batch(0, b1, 5);
  for (int k = 1; k < NB - 1; k++) {
    char body[16];
    snprintf(body, sizeof body, "n%d", k);
    const char *one[] = {body};
    sent[k] = batch(0, one, 1);
  }
  sent[NB - 1] = batch(1, b3, 1);
  for (int k = 0; k < NB; k++)
    lg_worker_push(w, sent[k]);
  want_n = NB;
  lg_test_run_until(&loop, got_enough, &bk, 10000, "batches handed back");
  assert_int_equal(bk.ngot, NB);
  assert_false(bk.wrong_thread);
  /* In the order pushed (one worker keeps a file's order). */
  for (int k = 0; k < NB; k++)
    assert_ptr_equal(bk.got[k], sent[k]);
  assert_int_equal(lg_worker_backlog(w), 0);

  lg_batch_t *b = bk.got[0];
  assert_int_equal(b->nout, 3);
  /* "a" and "z" to main, "err" to errors, "bad" to the dead letter,
   * "drop" nowhere. */
  assert_int_equal(b->out[0].n, 2);
  assert_int_equal(b->out[1].n, 1);
  assert_int_equal(b->out[2].n, 1);
  assert_string_equal(out_line(b, 0, 0),
                      "{\"time\":\"1970-01-01T00:00:00.000000000Z\",\"body\":"
                      "\"a\",\"log.file.path\":\"/var/log/t.log\",\"n\":"
                      "9007199254740992}\n");
  assert_non_null(strstr(out_line(b, 0, 1), "\"body\":\"z\""));
  assert_non_null(strstr(out_line(b, 1, 0), "\"body\":\"err\""));
  const char *dl = out_line(b, 2, 0);
  assert_non_null(strstr(dl, "\"body\":\"bad\""));
  assert_non_null(strstr(dl, "boom"));
  assert_true(b->recs[1].flags & LG_REC_DROPPED);
  assert_true(b->recs[2].flags & LG_REC_FAILED);
  assert_int_equal(b->recs[3].routes, 2);
  assert_int_equal(b->recs[0].routes, 1);
  /* The worker took its lent field array back. */
  assert_int_equal(b->nfields, 0);
  assert_int_equal(b->recs[0].field_head, -1);
  /* The other batches of pipeline 0 ran the script too. */
  for (int k = 1; k < NB - 1; k++) {
    assert_int_equal(bk.got[k]->out[0].n, 1);
    assert_non_null(
        strstr(out_line(bk.got[k], 0, 0), "\"n\":9007199254740992"));
  }
  /* A pipeline without scripts passes records through to its routes. */
  lg_batch_t *p = bk.got[NB - 1];
  assert_int_equal(p->out[0].n, 1);
  assert_int_equal(p->out[2].n, 0);
  assert_null(strstr(out_line(p, 0, 0), "\"n\""));

  lg_worker_destroy(w);
  back_close(&bk, &loop);
}

/* A batch routed to an output whose records may come back for the
 * dead-letter output later (lg_encoder_t.keep_fields: it rejects records,
 * like stdout on a closed pipe, or has a max_retry_time) keeps its
 * script's fields after encoding; routed only to outputs that deliver or
 * retry, it gives them back to the worker. */
static void test_keep_fields(void **state) {
  (void)state;
  lg_conf_script_t cs = {.path = (char *)lg_test_script(dir, SCRIPT)};
  lg_conf_pipeline_t pc = {.name = "p", .scripts = &cs, .nscripts = 1};
  lg_config_t conf = {.pipelines = &pc, .npipelines = 1};
  for (int keep = 0; keep <= 1; keep++) {
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    back_t bk;
    back_init(&bk, &loop);
    lg_encoder_t enc[3] = {{.keep_fields = keep}, {0}, {0}};
    lg_worker_opts_t o = opts_for(&conf, &bk);
    o.encoders = enc;
    char err[512];
    lg_worker_t *w = lg_worker_create(0, &o, err, sizeof err);
    assert_non_null(w);
    const char *bodies[] = {"a", "b"};
    lg_worker_push(w, batch(0, bodies, 2));
    want_n = 1;
    lg_test_run_until(&loop, got_enough, &bk, 10000, "batch handed back");
    lg_batch_t *b = bk.got[0];
    assert_int_equal(b->out[0].n, 2);
    if (keep) {
      /* Encoded again later (for the dead-letter output): the field is
       * still there. */
      assert_true(b->nfields > 0);
      assert_non_null(lg_batch_find(b, 1, "n", 1));
      lg_payload_t again = LG_PAYLOAD_INIT;
      assert_int_equal(lg_payload_add(&again, NULL, b, 1, "rejected"), 0);
      uint32_t len;
      const char *line = lg_payload_rec(&again, 0, &len);
      assert_non_null(memmem(line, len, "\"n\":9007199254740992", 20));
      lg_payload_free(&again);
    } else {
      assert_int_equal(b->nfields, 0);
      assert_int_equal(b->recs[1].field_head, -1);
    }
    lg_worker_destroy(w);
    back_close(&bk, &loop);
  }
}

/* A batch naming a pipeline the config does not have is not lost: its
 * records go to the dead-letter output with the reason. */
static void test_unknown_pipeline(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  back_t bk;
  back_init(&bk, &loop);
  lg_conf_pipeline_t pc = {.name = "plain"};
  lg_config_t conf = {.pipelines = &pc, .npipelines = 1};
  lg_worker_opts_t o = opts_for(&conf, &bk);
  char err[512];
  lg_worker_t *w = lg_worker_create(1, &o, err, sizeof err);
  assert_non_null(w);
  const char *bodies[] = {"x", "y"};
  lg_worker_push(w, batch(5, bodies, 2));
  want_n = 1;
  lg_test_run_until(&loop, got_enough, &bk, 10000, "batch handed back");
  lg_batch_t *b = bk.got[0];
  assert_int_equal(b->pipeline, -1);
  assert_int_equal(b->out[0].n, 0);
  assert_int_equal(b->out[2].n, 2);
  assert_non_null(strstr(out_line(b, 2, 1), "\"body\":\"y\""));
  assert_non_null(strstr(out_line(b, 2, 1), "pipeline is not in the config"));
  lg_worker_destroy(w);
  back_close(&bk, &loop);
}

/* A script that does not load: no worker, and the error names the
 * script and line. */
static void test_load_error(void **state) {
  (void)state;
  lg_conf_script_t cs = {.path = (char *)lg_test_script(
                             dir, "function process(rec)\n  x = = 1\nend\n")};
  lg_conf_pipeline_t pc = {.name = "p", .scripts = &cs, .nscripts = 1};
  lg_config_t conf = {.pipelines = &pc, .npipelines = 1};
  back_t bk;
  memset(&bk, 0, sizeof bk);
  lg_worker_opts_t o = opts_for(&conf, &bk);
  char err[512] = "";
  assert_null(lg_worker_create(0, &o, err, sizeof err));
  char want[400];
  snprintf(want, sizeof want, "%s:2:", cs.path);
  assert_non_null(strstr(err, want));
  /* init failing is a load error too. */
  lg_conf_script_t ci = {.path = (char *)lg_test_script(
                             dir, "function init() error('no init') end\n"
                                  "function process() end\n")};
  pc.scripts = &ci;
  err[0] = '\0';
  assert_null(lg_worker_create(0, &o, err, sizeof err));
  assert_non_null(strstr(err, "no init"));
}

/* Workers spawned together load their scripts at the same time: each is
 * ready after lg_worker_ready and processes its batches; one whose init
 * fails gives its error from lg_worker_ready (and is freed there) while the
 * others go on. */
static void test_spawn_together(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  back_t bk;
  back_init(&bk, &loop);
  lg_conf_script_t cs = {.path = (char *)lg_test_script(
                             dir, "local id\n"
                                  "function init(params) id = 'ok' end\n"
                                  "function process(rec) rec.id = id end\n")};
  lg_conf_pipeline_t pc = {.name = "p", .scripts = &cs, .nscripts = 1};
  lg_config_t conf = {.pipelines = &pc, .npipelines = 1};
  lg_worker_opts_t o = opts_for(&conf, &bk);
  char err[512];
  enum { NW = 3 };
  lg_worker_t *w[NW];
  for (int k = 0; k < NW; k++)
    assert_non_null(w[k] = lg_worker_spawn(k, &o, err, sizeof err));
  for (int k = 0; k < NW; k++)
    assert_int_equal(lg_worker_ready(w[k], err, sizeof err), 0);
  lg_batch_t *sent[NW];
  for (int k = 0; k < NW; k++) {
    const char *one[] = {"x"};
    lg_worker_push(w[k], sent[k] = batch(0, one, 1));
  }
  want_n = NW;
  lg_test_run_until(&loop, got_enough, &bk, 10000, "batches handed back");
  for (size_t k = 0; k < bk.ngot; k++)
    assert_non_null(strstr(out_line(bk.got[k], 0, 0), "\"id\":\"ok\""));
  for (int k = 0; k < NW; k++)
    lg_worker_destroy(w[k]);

  /* A failing init: every spawned worker reports it, none is left. */
  lg_conf_script_t ci = {.path = (char *)lg_test_script(
                             dir, "function init() error('no init') end\n"
                                  "function process() end\n")};
  pc.scripts = &ci;
  for (int k = 0; k < NW; k++)
    assert_non_null(w[k] = lg_worker_spawn(k, &o, err, sizeof err));
  for (int k = 0; k < NW; k++) {
    err[0] = '\0';
    assert_int_equal(lg_worker_ready(w[k], err, sizeof err), -1);
    assert_non_null(strstr(err, "no init"));
  }
  back_close(&bk, &loop);
}

/* Hot reload of worker `w` to config generation 1, `c`: batches pushed
 * from now on are processed with it. Returns the version. */
static lg_worker_version_t swap_to(lg_worker_t *w, const lg_config_t *c) {
  lg_worker_version_t v = {.gen = 1,
                           .conf = c,
                           .output_names = names,
                           .noutputs = 3,
                           .dead_letter = 2,
                           .pipeline_routes = routes};
  char err[512];
  struct lg_lua *lua = lg_worker_prepare(w, &v, NULL, err, sizeof err);
  if (lua == NULL)
    fail_msg("prepare: %s", err);
  lg_worker_swap(w, &v, lua);
  return v;
}

/* Hot reload: batches pushed before lg_worker_swap run the old scripts,
 * batches pushed after it the new ones. */
static void test_swap(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  back_t bk;
  back_init(&bk, &loop);
  lg_conf_script_t c1 = {.path = (char *)lg_test_script(
                             dir, "function process(rec) rec.v = 1 end\n")};
  lg_conf_pipeline_t p1 = {.name = "p", .scripts = &c1, .nscripts = 1};
  lg_config_t conf1 = {.pipelines = &p1, .npipelines = 1};
  lg_conf_script_t c2 = {.path = (char *)lg_test_script(
                             dir, "function process(rec) rec.v = 2 end\n")};
  lg_conf_pipeline_t p2 = {.name = "p", .scripts = &c2, .nscripts = 1};
  lg_config_t conf2 = {.pipelines = &p2, .npipelines = 1};
  lg_worker_opts_t o = opts_for(&conf1, &bk);
  char err[512];
  lg_worker_t *w = lg_worker_create(0, &o, err, sizeof err);
  assert_non_null(w);
  const char *one[] = {"r"};
  for (int k = 0; k < 3; k++)
    lg_worker_push(w, batch(0, one, 1));
  lg_worker_version_t v2 = swap_to(w, &conf2);
  for (int k = 0; k < 3; k++)
    lg_worker_push(w, batch(0, one, 1));
  want_n = 6;
  lg_test_run_until(&loop, got_enough, &bk, 10000, "batches handed back");
  for (int k = 0; k < 6; k++) {
    const char *want = k < 3 ? "\"v\":1}" : "\"v\":2}";
    if (strstr(out_line(bk.got[k], 0, 0), want) == NULL)
      fail_msg("batch %d: %s, want %s", k, out_line(bk.got[k], 0, 0), want);
  }
  /* A swap prepared but never reached is freed by destroy (ASan). */
  struct lg_lua *unused = lg_worker_prepare(w, &v2, NULL, err, sizeof err);
  assert_non_null(unused);
  lg_worker_swap(w, &v2, unused);
  lg_worker_destroy(w);
  back_close(&bk, &loop);
}

/* Index of batch `b` among the batches handed back, or -1. */
static int got_at(const back_t *bk, const lg_batch_t *b) {
  for (size_t k = 0; k < bk->ngot; k++)
    if (bk->got[k] == b)
      return (int)k;
  return -1;
}

/* abc: the back_t, then batches A, B and C. */
static int got_a_or_b(void *arg) {
  void **abc = arg;
  return got_at(abc[0], abc[1]) >= 0 || got_at(abc[0], abc[2]) >= 0;
}

static int got_abc(void *arg) {
  void **abc = arg;
  return got_at(abc[0], abc[1]) >= 0 && got_at(abc[0], abc[2]) >= 0 &&
         got_at(abc[0], abc[3]) >= 0;
}

/* A crew of two: worker 0 runs a long batch A with B (any worker may
 * process it) and C (its own) queued behind it. Worker 1, when it runs out
 * of batches of its own, takes B, which is back before A; C never moves
 * (back after A). With worker 1 on a newer config generation than worker
 * 0's queue (swap_w1), B stays on worker 0: a batch keeps the version of
 * the queue it was given to. */
static void check_crew(int swap_w1) {
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  back_t bk;
  back_init(&bk, &loop);
  lg_conf_script_t c1 = {.path = (char *)lg_test_script(
                             dir, "function process(rec)\n"
                                  "  if rec.body == 'long' then\n"
                                  "    local t = os.clock()\n"
                                  "    while os.clock() - t < 1.0 do end\n"
                                  "  end\n"
                                  "  rec.v = 1\n"
                                  "end\n")};
  lg_conf_pipeline_t p1 = {.name = "p", .scripts = &c1, .nscripts = 1};
  lg_config_t conf1 = {.pipelines = &p1, .npipelines = 1};
  lg_conf_script_t c2 = {.path = (char *)lg_test_script(
                             dir, "function process(rec) rec.v = 2 end\n")};
  lg_conf_pipeline_t p2 = {.name = "p", .scripts = &c2, .nscripts = 1};
  lg_config_t conf2 = {.pipelines = &p2, .npipelines = 1};
  lg_worker_opts_t o = opts_for(&conf1, &bk);
  o.crew = lg_crew_create(2);
  assert_non_null(o.crew);
  char err[512];
  lg_worker_t *w0 = lg_worker_create(0, &o, err, sizeof err);
  lg_worker_t *w1 = lg_worker_create(1, &o, err, sizeof err);
  assert_non_null(w0);
  assert_non_null(w1);
  if (swap_w1)
    swap_to(w1, &conf2);
  const char *long_body[] = {"long"}, *one[] = {"r"};
  lg_batch_t *a = batch(0, long_body, 1), *b = batch(0, one, 1),
             *c = batch(0, one, 1);
  b->any_worker = 1;
  lg_worker_push(w0, a);
  lg_worker_push(w0, b);
  lg_worker_push(w0, c);
  /* Worker 1 looks at the others' queues when it runs out: give it
   * batches until A or B is back (worker 0 may not have taken A yet when
   * worker 1 first looks, and then B is not at the head). */
  void *abc[] = {&bk, a, b, c};
  for (int k = 0; k < 40 && !got_a_or_b(abc); k++) {
    lg_worker_push(w1, batch(0, one, 1));
    lg_test_run_for(&loop, 50);
  }
  lg_test_run_until(&loop, got_abc, abc, 20000, "batches A, B and C");
  if (swap_w1)
    assert_true(got_at(&bk, a) < got_at(&bk, b));
  else
    assert_true(got_at(&bk, b) < got_at(&bk, a));
  assert_true(got_at(&bk, a) < got_at(&bk, c));
  assert_non_null(strstr(out_line(b, 0, 0), "\"v\":1}"));
  lg_worker_destroy(w0);
  lg_worker_destroy(w1);
  lg_crew_destroy(o.crew);
  back_close(&bk, &loop);
}

static void test_crew_takes_waiting_batch(void **state) {
  (void)state;
  check_crew(0);
}

static void test_crew_keeps_version(void **state) {
  (void)state;
  check_crew(1);
}

static int setup(void **state) {
  (void)state;
  dir = strdup(lg_test_tmpdir("lg_worker"));
  return dir == NULL ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  lg_test_rmtree(dir);
  free((char *)dir);
  return 0;
}

/* An encoder that can never send a record (as Kafka's for a topic name
 * over 249 bytes). */
static int refuse_all(const void *conf, const lg_batch_t *b, uint32_t i,
                      const char *error, lg_payload_t *out) {
  (void)conf, (void)b, (void)i, (void)error, (void)out;
  return -EINVAL;
}

typedef struct encode_call {
  lg_batch_t *b;
  uint32_t noutputs;
  int dead_letter;
  const lg_encoder_t *enc;
  int rc;
} encode_call_t;

static void run_encode(void *arg) {
  encode_call_t *c = arg;
  c->rc = lg_worker_encode(c->b, c->noutputs, c->dead_letter, c->enc);
}

/* Records that reach neither their output nor the dead-letter output (the
 * encoders refuse them) are not dropped silently: one error line per batch
 * says how many, why, and where the first was read. Record 0 failed in a
 * script and the dead-letter encoder refuses it; record 1's output and
 * then the dead-letter output refuse it; then, with no dead-letter output,
 * both records' output refuses them. */
static void test_encode_losses_logged(void **state) {
  (void)state;
  const char *bodies[] = {"a", "b"};
  lg_encoder_t enc[2] = {{refuse_all, NULL, 0}, {refuse_all, NULL, 0}};
  for (int dl = 1; dl >= -1; dl -= 2) {
    lg_batch_t *b = lg_test_batch_of(bodies, 2);
    if (dl >= 0)
      assert_int_equal(lg_batch_fail(b, 0, "boom", 4), 0);
    encode_call_t c = {b, 2, dl, enc, -1};
    char *log = lg_test_stderr_of(run_encode, &c);
    assert_int_equal(c.rc, 0);
    assert_int_equal(b->out[0].n, 0);
    assert_int_equal(b->out[1].n, 0);
    if (strstr(log, "2 record(s) of a batch are lost") == NULL ||
        strstr(log, "Invalid argument") == NULL ||
        strstr(log, "the first at file /var/log/t.log offset 0") == NULL)
      fail_msg("dead-letter output %d: logged \"%s\"", dl, log);
    free(log);
    lg_batch_destroy(b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_process_and_hand_back),
      cmocka_unit_test(test_encode_losses_logged),
      cmocka_unit_test(test_keep_fields),
      cmocka_unit_test(test_unknown_pipeline),
      cmocka_unit_test(test_load_error),
      cmocka_unit_test(test_spawn_together),
      cmocka_unit_test(test_swap),
      cmocka_unit_test(test_crew_takes_waiting_batch),
      cmocka_unit_test(test_crew_keeps_version),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
