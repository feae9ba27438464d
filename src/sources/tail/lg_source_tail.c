/* The tailer as a source group (lg_source.h, lg_source_tail.h): one
 * tailer and checkpoint store for every source type that reads files. */
#include "sources/tail/lg_source_tail.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the group: one tailer and checkpoint store ---- */

/* Tail batches go to their source's type first (lg_source_type_t
 * on_batch), then to the engine. A removed source's last batches go on
 * as they are. */
static void on_tail_batch(void *ud, lg_batch_t *b) {
  lg_tail_group_t *g = ud;
  lg_source_t *s = lg_source_by_id(g->set, b->source_id);
  if (s != NULL && !s->closed && s->type->on_batch != NULL)
    s->type->on_batch(s, b);
  else
    g->host->on_batch(g->host->ud, b);
}

static lg_batch_t *get_tail_batch(void *ud) {
  lg_tail_group_t *g = ud;
  return g->host->get_batch(g->host->ud);
}

static void on_tail_held(void *ud, int64_t delta) {
  lg_tail_group_t *g = ud;
  if (g->host->held_bytes != NULL)
    g->host->held_bytes(g->host->ud, delta);
}

static void on_tail_resume(void *ud, uint64_t fingerprint, uint64_t offset) {
  lg_tail_group_t *g = ud;
  if (g->host->file_resumed != NULL)
    g->host->file_resumed(g->host->ud, fingerprint, offset);
}

static void on_tail_prefixes(void *ud, uint64_t fingerprint,
                             const uint64_t *prefix, uint32_t n) {
  lg_tail_group_t *g = ud;
  if (g->host->file_prefixes != NULL)
    g->host->file_prefixes(g->host->ud, fingerprint, prefix, n);
}

static int want_tail_prefixes(void *ud) {
  lg_tail_group_t *g = ud;
  return g->host->prefixes_wanted == NULL ||
         g->host->prefixes_wanted(g->host->ud);
}

