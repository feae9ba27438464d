/* Unit tests: lg_output with the file and stdout outputs, on a real libuv
 * loop, real files and real pipes. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "config/lg_config.h"
#include "core/lg_buf.h"
#include "helpers/lg_test.h"
#include "outputs/lg_output.h"

#define MAX_ACKS 4096

typedef struct acks {
  int n;
  uintptr_t refs[MAX_ACKS];
  int status[MAX_ACKS];
} acks_t;

static void on_ack(void *ud, void *ref, int status) {
  acks_t *a = ud;
  assert_true(a->n < MAX_ACKS);
  a->refs[a->n] = (uintptr_t)ref;
  a->status[a->n] = status;
  a->n++;
}

static char tmpdir[256];

static int setup_tmp(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "%s", lg_test_tmpdir("lg_test_output."));
  return 0;
}

static int teardown_tmp(void **state) {
  (void)state;
  assert_int_equal(lg_test_rmtree(tmpdir), 0);
  return 0;
}

static const char *tmp(const char *name) {
  static char p[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
  return p[k];
}

/* An output config as the loader makes it, through lg_config_output_new:
 * every option from its default or from `kv`. */
static lg_conf_output_t *make_conf(const char *type, const char *const *kv) {
  char err[512] = "";
  lg_conf_output_t *c = lg_config_output_new("t", type, kv, err, sizeof err);
  if (c == NULL) {
    print_error("lg_config_output_new: %s\n", err);
    fail();
  }
  return c;
}

static void conf_free(lg_conf_output_t *c) { lg_config_output_free(c); }

static void keepalive_cb(uv_timer_t *t) { (void)t; }

/* The file output's housekeeping timer does not keep a loop alive (in the
 * collector, sources do); tests that wait for it start this. */
static void keepalive(uv_loop_t *loop, uv_timer_t *t) {
  uv_timer_init(loop, t);
  uv_timer_start(t, keepalive_cb, 5, 5);
}

static void on_closed(void *ud) { (*(int *)ud)++; }

/* Closes `o`, waits for its close callback, then closes the loop. */
static void close_all(uv_loop_t *loop, lg_output_t *o) {
  int closed = 0;
  lg_output_close(o, on_closed, &closed);
  lg_test_run_until_count(loop, &closed, 1, 5000, "the close callback");
  LG_TEST_LOOP_CLOSE(loop);
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  if (len != NULL)
    *len = n;
  return buf;
}

static void assert_file(const char *path, const char *want) {
  char *got = slurp(path, NULL);
  if (got == NULL) {
    print_error("%s: %s\n", path, strerror(errno));
    fail();
  }
  assert_string_equal(got, want);
}

static lg_output_t *open_file_output(uv_loop_t *loop, lg_conf_output_t *c,
                                     acks_t *a) {
  char err[512] = "";
  lg_output_t *o = lg_output_create(loop, c, 3, on_ack, a, err, sizeof err);
  if (o == NULL) {
    print_error("create: %s\n", err);
    fail();
  }
  assert_int_equal(o->index, 3);
  return o;
}

/* ---- registry -------------------------------------------------------- */

static void test_registry(void **state) {
  (void)state;
  assert_ptr_equal(lg_output_type_find("file"), &lg__output_file);
  assert_ptr_equal(lg_output_type_find("stdout"), &lg__output_stdout);
  assert_null(lg_output_type_find("kafak"));
  int n = 0;
  for (; lg_output_types[n] != NULL; n++) {
    const lg_output_type_t *t = lg_output_types[n];
    assert_non_null(t->init);
    assert_non_null(t->send);
    assert_non_null(t->close);
    assert_true(t->conf_size >= sizeof(lg_out_limits_t));
    assert_true(lg_opt_find(t->options, "max_batch_size") >= 0);
    assert_true(lg_opt_find(t->options, "max_retry_time") >= 0);
    for (size_t i = 0; t->options[i].name != NULL; i++)
      assert_non_null(t->options[i].doc);
  }
  assert_true(n >= 2);
}

