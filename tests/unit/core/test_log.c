/*
 * Unit tests: the error log (core/lg_log.c) writes its JSON line when
 * memory is out, the moment its errors matter most: every allocation of
 * the test thread fails while the line is logged (lg_test_oom.h, linked
 * with --wrap=malloc,calloc,realloc,strdup), and the line on stderr (a
 * file here) is checked whole, escapes included.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/lg_log.h"
#include "core/lg_util.h"
#include "helpers/lg_test.h"
#include "helpers/lg_test_oom.h"

/* What lg_log writes to stderr while `fn` runs, NUL-terminated (free
 * it). */
static char *stderr_of(void (*fn)(void)) {
  const char *dir = lg_test_tmpdir("lg_log.");
  char path[512];
  snprintf(path, sizeof path, "%s/stderr", dir);
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  assert_true(fd >= 0);
  int saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
  fn();
  assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
  close(saved);
  close(fd);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(lg_util_read_file(path, 1 << 20, &text, &len), 0);
  char dircopy[512];
  snprintf(dircopy, sizeof dircopy, "%s", dir);
  assert_int_equal(lg_test_rmtree(dircopy), 0);
  return text;
}

static void log_without_memory(void) {
  lg_test_oom_arm(0);
  lg_log_error("output.x", "out of memory settling \"%s\" (%d records)", "a\nb",
               3);
  lg_test_oom_disarm();
}

static void test_error_logged_without_memory(void **state) {
  (void)state;
  char *line = stderr_of(log_without_memory);
  const char *want = "\",\"level\":\"error\",\"component\":\"output.x\","
                     "\"msg\":\"out of memory settling \\\"a\\nb\\\" (3 "
                     "records)\"}\n";
  if (strncmp(line, "{\"time\":\"", 9) != 0 || strlen(line) < strlen(want) ||
      strcmp(line + strlen(line) - strlen(want), want) != 0)
    fail_msg("logged without memory: \"%s\"", line);
  assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1); /* one */
  free(line);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_error_logged_without_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
