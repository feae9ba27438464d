/* Unit tests: lg_aws_creds, the AWS credentials chain. The order of the
 * sources (config, environment, shared credentials file with profiles,
 * web identity), half-set sources refused, and web identity against a
 * stand-in STS (tests/integration/aws/sts_server.py, started here; written
 * from the STS API reference): credentials only after STS answered, used
 * and fetched again before they expire with the rotated token file, an
 * STS error kept as the reason while the old keys last, and EAGAIN once
 * they have expired. */
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
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/lg_aws_creds.h"
#include "helpers/lg_test.h"

static char dir[256];

static void clear_env(void) {
  const char *vars[] = {"AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY",
                        "AWS_SESSION_TOKEN",
                        "AWS_SHARED_CREDENTIALS_FILE",
                        "AWS_PROFILE",
                        "AWS_ROLE_ARN",
                        "AWS_WEB_IDENTITY_TOKEN_FILE",
                        "AWS_ROLE_SESSION_NAME",
                        "AWS_ENDPOINT_URL_STS",
                        "AWS_REGION",
                        "AWS_DEFAULT_REGION"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
    unsetenv(vars[i]);
  setenv("HOME", dir, 1); /* no ~/.aws/credentials of the machine */
}

static int setup(void **st) {
  (void)st;
  snprintf(dir, sizeof dir, "%s", lg_test_tmpdir("lg_aws_creds_"));
  return 0;
}

static int teardown(void **st) {
  (void)st;
  return lg_test_rmtree(dir);
}

static const char *write_file(const char *name, const char *text) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  lg_test_write_file(path, text);
  return path;
}

static void on_closed(void *ud) { (*(int *)ud)++; }

static void close_it(uv_loop_t *loop, lg_aws_creds_t *p) {
  int closed = 0;
  lg_aws_creds_close(p, on_closed, &closed);
  uv_run(loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
}

static lg_aws_creds_t *make(uv_loop_t *loop, lg_aws_creds_conf_t *c,
                            char *err) {
  err[0] = '\0';
  c->component = "test";
  return lg_aws_creds_create(loop, c, err, 512);
}

static void test_order(void **st) {
  (void)st;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  char err[512];
  lg_sigv4_creds_t k;
  clear_env();
  write_file("credentials", "# comment\n[default]\naws_access_key_id = "
                            "AKIDFILE\naws_secret_access_key=secretfile\n"
                            "\n[other]\n aws_access_key_id=AKIDOTHER \n"
                            "aws_secret_access_key = s o\n"
                            "aws_session_token = tok/other=\n");
  char path[512];
  snprintf(path, sizeof path, "%s/credentials", dir);
  setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
  setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "secretenv", 1);
  setenv("AWS_SESSION_TOKEN", "tokenv", 1);

  /* 1. config wins over everything */
  lg_aws_creds_conf_t c = {0};
  c.access_key_id = "AKIDCONF";
  c.secret_access_key = "secretconf";
  lg_aws_creds_t *p = make(&loop, &c, err);
  assert_non_null(p);
  assert_string_equal(lg_aws_creds_source(p), "config");
  assert_int_equal(lg_aws_creds_get(p, &k), 0);
  assert_string_equal(k.access_key_id, "AKIDCONF");
  assert_null(k.session_token);
  close_it(&loop, p);

  /* 2. then the environment, with its session token */
  memset(&c, 0, sizeof c);
  p = make(&loop, &c, err);
  assert_string_equal(lg_aws_creds_source(p), "environment");
  assert_int_equal(lg_aws_creds_get(p, &k), 0);
  assert_string_equal(k.access_key_id, "AKIDENV");
  assert_string_equal(k.secret_access_key, "secretenv");
  assert_string_equal(k.session_token, "tokenv");
  close_it(&loop, p);

  /* 3. then the shared file: default profile, then AWS_PROFILE */
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  unsetenv("AWS_SESSION_TOKEN");
  p = make(&loop, &c, err);
  assert_string_equal(lg_aws_creds_source(p), "shared-credentials-file");
  assert_int_equal(lg_aws_creds_get(p, &k), 0);
  assert_string_equal(k.access_key_id, "AKIDFILE");
  assert_string_equal(k.secret_access_key, "secretfile");
  close_it(&loop, p);
  setenv("AWS_PROFILE", "other", 1);
  p = make(&loop, &c, err);
  assert_int_equal(lg_aws_creds_get(p, &k), 0);
  assert_string_equal(k.access_key_id, "AKIDOTHER");
  assert_string_equal(k.secret_access_key, "s o");
  assert_string_equal(k.session_token, "tok/other=");
  close_it(&loop, p);

  /* Half-set sources are errors, not silently skipped. */
  write_file("credentials", "[other]\naws_access_key_id=AKIDONLY\n");
  assert_null(make(&loop, &c, err));
  assert_non_null(strstr(err, "[other]"));
  setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
  assert_null(make(&loop, &c, err));
  assert_non_null(strstr(err, "AWS_SECRET_ACCESS_KEY"));
  unsetenv("AWS_ACCESS_KEY_ID");
  c.access_key_id = "AKIDCONF";
  assert_null(make(&loop, &c, err));
  assert_non_null(strstr(err, "secret_access_key"));

  /* Nothing at all. */
  clear_env();
  memset(&c, 0, sizeof c);
  assert_null(make(&loop, &c, err));
  assert_non_null(strstr(err, "no AWS credentials"));
  LG_TEST_LOOP_CLOSE(&loop);
}

