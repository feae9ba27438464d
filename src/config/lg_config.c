/* Loads the configuration (DESIGN.md, "Configuration"): evaluates the file
 * (lg_config_lua.c), walks the table it returns into an lg_config_t, and
 * frees it. Settings and outputs are read here. The overview of the
 * loader is in lg_config_internal.h. */
#include "config/lg_config_internal.h"

#include "core/lg_cgroup.h"
#include "core/lg_fingerprint.h"

/* "host:port", "[v6]:port" or ":port" with a port from 1 to 65535. */
static int check_listen(const lg_optval_t *v, char *err, size_t errlen) {
  const char *colon = v->s != NULL ? strrchr(v->s, ':') : NULL;
  char *end = NULL;
  long port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
  if (colon == NULL || end == colon + 1 || *end != '\0' || port < 1 ||
      port > 65535) {
    snprintf(err, errlen,
             "expected a listen address like \"0.0.0.0:2020\" or \":2020\", "
             "got \"%s\"",
             v->s != NULL ? v->s : "");
    return -EINVAL;
  }
  return 0;
}

static int check_workers(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i < 1 || v->i > 1024) {
    snprintf(err, errlen, "must be from 1 to 1024, got %lld", (long long)v->i);
    return -EINVAL;
  }
  return 0;
}

enum {
  S_STATE_DIR,
  S_MEMORY_BUDGET,
  S_WORKERS,
  S_HTTP,
  S_CHECKPOINT_INTERVAL,
  S_RESCAN_INTERVAL,
  S_CLOSE_INACTIVE,
  S_SHUTDOWN_TIMEOUT,
  S_DEAD_LETTER,
  S_SCRIPT_TIMEOUT,
  S_SCRIPT_MEMORY,
  S_COUNT
};

/* The Lua runtime alone takes about 250 KiB of a state (lugger's modules,
 * the sandbox); below that no state can be made at all, and LuaJIT
 * aborted the process when the first allocation of its state failed. */
#define SCRIPT_MEMORY_MIN (1u << 20)

static int check_script_memory(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i < (int64_t)SCRIPT_MEMORY_MIN) {
    snprintf(err, errlen,
             "must be at least 1MiB (the Lua runtime alone takes about "
             "250 KiB), got %lld bytes",
             (long long)v->i);
    return -EINVAL;
  }
  return 0;
}

static const lg_option_t settings_options[] = {
    [S_STATE_DIR] = {.name = "state_dir",
                     .type = LG_OPT_PATH,
                     .def = "/var/lib/lugger",
                     .check = lg_opt_check_nonempty,
                     .doc = "Directory for checkpoints and the default "
                            "dead-letter file; LUGGER_STATE_DIR overrides "
                            "it."},
    [S_MEMORY_BUDGET] = {.name = "memory_budget",
                         .type = LG_OPT_BYTES,
                         .check = lg_opt_check_positive,
                         .doc = "Bytes read but not yet delivered; reading "
                                "pauses at this bound. Default: 8 MiB per "
                                "worker, at least 32 MiB."},
    [S_WORKERS] = {.name = "workers",
                   .type = LG_OPT_INT,
                   .check = check_workers,
                   .doc = "Lua worker threads; default: the number of "
                          "CPUs."},
    [S_HTTP] = {.name = "http",
                .type = LG_OPT_STRING,
                .check = check_listen,
                .doc = "Listen address for metrics and health checks, "
                       "e.g. \"0.0.0.0:2020\"; off when unset."},
    [S_CHECKPOINT_INTERVAL] = {.name = "checkpoint_interval",
                               .type = LG_OPT_DURATION,
                               .def = "1s",
                               .check = lg_opt_check_positive,
                               .doc = "How often checkpoints are written."},
    [S_RESCAN_INTERVAL] = {.name = "rescan_interval",
                           .type = LG_OPT_DURATION,
                           .def = "5s",
                           .check = lg_opt_check_positive,
                           .doc = "How often sources look for files that "
                                  "inotify missed."},
    [S_CLOSE_INACTIVE] = {.name = "close_inactive",
                          .type = LG_OPT_DURATION,
                          .def = "5m",
                          .doc = "A log file with no new bytes for this long "
                                 "is closed (its checkpoint kept) and reopened "
                                 "when it changes; 0 keeps files open. Files "
                                 "are also closed, idlest first, when the "
                                 "descriptor limit is reached."},
    [S_SHUTDOWN_TIMEOUT] = {.name = "shutdown_timeout",
                            .type = LG_OPT_DURATION,
                            .def = "10s",
                            .doc = "Bound on draining in-flight records on "
                                   "SIGTERM."},
    [S_DEAD_LETTER] = {.name = "dead_letter",
                       .type = LG_OPT_STRING,
                       .doc = "Output for records that failed; default: "
                              "<state_dir>/dead-letter.jsonl."},
    [S_SCRIPT_TIMEOUT] = {.name = "script_timeout",
                          .type = LG_OPT_DURATION,
                          .def = "1s",
                          .doc = "A script that makes no progress on one "
                                 "record for this much CPU time is "
                                 "interrupted (the record fails); 0 turns "
                                 "the watchdog off."},
    [S_SCRIPT_MEMORY] = {.name = "script_memory",
                         .type = LG_OPT_BYTES,
                         .def = "64MiB",
                         .check = check_script_memory,
                         .doc = "Memory cap of each worker's Lua state; an "
                                "allocation beyond it fails the record being "
                                "processed."},
    [S_COUNT] = {.name = NULL},
};

