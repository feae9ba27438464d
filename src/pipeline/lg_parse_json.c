/* lg_parse_json.c - rec:parse_json: a JSON object (RFC 8259) in a record's
 * text becomes fields.
 *
 * One pass reads and checks the whole text into a list of values in the
 * scratch; only when it is valid JSON are the fields set, so invalid JSON
 * leaves the record as it was. Values are set without copying where the
 * text allows (lg_parse.h): a string without escapes points at its bytes,
 * and a nested object or array (kept as a map) is its own JSON text. With
 * a separator, nested objects are flattened instead: {"a":{"b":1}} sets
 * "a.b" = 1; arrays stay JSON.
 *
 * Numbers: an integer that fits int64 is an int64; any other number
 * keeps its JSON text (LG_VAL_JSON), output as written. Strings with invalid
 * UTF-8 are kept as bytes (the JSON encoder replaces such bytes with U+FFFD on
 * output); inside a nested value they are replaced when the value is stored,
 * since JSON text is copied to the output as it is.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "core/lg_time.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_parse.h"

#define BAD_BYTES(p, n) ((p) == NULL && (n) != 0)
#define MAX_DEPTH 256

/* One field to set. Keys are always in the scratch text; values are in
 * the source (IN_SRC), in the scratch (IN_SCRATCH), or scalars. */
enum { IN_SRC = 0, IN_SCRATCH = 1 };
typedef struct item {
  uint64_t key_off, key_len;
  uint64_t v_off, v_len;
  int64_t i;
  double d;
  uint32_t type; /* LG_VAL_* */
  uint32_t where;
} item_t;

typedef struct jp {
  const char *p;
  size_t len, pos;
  lg_parse_scratch_t *s;
  const char *sep;
  size_t seplen;
  int bad_utf8; /* set by scan_string; checked by raw values */
  char *err;
  size_t errlen;
} jp_t;

static int jfail(jp_t *j, const char *fmt, ...) {
  if (j->err != NULL && j->errlen > 0) {
    int n =
        snprintf(j->err, j->errlen, "invalid JSON at byte %zu: ", j->pos + 1);
    if (n >= 0 && (size_t)n < j->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(j->err + n, j->errlen - (size_t)n, fmt, ap);
      va_end(ap);
    }
  }
  return -EINVAL;
}

static void skip_ws_run(jp_t *j) {
  while (j->pos < j->len) {
    char c = j->p[j->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
      break;
    j->pos++;
  }
}

/* Skips white space. Most JSON has none between tokens: one compare
 * answers that inline (every white space byte is at most ' '). */
static inline void skip_ws(jp_t *j) {
  if (j->pos < j->len && (unsigned char)j->p[j->pos] > ' ')
    return;
  skip_ws_run(j);
}

/* Length of the valid UTF-8 sequence (RFC 3629) at p, or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
      return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f))
      return 0; /* overlong, or a surrogate */
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
        (p[3] & 0xc0) != 0x80)
      return 0;
    if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f))
      return 0;
    return 4;
  }
  return 0;
}

#if defined(__SSE2__)
/* Bit n set for each byte n of v that stop_byte stops at: below 0x20,
 * '"', '\\', or 0x80 and above (negative as signed, so below 0x20 too). */
static inline unsigned stop_mask(__m128i v) {
  __m128i hit =
      _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                   _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
  return (unsigned)_mm_movemask_epi8(hit);
}
#endif

/* The index of the first byte of p[k, len) that a string's scan must look
 * at ('"', '\\', below 0x20, above 0x7f), or len. Most string bytes are
 * plain ASCII: SSE2 (every x86-64 CPU) checks 16 per step and finds the
 * stop with one count of trailing zeros. Near the end of the text the last
 * 16 bytes are loaded once, overlapping bytes before k, whose bits are
 * shifted out: no byte outside p[0, len) is read. */
static inline size_t stop_byte(const char *p, size_t k, size_t len) {
#if defined(__SSE2__)
  for (; k + 16 <= len; k += 16) {
    unsigned m = stop_mask(_mm_loadu_si128((const __m128i *)(p + k)));
    if (m != 0)
      return k + (size_t)__builtin_ctz(m);
  }
  if (k < len && len >= 16) {
    size_t at = len - 16;
    unsigned m =
        stop_mask(_mm_loadu_si128((const __m128i *)(p + at))) >> (k - at);
    return m != 0 ? k + (size_t)__builtin_ctz(m) : len;
  }
#endif
  while (k < len) {
    unsigned char c = (unsigned char)p[k];
    if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80)
      break;
    k++;
  }
  return k;
}

