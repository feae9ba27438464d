/*
 * The `forward` output: Fluent forward protocol v1 to fluentd, Fluent Bit,
 * or another lugger (lg_output.h for the delivery layer it sits on).
 *
 * Encoding (workers): each record becomes one legacy [time, record] entry
 * (lg_forward_encode.h); its tag, rendered from the `tag` template, goes in
 * the payload's side data. Sending (loop): the records of a request are cut
 * into PackedForward messages, one per run of records with the same tag,
 * each with a chunk id (and gzip with compress = "gzip"), and go to the
 * current server (lg_forward_client.h: failover, handshake, TLS). With
 * require_ack_response (the default) a message counts as delivered only
 * when its {"ack": chunk} is back; an ack missing after ack_timeout, or a
 * lost connection, answers its records "retry": the delivery layer sends
 * them again after its backoff, to the next server if this one failed. A
 * receiver that had the chunk but lost the ack gets it twice: duplicates
 * are bounded by what is in flight (max_in_flight requests).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/lg_config.h"
#include "core/lg_log.h"
#include "core/lg_tls.h"
#include "outputs/lg_forward_client.h"
#include "outputs/lg_forward_encode.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"

typedef struct fwd_conf {
  lg_out_limits_t limits;
  lg_opt_strv_t servers;
  char *tag;
  char *body_key;
  int compress; /* 0 none, 1 gzip */
  int require_ack;
  int64_t ack_timeout_ms;
  int64_t connect_timeout_ms;
  int time_as_integer;
  char *shared_key;
  char *self_hostname;
  char *username;
  char *password;
  int tls;
  char *tls_ca;
  int tls_verify;
  char *tls_cert;
  char *tls_key;
  char *tls_server_name;
} fwd_conf_t;

static int check_tag(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->s == NULL || v->s[0] == '\0') {
    snprintf(err, errlen, "must not be empty");
    return -EINVAL;
  }
  return lg_fwd_tag_check(v->s, err, errlen);
}

static const lg_option_t fwd_options[] = {
    {.name = "servers",
     .type = LG_OPT_STRLIST,
     .def = "127.0.0.1:24224",
     .doc = "Forward servers, \"host:port\" (port 24224 if left out) or "
            "\"unix:/path\", in failover order.",
     .offset = offsetof(fwd_conf_t, servers)},
    {.name = "tag",
     .type = LG_OPT_STRING,
     .def = "lugger",
     .check = check_tag,
     .doc = "The Fluent tag: text with ${field} placeholders filled from each "
            "record's fields or metadata, e.g. \"kube.${k8s.namespace.name}\".",
     .offset = offsetof(fwd_conf_t, tag)},
    {.name = "body_key",
     .type = LG_OPT_STRING,
     .def = "log",
     .check = lg_opt_check_nonempty,
     .doc = "The record key that carries the body (Fluent Bit and fluentd "
            "filters read \"log\").",
     .offset = offsetof(fwd_conf_t, body_key)},
    {.name = "compress",
     .type = LG_OPT_ENUM,
     .def = "none",
     .choices = "none|gzip",
     .doc = "gzip sends CompressedPackedForward (fluentd >= 0.14.7, Fluent "
            "Bit, lugger).",
     .offset = offsetof(fwd_conf_t, compress)},
    {.name = "require_ack_response",
     .type = LG_OPT_BOOL,
     .def = "true",
     .doc = "Send chunk ids and count a message delivered only when the "
            "server acks it (false: once written to the socket).",
     .offset = offsetof(fwd_conf_t, require_ack)},
    {.name = "ack_timeout",
     .type = LG_OPT_DURATION,
     .def = "60s",
     .check = lg_opt_check_positive,
     .doc = "How long to wait for an ack before the records are sent again.",
     .offset = offsetof(fwd_conf_t, ack_timeout_ms)},
    {.name = "connect_timeout",
     .type = LG_OPT_DURATION,
     .def = "10s",
     .check = lg_opt_check_positive,
     .doc = "Connect, TLS and handshake time limit per server.",
     .offset = offsetof(fwd_conf_t, connect_timeout_ms)},
    {.name = "time_as_integer",
     .type = LG_OPT_BOOL,
     .def = "false",
     .doc = "Send entry times as integer seconds (fluentd 0.12) instead of "
            "EventTime.",
     .offset = offsetof(fwd_conf_t, time_as_integer)},
    {.name = "shared_key",
     .type = LG_OPT_STRING,
     .doc = "Shared key of the server's handshake (HELO/PING/PONG).",
     .offset = offsetof(fwd_conf_t, shared_key)},
    {.name = "self_hostname",
     .type = LG_OPT_STRING,
     .doc = "Hostname sent in the handshake (default: the host's name; must "
            "differ from the server's).",
     .offset = offsetof(fwd_conf_t, self_hostname)},
    {.name = "username",
     .type = LG_OPT_STRING,
     .doc = "User for servers with user authentication.",
     .offset = offsetof(fwd_conf_t, username)},
    {.name = "password",
     .type = LG_OPT_STRING,
     .doc = "Password of `username`.",
     .offset = offsetof(fwd_conf_t, password)},
    {.name = "tls",
     .type = LG_OPT_BOOL,
     .def = "false",
     .doc = "Connect with TLS.",
     .offset = offsetof(fwd_conf_t, tls)},
    {.name = "tls_ca",
     .type = LG_OPT_PATH,
     .doc = "CA certificates (PEM) to verify the server with (default: the "
            "system's).",
     .offset = offsetof(fwd_conf_t, tls_ca)},
    {.name = "tls_verify",
     .type = LG_OPT_BOOL,
     .def = "true",
     .doc = "Verify the server's certificate and name.",
     .offset = offsetof(fwd_conf_t, tls_verify)},
    {.name = "tls_cert",
     .type = LG_OPT_PATH,
     .doc = "Client certificate (PEM), for servers that ask for one.",
     .offset = offsetof(fwd_conf_t, tls_cert)},
    {.name = "tls_key",
     .type = LG_OPT_PATH,
     .doc = "Private key of tls_cert (PEM).",
     .offset = offsetof(fwd_conf_t, tls_key)},
    {.name = "tls_server_name",
     .type = LG_OPT_STRING,
     .doc = "Name to check the certificate against and send as SNI (default: "
            "the server's host).",
     .offset = offsetof(fwd_conf_t, tls_server_name)},
    LG_OUT_DELIVERY_OPTIONS(fwd_conf_t, "1000", "4MiB", "100ms", "4", "0"),
    {.name = NULL},
};

