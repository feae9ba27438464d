/* Rotation: the order of a file and the one that replaced it (pred/succ
 * chains, settling), copytruncate (bytes found in the copy), and closing
 * and forgetting files. */
#include "sources/tail/lg_tail_internal.h"

#include "core/lg_list.h"

void lg__tail_file_free(file_t *f) {
  if (f->fd >= 0) {
    close(f->fd);
    f->t->nopen--;
  }
  if (f->t->drainer == f)
    f->t->drainer = NULL;
  lg_framer_destroy(f->fr);
  f->fr = NULL;
  lg_ml_destroy(f->ml);
  f->ml = NULL;
  lg__tail_account(f);
  lg_meta_unref(f->meta);
  /* A batch that was never handed on is ours to free. */
  lg_batch_destroy(f->batch);
  free(f->path);
  free(f->real);
  free(f->left_path);
  free(f);
}

static void forget_now(file_t *f) {
  lg_tail_t *t = f->t;
  /* Nobody follows this file any more (it is deleted, or renamed to a name
   * no glob matches): its entry would only go stale. Unless a file opened
   * since has the same device+inode (reused after a deletion): the entry
   * is that file's now. */
  if (lg__tail_by_id(t, f->dev, f->ino) == NULL && !f->keep_cp)
    lg_checkpoint_remove(t->cp, f->dev, f->ino);
  /* Closing released the successor; a predecessor cannot outlive this
   * file's wait. Unlink anyway so no pointer dangles. */
  if (f->succ != NULL)
    f->succ->pred = NULL;
  if (f->pred != NULL)
    f->pred->succ = NULL;
  for (int i = 0; i < H_N; i++)
    lg__tail_htab_del(t, i, f);
  if (f->leaving)
    t->nleaving--;
  LG_LIST_UNLINK(t->files, f);
  lg__tail_file_free(f);
}

/* Drops a closed file once everything handed on from it is acknowledged. */
void lg__tail_maybe_forget(file_t *f) {
  if (!f->closed || f->acked < f->handed)
    return;
  if (f->t->iterating > 0) {
    f->forget_later = 1;
    f->t->forget_later = 1;
    return;
  }
  forget_now(f);
}

void lg__tail_iter_begin(lg_tail_t *t) { t->iterating++; }

void lg__tail_iter_end(lg_tail_t *t) {
  if (--t->iterating > 0 || !t->forget_later)
    return;
  t->forget_later = 0;
  for (file_t *f = t->files, *nx; f != NULL; f = nx) {
    nx = f->next;
    if (f->forget_later)
      forget_now(f);
  }
}

/* The waiting file `f` has bytes: its writer has switched to it, so all it
 * wrote to the file before it is there already. That file is read to its
 * end once more (the next read, which runs after this) and then drained,
 * without waiting for rotate_wait. A copytruncate copy before `f` holds
 * `f`'s own earlier bytes: the file before the copy is the one the writer
 * left. */
void lg__tail_writer_switched(file_t *f) {
  file_t *p = f->pred;
  while (p != NULL && p->is_copy)
    p = p->pred;
  if (p == NULL || p->switched || p->closed)
    return;
  p->switched = 1;
  p->switched_ms = now_ms(f->t);
  p->at_eof = 0;
  lg_log_info(f->src->component,
              "%s: has bytes: its writer switched to it; reading %s to its "
              "end, then this one",
              f->path, p->path);
  lg__tail_enqueue(p); /* refused while it waits itself: released in turn */
}

/* A file waiting for its predecessor is not read, but it is watched as if
 * it were: a writer may fill it and logrotate may copytruncate it before
 * its first read. Its fingerprint grows with its first bytes, and a shrink
 * or other first bytes restart it at 0 the way a truncation of a file being
 * read does, which reads the unread bytes from logrotate's copy first. */
