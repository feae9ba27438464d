/* The source registry and the set of running sources (lg_source.h). */
#include "sources/lg_source.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_log.h"
#include "core/lg_util.h"

/* The registry: adding a source type is one line here. */
extern const lg_source_type_t lg_source_file;
extern const lg_source_type_t lg_source_kubernetes;
extern const lg_source_type_t lg_source_forward;
static const lg_source_type_t *const types[] = {
    &lg_source_file,
    &lg_source_kubernetes,
    &lg_source_forward,
};
#define NTYPES (sizeof types / sizeof types[0])

/* lg_config.h: the config finds a type's options through the registry. */
const lg_conf_source_type_t *lg_config_source_type(const char *name) {
  const lg_source_type_t *t = lg_source_type_find(name);
  return t != NULL ? t->conf : NULL;
}

void lg_config_source_type_names(char *buf, size_t len) {
  lg_source_type_names(buf, len);
}

/* One instance per group type named in the registry. */
typedef struct group {
  const lg_source_group_type_t *type;
  void *g;
} group_t;

struct lg_sources {
  lg_source_host_t host;
  group_t groups[NTYPES];
  size_t ngroups;
  lg_source_t **by_id; /* by engine source id; NULL: never added */
  uint32_t nids;
  int started, closed;
  size_t ngroups_closing; /* the group closing now */
  void (*done)(void *ud);
  void *done_ud;
};

const lg_source_type_t *lg_source_type_find(const char *name) {
  for (size_t i = 0; name != NULL && i < NTYPES; i++)
    if (strcmp(types[i]->name, name) == 0)
      return types[i];
  return NULL;
}

void lg_source_type_names(char *buf, size_t len) {
  size_t used = 0;
  if (len == 0)
    return;
  buf[0] = '\0';
  for (size_t i = 0; i < NTYPES && used < len; i++) {
    int n =
        snprintf(buf + used, len - used, "%s%s", i ? ", " : "", types[i]->name);
    if (n < 0)
      break;
    used += (size_t)n;
  }
}

static group_t *group_of(lg_sources_t *set, const lg_source_group_type_t *gt) {
  for (size_t i = 0; gt != NULL && i < set->ngroups; i++)
    if (set->groups[i].type == gt)
      return &set->groups[i];
  return NULL;
}

