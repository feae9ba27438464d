/*
 * lg_forward_client.c - see lg_forward_client.h.
 */
#include "outputs/lg_forward_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/lg_log.h"
#include "core/lg_msgpack.h"
#include "outputs/lg_forward_encode.h"
#include "sources/forward/lg_forward_auth.h"

typedef enum cstate {
  C_IDLE = 0, /* no connection */
  C_RESOLVING,
  C_CONNECTING,
  C_AUTH, /* waiting for HELO, then PONG */
  C_READY,
  C_CLOSING, /* the handle is being closed */
} cstate_t;

typedef struct msg {
  struct msg *next;
  lg_buf_t bytes;
  char *chunk;
  size_t chunk_len;
  lg_fwd_sent_fn cb;
  void *ud;
  uint64_t deadline_ms; /* ack due (written messages) */
  int written;
} msg_t;

typedef struct server {
  char *spec; /* as configured */
  char *host; /* NULL for unix */
  char *path; /* unix socket */
  int port;
} server_t;

typedef struct conn {
  union {
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  struct lg_fwd_client *c;
  lg_tls_t *tls;
  lg_buf_t in;
  lg_mp_scan_t scan;
  lg_fwd_auth_client_t auth;
  int auth_phase; /* 0 waiting HELO, 1 waiting PONG */
  uv_connect_t connect_req;
} conn_t;

struct lg_fwd_client {
  uv_loop_t *loop;
  lg_fwd_client_cfg_t cfg;
  char component[96];
  char hostname[256];
  server_t *servers;
  size_t nservers, cur;
  cstate_t state;
  conn_t *conn;
  uv_getaddrinfo_t gai;
  int gai_busy;
  uv_timer_t timer;
  int timer_open;
  uint64_t connect_deadline_ms;
  msg_t *queue, *queue_tail;       /* not yet written */
  msg_t *inflight, *inflight_tail; /* written, waiting for the ack */
  int closing;
  int handles; /* open libuv handles (timer + connection) */
  void (*done)(void *);
  void *done_ud;
  char rbuf[65536];
};

void lg_fwd_client_cfg_defaults(lg_fwd_client_cfg_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->name = "forward";
  cfg->require_ack = 1;
  cfg->tls_verify_hostname = 1;
  cfg->ack_timeout_ms = 60000;
  cfg->connect_timeout_ms = 10000;
}

const char *lg_fwd_client_server(const lg_fwd_client_t *c) {
  return c->servers[c->cur].spec;
}

static uint64_t now_ms(lg_fwd_client_t *c) { return uv_now(c->loop); }

static void msg_free(msg_t *m) {
  lg_buf_free(&m->bytes);
  free(m->chunk);
  free(m);
}

/* Fails every message (written or queued) with `reason`. */
static void fail_all(lg_fwd_client_t *c, int status, const char *reason) {
  msg_t *lists[2] = {c->inflight, c->queue};
  c->inflight = c->inflight_tail = c->queue = c->queue_tail = NULL;
  for (int l = 0; l < 2; l++) {
    for (msg_t *m = lists[l], *next; m != NULL; m = next) {
      next = m->next;
      m->cb(m->ud, status, reason);
      msg_free(m);
    }
  }
}

static void maybe_finish(lg_fwd_client_t *c);
static void start_connect(lg_fwd_client_t *c);

static void on_conn_closed(uv_handle_t *h) {
  conn_t *k = h->data;
  lg_fwd_client_t *c = k->c;
  lg_tls_destroy(k->tls);
  lg_buf_free(&k->in);
  free(k);
  c->handles--;
  if (c->state == C_CLOSING && c->conn == NULL)
    c->state = C_IDLE;
  /* Messages sent while the old connection was closing. */
  if (c->state == C_IDLE && c->queue != NULL && !c->closing)
    start_connect(c);
  maybe_finish(c);
}

/* Drops the connection (if any) and fails every pending message; the next
 * message goes to the next server. */
static void conn_fail(lg_fwd_client_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_fail(lg_fwd_client_t *c, const char *fmt, ...) {
  char why[512], reason[700];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  snprintf(reason, sizeof reason, "forward server %s: %s",
           c->servers[c->cur].spec, why);
  lg_log_warn(c->component, "%s", reason);
  if (c->conn != NULL) {
    conn_t *k = c->conn;
    c->conn = NULL;
    c->state = C_CLOSING;
    uv_close((uv_handle_t *)&k->h.stream, on_conn_closed);
  } else if (c->state != C_RESOLVING) {
    c->state = C_IDLE;
  }
  if (c->nservers > 1)
    c->cur = (c->cur + 1) % c->nservers;
  fail_all(c, -ECONNRESET, reason);
}

typedef struct wreq {
  uv_write_t req;
  lg_fwd_client_t *c;
  msg_t *m; /* complete on write when no ack is required */
  char data[];
} wreq_t;

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  lg_fwd_client_t *c = w->c;
  free(w);
  if (status == UV_ECANCELED)
    return;
  if (status < 0 && c->conn != NULL)
    conn_fail(c, "write: %s", uv_strerror(status));
  else if (status == 0 && !c->cfg.require_ack && c->inflight != NULL) {
    /* Without acks a message counts as sent once written, in order. */
    msg_t *m = c->inflight;
    c->inflight = m->next;
    if (c->inflight == NULL)
      c->inflight_tail = NULL;
    m->cb(m->ud, 0, NULL);
    msg_free(m);
  }
}

static int raw_write(lg_fwd_client_t *c, const char *data, size_t len) {
  if (len == 0)
    return 0;
  wreq_t *w = malloc(sizeof *w + len);
  if (w == NULL)
    return -ENOMEM;
  w->c = c;
  memcpy(w->data, data, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  int rc = uv_write(&w->req, &c->conn->h.stream, &b, 1, on_written);
  if (rc != 0)
    free(w);
  return rc;
}

static int conn_write(lg_fwd_client_t *c, const char *data, size_t len) {
  conn_t *k = c->conn;
  if (k->tls == NULL)
    return raw_write(c, data, len);
  lg_buf_t wire = LG_BUF_INIT;
  char err[256];
  int rc = lg_tls_write(k->tls, data, len, &wire, err, sizeof err);
  if (rc == 0)
    rc = raw_write(c, wire.data, wire.len);
  lg_buf_free(&wire);
  return rc;
}

/* Writes every queued message (READY only). */
static void flush_queue(lg_fwd_client_t *c) {
  while (c->state == C_READY && c->queue != NULL) {
    msg_t *m = c->queue;
    c->queue = m->next;
    if (c->queue == NULL)
      c->queue_tail = NULL;
    m->next = NULL;
    m->written = 1;
    m->deadline_ms = now_ms(c) + c->cfg.ack_timeout_ms;
    if (c->inflight_tail)
      c->inflight_tail->next = m;
    else
      c->inflight = m;
    c->inflight_tail = m;
    int rc = conn_write(c, m->bytes.data, m->bytes.len);
    /* The bytes are in the write request now. */
    lg_buf_free(&m->bytes);
    if (rc != 0) {
      conn_fail(c, "write: %s",
                rc == -ENOMEM ? "out of memory" : uv_strerror(rc));
      return;
    }
  }
}

static void handle_frame(lg_fwd_client_t *c, const char *f, size_t len) {
  conn_t *k = c->conn;
  char reason[300];
  if (c->state == C_AUTH && k->auth_phase == 0) {
    lg_buf_t ping = LG_BUF_INIT;
    int rc =
        lg_fwd_auth_client_helo(&k->auth, f, len, &ping, reason, sizeof reason);
    if (rc == 0)
      rc = conn_write(c, ping.data, ping.len);
    lg_buf_free(&ping);
    if (rc != 0) {
      conn_fail(c, "handshake: %s", reason);
      return;
    }
    k->auth_phase = 1;
    return;
  }
  if (c->state == C_AUTH) {
    if (lg_fwd_auth_client_pong(&k->auth, f, len, reason, sizeof reason) != 0) {
      conn_fail(c, "handshake: %s", reason);
      return;
    }
    c->state = C_READY;
    flush_queue(c);
    return;
  }
  const char *id;
  uint32_t idl;
  if (lg_fwd_parse_ack(f, len, &id, &idl) != 0) {
    conn_fail(c,
              "answer is not an ack map (%zu bytes, first 0x%02x): the "
              "server refused a chunk",
              len, (unsigned char)f[0]);
    return;
  }
  msg_t *prev = NULL;
  for (msg_t *m = c->inflight; m != NULL; prev = m, m = m->next) {
    if (m->chunk_len == idl && memcmp(m->chunk, id, idl) == 0) {
      if (prev)
        prev->next = m->next;
      else
        c->inflight = m->next;
      if (c->inflight_tail == m)
        c->inflight_tail = prev;
      m->cb(m->ud, 0, NULL);
      msg_free(m);
      return;
    }
  }
  lg_log_debug(c->component, "forward server %s: ack for an unknown chunk",
               c->servers[c->cur].spec);
}

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *buf) {
  conn_t *k = h->data;
  *buf = uv_buf_init(k->c->rbuf, sizeof k->c->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn_t *k = st->data;
  lg_fwd_client_t *c = k->c;
  if (c->conn != k || nread == 0)
    return;
  if (nread < 0) {
    conn_fail(c, "%s",
              nread == UV_EOF ? "connection closed by the server"
                              : uv_strerror((int)nread));
    return;
  }
  if (k->tls != NULL) {
    lg_buf_t wire = LG_BUF_INIT;
    char err[256];
    int was_ready = lg_tls_ready(k->tls);
    int rc = lg_tls_feed(k->tls, buf->base, (size_t)nread, &k->in, &wire, err,
                         sizeof err);
    raw_write(c, wire.data, wire.len);
    lg_buf_free(&wire);
    if (rc != 0) {
      conn_fail(c, "%s", err);
      return;
    }
    if (!was_ready && lg_tls_ready(k->tls) && c->state == C_CONNECTING) {
      c->state = c->cfg.shared_key ? C_AUTH : C_READY;
      flush_queue(c);
    }
  } else if (lg_buf_append(&k->in, buf->base, (size_t)nread) != 0) {
    conn_fail(c, "out of memory");
    return;
  }
  size_t off = 0;
  while (c->conn == k && off < k->in.len) {
    int rc = lg_mp_scan(&k->scan, k->in.data + off, k->in.len - off, 1 << 20);
    if (rc == LG_MP_MORE)
      break;
    if (rc != LG_MP_COMPLETE) {
      conn_fail(c, "malformed answer from the server");
      return;
    }
    size_t len = k->scan.pos;
    lg_mp_scan_init(&k->scan);
    handle_frame(c, k->in.data + off, len);
    off += len;
  }
  if (c->conn == k)
    lg_buf_consume(&k->in, off);
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *k = req->data;
  lg_fwd_client_t *c = k->c;
  if (c->conn != k || c->state != C_CONNECTING)
    return; /* given up meanwhile (timeout, cancel) */
  if (status < 0) {
    conn_fail(c, "connect: %s", uv_strerror(status));
    return;
  }
  if (k->h.stream.type == UV_TCP)
    uv_tcp_nodelay(&k->h.tcp, 1);
  uv_read_start(&k->h.stream, on_alloc, on_read);
  if (k->tls != NULL) {
    lg_buf_t wire = LG_BUF_INIT;
    char err[256];
    int rc = lg_tls_handshake(k->tls, &wire, err, sizeof err);
    if (rc == 0)
      rc = raw_write(c, wire.data, wire.len);
    lg_buf_free(&wire);
    if (rc != 0)
      conn_fail(c, "TLS: %s", err);
    return; /* READY (or AUTH) once the TLS handshake completes */
  }
  c->state = c->cfg.shared_key ? C_AUTH : C_READY;
  flush_queue(c);
}

static conn_t *conn_new(lg_fwd_client_t *c, int tcp) {
  conn_t *k = calloc(1, sizeof *k);
  if (k == NULL)
    return NULL;
  k->c = c;
  if (tcp)
    uv_tcp_init(c->loop, &k->h.tcp);
  else
    uv_pipe_init(c->loop, &k->h.pipe, 0);
  k->h.stream.data = k;
  c->handles++;
  lg_mp_scan_init(&k->scan);
  k->auth.shared_key = c->cfg.shared_key;
  k->auth.self_hostname = c->hostname;
  k->auth.username = c->cfg.username;
  k->auth.password = c->cfg.password;
  c->conn = k;
  return k;
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  lg_fwd_client_t *c = req->data;
  c->gai_busy = 0;
  if (c->state != C_RESOLVING) { /* given up meanwhile */
    uv_freeaddrinfo(res);
    if (c->state == C_IDLE && c->queue != NULL && !c->closing)
      start_connect(c);
    maybe_finish(c);
    return;
  }
  if (status < 0 || res == NULL) {
    uv_freeaddrinfo(res);
    c->state = C_IDLE;
    conn_fail(c, "resolve: %s", uv_strerror(status));
    return;
  }
  conn_t *k = conn_new(c, 1);
  if (k == NULL) {
    uv_freeaddrinfo(res);
    c->state = C_IDLE;
    conn_fail(c, "out of memory");
    return;
  }
  server_t *s = &c->servers[c->cur];
  if (c->cfg.tls != NULL)
    k->tls = lg_tls_create(c->cfg.tls, 0,
                           !c->cfg.tls_verify_hostname ? NULL
                           : c->cfg.tls_server_name    ? c->cfg.tls_server_name
                                                       : s->host);
  c->state = C_CONNECTING;
  k->connect_req.data = k;
  int rc = uv_tcp_connect(&k->connect_req, &k->h.tcp, res->ai_addr, on_connect);
  uv_freeaddrinfo(res);
  if (rc != 0)
    conn_fail(c, "connect: %s", uv_strerror(rc));
}

static void start_connect(lg_fwd_client_t *c) {
  if (c->gai_busy)
    return; /* a dropped lookup is still out; its callback starts again */
  server_t *s = &c->servers[c->cur];
  c->connect_deadline_ms = now_ms(c) + c->cfg.connect_timeout_ms;
  if (s->path != NULL) {
    conn_t *k = conn_new(c, 0);
    if (k == NULL) {
      conn_fail(c, "out of memory");
      return;
    }
    c->state = C_CONNECTING;
    k->connect_req.data = k;
    uv_pipe_connect(&k->connect_req, &k->h.pipe, s->path, on_connect);
    return;
  }
  char port[16];
  snprintf(port, sizeof port, "%d", s->port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  c->state = C_RESOLVING;
  c->gai.data = c;
  c->gai_busy = 1;
  int rc = uv_getaddrinfo(c->loop, &c->gai, on_resolved, s->host, port, &hints);
  if (rc != 0) {
    c->gai_busy = 0;
    c->state = C_IDLE;
    conn_fail(c, "resolve: %s", uv_strerror(rc));
  }
}

static void on_timer(uv_timer_t *t) {
  lg_fwd_client_t *c = t->data;
  uint64_t now = now_ms(c);
  if ((c->state == C_RESOLVING || c->state == C_CONNECTING ||
       c->state == C_AUTH) &&
      now > c->connect_deadline_ms) {
    const char *what = c->state == C_AUTH ? "handshake" : "connect";
    if (c->state == C_RESOLVING)
      c->state = C_IDLE; /* the lookup's callback will see it was dropped */
    conn_fail(c, "%s timed out after %llu ms", what,
              (unsigned long long)c->cfg.connect_timeout_ms);
    return;
  }
  if (c->state == C_READY && c->inflight != NULL && c->cfg.require_ack &&
      now > c->inflight->deadline_ms)
    conn_fail(c, "no ack within %llu ms (ack_timeout)",
              (unsigned long long)c->cfg.ack_timeout_ms);
}

int lg_fwd_server_parse(const char *spec, const char **host, size_t *hostlen,
                        int *port, char *err, size_t errlen) {
  /* host, host:port, [v6]:port */
  const char *colon = strrchr(spec, ':');
  const char *hs = spec, *he = spec + strlen(spec);
  *port = 24224;
  if (spec[0] == '[') {
    const char *rb = strchr(spec, ']');
    if (rb == NULL) {
      colon = NULL, he = hs; /* invalid, caught below */
    } else {
      hs = spec + 1;
      he = rb;
      colon = rb[1] == ':' ? rb + 1 : NULL;
    }
  } else if (colon != NULL) {
    he = colon;
  }
  if (colon != NULL) {
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p <= 0 || p > 65535) {
      snprintf(err, errlen, "\"%s\": bad port", spec);
      return -EINVAL;
    }
    *port = (int)p;
  }
  if (he <= hs) {
    snprintf(err, errlen, "\"%s\": no host", spec);
    return -EINVAL;
  }
  *host = hs;
  *hostlen = (size_t)(he - hs);
  return 0;
}

int lg_fwd_client_create(uv_loop_t *loop, const lg_fwd_client_cfg_t *cfg,
                         lg_fwd_client_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (cfg->nservers == 0) {
    snprintf(err, errlen, "servers: at least one \"host:port\" is needed");
    return -EINVAL;
  }
  lg_fwd_client_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return -ENOMEM;
  c->loop = loop;
  c->cfg = *cfg;
  snprintf(c->component, sizeof c->component, "output.%s",
           cfg->name ? cfg->name : "forward");
  lg_fwd_auth_self_hostname(cfg->self_hostname, c->hostname,
                            sizeof c->hostname);
  c->servers = calloc(cfg->nservers, sizeof *c->servers);
  if (c->servers == NULL) {
    free(c);
    return -ENOMEM;
  }
  c->nservers = cfg->nservers;
  for (size_t i = 0; i < cfg->nservers; i++) {
    const char *spec = cfg->servers[i];
    server_t *s = &c->servers[i];
    s->spec = strdup(spec);
    if (strncmp(spec, "unix:", 5) == 0) {
      s->path = strdup(spec + 5);
      continue;
    }
    const char *hs;
    size_t hl;
    char why[300];
    if (lg_fwd_server_parse(spec, &hs, &hl, &s->port, why, sizeof why) < 0) {
      snprintf(err, errlen, "servers[%zu]: %s", i + 1, why);
      lg_fwd_client_close(c, NULL, NULL);
      return -EINVAL;
    }
    s->host = strndup(hs, hl);
  }
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->handles = 1;
  c->timer_open = 1;
  uv_timer_start(&c->timer, on_timer, 200, 200);
  uv_unref((uv_handle_t *)&c->timer);
  *out = c;
  return 0;
}

int lg_fwd_client_send(lg_fwd_client_t *c, lg_buf_t *msg, const char *chunk,
                       size_t chunk_len, lg_fwd_sent_fn cb, void *ud) {
  if (c->closing)
    return -ESHUTDOWN;
  msg_t *m = calloc(1, sizeof *m);
  if (m == NULL)
    return -ENOMEM;
  m->bytes = *msg;
  *msg = (lg_buf_t)LG_BUF_INIT;
  if (chunk != NULL) {
    m->chunk = malloc(chunk_len + 1);
    if (m->chunk == NULL) {
      *msg = m->bytes;
      free(m);
      return -ENOMEM;
    }
    memcpy(m->chunk, chunk, chunk_len);
    m->chunk_len = chunk_len;
  }
  m->cb = cb;
  m->ud = ud;
  if (c->queue_tail)
    c->queue_tail->next = m;
  else
    c->queue = m;
  c->queue_tail = m;
  if (c->state == C_IDLE)
    start_connect(c);
  else if (c->state == C_READY)
    flush_queue(c);
  return 0;
}

void lg_fwd_client_cancel(lg_fwd_client_t *c) {
  if (c->conn != NULL) {
    conn_t *k = c->conn;
    c->conn = NULL;
    c->state = C_CLOSING;
    uv_close((uv_handle_t *)&k->h.stream, on_conn_closed);
  } else if (c->state == C_RESOLVING) {
    c->state = C_IDLE;
  }
  fail_all(c, -ECANCELED, "cancelled");
}

static void on_timer_closed(uv_handle_t *h) {
  lg_fwd_client_t *c = h->data;
  c->handles--;
  maybe_finish(c);
}

static void maybe_finish(lg_fwd_client_t *c) {
  if (!c->closing || c->handles > 0 || c->gai_busy)
    return;
  void (*done)(void *) = c->done;
  void *ud = c->done_ud;
  for (size_t i = 0; i < c->nservers; i++) {
    free(c->servers[i].spec);
    free(c->servers[i].host);
    free(c->servers[i].path);
  }
  free(c->servers);
  free(c);
  if (done)
    done(ud);
}

void lg_fwd_client_close(lg_fwd_client_t *c, void (*done)(void *ud), void *ud) {
  if (c->closing)
    return;
  c->closing = 1;
  c->done = done;
  c->done_ud = ud;
  lg_fwd_client_cancel(c);
  if (c->timer_open) {
    c->timer_open = 0;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    return;
  }
  maybe_finish(c);
}
