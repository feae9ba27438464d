/* Unit tests: the delivery layer's journaling of requests and rebuilding
 * of requests in flight at a crash (lg_delivery_rebuild.c; the journal
 * itself: test_req_journal.c), with a test output type that journals its
 * requests, on real libuv loops and a real state directory. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "config/lg_config.h"
#include "core/lg_util.h"
#include "helpers/lg_test.h"
#include "helpers/lg_test_oom.h"
#include "outputs/lg_output.h"
#include "outputs/lg_req_journal.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_payload.h"
#include "pipeline/lg_record_json.h"

#define FP UINT64_C(0x1234abcd5678ef90)
#define FP2 UINT64_C(0x0fedcba987654321) /* another file */
#define REC_LEN 10 /* "rec 0000\n" + 1: offsets are k * REC_LEN */

/* ---- rebuilding --------------------------------------------------------- */

typedef struct jconf {
  lg_out_limits_t limits;
} jconf_t;

static const lg_option_t jmock_options[] = {
    LG_OUT_DELIVERY_OPTIONS(jconf_t, "4", "1MiB", "0", "8", "0"),
    {.name = NULL},
};

/* What the test output saw: per request its records' offsets, its note
 * and whether it was made again partly. */
#define MAX_REQS 64
static struct seen {
  uint64_t off[16];
  uint32_t n;
  char note[64];
  int partly;
} seen[MAX_REQS];
static int nseen;
static int hold;                     /* 1: requests are never answered */
static int hold_next;                /* > 0: so many more are held, then
                                        the others answered */
static lg_out_req_t *held[MAX_REQS]; /* requests held */
static int nheld;
static int cancelled;   /* the output was cancelled (abandon) */
static int sent;        /* requests sent on, their entries durable */
static int journal_err; /* journal writes that failed */

/* > 0: encoding (a record handed on, encoded again by the output it goes
 * to) fails so many more times, as out of memory would. */
static int enc_fail;

static int jmock_encode(const void *conf, const lg_batch_t *b, uint32_t i,
                        const char *error, lg_payload_t *out) {
  (void)conf;
  if (enc_fail > 0) {
    enc_fail--;
    return -ENOMEM;
  }
  return lg_json_encode_record_err(&out->data, b, i, error,
                                   error != NULL ? strlen(error) : 0);
}

static int jmock_init(lg_output_t *o, const void *conf, char *err,
                      size_t errlen) {
  (void)o, (void)conf, (void)err, (void)errlen;
  return 0;
}

/* The request's entry is durable (0), or its write failed: only then is
 * it "sent" (held, or delivered). */
static void jmock_journaled(lg_out_req_t *r, int status) {
  if (status != 0 || cancelled) {
    journal_err += status != 0;
    lg_out_req_done(r, LG_OUT_RETRY, "journal");
    return;
  }
  sent++;
  if (hold || hold_next > 0) {
    hold_next -= hold_next > 0;
    held[nheld++] = r;
  } else {
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
  }
}

