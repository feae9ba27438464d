/* Unit tests: lg_timefmt (time text in a named or strftime-style format to
 * nanoseconds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/lg_time.h"
#include "core/lg_timefmt.h"

/* 2026-12-07T12:00:00Z, the "now" of the syslog tests. */
static const int64_t NOW = 1796644800LL * 1000000000LL;

static char err[256];

static int64_t ok(const char *fmt, const char *s) {
  int64_t ns = 0;
  int rc = lg_timefmt_parse(fmt, strlen(fmt), s, strlen(s), NOW, &ns, err,
                            sizeof err);
  if (rc != 0)
    fail_msg("%s in %s: %d %s", s, fmt, rc, err);
  return ns;
}

/* The RFC 3339 text of parsing s, to compare readably. */
static const char *text(const char *fmt, const char *s) {
  static char out[LG_TIME_RFC3339_MAX];
  lg_time_format_rfc3339(ok(fmt, s), out);
  return out;
}

static int bad(const char *fmt, const char *s) {
  int64_t ns = 0;
  return lg_timefmt_parse(fmt, strlen(fmt), s, strlen(s), NOW, &ns, err,
                          sizeof err);
}

static void test_named(void **state) {
  (void)state;
  assert_string_equal(text("nginx", "01/May/2024:12:00:01 +0200"),
                      "2024-05-01T10:00:01.000000000Z");
  assert_string_equal(text("apache", "10/Oct/2000:13:55:36 -0700"),
                      "2000-10-10T20:55:36.000000000Z");
  assert_string_equal(text("rfc3339", "2024-05-01T12:00:00.5-01:30"),
                      "2024-05-01T13:30:00.500000000Z");
  assert_string_equal(text("iso8601", "2024-05-01T12:00Z"),
                      "2024-05-01T12:00:00.000000000Z");
  assert_string_equal(text("iso8601", "20240501T120000,123456789123"),
                      "2024-05-01T12:00:00.123456789Z");
  assert_string_equal(text("iso8601", "2024-05-01 12:00:00-0330"),
                      "2024-05-01T15:30:00.000000000Z");
  assert_int_equal(ok("epoch", "1.5"), 1500000000);
  assert_int_equal(ok("epoch", "-1.5"), -1500000000);
  assert_int_equal(ok("epoch_ms", "1714564800123"), 1714564800123000000LL);
  assert_int_equal(ok("epoch_us", "1.5"), 1500);
  assert_int_equal(ok("epoch_ns", "9223372036854775807"), INT64_MAX);
}

/* RFC 3339's fraction is one digit or more, of any length: digits past
 * the ninth are truncated (not rounded) to nanoseconds, in every format
 * that reads a fraction. */
static void test_long_fraction(void **state) {
  (void)state;
  static const char *const fmts[] = {"rfc3339", "iso8601",
                                     "%Y-%m-%dT%H:%M:%S.%f%z"};
  for (size_t k = 0; k < sizeof fmts / sizeof *fmts; k++) {
    const char *f = fmts[k];
    /* 10 to 30 digits */
    assert_string_equal(text(f, "2024-05-01T12:00:00.1234567891Z"),
                        "2024-05-01T12:00:00.123456789Z");
    assert_string_equal(
        text(f, "2024-05-01T12:00:00.123456789999999999999999999999+00:00"),
        "2024-05-01T12:00:00.123456789Z");
    assert_string_equal(text(f, "2024-05-01T23:59:59.99999999999999Z"),
                        "2024-05-01T23:59:59.999999999Z");
    assert_string_equal(text(f, "2024-05-01T12:00:00.0000000009-01:00"),
                        "2024-05-01T13:00:00.000000000Z");
    /* digits then junk, no digits after the '.', a '.' and junk */
    assert_int_equal(bad(f, "2024-05-01T12:00:00.1234567891x"),
                     LG_TIMEFMT_NOMATCH);
    assert_int_equal(bad(f, "2024-05-01T12:00:00.12345678912345x6Z"),
                     LG_TIMEFMT_NOMATCH);
    assert_int_equal(bad(f, "2024-05-01T12:00:00.Z"), LG_TIMEFMT_NOMATCH);
    assert_int_equal(bad(f, "2024-05-01T12:00:00."), LG_TIMEFMT_NOMATCH);
    assert_int_equal(bad(f, "2024-05-01T12:00:00.x1Z"), LG_TIMEFMT_NOMATCH);
  }
  /* 1 MiB of fraction digits: read once, to the end. */
  size_t big = (size_t)1 << 20;
  char *t = malloc(big + 32);
  assert_non_null(t);
  memcpy(t, "2024-05-01T12:00:00.", 20);
  memset(t + 20, '7', big);
  memcpy(t + 20 + big, "Z", 2);
  assert_string_equal(text("rfc3339", t), "2024-05-01T12:00:00.777777777Z");
  assert_string_equal(text("iso8601", t), "2024-05-01T12:00:00.777777777Z");
  free(t);
  /* A long fraction of an epoch number counts to the nanosecond too. */
  assert_int_equal(ok("epoch", "1.1234567891234567891234"), 1123456789);
  assert_int_equal(ok("epoch_ms", "1.0000019"), 1000001);
  assert_int_equal(bad("epoch", "1."), LG_TIMEFMT_NOMATCH);
}

