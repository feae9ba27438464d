/*
 * lg_forward_server.c - see lg_forward_server.h; the connections side (what
 * a message does is in lg_forward_messages.c).
 */
#include "sources/forward/lg_forward_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/lg_list.h"
#include "core/lg_log.h"
#include "core/lg_metrics.h"
#include "core/lg_msgpack.h"
#include "sources/forward/lg_forward_server_internal.h"

void lg_fwd_server_cfg_defaults(lg_fwd_server_cfg_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->name = "forward";
  cfg->port = 24224;
  cfg->udp_heartbeat = 1;
  cfg->max_message_bytes = 64u << 20;
  cfg->max_connections = 1024;
  cfg->message_timeout_ms = 60000;
  cfg->idle_timeout_ms = 0;
  cfg->batch_max_bytes = 4u << 20;
  cfg->max_buffered_bytes = 256u << 20;
  cfg->decode = lg_fwd_decode_defaults;
}

static uint64_t now_ms(lg_fwd_server_t *s) { return uv_now(s->loop); }

/* --- connections --- */

static void handle_gone(lg_fwd_server_t *s);

static void conn_free(uv_handle_t *h) {
  conn_t *c = h->data;
  lg_fwd_server_t *s = c->srv;
  lg_buf_free(&c->in);
  lg_tls_destroy(c->tls);
  free(c);
  handle_gone(s);
}

/* Closes a connection. The batch being filled is handed over (its
 * records are whole messages); acks already handed out become orphans. */
static void conn_close(conn_t *c) {
  if (c->state == ST_CLOSING)
    return;
  lg_fwd_server_t *s = c->srv;
  lg__fwd_conn_drop_batch(c);
  c->state = ST_CLOSING;
  s->buffered -= c->counted;
  c->counted = 0;
  lg__fwd_conn_orphan_acks(c);
  LG_LIST_UNLINK(s->conns, c);
  s->nconns--;
  lg_metric_sub(s->m_conns, 1);
  uv_close((uv_handle_t *)&c->h.stream, conn_free);
}

typedef struct wreq {
  uv_write_t req;
  conn_t *conn;
  int close_after;
  size_t len;
  char data[];
} wreq_t;

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  conn_t *c = w->conn; /* freed only after every write's callback */
  int close_after = w->close_after;
  free(w);
  if (close_after)
    conn_close(c);
  else if (status < 0)
    lg__fwd_conn_error(c, R_WRITE, "write: %s", uv_strerror(status));
}

