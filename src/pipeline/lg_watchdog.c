#include "pipeline/lg_watchdog.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/lg_log.h"
#include "core/lg_metrics.h"

/* The poison list keeps the newest entries only: a record that hung a
 * script is read again only until the checkpoint passes it, so old
 * entries are dead weight. */
#define POISON_MAX 256

typedef struct poison {
  uint64_t fingerprint;
  char *path;
  uint64_t offset, end_offset;
  char *reason;
} poison_t;

struct lg_watch {
  lg_watchdog_t *wd;
  int worker;
  pthread_mutex_t mu; /* lua, batch, pc, abandoned, cpu */
  lg_lua_t *lua;      /* set between lg_watch_begin and lg_watch_end */
  lg_batch_t *batch;
  const lg_conf_pipeline_t *pc;
  int abandoned;
  clockid_t cpu; /* CPU-time clock of the thread running the script */
  int has_cpu;   /* 0: pthread_getcpuclockid failed; wall time only */
  /* Watchdog thread only. */
  uint64_t seq;
  int64_t rec;
  int script;
  uint64_t since_ms;  /* when seq/rec/script last changed (monotonic) */
  uint64_t since_cpu; /* the worker's CPU time then, ns */
  int stage;          /* 0 running, 1 interrupted, 2 stuck */
  uint64_t stage_ms, stage_cpu;
  lg_metric_t *timeouts, *stuck;
  struct lg_watch *next;
};

struct lg_watchdog {
  uint64_t timeout_ms;  /* CPU time */
  uint64_t backstop_ms; /* wall time */
  char *file;           /* <state_dir>/poison.json, NULL = none */
  char *dir;
  void (*stuck)(void *ud, const lg_watchdog_stall_t *s);
  void *ud;
  pthread_t thread;
  int has_thread;
  pthread_mutex_t mu; /* watches, stop */
  pthread_cond_t cv;
  int stop;
  lg_watch_t *watches;
  pthread_mutex_t pmu; /* poison list */
  poison_t *poison;
  size_t npoison;
  lg_metric_t *poisoned;
};

/* Abandoned watches stay reachable from here, so leak checkers see them
 * as held (their threads may still run) rather than lost. */
static pthread_mutex_t graveyard_mu = PTHREAD_MUTEX_INITIALIZER;
static lg_watch_t *graveyard;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The default wall-clock backstop for a script that is stalled without
 * using CPU: max(10 x script_timeout, 30 s). Generous on purpose: it must
 * not fire on a worker that is merely starved of CPU. See watchdog_main. */
static uint64_t default_backstop_ms(uint64_t timeout_ms) {
  uint64_t b = timeout_ms * 10;
  return b > 30000 ? b : 30000;
}

/* CPU time the worker thread of `w` has used, in nanoseconds. Caller holds
 * w->mu inside a run, so the thread is alive (a CPU clock of a thread that
 * has exited is invalid). Without a CPU clock, wall time stands in (the
 * old behaviour: a descheduled worker may then be taken for a stuck one). */
static uint64_t worker_cpu_ns(const lg_watch_t *w, uint64_t now) {
  struct timespec ts;
  if (w->has_cpu && clock_gettime(w->cpu, &ts) == 0)
    return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
  return now * 1000000;
}

/* ---- the poison list ----------------------------------------------------
 */

static void poison_free(poison_t *p) {
  free(p->path);
  free(p->reason);
}

/* Appends an entry (caller holds pmu), dropping the oldest beyond
 * POISON_MAX. Takes ownership of path and reason. */
static int poison_push(lg_watchdog_t *wd, uint64_t fp, char *path, uint64_t off,
                       uint64_t end, char *reason) {
  if (wd->npoison == POISON_MAX) {
    poison_free(&wd->poison[0]);
    memmove(wd->poison, wd->poison + 1, (POISON_MAX - 1) * sizeof *wd->poison);
    wd->npoison--;
  }
  poison_t *np = realloc(wd->poison, (wd->npoison + 1) * sizeof *np);
  if (np == NULL) {
    free(path);
    free(reason);
    return -ENOMEM;
  }
  wd->poison = np;
  np[wd->npoison++] = (poison_t){fp, path, off, end, reason};
  return 0;
}

