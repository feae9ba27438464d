/* Unit tests: lg_framing (line, CRI, Docker json-file, auto).
 *
 * Most tests are tables: an input file's bytes and the records expected,
 * written as one text line per record:
 *   <offset>-<end_offset> <flags> <time_ns> [<parse error>] |<body>|
 * with flags as letters (E stderr, S has stream, T truncated, X parse
 * error) or "-". Every input is also fed one byte at a time and in random
 * pieces, which must give the very same records. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/lg_time.h"
#include "framing/lg_framing.h"
#include "pipeline/lg_batch.h"

#define NOW 1000 /* now_ns passed to every feed */

/* Appends a readable line per record of `b` to `out` (a malloc'd string). */
static char *dump(const lg_batch_t *b) {
  size_t cap = 256, len = 0;
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
    const lg_field_t *pe =
        lg_batch_find(b, i, "lugger.parse_error", strlen("lugger.parse_error"));
    char head[256];
    int hl = snprintf(
        head, sizeof head, "%llu-%llu %s %lld %s%.*s%s|",
        (unsigned long long)r->offset, (unsigned long long)r->end_offset, flags,
        (long long)r->time_ns, pe ? "[" : "", pe ? (int)pe->s_len : 0,
        pe ? b->data + pe->s_off : "", pe ? "] " : "");
    size_t need = len + (size_t)hl + 2 * (size_t)r->body_len + 3;
    if (need > cap) {
      while (cap < need)
        cap *= 2;
      out = realloc(out, cap);
    }
    memcpy(out + len, head, (size_t)hl);
    len += (size_t)hl;
    /* NUL bytes show as \0 so the dump stays one C string. */
    for (uint32_t k = 0; k < r->body_len; k++) {
      if (len + 5 > cap)
        out = realloc(out, cap *= 2);
      char c = b->data[r->body_off + k];
      if (c == '\0') {
        out[len++] = '\\';
        out[len++] = '0';
      } else {
        out[len++] = c;
      }
    }
    out[len++] = '|';
    out[len++] = '\n';
    out[len] = '\0';
  }
  return out;
}

/* How to cut the input into feeds. */
enum { WHOLE = 0, BYTES = 1, RANDOM = 2 };

/* Frames `in` with the given cutting, then flushes when `flush` is set.
 * Returns the dump; checks safe_offset never moves back. */
static char *frame_cut(lg_format_t fmt, size_t max, const char *in, size_t len,
                       int cut, unsigned seed, int flush) {
  lg_framer_t *f = lg_framer_create(fmt, max, 0);
  assert_non_null(f);
  lg_batch_t *b = lg_batch_create(0);
  assert_non_null(b);
  uint64_t safe = 0;
  size_t at = 0;
  while (at < len) {
    size_t n = len - at;
    if (cut == BYTES)
      n = 1;
    else if (cut == RANDOM)
      n = 1 + (size_t)rand_r(&seed) % (n < 40 ? n : 40);
    assert_int_equal(lg_framer_feed(f, in + at, n, NOW, b), 0);
    at += n;
    uint64_t s = lg_framer_safe_offset(f);
    assert_true(s >= safe);
    assert_true(s <= at);
    safe = s;
  }
  if (flush) {
    assert_int_equal(lg_framer_flush(f, NOW, b), 0);
    assert_int_equal(lg_framer_pending_bytes(f), 0);
    assert_int_equal(lg_framer_safe_offset(f), len);
  }
  char *d = dump(b);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
  return d;
}

/* Deferred framing: hands batch `b` on as the tail does (lg_framer_cut),
 * checks the checkpoint it would get never moves back, frames its bytes as
 * a worker does and appends the batch's records to `*all`. */
static void hand_off(lg_framer_t *f, lg_batch_t *b, char **all, char **scratch,
                     size_t *scap, uint64_t *safe) {
  assert_int_equal(lg_framer_cut(f, b), 0);
  uint64_t s = lg_framer_safe_offset(f);
  assert_true(s >= *safe);
  *safe = s;
  if (b->raw_format != 0) {
    assert_false(b->raw_flush == 0 &&
                 b->raw_offset + (b->data_len - b->raw_start) != s);
    size_t n;
    const char *p = lg_framer_take_deferred(b, scratch, scap, &n);
    assert_non_null(p);
    assert_int_equal(lg_framer_frame_bytes(b, p, n), 0);
    assert_int_equal(b->raw_format, 0);
  }
  char *d = dump(b);
  size_t al = strlen(*all), dl = strlen(d);
  *all = realloc(*all, al + dl + 1);
  memcpy(*all + al, d, dl + 1);
  free(d);
  lg_batch_reset(b);
}

/* Frames `in` with a deferred framer (lg_framer_set_deferred): random
 * pieces, fed or read into lg_framer_raw_room, the batch handed on at
 * random points and framed as the worker would. Returns all records. */
static char *frame_deferred(lg_format_t fmt, size_t max, const char *in,
                            size_t len, unsigned seed, int flush, size_t most) {
  lg_framer_t *f = lg_framer_create(fmt, max, 0);
  assert_non_null(f);
  assert_int_equal(lg_framer_set_deferred(f, 1), 0);
  lg_batch_t *b = lg_batch_create(0);
  char *all = calloc(1, 1), *scratch = NULL;
  size_t scap = 0, at = 0;
  uint64_t safe = 0;
  while (at < len) {
    size_t n = len - at < most ? len - at : most;
    n = 1 + (size_t)rand_r(&seed) % n;
    char *room = rand_r(&seed) % 2 ? lg_framer_raw_room(f, b, n) : NULL;
    if (room != NULL) {
      memcpy(room, in + at, n);
      lg_framer_raw_commit(f, b, n, NOW);
    } else {
      assert_int_equal(lg_framer_feed(f, in + at, n, NOW, b), 0);
    }
    at += n;
    if (rand_r(&seed) % 3 == 0)
      hand_off(f, b, &all, &scratch, &scap, &safe);
  }
  if (flush)
    assert_int_equal(lg_framer_flush(f, NOW, b), 0);
  hand_off(f, b, &all, &scratch, &scap, &safe);
  if (flush) {
    assert_int_equal(lg_framer_pending_bytes(f), 0);
    assert_int_equal(lg_framer_safe_offset(f), len);
  }
  free(scratch);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
  return all;
}

/* Deferred framing gives the records of `want`; without a flush it may
 * hold back more of the last ones (up to its last clean cut). */
static void check_deferred(lg_format_t fmt, size_t max, const char *in,
                           size_t len, int flush, const char *want,
                           size_t most) {
  for (unsigned seed = 1; seed <= 20; seed++) {
    char *d = frame_deferred(fmt, max, in, len, seed, flush, most);
    if (flush)
      assert_string_equal(d, want);
    else
      assert_memory_equal(d, want, strlen(d));
    free(d);
  }
}

/* Frames `in` whole, byte by byte and in random pieces, and deferred for
 * the formats that can be; all must give `want`. */
static void check_frames(lg_format_t fmt, size_t max, const char *in,
                         size_t len, int flush, const char *want) {
  if (fmt == LG_FORMAT_CRI || fmt == LG_FORMAT_LINE)
    check_deferred(fmt, max, in, len, flush, want, 40);
  char *d = frame_cut(fmt, max, in, len, WHOLE, 0, flush);
  assert_string_equal(d, want);
  free(d);
  d = frame_cut(fmt, max, in, len, BYTES, 0, flush);
  assert_string_equal(d, want);
  free(d);
  for (unsigned seed = 1; seed <= 20; seed++) {
    d = frame_cut(fmt, max, in, len, RANDOM, seed, flush);
    assert_string_equal(d, want);
    free(d);
  }
}

