/* Unit tests: the forward protocol decoder (lg_forward_decode) and the
 * msgpack frame scanner (lg_msgpack), on byte fixtures written by hand from
 * the Forward Protocol v1 and MessagePack specifications: all four event
 * modes, str32 entries (what fluentd's out_forward writes), chunk ids
 * ending in "\n" (Ruby's Base64.encode64), the [[time, metadata], record]
 * entry form (Fluent Bit >= 2.1), fixext8 and ext8 EventTime, integer
 * times, gzip of several members, and malformed and oversized input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/lg_json.h"
#include "core/lg_msgpack.h"
#include "pipeline/lg_record_json.h"
#include "sources/forward/lg_forward_decode.h"

/* Byte-string helper: fixtures are written as C string literals with
 * explicit lengths, so NUL bytes are fine. */
#define B(s) s, sizeof(s) - 1

/* EventTime 2023-11-14T22:13:20.5Z = 1700000000 s, 500000000 ns. */
#define ET_FIXEXT8 "\xd7\x00\x65\x53\xf1\x00\x1d\xcd\x65\x00"
#define ET_EXT8 "\xc7\x08\x00\x65\x53\xf1\x00\x1d\xcd\x65\x00"
#define T_INT "\xce\x65\x53\xf1\x00" /* uint32 1700000000 */

typedef struct result {
  lg_batch_t *b;
  lg_fwd_msg_t msg;
  char err[256];
  int rc;
  lg_buf_t json;
} result_t;

static void decode(result_t *r, const char *frame, size_t len,
                   const lg_fwd_decode_cfg_t *cfg) {
  memset(r, 0, sizeof *r);
  /* The decoder only ever sees frames the scanner accepted. */
  size_t olen = 0;
  int crc = lg_mp_check(frame, len, &olen);
  assert_int_equal(crc, 0);
  assert_int_equal(olen, len);
  r->b = lg_batch_create(1024);
  lg_buf_t scratch = LG_BUF_INIT;
  r->rc = lg_fwd_decode(cfg ? cfg : &lg_fwd_decode_defaults, frame, len, r->b,
                        &r->msg, &scratch, r->err, sizeof r->err);
  lg_buf_free(&scratch);
  for (uint32_t i = 0; r->rc == 0 && i < r->b->n; i++)
    assert_int_equal(lg_json_encode_record(&r->json, r->b, i), 0);
  lg_buf_putc(&r->json, '\0');
}

static void done(result_t *r) {
  lg_batch_destroy(r->b);
  lg_buf_free(&r->json);
}

static void test_message_mode(void **state) {
  (void)state;
  result_t r;
  /* ["app.web", EventTime, {"log":"hello","status":200,"neg":-3,
   *  "ok":true,"x":nil,"f":1.5}] */
  decode(&r,
         B("\x93\xa7"
           "app.web" ET_FIXEXT8
           "\x86\xa3log\xa5hello\xa6status\xcc\xc8\xa3neg\xfd"
           "\xa2ok\xc3\xa1x\xc0\xa1"
           "f\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"),
         NULL);
  assert_int_equal(r.rc, 0);
  assert_int_equal(r.msg.mode, LG_FWD_MESSAGE);
  assert_int_equal(r.msg.nrecords, 1);
  assert_null(r.msg.chunk);
  assert_string_equal(r.json.data,
                      "{\"time\":\"2023-11-14T22:13:20.500000000Z\","
                      "\"body\":\"hello\",\"fluent.tag\":\"app.web\","
                      "\"status\":200,\"neg\":-3,\"ok\":true,\"x\":null,"
                      "\"f\":1.5}\n");
  done(&r);
}

