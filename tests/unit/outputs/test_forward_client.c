/* Unit tests: the forward output's client (lg_forward_client) against
 * lugger's forward server (lg_forward_server), both on one real libuv loop
 * over real sockets: acks matched by chunk id, failover from a dead server
 * to a live one, ack timeout, shared key right and wrong, TLS, Unix
 * socket, and a server whose ack cannot be written (plain and TLS): it
 * closes the connection, counting why, and the sender's resend of the
 * unacked chunk is taken and acked (at-least-once: the records twice).
 *
 * With `--send PORT N [KEY [CA]]` the binary instead sends N records in
 * PackedForward messages of 10 with chunk ids to 127.0.0.1:PORT and exits
 * 0 once every one is acked (the interop test with @fluent-org/logger's
 * FluentServer, tests/integration/test_forward_interop.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/lg_json.h"
#include "core/lg_metrics.h"
#include "helpers/lg_test.h"
#include "outputs/lg_forward_client.h"
#include "outputs/lg_forward_encode.h"
#include "sources/forward/lg_forward_server.h"

/* Write failures of the server's acks, injected at link time: the test is
 * linked with -Wl,--wrap=uv_write,--wrap=lg_tls_write (CMakeLists.txt),
 * which sends lugger's own calls through these (libuv's and OpenSSL's
 * internals are not rewritten). With fail_ack_write set, the next write
 * of an ack map ({"ack": ...}: only the server writes those) fails:
 * uv_write with UV_EPIPE, as libuv answers for a stream no longer
 * writable, or lg_tls_write with an error, as when OpenSSL cannot encrypt
 * (out of memory). */
static int fail_ack_write;

static int is_ack(const char *p, size_t n) {
  return n > 4 && memcmp(p,
                         "\x81\xa3"
                         "ack",
                         5) == 0;
}

int __real_uv_write(uv_write_t *req, uv_stream_t *h, const uv_buf_t bufs[],
                    unsigned int nbufs, uv_write_cb cb);
int __wrap_uv_write(uv_write_t *req, uv_stream_t *h, const uv_buf_t bufs[],
                    unsigned int nbufs, uv_write_cb cb);
int __wrap_uv_write(uv_write_t *req, uv_stream_t *h, const uv_buf_t bufs[],
                    unsigned int nbufs, uv_write_cb cb) {
  if (fail_ack_write && nbufs > 0 && is_ack(bufs[0].base, bufs[0].len)) {
    fail_ack_write = 0;
    return UV_EPIPE;
  }
  return __real_uv_write(req, h, bufs, nbufs, cb);
}

int __real_lg_tls_write(lg_tls_t *t, const char *in, size_t n, lg_buf_t *wire,
                        char *err, size_t errlen);
int __wrap_lg_tls_write(lg_tls_t *t, const char *in, size_t n, lg_buf_t *wire,
                        char *err, size_t errlen);
int __wrap_lg_tls_write(lg_tls_t *t, const char *in, size_t n, lg_buf_t *wire,
                        char *err, size_t errlen) {
  if (fail_ack_write && is_ack(in, n)) {
    fail_ack_write = 0;
    snprintf(err, errlen, "TLS write: out of memory");
    return -ENOMEM;
  }
  return __real_lg_tls_write(t, in, n, wire, err, errlen);
}

typedef struct ctx {
  uv_loop_t loop;
  lg_fwd_server_t *srv;
  lg_fwd_client_t *cli;
  int hold_acks;
  lg_fwd_ack_t *held[64];
  int nheld;
  uint32_t nrecords;
  int results; /* callbacks seen */
  int ok;      /* of which status 0 */
  char last_reason[512];
} ctx_t;

static void on_batch(void *ud, lg_batch_t *b, lg_fwd_ack_t *ack,
                     const char *peer, uint64_t conn_id) {
  ctx_t *x = ud;
  x->nrecords += b->n;
  lg_batch_destroy(b);
  if (x->hold_acks && ack != NULL && x->nheld < 64)
    x->held[x->nheld++] = ack;
  else
    lg_fwd_ack_release(ack, 1);
}

