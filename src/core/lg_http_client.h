/*
 * lg_http_client.h - an HTTP client on the libuv loop, for the outputs
 * that speak HTTP (elasticsearch, loki, clickhouse, otlp, http).
 *
 * One client serves one output: a list of hosts (base URLs) with failover
 * and round-robin, one libcurl multi handle driven by the loop (socket and
 * timer callbacks, curl's multi_socket API), keep-alive connections reused
 * across requests, HTTP/1.1, TLS options, a proxy, timeouts, gzip request
 * bodies (zlib), and authentication (basic, a bearer token read from a
 * file and re-read when the file changes, an Elasticsearch API key) plus
 * custom headers. Everything runs on the loop thread; completions are
 * reported from loop callbacks, never from inside a libcurl callback, so a
 * completion callback may start the next request.
 *
 * What the client does not do: retries and backoff (the delivery layer
 * owns them) and interpreting answers (each output classifies its own).
 * It does fail over to the next host at once when a connection could not
 * be made (nothing was sent), and it sets aside a host that failed so that
 * the next requests go to the others; a host set aside is tried again
 * after a delay that doubles on each failure (1 s up to 60 s).
 *
 * Follows: RFC 9110 (HTTP semantics: Retry-After, Authorization),
 * RFC 1952 (gzip), libcurl's multi_socket API as of 7.88 (see
 * notes/outputs-http.md §5 for the caveats handled here: CURL_CSELECT_ERR
 * on poll errors, no libcurl calls from its own callbacks, no
 * "Expect: 100-continue").
 */
#ifndef LG_HTTP_CLIENT_H
#define LG_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct lg_http_client lg_http_client_t;
typedef struct lg_http_req lg_http_req_t;

typedef enum lg_http_compression {
  LG_HTTP_COMPRESS_NONE = 0,
  LG_HTTP_COMPRESS_GZIP = 1,
} lg_http_compression_t;

/* Settings of a client; strings are copied by lg_http_client_create, so
 * the caller may free them afterwards. NULL or 0 means "not set". */
typedef struct lg_http_client_conf {
  const char *const *hosts; /* base URLs, "http://es-1:9200", "https://h" */
  size_t nhosts;            /* at least 1 */
  const char *component;    /* name in lugger's log ("output.es") */
  /* TLS: a CA bundle (PEM) to verify the server with (default: the
   * system's), a client certificate and key (PEM) for mutual TLS, and
   * whether to verify the server's certificate and name at all. */
  const char *ca_file, *cert_file, *key_file;
  int tls_verify; /* 1 = verify (the default a config should give) */
  /* A proxy URL ("http://proxy:3128"); NULL = no proxy: the http_proxy
   * environment variables are ignored, so a DaemonSet's environment does
   * not silently reroute log traffic. */
  const char *proxy;
  int64_t connect_timeout_ms; /* 0 = 10 s */
  int64_t timeout_ms;         /* whole request; 0 = 60 s */
  lg_http_compression_t compression;
  /* Authentication, at most one of: basic (user and password), a bearer
   * token (the token itself, or a file holding it, re-read when its
   * mtime, size or inode changes, e.g. a projected service-account token),
   * or an Elasticsearch API key (the "encoded" value, sent as
   * "Authorization: ApiKey <key>"). */
  const char *user, *password;
  const char *bearer_token, *bearer_token_file;
  const char *api_key;
  /* Extra headers sent with every request: names[i]: values[i]. */
  const char *const *header_names;
  const char *const *header_values;
  size_t nheaders;
  /* At most this many connections per host (0 = 8). */
  int max_connections_per_host;
  /* Answers longer than this are cut there (res->truncated = 1);
   * 0 = 16 MiB. */
  size_t max_response_bytes;
} lg_http_client_conf_t;

