/*
 * The `file` output, and the writer it shares with `stdout`.
 *
 * A writer appends JSON-line chunks to a file descriptor. The loop thread
 * only queues chunks and acks them; write(2), fsync and open run in the
 * libuv threadpool, one job at a time per output so that bytes land in
 * submit order. A job takes every chunk queued when it starts and writes
 * them with writev, so a busy output makes few, large system calls.
 *
 * Failures: a write error is retried with exponential backoff and jitter
 * (never acked as failed), except for the stdout errors that cannot heal
 * (EPIPE, EBADF). For files, bytes of a failed attempt are cut off again
 * with ftruncate, so a retry never leaves half a line in the middle of the
 * file; when the cut itself fails the retry resumes after the bytes already
 * written instead, which completes the line.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "config/lg_config.h"
#include "core/lg_log.h"
#include "outputs/lg_output.h"

enum { FSYNC_NEVER = 0, FSYNC_INTERVAL = 1, FSYNC_ALWAYS = 2 };

#define BACKOFF_BASE_MS 100
#define BACKOFF_MAX_MS 30000
/* How often an idle file output checks whether its file was moved or
 * deleted, when no fsync interval sets the pace. */
#define ROTATE_CHECK_MS 1000

typedef struct chunk {
  const char *data;
  size_t len;
  uint32_t nrecs;
  void *ref;
} chunk_t;

typedef struct fdw {
  lg_output_t *o;
  char component[128]; /* "output.<name>" for lg_log */
  char *path;          /* NULL: standard output */
  int fd;              /* -1 when no file is open */
  int stdout_mode;
  mode_t mode;
  int fsync_policy;
  uint64_t fsync_interval_ms;
  dev_t dev; /* identity of the open file, to notice renames */
  ino_t ino;

  /* Chunks not acked yet, q[head..tail), in submit order (loop thread). */
  chunk_t *q;
  size_t head, tail, cap;

  /* The job in the threadpool. While `busy`, the fields below are the
   * thread's; the loop reads them again in after_work. */
  uv_work_t work;
  int busy;
  struct iovec *iov; /* copy of the job's chunks: the queue may move */
  size_t iov_cap;
  size_t job_n;      /* chunks in the job, from q[head] */
  uint64_t job_done; /* bytes of those chunks already written */
  int job_written;   /* all written; only an fsync (ALWAYS) is left */
  int job_reopen, job_sync, job_final;
  int job_err;        /* 0 or -errno of the failed step */
  const char *job_op; /* that step, for messages: "open", "write"... */
  int job_sync_err;   /* a periodic fsync failed (data was acked already) */
  int dirty; /* written since the last fsync (thread side) */

  /* Loop-thread state. */
  int reopen_requested, sync_due, check_due;
  int retry_pending;
  unsigned streak; /* failed attempts in a row */
  int closing, abandoned, final_done;
  int handles_open;
  uv_timer_t retry_timer, tick_timer;
  uint64_t rng;
} fdw_t;

