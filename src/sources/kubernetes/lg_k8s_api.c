/*
 * lg_k8s_api.c - list + watch of this node's pods (Kubernetes API
 * concepts: "Efficient detection of changes", "Watch bookmarks",
 * "410 Gone responses"), libcurl on a thread, cJSON.
 *
 * The thread: list (paged with limit/continue) -> one LIST event with
 * every pod and the list's resourceVersion; then watch from that version.
 * Each line of the watch stream is one JSON event {"type", "object"}:
 * ADDED/MODIFIED -> UPSERT, DELETED -> DELETED, BOOKMARK only moves the
 * version, ERROR with a Status of code 410 -> list again. When the server
 * ends the watch (its timeout) or the connection breaks, the watch resumes
 * from the last version seen; errors back off from 0.5 s doubling to 30 s.
 */
#include "sources/kubernetes/lg_k8s_api.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>
#include <curl/curl.h>

#include "core/lg_log.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define LIST_MAX_BYTES (256u << 20)
#define LINE_MAX_BYTES (64u << 20)
/* The server ends each watch after this; we then resume it. */
#define WATCH_TIMEOUT_S 300

struct lg_k8s_api {
  char *component, *base, *token_file, *ca_file, *node;
  uv_async_t *wake;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  atomic_int stop;
  lg_k8s_ev_t *head, *tail; /* queued for the loop thread */
  char rv[128];             /* last resourceVersion seen */
  int ok_logged;            /* "connected" was logged since the last error */
};

/* ------------------------------------------------------------------ */
/* Pods from JSON. */

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
    c->restarts = cJSON_IsNumber(rc) ? (int64_t)rc->valuedouble : 0;
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

void lg_k8s_ev_free(lg_k8s_ev_t *ev) {
  while (ev != NULL) {
    lg_k8s_ev_t *nx = ev->next;
    for (size_t i = 0; i < ev->npods; i++)
      lg_k8s_pod_free(ev->pods[i]);
    free(ev->pods);
    free(ev);
    ev = nx;
  }
}

/* ------------------------------------------------------------------ */
/* The queue to the loop thread. */

static void push(lg_k8s_api_t *a, lg_k8s_ev_t *ev) {
  pthread_mutex_lock(&a->mu);
  if (a->tail != NULL)
    a->tail->next = ev;
  else
    a->head = ev;
  a->tail = ev;
  pthread_mutex_unlock(&a->mu);
  uv_async_send(a->wake);
}

lg_k8s_ev_t *lg_k8s_api_take(lg_k8s_api_t *a) {
  pthread_mutex_lock(&a->mu);
  lg_k8s_ev_t *ev = a->head;
  a->head = a->tail = NULL;
  pthread_mutex_unlock(&a->mu);
  return ev;
}

static lg_k8s_ev_t *ev_new(lg_k8s_ev_type_t type) {
  lg_k8s_ev_t *ev = calloc(1, sizeof *ev);
  if (ev != NULL)
    ev->type = type;
  return ev;
}

static int ev_add(lg_k8s_ev_t *ev, lg_k8s_pod_t *p) {
  lg_k8s_pod_t **v = realloc(ev->pods, (ev->npods + 1) * sizeof *v);
  if (v == NULL) {
    lg_k8s_pod_free(p);
    return -ENOMEM;
  }
  ev->pods = v;
  v[ev->npods++] = p;
  return 0;
}

/* ------------------------------------------------------------------ */
/* HTTP. */

/* Sleeps `ms` unless stopped; returns nonzero when stopped. */
static int nap(lg_k8s_api_t *a, uint64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += (time_t)(ms / 1000);
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&a->mu);
  while (!atomic_load(&a->stop) &&
         pthread_cond_timedwait(&a->cv, &a->mu, &ts) != ETIMEDOUT)
    ;
  pthread_mutex_unlock(&a->mu);
  return atomic_load(&a->stop);
}

static int on_progress(void *ud, curl_off_t a1, curl_off_t a2, curl_off_t a3,
                       curl_off_t a4) {
  lg_k8s_api_t *a = ud;
  (void)a1, (void)a2, (void)a3, (void)a4;
  return atomic_load(&a->stop) ? 1 : 0;
}

