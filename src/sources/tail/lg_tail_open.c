/* Opening a file a glob found: identity (device, inode, fingerprint), its
 * start offset from the checkpoint, its place in a rotation chain, and
 * its metadata from the source's hook. */
#include "sources/tail/lg_tail_internal.h"

#include <sys/resource.h>

#include "core/lg_list.h"

/* `refresh`: 0 = the default metadata, 1 = the path changed, 2 = no
 * answer from the hook keeps what the file has (lg_tail_refresh_meta asks
 * the hook itself, since its answer may stop the file). */
static int set_meta_ex(file_t *f, int refresh) {
  if (refresh && f->src != NULL && f->src->on_file != NULL) {
    lg_tail_file_info_t info = {.path = f->path,
                                .refresh = refresh,
                                .format = f->format,
                                .pipeline = f->pipeline,
                                .more_pipelines = f->more_pipelines,
                                .dev = f->dev,
                                .ino = f->ino};
    f->src->on_file(f->src->file_ud, &info);
    if (info.meta != NULL) {
      lg_meta_unref(f->meta);
      f->meta = info.meta;
      return 0;
    }
    if (refresh == 2)
      return 0;
  }
  lg_meta_t *m = lg_meta_create();
  if (m == NULL ||
      lg_meta_add_str(m, "log.file.path", f->path, strlen(f->path)) != 0 ||
      lg_meta_seal(m) != 0) {
    lg_meta_unref(m);
    return -ENOMEM;
  }
  lg_meta_unref(f->meta);
  f->meta = m;
  return 0;
}

/* Appends through a symlinked path (/var/log/containers/<name>.log links
 * into /var/log/pods) are events of the target's directory, not the link's:
 * that directory is watched too. */
void lg__tail_watch_real_dir(file_t *f) {
  lg_tail_t *t = f->t;
  if (t->ino == NULL || f->real == NULL)
    return;
  const char *sl = strrchr(f->real, '/');
  char dir[4096];
  size_t n = sl == NULL ? 0 : sl == f->real ? 1 : (size_t)(sl - f->real);
  if (n == 0 || n >= sizeof dir)
    return;
  memcpy(dir, f->real, n);
  dir[n] = '\0';
  if (lg_inotify_watching(t->ino, dir))
    return;
  int rc = lg_inotify_watch(t->ino, dir);
  if (rc != 0 && lg__tail_note_once(t, dir, N_WATCH))
    lg_log_warn(f->src->component,
                "%s: cannot watch: %s; changes to %s are seen by the rescan "
                "only",
                dir, strerror(-rc), f->path);
}

/* Indexes the file by its real path when that differs from `path`. */
static void index_real(file_t *f) {
  lg_tail_t *t = f->t;
  char *real = realpath(f->path, NULL);
  lg__tail_htab_del(t, H_REAL, f);
  free(f->real);
  f->real = NULL;
  if (real == NULL || strcmp(real, f->path) == 0) {
    free(real);
    return;
  }
  f->real = real;
  lg__tail_htab_put(t, H_REAL, f, hash_str(real));
  lg__tail_watch_real_dir(f);
}

static int set_meta(file_t *f) { return set_meta_ex(f, 1); }

int lg__tail_set_path(file_t *f, const char *path) {
  char *p = lg_util_strdup(path);
  if (p == NULL)
    return -ENOMEM;
  char *old = f->path;
  f->path = p;
  if (set_meta(f) != 0) {
    f->path = old;
    free(p);
    return -ENOMEM;
  }
  free(old);
  lg__tail_htab_del(f->t, H_PATH, f);
  lg__tail_htab_put(f->t, H_PATH, f, hash_str(f->path));
  index_real(f);
  return 0;
}

/* True if a checkpoint entry names `path` (for another inode): the file now
 * at that path replaced one we were following, so it is read from 0. */
static int path_had_checkpoint(lg_tail_t *t, const char *path) {
  size_t n = lg_checkpoint_count(t->cp);
  for (size_t i = 0; i < n; i++)
    if (strcmp(lg_checkpoint_at(t->cp, i)->path, path) == 0)
      return 1;
  return 0;
}

