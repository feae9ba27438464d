/*
 * lg_k8s_files.c - log files a pod declares inside its containers, read
 * from the node through the pod's volumes.
 *
 * A pod annotated
 *
 *   lugger.io/files: "app:/var/log/app/app.log, worker:/data/logs/[a-z]-*"
 *
 * (entries of container name ':' in-container glob, separated by commas
 * or white space) has each glob mapped through the container's
 * volumeMounts and the pod's volumes (from the API) to where the node
 * keeps the files: the mount whose mountPath is the longest prefix of the
 * glob's path (at a '/'), then
 *
 *   emptyDir <kubelet_dir>/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>
 *   hostPath   <host_root><hostPath.path>
 *
 * plus the mount's subPath and the rest of the glob. (The kubelet's
 * layout: pkg/kubelet's pod and volume directories; a subPath mount is a
 * bind of <volume>/<subPath>.) The globs join the source's patterns in the
 * tail (lg_tail_set_source_paths); a pod's go when it is deleted, and its
 * files are read to their end as the kubelet removes them.
 *
 * A declared file is read with the source's files_format, multiline,
 * filters and select() like a container's stdout log; its records carry
 * the pod's metadata, k8s.container.name and log.file.path = the path in
 * the container. Only files inside the volume's directory are read: a
 * symlink out of it (a pod could point one at any file of the node) is
 * refused. A declared path on no volume is looked for in the container's
 * own filesystem (lg_k8s_runtime.c: containerd's task bundle, or Docker's
 * API). A declared path found nowhere, or on a volume of another kind, is
 * an error naming the pod, logged once per version of the pod.
 */
#include "sources/kubernetes/lg_k8s_internal.h"

#include <fnmatch.h>
#include <limits.h>

#define FILES_ANNOTATION "lugger.io/files"

void lg__k8s_vfile_free_one(lg_k8s_vfile_t *v) {
  free(v->uid);
  free(v->container);
  free(v->mount_path);
  free(v->host_dir);
  free(v->host_glob);
  memset(v, 0, sizeof *v);
}

void lg__k8s_vfile_free(lg_k8s_vfile_t *v, size_t n) {
  for (size_t i = 0; v != NULL && i < n; i++)
    lg__k8s_vfile_free_one(&v[i]);
  free(v);
}

static const lg_k8s_container_t *container_of(const lg_k8s_pod_t *p,
                                              const char *name) {
  for (size_t i = 0; i < p->ncontainers; i++)
    if (strcmp(p->containers[i].name, name) == 0)
      return &p->containers[i];
  return NULL;
}

static const lg_k8s_volume_t *volume_of(const lg_k8s_pod_t *p,
                                        const char *name) {
  for (size_t i = 0; i < p->nvolumes; i++)
    if (strcmp(p->volumes[i].name, name) == 0)
      return &p->volumes[i];
  return NULL;
}

/* True when `path` has a "." or ".." component (it could leave the
 * volume). */
static int has_dot_part(const char *path) {
  for (const char *s = path; *s;) {
    while (*s == '/')
      s++;
    size_t n = strcspn(s, "/");
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
      return 1;
    s += n;
  }
  return 0;
}

static int fill(lg_k8s_vfile_t *out, const char *uid, const char *cname,
                const char *mount_path, const char *dir, const char *rest) {
  char g[PATH_MAX + 1024];
  snprintf(g, sizeof g, "%s%s", dir, rest);
  out->uid = strdup(uid);
  out->container = strdup(cname);
  out->mount_path = strdup(mount_path);
  out->host_dir = strdup(dir);
  out->host_glob = strdup(g);
  return out->uid && out->container && out->mount_path && out->host_dir &&
                 out->host_glob
             ? 0
             : -1;
}

/* Maps one annotation entry of pod `p`. Returns 0 and fills `out`, or -1
 * with `why` set. */
