/* Unit tests: lg_u64map (a hash map from 64-bit keys to size_t values):
 * adds and lookups across many table growths, a key added twice keeps its
 * first value, key 0 and keys that differ only in their high bits, an
 * empty (zeroed) map, and puts and removals checked against a plain
 * array at every step. */
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

/* Puts, removals and lookups at random against a plain array of what the
 * map should hold (keys from a small range, so that runs of colliding
 * slots form and removals shift them): the map agrees after every step. */
static void test_put_del_against_model(void **state) {
  (void)state;
  enum { KEYS = 512 };
  static size_t model[KEYS]; /* value + 1; 0 = absent */
  lg_u64map_t m = {0};
  uint64_t rng = 12345;
  size_t n = 0;
  for (int step = 0; step < 200000; step++) {
    rng = rng * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
    size_t k = (size_t)(rng >> 33) % KEYS;
    uint64_t key = (uint64_t)k * UINT64_C(0x100000001); /* spread, not mixed */
    int op = (int)((rng >> 20) % 3);
    if (op == 0) {
      assert_int_equal(lg_u64map_put(&m, key, (size_t)step), 0);
      n += model[k] == 0;
      model[k] = (size_t)step + 1;
    } else if (op == 1) {
      assert_int_equal(lg_u64map_del(&m, key), model[k] != 0);
      n -= model[k] != 0;
      model[k] = 0;
    }
    size_t v = 0;
    assert_int_equal(lg_u64map_get(&m, key, &v), model[k] != 0);
    if (model[k] != 0)
      assert_int_equal(v, model[k] - 1);
    assert_int_equal(lg_u64map_count(&m), n);
  }
  for (size_t k = 0; k < KEYS; k++) {
    size_t v = 0;
    uint64_t key = (uint64_t)k * UINT64_C(0x100000001);
    assert_int_equal(lg_u64map_get(&m, key, &v), model[k] != 0);
    if (model[k] != 0)
      assert_int_equal(v, model[k] - 1);
  }
  assert_int_equal(lg_u64map_del(&m, UINT64_C(1) << 63), 0);
  lg_u64map_free(&m);
  assert_int_equal(lg_u64map_del(&m, 0), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_many),
      cmocka_unit_test(test_add_twice_and_zero),
      cmocka_unit_test(test_high_bits),
      cmocka_unit_test(test_put_del_against_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
