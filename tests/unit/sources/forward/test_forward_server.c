/* Unit tests: the forward server (lg_forward_server) on a real libuv loop
 * with real sockets: a client thread talks to it over TCP, a Unix socket,
 * UDP and TLS (OpenSSL, a certificate made at test time) while the main
 * thread runs the loop. Covered: acks only after the receiver releases the
 * batch, bad input (garbage, a truncated message, a 100 MiB string header,
 * a wrong shared key, a slow sender, 1,000 idle connections, the
 * connection limit) closing only the offending connection with a log line
 * naming the peer, backpressure (a paused server stops reading until the
 * sender blocks), the UDP heartbeat, plain bytes on a TLS port, a HELO
 * that cannot be made (no randomness; out of memory) closing the
 * connection on a plain and on a TLS port, and an ack whose write fails on
 * a connection nobody reads (paused, the sender gone) closing it at once.
 *
 * With `--serve PORT [SHARED_KEY]` the binary is instead a forward server
 * that prints each record as a JSON line on stdout and acks each batch
 * `ACK_DELAY_MS` (env, default 0) after receiving it: the interop tests
 * (tests/integration/test_forward_interop.py) drive it with the npm
 * Fluent clients. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpuck.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/lg_json.h"
#include "core/lg_log.h"
#include "core/lg_metrics.h"
#include "core/lg_msgpack.h"
#include "helpers/lg_test.h"
#include "pipeline/lg_record_json.h"
#include "sources/forward/lg_forward_auth.h"
#include "sources/forward/lg_forward_server.h"

/* Checks run on the client thread too, where cmocka's assertions (a
 * longjmp into the test's frame) cannot be used: a failed check prints
 * where and why to the real stderr and aborts, failing the test. */
static int fail_fd = 2;
static void check_failed(int line, const char *what, long long a, long long b) {
  dprintf(fail_fd, "test_forward_server.c:%d: check failed: %s (%lld, %lld)\n",
          line, what, a, b);
  abort();
}
#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c))                                                                  \
      check_failed(__LINE__, #c, 0, 0);                                        \
  } while (0)
