/*
 * Unit tests: the delivery layer's paths that no output type's own tests
 * pin down (outputs/lg_delivery*.c), driven through a scripted output type
 * registered for the test (lg_output_register), with a real `file` output
 * as the dead-letter output:
 *   - bisecting: a request answered "split" is sent again as two halves,
 *     each alone, until the record that breaks it is alone; that record
 *     is rejected to the dead-letter output with the reason, its
 *     neighbours are delivered once each, the halves cut across two
 *     submissions, and both are acked in order with status 0;
 *   - lg_output_hold_sends: while held, a request that ends frees its
 *     slot but nothing is sent (not from within lg_out_req_done, not
 *     later); the release sends what waits;
 *   - max_retry_time: records still failing after it go to the
 *     dead-letter output with "still failing after max_retry_time (<ms>
 *     ms): <the backend's reason>", not before it, and their submission
 *     is acked with status 0 (the checkpoint moves on); the output
 *     delivers again once the backend is back;
 *   - a dead-letter output that rejects the records too (and has no
 *     dead-letter output of its own): they are lost, counted, and the
 *     submission holding them is acked with a negative status, in order;
 *   - the rejecting output abandoned and freed while its dead-letter
 *     output still holds the record: nothing acked, the record still
 *     delivered by the dead-letter output, x's memory not touched;
 *   - out of memory while an answer is settled (allocations made to fail
 *     from each one on, lg_test_oom.h): every record still ends
 *     delivered, retried or dead-lettered, and its submission is acked;
 *     a per-record answer that cannot be kept sends the request again.
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
#include "core/lg_buf.h"
#include "core/lg_metrics.h"
#include "core/lg_util.h"
#include "helpers/lg_test.h"
#include "helpers/lg_test_oom.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_payload.h"

/* ---- the scripted output type ------------------------------------------- */

/* How the scripted output answers a request (set by each test). */
typedef enum answer {
  ANSWER_SPLIT_ON_BAD, /* "split" while a record holds "BAD", else
                          delivered */
  ANSWER_DOWN,         /* every record "retry" (the backend is down) */
  ANSWER_DELIVER,      /* delivered */
  ANSWER_REJECT_BAD,   /* per record: "rejected" for those holding "BAD",
                          delivered for the others */
} answer_t;

#define MAX_REQS 64

static struct {
  answer_t answer;
  int sync;                 /* answer from within send, else next turn */
  int manual;               /* neither: the test answers sc.queue itself */
  uint32_t sizes[MAX_REQS]; /* records of each request, in send order */
  int nreqs;
  lg_buf_t delivered;     /* bodies delivered, one per line */
  lg_out_req_t *queue[8]; /* waiting for the next turn */
  int nqueue;
  lg_output_t *refuser; /* a scripted output rejecting every request */
  int refused;          /* records it rejected */
  lg_output_t *dl_out;  /* a scripted output delivering all it gets */
  int dl_records;       /* records it delivered */
  lg_output_t *holder;  /* a scripted output whose requests wait in
                           sc.queue until the test answers them (delivered) */
  /* The first `oom_answers` answers are given (lg_out_req_set and
   * lg_out_req_done, and all they do) while allocations fail after the
   * first `oom_pass` (lg_test_oom.h); then the answer is `then`.
   * oom_failed: allocations refused. */
  int oom_answers;
  long oom_pass, oom_failed;
  int oom_sets; /* answers whose lg_out_req_set calls all fail to allocate */
  answer_t then;
} sc;

typedef struct scripted_conf {
  lg_out_limits_t limits;
} scripted_conf_t;

static const lg_option_t scripted_options[] = {
    LG_OUT_DELIVERY_OPTIONS(scripted_conf_t, "8", "1MiB", "0", "1", "0"),
    {.name = NULL},
};

typedef struct scripted {
  lg_output_t *o;
  uv_timer_t timer;
} scripted_t;

/* The body of a JSON-lines record ("body":"..." with no escapes). */
static void add_body(lg_buf_t *out, const char *json, uint32_t len) {
  const char *b = memmem(json, len, "\"body\":\"", 8);
  assert_non_null(b);
  b += 8;
  const char *e = memchr(b, '"', (size_t)(json + len - b));
  assert_non_null(e);
  lg_buf_append(out, b, (size_t)(e - b));
  lg_buf_putc(out, '\n');
}