/* The README's output option tables are exactly what the option tables
 * generate (`lugger check --options-markdown`). */
static void test_readme_options(void **state) {
  (void)state;
  const char *text = lg_test_readme();
  const char *b = strstr(text, "<!-- output options: begin");
  assert_non_null(b);
  b = strchr(b, '\n');
  assert_non_null(b);
  b++;
  const char *e = strstr(b, "<!-- output options: end -->");
  assert_non_null(e);
  lg_buf_t want = LG_BUF_INIT;
  assert_int_equal(lg_output_options_markdown(&want), 0);
  if ((size_t)(e - b) != want.len || memcmp(b, want.data, want.len) != 0)
    fail_msg("README.md's output option tables differ from the code's; "
             "regenerate them with `lugger check --options-markdown`");
  lg_buf_free(&want);
}

/* ---- file ------------------------------------------------------------ */

static void test_file_in_order(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *path = tmp("sub/dir/out.jsonl");
  const char *kv[] = {"path", path, "mode", "0600", NULL};
  lg_conf_output_t *c = make_conf("file", kv);
  acks_t a = {0};
  lg_output_t *o = open_file_output(&loop, c, &a);
  const lg_optval_t *v = lg_output_opt(o, "fsync");
  assert_string_equal(v->s, "interval");
  assert_null(lg_output_opt(o, "nope"));

  /* Chunks stay valid until acked: keep them in static storage. */
  static char chunks[300][32];
  char want[300 * 32] = "";
  for (int i = 0; i < 300; i++) {
    snprintf(chunks[i], sizeof chunks[i], "{\"n\":%d}\n%s", i,
             i % 3 == 0 ? "{\"x\":1}\n" : "");
    strcat(want, chunks[i]);
    assert_int_equal(lg_output_submit_text(o, chunks[i], strlen(chunks[i]),
                                           (void *)(uintptr_t)(i + 1)),
                     0);
  }
  lg_test_run_until_count(&loop, &a.n, 300, 5000, "acks");
  assert_int_equal(a.n, 300);
  for (int i = 0; i < 300; i++) {
    assert_int_equal(a.refs[i], i + 1);
    assert_int_equal(a.status[i], 0);
  }
  assert_file(path, want);
  assert_int_equal(o->records_out, 400);
  assert_int_equal(o->bytes_out, strlen(want));
  assert_int_equal(o->errors, 0);
  assert_int_equal(o->retries, 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);

  close_all(&loop, o);
  conf_free(c);
}

static void test_file_cuts_partial_line(void **state) {
  (void)state;
  const char *path = tmp("crash.jsonl");
  FILE *f = fopen(path, "w");
  fputs("{\"a\":1}\n{\"b\":2}\n{\"c\":", f);
  fclose(f);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *kv[] = {"path", path, NULL};
  lg_conf_output_t *c = make_conf("file", kv);
  acks_t a = {0};
  lg_output_t *o = open_file_output(&loop, c, &a);
  /* Cut at open, before anything is written. */
  assert_file(path, "{\"a\":1}\n{\"b\":2}\n");
  lg_output_submit_text(o, "{\"d\":4}\n", 8, (void *)1);
  lg_test_run_until_count(&loop, &a.n, 1, 5000, "acks");
  assert_int_equal(a.n, 1);
  assert_file(path, "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n");
  close_all(&loop, o);
  conf_free(c);

  /* No newline at all: nothing of it is a whole line. A file that ends
   * with "\n" is left alone. Both across a 64 KiB read block. */
  f = fopen(path, "w");
  for (int i = 0; i < 100000; i++)
    fputc('x', f);
  fclose(f);
  assert_int_equal(uv_loop_init(&loop), 0);
  c = make_conf("file", kv);
  o = open_file_output(&loop, c, &a);
  assert_file(path, "");
  close_all(&loop, o);
  conf_free(c);

  f = fopen(path, "w");
  fputs("{\"a\":1}\n", f);
  for (int i = 0; i < 100000; i++)
    fputc('y', f);
  fclose(f);
  assert_int_equal(uv_loop_init(&loop), 0);
  c = make_conf("file", kv);
  o = open_file_output(&loop, c, &a);
  assert_file(path, "{\"a\":1}\n");
  close_all(&loop, o);
  conf_free(c);
}