#define CHECK_EQ(a, b)                                                         \
  do {                                                                         \
    long long a_ = (long long)(a), b_ = (long long)(b);                        \
    if (a_ != b_)                                                              \
      check_failed(__LINE__, #a " == " #b, a_, b_);                            \
  } while (0)

/* lugger's own calls to RAND_bytes (the HELO's nonce) land here: the test
 * is linked with -Wl,--wrap=RAND_bytes (CMakeLists.txt), which rewrites the
 * calls in lugger's objects only; OpenSSL's TLS keeps its own randomness.
 * With rand_fails set, RAND_bytes fails as OpenSSL's does when its random
 * generator cannot be seeded. */
static volatile int rand_fails;
int __real_RAND_bytes(unsigned char *buf, int num);
int __wrap_RAND_bytes(unsigned char *buf, int num);
int __wrap_RAND_bytes(unsigned char *buf, int num) {
  if (__atomic_load_n(&rand_fails, __ATOMIC_SEQ_CST))
    return 0;
  return __real_RAND_bytes(buf, num);
}

static void set_rand_fails(int on) {
  __atomic_store_n(&rand_fails, on, __ATOMIC_SEQ_CST);
}

/* lugger's calls to lg_buf_reserve from other files than lg_buf.c land
 * here too (-Wl,--wrap=lg_buf_reserve): with reserve_fails > 0, that many
 * calls on the loop's thread fail as an allocation failure does (-ENOMEM).
 * The client thread's own buffers are not touched. */
static volatile int reserve_fails;
static pthread_t loop_thread;
int __real_lg_buf_reserve(lg_buf_t *b, size_t extra);
int __wrap_lg_buf_reserve(lg_buf_t *b, size_t extra);
int __wrap_lg_buf_reserve(lg_buf_t *b, size_t extra) {
  if (pthread_equal(pthread_self(), loop_thread) &&
      __atomic_load_n(&reserve_fails, __ATOMIC_SEQ_CST) > 0) {
    __atomic_sub_fetch(&reserve_fails, 1, __ATOMIC_SEQ_CST);
    return -ENOMEM;
  }
  return __real_lg_buf_reserve(b, extra);
}

static long long now_ms_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- the loop side --- */

typedef struct held {
  lg_fwd_ack_t *ack;
  struct held *next;
} held_t;

typedef struct ctx {
  uv_loop_t loop;
  lg_fwd_server_t *srv;
  uv_async_t cmd;
  pthread_mutex_t mu;
  lg_buf_t records; /* JSON lines of every record received */
  uint32_t nrecords;
  uint32_t nbatches;
  held_t *held; /* ack handles not released yet */
  int hold_acks;
  /* commands from the client thread, run on the loop */
  int want_release, want_pause, want_resume, want_stop;
  int client_done;
  void (*client)(struct ctx *);
  int port;
  char unix_path[108];
  int log_fd; /* stderr is redirected here to read the server's logs */
  char log_path[64];
} ctx_t;

static void on_batch(void *ud, lg_batch_t *b, lg_fwd_ack_t *ack,
                     const char *peer, uint64_t conn_id) {
  ctx_t *x = ud;
  pthread_mutex_lock(&x->mu);
  for (uint32_t i = 0; i < b->n; i++)
    lg_json_encode_record(&x->records, b, i);
  x->nrecords += b->n;
  x->nbatches++;
  pthread_mutex_unlock(&x->mu);
  lg_batch_destroy(b);
  if (ack == NULL)
    return;
  if (!x->hold_acks) {
    lg_fwd_ack_release(ack, 1);
    return;
  }
  held_t *h = malloc(sizeof *h);
  h->ack = ack;
  h->next = x->held;
  x->held = h;
}

static void release_all(ctx_t *x, int delivered) {
  while (x->held) {
    held_t *h = x->held;
    x->held = h->next;
    lg_fwd_ack_release(h->ack, delivered);
    free(h);
  }
}

static void on_closed(void *ud) { (void)ud; }

static void on_cmd(uv_async_t *a) {
  ctx_t *x = a->data;
  pthread_mutex_lock(&x->mu);
  int rel = x->want_release, pause = x->want_pause, resume = x->want_resume,
      stop = x->want_stop;
  x->want_release = x->want_pause = x->want_resume = 0;
  pthread_mutex_unlock(&x->mu);
  if (rel)
    release_all(x, 1);
  if (pause)
    lg_fwd_server_pause(x->srv);
  if (resume)
    lg_fwd_server_resume(x->srv);
  if (stop) {
    release_all(x, 0);
    lg_fwd_server_close(x->srv, on_closed, x);
    uv_close((uv_handle_t *)&x->cmd, NULL);
  }
}

static void *client_main(void *arg) {
  ctx_t *x = arg;
  x->client(x);
  pthread_mutex_lock(&x->mu);
  x->want_stop = 1;
  pthread_mutex_unlock(&x->mu);
  uv_async_send(&x->cmd);
  return NULL;
}

/* Sends a command to the loop and waits a little for it to run. */
static void command(ctx_t *x, int *flag) {
  pthread_mutex_lock(&x->mu);
  *flag = 1;
  pthread_mutex_unlock(&x->mu);
  uv_async_send(&x->cmd);
  usleep(100 * 1000);
}

static void run(ctx_t *x, lg_fwd_server_cfg_t *cfg, void (*client)(ctx_t *)) {
  loop_thread = pthread_self();
  CHECK_EQ(uv_loop_init(&x->loop), 0);
  pthread_mutex_init(&x->mu, NULL);
  cfg->on_batch = on_batch;
  cfg->ud = x;
  char err[256] = "";
  int rc = lg_fwd_server_start(&x->loop, cfg, &x->srv, err, sizeof err);
  if (rc != 0)
    fail_msg("server start: %s", err);
  x->port = lg_fwd_server_port(x->srv);
  uv_async_init(&x->loop, &x->cmd, on_cmd);
  x->cmd.data = x;
  /* The server's log lines go to a file the client can read. */
  snprintf(x->log_path, sizeof x->log_path, "/tmp/lg_fwd_test_%d.log",
           (int)getpid());
  x->log_fd = open(x->log_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  int saved = dup(2);
  fail_fd = saved;
  dup2(x->log_fd, 2);
  x->client = client;
  pthread_t t;
  pthread_create(&t, NULL, client_main, x);
  uv_run(&x->loop, UV_RUN_DEFAULT);
  pthread_join(t, NULL);
  dup2(saved, 2);
  fail_fd = 2;
  close(saved);
  close(x->log_fd);
  unlink(x->log_path);
  CHECK_EQ(uv_loop_close(&x->loop), 0);
  lg_buf_free(&x->records);
  pthread_mutex_destroy(&x->mu);
}

/* --- the client side (blocking sockets) --- */

static int tcp_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static int local_port(int fd) {
  struct sockaddr_in a;
  socklen_t l = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &l);
  return ntohs(a.sin_port);
}

static void send_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    CHECK(w > 0);
    c += w;
    n -= (size_t)w;
  }
}

/* Reads up to cap bytes, waiting at most ms for the first. Returns the
 * count, 0 on EOF, -1 on timeout. */
static ssize_t recv_wait(int fd, char *buf, size_t cap, int ms) {
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t r = recv(fd, buf, cap, 0);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return -1;
  if (r < 0 && errno == ECONNRESET)
    return 0;
  return r;
}

/* True when the server closed fd within ms (reads EOF/reset). */
static int closed_within(int fd, int ms) {
  char b[256];
  for (;;) {
    ssize_t r = recv_wait(fd, b, sizeof b, ms);
    if (r == 0)
      return 1;
    if (r < 0)
      return 0;
  }
}

