/*
 * lg_reload.c - when and how to reload the config (lg_reload.h).
 */
#include "engine/lg_reload.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_fingerprint.h"
#include "core/lg_inotify.h"
#include "core/lg_log.h"
#include "core/lg_metrics.h"
#include "core/lg_util.h"

#define ERR_MAX 4096

typedef struct job {
  struct lg_reload *r;
  uv_work_t req;
  int force;
  char why[96];
  /* results of the work */
  int skipped; /* unchanged: nothing to do */
  void *prepared;
  uint64_t fp;
  char **interest; /* files whose events matter for the new config */
  size_t ninterest;
  char err[ERR_MAX];
} job_t;

struct lg_reload {
  uv_loop_t *loop;
  lg_reload_ops_t ops;
  void *ud;
  char *config_path;
  char *data_link; /* <config dir>/..data */
  lg_inotify_t *ino;
  char **interest;
  size_t ninterest;
  uv_timer_t debounce;
  uv_timer_t slow; /* warns when a reload takes long (an init that loops) */
  int armed;
  uint64_t first_event_ms;
  job_t *job;           /* the reload running, if any */
  uint64_t job_started; /* loop time it was queued */
  int again;            /* another request came while it ran */
  int again_force;
  uint64_t fingerprint; /* of the running config and scripts */
  lg_reload_stats_t st;
  lg_metric_t *m_ok, *m_failed, *m_gen, *m_last_ok; /* never freed */
  char last_error[ERR_MAX];
  int closing;
  int open_parts; /* inotify, timer, job */
  void (*close_cb)(void *);
  void *close_ud;
};

/* The process-wide status for lg_reload_status (the HTTP thread reads it
 * while the loop thread writes it). */
static pthread_mutex_t status_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t status_failing;
static char status_err[ERR_MAX];

static void set_status(int ok, const char *err) {
  pthread_mutex_lock(&status_mu);
  if (ok) {
    status_failing = 0;
    status_err[0] = '\0';
  } else {
    status_failing++;
    snprintf(status_err, sizeof status_err, "%s", err);
  }
  pthread_mutex_unlock(&status_mu);
}

uint64_t lg_reload_status(char *buf, size_t buflen) {
  pthread_mutex_lock(&status_mu);
  uint64_t n = status_failing;
  if (buf != NULL && buflen > 0)
    snprintf(buf, buflen, "%s", status_err);
  pthread_mutex_unlock(&status_mu);
  return n;
}

/* `h` extended with the text of the file at `path`; unchanged when it
 * cannot be read (what reads it for use says why). */
static uint64_t hash_file(uint64_t h, const char *path) {
  char *text = NULL;
  size_t len = 0;
  if (lg_util_read_file(path, LG_SCRIPT_MAX_BYTES, &text, &len) == 0) {
    h = lg_fp_update(h, text, len);
    free(text);
  }
  return h;
}

/* `h` extended with script `cs` as it runs: its path, its source
 * src[0..len) and its params. */
static uint64_t hash_script(uint64_t h, const lg_conf_script_t *cs,
                            const char *src, size_t len) {
  h = lg_fp_update(h, cs->path, strlen(cs->path) + 1);
  h = lg_fp_update(h, src, len);
  if (cs->params_json != NULL)
    h = lg_fp_update(h, cs->params_json, strlen(cs->params_json));
  return h;
}

/* `h` extended with every script of `conf` as on disk now. */
static uint64_t hash_scripts(uint64_t h, const lg_config_t *conf) {
  for (size_t p = 0; p < conf->npipelines; p++)
    for (size_t i = 0; i < conf->pipelines[p].nscripts; i++) {
      const lg_conf_script_t *cs = &conf->pipelines[p].scripts[i];
      char *src = NULL;
      size_t len = 0;
      lg_util_read_file(cs->path, LG_SCRIPT_MAX_BYTES, &src, &len);
      h = hash_script(h, cs, src, len);
      free(src);
    }
  return h;
}

uint64_t lg_reload_fingerprint(const lg_config_t *conf) {
  return hash_scripts(conf->text_hash, conf);
}