#define CHECK(fmt, max, in, flush, want)                                       \
  check_frames(fmt, max, in, sizeof in - 1, flush, want)

/* ---- names ----------------------------------------------------------------
 */

static void test_format_names(void **state) {
  (void)state;
  lg_format_t f;
  const char *names[] = {"line", "cri", "docker", "auto"};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(lg_format_parse(names[i], &f), 0);
    assert_int_equal(f, i);
    assert_string_equal(lg_format_name(f), names[i]);
  }
  assert_int_equal(lg_format_parse("json", &f), -EINVAL);
  assert_int_equal(lg_format_parse("", &f), -EINVAL);
  assert_null(lg_framer_create(LG_FORMAT_LINE, 0, 0));
  lg_framer_destroy(NULL);
}

/* ---- line -----------------------------------------------------------------
 */

static void test_line_basic(void **state) {
  (void)state;
  CHECK(LG_FORMAT_LINE, 100, "one\ntwo\r\n\nthree\r\r\n", 0,
        "0-4 - 1000 |one|\n"
        "4-9 - 1000 |two|\n"
        "9-10 - 1000 ||\n"
        "10-18 - 1000 |three\r|\n");
}

static void test_line_no_trailing_lf(void **state) {
  (void)state;
  /* Held until flushed; a lone CR at the end is not a CRLF. */
  CHECK(LG_FORMAT_LINE, 100, "a\nbc", 0, "0-2 - 1000 |a|\n");
  CHECK(LG_FORMAT_LINE, 100, "a\nbc\r", 1,
        "0-2 - 1000 |a|\n"
        "2-5 - 1000 |bc\r|\n");
  lg_framer_t *f = lg_framer_create(LG_FORMAT_LINE, 100, 7);
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(lg_framer_feed(f, "x\nyz", 4, NOW, b), 0);
  assert_int_equal(b->n, 1);
  assert_int_equal(lg_framer_pending_bytes(f), 2);
  assert_int_equal(lg_framer_safe_offset(f), 9);
  assert_int_equal(lg_framer_flush(f, 5, b), 0);
  assert_int_equal(b->n, 2);
  assert_int_equal(b->recs[1].offset, 9);
  assert_int_equal(b->recs[1].end_offset, 11);
  assert_int_equal(b->recs[1].time_ns, 5);
  assert_int_equal(lg_framer_pending_bytes(f), 0);
  assert_int_equal(lg_framer_safe_offset(f), 11);
  /* Flushing with nothing held emits nothing. */
  assert_int_equal(lg_framer_flush(f, 5, b), 0);
  assert_int_equal(b->n, 2);
  /* Bytes after a flush start a new line. */
  assert_int_equal(lg_framer_feed(f, "w\n", 2, NOW, b), 0);
  assert_int_equal(b->n, 3);
  assert_int_equal(b->recs[2].offset, 11);
  assert_int_equal(b->recs[2].end_offset, 13);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
}

static void test_line_binary(void **state) {
  (void)state;
  CHECK(LG_FORMAT_LINE, 100, "a\0b\xff\n\0\n", 0,
        "0-5 - 1000 |a\\0b\xff|\n"
        "5-7 - 1000 |\\0|\n");
  /* Check the bytes themselves, NUL included. */
  lg_framer_t *f = lg_framer_create(LG_FORMAT_LINE, 100, 0);
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(lg_framer_feed(f, "a\0b\xff\n", 5, NOW, b), 0);
  assert_int_equal(b->n, 1);
  assert_int_equal(b->recs[0].body_len, 4);
  assert_memory_equal(b->data + b->recs[0].body_off, "a\0b\xff", 4);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
}

static void test_line_truncation(void **state) {
  (void)state;
  /* max 4: a line of exactly 4 (with or without CRLF) is whole; longer
   * lines are cut into 4-byte pieces, all flagged, the last one too. */
  CHECK(LG_FORMAT_LINE, 4, "abcd\nabcd\r\nabcde\nabcdefghij\r\nxy\n", 0,
        "0-5 - 1000 |abcd|\n"
        "5-11 - 1000 |abcd|\n"
        "11-15 T 1000 |abcd|\n"
        "15-17 T 1000 |e|\n"
        "17-21 T 1000 |abcd|\n"
        "21-25 T 1000 |efgh|\n"
        "25-29 T 1000 |ij|\n"
        "29-32 - 1000 |xy|\n");
  /* Exactly 2 * max plus CRLF: two full pieces, no empty third one. */
  CHECK(LG_FORMAT_LINE, 4, "abcdefgh\r\n", 0,
        "0-4 T 1000 |abcd|\n"
        "4-10 T 1000 |efgh|\n");
  /* max + 1 bytes, the last a CR, then LF: whole, one CR kept. */
  CHECK(LG_FORMAT_LINE, 4, "abc\r\r\n", 0, "0-6 - 1000 |abc\r|\n");
  /* A long last line without LF, flushed. */
  CHECK(LG_FORMAT_LINE, 3, "abcdefg", 1,
        "0-3 T 1000 |abc|\n"
        "3-6 T 1000 |def|\n"
        "6-7 T 1000 |g|\n");
  CHECK(LG_FORMAT_LINE, 1, "ab\n\n", 0,
        "0-1 T 1000 |a|\n"
        "1-3 T 1000 |b|\n"
        "3-4 - 1000 ||\n");
}

/* A 50 MiB line with max 1 MiB, fed in 64 KiB reads: 50 pieces, and the
 * framer never holds more than about one record. */
static void test_line_huge(void **state) {
  (void)state;
  const size_t max = 1 << 20, total = 50 * max, chunk = 65536;
  char *buf = malloc(chunk);
  for (size_t i = 0; i < chunk; i++)
    buf[i] = (char)('a' + i % 26);
  lg_framer_t *f = lg_framer_create(LG_FORMAT_LINE, max, 0);
  lg_batch_t *b = lg_batch_create(0);
  size_t pieces = 0, bytes = 0, most_pending = 0;
  uint64_t expect_off = 0;
  for (size_t at = 0; at < total; at += chunk) {
    assert_int_equal(lg_framer_feed(f, buf, chunk, NOW, b), 0);
    size_t pend = lg_framer_pending_bytes(f);
    if (pend > most_pending)
      most_pending = pend;
    for (uint32_t i = 0; i < b->n; i++) {
      assert_int_equal(b->recs[i].body_len, max);
      assert_int_equal(b->recs[i].flags, LG_REC_TRUNCATED);
      assert_int_equal(b->recs[i].offset, expect_off);
      expect_off += max;
      assert_int_equal(b->recs[i].end_offset, expect_off);
      pieces++;
      bytes += b->recs[i].body_len;
    }
    lg_batch_reset(b);
  }
  assert_int_equal(lg_framer_feed(f, "\n", 1, NOW, b), 0);
  for (uint32_t i = 0; i < b->n; i++) {
    pieces++;
    bytes += b->recs[i].body_len;
    assert_true(b->recs[i].flags & LG_REC_TRUNCATED);
  }
  assert_int_equal(b->recs[b->n - 1].end_offset, total + 1);
  assert_int_equal(pieces, 50);
  assert_int_equal(bytes, total);
  assert_true(most_pending <= max + 2);
  assert_int_equal(lg_framer_safe_offset(f), total + 1);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
  free(buf);
}

