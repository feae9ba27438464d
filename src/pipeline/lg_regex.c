#include "pipeline/lg_regex.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/lg_buf.h"
#include "core/lg_timefmt.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_parse.h"

typedef struct group {
  char *name;
  size_t nlen;
  uint32_t num; /* group number */
  int type;     /* lg_parse_type_t */
  int64_t kid;  /* key id in the last batch used, or -1 */
} group_t;

struct lg_regex {
  pcre2_code *code;
  pcre2_match_data *md;
  uint32_t ngroups;
  group_t *named;
  uint32_t nnamed;
  uint64_t key_epoch; /* the batch key epoch the groups' kids are for */
  int64_t time_group; /* index in named of the group "time", or -1 */
  char *time_fmt;     /* its format (lg_timefmt.h) */
  size_t time_flen;
};

static int is_time(const char *name, size_t nlen) {
  return nlen == 4 && memcmp(name, "time", 4) == 0;
}

/* A type suffix taken out of the pattern: (?<name:type>...). */
typedef struct typed {
  const char *name, *type;
  size_t nlen, tlen;
} typed_t;

static int word(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_';
}

/* Copies the pattern into `out` without the ":type" of group names, which
 * go into `types` (at most `cap`, counted in *ntypes). Escapes, \Q...\E
 * and character classes are copied as they are, so a "(?<" inside them is
 * not taken for a group. */
static int strip_types(const char *p, size_t len, lg_buf_t *out, typed_t *types,
                       size_t cap, size_t *ntypes) {
  size_t k = 0;
  while (k < len) {
    char c = p[k];
    if (c == '\\') {
      if (k + 1 < len && p[k + 1] == 'Q') {
        const char *e = NULL;
        for (size_t q = k + 2; q + 1 < len; q++)
          if (p[q] == '\\' && p[q + 1] == 'E') {
            e = p + q + 2;
            break;
          }
        size_t n = e ? (size_t)(e - (p + k)) : len - k;
        if (lg_buf_append(out, p + k, n) != 0)
          return -ENOMEM;
        k += n;
        continue;
      }
      size_t n = k + 1 < len ? 2 : 1;
      if (lg_buf_append(out, p + k, n) != 0)
        return -ENOMEM;
      k += n;
      continue;
    }
    if (c == '[') {
      size_t q = k + 1;
      if (q < len && p[q] == '^')
        q++;
      if (q < len && p[q] == ']')
        q++; /* a leading ] is a member */
      while (q < len && p[q] != ']') {
        if (p[q] == '\\')
          q++;
        else if (p[q] == '[' && q + 1 < len && p[q + 1] == ':') {
          const char *e = memchr(p + q + 2, ']', len - q - 2);
          if (e != NULL)
            q = (size_t)(e - p);
        }
        q++;
      }
      size_t n = (q < len ? q + 1 : len) - k;
      if (lg_buf_append(out, p + k, n) != 0)
        return -ENOMEM;
      k += n;
      continue;
    }
    if (c == '(' && k + 2 < len && p[k + 1] == '?') {
      size_t open = 0; /* length of the opener before the name */
      char close = '>';
      if (p[k + 2] == '<')
        open = 3;
      else if (p[k + 2] == '\'') {
        open = 3;
        close = '\'';
      } else if (p[k + 2] == 'P' && k + 3 < len && p[k + 3] == '<')
        open = 4;
      if (open > 0) {
        size_t n = k + open;
        while (n < len && word(p[n]))
          n++;
        if (n > k + open && n < len && p[n] == ':' &&
            !(p[k + open] >= '0' && p[k + open] <= '9')) {
          size_t t = n + 1;
          while (t < len && word(p[t]))
            t++;
          if (t < len && p[t] == close) {
            if (*ntypes < cap)
              types[(*ntypes)++] = (typed_t){p + k + open, p + n + 1,
                                             n - (k + open), t - (n + 1)};
            if (lg_buf_append(out, p + k, n - k) != 0 ||
                lg_buf_putc(out, close) != 0)
              return -ENOMEM;
            k = t + 1;
            continue;
          }
        }
      }
    }
    if (lg_buf_putc(out, c) != 0)
      return -ENOMEM;
    k++;
  }
  return 0;
}