/* Checks the string at pos (its opening quote); on return pos is past its
 * closing quote, [*start, *end) its content. */
static int scan_string(jp_t *j, size_t *start, size_t *end, int *esc) {
  const char *p = j->p;
  size_t len = j->len, k = ++j->pos;
  *esc = 0;
  for (;;) {
    k = stop_byte(p, k, len);
    if (k >= len) {
      j->pos = k;
      return jfail(j, "unterminated string");
    }
    unsigned char c = (unsigned char)p[k];
    if (c == '"')
      break;
    if (c < 0x20) {
      j->pos = k;
      return jfail(j, "control character in a string");
    }
    if (c >= 0x80) {
      size_t n = utf8_seq((const unsigned char *)p + k, len - k);
      if (n == 0) {
        j->bad_utf8 = 1;
        n = 1;
      }
      k += n;
      continue;
    }
    /* A backslash. */
    *esc = 1;
    if (k + 1 >= len) {
      j->pos = k;
      return jfail(j, "unterminated string");
    }
    char e = p[k + 1];
    if (e == 'u') {
      unsigned u;
      if (k + 6 > len || lg__parse_hex4(p + k + 2, &u) != 0) {
        j->pos = k;
        return jfail(j, "bad \\u escape");
      }
      k += 6;
    } else if (strchr("\"\\/bfnrt", e) != NULL && e != '\0') {
      k += 2;
    } else {
      j->pos = k;
      return jfail(j, "bad escape");
    }
  }
  *start = j->pos;
  *end = k;
  j->pos = k + 1;
  return 0;
}

static int put_utf8(lg_buf_t *o, unsigned cp) {
  char b[4];
  return lg_buf_append(o, b, lg__parse_utf8(cp, b));
}

/* Appends the unescaped content [a, z) (checked by scan_string) to the
 * scratch text. A lone surrogate becomes U+FFFD. */
static int unescape(jp_t *j, size_t a, size_t z) {
  lg_buf_t *o = &j->s->text;
  const char *p = j->p;
  if (lg_buf_reserve(o, z - a) != 0)
    return -ENOMEM;
  size_t k = a;
  while (k < z) {
    const char *bs = memchr(p + k, '\\', z - k);
    size_t run = (bs ? (size_t)(bs - p) : z) - k;
    if (lg_buf_append(o, p + k, run) != 0)
      return -ENOMEM;
    k += run;
    if (k >= z)
      break;
    char e = p[k + 1];
    int rc = 0;
    switch (e) {
    case 'b':
      rc = lg_buf_putc(o, '\b');
      break;
    case 'f':
      rc = lg_buf_putc(o, '\f');
      break;
    case 'n':
      rc = lg_buf_putc(o, '\n');
      break;
    case 'r':
      rc = lg_buf_putc(o, '\r');
      break;
    case 't':
      rc = lg_buf_putc(o, '\t');
      break;
    case 'u': {
      unsigned u;
      lg__parse_hex4(p + k + 2, &u);
      k += 6;
      if (u >= 0xd800 && u <= 0xdbff && k + 6 <= z && p[k] == '\\' &&
          p[k + 1] == 'u') {
        unsigned lo;
        if (lg__parse_hex4(p + k + 2, &lo) == 0 && lo >= 0xdc00 &&
            lo <= 0xdfff) {
          u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
          k += 6;
        }
      }
      if (u >= 0xd800 && u <= 0xdfff)
        u = 0xfffd;
      if (put_utf8(o, u) != 0)
        return -ENOMEM;
      continue;
    }
    default: /* " \ / */
      rc = lg_buf_putc(o, e);
      break;
    }
    if (rc != 0)
      return -ENOMEM;
    k += 2;
  }
  return 0;
}

static int scan_number(jp_t *j, item_t *it) {
  const char *p = j->p;
  size_t a = j->pos, k = a;
  int is_int = 1;
  if (k < j->len && p[k] == '-')
    k++;
  if (k < j->len && p[k] == '0') {
    k++;
  } else if (k < j->len && p[k] >= '1' && p[k] <= '9') {
    while (k < j->len && p[k] >= '0' && p[k] <= '9')
      k++;
  } else {
    j->pos = k;
    return jfail(j, "expected a value");
  }
  if (k < j->len && p[k] == '.') {
    is_int = 0;
    size_t d = ++k;
    while (k < j->len && p[k] >= '0' && p[k] <= '9')
      k++;
    if (k == d) {
      j->pos = k;
      return jfail(j, "expected digits after '.'");
    }
  }
  if (k < j->len && (p[k] == 'e' || p[k] == 'E')) {
    is_int = 0;
    k++;
    if (k < j->len && (p[k] == '+' || p[k] == '-'))
      k++;
    size_t d = k;
    while (k < j->len && p[k] >= '0' && p[k] <= '9')
      k++;
    if (k == d) {
      j->pos = k;
      return jfail(j, "expected exponent digits");
    }
  }
  j->pos = k;
  if (is_int && lg__parse_int(p + a, k - a, &it->i) == 0) {
    it->type = LG_VAL_INT;
    return 0;
  }
  /* Any other number keeps its JSON text: it is output exactly as
   * written (no rounding through a double and back, and no strtod and
   * printf on the record path), and reads in Lua as a number. */
  it->type = LG_VAL_JSON;
  it->v_off = a;
  it->v_len = k - a;
  it->where = IN_SRC;
  return 0;
}