typedef struct xfer {
  lg_k8s_api_t *a;
  char *buf;
  size_t len, cap, max;
  int watch;     /* a watch stream: handle each line as it comes */
  int gone;      /* a 410 arrived */
  int failed;    /* a bad line or out of memory */
  size_t events; /* watch events handled */
} xfer_t;

static void handle_watch_line(xfer_t *x, const char *line, size_t len) {
  lg_k8s_api_t *a = x->a;
  cJSON *root = cJSON_ParseWithLength(line, len);
  if (root == NULL) {
    lg_log_warn(a->component, "Kubernetes API: watch: not a JSON event: %.80s",
                line);
    x->failed = 1;
    return;
  }
  const cJSON *type = get(root, "type"), *obj = get(root, "object");
  const char *t = cJSON_IsString(type) ? type->valuestring : "";
  const cJSON *rv = get(get(obj, "metadata"), "resourceVersion");
  x->events++;
  if (strcmp(t, "ERROR") == 0) {
    const cJSON *code = get(obj, "code");
    const cJSON *msg = get(obj, "message");
    if (cJSON_IsNumber(code) && code->valueint == 410) {
      lg_log_info(a->component,
                  "Kubernetes API: watch expired (410 Gone: %s); listing "
                  "again",
                  cJSON_IsString(msg) ? msg->valuestring : "");
      x->gone = 1;
    } else {
      lg_log_warn(a->component, "Kubernetes API: watch error %d: %s",
                  cJSON_IsNumber(code) ? code->valueint : 0,
                  cJSON_IsString(msg) ? msg->valuestring : "");
      x->failed = 1;
    }
  } else if (strcmp(t, "ADDED") == 0 || strcmp(t, "MODIFIED") == 0 ||
             strcmp(t, "DELETED") == 0) {
    lg_k8s_pod_t *p = lg_k8s_pod_from_json(obj);
    lg_k8s_ev_t *ev =
        ev_new(t[0] == 'D' ? LG_K8S_EV_DELETED : LG_K8S_EV_UPSERT);
    if (p == NULL || ev == NULL || ev_add(ev, p) != 0) {
      if (ev == NULL)
        lg_k8s_pod_free(p);
      lg_k8s_ev_free(ev);
      lg_log_warn(a->component, "Kubernetes API: watch: bad %s event", t);
    } else {
      push(a, ev);
    }
  } else if (strcmp(t, "BOOKMARK") != 0) {
    lg_log_warn(a->component, "Kubernetes API: watch: unknown event type '%s'",
                t);
  }
  if (cJSON_IsString(rv) && rv->valuestring[0] && !x->gone)
    snprintf(a->rv, sizeof a->rv, "%s", rv->valuestring);
  cJSON_Delete(root);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
  xfer_t *x = ud;
  size_t n = size * nmemb;
  if (atomic_load(&x->a->stop))
    return 0;
  if (x->len + n + 1 > x->cap) {
    size_t cap = x->cap ? x->cap : 65536;
    while (cap < x->len + n + 1)
      cap *= 2;
    if (cap > x->max + 1) {
      lg_log_error(x->a->component,
                   "Kubernetes API: response over %zu bytes; giving up on it",
                   x->max);
      x->failed = 1;
      return 0;
    }
    char *b = realloc(x->buf, cap);
    if (b == NULL) {
      x->failed = 1;
      return 0;
    }
    x->buf = b;
    x->cap = cap;
  }
  memcpy(x->buf + x->len, data, n);
  x->len += n;
  x->buf[x->len] = '\0';
  if (x->watch) {
    char *start = x->buf, *nl;
    while ((nl = memchr(start, '\n', x->len - (size_t)(start - x->buf)))) {
      if (nl > start)
        handle_watch_line(x, start, (size_t)(nl - start));
      start = nl + 1;
      if (x->gone || x->failed)
        return 0; /* ends the transfer */
    }
    x->len -= (size_t)(start - x->buf);
    memmove(x->buf, start, x->len);
  }
  return n;
}

/* The bearer token, read again for every request (bound service account
 * tokens are rotated by the kubelet). */
