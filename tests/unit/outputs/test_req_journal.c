/* Unit tests: the request journal (lg_req_journal.c): its file, and its
 * writes on libuv's threadpool (coalesced while one is in flight, waited
 * for at close, a failed one ending its requests with the error), on a
 * real libuv loop and a real state directory. */
#include <errno.h>
#include <fcntl.h>
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

#include "core/lg_util.h"
#include "helpers/lg_test.h"
#include "outputs/lg_req_journal.h"

#define FP UINT64_C(0x1234abcd5678ef90)

/* What the callbacks saw, in order: the id, the status, and the journal
 * file's text at that moment (what a crash then would find). */
#define MAX_DONE 16
static struct done {
  uint64_t id;
  int status;
  char file[1024];
} done[MAX_DONE];
static int ndone;
static char path[512];

static void on_done(void *ud, uint64_t id, int status) {
  (void)ud;
  assert_true(ndone < MAX_DONE);
  struct done *d = &done[ndone++];
  d->id = id;
  d->status = status;
  char *text = NULL;
  size_t len = 0;
  d->file[0] = '\0';
  if (lg_util_read_file(path, 1 << 20, &text, &len) == 0)
    snprintf(d->file, sizeof d->file, "%.*s", (int)len, text);
  free(text);
}

static int has_id(const char *file, int64_t id) {
  char want[32];
  snprintf(want, sizeof want, "{\"id\":%lld,", (long long)id);
  return strstr(file, want) != NULL;
}

static const char *setup_dir(const char *name) {
  const char *dir = lg_test_tmpdir("lg_rj");
  snprintf(path, sizeof path, "%s/requests-%s.json", dir, name);
  ndone = 0;
  return dir;
}

static void test_journal_store(void **state) {
  (void)state;
  const char *dir = setup_dir("s3");
  uv_loop_t loop;
  uv_loop_init(&loop);
  char err[256];
  lg_rj_t *j = lg_rj_open(&loop, dir, "s3", err, sizeof err);
  assert_non_null(j);
  lg_rj_entry_t *found = NULL;
  assert_int_equal(lg_rj_take_found(j, &found), 0);
  free(found);
  lg_rj_run_t a[] = {{FP, 0, 30, 4, 0}, {FP + 1, 100, 100, 1, 0}};
  int64_t id1 = lg_rj_add(j, a, 2, "k1\tx", on_done, NULL);
  int64_t id2 = lg_rj_add(j, a, 1, NULL, on_done, NULL);
  assert_true(id1 > 0 && id2 > id1);
  assert_int_equal(ndone, 0); /* never from within lg_rj_add */
  assert_string_equal(lg_rj_note(j, (uint64_t)id1), "k1\tx");
  assert_string_equal(lg_rj_note(j, (uint64_t)id2), "");
  lg_test_run_until_count(&loop, &ndone, 2, 5000, "both written");
  /* Durable when its callback ran: a crash then finds it. */
  assert_int_equal(done[0].id, (uint64_t)id1);
  assert_int_equal(done[0].status, 0);
  assert_true(has_id(done[0].file, id1));
  assert_int_equal(done[1].status, 0);
  assert_true(has_id(done[1].file, id2));
  /* Run 0 of id1 (FP, 0 to 30) acked: a range of another file, or one
   * that holds only part of it, marks nothing. */
  lg_rj_settle_run(j, (uint64_t)id1, FP + 1, 0, 30);
  lg_rj_settle_run(j, (uint64_t)id1, FP, 10, 30);
  lg_rj_settle_run(j, (uint64_t)id1, FP, 0, 40);
  lg_rj_settle(j, (uint64_t)id1, 4);
  assert_non_null(lg_rj_note(j, (uint64_t)id1)); /* 1 of 5 left */
  lg_rj_settle(j, (uint64_t)id2, 4);
  assert_null(lg_rj_note(j, (uint64_t)id2));
  lg_rj_close(j); /* writes the removal */

  j = lg_rj_open(&loop, dir, "s3", err, sizeof err);
  assert_non_null(j);
  size_t n = lg_rj_take_found(j, &found);
  assert_int_equal(n, 1);
  assert_int_equal(found[0].id, (uint64_t)id1);
  assert_int_equal(found[0].nruns, 2);
  assert_int_equal(found[0].runs[0].fp, FP);
  assert_int_equal(found[0].runs[0].last, 30);
  assert_int_equal(found[0].runs[1].first, 100);
  assert_int_equal(found[0].runs[0].acked, 1); /* written at the close */
  assert_int_equal(found[0].runs[1].acked, 0);
  assert_int_equal(found[0].left, 5); /* the count of its records */
  assert_string_equal(found[0].note, "k1\tx");
  lg_rj_entry_free(&found[0]);
  free(found);
  assert_int_equal(lg_rj_take_found(j, &found), 0); /* once */
  free(found);
  /* A second open of the same output shares it (a reload). */
  lg_rj_t *j2 = lg_rj_open(&loop, dir, "s3", err, sizeof err);
  assert_ptr_equal(j2, j);
  lg_rj_close(j2);
  int64_t id3 = lg_rj_add(j, a, 1, "k3", on_done, NULL);
  assert_true(id3 > id1); /* ids go on from the file's */
  lg_test_run_until_count(&loop, &ndone, 3, 5000, "id3 written");
  lg_rj_drop(j, (uint64_t)id1);
  lg_rj_drop(j, (uint64_t)id3);
  lg_rj_close(j);

  /* A name that is not a file name: its characters become '_'. */
  j = lg_rj_open(&loop, dir, "a/b c", err, sizeof err);
  assert_non_null(j);
  assert_true(lg_rj_add(j, a, 1, NULL, on_done, NULL) > 0);
  lg_test_run_until_count(&loop, &ndone, 4, 5000, "a/b c written");
  assert_int_equal(done[3].status, 0);
  lg_rj_close(j);
  char odd[512];
  struct stat st;
  snprintf(odd, sizeof odd, "%s/requests-a_b_c.json", dir);
  assert_int_equal(stat(odd, &st), 0);

  /* A file that is not a journal: set aside, the journal starts empty. */
  lg_test_write_file(path, "{\"version\":1,\"requests\":[{\"id\":");
  j = lg_rj_open(&loop, dir, "s3", err, sizeof err);
  assert_non_null(j);
  assert_int_equal(lg_rj_take_found(j, &found), 0);
  free(found);
  lg_rj_close(j);
  char aside[600];
  snprintf(aside, sizeof aside, "%s.corrupt", path);
  assert_int_equal(stat(aside, &st), 0);
  LG_TEST_LOOP_CLOSE(&loop);
  lg_test_rmtree(dir);
}

