/*
 * lg_tail.c - file sources (lg_tail.h): the public API and the lifecycle
 * of the tailer and its sources. The overview is in lg_tail_internal.h.
 */
#include "sources/tail/lg_tail_internal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/lg_metrics.h"

static void on_checkpoint_timer(uv_timer_t *h) {
  lg_tail_t *t = h->data;
  /* Off the loop thread: a save's fsyncs can take seconds on a busy disk.
   * One still being written (-EBUSY) is followed by the next tick's. */
  lg_checkpoint_save_async(t->cp, t->loop);
}

lg_tail_t *lg_tail_create(uv_loop_t *loop, lg_checkpoint_t *cp,
                          const lg_tail_opts_t *opts) {
  lg_tail_t *t = calloc(1, sizeof *t);
  if (t == NULL)
    return NULL;
  t->loop = loop;
  t->cp = cp;
  t->o = *opts;
  if (t->o.rescan_interval_ms == 0)
    t->o.rescan_interval_ms = DEF_RESCAN_MS;
  if (t->o.checkpoint_interval_ms == 0)
    t->o.checkpoint_interval_ms = DEF_CHECKPOINT_MS;
  if (t->o.batch_bytes == 0)
    t->o.batch_bytes = DEF_BATCH_BYTES;
  if (t->o.read_bytes == 0)
    t->o.read_bytes = DEF_READ_BYTES;
  t->rotate_wait_ms =
      opts->rotate_wait_ms ? opts->rotate_wait_ms : DEF_ROTATE_WAIT_MS;
  t->settle_ms =
      opts->switch_settle_ms ? opts->switch_settle_ms : DEF_SWITCH_SETTLE_MS;
  lg__tail_fd_limits(t);
  t->rbuf = malloc(t->o.read_bytes);
  if (t->rbuf == NULL) {
    free(t);
    return NULL;
  }
  uv_idle_init(loop, &t->reader);
  uv_timer_init(loop, &t->rescan_timer);
  uv_timer_init(loop, &t->tick_timer);
  uv_timer_init(loop, &t->cp_timer);
  t->reader.data = t->rescan_timer.data = t->tick_timer.data =
      t->cp_timer.data = t;
  return t;
}

static void src_free(src_t *s) {
  if (s == NULL)
    return;
  lg_metric_set(s->m_unread, 0); /* a removed source holds nothing */
  free(s->name);
  free(s->component);
  lg_util_strv_free(s->paths, s->npaths);
  lg_util_strv_free(s->exclude, s->nexclude);
  lg_ml_conf_unref(s->ml_conf);
  free(s);
}

int lg_tail_add_source(lg_tail_t *t, const lg_tail_source_opts_t *o) {
  if (o->npaths == 0)
    return -EINVAL;
  src_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  const char *name = o->name ? o->name : "file";
  size_t clen = strlen(name) + 8;
  s->t = t;
  s->name = lg_util_strdup(name);
  s->component = malloc(clen);
  s->paths = lg_util_strv_copy(o->paths, o->npaths);
  s->exclude = lg_util_strv_copy(o->exclude, o->nexclude);
  if (s->name == NULL || s->component == NULL || s->paths == NULL ||
      s->exclude == NULL) {
    s->npaths = s->paths ? o->npaths : 0;
    s->nexclude = s->exclude ? o->nexclude : 0;
    src_free(s);
    return -ENOMEM;
  }
  snprintf(s->component, clen, "source.%s", name);
  s->npaths = o->npaths;
  s->nexclude = o->nexclude;
  s->source_id = o->source_id;
  s->pipeline = o->pipeline;
  s->read_from_head = o->read_from_head;
  s->format = o->format;
  s->max_record_bytes =
      o->max_record_bytes ? o->max_record_bytes : DEF_MAX_RECORD;
  s->flush_timeout_ms =
      o->flush_timeout_ms ? o->flush_timeout_ms : DEF_FLUSH_MS;
  s->rate_limit = o->rate_limit;
  s->max_rotated_open = o->max_rotated_open;
  s->rotated_bounded = o->rotated_bounded;
  s->m_reopened = lg_metrics_counter(
      "lugger_source_reopened_total",
      "Files closed while idle (descriptor limit, close_inactive, "
      "max_rotated_open) and opened again because they changed.",
      "source", name, NULL);
  if (s->rotated_bounded)
    s->m_rot_closed = lg_metrics_counter(
        "lugger_source_rotated_closed_total",
        "Rotated files closed once read to their end because their "
        "container had max_rotated_open newer ones open.",
        "source", name, NULL);
  if (s->rate_limit > 0)
    s->m_limited = lg_metrics_counter(
        "lugger_source_rate_limited_total",
        "Times a file's reading paused at the source's rate_limit (bytes "
        "per second); it resumes when its budget refills, nothing is "
        "dropped.",
        "source", name, NULL);
  s->m_reread = lg_metrics_counter(
      "lugger_records_reread_total",
      "Records read again after a restart that had been sent to an output "
      "before it (an upper bound of the duplicates the restart causes).",
      "source", name, NULL);
  s->on_file = o->on_file;
  s->file_ud = o->file_ud;
  s->ml_conf = lg_ml_conf_ref(o->multiline);
  s->defer_framing = o->defer_framing;
  s->m_unread = lg_metrics_gauge(
      "lugger_source_unread_bytes",
      "Bytes in the source's open files past what was read, at the last "
      "rescan (every rescan interval): growing means reading falls behind.",
      "source", name, NULL);
  if (t->srcs_tail != NULL)
    t->srcs_tail->next = s;
  else
    t->srcs = s;
  t->srcs_tail = s;
  if (t->started) {
    lg__tail_rescan_soon(t);       /* its first scan, with read_from applied */
    uv_timer_stop(&t->tick_timer); /* the tick interval may shrink */
    lg__tail_need_tick(t);
  }
  return 0;
}

