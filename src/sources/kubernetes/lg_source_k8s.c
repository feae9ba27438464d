/* The `kubernetes` source type (lg_source.h): the pod log layout, read by
 * the tailer group with a hook that gives each file its metadata
 * (lg_k8s.h); stream filters and the copies of a batch for the further
 * pipelines select() chose are applied here, before the engine. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/lg_log.h"
#include "sources/kubernetes/lg_k8s.h"
#include "sources/tail/lg_source_tail.h"

static int k8s_add(lg_source_t *s, char *err, size_t errlen) {
  lg_tail_group_t *g = s->group;
  const lg_conf_source_t *sc = s->spec.sc;
  const lg_k8s_conf_t *kc = sc->type_conf;
  /* Batches carry pipeline indexes of the source's config: the runtime's
   * own (lg_sources_chosen_pipeline). */
  lg_k8s_t *k = lg_k8s_create(s->host->loop, s->spec.conf, sc->name, s->spec.id,
                              s->spec.pipeline, kc);
  if (k == NULL) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  s->impl = k;
  s->chooses_pipeline = kc->select_ref >= 0;
  lg_tail_source_opts_t so = lg_tail_group_opts(s, &kc->tail);
  lg_k8s_patterns(k, &so.paths, &so.npaths, &so.exclude, &so.nexclude);
  so.on_file = lg_k8s_on_file;
  so.file_ud = k;
  int rc = lg_tail_add_source(g->tail, &so);
  if (rc != 0)
    snprintf(err, errlen, "%s", strerror(-rc));
  return rc;
}

static int k8s_start(lg_source_t *s) {
  lg_tail_group_t *g = s->group;
  return lg_k8s_start(s->impl, g->tail) != 0 ? -ENOMEM : 0;
}

/* A file that select() gave several pipelines: each gets a copy, handed
 * on right after the batch (same file, same checkpoint), so the file
 * moves on once every copy is delivered. Records of a stream the filters
 * exclude are dropped (acked, never sent). */
static void k8s_on_batch(lg_source_t *s, lg_batch_t *b) {
  lg_batch_t *copies[64];
  int ncopies = 0;
  for (uint64_t more = b->more_pipelines; more != 0; more &= more - 1) {
    lg_batch_t *c = lg_batch_clone(b);
    if (c == NULL) {
      lg_log_error("engine",
                   "out of memory copying a batch for pipeline "
                   "%d: its records are not sent there",
                   __builtin_ctzll(more));
      continue;
    }
    c->pipeline = __builtin_ctzll(more);
    copies[ncopies++] = c;
  }
  b->more_pipelines = 0;
  lg_k8s_filter_batch(s->impl, b);
  lg_source_emit(s, b);
  for (int i = 0; i < ncopies; i++) {
    lg_k8s_filter_batch(s->impl, copies[i]);
    lg_source_emit(s, copies[i]);
  }
}

/* --once is not done while files wait for their pod's metadata (at most
 * api_wait). */
static int k8s_busy(const lg_source_t *s) {
  return s->impl != NULL && lg_k8s_waiting(s->impl);
}

static void k8s_remove(lg_source_t *s) {
  lg_tail_group_t *g = s->group;
  if (g->tail != NULL)
    lg_tail_remove_source(g->tail, s->spec.id);
}

static void k8s_detach(lg_source_t *s) { lg_k8s_detach(s->impl); }

/* Stops the runtime (joins its API thread); it is freed in its handles'
 * close callbacks. */
static void k8s_close(lg_source_t *s) { lg_k8s_close(s->impl); }

extern const lg_conf_source_type_t
    lg_conf_source_kubernetes; /* lg_k8s_conf.c */

const lg_source_type_t lg_source_kubernetes = {
    .name = "kubernetes",
    .group = &lg_tail_group,
    .conf = &lg_conf_source_kubernetes,
    .needs_conf = 1, /* select() runs in the config's Lua state */
    .add = k8s_add,
    .start = k8s_start,
    .on_batch = k8s_on_batch,
    .busy = k8s_busy,
    .remove = k8s_remove,
    .detach = k8s_detach,
    .close = k8s_close,
};
