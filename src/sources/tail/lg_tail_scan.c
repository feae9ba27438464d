/* Discovery: globs and exclusions, watches on directories (or their
 * nearest existing parent), the rescan safety net, and inotify events. */
#include "sources/tail/lg_tail_internal.h"

#include "core/lg_metrics.h"

int lg__tail_excluded(const src_t *s, const char *path) {
  for (size_t i = 0; i < s->nexclude; i++)
    if (fnmatch(s->exclude[i], path, 0) == 0)
      return 1;
  return 0;
}

/* Does `path` match one of s's globs (the way glob(3) would)? */
int lg__tail_matches(const src_t *s, const char *path) {
  for (size_t i = 0; i < s->npaths; i++)
    if (fnmatch(s->paths[i], path, FNM_PATHNAME | FNM_PERIOD) == 0)
      return !lg__tail_excluded(s, path);
  return 0;
}

/* The path went away (or shows something we do not read). */
static void path_gone(lg_tail_t *t, const char *path) {
  file_t *f = lg__tail_by_path(t, path);
  if (f != NULL)
    lg__tail_mark_gone(f);
}

/* Makes what we follow agree with what is at `path` now. */
static void reconcile(src_t *s, const char *path, int first_scan) {
  lg_tail_t *t = s->t;
  struct stat st;
  if (stat(path, &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      lg__tail_note_clear(t, path,
                          N_OPEN | N_DIR | N_NOTREG | N_EMPTY | N_HOOK_FIRST |
                              N_PARKED);
    } else if (lg__tail_note_once(t, path, N_OPEN)) {
      lg_log_error(s->component, "%s: cannot stat: %s; skipped", path,
                   strerror(errno));
    }
    path_gone(t, path);
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    if (lg__tail_note_once(t, path, N_DIR))
      lg_log_warn(s->component, "%s: is a directory, not a log file; skipped",
                  path);
    path_gone(t, path);
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    if (lg__tail_note_once(t, path, N_NOTREG))
      lg_log_warn(s->component, "%s: not a regular file; skipped", path);
    path_gone(t, path);
    return;
  }
  file_t *f = lg__tail_by_id(t, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
  if (f != NULL) {
    if (f->src != s) {
      if (lg__tail_note_once(t, path, N_MULTI))
        lg_log_warn(s->component,
                    "%s: also matched by source %s, which reads it; skipped "
                    "here",
                    path, f->src->name);
      return;
    }
    f->seen = 1;
    if (f->is_copy)
      return; /* a copytruncate copy: read to its end, then closed */
    if (strcmp(f->path, path) == 0) {
      if (f->gone) { /* back at its path (renamed back, or a race) */
        path_gone(t, path);
        f->gone = 0;
        lg__tail_htab_put(t, H_PATH, f, hash_str(f->path));
      }
      return;
    }
    /* Another name for a file we read: a hard link if its own path still
     * shows it, else it was renamed to a name that matches too. */
    struct stat st2;
    if (!f->gone && stat(f->path, &st2) == 0 &&
        (uint64_t)st2.st_dev == f->dev && (uint64_t)st2.st_ino == f->ino)
      return;
    path_gone(t, path); /* whatever we had at the new name was replaced */
    lg_log_info(s->component, "%s: renamed to %s; following it there", f->path,
                path);
    /* It left its path: a new file there comes after it (find_pred). */
    if (f->left_path == NULL || f->drained) {
      free(f->left_path);
      f->left_path = lg_util_strdup(f->path);
    }
    lg__tail_mark_leaving(f);
    f->drained = 0;
    if (!f->gone)
      f->gone_ms = now_ms(t);
    f->gone = 0;
    if (lg__tail_set_path(f, path) != 0)
      lg_log_error(s->component, "%s: out of memory", path);
    lg__tail_cp_update(f, f->acked);
    return;
  }
  /* A file we do not read yet; whatever we read at this path was replaced
   * (rotation) and drains on its own. */
  path_gone(t, path);
  lg__tail_open_new(s, path, &st, first_scan);
}

static __thread lg_tail_t *glob_tail;
static __thread src_t *glob_src;

static int on_glob_error(const char *epath, int eerrno) {
  if (eerrno != ENOENT && eerrno != ENOTDIR && glob_tail != NULL &&
      lg__tail_note_once(glob_tail, epath, N_GLOB))
    lg_log_error(glob_src->component, "%s: cannot read directory: %s", epath,
                 strerror(eerrno));
  return 0; /* keep going with the rest */
}

static int has_magic(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] == '*' || s[i] == '?' || s[i] == '[')
      return 1;
  return 0;
}

