/*
 * lg_http_request.c - one request of the HTTP client: the headers and
 * libcurl options it is sent with (TLS, proxy, timeouts, authentication,
 * a gzip body), the answer's body and headers as libcurl hands them over,
 * and the lg_http_response_t its callback gets. Which host it goes to and
 * when it runs are lg_http_client.c's.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "core/lg_buf.h"
#include "core/lg_http_client_internal.h"
#include "core/lg_log.h"

/* ---- gzip and Retry-After -------------------------------------------- */

void *lg_http_gzip(const void *data, size_t len, size_t *outlen) {
  z_stream z;
  memset(&z, 0, sizeof z);
  /* 15 + 16: a gzip header and trailer instead of zlib's (RFC 1952). */
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return NULL;
  size_t cap = deflateBound(&z, (uLong)len) + 32;
  unsigned char *out = malloc(cap);
  if (out == NULL) {
    deflateEnd(&z);
    return NULL;
  }
  /* zlib counts in uInt; feed big inputs in slices. */
  const unsigned char *in = data;
  size_t left = len;
  int rc;
  z.next_out = out;
  z.avail_out = (uInt)(cap > UINT32_MAX ? UINT32_MAX : cap);
  do {
    size_t n = left > (1u << 30) ? (1u << 30) : left;
    z.next_in = (unsigned char *)in;
    z.avail_in = (uInt)n;
    in += n;
    left -= n;
    rc = deflate(&z, left == 0 ? Z_FINISH : Z_NO_FLUSH);
  } while (left > 0 && rc == Z_OK);
  if (rc != Z_STREAM_END) {
    deflateEnd(&z);
    free(out);
    errno = ENOMEM;
    return NULL;
  }
  *outlen = z.total_out;
  deflateEnd(&z);
  return out;
}

char *lg_http_escape(const char *s) {
  lg__http_global_init();
  char *e = curl_easy_escape(NULL, s, 0);
  char *out = e != NULL ? strdup(e) : NULL;
  curl_free(e);
  return out;
}

int64_t lg_http_parse_retry_after(const char *v, int64_t now_s) {
  if (v == NULL)
    return -1;
  while (*v == ' ' || *v == '\t')
    v++;
  if (*v >= '0' && *v <= '9') {
    char *end;
    long long s = strtoll(v, &end, 10);
    while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
      end++;
    if (*end != '\0' || s < 0 || s > 86400 * 365)
      return -1;
    return (int64_t)s * 1000;
  }
  time_t t = curl_getdate(v, NULL);
  if (t == (time_t)-1)
    return -1;
  return t > now_s ? ((int64_t)t - now_s) * 1000 : 0;
}

/* ---- bearer token ----------------------------------------------------- */

int lg__http_read_token(lg_http_client_t *c, char *err, size_t errlen) {
  FILE *f = fopen(c->token_file, "r");
  if (f == NULL) {
    snprintf(err, errlen, "bearer_token_file %s: %s", c->token_file,
             strerror(errno));
    return -errno;
  }
  struct stat st;
  fstat(fileno(f), &st);
  lg_buf_t b = LG_BUF_INIT;
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len < (1 << 20))
    lg_buf_append(&b, chunk, n);
  fclose(f);
  while (b.len > 0 && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r' ||
                       b.data[b.len - 1] == ' '))
    b.len--;
  if (b.len == 0 || lg_buf_putc(&b, '\0') != 0) {
    lg_buf_free(&b);
    snprintf(err, errlen, "bearer_token_file %s: empty", c->token_file);
    return -EINVAL;
  }
  free(c->token);
  c->token = b.data;
  c->token_st = st;
  return 0;
}

/* Re-reads the token when its file changed (a projected token is
 * replaced by a symlink swap, which changes the inode). */
