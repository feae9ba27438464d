/*
 * lg_out_elasticsearch.c - the `elasticsearch` output (also OpenSearch):
 * the _bulk API (Elasticsearch reference, "Bulk API"; OpenSearch
 * "Bulk"), one request per delivery-layer request.
 *
 * Encoding (worker threads): each record becomes an action line and its
 * source line:
 *   {"create":{"_index":"<index>","_id":"<record id>"}}\n{<record>}\n
 * `create` with the record's stable id means a retry, or a re-read after a
 * crash, can never make a second document: Elasticsearch answers 409 for an
 * id it has, which is counted as delivered. `index` is a template of record
 * fields and the record's time; `dedot` turns the dots of Kubernetes label
 * and annotation keys into "_", because Elasticsearch maps dotted keys as
 * objects and a pod labelled `app` next to one labelled
 * `app.kubernetes.io/name` is otherwise a mapping conflict (a permanent
 * 400). `_type` is never sent (removed in Elasticsearch 8 / OpenSearch 2).
 *
 * Answers (loop thread), following the bulk API's per-item results, read
 * in request order with filter_path keeping one entry per action (and the
 * count checked): 2xx and 409 delivered; 429, 408 and 5xx items retried
 * (only those); other 4xx items rejected to the dead-letter output with
 * error.type and error.reason. A whole-request 413 splits the batch; 429,
 * 5xx, timeouts and unreadable answers retry it; a whole-request 400 (a
 * malformed request the answer does not pin on an item) splits it until
 * the record that causes it is alone and rejected.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/lg_json.h"
#include "core/lg_log.h"
#include "core/lg_time.h"
#include "outputs/lg_out_http_common.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_record_json.h"

typedef struct es_conf {
  lg_out_limits_t limits;
  lg_out_http_opts_t http;
  char *index;
  int id; /* 0 record, 1 none */
  int dedot;
  int data_stream; /* add "@timestamp" */
  int field_names; /* 0 otel (as the record is), 1 ecs */
  char *pipeline;
  char *api_key;
} es_conf_t;

typedef struct es {
  const es_conf_t *conf;
  lg_out_http_t *http;
  char *path; /* "/_bulk?filter_path=..." */
} es_t;

static int check_index(const lg_optval_t *v, char *err, size_t errlen) {
  const char *s = v->s ? v->s : "";
  int depth = 0;
  for (const char *p = s; *p; p++) {
    if (*p == '{')
      depth++;
    else if (*p == '}')
      depth--;
    if (depth < 0 || depth > 1) {
      snprintf(err, errlen, "unbalanced { } in \"%s\"", s);
      return -EINVAL;
    }
  }
  if (depth != 0) {
    snprintf(err, errlen, "unbalanced { } in \"%s\"", s);
    return -EINVAL;
  }
  if (s[0] == '\0') {
    snprintf(err, errlen, "must not be empty");
    return -EINVAL;
  }
  return 0;
}