static void jmock_send(lg_output_t *o, lg_out_req_t *r) {
  (void)o;
  assert_true(nseen < MAX_REQS);
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  if (recs == NULL) { /* out of memory (lg_test_oom.h): as a type would */
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  struct seen *s = &seen[nseen++];
  s->n = r->n;
  for (uint32_t j = 0; j < r->n && j < 16; j++)
    s->off[j] = recs[j].batch->recs[recs[j].index].offset;
  const char *note = lg_out_req_note(r);
  snprintf(s->note, sizeof s->note, "%s", note ? note : "-");
  s->partly = lg_out_req_partly(r);
  char mine[32];
  snprintf(mine, sizeof mine, "first %llu",
           (unsigned long long)recs[0].batch->recs[recs[0].index].offset);
  int rc = lg_out_req_journal(r, mine, jmock_journaled);
  if (rc < 0) { /* out of memory (lg_test_oom.h): as the API says */
    assert_int_equal(rc, -ENOMEM);
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  assert_true(rc == 0 || rc == 1);
  if (rc == 0)
    jmock_journaled(r, 0); /* journaled before: a retry or a rebuild */
}

static void jmock_cancel(lg_output_t *o) {
  (void)o;
  cancelled = 1;
  for (int i = 0; i < nheld; i++)
    lg_out_req_done(held[i], LG_OUT_RETRY, "cancelled");
  nheld = 0;
}

static void jmock_close(lg_output_t *o) { lg_output_closed(o); }

static const lg_output_type_t jmock = {
    .name = "jmock",
    .doc = "test output that journals its requests",
    .options = jmock_options,
    .conf_size = sizeof(jconf_t),
    .encode = jmock_encode,
    .init = jmock_init,
    .send = jmock_send,
    .journal = 1,
    .cancel = jmock_cancel,
    .close = jmock_close,
};

static int acks;
static void *acked[16]; /* the refs acked (their batches), in ack order */
static void on_ack(void *ud, void *ref, int status) {
  (void)ud;
  assert_int_equal(status, 0);
  if (acks < 16)
    acked[acks] = ref;
  acks++;
}

/* A batch of records [from, to) of file `fp`, record k at offset
 * k*REC_LEN, and its payload for `o`. */
static lg_batch_t *batch_of_fp(lg_output_t *o, lg_payload_t *pl, uint64_t fp,
                               int from, int to) {
  lg_batch_t *b = lg_batch_create(0);
  assert_non_null(b);
  b->fingerprint = fp;
  for (int k = from; k < to; k++) {
    char body[16];
    snprintf(body, sizeof body, "rec %04d", k);
    int64_t i = lg_batch_add(b, body, strlen(body), 0, (uint64_t)k * REC_LEN,
                             (uint64_t)(k + 1) * REC_LEN, 0);
    assert_true(i >= 0);
    b->recs[i].routes = 1;
  }
  lg_encoder_t enc = lg_output_encoder(o);
  for (uint32_t i = 0; i < b->n; i++)
    assert_int_equal(lg_payload_add(pl, &enc, b, i, NULL), 0);
  return b;
}

/* The test output "j" on `loop` with options `kv` (name, value, ...,
 * NULL), its journal in `dir`. */
static lg_output_t *open_out_kv(uv_loop_t *loop, lg_conf_output_t **c,
                                const char *dir, const char *const *kv) {
  char err[256] = "";
  *c = lg_config_output_new("j", "jmock", kv, err, sizeof err);
  if (*c == NULL)
    fail_msg("config: %s", err);
  lg_output_t *o = lg_output_create(loop, *c, 0, on_ack, NULL, err, sizeof err);
  if (o == NULL)
    fail_msg("create: %s", err);
  lg_output_set_state_dir(o, dir);
  cancelled = 0;
  return o;
}

static void on_closed(void *ud) { (*(int *)ud)++; }
static int is_one(void *arg) { return *(int *)arg >= 1; }
static int acks_at_least(void *arg) { return acks >= *(int *)arg; }

/* Stops `o` as a crash would leave it: its requests unanswered, nothing
 * acked (abandon), then the loop closed. */
static void crash(uv_loop_t *loop, lg_output_t *o) {
  int closed = 0;
  lg_output_close(o, on_closed, &closed);
  lg_output_abandon(o);
  lg_test_run_until(loop, is_one, &closed, 5000, "close");
  LG_TEST_LOOP_CLOSE(loop);
}

static void stop(uv_loop_t *loop, lg_output_t *o) {
  int closed = 0;
  lg_output_close(o, on_closed, &closed);
  lg_test_run_until(loop, is_one, &closed, 5000, "close");
  LG_TEST_LOOP_CLOSE(loop);
}

/* One run of lugger as the output sees it: its loop, the test output on
 * it and the batches submitted to it, freed when the run ends. */
#define RUN_MAX_BATCHES 8
typedef struct run {
  uv_loop_t loop;
  lg_conf_output_t *c;
  lg_output_t *o;
  lg_payload_t p[RUN_MAX_BATCHES];
  lg_batch_t *b[RUN_MAX_BATCHES];
  int nb;
} run_t;

/* Starts a run with the journal in `dir` and options `kv` (name, value,
 * ..., NULL; NULL for none); what the output saw is zeroed. */
static void run_start(run_t *r, const char *dir, const char *const *kv) {
  static const char *const none[] = {NULL};
  memset(r, 0, sizeof *r);
  uv_loop_init(&r->loop);
  r->o = open_out_kv(&r->loop, &r->c, dir, kv != NULL ? kv : none);
  nseen = nheld = acks = sent = journal_err = 0;
}

/* Records [from, to) of file `fp`, record k at offset k*REC_LEN, as one
 * batch submitted on `lane`. */
static void run_submit(run_t *r, uint64_t fp, int from, int to, uint64_t lane) {
  assert_true(r->nb < RUN_MAX_BATCHES);
  lg_payload_t *pl = &r->p[r->nb];
  *pl = (lg_payload_t)LG_PAYLOAD_INIT;
  lg_batch_t *b = batch_of_fp(r->o, pl, fp, from, to);
  r->b[r->nb++] = b;
  assert_int_equal(lg_output_submit(r->o, pl, b, lane), 0);
}

/* Ends the run: as a crash leaves it (`crashed`: nothing more answered or
 * acked) or closed in order; then frees what it held. */
static void run_end(run_t *r, int crashed) {
  if (crashed)
    crash(&r->loop, r->o);
  else
    stop(&r->loop, r->o);
  lg_config_output_free(r->c);
  for (int i = 0; i < r->nb; i++) {
    lg_payload_free(&r->p[i]);
    lg_batch_destroy(r->b[i]);
  }
}

/* A run that sends records [from, to) of file `fp` on lane 7 in `nreqs`
 * requests, none answered, and crashes: the requests stay journaled. */
static void run_crashed(const char *dir, uint64_t fp, int from, int to,
                        int nreqs) {
  run_t r;
  run_start(&r, dir, NULL);
  hold = 1;
  run_submit(&r, fp, from, to, 7);
  lg_test_run_until_count(&r.loop, &sent, nreqs, 5000, "requests sent");
  assert_int_equal(nseen, nreqs);
  run_end(&r, 1);
}

/* Everything settled: a later run finds no request to make again. */
static void assert_journal_empty(const char *dir) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  lg_rj_t *j = lg_rj_open(&loop, dir, "j", (char[64]){0}, 64);
  lg_rj_entry_t *found = NULL;
  assert_int_equal(lg_rj_take_found(j, &found), 0);
  free(found);
  lg_rj_close(j);
  LG_TEST_LOOP_CLOSE(&loop);
}

/* A fresh state directory for one test, in `dir` (256 bytes). */
static void state_dir(char *dir) {
  snprintf(dir, 256, "%s", lg_test_tmpdir("lg_rebuild"));
}

/* Run 1: 10 records as one batch, cut into requests of 4, 4 and 2, none
 * answered; a crash. Run 2: the same records read again as batches of 7
 * and 3: the requests made are exactly the three of run 1, with their
 * notes, before anything else; then the journal is empty. */
static void test_rebuild_same_requests(void **state) {
  (void)state;
  assert_int_equal(lg_output_register(&jmock), 0);
  char dir[256];
  state_dir(dir);
  run_t r;

  run_start(&r, dir, NULL);
  assert_int_equal(lg_output_waits_for_files(r.o), 0); /* nothing journaled */
  hold = 1;
  run_submit(&r, FP, 0, 10, 7);
  /* Sent once their entries are durable. */
  lg_test_run_until_count(&r.loop, &sent, 3, 5000, "3 requests sent");
  assert_int_equal(nseen, 3);
  assert_int_equal(seen[0].n, 4);
  assert_int_equal(seen[2].n, 2);
  assert_string_equal(seen[0].note, "-");
  run_end(&r, 1);
  assert_int_equal(acks, 0);

  run_start(&r, dir, NULL);
  /* The three requests wait for their records: sources are asked for what
   * lg_output_file_prefixes takes until they are made. */
  assert_int_equal(lg_output_waits_for_files(r.o), 1);
  hold = 0;
  run_submit(&r, FP, 0, 7, 7);
  run_submit(&r, FP, 7, 10, 7);
  run_submit(&r, FP, 10, 12, 7);
  int want = 3;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "3 acks");
  assert_int_equal(lg_output_waits_for_files(r.o), 0);
  assert_int_equal(nseen, 4);
  /* The same cuts as run 1: [0..3], [4..7], [8..9], with their notes. */
  uint32_t sizes[] = {4, 4, 2};
  const char *notes[] = {"first 0", "first 40", "first 80"};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(seen[i].n, sizes[i]);
    assert_int_equal(seen[i].off[0], (uint64_t)(i * 4) * REC_LEN);
    assert_string_equal(seen[i].note, notes[i]);
    assert_int_equal(seen[i].partly, 0);
  }
  /* New records after them go as usual. */
  assert_int_equal(seen[3].n, 2);
  assert_int_equal(seen[3].off[0], 100);
  assert_string_equal(seen[3].note, "-");
  run_end(&r, 0);

  assert_journal_empty(dir);
  lg_test_rmtree(dir);
}

