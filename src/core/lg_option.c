#include "core/lg_option.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>
#include <lua.h>

/* Parses the leading "123" or "123.45" of `s` into *v; returns the number
 * of characters used, 0 if there is no number. A bare "." or "1." is not a
 * number, so that typos are reported instead of guessed at. */
static size_t parse_decimal(const char *s, long double *v) {
  size_t i = 0;
  long double x = 0;
  while (s[i] >= '0' && s[i] <= '9')
    x = x * 10 + (s[i++] - '0');
  if (i == 0)
    return 0;
  if (s[i] == '.') {
    size_t j = i + 1;
    long double scale = 0.1L;
    while (s[j] >= '0' && s[j] <= '9') {
      x += (s[j++] - '0') * scale;
      scale /= 10;
    }
    if (j == i + 1)
      return 0;
    i = j;
  }
  *v = x;
  return i;
}

struct unit {
  const char *name;
  long double mult;
};

/* SI units are powers of 1000 and IEC units powers of 1024, as in
 * IEC 80000-13; bare K, M, G, T follow the SI meaning of KB, MB... */
static const struct unit byte_units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1e3L},
    {"kb", 1e3L},
    {"kib", 1024.0L},
    {"m", 1e6L},
    {"mb", 1e6L},
    {"mib", 1048576.0L},
    {"g", 1e9L},
    {"gb", 1e9L},
    {"gib", 1073741824.0L},
    {"t", 1e12L},
    {"tb", 1e12L},
    {"tib", 1099511627776.0L},
    {NULL, 0},
};

int lg_opt_parse_bytes(const char *s, int64_t *out) {
  long double v;
  size_t n = parse_decimal(s, &v);
  if (n == 0)
    return -EINVAL;
  const char *u = s + n;
  if (*u == ' ')
    u++;
  for (const struct unit *t = byte_units; t->name != NULL; t++) {
    if (strcasecmp(u, t->name) != 0)
      continue;
    if (*t->name == '\0' && u != s + n)
      return -EINVAL; /* "64 " */
    long double b = floorl(v * t->mult);
    if (b > (long double)INT64_MAX)
      return -ERANGE;
    *out = (int64_t)b;
    return 0;
  }
  return -EINVAL;
}

int lg_opt_parse_duration(const char *s, int64_t *out_ms) {
  if (strcmp(s, "0") == 0) {
    *out_ms = 0;
    return 0;
  }
  long double total = 0;
  const char *p = s;
  if (*p == '\0')
    return -EINVAL;
  while (*p != '\0') {
    long double v;
    size_t n = parse_decimal(p, &v);
    if (n == 0)
      return -EINVAL;
    p += n;
    long double mult;
    if (strncmp(p, "ms", 2) == 0) {
      mult = 1;
      p += 2;
    } else if (*p == 's') {
      mult = 1000;
      p++;
    } else if (*p == 'm') {
      mult = 60000;
      p++;
    } else if (*p == 'h') {
      mult = 3600000;
      p++;
    } else {
      return -EINVAL;
    }
    total += v * mult;
    if (total > (long double)INT64_MAX)
      return -ERANGE;
  }
  *out_ms = (int64_t)floorl(total);
  return 0;
}

int lg_opt_parse_enum(const char *choices, const char *s) {
  size_t len = strlen(s);
  int idx = 0;
  for (const char *p = choices; p != NULL && *p != '\0'; idx++) {
    const char *bar = strchr(p, '|');
    size_t n = bar != NULL ? (size_t)(bar - p) : strlen(p);
    if (n == len && memcmp(p, s, len) == 0)
      return idx;
    p = bar != NULL ? bar + 1 : NULL;
  }
  return -EINVAL;
}

int lg_opt_find(const lg_option_t *opts, const char *name) {
  for (int i = 0; opts != NULL && opts[i].name != NULL; i++)
    if (strcmp(opts[i].name, name) == 0)
      return i;
  return -1;
}

/* Optimal string alignment distance between a and b (lower-cased), or
 * `cap` + 1 once it is past `cap` (keys are short: no need to finish). */
