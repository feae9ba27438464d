/*
 * lg_atomic_file.c - a state file replaced by libuv's threadpool, one
 * write at a time, coalescing (lg_atomic_file.h).
 *
 * A write is a job: the snapshot and the paths, handed to the threadpool.
 * The job is apart from the file so that a file destroyed while its I/O
 * runs (after waiting for it) leaves the after-work callback only the job
 * to free. `done` is set under `mu` when the I/O has ended, so that the
 * loop thread can wait for it (lg_atomic_file_wait).
 */
#include "core/lg_atomic_file.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "core/lg_util.h"

typedef struct job {
  uv_work_t req;
  lg_atomic_file_t *f; /* NULL once the loop thread has taken the result */
  const char *dir, *path;
  unsigned mode;
  lg_buf_t data;
  int rc;
  const char *step;
  int done;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} job_t;

struct lg_atomic_file {
  const char *dir, *path;
  unsigned mode;
  lg_atomic_file_fill_cb fill;
  lg_atomic_file_done_cb done;
  void *ud;
  uv_loop_t *loop;
  job_t *job;    /* the write in flight, or NULL */
  int asked;     /* a write is asked for, to start once `job` ended */
  int in_done;   /* `done` calls running (nested when it waits) */
  int destroyed; /* destroyed from within `done`: freed once it returned */
};

static void job_free(job_t *j) {
  lg_buf_free(&j->data);
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
  free(j);
}

/* Threadpool: the I/O only; touches nothing of the file's but the job. */
static void job_work(uv_work_t *req) {
  job_t *j = req->data;
  const char *step = NULL;
  int rc = lg_util_write_atomic(j->dir, j->path, j->data.data, j->data.len,
                                j->mode, &step);
  pthread_mutex_lock(&j->mu);
  j->rc = rc;
  j->step = step;
  j->done = 1;
  pthread_cond_signal(&j->cv);
  pthread_mutex_unlock(&j->mu);
}

static int end(lg_atomic_file_t *f, int rc, const char *step);

static void job_after(uv_work_t *req, int status) {
  job_t *j = req->data;
  lg_atomic_file_t *f = j->f;
  int rc = j->rc;
  const char *step = j->step;
  (void)status; /* nothing cancels it: the work always ran */
  job_free(j);
  if (f != NULL) {
    f->job = NULL;
    end(f, rc, step);
  }
}

/* Starts a write of what `fill` gives now. 0, or a negative errno with
 * *step (nothing started). `fill` runs first, whatever fails after it:
 * an owner may note there what the write holds (the journal marks its
 * waiters), and a failure to start then reaches them through `done`. */
static int start(lg_atomic_file_t *f, const char **step) {
  f->asked = 0;
  lg_buf_t data = LG_BUF_INIT;
  *step = "encode";
  int rc = f->fill(f->ud, &data);
  job_t *j = NULL;
  if (rc == 0) {
    *step = "queue";
    j = calloc(1, sizeof *j);
    rc = j != NULL ? 0 : -ENOMEM;
  }
  if (rc != 0) {
    lg_buf_free(&data);
    return rc;
  }
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  j->dir = f->dir;
  j->path = f->path;
  j->mode = f->mode;
  j->data = data;
  j->req.data = j;
  if ((rc = uv_queue_work(f->loop, &j->req, job_work, job_after)) != 0) {
    job_free(j);
    return rc;
  }
  j->f = f;
  f->job = j;
  return 0;
}

/* A write ended with `rc`: runs `done`, then starts the write asked for
 * meanwhile (its failure to start goes to `done` as well), unless within
 * an outer `done` (whose end starts it). Returns 1 when `done` destroyed
 * `f` (freed here when no outer `done` runs), else 0. */
static int end(lg_atomic_file_t *f, int rc, const char *step) {
  for (;;) {
    f->in_done++;
    f->done(f->ud, rc, step);
    f->in_done--;
    if (f->destroyed) {
      if (f->in_done == 0)
        free(f);
      return 1;
    }
    if (!f->asked || f->in_done > 0 || f->job != NULL)
      return 0;
    if ((rc = start(f, &step)) == 0)
      return 0;
  }
}

lg_atomic_file_t *lg_atomic_file_create(const char *dir, const char *path,
                                        unsigned mode,
                                        lg_atomic_file_fill_cb fill,
                                        lg_atomic_file_done_cb done, void *ud) {
  lg_atomic_file_t *f = calloc(1, sizeof *f);
  if (f == NULL)
    return NULL;
  f->dir = dir;
  f->path = path;
  f->mode = mode;
  f->fill = fill;
  f->done = done;
  f->ud = ud;
  return f;
}

int lg_atomic_file_write(lg_atomic_file_t *f, uv_loop_t *loop) {
  f->loop = loop;
  if (f->job != NULL || f->in_done > 0) {
    f->asked = 1;
    return 0;
  }
  const char *step;
  return start(f, &step);
}

int lg_atomic_file_busy(const lg_atomic_file_t *f) {
  return f->job != NULL || f->asked || f->in_done > 0;
}

/* Blocks until the I/O of job `j` has ended; its after-work callback then
 * only frees it. */
static void job_wait(job_t *j) {
  pthread_mutex_lock(&j->mu);
  while (!j->done)
    pthread_cond_wait(&j->cv, &j->mu);
  pthread_mutex_unlock(&j->mu);
  j->f = NULL;
}

void lg_atomic_file_wait(lg_atomic_file_t *f) {
  for (;;) {
    int rc;
    const char *step;
    if (f->job != NULL) {
      job_t *j = f->job;
      job_wait(j);
      f->job = NULL;
      rc = j->rc;
      step = j->step;
    } else if (f->asked) {
      if ((rc = start(f, &step)) == 0)
        continue;
    } else {
      return;
    }
    if (end(f, rc, step))
      return;
  }
}

void lg_atomic_file_destroy(lg_atomic_file_t *f) {
  if (f == NULL)
    return;
  if (f->job != NULL) {
    job_wait(f->job);
    f->job = NULL;
  }
  f->asked = 0;
  if (f->in_done > 0)
    f->destroyed = 1;
  else
    free(f);
}
