/* Hot reload (lg_reload.h): diff a new config against the running plan,
 * build the new generation off the loop, then switch to it on the loop. */
#include "engine/lg_engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_log.h"
#include "pipeline/lg_lua.h"
#include "pipeline/lg_stateless_warn.h"

/* ---- hot reload (lg_reload.h) ---- */

/* A new generation, built off the loop thread, not yet running. */
typedef struct prepared {
  plan_t *plan;
  lg_lua_t **lua;            /* per worker, init run */
  uint64_t new_slots;        /* outputs to create */
  uint32_t *added, *removed; /* engine source ids to start and stop */
  size_t nadded, nremoved;
  /* The stateless pipelines warned about, recorded once the switch is
   * made (a rejected reload's are warned about again next time). */
  lg_stateless_seen_t *stateless_seen;
} prepared_t;

static void prepared_free(engine_t *e, prepared_t *pr) {
  if (pr == NULL)
    return;
  for (int w = 0; pr->lua != NULL && w < e->nworkers; w++)
    lg_lua_destroy(pr->lua[w]);
  free(pr->lua);
  free(pr->added);
  free(pr->removed);
  lg_stateless_seen_free(pr->stateless_seen);
  lg__plan_free(pr->plan);
  free(pr);
}

static void reload_begin(void *ud) {
  engine_t *e = ud;
  e->reload_busy = 0;
  for (size_t k = 0; k < MAX_SLOTS; k++)
    if (e->slot_state[k] != SLOT_FREE)
      e->reload_busy |= 1ull << k;
}

/* Settings the running engine was built with; a reload cannot change
 * them (state, threads, listeners), so it warns and keeps them. */
static void check_settings(const lg_config_t *old, const lg_config_t *c) {
#define SAME_STR(a, b) ((a) == (b) || ((a) && (b) && strcmp((a), (b)) == 0))
  const char *changed[10];
  int n = 0;
  if (!SAME_STR(old->settings.state_dir, c->settings.state_dir))
    changed[n++] = "state_dir";
  if (old->settings.memory_budget != c->settings.memory_budget)
    changed[n++] = "memory_budget";
  if (old->settings.workers != c->settings.workers)
    changed[n++] = "workers";
  if (!SAME_STR(old->settings.http, c->settings.http))
    changed[n++] = "http";
  if (old->settings.checkpoint_interval_ms !=
      c->settings.checkpoint_interval_ms)
    changed[n++] = "checkpoint_interval";
  if (old->settings.rescan_interval_ms != c->settings.rescan_interval_ms)
    changed[n++] = "rescan_interval";
  if (old->settings.shutdown_timeout_ms != c->settings.shutdown_timeout_ms)
    changed[n++] = "shutdown_timeout";
  /* Also read at start only: the tail sources' idle closing, the watchdog
   * and the workers' Lua allocator (a reload's states are made with the
   * start's cap). */
  if (old->settings.close_inactive_ms != c->settings.close_inactive_ms)
    changed[n++] = "close_inactive";
  if (old->settings.script_timeout_ms != c->settings.script_timeout_ms)
    changed[n++] = "script_timeout";
  if (old->settings.script_memory != c->settings.script_memory)
    changed[n++] = "script_memory";
#undef SAME_STR
  for (int i = 0; i < n; i++)
    lg_log_warn("reload",
                "%s: settings.%s changed: it takes effect after a restart",
                c->path, changed[i]);
}

/* Threadpool thread: diff `c` against the running generation and build
 * the new one with a fresh Lua state per worker. Reads e->plan, which
 * only a reload changes (reloads are serial), and e->reload_busy. */
