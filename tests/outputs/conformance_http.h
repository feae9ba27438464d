/*
 * Drivers of the conformance suite (test_conformance.c) for the HTTP
 * output types: elasticsearch, loki, otlp and http against the protocol
 * stand-ins of tests/integration (started here as processes; no real
 * Elasticsearch, Loki or OpenTelemetry collector can be installed on the
 * test machines), clickhouse against a real ClickHouse (Debian
 * clickhouse-server 18.16, tests/integration/clickhouse_server.py).
 *
 * Down: the stand-ins answer 503 to everything (POST /_fake/faults
 * {"down": 503}); ClickHouse is stopped with SIGSTOP (requests time out
 * after the driver's 1 s `timeout`). The stand-ins get a 10 s `timeout`:
 * they never hang on purpose, and a Python stand-in on a loaded machine
 * can take over 1 s to answer, after which the request is sent again and
 * its records arrive twice (at least once, as it should be, but the suite
 * checks "once"). Reject: the stand-ins refuse records
 * holding "REJECT-ME" the way their backend refuses a record (a bulk item
 * 400, an entry named in Loki's partial-success 400, an OTLP partial
 * success, a 422); ClickHouse's table has a MATERIALIZED throwIf(body =
 * 'REJECT-ME') column (Code 395). otlp and http run with max_batch_size =
 * 1: neither answer says which record of a batch was refused.
 *
 * Included by test_conformance.c, which defines ctx_t and driver_t; one
 * driver runs at a time, so the server's state is file-static here.
 */
#ifndef CONFORMANCE_HTTP_H
#define CONFORMANCE_HTTP_H

#include <sys/prctl.h>
#include <sys/wait.h>

#include <curl/curl.h>

#include "core/lg_http_client.h"

static pid_t http_server_pid, http_backend_pid;
static char http_url[64];
static char http_kv_buf[8][128];

/* Starts `python3 <source>/tests/integration/<script> <args...>` and reads
 * its "PORT <n> [PID <pid>]" line. */
static void http_start(const char *script, const char *const *args) {
  const char *src = getenv("LUGGER_SOURCE_DIR");
  char path[512];
  snprintf(path, sizeof path, "%s/tests/integration/%s", src ? src : ".",
           script);
  const char *argv[12] = {"python3", path};
  int argc = 2;
  for (int i = 0; args != NULL && args[i] != NULL && argc < 11; i++)
    argv[argc++] = args[i];
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
  char line[128] = "";
  int port = 0, bpid = 0;
  if (fgets(line, sizeof line, f) == NULL ||
      sscanf(line, "PORT %d PID %d", &port, &bpid) < 1)
    fail_msg("%s did not start: %s", script, line);
  fclose(f);
  http_server_pid = pid;
  http_backend_pid = bpid;
  snprintf(http_url, sizeof http_url, "http://127.0.0.1:%d", port);
}

static void http_teardown(ctx_t *c) {
  (void)c;
  if (http_backend_pid > 0)
    kill(http_backend_pid, SIGCONT);
  kill(http_server_pid, SIGKILL);
  waitpid(http_server_pid, NULL, 0);
  http_server_pid = http_backend_pid = 0;
}

/* A blocking HTTP call (curl's easy interface) to the stand-in's test
 * endpoints. Returns the status; the body goes to `out` when not NULL. */
static size_t http_collect(char *p, size_t size, size_t n, void *ud) {
  lg_buf_append(ud, p, size * n);
  return size * n;
}

static int http_call(const char *method, const char *path, const char *body,
                     lg_buf_t *out) {
  char url[256];
  snprintf(url, sizeof url, "%s%s", http_url, path);
  CURL *e = curl_easy_init();
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(e, CURLOPT_PROXY, "");
  if (body != NULL)
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
  lg_buf_t sink = LG_BUF_INIT;
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_collect);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, out != NULL ? out : &sink);
  long status = 0;
  if (curl_easy_perform(e) == CURLE_OK)
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(e);
  lg_buf_free(&sink);
  return (int)status;
}

static void standin_down(ctx_t *c, int on) {
  (void)c;
  assert_int_equal(http_call("POST", "/_fake/faults",
                             on ? "{\"down\": 503}" : "{\"down\": null}", NULL),
                   200);
}

static void standin_reject_setup(ctx_t *c) {
  (void)c;
  assert_int_equal(http_call("POST", "/_fake/set",
                             "{\"reject_containing\": \"REJECT-ME\"}", NULL),
                   200);
}

static void standin_readback(ctx_t *c, lg_buf_t *out) {
  (void)c;
  assert_int_equal(http_call("GET", "/_fake/records", NULL, out), 200);
}

/* kv: hosts and `timeout`, then `extra` pairs. */
static void http_kv(const char **kv, const char *timeout,
                    const char *const *extra) {
  int n = 0;
  kv[n++] = "hosts";
  snprintf(http_kv_buf[0], sizeof http_kv_buf[0], "%s", http_url);
  kv[n++] = http_kv_buf[0];
  kv[n++] = "timeout";
  kv[n++] = timeout;
  for (int i = 0; extra != NULL && extra[i] != NULL; i++)
    kv[n++] = extra[i];
  kv[n] = NULL;
}

