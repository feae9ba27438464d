/*
 * lg_k8s.h - the `kubernetes` source: container logs of the pods on this
 * node, with pod metadata, and the sidecar mode of file sources.
 *
 * The source is a file source (lg_tail) with its own patterns and an
 * on_file hook. The patterns are the kubelet's layout under `pods_dir`
 * (`<namespace>_<pod>_<uid>/<container>/<restart>.log`, and the rotated
 * `<restart>.log.<timestamp>` files still being drained) and Docker's under
 * `docker_dir` (`<id>/<id>-json.log`, rotated `-json.log.N`). The hook
 * turns a path into metadata (DESIGN.md, "Records": k8s.*, container.id,
 * log.file.path), picks the framing (CRI under pods_dir, Docker under
 * docker_dir), applies the include/exclude filters and the config's
 * `select` function, and later replaces a file's metadata when the
 * Kubernetes API describes its pod (lg_k8s_api.h). The label and
 * annotation filters follow the pod: a file its pod's change excludes
 * stops being read, one that matches after a change is read from its end;
 * select() chooses once per file.
 */
#ifndef LG_K8S_H
#define LG_K8S_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "pipeline/lg_batch.h"
#include "sources/tail/lg_tail.h"
#include "sources/tail/lg_tail_conf.h"

struct lg_config;

/* One include or exclude table. Regexes are PCRE2 patterns compiled once
 * (pcre2_code *), matched against the whole name. */
typedef struct lg_k8s_filter {
  int set;           /* the table was given */
  void **namespaces; /* pcre2_code * */
  size_t nnamespaces;
  void **pods;
  size_t npods;
  void **containers;
  size_t ncontainers;
  char **label_keys; /* exact key = value pairs */
  char **label_vals;
  size_t nlabels;
  unsigned streams;  /* LG_K8S_STDOUT | LG_K8S_STDERR; 0 = not given */
  char *regex_texts; /* "<key>=<pattern>\n" of every regex, in config
                        order, for reload's comparison; NULL = none */
} lg_k8s_filter_t;

#define LG_K8S_STDOUT 1u
#define LG_K8S_STDERR 2u

/* The kubernetes-specific part of a source's config (sources.X with
 * type = "kubernetes"). Strings are owned. */
typedef struct lg_k8s_conf {
  lg_tail_conf_t tail; /* read_from, limits, multiline (no paths: the
                          patterns follow the pod log layout) */
  char *pods_dir;      /* default /var/log/pods; "" = not read */
  char *docker_dir;    /* default /var/lib/docker/containers; "" = not read */
  char *kube_api;      /* "in-cluster" (default), "off", or a base URL */
  char *token_file;    /* bearer token; in-cluster default: the service
                          account's token */
  char *ca_file;       /* CA bundle for https; in-cluster default: the
                          service account's ca.crt */
  char *node_name;     /* default: env NODE_NAME */
  char **annotations;  /* annotation keys copied as k8s.pod.annotation.<k> */
  size_t nannotations;
  uint64_t api_wait_ms;   /* how long a new file of a pod the API has not
                             described yet waits for it (default 5 s) */
  char *kubelet_dir;      /* default /var/lib/kubelet; "" = no declared files */
  char *host_root;        /* prefix of hostPath volumes' paths (default "") */
  char *containerd_state; /* default /run/containerd; "" = not looked at */
  char *docker_socket;    /* default /var/run/docker.sock; "" = not asked */
  lg_format_t files_format; /* framing of declared files (default line) */
  lg_k8s_filter_t include, exclude;
  int select_ref;         /* Lua registry ref of select() in the config's Lua
                             state (lg_config_t.lua), or -1 */
  char *select_code;      /* select()'s bytecode without debug info, for
                             reload's comparison; NULL = none */
  size_t select_code_len; /* bytes */
} lg_k8s_conf_t;

/* Frees a conf and everything it holds. NULL-safe. */
void lg_k8s_conf_free(lg_k8s_conf_t *c);

/* What a path under pods_dir or docker_dir says about its container.
 * Pointers are into `buf`; absent fields are NULL (restart -1). */
typedef struct lg_k8s_path {
  const char *ns, *pod, *uid, *container, *container_id;
  int64_t restart;
  int docker; /* found under docker_dir */
  char buf[1024];
} lg_k8s_path_t;

/* Parses `path` = `<pods_dir>/<ns>_<pod>_<uid>/<container>/<n>.log[.<ts>]`
 * (the kubelet's layout; namespace and pod names cannot hold '_', so the
 * first two '_' split the directory name). Returns 0, or -EINVAL when the
 * path does not have that shape. */
int lg_k8s_parse_pods_path(const char *pods_dir, const char *path,
                           lg_k8s_path_t *out);

/* Parses `path` = `<docker_dir>/<id>/<id>-json.log[.N]` and reads the pod
 * labels (io.kubernetes.pod.name, .namespace, .uid,
 * io.kubernetes.container.name) from `<docker_dir>/<id>/config.v2.json`
 * (Docker's container config). A container without those labels (not a
 * pod's) gets container_id only. Returns 0, or -EINVAL for another shape. */
int lg_k8s_parse_docker_path(const char *docker_dir, const char *path,
                             lg_k8s_path_t *out);

/* True when `name` matches one of `n` compiled regexes (whole name). */
int lg_k8s_regex_any(void *const *res, size_t n, const char *name);

typedef struct lg_k8s lg_k8s_t;

/* Creates the runtime of kubernetes source `source_id` (config entry
 * `name`, default pipeline `pipeline`) on `loop`; `conf` must outlive it.
 * The API watcher starts with lg_k8s_start. NULL on allocation failure. */
lg_k8s_t *lg_k8s_create(uv_loop_t *loop, const struct lg_config *conf,
                        const char *name, uint32_t source_id, int pipeline,
                        const lg_k8s_conf_t *kc);

/* The glob patterns and excludes the tail must follow for this source
 * (static for the runtime's life). */
void lg_k8s_patterns(const lg_k8s_t *k, const char *const **paths,
                     size_t *npaths, const char *const **exclude,
                     size_t *nexclude);

/* True while a file waits for its pod to be described by the API. */
int lg_k8s_waiting(const lg_k8s_t *k);

/* The lg_tail on_file hook; `ud` is the lg_k8s_t. */
int lg_k8s_on_file(void *ud, lg_tail_file_info_t *info);

/* Starts the API watcher (unless kube_api = "off") for `tail`, whose
 * metadata it refreshes. 0 or -errno. */
int lg_k8s_start(lg_k8s_t *k, lg_tail_t *tail);

/* Detaches from the tail (it is closing): no more refreshes. */
void lg_k8s_detach(lg_k8s_t *k);

/* Applies the streams filters to a batch of this source: records of an
 * excluded stream are flagged LG_REC_DROPPED (acked, never sent). */
void lg_k8s_filter_batch(const lg_k8s_t *k, lg_batch_t *b);

/* Stops the watcher thread, closes the handles; frees in their close
 * callbacks. NULL-safe. */
void lg_k8s_close(lg_k8s_t *k);

/* The on_file hook of a file source with k8s = "downward" (sidecar mode):
 * metadata from the downward-API environment (POD_NAME, POD_NAMESPACE,
 * POD_UID, NODE_NAME, CONTAINER_NAME) next to log.file.path. `ud` unused. */
int lg_k8s_downward_on_file(void *ud, lg_tail_file_info_t *info);

#endif