static int wait_records(ctx_t *x, uint32_t n, int ms) {
  for (int i = 0; i < ms / 10; i++) {
    pthread_mutex_lock(&x->mu);
    uint32_t have = x->nrecords;
    pthread_mutex_unlock(&x->mu);
    if (have >= n)
      return 1;
    usleep(10 * 1000);
  }
  return 0;
}

static int log_has(ctx_t *x, const char *a, const char *b) {
  for (int i = 0; i < 50; i++) {
    char buf[65536];
    ssize_t n = pread(x->log_fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    /* both strings on one line */
    for (char *line = buf; line && *line;) {
      char *nl = strchr(line, '\n');
      if (nl)
        *nl = '\0';
      if (strstr(line, a) && (b == NULL || strstr(line, b)))
        return 1;
      line = nl ? nl + 1 : NULL;
    }
    usleep(20 * 1000);
  }
  return 0;
}

/* The value of one series on /metrics (name with its labels), or -1. */
static long long metric(const char *series) {
  lg_buf_t m = LG_BUF_INIT;
  lg_metrics_render(&m);
  lg_buf_putc(&m, '\0');
  char pat[256];
  snprintf(pat, sizeof pat, "\n%s ", series);
  const char *p = strstr(m.data, pat);
  long long v = p ? atoll(p + strlen(pat)) : -1;
  lg_buf_free(&m);
  return v;
}

/* A PackedForward message with `n` records "line <i>" and a chunk id. */
static size_t packed(char *buf, int n, const char *chunk) {
  char entries[8192];
  char *e = entries;
  for (int i = 0; i < n; i++) {
    e = mp_encode_array(e, 2);
    e = lg_mp_encode_event_time(e, 1700000000000000000LL + i);
    e = mp_encode_map(e, 1);
    e = mp_encode_str(e, "log", 3);
    char line[32];
    int ll = snprintf(line, sizeof line, "line %d", i);
    e = mp_encode_str(e, line, (uint32_t)ll);
  }
  char *p = mp_encode_array(buf, 3);
  p = mp_encode_str(p, "app", 3);
  p = mp_encode_bin(p, entries, (uint32_t)(e - entries));
  p = mp_encode_map(p, chunk ? 2 : 1);
  p = mp_encode_str(p, "size", 4);
  p = mp_encode_uint(p, (uint64_t)n);
  if (chunk) {
    p = mp_encode_str(p, "chunk", 5);
    p = mp_encode_str(p, chunk, (uint32_t)strlen(chunk));
  }
  return (size_t)(p - buf);
}

static void expect_ack(int fd, const char *chunk, int ms) {
  char buf[256];
  ssize_t r = recv_wait(fd, buf, sizeof buf, ms);
  CHECK(r > 0);
  lg_buf_t want = LG_BUF_INIT;
  lg_fwd_encode_ack(&want, chunk, (uint32_t)strlen(chunk));
  CHECK_EQ((size_t)r, want.len);
  CHECK(memcmp(buf, want.data, want.len) == 0);
  lg_buf_free(&want);
}

static lg_fwd_server_cfg_t base_cfg(void) {
  lg_fwd_server_cfg_t cfg;
  lg_fwd_server_cfg_defaults(&cfg);
  cfg.host = "127.0.0.1";
  cfg.port = 0; /* ephemeral */
  cfg.name = "fwdtest";
  return cfg;
}

/* --- tests --- */

static void client_ack_after_release(ctx_t *x) {
  int fd = tcp_connect(x->port);
  char msg[16384];
  size_t n = packed(msg, 3, "Y2h1bmsx\n");
  send_all(fd, msg, n);
  CHECK(wait_records(x, 3, 3000));
  /* Delivered to the receiver but not released: no ack yet. */
  char b[64];
  CHECK_EQ(recv_wait(fd, b, sizeof b, 300), -1);
  command(x, &x->want_release);
  expect_ack(fd, "Y2h1bmsx\n", 2000);
  /* A message without chunk is taken and never acked. */
  n = packed(msg, 1, NULL);
  send_all(fd, msg, n);
  CHECK(wait_records(x, 4, 3000));
  command(x, &x->want_release);
  CHECK_EQ(recv_wait(fd, b, sizeof b, 300), -1);
  close(fd);
  pthread_mutex_lock(&x->mu);
  CHECK(strstr(x->records.data, "\"body\":\"line 2\","
                                "\"fluent.tag\":\"app\"}"));
  pthread_mutex_unlock(&x->mu);
}

static void test_ack_after_release(void **state) {
  (void)state;
  ctx_t x = {0};
  x.hold_acks = 1;
  lg_fwd_server_cfg_t cfg = base_cfg();
  run(&x, &cfg, client_ack_after_release);
}

static void client_bad_input(ctx_t *x) {
  char msg[16384];
  size_t n = packed(msg, 2, "b2s=");
  /* A good connection that stays open throughout. */
  int good = tcp_connect(x->port);

  int g = tcp_connect(x->port);
  int gp = local_port(g);
  send_all(g, "\x05garbage\xc1", 9);
  CHECK(closed_within(g, 3000));
  char peer[64];
  snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d", gp);
  CHECK(log_has(x, peer, "not a forward message"));
  close(g);

  int r = tcp_connect(x->port);
  int rp = local_port(r);
  send_all(r, "\xc1", 1);
  CHECK(closed_within(r, 3000));
  snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d", rp);
  CHECK(log_has(x, peer, "malformed msgpack"));
  close(r);

  /* 100 MiB str32 header: refused right away, not after 100 MiB. */
  int big = tcp_connect(x->port);
  int bp = local_port(big);
  send_all(big, "\x93\xa1t\xdb\x06\x40\x00\x00", 8);
  CHECK(closed_within(big, 3000));
  snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d", bp);
  CHECK(log_has(x, peer, "over max_message_bytes"));
  close(big);

  /* A truncated message, then the sender goes away. */
  int t = tcp_connect(x->port);
  int tp = local_port(t);
  send_all(t, msg, n - 3);
  usleep(100 * 1000);
  close(t);
  snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d", tp);
  CHECK(log_has(x, peer, "in the middle of a message"));

  /* A valid message of a wrong shape. */
  int w = tcp_connect(x->port);
  int wp = local_port(w);
  send_all(w, "\x93\xa1t\x01\x01", 5);
  CHECK(closed_within(w, 3000));
  snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d", wp);
  CHECK(log_has(x, peer, "record is not a map"));
  close(w);

  /* The good connection is still served. */
  send_all(good, msg, n);
  expect_ack(good, "b2s=", 3000);
  close(good);
  CHECK(wait_records(x, 2, 1000));
  /* Each closing is counted by its reason. */
  CHECK_EQ(
      metric(
          "lugger_forward_closed_total{source=\"bad\",reason=\"malformed\"}"),
      3);
  CHECK_EQ(
      metric(
          "lugger_forward_closed_total{source=\"bad\",reason=\"too_large\"}"),
      1);
  CHECK_EQ(metric("lugger_forward_acks_total{source=\"bad\"}"), 1);
  CHECK_EQ(metric("lugger_forward_records_total{source=\"bad\"}"), 2);
}

static void test_bad_input(void **state) {
  (void)state;
  ctx_t x = {0};
  lg_fwd_server_cfg_t cfg = base_cfg();
  cfg.max_message_bytes = 64u << 20;
  cfg.name = "bad";
  run(&x, &cfg, client_bad_input);
}

static void client_slow_sender(ctx_t *x) {
  char msg[16384];
  size_t n = packed(msg, 2, "c2xvdw==");
  int slow = tcp_connect(x->port);
  int sp = local_port(slow);
  send_all(slow, msg, 10);
  /* Others are served while it dawdles. */
  int other = tcp_connect(x->port);
  send_all(other, msg, n);
  expect_ack(other, "c2xvdw==", 3000);
  CHECK(closed_within(slow, 5000));
  char peer[64];
  snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d", sp);
  CHECK(log_has(x, peer, "slow sender"));
  close(slow);
  close(other);
}

static void test_slow_sender(void **state) {
  (void)state;
  ctx_t x = {0};
  lg_fwd_server_cfg_t cfg = base_cfg();
  cfg.message_timeout_ms = 1500;
  run(&x, &cfg, client_slow_sender);
}

#define IDLE 1000

static void client_idle_connections(ctx_t *x) {
  static int fds[IDLE];
  for (int i = 0; i < IDLE; i++)
    fds[i] = tcp_connect(x->port);
  /* All accepted (the limit is IDLE + 1)... */
  for (int i = 0; i < 300; i++) {
    if (lg_fwd_server_connections(x->srv) == IDLE)
      break;
    usleep(10 * 1000);
  }
  CHECK_EQ(lg_fwd_server_connections(x->srv), IDLE);
  /* ...and one more is served among them. */
  char msg[16384];
  size_t n = packed(msg, 1, "aWRsZQ==");
  int fd = tcp_connect(x->port);
  send_all(fd, msg, n);
  expect_ack(fd, "aWRsZQ==", 3000);
  /* Over the limit: closed on accept, with a warning. */
  int over = tcp_connect(x->port);
  CHECK(closed_within(over, 3000));
  CHECK(log_has(x, "connection limit reached", "max_connections = 1001"));
  CHECK_EQ(metric("lugger_forward_connections_refused_total{source=\"idle\"}"),
           1);
  CHECK_EQ(metric("lugger_forward_connections{source=\"idle\"}"), IDLE + 1);
  close(over);
  close(fd);
  for (int i = 0; i < IDLE; i++)
    close(fds[i]);
}

static void test_idle_connections(void **state) {
  (void)state;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 2 * IDLE + 100) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  ctx_t x = {0};
  lg_fwd_server_cfg_t cfg = base_cfg();
  cfg.max_connections = IDLE + 1;
  cfg.name = "idle";
  run(&x, &cfg, client_idle_connections);
}