static void raw_write(conn_t *c, const char *data, size_t len,
                      int close_after) {
  if (c->state == ST_CLOSING)
    return;
  if (len == 0) {
    if (close_after)
      conn_close(c);
    return;
  }
  wreq_t *w = malloc(sizeof *w + len);
  if (w == NULL) {
    lg__fwd_conn_error(c, R_INTERNAL, "out of memory for a write");
    return;
  }
  w->conn = c;
  w->close_after = close_after;
  w->len = len;
  memcpy(w->data, data, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  int rc = uv_write(&w->req, &c->h.stream, &b, 1, on_written);
  if (rc != 0) {
    free(w);
    lg__fwd_conn_error(c, R_WRITE, "write: %s", uv_strerror(rc));
  }
}

void lg__fwd_conn_send(conn_t *c, const char *data, size_t len,
                       int close_after) {
  if (c->tls == NULL) {
    raw_write(c, data, len, close_after);
    return;
  }
  lg_buf_t wire = LG_BUF_INIT;
  char err[256];
  if (lg_tls_write(c->tls, data, len, &wire, err, sizeof err) != 0) {
    lg_buf_free(&wire);
    lg__fwd_conn_error(c, R_TLS, "%s", err);
    return;
  }
  raw_write(c, wire.data, wire.len, close_after);
  lg_buf_free(&wire);
}

static const char *const reason_names[R_COUNT] = {
    "malformed", "too_large", "auth", "tls",  "slow_sender",
    "idle",      "internal",  "busy", "write"};

void lg__fwd_conn_error(conn_t *c, close_reason_t why, const char *fmt, ...) {
  if (c->state == ST_CLOSING)
    return;
  /* A refused connection was counted under "auth" already. */
  if (c->state != ST_REFUSED)
    lg_metric_add(c->srv->m_closed[why], 1);
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lg_log_warn(c->srv->component, "%s: %s; closing the connection", c->peer,
              msg);
  conn_close(c);
}

/* Cuts c->in into messages and handles each. */
static void process(conn_t *c) {
  lg_fwd_server_t *s = c->srv;
  size_t off = 0;
  while (c->state < ST_REFUSED && off < c->in.len) {
    int rc = lg_mp_scan(&c->scan, c->in.data + off, c->in.len - off,
                        s->cfg.max_message_bytes);
    if (rc == LG_MP_COMPLETE) {
      size_t len = c->scan.pos;
      lg_mp_scan_init(&c->scan);
      c->msg_start_ms = 0;
      if (lg__fwd_message(c, c->in.data + off, len) != 0)
        return;
      off += len;
      continue;
    }
    if (rc == LG_MP_MORE) {
      if (c->msg_start_ms == 0)
        c->msg_start_ms = now_ms(s);
      break;
    }
    if (rc == -EMSGSIZE)
      lg__fwd_conn_error(c, R_TOO_LARGE,
                         "message over max_message_bytes (%zu bytes)",
                         s->cfg.max_message_bytes);
    else if (rc == -ELOOP)
      lg__fwd_conn_error(c, R_TOO_LARGE, "message nested deeper than %d levels",
                         LG_MP_MAX_DEPTH);
    else
      lg__fwd_conn_error(c, R_MALFORMED,
                         "malformed msgpack at byte %zu of the message",
                         c->scan.pos);
    return;
  }
  if (c->state >= ST_REFUSED)
    return;
  lg_buf_consume(&c->in, off);
  if (c->batch != NULL || c->acking != NULL)
    lg__fwd_flush_batch(c);
}

/* Counts what this connection holds of a partial message. Over
 * max_buffered_bytes for the whole server (say 1,000 senders each with half
 * of a large message), the connection that adds to it is closed: its sender
 * resends what was not acked, and the server's memory stays bounded. */
static void account(conn_t *c) {
  lg_fwd_server_t *s = c->srv;
  s->buffered = s->buffered - c->counted + c->in.len;
  c->counted = c->in.len;
  if (s->buffered > s->cfg.max_buffered_bytes && c->in.len > 0)
    lg__fwd_conn_error(
        c, R_BUSY,
        "partial messages of all connections over max_buffered_bytes "
        "(%zu bytes, this one %zu)",
        s->cfg.max_buffered_bytes, c->in.len);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn_t *c = h->data;
  *buf = uv_buf_init(c->srv->rbuf, sizeof c->srv->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = st->data;
  lg_fwd_server_t *s = c->srv;
  if (c->state >= ST_REFUSED)
    return;
  if (nread == 0)
    return;
  if (nread < 0) {
    if (nread != UV_EOF)
      lg_log_info(s->component, "%s: read: %s; closing the connection", c->peer,
                  uv_strerror((int)nread));
    else if (c->in.len > 0)
      lg_log_warn(s->component,
                  "%s: closed the connection in the middle of a message "
                  "(%zu bytes received of it)",
                  c->peer, c->in.len);
    conn_close(c);
    return;
  }
  c->last_activity_ms = now_ms(s);
  if (s->cfg.tls != NULL && !c->tls_decided) {
    c->tls_decided = 1;
    /* A TLS connection starts with a handshake record (content type 22). */
    if ((unsigned char)buf->base[0] != 0x16) {
      lg__fwd_conn_error(c, R_TLS,
                         "plain bytes on a TLS port (first byte 0x%02x)",
                         (unsigned char)buf->base[0]);
      return;
    }
    c->tls = lg_tls_create(s->cfg.tls, 1, NULL);
    if (c->tls == NULL) {
      lg__fwd_conn_error(c, R_INTERNAL, "out of memory");
      return;
    }
  }
  if (c->tls != NULL) {
    lg_buf_t wire = LG_BUF_INIT;
    char err[256];
    int was_ready = lg_tls_ready(c->tls);
    int rc = lg_tls_feed(c->tls, buf->base, (size_t)nread, &c->in, &wire, err,
                         sizeof err);
    raw_write(c, wire.data, wire.len, 0);
    lg_buf_free(&wire);
    if (rc != 0) {
      lg__fwd_conn_error(c, R_TLS, "%s", err);
      return;
    }
    /* The HELO goes out once TLS is up; without it the sender would wait
     * for one until idle_timeout, so a HELO that cannot be sent closes the
     * connection (as on a plain port). */
    if (!was_ready && lg_tls_ready(c->tls) && s->cfg.shared_key != NULL &&
        lg__fwd_send_helo(c) != 0)
      return;
  } else if (lg_buf_append(&c->in, buf->base, (size_t)nread) != 0) {
    lg__fwd_conn_error(c, R_INTERNAL, "out of memory");
    return;
  }
  process(c);
  if (c->state < ST_REFUSED)
    account(c);
}

static void conn_start_reading(conn_t *c) {
  if (c->reading || c->state == ST_CLOSING)
    return;
  if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0)
    c->reading = 1;
}

void lg__fwd_conn_stop_reading(conn_t *c) {
  if (!c->reading)
    return;
  uv_read_stop(&c->h.stream);
  c->reading = 0;
}

static void peer_name(conn_t *c, int is_tcp) {
  if (is_tcp) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0) {
      if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
      } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
      }
    }
    snprintf(c->peer, sizeof c->peer, "tcp %s:%d", ip, port);
  } else {
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t cl = sizeof cred;
    if (uv_fileno((uv_handle_t *)&c->h.pipe, &fd) == 0 &&
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
      snprintf(c->peer, sizeof c->peer, "unix pid %d", (int)cred.pid);
    else
      snprintf(c->peer, sizeof c->peer, "unix %s", c->srv->cfg.unix_path);
  }
}

