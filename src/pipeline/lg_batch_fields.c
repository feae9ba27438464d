/*
 * lg_batch_fields.c - the fields of a batch's records and their interned
 * keys (lg_batch.h tells why keys are interned): setting, finding and
 * deleting fields by key or key id, tombstones, and which keys shadow a
 * builtin or a metadata key. These run for every field a script or a
 * parser sets, so the helpers stay static in this one file.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "core/lg_util.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_batch_internal.h"

/* What a field named `k` replaces: 0 time, 1 body, 2 log.iostream,
 * 3 + j metadata key j of `m`, or -1 nothing. */
static int32_t shadow_slot(const lg_meta_t *m, const char *k, size_t klen) {
  if (klen == 4 && memcmp(k, "time", 4) == 0)
    return 0;
  if (klen == 4 && memcmp(k, "body", 4) == 0)
    return 1;
  if (klen == 12 && memcmp(k, "log.iostream", 12) == 0)
    return 2;
  for (uint32_t j = 0; m != NULL && j < m->n; j++)
    if (m->kv[j].key_len == klen && memcmp(m->kv[j].key, k, klen) == 0)
      return 3 + (int32_t)j;
  return -1;
}

void lg__batch_keys_reshadow(lg_batch_t *b) {
  /* Which keys shadow metadata depends on the metadata. */
  for (uint32_t k = 0; k < b->nkeys; k++)
    b->keys[k].shadow =
        shadow_slot(b->meta, b->data + b->keys[k].off, b->keys[k].len);
}

/* ---- interned keys ---- */

/* A hash of a short key, 8 bytes at a time (the tail is read as an
 * overlapping word, so short keys cost one or two multiplications). */
static uint32_t key_hash(const char *k, size_t n) {
  const uint64_t mul = 0x9e3779b97f4a7c15ull;
  uint64_t h = (uint64_t)n * mul;
  uint64_t w;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    memcpy(&w, k + i, 8);
    h = (h ^ w) * mul;
    h ^= h >> 29;
  }
  if (i < n) {
    if (n >= 8) {
      memcpy(&w, k + n - 8, 8);
    } else if (n >= 4) {
      uint32_t lo, hi;
      memcpy(&lo, k, 4);
      memcpy(&hi, k + n - 4, 4);
      w = (uint64_t)lo | (uint64_t)hi << 32;
    } else {
      w = (uint64_t)(unsigned char)k[0] |
          (uint64_t)(unsigned char)k[n / 2] << 8 |
          (uint64_t)(unsigned char)k[n - 1] << 16;
    }
    h = (h ^ w) * mul;
    h ^= h >> 29;
  }
  return (uint32_t)(h ^ (h >> 32));
}

/* The id of `key` in b's key table, or -1 when no field of the batch has
 * used it. */
static int64_t key_lookup(const lg_batch_t *b, const char *key, size_t klen,
                          uint32_t h) {
  if (b->key_slots_cap == 0)
    return -1;
  uint32_t mask = b->key_slots_cap - 1;
  for (uint32_t s = h & mask;; s = (s + 1) & mask) {
    uint32_t v = b->key_slots[s];
    if (v == 0)
      return -1;
    const lg_key_t *e = &b->keys[v - 1];
    if (e->hash == h && e->len == klen &&
        memcmp(b->data + e->off, key, klen) == 0)
      return (int64_t)v - 1;
  }
}

/* Puts key id `id` in its hash slot (the table has room). */
static void slot_insert(lg_batch_t *b, uint32_t id) {
  uint32_t mask = b->key_slots_cap - 1;
  uint32_t s = b->keys[id].hash & mask;
  while (b->key_slots[s] != 0)
    s = (s + 1) & mask;
  b->key_slots[s] = id + 1;
}

/* The id of `key`, interning it when new. Returns the id or -ENOMEM /
 * -E2BIG. `key` must not point into b->data (the arena may move). */