static int map_entry(const lg_k8s_t *k, const lg_k8s_pod_t *p,
                     const char *cname, const char *glob, lg_k8s_vfile_t *out,
                     int *missing, char *why, size_t n) {
  if (glob[0] != '/' || has_dot_part(glob)) {
    snprintf(why, n, "the path must be absolute, without . or .. parts");
    return -1;
  }
  const lg_k8s_container_t *c = container_of(p, cname);
  if (c == NULL) {
    snprintf(why, n, "the pod has no container %s", cname);
    return -1;
  }
  const lg_k8s_mount_t *best = NULL;
  size_t best_len = 0;
  for (size_t i = 0; i < c->nmounts; i++) {
    const char *mp = c->mounts[i].path;
    size_t len = strlen(mp);
    while (len > 1 && mp[len - 1] == '/')
      len--;
    if (len > best_len && strncmp(glob, mp, len) == 0 && glob[len] == '/') {
      best = &c->mounts[i];
      best_len = len;
    }
  }
  if (best == NULL) {
    /* Not on a volume: in the container's own filesystem, which only the
     * runtime knows. */
    char rdir[PATH_MAX], rmp[PATH_MAX];
    if (lg__k8s_runtime_root(k, c, glob, rdir, sizeof rdir, rmp, sizeof rmp) ==
        0) {
      if (fill(out, p->uid, cname, rmp, rdir, glob + strlen(rmp)) != 0) {
        snprintf(why, n, "out of memory");
        return -1;
      }
      return 0;
    }
    /* The task may not be there yet (the API can tell the container's id
     * before its task runs): looked for again in a while. */
    *missing = 1;
    char mounts[600] = "";
    for (size_t i = 0; i < c->nmounts; i++)
      snprintf(mounts + strlen(mounts), sizeof mounts - strlen(mounts), "%s%s",
               i ? ", " : "", c->mounts[i].path);
    snprintf(why, n,
             "it is on no volume of container %s (its mounts: %s), and "
             "the container's own filesystem was not found (container %s: "
             "no containerd task under containerd_state, no answer from "
             "docker_socket)",
             cname, mounts[0] ? mounts : "none",
             c->id[0] ? c->id : "(no container id yet)");
    return -1;
  }
  const lg_k8s_volume_t *v = volume_of(p, best->volume);
  if (v == NULL) {
    snprintf(why, n, "volume %s of mount %s is not in the pod's volumes",
             best->volume, best->path);
    return -1;
  }
  if (has_dot_part(best->sub_path)) {
    snprintf(why, n, "the subPath of mount %s has . or .. parts", best->path);
    return -1;
  }
  char dir[PATH_MAX];
  if (strcmp(v->kind, "emptyDir") == 0)
    snprintf(dir, sizeof dir, "%s/pods/%s/volumes/kubernetes.io~empty-dir/%s",
             k->kc->kubelet_dir, p->uid, v->name);
  else if (strcmp(v->kind, "hostPath") == 0 && v->host_path[0] == '/')
    snprintf(dir, sizeof dir, "%s%s", k->kc->host_root, v->host_path);
  else {
    snprintf(why, n,
             "it is on volume %s (%s), not an emptyDir or hostPath volume, "
             "whose files lugger can find on the node",
             v->name, v->kind);
    return -1;
  }
  size_t dl = strlen(dir);
  while (dl > 1 && dir[dl - 1] == '/')
    dir[--dl] = '\0';
  if (best->sub_path[0])
    snprintf(dir + dl, sizeof dir - dl, "/%s", best->sub_path);
  char mp[PATH_MAX];
  snprintf(mp, sizeof mp, "%.*s", (int)best_len, glob);
  if (fill(out, p->uid, cname, mp, dir, glob + best_len) != 0) {
    snprintf(why, n, "out of memory");
    return -1;
  }
  return 0;
}

