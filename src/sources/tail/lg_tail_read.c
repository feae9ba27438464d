/* Reading: the ready queue served by an idle handle, one bounded read per
 * turn, framing (and multiline) into batches, the hand-off of full batches,
 * the flush timer, and the checks of size and first bytes. */
#include "sources/tail/lg_tail_internal.h"

lg_batch_t *lg__tail_take_batch(lg_tail_t *t) {
  lg_batch_t *b = t->spare;
  if (b != NULL) {
    t->spare = b->next;
    t->nspare--;
    b->next = NULL;
    return b;
  }
  return t->o.get_batch(t->o.ud);
}

void lg__tail_give_back_batch(lg_tail_t *t, lg_batch_t *b) {
  /* Files are read one at a time, so a few spares serve them all; more
   * would be arenas (touched, for deferred framing) outside the budget. */
  if (t->nspare >= SPARE_MAX) {
    lg_batch_destroy(b);
    return;
  }
  lg_batch_reset(b);
  b->next = t->spare;
  t->spare = b;
  t->nspare++;
}

/* A file's framer: deferred (framing left to the worker) when its source
 * asks for it and nothing groups lines after framing. */
lg_framer_t *lg__tail_framer(const src_t *s, lg_format_t format,
                             uint64_t offset) {
  lg_framer_t *fr = lg_framer_create(format, s->max_record_bytes, offset);
  if (fr != NULL && s->defer_framing && s->ml_conf == NULL)
    (void)lg_framer_set_deferred(fr, 1); /* other formats: framed here */
  return fr;
}

/* No records and no bytes left to frame. */
int lg__tail_batch_empty(const lg_batch_t *b) {
  return b->n == 0 && b->raw_format == 0;
}

/* Records held back: bytes in the framer, bytes in the batch not framed
 * yet (deferred framing: the flush ends them), lines in open groups. */
size_t lg__tail_held(const file_t *f) {
  size_t raw = f->batch != NULL && f->batch->raw_format != 0
                   ? (size_t)(f->batch->data_len - f->batch->raw_start)
                   : 0;
  return (f->fr != NULL ? lg_framer_pending_bytes(f->fr) : 0) + raw +
         (f->ml != NULL ? lg_ml_pending(f->ml) : 0);
}

/* The file may be checkpointed up to here: nothing before it is held by
 * the framer or in an open multiline group. */
uint64_t lg__tail_safe_offset(const file_t *f) {
  uint64_t o = lg_framer_safe_offset(f->fr);
  if (f->ml != NULL) {
    uint64_t g = lg_ml_safe_offset(f->ml);
    if (g < o)
      o = g;
  }
  return o;
}

static lg_batch_t *scratch(lg_tail_t *t) {
  if (t->scratch == NULL)
    t->scratch = lg_batch_create(t->o.read_bytes);
  return t->scratch;
}

/* Frames `n` bytes into the file's batch, through multiline grouping when
 * the source has it. 0 or a negative errno. */
static int frame_feed(file_t *f, const char *p, size_t n) {
  if (f->ml == NULL)
    return lg_framer_feed(f->fr, p, n, lg_time_now_ns(), f->batch);
  lg_batch_t *sb = scratch(f->t);
  if (sb == NULL)
    return -ENOMEM;
  int rc = lg_framer_feed(f->fr, p, n, lg_time_now_ns(), sb);
  int rc2 = lg_ml_process(f->ml, sb, f->batch, now_ms(f->t));
  lg_batch_reset(sb);
  return rc != 0 ? rc : rc2;
}

/* Emits what the framer holds, then every open group. */
static int frame_flush(file_t *f) {
  if (f->ml == NULL)
    return lg_framer_flush(f->fr, lg_time_now_ns(), f->batch);
  lg_batch_t *sb = scratch(f->t);
  if (sb == NULL)
    return -ENOMEM;
  int rc = lg_framer_flush(f->fr, lg_time_now_ns(), sb);
  int rc2 = lg_ml_process(f->ml, sb, f->batch, now_ms(f->t));
  lg_batch_reset(sb);
  int rc3 = lg_ml_flush(f->ml, f->batch);
  return rc != 0 ? rc : rc2 != 0 ? rc2 : rc3;
}

