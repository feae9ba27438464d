/* Unit tests: lg_atomic_file (a file replaced by libuv's threadpool, one
 * write at a time, coalescing), on a real libuv loop and real files: what
 * `done` sees in the file, how asks during a write become one write, a
 * wait from the loop thread (also from within `done`), failures, and a
 * destroy from within `done` and with a write in flight. */
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

#include "core/lg_atomic_file.h"
#include "core/lg_util.h"
#include "helpers/lg_test.h"

/* The owner: a counter that is the content, and what `done` saw. */
static struct owner {
  int value; /* the content is "v=<value>" */
  int fills; /* fill calls */
  int fail_fill;
  int ndone;
  int rc[8];
  const char *step[8];
  char seen[8][32]; /* the file's text when done ran */
  /* In done: ask again (once), wait, or destroy. */
  int ask_in_done, wait_in_done, destroy_in_done;
  lg_atomic_file_t *f;
  uv_loop_t *loop;
} o;
static char dir[256], path[512];

static int fill(void *ud, lg_buf_t *b) {
  assert_ptr_equal(ud, &o);
  o.fills++;
  if (o.fail_fill)
    return -ENOMEM;
  return lg_buf_appendf(b, "v=%d", o.value);
}

static void done(void *ud, int rc, const char *step) {
  assert_ptr_equal(ud, &o);
  assert_true(o.ndone < 8);
  int k = o.ndone++;
  o.rc[k] = rc;
  o.step[k] = step;
  char *text = NULL;
  size_t len = 0;
  o.seen[k][0] = '\0';
  if (lg_util_read_file(path, 1024, &text, &len) == 0)
    snprintf(o.seen[k], sizeof o.seen[k], "%.*s", (int)len, text);
  free(text);
  if (o.ask_in_done) {
    o.ask_in_done = 0;
    o.value++;
    assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
    assert_int_equal(o.fills, k + 1); /* not from within done */
  }
  if (o.wait_in_done) {
    o.wait_in_done = 0;
    lg_atomic_file_wait(o.f); /* the write just asked for, nested */
  }
  if (o.destroy_in_done) {
    o.destroy_in_done = 0;
    lg_atomic_file_destroy(o.f);
    o.f = NULL;
  }
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "%s", lg_test_tmpdir("lg_afile_"));
  snprintf(path, sizeof path, "%s/state.json", dir);
  memset(&o, 0, sizeof o);
  o.loop = malloc(sizeof *o.loop);
  assert_int_equal(uv_loop_init(o.loop), 0);
  o.f = lg_atomic_file_create(dir, path, 0600, fill, done, &o);
  assert_non_null(o.f);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  lg_atomic_file_destroy(o.f);
  uv_run(o.loop, UV_RUN_DEFAULT); /* after-work callbacks that only free */
  LG_TEST_LOOP_CLOSE(o.loop);
  free(o.loop);
  return lg_test_rmtree(dir);
}

/* A write: fill runs from within the ask, done on the loop once the file
 * holds the content; asks during it become one write, with the content
 * of when it starts. */
static void test_write_and_coalesce(void **state) {
  (void)state;
  assert_int_equal(lg_atomic_file_busy(o.f), 0);
  o.value = 1;
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
  assert_int_equal(o.fills, 1);
  assert_int_equal(lg_atomic_file_busy(o.f), 1);
  for (o.value = 2; o.value <= 4; o.value++)
    assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
  assert_int_equal(o.fills, 1); /* waiting for the write in flight */
  assert_int_equal(o.ndone, 0); /* never from within the ask */
  lg_test_run_until_count(o.loop, &o.ndone, 2, 5000, "two writes");
  assert_int_equal(o.fills, 2);
  assert_int_equal(o.rc[0], 0);
  assert_string_equal(o.seen[0], "v=1");
  assert_int_equal(o.rc[1], 0);
  assert_string_equal(o.seen[1], "v=5");
  lg_test_run_for(o.loop, 20);
  assert_int_equal(o.ndone, 2);
  assert_int_equal(lg_atomic_file_busy(o.f), 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0077, 0); /* 0600 */
}

/* An ask from within done starts once done returned. */
static void test_ask_in_done(void **state) {
  (void)state;
  o.ask_in_done = 1;
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
  lg_test_run_until_count(o.loop, &o.ndone, 2, 5000, "the write asked in done");
  assert_string_equal(o.seen[0], "v=0");
  assert_string_equal(o.seen[1], "v=1");
}

/* A wait blocks until the write in flight and the one asked for during it
 * have ended, their done running from within; also from within done. */
static void test_wait(void **state) {
  (void)state;
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
  o.value = 1;
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
  lg_atomic_file_wait(o.f);
  assert_int_equal(o.ndone, 2);
  assert_string_equal(o.seen[1], "v=1");
  assert_int_equal(lg_atomic_file_busy(o.f), 0);
  lg_atomic_file_wait(o.f); /* nothing in flight: returns */
  assert_int_equal(o.ndone, 2);

  o.ask_in_done = o.wait_in_done = 1;
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
  lg_atomic_file_wait(o.f);
  assert_int_equal(o.ndone, 4);
  assert_string_equal(o.seen[3], "v=2");
  lg_test_run_for(o.loop, 20); /* the after-work callbacks only free */
  assert_int_equal(o.ndone, 4);
}

/* Failures: the I/O's step reaches done and the file stays; a fill that
 * fails at the ask is returned (no done), one that fails for a write
 * asked during another reaches done as "encode". */
static void test_failures(void **state) {
  (void)state;
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  assert_int_equal(mkdir(tmp, 0700), 0);
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
  lg_test_run_until_count(o.loop, &o.ndone, 1, 5000, "failed write");
  assert_int_equal(o.rc[0], -EISDIR);
  assert_string_equal(o.step[0], "create temp file");
  assert_string_equal(o.seen[0], ""); /* no file */
  assert_int_equal(rmdir(tmp), 0);

  o.fail_fill = 1;
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), -ENOMEM);
  assert_int_equal(lg_atomic_file_busy(o.f), 0);
  o.fail_fill = 0;
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
  o.fail_fill = 1;
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0); /* asked */
  lg_test_run_until_count(o.loop, &o.ndone, 3, 5000, "write, then encode");
  assert_int_equal(o.rc[1], 0);
  assert_string_equal(o.seen[1], "v=0");
  assert_int_equal(o.rc[2], -ENOMEM);
  assert_string_equal(o.step[2], "encode");
  assert_int_equal(lg_atomic_file_busy(o.f), 0);
}

/* A destroy from within done frees it once done returned, even with a
 * write asked for (dropped); a destroy with a write in flight waits for
 * its I/O, and its done does not run. */
static void test_destroy(void **state) {
  (void)state;
  o.destroy_in_done = 1;
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0); /* asked */
  lg_test_run_until_count(o.loop, &o.ndone, 1, 5000, "done destroys");
  assert_null(o.f);
  assert_int_equal(o.fills, 1);

  o.f = lg_atomic_file_create(dir, path, 0600, fill, done, &o);
  assert_non_null(o.f);
  o.value = 7;
  assert_int_equal(lg_atomic_file_write(o.f, o.loop), 0);
  lg_atomic_file_destroy(o.f);
  o.f = NULL;
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(path, 1024, &text, &len), 0);
  assert_string_equal(text, "v=7"); /* written before destroy returned */
  free(text);
  lg_test_run_for(o.loop, 20);
  assert_int_equal(o.ndone, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_write_and_coalesce, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ask_in_done, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wait, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failures, setup, teardown),
      cmocka_unit_test_setup_teardown(test_destroy, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
