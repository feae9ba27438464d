#include "lg_json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

int lg_json_append_string(lg_buf_t *out, const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  /* Worst case: every byte becomes \u00XX (6) or U+FFFD (3). */
  if (lg_buf_reserve(out, len * 6 + 2) != 0)
    return -ENOMEM;
  char *p = out->data + out->len;
  *p++ = '"';
  size_t i = 0;
  while (i < len) {
    size_t start = i;
    while (i < len && plain[s[i]])
      i++;
    memcpy(p, s + start, i - start);
    p += i - start;
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

/* For a shadowed record: emits the field that replaces builtin `key` and
 * returns 1, returns 1 without output for a removed one, 0 when the key
 * is not shadowed. */
static int shadow(lg_buf_t *out, const lg_batch_t *b, uint32_t i,
                  const char *key, size_t klen, int *first, int *rc) {
  if (!(b->recs[i].flags & LG_REC_SHADOWED))
    return 0;
  const lg_field_t *f = lg_batch_find(b, i, key, klen);
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
  int rc = 0, first = 1;
  rc |= lg_buf_putc(out, '{');
  if (!shadow(out, b, i, "time", 4, &first, &rc)) {
    char t[LG_TIME_RFC3339_MAX];
    size_t tl = lg_time_format_rfc3339(r->time_ns, t);
    rc |= lg_buf_append(out, "\"time\":\"", 8);
    rc |= lg_buf_append(out, t, tl);
    rc |= lg_buf_putc(out, '"');
    first = 0;
  }
  if (!shadow(out, b, i, "body", 4, &first, &rc)) {
    rc |= append_key(out, "body", 4, &first);
    rc |= lg_json_append_string(out, b->data + r->body_off, r->body_len);
  }
  if (!shadow(out, b, i, "log.iostream", 12, &first, &rc) &&
      (r->flags & LG_REC_HAS_STREAM)) {
    rc |= append_key(out, "log.iostream", 12, &first);
    rc |= (r->flags & LG_REC_STDERR) ? lg_buf_append(out, "\"stderr\"", 8)
                                     : lg_buf_append(out, "\"stdout\"", 8);
  }
  const lg_meta_t *m = b->meta;
  if (m != NULL && m->n > 0) {
    if (!(r->flags & LG_REC_SHADOWED) && !first) {
      rc |= lg_buf_append(out, m->json, m->json_len);
    } else {
      for (uint32_t k = 0; k < m->n; k++) {
        const lg_meta_kv_t *e = &m->kv[k];
        if (shadow(out, b, i, e->key, e->key_len, &first, &rc))
          continue;
        rc |= append_key(out, e->key, e->key_len, &first);
        rc |= e->str ? lg_json_append_string(out, e->str, e->str_len)
                     : lg_json_append_int(out, e->num);
      }
    }
  }
  for (int32_t f = r->field_head; f >= 0; f = b->fields[f].next) {
    const lg_field_t *fp = &b->fields[f];
    if (fp->type == LG_VAL_DELETED)
      continue;
    const char *k = b->data + fp->key_off;
    if ((r->flags & LG_REC_SHADOWED) &&
        lg_batch_key_is_shadowing(b, k, fp->key_len))
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