static size_t edit_distance(const char *a, const char *b, size_t cap) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64 || (la > lb ? la - lb : lb - la) > cap)
    return cap + 1;
  size_t d[65][65];
  for (size_t i = 0; i <= la; i++)
    d[i][0] = i;
  for (size_t j = 0; j <= lb; j++)
    d[0][j] = j;
  for (size_t i = 1; i <= la; i++) {
    for (size_t j = 1; j <= lb; j++) {
      int ca = tolower((unsigned char)a[i - 1]);
      int cb = tolower((unsigned char)b[j - 1]);
      size_t best = d[i - 1][j - 1] + (ca != cb);
      if (d[i - 1][j] + 1 < best)
        best = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < best)
        best = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
          tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < best)
        best = d[i - 2][j - 2] + 1;
      d[i][j] = best;
    }
  }
  return d[la][lb] > cap ? cap + 1 : d[la][lb];
}

const char *lg_opt_closest_name(const char *const *names, const char *name) {
  if (names == NULL || name == NULL)
    return NULL;
  size_t cap = strlen(name) >= 6 ? 2 : 1;
  const char *best = NULL;
  size_t best_d = cap + 1;
  int tie = 0;
  for (size_t i = 0; names[i] != NULL; i++) {
    size_t d = edit_distance(name, names[i], cap);
    if (d < best_d) {
      best = names[i];
      best_d = d;
      tie = 0;
    } else if (d == best_d && d <= cap) {
      tie = 1;
    }
  }
  return best_d <= cap && !tie ? best : NULL;
}

const char *lg_opt_closest(const lg_option_t *opts, const char *name) {
  const char *names[256];
  size_t n = 0;
  for (; opts != NULL && opts[n].name != NULL && n < 255; n++)
    names[n] = opts[n].name;
  names[n] = NULL;
  return lg_opt_closest_name(names, name);
}

int lg_opt_fill(const lg_option_t *opts, const lg_optval_t *vals, void *conf,
                char *err, size_t errlen) {
  char *base = conf;
  for (size_t i = 0; opts[i].name != NULL; i++) {
    const lg_option_t *o = &opts[i];
    const lg_optval_t *v = &vals[i];
    void *dst = base + o->offset;
    int empty = 0;
    switch (o->type) {
    case LG_OPT_STRING:
    case LG_OPT_PATH:
      *(char **)dst = v->s;
      empty = v->s == NULL;
      break;
    case LG_OPT_ENUM:
      *(int *)dst = v->s != NULL ? lg_opt_parse_enum(o->choices, v->s) : -1;
      if (*(int *)dst < 0)
        *(int *)dst = -1;
      empty = v->s == NULL;
      break;
    case LG_OPT_INT:
    case LG_OPT_BYTES:
    case LG_OPT_DURATION:
      *(int64_t *)dst = v->i;
      empty = !v->set && o->def == NULL;
      break;
    case LG_OPT_BOOL:
      *(int *)dst = v->i != 0;
      empty = !v->set && o->def == NULL;
      break;
    case LG_OPT_STRLIST:
      *(lg_opt_strv_t *)dst = (lg_opt_strv_t){v->vals, v->n};
      empty = v->n == 0;
      break;
    case LG_OPT_STRMAP:
      *(lg_opt_strmap_t *)dst = (lg_opt_strmap_t){v->keys, v->vals, v->n};
      empty = v->n == 0;
      break;
    }
    if (o->required && empty) {
      snprintf(err, errlen, "%s: required", o->name);
      return -EINVAL;
    }
  }
  return 0;
}

void lg_optval_free(lg_optval_t *v) {
  if (v == NULL)
    return;
  free(v->s);
  for (size_t i = 0; i < v->n; i++) {
    if (v->keys != NULL)
      free(v->keys[i]);
    if (v->vals != NULL)
      free(v->vals[i]);
  }
  free(v->keys);
  free(v->vals);
  memset(v, 0, sizeof *v);
}

/* "never", "interval", "always" from "never|interval|always", for
 * messages. */
static void format_choices(const char *choices, char *out, size_t outlen) {
  size_t o = 0;
  out[0] = '\0';
  for (const char *p = choices; p != NULL && *p != '\0';) {
    const char *bar = strchr(p, '|');
    int n = bar != NULL ? (int)(bar - p) : (int)strlen(p);
    int w =
        snprintf(out + o, outlen - o, "%s\"%.*s\"", o > 0 ? ", " : "", n, p);
    if (w < 0 || (size_t)w >= outlen - o)
      break;
    o += (size_t)w;
    p = bar != NULL ? bar + 1 : NULL;
  }
}

static const char bytes_hint[] =
    "a number of bytes or a string like \"64KiB\", \"1MiB\", \"2GB\"";
static const char duration_hint[] =
    "a number of milliseconds or a string like \"500ms\", \"5s\", \"1m\"";