static void answer_records(lg_out_req_t *r, const lg_out_rec_t *recs) {
  if (r->o == sc.dl_out) {
    sc.dl_records += (int)r->n;
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
    return;
  }
  if (r->o == sc.refuser) {
    sc.refused += (int)r->n;
    lg_out_req_done(r, LG_OUT_REJECTED, "HTTP 403: index is read-only");
    return;
  }
  if (sc.answer == ANSWER_REJECT_BAD) {
    for (uint32_t j = 0; j < r->n; j++)
      if (memmem(recs[j].data, recs[j].len, "BAD", 3) != NULL) {
        if (sc.oom_sets > 0)
          lg_test_oom_arm(0);
        lg_out_req_set(r, j, LG_OUT_REJECTED, "mapping error");
        if (sc.oom_sets > 0)
          sc.oom_failed += lg_test_oom_disarm();
      } else {
        add_body(&sc.delivered, recs[j].data, recs[j].len);
      }
    if (sc.oom_sets > 0)
      sc.oom_sets--;
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
    return;
  }
  if (sc.answer == ANSWER_DOWN) {
    lg_out_req_done(r, LG_OUT_RETRY, "backend down");
    return;
  }
  if (sc.answer == ANSWER_SPLIT_ON_BAD)
    for (uint32_t j = 0; j < r->n; j++)
      if (memmem(recs[j].data, recs[j].len, "BAD", 3) != NULL) {
        lg_out_req_done(r, LG_OUT_SPLIT,
                        "HTTP 400: a record in the "
                        "request is malformed");
        return;
      }
  for (uint32_t j = 0; j < r->n; j++)
    add_body(&sc.delivered, recs[j].data, recs[j].len);
  lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
}

static void answer_one(lg_out_req_t *r) {
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  assert_non_null(recs);
  int oom = sc.oom_answers > 0 && r->o != sc.refuser && r->o != sc.holder;
  if (oom) {
    sc.oom_answers--;
    lg_test_oom_arm(sc.oom_pass);
  }
  answer_records(r, recs);
  if (oom) {
    sc.oom_failed += lg_test_oom_disarm();
    if (sc.oom_answers == 0)
      sc.answer = sc.then;
  }
}

static void on_turn(uv_timer_t *t) {
  (void)t;
  int n = sc.nqueue;
  lg_out_req_t *q[8];
  memcpy(q, sc.queue, (size_t)n * sizeof *q);
  sc.nqueue = 0;
  for (int i = 0; i < n; i++)
    answer_one(q[i]);
}

static int scripted_init(lg_output_t *o, const void *conf, char *err,
                         size_t errlen) {
  (void)conf, (void)err, (void)errlen;
  scripted_t *s = calloc(1, sizeof *s);
  assert_non_null(s);
  s->o = o;
  assert_int_equal(uv_timer_init(o->loop, &s->timer), 0);
  s->timer.data = s;
  o->impl = s;
  return 0;
}

static void scripted_send(lg_output_t *o, lg_out_req_t *r) {
  scripted_t *s = o->impl;
  assert_true(sc.nreqs < MAX_REQS);
  sc.sizes[sc.nreqs++] = r->n;
  if (sc.sync) {
    answer_one(r);
    return;
  }
  assert_true(sc.nqueue < 8);
  sc.queue[sc.nqueue++] = r;
  if (!sc.manual && o != sc.holder)
    uv_timer_start(&s->timer, on_turn, 1, 0);
}

static void scripted_closed(uv_handle_t *h) {
  scripted_t *s = h->data;
  lg_output_t *o = s->o;
  free(s);
  lg_output_closed(o);
}

static void scripted_close(lg_output_t *o) {
  scripted_t *s = o->impl;
  uv_close((uv_handle_t *)&s->timer, scripted_closed);
}

static const lg_output_type_t scripted_type = {
    .name = "scripted",
    .doc = "A test double whose answers each test sets.",
    .options = scripted_options,
    .conf_size = sizeof(scripted_conf_t),
    .rejects = 1,
    .init = scripted_init,
    .send = scripted_send,
    .close = scripted_close,
};

/* The scripted output with an encoder whose payload holds 2 records at
 * most: a third is refused with -E2BIG, as lg_payload_add refuses a
 * record past a payload's 4 GiB. */
static int two_per_payload(const void *conf, const lg_batch_t *b, uint32_t i,
                           const char *error, lg_payload_t *out) {
  if (out->n >= 2)
    return -E2BIG;
  return lg_payload_encode_json(conf, b, i, error, out);
}

static const lg_output_type_t scripted_small_type = {
    .name = "scripted_small",
    .doc = "The scripted test double, two records per payload.",
    .options = scripted_options,
    .conf_size = sizeof(scripted_conf_t),
    .rejects = 1,
    .encode = two_per_payload,
    .init = scripted_init,
    .send = scripted_send,
    .close = scripted_close,
};

/* ---- one output and its dead-letter file, on a loop --------------------- */

#define MAX_ACKS 16

typedef struct fixture {
  uv_loop_t loop;
  char dir[256];
  char dlpath[512];
  lg_conf_output_t *conf, *dlconf;
  lg_output_t *o, *dl;
  int nacks;
  uintptr_t refs[MAX_ACKS];
  int status[MAX_ACKS];
  lg_batch_t *held[MAX_ACKS];
  int nheld;
} fixture_t;