static struct curl_slist *auth_header(lg_k8s_api_t *a) {
  struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
  if (a->token_file == NULL || a->token_file[0] == '\0')
    return h;
  FILE *f = fopen(a->token_file, "re");
  if (f == NULL)
    return h;
  char tok[8192];
  size_t n = fread(tok, 1, sizeof tok - 1, f);
  fclose(f);
  while (n > 0 &&
         (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' '))
    n--;
  tok[n] = '\0';
  char line[8300];
  snprintf(line, sizeof line, "Authorization: Bearer %s", tok);
  return curl_slist_append(h, line);
}

/* Runs one GET; returns the HTTP status (0 when no response) and the
 * curl error text in `err`. */
static long http_get(lg_k8s_api_t *a, const char *url, xfer_t *x,
                     long timeout_s, char *err, size_t errlen) {
  CURL *c = curl_easy_init();
  if (c == NULL) {
    snprintf(err, errlen, "curl_easy_init failed");
    return 0;
  }
  char ebuf[CURL_ERROR_SIZE] = "";
  struct curl_slist *h = auth_header(a);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, a);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  if (a->ca_file != NULL && a->ca_file[0] != '\0')
    curl_easy_setopt(c, CURLOPT_CAINFO, a->ca_file);
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (rc != CURLE_OK)
    snprintf(err, errlen, "%s", ebuf[0] ? ebuf : curl_easy_strerror(rc));
  else
    err[0] = '\0';
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  return status;
}

enum { RES_OK, RES_GONE, RES_FAIL, RES_STOP };

static int do_list(lg_k8s_api_t *a) {
  lg_k8s_ev_t *ev = ev_new(LG_K8S_EV_LIST);
  if (ev == NULL)
    return RES_FAIL;
  char cont[2048] = "";
  char *node = curl_easy_escape(NULL, a->node, 0);
  for (;;) {
    char url[4096];
    char *ce = curl_easy_escape(NULL, cont, 0);
    snprintf(url, sizeof url,
             "%s/api/v1/pods?fieldSelector=spec.nodeName%%3D%s&limit=500%s%s",
             a->base, node ? node : "", cont[0] ? "&continue=" : "",
             cont[0] && ce ? ce : "");
    curl_free(ce);
    xfer_t x = {.a = a, .max = LIST_MAX_BYTES};
    char err[CURL_ERROR_SIZE + 64];
    long st = http_get(a, url, &x, 60, err, sizeof err);
    if (atomic_load(&a->stop)) {
      free(x.buf);
      curl_free(node);
      lg_k8s_ev_free(ev);
      return RES_STOP;
    }
    if (err[0] || st != 200 || x.failed) {
      if (err[0])
        lg_log_warn(a->component, "Kubernetes API: list pods: %s", err);
      else
        lg_log_warn(a->component, "Kubernetes API: list pods: HTTP %ld: %.200s",
                    st, x.buf ? x.buf : "");
      free(x.buf);
      curl_free(node);
      lg_k8s_ev_free(ev);
      return st == 410 ? RES_GONE : RES_FAIL;
    }
    cJSON *root = cJSON_ParseWithLength(x.buf ? x.buf : "", x.len);
    free(x.buf);
    const cJSON *items = get(root, "items"), *it;
    if (root == NULL || !cJSON_IsArray(items)) {
      lg_log_warn(a->component, "Kubernetes API: list pods: not a PodList");
      cJSON_Delete(root);
      curl_free(node);
      lg_k8s_ev_free(ev);
      return RES_FAIL;
    }
    cJSON_ArrayForEach(it, items) {
      lg_k8s_pod_t *p = lg_k8s_pod_from_json(it);
      if (p != NULL)
        ev_add(ev, p);
    }
    const cJSON *md = get(root, "metadata");
    const cJSON *rv = get(md, "resourceVersion"), *c = get(md, "continue");
    if (cJSON_IsString(rv))
      snprintf(a->rv, sizeof a->rv, "%s", rv->valuestring);
    int more = cJSON_IsString(c) && c->valuestring[0] != '\0';
    if (more)
      snprintf(cont, sizeof cont, "%s", c->valuestring);
    cJSON_Delete(root);
    if (!more)
      break;
  }
  curl_free(node);
  if (!a->ok_logged)
    lg_log_info(a->component,
                "Kubernetes API: listed %zu pods of node %s at "
                "%s (resourceVersion %s)",
                ev->npods, a->node, a->base, a->rv);
  a->ok_logged = 1;
  push(a, ev);
  return RES_OK;
}