static void test_file_rotation(void **state) {
  (void)state;
  const char *path = tmp("rot.jsonl");
  const char *old = tmp("rot.jsonl.1");
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *kv[] = {"path", path, "fsync", "never", NULL};
  lg_conf_output_t *c = make_conf("file", kv);
  acks_t a = {0};
  lg_output_t *o = open_file_output(&loop, c, &a);

  lg_output_submit_text(o, "1\n", 2, (void *)1);
  lg_test_run_until_count(&loop, &a.n, 1, 5000, "acks");
  /* logrotate: rename, then the next write goes to a new file. */
  assert_int_equal(rename(path, old), 0);
  lg_output_submit_text(o, "2\n", 2, (void *)2);
  lg_test_run_until_count(&loop, &a.n, 2, 5000, "acks");
  assert_int_equal(a.n, 2);
  assert_file(old, "1\n");
  assert_file(path, "2\n");

  /* Deleted: recreated on the next write. */
  assert_int_equal(unlink(path), 0);
  lg_output_submit_text(o, "3\n", 2, (void *)3);
  lg_test_run_until_count(&loop, &a.n, 3, 5000, "acks");
  assert_file(path, "3\n");

  /* SIGHUP: reopen even when the path did not change (the file is the
   * same, so writes continue in it). */
  lg_output_reopen(o);
  lg_output_submit_text(o, "4\n", 2, (void *)4);
  lg_test_run_until_count(&loop, &a.n, 4, 5000, "acks");
  assert_file(path, "3\n4\n");

  /* Copy-and-replace by a tool: rename + new file with the same name; a
   * reopen must switch to the new file. */
  assert_int_equal(rename(path, old), 0);
  FILE *f = fopen(path, "w");
  fputs("new\n", f);
  fclose(f);
  lg_output_reopen(o);
  lg_output_submit_text(o, "5\n", 2, (void *)5);
  lg_test_run_until_count(&loop, &a.n, 5, 5000, "acks");
  assert_file(old, "3\n4\n");
  assert_file(path, "new\n5\n");
  for (int i = 0; i < 5; i++) {
    assert_int_equal(a.refs[i], i + 1);
    assert_int_equal(a.status[i], 0);
  }
  assert_int_equal(o->records_out, 5);
  assert_int_equal(o->errors, 0);
  close_all(&loop, o);
  conf_free(c);
}

static void test_file_idle_rotation_check(void **state) {
  (void)state;
  const char *path = tmp("idle.jsonl");
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *kv[] = {"path", path, "fsync_interval", "20ms", NULL};
  lg_conf_output_t *c = make_conf("file", kv);
  acks_t a = {0};
  lg_output_t *o = open_file_output(&loop, c, &a);
  uv_timer_t ka;
  keepalive(&loop, &ka);
  lg_output_submit_text(o, "1\n", 2, (void *)1);
  lg_test_run_until_count(&loop, &a.n, 1, 5000, "acks");
  /* With no writes, the periodic check still notices the deletion and
   * creates the file again (so a deleted file's space is released). */
  assert_int_equal(unlink(path), 0);
  struct stat st;
  int64_t end = (int64_t)lg_test_now_ms() + 3000;
  while (stat(path, &st) != 0 && (int64_t)lg_test_now_ms() < end)
    lg_test_run_for(&loop, 10);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 0);
  assert_int_equal(o->errors, 0);
  uv_close((uv_handle_t *)&ka, NULL);
  close_all(&loop, o);
  conf_free(c);
}