/* Parses `s` (config syntax) as `opt` into `v`; on error writes the reason
 * without a key path into `err`. */
static int parse_text(const lg_option_t *opt, const char *s, lg_optval_t *v,
                      char *err, size_t errlen) {
  int rc;
  switch (opt->type) {
  case LG_OPT_STRING:
  case LG_OPT_PATH:
    break;
  case LG_OPT_ENUM:
    if (lg_opt_parse_enum(opt->choices, s) < 0) {
      char c[256];
      format_choices(opt->choices, c, sizeof c);
      snprintf(err, errlen, "expected one of %s, got \"%s\"", c, s);
      return -EINVAL;
    }
    break;
  case LG_OPT_INT: {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0) {
      snprintf(err, errlen, "expected an integer, got \"%s\"", s);
      return -EINVAL;
    }
    v->i = x;
    return 0;
  }
  case LG_OPT_BOOL:
    if (strcmp(s, "true") == 0)
      v->i = 1;
    else if (strcmp(s, "false") == 0)
      v->i = 0;
    else {
      snprintf(err, errlen, "expected a boolean, got \"%s\"", s);
      return -EINVAL;
    }
    return 0;
  case LG_OPT_BYTES:
    rc = lg_opt_parse_bytes(s, &v->i);
    if (rc == -ERANGE) {
      snprintf(err, errlen, "size \"%s\" is too large", s);
      return -EINVAL;
    }
    if (rc < 0) {
      snprintf(err, errlen, "invalid size \"%s\" (expected %s)", s, bytes_hint);
      return -EINVAL;
    }
    return 0;
  case LG_OPT_DURATION:
    rc = lg_opt_parse_duration(s, &v->i);
    if (rc == -ERANGE) {
      snprintf(err, errlen, "duration \"%s\" is too long", s);
      return -EINVAL;
    }
    if (rc < 0) {
      snprintf(err, errlen, "invalid duration \"%s\" (expected %s)", s,
               duration_hint);
      return -EINVAL;
    }
    return 0;
  case LG_OPT_STRLIST:
    v->vals = calloc(1, sizeof *v->vals);
    if (v->vals == NULL || (v->vals[0] = strdup(s)) == NULL) {
      free(v->vals);
      v->vals = NULL;
      snprintf(err, errlen, "out of memory");
      return -ENOMEM;
    }
    v->n = 1;
    return 0;
  case LG_OPT_STRMAP:
    snprintf(err, errlen, "a map has no text form");
    return -EINVAL;
  }
  v->s = strdup(s);
  if (v->s == NULL) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  return 0;
}

int lg_opt_set_default(const lg_option_t *opt, lg_optval_t *v, char *err,
                       size_t errlen) {
  memset(v, 0, sizeof *v);
  if (opt->def == NULL)
    return 0;
  int rc = parse_text(opt, opt->def, v, err, errlen);
  if (rc < 0)
    lg_optval_free(v);
  return rc;
}

const char *lg_opt_lua_typename(struct lua_State *L, int idx) {
  return lua_typename(L, lua_type(L, idx));
}

/* An integral Lua number that fits int64, into *out. */
static int lua_int64(lua_State *L, int idx, int64_t *out) {
  if (lua_type(L, idx) != LUA_TNUMBER)
    return -EINVAL;
  double d = lua_tonumber(L, idx);
  /* 2^63 is exactly representable; anything >= it does not fit. */
  if (!(d == floor(d)) || d < -9223372036854775808.0 ||
      d >= 9223372036854775808.0)
    return -ERANGE;
  *out = (int64_t)d;
  return 0;
}

/* Text of a scalar (string, number, boolean) for STRMAP values; NULL for
 * other types or on allocation failure. */
static char *scalar_text(lua_State *L, int idx) {
  char buf[64];
  int64_t i;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return strndup(s, len);
  }
  case LUA_TNUMBER:
    if (lua_int64(L, idx, &i) == 0)
      snprintf(buf, sizeof buf, "%lld", (long long)i);
    else
      snprintf(buf, sizeof buf, "%.17g", lua_tonumber(L, idx));
    return strdup(buf);
  case LUA_TBOOLEAN:
    return strdup(lua_toboolean(L, idx) ? "true" : "false");
  default:
    return NULL;
  }
}