/* Writes the list: temp file, fsync, rename, fsync of the directory, like
 * the checkpoints. Caller holds pmu. */
static int poison_save(lg_watchdog_t *wd) {
  if (wd->file == NULL)
    return 0;
  cJSON *arr = cJSON_CreateArray();
  if (arr == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < wd->npoison; i++) {
    const poison_t *p = &wd->poison[i];
    char fp[17];
    snprintf(fp, sizeof fp, "%016" PRIx64, p->fingerprint);
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
      continue;
    cJSON_AddStringToObject(o, "fingerprint", fp);
    cJSON_AddStringToObject(o, "path", p->path);
    cJSON_AddNumberToObject(o, "offset", (double)p->offset);
    cJSON_AddNumberToObject(o, "end_offset", (double)p->end_offset);
    cJSON_AddStringToObject(o, "reason", p->reason);
    cJSON_AddItemToArray(arr, o);
  }
  char *text = cJSON_PrintUnformatted(arr);
  cJSON_Delete(arr);
  if (text == NULL)
    return -ENOMEM;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", wd->file);
  int rc = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    rc = -errno;
  } else {
    size_t len = strlen(text), done = 0;
    while (done < len && rc == 0) {
      ssize_t n = write(fd, text + done, len - done);
      if (n < 0 && errno != EINTR)
        rc = -errno;
      else if (n > 0)
        done += (size_t)n;
    }
    if (rc == 0 && (write(fd, "\n", 1) != 1 || fsync(fd) != 0))
      rc = -errno;
    close(fd);
    if (rc == 0 && rename(tmp, wd->file) != 0)
      rc = -errno;
    if (rc == 0) {
      int dfd = open(wd->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
      }
    }
  }
  free(text);
  return rc;
}

static void poison_load(lg_watchdog_t *wd) {
  FILE *f = fopen(wd->file, "rb");
  if (f == NULL)
    return;
  char *text = NULL;
  size_t cap = 0, len = 0;
  for (;;) {
    if (len + 4096 > cap) {
      char *nt = realloc(text, cap = cap * 2 + 8192);
      if (nt == NULL)
        break;
      text = nt;
    }
    size_t n = fread(text + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0)
      break;
  }
  fclose(f);
  if (text == NULL)
    return;
  text[len] = '\0';
  cJSON *arr = cJSON_Parse(text);
  free(text);
  if (!cJSON_IsArray(arr)) {
    char aside[4300];
    snprintf(aside, sizeof aside, "%s.corrupt", wd->file);
    rename(wd->file, aside);
    lg_log_error("watchdog", "%s: not a JSON array; moved aside to %s",
                 wd->file, aside);
    cJSON_Delete(arr);
    return;
  }
  cJSON *o;
  cJSON_ArrayForEach(o, arr) {
    const char *fp =
        cJSON_GetStringValue(cJSON_GetObjectItem(o, "fingerprint"));
    const char *path = cJSON_GetStringValue(cJSON_GetObjectItem(o, "path"));
    const char *reason = cJSON_GetStringValue(cJSON_GetObjectItem(o, "reason"));
    cJSON *off = cJSON_GetObjectItem(o, "offset");
    cJSON *end = cJSON_GetObjectItem(o, "end_offset");
    if (fp == NULL || path == NULL || !cJSON_IsNumber(off) ||
        !cJSON_IsNumber(end))
      continue;
    poison_push(wd, strtoull(fp, NULL, 16), strdup(path),
                (uint64_t)off->valuedouble, (uint64_t)end->valuedouble,
                strdup(reason ? reason : "the script hung on this record"));
  }
  cJSON_Delete(arr);
  if (wd->npoison > 0)
    lg_log_warn("watchdog",
                "%s: %zu records hung a script before; they go to the "
                "dead-letter output if they are read again",
                wd->file, wd->npoison);
}

