/* Config generations ("plans"): output slots, the routes of each pipeline
 * as slot masks, the pipeline of each engine source, and retiring old
 * generations and the outputs only they used. */
#include "engine/lg_engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_log.h"

/* ---- config generations ---- */

void lg__conf_ref_release(conf_ref_t *r) {
  if (r == NULL || --r->refs > 0)
    return;
  if (r->owned)
    lg_config_destroy(r->c);
  free(r);
}

void lg__plan_free(plan_t *p) {
  if (p == NULL)
    return;
  lg__conf_ref_release(p->conf);
  free(p->pipeline_routes);
  free(p->src_pipeline);
  free(p->src_idx);
  free(p->m_dropped);
  free(p->m_failed);
  free(p->m_batches);
  free(p);
}

/* Frees the retired plans whose batches are all back from the workers,
 * then closes the outputs no plan uses any more: they deliver what they
 * hold (acks still come), then close and free their slot. */
void lg__retire_plans(engine_t *e) {
  uint64_t used = e->plan != NULL ? e->plan->slots : 0;
  for (plan_t **pp = &e->retired; *pp != NULL;) {
    plan_t *p = *pp;
    if (p->inflight == 0) {
      *pp = p->next;
      lg_log_debug("engine", "config generation %llu retired",
                   (unsigned long long)p->gen);
      lg__plan_free(p);
      continue;
    }
    used |= p->slots;
    pp = &p->next;
  }
  if (e->stopping >= 2)
    return; /* the shutdown closes every output */
  for (size_t k = 0; k < e->noutputs; k++) {
    if (e->slot_state[k] != SLOT_LIVE || ((used >> k) & 1))
      continue;
    lg_log_info("engine",
                "output %s: removed by a reload; delivering what "
                "it holds, then closing it",
                e->output_names[k]);
    e->slot_state[k] = SLOT_CLOSING;
    lg_output_close(e->outputs[k], lg__on_output_closed, &e->output_ctx[k]);
  }
}

/* ---- start-up ---- */

/* Creates the output of slot `k` from `oc`, which lives in `ref`. */
int lg__create_output(engine_t *e, int k, const lg_conf_output_t *oc,
                      conf_ref_t *ref, char *err, size_t errlen) {
  e->output_names[k] = oc->name;
  e->output_ctx[k].e = e;
  e->output_ctx[k].index = k;
  e->outputs[k] = lg_output_create(&e->loop, oc, k, lg__on_output_ack,
                                   &e->output_ctx[k], err, errlen);
  if (e->outputs[k] == NULL)
    return -EINVAL;
  lg_output_set_dead_letter(e->outputs[k], lg__dead_letter_output,
                            &e->output_ctx[k]);
  lg_output_set_sent(e->outputs[k], lg__on_output_sent, &e->output_ctx[k]);
  if (ref != NULL) {
    /* The running state_dir, also for an output a reload creates (a
     * changed one takes effect after a restart): an output it re-creates
     * shares the request journal of the one it replaces, which is how it
     * takes over that one's requests of the last run. */
    lg_output_set_state_dir(e->outputs[k], e->conf->settings.state_dir);
    /* Created by a reload: the files read already were opened (their
     * prefixes hashed) and resumed before it existed, and what was read
     * of them went to the outputs of then (none yet at the start). Where
     * they resumed is told before and after the prefixes: it is keyed by
     * a file's fingerprint at its open, the prefixes by its fingerprint
     * now, and a short file may have grown in between (a run of the last
     * run under its fingerprint at the open passes before it takes the
     * one now). */
    lg__tell_resumed(e, e->outputs[k]);
    lg__tell_prefixes(e, e->outputs[k]);
    lg__tell_resumed(e, e->outputs[k]);
    lg__tell_read(e, e->outputs[k]);
  }
  if (e->paused)
    lg_output_set_pressure(e->outputs[k], 1);
  e->encoders[k] = lg_output_encoder(e->outputs[k]);
  e->slot_state[k] = SLOT_LIVE;
  if (ref != NULL)
    ref->refs++;
  e->slot_ref[k] = ref;
  if ((size_t)k >= e->noutputs)
    e->noutputs = (size_t)k + 1;
  return 0;
}

/* Default routes of each pipeline as slot masks, and the pipeline of each
 * engine source. `src_conf[id]` is the config index of engine source `id`
 * (-1: not in this config). */
