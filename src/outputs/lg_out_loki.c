/*
 * lg_out_loki.c - the `loki` output: Grafana Loki's push API
 * (docs/sources/reference/loki-http-api.md, "Ingest logs"), JSON body,
 * gzip by default:
 *   POST /loki/api/v1/push
 *   {"streams":[{"stream":{"namespace":"a",...},
 *                "values":[["<unix ns>","<line>",{<structured
 * metadata>}],...]}]}
 *
 * Encoding (worker threads): a record becomes its entry (timestamp from the
 * record's time, encoded once: a retry resends the same timestamp, which
 * Loki deduplicates, instead of a new one it would store twice) in data,
 * and its stream's label set in meta. At send, entries are grouped by label
 * set in record order, so a stream's entries go in order.
 *
 * Streams are never in two requests at once: this output sends one request
 * at a time (max_in_flight is 1), so a retried request is sent again before
 * anything newer of its streams; an entry that arrives after newer ones of
 * its stream is what Loki rejects as "too far behind".
 *
 * Answers: 204 (any 2xx but 260) delivered; 260 (ingestion blocked, a 2xx
 * in name only) retried; 400 is a partial success: Loki stored the valid
 * entries and names the rejected ones (by timestamp and stream), which go
 * to the dead-letter output with Loki's message; a 400 is never retried.
 * 413 splits; 429 and 5xx retry.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/lg_json.h"
#include "core/lg_log.h"
#include "core/lg_time.h"
#include "outputs/lg_out_http_common.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_record_json.h"

typedef struct loki_conf {
  lg_out_limits_t limits;
  lg_out_http_opts_t http;
  lg_opt_strmap_t labels; /* label name -> record field */
  lg_opt_strmap_t static_labels;
  lg_opt_strv_t structured_metadata; /* record fields */
  int line;                          /* 0 json, 1 body */
  char *tenant;
  char *path;
  /* Set by init (before any worker encodes): the sanitised label names. */
  char **label_names;
  char **label_fields;
  size_t nlabels;
} loki_conf_t;

typedef struct loki {
  loki_conf_t *conf;
  lg_out_http_t *http;
  char *tenant_header;
} loki_t;

static const char *const default_labels[][2] = {
    {"namespace", "k8s.namespace.name"},
    {"pod", "k8s.pod.name"},
    {"container", "k8s.container.name"},
    {"node", "k8s.node.name"},
};

static const lg_option_t loki_options[] = {
    LG_OUT_HTTP_OPTIONS(loki_conf_t,
                        "Base URLs of Loki (or its gateway), "
                        "\"http://loki-gateway\".",
                        "gzip"),
    {.name = "labels",
     .type = LG_OPT_STRMAP,
     .doc = "Stream labels: label name -> record field (default: namespace, "
            "pod, container, node from k8s.*); names are sanitised to "
            "[a-zA-Z_][a-zA-Z0-9_]*; a record without the field has no "
            "such label.",
     .offset = offsetof(loki_conf_t, labels)},
    {.name = "static_labels",
     .type = LG_OPT_STRMAP,
     .doc = "Labels with a fixed value on every stream (cluster = \"prod\").",
     .offset = offsetof(loki_conf_t, static_labels)},
    {.name = "structured_metadata",
     .type = LG_OPT_STRLIST,
     .doc = "Record fields sent as structured metadata of each entry (high "
            "cardinality values such as k8s.pod.uid belong here, not in "
            "labels).",
     .offset = offsetof(loki_conf_t, structured_metadata)},
    {.name = "line",
     .type = LG_OPT_ENUM,
     .def = "json",
     .choices = "json|body",
     .doc = "The log line: the record as JSON, or its body only.",
     .offset = offsetof(loki_conf_t, line)},
    {.name = "tenant",
     .type = LG_OPT_STRING,
     .doc = "Tenant (X-Scope-OrgID) for multi-tenant Loki.",
     .offset = offsetof(loki_conf_t, tenant)},
    {.name = "path",
     .type = LG_OPT_STRING,
     .def = "/loki/api/v1/push",
     .doc = "Path of the push API under each host.",
     .offset = offsetof(loki_conf_t, path)},
    LG_OUT_DELIVERY_OPTIONS(loki_conf_t, "2000", "1MiB", "1s", "1", "0"),
    {.name = NULL},
};