int lg_watchdog_poison(lg_watchdog_t *wd, lg_batch_t *b) {
  if (wd == NULL || b->n == 0)
    return 0;
  int failed = 0;
  pthread_mutex_lock(&wd->pmu);
  if (wd->npoison == 0) {
    pthread_mutex_unlock(&wd->pmu);
    return 0;
  }
  const lg_meta_kv_t *pk = lg_meta_find(b->meta, "log.file.path", 13);
  uint64_t first = b->recs[0].offset, last = b->recs[b->n - 1].offset;
  for (size_t k = 0; k < wd->npoison; k++) {
    const poison_t *p = &wd->poison[k];
    if (p->offset < first || p->offset > last)
      continue;
    int same_file =
        p->fingerprint == b->fingerprint ||
        (pk != NULL && pk->str != NULL && pk->str_len == strlen(p->path) &&
         memcmp(pk->str, p->path, pk->str_len) == 0);
    if (!same_file)
      continue;
    for (uint32_t i = 0; i < b->n; i++) {
      lg_rec_t *r = &b->recs[i];
      if (r->offset != p->offset || r->end_offset != p->end_offset ||
          (r->flags & (LG_REC_FAILED | LG_REC_DROPPED)))
        continue;
      char msg[1400];
      int n =
          snprintf(msg, sizeof msg,
                   "poison: %s; sent to the dead-letter output instead "
                   "of running the script again (file %s offset %" PRIu64 ")",
                   p->reason, p->path, p->offset);
      if (n < 0 || (size_t)n >= sizeof msg)
        n = (int)strlen(msg);
      if (lg_batch_fail(b, i, msg, (size_t)n) == 0) {
        failed++;
        lg_log_error("watchdog",
                     "%s offset %" PRIu64
                     ": record hung a script before the restart; sent to "
                     "the dead-letter output",
                     p->path, p->offset);
      }
      break;
    }
  }
  pthread_mutex_unlock(&wd->pmu);
  lg_metric_add(wd->poisoned, (uint64_t)failed);
  return failed;
}

int lg_watchdog_mark(lg_watchdog_t *wd, const lg_batch_t *b, uint32_t i,
                     const char *reason) {
  if (wd == NULL)
    return 0;
  if (i >= b->n)
    return -ERANGE;
  const lg_meta_kv_t *pk = lg_meta_find(b->meta, "log.file.path", 13);
  char *path = pk != NULL && pk->str != NULL ? strndup(pk->str, pk->str_len)
                                             : strdup("");
  char *why = strdup(reason);
  if (path == NULL || why == NULL) {
    free(path);
    free(why);
    return -ENOMEM;
  }
  pthread_mutex_lock(&wd->pmu);
  int rc = poison_push(wd, b->fingerprint, path, b->recs[i].offset,
                       b->recs[i].end_offset, why);
  if (rc == 0)
    rc = poison_save(wd);
  pthread_mutex_unlock(&wd->pmu);
  return rc;
}

size_t lg_watchdog_npoison(lg_watchdog_t *wd) {
  if (wd == NULL)
    return 0;
  pthread_mutex_lock(&wd->pmu);
  size_t n = wd->npoison;
  pthread_mutex_unlock(&wd->pmu);
  return n;
}

/* ---- watches -------------------------------------------------------------
 */

lg_watch_t *lg_watchdog_watch(lg_watchdog_t *wd, int worker) {
  if (wd == NULL || !wd->has_thread)
    return NULL;
  lg_watch_t *w = calloc(1, sizeof *w);
  if (w == NULL)
    return NULL;
  w->wd = wd;
  w->worker = worker;
  w->rec = -2;
  pthread_mutex_init(&w->mu, NULL);
  char id[16];
  snprintf(id, sizeof id, "%d", worker);
  w->timeouts = lg_metrics_counter(
      "lugger_script_timeouts_total",
      "Records a script was interrupted on after settings.script_timeout "
      "without progress.",
      "worker", id, NULL);
  w->stuck = lg_metrics_counter(
      "lugger_workers_stuck_total",
      "Workers abandoned because their script could not be interrupted.",
      "worker", id, NULL);
  pthread_mutex_lock(&wd->mu);
  w->next = wd->watches;
  wd->watches = w;
  pthread_mutex_unlock(&wd->mu);
  return w;
}