int lg_regex_create(const char *pattern, size_t len, uint32_t flags,
                    lg_regex_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  lg_buf_t pat = LG_BUF_INIT;
  typed_t types[64];
  size_t ntypes = 0;
  if (strip_types(pattern ? pattern : "", len, &pat, types, 64, &ntypes) != 0) {
    lg_buf_free(&pat);
    return -ENOMEM;
  }
  uint32_t opts = 0;
  if (flags & LG_REGEX_CASELESS)
    opts |= PCRE2_CASELESS;
  if (flags & LG_REGEX_MULTILINE)
    opts |= PCRE2_MULTILINE;
  if (flags & LG_REGEX_DOTALL)
    opts |= PCRE2_DOTALL;
  if (flags & LG_REGEX_EXTENDED)
    opts |= PCRE2_EXTENDED;
  if (flags & LG_REGEX_UTF)
    opts |= PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
  int ec;
  PCRE2_SIZE eoff;
  pcre2_code *code = pcre2_compile((PCRE2_SPTR)(pat.data ? pat.data : ""),
                                   pat.len, opts, &ec, &eoff, NULL);
  lg_buf_free(&pat);
  if (code == NULL) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(ec, msg, sizeof msg);
    snprintf(err, errlen, "%s at offset %zu of the pattern", (char *)msg,
             (size_t)eoff);
    return -EINVAL;
  }
  /* JIT where it is available; the interpreter otherwise. */
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  lg_regex_t *re = calloc(1, sizeof *re);
  if (re == NULL) {
    pcre2_code_free(code);
    return -ENOMEM;
  }
  re->code = code;
  re->time_group = -1;
  re->md = pcre2_match_data_create_from_pattern(code, NULL);
  uint32_t cap = 0, n = 0, esize = 0;
  PCRE2_SPTR table = NULL;
  pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &cap);
  pcre2_pattern_info(code, PCRE2_INFO_NAMECOUNT, &n);
  pcre2_pattern_info(code, PCRE2_INFO_NAMEENTRYSIZE, &esize);
  pcre2_pattern_info(code, PCRE2_INFO_NAMETABLE, &table);
  re->ngroups = cap;
  re->named = n ? calloc(n, sizeof *re->named) : NULL;
  if (re->md == NULL || (n && re->named == NULL)) {
    lg_regex_destroy(re);
    return -ENOMEM;
  }
  /* Name table entries: the group number (2 bytes, big-endian), then the
   * name, NUL-terminated. They come sorted by name; set them in group
   * order, so the fields come in the pattern's order. */
  for (uint32_t k = 0; k < n; k++) {
    PCRE2_SPTR e = table + (size_t)k * esize;
    group_t g = {NULL, strlen((const char *)e + 2),
                 (uint32_t)(e[0] << 8 | e[1]), LG_PARSE_STR, -1};
    g.name = strdup((const char *)e + 2);
    if (g.name == NULL) {
      lg_regex_destroy(re);
      return -ENOMEM;
    }
    uint32_t at = re->nnamed++;
    while (at > 0 && re->named[at - 1].num > g.num) {
      re->named[at] = re->named[at - 1];
      at--;
    }
    re->named[at] = g;
  }
  for (uint32_t k = 0; k < re->nnamed; k++)
    if (is_time(re->named[k].name, re->named[k].nlen))
      re->time_group = k;
  for (size_t t = 0; t < ntypes; t++) {
    if (is_time(types[t].name, types[t].nlen)) {
      int rc = lg_regex_set_time_format(re, types[t].type, types[t].tlen, err,
                                        errlen);
      if (rc != 0) {
        lg_regex_destroy(re);
        return rc;
      }
      continue;
    }
    int ty = lg__parse_type(types[t].type, types[t].tlen);
    if (ty < 0) {
      snprintf(err, errlen,
               "group '%.*s': unknown type '%.*s' (int, float, bool, str)",
               (int)(types[t].nlen > 64 ? 64 : types[t].nlen), types[t].name,
               (int)(types[t].tlen > 32 ? 32 : types[t].tlen), types[t].type);
      lg_regex_destroy(re);
      return -EINVAL;
    }
    lg_regex_set_type(re, types[t].name, types[t].nlen, ty);
  }
  *out = re;
  return 0;
}

