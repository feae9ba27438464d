/* The pod cache (what the API said about this node's pods, by uid), the
 * entries of files under each pod, and the metadata a file's records get. */
#include "sources/kubernetes/lg_k8s_internal.h"

static uint64_t hash_s(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

pod_entry_t *lg__k8s_pod_find(lg_k8s_t *k, const char *uid, int create) {
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

void lg__k8s_file_entry_free(file_entry_t *f) {
  free(f->path);
  free(f);
}

void lg__k8s_pod_entry_free(pod_entry_t *e) {
  while (e->files != NULL) {
    file_entry_t *f = e->files;
    e->files = f->next;
    lg__k8s_file_entry_free(f);
  }
  lg_k8s_pod_free(e->pod);
  free(e->uid);
  free(e);
}

/* The entry of `path` in `e`, or NULL; one about another file that was
 * at that path (another device+inode) is dropped. */
file_entry_t *lg__k8s_file_find(pod_entry_t *e, const char *path, uint64_t dev,
                                uint64_t ino) {
  for (file_entry_t **pp = &e->files; *pp != NULL; pp = &(*pp)->next) {
    file_entry_t *f = *pp;
    if (strcmp(f->path, path) != 0)
      continue;
    if (f->dev == dev && f->ino == ino)
      return f;
    *pp = f->next;
    lg__k8s_file_entry_free(f);
    return NULL;
  }
  return NULL;
}

/* Like file_find, creating the entry; NULL when out of memory. */
file_entry_t *lg__k8s_file_get(pod_entry_t *e, const char *path, uint64_t dev,
                               uint64_t ino) {
  file_entry_t *f = lg__k8s_file_find(e, path, dev, ino);
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

void lg__k8s_file_drop(pod_entry_t *e, file_entry_t *f) {
  for (file_entry_t **pp = &e->files; *pp != NULL; pp = &(*pp)->next)
    if (*pp == f) {
      *pp = f->next;
      lg__k8s_file_entry_free(f);
      return;
    }
}

static const lg_k8s_container_t *find_container(const lg_k8s_pod_t *p,
                                                const char *name) {
  for (size_t i = 0; p != NULL && name != NULL && i < p->ncontainers; i++)
    if (strcmp(p->containers[i].name, name) == 0)
      return &p->containers[i];
  return NULL;
}

int lg__k8s_add_s(lg_meta_t *m, const char *key, const char *v) {
  if (v == NULL || v[0] == '\0')
    return 0;
  return lg_meta_add_str(m, key, v, strlen(v));
}

/* A value of lg_meta_t.hidden (not in records). */
static int hidden_s(lg_meta_t *m, const char *key, const char *v) {
  if (v == NULL || v[0] == '\0')
    return 0;
  return lg_meta_add_hidden_str(m, key, v, strlen(v));
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
    rc |= lg__k8s_add_s(m, "k8s.replicaset.name", name);
    const char *hash = lg_k8s_pod_label(p, "pod-template-hash");
    size_t n = strlen(name), h = hash ? strlen(hash) : 0;
    if (hash != NULL && h > 0 && n > h + 1 && strcmp(name + n - h, hash) == 0 &&
        name[n - h - 1] == '-')
      rc |= lg_meta_add_str(m, "k8s.deployment.name", name, n - h - 1);
  } else if (strcmp(kind, "StatefulSet") == 0) {
    rc |= lg__k8s_add_s(m, "k8s.statefulset.name", name);
  } else if (strcmp(kind, "DaemonSet") == 0) {
    rc |= lg__k8s_add_s(m, "k8s.daemonset.name", name);
  } else if (strcmp(kind, "Job") == 0) {
    rc |= lg__k8s_add_s(m, "k8s.job.name", name);
  }
  return rc;
}

lg_meta_t *lg__k8s_build_meta(const lg_k8s_t *k, const char *path,
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
  rc |= lg__k8s_add_s(m, "k8s.namespace.name", ns);
  rc |= lg__k8s_add_s(m, "k8s.pod.name", pod);
  rc |= lg__k8s_add_s(m, "k8s.pod.uid", uid);
  rc |= lg__k8s_add_s(m, "k8s.container.name", pi->container);
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
  rc |= lg__k8s_add_s(m, "container.id", cid);
  rc |= lg__k8s_add_s(m, "k8s.node.name", k->node);
  if (p != NULL) {
    rc |= lg__k8s_add_s(m, "k8s.pod.ip", p->ip);
    if (c != NULL) {
      rc |= add_image(m, c->image);
      /* For Fluent Bit filters' kubernetes map: container_image and
       * container_hash as the kubernetes filter takes them from the
       * status (the image with its digest, and imageID). */
      rc |= hidden_s(m, "image", c->image);
      rc |= hidden_s(m, "image_id", c->image_id);
    }
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
    /* Every annotation, hidden: Fluent Bit's kubernetes filter puts them
     * all in its map, and filters read them (fluentbit.io/..., team
     * annotations); records carry only the listed ones. */
    for (size_t i = 0; i < p->nannotations; i++) {
      snprintf(key, sizeof key, "annotation.%s", p->annotations[i].k);
      rc |= lg_meta_add_hidden_str(m, key, p->annotations[i].v,
                                   strlen(p->annotations[i].v));
    }
  }
  if (rc != 0 || lg_meta_seal(m) != 0) {
    lg_meta_unref(m);
    return NULL;
  }
  return m;
}
