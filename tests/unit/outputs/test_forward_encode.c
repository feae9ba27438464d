/* Unit tests: the forward output's encoding (lg_forward_encode): exact
 * bytes of an entry and a PackedForward message, written by hand from the
 * spec; a round trip through lugger's own forward decoder (every value
 * type, metadata, a script's replacement body, gzip); chunk ids; acks; tag
 * templates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "core/lg_json.h"
#include "core/lg_msgpack.h"
#include "outputs/lg_forward_encode.h"
#include "pipeline/lg_record_json.h"
#include "sources/forward/lg_forward_decode.h"

#define T0 1700000000500000000LL

static lg_batch_t *one_record(const char *body) {
  lg_batch_t *b = lg_batch_create(256);
  assert_true(lg_batch_add(b, body, strlen(body), T0, 0, 0, 0) == 0);
  return b;
}

static void test_entry_bytes(void **state) {
  (void)state;
  lg_batch_t *b = one_record("hi");
  assert_int_equal(lg_batch_set_int(b, 0, "n", 1, 5), 0);
  lg_fwd_encode_cfg_t cfg = {0};
  lg_buf_t out = LG_BUF_INIT;
  assert_int_equal(lg_fwd_encode_entry(&out, &cfg, b, 0, NULL), 0);
  /* [EventTime fixext8, {"log":"hi","n":5}] */
  static const char want[] = "\x92\xd7\x00\x65\x53\xf1\x00\x1d\xcd\x65\x00"
                             "\x82\xa3log\xa2hi\xa1n\x05";
  assert_int_equal(out.len, sizeof want - 1);
  assert_memory_equal(out.data, want, sizeof want - 1);
  /* time_as_integer and another body key */
  out.len = 0;
  cfg.time_as_integer = 1;
  cfg.body_key = "message";
  assert_int_equal(lg_fwd_encode_entry(&out, &cfg, b, 0, "boom"), 0);
  static const char want2[] = "\x92\xce\x65\x53\xf1\x00"
                              "\x83\xa7message\xa2hi\xa1n\x05"
                              "\xac"
                              "lugger.error\xa4"
                              "boom";
  assert_int_equal(out.len, sizeof want2 - 1);
  assert_memory_equal(out.data, want2, sizeof want2 - 1);
  /* The message around two entries. */
  lg_buf_t msg = LG_BUF_INIT;
  assert_int_equal(
      lg_fwd_encode_packed(&msg, "app", 3, "\xc0\xc0", 2, 2, "Y2g=", 4, 0), 0);
  static const char want3[] = "\x93\xa3"
                              "app\xc4\x02\xc0\xc0"
                              "\x82\xa4size\x02\xa5"
                              "chunk\xa4Y2g=";
  assert_int_equal(msg.len, sizeof want3 - 1);
  assert_memory_equal(msg.data, want3, sizeof want3 - 1);
  lg_buf_free(&msg);
  lg_buf_free(&out);
  lg_batch_destroy(b);
}