/* After a restart: counts the records of `b` that had been sent to an
 * output before it (they end at or before the checkpoint's sent mark),
 * and says how many once reading is past the mark or the file ends. */
static void count_reread(file_t *f, const lg_batch_t *b) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < b->n && b->recs[i].end_offset <= f->reread_end; i++)
    n++;
  f->reread += n;
  lg_metric_add(f->src->m_reread, (int64_t)n);
  if (n == b->n && b->checkpoint_offset < f->reread_end)
    return;
  lg__tail_reread_done(f);
}

void lg__tail_reread_done(file_t *f) {
  if (f->reread_end == 0)
    return;
  lg_log_info(f->src->component,
              "%s: %" PRIu64 " records read again after the restart had been "
              "sent to an output before it (offsets %" PRIu64 " to %" PRIu64
              "): at most that many duplicates",
              f->path, f->reread, f->reread_from, f->reread_end);
  f->reread_end = 0;
  /* Counted: the workers may frame the rest (see lg__tail_framer). */
  if (f->fr != NULL && f->src->defer_framing && f->ml == NULL)
    (void)lg_framer_set_deferred(f->fr, 1);
}

void lg__tail_account(file_t *f) {
  lg_tail_t *t = f->t;
  if (t->closing)
    return; /* the host may be going away: nobody reads any more */
  size_t m = (f->fr != NULL ? lg_framer_held_mem(f->fr) : 0) +
             (f->ml != NULL ? lg_ml_held_mem(f->ml) : 0);
  if (m == f->charged)
    return;
  int64_t delta = (int64_t)m - (int64_t)f->charged;
  f->charged = m;
  t->charged = (size_t)((int64_t)t->charged + delta);
  if (t->o.on_held != NULL)
    t->o.on_held(t->o.ud, delta);
}

/* Hands the file's batch to the engine if it holds records. */
void lg__tail_hand_off(file_t *f) {
  lg_batch_t *b = f->batch;
  if (b == NULL) {
    lg__tail_account(f);
    return;
  }
  if (b->raw_format != 0 && f->fr != NULL) {
    int rc = lg_framer_cut(f->fr, b);
    if (rc != 0) {
      /* Out of memory for the carry: the bytes stay in the batch and are
       * cut at a later hand-off. */
      lg_log_error(f->src->component, "%s: framing at offset %" PRIu64 ": %s",
                   f->path, f->read_off, strerror(-rc));
      return;
    }
  }
  /* The carry is what it will be until the next read: charged before the
   * batch goes (on_batch may pause reading or end a drain). */
  lg__tail_account(f);
  if (lg__tail_batch_empty(b)) {
    /* All of it was a line in progress (now the carry): the batch is not
     * kept for this file's next read, which will add to that line, not
     * to the batch. With many such files, the batches' arenas (filled by
     * deferred reads) added up outside the budget. */
    f->batch = NULL;
    lg__tail_give_back_batch(f->t, b);
    return;
  }
  lg_tail_t *t = f->t;
  f->batch = NULL;
  b->source_id = f->src->source_id;
  b->pipeline = f->pipeline;
  b->more_pipelines = f->more_pipelines;
  b->file_key = f->key;
  b->lane = f->lane;
  b->fingerprint = f->fp;
  b->checkpoint_offset = lg__tail_safe_offset(f);
  lg_batch_set_meta(b, f->meta);
  f->handed = b->checkpoint_offset;
  if (f->reread_end != 0)
    count_reread(f, b);
  t->o.on_batch(t->o.ud, b);
}

/* Emits what the framer holds and hands it on. Returns 0, or -ENOBUFS when
 * no batch is available (try again later). */
int lg__tail_flush_file(file_t *f) {
  if (f->fr == NULL)
    return 0;
  if (lg__tail_held(f) > 0) {
    if (f->batch == NULL && (f->batch = lg__tail_take_batch(f->t)) == NULL)
      return -ENOBUFS;
    int rc = frame_flush(f);
    if (rc != 0)
      lg_log_error(f->src->component, "%s: framing at offset %" PRIu64 ": %s",
                   f->path, lg__tail_safe_offset(f), strerror(-rc));
  }
  lg__tail_hand_off(f);
  return 0;
}

