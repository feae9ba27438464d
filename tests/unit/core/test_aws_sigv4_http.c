/* Integration of lg_aws_sigv4 with lg_http_client, checked by an
 * independent signer: tests/integration/aws/sigv4_verify.js (npm aws4,
 * installed by scripts/setup) is started here and re-signs every request
 * it receives with the credentials and scope it was given; it answers 403
 * on any difference. Covers S3-shaped requests (keys with '=', spaces and
 * '+', unsorted multipart query parameters, "uploads=", bodies hashed or
 * UNSIGNED-PAYLOAD, a session token) and a CloudWatch-shaped JSON POST;
 * and shows that the verifier does fail: a wrong secret, a body changed
 * after signing, and a query parameter changed after signing are all
 * rejected. */
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

#include <cmocka.h>
#include <uv.h>

#include "core/lg_aws_sigv4.h"
#include "core/lg_http_client.h"
#include "helpers/lg_test.h"

static pid_t server_pid;
static int server_port;
static char base[64], hostport[64];

static const lg_sigv4_creds_t creds = {"AKIDTEST",
                                       "secret/with+chars=", "session token=="};

/* Starts the verifier for `service` and waits for its "PORT n" line. */
static void verifier_start(const char *service) {
  const char *d = getenv("LUGGER_SOURCE_DIR");
  char script[512];
  snprintf(script, sizeof script, "%s/tests/integration/aws/sigv4_verify.js",
           d ? d : ".");
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    close(fds[0]);
    execlp("node", "node", script, "--region", "eu-west-1", "--service",
           service, "--key", creds.access_key_id, "--secret",
           creds.secret_access_key, "--token", creds.session_token,
           (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  char line[64] = "";
  assert_non_null(fgets(line, sizeof line, f));
  fclose(f);
  assert_int_equal(sscanf(line, "PORT %d", &server_port), 1);
  server_pid = pid;
  snprintf(base, sizeof base, "http://127.0.0.1:%d", server_port);
  snprintf(hostport, sizeof hostport, "127.0.0.1:%d", server_port);
}

static void verifier_stop(void) {
  kill(server_pid, SIGKILL);
  waitpid(server_pid, NULL, 0);
}

typedef struct result {
  int done, status;
  char body[1024];
} result_t;

static void on_done(void *ud, lg_http_req_t *req,
                    const lg_http_response_t *res) {
  (void)req;
  result_t *r = ud;
  r->done = 1;
  r->status = res->status;
  snprintf(r->body, sizeof r->body, "%s", res->body ? res->body : "");
}

/* Signs and sends one request; returns the HTTP status. `tamper`: 0 as
 * signed, 1 = send a different body than was signed, 2 = send another
 * partNumber than the signed one. */
static int send_signed(uv_loop_t *loop, lg_http_client_t *c,
                       const char *service, const char *method,
                       const char *path, const lg_sigv4_param_t *q, size_t nq,
                       const char *ctype, const char *xname, const char *xval,
                       const char *body, const char *payload_sha256,
                       const lg_sigv4_creds_t *cr, int tamper) {
  const char *hn[2], *hv[2];
  size_t nh = 0;
  if (ctype)
    hn[nh] = "Content-Type", hv[nh++] = ctype;
  if (xname)
    hn[nh] = xname, hv[nh++] = xval;
  lg_sigv4_req_t r = {0};
  r.method = method;
  r.host = hostport;
  r.path = path;
  r.query = q;
  r.nquery = nq;
  r.header_names = hn;
  r.header_values = hv;
  r.nheaders = nh;
  r.body = body;
  r.body_len = body ? strlen(body) : 0;
  r.payload_sha256 = payload_sha256;
  r.region = "eu-west-1";
  r.service = service;
  r.now = time(NULL);
  r.content_sha256_header = strcmp(service, "s3") == 0;
  lg_sigv4_signed_t s;
  assert_int_equal(lg_sigv4_sign(&r, cr, &s), 0);
  const char *headers[8];
  char extra[256];
  size_t n = 0;
  if (xname) {
    snprintf(extra, sizeof extra, "%s: %s", xname, xval);
    headers[n++] = extra;
  }
  for (size_t i = 0; i < s.nheaders; i++)
    headers[n++] = s.headers[i];
  char target[1024];
  snprintf(target, sizeof target, "%s", s.target);
  if (tamper == 2) { /* another part number than the signed one */
    char *pn = strstr(target, "partNumber=");
    assert_non_null(pn);
    pn[11] = pn[11] == '9' ? '8' : '9';
  }
  const char *sent = tamper == 1 ? "changed after signing" : body;
  result_t res = {0};
  assert_non_null(lg_http_request(c, method, target, ctype, headers, n, sent,
                                  sent ? strlen(sent) : 0, 0, on_done, &res));
  lg_test_run_until_count(loop, &res.done, 1, 30000, "the answer");
  if (res.status != 200 && tamper == 0)
    fprintf(stderr, "%s %s -> %d %s\n", method, target, res.status, res.body);
  lg_sigv4_signed_free(&s);
  return res.status;
}

static lg_http_client_t *client(uv_loop_t *loop) {
  const char *hosts[] = {base};
  lg_http_client_conf_t conf = {0};
  conf.hosts = hosts;
  conf.nhosts = 1;
  conf.component = "test";
  char err[256];
  lg_http_client_t *c = lg_http_client_create(loop, &conf, err, sizeof err);
  assert_non_null(c);
  return c;
}

static void on_closed(void *ud) { (*(int *)ud)++; }

static void test_s3_requests_verified(void **st) {
  (void)st;
  verifier_start("s3");
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  lg_http_client_t *c = client(&loop);
  const char *obj = "{\"log\":\"a\"}\n{\"log\":\"b\"}\n";
  /* PutObject, hive-style key with '=' and a space and '+'. */
  assert_int_equal(send_signed(&loop, c, "s3", "PUT",
                               "/logs/dt=2026-12-07/ns=kube system/a+b.json",
                               NULL, 0, "application/x-ndjson", NULL, NULL, obj,
                               NULL, &creds, 0),
                   200);
  /* CreateMultipartUpload: "uploads=" */
  lg_sigv4_param_t up[] = {{"uploads", ""}};
  assert_int_equal(send_signed(&loop, c, "s3", "POST", "/logs/k=v/x.json.gz",
                               up, 1, "application/gzip", NULL, NULL, NULL,
                               NULL, &creds, 0),
                   200);
  /* UploadPart with unsorted parameters and an uploadId needing encoding;
   * UNSIGNED-PAYLOAD. */
  lg_sigv4_param_t part[] = {{"uploadId", "x/y+z=="}, {"partNumber", "2"}};
  assert_int_equal(send_signed(&loop, c, "s3", "PUT", "/logs/k=v/x.json.gz",
                               part, 2, "application/octet-stream", NULL, NULL,
                               "part bytes", "UNSIGNED-PAYLOAD", &creds, 0),
                   200);
  /* AbortMultipartUpload */
  lg_sigv4_param_t ab[] = {{"uploadId", "x/y+z=="}};
  assert_int_equal(send_signed(&loop, c, "s3", "DELETE", "/logs/k=v/x.json.gz",
                               ab, 1, NULL, NULL, NULL, NULL, NULL, &creds, 0),
                   200);

  /* The verifier fails what is wrong. */
  lg_sigv4_creds_t wrong = creds;
  wrong.secret_access_key = "not the secret";
  assert_int_equal(send_signed(&loop, c, "s3", "PUT", "/logs/a.json", NULL, 0,
                               "application/x-ndjson", NULL, NULL, obj, NULL,
                               &wrong, 0),
                   403);
  assert_int_equal(send_signed(&loop, c, "s3", "PUT", "/logs/a.json", NULL, 0,
                               "application/x-ndjson", NULL, NULL, obj, NULL,
                               &creds, 1),
                   403);
  assert_int_equal(send_signed(&loop, c, "s3", "PUT", "/logs/k=v/x.json.gz",
                               part, 2, "application/octet-stream", NULL, NULL,
                               "part bytes", "UNSIGNED-PAYLOAD", &creds, 2),
                   403);
  int closed = 0;
  lg_http_client_close(c, on_closed, &closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
  LG_TEST_LOOP_CLOSE(&loop);
  verifier_stop();
}

static void test_logs_request_verified(void **st) {
  (void)st;
  verifier_start("logs");
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  lg_http_client_t *c = client(&loop);
  const char *body =
      "{\"logGroupName\":\"g\",\"logStreamName\":\"s\",\"logEvents\":"
      "[{\"timestamp\":1,\"message\":\"m\"}]}";
  assert_int_equal(send_signed(&loop, c, "logs", "POST", "/", NULL, 0,
                               "application/x-amz-json-1.1", "X-Amz-Target",
                               "Logs_20140328.PutLogEvents", body, NULL, &creds,
                               0),
                   200);
  assert_int_equal(send_signed(&loop, c, "logs", "POST", "/", NULL, 0,
                               "application/x-amz-json-1.1", "X-Amz-Target",
                               "Logs_20140328.PutLogEvents", body, NULL, &creds,
                               1),
                   403);
  int closed = 0;
  lg_http_client_close(c, on_closed, &closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
  LG_TEST_LOOP_CLOSE(&loop);
  verifier_stop();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_s3_requests_verified),
      cmocka_unit_test(test_logs_request_verified),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