static void on_refused_closed(uv_handle_t *h) {
  lg_fwd_server_t *s = h->data;
  free(h);
  handle_gone(s);
}

static void on_connection(uv_stream_t *server, int status) {
  lg_fwd_server_t *s = server->data;
  int is_tcp = server == (uv_stream_t *)&s->tcp;
  if (status < 0) {
    lg_log_warn(s->component, "accept: %s", uv_strerror(status));
    return;
  }
  if (s->nconns >= s->cfg.max_connections) {
    /* Take it off the backlog and close it, so the sender sees a refusal
     * instead of a hang. */
    union {
      uv_tcp_t tcp;
      uv_pipe_t pipe;
    } *tmp = malloc(sizeof *tmp);
    if (tmp == NULL)
      return;
    if (is_tcp)
      uv_tcp_init(s->loop, &tmp->tcp);
    else
      uv_pipe_init(s->loop, &tmp->pipe, 0);
    ((uv_handle_t *)tmp)->data = s;
    s->open_handles++;
    uv_accept(server, (uv_stream_t *)tmp);
    s->refused++;
    lg_metric_add(s->m_refused, 1);
    uint64_t now = now_ms(s);
    if (now - s->last_limit_warn_ms >= 10000 || s->last_limit_warn_ms == 0) {
      s->last_limit_warn_ms = now;
      lg_log_warn(s->component,
                  "connection limit reached (max_connections = %u): "
                  "refusing new connections (%llu refused so far)",
                  s->cfg.max_connections, (unsigned long long)s->refused);
    }
    uv_close((uv_handle_t *)tmp, on_refused_closed);
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return;
  c->srv = s;
  c->id = ++s->next_conn_id;
  if (is_tcp)
    uv_tcp_init(s->loop, &c->h.tcp);
  else
    uv_pipe_init(s->loop, &c->h.pipe, 0);
  c->h.stream.data = c;
  s->open_handles++;
  if (uv_accept(server, &c->h.stream) != 0) {
    c->state = ST_CLOSING;
    uv_close((uv_handle_t *)&c->h.stream, conn_free);
    return;
  }
  if (is_tcp)
    uv_tcp_nodelay(&c->h.tcp, 1);
  peer_name(c, is_tcp);
  c->last_activity_ms = now_ms(s);
  LG_LIST_PUSH(s->conns, c);
  s->nconns++;
  lg_metric_add(s->m_conns, 1);
  lg_metric_add(s->m_accepted, 1);
  lg_mp_scan_init(&c->scan);
  if (s->cfg.shared_key != NULL) {
    c->state = ST_AUTH;
    c->auth.shared_key = s->cfg.shared_key;
    c->auth.self_hostname = s->hostname;
    c->auth.users = s->cfg.users;
    c->auth.nusers = s->cfg.nusers;
    if (s->cfg.tls == NULL && lg__fwd_send_helo(c) != 0)
      return;
  } else {
    c->state = ST_READY;
  }
  if (!s->paused)
    conn_start_reading(c);
}

/* --- UDP heartbeat --- */

static void on_udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  lg_fwd_server_t *s = h->data;
  *buf = uv_buf_init(s->rbuf, 64);
}