/* Edges: days a month does not have in rfc3339 (as the other formats
 * say), the int64 ends of the epoch formats, negative %s with a fraction,
 * a format's non-ASCII bytes named in messages. */
static void test_edges(void **state) {
  (void)state;
  assert_int_equal(bad("rfc3339", "2024-02-30T00:00:00Z"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("rfc3339", "2023-02-29T00:00:00Z"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("rfc3339", "1900-02-29T00:00:00Z"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("rfc3339", "2024-04-31T00:00:00+01:00"),
                   LG_TIMEFMT_NOMATCH);
  assert_string_equal(text("rfc3339", "2024-02-29T00:00:00Z"),
                      "2024-02-29T00:00:00.000000000Z");
  assert_string_equal(text("rfc3339", "2000-02-29T00:00:00Z"),
                      "2000-02-29T00:00:00.000000000Z");
  assert_string_equal(text("rfc3339", "2024-12-31T23:59:59Z"),
                      "2024-12-31T23:59:59.000000000Z");
  assert_int_equal(ok("epoch_ns", "-9223372036854775808"), INT64_MIN);
  assert_int_equal(bad("epoch_ns", "-9223372036854775809"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(ok("epoch", "-9223372036.854775808"), INT64_MIN);
  assert_int_equal(ok("epoch", "9223372036.854775807"), INT64_MAX);
  assert_int_equal(bad("epoch", "9223372036.854775808"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("epoch", "99999999999999999999"), LG_TIMEFMT_NOMATCH);
  assert_string_equal(err, "number too large");
  assert_int_equal(ok("epoch_ns", "-0"), 0);
  assert_int_equal(ok("%s.%f", "-1.5"), -1500000000);
  assert_int_equal(ok("%s.%f", "-0.25"), -250000000);
  assert_int_equal(ok("%s.%f", "1.5"), 1500000000);
  int64_t ns;
  assert_int_equal(lg_timefmt_parse("%Y-%m-%d\0", 9, "2024-05-01x", 11, NOW,
                                    &ns, err, sizeof err),
                   LG_TIMEFMT_NOMATCH);
  assert_string_equal(err, "expected byte 0x00 at byte 11");
  assert_int_equal(bad("%Y\xe5\xb9\xb4", "2024x"), LG_TIMEFMT_NOMATCH);
  assert_string_equal(err, "expected byte 0xe5 at byte 5");
  assert_int_equal(ok("%Y\xe5\xb9\xb4", "2024\xe5\xb9\xb4"),
                   1704067200LL * 1000000000LL);
}

static void test_syslog_year(void **state) {
  (void)state;
  assert_string_equal(text("syslog", "Dec  7 11:59:59"),
                      "2026-12-07T11:59:59.000000000Z");
  /* Up to a day ahead is this year (clocks differ); more is last year. */
  assert_string_equal(text("syslog", "Dec  8 11:00:00"),
                      "2026-12-08T11:00:00.000000000Z");
  assert_string_equal(text("syslog", "Dec 31 23:00:00"),
                      "2025-12-31T23:00:00.000000000Z");
  assert_string_equal(text("syslog", "Jan 1 00:00:00"),
                      "2026-01-01T00:00:00.000000000Z");
}

static void test_directives(void **state) {
  (void)state;
  assert_string_equal(
      text("%Y-%m-%dT%H:%M:%S.%f%z", "2024-05-01T12:00:00.1+0000"),
      "2024-05-01T12:00:00.100000000Z");
  assert_string_equal(text("%F %T.%N", "2024-05-01 12:00:00.000000001"),
                      "2024-05-01T12:00:00.000000001Z");
  assert_string_equal(text("%d %B %y %I:%M %p", "1 january 99 12:30 am"),
                      "1999-01-01T00:30:00.000000000Z");
  assert_string_equal(text("%d %B %y %I:%M %p", "1 JANUARY 68 12:30 PM"),
                      "2068-01-01T12:30:00.000000000Z");
  assert_string_equal(
      text("%A, %d-%b-%Y %H:%M:%S %Z", "Wednesday, 01-May-2024 12:00:00 GMT"),
      "2024-05-01T12:00:00.000000000Z");
  assert_string_equal(text("[%Y]%%", "[2024]%"),
                      "2024-01-01T00:00:00.000000000Z");
  assert_string_equal(text("%s.%f", "1714564800.25"),
                      "2024-05-01T12:00:00.250000000Z");
  assert_string_equal(text("%Y %j", "2023 365"),
                      "2023-12-31T00:00:00.000000000Z");
}

static void test_mismatch(void **state) {
  (void)state;
  assert_int_equal(bad("nginx", "01/May/2024:12:00:01"), LG_TIMEFMT_NOMATCH);
  assert_string_equal(err, "expected a time zone offset (Z, +hh, +hhmm or "
                           "+hh:mm) at the end of the text");
  assert_int_equal(bad("%Y-%m-%d", "2024-13-01"), LG_TIMEFMT_NOMATCH);
  assert_string_equal(err, "a month (1-12) out of range at byte 6");
  assert_int_equal(bad("%Y-%m-%d", "2024-04-31"), LG_TIMEFMT_NOMATCH);
  assert_string_equal(err, "no such date");
  assert_int_equal(bad("%Y %j", "2023 366"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("%Y", "24"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("%Y", ""), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("%H:%M", "12:00 "), LG_TIMEFMT_NOMATCH);
  assert_string_equal(err, "unexpected text at byte 6");
  assert_int_equal(bad("%s", "1714564800123"), LG_TIMEFMT_NOMATCH);
  assert_string_equal(err, "more than 12 digits of seconds since the epoch at "
                           "byte 13 (milliseconds? use \"epoch_ms\", "
                           "\"epoch_us\" or \"epoch_ns\")");
  assert_int_equal(bad("epoch", "1e9"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("epoch", "10000000000"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("epoch_ns", "9223372036854775808"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("%Y", "2263"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("rfc3339", "2024-05-01"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("iso8601", "2024-05-01X"), LG_TIMEFMT_NOMATCH);
  assert_int_equal(bad("%b", "Mayo"), LG_TIMEFMT_NOMATCH);
}

static void test_bad_format(void **state) {
  (void)state;
  assert_int_equal(bad("%Y %Q", "whatever"), LG_TIMEFMT_BADFMT);
  assert_string_equal(err, "unknown directive '%Q' in format");
  assert_int_equal(bad("%Y %", "2024 "), LG_TIMEFMT_BADFMT);
  assert_string_equal(err, "format ends with a lone '%'");
  assert_int_equal(bad("ngnix", "x"), LG_TIMEFMT_BADFMT);
  assert_non_null(strstr(err, "unknown time format 'ngnix'"));
  assert_int_equal(bad("", "x"), LG_TIMEFMT_BADFMT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_named),       cmocka_unit_test(test_long_fraction),
      cmocka_unit_test(test_syslog_year), cmocka_unit_test(test_directives),
      cmocka_unit_test(test_mismatch),    cmocka_unit_test(test_bad_format),
      cmocka_unit_test(test_edges),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
