/*
 * lg_out_http_common.h - what the HTTP output types share: their
 * connection options (hosts, TLS, auth, proxy, timeouts, compression,
 * headers), declared once as option rows, the client made from them
 * (core/lg_http_client.h), the request body made from a request's
 * records, and the reading of an HTTP status that every HTTP backend
 * agrees on.
 */
#ifndef LG_OUT_HTTP_COMMON_H
#define LG_OUT_HTTP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "core/lg_buf.h"
#include "core/lg_http_client.h"
#include "core/lg_option.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"

/* The connection options' values (filled by lg_opt_fill). */
typedef struct lg_out_http_opts {
  lg_opt_strv_t hosts;
  int compression; /* 0 none, 1 gzip */
  char *user, *password, *api_key, *bearer_token_file;
  char *ca_file, *cert_file, *key_file;
  int tls_verify;
  char *proxy;
  int64_t connect_timeout_ms, timeout_ms;
  lg_opt_strmap_t headers;
} lg_out_http_opts_t;

/* Option check of `hosts`: 1 to 64 base URLs, each http:// or https://
 * (what lg_http_client_create takes), so a config load finds a bad one. */
int lg_out_check_http_hosts(const lg_optval_t *v, char *err, size_t errlen);

/* The option rows for a conf struct `T` whose lg_out_http_opts_t is member
 * `http`. `hosts_doc` says what a host is for this backend;
 * `compression_def` is the default ("none" or "gzip"). */
#define LG_OUT_HTTP_OPTIONS(T, hosts_doc, compression_def)                     \
  {.name = "hosts",                                                            \
   .type = LG_OPT_STRLIST,                                                     \
   .required = 1,                                                              \
   .check = lg_out_check_http_hosts,                                           \
   .doc = hosts_doc,                                                           \
   .offset = offsetof(T, http.hosts)},                                         \
      {.name = "compression",                                                  \
       .type = LG_OPT_ENUM,                                                    \
       .def = compression_def,                                                 \
       .choices = "none|gzip",                                                 \
       .doc = "Request body compression (gzip: zlib level 1).",                \
       .offset = offsetof(T, http.compression)},                               \
      {.name = "user",                                                         \
       .type = LG_OPT_STRING,                                                  \
       .doc = "User name for HTTP basic authentication.",                      \
       .offset = offsetof(T, http.user)},                                      \
      {.name = "password",                                                     \
       .type = LG_OPT_STRING,                                                  \
       .doc = "Password for HTTP basic authentication.",                       \
       .offset = offsetof(T, http.password)},                                  \
      {.name = "bearer_token_file",                                            \
       .type = LG_OPT_PATH,                                                    \
       .doc = "File holding a bearer token (Authorization: Bearer), re-read "  \
              "when it changes.",                                              \
       .offset = offsetof(T, http.bearer_token_file)},                         \
      {.name = "ca_file",                                                      \
       .type = LG_OPT_PATH,                                                    \
       .doc = "CA certificates (PEM) to verify the server with (default: "     \
              "the system's).",                                                \
       .offset = offsetof(T, http.ca_file)},                                   \
      {.name = "cert_file",                                                    \
       .type = LG_OPT_PATH,                                                    \
       .doc = "Client certificate (PEM) for mutual TLS.",                      \
       .offset = offsetof(T, http.cert_file)},                                 \
      {.name = "key_file",                                                     \
       .type = LG_OPT_PATH,                                                    \
       .doc = "Private key (PEM) of cert_file.",                               \
       .offset = offsetof(T, http.key_file)},                                  \
      {.name = "tls_verify",                                                   \
       .type = LG_OPT_BOOL,                                                    \
       .def = "true",                                                          \
       .doc = "Verify the server's certificate and name (false logs a "        \
              "warning).",                                                     \
       .offset = offsetof(T, http.tls_verify)},                                \
      {.name = "proxy",                                                        \
       .type = LG_OPT_STRING,                                                  \
       .doc = "HTTP proxy URL; without it no proxy is used (http_proxy and "   \
              "the like are ignored).",                                        \
       .offset = offsetof(T, http.proxy)},                                     \
      {.name = "connect_timeout",                                              \
       .type = LG_OPT_DURATION,                                                \
       .def = "10s",                                                           \
       .check = lg_opt_check_positive,                                         \
       .doc = "Time to set up a connection (TCP and TLS).",                    \
       .offset = offsetof(T, http.connect_timeout_ms)},                        \
      {.name = "timeout",                                                      \
       .type = LG_OPT_DURATION,                                                \
       .def = "60s",                                                           \
       .check = lg_opt_check_positive,                                         \
       .doc = "Time for a whole request and its answer; then it is retried.",  \
       .offset = offsetof(T, http.timeout_ms)},                                \
  {                                                                            \
    .name = "headers", .type = LG_OPT_STRMAP,                                  \
    .doc = "Extra HTTP headers sent with every request.",                      \
    .offset = offsetof(T, http.headers)                                        \
  }