/* The same in one feed: the whole 50 MiB line in one buffer. */
static void test_line_huge_one_feed(void **state) {
  (void)state;
  const size_t max = 1 << 20, total = 50 * max + 7;
  char *buf = malloc(total + 1);
  memset(buf, 'x', total);
  buf[total] = '\n';
  lg_framer_t *f = lg_framer_create(LG_FORMAT_LINE, max, 0);
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(lg_framer_feed(f, buf, total + 1, NOW, b), 0);
  assert_int_equal(b->n, 51);
  assert_int_equal(b->recs[50].body_len, 7);
  assert_int_equal(b->recs[50].offset, 50 * max);
  assert_int_equal(b->recs[50].end_offset, total + 1);
  for (uint32_t i = 0; i < b->n; i++)
    assert_int_equal(b->recs[i].flags, LG_REC_TRUNCATED);
  assert_int_equal(lg_framer_pending_bytes(f), 0);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
  free(buf);
}

static void test_line_safe_offset_long(void **state) {
  (void)state;
  lg_framer_t *f = lg_framer_create(LG_FORMAT_LINE, 4, 100);
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(lg_framer_feed(f, "ab\nabcdefgh", 11, NOW, b), 0);
  /* "ab" emitted; "abcd" and "efgh"? Only pieces known to be followed by
   * more bytes: "abcd" (bytes 103-107); "efgh" waits. */
  assert_int_equal(b->n, 2);
  assert_int_equal(lg_framer_safe_offset(f), 107);
  assert_int_equal(lg_framer_pending_bytes(f), 4);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
}

static void test_reset(void **state) {
  (void)state;
  lg_framer_t *f = lg_framer_create(LG_FORMAT_CRI, 100, 0);
  lg_batch_t *b = lg_batch_create(0);
  const char *in = "2024-05-01T12:00:00Z stdout P part\n"
                   "2024-05-01T12:00:00Z stderr F err\n"
                   "half a li";
  assert_int_equal(lg_framer_feed(f, in, strlen(in), NOW, b), 0);
  assert_int_equal(b->n, 1);
  assert_int_equal(lg_framer_safe_offset(f), 0);
  assert_true(lg_framer_pending_bytes(f) > 0);
  /* copytruncate: the file starts again at 0. */
  lg_framer_reset(f, 0);
  assert_int_equal(lg_framer_pending_bytes(f), 0);
  assert_int_equal(lg_framer_safe_offset(f), 0);
  const char *in2 = "2024-05-01T12:00:01Z stdout F new\n";
  assert_int_equal(lg_framer_feed(f, in2, strlen(in2), NOW, b), 0);
  assert_int_equal(lg_framer_flush(f, NOW, b), 0);
  assert_int_equal(b->n, 2);
  assert_int_equal(b->recs[1].body_len, 3);
  assert_memory_equal(b->data + b->recs[1].body_off, "new", 3);
  assert_int_equal(b->recs[1].offset, 0);
  assert_int_equal(b->recs[1].end_offset, strlen(in2));
  assert_int_equal(lg_framer_safe_offset(f), strlen(in2));
  /* Reset to another offset. */
  lg_framer_reset(f, 500);
  assert_int_equal(lg_framer_safe_offset(f), 500);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
}

/* ---- CRI -------------------------------------------------------------------
 */

#define T0 1714564800000000000LL /* 2024-05-01T12:00:00Z */

static void test_cri_basic(void **state) {
  (void)state;
  CHECK(LG_FORMAT_CRI, 100,
        "2024-05-01T12:00:00.123456789Z stdout F hello world\n"
        "2024-05-01T12:00:00.5Z stderr F oops\n"
        "2024-05-01T12:00:00Z stdout F \n"
        "2024-05-01T12:00:00Z stdout F\n"
        "2024-05-01T12:00:00Z stdout F:x:y tagged\n"
        "2024-05-01T12:00:00Z stdout F  two spaces\r\n",
        0,
        "0-52 S 1714564800123456789 |hello world|\n"
        "52-89 ES 1714564800500000000 |oops|\n"
        "89-120 S 1714564800000000000 ||\n"
        "120-150 S 1714564800000000000 ||\n"
        "150-191 S 1714564800000000000 |tagged|\n"
        "191-234 S 1714564800000000000 | two spaces\r|\n");
}

static void test_cri_fraction_digits(void **state) {
  (void)state;
  const char *fr[] = {"",          ".1",        ".12",     ".123",
                      ".1234",     ".12345",    ".123456", ".1234567",
                      ".12345678", ".123456789"};
  const int64_t ns[] = {0,         100000000, 120000000, 123000000, 123400000,
                        123450000, 123456000, 123456700, 123456780, 123456789};
  for (int i = 0; i < 10; i++) {
    char in[128], want[128];
    int n = snprintf(in, sizeof in, "2024-05-01T12:00:00%sZ stdout F m%d\n",
                     fr[i], i);
    snprintf(want, sizeof want, "0-%d S %lld |m%d|\n", n,
             (long long)(T0 + ns[i]), i);
    check_frames(LG_FORMAT_CRI, 100, in, (size_t)n, 0, want);
  }
  /* Ten and more digits: RFC 3339 times, truncated to the nanosecond (Go's
   * time.Parse, the kubelet's reader, takes them too). An empty fraction:
   * not a CRI time. */
  CHECK(LG_FORMAT_CRI, 100,
        "2024-05-01T12:00:00.1234567890Z stdout F a\n"
        "2024-05-01T12:00:00.99999999999999Z stdout F c\n"
        "2024-05-01T12:00:00.Z stdout F b\n",
        0,
        "0-43 S 1714564800123456789 |a|\n"
        "43-90 S 1714564800999999999 |c|\n"
        "90-123 X 1000 [cri: bad timestamp] |2024-05-01T12:00:00.Z stdout F "
        "b|\n");
}

static void test_cri_offsets_zones(void **state) {
  (void)state;
  CHECK(LG_FORMAT_CRI, 100,
        "2024-05-01T14:00:00+02:00 stdout F a\n"
        "2024-05-01T07:30:00.25-04:30 stdout F b\n"
        "2024-05-01T12:00:00z stdout F c\n"
        "2024-05-01t12:00:00+00:00 stdout F d\n",
        0,
        "0-37 S 1714564800000000000 |a|\n"
        "37-77 S 1714564800250000000 |b|\n"
        "77-109 S 1714564800000000000 |c|\n"
        "109-146 S 1714564800000000000 |d|\n");
}

/* The time cache must not confuse times that share their seconds. */
static void test_cri_time_cache(void **state) {
  (void)state;
  CHECK(LG_FORMAT_CRI, 100,
        "2024-05-01T12:00:00.000000001Z stdout F a\n"
        "2024-05-01T12:00:00.999999999Z stdout F b\n"
        "2024-05-01T12:00:00.99999999xZ stdout F c\n"
        "2024-05-01T12:00:01.000000000Z stdout F d\n"
        "2024-05-01T12:00:00.5+01:00 stdout F e\n"
        "1969-12-31T23:59:59.500000000Z stdout F f\n"
        "1969-12-31T23:59:59.250000000Z stdout F g\n",
        0,
        "0-42 S 1714564800000000001 |a|\n"
        "42-84 S 1714564800999999999 |b|\n"
        "84-126 X 1000 [cri: bad timestamp] |2024-05-01T12:00:00.99999999xZ "
        "stdout F c|\n"
        "126-168 S 1714564801000000000 |d|\n"
        "168-207 S 1714561200500000000 |e|\n"
        "207-249 S -500000000 |f|\n"
        "249-291 S -750000000 |g|\n");
}