static void test_round_trip(void **state) {
  (void)state;
  lg_meta_t *m = lg_meta_create();
  lg_meta_add_str(m, "k8s.pod.name", "web-1", 5);
  lg_meta_add_int(m, "k8s.container.restart_count", 2);
  lg_meta_seal(m);
  lg_batch_t *b = lg_batch_create(1024);
  lg_batch_set_meta(b, m);
  lg_meta_unref(m);
  assert_int_equal(
      lg_batch_add(b, "GET /", 5, T0, 0, 0, LG_REC_HAS_STREAM | LG_REC_STDERR),
      0);
  lg_batch_set_int(b, 0, "status", 6, -200);
  lg_batch_set_num(b, 0, "dur", 3, 0.25);
  lg_batch_set_bool(b, 0, "ok", 2, 1);
  lg_batch_set_null(b, 0, "u", 1);
  lg_batch_set_json(b, 0, "tags", 4, "[\"a\",1,{\"x\":true}]", 19);
  lg_batch_set_int(b, 0, "big", 3, 9007199254740993LL);
  assert_int_equal(lg_batch_add(b, "orig", 4, T0 + 1, 0, 0, 0), 1);
  lg_batch_set_str(b, 1, "body", 4, "replaced", 8);
  lg_batch_del(b, 1, "k8s.pod.name", 12);

  for (int gzip = 0; gzip <= 1; gzip++) {
    lg_fwd_encode_cfg_t cfg = {0};
    lg_buf_t entries = LG_BUF_INIT, msg = LG_BUF_INIT;
    for (uint32_t i = 0; i < b->n; i++)
      assert_int_equal(lg_fwd_encode_entry(&entries, &cfg, b, i, NULL), 0);
    char chunk[25];
    assert_int_equal(lg_fwd_chunk_id(chunk), 0);
    assert_int_equal(strlen(chunk), 24);
    assert_int_equal(lg_fwd_encode_packed(&msg, "web", 3, entries.data,
                                          entries.len, b->n, chunk, 24, gzip),
                     0);
    size_t ol;
    assert_int_equal(lg_mp_check(msg.data, msg.len, &ol), 0);
    assert_int_equal(ol, msg.len);
    lg_batch_t *d = lg_batch_create(1024);
    lg_fwd_msg_t info;
    lg_buf_t scratch = LG_BUF_INIT, json = LG_BUF_INIT;
    char err[256];
    assert_int_equal(lg_fwd_decode(&lg_fwd_decode_defaults, msg.data, msg.len,
                                   d, &info, &scratch, err, sizeof err),
                     0);
    assert_int_equal(info.mode, gzip ? LG_FWD_COMPRESSED : LG_FWD_PACKED);
    assert_int_equal(info.size, 2);
    assert_memory_equal(info.chunk, chunk, 24);
    /* lugger's log.iostream comes back as the record's stream. */
    assert_int_equal(d->recs[0].flags & (LG_REC_HAS_STREAM | LG_REC_STDERR),
                     LG_REC_HAS_STREAM | LG_REC_STDERR);
    assert_int_equal(d->recs[1].flags & LG_REC_HAS_STREAM, 0);
    for (uint32_t i = 0; i < d->n; i++)
      lg_json_encode_record(&json, d, i);
    lg_buf_putc(&json, '\0');
    assert_string_equal(
        json.data,
        "{\"time\":\"2023-11-14T22:13:20.500000000Z\",\"body\":\"GET /\","
        "\"log.iostream\":\"stderr\",\"fluent.tag\":\"web\","
        "\"k8s.pod.name\":\"web-1\",\"k8s.container.restart_count\":2,"
        "\"status\":-200,\"dur\":0.25,\"ok\":true,\"u\":null,"
        "\"tags\":[\"a\",1,{\"x\":true}],\"big\":9007199254740993}\n"
        "{\"time\":\"2023-11-14T22:13:20.500000001Z\",\"body\":\"replaced\","
        "\"fluent.tag\":\"web\",\"k8s.container.restart_count\":2}\n");
    lg_buf_free(&scratch);
    lg_buf_free(&json);
    lg_batch_destroy(d);
    lg_buf_free(&entries);
    lg_buf_free(&msg);
  }
  lg_batch_destroy(b);
}

static void test_parse_ack(void **state) {
  (void)state;
  const char *id;
  uint32_t n;
  lg_buf_t a = LG_BUF_INIT;
  lg_fwd_encode_ack(&a, "abc\n", 4);
  assert_int_equal(lg_fwd_parse_ack(a.data, a.len, &id, &n), 0);
  assert_int_equal(n, 4);
  assert_memory_equal(id, "abc\n", 4);
  lg_buf_free(&a);
  /* Vector's refusal is an empty map; JSON text is not an ack. */
  assert_int_equal(lg_fwd_parse_ack("\x80", 1, &id, &n), -EBADMSG);
  assert_int_equal(lg_fwd_parse_ack("\xa3"
                                    "ack",
                                    4, &id, &n),
                   -EBADMSG);
  assert_int_equal(lg_fwd_parse_ack("\x82\x01\x02\xa3"
                                    "ack\xa1x",
                                    8, &id, &n),
                   0);
  assert_memory_equal(id, "x", 1);
}

static void test_tag_template(void **state) {
  (void)state;
  char err[128];
  assert_int_equal(lg_fwd_tag_check("a.${x", err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "without"));
  assert_int_equal(lg_fwd_tag_check("a.${}", err, sizeof err), -EINVAL);
  assert_true(lg_fwd_tag_is_static("app.logs"));
  const char *t =
      "kube.${k8s.namespace.name}.${status}.${log.iostream}.${nope}";
  assert_int_equal(lg_fwd_tag_check(t, err, sizeof err), 0);
  assert_false(lg_fwd_tag_is_static(t));
  lg_meta_t *m = lg_meta_create();
  lg_meta_add_str(m, "k8s.namespace.name", "prod", 4);
  lg_meta_seal(m);
  lg_batch_t *b = lg_batch_create(256);
  lg_batch_set_meta(b, m);
  lg_meta_unref(m);
  lg_batch_add(b, "x", 1, T0, 0, 0, LG_REC_HAS_STREAM);
  lg_batch_set_int(b, 0, "status", 6, 503);
  lg_buf_t out = LG_BUF_INIT;
  assert_int_equal(lg_fwd_tag_render(&out, t, b, 0), 0);
  lg_buf_putc(&out, '\0');
  assert_string_equal(out.data, "kube.prod.503.stdout.");
  out.len = 0;
  assert_int_equal(lg_fwd_tag_render(&out, "plain", b, 0), 0);
  assert_int_equal(out.len, 5);
  lg_buf_free(&out);
  lg_batch_destroy(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_entry_bytes),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_parse_ack),
      cmocka_unit_test(test_tag_template),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