/* ---- encoding (worker threads) ------------------------------------------ */

static int append_value_text(lg_buf_t *d, const lg_batch_t *b, uint32_t i,
                             const char *field, int *found) {
  lg_ffi_val_t v;
  int t = b != NULL ? lg_ffi_rec_get(b, i, field, strlen(field), &v) : 0;
  char num[40];
  *found = 1;
  switch (t) {
  case LG_VAL_STR:
  case LG_VAL_JSON:
    return lg_json_append_string(d, v.s, v.len);
  case LG_VAL_INT:
  case LG_VAL_BOOL:
    snprintf(num, sizeof num, "%lld", (long long)v.i);
    return lg_json_append_string(d, num, strlen(num));
  case LG_VAL_NUM:
    snprintf(num, sizeof num, "%.17g", v.d);
    return lg_json_append_string(d, num, strlen(num));
  default:
    *found = 0;
    return 0;
  }
}

/* meta: the stream's labels as a JSON object, names sorted as configured
 * (init sorts them), so equal label sets are equal bytes. */
static int encode_labels(const loki_conf_t *c, const lg_batch_t *b, uint32_t i,
                         lg_buf_t *m) {
  size_t start = m->len;
  int rc = lg_buf_putc(m, '{');
  int any = 0;
  for (size_t k = 0; rc == 0 && k < c->nlabels; k++) {
    size_t mark = m->len;
    rc = lg_buf_appendf(m, "%s\"%s\":", any ? "," : "", c->label_names[k]);
    int found = 0;
    if (rc == 0) {
      if (c->label_fields[k][0] == '=') /* a static label */
        rc = lg_json_append_string(m, c->label_fields[k] + 1,
                                   strlen(c->label_fields[k] + 1)),
        found = 1;
      else
        rc = append_value_text(m, b, i, c->label_fields[k], &found);
    }
    if (!found)
      m->len = mark;
    else
      any = 1;
  }
  if (rc == 0 && !any) /* Loki needs at least one label */
    rc = lg_buf_append(m, "\"job\":\"lugger\"", 14);
  if (rc == 0)
    rc = lg_buf_putc(m, '}');
  if (rc != 0)
    m->len = start;
  return rc;
}

static int loki_encode(const void *vconf, const lg_batch_t *b, uint32_t i,
                       const char *error, lg_payload_t *out) {
  const loki_conf_t *c = vconf;
  lg_buf_t *d = &out->data;
  size_t start = d->len, mstart = out->meta.len;
  int64_t t = b != NULL ? b->recs[i].time_ns : lg_time_now_ns();
  int rc = lg_buf_appendf(d, "[\"%lld\",", (long long)t);
  if (rc == 0)
    rc = lg_json_append_record_string(d, b, i, c->line == 1, error);
  if (rc == 0 && c->structured_metadata.n > 0) {
    rc = lg_buf_append(d, ",{", 2);
    int any = 0;
    for (size_t k = 0; rc == 0 && k < c->structured_metadata.n; k++) {
      const char *f = c->structured_metadata.v[k];
      size_t mark = d->len;
      rc = lg_buf_appendf(d, "%s", any ? "," : "");
      if (rc == 0)
        rc = lg_json_append_string(d, f, strlen(f));
      if (rc == 0)
        rc = lg_buf_putc(d, ':');
      int found = 0;
      if (rc == 0)
        rc = append_value_text(d, b, i, f, &found);
      if (!found)
        d->len = mark;
      else
        any = 1;
    }
    if (rc == 0)
      rc = lg_buf_putc(d, '}');
  }
  if (rc == 0)
    rc = lg_buf_putc(d, ']');
  if (rc == 0)
    rc = encode_labels(c, b, i, &out->meta);
  if (rc != 0) {
    d->len = start;
    out->meta.len = mstart;
  }
  return rc;
}

/* ---- the request (loop thread) ---------------------------------------------
 */