static void on_ack(void *ud, void *ref, int status) {
  fixture_t *f = ud;
  if (ref == NULL)
    return; /* the dead-letter output's own acks */
  assert_true(f->nacks < MAX_ACKS);
  f->refs[f->nacks] = (uintptr_t)ref;
  f->status[f->nacks++] = status;
}

static lg_output_t *dl_get(void *ud) { return ((fixture_t *)ud)->dl; }

/* Opens the scripted output with options `kv` (pairs, NULL-terminated)
 * and a `file` dead-letter output. */
static void fixture_open(fixture_t *f, const char *const *kv) {
  memset(f, 0, sizeof *f);
  memset(&sc, 0, sizeof sc);
  /* Room for every body delivered: add_body allocates nothing while
   * allocations fail. */
  assert_int_equal(lg_buf_reserve(&sc.delivered, 1 << 16), 0);
  snprintf(f->dir, sizeof f->dir, "%s", lg_test_tmpdir("lg_delivery."));
  snprintf(f->dlpath, sizeof f->dlpath, "%s/dead-letter.jsonl", f->dir);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  char err[512] = "";
  f->conf = lg_config_output_new("x", "scripted", kv, err, sizeof err);
  if (f->conf == NULL)
    fail_msg("%s", err);
  f->o = lg_output_create(&f->loop, f->conf, 0, on_ack, f, err, sizeof err);
  if (f->o == NULL)
    fail_msg("%s", err);
  const char *dkv[] = {"path", f->dlpath, NULL};
  f->dlconf = lg_config_output_new("dl", "file", dkv, err, sizeof err);
  assert_non_null(f->dlconf);
  f->dl = lg_output_create(&f->loop, f->dlconf, 1, on_ack, f, err, sizeof err);
  assert_non_null(f->dl);
  lg_output_set_dead_letter(f->o, dl_get, f);
}

/* The dead-letter file after the outputs closed, NUL-terminated. */
static char *dead_letters(const fixture_t *f) {
  char *text = NULL;
  size_t len = 0;
  if (lg_util_read_file(f->dlpath, 1 << 20, &text, &len) != 0)
    return strdup("");
  return text;
}

static void on_closed(void *ud) { (*(int *)ud)++; }

static int reached(void *arg) { return ((int *)arg)[0] >= ((int *)arg)[1]; }

/* Closes both outputs and the loop; returns the dead-letter file's text
 * (free it). */
static char *fixture_close(fixture_t *f) {
  int closed[2] = {0, 2};
  lg_output_close(f->o, on_closed, &closed[0]);
  lg_output_close(f->dl, on_closed, &closed[0]);
  lg_test_run_until(&f->loop, reached, closed, 10000, "outputs closed");
  LG_TEST_LOOP_CLOSE(&f->loop);
  for (int i = 0; i < f->nheld; i++)
    lg_batch_destroy(f->held[i]);
  lg_config_output_free(f->conf);
  lg_config_output_free(f->dlconf);
  lg_buf_free(&sc.delivered);
  char *dl = dead_letters(f);
  assert_int_equal(lg_test_rmtree(f->dir), 0);
  return dl;
}

/* As submit, with allocations failing after the first `pass` during
 * lg_output_submit (lg_test_oom.h); a submission refused (-ENOMEM, nothing
 * taken) is made again with memory, as the engine does. Returns the
 * allocations refused. */
static long submit_oom(fixture_t *f, uintptr_t ref, const char *const *bodies,
                       size_t n, long pass) {
  lg_batch_t *b = lg_test_batch_of(bodies, n);
  b->fingerprint = 0xd1ce;
  b->out = calloc(1, sizeof *b->out);
  assert_non_null(b->out);
  b->nout = 1;
  lg_encoder_t enc = lg_output_encoder(f->o);
  for (uint32_t j = 0; j < b->n; j++)
    assert_int_equal(lg_payload_add(&b->out[0], &enc, b, j, NULL), 0);
  assert_true(f->nheld < MAX_ACKS);
  f->held[f->nheld++] = b;
  lg_test_oom_arm(pass);
  int rc = lg_output_submit(f->o, &b->out[0], (void *)ref, 1);
  long failed = lg_test_oom_disarm();
  if (rc == -ENOMEM)
    rc = lg_output_submit(f->o, &b->out[0], (void *)ref, 1);
  assert_int_equal(rc, 0);
  return failed;
}

/* Submits the records `bodies` (n) as one batch, encoded as a worker
 * would with the output's encoder, on lane 1 with ack ref `ref`. */