/* Run 2 reads again only from record 2 on (records 0 and 1 were acked
 * before the crash, so their request was answered): that request is made
 * again `partly` with records 2 and 3; the other two whole. */
static void test_rebuild_partly(void **state) {
  (void)state;
  char dir[256];
  state_dir(dir);
  run_t r;

  run_crashed(dir, FP, 0, 10, 3); /* sent once their entries are durable */

  run_start(&r, dir, NULL);
  hold = 0;
  run_submit(&r, FP, 2, 10, 7);
  int want = 1;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "the ack");
  assert_int_equal(nseen, 3);
  int partly = 0, whole = 0;
  for (int i = 0; i < 3; i++) {
    if (seen[i].partly) {
      partly++;
      assert_int_equal(seen[i].n, 2);
      assert_int_equal(seen[i].off[0], 20);
      assert_string_equal(seen[i].note, "first 0");
    } else {
      whole++;
      assert_int_equal(seen[i].n, seen[i].off[0] == 40 ? 4 : 2);
    }
  }
  assert_int_equal(partly, 1);
  assert_int_equal(whole, 2);
  run_end(&r, 0);
  lg_test_rmtree(dir);
}

/* Run 1: one request of two files' records, FP's 0 and 1 and FP2's 0 and
 * 1, unanswered; a crash. Run 2: FP2's records are read again, FP's are
 * not (their file was acked past them before the crash, rotated away: no
 * later record of it comes either). The request waits while nothing says
 * that FP's records will not come (a resume at offset 10 is not past its
 * record 1), and is made again `partly` from FP2's two records as soon as
 * FP is read from past them (lg_output_file_resumed), not after the wait
 * for the records of the last run (30 s) with FP2's records sent anew. */
static void test_rebuild_file_resumed_past_run(void **state) {
  (void)state;
  char dir[256];
  state_dir(dir);
  run_t r;

  /* Both submissions in one request: it goes out when full (4 records). */
  run_start(&r, dir, (const char *[]){"max_coalescing_delay", "10s", NULL});
  hold = 1;
  run_submit(&r, FP, 0, 2, 7);
  run_submit(&r, FP2, 0, 2, 8);
  lg_test_run_until_count(&r.loop, &sent, 1, 5000, "the request sent");
  assert_int_equal(nseen, 1);
  assert_int_equal(seen[0].n, 4);
  run_end(&r, 1);

  run_start(&r, dir, NULL);
  hold = 0;
  lg_output_file_resumed(r.o, FP2, 0);
  lg_output_file_resumed(r.o, FP, 10); /* record 1 of FP may still come */
  lg_output_file_resumed(r.o, UINT64_C(42), 1000); /* no such file in it */
  run_submit(&r, FP2, 0, 2, 8);
  lg_test_run_for(&r.loop, 300);
  assert_int_equal(nseen, 0); /* held: FP's records may still come */
  assert_int_equal(acks, 0);
  lg_output_file_resumed(r.o, FP, 20);
  int want = 1;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "the ack");
  assert_int_equal(nseen, 1);
  assert_int_equal(seen[0].n, 2);
  assert_int_equal(seen[0].partly, 1);
  assert_string_equal(seen[0].note, "first 0");
  run_end(&r, 0);

  assert_journal_empty(dir);
  lg_test_rmtree(dir);
}

