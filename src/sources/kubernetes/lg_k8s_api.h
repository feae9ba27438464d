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

#include "sources/kubernetes/lg_k8s_pod.h"

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

#ifdef LUGGER_FUZZ_HOOKS
/* For tests/fuzz/fuzz_k8s.c, never in lugger: reads `len` bytes of a
 * watch stream as they would arrive from the API server, in pieces of
 * `piece` bytes (> 0), until it ends or a line ends the watch (a 410, a
 * line that is not an event). *out gets the events queued (free them
 * with lg_k8s_ev_free), `rv` the resourceVersion the watch would resume
 * from. Returns the number of events read. */
size_t lg__k8s_api_fuzz_watch(uv_async_t *wake, const char *data, size_t len,
                              size_t piece, lg_k8s_ev_t **out, char *rv,
                              size_t rvlen);
#endif

#endif
