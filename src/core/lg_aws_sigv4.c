/*
 * lg_aws_sigv4.c - AWS Signature Version 4 (see lg_aws_sigv4.h for why
 * lugger signs itself rather than through libcurl's CURLOPT_AWS_SIGV4).
 */
#include "core/lg_aws_sigv4.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_buf.h"

static const char HEX[] = "0123456789abcdef";

static void to_hex(const unsigned char *d, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = HEX[d[i] >> 4];
    out[2 * i + 1] = HEX[d[i] & 15];
  }
  out[2 * n] = '\0';
}

void lg_sigv4_sha256_hex(const void *data, size_t len, char hex[65]) {
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
  to_hex(md, 32, hex);
}

static void hmac(const void *key, size_t keylen, const char *msg, size_t len,
                 unsigned char out[32]) {
  unsigned int outlen = 32;
  HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, len, out,
       &outlen);
}

char *lg_sigv4_uri_encode(const char *s, size_t len, int keep_slash) {
  char *out = malloc(len * 3 + 1);
  if (!out)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
        (keep_slash && c == '/')) {
      out[o++] = (char)c;
    } else {
      out[o++] = '%';
      out[o++] = "0123456789ABCDEF"[c >> 4];
      out[o++] = "0123456789ABCDEF"[c & 15];
    }
  }
  out[o] = '\0';
  return out;
}

/* An encoded query pair or a canonical header, sortable. */
typedef struct kv {
  char *k, *v;
} kv_t;

static int kv_cmp(const void *a, const void *b) {
  const kv_t *x = a, *y = b;
  int c = strcmp(x->k, y->k);
  return c != 0 ? c : strcmp(x->v, y->v);
}

/* Header names sort by name only (values of one name stay in the order
 * given, see the insertion sort below). */
static int kv_cmp_name(const void *a, const void *b) {
  const kv_t *x = a, *y = b;
  return strcmp(x->k, y->k);
}

static void kv_free(kv_t *a, size_t n) {
  for (size_t i = 0; a && i < n; i++) {
    free(a[i].k);
    free(a[i].v);
  }
  free(a);
}

/* Lower-cases a header name. */
static char *lower_dup(const char *s) {
  char *d = strdup(s);
  for (char *p = d; p && *p; p++)
    *p = (char)tolower((unsigned char)*p);
  return d;
}

/* Trims a header value and folds runs of spaces to one (the spec's
 * "Trimall"), for the canonical form only. */
static char *trimall_dup(const char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
    n--;
  char *d = malloc(n + 1);
  if (!d)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i] == '\t' ? ' ' : s[i];
    if (c == ' ' && o > 0 && d[o - 1] == ' ')
      continue;
    d[o++] = c;
  }
  d[o] = '\0';
  return d;
}

static char *buf_take(lg_buf_t *b) {
  if (lg_buf_putc(b, '\0') != 0) {
    lg_buf_free(b);
    return NULL;
  }
  char *s = b->data;
  b->data = NULL;
  b->len = b->cap = 0;
  return s;
}

void lg_sigv4_signed_free(lg_sigv4_signed_t *s) {
  if (!s)
    return;
  free(s->target);
  s->target = NULL;
  for (size_t i = 0; i < s->nheaders; i++) {
    free(s->headers[i]);
    s->headers[i] = NULL;
  }
  s->nheaders = 0;
  free(s->canonical_request);
  s->canonical_request = NULL;
}

