/* Which files are read: the source's include/exclude filters over the
 * pod's metadata, the allowed streams, and the user's select(), which
 * picks the pipelines (run in the config's Lua state, bounded). */
#include "sources/kubernetes/lg_k8s_internal.h"

int lg_k8s_regex_any(void *const *res, size_t n, const char *name) {
  if (name == NULL)
    name = "";
  size_t len = strlen(name);
  for (size_t i = 0; i < n; i++) {
    pcre2_match_data *md =
        pcre2_match_data_create_from_pattern((pcre2_code *)res[i], NULL);
    if (md == NULL)
      continue;
    int rc = pcre2_match((pcre2_code *)res[i], (PCRE2_SPTR)name, len, 0,
                         PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, NULL);
    pcre2_match_data_free(md);
    if (rc >= 0)
      return 1;
  }
  return 0;
}

/* Include: every key given matches (a list: any of its regexes; labels:
 * every pair). A pod the API has not described passes label checks. On a
 * miss, says why in `why` (`n` bytes). */
static int included(const lg_k8s_filter_t *f, const lg_k8s_path_t *pi,
                    const lg_k8s_pod_t *p, char *why, size_t n) {
  if (!f->set)
    return 1;
  if (f->nnamespaces &&
      !lg_k8s_regex_any(f->namespaces, f->nnamespaces, pi->ns)) {
    snprintf(why, n, "namespace not in include.namespaces");
    return 0;
  }
  if (f->npods && !lg_k8s_regex_any(f->pods, f->npods, pi->pod)) {
    snprintf(why, n, "pod name not in include.pods");
    return 0;
  }
  if (f->ncontainers &&
      !lg_k8s_regex_any(f->containers, f->ncontainers, pi->container)) {
    snprintf(why, n, "container not in include.containers");
    return 0;
  }
  for (size_t i = 0; p != NULL && i < f->nlabels; i++) {
    const char *v = lg_k8s_pod_label(p, f->label_keys[i]);
    if (v == NULL || strcmp(v, f->label_vals[i]) != 0) {
      snprintf(why, n, "label %s is %s%s%s, include.labels wants \"%s\"",
               f->label_keys[i], v ? "\"" : "", v ? v : "absent", v ? "\"" : "",
               f->label_vals[i]);
      return 0;
    }
  }
  return 1;
}

/* Exclude: any key given matches (labels: any pair). On a match, says why
 * in `why` (`n` bytes). */
int lg__k8s_excluded(const lg_k8s_filter_t *f, const lg_k8s_path_t *pi,
                     const lg_k8s_pod_t *p, char *why, size_t n) {
  if (p != NULL) {
    const char *a = lg_k8s_pod_annotation(p, "lugger.io/exclude");
    if (a != NULL && strcmp(a, "true") == 0) {
      snprintf(why, n, "annotation lugger.io/exclude is \"true\"");
      return 1;
    }
  }
  if (!f->set)
    return 0;
  if (f->nnamespaces &&
      lg_k8s_regex_any(f->namespaces, f->nnamespaces, pi->ns)) {
    snprintf(why, n, "namespace in exclude.namespaces");
    return 1;
  }
  if (f->npods && lg_k8s_regex_any(f->pods, f->npods, pi->pod)) {
    snprintf(why, n, "pod name in exclude.pods");
    return 1;
  }
  if (f->ncontainers &&
      lg_k8s_regex_any(f->containers, f->ncontainers, pi->container)) {
    snprintf(why, n, "container in exclude.containers");
    return 1;
  }
  for (size_t i = 0; p != NULL && i < f->nlabels; i++) {
    const char *v = lg_k8s_pod_label(p, f->label_keys[i]);
    if (v != NULL && strcmp(v, f->label_vals[i]) == 0) {
      snprintf(why, n, "label %s is \"%s\" (exclude.labels)", f->label_keys[i],
               v);
      return 1;
    }
  }
  return 0;
}

/* True when the source's filters keep the file from being read; `why`
 * (`n` bytes) then says which. */
int lg__k8s_filtered_out(const lg_k8s_t *k, const lg_k8s_path_t *pi,
                         const lg_k8s_pod_t *p, char *why, size_t n) {
  return !included(&k->kc->include, pi, p, why, n) ||
         lg__k8s_excluded(&k->kc->exclude, pi, p, why, n);
}