/* An output's HTTP side: its client plus the requests in flight, so that
 * cancel can end them (lg_out_req_done must run for each). */
typedef struct lg_out_http lg_out_http_t;

/* Called when the answer to a request sent with lg_out_http_send came:
 * the output reads it, sets per-record results and calls
 * lg_out_req_done(r, ...) before returning. `hr` is for
 * lg_http_response_header and lg_http_req_host_failed. */
typedef void (*lg_out_http_answer_fn)(void *ud, lg_out_req_t *r,
                                      lg_http_req_t *hr,
                                      const lg_http_response_t *res);

/* Creates the HTTP side of output `o` from its options (with an
 * Elasticsearch API key when `api_key` is not NULL). NULL with `err`
 * filled ("outputs.<name>: ..."). */
lg_out_http_t *lg_out_http_create(lg_output_t *o, const lg_out_http_opts_t *h,
                                  const char *api_key, char *err,
                                  size_t errlen);

/* Sends `body` (taken: freed after the answer) as request `r`'s HTTP
 * request; `answer(ud, ...)` runs once with the result. A request that
 * cannot be started is retried (lg_out_req_done(r, LG_OUT_RETRY)). A
 * Retry-After in the answer is passed to the delivery layer. */
void lg_out_http_send(lg_out_http_t *h, lg_out_req_t *r, const char *method,
                      const char *path, const char *content_type,
                      const char *const *headers, size_t nheaders,
                      lg_buf_t *body, lg_out_http_answer_fn answer, void *ud);

/* The output type's cancel: ends every request in flight as RETRY now (the
 * client is closed; its answers no longer come). */
void lg_out_http_cancel(lg_out_http_t *h);

/* The output type's close: closes the client, frees `h`, then calls
 * lg_output_closed(o). */
void lg_out_http_close(lg_out_http_t *h);

/* Puts the request's records, back to back, in `body` (an empty lg_buf):
 * with `borrow`, when they are one piece of the payload, `body` points at
 * them without a
 * copy (cap 0: borrowed; lg_out_http_send knows not to free it; do not
 * change or free such a body). 0 or -ENOMEM. */
int lg_out_http_body(lg_out_req_t *r, lg_buf_t *body, int borrow);

/* What a status or transport error means when the backend's own rules do
 * not say otherwise (RFC 9110, and what Elasticsearch, Loki, OTLP and
 * generic receivers agree on): 2xx delivered; 408, 429 and 5xx retried;
 * 413 split; 401 and 403 retried (a credentials or permissions problem
 * the operator fixes; logged); other 4xx rejected. No answer (transport
 * error) is retried. Writes the reason ("HTTP 503 from <host>: <first
 * bytes of the answer>") into `reason`. */
lg_out_result_t lg_out_http_classify(const lg_http_response_t *res,
                                     char *reason, size_t cap);

/* The id a backend should know record `i` of `b` by: its stable id
 * (lg_batch_rec_id, "<fingerprint>:<offset>"), with "/<k>" added for the
 * k-th record after the first that a script split off one read record
 * (they share its offset, so without it they would share an id, and
 * Elasticsearch would answer 409 for the second as if it had it). Written
 * to `buf` (48 bytes are enough); its length, or < 0. */
int lg_out_record_id(const lg_batch_t *b, uint32_t i, char *buf, size_t cap);

/* Appends up to `max` bytes of `s` to `out` as printable text (control
 * bytes as spaces), for reasons quoting an answer. */
void lg_out_http_quote(char *out, size_t cap, const char *s, size_t len,
                       size_t max);

#endif