void lg_watch_begin(lg_watch_t *w, lg_lua_t *lua, lg_batch_t *b,
                    const lg_conf_pipeline_t *pc) {
  if (w == NULL)
    return;
  /* The script runs on this thread: its CPU clock is what the watchdog
   * measures (a thread's clock id is only valid while it lives, which it
   * does until lg_watch_end). */
  clockid_t cpu = CLOCK_MONOTONIC;
  int has_cpu = pthread_getcpuclockid(pthread_self(), &cpu) == 0;
  pthread_mutex_lock(&w->mu);
  w->lua = lua;
  w->batch = b;
  w->pc = pc;
  w->cpu = cpu;
  w->has_cpu = has_cpu;
  pthread_mutex_unlock(&w->mu);
}

int lg_watch_end(lg_watch_t *w) {
  if (w == NULL)
    return 0;
  pthread_mutex_lock(&w->mu);
  int abandoned = w->abandoned;
  /* An abandoned watch keeps its batch and state: they are the stuck
   * thread's, and stay reachable from the graveyard. */
  if (!abandoned) {
    w->lua = NULL;
    w->batch = NULL;
    w->pc = NULL;
  }
  pthread_mutex_unlock(&w->mu);
  return abandoned;
}

/* Facts about the stalled run of `w` for logs, poison and the callback.
 * Caller holds w->mu and has checked that the run is still the same. */
typedef struct stall_info {
  const char *script;
  char path[4096];
  int64_t rec;
  uint64_t offset, end_offset, fingerprint;
} stall_info_t;

static void stall_info(lg_watch_t *w, int64_t rec, int script,
                       stall_info_t *si) {
  lg_batch_t *b = w->batch;
  si->script = script >= 1 && (size_t)script <= w->pc->nscripts
                   ? w->pc->scripts[script - 1].path
                   : "";
  si->path[0] = '\0';
  const lg_meta_kv_t *pk = lg_meta_find(b->meta, "log.file.path", 13);
  if (pk != NULL && pk->str != NULL)
    snprintf(si->path, sizeof si->path, "%.*s", (int)pk->str_len, pk->str);
  /* In batch mode before records() yielded one, no record is current: the
   * first one stands for the batch. */
  si->rec = rec >= 0 && (uint64_t)rec < b->n ? rec : 0;
  si->offset = b->recs[si->rec].offset;
  si->end_offset = b->recs[si->rec].end_offset;
  si->fingerprint = b->fingerprint;
}

/* How long a stalled run has taken: "1.0 s of CPU time", or, when the
 * wall-clock backstop fired, "31.2 s (blocked, 0.0 s of CPU time)". */
static void stall_text(char *out, size_t n, uint64_t cpu_ms, uint64_t wall_ms,
                       int backstop) {
  if (backstop)
    snprintf(out, n, "%.1f s (blocked, %.1f s of CPU time)", wall_ms / 1000.0,
             cpu_ms / 1000.0);
  else
    snprintf(out, n, "%.1f s of CPU time", cpu_ms / 1000.0);
}

/* Stage 1. Caller holds w->mu, with the run unchanged since sampled.
 * `cpu_ms` is the CPU time the worker used on the record, `wall_ms` the
 * wall time; `backstop` says which of the two fired. */
static void stage_interrupt(lg_watchdog_t *wd, lg_watch_t *w, uint64_t seq,
                            int64_t rec, int script, uint64_t cpu_ms,
                            uint64_t wall_ms, int backstop) {
  stall_info_t si;
  stall_info(w, rec, script, &si);
  char took[96];
  stall_text(took, sizeof took, cpu_ms, wall_ms, backstop);
  char reason[512];
  snprintf(reason, sizeof reason,
           "pipeline %s: script %s made no progress on this record for "
           "%s (settings.script_timeout)",
           w->pc->name, si.script[0] ? si.script : "?", took);
  /* The marker first: whatever happens next (the interrupt, a crash, a
   * kill by the liveness probe), the record will not hang us again. */
  pthread_mutex_lock(&wd->pmu);
  int rc = poison_push(wd, si.fingerprint, strdup(si.path), si.offset,
                       si.end_offset, strdup(reason));
  if (rc == 0)
    rc = poison_save(wd);
  pthread_mutex_unlock(&wd->pmu);
  if (rc != 0)
    lg_log_error("watchdog", "%s: cannot write the poison marker: %s",
                 wd->file ? wd->file : "(no state_dir)", strerror(-rc));
  lg_log_error("watchdog",
               "pipeline %s: script %s: no progress for %s on the record "
               "at file %s offset %" PRIu64 " (worker %d); interrupting it",
               w->pc->name, si.script[0] ? si.script : "?", took,
               si.path[0] ? si.path : "?", si.offset, w->worker);
  char why[160];
  snprintf(why, sizeof why,
           "no progress on this record for %s (settings.script_timeout)", took);
  lg_lua_interrupt(w->lua, seq, why);
  lg_metric_add(w->timeouts, 1);
}

