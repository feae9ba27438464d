/*
 * Unit tests: the file output when a failed write cannot be cut back
 * (lg_out_file.c answer_partial and the resume of the next attempt), on
 * a real libuv loop and a real file.
 *
 * The write fails for real: RLIMIT_FSIZE makes writev write up to the
 * limit and then fail with EFBIG, as a full disk does. The cut fails by
 * a link-time seam of this test binary only (CMakeLists.txt:
 * -Wl,--wrap=ftruncate): while `cut_fails` is set, __wrap_ftruncate
 * answers EIO, as a failing disk can. Each test says where every record
 * ended: in the file exactly once and whole, or lost (counted, acked with
 * a negative status) when no dead-letter output takes it. A third test
 * makes the reopen of the path fail for real (ENOTDIR): retried until the
 * path works again; a fourth makes fdatasync fail (-Wl,--wrap=fdatasync)
 * with fsync = "always": acked only after a sync works.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "config/lg_config.h"
#include "core/lg_util.h"
#include "helpers/lg_test.h"
#include "outputs/lg_output.h"

/* ---- the ftruncate seam ------------------------------------------------- */

static volatile int cut_fails; /* read on the threadpool thread */
static volatile int cuts_failed;

int __real_ftruncate(int fd, off_t len);
int __wrap_ftruncate(int fd, off_t len);
int __wrap_ftruncate(int fd, off_t len) {
  if (cut_fails) {
    cuts_failed++;
    errno = EIO;
    return -1;
  }
  return __real_ftruncate(fd, len);
}

/* fdatasync too (-Wl,--wrap=fdatasync): while sync_fails > 0, a sync
 * fails with EIO (and counts down). */
static volatile int sync_fails;

int __real_fdatasync(int fd);
int __wrap_fdatasync(int fd);
int __wrap_fdatasync(int fd) {
  if (sync_fails > 0) {
    sync_fails--;
    errno = EIO;
    return -1;
  }
  return __real_fdatasync(fd);
}

/* ---- fixture ------------------------------------------------------------ */

#define NREC 5
#define REC_LEN 40 /* bytes of each line, "\n" included */
/* The file may grow to 2.5 records: r0 and r1 whole, half of r2. */
#define LIMIT (2 * REC_LEN + REC_LEN / 2)

typedef struct fixture {
  uv_loop_t loop;
  char dir[256];
  char path[512];
  lg_conf_output_t *conf;
  lg_output_t *o;
  int nacks;
  int status[8];
  char lines[NREC][REC_LEN + 1];
  struct rlimit saved;
} fixture_t;

static void on_ack(void *ud, void *ref, int status) {
  fixture_t *f = ud;
  (void)ref;
  assert_true(f->nacks < 8);
  f->status[f->nacks++] = status;
}

static void fixture_open(fixture_t *f, const char *const *extra) {
  memset(f, 0, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "%s", lg_test_tmpdir("lg_file_faults."));
  snprintf(f->path, sizeof f->path, "%s/out.jsonl", f->dir);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  const char *kv[16] = {"path", f->path, "fsync", "never"};
  int n = 4;
  for (int i = 0; extra != NULL && extra[i] != NULL; i++)
    kv[n++] = extra[i];
  kv[n] = NULL;
  char err[512] = "";
  f->conf = lg_config_output_new("f", "file", kv, err, sizeof err);
  if (f->conf == NULL)
    fail_msg("%s", err);
  f->o = lg_output_create(&f->loop, f->conf, 0, on_ack, f, err, sizeof err);
  if (f->o == NULL)
    fail_msg("%s", err);
  for (int i = 0; i < NREC; i++) {
    /* {"n":"r0","pad":"xx...x"}\n, REC_LEN bytes */
    int k = snprintf(f->lines[i], sizeof f->lines[i],
                     "{\"n\":\"r%d\",\"pad\":\"", i);
    while (k < REC_LEN - 3)
      f->lines[i][k++] = 'x';
    memcpy(f->lines[i] + k, "\"}\n", 4);
    assert_int_equal(strlen(f->lines[i]), REC_LEN);
  }
  signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &f->saved), 0);
}

/* The disk is full at LIMIT bytes, and a failed write cannot be cut. */
static void faults_on(fixture_t *f) {
  struct rlimit lim = f->saved;
  lim.rlim_cur = LIMIT;
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  cut_fails = 1;
}

static void faults_off(fixture_t *f) {
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &f->saved), 0);
  cut_fails = 0;
}