/* Fewest fingerprinted bytes of a file we read that tell a copy of it
 * (copy_of): fewer could be a shared header or a timestamp's first
 * digits, and a rotated file that merely starts alike is not a copy. */
#define COPY_MIN_MATCH 64
/* A file shorter than the fingerprint of a file it may be a copy of (or
 * than what was read of that file, its first bytes those of the file),
 * and written this recently, may be that copy being written (logrotate
 * makes the copy, then fills it): it is looked at again at its next
 * change. */
#define COPY_YOUNG_NS 2000000000LL

enum { NOT_COPY, IS_COPY, MAY_BE_COPY };

/* Whether `path` is logrotate's copytruncate copy of a file we read (set
 * in *orig). A copy is in the same directory, under the name of the file
 * plus a suffix (a.log.1, a.log-20240501, 0.log.20240501-120000), and
 * starts with the bytes the file's fingerprint covers (`fpb`: the first
 * `L` bytes of the candidate, `st` its stat). Such a file shows up before
 * the truncation does (logrotate copies, then truncates), and when the
 * source's globs match it (a kubernetes source's *.log.*, a file source's
 * a.log*) it must not be read as a new file: every line of it would come
 * again, and out of order with the file's. Its bytes before the file's
 * read offset were read there; the rest are read from it when the
 * truncation shows (split_to_copy, lg_tail_rotate.c). MAY_BE_COPY: too
 * short to tell yet, and still being written. */
