/*
 * lg_inotify.c - inotify(7) on a libuv loop (Linux only).
 */
#include "core/lg_inotify.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "core/lg_log.h"
#include "core/lg_util.h"

#define WATCH_MASK                                                             \
  (IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO |      \
   IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR |        \
   IN_EXCL_UNLINK)

typedef struct watch {
  int wd;
  char *dir;
  size_t dirlen;
} watch_t;

struct lg_inotify {
  uv_poll_t poll;
  int fd;
  lg_inotify_cb cb;
  void *ud;
  /* Sorted by wd. The kernel hands out increasing wds, so appends are the
   * common case and lookups are a binary search. */
  watch_t *w;
  size_t n, cap;
  int drop_next;
  void (*close_cb)(void *);
  void *close_ud;
  char path[PATH_MAX + NAME_MAX + 2];
};

static watch_t *find_wd(lg_inotify_t *w, int wd, size_t *pos) {
  size_t lo = 0, hi = w->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (w->w[mid].wd < wd)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (pos != NULL)
    *pos = lo;
  return lo < w->n && w->w[lo].wd == wd ? &w->w[lo] : NULL;
}

static void forget_wd(lg_inotify_t *w, int wd) {
  size_t pos;
  watch_t *x = find_wd(w, wd, &pos);
  if (x == NULL)
    return;
  free(x->dir);
  memmove(&w->w[pos], &w->w[pos + 1], (w->n - pos - 1) * sizeof *w->w);
  w->n--;
}

static uint32_t to_events(uint32_t m) {
  uint32_t e = 0;
  if (m & (IN_CREATE | IN_MOVED_TO))
    e |= LG_INOTIFY_APPEARED;
  if (m & (IN_DELETE | IN_MOVED_FROM))
    e |= LG_INOTIFY_GONE;
  if (m & (IN_MODIFY | IN_CLOSE_WRITE))
    e |= LG_INOTIFY_MODIFIED;
  if (m & IN_ATTRIB)
    e |= LG_INOTIFY_ATTRIB;
  if (m & IN_ISDIR)
    e |= LG_INOTIFY_ISDIR;
  return e;
}

static void handle(lg_inotify_t *w, const struct inotify_event *ev) {
  if (ev->mask & IN_Q_OVERFLOW) {
    w->cb(w->ud, NULL, NULL, LG_INOTIFY_OVERFLOW);
    return;
  }
  watch_t *x = find_wd(w, ev->wd, NULL);
  if (x == NULL)
    return; /* events still queued for a watch already removed */
  if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) {
    /* The directory is gone (or moved, so its path is wrong now). Report
     * it before the watch is dropped so the caller can rescan. */
    snprintf(w->path, sizeof w->path, "%s", x->dir);
    w->cb(w->ud, w->path, w->path, LG_INOTIFY_DIR_GONE);
    x = find_wd(w, ev->wd, NULL);
    if (x != NULL) {
      if (!(ev->mask & IN_IGNORED))
        inotify_rm_watch(w->fd, ev->wd); /* IN_IGNORED follows */
      forget_wd(w, ev->wd);
    }
    return;
  }
  if (ev->len == 0)
    return;
  size_t nlen = strlen(ev->name);
  if (x->dirlen + 1 + nlen + 1 > sizeof w->path)
    return;
  /* "." as the directory (a relative glob) joins to the bare name, so the
   * path matches what glob(3) returns for the same pattern. */
  size_t off = 0;
  if (!(x->dirlen == 1 && x->dir[0] == '.')) {
    memcpy(w->path, x->dir, x->dirlen);
    off = x->dirlen;
    if (off == 0 || w->path[off - 1] != '/')
      w->path[off++] = '/';
  }
  memcpy(w->path + off, ev->name, nlen + 1);
  w->cb(w->ud, w->path, x->dir, to_events(ev->mask));
}