int lg_tail_set_source_paths(lg_tail_t *t, uint32_t source_id,
                             const char *const *paths, size_t npaths) {
  src_t *s = t->srcs;
  while (s != NULL && s->source_id != source_id)
    s = s->next;
  if (s == NULL)
    return -ENOENT;
  char **copy = lg_util_strv_copy(paths, npaths);
  if (copy == NULL && npaths > 0)
    return -ENOMEM;
  lg_util_strv_free(s->paths, s->npaths);
  s->paths = copy;
  s->npaths = npaths;
  if (t->started)
    lg__tail_rescan_soon(t);
  return 0;
}

int lg_tail_remove_source(lg_tail_t *t, uint32_t source_id) {
  src_t **pp = &t->srcs, *s, *prev = NULL;
  while ((s = *pp) != NULL && s->source_id != source_id) {
    prev = s;
    pp = &s->next;
  }
  if (s == NULL)
    return -ENOENT;
  *pp = s->next;
  if (t->srcs_tail == s)
    t->srcs_tail = prev;
  /* Its files still point at it (name, logs) until they are forgotten. */
  s->next = t->removed;
  t->removed = s;
  lg__tail_iter_begin(t);
  for (file_t *f = t->files; f != NULL; f = f->next) {
    if (f->src != s || f->closed)
      continue;
    lg__tail_hand_off(
        f); /* records framed already go on; a partial line stays */
    lg_log_info(s->component,
                "%s: source removed by a reload; stopped reading at offset "
                "%" PRIu64 " (checkpoint kept at the last delivered record)",
                f->path, f->handed);
    lg__tail_end_reading(
        f); /* open groups are read again from the checkpoint */
    lg__tail_htab_del(t, H_PATH, f);
    f->keep_cp = 1;
    /* Its rotation chain is this source's too: all of it stops here. */
    if (f->succ != NULL)
      f->succ->pred = NULL;
    if (f->pred != NULL)
      f->pred->succ = NULL;
    f->succ = f->pred = NULL;
    lg__tail_maybe_forget(f);
  }
  lg__tail_iter_end(t);
  return 0;
}