/* What came back. Valid only during the completion callback. */
typedef struct lg_http_response {
  int status;          /* HTTP status; 0 when no answer came */
  int transport_error; /* 0, or the CURLcode that ended the request */
  const char *error;   /* transport error text ("" when none) */
  const char *body;    /* the answer's body as received (no
                          Accept-Encoding is sent), NUL-terminated */
  size_t body_len;
  int truncated;          /* body cut at max_response_bytes */
  int64_t retry_after_ms; /* Retry-After (seconds or HTTP-date), -1 = none */
  const char *host;       /* base URL of the host that was used */
  int new_connections;    /* connections opened for this request (0 = a
                             kept-alive one was reused) */
  int64_t duration_ms;    /* from start to completion, all hosts tried */
  size_t sent_bytes;      /* body bytes on the wire (after compression) */
} lg_http_response_t;

typedef void (*lg_http_done_cb)(void *ud, lg_http_req_t *req,
                                const lg_http_response_t *res);

/* Creates a client on `loop`. Returns NULL with `err` filled when a
 * setting is bad (no hosts, a host that is not an http(s) URL, an
 * unreadable bearer token file) or libcurl cannot be set up. Logs a
 * warning when tls_verify is 0. */
lg_http_client_t *lg_http_client_create(uv_loop_t *loop,
                                        const lg_http_client_conf_t *conf,
                                        char *err, size_t errlen);

/* Starts closing: requests in flight are cancelled (their callbacks are
 * not called), libcurl is cleaned up, and `cb(ud)` runs once the loop
 * handles are closed; the client is freed after it. NULL-safe (cb is then
 * not called). */
void lg_http_client_close(lg_http_client_t *c, void (*cb)(void *ud), void *ud);

/* Starts a request: `method` ("POST", "GET"), `path` appended to the
 * host's base URL ("/_bulk?filter_path=items.*.status", must start with
 * '/'), `content_type` (NULL = none), extra `headers` ("Name: value"
 * strings, nheaders of them; copied), and a body of `len` bytes that is
 * sent as given, or gzip-compressed first when the client compresses (and
 * `compressible` is 1). The body is NOT copied: it must stay valid until
 * the callback. `done(ud, req, res)` runs exactly once on the loop (unless
 * the client is closed first). Returns the request (opaque; freed after
 * its callback), or NULL with errno set (ENOMEM, ESHUTDOWN when closing,
 * EINVAL for a bad path). */
lg_http_req_t *lg_http_request(lg_http_client_t *c, const char *method,
                               const char *path, const char *content_type,
                               const char *const *headers, size_t nheaders,
                               const void *body, size_t len, int compressible,
                               lg_http_done_cb done, void *ud);

/* A response header's value (first occurrence, name case-insensitive),
 * or NULL. Valid during the completion callback. */
const char *lg_http_response_header(const lg_http_req_t *req, const char *name);

/* Sets the host that served `req` aside as if its connection had failed
 * (for answers that say the host is unwell, e.g. a 503 from one node of
 * a cluster): the next requests prefer the other hosts. Call it from the
 * completion callback. */
void lg_http_req_host_failed(lg_http_req_t *req);

/* Number of requests started but not completed. */
size_t lg_http_client_in_flight(const lg_http_client_t *c);

/* Compresses `len` bytes into a gzip member (RFC 1952, zlib level 1:
 * log lines compress well even at the fastest level, and the CPU is the
 * collector's). Deterministic: the same input gives the same bytes, which
 * ClickHouse's block deduplication relies on. Returns a malloc'd buffer
 * with its size in *outlen, or NULL (ENOMEM). */
void *lg_http_gzip(const void *data, size_t len, size_t *outlen);

/* Percent-encodes `s` for a URL query value (RFC 3986: every byte but
 * ALPHA / DIGIT / "-" / "." / "_" / "~"). Returns a malloc'd string, or
 * NULL (ENOMEM). */
char *lg_http_escape(const char *s);

/* Parses a Retry-After value: delay-seconds or an HTTP-date, relative to
 * `now_s` (Unix seconds). Milliseconds (>= 0), or -1 when not parseable. */
int64_t lg_http_parse_retry_after(const char *v, int64_t now_s);

#endif
