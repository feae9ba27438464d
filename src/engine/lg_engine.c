/* The engine's lifecycle: start-up of outputs, workers and sources, the
 * signals, the tick, the drain at stop and the teardown. */
#include "engine/lg_engine.h"
#include "engine/lg_engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <signal.h>
#include <unistd.h>

#include "core/lg_cgroup.h"
#include "core/lg_log.h"
#include "framing/lg_framing.h"

/* ---- stopping ---- */

static void on_closed(uv_handle_t *h) { (void)h; }

/* A reload still loading scripts when everything else is done: its
 * init does not return (a loop), and its threadpool job would keep the
 * loop, and so the process, alive for ever. The checkpoints are written
 * and every output is closed, so exiting loses nothing. */
static void on_reload_stuck(uv_timer_t *h) {
  engine_t *e = h->data;
  lg_log_warn("engine", "a reload is still running its scripts' init after "
                        "the shutdown; exiting with checkpoints written");
  _exit(e->exit_code);
}

static void close_handles(engine_t *e) {
  e->handles_closing = 1;
  uv_close((uv_handle_t *)&e->done_async, on_closed);
  uv_close((uv_handle_t *)&e->sig_term, on_closed);
  uv_close((uv_handle_t *)&e->sig_int, on_closed);
  uv_close((uv_handle_t *)&e->sig_hup, on_closed);
  uv_close((uv_handle_t *)&e->tick, on_closed);
  if (e->reload_open)
    uv_timer_start(&e->hard_stop, on_reload_stuck, 1000, 0);
  else
    uv_close((uv_handle_t *)&e->hard_stop, on_closed);
}

static void on_reload_closed(void *ud) {
  engine_t *e = ud;
  e->reload_open = 0;
  if (e->handles_closing)
    uv_close((uv_handle_t *)&e->hard_stop, on_closed);
}

static void on_hard_stop(uv_timer_t *h) {
  engine_t *e = h->data;
  lg_log_warn("engine", "outputs still blocked after the shutdown timeout; "
                        "exiting with checkpoints written");
  _exit(e->exit_code);
}

static void outputs_closed(engine_t *e) {
  if (--e->closing_outputs == 0)
    close_handles(e);
}

/* An output finished closing and is freed: forget it and free its slot.
 * During the shutdown, count it. */
void lg__on_output_closed(void *ud) {
  output_ctx_t *oc = ud;
  engine_t *e = oc->e;
  int k = oc->index;
  e->outputs[k] = NULL;
  e->slot_state[k] = SLOT_FREE;
  lg__conf_ref_release(e->slot_ref[k]);
  e->slot_ref[k] = NULL;
  if (e->closing_outputs > 0)
    outputs_closed(e);
}

/* Every source is closed (checkpoints written): close the outputs. */
static void on_sources_closed(void *ud) {
  engine_t *e = ud;
  e->sources_closed = 1;
  /* One count per output plus one for this function, so handles close
   * only after every output, however many close at once. */
  e->closing_outputs = 1;
  for (size_t k = 0; k < e->noutputs; k++) {
    if (e->slot_state[k] == SLOT_LIVE) {
      e->closing_outputs++;
      e->slot_state[k] = SLOT_CLOSING;
      lg_output_close(e->outputs[k], lg__on_output_closed, &e->output_ctx[k]);
    } else if (e->slot_state[k] == SLOT_CLOSING) {
      e->closing_outputs++; /* closing since a reload removed it */
    }
  }
  /* After the shutdown timeout (or a drain that left only records kept
   * for requests of the last run), outputs drop what is still queued
   * without acking it: the checkpoint does not cover those records, so
   * they are read again after the restart. */
  if (e->timed_out) {
    for (size_t k = 0; k < e->noutputs; k++)
      if (e->outputs[k] != NULL)
        lg_output_abandon(e->outputs[k]);
    /* A write blocked in the kernel (a stdout pipe nobody reads) keeps a
     * threadpool job, and so the loop, alive for ever. The checkpoints are
     * written and cover only delivered records, so exiting now loses
     * nothing. */
    uv_timer_start(&e->hard_stop, on_hard_stop, 1000, 0);
  }
  outputs_closed(e);
}