static int skip_value(jp_t *j, int depth);

static int skip_container(jp_t *j, int depth, char close) {
  if (depth >= MAX_DEPTH)
    return jfail(j, "nested deeper than %d levels", MAX_DEPTH);
  j->pos++;
  skip_ws(j);
  if (j->pos < j->len && j->p[j->pos] == close) {
    j->pos++;
    return 0;
  }
  for (;;) {
    if (close == '}') {
      size_t a, z;
      int esc;
      if (j->pos >= j->len || j->p[j->pos] != '"')
        return jfail(j, "expected a key");
      if (scan_string(j, &a, &z, &esc) != 0)
        return -EINVAL;
      skip_ws(j);
      if (j->pos >= j->len || j->p[j->pos] != ':')
        return jfail(j, "expected ':'");
      j->pos++;
    }
    int rc = skip_value(j, depth + 1);
    if (rc != 0)
      return rc;
    skip_ws(j);
    if (j->pos < j->len && j->p[j->pos] == ',') {
      j->pos++;
      skip_ws(j);
      continue;
    }
    if (j->pos < j->len && j->p[j->pos] == close) {
      j->pos++;
      return 0;
    }
    return jfail(j,
                 close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

static int literal(jp_t *j, const char *word, size_t n) {
  if (j->pos + n <= j->len && memcmp(j->p + j->pos, word, n) == 0) {
    j->pos += n;
    return 0;
  }
  return jfail(j, "expected a value");
}

static int skip_value(jp_t *j, int depth) {
  skip_ws(j);
  if (j->pos >= j->len)
    return jfail(j, "expected a value");
  item_t scratch_item;
  size_t a, z;
  int esc;
  switch (j->p[j->pos]) {
  case '{':
    return skip_container(j, depth, '}');
  case '[':
    return skip_container(j, depth, ']');
  case '"':
    return scan_string(j, &a, &z, &esc);
  case 't':
    return literal(j, "true", 4);
  case 'f':
    return literal(j, "false", 5);
  case 'n':
    return literal(j, "null", 4);
  default:
    return scan_number(j, &scratch_item);
  }
}

static item_t *new_item(jp_t *j) {
  lg_parse_scratch_t *s = j->s;
  if (s->nitems == s->items_cap) {
    size_t cap = s->items_cap ? s->items_cap * 2 : 32;
    item_t *n = realloc(s->items, cap * sizeof *n);
    if (n == NULL)
      return NULL;
    s->items = n;
    s->items_cap = cap;
  }
  item_t *it = &((item_t *)s->items)[s->nitems++];
  memset(it, 0, sizeof *it);
  return it;
}

/* Appends scratch bytes [off, off+len) to the scratch text itself. */
static int append_self(lg_buf_t *t, uint64_t off, uint64_t len) {
  if (len == 0)
    return 0;
  if (lg_buf_reserve(t, len) != 0)
    return -ENOMEM;
  memmove(t->data + t->len, t->data + off, len);
  t->len += len;
  return 0;
}

/* Copies raw JSON [a, z) to the scratch with invalid UTF-8 replaced. */
static int sanitize(jp_t *j, size_t a, size_t z, item_t *it) {
  lg_buf_t *t = &j->s->text;
  it->v_off = t->len;
  for (size_t k = a; k < z;) {
    size_t n = utf8_seq((const unsigned char *)j->p + k, z - k);
    int rc =
        n ? lg_buf_append(t, j->p + k, n) : lg_buf_append(t, "\xef\xbf\xbd", 3);
    if (rc != 0)
      return -ENOMEM;
    k += n ? n : 1;
  }
  it->v_len = t->len - it->v_off;
  it->where = IN_SCRATCH;
  return 0;
}

/* Reads the members of the object at pos, keys prefixed by scratch bytes
 * [poff, poff+plen). */
static int parse_object(jp_t *j, uint64_t poff, uint64_t plen, int depth) {
  if (depth >= MAX_DEPTH)
    return jfail(j, "nested deeper than %d levels", MAX_DEPTH);
  lg_buf_t *t = &j->s->text;
  j->pos++; /* '{' */
  skip_ws(j);
  if (j->pos < j->len && j->p[j->pos] == '}') {
    j->pos++;
    return 0;
  }
  for (;;) {
    size_t ka, kz, va, vz;
    int esc;
    if (j->pos >= j->len || j->p[j->pos] != '"')
      return jfail(j, "expected a key");
    if (scan_string(j, &ka, &kz, &esc) != 0)
      return -EINVAL;
    /* The key: prefix + key text, in the scratch. */
    uint64_t key_off = t->len;
    if (append_self(t, poff, plen) != 0)
      return -ENOMEM;
    if (esc ? unescape(j, ka, kz) != 0
            : lg_buf_append(t, j->p + ka, kz - ka) != 0)
      return -ENOMEM;
    uint64_t key_len = t->len - key_off;
    skip_ws(j);
    if (j->pos >= j->len || j->p[j->pos] != ':')
      return jfail(j, "expected ':'");
    j->pos++;
    skip_ws(j);
    if (j->pos >= j->len)
      return jfail(j, "expected a value");
    char c = j->p[j->pos];
    if (c == '{' && j->seplen > 0) {
      /* Flattened: the members get this key and the separator as prefix;
       * an empty object stays a value ({}), so the key is not lost. */
      size_t at = j->pos;
      if (lg_buf_append(t, j->sep, j->seplen) != 0)
        return -ENOMEM;
      size_t before = j->s->nitems;
      int rc = parse_object(j, key_off, key_len + j->seplen, depth + 1);
      if (rc != 0)
        return rc;
      if (j->s->nitems == before) {
        item_t *it = new_item(j);
        if (it == NULL)
          return -ENOMEM;
        it->key_off = key_off;
        it->key_len = key_len;
        it->type = LG_VAL_JSON;
        it->v_off = at;
        it->v_len = j->pos - at;
        it->where = IN_SRC;
      }
    } else {
      item_t *it = new_item(j);
      if (it == NULL)
        return -ENOMEM;
      it->key_off = key_off;
      it->key_len = key_len;
      int rc = 0;
      switch (c) {
      case '"':
        rc = scan_string(j, &va, &vz, &esc);
        if (rc != 0)
          return rc;
        it->type = LG_VAL_STR;
        if (esc) {
          it->v_off = t->len;
          if (unescape(j, va, vz) != 0)
            return -ENOMEM;
          it->v_len = t->len - it->v_off;
          it->where = IN_SCRATCH;
        } else {
          it->v_off = va;
          it->v_len = vz - va;
        }
        break;
      case '{':
      case '[': {
        size_t at = j->pos;
        j->bad_utf8 = 0;
        rc = skip_container(j, depth + 1, c == '{' ? '}' : ']');
        if (rc != 0)
          return rc;
        it->type = LG_VAL_JSON;
        if (j->bad_utf8) {
          if (sanitize(j, at, j->pos, it) != 0)
            return -ENOMEM;
        } else {
          it->v_off = at;
          it->v_len = j->pos - at;
        }
        break;
      }
      case 't':
        rc = literal(j, "true", 4);
        it->type = LG_VAL_BOOL;
        it->i = 1;
        break;
      case 'f':
        rc = literal(j, "false", 5);
        it->type = LG_VAL_BOOL;
        break;
      case 'n':
        rc = literal(j, "null", 4);
        it->type = LG_VAL_NULL;
        break;
      default:
        rc = scan_number(j, it);
        break;
      }
      if (rc != 0)
        return rc;
    }
    skip_ws(j);
    if (j->pos < j->len && j->p[j->pos] == ',') {
      j->pos++;
      skip_ws(j);
      continue;
    }
    if (j->pos < j->len && j->p[j->pos] == '}') {
      j->pos++;
      return 0;
    }
    return jfail(j, "expected ',' or '}'");
  }
}

static int key_is(const lg_batch_t *b, int64_t kid, const char *name,
                  size_t nlen) {
  if (kid < 0 || (uint64_t)kid >= b->nkeys || b->keys[kid].len != nlen)
    return 0;
  const char *k = b->data + b->keys[kid].off;
  for (size_t j = 0; j < nlen; j++)
    if (k[j] != name[j])
      return 0;
  return 1;
}

static int apply(lg_batch_t *b, uint32_t i, const lg_parse_src_t *src,
                 lg_parse_scratch_t *s) {
  const item_t *items = s->items;
  for (size_t k = 0; k < s->nitems; k++) {
    const item_t *it = &items[k];
    /* The scratch text is NULL until something was put there (keys and
     * values may all be empty). */
    const char *text = s->text.data ? s->text.data : "";
    const char *key = text + it->key_off;
    const char *v = it->where == IN_SCRATCH
                        ? text + it->v_off
                        : lg__parse_src_ptr(b, src) + it->v_off;
    if (it->key_len == 4 && memcmp(key, "time", 4) == 0 &&
        it->type == LG_VAL_STR) {
      /* An RFC 3339 "time" becomes the record's time. */
      int64_t ns;
      if (lg_time_parse_rfc3339(v, it->v_len, &ns) == 0) {
        int rc = lg_ffi_rec_set_time(b, i, ns);
        if (rc != 0)
          return rc;
        continue;
      }
    }
    /* The same keys come in the same order in most lines: the key id
     * item k had last time is checked before the key is looked up. */
    int64_t kid = k < KEY_CACHE ? s->kid_cache[k] : -1;
    if (!key_is(b, kid, key, it->key_len)) {
      kid = lg_batch_key_id(b, key, it->key_len);
      if (kid < 0)
        return (int)kid;
      if (k < KEY_CACHE)
        s->kid_cache[k] = kid;
    }
    uint32_t id = (uint32_t)kid;
    int rc;
    switch (it->type) {
    case LG_VAL_STR:
    case LG_VAL_JSON:
      if (it->where == IN_SCRATCH)
        rc = it->type == LG_VAL_STR
                 ? lg_batch_set_str_id(b, i, id, v, it->v_len)
                 : lg_batch_set_json_id(b, i, id, v, it->v_len);
      else if (src->off >= 0)
        rc = lg_batch_set_span_id(b, i, id, it->type,
                                  (uint64_t)src->off + it->v_off, it->v_len);
      else
        rc = it->type == LG_VAL_STR
                 ? lg_batch_set_str_id(b, i, id, v, it->v_len)
                 : lg_batch_set_json_id(b, i, id, v, it->v_len);
      break;
    case LG_VAL_INT:
      rc = lg_batch_set_int_id(b, i, id, it->i);
      break;
    case LG_VAL_NUM:
      rc = lg_batch_set_num_id(b, i, id, it->d);
      break;
    case LG_VAL_BOOL:
      rc = lg_batch_set_bool_id(b, i, id, (int)it->i);
      break;
    default:
      rc = lg_batch_set_null_id(b, i, id);
      break;
    }
    if (rc != 0)
      return rc;
  }
  return 0;
}

int lg_ffi_parse_rec_json(lg_batch_t *b, uint32_t i, const char *field,
                          size_t flen, const char *sep, size_t seplen,
                          const char *prefix, size_t plen,
                          lg_parse_scratch_t *s, char *err, size_t errlen) {
  if (b == NULL || s == NULL || BAD_BYTES(field, flen) ||
      BAD_BYTES(sep, seplen) || BAD_BYTES(prefix, plen) || err == NULL ||
      errlen == 0)
    return -EINVAL;
  err[0] = '\0';
  lg_parse_src_t src;
  int rc = lg__parse_src(b, i, field, flen, &src);
  if (rc != 0)
    return rc;
  s->text.len = 0;
  s->nitems = 0;
  jp_t j = {src.p, src.len, 0, s, sep, seplen, 0, err, errlen};
  /* A UTF-8 byte order mark, which .NET and Windows tools write before
   * the text: RFC 8259 section 8.1 lets a parser ignore it. */
  j.pos = lg__parse_bom(j.p, j.len);
  skip_ws(&j);
  if (j.pos >= j.len) {
    snprintf(err, errlen, "no JSON: the text is empty");
    return -EINVAL;
  }
  if (j.p[j.pos] != '{') {
    snprintf(err, errlen, "not a JSON object (starts with '%c')",
             (unsigned char)j.p[j.pos] >= 0x20 &&
                     (unsigned char)j.p[j.pos] < 0x7f
                 ? j.p[j.pos]
                 : '?');
    return -EINVAL;
  }
  if (plen > 0 && lg_buf_append(&s->text, prefix, plen) != 0)
    return -ENOMEM;
  rc = parse_object(&j, 0, plen, 0);
  if (rc != 0)
    return rc;
  skip_ws(&j);
  if (j.pos != j.len)
    return jfail(&j, "unexpected text after the object");
  rc = apply(b, i, &src, s);
  return rc != 0 ? rc : (int)s->nitems;
}