const lg_option_t *lg_config_settings_options(void) { return settings_options; }

static void load_settings(ctx_t *x, int tbl) {
  lg_config_t *c = x->c;
  lg_optval_t v[S_COUNT];
  memset(v, 0, sizeof v);
  if (tbl != 0) {
    lg__config_parse_opts(x, tbl, "settings", settings_options, v, NULL);
  } else {
    char err[256];
    for (int i = 0; i < S_COUNT; i++)
      lg_opt_set_default(&settings_options[i], &v[i], err, sizeof err);
  }
  const char *env = getenv("LUGGER_STATE_DIR");
  if (env != NULL && env[0] != '\0')
    c->settings.state_dir = lg__config_xstrdup(x, env);
  else if (v[S_STATE_DIR].s != NULL)
    c->settings.state_dir = lg__config_xstrdup(x, v[S_STATE_DIR].s);
  if (v[S_WORKERS].set) {
    c->settings.workers = (int)v[S_WORKERS].i;
  } else {
    /* One per CPU the process may use: a pod's CPU limit or cpuset, not
     * the node's CPUs (lg_cgroup.h). */
    lg_cpus_info_t info;
    int n = lg_cpus_available(&info);
    c->settings.workers = n <= 1024 ? n : 1024;
    c->settings.workers_by = info.by;
  }
  /* The default budget. A larger one is not faster: reading stays ahead
   * of the workers either way, and a bigger backlog of batches only costs
   * page faults and cache misses (scripts/bench --only-budget: 32 MiB was
   * as fast as 256 MiB, or faster, at a fifth of the RSS). Each worker
   * needs a few batches in flight (one it processes, one queued, one the
   * output writes; ~3 MiB charged per 1 MiB batch), hence per worker. */
  if (v[S_MEMORY_BUDGET].set) {
    c->settings.memory_budget = (uint64_t)v[S_MEMORY_BUDGET].i;
  } else {
    uint64_t per = (uint64_t)8 << 20, floor = (uint64_t)32 << 20;
    uint64_t b = per * (uint64_t)c->settings.workers;
    c->settings.memory_budget = b > floor ? b : floor;
  }
  if (v[S_HTTP].s != NULL)
    c->settings.http = lg__config_xstrdup(x, v[S_HTTP].s);
  c->settings.checkpoint_interval_ms = (uint64_t)v[S_CHECKPOINT_INTERVAL].i;
  c->settings.rescan_interval_ms = (uint64_t)v[S_RESCAN_INTERVAL].i;
  c->settings.close_inactive_ms = (uint64_t)v[S_CLOSE_INACTIVE].i;
  c->settings.shutdown_timeout_ms = (uint64_t)v[S_SHUTDOWN_TIMEOUT].i;
  if (v[S_DEAD_LETTER].s != NULL)
    c->settings.dead_letter = lg__config_xstrdup(x, v[S_DEAD_LETTER].s);
  c->settings.script_timeout_ms = (uint64_t)v[S_SCRIPT_TIMEOUT].i;
  c->settings.script_memory = (uint64_t)v[S_SCRIPT_MEMORY].i;
  for (int i = 0; i < S_COUNT; i++)
    lg_optval_free(&v[i]);
}

