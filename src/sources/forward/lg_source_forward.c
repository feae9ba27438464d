/*
 * The `forward` source: a Fluent forward protocol v1 server
 * (lg_forward_server.h) as a lugger source (lg_source.h).
 *
 * Each connection is one lane (its batches keep their order) with its own
 * file_key; a batch's checkpoint_offset carries a token that names the
 * forward ack handle of its chunks. When the engine acks the batch (every
 * record delivered to every output, dropped on purpose or dead-lettered),
 * the handle is released and {"ack": chunk} goes to the sender; a batch the
 * engine gives up (lg_sources_drop) releases its handle without an ack, so
 * the sender resends. Backpressure pauses reading every connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_log.h"
#include "core/lg_tls.h"
#include "sources/forward/lg_forward_conf.h"
#include "sources/forward/lg_forward_server.h"
#include "sources/lg_source.h"

typedef struct pending {
  uint64_t token;
  lg_fwd_ack_t *ack;
  struct pending *next;
} pending_t;

#define PENDING_BUCKETS 1024

typedef struct fwd_src {
  lg_source_t *s;
  lg_fwd_server_cfg_t cfg;
  lg_tls_ctx_t *tls;
  lg_fwd_server_t *srv;
  uint64_t next_token;
  pending_t *pending[PENDING_BUCKETS];
  uint64_t lanes; /* per-connection lane ids */
  lg_fwd_user_t *users;
} fwd_src_t;

static void pending_put(fwd_src_t *f, uint64_t token, lg_fwd_ack_t *ack) {
  pending_t *p = malloc(sizeof *p);
  if (p == NULL) {
    lg_fwd_ack_release(ack, 0); /* no ack: the sender resends */
    return;
  }
  p->token = token;
  p->ack = ack;
  size_t b = token % PENDING_BUCKETS;
  p->next = f->pending[b];
  f->pending[b] = p;
}

static lg_fwd_ack_t *pending_take(fwd_src_t *f, uint64_t token) {
  for (pending_t **pp = &f->pending[token % PENDING_BUCKETS]; *pp;
       pp = &(*pp)->next) {
    if ((*pp)->token == token) {
      pending_t *p = *pp;
      lg_fwd_ack_t *a = p->ack;
      *pp = p->next;
      free(p);
      return a;
    }
  }
  return NULL;
}

/* A batch from the server: give it its source, lane and ack token. */
static void on_server_batch(void *ud, lg_batch_t *b, lg_fwd_ack_t *ack,
                            const char *peer, uint64_t conn_id) {
  fwd_src_t *f = ud;
  lg_source_t *s = f->s;
  b->source_id = s->spec.id;
  b->pipeline = s->spec.pipeline;
  /* One lane per connection: its chunks are acked in the order they came,
   * as a sender that pipelines several chunks expects. */
  b->file_key = ((uint64_t)s->spec.id << 40) ^ conn_id;
  b->lane = b->file_key;
  uint64_t token = ++f->next_token;
  b->checkpoint_offset = token;
  if (ack != NULL)
    pending_put(f, token, ack);
  lg_source_emit(s, b);
}

static lg_batch_t *get_batch(void *ud) {
  fwd_src_t *f = ud;
  return f->s->host->get_batch(f->s->host->ud);
}

static int fwd_start(lg_source_t *s) {
  fwd_src_t *f = s->impl;
  char err[256];
  int rc =
      lg_fwd_server_start(s->host->loop, &f->cfg, &f->srv, err, sizeof err);
  if (rc != 0)
    lg_log_error("source", "sources.%s: %s", s->spec.sc->name, err);
  return rc;
}

static void fwd_pause(lg_source_t *s) {
  fwd_src_t *f = s->impl;
  if (f->srv)
    lg_fwd_server_pause(f->srv);
}

static void fwd_resume(lg_source_t *s) {
  fwd_src_t *f = s->impl;
  if (f->srv)
    lg_fwd_server_resume(f->srv);
}

static void fwd_ack(lg_source_t *s, const lg_batch_t *b) {
  fwd_src_t *f = s->impl;
  lg_fwd_ack_release(pending_take(f, b->checkpoint_offset), 1);
}

static void fwd_drop(lg_source_t *s, const lg_batch_t *b) {
  fwd_src_t *f = s->impl;
  lg_fwd_ack_release(pending_take(f, b->checkpoint_offset), 0);
}