static int do_watch(lg_k8s_api_t *a) {
  char url[4096];
  char *node = curl_easy_escape(NULL, a->node, 0);
  char *rv = curl_easy_escape(NULL, a->rv, 0);
  snprintf(url, sizeof url,
           "%s/api/v1/pods?fieldSelector=spec.nodeName%%3D%s&watch=1&"
           "resourceVersion=%s&allowWatchBookmarks=true&timeoutSeconds=%d",
           a->base, node ? node : "", rv ? rv : "", WATCH_TIMEOUT_S);
  curl_free(node);
  curl_free(rv);
  xfer_t x = {.a = a, .max = LINE_MAX_BYTES, .watch = 1};
  char err[CURL_ERROR_SIZE + 64];
  /* No overall timeout: the server ends the watch; a dead connection is
   * found by TCP keepalive. A little slack over the server's timeout. */
  long st = http_get(a, url, &x, WATCH_TIMEOUT_S + 60, err, sizeof err);
  free(x.buf);
  if (atomic_load(&a->stop))
    return RES_STOP;
  if (x.gone || st == 410)
    return RES_GONE;
  if (x.failed)
    return RES_FAIL;
  if (st != 200) {
    if (err[0])
      lg_log_warn(a->component, "Kubernetes API: watch pods: %s", err);
    else
      lg_log_warn(a->component, "Kubernetes API: watch pods: HTTP %ld", st);
    return RES_FAIL;
  }
  /* A watch the server ended (or a connection that broke mid-stream):
   * resume from the last version. */
  if (err[0])
    lg_log_info(a->component,
                "Kubernetes API: watch ended (%s) after %zu events; resuming",
                err, x.events);
  return RES_OK;
}

static void *run(void *ud) {
  lg_k8s_api_t *a = ud;
  uint64_t backoff = BACKOFF_MIN_MS;
  int need_list = 1;
  while (!atomic_load(&a->stop)) {
    int r;
    if (need_list) {
      r = do_list(a);
      if (r == RES_OK) {
        need_list = 0;
        backoff = BACKOFF_MIN_MS;
        continue;
      }
    } else {
      r = do_watch(a);
      if (r == RES_OK) {
        backoff = BACKOFF_MIN_MS;
        continue;
      }
      if (r == RES_GONE) {
        need_list = 1;
        continue; /* list again at once */
      }
      need_list = 1; /* an error: start over from a list */
    }
    if (r == RES_STOP)
      break;
    a->ok_logged = 0;
    lg_log_info(a->component, "Kubernetes API: retrying in %llu ms",
                (unsigned long long)backoff);
    if (nap(a, backoff))
      break;
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
  return NULL;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static void api_free(lg_k8s_api_t *a) {
  free(a->component);
  free(a->base);
  free(a->token_file);
  free(a->ca_file);
  free(a->node);
  lg_k8s_ev_free(a->head);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
  free(a);
}

lg_k8s_api_t *lg_k8s_api_start(const lg_k8s_api_opts_t *o) {
  pthread_once(&curl_once, curl_init);
  lg_k8s_api_t *a = calloc(1, sizeof *a);
  if (a == NULL)
    return NULL;
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  a->component = strdup(o->component);
  a->base = strdup(o->base_url);
  a->token_file = o->token_file ? strdup(o->token_file) : NULL;
  a->ca_file = o->ca_file ? strdup(o->ca_file) : NULL;
  a->node = strdup(o->node_name);
  a->wake = o->wake;
  if (a->component == NULL || a->base == NULL || a->node == NULL ||
      (o->token_file && !a->token_file) || (o->ca_file && !a->ca_file) ||
      pthread_create(&a->thread, NULL, run, a) != 0) {
    api_free(a);
    return NULL;
  }
  return a;
}

void lg_k8s_api_stop(lg_k8s_api_t *a) {
  if (a == NULL)
    return;
  pthread_mutex_lock(&a->mu);
  atomic_store(&a->stop, 1);
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
  pthread_join(a->thread, NULL);
  api_free(a);
}