/* Reads a list of strings (table with keys 1..n only) at `idx`. */
static int parse_strlist(lua_State *L, int idx, const char *path,
                         lg_optval_t *v, char *err, size_t errlen) {
  /* Keys must be 1..n: any other key, or a gap, is reported rather than
   * skipped, since lua_objlen alone cannot tell a list from a map. */
  size_t n = 0, count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    count++;
    int bad = lua_type(L, -2) != LUA_TNUMBER;
    if (!bad) {
      double k = lua_tonumber(L, -2);
      bad = k != floor(k) || k < 1 || k > 1e9;
      if (!bad && (size_t)k > n)
        n = (size_t)k;
    }
    if (bad) {
      lua_pop(L, 2);
      snprintf(err, errlen,
               "%s: expected a list of strings, got a table with "
               "other keys",
               path);
      return -EINVAL;
    }
    lua_pop(L, 1);
  }
  if (count != n) {
    snprintf(err, errlen,
             "%s: expected a list of strings, got a list with "
             "holes",
             path);
    return -EINVAL;
  }
  v->vals = calloc(n > 0 ? n : 1, sizeof *v->vals);
  if (v->vals == NULL)
    goto nomem;
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, (int)i);
    if (lua_type(L, -1) != LUA_TSTRING) {
      snprintf(err, errlen, "%s[%zu]: expected a string, got %s", path, i,
               lg_opt_lua_typename(L, -1));
      lua_pop(L, 1);
      return -EINVAL;
    }
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    v->vals[i - 1] = strndup(s, len);
    lua_pop(L, 1);
    if (v->vals[i - 1] == NULL)
      goto nomem;
    v->n = i;
  }
  return 0;
nomem:
  snprintf(err, errlen, "%s: out of memory", path);
  return -ENOMEM;
}

static int parse_strmap(lua_State *L, int idx, const char *path, lg_optval_t *v,
                        char *err, size_t errlen) {
  size_t cap = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING) {
      snprintf(err, errlen, "%s: expected string keys, got a %s key", path,
               lg_opt_lua_typename(L, -2));
      lua_pop(L, 2);
      return -EINVAL;
    }
    const char *key = lua_tostring(L, -2);
    char *val = scalar_text(L, -1);
    if (val == NULL) {
      int scalar = lua_type(L, -1) == LUA_TSTRING ||
                   lua_type(L, -1) == LUA_TNUMBER ||
                   lua_type(L, -1) == LUA_TBOOLEAN;
      if (scalar)
        snprintf(err, errlen, "%s: out of memory", path);
      else
        snprintf(err, errlen,
                 "%s.%s: expected a string, number or boolean, got %s", path,
                 key, lg_opt_lua_typename(L, -1));
      lua_pop(L, 2);
      return scalar ? -ENOMEM : -EINVAL;
    }
    if (v->n == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      char **k2 = realloc(v->keys, ncap * sizeof *k2);
      if (k2 != NULL)
        v->keys = k2;
      char **v2 = k2 != NULL ? realloc(v->vals, ncap * sizeof *v2) : NULL;
      if (v2 != NULL)
        v->vals = v2;
      if (k2 == NULL || v2 == NULL) {
        free(val);
        lua_pop(L, 2);
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
      }
      cap = ncap;
    }
    v->keys[v->n] = strdup(key);
    v->vals[v->n] = val;
    v->n++;
    lua_pop(L, 1);
    if (v->keys[v->n - 1] == NULL) {
      lua_pop(L, 1);
      snprintf(err, errlen, "%s: out of memory", path);
      return -ENOMEM;
    }
  }
  /* Sort by key (values follow) so output does not depend on hash order. */
  for (size_t i = 1; i < v->n; i++)
    for (size_t j = i; j > 0 && strcmp(v->keys[j - 1], v->keys[j]) > 0; j--) {
      char *t = v->keys[j];
      v->keys[j] = v->keys[j - 1];
      v->keys[j - 1] = t;
      t = v->vals[j];
      v->vals[j] = v->vals[j - 1];
      v->vals[j - 1] = t;
    }
  return 0;
}

