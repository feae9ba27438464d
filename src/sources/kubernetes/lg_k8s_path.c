/* Pod log paths to metadata: the kubelet's CRI layout
 * (/var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log) and Docker's
 * json-file layout (its config.v2.json names the pod). Pure functions. */
#include "sources/kubernetes/lg_k8s_internal.h"

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
  char *text = NULL;
  size_t textlen;
  if (lg_util_read_file(cfg, 4u << 20, &text, &textlen) != 0)
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
