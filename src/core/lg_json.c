#include "core/lg_json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <string.h>

/* Bytes that can be copied as they are: printable ASCII except `"` and
 * `\`. Everything else takes the slow path. */
static const unsigned char plain[256] = {
#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
    R16(0), R16(0), /* 0x00-0x1f: control */
    1,      1,      0,      1,      1,      1,
    1,      1,      1,      1,      1,      1,
    1,      1,      1,      1, /* 0x20-0x2f, `"` */
    R16(1), R16(1), 1,      1,      1,      1,
    1,      1,      1,      1,      1,      1,
    1,      1,      0,      1,      1,      1, /* 0x50-0x5f, `\` */
    R16(1), R16(1), R16(0), R16(0), R16(0), R16(0),
    R16(0), R16(0), R16(0), R16(0)
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

int lg_json_utf8_valid(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    size_t n = u[i] < 0x80 ? 1 : utf8_seq(u + i, len - i);
    if (n == 0)
      return 0;
    i += n;
  }
  return 1;
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

/* Copies the run of plain bytes at the start of s[0..len) to p and
 * returns its length n. Most log text is plain ASCII, so this is where
 * escaping spends its time: SSE2 (part of every x86-64 CPU) checks 16
 * bytes per step, storing each vector before it is checked, so a plain
 * string costs one load and one store per 16 bytes and no call to
 * memcpy. The tail and short strings (most field values) take one more
 * load that ends exactly at s + len and overlaps bytes already found
 * plain, so no byte outside the string is read and no byte-by-byte loop
 * runs. No store goes past p + len, but p[n..len) may have been written
 * too: the caller writes at least len - n more bytes there (each byte
 * left is at least one byte of output). */
static inline size_t plain_copy(char *p, const unsigned char *s, size_t len) {
#if defined(__SSE2__)
  if (len >= 16) {
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
      __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
      _mm_storeu_si128((__m128i *)(p + i), v);
      unsigned m = not_plain_mask(v);
      if (m != 0)
        return i + (size_t)__builtin_ctz(m);
    }
    if (i < len) {
      /* The last 16 bytes, overlapping plain bytes already copied (the
       * same bytes at the same places). */
      size_t j = len - 16;
      __m128i v = _mm_loadu_si128((const __m128i *)(s + j));
      _mm_storeu_si128((__m128i *)(p + j), v);
      unsigned m = not_plain_mask(v) >> (i - j);
      if (m != 0)
        return i + (size_t)__builtin_ctz(m);
    }
    return len;
  }
  if (len >= 8) {
    uint64_t a, b;
    memcpy(&a, s, 8);
    memcpy(&b, s + len - 8, 8);
    unsigned m = not_plain_mask(_mm_cvtsi64_si128((long long)a)) & 0xffu;
    memcpy(p, &a, 8);
    if (m != 0)
      return (size_t)__builtin_ctz(m);
    memcpy(p + len - 8, &b, 8);
    m = not_plain_mask(_mm_cvtsi64_si128((long long)b)) & 0xffu;
    return m != 0 ? len - 8 + (size_t)__builtin_ctz(m) : len;
  }
  if (len >= 4) {
    uint32_t a, b;
    memcpy(&a, s, 4);
    memcpy(&b, s + len - 4, 4);
    unsigned m = not_plain_mask(_mm_cvtsi32_si128((int)a)) & 0xfu;
    memcpy(p, &a, 4);
    if (m != 0)
      return (size_t)__builtin_ctz(m);
    memcpy(p + len - 4, &b, 4);
    m = not_plain_mask(_mm_cvtsi32_si128((int)b)) & 0xfu;
    return m != 0 ? len - 4 + (size_t)__builtin_ctz(m) : len;
  }
#endif
  size_t i = 0;
  while (i < len && plain[s[i]]) {
    p[i] = (char)s[i];
    i++;
  }
  return i;
}

char *lg_json_put_string(char *p, const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  *p++ = '"';
  size_t i = plain_copy(p, s, len);
  p += i;
  while (i < len) {
    unsigned char c = s[i];
    if (c < 0x80) {
      *p++ = '\\';
      switch (c) {
      case '"':
        *p++ = '"';
        break;
      case '\\':
        *p++ = '\\';
        break;
      case '\n':
        *p++ = 'n';
        break;
      case '\r':
        *p++ = 'r';
        break;
      case '\t':
        *p++ = 't';
        break;
      case '\b':
        *p++ = 'b';
        break;
      case '\f':
        *p++ = 'f';
        break;
      default:
        p += sprintf(p, "u%04x", c);
      }
      i++;
    } else {
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
    size_t run = plain_copy(p, s + i, len - i);
    p += run;
    i += run;
  }
  *p++ = '"';
  return p;
}

int lg_json_append_string(lg_buf_t *out, const char *str, size_t len) {
  if (len > (SIZE_MAX - 2) / 6 ||
      lg_buf_reserve(out, lg_json_string_room(len)) != 0)
    return -ENOMEM;
  out->len =
      (size_t)(lg_json_put_string(out->data + out->len, str, len) - out->data);
  return 0;
}

char *lg_json_put_number(char *p, double v) {
  if (!isfinite(v)) {
    memcpy(p, "null", 4);
    return p + 4;
  }
  if (v == floor(v) && fabs(v) <= 9007199254740992.0)
    return lg_json_put_int(p, (int64_t)v);
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
  out->len = (size_t)(lg_json_put_int(out->data + out->len, v) - out->data);
  return 0;
}

int lg_json_append_number(lg_buf_t *out, double v) {
  if (lg_buf_reserve(out, 32) != 0)
    return -ENOMEM;
  out->len = (size_t)(lg_json_put_number(out->data + out->len, v) - out->data);
  return 0;
}