static const lg_option_t es_options[] = {
    LG_OUT_HTTP_OPTIONS(es_conf_t,
                        "Base URLs of the cluster's nodes "
                        "(\"https://es-1:9200\"); requests go round-robin, "
                        "and a node that fails is set aside for a while.",
                        "none"),
    {.name = "index",
     .type = LG_OPT_STRING,
     .def = "logs-%Y.%m.%d",
     .check = check_index,
     .doc = "Index (or data stream) name: {field} is a record field "
            "(lower-cased; {field|default} when it may be missing) and "
            "%Y %m %d %H the record's time in UTC, e.g. "
            "\"logs-{k8s.namespace.name}-%Y.%m.%d\".",
     .offset = offsetof(es_conf_t, index)},
    {.name = "id",
     .type = LG_OPT_ENUM,
     .def = "record",
     .choices = "record|none",
     .doc = "_id of each document: the record's stable id (retries and "
            "re-reads never duplicate), or none (Elasticsearch makes one; "
            "faster indexing, duplicates possible).",
     .offset = offsetof(es_conf_t, id)},
    {.name = "dedot",
     .type = LG_OPT_BOOL,
     .def = "true",
     .doc = "Replace '.' by '_' in the keys of Kubernetes labels and "
            "annotations (k8s.pod.label.app.kubernetes.io/name -> "
            "k8s.pod.label.app_kubernetes_io/name), avoiding "
            "object/value mapping conflicts.",
     .offset = offsetof(es_conf_t, dedot)},
    {.name = "data_stream",
     .type = LG_OPT_BOOL,
     .def = "false",
     .doc = "index names a data stream: add \"@timestamp\" (the record's "
            "time) to each document.",
     .offset = offsetof(es_conf_t, data_stream)},
    {.name = "field_names",
     .type = LG_OPT_ENUM,
     .def = "otel",
     .choices = "otel|ecs",
     .doc = "Document keys: the record's own (OpenTelemetry names, "
            "k8s.pod.name), or Elastic Common Schema names as Filebeat "
            "writes them (kubernetes.pod.name, kubernetes.labels.*, "
            "message, @timestamp, stream).",
     .offset = offsetof(es_conf_t, field_names)},
    {.name = "pipeline",
     .type = LG_OPT_STRING,
     .doc = "Ingest pipeline to run on the documents.",
     .offset = offsetof(es_conf_t, pipeline)},
    {.name = "api_key",
     .type = LG_OPT_STRING,
     .doc = "Elasticsearch API key, the \"encoded\" value (base64 of "
            "id:key), sent as Authorization: ApiKey.",
     .offset = offsetof(es_conf_t, api_key)},
    LG_OUT_DELIVERY_OPTIONS(es_conf_t, "1000", "5MiB", "1s", "2", "0"),
    {.name = NULL},
};

/* ---- encoding (worker threads) ------------------------------------------ */

/* Appends the value of record field `key` for an index name, lower-cased,
 * or `def` when the record has no such field. */
static int put_field(lg_buf_t *d, const lg_batch_t *b, uint32_t i,
                     const char *key, size_t klen, const char *def,
                     size_t deflen) {
  lg_ffi_val_t v;
  int t = b != NULL ? lg_ffi_rec_get(b, i, key, klen, &v) : 0;
  char num[32];
  const char *s = def;
  size_t n = deflen;
  if (t == LG_VAL_STR || t == LG_VAL_JSON) {
    s = v.s;
    n = v.len;
  } else if (t == LG_VAL_INT || t == LG_VAL_BOOL) {
    n = (size_t)snprintf(num, sizeof num, "%lld", (long long)v.i);
    s = num;
  } else if (t == LG_VAL_NUM) {
    n = (size_t)snprintf(num, sizeof num, "%g", v.d);
    s = num;
  }
  if (lg_buf_reserve(d, n) != 0)
    return -ENOMEM;
  for (size_t k = 0; k < n; k++)
    d->data[d->len++] = (char)tolower((unsigned char)s[k]);
  return 0;
}

/* The record's UTC calendar time, cached per worker thread: the records
 * of a batch mostly share their second. */
static const struct tm *utc(int64_t time_ns) {
  static __thread time_t last = (time_t)-1;
  static __thread struct tm tm;
  time_t sec = (time_t)(time_ns / 1000000000);
  if (time_ns < 0 && time_ns % 1000000000 != 0)
    sec--;
  if (sec != last) {
    gmtime_r(&sec, &tm);
    last = sec;
  }
  return &tm;
}

static int put_digits(lg_buf_t *d, int v, int width) {
  char b[8];
  for (int k = width - 1; k >= 0; k--, v /= 10)
    b[k] = (char)('0' + v % 10);
  return lg_buf_append(d, b, (size_t)width);
}

