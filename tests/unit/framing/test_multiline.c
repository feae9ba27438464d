/* Unit tests: lg_multiline (grouping after framing).
 *
 * Table tests feed a file's bytes through a real framer (line or CRI) and
 * the grouper, then flush, and compare the records, one text line each:
 *   <offset>-<end_offset> <flags> |<body>|
 * with flags as letters (E stderr, S has stream, T truncated, X parse
 * error) or "-", and LF and TAB in bodies written as "\\n" and "\\t". Each
 * input is fed whole and one byte at a time, which must give the same records.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "framing/lg_framing.h"
#include "framing/lg_multiline.h"
#include "pipeline/lg_batch.h"

static char *dump(const lg_batch_t *b) {
  size_t cap = 4096, len = 0;
  char *out = malloc(cap);
  out[0] = '\0';
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    char flags[8] = "", *fp = flags;
    if (r->flags & LG_REC_STDERR)
      *fp++ = 'E';
    if (r->flags & LG_REC_HAS_STREAM)
      *fp++ = 'S';
    if (r->flags & LG_REC_TRUNCATED)
      *fp++ = 'T';
    if (r->flags & LG_REC_PARSE_ERROR)
      *fp++ = 'X';
    if (fp == flags)
      *fp++ = '-';
    *fp = '\0';
    size_t need = len + 64 + 2 * (size_t)r->body_len;
    if (need > cap) {
      while (cap < need)
        cap *= 2;
      out = realloc(out, cap);
    }
    len += (size_t)sprintf(out + len, "%llu-%llu %s |",
                           (unsigned long long)r->offset,
                           (unsigned long long)r->end_offset, flags);
    for (uint32_t k = 0; k < r->body_len; k++) {
      char ch = b->data[r->body_off + k];
      if (ch == '\n' || ch == '\t') {
        out[len++] = '\\';
        out[len++] = ch == '\n' ? 'n' : 't';
      } else {
        out[len++] = ch;
      }
    }
    out[len++] = '|';
    out[len++] = '\n';
    out[len] = '\0';
  }
  return out;
}

static lg_ml_conf_t *conf(const lg_ml_spec_t *spec) {
  char err[512] = "";
  lg_ml_conf_t *c =
      lg_ml_conf_create(spec, "sources.t.multiline", err, sizeof err);
  if (c == NULL)
    fail_msg("conf: %s", err);
  return c;
}

/* Frames `in` (whole, or byte by byte), groups, flushes; returns the dump
 * and the safe offset seen before the final flush. */
static char *run(const lg_ml_spec_t *spec, lg_format_t fmt, const char *in,
                 int bytewise, uint64_t *safe_before_flush) {
  lg_ml_conf_t *c = conf(spec);
  lg_ml_t *m = lg_ml_create(c, 1 << 20);
  lg_ml_conf_unref(c); /* the grouper holds its own reference */
  lg_framer_t *fr = lg_framer_create(fmt, 1 << 20, 0);
  lg_batch_t *scratch = lg_batch_create(1024), *out = lg_batch_create(1024);
  assert_non_null(m);
  assert_non_null(fr);
  size_t n = strlen(in), step = bytewise ? 1 : n;
  for (size_t i = 0; i < n; i += step) {
    assert_int_equal(lg_framer_feed(fr, in + i, step, 7, scratch), 0);
    assert_int_equal(lg_ml_process(m, scratch, out, 0), 0);
    lg_batch_reset(scratch);
  }
  if (safe_before_flush != NULL)
    *safe_before_flush = lg_ml_safe_offset(m);
  assert_int_equal(lg_framer_flush(fr, 7, scratch), 0);
  assert_int_equal(lg_ml_process(m, scratch, out, 0), 0);
  assert_int_equal(lg_ml_flush(m, out), 0);
  assert_int_equal(lg_ml_pending(m), 0);
  assert_true(lg_ml_safe_offset(m) == UINT64_MAX);
  char *d = dump(out);
  lg_batch_destroy(scratch);
  lg_batch_destroy(out);
  lg_framer_destroy(fr);
  lg_ml_destroy(m);
  return d;
}

