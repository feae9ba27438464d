/* Unit tests: the record parsers (lg_regex, lg_parse_json, lg_parse):
 * fields set without copying, typed values, invalid input leaving the
 * record alone, and the arena moving while fields are set. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_parse.h"
#include "pipeline/lg_record_json.h"
#include "pipeline/lg_regex.h"

static char err[256];

static lg_batch_t *one(const char *body) {
  lg_batch_t *b = lg_batch_create(64); /* small: setting fields moves it */
  assert_non_null(b);
  assert_int_equal(lg_batch_add(b, body, strlen(body), 0, 0, strlen(body), 0),
                   0);
  return b;
}

/* Record 0 as its JSON line, NUL-terminated, in a static buffer. */
static const char *line(const lg_batch_t *b) {
  static char out[1 << 16];
  lg_buf_t buf = LG_BUF_INIT;
  assert_int_equal(lg_json_encode_record(&buf, b, 0), 0);
  assert_true(buf.len < sizeof out);
  memcpy(out, buf.data, buf.len);
  out[buf.len - 1] = '\0'; /* the newline */
  lg_buf_free(&buf);
  return out;
}

static void test_regex_fields(void **state) {
  (void)state;
  lg_regex_t *re;
  const char *pat =
      "^(?<ip>\\S+) (?<n:int>\\S+) (?<f:float>\\S+) (?<ok:bool>\\S+)"
      "(?: (?<opt>x))?";
  assert_int_equal(lg_regex_create(pat, strlen(pat), 0, &re, err, sizeof err),
                   0);
  assert_int_equal(lg_regex_groups(re), 5);
  lg_batch_t *b = one("10.0.0.1 -42 2.5 off");
  uint64_t body_off = b->recs[0].body_off;
  assert_int_equal(lg_regex_rec(b, 0, re, "", 0, err, sizeof err), 1);
  /* ip points into the body: no copy. */
  const lg_field_t *ip = lg_batch_find(b, 0, "ip", 2);
  assert_non_null(ip);
  assert_int_equal(ip->s_off, body_off);
  assert_int_equal(ip->s_len, 8);
  assert_string_equal(line(b),
                      "{\"time\":\"1970-01-01T00:00:00.000000000Z\","
                      "\"body\":\"10.0.0.1 -42 2.5 off\",\"ip\":\"10.0.0.1\","
                      "\"n\":-42,\"f\":2.5,\"ok\":false}");
  /* A second batch: the cached key ids are checked, not trusted. */
  lg_batch_t *b2 = one("x 1 2 yes x");
  lg_batch_key_id(b2, "other", 5);
  assert_int_equal(lg_regex_rec(b2, 0, re, "", 0, err, sizeof err), 1);
  assert_string_equal(line(b2), "{\"time\":\"1970-01-01T00:00:00.000000000Z\","
                                "\"body\":\"x 1 2 yes x\",\"ip\":\"x\",\"n\":1,"
                                "\"f\":2,\"ok\":true,\"opt\":\"x\"}");
  assert_int_equal(lg_regex_rec(b2, 0, re, "nope", 4, err, sizeof err),
                   -ENOENT);
  assert_int_equal(lg_regex_rec(b2, 5, re, "", 0, err, sizeof err), -ERANGE);
  lg_batch_destroy(b2);
  lg_batch_destroy(b);
  lg_regex_destroy(re);
}

static void test_regex_time(void **state) {
  (void)state;
  lg_regex_t *re;
  const char *pat = "^\\[(?<time_local>(?<time:nginx>[^\\]]*))\\] (?<msg>.*)";
  assert_int_equal(lg_regex_create(pat, strlen(pat), 0, &re, err, sizeof err),
                   0);
  lg_batch_t *b = one("[01/May/2024:12:00:01 +0200] hello");
  assert_int_equal(lg_regex_rec(b, 0, re, "", 0, err, sizeof err), 1);
  assert_int_equal(b->recs[0].time_ns, 1714557601LL * 1000000000LL);
  assert_null(lg_batch_find(b, 0, "time", 4)); /* the time, not a field */
  assert_non_null(lg_batch_find(b, 0, "time_local", 10));
  lg_batch_destroy(b);
  /* A time not in the format: matched, the time unchanged, the reason. */
  b = one("[yesterday] hello");
  assert_int_equal(lg_regex_rec(b, 0, re, "", 0, err, sizeof err), 2);
  assert_int_equal(b->recs[0].time_ns, 0);
  assert_string_equal(err, "expected a day (1-31) at byte 1");
  assert_non_null(lg_batch_find(b, 0, "msg", 3));
  lg_batch_destroy(b);
  assert_int_equal(lg_regex_set_time_format(re, "%Q", 2, err, sizeof err),
                   -EINVAL);
  assert_string_equal(err, "group 'time': unknown directive '%Q' in format");
  lg_regex_destroy(re);
  assert_int_equal(
      lg_regex_create("(?<time:ngnix>x)", 16, 0, &re, err, sizeof err),
      -EINVAL);
  assert_non_null(strstr(err, "unknown time format 'ngnix'"));
}

