/* Unit tests: lg_util (read a whole file, replace one atomically, string
 * copies, array growth): real files in a temporary directory, sizes at and
 * around the limits, and capacities that a narrow integer type cannot hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/lg_util.h"
#include "helpers/lg_test.h"

static char dir[256];

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "%s", lg_test_tmpdir("lg_util_"));
  return 0;
}

static int teardown(void **state) {
  (void)state;
  return lg_test_rmtree(dir);
}

static const char *file_of(const char *name, const char *text, size_t n) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, n, f), n);
  fclose(f);
  return path;
}

static void test_read_file(void **state) {
  (void)state;
  char *buf = NULL;
  size_t len = 0;
  const char *p = file_of("a", "hello\0world", 11);
  assert_int_equal(lg_util_read_file(p, 0, &buf, &len), 0);
  assert_int_equal(len, 11);
  assert_memory_equal(buf, "hello\0world", 11);
  assert_int_equal(buf[11], '\0'); /* NUL-terminated, not counted */
  free(buf);

  p = file_of("empty", "", 0);
  assert_int_equal(lg_util_read_file(p, 0, &buf, &len), 0);
  assert_int_equal(len, 0);
  assert_string_equal(buf, "");
  free(buf);
}

static void test_read_file_limits(void **state) {
  (void)state;
  /* Bigger than the first guess of the buffer (4 KiB): it grows. */
  size_t n = 100000;
  char *big = malloc(n);
  assert_non_null(big);
  for (size_t i = 0; i < n; i++)
    big[i] = (char)('a' + i % 26);
  const char *p = file_of("big", big, n);
  char *buf = (char *)0x1, *keep = buf;
  size_t len = 7;
  /* At the limit: read; one byte over: -EFBIG, outputs untouched. */
  assert_int_equal(lg_util_read_file(p, n - 1, &buf, &len), -EFBIG);
  assert_ptr_equal(buf, keep);
  assert_int_equal(len, 7);
  assert_int_equal(lg_util_read_file(p, n, &buf, &len), 0);
  assert_int_equal(len, n);
  assert_memory_equal(buf, big, n);
  free(buf);
  free(big);

  /* /proc files say size 0 and still have bytes. */
  assert_int_equal(lg_util_read_file("/proc/self/status", 0, &buf, &len), 0);
  assert_true(len > 0);
  assert_non_null(strstr(buf, "Pid:"));
  free(buf);

  char missing[600];
  snprintf(missing, sizeof missing, "%s/missing", dir);
  assert_int_equal(lg_util_read_file(missing, 0, &buf, &len), -ENOENT);
  assert_int_equal(lg_util_read_file(dir, 0, &buf, &len), -EISDIR);
}

/* lg_util_write_atomic: the file is replaced whole with the mode asked
 * for, and no temp file is left; a failure names its step and leaves the
 * old file as it was. */
static void test_write_atomic(void **state) {
  (void)state;
  char path[512], tmp[520];
  snprintf(path, sizeof path, "%s/state.json", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  mode_t old_umask = umask(022);
  const char *step = NULL;
  struct stat st;
  assert_int_equal(lg_util_write_atomic(dir, path, "one", 3, 0640, &step), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0640);
  assert_int_equal(stat(tmp, &st), -1);
  unlink(path);
  assert_int_equal(lg_util_write_atomic(dir, path, "two", 3, 0600, NULL), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  umask(old_umask);
  char *buf = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(path, 0, &buf, &len), 0);
  assert_memory_equal(buf, "two", 3);
  free(buf);

  /* The temp file's name is taken by a directory. */
  assert_int_equal(mkdir(tmp, 0700), 0);
  assert_int_equal(lg_util_write_atomic(dir, path, "three", 5, 0600, &step),
                   -EISDIR);
  assert_string_equal(step, "create temp file");
  assert_int_equal(lg_util_read_file(path, 0, &buf, &len), 0);
  assert_int_equal(len, 3);
  free(buf);
  assert_int_equal(rmdir(tmp), 0);
}

static void test_strings(void **state) {
  (void)state;
  char *s = lg_util_strdup("abc");
  assert_string_equal(s, "abc");
  free(s);
  assert_null(lg_util_strdup(NULL));

  const char *const v[] = {"x", "", "long string"};
  char **c = lg_util_strv_copy(v, 3);
  assert_non_null(c);
  for (int i = 0; i < 3; i++) {
    assert_string_equal(c[i], v[i]);
    assert_ptr_not_equal(c[i], v[i]);
  }
  lg_util_strv_free(c, 3);
  c = lg_util_strv_copy(NULL, 0);
  assert_non_null(c); /* a valid empty vector */
  lg_util_strv_free(c, 0);
  lg_util_strv_free(NULL, 5);
}

static void test_equal(void **state) {
  (void)state;
  char x1[] = "x", x2[] = "x";
  assert_true(lg_util_str_eq(NULL, NULL));
  assert_true(lg_util_str_eq(x1, x2)); /* by text, not by pointer */
  assert_false(lg_util_str_eq(x1, NULL));
  assert_false(lg_util_str_eq(NULL, x1));
  assert_false(lg_util_str_eq("x", "xy"));
  assert_true(lg_util_str_eq("", ""));

  char *a[] = {x1, NULL, "b"}, *b[] = {x2, NULL, "b"}, *c[] = {x2, "", "b"};
  assert_true(lg_util_strv_eq(a, 3, b, 3));
  assert_false(lg_util_strv_eq(a, 3, c, 3)); /* NULL is not "" */
  assert_false(lg_util_strv_eq(a, 3, b, 2)); /* lengths differ */
  assert_false(lg_util_strv_eq(a, 2, c, 2));
  assert_true(lg_util_strv_eq(NULL, 0, NULL, 0));
  assert_true(lg_util_strv_eq(a, 1, c, 1));
}

static void test_grow(void **state) {
  assert_int_equal(lg_util_round_up(0, 256), 0);
  assert_int_equal(lg_util_round_up(1, 256), 256);
  assert_int_equal(lg_util_round_up(256, 256), 256);
  assert_int_equal(lg_util_round_up(257, 16), 272);
  (void)state;
  int *a = NULL;
  size_t cap = 0;
  assert_int_equal(LG_GROW(a, cap, 1, 8), 0);
  assert_int_equal(cap, 8);
  for (int i = 0; i < 8; i++)
    a[i] = i;
  assert_int_equal(LG_GROW(a, cap, 8, 8), 0); /* room already */
  assert_int_equal(cap, 8);
  assert_int_equal(LG_GROW(a, cap, 9, 8), 0);
  assert_int_equal(cap, 16);
  assert_int_equal(LG_GROW(a, cap, 100, 8), 0);
  assert_int_equal(cap, 128);
  for (int i = 0; i < 8; i++)
    assert_int_equal(a[i], i); /* kept across moves */
  free(a);

  /* A capacity its type cannot hold is refused, the old one kept. */
  char *b = NULL;
  uint8_t c8 = 0;
  assert_int_equal(LG_GROW(b, c8, 100, 16), 0);
  assert_int_equal(c8, 128);
  assert_int_equal(LG_GROW(b, c8, 200, 16), -ENOMEM); /* 256 > 255 */
  assert_int_equal(c8, 128);
  b[127] = 'x'; /* still valid */
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_read_file),
      cmocka_unit_test(test_read_file_limits),
      cmocka_unit_test(test_write_atomic),
      cmocka_unit_test(test_strings),
      cmocka_unit_test(test_equal),
      cmocka_unit_test(test_grow),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
