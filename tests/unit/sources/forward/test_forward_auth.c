/* Unit tests: the forward shared-key handshake (lg_forward_auth). The
 * fixed vectors' digests were computed independently with Python's
 * hashlib.sha512 over the spec's concatenations; the round trips run our
 * client against our server, with right and wrong keys, users and
 * hostnames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <msgpuck.h>
#include <string.h>

#include "core/lg_msgpack.h"
#include "sources/forward/lg_forward_auth.h"

/* sha512("salty" + "cli" + bytes 0..15 + "secret") */
static const char ping_digest[] =
    "0bc9d8c51482a4bd33531d574f551bb09dfeed1afc5c5db7f49ad33d9eb0b0eb"
    "587b200e468aa16d846f5485e0b340eba77de1d6eaeab09b818d55b8a1ca9f75";
/* sha512("salty" + "srv" + bytes 0..15 + "secret") */
static const char pong_digest[] =
    "7524abce6eb1bf9a25e10d2c121d6f09a41d6e41e120d1ebde583b0c66cbde01"
    "364bc188d14da4e1c6b8959a8257a338ddf8393511a67ec7ee520b5da98c37af";

static size_t ping(char *buf, const char *host, const char *salt,
                   const char *digest, const char *user, const char *pd) {
  char *p = mp_encode_array(buf, 6);
  p = mp_encode_str(p, "PING", 4);
  p = mp_encode_str(p, host, (uint32_t)strlen(host));
  p = mp_encode_bin(p, salt, (uint32_t)strlen(salt)); /* bin salt */
  p = mp_encode_str(p, digest, (uint32_t)strlen(digest));
  p = mp_encode_str(p, user, (uint32_t)strlen(user));
  p = mp_encode_str(p, pd, (uint32_t)strlen(pd));
  return (size_t)(p - buf);
}

static void server_with_fixed_nonce(lg_fwd_auth_server_t *a) {
  memset(a, 0, sizeof *a);
  a->shared_key = "secret";
  a->self_hostname = "srv";
  for (int i = 0; i < LG_FWD_NONCE_LEN; i++)
    a->nonce[i] = (unsigned char)i;
}

static void test_fixed_vector(void **state) {
  (void)state;
  lg_fwd_auth_server_t a;
  server_with_fixed_nonce(&a);
  char buf[512];
  size_t n = ping(buf, "cli", "salty", ping_digest, "", "");
  lg_buf_t out = LG_BUF_INIT;
  char host[64], reason[128];
  assert_int_equal(lg_fwd_auth_ping(&a, buf, n, &out, host, sizeof host, reason,
                                    sizeof reason),
                   0);
  assert_string_equal(host, "cli");
  /* ["PONG", true, "", "srv", digest] */
  const char *p = out.data;
  assert_int_equal(mp_decode_array(&p), 5);
  uint32_t l;
  const char *s = mp_decode_str(&p, &l);
  assert_memory_equal(s, "PONG", 4);
  assert_true(mp_decode_bool(&p));
  mp_decode_str(&p, &l);
  assert_int_equal(l, 0);
  s = mp_decode_str(&p, &l);
  assert_memory_equal(s, "srv", 3);
  s = mp_decode_str(&p, &l);
  assert_int_equal(l, 128);
  assert_memory_equal(s, pong_digest, 128);
  lg_buf_free(&out);

  /* One changed digit: refused, and the PONG says why. */
  char wrong[129];
  memcpy(wrong, ping_digest, 129);
  wrong[0] = '1';
  n = ping(buf, "cli", "salty", wrong, "", "");
  assert_int_equal(lg_fwd_auth_ping(&a, buf, n, &out, host, sizeof host, reason,
                                    sizeof reason),
                   -EACCES);
  assert_string_equal(reason, "shared_key mismatch");
  p = out.data;
  assert_int_equal(mp_decode_array(&p), 5);
  mp_decode_str(&p, &l);
  assert_false(mp_decode_bool(&p));
  lg_buf_free(&out);

  /* Not a PING at all. */
  char bad[16];
  char *q = mp_encode_array(bad, 2);
  q = mp_encode_str(q, "PING", 4);
  q = mp_encode_str(q, "x", 1);
  assert_int_equal(lg_fwd_auth_ping(&a, bad, (size_t)(q - bad), &out, host,
                                    sizeof host, reason, sizeof reason),
                   -EBADMSG);
  lg_buf_free(&out);
}

