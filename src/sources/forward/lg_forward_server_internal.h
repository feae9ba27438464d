/*
 * lg_forward_server_internal.h - what the forward server's two files share,
 * and no one else (the source sees lg_forward_server.h only):
 *   lg_forward_server.c    listeners, connections (accept, reads, TLS,
 *                          writes, limits, timeouts), cutting the bytes of a
 *                          connection into messages, pause/resume, close
 *   lg_forward_messages.c  what a complete message does: the shared-key
 *                          handshake, records into the connection's batch,
 *                          and the acks that wait for delivery
 * Everything here runs on the loop's thread.
 */
#ifndef LG_FORWARD_SERVER_INTERNAL_H
#define LG_FORWARD_SERVER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/lg_buf.h"
#include "core/lg_metrics.h"
#include "core/lg_msgpack.h"
#include "sources/forward/lg_forward_server.h"

#define READ_CHUNK (64 * 1024)

typedef enum conn_state {
  ST_AUTH = 0,    /* waiting for PING */
  ST_READY = 1,   /* events */
  ST_REFUSED = 2, /* the handshake failed: sending the PONG, then closing */
  ST_CLOSING = 3,
} conn_state_t;

typedef struct conn conn_t;

struct lg_fwd_ack {
  conn_t *conn; /* NULL once the connection is gone */
  lg_fwd_ack_t *prev, *next;
  uint32_t count;
  lg_buf_t bytes; /* the encoded {"ack": id} maps, back to back */
};

struct conn {
  union {
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  lg_fwd_server_t *srv;
  conn_t *prev, *next;
  char peer[96];
  conn_state_t state;
  lg_buf_t in; /* plaintext not yet cut into messages */
  lg_mp_scan_t scan;
  lg_fwd_auth_server_t auth;
  lg_tls_t *tls;
  int tls_decided;
  uint64_t id;
  uint64_t last_activity_ms;
  uint64_t msg_start_ms; /* 0: no message in progress */
  int reading;
  size_t counted;       /* bytes of `in` counted in the server's `buffered` */
  lg_batch_t *batch;    /* being filled by this read */
  lg_fwd_ack_t *acking; /* acks of `batch` */
  lg_fwd_ack_t *acks;   /* handed out and not yet released */
};

struct lg_fwd_server {
  uv_loop_t *loop;
  lg_fwd_server_cfg_t cfg;
  char component[96];
  char hostname[256];
  uv_tcp_t tcp;
  uv_pipe_t pipe;
  uv_udp_t udp;
  uv_timer_t timer;
  int has_tcp, has_pipe, has_udp;
  int open_handles;
  int closing;
  int paused;
  int port;
  conn_t *conns;
  uint32_t nconns;
  uint64_t last_limit_warn_ms;
  uint64_t refused;
  uint64_t next_conn_id;
  size_t buffered; /* bytes of partial messages, all connections */
  /* Metrics, labelled with the source's name. */
  lg_metric_t *m_conns, *m_accepted, *m_refused, *m_messages, *m_records,
      *m_acks, *m_closed[9];
  lg_buf_t scratch;
  char rbuf[READ_CHUNK];
  void (*done)(void *);
  void *done_ud;
};

/* Why a connection was closed, for lugger_forward_closed_total{reason}. */
typedef enum close_reason {
  R_MALFORMED = 0, /* not msgpack, or not a forward message */
  R_TOO_LARGE,     /* over max_message_bytes or nested too deep */
  R_AUTH,          /* handshake refused */
  R_TLS,           /* plain bytes on a TLS port, TLS errors */
  R_SLOW,          /* message_timeout */
  R_IDLE,          /* idle_timeout */
  R_INTERNAL,      /* out of memory, no randomness */
  R_BUSY,          /* partial messages over max_buffered_bytes */
  R_WRITE,         /* a write to the sender failed (reset, broken pipe) */
  R_COUNT
} close_reason_t;

_Static_assert(R_COUNT == 9, "m_closed has one slot per reason");

/* --- lg_forward_server.c: the connection --- */

/* Sends `len` bytes (through TLS when the connection has it); with
 * close_after set, closes the connection once they are written. A write
 * that fails, at once or later on the loop, closes the connection with its
 * reason counted (R_TLS, R_INTERNAL or R_WRITE) and a log line: it may not
 * be reading (paused, or refused), so the failure cannot be left for a
 * read to find. The connection may be closed on return. */
void lg__fwd_conn_send(conn_t *c, const char *data, size_t len,
                       int close_after);

/* Stops reading the connection (a refused handshake reads nothing more). */
void lg__fwd_conn_stop_reading(conn_t *c);

/* Counts `why` in lugger_forward_closed_total, logs the message with the
 * peer's name and closes the connection. A close is counted once: nothing
 * on a connection already closing, no count on a refused one (counted as
 * R_AUTH when refused). */
void lg__fwd_conn_error(conn_t *c, close_reason_t why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- lg_forward_messages.c: what messages do --- */

/* Handles one complete message of frame[0..len): the PING while the
 * handshake is on, else a forward message whose records go into the
 * connection's batch (handed on once over batch_max_bytes). Returns 0, or
 * -1 when the connection was closed or is refused. */
int lg__fwd_message(conn_t *c, const char *frame, size_t len);

/* Hands the batch of this read to the receiver with its ack handle (or
 * acks at once when the batch has no records). */
void lg__fwd_flush_batch(conn_t *c);

/* For a connection that is closing: hands over what arrived whole, without
 * acks (they cannot be sent any more), and orphans the ack handles the
 * receiver still holds (releasing them then sends nothing). */
void lg__fwd_conn_drop_batch(conn_t *c);
void lg__fwd_conn_orphan_acks(conn_t *c);

/* Sends the HELO that opens the shared-key handshake (on a TLS port, once
 * TLS is up). Returns 0, or a negative errno when the HELO cannot be made
 * (-EIO: no randomness for the nonce, -ENOMEM): the connection is then
 * closed (lugger_forward_closed_total{reason="internal"}) with a log line
 * naming the peer and why, since its sender would wait for the HELO. */
int lg__fwd_send_helo(conn_t *c);

#endif
