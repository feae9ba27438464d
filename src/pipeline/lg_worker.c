#include "pipeline/lg_worker.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/lg_buf.h"
#include "core/lg_log.h"
#include "core/lg_metrics.h"
#include "framing/lg_framing.h"
#include "pipeline/lg_crew.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_lua.h"
#include "pipeline/lg_stateless_warn.h"
#include "pipeline/lg_watchdog.h"

/* A version to switch to once `seq` batches have been taken. */
typedef struct swap {
  uint64_t seq;
  lg_worker_version_t v;
  lg_lua_t *lua;
  struct swap *next;
} swap_t;

struct lg_worker {
  int id;
  lg_worker_opts_t o;
  lg_worker_version_t v;      /* the version batches are processed with now */
  lg_worker_version_t head_v; /* with mu: the version the batch at the head
                                 of the queue will be processed with (v, or
                                 the newest swap taken and not yet applied) */
  uint64_t pushed, taken;     /* batches queued and taken, ever */
  swap_t *swaps, *swaps_tail; /* pending, in order */
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
  lg_watch_t *watch;      /* the watchdog's view of this worker */
  lg_metric_t *lua_mem;   /* lugger_lua_memory_bytes{worker} */
  lg_metric_t *recreated; /* lugger_lua_states_recreated_total{worker} */
  struct lg_worker *graveyard_next; /* abandoned workers */
  /* The field array lent to the batch being processed (see lend_fields). */
  lg_field_t *fields;
  uint32_t fields_cap;
  /* The bytes of the batch being framed here (deferred framing): a batch
   * of bytes only swaps its arena with this buffer. At most
   * LG_FRAMER_SCRATCH_KEEP between batches (lg_framer_scratch_trim). */
  char *raw;
  size_t raw_cap;
};

/* Abandoned workers stay reachable from here: their threads may still
 * run, and leak checkers should see the memory as held. */
static pthread_mutex_t graveyard_mu = PTHREAD_MUTEX_INITIALIZER;
static lg_worker_t *graveyard;

/* Records of a batch that reach neither their output nor the dead-letter
 * output: how many, the first one and why, for one error line. */
typedef struct encode_losses {
  uint32_t n, first;
  int rc, out;
} encode_losses_t;

static void lost(encode_losses_t *l, uint32_t i, int rc, int out) {
  if (l->n++ == 0) {
    l->first = i;
    l->rc = rc;
    l->out = out;
  }
}

int lg_worker_encode(lg_batch_t *b, uint32_t noutputs, int dead_letter,
                     const lg_encoder_t *encoders) {
  if (b->nout < noutputs) {
    lg_payload_t *o = realloc(b->out, noutputs * sizeof *o);
    if (o == NULL)
      return -ENOMEM;
    for (uint32_t k = b->nout; k < noutputs; k++)
      o[k] = (lg_payload_t)LG_PAYLOAD_INIT;
    b->out = o;
    b->nout = noutputs;
  }
  int dl_ok = dead_letter >= 0 && (uint32_t)dead_letter < noutputs;
  encode_losses_t ls = {0};
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    if (r->flags & LG_REC_DROPPED)
      continue;
    if ((r->flags & LG_REC_FAILED) && dl_ok) {
      int rc =
          lg_payload_add(&b->out[dead_letter],
                         encoders ? &encoders[dead_letter] : NULL, b, i, NULL);
      if (rc == -ENOMEM)
        return rc;
      if (rc < 0)
        lost(&ls, i, rc, dead_letter);
      continue;
    }
    uint64_t routes = r->routes;
    while (routes) {
      int k = __builtin_ctzll(routes);
      routes &= routes - 1;
      if ((uint32_t)k >= noutputs)
        continue;
      int rc = lg_payload_add(&b->out[k], encoders ? &encoders[k] : NULL, b, i,
                              NULL);
      if (rc == -ENOMEM)
        return rc;
      if (rc < 0 && dl_ok && k != dead_letter) {
        /* The output can never send this record (e.g. a Kafka topic name
         * over 249 bytes): it goes to the dead-letter output at once. */
        char why[256];
        snprintf(why, sizeof why, "output %d cannot encode the record: %s", k,
                 strerror(-rc));
        int drc =
            lg_payload_add(&b->out[dead_letter],
                           encoders ? &encoders[dead_letter] : NULL, b, i, why);
        if (drc == -ENOMEM)
          return -ENOMEM;
        if (drc < 0)
          lost(&ls, i, rc, k);
      } else if (rc < 0) {
        lost(&ls, i, rc, k);
      }
    }
  }
  if (ls.n > 0) {
    /* Never silently: the encoders refused them (or a payload is at its 4
     * GiB). They are acked with the batch. */
    const lg_meta_kv_t *path = lg_meta_find(b->meta, "log.file.path", 13);
    lg_log_error("worker",
                 "%u record(s) of a batch are lost: output %d cannot encode "
                 "them (%s) and no dead-letter output takes them; the first "
                 "at file %.*s offset %" PRIu64,
                 ls.n, ls.out, strerror(-ls.rc),
                 path != NULL && path->str != NULL ? (int)path->str_len : 1,
                 path != NULL && path->str != NULL ? path->str : "?",
                 b->recs[ls.first].offset);
  }
  return 0;
}

