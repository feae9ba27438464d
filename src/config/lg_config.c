/*
 * Loads the configuration (DESIGN.md, "Configuration"): the file is Lua,
 * evaluated in a fresh state with a few safe libraries, and the table it
 * returns is walked with the C API into an lg_config_t.
 *
 * Every problem becomes one message "<key path>: <what is wrong>", and the
 * walk goes on after a problem, so a user sees all of them at once. Keys
 * are visited in sorted order so messages and output indexes do not
 * depend on Lua's hash order.
 */
#include "config/lg_config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "sources/kubernetes/lg_k8s.h"
#include "framing/lg_multiline.h"
#include "outputs/lg_output.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* Evaluating the config is bounded, so that `lugger check` of a config
 * with an endless loop fails instead of hanging: hook calls every
 * HOOK_EVERY instructions, at most HOOK_MAX times (10^8 instructions). */
#define HOOK_EVERY 1000000
#define HOOK_MAX 100
#define PARAMS_MAX_DEPTH 32
#define MAX_OUTPUTS 64 /* lg_rec_t.routes is a 64-bit mask */
/* Lua cuts chunk names to LUA_IDSIZE (60) characters, so a long path
 * would show as "...fig/lugger.lua:3:". Files are loaded under this short
 * name instead, and messages get the full path back. */
#define CHUNK_MARK "lugger-chunk"

typedef struct ctx {
  lua_State *L;
  lg_config_t *c;
  lg_config_errors_t *errs;
  int hook_calls;
  int keep_lua; /* a select() function lives in L: keep it */
} ctx_t;

__attribute__((format(printf, 2, 3))) static void
err_add(ctx_t *x, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  char **m = realloc(x->errs->msgs, (x->errs->n + 1) * sizeof *m);
  if (m == NULL)
    return; /* the load fails anyway; this message is lost */
  x->errs->msgs = m;
  if ((m[x->errs->n] = strdup(buf)) != NULL)
    x->errs->n++;
}

static char *xstrdup(ctx_t *x, const char *s) {
  char *d = strdup(s);
  if (d == NULL)
    err_add(x, "out of memory");
  return d;
}

/* ---- the Lua state ----------------------------------------------------- */

static int l_getenv(lua_State *L) {
  const char *v = getenv(luaL_checkstring(L, 1));
  if (v == NULL)
    lua_pushnil(L);
  else
    lua_pushstring(L, v);
  return 1;
}

static _Thread_local ctx_t *hook_ctx; /* set while a config is evaluated */

static void count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  if (hook_ctx != NULL && ++hook_ctx->hook_calls > HOOK_MAX) {
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
static lua_State *new_state(void) {
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

static void add_lua_error(ctx_t *x, const char *prefix, const char *msg,
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
  err_add(x, "%s%s", prefix, out);
}

/* Loads Lua source text as a function under CHUNK_MARK; never bytecode,
 * which could break the VM's guarantees. */
static int load_text(lua_State *L, const char *buf, size_t len) {
  if (len > 0 && buf[0] == '\033') {
    lua_pushstring(L, CHUNK_MARK ": precompiled bytecode is not accepted, "
                                 "only Lua source text");
    return LUA_ERRSYNTAX;
  }
  return luaL_loadbufferx(L, buf, len, "=" CHUNK_MARK, "t");
}

static int read_file(const char *path, char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return -errno;
  size_t cap = 65536, n = 0;
  char *b = malloc(cap);
  int rc = 0;
  while (b != NULL) {
    if (n == cap) {
      char *nb = realloc(b, cap * 2);
      if (nb == NULL) {
        free(b);
        b = NULL;
        break;
      }
      b = nb;
      cap *= 2;
    }
    size_t r = fread(b + n, 1, cap - n, f);
    n += r;
    if (r == 0) {
      if (ferror(f))
        rc = -EIO;
      break;
    }
  }
  fclose(f);
  if (b == NULL)
    return -ENOMEM;
  if (rc < 0) {
    free(b);
    return rc;
  }
  *buf = b;
  *len = n;
  return 0;
}

/* ---- walking tables ---------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_strv(char **v, size_t n) {
  for (size_t i = 0; v != NULL && i < n; i++)
    free(v[i]);
  free(v);
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
static char **sorted_keys(ctx_t *x, int tbl, const char *path, const char *what,
                          size_t *n) {
  lua_State *L = x->L;
  char **keys = NULL;
  size_t cnt = 0, cap = 0;
  lua_pushnil(L);
  while (lua_next(L, tbl) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      char k[64];
      key_text(L, -1, k, sizeof k);
      err_add(x, "%s%s: %s", path, k, what);
      continue;
    }
    if (cnt == cap) {
      cap = cap ? cap * 2 : 16;
      char **nk = realloc(keys, cap * sizeof *nk);
      if (nk == NULL) {
        lua_pop(L, 1);
        err_add(x, "out of memory");
        break;
      }
      keys = nk;
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
static char *resolve_path(ctx_t *x, const char *p) {
  if (p[0] == '/')
    return xstrdup(x, p);
  while (p[0] == '.' && p[1] == '/')
    p += 2;
  size_t dl = strlen(x->c->dir), pl = strlen(p);
  char *r = malloc(dl + pl + 2);
  if (r == NULL) {
    err_add(x, "out of memory");
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
static size_t parse_opts(ctx_t *x, int tbl, const char *path,
                         const lg_option_t *opts, lg_optval_t *vals,
                         const char *const *extra) {
  lua_State *L = x->L;
  size_t before = x->errs->n;
  char err[1024], kp[512];
  for (int i = 0; opts[i].name != NULL; i++)
    if (lg_opt_set_default(&opts[i], &vals[i], err, sizeof err) < 0)
      err_add(x, "%s.%s: bad default: %s", path, opts[i].name, err);
  size_t nk;
  char **keys = sorted_keys(x, tbl, path, "unexpected list item", &nk);
  for (size_t k = 0; k < nk; k++) {
    int skip = 0;
    for (size_t e = 0; extra != NULL && extra[e] != NULL; e++)
      skip |= strcmp(extra[e], keys[k]) == 0;
    if (skip)
      continue;
    snprintf(kp, sizeof kp, "%s.%s", path, keys[k]);
    int i = lg_opt_find(opts, keys[k]);
    if (i < 0) {
      err_add(x, "%s: unknown key", kp);
      continue;
    }
    lua_getfield(L, tbl, keys[k]);
    lg_optval_t v;
    if (lg_opt_parse_lua(L, -1, &opts[i], kp, &v, err, sizeof err) < 0) {
      err_add(x, "%s", err);
    } else {
      if (opts[i].type == LG_OPT_PATH && v.s != NULL && v.s[0] != '\0') {
        char *abs = resolve_path(x, v.s);
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
      err_add(x, "%s.%s: required key missing", path, opts[i].name);
    lua_pop(L, 1);
  }
  free_strv(keys, nk);
  return x->errs->n - before;
}

/* Calls f for each entry of the named map at `tbl` (sources, pipelines,
 * outputs), in name order, with the entry's value on top of the stack. */
typedef void (*entry_fn)(ctx_t *x, const char *name, const char *path, size_t i,
                         void *ud);

static size_t each_entry(ctx_t *x, int tbl, const char *section,
                         const char *what, size_t n_max, entry_fn f, void *ud) {
  lua_State *L = x->L;
  size_t n_all;
  char **names = sorted_keys(x, tbl, section, what, &n_all);
  size_t n = n_all;
  if (n > n_max) {
    err_add(x, "%s: at most %zu entries are supported, got %zu", section, n_max,
            n);
    n = n_max;
  }
  char path[512];
  for (size_t i = 0; i < n; i++) {
    snprintf(path, sizeof path, "%s.%s", section, names[i]);
    lua_getfield(L, tbl, names[i]);
    f(x, names[i], path, i, ud);
    lua_settop(L, tbl);
  }
  free_strv(names, n_all);
  return n;
}

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

static int check_paths(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->n == 0) {
    snprintf(err, errlen, "needs at least one path");
    return -EINVAL;
  }
  for (size_t i = 0; i < v->n; i++)
    if (v->vals[i][0] == '\0') {
      snprintf(err, errlen, "path %zu is empty", i + 1);
      return -EINVAL;
    }
  return 0;
}

/* ---- settings ---------------------------------------------------------- */

enum {
  S_STATE_DIR,
  S_MEMORY_BUDGET,
  S_WORKERS,
  S_HTTP,
  S_CHECKPOINT_INTERVAL,
  S_RESCAN_INTERVAL,
  S_SHUTDOWN_TIMEOUT,
  S_DEAD_LETTER,
  S_SCRIPT_TIMEOUT,
  S_SCRIPT_MEMORY,
  S_COUNT
};

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
                         .def = "256MiB",
                         .check = lg_opt_check_positive,
                         .doc = "Bytes read but not yet delivered; reading "
                                "pauses at this bound."},
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
                         .check = lg_opt_check_positive,
                         .doc = "Memory cap of each worker's Lua state; an "
                                "allocation beyond it fails the record being "
                                "processed."},
    [S_COUNT] = {.name = NULL},
};

