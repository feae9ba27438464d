/* lg_parse.c - the shared part of the record parsers (lg_parse.h), the
 * logfmt, key/value and CSV parsers, and the "parse" area's FFI functions
 * for them and for times. */
#include "pipeline/lg_parse.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_time.h"
#include "core/lg_timefmt.h"
#include "pipeline/lg_ffi.h"

#define BAD_BYTES(p, n) ((p) == NULL && (n) != 0)

/* ---- shared ------------------------------------------------------------- */

int lg__parse_src(const lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                  lg_parse_src_t *src) {
  if (i >= b->n)
    return -ERANGE;
  if (klen == 0) {
    key = "body";
    klen = 4;
  }
  const lg_rec_t *r = &b->recs[i];
  src->off = -1;
  if (r->field_head >= 0) {
    const lg_field_t *f = lg_batch_find(b, i, key, klen);
    if (f != NULL) {
      if (f->type != LG_VAL_STR)
        return -ENOENT;
      src->off = f->s_off;
      src->len = f->s_len;
      src->p = b->data + f->s_off;
      return 0;
    }
  }
  if (klen == 4 && memcmp(key, "body", 4) == 0) {
    src->off = r->body_off;
    src->len = r->body_len;
    src->p = b->data + r->body_off;
    return 0;
  }
  if (klen == 4 && memcmp(key, "time", 4) == 0) {
    src->len = lg_time_format_rfc3339(r->time_ns, src->tmp);
    src->p = src->tmp;
    return 0;
  }
  if (klen == 12 && memcmp(key, "log.iostream", 12) == 0) {
    if (!(r->flags & LG_REC_HAS_STREAM))
      return -ENOENT;
    src->p = (r->flags & LG_REC_STDERR) ? "stderr" : "stdout";
    src->len = 6;
    return 0;
  }
  const lg_meta_kv_t *kv = lg_meta_find(b->meta, key, klen);
  if (kv == NULL || kv->str == NULL)
    return -ENOENT;
  src->p = kv->str;
  src->len = kv->str_len;
  return 0;
}

int64_t lg__parse_key(lg_batch_t *b, const char *key, size_t klen) {
  /* Interning appends to the arena, which may move it: a key that lies
   * there is copied out first. */
  if (key >= b->data && key < b->data + b->data_len) {
    char small[128];
    char *copy = klen <= sizeof small ? small : malloc(klen);
    if (copy == NULL)
      return -ENOMEM;
    memcpy(copy, key, klen);
    int64_t id = lg_batch_key_id(b, copy, klen);
    if (copy != small)
      free(copy);
    return id;
  }
  return lg_batch_key_id(b, key, klen);
}

int lg__parse_type(const char *name, size_t len) {
  if (len == 3 && memcmp(name, "int", 3) == 0)
    return LG_PARSE_INT;
  if (len == 5 && memcmp(name, "float", 5) == 0)
    return LG_PARSE_FLOAT;
  if (len == 4 && memcmp(name, "bool", 4) == 0)
    return LG_PARSE_BOOL;
  if ((len == 3 && memcmp(name, "str", 3) == 0) ||
      (len == 6 && memcmp(name, "string", 6) == 0))
    return LG_PARSE_STR;
  return -1;
}

int lg__parse_int(const char *p, size_t len, int64_t *out) {
  size_t k = 0;
  int neg = 0;
  if (k < len && (p[k] == '-' || p[k] == '+'))
    neg = p[k++] == '-';
  if (k == len)
    return -1;
  /* Accumulate negatively so that INT64_MIN fits. */
  int64_t v = 0;
  for (; k < len; k++) {
    unsigned d = (unsigned char)p[k] - '0';
    if (d > 9 || __builtin_mul_overflow(v, (int64_t)10, &v) ||
        __builtin_sub_overflow(v, (int64_t)d, &v))
      return -1;
  }
  if (!neg) {
    if (v == INT64_MIN)
      return -1;
    v = -v;
  }
  *out = v;
  return 0;
}