/* Expands the index template for record `i` into `d` (raw, unquoted). */
static int expand_index(lg_buf_t *d, const char *tpl, const lg_batch_t *b,
                        uint32_t i, int64_t time_ns) {
  for (const char *p = tpl; *p;) {
    if (*p == '{') {
      const char *end = strchr(p, '}');
      const char *bar = memchr(p, '|', (size_t)(end - p));
      const char *kend = bar ? bar : end;
      const char *def = bar ? bar + 1 : "";
      size_t deflen = bar ? (size_t)(end - bar - 1) : 0;
      if (put_field(d, b, i, p + 1, (size_t)(kend - p - 1), def, deflen) != 0)
        return -ENOMEM;
      p = end + 1;
      continue;
    }
    int rc;
    if (*p == '%' && p[1] != '\0') {
      const struct tm *tm = utc(time_ns);
      switch (p[1]) {
      case 'Y':
        rc = put_digits(d, tm->tm_year + 1900, 4);
        break;
      case 'm':
        rc = put_digits(d, tm->tm_mon + 1, 2);
        break;
      case 'd':
        rc = put_digits(d, tm->tm_mday, 2);
        break;
      case 'H':
        rc = put_digits(d, tm->tm_hour, 2);
        break;
      case 'j':
        rc = put_digits(d, tm->tm_yday + 1, 3);
        break;
      default: /* "%%" and anything else: the character itself */
        rc = lg_buf_putc(d, p[1]);
      }
      p += 2;
    } else {
      rc = lg_buf_putc(d, *p++);
    }
    if (rc != 0)
      return -ENOMEM;
  }
  return 0;
}

/* Keys under these prefixes get '.' -> '_' after the prefix. */
static const char *const dedot_prefixes[] = {
    "\"k8s.pod.label.",         "\"k8s.pod.annotation.",
    "\"k8s.namespace.label.",   "\"k8s.namespace.annotation.",
    "\"k8s.node.label.",        "\"kubernetes.labels.",
    "\"kubernetes.annotations."};

/* OpenTelemetry record keys -> Elastic Common Schema, as Filebeat's
 * kubernetes metadata names them. Exact names first; an entry ending in
 * '.' renames a prefix. */
static const char *const ecs_names[][2] = {
    {"time", "@timestamp"},
    {"body", "message"},
    {"log.iostream", "stream"},
    {"k8s.namespace.name", "kubernetes.namespace"},
    {"k8s.pod.label.", "kubernetes.labels."},
    {"k8s.pod.annotation.", "kubernetes.annotations."},
    {"k8s.", "kubernetes."},
};

/* Skips one JSON value starting at p (as lg_json writes them: no spaces);
 * returns the byte after it. */
static const char *skip_value(const char *p, const char *end) {
  if (p >= end)
    return end;
  if (*p == '"') {
    for (p++; p < end && *p != '"'; p++)
      if (*p == '\\')
        p++;
    return p + 1;
  }
  if (*p == '{' || *p == '[') {
    int depth = 0;
    for (; p < end; p++) {
      if (*p == '"') {
        p = skip_value(p, end) - 1;
      } else if (*p == '{' || *p == '[') {
        depth++;
      } else if (*p == '}' || *p == ']') {
        if (--depth == 0)
          return p + 1;
      }
    }
    return end;
  }
  while (p < end && *p != ',' && *p != '}' && *p != ']')
    p++;
  return p;
}

/* Rewrites the top-level keys of the JSON object at d[from..] to ECS
 * names. */