typedef struct tcase {
  const char *name;
  lg_ml_spec_t spec;
  lg_format_t fmt;
  const char *in;
  const char *want;
} tcase_t;

/* Real traces: the JVM's (java 17, javac-compiled class), CPython 3's, and
 * a Go 1.2x nil-pointer panic as the runtime prints them. */
#define JAVA_TRACE                                                             \
  "Exception in thread \"main\" java.lang.RuntimeException: outer failure\n"   \
  "\tat Boom.outer(Boom.java:4)\n"                                             \
  "\tat Boom.main(Boom.java:6)\n"                                              \
  "Caused by: java.lang.IllegalStateException: inner failure\n"                \
  "\tat Boom.inner(Boom.java:2)\n"                                             \
  "\tat Boom.outer(Boom.java:4)\n"                                             \
  "\t... 1 more\n"
#define PY_TRACE                                                               \
  "Traceback (most recent call last):\n"                                       \
  "  File \"<string>\", line 7, in <module>\n"                                 \
  "  File \"<string>\", line 5, in g\n"                                        \
  "ValueError: bad value: 1\n"                                                 \
  "\n"                                                                         \
  "The above exception was the direct cause of the following exception:\n"     \
  "\n"                                                                         \
  "Traceback (most recent call last):\n"                                       \
  "  File \"<string>\", line 9, in <module>\n"                                 \
  "KeyError: 'k'\n"
#define GO_TRACE                                                               \
  "panic: runtime error: invalid memory address or nil pointer dereference\n"  \
  "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x48f1b6]\n"   \
  "\n"                                                                         \
  "goroutine 1 [running]:\n"                                                   \
  "main.(*Server).handle(0x0, {0x4d2b60, 0xc000012345})\n"                     \
  "\t/home/app/server.go:42 +0x16\n"                                           \
  "main.main()\n"                                                              \
  "\t/home/app/main.go:12 +0x25\n"