static void load_settings(ctx_t *x, int tbl) {
  lg_config_t *c = x->c;
  lg_optval_t v[S_COUNT];
  memset(v, 0, sizeof v);
  if (tbl != 0) {
    parse_opts(x, tbl, "settings", settings_options, v, NULL);
  } else {
    char err[256];
    for (int i = 0; i < S_COUNT; i++)
      lg_opt_set_default(&settings_options[i], &v[i], err, sizeof err);
  }
  const char *env = getenv("LUGGER_STATE_DIR");
  if (env != NULL && env[0] != '\0')
    c->settings.state_dir = xstrdup(x, env);
  else if (v[S_STATE_DIR].s != NULL)
    c->settings.state_dir = xstrdup(x, v[S_STATE_DIR].s);
  c->settings.memory_budget = (uint64_t)v[S_MEMORY_BUDGET].i;
  if (v[S_WORKERS].set) {
    c->settings.workers = (int)v[S_WORKERS].i;
  } else {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->settings.workers = n >= 1 ? (n <= 1024 ? (int)n : 1024) : 1;
  }
  if (v[S_HTTP].s != NULL)
    c->settings.http = xstrdup(x, v[S_HTTP].s);
  c->settings.checkpoint_interval_ms = (uint64_t)v[S_CHECKPOINT_INTERVAL].i;
  c->settings.rescan_interval_ms = (uint64_t)v[S_RESCAN_INTERVAL].i;
  c->settings.shutdown_timeout_ms = (uint64_t)v[S_SHUTDOWN_TIMEOUT].i;
  if (v[S_DEAD_LETTER].s != NULL)
    c->settings.dead_letter = xstrdup(x, v[S_DEAD_LETTER].s);
  c->settings.script_timeout_ms = (uint64_t)v[S_SCRIPT_TIMEOUT].i;
  c->settings.script_memory = (uint64_t)v[S_SCRIPT_MEMORY].i;
  for (int i = 0; i < S_COUNT; i++)
    lg_optval_free(&v[i]);
}

/* ---- sources ----------------------------------------------------------- */

enum {
  F_PATHS,
  F_EXCLUDE,
  F_READ_FROM,
  F_FORMAT,
  F_MAX_RECORD_BYTES,
  F_FLUSH_TIMEOUT,
  F_COUNT
};

