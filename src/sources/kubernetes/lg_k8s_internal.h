/*
 * lg_k8s_internal.h - what the kubernetes source's files share: the
 * runtime, the pod cache's entries, and the functions one file calls in
 * another. Not for use outside src/sources/kubernetes/.
 *
 *   lg_k8s.c         the on_file hook, API events, timers, lifecycle
 *   lg_k8s_path.c    pod log paths (CRI and Docker layouts) to metadata
 *   lg_k8s_meta.c    the pod cache and the metadata of a file
 *   lg_k8s_filter.c  filters (namespaces, labels, streams) and select()
 *   lg_k8s_api.c     pod metadata from the API server (list + watch)
 *   lg_k8s_pod.c     a Pod object's JSON to what lugger keeps of it
 *   lg_k8s_files.c   files pods declare (lugger.io/files) on their volumes
 *   lg_k8s_runtime.c a container's own filesystem (containerd, Docker)
 *
 * The `kubernetes` source on top of lg_tail: paths to metadata, filters,
 * select(), and pod metadata from the API (lg_k8s_api.c).
 *
 * Files are found by lg_tail through the patterns of lg_k8s_patterns; its
 * on_file hook (lg_k8s_on_file) decides for each new file whether it is
 * read, with which framing, for which pipeline and with which metadata.
 *
 * The pod cache holds what the API said about the pods of this node, by
 * uid. It is only touched on the loop thread. A deleted pod stays in it
 * (flagged) for a while, so files still being drained, and a rotation
 * rename during the drain, keep its metadata; the metadata a file already
 * has is its own (refcounted) in any case.
 *
 * Before the API has described a pod, a new file of it waits up to
 * api_wait for it (the file is skipped and looked at again when the pod
 * arrives or the wait is over), so that its first records carry labels and
 * label filters and select() see them. After the wait it is read with the
 * path metadata; filters then treat what is unknown as not excluding:
 * logs are never dropped for want of data the API did not give.
 *
 * Filters follow the pods. When a pod changes (labels, annotations, or
 * described at last after the API did not answer), the files of it that
 * lg_tail reads are asked about again (lg_tail_refresh_meta): one its pod
 * excludes now is stopped (the tail keeps its checkpoint). The files the
 * filters kept unread have a file_entry under their pod: the decision
 * stands, for a lookup per rescan, until the pod changes (its gen); then
 * a rescan asks again, and one that matches now is read from its end
 * (what its pod wrote while excluded stays unread), with the pipelines
 * select() chose for it before, if it did. Appends to skipped files do not
 * reach the hook at all (lg_tail parks them).
 */
#ifndef LG_K8S_INTERNAL_H
#define LG_K8S_INTERNAL_H

#include "sources/kubernetes/lg_k8s.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <pcre2.h>

#include "config/lg_config.h"
#include "core/lg_log.h"
#include "core/lg_util.h"
#include "sources/kubernetes/lg_k8s_api.h"

#define POD_BUCKETS 256
/* How long a deleted pod's metadata stays in the cache. */
#define TOMBSTONE_MS (10 * 60 * 1000)
/* Timer period while files wait for their pod, and for purging. */
#define WAIT_TICK_MS 200
/* How often declared files whose container was not found are looked for. */
#define FILES_RETRY_MS 1000
/* How often entries of unread files are checked for files gone. */
#define FILES_GC_MS (60 * 1000)
/* select() may run at most this many VM instructions (x1000). */
#define SELECT_HOOK_EVERY 1000
#define SELECT_HOOK_MAX 10000

/* A file of a pod that is not read because of the filters (or select()),
 * with what was decided about it. Only such files have one: it goes when
 * the file is read again, is gone, or its pod entry goes. */
typedef struct file_entry {
  char *path;
  uint64_t dev, ino;     /* the file the decision is about (a new file at the
                            path is decided afresh) */
  uint32_t gen;          /* the pod entry's gen when `excluded` was decided */
  unsigned excluded : 1; /* the filters excluded it at `gen` */
  unsigned no_pipeline : 1; /* select() chose no pipeline: for good */
  unsigned selected : 1;    /* select() chose `pipeline`, `more` before */
  int pipeline;
  uint64_t more;
  struct file_entry *next;
} file_entry_t;

/* A glob a pod declared (lugger.io/files), mapped to the node. */
typedef struct lg_k8s_vfile {
  char *uid, *container;
  char *mount_path; /* the mount's path in the container */
  char *host_dir;   /* where that mount's files are on the node */
  char *host_glob;  /* the declared glob, on the node */
} lg_k8s_vfile_t;

