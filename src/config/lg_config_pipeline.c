/* Pipelines in the config: their sources, scripts (loaded and compiled
 * with their params) and outputs. */
#include "config/lg_config_internal.h"

static void load_script(ctx_t *x, const char *path, lg_conf_script_t *sc) {
  lua_State *L = x->L;
  int t = lua_type(L, -1);
  const char *file = NULL;
  if (t == LUA_TSTRING) {
    file = lua_tostring(L, -1);
    sc->params_json = lg__config_xstrdup(x, "{}");
  } else if (t == LUA_TTABLE) {
    int tbl = lua_gettop(L);
    size_t nk;
    char **keys =
        lg__config_sorted_keys(x, tbl, path, "unexpected list item", &nk);
    /* Fluent Bit filter options, under Fluent Bit's own names, and
     * lugger's few for such filters; they go to the Lua runtime as one
     * JSON object (lua/lugger/fluentbit.lua). */
    static const char *const fb_opts[] = {"time_as_table",   "type_int_key",
                                          "type_array_key",  "enable_flb_null",
                                          "protected_mode",  "tag",
                                          "lugger_metadata", "getenv",
                                          "package_path",    NULL};
    lua_getfield(L, tbl, "compat");
    int has_compat = !lua_isnil(L, -1);
    if (has_compat) {
      if (lua_type(L, -1) != LUA_TSTRING ||
          strcmp(lua_tostring(L, -1), "fluent-bit") != 0)
        lg__config_err_add(x, "%s.compat: expected \"fluent-bit\"", path);
      else
        sc->compat = lg__config_xstrdup(x, "fluent-bit");
    }
    lua_pop(L, 1);
    lua_getfield(L, tbl, "call");
    if (lua_type(L, -1) == LUA_TSTRING)
      sc->call = lg__config_xstrdup(x, lua_tostring(L, -1));
    else if (!lua_isnil(L, -1))
      lg__config_err_add(x, "%s.call: expected a string, got %s", path,
                         lua_typename(L, lua_type(L, -1)));
    else if (has_compat)
      lg__config_err_add(
          x, "%s.call: required key missing (compat = \"fluent-bit\")", path);
    lua_pop(L, 1);
    cJSON *opts = has_compat ? cJSON_CreateObject() : NULL;
    for (size_t k = 0; k < nk; k++) {
      int fb = 0;
      for (int o = 0; fb_opts[o] != NULL; o++)
        fb |= strcmp(keys[k], fb_opts[o]) == 0;
      if (fb && has_compat) {
        lua_getfield(L, tbl, keys[k]);
        int lt = lua_type(L, -1);
        if (lt == LUA_TBOOLEAN)
          cJSON_AddBoolToObject(opts, keys[k], lua_toboolean(L, -1));
        else if (lt == LUA_TSTRING || lt == LUA_TNUMBER)
          cJSON_AddStringToObject(opts, keys[k], lua_tostring(L, -1));
        else
          lg__config_err_add(x, "%s.%s: expected a string or boolean, got %s",
                             path, keys[k], lua_typename(L, lt));
        lua_pop(L, 1);
      } else if (strcmp(keys[k], "path") != 0 &&
                 strcmp(keys[k], "params") != 0 &&
                 strcmp(keys[k], "compat") != 0 &&
                 strcmp(keys[k], "call") != 0) {
        const char *names[32] = {"path", "params", "compat", "call"};
        size_t n = 4;
        for (int o = 0; fb_opts[o] != NULL && n < 31; o++)
          names[n++] = fb_opts[o];
        names[n] = NULL;
        const char *near = fb ? NULL : lg_opt_closest_name(names, keys[k]);
        if (near != NULL)
          lg__config_err_add(x, "%s.%s: unknown key (did you mean %s?)", path,
                             keys[k], near);
        else
          lg__config_err_add(
              x, "%s.%s: unknown key%s", path, keys[k],
              fb ? " (a Fluent Bit option: needs compat = \"fluent-bit\")"
                 : "");
      }
    }
    if (opts != NULL) {
      char *text = cJSON_PrintUnformatted(opts);
      if (text != NULL) {
        sc->compat_opts_json = lg__config_xstrdup(x, text);
        cJSON_free(text);
      }
      cJSON_Delete(opts);
    }
    lg_util_strv_free(keys, nk);
    lua_getfield(L, tbl, "params");
    if (lua_isnil(L, -1)) {
      sc->params_json = lg__config_xstrdup(x, "{}");
    } else if (lua_type(L, -1) != LUA_TTABLE) {
      char kp[512];
      snprintf(kp, sizeof kp, "%s.params", path);
      lg__config_err_add(x, "%s: expected a table, got %s", kp,
                         lua_typename(L, lua_type(L, -1)));
    } else {
      char kp[512];
      snprintf(kp, sizeof kp, "%s.params", path);
      cJSON *j = lg__config_to_json(x, lua_gettop(L), kp, 0);
      if (j != NULL) {
        char *text = cJSON_PrintUnformatted(j);
        if (text != NULL) {
          sc->params_json = lg__config_xstrdup(x, text);
          cJSON_free(text);
        } else {
          lg__config_err_add(x, "%s: out of memory", kp);
        }
        cJSON_Delete(j);
      }
    }
    lua_pop(L, 1);
    lua_getfield(L, tbl, "path");
    if (lua_isnil(L, -1)) {
      lg__config_err_add(x, "%s.path: required key missing", path);
      return;
    }
    if (lua_type(L, -1) != LUA_TSTRING) {
      lg__config_err_add(x, "%s.path: expected a string, got %s", path,
                         lua_typename(L, lua_type(L, -1)));
      return;
    }
    file = lua_tostring(L, -1);
  } else {
    lg__config_err_add(x,
                       "%s: expected a script path or a table { path = ..., "
                       "params = {...} }, got %s",
                       path, lua_typename(L, t));
    return;
  }
  if (file[0] == '\0') {
    lg__config_err_add(x, "%s: the script path is empty", path);
    return;
  }
  sc->path = lg__config_resolve_path(x, file);
  if (sc->path == NULL)
    return;
  struct stat st;
  if (stat(sc->path, &st) < 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      lg__config_err_add(x, "%s: no such file: %s", path, sc->path);
    else
      lg__config_err_add(x, "%s: %s: %s", path, sc->path, strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    lg__config_err_add(x, "%s: not a regular file: %s", path, sc->path);
  } else if (access(sc->path, R_OK) < 0) {
    lg__config_err_add(x, "%s: %s: %s", path, sc->path, strerror(errno));
  }
}

/* The list of names (or one name) on top of the stack, resolved to
 * indexes of sources or outputs (`what`); unknown and repeated names are
 * errors and left out. */
static int *name_list(ctx_t *x, const char *path, const char *what,
                      int pipeline, size_t *n_out) {
  lua_State *L = x->L;
  static const lg_option_t list_opt = {.name = "list", .type = LG_OPT_STRLIST};
  lg_optval_t v;
  char err[1024];
  *n_out = 0;
  if (lua_isnil(L, -1)) {
    lg__config_err_add(x, "%s: required key missing", path);
    return NULL;
  }
  if (lg_opt_parse_lua(L, -1, &list_opt, path, &v, err, sizeof err) < 0) {
    lg__config_err_add(x, "%s", err);
    return NULL;
  }
  if (v.n == 0) {
    lg__config_err_add(x, "%s: needs at least one %s", path, what);
    lg_optval_free(&v);
    return NULL;
  }
  int *idx = calloc(v.n, sizeof *idx);
  if (idx == NULL) {
    lg__config_err_add(x, "out of memory");
    lg_optval_free(&v);
    return NULL;
  }
  size_t k = 0;
  for (size_t i = 0; i < v.n; i++) {
    char kp[512];
    snprintf(kp, sizeof kp, "%s[%zu]", path, i + 1);
    int found = -1;
    if (strcmp(what, "source") == 0) {
      for (size_t j = 0; j < x->c->nsources; j++)
        if (x->c->sources[j].name != NULL &&
            strcmp(x->c->sources[j].name, v.vals[i]) == 0)
          found = (int)j;
    } else {
      found = lg_config_output_index(x->c, v.vals[i]);
    }
    if (found < 0) {
      lg__config_err_add(x, "%s: unknown %s '%s'", kp, what, v.vals[i]);
      continue;
    }
    int dup = 0;
    for (size_t j = 0; j < k; j++)
      dup |= idx[j] == found;
    if (dup) {
      lg__config_err_add(x, "%s: %s '%s' is listed twice", kp, what, v.vals[i]);
      continue;
    }
    if (strcmp(what, "source") == 0) {
      lg_conf_source_t *s = &x->c->sources[found];
      /* A source that selects (a kubernetes source's select()) may feed
       * several pipelines: the first is its default, it picks one per
       * file. */
      int multi = lg__config_source_selects(s);
      if (multi && s->pipeline >= 0) {
        idx[k++] = found;
        continue;
      }
      if (s->pipeline >= 0) {
        lg__config_err_add(
            x,
            "%s: source '%s' already feeds pipeline '%s' (a source "
            "can feed only one pipeline)",
            kp, s->name, x->c->pipelines[s->pipeline].name);
        continue;
      }
      s->pipeline = pipeline;
    }
    idx[k++] = found;
  }
  lg_optval_free(&v);
  *n_out = k;
  return idx;
}

void lg__config_load_pipeline(ctx_t *x, const char *name, const char *path,
                              size_t pi, void *ud) {
  lua_State *L = x->L;
  lg_conf_pipeline_t *p = &x->c->pipelines[pi];
  (void)ud;
  p->name = lg__config_xstrdup(x, name);
  if (lua_type(L, -1) != LUA_TTABLE) {
    lg__config_err_add(x, "%s: expected a table, got %s", path,
                       lua_typename(L, lua_type(L, -1)));
    return;
  }
  int tbl = lua_gettop(L);
  size_t nk;
  char **keys =
      lg__config_sorted_keys(x, tbl, path, "unexpected list item", &nk);
  static const char *const pipeline_keys[] = {"sources", "scripts", "outputs",
                                              "stateless", NULL};
  for (size_t k = 0; k < nk; k++) {
    if (strcmp(keys[k], "sources") != 0 && strcmp(keys[k], "scripts") != 0 &&
        strcmp(keys[k], "outputs") != 0 && strcmp(keys[k], "stateless") != 0) {
      const char *near = lg_opt_closest_name(pipeline_keys, keys[k]);
      if (near != NULL)
        lg__config_err_add(x, "%s.%s: unknown key (did you mean %s?)", path,
                           keys[k], near);
      else
        lg__config_err_add(x, "%s.%s: unknown key", path, keys[k]);
    }
  }
  lg_util_strv_free(keys, nk);

  char kp[512];
  snprintf(kp, sizeof kp, "%s.sources", path);
  lua_getfield(L, tbl, "sources");
  p->sources = name_list(x, kp, "source", (int)pi, &p->nsources);
  lua_pop(L, 1);

  snprintf(kp, sizeof kp, "%s.scripts", path);
  lua_getfield(L, tbl, "scripts");
  int st = lua_type(L, -1);
  if (st == LUA_TSTRING) {
    p->scripts = calloc(1, sizeof *p->scripts);
    if (p->scripts != NULL) {
      p->nscripts = 1;
      char ep[600];
      snprintf(ep, sizeof ep, "%s[1]", kp);
      load_script(x, ep, &p->scripts[0]);
    }
  } else if (st == LUA_TTABLE) {
    int lt = lua_gettop(L);
    size_t n = lua_objlen(L, lt), count = 0;
    lua_pushnil(L);
    while (lua_next(L, lt) != 0) {
      lua_pop(L, 1);
      count++;
    }
    if (count != n) {
      lg__config_err_add(
          x,
          "%s: expected a list of scripts, got a table with other "
          "keys",
          kp);
    } else if (n > 0) {
      p->scripts = calloc(n, sizeof *p->scripts);
      if (p->scripts == NULL) {
        lg__config_err_add(x, "out of memory");
      } else {
        p->nscripts = n;
        for (size_t i = 0; i < n; i++) {
          char ep[600];
          snprintf(ep, sizeof ep, "%s[%zu]", kp, i + 1);
          lua_rawgeti(L, lt, (int)i + 1);
          load_script(x, ep, &p->scripts[i]);
          lua_settop(L, lt);
        }
      }
    }
  } else if (st != LUA_TNIL) {
    lg__config_err_add(x, "%s: expected a list of scripts, got %s", kp,
                       lua_typename(L, st));
  }
  lua_settop(L, tbl);

  snprintf(kp, sizeof kp, "%s.outputs", path);
  lua_getfield(L, tbl, "outputs");
  p->outputs = name_list(x, kp, "output", (int)pi, &p->noutputs);
  lua_pop(L, 1);

  lua_getfield(L, tbl, "stateless");
  if (lua_type(L, -1) == LUA_TBOOLEAN)
    p->stateless = lua_toboolean(L, -1);
  else if (lua_type(L, -1) != LUA_TNIL)
    lg__config_err_add(x, "%s.stateless: expected a boolean, got %s", path,
                       lua_typename(L, lua_type(L, -1)));
  lua_pop(L, 1);
}
