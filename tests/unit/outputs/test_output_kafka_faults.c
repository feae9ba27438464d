/* Unit tests: the kafka output when the cluster fails, against
 * librdkafka's mock cluster (helpers/lg_test_kafka.h): injected Produce
 * errors and every broker down, partition leaders moving with a full
 * local queue, a fatal idempotent-producer error and the producer
 * restart, a broker without idempotence support, records the broker
 * refuses for what they are, and an error answer while the next requests
 * are on the wire (the order without idempotence). */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <uv.h>

#include "helpers/lg_test.h"
#include "helpers/lg_test_kafka.h"
#include "outputs/lg_out_kafka.h"
#include "outputs/lg_output.h"

/* Request errors and every broker down for a while: no ack while down, no
 * loss, no duplicate (idempotence), no reordering per key. */
static void test_faults(void **state) {
  (void)state;
  kfx_t *f = kfx_mock(3);
  kfx_output(f, kfx_kv(f->m.bootstraps, NULL), kfx_quiet);
  enum { N = 90 };
  kfx_submit(f, 0, 30, NULL);
  kfx_run_until_acks(f, 30, 20000);
  assert_int_equal(f->a.n, 30);

  /* Retriable errors on Produce requests (API key 0). */
  rd_kafka_mock_push_request_errors(
      f->m.mc, 0, 6, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
      RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
  kfx_submit(f, 30, 60, NULL);
  kfx_run_until_acks(f, 60, 20000);
  assert_int_equal(f->a.n, 60);

  /* Every broker down: nothing may be acked until they are back. */
  for (int b = 1; b <= 3; b++)
    rd_kafka_mock_broker_set_down(f->m.mc, b);
  lg_test_run_for(&f->loop, 300);
  kfx_submit(f, 60, N, NULL);
  lg_test_run_for(&f->loop, 2000);
  assert_int_equal(f->a.n, 60);
  for (int b = 1; b <= 3; b++)
    rd_kafka_mock_broker_set_up(f->m.mc, b);
  kfx_run_until_acks(f, N, 25000);
  kfx_assert_acks_in_order(&f->a, N);
  assert_int_equal(f->o->records_out, N * KFX_CHUNK_RECS);
  lg_kafka_stats_t st;
  assert_int_equal(lg_output_kafka_stats(f->o, &st), 0);
  /* Brokers down shows as transport errors, all retried. */
  assert_true(st.errors_retriable > 0);
  assert_int_equal(st.errors_permanent, 0);
  assert_int_equal(st.in_flight, 0);
  kfx_close(f);
  kfx_assert_each_once(f->m.bootstraps, "logs", N * KFX_CHUNK_RECS, 0);
  kfx_free(f);
}

/* Partition leaders move between brokers while records are produced
 * (and the local queue is kept small, so it fills): no loss, no
 * duplicate, no reordering per key. */
static void test_leader_change(void **state) {
  (void)state;
  kfx_t *f = kfx_mock(3);
  rd_kafka_mock_topic_create(f->m.mc, "moving", 3, 3);
  const char *const extra[] = {"topic", "moving", NULL};
  const char *const rk[] = {"log_level", "0", "queue.buffering.max.messages",
                            "50", NULL};
  kfx_output(f, kfx_kv(f->m.bootstraps, extra), rk);
  enum { N = 120, ROUNDS = 4 };
  for (int r = 0; r < ROUNDS; r++) {
    kfx_submit(f, r * N / ROUNDS, (r + 1) * N / ROUNDS, NULL);
    lg_test_run_for(&f->loop, 30); /* some in flight when the leaders move */
    for (int p = 0; p < 3; p++)
      assert_int_equal(rd_kafka_mock_partition_set_leader(f->m.mc, "moving", p,
                                                          1 + (p + r + 1) % 3),
                       0);
    kfx_run_until_acks(f, (r + 1) * N / ROUNDS, 20000);
  }
  kfx_assert_acks_in_order(&f->a, N);
  lg_kafka_stats_t st;
  assert_int_equal(lg_output_kafka_stats(f->o, &st), 0);
  assert_int_equal(st.messages_delivered, N * KFX_CHUNK_RECS);
  /* The full local queue made lugger wait and produce again. */
  assert_true(st.retries > 0);
  kfx_close(f);
  kfx_assert_each_once(f->m.bootstraps, "moving", N * KFX_CHUNK_RECS, 1);
  kfx_free(f);
}

/* A fatal idempotent-producer error used to stall the output until a
 * restart: now the producer is recreated and every unacked record is
 * produced again (at-least-once: nothing lost, copies allowed). */
static void test_fatal_restart(void **state) {
  (void)state;
  kfx_t *f = kfx_mock(3);
  kfx_output(f, kfx_kv(f->m.bootstraps, NULL), kfx_quiet);
  enum { N = 60 };
  kfx_submit(f, 0, 20, NULL);
  kfx_run_until_acks(f, 20, 20000);
  assert_int_equal(f->a.n, 20);
  struct rd_kafka_s *old = lg__output_kafka_rk(f->o);
  assert_non_null(old);
  /* Records queued, then the producer dies before they are delivered. */
  kfx_submit(f, 20, 40, NULL);
  assert_int_equal(rd_kafka_test_fatal_error(
                       old, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                       "injected by test_fatal_restart"),
                   0);
  kfx_submit(f, 40, N, NULL);
  kfx_run_until_acks(f, N, 30000);
  kfx_assert_acks_in_order(&f->a, N);
  /* (The new handle may reuse the old one's address: count restarts.) */
  lg_kafka_stats_t st;
  assert_int_equal(lg_output_kafka_stats(f->o, &st), 0);
  assert_int_equal(st.producer_restarts, 1);
  assert_int_equal(st.in_flight, 0);
  kfx_close(f);
  kfx_seen_t *s = calloc(1, sizeof *s);
  kfx_consume(f->m.bootstraps, "logs", N * KFX_CHUNK_RECS, 15000, s);
  for (int q = 0; q < N * KFX_CHUNK_RECS; q++)
    if (s->count[q] == 0)
      fail_msg("record %d lost after the producer restart", q);
  assert_int_equal(s->got - s->dup, N * KFX_CHUNK_RECS);
  print_message("fatal restart: %d records, %d duplicates\n", s->got, s->dup);
  free(s);
  kfx_free(f);
}

/* The broker refuses records for what they are (a timestamp outside the
 * topic's message.timestamp.difference.max.ms, a broker-side policy, a
 * format the topic's version cannot hold): retrying cannot help, so the
 * refused records are rejected (dead-letter) at once, with the error's
 * name, and the chunks before and after them are delivered. Retried, they
 * would be refused forever and each refusal would rewind the output. */
static void test_refused_records(void **state) {
  (void)state;
  static const rd_kafka_resp_err_t refusals[] = {
      RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP,
      RD_KAFKA_RESP_ERR_POLICY_VIOLATION,
      RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT,
  };
  for (size_t r = 0; r < sizeof refusals / sizeof *refusals; r++) {
    kfx_t *f = kfx_mock(1);
    kfx_output(f, kfx_kv(f->m.bootstraps, NULL), kfx_quiet);
    kfx_submit(f, 0, 1, NULL);
    kfx_run_until_acks(f, 1, 20000);
    /* Chunk 2's Produce requests are refused, as the broker would refuse
     * those records each time they were sent again. */
    enum { REFUSALS = 64 };
    rd_kafka_resp_err_t errs[REFUSALS];
    for (int i = 0; i < REFUSALS; i++)
      errs[i] = refusals[r];
    rd_kafka_mock_push_request_errors_array(f->m.mc, 0, REFUSALS, errs);
    kfx_submit(f, 1, 2, NULL);
    kfx_run_until_acks(f, 2, 10000);
    rd_kafka_mock_clear_request_errors(f->m.mc, 0);
    kfx_submit(f, 2, 3, NULL);
    kfx_run_until_acks(f, 3, 20000);
    assert_int_equal(f->a.refs[0], 1);
    assert_int_equal(f->a.status[0], 0);
    assert_int_equal(f->a.refs[1], 2);
    assert_true(f->a.status[1] < 0); /* no dead-letter output took them */
    assert_int_equal(f->a.refs[2], 3);
    assert_int_equal(f->a.status[2], 0);
    lg_kafka_stats_t st;
    assert_int_equal(lg_output_kafka_stats(f->o, &st), 0);
    assert_true(st.errors_permanent >= 1);
    uint64_t named = 0;
    for (size_t i = 0; i < st.nerr; i++)
      if (st.err[i].permanent &&
          strcmp(st.err[i].name, rd_kafka_err2name(refusals[r])) == 0)
        named += st.err[i].count;
    if (named != st.errors_permanent)
      fail_msg("%s: %" PRIu64 " of %" PRIu64 " permanent errors named",
               rd_kafka_err2name(refusals[r]), named, st.errors_permanent);
    /* Every record ends somewhere known: delivered or rejected. */
    assert_int_equal(f->o->records_out + st.errors_permanent,
                     3 * KFX_CHUNK_RECS);
    assert_int_equal(st.in_flight, 0);
    kfx_close(f);
    kfx_free(f);
  }
}

/* A broker without InitProducerId (Kafka before 0.11): with idempotence
 * at its default the output goes on without it (one producer restart, no
 * loss); set explicitly, it does not (nothing is delivered). */
static void test_idempotence_unsupported(void **state) {
  (void)state;
  for (int explicit_on = 0; explicit_on < 2; explicit_on++) {
    kfx_t *f = kfx_mock(1);
    /* ApiKey 22 = InitProducerId. */
    assert_int_equal(rd_kafka_mock_set_apiversion(f->m.mc, 22, -1, -1), 0);
    const char *const extra[] = {"idempotence", "true", NULL};
    kfx_output(f, kfx_kv(f->m.bootstraps, explicit_on ? extra : NULL),
               kfx_quiet);
    enum { N = 10 };
    kfx_submit(f, 0, N, NULL);
    if (explicit_on)
      lg_test_run_for(&f->loop, 2000); /* nothing may be acked */
    else
      kfx_run_until_acks(f, N, 20000);
    lg_kafka_stats_t st;
    assert_int_equal(lg_output_kafka_stats(f->o, &st), 0);
    if (explicit_on) {
      assert_int_equal(f->a.n, 0);
      assert_true(st.producer_restarts >= 1);
      int closed = 0;
      lg_output_close(f->o, kfx_on_closed, &closed);
      lg_output_abandon(f->o);
      lg_test_run_until_count(&f->loop, &closed, 1, 5000, "the close callback");
      assert_int_equal(closed, 1);
      LG_TEST_LOOP_CLOSE(&f->loop);
    } else {
      kfx_assert_acks_in_order(&f->a, N);
      assert_int_equal(st.producer_restarts, 1);
      kfx_close(f);
      kfx_seen_t *s = calloc(1, sizeof *s);
      kfx_consume(f->m.bootstraps, "logs", N * KFX_CHUNK_RECS, 15000, s);
      assert_int_equal(s->got, N * KFX_CHUNK_RECS);
      assert_int_equal(s->dup, 0);
      free(s);
    }
    kfx_free(f);
  }
}

/* A Produce request answered with a retriable error while the partition's
 * next requests are already on the wire (a broker just restarted answers
 * NOT_LEADER_FOR_PARTITION until it leads its partitions again): without
 * idempotence, librdkafka retries the failed records itself, after the
 * later requests have been written, unless a single request per
 * connection is in flight. The output keeps to one when idempotence is
 * off: every record arrives once, in order per key. (Found as
 * test_kafka_timeout_order's "restart" scenario failing now and then: the
 * partition got a file's lines 4550-6099 after line 14043.) So with
 * idempotence set false (mode 0) and turned off because the broker
 * refuses it (mode 1). A user's own max.in.flight (under `librdkafka`) is
 * kept (mode 2): at librdkafka's default the failed request's records land
 * after the next request's. */
static void test_error_answer_order(void **state) {
  (void)state;
  for (int mode = 0; mode < 3; mode++) {
    int own = mode == 2;
    kfx_t *f = kfx_mock(1);
    const char *const extra[] = {"idempotence", "false", NULL};
    if (mode == 1) /* ApiKey 22 = InitProducerId: no idempotence */
      assert_int_equal(rd_kafka_mock_set_apiversion(f->m.mc, 22, -1, -1), 0);
    /* At most 20 records per request: a partition's records take several,
     * all ready at once. */
    const char *const rk[] = {"log_level",
                              "0",
                              "batch.num.messages",
                              "20",
                              own ? "max.in.flight" : NULL,
                              "1000000",
                              NULL};
    kfx_output(f, kfx_kv(f->m.bootstraps, mode == 1 ? NULL : extra), rk);
    enum { N = 60 };
    kfx_submit(f, 0, 5, NULL);
    kfx_run_until_acks(f, 5, 20000);
    /* Each answer takes 200 ms, so librdkafka has sent the next requests
     * (when it may) before the first one's error is back. */
    assert_int_equal(rd_kafka_mock_broker_set_rtt(f->m.mc, 1, 200), 0);
    rd_kafka_mock_push_request_errors(
        f->m.mc, 0, 1, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
    kfx_submit(f, 5, N, NULL);
    kfx_run_until_acks(f, N, 30000);
    kfx_assert_acks_in_order(&f->a, N);
    assert_int_equal(rd_kafka_mock_broker_set_rtt(f->m.mc, 1, 0), 0);
    kfx_close(f);
    kfx_seen_t *s = calloc(1, sizeof *s);
    kfx_consume(f->m.bootstraps, "logs", N * KFX_CHUNK_RECS, 15000, s);
    print_message("error answer with later requests on the wire (%s): %d "
                  "records, %d copies, %d first copies out of order\n",
                  mode == 2   ? "max.in.flight 1000000 set"
                  : mode == 1 ? "idempotence refused"
                              : "idempotence false",
                  s->got, s->dup, s->first_reordered);
    assert_int_equal(s->got, N * KFX_CHUNK_RECS);
    assert_int_equal(s->dup, 0);
    if (own) {
      assert_true(s->first_reordered > 0);
    } else {
      assert_int_equal(s->first_reordered, 0);
      assert_int_equal(s->reordered, 0);
    }
    free(s);
    kfx_free(f);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_faults, kfx_free_held),
      cmocka_unit_test_teardown(test_leader_change, kfx_free_held),
      cmocka_unit_test_teardown(test_fatal_restart, kfx_free_held),
      cmocka_unit_test_teardown(test_idempotence_unsupported, kfx_free_held),
      cmocka_unit_test_teardown(test_refused_records, kfx_free_held),
      cmocka_unit_test_teardown(test_error_answer_order, kfx_free_held),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
