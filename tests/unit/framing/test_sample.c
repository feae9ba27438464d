/* Unit tests: lg_sample (sample logs as records for lugger test, repl and
 * lugger.testing): JSON lines fed in pieces, blank and CRLF lines, errors
 * with the line number, framed formats, metadata and fingerprint, and
 * copying a record with its fields into another batch. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/lg_buf.h"
#include "core/lg_fingerprint.h"
#include "core/lg_json.h"
#include "framing/lg_framing.h"
#include "framing/lg_sample.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_record_json.h"

#define NOW 1714564800000000000LL /* 2024-05-01T12:00:00Z */

/* Record i of b as its JSON line, without the newline. */
static char *line_of(lg_batch_t *b, uint32_t i, lg_buf_t *buf) {
  buf->len = 0;
  assert_int_equal(lg_json_encode_record(buf, b, i), 0);
  buf->data[buf->len - 1] = '\0';
  return buf->data;
}

static void test_format_parse(void **state) {
  (void)state;
  int f = 99;
  assert_int_equal(lg_sample_format_parse("json", 4, &f), 0);
  assert_int_equal(f, LG_SAMPLE_JSON);
  assert_int_equal(lg_sample_format_parse("cri", 3, &f), 0);
  assert_int_equal(f, LG_FORMAT_CRI);
  assert_int_equal(lg_sample_format_parse("criX", 3, &f), 0); /* by length */
  assert_int_equal(lg_sample_format_parse("yaml", 4, &f), -EINVAL);
  assert_int_equal(lg_sample_format_parse("a-very-long-format-name", 23, &f),
                   -EINVAL);
  assert_null(lg_sample_create(7, NULL, 0));
}

static void test_json_lines_in_pieces(void **state) {
  (void)state;
  const char *text = "{\"body\":\"a\",\"n\":1}\r\n"
                     "\n   \n"
                     "{\"body\":\"b\",\"time\":\"2024-05-01T12:00:01Z\","
                     "\"log.iostream\":\"stderr\",\"m\":{\"k\":[1]}}\n"
                     "{\"x\":true}"; /* last line without newline */
  size_t len = strlen(text);
  /* Every cut into two feeds gives the same records. */
  for (size_t cut = 0; cut <= len; cut++) {
    lg_sample_t *s = lg_sample_create(LG_SAMPLE_JSON, "s.jsonl", 7);
    lg_batch_t *b = lg_batch_create(1024);
    assert_non_null(s);
    assert_non_null(b);
    lg_sample_begin(s, b);
    char err[128] = "";
    assert_int_equal(lg_sample_feed(s, text, cut, NOW, b, err, sizeof err), 0);
    assert_int_equal(
        lg_sample_feed(s, text + cut, len - cut, NOW, b, err, sizeof err), 0);
    assert_int_equal(lg_sample_finish(s, NOW, b, err, sizeof err), 0);
    assert_int_equal(b->n, 3);
    lg_buf_t buf = LG_BUF_INIT;
    assert_string_equal(
        line_of(b, 0, &buf),
        "{\"time\":\"2024-05-01T12:00:00.000000000Z\","
        "\"body\":\"a\",\"log.file.path\":\"s.jsonl\",\"n\":1}");
    assert_string_equal(line_of(b, 1, &buf),
                        "{\"time\":\"2024-05-01T12:00:01.000000000Z\","
                        "\"body\":\"b\",\"log.iostream\":\"stderr\","
                        "\"log.file.path\":\"s.jsonl\",\"m\":{\"k\":[1]}}");
    assert_string_equal(line_of(b, 2, &buf),
                        "{\"time\":\"2024-05-01T12:00:00.000000000Z\","
                        "\"log.file.path\":\"s.jsonl\",\"x\":true}");
    /* offsets: the first line's CRLF and the blank lines count */
    assert_int_equal(b->recs[0].offset, 0);
    assert_int_equal(b->recs[1].offset, 25);
    assert_int_equal(b->recs[2].end_offset, len);
    for (uint32_t i = 0; i < b->n; i++)
      assert_int_equal(b->recs[i].routes, 1);
    assert_int_equal(b->fingerprint, lg_fp_update(LG_FP_INIT, text, len));
    lg_buf_free(&buf);
    lg_batch_destroy(b);
    lg_sample_destroy(s);
  }
}

