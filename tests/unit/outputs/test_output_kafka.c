/* Unit tests: the kafka output against librdkafka's mock cluster (the real
 * Kafka protocol on loopback, in-process), on a real libuv loop; records
 * are read back with a librdkafka consumer (the fixture:
 * helpers/lg_test_kafka.h). Here: options, producing and acking (keys,
 * headers, topic_field, a record over message.max.bytes and its metrics),
 * and flush or give-up at exit. Broker faults are in
 * test_output_kafka_faults.c, timeouts and the rewind in
 * test_output_kafka_timeout.c. */
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

#include "core/lg_buf.h"
#include "core/lg_metrics.h"
#include "helpers/lg_test.h"
#include "helpers/lg_test_kafka.h"
#include "outputs/lg_out_kafka.h"
#include "outputs/lg_output.h"

/* Bad options fail at create with the key path. */
static void test_bad_options(void **state) {
  (void)state;
  char err[512] = "";
  const char *kv[] = {"brokers", "127.0.0.1:1", "topic", "t",
                      "key",     "bogus",       NULL};
  assert_null(lg_config_output_new("k", "kafka", kv, err, sizeof err));
  assert_non_null(strstr(err, "outputs.k.key"));
  const char *kv2[] = {"brokers", "127.0.0.1:1", NULL};
  lg_conf_output_t *c =
      lg_config_output_new("k", "kafka", kv2, err, sizeof err);
  assert_non_null(c);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  kfx_acks_t a = {0};
  assert_null(lg_output_create(&loop, c, 0, kfx_on_ack, &a, err, sizeof err));
  assert_non_null(strstr(err, "topic"));
  lg_config_output_free(c);
  LG_TEST_LOOP_CLOSE(&loop); /* a failed create leaves no handle */
}

/* Every record arrives once, in order per key, with key and headers; each
 * chunk is acked once, in order, after delivery. */
static void test_delivery(void **state) {
  (void)state;
  kfx_t *f = kfx_mock(3);
  kfx_output(f, kfx_kv(f->m.bootstraps, NULL), kfx_quiet);
  enum { N = 100 };
  kfx_submit(f, 0, N, NULL);
  kfx_run_until_acks(f, N, 20000);
  kfx_assert_acks_in_order(&f->a, N);
  assert_int_equal(f->o->records_out, N * KFX_CHUNK_RECS);
  /* The messages are the records' JSON as encoded, without "\n". */
  uint64_t bytes = kfx_held_bytes();
  assert_int_equal(f->o->bytes_out, bytes);
  assert_int_equal(f->o->errors, 0);
  lg_kafka_stats_t st;
  assert_int_equal(lg_output_kafka_stats(f->o, &st), 0);
  assert_int_equal(st.messages_delivered, N * KFX_CHUNK_RECS);
  assert_int_equal(st.bytes_delivered, bytes);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.errors_permanent, 0);
  assert_int_equal(st.producer_restarts, 0);
  kfx_close(f);
  kfx_assert_each_once(f->m.bootstraps, "logs", N * KFX_CHUNK_RECS, 1);
  kfx_free(f);
}

/* topic_field picks the topic per record; records without it use topic. */
static void test_topic_field(void **state) {
  (void)state;
  kfx_t *f = kfx_mock(1);
  rd_kafka_mock_topic_create(f->m.mc, "odd", 3, 1);
  const char *const extra[] = {"topic_field", "topic", NULL};
  kfx_output(f, kfx_kv(f->m.bootstraps, extra), kfx_quiet);
  enum { N = 10 };
  kfx_submit(f, 0, N, "odd");
  kfx_run_until_acks(f, N, 20000);
  kfx_assert_acks_in_order(&f->a, N);
  kfx_close(f);
  kfx_seen_t *s = calloc(1, sizeof *s);
  kfx_consume(f->m.bootstraps, "odd", N * KFX_CHUNK_RECS / 2, 15000, s);
  assert_int_equal(s->got, N * KFX_CHUNK_RECS / 2);
  for (int q = 0; q < N * KFX_CHUNK_RECS; q++)
    assert_int_equal(s->count[q], q & 1);
  kfx_consume(f->m.bootstraps, "logs", N * KFX_CHUNK_RECS / 2, 15000, s);
  assert_int_equal(s->got, N * KFX_CHUNK_RECS / 2);
  for (int q = 0; q < N * KFX_CHUNK_RECS; q++)
    assert_int_equal(s->count[q], !(q & 1));
  free(s);
  kfx_free(f);
}

/* A record over message.max.bytes fails its chunk with -EMSGSIZE (so the
 * engine sends it to dead-letter); the chunks around it are delivered. */
