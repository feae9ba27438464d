/* The config side of the forward source type (lg_conf_source_type_t): its
 * option table (one declaration drives parsing, `lugger check` and the
 * docs), parsing, comparison and freeing. */
#include "sources/forward/lg_forward_conf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "config/lg_config_parse.h"
#include "core/lg_util.h"

enum {
  W_HOST,
  W_PORT,
  W_UNIX_PATH,
  W_UNIX_MODE,
  W_UDP_HEARTBEAT,
  W_SHARED_KEY,
  W_SELF_HOSTNAME,
  W_USERS,
  W_TLS_CERT,
  W_TLS_KEY,
  W_TLS_CA,
  W_TAG_KEY,
  W_BODY_KEYS,
  W_MAX_MESSAGE_BYTES,
  W_MAX_DECOMPRESSED_BYTES,
  W_MAX_CONNECTIONS,
  W_MAX_BUFFERED_BYTES,
  W_MESSAGE_TIMEOUT,
  W_IDLE_TIMEOUT,
  W_COUNT
};

static int check_port(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i < -1 || v->i > 65535) {
    snprintf(err, errlen, "expected a port 0..65535 (or -1: no TCP), got %lld",
             (long long)v->i);
    return -EINVAL;
  }
  return 0;
}

static int check_mode(const lg_optval_t *v, char *err, size_t errlen) {
  const char *s = v->s ? v->s : "";
  size_t n = strlen(s);
  int ok = n > 0 && n <= 4;
  for (size_t i = 0; ok && i < n; i++)
    ok = s[i] >= '0' && s[i] <= '7';
  if (!ok) {
    snprintf(err, errlen, "expected an octal mode like \"0660\", got \"%s\"",
             s);
    return -EINVAL;
  }
  return 0;
}

static int check_nonneg(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i < 0) {
    snprintf(err, errlen, "must not be negative");
    return -EINVAL;
  }
  return 0;
}

static const lg_option_t fwd_source_options[] = {
    [W_HOST] = {.name = "host",
                .type = LG_OPT_STRING,
                .def = "0.0.0.0",
                .doc = "Address the TCP listener binds (an IPv4 or IPv6 "
                       "address)."},
    [W_PORT] = {.name = "port",
                .type = LG_OPT_INT,
                .def = "24224",
                .check = check_port,
                .doc = "TCP port (records, TLS) and UDP port (heartbeats); -1: "
                       "no TCP listener."},
    [W_UNIX_PATH] = {.name = "unix_path",
                     .type = LG_OPT_PATH,
                     .doc = "Also listen on this Unix socket."},
    [W_UNIX_MODE] = {.name = "unix_mode",
                     .type = LG_OPT_STRING,
                     .def = "0660",
                     .check = check_mode,
                     .doc = "Permissions of the Unix socket, in octal."},
    [W_UDP_HEARTBEAT] = {.name = "udp_heartbeat",
                         .type = LG_OPT_BOOL,
                         .def = "true",
                         .doc = "Answer fluentd's UDP heartbeats on `port`."},
    [W_SHARED_KEY] = {.name = "shared_key",
                      .type = LG_OPT_STRING,
                      .doc = "Require the HELO/PING/PONG handshake with this "
                             "key."},
    [W_SELF_HOSTNAME] = {.name = "self_hostname",
                         .type = LG_OPT_STRING,
                         .doc = "Hostname sent in PONG (default: the host's "
                                "name)."},
    [W_USERS] = {.name = "users",
                 .type = LG_OPT_STRMAP,
                 .doc = "User authentication in the handshake: { name = "
                        "\"password\" } (needs shared_key)."},
    [W_TLS_CERT] = {.name = "tls_cert",
                    .type = LG_OPT_PATH,
                    .doc = "Certificate chain (PEM): every connection must "
                           "then be TLS."},
    [W_TLS_KEY] = {.name = "tls_key",
                   .type = LG_OPT_PATH,
                   .doc = "Private key of tls_cert (PEM)."},
    [W_TLS_CA] = {.name = "tls_ca",
                  .type = LG_OPT_PATH,
                  .doc = "Require client certificates signed by these CAs "
                         "(PEM)."},
    [W_TAG_KEY] = {.name = "tag_key",
                   .type = LG_OPT_STRING,
                   .def = "fluent.tag",
                   .doc = "Field the tag goes to (\"\": dropped)."},
    [W_BODY_KEYS] = {.name = "body_keys",
                     .type = LG_OPT_STRLIST,
                     .def = "log",
                     .doc = "Record keys tried in order for the body; the "
                            "first one holding a string becomes it (default "
                            "{ \"log\", \"message\" })."},
    [W_MAX_MESSAGE_BYTES] = {.name = "max_message_bytes",
                             .type = LG_OPT_BYTES,
                             .def = "64MiB",
                             .check = lg_opt_check_positive,
                             .doc = "Largest message; a larger one closes its "
                                    "connection as soon as its header says "
                                    "so."},
    [W_MAX_DECOMPRESSED_BYTES] = {.name = "max_decompressed_bytes",
                                  .type = LG_OPT_BYTES,
                                  .def = "256MiB",
                                  .check = lg_opt_check_positive,
                                  .doc = "Largest gzip payload once "
                                         "inflated."},
    [W_MAX_CONNECTIONS] = {.name = "max_connections",
                           .type = LG_OPT_INT,
                           .def = "1024",
                           .check = lg_opt_check_positive,
                           .doc = "Connections at a time; more are closed on "
                                  "accept."},
    [W_MAX_BUFFERED_BYTES] = {.name = "max_buffered_bytes",
                              .type = LG_OPT_BYTES,
                              .def = "256MiB",
                              .check = lg_opt_check_positive,
                              .doc = "Partial messages of all connections "
                                     "together; a connection adding over it "
                                     "is closed (its sender resends)."},
    [W_MESSAGE_TIMEOUT] = {.name = "message_timeout",
                           .type = LG_OPT_DURATION,
                           .def = "60s",
                           .check = check_nonneg,
                           .doc = "A started message must be complete within "
                                  "this (slow senders; 0: no limit)."},
    [W_IDLE_TIMEOUT] = {.name = "idle_timeout",
                        .type = LG_OPT_DURATION,
                        .def = "0",
                        .check = check_nonneg,
                        .doc = "Close connections silent this long (0: "
                               "never)."},
    [W_COUNT] = {.name = NULL},
};

