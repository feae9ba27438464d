/* libFuzzer target: the answers of backends, as a broken backend or a
 * proxy in the way may shape them, read by the output types that turn
 * them into each record's fate (delivered, retry, rejected, split):
 * elasticsearch (the _bulk answer's items), loki (the 400 naming
 * entries), clickhouse (exception codes), otlp (partial success), http,
 * cloudwatch_logs (error types and rejectedLogEventsInfo, over the calls
 * that create a group or stream first) and s3 (XML errors, also in 200
 * answers; PutObject, and a multipart upload of one part).
 *
 * Input: byte 0 picks the output type (0 elasticsearch, 1 loki, 2
 * clickhouse, 3 otlp, 4 http, 5 cloudwatch_logs, 6 s3, 7 s3 multipart),
 * byte 1 the number of records
 * (1-8), then the answers to its HTTP requests in order, cut at lines
 * "=====": each is a status line ("200"; not a number: the connection
 * failed), header lines, an empty line and the body. Requests past the
 * last answer fail to connect. The request is made by the type's own
 * send from records its own encoder made, and answered through the HTTP
 * client's completion (lg_http_client_internal.h's fuzz seam), so every
 * line of the answer's reading is the one lugger runs.
 *
 * What must hold: no crash, read out of bounds, leak or undefined
 * behaviour; the request ends exactly once, within a bounded number of
 * requests; every result is a known one and SPLIT is never a record's;
 * and for elasticsearch, a 2xx answer whose items line up with the
 * records delivers exactly the records whose item status is 2xx or 409,
 * and one whose items do not (or that is not JSON) delivers none. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "config/lg_config.h"
#include "core/lg_http_client_internal.h"
#include "core/lg_log.h"
#include "outputs/lg_delivery_internal.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_payload.h"

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c))                                                                  \
      __builtin_trap();                                                        \
  } while (0)

enum { ES, LOKI, CH, OTLP, HTTP, CW, S3, S3MP, NTYPES };

static uv_loop_t loop;
static lg_output_t *outs[NTYPES];
static lg_http_req_t *taken[16];
static size_t ntaken, ntaken_total;

static void take(lg_http_req_t *r) {
  CHECK(ntaken < 16);
  taken[ntaken++] = r;
  ntaken_total++;
}

static void on_ack(void *ud, void *ref, int status) {
  (void)ud, (void)ref, (void)status;
}

static void make_outputs(void) {
  static const char *const kvs[NTYPES][16] = {
      [ES] = {"hosts", "http://127.0.0.1:9", NULL},
      [LOKI] = {"hosts", "http://127.0.0.1:9", NULL},
      [CH] = {"hosts", "http://127.0.0.1:9", "table", "logs", NULL},
      [OTLP] = {"hosts", "http://127.0.0.1:9", NULL},
      [HTTP] = {"hosts", "http://127.0.0.1:9", NULL},
      [CW] = {"endpoint", "http://127.0.0.1:9", "access_key_id", "AKID",
              "secret_access_key", "secret", "region", "us-east-1",
              "log_group_name", "/k8s/app", "log_stream_name", "s", NULL},
      [S3] = {"endpoint", "http://127.0.0.1:9", "access_key_id", "AKID",
              "secret_access_key", "secret", "region", "us-east-1", "bucket",
              "logs", "compression", "none", NULL},
      /* Every object a multipart upload (of one part). */
      [S3MP] = {"endpoint", "http://127.0.0.1:9", "access_key_id", "AKID",
                "secret_access_key", "secret", "region", "us-east-1", "bucket",
                "logs", "compression", "none", "multipart_threshold", "1",
                NULL},
  };
  static const char *const types[NTYPES] = {
      "elasticsearch",   "loki", "clickhouse", "otlp", "http",
      "cloudwatch_logs", "s3",   "s3"};
  uv_loop_init(&loop);
  for (int t = 0; t < NTYPES; t++) {
    char err[512];
    char name[32];
    snprintf(name, sizeof name, "%s%d", types[t], t);
    lg_conf_output_t *c =
        lg_config_output_new(name, types[t], kvs[t], err, sizeof err);
    if (c == NULL) {
      fprintf(stderr, "%s\n", err);
      abort();
    }
    outs[t] = lg_output_create(&loop, c, t, on_ack, NULL, err, sizeof err);
    if (outs[t] == NULL) {
      fprintf(stderr, "%s\n", err);
      abort();
    }
  }
  lg__http_fuzz_take = take;
}

/* Answers request `hr` with `a` (status line, headers, empty line, body),
 * or as a failed connection when `a` is NULL. Returns the status (0: the
 * connection failed) and where the body is in `a`. */
static long answer(lg_http_req_t *hr, const char *a, size_t len,
                   const char **body, size_t *blen) {
  long status = 0;
  CURLcode rc = CURLE_COULDNT_CONNECT;
  if (a != NULL) {
    char *end;
    const char *nl = memchr(a, '\n', len);
    size_t sl = nl ? (size_t)(nl - a) : len;
    char line[16];
    snprintf(line, sizeof line, "%.*s", (int)(sl < 15 ? sl : 15), a);
    long s = strtol(line, &end, 10);
    if (end != line && s >= 100 && s <= 999) {
      status = s;
      rc = CURLE_OK;
    }
    const char *p = nl ? nl + 1 : a + len, *e = a + len;
    lg_buf_append(&hr->hdrs, "HTTP/1.1 200 OK\r\n", 17);
    while (p < e) {
      nl = memchr(p, '\n', (size_t)(e - p));
      size_t l = nl ? (size_t)(nl - p) : (size_t)(e - p);
      if (l == 0) {
        p++;
        break; /* the body follows */
      }
      lg_buf_append(&hr->hdrs, p, l);
      lg_buf_append(&hr->hdrs, "\r\n", 2);
      p += l + (nl != NULL);
    }
    if (rc == CURLE_OK)
      lg_buf_append(&hr->resp, p, (size_t)(e - p));
    *body = p;
    *blen = (size_t)(e - p);
  }
  lg__http_req_complete(hr, rc, status);
  return status;
}