static void test_regex_errors(void **state) {
  (void)state;
  lg_regex_t *re = NULL;
  assert_int_equal(lg_regex_create("(a", 2, 0, &re, err, sizeof err), -EINVAL);
  assert_null(re);
  assert_non_null(strstr(err, "missing closing parenthesis"));
  assert_int_equal(lg_regex_create("(?<a:nope>x)", 12, 0, &re, err, sizeof err),
                   -EINVAL);
  assert_string_equal(err,
                      "group 'a': unknown type 'nope' (int, float, bool, str)");
  /* A "(?<x:int>" inside a class or escaped is not a group. */
  const char *p = "[(?<a:int>]\\(?<b:int>)";
  assert_int_equal(lg_regex_create(p, strlen(p), 0, &re, err, sizeof err),
                   -EINVAL);
  lg_regex_destroy(NULL);
  /* Catastrophic backtracking stops at PCRE2's match limit, with its own
   * status (not the full arena's -E2BIG). */
  p = "^(a+)+$";
  assert_int_equal(lg_regex_create(p, strlen(p), 0, &re, err, sizeof err), 0);
  char subject[4001];
  memset(subject, 'a', 4000);
  subject[4000] = 'b';
  int32_t spans[4];
  assert_int_equal(lg_regex_exec(re, subject, sizeof subject, spans, 4),
                   -EOVERFLOW);
  assert_int_equal(lg_regex_exec(re, subject, 4000, spans, 4), 1);
  /* Offsets are int32 (re:match's subjects are Lua strings): a longer
   * subject is refused before it is read. */
  assert_int_equal(lg_regex_exec(re, subject, (size_t)INT32_MAX + 1, spans, 4),
                   -ERANGE);
  lg_regex_destroy(re);
}

static void test_json_atomic(void **state) {
  (void)state;
  lg_parse_scratch_t *s;
  assert_int_equal(lg_ffi_parse_scratch_create(&s), 0);
  lg_batch_t *b =
      one("{\"a\":\"plain\",\"b\":\"esc\\n\",\"n\":{\"x\":[1,2]},\"c\":");
  const char *before = strdup(line(b));
  assert_int_equal(
      lg_ffi_parse_rec_json(b, 0, "", 0, "", 0, "", 0, s, err, sizeof err),
      -EINVAL);
  assert_string_equal(err, "invalid JSON at byte 46: expected a value");
  assert_string_equal(line(b), before);
  free((void *)before);
  lg_batch_destroy(b);

  b = one("{\"a\":\"plain\",\"b\":\"esc\\n\",\"n\":{\"x\":[1,2]},\"i\":-0}");
  assert_int_equal(
      lg_ffi_parse_rec_json(b, 0, "", 0, "", 0, "", 0, s, err, sizeof err), 4);
  const lg_field_t *a = lg_batch_find(b, 0, "a", 1);
  assert_int_equal(a->s_off, b->recs[0].body_off + 6); /* zero-copy */
  const lg_field_t *n = lg_batch_find(b, 0, "n", 1);
  assert_int_equal(n->type, LG_VAL_JSON);
  assert_non_null(
      strstr(line(b),
             ",\"a\":\"plain\",\"b\":\"esc\\n\",\"n\":{\"x\":[1,2]},\"i\":0}"));
  lg_batch_destroy(b);

  /* A UTF-8 byte order mark before the object is skipped; values still
   * point into the body, offsets counted from its first byte. */
  b = one("\xEF\xBB\xBF {\"a\":\"v\"}");
  assert_int_equal(
      lg_ffi_parse_rec_json(b, 0, "", 0, "", 0, "", 0, s, err, sizeof err), 1);
  a = lg_batch_find(b, 0, "a", 1);
  assert_int_equal(a->s_off, b->recs[0].body_off + 10);
  assert_int_equal(a->s_len, 1);
  lg_batch_destroy(b);
  /* Only at the start, and only once. */
  b = one("\xEF\xBB\xBF\xEF\xBB\xBF{}");
  assert_int_equal(
      lg_ffi_parse_rec_json(b, 0, "", 0, "", 0, "", 0, s, err, sizeof err),
      -EINVAL);
  assert_string_equal(err, "not a JSON object (starts with '?')");
  lg_batch_destroy(b);
  b = one("\xEF\xBB\xBF");
  assert_int_equal(
      lg_ffi_parse_rec_json(b, 0, "", 0, "", 0, "", 0, s, err, sizeof err),
      -EINVAL);
  assert_string_equal(err, "no JSON: the text is empty");
  lg_batch_destroy(b);
  lg_ffi_parse_scratch_destroy(s);
}

