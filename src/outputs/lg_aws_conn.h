/* lg_aws_conn: the AWS connection of an output (s3, cloudwatch_logs):
 * the region, the endpoint's host, the credentials chain (lg_aws_creds)
 * and the HTTP client (lg_http_client), opened, used to send SigV4-signed
 * requests and closed the same way by every AWS output.
 *
 * Loop thread only. */
#ifndef LG_AWS_CONN_H
#define LG_AWS_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/lg_aws_creds.h"
#include "core/lg_aws_sigv4.h"
#include "core/lg_http_client.h"
#include "outputs/lg_output.h"

/* The options every AWS output has (borrowed strings; NULL or "" = not
 * set). */
typedef struct lg_aws_conn_conf {
  const char *region; /* else AWS_REGION, AWS_DEFAULT_REGION, us-east-1 */
  /* Base URL; else the AWS endpoint (lg_aws_conn_open's host_prefix). */
  const char *endpoint;
  const char *access_key_id;
  const char *secret_access_key;
  const char *session_token;
  const char *ca_file;
  int tls_verify;
  int64_t timeout_ms; /* per request, milliseconds */
} lg_aws_conn_conf_t;

/* The lg_aws_conn_conf_t of an output's conf struct `c` (a pointer) with
 * fields of the same names as lg_aws_conn_conf_t's (those of
 * LG_AWS_CONN_REGION_OPTION, LG_AWS_CONN_OPTIONS, `endpoint` and
 * `timeout_ms`). */
#define LG_AWS_CONN_CONF(c)                                                    \
  ((lg_aws_conn_conf_t){.region = (c)->region,                                 \
                        .endpoint = (c)->endpoint,                             \
                        .access_key_id = (c)->access_key_id,                   \
                        .secret_access_key = (c)->secret_access_key,           \
                        .session_token = (c)->session_token,                   \
                        .ca_file = (c)->ca_file,                               \
                        .tls_verify = (c)->tls_verify,                         \
                        .timeout_ms = (c)->timeout_ms})

/* The option row of `region`, for an output's option table whose conf
 * struct T has a field `char *region`. */
#define LG_AWS_CONN_REGION_OPTION(T)                                           \
  {                                                                            \
    .name = "region", .type = LG_OPT_STRING,                                   \
    .doc = "AWS region (default: AWS_REGION, then AWS_DEFAULT_REGION, then "   \
           "us-east-1).",                                                      \
    .offset = offsetof(T, region)                                              \
  }

/* The option rows of the credentials and TLS options every AWS output
 * has (access_key_id, secret_access_key, session_token, ca_file,
 * tls_verify), for an output's option table whose conf struct T has
 * fields of those names (char *, and int tls_verify). */
#define LG_AWS_CONN_OPTIONS(T)                                                 \
  {.name = "access_key_id",                                                    \
   .type = LG_OPT_STRING,                                                      \
   .doc = "Access key; default: the environment, ~/.aws/credentials, or "      \
          "web identity (EKS IRSA).",                                          \
   .offset = offsetof(T, access_key_id)},                                      \
      {.name = "secret_access_key",                                            \
       .type = LG_OPT_STRING,                                                  \
       .doc = "Secret key of access_key_id.",                                  \
       .offset = offsetof(T, secret_access_key)},                              \
      {.name = "session_token",                                                \
       .type = LG_OPT_STRING,                                                  \
       .doc = "Session token of temporary keys.",                              \
       .offset = offsetof(T, session_token)},                                  \
      {.name = "ca_file",                                                      \
       .type = LG_OPT_PATH,                                                    \
       .doc = "CA certificates (PEM) to verify the endpoint with (default: "   \
              "the system's).",                                                \
       .offset = offsetof(T, ca_file)},                                        \
  {                                                                            \
    .name = "tls_verify", .type = LG_OPT_BOOL, .def = "true",                  \
    .doc = "Verify the endpoint's certificate and name.",                      \
    .offset = offsetof(T, tls_verify)                                          \
  }

typedef struct lg_aws_conn {
  lg_http_client_t *http; /* NULL once cancelled */
  lg_aws_creds_t *creds;
  char region[64];
  char host[256]; /* Host header: the base URL's authority */
  int closing_parts;
  lg_output_t *closing; /* the output whose impl is freed once closed */
} lg_aws_conn_t;

/* Opens the connection of output `output_name` (used in log lines as
 * "output.<name>"): sets a->region from c->region, else the environment
 * (AWS_REGION, then AWS_DEFAULT_REGION, as the AWS SDKs do), else
 * "us-east-1"; then opens the credentials chain and the HTTP client for
 * c->endpoint ("http[s]://host[:port]", trailing '/' ignored) when set, else
 * for the AWS endpoint "https://<host_prefix>.<region>.<DNS suffix>"
 * (lg_aws_dns_suffix: amazonaws.com, or amazonaws.com.cn in the China
 * regions), e.g. host_prefix "logs" or "<bucket>.s3". Returns 0, or -EINVAL
 * with a message in err ("outputs.<name>: ..."): nothing is left open then. */
int lg_aws_conn_open(lg_aws_conn_t *a, uv_loop_t *loop, const char *output_name,
                     const char *host_prefix, const lg_aws_conn_conf_t *c,
                     char *err, size_t errlen);

/* One request to sign (AWS Signature Version 4) and send. */
typedef struct lg_aws_conn_req {
  const char *method; /* "PUT", "POST", ... */
  const char *path;   /* absolute, not yet percent-encoded */
  const lg_sigv4_param_t *query;
  size_t nquery;
  const char *service;      /* SigV4 service name: "s3", "logs" */
  const char *content_type; /* NULL: none */
  /* More headers to sign and send (besides Content-Type). */
  const char *const *header_names;
  const char *const *header_values;
  size_t nheaders; /* at most 4 */
  const void *body;
  size_t body_len;           /* bytes */
  int content_sha256_header; /* send X-Amz-Content-Sha256 (S3) */
} lg_aws_conn_req_t;

/* Signs `r` with the current credentials and starts it, answered to
 * done(ud, ...). Returns the request, or NULL with the reason in `why`
 * (cancelled at shutdown, no credentials yet, out of memory): the caller
 * retries later. */
lg_http_req_t *lg_aws_conn_send(lg_aws_conn_t *a, const lg_aws_conn_req_t *r,
                                lg_http_done_cb done, void *ud, char *why,
                                size_t whylen);

/* Closes the HTTP client at once (answers in flight no longer come) and
 * makes later sends fail with "cancelled at shutdown". */
void lg_aws_conn_cancel(lg_aws_conn_t *a);

/* The output type's close for an output whose state o->impl (malloc'd)
 * holds `a`: closes what lg_aws_conn_open opened, then, once both the
 * client and the credentials are closed (perhaps before this returns),
 * frees o->impl, sets it NULL and calls lg_output_closed(o). */
void lg_aws_conn_close(lg_aws_conn_t *a, lg_output_t *o);

#endif
