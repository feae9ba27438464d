/* Unit tests: lg_meta (add, hidden pairs, seal, find, reference counts
 * shared with batches). No loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pipeline/lg_batch.h"
#include "pipeline/lg_meta.h"

#define K(s) (s), (sizeof(s) - 1)

static void test_meta(void **state) {
  (void)state;
  lg_meta_t *m = lg_meta_create();
  assert_non_null(m);
  assert_int_equal(
      lg_meta_add_str(m, "log.file.path", K("/var/log/a \"b\".log")), 0);
  assert_int_equal(lg_meta_add_int(m, "k8s.restart", -3), 0);
  assert_int_equal(lg_meta_add_int(m, "big", INT64_MAX), 0);
  assert_int_equal(lg_meta_add_str(m, "nul", "a\0b", 3), 0);
  assert_int_equal(
      lg_meta_add_hidden_str(m, "k8s.labels", K("{\"app\":\"x\"}")), 0);
  assert_int_equal(lg_meta_seal(m), 0);
  const char *want = ",\"log.file.path\":\"/var/log/a \\\"b\\\".log\""
                     ",\"k8s.restart\":-3,\"big\":9223372036854775807"
                     ",\"nul\":\"a\\u0000b\"";
  assert_int_equal(m->json_len, strlen(want));
  assert_memory_equal(m->json, want, m->json_len);
  assert_int_equal(m->n, 4);
  assert_int_equal(m->nhidden, 1);
  const lg_meta_kv_t *kv = lg_meta_find(m, K("k8s.restart"));
  assert_non_null(kv);
  assert_null(kv->str);
  assert_int_equal(kv->num, -3);
  kv = lg_meta_find(m, K("nul"));
  assert_int_equal(kv->str_len, 3);
  assert_memory_equal(kv->str, "a\0b", 3);
  kv = lg_meta_find(m, K("log.file.path"));
  assert_string_equal(kv->str, "/var/log/a \"b\".log");
  /* Hidden pairs are not found and not in the JSON. */
  assert_null(lg_meta_find(m, K("k8s.labels")));
  assert_string_equal(m->hidden[0].key, "k8s.labels");
  assert_null(lg_meta_find(m, K("log.file")));
  assert_null(lg_meta_find(NULL, K("x")));
  /* Sealing again re-encodes (after more pairs). */
  assert_int_equal(lg_meta_add_str(m, "z", K("1")), 0);
  assert_int_equal(lg_meta_seal(m), 0);
  assert_int_equal(m->json_len, strlen(want) + 8);
  assert_memory_equal(m->json + strlen(want), ",\"z\":\"1\"", 8);
  /* References: two batches share it; it lives until the last unref. */
  lg_batch_t *b1 = lg_batch_create(0), *b2 = lg_batch_create(0);
  lg_batch_set_meta(b1, m);
  lg_batch_set_meta(b2, m);
  assert_int_equal(m->refs, 3);
  lg_meta_unref(m);
  assert_int_equal(m->refs, 2);
  lg_batch_reset(b1);
  assert_null(b1->meta);
  assert_int_equal(m->refs, 1);
  lg_batch_set_meta(b2, NULL); /* drops the last reference: ASan checks */
  assert_null(b2->meta);
  lg_batch_destroy(b1);
  lg_batch_destroy(b2);
  lg_meta_unref(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_meta),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