size_t lg__parse_bom(const char *p, size_t len) {
  return len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
}

int lg__parse_hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int k = 0; k < 4; k++) {
    char c = p[k];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned)(c - 'A' + 10);
    else
      return -1;
  }
  *out = v;
  return 0;
}

size_t lg__parse_utf8(unsigned cp, char out[4]) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xc0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | cp >> 12);
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | cp >> 18);
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* A decimal number as strtod reads it, but only when the whole text is
 * one (no leading space, hex, inf or nan) and fits a double: 1e400 would
 * be inf, which JSON has no number for (the output writes null), so it
 * does not convert and is kept as its text. */
static int parse_float(const char *p, size_t len, double *out) {
  if (len == 0 || len > 400)
    return -1;
  for (size_t k = 0; k < len; k++) {
    char c = p[k];
    if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' ||
          c == 'e' || c == 'E'))
      return -1;
  }
  char buf[401];
  memcpy(buf, p, len);
  buf[len] = '\0';
  char *end;
  double d = strtod(buf, &end);
  if (end != buf + len || !isfinite(d))
    return -1;
  *out = d;
  return 0;
}

static int parse_bool(const char *p, size_t len, int *out) {
  static const char *const t[] = {"true", "yes", "on", "1"};
  static const char *const f[] = {"false", "no", "off", "0"};
  for (int k = 0; k < 4; k++) {
    if (strlen(t[k]) == len && strncasecmp(p, t[k], len) == 0) {
      *out = 1;
      return 0;
    }
    if (strlen(f[k]) == len && strncasecmp(p, f[k], len) == 0) {
      *out = 0;
      return 0;
    }
  }
  return -1;
}

/* An integer too large for int64 (a uint64 id, a 128-bit counter) as
 * JSON number text: the sign if negative, the digits without leading
 * zeros. Like the JSON parser's numbers, it is output exactly as written
 * and reads in Lua as a number; through a double it would lose every
 * digit past the 17th. 1 when stored, 0 when the text is not an integer
 * of at most 400 bytes. */
static int set_big_int(lg_batch_t *b, uint32_t i, uint32_t kid, const char *p,
                       size_t len, int *rc) {
  size_t k = 0;
  int neg = 0;
  if (k < len && (p[k] == '-' || p[k] == '+'))
    neg = p[k++] == '-';
  if (k == len || len > 400)
    return 0;
  for (size_t q = k; q < len; q++)
    if (p[q] < '0' || p[q] > '9')
      return 0;
  while (k + 1 < len && p[k] == '0')
    k++;
  /* Copied first: p may lie in the arena, which storing may move. */
  char buf[401];
  size_t n = 0;
  if (neg)
    buf[n++] = '-';
  memcpy(buf + n, p + k, len - k);
  n += len - k;
  *rc = lg_batch_set_json_id(b, i, kid, buf, n);
  return 1;
}

/* Converts; 1 when stored, 0 when the text does not convert. */
static int set_converted(lg_batch_t *b, uint32_t i, uint32_t kid, const char *p,
                         size_t len, lg_parse_type_t type, int *rc) {
  int64_t iv;
  double d;
  int bv;
  switch (type) {
  case LG_PARSE_INT:
    if (lg__parse_int(p, len, &iv) == 0) {
      *rc = lg_batch_set_int_id(b, i, kid, iv);
      return 1;
    }
    if (set_big_int(b, i, kid, p, len, rc))
      return 1;
    /* Other number text (a fraction, an exponent) is still a number. */
    if (parse_float(p, len, &d) == 0) {
      *rc = lg_batch_set_num_id(b, i, kid, d);
      return 1;
    }
    return 0;
  case LG_PARSE_FLOAT:
    if (parse_float(p, len, &d) == 0) {
      *rc = lg_batch_set_num_id(b, i, kid, d);
      return 1;
    }
    return 0;
  case LG_PARSE_BOOL:
    if (parse_bool(p, len, &bv) == 0) {
      *rc = lg_batch_set_bool_id(b, i, kid, bv);
      return 1;
    }
    return 0;
  default:
    return 0;
  }
}

