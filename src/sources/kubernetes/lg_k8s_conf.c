/* The config side of the kubernetes source type (lg_conf_source_type_t):
 * its options, its filters (PCRE2 regexes compiled here), its select()
 * function, and how two of them compare for a reload. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "config/lg_config_parse.h"
#include "core/lg_util.h"
#include "sources/kubernetes/lg_k8s.h"

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
  K_RATE_LIMIT,
  K_MAX_ROTATED_OPEN,
  K_MAX_RECORD_BYTES,
  K_FLUSH_TIMEOUT,
  K_KUBELET_DIR,
  K_HOST_ROOT,
  K_FILES_FORMAT,
  K_CONTAINERD_STATE,
  K_DOCKER_SOCKET,
  K_COUNT
};

static int check_format(const lg_optval_t *v, char *err, size_t errlen) {
  lg_format_t f;
  if (lg_format_parse(v->s, &f) == 0)
    return 0;
  snprintf(err, errlen, "expected line, cri, docker or auto, got \"%s\"", v->s);
  return -EINVAL;
}

static int check_kube_api(const lg_optval_t *v, char *err, size_t errlen) {
  if (strcmp(v->s, "in-cluster") == 0 || strcmp(v->s, "off") == 0 ||
      strncmp(v->s, "http://", 7) == 0 || strncmp(v->s, "https://", 8) == 0)
    return 0;
  snprintf(err, errlen,
           "expected \"in-cluster\", \"off\" or an http(s) URL, "
           "got \"%s\"",
           v->s);
  return -EINVAL;
}

static const lg_option_t k8s_source_options[] = {
    [K_PODS_DIR] = {.name = "pods_dir",
                    .type = LG_OPT_STRING,
                    .def = "/var/log/pods",
                    .doc = "The kubelet's pod log directory (CRI files); \"\" "
                           "to not read it."},
    [K_DOCKER_DIR] = {.name = "docker_dir",
                      .type = LG_OPT_STRING,
                      .def = "/var/lib/docker/containers",
                      .doc = "Docker's container directory (json-file "
                             "logs); \"\" to not read it."},
    [K_KUBE_API] = {.name = "kube_api",
                    .type = LG_OPT_STRING,
                    .def = "in-cluster",
                    .check = check_kube_api,
                    .doc = "Pod metadata from the API: \"in-cluster\", "
                           "\"off\", or the API's base URL."},
    [K_TOKEN_FILE] = {.name = "token_file",
                      .type = LG_OPT_PATH,
                      .doc = "Bearer token file (in-cluster: the service "
                             "account's token)."},
    [K_CA_FILE] = {.name = "ca_file",
                   .type = LG_OPT_PATH,
                   .doc = "CA bundle for https (in-cluster: the service "
                          "account's ca.crt)."},
    [K_NODE_NAME] = {.name = "node_name",
                     .type = LG_OPT_STRING,
                     .doc = "This node's name (default: env NODE_NAME)."},
    [K_ANNOTATIONS] = {.name = "annotations",
                       .type = LG_OPT_STRLIST,
                       .doc = "Pod annotation keys copied as "
                              "k8s.pod.annotation.<key>."},
    [K_API_WAIT] = {.name = "api_wait",
                    .type = LG_OPT_DURATION,
                    .def = "5s",
                    .doc = "How long a new pod's files wait for the API to "
                           "describe the pod."},
    [K_READ_FROM] = {.name = "read_from",
                     .type = LG_OPT_ENUM,
                     .def = "tail",
                     .choices = "head|tail",
                     .doc = "Where to start in files found at the first "
                            "start."},
    [K_RATE_LIMIT] = {.name = "rate_limit",
                      .type = LG_OPT_BYTES,
                      .doc = "Bytes per second read from each container's "
                             "log (its current file, and rotated files "
                             "read one after another); reading of that "
                             "log pauses at the limit, nothing is "
                             "dropped. Unset: no limit."},
    [K_MAX_ROTATED_OPEN] = {.name = "max_rotated_open",
                            .type = LG_OPT_INT,
                            .check = lg_opt_check_nonnegative,
                            .doc = "Rotated files of one container kept open "
                                   "once read to their end; older ones are "
                                   "closed at the next rescan (reopened, and "
                                   "counted, if written to again). Unset: "
                                   "kept until close_inactive."},
    [K_MAX_RECORD_BYTES] = {.name = "max_record_bytes",
                            .type = LG_OPT_BYTES,
                            .def = "1MiB",
                            .check = lg_opt_check_positive,
                            .doc = "Longer records are cut into pieces."},
    [K_FLUSH_TIMEOUT] = {.name = "flush_timeout",
                         .type = LG_OPT_DURATION,
                         .def = "1s",
                         .check = lg_opt_check_positive,
                         .doc = "How long a last line without a newline "
                                "waits for its end."},
    [K_KUBELET_DIR] = {.name = "kubelet_dir",
                       .type = LG_OPT_STRING,
                       .def = "/var/lib/kubelet",
                       .doc = "The kubelet's root directory, where pods' "
                              "emptyDir volumes are (files declared by the "
                              "lugger.io/files annotation); \"\" to not read "
                              "declared files."},
    [K_HOST_ROOT] = {.name = "host_root",
                     .type = LG_OPT_STRING,
                     .def = "",
                     .doc = "Where the node's / is mounted, for declared files "
                            "on hostPath volumes (\"\": at the same paths)."},
    [K_FILES_FORMAT] = {.name = "files_format",
                        .type = LG_OPT_STRING,
                        .def = "line",
                        .check = check_format,
                        .doc = "Framing of files declared by the "
                               "lugger.io/files annotation: line, cri, "
                               "docker or auto."},
    [K_CONTAINERD_STATE] = {.name = "containerd_state",
                            .type = LG_OPT_STRING,
                            .def = "/run/containerd",
                            .doc = "containerd's state directory, for declared "
                                   "files in a container's own filesystem "
                                   "(its tasks' bundles); \"\" to not look "
                                   "there."},
    [K_DOCKER_SOCKET] = {.name = "docker_socket",
                         .type = LG_OPT_STRING,
                         .def = "/var/run/docker.sock",
                         .doc = "Docker's API socket, for declared files in "
                                "a Docker container's own filesystem; \"\" "
                                "to not ask."},
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
static void **k8s_regexes(lg_conf_parse_t *x, const char *path, const char *key,
                          char **texts, size_t *n) {
  static const lg_option_t opt = {.name = "regexes", .type = LG_OPT_STRLIST};
  lg_optval_t v;
  char err[1024];
  *n = 0;
  if (lg_opt_parse_lua(lg_conf_parse_lua(x), -1, &opt, path, &v, err,
                       sizeof err) < 0) {
    lg_conf_parse_error(x, "%s", err);
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
      lg_conf_parse_error(x, "%s[%zu]: bad regex \"%s\": %s at offset %zu",
                          path, i + 1, v.vals[i], (const char *)msg,
                          (size_t)off);
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
static void k8s_filter(lg_conf_parse_t *x, const char *path,
                       lg_k8s_filter_t *f) {
  lua_State *L = lg_conf_parse_lua(x);
  if (lua_isnil(L, -1))
    return;
  if (!lua_istable(L, -1)) {
    lg_conf_parse_error(x, "%s: expected a table, got %s", path,
                        lua_typename(L, lua_type(L, -1)));
    return;
  }
  f->set = 1;
  int tbl = lua_gettop(L);
  size_t nk;
  char **keys = lg_conf_parse_keys(x, tbl, path, "unexpected list item", &nk);
  char kp[600];
  for (size_t k = 0; k < nk; k++) {
    snprintf(kp, sizeof kp, "%s.%s", path, keys[k]);
    lua_getfield(L, tbl, keys[k]);
    if (strcmp(keys[k], "namespaces") == 0) {
      f->namespaces =
          k8s_regexes(x, kp, "namespaces", &f->regex_texts, &f->nnamespaces);
    } else if (strcmp(keys[k], "pods") == 0) {
      f->pods = k8s_regexes(x, kp, "pods", &f->regex_texts, &f->npods);
    } else if (strcmp(keys[k], "containers") == 0) {
      f->containers =
          k8s_regexes(x, kp, "containers", &f->regex_texts, &f->ncontainers);
    } else if (strcmp(keys[k], "labels") == 0) {
      static const lg_option_t opt = {.name = "labels", .type = LG_OPT_STRMAP};
      lg_optval_t v;
      char err[1024];
      if (lg_opt_parse_lua(L, -1, &opt, kp, &v, err, sizeof err) < 0) {
        lg_conf_parse_error(x, "%s", err);
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
        lg_conf_parse_error(x, "%s", err);
      } else {
        for (size_t i = 0; i < v.n; i++) {
          if (strcmp(v.vals[i], "stdout") == 0)
            f->streams |= LG_K8S_STDOUT;
          else if (strcmp(v.vals[i], "stderr") == 0)
            f->streams |= LG_K8S_STDERR;
          else
            lg_conf_parse_error(
                x,
                "%s[%zu]: expected \"stdout\" or \"stderr\", got "
                "\"%s\"",
                kp, i + 1, v.vals[i]);
        }
        lg_optval_free(&v);
      }
    } else {
      lg_conf_parse_error(
          x,
          "%s: unknown key (expected namespaces, pods, containers, "
          "labels, streams)",
          kp);
    }
    lua_pop(L, 1);
  }
  lg_util_strv_free(keys, nk);
}

static void k8s_parse(lg_conf_parse_t *x, lg_conf_source_t *s, const char *path,
                      int tbl) {
  lua_State *L = lg_conf_parse_lua(x);
  lg_k8s_conf_t *kc = calloc(1, sizeof *kc);
  if (kc == NULL) {
    lg_conf_parse_error(x, "out of memory");
    return;
  }
  s->type_conf = kc;
  kc->select_ref = -1;
  lg_optval_t v[K_COUNT];
  memset(v, 0, sizeof v);
  static const char *const extra[] = {"type",   "include",   "exclude",
                                      "select", "multiline", NULL};
  lg_conf_parse_options(x, tbl, path, k8s_source_options, v, extra);
  kc->pods_dir =
      lg_conf_parse_strdup(x, v[K_PODS_DIR].s ? v[K_PODS_DIR].s : "");
  kc->docker_dir =
      lg_conf_parse_strdup(x, v[K_DOCKER_DIR].s ? v[K_DOCKER_DIR].s : "");
  kc->kube_api =
      lg_conf_parse_strdup(x, v[K_KUBE_API].s ? v[K_KUBE_API].s : "in-cluster");
  if (v[K_TOKEN_FILE].s != NULL)
    kc->token_file = lg_conf_parse_strdup(x, v[K_TOKEN_FILE].s);
  if (v[K_CA_FILE].s != NULL)
    kc->ca_file = lg_conf_parse_strdup(x, v[K_CA_FILE].s);
  if (v[K_NODE_NAME].s != NULL)
    kc->node_name = lg_conf_parse_strdup(x, v[K_NODE_NAME].s);
  kc->annotations =
      lg_conf_parse_strv(x, &v[K_ANNOTATIONS], 0, &kc->nannotations);
  kc->api_wait_ms = (uint64_t)v[K_API_WAIT].i;
  kc->kubelet_dir = lg_conf_parse_strdup(
      x, v[K_KUBELET_DIR].s ? v[K_KUBELET_DIR].s : "/var/lib/kubelet");
  kc->host_root =
      lg_conf_parse_strdup(x, v[K_HOST_ROOT].s ? v[K_HOST_ROOT].s : "");
  kc->containerd_state = lg_conf_parse_strdup(
      x, v[K_CONTAINERD_STATE].s ? v[K_CONTAINERD_STATE].s : "/run/containerd");
  kc->docker_socket = lg_conf_parse_strdup(
      x, v[K_DOCKER_SOCKET].s ? v[K_DOCKER_SOCKET].s : "/var/run/docker.sock");
  kc->files_format = LG_FORMAT_LINE;
  if (v[K_FILES_FORMAT].s != NULL)
    lg_format_parse(v[K_FILES_FORMAT].s, &kc->files_format);
  lg_tail_conf_t *tc = &kc->tail;
  tc->format = LG_FORMAT_AUTO;
  tc->read_from_head =
      v[K_READ_FROM].s != NULL && strcmp(v[K_READ_FROM].s, "head") == 0;
  tc->max_record_bytes = (uint64_t)v[K_MAX_RECORD_BYTES].i;
  tc->flush_timeout_ms = (uint64_t)v[K_FLUSH_TIMEOUT].i;
  tc->rate_limit = (uint64_t)v[K_RATE_LIMIT].i;
  tc->rotated_bounded = v[K_MAX_ROTATED_OPEN].set;
  tc->max_rotated_open = (int64_t)v[K_MAX_ROTATED_OPEN].i;
  for (int k = 0; k < K_COUNT; k++)
    lg_optval_free(&v[k]);
  if (kc->pods_dir != NULL && kc->docker_dir != NULL &&
      kc->pods_dir[0] == '\0' && kc->docker_dir[0] == '\0')
    lg_conf_parse_error(
        x, "%s: pods_dir and docker_dir are both empty: nothing to read", path);

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
    lg_conf_parse_error(x,
                        "%s: label filters need pod labels from the API, but "
                        "kube_api = \"off\"",
                        path);

  lua_getfield(L, tbl, "select");
  if (lua_isfunction(L, -1)) {
    select_code(L, kc);
    kc->select_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops it */
    lg_conf_parse_keep_lua(x);
  } else {
    if (!lua_isnil(L, -1))
      lg_conf_parse_error(x, "%s.select: expected a function, got %s", path,
                          lua_typename(L, lua_type(L, -1)));
    lua_pop(L, 1);
  }
  lg_conf_parse_multiline(x, path, tbl, &tc->multiline);
}