/* ---- web identity against the stand-in STS ---------------------------- */

static pid_t sts_pid;
static int sts_port;

static void sts_start(const char *accept, const char *duration) {
  const char *d = getenv("LUGGER_SOURCE_DIR");
  char script[512];
  snprintf(script, sizeof script, "%s/tests/integration/aws/sts_server.py",
           d ? d : ".");
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    close(fds[0]);
    execlp("python3", "python3", script, "--accept", accept, "--role-arn",
           "arn:aws:iam::111122223333:role/lugger", "--duration", duration,
           (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  char line[64] = "";
  assert_non_null(fgets(line, sizeof line, f));
  fclose(f);
  assert_int_equal(sscanf(line, "PORT %d", &sts_port), 1);
  sts_pid = pid;
}

static void sts_stop(void) {
  kill(sts_pid, SIGKILL);
  waitpid(sts_pid, NULL, 0);
}

typedef struct creds_cond {
  lg_aws_creds_t *p;
  int (*cond)(lg_aws_creds_t *);
} creds_cond_t;

static int creds_cond_holds(void *arg) {
  creds_cond_t *c = arg;
  return c->cond(c->p);
}

/* Runs the loop until `cond(p)`; fails, naming `what`, after `ms`. */
static void run_until(uv_loop_t *loop, lg_aws_creds_t *p,
                      int (*cond)(lg_aws_creds_t *), uint64_t ms,
                      const char *what) {
  creds_cond_t c = {p, cond};
  lg_test_run_until(loop, creds_cond_holds, &c, ms, what);
}

static int refreshed_once(lg_aws_creds_t *p) {
  return lg_aws_creds_refreshes(p) >= 1;
}
static int refreshed_twice(lg_aws_creds_t *p) {
  return lg_aws_creds_refreshes(p) >= 2;
}
static int has_error(lg_aws_creds_t *p) {
  return strstr(lg_aws_creds_last_error(p), "InvalidIdentityToken") != NULL;
}
static int expired(lg_aws_creds_t *p) {
  lg_sigv4_creds_t k;
  return lg_aws_creds_get(p, &k) == -EAGAIN;
}

static void test_web_identity(void **st) {
  (void)st;
  clear_env();
  char accept[512], token[512];
  snprintf(accept, sizeof accept, "%s", write_file("accept", "jwt-one\n"));
  snprintf(token, sizeof token, "%s", write_file("token", "jwt-one\n"));
  sts_start(accept, "3");
  char ep[64];
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", sts_port);
  setenv("AWS_ENDPOINT_URL_STS", ep, 1);
  setenv("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/lugger", 1);
  setenv("AWS_WEB_IDENTITY_TOKEN_FILE", token, 1);
  setenv("AWS_ROLE_SESSION_NAME", "node-1", 1);

  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  char err[512];
  lg_aws_creds_conf_t c = {0};
  c.refresh_before_ms = 1000; /* 3 s credentials: refreshed after ~2 s */
  lg_aws_creds_t *p = make(&loop, &c, err);
  assert_non_null(p);
  assert_string_equal(lg_aws_creds_source(p), "web-identity");
  lg_sigv4_creds_t k;
  assert_int_equal(lg_aws_creds_get(p, &k), -EAGAIN); /* not yet */

  run_until(&loop, p, refreshed_once, 10000, "the first refresh");
  assert_int_equal(lg_aws_creds_get(p, &k), 0);
  assert_string_equal(k.access_key_id, "ASIASTAND1");
  assert_string_equal(k.secret_access_key, "secret1");
  assert_string_equal(k.session_token, "token1+/=&"); /* XML &amp; decoded */

  /* The kubelet rotates the token; the refresh before expiry sends the
   * new one. */
  write_file("token", "jwt-two");
  write_file("accept", "jwt-two");
  run_until(&loop, p, refreshed_twice, 10000, "the refresh with the new token");
  assert_int_equal(lg_aws_creds_get(p, &k), 0);
  assert_string_equal(k.access_key_id, "ASIASTAND2");

  /* STS refuses the token: the reason is kept, the keys of before are
   * used until they expire, then EAGAIN. */
  write_file("accept", "jwt-three");
  run_until(&loop, p, has_error, 10000, "STS refusing the token");
  assert_int_equal(lg_aws_creds_get(p, &k), 0);
  assert_string_equal(k.access_key_id, "ASIASTAND2");
  run_until(&loop, p, expired, 10000, "the old keys expiring");
  close_it(&loop, p);
  LG_TEST_LOOP_CLOSE(&loop);

  /* What the stand-in received: the form fields of the Query API. */
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "python3 -c \"import json,urllib.request;"
           "d=json.load(urllib.request.urlopen('http://127.0.0.1:%d/__sts'));"
           "r=d['requests'];"
           "assert r[0]=={'Action':'AssumeRoleWithWebIdentity','Version':"
           "'2011-06-15','RoleArn':'arn:aws:iam::111122223333:role/lugger',"
           "'RoleSessionName':'node-1','WebIdentityToken':'jwt-one'},r[0];"
           "assert r[1]['WebIdentityToken']=='jwt-two',r[1];"
           "assert d['issued']==2,d\"",
           sts_port);
  assert_int_equal(system(cmd), 0);
  sts_stop();
}

/* Endpoints by partition: China regions end in .amazonaws.com.cn. */
static void test_dns_suffix(void **st) {
  (void)st;
  assert_string_equal(lg_aws_dns_suffix("eu-west-1"), "amazonaws.com");
  assert_string_equal(lg_aws_dns_suffix("us-gov-west-1"), "amazonaws.com");
  assert_string_equal(lg_aws_dns_suffix("cn-north-1"), "amazonaws.com.cn");
  assert_string_equal(lg_aws_dns_suffix("cn-northwest-1"), "amazonaws.com.cn");
  assert_string_equal(lg_aws_dns_suffix("can-1"), "amazonaws.com");
  assert_string_equal(lg_aws_dns_suffix(""), "amazonaws.com");
  assert_string_equal(lg_aws_dns_suffix(NULL), "amazonaws.com");
}

/* Tag text from AWS XML answers (an S3 error, STS), entities decoded. */
static void test_xml_text(void **st) {
  (void)st;
  const char *x =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
      "AuthorizationHeaderMalformed</Code><Message>a &lt;b&gt; &amp; "
      "&quot;c&quot; &apos;d&apos; &unknown;</Message><Region>eu-west-1"
      "</Region><Empty></Empty><Open>no end</Error>";
  size_t n = strlen(x);
  char *t = lg_aws_xml_text(x, n, "Code");
  assert_string_equal(t, "AuthorizationHeaderMalformed");
  free(t);
  t = lg_aws_xml_text(x, n, "Message");
  assert_string_equal(t, "a <b> & \"c\" 'd' &unknown;");
  free(t);
  t = lg_aws_xml_text(x, n, "Empty");
  assert_string_equal(t, "");
  free(t);
  assert_null(lg_aws_xml_text(x, n, "Open"));     /* no closing tag */
  assert_null(lg_aws_xml_text(x, n, "UploadId")); /* absent */
  /* Only the `len` bytes given are read. */
  assert_null(
      lg_aws_xml_text(x, (size_t)(strstr(x, "</Region>") - x), "Region"));
}

/* The STS endpoint: the override, else the pod's region (AWS_REGION,
 * AWS_DEFAULT_REGION), else the output's, else the global one. */
static void test_sts_endpoint(void **st) {
  (void)st;
  char ep[256];
  clear_env();
  lg_aws_sts_endpoint(NULL, ep, sizeof ep);
  assert_string_equal(ep, "https://sts.amazonaws.com");
  lg_aws_sts_endpoint("us-west-2", ep, sizeof ep);
  assert_string_equal(ep, "https://sts.us-west-2.amazonaws.com");
  setenv("AWS_DEFAULT_REGION", "cn-northwest-1", 1);
  lg_aws_sts_endpoint("us-west-2", ep, sizeof ep);
  assert_string_equal(ep, "https://sts.cn-northwest-1.amazonaws.com.cn");
  setenv("AWS_REGION", "eu-central-1", 1); /* what EKS sets */
  lg_aws_sts_endpoint("us-west-2", ep, sizeof ep);
  assert_string_equal(ep, "https://sts.eu-central-1.amazonaws.com");
  setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9", 1);
  lg_aws_sts_endpoint("us-west-2", ep, sizeof ep);
  assert_string_equal(ep, "http://127.0.0.1:9");
  clear_env();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_order),        cmocka_unit_test(test_web_identity),
      cmocka_unit_test(test_dns_suffix),   cmocka_unit_test(test_xml_text),
      cmocka_unit_test(test_sts_endpoint),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