typedef struct stream {
  const char *labels;
  uint32_t len;
  uint32_t first, last; /* records: chained through next[] */
} stream_t;

/* Builds {"streams":[...]} with each label set once and its entries in
 * record order. */
/* Records submitted as JSON text (lg_output_submit_text: tests and tools,
 * no batch behind them) were not encoded: their entry (now, the text as the
 * line) and label set ({"job":"lugger"}) are made here, into `conv`, and
 * `out` is a copy of the request's records pointing there. */
static int convert_text(const lg_out_rec_t *recs, uint32_t n, lg_out_rec_t *out,
                        lg_buf_t *conv) {
  static const char job[] = "{\"job\":\"lugger\"}";
  size_t *off = calloc(n, sizeof *off);
  int rc = off != NULL ? 0 : -ENOMEM;
  int64_t now = lg_time_now_ns();
  for (uint32_t j = 0; rc == 0 && j < n; j++) {
    out[j] = recs[j];
    if (recs[j].batch != NULL)
      continue;
    off[j] = conv->len;
    size_t len = recs[j].len;
    if (len > 0 && recs[j].data[len - 1] == '\n')
      len--;
    rc = lg_buf_appendf(conv, "[\"%lld\",", (long long)now);
    if (rc == 0)
      rc = lg_json_append_string(conv, recs[j].data, len);
    if (rc == 0)
      rc = lg_buf_putc(conv, ']');
    out[j].len = (uint32_t)(conv->len - off[j]);
    out[j].meta = job;
    out[j].meta_len = sizeof job - 1;
  }
  for (uint32_t j = 0; rc == 0 && j < n; j++)
    if (recs[j].batch == NULL)
      out[j].data = conv->data + off[j];
  free(off);
  return rc;
}

static int build_body(lg_out_req_t *r, lg_buf_t *body) {
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  lg_out_rec_t *conv_recs = NULL;
  lg_buf_t conv = LG_BUF_INIT;
  for (uint32_t j = 0; j < r->n; j++)
    if (recs[j].batch == NULL) {
      conv_recs = malloc(sizeof *conv_recs * r->n);
      if (conv_recs == NULL ||
          convert_text(recs, r->n, conv_recs, &conv) != 0) {
        free(conv_recs);
        lg_buf_free(&conv);
        return -ENOMEM;
      }
      recs = conv_recs;
      break;
    }
  uint32_t *next = malloc(sizeof *next * r->n);
  stream_t *st = malloc(sizeof *st * r->n);
  uint32_t ns = 0;
  int rc = next && st ? 0 : -ENOMEM;
  for (uint32_t j = 0; rc == 0 && j < r->n; j++) {
    next[j] = UINT32_MAX;
    uint32_t s = 0;
    /* Few streams per request (one source's records share labels): a
     * linear search over the label sets seen, most recent first. */
    for (s = ns; s-- > 0;)
      if (st[s].len == recs[j].meta_len &&
          memcmp(st[s].labels, recs[j].meta, recs[j].meta_len) == 0)
        break;
    if (s == UINT32_MAX) {
      st[ns] = (stream_t){recs[j].meta, recs[j].meta_len, j, j};
      ns++;
    } else {
      next[st[s].last] = j;
      st[s].last = j;
    }
  }
  body->len = 0;
  if (rc == 0)
    rc = lg_buf_reserve(body, r->bytes + ns * 64 + 32);
  if (rc == 0)
    rc = lg_buf_append(body, "{\"streams\":[", 12);
  for (uint32_t s = 0; rc == 0 && s < ns; s++) {
    rc = lg_buf_appendf(body, "%s{\"stream\":%.*s,\"values\":[", s ? "," : "",
                        (int)st[s].len, st[s].labels);
    for (uint32_t j = st[s].first; rc == 0 && j != UINT32_MAX; j = next[j]) {
      if (j != st[s].first)
        rc = lg_buf_putc(body, ',');
      if (rc == 0)
        rc = lg_buf_append(body, recs[j].data, recs[j].len);
    }
    if (rc == 0)
      rc = lg_buf_append(body, "]}", 2);
  }
  if (rc == 0)
    rc = lg_buf_append(body, "]}", 2);
  free(next);
  free(st);
  free(conv_recs);
  lg_buf_free(&conv);
  return rc;
}

