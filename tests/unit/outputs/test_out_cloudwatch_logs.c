/* Unit tests: the cloudwatch_logs output's encoding (worker side): the
 * event JSON, the log group and stream names made from the templates
 * (CloudWatch's name rules), and the message's UTF-8 size that the 1 MiB
 * and max_event_size limits count; and its option checks. Sending is
 * tested against the CloudWatch Logs stand-in by the conformance suite and
 * tests/integration/test_cloudwatch_logs.py. */
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

#include "config/lg_config.h"
#include "helpers/lg_test.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_payload.h"

static void on_ack(void *ud, void *ref, int status) {
  (void)ud, (void)ref, (void)status;
}

static void on_closed(void *ud) { *(int *)ud = 1; }

/* One record's encoding: its event JSON and its four meta fields. */
typedef struct enc {
  char group[600], stream[600];
  long long ms;
  size_t msg;
  cJSON *event;
} enc_t;

/* Encodes every record of `b` with a cloudwatch_logs output configured by
 * `kv` (plus endpoint and keys; nothing is sent) into out[]. */
static void encode_all(const char *const *kv, lg_batch_t *b, enc_t *out) {
  const char *all[32] = {"endpoint", "http://127.0.0.1:9", "access_key_id",
                         "AKID",     "secret_access_key",  "secret"};
  int n = 6;
  for (int k = 0; kv[k] != NULL; k++)
    all[n++] = kv[k];
  all[n] = NULL;
  char err[512] = "";
  lg_conf_output_t *c =
      lg_config_output_new("cw", "cloudwatch_logs", all, err, sizeof err);
  if (c == NULL)
    fail_msg("%s", err);
  uv_loop_t loop;
  uv_loop_init(&loop);
  lg_output_t *o = lg_output_create(&loop, c, 0, on_ack, NULL, err, sizeof err);
  if (o == NULL)
    fail_msg("%s", err);
  lg_encoder_t e = lg_output_encoder(o);
  lg_payload_t p;
  memset(&p, 0, sizeof p);
  for (uint32_t i = 0; i < b->n; i++) {
    size_t d0 = p.data.len, m0 = p.meta.len;
    assert_int_equal(lg_payload_add(&p, &e, b, i, NULL), 0);
    out[i].event = cJSON_ParseWithLength(p.data.data + d0, p.data.len - d0);
    assert_non_null(out[i].event);
    const char *m = p.meta.data + m0;
    snprintf(out[i].group, sizeof out[i].group, "%s", m);
    m += strlen(m) + 1;
    snprintf(out[i].stream, sizeof out[i].stream, "%s", m);
    m += strlen(m) + 1;
    out[i].ms = atoll(m);
    m += strlen(m) + 1;
    out[i].msg = (size_t)atoll(m);
  }
  lg_payload_free(&p);
  int closed = 0;
  lg_output_close(o, on_closed, &closed);
  while (!closed)
    uv_run(&loop, UV_RUN_ONCE);
  LG_TEST_LOOP_CLOSE(&loop);
  lg_config_output_free(c);
}

static const char *message(const enc_t *e) {
  const cJSON *m = cJSON_GetObjectItem(e->event, "message");
  assert_true(cJSON_IsString(m));
  return m->valuestring;
}

static void set(lg_batch_t *b, uint32_t i, const char *k, const char *v) {
  assert_int_equal(lg_batch_set_str(b, i, k, strlen(k), v, strlen(v)), 0);
}

static void test_names_follow_cloudwatch_rules(void **state) {
  (void)state;
  const char *bodies[] = {"a", "b", "c", "d"};
  lg_batch_t *b = lg_test_batch_of(bodies, 4);
  set(b, 0, "ns", "team a/\xc3\xbc#1");
  set(b, 0, "pod", "web:1*x");
  set(b, 1, "ns", "");
  char longpod[700], longpod2[700];
  memset(longpod, 'p', 699);
  longpod[699] = '\0';
  memcpy(longpod2, longpod, sizeof longpod);
  longpod[511] = '\xc3'; /* a 2-byte character across the 512 cut */
  longpod[512] = '\xbc';
  longpod2[510] = '\xc3'; /* one that ends at the cut */
  longpod2[511] = '\xbc';
  set(b, 2, "ns", "ok");
  set(b, 2, "pod", longpod);
  set(b, 1, "pod", longpod2);
  const char *kv[] = {"log_group_name", "/k8s/{ns}", "log_stream_name",
                      "{pod}/{k8s.container.name}", NULL};
  enc_t e[4];
  encode_all(kv, b, e);
  assert_string_equal(e[3].group, "/k8s/_");
  assert_string_equal(e[3].stream, "_/_");
  /* Groups keep [.-_/#A-Za-z0-9]: a space and the 2 bytes of "ü" are '_'. */
  assert_string_equal(e[0].group, "/k8s/team_a/__#1");
  /* Streams lose ':' and '*' only; a missing field is "_". */
  assert_string_equal(e[0].stream, "web_1_x/_");
  assert_string_equal(e[1].group, "/k8s/_");
  /* 512 bytes at most, not ending inside a UTF-8 character. */
  assert_int_equal(strlen(e[1].stream), 512);
  assert_int_equal(strlen(e[2].stream), 511);
  assert_int_equal(memcmp(e[1].stream + 510, "\xc3\xbc", 2), 0);

  for (int i = 0; i < 4; i++)
    cJSON_Delete(e[i].event);
  lg_batch_destroy(b);
}

