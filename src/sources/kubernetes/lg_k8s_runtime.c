/*
 * lg_k8s_runtime.c - where a container's own filesystem is on the node,
 * for files a pod declares (lugger.io/files) on no volume.
 *
 * containerd (CRI, namespace k8s.io): the task's bundle
 * <containerd_state>/io.containerd.runtime.v2.task/k8s.io/<id>/ holds the
 * OCI config.json the runtime ran the container with (runtime-spec
 * config.md: mounts[].{destination,type,source}, root.path). A bind mount
 * whose destination holds the path (the longest) is where the file is;
 * else the root filesystem the shim mounted at root.path (the merged
 * overlay: the image's files and the container's).
 *
 * Docker (also cri-dockerd): the Engine API over its unix socket,
 * GET /containers/<id>/json (Docker Engine API v1.41,
 * ContainerInspect): Mounts[].{Source,Destination} first, else
 * GraphDriver.Data.UpperDir (overlay2: what the container wrote; files
 * only the image has are not there, and a log file is written by the
 * container). The request is one short local call with a 2 s timeout,
 * made only when a pod's declared files are mapped again (its pod
 * changed, or its container was not found yet).
 *
 * Paths the runtime names are node paths: host_root is put before them.
 */
#include "sources/kubernetes/lg_k8s_internal.h"

#include <curl/curl.h>
#include <limits.h>

/* The longest mount destination that holds `path` (at a '/'): sets
 * *best_len. `dest_key`/`src_key` name the fields; `type_key` and
 * `type` (may be NULL) restrict the kind. */
static const cJSON *best_mount(const cJSON *mounts, const char *path,
                               const char *dest_key, const char *src_key,
                               const char *type_key, const char *type,
                               size_t *best_len) {
  const cJSON *m, *best = NULL;
  *best_len = 0;
  cJSON_ArrayForEach(m, mounts) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(m, dest_key);
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(m, src_key);
    if (!cJSON_IsString(d) || !cJSON_IsString(src) ||
        src->valuestring[0] != '/')
      continue;
    if (type != NULL) {
      const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, type_key);
      if (!cJSON_IsString(t) || strcmp(t->valuestring, type) != 0)
        continue;
    }
    size_t n = strlen(d->valuestring);
    while (n > 1 && d->valuestring[n - 1] == '/')
      n--;
    if (n > *best_len && strncmp(path, d->valuestring, n) == 0 &&
        path[n] == '/') {
      best = m;
      *best_len = n;
    }
  }
  return best;
}

static int is_dir(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int containerd_root(const lg_k8s_t *k, const char *id, const char *glob,
                           char *dir, size_t dl, char *mp, size_t ml) {
  const char *state = k->kc->containerd_state;
  if (state == NULL || state[0] == '\0')
    return -1;
  char bundle[PATH_MAX], path[PATH_MAX + 16];
  snprintf(bundle, sizeof bundle, "%s/io.containerd.runtime.v2.task/k8s.io/%s",
           state, id);
  snprintf(path, sizeof path, "%s/config.json", bundle);
  char *text = NULL;
  size_t len = 0;
  if (lg_util_read_file(path, 4 << 20, &text, &len) != 0)
    return -1;
  cJSON *spec = cJSON_ParseWithLength(text, len);
  free(text);
  if (spec == NULL)
    return -1;
  size_t n;
  const cJSON *b =
      best_mount(cJSON_GetObjectItemCaseSensitive(spec, "mounts"), glob,
                 "destination", "source", "type", "bind", &n);
  int rc = -1;
  if (b != NULL) {
    snprintf(dir, dl, "%s%s", k->kc->host_root,
             cJSON_GetObjectItemCaseSensitive(b, "source")->valuestring);
    snprintf(mp, ml, "%.*s", (int)n, glob);
    rc = 0;
  } else {
    const cJSON *root = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(spec, "root"), "path");
    if (cJSON_IsString(root) && root->valuestring[0]) {
      if (root->valuestring[0] == '/')
        snprintf(dir, dl, "%s%s", k->kc->host_root, root->valuestring);
      else if (strlen(bundle) + strlen(root->valuestring) + 2 <= dl)
        snprintf(dir, dl, "%s/%s", bundle, root->valuestring);
      else
        dir[0] = '\0';
      mp[0] = '\0';
      rc = is_dir(dir) ? 0 : -1;
    }
  }
  cJSON_Delete(spec);
  return rc;
}

typedef struct {
  char *buf;
  size_t len;
} body_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
  body_t *b = ud;
  size_t n = size * nmemb;
  if (b->len + n > (4u << 20))
    return 0; /* no container inspection is that large */
  char *nb = realloc(b->buf, b->len + n + 1);
  if (nb == NULL)
    return 0;
  memcpy(nb + b->len, data, n);
  b->buf = nb;
  b->len += n;
  b->buf[b->len] = '\0';
  return n;
}

static int docker_root(const lg_k8s_t *k, const char *id, const char *glob,
                       char *dir, size_t dl, char *mp, size_t ml) {
  const char *sock = k->kc->docker_socket;
  if (sock == NULL || sock[0] == '\0' || access(sock, F_OK) != 0)
    return -1;
  CURL *c = curl_easy_init();
  if (c == NULL)
    return -1;
  char url[512];
  /* The host part is ignored on a unix socket; the API version is the
   * one Docker 20.10 speaks (newer engines accept older versions). */
  snprintf(url, sizeof url, "http://docker/v1.41/containers/%s/json", id);
  body_t b = {0};
  curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  long status = 0;
  CURLcode rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(c);
  if (rc != CURLE_OK || status != 200) {
    if (rc != CURLE_OK || status != 404)
      lg_log_warn(k->component, "Docker API %s: container %.12s: %s", sock, id,
                  rc != CURLE_OK ? curl_easy_strerror(rc) : "not 200");
    free(b.buf);
    return -1;
  }
  cJSON *j = cJSON_ParseWithLength(b.buf, b.len);
  free(b.buf);
  if (j == NULL)
    return -1;
  size_t n;
  const cJSON *m = best_mount(cJSON_GetObjectItemCaseSensitive(j, "Mounts"),
                              glob, "Destination", "Source", NULL, NULL, &n);
  int out = -1;
  if (m != NULL) {
    snprintf(dir, dl, "%s%s", k->kc->host_root,
             cJSON_GetObjectItemCaseSensitive(m, "Source")->valuestring);
    snprintf(mp, ml, "%.*s", (int)n, glob);
    out = 0;
  } else {
    const cJSON *up = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(j, "GraphDriver"), "Data"),
        "UpperDir");
    if (cJSON_IsString(up) && up->valuestring[0] == '/') {
      snprintf(dir, dl, "%s%s", k->kc->host_root, up->valuestring);
      mp[0] = '\0';
      out = 0;
    }
  }
  cJSON_Delete(j);
  return out;
}

int lg__k8s_runtime_root(const lg_k8s_t *k, const lg_k8s_container_t *c,
                         const char *glob, char *dir, size_t dl, char *mp,
                         size_t ml) {
  /* An id is hex: nothing that could make a path or URL of its own. */
  if (c->id[0] == '\0' || strspn(c->id, "0123456789abcdef") != strlen(c->id))
    return -1;
  if (containerd_root(k, c->id, glob, dir, dl, mp, ml) == 0)
    return 0;
  return docker_root(k, c->id, glob, dir, dl, mp, ml);
}