/* Go's time.Time.String() in UTC, as Loki prints entry timestamps in its
 * errors: "2024-05-01 12:00:00.123456789 +0000 UTC", fraction trimmed. */
static void go_time(int64_t ns, char *out, size_t cap) {
  time_t sec = (time_t)(ns / 1000000000);
  long frac = (long)(ns % 1000000000);
  struct tm tm;
  gmtime_r(&sec, &tm);
  size_t n = strftime(out, cap, "%Y-%m-%d %H:%M:%S", &tm);
  if (frac) {
    char f[16];
    snprintf(f, sizeof f, ".%09ld", frac);
    size_t l = strlen(f);
    while (f[l - 1] == '0')
      f[--l] = '\0';
    snprintf(out + n, cap - n, "%s", f);
    n += l;
  }
  snprintf(out + n, cap - n, " +0000 UTC");
}

/* Whether every label pair of `labels` ({"a":"b",...}, our JSON) appears in
 * Loki's text as a="b". Label values are compared as JSON-escaped text,
 * which is what Go's strconv.Quote gives for plain ASCII values. */
static int labels_in(const char *labels, uint32_t len, const char *text) {
  const char *p = labels + 1, *end = labels + len - 1;
  while (p < end) {
    const char *colon = memchr(p, ':', (size_t)(end - p));
    if (colon == NULL)
      return 1;
    const char *v = colon + 1;
    const char *ve = v + 1;
    while (ve < end && *ve != '"')
      ve += *ve == '\\' ? 2 : 1;
    ve++;
    char pair[1024];
    int n = snprintf(pair, sizeof pair, "%.*s=%.*s", (int)(colon - p - 2),
                     p + 1, (int)(ve - v), v);
    if (n > 0 && (size_t)n < sizeof pair && strstr(text, pair) == NULL)
      return 0;
    p = ve + 1;
  }
  return 1;
}

/* Bytes of the line a JSON string decodes to (`p` at its opening
 * quote), as Loki measures an entry against max_line_size. */
static size_t decoded_len(const char *p, const char *end) {
  size_t n = 0;
  for (p++; p < end && *p != '"'; p++, n++) {
    if (*p != '\\')
      continue;
    p++;
    if (p < end && *p == 'u' && end - p >= 5) {
      unsigned cp =
          (unsigned)strtoul((char[5]){p[1], p[2], p[3], p[4], 0}, NULL, 16);
      p += 4;
      if (cp >= 0xd800 && cp < 0xdc00) { /* a surrogate pair: 4 bytes */
        n += 3;
        p += 6;
      } else {
        n += cp < 0x80 ? 0 : cp < 0x800 ? 1 : 2;
      }
    }
  }
  return n;
}

/* Whether an "entry ... with length 'N' bytes" error names record j. */
static int length_named(const char *text, const lg_out_rec_t *rec) {
  const char *data = rec->data, *end = rec->data + rec->len;
  const char *q = memchr(data + 2, '"', (size_t)(end - data - 2)); /* ts end */
  if (q == NULL || q + 2 >= end)
    return 0;
  char pat[64];
  snprintf(pat, sizeof pat, "with length '%zu' bytes", decoded_len(q + 2, end));
  for (const char *h = strstr(text, pat); h != NULL; h = strstr(h + 1, pat)) {
    /* The line of the error that ends here. */
    const char *bol = h;
    while (bol > text && bol[-1] != '\n')
      bol--;
    size_t l = (size_t)(h - bol) + strlen(pat);
    char *line = strndup(bol, l);
    int ok = line != NULL && labels_in(rec->meta, rec->meta_len, line);
    free(line);
    if (ok)
      return 1;
  }
  return 0;
}