/* Watches directory `p`, counting and reporting what cannot be watched.
 * Returns what lg_inotify_watch returned. */
static int try_watch(lg_tail_t *t, src_t *s, const char *p) {
  int rc = lg_inotify_watch(t->ino, p);
  if (rc == 0) {
    if (lg__tail_noted(t, p, N_WATCH)) {
      lg__tail_note_clear(t, p, N_WATCH);
      t->unwatched--;
    }
    return rc;
  }
  if (rc == -ENOSPC) {
    /* The per-user watch limit: said once for all directories (a node
     * has thousands of pod directories), with the numbers. */
    if (lg__tail_note_once(t, p, N_WATCH)) {
      t->unwatched++;
      if (!t->watch_limit_said) {
        t->watch_limit_said = 1;
        long max = lg__tail_proc_long("/proc/sys/fs/inotify/max_user_watches");
        lg_log_warn(s->component,
                    "inotify: cannot watch %s: this user's watch limit is "
                    "reached (fs.inotify.max_user_watches = %ld; lugger "
                    "watches %zu directories). Directories it cannot watch "
                    "are polled every rescan_interval (%" PRIu64 " ms) "
                    "instead, which finds the same changes later "
                    "(lugger_inotify_unwatched_directories counts them). "
                    "Raise it on the node: sysctl -w "
                    "fs.inotify.max_user_watches=%ld",
                    p, max, lg_inotify_count(t->ino), t->o.rescan_interval_ms,
                    max > 0 ? 2 * max : 524288);
      }
    }
    return rc;
  }
  if (rc != -ENOENT && rc != -ENOTDIR) {
    if (lg__tail_note_once(t, p, N_WATCH)) {
      t->unwatched++;
      lg_log_warn(s->component,
                  "%s: cannot watch: %s; changes are seen by the rescan "
                  "only",
                  p, strerror(-rc));
    }
    return rc;
  }
  return rc;
}

/* Watches `dir`, or its nearest existing ancestor so that the directory's
 * creation is seen. */
static void watch_dir_or_parent(lg_tail_t *t, src_t *s, const char *dir) {
  char p[4096];
  snprintf(p, sizeof p, "%s", dir);
  for (;;) {
    if (lg_inotify_watching(t->ino, p))
      return;
    int rc = try_watch(t, s, p);
    if (rc != -ENOENT && rc != -ENOTDIR)
      return;
    char *slash = strrchr(p, '/');
    if (slash == NULL || (slash == p && p[1] == '\0'))
      return;
    if (slash == p)
      p[1] = '\0';
    else
      *slash = '\0';
  }
}

/* Watches every directory a pattern's files can appear in, and the
 * directories above its wildcards so new subdirectories are seen. */
static void watch_pattern(lg_tail_t *t, src_t *s, const char *pat) {
  const char *slash = strrchr(pat, '/');
  if (slash == NULL) {
    watch_dir_or_parent(t, s, ".");
    return;
  }
  size_t dlen = slash == pat ? 1 : (size_t)(slash - pat);
  char dir[4096];
  if (dlen >= sizeof dir)
    return;
  memcpy(dir, pat, dlen);
  dir[dlen] = '\0';
  if (!has_magic(dir, dlen)) {
    watch_dir_or_parent(t, s, dir);
    return;
  }
  /* The static prefix, then every level from the first wildcard down. */
  size_t i = 0;
  size_t last_static = 0; /* length of the prefix before the component */
  while (i < dlen) {
    size_t j = i + 1;
    while (j < dlen && dir[j] != '/')
      j++;
    if (has_magic(dir + i, j - i))
      break;
    last_static = j;
    i = j;
  }
  char pre[4096];
  memcpy(pre, dir, last_static ? last_static : 1);
  pre[last_static ? last_static : 1] = '\0';
  watch_dir_or_parent(t, s, pre);
  for (size_t j = i + 1; j <= dlen; j++) {
    if (j < dlen && dir[j] != '/')
      continue;
    char lvl[4096];
    memcpy(lvl, dir, j);
    lvl[j] = '\0';
    glob_t g;
    glob_tail = t;
    glob_src = s;
    if (glob(lvl, GLOB_ONLYDIR, on_glob_error, &g) == 0) {
      for (size_t k = 0; k < g.gl_pathc; k++)
        if (!lg_inotify_watching(t->ino, g.gl_pathv[k]))
          try_watch(t, s, g.gl_pathv[k]); /* non-dirs fail (ENOTDIR) */
    }
    globfree(&g);
  }
}