/* The files whose changes mean a reload: the config, its `..data` link
 * and every script. */
static char **interest_of(const lg_config_t *c, size_t *n) {
  size_t cnt = 2;
  for (size_t p = 0; p < c->npipelines; p++)
    cnt += c->pipelines[p].nscripts;
  char **v = calloc(cnt, sizeof *v);
  if (v == NULL)
    return NULL;
  size_t k = 0;
  v[k++] = strdup(c->path);
  size_t dl = strlen(c->dir) + sizeof "/..data";
  if ((v[k] = malloc(dl)) != NULL)
    snprintf(v[k], dl, "%s/..data", c->dir);
  k++;
  for (size_t p = 0; p < c->npipelines; p++)
    for (size_t i = 0; i < c->pipelines[p].nscripts; i++)
      if (c->pipelines[p].scripts[i].path != NULL)
        v[k++] = strdup(c->pipelines[p].scripts[i].path);
  for (size_t i = 0; i < k; i++)
    if (v[i] == NULL) {
      lg_util_strv_free(v, k);
      return NULL;
    }
  *n = k;
  return v;
}

/* Watches the directory of every file of interest (already watched ones
 * are skipped by lg_inotify). */
static void watch_dirs(lg_reload_t *r) {
  if (r->ino == NULL)
    return;
  for (size_t i = 0; i < r->ninterest; i++) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", r->interest[i]);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
      continue;
    if (slash == dir)
      slash[1] = '\0';
    else
      *slash = '\0';
    if (lg_inotify_watching(r->ino, dir))
      continue;
    int rc = lg_inotify_watch(r->ino, dir);
    if (rc != 0)
      lg_log_warn("reload",
                  "%s: cannot watch (%s): changes to %s reload only on SIGHUP",
                  dir, strerror(-rc), r->interest[i]);
  }
}

/* ---- the work, on a threadpool thread ---------------------------------- */

static void append_err(char *err, const char *msg) {
  size_t n = strlen(err);
  if (n + 3 >= ERR_MAX)
    return;
  snprintf(err + n, ERR_MAX - n, "%s%s", n > 0 ? "; " : "", msg);
}

static void free_scripts(lg_lua_script_t **s, size_t np, const lg_config_t *c) {
  if (s == NULL)
    return;
  for (size_t p = 0; p < np; p++) {
    if (s[p] == NULL)
      continue;
    for (size_t i = 0; i < c->pipelines[p].nscripts; i++)
      free((char *)s[p][i].src);
    free(s[p]);
  }
  free(s);
}

