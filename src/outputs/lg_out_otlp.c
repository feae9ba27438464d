/*
 * lg_out_otlp.c - the `otlp` output: OpenTelemetry logs over OTLP/HTTP with
 * the JSON encoding (OTLP specification, "OTLP/HTTP"; the proto3 JSON
 * mapping of opentelemetry/proto/collector/logs/v1: lowerCamelCase names,
 * 64-bit integers as strings).
 *
 * A record becomes a LogRecord: timeUnixNano from its time, body from its
 * body, severityText and severityNumber from `severity_field` (text mapped
 * to the specification's ranges: TRACE 1, DEBUG 5, INFO 9, WARN 13,
 * ERROR 17, FATAL 21), and its other fields as attributes; the metadata
 * keys of the OpenTelemetry resource conventions (k8s.*, container.*,
 * host.*, service.*, cloud.*) become the Resource's attributes. Records of
 * one resource share one ResourceLogs.
 *
 * Answers: 200 delivered, unless partialSuccess says rejectedLogRecords >
 * 0: the answer does not say which records, so every record of that
 * request goes to the dead-letter output with the collector's message
 * (some may be stored too; none is lost silently). 429, 502, 503 and 504
 * are retried honouring Retry-After (the specification's retryable
 * codes); 413 splits; 401/403 retried (credentials); any other 4xx or 5xx
 * is not retryable by the specification: rejected to the dead-letter
 * output.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "core/lg_json.h"
#include "core/lg_time.h"
#include "outputs/lg_out_http_common.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"

typedef struct otlp_conf {
  lg_out_limits_t limits;
  lg_out_http_opts_t http;
  char *path;
  char *severity_field;
  char *scope_name;
} otlp_conf_t;

typedef struct otlp {
  const otlp_conf_t *conf;
  lg_out_http_t *http;
} otlp_t;

static const lg_option_t otlp_options[] = {
    LG_OUT_HTTP_OPTIONS(otlp_conf_t,
                        "Base URLs of the OTLP/HTTP receivers "
                        "(\"http://otel-collector:4318\").",
                        "gzip"),
    {.name = "path",
     .type = LG_OPT_STRING,
     .def = "/v1/logs",
     .doc = "Path of the logs endpoint under each host.",
     .offset = offsetof(otlp_conf_t, path)},
    {.name = "severity_field",
     .type = LG_OPT_STRING,
     .def = "level",
     .doc = "Record field holding the severity (\"error\", \"WARN\", ...): "
            "sent as severityText and mapped to severityNumber.",
     .offset = offsetof(otlp_conf_t, severity_field)},
    {.name = "scope_name",
     .type = LG_OPT_STRING,
     .def = "lugger",
     .doc = "InstrumentationScope name of the records.",
     .offset = offsetof(otlp_conf_t, scope_name)},
    LG_OUT_DELIVERY_OPTIONS(otlp_conf_t, "1000", "4MiB", "1s", "2", "0"),
    {.name = NULL},
};

/* ---- encoding (worker threads) ------------------------------------------ */

static const char *const resource_prefixes[] = {
    "k8s.", "container.", "host.", "service.", "cloud.", "os."};

static int is_resource_key(const char *k, size_t n) {
  for (size_t i = 0; i < sizeof resource_prefixes / sizeof *resource_prefixes;
       i++) {
    size_t pl = strlen(resource_prefixes[i]);
    if (n > pl && memcmp(k, resource_prefixes[i], pl) == 0)
      return 1;
  }
  return 0;
}