int lg_opt_parse_lua(struct lua_State *L, int idx, const lg_option_t *opt,
                     const char *path, lg_optval_t *v, char *err,
                     size_t errlen) {
  char why[512];
  int rc = 0;
  if (idx < 0 && idx > LUA_REGISTRYINDEX)
    idx = lua_gettop(L) + idx + 1;
  int t = lua_type(L, idx);
  memset(v, 0, sizeof *v);
  why[0] = '\0';

  switch (opt->type) {
  case LG_OPT_STRING:
  case LG_OPT_PATH:
    if (t != LUA_TSTRING) {
      snprintf(why, sizeof why, "expected a string, got %s",
               lg_opt_lua_typename(L, idx));
      rc = -EINVAL;
      break;
    }
    {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (strlen(s) != len) {
        snprintf(why, sizeof why, "string contains a NUL byte");
        rc = -EINVAL;
        break;
      }
      rc = parse_text(opt, s, v, why, sizeof why);
    }
    break;
  case LG_OPT_ENUM:
    if (t != LUA_TSTRING) {
      char c[256];
      format_choices(opt->choices, c, sizeof c);
      snprintf(why, sizeof why, "expected one of %s, got %s", c,
               lg_opt_lua_typename(L, idx));
      rc = -EINVAL;
      break;
    }
    rc = parse_text(opt, lua_tostring(L, idx), v, why, sizeof why);
    break;
  case LG_OPT_INT:
    if (t != LUA_TNUMBER) {
      snprintf(why, sizeof why, "expected an integer, got %s",
               lg_opt_lua_typename(L, idx));
      rc = -EINVAL;
    } else if (lua_int64(L, idx, &v->i) < 0) {
      snprintf(why, sizeof why, "expected an integer, got %.17g",
               lua_tonumber(L, idx));
      rc = -EINVAL;
    }
    break;
  case LG_OPT_BOOL:
    if (t != LUA_TBOOLEAN) {
      snprintf(why, sizeof why, "expected a boolean, got %s",
               lg_opt_lua_typename(L, idx));
      rc = -EINVAL;
    } else {
      v->i = lua_toboolean(L, idx);
    }
    break;
  case LG_OPT_BYTES:
  case LG_OPT_DURATION: {
    const char *what = opt->type == LG_OPT_BYTES ? "size" : "duration";
    const char *hint = opt->type == LG_OPT_BYTES ? bytes_hint : duration_hint;
    if (t == LUA_TSTRING) {
      rc = parse_text(opt, lua_tostring(L, idx), v, why, sizeof why);
    } else if (t == LUA_TNUMBER) {
      double d = lua_tonumber(L, idx);
      if (d != d) {
        snprintf(why, sizeof why, "%s must be a number from 0 up, got nan",
                 what);
        rc = -EINVAL;
      } else if (!(d >= 0) || d >= 9223372036854775808.0) {
        snprintf(why, sizeof why, "%s must be a number from 0 up, got %.17g",
                 what, d);
        rc = -EINVAL;
      } else {
        v->i = (int64_t)floor(d);
      }
    } else {
      snprintf(why, sizeof why, "expected a %s (%s), got %s", what, hint,
               lg_opt_lua_typename(L, idx));
      rc = -EINVAL;
    }
    break;
  }
  case LG_OPT_STRLIST:
    if (t == LUA_TSTRING) {
      rc = parse_text(opt, lua_tostring(L, idx), v, why, sizeof why);
    } else if (t == LUA_TTABLE) {
      rc = parse_strlist(L, idx, path, v, err, errlen);
      if (rc < 0) {
        lg_optval_free(v);
        return rc;
      }
    } else {
      snprintf(why, sizeof why, "expected a list of strings, got %s",
               lg_opt_lua_typename(L, idx));
      rc = -EINVAL;
    }
    break;
  case LG_OPT_STRMAP:
    if (t != LUA_TTABLE) {
      snprintf(why, sizeof why,
               "expected a table of names to strings, numbers or booleans, "
               "got %s",
               lg_opt_lua_typename(L, idx));
      rc = -EINVAL;
      break;
    }
    rc = parse_strmap(L, idx, path, v, err, errlen);
    if (rc < 0) {
      lg_optval_free(v);
      return rc;
    }
    break;
  }
  if (rc == 0 && opt->check != NULL)
    rc = opt->check(v, why, sizeof why);
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", path, why);
    lg_optval_free(v);
    return rc;
  }
  v->set = 1;
  return 0;
}

int lg_opt_check_positive(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i <= 0) {
    snprintf(err, errlen, "must be greater than 0");
    return -EINVAL;
  }
  return 0;
}

int lg_opt_check_nonnegative(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i < 0) {
    snprintf(err, errlen, "must be 0 or more");
    return -EINVAL;
  }
  return 0;
}

int lg_opt_check_nonempty(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->s == NULL || v->s[0] == '\0') {
    snprintf(err, errlen, "must not be empty");
    return -EINVAL;
  }
  return 0;
}
