/* The `file` source type (lg_source_file.h): its options and their
 * parsing, and its runtime on the tailer group (lg_source_tail.h). */
#include "sources/tail/lg_source_file.h"

#include <errno.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/lg_config_parse.h"
#include "core/lg_log.h"
#include "sources/kubernetes/lg_k8s.h"
#include "sources/tail/lg_source_tail.h"

/* ---- options --------------------------------------------------------------
 */

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

static void file_parse(lg_conf_parse_t *x, lg_conf_source_t *s,
                       const char *path, int tbl) {
  lg_file_conf_t *fc = calloc(1, sizeof *fc);
  if (fc == NULL) {
    lg_conf_parse_error(x, "out of memory");
    return;
  }
  s->type_conf = fc;
  lg_tail_conf_t *tc = &fc->tail;
  lg_optval_t v[F_COUNT];
  memset(v, 0, sizeof v);
  static const char *const extra[] = {"type", "k8s", "multiline", NULL};
  lg_conf_parse_options(x, tbl, path, file_source_options, v, extra);
  lg_conf_parse_multiline(x, path, tbl, &tc->multiline);
  /* Sidecar mode: pod metadata from the downward-API environment. */
  lua_State *L = lg_conf_parse_lua(x);
  lua_getfield(L, tbl, "k8s");
  if (lua_type(L, -1) == LUA_TSTRING &&
      strcmp(lua_tostring(L, -1), "downward") == 0)
    fc->k8s_downward = 1;
  else if (!lua_isnil(L, -1))
    lg_conf_parse_error(x, "%s.k8s: expected \"downward\"", path);
  lua_pop(L, 1);
  tc->paths = lg_conf_parse_strv(x, &v[F_PATHS], 1, &tc->npaths);
  tc->exclude = lg_conf_parse_strv(x, &v[F_EXCLUDE], 0, &tc->nexclude);
  tc->read_from_head =
      v[F_READ_FROM].s != NULL && strcmp(v[F_READ_FROM].s, "head") == 0;
  /* The enum check above already rejected names framing does not know. */
  tc->format = LG_FORMAT_AUTO;
  if (v[F_FORMAT].s != NULL)
    lg_format_parse(v[F_FORMAT].s, &tc->format);
  tc->max_record_bytes = (uint64_t)v[F_MAX_RECORD_BYTES].i;
  tc->flush_timeout_ms = (uint64_t)v[F_FLUSH_TIMEOUT].i;
  for (int k = 0; k < F_COUNT; k++)
    lg_optval_free(&v[k]);
}

static int file_conf_equal(const void *av, const void *bv) {
  const lg_file_conf_t *a = av, *b = bv;
  if (a == NULL || b == NULL)
    return a == b;
  return a->k8s_downward == b->k8s_downward &&
         lg_tail_conf_equal(&a->tail, &b->tail);
}

static void file_conf_free(void *cv) {
  lg_file_conf_t *c = cv;
  if (c == NULL)
    return;
  lg_tail_conf_clear(&c->tail);
  free(c);
}

static const lg_conf_source_type_t file_conf_type = {
    .name = "file",
    .options = file_source_options,
    .parse = file_parse,
    .equal = file_conf_equal,
    .free = file_conf_free,
};

/* ---- runtime --------------------------------------------------------------
 */

static int file_add(lg_source_t *s, char *err, size_t errlen) {
  lg_tail_group_t *g = s->group;
  const lg_file_conf_t *fc = s->spec.sc->type_conf;
  if (fc == NULL) {
    snprintf(err, errlen, "no file source options");
    return -EINVAL;
  }
  lg_tail_source_opts_t so = lg_tail_group_opts(s, &fc->tail);
  /* Sidecar mode: pod metadata from the downward-API environment. */
  if (fc->k8s_downward) {
    so.on_file = lg_k8s_downward_on_file;
    /* Without the pod's env entries the records silently lack the pod's
     * keys: say so once, at the start (CONTAINER_NAME alone is no sign of
     * a downward-API env; other tools set it). */
    if (getenv("POD_NAME") == NULL && getenv("POD_NAMESPACE") == NULL) {
      char component[300];
      snprintf(component, sizeof component, "source.%s", s->spec.sc->name);
      lg_log_warn(component,
                  "k8s = \"downward\", but POD_NAME and POD_NAMESPACE are "
                  "not set: records get no k8s.pod.name or "
                  "k8s.namespace.name (give the container POD_NAMESPACE, "
                  "POD_NAME, POD_UID, CONTAINER_NAME and NODE_NAME from the "
                  "downward API, as deploy/sidecar.yaml does)");
    }
  }
  /* A stateless pipeline spreads one file's batches over the workers:
   * they frame its lines too, so that the loop only reads. */
  const lg_config_t *c = s->spec.conf;
  so.defer_framing = s->spec.pipeline >= 0 &&
                     (size_t)s->spec.pipeline < c->npipelines &&
                     c->pipelines[s->spec.pipeline].stateless;
  int rc = lg_tail_add_source(g->tail, &so);
  if (rc != 0)
    snprintf(err, errlen, "%s", strerror(-rc));
  return rc;
}

static void file_remove(lg_source_t *s) {
  lg_tail_group_t *g = s->group;
  if (g->tail != NULL)
    lg_tail_remove_source(g->tail, s->spec.id);
}

const lg_source_type_t lg_source_file = {
    .name = "file",
    .group = &lg_tail_group,
    .conf = &file_conf_type,
    .add = file_add,
    .remove = file_remove,
};
