/*
 * lg_out_http.c - the `http` output: batches of records POSTed to any HTTP
 * receiver, as NDJSON (one JSON object per line) or one JSON array.
 *
 * Answers (RFC 9110): 2xx delivered; 429 and 503 retried no sooner than
 * their Retry-After says; 408 and other 5xx retried with backoff; 413
 * splits the batch; 401/403 retried (credentials the operator fixes); any
 * other 4xx rejects the batch to the dead-letter output with the answer's
 * first bytes as the reason. Each record carries its stable id in
 * `id_field` (default "lugger.id"), so a receiver can drop the duplicates
 * an at-least-once retry may bring.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_json.h"
#include "outputs/lg_out_http_common.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_record_json.h"

typedef struct http_conf {
  lg_out_limits_t limits;
  lg_out_http_opts_t http;
  char *path;
  int format; /* 0 ndjson, 1 json_array */
  int method; /* 0 POST, 1 PUT */
  char *id_field;
} http_conf_t;

typedef struct http_out {
  const http_conf_t *conf;
  lg_out_http_t *http;
} http_out_t;

static const lg_option_t http_options[] = {
    LG_OUT_HTTP_OPTIONS(http_conf_t,
                        "Base URLs of the receiver (\"https://logs.example\"); "
                        "path is appended.",
                        "none"),
    {.name = "path",
     .type = LG_OPT_STRING,
     .def = "/",
     .doc = "Path (and query) of the requests under each host.",
     .offset = offsetof(http_conf_t, path)},
    {.name = "format",
     .type = LG_OPT_ENUM,
     .def = "ndjson",
     .choices = "ndjson|json_array",
     .doc = "Body: JSON lines (application/x-ndjson) or one JSON array "
            "(application/json).",
     .offset = offsetof(http_conf_t, format)},
    {.name = "method",
     .type = LG_OPT_ENUM,
     .def = "POST",
     .choices = "POST|PUT",
     .doc = "HTTP method.",
     .offset = offsetof(http_conf_t, method)},
    {.name = "id_field",
     .type = LG_OPT_STRING,
     .def = "lugger.id",
     .doc = "Field that carries the record's stable id (\"\": none).",
     .offset = offsetof(http_conf_t, id_field)},
    LG_OUT_DELIVERY_OPTIONS(http_conf_t, "1000", "4MiB", "1s", "2", "0"),
    {.name = NULL},
};

static int http_encode(const void *vconf, const lg_batch_t *b, uint32_t i,
                       const char *error, lg_payload_t *out) {
  const http_conf_t *c = vconf;
  lg_buf_t *d = &out->data;
  size_t start = d->len;
  int rc = lg_json_encode_record_err(d, b, i, error,
                                     error != NULL ? strlen(error) : 0);
  if (rc == 0 && b != NULL && c->id_field != NULL && c->id_field[0] != '\0' &&
      d->len - start >= 3) {
    char id[48];
    int n = lg_out_record_id(b, i, id, sizeof id);
    if (n > 0) {
      d->len -= 2; /* "}\n" */
      rc = lg_buf_appendf(d, "%s", d->len - start > 1 ? "," : "");
      if (rc == 0)
        rc = lg_json_append_string(d, c->id_field, strlen(c->id_field));
      if (rc == 0)
        rc = lg_buf_appendf(d, ":\"%.*s\"}\n", n, id);
    }
  }
  if (rc != 0)
    d->len = start;
  return rc;
}

static void http_answer(void *ud, lg_out_req_t *r, lg_http_req_t *hr,
                        const lg_http_response_t *res) {
  char reason[1024];
  lg_out_result_t k = lg_out_http_classify(res, reason, sizeof reason);
  if (res->status == 0 || res->status == 503)
    lg_http_req_host_failed(hr);
  lg_out_req_done(r, k, k == LG_OUT_DELIVERED ? NULL : reason);
}

static void http_send(lg_output_t *o, lg_out_req_t *r) {
  http_out_t *h = o->impl;
  lg_buf_t body = LG_BUF_INIT;
  int rc = lg_out_http_body(r, &body, h->conf->format == 0);
  if (rc == 0 && h->conf->format == 1) {
    /* JSON lines -> [a,b,c]: each "\n" but the last becomes ','. */
    for (size_t k = 0; k < body.len; k++)
      if (body.data[k] == '\n')
        body.data[k] = ',';
    if (body.len > 0)
      body.len--;
    rc = lg_buf_reserve(&body, 2);
    if (rc == 0) {
      memmove(body.data + 1, body.data, body.len);
      body.data[0] = '[';
      body.data[body.len + 1] = ']';
      body.len += 2;
    }
  }
  if (rc != 0) {
    lg_buf_free(&body);
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  lg_out_http_send(
      h->http, r, h->conf->method == 1 ? "PUT" : "POST", h->conf->path,
      h->conf->format == 1 ? "application/json" : "application/x-ndjson", NULL,
      0, &body, http_answer, h);
}

/* lg_output_type_t.check. */
static int http_check(const char *name, const void *vconf, char *err,
                      size_t errlen) {
  const http_conf_t *c = vconf;
  if (c->path == NULL || c->path[0] != '/') {
    snprintf(err, errlen, "outputs.%s.path: must start with '/'", name);
    return -EINVAL;
  }
  return 0;
}

static int http_init(lg_output_t *o, const void *vconf, char *err,
                     size_t errlen) {
  const http_conf_t *c = vconf;
  http_out_t *h = calloc(1, sizeof *h);
  if (h == NULL)
    return -ENOMEM;
  h->conf = c;
  h->http = lg_out_http_create(o, &c->http, NULL, err, errlen);
  if (h->http == NULL) {
    free(h);
    return -EINVAL;
  }
  o->impl = h;
  return 0;
}

static void http_cancel(lg_output_t *o) {
  http_out_t *h = o->impl;
  lg_out_http_cancel(h->http);
}

static void http_close(lg_output_t *o) {
  http_out_t *h = o->impl;
  lg_out_http_t *x = h->http;
  free(h);
  o->impl = NULL;
  lg_out_http_close(x);
}

const lg_output_type_t lg__output_http = {
    .name = "http",
    .doc = "POSTs batches of records as NDJSON or a JSON array to an HTTP "
           "endpoint.",
    .options = http_options,
    .conf_size = sizeof(http_conf_t),
    .rejects = 1,
    .encode = http_encode,
    .check = http_check,
    .init = http_init,
    .send = http_send,
    .cancel = http_cancel,
    .close = http_close,
};