static void on_udp(uv_udp_t *u, ssize_t nread, const uv_buf_t *buf,
                   const struct sockaddr *addr, unsigned flags) {
  if (nread < 0 || addr == NULL)
    return;
  /* fluentd's out_forward (heartbeat_type udp) sends one byte and expects
   * one 0x00 byte back from the same port. */
  uv_buf_t b = uv_buf_init("\0", 1);
  uv_udp_try_send(u, &b, 1, addr);
}

/* --- timer: slow senders and idle connections --- */

static void on_timer(uv_timer_t *t) {
  lg_fwd_server_t *s = t->data;
  if (s->paused)
    return; /* waiting on us is not the sender's fault */
  uint64_t now = now_ms(s);
  conn_t *next;
  for (conn_t *c = s->conns; c != NULL; c = next) {
    next = c->next;
    if (c->msg_start_ms != 0 && s->cfg.message_timeout_ms > 0 &&
        now - c->msg_start_ms > s->cfg.message_timeout_ms)
      lg__fwd_conn_error(c, R_SLOW,
                         "slow sender: message incomplete after %llu ms "
                         "(%zu bytes received; message_timeout)",
                         (unsigned long long)(now - c->msg_start_ms),
                         c->in.len);
    else if (s->cfg.idle_timeout_ms > 0 &&
             now - c->last_activity_ms > s->cfg.idle_timeout_ms)
      lg__fwd_conn_error(c, R_IDLE, "idle for %llu ms (idle_timeout)",
                         (unsigned long long)(now - c->last_activity_ms));
  }
}

/* --- server --- */

int lg_fwd_server_start(uv_loop_t *loop, const lg_fwd_server_cfg_t *cfg,
                        lg_fwd_server_t **out, char *err, size_t errlen) {
  *out = NULL;
  lg_fwd_server_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  s->loop = loop;
  s->cfg = *cfg;
  snprintf(s->component, sizeof s->component, "source.%s",
           cfg->name ? cfg->name : "forward");
  lg_fwd_auth_self_hostname(cfg->self_hostname, s->hostname,
                            sizeof s->hostname);
  /* One whole message must always fit. */
  if (s->cfg.max_buffered_bytes < s->cfg.max_message_bytes)
    s->cfg.max_buffered_bytes = s->cfg.max_message_bytes;
  const char *src = cfg->name ? cfg->name : "forward";
  s->m_conns = lg_metrics_gauge("lugger_forward_connections",
                                "Open connections of a forward source.",
                                "source", src, NULL);
  s->m_accepted = lg_metrics_counter("lugger_forward_connections_total",
                                     "Connections a forward source accepted.",
                                     "source", src, NULL);
  s->m_refused = lg_metrics_counter(
      "lugger_forward_connections_refused_total",
      "Connections closed on accept: max_connections reached.", "source", src,
      NULL);
  s->m_messages = lg_metrics_counter(
      "lugger_forward_messages_total",
      "Forward messages decoded (heartbeats included).", "source", src, NULL);
  s->m_records = lg_metrics_counter("lugger_forward_records_total",
                                    "Records read from forward messages.",
                                    "source", src, NULL);
  s->m_acks = lg_metrics_counter("lugger_forward_acks_total",
                                 "Chunks acked to senders (after delivery).",
                                 "source", src, NULL);
  for (int r = 0; r < R_COUNT; r++)
    s->m_closed[r] = lg_metrics_counter(
        "lugger_forward_closed_total",
        "Connections a forward source closed on an error, by reason.", "source",
        src, "reason", reason_names[r], NULL);
  const char *host = cfg->host ? cfg->host : "0.0.0.0";
  int rc = 0;
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  s->open_handles = 1;
  if (cfg->port >= 0) {
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, cfg->port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, cfg->port, (struct sockaddr_in6 *)&ss) != 0) {
      snprintf(err, errlen, "host \"%s\" is not an IP address", host);
      rc = -EINVAL;
      goto fail;
    }
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    s->has_tcp = 1;
    s->open_handles++;
    if ((rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&s->tcp, 511, on_connection)) != 0) {
      snprintf(err, errlen, "listen on %s:%d: %s", host, cfg->port,
               uv_strerror(rc));
      goto fail;
    }
    struct sockaddr_storage bound;
    int bl = sizeof bound;
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &bl);
    s->port = ntohs(bound.ss_family == AF_INET
                        ? ((struct sockaddr_in *)&bound)->sin_port
                        : ((struct sockaddr_in6 *)&bound)->sin6_port);
    if (cfg->udp_heartbeat) {
      struct sockaddr_storage us = ss;
      if (us.ss_family == AF_INET)
        ((struct sockaddr_in *)&us)->sin_port = htons((uint16_t)s->port);
      else
        ((struct sockaddr_in6 *)&us)->sin6_port = htons((uint16_t)s->port);
      uv_udp_init(loop, &s->udp);
      s->udp.data = s;
      s->has_udp = 1;
      s->open_handles++;
      if ((rc = uv_udp_bind(&s->udp, (struct sockaddr *)&us, 0)) != 0 ||
          (rc = uv_udp_recv_start(&s->udp, on_udp_alloc, on_udp)) != 0) {
        snprintf(err, errlen, "UDP heartbeat on %s:%d: %s", host, s->port,
                 uv_strerror(rc));
        goto fail;
      }
    }
  }
  if (cfg->unix_path != NULL) {
    uv_pipe_init(loop, &s->pipe, 0);
    s->pipe.data = s;
    s->has_pipe = 1;
    s->open_handles++;
    struct stat st;
    /* A socket left by a previous run would make bind fail. */
    if (stat(cfg->unix_path, &st) == 0 && S_ISSOCK(st.st_mode))
      unlink(cfg->unix_path);
    if ((rc = uv_pipe_bind(&s->pipe, cfg->unix_path)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&s->pipe, 511, on_connection)) != 0) {
      snprintf(err, errlen, "listen on %s: %s", cfg->unix_path,
               uv_strerror(rc));
      goto fail;
    }
    if (cfg->unix_mode != 0 && chmod(cfg->unix_path, (mode_t)cfg->unix_mode))
      lg_log_warn(s->component, "chmod %s: %s", cfg->unix_path,
                  strerror(errno));
  }
  uv_timer_start(&s->timer, on_timer, 1000, 1000);
  *out = s;
  return 0;