static const tcase_t cases[] = {
    {"start and continue",
     {.start = "^S", .cont = "^C"},
     LG_FORMAT_LINE,
     "a\nS1\nC1\nC2\nb\nC3\nS2\n",
     "0-2 - |a|\n2-11 - |S1\\nC1\\nC2|\n11-13 - |b|\n13-16 - |C3|\n"
     "16-19 - |S2|\n"},
    {"start only: other lines continue",
     {.start = "^\\d"},
     LG_FORMAT_LINE,
     "x\n1 a\n  b\nc\n2 d\n",
     "0-2 - |x|\n2-12 - |1 a\\n  b\\nc|\n12-16 - |2 d|\n"},
    {"continue only: any line begins",
     {.cont = "^\\s"},
     LG_FORMAT_LINE,
     "a\n b\n c\nd\ne\n f\n",
     "0-8 - |a\\n b\\n c|\n8-10 - |d|\n10-15 - |e\\n f|\n"},
    {"java preset",
     {.preset = "java"},
     LG_FORMAT_LINE,
     "INFO up\n" JAVA_TRACE "INFO next\n",
     "0-8 - |INFO up|\n"
     "8-258 - |Exception in thread \"main\" java.lang.RuntimeException: outer "
     "failure\\n\\tat Boom.outer(Boom.java:4)\\n\\tat "
     "Boom.main(Boom.java:6)\\nCaused by: java.lang.IllegalStateException: "
     "inner failure\\n\\tat Boom.inner(Boom.java:2)\\n\\tat "
     "Boom.outer(Boom.java:4)\\n\\t... 1 more|\n"
     "258-268 - |INFO next|\n"},
    {"python preset, chained",
     {.preset = "python"},
     LG_FORMAT_LINE,
     "INFO up\n" PY_TRACE "INFO next\n  indented but alone\n",
     "0-8 - |INFO up|\n"
     "8-298 - |Traceback (most recent call last):\\n  File \"<string>\", line "
     "7, in <module>\\n  File \"<string>\", line 5, in g\\nValueError: bad "
     "value: 1\\n\\nThe above exception was the direct cause of the "
     "following exception:\\n\\nTraceback (most recent call last):\\n  File "
     "\"<string>\", line 9, in <module>\\nKeyError: 'k'|\n"
     "298-308 - |INFO next|\n308-329 - |  indented but alone|\n"},
    {"python: trailing blank lines are not body",
     {.preset = "python"},
     LG_FORMAT_LINE,
     "Traceback (most recent call last):\n  File \"x\"\nE: 1\n\n\nnext\n",
     "0-53 - |Traceback (most recent call last):\\n  File \"x\"\\nE: 1|\n"
     "53-58 - |next|\n"},
    {"go preset (a blank line after it is taken, not kept)",
     {.preset = "go"},
     LG_FORMAT_LINE,
     "start\n" GO_TRACE "\nlisten on :8080\n",
     "0-6 - |start|\n"
     "6-297 - |panic: runtime error: invalid memory address or nil pointer "
     "dereference\\n[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 "
     "pc=0x48f1b6]\\n\\ngoroutine 1 [running]:\\nmain.(*Server).handle(0x0, "
     "{0x4d2b60, 0xc000012345})\\n\\t/home/app/server.go:42 "
     "+0x16\\nmain.main()\\n\\t/home/app/main.go:12 +0x25|\n"
     "297-313 - |listen on :8080|\n"},
    {"max_lines cuts and flags",
     {.start = "^S", .cont = "^C", .max_lines = 3},
     LG_FORMAT_LINE,
     "S\nC1\nC2\nC3\nC4\nC5\nC6\nx\n",
     "0-8 T |S\\nC1\\nC2|\n8-17 T |C3\\nC4\\nC5|\n17-20 T |C6|\n"
     "20-22 - |x|\n"},
    {"max_bytes cuts and flags",
     {.start = "^S", .cont = "^C", .max_bytes = 8},
     LG_FORMAT_LINE,
     "S\nC1\nC2\nC3\nx\n",
     "0-8 T |S\\nC1\\nC2|\n8-11 T |C3|\n11-13 - |x|\n"},
    {"unparsable CRI line ends the group and passes",
     {.preset = "java"},
     LG_FORMAT_CRI,
     "2024-05-01T00:00:01Z stdout F E: x\n"
     "garbage\n"
     "2024-05-01T00:00:02Z stdout F \tat A.b(A.java:1)\n",
     "0-35 S |E: x|\n35-43 X |garbage|\n"
     "43-91 S |\\tat A.b(A.java:1)|\n"},
};

static void test_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const tcase_t *tc = &cases[i];
    for (int bw = 0; bw < 2; bw++) {
      char *got = run(&tc->spec, tc->fmt, tc->in, bw, NULL);
      if (strcmp(got, tc->want) != 0)
        fail_msg("%s (%s):\n--- want\n%s--- got\n%s", tc->name,
                 bw ? "byte by byte" : "whole", tc->want, got);
      free(got);
    }
  }
}

/* Go 1.19.8 (Debian 12's golang-go) as the runtime printed them, trimmed
 * to a few frames each: what its fatal errors and signal dumps print
 * besides the plain panics of the integration test. */