static void known_output_types(char *out, size_t outlen) {
  size_t o = 0;
  out[0] = '\0';
  for (size_t i = 0; lg_output_types[i] != NULL; i++) {
    int w = snprintf(out + o, outlen - o, "%s%s", i ? ", " : "",
                     lg_output_types[i]->name);
    if (w < 0 || (size_t)w >= outlen - o)
      break;
    o += (size_t)w;
  }
}

static void load_output(ctx_t *x, const char *name, const char *path, size_t i,
                        void *ud) {
  lg_conf_output_t *out = &x->c->outputs[i];
  (void)ud;
  out->name = lg__config_xstrdup(x, name);
  int tbl;
  const char *type = lg__config_entry_type(x, path, &tbl);
  if (type == NULL)
    return;
  out->type = lg__config_xstrdup(x, type);
  out->vt = lg_output_type_find(type);
  if (out->vt == NULL) {
    char known[256];
    known_output_types(known, sizeof known);
    lg__config_err_add(x, "%s.type: unknown output type '%s' (known: %s)", path,
                       type, known);
    return;
  }
  size_t nopts = 0;
  while (out->vt->options[nopts].name != NULL)
    nopts++;
  out->opts = calloc(nopts + 1, sizeof *out->opts);
  if (out->opts == NULL) {
    lg__config_err_add(x, "out of memory");
    return;
  }
  static const char *const extra[] = {"type", NULL};
  if (lg__config_parse_opts(x, tbl, path, out->vt->options, out->opts, extra) >
      0)
    return;
  /* Combinations of options the table cannot check (a kafka output
   * without a topic): found here, by `lugger check` and a reload too, and
   * not only when the output is created. */
  char err[1024];
  if (lg_output_check_conf(out, err, sizeof err) < 0)
    lg__config_err_add(x, "%s", err);
}

static int abs_paths(lg_config_t *c, const char *path) {
  if (path[0] == '/') {
    c->path = strdup(path);
  } else {
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd) == NULL)
      return -errno;
    while (path[0] == '.' && path[1] == '/')
      path += 2;
    size_t n = strlen(cwd) + strlen(path) + 2;
    c->path = malloc(n);
    if (c->path != NULL)
      snprintf(c->path, n, "%s%s%s", cwd,
               cwd[strlen(cwd) - 1] == '/' ? "" : "/", path);
  }
  if (c->path == NULL)
    return -ENOMEM;
  const char *slash = strrchr(c->path, '/');
  size_t dl = slash == c->path ? 1 : (size_t)(slash - c->path);
  c->dir = strndup(c->path, dl);
  return c->dir != NULL ? 0 : -ENOMEM;
}

/* The table at `top`.`key`, its stack index, or 0 when absent or wrong. */
static int section(ctx_t *x, int top, const char *key) {
  lua_State *L = x->L;
  lua_getfield(L, top, key);
  if (lua_type(L, -1) == LUA_TTABLE)
    return lua_gettop(L);
  if (!lua_isnil(L, -1))
    lg__config_err_add(x, "%s: expected a table, got %s", key,
                       lua_typename(L, lua_type(L, -1)));
  lua_pop(L, 1);
  return 0;
}