static int to_ecs(lg_buf_t *d, size_t from) {
  size_t len = d->len - from;
  char *src = malloc(len);
  if (src == NULL)
    return -ENOMEM;
  memcpy(src, d->data + from, len);
  d->len = from;
  const char *p = src, *end = src + len;
  int rc = lg_buf_putc(d, '{');
  p++;
  while (rc == 0 && p < end && *p == '"') {
    const char *k = p + 1, *ke = skip_value(p, end) - 1;
    size_t kl = (size_t)(ke - k);
    const char *v = ke + 2, *ve = skip_value(v, end);
    const char *to = NULL;
    size_t cut = 0;
    for (size_t i = 0; i < sizeof ecs_names / sizeof ecs_names[0]; i++) {
      size_t fl = strlen(ecs_names[i][0]);
      int prefix = ecs_names[i][0][fl - 1] == '.';
      if ((prefix && kl > fl && memcmp(k, ecs_names[i][0], fl) == 0) ||
          (!prefix && kl == fl && memcmp(k, ecs_names[i][0], fl) == 0)) {
        to = ecs_names[i][1];
        cut = fl;
        break;
      }
    }
    if (p > src + 1)
      rc = lg_buf_putc(d, ',');
    if (rc == 0)
      rc = lg_buf_putc(d, '"');
    if (rc == 0 && to != NULL)
      rc = lg_buf_append(d, to, strlen(to));
    if (rc == 0)
      rc = lg_buf_append(d, k + cut, kl - cut);
    if (rc == 0)
      rc = lg_buf_append(d, "\":", 2);
    if (rc == 0)
      rc = lg_buf_append(d, v, (size_t)(ve - v));
    p = ve < end && *ve == ',' ? ve + 1 : ve;
  }
  if (rc == 0)
    rc = lg_buf_append(d, "}\n", 2);
  free(src);
  return rc;
}

/* Dedots, in place, the keys of `len` bytes of one encoded JSON object. A
 * match is a key only when its quote follows '{' or ',' directly: inside a
 * JSON string a quote is always escaped, so that never happens there. One
 * scan for `"k` (every prefix starts so) keeps this cheap on records
 * without such keys. */
static void dedot(char *p, size_t len) {
  char *end = p + len;
  for (char *q = p; (q = memchr(q, '"', (size_t)(end - q))) != NULL; q++) {
    if (q + 1 >= end || q[1] != 'k' || q == p || (q[-1] != '{' && q[-1] != ','))
      continue;
    for (size_t k = 0; k < sizeof dedot_prefixes / sizeof dedot_prefixes[0];
         k++) {
      size_t pl = strlen(dedot_prefixes[k]);
      if ((size_t)(end - q) <= pl || memcmp(q, dedot_prefixes[k], pl) != 0)
        continue;
      char *c = q + pl;
      for (; c < end && *c != '"'; c++) {
        if (*c == '\\')
          c++;
        else if (*c == '.')
          *c = '_';
      }
      q = c;
      break;
    }
  }
}

/* Whether record `i` has a key dedot would change: one among the source's
 * metadata (searched in its encoded JSON) or a field a script set. Most
 * records have none (no labels on their pod, or not from Kubernetes), and
 * then the encoded record need not be scanned. */
static int has_dedot_keys(const lg_batch_t *b, uint32_t i) {
  if (b == NULL)
    return 1;
  const lg_meta_t *m = b->meta;
  if (m != NULL && m->json != NULL) {
    const char *p = m->json, *end = m->json + m->json_len;
    /* memchr, not memmem: the metadata is short and memmem's set-up
     * would cost more than the search. */
    for (; (p = memchr(p, '"', (size_t)(end - p))) != NULL; p++) {
      if (end - p < 5 || memcmp(p, "\"k8s.", 5) != 0)
        continue;
      for (size_t k = 0; k < sizeof dedot_prefixes / sizeof dedot_prefixes[0];
           k++) {
        size_t pl = strlen(dedot_prefixes[k]);
        if ((size_t)(end - p) > pl && memcmp(p, dedot_prefixes[k], pl) == 0)
          return 1;
      }
    }
  }
  for (int32_t f = b->recs[i].field_head; f >= 0; f = b->fields[f].next) {
    const char *k = b->data + b->fields[f].key_off;
    uint32_t kl = b->fields[f].key_len;
    if ((kl > 4 && memcmp(k, "k8s.", 4) == 0) ||
        (kl > 11 && memcmp(k, "kubernetes.", 11) == 0))
      return 1;
  }
  return 0;
}

