/*
 * lg_test.h - what the C unit tests share instead of copying it: temporary
 * directories and files, scripts, batches, and running a libuv loop until
 * something happens (STYLE.md rule 12: every test that has a loop closes
 * its handles and checks uv_loop_close() == 0, LG_TEST_LOOP_CLOSE).
 *
 * Failures are cmocka failures (the test stops with a message).
 */
#ifndef LG_TEST_H
#define LG_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <uv.h>

#include "pipeline/lg_batch.h"

/* Makes a new directory /tmp/<prefix>XXXXXX and returns its path (static
 * storage, until the next call). */
const char *lg_test_tmpdir(const char *prefix);

/* Removes `dir` and everything under it. Returns 0 or -1. */
int lg_test_rmtree(const char *dir);

/* Writes `text` to `path` (created or truncated). */
void lg_test_write_file(const char *path, const char *text);

/* The project's README.md (found by LUGGER_SOURCE_DIR, else the current
 * directory) as one NUL-terminated string, in a static buffer of 1 MiB;
 * fails the test when it cannot be read. */
const char *lg_test_readme(void);

/* Writes `src` to a new script file in `dir` (s<n>.lua) and returns its
 * path (static storage, 16 slots: use it right away). */
const char *lg_test_script(const char *dir, const char *src);

/* A batch of `n` records with these bodies (offsets as if each were a
 * line of a file), metadata log.file.path = /var/log/t.log, and every
 * record routed to output 0. */
lg_batch_t *lg_test_batch_of(const char *const *bodies, size_t n);

/* What is written to stderr (lugger's log) while fn(arg) runs, as a
 * NUL-terminated string (free it); fails the test when it cannot be
 * captured. */
char *lg_test_stderr_of(void (*fn)(void *arg), void *arg);

/* Monotonic time, ms. */
uint64_t lg_test_now_ms(void);

/* Runs `loop` for `ms` milliseconds, and at least twice even when this
 * thread was descheduled for longer (a loaded machine): a pass that never
 * ran would make "nothing happened" checks pass for nothing. */
void lg_test_run_for(uv_loop_t *loop, uint64_t ms);

/* Runs `loop` until cond(arg) holds; fails the test, naming `what`,
 * after `timeout_ms`. */
void lg_test_run_until(uv_loop_t *loop, int (*cond)(void *arg), void *arg,
                       uint64_t timeout_ms, const char *what);

/* Runs `loop` until *count >= want (a counter of acks, callbacks, ...);
 * fails the test, naming `what` and the count reached, after
 * `timeout_ms`. */
void lg_test_run_until_count(uv_loop_t *loop, const int *count, int want,
                             uint64_t timeout_ms, const char *what);

/* As lg_test_run_until; on a timeout the message also has what
 * describe(arg, buf, len) writes (the state reached, e.g. "have 3
 * records"). */
void lg_test_run_until_ex(uv_loop_t *loop, int (*cond)(void *arg), void *arg,
                          uint64_t timeout_ms, const char *what,
                          void (*describe)(void *arg, char *buf, size_t len));

/* Runs `loop` until its closing handles are closed, then checks that it
 * closes (no handle left open). */
#define LG_TEST_LOOP_CLOSE(loop)                                               \
  do {                                                                         \
    uv_run((loop), UV_RUN_DEFAULT);                                            \
    assert_int_equal(uv_loop_close(loop), 0);                                  \
  } while (0)

#endif