/* A string value of every length up to 40 with one byte that the scan
 * must stop at, at every position, and the text ending 1 to 4 bytes
 * after the string: the 16-byte steps, the last overlapping step and the
 * byte loop of short texts must all find the same byte as a plain scan
 * would. Each case is checked against the value or the error that byte
 * means. */
static void test_json_string_scan(void **state) {
  (void)state;
  lg_parse_scratch_t *s;
  assert_int_equal(lg_ffi_parse_scratch_create(&s), 0);
  static const char *const kinds[] = {
      "",         /* none */
      "\\n",      /* escape */
      "\\u00e9",  /* \u escape */
      "\xC3\xA9", /* valid UTF-8 */
      "\xFF",     /* invalid UTF-8: kept as the byte */
      "\x01",     /* control character: an error */
      "\"",       /* the string ends there */
  };
  static const char *const decoded[] = {"",     "\n", "\xC3\xA9", "\xC3\xA9",
                                        "\xFF", NULL, NULL};
  static const char *const tails[] = {"}", "} ", "}\n\n\n", ",\"z\":1}"};
  for (size_t kind = 0; kind < sizeof kinds / sizeof kinds[0]; kind++)
    for (size_t n = 0; n <= 40; n++)
      for (size_t q = 0; q <= n; q++)
        for (size_t t = 0; t < sizeof tails / sizeof tails[0]; t++) {
          if (kind == 0 && q > 0)
            break; /* no special byte: one case per length */
          char text[128], want[64];
          size_t len = 0, wlen = 0;
          memcpy(text, "{\"k\":\"", 6);
          len = 6;
          for (size_t c = 0; c < n; c++) {
            if (c == q && kind > 0) {
              memcpy(text + len, kinds[kind], strlen(kinds[kind]));
              len += strlen(kinds[kind]);
              if (decoded[kind] != NULL) {
                memcpy(want + wlen, decoded[kind], strlen(decoded[kind]));
                wlen += strlen(decoded[kind]);
              }
            }
            text[len++] = (char)('a' + c % 26);
            want[wlen++] = (char)('a' + c % 26);
          }
          if (q == n && kind > 0) {
            memcpy(text + len, kinds[kind], strlen(kinds[kind]));
            len += strlen(kinds[kind]);
            if (decoded[kind] != NULL) {
              memcpy(want + wlen, decoded[kind], strlen(decoded[kind]));
              wlen += strlen(decoded[kind]);
            }
          }
          text[len++] = '"';
          memcpy(text + len, tails[t], strlen(tails[t]));
          len += strlen(tails[t]);
          lg_batch_t *b = lg_batch_create(64);
          assert_non_null(b);
          assert_int_equal(lg_batch_add(b, text, len, 0, 0, len, 0), 0);
          int rc = lg_ffi_parse_rec_json(b, 0, "", 0, "", 0, "", 0, s, err,
                                         sizeof err);
          char msg[96];
          if (kind == 5) { /* the control byte, at text[6 + q] */
            assert_int_equal(rc, -EINVAL);
            snprintf(msg, sizeof msg,
                     "invalid JSON at byte %zu: control character in a string",
                     6 + q + 1);
            assert_string_equal(err, msg);
          } else if (kind == 6 && q < n) { /* the string ended at 6 + q */
            assert_int_equal(rc, -EINVAL);
            snprintf(msg, sizeof msg,
                     "invalid JSON at byte %zu: expected ',' or '}'",
                     6 + q + 2);
            assert_string_equal(err, msg);
          } else if (kind == 6) { /* `""`: the string, then a stray `"` */
            assert_int_equal(rc, -EINVAL);
          } else {
            assert_int_equal(rc, t == 3 ? 2 : 1);
            const lg_field_t *f = lg_batch_find(b, 0, "k", 1);
            assert_non_null(f);
            assert_int_equal(f->type, LG_VAL_STR);
            assert_int_equal(f->s_len, wlen);
            assert_memory_equal(b->data + f->s_off, want, wlen);
          }
          lg_batch_destroy(b);
        }
  /* Unterminated strings of every length end the scan at the text's end. */
  for (size_t n = 0; n <= 40; n++) {
    char text[64];
    memcpy(text, "{\"k\":\"", 6);
    memset(text + 6, 'x', n);
    lg_batch_t *b = lg_batch_create(64);
    assert_non_null(b);
    assert_int_equal(lg_batch_add(b, text, 6 + n, 0, 0, 6 + n, 0), 0);
    assert_int_equal(
        lg_ffi_parse_rec_json(b, 0, "", 0, "", 0, "", 0, s, err, sizeof err),
        -EINVAL);
    char msg[96];
    snprintf(msg, sizeof msg, "invalid JSON at byte %zu: unterminated string",
             6 + n + 1);
    assert_string_equal(err, msg);
    lg_batch_destroy(b);
  }
  lg_ffi_parse_scratch_destroy(s);
}

