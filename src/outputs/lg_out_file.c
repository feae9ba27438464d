/*
 * The `file` output, and the writer it shares with `stdout`
 * (lg_out_stdout.c), on the shared delivery layer (lg_output.h).
 *
 * The delivery layer hands the writer one request at a time
 * (max_in_flight is 1: bytes must land in submit order). write(2), fsync
 * and open run in the libuv threadpool, so the loop never blocks on the
 * disk or on a stalled reader; the request's records go out with writev,
 * in a few large system calls. Between requests, the same job runs the
 * housekeeping: fsync every fsync_interval, and reopening the file when it
 * was moved or deleted (logrotate) or on SIGHUP.
 *
 * Failures: a write error is answered "retry" (the layer backs off and
 * sends the records again, first), except for the stdout errors that
 * cannot heal (EPIPE, EBADF, EINVAL: "rejected", so the records go to the
 * dead-letter output). For files, bytes of a failed attempt are cut off
 * again with ftruncate, so a retry never leaves half a line in the middle
 * of the file; when the cut itself fails, the records written whole are
 * answered delivered and the retry resumes after the bytes of the next
 * one that are already written, which completes its line.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "config/lg_config.h"
#include "core/lg_log.h"
#include "outputs/lg_output.h"

enum { FSYNC_NEVER = 0, FSYNC_INTERVAL = 1, FSYNC_ALWAYS = 2 };

/* How often an idle file output checks whether its file was moved or
 * deleted, when no fsync interval sets the pace. */
#define ROTATE_CHECK_MS 1000

/* The typed config of `file` (and of `stdout`, which uses the limits). */
typedef struct file_conf {
  lg_out_limits_t limits;
  char *path;
  int fsync; /* FSYNC_* */
  int64_t fsync_interval_ms;
  char *mode;
} file_conf_t;

typedef struct fdw {
  lg_output_t *o;
  char component[128]; /* "output.<name>" for lg_log */
  const char *path;    /* NULL: standard output */
  int fd;              /* -1 when no file is open */
  int stdout_mode;
  mode_t mode;
  int fsync_policy;
  uint64_t fsync_interval_ms;
  dev_t dev; /* identity of the open file, to notice renames */
  ino_t ino;

  lg_out_req_t *req;  /* the request being written, NULL when none */
  lg_out_req_t *next; /* sent while a housekeeping job ran */

  /* The job in the threadpool. While `busy`, the fields below are the
   * thread's; the loop reads them again in after_work. */
  uv_work_t work;
  int busy;
  struct iovec *iov; /* the job's pieces (a copy: the thread skips in it) */
  size_t iov_cap;
  size_t job_n;      /* pieces in the job */
  uint64_t job_done; /* bytes of those pieces already written */
  int job_reopen, job_sync, job_final;
  int job_err;        /* 0 or -errno of the failed step */
  const char *job_op; /* that step, for messages: "open", "write"... */
  int job_sync_err;   /* a periodic fsync failed (data was acked already) */
  int dirty;          /* written since the last fsync (thread side) */

  /* A failed write that could not be cut back: the first record of the
   * retry starts at `resume_at`, of which `resume_skip` bytes are in the
   * file already. */
  const char *resume_at;
  uint64_t resume_skip;

  /* Loop-thread state. */
  int reopen_requested, sync_due, check_due;
  int closing, final_done;
  int handles_open;
  uv_timer_t tick_timer;
} fdw_t;

/* A permission mode in octal, as chmod(1) takes it: "0640", "644". */
static int parse_mode(const char *s, mode_t *out) {
  size_t n = strlen(s);
  if (n == 0 || n > 5)
    return -EINVAL;
  unsigned m = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '7')
      return -EINVAL;
    m = m * 8 + (unsigned)(s[i] - '0');
  }
  if (m > 07777)
    return -EINVAL;
  *out = (mode_t)m;
  return 0;
}