static void test_message_mode_with_chunk(void **state) {
  (void)state;
  result_t r;
  /* [tag, int time, {"message":"m"}, {"chunk":"YWJj\n"}] */
  decode(&r,
         B("\x94\xa1t" T_INT "\x81\xa7message\xa1m"
           "\x81\xa5"
           "chunk\xa5YWJj\n"),
         NULL);
  assert_int_equal(r.rc, 0);
  assert_int_equal(r.msg.mode, LG_FWD_MESSAGE);
  assert_int_equal(r.msg.chunk_len, 5);
  assert_memory_equal(r.msg.chunk, "YWJj\n", 5);
  assert_string_equal(r.json.data,
                      "{\"time\":\"2023-11-14T22:13:20.000000000Z\","
                      "\"body\":\"m\",\"fluent.tag\":\"t\"}\n");
  done(&r);
}

static void test_forward_mode(void **state) {
  (void)state;
  result_t r;
  /* [tag, [[ext8 time, {"log":"a"}], [int time, {"log":"b","k":[1,"x"]}]],
   *  {"size":2,"chunk":"Q0hVTks="}] */
  decode(&r,
         B("\x93\xa3"
           "fwd\x92"
           "\x92" ET_EXT8 "\x81\xa3log\xa1"
           "a"
           "\x92" T_INT "\x82\xa3log\xa1"
           "b\xa1k\x92\x01\xa1x"
           "\x82\xa4size\x02\xa5"
           "chunk\xa8Q0hVTks="),
         NULL);
  assert_int_equal(r.rc, 0);
  assert_int_equal(r.msg.mode, LG_FWD_FORWARD);
  assert_int_equal(r.msg.nrecords, 2);
  assert_int_equal(r.msg.size, 2);
  assert_memory_equal(r.msg.chunk, "Q0hVTks=", 8);
  assert_string_equal(
      r.json.data, "{\"time\":\"2023-11-14T22:13:20.500000000Z\","
                   "\"body\":\"a\",\"fluent.tag\":\"fwd\"}\n"
                   "{\"time\":\"2023-11-14T22:13:20.000000000Z\","
                   "\"body\":\"b\",\"fluent.tag\":\"fwd\",\"k\":[1,\"x\"]}\n");
  done(&r);
}

/* What fluentd's out_forward writes: PackedForward with the entries in a
 * str32 (0xdb) and options {size, compressed: "text", chunk} where the
 * chunk id is Base64.encode64 output, ending in "\n". */
static void test_packed_str32_fluentd(void **state) {
  (void)state;
  result_t r;
  decode(&r,
         B("\x93\xa4"
           "fltd"
           "\xdb\x00\x00\x00\x21"
           "\x92" ET_FIXEXT8 "\x81\xa3log\xa2l1"
           "\x92" T_INT "\x81\xa3log\xa2l2"
           "\x83\xa4size\x02\xaa"
           "compressed\xa4text"
           "\xa5"
           "chunk\xb9"
           "AAAAAAAAAAAAAAAAAAAAAA==\n"),
         NULL);
  assert_int_equal(r.rc, 0);
  assert_string_equal(r.err, "");
  assert_int_equal(r.msg.mode, LG_FWD_PACKED);
  assert_int_equal(r.msg.nrecords, 2);
  assert_int_equal(r.msg.chunk_len, 25);
  assert_memory_equal(r.msg.chunk, "AAAAAAAAAAAAAAAAAAAAAA==\n", 25);
  assert_string_equal(r.json.data,
                      "{\"time\":\"2023-11-14T22:13:20.500000000Z\","
                      "\"body\":\"l1\",\"fluent.tag\":\"fltd\"}\n"
                      "{\"time\":\"2023-11-14T22:13:20.000000000Z\","
                      "\"body\":\"l2\",\"fluent.tag\":\"fltd\"}\n");
  /* The ack echoes the exact chunk bytes, as a msgpack map. */
  lg_buf_t ack = LG_BUF_INIT;
  assert_int_equal(lg_fwd_encode_ack(&ack, r.msg.chunk, r.msg.chunk_len), 0);
  assert_int_equal(ack.len, 1 + 4 + 1 + 25);
  assert_memory_equal(ack.data,
                      "\x81\xa3"
                      "ack\xb9"
                      "AAAAAAAAAAAAAAAAAAAAAA==\n",
                      31);
  lg_buf_free(&ack);
  done(&r);
}

