/*
 * Driver of the conformance suite (test_conformance.c) for the s3 output:
 * npm s3rver behind tests/integration/aws/sigv4_verify.js, which checks
 * every request's SigV4 signature with npm aws4 (started together by
 * tests/integration/aws/s3_peers.py). Down: the verifier answers 503 to
 * everything (POST /_fake/faults {"down": 503}). Readback: the lines of
 * every object (GET /_fake/records). S3 refuses no single record, so the
 * reject case does not apply. Uses conformance_http.h's process helpers.
 */
#ifndef CONFORMANCE_S3_H
#define CONFORMANCE_S3_H

static void s3_setup(ctx_t *c) {
  static char dir[600];
  snprintf(dir, sizeof dir, "%s/s3rver", c->dir);
  const char *const args[] = {dir, NULL};
  http_start("aws/s3_peers.py", args);
}

static void s3_kv(ctx_t *c, const char **kv) {
  (void)c;
  int n = 0;
  kv[n++] = "bucket";
  kv[n++] = "logs";
  kv[n++] = "endpoint";
  snprintf(http_kv_buf[0], sizeof http_kv_buf[0], "%s", http_url);
  kv[n++] = http_kv_buf[0];
  kv[n++] = "region";
  kv[n++] = "us-east-1";
  kv[n++] = "access_key_id";
  kv[n++] = "S3RVER";
  kv[n++] = "secret_access_key";
  kv[n++] = "S3RVER";
  kv[n++] = "compression";
  kv[n++] = "gzip"; /* compressed on the thread pool: cancel meets it */
  kv[n++] = "key";
  kv[n++] = "conf/{id}.json";
  kv[n++] = "timeout";
  kv[n++] = "10s"; /* as conformance_http.h says why */
  kv[n++] = "max_batch_size";
  kv[n++] = "7"; /* several objects per test */
  kv[n++] = "max_coalescing_delay";
  kv[n++] = "20ms";
  kv[n] = NULL;
}

#define S3_DRIVERS                                                             \
  {                                                                            \
    .type = "s3", .setup = s3_setup, .teardown = http_teardown, .kv = s3_kv,   \
    .down = standin_down, .readback = standin_readback                         \
  }

#endif