static const lg_option_t file_source_options[] = {
    [F_PATHS] = {.name = "paths",
                 .type = LG_OPT_STRLIST,
                 .required = 1,
                 .check = check_paths,
                 .doc = "Globs of files to read; relative ones are relative "
                        "to the config file."},
    [F_EXCLUDE] = {.name = "exclude",
                   .type = LG_OPT_STRLIST,
                   .doc = "Globs of files not to read."},
    [F_READ_FROM] = {.name = "read_from",
                     .type = LG_OPT_ENUM,
                     .def = "tail",
                     .choices = "head|tail",
                     .doc = "Where to start in files found at the first "
                            "start (later files are read from their "
                            "start)."},
    [F_FORMAT] = {.name = "format",
                  .type = LG_OPT_ENUM,
                  .def = "auto",
                  .choices = "line|cri|docker|auto",
                  .doc = "Framing of the files: plain lines, CRI, Docker "
                         "json-file, or detected per file."},
    [F_MAX_RECORD_BYTES] = {.name = "max_record_bytes",
                            .type = LG_OPT_BYTES,
                            .def = "1MiB",
                            .check = lg_opt_check_positive,
                            .doc = "Longer records are cut into pieces "
                                   "flagged truncated."},
    [F_FLUSH_TIMEOUT] = {.name = "flush_timeout",
                         .type = LG_OPT_DURATION,
                         .def = "1s",
                         .check = lg_opt_check_positive,
                         .doc = "How long a last line without a newline "
                                "waits for its end."},
    [F_COUNT] = {.name = NULL},
};

static char **copy_strv(ctx_t *x, const lg_optval_t *v, int resolve,
                        size_t *n) {
  *n = 0;
  if (v->n == 0)
    return NULL;
  char **out = calloc(v->n, sizeof *out);
  if (out == NULL) {
    err_add(x, "out of memory");
    return NULL;
  }
  for (size_t i = 0; i < v->n; i++) {
    out[i] = resolve ? resolve_path(x, v->vals[i]) : xstrdup(x, v->vals[i]);
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
static const char *entry_type(ctx_t *x, const char *path, int *tbl) {
  lua_State *L = x->L;
  if (lua_type(L, -1) != LUA_TTABLE) {
    err_add(x, "%s: expected a table, got %s", path,
            lua_typename(L, lua_type(L, -1)));
    return NULL;
  }
  *tbl = lua_gettop(L);
  lua_getfield(L, *tbl, "type");
  if (lua_isnil(L, -1)) {
    err_add(x, "%s.type: required key missing", path);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) {
    err_add(x, "%s.type: expected a string, got %s", path,
            lua_typename(L, lua_type(L, -1)));
    return NULL;
  }
  return lua_tostring(L, -1);
}

/* ---- kubernetes sources ------------------------------------------------ */

enum {
  K_PODS_DIR,
  K_DOCKER_DIR,
  K_KUBE_API,
  K_TOKEN_FILE,
  K_CA_FILE,
  K_NODE_NAME,
  K_ANNOTATIONS,
  K_API_WAIT,
  K_READ_FROM,
  K_MAX_RECORD_BYTES,
  K_FLUSH_TIMEOUT,
  K_COUNT
};

static int check_kube_api(const lg_optval_t *v, char *err, size_t errlen) {
  if (strcmp(v->s, "in-cluster") == 0 || strcmp(v->s, "off") == 0 ||
      strncmp(v->s, "http://", 7) == 0 || strncmp(v->s, "https://", 8) == 0)
    return 0;
  snprintf(err, errlen, "expected \"in-cluster\", \"off\" or an http(s) URL, "
                        "got \"%s\"", v->s);
  return -EINVAL;
}

static const lg_option_t k8s_source_options[] = {
    [K_PODS_DIR] = {.name = "pods_dir", .type = LG_OPT_STRING,
                    .def = "/var/log/pods",
                    .doc = "The kubelet's pod log directory (CRI files); \"\" "
                           "to not read it."},
    [K_DOCKER_DIR] = {.name = "docker_dir", .type = LG_OPT_STRING,
                      .def = "/var/lib/docker/containers",
                      .doc = "Docker's container directory (json-file "
                             "logs); \"\" to not read it."},
    [K_KUBE_API] = {.name = "kube_api", .type = LG_OPT_STRING,
                    .def = "in-cluster", .check = check_kube_api,
                    .doc = "Pod metadata from the API: \"in-cluster\", "
                           "\"off\", or the API's base URL."},
    [K_TOKEN_FILE] = {.name = "token_file", .type = LG_OPT_PATH,
                      .doc = "Bearer token file (in-cluster: the service "
                             "account's token)."},
    [K_CA_FILE] = {.name = "ca_file", .type = LG_OPT_PATH,
                   .doc = "CA bundle for https (in-cluster: the service "
                          "account's ca.crt)."},
    [K_NODE_NAME] = {.name = "node_name", .type = LG_OPT_STRING,
                     .doc = "This node's name (default: env NODE_NAME)."},
    [K_ANNOTATIONS] = {.name = "annotations", .type = LG_OPT_STRLIST,
                       .doc = "Pod annotation keys copied as "
                              "k8s.pod.annotation.<key>."},
    [K_API_WAIT] = {.name = "api_wait", .type = LG_OPT_DURATION, .def = "5s",
                    .doc = "How long a new pod's files wait for the API to "
                           "describe the pod."},
    [K_READ_FROM] = {.name = "read_from", .type = LG_OPT_ENUM, .def = "tail",
                     .choices = "head|tail",
                     .doc = "Where to start in files found at the first "
                            "start."},
    [K_MAX_RECORD_BYTES] = {.name = "max_record_bytes", .type = LG_OPT_BYTES,
                            .def = "1MiB", .check = lg_opt_check_positive,
                            .doc = "Longer records are cut into pieces."},
    [K_FLUSH_TIMEOUT] = {.name = "flush_timeout", .type = LG_OPT_DURATION,
                         .def = "1s", .check = lg_opt_check_positive,
                         .doc = "How long a last line without a newline "
                                "waits for its end."},
    [K_COUNT] = {.name = NULL},
};

/* Appends "<key>=<pattern>\n" to *texts (NULL = empty), so a reload can
 * compare the patterns a filter was built from. */
static void k8s_text_add(char **texts, const char *key, const char *pat) {
  size_t old = *texts ? strlen(*texts) : 0;
  size_t add = strlen(key) + strlen(pat) + 2;
  char *t = realloc(*texts, old + add + 1);
  if (t == NULL)
    return; /* only reload's comparison is weaker: it sees no change */
  snprintf(t + old, add + 1, "%s=%s\n", key, pat);
  *texts = t;
}

/* A list of regexes at `path` (the value on the stack top), compiled; their
 * texts are appended to *texts under `key`. */
static void **k8s_regexes(ctx_t *x, const char *path, const char *key,
                          char **texts, size_t *n) {
  static const lg_option_t opt = {.name = "regexes", .type = LG_OPT_STRLIST};
  lg_optval_t v;
  char err[1024];
  *n = 0;
  if (lg_opt_parse_lua(x->L, -1, &opt, path, &v, err, sizeof err) < 0) {
    err_add(x, "%s", err);
    return NULL;
  }
  void **res = calloc(v.n ? v.n : 1, sizeof *res);
  for (size_t i = 0; res != NULL && i < v.n; i++) {
    int ec;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)v.vals[i], PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF, &ec, &off, NULL);
    if (re == NULL) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(ec, msg, sizeof msg);
      err_add(x, "%s[%zu]: bad regex \"%s\": %s at offset %zu", path, i + 1,
              v.vals[i], (const char *)msg, (size_t)off);
      continue;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up */
    res[(*n)++] = re;
    k8s_text_add(texts, key, v.vals[i]);
  }
  lg_optval_free(&v);
  return res;
}