/* Number of key/value pairs in the table at stack index `t`. */
static size_t count_entries(lua_State *L, int t) {
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    lua_pop(L, 1);
    n++;
  }
  return n;
}
/* Frees what a loaded source holds (not the source itself). */
static void source_free(lg_conf_source_t *s) {
  free(s->name);
  free(s->type);
  if (s->stype != NULL && s->stype->free != NULL)
    s->stype->free(s->type_conf);
}

/* Adds a warning to the config being loaded (lg_config_t.warnings). */
__attribute__((format(printf, 2, 3))) static void
config_warn(ctx_t *x, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lg__config_msg_vadd(&x->c->warnings, &x->c->nwarnings, fmt, ap);
  va_end(ap);
}

static void walk(ctx_t *x, int top) {
  lua_State *L = x->L;
  lg_config_t *c = x->c;
  size_t nk;
  char **keys = lg__config_sorted_keys(x, top, "", "unexpected list item", &nk);
  for (size_t k = 0; k < nk; k++)
    if (strcmp(keys[k], "settings") != 0 && strcmp(keys[k], "sources") != 0 &&
        strcmp(keys[k], "pipelines") != 0 && strcmp(keys[k], "outputs") != 0)
      lg__config_err_add(
          x,
          "%s: unknown key (expected settings, sources, pipelines, "
          "outputs)",
          keys[k]);
  lg_util_strv_free(keys, nk);

  int t = section(x, top, "settings");
  load_settings(x, t);
  lua_settop(L, top);

  const char *named = "expected name = { ... } entries, got a list item";
  t = section(x, top, "sources");
  if (t != 0) {
    size_t n = count_entries(L, t);
    c->sources = calloc(n + 1, sizeof *c->sources);
    if (c->sources != NULL) {
      c->nsources = lg__config_each_entry(x, t, "sources", named, n,
                                          lg__config_load_source, NULL);
    }
  }
  if (c->nsources == 0)
    lg__config_err_add(x, "sources: no sources defined");
  lua_settop(L, top);

  t = section(x, top, "outputs");
  if (t != 0) {
    size_t n = count_entries(L, t);
    c->outputs = calloc(n + 1, sizeof *c->outputs);
    if (c->outputs != NULL) {
      c->noutputs = lg__config_each_entry(x, t, "outputs", named, MAX_OUTPUTS,
                                          load_output, NULL);
    }
  }
  if (c->noutputs == 0)
    lg__config_err_add(x, "outputs: no outputs defined");
  lua_settop(L, top);

  t = section(x, top, "pipelines");
  if (t != 0) {
    size_t n = count_entries(L, t);
    c->pipelines = calloc(n + 1, sizeof *c->pipelines);
    if (c->pipelines != NULL) {
      c->npipelines = lg__config_each_entry(x, t, "pipelines", named, n,
                                            lg__config_load_pipeline, NULL);
    }
  }
  if (c->npipelines == 0)
    lg__config_err_add(x, "pipelines: no pipelines defined");
  lua_settop(L, top);

  /* A source no pipeline reads would read records that go nowhere: it is
   * left out (not started), and said so. Pipelines name their sources, so
   * nothing refers to it by index. */
  size_t kept = 0;
  for (size_t i = 0; i < c->nsources; i++) {
    lg_conf_source_t *s = &c->sources[i];
    if (s->pipeline < 0 && c->npipelines > 0 && !lg__config_source_selects(s)) {
      config_warn(x, "sources.%s: not read by any pipeline; it is not started",
                  s->name);
      source_free(s);
      continue;
    }
    c->sources[kept++] = *s;
  }
  if (kept < c->nsources && kept == 0)
    lg__config_err_add(x, "sources: no source is read by a pipeline");
  c->nsources = kept;
  if (c->settings.dead_letter != NULL &&
      lg_config_output_index(c, c->settings.dead_letter) < 0)
    lg__config_err_add(x, "settings.dead_letter: unknown output '%s'",
                       c->settings.dead_letter);
}