/* Run 1: a request of FP's records 0 to 3, unanswered; a crash. Run 2: FP
 * is read from past them (acked before the crash: the entry's removal was
 * not written yet): the entry is dropped when told so (a later record
 * would show it too), and FP's next records go out as usual, not held. */
static void test_rebuild_leftover_dropped_on_resume(void **state) {
  (void)state;
  char dir[256];
  state_dir(dir);
  run_t r;

  run_crashed(dir, FP, 0, 4, 1);

  run_start(&r, dir, NULL);
  hold = 0;
  lg_output_file_resumed(r.o, FP, 40);
  run_submit(&r, FP, 4, 6, 7);
  int want = 1;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "the ack");
  assert_int_equal(nseen, 1);
  assert_int_equal(seen[0].n, 2);
  assert_int_equal(seen[0].off[0], 40);
  assert_int_equal(seen[0].partly, 0);
  assert_string_equal(seen[0].note, "-");
  run_end(&r, 0);
  lg_test_rmtree(dir);
}

/* Run 1 (4 records a request): FP2's records 0 to 3 go first, held; then
 * FP's 0 and 1 and FP2's 4 and 5 in one request, answered: FP's are acked
 * (their journal run is marked so, written with the next request's entry),
 * FP2's wait behind the held request; a crash. Run 2: FP2's records are
 * read again, FP's are not, and nothing tells that FP resumes past them
 * (its file was deleted): the answered request is made again `partly` from
 * FP2's 4 and 5 at once, by the journal's mark, not after the wait for the
 * records of the last run (30 s) with FP2's records sent anew. */
static void test_rebuild_acked_run(void **state) {
  (void)state;
  char dir[256];
  state_dir(dir);
  run_t r;

  run_start(&r, dir, (const char *[]){"max_coalescing_delay", "10s", NULL});
  hold = 0;
  hold_next = 1;
  run_submit(&r, FP2, 0, 4, 8);
  lg_test_run_until_count(&r.loop, &sent, 1, 5000, "the first request held");
  run_submit(&r, FP, 0, 2, 7);
  run_submit(&r, FP2, 4, 6, 8);
  int want = 1;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "FP's ack");
  assert_int_equal(nseen, 2);
  assert_int_equal(seen[1].n, 4);
  assert_int_equal(acks, 1); /* FP2's wait behind the held request */
  /* A later request's entry takes the mark to the file. */
  run_submit(&r, UINT64_C(77), 0, 4, 9);
  lg_test_run_until_count(&r.loop, &sent, 3, 5000, "a third request");
  char jf[300];
  snprintf(jf, sizeof jf, "%s/requests-j.json", dir);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(jf, 1 << 20, &text, &len), 0);
  assert_non_null(strstr(text, "\"acked\":[0]"));
  free(text);
  run_end(&r, 1);

  run_start(&r, dir, NULL);
  hold = hold_next = 0;
  run_submit(&r, FP2, 0, 6, 8);
  want = 1;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "the ack");
  assert_int_equal(nseen, 2);
  assert_int_equal(seen[0].n, 4); /* the held one, whole */
  assert_int_equal(seen[0].partly, 0);
  assert_int_equal(seen[1].n, 2);
  assert_int_equal(seen[1].off[0], 40);
  assert_int_equal(seen[1].partly, 1);
  assert_string_equal(seen[1].note, "first 0");
  run_end(&r, 0);
  lg_test_rmtree(dir);
}

/* A run that reads records 0 to 9 of FP again after runs that kept the
 * three requests of run_crashed(dir, FP, 0, 10, 3) journaled: the same
 * three are made, whole; then the journal is empty and `dir` removed. */
static void run_rereads_all(const char *dir) {
  run_t r;
  run_start(&r, dir, NULL);
  run_submit(&r, FP, 0, 10, 7);
  int want = 1;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "the ack");
  assert_int_equal(nseen, 3);
  uint32_t sizes[] = {4, 4, 2};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(seen[i].n, sizes[i]);
    assert_int_equal(seen[i].off[0], (uint64_t)(i * 4) * REC_LEN);
    assert_int_equal(seen[i].partly, 0);
  }
  run_end(&r, 0);
  assert_journal_empty(dir);
  lg_test_rmtree(dir);
}

/* Run 1: requests of 4, 4 and 2 records, none answered; a crash. Run 2
 * stops (lg_output_stopping, then close and abandon, as the engine's
 * drain does) once records 0 to 5 were read again: the first request is
 * made again; the second, waiting for records 6 and 7, is neither given
 * up nor sent: records 4 and 5 stay unacked (read again at the next
 * start) and its entry stays, and the output is drained once only they
 * are left. Run 3 reads 0 to 9 again: the same three requests, whole. */
static void test_stop_keeps_waiting_rebuild(void **state) {
  (void)state;
  char dir[256];
  state_dir(dir);
  run_t r;

  run_crashed(dir, FP, 0, 10, 3);

  run_start(&r, dir, NULL);
  hold = 0;
  run_submit(&r, FP, 0, 6, 7);
  lg_test_run_until_count(&r.loop, &sent, 1, 5000, "the first made again");
  lg_test_run_for(&r.loop, 50);
  /* Records 4 and 5 are held for the second request: not drained while
   * more of it may be read. */
  assert_int_equal(lg_output_drained(r.o), 0);
  lg_output_stopping(r.o);
  assert_int_equal(lg_output_drained(r.o), 1);
  run_end(&r, 1);
  assert_int_equal(nseen, 1);
  assert_int_equal(seen[0].n, 4);
  assert_int_equal(acks, 0); /* the batch waits for 4 and 5 */

  run_rereads_all(dir);
}