static const char *const go119[][2] = {
    {"stack overflow: runtime diagnostics first, runtime stack, elided",
     "runtime: goroutine stack exceeds 1000000000-byte limit\n"
     "runtime: sp=0xc0200e0390 stack=[0xc0200e0000, 0xc0400e0000]\n"
     "fatal error: stack overflow\n"
     "\n"
     "runtime stack:\n"
     "runtime.throw({0x4a614f?, 0x529960?})\n"
     "\t/usr/lib/go-1.19/src/runtime/panic.go:1047 +0x5d fp=0x7ffeecabc350 "
     "sp=0x7ffeecabc320 pc=0x4324dd\n"
     "runtime.morestack()\n"
     "\t/usr/lib/go-1.19/src/runtime/asm_amd64.s:570 +0x8b fp=0x7ffeecabc510 "
     "sp=0x7ffeecabc508 pc=0x45c0eb\n"
     "\n"
     "goroutine 1 [running]:\n"
     "main.main.func2(0x0?)\n"
     "\t/src/app/main.go:84 +0x23 fp=0xc0200e03b8 sp=0xc0200e03a0 "
     "pc=0x48c9e3\n"
     "...additional frames elided...\n"},
    {"two threads throw at once",
     "fatal error: concurrent map writes\n"
     "fatal error: concurrent map writes\n"
     "\n"
     "goroutine 19 [running]:\n"
     "main.main.func1()\n"
     "\t/src/app/main.go:79 +0x2e\n"
     "created by main.main\n"
     "\t/src/app/main.go:79 +0x35d\n"
     "\n"
     "goroutine 21 [running]:\n"
     "\tgoroutine running on other thread; stack unavailable\n"
     "created by main.main\n"
     "\t/src/app/main.go:79 +0x35d\n"},
    {"SIGQUIT dump with registers",
     "SIGQUIT: quit\n"
     "PC=0x460140 m=0 sigcode=0\n"
     "\n"
     "goroutine 0 [idle]:\n"
     "runtime.epollwait()\n"
     "\t/usr/lib/go-1.19/src/runtime/sys_linux_amd64.s:706 +0x20 "
     "fp=0x7ffef53ea738 sp=0x7ffef53ea730 pc=0x460140\n"
     "\n"
     "goroutine 1 [sleep]:\n"
     "main.main()\n"
     "\t/src/app/main.go:87 +0x2b5 fp=0xc0000b5f80 sp=0xc0000b5ee8 "
     "pc=0x48c815\n"
     "\n"
     "rax    0xfffffffffffffffc\n"
     "r15    0xffffffffffffffff\n"
     "rip    0x460140\n"
     "rflags 0x246\n"
     "cs     0x33\n"
     "gs     0x0\n"},
    {"go run adds the exit status", "panic: unexpected state 3\n"
                                    "\n"
                                    "goroutine 1 [running]:\n"
                                    "main.step(...)\n"
                                    "\t/src/app/main.go:33\n"
                                    "main.main()\n"
                                    "\t/src/app/main.go:64 +0x42c\n"
                                    "exit status 2\n"},
    {"a recovered panic panics again",
     "panic: first failure [recovered]\n"
     "\tpanic: cleanup after first failure failed\n"
     "\n"
     "goroutine 1 [running]:\n"
     "main.recovered.func1()\n"
     "\t/src/app/main.go:50 +0x6e\n"
     "panic({0x494520, 0x4c53b0})\n"
     "\t/usr/lib/go-1.19/src/runtime/panic.go:884 +0x212\n"
     "main.main()\n"
     "\t/src/app/main.go:72 +0x14c\n"},
};

/* Appends `s` to the dump text `w` as dump() writes bodies. */
static size_t put_escaped(char *w, const char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '\n' || s[i] == '\t') {
      w[k++] = '\\';
      w[k++] = s[i] == '\n' ? 'n' : 't';
    } else {
      w[k++] = s[i];
    }
  }
  return k;
}

