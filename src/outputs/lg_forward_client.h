/*
 * lg_forward_client.h - the network side of the forward output: one
 * connection at a time to one of several Fluent forward servers (TCP with
 * optional TLS, or a Unix socket), the shared-key handshake, pipelined
 * messages, and acks matched by chunk id.
 *
 * Failover: servers are tried in the configured order; the client stays
 * on a server until it fails (connect error or timeout, handshake refused,
 * connection lost, an ack not back within ack_timeout_ms), then moves to
 * the next one for the next message. A failure fails every message
 * written and not yet acked, and every message queued (callback with a
 * negative status and a reason): the delivery layer retries them after its
 * backoff, so a receiver that crashed after taking a chunk but before its
 * ack gets that chunk again (at-least-once; the duplicates are what was in
 * flight).
 *
 * Loop thread only.
 */
#ifndef LG_FORWARD_CLIENT_H
#define LG_FORWARD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/lg_buf.h"
#include "core/lg_tls.h"

typedef struct lg_fwd_client lg_fwd_client_t;

/* status 0: acked (or, without require_ack, written); negative: failed,
 * with a reason naming the server. */
typedef void (*lg_fwd_sent_fn)(void *ud, int status, const char *reason);

typedef struct lg_fwd_client_cfg {
  const char *name;           /* output name, for logs ("output.<name>") */
  const char *const *servers; /* "host:port" (port default 24224) or
                                 "unix:/path" */
  size_t nservers;
  const char *shared_key;    /* NULL: no handshake */
  const char *self_hostname; /* PING's hostname; default gethostname() */
  const char *username, *password;
  lg_tls_ctx_t *tls;           /* NULL: plain TCP; the caller keeps it */
  int tls_verify_hostname;     /* check the certificate names the host */
  const char *tls_server_name; /* SNI and the name checked; NULL: the host */
  int require_ack;             /* wait for {"ack": chunk} */
  uint64_t ack_timeout_ms;     /* default 60 s */
  uint64_t connect_timeout_ms; /* default 10 s */
} lg_fwd_client_cfg_t;

void lg_fwd_client_cfg_defaults(lg_fwd_client_cfg_t *cfg);

/* Parses a server "host", "host:port" or "[v6]:port" (not "unix:..."):
 * the host as a span of `spec` and the port (24224 if left out). 0, or
 * -EINVAL with the reason in err ("\"spec\": bad port"). */
int lg_fwd_server_parse(const char *spec, const char **host, size_t *hostlen,
                        int *port, char *err, size_t errlen);

/* Checks the server list (a reason in err) and creates the client; it
 * connects on the first send. Returns 0 or a negative errno. */
int lg_fwd_client_create(uv_loop_t *loop, const lg_fwd_client_cfg_t *cfg,
                         lg_fwd_client_t **out, char *err, size_t errlen);

/*
 * Sends one encoded message (lg_fwd_encode_packed) whose option "chunk" is
 * chunk[0..chunk_len) (required with require_ack). The client takes the
 * bytes of *msg (the buffer is left empty). `cb(ud, ...)` runs exactly
 * once, later, on the loop. Returns 0 or -ESHUTDOWN after close.
 */
int lg_fwd_client_send(lg_fwd_client_t *c, lg_buf_t *msg, const char *chunk,
                       size_t chunk_len, lg_fwd_sent_fn cb, void *ud);

/* Fails every message not yet acked (status -ECANCELED) and drops the
 * connection. */
void lg_fwd_client_cancel(lg_fwd_client_t *c);

/* Cancels, closes the handles, calls done(ud) and frees the client. */
void lg_fwd_client_close(lg_fwd_client_t *c, void (*done)(void *ud), void *ud);

/* The server the next message goes to ("host:port"), for logs and tests. */
const char *lg_fwd_client_server(const lg_fwd_client_t *c);

#endif
