/* Descriptors: closing idle files and reopening them by identity.
 *
 * A node can have more log files than lugger has descriptors (a DaemonSet
 * with `ulimit -n` 1024 on a node with thousands of containers' logs).
 * Files are therefore not kept open for ever:
 *
 * - Under pressure. At most max_open files are open at once (the soft
 *   RLIMIT_NOFILE less a reserve for sockets, outputs and state files).
 *   When a file is to be opened (a new one, or one closed before) and the
 *   limit is reached, the files idle the longest are closed first
 *   ("parked"): read to their end, nothing queued, not part of a rotation
 *   in progress.
 * - By time. A file idle for close_inactive is parked at the next rescan.
 *
 * A parked file keeps everything but its descriptor: offsets, checkpoint,
 * framer (a partial line), multiline groups, batch, its place in the path
 * and identity indexes. When it may have changed (an inotify event for its
 * path, a rescan that sees it grow) it is queued as any file, and its
 * read turn reopens it by path, checking that the path still shows the
 * same device and inode. If the path now shows another file or none (it
 * was rotated while closed: appended to, then renamed, before a
 * descriptor could be had for it, which at the descriptor limit can take
 * long), it is looked for in its directory by its inode, under any name
 * (a rotated name the globs do not match: app.log.1), reopened there and
 * read to its end like any rotated file; without a descriptor for the
 * search it stays parked and the search is tried again. Only a file that
 * is nowhere in its directory (deleted, or moved elsewhere) ends where it
 * was, which is logged with the offset.
 */
#include "sources/tail/lg_tail_internal.h"

#include <sys/resource.h>

/* Descriptors left for everything that is not a log file. */
#define FD_RESERVE 64

/* The most log files the soft limit `soft` leaves room for. */
static size_t budget(size_t soft) {
  size_t n = soft > 2 * FD_RESERVE ? soft - FD_RESERVE : soft / 2;
  return n < 8 ? 8 : n;
}

static size_t make_room(lg_tail_t *t, size_t want);

void lg__tail_fd_limits(lg_tail_t *t) {
  struct rlimit rl = {0, 0};
  size_t max = SIZE_MAX;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    max = budget((size_t)rl.rlim_cur);
  if (max == t->max_open)
    return;
  if (t->max_open != 0 && max == SIZE_MAX)
    lg_log_info("source", "the descriptor limit (RLIMIT_NOFILE) is off now: "
                          "log files are no longer closed to keep under it");
  else if (t->max_open != 0)
    lg_log_info("source",
                "the descriptor limit (RLIMIT_NOFILE) is %llu now: at most %zu "
                "log files are kept open (%zu are)",
                (unsigned long long)rl.rlim_cur, max, t->nopen);
  t->max_open = max;
  /* Lowered below what is open: the idle files go now, so that the
   * descriptors left are for sockets, outputs and state files, not taken
   * by the next log file opened. */
  if (t->nopen > t->max_open)
    make_room(t, t->nopen - t->max_open);
}

static int parkable(const file_t *f) {
  return !f->closed && f->fd >= 0 && f->at_eof && !f->queued && !f->gone &&
         f->pred == NULL && f->succ == NULL && !f->is_copy && !f->modify_hint;
}

void lg__tail_park(file_t *f) {
  lg_tail_t *t = f->t;
  close(f->fd);
  f->fd = -1;
  f->parked = 1;
  t->nopen--;
  t->nparked++;
}

static int by_last_data(const void *a, const void *b) {
  const file_t *x = *(file_t *const *)a, *y = *(file_t *const *)b;
  return x->last_data_ms < y->last_data_ms   ? -1
         : x->last_data_ms > y->last_data_ms ? 1
                                             : 0;
}

/* Parks up to `want` of the files idle the longest. Returns how many. */
static size_t make_room(lg_tail_t *t, size_t want) {
  size_t n = 0, cap = 0;
  file_t **c = NULL;
  for (file_t *f = t->files; f != NULL; f = f->next) {
    if (!parkable(f))
      continue;
    if (LG_GROW(c, cap, n + 1, 64) != 0)
      break;
    c[n++] = f;
  }
  if (n > want)
    qsort(c, n, sizeof *c, by_last_data);
  size_t k = n < want ? n : want;
  for (size_t i = 0; i < k; i++)
    lg__tail_park(c[i]);
  free(c);
  if (k > 0) {
    t->fd_parks++;
    /* Said once, then every 1000th time: a node at its limit parks often. */
    if (t->fd_parks == 1 || t->fd_parks % 1000 == 0)
      lg_log_warn("source",
                  "%zu log files open, the most this process's descriptor "
                  "limit allows (RLIMIT_NOFILE less %d): closed the %zu idle "
                  "the longest (checkpoints kept; reopened when they "
                  "change). %zu closed so far; raise `ulimit -n` to keep "
                  "more open",
                  t->nopen + k, FD_RESERVE, k, t->nparked);
  }
  return k;
}

int lg__tail_room_for_one(lg_tail_t *t) {
  if (t->nopen < t->max_open)
    return 1;
  /* Park a few at once: each search walks every file. */
  size_t want = t->nopen / 16;
  make_room(t, want < 16 ? 16 : want);
  return t->nopen < t->max_open;
}

int lg__tail_open_fd(lg_tail_t *t, const char *path) {
  if (!lg__tail_room_for_one(t)) {
    t->fd_short++;
    errno = EMFILE;
    return -1;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE) && make_room(t, 16) > 0)
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE))
    t->fd_short++;
  return fd;
}

/* Opens `path` if it shows f's device and inode: the fd, or -EMFILE (no
 * descriptor), -ESTALE (another file) or another -errno. */