/* Fluent Bit >= 2.1 with retain_metadata_in_forward_mode: bin entries of
 * the form [[time, metadata], record]. */
static void test_packed_bin_metadata_form(void **state) {
  (void)state;
  result_t r;
  decode(&r,
         B("\x93\xa2"
           "fb"
           "\xc4\x2f"
           "\x92\x92" ET_FIXEXT8 "\x81\xa1k\xa1v"
           "\x81\xa7message\xa1x"
           "\x92\x92" T_INT "\x80"
           "\x81\xa7message\xa1y"
           "\x81\xa4size\x02"),
         NULL);
  assert_int_equal(r.rc, 0);
  assert_int_equal(r.msg.mode, LG_FWD_PACKED);
  assert_string_equal(r.json.data,
                      "{\"time\":\"2023-11-14T22:13:20.500000000Z\","
                      "\"body\":\"x\",\"fluent.tag\":\"fb\","
                      "\"fluent.metadata\":{\"k\":\"v\"}}\n"
                      "{\"time\":\"2023-11-14T22:13:20.000000000Z\","
                      "\"body\":\"y\",\"fluent.tag\":\"fb\"}\n");
  done(&r);
}

/* gzip of `n` bytes as one member. */
static size_t gz(const char *in, size_t n, unsigned char *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  assert_int_equal(
      deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
      Z_OK);
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)n;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
  size_t len = cap - z.avail_out;
  deflateEnd(&z);
  return len;
}

static const char entry_a[] = "\x92" ET_FIXEXT8 "\x81\xa3log\xa1"
                              "A";
static const char entry_b[] = "\x92" T_INT "\x81\xa3log\xa1"
                              "B";

/* Builds [tag, bin(gzip members...), {"compressed":"gzip", "chunk":"c1"}]. */
static size_t compressed_frame(unsigned char *frame, int members, int corrupt) {
  unsigned char payload[512];
  size_t plen = 0;
  if (members == 1) {
    char both[64];
    memcpy(both, entry_a, sizeof entry_a - 1);
    memcpy(both + sizeof entry_a - 1, entry_b, sizeof entry_b - 1);
    plen = gz(both, sizeof entry_a - 1 + sizeof entry_b - 1, payload,
              sizeof payload);
  } else {
    plen = gz(entry_a, sizeof entry_a - 1, payload, sizeof payload);
    plen +=
        gz(entry_b, sizeof entry_b - 1, payload + plen, sizeof payload - plen);
  }
  if (corrupt == 1)
    plen -= 5; /* truncated: the last member loses its trailer */
  if (corrupt == 2)
    payload[12] ^= 0xff;
  unsigned char *p = frame;
  memcpy(p, "\x93\xa2gz\xc4", 5);
  p += 5;
  *p++ = (unsigned char)plen;
  memcpy(p, payload, plen);
  p += plen;
  memcpy(p,
         "\x82\xaa"
         "compressed\xa4gzip\xa5"
         "chunk\xa2"
         "c1",
         26);
  p += 26;
  return (size_t)(p - frame);
}

static void test_compressed_several_members(void **state) {
  (void)state;
  for (int members = 1; members <= 2; members++) {
    unsigned char frame[700];
    size_t n = compressed_frame(frame, members, 0);
    result_t r;
    decode(&r, (const char *)frame, n, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.msg.mode, LG_FWD_COMPRESSED);
    assert_int_equal(r.msg.nrecords, 2);
    assert_memory_equal(r.msg.chunk, "c1", 2);
    assert_string_equal(r.json.data,
                        "{\"time\":\"2023-11-14T22:13:20.500000000Z\","
                        "\"body\":\"A\",\"fluent.tag\":\"gz\"}\n"
                        "{\"time\":\"2023-11-14T22:13:20.000000000Z\","
                        "\"body\":\"B\",\"fluent.tag\":\"gz\"}\n");
    done(&r);
  }
}