void lg__tail_track_waiting(file_t *f) {
  struct stat st;
  if (f->closed || f->is_copy || fstat(f->fd, &st) != 0)
    return;
  if (st.st_nlink == 0 && !f->deleted) {
    f->deleted = 1;
    lg__tail_mark_gone(f);
  }
  uint64_t size = (uint64_t)st.st_size;
  uint64_t seen = f->wait_size > f->read_off ? f->wait_size : f->read_off;
  if (size < seen) {
    lg__tail_restart_at_zero(f,
                             "truncated while waiting for the file before it");
    return;
  }
  char buf[LG_FP_MAX];
  ssize_t n = f->fp_len < LG_FP_MAX ? pread(f->fd, buf, sizeof buf, 0)
                                    : pread(f->fd, buf, f->fp_len, 0);
  if (n < 0)
    return;
  if ((size_t)n < f->fp_len ||
      lg_fp_update(LG_FP_INIT, buf, f->fp_len) != f->fp) {
    lg__tail_restart_at_zero(f,
                             "rewritten while waiting for the file before it");
    return;
  }
  if ((size_t)n > f->fp_len) {
    f->fp = lg_fp_update(f->fp, buf + f->fp_len, (size_t)n - f->fp_len);
    f->fp_len = (uint32_t)n;
  }
  f->wait_size = size;
  if (size > f->read_off)
    f->at_eof = 0;
  if (size > 0)
    lg__tail_writer_switched(f);
}

/* The file's writer switched to the file after it (switched_ms): has it
 * been quiet since, for the settle time? Quiet means nothing unread (its
 * size is our read offset) and no write for settle_ms by its mtime: a
 * stream whose logger thread lags behind another's has put its last
 * lines there by then. rotate_wait after the switch at the latest, for a
 * second writer that keeps appending (its lines come later, as before). */
int lg__tail_settled(file_t *f) {
  lg_tail_t *t = f->t;
  if (now_ms(t) - f->switched_ms >= t->rotate_wait_ms)
    return 1;
  struct stat st;
  if (fstat(f->fd, &st) != 0)
    return 1;
  if ((uint64_t)st.st_size != f->read_off)
    return 0; /* more bytes: the next read has them (or sees a shrink) */
  int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  return lg_time_now_ns() - mtime >= (int64_t)t->settle_ms * 1000000;
}

/* `f` is drained (or closed): the file waiting for it may be read now. */
void lg__tail_release_successor(file_t *f) {
  f->drained = 1;
  f->switched = 0;
  free(f->left_path);
  f->left_path = NULL;
  file_t *s = f->succ;
  if (s == NULL)
    return;
  f->succ = NULL;
  s->pred = NULL;
  /* What happened to it since the last event (a copytruncate inserts the
   * copy before it as its new predecessor). */
  lg__tail_track_waiting(s);
  if (s->pred == NULL && !s->closed) {
    lg_log_info(s->src->component,
                "%s: the file before it (%s) is drained; reading it", s->path,
                f->path);
    lg__tail_enqueue(s);
    if (s->gone)
      lg__tail_need_tick(s->t);
  }
}

/* The file a new file at `path` must wait for: the last of the chain of
 * files that left this path and are not drained yet, or NULL. */
file_t *lg__tail_find_pred(lg_tail_t *t, const file_t *nf, const char *path) {
  /* Every file it could be is gone or has a left_path: a start's many
   * opens do not each walk every file. */
  if (t->nleaving == 0)
    return NULL;
  for (file_t *f = t->files; f != NULL; f = f->next) {
    if (f == nf || f->closed || f->is_copy || f->drained)
      continue;
    if ((f->gone && strcmp(f->path, path) == 0) ||
        (f->left_path != NULL && strcmp(f->left_path, path) == 0)) {
      while (f->succ != NULL && f->succ != nf)
        f = f->succ;
      return f;
    }
  }
  return NULL;
}

/* A file of `nf`'s source, other than nf, neither closed nor a copy, at
 * path `q`. */
static int born_at(const file_t *nf, const file_t *g, const char *q) {
  return g != nf && !g->closed && !g->is_copy && g->src == nf->src &&
         strcmp(g->path, q) == 0;
}

/* lg__tail_birth_path through the path index, when no file has a
 * left_path and every open file is in H_PATH (nleaving 0): the candidates
 * q are path's prefixes before a '.' or '-' of its last component, each
 * looked up. Returns 1 with the answer in *out (NULL: none), or 0 when
 * more than one q has a file (the walk over every file decides which,
 * by list order). */