/* Run 1: records 0 to 3 of a file read while it was short, under the
 * short fingerprint FP2, one request, unanswered; a crash. Run 2: the file
 * is longer now, its batches have fingerprint FP; told that the hash of
 * its first 36 bytes is FP2 (its records, at offsets 0 to 30, lie within
 * them), the request waits for them under FP and is made again whole.
 * Told so of its first 21 bytes only (records past them: not that
 * prefix's batch), it is not: the records go as new ones. */
static void test_rebuild_short_fingerprint(void **state) {
  (void)state;
  for (int within = 1; within >= 0; within--) {
    char dir[256];
    state_dir(dir);
    run_t r;
    run_crashed(dir, FP2, 0, 4, 1);

    run_start(&r, dir, NULL);
    hold = 0;
    uint64_t prefix[40];
    for (int j = 0; j < 40; j++)
      prefix[j] = UINT64_C(1000) + (uint64_t)j;
    prefix[within ? 35 : 20] = FP2;
    lg_output_file_prefixes(r.o, FP, prefix, 40);
    run_submit(&r, FP, 0, 4, 7);
    int want = 1;
    lg_test_run_until(&r.loop, acks_at_least, &want, 40000, "the ack");
    assert_int_equal(seen[0].n, 4);
    if (within)
      assert_string_equal(seen[0].note, "first 0"); /* made again */
    else
      assert_string_equal(seen[0].note, "-"); /* sent as new records */
    run_end(&r, 0);
    lg_test_rmtree(dir);
  }
}

/* Run 1: requests of 4, 4 and 2 records, none answered; a crash. Run 2
 * in `r` (its output o1): records 0 to 5 come again, the first request is
 * made again, records 4 and 5 are held for the second; then a reload
 * re-creates the output: the returned o2 (its config in *c2), which takes
 * over (lg_output_hand_over). */
static lg_output_t *taken_over(run_t *r, const char *dir,
                               lg_conf_output_t **c2) {
  static const char *const none[] = {NULL};
  run_crashed(dir, FP, 0, 10, 3);
  run_start(r, dir, NULL);
  hold = 0;
  run_submit(r, FP, 0, 6, 7);
  lg_test_run_until_count(&r->loop, &sent, 1, 5000, "the first made again");
  lg_test_run_for(&r->loop, 50);
  assert_int_equal(nseen, 1);
  lg_output_t *o2 = open_out_kv(&r->loop, c2, dir, none);
  lg_output_hand_over(r->o, o2);
  return o2;
}

/* Run 1: requests of 4, 4 and 2 records, none answered; a crash. Run 2:
 * records 0 to 5 come again to output o1: the first request is made
 * again, records 4 and 5 are held for the second. A reload re-creates
 * the output as o2 (lg_output_hand_over): o2 takes over the second and
 * third requests with records 4 and 5; records 6 and 7 still come to o1
 * (a batch processed under the old config) and go on to o2; 8 and 9 come
 * to o2. o1 closes (as a reload retires it) without giving anything up:
 * o2 makes the second and third requests again whole, with their notes,
 * and every batch is acked (o1's once o2 acked their records). Without
 * the hand-over, o1's close gives the second request up and its records
 * go out as new ones. */
static void test_reload_takes_over_rebuilds(void **state) {
  (void)state;
  char dir[256];
  state_dir(dir);
  run_t r;
  lg_conf_output_t *c2 = NULL;
  lg_output_t *o2 = taken_over(&r, dir, &c2);
  run_submit(&r, FP, 6, 8, 7); /* to o1: on to o2 */
  lg_payload_t p2 = LG_PAYLOAD_INIT;
  lg_batch_t *b2 = batch_of_fp(o2, &p2, FP, 8, 10);
  assert_int_equal(lg_output_submit(o2, &p2, b2, 7), 0);
  int closed = 0;
  lg_output_close(r.o, on_closed, &closed);
  lg_test_run_until(&r.loop, is_one, &closed, 5000, "o1 closed");
  int want = 3;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "3 acks");
  assert_int_equal(nseen, 3);
  const char *notes[] = {"first 0", "first 40", "first 80"};
  uint32_t sizes[] = {4, 4, 2};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(seen[i].n, sizes[i]);
    assert_int_equal(seen[i].off[0], (uint64_t)(i * 4) * REC_LEN);
    assert_string_equal(seen[i].note, notes[i]);
  }
  /* o2 goes on as usual. */
  r.o = o2;
  lg_conf_output_t *c1 = r.c;
  r.c = c2;
  run_submit(&r, FP, 10, 12, 7);
  want = 4;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "4 acks");
  assert_int_equal(nseen, 4);
  assert_string_equal(seen[3].note, "-");
  run_end(&r, 0);
  lg_config_output_free(c1);
  lg_payload_free(&p2);
  lg_batch_destroy(b2);
  assert_journal_empty(dir);
  lg_test_rmtree(dir);
}

/* Records 0 to 9 each in exactly one request sent, none of them a
 * request made again (partly or whole) but the first (records 0 to 3),
 * and every batch acked: what a hand-over that could not hand records on
 * leaves. */