static void work_cb(uv_work_t *req) {
  job_t *j = req->data;
  lg_reload_t *r = j->r;
  lg_config_t *c = NULL;
  lg_config_errors_t errs = {0};
  if (lg_config_load(r->config_path, &c, &errs) != 0) {
    for (size_t i = 0; i < errs.n; i++) {
      /* Messages name a key path or the file and line; say which file
       * the key paths are in. */
      char m[1200];
      if (strncmp(errs.msgs[i], r->config_path, strlen(r->config_path)) == 0)
        snprintf(m, sizeof m, "%s", errs.msgs[i]);
      else
        snprintf(m, sizeof m, "%s: %s", r->config_path, errs.msgs[i]);
      append_err(j->err, m);
    }
    if (errs.n == 0)
      append_err(j->err, "the config cannot be loaded");
    lg_config_errors_free(&errs);
    return;
  }
  lg_config_errors_free(&errs);
  for (size_t i = 0; i < c->nwarnings; i++)
    lg_log_warn("reload", "%s: %s", r->config_path, c->warnings[i]);

  /* The fingerprint covers the config text as well as what it parsed to,
   * so a comment change is a change too (cheap, and predictable); the
   * text as parsed, so that a change made meanwhile is seen next time. */
  uint64_t fp = c->text_hash;
  lg_lua_script_t **scripts = calloc(c->npipelines + 1, sizeof *scripts);
  if (scripts == NULL) {
    append_err(j->err, "out of memory");
    lg_config_destroy(c);
    return;
  }
  for (size_t p = 0; p < c->npipelines && j->err[0] == '\0'; p++) {
    const lg_conf_pipeline_t *pl = &c->pipelines[p];
    if (pl->nscripts == 0)
      continue;
    if ((scripts[p] = calloc(pl->nscripts, sizeof **scripts)) == NULL) {
      append_err(j->err, "out of memory");
      break;
    }
    for (size_t i = 0; i < pl->nscripts; i++) {
      lg_lua_script_t *s = &scripts[p][i];
      const lg_conf_script_t *cs = &pl->scripts[i];
      s->path = cs->path;
      s->params_json = cs->params_json;
      s->compat = cs->compat;
      s->call = cs->call;
      s->compat_opts_json = cs->compat_opts_json;
      char *src = NULL;
      int rc =
          lg_util_read_file(cs->path, LG_SCRIPT_MAX_BYTES, &src, &s->src_len);
      if (rc != 0) {
        char m[1200];
        snprintf(m, sizeof m, "pipelines.%s.scripts[%zu]: %s: cannot read: %s",
                 pl->name, i + 1, cs->path,
                 rc == -EFBIG ? "larger than 16 MiB" : strerror(-rc));
        append_err(j->err, m);
        break;
      }
      s->src = src;
      fp = hash_script(fp, cs, src, s->src_len);
    }
  }
  if (j->err[0] != '\0') {
    free_scripts(scripts, c->npipelines, c);
    lg_config_destroy(c);
    return;
  }
  j->fp = fp;
  j->interest = interest_of(c, &j->ninterest);
  if (!j->force && fp == r->fingerprint) {
    j->skipped = 1;
    free_scripts(scripts, c->npipelines, c);
    lg_config_destroy(c);
    return;
  }
  /* `prepare` owns the config from here, whatever it returns; keep the
   * script counts for freeing the texts. */
  size_t np = c->npipelines;
  size_t *counts = calloc(np + 1, sizeof *counts);
  if (counts == NULL) {
    append_err(j->err, "out of memory");
    free_scripts(scripts, np, c);
    lg_config_destroy(c);
    return;
  }
  for (size_t p = 0; p < np; p++)
    counts[p] = c->pipelines[p].nscripts;
  char err[ERR_MAX] = "";
  j->prepared = r->ops.prepare(r->ud, c, scripts, err, sizeof err);
  if (j->prepared == NULL)
    append_err(j->err, err[0] ? err : "the new config cannot be prepared");
  for (size_t p = 0; p < np; p++) {
    if (scripts[p] == NULL)
      continue;
    for (size_t i = 0; i < counts[p]; i++)
      free((char *)scripts[p][i].src);
    free(scripts[p]);
  }
  free(scripts);
  free(counts);
}

/* ---- on the loop thread ------------------------------------------------- */

static void start(lg_reload_t *r, int force, const char *why);
static void part_closed(lg_reload_t *r);