/* Creates a state with every pipeline of `v` loaded (see
 * lg_worker_prepare). */
static lg_lua_t *load_pipelines(const lg_worker_t *w,
                                const lg_worker_version_t *v,
                                lg_lua_script_t *const *texts, char *err,
                                size_t errlen) {
  const lg_config_t *c = v->conf;
  lg_lua_opts_t lo = {.output_names = v->output_names,
                      .noutputs = v->noutputs,
                      .memory_limit = w->o.memory_limit};
  lg_lua_t *lua = lg_lua_create(&lo, err, errlen);
  if (lua == NULL)
    return NULL;
  for (size_t p = 0; p < c->npipelines; p++) {
    const lg_conf_pipeline_t *pc = &c->pipelines[p];
    if (pc->nscripts == 0)
      continue;
    lg_lua_script_t *s = calloc(pc->nscripts, sizeof *s);
    if (s == NULL) {
      snprintf(err, errlen, "out of memory");
      lg_lua_destroy(lua);
      return NULL;
    }
    for (size_t k = 0; k < pc->nscripts; k++) {
      if (texts != NULL && texts[p] != NULL) {
        s[k] = texts[p][k];
        continue;
      }
      s[k].path = pc->scripts[k].path;
      s[k].params_json = pc->scripts[k].params_json;
      s[k].compat = pc->scripts[k].compat;
      s[k].call = pc->scripts[k].call;
      s[k].compat_opts_json = pc->scripts[k].compat_opts_json;
    }
    int rc = lg_lua_add_pipeline(lua, (int)p, pc->name, s, pc->nscripts, err,
                                 errlen);
    free(s);
    if (rc != 0) {
      lg_lua_destroy(lua);
      return NULL;
    }
  }
  return lua;
}

lg_lua_t *lg_worker_prepare(const lg_worker_t *w, const lg_worker_version_t *v,
                            lg_lua_script_t *const *scripts, char *err,
                            size_t errlen) {
  return load_pipelines(w, v, scripts, err, errlen);
}

