/* Unit tests: the checkpoint store when the state directory's disk fails.
 *
 * Link-time seams (-Wl,--wrap=write,--wrap=fsync,--wrap=rename, this test
 * binary only): while a fault is armed, __wrap_write, __wrap_fsync and
 * __wrap_rename answer for the file whose path ends with the armed suffix
 * (the temp file, the journal, the state directory itself) as a failing
 * disk would: EIO from fsync or rename, a short write followed by ENOSPC.
 * Every other call goes to the real function, on real files in a fresh
 * temporary directory per test.
 *
 * What is checked, for each fault: the save reports it (errno and step),
 * the last saved checkpoints.json stays whole, the error is logged once
 * for the episode (not once per retry) and counted in
 * lugger_checkpoint_save_failures_total, the save is retried until it
 * works, and a reopen (a restart) resumes at the newest offset that was
 * made durable, never past what was saved or journaled whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "helpers/lg_test.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/lg_metrics.h"
#include "core/lg_util.h"
#include "sources/tail/lg_checkpoint.h"

static char root[256];

/* ---- the seams ---- */

/* The armed fault: calls on a path ending with `fault_suffix` fail. */
static const char *fault_suffix;
static int fail_fsync, fail_rename, short_write;
static int fsync_calls_failed, rename_calls_failed, writes_cut;

static int fd_matches(int fd) {
  if (fault_suffix == NULL)
    return 0;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0)
    return 0;
  path[n] = '\0';
  size_t k = strlen(fault_suffix);
  return (size_t)n >= k && strcmp(path + n - k, fault_suffix) == 0;
}

ssize_t __real_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
ssize_t __wrap_write(int fd, const void *buf, size_t n) {
  if (!short_write || n < 2 || !fd_matches(fd))
    return __real_write(fd, buf, n);
  /* A disk that fills mid-write: the first half lands, the rest does not
   * (the next write then fails with ENOSPC). */
  if (short_write == 1) {
    short_write = 2;
    writes_cut++;
    return __real_write(fd, buf, n / 2);
  }
  errno = ENOSPC;
  return -1;
}

int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __wrap_fsync(int fd) {
  if (fail_fsync && fd_matches(fd)) {
    fsync_calls_failed++;
    errno = EIO;
    return -1;
  }
  return __real_fsync(fd);
}

int __real_rename(const char *from, const char *to);
int __wrap_rename(const char *from, const char *to);
int __wrap_rename(const char *from, const char *to) {
  if (fail_rename) {
    rename_calls_failed++;
    errno = EIO;
    return -1;
  }
  return __real_rename(from, to);
}

static void disarm(void) {
  fault_suffix = NULL;
  fail_fsync = fail_rename = short_write = 0;
}

/* ---- helpers ---- */

static int setup(void **state) {
  (void)state;
  snprintf(root, sizeof root, "%s", lg_test_tmpdir("lg_cpf_"));
  disarm();
  fsync_calls_failed = rename_calls_failed = writes_cut = 0;
  return 0;
}

static void capture_restore(void);

static int teardown(void **state) {
  (void)state;
  disarm();
  capture_restore(); /* a failed assertion left stderr captured */
  assert_int_equal(lg_test_rmtree(root), 0);
  return 0;
}

/* The whole file at `path` (malloc'd), or "" when there is none. */
static char *slurp(const char *path) {
  char *buf = NULL;
  size_t len = 0;
  if (lg_util_read_file(path, 0, &buf, &len) != 0)
    return strdup("");
  return buf;
}

/* stderr (lugger's log) into a file while a fault is armed. */
static char log_path[300];
static int saved_stderr = -1;
static void capture_begin(void) {
  snprintf(log_path, sizeof log_path, "%s/stderr.txt", root);
  fflush(stderr);
  saved_stderr = dup(2);
  int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  dup2(fd, 2);
  close(fd);
}
static void capture_restore(void) {
  if (saved_stderr < 0)
    return;
  fflush(stderr);
  dup2(saved_stderr, 2);
  close(saved_stderr);
  saved_stderr = -1;
}
static char *capture_end(void) {
  capture_restore();
  char *text = slurp(log_path);
  unlink(log_path);
  return text;
}