static void test_compressed_corrupt_and_bomb(void **state) {
  (void)state;
  unsigned char frame[700];
  for (int corrupt = 1; corrupt <= 2; corrupt++) {
    size_t n = compressed_frame(frame, 2, corrupt);
    result_t r;
    decode(&r, (const char *)frame, n, NULL);
    assert_int_equal(r.rc, -EBADMSG);
    assert_non_null(strstr(r.err, "gzip"));
    done(&r);
  }
  /* Inflating past the limit is refused, not buffered. */
  size_t n = compressed_frame(frame, 2, 0);
  lg_fwd_decode_cfg_t cfg = lg_fwd_decode_defaults;
  cfg.max_decompressed_bytes = sizeof entry_a - 1; /* the first member fits */
  result_t r;
  decode(&r, (const char *)frame, n, &cfg);
  assert_int_equal(r.rc, -EMSGSIZE);
  assert_non_null(strstr(r.err, "inflates to over"));
  done(&r);
  /* Exactly at the limit is fine. */
  cfg.max_decompressed_bytes = sizeof entry_a - 1 + sizeof entry_b - 1;
  decode(&r, (const char *)frame, n, &cfg);
  assert_int_equal(r.rc, 0);
  done(&r);
}

static void test_body_keys_and_tag_key(void **state) {
  (void)state;
  /* Both "log" and "message": the first configured key wins, the other
   * stays a field. A non-string "log" is not the body. */
  static const char *const keys[] = {"message", "log"};
  lg_fwd_decode_cfg_t cfg = lg_fwd_decode_defaults;
  cfg.body_keys = keys;
  cfg.tag_key = "tag";
  result_t r;
  decode(&r, B("\x93\xa1t" T_INT "\x82\xa3log\xa1L\xa7message\xa1M"), &cfg);
  assert_int_equal(r.rc, 0);
  assert_string_equal(r.json.data,
                      "{\"time\":\"2023-11-14T22:13:20.000000000Z\","
                      "\"body\":\"M\",\"tag\":\"t\",\"log\":\"L\"}\n");
  done(&r);
  decode(&r,
         B("\x93\xa1t" T_INT "\x81\xa3log\x81\xa1"
           "a\x01"),
         NULL);
  assert_int_equal(r.rc, 0);
  assert_string_equal(
      r.json.data, "{\"time\":\"2023-11-14T22:13:20.000000000Z\","
                   "\"body\":\"\",\"fluent.tag\":\"t\",\"log\":{\"a\":1}}\n");
  done(&r);
  /* A bin inside a nested value is text too, as a str would be. */
  decode(&r,
         B("\x93\xa1t" T_INT "\x81\xa3log\x81\xa1"
           "a\xc4\x02hi"),
         NULL);
  assert_int_equal(r.rc, 0);
  assert_string_equal(
      r.json.data,
      "{\"time\":\"2023-11-14T22:13:20.000000000Z\","
      "\"body\":\"\",\"fluent.tag\":\"t\",\"log\":{\"a\":\"hi\"}}\n");
  done(&r);
  /* Keys that are not strings: numbers keep their text, composite keys a
   * fixed name (their JSON escaped as a key would grow at each level). */
  decode(&r,
         B("\x93\xa1t" T_INT "\x81\xa3log\x82\x07\x01\x81\x81\x90\x02\x03\x04"),
         NULL);
  assert_int_equal(r.rc, 0);
  assert_string_equal(r.json.data,
                      "{\"time\":\"2023-11-14T22:13:20.000000000Z\","
                      "\"body\":\"\",\"fluent.tag\":\"t\","
                      "\"log\":{\"7\":1,\"(map)\":4}}\n");
  done(&r);
  /* A record key named like a builtin replaces it, as a script's would. */
  decode(&r, B("\x93\xa1t" T_INT "\x82\xa3log\xa1L\xa4time\xa3now"), NULL);
  assert_int_equal(r.rc, 0);
  assert_string_equal(
      r.json.data, "{\"time\":\"now\",\"body\":\"L\",\"fluent.tag\":\"t\"}\n");
  done(&r);
}

