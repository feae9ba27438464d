/* Records as JSON lines (lg_record_json.h): one object per record in the
 * contract's shape, written with one reservation and plain stores. */
#include "pipeline/lg_record_json.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/lg_json.h"
#include "core/lg_time.h"
#include "pipeline/lg_ffi.h"

/* Room a field's value needs (see put_value). */
static inline size_t value_room(const lg_field_t *f) {
  return f->type == LG_VAL_STR    ? lg_json_string_room(f->s_len)
         : f->type == LG_VAL_JSON ? f->s_len
                                  : 32;
}

/* Writes a field's value at p; returns the end. */
static char *put_value(char *p, const lg_batch_t *b, const lg_field_t *f) {
  switch (f->type) {
  case LG_VAL_BOOL:
    if (f->i) {
      memcpy(p, "true", 4);
      return p + 4;
    }
    memcpy(p, "false", 5);
    return p + 5;
  case LG_VAL_INT:
    return lg_json_put_int(p, f->i);
  case LG_VAL_NUM:
    return lg_json_put_number(p, f->d);
  case LG_VAL_STR:
    return lg_json_put_string(p, b->data + f->s_off, f->s_len);
  case LG_VAL_JSON:
    memcpy(p, b->data + f->s_off, f->s_len);
    return p + f->s_len;
  default: /* LG_VAL_NULL */
    memcpy(p, "null", 4);
    return p + 4;
  }
}

/* Writes `"key":`, after a comma unless it is the object's first member
 * (`*first`); room: lg_json_string_room(klen) + 2. */
static char *put_key(char *p, const char *k, size_t klen, int *first) {
  if (!*first)
    *p++ = ',';
  *first = 0;
  p = lg_json_put_string(p, k, klen);
  *p++ = ':';
  return p;
}

/* Builtin and metadata slots the shadow map covers; a source with more
 * metadata keys takes the slower per-key path. */
#define SHADOW_MAX_SLOTS (3 + 64)

typedef struct shadow_map {
  const lg_field_t *slot[SHADOW_MAX_SLOTS]; /* replacing field, or NULL */
} shadow_map_t;

/* One pass over a shadowed record's fields, using the shadow slot each
 * interned key already knows. Returns 0, or -1 when the map is too small. */
static int shadow_map_build(shadow_map_t *sm, const lg_batch_t *b,
                            const lg_rec_t *r) {
  const lg_meta_t *m = b->meta;
  uint32_t nslots = 3 + (m != NULL ? m->n : 0);
  if (nslots > SHADOW_MAX_SLOTS)
    return -1;
  memset(sm->slot, 0, nslots * sizeof sm->slot[0]);
  for (int32_t f = r->field_head; f >= 0; f = b->fields[f].next) {
    const lg_field_t *fp = &b->fields[f];
    int32_t s = lg_batch_field_key(b, fp)->shadow;
    if (s >= 0)
      sm->slot[s] = fp;
  }
  return 0;
}

/* Writes the field that replaces a builtin or metadata key and returns 1;
 * returns 1 with no output for a removed key; 0 when not replaced. */
static int emit_shadow(char **pp, const lg_batch_t *b, const lg_field_t *f,
                       const char *key, size_t klen, int *first) {
  if (f == NULL)
    return 0;
  if (f->type != LG_VAL_DELETED) {
    *pp = put_key(*pp, key, klen, first);
    *pp = put_value(*pp, b, f);
  }
  return 1;
}

/* The last day whose "YYYY-MM-DDT" this thread formatted: records of a
 * batch mostly share it, and the calendar arithmetic was a good part of a
 * short record's encoding when the cache held one second only (a parsed
 * time changes its second from one record to the next). */
static _Thread_local struct {
  int64_t day;
  int valid;
  char date[11];
} time_cache;

static inline void put2(char *p, unsigned v) {
  p[0] = (char)('0' + v / 10);
  p[1] = (char)('0' + v % 10);
}

/* Writes `"time":"<RFC 3339>"` (no comma) at p, as lg_time_format_rfc3339
 * writes the time; returns the end. */
static char *put_time(char *p, int64_t ns) {
  int64_t sec = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    sec -= 1;
  }
  int64_t day = sec / 86400;
  int64_t sod = sec % 86400;
  if (sod < 0) {
    sod += 86400;
    day -= 1;
  }
  memcpy(p, "\"time\":\"", 8);
  p += 8;
  if (!time_cache.valid || time_cache.day != day) {
    /* The date as lg_time_format_rfc3339 writes it (years clamped). */
    char t[LG_TIME_RFC3339_MAX];
    lg_time_format_rfc3339(ns, t);
    memcpy(time_cache.date, t, 11);
    time_cache.day = day;
    time_cache.valid = 1;
  }
  memcpy(p, time_cache.date, 11);
  unsigned s = (unsigned)sod;
  put2(p + 11, s / 3600);
  p[13] = ':';
  put2(p + 14, s / 60 % 60);
  p[16] = ':';
  put2(p + 17, s % 60);
  p[19] = '.';
  for (int k = 28; k >= 20; k--) {
    p[k] = (char)('0' + frac % 10);
    frac /= 10;
  }
  p[29] = 'Z';
  p[30] = '"';
  return p + 31;
}