/* Drops checkpoint entries of files that no longer exist at their path and
 * that we do not read: they can never be resumed. Runs after the first
 * scan, which has used them. */
void lg__tail_prune_checkpoints(lg_tail_t *t) {
  for (size_t i = lg_checkpoint_count(t->cp); i-- > 0;) {
    const lg_checkpoint_entry_t *e = lg_checkpoint_at(t->cp, i);
    if (lg__tail_by_id(t, e->dev, e->ino) != NULL)
      continue;
    struct stat st;
    if (stat(e->path, &st) == 0 && (uint64_t)st.st_dev == e->dev &&
        (uint64_t)st.st_ino == e->ino)
      continue; /* still there, just not matched (or unreadable) now */
    lg_checkpoint_remove(t->cp, e->dev, e->ino);
  }
}

void lg__tail_rescan(lg_tail_t *t) {
  /* Files opened by this rescan have keys above it; their first bytes
   * were just hashed. */
  uint64_t opened_before = t->next_key;
  t->fd_short = 0;
  lg__tail_fd_limits(t);
  lg__tail_iter_begin(t);
  for (file_t *f = t->files; f != NULL; f = f->next)
    f->seen = 0;
  for (src_t *s = t->srcs; s != NULL; s = s->next) {
    s->unread = 0;
    int first = !s->scanned;
    if (first) {
      /* A corrupt store was set aside: this may well be a restart, so
       * existing files are read from their start, never their end. */
      if (lg_checkpoint_corrupt(t->cp))
        s->had_checkpoints = 1;
      size_t n = lg_checkpoint_count(t->cp);
      for (size_t i = 0; i < n && !s->had_checkpoints; i++)
        s->had_checkpoints =
            lg__tail_matches(s, lg_checkpoint_at(t->cp, i)->path);
    }
    size_t found = 0;
    for (size_t i = 0; i < s->npaths; i++) {
      /* Watch first, then glob: a file created after its directory's
       * watch is an event, one created before is in the glob. The other
       * way round, a file created (and written) between the glob and the
       * watch (a new pod's directory, its container's and its 0.log made
       * in a row) waited for the next rescan. */
      if (t->ino != NULL)
        watch_pattern(t, s, s->paths[i]);
      glob_t g;
      glob_tail = t;
      glob_src = s;
      int rc = glob(s->paths[i], 0, on_glob_error, &g);
      if (rc == 0) {
        found += g.gl_pathc;
        for (size_t k = 0; k < g.gl_pathc; k++)
          if (!lg__tail_excluded(s, g.gl_pathv[k]))
            reconcile(s, g.gl_pathv[k], first);
      } else if (rc == GLOB_NOSPACE) {
        lg_log_error(s->component, "%s: glob: out of memory", s->paths[i]);
      }
      globfree(&g);
    }
    if (first && found == 0 && s->npaths > 0) {
      /* Silence here looks like a working collector with a quiet log; a
       * typo in a path (or a path of another node's layout) is the usual
       * cause, so name the patterns once. */
      char pats[1024];
      size_t o = 0;
      pats[0] = '\0';
      for (size_t i = 0; i < s->npaths && o < sizeof pats; i++)
        o += (size_t)snprintf(pats + o, sizeof pats - o, "%s%s",
                              i > 0 ? ", " : "", s->paths[i]);
      lg_log_warn(s->component,
                  "no file matches %s yet; files that appear later are "
                  "read from their start",
                  pats);
    }
    s->scanned = 1;
  }
  /* The safety net: files no glob found, growth, shrinking, deletion. */
  for (file_t *f = t->files, *nx; f != NULL; f = nx) {
    nx = f->next;
    if (f->closed)
      continue;
    if (!f->seen && !f->gone) {
      struct stat st;
      if (stat(f->path, &st) != 0 || (uint64_t)st.st_dev != f->dev ||
          (uint64_t)st.st_ino != f->ino)
        lg__tail_mark_gone(f);
    }
    lg__tail_check_stat(f);
    if (!f->closed && !f->gone) {
      /* Not the files this rescan opened: their fingerprints are a moment
       * old, and their first read turn checks them again while unread. */
      if (f->key <= opened_before)
        lg__tail_check_fingerprint(f);
      lg__tail_watch_real_dir(f);
    }
    /* A parked file (descriptor closed while idle) is looked at by its
     * path: one that grew waits for a descriptor, unread. */
    struct stat st;
    int have = 0;
    if (!f->closed && f->pred == NULL && f->src != NULL)
      have = f->parked
                 ? stat(f->path, &st) == 0 && (uint64_t)st.st_dev == f->dev &&
                       (uint64_t)st.st_ino == f->ino
                 : fstat(f->fd, &st) == 0;
    if (have && (uint64_t)st.st_size > f->read_off)
      f->src->unread += (uint64_t)st.st_size - f->read_off;
  }
  for (src_t *s = t->srcs; s != NULL; s = s->next)
    lg_metric_set(s->m_unread, (int64_t)s->unread);
  lg__tail_park_idle(t);
  lg_metric_set(t->m_unwatched, (int64_t)t->unwatched);
  lg_metric_set(t->m_watched, (int64_t)lg_inotify_count(t->ino));
  lg__tail_iter_end(t);
}

