#include "lg_batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lg_buf.h"
#include "lg_json.h"

lg_batch_t *lg_batch_create(size_t data_hint) {
  lg_batch_t *b = calloc(1, sizeof *b);
  if (b == NULL)
    return NULL;
  b->data_cap = data_hint ? data_hint : 4096;
  b->data = malloc(b->data_cap);
  b->recs_cap = 256;
  b->recs = malloc(b->recs_cap * sizeof *b->recs);
  if (b->data == NULL || b->recs == NULL) {
    lg_batch_destroy(b);
    return NULL;
  }
  b->pipeline = -1;
  return b;
}

static void free_out(lg_batch_t *b) {
  for (uint32_t k = 0; k < b->nout; k++)
    lg_buf_free(&b->out[k]);
  free(b->out);
  b->out = NULL;
  b->nout = 0;
}

void lg_batch_destroy(lg_batch_t *b) {
  if (b == NULL)
    return;
  lg_meta_unref(b->meta);
  free_out(b);
  free(b->data);
  free(b->recs);
  free(b->fields);
  free(b);
}

void lg_batch_reset(lg_batch_t *b) {
  b->n = 0;
  b->gen++;
  b->data_len = 0;
  b->nfields = 0;
  lg_meta_unref(b->meta);
  b->meta = NULL;
  for (uint32_t k = 0; k < b->nout; k++)
    b->out[k].len = 0;
  b->checkpoint_offset = 0;
  b->pending = 0;
  b->mem_bytes = 0;
  b->next = NULL;
}

void lg_batch_set_meta(lg_batch_t *b, const lg_meta_t *meta) {
  const lg_meta_t *old = b->meta;
  b->meta = meta ? lg_meta_ref(meta) : NULL;
  lg_meta_unref(old);
}

/* Copies bytes into the arena; returns their offset or a negative errno. */
static int64_t arena_put(lg_batch_t *b, const char *p, size_t len) {
  if (b->data_len + len > UINT32_MAX)
    return -E2BIG;
  if (b->data_len + len > b->data_cap) {
    uint64_t cap = b->data_cap ? b->data_cap : 4096;
    while (cap < b->data_len + len)
      cap *= 2;
    char *d = realloc(b->data, cap);
    if (d == NULL)
      return -ENOMEM;
    b->data = d;
    b->data_cap = cap;
  }
  int64_t off = (int64_t)b->data_len;
  if (len)
    memcpy(b->data + off, p, len);
  b->data_len += len;
  return off;
}

int64_t lg_batch_add(lg_batch_t *b, const char *body, size_t len,
                     int64_t time_ns, uint64_t offset, uint64_t end_offset,
                     uint32_t flags) {
  if (b->n == b->recs_cap) {
    uint32_t cap = b->recs_cap ? b->recs_cap * 2 : 256;
    lg_rec_t *r = realloc(b->recs, (size_t)cap * sizeof *r);
    if (r == NULL)
      return -ENOMEM;
    b->recs = r;
    b->recs_cap = cap;
  }
  int64_t off = arena_put(b, body, len);
  if (off < 0)
    return off;
  lg_rec_t *r = &b->recs[b->n];
  memset(r, 0, sizeof *r);
  r->time_ns = time_ns;
  r->offset = offset;
  r->end_offset = end_offset;
  r->body_off = (uint32_t)off;
  r->body_len = (uint32_t)len;
  r->field_head = r->field_tail = -1;
  r->flags = flags;
  return b->n++;
}

int64_t lg_batch_insert(lg_batch_t *b, uint32_t after, const char *body,
                        size_t len) {
  if (after >= b->n)
    return -ERANGE;
  lg_rec_t src = b->recs[after];
  int64_t idx = lg_batch_add(b, body, len, src.time_ns, src.offset,
                             src.end_offset,
                             src.flags & (LG_REC_STDERR | LG_REC_HAS_STREAM |
                                          LG_REC_TRUNCATED |
                                          LG_REC_PARSE_ERROR | LG_REC_ROUTED));
  if (idx < 0)
    return idx;
  lg_rec_t r = b->recs[idx];
  r.routes = src.routes;
  /* Fields are chained by index into b->fields, not by record position,
   * so records move without touching their fields. */
  memmove(&b->recs[after + 2], &b->recs[after + 1],
          (size_t)(b->n - 1 - (after + 1)) * sizeof r);
  b->recs[after + 1] = r;
  return (int64_t)after + 1;
}