int lg_config_load_ex(const char *path, unsigned flags, lg_config_t **out,
                      lg_config_errors_t *errs) {
  errs->msgs = NULL;
  errs->n = 0;
  *out = NULL;
  ctx_t x = {.errs = errs};
  lg_config_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return -ENOMEM;
  x.c = c;
  int rc = abs_paths(c, path);
  if (rc < 0) {
    lg__config_err_add(&x, "%s: %s", path, strerror(-rc));
    lg_config_destroy(c);
    return rc;
  }
  char *buf = NULL;
  size_t len = 0;
  rc = lg_util_read_file(c->path, 0, &buf, &len);
  if (rc < 0) {
    lg__config_err_add(&x, "%s: %s", c->path, strerror(-rc));
    lg_config_destroy(c);
    return rc;
  }
  c->text_hash = lg_fp_update(LG_FP_INIT, buf, len);
  lua_State *L = lg__config_new_state();
  if (L == NULL) {
    free(buf);
    lg__config_err_add(&x, "%s: cannot create a Lua state", c->path);
    lg_config_destroy(c);
    return -ENOMEM;
  }
  x.L = L;
  rc = lg__config_load_text(L, buf, len);
  free(buf);
  if (rc == 0) {
    lg__config_hook_ctx = &x;
    lua_sethook(L, lg__config_count_hook, LUA_MASKCOUNT, HOOK_EVERY);
    rc = lua_pcall(L, 0, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    lg__config_hook_ctx = NULL;
  }
  if (rc != 0) {
    const char *m = lua_tostring(L, -1);
    lg__config_add_lua_error(&x, "", m != NULL ? m : "error without a message",
                             c->path);
    lua_close(L);
    lg_config_destroy(c);
    return -EINVAL;
  }
  if (lua_type(L, -1) != LUA_TTABLE) {
    lg__config_err_add(&x, "%s: must return a table, got %s", c->path,
                       lua_typename(L, lua_type(L, -1)));
    lua_close(L);
    lg_config_destroy(c);
    return -EINVAL;
  }
  walk(&x, lua_gettop(L));
  if (x.keep_lua) {
    lua_settop(L, 0);
    c->lua = L;
  } else {
    lua_close(L);
  }
  if (errs->n > 0) {
    if (flags & LG_CONFIG_PARTIAL)
      *out = c;
    else
      lg_config_destroy(c);
    return -EINVAL;
  }
  *out = c;
  return 0;
}

int lg_config_compile_scripts(const lg_config_t *c, lg_config_errors_t *errs) {
  ctx_t x = {.errs = errs};
  size_t before = errs->n;
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    lg__config_err_add(&x, "cannot create a Lua state");
    return -ENOMEM;
  }
  x.L = L;
  for (size_t p = 0; p < c->npipelines; p++) {
    const lg_conf_pipeline_t *pl = &c->pipelines[p];
    for (size_t i = 0; i < pl->nscripts; i++) {
      const char *path = pl->scripts[i].path;
      char *src = NULL;
      size_t len = 0;
      /* Missing files were reported when the config was loaded. */
      if (path == NULL || lg_util_read_file(path, 0, &src, &len) < 0)
        continue;
      if (lg__config_load_text(L, src, len) != 0) {
        char prefix[600];
        snprintf(prefix, sizeof prefix, "pipelines.%s.scripts[%zu]: ", pl->name,
                 i + 1);
        lg__config_add_lua_error(&x, prefix, lua_tostring(L, -1), path);
      }
      lua_settop(L, 0);
      free(src);
    }
  }
  lua_close(L);
  return errs->n > before ? -EINVAL : 0;
}

int lg_config_load(const char *path, lg_config_t **out,
                   lg_config_errors_t *errs) {
  return lg_config_load_ex(path, 0, out, errs);
}

static void output_clear(lg_conf_output_t *o) {
  free(o->name);
  free(o->type);
  if (o->opts != NULL && o->vt != NULL)
    for (size_t k = 0; o->vt->options[k].name != NULL; k++)
      lg_optval_free(&o->opts[k]);
  free(o->opts);
}