/* Emits the multiline groups that waited `timeout` for another line. */
static int flush_idle_groups(file_t *f, uint64_t now) {
  if (f->ml == NULL || lg_ml_pending(f->ml) == 0)
    return 0;
  if (f->batch == NULL && (f->batch = lg__tail_take_batch(f->t)) == NULL)
    return -ENOBUFS;
  int rc = lg_ml_flush_idle(f->ml, f->batch, now);
  if (rc != 0)
    lg_log_error(f->src->component, "%s: multiline at offset %" PRIu64 ": %s",
                 f->path, lg__tail_safe_offset(f), strerror(-rc));
  lg__tail_hand_off(f);
  return 0;
}

void lg__tail_cp_update(file_t *f, uint64_t offset) {
  lg_checkpoint_entry_t e = {f->path,   f->dev, f->ino, f->fp,
                             f->fp_len, offset, 0};
  if (lg_checkpoint_set(f->t->cp, &e) != 0)
    lg_log_error(f->src->component, "%s: checkpoint: out of memory", f->path);
}

static void on_read_turn(uv_idle_t *h);

void lg__tail_start_reader(lg_tail_t *t) {
  if (t->qhead != NULL && (!t->paused || t->draining) && !t->closing &&
      !t->starved && !uv_is_active((uv_handle_t *)&t->reader))
    uv_idle_start(&t->reader, on_read_turn);
}

void lg__tail_enqueue(file_t *f) {
  if (f->queued || f->closed || f->pred != NULL)
    return;
  lg_tail_t *t = f->t;
  f->queued = 1;
  f->qnext = NULL;
  if (t->qtail != NULL)
    t->qtail->qnext = f;
  else
    t->qhead = f;
  t->qtail = f;
  lg__tail_start_reader(t);
}

static file_t *dequeue(lg_tail_t *t) {
  file_t *f = t->qhead;
  if (f == NULL)
    return NULL;
  t->qhead = f->qnext;
  if (t->qhead == NULL)
    t->qtail = NULL;
  f->qnext = NULL;
  f->queued = 0;
  return f;
}

void lg__tail_unqueue(file_t *f) {
  lg_tail_t *t = f->t;
  if (!f->queued)
    return;
  file_t **pp = &t->qhead, *prev = NULL;
  while (*pp != NULL && *pp != f) {
    prev = *pp;
    pp = &(*pp)->qnext;
  }
  if (*pp == f) {
    *pp = f->qnext;
    if (t->qtail == f)
      t->qtail = prev;
  }
  f->qnext = NULL;
  f->queued = 0;
}

static void on_tick(uv_timer_t *h);

void lg__tail_need_tick(lg_tail_t *t) {
  if (t->closing || uv_is_active((uv_handle_t *)&t->tick_timer))
    return;
  uint64_t ms = 100;
  if (t->rotate_wait_ms / 4 < ms)
    ms = t->rotate_wait_ms / 4;
  if (t->settle_ms / 2 < ms)
    ms = t->settle_ms / 2;
  for (src_t *s = t->srcs; s != NULL; s = s->next) {
    if (s->flush_timeout_ms / 4 < ms)
      ms = s->flush_timeout_ms / 4;
    if (s->ml_conf != NULL && lg_ml_conf_timeout_ms(s->ml_conf) / 4 < ms)
      ms = lg_ml_conf_timeout_ms(s->ml_conf) / 4;
  }
  if (ms < 5)
    ms = 5;
  uv_timer_start(&t->tick_timer, on_tick, ms, ms);
}

/* Compares what fstat says with what we know: deletion, truncation,
 * growth. Used by the rescan and when an event brought no new bytes. */