static void test_file_fsync_policies(void **state) {
  (void)state;
  static const char *const policies[] = {"never", "interval", "always"};
  for (int p = 0; p < 3; p++) {
    const char *path = tmp(policies[p]);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *kv[] = {"path",           path,  "fsync", policies[p],
                        "fsync_interval", "5ms", NULL};
    lg_conf_output_t *c = make_conf("file", kv);
    acks_t a = {0};
    lg_output_t *o = open_file_output(&loop, c, &a);
    uv_timer_t ka;
    keepalive(&loop, &ka);
    static char lines[50][16];
    char want[50 * 16] = "";
    for (int i = 0; i < 50; i++) {
      snprintf(lines[i], sizeof lines[i], "{\"i\":%d}\n", i);
      strcat(want, lines[i]);
      lg_output_submit_text(o, lines[i], strlen(lines[i]),
                            (void *)(uintptr_t)i);
      if (i % 10 == 0)
        lg_test_run_for(&loop, 7); /* let interval fsyncs run between writes */
    }
    lg_test_run_until_count(&loop, &a.n, 50, 5000, "acks");
    assert_int_equal(a.n, 50);
    for (int i = 0; i < 50; i++) {
      assert_int_equal(a.refs[i], i);
      assert_int_equal(a.status[i], 0);
    }
    assert_file(path, want);
    assert_int_equal(o->errors, 0);
    assert_int_equal(o->records_out, 50);
    uv_close((uv_handle_t *)&ka, NULL);
    close_all(&loop, o);
    assert_file(path, want);
    conf_free(c);
  }
}

static void test_file_retry_then_recover(void **state) {
  (void)state;
  /* RLIMIT_FSIZE makes a write past the limit fail (EFBIG) exactly like a
   * full disk would for this output: it must retry, not ack, and not leave
   * half a line behind. */
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit saved;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
  const char *path = tmp("full.jsonl");
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *kv[] = {"path", path, "fsync", "always", NULL};
  lg_conf_output_t *c = make_conf("file", kv);
  acks_t a = {0};
  lg_output_t *o = open_file_output(&loop, c, &a);

  struct rlimit lim = saved;
  lim.rlim_cur = 100;
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  static const char first[] =
      "{\"first\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}\n";
  static const char second[] =
      "{\"second\":"
      "\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"}\n";
  assert_true(sizeof first - 1 < 100);
  assert_true(sizeof first - 1 + sizeof second - 1 > 100);
  lg_output_submit_text(o, first, sizeof first - 1, (void *)1);
  lg_test_run_until_count(&loop, &a.n, 1, 5000, "acks");
  assert_int_equal(a.n, 1);
  lg_output_submit_text(o, second, sizeof second - 1, (void *)2);
  lg_test_run_for(&loop, 400);
  int64_t retries = (int64_t)o->retries;
  setrlimit(RLIMIT_FSIZE, &saved);

  assert_int_equal(a.n, 1); /* not acked while failing */
  assert_true(retries >= 1);
  assert_true(o->errors >= 1);
  /* The partial write was cut off again. */
  assert_file(path, first);

  lg_test_run_until_count(&loop, &a.n, 2, 5000, "acks");
  assert_int_equal(a.n, 2);
  assert_int_equal(a.refs[1], 2);
  assert_int_equal(a.status[1], 0);
  char want[256];
  snprintf(want, sizeof want, "%s%s", first, second);
  assert_file(path, want);
  assert_int_equal(o->records_out, 2);
  close_all(&loop, o);
  conf_free(c);
  signal(SIGXFSZ, SIG_DFL);
}

