/*
 * lg_checkpoint_save.c - saving the checkpoint store (lg_checkpoint.c):
 * the store encoded as one JSON file and written atomically (temp file,
 * fsync, rename, fsync of the directory), then the journal emptied.
 *
 * Saves in the background (lg_checkpoint_save_async): the two fsyncs of a
 * save can take seconds on a busy node disk, and the loop thread must go
 * on reading and acking meanwhile. The store is encoded on the loop thread
 * (a snapshot, generation G+1) and written by libuv's threadpool
 * (lg_atomic_file.h); journal lines from then on carry G+1 and are also kept in
 * memory (`window`). When the save succeeds the journal is emptied and the
 * window written back (its lines are the changes after the snapshot); when it
 * fails the journal stays as it is: the next start applies its G+1 lines on top
 * of store G as well (lines of the loaded generation or later apply).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/lg_buf.h"
#include "core/lg_log.h"
#include "core/lg_metrics.h"
#include "core/lg_util.h"
#include "engine/lg_admin_http.h"
#include "sources/tail/lg_checkpoint_internal.h"

static int encode(const lg_checkpoint_t *c, uint64_t gen, lg_buf_t *b) {
  int rc = lg_buf_appendf(b, "{\"version\":%d,\"gen\":%" PRIu64 ",\"files\":[",
                          CP_VERSION, gen);
  for (size_t i = 0; i < c->n && rc == 0; i++) {
    rc |= lg_buf_append(b, i ? ",\n" : "\n", i ? 2 : 1);
    rc |= lg__cp_encode_entry(b, &c->e[i]);
  }
  rc |= lg_buf_putc(b, ']');
  rc |= lg__cp_encode_done(b, c);
  rc |= lg_buf_append(b, "}\n", 2);
  return rc ? -ENOMEM : 0;
}

/* A save failed at `step` with -rc: counted, logged once, then once per
 * FAIL_LOG_S, and shown on /readyz until a save succeeds. The store file
 * is untouched (the temp file is what failed), or, when the directory's
 * fsync failed, already the new one but not durable: either way a whole
 * store, and the changes stay in memory (and in the journal while it can
 * be written) for the retry. */
static void save_failed(lg_checkpoint_t *c, const char *step, int rc) {
  time_t now = time(NULL);
  c->fails++;
  lg_metric_add(c->m_fails, 1);
  char reason[600];
  if (c->fails == 1)
    c->fail_since = now;
  snprintf(reason, sizeof reason,
           "cannot save checkpoints: %s: %s: %s (%llu attempts since %lld s "
           "ago; the last saved checkpoints stay valid; retrying)",
           c->file, step, strerror(-rc), (unsigned long long)c->fails,
           (long long)(now - c->fail_since));
  lg_admin_http_set_unready("checkpoint", reason);
  if (c->fails == 1 || now - c->fail_logged >= FAIL_LOG_S) {
    c->fail_logged = now;
    int dir = strcmp(step, "fsync of directory") == 0;
    lg_log_error("checkpoint",
                 "%s: %s: %s; %s; reading and delivering go on and the save "
                 "is retried every checkpoint_interval (%llu attempts so far)",
                 c->file, step, strerror(-rc),
                 dir ? "the file holds the new checkpoints, but a machine "
                       "crash may bring back the previous ones (the journal "
                       "is kept)"
                     : "the file keeps the last checkpoints saved",
                 (unsigned long long)c->fails);
  }
}

/* Replaces the journal with a new one holding only `keep`: written to
 * <journal>.tmp and renamed over it, so a kill at any point leaves either
 * the old journal (its lines of older generations are skipped at the next
 * start, the newer ones still apply) or the new one. Emptying the journal
 * in place and then writing `keep` back lost `keep` to a kill between the
 * two calls: the acknowledgements journaled since the snapshot, whose
 * records were then read again. Returns 0, or -1 (the old journal stays,
 * still valid, and is emptied by a later save). */
static int journal_replace(lg_checkpoint_t *c, const lg_buf_t *keep) {
  size_t n = strlen(c->jfile) + 5;
  char *tmp = malloc(n);
  if (tmp == NULL)
    return -1;
  snprintf(tmp, n, "%s.tmp", c->jfile);
  int fd =
      open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, CP_MODE);
  size_t done = 0;
  while (fd >= 0 && done < keep->len) {
    ssize_t w = write(fd, keep->data + done, keep->len - done);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      break;
    done += (size_t)w;
  }
  if (fd < 0 || done != keep->len || rename(tmp, c->jfile) != 0) {
    if (fd >= 0)
      close(fd);
    unlink(tmp);
    free(tmp);
    return -1;
  }
  free(tmp);
  if (c->jfd >= 0)
    close(c->jfd);
  c->jfd = fd;
  c->jbytes = keep->len;
  return 0;
}

/* The store on disk is generation `gen` now, with every change up to the
 * snapshot: empty the journal, keeping `keep` (the lines written since
 * the snapshot, which carry `gen`). A journal left unemptied by a failed
 * truncation (or replacement) only holds lines of older generations,
 * skipped at the next start, and the lines of `gen`. A journal stopped by
 * a failed write (a full disk) is opened again, empty, and gets `keep`
 * too: the lines it took whole before it stopped. */