/* A file a crash or a disk fault left (cut short, numbers no entry can
 * hold, two requests of one id): set aside with what is wrong and where,
 * and the journal starts empty. */
typedef struct bad_open {
  uv_loop_t *loop;
  const char *dir;
} bad_open_t;

static void open_bad(void *arg) {
  bad_open_t *b = arg;
  char err[256];
  lg_rj_entry_t *found = NULL;
  lg_rj_t *j = lg_rj_open(b->loop, b->dir, "s3", err, sizeof err);
  assert_non_null(j);
  assert_int_equal(lg_rj_take_found(j, &found), 0);
  free(found);
  lg_rj_close(j);
}

static void test_bad_files(void **state) {
  (void)state;
  static const struct {
    const char *text, *why;
  } cases[] = {
      {"{\"version\":1,\"requests\":[{\"id\":", "not valid JSON (at byte"},
      {"{\"version\":2,\"requests\":[]}", "not a version 1 request journal"},
      {"{\"version\":1,\"requests\":[{\"id\":1e300,\"note\":\"\",\"runs\":"
       "[[\"00000000000000aa\",0,1,1]]}]}",
       "request 0 of 1 is malformed"},
      {"{\"version\":1,\"requests\":[{\"id\":3,\"note\":\"\",\"runs\":"
       "[[\"00000000000000aa\",1e300,5e19,4294967296]]}]}",
       "request 0 of 1 is malformed"},
      {"{\"version\":1,\"requests\":[{\"id\":3,\"note\":\"\",\"runs\":"
       "[[\"00000000000000aa\",0,1,1]]},{\"id\":3,\"note\":\"\",\"runs\":"
       "[[\"00000000000000aa\",2,3,1]]}]}",
       "request 1 of 2 is malformed"},
  };
  uv_loop_t loop;
  uv_loop_init(&loop);
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char dir[512]; /* lg_test_stderr_of makes a tmpdir too */
    snprintf(dir, sizeof dir, "%s", setup_dir("s3"));
    lg_test_write_file(path, cases[k].text);
    bad_open_t b = {&loop, dir};
    char *log = lg_test_stderr_of(open_bad, &b);
    if (strstr(log, cases[k].why) == NULL || strstr(log, path) == NULL)
      fail_msg("case %zu: no \"%s\" about %s in: %s", k, cases[k].why, path,
               log);
    free(log);
    char aside[600];
    struct stat st;
    snprintf(aside, sizeof aside, "%s.corrupt", path);
    assert_int_equal(stat(aside, &st), 0);
    lg_test_rmtree(dir);
  }
  LG_TEST_LOOP_CLOSE(&loop);
}