/* Upper bound of the bytes lg_json_encode_record writes for record r. */
static size_t record_room(const lg_batch_t *b, const lg_rec_t *r,
                          size_t errlen) {
  /* {, "time":"...", "}\n", ,"log.iostream":"stderr", lugger.truncated */
  size_t n = 1 + 8 + 31 + 2 + 24 + 26;
  n += 8 + lg_json_string_room(r->body_len);
  const lg_meta_t *m = b->meta;
  if (m != NULL) {
    n += m->json_len;
    if (r->flags & LG_REC_SHADOWED)
      for (uint32_t k = 0; k < m->n; k++)
        n += 3 + lg_json_string_room(m->kv[k].key_len) +
             (m->kv[k].str ? lg_json_string_room(m->kv[k].str_len) : 20);
  }
  for (int32_t f = r->field_head; f >= 0; f = b->fields[f].next) {
    const lg_field_t *fp = &b->fields[f];
    n += 2 + lg_json_string_room(fp->key_len) + value_room(fp);
  }
  if (r->flags & LG_REC_FAILED)
    n += 16 + lg_json_string_room(r->err_len);
  n += 16 + lg_json_string_room(errlen);
  return n;
}

int lg_json_encode_record(lg_buf_t *out, const lg_batch_t *b, uint32_t i) {
  return lg_json_encode_record_err(out, b, i, NULL, 0);
}

int lg_json_encode_record_err(lg_buf_t *out, const lg_batch_t *b, uint32_t i,
                              const char *error, size_t errlen) {
  const lg_rec_t *r = &b->recs[i];
  const lg_meta_t *m = b->meta;
  /* One reservation for the whole record: then every write below is a
   * plain store, with no capacity check per piece. */
  if (lg_buf_reserve(out, record_room(b, r, error != NULL ? errlen : 0)) != 0)
    return -ENOMEM;
  char *p = out->data + out->len;
  int first = 1;
  shadow_map_t sm;
  int shadowed = (r->flags & LG_REC_SHADOWED) != 0;
  int slow = shadowed && shadow_map_build(&sm, b, r) != 0;
#define SLOT(s, key, klen)                                                     \
  (!shadowed ? NULL : slow ? lg_batch_find(b, i, key, klen) : sm.slot[s])

  *p++ = '{';
  if (!emit_shadow(&p, b, SLOT(0, "time", 4), "time", 4, &first)) {
    p = put_time(p, r->time_ns);
    first = 0;
  }
  if (!emit_shadow(&p, b, SLOT(1, "body", 4), "body", 4, &first)) {
    if (!first)
      *p++ = ',';
    first = 0;
    memcpy(p, "\"body\":", 7);
    p = lg_json_put_string(p + 7, b->data + r->body_off, r->body_len);
  }
  if (!emit_shadow(&p, b, SLOT(2, "log.iostream", 12), "log.iostream", 12,
                   &first) &&
      (r->flags & LG_REC_HAS_STREAM)) {
    if (!first)
      *p++ = ',';
    first = 0;
    memcpy(p,
           (r->flags & LG_REC_STDERR) ? "\"log.iostream\":\"stderr\""
                                      : "\"log.iostream\":\"stdout\"",
           23);
    p += 23;
  }
  if (m != NULL && m->n > 0) {
    if (!shadowed && !first) {
      memcpy(p, m->json, m->json_len);
      p += m->json_len;
    } else {
      for (uint32_t k = 0; k < m->n; k++) {
        const lg_meta_kv_t *e = &m->kv[k];
        if (emit_shadow(&p, b, SLOT(3 + k, e->key, e->key_len), e->key,
                        e->key_len, &first))
          continue;
        p = put_key(p, e->key, e->key_len, &first);
        p = e->str ? lg_json_put_string(p, e->str, e->str_len)
                   : lg_json_put_int(p, e->num);
      }
    }
  }
#undef SLOT
  for (int32_t f = r->field_head; f >= 0; f = b->fields[f].next) {
    const lg_field_t *fp = &b->fields[f];
    if (fp->type == LG_VAL_DELETED)
      continue;
    const lg_key_t *key = lg_batch_field_key(b, fp);
    if (shadowed && key->shadow >= 0)
      continue; /* written in its builtin or metadata position */
    /* The key's JSON was encoded once, when the batch interned it. */
    if (!first)
      *p++ = ',';
    first = 0;
    memcpy(p, b->data + key->json_off, key->json_len);
    p += key->json_len;
    p = put_value(p, b, fp);
  }
  if (r->flags & LG_REC_TRUNCATED) {
    p = put_key(p, "lugger.truncated", 16, &first);
    memcpy(p, "true", 4);
    p += 4;
  }
  if (error != NULL) {
    p = put_key(p, "lugger.error", 12, &first);
    p = lg_json_put_string(p, error, errlen);
  } else if (r->flags & LG_REC_FAILED) {
    uint32_t elen;
    const char *etext = lg_batch_rec_error(b, i, &elen);
    p = put_key(p, "lugger.error", 12, &first);
    p = lg_json_put_string(p, etext, elen);
  }
  *p++ = '}';
  *p++ = '\n';
  out->len = (size_t)(p - out->data);
  return 0;
}

int lg_json_append_record_string(lg_buf_t *out, const lg_batch_t *b, uint32_t i,
                                 int body_only, const char *error) {
  if (body_only && b != NULL && error == NULL) {
    lg_ffi_val_t v;
    int t = lg_ffi_rec_get(b, i, "body", 4, &v);
    return lg_json_append_string(out, t == LG_VAL_STR ? v.s : "",
                                 t == LG_VAL_STR ? v.len : 0);
  }
  lg_buf_t rec = LG_BUF_INIT;
  int rc = lg_json_encode_record_err(&rec, b, i, error,
                                     error != NULL ? strlen(error) : 0);
  if (rc == 0)
    rc = lg_json_append_string(out, rec.data, rec.len > 0 ? rec.len - 1 : 0);
  lg_buf_free(&rec);
  return rc;
}
