/* Sources in the config: the dispatch on a source's type (each type
 * parses its own options, through lg_config_parse.h), and that API. */
#include "config/lg_config_internal.h"

char **lg__config_copy_strv(ctx_t *x, const lg_optval_t *v, int resolve,
                            size_t *n) {
  *n = 0;
  if (v->n == 0)
    return NULL;
  char **out = calloc(v->n, sizeof *out);
  if (out == NULL) {
    lg__config_err_add(x, "out of memory");
    return NULL;
  }
  for (size_t i = 0; i < v->n; i++) {
    out[i] = resolve ? lg__config_resolve_path(x, v->vals[i])
                     : lg__config_xstrdup(x, v->vals[i]);
    if (out[i] == NULL)
      break;
    *n = i + 1;
  }
  return out;
}

/* A source or output entry: the value on the stack top must be a table
 * with a string `type`. Returns the type (pushed on the stack, so valid
 * until the caller pops it) and sets *tbl to the table's stack index; or
 * reports the problem at `path` and returns NULL. */
const char *lg__config_entry_type(ctx_t *x, const char *path, int *tbl) {
  lua_State *L = x->L;
  if (lua_type(L, -1) != LUA_TTABLE) {
    lg__config_err_add(x, "%s: expected a table, got %s", path,
                       lua_typename(L, lua_type(L, -1)));
    return NULL;
  }
  *tbl = lua_gettop(L);
  lua_getfield(L, *tbl, "type");
  if (lua_isnil(L, -1)) {
    /* Nothing else of the entry is read without its type, so a typo of
     * the key ("tpye") would go unnamed: name it here. */
    static const char *const type_key[] = {"type", NULL};
    char *typo = NULL;
    lua_pushnil(L);
    while (lua_next(L, *tbl) != 0) {
      lua_pop(L, 1);
      if (typo == NULL && lua_type(L, -1) == LUA_TSTRING &&
          lg_opt_closest_name(type_key, lua_tostring(L, -1)) != NULL)
        typo = lg__config_xstrdup(x, lua_tostring(L, -1));
    }
    if (typo != NULL)
      lg__config_err_add(x, "%s.type: required key missing (is '%s' a typo?)",
                         path, typo);
    else
      lg__config_err_add(x, "%s.type: required key missing", path);
    free(typo);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) {
    lg__config_err_add(x, "%s.type: expected a string, got %s", path,
                       lua_typename(L, lua_type(L, -1)));
    return NULL;
  }
  return lua_tostring(L, -1);
}

void lg__config_load_source(ctx_t *x, const char *name, const char *path,
                            size_t i, void *ud) {
  lg_conf_source_t *s = &x->c->sources[i];
  (void)ud;
  s->name = lg__config_xstrdup(x, name);
  s->pipeline = -1;
  int tbl;
  const char *type = lg__config_entry_type(x, path, &tbl);
  if (type == NULL)
    return;
  s->type = lg__config_xstrdup(x, type);
  const lg_conf_source_type_t *st = lg_config_source_type(type);
  if (st == NULL) {
    char known[256];
    lg_config_source_type_names(known, sizeof known);
    lg__config_err_add(x, "%s.type: unknown source type '%s' (known: %s)", path,
                       type, known);
    return;
  }
  s->stype = st;
  st->parse(x, s, path, tbl);
}

/* ---- lg_config_parse.h: the load, as a source type's parse sees it ---- */

lua_State *lg_conf_parse_lua(lg_conf_parse_t *p) { return p->L; }

void lg_conf_parse_keep_lua(lg_conf_parse_t *p) { p->keep_lua = 1; }

void lg_conf_parse_error(lg_conf_parse_t *p, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  lg__config_err_add(p, "%s", buf);
}

size_t lg_conf_parse_options(lg_conf_parse_t *p, int tbl, const char *path,
                             const lg_option_t *opts, lg_optval_t *vals,
                             const char *const *extra) {
  return lg__config_parse_opts(p, tbl, path, opts, vals, extra);
}

void lg_conf_parse_multiline(lg_conf_parse_t *x, const char *path, int tbl,
                             struct lg_ml_conf **out) {
  char mp[600], err[4096];
  snprintf(mp, sizeof mp, "%s.multiline", path);
  lua_getfield(x->L, tbl, "multiline");
  if (lg_ml_conf_parse_lua(x->L, -1, mp, out, err, sizeof err) < 0) {
    for (char *line = err, *nl; line != NULL && *line; line = nl) {
      nl = strchr(line, '\n');
      if (nl != NULL)
        *nl++ = '\0';
      lg__config_err_add(x, "%s", line);
    }
  }
  lua_pop(x->L, 1);
}

char *lg_conf_parse_strdup(lg_conf_parse_t *p, const char *s) {
  return lg__config_xstrdup(p, s);
}

char *lg_conf_parse_resolve(lg_conf_parse_t *p, const char *path) {
  return lg__config_resolve_path(p, path);
}

char **lg_conf_parse_strv(lg_conf_parse_t *p, const lg_optval_t *v, int resolve,
                          size_t *n) {
  return lg__config_copy_strv(p, v, resolve, n);
}

char **lg_conf_parse_keys(lg_conf_parse_t *p, int tbl, const char *path,
                          const char *what, size_t *n) {
  return lg__config_sorted_keys(p, tbl, path, what, n);
}