void lg_regex_destroy(lg_regex_t *re) {
  if (re == NULL)
    return;
  for (uint32_t k = 0; k < re->nnamed; k++)
    free(re->named[k].name);
  free(re->named);
  free(re->time_fmt);
  pcre2_match_data_free(re->md);
  pcre2_code_free(re->code);
  free(re);
}

int lg_regex_set_type(lg_regex_t *re, const char *name, size_t nlen, int type) {
  if (type < LG_PARSE_STR || type > LG_PARSE_BOOL)
    return -EINVAL;
  int found = -ENOENT;
  for (uint32_t k = 0; k < re->nnamed; k++)
    if (re->named[k].nlen == nlen &&
        memcmp(re->named[k].name, name, nlen) == 0) {
      re->named[k].type = type;
      found = 0;
    }
  return found;
}

int lg_regex_set_time_format(lg_regex_t *re, const char *fmt, size_t flen,
                             char *err, size_t errlen) {
  if (re->time_group < 0) {
    snprintf(err, errlen, "the pattern has no group named 'time'");
    return -ENOENT;
  }
  /* Checks the format now: a bad one is the script's error, at load. */
  int64_t ns;
  char why[200];
  if (lg_timefmt_parse(fmt, flen, "", 0, 0, &ns, why, sizeof why) ==
      LG_TIMEFMT_BADFMT) {
    snprintf(err, errlen, "group 'time': %s", why);
    return -EINVAL;
  }
  char *f = malloc(flen ? flen : 1);
  if (f == NULL)
    return -ENOMEM;
  memcpy(f, fmt, flen);
  free(re->time_fmt);
  re->time_fmt = f;
  re->time_flen = flen;
  return 0;
}

uint32_t lg_regex_groups(const lg_regex_t *re) { return re->ngroups; }

/* Runs the match; returns 1, 0 or a negative errno. */
static int run(lg_regex_t *re, const char *s, size_t len) {
  int rc =
      pcre2_match(re->code, (PCRE2_SPTR)(s ? s : ""), len, 0, 0, re->md, NULL);
  if (rc >= 0)
    return 1;
  if (rc == PCRE2_ERROR_NOMATCH || rc == PCRE2_ERROR_PARTIAL)
    return 0;
  if (rc == PCRE2_ERROR_NOMEMORY)
    return -ENOMEM;
  /* Match, depth or heap limit, JIT stack: its own status, so that the
   * script's error says the pattern backtracked too much (-E2BIG of
   * lg_regex_rec is a full arena). */
  return -EOVERFLOW;
}

int lg_regex_exec(lg_regex_t *re, const char *s, size_t len, int32_t *spans,
                  uint32_t nspans) {
  if (len > INT32_MAX)
    return -ERANGE;
  int rc = run(re, s, len);
  if (rc != 1)
    return rc;
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
  uint32_t pairs = pcre2_get_ovector_count(re->md);
  for (uint32_t k = 0; k + 1 < nspans; k += 2) {
    uint32_t g = k / 2;
    if (g < pairs && ov[2 * g] != PCRE2_UNSET) {
      /* PCRE2 can end a match before its start (\K in a lookahead, which
       * it refuses since 10.38 unless told otherwise): an empty span, as
       * re:match hands end - start to ffi.string as a length. */
      size_t a = ov[2 * g], z = ov[2 * g + 1];
      spans[k] = (int32_t)a;
      spans[k + 1] = (int32_t)(z > a ? z : a);
    } else {
      spans[k] = spans[k + 1] = -1;
    }
  }
  return 1;
}