static void test_cri_partials(void **state) {
  (void)state;
  /* stdout and stderr interleave; each joins its own chunks; a record's
   * time and offset are its first chunk's. */
  CHECK(LG_FORMAT_CRI, 100,
        "2024-05-01T12:00:01Z stdout P out-1 \n"  /* 0-37 */
        "2024-05-01T12:00:02Z stderr P err-1 \n"  /* 37-74 */
        "2024-05-01T12:00:03Z stdout P out-2 \n"  /* 74-111 */
        "2024-05-01T12:00:04Z stderr F err-2\n"   /* 111-147 */
        "2024-05-01T12:00:05Z stdout F out-3\n"   /* 147-183 */
        "2024-05-01T12:00:06Z stdout F single\n", /* 183-220 */
        0,
        "37-147 ES 1714564802000000000 |err-1 err-2|\n"
        "0-183 S 1714564801000000000 |out-1 out-2 out-3|\n"
        "183-220 S 1714564806000000000 |single|\n");
}

/* The origin flags Fluent Bit compatibility reads (lua/lugger/fluentbit.lua):
 * the format, and for CRI whether the record began with a P line, also
 * when its last line is too long to hold. */
static void test_origin_flags(void **state) {
  (void)state;
  const char *cri = "2024-05-01T12:00:01Z stdout P a-\n"
                    "2024-05-01T12:00:02Z stdout F b\n"
                    "2024-05-01T12:00:03Z stderr F c\n";
  lg_framer_t *f = lg_framer_create(LG_FORMAT_CRI, 100, 0);
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(lg_framer_feed(f, cri, strlen(cri), NOW, b), 0);
  assert_int_equal(b->n, 2);
  assert_int_equal(b->recs[0].flags,
                   LG_REC_HAS_STREAM | LG_REC_FMT_CRI | LG_REC_CRI_PARTIAL);
  assert_int_equal(b->recs[1].flags,
                   LG_REC_HAS_STREAM | LG_REC_STDERR | LG_REC_FMT_CRI);
  lg_framer_destroy(f);
  lg_batch_reset(b);

  /* A long F line (held and cut in pieces) alone, and one after a P line:
   * every piece says whether the record began with a P line. */
  char line[400];
  char body[151];
  memset(body, 'x', sizeof body - 1);
  body[sizeof body - 1] = '\0';
  f = lg_framer_create(LG_FORMAT_CRI, 100, 0);
  int n =
      snprintf(line, sizeof line, "2024-05-01T12:00:04Z stdout F %s\n", body);
  for (int k = 0; k < n; k += 16)
    assert_int_equal(
        lg_framer_feed(f, line + k, (size_t)(n - k < 16 ? n - k : 16), NOW, b),
        0);
  const char *p = "2024-05-01T12:00:05Z stdout P p-\n";
  assert_int_equal(lg_framer_feed(f, p, strlen(p), NOW, b), 0);
  for (int k = 0; k < n; k += 16)
    assert_int_equal(
        lg_framer_feed(f, line + k, (size_t)(n - k < 16 ? n - k : 16), NOW, b),
        0);
  assert_int_equal(b->n, 4);
  for (uint32_t i = 0; i < 4; i++) {
    assert_int_equal(b->recs[i].flags & LG_REC_TRUNCATED, LG_REC_TRUNCATED);
    assert_int_equal(b->recs[i].flags & LG_REC_CRI_PARTIAL,
                     i < 2 ? 0 : LG_REC_CRI_PARTIAL);
  }
  lg_framer_destroy(f);
  lg_batch_reset(b);

  const char *dk = "{\"log\":\"d\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-"
                   "01T12:00:06Z\"}\n";
  f = lg_framer_create(LG_FORMAT_DOCKER, 100, 0);
  assert_int_equal(lg_framer_feed(f, dk, strlen(dk), NOW, b), 0);
  assert_int_equal(b->n, 1);
  assert_int_equal(b->recs[0].flags, LG_REC_HAS_STREAM | LG_REC_FMT_DOCKER);
  lg_framer_destroy(f);
  lg_batch_destroy(b);
}

static void test_cri_safe_offset(void **state) {
  (void)state;
  lg_framer_t *f = lg_framer_create(LG_FORMAT_CRI, 100, 1000);
  lg_batch_t *b = lg_batch_create(0);
  const char *l1 = "2024-05-01T12:00:01Z stdout P a\n"; /* 1000-1032 */
  const char *l2 = "2024-05-01T12:00:02Z stderr F b\n"; /* 1032-1064 */
  const char *l3 = "2024-05-01T12:00:03Z stdout F c\n"; /* 1064-1096 */
  assert_int_equal(lg_framer_safe_offset(f), 1000);
  assert_int_equal(lg_framer_feed(f, l1, strlen(l1), NOW, b), 0);
  assert_int_equal(lg_framer_safe_offset(f), 1000);
  assert_int_equal(lg_framer_pending_bytes(f), 1);
  /* stderr's record is emitted, but the open stdout chunk pins the
   * checkpoint at its line. */
  assert_int_equal(lg_framer_feed(f, l2, strlen(l2), NOW, b), 0);
  assert_int_equal(b->n, 1);
  assert_int_equal(lg_framer_safe_offset(f), 1000);
  assert_int_equal(lg_framer_feed(f, l3, 10, NOW, b), 0);
  assert_int_equal(lg_framer_safe_offset(f), 1000);
  assert_int_equal(lg_framer_feed(f, l3 + 10, strlen(l3) - 10, NOW, b), 0);
  assert_int_equal(b->n, 2);
  assert_int_equal(lg_framer_safe_offset(f), 1096);
  assert_int_equal(lg_framer_pending_bytes(f), 0);
  /* An open partial is emitted by a flush, ending at its last line. */
  assert_int_equal(lg_framer_feed(f, l1, strlen(l1), NOW, b), 0);
  assert_int_equal(lg_framer_feed(f, l2, strlen(l2), NOW, b), 0);
  assert_int_equal(lg_framer_safe_offset(f), 1096);
  assert_int_equal(lg_framer_flush(f, NOW, b), 0);
  assert_int_equal(b->n, 4);
  assert_int_equal(b->recs[3].offset, 1096);
  assert_int_equal(b->recs[3].end_offset, 1128);
  assert_int_equal(lg_framer_safe_offset(f), 1160);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
}

/* An open record with an empty body still waits: pending_bytes is not 0,
 * so a flush timeout will emit it. */
static void test_cri_empty_partial_pending(void **state) {
  (void)state;
  lg_framer_t *f = lg_framer_create(LG_FORMAT_CRI, 100, 0);
  lg_batch_t *b = lg_batch_create(0);
  const char *l = "2024-05-01T12:00:01Z stdout P \n";
  assert_int_equal(lg_framer_feed(f, l, strlen(l), NOW, b), 0);
  assert_int_equal(b->n, 0);
  assert_true(lg_framer_pending_bytes(f) > 0);
  assert_int_equal(lg_framer_safe_offset(f), 0);
  assert_int_equal(lg_framer_flush(f, NOW, b), 0);
  assert_int_equal(b->n, 1);
  assert_int_equal(b->recs[0].body_len, 0);
  assert_int_equal(b->recs[0].end_offset, strlen(l));
  assert_int_equal(lg_framer_pending_bytes(f), 0);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
}