static void test_file_abandon(void **state) {
  (void)state;
  /* /dev/full fails every write with ENOSPC: the chunk is retried, never
   * acked, and close can only finish through abandon. */
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *kv[] = {"path", "/dev/full", "fsync", "never", NULL};
  lg_conf_output_t *c = make_conf("file", kv);
  acks_t a = {0};
  lg_output_t *o = open_file_output(&loop, c, &a);
  lg_output_submit_text(o, "{}\n", 3, (void *)1);
  /* Two failed writes with a retry between them: about 300 ms, far more
   * on a loaded machine (the writes run on the threadpool). */
  int64_t end = (int64_t)lg_test_now_ms() + 20000;
  lg_test_run_for(&loop, 300);
  while (o->errors < 2 && (int64_t)lg_test_now_ms() < end)
    lg_test_run_for(&loop, 10);
  assert_int_equal(a.n, 0);
  assert_true(o->retries >= 1);
  assert_true(o->errors >= 2);
  int closed = 0;
  lg_output_close(o, on_closed, &closed);
  assert_int_equal(lg_output_submit_text(o, "{}\n", 3, (void *)2), -ESHUTDOWN);
  lg_test_run_for(&loop, 200);
  assert_int_equal(closed, 0); /* still trying to deliver */
  lg_output_abandon(o);
  lg_test_run_until_count(&loop, &closed, 1, 5000, "the close callback");
  assert_int_equal(closed, 1);
  assert_int_equal(a.n, 0);
  LG_TEST_LOOP_CLOSE(&loop);
  conf_free(c);
}

static void test_file_init_error(void **state) {
  (void)state;
  const char *blocker = tmp("plain");
  FILE *f = fopen(blocker, "w");
  fclose(f);
  char path[600];
  snprintf(path, sizeof path, "%s/sub/out.jsonl", blocker);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *kv[] = {"path", path, NULL};
  lg_conf_output_t *c = make_conf("file", kv);
  acks_t a = {0};
  char err[512] = "";
  lg_output_t *o = lg_output_create(&loop, c, 0, on_ack, &a, err, sizeof err);
  assert_null(o);
  char want[800];
  snprintf(want, sizeof want, "outputs.t: %s: Not a directory", path);
  assert_string_equal(err, want);
  LG_TEST_LOOP_CLOSE(&loop); /* a failed create leaves no handle */
  conf_free(c);
}

/* ---- stdout ---------------------------------------------------------- */

typedef struct stdout_swap {
  int saved;
  int rd;
} stdout_swap_t;

/* Puts the write end of a new pipe on fd 1. */
static stdout_swap_t swap_stdout(void) {
  int p[2];
  fflush(stdout);
  assert_int_equal(pipe(p), 0);
  stdout_swap_t s = {.saved = dup(STDOUT_FILENO), .rd = p[0]};
  assert_true(s.saved >= 0);
  assert_int_equal(dup2(p[1], STDOUT_FILENO), STDOUT_FILENO);
  close(p[1]);
  return s;
}

static void restore_stdout(stdout_swap_t *s) {
  dup2(s->saved, STDOUT_FILENO);
  close(s->saved);
}

static size_t read_all(int fd, char *buf, size_t cap) {
  size_t n = 0;
  ssize_t r;
  while (n < cap && (r = read(fd, buf + n, cap - n)) > 0)
    n += (size_t)r;
  return n;
}

static void test_stdout_in_order(void **state) {
  (void)state;
  stdout_swap_t s = swap_stdout();
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  lg_conf_output_t *c = make_conf("stdout", NULL);
  acks_t a = {0};
  char err[256];
  lg_output_t *o = lg_output_create(&loop, c, 0, on_ack, &a, err, sizeof err);
  assert_non_null(o);
  static char lines[100][24];
  char want[100 * 24] = "";
  for (int i = 0; i < 100; i++) {
    snprintf(lines[i], sizeof lines[i], "{\"line\":%d}\n", i);
    strcat(want, lines[i]);
    lg_output_submit_text(o, lines[i], strlen(lines[i]), (void *)(uintptr_t)i);
  }
  lg_test_run_until_count(&loop, &a.n, 100, 5000, "acks");
  assert_int_equal(a.n, 100);
  for (int i = 0; i < 100; i++) {
    assert_int_equal(a.refs[i], i);
    assert_int_equal(a.status[i], 0);
  }
  assert_int_equal(o->records_out, 100);
  assert_int_equal(o->bytes_out, strlen(want));
  close_all(&loop, o);
  restore_stdout(&s);
  char got[100 * 24];
  size_t n = read_all(s.rd, got, sizeof got);
  close(s.rd);
  got[n] = '\0';
  assert_string_equal(got, want);
  conf_free(c);
}

