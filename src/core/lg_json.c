#include "core/lg_json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <string.h>

#include "core/lg_time.h"

/* Bytes that can be copied as they are: printable ASCII except `"` and
 * `\`. Everything else takes the slow path. */
static const unsigned char plain[256] = {
#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
    R16(0), R16(0), /* 0x00-0x1f: control */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20-0x2f, `"` */
    R16(1), R16(1),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50-0x5f, `\` */
    R16(1), R16(1),
    R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0)
#undef R16
};

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF), or 0 when it is not valid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  if (c >= 0xc2 && c <= 0xdf)
    return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
      return 0;
    if (c == 0xe0 && s[1] < 0xa0)
      return 0; /* overlong */
    if (c == 0xed && s[1] >= 0xa0)
      return 0; /* surrogate */
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 ||
        (s[3] & 0xc0) != 0x80)
      return 0;
    if (c == 0xf0 && s[1] < 0x90)
      return 0; /* overlong */
    if (c == 0xf4 && s[1] >= 0x90)
      return 0; /* above U+10FFFF */
    return 4;
  }
  return 0;
}

#if defined(__SSE2__)
/* Bit k set for each byte k of v that is not plain: below 0x20, `"`, `\`,
 * or 0x80 and above (negative as signed, so below 0x20 too). */
static inline unsigned not_plain_mask(__m128i v) {
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i bslash = _mm_set1_epi8('\\');
  const __m128i space = _mm_set1_epi8(0x20);
  __m128i bad = _mm_or_si128(
      _mm_cmplt_epi8(v, space),
      _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)));
  return (unsigned)_mm_movemask_epi8(bad);
}
#endif

/* Length of the run of plain bytes at the start of s[0..len). SSE2 (part
 * of every x86-64 CPU) checks 16 bytes per step; most log text is plain
 * ASCII, so this is where escaping spends its time. The tail and short
 * strings (most field values) are checked with one more load that ends
 * exactly at s + len and overlaps bytes already found plain, so no byte
 * outside the string is read and no byte-by-byte loop runs. */
static inline size_t plain_run(const unsigned char *s, size_t len) {
  size_t i = 0;
#if defined(__SSE2__)
  if (len >= 16) {
    for (; i + 16 <= len; i += 16) {
      unsigned m = not_plain_mask(_mm_loadu_si128((const __m128i *)(s + i)));
      if (m != 0)
        return i + (size_t)__builtin_ctz(m);
    }
    if (i < len) {
      size_t j = len - 16;
      unsigned m = not_plain_mask(_mm_loadu_si128((const __m128i *)(s + j)));
      if (m != 0)
        return j + (size_t)__builtin_ctz(m);
    }
    return len;
  }
  if (len >= 8) {
    unsigned m =
        not_plain_mask(_mm_loadl_epi64((const __m128i *)s)) & 0xffu;
    if (m != 0)
      return (size_t)__builtin_ctz(m);
    size_t j = len - 8;
    m = not_plain_mask(_mm_loadl_epi64((const __m128i *)(s + j))) & 0xffu;
    return m != 0 ? j + (size_t)__builtin_ctz(m) : len;
  }
  if (len >= 4) {
    int32_t w0, w1;
    memcpy(&w0, s, 4);
    memcpy(&w1, s + len - 4, 4);
    unsigned m = not_plain_mask(_mm_cvtsi32_si128(w0)) & 0xfu;
    if (m != 0)
      return (size_t)__builtin_ctz(m);
    m = not_plain_mask(_mm_cvtsi32_si128(w1)) & 0xfu;
    return m != 0 ? len - 4 + (size_t)__builtin_ctz(m) : len;
  }
#endif
  while (i < len && plain[s[i]])
    i++;
  return i;
}

/* Writes `len` bytes of `str` as a quoted JSON string at p, which has room
 * for len * 6 + 2 bytes (every byte as \u00XX, or U+FFFD for a byte that
 * is not UTF-8, at most 3). Returns the end of what was written. */
static char *put_string(char *p, const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  *p++ = '"';
  size_t i = 0;
  while (i < len) {
    size_t run = plain_run(s + i, len - i);
    memcpy(p, s + i, run);
    p += run;
    i += run;
    if (i == len)
      break;
    unsigned char c = s[i];
    if (c < 0x80) {
      *p++ = '\\';
      switch (c) {
      case '"': *p++ = '"'; break;
      case '\\': *p++ = '\\'; break;
      case '\n': *p++ = 'n'; break;
      case '\r': *p++ = 'r'; break;
      case '\t': *p++ = 't'; break;
      case '\b': *p++ = 'b'; break;
      case '\f': *p++ = 'f'; break;
      default:
        p += sprintf(p, "u%04x", c);
      }
      i++;
      continue;
    }
    size_t n = utf8_seq(s + i, len - i);
    if (n == 0) {
      /* Not UTF-8: write U+FFFD REPLACEMENT CHARACTER for this byte. */
      *p++ = (char)0xef;
      *p++ = (char)0xbf;
      *p++ = (char)0xbd;
      i++;
    } else {
      memcpy(p, s + i, n);
      p += n;
      i += n;
    }
  }
  *p++ = '"';
  return p;
}

/* Room put_string needs for `len` bytes. */
static inline size_t string_room(size_t len) { return len * 6 + 2; }