static int64_t key_intern(lg_batch_t *b, const char *key, size_t klen) {
  uint32_t h = key_hash(key, klen);
  int64_t id = key_lookup(b, key, klen, h);
  if (id >= 0)
    return id;
  if (klen > UINT32_MAX / 8)
    return -E2BIG;
  /* Keep the hash table at most half full. */
  if ((b->nkeys + 1) * 2 > b->key_slots_cap) {
    uint32_t cap = b->key_slots_cap ? b->key_slots_cap * 2 : 64;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
      return -ENOMEM;
    free(b->key_slots);
    b->key_slots = slots;
    b->key_slots_cap = cap;
    for (uint32_t k = 0; k < b->nkeys; k++)
      slot_insert(b, k);
  }
  if (LG_GROW(b->keys, b->keys_cap, (size_t)b->nkeys + 1, 32) != 0)
    return -ENOMEM;
  uint32_t nid = b->nkeys;
  lg_buf_t json = LG_BUF_INIT;
  if (lg_json_append_string(&json, key, klen) != 0 ||
      lg_buf_putc(&json, ':') != 0) {
    lg_buf_free(&json);
    return -ENOMEM;
  }
  /* [id][key bytes][JSON]: the id before the bytes lets a field find its
   * key from key_off alone (lg_batch_field_key). */
  int64_t ioff = lg__batch_arena_put(b, (const char *)&nid, sizeof nid);
  int64_t koff = ioff < 0 ? ioff : lg__batch_arena_put(b, key, klen);
  int64_t joff = koff < 0 ? koff : lg__batch_arena_put(b, json.data, json.len);
  lg_buf_free(&json);
  if (joff < 0)
    return joff;
  lg_key_t *e = &b->keys[nid];
  e->off = (uint32_t)koff;
  e->len = (uint32_t)klen;
  e->json_off = (uint32_t)joff;
  e->json_len = (uint32_t)(b->data_len - (uint64_t)joff);
  e->hash = h;
  e->shadow = shadow_slot(b->meta, key, klen);
  e->last_field = e->last_head = -1;
  b->nkeys++;
  slot_insert(b, nid);
  return nid;
}

/* The record's key Bloom bit for key id `id`: exact for the first 32 keys
 * of a batch, which is every key of the usual script. */
static inline uint32_t key_bit(uint32_t id) { return 1u << (id & 31u); }

/* The field of record r with interned key `id`, or NULL. */
static lg_field_t *find_id(const lg_batch_t *b, const lg_rec_t *r,
                           uint32_t id) {
  /* Most lookups are for keys a record does not have yet (a script
   * setting new fields): the Bloom word answers those without a walk. */
  if (!(r->key_bloom & key_bit(id)))
    return NULL;
  const lg_key_t *k = &b->keys[id];
  uint32_t off = k->off;
  /* Past 32 keys the Bloom word is all ones, and a walk per lookup made a
   * record with n keys cost O(n^2): a 1 MiB JSON or logfmt line with
   * 80,000 keys took 7-11 s of C that script_timeout cannot interrupt.
   * Field indexes only grow along a chain (fields are appended), so when
   * fields[last_field] is this key's newest field (it holds the key: a
   * field reset since would have left it out of range or holding
   * another key, until a newer field with this key updates it), it is r's
   * own field when it was made for r's head, and r has none when it lies
   * before r's first field; no field ever had it when last_field is -1.
   * Otherwise (a rolled-back or reset batch, a key set on records out of
   * order) the walk answers. */
  int32_t lf = k->last_field;
  if (lf < 0) /* no field of the batch ever had this key */
    return NULL;
  if ((uint32_t)lf < b->nfields && b->fields[lf].key_off == off) {
    if (k->last_head == r->field_head)
      return &b->fields[lf];
    if (lf < r->field_head)
      return NULL;
  }
  for (int32_t f = r->field_head; f >= 0; f = b->fields[f].next)
    if (b->fields[f].key_off == off)
      return &b->fields[f];
  return NULL;
}