static int k8s_filter_eq(const lg_k8s_filter_t *a, const lg_k8s_filter_t *b) {
  return a->set == b->set && a->nnamespaces == b->nnamespaces &&
         a->npods == b->npods && a->ncontainers == b->ncontainers &&
         lg_util_str_eq(a->regex_texts, b->regex_texts) &&
         lg_util_strv_eq(a->label_keys, a->nlabels, b->label_keys,
                         b->nlabels) &&
         lg_util_strv_eq(a->label_vals, a->nlabels, b->label_vals,
                         b->nlabels) &&
         a->streams == b->streams;
}

static int k8s_eq(const void *av, const void *bv) {
  const lg_k8s_conf_t *a = av, *b = bv;
  if (a == NULL || b == NULL)
    return a == b;
  return lg_tail_conf_equal(&a->tail, &b->tail) &&
         lg_util_str_eq(a->pods_dir, b->pods_dir) &&
         lg_util_str_eq(a->docker_dir, b->docker_dir) &&
         lg_util_str_eq(a->kube_api, b->kube_api) &&
         lg_util_str_eq(a->token_file, b->token_file) &&
         lg_util_str_eq(a->ca_file, b->ca_file) &&
         lg_util_str_eq(a->node_name, b->node_name) &&
         lg_util_strv_eq(a->annotations, a->nannotations, b->annotations,
                         b->nannotations) &&
         a->api_wait_ms == b->api_wait_ms &&
         lg_util_str_eq(a->kubelet_dir, b->kubelet_dir) &&
         lg_util_str_eq(a->host_root, b->host_root) &&
         lg_util_str_eq(a->containerd_state, b->containerd_state) &&
         lg_util_str_eq(a->docker_socket, b->docker_socket) &&
         a->files_format == b->files_format &&
         k8s_filter_eq(&a->include, &b->include) &&
         k8s_filter_eq(&a->exclude, &b->exclude) &&
         (a->select_ref >= 0) == (b->select_ref >= 0) &&
         a->select_code_len == b->select_code_len &&
         (a->select_code_len == 0 ||
          memcmp(a->select_code, b->select_code, a->select_code_len) == 0);
}

static void k8s_conf_free(void *c) { lg_k8s_conf_free(c); }

static int k8s_selects(const void *c) {
  return c != NULL && ((const lg_k8s_conf_t *)c)->select_ref >= 0;
}

/* The config side of the `kubernetes` source type (its runtime is
 * lg_source_k8s.c, which points here). */
const lg_conf_source_type_t lg_conf_source_kubernetes = {
    .name = "kubernetes",
    .options = k8s_source_options,
    .parse = k8s_parse,
    .equal = k8s_eq,
    .free = k8s_conf_free,
    .selects = k8s_selects,
};