static const char *const fsync_choices = "never|interval|always";

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
     .doc = "File to append JSON lines to; parent directories are created."},
    {.name = "fsync",
     .type = LG_OPT_ENUM,
     .def = "interval",
     .choices = "never|interval|always",
     .doc = "When to fsync: never, every fsync_interval, or before each ack "
            "(always)."},
    {.name = "fsync_interval",
     .type = LG_OPT_DURATION,
     .def = "1s",
     .check = lg_opt_check_positive,
     .doc = "Time between fsyncs with fsync = \"interval\"."},
    {.name = "mode",
     .type = LG_OPT_STRING,
     .def = "0640",
     .check = check_mode,
     .doc = "Permissions of a newly created file, in octal (umask applies)."},
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
  if (!w->stdout_mode && !w->job_final && w->job_done == 0 && !w->job_written) {
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
  if (w->job_n > 0 && !w->job_written) {
    int rc = write_job(w);
    if (rc < 0) {
      w->job_err = rc;
      w->job_op = "write";
      return;
    }
    w->job_written = 1;
    w->dirty = 1;
  }
  if (w->job_n > 0 && w->fsync_policy == FSYNC_ALWAYS && w->dirty) {
    if (fdatasync(w->fd) < 0 && errno != EINVAL) {
      /* EINVAL: the fd (a pipe, /dev/null) cannot be synced at all. */
      w->job_err = -errno;
      w->job_op = "fsync";
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

static void retry_cb(uv_timer_t *t) {
  fdw_t *w = t->data;
  w->retry_pending = 0;
  kick(w);
}

static void handle_closed(uv_handle_t *h) {
  fdw_t *w = h->data;
  if (--w->handles_open > 0)
    return;
  lg_output_t *o = w->o;
  free(w->q);
  free(w->iov);
  free(w->path);
  free(w);
  o->impl = NULL;
  lg__output_closed(o);
}

static void finish(fdw_t *w) {
  w->final_done = 1;
  if (!w->stdout_mode && w->fd >= 0) {
    /* Only after abandon: the final job closes the file otherwise. */
    close(w->fd);
    w->fd = -1;
  }
  uv_close((uv_handle_t *)&w->retry_timer, handle_closed);
  uv_close((uv_handle_t *)&w->tick_timer, handle_closed);
}

/* Full jitter over the upper half: the delay is between d/2 and d, with d
 * doubling per failed attempt up to BACKOFF_MAX_MS, so outputs that failed
 * together do not retry in lockstep. */
static uint64_t backoff_ms(fdw_t *w) {
  uint64_t d = BACKOFF_BASE_MS;
  for (unsigned i = 1; i < w->streak && d < BACKOFF_MAX_MS; i++)
    d *= 2;
  if (d > BACKOFF_MAX_MS)
    d = BACKOFF_MAX_MS;
  w->rng ^= w->rng << 13;
  w->rng ^= w->rng >> 7;
  w->rng ^= w->rng << 17;
  return d / 2 + w->rng % (d / 2 + 1);
}

static int is_permanent(const fdw_t *w, int err) {
  /* A file can come back (space freed, disk remounted, path recreated);
   * a closed stdout cannot. */
  return w->stdout_mode && (err == -EPIPE || err == -EBADF || err == -EINVAL);
}

static const char *target(const fdw_t *w) {
  return w->path != NULL ? w->path : "stdout";
}

static void ack_front(fdw_t *w, size_t n, int status) {
  lg_output_t *o = w->o;
  for (size_t i = 0; i < n; i++) {
    chunk_t c = w->q[w->head++];
    o->ack(o->ack_ud, c.ref, status);
  }
  if (w->head == w->tail)
    w->head = w->tail = 0;
}

static void after_work_cb(uv_work_t *req, int status) {
  fdw_t *w = req->data;
  lg_output_t *o = w->o;
  (void)status; /* jobs are never cancelled */
  if (w->job_sync_err < 0) {
    o->errors++;
    lg_log_error(w->component, "%s: fsync: %s", target(w),
                 strerror(-w->job_sync_err));
  }
  if (w->job_err == 0) {
    if (w->streak > 0)
      lg_log_info(w->component, "%s: writing again after %u failed attempts",
                  target(w), w->streak);
    w->streak = 0;
    size_t n = w->job_n;
    for (size_t i = 0; i < n; i++) {
      o->records_out += w->q[w->head + i].nrecs;
      o->bytes_out += w->q[w->head + i].len;
    }
    w->job_n = 0;
    w->job_done = 0;
    w->job_written = 0;
    if (w->job_final)
      w->final_done = 1;
    /* Still busy while acking: an ack callback may submit or close, and
     * must not start a job over chunks that are being popped. */
    ack_front(w, n, 0);
    w->busy = 0;
    if (w->final_done)
      finish(w);
    else
      kick(w);
    return;
  }
  o->errors++;
  if (is_permanent(w, w->job_err)) {
    lg_log_error(w->component, "%s: %s: %s; %zu chunk(s) failed", target(w),
                 w->job_op, strerror(-w->job_err), w->job_n);
    size_t n = w->job_n;
    w->job_n = 0;
    w->job_done = 0;
    w->job_written = 0;
    ack_front(w, n, w->job_err);
    w->busy = 0;
    kick(w);
    return;
  }
  if (w->streak == 0)
    lg_log_warn(w->component, "%s: %s: %s; retrying with backoff", target(w),
                w->job_op, strerror(-w->job_err));
  w->streak++;
  w->busy = 0;
  if (w->abandoned) {
    kick(w);
    return;
  }
  o->retries++;
  w->retry_pending = 1;
  uv_timer_start(&w->retry_timer, retry_cb, backoff_ms(w), 0);
}

static void start_job(fdw_t *w) {
  /* A retry may take chunks queued since (its progress counts from the
   * first chunk, so it still applies), unless everything was written and
   * only the fsync is left. */
  size_t n = w->job_written ? w->job_n : w->tail - w->head;
  if (n > w->iov_cap) {
    size_t cap = w->iov_cap ? w->iov_cap : 64;
    while (cap < n)
      cap *= 2;
    struct iovec *iv = realloc(w->iov, cap * sizeof *iv);
    if (iv == NULL) {
      /* Try again shortly; the chunks stay queued. */
      w->retry_pending = 1;
      uv_timer_start(&w->retry_timer, retry_cb, 100, 0);
      return;
    }
    w->iov = iv;
    w->iov_cap = cap;
  }
  for (size_t i = 0; i < n; i++) {
    w->iov[i].iov_base = (void *)w->q[w->head + i].data;
    w->iov[i].iov_len = w->q[w->head + i].len;
  }
  w->job_n = n;
  w->job_reopen = 0;
  if (w->job_done == 0 && w->reopen_requested) {
    w->job_reopen = 1;
    w->reopen_requested = 0;
  }
  w->job_sync = w->sync_due;
  w->sync_due = 0;
  w->check_due = 0;
  w->job_final = n == 0 && w->closing;
  w->busy = 1;
  w->work.data = w;
  int rc = uv_queue_work(w->o->loop, &w->work, work_cb, after_work_cb);
  if (rc < 0) {
    w->busy = 0;
    lg_log_error(w->component, "%s: uv_queue_work: %s", target(w),
                 uv_strerror(rc));
    w->retry_pending = 1;
    uv_timer_start(&w->retry_timer, retry_cb, 100, 0);
  }
}

static void kick(fdw_t *w) {
  if (w->busy || w->retry_pending || w->final_done)
    return;
  if (w->abandoned) {
    finish(w);
    return;
  }
  if (w->tail > w->head) {
    start_job(w);
    return;
  }
  if (w->closing) {
    if (w->stdout_mode)
      finish(w);
    else
      start_job(w); /* final: fsync and close */
    return;
  }
  if (!w->stdout_mode && (w->reopen_requested || w->sync_due || w->check_due))
    start_job(w);
}

static void tick_cb(uv_timer_t *t) {
  fdw_t *w = t->data;
  if (w->fsync_policy == FSYNC_INTERVAL)
    w->sync_due = 1;
  w->check_due = 1;
  kick(w);
}

/* Allocates the writer shared by both types; fdw_start adds its timers
 * once nothing can fail any more. */
static fdw_t *fdw_new(lg_output_t *o, char *err, size_t errlen) {
  fdw_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", o->conf->name);
    return NULL;
  }
  w->o = o;
  w->fd = -1;
  snprintf(w->component, sizeof w->component, "output.%s", o->conf->name);
  w->rng = (uint64_t)(uintptr_t)w ^ (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15u;
  if (w->rng == 0)
    w->rng = 1;
  return w;
}

static void fdw_start(fdw_t *w) {
  uv_loop_t *loop = w->o->loop;
  uv_timer_init(loop, &w->retry_timer);
  uv_timer_init(loop, &w->tick_timer);
  w->retry_timer.data = w;
  w->tick_timer.data = w;
  w->handles_open = 2;
  /* The tick only does housekeeping; it must not keep a loop alive. */
  uv_unref((uv_handle_t *)&w->tick_timer);
  w->o->impl = w;
}

int lg__output_fd_init_stdout(lg_output_t *o, char *err, size_t errlen) {
  /* A reader that went away must give EPIPE (acked as failed), not kill
   * the collector. Only the default disposition is changed. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
  fdw_t *w = fdw_new(o, err, errlen);
  if (w == NULL)
    return -ENOMEM;
  w->stdout_mode = 1;
  w->fd = STDOUT_FILENO;
  w->fsync_policy = FSYNC_NEVER;
  fdw_start(w);
  return 0;
}

static int file_init(lg_output_t *o, char *err, size_t errlen) {
  const lg_optval_t *path = lg_output_opt(o, "path");
  const lg_optval_t *fs = lg_output_opt(o, "fsync");
  const lg_optval_t *iv = lg_output_opt(o, "fsync_interval");
  const lg_optval_t *mode = lg_output_opt(o, "mode");
  if (path == NULL || path->s == NULL || path->s[0] == '\0') {
    snprintf(err, errlen, "outputs.%s.path: required", o->conf->name);
    return -EINVAL;
  }
  fdw_t *w = fdw_new(o, err, errlen);
  if (w == NULL)
    return -ENOMEM;
  w->path = strdup(path->s);
  w->fsync_policy = fs != NULL && fs->s != NULL
                        ? lg_opt_parse_enum(fsync_choices, fs->s)
                        : FSYNC_INTERVAL;
  if (w->fsync_policy < 0)
    w->fsync_policy = FSYNC_INTERVAL;
  w->fsync_interval_ms = iv != NULL && iv->i > 0 ? (uint64_t)iv->i : 1000;
  w->mode = 0640;
  if (mode != NULL && mode->s != NULL && parse_mode(mode->s, &w->mode) < 0) {
    snprintf(err, errlen, "outputs.%s.mode: bad mode \"%s\"", o->conf->name,
             mode->s);
    free(w->path);
    free(w);
    return -EINVAL;
  }
  if (w->path == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", o->conf->name);
    free(w);
    return -ENOMEM;
  }
  /* Opened here, on the loop thread, so that a bad path fails the start
   * with a clear message instead of retrying in the background. */
  int rc = open_file(w);
  if (rc < 0) {
    snprintf(err, errlen, "outputs.%s: %s: %s", o->conf->name, w->path,
             strerror(-rc));
    free(w->path);
    free(w);
    return rc;
  }
  fdw_start(w);
  uint64_t tick = w->fsync_policy == FSYNC_INTERVAL ? w->fsync_interval_ms
                                                    : ROTATE_CHECK_MS;
  uv_timer_start(&w->tick_timer, tick_cb, tick, tick);
  return 0;
}

int lg__output_fd_submit(lg_output_t *o, const char *data, size_t len,
                         uint32_t nrecs, void *ref) {
  fdw_t *w = o->impl;
  if (w->closing)
    return -ESHUTDOWN;
  if (w->tail == w->cap) {
    if (w->head > 0) {
      memmove(w->q, w->q + w->head, (w->tail - w->head) * sizeof *w->q);
      w->tail -= w->head;
      w->head = 0;
    } else {
      size_t cap = w->cap ? w->cap * 2 : 64;
      chunk_t *q = realloc(w->q, cap * sizeof *q);
      if (q == NULL)
        return -ENOMEM;
      w->q = q;
      w->cap = cap;
    }
  }
  w->q[w->tail++] =
      (chunk_t){.data = data, .len = len, .nrecs = nrecs, .ref = ref};
  kick(w);
  return 0;
}

static void file_reopen(lg_output_t *o) {
  fdw_t *w = o->impl;
  w->reopen_requested = 1;
  kick(w);
}

void lg__output_fd_exit(lg_output_t *o) {
  fdw_t *w = o->impl;
  w->closing = 1;
  uv_timer_stop(&w->tick_timer);
  kick(w);
}

void lg__output_fd_abandon(lg_output_t *o) {
  fdw_t *w = o->impl;
  if (w == NULL || w->final_done)
    return;
  w->abandoned = 1;
  if (w->retry_pending) {
    uv_timer_stop(&w->retry_timer);
    w->retry_pending = 0;
  }
  if (w->tail > w->head)
    lg_log_warn(w->component, "%s: gave up on %zu unwritten chunks at exit",
                target(w), w->tail - w->head);
  kick(w);
}

const lg_output_type_t lg__output_file = {
    .name = "file",
    .options = file_options,
    .init = file_init,
    .submit = lg__output_fd_submit,
    .reopen = file_reopen,
    .exit = lg__output_fd_exit,
    .abandon = lg__output_fd_abandon,
};