/* {"key":"k","value":{"stringValue":"v"}} and the other AnyValue kinds. */
static int put_kv(lg_buf_t *d, int *first, const char *k, size_t kn, int type,
                  const char *s, size_t sn, int64_t i, double num) {
  int rc =
      lg_buf_append(d, *first ? "{\"key\":" : ",{\"key\":", *first ? 7 : 8);
  *first = 0;
  if (rc == 0)
    rc = lg_json_append_string(d, k, kn);
  if (rc != 0)
    return rc;
  switch (type) {
  case LG_VAL_INT:
    return lg_buf_appendf(d, ",\"value\":{\"intValue\":\"%lld\"}}",
                          (long long)i);
  case LG_VAL_NUM:
    rc = lg_buf_append(d, ",\"value\":{\"doubleValue\":", 24);
    if (rc == 0)
      rc = lg_json_append_number(d, num);
    return rc == 0 ? lg_buf_append(d, "}}", 2) : rc;
  case LG_VAL_BOOL:
    return lg_buf_appendf(d, ",\"value\":{\"boolValue\":%s}}",
                          i ? "true" : "false");
  default: /* strings, and maps/arrays as their JSON text */
    rc = lg_buf_append(d, ",\"value\":{\"stringValue\":", 24);
    if (rc == 0)
      rc = lg_json_append_string(d, s, sn);
    return rc == 0 ? lg_buf_append(d, "}}", 2) : rc;
  }
}

static int severity_number(const char *s, size_t n) {
  static const struct {
    const char *p;
    int num;
  } map[] = {{"trace", 1},  {"debug", 5},  {"info", 9},   {"notice", 10},
             {"warn", 13},  {"error", 17}, {"err", 17},   {"crit", 18},
             {"alert", 19}, {"emerg", 21}, {"fatal", 21}, {"panic", 21}};
  for (size_t k = 0; k < sizeof map / sizeof *map; k++) {
    size_t l = strlen(map[k].p);
    if (n >= l && strncasecmp(s, map[k].p, l) == 0)
      return map[k].num;
  }
  return 0;
}

static int otlp_encode(const void *vconf, const lg_batch_t *b, uint32_t i,
                       const char *error, lg_payload_t *out) {
  const otlp_conf_t *c = vconf;
  lg_buf_t *d = &out->data, *m = &out->meta;
  size_t start = d->len, mstart = m->len;
  int64_t t = b != NULL ? b->recs[i].time_ns : lg_time_now_ns();
  int rc = lg_buf_appendf(d, "{\"timeUnixNano\":\"%lld\"", (long long)t);
  lg_ffi_val_t v;
  if (rc == 0 && b != NULL && c->severity_field && c->severity_field[0] &&
      lg_ffi_rec_get(b, i, c->severity_field, strlen(c->severity_field), &v) ==
          LG_VAL_STR) {
    rc = lg_buf_appendf(d, ",\"severityNumber\":%d,\"severityText\":",
                        severity_number(v.s, v.len));
    if (rc == 0)
      rc = lg_json_append_string(d, v.s, v.len);
  }
  if (rc == 0 && b != NULL) {
    int ty = lg_ffi_rec_get(b, i, "body", 4, &v);
    rc = lg_buf_append(d, ",\"body\":{\"stringValue\":", 23);
    if (rc == 0)
      rc = lg_json_append_string(d, ty == LG_VAL_STR ? v.s : "",
                                 ty == LG_VAL_STR ? v.len : 0);
    if (rc == 0)
      rc = lg_buf_putc(d, '}');
  }
  /* Attributes and resource: metadata keys (unless a field replaced or
   * removed them), log.iostream, then the fields scripts set. */
  int afirst = 1, rfirst = 1;
  if (rc == 0)
    rc = lg_buf_append(d, ",\"attributes\":[", 15);
  if (rc == 0)
    rc = lg_buf_putc(m, '[');
  if (rc == 0 && b != NULL && b->meta != NULL) {
    for (uint32_t k = 0; rc == 0 && k < b->meta->n; k++) {
      const lg_meta_kv_t *kv = &b->meta->kv[k];
      if ((b->recs[i].flags & LG_REC_SHADOWED) &&
          lg_batch_find(b, i, kv->key, kv->key_len) != NULL)
        continue;
      int res = is_resource_key(kv->key, kv->key_len);
      rc = put_kv(res ? m : d, res ? &rfirst : &afirst, kv->key, kv->key_len,
                  kv->str ? LG_VAL_STR : LG_VAL_INT, kv->str, kv->str_len,
                  kv->num, 0);
    }
  }
  if (rc == 0 && b != NULL && (b->recs[i].flags & LG_REC_HAS_STREAM))
    rc = put_kv(d, &afirst, "log.iostream", 12, LG_VAL_STR,
                (b->recs[i].flags & LG_REC_STDERR) ? "stderr" : "stdout", 6, 0,
                0);
  for (int32_t f = b != NULL ? b->recs[i].field_head : -1; rc == 0 && f >= 0;
       f = b->fields[f].next) {
    const lg_field_t *fd = &b->fields[f];
    const char *k = b->data + fd->key_off;
    if (fd->type == LG_VAL_DELETED || fd->type == LG_VAL_NULL ||
        (fd->key_len == 4 &&
         (memcmp(k, "time", 4) == 0 || memcmp(k, "body", 4) == 0)))
      continue;
    if (c->severity_field && strlen(c->severity_field) == fd->key_len &&
        memcmp(k, c->severity_field, fd->key_len) == 0)
      continue;
    int res = is_resource_key(k, fd->key_len);
    rc = put_kv(res ? m : d, res ? &rfirst : &afirst, k, fd->key_len,
                (int)fd->type, b->data + fd->s_off, fd->s_len, fd->i, fd->d);
  }
  if (rc == 0 && error != NULL)
    rc = put_kv(d, &afirst, "lugger.error", 12, LG_VAL_STR, error,
                strlen(error), 0, 0);
  if (rc == 0)
    rc = lg_buf_append(d, "]}", 2);
  if (rc == 0)
    rc = lg_buf_putc(m, ']');
  if (rc != 0) {
    d->len = start;
    m->len = mstart;
  }
  return rc;
}