static void *reload_prepare(void *ud, lg_config_t *c, lg_lua_script_t **texts,
                            char *err, size_t errlen) {
  engine_t *e = ud;
  const plan_t *cur = e->plan;
  const lg_config_t *old = cur->conf->c;
  prepared_t *pr = calloc(1, sizeof *pr);
  plan_t *p = calloc(1, sizeof *p);
  if (p != NULL)
    p->encoders = e->encoders;
  conf_ref_t *ref = calloc(1, sizeof *ref);
  int *out_slot = calloc(c->noutputs + 1, sizeof *out_slot);
  /* Ids of the running sources, then at most one new id per source. */
  size_t nids = e->plan->nsrc + c->nsources + 1;
  int *src_conf = malloc(nids * sizeof *src_conf);
  if (pr != NULL) {
    pr->added = calloc(nids, sizeof *pr->added);
    pr->removed = calloc(nids, sizeof *pr->removed);
  }
  if (pr == NULL || p == NULL || ref == NULL || out_slot == NULL ||
      src_conf == NULL || pr->added == NULL || pr->removed == NULL) {
    if (pr != NULL) {
      free(pr->added);
      free(pr->removed);
    }
    snprintf(err, errlen, "out of memory");
    free(pr);
    free(p);
    free(ref);
    free(out_slot);
    free(src_conf);
    lg_config_destroy(c);
    return NULL;
  }
  for (size_t i = 0; i < nids; i++)
    src_conf[i] = -1;
  ref->c = c;
  ref->refs = 1;
  ref->owned = 1;
  p->conf = ref;
  p->gen = cur->gen + 1;
  pr->plan = p;
  check_settings(e->conf, c);

  /* Sources: an unchanged one keeps its engine id and goes on reading
   * (only its pipeline may change); a removed one stops; a new or changed
   * one starts under a new id (ids are never reused, so a batch's
   * source_id always means one source). What a source runs (an API
   * watch, a listener) goes and comes with it. */
  uint32_t nold = cur->nsrc, nsrc = cur->nsrc;
  for (size_t i = 0; i < c->nsources; i++) {
    const lg_conf_source_t *ns = &c->sources[i];
    uint32_t id = nold;
    for (uint32_t k = 0; k < nold && id == nold; k++)
      if (cur->src_idx[k] >= 0 &&
          strcmp(old->sources[cur->src_idx[k]].name, ns->name) == 0)
        id = k;
    const lg_conf_source_t *os =
        id < nold ? &old->sources[cur->src_idx[id]] : NULL;
    if (os != NULL && lg_config_source_equal(os, ns)) {
      src_conf[id] = (int)i;
      continue;
    }
    src_conf[nsrc] = (int)i;
    pr->added[pr->nadded++] = nsrc++;
  }
  for (uint32_t id = 0; id < nold; id++) {
    if (cur->src_idx[id] < 0 || src_conf[id] >= 0)
      continue;
    pr->removed[pr->nremoved++] = id;
  }

  /* Outputs: an unchanged one keeps its slot (and its connections and
   * queued records); a new or changed one gets a free slot. */
  if (!(old->settings.dead_letter == c->settings.dead_letter ||
        (old->settings.dead_letter && c->settings.dead_letter &&
         strcmp(old->settings.dead_letter, c->settings.dead_letter) == 0))) {
    snprintf(err, errlen,
             "%s: settings.dead_letter: changing it needs a "
             "restart",
             c->path);
    goto fail;
  }
  uint64_t taken = e->reload_busy;
  int builtin_dl = e->dead_letter_conf != NULL ? cur->dead_letter : -1;
  for (size_t i = 0; i < c->noutputs; i++) {
    int slot = -1;
    for (size_t k = 0; k < cur->nslots && slot < 0; k++)
      if ((int)k != builtin_dl && cur->slot_conf[k] != NULL &&
          lg_config_output_equal(cur->slot_conf[k], &c->outputs[i]))
        slot = (int)k;
    if (slot < 0) {
      for (int k = 0; k < MAX_SLOTS && slot < 0; k++)
        if (!((taken >> k) & 1))
          slot = k;
      if (slot < 0) {
        snprintf(err, errlen,
                 "%s: outputs.%s: no free output slot (64 outputs, counting "
                 "removed ones still delivering)",
                 c->path, c->outputs[i].name);
        goto fail;
      }
      taken |= 1ull << slot;
      pr->new_slots |= 1ull << slot;
    }
    out_slot[i] = slot;
    lg__plan_set_slot(p, slot, &c->outputs[i]);
  }
  if (builtin_dl >= 0) {
    lg__plan_set_slot(p, builtin_dl, e->dead_letter_conf);
    p->dead_letter = builtin_dl;
  } else {
    p->dead_letter =
        out_slot[lg_config_output_index(c, c->settings.dead_letter)];
  }
  if (lg__plan_routes(p, src_conf, nsrc, out_slot) != 0) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }

  /* Fresh Lua states, one per worker, with init run: the slow part. */
  pr->lua = calloc((size_t)e->nworkers, sizeof *pr->lua);
  if (pr->lua == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  lg_worker_version_t v = lg__plan_version(p);
  for (int w = 0; w < e->nworkers; w++) {
    pr->lua[w] = lg_worker_prepare(e->workers[w], &v, texts, err, errlen);
    if (pr->lua[w] == NULL)
      goto fail;
  }
  /* As at start (worker 0's state): no worker runs these states yet. */
  pr->stateless_seen = lg_stateless_check(e->stateless_warned, c, pr->lua[0]);
  free(out_slot);
  free(src_conf);
  return pr;
fail:
  free(out_slot);
  free(src_conf);
  prepared_free(e, pr);
  return NULL;
}