static void fwd_parse(lg_conf_parse_t *x, lg_conf_source_t *s, const char *path,
                      int tbl) {
  lg_optval_t v[W_COUNT];
  memset(v, 0, sizeof v);
  static const char *const extra[] = {"type", NULL};
  lg_conf_parse_options(x, tbl, path, fwd_source_options, v, extra);
  lg_fwd_src_conf_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    lg_conf_parse_error(x, "out of memory");
    goto out;
  }
  s->type_conf = c;
  c->host = lg_conf_parse_strdup(x, v[W_HOST].s ? v[W_HOST].s : "0.0.0.0");
  c->port = (int)v[W_PORT].i;
  if (v[W_UNIX_PATH].s)
    c->unix_path = lg_conf_parse_resolve(x, v[W_UNIX_PATH].s);
  c->unix_mode =
      (int)strtol(v[W_UNIX_MODE].s ? v[W_UNIX_MODE].s : "0660", NULL, 8);
  c->udp_heartbeat = (int)v[W_UDP_HEARTBEAT].i;
  if (v[W_SHARED_KEY].s)
    c->shared_key = lg_conf_parse_strdup(x, v[W_SHARED_KEY].s);
  if (v[W_SELF_HOSTNAME].s)
    c->self_hostname = lg_conf_parse_strdup(x, v[W_SELF_HOSTNAME].s);
  if (v[W_USERS].n > 0) {
    if (c->shared_key == NULL)
      lg_conf_parse_error(x,
                          "%s.users: needs shared_key (user "
                          "authentication is part of the handshake)",
                          path);
    c->user_names = calloc(v[W_USERS].n, sizeof(char *));
    c->user_passwords = calloc(v[W_USERS].n, sizeof(char *));
    for (size_t k = 0; c->user_names && c->user_passwords && k < v[W_USERS].n;
         k++) {
      c->user_names[k] = lg_conf_parse_strdup(x, v[W_USERS].keys[k]);
      c->user_passwords[k] = lg_conf_parse_strdup(x, v[W_USERS].vals[k]);
      c->nusers = k + 1;
    }
  }
  if (v[W_TLS_CERT].s)
    c->tls_cert = lg_conf_parse_resolve(x, v[W_TLS_CERT].s);
  if (v[W_TLS_KEY].s)
    c->tls_key = lg_conf_parse_resolve(x, v[W_TLS_KEY].s);
  if (v[W_TLS_CA].s)
    c->tls_ca = lg_conf_parse_resolve(x, v[W_TLS_CA].s);
  if ((c->tls_cert == NULL) != (c->tls_key == NULL))
    lg_conf_parse_error(x, "%s: tls_cert and tls_key go together", path);
  if (c->tls_ca != NULL && c->tls_cert == NULL)
    lg_conf_parse_error(x, "%s.tls_ca: needs tls_cert and tls_key", path);
  if (c->port < 0 && c->unix_path == NULL)
    lg_conf_parse_error(x,
                        "%s: port = -1 needs unix_path (nothing to listen "
                        "on)",
                        path);
  c->tag_key = lg_conf_parse_strdup(x, v[W_TAG_KEY].s ? v[W_TAG_KEY].s : "");
  if (v[W_BODY_KEYS].set) {
    c->body_keys = lg_conf_parse_strv(x, &v[W_BODY_KEYS], 0, &c->nbody_keys);
  } else {
    static const char *const def[] = {"log", "message"};
    c->body_keys = calloc(2, sizeof(char *));
    for (size_t k = 0; c->body_keys && k < 2; k++)
      c->body_keys[k] = lg_conf_parse_strdup(x, def[k]), c->nbody_keys = k + 1;
  }
  c->max_message_bytes = (uint64_t)v[W_MAX_MESSAGE_BYTES].i;
  c->max_decompressed_bytes = (uint64_t)v[W_MAX_DECOMPRESSED_BYTES].i;
  c->max_buffered_bytes = (uint64_t)v[W_MAX_BUFFERED_BYTES].i;
  c->max_connections = v[W_MAX_CONNECTIONS].i > UINT32_MAX
                           ? UINT32_MAX
                           : (uint32_t)v[W_MAX_CONNECTIONS].i;
  c->message_timeout_ms = (uint64_t)v[W_MESSAGE_TIMEOUT].i;
  c->idle_timeout_ms = (uint64_t)v[W_IDLE_TIMEOUT].i;