static void test_heartbeat_and_bad_messages(void **state) {
  (void)state;
  result_t r;
  decode(&r, B("\xc0"), NULL);
  assert_int_equal(r.rc, 0);
  assert_int_equal(r.msg.mode, LG_FWD_HEARTBEAT);
  assert_int_equal(r.b->n, 0);
  done(&r);
  static const struct {
    const char *bytes;
    size_t len;
    const char *why;
  } bad[] = {
      {B("\x05"), "first byte 0x05 is not an array"},
      {B("\x91\xa1t"), "array of 1 elements"},
      {B("\x93\x01\x02\x80"), "tag is not a string"},
      {B("\x93\xa1t\xa3"
         "abc\x80"),
       "entry 0: not an array"},
      {B("\x93\xa1t\xa3"
         "abc\x81\xaa"
         "compressed\xa4zstd"),
       "zstd"},
      {B("\x92\xa1t\x91\x92\xa1x\x80"), "entry 0: time is not"},
      {B("\x92\xa1t\x91\x92\x01\x01"), "entry 0: record is not a map"},
      {B("\x93\xa1t\x01\x01"), "entry 0: record is not a map"},
      {B("\x93\xa1t\xc7\x04\x00\x00\x00\x00\x00\x80"), "time is not"},
      {B("\x93\xa1t\xd7\x01\x00\x00\x00\x00\x00\x00\x00\x00\x80"),
       "time is not"},
      /* A packed payload whose second entry is cut short. */
      {B("\x92\xa1t\xc4\x06\x92\x01\x80\x92\x01\x81"), "entry 1: malformed"},
      {B("\x94\xa1t\x01\x80\x05"), "option is not a map"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    decode(&r, bad[i].bytes, bad[i].len, NULL);
    assert_int_equal(r.rc, -EBADMSG);
    if (strstr(r.err, bad[i].why) == NULL)
      fail_msg("case %zu: error \"%s\" does not contain \"%s\"", i, r.err,
               bad[i].why);
    done(&r);
  }
}

/* --- scanner --- */

static void test_scan_byte_by_byte(void **state) {
  (void)state;
  static const char msg[] = "\x93\xa3"
                            "fwd\x92"
                            "\x92" ET_EXT8 "\x81\xa3log\xa1"
                            "a"
                            "\x92" T_INT "\x82\xa3log\xa1"
                            "b\xa1k\x92\x01\xa1x"
                            "\x82\xa4size\x02\xa5"
                            "chunk\xa8Q0hVTks=";
  size_t n = sizeof msg - 1;
  /* Two messages back to back, fed one byte at a time. */
  char two[256];
  memcpy(two, msg, n);
  memcpy(two + n, msg, n);
  lg_mp_scan_t s;
  lg_mp_scan_init(&s);
  size_t start = 0, found = 0;
  for (size_t avail = 1; avail <= 2 * n; avail++) {
    int rc = lg_mp_scan(&s, two + start, avail - start, 1024);
    assert_true(rc >= 0);
    if (rc == LG_MP_COMPLETE) {
      assert_int_equal(s.pos, n);
      assert_int_equal(avail - start, n);
      start += s.pos;
      lg_mp_scan_init(&s);
      found++;
    }
  }
  assert_int_equal(found, 2);
}

static void test_scan_limits(void **state) {
  (void)state;
  lg_mp_scan_t s;
  /* A str32 header announcing 100 MiB is refused after its 5 bytes, with
   * a 64 MiB limit; one byte earlier the scanner waits. */
  const char big[] = "\x93\xa1t\xdb\x06\x40\x00\x00";
  lg_mp_scan_init(&s);
  assert_int_equal(lg_mp_scan(&s, big, 7, 64u << 20), LG_MP_MORE);
  assert_int_equal(lg_mp_scan(&s, big, 8, 64u << 20), -EMSGSIZE);
  /* With room for it the scanner waits for the payload. */
  lg_mp_scan_init(&s);
  assert_int_equal(lg_mp_scan(&s, big, 8, 128u << 20), LG_MP_MORE);
  /* An array32 of 4 billion elements cannot fit either. */
  lg_mp_scan_init(&s);
  assert_int_equal(lg_mp_scan(&s, "\xdd\xff\xff\xff\xff", 5, 1u << 30),
                   -EMSGSIZE);
  lg_mp_scan_init(&s);
  assert_int_equal(lg_mp_scan(&s, "\xdf\x80\x00\x00\x00", 5, 1u << 30),
                   -EMSGSIZE);
  /* 0xc1 is never valid. */
  lg_mp_scan_init(&s);
  assert_int_equal(lg_mp_scan(&s, "\x92\x01\xc1", 3, 100), -EBADMSG);
  /* Nesting is bounded. */
  char deep[LG_MP_MAX_DEPTH + 2];
  memset(deep, 0x91, sizeof deep);
  lg_mp_scan_init(&s);
  assert_int_equal(lg_mp_scan(&s, deep, sizeof deep, 1000), -ELOOP);
  /* Empty containers and scalars at the top level complete. */
  lg_mp_scan_init(&s);
  assert_int_equal(lg_mp_scan(&s, "\x90", 1, 10), LG_MP_COMPLETE);
  assert_int_equal(s.pos, 1);
  lg_mp_scan_init(&s);
  assert_int_equal(lg_mp_scan(&s, "\xc0", 1, 10), LG_MP_COMPLETE);
  /* A payload arriving in pieces completes only when all is there. */
  lg_mp_scan_init(&s);
  assert_int_equal(lg_mp_scan(&s, "\xa5hel", 4, 10), LG_MP_MORE);
  assert_int_equal(lg_mp_scan(&s, "\xa5hell", 5, 10), LG_MP_MORE);
  assert_int_equal(lg_mp_scan(&s, "\xa5hello", 6, 10), LG_MP_COMPLETE);
  assert_int_equal(s.pos, 6);
  size_t ol;
  assert_int_equal(lg_mp_check("\x92\x01", 2, &ol), -EBADMSG);
  assert_int_equal(lg_mp_check("\xa5hel", 4, &ol), -EBADMSG);
}

static void test_event_time_forms(void **state) {
  (void)state;
  int64_t ns;
  const char *p = ET_FIXEXT8, *e = p + 10;
  assert_int_equal(lg_mp_decode_time(&p, e, &ns), 0);
  assert_int_equal(ns, 1700000000500000000LL);
  assert_ptr_equal(p, e);
  p = ET_EXT8, e = p + 11;
  assert_int_equal(lg_mp_decode_time(&p, e, &ns), 0);
  assert_int_equal(ns, 1700000000500000000LL);
  p = T_INT, e = p + 5;
  assert_int_equal(lg_mp_decode_time(&p, e, &ns), 0);
  assert_int_equal(ns, 1700000000000000000LL);
  /* Nanoseconds >= 1e9 are not a time. */
  p = "\xd7\x00\x00\x00\x00\x01\x3b\x9a\xca\x00", e = p + 10;
  assert_int_equal(lg_mp_decode_time(&p, e, &ns), -EINVAL);
  char buf[10];
  assert_ptr_equal(lg_mp_encode_event_time(buf, 1700000000500000000LL),
                   buf + 10);
  assert_memory_equal(buf, ET_FIXEXT8, 10);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_message_mode),
      cmocka_unit_test(test_message_mode_with_chunk),
      cmocka_unit_test(test_forward_mode),
      cmocka_unit_test(test_packed_str32_fluentd),
      cmocka_unit_test(test_packed_bin_metadata_form),
      cmocka_unit_test(test_compressed_several_members),
      cmocka_unit_test(test_compressed_corrupt_and_bomb),
      cmocka_unit_test(test_body_keys_and_tag_key),
      cmocka_unit_test(test_heartbeat_and_bad_messages),
      cmocka_unit_test(test_scan_byte_by_byte),
      cmocka_unit_test(test_scan_limits),
      cmocka_unit_test(test_event_time_forms),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