int lg__plan_routes(plan_t *p, const int *src_conf, uint32_t nsrc,
                    const int *out_slot) {
  const lg_config_t *c = p->conf->c;
  p->pipeline_routes = calloc(c->npipelines + 1, sizeof *p->pipeline_routes);
  p->src_pipeline = calloc(nsrc + 1, sizeof *p->src_pipeline);
  p->src_idx = calloc(nsrc + 1, sizeof *p->src_idx);
  if (p->pipeline_routes == NULL || p->src_pipeline == NULL ||
      p->src_idx == NULL)
    return -ENOMEM;
  memcpy(p->src_idx, src_conf, nsrc * sizeof *src_conf);
  for (size_t q = 0; q < c->npipelines; q++)
    for (size_t k = 0; k < c->pipelines[q].noutputs; k++)
      p->pipeline_routes[q] |= 1ull << out_slot[c->pipelines[q].outputs[k]];
  size_t np = c->npipelines + 1;
  p->m_dropped = calloc(np, sizeof *p->m_dropped);
  p->m_failed = calloc(np, sizeof *p->m_failed);
  p->m_batches = calloc(np, sizeof *p->m_batches);
  if (p->m_dropped == NULL || p->m_failed == NULL || p->m_batches == NULL)
    return -ENOMEM;
  /* The registry is thread-safe and hands out the same handle for the
   * same pipeline name, so a kept pipeline keeps counting on. */
  for (size_t q = 0; q < c->npipelines; q++) {
    const char *n = c->pipelines[q].name;
    p->m_dropped[q] = lg_metrics_counter(
        "lugger_records_dropped_total",
        "Records the pipeline's scripts dropped.", "pipeline", n, NULL);
    p->m_failed[q] = lg_metrics_counter(
        "lugger_records_failed_total",
        "Records a script failed on (sent to the dead-letter output).",
        "pipeline", n, NULL);
    p->m_batches[q] = lg_metrics_counter("lugger_batches_total",
                                         "Batches the pipeline processed.",
                                         "pipeline", n, NULL);
  }
  p->nsrc = nsrc;
  for (uint32_t id = 0; id < nsrc; id++)
    p->src_pipeline[id] =
        src_conf[id] >= 0 ? c->sources[src_conf[id]].pipeline : -1;
  return 0;
}

void lg__plan_set_slot(plan_t *p, int k, const lg_conf_output_t *oc) {
  p->slot_conf[k] = oc;
  p->slot_name[k] = oc->name;
  p->slots |= 1ull << k;
  if ((size_t)k >= p->nslots)
    p->nslots = (size_t)k + 1;
}

lg_worker_version_t lg__plan_version(const plan_t *p) {
  return (lg_worker_version_t){.gen = p->gen,
                               .conf = p->conf->c,
                               .output_names = p->slot_name,
                               .noutputs = p->nslots,
                               .dead_letter = p->dead_letter,
                               .pipeline_routes = p->pipeline_routes,
                               .encoders = p->encoders};
}

/* Generation 0: config outputs in slots 0..n-1, the built-in dead-letter
 * output after them; engine source id = config index. */
int lg__start_outputs(engine_t *e) {
  const lg_config_t *c = e->conf;
  char err[512];
  /* Without settings.dead_letter, records that scripts fail on go to a
   * JSON-lines file in the state directory: never silently away. */
  if (c->settings.dead_letter == NULL) {
    char path[4096];
    snprintf(path, sizeof path, "%s/dead-letter.jsonl", c->settings.state_dir);
    const char *kv[] = {"path", path, "fsync", "always", NULL};
    e->dead_letter_conf =
        lg_config_output_new("dead-letter", "file", kv, err, sizeof err);
    if (e->dead_letter_conf == NULL) {
      lg_log_error("engine", "dead-letter output: %s", err);
      return -EINVAL;
    }
  }
  size_t n = c->noutputs + (e->dead_letter_conf != NULL);
  if (n > MAX_SLOTS) {
    lg_log_error("engine", "outputs: at most 64 outputs (and the dead-letter "
                           "one) are supported");
    return -EINVAL;
  }
  e->outputs = calloc(MAX_SLOTS, sizeof *e->outputs);
  e->output_names = calloc(MAX_SLOTS, sizeof *e->output_names);
  e->output_ctx = calloc(MAX_SLOTS, sizeof *e->output_ctx);
  plan_t *p = e->plan = calloc(1, sizeof *p);
  if (p != NULL)
    p->encoders = e->encoders;
  conf_ref_t *ref = calloc(1, sizeof *ref);
  int *src_conf = calloc(c->nsources + 1, sizeof *src_conf);
  int *out_slot = calloc(c->noutputs + 1, sizeof *out_slot);
  if (e->outputs == NULL || e->output_names == NULL || e->output_ctx == NULL ||
      p == NULL || ref == NULL || src_conf == NULL || out_slot == NULL) {
    free(ref);
    free(src_conf);
    free(out_slot);
    return -ENOMEM;
  }
  ref->c = (lg_config_t *)c;
  ref->refs = 1;
  p->conf = ref;
  for (size_t k = 0; k < n; k++) {
    const lg_conf_output_t *oc =
        k < c->noutputs ? &c->outputs[k] : e->dead_letter_conf;
    int rc = lg__create_output(e, (int)k, oc, k < c->noutputs ? ref : NULL, err,
                               sizeof err);
    if (rc != 0) {
      /* err names the output already ("outputs.<name>...: ..."). */
      lg_log_error("engine", "%s", err);
      free(src_conf);
      free(out_slot);
      return rc;
    }
    lg__plan_set_slot(p, (int)k, oc);
    if (k < c->noutputs)
      out_slot[k] = (int)k;
  }
  e->dead_letter = p->dead_letter =
      c->settings.dead_letter
          ? lg_config_output_index(c, c->settings.dead_letter)
          : (int)c->noutputs;
  for (size_t i = 0; i < c->nsources; i++)
    src_conf[i] = (int)i;
  int rc = lg__plan_routes(p, src_conf, (uint32_t)c->nsources, out_slot);
  free(src_conf);
  free(out_slot);
  return rc;
}
