/* The reorder stage: batches of one log stream (its lane: a file and the
 * files that replaced it by rotation) get sequence numbers when they are
 * queued, may leave the workers in any order when their pipeline is
 * stateless (several workers process one stream at once), and go on to
 * the outputs strictly in sequence. Outputs then deliver and ack a
 * stream's records in its order, and the file queues (lg_acks.c)
 * checkpoint in read order as before.
 *
 * A lane's state exists while it has batches between queueing and
 * submission; a batch that will never come back (its worker's script is
 * stuck) is skipped, so the batches after it are not held forever. */
#include "engine/lg_engine_internal.h"

#include <errno.h>
#include <stdlib.h>

/* A batch back from its worker early, or a skipped sequence (b NULL). */
typedef struct waiting {
  uint64_t seq;
  lg_batch_t *b;
  struct waiting *next; /* by seq, ascending */
} waiting_t;

struct reorder_lane {
  uint64_t lane;
  uint64_t next_seq;    /* the sequence the next queued batch gets */
  uint64_t next_submit; /* the sequence the outputs get next */
  waiting_t *waiting;
  struct reorder_lane *next; /* hash chain */
};

static reorder_lane_t **slot(engine_t *e, uint64_t lane) {
  reorder_lane_t **pp = &e->lanes[lane % FILE_BUCKETS];
  while (*pp != NULL && (*pp)->lane != lane)
    pp = &(*pp)->next;
  return pp;
}

int lg__reorder_assign(engine_t *e, uint64_t lane, uint64_t *seq) {
  reorder_lane_t **pp = slot(e, lane);
  if (*pp == NULL) {
    reorder_lane_t *l = calloc(1, sizeof *l);
    if (l == NULL)
      return -ENOMEM;
    l->lane = lane;
    *pp = l;
  }
  *seq = (*pp)->next_seq++;
  return 0;
}

int lg__reorder_done(engine_t *e, uint64_t lane, uint64_t seq, lg_batch_t *b,
                     void (*emit)(engine_t *, lg_batch_t *)) {
  reorder_lane_t **pp = slot(e, lane);
  reorder_lane_t *l = *pp;
  if (l == NULL || seq < l->next_submit) {
    /* Not from this stage (cannot happen): pass it on, never hold it. */
    if (b != NULL)
      emit(e, b);
    return 0;
  }
  if (seq != l->next_submit) {
    waiting_t *w = malloc(sizeof *w);
    if (w == NULL)
      return -ENOMEM;
    w->seq = seq;
    w->b = b;
    waiting_t **wp = &l->waiting;
    while (*wp != NULL && (*wp)->seq < seq)
      wp = &(*wp)->next;
    w->next = *wp;
    *wp = w;
    return 0;
  }
  if (b != NULL)
    emit(e, b);
  l->next_submit++;
  while (l->waiting != NULL && l->waiting->seq == l->next_submit) {
    waiting_t *w = l->waiting;
    l->waiting = w->next;
    if (w->b != NULL)
      emit(e, w->b);
    free(w);
    l->next_submit++;
  }
  if (l->next_submit == l->next_seq && l->waiting == NULL) {
    *pp = l->next;
    free(l);
  }
  return 0;
}

void lg__reorder_free(engine_t *e) {
  for (size_t k = 0; k < FILE_BUCKETS; k++) {
    while (e->lanes[k] != NULL) {
      reorder_lane_t *l = e->lanes[k];
      e->lanes[k] = l->next;
      while (l->waiting != NULL) {
        waiting_t *w = l->waiting;
        l->waiting = w->next;
        free(w);
      }
      free(l);
    }
  }
}