/* The select() function on the stack top (left there): its bytecode
 * without debug info (LuaJIT's string.dump(f, true)) in kc->select_code, so
 * a reload sees a changed function but not one only moved to other lines.
 * Upvalues' values are not part of it. */
static void select_code(lua_State *L, lg_k8s_conf_t *kc) {
  int top = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "string");
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "dump");
      lua_pushvalue(L, top);
      lua_pushboolean(L, 1);
      size_t n;
      const char *code;
      if (lua_isfunction(L, -3) && lua_pcall(L, 2, 1, 0) == 0 &&
          (code = lua_tolstring(L, -1, &n)) != NULL && n > 0 &&
          (kc->select_code = malloc(n)) != NULL) {
        memcpy(kc->select_code, code, n);
        kc->select_code_len = n;
      }
    }
  }
  lua_settop(L, top);
}

/* sources.X.include / exclude: the table on the stack top. */
static void k8s_filter(ctx_t *x, const char *path, lg_k8s_filter_t *f) {
  lua_State *L = x->L;
  if (lua_isnil(L, -1))
    return;
  if (!lua_istable(L, -1)) {
    err_add(x, "%s: expected a table, got %s", path,
            lua_typename(L, lua_type(L, -1)));
    return;
  }
  f->set = 1;
  int tbl = lua_gettop(L);
  size_t nk;
  char **keys = sorted_keys(x, tbl, path, "unexpected list item", &nk);
  char kp[600];
  for (size_t k = 0; k < nk; k++) {
    snprintf(kp, sizeof kp, "%s.%s", path, keys[k]);
    lua_getfield(L, tbl, keys[k]);
    if (strcmp(keys[k], "namespaces") == 0) {
      f->namespaces =
          k8s_regexes(x, kp, "namespaces", &f->regex_texts, &f->nnamespaces);
    } else if (strcmp(keys[k], "pods") == 0) {
      f->pods =
          k8s_regexes(x, kp, "pods", &f->regex_texts, &f->npods);
    } else if (strcmp(keys[k], "containers") == 0) {
      f->containers =
          k8s_regexes(x, kp, "containers", &f->regex_texts, &f->ncontainers);
    } else if (strcmp(keys[k], "labels") == 0) {
      static const lg_option_t opt = {.name = "labels",
                                      .type = LG_OPT_STRMAP};
      lg_optval_t v;
      char err[1024];
      if (lg_opt_parse_lua(L, -1, &opt, kp, &v, err, sizeof err) < 0) {
        err_add(x, "%s", err);
      } else {
        f->label_keys = v.keys;
        f->label_vals = v.vals;
        f->nlabels = v.n;
      }
    } else if (strcmp(keys[k], "streams") == 0) {
      static const lg_option_t opt = {.name = "streams",
                                      .type = LG_OPT_STRLIST};
      lg_optval_t v;
      char err[1024];
      if (lg_opt_parse_lua(L, -1, &opt, kp, &v, err, sizeof err) < 0) {
        err_add(x, "%s", err);
      } else {
        for (size_t i = 0; i < v.n; i++) {
          if (strcmp(v.vals[i], "stdout") == 0)
            f->streams |= LG_K8S_STDOUT;
          else if (strcmp(v.vals[i], "stderr") == 0)
            f->streams |= LG_K8S_STDERR;
          else
            err_add(x, "%s[%zu]: expected \"stdout\" or \"stderr\", got "
                       "\"%s\"", kp, i + 1, v.vals[i]);
        }
        lg_optval_free(&v);
      }
    } else {
      err_add(x, "%s: unknown key (expected namespaces, pods, containers, "
                 "labels, streams)", kp);
    }
    lua_pop(L, 1);
  }
  free_strv(keys, nk);
}