/* ---- the request (loop thread) ---------------------------------------------
 */

static int build_body(const otlp_conf_t *c, lg_out_req_t *r, lg_buf_t *body) {
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  body->len = 0;
  int rc = lg_buf_reserve(body, r->bytes + 256);
  if (rc == 0)
    rc = lg_buf_append(body, "{\"resourceLogs\":[", 17);
  /* Records of one source are adjacent and share their resource: a new
   * ResourceLogs starts where the resource changes. */
  for (uint32_t j = 0; rc == 0 && j < r->n; j++) {
    int fresh = j == 0 || recs[j].meta_len != recs[j - 1].meta_len ||
                memcmp(recs[j].meta, recs[j - 1].meta, recs[j].meta_len) != 0;
    if (fresh) {
      if (j > 0)
        rc = lg_buf_append(body, "]}]},", 5);
      if (rc == 0)
        rc = lg_buf_append(body, "{\"resource\":{\"attributes\":", 26);
      if (rc == 0)
        rc = recs[j].meta_len > 0
                 ? lg_buf_append(body, recs[j].meta, recs[j].meta_len)
                 : lg_buf_append(body, "[]", 2); /* a text record */
      if (rc == 0)
        rc = lg_buf_append(body, "},\"scopeLogs\":[{\"scope\":{\"name\":", 32);
      if (rc == 0)
        rc = lg_json_append_string(body, c->scope_name, strlen(c->scope_name));
      if (rc == 0)
        rc = lg_buf_append(body, "},\"logRecords\":[", 16);
    } else {
      rc = lg_buf_putc(body, ',');
    }
    if (rc == 0 && recs[j].batch == NULL) {
      /* A record submitted as JSON text (tests and tools): its text is the
       * body, the time is now. */
      size_t len = recs[j].len;
      if (len > 0 && recs[j].data[len - 1] == '\n')
        len--;
      rc = lg_buf_appendf(body,
                          "{\"timeUnixNano\":\"%lld\",\"body\":{"
                          "\"stringValue\":",
                          (long long)lg_time_now_ns());
      if (rc == 0)
        rc = lg_json_append_string(body, recs[j].data, len);
      if (rc == 0)
        rc = lg_buf_append(body, "}}", 2);
    } else if (rc == 0) {
      rc = lg_buf_append(body, recs[j].data, recs[j].len);
    }
  }
  if (rc == 0)
    rc = lg_buf_append(body, r->n > 0 ? "]}]}]}" : "]}", r->n > 0 ? 6 : 2);
  return rc;
}