static void test_go119_traces(void **state) {
  (void)state;
  /* Each trace between two ordinary lines is exactly one record, its text
   * without the last newline; the lines around it stay alone. */
  static const char before[] = "2024/05/01 12:00:00 serving on :8080\n",
                    after[] = "2024/05/01 12:00:05 starting\n";
  lg_ml_spec_t spec = {.preset = "go"};
  for (size_t i = 0; i < sizeof go119 / sizeof go119[0]; i++) {
    const char *tr = go119[i][1];
    size_t nb = strlen(before), nt = strlen(tr), na = strlen(after);
    char *in = malloc(nb + nt + na + 1);
    snprintf(in, nb + nt + na + 1, "%s%s%s", before, tr, after);
    char *want = malloc(2 * (nb + nt + na) + 256), *w = want;
    w += sprintf(w, "0-%zu - |", nb);
    w += put_escaped(w, before, nb - 1);
    w += sprintf(w, "|\n%zu-%zu - |", nb, nb + nt);
    w += put_escaped(w, tr, nt - 1);
    w += sprintf(w, "|\n%zu-%zu - |", nb + nt, nb + nt + na);
    w += put_escaped(w, after, na - 1);
    sprintf(w, "|\n");
    for (int bw = 0; bw < 2; bw++) {
      char *got = run(&spec, LG_FORMAT_LINE, in, bw, NULL);
      if (strcmp(got, want) != 0)
        fail_msg("%s (%s):\n--- want\n%s--- got\n%s", go119[i][0],
                 bw ? "byte by byte" : "whole", want, got);
      free(got);
    }
    free(want);
    free(in);
  }
  /* A panic message with a newline (printed as is): its second line ends
   * the group, and the goroutines after it are one record again. */
  char *got = run(&spec, LG_FORMAT_LINE,
                  "panic: line one\nline two\n\ngoroutine 1 [running]:\n"
                  "main.main()\n\t/src/app/main.go:89 +0x358\nnext\n",
                  0, NULL);
  assert_string_equal(got, "0-16 - |panic: line one|\n"
                           "16-25 - |line two|\n"
                           "25-26 - ||\n"
                           "26-89 - |goroutine 1 [running]:\\nmain.main()"
                           "\\n\\t/src/app/main.go:89 +0x358|\n"
                           "89-94 - |next|\n");
  free(got);
  /* A line that may begin a crash but is followed by an ordinary one is a
   * record of its own, and takes nothing with it. */
  got = run(&spec, LG_FORMAT_LINE,
            "runtime: GOMAXPROCS=2\nlisten on :8080\n"
            "SIGTERM: draining\n2024/05/01 12:00:00 bye\n",
            0, NULL);
  assert_string_equal(got, "0-22 - |runtime: GOMAXPROCS=2|\n"
                           "22-38 - |listen on :8080|\n"
                           "38-56 - |SIGTERM: draining|\n"
                           "56-80 - |2024/05/01 12:00:00 bye|\n");
  free(got);
}

static void test_cri_streams(void **state) {
  (void)state;
  /* stdout and stderr interleave; each stream's trace becomes one record
   * with the time and stream of its first line; a P...F pair is joined
   * before it is grouped. */
  const char *in =
      "2024-05-01T00:00:01Z stderr F java.lang.IllegalStateException: x\n"
      "2024-05-01T00:00:02Z stdout F hello\n"
      "2024-05-01T00:00:03Z stderr P \tat A.b(A.j\n"
      "2024-05-01T00:00:04Z stdout F \tat C.d(C.java:9)\n"
      "2024-05-01T00:00:05Z stderr F ava:1)\n"
      "2024-05-01T00:00:06Z stdout F bye\n"
      "2024-05-01T00:00:07Z stderr F done\n";
  lg_ml_spec_t spec = {.preset = "java"};
  lg_ml_conf_t *c = conf(&spec);
  lg_ml_t *m = lg_ml_create(c, 1 << 20);
  lg_framer_t *fr = lg_framer_create(LG_FORMAT_CRI, 1 << 20, 0);
  lg_batch_t *sc = lg_batch_create(1024), *out = lg_batch_create(1024);
  assert_int_equal(lg_framer_feed(fr, in, strlen(in), 0, sc), 0);
  assert_int_equal(lg_ml_process(m, sc, out, 0), 0);
  /* "done" (stderr) is open; so is "bye" (stdout): the safe offset is the
   * first line of the older one. */
  assert_int_equal(lg_ml_pending(m), 2);
  assert_int_equal(lg_ml_safe_offset(m), 228); /* "bye" */
  assert_int_equal(lg_ml_flush(m, out), 0);
  char *d = dump(out);
  const char *want =
      "65-191 S |hello\\n\\tat C.d(C.java:9)|\n"
      "0-228 ES |java.lang.IllegalStateException: x\\n\\tat A.b(A.java:1)|\n"
      "228-262 S |bye|\n"
      "262-297 ES |done|\n";
  if (strcmp(d, want) != 0)
    fail_msg("--- want\n%s--- got\n%s", want, d);
  /* Times are the first lines'. */
  assert_int_equal(out->recs[0].time_ns, INT64_C(1714521602000000000));
  assert_int_equal(out->recs[1].time_ns, INT64_C(1714521601000000000));
  free(d);
  lg_batch_destroy(sc);
  lg_batch_destroy(out);
  lg_framer_destroy(fr);
  lg_ml_destroy(m);
  lg_ml_conf_unref(c);
}

