/* Unit tests: lg_http_client on a real libuv loop against real local HTTP
 * servers (tests/unit/core/http_test_server.py, started here): keep-alive
 * reuse, gzip bodies, auth headers, a bearer token file that changes,
 * failover and round-robin, resets, slow answers and timeouts, TLS with a
 * CA file and client certificates, Retry-After, closing with requests in
 * flight. Every test ends with uv_loop_close() == 0. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <uv.h>
#include <zlib.h>

#include "core/lg_http_client.h"
#include "helpers/lg_test.h"

/* ---- test servers ----------------------------------------------------- */

typedef struct server {
  pid_t pid;
  int port;
  char base[64];
} server_t;

static const char *src_dir(void) {
  const char *d = getenv("LUGGER_SOURCE_DIR");
  return d ? d : ".";
}

/* Starts http_test_server.py with `args` (NULL-terminated) and waits for
 * its "PORT n" line. */
static void server_start(server_t *s, const char *scheme, ...) {
  char script[512];
  snprintf(script, sizeof script, "%s/tests/unit/core/http_test_server.py",
           src_dir());
  const char *argv[16] = {"python3", script};
  int argc = 2;
  va_list ap;
  va_start(ap, scheme);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && argc < 15)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    close(fds[0]);
    execvp("python3", (char *const *)argv);
    _exit(127);
  }
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  char line[64] = "";
  assert_non_null(fgets(line, sizeof line, f));
  fclose(f);
  assert_int_equal(sscanf(line, "PORT %d", &s->port), 1);
  s->pid = pid;
  snprintf(s->base, sizeof s->base, "%s://127.0.0.1:%d", scheme, s->port);
}

static void server_stop(server_t *s) {
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
}

/* A port nothing listens on: bind, read the port, close. */
static int dead_port(void) {
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  uv_tcp_t t;
  uv_tcp_init(&loop, &t);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_bind(&t, (struct sockaddr *)&a, 0);
  struct sockaddr_in b;
  int len = sizeof b;
  uv_tcp_getsockname(&t, (struct sockaddr *)&b, &len);
  uv_close((uv_handle_t *)&t, NULL);
  LG_TEST_LOOP_CLOSE(&loop);
  return ntohs(b.sin_port);
}

/* ---- a request and its answer ----------------------------------------- */

typedef struct result {
  int done;
  int status, transport_error;
  char error[256];
  char *body;
  size_t body_len;
  int64_t retry_after_ms;
  char host[64];
  int new_connections;
  size_t sent_bytes;
  char x_conn[32];
  cJSON *json;
} result_t;

static void on_done(void *ud, lg_http_req_t *req,
                    const lg_http_response_t *res) {
  result_t *r = ud;
  r->done++;
  r->status = res->status;
  r->transport_error = res->transport_error;
  snprintf(r->error, sizeof r->error, "%s", res->error);
  r->body = malloc(res->body_len + 1);
  memcpy(r->body, res->body, res->body_len + 1);
  r->body_len = res->body_len;
  r->retry_after_ms = res->retry_after_ms;
  snprintf(r->host, sizeof r->host, "%s", res->host);
  r->new_connections = res->new_connections;
  r->sent_bytes = res->sent_bytes;
  const char *xc = lg_http_response_header(req, "x-conn");
  snprintf(r->x_conn, sizeof r->x_conn, "%s", xc ? xc : "");
  r->json = cJSON_Parse(r->body);
}

static void result_free(result_t *r) {
  free(r->body);
  cJSON_Delete(r->json);
  memset(r, 0, sizeof *r);
}

static lg_http_client_t *client(uv_loop_t *loop, lg_http_client_conf_t *conf) {
  char err[256] = "";
  if (conf->component == NULL)
    conf->component = "test";
  lg_http_client_t *c = lg_http_client_create(loop, conf, err, sizeof err);
  if (c == NULL)
    print_error("lg_http_client_create: %s\n", err);
  assert_non_null(c);
  return c;
}

static void on_closed(void *ud) { (*(int *)ud)++; }