static size_t count(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

static lg_checkpoint_t *open_ok(const char *dir) {
  char err[256] = "";
  lg_checkpoint_t *c = lg_checkpoint_open(dir, err, sizeof err);
  if (c == NULL)
    fail_msg("lg_checkpoint_open(%s): %s", dir, err);
  return c;
}

static int64_t failures_metric(void) {
  return lg_metric_get(lg_metrics_counter(
      "lugger_checkpoint_save_failures_total",
      "Checkpoint saves that failed (state_dir full, read-only, I/O "
      "errors); each is retried.",
      NULL));
}

/* One entry, offset `off`. */
static void set_off(lg_checkpoint_t *c, uint64_t off) {
  lg_checkpoint_entry_t e = {"/var/log/a.log", 1, 2, 3, 4, off, 0};
  assert_int_equal(lg_checkpoint_set(c, &e), 0);
}

static uint64_t reopened_offset(const char *dir) {
  lg_checkpoint_t *c = open_ok(dir);
  const lg_checkpoint_entry_t *e = lg_checkpoint_find(c, 1, 2);
  assert_non_null(e);
  uint64_t off = e->offset;
  lg_checkpoint_close(c);
  return off;
}

/* Saves failing `nfail` times with a fault armed by `arm`, then working:
 * the expectations shared by every fault of the store's save. */
static void failing_saves(const char *sub, void (*arm)(void),
                          const char *want_step) {
  char dir[300], file[320], tmp[330];
  snprintf(dir, sizeof dir, "%s/%s", root, sub);
  snprintf(file, sizeof file, "%s/checkpoints.json", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", file);
  lg_checkpoint_t *c = open_ok(dir);
  set_off(c, 100);
  assert_int_equal(lg_checkpoint_save(c), 0);
  char *good = slurp(file);
  int64_t m0 = failures_metric();

  arm();
  capture_begin();
  for (int i = 1; i <= 5; i++) {
    set_off(c, 100 + (uint64_t)i * 10);
    int rc = lg_checkpoint_save(c);
    assert_true(rc < 0);
    /* The last good store is untouched, and no temp file is left. */
    char *now = slurp(file);
    assert_string_equal(now, good);
    free(now);
    struct stat st;
    assert_int_equal(stat(tmp, &st), -1);
  }
  char *log = capture_end();
  /* Once for the episode, naming the file, the step and the errno. */
  assert_int_equal(count(log, "\"level\":\"error\""), 1);
  assert_non_null(strstr(log, file));
  assert_non_null(strstr(log, want_step));
  assert_non_null(
      strstr(log, strerror(fail_rename || fail_fsync ? EIO : ENOSPC)));
  free(log);
  assert_int_equal(failures_metric() - m0, 5);

  /* A kill during the fault: the restart finds the last good store and
   * the journal's changes after it (offset 150, journaled whole). */
  assert_int_equal(reopened_offset(dir), 150);

  /* The disk works again: the next save writes the current offsets. */
  disarm();
  capture_begin();
  assert_int_equal(lg_checkpoint_save(c), 0);
  log = capture_end();
  assert_non_null(strstr(log, "saved again after 5 failed attempts"));
  free(log);
  char *now = slurp(file);
  assert_non_null(strstr(now, "\"offset\":150"));
  free(now);
  free(good);
  lg_checkpoint_close(c);
  assert_int_equal(reopened_offset(dir), 150);
}

static void arm_fsync_tmp(void) {
  fault_suffix = "/checkpoints.json.tmp";
  fail_fsync = 1;
}

static void arm_rename(void) { fail_rename = 1; }

static void arm_short_tmp(void) {
  fault_suffix = "/checkpoints.json.tmp";
  short_write = 1;
}

/* fsync(2) of the temp file answers EIO. */
static void test_fsync_eio(void **state) {
  (void)state;
  failing_saves("fsync", arm_fsync_tmp, "fsync: Input/output error");
  assert_true(fsync_calls_failed >= 5);
}

/* rename(2) over the store answers EIO. */
static void test_rename_eio(void **state) {
  (void)state;
  failing_saves("rename", arm_rename, "rename: Input/output error");
  assert_true(rename_calls_failed >= 5);
}

/* The temp file's write is cut short, then ENOSPC: the half-written temp
 * file never replaces the store. */
static void test_short_write_store(void **state) {
  (void)state;
  failing_saves("short", arm_short_tmp, "write: No space left on device");
  assert_true(writes_cut >= 1);
}

/* fsync(2) of the state directory (which makes the rename durable)
 * answers EIO: the save is not durable, so it counts as failed (logged once,
 * retried, the journal kept), while the file itself is the new one. */
static void test_dir_fsync_eio(void **state) {
  (void)state;
  char dir[300], file[320];
  snprintf(dir, sizeof dir, "%s/dirsync", root);
  snprintf(file, sizeof file, "%s/checkpoints.json", dir);
  lg_checkpoint_t *c = open_ok(dir);
  set_off(c, 100);
  assert_int_equal(lg_checkpoint_save(c), 0);
  int64_t m0 = failures_metric();

  fault_suffix = "/dirsync";
  fail_fsync = 1;
  capture_begin();
  for (int i = 1; i <= 5; i++) {
    set_off(c, 100 + (uint64_t)i * 10);
    assert_int_equal(lg_checkpoint_save(c), -EIO);
  }
  char *log = capture_end();
  /* One line for the episode, not one per save. */
  assert_int_equal(
      count(log, "\"level\":\"error\"") + count(log, "\"level\":\"warn\""), 1);
  assert_non_null(strstr(log, "fsync of directory: Input/output error"));
  assert_non_null(strstr(log, dir));
  free(log);
  assert_int_equal(failures_metric() - m0, 5);
  /* A change after the last failed save, then a kill: whichever store
   * the disk kept (the directory was not synced; here the rename stayed),
   * the journal's line for it applies on top. */
  set_off(c, 155);
  assert_int_equal(reopened_offset(dir), 155);

  disarm();
  capture_begin();
  set_off(c, 160);
  assert_int_equal(lg_checkpoint_save(c), 0);
  log = capture_end();
  assert_non_null(strstr(log, "saved again after 5 failed attempts"));
  free(log);
  lg_checkpoint_close(c);
  assert_int_equal(reopened_offset(dir), 160);
}

/* The journal's append is cut short by a full disk: the cut line is
 * skipped at the next open (the whole lines before it apply: an older
 * offset, never a newer one than was acked), the journal stops with one
 * warning, and the next save that works restarts it: changes after that
 * survive a kill again. */
static void test_journal_short_write(void **state) {
  (void)state;
  char dir[300], jfile[320];
  snprintf(dir, sizeof dir, "%s/jshort", root);
  snprintf(jfile, sizeof jfile, "%s/checkpoints.journal", dir);
  lg_checkpoint_t *c = open_ok(dir);
  set_off(c, 100);
  assert_int_equal(lg_checkpoint_save(c), 0);
  set_off(c, 200); /* journaled whole */

  fault_suffix = "/checkpoints.journal";
  short_write = 1;
  capture_begin();
  set_off(c, 300); /* cut short */
  set_off(c, 400); /* the journal is off: in memory only */
  set_off(c, 500);
  char *log = capture_end();
  assert_int_equal(writes_cut, 1);
  assert_int_equal(count(log, "\"level\":\"warn\""), 1);
  assert_non_null(strstr(log, "checkpoints.journal"));
  free(log);
  char *j = slurp(jfile);
  assert_true(strlen(j) > 0 && j[strlen(j) - 1] != '\n');
  free(j);
  /* Killed now: the store (100) plus the whole journal line (200). */
  assert_int_equal(reopened_offset(dir), 200);

  disarm();
  assert_int_equal(lg_checkpoint_save(c), 0);
  j = slurp(jfile);
  assert_string_equal(j, ""); /* emptied and open again */
  free(j);
  set_off(c, 600);
  j = slurp(jfile);
  assert_non_null(strstr(j, "\"offset\":600"));
  free(j);
  lg_checkpoint_close(c); /* no save: as if killed */
  assert_int_equal(reopened_offset(dir), 600);
}

/* The journal stops (a write cut short) while a background save is being
 * written: once that save has landed the journal is opened again, emptied,
 * and the lines written whole after the save's snapshot are written back
 * into it (not the line cut short), so that a kill then still resumes
 * past the snapshot, and the lines after it replay. */
static void test_journal_stops_during_async_save(void **state) {
  (void)state;
  char dir[300], jfile[320];
  snprintf(dir, sizeof dir, "%s/jasync", root);
  snprintf(jfile, sizeof jfile, "%s/checkpoints.journal", dir);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  lg_checkpoint_t *c = open_ok(dir);
  set_off(c, 100);
  assert_int_equal(lg_checkpoint_save(c), 0);
  set_off(c, 200);
  assert_int_equal(lg_checkpoint_save_async(c, &loop), 0); /* snapshot: 200 */
  set_off(c, 300); /* after the snapshot, journaled whole */
  fault_suffix = "/checkpoints.journal";
  short_write = 1;
  capture_begin();
  set_off(c, 400); /* cut short: the journal stops */
  char *log = capture_end();
  free(log);
  disarm();
  assert_int_equal(writes_cut, 1);
  capture_begin();
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* the save lands */
  log = capture_end();
  assert_non_null(strstr(log, "checkpoints.journal"));
  free(log);
  char *j = slurp(jfile);
  assert_non_null(strstr(j, "\"offset\":300"));
  assert_true(j[strlen(j) - 1] == '\n'); /* not the line cut short */
  free(j);
  assert_int_equal(reopened_offset(dir), 300);
  set_off(c, 500);        /* a whole line of its own, replayed after a kill */
  lg_checkpoint_close(c); /* no save: as if killed */
  assert_int_equal(reopened_offset(dir), 500);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A kill while a landed background save empties the journal: the lines
 * written since the save's snapshot must survive it. They used to be
 * written back after an ftruncate of the journal, so a kill between the
 * two calls lost them and the restart read again what they had acked
 * (the journal's own write failing there stands in for the kill). Now a
 * new journal holding them is renamed over the old one: the old journal's
 * writes are never needed after the snapshot. */
static void test_window_survives_journal_reset(void **state) {
  (void)state;
  char dir[300], jfile[320];
  snprintf(dir, sizeof dir, "%s/jreset", root);
  snprintf(jfile, sizeof jfile, "%s/checkpoints.journal", dir);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  lg_checkpoint_t *c = open_ok(dir);
  set_off(c, 100);
  assert_int_equal(lg_checkpoint_save(c), 0);
  set_off(c, 200);
  assert_int_equal(lg_checkpoint_save_async(c, &loop), 0); /* snapshot: 200 */
  set_off(c, 300); /* after the snapshot: the window */
  fault_suffix = "/checkpoints.journal";
  short_write = 1; /* the journal itself takes no whole write now */
  capture_begin();
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* the save lands */
  char *log = capture_end();
  free(log);
  disarm();
  lg_checkpoint_close(c);                      /* no save: as if killed */
  assert_int_equal(reopened_offset(dir), 300); /* was 200: the window lost */
  assert_int_equal(writes_cut, 0);
  char *j = slurp(jfile);
  assert_non_null(strstr(j, "\"offset\":300"));
  free(j);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_fsync_eio, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rename_eio, setup, teardown),
      cmocka_unit_test_setup_teardown(test_short_write_store, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dir_fsync_eio, setup, teardown),
      cmocka_unit_test_setup_teardown(test_journal_short_write, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_journal_stops_during_async_save,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_window_survives_journal_reset, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