void lg__tail_check_stat(file_t *f) {
  struct stat st;
  if (f->closed)
    return;
  if (f->parked) {
    lg__tail_check_parked(f);
    return;
  }
  if (f->pred != NULL) {
    lg__tail_track_waiting(f);
    return;
  }
  if (fstat(f->fd, &st) != 0)
    return;
  if (st.st_nlink == 0 && !f->deleted) {
    f->deleted = 1;
    lg__tail_mark_gone(f);
  }
  if ((uint64_t)st.st_size < f->read_off)
    lg__tail_restart_at_zero(f, "truncated");
  else if ((uint64_t)st.st_size > f->read_off)
    lg__tail_enqueue(f);
}

/* Re-hashes the fingerprint bytes: 1 if the file no longer starts with
 * them (shorter, or other bytes), 0 if it does or cannot be read. */
static int first_bytes_changed(file_t *f) {
  char buf[LG_FP_MAX];
  ssize_t n = pread(f->fd, buf, f->fp_len, 0);
  if (n < 0)
    return 0;
  return (size_t)n < f->fp_len ||
         lg_fp_update(LG_FP_INIT, buf, (size_t)n) != f->fp;
}

/* The read offset is inside the fingerprint (its bytes not all read): if
 * the file no longer starts with the fingerprinted bytes, it is restarted
 * at 0 (its copy found and read first) and 1 returned, else 0. `buf`
 * holds what this turn's read(2) at the read offset got (`n` bytes of
 * `want` asked; n < 0: no read): a read from 0 that got the fingerprint's
 * length, or ended short of it at the end of the file, shows the bytes
 * without another pread(2) (a file's first read turn, usually); else
 * they are read again (first_bytes_changed). */
static int unread_changed(file_t *f, const char *buf, ssize_t n, size_t want) {
  int changed;
  if (f->read_off == 0 && n >= 0 &&
      ((size_t)n >= f->fp_len || (size_t)n < want))
    changed = (size_t)n < f->fp_len ||
              lg_fp_update(LG_FP_INIT, buf, f->fp_len) != f->fp;
  else
    changed = first_bytes_changed(f);
  if (changed)
    lg__tail_restart_at_zero(f, "rewritten before it was read (its first "
                                "bytes changed)");
  return changed;
}

/* A file truncated and rewritten past our offset between two looks has
 * other first bytes. */
void lg__tail_check_fingerprint(file_t *f) {
  if (f->closed || f->parked || f->fp_len == 0 || f->pred != NULL)
    return;
  if (first_bytes_changed(f))
    lg__tail_restart_at_zero(f, "rewritten (its first bytes changed)");
}

/* R_WAIT: paused at rate_limit; the tick queues it again. */
enum { R_MORE, R_END, R_STARVED, R_WAIT };

/* rate_limit: adds what the file earned since the last refill to its
 * budget, which holds at most one second's worth. */
static void refill(file_t *f, uint64_t now) {
  uint64_t rate = f->src->rate_limit;
  if (f->tokens_ms == 0) {
    f->tokens = (int64_t)rate;
    f->tokens_ms = now;
    return;
  }
  uint64_t add = rate * (now - f->tokens_ms) / 1000;
  if (add == 0)
    return; /* keep tokens_ms: short intervals add up */
  f->tokens += (int64_t)add;
  if (f->tokens > (int64_t)rate)
    f->tokens = (int64_t)rate;
  f->tokens_ms = now;
}

/* The file read as much as its rate_limit allows for now. */
static int throttle(file_t *f) {
  if (!f->throttled)
    lg_metric_add(f->src->m_limited, 1);
  f->throttled = 1;
  lg__tail_need_tick(f->t);
  return R_WAIT;
}