out:
  for (int k = 0; k < W_COUNT; k++)
    lg_optval_free(&v[k]);
}

void lg_fwd_src_conf_free(lg_fwd_src_conf_t *c) {
  if (c == NULL)
    return;
  free(c->host);
  free(c->unix_path);
  free(c->shared_key);
  free(c->self_hostname);
  lg_util_strv_free(c->user_names, c->nusers);
  lg_util_strv_free(c->user_passwords, c->nusers);
  free(c->tls_cert);
  free(c->tls_key);
  free(c->tls_ca);
  free(c->tag_key);
  lg_util_strv_free(c->body_keys, c->nbody_keys);
  free(c);
}

int lg_fwd_src_conf_equal(const lg_fwd_src_conf_t *a,
                          const lg_fwd_src_conf_t *b) {
  if (a == NULL || b == NULL)
    return a == b;
  return lg_util_str_eq(a->host, b->host) && a->port == b->port &&
         lg_util_str_eq(a->unix_path, b->unix_path) &&
         a->unix_mode == b->unix_mode && a->udp_heartbeat == b->udp_heartbeat &&
         lg_util_str_eq(a->shared_key, b->shared_key) &&
         lg_util_str_eq(a->self_hostname, b->self_hostname) &&
         lg_util_strv_eq(a->user_names, a->nusers, b->user_names, b->nusers) &&
         lg_util_strv_eq(a->user_passwords, a->nusers, b->user_passwords,
                         b->nusers) &&
         lg_util_str_eq(a->tls_cert, b->tls_cert) &&
         lg_util_str_eq(a->tls_key, b->tls_key) &&
         lg_util_str_eq(a->tls_ca, b->tls_ca) &&
         lg_util_str_eq(a->tag_key, b->tag_key) &&
         lg_util_strv_eq(a->body_keys, a->nbody_keys, b->body_keys,
                         b->nbody_keys) &&
         a->max_message_bytes == b->max_message_bytes &&
         a->max_decompressed_bytes == b->max_decompressed_bytes &&
         a->max_connections == b->max_connections &&
         a->max_buffered_bytes == b->max_buffered_bytes &&
         a->message_timeout_ms == b->message_timeout_ms &&
         a->idle_timeout_ms == b->idle_timeout_ms;
}

static int fwd_equal(const void *a, const void *b) {
  return lg_fwd_src_conf_equal(a, b);
}

static void fwd_free(void *c) { lg_fwd_src_conf_free(c); }

/* The config side of the `forward` source type (its runtime is
 * lg_source_forward.c, which points here). */
const lg_conf_source_type_t lg_conf_source_forward = {
    .name = "forward",
    .options = fwd_source_options,
    .parse = fwd_parse,
    .equal = fwd_equal,
    .free = fwd_free,
};