typedef struct pod_entry {
  char *uid;
  lg_k8s_pod_t *pod;     /* NULL while only waited for */
  uint64_t deleted_ms;   /* 0 = live */
  uint64_t wait_ms;      /* loop time a file first waited for it, 0 = none */
  int dirty;             /* changed since the last metadata refresh */
  int waited_out;        /* the wait is over (or logged as such) */
  uint32_t gen;          /* bumped whenever `pod` changes: its files' filter
                            decisions are made again */
  file_entry_t *files;   /* its files the filters (or select) keep unread */
  uint64_t files_digest; /* the pod's digest when its declared files were
                            last mapped (problems are logged once each) */
  int files_missing;     /* a declared file's container was not found then:
                            mapped again at the next retry */
  struct pod_entry *next;
} pod_entry_t;

struct lg_k8s {
  uv_loop_t *loop;
  const lg_config_t *conf;
  const lg_k8s_conf_t *kc;
  char *name;
  char component[128];
  uint32_t source_id;
  int pipeline;
  char *node;
  char *pats[4];
  size_t npats;
  char *excl[3];
  size_t nexcl;
  pod_entry_t *pods[POD_BUCKETS];
  lg_tail_t *tail;
  lg_k8s_api_t *api;
  int synced;             /* the API listed the pods at least once */
  uint64_t gc_ms;         /* loop time file entries were last checked */
  lg_k8s_vfile_t *vfiles; /* the live pods' declared files */
  size_t nvfiles;
  int files_retry;   /* a declared file's container was not found */
  uint64_t files_ms; /* loop time of the last retry */
  uv_async_t wake;
  uv_timer_t timer;
  int handles_open;
  int closing;
};
/* lg_k8s_meta.c */
pod_entry_t *lg__k8s_pod_find(lg_k8s_t *k, const char *uid, int create);
void lg__k8s_file_entry_free(file_entry_t *f);
void lg__k8s_pod_entry_free(pod_entry_t *e);
file_entry_t *lg__k8s_file_find(pod_entry_t *e, const char *path, uint64_t dev,
                                uint64_t ino);
file_entry_t *lg__k8s_file_get(pod_entry_t *e, const char *path, uint64_t dev,
                               uint64_t ino);
void lg__k8s_file_drop(pod_entry_t *e, file_entry_t *f);
int lg__k8s_add_s(lg_meta_t *m, const char *key, const char *v);
lg_meta_t *lg__k8s_build_meta(const lg_k8s_t *k, const char *path,
                              const lg_k8s_path_t *pi, const lg_k8s_pod_t *p);

/* lg_k8s_files.c */
void lg__k8s_vfile_free_one(lg_k8s_vfile_t *v);
void lg__k8s_vfile_free(lg_k8s_vfile_t *v, size_t n);
/* Maps the declared files of the live pods again; changes the tail's
 * patterns when the globs changed. */
void lg__k8s_files_update(lg_k8s_t *k);
/* The declared glob `path` (a path on the node) matches, or NULL. */
const lg_k8s_vfile_t *lg__k8s_files_find(const lg_k8s_t *k, const char *path);
/* The on_file hook for a declared file. */
int lg__k8s_files_on_file(lg_k8s_t *k, const lg_k8s_vfile_t *vf,
                          lg_tail_file_info_t *info);

/* lg_k8s_runtime.c: where container `c`'s own filesystem holds `glob`:
 * `dir` (on the node, as lugger sees it) and `mp` (the path in the
 * container that `dir` is; "" for its root). 0, or -1 when no runtime
 * knows the container. */
int lg__k8s_runtime_root(const lg_k8s_t *k, const lg_k8s_container_t *c,
                         const char *glob, char *dir, size_t dl, char *mp,
                         size_t ml);

/* lg_k8s_filter.c */
int lg__k8s_excluded(const lg_k8s_filter_t *f, const lg_k8s_path_t *pi,
                     const lg_k8s_pod_t *p, char *why, size_t n);
int lg__k8s_filtered_out(const lg_k8s_t *k, const lg_k8s_path_t *pi,
                         const lg_k8s_pod_t *p, char *why, size_t n);
int lg__k8s_run_select(lg_k8s_t *k, const char *path, const lg_meta_t *m,
                       uint64_t *more);

#endif
