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

static const cJSON *get(const cJSON *o, const char *k) {
  return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* ------------------------------------------------------------------ */
/* The queue to the loop thread. */

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

#ifdef LUGGER_FUZZ_HOOKS
size_t lg__k8s_api_fuzz_watch(uv_async_t *wake, const char *data, size_t len,
                              size_t piece, lg_k8s_ev_t **out, char *rv,
                              size_t rvlen) {
  lg_k8s_api_t a;
  memset(&a, 0, sizeof a);
  a.component = "fuzz";
  a.wake = wake;
  pthread_mutex_init(&a.mu, NULL);
  xfer_t x = {.a = &a, .max = LINE_MAX_BYTES, .watch = 1};
  for (size_t at = 0; at < len; at += piece) {
    size_t n = len - at < piece ? len - at : piece;
    if (on_body((char *)data + at, 1, n, &x) != n)
      break;
  }
  free(x.buf);
  *out = lg_k8s_api_take(&a);
  snprintf(rv, rvlen, "%s", a.rv);
  pthread_mutex_destroy(&a.mu);
  return x.events;
}
#endif

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
