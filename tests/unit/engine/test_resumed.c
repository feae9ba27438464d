/* Unit tests: what the engine keeps of where files resumed at their
 * checkpoints (lg__on_file_resumed, lg_engine_flow.c), for outputs a
 * reload creates later: one entry per fingerprint, the first offset told
 * (the start's checkpoint), in the order told, for tens of thousands of
 * files. The engine struct is built by hand (no outputs, no loop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "engine/lg_engine_internal.h"

static uint64_t fp_of(size_t i) {
  return UINT64_C(0x9e3779b97f4a7c15) * (uint64_t)(i + 1);
}

static void engine_free(engine_t *e) {
  free(e->resumed);
  lg_u64map_free(&e->resumed_ix);
  free(e);
}

/* 20,000 files resumed, then each again at a later offset (a source a
 * reload re-added), and a few a third time: one entry each, the first
 * offset, in the first order. */
static void test_resumed_once_per_file(void **state) {
  (void)state;
  engine_t *e = calloc(1, sizeof *e);
  assert_non_null(e);
  const size_t n = 20000;
  for (size_t i = 0; i < n; i++)
    lg__on_file_resumed(e, fp_of(i), 100 + i);
  assert_int_equal(e->nresumed, n);
  for (size_t i = n; i-- > 0;)
    lg__on_file_resumed(e, fp_of(i), 5000 + i);
  for (size_t i = 0; i < n; i += 1000)
    lg__on_file_resumed(e, fp_of(i), 9);
  assert_int_equal(e->nresumed, n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(e->resumed[i].fp, fp_of(i));
    assert_int_equal(e->resumed[i].offset, 100 + i);
  }
  /* A new file after them is kept after them. */
  lg__on_file_resumed(e, 7, 70);
  assert_int_equal(e->nresumed, n + 1);
  assert_int_equal(e->resumed[n].fp, 7);
  assert_int_equal(e->resumed[n].offset, 70);
  engine_free(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_resumed_once_per_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