static void assert_sent_anew_once(void) {
  int count[10] = {0};
  for (int i = 0; i < nseen; i++) {
    assert_int_equal(seen[i].partly, 0);
    if (i > 0)
      assert_string_equal(seen[i].note, "-");
    for (uint32_t j = 0; j < seen[i].n; j++) {
      assert_true(seen[i].off[j] < 10 * REC_LEN);
      count[seen[i].off[j] / REC_LEN]++;
    }
  }
  for (int k = 0; k < 10; k++)
    assert_int_equal(count[k], 1);
}

/* As test_reload_takes_over_rebuilds, but records of the second request
 * cannot be handed on to o2 (encoding them again fails, as out of memory
 * would): `at_hand_over` 4 and 5, which o1 holds at the hand-over; else
 * 6 and 7, which come to o1 after it. o1 sends them as new ones, and o2
 * gives the second request up: its records that came to o2 go out as new
 * ones too. Before, o2 made it again `partly` from the others once 8 and
 * 9 passed it: an S3 output takes the records of such a request as
 * written before the crash and acks them unsent, but this request was
 * never answered: they were lost. Every record is sent once, the third
 * request still made again whole, every batch acked, the journal empty;
 * without o1 sending what it could not hand on (the fallback), records
 * 4 and 5 (or 6 and 7) are in no request. */
static void take_over_fails(int at_hand_over) {
  static const char *const none[] = {NULL};
  char dir[256];
  state_dir(dir);
  run_t r;
  run_crashed(dir, FP, 0, 10, 3);
  run_start(&r, dir, NULL);
  hold = 0;
  run_submit(&r, FP, 0, 6, 7);
  lg_test_run_until_count(&r.loop, &sent, 1, 5000, "the first made again");
  lg_test_run_for(&r.loop, 50);
  lg_conf_output_t *c2 = NULL;
  lg_output_t *o2 = open_out_kv(&r.loop, &c2, dir, none);
  enc_fail = at_hand_over;
  lg_output_hand_over(r.o, o2);
  enc_fail = 0;
  /* Records 6 and 7 to o1 (a batch of the old config): on to o2, or
   * not. */
  lg_payload_t *pl = &r.p[r.nb];
  *pl = (lg_payload_t)LG_PAYLOAD_INIT;
  r.b[r.nb] = batch_of_fp(r.o, pl, FP, 6, 8);
  enc_fail = !at_hand_over;
  assert_int_equal(lg_output_submit(r.o, pl, r.b[r.nb++], 7), 0);
  enc_fail = 0;
  lg_payload_t p2 = LG_PAYLOAD_INIT;
  lg_batch_t *b2 = batch_of_fp(o2, &p2, FP, 8, 10);
  assert_int_equal(lg_output_submit(o2, &p2, b2, 7), 0);
  int closed = 0;
  lg_output_close(r.o, on_closed, &closed);
  lg_test_run_until(&r.loop, is_one, &closed, 5000, "o1 closed");
  int want = 3;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "3 acks");
  lg_test_run_for(&r.loop, 50);
  assert_int_equal(acks, 3);
  int whole = 0;
  for (int i = 0; i < nseen; i++)
    whole += strcmp(seen[i].note, "first 80") == 0 && seen[i].n == 2;
  assert_int_equal(whole, 1);
  /* The third, made again, is the only request with a note past the
   * first: sent anew, the others have none. */
  for (int i = 0; i < nseen; i++)
    if (strcmp(seen[i].note, "first 80") == 0)
      snprintf(seen[i].note, sizeof seen[i].note, "-");
  assert_sent_anew_once();
  r.o = o2;
  lg_conf_output_t *c1 = r.c;
  r.c = c2;
  run_end(&r, 0);
  lg_config_output_free(c1);
  lg_payload_free(&p2);
  lg_batch_destroy(b2);
  assert_journal_empty(dir);
  lg_test_rmtree(dir);
}

static void test_take_over_hand_on_fails(void **state) {
  (void)state;
  take_over_fails(1);
}

static void test_take_over_later_hand_on_fails(void **state) {
  (void)state;
  take_over_fails(0);
}

/* As test_reload_takes_over_rebuilds up to the hand-over (records 4 and
 * 5 handed on to o2 for the second request), then the collector stops:
 * o2 keeps the waiting requests for the next start, and both outputs are
 * drained (o1's batch waits only for what o2 keeps); nothing is acked.
 * Run 3 reads 0 to 9 again: the second and third requests, whole. */
static void test_stop_after_take_over(void **state) {
  (void)state;
  char dir[256];
  state_dir(dir);
  run_t r;
  lg_conf_output_t *c2 = NULL;
  lg_output_t *o2 = taken_over(&r, dir, &c2);
  lg_test_run_for(&r.loop, 50);
  assert_int_equal(nseen, 1);
  assert_int_equal(lg_output_drained(r.o), 0);
  assert_int_equal(lg_output_drained(o2), 0);
  lg_output_stopping(o2);
  assert_int_equal(lg_output_drained(o2), 1);
  assert_int_equal(lg_output_drained(r.o), 1);
  int closed = 0;
  lg_output_close(o2, on_closed, &closed);
  lg_output_abandon(o2);
  lg_test_run_until(&r.loop, is_one, &closed, 5000, "o2 closed");
  lg_config_output_free(c2);
  run_end(&r, 1);
  assert_int_equal(acks, 0);
  run_rereads_all(dir);
}

