/*
 * lg_http_client.c - libcurl multi_socket on the libuv loop; see the header.
 *
 * Shape (as curl's docs/examples/multi-uv.c, with its known gaps closed):
 * libcurl tells us through CURLMOPT_SOCKETFUNCTION which sockets to watch
 * (one uv_poll_t each, found again through curl_multi_assign) and through
 * CURLMOPT_TIMERFUNCTION when to call it back (one uv_timer_t). Neither
 * callback calls libcurl: they only start and stop loop handles, since
 * libcurl forbids re-entering it from its own callbacks. Poll events
 * (with CURL_CSELECT_ERR for a poll error, which the example leaves out)
 * and timer expiries call curl_multi_socket_action; finished transfers are
 * then collected first and reported after, so a completion callback may
 * start requests or close the client.
 *
 * One request's headers, options and answer are lg_http_request.c's; this
 * file decides where and when it runs.
 */
#include "core/lg_http_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_buf.h"
#include "core/lg_http_client_internal.h"
#include "core/lg_list.h"
#include "core/lg_log.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_global(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void lg__http_global_init(void) { pthread_once(&curl_once, curl_global); }

static char *dup_or_null(const char *s) {
  return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

/* ---- hosts ------------------------------------------------------------ */

/* Round-robin over the hosts that are up and not yet tried for this
 * request; when every untried host is set aside, the one whose time is
 * nearest, so a request never waits for a host to come back. -1 when every
 * host has been tried. */
static int pick_host(lg_http_client_t *c, uint64_t tried) {
  uint64_t now = uv_now(c->loop);
  for (size_t k = 0; k < c->nhosts; k++) {
    size_t i = (c->rr + k) % c->nhosts;
    if (!(tried & (1ull << i)) && c->hosts[i].down_until <= now) {
      c->rr = i + 1;
      return (int)i;
    }
  }
  int best = -1;
  for (size_t i = 0; i < c->nhosts; i++)
    if (!(tried & (1ull << i)) &&
        (best < 0 || c->hosts[i].down_until < c->hosts[best].down_until))
      best = (int)i;
  return best;
}

static void host_failed(lg_http_client_t *c, int i, const char *why) {
  host_t *h = &c->hosts[i];
  uint64_t d = HOST_DOWN_MIN_MS;
  for (int k = 0; k < h->fails && d < HOST_DOWN_MAX_MS; k++)
    d *= 2;
  if (d > HOST_DOWN_MAX_MS)
    d = HOST_DOWN_MAX_MS;
  h->fails++;
  h->down_until = uv_now(c->loop) + d;
  if (c->nhosts > 1)
    lg_log_warn(c->component, "%s: %s; trying other hosts first for %llu ms",
                h->base, why, (unsigned long long)d);
}

void lg_http_req_host_failed(lg_http_req_t *req) {
  if (req->host >= 0)
    host_failed(req->c, req->host, "set aside after its answer");
}

/* ---- loop plumbing ---------------------------------------------------- */

static void check_done(lg_http_client_t *c);
static void teardown(lg_http_client_t *c);

static void handle_closed(lg_http_client_t *c) {
  if (--c->handles_open == 0 && c->torn_down) {
    void (*cb)(void *) = c->closed_cb;
    void *ud = c->closed_ud;
    free(c);
    if (cb != NULL)
      cb(ud);
  }
}

static void on_sock_closed(uv_handle_t *h) {
  sockctx_t *s = h->data;
  lg_http_client_t *c = s->c;
  free(s);
  handle_closed(c);
}

static void sock_close(lg_http_client_t *c, sockctx_t *s) {
  LG_LIST_UNLINK(c->socks, s);
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  sockctx_t *s = p->data;
  lg_http_client_t *c = s->c;
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_ERR; /* libuv reports POLLERR as an error */
  else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  int running;
  curl_multi_socket_action(c->multi, s->fd, flags, &running);
  check_done(c);
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching a socket. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  lg_http_client_t *c = userp;
  sockctx_t *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      curl_multi_assign(c->multi, fd, NULL);
      sock_close(c, s);
    }
    return 0;
  }
  if (s == NULL) {
    s = calloc(1, sizeof *s);
    if (s == NULL)
      return -1;
    if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->fd = fd;
    s->c = c;
    s->poll.data = s;
    LG_LIST_PUSH(c->socks, s);
    c->handles_open++;
    curl_multi_assign(c->multi, fd, s);
  }
  int ev = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
    ev |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
    ev |= UV_WRITABLE;
  uv_poll_start(&s->poll, ev, on_poll);
  return 0;
}