/* Entries added while a write is in flight wait for the next write, which
 * holds all of them: the first callback sees only the first entry in the
 * file, the next ones see every later entry there already (one write for
 * them, not one each). */
static void test_coalesced(void **state) {
  (void)state;
  const char *dir = setup_dir("s3");
  uv_loop_t loop;
  uv_loop_init(&loop);
  char err[256];
  lg_rj_t *j = lg_rj_open(&loop, dir, "s3", err, sizeof err);
  assert_non_null(j);
  lg_rj_run_t a[] = {{FP, 0, 30, 4, 0}};
  int64_t id[4];
  /* The loop does not run between the adds: the first write's result
   * cannot have been taken, so it is in flight for the three others. */
  for (int i = 0; i < 4; i++)
    assert_true((id[i] = lg_rj_add(j, a, 1, "k", on_done, NULL)) > 0);
  lg_test_run_until_count(&loop, &ndone, 4, 5000, "all written");
  for (int i = 0; i < 4; i++) {
    assert_int_equal(done[i].id, (uint64_t)id[i]); /* in add order */
    assert_int_equal(done[i].status, 0);
  }
  assert_true(has_id(done[0].file, id[0]));
  for (int i = 1; i < 4; i++)
    assert_false(has_id(done[0].file, id[i]));
  for (int i = 1; i < 4; i++)
    for (int k = 0; k < 4; k++)
      assert_true(has_id(done[i].file, id[k]));
  /* A removal rides on the next write. */
  lg_rj_drop(j, (uint64_t)id[0]);
  int64_t id5 = lg_rj_add(j, a, 1, "k", on_done, NULL);
  lg_test_run_until_count(&loop, &ndone, 5, 5000, "id5 written");
  assert_true(has_id(done[4].file, id5));
  assert_false(has_id(done[4].file, id[0]));
  lg_rj_close(j);
  LG_TEST_LOOP_CLOSE(&loop);
  lg_test_rmtree(dir);
}

/* The last close waits for the write in flight: the entries in it are in
 * the file when lg_rj_close returns, their callbacks ran with 0; an entry
 * added after that write started was not written: -ECANCELED, and not in
 * the file either. */
static void test_close_waits(void **state) {
  (void)state;
  const char *dir = setup_dir("s3");
  uv_loop_t loop;
  uv_loop_init(&loop);
  char err[256];
  lg_rj_t *j = lg_rj_open(&loop, dir, "s3", err, sizeof err);
  assert_non_null(j);
  lg_rj_run_t a[] = {{FP, 0, 30, 4, 0}};
  int64_t id1 = lg_rj_add(j, a, 1, "k", on_done, NULL);
  int64_t id2 = lg_rj_add(j, a, 1, "k", on_done, NULL);
  assert_true(id1 > 0 && id2 > id1);
  lg_rj_close(j);
  assert_int_equal(ndone, 2);
  assert_int_equal(done[0].id, (uint64_t)id1);
  assert_int_equal(done[0].status, 0);
  assert_int_equal(done[1].id, (uint64_t)id2);
  assert_int_equal(done[1].status, -ECANCELED);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(path, 1 << 20, &text, &len), 0);
  assert_true(has_id(text, id1));
  assert_false(has_id(text, id2));
  free(text);
  /* The write's after-work callback still runs, and only frees it. */
  lg_test_run_for(&loop, 20);
  assert_int_equal(ndone, 2);
  LG_TEST_LOOP_CLOSE(&loop);
  lg_test_rmtree(dir);
}

/* The last reference dropped from within a callback: the journal closes
 * once the callbacks of that write ran, from within its end; the entry
 * added during that write is written by the close (and gets 0), and the
 * file holds it. */
static lg_rj_t *close_in_cb;

static void on_done_close(void *ud, uint64_t id, int status) {
  on_done(ud, id, status);
  if (close_in_cb != NULL) {
    lg_rj_t *j = close_in_cb;
    close_in_cb = NULL;
    lg_rj_close(j);
  }
}