static void on_sent(void *ud, int status, const char *reason) {
  ctx_t *x = ud;
  x->results++;
  if (status == 0)
    x->ok++;
  else
    snprintf(x->last_reason, sizeof x->last_reason, "%s", reason);
}

/* A message of n records "r<i>" with a fresh chunk id. */
static void send_msg(ctx_t *x, int n) {
  lg_batch_t *b = lg_batch_create(256);
  lg_buf_t entries = LG_BUF_INIT, msg = LG_BUF_INIT;
  lg_fwd_encode_cfg_t cfg = {0};
  for (int i = 0; i < n; i++) {
    char body[16];
    int l = snprintf(body, sizeof body, "r%d", i);
    lg_batch_add(b, body, (size_t)l, 1700000000000000000LL, 0, 0, 0);
    assert_int_equal(lg_fwd_encode_entry(&entries, &cfg, b, (uint32_t)i, NULL),
                     0);
  }
  char chunk[25];
  assert_int_equal(lg_fwd_chunk_id(chunk), 0);
  assert_int_equal(lg_fwd_encode_packed(&msg, "t", 1, entries.data, entries.len,
                                        (uint32_t)n, chunk, 24, 0),
                   0);
  assert_int_equal(lg_fwd_client_send(x->cli, &msg, chunk, 24, on_sent, x), 0);
  assert_int_equal(msg.len, 0);
  lg_buf_free(&msg);
  lg_buf_free(&entries);
  lg_batch_destroy(b);
}

/* Runs the loop until `results` messages are answered (acked or failed). */
static void run_until(ctx_t *x, int results, int ms) {
  lg_test_run_until_count(&x->loop, &x->results, results, (uint64_t)ms,
                          "answers to the messages sent");
}

static void start_server(ctx_t *x, lg_fwd_server_cfg_t *cfg) {
  cfg->on_batch = on_batch;
  cfg->ud = x;
  char err[256];
  if (lg_fwd_server_start(&x->loop, cfg, &x->srv, err, sizeof err) != 0)
    fail_msg("server: %s", err);
}

static void start_client(ctx_t *x, lg_fwd_client_cfg_t *cfg) {
  char err[256];
  if (lg_fwd_client_create(&x->loop, cfg, &x->cli, err, sizeof err) != 0)
    fail_msg("client: %s", err);
}

static void finish(ctx_t *x) {
  for (int i = 0; i < x->nheld; i++)
    lg_fwd_ack_release(x->held[i], 0);
  if (x->cli)
    lg_fwd_client_close(x->cli, NULL, NULL);
  if (x->srv)
    lg_fwd_server_close(x->srv, NULL, NULL);
  LG_TEST_LOOP_CLOSE(&x->loop);
}

static lg_fwd_server_cfg_t server_cfg(void) {
  lg_fwd_server_cfg_t c;
  lg_fwd_server_cfg_defaults(&c);
  c.host = "127.0.0.1";
  c.port = 0;
  c.udp_heartbeat = 0;
  return c;
}

static int dead_port(void) {
  /* A port nothing listens on: bind, read it, close. */
  uv_loop_t l;
  assert_int_equal(uv_loop_init(&l), 0);
  uv_tcp_t t;
  uv_tcp_init(&l, &t);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_bind(&t, (struct sockaddr *)&a, 0);
  struct sockaddr_in b;
  int len = sizeof b;
  uv_tcp_getsockname(&t, (struct sockaddr *)&b, &len);
  uv_close((uv_handle_t *)&t, NULL);
  LG_TEST_LOOP_CLOSE(&l);
  return ntohs(b.sin_port);
}

