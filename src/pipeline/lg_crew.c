#include "pipeline/lg_crew.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct slot {
  void *member; /* NULL: empty */
  lg_crew_give_cb give;
} slot_t;

/* `mu` is held while another member's queue is looked at (lg_crew_take),
 * so a member is never given from while it leaves. */
struct lg_crew {
  pthread_mutex_t mu;
  int n;
  slot_t *slots;
};

lg_crew_t *lg_crew_create(int n) {
  lg_crew_t *c = calloc(1, sizeof *c);
  if (c == NULL || n < 1 ||
      (c->slots = calloc((size_t)n, sizeof *c->slots)) == NULL) {
    free(c);
    return NULL;
  }
  c->n = n;
  pthread_mutex_init(&c->mu, NULL);
  return c;
}

void lg_crew_destroy(lg_crew_t *c) {
  if (c == NULL)
    return;
  pthread_mutex_destroy(&c->mu);
  free(c->slots);
  free(c);
}

void lg_crew_join(lg_crew_t *c, int slot, void *member, lg_crew_give_cb give) {
  if (c == NULL || slot < 0 || slot >= c->n)
    return;
  pthread_mutex_lock(&c->mu);
  c->slots[slot] = (slot_t){.member = member, .give = give};
  pthread_mutex_unlock(&c->mu);
}

void lg_crew_leave(lg_crew_t *c, int slot, void *member) {
  if (c == NULL || slot < 0 || slot >= c->n)
    return;
  pthread_mutex_lock(&c->mu);
  if (c->slots[slot].member == member)
    c->slots[slot] = (slot_t){0};
  pthread_mutex_unlock(&c->mu);
}

lg_batch_t *lg_crew_take(lg_crew_t *c, int slot, const void *taker) {
  if (c == NULL || slot < 0 || slot >= c->n)
    return NULL;
  lg_batch_t *b = NULL;
  pthread_mutex_lock(&c->mu);
  /* Starting after the caller's own slot spreads the takes of several
   * idle workers over the busy ones. */
  for (int k = 1; k < c->n && b == NULL; k++) {
    const slot_t *s = &c->slots[(slot + k) % c->n];
    if (s->member != NULL)
      b = s->give(s->member, taker);
  }
  pthread_mutex_unlock(&c->mu);
  return b;
}