static void test_timeout(void **state) {
  (void)state;
  lg_ml_spec_t spec = {.start = "^S", .cont = "^C", .timeout_ms = 500};
  lg_ml_conf_t *c = conf(&spec);
  assert_int_equal(lg_ml_conf_timeout_ms(c), 500);
  lg_ml_t *m = lg_ml_create(c, 1 << 20);
  lg_framer_t *fr = lg_framer_create(LG_FORMAT_LINE, 1 << 20, 100);
  lg_batch_t *sc = lg_batch_create(1024), *out = lg_batch_create(1024);
  const char *a = "x\nS\nC1\n";
  assert_int_equal(lg_framer_feed(fr, a, strlen(a), 0, sc), 0);
  assert_int_equal(lg_ml_process(m, sc, out, 1000), 0);
  lg_batch_reset(sc);
  assert_int_equal(out->n, 1); /* x */
  assert_int_equal(lg_ml_safe_offset(m), 102);
  /* Another line at 1400 restarts the wait. */
  assert_int_equal(lg_framer_feed(fr, "C2\n", 3, 0, sc), 0);
  assert_int_equal(lg_ml_process(m, sc, out, 1400), 0);
  lg_batch_reset(sc);
  assert_int_equal(lg_ml_flush_idle(m, out, 1899), 0);
  assert_int_equal(out->n, 1);
  assert_int_equal(lg_ml_pending(m), 3);
  assert_int_equal(lg_ml_flush_idle(m, out, 1900), 0);
  assert_int_equal(out->n, 2);
  assert_int_equal(lg_ml_pending(m), 0);
  assert_int_equal(out->recs[1].offset, 102);
  assert_int_equal(out->recs[1].end_offset, 110);
  assert_true(lg_ml_safe_offset(m) == UINT64_MAX);
  lg_batch_destroy(sc);
  lg_batch_destroy(out);
  lg_framer_destroy(fr);
  lg_ml_destroy(m);
  lg_ml_conf_unref(c);
}

/* A group whose first line is empty (a blank line that may start one),
 * then lines that continue it. */
static void test_empty_first_line(void **state) {
  (void)state;
  lg_ml_spec_t spec = {.cont = "^\\s"};
  lg_ml_conf_t *c = conf(&spec);
  lg_ml_t *m = lg_ml_create(c, 1 << 20);
  lg_framer_t *fr = lg_framer_create(LG_FORMAT_LINE, 1 << 20, 100);
  lg_batch_t *sc = lg_batch_create(1024), *out = lg_batch_create(1024);
  const char *a = "\n at x\ny\n";
  assert_int_equal(lg_framer_feed(fr, a, strlen(a), 0, sc), 0);
  assert_int_equal(lg_ml_process(m, sc, out, 0), 0);
  assert_int_equal(lg_ml_flush(m, out), 0);
  assert_int_equal(out->n, 2);
  assert_int_equal(out->recs[0].body_len, 6);
  assert_memory_equal(out->data + out->recs[0].body_off, "\n at x", 6);
  lg_batch_destroy(sc);
  lg_batch_destroy(out);
  lg_framer_destroy(fr);
  lg_ml_destroy(m);
  lg_ml_conf_unref(c);
}

