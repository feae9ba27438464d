/*
 * Driver of the conformance suite (test_conformance.c) for the
 * cloudwatch_logs output: the CloudWatch Logs stand-in
 * tests/integration/aws/cloudwatch_logs_server.js (written from the API
 * reference; every request's SigV4 signature checked with npm aws4),
 * started by aws/cloudwatch_logs_peer.py. The suite's records are from
 * 1970: the stand-in takes events of any age ({"reject_old": false}).
 * Down: it answers 503 ServiceUnavailableException to everything. Reject:
 * a record larger than max_event_size (3000 here), which lugger sends to
 * the dead-letter output without a call (the events CloudWatch itself
 * rejects are checked by tests/integration/test_cloudwatch_logs.py).
 * Readback: every stored message (the record as JSON). Uses
 * conformance_http.h's process helpers.
 */
#ifndef CONFORMANCE_CLOUDWATCH_LOGS_H
#define CONFORMANCE_CLOUDWATCH_LOGS_H

static void cwl_setup(ctx_t *c) {
  (void)c;
  http_start("aws/cloudwatch_logs_peer.py", NULL);
  assert_int_equal(
      http_call("POST", "/_fake/set", "{\"reject_old\": false}", NULL), 200);
}

static void cwl_kv(ctx_t *c, const char **kv) {
  (void)c;
  int n = 0;
  kv[n++] = "endpoint";
  snprintf(http_kv_buf[0], sizeof http_kv_buf[0], "%s", http_url);
  kv[n++] = http_kv_buf[0];
  kv[n++] = "region";
  kv[n++] = "us-east-1";
  kv[n++] = "access_key_id";
  kv[n++] = "AKIDCONFORMANCE";
  kv[n++] = "secret_access_key";
  kv[n++] = "secret";
  kv[n++] = "log_group_name";
  kv[n++] = "/conformance";
  kv[n++] = "log_stream_name";
  kv[n++] = "s";
  kv[n++] = "max_event_size";
  kv[n++] = "3000";
  kv[n++] = "timeout";
  kv[n++] = "10s"; /* as conformance_http.h says why */
  kv[n++] = "max_batch_size";
  kv[n++] = "7"; /* several requests per test */
  kv[n++] = "max_coalescing_delay";
  kv[n++] = "20ms";
  kv[n] = NULL;
}

#define CLOUDWATCH_LOGS_DRIVERS                                                \
  {                                                                            \
    .type = "cloudwatch_logs", .can_reject = 1, .setup = cwl_setup,            \
    .teardown = http_teardown, .kv = cwl_kv, .down = standin_down,             \
    .reject_setup = NULL, .reason = "larger than max_event_size",              \
    .readback = standin_readback                                               \
  }

#endif