static void client_shared_key(ctx_t *x) {
  char reason[256];
  for (int round = 0; round < 2; round++) {
    int fd = tcp_connect(x->port);
    int fp = local_port(fd);
    char buf[4096];
    ssize_t r = recv_wait(fd, buf, sizeof buf, 3000);
    CHECK(r > 0);
    lg_fwd_auth_client_t c = {0};
    c.shared_key = round == 0 ? "wrong" : "s3cret";
    c.self_hostname = "sidecar";
    lg_buf_t ping = LG_BUF_INIT;
    CHECK_EQ(lg_fwd_auth_client_helo(&c, buf, (size_t)r, &ping, reason,
                                     sizeof reason),
             0);
    send_all(fd, ping.data, ping.len);
    lg_buf_free(&ping);
    r = recv_wait(fd, buf, sizeof buf, 3000);
    CHECK(r > 0);
    int rc = lg_fwd_auth_client_pong(&c, buf, (size_t)r, reason, sizeof reason);
    if (round == 0) {
      CHECK_EQ(rc, -EACCES);
      CHECK(strstr(reason, "shared_key mismatch"));
      CHECK(closed_within(fd, 3000));
      char peer[64];
      snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d as sidecar", fp);
      CHECK(log_has(x, peer, "authentication failed"));
    } else {
      CHECK_EQ(rc, 0);
      char msg[16384];
      size_t n = packed(msg, 2, "a2V5");
      send_all(fd, msg, n);
      expect_ack(fd, "a2V5", 3000);
    }
    close(fd);
  }
  /* No randomness for the HELO's nonce: the connection is closed at once,
   * with nothing sent (the sender would otherwise wait for a HELO). */
  long long closed0 =
      metric("lugger_forward_closed_total{source=\"fwdtest\",reason="
             "\"internal\"}");
  set_rand_fails(1);
  int nf = tcp_connect(x->port);
  int nfp = local_port(nf);
  CHECK_EQ(recv_wait(nf, reason, sizeof reason, 3000), 0);
  set_rand_fails(0);
  char nfpeer[64];
  snprintf(nfpeer, sizeof nfpeer, "tcp 127.0.0.1:%d:", nfp);
  CHECK(log_has(x, nfpeer, "no randomness for the handshake nonce"));
  CHECK_EQ(metric("lugger_forward_closed_total{source=\"fwdtest\",reason="
                  "\"internal\"}"),
           closed0 + 1);
  close(nf);
  /* No memory for the HELO (its buffer cannot grow): closed the same way,
   * with nothing sent. The loop's next allocation through lg_buf_reserve
   * after the accept is the HELO's. */
  __atomic_store_n(&reserve_fails, 1, __ATOMIC_SEQ_CST);
  nf = tcp_connect(x->port);
  nfp = local_port(nf);
  CHECK_EQ(recv_wait(nf, reason, sizeof reason, 3000), 0);
  CHECK_EQ(__atomic_load_n(&reserve_fails, __ATOMIC_SEQ_CST), 0);
  snprintf(nfpeer, sizeof nfpeer, "tcp 127.0.0.1:%d:", nfp);
  CHECK(log_has(x, nfpeer, "cannot send the HELO: out of memory"));
  CHECK_EQ(metric("lugger_forward_closed_total{source=\"fwdtest\",reason="
                  "\"internal\"}"),
           closed0 + 2);
  close(nf);
  /* Events before the handshake are not events. */
  int fd = tcp_connect(x->port);
  char buf[4096];
  CHECK(recv_wait(fd, buf, sizeof buf, 3000) > 0);
  char msg[16384];
  size_t n = packed(msg, 2, "bm8=");
  send_all(fd, msg, n);
  CHECK(closed_within(fd, 3000));
  close(fd);
  pthread_mutex_lock(&x->mu);
  CHECK_EQ(x->nrecords, 2);
  pthread_mutex_unlock(&x->mu);
}