/* Adds the entries of pod `e`'s annotation to v[*n...] (growing it). */
static int add_pod(lg_k8s_t *k, pod_entry_t *e, lg_k8s_vfile_t **v, size_t *n,
                   size_t *cap) {
  const lg_k8s_pod_t *p = e->pod;
  const char *ann = lg_k8s_pod_annotation(p, FILES_ANNOTATION);
  if (ann == NULL)
    return 0;
  int log = e->files_digest != p->digest;
  if (!log && !e->files_missing) {
    /* As mapped before: no runtime is asked again. */
    for (size_t i = 0; i < k->nvfiles; i++) {
      if (strcmp(k->vfiles[i].uid, p->uid) != 0)
        continue;
      if (LG_GROW(*v, *cap, *n + 1, 8) != 0)
        return -ENOMEM;
      const lg_k8s_vfile_t *o = &k->vfiles[i];
      if (fill(&(*v)[*n], o->uid, o->container, o->mount_path, o->host_dir,
               o->host_glob + strlen(o->host_dir)) != 0) {
        lg__k8s_vfile_free_one(&(*v)[*n]);
        return -ENOMEM;
      }
      (*n)++;
    }
    return 0;
  }
  e->files_digest = p->digest;
  e->files_missing = 0;
  char *copy = strdup(ann);
  if (copy == NULL)
    return -ENOMEM;
  char *save = NULL;
  for (char *tok = strtok_r(copy, ", \t\r\n", &save); tok != NULL;
       tok = strtok_r(NULL, ", \t\r\n", &save)) {
    char why[800];
    char *colon = strchr(tok, ':');
    if (colon == NULL || colon == tok) {
      if (log)
        lg_log_error(k->component,
                     "pod %s/%s: annotation %s: entry \"%s\" is not "
                     "<container>:<path>; ignored",
                     p->ns, p->name, FILES_ANNOTATION, tok);
      continue;
    }
    *colon = '\0';
    if (LG_GROW(*v, *cap, *n + 1, 8) != 0) {
      free(copy);
      return -ENOMEM;
    }
    lg_k8s_vfile_t *out = &(*v)[*n];
    memset(out, 0, sizeof *out);
    int missing = 0;
    int rc = map_entry(k, p, tok, colon + 1, out, &missing, why, sizeof why);
    if (missing) {
      e->files_missing = 1;
      k->files_retry = 1;
    }
    if (rc != 0) {
      lg__k8s_vfile_free_one(out);
      if (log)
        lg_log_error(k->component,
                     "pod %s/%s: annotation %s: %s:%s: %s; not read", p->ns,
                     p->name, FILES_ANNOTATION, tok, colon + 1, why);
      continue;
    }
    if (log)
      lg_log_info(k->component, "pod %s/%s: reading %s:%s from the node's %s",
                  p->ns, p->name, tok, colon + 1, out->host_glob);
    (*n)++;
  }
  free(copy);
  return 0;
}

void lg__k8s_files_update(lg_k8s_t *k) {
  if (k->tail == NULL || k->kc->kubelet_dir == NULL ||
      k->kc->kubelet_dir[0] == '\0')
    return;
  lg_k8s_vfile_t *v = NULL;
  size_t n = 0, cap = 0;
  for (size_t b = 0; b < POD_BUCKETS; b++)
    for (pod_entry_t *e = k->pods[b]; e != NULL; e = e->next)
      if (e->pod != NULL && e->deleted_ms == 0 &&
          add_pod(k, e, &v, &n, &cap) != 0) {
        lg_log_error(k->component, "declared files: out of memory");
        lg__k8s_vfile_free(v, n);
        return;
      }
  /* The tail's patterns change only when the set of globs does. */
  int same = n == k->nvfiles;
  for (size_t i = 0; same && i < n; i++)
    same = strcmp(v[i].host_glob, k->vfiles[i].host_glob) == 0;
  lg__k8s_vfile_free(k->vfiles, k->nvfiles);
  k->vfiles = v;
  k->nvfiles = n;
  if (same)
    return;
  const char **pats = calloc(k->npats + n + 1, sizeof *pats);
  if (pats == NULL) {
    lg_log_error(k->component, "declared files: out of memory");
    return;
  }
  size_t np = 0;
  for (size_t i = 0; i < k->npats; i++)
    pats[np++] = k->pats[i];
  for (size_t i = 0; i < n; i++) {
    int dup = 0;
    for (size_t j = k->npats; j < np && !dup; j++)
      dup = strcmp(pats[j], v[i].host_glob) == 0;
    if (!dup)
      pats[np++] = v[i].host_glob;
  }
  if (lg_tail_set_source_paths(k->tail, k->source_id, pats, np) != 0)
    lg_log_error(k->component, "declared files: cannot update the patterns");
  free(pats);
}

const lg_k8s_vfile_t *lg__k8s_files_find(const lg_k8s_t *k, const char *path) {
  for (size_t i = 0; i < k->nvfiles; i++)
    if (fnmatch(k->vfiles[i].host_glob, path, FNM_PATHNAME) == 0)
      return &k->vfiles[i];
  return NULL;
}