static void submit(fixture_t *f, uintptr_t ref, const char *const *bodies,
                   size_t n) {
  lg_batch_t *b = lg_test_batch_of(bodies, n);
  b->fingerprint = 0xd1ce;
  b->out = calloc(1, sizeof *b->out);
  assert_non_null(b->out);
  b->nout = 1;
  lg_encoder_t enc = lg_output_encoder(f->o);
  for (uint32_t j = 0; j < b->n; j++)
    assert_int_equal(lg_payload_add(&b->out[0], &enc, b, j, NULL), 0);
  assert_true(f->nheld < MAX_ACKS);
  f->held[f->nheld++] = b;
  assert_int_equal(lg_output_submit(f->o, &b->out[0], (void *)ref, 1), 0);
}

static int acks_reached(void *arg) {
  fixture_t *f = arg;
  return f->nacks >= f->nheld;
}

/* The value of metric `series` (its full name with labels) in /metrics. */
static double metric(const char *series) {
  lg_buf_t m = LG_BUF_INIT;
  assert_int_equal(lg_metrics_render(&m), 0);
  lg_buf_putc(&m, '\0');
  char pat[256];
  snprintf(pat, sizeof pat, "\n%s ", series);
  const char *p = strstr(m.data, pat);
  double v = p != NULL ? strtod(p + strlen(pat), NULL) : -1;
  lg_buf_free(&m);
  return v;
}