static void es_setup(ctx_t *c) {
  (void)c;
  http_start("es_server.py", NULL);
}
static void es_kv(ctx_t *c, const char **kv) {
  (void)c;
  http_kv(kv, "10s", NULL);
}

static void loki_setup(ctx_t *c) {
  (void)c;
  http_start("loki_server.py", NULL);
  /* The suite's records are from 1970: Loki configured to take them
   * (limits_config.reject_old_samples: false). */
  assert_int_equal(
      http_call("POST", "/_fake/set", "{\"reject_old_samples\": false}", NULL),
      200);
}
static void loki_kv(ctx_t *c, const char **kv) {
  (void)c;
  http_kv(kv, "10s", NULL);
}

static void otlp_setup(ctx_t *c) {
  (void)c;
  http_start("otlp_server.py", NULL);
}
static void http_setup(ctx_t *c) {
  (void)c;
  http_start("http_sink.py", NULL);
}
static void one_per_batch_kv(ctx_t *c, const char **kv) {
  (void)c;
  static const char *const extra[] = {"max_batch_size", "1", NULL};
  http_kv(kv, "10s", extra);
}
static void sink_kv(ctx_t *c, const char **kv) {
  (void)c;
  static const char *const extra[] = {"max_batch_size", "1", "path", "/ingest",
                                      NULL};
  http_kv(kv, "10s", extra);
}

/* clickhouse: a real server and a table whose check refuses REJECT-ME.
 * ReplicatedMergeTree (with a ZooKeeper): a request that timed out while
 * the server was stopped is still inserted when it resumes, and the retry
 * (the same block: frozen_retries) is then dropped as a duplicate, which is
 * how this output gets "once" from ClickHouse. */
static void ch_setup(ctx_t *c) {
  char dir[600];
  snprintf(dir, sizeof dir, "%s/clickhouse", c->dir);
  const char *const args[] = {
      "serve", dir, "--zookeeper",
      "CREATE TABLE conf (time DateTime, body String, ref UInt32, "
      "`lugger.id` String, chk UInt8 MATERIALIZED throwIf(body = "
      "'REJECT-ME')) ENGINE = ReplicatedMergeTree('/clickhouse/tables/conf', "
      "'{replica}') ORDER BY time",
      NULL};
  http_start("clickhouse_server.py", args);
}
static void ch_kv(ctx_t *c, const char **kv) {
  (void)c;
  static const char *const extra[] = {"table", "conf", NULL};
  http_kv(kv, "1s", extra); /* down (SIGSTOP) is a timeout */
}
static void ch_down(ctx_t *c, int on) {
  (void)c;
  kill(http_backend_pid, on ? SIGSTOP : SIGCONT);
}
static void ch_readback(ctx_t *c, lg_buf_t *out) {
  (void)c;
  char path[256];
  char *q = lg_http_escape("SELECT body, ref FROM conf FORMAT JSONEachRow");
  snprintf(path, sizeof path, "/?query=%s", q);
  free(q);
  assert_int_equal(http_call("POST", path, "", out), 200);
}
static void nothing_http(ctx_t *c) { (void)c; }

#define HTTP_DRIVERS                                                           \
  {.type = "elasticsearch",                                                    \
   .can_reject = 1,                                                            \
   .setup = es_setup,                                                          \
   .teardown = http_teardown,                                                  \
   .kv = es_kv,                                                                \
   .down = standin_down,                                                       \
   .reject_setup = standin_reject_setup,                                       \
   .reason = "document_parsing_exception",                                     \
   .readback = standin_readback},                                              \
      {.type = "loki",                                                         \
       .can_reject = 1,                                                        \
       .setup = loki_setup,                                                    \
       .teardown = http_teardown,                                              \
       .kv = loki_kv,                                                          \
       .down = standin_down,                                                   \
       .reject_setup = standin_reject_setup,                                   \
       .reason = "Max entry size",                                             \
       .readback = standin_readback},                                          \
      {.type = "clickhouse",                                                   \
       .can_reject = 1,                                                        \
       .setup = ch_setup,                                                      \
       .teardown = http_teardown,                                              \
       .kv = ch_kv,                                                            \
       .down = ch_down,                                                        \
       .reject_setup = nothing_http,                                           \
       .reason = "Code: 395",                                                  \
       .readback = ch_readback},                                               \
      {.type = "otlp",                                                         \
       .can_reject = 1,                                                        \
       .setup = otlp_setup,                                                    \
       .teardown = http_teardown,                                              \
       .kv = one_per_batch_kv,                                                 \
       .down = standin_down,                                                   \
       .reject_setup = standin_reject_setup,                                   \
       .reason = "partial success",                                            \
       .readback = standin_readback},                                          \
  {                                                                            \
    .type = "http", .can_reject = 1, .setup = http_setup,                      \
    .teardown = http_teardown, .kv = sink_kv, .down = standin_down,            \
    .reject_setup = standin_reject_setup, .reason = "HTTP 422",                \
    .readback = standin_readback                                               \
  }

#endif
