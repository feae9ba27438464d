/* The config's Lua state (safe libraries, a bounded evaluation), reading
 * files, walking tables in sorted key order, option tables, and Lua values
 * to JSON (script params). */
#include "config/lg_config_internal.h"

void lg__config_msg_vadd(char ***msgs, size_t *n, const char *fmt, va_list ap) {
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, ap);
  char **m = realloc(*msgs, (*n + 1) * sizeof *m);
  if (m == NULL)
    return; /* the message is lost; the load goes on (and fails, for an
               error) */
  *msgs = m;
  if ((m[*n] = strdup(buf)) != NULL)
    (*n)++;
}

__attribute__((format(printf, 2, 3))) void
lg__config_err_add(ctx_t *x, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lg__config_msg_vadd(&x->errs->msgs, &x->errs->n, fmt, ap);
  va_end(ap);
}

char *lg__config_xstrdup(ctx_t *x, const char *s) {
  char *d = strdup(s);
  if (d == NULL)
    lg__config_err_add(x, "out of memory");
  return d;
}

static int l_getenv(lua_State *L) {
  const char *v = getenv(luaL_checkstring(L, 1));
  if (v == NULL)
    lua_pushnil(L);
  else
    lua_pushstring(L, v);
  return 1;
}

_Thread_local ctx_t *lg__config_hook_ctx; /* set while a config is evaluated */

void lg__config_count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  if (lg__config_hook_ctx != NULL &&
      ++lg__config_hook_ctx->hook_calls > HOOK_MAX) {
    lua_pushstring(L, CHUNK_MARK ": evaluation did not finish after 10^8 "
                                 "instructions (an endless loop?)");
    lua_error(L);
  }
}

static void open_lib(lua_State *L, const char *name, lua_CFunction f) {
  lua_pushcfunction(L, f);
  lua_pushstring(L, name);
  lua_call(L, 1, 0);
}

/* A state with base, string, table and math, and os.getenv only: a config
 * may read the environment but not files or processes. */
lua_State *lg__config_new_state(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL)
    return NULL;
  /* The interpreter honours the count hook everywhere; compiled traces
   * would not, and a config gains nothing from the JIT. */
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  open_lib(L, "", luaopen_base);
  open_lib(L, LUA_STRLIBNAME, luaopen_string);
  open_lib(L, LUA_TABLIBNAME, luaopen_table);
  open_lib(L, LUA_MATHLIBNAME, luaopen_math);
  static const char *const removed[] = {"dofile",     "loadfile", "load",
                                        "loadstring", "print",    NULL};
  for (int i = 0; removed[i] != NULL; i++) {
    lua_pushnil(L);
    lua_setglobal(L, removed[i]);
  }
  lua_newtable(L);
  lua_pushcfunction(L, l_getenv);
  lua_setfield(L, -2, "getenv");
  lua_setglobal(L, "os");
  return L;
}

void lg__config_add_lua_error(ctx_t *x, const char *prefix, const char *msg,
                              const char *path) {
  char out[1024];
  size_t o = 0, ml = strlen(CHUNK_MARK);
  out[0] = '\0';
  while (*msg != '\0' && o + 1 < sizeof out) {
    if (strncmp(msg, CHUNK_MARK, ml) == 0) {
      int w = snprintf(out + o, sizeof out - o, "%s", path);
      o = w > 0 && (size_t)w < sizeof out - o ? o + (size_t)w : sizeof out - 1;
      msg += ml;
    } else {
      out[o++] = *msg++;
      out[o] = '\0';
    }
  }
  lg__config_err_add(x, "%s%s", prefix, out);
}

/* Loads Lua source text as a function under CHUNK_MARK; never bytecode,
 * which could break the VM's guarantees. */