lg_sources_t *lg_sources_create(const lg_source_host_t *h, char *err,
                                size_t errlen) {
  lg_sources_t *set = calloc(1, sizeof *set);
  if (set == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  set->host = *h;
  for (size_t i = 0; i < NTYPES; i++) {
    const lg_source_group_type_t *gt = types[i]->group;
    if (gt == NULL || group_of(set, gt) != NULL)
      continue;
    group_t *g = &set->groups[set->ngroups];
    g->type = gt;
    g->g = gt->create(set, &set->host, err, errlen);
    if (g->g == NULL) {
      lg_sources_destroy(set);
      return NULL;
    }
    set->ngroups++;
  }
  return set;
}

static void release_hold(lg_sources_t *set, lg_source_t *s) {
  if (s->spec.conf_hold != NULL && set->host.release_conf != NULL)
    set->host.release_conf(set->host.ud, s->spec.conf_hold);
  s->spec.conf_hold = NULL;
}

int lg_sources_add(lg_sources_t *set, const lg_source_spec_t *spec, char *err,
                   size_t errlen) {
  const lg_source_type_t *t = lg_source_type_find(spec->sc->type);
  lg_source_t *s = NULL;
  int rc = 0;
  if (t == NULL) {
    snprintf(err, errlen, "unknown source type '%s'",
             spec->sc->type ? spec->sc->type : "");
    rc = -EINVAL;
  } else if (spec->id >= set->nids) {
    uint32_t n = spec->id + 1;
    lg_source_t **g = realloc(set->by_id, n * sizeof *g);
    if (g == NULL) {
      rc = -ENOMEM;
    } else {
      memset(g + set->nids, 0, (n - set->nids) * sizeof *g);
      set->by_id = g;
      set->nids = n;
    }
  } else if (set->by_id[spec->id] != NULL) {
    snprintf(err, errlen, "source id %u is taken", spec->id);
    rc = -EEXIST;
  }
  if (rc == 0 && (s = calloc(1, sizeof *s)) == NULL)
    rc = -ENOMEM;
  if (rc != 0) {
    if (rc == -ENOMEM)
      snprintf(err, errlen, "out of memory");
    lg_source_t tmp = {.spec = *spec};
    release_hold(set, &tmp);
    return rc;
  }
  s->type = t;
  s->set = set;
  s->spec = *spec;
  s->host = &set->host;
  group_t *g = group_of(set, t->group);
  s->group = g != NULL ? g->g : NULL;
  set->by_id[spec->id] = s;
  if (!t->needs_conf)
    release_hold(set, s);
  rc = t->add(s, err, errlen);
  if (rc == 0 && set->started && t->start != NULL && (rc = t->start(s)) != 0)
    snprintf(err, errlen, "%s", strerror(-rc));
  if (rc != 0)
    lg_sources_remove(set, spec->id);
  return rc;
}

int lg_sources_start(lg_sources_t *set) {
  for (uint32_t id = 0; id < set->nids; id++) {
    lg_source_t *s = set->by_id[id];
    if (s == NULL || s->removed || s->type->start == NULL)
      continue;
    int rc = s->type->start(s);
    if (rc != 0)
      return rc;
  }
  for (size_t i = 0; i < set->ngroups; i++) {
    int rc = set->groups[i].type->start(set->groups[i].g);
    if (rc != 0)
      return rc;
  }
  set->started = 1;
  return 0;
}

static void source_close(lg_sources_t *set, lg_source_t *s) {
  if (s->closed)
    return;
  s->closed = 1;
  if (s->type->close != NULL)
    s->type->close(s);
  s->impl = NULL;
  release_hold(set, s);
}

void lg_sources_remove(lg_sources_t *set, uint32_t id) {
  lg_source_t *s = lg_source_by_id(set, id);
  if (s == NULL || s->removed)
    return;
  s->removed = 1;
  if (s->type->remove != NULL && !set->closed)
    s->type->remove(s);
  source_close(set, s);
}

/* Pauses (resume == 0) or resumes every group, then every source that is
 * not closed and has its own pause/resume. */
static void pause_or_resume(lg_sources_t *set, int resume) {
  if (set == NULL || set->closed)
    return;
  for (size_t i = 0; i < set->ngroups; i++) {
    const lg_source_group_type_t *t = set->groups[i].type;
    (resume ? t->resume : t->pause)(set->groups[i].g);
  }
  for (uint32_t id = 0; id < set->nids; id++) {
    lg_source_t *s = set->by_id[id];
    if (s == NULL || s->closed)
      continue;
    void (*fn)(lg_source_t *) = resume ? s->type->resume : s->type->pause;
    if (fn != NULL)
      fn(s);
  }
}

void lg_sources_pause(lg_sources_t *set) { pause_or_resume(set, 0); }

void lg_sources_resume(lg_sources_t *set) { pause_or_resume(set, 1); }

void lg_sources_drain(lg_sources_t *set, int on) {
  if (set == NULL || set->closed)
    return;
  for (size_t i = 0; i < set->ngroups; i++)
    if (set->groups[i].type->drain != NULL)
      set->groups[i].type->drain(set->groups[i].g, on);
}

/* The source batch `b` came from (removed ones too), or NULL when the set
 * is closed or has no source of b->source_id. */
static lg_source_t *source_of(lg_sources_t *set, const lg_batch_t *b) {
  if (set == NULL || set->closed || b->source_id >= set->nids)
    return NULL;
  return set->by_id[b->source_id];
}

/* Acks and drops go by type: a removed source's batches are still acked
 * through its group (its files may still be read to their end). */
void lg_sources_ack(lg_sources_t *set, const lg_batch_t *b) {
  lg_source_t *s = source_of(set, b);
  if (s == NULL)
    return;
  group_t *g = group_of(set, s->type->group);
  if (g != NULL && g->type->ack != NULL)
    g->type->ack(g->g, b);
  if (s->type->ack != NULL && !s->closed)
    s->type->ack(s, b);
}

void lg_sources_sent(lg_sources_t *set, const lg_batch_t *b,
                     uint64_t end_offset) {
  lg_source_t *s = source_of(set, b);
  if (s == NULL)
    return;
  group_t *g = group_of(set, s->type->group);
  if (g != NULL && g->type->sent != NULL)
    g->type->sent(g->g, b, end_offset);
}

void lg_sources_sent_flush(lg_sources_t *set) {
  if (set == NULL || set->closed)
    return;
  for (size_t i = 0; i < set->ngroups; i++)
    if (set->groups[i].type->sent != NULL)
      set->groups[i].type->sent(set->groups[i].g, NULL, 0);
}

void lg_sources_each_read(lg_sources_t *set,
                          void (*cb)(void *ud, uint64_t fingerprint,
                                     uint64_t from, uint64_t to),
                          void *ud) {
  if (set == NULL || set->closed)
    return;
  for (size_t i = 0; i < set->ngroups; i++)
    if (set->groups[i].type->each_read != NULL)
      set->groups[i].type->each_read(set->groups[i].g, cb, ud);
}

void lg_sources_each_prefixes(lg_sources_t *set,
                              void (*cb)(void *ud, uint64_t fingerprint,
                                         const uint64_t *prefix, uint32_t n),
                              void *ud) {
  if (set == NULL || set->closed)
    return;
  for (size_t i = 0; i < set->ngroups; i++)
    if (set->groups[i].type->each_prefixes != NULL)
      set->groups[i].type->each_prefixes(set->groups[i].g, cb, ud);
}

void lg_sources_drop(lg_sources_t *set, const lg_batch_t *b) {
  lg_source_t *s = source_of(set, b);
  if (s != NULL && !s->closed && s->type->drop != NULL)
    s->type->drop(s, b);
}

int lg_sources_idle(const lg_sources_t *set) {
  for (size_t i = 0; i < set->ngroups; i++)
    if (!set->groups[i].type->idle(set->groups[i].g))
      return 0;
  for (uint32_t id = 0; id < set->nids; id++) {
    const lg_source_t *s = set->by_id[id];
    if (s != NULL && !s->closed && s->type->busy != NULL && s->type->busy(s))
      return 0;
  }
  return 1;
}

int lg_sources_read_to_end(const lg_sources_t *set) {
  for (size_t i = 0; i < set->ngroups; i++)
    if (!set->groups[i].type->read_to_end(set->groups[i].g))
      return 0;
  return 1;
}

size_t lg_sources_unreadable(const lg_sources_t *set, const char **first) {
  size_t n = 0;
  for (size_t i = 0; i < set->ngroups; i++)
    if (set->groups[i].type->unreadable != NULL)
      n += set->groups[i].type->unreadable(set->groups[i].g,
                                           n == 0 ? first : &(const char *){0});
  return n;
}

void lg_sources_flush(lg_sources_t *set) {
  for (size_t i = 0; i < set->ngroups; i++)
    set->groups[i].type->flush(set->groups[i].g);
}

int lg_sources_chosen_pipeline(const lg_sources_t *set, const lg_batch_t *b,
                               const lg_config_t **conf) {
  if (b->source_id >= set->nids)
    return -1;
  const lg_source_t *s = set->by_id[b->source_id];
  if (s == NULL || s->closed || !s->chooses_pipeline)
    return -1;
  *conf = s->spec.conf;
  return b->pipeline;
}

/* Groups close one after another; then the sources. */
static void close_next_group(void *ud);

static void close_group_at(lg_sources_t *set, size_t i) {
  for (; i < set->ngroups; i++) {
    if (set->groups[i].g != NULL)
      break;
  }
  if (i < set->ngroups) {
    set->ngroups_closing = i;
    set->groups[i].type->close(set->groups[i].g, close_next_group, set);
    return;
  }
  for (uint32_t id = 0; id < set->nids; id++)
    if (set->by_id[id] != NULL)
      source_close(set, set->by_id[id]);
  if (set->done != NULL)
    set->done(set->done_ud);
}

static void close_next_group(void *ud) {
  lg_sources_t *set = ud;
  close_group_at(set, set->ngroups_closing + 1);
}

void lg_sources_close(lg_sources_t *set, void (*done)(void *ud), void *ud) {
  set->closed = 1;
  set->done = done;
  set->done_ud = ud;
  for (uint32_t id = 0; id < set->nids; id++) {
    lg_source_t *s = set->by_id[id];
    if (s != NULL && !s->closed && s->type->detach != NULL)
      s->type->detach(s);
  }
  close_group_at(set, 0);
}

void lg_sources_destroy(lg_sources_t *set) {
  if (set == NULL)
    return;
  for (uint32_t id = 0; id < set->nids; id++) {
    lg_source_t *s = set->by_id[id];
    if (s == NULL)
      continue;
    source_close(set, s);
    free(s);
  }
  free(set->by_id);
  for (size_t i = 0; i < set->ngroups; i++)
    set->groups[i].type->destroy(set->groups[i].g);
  free(set);
}

void lg_source_emit(lg_source_t *s, lg_batch_t *b) {
  s->host->on_batch(s->host->ud, b);
}

lg_source_t *lg_source_by_id(lg_sources_t *set, uint32_t id) {
  return set != NULL && id < set->nids ? set->by_id[id] : NULL;
}