static void test_cri_flush_order(void **state) {
  (void)state;
  /* Open records are flushed oldest first. */
  CHECK(LG_FORMAT_CRI, 100,
        "2024-05-01T12:00:01Z stderr P e\n"
        "2024-05-01T12:00:02Z stdout P o\n"
        "2024-05-01T12:00:03Z stdout P",
        1,
        "0-32 ES 1714564801000000000 |e|\n"
        "32-93 S 1714564802000000000 |o|\n");
}

static void test_cri_malformed(void **state) {
  (void)state;
  CHECK(LG_FORMAT_CRI, 100,
        "not cri at all\r\n"
        "2024-13-01T12:00:00Z stdout F bad month\n"
        "2024-05-01T12:00:00Z stdin F bad stream\n"
        "2024-05-01T12:00:00Z stdout X bad tag\n"
        "2024-05-01T12:00:00Z stdout hello\n"
        "2024-05-01T12:00:00Z stdout\n"
        "2024-05-01T12:00:00Z\n"
        "\n"
        "2024-05-01T12:00:00Z stdout FF x\n"
        "2024-05-01T12:00:00Z stdout F ok\n",
        0,
        "0-16 X 1000 [cri: bad timestamp] |not cri at all|\n"
        "16-56 X 1000 [cri: bad timestamp] |2024-13-01T12:00:00Z stdout F bad "
        "month|\n"
        "56-96 X 1000 [cri: bad stream] |2024-05-01T12:00:00Z stdin F bad "
        "stream|\n"
        "96-134 X 1000 [cri: bad tag] |2024-05-01T12:00:00Z stdout X bad tag|\n"
        "134-168 X 1000 [cri: bad tag] |2024-05-01T12:00:00Z stdout hello|\n"
        "168-196 X 1000 [cri: bad stream] |2024-05-01T12:00:00Z stdout|\n"
        "196-217 X 1000 [cri: bad timestamp] |2024-05-01T12:00:00Z|\n"
        "217-218 X 1000 [cri: bad timestamp] ||\n"
        "218-251 X 1000 [cri: bad tag] |2024-05-01T12:00:00Z stdout FF x|\n"
        "251-284 S 1714564800000000000 |ok|\n");
}

/* Times that do not fit int64 nanoseconds are not CRI times. */
static void test_cri_time_range(void **state) {
  (void)state;
  CHECK(LG_FORMAT_CRI, 100,
        "9999-12-31T23:59:59Z stdout F far\n"
        "1677-01-01T00:00:00Z stdout F early\n"
        "2261-12-31T23:59:59.999999999Z stdout F last\n",
        0,
        "0-34 X 1000 [cri: bad timestamp] |9999-12-31T23:59:59Z stdout F "
        "far|\n"
        "34-70 X 1000 [cri: bad timestamp] |1677-01-01T00:00:00Z stdout F "
        "early|\n"
        "70-115 S 9214646399999999999 |last|\n");
}

static void test_cri_malformed_between_partials(void **state) {
  (void)state;
  /* A broken line does not close or lose an open record. */
  CHECK(LG_FORMAT_CRI, 100,
        "2024-05-01T12:00:01Z stdout P a\n"
        "garbage\n"
        "2024-05-01T12:00:02Z stdout F b\n",
        0,
        "32-40 X 1000 [cri: bad timestamp] |garbage|\n"
        "0-72 S 1714564801000000000 |ab|\n");
}

static void test_cri_truncation(void **state) {
  (void)state;
  /* max 4: a joined record over max comes in 4-byte pieces; the first
   * piece has the record's offset, later ones their first byte's. Its
   * 8 bytes make exactly two pieces (no empty third). */
  CHECK(LG_FORMAT_CRI, 4,
        "2024-05-01T12:00:01Z stdout P abc\n"         /* 0-34, body at 30 */
        "2024-05-01T12:00:02Z stdout P def\n"         /* 34-68, body at 64 */
        "2024-05-01T12:00:03Z stdout F gh\n"          /* 68-101, body at 98 */
        "2024-05-01T12:00:04Z stdout F abcd\n"        /* 101-136 */
        "2024-05-01T12:00:05Z stderr F 0123456789\n", /* 136-177, body 166 */
        0,
        "0-65 ST 1714564801000000000 |abcd|\n"
        "65-101 ST 1714564801000000000 |efgh|\n"
        "101-136 S 1714564804000000000 |abcd|\n"
        "136-170 EST 1714564805000000000 |0123|\n"
        "170-174 EST 1714564805000000000 |4567|\n"
        "174-177 EST 1714564805000000000 |89|\n");
}

static void test_cri_huge_line(void **state) {
  (void)state;
  /* One CRI F line with a 3.5 MiB message, max 1 MiB, fed in 64 KiB
   * reads: four pieces with the line's time, stream and offsets. */
  const size_t max = 1 << 20, body = 3 * max + max / 2;
  const char *hdr = "2024-05-01T12:00:00.5Z stderr F ";
  size_t hl = strlen(hdr), total = hl + body + 1;
  char *in = malloc(total);
  memcpy(in, hdr, hl);
  memset(in + hl, 'q', body);
  in[total - 1] = '\n';
  lg_framer_t *f = lg_framer_create(LG_FORMAT_CRI, max, 0);
  lg_batch_t *b = lg_batch_create(0);
  size_t most = 0;
  for (size_t at = 0; at < total; at += 65536) {
    size_t n = total - at < 65536 ? total - at : 65536;
    assert_int_equal(lg_framer_feed(f, in + at, n, NOW, b), 0);
    if (lg_framer_pending_bytes(f) > most)
      most = lg_framer_pending_bytes(f);
    if (at + n < total)
      assert_int_equal(lg_framer_safe_offset(f), 0);
  }
  assert_true(most <= 2 * max + 128);
  assert_int_equal(b->n, 4);
  uint64_t want_off[] = {0, hl + max, hl + 2 * max, hl + 3 * max};
  for (uint32_t i = 0; i < 4; i++) {
    assert_int_equal(b->recs[i].flags, LG_REC_STDERR | LG_REC_HAS_STREAM |
                                           LG_REC_TRUNCATED | LG_REC_FMT_CRI);
    assert_int_equal(b->recs[i].time_ns, T0 + 500000000);
    assert_int_equal(b->recs[i].body_len, i < 3 ? max : max / 2);
    assert_int_equal(b->recs[i].offset, want_off[i]);
  }
  assert_int_equal(b->recs[3].end_offset, total);
  assert_int_equal(lg_framer_safe_offset(f), total);
  /* The same bytes in one feed give the same records. */
  lg_batch_t *b2 = lg_batch_create(0);
  lg_framer_t *f2 = lg_framer_create(LG_FORMAT_CRI, max, 0);
  assert_int_equal(lg_framer_feed(f2, in, total, NOW, b2), 0);
  char *d1 = dump(b), *d2 = dump(b2);
  assert_string_equal(d1, d2);
  free(d1);
  free(d2);
  lg_batch_destroy(b2);
  lg_framer_destroy(f2);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
  free(in);
}

