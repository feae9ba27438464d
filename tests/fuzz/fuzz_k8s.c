/* libFuzzer target: what the Kubernetes API answers, as a broken or
 * hostile API server may shape it. The input is a PodList (a list's
 * answer: every item a pod) or, when it is not one, a watch stream (one
 * JSON event per line, whose "object" is a pod). Each pod goes through
 * lg_k8s_pod_from_json and then lg__k8s_build_meta, as the source does
 * for a file of that pod's containers; and the input is read as a watch
 * stream by the watch's own code (lg__k8s_api_fuzz_watch), arriving in
 * pieces. What must hold: no crash, read out
 * of bounds, leak or undefined behaviour; a pod without metadata.uid is
 * refused; every string of a pod is set; the same object gives the same
 * digest; the metadata of a kept pod is built and sealed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sources/kubernetes/lg_k8s_internal.h"

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c))                                                                  \
      __builtin_trap();                                                        \
  } while (0)

static void check_pod(const lg_k8s_pod_t *p) {
  CHECK(p->uid[0] != '\0');
  CHECK(p->name && p->ns && p->ip && p->node && p->owner_kind && p->owner_name);
  for (size_t i = 0; i < p->nlabels; i++)
    CHECK(p->labels[i].k && p->labels[i].v);
  for (size_t i = 0; i < p->nannotations; i++)
    CHECK(p->annotations[i].k && p->annotations[i].v);
  for (size_t i = 0; i < p->ncontainers; i++) {
    const lg_k8s_container_t *c = &p->containers[i];
    CHECK(c->name && c->image && c->image_id && c->id && c->last_id);
    for (size_t j = 0; j < c->nmounts; j++)
      CHECK(c->mounts[j].volume && c->mounts[j].path && c->mounts[j].sub_path);
  }
  for (size_t i = 0; i < p->nvolumes; i++)
    CHECK(p->volumes[i].name && p->volumes[i].kind && p->volumes[i].host_path);
}

static void one_pod(const cJSON *obj) {
  static char *annotations[] = {"team", "fluentbit.io/parser"};
  static lg_k8s_conf_t kc = {.annotations = annotations, .nannotations = 2};
  static lg_k8s_t k = {.kc = &kc, .node = "node-a"};
  lg_k8s_pod_t *p = lg_k8s_pod_from_json(obj);
  const cJSON *uid = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "uid");
  if (p == NULL) {
    CHECK(!cJSON_IsString(uid) || uid->valuestring[0] == '\0');
    return;
  }
  check_pod(p);
  lg_k8s_pod_t *again = lg_k8s_pod_from_json(obj);
  CHECK(again != NULL && again->digest == p->digest);
  lg_k8s_pod_free(again);
  /* A file of each container, found by the kubelet's path layout, and of
   * each restart the status tells of. */
  for (size_t i = 0; i <= p->ncontainers; i++) {
    lg_k8s_path_t pi;
    memset(&pi, 0, sizeof pi);
    pi.ns = p->ns;
    pi.pod = p->name;
    pi.uid = p->uid;
    pi.container = i < p->ncontainers ? p->containers[i].name : "none";
    pi.restart = i < p->ncontainers ? p->containers[i].restarts : -1;
    if (pi.restart > 0 && i % 2 == 1)
      pi.restart--; /* the previous run's file */
    lg_meta_t *m = lg__k8s_build_meta(&k, "/var/log/pods/x/0.log", &pi, p);
    CHECK(m != NULL);
    lg_meta_unref(m);
  }
  lg_k8s_pod_free(p);
}

/* The same bytes as a watch stream read by the source's own code, in
 * pieces of a size the input picks: each event holds one pod (a list
 * event is the list's), as from lg_k8s_pod_from_json. */
static void watch_stream(const char *s, size_t size) {
  static uv_loop_t loop;
  static uv_async_t wake;
  if (loop.data == NULL) {
    lg_log_set_level((lg_log_level_t)(LG_LOG_ERROR + 1)); /* bad events */
    uv_loop_init(&loop);
    uv_async_init(&loop, &wake, NULL);
    loop.data = &wake;
  }
  lg_k8s_ev_t *evs = NULL;
  char rv[128];
  size_t lines = 0;
  for (size_t i = 0; i < size; i++)
    lines += s[i] == '\n';
  size_t n = lg__k8s_api_fuzz_watch(&wake, s, size, size % 61 + 1, &evs, rv,
                                    sizeof rv);
  CHECK(n <= lines);
  for (const lg_k8s_ev_t *ev = evs; ev != NULL; ev = ev->next) {
    CHECK(ev->type != LG_K8S_EV_LIST && ev->npods == 1);
    check_pod(ev->pods[0]);
  }
  lg_k8s_ev_free(evs);
  uv_run(&loop, UV_RUN_NOWAIT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  watch_stream(s, size);
  cJSON *root = cJSON_ParseWithLength(s, size);
  const cJSON *items = cJSON_GetObjectItemCaseSensitive(root, "items"), *it;
  if (cJSON_IsArray(items)) {
    cJSON_ArrayForEach(it, items) one_pod(it);
    cJSON_Delete(root);
    return 0;
  }
  cJSON_Delete(root);
  for (const char *p = s, *end = s + size; p < end;) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
    cJSON *ev = cJSON_ParseWithLength(p, len);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "ERROR") != 0 &&
        strcmp(type->valuestring, "BOOKMARK") != 0)
      one_pod(cJSON_GetObjectItemCaseSensitive(ev, "object"));
    cJSON_Delete(ev);
    p += len + 1;
  }
  return 0;
}