/* The drain is over before every batch is acked: no batch is with a
 * worker, and each output holds nothing but records of requests of the
 * last run that wait for records the stop keeps from being read
 * (lg_output_stopping). Those stay unacked: the checkpoints stay before
 * them, and the next start reads them again and makes the requests. */
static int drained_but_kept(engine_t *e) {
  if (e->plan != NULL && e->plan->inflight > 0)
    return 0;
  for (const plan_t *p = e->retired; p != NULL; p = p->next)
    if (p->inflight > 0)
      return 0;
  for (size_t k = 0; k < e->noutputs; k++)
    if (e->outputs[k] != NULL && !lg_output_drained(e->outputs[k]))
      return 0;
  return 1;
}

static void finish(engine_t *e, int kept) {
  if (e->stopping == 2)
    return;
  e->stopping = 2;
  if (e->in_flight > e->frozen && kept) {
    lg_log_info("engine",
                "drained but for %llu batches held for requests of the last "
                "run that wait for records not read again: kept for the "
                "next start, which reads them again",
                (unsigned long long)(e->in_flight - e->frozen));
    e->timed_out = 1; /* outputs end without acking them */
  } else if (e->in_flight > e->frozen) {
    lg_log_warn("engine",
                "shutdown timeout (%llu ms): %llu batch(es) not delivered; "
                "each output logs the records it leaves unacked, which the "
                "next start reads and sends again",
                (unsigned long long)e->conf->settings.shutdown_timeout_ms,
                (unsigned long long)e->in_flight);
    e->timed_out = 1;
  }
  lg_sources_close(e->sources, on_sources_closed, e);
}

void lg__begin_stop(engine_t *e, const char *why) {
  if (e->stopping)
    return;
  e->stopping = 1;
  /* No reload during the drain; one in progress is discarded. */
  lg_reload_t *r = e->reload;
  e->reload = NULL;
  lg_reload_close(r, on_reload_closed, e);
  lg_admin_http_set_unready("engine", "stopping");
  lg_log_info("engine", "%s: stopping; draining %llu in-flight batches", why,
              (unsigned long long)e->in_flight);
  lg_sources_pause(e->sources);
  if (e->draining) { /* nothing more is read now */
    e->draining = 0;
    lg_sources_drain(e->sources, 0);
  }
  for (size_t k = 0; k < e->noutputs; k++)
    if (e->slot_state[k] == SLOT_LIVE)
      lg_output_stopping(e->outputs[k]);
  /* The loop's cached time can be a busy turn behind: the drain gets its
   * whole shutdown_timeout from now, not from the turn's start. */
  uv_update_time(&e->loop);
  e->stop_deadline = uv_now(&e->loop) + e->conf->settings.shutdown_timeout_ms;
}

