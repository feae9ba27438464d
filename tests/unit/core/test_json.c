/* Unit tests: lg_json (string escaping, numbers, record encoding) and
 * lg_time (RFC 3339). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/lg_json.h"
#include "core/lg_time.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_record_json.h"

static void check_json_string(const char *in, size_t len, const char *want) {
  lg_buf_t b = LG_BUF_INIT;
  assert_int_equal(lg_json_append_string(&b, in, len), 0);
  lg_buf_putc(&b, '\0');
  assert_string_equal(b.data, want);
  lg_buf_free(&b);
}

static void test_string_escapes(void **state) {
  (void)state;
  check_json_string("plain", 5, "\"plain\"");
  check_json_string("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
  check_json_string("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
  check_json_string("\x01\x1f", 2, "\"\\u0001\\u001f\"");
  check_json_string("nul\0x", 5, "\"nul\\u0000x\"");
}

static void test_string_utf8(void **state) {
  (void)state;
  check_json_string("caf\xc3\xa9", 5, "\"caf\xc3\xa9\"");           /* valid */
  check_json_string("\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\""); /* emoji */
  check_json_string("a\xffz", 3, "\"a\xef\xbf\xbdz\""); /* invalid byte */
  check_json_string("\xc0\xaf", 2,
                    "\"\xef\xbf\xbd\xef\xbf\xbd\""); /* overlong */
  check_json_string("\xed\xa0\x80", 3,
                    "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""); /* surrogate */
  check_json_string("\xe2\x82", 2,
                    "\"\xef\xbf\xbd\xef\xbf\xbd\""); /* truncated */
}

/* The escaping rules written out byte by byte: the oracle for
 * lg_json_put_string's 16-byte and overlapping-word paths. */
static size_t ref_utf8(const unsigned char *s, size_t n) {
  if (s[0] >= 0xc2 && s[0] <= 0xdf)
    return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
  size_t need = s[0] >= 0xe0 && s[0] <= 0xef   ? 3
                : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                               : 0;
  if (need == 0 || n < need)
    return 0;
  for (size_t k = 1; k < need; k++)
    if ((s[k] & 0xc0) != 0x80)
      return 0;
  if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) ||
      (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))
    return 0;
  return need;
}

static size_t ref_escape(const unsigned char *s, size_t len, char *out) {
  char *p = out;
  *p++ = '"';
  for (size_t i = 0; i < len;) {
    unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      *p++ = '\\';
      *p++ = (char)c;
      i++;
    } else if (c < 0x20) {
      const char *e = c == '\n'   ? "\\n"
                      : c == '\r' ? "\\r"
                      : c == '\t' ? "\\t"
                      : c == '\b' ? "\\b"
                      : c == '\f' ? "\\f"
                                  : NULL;
      if (e != NULL) {
        memcpy(p, e, 2);
        p += 2;
      } else {
        p += sprintf(p, "\\u%04x", c);
      }
      i++;
    } else if (c < 0x80) {
      *p++ = (char)c;
      i++;
    } else {
      size_t n = ref_utf8(s + i, len - i);
      if (n == 0) {
        memcpy(p, "\xef\xbf\xbd", 3);
        p += 3;
        i++;
      } else {
        memcpy(p, s + i, n);
        p += n;
        i += n;
      }
    }
  }
  *p++ = '"';
  return (size_t)(p - out);
}

/* lg_json_put_string against ref_escape, with the input and the output
 * each in a heap block of exactly their size (ASan sees any byte read
 * or written outside them). */
static void check_escape(const unsigned char *in, size_t len) {
  unsigned char *src = malloc(len ? len : 1);
  size_t room = lg_json_string_room(len);
  char *dst = malloc(room);
  char *want = malloc(room);
  assert_non_null(src);
  assert_non_null(dst);
  assert_non_null(want);
  memcpy(src, in, len);
  size_t wlen = ref_escape(src, len, want);
  char *end = lg_json_put_string(dst, (const char *)src, len);
  assert_int_equal((size_t)(end - dst), wlen);
  assert_memory_equal(dst, want, wlen);
  free(src);
  free(dst);
  free(want);
}

