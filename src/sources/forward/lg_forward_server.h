/*
 * lg_forward_server.h - the network side of the forward source: a TCP
 * and/or Unix socket listener on a libuv loop that speaks Fluent forward
 * protocol v1 (see lg_forward_decode.h), with TLS on the same port, the
 * shared-key handshake, UDP heartbeat answers, limits, and acks that wait
 * for delivery.
 *
 * Records: every read of a connection is cut into messages (lg_mp_scan,
 * bounded by max_message_bytes) and the messages' records go into one
 * batch, handed to on_batch with an ack handle. The server sends
 * {"ack": chunk} for the chunks of that batch only when the receiver
 * releases the handle as delivered (lg_fwd_ack_release): that is after
 * every record was delivered to every output or dead-lettered, so the
 * sender keeps its buffer until then (end-to-end at-least-once). If the
 * connection closed meanwhile, the ack is dropped and the sender resends.
 *
 * Errors: a malformed or oversized message, a failed handshake, plain
 * bytes on a TLS port, a message not complete within message_timeout_ms
 * (slow sender) or a connection idle for idle_timeout_ms closes that one
 * connection with a log line naming the peer ("tcp 10.0.0.7:51234" or
 * "unix pid 4711"); the other connections go on. Connections over
 * max_connections are closed on accept, with a warning.
 *
 * Backpressure: lg_fwd_server_pause stops reading every connection (TCP
 * flow control then reaches the senders); nothing is dropped.
 *
 * All functions and callbacks run on the loop's thread.
 */
#ifndef LG_FORWARD_SERVER_H
#define LG_FORWARD_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/lg_tls.h"
#include "pipeline/lg_batch.h"
#include "sources/forward/lg_forward_auth.h"
#include "sources/forward/lg_forward_decode.h"

typedef struct lg_fwd_server lg_fwd_server_t;
typedef struct lg_fwd_ack lg_fwd_ack_t;

/* Called with a batch (the receiver owns it now) and its ack handle, or
 * NULL when none of its messages asked for an ack. `peer` names the
 * connection; `conn_id` (1, 2, ...) tells the server's connections apart:
 * the batches of one connection come in the order its messages came. */
typedef void (*lg_fwd_on_batch_fn)(void *ud, lg_batch_t *b, lg_fwd_ack_t *ack,
                                   const char *peer, uint64_t conn_id);

/* Gives an empty batch to fill (e.g. from the engine's pool, charged to
 * the memory budget); NULL when out of memory. */
typedef lg_batch_t *(*lg_fwd_get_batch_fn)(void *ud);

typedef struct lg_fwd_server_cfg {
  const char *name; /* source name, for logs ("source.<name>") */
  const char *host; /* TCP bind address; NULL: 0.0.0.0 */
  int port; /* TCP (and UDP heartbeat) port; 0: any free one; -1: no TCP */
  const char *unix_path;       /* Unix socket path; NULL: none */
  int unix_mode;               /* its permissions, e.g. 0660; 0: leave as is */
  int udp_heartbeat;           /* answer 1-byte UDP heartbeats on `port` */
  size_t max_message_bytes;    /* one msgpack message; default 64 MiB */
  uint32_t max_connections;    /* default 1024 */
  uint64_t message_timeout_ms; /* a started message must complete; 60 s */
  uint64_t idle_timeout_ms;    /* no bytes at all; 0: never (default) */
  size_t batch_max_bytes;      /* records of one read per batch; 4 MiB */
  size_t max_buffered_bytes;   /* partial messages of all connections; a
                                  connection adding over it is closed;
                                  256 MiB, at least max_message_bytes */
  const char *shared_key;      /* NULL: no handshake */
  const char *self_hostname;   /* sent in PONG; default: gethostname() */
  const lg_fwd_user_t *users;  /* user authentication (with shared_key) */
  size_t nusers;
  lg_tls_ctx_t *tls; /* not NULL: every connection must be TLS;
                        the caller keeps it alive */
  lg_fwd_decode_cfg_t decode;
  lg_fwd_on_batch_fn on_batch;
  lg_fwd_get_batch_fn get_batch; /* NULL: lg_batch_create */
  void *ud;
} lg_fwd_server_cfg_t;

/* Fills cfg with the defaults above (port 24224, UDP heartbeat on). */
void lg_fwd_server_cfg_defaults(lg_fwd_server_cfg_t *cfg);

/*
 * Creates the server and starts listening. The cfg's strings and arrays
 * must outlive the server. Returns 0 and the server in *out, or a
 * negative errno (bind failure: address in use, permission) with a reason
 * in err.
 */
int lg_fwd_server_start(uv_loop_t *loop, const lg_fwd_server_cfg_t *cfg,
                        lg_fwd_server_t **out, char *err, size_t errlen);

/* Stops reading every connection (backpressure) / reads again. */
void lg_fwd_server_pause(lg_fwd_server_t *s);
void lg_fwd_server_resume(lg_fwd_server_t *s);

/* The TCP port actually bound (useful with port 0 in tests: an
 * ephemeral port). */
int lg_fwd_server_port(const lg_fwd_server_t *s);

/* Open connections now. */
uint32_t lg_fwd_server_connections(const lg_fwd_server_t *s);

/*
 * Closes the listeners and every connection; ack handles still held by
 * the receiver stay valid (releasing them then sends nothing). `done` is
 * called once every handle is closed; the server is freed after it.
 */
void lg_fwd_server_close(lg_fwd_server_t *s, void (*done)(void *ud), void *ud);

/*
 * Releases an ack handle: with `delivered` set, {"ack": chunk} is sent for
 * each chunk of the batch if its connection is still open; otherwise
 * nothing is sent (the sender times out and resends). Frees the handle.
 * NULL-safe.
 */
void lg_fwd_ack_release(lg_fwd_ack_t *ack, int delivered);

/* Number of chunk ids the handle acks. */
uint32_t lg_fwd_ack_count(const lg_fwd_ack_t *ack);

#endif
