/*
 * lg_k8s.c - the `kubernetes` source on top of lg_tail: paths to metadata,
 * filters, select(), and pod metadata from the API (lg_k8s_api.c).
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
#include "sources/kubernetes/lg_k8s_api.h"
#include "core/lg_log.h"

#define POD_BUCKETS 256
/* How long a deleted pod's metadata stays in the cache. */
#define TOMBSTONE_MS (10 * 60 * 1000)
/* Timer period while files wait for their pod, and for purging. */
#define WAIT_TICK_MS 200
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

typedef struct pod_entry {
  char *uid;
  lg_k8s_pod_t *pod;   /* NULL while only waited for */
  uint64_t deleted_ms; /* 0 = live */
  uint64_t wait_ms;    /* loop time a file first waited for it, 0 = none */
  int dirty;           /* changed since the last metadata refresh */
  int waited_out;      /* the wait is over (or logged as such) */
  uint32_t gen;        /* bumped whenever `pod` changes: its files' filter
                          decisions are made again */
  file_entry_t *files; /* its files the filters (or select) keep unread */
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
  int synced;     /* the API listed the pods at least once */
  uint64_t gc_ms; /* loop time file entries were last checked */
  uv_async_t wake;
  uv_timer_t timer;
  int handles_open;
  int closing;
};

/* ------------------------------------------------------------------ */
/* Config. */

static void free_res(void **v, size_t n) {
  for (size_t i = 0; v != NULL && i < n; i++)
    pcre2_code_free(v[i]);
  free(v);
}

static void free_strs(char **v, size_t n) {
  for (size_t i = 0; v != NULL && i < n; i++)
    free(v[i]);
  free(v);
}

static void filter_free(lg_k8s_filter_t *f) {
  free_res(f->namespaces, f->nnamespaces);
  free_res(f->pods, f->npods);
  free_res(f->containers, f->ncontainers);
  free_strs(f->label_keys, f->nlabels);
  free_strs(f->label_vals, f->nlabels);
  free(f->regex_texts);
}

void lg_k8s_conf_free(lg_k8s_conf_t *c) {
  if (c == NULL)
    return;
  free(c->pods_dir);
  free(c->docker_dir);
  free(c->kube_api);
  free(c->token_file);
  free(c->ca_file);
  free(c->node_name);
  free_strs(c->annotations, c->nannotations);
  filter_free(&c->include);
  filter_free(&c->exclude);
  free(c->select_code);
  free(c);
}

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

/* ------------------------------------------------------------------ */
/* Paths. */

/* `path` below `dir` (with a '/' between): the rest, or NULL. */
static const char *below(const char *dir, const char *path) {
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/')
    n--;
  if (n == 0 || strncmp(dir, path, n) != 0 || path[n] != '/')
    return NULL;
  return path + n + 1;
}

int lg_k8s_parse_pods_path(const char *pods_dir, const char *path,
                           lg_k8s_path_t *out) {
  memset(out, 0, sizeof *out);
  out->restart = -1;
  const char *rest = below(pods_dir, path);
  if (rest == NULL || strlen(rest) >= sizeof out->buf)
    return -EINVAL;
  char *b = out->buf;
  strcpy(b, rest);
  char *s1 = strchr(b, '/');
  if (s1 == NULL)
    return -EINVAL;
  char *s2 = strchr(s1 + 1, '/');
  if (s2 == NULL || strchr(s2 + 1, '/') != NULL)
    return -EINVAL;
  *s1 = *s2 = '\0';
  /* <namespace>_<pod>_<uid>: namespace and pod names are DNS labels and
   * subdomains (no '_'), so the first two '_' split it. */
  char *u1 = strchr(b, '_');
  char *u2 = u1 ? strchr(u1 + 1, '_') : NULL;
  if (u1 == NULL || u2 == NULL || u1 == b || u2 == u1 + 1 || u2[1] == '\0')
    return -EINVAL;
  *u1 = *u2 = '\0';
  out->ns = b;
  out->pod = u1 + 1;
  out->uid = u2 + 1;
  out->container = s1 + 1;
  if (out->container[0] == '\0')
    return -EINVAL;
  /* <restart>.log or <restart>.log.<timestamp> */
  const char *file = s2 + 1;
  char *end = NULL;
  errno = 0;
  long long r = strtoll(file, &end, 10);
  if (end != file && errno == 0 && r >= 0 && strncmp(end, ".log", 4) == 0 &&
      (end[4] == '\0' || end[4] == '.'))
    out->restart = r;
  return 0;
}