typedef struct fwd {
  lg_output_t *o;
  const fwd_conf_t *conf;
  lg_fwd_client_t *cli;
  lg_tls_ctx_t *tls;
  lg_fwd_encode_cfg_t enc;
} fwd_t;

static int fwd_encode(const void *conf, const lg_batch_t *b, uint32_t i,
                      const char *error, lg_payload_t *out) {
  const fwd_conf_t *c = conf;
  lg_fwd_encode_cfg_t enc = {.body_key = c->body_key,
                             .time_as_integer = c->time_as_integer};
  int rc = lg_fwd_encode_entry(&out->data, &enc, b, i, error);
  if (rc == 0 && !lg_fwd_tag_is_static(c->tag))
    rc = lg_fwd_tag_render(&out->meta, c->tag, b, i);
  return rc;
}

/* lg_output_type_t.check. */
static int fwd_check(const char *name, const void *conf, char *err,
                     size_t errlen) {
  const fwd_conf_t *c = conf;
  if (c->servers.n == 0) {
    snprintf(err, errlen, "outputs.%s.servers: at least one server", name);
    return -EINVAL;
  }
  for (size_t i = 0; i < c->servers.n; i++) {
    const char *host;
    size_t hl;
    int port;
    char why[300];
    if (strncmp(c->servers.v[i], "unix:", 5) != 0 &&
        lg_fwd_server_parse(c->servers.v[i], &host, &hl, &port, why,
                            sizeof why) < 0) {
      snprintf(err, errlen, "outputs.%s.servers[%zu]: %s", name, i + 1, why);
      return -EINVAL;
    }
  }
  if (c->username != NULL && c->shared_key == NULL) {
    snprintf(err, errlen,
             "outputs.%s.username: needs shared_key (user authentication is "
             "part of the handshake)",
             name);
    return -EINVAL;
  }
  return 0;
}

static int fwd_init(lg_output_t *o, const void *conf, char *err,
                    size_t errlen) {
  const fwd_conf_t *c = conf;
  fwd_t *f = calloc(1, sizeof *f);
  if (f == NULL)
    return -ENOMEM;
  f->o = o;
  f->conf = c;
  char terr[256];
  if (c->tls) {
    f->tls = lg_tls_ctx_client(c->tls_ca, c->tls_verify, c->tls_cert,
                               c->tls_key, terr, sizeof terr);
    if (f->tls == NULL) {
      snprintf(err, errlen, "outputs.%s: TLS: %s", o->name, terr);
      free(f);
      return -EINVAL;
    }
    if (!c->tls_verify)
      lg_log_warn("config",
                  "outputs.%s: tls_verify = false: the server's "
                  "certificate is not checked",
                  o->name);
  }
  lg_fwd_client_cfg_t cc;
  lg_fwd_client_cfg_defaults(&cc);
  cc.name = o->name;
  cc.servers = (const char *const *)c->servers.v;
  cc.nservers = c->servers.n;
  cc.shared_key = c->shared_key;
  cc.self_hostname = c->self_hostname;
  cc.username = c->username;
  cc.password = c->password;
  cc.tls = f->tls;
  cc.tls_verify_hostname = c->tls_verify;
  cc.tls_server_name = c->tls_server_name;
  cc.require_ack = c->require_ack;
  cc.ack_timeout_ms = (uint64_t)c->ack_timeout_ms;
  cc.connect_timeout_ms = (uint64_t)c->connect_timeout_ms;
  int rc = lg_fwd_client_create(o->loop, &cc, &f->cli, terr, sizeof terr);
  if (rc != 0) {
    snprintf(err, errlen, "outputs.%s.%s", o->name, terr);
    lg_tls_ctx_destroy(f->tls);
    free(f);
    return rc;
  }
  o->impl = f;
  return 0;
}

