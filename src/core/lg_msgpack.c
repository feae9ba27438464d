/*
 * lg_msgpack.c - see lg_msgpack.h.
 */
#define MP_SOURCE 1 /* msgpuck: the one file that holds its definitions */
#include <msgpuck.h>

#include "core/lg_msgpack.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/lg_json.h"
#include "core/lg_time.h"

void lg_mp_scan_init(lg_mp_scan_t *s) {
  s->pos = 0;
  s->depth = 0;
}

static inline uint32_t be16(const unsigned char *p) {
  return (uint32_t)p[0] << 8 | p[1];
}
static inline uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

/* Size of the header of the object whose first byte is c (type byte
 * included) and, through *payload, the bytes that follow the header for
 * fixed-size types. *count is set for arrays and maps (pairs count twice),
 * *lenbytes for str/bin/ext whose length is in the header. */
typedef struct hdr_info {
  uint8_t hdr;      /* header bytes including the type byte */
  uint8_t lenbytes; /* 0, 1, 2 or 4: big-endian length after the type byte */
  uint8_t kind;     /* 0 scalar/payload, 1 array, 2 map */
  uint8_t ext;      /* 1: one type byte follows the length */
  uint32_t fixed;   /* payload bytes known from the type byte alone */
} hdr_info_t;

static int classify(unsigned char c, hdr_info_t *h) {
  memset(h, 0, sizeof *h);
  h->hdr = 1;
  if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
    return 0;               /* fixint, nil, bool */
  if ((c & 0xf0) == 0x80) { /* fixmap */
    h->kind = 2;
    h->fixed = c & 0x0f;
    return 0;
  }
  if ((c & 0xf0) == 0x90) { /* fixarray */
    h->kind = 1;
    h->fixed = c & 0x0f;
    return 0;
  }
  if ((c & 0xe0) == 0xa0) { /* fixstr */
    h->fixed = c & 0x1f;
    return 0;
  }
  switch (c) {
  case 0xc4:
  case 0xd9:
    h->lenbytes = 1;
    break; /* bin8, str8 */
  case 0xc5:
  case 0xda:
    h->lenbytes = 2;
    break; /* bin16, str16 */
  case 0xc6:
  case 0xdb:
    h->lenbytes = 4;
    break; /* bin32, str32 */
  case 0xc7:
    h->lenbytes = 1;
    h->ext = 1;
    break; /* ext8 */
  case 0xc8:
    h->lenbytes = 2;
    h->ext = 1;
    break; /* ext16 */
  case 0xc9:
    h->lenbytes = 4;
    h->ext = 1;
    break; /* ext32 */
  case 0xca:
    h->fixed = 4;
    break; /* float32 */
  case 0xcb:
    h->fixed = 8;
    break; /* float64 */
  case 0xcc:
  case 0xd0:
    h->fixed = 1;
    break;
  case 0xcd:
  case 0xd1:
    h->fixed = 2;
    break;
  case 0xce:
  case 0xd2:
    h->fixed = 4;
    break;
  case 0xcf:
  case 0xd3:
    h->fixed = 8;
    break;
  case 0xd4:
    h->fixed = 2;
    break; /* fixext1: type + 1 */
  case 0xd5:
    h->fixed = 3;
    break;
  case 0xd6:
    h->fixed = 5;
    break;
  case 0xd7:
    h->fixed = 9;
    break;
  case 0xd8:
    h->fixed = 17;
    break;
  case 0xdc:
    h->lenbytes = 2;
    h->kind = 1;
    break; /* array16 */
  case 0xdd:
    h->lenbytes = 4;
    h->kind = 1;
    break; /* array32 */
  case 0xde:
    h->lenbytes = 2;
    h->kind = 2;
    break; /* map16 */
  case 0xdf:
    h->lenbytes = 4;
    h->kind = 2;
    break; /* map32 */
  default:
    return -EBADMSG; /* 0xc1, never used */
  }
  h->hdr = (uint8_t)(1 + h->lenbytes + h->ext);
  return 0;
}