static void test_shared_key(void **state) {
  (void)state;
  ctx_t x = {0};
  lg_fwd_server_cfg_t cfg = base_cfg();
  cfg.shared_key = "s3cret";
  cfg.self_hostname = "daemon";
  run(&x, &cfg, client_shared_key);
}

static void client_backpressure(ctx_t *x) {
  command(x, &x->want_pause);
  int fd = tcp_connect(x->port);
  struct timeval tv = {.tv_sec = 1};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int small = 64 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  char msg[16384];
  size_t n = packed(msg, 100, NULL);
  /* The server reads nothing: the sender blocks once the socket buffers
   * are full, long before 64 MiB. */
  size_t sent = 0;
  int blocked = 0;
  while (sent < (64u << 20)) {
    ssize_t w = send(fd, msg, n, MSG_NOSIGNAL);
    if (w < 0) {
      CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
      blocked = 1;
      break;
    }
    sent += (size_t)w;
    if ((size_t)w < n) { /* finish the partial message later */
      memmove(msg, msg + w, n - (size_t)w);
      n -= (size_t)w;
      continue;
    }
    n = packed(msg, 100, NULL);
  }
  CHECK(blocked);
  pthread_mutex_lock(&x->mu);
  CHECK_EQ(x->nrecords, 0);
  pthread_mutex_unlock(&x->mu);
  /* Resumed: everything sent arrives, nothing was dropped. */
  command(x, &x->want_resume);
  tv.tv_sec = 10;
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  send_all(fd, msg, n); /* the rest of the partial message */
  size_t whole = packed(msg, 100, NULL);
  uint32_t expect = (uint32_t)((sent + n) / whole) * 100;
  CHECK(wait_records(x, expect, 10000));
  pthread_mutex_lock(&x->mu);
  CHECK_EQ(x->nrecords, expect);
  pthread_mutex_unlock(&x->mu);
  close(fd);
}