static int count(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

/* ---- bisecting ---------------------------------------------------------- */

/* Two submissions (3 and 5 records) coalesce into one request of 8; the
 * record B3 makes every request holding it fail as a whole. */
static void test_split_isolates_the_bad_record(void **state) {
  (void)state;
  const char *kv[] = {"max_coalescing_delay", "1s", NULL};
  for (int sync = 0; sync <= 1; sync++) {
    fixture_t f;
    fixture_open(&f, kv);
    sc.answer = ANSWER_SPLIT_ON_BAD;
    sc.sync = sync; /* answered from within send, or on the next turn */
    const char *a[] = {"A0", "A1", "A2"};
    const char *b[] = {"B0", "B1", "B2", "BAD-B3", "B4"};
    submit(&f, 1, a, 3);
    submit(&f, 2, b, 5); /* 8 records: a full request, sent now */
    lg_test_run_until(&f.loop, acks_reached, &f, 10000, "both acks");

    /* 8 → halves 4 (A0-A2, B0) and 4 (B1-B4); B1-B4 → 2 and 2; B3-B4 →
     * 1 and 1; the single B3 answered "split" is rejected. */
    static const uint32_t want[] = {8, 4, 4, 2, 2, 1, 1};
    assert_int_equal(sc.nreqs, 7);
    for (int i = 0; i < 7; i++)
      if (sc.sizes[i] != want[i])
        fail_msg("request %d had %u records, want %u", i, sc.sizes[i], want[i]);
    lg_buf_putc(&sc.delivered, '\0');
    assert_string_equal(sc.delivered.data, "A0\nA1\nA2\nB0\nB1\nB2\nB4\n");
    /* Both acked, in submit order, status 0: the checkpoint moves on. */
    assert_int_equal(f.nacks, 2);
    assert_int_equal(f.refs[0], 1);
    assert_int_equal(f.refs[1], 2);
    assert_int_equal(f.status[0], 0);
    assert_int_equal(f.status[1], 0);
    assert_int_equal(f.o->records_out, 7);
    assert_int_equal(f.o->retries, 8 + 4 + 2); /* records sent again */
    assert_int_equal(
        metric("lugger_output_records_total{output=\"x\",result=\"rejected\"}"),
        1 + sync); /* the series counts on across outputs named x */
    char *dl = fixture_close(&f);
    assert_int_equal(count(dl, "\n"), 1);
    assert_int_equal(count(dl, "\"body\":\"BAD-B3\""), 1);
    assert_non_null(strstr(dl, "\"lugger.error\":\"output x rejected the "
                               "records for good: HTTP 400: a record in the "
                               "request is malformed\""));
    free(dl);
  }
}

/* ---- max_retry_time ----------------------------------------------------- */

static void test_max_retry_time_dead_letters(void **state) {
  (void)state;
  const char *kv[] = {"max_retry_time", "300ms", NULL};
  fixture_t f;
  fixture_open(&f, kv);
  sc.answer = ANSWER_DOWN;
  const char *a[] = {"r0", "r1", "r2"};
  uint64_t t0 = lg_test_now_ms();
  submit(&f, 1, a, 3);
  /* Retried with backoff while the time lasts: nothing acked. */
  lg_test_run_for(&f.loop, 200);
  assert_int_equal(f.nacks, 0);
  assert_true(f.o->retries >= 3);
  assert_int_equal(lg_output_retrying(f.o), 1);
  lg_test_run_until(&f.loop, acks_reached, &f, 10000, "the ack");
  uint64_t took = lg_test_now_ms() - t0;
  /* Not before max_retry_time from the first failure, and at the first
   * answer after it: backoff steps of at most 100, 200 and 400 ms put
   * that answer before 700 ms (4 s: a loaded machine). */
  if (took < 300 || took > 4000)
    fail_msg("dead-lettered after %llu ms (max_retry_time 300 ms)",
             (unsigned long long)took);
  assert_true(sc.nreqs >= 2);
  assert_int_equal(f.status[0], 0); /* settled: the checkpoint moves on */
  assert_int_equal(f.o->records_out, 0);
  assert_int_equal(
      metric("lugger_output_dead_lettered_total{output=\"x\"}") >= 3, 1);

  /* The backend is back: the next records are delivered. */
  sc.answer = ANSWER_DELIVER;
  const char *b[] = {"s0"};
  submit(&f, 2, b, 1);
  lg_test_run_until(&f.loop, acks_reached, &f, 10000, "the second ack");
  assert_int_equal(f.refs[1], 2);
  assert_int_equal(f.status[1], 0);
  assert_int_equal(f.o->records_out, 1);
  assert_int_equal(lg_output_retrying(f.o), 0);
  char *dl = fixture_close(&f);
  assert_int_equal(count(dl, "\n"), 3);
  for (int i = 0; i < 3; i++) {
    char body[32];
    snprintf(body, sizeof body, "\"body\":\"r%d\"", i);
    assert_int_equal(count(dl, body), 1);
  }
  assert_int_equal(count(dl, "\"lugger.error\":\"output x rejected the "
                             "records for good: still failing after "
                             "max_retry_time (300 ms): backend down\""),
                   3);
  assert_int_equal(count(dl, "\"body\":\"s0\""), 0);
  free(dl);
}

/* ---- a dead-letter output that rejects too ----------------------------- */

static lg_output_t *refuser_get(void *ud) { return ud; }

/* A second output of type `type` (a scripted one) named `name` at slot
 * 2 of fixture `f`, its conf in *conf for the test to free. */
static lg_output_t *second_output(fixture_t *f, const char *name,
                                  const char *type, lg_conf_output_t **conf) {
  char err[512] = "";
  *conf = lg_config_output_new(name, type, NULL, err, sizeof err);
  if (*conf == NULL)
    fail_msg("%s", err);
  lg_output_t *o =
      lg_output_create(&f->loop, *conf, 2, on_ack, f, err, sizeof err);
  if (o == NULL)
    fail_msg("%s", err);
  return o;
}

/* The record x rejects goes to its dead-letter output, which rejects it
 * for good as well and has no dead-letter output of its own: the record
 * is lost, counted as lost by the dead-letter output, and the submission
 * holding it is acked with a negative status (the engine logs the loss),
 * after its neighbours were delivered; the next submission of the lane
 * is acked after it, with 0. */
static void test_dead_letter_rejects_too(void **state) {
  (void)state;
  fixture_t f;
  fixture_open(&f, NULL);
  sc.answer = ANSWER_REJECT_BAD;
  lg_conf_output_t *rconf;
  lg_output_t *refuser = second_output(&f, "dlx", "scripted", &rconf);
  sc.refuser = refuser;
  lg_output_set_dead_letter(f.o, refuser_get, refuser);
  double lost0 =
      metric("lugger_output_records_total{output=\"dlx\",result=\"lost\"}");
  double rej0 =
      metric("lugger_output_records_total{output=\"x\",result=\"rejected\"}");

  const char *a[] = {"a0", "BAD-a1", "a2"};
  const char *b[] = {"b0"};
  submit(&f, 1, a, 3);
  submit(&f, 2, b, 1);
  lg_test_run_until(&f.loop, acks_reached, &f, 10000, "both acks");
  assert_int_equal(sc.refused, 1);
  lg_buf_putc(&sc.delivered, '\0');
  assert_string_equal(sc.delivered.data, "a0\na2\nb0\n");
  assert_int_equal(f.nacks, 2);
  assert_int_equal(f.refs[0], 1);
  assert_true(f.status[0] < 0); /* a record of it is lost */
  assert_int_equal(f.refs[1], 2);
  assert_int_equal(f.status[1], 0);
  assert_int_equal(f.o->records_out, 3);
  assert_int_equal(refuser->records_out, 0);
  if (lost0 < 0)
    lost0 = 0;
  if (rej0 < 0)
    rej0 = 0;
  assert_int_equal(
      metric("lugger_output_records_total{output=\"x\",result=\"rejected\"}"),
      rej0 + 1);
  assert_int_equal(
      metric("lugger_output_records_total{output=\"dlx\",result=\"lost\"}"),
      lost0 + 1);

  int closed[2] = {0, 1};
  lg_output_close(refuser, on_closed, &closed[0]);
  lg_test_run_until(&f.loop, reached, closed, 10000, "dlx closed");
  char *dl = fixture_close(&f);
  assert_string_equal(dl, ""); /* the file output was not the DL here */
  free(dl);
  lg_config_output_free(rconf);
}

/* ---- the rejecting output goes away first ------------------------------ */

static int queued_one(void *arg) {
  (void)arg;
  return sc.nqueue >= 1;
}

/* x rejects a record; its dead-letter output holds it in a request not
 * answered yet when x, closing, is abandoned (the shutdown timeout) and
 * freed. x acks nothing (its batch is read again at the next start); the
 * dead-letter output still delivers the record, and its ack, which no
 * longer has a parent to settle, touches nothing of x (ASan in the test
 * build would see it). */
static void test_dead_letter_outlives_abandoned_output(void **state) {
  (void)state;
  fixture_t f;
  fixture_open(&f, NULL);
  sc.answer = ANSWER_REJECT_BAD;
  lg_conf_output_t *hconf;
  lg_output_t *holder = second_output(&f, "dlh", "scripted", &hconf);
  sc.holder = holder;
  lg_output_set_dead_letter(f.o, refuser_get, holder);

  const char *a[] = {"a0", "BAD-a1"};
  submit(&f, 1, a, 2);
  lg_test_run_until(&f.loop, queued_one, NULL, 10000,
                    "the dead-letter request");
  assert_int_equal(sc.nqueue, 1);
  assert_int_equal(f.nacks, 0); /* waits for its dead-letter child */

  int closed[2] = {0, 1};
  lg_output_close(f.o, on_closed, &closed[0]);
  lg_test_run_for(&f.loop, 50);
  assert_int_equal(closed[0], 0); /* the drain waits for the child */
  lg_output_abandon(f.o);
  lg_test_run_until(&f.loop, reached, closed, 10000, "x closed");
  f.o = NULL; /* freed */
  assert_int_equal(f.nacks, 0);

  lg_out_req_t *r = sc.queue[0];
  sc.nqueue = 0;
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  assert_non_null(recs);
  assert_int_equal(r->n, 1);
  add_body(&sc.delivered, recs[0].data, recs[0].len);
  lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
  lg_test_run_for(&f.loop, 20);
  assert_int_equal(holder->records_out, 1);
  assert_int_equal(f.nacks, 0);
  lg_buf_putc(&sc.delivered, '\0');
  assert_string_equal(sc.delivered.data, "a0\nBAD-a1\n");

  int done[2] = {0, 2};
  lg_output_close(holder, on_closed, &done[0]);
  lg_output_close(f.dl, on_closed, &done[0]);
  lg_test_run_until(&f.loop, reached, done, 10000, "outputs closed");
  LG_TEST_LOOP_CLOSE(&f.loop);
  for (int i = 0; i < f.nheld; i++)
    lg_batch_destroy(f.held[i]);
  lg_config_output_free(f.conf);
  lg_config_output_free(f.dlconf);
  lg_config_output_free(hconf);
  lg_buf_free(&sc.delivered);
  assert_int_equal(lg_test_rmtree(f.dir), 0);
}

/* ---- holding sends ------------------------------------------------------ */

/* Three submissions of two records, two requests in flight at most: the
 * third waits for a slot. A request ending while sends are held frees its
 * slot, yet the third is sent only at the release. */
static void test_hold_sends(void **state) {
  (void)state;
  const char *kv[] = {"max_batch_size", "2", "max_in_flight", "2", NULL};
  fixture_t f;
  fixture_open(&f, kv);
  sc.answer = ANSWER_DELIVER;
  sc.manual = 1;
  const char *a[] = {"a0", "a1"}, *b[] = {"b0", "b1"}, *c[] = {"c0", "c1"};
  submit(&f, 1, a, 2);
  submit(&f, 2, b, 2);
  submit(&f, 3, c, 2);
  lg_test_run_for(&f.loop, 30);
  assert_int_equal(sc.nreqs, 2);
  assert_int_equal(sc.nqueue, 2);
  lg_output_hold_sends(f.o, 1);
  lg_out_req_t *first = sc.queue[0];
  sc.queue[0] = sc.queue[1];
  sc.nqueue = 1;
  answer_one(first); /* a slot is free: without the hold, c goes now */
  assert_int_equal(f.nacks, 1);
  assert_int_equal(sc.nreqs, 2);
  lg_test_run_for(&f.loop, 30);
  assert_int_equal(sc.nreqs, 2);
  lg_output_hold_sends(f.o, 0);
  assert_int_equal(sc.nreqs, 3);
  assert_int_equal(sc.sizes[2], 2);
  while (sc.nqueue > 0) {
    lg_out_req_t *r = sc.queue[0];
    memmove(sc.queue, sc.queue + 1, (size_t)--sc.nqueue * sizeof *sc.queue);
    answer_one(r);
  }
  lg_test_run_until(&f.loop, acks_reached, &f, 10000, "the acks");
  for (int i = 0; i < 3; i++) {
    assert_int_equal(f.refs[i], (uintptr_t)(i + 1));
    assert_int_equal(f.status[i], 0);
  }
  sc.delivered.data[sc.delivered.len - 1] = '\0';
  assert_string_equal(sc.delivered.data, "a0\na1\nb0\nb1\nc0\nc1");
  free(fixture_close(&f));
}

/* ---- a dead-letter submission that is full ------------------------------ */

/* x rejects 5 records; its dead-letter output's payload takes 2 records
 * at most (-E2BIG after, as at 4 GiB): the records go in several
 * dead-letter submissions, none is lost, and x's submission acks with 0.
 * Before, every record past the full payload was counted lost. */
static void test_dead_letter_payload_full(void **state) {
  (void)state;
  fixture_t f;
  fixture_open(&f, NULL);
  sc.answer = ANSWER_REJECT_BAD;
  lg_conf_output_t *sconf;
  lg_output_t *small = second_output(&f, "dls", "scripted_small", &sconf);
  sc.dl_out = small;
  lg_output_set_dead_letter(f.o, refuser_get, small);
  double lost0 =
      metric("lugger_output_records_total{output=\"x\",result=\"lost\"}");
  const char *a[] = {"BAD-0", "BAD-1", "BAD-2", "BAD-3", "BAD-4"};
  submit(&f, 1, a, 5);
  lg_test_run_until(&f.loop, acks_reached, &f, 5000, "the ack");
  assert_int_equal(f.status[0], 0);
  lg_test_run_for(&f.loop, 20);
  assert_int_equal(sc.dl_records, 5);
  assert_true(
      metric("lugger_output_records_total{output=\"x\",result=\"lost\"}") ==
      lost0);
  int closed[2] = {0, 1};
  lg_output_close(small, on_closed, &closed[0]);
  lg_test_run_until(&f.loop, reached, closed, 10000, "dls closed");
  free(fixture_close(&f));
  lg_config_output_free(sconf);
}

/* ---- out of memory while an answer is settled --------------------------- */

/* The largest sweep step: more allocations than settling one answer of
 * this size makes. */
#define OOM_MAX_PASS 400

/* x's first answer, "retry" for its 3 records, is settled while
 * allocations fail after the first `pass` (every pass from 0 until
 * settling needs no more); then the backend delivers. Each record is
 * delivered once and the submission acked with 0: none is left
 * unsettled (which would hold its batch, and its file's checkpoint,
 * forever), none dropped from the queue. */
static void test_oom_settling_a_retry(void **state) {
  (void)state;
  long pass = 0;
  for (; pass < OOM_MAX_PASS; pass++) {
    fixture_t f;
    fixture_open(&f, NULL);
    sc.answer = ANSWER_DOWN;
    sc.then = ANSWER_DELIVER;
    sc.oom_answers = 1;
    sc.oom_pass = pass;
    const char *a[] = {"r0", "r1", "r2"};
    submit(&f, 1, a, 3);
    char what[64];
    snprintf(what, sizeof what, "the ack (allocations failing after %ld)",
             pass);
    lg_test_run_until(&f.loop, acks_reached, &f, 5000, what);
    assert_int_equal(f.status[0], 0);
    lg_buf_putc(&sc.delivered, '\0');
    if (strcmp(sc.delivered.data, "r0\nr1\nr2\n") != 0)
      fail_msg("allocations failing after %ld: delivered \"%s\"", pass,
               sc.delivered.data);
    long failed = sc.oom_failed;
    char *dl = fixture_close(&f);
    assert_string_equal(dl, "");
    free(dl);
    if (failed == 0)
      break; /* settling it needed no more than `pass` allocations */
  }
  print_message("settled with allocations failing after each of 0-%ld\n",
                pass - 1);
  assert_true(pass > 0 && pass < OOM_MAX_PASS);
}

/* x's first answer rejects one record of three ("mapping error", per
 * record) while allocations fail after the first `pass`, from 0 until
 * none fails; the second submission's answer is given with memory. The
 * rejected record reaches the dead-letter output once, with its reason;
 * the others are delivered (again, when the answer could not be kept:
 * the request is sent again); nothing is counted lost; both submissions
 * are acked with 0, in order. */
static void test_oom_settling_a_reject(void **state) {
  (void)state;
  long pass = 0;
  for (; pass < OOM_MAX_PASS; pass++) {
    fixture_t f;
    fixture_open(&f, NULL);
    sc.answer = sc.then = ANSWER_REJECT_BAD;
    sc.oom_answers = 1;
    sc.oom_pass = pass;
    double lost0 =
        metric("lugger_output_records_total{output=\"x\",result=\"lost\"}");
    const char *a[] = {"a0", "BAD-a1", "a2"};
    const char *b[] = {"b0"};
    submit(&f, 1, a, 3);
    submit(&f, 2, b, 1);
    char what[64];
    snprintf(what, sizeof what, "both acks (allocations failing after %ld)",
             pass);
    lg_test_run_until(&f.loop, acks_reached, &f, 5000, what);
    if (f.status[0] != 0 || f.status[1] != 0)
      fail_msg("allocations failing after %ld: acked with %d, %d", pass,
               f.status[0], f.status[1]);
    assert_int_equal(f.refs[0], 1);
    assert_int_equal(f.refs[1], 2);
    assert_true(
        metric("lugger_output_records_total{output=\"x\",result=\"lost\"}") ==
        lost0);
    lg_buf_putc(&sc.delivered, '\0');
    const char *d = sc.delivered.data;
    if (count(d, "a0\n") < 1 || count(d, "a2\n") < 1 || count(d, "b0\n") != 1 ||
        count(d, "BAD") != 0)
      fail_msg("allocations failing after %ld: delivered \"%s\"", pass, d);
    long failed = sc.oom_failed;
    char *dl = fixture_close(&f);
    if (count(dl, "\n") != 1 || count(dl, "\"body\":\"BAD-a1\"") != 1 ||
        strstr(dl, "\"lugger.error\":\"output x rejected the records for "
                   "good: mapping error\"") == NULL)
      fail_msg("allocations failing after %ld: dead letters \"%s\"", pass, dl);
    free(dl);
    if (failed == 0)
      break;
  }
  print_message("settled with allocations failing after each of 0-%ld\n",
                pass - 1);
  assert_true(pass > 0 && pass < OOM_MAX_PASS);
}

/* The first answer's per-record result (one record rejected, "mapping
 * error") cannot be kept: lg_out_req_set runs out of memory. The request
 * is not settled from the rest of the answer (delivered, which would
 * drop the rejected record silently): it is sent again, and the second
 * answer sends the record to the dead-letter output with its reason. */
static void test_oom_keeping_a_per_record_answer(void **state) {
  (void)state;
  fixture_t f;
  fixture_open(&f, NULL);
  sc.answer = ANSWER_REJECT_BAD;
  sc.oom_sets = 1;
  const char *a[] = {"a0", "BAD-a1", "a2"};
  submit(&f, 1, a, 3);
  lg_test_run_until(&f.loop, acks_reached, &f, 5000, "the ack");
  assert_true(sc.oom_failed > 0);
  assert_int_equal(f.status[0], 0);
  assert_int_equal(sc.nreqs, 2); /* sent again whole */
  lg_buf_putc(&sc.delivered, '\0');
  assert_string_equal(sc.delivered.data, "a0\na2\na0\na2\n");
  char *dl = fixture_close(&f);
  assert_int_equal(count(dl, "\n"), 1);
  assert_int_equal(count(dl, "\"body\":\"BAD-a1\""), 1);
  assert_non_null(strstr(dl, "\"lugger.error\":\"output x rejected the "
                             "records for good: mapping error\""));
  free(dl);
}

/* Requests made and answered (from within send) while allocations fail
 * after the first `pass`, from 0 until none fails: a request that goes
 * out can always give its records (lg_out_req_recs: output types use
 * them unchecked; the scripted one asserts it); one that cannot be made
 * waits. Each record is delivered once and the submission acked. */
static void test_oom_making_requests(void **state) {
  (void)state;
  long pass = 0;
  for (; pass < OOM_MAX_PASS; pass++) {
    fixture_t f;
    fixture_open(&f, NULL);
    sc.answer = ANSWER_DELIVER;
    sc.sync = 1;
    const char *a[] = {"m0", "m1", "m2"};
    long failed = submit_oom(&f, 1, a, 3, pass);
    char what[64];
    snprintf(what, sizeof what, "the ack (allocations failing after %ld)",
             pass);
    lg_test_run_until(&f.loop, acks_reached, &f, 5000, what);
    assert_int_equal(f.status[0], 0);
    lg_buf_putc(&sc.delivered, '\0');
    if (strcmp(sc.delivered.data, "m0\nm1\nm2\n") != 0)
      fail_msg("allocations failing after %ld: delivered \"%s\"", pass,
               sc.delivered.data);
    free(fixture_close(&f));
    if (failed == 0)
      break;
  }
  print_message("made with allocations failing after each of 0-%ld\n",
                pass - 1);
  assert_true(pass > 0 && pass < OOM_MAX_PASS);
}

int main(void) {
  if (lg_output_register(&scripted_type) != 0 ||
      lg_output_register(&scripted_small_type) != 0)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_split_isolates_the_bad_record),
      cmocka_unit_test(test_max_retry_time_dead_letters),
      cmocka_unit_test(test_hold_sends),
      cmocka_unit_test(test_dead_letter_rejects_too),
      cmocka_unit_test(test_dead_letter_outlives_abandoned_output),
      cmocka_unit_test(test_dead_letter_payload_full),
      cmocka_unit_test(test_oom_settling_a_retry),
      cmocka_unit_test(test_oom_settling_a_reject),
      cmocka_unit_test(test_oom_making_requests),
      cmocka_unit_test(test_oom_keeping_a_per_record_answer),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  lg_metrics_reset();
  return rc;
}