/* The record's key Bloom bit for a key: cheap, and different for the
 * usual field names (length and the last two bytes). */
static inline uint32_t key_bit(const char *key, size_t klen) {
  unsigned h = (unsigned)klen * 7u;
  if (klen > 0)
    h += (unsigned char)key[klen - 1] * 5u;
  if (klen > 1)
    h += (unsigned char)key[klen - 2];
  return 1u << (h & 31u);
}

const lg_field_t *lg_batch_find(const lg_batch_t *b, uint32_t i,
                                const char *key, size_t klen) {
  if (i >= b->n)
    return NULL;
  /* Most lookups are for keys a record does not have yet (a script
   * setting new fields): the Bloom word answers those without a walk. */
  if (!(b->recs[i].key_bloom & key_bit(key, klen)))
    return NULL;
  for (int32_t f = b->recs[i].field_head; f >= 0; f = b->fields[f].next) {
    const lg_field_t *fp = &b->fields[f];
    if (fp->key_len == klen && memcmp(b->data + fp->key_off, key, klen) == 0)
      return fp;
  }
  return NULL;
}

int lg_batch_key_is_shadowing(const lg_batch_t *b, const char *key,
                              size_t klen) {
  switch (klen) {
  case 4:
    if (memcmp(key, "time", 4) == 0 || memcmp(key, "body", 4) == 0)
      return 1;
    break;
  case 12:
    if (memcmp(key, "log.iostream", 12) == 0)
      return 1;
    break;
  }
  return b->meta != NULL && lg_meta_find(b->meta, key, klen) != NULL;
}

/* Returns the field for `key` of record `i`, creating it (type DELETED)
 * at the end of the record's chain when absent; NULL on error. */
static lg_field_t *field_slot(lg_batch_t *b, uint32_t i, const char *key,
                              size_t klen, int *err) {
  if (i >= b->n) {
    *err = -ERANGE;
    return NULL;
  }
  lg_field_t *f = (lg_field_t *)lg_batch_find(b, i, key, klen);
  if (f != NULL)
    return f;
  if (b->nfields == b->fields_cap) {
    uint32_t cap = b->fields_cap ? b->fields_cap * 2 : 1024;
    lg_field_t *nf = realloc(b->fields, (size_t)cap * sizeof *nf);
    if (nf == NULL) {
      *err = -ENOMEM;
      return NULL;
    }
    b->fields = nf;
    b->fields_cap = cap;
  }
  int64_t koff = arena_put(b, key, klen);
  if (koff < 0) {
    *err = (int)koff;
    return NULL;
  }
  int32_t idx = (int32_t)b->nfields++;
  f = &b->fields[idx];
  memset(f, 0, sizeof *f);
  f->key_off = (uint32_t)koff;
  f->key_len = (uint32_t)klen;
  f->next = -1;
  lg_rec_t *r = &b->recs[i];
  r->key_bloom |= key_bit(key, klen);
  if (r->field_tail >= 0)
    b->fields[r->field_tail].next = idx;
  else
    r->field_head = idx;
  r->field_tail = idx;
  if (lg_batch_key_is_shadowing(b, key, klen))
    r->flags |= LG_REC_SHADOWED;
  return f;
}

#define SLOT_OR_RETURN(f)                                                      \
  int err_ = 0;                                                                \
  lg_field_t *f = field_slot(b, i, key, klen, &err_);                          \
  if (f == NULL)                                                               \
    return err_;

static int set_bytes(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                     const char *val, size_t vlen, uint32_t type) {
  SLOT_OR_RETURN(f);
  /* The slot pointer may move when the arena grows, so store by index. */
  int32_t idx = (int32_t)(f - b->fields);
  int64_t off = arena_put(b, val, vlen);
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
  return set_bytes(b, i, key, klen, val, vlen, LG_VAL_STR);
}

int lg_batch_set_json(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                      const char *json, size_t jlen) {
  return set_bytes(b, i, key, klen, json, jlen, LG_VAL_JSON);
}

int lg_batch_set_int(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                     int64_t v) {
  SLOT_OR_RETURN(f);
  f->type = LG_VAL_INT;
  f->i = v;
  return 0;
}

