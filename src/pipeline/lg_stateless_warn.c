#include "pipeline/lg_stateless_warn.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_log.h"
#include "pipeline/lg_lua.h"

typedef struct seen {
  char *name;
  uint64_t digest;
} seen_t;

struct lg_stateless_warned {
  pthread_mutex_t mu;
  seen_t *v;
  size_t n;
};

lg_stateless_warned_t *lg_stateless_warned_create(void) {
  lg_stateless_warned_t *w = calloc(1, sizeof *w);
  if (w != NULL)
    pthread_mutex_init(&w->mu, NULL);
  return w;
}

static void free_seen(seen_t *v, size_t n) {
  for (size_t k = 0; v != NULL && k < n; k++)
    free(v[k].name);
  free(v);
}

void lg_stateless_warned_destroy(lg_stateless_warned_t *w) {
  if (w == NULL)
    return;
  free_seen(w->v, w->n);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

/* Whether `w` (locked) holds `name` with `digest`. */
static int was_warned(const lg_stateless_warned_t *w, const char *name,
                      uint64_t digest) {
  for (size_t k = 0; w != NULL && k < w->n; k++)
    if (w->v[k].digest == digest && strcmp(w->v[k].name, name) == 0)
      return 1;
  return 0;
}

static void warn_pipeline(const lg_config_t *c, size_t p, struct lg_lua *lua) {
  const lg_conf_pipeline_t *pc = &c->pipelines[p];
  char buf[4096];
  int n = lg_lua_state_writes(lua, (int)p, buf, sizeof buf);
  if (n < 0) {
    lg_log_warn("config", "%s: pipelines.%s: cannot look for script state: %s",
                c->path, pc->name, buf);
    return;
  }
  for (char *line = buf, *next; n > 0 && line != NULL; line = next) {
    next = strchr(line, '\n');
    if (next != NULL)
      *next++ = '\0';
    lg_log_warn("config",
                "%s: pipelines.%s.stateless: %s: " LG_LUA_STATE_WRITES_WHY,
                c->path, pc->name, line);
  }
}

struct lg_stateless_seen {
  seen_t *v;
  size_t n;
};

void lg_stateless_seen_free(lg_stateless_seen_t *s) {
  if (s == NULL)
    return;
  free_seen(s->v, s->n);
  free(s);
}

lg_stateless_seen_t *lg_stateless_check(lg_stateless_warned_t *w,
                                        const lg_config_t *c,
                                        struct lg_lua *lua) {
  if (lua == NULL)
    return NULL;
  lg_stateless_seen_t *now = calloc(1, sizeof *now);
  if (now != NULL &&
      (now->v = calloc(c->npipelines + 1, sizeof *now->v)) == NULL) {
    free(now);
    now = NULL;
  }
  if (w != NULL)
    pthread_mutex_lock(&w->mu);
  for (size_t p = 0; p < c->npipelines; p++) {
    const lg_conf_pipeline_t *pc = &c->pipelines[p];
    if (!pc->stateless || pc->nscripts == 0)
      continue;
    uint64_t d = lg_lua_pipeline_digest(lua, (int)p);
    if (!was_warned(w, pc->name, d))
      warn_pipeline(c, p, lua);
    /* Out of memory: that pipeline is warned about again next time. */
    if (now != NULL && (now->v[now->n].name = strdup(pc->name)) != NULL)
      now->v[now->n++].digest = d;
  }
  if (w != NULL)
    pthread_mutex_unlock(&w->mu);
  return now;
}

void lg_stateless_warned_commit(lg_stateless_warned_t *w,
                                lg_stateless_seen_t *s) {
  if (w == NULL || s == NULL) {
    lg_stateless_seen_free(s);
    return;
  }
  pthread_mutex_lock(&w->mu);
  free_seen(w->v, w->n);
  w->v = s->v;
  w->n = s->n;
  pthread_mutex_unlock(&w->mu);
  free(s);
}

void lg_stateless_warn(lg_stateless_warned_t *w, const lg_config_t *c,
                       struct lg_lua *lua) {
  lg_stateless_warned_commit(w, lg_stateless_check(w, c, lua));
}