static int read_turn(file_t *f) {
  lg_tail_t *t = f->t;
  /* A file that waits for the one before it in its stream is read once
   * that one is drained (lg__tail_enqueue refuses it until then). */
  if (f->pred != NULL)
    return R_END;
  if (f->parked) {
    int rc = lg__tail_unpark(f);
    if (rc == -EMFILE)
      return R_STARVED; /* no descriptor now: the tick tries again */
    if (rc != 0 && f->gone) {
      /* Left its path and nowhere in its directory: nothing more can be
       * read of it. */
      lg__tail_lost_parked(f, rc);
      return R_END;
    }
    if (rc != 0) {
      /* Gone from its directory: the rescan finds it at another path its
       * globs match, or ends it (lg__tail_mark_gone). */
      lg__tail_rescan_soon(t);
      return R_END;
    }
  }
  if (f->fresh) {
    f->fresh = 0;
    lg__tail_htab_del(t, H_FRESH, f);
  }
  /* Woken at its end by an event: one fstat tells an append from a
   * truncation (copytruncate) before we read from a wrong offset. */
  if (f->modify_hint && f->at_eof) {
    f->modify_hint = 0;
    struct stat st;
    if (fstat(f->fd, &st) == 0 && (uint64_t)st.st_size < f->read_off) {
      lg__tail_restart_at_zero(f, "truncated");
      return R_END; /* requeued by restart_at_zero */
    }
  }
  /* The fingerprint covers bytes not read yet (a file opened, or released
   * after waiting for the file before it, and not read since): if they
   * changed, logrotate copied and truncated the file and its writer filled
   * it again, which its size cannot show as nothing was read. Their copy
   * is found by the fingerprint and read first. Checked on every turn
   * that ends here without reading, and after this turn's read otherwise
   * (its bytes are those bytes when it starts at 0: unread_changed). */
  int unread_fp = f->read_off < f->fp_len;
  size_t want = t->o.read_bytes;
  if (f->src->rate_limit > 0) {
    refill(f, now_ms(t));
    if (f->tokens <= 0) {
      if (unread_fp && unread_changed(f, NULL, -1, 0))
        return R_END; /* requeued by restart_at_zero */
      return throttle(f);
    }
    f->throttled = 0;
    if ((uint64_t)f->tokens < want)
      want = (size_t)f->tokens;
  }
  if (f->batch == NULL && (f->batch = lg__tail_take_batch(t)) == NULL) {
    if (unread_fp && unread_changed(f, NULL, -1, 0))
      return R_END;
    return R_STARVED;
  }
  /* Deferred framing reads straight into the batch (the worker frames),
   * except on a turn whose bytes may yet be dropped (unread_fp): moving
   * the framer's state into the batch for them is not undone. */
  char *room = f->ml == NULL && f->fr != NULL && !unread_fp
                   ? lg_framer_raw_room(f->fr, f->batch, want)
                   : NULL;
  char *buf = room != NULL ? room : t->rbuf;
  ssize_t n;
  do
    n = read(f->fd, buf, want);
  while (n < 0 && errno == EINTR);
  if (unread_fp && unread_changed(f, buf, n, want))
    return R_END; /* what was read is not used; requeued from 0 */
  if (n < 0) {
    if (!f->read_error)
      lg_log_error(f->src->component, "%s: read at offset %" PRIu64 ": %s",
                   f->path, f->read_off, strerror(errno));
    f->read_error = 1;
    /* Not its end: its bytes from read_off on are still to be read.
     * lg__tail_at_end would close a rotated file (its grace over) and
     * release its successor, losing them; the tick reads it again
     * instead, without waiting for an append or a rescan. Idle as at its
     * end meanwhile (descriptor pressure may close it: it reopens at
     * read_off). */
    f->at_eof = 1;
    f->modify_hint = 0;
    lg__tail_hand_off(f);
    lg__tail_need_tick(t);
    return R_END;
  }
  if (n == 0) {
    /* An event promised a change but nothing was appended: the file may
     * have been truncated or deleted. */
    if (f->modify_hint) {
      f->modify_hint = 0;
      struct stat st;
      if (fstat(f->fd, &st) == 0 && (uint64_t)st.st_size < f->read_off) {
        lg__tail_restart_at_zero(f, "truncated");
        return R_END; /* requeued by restart_at_zero */
      }
    }
    return lg__tail_at_end(f);
  }
  f->read_error = 0;
  size_t len = (size_t)n;
  /* Upgrade a short fingerprint with bytes we read anyway. */
  if (f->fp_len < LG_FP_MAX && f->read_off <= f->fp_len &&
      f->read_off + len > f->fp_len) {
    size_t from = f->fp_len - f->read_off;
    size_t upto = LG_FP_MAX - f->read_off;
    if (upto > len)
      upto = len;
    f->fp = lg_fp_update(f->fp, buf + from, upto - from);
    f->fp_len = (uint32_t)(f->read_off + upto);
  }
  if (f->gone && f->drained && !f->is_copy && !f->late_noted) {
    f->late_noted = 1;
    lg_log_warn(f->src->component,
                "%s: %zu more bytes at offset %" PRIu64 " after the file "
                "that replaced it got bytes (more than one writer?); read "
                "now, after that file's first records",
                f->path, len, f->read_off);
  }
  f->read_off += len;
  if (f->src->rate_limit > 0)
    f->tokens -= (int64_t)len;
  f->last_data_ms = now_ms(t);
  f->at_eof = 0;
  int rc = 0;
  if (room != NULL)
    lg_framer_raw_commit(f->fr, f->batch, len, lg_time_now_ns());
  else
    rc = frame_feed(f, buf, len);
  if (rc != 0)
    lg_log_error(f->src->component, "%s: framing at offset %" PRIu64 ": %s",
                 f->path, f->read_off - len, strerror(-rc));
  lg__tail_account(f);
  /* Draining (lg_tail_drain): what the read completed goes on at once,
   * which is what frees memory. */
  if (f->batch->data_len >= t->o.batch_bytes || (t->paused && t->draining))
    lg__tail_hand_off(f);
  if (len == t->o.read_bytes || (len == want && f->src->rate_limit > 0)) {
    /* More to read, but other files are waiting for their turn: hand the
     * batch on now rather than keep one open batch per busy file (with
     * hundreds of busy containers that would hold hundreds of MiB that
     * the memory budget does not see). */
    if (t->qhead != NULL)
      lg__tail_hand_off(f);
    /* A read cut short by rate_limit is not the end of the file: pause
     * it until its budget refills. */
    if (f->src->rate_limit > 0 && (len < t->o.read_bytes || f->tokens <= 0))
      return throttle(f);
    return R_MORE;
  }
  /* A short read of a regular file means we are at its end for now. */
  return lg__tail_at_end(f);
}

