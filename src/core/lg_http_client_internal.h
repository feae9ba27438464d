/*
 * lg_http_client_internal.h - what the HTTP client's two files share, and
 * no one else (outputs see lg_http_client.h only):
 *   lg_http_client.c   the libcurl multi handle on the libuv loop (socket
 *                      and timer callbacks, completions), the hosts
 *                      (failover, round-robin, setting aside), requests in
 *                      flight, create and close
 *   lg_http_request.c  one request: its headers and libcurl options, the
 *                      bearer token, gzip bodies, capturing the answer and
 *                      reporting it (lg_http_response_t, Retry-After)
 * Everything here runs on the loop thread.
 */
#ifndef LG_HTTP_CLIENT_INTERNAL_H
#define LG_HTTP_CLIENT_INTERNAL_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <uv.h>

#include "core/lg_buf.h"
#include "core/lg_http_client.h"

#define MAX_HOSTS 64
#define HOST_DOWN_MIN_MS 1000
#define HOST_DOWN_MAX_MS 60000
/* How often the bearer token file is checked for a change. */
#define TOKEN_CHECK_MS 1000

typedef struct host {
  char *base;          /* without a trailing '/' */
  int fails;           /* consecutive failures */
  uint64_t down_until; /* uv_now() ms; 0 = usable */
} host_t;

typedef struct sockctx {
  uv_poll_t poll;
  curl_socket_t fd;
  lg_http_client_t *c;
  struct sockctx *prev, *next;
} sockctx_t;

struct lg_http_req {
  lg_http_client_t *c;
  CURL *easy;
  struct curl_slist *headers;
  char *method, *path;
  const void *body;
  size_t len;
  void *gz; /* compressed body, owned */
  size_t gzlen;
  int host;       /* index of the host in use */
  uint64_t tried; /* bit per host tried for this request */
  int new_connections;
  uint64_t start;
  lg_buf_t resp;
  int truncated;
  lg_buf_t hdrs; /* the last header block, raw lines */
  char errbuf[CURL_ERROR_SIZE];
  lg_http_done_cb done;
  void *ud;
  lg_http_req_t *prev, *next;
};

struct lg_http_client {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  char *component;
  host_t hosts[MAX_HOSTS];
  size_t nhosts, rr;
  char *ca_file, *cert_file, *key_file, *proxy;
  int tls_verify;
  long connect_timeout_ms, timeout_ms;
  lg_http_compression_t compression;
  char *user, *password, *api_key;
  char *token, *token_file;
  struct stat token_st;
  uint64_t token_checked;
  struct curl_slist *base_headers;
  size_t max_response;
  lg_http_req_t *reqs; /* in flight */
  size_t in_flight;
  sockctx_t *socks;
  int handles_open; /* timer + polls not yet closed */
  int dispatching;  /* inside the completion loop */
  int closing, torn_down;
  void (*closed_cb)(void *ud);
  void *closed_ud;
};

/* --- lg_http_client.c --- */

/* curl_global_init, once per process (libcurl requires it before any
 * other call and it is not thread-safe). */
void lg__http_global_init(void);

/* --- lg_http_request.c --- */

/* A request for `c` with its headers and libcurl options set, not yet on
 * a host or in the multi (lg_http_request has the argument shapes).
 * NULL with errno ENOMEM. */
lg_http_req_t *lg__http_req_new(lg_http_client_t *c, const char *method,
                                const char *path, const char *content_type,
                                const char *const *headers, size_t nheaders,
                                const void *body, size_t len, int compressible,
                                lg_http_done_cb done, void *ud);

/* Frees a request that is out of the multi handle. */
void lg__http_req_free(lg_http_req_t *r);

#ifdef LUGGER_FUZZ_HOOKS
/* Set by a fuzz target (tests/fuzz/fuzz_answers.c), which answers the
 * requests itself: each new request, on host 0 and never sent, is handed
 * to it, to be ended with lg__http_req_complete. Not in lugger's builds. */
extern void (*lg__http_fuzz_take)(lg_http_req_t *r);
#endif

/* Reports the end of a request (out of the multi and of the client's
 * list) to its callback: `rc` as libcurl ended it, `status` the HTTP
 * status it got. Frees the request. */
void lg__http_req_complete(lg_http_req_t *r, CURLcode rc, long status);

/* The headers every request of the client sends (the empty Expect, an
 * Elasticsearch API key, the configured extra headers) into
 * c->base_headers. Returns 0, or 1 when out of memory. */
int lg__http_base_headers(lg_http_client_t *c,
                          const lg_http_client_conf_t *conf);

/* Reads c->token_file into c->token. Returns 0, or a negative errno with
 * the reason in err (unreadable, empty). */
int lg__http_read_token(lg_http_client_t *c, char *err, size_t errlen);

#endif