int lg_mp_scan(lg_mp_scan_t *s, const char *buf, size_t len, size_t max_bytes) {
  const unsigned char *u = (const unsigned char *)buf;
  for (;;) {
    if (s->pos > len)
      return LG_MP_MORE; /* still inside a str/bin/ext payload */
    /* Close finished containers; when the outermost one closes (or a
     * top-level scalar was consumed) the object is complete. */
    while (s->depth > 0 && s->remain[s->depth - 1] == 0)
      s->depth--;
    if (s->depth == 0 && s->pos > 0)
      return LG_MP_COMPLETE;
    if (s->pos >= len)
      return LG_MP_MORE;
    hdr_info_t h;
    if (classify(u[s->pos], &h) != 0)
      return -EBADMSG;
    if (s->pos + h.hdr > len)
      return LG_MP_MORE; /* the header itself is not all here yet */
    uint64_t n = h.fixed;
    const unsigned char *lp = u + s->pos + 1;
    if (h.lenbytes == 1)
      n = lp[0];
    else if (h.lenbytes == 2)
      n = be16(lp);
    else if (h.lenbytes == 4)
      n = be32(lp);
    if (h.kind == 2)
      n *= 2; /* a map's pairs are two elements each */
    size_t after = s->pos + h.hdr;
    /* Every element takes at least one byte, so a count or payload that
     * cannot fit in what is left of max_bytes is refused right away. */
    if (after > max_bytes || n > max_bytes - after)
      return -EMSGSIZE;
    if (s->depth > 0)
      s->remain[s->depth - 1]--;
    if (h.kind != 0) {
      s->pos = after;
      if (n == 0) {
        if (s->depth == 0)
          return LG_MP_COMPLETE;
        continue;
      }
      if (s->depth == LG_MP_MAX_DEPTH)
        return -ELOOP;
      s->remain[s->depth++] = n;
      continue;
    }
    s->pos = after + n;
    if (s->depth == 0)
      return s->pos <= len ? LG_MP_COMPLETE : LG_MP_MORE;
    if (s->pos > len)
      return LG_MP_MORE; /* inside a payload; resume after it */
  }
}

int lg_mp_check(const char *buf, size_t len, size_t *obj_len) {
  lg_mp_scan_t s;
  lg_mp_scan_init(&s);
  int rc = lg_mp_scan(&s, buf, len, len);
  if (rc == LG_MP_MORE)
    return -EBADMSG;
  if (rc == -EMSGSIZE)
    return -EBADMSG; /* within a complete buffer: it claims bytes not there */
  if (rc < 0)
    return rc;
  if (s.pos > len)
    return -EBADMSG;
  *obj_len = s.pos;
  return 0;
}

int lg_mp_decode_time(const char **p, const char *end, int64_t *ns) {
  const unsigned char *u = (const unsigned char *)*p;
  if (*p >= end)
    return -EINVAL;
  const char *q = *p;
  switch (mp_typeof(*q)) {
  case MP_UINT: {
    uint64_t v = mp_decode_uint(&q);
    if (v > (uint64_t)(INT64_MAX / 1000000000))
      return -EINVAL;
    *ns = (int64_t)v * 1000000000;
    *p = q;
    return 0;
  }
  case MP_INT: {
    int64_t v = mp_decode_int(&q);
    if (v < INT64_MIN / 1000000000 || v > INT64_MAX / 1000000000)
      return -EINVAL;
    *ns = v * 1000000000;
    *p = q;
    return 0;
  }
  case MP_FLOAT:
  case MP_DOUBLE: {
    double v =
        mp_typeof(*q) == MP_FLOAT ? mp_decode_float(&q) : mp_decode_double(&q);
    if (!(v > -9.2e9 && v < 9.2e9))
      return -EINVAL;
    *ns = (int64_t)(v * 1e9);
    *p = q;
    return 0;
  }
  case MP_EXT: {
    const unsigned char *body;
    if (u[0] == 0xd7 && end - *p >= 10 && u[1] == 0) {
      body = u + 2; /* fixext8, type 0 */
      q = *p + 10;
    } else if (u[0] == 0xc7 && end - *p >= 11 && u[1] == 8 && u[2] == 0) {
      body = u + 3; /* ext8, length 8, type 0 */
      q = *p + 11;
    } else {
      return -EINVAL;
    }
    uint32_t sec = be32(body), nsec = be32(body + 4);
    if (nsec >= 1000000000u)
      return -EINVAL;
    *ns = (int64_t)sec * 1000000000 + nsec;
    *p = q;
    return 0;
  }
  default:
    return -EINVAL;
  }
}

const char *lg_mp_decode_strbin(const char **p, uint32_t *len) {
  enum mp_type t = mp_typeof(**p);
  if (t == MP_STR)
    return mp_decode_str(p, len);
  if (t == MP_BIN)
    return mp_decode_bin(p, len);
  return NULL;
}