int lg_sigv4_sign(const lg_sigv4_req_t *req, const lg_sigv4_creds_t *creds,
                  lg_sigv4_signed_t *out) {
  memset(out, 0, sizeof *out);
  if (!req || !creds || !req->method || !*req->method || !req->host ||
      !*req->host || !req->path || req->path[0] != '/' || !req->region ||
      !*req->region || !req->service || !*req->service ||
      !creds->access_key_id || !*creds->access_key_id ||
      !creds->secret_access_key || !*creds->secret_access_key) {
    errno = EINVAL;
    return -1;
  }
  int rc = -1;
  kv_t *q = NULL, *h = NULL;
  size_t nq = 0, nh = 0;
  lg_buf_t cr = LG_BUF_INIT, sh = LG_BUF_INIT, b = LG_BUF_INIT;
  char *path = NULL;

  /* Time: x-amz-date "YYYYMMDDTHHMMSSZ" and the scope's date. */
  char amzdate[17], day[9];
  struct tm tm;
  gmtime_r(&req->now, &tm);
  strftime(amzdate, sizeof amzdate, "%Y%m%dT%H%M%SZ", &tm);
  memcpy(day, amzdate, 8);
  day[8] = '\0';

  char payload[65];
  if (req->payload_sha256) {
    snprintf(payload, sizeof payload, "%s", req->payload_sha256);
  } else {
    lg_sigv4_sha256_hex(req->body ? req->body : "", req->body_len, payload);
  }
  int token = creds->session_token && *creds->session_token;

  /* Canonical query: each name and value encoded, then sorted by name and
   * value (the spec sorts encoded names by code point). */
  q = calloc(req->nquery ? req->nquery : 1, sizeof *q);
  if (!q)
    goto oom;
  for (; nq < req->nquery; nq++) {
    const lg_sigv4_param_t *p = &req->query[nq];
    q[nq].k = lg_sigv4_uri_encode(p->name, strlen(p->name), 0);
    q[nq].v = lg_sigv4_uri_encode(p->value ? p->value : "",
                                  p->value ? strlen(p->value) : 0, 0);
    if (!q[nq].k || !q[nq].v) {
      nq++;
      goto oom;
    }
  }
  qsort(q, nq, sizeof *q, kv_cmp);

  /* Canonical headers: the caller's, host, x-amz-date, and the ones
   * added here; lower-case names, sorted, values of a repeated name
   * joined with ',' in the order given. */
  size_t cap = req->nheaders + 4;
  h = calloc(cap, sizeof *h);
  if (!h)
    goto oom;
  const char *names[4], *values[4];
  size_t nadd = 0;
  names[nadd] = "host", values[nadd++] = req->host;
  names[nadd] = "x-amz-date", values[nadd++] = amzdate;
  if (req->content_sha256_header)
    names[nadd] = "x-amz-content-sha256", values[nadd++] = payload;
  if (token)
    names[nadd] = "x-amz-security-token", values[nadd++] = creds->session_token;
  for (size_t i = 0; i < req->nheaders + nadd; i++) {
    const char *n =
        i < req->nheaders ? req->header_names[i] : names[i - req->nheaders];
    const char *v =
        i < req->nheaders ? req->header_values[i] : values[i - req->nheaders];
    h[nh].k = lower_dup(n);
    h[nh].v = trimall_dup(v ? v : "");
    nh++;
    if (!h[nh - 1].k || !h[nh - 1].v)
      goto oom;
  }
  /* Insertion sort by name: stable, so repeated names keep their order
   * (few headers; qsort is not stable). */
  for (size_t i = 1; i < nh; i++) {
    kv_t t = h[i];
    size_t j = i;
    while (j > 0 && kv_cmp_name(&h[j - 1], &t) > 0) {
      h[j] = h[j - 1];
      j--;
    }
    h[j] = t;
  }

  path = lg_sigv4_uri_encode(req->path, strlen(req->path), 1);
  if (!path)
    goto oom;

  /* The canonical request. */
  int e = 0;
  e |= lg_buf_appendf(&cr, "%s\n%s\n", req->method, path);
  for (size_t i = 0; i < nq; i++)
    e |= lg_buf_appendf(&cr, "%s%s=%s", i ? "&" : "", q[i].k, q[i].v);
  e |= lg_buf_putc(&cr, '\n');
  for (size_t i = 0; i < nh; i++) {
    int same_as_prev = i > 0 && strcmp(h[i].k, h[i - 1].k) == 0;
    if (same_as_prev) {
      /* Replace the newline of the previous value with ",value\n". */
      cr.len--;
      e |= lg_buf_appendf(&cr, ",%s\n", h[i].v);
    } else {
      e |= lg_buf_appendf(&cr, "%s:%s\n", h[i].k, h[i].v);
      e |= lg_buf_appendf(&sh, "%s%s", sh.len ? ";" : "", h[i].k);
    }
  }
  e |= lg_buf_putc(&sh, '\0');
  if (e)
    goto oom;
  e |= lg_buf_appendf(&cr, "\n%s\n%s", sh.data, payload);
  if (e)
    goto oom;

  char crhash[65];
  lg_sigv4_sha256_hex(cr.data, cr.len, crhash);

  /* String to sign and signing key. */
  char scope[160];
  int sl = snprintf(scope, sizeof scope, "%s/%s/%s/aws4_request", day,
                    req->region, req->service);
  if (sl < 0 || (size_t)sl >= sizeof scope) {
    errno = EINVAL;
    goto out;
  }
  if (lg_buf_appendf(&b, "AWS4-HMAC-SHA256\n%s\n%s\n%s", amzdate, scope,
                     crhash) != 0)
    goto oom;
  size_t klen = strlen(creds->secret_access_key) + 5;
  char *k0 = malloc(klen);
  if (!k0)
    goto oom;
  snprintf(k0, klen, "AWS4%s", creds->secret_access_key);
  unsigned char kd[32], kr[32], ks[32], kk[32], sig[32];
  hmac(k0, klen - 1, day, 8, kd);
  free(k0);
  hmac(kd, 32, req->region, strlen(req->region), kr);
  hmac(kr, 32, req->service, strlen(req->service), ks);
  hmac(ks, 32, "aws4_request", 12, kk);
  hmac(kk, 32, b.data, b.len, sig);
  to_hex(sig, 32, out->signature);
  b.len = 0;

  /* What the caller sends. */
  e = lg_buf_appendf(&b, "%s", path);
  for (size_t i = 0; i < nq; i++)
    e |= lg_buf_appendf(&b, "%c%s=%s", i ? '&' : '?', q[i].k, q[i].v);
  if (e || !(out->target = buf_take(&b)))
    goto oom;
  out->canonical_request = buf_take(&cr);
  if (!out->canonical_request)
    goto oom;
  char *hd[LG_SIGV4_MAX_OUT_HEADERS];
  size_t nhd = 0;
  if (asprintf(&hd[nhd], "X-Amz-Date: %s", amzdate) < 0)
    goto oom;
  out->headers[out->nheaders++] = hd[nhd];
  if (req->content_sha256_header) {
    if (asprintf(&hd[nhd], "X-Amz-Content-Sha256: %s", payload) < 0)
      goto oom;
    out->headers[out->nheaders++] = hd[nhd];
  }
  if (token) {
    if (asprintf(&hd[nhd], "X-Amz-Security-Token: %s", creds->session_token) <
        0)
      goto oom;
    out->headers[out->nheaders++] = hd[nhd];
  }
  if (asprintf(&hd[nhd],
               "Authorization: AWS4-HMAC-SHA256 Credential=%s/%s, "
               "SignedHeaders=%s, Signature=%s",
               creds->access_key_id, scope, sh.data, out->signature) < 0)
    goto oom;
  out->headers[out->nheaders++] = hd[nhd];
  rc = 0;
  goto out;
oom:
  errno = ENOMEM;
out:
  if (rc != 0)
    lg_sigv4_signed_free(out);
  kv_free(q, nq);
  kv_free(h, nh);
  free(path);
  lg_buf_free(&cr);
  lg_buf_free(&sh);
  lg_buf_free(&b);
  return rc;
}