static void test_backpressure(void **state) {
  (void)state;
  ctx_t x = {0};
  lg_fwd_server_cfg_t cfg = base_cfg();
  run(&x, &cfg, client_backpressure);
}

static void client_udp_and_unix(ctx_t *x) {
  /* UDP heartbeat: one byte out, one 0x00 back from the same port. */
  int u = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)x->port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  ssize_t sr = sendto(u, "\0", 1, 0, (struct sockaddr *)&a, sizeof a);
  if (sr != 1)
    dprintf(fail_fd, "sendto: %s\n", strerror(errno));
  CHECK_EQ(sr, 1);
  struct timeval tv = {.tv_sec = 3};
  setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char b[8];
  struct sockaddr_in from;
  socklen_t fl = sizeof from;
  CHECK_EQ(recvfrom(u, b, sizeof b, 0, (struct sockaddr *)&from, &fl), 1);
  CHECK_EQ(b[0], 0);
  CHECK_EQ(ntohs(from.sin_port), x->port);
  close(u);

  /* Unix socket: served, and a bad message names our pid. */
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un ua = {.sun_family = AF_UNIX};
  snprintf(ua.sun_path, sizeof ua.sun_path, "%s", x->unix_path);
  CHECK_EQ(connect(s, (struct sockaddr *)&ua, sizeof ua), 0);
  char msg[16384];
  size_t n = packed(msg, 2, "dW5peA==");
  send_all(s, msg, n);
  expect_ack(s, "dW5peA==", 3000);
  send_all(s, "\x91\x01", 2);
  CHECK(closed_within(s, 3000));
  char peer[64];
  snprintf(peer, sizeof peer, "unix pid %d", (int)getpid());
  CHECK(log_has(x, peer, "array of 1 elements"));
  close(s);
}

static void test_udp_and_unix(void **state) {
  (void)state;
  ctx_t x = {0};
  snprintf(x.unix_path, sizeof x.unix_path, "/tmp/lg_fwd_test_%d.sock",
           (int)getpid());
  lg_fwd_server_cfg_t cfg = base_cfg();
  cfg.unix_path = x.unix_path;
  cfg.unix_mode = 0600;
  run(&x, &cfg, client_udp_and_unix);
}

/* One message of one record whose body is `n` bytes of 'a'. */
static char *big_message(size_t n, const char *chunk, size_t *len) {
  char *entries = malloc(n + 64), *msg = malloc(n + 256);
  char *e = mp_encode_array(entries, 2);
  e = lg_mp_encode_event_time(e, 1700000000000000000LL);
  e = mp_encode_map(e, 1);
  e = mp_encode_str(e, "log", 3);
  e = mp_encode_strl(e, (uint32_t)n);
  memset(e, 'a', n);
  e += n;
  char *p = mp_encode_array(msg, 3);
  p = mp_encode_str(p, "big", 3);
  p = mp_encode_bin(p, entries, (uint32_t)(e - entries));
  p = mp_encode_map(p, 1);
  p = mp_encode_str(p, "chunk", 5);
  p = mp_encode_str(p, chunk, (uint32_t)strlen(chunk));
  free(entries);
  *len = (size_t)(p - msg);
  return msg;
}

static void client_buffered_limit(ctx_t *x) {
  size_t n;
  char *msg = big_message(80000, "YmlnMQ==", &n);
  int a = tcp_connect(x->port);
  send_all(a, msg, 60000);
  usleep(200 * 1000);
  /* A second sender's partial message takes the server over its limit
   * for partial messages: that connection is closed, naming the peer. */
  int b = tcp_connect(x->port);
  int bp = local_port(b);
  send_all(b, msg, 60000);
  CHECK(closed_within(b, 3000));
  char peer[64];
  snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d", bp);
  CHECK(log_has(x, peer, "over max_buffered_bytes"));
  CHECK_EQ(
      metric("lugger_forward_closed_total{source=\"buf\",reason=\"busy\"}"), 1);
  close(b);
  /* The first completes its message and is acked. */
  send_all(a, msg + 60000, n - 60000);
  expect_ack(a, "YmlnMQ==", 5000);
  CHECK(wait_records(x, 1, 1000));
  close(a);
  free(msg);
}