static unsigned allowed_streams(const lg_k8s_conf_t *kc) {
  unsigned s = kc->include.streams ? kc->include.streams
                                   : (LG_K8S_STDOUT | LG_K8S_STDERR);
  return s & ~kc->exclude.streams;
}

void lg_k8s_filter_batch(const lg_k8s_t *k, lg_batch_t *b) {
  unsigned allow = allowed_streams(k->kc);
  if (allow == (LG_K8S_STDOUT | LG_K8S_STDERR))
    return;
  for (uint32_t i = 0; i < b->n; i++) {
    lg_rec_t *r = &b->recs[i];
    if (!(r->flags & LG_REC_HAS_STREAM))
      continue;
    unsigned s = (r->flags & LG_REC_STDERR) ? LG_K8S_STDERR : LG_K8S_STDOUT;
    if (!(allow & s))
      r->flags |= LG_REC_DROPPED;
  }
}

static int select_calls;

static void select_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  if (++select_calls > SELECT_HOOK_MAX)
    luaL_error(L, "select() ran too long (an endless loop?)");
}

static int pipeline_index(const lg_config_t *c, const char *name) {
  for (size_t i = 0; i < c->npipelines; i++)
    if (strcmp(c->pipelines[i].name, name) == 0)
      return (int)i;
  return -1;
}

/* Returns the pipeline for the file, -1 to skip it; further pipelines of a
 * list go to *more as bits. */
int lg__k8s_run_select(lg_k8s_t *k, const char *path, const lg_meta_t *m,
                       uint64_t *more) {
  *more = 0;
  lua_State *L = k->conf->lua;
  if (L == NULL || k->kc->select_ref < 0)
    return k->pipeline;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, k->kc->select_ref);
  lua_createtable(L, 0, (int)m->n + 1);
  for (uint32_t i = 0; i < m->n; i++) {
    const lg_meta_kv_t *e = &m->kv[i];
    lua_pushlstring(L, e->key, e->key_len);
    if (e->str != NULL)
      lua_pushlstring(L, e->str, e->str_len);
    else
      lua_pushnumber(L, (lua_Number)e->num);
    lua_rawset(L, -3);
  }
  lua_pushstring(L, k->name);
  lua_setfield(L, -2, "source");
  select_calls = 0;
  lua_sethook(L, select_hook, LUA_MASKCOUNT, SELECT_HOOK_EVERY);
  int rc = lua_pcall(L, 1, 1, 0);
  lua_sethook(L, NULL, 0, 0);
  int pipe = k->pipeline;
  if (rc != 0) {
    lg_log_error(k->component, "%s: select(): %s; using the default pipeline",
                 path, lua_tostring(L, -1));
  } else if (lua_isnil(L, -1)) {
    /* the source's own pipeline */
  } else if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
    pipe = -1;
  } else {
    /* A name, or a list of names: the file feeds each of them. */
    int tbl = lua_istable(L, -1);
    size_t n = tbl ? lua_objlen(L, -1) : 1;
    int first = -1;
    for (size_t j = 1; j <= n; j++) {
      if (tbl)
        lua_rawgeti(L, -1, (int)j);
      const char *name =
          lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
      int i = name ? pipeline_index(k->conf, name) : -1;
      if (i < 0 || i >= 64)
        lg_log_error(k->component,
                     "%s: select() returned %s%s%s, not a pipeline name", path,
                     name ? "'" : "a ", name ? name : "non-string",
                     name ? "'" : "");
      else if (first < 0)
        first = i;
      else if (i != first)
        *more |= 1ull << i;
      if (tbl)
        lua_pop(L, 1);
    }
    if (first >= 0)
      pipe = first;
    else if (n > 0)
      lg_log_error(k->component, "%s: using the default pipeline", path);
    else
      pipe = -1; /* an empty list: no pipeline */
  }
  lua_settop(L, top);
  lg_log_debug(k->component, "%s: select() chose pipeline %s", path,
               pipe >= 0 ? k->conf->pipelines[pipe].name : "(none)");
  return pipe;
}
