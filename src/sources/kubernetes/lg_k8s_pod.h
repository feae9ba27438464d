/*
 * lg_k8s_pod.h - what lugger keeps of a Pod object (Kubernetes API
 * reference, "Pod v1 core"): names, owner, labels and annotations, its
 * containers with their runtime ids and volume mounts, and its volumes;
 * built from the object's JSON. The watch (lg_k8s_api.h) makes them; the
 * metadata (lg_k8s_meta.c), filters (lg_k8s_filter.c) and file finding
 * (lg_k8s_files.c) read them.
 */
#ifndef LG_K8S_POD_H
#define LG_K8S_POD_H

#include <stddef.h>
#include <stdint.h>

typedef struct lg_k8s_kv {
  char *k, *v;
} lg_k8s_kv_t;

/* A volumeMount of a container (spec.containers[].volumeMounts[]). */
typedef struct lg_k8s_mount {
  char *volume;   /* the volume's name */
  char *path;     /* mountPath, in the container */
  char *sub_path; /* subPath within the volume ("" = its root) */
} lg_k8s_mount_t;

/* A volume of a pod (spec.volumes[]): what lugger needs to find its files
 * on the node. */
typedef struct lg_k8s_volume {
  char *name;
  char *kind;      /* the volume source's key: "emptyDir", "hostPath", ... */
  char *host_path; /* hostPath.path ("" for other kinds) */
} lg_k8s_volume_t;

/* One container of a pod, from spec and status. */
typedef struct lg_k8s_container {
  char *name;
  char *image;    /* status.containerStatuses[].image, else spec's */
  char *image_id; /* status.containerStatuses[].imageID ("" if absent) */
  char *id;       /* containerID without the "<runtime>://" prefix */
  char *last_id;  /* lastState.terminated.containerID (the previous run) */
  int64_t restarts;
  lg_k8s_mount_t *mounts; /* its volumeMounts */
  size_t nmounts;
} lg_k8s_container_t;

/* What lugger keeps of a Pod object. Strings are owned ("" if absent). */
typedef struct lg_k8s_pod {
  char *uid, *name, *ns, *ip, *node;
  char *owner_kind, *owner_name; /* the controller ownerReference */
  lg_k8s_kv_t *labels;
  size_t nlabels;
  lg_k8s_kv_t *annotations;
  size_t nannotations;
  lg_k8s_container_t *containers; /* init, regular and ephemeral */
  size_t ncontainers;
  lg_k8s_volume_t *volumes;
  size_t nvolumes;
  uint64_t digest; /* hash of uid, name, ns, ip, owner, labels, annotations
                      and the containers' names, images, ids and restarts:
                      a change to any is a new digest (volumes and mounts
                      cannot change in a pod) */
} lg_k8s_pod_t;

struct cJSON;

/* Builds a pod from a Pod object (cJSON, as the API returns it in a list's
 * items or a watch event's object). Containers come from
 * spec.initContainers, containers and ephemeralContainers, each with its
 * status from the matching *ContainerStatuses entry (by name); the owner
 * is the ownerReference with controller true, else the first. Absent
 * strings are "". Returns a pod the caller frees with lg_k8s_pod_free, or
 * NULL when the object has no metadata.uid or memory runs out. */
lg_k8s_pod_t *lg_k8s_pod_from_json(const struct cJSON *obj);

/* Frees a pod and every string and array it owns. NULL-safe. */
void lg_k8s_pod_free(lg_k8s_pod_t *p);

/* The value of label / annotation `key` (NUL-terminated, compared
 * exactly) of pod `p`, owned by the pod; NULL when it has none or `p` is
 * NULL. */
const char *lg_k8s_pod_label(const lg_k8s_pod_t *p, const char *key);
const char *lg_k8s_pod_annotation(const lg_k8s_pod_t *p, const char *key);

#endif