static int check_mode(const lg_optval_t *v, char *err, size_t errlen) {
  mode_t m;
  if (v->s == NULL || parse_mode(v->s, &m) < 0) {
    snprintf(err, errlen,
             "expected an octal permission mode as a string like \"0640\", "
             "got \"%s\"",
             v->s != NULL ? v->s : "");
    return -EINVAL;
  }
  return 0;
}

static const lg_option_t file_options[] = {
    {.name = "path",
     .type = LG_OPT_PATH,
     .required = 1,
     .check = lg_opt_check_nonempty,
     .doc = "File to append JSON lines to; parent directories are created.",
     .offset = offsetof(file_conf_t, path)},
    {.name = "fsync",
     .type = LG_OPT_ENUM,
     .def = "interval",
     .choices = "never|interval|always",
     .doc = "When to fsync: never, every fsync_interval, or before each ack "
            "(always).",
     .offset = offsetof(file_conf_t, fsync)},
    {.name = "fsync_interval",
     .type = LG_OPT_DURATION,
     .def = "1s",
     .check = lg_opt_check_positive,
     .doc = "Time between fsyncs with fsync = \"interval\".",
     .offset = offsetof(file_conf_t, fsync_interval_ms)},
    {.name = "mode",
     .type = LG_OPT_STRING,
     .def = "0640",
     .check = check_mode,
     .doc = "Permissions of a newly created file, in octal (umask applies).",
     .offset = offsetof(file_conf_t, mode)},
    LG_OUT_DELIVERY_OPTIONS(file_conf_t, "100000", "16MiB", "0", "1", "0"),
    {.name = NULL},
};

/* ---- thread side ---------------------------------------------------- */