static int birth_path_indexed(lg_tail_t *t, const file_t *nf, const char *path,
                              char **out) {
  const htab_t *h = &t->h[H_PATH];
  size_t plen = strlen(path), found = 0, n = 0;
  const char *slash = strrchr(path, '/');
  size_t i = slash != NULL ? (size_t)(slash - path) + 1 : 0;
  char q[4096];
  for (; i + 1 < plen; i++) {
    if ((path[i] != '.' && path[i] != '-') || i >= sizeof q || h->nb == 0)
      continue;
    memcpy(q, path, i);
    q[i] = '\0';
    uint64_t hv = hash_str(q);
    for (const file_t *g = h->b[hv & (h->nb - 1)]; g != NULL;
         g = g->hnext[H_PATH])
      if (g->hval[H_PATH] == hv && born_at(nf, g, q)) {
        if (n++ > 0)
          return 0;
        found = i;
        break;
      }
  }
  *out = NULL;
  if (n == 1 && (*out = malloc(found + 1)) != NULL) {
    memcpy(*out, path, found);
    (*out)[found] = '\0';
  }
  return 1;
}

/* Where a file first seen at `path` was born, when `path` is a rotated
 * name (`q` + "." or "-" + suffix: a.log.1, a.log-20240501) of a path `q`
 * that a file of the same source is at or left: q (malloc'd), or NULL. A
 * collector that lags by a rotation (Docker renames a.log to a.log.1 and
 * writes a new a.log twice before we look) first sees a file at its
 * rotated name: it still belongs between the file that left q before it
 * and the file at q now. */
char *lg__tail_birth_path(lg_tail_t *t, const file_t *nf, const char *path) {
  char *born;
  if (t->nleaving == 0 && !(t->h_lossy & (1u << H_PATH)) &&
      strlen(path) < 4096 && birth_path_indexed(t, nf, path, &born))
    return born;
  size_t plen = strlen(path);
  for (file_t *g = t->files; g != NULL; g = g->next) {
    if (g == nf || g->closed || g->is_copy || g->src != nf->src)
      continue;
    const char *cand[2] = {g->path, g->left_path};
    for (int i = 0; i < 2; i++) {
      const char *q = cand[i];
      size_t qlen = q != NULL ? strlen(q) : 0;
      if (q != NULL && qlen + 1 < plen && strncmp(q, path, qlen) == 0 &&
          (path[qlen] == '.' || path[qlen] == '-') &&
          strchr(path + qlen, '/') == NULL)
        return lg_util_strdup(q);
    }
  }
  return NULL;
}

/* Puts `f`, born at `q` (birth_path), into the chain of files that left
 * q, whose last file is `end`: before the files that are at q now and
 * still wait (they were born after `f`, which has left q already), else
 * last. */
void lg__tail_join_chain(file_t *f, file_t *end, const char *q) {
  file_t *before = NULL;
  for (file_t *x = end; x->pred != NULL && !x->gone && x->left_path == NULL &&
                        strcmp(x->path, q) == 0;
       x = x->pred)
    before = x;
  if (before != NULL) {
    f->pred = before->pred;
    f->pred->succ = f;
    f->succ = before;
    before->pred = f;
  } else {
    f->pred = end;
    end->succ = f;
  }
}

