/*
 * lg_u64map.h - a hash map from 64-bit keys (fingerprints, ids) to size_t
 * values, for sets that grow to many thousands of entries where a linear
 * search would make the whole run quadratic.
 *
 * Open addressing with linear probing (removal shifts the entries after
 * a removed one back, so no tombstones pile up); the table doubles when it
 * is half full, so a lookup, an insertion or a removal costs O(1) on
 * average. Keys are mixed before use, so keys that are already hashes and
 * plain counters alike spread over the table. Every key, 0 included, may
 * be stored. Not thread-safe.
 *
 * A zeroed lg_u64map_t is an empty map; lg_u64map_free releases it and
 * leaves it empty again.
 */
#ifndef LG_U64MAP_H
#define LG_U64MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct lg_u64map_slot {
  uint64_t key;
  size_t val;
  int used;
} lg_u64map_slot_t;

typedef struct lg_u64map {
  lg_u64map_slot_t *slots; /* cap slots, NULL when cap is 0 */
  size_t cap, n;           /* cap: 0 or a power of two */
} lg_u64map_t;

/* Looks `key` up: 1 with its value in *val (when val is not NULL), or 0
 * when the map does not hold it. */
int lg_u64map_get(const lg_u64map_t *m, uint64_t key, size_t *val);

/* Adds `key` with value `val` unless the map holds `key` already (its
 * value is then left as it is). Returns 1 when added, 0 when it was there,
 * or -ENOMEM (the map unchanged). */
int lg_u64map_add(lg_u64map_t *m, uint64_t key, size_t val);

/* Sets the value of `key` to `val`, adding it when the map does not hold
 * it. Returns 0, or -ENOMEM (the map unchanged). Replacing the value of a
 * key the map holds never fails. */
int lg_u64map_put(lg_u64map_t *m, uint64_t key, size_t val);

/* Removes `key`: 1 when it was there, 0 when not. Never fails. */
int lg_u64map_del(lg_u64map_t *m, uint64_t key);

/* Entries in the map. */
static inline size_t lg_u64map_count(const lg_u64map_t *m) { return m->n; }

/* Frees the table; the map is empty afterwards. NULL-safe. */
void lg_u64map_free(lg_u64map_t *m);

#endif