static void on_timer(uv_timer_t *t) {
  lg_http_client_t *c = t->data;
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(c);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arms the uv timer; libcurl is called
 * from the timer's callback, not from here. */
static int on_curl_timer(CURLM *m, long timeout_ms, void *userp) {
  lg_http_client_t *c = userp;
  if (timeout_ms < 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- requests --------------------------------------------------------- */

/* Points the easy handle at host `h` and (re)adds it to the multi. */
static int start_on_host(lg_http_req_t *r, int h) {
  lg_http_client_t *c = r->c;
  r->host = h;
  r->tried |= 1ull << h;
  r->resp.len = 0;
  r->hdrs.len = 0;
  r->truncated = 0;
  r->errbuf[0] = '\0';
  lg_buf_t url = LG_BUF_INIT;
  if (lg_buf_appendf(&url, "%s%s", c->hosts[h].base, r->path) != 0)
    return -ENOMEM;
  curl_easy_setopt(r->easy, CURLOPT_URL, url.data);
  lg_buf_free(&url); /* libcurl copies option strings */
  if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK)
    return -EIO;
  return 0;
}

#ifdef LUGGER_FUZZ_HOOKS
void (*lg__http_fuzz_take)(lg_http_req_t *r);
#endif

static void req_unlink(lg_http_client_t *c, lg_http_req_t *r) {
  LG_LIST_UNLINK(c->reqs, r);
  c->in_flight--;
}

lg_http_req_t *lg_http_request(lg_http_client_t *c, const char *method,
                               const char *path, const char *content_type,
                               const char *const *headers, size_t nheaders,
                               const void *body, size_t len, int compressible,
                               lg_http_done_cb done, void *ud) {
  if (c->closing) {
    errno = ESHUTDOWN;
    return NULL;
  }
  if (path == NULL || path[0] != '/') {
    errno = EINVAL;
    return NULL;
  }
  lg_http_req_t *r =
      lg__http_req_new(c, method, path, content_type, headers, nheaders, body,
                       len, compressible, done, ud);
  if (r == NULL)
    return NULL;
#ifdef LUGGER_FUZZ_HOOKS
  if (lg__http_fuzz_take != NULL) {
    r->host = 0;
    r->start = uv_now(c->loop);
    lg__http_fuzz_take(r);
    return r;
  }
#endif
  int hi = pick_host(c, 0);
  LG_LIST_PUSH(c->reqs, r);
  c->in_flight++;
  if (start_on_host(r, hi) != 0) {
    req_unlink(c, r);
    lg__http_req_free(r);
    errno = ENOMEM;
    return NULL;
  }
  return r;
}

/* A connection that could not be made sent nothing, so the request can
 * go to another host at once without any risk of doubling it. */
static int connect_failed(CURLcode rc) {
  return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST;
}

static void finish(lg_http_client_t *c, lg_http_req_t *r, CURLcode rc) {
  long status = 0, conns = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &conns);
  r->new_connections += (int)conns;
  curl_multi_remove_handle(c->multi, r->easy);
  if (rc != CURLE_OK) {
    char why[CURL_ERROR_SIZE + 64];
    snprintf(why, sizeof why, "%s",
             r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
    host_failed(c, r->host, why);
    if (connect_failed(rc)) {
      int next = pick_host(c, r->tried);
      if (next >= 0 && start_on_host(r, next) == 0)
        return; /* still in flight, on the next host */
    }
  } else {
    c->hosts[r->host].fails = 0;
    c->hosts[r->host].down_until = 0;
  }
  req_unlink(c, r);
  lg__http_req_complete(r, rc, status);
}

static void check_done(lg_http_client_t *c) {
  if (c->torn_down)
    return;
  /* Collect first: a callback may add or remove transfers, which must not
   * happen while curl_multi_info_read's queue is being walked. */
  enum { BATCH = 64 };
  CURL *easy[BATCH];
  CURLcode rcs[BATCH];
  c->dispatching++;
  for (;;) {
    int n = 0, left;
    CURLMsg *m;
    while (n < BATCH && (m = curl_multi_info_read(c->multi, &left)) != NULL)
      if (m->msg == CURLMSG_DONE) {
        easy[n] = m->easy_handle;
        rcs[n++] = m->data.result;
      }
    if (n == 0)
      break;
    for (int i = 0; i < n && !c->closing; i++) {
      lg_http_req_t *r = NULL;
      curl_easy_getinfo(easy[i], CURLINFO_PRIVATE, (char **)&r);
      if (r != NULL)
        finish(c, r, rcs[i]);
    }
    if (c->closing)
      break;
  }
  c->dispatching--;
  if (c->closing && c->dispatching == 0)
    teardown(c);
}

/* ---- create / close --------------------------------------------------- */

size_t lg_http_client_in_flight(const lg_http_client_t *c) {
  return c->in_flight;
}

static void on_timer_closed(uv_handle_t *h) { handle_closed(h->data); }

static void free_settings(lg_http_client_t *c);

static void teardown(lg_http_client_t *c) {
  if (c->torn_down)
    return;
  while (c->reqs != NULL) {
    lg_http_req_t *r = c->reqs;
    curl_multi_remove_handle(c->multi, r->easy);
    req_unlink(c, r);
    lg__http_req_free(r);
  }
  /* curl_multi_cleanup closes the pooled connections and may still tell
   * on_socket about them; that is why the callbacks stay set. */
  if (c->multi != NULL)
    curl_multi_cleanup(c->multi);
  c->multi = NULL;
  while (c->socks != NULL)
    sock_close(c, c->socks);
  free_settings(c);
  c->torn_down = 1;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void free_settings(lg_http_client_t *c) {
  for (size_t i = 0; i < c->nhosts; i++)
    free(c->hosts[i].base);
  free(c->component);
  free(c->ca_file);
  free(c->cert_file);
  free(c->key_file);
  free(c->proxy);
  free(c->user);
  free(c->password);
  free(c->api_key);
  free(c->token);
  free(c->token_file);
  curl_slist_free_all(c->base_headers);
}

void lg_http_client_close(lg_http_client_t *c, void (*cb)(void *ud), void *ud) {
  if (c == NULL || c->closing)
    return;
  c->closing = 1;
  c->closed_cb = cb;
  c->closed_ud = ud;
  if (c->dispatching == 0)
    teardown(c);
}

static int valid_base(const char *s) {
  return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

lg_http_client_t *lg_http_client_create(uv_loop_t *loop,
                                        const lg_http_client_conf_t *conf,
                                        char *err, size_t errlen) {
  lg__http_global_init();
  if (conf->nhosts == 0 || conf->nhosts > MAX_HOSTS) {
    snprintf(err, errlen, "hosts: between 1 and %d needed", MAX_HOSTS);
    return NULL;
  }
  for (size_t i = 0; i < conf->nhosts; i++)
    if (conf->hosts[i] == NULL || !valid_base(conf->hosts[i])) {
      snprintf(err, errlen,
               "hosts[%zu]: \"%s\" is not an http:// or https:// URL", i + 1,
               conf->hosts[i] ? conf->hosts[i] : "");
      return NULL;
    }
  lg_http_client_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  c->loop = loop;
  c->component = strdup(conf->component ? conf->component : "http");
  c->nhosts = conf->nhosts;
  for (size_t i = 0; i < conf->nhosts; i++) {
    c->hosts[i].base = strdup(conf->hosts[i]);
    size_t l = c->hosts[i].base ? strlen(c->hosts[i].base) : 0;
    while (l > 0 && c->hosts[i].base[l - 1] == '/')
      c->hosts[i].base[--l] = '\0';
  }
  c->ca_file = dup_or_null(conf->ca_file);
  c->cert_file = dup_or_null(conf->cert_file);
  c->key_file = dup_or_null(conf->key_file);
  c->proxy = dup_or_null(conf->proxy);
  c->tls_verify = conf->tls_verify;
  c->connect_timeout_ms =
      conf->connect_timeout_ms > 0 ? (long)conf->connect_timeout_ms : 10000L;
  c->timeout_ms = conf->timeout_ms > 0 ? (long)conf->timeout_ms : 60000L;
  c->compression = conf->compression;
  c->user = dup_or_null(conf->user);
  c->password = dup_or_null(conf->password);
  c->api_key = dup_or_null(conf->api_key);
  c->token = dup_or_null(conf->bearer_token);
  c->token_file = dup_or_null(conf->bearer_token_file);
  c->max_response =
      conf->max_response_bytes ? conf->max_response_bytes : 16u << 20;
  int bad = lg__http_base_headers(c, conf);
  if (c->token_file != NULL && lg__http_read_token(c, err, errlen) != 0) {
    bad = 2;
  }
  c->multi = curl_multi_init();
  if (c->multi == NULL || c->component == NULL || bad) {
    if (bad != 2)
      snprintf(err, errlen, "out of memory setting up the HTTP client");
    if (c->multi != NULL)
      curl_multi_cleanup(c->multi);
    free_settings(c); /* no loop handle exists yet */
    free(c);
    return NULL;
  }
  c->token_checked = uv_now(loop);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->handles_open = 1;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  long maxc =
      conf->max_connections_per_host > 0 ? conf->max_connections_per_host : 8;
  curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxc);
  /* HTTP/1.1 only: no multiplexing (see notes on 7.88's h2 stalls). */
  curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
  if (!c->tls_verify)
    lg_log_warn(c->component,
                "tls_verify = false: the server's certificate and name are "
                "not checked; anyone on the path can read and change the logs");
  return c;
}
