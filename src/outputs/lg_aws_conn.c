/* lg_aws_conn: see lg_aws_conn.h. */
#include "outputs/lg_aws_conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* a->region from `region`, else the environment, else us-east-1. */
static void set_region(lg_aws_conn_t *a, const char *region) {
  if (!region || !*region)
    region = getenv("AWS_REGION");
  if (!region || !*region)
    region = getenv("AWS_DEFAULT_REGION");
  if (!region || !*region)
    region = "us-east-1";
  snprintf(a->region, sizeof a->region, "%s", region);
}

int lg_aws_conn_open(lg_aws_conn_t *a, uv_loop_t *loop, const char *output_name,
                     const char *host_prefix, const lg_aws_conn_conf_t *c,
                     char *err, size_t errlen) {
  set_region(a, c->region);
  char base[512];
  if (c->endpoint && *c->endpoint)
    snprintf(base, sizeof base, "%s", c->endpoint);
  else
    snprintf(base, sizeof base, "https://%s.%s.%s", host_prefix, a->region,
             lg_aws_dns_suffix(a->region));
  size_t l = strlen(base);
  while (l > 0 && base[l - 1] == '/')
    base[--l] = '\0';
  const char *h = strstr(base, "://");
  h = h ? h + 3 : base;
  snprintf(a->host, sizeof a->host, "%.*s", (int)strcspn(h, "/"), h);
  char comp[128];
  snprintf(comp, sizeof comp, "output.%s", output_name);
  lg_aws_creds_conf_t cc = {0};
  cc.component = comp;
  cc.access_key_id = c->access_key_id;
  cc.secret_access_key = c->secret_access_key;
  cc.session_token = c->session_token;
  cc.region = a->region;
  char e2[400];
  a->creds = lg_aws_creds_create(loop, &cc, e2, sizeof e2);
  if (!a->creds) {
    snprintf(err, errlen, "outputs.%s: %s", output_name, e2);
    return -EINVAL;
  }
  const char *hosts[] = {base};
  lg_http_client_conf_t hc = {0};
  hc.hosts = hosts;
  hc.nhosts = 1;
  hc.component = comp;
  hc.ca_file = c->ca_file;
  hc.tls_verify = c->tls_verify;
  hc.timeout_ms = c->timeout_ms;
  a->http = lg_http_client_create(loop, &hc, e2, sizeof e2);
  if (!a->http) {
    snprintf(err, errlen, "outputs.%s: %s", output_name, e2);
    lg_aws_creds_close(a->creds, NULL, NULL);
    a->creds = NULL;
    return -EINVAL;
  }
  return 0;
}

#define MAX_EXTRA_HEADERS 4

lg_http_req_t *lg_aws_conn_send(lg_aws_conn_t *a, const lg_aws_conn_req_t *r,
                                lg_http_done_cb done, void *ud, char *why,
                                size_t whylen) {
  if (!a->http) {
    snprintf(why, whylen, "cancelled at shutdown");
    return NULL;
  }
  if (r->nheaders > MAX_EXTRA_HEADERS) {
    snprintf(why, whylen, "too many headers to sign");
    return NULL;
  }
  lg_sigv4_creds_t k;
  if (lg_aws_creds_get(a->creds, &k) != 0) {
    snprintf(why, whylen, "no AWS credentials yet (%s)",
             lg_aws_creds_last_error(a->creds));
    return NULL;
  }
  /* Signed: Content-Type and the caller's headers. Sent: Content-Type
   * through the client, the caller's headers and the signer's. */
  const char *hn[MAX_EXTRA_HEADERS + 1], *hv[MAX_EXTRA_HEADERS + 1];
  size_t nh = 0;
  if (r->content_type) {
    hn[nh] = "Content-Type";
    hv[nh++] = r->content_type;
  }
  for (size_t i = 0; i < r->nheaders; i++) {
    hn[nh] = r->header_names[i];
    hv[nh++] = r->header_values[i];
  }
  lg_sigv4_req_t q = {0};
  q.method = r->method;
  q.host = a->host;
  q.path = r->path;
  q.query = r->query;
  q.nquery = r->nquery;
  q.header_names = hn;
  q.header_values = hv;
  q.nheaders = nh;
  q.body = r->body;
  q.body_len = r->body_len;
  q.region = a->region;
  q.service = r->service;
  q.now = time(NULL);
  q.content_sha256_header = r->content_sha256_header;
  lg_sigv4_signed_t sg;
  if (lg_sigv4_sign(&q, &k, &sg) != 0) {
    snprintf(why, whylen, "signing failed (out of memory)");
    return NULL;
  }
  char extra[MAX_EXTRA_HEADERS][512];
  const char *hdrs[MAX_EXTRA_HEADERS + LG_SIGV4_MAX_OUT_HEADERS];
  size_t n = 0;
  for (size_t i = 0; i < r->nheaders; i++) {
    snprintf(extra[i], sizeof extra[i], "%s: %s", r->header_names[i],
             r->header_values[i]);
    hdrs[n++] = extra[i];
  }
  for (size_t i = 0; i < sg.nheaders; i++)
    hdrs[n++] = sg.headers[i];
  lg_http_req_t *hr =
      lg_http_request(a->http, r->method, sg.target, r->content_type, hdrs, n,
                      r->body, r->body_len, 0, done, ud);
  lg_sigv4_signed_free(&sg);
  if (!hr)
    snprintf(why, whylen, "request could not be started");
  return hr;
}

void lg_aws_conn_cancel(lg_aws_conn_t *a) {
  lg_http_client_t *http = a->http;
  a->http = NULL;
  if (http)
    lg_http_client_close(http, NULL, NULL);
}

static void on_part_closed(void *ud) {
  lg_aws_conn_t *a = ud;
  if (--a->closing_parts > 0)
    return;
  /* `a` is in o->impl: freed here. */
  lg_output_t *o = a->closing;
  free(o->impl);
  o->impl = NULL;
  lg_output_closed(o);
}

void lg_aws_conn_close(lg_aws_conn_t *a, lg_output_t *o) {
  a->closing = o;
  a->closing_parts = 2;
  if (a->http)
    lg_http_client_close(a->http, on_part_closed, a);
  else
    a->closing_parts--;
  a->http = NULL;
  lg_aws_creds_close(a->creds, on_part_closed, a);
}