/* The file has no more bytes right now. */
int lg__tail_at_end(file_t *f) {
  lg_tail_t *t = f->t;
  f->at_eof = 1;
  /* Files wait for a descriptor: this one may be closed now to make room
   * (lg_tail_idle.c). */
  if (t->fd_short > 0)
    lg__tail_rescan_soon(t);
  f->modify_hint = 0;
  lg__tail_hand_off(f);
  /* A file that left its path is drained once it has been idle at its end
   * for rotate_wait since it left and since its last bytes: a writer that
   * has not reopened its log yet appends there first. */
  uint64_t idle_since =
      f->gone_ms > f->last_data_ms ? f->gone_ms : f->last_data_ms;
  int waited = now_ms(t) - idle_since >= t->rotate_wait_ms;
  if (f->switched && f->succ != NULL) {
    /* The writer switched to the next file before this read began, and
     * this file has been quiet since: it is complete. Its last records (a
     * partial line, open groups) go on now, before the next file's. Not
     * quiet yet: the tick reads it again. */
    if (lg__tail_settled(f)) {
      if (lg__tail_flush_file(f) == -ENOBUFS)
        return R_STARVED;
      lg__tail_release_successor(f);
    } else {
      lg__tail_need_tick(t);
    }
  }
  if (f->gone) {
    /* Nobody writes to a copy: it closes at its end. */
    if (f->is_copy || waited) {
      if (lg__tail_flush_file(f) == -ENOBUFS)
        return R_STARVED;
      lg__tail_close_file(f); /* may free f */
      return R_END;
    } else {
      lg__tail_need_tick(t);
    }
  } else if (f->succ != NULL) {
    /* Renamed to a name we follow too: it stays open, but what replaced it
     * at its old path may be read once it is drained. */
    if (waited) {
      lg__tail_release_successor(f);
    } else {
      lg__tail_need_tick(t);
    }
  } else if (f->batch != NULL && lg__tail_batch_empty(f->batch)) {
    /* Idle files do not keep batches (a flush takes one when needed). */
    lg__tail_give_back_batch(t, f->batch);
    f->batch = NULL;
  }
  if (lg__tail_held(f) > 0)
    lg__tail_need_tick(t);
  return R_END;
}