static void submit_all(fixture_t *f) {
  char text[NREC * REC_LEN + 1] = "";
  for (int i = 0; i < NREC; i++)
    strcat(text, f->lines[i]);
  assert_int_equal(lg_output_submit_text(f->o, text, strlen(text), (void *)1),
                   0);
}

/* The output file, NUL-terminated (free it). */
static char *file_text(const fixture_t *f) {
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(f->path, 1 << 20, &text, &len), 0);
  return text;
}

static void on_closed(void *ud) { (*(int *)ud)++; }

static void fixture_close(fixture_t *f) {
  faults_off(f);
  int closed = 0;
  lg_output_close(f->o, on_closed, &closed);
  lg_test_run_until_count(&f->loop, &closed, 1, 10000, "the close callback");
  LG_TEST_LOOP_CLOSE(&f->loop);
  lg_config_output_free(f->conf);
  assert_int_equal(lg_test_rmtree(f->dir), 0);
  signal(SIGXFSZ, SIG_DFL);
}

/* ---- tests -------------------------------------------------------------- */

/* One request of r0..r4 stops after 2.5 records and the half record cannot
 * be cut: r0 and r1 are delivered, r2..r4 retried, the retry resuming r2
 * after its bytes already in the file. Once the disk has room, the file
 * holds each record once, whole, and the submission is acked with 0. */
static void test_uncut_write_resumes(void **state) {
  (void)state;
  fixture_t f;
  fixture_open(&f, NULL);
  faults_on(&f);
  submit_all(&f);
  lg_test_run_for(&f.loop, 400); /* several attempts (backoff 100, 200) */
  assert_true(cuts_failed >= 1);
  assert_int_equal(f.nacks, 0); /* r2..r4 unsettled: not acked */
  assert_int_equal(f.o->records_out, 2);
  assert_true(f.o->retries >= 3);
  char *text = file_text(&f);
  char want[NREC * REC_LEN + 1];
  snprintf(want, sizeof want, "%s%s%.*s", f.lines[0], f.lines[1], REC_LEN / 2,
           f.lines[2]);
  assert_string_equal(text, want);
  free(text);

  faults_off(&f);
  lg_test_run_until_count(&f.loop, &f.nacks, 1, 10000, "the ack");
  assert_int_equal(f.status[0], 0);
  assert_int_equal(f.o->records_out, NREC);
  text = file_text(&f);
  want[0] = '\0';
  for (int i = 0; i < NREC; i++)
    strcat(want, f.lines[i]);
  assert_string_equal(text, want);
  free(text);
  fixture_close(&f);
}

/* As above, but with max_retry_time the records still failing are given
 * up (no dead-letter output here: lost, and the submission acked with a
 * negative status) while half of r2 is in the file. The next record must
 * not be glued to that half line: the file holds r0, r1, then s0, all
 * whole. */
static void test_given_up_half_line_is_cut(void **state) {
  (void)state;
  fixture_t f;
  const char *kv[] = {"max_retry_time", "300ms", NULL};
  fixture_open(&f, kv);
  faults_on(&f);
  submit_all(&f);
  lg_test_run_until_count(&f.loop, &f.nacks, 1, 10000, "the give-up ack");
  assert_true(f.status[0] < 0); /* r2..r4 lost: no dead-letter output */
  assert_int_equal(f.o->records_out, 2);
  faults_off(&f);

  static const char s0[] = "{\"n\":\"s0\"}\n";
  assert_int_equal(lg_output_submit_text(f.o, s0, sizeof s0 - 1, (void *)2), 0);
  lg_test_run_until_count(&f.loop, &f.nacks, 2, 10000, "the ack of s0");
  assert_int_equal(f.status[1], 0);
  assert_int_equal(f.o->records_out, 3);
  char *text = file_text(&f);
  char want[NREC * REC_LEN + 1];
  snprintf(want, sizeof want, "%s%s%s", f.lines[0], f.lines[1], s0);
  assert_string_equal(text, want);
  free(text);
  fixture_close(&f);
}

static int acked(void *arg) { return ((fixture_t *)arg)->nacks >= 2; }

/* The file's path cannot be opened when the output reopens it (SIGHUP, as
 * after logrotate): its directory was moved away and a regular file now
 * has the directory's name (open: ENOTDIR). The record sent meanwhile is
 * retried, not acked and not written to the moved file; once the path
 * works again it lands in the new file. No fault seam: real paths. */