int lg__config_load_text(lua_State *L, const char *buf, size_t len) {
  if (len > 0 && buf[0] == '\033') {
    lua_pushstring(L, CHUNK_MARK ": precompiled bytecode is not accepted, "
                                 "only Lua source text");
    return LUA_ERRSYNTAX;
  }
  return luaL_loadbufferx(L, buf, len, "=" CHUNK_MARK, "t");
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Describes a non-string key for messages: "[1]", "[true]". */
static void key_text(lua_State *L, int idx, char *out, size_t outlen) {
  if (lua_type(L, idx) == LUA_TNUMBER)
    snprintf(out, outlen, "[%.17g]", lua_tonumber(L, idx));
  else
    snprintf(out, outlen, "[<%s>]", lua_typename(L, lua_type(L, idx)));
}

/* The string keys of the table at `tbl`, sorted. Other keys are reported
 * as `path[k]: <what>` errors. */
char **lg__config_sorted_keys(ctx_t *x, int tbl, const char *path,
                              const char *what, size_t *n) {
  lua_State *L = x->L;
  char **keys = NULL;
  size_t cnt = 0, cap = 0;
  lua_pushnil(L);
  while (lua_next(L, tbl) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      char k[64];
      key_text(L, -1, k, sizeof k);
      lg__config_err_add(x, "%s%s: %s", path, k, what);
      continue;
    }
    if (LG_GROW(keys, cap, cnt + 1, 16) != 0) {
      lua_pop(L, 1);
      lg__config_err_add(x, "out of memory");
      break;
    }
    if ((keys[cnt] = strdup(lua_tostring(L, -1))) != NULL)
      cnt++;
  }
  if (cnt > 1)
    qsort(keys, cnt, sizeof *keys, cmp_str);
  *n = cnt;
  return keys;
}

/* `p` made absolute against the config file's directory, the rule for
 * every relative path in a config (scripts, globs, files). */
char *lg__config_resolve_path(ctx_t *x, const char *p) {
  if (p[0] == '/')
    return lg__config_xstrdup(x, p);
  while (p[0] == '.' && p[1] == '/')
    p += 2;
  size_t dl = strlen(x->c->dir), pl = strlen(p);
  char *r = malloc(dl + pl + 2);
  if (r == NULL) {
    lg__config_err_add(x, "out of memory");
    return NULL;
  }
  memcpy(r, x->c->dir, dl);
  size_t o = dl;
  if (o == 0 || r[o - 1] != '/')
    r[o++] = '/';
  memcpy(r + o, p, pl + 1);
  return r;
}

/* Fills vals[] (one per opts entry) from the table at `tbl`: defaults
 * first, then the keys given. Keys in `extra` (NULL-terminated) belong to
 * the caller and are skipped. Returns the number of errors added. */
size_t lg__config_parse_opts(ctx_t *x, int tbl, const char *path,
                             const lg_option_t *opts, lg_optval_t *vals,
                             const char *const *extra) {
  lua_State *L = x->L;
  size_t before = x->errs->n;
  char err[1024], kp[512];
  for (int i = 0; opts[i].name != NULL; i++)
    if (lg_opt_set_default(&opts[i], &vals[i], err, sizeof err) < 0)
      lg__config_err_add(x, "%s.%s: bad default: %s", path, opts[i].name, err);
  size_t nk;
  char **keys =
      lg__config_sorted_keys(x, tbl, path, "unexpected list item", &nk);
  for (size_t k = 0; k < nk; k++) {
    int skip = 0;
    for (size_t e = 0; extra != NULL && extra[e] != NULL; e++)
      skip |= strcmp(extra[e], keys[k]) == 0;
    if (skip)
      continue;
    snprintf(kp, sizeof kp, "%s.%s", path, keys[k]);
    int i = lg_opt_find(opts, keys[k]);
    if (i < 0) {
      /* A typo gets the key it probably meant, the caller's own included
       * ("read_form" -> read_from, "tpye" -> type). */
      const char *names[256];
      size_t n = 0;
      for (; opts[n].name != NULL && n < 200; n++)
        names[n] = opts[n].name;
      for (size_t e = 0; extra != NULL && extra[e] != NULL && n < 255; e++)
        names[n++] = extra[e];
      names[n] = NULL;
      const char *near = lg_opt_closest_name(names, keys[k]);
      if (near != NULL)
        lg__config_err_add(x, "%s: unknown key (did you mean %s?)", kp, near);
      else
        lg__config_err_add(x, "%s: unknown key", kp);
      continue;
    }
    lua_getfield(L, tbl, keys[k]);
    lg_optval_t v;
    if (lg_opt_parse_lua(L, -1, &opts[i], kp, &v, err, sizeof err) < 0) {
      lg__config_err_add(x, "%s", err);
    } else {
      if (opts[i].type == LG_OPT_PATH && v.s != NULL && v.s[0] != '\0') {
        char *abs = lg__config_resolve_path(x, v.s);
        free(v.s);
        v.s = abs;
      }
      lg_optval_free(&vals[i]);
      vals[i] = v;
    }
    lua_pop(L, 1);
  }
  for (int i = 0; opts[i].name != NULL; i++) {
    if (!opts[i].required)
      continue;
    lua_getfield(L, tbl, opts[i].name);
    if (lua_isnil(L, -1))
      lg__config_err_add(x, "%s.%s: required key missing", path, opts[i].name);
    lua_pop(L, 1);
  }
  lg_util_strv_free(keys, nk);
  return x->errs->n - before;
}