static void load_k8s_source(ctx_t *x, lg_conf_source_t *s, const char *path,
                            int tbl) {
  lua_State *L = x->L;
  lg_k8s_conf_t *kc = calloc(1, sizeof *kc);
  if (kc == NULL) {
    err_add(x, "out of memory");
    return;
  }
  s->k8s = kc;
  kc->select_ref = -1;
  lg_optval_t v[K_COUNT];
  memset(v, 0, sizeof v);
  static const char *const extra[] = {"type",   "include",   "exclude",
                                      "select", "multiline", NULL};
  parse_opts(x, tbl, path, k8s_source_options, v, extra);
  kc->pods_dir = xstrdup(x, v[K_PODS_DIR].s ? v[K_PODS_DIR].s : "");
  kc->docker_dir = xstrdup(x, v[K_DOCKER_DIR].s ? v[K_DOCKER_DIR].s : "");
  kc->kube_api = xstrdup(x, v[K_KUBE_API].s ? v[K_KUBE_API].s : "in-cluster");
  if (v[K_TOKEN_FILE].s != NULL)
    kc->token_file = xstrdup(x, v[K_TOKEN_FILE].s);
  if (v[K_CA_FILE].s != NULL)
    kc->ca_file = xstrdup(x, v[K_CA_FILE].s);
  if (v[K_NODE_NAME].s != NULL)
    kc->node_name = xstrdup(x, v[K_NODE_NAME].s);
  kc->annotations = copy_strv(x, &v[K_ANNOTATIONS], 0, &kc->nannotations);
  kc->api_wait_ms = (uint64_t)v[K_API_WAIT].i;
  s->read_from_head =
      v[K_READ_FROM].s != NULL && strcmp(v[K_READ_FROM].s, "head") == 0;
  s->max_record_bytes = (uint64_t)v[K_MAX_RECORD_BYTES].i;
  s->flush_timeout_ms = (uint64_t)v[K_FLUSH_TIMEOUT].i;
  for (int k = 0; k < K_COUNT; k++)
    lg_optval_free(&v[k]);
  if (kc->pods_dir != NULL && kc->docker_dir != NULL &&
      kc->pods_dir[0] == '\0' && kc->docker_dir[0] == '\0')
    err_add(x, "%s: pods_dir and docker_dir are both empty: nothing to read",
            path);

  char kp[600];
  snprintf(kp, sizeof kp, "%s.include", path);
  lua_getfield(L, tbl, "include");
  k8s_filter(x, kp, &kc->include);
  lua_pop(L, 1);
  snprintf(kp, sizeof kp, "%s.exclude", path);
  lua_getfield(L, tbl, "exclude");
  k8s_filter(x, kp, &kc->exclude);
  lua_pop(L, 1);
  if (kc->kube_api != NULL && strcmp(kc->kube_api, "off") == 0 &&
      (kc->include.nlabels || kc->exclude.nlabels))
    err_add(x, "%s: label filters need pod labels from the API, but "
               "kube_api = \"off\"", path);

  lua_getfield(L, tbl, "select");
  if (lua_isfunction(L, -1)) {
    select_code(L, kc);
    kc->select_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops it */
    x->keep_lua = 1;
  } else {
    if (!lua_isnil(L, -1))
      err_add(x, "%s.select: expected a function, got %s", path,
              lua_typename(L, lua_type(L, -1)));
    lua_pop(L, 1);
  }
}

/* sources.X.multiline (lg_multiline.h), for file and kubernetes sources. */
static void load_multiline(ctx_t *x, lg_conf_source_t *s, const char *path,
                           int tbl) {
  char mp[600], err[4096];
  snprintf(mp, sizeof mp, "%s.multiline", path);
  lua_getfield(x->L, tbl, "multiline");
  if (lg_ml_conf_parse_lua(x->L, -1, mp, &s->multiline, err, sizeof err) < 0) {
    for (char *line = err, *nl; line != NULL && *line; line = nl) {
      nl = strchr(line, '\n');
      if (nl != NULL)
        *nl++ = '\0';
      err_add(x, "%s", line);
    }
  }
  lua_pop(x->L, 1);
}

static void load_source(ctx_t *x, const char *name, const char *path, size_t i,
                        void *ud) {
  lg_conf_source_t *s = &x->c->sources[i];
  (void)ud;
  s->name = xstrdup(x, name);
  s->pipeline = -1;
  s->read_from_head = 0;
  s->format = LG_FORMAT_AUTO;
  s->max_record_bytes = 1u << 20;
  s->flush_timeout_ms = 1000;
  int tbl;
  const char *type = entry_type(x, path, &tbl);
  if (type == NULL)
    return;
  s->type = xstrdup(x, type);
  if (strcmp(type, "kubernetes") == 0) {
    load_k8s_source(x, s, path, tbl);
    load_multiline(x, s, path, tbl);
    return;
  }
  if (strcmp(type, "file") != 0) {
    err_add(x, "%s.type: unknown source type '%s' (known: file, kubernetes)",
            path, type);
    return;
  }
  lg_optval_t v[F_COUNT];
  memset(v, 0, sizeof v);
  static const char *const extra[] = {"type", "k8s", "multiline", NULL};
  parse_opts(x, tbl, path, file_source_options, v, extra);
  load_multiline(x, s, path, tbl);
  /* Sidecar mode: pod metadata from the downward-API environment. */
  lua_getfield(x->L, tbl, "k8s");
  if (lua_type(x->L, -1) == LUA_TSTRING &&
      strcmp(lua_tostring(x->L, -1), "downward") == 0)
    s->k8s_downward = 1;
  else if (!lua_isnil(x->L, -1))
    err_add(x, "%s.k8s: expected \"downward\"", path);
  lua_pop(x->L, 1);
  s->paths = copy_strv(x, &v[F_PATHS], 1, &s->npaths);
  s->exclude = copy_strv(x, &v[F_EXCLUDE], 0, &s->nexclude);
  s->read_from_head =
      v[F_READ_FROM].s != NULL && strcmp(v[F_READ_FROM].s, "head") == 0;
  /* The enum check above already rejected names framing does not know. */
  if (v[F_FORMAT].s != NULL && lg_format_parse(v[F_FORMAT].s, &s->format) < 0)
    s->format = LG_FORMAT_AUTO;
  s->max_record_bytes = (uint64_t)v[F_MAX_RECORD_BYTES].i;
  s->flush_timeout_ms = (uint64_t)v[F_FLUSH_TIMEOUT].i;
  for (int k = 0; k < F_COUNT; k++)
    lg_optval_free(&v[k]);
}

/* ---- outputs ----------------------------------------------------------- */

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
  out->name = xstrdup(x, name);
  int tbl;
  const char *type = entry_type(x, path, &tbl);
  if (type == NULL)
    return;
  out->type = xstrdup(x, type);
  out->vt = lg_output_type_find(type);
  if (out->vt == NULL) {
    char known[256];
    known_output_types(known, sizeof known);
    err_add(x, "%s.type: unknown output type '%s' (known: %s)", path, type,
            known);
    return;
  }
  size_t nopts = 0;
  while (out->vt->options[nopts].name != NULL)
    nopts++;
  out->opts = calloc(nopts + 1, sizeof *out->opts);
  if (out->opts == NULL) {
    err_add(x, "out of memory");
    return;
  }
  static const char *const extra[] = {"type", NULL};
  parse_opts(x, tbl, path, out->vt->options, out->opts, extra);
}

