/*
 * lg_k8s_pod.c - what lugger keeps of a Pod object (Kubernetes API
 * reference, "Pod v1 core": metadata, spec.containers/initContainers/
 * ephemeralContainers, spec.volumes, status.*ContainerStatuses), built
 * from its JSON (cJSON), with a digest so a change is seen as one.
 */
#include "sources/kubernetes/lg_k8s_pod.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

static char *dup_str(const cJSON *v) {
  return strdup(cJSON_IsString(v) && v->valuestring ? v->valuestring : "");
}

static const cJSON *get(const cJSON *o, const char *k) {
  return cJSON_GetObjectItemCaseSensitive(o, k);
}

static uint64_t mix(uint64_t h, const char *s) {
  for (; s != NULL && *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return (h ^ 0xff) * 1099511628211ull; /* a separator */
}

static int kv_from(const cJSON *obj, lg_k8s_kv_t **out, size_t *n) {
  *out = NULL;
  *n = 0;
  int cnt = cJSON_GetArraySize(obj);
  if (!cJSON_IsObject(obj) || cnt <= 0)
    return 0;
  lg_k8s_kv_t *kv = calloc((size_t)cnt, sizeof *kv);
  if (kv == NULL)
    return -ENOMEM;
  const cJSON *it;
  size_t i = 0;
  cJSON_ArrayForEach(it, obj) {
    if (!cJSON_IsString(it) || it->string == NULL)
      continue;
    kv[i].k = strdup(it->string);
    kv[i].v = strdup(it->valuestring);
    if (kv[i].k == NULL || kv[i].v == NULL) {
      *out = kv;
      *n = i + 1;
      return -ENOMEM;
    }
    i++;
  }
  *out = kv;
  *n = i;
  return 0;
}

/* "containerd://abc" -> "abc". */
static char *strip_runtime(const cJSON *v) {
  const char *s = cJSON_IsString(v) ? v->valuestring : "";
  const char *p = strstr(s, "://");
  return strdup(p ? p + 3 : s);
}

static lg_k8s_container_t *container_named(lg_k8s_pod_t *p, const char *name) {
  for (size_t i = 0; i < p->ncontainers; i++)
    if (strcmp(p->containers[i].name, name) == 0)
      return &p->containers[i];
  return NULL;
}

static int add_mounts(lg_k8s_container_t *c, const cJSON *list) {
  int n = cJSON_GetArraySize(list);
  if (!cJSON_IsArray(list) || n <= 0)
    return 0;
  c->mounts = calloc((size_t)n, sizeof *c->mounts);
  if (c->mounts == NULL)
    return -ENOMEM;
  const cJSON *it;
  cJSON_ArrayForEach(it, list) {
    if (!cJSON_IsString(get(it, "name")) ||
        !cJSON_IsString(get(it, "mountPath")))
      continue;
    lg_k8s_mount_t *m = &c->mounts[c->nmounts++];
    m->volume = dup_str(get(it, "name"));
    m->path = dup_str(get(it, "mountPath"));
    m->sub_path = dup_str(get(it, "subPath"));
    if (!m->volume || !m->path || !m->sub_path)
      return -ENOMEM;
  }
  return 0;
}

static int add_volumes(lg_k8s_pod_t *p, const cJSON *list) {
  int n = cJSON_GetArraySize(list);
  if (!cJSON_IsArray(list) || n <= 0)
    return 0;
  p->volumes = calloc((size_t)n, sizeof *p->volumes);
  if (p->volumes == NULL)
    return -ENOMEM;
  const cJSON *it;
  cJSON_ArrayForEach(it, list) {
    if (!cJSON_IsString(get(it, "name")))
      continue;
    lg_k8s_volume_t *v = &p->volumes[p->nvolumes++];
    v->name = dup_str(get(it, "name"));
    /* The one key besides "name" is the volume's source. */
    const char *kind = "";
    for (const cJSON *f = it->child; f != NULL; f = f->next)
      if (f->string != NULL && strcmp(f->string, "name") != 0)
        kind = f->string;
    v->kind = strdup(kind);
    v->host_path = dup_str(get(get(it, "hostPath"), "path"));
    if (!v->name || !v->kind || !v->host_path)
      return -ENOMEM;
  }
  return 0;
}

static int add_containers(lg_k8s_pod_t *p, const cJSON *spec_list,
                          const cJSON *status_list) {
  const cJSON *it;
  cJSON_ArrayForEach(it, spec_list) {
    const cJSON *name = get(it, "name");
    if (!cJSON_IsString(name) || container_named(p, name->valuestring))
      continue;
    lg_k8s_container_t *c = &p->containers[p->ncontainers++];
    c->name = dup_str(name);
    c->image = dup_str(get(it, "image"));
    c->image_id = strdup("");
    c->id = strdup("");
    c->last_id = strdup("");
    if (!c->name || !c->image || !c->image_id || !c->id || !c->last_id ||
        add_mounts(c, get(it, "volumeMounts")) != 0)
      return -ENOMEM;
  }
  cJSON_ArrayForEach(it, status_list) {
    const cJSON *name = get(it, "name");
    if (!cJSON_IsString(name))
      continue;
    lg_k8s_container_t *c = container_named(p, name->valuestring);
    if (c == NULL)
      continue; /* a status without a spec: not in the shape we know */
    const cJSON *img = get(it, "image");
    if (cJSON_IsString(img) && img->valuestring[0]) {
      free(c->image);
      c->image = dup_str(img);
    }
    free(c->image_id);
    c->image_id = dup_str(get(it, "imageID"));
    free(c->id);
    c->id = strip_runtime(get(it, "containerID"));
    free(c->last_id);
    c->last_id = strip_runtime(
        get(get(get(it, "lastState"), "terminated"), "containerID"));
    const cJSON *rc = get(it, "restartCount");
    /* An int32 in the API; a value no int64_t holds is not one. */
    c->restarts = cJSON_IsNumber(rc) && fabs(rc->valuedouble) < 0x1p62
                      ? (int64_t)rc->valuedouble
                      : 0;
    if (!c->image || !c->image_id || !c->id || !c->last_id)
      return -ENOMEM;
  }
  return 0;
}

lg_k8s_pod_t *lg_k8s_pod_from_json(const cJSON *obj) {
  const cJSON *md = get(obj, "metadata");
  const cJSON *uid = get(md, "uid");
  if (!cJSON_IsString(uid) || uid->valuestring[0] == '\0')
    return NULL;
  lg_k8s_pod_t *p = calloc(1, sizeof *p);
  if (p == NULL)
    return NULL;
  const cJSON *spec = get(obj, "spec"), *st = get(obj, "status");
  p->uid = dup_str(uid);
  p->name = dup_str(get(md, "name"));
  p->ns = dup_str(get(md, "namespace"));
  p->node = dup_str(get(spec, "nodeName"));
  p->ip = dup_str(get(st, "podIP"));
  const cJSON *owners = get(md, "ownerReferences"), *o, *pick = NULL;
  cJSON_ArrayForEach(o, owners) {
    if (pick == NULL || cJSON_IsTrue(get(o, "controller")))
      pick = o;
    if (cJSON_IsTrue(get(o, "controller")))
      break;
  }
  p->owner_kind = dup_str(get(pick, "kind"));
  p->owner_name = dup_str(get(pick, "name"));
  int bad = !p->uid || !p->name || !p->ns || !p->node || !p->ip ||
            !p->owner_kind || !p->owner_name;
  bad |= kv_from(get(md, "labels"), &p->labels, &p->nlabels) != 0;
  bad |=
      kv_from(get(md, "annotations"), &p->annotations, &p->nannotations) != 0;
  static const char *const lists[][2] = {
      {"initContainers", "initContainerStatuses"},
      {"containers", "containerStatuses"},
      {"ephemeralContainers", "ephemeralContainerStatuses"}};
  size_t max = 0;
  for (int i = 0; i < 3; i++) {
    int n = cJSON_GetArraySize(get(spec, lists[i][0]));
    max += n > 0 ? (size_t)n : 0;
  }
  p->containers = calloc(max ? max : 1, sizeof *p->containers);
  bad |= p->containers == NULL;
  for (int i = 0; i < 3 && !bad; i++)
    bad |= add_containers(p, get(spec, lists[i][0]), get(st, lists[i][1])) != 0;
  bad |= !bad && add_volumes(p, get(spec, "volumes")) != 0;
  if (bad) {
    lg_k8s_pod_free(p);
    return NULL;
  }
  uint64_t h = 1469598103934665603ull;
  h = mix(mix(mix(mix(h, p->uid), p->name), p->ns), p->ip);
  h = mix(mix(h, p->owner_kind), p->owner_name);
  for (size_t i = 0; i < p->nlabels; i++)
    h = mix(mix(h, p->labels[i].k), p->labels[i].v);
  h = mix(h, "\x01");
  for (size_t i = 0; i < p->nannotations; i++)
    h = mix(mix(h, p->annotations[i].k), p->annotations[i].v);
  for (size_t i = 0; i < p->ncontainers; i++) {
    const lg_k8s_container_t *c = &p->containers[i];
    char n[32];
    snprintf(n, sizeof n, "%lld", (long long)c->restarts);
    h = mix(mix(mix(mix(mix(mix(h, c->name), c->image), c->image_id), c->id),
                c->last_id),
            n);
  }
  p->digest = h;
  return p;
}

static void kv_free(lg_k8s_kv_t *kv, size_t n) {
  for (size_t i = 0; kv != NULL && i < n; i++) {
    free(kv[i].k);
    free(kv[i].v);
  }
  free(kv);
}

void lg_k8s_pod_free(lg_k8s_pod_t *p) {
  if (p == NULL)
    return;
  free(p->uid);
  free(p->name);
  free(p->ns);
  free(p->ip);
  free(p->node);
  free(p->owner_kind);
  free(p->owner_name);
  kv_free(p->labels, p->nlabels);
  kv_free(p->annotations, p->nannotations);
  for (size_t i = 0; p->containers != NULL && i < p->ncontainers; i++) {
    free(p->containers[i].name);
    free(p->containers[i].image);
    free(p->containers[i].image_id);
    free(p->containers[i].id);
    free(p->containers[i].last_id);
    for (size_t j = 0; j < p->containers[i].nmounts; j++) {
      free(p->containers[i].mounts[j].volume);
      free(p->containers[i].mounts[j].path);
      free(p->containers[i].mounts[j].sub_path);
    }
    free(p->containers[i].mounts);
  }
  free(p->containers);
  for (size_t i = 0; p->volumes != NULL && i < p->nvolumes; i++) {
    free(p->volumes[i].name);
    free(p->volumes[i].kind);
    free(p->volumes[i].host_path);
  }
  free(p->volumes);
  free(p);
}

static const char *kv_get(const lg_k8s_kv_t *kv, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(kv[i].k, key) == 0)
      return kv[i].v;
  return NULL;
}

const char *lg_k8s_pod_label(const lg_k8s_pod_t *p, const char *key) {
  return p ? kv_get(p->labels, p->nlabels, key) : NULL;
}

const char *lg_k8s_pod_annotation(const lg_k8s_pod_t *p, const char *key) {
  return p ? kv_get(p->annotations, p->nannotations, key) : NULL;
}
