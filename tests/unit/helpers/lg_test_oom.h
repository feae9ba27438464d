/*
 * lg_test_oom.h - allocation failures on demand, for a unit test linked
 * with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup
 * (CMakeLists.txt, per test): the calls lugger's objects and the test
 * make go through the __wrap_ functions defined here (a link-time seam;
 * shared libraries' own calls, e.g. libuv's or cmocka's, are not
 * rewritten). Include it in exactly one file of such a test: it defines
 * those functions.
 *
 * While armed (lg_test_oom_arm), the first `pass` allocations of the
 * arming thread succeed and every later one fails (NULL, errno ENOMEM),
 * until lg_test_oom_disarm. A test sweeps `pass` from 0 up, until a run
 * in which nothing failed: then every allocation of the armed code was
 * made to fail once, as the first to fail. Other threads (libuv's pool)
 * are never refused.
 */
#ifndef LG_TEST_OOM_H
#define LG_TEST_OOM_H

#include <errno.h>
#include <pthread.h>
#include <stddef.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static struct {
  int armed;
  long pass;   /* allocations that still succeed */
  long failed; /* allocations refused since lg_test_oom_arm */
  pthread_t thread;
} lg_test_oom;

/* From now on, on this thread, `pass` allocations succeed, then all
 * fail. */
static inline void lg_test_oom_arm(long pass) {
  lg_test_oom.thread = pthread_self();
  lg_test_oom.pass = pass;
  lg_test_oom.failed = 0;
  lg_test_oom.armed = 1;
}

/* Allocations succeed again; returns how many were refused. */
static inline long lg_test_oom_disarm(void) {
  lg_test_oom.armed = 0;
  return lg_test_oom.failed;
}

static int lg_test_oom_refuse(void) {
  if (!lg_test_oom.armed || !pthread_equal(pthread_self(), lg_test_oom.thread))
    return 0;
  if (lg_test_oom.pass > 0) {
    lg_test_oom.pass--;
    return 0;
  }
  lg_test_oom.failed++;
  errno = ENOMEM;
  return 1;
}

void *__wrap_malloc(size_t n) {
  return lg_test_oom_refuse() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size) {
  return lg_test_oom_refuse() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n) {
  return lg_test_oom_refuse() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s) {
  return lg_test_oom_refuse() ? NULL : __real_strdup(s);
}

#endif