static int64_t mtime_ns(const file_t *f) {
  struct stat st;
  if (f->parked ? stat(f->path, &st) != 0 : f->fd < 0 || fstat(f->fd, &st) != 0)
    return 0;
  return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

/* Another file than `f` not read yet, of its source and lane. */
static int fresh_mate(const file_t *f, const file_t *x) {
  return x != f && !x->closed && !x->is_copy && x->fresh &&
         x->lane == f->lane && x->src == f->src;
}

/* Files of one stream found together (the first scan, a pod's files once
 * its metadata arrived, a restart after rotations) have no order from
 * events: they are chained oldest first by their last write (mtime), so
 * that none is read before the ones its writer filled before it. Only
 * files not read yet are ordered; `f` is new and has no predecessor. */
void lg__tail_order_with_fresh(lg_tail_t *t, file_t *f) {
  int64_t m = mtime_ns(f);
  file_t *newer = NULL, *older = NULL;
  int64_t newer_m = 0, older_m = 0;
  /* The fresh files of its lane from the index (a start opens thousands
   * of files, each in a lane of its own, mostly). With two or more, every
   * file is walked: which of two with the same mtime wins is decided by
   * list order. */
  const htab_t *h = &t->h[H_FRESH];
  file_t *only = NULL;
  int n = 0, indexed = !(t->h_lossy & (1u << H_FRESH));
  if (indexed && h->nb > 0)
    for (file_t *x = h->b[f->lane & (h->nb - 1)]; x != NULL && n < 2;
         x = x->hnext[H_FRESH])
      if (x->hval[H_FRESH] == f->lane && fresh_mate(f, x)) {
        only = x;
        n++;
      }
  if (indexed && n < 2 && only == NULL)
    return;
  for (file_t *x = indexed && n < 2 ? only : t->files; x != NULL;
       x = indexed && n < 2 ? NULL : x->next) {
    if (!fresh_mate(f, x))
      continue;
    int64_t xm = mtime_ns(x);
    if (xm > m && (newer == NULL || xm < newer_m)) {
      newer = x;
      newer_m = xm;
    } else if (xm <= m && x->succ == NULL && (older == NULL || xm > older_m)) {
      older = x;
      older_m = xm;
    }
  }
  if (newer != NULL) {
    /* Before the oldest of the newer ones, after what it waited for. */
    f->pred = newer->pred;
    if (f->pred != NULL)
      f->pred->succ = f;
    f->succ = newer;
    newer->pred = f;
    lg__tail_unqueue(newer);
  } else if (older != NULL) {
    f->pred = older;
    older->succ = f;
  }
}

/* Ends the reading of `f`: out of the read queue, its descriptor closed,
 * out of the device+inode and symlink-target indexes, its batch (empty:
 * handed on before), framer and multiline groups released. Its path
 * entry, rotation chain and checkpoint entry are the caller's. */
void lg__tail_end_reading(file_t *f) {
  lg_tail_t *t = f->t;
  lg__tail_unqueue(f);
  if (f->fd >= 0) {
    close(f->fd);
    t->nopen--;
  }
  f->fd = -1;
  f->parked = 0;
  f->closed = 1;
  lg__tail_htab_del(t, H_ID, f);
  lg__tail_htab_del(t, H_REAL, f);
  lg__tail_htab_del(t, H_FRESH, f);
  if (f->batch != NULL) {
    lg__tail_give_back_batch(t, f->batch);
    f->batch = NULL;
  }
  lg_framer_destroy(f->fr);
  f->fr = NULL;
  lg_ml_destroy(f->ml);
  f->ml = NULL;
  lg__tail_account(f);
  if (t->drainer == f)
    t->drainer = NULL;
  lg__tail_reread_done(f);
}

void lg__tail_drop_file(file_t *f) {
  lg__tail_end_reading(f); /* open groups were flushed by at_end before */
  lg__tail_htab_del(f->t, H_PATH, f);
  lg__tail_release_successor(f);
  lg__tail_maybe_forget(f);
}

void lg__tail_close_file(file_t *f) {
  struct stat st;
  if (fstat(f->fd, &st) == 0 && st.st_nlink == 0)
    f->deleted = 1;
  /* A deleted log is unusual (and a writer that still had it open loses
   * what it writes from now on); a renamed one is plain rotation. */
  if (f->is_copy)
    lg_log_info(f->src->component,
                "%s: copytruncate copy read to its end (offset %" PRIu64 ")",
                f->path, f->read_off);
  else
    lg_log(f->deleted ? LG_LOG_WARN : LG_LOG_INFO, f->src->component,
           "%s: %s; closed after reading to offset %" PRIu64, f->path,
           f->deleted ? "deleted" : "renamed away", f->read_off);
  lg__tail_drop_file(f);
}

/* The file's path no longer shows it: read it to its end and close it. */
void lg__tail_mark_gone(file_t *f) {
  if (f->gone || f->closed)
    return;
  /* A parked file too (closed while idle, not reopened yet): its read
   * turn looks for it under another name in its directory (renamed), or
   * ends it there (lg__tail_unpark). */
  f->gone = 1;
  lg__tail_mark_leaving(f);
  f->drained = 0;
  f->gone_ms = now_ms(f->t);
  lg__tail_htab_del(f->t, H_PATH, f);
  lg_log_info(
      f->src->component,
      "%s: no longer at its path; reading it to its end (offset %" PRIu64
      " so far)",
      f->path, f->read_off);
  lg__tail_enqueue(f);
  lg__tail_need_tick(f->t);
}

/* Copytruncate: logrotate copied the file (to a name that starts with its
 * own, in the same directory: a.log.1, a.log-20240501) and truncated it.
 * Bytes we had not read yet are in the copy only; it is found by the
 * fingerprint `fpv` of its first `fp_len` bytes (f's, or its checkpoint
 * entry's after a restart), among files of at least `min_size` bytes.
 * Returns an fd open on the copy at `off` (and its path and stat), or -1. */
static int open_copy(file_t *f, uint64_t fpv, uint32_t fp_len, uint64_t off,
                     uint64_t min_size, char **cpath, struct stat *cst) {
  const char *fp = f->real != NULL ? f->real : f->path;
  const char *slash = strrchr(fp, '/');
  char dir[4096];
  const char *base = slash != NULL ? slash + 1 : fp;
  size_t dlen = slash == NULL ? 0 : slash == fp ? 1 : (size_t)(slash - fp);
  if (fp_len == 0 || dlen >= sizeof dir)
    return -1;
  memcpy(dir, dlen ? fp : ".", dlen ? dlen : 1);
  dir[dlen ? dlen : 1] = '\0';
  size_t blen = strlen(base);
  DIR *d = opendir(dir);
  if (d == NULL)
    return -1;
  int fd = -1;
  struct dirent *de;
  char buf[LG_FP_MAX];
  while (fd < 0 && (de = readdir(d)) != NULL) {
    if (strncmp(de->d_name, base, blen) != 0 || de->d_name[blen] == '\0')
      continue;
    char p[8192];
    snprintf(p, sizeof p, "%s%s%s", dir, dir[dlen - 1] == '/' ? "" : "/",
             de->d_name);
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size < min_size ||
        lg__tail_by_id(f->t, (uint64_t)st.st_dev, (uint64_t)st.st_ino) != NULL)
      continue;
    /* A file with an entry of its own for these first bytes is known as
     * itself (a copy read before a restart, a renamed file). */
    const lg_checkpoint_entry_t *ce =
        lg_checkpoint_find(f->t->cp, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
    if (ce != NULL && ce->fingerprint == fpv && ce->fp_len == fp_len)
      continue;
    int cfd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (cfd < 0)
      continue;
    ssize_t n = pread(cfd, buf, fp_len, 0);
    if (n == (ssize_t)fp_len &&
        lg_fp_update(LG_FP_INIT, buf, (size_t)n) == fpv &&
        fstat(cfd, cst) == 0 && lseek(cfd, (off_t)off, SEEK_SET) >= 0 &&
        (*cpath = lg_util_strdup(p)) != NULL) {
      fd = cfd;
      break;
    }
    close(cfd);
  }
  closedir(d);
  return fd;
}

/* `c`, new, reads the copy at `cpath` (open as `cfd`, `cst` its stat) of
 * `f`: the same source, metadata and pipelines, since its records are
 * f's. */
static void copy_of_file(file_t *c, file_t *f, char *cpath, int cfd,
                         const struct stat *cst) {
  c->t = f->t;
  c->src = f->src;
  c->path = cpath;
  c->meta = (lg_meta_t *)lg_meta_ref(f->meta);
  c->format = f->format;
  c->pipeline = f->pipeline;
  c->more_pipelines = f->more_pipelines;
  c->fd = cfd;
  f->t->nopen++;
  c->dev = (uint64_t)cst->st_dev;
  c->ino = (uint64_t)cst->st_ino;
}

/* The copy `c` takes f's place in the order: after what f waits for,
 * before f's new content. It is a leaving file, read to its end and
 * closed; one the globs match is found again by every rescan, so it
 * keeps an entry (at `acked` now, acked as it is read, kept once it is
 * closed) that makes the file opened there start at what was delivered,
 * not at 0. */
static void copy_before(file_t *c, file_t *f, uint64_t acked) {
  c->is_copy = c->gone = 1;
  if (lg__tail_matches(f->src, c->path)) {
    c->keep_cp = 1;
    lg__tail_cp_update(c, acked);
  }
  lg__tail_mark_leaving(c);
  c->gone_ms = c->last_data_ms = now_ms(f->t);
  c->pred = f->pred;
  if (c->pred != NULL)
    c->pred->succ = c;
  c->succ = f;
  f->pred = c;
}

/* Moves the file's old stream (framer, batch, file_key, offsets) to a new
 * entry reading the copy from our offset to its end; `f` starts over with
 * `fr` at 0 once the copy is done, so the file's records stay in order. */
static int split_to_copy(file_t *f, lg_framer_t *fr, lg_ml_t *ml) {
  lg_tail_t *t = f->t;
  char *cpath = NULL;
  struct stat cst;
  int cfd =
      open_copy(f, f->fp, f->fp_len, f->read_off, f->read_off, &cpath, &cst);
  if (cfd < 0)
    return -1;
  /* All of it was read: nothing to take from it, unless the globs match
   * it, when it is taken all the same for its entry (at its end), or the
   * next rescan would read it as a new file (copy_of knows it no more:
   * f's first bytes are others now). */
  if ((uint64_t)cst.st_size == f->read_off &&
      !lg__tail_matches(f->src, cpath)) {
    close(cfd);
    free(cpath);
    return -1;
  }
  file_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    close(cfd);
    free(cpath);
    return -1;
  }
  lg_log_info(f->src->component,
              "%s: reading its last %" PRIu64 " unread bytes from the copy %s",
              f->path, (uint64_t)cst.st_size - f->read_off, cpath);
  copy_of_file(c, f, cpath, cfd, &cst);
  c->fp = f->fp;
  c->fp_len = f->fp_len;
  c->read_off = f->read_off;
  c->start = f->start;
  c->handed = f->handed;
  c->acked = f->acked;
  c->fr = f->fr;
  c->charged = f->charged; /* what its framer holds moves with it */
  f->charged = 0;
  c->batch = f->batch;
  copy_before(c, f, c->acked);
  /* f may be in the read queue (an append's event came before the rescan
   * saw the truncation): it waits for the copy now, and is queued again
   * once the copy is drained; read from the queue, its new bytes would go
   * on before the copy's last ones. */
  lg__tail_unqueue(f);
  lg__tail_htab_del(t, H_KEY, f);
  c->key = f->key;
  c->lane = f->lane;
  lg__tail_htab_put(t, H_KEY, c, mix64(c->key));
  lg__tail_htab_put(t, H_ID, c, hash_id(c->dev, c->ino));
  LG_LIST_PUSH(t->files, c);
  f->fr = fr;
  c->ml = f->ml; /* open groups are lines of the copy */
  f->ml = ml;
  f->batch = NULL;
  lg__tail_enqueue(c);
  return 0;
}