int lg_tail_start(lg_tail_t *t) {
  if (t->started)
    return -EALREADY;
  t->started = 1;
  if (!t->no_inotify) {
    int err = 0;
    t->ino = lg_inotify_create(t->loop, lg__tail_on_fs_event, t, &err);
    if (t->ino == NULL && err == -EMFILE)
      lg_log_warn(
          "source",
          "inotify: cannot create an instance: this user's limit is "
          "reached (fs.inotify.max_user_instances = %ld); every "
          "directory is polled every rescan_interval (%" PRIu64
          " ms) instead, which finds the same changes later. Raise "
          "it on the node: sysctl -w fs.inotify.max_user_instances=%ld",
          lg__tail_proc_long("/proc/sys/fs/inotify/max_user_instances"),
          t->o.rescan_interval_ms,
          2 * lg__tail_proc_long("/proc/sys/fs/inotify/max_user_instances"));
    else if (t->ino == NULL)
      lg_log_warn("source",
                  "inotify unavailable (%s); changes are seen by the rescan "
                  "every %" PRIu64 " ms only",
                  strerror(-err), t->o.rescan_interval_ms);
  }
  t->m_inotify = lg_metrics_gauge(
      "lugger_inotify_available",
      "1 when file sources watch with inotify, 0 when they poll every "
      "rescan_interval (no inotify instance: fs.inotify.max_user_instances).",
      NULL);
  t->m_unwatched = lg_metrics_gauge(
      "lugger_inotify_unwatched_directories",
      "Directories inotify could not watch (fs.inotify.max_user_watches "
      "reached), polled every rescan_interval instead.",
      NULL);
  t->m_watched = lg_metrics_gauge("lugger_inotify_watched_directories",
                                  "Directories watched with inotify.", NULL);
  lg_metric_set(t->m_inotify, t->ino != NULL);
  lg__tail_rescan(t);
  lg__tail_prune_checkpoints(t);
  /* Files read to their end and gone (before the last run ended, or
   * found gone now): no more of their records come. An output waiting
   * for them (a request of the last run) is told, as for a file opened at
   * its checkpoint: their entries, which would have said so, are gone. */
  for (size_t i = 0;
       t->o.on_resume != NULL && i < lg_checkpoint_done_count(t->cp); i++) {
    const lg_checkpoint_done_t *d = lg_checkpoint_done_at(t->cp, i);
    t->o.on_resume(t->o.ud, d->fingerprint, d->offset);
  }
  uv_timer_start(&t->rescan_timer, lg__tail_on_rescan, t->o.rescan_interval_ms,
                 t->o.rescan_interval_ms);
  uv_timer_start(&t->cp_timer, on_checkpoint_timer, t->o.checkpoint_interval_ms,
                 t->o.checkpoint_interval_ms);
  return 0;
}

void lg_tail_pause(lg_tail_t *t) {
  t->paused = 1;
  uv_idle_stop(&t->reader);
}

void lg_tail_resume(lg_tail_t *t) {
  t->paused = 0;
  t->draining = 0;
  t->drainer = NULL;
  t->starved = 0; /* the engine has room again: try for a batch now */
  lg__tail_start_reader(t);
}

void lg_tail_drain(lg_tail_t *t, int on) {
  /* The file being drained stays so across drains (until it holds
   * nothing, or reading resumes): a batch it handed on ended this drain,
   * and the next one goes on with its line, not with another file's. */
  t->draining = on != 0;
  if (t->draining)
    lg__tail_start_reader(t);
}

size_t lg_tail_held_bytes(const lg_tail_t *t) { return t->charged; }

void lg_tail_ack(lg_tail_t *t, uint64_t file_key, uint64_t checkpoint_offset) {
  file_t *f = lg__tail_by_key(t, file_key);
  if (f == NULL)
    return; /* an earlier generation (truncated) or a forgotten file */
  if (checkpoint_offset > f->acked) {
    f->acked = checkpoint_offset;
    /* A closed file's entry is about to go (and its inode may already
     * belong to a new file). One that keeps its entry (its source was
     * removed, its hook stopped it, or it is a copytruncate copy the
     * globs match) leaves it to a file opened since on the same inode,
     * which has moved it on. Other copies have no entry. */
    if ((!f->closed ||
         (f->keep_cp && lg__tail_by_id(t, f->dev, f->ino) == NULL)) &&
        (!f->is_copy || f->keep_cp))
      lg__tail_cp_update(f, checkpoint_offset);
  }
  lg__tail_maybe_forget(f);
}

void lg_tail_sent(lg_tail_t *t, uint64_t file_key, uint64_t end_offset) {
  file_t *f = lg__tail_by_key(t, file_key);
  if (f == NULL || f->is_copy || end_offset <= f->sent ||
      end_offset <= f->acked)
    return;
  f->sent = end_offset;
  /* As for acks: a closed file's entry is about to go, unless it keeps it
   * and no file opened since owns the inode. */
  if (!f->closed || (f->keep_cp && lg__tail_by_id(t, f->dev, f->ino) == NULL)) {
    /* The entry has the fingerprint of the file's first bytes as they were
     * at its last ack or its opening. A file first seen shorter than the
     * fingerprint's length has a longer one since, and the checkpoint
     * refuses a mark of another fingerprint (another file on the inode):
     * until its first ack, the records of such a file (a new container's
     * log) read again after a restart went uncounted. The entry is moved
     * to the current fingerprint first, as an ack would. */
    const lg_checkpoint_entry_t *x = lg_checkpoint_find(t->cp, f->dev, f->ino);
    if (x != NULL && (x->fingerprint != f->fp || x->fp_len != f->fp_len))
      lg__tail_cp_update(f, f->acked);
    lg_checkpoint_set_sent(t->cp, f->dev, f->ino, f->fp, end_offset);
  }
}