static void test_buffered_limit(void **state) {
  (void)state;
  ctx_t x = {0};
  lg_fwd_server_cfg_t cfg = base_cfg();
  cfg.max_buffered_bytes = 100000;
  cfg.max_message_bytes = 100000;
  cfg.name = "buf";
  run(&x, &cfg, client_buffered_limit);
}

/* An ack owed to a sender that reset its connection while the source is
 * paused (its memory budget full): nothing reads the connection, so only
 * the ack's write can find the sender gone. The failed write closes the
 * connection then, counted as "write", not once reading resumes; the
 * records that arrived were handed on (the sender, had it lived, would
 * send them again: nothing acked them). */
static void client_write_fails(ctx_t *x) {
  int fd = tcp_connect(x->port);
  int fp = local_port(fd);
  char msg[16384];
  size_t n = packed(msg, 3, "d3JpdGU=");
  send_all(fd, msg, n);
  CHECK(wait_records(x, 3, 3000));
  command(x, &x->want_pause);
  struct linger lin = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
  close(fd); /* a reset */
  usleep(200 * 1000);
  CHECK_EQ(metric("lugger_forward_connections{source=\"wr\"}"), 1);
  command(x, &x->want_release);
  long long t0 = now_ms_mono();
  while (metric("lugger_forward_connections{source=\"wr\"}") != 0 &&
         now_ms_mono() - t0 < 3000)
    usleep(10 * 1000);
  CHECK_EQ(metric("lugger_forward_connections{source=\"wr\"}"), 0);
  CHECK_EQ(metric("lugger_forward_closed_total{source=\"wr\",reason="
                  "\"write\"}"),
           1);
  CHECK_EQ(metric("lugger_forward_acks_total{source=\"wr\"}"), 1);
  char peer[64];
  snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d: write: ", fp);
  CHECK(log_has(x, peer, "closing the connection"));
  pthread_mutex_lock(&x->mu);
  CHECK_EQ(x->nrecords, 3);
  pthread_mutex_unlock(&x->mu);
  command(x, &x->want_resume);
}

static void test_write_fails(void **state) {
  (void)state;
  ctx_t x = {0};
  x.hold_acks = 1;
  lg_fwd_server_cfg_t cfg = base_cfg();
  cfg.name = "wr";
  run(&x, &cfg, client_write_fails);
}

/* --- TLS --- */

static char tls_dir[64];

static void client_tls(ctx_t *x) {
  /* Plain bytes on a TLS port. */
  int p = tcp_connect(x->port);
  int pp = local_port(p);
  char msg[16384];
  size_t n = packed(msg, 2, "dGxz");
  send_all(p, msg, n);
  CHECK(closed_within(p, 3000));
  char peer[64];
  snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d", pp);
  CHECK(log_has(x, peer, "plain bytes on a TLS port"));
  close(p);

  /* A TLS client that checks the certificate, then the handshake. */
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  char ca[128];
  snprintf(ca, sizeof ca, "%s/cert.pem", tls_dir);
  CHECK_EQ(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  int fd = tcp_connect(x->port);
  SSL *ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set1_host(ssl, "localhost");
  CHECK_EQ(SSL_connect(ssl), 1);
  char buf[4096];
  int r = SSL_read(ssl, buf, sizeof buf);
  CHECK(r > 0);
  lg_fwd_auth_client_t c = {0};
  c.shared_key = "k";
  c.self_hostname = "cli";
  lg_buf_t ping = LG_BUF_INIT;
  char reason[256];
  CHECK_EQ(
      lg_fwd_auth_client_helo(&c, buf, (size_t)r, &ping, reason, sizeof reason),
      0);
  CHECK_EQ(SSL_write(ssl, ping.data, (int)ping.len), (int)ping.len);
  lg_buf_free(&ping);
  r = SSL_read(ssl, buf, sizeof buf);
  CHECK(r > 0);
  CHECK_EQ(lg_fwd_auth_client_pong(&c, buf, (size_t)r, reason, sizeof reason),
           0);
  CHECK_EQ(SSL_write(ssl, msg, (int)n), (int)n);
  r = SSL_read(ssl, buf, sizeof buf);
  lg_buf_t want = LG_BUF_INIT;
  lg_fwd_encode_ack(&want, "dGxz", 4);
  CHECK_EQ(r, (int)want.len);
  CHECK(memcmp(buf, want.data, want.len) == 0);
  lg_buf_free(&want);
  SSL_free(ssl);
  close(fd);
  CHECK(wait_records(x, 2, 1000));

  /* No randomness for the HELO's nonce once TLS is up: the connection is
   * closed at once, as on a plain port, not left open with the sender
   * waiting for a HELO (there is no idle_timeout here to end it). */
  long long closed0 = metric(
      "lugger_forward_closed_total{source=\"fwdtest\",reason=\"internal\"}");
  set_rand_fails(1);
  fd = tcp_connect(x->port);
  int fp = local_port(fd);
  ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set1_host(ssl, "localhost");
  CHECK_EQ(SSL_connect(ssl), 1);
  long long t0 = now_ms_mono();
  /* Whatever TLS sends after its handshake (session tickets), then the
   * end of the connection, without a HELO. */
  while ((r = SSL_read(ssl, buf, sizeof buf)) > 0)
    ;
  long long waited = now_ms_mono() - t0;
  set_rand_fails(0);
  /* The socket's receive timeout is 5 s: a read that ends sooner saw the
   * server close the connection. */
  CHECK(waited < 3000);
  snprintf(peer, sizeof peer, "tcp 127.0.0.1:%d:", fp);
  CHECK(log_has(x, peer, "no randomness for the handshake nonce"));
  CHECK_EQ(metric("lugger_forward_closed_total{source=\"fwdtest\",reason="
                  "\"internal\"}"),
           closed0 + 1);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
}

static void test_tls(void **state) {
  (void)state;
  snprintf(tls_dir, sizeof tls_dir, "%s", lg_test_tmpdir("lg_fwd_tls."));
  char cmd[512];
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
           "-subj /CN=localhost -addext subjectAltName=DNS:localhost "
           "-keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1",
           tls_dir, tls_dir);
  CHECK_EQ(system(cmd), 0);
  char cert[128], key[128], err[256];
  snprintf(cert, sizeof cert, "%s/cert.pem", tls_dir);
  snprintf(key, sizeof key, "%s/key.pem", tls_dir);
  lg_tls_ctx_t *tls = lg_tls_ctx_server(cert, key, NULL, err, sizeof err);
  if (tls == NULL)
    fail_msg("%s", err);
  ctx_t x = {0};
  lg_fwd_server_cfg_t cfg = base_cfg();
  cfg.tls = tls;
  cfg.shared_key = "k";
  cfg.self_hostname = "srv";
  run(&x, &cfg, client_tls);
  lg_tls_ctx_destroy(tls);
  CHECK_EQ(lg_test_rmtree(tls_dir), 0);
}

