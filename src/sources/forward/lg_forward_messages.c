/*
 * lg_forward_messages.c - what a complete forward message does on the
 * server: the shared-key handshake (HELO, then PING checked and answered
 * with a PONG), records decoded into the connection's batch, and the acks
 * ({"ack": chunk}) that go out only once the receiver releases the batch
 * as delivered. See lg_forward_server.h for the contract and
 * lg_forward_server_internal.h for how the two server files divide the
 * work.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_list.h"
#include "core/lg_log.h"
#include "sources/forward/lg_forward_server_internal.h"

/* --- acks --- */

uint32_t lg_fwd_ack_count(const lg_fwd_ack_t *ack) {
  return ack ? ack->count : 0;
}

static void ack_unlink(lg_fwd_ack_t *a) {
  conn_t *c = a->conn;
  if (c == NULL)
    return;
  LG_LIST_UNLINK(c->acks, a);
  a->prev = a->next = NULL;
  a->conn = NULL;
}

void lg_fwd_ack_release(lg_fwd_ack_t *ack, int delivered) {
  if (ack == NULL)
    return;
  conn_t *c = ack->conn;
  ack_unlink(ack);
  if (delivered && c != NULL && c->state != ST_CLOSING) {
    lg_metric_add(c->srv->m_acks, ack->count);
    lg__fwd_conn_send(c, ack->bytes.data, ack->bytes.len, 0);
  }
  lg_buf_free(&ack->bytes);
  free(ack);
}

/* --- batches of a connection --- */

/* Hands the batch of this read to the receiver. */
void lg__fwd_flush_batch(conn_t *c) {
  lg_fwd_server_t *s = c->srv;
  lg_batch_t *b = c->batch;
  lg_fwd_ack_t *a = c->acking;
  c->batch = NULL;
  c->acking = NULL;
  if (b != NULL && b->n == 0) {
    /* Only empty chunks: nothing to deliver, ack now. */
    lg_batch_destroy(b);
    b = NULL;
  }
  if (a != NULL) {
    a->conn = c;
    LG_LIST_PUSH(c->acks, a);
  }
  if (b == NULL) {
    lg_fwd_ack_release(a, 1);
    return;
  }
  s->cfg.on_batch(s->cfg.ud, b, a, c->peer, c->id);
}

void lg__fwd_conn_drop_batch(conn_t *c) {
  lg_fwd_server_t *s = c->srv;
  if (c->batch == NULL)
    return;
  if (c->batch->n > 0) {
    /* Deliver what arrived whole; its acks cannot be sent any more. */
    lg_fwd_ack_release(c->acking, 0);
    s->cfg.on_batch(s->cfg.ud, c->batch, NULL, c->peer, c->id);
  } else {
    lg_batch_destroy(c->batch);
    lg_fwd_ack_release(c->acking, 0);
  }
  c->batch = NULL;
  c->acking = NULL;
}

void lg__fwd_conn_orphan_acks(conn_t *c) {
  while (c->acks != NULL)
    ack_unlink(c->acks);
}

/* --- handshake --- */

int lg__fwd_send_helo(conn_t *c) {
  lg_buf_t helo = LG_BUF_INIT;
  int rc = lg_fwd_auth_helo(&c->auth, &helo);
  if (rc == 0)
    lg__fwd_conn_send(c, helo.data, helo.len, 0);
  else
    lg__fwd_conn_error(c, R_INTERNAL, "cannot send the HELO: %s",
                       rc == -ENOMEM ? "out of memory"
                                     : "no randomness for the handshake nonce");
  lg_buf_free(&helo);
  return rc;
}

static void handle_auth(conn_t *c, const char *frame, size_t len) {
  lg_buf_t pong = LG_BUF_INIT;
  char host[128], reason[256];
  int rc = lg_fwd_auth_ping(&c->auth, frame, len, &pong, host, sizeof host,
                            reason, sizeof reason);
  if (rc == 0) {
    c->state = ST_READY;
    size_t pl = strlen(c->peer);
    snprintf(c->peer + pl, sizeof c->peer - pl, " (%s)", host);
    lg__fwd_conn_send(c, pong.data, pong.len, 0);
  } else {
    lg_metric_add(c->srv->m_closed[R_AUTH], 1);
    lg_log_warn(c->srv->component,
                "%s%s%s: authentication failed: %s; closing the connection",
                c->peer, host[0] ? " as " : "", host, reason);
    /* Send the refusal, read nothing more, then close. */
    c->state = ST_REFUSED;
    lg__fwd_conn_stop_reading(c);
    lg__fwd_conn_send(c, pong.data, pong.len, 1);
  }
  lg_buf_free(&pong);
}

/* --- messages --- */

/* Decodes one complete message. Returns 0, or -1 when the connection was
 * closed. */
int lg__fwd_message(conn_t *c, const char *frame, size_t len) {
  lg_fwd_server_t *s = c->srv;
  if (c->state == ST_AUTH) {
    handle_auth(c, frame, len);
    return c->state == ST_READY ? 0 : -1;
  }
  if (c->batch == NULL) {
    c->batch = s->cfg.get_batch
                   ? s->cfg.get_batch(s->cfg.ud)
                   : lg_batch_create(len < (1u << 20) ? len * 2 + 256 : len);
    if (c->batch == NULL) {
      lg__fwd_conn_error(c, R_INTERNAL, "out of memory");
      return -1;
    }
  }
  lg_fwd_msg_t msg;
  char err[256];
  uint32_t n0 = c->batch->n;
  int rc = lg_fwd_decode(&s->cfg.decode, frame, len, c->batch, &msg,
                         &s->scratch, err, sizeof err);
  if (rc != 0) {
    /* Drop this message's records; the whole messages before it stay. */
    c->batch->n = n0;
    lg__fwd_conn_error(c, R_MALFORMED, "bad forward message (%zu bytes): %s",
                       len, err);
    return -1;
  }
  lg_metric_add(s->m_messages, 1);
  lg_metric_add(s->m_records, msg.nrecords);
  if (msg.chunk != NULL) {
    if (c->acking == NULL) {
      c->acking = calloc(1, sizeof *c->acking);
      if (c->acking == NULL) {
        lg__fwd_conn_error(c, R_INTERNAL, "out of memory");
        return -1;
      }
    }
    if (lg_fwd_encode_ack(&c->acking->bytes, msg.chunk, msg.chunk_len) != 0) {
      lg__fwd_conn_error(c, R_INTERNAL, "out of memory");
      return -1;
    }
    c->acking->count++;
  }
  if (c->batch->data_len >= s->cfg.batch_max_bytes)
    lg__fwd_flush_batch(c);
  return 0;
}