/* Reads a whole small file; NULL on error or when over `max` bytes. */
static char *slurp(const char *path, size_t max) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  struct stat st;
  char *buf = NULL;
  if (fstat(fd, &st) == 0 && (size_t)st.st_size <= max &&
      (buf = malloc((size_t)st.st_size + 1)) != NULL) {
    size_t got = 0;
    while (got < (size_t)st.st_size) {
      ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
      if (n <= 0)
        break;
      got += (size_t)n;
    }
    buf[got] = '\0';
  }
  close(fd);
  return buf;
}

/* Appends `s` to out->buf; returns the copy or NULL when full. */
static const char *buf_put(lg_k8s_path_t *out, size_t *used, const char *s) {
  size_t n = strlen(s);
  if (*used + n + 1 > sizeof out->buf)
    return NULL;
  char *p = out->buf + *used;
  memcpy(p, s, n + 1);
  *used += n + 1;
  return p;
}

int lg_k8s_parse_docker_path(const char *docker_dir, const char *path,
                             lg_k8s_path_t *out) {
  memset(out, 0, sizeof *out);
  out->restart = -1;
  out->docker = 1;
  const char *rest = below(docker_dir, path);
  if (rest == NULL)
    return -EINVAL;
  const char *sl = strchr(rest, '/');
  if (sl == NULL || sl == rest || strchr(sl + 1, '/') != NULL)
    return -EINVAL;
  size_t idlen = (size_t)(sl - rest);
  if (idlen + 1 > 200 || strncmp(sl + 1, rest, idlen) != 0 ||
      strncmp(sl + 1 + idlen, "-json.log", 9) != 0)
    return -EINVAL;
  size_t used = 0;
  char id[256];
  memcpy(id, rest, idlen);
  id[idlen] = '\0';
  out->container_id = buf_put(out, &used, id);

  char cfg[4096];
  snprintf(cfg, sizeof cfg, "%.*s/config.v2.json", (int)(sl - path), path);
  char *text = slurp(cfg, 4u << 20);
  if (text == NULL)
    return 0;
  cJSON *root = cJSON_Parse(text);
  free(text);
  const cJSON *labels = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(root, "Config"), "Labels");
  static const char *const keys[] = {
      "io.kubernetes.pod.namespace", "io.kubernetes.pod.name",
      "io.kubernetes.pod.uid", "io.kubernetes.container.name"};
  const char **dst[] = {&out->ns, &out->pod, &out->uid, &out->container};
  for (int i = 0; i < 4; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(labels, keys[i]);
    if (cJSON_IsString(v) && v->valuestring[0] != '\0')
      *dst[i] = buf_put(out, &used, v->valuestring);
  }
  /* Docker's kubelet integration kept the restart count as a label. */
  const cJSON *rc = cJSON_GetObjectItemCaseSensitive(
      labels, "annotation.io.kubernetes.container.restartCount");
  if (cJSON_IsString(rc)) {
    char *end;
    long long r = strtoll(rc->valuestring, &end, 10);
    if (end != rc->valuestring && *end == '\0' && r >= 0)
      out->restart = r;
  }
  cJSON_Delete(root);
  return 0;
}

/* ------------------------------------------------------------------ */
/* The pod cache. */