static void test_text_parsers(void **state) {
  (void)state;
  lg_parse_scratch_t *s;
  assert_int_equal(lg_ffi_parse_scratch_create(&s), 0);
  lg_batch_t *b = one("a=1 b=\"x \\\"y\\\"\" c");
  assert_int_equal(lg_ffi_parse_rec_logfmt(b, 0, "", 0, s), 3);
  assert_non_null(
      strstr(line(b), "\"a\":\"1\",\"b\":\"x \\\"y\\\"\",\"c\":true"));
  lg_batch_destroy(b);

  /* \uXXXX (a surrogate pair as one character, NUL kept) decoded; a
   * lone surrogate or a short escape kept as written. */
  b = one("m=\"\\u00e9\\ud83d\\ude00\\u0000.\\ude00\\u12\"");
  assert_int_equal(lg_ffi_parse_rec_logfmt(b, 0, "", 0, s), 1);
  const lg_field_t *m = lg_batch_find(b, 0, "m", 1);
  assert_non_null(m);
  static const char want[] = "\xC3\xA9\xF0\x9F\x98\x80\0.\\ude00\\u12";
  assert_int_equal(m->s_len, sizeof want - 1);
  assert_memory_equal(b->data + m->s_off, want, sizeof want - 1);
  lg_batch_destroy(b);

  /* A byte order mark at the start is not part of the first key. */
  b = one("\xEF\xBB\xBF"
          "a=1 b=2");
  assert_int_equal(lg_ffi_parse_rec_logfmt(b, 0, "", 0, s), 2);
  assert_non_null(lg_batch_find(b, 0, "a", 1));
  lg_batch_destroy(b);

  b = one("k1:v1,k2 : v2,junk");
  assert_int_equal(lg_ffi_parse_rec_kv(b, 0, "", 0, ",", 1, ":", 1, s), 2);
  assert_non_null(strstr(line(b), "\"k1\":\"v1\",\"k2\":\"v2\"}"));
  lg_batch_destroy(b);

  b = one("1,\"a,\"\"b\",,x");
  static const char cols[] = "n:int\0s\0\0last";
  assert_int_equal(lg_ffi_parse_rec_csv(b, 0, "", 0, cols, sizeof cols - 1, ',',
                                        s, err, sizeof err),
                   3);
  assert_non_null(strstr(line(b), "\"n\":1,\"s\":\"a,\\\"b\",\"last\":\"x\"}"));
  lg_batch_destroy(b);

  /* CSV and key/value text after a byte order mark; a mark alone is an
   * empty text. */
  b = one("\xEF\xBB\xBF"
          "7,x");
  assert_int_equal(lg_ffi_parse_rec_csv(b, 0, "", 0, cols, sizeof cols - 1, ',',
                                        s, err, sizeof err),
                   2);
  assert_non_null(strstr(line(b), "\"n\":7,\"s\":\"x\"}"));
  lg_batch_destroy(b);
  b = one("\xEF\xBB\xBF");
  assert_int_equal(lg_ffi_parse_rec_csv(b, 0, "", 0, cols, sizeof cols - 1, ',',
                                        s, err, sizeof err),
                   0);
  lg_batch_destroy(b);
  b = one("\xEF\xBB\xBF"
          "k1:v1");
  assert_int_equal(lg_ffi_parse_rec_kv(b, 0, "", 0, ",", 1, ":", 1, s), 1);
  assert_non_null(lg_batch_find(b, 0, "k1", 2));
  lg_batch_destroy(b);
  lg_ffi_parse_scratch_destroy(s);
}

static void test_time(void **state) {
  (void)state;
  lg_batch_t *b = one("x");
  assert_int_equal(
      lg_ffi_parse_rec_time(b, 0, "1.5", 3, "epoch", 5, err, sizeof err), 0);
  assert_int_equal(b->recs[0].time_ns, 1500000000);
  assert_int_equal(
      lg_ffi_parse_rec_time(b, 0, "x", 1, "epoch", 5, err, sizeof err),
      -EINVAL);
  assert_int_equal(
      lg_ffi_parse_rec_time(b, 0, "x", 1, "%Q", 2, err, sizeof err),
      -EOPNOTSUPP);
  assert_int_equal(
      lg_ffi_parse_rec_time(b, 3, "1", 1, "epoch", 5, err, sizeof err),
      -ERANGE);
  lg_batch_destroy(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_regex_fields),
      cmocka_unit_test(test_regex_errors),
      cmocka_unit_test(test_regex_time),
      cmocka_unit_test(test_json_atomic),
      cmocka_unit_test(test_text_parsers),
      cmocka_unit_test(test_time),
      cmocka_unit_test(test_json_string_scan),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