static void test_cri_long_malformed(void **state) {
  (void)state;
  /* A malformed line longer than max is cut into flagged raw pieces. */
  CHECK(LG_FORMAT_CRI, 4, "0123456789\r\n", 0,
        "0-4 TX 1000 [cri: bad timestamp] |0123|\n"
        "4-8 TX 1000 [cri: bad timestamp] |4567|\n"
        "8-12 TX 1000 [cri: bad timestamp] |89|\n");
  /* Longer than max + the header room too. */
  char in[300], want[2000];
  memset(in, 'z', 299);
  in[299] = '\n';
  size_t wl = 0;
  for (int k = 0; k < 299; k += 16)
    wl += (size_t)snprintf(want + wl, sizeof want - wl,
                           "%d-%d TX 1000 [cri: bad timestamp] |%.*s|\n", k,
                           k + 16 < 299 ? k + 16 : 300,
                           k + 16 < 299 ? 16 : 299 - k, in);
  check_frames(LG_FORMAT_CRI, 16, in, 300, 0, want);
}

static void test_deferred_clean_prefix(void **state) {
  (void)state;
  const char *l = "2024-05-01T12:00:00Z stdout F a\n"  /* 0-32 */
                  "2024-05-01T12:00:00Z stderr P b\n"  /* 32-64 */
                  "2024-05-01T12:00:00Z stdout F c\n"  /* 64-96 */
                  "no cri at all\n"                    /* 96-110 */
                  "2024-05-01T12:00:00Z stderr F d\n"  /* 110-142 */
                  "2024-05-01T12:00:00Z stdout P e\n"; /* 142-174 */
  size_t n = strlen(l);
  /* Not after the last line (stdout open), nor between the stderr P and
   * its F; just after the F, both streams are closed. */
  assert_int_equal(lg_framer_clean_prefix(LG_FORMAT_CRI, 1024, l, n), 142);
  assert_int_equal(lg_framer_clean_prefix(LG_FORMAT_CRI, 1024, l, 141), 32);
  assert_int_equal(lg_framer_clean_prefix(LG_FORMAT_CRI, 1024, l, 110), 32);
  assert_int_equal(lg_framer_clean_prefix(LG_FORMAT_CRI, 1024, l, 31), 0);
  assert_int_equal(lg_framer_clean_prefix(LG_FORMAT_LINE, 1024, l, n), n);
  assert_int_equal(lg_framer_clean_prefix(LG_FORMAT_LINE, 1024, l, 40), 32);
  assert_int_equal(lg_framer_clean_prefix(LG_FORMAT_LINE, 1024, l, 0), 0);
  /* A line that only looks final is not: a bad time makes it a raw line,
   * so the stderr P before it stays open. */
  const char *m = "2024-05-01T12:00:00Z stderr P b\n"
                  "2024-99-01T12:00:00Z stderr F c\n";
  assert_int_equal(lg_framer_clean_prefix(LG_FORMAT_CRI, 1024, m, strlen(m)),
                   0);
  lg_framer_t *f = lg_framer_create(LG_FORMAT_DOCKER, 1024, 0);
  assert_int_equal(lg_framer_set_deferred(f, 1), -EINVAL);
  lg_framer_destroy(f);
}

/* A worker's scratch keeps no huge line's bytes after framing them: a
 * batch of one line over LG_FRAMER_SCRATCH_KEEP swaps its arena into the
 * scratch, and lg_framer_scratch_trim frees it; a small batch's bytes
 * then go into a fresh scratch, which is kept. */
static void test_deferred_scratch_trim(void **state) {
  (void)state;
  size_t big = LG_FRAMER_SCRATCH_KEEP + 100;
  char *in = malloc(big);
  assert_non_null(in);
  memset(in, 'a', big - 1);
  in[big - 1] = '\n';
  lg_framer_t *f = lg_framer_create(LG_FORMAT_LINE, 2 * big, 0);
  assert_non_null(f);
  assert_int_equal(lg_framer_set_deferred(f, 1), 0);
  lg_batch_t *b = lg_batch_create(0);
  size_t scap = 1024, n;
  char *scratch = malloc(scap); /* a worker's scratch from earlier batches */
  assert_non_null(scratch);
  assert_int_equal(lg_framer_feed(f, in, big, NOW, b), 0);
  assert_int_equal(lg_framer_cut(f, b), 0);
  assert_int_not_equal(b->raw_format, 0);
  const char *p = lg_framer_take_deferred(b, &scratch, &scap, &n);
  assert_non_null(p);
  assert_int_equal(n, big);
  assert_true(scap >= big); /* the batch's arena, swapped in */
  assert_int_equal(lg_framer_frame_bytes(b, p, n), 0);
  assert_int_equal(b->n, 1);
  assert_int_equal(b->recs[0].body_len, big - 1);
  lg_framer_scratch_trim(&scratch, &scap);
  assert_null(scratch);
  assert_int_equal(scap, 0);
  /* The next batch: two short lines, copied into a new scratch. */
  lg_batch_reset(b);
  assert_int_equal(lg_framer_feed(f, "x\ny\n", 4, NOW, b), 0);
  assert_int_equal(lg_framer_cut(f, b), 0);
  p = lg_framer_take_deferred(b, &scratch, &scap, &n);
  assert_non_null(p);
  assert_int_equal(n, 4);
  assert_int_equal(lg_framer_frame_bytes(b, p, n), 0);
  assert_int_equal(b->n, 2);
  assert_int_equal(b->recs[1].offset, big + 2);
  lg_framer_scratch_trim(&scratch, &scap);
  assert_non_null(scratch);
  assert_true(scap >= 4 && scap <= LG_FRAMER_SCRATCH_KEEP);
  free(scratch);
  free(in);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
}

static void test_deferred_long_partial_run(void **state) {
  (void)state;
  /* A stdout record of partial lines longer than the carry is kept for
   * (2 * max + 64 KiB), with stderr lines between them: the carry is
   * framed on the spot then, and the records are the same as ever. */
  size_t cap = 400000, len = 0;
  char *in = malloc(cap);
  for (int i = 0; i < 3000; i++) {
    len += (size_t)snprintf(in + len, cap - len,
                            "2024-05-01T12:00:00.%09dZ stdout P p%d\n", i, i);
    if (i % 7 == 0)
      len += (size_t)snprintf(in + len, cap - len,
                              "2024-05-01T12:00:01Z stderr F e%d\n", i);
  }
  len += (size_t)snprintf(in + len, cap - len,
                          "2024-05-01T12:00:02Z stdout F end\n"
                          "2024-05-01T12:00:03Z stdout F after\n");
  char *want = frame_cut(LG_FORMAT_CRI, 1024, in, len, WHOLE, 0, 1);
  assert_non_null(strstr(want, "|after|"));
  check_deferred(LG_FORMAT_CRI, 1024, in, len, 1, want, 4096);
  check_deferred(LG_FORMAT_CRI, 1024, in, len, 0, want, 4096);
  free(want);
  free(in);
}

/* ---- Docker ----------------------------------------------------------------
 */

static void test_docker_basic(void **state) {
  (void)state;
  CHECK(LG_FORMAT_DOCKER, 100,
        "{\"log\":\"hello \\\"w\\\"\\n\",\"stream\":\"stdout\","
        "\"time\":\"2024-05-01T12:00:00.123456789Z\"}\n"
        "{\"log\":\"caf\\u00e9\\ttab\\n\",\"stream\":\"stderr\","
        "\"time\":\"2024-05-01T12:00:01Z\"}\r\n"
        "{\"stream\":\"stdout\",\"log\":\"no newline at end\","
        "\"time\":\"2024-05-01T12:00:02Z\"}\n",
        1,
        "0-82 S 1714564800123456789 |hello \"w\"|\n"
        "82-158 ES 1714564801000000000 |caf\xc3\xa9\ttab|\n"
        "158-234 S 1714564802000000000 |no newline at end|\n");
}

