/*
 * lg_out_http_common.c - shared by the HTTP output types; see the header.
 */
#include "outputs/lg_out_http_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "core/lg_list.h"

typedef struct call call_t;

struct lg_out_http {
  lg_output_t *o;
  lg_http_client_t *client;
  call_t *calls;     /* in flight */
  int cancelled;     /* the client is closing or closed */
  int client_closed; /* its close callback ran */
  int want_close;    /* the output's close was called */
};

struct call {
  lg_out_http_t *h;
  lg_out_req_t *r;
  lg_buf_t body;
  lg_out_http_answer_fn answer;
  void *ud;
  call_t *prev, *next;
};

int lg_out_check_http_hosts(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->n == 0 || v->n > 64) {
    snprintf(err, errlen, "between 1 and 64 hosts needed, got %zu", v->n);
    return -EINVAL;
  }
  for (size_t i = 0; i < v->n; i++) {
    if (strncmp(v->vals[i], "http://", 7) != 0 &&
        strncmp(v->vals[i], "https://", 8) != 0) {
      snprintf(err, errlen,
               "host %zu, \"%s\", is not an http:// or https:// URL", i + 1,
               v->vals[i]);
      return -EINVAL;
    }
    /* The rest by libcurl's own parser, which the requests go through
     * ("http://" alone passed, then failed every request). */
    CURLU *u = curl_url();
    if (u == NULL) {
      snprintf(err, errlen, "out of memory");
      return -ENOMEM;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, v->vals[i], 0);
    curl_url_cleanup(u);
    if (uc != CURLUE_OK) {
      snprintf(err, errlen, "host %zu, \"%s\": %s", i + 1, v->vals[i],
               curl_url_strerror(uc));
      return -EINVAL;
    }
  }
  return 0;
}

static void call_unlink(call_t *c) { LG_LIST_UNLINK(c->h->calls, c); }

lg_out_http_t *lg_out_http_create(lg_output_t *o, const lg_out_http_opts_t *h,
                                  const char *api_key, char *err,
                                  size_t errlen) {
  char component[256];
  snprintf(component, sizeof component, "output.%s", o->name);
  lg_http_client_conf_t c = {
      .hosts = (const char *const *)h->hosts.v,
      .nhosts = h->hosts.n,
      .component = component,
      .ca_file = h->ca_file,
      .cert_file = h->cert_file,
      .key_file = h->key_file,
      .tls_verify = h->tls_verify,
      .proxy = h->proxy,
      .connect_timeout_ms = h->connect_timeout_ms,
      .timeout_ms = h->timeout_ms,
      .compression =
          h->compression == 1 ? LG_HTTP_COMPRESS_GZIP : LG_HTTP_COMPRESS_NONE,
      .user = h->user,
      .password = h->password,
      .bearer_token_file = h->bearer_token_file,
      .api_key = api_key,
      .header_names = (const char *const *)h->headers.keys,
      .header_values = (const char *const *)h->headers.vals,
      .nheaders = h->headers.n,
  };
  lg_out_http_t *x = calloc(1, sizeof *x);
  if (x == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", o->name);
    return NULL;
  }
  char e[512] = "";
  x->o = o;
  x->client = lg_http_client_create(o->loop, &c, e, sizeof e);
  if (x->client == NULL) {
    snprintf(err, errlen, "outputs.%s: %s", o->name, e);
    free(x);
    return NULL;
  }
  return x;
}

static void body_free(lg_buf_t *b) {
  if (b->cap > 0) /* else borrowed from the payload */
    lg_buf_free(b);
  *b = (lg_buf_t)LG_BUF_INIT;
}

static void on_done(void *ud, lg_http_req_t *hr,
                    const lg_http_response_t *res) {
  call_t *c = ud;
  call_unlink(c);
  if (res->retry_after_ms >= 0)
    lg_out_req_retry_after(c->r, res->retry_after_ms);
  c->answer(c->ud, c->r, hr, res);
  body_free(&c->body);
  free(c);
}

