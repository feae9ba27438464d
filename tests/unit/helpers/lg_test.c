/* The unit tests' shared helpers (lg_test.h). */
#include "helpers/lg_test.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/lg_util.h"

const char *lg_test_tmpdir(const char *prefix) {
  static char dir[256];
  snprintf(dir, sizeof dir, "/tmp/%sXXXXXX", prefix);
  assert_non_null(mkdtemp(dir));
  return dir;
}

int lg_test_rmtree(const char *dir) {
  char cmd[512];
  if (dir == NULL || dir[0] != '/' || strstr(dir, "/tmp/") != dir)
    return -1; /* only what lg_test_tmpdir made */
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

void lg_test_write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    fail_msg("cannot write %s", path);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

const char *lg_test_readme(void) {
  const char *dir = getenv("LUGGER_SOURCE_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/README.md", dir != NULL ? dir : ".");
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    fail_msg("cannot open %s (set LUGGER_SOURCE_DIR)", path);
  static char text[1 << 20];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  return text;
}

const char *lg_test_script(const char *dir, const char *src) {
  static char paths[16][512];
  static int n;
  char *p = paths[n % 16];
  snprintf(p, sizeof paths[0], "%s/s%d.lua", dir, n++);
  lg_test_write_file(p, src);
  return p;
}

lg_batch_t *lg_test_batch_of(const char *const *bodies, size_t n) {
  lg_batch_t *b = lg_batch_create(0);
  assert_non_null(b);
  lg_meta_t *m = lg_meta_create();
  assert_non_null(m);
  lg_meta_add_str(m, "log.file.path", "/var/log/t.log", 14);
  lg_meta_seal(m);
  lg_batch_set_meta(b, m);
  lg_meta_unref(m);
  uint64_t off = 0;
  for (size_t k = 0; k < n; k++) {
    size_t len = strlen(bodies[k]);
    int64_t i = lg_batch_add(b, bodies[k], len, 0, off, off + len + 1, 0);
    assert_int_equal(i, (int64_t)k);
    b->recs[i].routes = 1; /* the pipeline's default output */
    off += len + 1;
  }
  return b;
}

uint64_t lg_test_now_ms(void) { return uv_hrtime() / 1000000; }

void lg_test_run_for(uv_loop_t *loop, uint64_t ms) {
  uint64_t end = lg_test_now_ms() + ms;
  int passes = 0;
  while (passes < 2 || lg_test_now_ms() < end) {
    uv_run(loop, UV_RUN_NOWAIT);
    usleep(1000);
    passes++;
  }
}

void lg_test_run_until_ex(uv_loop_t *loop, int (*cond)(void *arg), void *arg,
                          uint64_t timeout_ms, const char *what,
                          void (*describe)(void *arg, char *buf, size_t len)) {
  uint64_t deadline = lg_test_now_ms() + timeout_ms;
  while (!cond(arg)) {
    if (lg_test_now_ms() > deadline) {
      char state[256] = "";
      if (describe != NULL)
        describe(arg, state, sizeof state);
      fail_msg("timed out after %llu ms waiting for %s%s%s",
               (unsigned long long)timeout_ms, what, state[0] ? "; " : "",
               state);
    }
    uv_run(loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
}

typedef struct count_cond {
  const int *count;
  int want;
} count_cond_t;

static int count_reached(void *arg) {
  const count_cond_t *c = arg;
  return *c->count >= c->want;
}

static void describe_count(void *arg, char *buf, size_t len) {
  const count_cond_t *c = arg;
  snprintf(buf, len, "%d of %d", *c->count, c->want);
}

void lg_test_run_until_count(uv_loop_t *loop, const int *count, int want,
                             uint64_t timeout_ms, const char *what) {
  count_cond_t c = {count, want};
  lg_test_run_until_ex(loop, count_reached, &c, timeout_ms, what,
                       describe_count);
}

void lg_test_run_until(uv_loop_t *loop, int (*cond)(void *arg), void *arg,
                       uint64_t timeout_ms, const char *what) {
  lg_test_run_until_ex(loop, cond, arg, timeout_ms, what, NULL);
}

char *lg_test_stderr_of(void (*fn)(void *arg), void *arg) {
  char dir[512], path[600];
  snprintf(dir, sizeof dir, "%s", lg_test_tmpdir("lg_stderr."));
  snprintf(path, sizeof path, "%s/stderr", dir);
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  assert_true(fd >= 0);
  int saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
  fn(arg);
  assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
  close(saved);
  close(fd);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(path, 1 << 20, &text, &len), 0);
  assert_int_equal(lg_test_rmtree(dir), 0);
  return text;
}