static void refresh_token(lg_http_client_t *c) {
  uint64_t now = uv_now(c->loop);
  if (c->token_file == NULL || now - c->token_checked < TOKEN_CHECK_MS)
    return;
  c->token_checked = now;
  struct stat st;
  if (stat(c->token_file, &st) != 0)
    return; /* keep the token we have; a swap may be under way */
  if (st.st_ino == c->token_st.st_ino && st.st_size == c->token_st.st_size &&
      st.st_mtim.tv_sec == c->token_st.st_mtim.tv_sec &&
      st.st_mtim.tv_nsec == c->token_st.st_mtim.tv_nsec)
    return;
  char err[256];
  if (lg__http_read_token(c, err, sizeof err) != 0)
    lg_log_warn(c->component, "%s (keeping the previous token)", err);
  else
    lg_log_info(c->component, "bearer token re-read from %s", c->token_file);
}

/* ---- headers ---------------------------------------------------------- */

static struct curl_slist *slist_add(struct curl_slist *l, const char *s,
                                    int *bad) {
  struct curl_slist *n = curl_slist_append(l, s);
  if (n == NULL)
    *bad = 1;
  return n != NULL ? n : l;
}

int lg__http_base_headers(lg_http_client_t *c,
                          const lg_http_client_conf_t *conf) {
  int bad = 0;
  /* An empty "Expect:" stops libcurl from adding "Expect: 100-continue" to
   * bodies over 1 MiB and then waiting a second for the interim answer. */
  c->base_headers = slist_add(NULL, "Expect:", &bad);
  if (c->api_key != NULL) {
    lg_buf_t a = LG_BUF_INIT;
    lg_buf_appendf(&a, "Authorization: ApiKey %s", c->api_key);
    c->base_headers = slist_add(c->base_headers, a.data ? a.data : "", &bad);
    lg_buf_free(&a);
  }
  for (size_t i = 0; i < conf->nheaders; i++) {
    lg_buf_t a = LG_BUF_INIT;
    lg_buf_appendf(&a, "%s: %s", conf->header_names[i], conf->header_values[i]);
    c->base_headers = slist_add(c->base_headers, a.data ? a.data : "", &bad);
    lg_buf_free(&a);
  }
  return bad;
}

/* ---- the answer ------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  lg_http_req_t *r = ud;
  size_t len = size * n;
  size_t room = r->c->max_response - r->resp.len;
  if (len > room) {
    r->truncated = 1;
    len = room;
  }
  if (len > 0 && lg_buf_append(&r->resp, p, len) != 0)
    return 0; /* out of memory: libcurl ends the transfer */
  return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  lg_http_req_t *r = ud;
  size_t len = size * n;
  /* A new status line (after a 100 Continue or a proxy's CONNECT answer)
   * starts a new header block. */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
    r->hdrs.len = 0;
  if (r->hdrs.len + len < 256 * 1024)
    lg_buf_append(&r->hdrs, p, len);
  return len;
}

const char *lg_http_response_header(const lg_http_req_t *req,
                                    const char *name) {
  static __thread char val[1024];
  size_t nl = strlen(name);
  if (req->hdrs.data == NULL)
    return NULL;
  const char *p = req->hdrs.data, *end = p + req->hdrs.len;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL)
      eol = end;
    if ((size_t)(eol - p) > nl && p[nl] == ':' &&
        strncasecmp(p, name, nl) == 0) {
      const char *v = p + nl + 1;
      while (v < eol && (*v == ' ' || *v == '\t'))
        v++;
      const char *ve = eol;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
        ve--;
      size_t vl =
          (size_t)(ve - v) < sizeof val - 1 ? (size_t)(ve - v) : sizeof val - 1;
      memcpy(val, v, vl);
      val[vl] = '\0';
      return val;
    }
    p = eol + 1;
  }
  return NULL;
}

/* ---- a request -------------------------------------------------------- */

void lg__http_req_free(lg_http_req_t *r) {
  if (r->easy)
    curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  free(r->method);
  free(r->path);
  free(r->gz);
  lg_buf_free(&r->resp);
  lg_buf_free(&r->hdrs);
  free(r);
}

