/* Sources in the config: the file source's options, the multiline
 * options, and the dispatch on a source's type. */
#include "config/lg_config_internal.h"

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
    lg__config_err_add(x, "%s.type: required key missing", path);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) {
    lg__config_err_add(x, "%s.type: expected a string, got %s", path,
                       lua_typename(L, lua_type(L, -1)));
    return NULL;
  }
  return lua_tostring(L, -1);
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
      lg__config_err_add(x, "%s", line);
    }
  }
  lua_pop(x->L, 1);
}

/* The `file` source type's options: its paths, and the sidecar's
 * downward-API metadata. */
static void file_parse(ctx_t *x, lg_conf_source_t *s, const char *path,
                       int tbl) {
  lg_optval_t v[F_COUNT];
  memset(v, 0, sizeof v);
  static const char *const extra[] = {"type", "k8s", "multiline", NULL};
  lg__config_parse_opts(x, tbl, path, file_source_options, v, extra);
  load_multiline(x, s, path, tbl);
  /* Sidecar mode: pod metadata from the downward-API environment. */
  lua_getfield(x->L, tbl, "k8s");
  if (lua_type(x->L, -1) == LUA_TSTRING &&
      strcmp(lua_tostring(x->L, -1), "downward") == 0)
    s->k8s_downward = 1;
  else if (!lua_isnil(x->L, -1))
    lg__config_err_add(x, "%s.k8s: expected \"downward\"", path);
  lua_pop(x->L, 1);
  s->paths = lg__config_copy_strv(x, &v[F_PATHS], 1, &s->npaths);
  s->exclude = lg__config_copy_strv(x, &v[F_EXCLUDE], 0, &s->nexclude);
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

/* The config side of the `file` source type (its runtime is
 * sources/tail/lg_source_file.c, which points here). */
const lg_conf_source_type_t lg_conf_source_file = {
    .name = "file",
    .options = file_source_options,
    .parse = file_parse,
};

void lg__config_load_source(ctx_t *x, const char *name, const char *path,
                            size_t i, void *ud) {
  lg_conf_source_t *s = &x->c->sources[i];
  (void)ud;
  s->name = lg__config_xstrdup(x, name);
  s->pipeline = -1;
  s->read_from_head = 0;
  s->format = LG_FORMAT_AUTO;
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

void lg_conf_parse_multiline(lg_conf_parse_t *p, lg_conf_source_t *s,
                             const char *path, int tbl) {
  load_multiline(p, s, path, tbl);
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