void lg__tail_on_rescan(uv_timer_t *h) {
  lg_tail_t *t = h->data;
  if (!t->closing)
    lg__tail_rescan(t);
}

void lg__tail_rescan_soon(lg_tail_t *t) {
  if (!t->closing)
    uv_timer_start(&t->rescan_timer, lg__tail_on_rescan, 0,
                   t->o.rescan_interval_ms);
}

void lg__tail_on_fs_event(void *ud, const char *path, const char *dir,
                          uint32_t ev) {
  lg_tail_t *t = ud;
  if (t->closing)
    return;
  if (ev & (LG_INOTIFY_OVERFLOW | LG_INOTIFY_DIR_GONE)) {
    if (ev & LG_INOTIFY_OVERFLOW)
      lg_log_warn("source", "inotify queue overflowed; rescanning everything");
    lg__tail_rescan_soon(t);
    return;
  }
  if ((ev & LG_INOTIFY_ISDIR) && (ev & (LG_INOTIFY_APPEARED | LG_INOTIFY_GONE)))
    lg__tail_rescan_soon(
        t); /* a new directory may hold (or lead to) log files */
  uint64_t hv = hash_str(path);
  file_t *f = lg__tail_by_path_h(t, path, hv);
  if (f != NULL && ev == LG_INOTIFY_MODIFIED) {
    /* The hot case: an append to a file we read. */
    if (f->pred != NULL) {
      lg__tail_track_waiting(f);
      return;
    }
    f->modify_hint = 1;
    lg__tail_enqueue(f);
    return;
  }
  if (f != NULL) {
    reconcile(f->src, path, 0);
    return;
  }
  if ((f = lg__tail_by_real_h(t, path, hv)) != NULL) {
    /* An event for the target of a symlink we read through. */
    if (ev == LG_INOTIFY_MODIFIED && f->pred != NULL) {
      lg__tail_track_waiting(f);
    } else if (ev == LG_INOTIFY_MODIFIED) {
      f->modify_hint = 1;
      lg__tail_enqueue(f);
    } else if (!f->gone) {
      reconcile(f->src, f->path, 0);
    }
    return;
  }
  if (ev == LG_INOTIFY_MODIFIED &&
      lg__tail_noted_h(t, path, hv,
                       N_OPEN | N_DIR | N_NOTREG | N_MULTI | N_PARKED))
    return; /* a known problem, or a file its hook skipped (an excluded
               pod's, written to all the time): the rescan retries it */
  for (src_t *s = t->srcs; s != NULL; s = s->next)
    if (lg__tail_matches(s, path)) {
      reconcile(s, path, 0);
      break;
    }
}

long lg__tail_proc_long(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  long v = -1;
  if (fscanf(f, "%ld", &v) != 1)
    v = -1;
  fclose(f);
  return v;
}