const lg_field_t *lg_batch_find(const lg_batch_t *b, uint32_t i,
                                const char *key, size_t klen) {
  if (i >= b->n || b->recs[i].field_head < 0)
    return NULL;
  int64_t id = key_lookup(b, key, klen, key_hash(key, klen));
  return id < 0 ? NULL : find_id(b, &b->recs[i], (uint32_t)id);
}

int lg_batch_key_is_shadowing(const lg_batch_t *b, const char *key,
                              size_t klen) {
  return shadow_slot(b->meta, key, klen) >= 0;
}

/* Returns the field for `key` of record `i`, creating it (type DELETED)
 * at the end of the record's chain when absent; NULL on error. */
static lg_field_t *field_slot_id(lg_batch_t *b, uint32_t i, uint32_t id,
                                 int *err) {
  if (i >= b->n) {
    *err = -ERANGE;
    return NULL;
  }
  if (id >= b->nkeys) {
    *err = -EINVAL;
    return NULL;
  }
  lg_rec_t *r = &b->recs[i];
  lg_field_t *f = find_id(b, r, (uint32_t)id);
  if (f != NULL)
    return f;
  if (LG_GROW(b->fields, b->fields_cap, (size_t)b->nfields + 1, 1024) != 0) {
    *err = -ENOMEM;
    return NULL;
  }
  const lg_key_t *e = &b->keys[id];
  int32_t idx = (int32_t)b->nfields++;
  f = &b->fields[idx];
  memset(f, 0, sizeof *f);
  f->key_off = e->off;
  f->key_len = e->len;
  f->next = -1;
  r->key_bloom |= key_bit((uint32_t)id);
  if (r->field_tail >= 0)
    b->fields[r->field_tail].next = idx;
  else
    r->field_head = idx;
  r->field_tail = idx;
  b->keys[id].last_field = idx;
  b->keys[id].last_head = r->field_head;
  if (e->shadow >= 0)
    r->flags |= LG_REC_SHADOWED;
  return f;
}

int64_t lg_batch_key_id(lg_batch_t *b, const char *key, size_t klen) {
  return key_intern(b, key, klen);
}

/* The field `kid` of record `i` to set (field_slot_id), as `f`; returns
 * the error from the setter when there is none. */
#define SLOT_OR_RETURN(f)                                                      \
  int err_ = 0;                                                                \
  lg_field_t *f = field_slot_id(b, i, kid, &err_);                             \
  if (f == NULL)                                                               \
    return err_;

/* The id of `key` for a setter by key of record `i`: -ERANGE for a record
 * the batch does not have (before the key is interned), else key_intern's
 * id or error. */
static int64_t set_key(lg_batch_t *b, uint32_t i, const char *key,
                       size_t klen) {
  return i < b->n ? key_intern(b, key, klen) : -ERANGE;
}

/* Sets field `kid` of record `i` to `vlen` bytes at `val`, copied into the
 * arena, as a value of `type` (LG_VAL_STR or LG_VAL_JSON). */
static int set_bytes_id(lg_batch_t *b, uint32_t i, uint32_t kid,
                        const char *val, size_t vlen, uint32_t type) {
  SLOT_OR_RETURN(f);
  /* The slot pointer may move when the arena grows, so store by index. */
  int32_t idx = (int32_t)(f - b->fields);
  int64_t off = lg__batch_arena_put(b, val, vlen);
  if (off < 0)
    return (int)off;
  f = &b->fields[idx];
  f->type = type;
  f->s_off = (uint32_t)off;
  f->s_len = (uint32_t)vlen;
  return 0;
}

int lg_batch_set_str(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                     const char *val, size_t vlen) {
  int64_t id = set_key(b, i, key, klen);
  return id < 0 ? (int)id : lg_batch_set_str_id(b, i, (uint32_t)id, val, vlen);
}

int lg_batch_set_str_id(lg_batch_t *b, uint32_t i, uint32_t kid,
                        const char *val, size_t vlen) {
  return set_bytes_id(b, i, kid, val, vlen, LG_VAL_STR);
}