char *lg_mp_encode_event_time(char *p, int64_t ns) {
  int64_t sec = ns / 1000000000, nsec = ns % 1000000000;
  if (nsec < 0) {
    nsec += 1000000000;
    sec--;
  }
  if (sec < 0)
    sec = 0, nsec = 0; /* EventTime is unsigned: clamp times before 1970 */
  unsigned char *u = (unsigned char *)p;
  u[0] = 0xd7;
  u[1] = 0x00;
  uint32_t s32 = (uint32_t)sec, n32 = (uint32_t)nsec;
  u[2] = s32 >> 24, u[3] = s32 >> 16, u[4] = s32 >> 8, u[5] = s32;
  u[6] = n32 >> 24, u[7] = n32 >> 16, u[8] = n32 >> 8, u[9] = n32;
  return p + 10;
}

static int to_json(lg_buf_t *out, const char **p, const char *end, int as_key) {
  const char *q = *p;
  int rc = 0;
  switch (mp_typeof(*q)) {
  case MP_NIL:
    mp_decode_nil(&q);
    rc = lg_buf_append(out, as_key ? "\"null\"" : "null", as_key ? 6 : 4);
    break;
  case MP_BOOL: {
    int v = mp_decode_bool(&q);
    if (as_key)
      rc = lg_buf_append(out, v ? "\"true\"" : "\"false\"", v ? 6 : 7);
    else
      rc = lg_buf_append(out, v ? "true" : "false", v ? 4 : 5);
    break;
  }
  case MP_UINT: {
    uint64_t v = mp_decode_uint(&q);
    rc = lg_buf_appendf(out, as_key ? "\"%llu\"" : "%llu",
                        (unsigned long long)v);
    break;
  }
  case MP_INT: {
    int64_t v = mp_decode_int(&q);
    rc = lg_buf_appendf(out, as_key ? "\"%lld\"" : "%lld", (long long)v);
    break;
  }
  case MP_FLOAT:
  case MP_DOUBLE: {
    double v =
        mp_typeof(*q) == MP_FLOAT ? mp_decode_float(&q) : mp_decode_double(&q);
    if (as_key && (rc = lg_buf_putc(out, '"')) != 0)
      break;
    rc = lg_json_append_number(out, v);
    if (rc == 0 && as_key)
      rc = lg_buf_putc(out, '"');
    break;
  }
  case MP_STR:
  case MP_BIN: {
    uint32_t n;
    const char *s = lg_mp_decode_strbin(&q, &n);
    rc = lg_json_append_string(out, s, n);
    break;
  }
  case MP_ARRAY: {
    if (as_key) {
      /* A composite key names no field anyone can use. Its JSON text
       * escaped as a string would double in size at each level of keys
       * within keys (an attacker's 150 bytes became 1 GiB): a fixed name. */
      mp_next(&q);
      rc = lg_buf_append(out, "\"(array)\"", 9);
      break;
    }
    uint32_t n = mp_decode_array(&q);
    rc = lg_buf_putc(out, '[');
    for (uint32_t i = 0; i < n && rc == 0; i++) {
      if (i > 0)
        rc = lg_buf_putc(out, ',');
      if (rc == 0)
        rc = to_json(out, &q, end, 0);
    }
    if (rc == 0)
      rc = lg_buf_putc(out, ']');
    break;
  }
  case MP_MAP: {
    if (as_key) {
      mp_next(&q);
      rc = lg_buf_append(out, "\"(map)\"", 7);
      break;
    }
    uint32_t n = mp_decode_map(&q);
    rc = lg_buf_putc(out, '{');
    for (uint32_t i = 0; i < n && rc == 0; i++) {
      if (i > 0)
        rc = lg_buf_putc(out, ',');
      if (rc == 0)
        rc = to_json(out, &q, end, 1);
      if (rc == 0)
        rc = lg_buf_putc(out, ':');
      if (rc == 0)
        rc = to_json(out, &q, end, 0);
    }
    if (rc == 0)
      rc = lg_buf_putc(out, '}');
    break;
  }
  case MP_EXT: {
    int64_t ns;
    const char *r = q;
    if (lg_mp_decode_time(&r, end, &ns) == 0) {
      char t[LG_TIME_RFC3339_MAX];
      size_t tn = lg_time_format_rfc3339(ns, t);
      rc = lg_json_append_string(out, t, tn);
      q = r;
    } else {
      mp_next(&q);
      rc = lg_buf_append(out, as_key ? "\"null\"" : "null", as_key ? 6 : 4);
    }
    break;
  }
  }
  *p = q;
  return rc;
}

int lg_mp_to_json(lg_buf_t *out, const char **p, const char *end) {
  return to_json(out, p, end, 0);
}