void lg_out_http_send(lg_out_http_t *h, lg_out_req_t *r, const char *method,
                      const char *path, const char *content_type,
                      const char *const *headers, size_t nheaders,
                      lg_buf_t *body, lg_out_http_answer_fn answer, void *ud) {
  call_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    body_free(body);
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  c->h = h;
  c->r = r;
  c->body = *body;
  *body = (lg_buf_t)LG_BUF_INIT;
  c->answer = answer;
  c->ud = ud;
  LG_LIST_PUSH(h->calls, c);
  if (h->cancelled ||
      lg_http_request(h->client, method, path, content_type, headers, nheaders,
                      c->body.data, c->body.len, 1, on_done, c) == NULL) {
    call_unlink(c);
    body_free(&c->body);
    free(c);
    lg_out_req_done(r, LG_OUT_RETRY, "could not start the HTTP request");
  }
}

static void finish_close(lg_out_http_t *h) {
  lg_output_t *o = h->o;
  free(h);
  lg_output_closed(o);
}

static void on_client_closed(void *ud) {
  lg_out_http_t *h = ud;
  h->client_closed = 1;
  if (h->want_close)
    finish_close(h);
}

void lg_out_http_cancel(lg_out_http_t *h) {
  if (h->cancelled)
    return;
  h->cancelled = 1;
  /* Closing the client drops the answers still to come (their callbacks
   * never run), so the requests are ended here. */
  lg_http_client_close(h->client, on_client_closed, h);
  while (h->calls != NULL) {
    call_t *c = h->calls;
    call_unlink(c);
    lg_out_req_done(c->r, LG_OUT_RETRY, "cancelled at shutdown");
    body_free(&c->body);
    free(c);
  }
}

void lg_out_http_close(lg_out_http_t *h) {
  h->want_close = 1;
  if (!h->cancelled) {
    h->cancelled = 1;
    lg_http_client_close(h->client, on_client_closed, h);
  } else if (h->client_closed) {
    finish_close(h);
  }
}

int lg_out_http_body(lg_out_req_t *r, lg_buf_t *body, int borrow) {
  const struct iovec *iov;
  int niov;
  body->len = 0;
  if (lg_out_req_iov(r, &iov, &niov) != 0)
    return -ENOMEM;
  if (borrow && niov == 1 && body->data == NULL) {
    /* One piece: send the payload's bytes where they are (they stay
     * valid until the request is done); cap 0 marks them borrowed. */
    body->data = iov[0].iov_base;
    body->len = iov[0].iov_len;
    body->cap = 0;
    return 0;
  }
  size_t total = 0;
  for (int k = 0; k < niov; k++)
    total += iov[k].iov_len;
  if (lg_buf_reserve(body, total + 1) != 0)
    return -ENOMEM;
  for (int k = 0; k < niov; k++) {
    memcpy(body->data + body->len, iov[k].iov_base, iov[k].iov_len);
    body->len += iov[k].iov_len;
  }
  return 0;
}

int lg_out_record_id(const lg_batch_t *b, uint32_t i, char *buf, size_t cap) {
  int n = lg_batch_rec_id(b, i, buf, cap);
  if (n <= 0)
    return n;
  uint32_t k = 0;
  while (k < i && b->recs[i - k - 1].offset == b->recs[i].offset)
    k++;
  if (k > 0) {
    int m = snprintf(buf + n, cap - (size_t)n, "/%u", k);
    if (m < 0 || (size_t)m >= cap - (size_t)n)
      return -ENOSPC;
    n += m;
  }
  return n;
}

void lg_out_http_quote(char *out, size_t cap, const char *s, size_t len,
                       size_t max) {
  size_t n = strlen(out);
  if (len > max)
    len = max;
  for (size_t k = 0; k < len && n + 1 < cap; k++) {
    unsigned char c = (unsigned char)s[k];
    out[n++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
  }
  if (n < cap)
    out[n] = '\0';
}

lg_out_result_t lg_out_http_classify(const lg_http_response_t *res,
                                     char *reason, size_t cap) {
  if (res->status == 0) {
    snprintf(reason, cap, "%s: %s", res->host, res->error);
    return LG_OUT_RETRY;
  }
  snprintf(reason, cap, "HTTP %d from %s: ", res->status, res->host);
  lg_out_http_quote(reason, cap, res->body, res->body_len, 300);
  int s = res->status;
  if (s >= 200 && s < 300)
    return LG_OUT_DELIVERED;
  if (s == 408 || s == 429 || s >= 500 || s == 401 || s == 403)
    return LG_OUT_RETRY;
  if (s == 413)
    return LG_OUT_SPLIT;
  return LG_OUT_REJECTED;
}
