#include "lg_json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <string.h>

#include "lg_time.h"

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

/* Length of the run of plain bytes at the start of s[0..len). SSE2 (part
 * of every x86-64 CPU) checks 16 bytes per step; most log text is plain
 * ASCII, so this is where escaping spends its time. */
static inline size_t plain_run(const unsigned char *s, size_t len) {
  size_t i = 0;
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i bslash = _mm_set1_epi8('\\');
  const __m128i space = _mm_set1_epi8(0x20);
  for (; i + 16 <= len; i += 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
    /* Bytes >= 0x80 are negative as signed: they compare below 0x20 too. */
    __m128i bad = _mm_or_si128(
        _mm_cmplt_epi8(v, space),
        _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)));
    int mask = _mm_movemask_epi8(bad);
    if (mask != 0)
      return i + (size_t)__builtin_ctz((unsigned)mask);
  }
#endif
  while (i < len && plain[s[i]])
    i++;
  return i;
}

int lg_json_append_string(lg_buf_t *out, const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  /* Worst case: every byte becomes \u00XX (6) or U+FFFD (3). */
  if (lg_buf_reserve(out, len * 6 + 2) != 0)
    return -ENOMEM;
  char *p = out->data + out->len;
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
  out->len = (size_t)(p - out->data);
  return 0;
}

int lg_json_append_int(lg_buf_t *out, int64_t v) {
  char tmp[24];
  char *e = tmp + sizeof tmp;
  char *p = e;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0)
    *--p = '-';
  return lg_buf_append(out, p, (size_t)(e - p));
}

int lg_json_append_number(lg_buf_t *out, double v) {
  if (!isfinite(v))
    return lg_buf_append(out, "null", 4);
  if (v == floor(v) && fabs(v) <= 9007199254740992.0)
    return lg_json_append_int(out, (int64_t)v);
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%.15g", v);
  if (strtod(tmp, NULL) != v)
    n = snprintf(tmp, sizeof tmp, "%.17g", v);
  return lg_buf_append(out, tmp, (size_t)n);
}

static int append_field_value(lg_buf_t *out, const lg_batch_t *b,
                              const lg_field_t *f) {
  switch (f->type) {
  case LG_VAL_NULL:
    return lg_buf_append(out, "null", 4);
  case LG_VAL_BOOL:
    return f->i ? lg_buf_append(out, "true", 4) : lg_buf_append(out, "false", 5);
  case LG_VAL_INT:
    return lg_json_append_int(out, f->i);
  case LG_VAL_NUM:
    return lg_json_append_number(out, f->d);
  case LG_VAL_STR:
    return lg_json_append_string(out, b->data + f->s_off, f->s_len);
  case LG_VAL_JSON:
    return lg_buf_append(out, b->data + f->s_off, f->s_len);
  default:
    return lg_buf_append(out, "null", 4);
  }
}

/* Appends `"key":` unless it is the object's first member (`*first`). */
static int append_key(lg_buf_t *out, const char *k, size_t klen, int *first) {
  int rc = 0;
  if (!*first)
    rc |= lg_buf_putc(out, ',');
  *first = 0;
  rc |= lg_json_append_string(out, k, klen);
  rc |= lg_buf_putc(out, ':');
  return rc;
}

/* Which builtin or metadata key a field replaces: 0 time, 1 body,
 * 2 log.iostream, 3 + k metadata key k, or -1 none. */
static int shadow_slot(const lg_meta_t *m, const char *k, size_t klen) {
  if (klen == 4 && memcmp(k, "time", 4) == 0)
    return 0;
  if (klen == 4 && memcmp(k, "body", 4) == 0)
    return 1;
  if (klen == 12 && memcmp(k, "log.iostream", 12) == 0)
    return 2;
  for (uint32_t j = 0; m != NULL && j < m->n; j++)
    if (m->kv[j].key_len == klen && memcmp(m->kv[j].key, k, klen) == 0)
      return 3 + (int)j;
  return -1;
}

/* Field positions per record that the single-pass shadow map covers; a
 * record with more fields, or a source with more metadata keys, takes the
 * slower per-key path. */
#define SHADOW_MAX_FIELDS 256
#define SHADOW_MAX_SLOTS (3 + 64)

typedef struct shadow_map {
  const lg_field_t *slot[SHADOW_MAX_SLOTS]; /* replacing field, or NULL */
  int16_t of_field[SHADOW_MAX_FIELDS];      /* slot a field fills, or -1 */
} shadow_map_t;

/* One pass over a shadowed record's fields, so encoding costs one key
 * classification per field. Returns 0, or -1 when the map is too small. */