int lg__tail_resume_copy(file_t *f, uint64_t fpv, uint32_t fp_len, uint64_t off,
                         uint64_t sent) {
  lg_tail_t *t = f->t;
  src_t *s = f->src;
  char *cpath = NULL;
  struct stat cst;
  /* Shorter than the checkpoint: not the copy of what was read. Exactly
   * as long: nothing is left to read, but a copy the globs match gets its
   * entry (at its end), or it would be read as a new file. */
  int cfd = open_copy(f, fpv, fp_len, off, off, &cpath, &cst);
  if (cfd < 0)
    return -1;
  file_t *c = calloc(1, sizeof *c);
  if (c == NULL || (c->fr = lg__tail_framer(s, f->format, off)) == NULL ||
      (s->ml_conf != NULL &&
       (c->ml = lg_ml_create(s->ml_conf, s->max_record_bytes)) == NULL)) {
    if (c != NULL)
      lg_framer_destroy(c->fr);
    free(c);
    close(cfd);
    free(cpath);
    lg_log_error(s->component, "%s: out of memory; its copy is not read",
                 f->path);
    return -1;
  }
  lg_log_info(s->component,
              "%s: copytruncated while lugger was stopped; reading its last "
              "%" PRIu64 " unread bytes from the copy %s (offset %" PRIu64
              "), then this file from 0",
              f->path, (uint64_t)cst.st_size - off, cpath, off);
  copy_of_file(c, f, cpath, cfd, &cst);
  c->fp = fpv;
  c->fp_len = fp_len;
  c->read_off = c->start = c->handed = c->acked = off;
  /* Records sent before the restart and not acked are read again from
   * the copy, with the ids they had (same fingerprint and offsets). */
  c->reread_from = off;
  c->reread_end = sent > off ? sent : 0;
  if (c->reread_end != 0)
    (void)lg_framer_set_deferred(c->fr, 0);
  c->key = ++t->next_key;
  copy_before(c, f, off);
  c->lane = c->pred != NULL ? c->pred->lane : f->lane;
  lg__tail_htab_put(t, H_KEY, c, mix64(c->key));
  lg__tail_htab_put(t, H_ID, c, hash_id(c->dev, c->ino));
  LG_LIST_PUSH(t->files, c);
  if (off > 0 && t->o.on_resume != NULL)
    t->o.on_resume(t->o.ud, c->fp, off);
  lg__tail_enqueue(c);
  return 0;
}

