/*
 * lg_checkpoint_save.c - saving the checkpoint store (lg_checkpoint.c):
 * the store encoded as one JSON file and written atomically (temp file,
 * fsync, rename, fsync of the directory), then the journal emptied.
 *
 * Saves in the background (lg_checkpoint_save_async): the two fsyncs of a
 * save can take seconds on a busy node disk, and the loop thread must go
 * on reading and acking meanwhile. The store is encoded on the loop thread
 * (a snapshot, generation G+1) and written by libuv's threadpool; journal
 * lines from then on carry G+1 and are also kept in memory (`window`).
 * When the save succeeds the journal is emptied and the window written
 * back (its lines are the changes after the snapshot); when it fails the
 * journal stays as it is: the next start applies its G+1 lines on top of
 * store G as well (lines of the loaded generation or later apply).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/lg_buf.h"
#include "core/lg_log.h"
#include "core/lg_util.h"
#include "engine/lg_admin_http.h"
#include "sources/tail/lg_checkpoint_internal.h"

/* A background save: the snapshot and where the threadpool writes it.
 * `done` is set under `mu` when the I/O has ended, so that a synchronous
 * save or a close can wait for it on the loop thread. */
typedef struct save_job {
  uv_work_t req;
  lg_checkpoint_t *c; /* NULL once the loop thread has taken the result */
  /* The store's paths: valid while the I/O runs, since a close waits for
   * it (lg__cp_save_wait). */
  const char *file, *dir;
  lg_buf_t data;
  uint64_t gen;
  int rc;
  const char *step;
  int done;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} save_job_t;

static int encode(const lg_checkpoint_t *c, uint64_t gen, lg_buf_t *b) {
  int rc = lg_buf_appendf(b, "{\"version\":%d,\"gen\":%" PRIu64 ",\"files\":[",
                          CP_VERSION, gen);
  for (size_t i = 0; i < c->n && rc == 0; i++) {
    rc |= lg_buf_append(b, i ? ",\n" : "\n", i ? 2 : 1);
    rc |= lg__cp_encode_entry(b, &c->e[i]);
  }
  rc |= lg_buf_append(b, "]}\n", 3);
  return rc ? -ENOMEM : 0;
}

/* A save failed at `step` with -rc: logged once, then once per
 * FAIL_LOG_S, and shown on /readyz until a save succeeds. The store file
 * is untouched (the temp file is what failed), and the changes stay in
 * memory (and in the journal while it can be written) for the retry. */
static void save_failed(lg_checkpoint_t *c, const char *step, int rc) {
  time_t now = time(NULL);
  c->fails++;
  char reason[600];
  if (c->fails == 1)
    c->fail_since = now;
  snprintf(reason, sizeof reason,
           "cannot save checkpoints: %s: %s: %s (%llu attempts since %lld s "
           "ago; the last saved checkpoints stay valid; retrying)",
           c->file, step, strerror(-rc), (unsigned long long)c->fails,
           (long long)(now - c->fail_since));
  lg_admin_http_set_unready("checkpoint", reason);
  if (c->fails == 1 || now - c->fail_logged >= FAIL_LOG_S) {
    c->fail_logged = now;
    lg_log_error("checkpoint",
                 "%s: %s: %s; the file keeps the last checkpoints saved; "
                 "reading and delivering go on and the save is retried every "
                 "checkpoint_interval (%llu attempts so far)",
                 c->file, step, strerror(-rc), (unsigned long long)c->fails);
  }
}

/* Writes `b` as the store file (temp file, fsync, rename, fsync of the
 * directory), with mode 0640 as its journal (lg_checkpoint.c).
 * Touches no checkpoint state, so that it can run on a threadpool thread.
 * Returns 0 or a negative errno with *step saying which step failed. */
static int save_io(const char *file, const char *dir, const lg_buf_t *b,
                   const char **step) {
  return lg_util_write_atomic(dir, file, b->data, b->len, 0640, step);
}

/* The store on disk is generation `gen` now, with every change up to the
 * snapshot: empty the journal, keeping `keep` (the lines written since
 * the snapshot, which carry `gen`). A journal left unemptied by a failed
 * truncation only holds lines of older generations, skipped at the next
 * start. */