void lg_tail_sent_flush(lg_tail_t *t) { lg_checkpoint_flush(t->cp); }

void lg_tail_each_read(lg_tail_t *t,
                       void (*cb)(void *ud, uint64_t fingerprint, uint64_t from,
                                  uint64_t to),
                       void *ud) {
  if (t == NULL)
    return;
  for (const file_t *f = t->files; f != NULL; f = f->next)
    if (f->handed > f->start && f->fp != LG_FP_INIT)
      cb(ud, f->fp, f->start, f->handed);
}

void lg_tail_each_prefixes(lg_tail_t *t,
                           void (*cb)(void *ud, uint64_t fingerprint,
                                      const uint64_t *prefix, uint32_t n),
                           void *ud) {
  if (t == NULL)
    return;
  char buf[LG_FP_MAX];
  uint64_t prefix[LG_FP_MAX];
  for (const file_t *f = t->files; f != NULL; f = f->next) {
    if (f->closed || f->fp_len == 0 || f->fp_len > LG_FP_MAX)
      continue;
    /* A file closed while idle (close_inactive) is opened for the read
     * and closed again: quiet files are the short ones. */
    int fd = f->fd;
    if (fd < 0 && f->parked) {
      struct stat st;
      fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
      if (fd >= 0 && (fstat(fd, &st) != 0 || (uint64_t)st.st_dev != f->dev ||
                      (uint64_t)st.st_ino != f->ino)) {
        close(fd);
        fd = -1;
      }
    }
    if (fd < 0)
      continue;
    ssize_t n = pread(fd, buf, f->fp_len, 0);
    if (fd != f->fd)
      close(fd);
    if (n != (ssize_t)f->fp_len)
      continue;
    uint64_t h = LG_FP_INIT;
    for (ssize_t j = 0; j < n; j++)
      prefix[j] = h = lg_fp_update(h, buf + j, 1);
    if (h == f->fp) /* else truncated since: its next read sees to it */
      cb(ud, f->fp, prefix, f->fp_len);
  }
}

void lg_tail_flush(lg_tail_t *t) {
  if (t == NULL)
    return;
  lg__tail_iter_begin(t);
  for (file_t *f = t->files; f != NULL; f = f->next)
    if (!f->closed)
      lg__tail_flush_file(f);
  lg__tail_iter_end(t);
}

int lg_tail_idle(const lg_tail_t *t) {
  if (t == NULL)
    return 1; /* closed: nothing is read any more */
  if (t->fd_short > 0)
    return 0; /* files wait for a descriptor */
  for (const file_t *f = t->files; f != NULL; f = f->next) {
    if (f->closed)
      continue;
    if (f->queued || !f->at_eof || f->gone ||
        (f->batch != NULL && !lg__tail_batch_empty(f->batch)) ||
        lg__tail_held(f) > 0)
      return 0;
  }
  return 1;
}

int lg_tail_read_to_end(const lg_tail_t *t) {
  if (t == NULL)
    return 1;
  for (const file_t *f = t->files; f != NULL; f = f->next)
    if (!f->closed && (f->queued || !f->at_eof))
      return 0;
  return 1;
}

int lg_tail_save(lg_tail_t *t) { return lg_checkpoint_save(t->cp); }

/* The hook stopped following `f` (e.g. its pod is excluded now): what was
 * read goes on, the rest of the file is left unread; its checkpoint entry
 * stays, so a later start (or a restart) knows where delivery ended. */