int lg__parse_set(lg_batch_t *b, uint32_t i, uint32_t kid,
                  const lg_parse_src_t *src, size_t at, size_t len,
                  lg_parse_type_t type) {
  int rc = 0;
  if (type != LG_PARSE_STR &&
      set_converted(b, i, kid, lg__parse_src_ptr(b, src) + at, len, type, &rc))
    return rc;
  if (src->off >= 0)
    return lg_batch_set_span_id(b, i, kid, LG_VAL_STR, (uint64_t)src->off + at,
                                len);
  return lg_batch_set_str_id(b, i, kid, src->p + at, len);
}

int lg__parse_set_copy(lg_batch_t *b, uint32_t i, uint32_t kid, const char *p,
                       size_t len, lg_parse_type_t type) {
  int rc = 0;
  if (type != LG_PARSE_STR && set_converted(b, i, kid, p, len, type, &rc))
    return rc;
  return lg_batch_set_str_id(b, i, kid, p, len);
}

/* Sets string field `key` (source bytes at `k`, `klen`) to source bytes. */
static int set_pair(lg_batch_t *b, uint32_t i, const lg_parse_src_t *src,
                    size_t k, size_t klen, size_t v, size_t vlen) {
  int64_t kid = lg__parse_key(b, lg__parse_src_ptr(b, src) + k, klen);
  if (kid < 0)
    return (int)kid;
  return lg__parse_set(b, i, (uint32_t)kid, src, v, vlen, LG_PARSE_STR);
}

/* ---- scratch ------------------------------------------------------------ */

int lg_ffi_parse_scratch_create(struct lg_parse_scratch **out) {
  if (out == NULL)
    return -EINVAL;
  *out = calloc(1, sizeof **out);
  if (*out == NULL)
    return -ENOMEM;
  for (int k = 0; k < KEY_CACHE; k++)
    (*out)->kid_cache[k] = -1;
  return 0;
}

int lg_ffi_parse_scratch_destroy(struct lg_parse_scratch *s) {
  if (s != NULL) {
    lg_buf_free(&s->text);
    free(s->items);
    free(s);
  }
  return 0;
}

/* ---- logfmt ---------------------------------------------------------------
 */

static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* The character of the \uXXXX escape at `p` (`n` bytes left, p[0] the
 * backslash) as UTF-8 in `out`: a high surrogate must be followed by a
 * \u escape of a low one, the pair being one character (JSON's and Go's
 * rule). Returns the number of escape bytes read (6 or 12) and sets
 * `*olen`, or 0 when it is not such an escape: fewer than 4 hex digits,
 * the value's end first, or a lone surrogate. */