/* Paused and draining: the file to read next, out of the queue, or NULL.
 * One file is drained until it holds nothing: another file's line read
 * meanwhile would only add to memory. While it waits at its end (its
 * writer is in the middle of the line) nothing is read; its writer, or
 * flush_timeout (the tick hands the partial line on), ends the wait. */
static file_t *next_to_drain(lg_tail_t *t) {
  file_t *f = t->drainer;
  if (f != NULL && lg__tail_held(f) == 0)
    f = t->drainer = NULL; /* its line went on */
  if (f == NULL)
    for (f = t->qhead; f != NULL && lg__tail_held(f) == 0; f = f->qnext)
      ;
  if (f == NULL || !f->queued)
    return NULL;
  t->drainer = f;
  lg__tail_unqueue(f);
  return f;
}

static void on_read_turn(uv_idle_t *h) {
  lg_tail_t *t = h->data;
  lg__tail_iter_begin(t);
  int nothing_to_drain = 0;
  for (int i = 0; i < READ_BUDGET && t->qhead != NULL &&
                  (!t->paused || t->draining) && !t->closing;
       i++) {
    file_t *f = t->paused ? next_to_drain(t) : dequeue(t);
    if (f == NULL) {
      nothing_to_drain = 1;
      break;
    }
    int r = read_turn(f);
    if (r == R_MORE) {
      lg__tail_enqueue(f);
    } else if (r == R_STARVED) {
      /* No batch to fill: wait for the tick to try again. */
      lg__tail_enqueue(f);
      t->starved = 1;
      lg__tail_need_tick(t);
      break;
    }
  }
  if (t->qhead == NULL || (t->paused && (!t->draining || nothing_to_drain)) ||
      t->starved || t->closing)
    uv_idle_stop(&t->reader);
  lg__tail_iter_end(t);
}

static void on_tick(uv_timer_t *h) {
  lg_tail_t *t = h->data;
  uint64_t now = now_ms(t);
  int again = 0;
  if (t->starved) {
    t->starved = 0;
    lg__tail_start_reader(t);
  }
  lg__tail_iter_begin(t);
  for (file_t *f = t->files, *nx; f != NULL; f = nx) {
    nx = f->next;
    if (f->closed)
      continue;
    if (f->throttled) {
      /* Paused at rate_limit: read on once its budget has refilled. Its
       * held partial line is not flushed meanwhile (it is not idle). */
      again = 1;
      refill(f, now);
      if (f->tokens > 0) {
        f->throttled = 0;
        lg__tail_enqueue(f);
      }
      continue;
    }
    if (f->pred != NULL) {
      /* Waiting: its first bytes say the writer switched (inotify may
       * not tell, e.g. for a path reached through a symlink). */
      lg__tail_track_waiting(f);
      again = 1;
      continue;
    }
    if (f->read_error) {
      /* Its last read failed (EIO...): read it again, on every tick,
       * until a read works (logged once). */
      again = 1;
      if (!f->queued)
        lg__tail_enqueue(f);
      continue;
    }
    if (f->gone || f->succ != NULL) {
      again = 1;
      if (!f->queued)
        lg__tail_enqueue(f); /* at_end closes it (or releases its successor)
                       once the grace is over; refused while it waits itself */
      if (f->gone)
        continue; /* at_end flushes everything before it closes */
    }
    if (f->queued || f->fr == NULL || lg__tail_held(f) == 0)
      continue;
    if (lg_framer_pending_bytes(f->fr) > 0) {
      if (now - f->last_data_ms >= f->src->flush_timeout_ms) {
        if (lg__tail_flush_file(f) == -ENOBUFS)
          again = 1;
        continue;
      }
      again = 1;
    }
    if (flush_idle_groups(f, now) == -ENOBUFS ||
        (f->ml != NULL && lg_ml_pending(f->ml) > 0))
      again = 1;
  }
  lg__tail_iter_end(t);
  if (!again && !t->starved && t->qhead == NULL)
    uv_timer_stop(&t->tick_timer);
}