static void stop_file(file_t *f, const char *why) {
  lg_tail_t *t = f->t;
  /* Open multiline groups hold whole lines read while the file was still
   * followed: they go on too. A partial last line does not (its checkpoint
   * stays before it). */
  if (f->ml != NULL && lg_ml_pending(f->ml) > 0 &&
      (f->batch != NULL || (f->batch = lg__tail_take_batch(t)) != NULL)) {
    int rc = lg_ml_flush(f->ml, f->batch);
    if (rc != 0)
      lg_log_error(f->src->component, "%s: multiline at offset %" PRIu64 ": %s",
                   f->path, lg__tail_safe_offset(f), strerror(-rc));
  }
  lg__tail_hand_off(f);
  lg_log_info(f->src->component,
              "%s: %s; stopped reading at offset %" PRIu64
              " (the records read before it go on; its checkpoint stays at "
              "the last delivered one)",
              f->path, why[0] ? why : "its source's hook stopped it",
              f->handed);
  lg__tail_end_reading(f);
  f->keep_cp = 1;
  /* A file waiting after it (rotation) waits for nothing now; one before
   * it no longer leads to it. */
  file_t *succ = f->succ;
  if (f->pred != NULL)
    f->pred->succ = NULL;
  f->pred = NULL;
  if (succ != NULL) {
    f->succ = NULL;
    succ->pred = NULL;
    lg__tail_enqueue(succ);
  }
  if (!f->gone) {
    lg__tail_htab_del(t, H_PATH, f);
    lg__tail_note_once(t, f->path, N_PARKED);
  }
  lg__tail_maybe_forget(f);
}

void lg_tail_refresh_meta(lg_tail_t *t, uint32_t source_id) {
  /* hand_off may ack (and forget) files: freed after the loop. */
  lg__tail_iter_begin(t);
  for (file_t *f = t->files; f != NULL; f = f->next) {
    if (f->closed || f->src->source_id != source_id || f->src->on_file == NULL)
      continue;
    lg_tail_file_info_t info = {.path = f->path,
                                .refresh = 2,
                                .format = f->format,
                                .pipeline = f->pipeline,
                                .more_pipelines = f->more_pipelines,
                                .dev = f->dev,
                                .ino = f->ino};
    int rc = f->src->on_file(f->src->file_ud, &info);
    if (info.meta != NULL) { /* else the file keeps its metadata */
      lg_meta_unref(f->meta);
      f->meta = info.meta;
    }
    if (rc == LG_TAIL_SKIP)
      stop_file(f, info.why);
  }
  lg__tail_iter_end(t);
}

void lg_tail_rescan(lg_tail_t *t) { lg__tail_rescan_soon(t); }

static void tail_free(lg_tail_t *t) {
  while (t->files != NULL) {
    file_t *f = t->files;
    t->files = f->next;
    lg__tail_file_free(f);
  }
  lg_batch_destroy(t->scratch);
  while (t->spare != NULL) {
    lg_batch_t *b = t->spare;
    t->spare = b->next;
    b->next = NULL;
    lg_batch_destroy(b);
  }
  while (t->srcs != NULL) {
    src_t *s = t->srcs;
    t->srcs = s->next;
    src_free(s);
  }
  while (t->removed != NULL) {
    src_t *s = t->removed;
    t->removed = s->next;
    src_free(s);
  }
  for (size_t i = 0; i < t->nnotes_b; i++)
    for (note_t *n = t->notes[i], *nx; n != NULL; n = nx) {
      nx = n->next;
      free(n);
    }
  free(t->notes);
  for (int i = 0; i < H_N; i++)
    free(t->h[i].b);
  free(t->rbuf);
  void (*cb)(void *) = t->close_cb;
  void *ud = t->close_ud;
  free(t);
  if (cb != NULL)
    cb(ud);
}

static void on_part_closed(void *ud) {
  lg_tail_t *t = ud;
  if (--t->pending_closes == 0)
    tail_free(t);
}

static void on_handle_closed(uv_handle_t *h) { on_part_closed(h->data); }

void lg_tail_close(lg_tail_t *t, void (*cb)(void *ud), void *ud) {
  if (t == NULL)
    return;
  t->closing = 1;
  t->close_cb = cb;
  t->close_ud = ud;
  t->pending_closes = 4 + (t->ino != NULL);
  uv_close((uv_handle_t *)&t->reader, on_handle_closed);
  uv_close((uv_handle_t *)&t->rescan_timer, on_handle_closed);
  uv_close((uv_handle_t *)&t->tick_timer, on_handle_closed);
  uv_close((uv_handle_t *)&t->cp_timer, on_handle_closed);
  if (t->ino != NULL) {
    lg_inotify_close(t->ino, on_part_closed, t);
    t->ino = NULL;
  }
}

void lg__tail_disable_inotify(lg_tail_t *t) { t->no_inotify = 1; }

void lg__tail_drop_events(lg_tail_t *t) {
  if (t->ino != NULL)
    lg__inotify_drop_next(t->ino);
}

int lg__tail_watching(const lg_tail_t *t) { return t->ino != NULL; }