static int es_encode(const void *vconf, const lg_batch_t *b, uint32_t i,
                     const char *error, lg_payload_t *out) {
  const es_conf_t *c = vconf;
  lg_buf_t *d = &out->data;
  size_t start = d->len;
  int64_t t = b != NULL ? b->recs[i].time_ns : lg_time_now_ns();
  int rc = lg_buf_append(d, "{\"create\":{\"_index\":\"", 21);
  size_t ix = d->len;
  if (rc == 0)
    rc = expand_index(d, c->index, b, i, t);
  if (rc == 0) {
    /* Escape what JSON needs: re-quote the raw name if it has '"' or '\'. */
    if (memchr(d->data + ix, '"', d->len - ix) ||
        memchr(d->data + ix, '\\', d->len - ix)) {
      size_t n = d->len - ix;
      char *raw = malloc(n);
      if (raw == NULL)
        rc = -ENOMEM;
      else {
        memcpy(raw, d->data + ix, n);
        d->len = ix - 1;
        rc = lg_json_append_string(d, raw, n);
        free(raw);
      }
    } else {
      rc = lg_buf_putc(d, '"');
    }
  }
  if (rc == 0 && c->id == 0 && b != NULL) {
    char id[48];
    int n = lg_out_record_id(b, i, id, sizeof id);
    if (n > 0) {
      rc = lg_buf_append(d, ",\"_id\":\"", 8);
      if (rc == 0)
        rc = lg_buf_append(d, id, (size_t)n);
      if (rc == 0)
        rc = lg_buf_putc(d, '"');
    }
  }
  if (rc == 0)
    rc = lg_buf_append(d, "}}\n", 3);
  size_t src = d->len;
  if (rc == 0)
    rc = lg_json_encode_record_err(d, b, i, error,
                                   error != NULL ? strlen(error) : 0);
  if (rc == 0 && c->field_names == 1)
    rc = to_ecs(d, src);
  if (rc == 0 && c->dedot && has_dedot_keys(b, i))
    dedot(d->data + src, d->len - src);
  if (rc == 0 && c->data_stream && c->field_names != 1 && d->len - src >= 3) {
    /* ,"@timestamp":"..." before the closing "}\n". */
    char ts[LG_TIME_RFC3339_MAX];
    size_t n = lg_time_format_rfc3339(t, ts);
    d->len -= 2;
    rc = lg_buf_appendf(d, "%s\"@timestamp\":\"%.*s\"}\n",
                        d->len - src > 1 ? "," : "", (int)n, ts);
  }
  if (rc != 0)
    d->len = start;
  return rc;
}

/* ---- answers (loop thread) ----------------------------------------------- */

static void reason_of(char *out, size_t cap, int status, const cJSON *error) {
  const cJSON *type = cJSON_GetObjectItem(error, "type");
  const cJSON *why = cJSON_GetObjectItem(error, "reason");
  snprintf(out, cap, "elasticsearch item status %d: %s: %s", status,
           cJSON_IsString(type) ? type->valuestring : "?",
           cJSON_IsString(why) ? why->valuestring : "?");
}

/* Whether `body` is exactly the answer Elasticsearch gives to `n` actions
 * that all succeeded, with the request's filter_path:
 * {"errors":false,"items":[{"create":{"status":201}},...]}, n items, each
 * with a status and nothing else. Anything else (an item with an error, a
 * 409, a look-alike that says "errors":false all the same, another
 * layout, garbage) gets the full reading. */