int lg_batch_set_num(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                     double v) {
  SLOT_OR_RETURN(f);
  f->type = LG_VAL_NUM;
  f->d = v;
  return 0;
}

int lg_batch_set_bool(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                      int v) {
  SLOT_OR_RETURN(f);
  f->type = LG_VAL_BOOL;
  f->i = v ? 1 : 0;
  return 0;
}

int lg_batch_set_null(lg_batch_t *b, uint32_t i, const char *key,
                      size_t klen) {
  SLOT_OR_RETURN(f);
  f->type = LG_VAL_NULL;
  return 0;
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
  SLOT_OR_RETURN(nf);
  nf->type = LG_VAL_DELETED;
  return 0;
}

int lg_batch_fail(lg_batch_t *b, uint32_t i, const char *msg, size_t len) {
  if (i >= b->n)
    return -ERANGE;
  int64_t off = arena_put(b, msg, len);
  if (off < 0)
    return (int)off;
  b->recs[i].err_off = (uint32_t)off;
  b->recs[i].err_len = (uint32_t)len;
  b->recs[i].flags |= LG_REC_FAILED;
  return 0;
}

/* ---- metadata ---- */

lg_meta_t *lg_meta_create(void) {
  lg_meta_t *m = calloc(1, sizeof *m);
  if (m != NULL)
    m->refs = 1;
  return m;
}

static int meta_add(lg_meta_t *m, const char *key, const char *val,
                    size_t vlen, int64_t num) {
  lg_meta_kv_t *kv = realloc(m->kv, (m->n + 1) * sizeof *kv);
  if (kv == NULL)
    return -ENOMEM;
  m->kv = kv;
  lg_meta_kv_t *e = &kv[m->n];
  memset(e, 0, sizeof *e);
  e->key_len = strlen(key);
  char *k = malloc(e->key_len + 1);
  char *v = val ? malloc(vlen + 1) : NULL;
  if (k == NULL || (val && v == NULL)) {
    free(k);
    free(v);
    return -ENOMEM;
  }
  memcpy(k, key, e->key_len + 1);
  if (v) {
    memcpy(v, val, vlen);
    v[vlen] = '\0';
  }
  e->key = k;
  e->str = v;
  e->str_len = vlen;
  e->num = num;
  m->n++;
  return 0;
}

int lg_meta_add_str(lg_meta_t *m, const char *key, const char *val,
                    size_t vlen) {
  return meta_add(m, key, val ? val : "", vlen, 0);
}

int lg_meta_add_int(lg_meta_t *m, const char *key, int64_t val) {
  return meta_add(m, key, NULL, 0, val);
}

int lg_meta_seal(lg_meta_t *m) {
  lg_buf_t b = LG_BUF_INIT;
  int rc = 0;
  for (uint32_t k = 0; k < m->n && rc == 0; k++) {
    const lg_meta_kv_t *e = &m->kv[k];
    rc |= lg_buf_putc(&b, ',');
    rc |= lg_json_append_string(&b, e->key, e->key_len);
    rc |= lg_buf_putc(&b, ':');
    if (e->str)
      rc |= lg_json_append_string(&b, e->str, e->str_len);
    else
      rc |= lg_json_append_int(&b, e->num);
  }
  if (rc != 0) {
    lg_buf_free(&b);
    return -ENOMEM;
  }
  free(m->json);
  m->json = b.data;
  m->json_len = b.len;
  return 0;
}

const lg_meta_kv_t *lg_meta_find(const lg_meta_t *m, const char *key,
                                 size_t klen) {
  for (uint32_t k = 0; m != NULL && k < m->n; k++)
    if (m->kv[k].key_len == klen && memcmp(m->kv[k].key, key, klen) == 0)
      return &m->kv[k];
  return NULL;
}

const lg_meta_t *lg_meta_ref(const lg_meta_t *m) {
  if (m != NULL)
    __atomic_add_fetch(&((lg_meta_t *)m)->refs, 1, __ATOMIC_RELAXED);
  return m;
}

void lg_meta_unref(const lg_meta_t *cm) {
  lg_meta_t *m = (lg_meta_t *)cm;
  if (m == NULL || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  for (uint32_t k = 0; k < m->n; k++) {
    free((char *)m->kv[k].key);
    free((char *)m->kv[k].str);
  }
  free(m->kv);
  free(m->json);
  free(m);
}