static size_t unicode_escape(const char *p, size_t n, char out[4],
                             size_t *olen) {
  unsigned cp, lo;
  if (n < 6 || lg__parse_hex4(p + 2, &cp) != 0)
    return 0;
  size_t used = 6;
  if (cp >= 0xdc00 && cp <= 0xdfff)
    return 0;
  if (cp >= 0xd800 && cp <= 0xdbff) {
    if (n < 12 || p[6] != '\\' || p[7] != 'u' ||
        lg__parse_hex4(p + 8, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
      return 0;
    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    used = 12;
  }
  *olen = lg__parse_utf8(cp, out);
  return used;
}

/* Unescapes a quoted value into the scratch text: \" \\ \n \t \r, and
 * \uXXXX as UTF-8 (Go's logfmt encoders write control and non-printable
 * characters so; \u0000 is a NUL byte). Any other escape, and a \u that
 * unicode_escape does not take, is kept as written: a value is never
 * refused. The result is never longer than the value. */
static int unquote(lg_parse_scratch_t *s, const char *p, size_t len) {
  s->text.len = 0;
  if (lg_buf_reserve(&s->text, len) != 0)
    return -ENOMEM;
  char *o = s->text.data;
  for (size_t k = 0; k < len; k++) {
    char c = p[k];
    if (c == '\\' && k + 1 < len) {
      char e = p[k + 1];
      if (e == 'u') {
        size_t olen = 0, used = unicode_escape(p + k, len - k, o, &olen);
        if (used > 0) {
          o += olen;
          k += used - 1;
        } else {
          *o++ = c; /* as written: the 'u' and the rest follow */
        }
        continue;
      }
      k++;
      c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
      if (e != 'n' && e != 't' && e != 'r' && e != '"' && e != '\\')
        *o++ = '\\';
    }
    *o++ = c;
  }
  s->text.len = (size_t)(o - s->text.data);
  return 0;
}

int lg_ffi_parse_rec_logfmt(lg_batch_t *b, uint32_t i, const char *field,
                            size_t flen, lg_parse_scratch_t *s) {
  if (b == NULL || s == NULL || BAD_BYTES(field, flen))
    return -EINVAL;
  lg_parse_src_t src;
  int rc = lg__parse_src(b, i, field, flen, &src);
  if (rc != 0)
    return rc;
  size_t len = src.len,
         pos = lg__parse_bom(lg__parse_src_ptr(b, &src), src.len);
  int n = 0;
  while (pos < len) {
    const char *p = lg__parse_src_ptr(b, &src);
    while (pos < len && is_blank(p[pos]))
      pos++;
    if (pos == len)
      break;
    size_t k = pos;
    while (pos < len && !is_blank(p[pos]) && p[pos] != '=' && p[pos] != '"')
      pos++;
    size_t klen = pos - k;
    if (klen == 0) {
      /* Not a key (a stray '=' or quote): skip the token. */
      while (pos < len && !is_blank(p[pos]))
        pos++;
      continue;
    }
    if (pos == len || p[pos] != '=') {
      if (pos < len && p[pos] == '"') {
        while (pos < len && !is_blank(p[pos]))
          pos++;
        continue;
      }
      /* A bare key is a flag: true. */
      int64_t kid = lg__parse_key(b, p + k, klen);
      if (kid < 0)
        return (int)kid;
      rc = lg_batch_set_bool_id(b, i, (uint32_t)kid, 1);
      if (rc != 0)
        return rc;
      n++;
      continue;
    }
    pos++; /* '=' */
    if (pos < len && p[pos] == '"') {
      size_t v = ++pos;
      int esc = 0;
      while (pos < len && p[pos] != '"') {
        if (p[pos] == '\\' && pos + 1 < len) {
          esc = 1;
          pos++;
        }
        pos++;
      }
      size_t vlen = pos - v;
      if (pos < len)
        pos++; /* closing quote; an unclosed one runs to the end */
      if (esc) {
        if (unquote(s, p + v, vlen) != 0)
          return -ENOMEM;
        int64_t kid = lg__parse_key(b, p + k, klen);
        if (kid < 0)
          return (int)kid;
        rc = lg__parse_set_copy(b, i, (uint32_t)kid, s->text.data, s->text.len,
                                LG_PARSE_STR);
      } else {
        rc = set_pair(b, i, &src, k, klen, v, vlen);
      }
    } else {
      size_t v = pos;
      while (pos < len && !is_blank(p[pos]))
        pos++;
      rc = set_pair(b, i, &src, k, klen, v, pos - v);
    }
    if (rc != 0)
      return rc;
    n++;
  }
  return n;
}

/* ---- key/value pairs ------------------------------------------------------
 */

static int all_blank(const char *p, size_t len) {
  for (size_t k = 0; k < len; k++)
    if (!is_blank(p[k]))
      return 0;
  return 1;
}

static int at_sep(const char *p, size_t pos, size_t len, const char *sep,
                  size_t slen) {
  return pos + slen <= len && memcmp(p + pos, sep, slen) == 0;
}

int lg_ffi_parse_rec_kv(lg_batch_t *b, uint32_t i, const char *field,
                        size_t flen, const char *psep, size_t pslen,
                        const char *kvsep, size_t kvlen,
                        lg_parse_scratch_t *s) {
  if (b == NULL || s == NULL || BAD_BYTES(field, flen) || psep == NULL ||
      pslen == 0 || kvsep == NULL || kvlen == 0)
    return -EINVAL;
  lg_parse_src_t src;
  int rc = lg__parse_src(b, i, field, flen, &src);
  if (rc != 0)
    return rc;
  /* A blank pair separator stands for any run of blanks. */
  int blank_sep = all_blank(psep, pslen);
  size_t len = src.len,
         pos = lg__parse_bom(lg__parse_src_ptr(b, &src), src.len);
  int n = 0;
  while (pos < len) {
    const char *p = lg__parse_src_ptr(b, &src);
    if (blank_sep)
      while (pos < len && is_blank(p[pos]))
        pos++;
    size_t k = pos;
    while (pos < len && !at_sep(p, pos, len, kvsep, kvlen) &&
           !(blank_sep ? is_blank(p[pos]) : at_sep(p, pos, len, psep, pslen)))
      pos++;
    size_t kend = pos;
    if (pos == len || !at_sep(p, pos, len, kvsep, kvlen)) {
      /* A piece without a key/value separator is skipped. */
      pos += pos < len ? (blank_sep ? 1 : pslen) : 0;
      continue;
    }
    pos += kvlen;
    while (k < kend && is_blank(p[k]))
      k++;
    while (kend > k && is_blank(p[kend - 1]))
      kend--;
    if (!blank_sep)
      while (pos < len && is_blank(p[pos]))
        pos++;
    size_t v = pos, vend;
    if (pos < len && (p[pos] == '"' || p[pos] == '\'')) {
      /* A quoted value may hold separators. */
      char q = p[pos];
      const char *close = memchr(p + pos + 1, q, len - pos - 1);
      if (close != NULL) {
        v = pos + 1;
        vend = (size_t)(close - p);
        pos = vend + 1;
        while (pos < len && !(blank_sep ? is_blank(p[pos])
                                        : at_sep(p, pos, len, psep, pslen)))
          pos++;
        goto have_value;
      }
    }
    while (pos < len &&
           !(blank_sep ? is_blank(p[pos]) : at_sep(p, pos, len, psep, pslen)))
      pos++;
    vend = pos;
    while (vend > v && is_blank(p[vend - 1]))
      vend--;
  have_value:
    if (pos < len)
      pos += blank_sep ? 1 : pslen;
    if (kend == k)
      continue;
    rc = set_pair(b, i, &src, k, kend - k, v, vend - v);
    if (rc != 0)
      return rc;
    n++;
  }
  return n;
}

/* ---- CSV ------------------------------------------------------------------
 */

/* The next column spec of `cols` ("name[:type]\0name..."), or 0 at the end. */
static int next_column(const char **cols, const char *end, const char **name,
                       size_t *nlen, int *type, char *err, size_t errlen) {
  if (*cols >= end)
    return 0;
  const char *c = *cols;
  const char *z = memchr(c, '\0', (size_t)(end - c));
  if (z == NULL)
    z = end;
  *cols = z + 1;
  const char *colon = memchr(c, ':', (size_t)(z - c));
  *name = c;
  *nlen = (size_t)((colon ? colon : z) - c);
  *type = LG_PARSE_STR;
  if (colon != NULL) {
    *type = lg__parse_type(colon + 1, (size_t)(z - colon - 1));
    if (*type < 0) {
      snprintf(err, errlen,
               "column '%.*s': unknown type '%.*s' (int, float, bool, str)",
               (int)(*nlen > 64 ? 64 : *nlen), c,
               (int)(z - colon - 1 > 32 ? 32 : z - colon - 1), colon + 1);
      return -1;
    }
  }
  return 1;
}

int lg_ffi_parse_rec_csv(lg_batch_t *b, uint32_t i, const char *field,
                         size_t flen, const char *cols, size_t clen, int sep,
                         lg_parse_scratch_t *s, char *err, size_t errlen) {
  if (b == NULL || s == NULL || BAD_BYTES(field, flen) ||
      BAD_BYTES(cols, clen) || err == NULL || sep <= 0 || sep > 255 ||
      sep == '"')
    return -EINVAL;
  err[0] = '\0';
  lg_parse_src_t src;
  int rc = lg__parse_src(b, i, field, flen, &src);
  if (rc != 0)
    return rc;
  const char *cend = cols + clen;
  size_t len = src.len,
         pos = lg__parse_bom(lg__parse_src_ptr(b, &src), src.len);
  size_t start = pos;
  int n = 0;
  /* pos > len: no value left. "a,b," has three values, the last empty. */
  for (int col = 1; len > start && pos <= len; col++) {
    const char *name;
    size_t nlen;
    int type;
    int c = next_column(&cols, cend, &name, &nlen, &type, err, errlen);
    if (c < 0)
      return -EINVAL;
    if (c == 0)
      break;
    const char *p = lg__parse_src_ptr(b, &src);
    size_t v, vlen;
    int copy = 0;
    if (pos < len && p[pos] == '"') {
      /* RFC 4180: a quoted value, "" for a quote. */
      s->text.len = 0;
      size_t q = pos + 1;
      for (;;) {
        const char *close = q < len ? memchr(p + q, '"', len - q) : NULL;
        if (close == NULL) {
          snprintf(err, errlen, "unterminated quote in column %d", col);
          return -EINVAL;
        }
        size_t at = (size_t)(close - p);
        if (lg_buf_append(&s->text, p + q, at - q) != 0)
          return -ENOMEM;
        if (at + 1 < len && p[at + 1] == '"') {
          if (lg_buf_putc(&s->text, '"') != 0)
            return -ENOMEM;
          q = at + 2;
          copy = 1;
          continue;
        }
        v = pos + 1;
        vlen = at - v;
        pos = at + 1;
        break;
      }
      if (pos < len && p[pos] != (char)sep) {
        snprintf(err, errlen, "text after the closing quote of column %d", col);
        return -EINVAL;
      }
    } else {
      const char *e = pos < len ? memchr(p + pos, sep, len - pos) : NULL;
      v = pos;
      pos = e ? (size_t)(e - p) : len;
      vlen = pos - v;
    }
    pos = pos < len ? pos + 1 : len + 1; /* past the separator, or done */
    if (nlen == 0)
      continue; /* a column the script skips */
    int64_t kid = lg_batch_key_id(b, name, nlen);
    if (kid < 0)
      return (int)kid;
    rc = copy ? lg__parse_set_copy(b, i, (uint32_t)kid, s->text.data,
                                   s->text.len, type)
              : lg__parse_set(b, i, (uint32_t)kid, &src, v, vlen, type);
    if (rc != 0)
      return rc;
    n++;
  }
  return n;
}

/* ---- time ------------------------------------------------------------------
 */

int lg_ffi_parse_time(const char *s, size_t len, const char *fmt, size_t flen,
                      int64_t *out, char *err, size_t errlen) {
  if (BAD_BYTES(s, len) || fmt == NULL || out == NULL)
    return -EINVAL;
  return lg_timefmt_parse(fmt, flen, s, len, LG_TIMEFMT_NOW, out, err, errlen);
}

int lg_ffi_parse_rec_time(lg_batch_t *b, uint32_t i, const char *s, size_t len,
                          const char *fmt, size_t flen, char *err,
                          size_t errlen) {
  if (b == NULL || BAD_BYTES(s, len) || fmt == NULL)
    return -EINVAL;
  if (i >= b->n)
    return -ERANGE;
  int64_t ns;
  int rc =
      lg_timefmt_parse(fmt, flen, s, len, LG_TIMEFMT_NOW, &ns, err, errlen);
  return rc != 0 ? rc : lg_ffi_rec_set_time(b, i, ns);
}