void lg_worker_swap(lg_worker_t *w, const lg_worker_version_t *v,
                    lg_lua_t *lua) {
  swap_t *s = calloc(1, sizeof *s);
  /* Out of memory here would lose the new version for this worker only,
   * splitting one reload across workers; waiting is the lesser evil. */
  while (s == NULL) {
    lg_log_error("worker",
                 "out of memory switching worker %d to config "
                 "generation %llu; retrying",
                 w->id, (unsigned long long)v->gen);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    s = calloc(1, sizeof *s);
  }
  s->v = *v;
  s->lua = lua;
  pthread_mutex_lock(&w->mu);
  s->seq = w->pushed;
  if (w->swaps_tail != NULL)
    w->swaps_tail->next = s;
  else
    w->swaps = s;
  w->swaps_tail = s;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* With w->mu held: takes the swaps due before the next batch (the one
 * numbered w->taken), newest last. The caller applies them unlocked. */
static swap_t *due_swaps(lg_worker_t *w) {
  swap_t *head = NULL, **pp = &head;
  while (w->swaps != NULL && w->swaps->seq <= w->taken) {
    swap_t *s = w->swaps;
    w->swaps = s->next;
    if (w->swaps == NULL)
      w->swaps_tail = NULL;
    s->next = NULL;
    w->head_v = s->v;
    *pp = s;
    pp = &s->next;
  }
  return head;
}

static void apply_swaps(lg_worker_t *w, swap_t *s) {
  while (s != NULL) {
    swap_t *next = s->next;
    lg_lua_destroy(w->lua);
    w->lua = s->lua;
    w->v = s->v;
    lg_log_debug("worker", "worker %d: config generation %llu", w->id,
                 (unsigned long long)w->v.gen);
    free(s);
    s = next;
  }
}

/* Exchanges the field arrays (and their capacities) of worker `w` and
 * batch `b`: lends the worker's array, or takes it back. */
static void swap_fields(lg_worker_t *w, lg_batch_t *b) {
  lg_field_t *f = b->fields;
  uint32_t cap = b->fields_cap;
  b->fields = w->fields;
  b->fields_cap = w->fields_cap;
  w->fields = f;
  w->fields_cap = cap;
}

/* Fields are needed only while a batch is on its worker: scripts set them
 * and the encoder reads them; after that only the encoded lines, the
 * record headers and the arena are used. So the worker lends the batch
 * its own field array for that time, and one array per worker is kept
 * instead of one per batch in flight or in the engine's pool (a script
 * setting 8 fields needs about 1.7 MiB of fields per 1 MiB batch).
 * Fields the batch already has (framing sets lugger.parse_error) are
 * copied into the lent array at the same indexes. Returns 0, or -ENOMEM
 * (the batch then keeps its own array). */
static int lend_fields(lg_worker_t *w, lg_batch_t *b) {
  if (w->fields_cap < b->nfields) {
    lg_field_t *f = realloc(w->fields, (size_t)b->nfields * sizeof *f);
    if (f == NULL)
      return -ENOMEM;
    w->fields = f;
    w->fields_cap = b->nfields;
  }
  if (b->nfields > 0)
    memcpy(w->fields, b->fields, (size_t)b->nfields * sizeof *w->fields);
  swap_fields(w, b);
  return 0;
}

/* Takes the lent array back once the batch is encoded. The records then
 * have no fields (nothing reads them any more); the batch gets its own
 * array back, empty. */
static void return_fields(lg_worker_t *w, lg_batch_t *b) {
  swap_fields(w, b);
  b->nfields = 0;
  for (uint32_t i = 0; i < b->n; i++) {
    b->recs[i].field_head = b->recs[i].field_tail = -1;
    b->recs[i].key_bloom = 0;
  }
}

/* Whether the batch must keep its fields after encoding: an output it is
 * routed to may hand records to the dead-letter output later (it rejects
 * records, or gives up after max_retry_time: lg_encoder_t.keep_fields),
 * and the delivery layer then encodes them again from the batch, fields
 * included. Batches routed only to outputs that deliver or retry (file,
 * forward) give the fields back. Kept fields are charged to the memory
 * budget with the batch (lg__charge counts fields_cap). */
static int fields_needed_after(const lg_worker_version_t *v,
                               const lg_batch_t *b) {
  if (b->nfields == 0 || v->encoders == NULL)
    return 0;
  uint64_t routes = 0;
  for (uint32_t i = 0; i < b->n; i++)
    routes |= b->recs[i].routes;
  for (size_t k = 0; k < v->noutputs && k < 64; k++)
    if ((routes >> k & 1) && v->encoders[k].keep_fields)
      return 1;
  return 0;
}

/* At most this many Lua states are recreated for one batch. A script that
 * exhausts even fresh states record after record would otherwise cost a
 * load and init per record; past this the batch's remaining records fail
 * (dead-letter output) and the next batch starts on the last state. */
#define MAX_RECREATE_PER_BATCH 8

#define SKIP_FLAGS (LG_REC_DROPPED | LG_REC_FAILED)

/* The first record at or after `i` that scripts still see. */
static uint32_t first_live(const lg_batch_t *b, uint32_t i) {
  while (i < b->n && (b->recs[i].flags & SKIP_FLAGS))
    i++;
  return i;
}

/* The worker's state ran out of memory (settings.script_memory) in
 * script `oscript` at record `orec` of `b` (lg_lua_oom_at) during a run
 * that started at script `script`, record `live` (the first record it
 * could see). Makes sure the record is failed (the driver does that
 * unless its own bookkeeping ran out too), marks it as poison when the
 * state was fresh (it had run nothing before this record, so the record
 * alone needs more than the limit and would exhaust every state), and
 * replaces the state with a new one (scripts loaded, init run). Returns
 * 0, or -1 when no new state could be made (the old one is kept). */
static int recreate_state(lg_worker_t *w, lg_batch_t *b,
                          const lg_conf_pipeline_t *pc, int script,
                          uint32_t live, int oscript, int64_t orec) {
  const char *spath = oscript >= 1 && (size_t)oscript <= pc->nscripts
                          ? pc->scripts[oscript - 1].path
                          : "(driver)";
  char msg[1200], where[1100];
  if (lg_lua_script_where(w->lua, b->pipeline, oscript, where, sizeof where) ==
      0)
    snprintf(msg, sizeof msg, "%s: not enough memory", where);
  else
    snprintf(msg, sizeof msg, "%s: not enough memory", spath);
  if (orec >= 0 && (uint64_t)orec < b->n) {
    if (!(b->recs[orec].flags & LG_REC_FAILED))
      lg_ffi_rec_fail(b, (uint32_t)orec, msg, strlen(msg));
  } else if (oscript >= 1) {
    for (uint32_t i = 0; i < b->n; i++)
      if (!(b->recs[i].flags & SKIP_FLAGS))
        lg_ffi_rec_fail(b, i, msg, strlen(msg));
  }
  const lg_meta_kv_t *pk = lg_meta_find(b->meta, "log.file.path", 13);
  int plen = pk != NULL && pk->str != NULL ? (int)pk->str_len : 1;
  const char *path = pk != NULL && pk->str != NULL ? pk->str : "?";
  uint64_t off = orec >= 0 && (uint64_t)orec < b->n ? b->recs[orec].offset
                                                    : b->recs[0].offset;
  int fresh = lg_lua_runs(w->lua) == 0 && oscript == script && orec >= 0 &&
              (uint64_t)orec == live;
  if (fresh) {
    char reason[1400];
    snprintf(reason, sizeof reason,
             "pipeline %s: script %s ran out of memory "
             "(settings.script_memory) on this record in a fresh Lua state",
             pc->name, spath);
    int rc = lg_watchdog_mark(w->o.watchdog, b, (uint32_t)orec, reason);
    lg_log_error("worker",
                 "pipeline %s: script %s ran out of memory on the record at "
                 "file %.*s offset %llu in a fresh Lua state: a poison "
                 "record%s",
                 pc->name, spath, plen, path, (unsigned long long)off,
                 rc == 0 ? "; remembered in poison.json"
                         : "; poison.json could not be written");
  }
  char err[512];
  lg_lua_t *nl = load_pipelines(w, &w->v, NULL, err, sizeof err);
  if (nl == NULL) {
    lg_log_error("worker",
                 "worker %d: pipeline %s: script %s ran out of memory at "
                 "file %.*s offset %llu, and a new Lua state could not be "
                 "made: %s",
                 w->id, pc->name, spath, plen, path, (unsigned long long)off,
                 err);
    return -1;
  }
  lg_log_warn("worker",
              "worker %d: pipeline %s: script %s ran out of memory "
              "(settings.script_memory, %zu bytes) at file %.*s offset %llu; "
              "that record goes to the dead-letter output and the Lua state "
              "was recreated (scripts loaded, init run again)",
              w->id, pc->name, spath, w->o.memory_limit, plen, path,
              (unsigned long long)off);
  lg_lua_destroy(w->lua);
  w->lua = nl;
  lg_metric_add(w->recreated, 1);
  return 0;
}

/* Runs pipeline `pc` over `b` on the worker's state; when the state runs
 * out of memory, recreates it and resumes after the record that hit the
 * limit. Returns 1 when the watchdog gave this worker up during a run
 * (the batch is not ours any more), else 0. */
static int run_scripts(lg_worker_t *w, lg_batch_t *b,
                       const lg_conf_pipeline_t *pc) {
  int script = 1;
  uint32_t from = 0;
  for (int recreated = 0;; recreated++) {
    char err[512];
    uint32_t live = first_live(b, from);
    lg_watch_begin(w->watch, w->lua, b, pc);
    int rc =
        lg_lua_run_from(w->lua, b->pipeline, b, script, from, err, sizeof err);
    if (lg_watch_end(w->watch))
      return 1;
    int oscript = 0;
    int64_t orec = -1;
    if (rc == -ENOMEM && recreated < MAX_RECREATE_PER_BATCH &&
        lg_lua_oom_at(w->lua, &oscript, &orec) &&
        recreate_state(w, b, pc, script, live, oscript, orec) == 0) {
      /* Resume after the record that hit the limit; at -1 the script
       * failed every remaining record, so the next script goes on. */
      if (oscript < 1) {
        script = 1, from = 0;
      } else if (orec >= 0) {
        script = oscript, from = (uint32_t)orec + 1;
      } else {
        script = oscript + 1, from = 0;
      }
      lg_metric_set(w->lua_mem, (int64_t)lg_lua_memory(w->lua));
      if ((size_t)script > pc->nscripts)
        return 0;
      continue;
    }
    lg_metric_set(w->lua_mem, (int64_t)lg_lua_memory(w->lua));
    if (rc != 0) {
      /* The driver itself failed (not a user script), or states kept
       * running out of memory: fail every record left so they reach the
       * dead-letter output instead of vanishing. */
      lg_log_error("worker", "pipeline %s: %s", pc->name, err);
      for (uint32_t i = 0; i < b->n; i++)
        if (!(b->recs[i].flags & SKIP_FLAGS))
          lg_batch_fail(b, i, err, strlen(err));
    }
    return 0;
  }
}

static void wait_for_memory(const char *what) {
  lg_log_error("worker", "out of memory %s; retrying", what);
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
}

/* Deferred framing (lg_framing.h): a batch that carries a file's bytes
 * gets its records here, on the worker, rather than on the loop thread;
 * records that hung a script before a restart are failed now that they
 * exist (the engine does that for batches framed on the loop). The bytes
 * are already read, so memory is waited for rather than records lost. */
static void frame_deferred(lg_worker_t *w, lg_batch_t *b) {
  const char *p;
  size_t len;
  while ((p = lg_framer_take_deferred(b, &w->raw, &w->raw_cap, &len)) == NULL)
    wait_for_memory("framing a batch");
  while (lg_framer_frame_bytes(b, p, len) != 0)
    wait_for_memory("framing a batch");
  /* A huge line's bytes are not kept outside the memory budget. */
  lg_framer_scratch_trim(&w->raw, &w->raw_cap);
  if (b->framed > 0)
    lg_watchdog_poison(w->o.watchdog, b);
}

/* Returns 1 when the watchdog gave this worker up during the run: the
 * batch is not ours any more. */
static int process(lg_worker_t *w, lg_batch_t *b) {
  const lg_config_t *c = w->v.conf;
  if (b->raw_format != 0)
    frame_deferred(w, b);
  if (b->pipeline >= (int)c->npipelines) {
    /* The engine picks a batch's pipeline in the generation the batch is
     * queued under, and workers switch at the same queue position, so
     * this cannot happen while batches reach a worker in the order they
     * were queued; never index past the pipelines if it does. */
    lg_log_error("worker",
                 "worker %d: a batch of source %u names pipeline "
                 "%d, but config generation %llu has %zu: its "
                 "records go to the dead-letter output",
                 w->id, b->source_id, b->pipeline, (unsigned long long)w->v.gen,
                 c->npipelines);
    static const char msg[] = "lugger: the batch's pipeline is not in the "
                              "config generation that processed it";
    for (uint32_t i = 0; i < b->n; i++)
      lg_batch_fail(b, i, msg, sizeof msg - 1);
    b->pipeline = -1;
  }
  /* When the watchdog gives this worker up mid-run (return 1 below), the
   * batch keeps the lent array and the worker its own: each frees what it
   * holds. */
  int lent = lend_fields(w, b) == 0;
  uint64_t routes = b->pipeline >= 0 ? w->v.pipeline_routes[b->pipeline] : 0;
  for (uint32_t i = 0; i < b->n; i++)
    b->recs[i].routes = routes;
  if (b->pipeline >= 0 && c->pipelines[b->pipeline].nscripts > 0 &&
      run_scripts(w, b, &c->pipelines[b->pipeline]))
    return 1;
  while (lg_worker_encode(b, (uint32_t)w->v.noutputs, w->v.dead_letter,
                          w->v.encoders) != 0) {
    lg_log_error("worker", "out of memory encoding a batch; retrying");
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  if (lent && !fields_needed_after(&w->v, b))
    return_fields(w, b);
  return 0;
}

/* Processes batch `b` (counted in this worker's backlog) and hands it
 * back. Returns 1 when the watchdog gave this worker up during the run. */
static int run_batch(lg_worker_t *w, lg_batch_t *b) {
  if (process(w, b))
    return 1; /* abandoned: the engine has given this thread up */
  pthread_mutex_lock(&w->mu);
  w->backlog--;
  pthread_mutex_unlock(&w->mu);
  w->o.done(w->o.ud, b);
  return 0;
}

/* Whether two versions are one config generation: their pointers are
 * those of one plan, which stays alive while a worker uses it. */
static int same_version(const lg_worker_version_t *a,
                        const lg_worker_version_t *b) {
  return a->conf == b->conf && a->output_names == b->output_names &&
         a->noutputs == b->noutputs && a->dead_letter == b->dead_letter &&
         a->pipeline_routes == b->pipeline_routes && a->encoders == b->encoders;
}

/* The crew's give callback (lg_crew.h), on the taking worker's thread
 * with the crew's mutex held: hands over the batch at the head of worker
 * `member`'s queue if any worker may process it (a stateless pipeline's:
 * b->any_worker) and this worker would process it with the version the
 * taker has now (`taker`, its lg_worker_version_t). Not while a swap is
 * due before that batch or the worker is stopping. The batch counts as
 * taken from this worker's queue, whose swaps count queue positions. */
static lg_batch_t *give_to_crew(void *member, const void *taker) {
  lg_worker_t *o = member;
  lg_batch_t *b = NULL;
  pthread_mutex_lock(&o->mu);
  lg_batch_t *h = o->head;
  int swap_due = o->swaps != NULL && o->swaps->seq <= o->taken;
  if (h != NULL && h->any_worker && !o->stop && !swap_due &&
      same_version(&o->head_v, taker)) {
    o->head = h->next;
    if (o->head == NULL)
      o->tail = NULL;
    h->next = NULL;
    o->taken++;
    o->backlog--;
    b = h;
  }
  pthread_mutex_unlock(&o->mu);
  return b;
}

static void *worker_main(void *arg) {
  lg_worker_t *w = arg;
  /* Named so that top -H, perf and /proc/PID/task tell workers apart from
   * the loop and libuv's pool (the bench's per-thread CPU reads it). */
  char name[16];
  snprintf(name, sizeof name, "lg-worker-%d", w->id);
  pthread_setname_np(pthread_self(), name);
  w->lua = load_pipelines(w, &w->v, NULL, w->err, sizeof w->err);
  int ok = w->lua != NULL;
  /* Once per start, not per worker: every worker loads the same scripts. */
  if (ok && w->id == 0)
    lg_stateless_warn(w->o.stateless_warned, w->v.conf, w->lua);
  if (ok) {
    char id[16];
    snprintf(id, sizeof id, "%d", w->id);
    w->lua_mem = lg_metrics_gauge(
        "lugger_lua_memory_bytes",
        "Memory of the worker's Lua state (capped by settings.script_memory).",
        "worker", id, NULL);
    lg_metric_set(w->lua_mem, (int64_t)lg_lua_memory(w->lua));
    w->recreated = lg_metrics_counter(
        "lugger_lua_states_recreated_total",
        "Lua states replaced because a script ran out of memory "
        "(settings.script_memory): scripts loaded and init run again.",
        "worker", id, NULL);
    w->watch = lg_watchdog_watch(w->o.watchdog, w->id);
  }
  pthread_mutex_lock(&w->mu);
  w->ready = ok ? 1 : -1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  if (!ok)
    return NULL;
  for (;;) {
    pthread_mutex_lock(&w->mu);
    if (w->head == NULL && !w->stop && w->swaps == NULL && w->o.crew != NULL) {
      /* Out of batches: take one waiting on another worker before
       * sleeping; without our own lock (lg_crew.h, "Locking"). */
      pthread_mutex_unlock(&w->mu);
      lg_batch_t *taken = lg_crew_take(w->o.crew, w->id, &w->v);
      pthread_mutex_lock(&w->mu);
      if (taken != NULL) {
        w->backlog++;
        pthread_mutex_unlock(&w->mu);
        if (run_batch(w, taken))
          return NULL;
        continue;
      }
    }
    while (w->head == NULL && !w->stop &&
           (w->swaps == NULL || w->swaps->seq > w->taken))
      pthread_cond_wait(&w->cv, &w->mu);
    /* A new version applies from the batch numbered `seq` on; switch
     * before taking it (also when idle, to free the old state soon). */
    swap_t *due = due_swaps(w);
    lg_batch_t *b = w->head;
    if (b != NULL) {
      w->head = b->next;
      if (w->head == NULL)
        w->tail = NULL;
      b->next = NULL;
      w->taken++;
    }
    int stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    apply_swaps(w, due);
    if (b == NULL) {
      if (stop)
        break;
      continue;
    }
    if (run_batch(w, b))
      return NULL;
  }
  return NULL;
}

lg_worker_t *lg_worker_spawn(int id, const lg_worker_opts_t *o, char *err,
                             size_t errlen) {
  lg_worker_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  w->id = id;
  w->o = *o;
  w->v = (lg_worker_version_t){.gen = 0,
                               .conf = o->conf,
                               .output_names = o->output_names,
                               .noutputs = o->noutputs,
                               .dead_letter = o->dead_letter,
                               .pipeline_routes = o->pipeline_routes,
                               .encoders = o->encoders};
  w->head_v = w->v;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
    snprintf(err, errlen, "cannot start worker thread");
    free(w);
    return NULL;
  }
  return w;
}

int lg_worker_ready(lg_worker_t *w, char *err, size_t errlen) {
  pthread_mutex_lock(&w->mu);
  while (w->ready == 0)
    pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
  if (w->ready > 0) {
    lg_crew_join(w->o.crew, w->id, w, give_to_crew);
    return 0;
  }
  snprintf(err, errlen, "%s", w->err);
  pthread_join(w->thread, NULL);
  lg_lua_destroy(w->lua);
  free(w);
  return -1;
}

lg_worker_t *lg_worker_create(int id, const lg_worker_opts_t *o, char *err,
                              size_t errlen) {
  lg_worker_t *w = lg_worker_spawn(id, o, err, errlen);
  if (w == NULL || lg_worker_ready(w, err, errlen) != 0)
    return NULL;
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
  w->pushed++;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

size_t lg_worker_backlog(lg_worker_t *w) {
  pthread_mutex_lock(&w->mu);
  size_t n = w->backlog;
  pthread_mutex_unlock(&w->mu);
  return n;
}

lg_batch_t *lg_worker_abandon(lg_worker_t *w) {
  lg_crew_leave(w->o.crew, w->id, w);
  pthread_mutex_lock(&w->mu);
  lg_batch_t *queued = w->head;
  w->head = w->tail = NULL;
  w->backlog = 0;
  w->stop = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_detach(w->thread);
  pthread_mutex_lock(&graveyard_mu);
  w->graveyard_next = graveyard;
  graveyard = w;
  pthread_mutex_unlock(&graveyard_mu);
  return queued;
}

void lg_worker_destroy(lg_worker_t *w) {
  if (w == NULL)
    return;
  lg_crew_leave(w->o.crew, w->id, w);
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  apply_swaps(w, w->swaps); /* versions never reached: free them */
  lg_lua_destroy(w->lua);
  free(w->fields);
  free(w->raw);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}