/* Run 1: requests of 4, 4 and 2 records, none answered; a crash. Run 2:
 * the output is created by a reload after records 0 to 5 were read (and
 * went to other outputs): told so (lg_output_file_read), the first two
 * requests, which wait for some of them, are given up at once; the third
 * (records 8 and 9, not read yet) still waits and is made again when they
 * come; 6 and 7 go out as new records. A file it does not wait for
 * changes nothing. */
static void test_rebuild_read_before_created(void **state) {
  (void)state;
  char dir[256];
  state_dir(dir);
  run_t r;
  run_crashed(dir, FP, 0, 10, 3);
  run_start(&r, dir, NULL);
  hold = 0;
  assert_int_equal(lg_output_waits_for_files(r.o), 1);
  lg_output_file_read(r.o, FP2, 0, 1000);
  lg_output_file_read(r.o, FP, 0, 60);
  assert_int_equal(lg_output_waits_for_files(r.o), 1); /* the third */
  run_submit(&r, FP, 6, 10, 7);
  int want = 1;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "the ack");
  assert_int_equal(nseen, 2);
  assert_int_equal(seen[0].n, 2); /* made again first */
  assert_int_equal(seen[0].off[0], 80);
  assert_string_equal(seen[0].note, "first 80");
  assert_int_equal(seen[1].n, 2);
  assert_int_equal(seen[1].off[0], 60);
  assert_string_equal(seen[1].note, "-");
  assert_int_equal(lg_output_waits_for_files(r.o), 0);
  run_end(&r, 0);
  assert_journal_empty(dir);
  lg_test_rmtree(dir);
}

/* A crash (close, abandon) while the journal writes are in flight: the
 * output's cancel cannot end those requests (they are not sent yet); each
 * ends when its write lands, unsent, and the close completes after that.
 * Their entries are durable: the next run makes the same requests. */
static void test_abandon_during_journal_write(void **state) {
  (void)state;
  char dir[256];
  state_dir(dir);
  run_t r;

  run_start(&r, dir, NULL);
  hold = 0;
  run_submit(&r, FP, 0, 10, 7);
  /* The loop has not run: the first write's result is not taken yet. */
  assert_true(nseen >= 1);
  assert_int_equal(sent, 0);
  int seen1 = nseen;
  run_end(&r, 1);
  assert_int_equal(sent, 0); /* nothing went out after the cancel */
  assert_int_equal(acks, 0);

  run_start(&r, dir, NULL);
  run_submit(&r, FP, 0, 10, 7);
  int want = 1;
  lg_test_run_until(&r.loop, acks_at_least, &want, 5000, "the ack");
  /* The first write's request (at least) was durable: made again first,
   * with its note, at its old cut. */
  assert_true(seen1 >= 1);
  assert_string_equal(seen[0].note, "first 0");
  assert_int_equal(seen[0].n, 4);
  run_end(&r, 0);
  lg_test_rmtree(dir);
}

/* The journal cannot be written (a directory where its temp file goes):
 * the output's request is not sent (its journal callback says the error)
 * and nothing is acked; the request is retried, journaled again each time;
 * once the directory is gone it is written, sent and acked. */
static void test_journal_fails_not_sent(void **state) {
  (void)state;
  char dir[256], tmp[300];
  state_dir(dir);
  snprintf(tmp, sizeof tmp, "%s/requests-j.json.tmp", dir);
  assert_int_equal(mkdir(tmp, 0700), 0);
  run_t r;
  run_start(&r, dir, NULL);
  hold = 0;
  run_submit(&r, FP, 0, 4, 7);
  lg_test_run_until_count(&r.loop, &journal_err, 2, 5000, "2 failed writes");
  assert_int_equal(sent, 0);
  assert_int_equal(acks, 0);
  assert_int_equal(rmdir(tmp), 0);
  int want = 1;
  lg_test_run_until(&r.loop, acks_at_least, &want, 10000, "the ack");
  assert_int_equal(sent, 1);
  assert_int_equal(seen[nseen - 1].n, 4);
  run_end(&r, 0);
  lg_test_rmtree(dir);
}

/* Run 1 crashes with 10 records in 3 requests. Run 2 reads them again as
 * one batch whose submission runs while allocations fail after the first
 * `pass` (every pass from 0 until none fails). A submission refused
 * (-ENOMEM: nothing taken) is made again, as the engine does; records
 * the output took but could not hold for their request or queue wait and
 * are queued later (the request given up when one could not be held),
 * never left unacked: every record is sent and the batch acked. */
static void test_rebuild_out_of_memory_routing(void **state) {
  (void)state;
  long pass = 0;
  for (; pass < 200; pass++) {
    char dir[256];
    state_dir(dir);
    run_crashed(dir, FP, 0, 10, 3);
    run_t r;
    run_start(&r, dir, NULL);
    hold = 0;
    lg_payload_t *pl = &r.p[r.nb];
    *pl = (lg_payload_t)LG_PAYLOAD_INIT;
    lg_batch_t *b = batch_of_fp(r.o, pl, FP, 0, 10);
    r.b[r.nb++] = b;
    lg_test_oom_arm(pass);
    int rc = lg_output_submit(r.o, pl, b, 7);
    long failed = lg_test_oom_disarm();
    if (rc == -ENOMEM)
      rc = lg_output_submit(r.o, pl, b, 7);
    assert_int_equal(rc, 0);
    char what[64];
    snprintf(what, sizeof what, "the ack (allocations failing after %ld)",
             pass);
    int want = 1;
    lg_test_run_until(&r.loop, acks_at_least, &want, 5000, what);
    /* Every record sent (once, or in a request made again and anew). */
    for (int k = 0; k < 10; k++) {
      int found = 0;
      for (int i = 0; i < nseen; i++)
        for (uint32_t j = 0; j < seen[i].n; j++)
          found += seen[i].off[j] == (uint64_t)k * REC_LEN;
      if (found == 0)
        fail_msg("allocations failing after %ld: record %d never sent", pass,
                 k);
    }
    run_end(&r, 0);
    /* An entry the output could not note (out of memory) stays in the
     * journal, to be dropped at the next start as past the checkpoint. */
    if (failed == 0)
      assert_journal_empty(dir);
    lg_test_rmtree(dir);
    if (failed == 0)
      break;
  }
  print_message("routed with allocations failing after each of 0-%ld\n",
                pass - 1);
  assert_true(pass > 0 && pass < 200);
}

