/* Unit tests: lg_metrics (the counter/gauge registry and its Prometheus
 * text rendering): exact output, idempotent registration, escaping,
 * rejected names, and lock-free adds from several threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_metrics.h"

static int reset(void **state) {
  (void)state;
  lg_metrics_reset();
  return 0;
}

static char *render(void) {
  static lg_buf_t b = LG_BUF_INIT;
  b.len = 0;
  assert_int_equal(lg_metrics_render(&b), 0);
  assert_int_equal(lg_buf_putc(&b, '\0'), 0);
  return b.data;
}

static void test_render_exact(void **state) {
  (void)state;
  lg_metric_t *a = lg_metrics_counter("lugger_records_read_total",
                                      "Records read.", "source", "app", NULL);
  lg_metric_t *b = lg_metrics_counter("lugger_records_read_total", "ignored",
                                      "source", "pods", NULL);
  lg_metric_t *g =
      lg_metrics_gauge("lugger_memory_used_bytes", "Bytes held.", NULL);
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(g);
  lg_metric_add(a, 3);
  lg_metric_add(a, 4);
  lg_metric_add(b, 1);
  lg_metric_set(g, 100);
  lg_metric_sub(g, 150);
  assert_string_equal(render(),
                      "# HELP lugger_records_read_total Records read.\n"
                      "# TYPE lugger_records_read_total counter\n"
                      "lugger_records_read_total{source=\"app\"} 7\n"
                      "lugger_records_read_total{source=\"pods\"} 1\n"
                      "# HELP lugger_memory_used_bytes Bytes held.\n"
                      "# TYPE lugger_memory_used_bytes gauge\n"
                      "lugger_memory_used_bytes -50\n");
  assert_int_equal(lg_metric_get(a), 7);
  assert_int_equal(lg_metric_get(g), -50);
}

static void test_same_series_same_handle(void **state) {
  (void)state;
  lg_metric_t *a =
      lg_metrics_counter("x_total", "h", "k", "v", "k2", "w", NULL);
  lg_metric_t *b =
      lg_metrics_counter("x_total", "h", "k", "v", "k2", "w", NULL);
  lg_metric_t *c = lg_metrics_counter("x_total", "h", "k", "v", NULL);
  assert_ptr_equal(a, b);
  assert_ptr_not_equal(a, c);
}

static void test_escaping_and_rejects(void **state) {
  (void)state;
  lg_metric_t *m =
      lg_metrics_gauge("g", "a \\ b\nc", "path", "C:\\x \"q\"\n", NULL);
  assert_non_null(m);
  lg_metric_set(m, 1);
  assert_string_equal(render(), "# HELP g a \\\\ b\\nc\n"
                                "# TYPE g gauge\n"
                                "g{path=\"C:\\\\x \\\"q\\\"\\n\"} 1\n");
  /* A family keeps its type. */
  assert_null(lg_metrics_counter("g", "h", NULL));
  /* Invalid metric and label names. */
  assert_null(lg_metrics_counter("1abc", "h", NULL));
  assert_null(lg_metrics_counter("a-b", "h", NULL));
  assert_null(lg_metrics_counter("ok", "h", "bad:label", "v", NULL));
  assert_null(lg_metrics_counter("ok", "h", "a", "1", "b", "2", "c", "3", "d",
                                 "4", "e", "5", "f", "6", "g", "7", "h", "8",
                                 "i", "9", NULL));
  /* NULL handles are harmless. */
  lg_metric_add(NULL, 1);
  lg_metric_set(NULL, 1);
  assert_int_equal(lg_metric_get(NULL), 0);
}

static lg_metric_t *shared;

static void *adder(void *arg) {
  (void)arg;
  for (int i = 0; i < 100000; i++)
    lg_metric_add(shared, 1);
  /* Registering from a thread while others add is safe too. */
  assert_ptr_equal(lg_metrics_counter("t_total", "h", NULL), shared);
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  shared = lg_metrics_counter("t_total", "h", NULL);
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&t[i], NULL, adder, NULL), 0);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  assert_int_equal(lg_metric_get(shared), 400000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_render_exact, reset, reset),
      cmocka_unit_test_setup_teardown(test_same_series_same_handle, reset,
                                      reset),
      cmocka_unit_test_setup_teardown(test_escaping_and_rejects, reset, reset),
      cmocka_unit_test_setup_teardown(test_threads, reset, reset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