/* Stage 2: abandons the worker. Caller holds w->mu, with the run
 * unchanged since sampled. `cpu_ms`/`wall_ms`/`backstop` measure the time
 * since the interrupt, as for stage_interrupt; `stalled` is the wall time
 * since the last progress. */
static void stage_stuck(lg_watchdog_t *wd, lg_watch_t *w, uint64_t stalled,
                        int64_t rec, int script, uint64_t cpu_ms,
                        uint64_t wall_ms, int backstop) {
  (void)wd;
  stall_info_t si;
  stall_info(w, rec, script, &si);
  char took[96];
  stall_text(took, sizeof took, cpu_ms, wall_ms, backstop);
  /* From here the worker never hands its batch back (lg_watch_end). */
  w->abandoned = 1;
  lg_log_error("watchdog",
               "pipeline %s: script %s: still no progress %s after the "
               "interrupt on the record at file %s offset %" PRIu64
               " (a JIT-compiled loop or a long C call ignores it): worker "
               "%d is abandoned; its files move to a new worker, %s stops "
               "advancing and the record goes to the dead-letter output "
               "after a restart",
               w->pc->name, si.script[0] ? si.script : "?", took,
               si.path[0] ? si.path : "?", si.offset, w->worker,
               si.path[0] ? si.path : "its file");
  lg_metric_add(w->stuck, 1);
  lg_watchdog_stall_t st = {
      .worker = w->worker,
      .pipeline = w->pc->name,
      .script = si.script,
      .path = si.path,
      .offset = si.offset,
      .stalled_ms = stalled,
      .batch = w->batch,
  };
  if (wd->stuck != NULL)
    wd->stuck(wd->ud, &st);
}

static void *watchdog_main(void *arg) {
  lg_watchdog_t *wd = arg;
  pthread_setname_np(pthread_self(), "lg-watchdog");
  uint64_t tick = wd->timeout_ms / 10;
  if (tick < 10)
    tick = 10;
  if (tick > 200)
    tick = 200;
  pthread_mutex_lock(&wd->mu);
  while (!wd->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(tick % 1000) * 1000000;
    ts.tv_sec += (time_t)(tick / 1000) + ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    pthread_cond_timedwait(&wd->cv, &wd->mu, &ts);
    if (wd->stop)
      break;
    uint64_t now = now_ms();
    lg_watch_t **pp = &wd->watches;
    while (*pp != NULL) {
      lg_watch_t *w = *pp;
      uint64_t seq = 0;
      int64_t rec = -1;
      int script = 0;
      /* Under the watch's lock the worker cannot end the run, so the
       * state and batch stay valid while they are looked at. */
      pthread_mutex_lock(&w->mu);
      int busy =
          w->batch != NULL && lg_lua_progress(w->lua, &seq, &rec, &script);
      uint64_t cpu = busy ? worker_cpu_ns(w, now) : 0;
      if (!busy || seq != w->seq || rec != w->rec || script != w->script) {
        w->seq = seq;
        w->rec = rec;
        w->script = script;
        w->since_ms = now;
        w->since_cpu = cpu;
        w->stage = 0;
        pthread_mutex_unlock(&w->mu);
        pp = &w->next;
        continue;
      }
      /* The budget is CPU time: a worker that is descheduled (a busy or
       * CPU-throttled node, a stopped or frozen process) burns none of it,
       * so a normal record is never taken for a poison one just because
       * the thread did not run. Only the wall-clock backstop catches a
       * script blocked off the CPU: in the sandbox that is print() or
       * lugger.log() writing to a stderr pipe nobody reads, or page
       * faults on a swapping node; never a loop. */
      uint64_t stalled = now - w->since_ms;
      int gone = 0;
      if (w->stage == 0) {
        uint64_t cpu_ms = (cpu - w->since_cpu) / 1000000;
        int backstop = stalled >= wd->backstop_ms;
        if (cpu_ms >= wd->timeout_ms || backstop) {
          stage_interrupt(wd, w, seq, rec, script, cpu_ms, stalled,
                          backstop && cpu_ms < wd->timeout_ms);
          w->stage = 1;
          w->stage_ms = now;
          w->stage_cpu = cpu;
        }
      } else if (w->stage == 1) {
        uint64_t cpu_ms = (cpu - w->stage_cpu) / 1000000;
        uint64_t wall_ms = now - w->stage_ms;
        int backstop = wall_ms >= wd->backstop_ms;
        if (cpu_ms >= wd->timeout_ms || backstop) {
          stage_stuck(wd, w, stalled, rec, script, cpu_ms, wall_ms,
                      backstop && cpu_ms < wd->timeout_ms);
          w->stage = 2;
          gone = 1;
        }
      }
      pthread_mutex_unlock(&w->mu);
      if (gone) {
        /* The watchdog is done with this worker; the watch stays
         * allocated for the thread that may still come back to it. */
        *pp = w->next;
        pthread_mutex_lock(&graveyard_mu);
        w->next = graveyard;
        graveyard = w;
        pthread_mutex_unlock(&graveyard_mu);
        continue;
      }
      pp = &w->next;
    }
  }
  pthread_mutex_unlock(&wd->mu);
  return NULL;
}