/* Every length to 70 with one byte or sequence of each kind at every
 * position (the 16-byte steps, the last overlapping step, the 8- and
 * 4-byte words and the byte loop all meet it), then random strings. */
static void test_string_escape_paths(void **state) {
  (void)state;
  static const char *const kinds[] = {
      "\"",
      "\\",
      "\n",
      "\x01",
      "\x1f",
      "\x7f",
      "\x80",
      "\xff",
      "\xc3\xa9",
      "\xe2\x82\xac",
      "\xf0\x9f\x98\x80",
      "\xed\xa0\x80",
      "\xc0\xaf",
      "\xe2\x82",
      "\xf4\x90\x80\x80",
      "\0",
  };
  static const size_t klen[] = {1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 4, 3, 2, 2, 4, 1};
  unsigned char buf[320];
  for (size_t len = 0; len <= 70; len++) {
    for (size_t c = 0; c < len; c++)
      buf[c] = (unsigned char)('a' + c % 26);
    check_escape(buf, len);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
      for (size_t q = 0; q + klen[k] <= len; q++) {
        for (size_t c = 0; c < len; c++)
          buf[c] = (unsigned char)('a' + c % 26);
        memcpy(buf + q, kinds[k], klen[k]);
        check_escape(buf, len);
        /* And cut short: a sequence the string's end splits. */
        if (klen[k] > 1)
          check_escape(buf, q + 1);
      }
  }
  /* Random strings over an alphabet heavy in bytes that are not plain. */
  static const unsigned char alpha[] = "ab \"\\\n\x01\x7f\x80\xbf\xc3\xa9\xe2"
                                       "\x82\xac\xf0\x9f\xed\xa0\xff";
  unsigned seed = 12345;
  for (int n = 0; n < 20000; n++) {
    seed = seed * 1103515245u + 12345u;
    size_t len = (seed >> 8) % 300;
    int plainish = n % 2;
    for (size_t c = 0; c < len; c++) {
      seed = seed * 1103515245u + 12345u;
      unsigned r = seed >> 10;
      buf[c] = plainish && r % 16 != 0 ? (unsigned char)('A' + r % 50)
                                       : alpha[r % (sizeof alpha - 1)];
    }
    check_escape(buf, len);
  }
}

static void test_numbers(void **state) {
  (void)state;
  lg_buf_t b = LG_BUF_INIT;
  lg_json_append_int(&b, INT64_MIN);
  lg_buf_putc(&b, ' ');
  lg_json_append_int(&b, 9007199254740993LL);
  lg_buf_putc(&b, ' ');
  lg_json_append_number(&b, 200.0);
  lg_buf_putc(&b, ' ');
  lg_json_append_number(&b, 0.1);
  lg_buf_putc(&b, ' ');
  lg_json_append_number(&b, 1.0 / 0.0);
  lg_buf_putc(&b, '\0');
  assert_string_equal(b.data,
                      "-9223372036854775808 9007199254740993 200 0.1 null");
  lg_buf_free(&b);
}