static void test_acks_and_failover(void **state) {
  (void)state;
  ctx_t x = {0};
  assert_int_equal(uv_loop_init(&x.loop), 0);
  lg_fwd_server_cfg_t sc = server_cfg();
  start_server(&x, &sc);
  char dead[32], live[32];
  snprintf(dead, sizeof dead, "127.0.0.1:%d", dead_port());
  snprintf(live, sizeof live, "localhost:%d", lg_fwd_server_port(x.srv));
  const char *servers[] = {dead, live};
  lg_fwd_client_cfg_t cc;
  lg_fwd_client_cfg_defaults(&cc);
  cc.servers = servers;
  cc.nservers = 2;
  start_client(&x, &cc);
  /* The first server is down: the message fails, naming it... */
  send_msg(&x, 3);
  run_until(&x, 1, 5000);
  assert_int_equal(x.results, 1);
  assert_int_equal(x.ok, 0);
  assert_non_null(strstr(x.last_reason, dead));
  assert_non_null(strstr(x.last_reason, "connect"));
  /* ...and the next ones go to the second, acked one by one. */
  assert_string_equal(lg_fwd_client_server(x.cli), live);
  for (int i = 0; i < 5; i++)
    send_msg(&x, 3);
  run_until(&x, 6, 5000);
  assert_int_equal(x.ok, 5);
  assert_int_equal(x.nrecords, 15);
  finish(&x);
}

static void test_ack_timeout(void **state) {
  (void)state;
  ctx_t x = {0};
  assert_int_equal(uv_loop_init(&x.loop), 0);
  x.hold_acks = 1;
  lg_fwd_server_cfg_t sc = server_cfg();
  start_server(&x, &sc);
  char live[32];
  snprintf(live, sizeof live, "127.0.0.1:%d", lg_fwd_server_port(x.srv));
  const char *servers[] = {live};
  lg_fwd_client_cfg_t cc;
  lg_fwd_client_cfg_defaults(&cc);
  cc.servers = servers;
  cc.nservers = 1;
  cc.ack_timeout_ms = 600;
  start_client(&x, &cc);
  send_msg(&x, 2);
  send_msg(&x, 2);
  uint64_t t0 = uv_now(&x.loop);
  run_until(&x, 2, 5000);
  uint64_t took = uv_now(&x.loop) - t0;
  assert_int_equal(x.results, 2);
  assert_int_equal(x.ok, 0);
  assert_true(took >= 600);
  assert_non_null(strstr(x.last_reason, "no ack within 600 ms"));
  /* The receiver had them: acks released after the sender gave up are
   * dropped (the connection is gone) and the sender will send again. */
  assert_int_equal(x.nrecords, 4);
  finish(&x);
}

static void test_shared_key_and_unix(void **state) {
  (void)state;
  for (int wrong = 0; wrong <= 1; wrong++) {
    ctx_t x = {0};
    assert_int_equal(uv_loop_init(&x.loop), 0);
    char path[64];
    snprintf(path, sizeof path, "/tmp/lg_fwd_cli_%d.sock", (int)getpid());
    lg_fwd_server_cfg_t sc = server_cfg();
    sc.port = -1;
    sc.unix_path = path;
    sc.shared_key = "k";
    sc.self_hostname = "daemon";
    start_server(&x, &sc);
    char spec[80];
    snprintf(spec, sizeof spec, "unix:%s", path);
    const char *servers[] = {spec};
    lg_fwd_client_cfg_t cc;
    lg_fwd_client_cfg_defaults(&cc);
    cc.servers = servers;
    cc.nservers = 1;
    cc.shared_key = wrong ? "nope" : "k";
    cc.self_hostname = "sidecar";
    start_client(&x, &cc);
    send_msg(&x, 4);
    send_msg(&x, 4);
    run_until(&x, 2, 5000);
    assert_int_equal(x.results, 2);
    if (wrong) {
      assert_int_equal(x.ok, 0);
      assert_non_null(
          strstr(x.last_reason, "refused authentication: shared_key mismatch"));
      assert_int_equal(x.nrecords, 0);
    } else {
      assert_int_equal(x.ok, 2);
      assert_int_equal(x.nrecords, 8);
    }
    finish(&x);
  }
}

/* A self-signed certificate for localhost in a new directory (dir[64]);
 * the server's and the client's TLS contexts from it. */