fail:
  lg_fwd_server_close(s, NULL, NULL);
  return rc < 0 ? rc : -EINVAL;
}

int lg_fwd_server_port(const lg_fwd_server_t *s) { return s->port; }

uint32_t lg_fwd_server_connections(const lg_fwd_server_t *s) {
  return s->nconns;
}

void lg_fwd_server_pause(lg_fwd_server_t *s) {
  if (s->paused)
    return;
  s->paused = 1;
  for (conn_t *c = s->conns; c != NULL; c = c->next)
    lg__fwd_conn_stop_reading(c);
}

void lg_fwd_server_resume(lg_fwd_server_t *s) {
  if (!s->paused)
    return;
  s->paused = 0;
  uint64_t now = now_ms(s);
  for (conn_t *c = s->conns; c != NULL; c = c->next) {
    /* Time spent paused does not count against the sender. */
    c->last_activity_ms = now;
    if (c->msg_start_ms != 0)
      c->msg_start_ms = now;
    conn_start_reading(c);
  }
}

/* Every handle of the server (timer, listeners, connections) ends here;
 * the last one frees the server. */
static void handle_gone(lg_fwd_server_t *s) {
  if (--s->open_handles > 0)
    return;
  void (*done)(void *) = s->done;
  void *ud = s->done_ud;
  lg_buf_free(&s->scratch);
  free(s);
  if (done)
    done(ud);
}

static void on_server_handle_closed(uv_handle_t *h) { handle_gone(h->data); }

void lg_fwd_server_close(lg_fwd_server_t *s, void (*done)(void *ud), void *ud) {
  if (s == NULL || s->closing)
    return;
  s->closing = 1;
  s->done = done;
  s->done_ud = ud;
  while (s->conns != NULL)
    conn_close(s->conns);
  if (s->has_tcp)
    uv_close((uv_handle_t *)&s->tcp, on_server_handle_closed);
  if (s->has_udp)
    uv_close((uv_handle_t *)&s->udp, on_server_handle_closed);
  if (s->has_pipe) {
    uv_close((uv_handle_t *)&s->pipe, on_server_handle_closed);
    if (s->cfg.unix_path)
      unlink(s->cfg.unix_path);
  }
  uv_timer_stop(&s->timer);
  uv_close((uv_handle_t *)&s->timer, on_server_handle_closed);
}