static int shadow_map_build(shadow_map_t *sm, const lg_batch_t *b,
                            const lg_rec_t *r) {
  const lg_meta_t *m = b->meta;
  if (m != NULL && m->n > SHADOW_MAX_SLOTS - 3)
    return -1;
  memset(sm->slot, 0, sizeof sm->slot);
  int pos = 0;
  for (int32_t f = r->field_head; f >= 0; f = b->fields[f].next, pos++) {
    if (pos == SHADOW_MAX_FIELDS)
      return -1;
    const lg_field_t *fp = &b->fields[f];
    int s = shadow_slot(m, b->data + fp->key_off, fp->key_len);
    sm->of_field[pos] = (int16_t)s;
    if (s >= 0)
      sm->slot[s] = fp;
  }
  return 0;
}

/* Writes the field that replaces a builtin or metadata key and returns 1;
 * returns 1 with no output for a removed key; 0 when not replaced. */
static int emit_shadow(lg_buf_t *out, const lg_batch_t *b,
                       const lg_field_t *f, const char *key, size_t klen,
                       int *first, int *rc) {
  if (f == NULL)
    return 0;
  if (f->type != LG_VAL_DELETED) {
    *rc |= append_key(out, key, klen, first);
    *rc |= append_field_value(out, b, f);
  }
  return 1;
}

int lg_json_encode_record(lg_buf_t *out, const lg_batch_t *b, uint32_t i) {
  const lg_rec_t *r = &b->recs[i];
  const lg_meta_t *m = b->meta;
  int rc = 0, first = 1;
  shadow_map_t sm;
  int shadowed = (r->flags & LG_REC_SHADOWED) != 0;
  int slow = shadowed && shadow_map_build(&sm, b, r) != 0;
#define SLOT(s, key, klen)                                                     \
  (!shadowed ? NULL : slow ? lg_batch_find(b, i, key, klen) : sm.slot[s])

  rc |= lg_buf_putc(out, '{');
  if (!emit_shadow(out, b, SLOT(0, "time", 4), "time", 4, &first, &rc)) {
    char t[LG_TIME_RFC3339_MAX];
    size_t tl = lg_time_format_rfc3339(r->time_ns, t);
    rc |= lg_buf_append(out, "\"time\":\"", 8);
    rc |= lg_buf_append(out, t, tl);
    rc |= lg_buf_putc(out, '"');
    first = 0;
  }
  if (!emit_shadow(out, b, SLOT(1, "body", 4), "body", 4, &first, &rc)) {
    rc |= append_key(out, "body", 4, &first);
    rc |= lg_json_append_string(out, b->data + r->body_off, r->body_len);
  }
  if (!emit_shadow(out, b, SLOT(2, "log.iostream", 12), "log.iostream", 12,
                   &first, &rc) &&
      (r->flags & LG_REC_HAS_STREAM)) {
    rc |= append_key(out, "log.iostream", 12, &first);
    rc |= (r->flags & LG_REC_STDERR) ? lg_buf_append(out, "\"stderr\"", 8)
                                     : lg_buf_append(out, "\"stdout\"", 8);
  }
  if (m != NULL && m->n > 0) {
    if (!shadowed && !first) {
      rc |= lg_buf_append(out, m->json, m->json_len);
    } else {
      for (uint32_t k = 0; k < m->n; k++) {
        const lg_meta_kv_t *e = &m->kv[k];
        if (emit_shadow(out, b, SLOT(3 + k, e->key, e->key_len), e->key,
                        e->key_len, &first, &rc))
          continue;
        rc |= append_key(out, e->key, e->key_len, &first);
        rc |= e->str ? lg_json_append_string(out, e->str, e->str_len)
                     : lg_json_append_int(out, e->num);
      }
    }
  }
#undef SLOT
  int pos = 0;
  for (int32_t f = r->field_head; f >= 0; f = b->fields[f].next, pos++) {
    const lg_field_t *fp = &b->fields[f];
    if (fp->type == LG_VAL_DELETED)
      continue;
    const char *k = b->data + fp->key_off;
    if (shadowed && (slow ? lg_batch_key_is_shadowing(b, k, fp->key_len)
                          : sm.of_field[pos] >= 0))
      continue; /* written in its builtin or metadata position */
    rc |= append_key(out, k, fp->key_len, &first);
    rc |= append_field_value(out, b, fp);
  }
  if (r->flags & LG_REC_TRUNCATED) {
    rc |= append_key(out, "lugger.truncated", 16, &first);
    rc |= lg_buf_append(out, "true", 4);
  }
  if (r->flags & LG_REC_FAILED) {
    rc |= append_key(out, "lugger.error", 12, &first);
    rc |= lg_json_append_string(out, b->data + r->err_off, r->err_len);
  }
  rc |= lg_buf_append(out, "}\n", 2);
  return rc ? -ENOMEM : 0;
}