static void make_tls(char *dir, lg_tls_ctx_t **stls, lg_tls_ctx_t **ctls) {
  char cmd[512], cert[96], key[96], err[256];
  snprintf(dir, 64, "%s", lg_test_tmpdir("lg_fwd_cli_tls."));
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
           "-subj /CN=localhost -addext subjectAltName=DNS:localhost "
           "-keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1",
           dir, dir);
  assert_int_equal(system(cmd), 0);
  snprintf(cert, sizeof cert, "%s/cert.pem", dir);
  snprintf(key, sizeof key, "%s/key.pem", dir);
  *stls = lg_tls_ctx_server(cert, key, NULL, err, sizeof err);
  assert_non_null(*stls);
  *ctls = lg_tls_ctx_client(cert, 1, NULL, NULL, err, sizeof err);
  assert_non_null(*ctls);
}

static void test_tls(void **state) {
  (void)state;
  char dir[64];
  lg_tls_ctx_t *stls, *ctls;
  make_tls(dir, &stls, &ctls);
  for (int round = 0; round < 2; round++) {
    ctx_t x = {0};
    assert_int_equal(uv_loop_init(&x.loop), 0);
    lg_fwd_server_cfg_t sc = server_cfg();
    sc.tls = stls;
    sc.shared_key = "k";
    sc.self_hostname = "daemon";
    start_server(&x, &sc);
    char live[64];
    /* Round 1: an address the certificate does not name. */
    snprintf(live, sizeof live, "%s:%d", round ? "127.0.0.1" : "localhost",
             lg_fwd_server_port(x.srv));
    const char *servers[] = {live};
    lg_fwd_client_cfg_t cc;
    lg_fwd_client_cfg_defaults(&cc);
    cc.servers = servers;
    cc.nservers = 1;
    cc.tls = ctls;
    cc.shared_key = "k";
    cc.self_hostname = "sidecar";
    start_client(&x, &cc);
    send_msg(&x, 5);
    run_until(&x, 1, 5000);
    assert_int_equal(x.results, 1);
    if (round == 0) {
      assert_int_equal(x.ok, 1);
      assert_int_equal(x.nrecords, 5);
    } else {
      assert_int_equal(x.ok, 0);
      assert_non_null(strstr(x.last_reason, "certificate verify failed"));
    }
    finish(&x);
  }
  lg_tls_ctx_destroy(stls);
  lg_tls_ctx_destroy(ctls);
  assert_int_equal(lg_test_rmtree(dir), 0);
}

/* The server's ack cannot be written (plain: uv_write refuses it; TLS:
 * encrypting it fails). The server closes the connection at once, counted
 * under its reason, instead of leaving it to a read that may never come;
 * the sender sees the close, fails the chunk and sends it again (what the
 * delivery layer does after its backoff), and the resend is acked: the
 * records arrive twice, none lost. */
static void test_ack_write_fails(void **state) {
  (void)state;
  char dir[64];
  lg_tls_ctx_t *stls, *ctls;
  make_tls(dir, &stls, &ctls);
  for (int tls = 0; tls <= 1; tls++) {
    ctx_t x = {0};
    assert_int_equal(uv_loop_init(&x.loop), 0);
    lg_fwd_server_cfg_t sc = server_cfg();
    sc.name = tls ? "ackfail_tls" : "ackfail";
    sc.tls = tls ? stls : NULL;
    start_server(&x, &sc);
    char live[64];
    snprintf(live, sizeof live, "localhost:%d", lg_fwd_server_port(x.srv));
    const char *servers[] = {live};
    lg_fwd_client_cfg_t cc;
    lg_fwd_client_cfg_defaults(&cc);
    cc.servers = servers;
    cc.nservers = 1;
    cc.tls = tls ? ctls : NULL;
    start_client(&x, &cc);
    send_msg(&x, 3);
    run_until(&x, 1, 5000);
    assert_int_equal(x.ok, 1);
    fail_ack_write = 1;
    send_msg(&x, 4);
    run_until(&x, 2, 5000);
    assert_int_equal(fail_ack_write, 0);
    assert_int_equal(x.ok, 1);
    assert_non_null(strstr(x.last_reason, "connection closed by the server"));
    assert_int_equal(x.nrecords, 3 + 4);
    char series[128];
    snprintf(series, sizeof series,
             "lugger_forward_closed_total{source=\"%s\",reason=\"%s\"} 1\n",
             sc.name, tls ? "tls" : "write");
    lg_buf_t m = LG_BUF_INIT;
    lg_metrics_render(&m);
    lg_buf_putc(&m, '\0');
    assert_non_null(strstr(m.data, series));
    lg_buf_free(&m);
    /* The chunk is sent again and acked. */
    send_msg(&x, 4);
    run_until(&x, 3, 5000);
    assert_int_equal(x.ok, 2);
    assert_int_equal(x.nrecords, 3 + 4 + 4);
    finish(&x);
  }
  lg_tls_ctx_destroy(stls);
  lg_tls_ctx_destroy(ctls);
  assert_int_equal(lg_test_rmtree(dir), 0);
}