static void test_time_roundtrip(void **state) {
  (void)state;
  int64_t ns;
  char out[LG_TIME_RFC3339_MAX];
  assert_int_equal(
      lg_time_parse_rfc3339("2024-05-01T12:00:00.123456789Z", 30, &ns), 0);
  assert_int_equal(lg_time_format_rfc3339(ns, out), 30);
  assert_string_equal(out, "2024-05-01T12:00:00.123456789Z");
  assert_int_equal(lg_time_parse_rfc3339("2024-05-01T14:00:00+02:00", 25, &ns),
                   0);
  lg_time_format_rfc3339(ns, out);
  assert_string_equal(out, "2024-05-01T12:00:00.000000000Z");
  assert_int_equal(
      lg_time_parse_rfc3339("2024-05-01T12:00:00.5-00:30", 27, &ns), 0);
  lg_time_format_rfc3339(ns, out);
  assert_string_equal(out, "2024-05-01T12:30:00.500000000Z");
  assert_int_equal(lg_time_parse_rfc3339("1969-12-31T23:59:59.9Z", 22, &ns), 0);
  assert_int_equal(ns, -100000000);
  lg_time_format_rfc3339(ns, out);
  assert_string_equal(out, "1969-12-31T23:59:59.900000000Z");
  assert_int_equal(lg_time_parse_rfc3339("2024-05-01 12:00:00Z", 20, &ns), 0);
  assert_int_equal(lg_time_parse_rfc3339("2024-13-01T12:00:00Z", 20, &ns),
                   -EINVAL);
  /* Days the month does not have (RFC 3339 5.7). */
  assert_int_equal(lg_time_parse_rfc3339("2024-02-30T12:00:00Z", 20, &ns),
                   -EINVAL);
  assert_int_equal(lg_time_parse_rfc3339("2023-02-29T12:00:00Z", 20, &ns),
                   -EINVAL);
  assert_int_equal(lg_time_parse_rfc3339("2024-06-31T12:00:00Z", 20, &ns),
                   -EINVAL);
  assert_int_equal(lg_time_parse_rfc3339("2024-02-29T12:00:00Z", 20, &ns), 0);
  assert_int_equal(lg_time_parse_rfc3339("2024-05-01T12:00:00.Z", 21, &ns),
                   -EINVAL);
  /* More than nine fraction digits: truncated to nanoseconds. */
  assert_int_equal(
      lg_time_parse_rfc3339("2024-05-01T12:00:00.1234567891Z", 31, &ns), 0);
  lg_time_format_rfc3339(ns, out);
  assert_string_equal(out, "2024-05-01T12:00:00.123456789Z");
  assert_int_equal(
      lg_time_parse_rfc3339("1969-12-31T23:59:59.9999999999Z", 31, &ns), 0);
  assert_int_equal(ns, -1);
  assert_int_equal(
      lg_time_parse_rfc3339("2024-05-01T12:00:00.1234567891x", 31, &ns),
      -EINVAL);
  assert_int_equal(lg_time_parse_rfc3339("2024-05-01T12:00:00", 19, &ns),
                   -EINVAL);
  /* Outside int64 nanoseconds: an error, not an overflow. */
  assert_int_equal(lg_time_parse_rfc3339("9999-12-31T23:59:59Z", 20, &ns),
                   -EINVAL);
  assert_int_equal(lg_time_parse_rfc3339("0001-01-01T00:00:00Z", 20, &ns),
                   -EINVAL);
  assert_int_equal(lg_time_parse_rfc3339("2262-01-01T00:00:00Z", 20, &ns), 0);
}