#define BIG_CHUNKS 40
#define BIG_CHUNK 8192
static char big[BIG_CHUNKS][BIG_CHUNK];

typedef struct reader {
  int fd;
  char *buf;
  size_t want, got;
} reader_t;

static void *reader_main(void *arg) {
  reader_t *r = arg;
  r->got = read_all(r->fd, r->buf, r->want);
  return NULL;
}

typedef struct probe {
  acks_t *a;
  int fired;
  int acked_at_fire;
} probe_t;

static void probe_cb(uv_timer_t *t) {
  probe_t *p = t->data;
  p->fired = 1;
  p->acked_at_fire = p->a->n;
}

static void test_stdout_blocked_reader(void **state) {
  (void)state;
  /* 320 KiB into a 64 KiB pipe nobody reads: the write blocks in the
   * threadpool while the loop keeps running timers. */
  stdout_swap_t s = swap_stdout();
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  lg_conf_output_t *c = make_conf("stdout", NULL);
  acks_t a = {0};
  char err[256];
  lg_output_t *o = lg_output_create(&loop, c, 0, on_ack, &a, err, sizeof err);
  assert_non_null(o);
  for (int i = 0; i < BIG_CHUNKS; i++) {
    memset(big[i], 'a' + i % 26, BIG_CHUNK - 1);
    big[i][BIG_CHUNK - 1] = '\n';
    lg_output_submit_text(o, big[i], BIG_CHUNK, (void *)(uintptr_t)i);
  }
  uv_timer_t t;
  probe_t p = {.a = &a};
  uv_timer_init(&loop, &t);
  t.data = &p;
  uv_timer_start(&t, probe_cb, 100, 0);
  lg_test_run_until_count(&loop, &p.fired, 1, 2000, "the probe timer");
  assert_int_equal(p.fired, 1);
  /* The first chunk may go alone (its job starts at once) and fit. */
  assert_true(p.acked_at_fire <= 1);
  uv_close((uv_handle_t *)&t, NULL);

  reader_t r = {.fd = s.rd,
                .buf = malloc(BIG_CHUNKS * BIG_CHUNK),
                .want = BIG_CHUNKS * BIG_CHUNK};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, reader_main, &r), 0);
  lg_test_run_until_count(&loop, &a.n, BIG_CHUNKS, 10000, "acks");
  assert_int_equal(a.n, BIG_CHUNKS);
  for (int i = 0; i < BIG_CHUNKS; i++) {
    assert_int_equal(a.refs[i], i);
    assert_int_equal(a.status[i], 0);
  }
  pthread_join(th, NULL);
  assert_int_equal(r.got, BIG_CHUNKS * BIG_CHUNK);
  for (int i = 0; i < BIG_CHUNKS; i++)
    assert_memory_equal(r.buf + (size_t)i * BIG_CHUNK, big[i], BIG_CHUNK);
  free(r.buf);
  assert_int_equal(o->records_out, BIG_CHUNKS);
  close_all(&loop, o);
  restore_stdout(&s);
  close(s.rd);
  conf_free(c);
}

static void test_stdout_reader_gone(void **state) {
  (void)state;
  /* EPIPE cannot heal: the chunks are acked as failed (the engine sends
   * them to the dead-letter output) and the process is not killed. */
  stdout_swap_t s = swap_stdout();
  close(s.rd);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  lg_conf_output_t *c = make_conf("stdout", NULL);
  acks_t a = {0};
  char err[256];
  lg_output_t *o = lg_output_create(&loop, c, 0, on_ack, &a, err, sizeof err);
  assert_non_null(o);
  lg_output_submit_text(o, "{}\n", 3, (void *)1);
  lg_output_submit_text(o, "{}\n", 3, (void *)2);
  lg_test_run_until_count(&loop, &a.n, 2, 5000, "acks");
  assert_int_equal(a.n, 2);
  assert_int_equal(a.refs[0], 1);
  /* Rejected (EPIPE cannot heal) and, with no dead-letter output, lost. */
  assert_true(a.status[0] < 0);
  assert_int_equal(a.refs[1], 2);
  assert_true(a.status[1] < 0);
  assert_true(o->errors >= 1);
  assert_int_equal(o->records_out, 0);
  close_all(&loop, o);
  restore_stdout(&s);
  conf_free(c);
}

