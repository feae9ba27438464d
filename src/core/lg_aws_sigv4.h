/*
 * lg_aws_sigv4.h - AWS Signature Version 4 for the outputs that talk to
 * AWS (s3, cloudwatch_logs) and for STS.
 *
 * Signs with OpenSSL's SHA-256 and HMAC (EVP_Digest, HMAC) instead of
 * libcurl's CURLOPT_AWS_SIGV4, because the libcurl this project builds
 * against (Debian 12, 7.88.1) signs query strings as sent (unsorted),
 * adds no x-amz-content-sha256, signs streamed bodies as empty, puts a
 * removed Content-Type into SignedHeaders and mis-encodes '=' in paths
 * (notes/forward-s3-containers.md §4.1). Working around each of these
 * ties lugger's signatures to one libcurl version's quirks (later
 * versions sort and encode differently), and a signature computed inside
 * libcurl with the clock of the moment cannot be checked against AWS's
 * published test vectors. Here the canonical request is built in one
 * place, from a decoded path and unsorted query parameters, and the same
 * bytes that were signed are what the caller sends.
 *
 * Follows: AWS General Reference, "Signature Version 4 signing process"
 * (canonical request, string to sign, signing key) and the Amazon S3 API
 * reference "Authenticating Requests (AWS Signature Version 4)" (S3 paths
 * are encoded once and not normalized; x-amz-content-sha256 is signed).
 */
#ifndef LG_AWS_SIGV4_H
#define LG_AWS_SIGV4_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* A query parameter, decoded ("uploadId", "a b=c"); value may be "" (sent
 * as "uploads=") but not NULL. */
typedef struct lg_sigv4_param {
  const char *name;
  const char *value;
} lg_sigv4_param_t;

/* What to sign. Strings are not kept after lg_sigv4_sign returns. */
typedef struct lg_sigv4_req {
  const char *method; /* "PUT", "POST", "GET", "DELETE" */
  const char *host;   /* the Host header exactly as sent: "s3.eu-west-1
                         .amazonaws.com", "127.0.0.1:4568" (with a port
                         when it is not the scheme's default) */
  const char *path;   /* decoded path starting with '/': "/logs/a b.json";
                         encoded once (S3 rules: every byte but
                         A-Z a-z 0-9 - . _ ~ and '/'), never normalized */
  const lg_sigv4_param_t *query; /* in any order; sorted here */
  size_t nquery;
  /* Other headers to sign and send ("Content-Type", "x-amz-target"):
   * names in any case (lower-cased for signing), values trimmed and inner
   * runs of spaces folded for signing as the spec says. */
  const char *const *header_names;
  const char *const *header_values;
  size_t nheaders;
  /* The payload: its hex SHA-256, or "UNSIGNED-PAYLOAD"; NULL = computed
   * here from body/body_len. */
  const char *payload_sha256;
  const void *body;
  size_t body_len;
  const char *region;  /* "eu-west-1" */
  const char *service; /* "s3", "logs", "sts" */
  time_t now;          /* Unix seconds: the request's time (x-amz-date) */
  /* 1 = add the x-amz-content-sha256 header (S3 requires it on every
   * request; CloudWatch and STS do not use it). */
  int content_sha256_header;
} lg_sigv4_req_t;

/* Credentials (borrowed). session_token NULL or "" = long-term keys. */
typedef struct lg_sigv4_creds {
  const char *access_key_id;
  const char *secret_access_key;
  const char *session_token;
} lg_sigv4_creds_t;

/* The signed request. headers[] are complete "Name: value" strings to
 * send with the request (X-Amz-Date, X-Amz-Content-Sha256 when asked,
 * X-Amz-Security-Token when there is one, Authorization), in addition to
 * the caller's own signed headers. */
#define LG_SIGV4_MAX_OUT_HEADERS 4
typedef struct lg_sigv4_signed {
  char *target; /* encoded path + "?" + canonical query: send exactly this
                   as the request target */
  char *headers[LG_SIGV4_MAX_OUT_HEADERS];
  size_t nheaders;
  char signature[65];      /* hex, for logs and tests */
  char *canonical_request; /* for debugging and tests */
} lg_sigv4_signed_t;

/* Signs `req` with `creds`. Fills *out (free it with lg_sigv4_signed_free)
 * and returns 0, or returns -1 with errno set: EINVAL (a NULL or empty
 * method, host, region, service, key, or a path not starting with '/'),
 * ENOMEM. */
int lg_sigv4_sign(const lg_sigv4_req_t *req, const lg_sigv4_creds_t *creds,
                  lg_sigv4_signed_t *out);

/* Frees what lg_sigv4_sign allocated in *s (NULL-safe, idempotent). */
void lg_sigv4_signed_free(lg_sigv4_signed_t *s);

/* Hex SHA-256 of `len` bytes into hex[65] (NUL-terminated). */
void lg_sigv4_sha256_hex(const void *data, size_t len, char hex[65]);

/* Percent-encodes `len` bytes of `s` as SigV4 asks: every byte but
 * A-Z a-z 0-9 '-' '.' '_' '~' becomes %XX (upper-case hex), and '/' too
 * unless keep_slash. Returns a malloc'd string or NULL (ENOMEM). */
char *lg_sigv4_uri_encode(const char *s, size_t len, int keep_slash);

#endif