static void on_readable(uv_poll_t *h, int status, int events) {
  lg_inotify_t *w = h->data;
  /* Aligned for struct inotify_event; large enough for many events per
   * read(2). */
  char buf[64 * 1024]
      __attribute__((aligned(__alignof__(struct inotify_event))));
  if (status < 0) {
    lg_log_error("source", "inotify: poll: %s", uv_strerror(status));
    return;
  }
  for (;;) {
    ssize_t n = read(w->fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; /* EAGAIN: drained */
    if (w->drop_next) {
      w->drop_next = 0;
      w->cb(w->ud, NULL, NULL, LG_INOTIFY_OVERFLOW);
      continue;
    }
    for (char *p = buf; p < buf + n;) {
      const struct inotify_event *ev = (const struct inotify_event *)p;
      p += sizeof *ev + ev->len;
      handle(w, ev);
      if (w->fd < 0)
        return; /* closed from the callback */
    }
  }
}

lg_inotify_t *lg_inotify_create(uv_loop_t *loop, lg_inotify_cb cb, void *ud,
                                int *err) {
  lg_inotify_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    *err = -ENOMEM;
    return NULL;
  }
  w->cb = cb;
  w->ud = ud;
  w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (w->fd < 0) {
    *err = -errno;
    free(w);
    return NULL;
  }
  int rc = uv_poll_init(loop, &w->poll, w->fd);
  if (rc == 0)
    rc = uv_poll_start(&w->poll, UV_READABLE, on_readable);
  if (rc != 0) {
    /* uv_poll_init can only fail before the handle is registered. */
    close(w->fd);
    free(w);
    *err = rc;
    return NULL;
  }
  w->poll.data = w;
  return w;
}

int lg_inotify_watch(lg_inotify_t *w, const char *dir) {
  int wd = inotify_add_watch(w->fd, dir, WATCH_MASK);
  if (wd < 0)
    return -errno;
  size_t pos;
  if (find_wd(w, wd, &pos) != NULL)
    return 0; /* the same directory, perhaps by another name */
  if (LG_GROW(w->w, w->cap, w->n + 1, 16) != 0) {
    inotify_rm_watch(w->fd, wd);
    return -ENOMEM;
  }
  size_t len = strlen(dir);
  /* Keep "/" as is; drop any other trailing slash so joins are clean. */
  while (len > 1 && dir[len - 1] == '/')
    len--;
  char *copy = malloc(len + 1);
  if (copy == NULL) {
    inotify_rm_watch(w->fd, wd);
    return -ENOMEM;
  }
  memcpy(copy, dir, len);
  copy[len] = '\0';
  memmove(&w->w[pos + 1], &w->w[pos], (w->n - pos) * sizeof *w->w);
  w->w[pos] = (watch_t){wd, copy, len};
  w->n++;
  return 0;
}

int lg_inotify_watching(const lg_inotify_t *w, const char *dir) {
  size_t len = strlen(dir);
  while (len > 1 && dir[len - 1] == '/')
    len--;
  for (size_t i = 0; i < w->n; i++)
    if (w->w[i].dirlen == len && memcmp(w->w[i].dir, dir, len) == 0)
      return 1;
  return 0;
}

size_t lg_inotify_count(const lg_inotify_t *w) { return w ? w->n : 0; }

static void on_closed(uv_handle_t *h) {
  lg_inotify_t *w = h->data;
  void (*cb)(void *) = w->close_cb;
  void *ud = w->close_ud;
  for (size_t i = 0; i < w->n; i++)
    free(w->w[i].dir);
  free(w->w);
  free(w);
  if (cb != NULL)
    cb(ud);
}

typedef struct fd_close {
  uv_work_t work;
  int fd;
} fd_close_t;

static void close_fd_work(uv_work_t *req) {
  close(((fd_close_t *)req->data)->fd);
}

static void close_fd_done(uv_work_t *req, int status) {
  (void)status;
  free(req->data);
}

/* Closing an inotify descriptor that has watches waits for an SRCU grace
 * period in the kernel (fsnotify's mark reaper): 8-16 ms here, measured,
 * each, one after another. On libuv's threadpool the closes of several
 * instances overlap and the loop goes on meanwhile; the loop stays alive
 * until they are done, so the process still exits after them. */
static void close_fd_async(uv_loop_t *loop, int fd) {
  fd_close_t *c = malloc(sizeof *c);
  if (c != NULL) {
    c->fd = fd;
    c->work.data = c;
    if (uv_queue_work(loop, &c->work, close_fd_work, close_fd_done) == 0)
      return;
    free(c);
  }
  close(fd);
}

void lg_inotify_close(lg_inotify_t *w, void (*cb)(void *ud), void *ud) {
  if (w == NULL)
    return;
  w->close_cb = cb;
  w->close_ud = ud;
  uv_poll_stop(&w->poll);
  /* libuv requires the fd to stay open until the poll handle is closed;
   * closing it right after uv_close is documented as safe. */
  uv_close((uv_handle_t *)&w->poll, on_closed);
  close_fd_async(w->poll.loop, w->fd);
  w->fd = -1;
}

void lg__inotify_drop_next(lg_inotify_t *w) { w->drop_next = 1; }