/* Copytruncate (or any shrink below what was read), or the first bytes
 * changed: the file is a new stream from offset 0. Batches already handed
 * on keep their old file_key, whose late acks are then ignored. */
void lg__tail_restart_at_zero(file_t *f, const char *why) {
  lg_tail_t *t = f->t;
  lg_log_warn(f->src->component,
              "%s: %s at read offset %" PRIu64 "; reading it again from 0",
              f->path, why, f->read_off);
  lg_framer_t *fr = lg__tail_framer(f->src, f->format, 0);
  lg_ml_t *ml = f->ml != NULL
                    ? lg_ml_create(f->src->ml_conf, f->src->max_record_bytes)
                    : NULL;
  if (fr == NULL || (f->ml != NULL && ml == NULL) ||
      split_to_copy(f, fr, ml) != 0) {
    lg_framer_destroy(fr);
    lg_ml_destroy(ml);
    /* No copy (or it holds nothing new): what the framer holds is lost
     * with the truncated bytes. Open multiline groups are whole lines
     * read before: they go on. */
    if (f->ml != NULL && lg_ml_pending(f->ml) > 0) {
      if (f->batch == NULL)
        f->batch = lg__tail_take_batch(t);
      if (f->batch == NULL || lg_ml_flush(f->ml, f->batch) != 0)
        lg_log_error(f->src->component,
                     "%s: %zu lines of an open multiline group lost with the "
                     "truncation (no batch)",
                     f->path, lg_ml_pending(f->ml));
      lg_ml_reset(f->ml);
    }
    lg__tail_hand_off(f);
    if (f->batch != NULL) {
      lg__tail_give_back_batch(t, f->batch);
      f->batch = NULL;
    }
    lg__tail_htab_del(t, H_KEY, f);
    lg_framer_reset(f->fr, 0);
  }
  f->key = ++t->next_key;
  lg__tail_htab_put(t, H_KEY, f, mix64(f->key));
  if (lseek(f->fd, 0, SEEK_SET) < 0)
    lg_log_error(f->src->component, "%s: lseek: %s", f->path, strerror(errno));
  f->read_off = 0;
  lg__tail_reread_done(f);
  f->start = f->handed = f->acked = f->sent = 0;
  f->fp = LG_FP_INIT;
  f->fp_len = 0;
  f->wait_size = 0;
  f->at_eof = 0;
  f->modify_hint = 0;
  lg__tail_cp_update(f, 0);
  lg__tail_account(f);
  lg__tail_enqueue(f);
}