static int copy_of(lg_tail_t *t, const src_t *s, const char *path,
                   const char *fpb, size_t L, const struct stat *st,
                   file_t **orig) {
  size_t n = strlen(path);
  const char *slash = strrchr(path, '/');
  size_t from = slash != NULL ? (size_t)(slash - path) + 1 : 0;
  char base[4096];
  if (n >= sizeof base)
    return NOT_COPY;
  memcpy(base, path, n + 1);
  /* Each shorter name that ends before a '.', '-' or '_' of the name. */
  for (size_t i = n; i-- > from + 1;) {
    if (path[i] != '.' && path[i] != '-' && path[i] != '_')
      continue;
    base[i] = '\0';
    file_t *g = lg__tail_by_path(t, base);
    base[i] = path[i];
    if (g == NULL || g->src != s || g->closed || g->is_copy ||
        g->fp_len < COPY_MIN_MATCH)
      continue;
    *orig = g;
    /* Too short to hold the fingerprinted bytes, or what was read of g:
     * a copy being written, while it is written to. */
    int64_t age =
        lg_time_now_ns() -
        ((int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec);
    int partial = age < COPY_YOUNG_NS ? MAY_BE_COPY : NOT_COPY;
    if (L < g->fp_len)
      return partial;
    if (lg_fp_update(LG_FP_INIT, fpb, g->fp_len) == g->fp)
      return (uint64_t)st->st_size >= g->read_off ? IS_COPY : partial;
  }
  return NOT_COPY;
}

/* True while a copytruncate copy on this device+inode is read to its end
 * and closed but not all its records are acked (a closed file is out of
 * the device+inode index): its entry moves on with those acks, so a
 * rescan that finds the copy again opens it once that file is forgotten,
 * at the offset they reach, not at an older one. Copies are leaving
 * files, so there is nothing to look through most of the time. */
static int copy_acks_pending(lg_tail_t *t, uint64_t dev, uint64_t ino) {
  if (t->nleaving == 0)
    return 0;
  for (file_t *x = t->files; x != NULL; x = x->next)
    if (x->closed && x->is_copy && x->dev == dev && x->ino == ino)
      return 1;
  return 0;
}

/* `st0` is what stat(2) said of `path` just before. */
void lg__tail_open_new(src_t *s, const char *path, const struct stat *st0,
                       int first_scan) {
  lg_tail_t *t = s->t;
  lg_tail_file_info_t info = {.path = path,
                              .format = s->format,
                              .pipeline = s->pipeline,
                              .dev = (uint64_t)st0->st_dev,
                              .ino = (uint64_t)st0->st_ino};
  if (s->on_file != NULL && s->on_file(s->file_ud, &info) != LG_TAIL_FOLLOW) {
    lg_meta_unref(info.meta);
    /* A file the hook lets wait (pod metadata not there yet) and follows
     * later was still there at the first scan: read_from applies to it. */
    if (first_scan)
      lg__tail_note_once(t, path, N_HOOK_FIRST);
    lg__tail_note_once(t, path, N_PARKED);
    return;
  }
  lg__tail_note_clear(t, path, N_PARKED);
  if (!first_scan && s->on_file != NULL &&
      lg__tail_noted(t, path, N_HOOK_FIRST)) {
    lg__tail_note_clear(t, path, N_HOOK_FIRST);
    first_scan = 1;
  }
  int fd = lg__tail_open_fd(t, path);
  if (fd < 0) {
    lg_meta_unref(info.meta);
    if (errno == EMFILE || errno == ENFILE) {
      /* Every open file is busy, or the kernel refused: the rescan that
       * follows the next file to reach its end tries again, and so does
       * every rescan (lg_tail_idle.c). */
      int e = errno;
      struct rlimit rl;
      char why[160];
      if (t->nopen >= t->max_open)
        snprintf(why, sizeof why, "every open log file is being read");
      else if (e == ENFILE)
        snprintf(why, sizeof why, "the system's file table is full");
      else if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        snprintf(why, sizeof why,
                 "this process's descriptor limit, RLIMIT_NOFILE %llu, is "
                 "reached with %zu log files open",
                 (unsigned long long)rl.rlim_cur, t->nopen);
      else
        snprintf(why, sizeof why, "no descriptor");
      if (lg__tail_note_once(t, path, N_OPEN))
        lg_log_warn(s->component,
                    "%s: cannot open yet: %s (%s); opened as soon as a "
                    "descriptor is free",
                    path, strerror(e), why);
    } else if (errno != ENOENT && lg__tail_note_once(t, path, N_OPEN)) {
      lg_log_error(s->component,
                   "%s: cannot open: %s; skipped until it can "
                   "be opened",
                   path, strerror(errno));
    }
    return;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      lg__tail_by_id(t, (uint64_t)st.st_dev, (uint64_t)st.st_ino) != NULL ||
      copy_acks_pending(t, (uint64_t)st.st_dev, (uint64_t)st.st_ino)) {
    close(fd); /* replaced between stat and open: the next event decides */
    lg_meta_unref(info.meta);
    return;
  }
  lg__tail_note_clear(t, path, N_OPEN | N_DIR | N_NOTREG);
  /* The fingerprint bytes. */
  char fpb[LG_FP_MAX];
  ssize_t L = pread(fd, fpb, sizeof fpb, 0);
  if (L < 0) {
    if (lg__tail_note_once(t, path, N_OPEN))
      lg_log_error(s->component, "%s: read at offset 0: %s; skipped", path,
                   strerror(errno));
    close(fd);
    lg_meta_unref(info.meta);
    return;
  }
  uint64_t dev = (uint64_t)st.st_dev, ino = (uint64_t)st.st_ino;
  uint64_t size = (uint64_t)st.st_size, start = 0, reread_end = 0;
  const char *how = "from its start";
  int at_checkpoint = 0, stale = 0;
  const lg_checkpoint_entry_t *e = lg_checkpoint_find(t->cp, dev, ino);
  /* The entry, should the file no longer be what it was about (the entry
   * is replaced when the file is indexed, its path freed). */
  lg_checkpoint_entry_t old = e != NULL ? *e : (lg_checkpoint_entry_t){0};
  old.path = NULL;
  file_t *orig = NULL;
  int copy = e == NULL && !info.from_end
                 ? copy_of(t, s, path, fpb, (size_t)L, &st, &orig)
                 : NOT_COPY;
  if (copy != NOT_COPY) {
    if (copy == IS_COPY && lg__tail_note_once(t, path, N_COPY))
      lg_log_info(s->component,
                  "%s: a copy of %s (copytruncate): not read as a new file; "
                  "what %s has not read yet is read from it once it is "
                  "truncated",
                  path, orig->path, orig->path);
    close(fd);
    lg_meta_unref(info.meta);
    return;
  }
  lg__tail_note_clear(t, path, N_COPY);
  char how_buf[320];
  if (info.from_end) {
    /* The hook knows better than the checkpoint (e.g. a file whose pod was
     * excluded, then included again: what it wrote meanwhile stays
     * unread). */
    start = size;
    snprintf(how_buf, sizeof how_buf, "at its end (%s)",
             info.why[0] ? info.why : "its source's hook asked so");
    how = how_buf;
  } else if (e != NULL) {
    int same = e->fp_len <= (size_t)L &&
               lg_fp_update(LG_FP_INIT, fpb, e->fp_len) == e->fingerprint;
    if (same && size >= e->offset) {
      start = e->offset;
      at_checkpoint = 1;
      how = "at its checkpoint";
      reread_end = e->sent > e->offset ? e->sent : 0;
    } else if (same) {
      lg_log_warn(s->component,
                  "%s: shorter (%" PRIu64 " bytes) than its checkpoint "
                  "(%" PRIu64 "): truncated; reading from 0",
                  path, size, e->offset);
    } else {
      lg_log_info(s->component,
                  "%s: inode reused (first bytes differ from the checkpoint "
                  "of %s); a new file, reading from 0",
                  path, e->path);
    }
    /* At the same path, the same inode without the bytes the entry was
     * about: truncated (and maybe written again) while lugger was
     * stopped. */
    stale = !at_checkpoint && strcmp(e->path, path) == 0;
  } else if (first_scan && !s->read_from_head && !s->had_checkpoints &&
             !path_had_checkpoint(t, path)) {
    start = size;
    how = "at its end (read_from = \"tail\")";
  }

  file_t *f = calloc(1, sizeof *f);
  if (f != NULL) {
    f->meta = info.meta; /* the hook's reference, or NULL */
    info.meta = NULL;
  }
  if (f == NULL || (f->path = lg_util_strdup(path)) == NULL ||
      (f->meta == NULL && set_meta_ex(f, 0) != 0) ||
      (f->fr = lg__tail_framer(s, info.format, start)) == NULL ||
      (s->ml_conf != NULL &&
       (f->ml = lg_ml_create(s->ml_conf, s->max_record_bytes)) == NULL)) {
    lg_meta_unref(info.meta);
    lg_log_error(s->component, "%s: out of memory; skipped", path);
    if (f != NULL) {
      f->fd = -1;
      lg__tail_file_free(f);
    }
    close(fd);
    return;
  }
  if (start > 0 && lseek(fd, (off_t)start, SEEK_SET) < 0) {
    lg_log_error(s->component, "%s: lseek: %s", path, strerror(errno));
  }
  f->t = t;
  f->src = s;
  f->format = info.format;
  f->pipeline = info.pipeline;
  f->more_pipelines = info.more_pipelines;
  f->fd = fd;
  t->nopen++;
  f->dev = dev;
  f->ino = ino;
  f->key = ++t->next_key;
  f->lane = mix64(hash_str(path));
  f->fp = lg_fp_update(LG_FP_INIT, fpb, (size_t)L);
  f->fp_len = (uint32_t)L;
  f->read_off = f->start = f->handed = f->acked = start;
  f->reread_from = start;
  f->reread_end = reread_end;
  /* Records read again after a restart are counted as the batch is handed
   * on, so the loop frames them (lg__tail_reread_done defers again). */
  if (reread_end != 0)
    (void)lg_framer_set_deferred(f->fr, 0);
  f->last_data_ms = now_ms(t);
  LG_LIST_PUSH(t->files, f);
  lg__tail_htab_put(t, H_PATH, f, hash_str(f->path));
  lg__tail_htab_put(t, H_ID, f, hash_id(dev, ino));
  lg__tail_htab_put(t, H_KEY, f, mix64(f->key));
  index_real(f);
  /* The entry exists from the start: after a crash the file resumes where
   * it was opened, not at read_from again. */
  lg__tail_cp_update(f, start);

  if (size == 0 && lg__tail_note_once(t, path, N_EMPTY))
    lg_log_info(s->component, "%s: empty file; waiting for data", path);
  if (size > 0)
    lg__tail_note_clear(t, path, N_EMPTY);
  if (L > 0 && memchr(fpb, 0, (size_t)L) != NULL)
    lg_log_warn(s->component,
                "%s: looks binary (NUL bytes in its first %zd bytes); read as "
                "text anyway",
                path, L);
  lg_log_info(s->component, "%s: following it %s (offset %" PRIu64 ")", path,
              how, start);
  /* Records in its first KiB may have been read before a restart while the
   * file was shorter: their ids had a shorter fingerprint. */
  if (start < LG_FP_MAX && L > 0 && t->o.on_prefixes != NULL &&
      (t->o.want_prefixes == NULL || t->o.want_prefixes(t->o.ud))) {
    uint64_t prefix[LG_FP_MAX], h = LG_FP_INIT;
    for (ssize_t j = 0; j < L; j++)
      prefix[j] = h = lg_fp_update(h, fpb + j, 1);
    t->o.on_prefixes(t->o.ud, f->fp, prefix, (uint32_t)L);
  }
  /* Only a checkpoint says the bytes before it were delivered; a start at
   * the end (read_from, the hook) skips bytes that may never have been. */
  if (at_checkpoint && start > 0 && t->o.on_resume != NULL)
    t->o.on_resume(t->o.ud, f->fp, start);
  file_t *p = lg__tail_find_pred(t, f, path);
  char *born = p == NULL ? lg__tail_birth_path(t, f, path) : NULL;
  if (born != NULL) {
    /* Seen first at a rotated name: one stream with the files of its
     * birth path (same lane even when they are all drained). */
    f->lane = mix64(hash_str(born));
    p = lg__tail_find_pred(t, f, born);
    if (p != NULL) {
      lg__tail_join_chain(f, p, born);
      lg_log_info(s->component,
                  "%s: first seen at this rotated name of %s; read after %s",
                  path, born, f->pred->path);
    }
  } else if (p != NULL) {
    f->pred = p;
    p->succ = f;
  }
  free(born);
  f->fresh = 1;
  if (f->pred != NULL) {
    p = f->pred;
    lg_log_info(s->component,
                "%s: replaced %s (%s); read once that one is drained", path,
                p->path, p->gone ? "rotated away" : "renamed");
  } else {
    lg__tail_order_with_fresh(t, f);
    if (f->pred != NULL || f->succ != NULL)
      lg_log_info(s->component,
                  "%s: one stream with files found with it: read after %s, "
                  "before %s (oldest write first)",
                  path, f->pred != NULL ? f->pred->path : "none",
                  f->succ != NULL ? f->succ->path : "none");
  }
  /* Copytruncated while lugger was stopped: what the entry had not read
   * yet is in logrotate's copy, read first. */
  if (stale &&
      lg__tail_resume_copy(f, old.fingerprint, old.fp_len, old.offset,
                           old.sent) != 0 &&
      old.offset > 0)
    lg_log_warn(s->component,
                "%s: truncated or rewritten while lugger was stopped, and no "
                "copy of it (its name plus a suffix, same first bytes) was "
                "found: what it held after offset %" PRIu64 " is not read",
                path, old.offset);
  if (f->pred != NULL) {
    f->lane = f->pred->lane; /* one stream: one worker, in order */
    f->wait_size = size;
    lg__tail_need_tick(t);
    if (size > 0)
      lg__tail_writer_switched(f);
  }
  if (f->succ != NULL) {
    /* A file that waits after it, with bytes: the writer left `f` too. */
    lg__tail_need_tick(t);
    lg__tail_track_waiting(f->succ);
  }
  /* Its lane is final now: other files found with it look it up there. */
  lg__tail_htab_put(t, H_FRESH, f, f->lane);
  if (size > start)
    lg__tail_enqueue(f); /* refused while it waits */
  else
    f->at_eof = 1;
}