static int all_delivered(const char *body, size_t len, uint32_t n) {
  static const char head[] = "{\"errors\":false,\"items\":[";
  static const char status[] = "\":{\"status\":";
  const char *p = body, *end = body + len;
  if (len < sizeof head - 1 || memcmp(p, head, sizeof head - 1) != 0)
    return 0;
  p += sizeof head - 1;
  for (uint32_t k = 0; k < n; k++) {
    if (k > 0 && (p >= end || *p++ != ','))
      return 0;
    if (end - p < 2 || p[0] != '{' || p[1] != '"')
      return 0;
    p += 2;
    while (p < end && *p >= 'a' && *p <= 'z')
      p++; /* the action: create, index */
    if ((size_t)(end - p) < sizeof status - 1 ||
        memcmp(p, status, sizeof status - 1) != 0)
      return 0;
    p += sizeof status - 1;
    int s = 0, digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 3) {
      s = s * 10 + (*p++ - '0');
      digits++;
    }
    if (digits != 3 || s < 200 || s >= 300 || end - p < 2 || p[0] != '}' ||
        p[1] != '}')
      return 0;
    p += 2;
  }
  if (end - p < 2 || p[0] != ']' || p[1] != '}')
    return 0;
  for (p += 2; p < end; p++)
    if (*p != '\n' && *p != '\r' && *p != ' ')
      return 0;
  return 1;
}

static void es_answer(void *ud, lg_out_req_t *r, lg_http_req_t *hr,
                      const lg_http_response_t *res) {
  (void)ud;
  char reason[1024];
  if (res->status < 200 || res->status >= 300) {
    lg_out_result_t k = lg_out_http_classify(res, reason, sizeof reason);
    if (res->status == 400)
      k = LG_OUT_SPLIT; /* malformed: isolate the record that causes it */
    else if (res->status == 404)
      k = LG_OUT_RETRY; /* a wrong URL or missing endpoint: configuration */
    if (res->status == 503 || res->status == 0)
      lg_http_req_host_failed(hr);
    lg_out_req_done(r, k, reason);
    return;
  }
  /* The usual answer, every item delivered: read without parsing. */
  if (!res->truncated && all_delivered(res->body, res->body_len, r->n)) {
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
    return;
  }
  cJSON *root =
      res->truncated ? NULL : cJSON_ParseWithLength(res->body, res->body_len);
  const cJSON *items = cJSON_GetObjectItem(root, "items");
  uint32_t n = (uint32_t)cJSON_GetArraySize(items);
  if (root == NULL || !cJSON_IsArray(items) || n != r->n) {
    snprintf(reason, sizeof reason,
             "elasticsearch: unreadable _bulk answer from %s (%u items for "
             "%u actions%s)",
             res->host, root && cJSON_IsArray(items) ? n : 0, r->n,
             res->truncated ? ", truncated" : "");
    cJSON_Delete(root);
    lg_out_req_done(r, LG_OUT_RETRY, reason);
    return;
  }
  uint32_t j = 0;
  const cJSON *it;
  cJSON_ArrayForEach(it, items) {
    const cJSON *op = it->child; /* {"create":{...}} */
    const cJSON *st = cJSON_GetObjectItem(op, "status");
    int s = cJSON_IsNumber(st) ? st->valueint : 0;
    if ((s >= 200 && s < 300) || s == 409) {
      /* delivered (409: the document with this _id is there already) */
    } else if (s == 0) {
      lg_out_req_set(r, j, LG_OUT_RETRY, "elasticsearch: item without status");
    } else {
      reason_of(reason, sizeof reason, s, cJSON_GetObjectItem(op, "error"));
      /* 429/5xx/408: the cluster is busy or a shard is away; 401/403/404:
       * credentials, a write block or a missing index, which the operator
       * fixes (max_retry_time bounds how long they wait). */
      int retry =
          s == 429 || s >= 500 || s == 408 || s == 401 || s == 403 || s == 404;
      lg_out_req_set(r, j, retry ? LG_OUT_RETRY : LG_OUT_REJECTED, reason);
    }
    j++;
  }
  cJSON_Delete(root);
  lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
}

/* Records submitted as JSON text (lg_output_submit_text: tests and tools,
 * no batch behind them) were not encoded: their action line is made here,
 * from the index template's defaults and the current time. */