/* --- --serve: a server for the interop tests --- */

static int ack_delay_ms;

typedef struct delayed {
  uv_timer_t t;
  lg_fwd_ack_t *ack;
} delayed_t;

static void on_delayed_closed(uv_handle_t *h) { free(h->data); }

static void on_delay(uv_timer_t *t) {
  delayed_t *d = t->data;
  lg_fwd_ack_release(d->ack, 1);
  uv_close((uv_handle_t *)&d->t, on_delayed_closed);
}

static uv_loop_t *serve_loop;

static void serve_batch(void *ud, lg_batch_t *b, lg_fwd_ack_t *ack,
                        const char *peer, uint64_t conn_id) {
  lg_buf_t out = LG_BUF_INIT;
  for (uint32_t i = 0; i < b->n; i++)
    lg_json_encode_record(&out, b, i);
  fwrite(out.data, 1, out.len, stdout);
  fflush(stdout);
  lg_buf_free(&out);
  lg_batch_destroy(b);
  if (ack == NULL)
    return;
  if (ack_delay_ms <= 0) {
    lg_fwd_ack_release(ack, 1);
    return;
  }
  delayed_t *d = malloc(sizeof *d);
  d->ack = ack;
  uv_timer_init(serve_loop, &d->t);
  d->t.data = d;
  uv_timer_start(&d->t, on_delay, (uint64_t)ack_delay_ms, 0);
}

static int serve(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  serve_loop = loop;
  const char *d = getenv("ACK_DELAY_MS");
  ack_delay_ms = d ? atoi(d) : 0;
  lg_fwd_server_cfg_t cfg;
  lg_fwd_server_cfg_defaults(&cfg);
  cfg.host = "127.0.0.1";
  cfg.port = atoi(argv[2]);
  cfg.name = "serve";
  if (argc > 3 && argv[3][0])
    cfg.shared_key = argv[3];
  cfg.self_hostname = "lugger-test";
  lg_tls_ctx_t *tls = NULL;
  if (argc > 5) {
    char err[256];
    tls = lg_tls_ctx_server(argv[4], argv[5], NULL, err, sizeof err);
    if (tls == NULL) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    cfg.tls = tls;
  }
  cfg.on_batch = serve_batch;
  lg_fwd_server_t *s;
  char err[256];
  if (lg_fwd_server_start(loop, &cfg, &s, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  fprintf(stderr, "listening %d\n", lg_fwd_server_port(s));
  return uv_run(loop, UV_RUN_DEFAULT);
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "--serve") == 0)
    return serve(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ack_after_release),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_slow_sender),
      cmocka_unit_test(test_idle_connections),
      cmocka_unit_test(test_shared_key),
      cmocka_unit_test(test_backpressure),
      cmocka_unit_test(test_buffered_limit),
      cmocka_unit_test(test_udp_and_unix),
      cmocka_unit_test(test_tls),
      cmocka_unit_test(test_write_fails),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