lg_http_req_t *lg__http_req_new(lg_http_client_t *c, const char *method,
                                const char *path, const char *content_type,
                                const char *const *headers, size_t nheaders,
                                const void *body, size_t len, int compressible,
                                lg_http_done_cb done, void *ud) {
  lg_http_req_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  r->c = c;
  r->done = done;
  r->ud = ud;
  r->host = -1;
  r->start = uv_now(c->loop);
  r->method = strdup(method);
  r->path = strdup(path);
  r->easy = curl_easy_init();
  if (r->method == NULL || r->path == NULL || r->easy == NULL)
    goto nomem;
  r->body = body;
  r->len = len;
  int gzip = c->compression == LG_HTTP_COMPRESS_GZIP && compressible && len > 0;
  if (gzip) {
    r->gz = lg_http_gzip(body, len, &r->gzlen);
    if (r->gz == NULL)
      goto nomem;
  }

  int bad = 0;
  struct curl_slist *h = NULL;
  for (struct curl_slist *b = c->base_headers; b != NULL; b = b->next)
    h = slist_add(h, b->data, &bad);
  char line[512];
  if (content_type != NULL) {
    snprintf(line, sizeof line, "Content-Type: %s", content_type);
    h = slist_add(h, line, &bad);
  }
  if (gzip)
    h = slist_add(h, "Content-Encoding: gzip", &bad);
  refresh_token(c);
  if (c->token != NULL) {
    lg_buf_t a = LG_BUF_INIT;
    if (lg_buf_appendf(&a, "Authorization: Bearer %s", c->token) != 0)
      bad = 1;
    else
      h = slist_add(h, a.data, &bad);
    lg_buf_free(&a);
  }
  for (size_t i = 0; i < nheaders; i++)
    h = slist_add(h, headers[i], &bad);
  r->headers = h;
  if (bad)
    goto nomem;

  CURL *e = r->easy;
  curl_easy_setopt(e, CURLOPT_PRIVATE, r);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_PROXY, c->proxy != NULL ? c->proxy : "");
  if (c->ca_file)
    curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
  if (c->cert_file)
    curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file);
  if (c->key_file)
    curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, c->tls_verify ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, c->tls_verify ? 2L : 0L);
  if (c->user != NULL) {
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(e, CURLOPT_USERNAME, c->user);
    curl_easy_setopt(e, CURLOPT_PASSWORD, c->password ? c->password : "");
  }
  if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    if (strcmp(method, "POST") != 0)
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, gzip ? r->gz : body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)(gzip ? r->gzlen : len));
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  return r;
nomem:
  lg__http_req_free(r);
  errno = ENOMEM;
  return NULL;
}

void lg__http_req_complete(lg_http_req_t *r, CURLcode rc, long status) {
  lg_http_client_t *c = r->c;
  if (lg_buf_putc(&r->resp, '\0') == 0)
    r->resp.len--;
  lg_http_response_t res = {
      .status = rc == CURLE_OK ? (int)status : 0,
      .transport_error = (int)rc,
      .error = rc == CURLE_OK ? ""
               : r->errbuf[0] ? r->errbuf
                              : curl_easy_strerror(rc),
      .body = r->resp.data != NULL ? r->resp.data : "",
      .body_len = r->resp.len,
      .truncated = r->truncated,
      .retry_after_ms = -1,
      .host = c->hosts[r->host].base,
      .new_connections = r->new_connections,
      .duration_ms = (int64_t)(uv_now(c->loop) - r->start),
      .sent_bytes = r->gz != NULL ? r->gzlen : r->len,
  };
  if (rc == CURLE_OK)
    res.retry_after_ms = lg_http_parse_retry_after(
        lg_http_response_header(r, "Retry-After"), (int64_t)time(NULL));
  r->done(r->ud, r, &res);
  lg__http_req_free(r);
}