lg_conf_output_t *lg_config_output_new(const char *name, const char *type,
                                       const char *const *kv, char *err,
                                       size_t errlen) {
  const lg_output_type_t *vt = lg_output_type_find(type);
  if (vt == NULL) {
    snprintf(err, errlen, "outputs.%s.type: unknown output type '%s'", name,
             type);
    return NULL;
  }
  for (size_t k = 0; kv != NULL && kv[k] != NULL; k += 2)
    if (lg_opt_find(vt->options, kv[k]) < 0 || kv[k + 1] == NULL) {
      snprintf(err, errlen, "outputs.%s.%s: unknown key", name, kv[k]);
      return NULL;
    }
  lg_conf_output_t *o = calloc(1, sizeof *o);
  size_t n = 0;
  while (vt->options[n].name != NULL)
    n++;
  if (o == NULL || (o->opts = calloc(n + 1, sizeof *o->opts)) == NULL ||
      (o->name = strdup(name)) == NULL || (o->type = strdup(type)) == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", name);
    if (o != NULL) {
      free(o->opts);
      free(o->name);
      free(o);
    }
    return NULL;
  }
  o->vt = vt;
  for (size_t i = 0; i < n; i++) {
    /* A given value is parsed as the option's default would be. */
    lg_option_t opt = vt->options[i];
    int given = 0;
    for (size_t k = 0; kv != NULL && kv[k] != NULL; k += 2)
      if (strcmp(kv[k], opt.name) == 0) {
        opt.def = kv[k + 1];
        given = 1;
      }
    char why[512];
    int rc = lg_opt_set_default(&opt, &o->opts[i], why, sizeof why);
    if (rc == 0 && given && opt.check != NULL)
      rc = opt.check(&o->opts[i], why, sizeof why);
    if (rc == 0 && opt.required && !given) {
      snprintf(why, sizeof why, "required key missing");
      rc = -EINVAL;
    }
    if (rc < 0) {
      snprintf(err, errlen, "outputs.%s.%s: %s", name, opt.name, why);
      lg_config_output_free(o);
      return NULL;
    }
    o->opts[i].set = given;
  }
  return o;
}

void lg_config_output_free(lg_conf_output_t *o) {
  if (o == NULL)
    return;
  output_clear(o);
  free(o);
}

void lg_config_destroy(lg_config_t *c) {
  if (c == NULL)
    return;
  free(c->path);
  free(c->dir);
  free(c->settings.state_dir);
  free(c->settings.http);
  free(c->settings.dead_letter);
  for (size_t i = 0; c->sources != NULL && i < c->nsources; i++)
    source_free(&c->sources[i]);
  free(c->sources);
  lg_util_strv_free(c->warnings, c->nwarnings);
  if (c->lua != NULL)
    lua_close(c->lua);
  for (size_t i = 0; c->pipelines != NULL && i < c->npipelines; i++) {
    lg_conf_pipeline_t *p = &c->pipelines[i];
    free(p->name);
    free(p->sources);
    free(p->outputs);
    for (size_t k = 0; k < p->nscripts; k++) {
      free(p->scripts[k].path);
      free(p->scripts[k].params_json);
      free(p->scripts[k].compat);
      free(p->scripts[k].call);
      free(p->scripts[k].compat_opts_json);
    }
    free(p->scripts);
  }
  free(c->pipelines);
  for (size_t i = 0; c->outputs != NULL && i < c->noutputs; i++)
    output_clear(&c->outputs[i]);
  free(c->outputs);
  free(c);
}

void lg_config_errors_free(lg_config_errors_t *e) {
  if (e == NULL)
    return;
  lg_util_strv_free(e->msgs, e->n);
  e->msgs = NULL;
  e->n = 0;
}

int lg_config_output_index(const lg_config_t *c, const char *name) {
  for (size_t i = 0; i < c->noutputs; i++)
    if (c->outputs[i].name != NULL && strcmp(c->outputs[i].name, name) == 0)
      return (int)i;
  return -1;
}