static void test_event_and_message_size(void **state) {
  (void)state;
  /* "é" is 2 bytes, "€" 3; the quote, backslash, newline and \x01 are
   * escaped in JSON but count as 1 byte each in CloudWatch's size. */
  const char *body = "h\xc3\xa9llo \"q\" \\ \xe2\x82\xac\n\x01";
  const char *bodies[] = {body, "plain"};
  lg_batch_t *b = lg_test_batch_of(bodies, 2);
  b->recs[0].time_ns = 1700000000123456789LL;
  b->recs[1].time_ns = 1700000000999000000LL;
  const char *kv[] = {"log_group_name", "g", "log_stream_name", "s", "message",
                      "body",           NULL};
  enc_t e[2];
  encode_all(kv, b, e);
  assert_string_equal(message(&e[0]), body);
  assert_int_equal(e[0].msg, strlen(body));
  assert_int_equal(e[0].ms, 1700000000123LL);
  const cJSON *ts = cJSON_GetObjectItem(e[0].event, "timestamp");
  assert_true(cJSON_IsNumber(ts));
  assert_true(ts->valuedouble == 1700000000123.0);
  assert_int_equal(e[1].msg, 5);
  for (int i = 0; i < 2; i++)
    cJSON_Delete(e[i].event);
  /* message = json: the record as JSON; its size is that JSON's. */
  const char *kv2[] = {"log_group_name", "g", "log_stream_name", "s", NULL};
  encode_all(kv2, b, e);
  cJSON *rec = cJSON_Parse(message(&e[0]));
  assert_non_null(rec);
  assert_string_equal(cJSON_GetObjectItem(rec, "body")->valuestring, body);
  assert_int_equal(e[0].msg, strlen(message(&e[0])));
  cJSON_Delete(rec);
  for (int i = 0; i < 2; i++)
    cJSON_Delete(e[i].event);
  lg_batch_destroy(b);
}

static void test_option_checks(void **state) {
  (void)state;
  char err[512];
  const char *bad_retention[] = {"log_group_name",
                                 "g",
                                 "log_stream_name",
                                 "s",
                                 "retention_days",
                                 "2",
                                 NULL};
  assert_null(lg_config_output_new("cw", "cloudwatch_logs", bad_retention, err,
                                   sizeof err));
  assert_non_null(strstr(err, "3653"));
  const char *ok_retention[] = {"log_group_name",
                                "g",
                                "log_stream_name",
                                "s",
                                "retention_days",
                                "14",
                                NULL};
  lg_conf_output_t *c = lg_config_output_new("cw", "cloudwatch_logs",
                                             ok_retention, err, sizeof err);
  assert_non_null(c);
  lg_config_output_free(c);
  const char *big_event[] = {
      "log_group_name", "g", "log_stream_name", "s", "max_event_size",
      "2MiB",           NULL};
  assert_null(lg_config_output_new("cw", "cloudwatch_logs", big_event, err,
                                   sizeof err));
  const char *no_group[] = {"log_stream_name", "s", NULL};
  assert_null(
      lg_config_output_new("cw", "cloudwatch_logs", no_group, err, sizeof err));
}

static int acked;
static void on_text_ack(void *ud, void *ref, int status) {
  (void)ud, (void)ref;
  assert_int_equal(status, 0);
  acked++;
}

static size_t collect(char *p, size_t size, size_t n, void *ud) {
  lg_buf_append(ud, p, size * n);
  return size * n;
}