static void close_and_check(uv_loop_t *loop, lg_http_client_t *c) {
  int closed = 0;
  lg_http_client_close(c, on_closed, &closed);
  uv_run(loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
  LG_TEST_LOOP_CLOSE(loop);
}

static void do_req(uv_loop_t *loop, lg_http_client_t *c, result_t *r,
                   const char *method, const char *path, const char *body,
                   size_t len, const char *const *hdrs, size_t nh) {
  memset(r, 0, sizeof *r);
  assert_non_null(lg_http_request(c, method, path, "application/x-ndjson", hdrs,
                                  nh, body, len, 1, on_done, r));
  lg_test_run_until_count(loop, &r->done, 1, 60000, "the answer");
  assert_int_equal(r->done, 1);
}

static const char *hdr(result_t *r, const char *name) {
  cJSON *h = cJSON_GetObjectItem(r->json, "headers");
  cJSON *v = cJSON_GetObjectItem(h, name);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const char *field(result_t *r, const char *name) {
  cJSON *v = cJSON_GetObjectItem(r->json, name);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int ifield(result_t *r, const char *name) {
  cJSON *v = cJSON_GetObjectItem(r->json, name);
  return cJSON_IsNumber(v) ? v->valueint : -1;
}

/* ---- tests ------------------------------------------------------------ */

/* A POST round trip: body, content type, custom headers; no
 * "Expect: 100-continue" even for a 2 MiB body; kept-alive connection
 * reused by the following requests. */
static void test_post_keepalive(void **state) {
  server_t s;
  server_start(&s, "http", NULL);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *hosts[] = {s.base};
  const char *hn[] = {"X-Scope-OrgID"}, *hv[] = {"tenant-a"};
  lg_http_client_conf_t conf = {.hosts = hosts,
                                .nhosts = 1,
                                .tls_verify = 1,
                                .header_names = hn,
                                .header_values = hv,
                                .nheaders = 1};
  lg_http_client_t *c = client(&loop, &conf);
  result_t r;
  const char *extra[] = {"X-Extra: 1"};
  do_req(&loop, c, &r, "POST", "/echo?x=1", "{\"a\":1}\n", 8, extra, 1);
  assert_int_equal(r.status, 200);
  assert_string_equal(field(&r, "body"), "{\"a\":1}\n");
  assert_string_equal(field(&r, "path"), "/echo?x=1");
  assert_string_equal(hdr(&r, "content-type"), "application/x-ndjson");
  assert_string_equal(hdr(&r, "x-scope-orgid"), "tenant-a");
  assert_string_equal(hdr(&r, "x-extra"), "1");
  assert_null(hdr(&r, "expect"));
  assert_int_equal(r.new_connections, 1);
  int conn = ifield(&r, "conn");
  assert_string_equal(r.host, s.base);
  result_free(&r);

  size_t big = 2u << 20;
  char *b = malloc(big);
  memset(b, 'a', big);
  for (int i = 0; i < 4; i++) {
    do_req(&loop, c, &r, "POST", "/echo", b, big, NULL, 0);
    assert_int_equal(r.status, 200);
    assert_null(hdr(&r, "expect"));
    assert_int_equal(strlen(field(&r, "body")), big);
    assert_int_equal(r.new_connections, 0);
    assert_int_equal(ifield(&r, "conn"), conn);
    result_free(&r);
  }
  free(b);
  do_req(&loop, c, &r, "GET", "/big/100000", NULL, 0, NULL, 0);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 100000);
  result_free(&r);
  assert_int_equal(lg_http_client_in_flight(c), 0);
  close_and_check(&loop, c);
  server_stop(&s);
}

/* gzip bodies: the server sees Content-Encoding: gzip, fewer bytes, and
 * the same text after gunzip; the encoding is deterministic. */
static void test_gzip(void **state) {
  server_t s;
  server_start(&s, "http", NULL);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *hosts[] = {s.base};
  lg_http_client_conf_t conf = {.hosts = hosts,
                                .nhosts = 1,
                                .tls_verify = 1,
                                .compression = LG_HTTP_COMPRESS_GZIP};
  lg_http_client_t *c = client(&loop, &conf);
  char body[8192];
  size_t n = 0;
  for (int i = 0; n < sizeof body - 64; i++)
    n += (size_t)snprintf(body + n, sizeof body - n,
                          "{\"body\":\"GET /x %d 200\"}\n", i);
  result_t r;
  do_req(&loop, c, &r, "POST", "/echo", body, n, NULL, 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(hdr(&r, "content-encoding"), "gzip");
  assert_true(ifield(&r, "raw_len") < (int)n / 3);
  assert_int_equal(r.sent_bytes, ifield(&r, "raw_len"));
  assert_memory_equal(field(&r, "body"), body, n);
  result_free(&r);
  /* Not compressible (e.g. a GET): sent as is. */
  memset(&r, 0, sizeof r);
  assert_non_null(lg_http_request(c, "POST", "/echo", NULL, NULL, 0, body, n, 0,
                                  on_done, &r));
  lg_test_run_until_count(&loop, &r.done, 1, 60000, "the answer");
  assert_null(hdr(&r, "content-encoding"));
  assert_int_equal(ifield(&r, "raw_len"), n);
  result_free(&r);
  close_and_check(&loop, c);
  server_stop(&s);

  size_t l1, l2;
  void *g1 = lg_http_gzip(body, n, &l1), *g2 = lg_http_gzip(body, n, &l2);
  assert_int_equal(l1, l2);
  assert_memory_equal(g1, g2, l1);
  char back[8192];
  z_stream z = {0};
  assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
  z.next_in = g1;
  z.avail_in = (uInt)l1;
  z.next_out = (unsigned char *)back;
  z.avail_out = sizeof back;
  assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
  assert_int_equal(z.total_out, n);
  assert_memory_equal(back, body, n);
  inflateEnd(&z);
  free(g1);
  free(g2);
}

/* Authorization: basic, ApiKey, and a bearer token from a file that is
 * re-read when it changes (replaced by rename, as a projected
 * service-account token is). */
static void test_auth(void **state) {
  server_t s;
  server_start(&s, "http", NULL);
  const char *hosts[] = {s.base};
  result_t r;
  {
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    lg_http_client_conf_t conf = {.hosts = hosts,
                                  .nhosts = 1,
                                  .tls_verify = 1,
                                  .user = "elastic",
                                  .password = "s3cret"};
    lg_http_client_t *c = client(&loop, &conf);
    do_req(&loop, c, &r, "POST", "/echo", "x", 1, NULL, 0);
    /* base64("elastic:s3cret") */
    assert_string_equal(hdr(&r, "authorization"), "Basic ZWxhc3RpYzpzM2NyZXQ=");
    result_free(&r);
    close_and_check(&loop, c);
  }
  {
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    lg_http_client_conf_t conf = {
        .hosts = hosts,
        .nhosts = 1,
        .tls_verify = 1,
        .api_key =
            "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="};
    lg_http_client_t *c = client(&loop, &conf);
    do_req(&loop, c, &r, "POST", "/echo", "x", 1, NULL, 0);
    assert_string_equal(
        hdr(&r, "authorization"),
        "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==");
    result_free(&r);
    close_and_check(&loop, c);
  }
  {
    char dir[256];
    snprintf(dir, sizeof dir, "%s", lg_test_tmpdir("lg_http_tok."));
    char tok[512], tmp[512];
    snprintf(tok, sizeof tok, "%s/token", dir);
    snprintf(tmp, sizeof tmp, "%s/token.new", dir);
    lg_test_write_file(tok, "first-token\n");
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    lg_http_client_conf_t conf = {
        .hosts = hosts, .nhosts = 1, .tls_verify = 1, .bearer_token_file = tok};
    lg_http_client_t *c = client(&loop, &conf);
    do_req(&loop, c, &r, "POST", "/echo", "x", 1, NULL, 0);
    assert_string_equal(hdr(&r, "authorization"), "Bearer first-token");
    result_free(&r);
    lg_test_write_file(tmp, "second-token\n");
    assert_int_equal(rename(tmp, tok), 0);
    usleep(1100 * 1000); /* the file is checked at most once a second */
    uv_update_time(&loop);
    do_req(&loop, c, &r, "POST", "/echo", "x", 1, NULL, 0);
    assert_string_equal(hdr(&r, "authorization"), "Bearer second-token");
    result_free(&r);
    /* A token file that vanishes keeps the last token. */
    unlink(tok);
    usleep(1100 * 1000);
    uv_update_time(&loop);
    do_req(&loop, c, &r, "POST", "/echo", "x", 1, NULL, 0);
    assert_string_equal(hdr(&r, "authorization"), "Bearer second-token");
    result_free(&r);
    close_and_check(&loop, c);
    assert_int_equal(lg_test_rmtree(dir), 0);
    /* An unreadable file at creation is a config error. */
    assert_int_equal(uv_loop_init(&loop), 0);
    char err[256] = "";
    assert_null(lg_http_client_create(&loop, &conf, err, sizeof err));
    assert_non_null(strstr(err, "bearer_token_file"));
    LG_TEST_LOOP_CLOSE(&loop);
  }
  server_stop(&s);
}

/* Several hosts: a dead one is failed over at once and then set aside;
 * live ones take turns. */
static void test_failover_round_robin(void **state) {
  server_t a, b;
  server_start(&a, "http", "--name", "a", NULL);
  server_start(&b, "http", "--name", "b", NULL);
  char dead[64];
  snprintf(dead, sizeof dead, "http://127.0.0.1:%d", dead_port());
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *hosts[] = {dead, a.base, b.base};
  lg_http_client_conf_t conf = {.hosts = hosts, .nhosts = 3, .tls_verify = 1};
  lg_http_client_t *c = client(&loop, &conf);
  result_t r;
  /* First request: the dead host is tried first (round-robin starts at
   * it), fails to connect, and the request moves on. */
  do_req(&loop, c, &r, "POST", "/echo", "x", 1, NULL, 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(field(&r, "server"), "a");
  result_free(&r);
  int seen_a = 0, seen_b = 0;
  for (int i = 0; i < 6; i++) {
    do_req(&loop, c, &r, "POST", "/echo", "x", 1, NULL, 0);
    assert_int_equal(r.status, 200);
    assert_string_not_equal(r.host, dead);
    if (strcmp(field(&r, "server"), "a") == 0)
      seen_a++;
    else
      seen_b++;
    result_free(&r);
  }
  assert_int_equal(seen_a, 3);
  assert_int_equal(seen_b, 3);
  /* Every host down: the answer is a transport error, not a hang. */
  server_stop(&a);
  server_stop(&b);
  do_req(&loop, c, &r, "POST", "/echo", "x", 1, NULL, 0);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.transport_error, CURLE_COULDNT_CONNECT);
  result_free(&r);
  close_and_check(&loop, c);
}

/* A host comes back: after its set-aside time it is used again. */
static void test_host_retried_later(void **state) {
  server_t a;
  server_start(&a, "http", "--name", "a", NULL);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *hosts[] = {a.base};
  lg_http_client_conf_t conf = {.hosts = hosts, .nhosts = 1, .tls_verify = 1};
  lg_http_client_t *c = client(&loop, &conf);
  result_t r;
  do_req(&loop, c, &r, "POST", "/reset", "x", 1, NULL, 0);
  assert_int_equal(r.status, 0);
  if (r.transport_error != CURLE_RECV_ERROR &&
      r.transport_error != CURLE_GOT_NOTHING &&
      r.transport_error != CURLE_SEND_ERROR)
    fail_msg("transport_error %d: %s", r.transport_error, r.error);
  result_free(&r);
  /* The only host is set aside, yet still used (nearest of the down). */
  do_req(&loop, c, &r, "POST", "/echo", "x", 1, NULL, 0);
  assert_int_equal(r.status, 200);
  result_free(&r);
  close_and_check(&loop, c);
  server_stop(&a);
}

/* Slow answers: within the timeout they arrive; past it the request ends
 * with CURLE_OPERATION_TIMEDOUT. Many in flight at once. */
static void test_slow_and_timeout(void **state) {
  server_t s;
  server_start(&s, "http", NULL);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *hosts[] = {s.base};
  lg_http_client_conf_t conf = {.hosts = hosts,
                                .nhosts = 1,
                                .tls_verify = 1,
                                .timeout_ms = 700,
                                .max_connections_per_host = 4};
  lg_http_client_t *c = client(&loop, &conf);
  result_t r[8];
  memset(r, 0, sizeof r);
  for (int i = 0; i < 8; i++)
    assert_non_null(lg_http_request(c, "POST", "/slow/150", NULL, NULL, 0, "x",
                                    1, 1, on_done, &r[i]));
  assert_int_equal(lg_http_client_in_flight(c), 8);
  for (int i = 0; i < 8; i++) {
    lg_test_run_until_count(&loop, &r[i].done, 1, 60000, "the answer");
    assert_int_equal(r[i].status, 200);
    result_free(&r[i]);
  }
  do_req(&loop, c, &r[0], "POST", "/slow/3000", "x", 1, NULL, 0);
  assert_int_equal(r[0].status, 0);
  assert_int_equal(r[0].transport_error, CURLE_OPERATION_TIMEDOUT);
  result_free(&r[0]);
  close_and_check(&loop, c);
  server_stop(&s);
}

/* Retry-After as seconds and as an HTTP-date; a status without one. */
static void test_retry_after(void **state) {
  server_t s;
  server_start(&s, "http", NULL);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const char *hosts[] = {s.base};
  lg_http_client_conf_t conf = {.hosts = hosts, .nhosts = 1, .tls_verify = 1};
  lg_http_client_t *c = client(&loop, &conf);
  result_t r;
  do_req(&loop, c, &r, "POST", "/status/429?retry_after=7", "x", 1, NULL, 0);
  assert_int_equal(r.status, 429);
  assert_int_equal(r.retry_after_ms, 7000);
  assert_string_equal(r.body, "status 429");
  result_free(&r);
  do_req(&loop, c, &r, "POST", "/status/503", "x", 1, NULL, 0);
  assert_int_equal(r.status, 503);
  assert_int_equal(r.retry_after_ms, -1);
  result_free(&r);
  close_and_check(&loop, c);
  server_stop(&s);
  assert_int_equal(lg_http_parse_retry_after("120", 0), 120000);
  assert_int_equal(lg_http_parse_retry_after(" 0 ", 0), 0);
  assert_int_equal(lg_http_parse_retry_after("-1", 0), -1);
  assert_int_equal(lg_http_parse_retry_after("soon", 0), -1);
  /* 784111777 = Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example). */
  assert_int_equal(lg_http_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT",
                                             784111777 - 30),
                   30000);
  assert_int_equal(
      lg_http_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 + 5),
      0);
}

static void test_escape(void **state) {
  char *e = lg_http_escape("INSERT INTO logs.t FORMAT JSONEachRow");
  assert_string_equal(e, "INSERT%20INTO%20logs.t%20FORMAT%20JSONEachRow");
  free(e);
  e = lg_http_escape("a&b=c/é");
  assert_string_equal(e, "a%26b%3Dc%2F%C3%A9");
  free(e);
}

/* TLS: verified with a CA file; refused without it; tls_verify = false
 * accepts; a server that requires a client certificate gets one. */
static void test_tls(void **state) {
  char dir[256];
  snprintf(dir, sizeof dir, "%s", lg_test_tmpdir("lg_http_tls."));
  char cmd[700];
  snprintf(cmd, sizeof cmd,
           "python3 %s/tests/unit/core/http_test_server.py --make-certs %s",
           src_dir(), dir);
  assert_int_equal(system(cmd), 0);
  char ca[300], crt[300], key[300], ccrt[300], ckey[300];
  snprintf(ca, sizeof ca, "%s/ca.pem", dir);
  snprintf(crt, sizeof crt, "%s/server.pem", dir);
  snprintf(key, sizeof key, "%s/server.key", dir);
  snprintf(ccrt, sizeof ccrt, "%s/client.pem", dir);
  snprintf(ckey, sizeof ckey, "%s/client.key", dir);
  server_t s, m;
  server_start(&s, "https", "--tls", crt, key, NULL);
  server_start(&m, "https", "--tls", crt, key, "--client-ca", ca, NULL);
  result_t r;
  const char *hosts[] = {s.base}, *mhosts[] = {m.base};
  struct {
    const char *const *hosts;
    const char *ca, *cert, *key;
    int verify, ok;
  } cases[] = {
      {hosts, ca, NULL, NULL, 1, 1},
      {hosts, NULL, NULL, NULL, 1, 0}, /* unknown CA */
      {hosts, NULL, NULL, NULL, 0, 1}, /* not verified */
      {mhosts, ca, NULL, NULL, 1, 0},  /* no client certificate */
      {mhosts, ca, ccrt, ckey, 1, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    lg_http_client_conf_t conf = {.hosts = cases[i].hosts,
                                  .nhosts = 1,
                                  .ca_file = cases[i].ca,
                                  .cert_file = cases[i].cert,
                                  .key_file = cases[i].key,
                                  .tls_verify = cases[i].verify,
                                  .timeout_ms = 5000};
    lg_http_client_t *c = client(&loop, &conf);
    do_req(&loop, c, &r, "POST", "/echo", "tls", 3, NULL, 0);
    if (cases[i].ok) {
      assert_int_equal(r.status, 200);
      assert_string_equal(field(&r, "body"), "tls");
    } else {
      assert_int_equal(r.status, 0);
      assert_int_not_equal(r.transport_error, 0);
      assert_true(r.error[0] != '\0');
    }
    result_free(&r);
    close_and_check(&loop, c);
  }
  server_stop(&s);
  server_stop(&m);
  assert_int_equal(lg_test_rmtree(dir), 0);
}

typedef struct closer {
  lg_http_client_t *c;
  int calls, closed;
} closer_t;

static void on_done_then_close(void *ud, lg_http_req_t *req,
                               const lg_http_response_t *res) {
  closer_t *k = ud;
  k->calls++;
  lg_http_client_close(k->c, on_closed, &k->closed);
}

/* Closing with requests in flight: their callbacks never run, every
 * handle closes; closing from inside a completion callback works too. */
static void test_close_in_flight(void **state) {
  server_t s;
  server_start(&s, "http", NULL);
  const char *hosts[] = {s.base};
  {
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    lg_http_client_conf_t conf = {.hosts = hosts, .nhosts = 1, .tls_verify = 1};
    lg_http_client_t *c = client(&loop, &conf);
    result_t r[3];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 3; i++)
      assert_non_null(lg_http_request(c, "POST", "/slow/2000", NULL, NULL, 0,
                                      "x", 1, 1, on_done, &r[i]));
    /* Let the connections open and the requests go out. */
    for (int i = 0; i < 20; i++)
      uv_run(&loop, UV_RUN_NOWAIT), usleep(5000);
    close_and_check(&loop, c);
    for (int i = 0; i < 3; i++)
      assert_int_equal(r[i].done, 0);
  }
  {
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    lg_http_client_conf_t conf = {.hosts = hosts, .nhosts = 1, .tls_verify = 1};
    closer_t k = {client(&loop, &conf), 0, 0};
    assert_non_null(lg_http_request(k.c, "POST", "/echo", NULL, NULL, 0, "x", 1,
                                    1, on_done_then_close, &k));
    assert_non_null(lg_http_request(k.c, "POST", "/slow/1500", NULL, NULL, 0,
                                    "x", 1, 1, on_done_then_close, &k));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(k.calls, 1);
    assert_int_equal(k.closed, 1);
    LG_TEST_LOOP_CLOSE(&loop);
  }
  server_stop(&s);
}

/* Bad settings are refused with a reason. */
static void test_bad_conf(void **state) {
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  char err[256] = "";
  const char *hosts[] = {"es:9200"};
  lg_http_client_conf_t conf = {.hosts = hosts, .nhosts = 1};
  assert_null(lg_http_client_create(&loop, &conf, err, sizeof err));
  assert_non_null(strstr(err, "not an http:// or https:// URL"));
  conf.nhosts = 0;
  assert_null(lg_http_client_create(&loop, &conf, err, sizeof err));
  LG_TEST_LOOP_CLOSE(&loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_post_keepalive),
      cmocka_unit_test(test_gzip),
      cmocka_unit_test(test_auth),
      cmocka_unit_test(test_failover_round_robin),
      cmocka_unit_test(test_host_retried_later),
      cmocka_unit_test(test_slow_and_timeout),
      cmocka_unit_test(test_retry_after),
      cmocka_unit_test(test_escape),
      cmocka_unit_test(test_tls),
      cmocka_unit_test(test_close_in_flight),
      cmocka_unit_test(test_bad_conf),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