/* Memory pressure (lg_output_set_pressure): records waiting for a request
 * to fill (max_coalescing_delay 10 minutes) go at once while it is on; off
 * again, new records wait as before. */
/* A file output at `path` on `loop` (kept alive by `ka`) whose requests
 * fill for 10 minutes (max_coalescing_delay), holding one record that
 * waits to fill a request. */
static lg_output_t *waiting_output(uv_loop_t *loop, const char *path,
                                   lg_conf_output_t **c, acks_t *a,
                                   uv_timer_t *ka) {
  uv_loop_init(loop);
  const char *kv[] = {"path", path, "max_coalescing_delay", "10m", NULL};
  *c = make_conf("file", kv);
  lg_output_t *o = open_file_output(loop, *c, a);
  keepalive(loop, ka);
  assert_int_equal(lg_output_submit_text(o, "{\"a\":1}\n", 8, (void *)1), 0);
  lg_test_run_for(loop, 200);
  assert_int_equal(a->n, 0); /* waiting to fill */
  return o;
}

static void test_pressure_sends_early(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_timer_t ka;
  lg_conf_output_t *c;
  acks_t a = {0};
  const char *path = tmp("pressure.jsonl");
  lg_output_t *o = waiting_output(&loop, path, &c, &a, &ka);
  lg_output_set_pressure(o, 1);
  lg_test_run_until_count(&loop, &a.n, 1, 5000, "acks");
  assert_int_equal(a.n, 1);
  assert_int_equal(lg_output_submit_text(o, "{\"b\":2}\n", 8, (void *)2), 0);
  lg_test_run_until_count(&loop, &a.n, 2, 5000, "acks");
  assert_int_equal(a.n, 2); /* still under pressure: at once */
  lg_output_set_pressure(o, 0);
  assert_int_equal(lg_output_submit_text(o, "{\"c\":3}\n", 8, (void *)3), 0);
  lg_test_run_for(&loop, 200);
  assert_int_equal(a.n, 2); /* waits again */
  assert_file(path, "{\"a\":1}\n{\"b\":2}\n");
  uv_close((uv_handle_t *)&ka, NULL);
  close_all(&loop, o); /* the drain sends it */
  assert_int_equal(a.n, 3);
  conf_free(c);
}

/* The stop (lg_output_stopping): records waiting for a request to fill
 * (max_coalescing_delay 10 minutes) go at once, and so do those submitted
 * after it, before any close: the drain delivers within its timeout. */
static void test_stopping_sends_now(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_timer_t ka;
  lg_conf_output_t *c;
  acks_t a = {0};
  const char *path = tmp("stopping.jsonl");
  lg_output_t *o = waiting_output(&loop, path, &c, &a, &ka);
  lg_output_stopping(o);
  lg_test_run_until_count(&loop, &a.n, 1, 5000, "acks");
  assert_int_equal(lg_output_submit_text(o, "{\"b\":2}\n", 8, (void *)2), 0);
  lg_test_run_until_count(&loop, &a.n, 2, 5000, "acks");
  assert_file(path, "{\"a\":1}\n{\"b\":2}\n");
  uv_close((uv_handle_t *)&ka, NULL);
  close_all(&loop, o);
  conf_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registry),
      cmocka_unit_test(test_readme_options),
      cmocka_unit_test_setup_teardown(test_file_in_order, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_file_cuts_partial_line, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_file_rotation, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_file_idle_rotation_check, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_file_fsync_policies, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_file_retry_then_recover, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_file_abandon, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_file_init_error, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_stopping_sends_now, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_pressure_sends_early, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test(test_stdout_in_order),
      cmocka_unit_test(test_stdout_blocked_reader),
      cmocka_unit_test(test_stdout_reader_gone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