size_t lg__config_each_entry(ctx_t *x, int tbl, const char *section,
                             const char *what, size_t n_max, entry_fn f,
                             void *ud) {
  lua_State *L = x->L;
  size_t n_all;
  char **names = lg__config_sorted_keys(x, tbl, section, what, &n_all);
  size_t n = n_all;
  if (n > n_max) {
    lg__config_err_add(x, "%s: at most %zu entries are supported, got %zu",
                       section, n_max, n);
    n = n_max;
  }
  char path[512];
  for (size_t i = 0; i < n; i++) {
    snprintf(path, sizeof path, "%s.%s", section, names[i]);
    lua_getfield(L, tbl, names[i]);
    f(x, names[i], path, i, ud);
    lua_settop(L, tbl);
  }
  lg_util_strv_free(names, n_all);
  return n;
}

/* A Lua table as a JSON array (keys 1..n) or object (string keys). An
 * empty table is an empty object, since params are named settings. */
static cJSON *table_to_json(ctx_t *x, int idx, const char *path, int depth) {
  lua_State *L = x->L;
  size_t n = lua_objlen(L, idx), count = 0, nstr = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    count++;
    if (lua_type(L, -1) == LUA_TSTRING)
      nstr++;
  }
  char kp[512];
  if (count > 0 && nstr == 0 && count == n) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 1; arr != NULL && i <= n; i++) {
      snprintf(kp, sizeof kp, "%s[%zu]", path, i);
      lua_rawgeti(L, idx, (int)i);
      cJSON *item = lg__config_to_json(x, lua_gettop(L), kp, depth + 1);
      lua_pop(L, 1);
      if (item == NULL) {
        cJSON_Delete(arr);
        return NULL;
      }
      cJSON_AddItemToArray(arr, item);
    }
    return arr;
  }
  if (nstr != count) {
    lg__config_err_add(
        x,
        "%s: expected a list (keys 1..n) or a map (string keys), "
        "got a table that mixes both",
        path);
    return NULL;
  }
  size_t nk;
  char **keys = lg__config_sorted_keys(x, idx, path, "unexpected key", &nk);
  cJSON *obj = cJSON_CreateObject();
  for (size_t i = 0; obj != NULL && i < nk; i++) {
    snprintf(kp, sizeof kp, "%s.%s", path, keys[i]);
    lua_getfield(L, idx, keys[i]);
    cJSON *item = lg__config_to_json(x, lua_gettop(L), kp, depth + 1);
    lua_pop(L, 1);
    if (item == NULL) {
      cJSON_Delete(obj);
      obj = NULL;
      break;
    }
    cJSON_AddItemToObject(obj, keys[i], item);
  }
  lg_util_strv_free(keys, nk);
  return obj;
}

cJSON *lg__config_to_json(ctx_t *x, int idx, const char *path, int depth) {
  lua_State *L = x->L;
  if (depth > PARAMS_MAX_DEPTH) {
    lg__config_err_add(x, "%s: nested more than %d levels deep", path,
                       PARAMS_MAX_DEPTH);
    return NULL;
  }
  switch (lua_type(L, idx)) {
  case LUA_TBOOLEAN:
    return cJSON_CreateBool(lua_toboolean(L, idx));
  case LUA_TNUMBER: {
    double d = lua_tonumber(L, idx);
    if (!isfinite(d)) {
      lg__config_err_add(x, "%s: expected a finite number, got %g", path, d);
      return NULL;
    }
    /* cJSON would print 1e15 as "1e+15"; integers stay integers. */
    if (d == floor(d) && d >= -9223372036854775808.0 &&
        d < 9223372036854775808.0) {
      char buf[32];
      snprintf(buf, sizeof buf, "%lld", (long long)d);
      return cJSON_CreateRaw(buf);
    }
    return cJSON_CreateNumber(d);
  }
  case LUA_TSTRING:
    return cJSON_CreateString(lua_tostring(L, idx));
  case LUA_TTABLE:
    return table_to_json(x, idx, path, depth);
  default:
    lg__config_err_add(
        x, "%s: expected a string, number, boolean or table, got %s", path,
        lua_typename(L, lua_type(L, idx)));
    return NULL;
  }
}