/* ---- lifecycle -----------------------------------------------------------
 */

lg_watchdog_t *lg_watchdog_create(const lg_watchdog_opts_t *o, char *err,
                                  size_t errlen) {
  lg_watchdog_t *wd = calloc(1, sizeof *wd);
  if (wd == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  wd->timeout_ms = o->timeout_ms;
  wd->backstop_ms =
      o->backstop_ms > 0 ? o->backstop_ms : default_backstop_ms(o->timeout_ms);
  wd->stuck = o->stuck;
  wd->ud = o->ud;
  pthread_mutex_init(&wd->mu, NULL);
  pthread_mutex_init(&wd->pmu, NULL);
  pthread_cond_init(&wd->cv, NULL);
  wd->poisoned = lg_metrics_counter(
      "lugger_records_poisoned_total",
      "Records sent to the dead-letter output because they hung a script "
      "before a restart.",
      NULL);
  if (o->state_dir != NULL) {
    size_t n = strlen(o->state_dir) + sizeof "/poison.json";
    wd->file = malloc(n);
    wd->dir = strdup(o->state_dir);
    if (wd->file == NULL || wd->dir == NULL) {
      snprintf(err, errlen, "out of memory");
      lg_watchdog_destroy(wd);
      return NULL;
    }
    snprintf(wd->file, n, "%s/poison.json", o->state_dir);
    poison_load(wd);
  }
  if (wd->timeout_ms > 0) {
    if (pthread_create(&wd->thread, NULL, watchdog_main, wd) != 0) {
      snprintf(err, errlen, "cannot start the watchdog thread");
      lg_watchdog_destroy(wd);
      return NULL;
    }
    wd->has_thread = 1;
  }
  return wd;
}

void lg_watchdog_destroy(lg_watchdog_t *wd) {
  if (wd == NULL)
    return;
  if (wd->has_thread) {
    pthread_mutex_lock(&wd->mu);
    wd->stop = 1;
    pthread_cond_broadcast(&wd->cv);
    pthread_mutex_unlock(&wd->mu);
    pthread_join(wd->thread, NULL);
  }
  /* Watches still linked belong to workers that are gone (destroyed
   * before the watchdog) and are freed; abandoned ones stay in the
   * graveyard. */
  lg_watch_t *w = wd->watches;
  while (w != NULL) {
    lg_watch_t *next = w->next;
    pthread_mutex_destroy(&w->mu);
    free(w);
    w = next;
  }
  for (size_t i = 0; i < wd->npoison; i++)
    poison_free(&wd->poison[i]);
  free(wd->poison);
  free(wd->file);
  free(wd->dir);
  pthread_mutex_destroy(&wd->mu);
  pthread_mutex_destroy(&wd->pmu);
  pthread_cond_destroy(&wd->cv);
  free(wd);
}
