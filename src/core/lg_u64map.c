/* A hash map from 64-bit keys to size_t values (lg_u64map.h). */
#include "core/lg_u64map.h"

#include <errno.h>
#include <stdlib.h>

/* The 64-bit finalizer of MurmurHash3: every key bit moves every bit of
 * the slot index, so keys that differ only in high bits do not pile up. */
static size_t slot_of(uint64_t key, size_t cap) {
  key ^= key >> 33;
  key *= UINT64_C(0xff51afd7ed558ccd);
  key ^= key >> 33;
  key *= UINT64_C(0xc4ceb9fe1a85ec53);
  key ^= key >> 33;
  return (size_t)key & (cap - 1);
}

/* The slot holding `key`, or the empty slot where it would go. The table
 * is never full (at most half), so the probe ends. */
static lg_u64map_slot_t *probe(lg_u64map_slot_t *slots, size_t cap,
                               uint64_t key) {
  size_t i = slot_of(key, cap);
  while (slots[i].used && slots[i].key != key)
    i = (i + 1) & (cap - 1);
  return &slots[i];
}

int lg_u64map_get(const lg_u64map_t *m, uint64_t key, size_t *val) {
  if (m->n == 0)
    return 0;
  const lg_u64map_slot_t *s = probe(m->slots, m->cap, key);
  if (!s->used)
    return 0;
  if (val != NULL)
    *val = s->val;
  return 1;
}

static int grow(lg_u64map_t *m) {
  size_t cap = m->cap != 0 ? m->cap * 2 : 64;
  if (cap < m->cap || cap > SIZE_MAX / sizeof(lg_u64map_slot_t))
    return -ENOMEM;
  lg_u64map_slot_t *slots = calloc(cap, sizeof *slots);
  if (slots == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].used)
      *probe(slots, cap, m->slots[i].key) = m->slots[i];
  free(m->slots);
  m->slots = slots;
  m->cap = cap;
  return 0;
}

int lg_u64map_add(lg_u64map_t *m, uint64_t key, size_t val) {
  if (lg_u64map_get(m, key, NULL))
    return 0;
  /* At most half full after adding: probes stay short. */
  if ((m->n + 1) * 2 > m->cap && grow(m) != 0)
    return -ENOMEM;
  lg_u64map_slot_t *s = probe(m->slots, m->cap, key);
  s->key = key;
  s->val = val;
  s->used = 1;
  m->n++;
  return 1;
}

int lg_u64map_put(lg_u64map_t *m, uint64_t key, size_t val) {
  if (m->n > 0) {
    lg_u64map_slot_t *s = probe(m->slots, m->cap, key);
    if (s->used) {
      s->val = val;
      return 0;
    }
  }
  return lg_u64map_add(m, key, val) < 0 ? -ENOMEM : 0;
}

int lg_u64map_del(lg_u64map_t *m, uint64_t key) {
  if (m->n == 0)
    return 0;
  lg_u64map_slot_t *slots = m->slots;
  size_t mask = m->cap - 1;
  size_t i = (size_t)(probe(slots, m->cap, key) - slots);
  if (!slots[i].used)
    return 0;
  /* Backward shift: each entry after the hole, up to the next empty slot,
   * moves into the hole unless its home slot lies cyclically in (hole,
   * its slot], where a lookup still finds it without the hole filled. */
  for (size_t j = i;;) {
    j = (j + 1) & mask;
    if (!slots[j].used)
      break;
    size_t home = slot_of(slots[j].key, m->cap);
    int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays)
      continue;
    slots[i] = slots[j];
    i = j;
  }
  slots[i].used = 0;
  m->n--;
  return 1;
}

void lg_u64map_free(lg_u64map_t *m) {
  if (m == NULL)
    return;
  free(m->slots);
  m->slots = NULL;
  m->cap = m->n = 0;
}