static void test_user_auth_vector(void **state) {
  (void)state;
  lg_fwd_user_t users[] = {{"alice", "pw1"}, {"bob", "pw2"}};
  lg_fwd_auth_server_t a;
  server_with_fixed_nonce(&a);
  a.users = users;
  a.nusers = 2;
  memcpy(a.auth_salt, "0123456789abcdef", 16);
  /* sha512("0123456789abcdef" + "bob" + "pw2") */
  static const char want_pd[] =
      "1e26dbb87dba1aa2a30911a0a02ae2e605d94bfc92930b8f58ee34e244c3c22a"
      "c48831fe29425815edbf4e515670cb965527dbd2d5d965e7e714b68102d3b153";
  char want[LG_FWD_SHA512_HEX + 1];
  const void *parts[] = {"0123456789abcdef", "bob", "pw2"};
  size_t lens[] = {16, 3, 3};
  assert_int_equal(lg_fwd_sha512_hex(want, parts, lens, 3), 0);
  assert_string_equal(want, want_pd);
  char buf[512];
  lg_buf_t out = LG_BUF_INIT;
  char host[64], reason[128];
  size_t n = ping(buf, "cli", "salty", ping_digest, "bob", want);
  assert_int_equal(lg_fwd_auth_ping(&a, buf, n, &out, host, sizeof host, reason,
                                    sizeof reason),
                   0);
  lg_buf_free(&out);
  n = ping(buf, "cli", "salty", ping_digest, "alice", want);
  assert_int_equal(lg_fwd_auth_ping(&a, buf, n, &out, host, sizeof host, reason,
                                    sizeof reason),
                   -EACCES);
  assert_string_equal(reason, "username/password mismatch");
  lg_buf_free(&out);
  n = ping(buf, "cli", "salty", ping_digest, "", "");
  assert_int_equal(lg_fwd_auth_ping(&a, buf, n, &out, host, sizeof host, reason,
                                    sizeof reason),
                   -EACCES);
  lg_buf_free(&out);
}

static void test_sha512_known_answer(void **state) {
  (void)state;
  /* FIPS 180-2 example: SHA-512("abc"). */
  char hex[LG_FWD_SHA512_HEX + 1];
  const void *parts[] = {"a", "bc"};
  size_t lens[] = {1, 2};
  assert_int_equal(lg_fwd_sha512_hex(hex, parts, lens, 2), 0);
  assert_string_equal(
      hex, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
           "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
}

/* Our client against our server, through real HELO/PING/PONG bytes. */
static int round_trip(const char *server_key, const char *client_key,
                      const char *server_host, const char *client_host,
                      lg_fwd_user_t *users, size_t nusers, const char *user,
                      const char *pass, char *reason, size_t cap) {
  lg_fwd_auth_server_t s;
  memset(&s, 0, sizeof s);
  s.shared_key = server_key;
  s.self_hostname = server_host;
  s.users = users;
  s.nusers = nusers;
  lg_fwd_auth_client_t c;
  memset(&c, 0, sizeof c);
  c.shared_key = client_key;
  c.self_hostname = client_host;
  c.username = user;
  c.password = pass;
  lg_buf_t helo = LG_BUF_INIT, pingb = LG_BUF_INIT, pongb = LG_BUF_INIT;
  size_t ol;
  assert_int_equal(lg_fwd_auth_helo(&s, &helo), 0);
  assert_int_equal(lg_mp_check(helo.data, helo.len, &ol), 0);
  assert_int_equal(ol, helo.len);
  assert_int_equal(
      lg_fwd_auth_client_helo(&c, helo.data, helo.len, &pingb, reason, cap), 0);
  assert_int_equal(c.nonce_len, LG_FWD_NONCE_LEN);
  assert_true(c.keepalive);
  assert_int_equal(lg_mp_check(pingb.data, pingb.len, &ol), 0);
  char host[64], sreason[128];
  int src = lg_fwd_auth_ping(&s, pingb.data, pingb.len, &pongb, host,
                             sizeof host, sreason, sizeof sreason);
  int crc = lg_fwd_auth_client_pong(&c, pongb.data, pongb.len, reason, cap);
  if (src == 0)
    assert_string_equal(host, client_host);
  else
    assert_int_equal(crc, -EACCES); /* a refusal reaches the client */
  lg_buf_free(&helo);
  lg_buf_free(&pingb);
  lg_buf_free(&pongb);
  return crc;
}

static void test_round_trips(void **state) {
  (void)state;
  char reason[256];
  assert_int_equal(round_trip("k", "k", "daemon", "sidecar", NULL, 0, NULL,
                              NULL, reason, sizeof reason),
                   0);
  assert_int_equal(round_trip("k", "other", "daemon", "sidecar", NULL, 0, NULL,
                              NULL, reason, sizeof reason),
                   -EACCES);
  assert_non_null(strstr(reason, "shared_key mismatch"));
  /* Same hostname on both ends: refused by the client, as fluentd does. */
  assert_int_equal(round_trip("k", "k", "node", "node", NULL, 0, NULL, NULL,
                              reason, sizeof reason),
                   -EACCES);
  assert_non_null(strstr(reason, "hostname equals ours"));
  lg_fwd_user_t users[] = {{"u", "p"}};
  assert_int_equal(round_trip("k", "k", "daemon", "sidecar", users, 1, "u", "p",
                              reason, sizeof reason),
                   0);
  assert_int_equal(round_trip("k", "k", "daemon", "sidecar", users, 1, "u",
                              "wrong", reason, sizeof reason),
                   -EACCES);
  assert_non_null(strstr(reason, "username/password mismatch"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sha512_known_answer),
      cmocka_unit_test(test_fixed_vector),
      cmocka_unit_test(test_user_auth_vector),
      cmocka_unit_test(test_round_trips),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