static void test_too_large(void **state) {
  (void)state;
  kfx_t *f = kfx_mock(1);
  const char *const rk[] = {"log_level", "0", "message.max.bytes", "2000",
                            NULL};
  kfx_output(f, kfx_kv(f->m.bootstraps, NULL), rk);
  size_t l1, l3;
  char *c1 = kfx_make_chunk(0, NULL, &l1);
  char *c3 = kfx_make_chunk(2, NULL, &l3);
  char *big = malloc(5000);
  int n = snprintf(big, 5000, "{\"k\":\"k0\",\"seq\":20,\"body\":\"");
  memset(big + n, 'x', 4000);
  n += 4000;
  n += snprintf(big + n, 5000 - (size_t)n, "\"}\n{\"k\":\"k1\",\"seq\":21}\n");
  assert_int_equal(kfx_submit_json(f->o, c1, l1, (void *)1), 0);
  assert_int_equal(kfx_submit_json(f->o, big, (size_t)n, (void *)2), 0);
  assert_int_equal(kfx_submit_json(f->o, c3, l3, (void *)3), 0);
  kfx_run_until_acks(f, 3, 20000);
  assert_int_equal(f->a.n, 3);
  assert_int_equal(f->a.refs[0], 1);
  assert_int_equal(f->a.status[0], 0);
  assert_int_equal(f->a.refs[1], 2);
  assert_true(f->a.status[1] < 0); /* no dead-letter output took it */
  assert_int_equal(f->a.refs[2], 3);
  assert_int_equal(f->a.status[2], 0);
  assert_int_equal(f->o->errors, 1);
  assert_int_equal(f->o->records_out, 2 * KFX_CHUNK_RECS + 1);
  lg_kafka_stats_t st;
  assert_int_equal(lg_output_kafka_stats(f->o, &st), 0);
  assert_int_equal(st.errors_permanent, 1);
  int named = 0;
  for (size_t i = 0; i < st.nerr; i++)
    if (st.err[i].permanent &&
        strcmp(st.err[i].name, "MSG_SIZE_TOO_LARGE") == 0)
      named += (int)st.err[i].count;
  assert_int_equal(named, 1);
  /* The same counts in the registry behind /metrics. */
  lg_buf_t buf = {0};
  assert_int_equal(lg_metrics_render(&buf), 0);
  const char *want[] = {
      ("lugger_kafka_errors_total{output=\"k\",class=\"permanent\","
       "error=\"MSG_SIZE_TOO_LARGE\"} 1\n"),
      "lugger_kafka_messages_delivered_total{output=\"k\"} ",
      "lugger_kafka_messages_in_flight{output=\"k\"} 0\n",
      "lugger_kafka_retries_total{output=\"k\"} ",
      "lugger_kafka_producer_restarts_total{output=\"k\"} ",
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++)
    if (memmem(buf.data, buf.len, want[i], strlen(want[i])) == NULL)
      fail_msg("/metrics lacks %s", want[i]);
  lg_buf_free(&buf);
  kfx_close(f);
  free(c1);
  free(c3);
  free(big);
  kfx_free(f);
}

/* Close right after submitting: exit delivers everything and acks it
 * before the close callback. */
static void test_exit_flush(void **state) {
  (void)state;
  kfx_t *f = kfx_mock(1);
  kfx_output(f, kfx_kv(f->m.bootstraps, NULL), kfx_quiet);
  enum { N = 50 };
  kfx_submit(f, 0, N, NULL);
  assert_true(f->a.n < N);
  int closed = 0;
  lg_output_close(f->o, kfx_on_closed, &closed);
  lg_test_run_until_count(&f->loop, &closed, 1, 10000, "the close callback");
  assert_int_equal(closed, 1);
  kfx_assert_acks_in_order(&f->a, N);
  LG_TEST_LOOP_CLOSE(&f->loop);
  kfx_seen_t *s = calloc(1, sizeof *s);
  kfx_consume(f->m.bootstraps, "logs", N * KFX_CHUNK_RECS, 15000, s);
  assert_int_equal(s->got, N * KFX_CHUNK_RECS);
  assert_int_equal(s->dup, 0);
  free(s);
  kfx_free(f);
}

/* Close while the broker is down: exit waits (no ack: nothing was
 * delivered); when the engine's timeout passes, abandon ends it at once
 * without acking, so those records are read again at the next start. */
static void test_exit_abandon(void **state) {
  (void)state;
  kfx_t *f = kfx_mock(1);
  kfx_output(f, kfx_kv(f->m.bootstraps, NULL), kfx_quiet);
  rd_kafka_mock_broker_set_down(f->m.mc, 1);
  enum { N = 5 };
  kfx_submit(f, 0, N, NULL);
  int closed = 0;
  lg_output_close(f->o, kfx_on_closed, &closed);
  lg_test_run_for(&f->loop, 1000);
  assert_int_equal(closed, 0);
  assert_int_equal(f->a.n, 0);
  int64_t t0 = (int64_t)lg_test_now_ms();
  lg_output_abandon(f->o);
  lg_test_run_until_count(&f->loop, &closed, 1, 5000, "the close callback");
  assert_int_equal(closed, 1);
  assert_true((int64_t)lg_test_now_ms() - t0 < 1000);
  assert_int_equal(f->a.n, 0);
  LG_TEST_LOOP_CLOSE(&f->loop);
  kfx_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_bad_options, kfx_free_held),
      cmocka_unit_test_teardown(test_delivery, kfx_free_held),
      cmocka_unit_test_teardown(test_topic_field, kfx_free_held),
      cmocka_unit_test_teardown(test_too_large, kfx_free_held),
      cmocka_unit_test_teardown(test_exit_flush, kfx_free_held),
      cmocka_unit_test_teardown(test_exit_abandon, kfx_free_held),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