static void after_work_cb(uv_work_t *req, int status) {
  job_t *j = req->data;
  lg_reload_t *r = j->r;
  r->job = NULL;
  if (!r->closing)
    uv_timer_stop(&r->slow);
  if (r->closing) {
    if (j->prepared != NULL)
      r->ops.discard(r->ud, j->prepared);
    lg_util_strv_free(j->interest, j->ninterest);
    free(j);
    part_closed(r);
    return;
  }
  int rc = status;
  if (rc == 0 && j->err[0] == '\0' && !j->skipped) {
    char err[ERR_MAX] = "";
    rc = r->ops.apply(r->ud, j->prepared, err, sizeof err);
    j->prepared = NULL;
    if (rc != 0)
      append_err(j->err, err[0] ? err : strerror(-rc));
  } else if (status != 0) {
    append_err(j->err, "the reload was cancelled");
  }
  if (j->err[0] != '\0') {
    r->st.failures++;
    lg_metric_add(r->m_failed, 1);
    lg_metric_set(r->m_last_ok, 0);
    set_status(0, j->err);
    snprintf(r->last_error, sizeof r->last_error, "%s", j->err);
    lg_log_error("reload",
                 "%s: reload failed (%s); config generation %llu keeps "
                 "running: %s",
                 r->config_path, j->why, (unsigned long long)r->st.generation,
                 j->err);
    if (j->prepared != NULL)
      r->ops.discard(r->ud, j->prepared);
  } else if (j->skipped) {
    lg_log_debug("reload", "%s: %s, but nothing changed", r->config_path,
                 j->why);
  } else {
    r->st.reloads++;
    r->st.generation++;
    lg_metric_add(r->m_ok, 1);
    lg_metric_set(r->m_gen, (int64_t)r->st.generation);
    lg_metric_set(r->m_last_ok, 1);
    set_status(1, NULL);
    r->fingerprint = j->fp;
    lg_log_info("reload", "%s: %s: config generation %llu running",
                r->config_path, j->why, (unsigned long long)r->st.generation);
  }
  if (j->interest != NULL && j->err[0] == '\0') {
    lg_util_strv_free(r->interest, r->ninterest);
    r->interest = j->interest;
    r->ninterest = j->ninterest;
    j->interest = NULL;
    watch_dirs(r);
  }
  lg_util_strv_free(j->interest, j->ninterest);
  free(j);
  if (r->again) {
    int force = r->again_force;
    r->again = r->again_force = 0;
    start(r, force, force ? "SIGHUP" : "config files changed");
  }
}

static void on_slow(uv_timer_t *h) {
  lg_reload_t *r = h->data;
  if (r->job == NULL)
    return;
  lg_log_warn("reload",
              "%s: a reload (%s) is still loading the scripts and running "
              "their init after %llu s (an init that does not return?); the "
              "running version goes on, and later changes wait for it",
              r->config_path, r->job->why,
              (unsigned long long)(uv_now(r->loop) - r->job_started) / 1000);
}

static void start(lg_reload_t *r, int force, const char *why) {
  if (r->closing)
    return;
  if (r->job != NULL) {
    r->again = 1;
    r->again_force |= force;
    return;
  }
  job_t *j = calloc(1, sizeof *j);
  if (j == NULL) {
    lg_log_error("reload", "%s: out of memory starting a reload",
                 r->config_path);
    return;
  }
  j->r = r;
  j->force = force;
  snprintf(j->why, sizeof j->why, "%s", why);
  j->req.data = j;
  if (r->ops.begin != NULL)
    r->ops.begin(r->ud);
  r->job = j;
  r->job_started = uv_now(r->loop);
  uv_timer_start(&r->slow, on_slow, LG_RELOAD_SLOW_MS, LG_RELOAD_SLOW_MS);
  int rc = uv_queue_work(r->loop, &j->req, work_cb, after_work_cb);
  if (rc != 0) {
    r->job = NULL;
    free(j);
    lg_log_error("reload", "%s: cannot queue the reload: %s", r->config_path,
                 uv_strerror(rc));
  }
}

static void on_debounce(uv_timer_t *h) {
  lg_reload_t *r = h->data;
  r->armed = 0;
  start(r, 0, "config files changed");
}

static void on_fs_event(void *ud, const char *path, const char *dir,
                        uint32_t events) {
  lg_reload_t *r = ud;
  (void)dir;
  if (r->closing)
    return;
  int hit = (events & LG_INOTIFY_OVERFLOW) != 0;
  if (events & LG_INOTIFY_DIR_GONE) {
    lg_log_warn("reload",
                "%s: the watched directory went away; changes "
                "under it reload only on SIGHUP",
                path);
    return;
  }
  for (size_t i = 0; !hit && path != NULL && i < r->ninterest; i++)
    hit = strcmp(path, r->interest[i]) == 0;
  if (!hit)
    return;
  uint64_t now = uv_now(r->loop);
  if (!r->armed) {
    r->armed = 1;
    r->first_event_ms = now;
  }
  uint64_t delay = LG_RELOAD_DEBOUNCE_MS;
  uint64_t last = r->first_event_ms + LG_RELOAD_DEBOUNCE_MAX_MS;
  if (now + delay > last)
    delay = last > now ? last - now : 0;
  uv_timer_start(&r->debounce, on_debounce, delay, 0);
}