/* The result of record j: its own, else the request's. */
static int fate(const req_t *r, uint32_t j) {
  if (r->results != NULL && r->results[j] != 0)
    return r->results[j] - 1;
  return r->result;
}

/* Elasticsearch: a 2xx answer whose items line up with the records says
 * each record's fate. */
static void check_es(const req_t *r, long status, const char *body,
                     size_t len) {
  if (status < 200 || status >= 300 || body == NULL)
    return;
  cJSON *root = cJSON_ParseWithLength(body, len);
  const cJSON *items = cJSON_GetObjectItem(root, "items"), *it;
  if (!cJSON_IsArray(items) ||
      (uint32_t)cJSON_GetArraySize(items) != r->pub.n) {
    for (uint32_t j = 0; j < r->pub.n; j++)
      CHECK(fate(r, j) != LG_OUT_DELIVERED); /* not an answer to these */
  } else {
    uint32_t j = 0;
    cJSON_ArrayForEach(it, items) {
      const cJSON *st = cJSON_GetObjectItem(it->child, "status");
      int s = cJSON_IsNumber(st) ? st->valueint : 0;
      int ok = (s >= 200 && s < 300) || s == 409;
      CHECK(ok == (fate(r, j) == LG_OUT_DELIVERED));
      j++;
    }
  }
  cJSON_Delete(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (outs[0] == NULL) {
    lg_log_set_level((lg_log_level_t)(LG_LOG_ERROR + 1));
    make_outputs();
  }
  if (size < 2)
    return 0;
  int t = data[0] % NTYPES;
  uint32_t n = data[1] % 8 + 1;
  lg_output_t *o = outs[t];

  /* The records, encoded by the output's own encoder. */
  lg_batch_t *b = lg_batch_create(0);
  CHECK(b != NULL);
  b->fingerprint = 0x9f86d081884c7d65ull;
  for (uint32_t j = 0; j < n; j++) {
    char body[32];
    int l = snprintf(body, sizeof body, "line %u", j);
    CHECK(lg_batch_add(b, body, (size_t)l, 1714564800000000000ll + j,
                       (uint64_t)j * 10, (uint64_t)j * 10 + 10, 0) >= 0);
  }
  lg_encoder_t enc = lg_output_encoder(o);
  lg_payload_t p = LG_PAYLOAD_INIT;
  for (uint32_t j = 0; j < n; j++)
    CHECK(lg_payload_add(&p, &enc, b, j, NULL) == 0);

  req_t *r = lg__dlv_req_new((out_priv_t *)o, n);
  CHECK(r != NULL);
  r->pub.n = n;
  r->detached = 1;
  r->recs_filled = 1;
  for (uint32_t j = 0; j < n; j++) {
    lg_out_rec_t *x = &r->recs[j];
    memset(x, 0, sizeof *x);
    x->data = lg_payload_rec(&p, j, &x->len);
    x->meta = lg_payload_meta(&p, j, &x->meta_len);
    x->batch = b;
    x->index = j;
    r->pub.bytes += x->len;
  }

  static const char cut[] = "\n=====\n";
  const char *a = (const char *)data + 2, *end = (const char *)data + size;
  const char *last = NULL;
  size_t last_len = 0;
  long last_status = 0;
  const char *nobody;
  size_t nolen;
  ntaken = ntaken_total = 0;
  o->vt->send(o, &r->pub);
  for (int spins = 0; r->detached == 1; spins++) {
    CHECK(spins < 1000 && ntaken_total <= 64); /* it ends */
    if (ntaken == 0) {
      uv_run(&loop, UV_RUN_NOWAIT);
      continue;
    }
    lg_http_req_t *hr = taken[0];
    memmove(taken, taken + 1, --ntaken * sizeof *taken);
    if (a == NULL) {
      answer(hr, NULL, 0, &nobody, &nolen);
      continue;
    }
    const char *m = memmem(a, (size_t)(end - a), cut, sizeof cut - 1);
    last = NULL;
    last_status = answer(hr, a, (size_t)((m ? m : end) - a), &last, &last_len);
    a = m ? m + sizeof cut - 1 : NULL;
  }
  /* Requests still out (the other calls of a cloudwatch_logs request that
   * ended) fail. */
  while (ntaken > 0)
    answer(taken[--ntaken], NULL, 0, &nobody, &nolen);
  for (int k = 0; k < 50; k++)
    uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(r->detached == 2); /* ended once */
  CHECK(r->result >= LG_OUT_DELIVERED && r->result <= LG_OUT_SPLIT);
  for (uint32_t j = 0; r->results != NULL && j < n; j++)
    CHECK(r->results[j] <= LG_OUT_REJECTED + 1);
  if (getenv("FUZZ_ANSWERS_SHOW") != NULL) {
    /* What each record became, to look at a seed: 0 delivered, 1 retry,
     * 2 rejected, 3 split. */
    fprintf(stderr, "type %d, %zu requests, result %d:", t, ntaken_total,
            r->result);
    for (uint32_t j = 0; j < n; j++)
      fprintf(stderr, " %d", fate(r, j));
    fprintf(stderr, " (%s)\n", r->reason_buf);
  }
  if (t == ES && ntaken_total == 1)
    check_es(r, last_status, last, last_len);
  lg__dlv_req_free(r);
  lg_payload_free(&p);
  lg_batch_destroy(b);
  return 0;
}