static void test_encode_record(void **state) {
  (void)state;
  lg_batch_t *b = lg_batch_create(0);
  lg_meta_t *m = lg_meta_create();
  lg_meta_add_str(m, "log.file.path", "/var/log/a.log", 14);
  lg_meta_add_int(m, "k8s.container.restart_count", 0);
  lg_meta_seal(m);
  lg_batch_set_meta(b, m);
  lg_meta_unref(m);
  assert_int_equal(lg_batch_add(b, "GET / 200", 9, 0, 0, 10,
                                LG_REC_HAS_STREAM | LG_REC_STDERR),
                   0);
  lg_buf_t out = LG_BUF_INIT;
  lg_json_encode_record(&out, b, 0);
  lg_buf_putc(&out, '\0');
  assert_string_equal(out.data,
                      "{\"time\":\"1970-01-01T00:00:00.000000000Z\","
                      "\"body\":\"GET / 200\",\"log.iostream\":\"stderr\","
                      "\"log.file.path\":\"/var/log/a.log\","
                      "\"k8s.container.restart_count\":0}\n");

  /* Fields: typed, replaced in place, shadowing body and metadata. */
  lg_batch_set_int(b, 0, "status", 6, 200);
  lg_batch_set_str(b, 0, "method", 6, "GET", 3);
  lg_batch_set_num(b, 0, "rt", 2, 0.25);
  lg_batch_set_bool(b, 0, "ok", 2, 1);
  lg_batch_set_null(b, 0, "user", 4);
  lg_batch_set_json(b, 0, "tags", 4, "[\"a\",1]", 7);
  lg_batch_set_int(b, 0, "status", 6, 201);
  lg_batch_del(b, 0, "body", 4);
  lg_batch_set_str(b, 0, "log.file.path", 13, "/x", 2);
  lg_batch_del(b, 0, "rt", 2);
  out.len = 0;
  lg_json_encode_record(&out, b, 0);
  lg_buf_putc(&out, '\0');
  assert_string_equal(out.data,
                      "{\"time\":\"1970-01-01T00:00:00.000000000Z\","
                      "\"log.iostream\":\"stderr\",\"log.file.path\":\"/x\","
                      "\"k8s.container.restart_count\":0,\"status\":201,"
                      "\"method\":\"GET\",\"ok\":true,\"user\":null,"
                      "\"tags\":[\"a\",1]}\n");
  lg_buf_free(&out);
  lg_batch_destroy(b);
}

/* The encoder's "time" (a per-thread cache of the day's date) against
 * lg_time_format_rfc3339: the ends of int64 (clamped years), either side
 * of the epoch and of midnight, negative fractions, records of one day in
 * and out of order and days taking turns. */
static void test_encode_time(void **state) {
  (void)state;
  const int64_t S = 1000000000, D = 86400 * S;
  const int64_t day = 20413 * D; /* 2025-11-21 */
  int64_t t[] = {INT64_MIN,
                 INT64_MIN + 1,
                 INT64_MAX,
                 INT64_MAX - 1,
                 0,
                 -1,
                 1,
                 -S,
                 -S - 1,
                 -D,
                 -D - 1,
                 -D + 1,
                 D - 1,
                 D,
                 day,
                 day + 10 * 3600 * S + 5,
                 day + 23 * 3600 * S + 59 * 60 * S + 59 * S + 999999999,
                 day + D,
                 day + 3600 * S,
                 day - 1,
                 day + 59 * S,
                 day + D - 1,
                 day + 2 * D + 1234567,
                 day + 12 * 3600 * S,
                 -100000 * D - 7,
                 -100000 * D + 3 * 3600 * S,
                 4000000 * (D / 1000) + 1};
  lg_batch_t *b = lg_batch_create(0);
  for (size_t k = 0; k < sizeof t / sizeof t[0]; k++)
    assert_int_equal(lg_batch_add(b, "x", 1, t[k], 0, 1, 0), (int64_t)k);
  lg_buf_t out = LG_BUF_INIT;
  /* Twice over, so that each record also follows the last one's day. */
  for (int pass = 0; pass < 2; pass++)
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
      out.len = 0;
      assert_int_equal(lg_json_encode_record(&out, b, (uint32_t)k), 0);
      char want[80], f[LG_TIME_RFC3339_MAX];
      lg_time_format_rfc3339(t[k], f);
      snprintf(want, sizeof want, "{\"time\":\"%s\",\"body\":\"x\"}\n", f);
      assert_int_equal(out.len, strlen(want));
      assert_memory_equal(out.data, want, out.len);
    }
  lg_buf_free(&out);
  lg_batch_destroy(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_string_escapes),
      cmocka_unit_test(test_string_utf8),
      cmocka_unit_test(test_string_escape_paths),
      cmocka_unit_test(test_numbers),
      cmocka_unit_test(test_time_roundtrip),
      cmocka_unit_test(test_encode_record),
      cmocka_unit_test(test_encode_time),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