static void test_json_error(void **state) {
  (void)state;
  lg_sample_t *s = lg_sample_create(LG_SAMPLE_JSON, NULL, 0);
  lg_batch_t *b = lg_batch_create(1024);
  lg_sample_begin(s, b);
  char err[128] = "";
  const char *text = "{}\n\n[1]\n{}\n";
  assert_int_equal(
      lg_sample_feed(s, text, strlen(text), NOW, b, err, sizeof err), -EINVAL);
  assert_string_equal(err, "<stdin>:3: a JSON array, not an object "
                           "(--format json reads one object per line)");
  assert_int_equal(b->n, 1);
  assert_null(b->meta); /* stdin: no log.file.path */
  lg_batch_destroy(b);
  lg_sample_destroy(s);

  /* Bad JSON says where; too deep says so (both were "not a JSON
   * object"). */
  static const struct {
    const char *text, *want;
  } bad[] = {
      {"{\"a\": 1 \"b\": 2}\n", "<stdin>:1: invalid JSON at byte 9"},
      {"plain text\n", "<stdin>:1: invalid JSON at byte 1"},
      {"\"s\"\n", "<stdin>:1: a JSON string, not an object (--format json "
                  "reads one object per line)"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    s = lg_sample_create(LG_SAMPLE_JSON, NULL, 0);
    b = lg_batch_create(1024);
    lg_sample_begin(s, b);
    assert_int_equal(lg_sample_feed(s, bad[k].text, strlen(bad[k].text), NOW, b,
                                    err, sizeof err),
                     -EINVAL);
    assert_string_equal(err, bad[k].want);
    lg_batch_destroy(b);
    lg_sample_destroy(s);
  }
  lg_buf_t deep = LG_BUF_INIT;
  for (int i = 0; i < 1200; i++)
    lg_buf_append(&deep, "{\"a\":", 5);
  lg_buf_append(&deep, "1", 1);
  for (int i = 0; i < 1200; i++)
    lg_buf_append(&deep, "}", 1);
  lg_buf_append(&deep, "\n", 1);
  s = lg_sample_create(LG_SAMPLE_JSON, NULL, 0);
  b = lg_batch_create(1024);
  lg_sample_begin(s, b);
  assert_int_equal(
      lg_sample_feed(s, deep.data, deep.len, NOW, b, err, sizeof err), -EINVAL);
  assert_string_equal(err, "<stdin>:1: JSON nested deeper than 1000 levels");
  lg_buf_free(&deep);
  lg_batch_destroy(b);
  lg_sample_destroy(s);
}

static void test_framed(void **state) {
  (void)state;
  lg_sample_t *s = lg_sample_create(LG_FORMAT_CRI, "p.log", 5);
  lg_batch_t *b = lg_batch_create(1024);
  lg_sample_begin(s, b);
  const char *text = "2024-05-01T12:00:01Z stderr P ERROR user=\n"
                     "2024-05-01T12:00:02Z stdout F other\n"
                     "2024-05-01T12:00:03Z stderr F eve";
  char err[64];
  assert_int_equal(
      lg_sample_feed(s, text, strlen(text), NOW, b, err, sizeof err), 0);
  assert_int_equal(b->n, 1);
  assert_int_equal(lg_sample_finish(s, NOW, b, err, sizeof err), 0);
  assert_int_equal(b->n, 2);
  lg_buf_t buf = LG_BUF_INIT;
  assert_string_equal(line_of(b, 1, &buf),
                      "{\"time\":\"2024-05-01T12:00:01.000000000Z\","
                      "\"body\":\"ERROR user=eve\",\"log.iostream\":\"stderr\","
                      "\"log.file.path\":\"p.log\"}");
  assert_int_equal(b->recs[1].routes, 1);
  /* begin empties the batch for the next records, keeping the metadata */
  lg_sample_begin(s, b);
  assert_int_equal(b->n, 0);
  assert_non_null(b->meta);
  lg_buf_free(&buf);
  lg_batch_destroy(b);
  lg_sample_destroy(s);
}

static void test_copy_record(void **state) {
  (void)state;
  lg_sample_t *s = lg_sample_create(LG_SAMPLE_JSON, "c.jsonl", 7);
  lg_batch_t *src = lg_batch_create(64);
  lg_sample_begin(s, src);
  const char *text =
      "{\"body\":\"one\",\"s\":\"str\",\"i\":-5,\"d\":0.25,\"t\":false,"
      "\"z\":null,\"a\":[1,{\"b\":2}]}\n{\"nobody\":1}\n";
  char err[64];
  assert_int_equal(
      lg_sample_feed(s, text, strlen(text), NOW, src, err, sizeof err), 0);
  assert_int_equal(lg_batch_del(src, 0, "log.file.path", 13), 0);
  src->recs[0].flags |= LG_REC_DROPPED | LG_REC_FAILED;
  src->recs[0].routes = 6;
  /* a small destination batch: copying moves its arena */
  lg_batch_t *dst = lg_batch_create(16);
  assert_int_equal(lg_sample_copy_record(dst, src, 0), 0);
  assert_int_equal(lg_sample_copy_record(dst, src, 1), 1);
  assert_int_equal(lg_sample_copy_record(dst, src, 2), -ERANGE);
  assert_int_equal(lg_sample_copy_record(src, src, 0), -EINVAL);
  assert_ptr_equal(dst->meta, src->meta);
  assert_int_equal(dst->fingerprint, src->fingerprint);
  src->recs[0].flags &= ~(LG_REC_DROPPED | LG_REC_FAILED); /* for encoding */
  lg_buf_t a = LG_BUF_INIT, c = LG_BUF_INIT;
  for (uint32_t i = 0; i < 2; i++)
    assert_string_equal(line_of(src, i, &a), line_of(dst, i, &c));
  assert_null(strstr(line_of(dst, 0, &c), "log.file.path"));
  assert_null(strstr(line_of(dst, 1, &c), "\"body\""));
  assert_int_equal(dst->recs[0].flags & (LG_REC_DROPPED | LG_REC_FAILED), 0);
  assert_int_equal(dst->recs[0].routes, 1);
  lg_buf_free(&a);
  lg_buf_free(&c);
  lg_batch_destroy(dst);
  lg_batch_destroy(src);
  lg_sample_destroy(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_format_parse),
      cmocka_unit_test(test_json_lines_in_pieces),
      cmocka_unit_test(test_json_error),
      cmocka_unit_test(test_framed),
      cmocka_unit_test(test_copy_record),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