static void test_docker_nul(void **state) {
  (void)state;
  const char in[] = "{\"log\":\"a\\u0000b\\u0000\\n\",\"stream\":\"stdout\","
                    "\"time\":\"2024-05-01T12:00:00Z\"}\n"
                    "{\"x\":\"\\u0000\",\"log\":\"c\\\\u0000\\n\","
                    "\"stream\":\"stdout\",\"time\":\"2024-05-01T12:00:00Z\"}\n"
                    /* cJSON reads a \u escape with non-hex digits as 0. */
                    "{\"log\":\"d\\uZZZZe\\n\",\"stream\":\"stdout\","
                    "\"time\":\"2024-05-01T12:00:00Z\"}\n"
                    /* A raw NUL byte (not JSON, but cJSON takes it). */
                    "{\"log\":\"f\0g\\n\",\"stream\":\"stdout\","
                    "\"time\":\"2024-05-01T12:00:00Z\"}\n";
  lg_framer_t *f = lg_framer_create(LG_FORMAT_DOCKER, 100, 0);
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(lg_framer_feed(f, in, sizeof in - 1, NOW, b), 0);
  assert_int_equal(b->n, 4);
  assert_int_equal(b->recs[0].body_len, 4);
  assert_memory_equal(b->data + b->recs[0].body_off, "a\0b\0", 4);
  assert_int_equal(b->recs[1].body_len, 7);
  assert_memory_equal(b->data + b->recs[1].body_off, "c\\u0000", 7);
  assert_int_equal(b->recs[2].body_len, 3);
  assert_memory_equal(b->data + b->recs[2].body_off, "d\0e", 3);
  assert_int_equal(b->recs[3].body_len, 3);
  assert_memory_equal(b->data + b->recs[3].body_off, "f\0g", 3);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
}

/* Docker splits messages at 16 KiB: pieces without "\n" are joined per
 * stream. */
static void test_docker_split_join(void **state) {
  (void)state;
  const size_t piece = 16384;
  char *msg = malloc(3 * piece);
  for (size_t i = 0; i < 3 * piece; i++)
    msg[i] = (char)('a' + i % 26);
  size_t cap = 4 * piece + 1024, len = 0;
  char *in = malloc(cap);
  for (int k = 0; k < 3; k++) {
    len +=
        (size_t)snprintf(in + len, cap - len,
                         "{\"log\":\"%.*s%s\",\"stream\":\"stdout\",\"time\":"
                         "\"2024-05-01T12:00:0%dZ\"}\n",
                         (int)piece, msg + k * piece, k == 2 ? "\\n" : "", k);
    if (k == 0)
      len += (size_t)snprintf(in + len, cap - len,
                              "{\"log\":\"err\\n\",\"stream\":\"stderr\","
                              "\"time\":\"2024-05-01T12:00:09Z\"}\n");
  }
  lg_framer_t *f = lg_framer_create(LG_FORMAT_DOCKER, 1 << 20, 0);
  lg_batch_t *b = lg_batch_create(0);
  for (size_t at = 0; at < len; at += 1000) {
    size_t n = len - at < 1000 ? len - at : 1000;
    assert_int_equal(lg_framer_feed(f, in + at, n, NOW, b), 0);
  }
  assert_int_equal(b->n, 2);
  assert_int_equal(b->recs[0].flags,
                   LG_REC_HAS_STREAM | LG_REC_STDERR | LG_REC_FMT_DOCKER);
  assert_int_equal(b->recs[1].flags, LG_REC_HAS_STREAM | LG_REC_FMT_DOCKER);
  assert_int_equal(b->recs[1].body_len, 3 * piece);
  assert_memory_equal(b->data + b->recs[1].body_off, msg, 3 * piece);
  assert_int_equal(b->recs[1].time_ns, T0);
  assert_int_equal(b->recs[1].offset, 0);
  assert_int_equal(b->recs[1].end_offset, len);
  assert_int_equal(lg_framer_safe_offset(f), len);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
  free(in);
  free(msg);
}

static void test_docker_malformed(void **state) {
  (void)state;
  CHECK(LG_FORMAT_DOCKER, 100,
        "{\"log\":\"unterminated\n"
        "[1,2]\n"
        "{\"msg\":\"x\"}\n"
        "{\"log\":\"x\\n\",\"stream\":\"stdin\",\"time\":\"2024-05-01T12:00:"
        "00Z\"}\n"
        "{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"yesterday\"}\n"
        "{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-01T12:00:"
        "00Z\"} "
        "trailing\n"
        "{\"log\":\"ok\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-01T12:00:"
        "00Z\"}\n",
        0,
        "0-21 X 1000 [docker: invalid JSON] |{\"log\":\"unterminated|\n"
        "21-27 X 1000 [docker: not a JSON object] |[1,2]|\n"
        "27-39 X 1000 [docker: no log string] |{\"msg\":\"x\"}|\n"
        "39-100 X 1000 [docker: bad stream] "
        "|{\"log\":\"x\\n\",\"stream\":\"stdin\","
        "\"time\":\"2024-05-01T12:00:00Z\"}|\n"
        "100-151 X 1000 [docker: bad time] "
        "|{\"log\":\"x\\n\",\"stream\":\"stdout\","
        "\"time\":\"yesterday\"}|\n"
        "151-222 X 1000 [docker: invalid JSON] |{\"log\":\"x\\n\",\"stream\":"
        "\"stdout\",\"time\":\"2024-05-01T12:00:00Z\"} trailing|\n"
        "222-285 S 1714564800000000000 |ok|\n");
}

static void test_docker_truncation(void **state) {
  (void)state;
  /* A log over max is cut; a line too long to parse becomes raw pieces. */
  CHECK(LG_FORMAT_DOCKER, 4,
        "{\"log\":\"abcdefghij\\n\",\"stream\":\"stdout\","
        "\"time\":\"2024-05-01T12:00:00Z\"}\n",
        0,
        "0-4 ST 1714564800000000000 |abcd|\n"
        "4-8 ST 1714564800000000000 |efgh|\n"
        "8-71 ST 1714564800000000000 |ij|\n");
  char in[5000];
  memset(in, 'y', sizeof in);
  in[0] = '{';
  in[sizeof in - 1] = '\n';
  lg_framer_t *f = lg_framer_create(LG_FORMAT_DOCKER, 100, 0);
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(lg_framer_feed(f, in, sizeof in, NOW, b), 0);
  assert_int_equal(b->n, 50);
  for (uint32_t i = 0; i < b->n; i++) {
    assert_int_equal(b->recs[i].flags, LG_REC_TRUNCATED | LG_REC_PARSE_ERROR);
    assert_true(b->recs[i].body_len <= 100);
  }
  lg_batch_destroy(b);
  lg_framer_destroy(f);
}

/* ---- auto -----------------------------------------------------------------
 */

static lg_format_t detected(const char *in) {
  lg_framer_t *f = lg_framer_create(LG_FORMAT_AUTO, 100, 0);
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(lg_framer_format(f), LG_FORMAT_AUTO);
  assert_int_equal(lg_framer_feed(f, in, strlen(in), NOW, b), 0);
  lg_format_t fmt = lg_framer_format(f);
  lg_batch_destroy(b);
  lg_framer_destroy(f);
  return fmt;
}