static void saved(lg_checkpoint_t *c, const lg_buf_t *keep) {
  if (c->jfd >= 0) {
    if (ftruncate(c->jfd, 0) == 0) {
      c->jbytes = 0;
      if (keep != NULL && keep->len > 0) {
        lg_buf_t b = c->line;
        c->line = *keep;
        lg__cp_journal_flush(c);
        c->line = b;
      }
    }
  } else {
    lg__cp_journal_open(c, 1);
  }
  if (c->fails > 0) {
    lg_log_info("checkpoint", "%s: saved again after %llu failed attempts",
                c->file, (unsigned long long)c->fails);
    c->fails = 0;
    lg_admin_http_set_unready("checkpoint", NULL);
  }
}

/* Takes the result of the background save on the loop thread (from its
 * after-work callback, or from a synchronous save or close that waited for
 * it). */
static void save_job_end(lg_checkpoint_t *c) {
  save_job_t *j = c->job;
  lg__cp_journal_flush(c); /* lines still waiting belong to the window */
  c->job = NULL;
  j->c = NULL;
  lg_buf_t window = c->window;
  c->window = (lg_buf_t)LG_BUF_INIT;
  if (j->rc == 0) {
    saved(c, &window);
  } else {
    /* The store on disk is still the one before; the lines written since
     * the snapshot carry a newer generation, which the next start applies
     * on top of it too (journal_replay). Generations only grow: the next
     * snapshot gets a newer one still. */
    c->dirty = 1;
    save_failed(c, j->step, j->rc);
  }
  lg_buf_free(&window);
}

/* Waits for the background save's I/O, then takes its result. */
void lg__cp_save_wait(lg_checkpoint_t *c) {
  save_job_t *j = c->job;
  if (j == NULL)
    return;
  pthread_mutex_lock(&j->mu);
  while (!j->done)
    pthread_cond_wait(&j->cv, &j->mu);
  pthread_mutex_unlock(&j->mu);
  save_job_end(c);
}

static void save_job_work(uv_work_t *req) {
  save_job_t *j = req->data;
  int rc = save_io(j->file, j->dir, &j->data, &j->step);
  pthread_mutex_lock(&j->mu);
  j->rc = rc;
  j->done = 1;
  pthread_cond_signal(&j->cv);
  pthread_mutex_unlock(&j->mu);
}

/* Frees save job `j`: its snapshot, lock and condition. */
static void save_job_free(save_job_t *j) {
  lg_buf_free(&j->data);
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
  free(j);
}

static void save_job_after(uv_work_t *req, int status) {
  save_job_t *j = req->data;
  (void)status; /* the work always runs: nothing cancels it */
  if (j->c != NULL)
    save_job_end(j->c);
  save_job_free(j);
}

int lg_checkpoint_save_async(lg_checkpoint_t *c, uv_loop_t *loop) {
  if (c->job != NULL)
    return -EBUSY;
  lg__cp_journal_flush(c); /* in order, before the snapshot */
  if (!c->dirty)
    return 0;
  save_job_t *j = calloc(1, sizeof *j);
  if (j == NULL)
    return lg_checkpoint_save(c);
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  j->gen = c->gen + 1;
  j->file = c->file;
  j->dir = c->dir;
  if (encode(c, j->gen, &j->data) != 0) {
    save_job_free(j);
    return lg_checkpoint_save(c); /* out of memory: the old way */
  }
  j->c = c;
  j->req.data = j;
  c->job = j;
  c->dirty = 0;
  c->gen = j->gen; /* journal lines from now on go with the snapshot */
  c->window.len = 0;
  int rc = uv_queue_work(loop, &j->req, save_job_work, save_job_after);
  if (rc != 0) {
    c->job = NULL;
    c->gen = j->gen - 1;
    c->dirty = 1;
    save_job_free(j);
    return lg_checkpoint_save(c);
  }
  return 0;
}

int lg_checkpoint_save(lg_checkpoint_t *c) {
  lg__cp_save_wait(c);     /* one save at a time, in order */
  lg__cp_journal_flush(c); /* in order, before a truncation */
  if (!c->dirty)
    return 0;
  lg_buf_t b = LG_BUF_INIT;
  uint64_t gen = c->gen + 1;
  const char *step = "encode";
  int rc = encode(c, gen, &b);
  if (rc == 0)
    rc = save_io(c->file, c->dir, &b, &step);
  lg_buf_free(&b);
  if (rc != 0) {
    save_failed(c, step, rc);
    return rc;
  }
  c->dirty = 0;
  c->gen = gen;
  saved(c, NULL);
  return 0;
}