lg_reload_t *lg_reload_create(uv_loop_t *loop, const lg_config_t *conf,
                              uint64_t running_fp, const lg_reload_ops_t *ops,
                              void *ud) {
  lg_reload_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  r->loop = loop;
  r->ops = *ops;
  r->ud = ud;
  r->st.last_error = "";
  r->config_path = strdup(conf->path);
  r->interest = interest_of(conf, &r->ninterest);
  if (r->config_path == NULL || r->interest == NULL) {
    free(r->config_path);
    lg_util_strv_free(r->interest, r->ninterest);
    free(r);
    return NULL;
  }
  /* What runs, computed as a reload would, so that the first watch event
   * with nothing changed is ignored. */
  r->fingerprint = running_fp;
  r->m_ok = lg_metrics_counter("lugger_config_reloads_total",
                               "Config reloads that took effect.", NULL);
  r->m_failed = lg_metrics_counter(
      "lugger_config_reload_failures_total",
      "Config reloads that failed; the config before them kept running.", NULL);
  r->m_gen =
      lg_metrics_gauge("lugger_config_generation",
                       "Config generation running (0 = as started).", NULL);
  r->m_last_ok = lg_metrics_gauge(
      "lugger_config_last_reload_successful",
      "1 when the last reload took effect (or none was tried), 0 when it "
      "failed and an older config runs.",
      NULL);
  lg_metric_set(r->m_last_ok, 1);
  set_status(1, NULL);
  uv_timer_init(loop, &r->debounce);
  r->debounce.data = r;
  uv_timer_init(loop, &r->slow);
  r->slow.data = r;
  r->open_parts = 2;
  int err = 0;
  r->ino = lg_inotify_create(loop, on_fs_event, r, &err);
  if (r->ino == NULL)
    lg_log_warn("reload",
                "%s: cannot watch the config directory (%s): reload with "
                "SIGHUP",
                conf->path, strerror(-err));
  else
    r->open_parts++;
  watch_dirs(r);
  /* A change between the config's load and the watch above sent no event
   * this watch sees; the files as they are now tell. */
  if (hash_scripts(hash_file(LG_FP_INIT, conf->path), conf) != running_fp) {
    lg_log_info("reload",
                "%s: the config or a script changed while lugger "
                "started: reloading",
                conf->path);
    r->armed = 1;
    r->first_event_ms = uv_now(loop);
    uv_timer_start(&r->debounce, on_debounce, 0, 0);
  }
  return r;
}

void lg_reload_request(lg_reload_t *r, const char *why) {
  if (r == NULL)
    return;
  lg_log_info("reload", "%s: %s: reloading", r->config_path, why);
  start(r, 1, why);
}

void lg_reload_stats(const lg_reload_t *r, lg_reload_stats_t *out) {
  if (r == NULL) {
    memset(out, 0, sizeof *out);
    out->last_error = "";
    return;
  }
  *out = r->st;
  out->last_error = r->last_error;
}

static void part_closed(lg_reload_t *r) {
  if (--r->open_parts > 0)
    return;
  lg_util_strv_free(r->interest, r->ninterest);
  free(r->config_path);
  void (*cb)(void *) = r->close_cb;
  void *ud = r->close_ud;
  free(r);
  if (cb != NULL)
    cb(ud);
}

static void on_ino_closed(void *ud) { part_closed(ud); }

static void on_timer_closed(uv_handle_t *h) { part_closed(h->data); }

void lg_reload_close(lg_reload_t *r, void (*cb)(void *ud), void *ud) {
  if (r == NULL) {
    if (cb != NULL)
      cb(ud);
    return;
  }
  if (r->closing)
    return;
  r->closing = 1;
  r->close_cb = cb;
  r->close_ud = ud;
  if (r->job != NULL)
    r->open_parts++; /* after_work_cb closes this part */
  if (r->ino != NULL)
    lg_inotify_close(r->ino, on_ino_closed, r);
  uv_close((uv_handle_t *)&r->debounce, on_timer_closed);
  uv_close((uv_handle_t *)&r->slow, on_timer_closed);
}