static void test_text_records(void **state) {
  (void)state;
  const char *src = getenv("LUGGER_SOURCE_DIR");
  char server[600];
  snprintf(server, sizeof server,
           "%s/tests/integration/aws/cloudwatch_logs_server.js",
           src ? src : ".");
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    close(fds[0]);
    execlp("node", "node", server, "--key", "AKID", "--secret", "secret",
           (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  char line[64] = "";
  FILE *f = fdopen(fds[0], "r");
  if (fgets(line, sizeof line, f) == NULL || strncmp(line, "PORT ", 5) != 0)
    fail_msg("stand-in did not start (run scripts/setup): %s", line);
  fclose(f);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", atoi(line + 5));
  const char *kv[] = {"endpoint",
                      url,
                      "access_key_id",
                      "AKID",
                      "secret_access_key",
                      "secret",
                      "log_group_name",
                      "{k8s.namespace.name}-tools",
                      "log_stream_name",
                      "{k8s.pod.name}",
                      "max_coalescing_delay",
                      "0",
                      NULL};
  char err[512] = "";
  lg_conf_output_t *c =
      lg_config_output_new("cw", "cloudwatch_logs", kv, err, sizeof err);
  assert_non_null(c);
  uv_loop_t loop;
  uv_loop_init(&loop);
  lg_output_t *o =
      lg_output_create(&loop, c, 0, on_text_ack, NULL, err, sizeof err);
  assert_non_null(o);
  const char text[] = "{\"a\":1}\n{\"b\":\"\xc3\xa9\"}\n";
  assert_int_equal(lg_output_submit_text(o, text, sizeof text - 1, NULL), 0);
  /* Records whose group names start with digits: each record's meta ends
   * in its message size without a NUL, and the next record's group must
   * not be read as more digits of it (that made a 10-byte message look
   * larger than max_event_size: rejected, and lost here without a
   * dead-letter output, so the ack status would be < 0). */
  const char *bodies[] = {"ten bytes!", "ten bytes?"};
  lg_batch_t *b = lg_test_batch_of(bodies, 2);
  b->recs[0].time_ns = b->recs[1].time_ns = (int64_t)time(NULL) * 1000000000;
  set(b, 0, "k8s.namespace.name", "99999");
  set(b, 1, "k8s.namespace.name", "99999");
  lg_encoder_t enc = lg_output_encoder(o);
  lg_payload_t p;
  memset(&p, 0, sizeof p);
  for (uint32_t i = 0; i < b->n; i++)
    assert_int_equal(lg_payload_add(&p, &enc, b, i, NULL), 0);
  assert_int_equal(lg_output_submit(o, &p, NULL, 1), 0);
  uint64_t end = lg_test_now_ms() + 20000;
  while (acked < 2 && lg_test_now_ms() < end)
    lg_test_run_for(&loop, 20);
  assert_int_equal(acked, 2);
  int closed = 0;
  lg_output_close(o, on_closed, &closed);
  while (!closed)
    uv_run(&loop, UV_RUN_ONCE);
  LG_TEST_LOOP_CLOSE(&loop);
  lg_config_output_free(c);
  lg_payload_free(&p);
  lg_batch_destroy(b);
  /* Both lines stored as they were, in _-tools / _. */
  char dump[128];
  snprintf(dump, sizeof dump, "%s/_fake/dump", url);
  CURL *e = curl_easy_init();
  lg_buf_t got = LG_BUF_INIT;
  curl_easy_setopt(e, CURLOPT_URL, dump);
  curl_easy_setopt(e, CURLOPT_PROXY, "");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &got);
  assert_int_equal(curl_easy_perform(e), CURLE_OK);
  curl_easy_cleanup(e);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  cJSON *root = cJSON_ParseWithLength(got.data, got.len);
  const cJSON *g = cJSON_GetObjectItem(root, "_-tools");
  const cJSON *evs =
      cJSON_GetObjectItem(cJSON_GetObjectItem(g, "streams"), "_");
  assert_int_equal(cJSON_GetArraySize(evs), 2);
  assert_string_equal(
      cJSON_GetObjectItem(cJSON_GetArrayItem(evs, 0), "message")->valuestring,
      "{\"a\":1}");
  assert_string_equal(
      cJSON_GetObjectItem(cJSON_GetArrayItem(evs, 1), "message")->valuestring,
      "{\"b\":\"\xc3\xa9\"}");
  const cJSON *g2 = cJSON_GetObjectItem(root, "99999-tools");
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(
                       cJSON_GetObjectItem(g2, "streams"), "_")),
                   2);
  cJSON_Delete(root);
  lg_buf_free(&got);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_follow_cloudwatch_rules),
      cmocka_unit_test(test_event_and_message_size),
      cmocka_unit_test(test_option_checks),
      cmocka_unit_test(test_text_records),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