static void otlp_answer(void *ud, lg_out_req_t *r, lg_http_req_t *hr,
                        const lg_http_response_t *res) {
  char reason[1024];
  int s = res->status;
  if (s >= 200 && s < 300) {
    cJSON *root = cJSON_ParseWithLength(res->body, res->body_len);
    const cJSON *ps = cJSON_GetObjectItem(root, "partialSuccess");
    const cJSON *n = cJSON_GetObjectItem(ps, "rejectedLogRecords");
    const cJSON *msg = cJSON_GetObjectItem(ps, "errorMessage");
    /* An int64: a string in OTLP/JSON, a number from some servers. Read
     * as a double: a count no integer type holds (a broken collector's
     * 1e300) still means some were rejected, and casting it would be
     * undefined. */
    double rejected = cJSON_IsString(n)   ? strtod(n->valuestring, NULL)
                      : cJSON_IsNumber(n) ? n->valuedouble
                                          : 0;
    if (rejected >= 1) {
      snprintf(reason, sizeof reason,
               "otlp partial success from %s: %.15g of %u log records "
               "rejected (the answer does not say which): %s",
               res->host, rejected, r->n,
               cJSON_IsString(msg) ? msg->valuestring : "");
      cJSON_Delete(root);
      lg_out_req_done(r, LG_OUT_REJECTED, reason);
      return;
    }
    cJSON_Delete(root);
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
    return;
  }
  lg_out_result_t k = lg_out_http_classify(res, reason, sizeof reason);
  if (s == 429 || s == 502 || s == 503 || s == 504 || s == 0 || s == 401 ||
      s == 403)
    k = LG_OUT_RETRY;
  else if (s == 413)
    k = LG_OUT_SPLIT;
  else
    k = LG_OUT_REJECTED; /* OTLP: other 4xx and 5xx must not be retried */
  if (s == 0 || s == 502 || s == 503)
    lg_http_req_host_failed(hr);
  lg_out_req_done(r, k, reason);
}

static void otlp_send(lg_output_t *o, lg_out_req_t *r) {
  otlp_t *x = o->impl;
  lg_buf_t body = LG_BUF_INIT;
  if (build_body(x->conf, r, &body) != 0) {
    lg_buf_free(&body);
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  lg_out_http_send(x->http, r, "POST", x->conf->path, "application/json", NULL,
                   0, &body, otlp_answer, x);
}

static int otlp_init(lg_output_t *o, const void *vconf, char *err,
                     size_t errlen) {
  const otlp_conf_t *c = vconf;
  otlp_t *x = calloc(1, sizeof *x);
  if (x == NULL)
    return -ENOMEM;
  x->conf = c;
  x->http = lg_out_http_create(o, &c->http, NULL, err, errlen);
  if (x->http == NULL) {
    free(x);
    return -EINVAL;
  }
  o->impl = x;
  return 0;
}

static void otlp_cancel(lg_output_t *o) {
  otlp_t *x = o->impl;
  lg_out_http_cancel(x->http);
}

static void otlp_close(lg_output_t *o) {
  otlp_t *x = o->impl;
  lg_out_http_t *h = x->http;
  free(x);
  o->impl = NULL;
  lg_out_http_close(h);
}

const lg_output_type_t lg__output_otlp = {
    .name = "otlp",
    .doc = "Sends records as OpenTelemetry logs over OTLP/HTTP (JSON).",
    .options = otlp_options,
    .conf_size = sizeof(otlp_conf_t),
    .rejects = 1,
    .encode = otlp_encode,
    .init = otlp_init,
    .send = otlp_send,
    .cancel = otlp_cancel,
    .close = otlp_close,
};