static void saved(lg_checkpoint_t *c, const lg_buf_t *keep) {
  int stopped = c->jfd < 0, kept = keep != NULL && keep->len > 0;
  if (kept && journal_replace(c, keep) == 0) {
    if (stopped)
      lg_log_info("checkpoint",
                  "%s: written again (emptied by the save that just landed)",
                  c->jfile);
  } else if (!stopped) {
    /* Nothing to keep: one call. A failed replacement keeps the old
     * journal, whose lines are all still right. */
    if (!kept && ftruncate(c->jfd, 0) == 0)
      c->jbytes = 0;
  } else {
    lg__cp_journal_open(c, 1);
    if (c->jfd >= 0) {
      lg_log_info("checkpoint",
                  "%s: written again (emptied by the save that just landed)",
                  c->jfile);
      if (kept) {
        lg_buf_t b = c->line;
        c->line = *keep;
        lg__cp_journal_flush(c);
        c->line = b;
      }
    }
  }
  if (c->fails > 0) {
    lg_log_info("checkpoint", "%s: saved again after %llu failed attempts",
                c->file, (unsigned long long)c->fails);
    c->fails = 0;
    lg_admin_http_set_unready("checkpoint", NULL);
  }
}

/* The snapshot of a background save (its lg_atomic_file_fill_cb): the
 * store as the generation the save was asked with (lg_checkpoint_save_async
 * counted it). It runs from within lg_atomic_file_write, or, when the save
 * was asked from within the previous one's `done` (lg_checkpoint_save_then),
 * once that returned: journal lines written in between carry this
 * generation and are in the snapshot too, so replaying them on top of it
 * after a kill changes nothing. */
static int save_fill(void *ud, lg_buf_t *b) {
  lg_checkpoint_t *c = ud;
  return encode(c, c->gen, b);
}

static void then_start(lg_checkpoint_t *c);

/* The final save's waiter (lg_checkpoint_save_then) gets `rc`. */
static void then_call(lg_checkpoint_t *c, int rc) {
  void (*cb)(void *, int) = c->then_cb;
  void *ud = c->then_ud;
  c->then_cb = NULL;
  c->then_mine = 0;
  cb(ud, rc);
}

/* Takes the result of the background save on the loop thread (its
 * lg_atomic_file_done_cb: from the after-work callback, or from within
 * lg__cp_save_wait). */
static void save_done(void *ud, int rc, const char *step) {
  lg_checkpoint_t *c = ud;
  lg__cp_journal_flush(c); /* lines still waiting belong to the window */
  c->saving = 0;
  lg_buf_t window = c->window;
  c->window = (lg_buf_t)LG_BUF_INIT;
  if (rc == 0) {
    saved(c, &window);
  } else {
    /* The store on disk is still the one before; the lines written since
     * the snapshot carry a newer generation, which the next start applies
     * on top of it too (journal_replay). Generations only grow: the next
     * snapshot gets a newer one still. */
    c->dirty = 1;
    save_failed(c, step, rc);
  }
  lg_buf_free(&window);
  /* A final save waits: this was it, or one in flight when it was asked
   * (without the changes made since): save again now. */
  if (c->then_cb != NULL && c->then_mine)
    then_call(c, rc);
  else if (c->then_cb != NULL)
    then_start(c);
}

int lg__cp_save_init(lg_checkpoint_t *c) {
  c->m_fails = lg_metrics_counter(
      "lugger_checkpoint_save_failures_total",
      "Checkpoint saves that failed (state_dir full, read-only, I/O "
      "errors); each is retried.",
      NULL);
  c->saver =
      lg_atomic_file_create(c->dir, c->file, CP_MODE, save_fill, save_done, c);
  return c->saver != NULL ? 0 : -ENOMEM;
}

void lg__cp_save_wait(lg_checkpoint_t *c) {
  if (c->saver != NULL)
    lg_atomic_file_wait(c->saver);
}

int lg_checkpoint_save_async(lg_checkpoint_t *c, uv_loop_t *loop) {
  if (c->saving)
    return -EBUSY;
  lg__cp_journal_flush(c); /* in order, before the snapshot */
  if (!c->dirty)
    return 0;
  c->saving = 1;
  c->dirty = 0;
  c->gen++; /* journal lines from now on go with the snapshot */
  c->window.len = 0;
  if (lg_atomic_file_write(c->saver, loop) != 0) {
    /* Not started (nothing was written in between): the old way. */
    c->saving = 0;
    c->dirty = 1;
    c->gen--;
    return lg_checkpoint_save(c);
  }
  return 0;
}

/* Starts the final save (or ends it: nothing to save, or a synchronous
 * save after a failure to start one). */
static void then_start(lg_checkpoint_t *c) {
  int rc = lg_checkpoint_save_async(c, c->then_loop);
  if (rc == 0 && c->saving)
    c->then_mine = 1; /* save_done ends it */
  else
    then_call(c, rc);
}

int lg_checkpoint_save_then(lg_checkpoint_t *c, uv_loop_t *loop,
                            void (*cb)(void *ud, int rc), void *ud) {
  if (c->then_cb != NULL)
    return -EBUSY;
  c->then_cb = cb;
  c->then_ud = ud;
  c->then_loop = loop;
  c->then_mine = 0;
  if (!c->saving)
    then_start(c);
  return 0;
}

int lg_checkpoint_save(lg_checkpoint_t *c) {
  lg__cp_save_wait(c);     /* one save at a time, in order */
  lg__cp_journal_flush(c); /* in order, before a truncation */
  if (!c->dirty)
    return 0;
  lg_buf_t b = LG_BUF_INIT;
  uint64_t gen = c->gen + 1;
  const char *step = "encode";
  int rc = encode(c, gen, &b);
  if (rc == 0)
    rc = lg_util_write_atomic(c->dir, c->file, b.data, b.len, CP_MODE, &step);
  lg_buf_free(&b);
  if (rc != 0) {
    /* As a background save's: generations only grow, so the journal
     * lines from now on apply on top of whichever store the disk holds
     * (the directory's fsync failed after the rename: possibly this one). */
    c->gen = gen;
    c->dirty = 1;
    save_failed(c, step, rc);
    return rc;
  }
  c->dirty = 0;
  c->gen = gen;
  saved(c, NULL);
  return 0;
}