int lg_regex_rec(lg_batch_t *b, uint32_t i, lg_regex_t *re, const char *field,
                 size_t flen, char *err, size_t errlen) {
  lg_parse_src_t src;
  int rc = lg__parse_src(b, i, field, flen, &src);
  if (rc != 0)
    return rc;
  rc = run(re, src.p, src.len);
  if (rc != 1)
    return rc;
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
  uint32_t pairs = pcre2_get_ovector_count(re->md);
  int result = 1;
  if (re->key_epoch != b->key_epoch) {
    /* Another batch, or this one reset: its key ids are not ours. */
    for (uint32_t k = 0; k < re->nnamed; k++)
      re->named[k].kid = -1;
    re->key_epoch = b->key_epoch;
  }
  for (uint32_t k = 0; k < re->nnamed; k++) {
    group_t *g = &re->named[k];
    if (g->num >= pairs || ov[2 * g->num] == PCRE2_UNSET)
      continue;
    size_t a = ov[2 * g->num], z = ov[2 * g->num + 1];
    size_t len = z > a ? z - a : 0;
    if ((int64_t)k == re->time_group) {
      /* The group "time" is the record's time, in its format. */
      int64_t ns;
      const char *p = lg__parse_src_ptr(b, &src) + a;
      rc = lg_timefmt_parse(re->time_fmt ? re->time_fmt : "rfc3339",
                            re->time_fmt ? re->time_flen : 7, p, len,
                            LG_TIMEFMT_NOW, &ns, err, errlen);
      if (rc == 0) {
        rc = lg_ffi_rec_set_time(b, i, ns);
        if (rc != 0)
          return rc;
      } else {
        result = 2; /* the format was checked: the text did not match */
      }
      continue;
    }
    int64_t kid = g->kid;
    if (kid < 0) {
      kid = lg_batch_key_id(b, g->name, g->nlen);
      if (kid < 0)
        return (int)kid;
      g->kid = kid;
    }
    rc = lg__parse_set(b, i, (uint32_t)kid, &src, a, len,
                       (lg_parse_type_t)g->type);
    if (rc != 0)
      return rc;
  }
  return result;
}

/* ---- the FFI functions of lugger.regex (lg_ffi.h, "parse" area) ---- */

int lg_ffi_parse_regex_create(const char *pat, size_t len, const char *flags,
                              size_t flen, lg_regex_t **out, char *err,
                              size_t errlen) {
  if ((pat == NULL && len != 0) || (flags == NULL && flen != 0) ||
      out == NULL || err == NULL || errlen == 0)
    return -EINVAL;
  uint32_t f = 0;
  for (size_t k = 0; k < flen; k++) {
    switch (flags[k]) {
    case 'i':
      f |= LG_REGEX_CASELESS;
      break;
    case 'm':
      f |= LG_REGEX_MULTILINE;
      break;
    case 's':
      f |= LG_REGEX_DOTALL;
      break;
    case 'x':
      f |= LG_REGEX_EXTENDED;
      break;
    case 'u':
      f |= LG_REGEX_UTF;
      break;
    default:
      snprintf(err, errlen, "unknown flag '%c' (i, m, s, x, u)",
               (unsigned char)flags[k] >= 0x20 && (unsigned char)flags[k] < 0x7f
                   ? flags[k]
                   : '?');
      return -EINVAL;
    }
  }
  return lg_regex_create(pat, len, f, out, err, errlen);
}

int lg_ffi_parse_regex_destroy(lg_regex_t *re) {
  lg_regex_destroy(re);
  return 0;
}

int lg_ffi_parse_regex_set_type(lg_regex_t *re, const char *name, size_t nlen,
                                const char *type, size_t tlen) {
  if (re == NULL || name == NULL || type == NULL)
    return -EINVAL;
  int t = lg__parse_type(type, tlen);
  if (t < 0)
    return -EINVAL;
  return lg_regex_set_type(re, name, nlen, t);
}

int lg_ffi_parse_regex_groups(const lg_regex_t *re) {
  return re == NULL ? -EINVAL : (int)lg_regex_groups(re);
}

int lg_ffi_parse_regex_exec(lg_regex_t *re, const char *s, size_t len,
                            int32_t *spans, uint32_t nspans) {
  if (re == NULL || (s == NULL && len != 0) || (spans == NULL && nspans != 0))
    return -EINVAL;
  return lg_regex_exec(re, s, len, spans, nspans);
}

int lg_ffi_parse_rec_regex(lg_batch_t *b, uint32_t i, lg_regex_t *re,
                           const char *field, size_t flen, char *err,
                           size_t errlen) {
  if (b == NULL || re == NULL || (field == NULL && flen != 0) || err == NULL)
    return -EINVAL;
  return lg_regex_rec(b, i, re, field, flen, err, errlen);
}

int lg_ffi_parse_regex_set_time(lg_regex_t *re, const char *fmt, size_t flen,
                                char *err, size_t errlen) {
  if (re == NULL || fmt == NULL || err == NULL)
    return -EINVAL;
  return lg_regex_set_time_format(re, fmt, flen, err, errlen);
}