static void on_signal(uv_signal_t *h, int signum) {
  engine_t *e = h->data;
  if (signum == SIGHUP) {
    if (e->stopping)
      return;
    lg_log_info("engine", "SIGHUP: reopening outputs and reloading");
    for (size_t k = 0; k < e->noutputs; k++)
      if (e->slot_state[k] == SLOT_LIVE)
        lg_output_reopen(e->outputs[k]);
    lg_reload_request(e->reload, "SIGHUP");
    return;
  }
  lg__begin_stop(e, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_tick(uv_timer_t *h) {
  engine_t *e = h->data;
  /* Batches an output could not take for want of memory: again, also
   * while draining at the stop. */
  if (e->submit_later != NULL && e->stopping <= 1)
    lg__submit_again(e);
  if (e->stopping == 1) {
    if (e->in_flight == e->frozen || uv_now(&e->loop) >= e->stop_deadline)
      finish(e, 0);
    else if (drained_but_kept(e))
      finish(e, 1);
    return;
  }
  if (e->stopping) /* finishing: the sources may be closed already */
    return;
  /* A source may still have records to hand on without new input (see
   * lg_source_type_t.busy): --once is not done before they are read. */
  if (e->opts.once && e->in_flight == e->frozen &&
      lg_sources_idle(e->sources)) {
    const char *first = NULL;
    size_t bad = lg_sources_unreadable(e->sources, &first);
    if (bad > 0) {
      lg_log_error("engine",
                   "--once: %zu files could not be read (e.g. %s; the log "
                   "says why); exiting 1 after delivering the rest",
                   bad, first ? first : "?");
      e->exit_code = 1;
      lg__begin_stop(e, "--once: every readable file read and delivered");
      return;
    }
    lg__begin_stop(e, "--once: every file read and delivered");
    /* Nothing in flight: done now rather than at the next tick. */
    if (e->in_flight == e->frozen)
      finish(e, 0);
    return;
  }
  /* --once with every file read and no batch left in a worker: nothing
   * more will come, so what waits in an output for max_coalescing_delay
   * to fill a request (an S3 object, 60 s by default) goes now. Not
   * while workers still hand batches on: those would go in small
   * requests. Set again at each tick: leaving the memory budget turns it
   * off. */
  if (e->opts.once && e->in_flight > e->frozen && e->retired == NULL &&
      (e->plan == NULL || e->plan->inflight == 0) &&
      lg_sources_idle(e->sources) && lg_sources_read_to_end(e->sources))
    lg__outputs_pressure(e, 1);
  if (e->opts.once && e->in_flight == 0 && lg_sources_read_to_end(e->sources)) {
    /* Emit a last line without LF now rather than after its timeout; only
     * once every file is read to its end, or a line whose rest is not read
     * yet (reading paused at the memory budget) would be cut in two. */
    lg_sources_flush(e->sources);
  }
}

void lg__tick_soon(engine_t *e) {
  if (!e->stopping || e->stopping == 1)
    uv_timer_start(&e->tick, on_tick, 0, 50);
}

void lg__source_metrics(engine_t *e, uint32_t id, const char *name) {
  e->m.read[id] = lg_metrics_counter("lugger_records_read_total",
                                     "Records read from the source's files.",
                                     "source", name, NULL);
  e->m.bytes[id] = lg_metrics_counter(
      "lugger_bytes_read_total",
      "Bytes of records read from the source's files.", "source", name, NULL);
}

/* Registers the engine's metrics (lg_metrics.h), labelled by source,
 * pipeline and output name. Registration failures leave NULL handles,
 * which the update calls ignore. */
static int register_metrics(engine_t *e) {
  const lg_config_t *c = e->conf;
  size_t ns = c->nsources ? c->nsources : 1;
  e->m.read = calloc(ns, sizeof *e->m.read);
  e->m.bytes = calloc(ns, sizeof *e->m.bytes);
  if (!e->m.read || !e->m.bytes)
    return -ENOMEM;
  e->nsrc_metrics = (uint32_t)c->nsources;
  for (size_t s = 0; s < c->nsources; s++)
    lg__source_metrics(e, (uint32_t)s, c->sources[s].name);
  e->m.dead_letter = lg_metrics_counter(
      "lugger_records_dead_letter_total",
      "Records sent to the dead-letter output because a script failed on them.",
      NULL);
  e->m.mem_used = lg_metrics_gauge(
      "lugger_memory_used_bytes",
      "Bytes read and not yet delivered, charged to settings.memory_budget.",
      NULL);
  e->m.mem_budget = lg_metrics_gauge("lugger_memory_budget_bytes",
                                     "settings.memory_budget.", NULL);
  lg_metric_set(e->m.mem_budget, (int64_t)e->mem_budget);
  e->m.in_flight = lg_metrics_gauge(
      "lugger_batches_in_flight", "Batches read and not yet delivered.", NULL);
  return 0;
}

/* Options for a worker of the current generation. */
lg_worker_opts_t lg__worker_opts(engine_t *e) {
  const plan_t *p = e->plan;
  return (lg_worker_opts_t){
      .conf = p->conf->c,
      .output_names = p->slot_name,
      .noutputs = p->nslots,
      .dead_letter = p->dead_letter,
      .pipeline_routes = p->pipeline_routes,
      .encoders = e->encoders,
      .memory_limit = e->conf->settings.script_memory,
      .done = lg__on_worker_done,
      .ud = e,
      .watchdog = e->watchdog,
      .crew = e->crew,
      .stateless_warned = e->stateless_warned,
  };
}

/* Room the process needs besides the budget and the Lua states: its
 * code and the outputs' buffers (measured: an idle lugger with two
 * workers is ~15 MiB), plus each worker's framing scratch, which it keeps
 * up to LG_FRAMER_SCRATCH_KEEP (4 MiB) between batches (1.25 MiB
 * usually). 24 + 2 x 4 = 32 MiB with two workers. */
#define REST_BYTES ((uint64_t)24 << 20)

/* Warns when the cgroup's memory limit (a pod's) cannot hold what the
 * config lets lugger use: memory_budget, every worker's Lua state up to
 * script_memory, and the rest. The kernel would OOM-kill it under a
 * backlog, after which the kubelet restarts it into the same backlog. */
static void check_memory_limit(const lg_config_t *c) {
  uint64_t limit = lg_cgroup_memory_limit("/proc/self");
  uint64_t lua = (uint64_t)c->settings.workers * c->settings.script_memory;
  uint64_t rest = REST_BYTES + (uint64_t)c->settings.workers *
                                   (uint64_t)LG_FRAMER_SCRATCH_KEEP;
  uint64_t need = c->settings.memory_budget + lua + rest;
  if (limit == 0 || need <= limit)
    return;
  lg_log_warn(
      "engine",
      "the cgroup's memory limit (%llu MiB) is below what the config "
      "lets lugger use: memory_budget (%llu MiB) + workers x "
      "script_memory (%d x %llu MiB) + at least %llu MiB for the rest = %llu "
      "MiB; under a backlog it can be OOM-killed: lower memory_budget "
      "or script_memory (or workers), or raise the limit",
      (unsigned long long)(limit >> 20),
      (unsigned long long)(c->settings.memory_budget >> 20),
      c->settings.workers,
      (unsigned long long)(c->settings.script_memory >> 20),
      (unsigned long long)(rest >> 20), (unsigned long long)(need >> 20));
}

static int start_workers(engine_t *e) {
  const lg_config_t *c = e->conf;
  e->nworkers = c->settings.workers > 0 ? c->settings.workers : 1;
  e->workers = calloc((size_t)e->nworkers, sizeof *e->workers);
  if (e->workers == NULL)
    return -ENOMEM;
  /* Without a crew each worker only takes its own batches: slower under
   * an uneven load, never wrong. */
  if (e->nworkers > 1 && (e->crew = lg_crew_create(e->nworkers)) == NULL)
    lg_log_warn("engine", "out of memory for the workers' crew: idle "
                          "workers will not take each other's batches");
  lg_worker_opts_t wo = lg__worker_opts(e);
  /* All threads first, then the waits: the workers load their scripts
   * (and run init) at the same time. */
  int rc = 0;
  char err[512];
  for (int w = 0; w < e->nworkers && rc == 0; w++)
    if ((e->workers[w] = lg_worker_spawn(w, &wo, err, sizeof err)) == NULL)
      rc = -EINVAL;
  for (int w = 0; w < e->nworkers; w++) {
    if (e->workers[w] == NULL ||
        lg_worker_ready(e->workers[w], err, sizeof err) == 0)
      continue;
    e->workers[w] = NULL; /* freed by lg_worker_ready */
    rc = -EINVAL;
  }
  if (rc != 0)
    lg_log_error("engine", "%s", err);
  return rc;
}

/* Host hook: a source let go of the config it kept. */
static void release_conf(void *ud, void *conf_hold) {
  (void)ud;
  lg__conf_ref_release(conf_hold);
}

static int start_sources(engine_t *e) {
  const lg_config_t *c = e->conf;
  char err[512];
  for (size_t s = 0; s < c->nsources; s++) {
    const lg_conf_source_t *sc = &c->sources[s];
    lg_source_spec_t spec = {
        .id = (uint32_t)s, .conf = c, .sc = sc, .pipeline = sc->pipeline};
    int rc = lg_sources_add(e->sources, &spec, err, sizeof err);
    if (rc != 0) {
      lg_log_error("engine", "sources.%s: %s", sc->name, err);
      return rc;
    }
  }
  int rc = lg_sources_start(e->sources);
  e->sources_started = rc == 0;
  return rc;
}

static void engine_free(engine_t *e) {
  lg_admin_http_stop(e->http);
  for (int w = 0; e->workers && w < e->nworkers; w++)
    lg_worker_destroy(e->workers[w]);
  free(e->workers);
  lg_crew_destroy(e->crew);
  /* After the workers, which use their watches until they end. */
  lg_watchdog_destroy(e->watchdog);
  lg_stateless_warned_destroy(e->stateless_warned);
  free(e->stuck_files);
  free(e->resumed);
  lg_u64map_free(&e->resumed_ix);
  while (e->stuck != NULL) {
    stuck_report_t *r = e->stuck;
    e->stuck = r->next;
    free(r);
  }
  while (e->pool) {
    lg_batch_t *b = e->pool;
    e->pool = b->next;
    lg_batch_destroy(b);
  }
  /* Batches still in flight after a shutdown timeout. */
  for (int i = 0; i < FILE_BUCKETS; i++) {
    while (e->files[i]) {
      file_queue_t *q = e->files[i];
      while (q->head) {
        lg_batch_t *b = q->head;
        q->head = ST(b)->file_next;
        /* The batch a stuck thread holds stays allocated (the thread may
         * still write to it); the watchdog's graveyard keeps it
         * reachable. */
        int held = ST(b)->frozen == 2;
        lg__free_state(ST(b));
        if (!held)
          lg_batch_destroy(b);
      }
      e->files[i] = q->next;
      free(q);
    }
  }
  lg_sources_destroy(e->sources);
  free(e->outputs);
  free(e->output_names);
  free(e->output_ctx);
  free(e->m.read);
  free(e->m.bytes);
  for (int k = 0; k < MAX_SLOTS; k++)
    lg__conf_ref_release(e->slot_ref[k]);
  while (e->retired != NULL) {
    plan_t *p = e->retired;
    e->retired = p->next;
    lg__plan_free(p);
  }
  lg__plan_free(e->plan);
  lg_config_output_free(e->dead_letter_conf);
  lg__reorder_free(e);
  pthread_mutex_destroy(&e->done_mu);
}

int lg_engine_run(const lg_config_t *conf, const lg_engine_opts_t *opts) {
  engine_t *e = calloc(1, sizeof *e);
  if (e == NULL)
    return 1;
  e->conf = conf;
  e->opts = *opts;
  e->mem_budget = conf->settings.memory_budget;
  e->dead_letter = -1;
  pthread_mutex_init(&e->done_mu, NULL);
  uv_loop_init(&e->loop);

  char err[512] = "";
  e->source_host = (lg_source_host_t){
      .loop = &e->loop,
      .state_dir = conf->settings.state_dir,
      .rescan_interval_ms = conf->settings.rescan_interval_ms,
      .checkpoint_interval_ms = conf->settings.checkpoint_interval_ms,
      .close_inactive_ms = conf->settings.close_inactive_ms,
      .batch_bytes = BATCH_BYTES,
      .on_batch = lg__on_batch,
      .get_batch = lg__get_batch,
      .held_bytes = lg__on_held,
      .release_conf = release_conf,
      .file_resumed = lg__on_file_resumed,
      .file_prefixes = lg__on_file_prefixes,
      .prefixes_wanted = lg__prefixes_wanted,
      .ud = e,
  };
  e->sources = lg_sources_create(&e->source_host, err, sizeof err);
  if (e->sources == NULL) {
    lg_log_error("engine", "%s", err);
    e->exit_code = 1;
    goto out;
  }
  uv_async_init(&e->loop, &e->done_async, lg__on_done_async);
  e->done_async.data = e;
  /* A socket whose peer went away (a killed forward client owed acks, a
   * forward server gone mid-message) must fail the write with EPIPE, which
   * the connection handles, not kill the collector: libuv writes with
   * write(2), which raises SIGPIPE. Only the default disposition is
   * changed, like the stdout output does. */
  struct sigaction pipe_sa;
  if (sigaction(SIGPIPE, NULL, &pipe_sa) == 0 &&
      pipe_sa.sa_handler == SIG_DFL) {
    pipe_sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &pipe_sa, NULL);
  }
  uv_signal_init(&e->loop, &e->sig_term);
  uv_signal_init(&e->loop, &e->sig_int);
  uv_signal_init(&e->loop, &e->sig_hup);
  e->sig_term.data = e->sig_int.data = e->sig_hup.data = e;
  uv_signal_start(&e->sig_term, on_signal, SIGTERM);
  uv_signal_start(&e->sig_int, on_signal, SIGINT);
  uv_signal_start(&e->sig_hup, on_signal, SIGHUP);
  /* `lugger run` blocked them during start-up; one that came meanwhile is
   * delivered now, to the handlers above. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
  uv_timer_init(&e->loop, &e->tick);
  e->tick.data = e;
  uv_timer_init(&e->loop, &e->hard_stop);
  e->hard_stop.data = e;

  /* The HTTP endpoint answers from the start: not ready until every
   * worker and source has started. */
  lg_admin_http_reset();
  lg_admin_http_set_unready("engine", "starting");
  if (conf->settings.http != NULL) {
    e->http = lg_admin_http_start(conf->settings.http, err, sizeof err);
    if (e->http == NULL) {
      lg_log_error("engine", "%s", err);
      e->exit_code = 1;
    }
  }

  if (e->exit_code == 0) {
    lg_watchdog_opts_t wdo = {.timeout_ms = conf->settings.script_timeout_ms,
                              .state_dir = conf->settings.state_dir,
                              .stuck = lg__on_stuck,
                              .ud = e};
    e->watchdog = lg_watchdog_create(&wdo, err, sizeof err);
    if (e->watchdog == NULL) {
      lg_log_error("engine", "watchdog: %s", err);
      e->exit_code = 1;
    }
    e->m_stuck = lg_metrics_counter(
        "lugger_workers_abandoned_total",
        "Workers given up because their script was stuck (see /healthz).",
        NULL);
  }
  /* Out of memory: the warning is then repeated at every reload. */
  e->stateless_warned = lg_stateless_warned_create();
  if (e->exit_code == 0)
    check_memory_limit(conf);
  /* Before the workers read the scripts: a change from here on is seen
   * by the reloader, even one made before it watches the files. */
  uint64_t running_fp = lg_reload_fingerprint(conf);
  if (e->exit_code != 0 || lg__start_outputs(e) != 0 ||
      register_metrics(e) != 0 || start_workers(e) != 0 ||
      start_sources(e) != 0) {
    e->exit_code = 1;
    lg__begin_stop(e, "start-up failed");
    e->stop_deadline = 0;
  } else {
    lg_admin_http_set_unready("engine", NULL);
    lg_log_info("engine",
                "lugger %s running: %zu sources, %zu pipelines, %zu outputs, "
                "%d workers%s%s%s",
                LUGGER_VERSION, conf->nsources, conf->npipelines,
                conf->noutputs, e->nworkers,
                conf->settings.workers_by ? " (default: one per usable CPU, by "
                                          : "",
                conf->settings.workers_by ? conf->settings.workers_by : "",
                conf->settings.workers_by ? ")" : "");
    e->reload =
        lg_reload_create(&e->loop, conf, running_fp, &lg__reload_ops, e);
    e->reload_open = e->reload != NULL;
    if (e->reload == NULL)
      lg_log_error("engine", "cannot watch the config for reloads (out of "
                             "memory)");
  }
  uv_timer_start(&e->tick, on_tick, 50, 50);
  if (!e->sources_started) {
    /* Nothing to drain: close what was opened. */
    e->stopping = 2;
    lg_sources_close(e->sources, on_sources_closed, e);
  }
  uv_run(&e->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&e->loop) != 0)
    lg_log_warn("engine", "libuv loop closed with handles still open");
out:
  engine_free(e);
  int rc = e->exit_code;
  free(e);
  return rc;
}
