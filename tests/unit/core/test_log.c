/*
 * Unit tests: the error log (core/lg_log.c) writes its JSON line when
 * memory is out, the moment its errors matter most: every allocation of
 * the test thread fails while the line is logged (lg_test_oom.h, linked
 * with --wrap=malloc,calloc,realloc,strdup), and the line on stderr (a
 * file here) is checked whole, escapes included.
 */
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
#include "helpers/lg_test.h"
#include "helpers/lg_test_oom.h"

static void log_without_memory(void *arg) {
  (void)arg;
  lg_test_oom_arm(0);
  lg_log_error("output.x", "out of memory settling \"%s\" (%d records)", "a\nb",
               3);
  lg_test_oom_disarm();
}

static void test_error_logged_without_memory(void **state) {
  (void)state;
  char *line = lg_test_stderr_of(log_without_memory, NULL);
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
