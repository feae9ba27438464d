#include "engine/lg_admin_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "core/lg_buf.h"
#include "core/lg_metrics.h"
#include "engine/lg_reload.h"

#define MAX_REASONS 32
#define KEY_MAX 64
#define REASON_MAX 1024

typedef struct reason {
  int used;
  int fatal; /* liveness: not healthy (and so not ready) */
  char key[KEY_MAX];
  char text[REASON_MAX];
} reason_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static reason_t reasons[MAX_REASONS];

struct lg_http {
  struct MHD_Daemon *d;
};

static int set_reason(int fatal, const char *key, const char *text) {
  if (key == NULL || key[0] == '\0' || strlen(key) >= KEY_MAX)
    return -EINVAL;
  int rc = 0;
  pthread_mutex_lock(&mu);
  reason_t *slot = NULL, *free_slot = NULL;
  for (int i = 0; i < MAX_REASONS; i++) {
    if (reasons[i].used && reasons[i].fatal == fatal &&
        strcmp(reasons[i].key, key) == 0)
      slot = &reasons[i];
    else if (!reasons[i].used && free_slot == NULL)
      free_slot = &reasons[i];
  }
  if (text == NULL) {
    if (slot != NULL)
      slot->used = 0;
  } else {
    if (slot == NULL)
      slot = free_slot;
    if (slot == NULL) {
      rc = -ENOSPC;
    } else {
      slot->used = 1;
      slot->fatal = fatal;
      snprintf(slot->key, sizeof slot->key, "%s", key);
      snprintf(slot->text, sizeof slot->text, "%s", text);
    }
  }
  pthread_mutex_unlock(&mu);
  return rc;
}

int lg_admin_http_set_unready(const char *key, const char *reason) {
  return set_reason(0, key, reason);
}

int lg_admin_http_set_unhealthy(const char *key, const char *reason) {
  return set_reason(1, key, reason);
}

int lg_admin_http_problems(int which, char *out, size_t outlen) {
  int n = 0;
  size_t len = 0;
  if (outlen > 0)
    out[0] = '\0';
  pthread_mutex_lock(&mu);
  for (int i = 0; i < MAX_REASONS; i++) {
    if (!reasons[i].used || (which == 1 && !reasons[i].fatal))
      continue;
    n++;
    if (len < outlen) {
      int w = snprintf(out + len, outlen - len, "%s: %s\n", reasons[i].key,
                       reasons[i].text);
      if (w > 0)
        len += (size_t)w;
    }
  }
  pthread_mutex_unlock(&mu);
  /* A config or script that failed to reload: the old one still runs, but
   * what was deployed is not what runs, so the pod is not ready until a
   * reload succeeds. */
  if (which == 0) {
    char msg[REASON_MAX];
    uint64_t failed = lg_reload_status(msg, sizeof msg);
    if (failed > 0) {
      n++;
      if (len < outlen)
        snprintf(out + len, outlen - len,
                 "reload: %llu reload(s) failed since the running config "
                 "was loaded; last: %s\n",
                 (unsigned long long)failed, msg);
    }
  }
  return n;
}

void lg_admin_http_reset(void) {
  pthread_mutex_lock(&mu);
  memset(reasons, 0, sizeof reasons);
  pthread_mutex_unlock(&mu);
}

/* ---- the server --------------------------------------------------------
 */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status,
                             const char *type, const char *body, size_t len) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (r == NULL)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  enum MHD_Result rc = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_len, void **req_cls) {
  (void)cls;
  (void)version;
  (void)upload;
  (void)upload_len;
  (void)req_cls;
  static const char text[] = "text/plain; charset=utf-8";
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, "GET only\n", 9);
  if (strcmp(url, "/metrics") == 0) {
    lg_buf_t b = LG_BUF_INIT;
    if (lg_metrics_render(&b) != 0) {
      lg_buf_free(&b);
      return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text, "out of memory\n",
                   14);
    }
    enum MHD_Result rc =
        reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
              b.data ? b.data : "", b.len);
    lg_buf_free(&b);
    return rc;
  }
  int which = strcmp(url, "/healthz") == 0  ? 1
              : strcmp(url, "/readyz") == 0 ? 0
                                            : -1;
  if (which < 0)
    return reply(c, MHD_HTTP_NOT_FOUND, text,
                 "not found: try /metrics, /healthz or /readyz\n", 45);
  char body[8192];
  int n = lg_admin_http_problems(which, body, sizeof body);
  if (n == 0)
    return reply(c, MHD_HTTP_OK, text, which ? "ok\n" : "ready\n",
                 which ? 3 : 6);
  return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, text, body, strlen(body));
}

/* Parses "host:port", ":port" or "[v6]:port" into `ss`. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss,
                      socklen_t *sslen) {
  const char *colon = addr ? strrchr(addr, ':') : NULL;
  if (colon == NULL)
    return -EINVAL;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (end == colon + 1 || *end != '\0' || port < 0 || port > 65535)
    return -EINVAL;
  char host[64];
  size_t hl = (size_t)(colon - addr);
  if (hl >= sizeof host)
    return -EINVAL;
  memcpy(host, addr, hl);
  host[hl] = '\0';
  memset(ss, 0, sizeof *ss);
  if (host[0] == '[') {
    size_t l = strlen(host);
    if (l < 2 || host[l - 1] != ']')
      return -EINVAL;
    host[l - 1] = '\0';
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
      return -EINVAL;
    *sslen = sizeof *s6;
    return AF_INET6;
  }
  struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
  s4->sin_family = AF_INET;
  s4->sin_port = htons((uint16_t)port);
  if (host[0] == '\0')
    s4->sin_addr.s_addr = htonl(INADDR_ANY);
  else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
    return -EINVAL;
  *sslen = sizeof *s4;
  return AF_INET;
}

lg_admin_http_t *lg_admin_http_start(const char *addr, char *err,
                                     size_t errlen) {
  struct sockaddr_storage ss;
  socklen_t sslen = 0;
  int family = parse_addr(addr, &ss, &sslen);
  if (family < 0) {
    snprintf(err, errlen,
             "settings.http: expected a numeric \"host:port\", \":port\" or "
             "\"[v6]:port\", got \"%s\"",
             addr ? addr : "");
    return NULL;
  }
  lg_admin_http_t *h = calloc(1, sizeof *h);
  if (h == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
  if (family == AF_INET6)
    flags |= MHD_USE_IPv6;
  uint16_t port =
      ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                               : ((struct sockaddr_in *)&ss)->sin_port);
  /* Probes are tiny and few: a short timeout and a connection limit keep
   * a stuck client from holding the port. */
  h->d = MHD_start_daemon(
      flags, port, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR,
      (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
  if (h->d == NULL) {
    snprintf(err, errlen, "settings.http: cannot listen on %s: %s", addr,
             errno ? strerror(errno) : "libmicrohttpd failed to start");
    free(h);
    return NULL;
  }
  return h;
}

void lg_admin_http_stop(lg_admin_http_t *h) {
  if (h == NULL)
    return;
  MHD_stop_daemon(h->d);
  free(h);
}