static void test_reopen_fails_then_recovers(void **state) {
  (void)state;
  fixture_t f;
  memset(&f, 0, sizeof f);
  snprintf(f.dir, sizeof f.dir, "%s", lg_test_tmpdir("lg_file_faults."));
  char sub[300], old[300], oldfile[600];
  snprintf(sub, sizeof sub, "%s/sub", f.dir);
  snprintf(old, sizeof old, "%s/sub.old", f.dir);
  snprintf(oldfile, sizeof oldfile, "%s/out.jsonl", old);
  snprintf(f.path, sizeof f.path, "%s/out.jsonl", sub);
  assert_int_equal(uv_loop_init(&f.loop), 0);
  const char *kv[] = {"path", f.path, "fsync", "never", NULL};
  char err[512] = "";
  f.conf = lg_config_output_new("f", "file", kv, err, sizeof err);
  if (f.conf == NULL)
    fail_msg("%s", err);
  f.o = lg_output_create(&f.loop, f.conf, 0, on_ack, &f, err, sizeof err);
  if (f.o == NULL)
    fail_msg("%s", err);
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &f.saved), 0);

  static const char r0[] = "{\"n\":\"r0\"}\n", r1[] = "{\"n\":\"r1\"}\n";
  assert_int_equal(lg_output_submit_text(f.o, r0, sizeof r0 - 1, (void *)1), 0);
  lg_test_run_until_count(&f.loop, &f.nacks, 1, 10000, "the ack of r0");
  assert_int_equal(rename(sub, old), 0);
  lg_test_write_file(sub, "not a directory\n");
  lg_output_reopen(f.o);
  assert_int_equal(lg_output_submit_text(f.o, r1, sizeof r1 - 1, (void *)2), 0);
  lg_test_run_for(&f.loop, 400);
  assert_int_equal(f.nacks, 1); /* r1 retried while the path fails */
  assert_true(f.o->retries >= 1);
  assert_int_equal(f.o->records_out, 1);

  assert_int_equal(unlink(sub), 0); /* the path works again */
  lg_test_run_until(&f.loop, acked, &f, 10000, "the ack of r1");
  assert_int_equal(f.status[1], 0);
  assert_int_equal(f.o->records_out, 2);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(oldfile, 1 << 20, &text, &len), 0);
  assert_string_equal(text, r0); /* nothing of r1 in the moved file */
  free(text);
  text = file_text(&f);
  assert_string_equal(text, r1);
  free(text);
  fixture_close(&f);
}

/* fsync = "always": a record is acked only after its fsync worked. Two
 * fsyncs fail (EIO): the request is not acked, and is written again
 * (at-least-once: its bytes were not cut, so copies may repeat); once an
 * fsync works it is acked with 0 and the file holds whole lines only, each
 * of them r0, at least once and at most once per attempt. */
static void test_fsync_failure_retried(void **state) {
  (void)state;
  fixture_t f;
  fixture_open(&f, NULL);
  /* fixture_open made a fsync = "never" output: replace it. */
  int closed = 0;
  lg_output_close(f.o, on_closed, &closed);
  lg_test_run_until_count(&f.loop, &closed, 1, 10000, "the first close");
  lg_config_output_free(f.conf);
  const char *kv[] = {"path", f.path, "fsync", "always", NULL};
  char err[512] = "";
  f.conf = lg_config_output_new("f", "file", kv, err, sizeof err);
  if (f.conf == NULL)
    fail_msg("%s", err);
  f.o = lg_output_create(&f.loop, f.conf, 0, on_ack, &f, err, sizeof err);
  if (f.o == NULL)
    fail_msg("%s", err);

  sync_fails = 2;
  static const char r0[] = "{\"n\":\"r0\"}\n";
  assert_int_equal(lg_output_submit_text(f.o, r0, sizeof r0 - 1, (void *)1), 0);
  lg_test_run_until_count(&f.loop, &f.nacks, 1, 10000, "the ack");
  assert_int_equal(sync_fails, 0); /* acked only after both failed */
  assert_int_equal(f.status[0], 0);
  assert_int_equal(f.o->records_out, 1);
  assert_true(f.o->retries >= 2);
  char *text = file_text(&f);
  size_t n = strlen(text), copies = n / (sizeof r0 - 1);
  assert_int_equal(n % (sizeof r0 - 1), 0);
  assert_true(copies >= 1 && copies <= 3);
  for (size_t i = 0; i < copies; i++)
    assert_memory_equal(text + i * (sizeof r0 - 1), r0, sizeof r0 - 1);
  free(text);
  fixture_close(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uncut_write_resumes),
      cmocka_unit_test(test_given_up_half_line_is_cut),
      cmocka_unit_test(test_reopen_fails_then_recovers),
      cmocka_unit_test(test_fsync_failure_retried),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