/* One request in flight: its messages and how many are still out. */
typedef struct fwd_req {
  lg_out_req_t *r;
  int pending;
  int failed;
} fwd_req_t;

typedef struct fwd_msg_ctx {
  fwd_req_t *q;
  uint32_t from, to; /* its records in the request */
} fwd_msg_ctx_t;

static void on_sent(void *ud, int status, const char *reason) {
  fwd_msg_ctx_t *m = ud;
  fwd_req_t *q = m->q;
  if (status != 0) {
    for (uint32_t j = m->from; j < m->to; j++)
      lg_out_req_set(q->r, j, LG_OUT_RETRY, reason);
    q->failed = 1;
  }
  free(m);
  if (--q->pending == 0) {
    lg_out_req_done(q->r, LG_OUT_DELIVERED, NULL);
    free(q);
  }
}

static void fwd_send(lg_output_t *o, lg_out_req_t *r) {
  fwd_t *f = o->impl;
  const fwd_conf_t *c = f->conf;
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  fwd_req_t *q = calloc(1, sizeof *q);
  if (q == NULL) {
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  q->r = r;
  q->pending = 1; /* held until every message is out */
  lg_buf_t entries = LG_BUF_INIT, msg = LG_BUF_INIT;
  int is_static = lg_fwd_tag_is_static(c->tag);
  uint32_t j = 0;
  while (j < r->n) {
    /* A run of records with one tag becomes one message. */
    const char *tag = is_static ? c->tag : recs[j].meta;
    size_t tag_len = is_static ? strlen(c->tag) : recs[j].meta_len;
    uint32_t k = j;
    entries.len = 0;
    while (k < r->n &&
           (is_static || (recs[k].meta_len == tag_len &&
                          memcmp(recs[k].meta, tag, tag_len) == 0))) {
      if (lg_buf_append(&entries, recs[k].data, recs[k].len) != 0)
        break;
      k++;
    }
    fwd_msg_ctx_t *m = calloc(1, sizeof *m);
    char chunk[25];
    int rc = m == NULL || k == j ? -ENOMEM : 0;
    if (rc == 0 && c->require_ack)
      rc = lg_fwd_chunk_id(chunk);
    msg.len = 0;
    if (rc == 0)
      rc = lg_fwd_encode_packed(
          &msg, tag_len ? tag : "lugger", tag_len ? tag_len : 6, entries.data,
          entries.len, k - j, c->require_ack ? chunk : NULL, 24,
          c->compress == 1);
    if (rc == 0) {
      m->q = q;
      m->from = j;
      m->to = k;
      q->pending++;
      rc = lg_fwd_client_send(f->cli, &msg, c->require_ack ? chunk : NULL, 24,
                              on_sent, m);
      if (rc != 0) {
        q->pending--;
      }
    }
    if (rc != 0) {
      free(m);
      if (k == j)
        k = j + 1;
      for (uint32_t x = j; x < k; x++)
        lg_out_req_set(r, x, LG_OUT_RETRY,
                       rc == -ESHUTDOWN ? "output closing" : "out of memory");
    }
    j = k;
  }
  lg_buf_free(&entries);
  lg_buf_free(&msg);
  if (--q->pending == 0) {
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
    free(q);
  }
}

static void fwd_cancel(lg_output_t *o) {
  fwd_t *f = o->impl;
  lg_fwd_client_cancel(f->cli);
}

static void on_client_closed(void *ud) {
  fwd_t *f = ud;
  lg_output_t *o = f->o;
  lg_tls_ctx_destroy(f->tls);
  free(f);
  lg_output_closed(o);
}

static void fwd_close(lg_output_t *o) {
  fwd_t *f = o->impl;
  lg_fwd_client_close(f->cli, on_client_closed, f);
}

const lg_output_type_t lg__output_forward = {
    .name = "forward",
    .doc = "Sends records to fluentd, Fluent Bit or lugger with the Fluent "
           "forward protocol (PackedForward, acks, failover, TLS).",
    .options = fwd_options,
    .conf_size = sizeof(fwd_conf_t),
    .encode = fwd_encode,
    .check = fwd_check,
    .init = fwd_init,
    .send = fwd_send,
    .cancel = fwd_cancel,
    .close = fwd_close,
};