/* Where record `off` was first sent, counting records over the requests
 * in send order; -1 if never. */
static int first_sent(uint64_t off) {
  int at = 0;
  for (int i = 0; i < nseen; i++)
    for (uint32_t j = 0; j < seen[i].n; j++, at++)
      if (seen[i].off[j] == off)
        return at;
  return -1;
}

/* Run 1 crashes with one request of FP2's records 8 and 9 and FP's 2 and
 * 3. Run 2 reads FP2's again (held: the request waits for FP's), then FP's
 * records 0 to 5 as one batch whose submission runs while allocations
 * fail after the first `pass` (every pass from 0 until none fails): it is
 * cut into three runs, 0-1 (new), 2-3 (the request's) and 4-5 (new), and
 * the new ones may both fail to be queued for want of memory: two runs
 * of one submission that wait, apart. Before, the second was left
 * unacked (its batch, and its file's checkpoint, held until a restart).
 * Every record is sent, the request made again first, the others in
 * their order, and both batches are acked, in order. */
static void test_rebuild_out_of_memory_two_runs_wait(void **state) {
  (void)state;
  long pass = 0;
  for (; pass < 200; pass++) {
    char dir[256];
    state_dir(dir);
    run_t r;
    run_start(&r, dir, (const char *[]){"max_coalescing_delay", "10s", NULL});
    hold = 1;
    run_submit(&r, FP2, 8, 10, 7);
    run_submit(&r, FP, 2, 4, 7);
    lg_test_run_until_count(&r.loop, &sent, 1, 5000, "the request sent");
    assert_int_equal(seen[0].n, 4);
    run_end(&r, 1);

    run_start(&r, dir, NULL);
    hold = 0;
    run_submit(&r, FP2, 8, 10, 7);
    lg_payload_t *pl = &r.p[r.nb];
    *pl = (lg_payload_t)LG_PAYLOAD_INIT;
    lg_batch_t *b = batch_of_fp(r.o, pl, FP, 0, 6);
    r.b[r.nb++] = b;
    lg_test_oom_arm(pass);
    int rc = lg_output_submit(r.o, pl, b, 7);
    long failed = lg_test_oom_disarm();
    if (rc == -ENOMEM)
      rc = lg_output_submit(r.o, pl, b, 7);
    assert_int_equal(rc, 0);
    char what[64];
    snprintf(what, sizeof what, "2 acks (allocations failing after %ld)", pass);
    int want = 2;
    lg_test_run_until(&r.loop, acks_at_least, &want, 5000, what);
    assert_int_equal(acks, 2);
    assert_ptr_equal(acked[0], r.b[0]);
    assert_ptr_equal(acked[1], b);
    /* The request made again first, at its old boundaries; FP's other
     * records after it, in their order. */
    assert_int_equal(seen[0].n, 4);
    assert_int_equal(seen[0].off[0], 8 * REC_LEN);
    assert_int_equal(seen[0].off[3], 3 * REC_LEN);
    int last = 3;
    for (int k = 0; k < 6; k++) {
      if (k == 2 || k == 3)
        continue;
      int at = first_sent((uint64_t)k * REC_LEN);
      if (at <= last)
        fail_msg("allocations failing after %ld: record %d sent at %d, "
                 "after %d",
                 pass, k, at, last);
      last = at;
    }
    run_end(&r, 0);
    if (failed == 0)
      assert_journal_empty(dir);
    lg_test_rmtree(dir);
    if (failed == 0)
      break;
  }
  print_message("routed with allocations failing after each of 0-%ld\n",
                pass - 1);
  assert_true(pass > 0 && pass < 200);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rebuild_same_requests),
      cmocka_unit_test(test_rebuild_out_of_memory_routing),
      cmocka_unit_test(test_rebuild_out_of_memory_two_runs_wait),
      cmocka_unit_test(test_rebuild_partly),
      cmocka_unit_test(test_rebuild_file_resumed_past_run),
      cmocka_unit_test(test_rebuild_leftover_dropped_on_resume),
      cmocka_unit_test(test_rebuild_acked_run),
      cmocka_unit_test(test_stop_keeps_waiting_rebuild),
      cmocka_unit_test(test_rebuild_short_fingerprint),
      cmocka_unit_test(test_reload_takes_over_rebuilds),
      cmocka_unit_test(test_stop_after_take_over),
      cmocka_unit_test(test_take_over_hand_on_fails),
      cmocka_unit_test(test_take_over_later_hand_on_fails),
      cmocka_unit_test(test_rebuild_read_before_created),
      cmocka_unit_test(test_abandon_during_journal_write),
      cmocka_unit_test(test_journal_fails_not_sent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