static void *group_create(lg_sources_t *set, const lg_source_host_t *h,
                          char *err, size_t errlen) {
  lg_tail_group_t *g = calloc(1, sizeof *g);
  if (g == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  g->set = set;
  g->host = h;
  char cerr[512] = "";
  g->cp = lg_checkpoint_open(h->state_dir, cerr, sizeof cerr);
  if (g->cp == NULL) {
    snprintf(err, errlen, "settings.state_dir: %s", cerr);
    free(g);
    return NULL;
  }
  lg_tail_opts_t to = {
      .rescan_interval_ms = h->rescan_interval_ms,
      .checkpoint_interval_ms = h->checkpoint_interval_ms,
      .close_inactive_ms = h->close_inactive_ms,
      .batch_bytes = h->batch_bytes,
      .read_bytes = 256 * 1024,
      .on_batch = on_tail_batch,
      .get_batch = get_tail_batch,
      .on_held = on_tail_held,
      .on_resume = on_tail_resume,
      .on_prefixes = on_tail_prefixes,
      .want_prefixes = want_tail_prefixes,
      .ud = g,
  };
  g->tail = lg_tail_create(h->loop, g->cp, &to);
  if (g->tail == NULL) {
    snprintf(err, errlen, "out of memory");
    lg_checkpoint_close(g->cp);
    free(g);
    return NULL;
  }
  return g;
}

static int group_start(void *g) {
  return lg_tail_start(((lg_tail_group_t *)g)->tail);
}

static void group_pause(void *g) {
  lg_tail_pause(((lg_tail_group_t *)g)->tail);
}

static void group_resume(void *g) {
  lg_tail_resume(((lg_tail_group_t *)g)->tail);
}

static void group_drain(void *g, int on) {
  lg_tail_drain(((lg_tail_group_t *)g)->tail, on);
}

static int group_idle(const void *g) {
  return lg_tail_idle(((const lg_tail_group_t *)g)->tail);
}

static int group_read_to_end(const void *g) {
  return lg_tail_read_to_end(((const lg_tail_group_t *)g)->tail);
}

static size_t group_unreadable(const void *g, const char **first) {
  return lg_tail_unreadable(((const lg_tail_group_t *)g)->tail, first);
}

static void group_flush(void *g) {
  lg_tail_flush(((lg_tail_group_t *)g)->tail);
}

/* After a shutdown timeout the tail is closed (checkpoints already
 * written); a late ack then moves nothing: those records are read again
 * after the restart. */
static void group_ack(void *gv, const lg_batch_t *b) {
  lg_tail_group_t *g = gv;
  if (g->tail != NULL)
    lg_tail_ack(g->tail, b->file_key, b->checkpoint_offset);
}

/* b NULL: the request's marks are all in; journal them now. */
static void group_sent(void *gv, const lg_batch_t *b, uint64_t end_offset) {
  lg_tail_group_t *g = gv;
  if (g->tail == NULL)
    return;
  if (b != NULL)
    lg_tail_sent(g->tail, b->file_key, end_offset);
  else
    lg_tail_sent_flush(g->tail);
}

static void group_each_prefixes(void *gv,
                                void (*cb)(void *ud, uint64_t fingerprint,
                                           const uint64_t *prefix, uint32_t n),
                                void *ud) {
  lg_tail_each_prefixes(((lg_tail_group_t *)gv)->tail, cb, ud);
}

static void group_each_read(void *gv,
                            void (*cb)(void *ud, uint64_t fingerprint,
                                       uint64_t from, uint64_t to),
                            void *ud) {
  lg_tail_each_read(((lg_tail_group_t *)gv)->tail, cb, ud);
}

/* A group closing: done once its tail is closed and its last checkpoint
 * save has ended (`left` counts them down). */
typedef struct closing {
  lg_tail_group_t *g;
  void (*done)(void *ud);
  void *ud;
  int left;
} closing_t;

static void close_step(closing_t *c) {
  if (--c->left > 0)
    return;
  closing_t k = *c;
  free(c);
  k.done(k.ud);
}

static void on_tail_closed(void *ud) {
  closing_t *c = ud;
  c->g->tail = NULL;
  close_step(c);
}

static void on_last_save(void *ud, int rc) {
  (void)rc; /* a failure is logged; the journal keeps the changes */
  close_step(ud);
}

/* The last checkpoint save goes to libuv's threadpool like the periodic
 * ones (its fsyncs can take seconds on a busy disk, which blocked the
 * loop, and with it the other sources' closes and the outputs' drain);
 * the close ends only once it has landed, so the shutdown still waits for
 * it. */
static void group_close(void *gv, void (*done)(void *ud), void *ud) {
  lg_tail_group_t *g = gv;
  closing_t *c = malloc(sizeof *c);
  if (c == NULL) { /* cannot wait for the close: the handles stay open */
    lg_tail_save(g->tail);
    done(ud);
    return;
  }
  *c = (closing_t){g, done, ud, 3};
  if (lg_checkpoint_save_then(g->cp, g->host->loop, on_last_save, c) != 0) {
    lg_tail_save(g->tail); /* cannot happen: one close per group */
    c->left--;
  }
  lg_tail_close(g->tail, on_tail_closed, c);
  close_step(c); /* this function's own count */
}

static void group_destroy(void *gv) {
  lg_tail_group_t *g = gv;
  if (g == NULL)
    return;
  lg_checkpoint_close(g->cp);
  free(g);
}

const lg_source_group_type_t lg_tail_group = {
    .name = "tail",
    .create = group_create,
    .start = group_start,
    .pause = group_pause,
    .resume = group_resume,
    .drain = group_drain,
    .idle = group_idle,
    .read_to_end = group_read_to_end,
    .unreadable = group_unreadable,
    .flush = group_flush,
    .ack = group_ack,
    .sent = group_sent,
    .each_prefixes = group_each_prefixes,
    .each_read = group_each_read,
    .close = group_close,
    .destroy = group_destroy,
};

lg_tail_source_opts_t lg_tail_group_opts(const lg_source_t *s,
                                         const lg_tail_conf_t *tc) {
  return (lg_tail_source_opts_t){
      .name = s->spec.sc->name,
      .source_id = s->spec.id,
      .pipeline = s->spec.pipeline,
      .paths = (const char *const *)tc->paths,
      .npaths = tc->npaths,
      .exclude = (const char *const *)tc->exclude,
      .nexclude = tc->nexclude,
      .read_from_head = tc->read_from_head,
      .format = tc->format,
      .max_record_bytes = tc->max_record_bytes,
      .flush_timeout_ms = tc->flush_timeout_ms,
      .rate_limit = tc->rate_limit,
      .max_rotated_open = tc->max_rotated_open,
      .rotated_bounded = tc->rotated_bounded,
      .multiline = tc->multiline,
  };
}