static int open_same(file_t *f, const char *path) {
  int fd = lg__tail_open_fd(f->t, path);
  if (fd < 0)
    return errno == EMFILE || errno == ENFILE ? -EMFILE : -errno;
  struct stat st;
  if (fstat(fd, &st) != 0 || (uint64_t)st.st_dev != f->dev ||
      (uint64_t)st.st_ino != f->ino) {
    close(fd);
    return -ESTALE;
  }
  return fd;
}

/* A parked file its path no longer shows: looked for in its directory by
 * inode (readdir's d_ino, then checked by fstat), under whatever name it
 * has now. The fd, or -EMFILE (no descriptor for the search or the open:
 * try later), or -ENOENT (not there: deleted, or moved out). */
static int open_moved(file_t *f) {
  const char *slash = strrchr(f->path, '/'); /* paths are absolute */
  char dir[4096];
  size_t dl = slash == NULL ? sizeof dir : (size_t)(slash - f->path);
  if (dl >= sizeof dir)
    return -ENOENT;
  memcpy(dir, f->path, dl);
  dir[dl] = '\0';
  DIR *d = opendir(dl == 0 ? "/" : dir);
  if (d == NULL)
    return errno == EMFILE || errno == ENFILE ? -EMFILE : -ENOENT;
  int rc = -ENOENT;
  struct dirent *de;
  while (rc == -ENOENT && (de = readdir(d)) != NULL) {
    if ((uint64_t)de->d_ino != f->ino)
      continue;
    char p[4096];
    if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p)
      continue;
    rc = open_same(f, p);
    if (rc >= 0)
      lg_log_info(f->src->component,
                  "%s: renamed to %s while closed (idle, or for lack of "
                  "descriptors); "
                  "reading it there to its end from offset %" PRIu64,
                  f->path, p, f->read_off);
    else if (rc != -EMFILE)
      rc = -ENOENT;
  }
  closedir(d);
  return rc;
}

int lg__tail_unpark(file_t *f) {
  lg_tail_t *t = f->t;
  if (!f->parked)
    return 0;
  int fd = open_same(f, f->path);
  if (fd == -ESTALE || fd == -ENOENT)
    fd = open_moved(f);
  if (fd < 0)
    return fd;
  if (lseek(fd, (off_t)f->read_off, SEEK_SET) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  f->fd = fd;
  f->parked = 0;
  t->nopen++;
  lg_metric_add(f->src->m_reopened, 1);
  return 0;
}

void lg__tail_lost_parked(file_t *f, int err) {
  lg_log_warn(f->src->component,
              "%s: closed while idle, and %s before it could be reopened: "
              "reading it ends at offset %" PRIu64
              " (bytes written to it after that are not read)",
              f->path,
              err == -ENOENT ? "gone from its directory (deleted, or moved "
                               "out)"
                             : strerror(-err),
              f->read_off);
  f->deleted = 1;
  lg__tail_drop_file(f); /* said above: no "deleted; closed" line too */
}

static int by_lane_newest(const void *a, const void *b) {
  const file_t *x = *(file_t *const *)a, *y = *(file_t *const *)b;
  if (x->src != y->src)
    return x->src < y->src ? -1 : 1;
  if (x->lane != y->lane)
    return x->lane < y->lane ? -1 : 1;
  return x->last_data_ms > y->last_data_ms   ? -1
         : x->last_data_ms < y->last_data_ms ? 1
                                             : 0;
}

/* max_rotated_open: per stream (lane), the rotated files read to their
 * end (drained, still at a matched name) beyond the newest N are closed. */
static void bound_rotated(lg_tail_t *t) {
  size_t n = 0, cap = 0;
  file_t **c = NULL;
  for (file_t *f = t->files; f != NULL; f = f->next) {
    if (!f->src->rotated_bounded || !f->drained || !parkable(f))
      continue;
    if (LG_GROW(c, cap, n + 1, 64) != 0)
      break;
    c[n++] = f;
  }
  if (n > 0)
    qsort(c, n, sizeof *c, by_lane_newest);
  int64_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (i == 0 || c[i]->lane != c[i - 1]->lane || c[i]->src != c[i - 1]->src)
      kept = 0;
    if (kept++ < c[i]->src->max_rotated_open)
      continue;
    lg__tail_park(c[i]);
    lg_metric_add(c[i]->src->m_rot_closed, 1);
  }
  free(c);
}

void lg__tail_park_idle(lg_tail_t *t) {
  bound_rotated(t);
  if (t->o.close_inactive_ms == 0)
    return;
  uint64_t now = now_ms(t);
  size_t n = 0;
  for (file_t *f = t->files; f != NULL; f = f->next)
    if (parkable(f) && now - f->last_data_ms >= t->o.close_inactive_ms) {
      lg__tail_park(f);
      n++;
    }
  if (n > 0)
    lg_log_debug("source", "closed %zu files idle for close_inactive", n);
}

/* A parked file seen by the rescan: stat its path instead of reopening
 * it. Growth queues it (its read turn reopens it); a truncation reopens
 * it now so that it restarts at 0. */
void lg__tail_check_parked(file_t *f) {
  struct stat st;
  if (stat(f->path, &st) != 0 || (uint64_t)st.st_dev != f->dev ||
      (uint64_t)st.st_ino != f->ino)
    return; /* the rescan's gone/rename logic decides */
  if ((uint64_t)st.st_size > f->read_off) {
    lg__tail_enqueue(f);
  } else if ((uint64_t)st.st_size < f->read_off && lg__tail_unpark(f) == 0) {
    lg__tail_restart_at_zero(f, "truncated");
  }
}

size_t lg_tail_open_files(const lg_tail_t *t) { return t ? t->nopen : 0; }