/* A 400: Loki stored the valid entries and lists the others. */
static void answer_400(lg_out_req_t *r, const lg_http_response_t *res) {
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  char reason[1024];
  snprintf(reason, sizeof reason, "loki %s: ", res->host);
  lg_out_http_quote(reason, sizeof reason, res->body, res->body_len, 600);
  uint32_t matched = 0;
  for (uint32_t j = 0; j < r->n; j++) {
    char ts[64];
    long long t = atoll(recs[j].data + 2); /* ["<ns>", */
    go_time(t, ts, sizeof ts);
    const char *hit = strstr(res->body, ts);
    int named = hit != NULL && labels_in(recs[j].meta, recs[j].meta_len, hit);
    /* Stream-level errors (label names, label count) name no timestamp. */
    if (!named && strstr(res->body, "Max entry size") != NULL)
      named = length_named(res->body, &recs[j]);
    if (!named && (strstr(res->body, "label names;") != NULL ||
                   strstr(res->body, "Error parsing labels") != NULL ||
                   strstr(res->body, "at least one label pair") != NULL))
      named = labels_in(recs[j].meta, recs[j].meta_len, res->body);
    if (named) {
      lg_out_req_set(r, j, LG_OUT_REJECTED, reason);
      matched++;
    }
  }
  if (matched == 0) {
    /* The answer names none of our entries: which ones Loki dropped is
     * unknown, so all go to the dead-letter output (some were stored). */
    lg_out_req_done(r, LG_OUT_REJECTED, reason);
    return;
  }
  lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
}

static void loki_answer(void *ud, lg_out_req_t *r, lg_http_req_t *hr,
                        const lg_http_response_t *res) {
  char reason[1024];
  if (res->status == 400) {
    answer_400(r, res);
    return;
  }
  lg_out_result_t k = lg_out_http_classify(res, reason, sizeof reason);
  if (res->status == 260)
    k = LG_OUT_RETRY; /* ingestion blocked: nothing was stored */
  if (res->status == 0 || res->status == 503)
    lg_http_req_host_failed(hr);
  lg_out_req_done(r, k, k == LG_OUT_DELIVERED ? NULL : reason);
}

