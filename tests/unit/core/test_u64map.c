/* Unit tests: lg_u64map (a hash map from 64-bit keys to size_t values):
 * adds and lookups across many table growths, a key added twice keeps its
 * first value, key 0 and keys that differ only in their high bits, and
 * an empty (zeroed) map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/lg_u64map.h"

static void test_empty(void **state) {
  (void)state;
  lg_u64map_t m = {0};
  size_t v = 7;
  assert_int_equal(lg_u64map_get(&m, 0, &v), 0);
  assert_int_equal(lg_u64map_get(&m, 42, NULL), 0);
  assert_int_equal(v, 7);
  assert_int_equal(lg_u64map_count(&m), 0);
  lg_u64map_free(&m);
  lg_u64map_free(NULL);
}

/* 100,000 keys (many doublings of the table): each found with its value,
 * none of the keys never added found. */
static void test_many(void **state) {
  (void)state;
  lg_u64map_t m = {0};
  const size_t n = 100000;
  for (size_t i = 0; i < n; i++)
    assert_int_equal(lg_u64map_add(&m, (uint64_t)i * 3, i), 1);
  assert_int_equal(lg_u64map_count(&m), n);
  for (size_t i = 0; i < n; i++) {
    size_t v = SIZE_MAX;
    assert_int_equal(lg_u64map_get(&m, (uint64_t)i * 3, &v), 1);
    assert_int_equal(v, i);
    assert_int_equal(lg_u64map_get(&m, (uint64_t)i * 3 + 1, &v), 0);
    assert_int_equal(lg_u64map_get(&m, (uint64_t)i * 3 + 2, NULL), 0);
  }
  assert_true(m.cap >= 2 * n); /* at most half full */
  lg_u64map_free(&m);
  assert_int_equal(lg_u64map_count(&m), 0);
  assert_int_equal(lg_u64map_get(&m, 3, NULL), 0);
}

/* A key added again keeps its first value and is counted once; key 0 is
 * a key like any other. */
static void test_add_twice_and_zero(void **state) {
  (void)state;
  lg_u64map_t m = {0};
  assert_int_equal(lg_u64map_add(&m, 0, 5), 1);
  assert_int_equal(lg_u64map_add(&m, 0, 6), 0);
  assert_int_equal(lg_u64map_add(&m, UINT64_MAX, 8), 1);
  assert_int_equal(lg_u64map_add(&m, UINT64_MAX, 9), 0);
  size_t v = 0;
  assert_int_equal(lg_u64map_get(&m, 0, &v), 1);
  assert_int_equal(v, 5);
  assert_int_equal(lg_u64map_get(&m, UINT64_MAX, &v), 1);
  assert_int_equal(v, 8);
  assert_int_equal(lg_u64map_count(&m), 2);
  lg_u64map_free(&m);
}

/* Keys that differ only above bit 40 (the table index is taken from the
 * low bits of the mixed key, not of the key). */
static void test_high_bits(void **state) {
  (void)state;
  lg_u64map_t m = {0};
  for (uint64_t i = 0; i < 4096; i++)
    assert_int_equal(lg_u64map_add(&m, i << 40, (size_t)i), 1);
  for (uint64_t i = 0; i < 4096; i++) {
    size_t v = 0;
    assert_int_equal(lg_u64map_get(&m, i << 40, &v), 1);
    assert_int_equal(v, (size_t)i);
  }
  /* The probes stay short: no run of used slots is long. */
  size_t run = 0, longest = 0;
  for (size_t i = 0; i < m.cap; i++) {
    run = m.slots[i].used ? run + 1 : 0;
    if (run > longest)
      longest = run;
  }
  assert_true(longest < 64);
  lg_u64map_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_many),
      cmocka_unit_test(test_add_twice_and_zero),
      cmocka_unit_test(test_high_bits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
