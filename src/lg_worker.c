#include "lg_worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lg_buf.h"
#include "lg_json.h"
#include "lg_log.h"
#include "lg_lua.h"

struct lg_worker {
  int id;
  lg_worker_opts_t o;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  lg_batch_t *head, *tail; /* queue */
  size_t backlog;
  int stop;
  /* start-up handshake */
  int ready; /* 1 ok, -1 failed */
  char err[512];
  lg_lua_t *lua;
};

int lg_worker_encode(lg_batch_t *b, uint32_t noutputs, int dead_letter) {
  if (b->nout < noutputs) {
    struct lg_buf *o = realloc(b->out, noutputs * sizeof *o);
    if (o == NULL)
      return -ENOMEM;
    for (uint32_t k = b->nout; k < noutputs; k++)
      o[k] = (lg_buf_t)LG_BUF_INIT;
    b->out = o;
    b->nout = noutputs;
  }
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    if (r->flags & LG_REC_DROPPED)
      continue;
    if ((r->flags & LG_REC_FAILED) && dead_letter >= 0) {
      if (lg_json_encode_record(&b->out[dead_letter], b, i) != 0)
        return -ENOMEM;
      continue;
    }
    uint64_t routes = r->routes;
    while (routes) {
      int k = __builtin_ctzll(routes);
      routes &= routes - 1;
      if ((uint32_t)k >= noutputs)
        continue;
      if (lg_json_encode_record(&b->out[k], b, i) != 0)
        return -ENOMEM;
    }
  }
  return 0;
}

static int load_pipelines(lg_worker_t *w) {
  const lg_config_t *c = w->o.conf;
  lg_lua_opts_t lo = {.output_names = w->o.output_names,
                      .noutputs = w->o.noutputs,
                      .memory_limit = w->o.memory_limit};
  w->lua = lg_lua_create(&lo, w->err, sizeof w->err);
  if (w->lua == NULL)
    return -1;
  for (size_t p = 0; p < c->npipelines; p++) {
    const lg_conf_pipeline_t *pc = &c->pipelines[p];
    if (pc->nscripts == 0)
      continue;
    lg_lua_script_t *s = calloc(pc->nscripts, sizeof *s);
    if (s == NULL)
      return -1;
    for (size_t k = 0; k < pc->nscripts; k++) {
      s[k].path = pc->scripts[k].path;
      s[k].params_json = pc->scripts[k].params_json;
      s[k].compat = pc->scripts[k].compat;
      s[k].call = pc->scripts[k].call;
      s[k].compat_opts_json = pc->scripts[k].compat_opts_json;
    }
    int rc = lg_lua_add_pipeline(w->lua, (int)p, pc->name, s, pc->nscripts,
                                 w->err, sizeof w->err);
    free(s);
    if (rc != 0)
      return -1;
  }
  return 0;
}

static void process(lg_worker_t *w, lg_batch_t *b) {
  const lg_config_t *c = w->o.conf;
  uint64_t routes = b->pipeline >= 0 ? w->o.pipeline_routes[b->pipeline] : 0;
  for (uint32_t i = 0; i < b->n; i++)
    b->recs[i].routes = routes;
  if (b->pipeline >= 0 && c->pipelines[b->pipeline].nscripts > 0) {
    char err[512];
    if (lg_lua_run(w->lua, b->pipeline, b, err, sizeof err) != 0) {
      /* The driver itself failed (not a user script): fail every record
       * so they reach the dead-letter output instead of vanishing. */
      lg_log_error("worker", "pipeline %s: %s",
                   c->pipelines[b->pipeline].name, err);
      for (uint32_t i = 0; i < b->n; i++)
        if (!(b->recs[i].flags & (LG_REC_DROPPED | LG_REC_FAILED)))
          lg_batch_fail(b, i, err, strlen(err));
    }
  }
  while (lg_worker_encode(b, (uint32_t)w->o.noutputs, w->o.dead_letter) != 0) {
    lg_log_error("worker", "out of memory encoding a batch; retrying");
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static void *worker_main(void *arg) {
  lg_worker_t *w = arg;
  int ok = load_pipelines(w) == 0;
  pthread_mutex_lock(&w->mu);
  w->ready = ok ? 1 : -1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  if (!ok)
    return NULL;
  for (;;) {
    pthread_mutex_lock(&w->mu);
    while (w->head == NULL && !w->stop)
      pthread_cond_wait(&w->cv, &w->mu);
    lg_batch_t *b = w->head;
    if (b == NULL) {
      pthread_mutex_unlock(&w->mu);
      break;
    }
    w->head = b->next;
    if (w->head == NULL)
      w->tail = NULL;
    b->next = NULL;
    pthread_mutex_unlock(&w->mu);
    process(w, b);
    pthread_mutex_lock(&w->mu);
    w->backlog--;
    pthread_mutex_unlock(&w->mu);
    w->o.done(w->o.ud, b);
  }
  return NULL;
}

lg_worker_t *lg_worker_create(int id, const lg_worker_opts_t *o, char *err,
                              size_t errlen) {
  lg_worker_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  w->id = id;
  w->o = *o;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
    snprintf(err, errlen, "cannot start worker thread");
    free(w);
    return NULL;
  }
  pthread_mutex_lock(&w->mu);
  while (w->ready == 0)
    pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
  if (w->ready < 0) {
    snprintf(err, errlen, "%s", w->err);
    pthread_join(w->thread, NULL);
    lg_lua_destroy(w->lua);
    free(w);
    return NULL;
  }
  return w;
}

void lg_worker_push(lg_worker_t *w, lg_batch_t *b) {
  b->next = NULL;
  pthread_mutex_lock(&w->mu);
  if (w->tail)
    w->tail->next = b;
  else
    w->head = b;
  w->tail = b;
  w->backlog++;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

size_t lg_worker_backlog(lg_worker_t *w) {
  pthread_mutex_lock(&w->mu);
  size_t n = w->backlog;
  pthread_mutex_unlock(&w->mu);
  return n;
}

void lg_worker_destroy(lg_worker_t *w) {
  if (w == NULL)
    return;
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  lg_lua_destroy(w->lua);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}