static void loki_send(lg_output_t *o, lg_out_req_t *r) {
  loki_t *l = o->impl;
  lg_buf_t body = LG_BUF_INIT;
  if (build_body(r, &body) != 0) {
    lg_buf_free(&body);
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  const char *hdrs[1] = {l->tenant_header};
  lg_out_http_send(l->http, r, "POST", l->conf->path, "application/json", hdrs,
                   l->tenant_header ? 1 : 0, &body, loki_answer, l);
}

/* ---- lifecycle ------------------------------------------------------------
 */

/* Loki label names: [a-zA-Z_][a-zA-Z0-9_]* (Prometheus'); anything else
 * becomes '_' ("app.kubernetes.io/name" -> "app_kubernetes_io_name"). */
static char *sanitise(const char *s) {
  size_t n = strlen(s);
  char *o = malloc(n + 2), *p = o;
  if (o == NULL)
    return NULL;
  if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
    *p++ = '_';
  for (size_t k = 0; k < n; k++) {
    char c = s[k];
    *p++ = (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9'))
               ? c
               : '_';
  }
  *p = '\0';
  return o;
}

static int add_label(loki_conf_t *c, const char *name, const char *field,
                     int is_static) {
  char *n = sanitise(name);
  char *f = malloc(strlen(field) + 2);
  if (n == NULL || f == NULL) {
    free(n);
    free(f);
    return -ENOMEM;
  }
  snprintf(f, strlen(field) + 2, "%s%s", is_static ? "=" : "", field);
  /* Sorted insert by name: equal label sets are equal bytes. */
  size_t k = c->nlabels;
  while (k > 0 && strcmp(c->label_names[k - 1], n) > 0) {
    c->label_names[k] = c->label_names[k - 1];
    c->label_fields[k] = c->label_fields[k - 1];
    k--;
  }
  c->label_names[k] = n;
  c->label_fields[k] = f;
  c->nlabels++;
  return 0;
}

static void free_labels(loki_conf_t *c) {
  for (size_t k = 0; k < c->nlabels; k++) {
    free(c->label_names[k]);
    free(c->label_fields[k]);
  }
  free(c->label_names);
  free(c->label_fields);
  c->label_names = c->label_fields = NULL;
  c->nlabels = 0;
}

/* Fills c's label table (sanitised names, sorted; their fields): the
 * defaults when `labels` is unset, then `labels` and `static_labels`.
 * -EINVAL with a message for two labels of one name, -ENOMEM. */
static int build_labels(loki_conf_t *c, const char *name, char *err,
                        size_t errlen) {
  size_t cap = c->labels.n + c->static_labels.n + 4;
  c->nlabels = 0;
  c->label_names = calloc(cap, sizeof(char *));
  c->label_fields = calloc(cap, sizeof(char *));
  int rc = c->label_names && c->label_fields ? 0 : -ENOMEM;
  if (c->labels.n == 0)
    for (size_t k = 0; rc == 0 && k < 4; k++)
      rc = add_label(c, default_labels[k][0], default_labels[k][1], 0);
  for (size_t k = 0; rc == 0 && k < c->labels.n; k++)
    rc = add_label(c, c->labels.keys[k], c->labels.vals[k], 0);
  for (size_t k = 0; rc == 0 && k < c->static_labels.n; k++)
    rc = add_label(c, c->static_labels.keys[k], c->static_labels.vals[k], 1);
  for (size_t k = 1; rc == 0 && k < c->nlabels; k++)
    if (strcmp(c->label_names[k - 1], c->label_names[k]) == 0) {
      snprintf(err, errlen, "outputs.%s.labels: two labels named \"%s\"", name,
               c->label_names[k]);
      rc = -EINVAL;
    }
  if (rc != 0)
    free_labels(c);
  return rc;
}

/* lg_output_type_t.check: max_in_flight, and labels that are one name once
 * sanitised (built on a copy of the conf, then freed). */
static int loki_check(const char *name, const void *vconf, char *err,
                      size_t errlen) {
  const loki_conf_t *c = vconf;
  if (c->limits.max_in_flight != 1) {
    snprintf(err, errlen,
             "outputs.%s.max_in_flight: must be 1 for loki (a stream's "
             "entries are never in two requests at once)",
             name);
    return -EINVAL;
  }
  loki_conf_t tmp = *c;
  int rc = build_labels(&tmp, name, err, errlen);
  if (rc == 0)
    free_labels(&tmp);
  return rc;
}

static int loki_init(lg_output_t *o, const void *vconf, char *err,
                     size_t errlen) {
  /* init runs before any worker encodes with this config, so the label
   * table it derives can live in the config the encoder is given. */
  loki_conf_t *c = (loki_conf_t *)vconf;
  int rc = build_labels(c, o->name, err, errlen);
  if (rc != 0)
    return rc;
  loki_t *l = calloc(1, sizeof *l);
  if (l == NULL) {
    free_labels(c);
    return -ENOMEM;
  }
  l->conf = c;
  if (c->tenant != NULL && c->tenant[0] != '\0') {
    lg_buf_t h = LG_BUF_INIT;
    lg_buf_appendf(&h, "X-Scope-OrgID: %s", c->tenant);
    l->tenant_header = h.data;
  }
  l->http = lg_out_http_create(o, &c->http, NULL, err, errlen);
  if (l->http == NULL) {
    free(l->tenant_header);
    free(l);
    free_labels(c);
    return -EINVAL;
  }
  o->impl = l;
  return 0;
}

static void loki_cancel(lg_output_t *o) {
  loki_t *l = o->impl;
  lg_out_http_cancel(l->http);
}

static void loki_close(lg_output_t *o) {
  loki_t *l = o->impl;
  lg_out_http_t *h = l->http;
  free_labels(l->conf);
  free(l->tenant_header);
  free(l);
  o->impl = NULL;
  lg_out_http_close(h);
}

const lg_output_type_t lg__output_loki = {
    .name = "loki",
    .doc = "Pushes records to Grafana Loki (push API, JSON, gzip); "
           "entries Loki rejects go to the dead-letter output.",
    .options = loki_options,
    .conf_size = sizeof(loki_conf_t),
    .rejects = 1,
    .encode = loki_encode,
    .check = loki_check,
    .init = loki_init,
    .send = loki_send,
    .cancel = loki_cancel,
    .close = loki_close,
};