/* Creates the directories above `path` (like mkdir -p on its dirname). */
static int mkdir_parents(const char *path) {
  char *p = strdup(path);
  if (p == NULL)
    return -ENOMEM;
  int rc = 0;
  for (char *s = strchr(p + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
    *s = '\0';
    if (mkdir(p, 0755) < 0 && errno != EEXIST) {
      rc = -errno;
      *s = '/';
      break;
    }
    *s = '/';
  }
  free(p);
  return rc;
}

/* A crash can leave the last line half written. Cuts a regular file back
 * to just after its last "\n" so the file holds whole JSON lines only. */
static int repair_tail(fdw_t *w, int fd, off_t size) {
  if (size == 0)
    return 0;
  char buf[65536];
  off_t end = size;
  while (end > 0) {
    size_t n = end >= (off_t)sizeof buf ? sizeof buf : (size_t)end;
    off_t start = end - (off_t)n;
    ssize_t r = pread(fd, buf, n, start);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if ((size_t)r != n)
      return -EIO; /* the file shrank under us; try again on next open */
    if (end == size && buf[n - 1] == '\n')
      return 0; /* the usual case: ends with a whole line */
    char *nl = memrchr(buf, '\n', n);
    if (nl != NULL) {
      end = start + (nl - buf) + 1;
      break;
    }
    end = start;
  }
  if (ftruncate(fd, end) < 0)
    return -errno;
  lg_log_warn(w->component,
              "%s: cut %lld bytes of an incomplete last line (left by a "
              "crash or another writer)",
              w->path, (long long)(size - end));
  return 0;
}

static int open_file(fdw_t *w) {
  int rc = mkdir_parents(w->path);
  if (rc < 0)
    return rc;
  /* Read access is for repair_tail only; a file we may append to but not
   * read is still written, just not repaired. */
  int readable = 1;
  int fd = open(w->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, w->mode);
  if (fd < 0 && errno == EACCES) {
    readable = 0;
    fd = open(w->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, w->mode);
  }
  if (fd < 0)
    return -errno;
  struct stat st;
  if (fstat(fd, &st) < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  if (readable && S_ISREG(st.st_mode) &&
      (rc = repair_tail(w, fd, st.st_size)) < 0) {
    close(fd);
    return rc;
  }
  w->fd = fd;
  w->dev = st.st_dev;
  w->ino = st.st_ino;
  return 0;
}

static void close_file(fdw_t *w) {
  if (w->fd < 0)
    return;
  if (w->dirty && w->fsync_policy != FSYNC_NEVER && fdatasync(w->fd) < 0)
    w->job_sync_err = -errno;
  w->dirty = 0;
  close(w->fd);
  w->fd = -1;
}

/* 1 if the path no longer names the open file (logrotate moved or
 * deleted it). */
static int file_moved(const fdw_t *w) {
  struct stat st;
  if (stat(w->path, &st) < 0)
    return errno == ENOENT;
  return st.st_dev != w->dev || st.st_ino != w->ino;
}

/* Writes the job's chunks from byte job_done on. */
static int write_job(fdw_t *w) {
  size_t ci = 0;
  uint64_t skip = w->job_done;
  while (ci < w->job_n && skip >= w->iov[ci].iov_len) {
    skip -= w->iov[ci].iov_len;
    ci++;
  }
  off_t start_size = -1;
  if (w->job_done == 0 && !w->stdout_mode) {
    struct stat st;
    if (fstat(w->fd, &st) == 0 && S_ISREG(st.st_mode))
      start_size = st.st_size;
  }
  struct iovec v[IOV_MAX];
  while (ci < w->job_n) {
    int cnt = 0;
    for (size_t k = ci; k < w->job_n && cnt < IOV_MAX; k++, cnt++) {
      v[cnt] = w->iov[k];
      if (k == ci) {
        v[cnt].iov_base = (char *)v[cnt].iov_base + skip;
        v[cnt].iov_len -= skip;
      }
    }
    ssize_t r = writev(w->fd, v, cnt);
    if (r < 0) {
      int e = errno;
      if (e == EINTR)
        continue;
      if (e == EAGAIN) {
        /* A non-blocking stdout inherited from the parent: wait here, in
         * the threadpool, rather than spin. */
        struct pollfd p = {.fd = w->fd, .events = POLLOUT};
        poll(&p, 1, 1000);
        continue;
      }
      if (start_size >= 0 && ftruncate(w->fd, start_size) == 0)
        w->job_done = 0;
      return -e;
    }
    w->job_done += (uint64_t)r;
    uint64_t left = (uint64_t)r + skip;
    skip = 0;
    while (ci < w->job_n && left >= w->iov[ci].iov_len) {
      left -= w->iov[ci].iov_len;
      ci++;
    }
    skip = left;
  }
  return 0;
}

static void work_cb(uv_work_t *req) {
  fdw_t *w = req->data;
  w->job_err = 0;
  w->job_sync_err = 0;
  if (!w->stdout_mode && !w->job_final && w->job_done == 0) {
    if (w->fd >= 0 && (w->job_reopen || file_moved(w)))
      close_file(w);
    if (w->fd < 0) {
      int rc = open_file(w);
      if (rc < 0) {
        w->job_err = rc;
        w->job_op = "open";
        return;
      }
    }
  }
  if (w->job_n > 0) {
    int rc = write_job(w);
    if (rc < 0) {
      w->job_err = rc;
      w->job_op = "write";
      return;
    }
    w->dirty = 1;
  }
  if (w->job_n > 0 && w->fsync_policy == FSYNC_ALWAYS && w->dirty) {
    if (fdatasync(w->fd) < 0 && errno != EINVAL) {
      /* EINVAL: the fd (a pipe, /dev/null) cannot be synced at all. */
      w->job_err = -errno;
      w->job_op = "fsync";
      w->job_done = 0; /* not durable: the whole request is retried */
      return;
    }
    w->dirty = 0;
  }
  if (w->job_sync && w->dirty && w->fd >= 0 &&
      w->fsync_policy == FSYNC_INTERVAL) {
    if (fdatasync(w->fd) < 0 && errno != EINVAL)
      w->job_sync_err = -errno;
    w->dirty = 0;
  }
  if (w->job_final && !w->stdout_mode)
    close_file(w);
}

/* ---- loop side ------------------------------------------------------ */

static void kick(fdw_t *w);

static void handle_closed(uv_handle_t *h) {
  fdw_t *w = h->data;
  if (--w->handles_open > 0)
    return;
  lg_output_t *o = w->o;
  free(w->iov);
  free(w);
  o->impl = NULL;
  lg_output_closed(o);
}

static void finish(fdw_t *w) {
  w->final_done = 1;
  if (!w->stdout_mode && w->fd >= 0) {
    close(w->fd);
    w->fd = -1;
  }
  uv_close((uv_handle_t *)&w->tick_timer, handle_closed);
}

static int is_permanent(const fdw_t *w, int err) {
  /* A file can come back (space freed, disk remounted, path recreated);
   * a closed stdout cannot. */
  return w->stdout_mode && (err == -EPIPE || err == -EBADF || err == -EINVAL);
}

static const char *target(const fdw_t *w) {
  return w->path != NULL ? w->path : "stdout";
}

/* After a failed write that left `done` bytes of the request in the file:
 * the records written whole are delivered, the rest retried (the first of
 * them resumes after its bytes already written). */
static void answer_partial(fdw_t *w, lg_out_req_t *r, uint64_t done,
                           const char *why) {
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  if (recs == NULL) {
    /* Out of memory: retry all; the bytes already written repeat. */
    lg_out_req_done(r, LG_OUT_RETRY, why);
    return;
  }
  /* `done` counts from the request's first byte (a resumed first record
   * included). */
  uint64_t at = 0;
  w->resume_at = NULL;
  w->resume_skip = 0;
  for (uint32_t j = 0; j < r->n; j++) {
    if (at + recs[j].len <= done) {
      lg_out_req_set(r, j, LG_OUT_DELIVERED, NULL);
    } else {
      w->resume_at = recs[j].data;
      w->resume_skip = done - at;
      break;
    }
    at += recs[j].len;
  }
  lg_out_req_done(r, LG_OUT_RETRY, why);
}

static void after_work_cb(uv_work_t *req, int status) {
  fdw_t *w = req->data;
  lg_output_t *o = w->o;
  (void)status; /* jobs are never cancelled */
  w->busy = 0;
  if (w->job_sync_err < 0)
    lg_log_error(w->component, "%s: fsync: %s", target(w),
                 strerror(-w->job_sync_err));
  lg_out_req_t *r = w->req;
  w->req = NULL;
  if (w->job_final) {
    finish(w);
    return;
  }
  if (r != NULL) {
    char why[256];
    if (w->job_err == 0) {
      w->resume_at = NULL;
      w->resume_skip = 0;
      lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
    } else if (is_permanent(w, w->job_err)) {
      snprintf(why, sizeof why, "%s: %s: %s", target(w), w->job_op,
               strerror(-w->job_err));
      w->resume_at = NULL;
      lg_out_req_done(r, LG_OUT_REJECTED, why);
    } else {
      snprintf(why, sizeof why, "%s: %s: %s", target(w), w->job_op,
               strerror(-w->job_err));
      if (w->job_done > 0)
        answer_partial(w, r, w->job_done, why);
      else
        lg_out_req_done(r, LG_OUT_RETRY, why);
    }
  } else if (w->job_err < 0) {
    /* A housekeeping open failed: the next request tries again. */
    lg_log_warn(w->component, "%s: %s: %s", target(w), w->job_op,
                strerror(-w->job_err));
  }
  (void)o;
  kick(w);
}

/* Starts a job: the request `r` (NULL: housekeeping only). */
static void start_job(fdw_t *w, lg_out_req_t *r) {
  w->job_n = 0;
  w->job_done = 0;
  if (r != NULL) {
    const struct iovec *iov;
    int niov;
    if (lg_out_req_iov(r, &iov, &niov) != 0) {
      lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
      return;
    }
    if ((size_t)niov > w->iov_cap) {
      struct iovec *iv = realloc(w->iov, (size_t)niov * sizeof *iv);
      if (iv == NULL) {
        lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
        return;
      }
      w->iov = iv;
      w->iov_cap = (size_t)niov;
    }
    memcpy(w->iov, iov, (size_t)niov * sizeof *iov);
    w->job_n = (size_t)niov;
    /* Bytes of the first record a failed attempt left in the file. Only
     * a retry (attempt > 0) can resume it: a first try whose record lies
     * at the same address (memory reused) is another record. */
    if (w->resume_at != NULL && niov > 0 && r->attempt > 0 &&
        w->iov[0].iov_base == w->resume_at) {
      w->job_done = w->resume_skip;
    } else if (w->resume_at != NULL) {
      /* That record is not sent again (given up after max_retry_time):
       * its bytes are half a line at the end of the file. Reopening cuts
       * them (repair_tail) before another record is written after them;
       * if the cut fails again, the open fails and this request is
       * retried, never glued to the half line. */
      if (w->resume_skip > 0)
        w->reopen_requested = 1;
      w->resume_at = NULL;
      w->resume_skip = 0;
    }
  }
  w->req = r;
  w->job_reopen = 0;
  if (w->reopen_requested && w->job_done == 0) {
    w->job_reopen = 1;
    w->reopen_requested = 0;
  }
  w->job_sync = w->sync_due;
  w->sync_due = 0;
  w->check_due = 0;
  w->job_final = r == NULL && w->closing;
  w->busy = 1;
  w->work.data = w;
  int rc = uv_queue_work(w->o->loop, &w->work, work_cb, after_work_cb);
  if (rc < 0) {
    w->busy = 0;
    w->req = NULL;
    lg_log_error(w->component, "%s: uv_queue_work: %s", target(w),
                 uv_strerror(rc));
    if (r != NULL)
      lg_out_req_done(r, LG_OUT_RETRY, uv_strerror(rc));
  }
}

static void kick(fdw_t *w) {
  if (w->busy || w->final_done)
    return;
  if (w->next != NULL) {
    lg_out_req_t *r = w->next;
    w->next = NULL;
    start_job(w, r);
    return;
  }
  if (w->closing) {
    if (w->stdout_mode)
      finish(w);
    else
      start_job(w, NULL); /* final: fsync and close */
    return;
  }
  if (!w->stdout_mode && (w->reopen_requested || w->sync_due || w->check_due))
    start_job(w, NULL);
}

static void tick_cb(uv_timer_t *t) {
  fdw_t *w = t->data;
  if (w->fsync_policy == FSYNC_INTERVAL)
    w->sync_due = 1;
  w->check_due = 1;
  kick(w);
}

static void fd_send(lg_output_t *o, lg_out_req_t *r) {
  fdw_t *w = o->impl;
  if (w->busy) {
    w->next = r; /* after the housekeeping job */
    return;
  }
  start_job(w, r);
}

static void fd_close(lg_output_t *o) {
  fdw_t *w = o->impl;
  w->closing = 1;
  uv_timer_stop(&w->tick_timer);
  kick(w);
}

static void file_reopen(lg_output_t *o) {
  fdw_t *w = o->impl;
  w->reopen_requested = 1;
  kick(w);
}

/* Allocates the writer shared by both types (fd_check saw max_in_flight
 * = 1); fdw_start adds its timer once nothing can fail any more. */
static fdw_t *fdw_new(lg_output_t *o, char *err, size_t errlen) {
  fdw_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", o->name);
    return NULL;
  }
  w->o = o;
  w->fd = -1;
  snprintf(w->component, sizeof w->component, "output.%s", o->name);
  return w;
}

static void fdw_start(fdw_t *w) {
  uv_timer_init(w->o->loop, &w->tick_timer);
  w->tick_timer.data = w;
  w->handles_open = 1;
  /* The tick only does housekeeping; it must not keep a loop alive. */
  uv_unref((uv_handle_t *)&w->tick_timer);
  w->o->impl = w;
}

static int stdout_init(lg_output_t *o, const void *conf, char *err,
                       size_t errlen) {
  (void)conf;
  fdw_t *w = fdw_new(o, err, errlen);
  if (w == NULL)
    return -EINVAL;
  /* A reader that went away must give EPIPE (rejected), not kill the
   * collector. Only the default disposition is changed. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
  w->stdout_mode = 1;
  w->fd = STDOUT_FILENO;
  w->fsync_policy = FSYNC_NEVER;
  fdw_start(w);
  return 0;
}

static int file_init(lg_output_t *o, const void *conf, char *err,
                     size_t errlen) {
  const file_conf_t *fc = conf;
  fdw_t *w = fdw_new(o, err, errlen);
  if (w == NULL)
    return -EINVAL;
  w->path = fc->path;
  w->fsync_policy = fc->fsync >= 0 ? fc->fsync : FSYNC_INTERVAL;
  w->fsync_interval_ms = (uint64_t)fc->fsync_interval_ms;
  w->mode = 0640;
  if (fc->mode != NULL && parse_mode(fc->mode, &w->mode) < 0) {
    snprintf(err, errlen, "outputs.%s.mode: bad mode \"%s\"", o->name,
             fc->mode);
    free(w);
    return -EINVAL;
  }
  /* Opened here, on the loop thread, so that a bad path fails the start
   * with a clear message instead of retrying in the background. */
  int rc = open_file(w);
  if (rc < 0) {
    snprintf(err, errlen, "outputs.%s: %s: %s", o->name, w->path,
             strerror(-rc));
    free(w);
    return rc;
  }
  fdw_start(w);
  uint64_t tick = w->fsync_policy == FSYNC_INTERVAL ? w->fsync_interval_ms
                                                    : ROTATE_CHECK_MS;
  uv_timer_start(&w->tick_timer, tick_cb, tick, tick);
  return 0;
}

/* lg_output_type_t.check of both types. */
static int fd_check(const char *name, const void *conf, char *err,
                    size_t errlen) {
  const lg_out_limits_t *lim = conf;
  if (lim->max_in_flight != 1) {
    snprintf(err, errlen,
             "outputs.%s.max_in_flight: must be 1 for this output (lines "
             "are appended in order)",
             name);
    return -EINVAL;
  }
  return 0;
}

const lg_output_type_t lg__output_file = {
    .name = "file",
    .doc = "Appends JSON lines to a file; parent directories are created, "
           "a half-written last line (a crash) is cut, and the file is "
           "reopened when moved or deleted (logrotate) and on SIGHUP. "
           "max_in_flight must be 1: lines are appended in order.",
    .options = file_options,
    .conf_size = sizeof(file_conf_t),
    .check = fd_check,
    .init = file_init,
    .send = fd_send,
    .reopen = file_reopen,
    .close = fd_close,
};

static const lg_option_t stdout_options[] = {
    LG_OUT_DELIVERY_OPTIONS(file_conf_t, "100000", "16MiB", "0", "1", "0"),
    {.name = NULL},
};

/* The `stdout` output: JSON lines on standard output (fd 1), for
 * `kubectl logs` of a sidecar and for the quick start. Same writer, so a
 * stalled reader never blocks the loop. */
const lg_output_type_t lg__output_stdout = {
    .name = "stdout",
    .doc = "Writes JSON lines to standard output (writes run off the event "
           "loop, so a stalled reader never blocks it; a closed stdout "
           "rejects the records). max_in_flight must be 1.",
    .options = stdout_options,
    .conf_size = sizeof(file_conf_t),
    .rejects = 1,
    .check = fd_check,
    .init = stdout_init,
    .send = fd_send,
    .close = fd_close,
};