/* Engine source ids grow with reloads that add sources. */
static int grow_source_metrics(engine_t *e, const plan_t *p) {
  if (p->nsrc <= e->nsrc_metrics)
    return 0;
  lg_metric_t **r = realloc(e->m.read, p->nsrc * sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  e->m.read = r;
  lg_metric_t **b = realloc(e->m.bytes, p->nsrc * sizeof *b);
  if (b == NULL)
    return -ENOMEM;
  e->m.bytes = b;
  for (uint32_t id = e->nsrc_metrics; id < p->nsrc; id++)
    lg__source_metrics(
        e, id,
        p->src_idx[id] >= 0 ? p->conf->c->sources[p->src_idx[id]].name : "");
  e->nsrc_metrics = p->nsrc;
  return 0;
}

/* Starts source `sc` of config `ref` under engine id `id` (a reload added
 * it); a source that keeps its config holds `ref`. */
static void add_source(engine_t *e, uint32_t id, conf_ref_t *ref,
                       const lg_conf_source_t *sc, int pipeline) {
  char err[512];
  ref->refs++; /* released by the sources (lg_source_host_t.release_conf) */
  lg_source_spec_t spec = {.id = id,
                           .conf = ref->c,
                           .sc = sc,
                           .pipeline = pipeline,
                           .conf_hold = ref};
  if (lg_sources_add(e->sources, &spec, err, sizeof err) != 0)
    lg_log_error("engine", "sources.%s: cannot start it after a reload: %s",
                 sc->name, err);
  else
    lg_log_info("engine", "source %s: added by a reload", sc->name);
}

/* Loop thread: create the new outputs, then switch every worker at its
 * current queue position and make the new generation current. */
static int reload_apply(void *ud, void *prepared, char *err, size_t errlen) {
  engine_t *e = ud;
  prepared_t *pr = prepared;
  plan_t *p = pr->plan;
  if (e->stopping) {
    prepared_free(e, pr);
    snprintf(err, errlen, "the collector is stopping");
    return -ECANCELED;
  }
  for (int k = 0; k < MAX_SLOTS; k++) {
    if (!((pr->new_slots >> k) & 1))
      continue;
    char oerr[512];
    if (lg__create_output(e, k, p->slot_conf[k], p->conf, oerr, sizeof oerr) !=
        0) {
      /* oerr names the output ("outputs.<name>...: ..."). */
      snprintf(err, errlen, "%s: %s", p->conf->c->path, oerr);
      /* Close the ones just created: no plan uses them. */
      prepared_free(e, pr);
      lg__retire_plans(e);
      return -EINVAL;
    }
    lg_log_info("engine", "output %s: added by a reload",
                p->slot_conf[k]->name);
  }
  for (size_t k = 0; k < MAX_SLOTS; k++)
    if ((p->slots >> k) & 1)
      e->output_names[k] = p->slot_name[k];
  if (grow_source_metrics(e, p) != 0) {
    snprintf(err, errlen, "out of memory");
    prepared_free(e, pr);
    lg__retire_plans(e);
    return -ENOMEM;
  }
  /* Re-created (its config changed): it takes over the requests of the
   * last run the output it replaces still waits for. Only once nothing
   * can fail any more: a reload rejected half-way closes the ones it made,
   * and the running output keeps its requests (taken over, they were
   * given up at that close, and their records sent again). */
  for (int k = 0; k < MAX_SLOTS; k++)
    for (int j = 0; ((pr->new_slots >> k) & 1) && j < MAX_SLOTS; j++)
      if (j != k && e->slot_state[j] == SLOT_LIVE &&
          ((e->plan->slots >> j) & 1) && !((p->slots >> j) & 1) &&
          strcmp(e->outputs[j]->name, e->outputs[k]->name) == 0)
        lg_output_hand_over(e->outputs[j], e->outputs[k]);
  /* Removed sources stop first: what they framed already is handed on
   * now, under the old generation. */
  for (size_t i = 0; i < pr->nremoved; i++) {
    const lg_conf_source_t *os =
        &e->plan->conf->c->sources[e->plan->src_idx[pr->removed[i]]];
    lg_sources_remove(e->sources, pr->removed[i]);
    lg_log_info("engine", "source %s: removed by a reload", os->name);
  }
  lg_worker_version_t v = lg__plan_version(p);
  for (int w = 0; w < e->nworkers; w++) {
    lg_worker_swap(e->workers[w], &v, pr->lua[w]);
    pr->lua[w] = NULL;
  }
  /* Switched: nothing fails from here on. */
  lg_stateless_warned_commit(e->stateless_warned, pr->stateless_seen);
  pr->stateless_seen = NULL;
  plan_t *old = e->plan;
  old->next = e->retired;
  e->retired = old;
  e->plan = p;
  e->dead_letter = p->dead_letter;
  pr->plan = NULL;
  /* New sources start under the new generation; checkpoints of files
   * they follow are picked up as at a start. */
  for (size_t i = 0; i < pr->nadded; i++)
    add_source(e, pr->added[i], p->conf,
               &p->conf->c->sources[p->src_idx[pr->added[i]]],
               p->src_pipeline[pr->added[i]]);
  prepared_free(e, pr);
  lg__retire_plans(e);
  lg_log_info("engine",
              "config generation %llu: %zu sources, %zu pipelines, %zu "
              "outputs",
              (unsigned long long)p->gen, p->conf->c->nsources,
              p->conf->c->npipelines, p->conf->c->noutputs);
  return 0;
}

static void reload_discard(void *ud, void *prepared) {
  prepared_free(ud, prepared);
}

const lg_reload_ops_t lg__reload_ops = {.prepare = reload_prepare,
                                        .apply = reload_apply,
                                        .discard = reload_discard,
                                        .begin = reload_begin};