static void test_close_in_callback(void **state) {
  (void)state;
  const char *dir = setup_dir("s3");
  uv_loop_t loop;
  uv_loop_init(&loop);
  char err[256];
  lg_rj_t *j = lg_rj_open(&loop, dir, "s3", err, sizeof err);
  assert_non_null(j);
  lg_rj_run_t a[] = {{FP, 0, 30, 4, 0}};
  int64_t id1 = lg_rj_add(j, a, 1, "k1", on_done_close, NULL);
  int64_t id2 = lg_rj_add(j, a, 1, "k2", on_done, NULL);
  close_in_cb = j;
  lg_test_run_until_count(&loop, &ndone, 2, 5000, "both ended");
  assert_int_equal(done[0].id, (uint64_t)id1);
  assert_int_equal(done[0].status, 0);
  assert_int_equal(done[1].id, (uint64_t)id2);
  assert_int_equal(done[1].status, 0);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(path, 1 << 20, &text, &len), 0);
  assert_true(has_id(text, id1));
  assert_true(has_id(text, id2));
  free(text);
  LG_TEST_LOOP_CLOSE(&loop);
  lg_test_rmtree(dir);
}

/* Runs the loop with stderr (lugger's log) going to `file`; returns what
 * was logged (malloc'd). */
static char *logged_while(uv_loop_t *loop, int want, const char *file) {
  fflush(stderr);
  int saved = dup(2);
  int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(saved >= 0 && fd >= 0);
  dup2(fd, 2);
  close(fd);
  lg_test_run_until_count(loop, &ndone, want, 5000, "writes ended");
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(file, 1 << 20, &text, &len), 0);
  unlink(file);
  return text;
}

static size_t count(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

/* A write that fails (a directory where its temp file goes) ends every
 * entry in it with the error, and they leave the journal: their requests
 * must not be sent. Retries that fail too (one write each, as requests
 * retried with backoff make) are not logged again: one error for the
 * episode. Once the directory is gone, the next add is written, and
 * that is said. */
static void test_write_fails_then_recovers(void **state) {
  (void)state;
  const char *dir = setup_dir("s3");
  char tmp[600], logf[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  snprintf(logf, sizeof logf, "%s/stderr.txt", dir);
  assert_int_equal(mkdir(tmp, 0700), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  char err[256];
  lg_rj_t *j = lg_rj_open(&loop, dir, "s3", err, sizeof err);
  assert_non_null(j);
  lg_rj_run_t a[] = {{FP, 0, 30, 4, 0}};
  int64_t id1 = lg_rj_add(j, a, 1, "k1", on_done, NULL);
  int64_t id2 = lg_rj_add(j, a, 1, "k2", on_done, NULL);
  char *log = logged_while(&loop, 2, logf);
  assert_int_equal(done[0].status, -EISDIR);
  assert_int_equal(done[1].status, -EISDIR);
  assert_null(lg_rj_note(j, (uint64_t)id1)); /* left the journal */
  assert_null(lg_rj_note(j, (uint64_t)id2));
  assert_int_equal(count(log, "\"level\":\"error\""), 1);
  assert_non_null(strstr(log, path));
  assert_non_null(strstr(log, "Is a directory"));
  free(log);
  for (int i = 0; i < 4; i++) { /* the retries, one write each */
    lg_rj_add(j, a, 1, "k1", on_done, NULL);
    log = logged_while(&loop, 3 + i, logf);
    assert_int_equal(done[2 + i].status, -EISDIR);
    assert_string_equal(log, "");
    free(log);
  }
  ndone = 2;
  struct stat st;
  assert_int_equal(stat(path, &st), -1); /* nothing written */
  assert_int_equal(rmdir(tmp), 0);
  int64_t id3 = lg_rj_add(j, a, 1, "k3", on_done, NULL);
  log = logged_while(&loop, 3, logf);
  assert_non_null(strstr(log, "written again after"));
  free(log);
  assert_int_equal(done[2].status, 0);
  assert_true(has_id(done[2].file, id3));
  assert_false(has_id(done[2].file, id1));
  lg_rj_close(j);
  LG_TEST_LOOP_CLOSE(&loop);
  lg_test_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_journal_store),
      cmocka_unit_test(test_bad_files),
      cmocka_unit_test(test_coalesced),
      cmocka_unit_test(test_close_waits),
      cmocka_unit_test(test_close_in_callback),
      cmocka_unit_test(test_write_fails_then_recovers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