/* --- --send: a sender for the interop test --- */

static int send_main(int argc, char **argv) {
  ctx_t x = {0};
  if (uv_loop_init(&x.loop) != 0)
    return 1;
  char live[32];
  snprintf(live, sizeof live, "127.0.0.1:%s", argv[2]);
  const char *servers[] = {live};
  lg_fwd_client_cfg_t cc;
  lg_fwd_client_cfg_defaults(&cc);
  cc.servers = servers;
  cc.nservers = 1;
  cc.self_hostname = "lugger-test";
  if (argc > 4 && argv[4][0])
    cc.shared_key = argv[4];
  char err[256];
  lg_tls_ctx_t *tls = NULL;
  if (argc > 5) {
    tls = lg_tls_ctx_client(argv[5], 1, NULL, NULL, err, sizeof err);
    if (tls == NULL) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    cc.tls = tls;
    cc.tls_server_name = "localhost"; /* what the test certificate names */
  }
  if (lg_fwd_client_create(&x.loop, &cc, &x.cli, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  int n = atoi(argv[3]), msgs = 0;
  lg_fwd_encode_cfg_t ec = {0};
  for (int done = 0; done < n; msgs++) {
    lg_batch_t *b = lg_batch_create(256);
    lg_buf_t entries = LG_BUF_INIT, msg = LG_BUF_INIT;
    int k = n - done < 10 ? n - done : 10;
    for (int i = 0; i < k; i++) {
      char body[32];
      int l = snprintf(body, sizeof body, "lugger %d", done + i);
      lg_batch_add(b, body, (size_t)l, 1700000000123456789LL, 0, 0, 0);
      lg_batch_set_int(b, (uint32_t)i, "seq", 3, done + i);
      lg_fwd_encode_entry(&entries, &ec, b, (uint32_t)i, NULL);
    }
    char chunk[25];
    lg_fwd_chunk_id(chunk);
    lg_fwd_encode_packed(&msg, "lugger.test", 11, entries.data, entries.len,
                         (uint32_t)k, chunk, 24, msgs % 2);
    lg_fwd_client_send(x.cli, &msg, chunk, 24, on_sent, &x);
    lg_buf_free(&msg);
    lg_buf_free(&entries);
    lg_batch_destroy(b);
    done += k;
  }
  /* A tool, not a test: wait without cmocka's failure handling. */
  uint64_t end = lg_test_now_ms() + 30000;
  while (x.results < msgs && lg_test_now_ms() < end)
    uv_run(&x.loop, UV_RUN_NOWAIT), usleep(1000);
  printf("{\"messages\":%d,\"acked\":%d}\n", msgs, x.ok);
  if (x.ok != msgs)
    fprintf(stderr, "%s\n", x.last_reason);
  lg_fwd_client_close(x.cli, NULL, NULL);
  uv_run(&x.loop, UV_RUN_DEFAULT);
  int closed = uv_loop_close(&x.loop) == 0;
  if (!closed)
    fprintf(stderr, "a handle was left open\n");
  lg_tls_ctx_destroy(tls);
  return x.ok == msgs && closed ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "--send") == 0)
    return send_main(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_acks_and_failover),
      cmocka_unit_test(test_ack_timeout),
      cmocka_unit_test(test_shared_key_and_unix),
      cmocka_unit_test(test_tls),
      cmocka_unit_test(test_ack_write_fails),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
