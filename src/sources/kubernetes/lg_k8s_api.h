/*
 * lg_k8s_api.h - pods of this node from the Kubernetes API: one list, then
 * one watch (Kubernetes API concepts, "Efficient detection of changes":
 * GET /api/v1/pods?fieldSelector=spec.nodeName=<node>, then
 * ?watch=1&resourceVersion=<rv>&allowWatchBookmarks=true). The watch is
 * resumed from the last resourceVersion after a disconnect; a 410 Gone
 * (an ERROR event whose Status has code 410, or the HTTP status) means the
 * version expired, and the pods are listed again. Failures back off
 * exponentially (0.5 s to 30 s).
 *
 * HTTP is libcurl on a thread of its own; parsed pods are queued for the
 * loop thread, which is woken with a uv_async_t and takes them with
 * lg_k8s_api_take.
 */
#ifndef LG_K8S_API_H
#define LG_K8S_API_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

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
  uint64_t digest; /* hash of the fields above: a change is a new digest */
} lg_k8s_pod_t;

struct cJSON;

/* Builds a pod from a Pod object (cJSON). NULL when it has no metadata.uid
 * or on allocation failure. */
lg_k8s_pod_t *lg_k8s_pod_from_json(const struct cJSON *obj);
void lg_k8s_pod_free(lg_k8s_pod_t *p); /* NULL-safe */
const char *lg_k8s_pod_label(const lg_k8s_pod_t *p, const char *key);
const char *lg_k8s_pod_annotation(const lg_k8s_pod_t *p, const char *key);

typedef enum lg_k8s_ev_type {
  LG_K8S_EV_LIST,    /* `pods` holds every pod of the node (a relist) */
  LG_K8S_EV_UPSERT,  /* ADDED or MODIFIED: pods[0] */
  LG_K8S_EV_DELETED, /* pods[0] */
} lg_k8s_ev_type_t;

typedef struct lg_k8s_ev {
  lg_k8s_ev_type_t type;
  lg_k8s_pod_t **pods;
  size_t npods;
  struct lg_k8s_ev *next;
} lg_k8s_ev_t;

void lg_k8s_ev_free(lg_k8s_ev_t *ev); /* frees the chain from ev on */

typedef struct lg_k8s_api_opts {
  const char *component;  /* for logs: "source.<name>" */
  const char *base_url;   /* https://host:port or http://... (no trailing /) */
  const char *token_file; /* NULL or "" = no Authorization header */
  const char *ca_file;    /* NULL or "" = the system's CAs */
  const char *node_name;
  uv_async_t *wake; /* sent when events are queued */
} lg_k8s_api_opts_t;

typedef struct lg_k8s_api lg_k8s_api_t;

/* Starts the watcher thread. Strings are copied. NULL on failure. */
lg_k8s_api_t *lg_k8s_api_start(const lg_k8s_api_opts_t *o);

/* Takes every queued event, oldest first (NULL if none). Loop thread. */
lg_k8s_ev_t *lg_k8s_api_take(lg_k8s_api_t *a);

/* Stops and joins the thread, frees everything. NULL-safe. */
void lg_k8s_api_stop(lg_k8s_api_t *a);

#endif