/* The file is inside the volume's directory, symlinks resolved. */
static int inside(const char *dir, const char *path) {
  char rd[PATH_MAX], rp[PATH_MAX];
  if (realpath(dir, rd) == NULL || realpath(path, rp) == NULL)
    return 0;
  size_t n = strlen(rd);
  return strncmp(rp, rd, n) == 0 && rp[n] == '/';
}

int lg__k8s_files_on_file(lg_k8s_t *k, const lg_k8s_vfile_t *vf,
                          lg_tail_file_info_t *info) {
  int keep = info->refresh ? LG_TAIL_FOLLOW : LG_TAIL_SKIP;
  pod_entry_t *e = lg__k8s_pod_find(k, vf->uid, 0);
  const lg_k8s_pod_t *p = e != NULL ? e->pod : NULL;
  if (p == NULL)
    return keep;
  if (info->refresh == 2 && !e->dirty)
    return LG_TAIL_FOLLOW;
  /* Decided before, and its pod is as it was then: a rescan costs a
   * lookup. */
  file_entry_t *fe = NULL;
  if (!info->refresh) {
    fe = lg__k8s_file_find(e, info->path, info->dev, info->ino);
    if (fe != NULL && (fe->no_pipeline || (fe->excluded && fe->gen == e->gen)))
      return LG_TAIL_SKIP;
  }
  const lg_k8s_container_t *c = container_of(p, vf->container);
  lg_k8s_path_t pi;
  memset(&pi, 0, sizeof pi);
  pi.ns = p->ns;
  pi.pod = p->name;
  pi.uid = p->uid;
  pi.container = vf->container;
  pi.restart = -1;
  pi.container_id = c != NULL && c->id[0] ? c->id : NULL;
  char cpath[PATH_MAX + 1024];
  snprintf(cpath, sizeof cpath, "%s%s", vf->mount_path,
           info->path + strlen(vf->host_dir));
  char why[200];
  if (lg__k8s_filtered_out(k, &pi, p, why, sizeof why)) {
    if (info->refresh == 2)
      snprintf(info->why, sizeof info->why, "pod %s/%s is excluded now (%s)",
               pi.ns, pi.pod, why);
    else
      lg_log_debug(k->component,
                   "%s: pod %s/%s excluded by the source's "
                   "filters (%s)",
                   info->path, pi.ns, pi.pod, why);
    if (!info->refresh &&
        (fe = lg__k8s_file_get(e, info->path, info->dev, info->ino)) != NULL) {
      fe->excluded = 1;
      fe->gen = e->gen;
    }
    return info->refresh == 1 ? LG_TAIL_FOLLOW : LG_TAIL_SKIP;
  }
  if (!info->refresh) {
    if (!inside(vf->host_dir, info->path)) {
      lg_log_warn(k->component,
                  "pod %s/%s: %s (%s in container %s) leads out of its "
                  "volume (a symlink?); not read",
                  pi.ns, pi.pod, info->path, cpath, vf->container);
      if ((fe = lg__k8s_file_get(e, info->path, info->dev, info->ino)) != NULL)
        fe->no_pipeline = 1; /* for good: never asked again */
      return LG_TAIL_SKIP;
    }
    info->format = k->kc->files_format;
  }
  info->meta = lg__k8s_build_meta(k, cpath, &pi, p);
  if (info->meta == NULL) {
    lg_log_error(k->component, "%s: out of memory building metadata",
                 info->path);
    return keep;
  }
  if (!info->refresh) {
    info->pipeline =
        lg__k8s_run_select(k, info->path, info->meta, &info->more_pipelines);
    if (info->pipeline < 0) {
      lg_log_debug(k->component, "%s: select() chose no pipeline; skipped",
                   info->path);
      lg_meta_unref(info->meta);
      info->meta = NULL;
      if ((fe = lg__k8s_file_get(e, info->path, info->dev, info->ino)) != NULL)
        fe->no_pipeline = 1;
      return LG_TAIL_SKIP;
    }
    if (fe != NULL)
      lg__k8s_file_drop(e, fe); /* excluded before, matching now */
  }
  return LG_TAIL_FOLLOW;
}