int lg_batch_set_span_id(lg_batch_t *b, uint32_t i, uint32_t kid, uint32_t type,
                         uint64_t off, uint64_t len) {
  if (off > b->data_len || len > b->data_len - off ||
      (type != LG_VAL_STR && type != LG_VAL_JSON))
    return -EINVAL;
  SLOT_OR_RETURN(f);
  f->type = type;
  f->s_off = (uint32_t)off;
  f->s_len = (uint32_t)len;
  return 0;
}

int lg_batch_set_int_id(lg_batch_t *b, uint32_t i, uint32_t kid, int64_t v) {
  SLOT_OR_RETURN(f);
  f->type = LG_VAL_INT;
  f->i = v;
  return 0;
}

int lg_batch_set_num_id(lg_batch_t *b, uint32_t i, uint32_t kid, double v) {
  SLOT_OR_RETURN(f);
  f->type = LG_VAL_NUM;
  f->d = v;
  return 0;
}

int lg_batch_set_bool_id(lg_batch_t *b, uint32_t i, uint32_t kid, int v) {
  SLOT_OR_RETURN(f);
  f->type = LG_VAL_BOOL;
  f->i = v ? 1 : 0;
  return 0;
}

int lg_batch_set_null_id(lg_batch_t *b, uint32_t i, uint32_t kid) {
  SLOT_OR_RETURN(f);
  f->type = LG_VAL_NULL;
  return 0;
}

int lg_batch_set_json_id(lg_batch_t *b, uint32_t i, uint32_t kid,
                         const char *json, size_t jlen) {
  return set_bytes_id(b, i, kid, json, jlen, LG_VAL_JSON);
}

int lg_batch_del_id(lg_batch_t *b, uint32_t i, uint32_t kid) {
  if (i >= b->n)
    return -ERANGE;
  if (kid >= b->nkeys)
    return -EINVAL;
  lg_field_t *f = find_id(b, &b->recs[i], kid);
  if (f != NULL) {
    f->type = LG_VAL_DELETED;
    return 0;
  }
  /* Only builtins and metadata need a tombstone; other keys are absent. */
  if (b->keys[kid].shadow < 0)
    return 0;
  SLOT_OR_RETURN(nf);
  nf->type = LG_VAL_DELETED;
  return 0;
}

int lg_batch_set_json(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                      const char *json, size_t jlen) {
  int64_t id = set_key(b, i, key, klen);
  return id < 0 ? (int)id
                : lg_batch_set_json_id(b, i, (uint32_t)id, json, jlen);
}

int lg_batch_set_int(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                     int64_t v) {
  int64_t id = set_key(b, i, key, klen);
  return id < 0 ? (int)id : lg_batch_set_int_id(b, i, (uint32_t)id, v);
}

int lg_batch_set_num(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                     double v) {
  int64_t id = set_key(b, i, key, klen);
  return id < 0 ? (int)id : lg_batch_set_num_id(b, i, (uint32_t)id, v);
}

int lg_batch_set_bool(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                      int v) {
  int64_t id = set_key(b, i, key, klen);
  return id < 0 ? (int)id : lg_batch_set_bool_id(b, i, (uint32_t)id, v);
}

int lg_batch_set_null(lg_batch_t *b, uint32_t i, const char *key, size_t klen) {
  int64_t id = set_key(b, i, key, klen);
  return id < 0 ? (int)id : lg_batch_set_null_id(b, i, (uint32_t)id);
}

int lg_batch_del(lg_batch_t *b, uint32_t i, const char *key, size_t klen) {
  if (i >= b->n)
    return -ERANGE;
  lg_field_t *f = (lg_field_t *)lg_batch_find(b, i, key, klen);
  if (f != NULL) {
    f->type = LG_VAL_DELETED;
    return 0;
  }
  /* Only builtins and metadata need a tombstone; other keys are absent. */
  if (!lg_batch_key_is_shadowing(b, key, klen))
    return 0;
  int64_t id = key_intern(b, key, klen);
  return id < 0 ? (int)id : lg_batch_del_id(b, i, (uint32_t)id);
}