static void test_safe_offset_never_passes_open_group(void **state) {
  (void)state;
  /* Whatever way the bytes come, the safe offset is never past the first
   * line of an open group, and every record emitted ends at or before
   * the next open group's start. */
  const char *in = "a\nS1\nC1\nb\nS2\nC2\nC3\nc\n";
  lg_ml_spec_t spec = {.start = "^S", .cont = "^C"};
  lg_ml_conf_t *c = conf(&spec);
  lg_ml_t *m = lg_ml_create(c, 1 << 20);
  lg_framer_t *fr = lg_framer_create(LG_FORMAT_LINE, 1 << 20, 0);
  lg_batch_t *sc = lg_batch_create(1024), *out = lg_batch_create(1024);
  size_t n = strlen(in);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(lg_framer_feed(fr, in + i, 1, 0, sc), 0);
    assert_int_equal(lg_ml_process(m, sc, out, 0), 0);
    lg_batch_reset(sc);
    uint64_t safe = lg_ml_safe_offset(m);
    /* Open groups: S1 at 2, S2 at 10. */
    if (lg_ml_pending(m) > 0)
      assert_true(safe == 2 || safe == 10);
    for (uint32_t k = 0; k < out->n; k++)
      assert_true(out->recs[k].end_offset <= safe || safe == UINT64_MAX);
  }
  assert_int_equal(lg_ml_flush(m, out), 0);
  char *d = dump(out);
  assert_string_equal(d, "0-2 - |a|\n2-8 - |S1\\nC1|\n8-10 - |b|\n"
                         "10-19 - |S2\\nC2\\nC3|\n19-21 - |c|\n");
  free(d);
  lg_batch_destroy(sc);
  lg_batch_destroy(out);
  lg_framer_destroy(fr);
  lg_ml_destroy(m);
  lg_ml_conf_unref(c);
}

/* Parses `src` (a Lua expression) as the multiline value; returns the
 * error text ("" when it parsed). */
static const char *parse(const char *src, lg_ml_conf_t **out) {
  static char err[2048];
  lua_State *L = luaL_newstate();
  char chunk[1024];
  snprintf(chunk, sizeof chunk, "return %s", src);
  assert_int_equal(luaL_dostring(L, chunk), 0);
  int rc = lg_ml_conf_parse_lua(L, -1, "sources.app.multiline", out, err,
                                sizeof err);
  assert_int_equal(lua_gettop(L), 1);
  lua_close(L);
  if (rc == 0)
    err[0] = '\0';
  else
    assert_int_equal(rc, -EINVAL);
  return err;
}

static void test_config(void **state) {
  (void)state;
  lg_ml_conf_t *a = NULL, *b = NULL;
  assert_string_equal(parse("nil", &a), "");
  assert_null(a);
  assert_string_equal(parse("'java'", &a), "");
  assert_non_null(a);
  assert_string_equal(parse("'java'", &b), "");
  assert_true(lg_ml_conf_equal(a, b));
  lg_ml_conf_unref(b);
  assert_string_equal(
      parse("{ start = '^S', continue = '^\\\\s', max_lines = 9, "
            "max_bytes = '1KiB', timeout = '250ms' }",
            &b),
      "");
  assert_false(lg_ml_conf_equal(a, b));
  assert_int_equal(lg_ml_conf_timeout_ms(b), 250);
  lg_ml_conf_unref(a);
  lg_ml_conf_unref(b);
  assert_string_equal(parse("{ start = '(ab' }", &a),
                      "sources.app.multiline.start: invalid regex at offset "
                      "3: missing closing parenthesis");
  assert_null(a);
  assert_string_equal(parse("{ continue = 'a[' }", &a),
                      "sources.app.multiline.continue: invalid regex at "
                      "offset 2: missing terminating ] for character class");
  assert_string_equal(parse("'ruby'", &a),
                      "sources.app.multiline: unknown preset \"ruby\" "
                      "(known: \"java\", \"python\", \"go\")");
  assert_string_equal(parse("{}", &a),
                      "sources.app.multiline: needs start or continue (a "
                      "regex), or a preset");
  assert_string_equal(parse("7", &a),
                      "sources.app.multiline: expected a preset name "
                      "(\"java\", \"python\", \"go\") or a table, got number");
  const char *e = parse("{ start = 'x', strat = 1, max_lines = 0 }", &a);
  assert_non_null(strstr(e, "sources.app.multiline.strat: unknown key"));
  assert_non_null(strstr(e, "sources.app.multiline.max_lines:"));
  assert_null(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_go119_traces),
      cmocka_unit_test(test_cri_streams),
      cmocka_unit_test(test_timeout),
      cmocka_unit_test(test_empty_first_line),
      cmocka_unit_test(test_safe_offset_never_passes_open_group),
      cmocka_unit_test(test_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