static void test_auto(void **state) {
  (void)state;
  assert_int_equal(detected("2024-05-01T12:00:00Z stdout F x\n"),
                   LG_FORMAT_CRI);
  assert_int_equal(detected("{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":"
                            "\"2024-05-01T12:00:00Z\"}\n"),
                   LG_FORMAT_DOCKER);
  assert_int_equal(detected("{\"msg\":\"x\"}\n"), LG_FORMAT_LINE);
  assert_int_equal(detected("plain text\n"), LG_FORMAT_LINE);
  /* Not decided before the first complete line. */
  assert_int_equal(detected("2024-05-01T12:00:00Z stdout F x"), LG_FORMAT_AUTO);
  /* Once decided, lines of another format are parse errors. */
  CHECK(LG_FORMAT_AUTO, 100,
        "2024-05-01T12:00:00Z stdout F x\n"
        "plain\n",
        0,
        "0-32 S 1714564800000000000 |x|\n"
        "32-38 X 1000 [cri: bad timestamp] |plain|\n");
  CHECK(LG_FORMAT_AUTO, 100,
        "{\"log\":\"x\\n\",\"stream\":\"stderr\",\"time\":\"2024-05-01T12:00:"
        "00Z\"}\n"
        "plain\n",
        0,
        "0-62 ES 1714564800000000000 |x|\n"
        "62-68 X 1000 [docker: invalid JSON] |plain|\n");
  CHECK(LG_FORMAT_AUTO, 100,
        "plain\r\n"
        "2024-05-01T12:00:00Z stdout F x\n",
        0,
        "0-7 - 1000 |plain|\n"
        "7-39 - 1000 |2024-05-01T12:00:00Z stdout F x|\n");
  /* A first line too long to hold: decided from its start. */
  CHECK(LG_FORMAT_AUTO, 8,
        "2024-05-01T12:00:00Z stdout F 0123456789abcdefghijklmnopqrstuvwxyz\n",
        0,
        "0-38 ST 1714564800000000000 |01234567|\n"
        "38-46 ST 1714564800000000000 |89abcdef|\n"
        "46-54 ST 1714564800000000000 |ghijklmn|\n"
        "54-62 ST 1714564800000000000 |opqrstuv|\n"
        "62-67 ST 1714564800000000000 |wxyz|\n");
  /* A flushed first line decides too. */
  CHECK(LG_FORMAT_AUTO, 100, "2024-05-01T12:00:00Z stderr F y", 1,
        "0-31 ES 1714564800000000000 |y|\n");
}

static void test_auto_long_plain_first_line(void **state) {
  (void)state;
  char in[100];
  memset(in, 'k', sizeof in);
  in[sizeof in - 1] = '\n';
  char want[1000];
  size_t wl = 0;
  for (int k = 0; k < 99; k += 8)
    wl += (size_t)snprintf(want + wl, sizeof want - wl, "%d-%d T 1000 |%.*s|\n",
                           k, k + 8 < 99 ? k + 8 : 100, k + 8 < 99 ? 8 : 99 - k,
                           in);
  /* 99 bytes > auto's hold for max 8? No: auto holds 2 * 8 + 4096, so this
   * line is decided whole, as plain text. */
  check_frames(LG_FORMAT_AUTO, 8, in, sizeof in, 0, want);
}

/* Real logs with CRLF line ends (loghub samples in tests/fixtures), read
 * in 4 KiB pieces: 2,000 records each, no CR left, offsets tiling the
 * file; auto settles on line. */
static void test_real_crlf_logs(void **state) {
  (void)state;
  const char *src = getenv("LUGGER_SOURCE_DIR");
  assert_non_null(src);
  const char *names[] = {"Apache_2k.log", "HDFS_2k.log", "Hadoop_2k.log"};
  for (int i = 0; i < 3; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fixtures/loghub/%s", src, names[i]);
    for (int fmt = 0; fmt < 2; fmt++) {
      FILE *fp = fopen(path, "rb");
      assert_non_null(fp);
      lg_framer_t *f =
          lg_framer_create(fmt ? LG_FORMAT_AUTO : LG_FORMAT_LINE, 1 << 20, 0);
      lg_batch_t *b = lg_batch_create(0);
      char buf[4096];
      size_t n, total = 0, crlf = 0;
      char prev = 0;
      while ((n = fread(buf, 1, sizeof buf, fp)) > 0) {
        for (size_t k = 0; k < n; k++) {
          crlf += buf[k] == '\n' && (k ? buf[k - 1] : prev) == '\r';
        }
        prev = buf[n - 1];
        assert_int_equal(lg_framer_feed(f, buf, n, NOW, b), 0);
        total += n;
      }
      fclose(fp);
      assert_int_equal(lg_framer_flush(f, NOW, b), 0);
      assert_int_equal(lg_framer_format(f), LG_FORMAT_LINE);
      assert_int_equal(b->n, 2000);
      assert_true(crlf > 0);
      uint64_t at = 0;
      for (uint32_t r = 0; r < b->n; r++) {
        const lg_rec_t *rec = &b->recs[r];
        assert_int_equal(rec->offset, at);
        at = rec->end_offset;
        assert_true(rec->body_len > 0);
        assert_int_not_equal(b->data[rec->body_off + rec->body_len - 1], '\r');
        assert_int_equal(rec->flags, 0);
      }
      assert_int_equal(at, total);
      lg_batch_destroy(b);
      lg_framer_destroy(f);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_format_names),
      cmocka_unit_test(test_line_basic),
      cmocka_unit_test(test_line_no_trailing_lf),
      cmocka_unit_test(test_line_binary),
      cmocka_unit_test(test_line_truncation),
      cmocka_unit_test(test_line_huge),
      cmocka_unit_test(test_line_huge_one_feed),
      cmocka_unit_test(test_line_safe_offset_long),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_cri_basic),
      cmocka_unit_test(test_cri_fraction_digits),
      cmocka_unit_test(test_cri_offsets_zones),
      cmocka_unit_test(test_cri_time_cache),
      cmocka_unit_test(test_cri_partials),
      cmocka_unit_test(test_cri_safe_offset),
      cmocka_unit_test(test_origin_flags),
      cmocka_unit_test(test_cri_empty_partial_pending),
      cmocka_unit_test(test_cri_flush_order),
      cmocka_unit_test(test_cri_malformed),
      cmocka_unit_test(test_cri_time_range),
      cmocka_unit_test(test_cri_malformed_between_partials),
      cmocka_unit_test(test_cri_truncation),
      cmocka_unit_test(test_cri_huge_line),
      cmocka_unit_test(test_cri_long_malformed),
      cmocka_unit_test(test_deferred_clean_prefix),
      cmocka_unit_test(test_deferred_long_partial_run),
      cmocka_unit_test(test_deferred_scratch_trim),
      cmocka_unit_test(test_docker_basic),
      cmocka_unit_test(test_docker_nul),
      cmocka_unit_test(test_docker_split_join),
      cmocka_unit_test(test_docker_malformed),
      cmocka_unit_test(test_docker_truncation),
      cmocka_unit_test(test_auto),
      cmocka_unit_test(test_auto_long_plain_first_line),
      cmocka_unit_test(test_real_crlf_logs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