static int text_body(const es_conf_t *c, lg_out_req_t *r, lg_buf_t *body) {
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  int64_t now = lg_time_now_ns();
  int rc = 0;
  for (uint32_t j = 0; rc == 0 && j < r->n; j++) {
    if (recs[j].batch != NULL) {
      rc = lg_buf_append(body, recs[j].data, recs[j].len);
      continue;
    }
    rc = lg_buf_append(body, "{\"create\":{\"_index\":\"", 21);
    size_t ix = body->len;
    if (rc == 0)
      rc = expand_index(body, c->index, NULL, 0, now);
    if (rc == 0 && (memchr(body->data + ix, '"', body->len - ix) ||
                    memchr(body->data + ix, '\\', body->len - ix)))
      rc = -EINVAL; /* such a name is refused by Elasticsearch anyway */
    if (rc == 0)
      rc = lg_buf_append(body, "\"}}\n", 4);
    if (rc == 0)
      rc = lg_buf_append(body, recs[j].data, recs[j].len);
    if (rc == 0 && (recs[j].len == 0 || recs[j].data[recs[j].len - 1] != '\n'))
      rc = lg_buf_putc(body, '\n');
  }
  return rc;
}

static void es_send(lg_output_t *o, lg_out_req_t *r) {
  es_t *e = o->impl;
  lg_buf_t body = LG_BUF_INIT;
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  int text = 0;
  for (uint32_t j = 0; j < r->n && !text; j++)
    text = recs[j].batch == NULL;
  int rc = text ? text_body(e->conf, r, &body) : lg_out_http_body(r, &body, 1);
  if (rc != 0) {
    lg_buf_free(&body);
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  lg_out_http_send(e->http, r, "POST", e->path, "application/x-ndjson", NULL, 0,
                   &body, es_answer, e);
}

/* ---- lifecycle ------------------------------------------------------------
 */

static int es_init(lg_output_t *o, const void *vconf, char *err,
                   size_t errlen) {
  const es_conf_t *c = vconf;
  es_t *e = calloc(1, sizeof *e);
  if (e == NULL)
    return -ENOMEM;
  e->conf = c;
  lg_buf_t p = LG_BUF_INIT;
  /* One entry per action (errors, status, error type and reason), so the
   * answer's items line up with the request's records. */
  lg_buf_appendf(&p, "/_bulk?filter_path=errors,items.*.status,"
                     "items.*.error.type,items.*.error.reason");
  if (c->pipeline != NULL && c->pipeline[0] != '\0') {
    char *q = lg_http_escape(c->pipeline);
    lg_buf_appendf(&p, "&pipeline=%s", q ? q : "");
    free(q);
  }
  if (lg_buf_putc(&p, '\0') != 0) {
    free(e);
    return -ENOMEM;
  }
  e->path = p.data;
  e->http = lg_out_http_create(o, &c->http, c->api_key, err, errlen);
  if (e->http == NULL) {
    free(e->path);
    free(e);
    return -EINVAL;
  }
  o->impl = e;
  return 0;
}

static void es_cancel(lg_output_t *o) {
  es_t *e = o->impl;
  lg_out_http_cancel(e->http);
}

static void es_close(lg_output_t *o) {
  es_t *e = o->impl;
  lg_out_http_t *h = e->http;
  free(e->path);
  free(e);
  o->impl = NULL;
  lg_out_http_close(h); /* calls lg_output_closed */
}

const lg_output_type_t lg__output_elasticsearch = {
    .name = "elasticsearch",
    .doc = "Indexes records in Elasticsearch or OpenSearch with the _bulk "
           "API (create with the record id as _id: no duplicates).",
    .options = es_options,
    .conf_size = sizeof(es_conf_t),
    .rejects = 1,
    .encode = es_encode,
    .init = es_init,
    .send = es_send,
    .cancel = es_cancel,
    .close = es_close,
};