static void release_all(fwd_src_t *f) {
  for (size_t i = 0; i < PENDING_BUCKETS; i++)
    while (f->pending[i] != NULL) {
      pending_t *p = f->pending[i];
      f->pending[i] = p->next;
      lg_fwd_ack_release(p->ack, 0);
      free(p);
    }
}

static void on_server_closed(void *ud) {
  fwd_src_t *f = ud;
  lg_tls_ctx_destroy(f->tls);
  free(f->users);
  free(f);
}

static void fwd_remove(lg_source_t *s) {
  fwd_src_t *f = s->impl;
  if (f->srv != NULL) {
    lg_fwd_server_close(f->srv, NULL, NULL);
    f->srv = NULL;
  }
}

static void fwd_close(lg_source_t *s) {
  fwd_src_t *f = s->impl;
  if (f == NULL)
    return;
  s->impl = NULL;
  release_all(f);
  if (f->srv != NULL) {
    lg_fwd_server_t *srv = f->srv;
    f->srv = NULL;
    lg_fwd_server_close(srv, on_server_closed, f);
  } else {
    on_server_closed(f);
  }
}

static int fwd_add(lg_source_t *s, char *err, size_t errlen) {
  const lg_fwd_src_conf_t *c = s->spec.sc->type_conf;
  if (c == NULL) {
    snprintf(err, errlen, "sources.%s: no forward options", s->spec.sc->name);
    return -EINVAL;
  }
  fwd_src_t *f = calloc(1, sizeof *f);
  if (f == NULL)
    return -ENOMEM;
  f->s = s;
  lg_fwd_server_cfg_t *cfg = &f->cfg;
  lg_fwd_server_cfg_defaults(cfg);
  cfg->name = s->spec.sc->name;
  cfg->host = c->host;
  cfg->port = c->port;
  cfg->unix_path = c->unix_path;
  cfg->unix_mode = c->unix_mode;
  cfg->udp_heartbeat = c->udp_heartbeat && c->port >= 0;
  cfg->max_message_bytes = c->max_message_bytes;
  cfg->max_connections = c->max_connections;
  cfg->max_buffered_bytes = c->max_buffered_bytes;
  cfg->message_timeout_ms = c->message_timeout_ms;
  cfg->idle_timeout_ms = c->idle_timeout_ms;
  cfg->batch_max_bytes =
      s->host->batch_bytes ? s->host->batch_bytes : cfg->batch_max_bytes;
  cfg->shared_key = c->shared_key;
  cfg->self_hostname = c->self_hostname;
  if (c->nusers > 0) {
    f->users = calloc(c->nusers, sizeof *f->users);
    if (f->users == NULL) {
      free(f);
      return -ENOMEM;
    }
    for (size_t i = 0; i < c->nusers; i++) {
      f->users[i].username = c->user_names[i];
      f->users[i].password = c->user_passwords[i];
    }
    cfg->users = f->users;
    cfg->nusers = c->nusers;
  }
  if (c->tls_cert != NULL) {
    char terr[256];
    f->tls = lg_tls_ctx_server(c->tls_cert, c->tls_key, c->tls_ca, terr,
                               sizeof terr);
    if (f->tls == NULL) {
      snprintf(err, errlen, "sources.%s: TLS: %s", s->spec.sc->name, terr);
      free(f->users);
      free(f);
      return -EINVAL;
    }
    cfg->tls = f->tls;
  }
  cfg->decode.tag_key = c->tag_key[0] ? c->tag_key : NULL;
  cfg->decode.body_keys = (const char *const *)c->body_keys;
  cfg->decode.nbody_keys = c->nbody_keys;
  cfg->decode.max_decompressed_bytes = c->max_decompressed_bytes;
  cfg->on_batch = on_server_batch;
  cfg->get_batch = get_batch;
  cfg->ud = f;
  s->impl = f;
  return 0;
}

extern const lg_conf_source_type_t
    lg_conf_source_forward; /* lg_forward_conf.c */

const lg_source_type_t lg_source_forward = {
    .name = "forward",
    .conf = &lg_conf_source_forward,
    .needs_conf = 1, /* the server reads strings of the spec's config */
    .add = fwd_add,
    .start = fwd_start,
    .pause = fwd_pause,
    .resume = fwd_resume,
    .ack = fwd_ack,
    .drop = fwd_drop,
    .remove = fwd_remove,
    .close = fwd_close,
};