int lg_json_append_string(lg_buf_t *out, const char *str, size_t len) {
  if (len > (SIZE_MAX - 2) / 6 || lg_buf_reserve(out, string_room(len)) != 0)
    return -ENOMEM;
  out->len = (size_t)(put_string(out->data + out->len, str, len) - out->data);
  return 0;
}

/* Writes v in decimal at p (room for 20 bytes); returns the end. */
static char *put_int(char *p, int64_t v) {
  char tmp[24];
  char *e = tmp + sizeof tmp;
  char *q = e;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do {
    *--q = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0)
    *--q = '-';
  memcpy(p, q, (size_t)(e - q));
  return p + (e - q);
}

/* Writes v as lg_json_append_number does at p (room for 32 bytes). */
static char *put_number(char *p, double v) {
  if (!isfinite(v)) {
    memcpy(p, "null", 4);
    return p + 4;
  }
  if (v == floor(v) && fabs(v) <= 9007199254740992.0)
    return put_int(p, (int64_t)v);
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%.15g", v);
  if (strtod(tmp, NULL) != v)
    n = snprintf(tmp, sizeof tmp, "%.17g", v);
  memcpy(p, tmp, (size_t)n);
  return p + n;
}

int lg_json_append_int(lg_buf_t *out, int64_t v) {
  if (lg_buf_reserve(out, 20) != 0)
    return -ENOMEM;
  out->len = (size_t)(put_int(out->data + out->len, v) - out->data);
  return 0;
}

int lg_json_append_number(lg_buf_t *out, double v) {
  if (lg_buf_reserve(out, 32) != 0)
    return -ENOMEM;
  out->len = (size_t)(put_number(out->data + out->len, v) - out->data);
  return 0;
}

/* Room a field's value needs (see put_value). */
static inline size_t value_room(const lg_field_t *f) {
  return f->type == LG_VAL_STR    ? string_room(f->s_len)
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
    return put_int(p, f->i);
  case LG_VAL_NUM:
    return put_number(p, f->d);
  case LG_VAL_STR:
    return put_string(p, b->data + f->s_off, f->s_len);
  case LG_VAL_JSON:
    memcpy(p, b->data + f->s_off, f->s_len);
    return p + f->s_len;
  default: /* LG_VAL_NULL */
    memcpy(p, "null", 4);
    return p + 4;
  }
}

/* Writes `"key":`, after a comma unless it is the object's first member
 * (`*first`); room: string_room(klen) + 2. */
static char *put_key(char *p, const char *k, size_t klen, int *first) {
  if (!*first)
    *p++ = ',';
  *first = 0;
  p = put_string(p, k, klen);
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

/* The last second whose "YYYY-MM-DDTHH:MM:SS." this thread formatted:
 * records of a batch mostly share it, and the calendar arithmetic is a
 * good part of a short record's encoding. */
static _Thread_local struct {
  int64_t sec;
  int valid;
  char prefix[20];
} time_cache;

/* Writes `"time":"<RFC 3339>"` (no comma) at p; returns the end. */
static char *put_time(char *p, int64_t ns) {
  int64_t sec = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    sec -= 1;
  }
  memcpy(p, "\"time\":\"", 8);
  p += 8;
  if (!time_cache.valid || time_cache.sec != sec) {
    char t[LG_TIME_RFC3339_MAX];
    lg_time_format_rfc3339(ns, t);
    memcpy(time_cache.prefix, t, 20);
    time_cache.sec = sec;
    time_cache.valid = 1;
  }
  memcpy(p, time_cache.prefix, 20);
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
  n += 8 + string_room(r->body_len);
  const lg_meta_t *m = b->meta;
  if (m != NULL) {
    n += m->json_len;
    if (r->flags & LG_REC_SHADOWED)
      for (uint32_t k = 0; k < m->n; k++)
        n += 3 + string_room(m->kv[k].key_len) +
             (m->kv[k].str ? string_room(m->kv[k].str_len) : 20);
  }
  for (int32_t f = r->field_head; f >= 0; f = b->fields[f].next) {
    const lg_field_t *fp = &b->fields[f];
    n += 2 + string_room(fp->key_len) + value_room(fp);
  }
  if (r->flags & LG_REC_FAILED)
    n += 16 + string_room(r->err_len);
  n += 16 + string_room(errlen);
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
    p = put_string(p + 7, b->data + r->body_off, r->body_len);
  }
  if (!emit_shadow(&p, b, SLOT(2, "log.iostream", 12), "log.iostream", 12,
                   &first) &&
      (r->flags & LG_REC_HAS_STREAM)) {
    if (!first)
      *p++ = ',';
    first = 0;
    memcpy(p, (r->flags & LG_REC_STDERR) ? "\"log.iostream\":\"stderr\""
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
        p = e->str ? put_string(p, e->str, e->str_len) : put_int(p, e->num);
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
    p = put_string(p, error, errlen);
  } else if (r->flags & LG_REC_FAILED) {
    p = put_key(p, "lugger.error", 12, &first);
    p = put_string(p, b->data + r->err_off, r->err_len);
  }
  *p++ = '}';
  *p++ = '\n';
  out->len = (size_t)(p - out->data);
  return 0;
}