static uint64_t hash_s(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static pod_entry_t *pod_find(lg_k8s_t *k, const char *uid, int create) {
  pod_entry_t **pp = &k->pods[hash_s(uid) % POD_BUCKETS];
  for (pod_entry_t *e = *pp; e != NULL; e = e->next)
    if (strcmp(e->uid, uid) == 0)
      return e;
  if (!create)
    return NULL;
  pod_entry_t *e = calloc(1, sizeof *e);
  if (e == NULL || (e->uid = strdup(uid)) == NULL) {
    free(e);
    return NULL;
  }
  e->next = *pp;
  *pp = e;
  return e;
}

static void file_entry_free(file_entry_t *f) {
  free(f->path);
  free(f);
}

static void pod_entry_free(pod_entry_t *e) {
  while (e->files != NULL) {
    file_entry_t *f = e->files;
    e->files = f->next;
    file_entry_free(f);
  }
  lg_k8s_pod_free(e->pod);
  free(e->uid);
  free(e);
}

/* The entry of `path` in `e`, or NULL; one about another file that was
 * at that path (another device+inode) is dropped. */
static file_entry_t *file_find(pod_entry_t *e, const char *path, uint64_t dev,
                               uint64_t ino) {
  for (file_entry_t **pp = &e->files; *pp != NULL; pp = &(*pp)->next) {
    file_entry_t *f = *pp;
    if (strcmp(f->path, path) != 0)
      continue;
    if (f->dev == dev && f->ino == ino)
      return f;
    *pp = f->next;
    file_entry_free(f);
    return NULL;
  }
  return NULL;
}

/* Like file_find, creating the entry; NULL when out of memory. */
static file_entry_t *file_get(pod_entry_t *e, const char *path, uint64_t dev,
                              uint64_t ino) {
  file_entry_t *f = file_find(e, path, dev, ino);
  if (f != NULL)
    return f;
  f = calloc(1, sizeof *f);
  if (f == NULL || (f->path = strdup(path)) == NULL) {
    free(f);
    return NULL;
  }
  f->dev = dev;
  f->ino = ino;
  f->next = e->files;
  e->files = f;
  return f;
}

static void file_drop(pod_entry_t *e, file_entry_t *f) {
  for (file_entry_t **pp = &e->files; *pp != NULL; pp = &(*pp)->next)
    if (*pp == f) {
      *pp = f->next;
      file_entry_free(f);
      return;
    }
}

/* ------------------------------------------------------------------ */
/* Metadata. */

static const lg_k8s_container_t *find_container(const lg_k8s_pod_t *p,
                                                const char *name) {
  for (size_t i = 0; p != NULL && name != NULL && i < p->ncontainers; i++)
    if (strcmp(p->containers[i].name, name) == 0)
      return &p->containers[i];
  return NULL;
}

static int add_s(lg_meta_t *m, const char *key, const char *v) {
  if (v == NULL || v[0] == '\0')
    return 0;
  return lg_meta_add_str(m, key, v, strlen(v));
}

/* container.image.name and .tag from "registry:5000/repo/app:1.2@sha256:…"
 * (OpenTelemetry semantic conventions: the name without the tag). */
static int add_image(lg_meta_t *m, const char *image) {
  if (image == NULL || image[0] == '\0')
    return 0;
  size_t n = strcspn(image, "@");
  const char *slash = memrchr(image, '/', n);
  const char *from = slash ? slash + 1 : image;
  const char *colon = memchr(from, ':', n - (size_t)(from - image));
  int rc = lg_meta_add_str(m, "container.image.name", image,
                           colon ? (size_t)(colon - image) : n);
  if (rc == 0 && colon != NULL)
    rc = lg_meta_add_str(m, "container.image.tag", colon + 1,
                         n - (size_t)(colon + 1 - image));
  return rc;
}

/* The workload that owns the pod: a ReplicaSet made by a Deployment is
 * named <deployment>-<pod-template-hash>. */
static int add_owner(lg_meta_t *m, const lg_k8s_pod_t *p) {
  const char *kind = p->owner_kind, *name = p->owner_name;
  if (kind == NULL || name == NULL || name[0] == '\0')
    return 0;
  int rc = 0;
  if (strcmp(kind, "ReplicaSet") == 0) {
    rc |= add_s(m, "k8s.replicaset.name", name);
    const char *hash = lg_k8s_pod_label(p, "pod-template-hash");
    size_t n = strlen(name), h = hash ? strlen(hash) : 0;
    if (hash != NULL && h > 0 && n > h + 1 && strcmp(name + n - h, hash) == 0 &&
        name[n - h - 1] == '-')
      rc |= lg_meta_add_str(m, "k8s.deployment.name", name, n - h - 1);
  } else if (strcmp(kind, "StatefulSet") == 0) {
    rc |= add_s(m, "k8s.statefulset.name", name);
  } else if (strcmp(kind, "DaemonSet") == 0) {
    rc |= add_s(m, "k8s.daemonset.name", name);
  } else if (strcmp(kind, "Job") == 0) {
    rc |= add_s(m, "k8s.job.name", name);
  }
  return rc;
}

static lg_meta_t *build_meta(const lg_k8s_t *k, const char *path,
                             const lg_k8s_path_t *pi, const lg_k8s_pod_t *p) {
  lg_meta_t *m = lg_meta_create();
  if (m == NULL)
    return NULL;
  int rc = lg_meta_add_str(m, "log.file.path", path, strlen(path));
  const char *ns = pi->ns, *pod = pi->pod, *uid = pi->uid;
  if (p != NULL) {
    ns = p->ns[0] ? p->ns : ns;
    pod = p->name[0] ? p->name : pod;
  }
  rc |= add_s(m, "k8s.namespace.name", ns);
  rc |= add_s(m, "k8s.pod.name", pod);
  rc |= add_s(m, "k8s.pod.uid", uid);
  rc |= add_s(m, "k8s.container.name", pi->container);
  if (pi->restart >= 0)
    rc |= lg_meta_add_int(m, "k8s.container.restart_count", pi->restart);
  const lg_k8s_container_t *c = find_container(p, pi->container);
  const char *cid = pi->container_id;
  if (cid == NULL && c != NULL && pi->restart >= 0) {
    if (pi->restart == c->restarts)
      cid = c->id;
    else if (pi->restart + 1 == c->restarts)
      cid = c->last_id;
  }
  rc |= add_s(m, "container.id", cid);
  rc |= add_s(m, "k8s.node.name", k->node);
  if (p != NULL) {
    rc |= add_s(m, "k8s.pod.ip", p->ip);
    if (c != NULL)
      rc |= add_image(m, c->image);
    rc |= add_owner(m, p);
    char key[512];
    for (size_t i = 0; i < p->nlabels; i++) {
      snprintf(key, sizeof key, "k8s.pod.label.%s", p->labels[i].k);
      rc |= lg_meta_add_str(m, key, p->labels[i].v, strlen(p->labels[i].v));
    }
    for (size_t i = 0; i < k->kc->nannotations; i++) {
      const char *v = lg_k8s_pod_annotation(p, k->kc->annotations[i]);
      if (v == NULL)
        continue;
      snprintf(key, sizeof key, "k8s.pod.annotation.%s", k->kc->annotations[i]);
      rc |= lg_meta_add_str(m, key, v, strlen(v));
    }
  }
  if (rc != 0 || lg_meta_seal(m) != 0) {
    lg_meta_unref(m);
    return NULL;
  }
  return m;
}

/* ------------------------------------------------------------------ */
/* Filters. */

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
static int excluded(const lg_k8s_filter_t *f, const lg_k8s_path_t *pi,
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
static int filtered_out(const lg_k8s_t *k, const lg_k8s_path_t *pi,
                        const lg_k8s_pod_t *p, char *why, size_t n) {
  return !included(&k->kc->include, pi, p, why, n) ||
         excluded(&k->kc->exclude, pi, p, why, n);
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

/* ------------------------------------------------------------------ */
/* select(source): run once per new file, in the config's Lua state. */

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
static int run_select(lg_k8s_t *k, const char *path, const lg_meta_t *m,
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

/* ------------------------------------------------------------------ */
/* The hook. */

static int parse_path(const lg_k8s_t *k, const char *path, lg_k8s_path_t *pi) {
  if (k->kc->pods_dir[0] &&
      lg_k8s_parse_pods_path(k->kc->pods_dir, path, pi) == 0)
    return 0;
  if (k->kc->docker_dir[0] &&
      lg_k8s_parse_docker_path(k->kc->docker_dir, path, pi) == 0)
    return 0;
  return -EINVAL;
}

static void need_timer(lg_k8s_t *k);

int lg_k8s_waiting(const lg_k8s_t *k) {
  /* A wait past api_wait ends at the next rescan (or its file is gone). */
  uint64_t now = uv_now(k->loop);
  for (size_t b = 0; b < POD_BUCKETS; b++)
    for (const pod_entry_t *e = k->pods[b]; e != NULL; e = e->next)
      if (e->pod == NULL && e->wait_ms != 0 && !e->waited_out &&
          now - e->wait_ms < k->kc->api_wait_ms + 1000)
        return 1;
  return 0;
}

/* refresh = 2 for a file the tail reads, whose pod changed: the filters
 * are asked again with the pod as it is now. A pod excluded now stops the
 * file (LG_TAIL_SKIP, the tail logs it with info->why); else the file
 * gets the new metadata. select() is not asked again: it chose once. */
static int refresh_followed(lg_k8s_t *k, lg_tail_file_info_t *info,
                            const lg_k8s_path_t *pi, pod_entry_t *e) {
  char why[200];
  if (e->pod != NULL && filtered_out(k, pi, e->pod, why, sizeof why)) {
    file_entry_t *fe = file_get(e, info->path, info->dev, info->ino);
    if (fe != NULL) {
      fe->excluded = 1;
      fe->gen = e->gen;
      /* Its pipelines, for when it is read again. */
      fe->selected = 1;
      fe->pipeline = info->pipeline;
      fe->more = info->more_pipelines;
    }
    snprintf(info->why, sizeof info->why, "pod %s/%s is excluded now (%s)",
             pi->ns, pi->pod, why);
    return LG_TAIL_SKIP;
  }
  info->meta = build_meta(k, info->path, pi, e->pod);
  if (info->meta == NULL)
    lg_log_error(k->component, "%s: out of memory building metadata",
                 info->path);
  return LG_TAIL_FOLLOW;
}

int lg_k8s_on_file(void *ud, lg_tail_file_info_t *info) {
  lg_k8s_t *k = ud;
  lg_k8s_path_t pi;
  if (parse_path(k, info->path, &pi) != 0) {
    if (info->refresh)
      return LG_TAIL_FOLLOW;
    lg_log_debug(k->component, "%s: not a container log path; skipped",
                 info->path);
    return LG_TAIL_SKIP;
  }
  pod_entry_t *e = pi.uid ? pod_find(k, pi.uid, 0) : NULL;
  if (info->refresh == 2) {
    if (e == NULL || !e->dirty)
      return LG_TAIL_FOLLOW; /* its pod did not change */
    return refresh_followed(k, info, &pi, e);
  }
  const lg_k8s_pod_t *p = e != NULL ? e->pod : NULL;
  file_entry_t *fe = NULL;
  if (!info->refresh) {
    /* What was decided about this file stands while its pod is as it was
     * then: a rescan costs a lookup, not the filters or select() again. */
    fe = e != NULL ? file_find(e, info->path, info->dev, info->ino) : NULL;
    if (fe != NULL && (fe->no_pipeline || (fe->excluded && fe->gen == e->gen)))
      return LG_TAIL_SKIP;
    /* A pod the API has not described yet: wait for it a little. */
    if (k->api != NULL && p == NULL && pi.uid != NULL) {
      if (e == NULL)
        e = pod_find(k, pi.uid, 1);
      if (e != NULL && !e->waited_out) {
        uint64_t now = uv_now(k->loop);
        if (e->wait_ms == 0)
          e->wait_ms = now;
        if (now - e->wait_ms < k->kc->api_wait_ms) {
          need_timer(k);
          return LG_TAIL_SKIP;
        }
        e->waited_out = 1;
        lg_log_warn(k->component,
                    "pod %s/%s (%s): not described by the API after %" PRIu64
                    " ms; reading its logs with the metadata of their paths",
                    pi.ns, pi.pod, pi.uid, k->kc->api_wait_ms);
      }
    }
    char why[200];
    if (filtered_out(k, &pi, p, why, sizeof why)) {
      if (e != NULL) {
        /* Remember it: appends and rescans skip it for nothing until the
         * pod changes (then the filters are asked again). */
        if (fe == NULL)
          fe = file_get(e, info->path, info->dev, info->ino);
        if (fe != NULL) {
          if (!fe->excluded)
            lg_log_debug(k->component,
                         "%s: pod %s/%s excluded by the source's filters (%s)",
                         info->path, pi.ns, pi.pod, why);
          fe->excluded = 1;
          fe->gen = e->gen;
        }
      } else {
        lg_log_debug(k->component, "%s: excluded by the source's filters (%s)",
                     info->path, why);
      }
      return LG_TAIL_SKIP;
    }
    /* Under pods_dir the runtime writes CRI lines; a symlink there points
     * at another runtime's file (dockershim: Docker json-file). */
    struct stat st;
    if (pi.docker)
      info->format = LG_FORMAT_DOCKER;
    else if (lstat(info->path, &st) == 0 && S_ISLNK(st.st_mode))
      info->format = LG_FORMAT_AUTO;
    else
      info->format = LG_FORMAT_CRI;
  }
  info->meta = build_meta(k, info->path, &pi, p);
  if (info->meta == NULL) {
    lg_log_error(k->component, "%s: out of memory building metadata",
                 info->path);
    return info->refresh ? LG_TAIL_FOLLOW : LG_TAIL_SKIP;
  }
  if (!info->refresh) {
    if (fe != NULL && fe->selected) {
      /* select() decided once for this file, before it was excluded. */
      info->pipeline = fe->pipeline;
      info->more_pipelines = fe->more;
    } else {
      info->pipeline =
          run_select(k, info->path, info->meta, &info->more_pipelines);
    }
    if (info->pipeline < 0) {
      lg_log_debug(k->component, "%s: select() chose no pipeline; skipped",
                   info->path);
      if (e != NULL && (fe != NULL || (fe = file_get(e, info->path, info->dev,
                                                     info->ino)) != NULL))
        fe->no_pipeline = 1;
      lg_meta_unref(info->meta);
      info->meta = NULL;
      return LG_TAIL_SKIP;
    }
    if (fe != NULL) {
      /* Excluded before (at its first sight or while it was read), matching
       * now: what its pod wrote while excluded stays unread, as if the
       * filters had dropped those records; reading resumes at its end. */
      info->from_end = 1;
      snprintf(info->why, sizeof info->why,
               "pod %s/%s matches the source's filters again; what it wrote "
               "while excluded is not read",
               pi.ns, pi.pod);
      file_drop(e, fe);
    }
  }
  return LG_TAIL_FOLLOW;
}

/* ------------------------------------------------------------------ */
/* API events (loop thread). */

static void apply_events(lg_k8s_t *k, lg_k8s_ev_t *ev) {
  uint64_t now = uv_now(k->loop);
  /* recheck: a pod with files the filters keep unread changed (they may
   * match now). */
  int changed = 0, arrived = 0, recheck = 0;
  for (; ev != NULL; ev = ev->next) {
    if (ev->type == LG_K8S_EV_LIST) {
      /* Pods missing from a relist were deleted while we did not watch. */
      for (size_t b = 0; b < POD_BUCKETS; b++)
        for (pod_entry_t *e = k->pods[b]; e != NULL; e = e->next) {
          int listed = 0;
          for (size_t i = 0; i < ev->npods && !listed; i++)
            listed = strcmp(ev->pods[i]->uid, e->uid) == 0;
          if (!listed && e->pod != NULL && e->deleted_ms == 0)
            e->deleted_ms = now;
        }
      if (!k->synced)
        lg_log_info(k->component, "Kubernetes API: %zu pods on node %s",
                    ev->npods, k->node);
      k->synced = 1;
      arrived = 1;
    }
    for (size_t i = 0; i < ev->npods; i++) {
      lg_k8s_pod_t *p = ev->pods[i];
      pod_entry_t *e = pod_find(k, p->uid, 1);
      if (e == NULL)
        continue;
      if (ev->type == LG_K8S_EV_DELETED) {
        /* Keep the last state: its files are drained with it. */
        if (e->deleted_ms == 0)
          e->deleted_ms = now;
        if (e->pod == NULL) {
          e->pod = p;
          ev->pods[i] = NULL;
          e->dirty = changed = arrived = 1;
          e->gen++;
          recheck |= e->files != NULL;
        }
        continue;
      }
      e->deleted_ms = 0;
      if (e->pod == NULL || e->pod->digest != p->digest) {
        arrived |= e->pod == NULL;
        lg_k8s_pod_free(e->pod);
        e->pod = p;
        ev->pods[i] = NULL;
        e->dirty = changed = 1;
        e->gen++;
        recheck |= e->files != NULL;
      }
    }
  }
  if (k->tail == NULL)
    return;
  if (changed) {
    /* Files read now get the new metadata, or stop when their pod is
     * excluded now. */
    lg_tail_refresh_meta(k->tail, k->source_id);
    for (size_t b = 0; b < POD_BUCKETS; b++)
      for (pod_entry_t *e = k->pods[b]; e != NULL; e = e->next)
        e->dirty = 0;
  }
  if (arrived || recheck)
    lg_tail_rescan(k->tail); /* files that waited for their pod, or that
                                its filters may let through now */
}

static void on_wake(uv_async_t *h) {
  lg_k8s_t *k = h->data;
  if (k->api == NULL)
    return;
  lg_k8s_ev_t *ev = lg_k8s_api_take(k->api);
  if (ev == NULL)
    return;
  apply_events(k, ev);
  lg_k8s_ev_free(ev);
}

/* Drops the entries of unread files that are gone (a rotated file of an
 * excluded pod the kubelet deleted): the rest of a pod's entries live as
 * long as it. */
static void files_gc(pod_entry_t *e) {
  for (file_entry_t **pp = &e->files; *pp != NULL;) {
    file_entry_t *f = *pp;
    struct stat st;
    if (stat(f->path, &st) != 0 || (uint64_t)st.st_dev != f->dev ||
        (uint64_t)st.st_ino != f->ino) {
      *pp = f->next;
      file_entry_free(f);
      continue;
    }
    pp = &f->next;
  }
}

/* Ends waits that are over, forgets pods deleted long ago, and now and
 * then entries of files that are gone. */
static void on_timer(uv_timer_t *h) {
  lg_k8s_t *k = h->data;
  uint64_t now = uv_now(k->loop);
  int over = 0, waiting = 0;
  int gc = now - k->gc_ms >= FILES_GC_MS;
  if (gc)
    k->gc_ms = now;
  for (size_t b = 0; b < POD_BUCKETS; b++)
    for (pod_entry_t **pp = &k->pods[b]; *pp != NULL;) {
      pod_entry_t *e = *pp;
      if ((e->deleted_ms != 0 && now - e->deleted_ms > TOMBSTONE_MS) ||
          (e->pod == NULL && e->waited_out &&
           now - e->wait_ms > TOMBSTONE_MS)) {
        *pp = e->next;
        pod_entry_free(e);
        continue;
      }
      if (e->pod == NULL && e->wait_ms != 0 && !e->waited_out) {
        if (now - e->wait_ms >= k->kc->api_wait_ms)
          over = 1;
        else
          waiting = 1;
      }
      if (gc)
        files_gc(e);
      pp = &e->next;
    }
  if (over && k->tail != NULL)
    lg_tail_rescan(k->tail);
  if (!waiting && !over && k->api == NULL)
    uv_timer_stop(&k->timer);
}

static void need_timer(lg_k8s_t *k) {
  if (!k->closing && !uv_is_active((uv_handle_t *)&k->timer))
    uv_timer_start(&k->timer, on_timer, WAIT_TICK_MS, WAIT_TICK_MS);
}

/* ------------------------------------------------------------------ */
/* Life cycle. */

lg_k8s_t *lg_k8s_create(uv_loop_t *loop, const lg_config_t *conf,
                        const char *name, uint32_t source_id, int pipeline,
                        const lg_k8s_conf_t *kc) {
  lg_k8s_t *k = calloc(1, sizeof *k);
  if (k == NULL)
    return NULL;
  k->loop = loop;
  k->conf = conf;
  k->kc = kc;
  k->source_id = source_id;
  k->pipeline = pipeline;
  k->name = strdup(name);
  snprintf(k->component, sizeof k->component, "source.%s", name);
  const char *node = kc->node_name ? kc->node_name : getenv("NODE_NAME");
  k->node = strdup(node ? node : "");
  int ok = k->name != NULL && k->node != NULL;
  char p[4200];
  if (kc->pods_dir[0]) {
    snprintf(p, sizeof p, "%s/*/*/*.log", kc->pods_dir);
    ok &= (k->pats[k->npats++] = strdup(p)) != NULL;
    snprintf(p, sizeof p, "%s/*/*/*.log.*", kc->pods_dir);
    ok &= (k->pats[k->npats++] = strdup(p)) != NULL;
  }
  if (kc->docker_dir[0]) {
    snprintf(p, sizeof p, "%s/*/*-json.log", kc->docker_dir);
    ok &= (k->pats[k->npats++] = strdup(p)) != NULL;
    snprintf(p, sizeof p, "%s/*/*-json.log.*", kc->docker_dir);
    ok &= (k->pats[k->npats++] = strdup(p)) != NULL;
  }
  /* The kubelet compresses older rotated files (and writes them through a
   * temporary file first): not text. */
  static const char *const ex[] = {"*.gz", "*.tmp", "*.gz.tmp"};
  for (size_t i = 0; i < 3; i++)
    ok &= (k->excl[k->nexcl++] = strdup(ex[i])) != NULL;
  uv_async_init(loop, &k->wake, on_wake);
  uv_timer_init(loop, &k->timer);
  k->wake.data = k->timer.data = k;
  k->handles_open = 2;
  if (!ok) {
    lg_k8s_close(k);
    return NULL;
  }
  return k;
}

void lg_k8s_patterns(const lg_k8s_t *k, const char *const **paths,
                     size_t *npaths, const char *const **exclude,
                     size_t *nexclude) {
  *paths = (const char *const *)k->pats;
  *npaths = k->npats;
  *exclude = (const char *const *)k->excl;
  *nexclude = k->nexcl;
}

int lg_k8s_start(lg_k8s_t *k, lg_tail_t *tail) {
  k->tail = tail;
  const lg_k8s_conf_t *kc = k->kc;
  if (strcmp(kc->kube_api, "off") == 0)
    return 0;
  char url[1024];
  const char *token = kc->token_file, *ca = kc->ca_file;
  if (strcmp(kc->kube_api, "in-cluster") == 0) {
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (host == NULL || host[0] == '\0') {
      lg_log_warn(k->component,
                  "kube_api = \"in-cluster\" but KUBERNETES_SERVICE_HOST is "
                  "not set (not in a pod?): no pod metadata from the API");
      return 0;
    }
    snprintf(url, sizeof url,
             strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host,
             port && port[0] ? port : "443");
    if (token == NULL)
      token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    if (ca == NULL)
      ca = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  } else {
    snprintf(url, sizeof url, "%s", kc->kube_api);
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
      url[--n] = '\0';
  }
  if (k->node[0] == '\0') {
    lg_log_error(k->component,
                 "kube_api: the node name is unknown (set NODE_NAME from "
                 "spec.nodeName, or node_name): no pod metadata from the "
                 "API");
    return 0;
  }
  lg_k8s_api_opts_t o = {.component = k->component,
                         .base_url = url,
                         .token_file = token,
                         .ca_file = ca,
                         .node_name = k->node,
                         .wake = &k->wake};
  k->api = lg_k8s_api_start(&o);
  if (k->api == NULL)
    return -ENOMEM;
  need_timer(k);
  return 0;
}

void lg_k8s_detach(lg_k8s_t *k) {
  if (k != NULL)
    k->tail = NULL;
}

static void k8s_free(lg_k8s_t *k) {
  for (size_t b = 0; b < POD_BUCKETS; b++)
    while (k->pods[b] != NULL) {
      pod_entry_t *e = k->pods[b];
      k->pods[b] = e->next;
      pod_entry_free(e);
    }
  for (size_t i = 0; i < k->npats; i++)
    free(k->pats[i]);
  for (size_t i = 0; i < k->nexcl; i++)
    free(k->excl[i]);
  free(k->name);
  free(k->node);
  free(k);
}

static void on_closed(uv_handle_t *h) {
  lg_k8s_t *k = h->data;
  if (--k->handles_open == 0)
    k8s_free(k);
}

void lg_k8s_close(lg_k8s_t *k) {
  if (k == NULL || k->closing)
    return;
  k->closing = 1;
  k->tail = NULL;
  lg_k8s_api_stop(k->api); /* joins: no uv_async_send after this */
  k->api = NULL;
  uv_close((uv_handle_t *)&k->wake, on_closed);
  uv_close((uv_handle_t *)&k->timer, on_closed);
}

lg_batch_t *lg_k8s_batch_clone(const lg_batch_t *b) {
  if (b->nfields > 0)
    return NULL;
  lg_batch_t *c = lg_batch_create(b->data_len);
  if (c == NULL)
    return NULL;
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    if (lg_batch_add(c, b->data + r->body_off, r->body_len, r->time_ns,
                     r->offset, r->end_offset, r->flags) < 0) {
      lg_batch_destroy(c);
      return NULL;
    }
  }
  lg_batch_set_meta(c, b->meta);
  c->source_id = b->source_id;
  c->pipeline = b->pipeline;
  c->fingerprint = b->fingerprint;
  c->checkpoint_offset = b->checkpoint_offset;
  c->file_key = b->file_key;
  return c;
}

/* ------------------------------------------------------------------ */
/* Sidecar mode. */

int lg_k8s_downward_on_file(void *ud, lg_tail_file_info_t *info) {
  (void)ud;
  lg_meta_t *m = lg_meta_create();
  if (m == NULL)
    return info->refresh ? LG_TAIL_FOLLOW : LG_TAIL_SKIP;
  int rc = lg_meta_add_str(m, "log.file.path", info->path, strlen(info->path));
  static const char *const env[][2] = {{"POD_NAMESPACE", "k8s.namespace.name"},
                                       {"POD_NAME", "k8s.pod.name"},
                                       {"POD_UID", "k8s.pod.uid"},
                                       {"CONTAINER_NAME", "k8s.container.name"},
                                       {"NODE_NAME", "k8s.node.name"}};
  for (size_t i = 0; i < sizeof env / sizeof env[0]; i++)
    rc |= add_s(m, env[i][1], getenv(env[i][0]));
  if (rc != 0 || lg_meta_seal(m) != 0) {
    lg_meta_unref(m);
    return info->refresh ? LG_TAIL_FOLLOW : LG_TAIL_SKIP;
  }
  info->meta = m;
  return LG_TAIL_FOLLOW;
}