/* ---- pipelines --------------------------------------------------------- */

static cJSON *to_json(ctx_t *x, int idx, const char *path, int depth);

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
      cJSON *item = to_json(x, lua_gettop(L), kp, depth + 1);
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
    err_add(x,
            "%s: expected a list (keys 1..n) or a map (string keys), "
            "got a table that mixes both",
            path);
    return NULL;
  }
  size_t nk;
  char **keys = sorted_keys(x, idx, path, "unexpected key", &nk);
  cJSON *obj = cJSON_CreateObject();
  for (size_t i = 0; obj != NULL && i < nk; i++) {
    snprintf(kp, sizeof kp, "%s.%s", path, keys[i]);
    lua_getfield(L, idx, keys[i]);
    cJSON *item = to_json(x, lua_gettop(L), kp, depth + 1);
    lua_pop(L, 1);
    if (item == NULL) {
      cJSON_Delete(obj);
      obj = NULL;
      break;
    }
    cJSON_AddItemToObject(obj, keys[i], item);
  }
  free_strv(keys, nk);
  return obj;
}

static cJSON *to_json(ctx_t *x, int idx, const char *path, int depth) {
  lua_State *L = x->L;
  if (depth > PARAMS_MAX_DEPTH) {
    err_add(x, "%s: nested more than %d levels deep", path, PARAMS_MAX_DEPTH);
    return NULL;
  }
  switch (lua_type(L, idx)) {
  case LUA_TBOOLEAN:
    return cJSON_CreateBool(lua_toboolean(L, idx));
  case LUA_TNUMBER: {
    double d = lua_tonumber(L, idx);
    if (!isfinite(d)) {
      err_add(x, "%s: expected a finite number, got %g", path, d);
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
    err_add(x, "%s: expected a string, number, boolean or table, got %s", path,
            lua_typename(L, lua_type(L, idx)));
    return NULL;
  }
}

static void load_script(ctx_t *x, const char *path, lg_conf_script_t *sc) {
  lua_State *L = x->L;
  int t = lua_type(L, -1);
  const char *file = NULL;
  if (t == LUA_TSTRING) {
    file = lua_tostring(L, -1);
    sc->params_json = xstrdup(x, "{}");
  } else if (t == LUA_TTABLE) {
    int tbl = lua_gettop(L);
    size_t nk;
    char **keys = sorted_keys(x, tbl, path, "unexpected list item", &nk);
    /* Fluent Bit filter options, under Fluent Bit's own names; they go
     * to the Lua runtime as one JSON object (lua/lugger/fluentbit.lua). */
    static const char *const fb_opts[] = {
        "time_as_table", "type_int_key", "type_array_key", "enable_flb_null",
        "protected_mode", "tag", NULL};
    lua_getfield(L, tbl, "compat");
    int has_compat = !lua_isnil(L, -1);
    if (has_compat) {
      if (lua_type(L, -1) != LUA_TSTRING ||
          strcmp(lua_tostring(L, -1), "fluent-bit") != 0)
        err_add(x, "%s.compat: expected \"fluent-bit\"", path);
      else
        sc->compat = xstrdup(x, "fluent-bit");
    }
    lua_pop(L, 1);
    lua_getfield(L, tbl, "call");
    if (lua_type(L, -1) == LUA_TSTRING)
      sc->call = xstrdup(x, lua_tostring(L, -1));
    else if (!lua_isnil(L, -1))
      err_add(x, "%s.call: expected a string, got %s", path,
              lua_typename(L, lua_type(L, -1)));
    else if (has_compat)
      err_add(x, "%s.call: required key missing (compat = \"fluent-bit\")",
              path);
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
          err_add(x, "%s.%s: expected a string or boolean, got %s", path,
                  keys[k], lua_typename(L, lt));
        lua_pop(L, 1);
      } else if (strcmp(keys[k], "path") != 0 &&
                 strcmp(keys[k], "params") != 0 &&
                 strcmp(keys[k], "compat") != 0 &&
                 strcmp(keys[k], "call") != 0) {
        err_add(x, "%s.%s: unknown key%s", path, keys[k],
                fb ? " (a Fluent Bit option: needs compat = \"fluent-bit\")"
                   : "");
      }
    }
    if (opts != NULL) {
      char *text = cJSON_PrintUnformatted(opts);
      if (text != NULL) {
        sc->compat_opts_json = xstrdup(x, text);
        cJSON_free(text);
      }
      cJSON_Delete(opts);
    }
    free_strv(keys, nk);
    lua_getfield(L, tbl, "params");
    if (lua_isnil(L, -1)) {
      sc->params_json = xstrdup(x, "{}");
    } else if (lua_type(L, -1) != LUA_TTABLE) {
      char kp[512];
      snprintf(kp, sizeof kp, "%s.params", path);
      err_add(x, "%s: expected a table, got %s", kp,
              lua_typename(L, lua_type(L, -1)));
    } else {
      char kp[512];
      snprintf(kp, sizeof kp, "%s.params", path);
      cJSON *j = to_json(x, lua_gettop(L), kp, 0);
      if (j != NULL) {
        char *text = cJSON_PrintUnformatted(j);
        if (text != NULL) {
          sc->params_json = xstrdup(x, text);
          cJSON_free(text);
        } else {
          err_add(x, "%s: out of memory", kp);
        }
        cJSON_Delete(j);
      }
    }
    lua_pop(L, 1);
    lua_getfield(L, tbl, "path");
    if (lua_isnil(L, -1)) {
      err_add(x, "%s.path: required key missing", path);
      return;
    }
    if (lua_type(L, -1) != LUA_TSTRING) {
      err_add(x, "%s.path: expected a string, got %s", path,
              lua_typename(L, lua_type(L, -1)));
      return;
    }
    file = lua_tostring(L, -1);
  } else {
    err_add(x,
            "%s: expected a script path or a table { path = ..., "
            "params = {...} }, got %s",
            path, lua_typename(L, t));
    return;
  }
  if (file[0] == '\0') {
    err_add(x, "%s: the script path is empty", path);
    return;
  }
  sc->path = resolve_path(x, file);
  if (sc->path == NULL)
    return;
  struct stat st;
  if (stat(sc->path, &st) < 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      err_add(x, "%s: no such file: %s", path, sc->path);
    else
      err_add(x, "%s: %s: %s", path, sc->path, strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    err_add(x, "%s: not a regular file: %s", path, sc->path);
  } else if (access(sc->path, R_OK) < 0) {
    err_add(x, "%s: %s: %s", path, sc->path, strerror(errno));
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
    err_add(x, "%s: required key missing", path);
    return NULL;
  }
  if (lg_opt_parse_lua(L, -1, &list_opt, path, &v, err, sizeof err) < 0) {
    err_add(x, "%s", err);
    return NULL;
  }
  if (v.n == 0) {
    err_add(x, "%s: needs at least one %s", path, what);
    lg_optval_free(&v);
    return NULL;
  }
  int *idx = calloc(v.n, sizeof *idx);
  if (idx == NULL) {
    err_add(x, "out of memory");
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
      err_add(x, "%s: unknown %s '%s'", kp, what, v.vals[i]);
      continue;
    }
    int dup = 0;
    for (size_t j = 0; j < k; j++)
      dup |= idx[j] == found;
    if (dup) {
      err_add(x, "%s: %s '%s' is listed twice", kp, what, v.vals[i]);
      continue;
    }
    if (strcmp(what, "source") == 0) {
      lg_conf_source_t *s = &x->c->sources[found];
      /* A kubernetes source with select() may feed several pipelines: the
       * first is its default, select() picks one per file. */
      int multi = s->k8s != NULL && s->k8s->select_ref >= 0;
      if (multi && s->pipeline >= 0) {
        idx[k++] = found;
        continue;
      }
      if (s->pipeline >= 0) {
        err_add(x,
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

static void load_pipeline(ctx_t *x, const char *name, const char *path,
                          size_t pi, void *ud) {
  lua_State *L = x->L;
  lg_conf_pipeline_t *p = &x->c->pipelines[pi];
  (void)ud;
  p->name = xstrdup(x, name);
  if (lua_type(L, -1) != LUA_TTABLE) {
    err_add(x, "%s: expected a table, got %s", path,
            lua_typename(L, lua_type(L, -1)));
    return;
  }
  int tbl = lua_gettop(L);
  size_t nk;
  char **keys = sorted_keys(x, tbl, path, "unexpected list item", &nk);
  for (size_t k = 0; k < nk; k++)
    if (strcmp(keys[k], "sources") != 0 && strcmp(keys[k], "scripts") != 0 &&
        strcmp(keys[k], "outputs") != 0)
      err_add(x, "%s.%s: unknown key", path, keys[k]);
  free_strv(keys, nk);

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
      err_add(x,
              "%s: expected a list of scripts, got a table with other "
              "keys",
              kp);
    } else if (n > 0) {
      p->scripts = calloc(n, sizeof *p->scripts);
      if (p->scripts == NULL) {
        err_add(x, "out of memory");
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
    err_add(x, "%s: expected a list of scripts, got %s", kp,
            lua_typename(L, st));
  }
  lua_settop(L, tbl);

  snprintf(kp, sizeof kp, "%s.outputs", path);
  lua_getfield(L, tbl, "outputs");
  p->outputs = name_list(x, kp, "output", (int)pi, &p->noutputs);
  lua_pop(L, 1);
}

/* ---- the whole file ---------------------------------------------------- */

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
    err_add(x, "%s: expected a table, got %s", key,
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

static void walk(ctx_t *x, int top) {
  lua_State *L = x->L;
  lg_config_t *c = x->c;
  size_t nk;
  char **keys = sorted_keys(x, top, "", "unexpected list item", &nk);
  for (size_t k = 0; k < nk; k++)
    if (strcmp(keys[k], "settings") != 0 && strcmp(keys[k], "sources") != 0 &&
        strcmp(keys[k], "pipelines") != 0 && strcmp(keys[k], "outputs") != 0)
      err_add(x,
              "%s: unknown key (expected settings, sources, pipelines, "
              "outputs)",
              keys[k]);
  free_strv(keys, nk);

  int t = section(x, top, "settings");
  load_settings(x, t);
  lua_settop(L, top);

  const char *named = "expected name = { ... } entries, got a list item";
  t = section(x, top, "sources");
  if (t != 0) {
    size_t n = count_entries(L, t);
    c->sources = calloc(n + 1, sizeof *c->sources);
    if (c->sources != NULL) {
      c->nsources = each_entry(x, t, "sources", named, n, load_source, NULL);
    }
  }
  if (c->nsources == 0)
    err_add(x, "sources: no sources defined");
  lua_settop(L, top);

  t = section(x, top, "outputs");
  if (t != 0) {
    size_t n = count_entries(L, t);
    c->outputs = calloc(n + 1, sizeof *c->outputs);
    if (c->outputs != NULL) {
      c->noutputs =
          each_entry(x, t, "outputs", named, MAX_OUTPUTS, load_output, NULL);
    }
  }
  if (c->noutputs == 0)
    err_add(x, "outputs: no outputs defined");
  lua_settop(L, top);

  t = section(x, top, "pipelines");
  if (t != 0) {
    size_t n = count_entries(L, t);
    c->pipelines = calloc(n + 1, sizeof *c->pipelines);
    if (c->pipelines != NULL) {
      c->npipelines =
          each_entry(x, t, "pipelines", named, n, load_pipeline, NULL);
    }
  }
  if (c->npipelines == 0)
    err_add(x, "pipelines: no pipelines defined");
  lua_settop(L, top);

  for (size_t i = 0; i < c->nsources; i++)
    if (c->sources[i].pipeline < 0 && c->npipelines > 0 &&
        !(c->sources[i].k8s != NULL && c->sources[i].k8s->select_ref >= 0))
      err_add(x, "sources.%s: not read by any pipeline", c->sources[i].name);
  if (c->settings.dead_letter != NULL &&
      lg_config_output_index(c, c->settings.dead_letter) < 0)
    err_add(x, "settings.dead_letter: unknown output '%s'",
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
    err_add(&x, "%s: %s", path, strerror(-rc));
    lg_config_destroy(c);
    return rc;
  }
  char *buf = NULL;
  size_t len = 0;
  rc = read_file(c->path, &buf, &len);
  if (rc < 0) {
    err_add(&x, "%s: %s", c->path, strerror(-rc));
    lg_config_destroy(c);
    return rc;
  }
  lua_State *L = new_state();
  if (L == NULL) {
    free(buf);
    err_add(&x, "%s: cannot create a Lua state", c->path);
    lg_config_destroy(c);
    return -ENOMEM;
  }
  x.L = L;
  rc = load_text(L, buf, len);
  free(buf);
  if (rc == 0) {
    hook_ctx = &x;
    lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
    rc = lua_pcall(L, 0, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    hook_ctx = NULL;
  }
  if (rc != 0) {
    const char *m = lua_tostring(L, -1);
    add_lua_error(&x, "", m != NULL ? m : "error without a message", c->path);
    lua_close(L);
    lg_config_destroy(c);
    return -EINVAL;
  }
  if (lua_type(L, -1) != LUA_TTABLE) {
    err_add(&x, "%s: must return a table, got %s", c->path,
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
    err_add(&x, "cannot create a Lua state");
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
      if (path == NULL || read_file(path, &src, &len) < 0)
        continue;
      if (load_text(L, src, len) != 0) {
        char prefix[600];
        snprintf(prefix, sizeof prefix, "pipelines.%s.scripts[%zu]: ", pl->name,
                 i + 1);
        add_lua_error(&x, prefix, lua_tostring(L, -1), path);
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
  for (size_t i = 0; c->sources != NULL && i < c->nsources; i++) {
    lg_conf_source_t *s = &c->sources[i];
    free(s->name);
    free(s->type);
    free_strv(s->paths, s->npaths);
    free_strv(s->exclude, s->nexclude);
    lg_k8s_conf_free(s->k8s);
    lg_ml_conf_unref(s->multiline);
  }
  free(c->sources);
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
  free_strv(e->msgs, e->n);
  e->msgs = NULL;
  e->n = 0;
}

int lg_config_output_index(const lg_config_t *c, const char *name) {
  for (size_t i = 0; i < c->noutputs; i++)
    if (c->outputs[i].name != NULL && strcmp(c->outputs[i].name, name) == 0)
      return (int)i;
  return -1;
}

/* ---- comparing configs (hot reload) ------------------------------------ */

static int str_eq(const char *a, const char *b) {
  return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int strv_eq(char *const *a, size_t na, char *const *b, size_t nb) {
  if (na != nb)
    return 0;
  for (size_t i = 0; i < na; i++)
    if (!str_eq(a[i], b[i]))
      return 0;
  return 1;
}

static int optval_eq(const lg_optval_t *a, const lg_optval_t *b) {
  return str_eq(a->s, b->s) && a->i == b->i &&
         strv_eq(a->keys, a->keys ? a->n : 0, b->keys, b->keys ? b->n : 0) &&
         strv_eq(a->vals, a->n, b->vals, b->n);
}

int lg_config_output_equal(const lg_conf_output_t *a,
                           const lg_conf_output_t *b) {
  if (!str_eq(a->name, b->name) || !str_eq(a->type, b->type) || a->vt != b->vt)
    return 0;
  if (a->vt == NULL)
    return 1;
  for (size_t i = 0; a->vt->options[i].name != NULL; i++)
    if (!optval_eq(&a->opts[i], &b->opts[i]))
      return 0;
  return 1;
}

/* Compiled regexes cannot be compared: their pattern texts are. */
static int k8s_filter_eq(const lg_k8s_filter_t *a, const lg_k8s_filter_t *b) {
  return a->set == b->set && a->nnamespaces == b->nnamespaces &&
         a->npods == b->npods && a->ncontainers == b->ncontainers &&
         str_eq(a->regex_texts, b->regex_texts) &&
         strv_eq(a->label_keys, a->nlabels, b->label_keys, b->nlabels) &&
         strv_eq(a->label_vals, a->nlabels, b->label_vals, b->nlabels) &&
         a->streams == b->streams;
}

static int k8s_eq(const lg_k8s_conf_t *a, const lg_k8s_conf_t *b) {
  if (a == NULL || b == NULL)
    return a == b;
  return str_eq(a->pods_dir, b->pods_dir) &&
         str_eq(a->docker_dir, b->docker_dir) &&
         str_eq(a->kube_api, b->kube_api) &&
         str_eq(a->token_file, b->token_file) &&
         str_eq(a->ca_file, b->ca_file) &&
         str_eq(a->node_name, b->node_name) &&
         strv_eq(a->annotations, a->nannotations, b->annotations,
                 b->nannotations) &&
         a->api_wait_ms == b->api_wait_ms &&
         k8s_filter_eq(&a->include, &b->include) &&
         k8s_filter_eq(&a->exclude, &b->exclude) &&
         (a->select_ref >= 0) == (b->select_ref >= 0) &&
         a->select_code_len == b->select_code_len &&
         (a->select_code_len == 0 ||
          memcmp(a->select_code, b->select_code, a->select_code_len) == 0);
}

int lg_config_source_equal(const lg_conf_source_t *a,
                           const lg_conf_source_t *b) {
  return str_eq(a->name, b->name) && str_eq(a->type, b->type) &&
         k8s_eq(a->k8s, b->k8s) && a->k8s_downward == b->k8s_downward &&
         strv_eq(a->paths, a->npaths, b->paths, b->npaths) &&
         strv_eq(a->exclude, a->nexclude, b->exclude, b->nexclude) &&
         a->read_from_head == b->read_from_head && a->format == b->format &&
         a->max_record_bytes == b->max_record_bytes &&
         a->flush_timeout_ms == b->flush_timeout_ms &&
         lg_ml_conf_equal(a->multiline, b->multiline);
}
