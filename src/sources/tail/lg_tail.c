/*
 * lg_tail.c - file sources: discovery (glob), watching (inotify + rescan),
 * reading in bounded chunks, framing into batches, and checkpoints.
 *
 * Life of a file. A path that a source's glob matches is stat'ed; a regular
 * file whose device+inode is not open yet is opened, fingerprinted (hash of
 * its first bytes) and given a start offset (its checkpoint, the end for
 * read_from = "tail" at the first scan, else 0). It is then read whenever
 * it may have data: after an inotify event, after a rescan that finds it
 * grew, and again and again while reads return full chunks. When its path
 * stops showing it (renamed away, deleted) it is "gone": it is read to its
 * end, given a grace period in which a writer that still has it open may
 * add more (ROTATE_WAIT), flushed, and closed. Closed files stay known
 * until their last batch is acknowledged, then their checkpoint entry is
 * dropped.
 *
 * Order across rotation. A new file at a path that a file being drained
 * left (and a truncated file whose unread bytes are in logrotate's copy)
 * waits: it is not read until the file before it is drained, since one
 * writer switches files once and all it appended to the old file comes
 * first. The old file is drained soon after the new one has bytes: the
 * writer has switched, so a read of the old file to its end after that
 * has everything the writer put there (its held partial line and open
 * multiline groups are emitted then, as its last records). "Soon": once
 * the old file has also been quiet for switch_settle_ms (nothing unread,
 * its mtime that old), because one writer may be several threads, one
 * per stream (containerd's CRI logger), and a stream whose thread lags
 * still appends its last lines to the old file after another stream's
 * first line went to the new one. It stays open
 * for rotate_wait after that, in case another writer still appends to it;
 * such late bytes are read, after the new file's first records (order is
 * kept for one writer, best effort for several). An empty new file (the
 * writer reopened but wrote nothing yet) does not drain the old one
 * early: that waits for the old file to be idle for rotate_wait, as
 * before. A waiting file is still watched (size, fingerprint of its first
 * bytes), so a copytruncate before its first read is seen and its bytes
 * are read from the copy, which takes its place in the chain.
 *
 * Scheduling. Files that may have data sit in a FIFO "ready" queue served
 * by a uv_idle handle; each turn reads one chunk of one file and puts the
 * file back at the tail if the read was full, so a busy file cannot starve
 * the others and the loop stays responsive (at most READ_BUDGET chunks per
 * loop iteration).
 *
 * Identity. While a file is open its device+inode cannot be reused, so an
 * open file is found by device+inode alone; the fingerprint is what tells a
 * checkpoint entry (or a truncated and rewritten file) apart.
 */
#include "sources/tail/lg_tail.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/lg_fingerprint.h"
#include "core/lg_inotify.h"
#include "core/lg_log.h"
#include "framing/lg_multiline.h"
#include "core/lg_time.h"

#define DEF_RESCAN_MS 5000
#define DEF_CHECKPOINT_MS 1000
#define DEF_BATCH_BYTES (1u << 20)
#define DEF_READ_BYTES (256u << 10)
#define DEF_MAX_RECORD (1u << 20)
#define DEF_FLUSH_MS 1000
/* How long a file whose path went away (rotation by rename, deletion) is
 * kept open after it was read to its end: a writer that has not reopened
 * its log yet may still append to it. */
#define DEF_ROTATE_WAIT_MS 1000
/* How long a renamed file must have been quiet, once the file that
 * replaced it has bytes, before it counts as drained (switch_settle_ms). */
#define DEF_SWITCH_SETTLE_MS 100
/* Chunks read per loop iteration before other handles get a turn. */
#define READ_BUDGET 16

/* Problems reported once per path (bits of note_t.kinds). */
enum {
  N_OPEN = 1 << 0,   /* cannot open / stat */
  N_DIR = 1 << 1,    /* a directory matches the glob */
  N_NOTREG = 1 << 2, /* a fifo, socket or device matches */
  N_EMPTY = 1 << 3,  /* empty file */
  N_MULTI = 1 << 4,  /* matched by two sources */
  N_WATCH = 1 << 5,  /* cannot watch the directory */
  N_GLOB = 1 << 6,   /* glob error in this directory */
  N_HOOK_FIRST = 1 << 7, /* the on_file hook skipped it at the first scan */
  /* The on_file hook skipped it (or stopped it): appends to it are not
   * worth a call; a rescan or another event asks the hook again. */
  N_PARKED = 1 << 8,
};

typedef struct note {
  struct note *next;
  uint64_t h;
  uint32_t kinds;
  char path[];
} note_t;

typedef struct src {
  lg_tail_t *t;
  char *name;
  char *component; /* "source.<name>", for logs */
  uint32_t source_id;
  int pipeline;
  char **paths;
  size_t npaths;
  char **exclude;
  size_t nexclude;
  int read_from_head;
  lg_format_t format;
  size_t max_record_bytes;
  uint64_t flush_timeout_ms;
  const lg_ml_conf_t *ml_conf; /* multiline rules, or NULL */
  int (*on_file)(void *ud, lg_tail_file_info_t *info);
  void *file_ud;
  int scanned; /* its first scan is done */
  /* At its first scan, a checkpoint matched its patterns: it ran before
   * on this state, so files without a checkpoint are new since then and
   * read_from = "tail" does not apply to them. */
  int had_checkpoints;
  struct src *next;
} src_t;

/* The hash tables that index files: by path, by device+inode, by
 * file_key, and by the target of a symlinked path (events name it). */
enum { H_PATH, H_ID, H_KEY, H_REAL, H_N };

typedef struct file {
  lg_tail_t *t;
  src_t *src;
  char *path;
  char *real; /* the file's real path when `path` is a symlink, else NULL */
  lg_meta_t *meta;
  lg_format_t format; /* the source's, or what its on_file hook chose */
  int pipeline;       /* likewise */
  uint64_t more_pipelines; /* likewise (lg_tail_file_info_t) */
  int fd;
  uint64_t dev, ino;
  uint64_t key; /* file_key in batches; changes on truncation */
  /* lane in batches: the stream this file is part of. A file that replaced
   * another at its path (or a copytruncate copy) takes the lane of the file
   * before it; a file that starts a chain gets the hash of its path, so a
   * file that reappears at a path after the chain was forgotten is still
   * in the same lane. The engine pins lanes, not files, to workers. */
  uint64_t lane;
  uint64_t fp;  /* hash of the first fp_len bytes */
  uint32_t fp_len;
  uint64_t read_off; /* file offset of the next read(2) */
  uint64_t handed;   /* checkpoint_offset of the last batch handed on */
  uint64_t acked;    /* highest offset acknowledged */
  lg_framer_t *fr;
  lg_ml_t *ml;       /* multiline grouping after framing, or NULL */
  lg_batch_t *batch; /* being filled */
  unsigned closed : 1;
  unsigned gone : 1;    /* its path no longer shows it: draining */
  unsigned deleted : 1; /* link count 0 */
  unsigned at_eof : 1;  /* the last read reached the end */
  unsigned queued : 1;
  unsigned seen : 1;         /* found by the current rescan */
  unsigned modify_hint : 1;  /* an event said it changed */
  unsigned read_error : 1;   /* a read error was logged */
  unsigned forget_later : 1; /* acked while a loop over files was running */
  unsigned is_copy : 1;      /* a copytruncate copy read for its last bytes */
  unsigned keep_cp : 1;      /* its source was removed: keep the entry */
  unsigned drained : 1;      /* left its path and read to its end after the
                                writer switched (or idle for rotate_wait):
                                what follows it may be read */
  unsigned switched : 1;     /* the file after it has bytes: the writer has
                                switched, so its next read to the end
                                drains it */
  unsigned late_noted : 1;   /* bytes after it was drained were logged */
  unsigned fresh : 1;        /* opened and not read yet */
  unsigned in_h[H_N];
  uint64_t switched_ms;  /* loop time `switched` was set */
  uint64_t last_data_ms; /* loop time of the last read that got bytes */
  uint64_t gone_ms;      /* loop time it left its path */
  /* The path this file left when it was renamed to another name that a glob
   * matches (it is followed there): a new file at left_path still comes
   * after it. NULL otherwise. */
  char *left_path;
  /* Ordering. A file that replaced another at its path (rotation), or the
   * truncated file after its copytruncate copy, is not read until the file
   * before it (`pred`) is drained: one writer switches files once, so every
   * byte appended to the old file precedes the new file's bytes. */
  struct file *pred;  /* not read while set */
  struct file *succ;  /* the file waiting for this one */
  uint64_t wait_size; /* largest size seen while waiting */
  struct file *qnext;
  struct file *prev, *next;
  struct file *hnext[H_N];
  uint64_t hval[H_N];
} file_t;

typedef struct htab {
  file_t **b;
  size_t nb, n;
} htab_t;

struct lg_tail {
  uv_loop_t *loop;
  lg_checkpoint_t *cp;
  lg_tail_opts_t o;
  uint64_t rotate_wait_ms;
  uint64_t settle_ms; /* switch_settle_ms */
  src_t *srcs, *srcs_tail;
  src_t *removed; /* sources removed by a reload; their files may remain */
  file_t *files;  /* every known file, open or closed */
  htab_t h[H_N];
  file_t *qhead, *qtail;
  lg_batch_t *spare;   /* empty batches, chained by next */
  lg_batch_t *scratch; /* framed records on their way to multiline */
  note_t **notes;
  size_t nnotes_b, nnotes;
  char *rbuf;
  uint64_t next_key;
  uv_idle_t reader;
  uv_timer_t rescan_timer, tick_timer, cp_timer;
  lg_inotify_t *ino;
  int no_inotify;
  int started, paused, closing, starved;
  int pending_closes;
  /* Loops over `files` in progress. They call on_batch, from which the
   * engine may ack, so files are only freed when none runs. */
  int iterating;
  int forget_later;
  void (*close_cb)(void *);
  void *close_ud;
};

/* ------------------------------------------------------------------ */
/* Small helpers. */

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p != NULL)
    memcpy(p, s, n);
  return p;
}

static uint64_t hash_str(const char *s) {
  return lg_fp_update(LG_FP_INIT, s, strlen(s));
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= UINT64_C(0xff51afd7ed558ccd);
  x ^= x >> 33;
  x *= UINT64_C(0xc4ceb9fe1a85ec53);
  x ^= x >> 33;
  return x;
}

static uint64_t hash_id(uint64_t dev, uint64_t ino) {
  return mix64(ino ^ mix64(dev));
}

static uint64_t now_ms(lg_tail_t *t) { return uv_now(t->loop); }

/* ------------------------------------------------------------------ */
/* Hash tables of files (chained through file_t.hnext[which]). */

static int htab_grow(htab_t *h, int which) {
  size_t nb = h->nb ? h->nb * 2 : 64;
  file_t **b = calloc(nb, sizeof *b);
  if (b == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < h->nb; i++) {
    for (file_t *f = h->b[i], *nx; f != NULL; f = nx) {
      nx = f->hnext[which];
      size_t k = f->hval[which] & (nb - 1);
      f->hnext[which] = b[k];
      b[k] = f;
    }
  }
  free(h->b);
  h->b = b;
  h->nb = nb;
  return 0;
}

static void htab_put(lg_tail_t *t, int which, file_t *f, uint64_t hv) {
  htab_t *h = &t->h[which];
  if (f->in_h[which])
    return;
  /* If growing fails the table just gets longer chains. */
  if (h->n >= h->nb)
    htab_grow(h, which);
  if (h->nb == 0)
    return; /* out of memory before the first table: lookups miss */
  f->hval[which] = hv;
  size_t k = hv & (h->nb - 1);
  f->hnext[which] = h->b[k];
  h->b[k] = f;
  h->n++;
  f->in_h[which] = 1;
}

static void htab_del(lg_tail_t *t, int which, file_t *f) {
  htab_t *h = &t->h[which];
  if (!f->in_h[which])
    return;
  file_t **pp = &h->b[f->hval[which] & (h->nb - 1)];
  while (*pp != NULL && *pp != f)
    pp = &(*pp)->hnext[which];
  if (*pp == f)
    *pp = f->hnext[which];
  h->n--;
  f->in_h[which] = 0;
}

/* `hv` is hash_str(path): an event looks a path up in several tables (and
 * the notes), and hashing the path is most of each lookup's cost. */
static file_t *by_path_h(lg_tail_t *t, const char *path, uint64_t hv) {
  htab_t *h = &t->h[H_PATH];
  if (h->nb == 0)
    return NULL;
  for (file_t *f = h->b[hv & (h->nb - 1)]; f != NULL; f = f->hnext[H_PATH])
    if (f->hval[H_PATH] == hv && strcmp(f->path, path) == 0)
      return f;
  return NULL;
}

static file_t *by_path(lg_tail_t *t, const char *path) {
  return by_path_h(t, path, hash_str(path));
}

static file_t *by_id(lg_tail_t *t, uint64_t dev, uint64_t ino) {
  htab_t *h = &t->h[H_ID];
  if (h->nb == 0)
    return NULL;
  uint64_t hv = hash_id(dev, ino);
  for (file_t *f = h->b[hv & (h->nb - 1)]; f != NULL; f = f->hnext[H_ID])
    if (f->ino == ino && f->dev == dev)
      return f;
  return NULL;
}

static file_t *by_real_h(lg_tail_t *t, const char *path, uint64_t hv) {
  htab_t *h = &t->h[H_REAL];
  if (h->nb == 0)
    return NULL;
  for (file_t *f = h->b[hv & (h->nb - 1)]; f != NULL; f = f->hnext[H_REAL])
    if (f->hval[H_REAL] == hv && strcmp(f->real, path) == 0)
      return f;
  return NULL;
}

static file_t *by_key(lg_tail_t *t, uint64_t key) {
  htab_t *h = &t->h[H_KEY];
  if (h->nb == 0)
    return NULL;
  uint64_t hv = mix64(key);
  for (file_t *f = h->b[hv & (h->nb - 1)]; f != NULL; f = f->hnext[H_KEY])
    if (f->key == key)
      return f;
  return NULL;
}

/* ------------------------------------------------------------------ */
/* Problems reported once per path. */

static note_t **note_slot(lg_tail_t *t, const char *path, uint64_t hv) {
  if (t->nnotes_b == 0)
    return NULL;
  note_t **pp = &t->notes[hv & (t->nnotes_b - 1)];
  while (*pp != NULL && ((*pp)->h != hv || strcmp((*pp)->path, path) != 0))
    pp = &(*pp)->next;
  return pp;
}

/* Returns 1 the first time `kind` is noted for `path` (the caller then
 * logs), 0 after. */
static int note_once(lg_tail_t *t, const char *path, uint32_t kind) {
  uint64_t hv = hash_str(path);
  note_t **pp = note_slot(t, path, hv);
  if (pp != NULL && *pp != NULL) {
    if ((*pp)->kinds & kind)
      return 0;
    (*pp)->kinds |= kind;
    return 1;
  }
  if (t->nnotes >= t->nnotes_b) {
    size_t nb = t->nnotes_b ? t->nnotes_b * 2 : 64;
    note_t **b = calloc(nb, sizeof *b);
    if (b != NULL) {
      for (size_t i = 0; i < t->nnotes_b; i++)
        for (note_t *n = t->notes[i], *nx; n != NULL; n = nx) {
          nx = n->next;
          n->next = b[n->h & (nb - 1)];
          b[n->h & (nb - 1)] = n;
        }
      free(t->notes);
      t->notes = b;
      t->nnotes_b = nb;
    }
  }
  if (t->nnotes_b == 0)
    return 1;
  size_t len = strlen(path);
  note_t *n = malloc(sizeof *n + len + 1);
  if (n == NULL)
    return 1;
  n->h = hv;
  n->kinds = kind;
  memcpy(n->path, path, len + 1);
  n->next = t->notes[hv & (t->nnotes_b - 1)];
  t->notes[hv & (t->nnotes_b - 1)] = n;
  t->nnotes++;
  return 1;
}

static int noted_h(lg_tail_t *t, const char *path, uint64_t hv,
                   uint32_t kinds) {
  note_t **pp = note_slot(t, path, hv);
  return pp != NULL && *pp != NULL && ((*pp)->kinds & kinds) != 0;
}

static int noted(lg_tail_t *t, const char *path, uint32_t kinds) {
  return noted_h(t, path, hash_str(path), kinds);
}

/* Forgets `kinds` for `path`, so the problem is reported again if it comes
 * back after the path worked (or went away). */
static void note_clear(lg_tail_t *t, const char *path, uint32_t kinds) {
  note_t **pp = note_slot(t, path, hash_str(path));
  if (pp == NULL || *pp == NULL)
    return;
  (*pp)->kinds &= ~kinds;
  if ((*pp)->kinds == 0) {
    note_t *n = *pp;
    *pp = n->next;
    free(n);
    t->nnotes--;
  }
}

/* ------------------------------------------------------------------ */
/* Batches. */

static lg_batch_t *take_batch(lg_tail_t *t) {
  lg_batch_t *b = t->spare;
  if (b != NULL) {
    t->spare = b->next;
    b->next = NULL;
    return b;
  }
  return t->o.get_batch(t->o.ud);
}

static void give_back_batch(lg_tail_t *t, lg_batch_t *b) {
  lg_batch_reset(b);
  b->next = t->spare;
  t->spare = b;
}

/* Records held back: bytes in the framer, lines in open groups. */
static size_t held(const file_t *f) {
  return (f->fr != NULL ? lg_framer_pending_bytes(f->fr) : 0) +
         (f->ml != NULL ? lg_ml_pending(f->ml) : 0);
}

/* The file may be checkpointed up to here: nothing before it is held by
 * the framer or in an open multiline group. */
static uint64_t safe_offset(const file_t *f) {
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

/* Hands the file's batch to the engine if it holds records. */
static void hand_off(file_t *f) {
  lg_batch_t *b = f->batch;
  if (b == NULL || b->n == 0)
    return;
  lg_tail_t *t = f->t;
  f->batch = NULL;
  b->source_id = f->src->source_id;
  b->pipeline = f->pipeline;
  b->more_pipelines = f->more_pipelines;
  b->file_key = f->key;
  b->lane = f->lane;
  b->fingerprint = f->fp;
  b->checkpoint_offset = safe_offset(f);
  lg_batch_set_meta(b, f->meta);
  f->handed = b->checkpoint_offset;
  t->o.on_batch(t->o.ud, b);
}

/* Emits what the framer holds and hands it on. Returns 0, or -ENOBUFS when
 * no batch is available (try again later). */
static int flush_file(file_t *f) {
  if (f->fr == NULL)
    return 0;
  if (held(f) > 0) {
    if (f->batch == NULL && (f->batch = take_batch(f->t)) == NULL)
      return -ENOBUFS;
    int rc = frame_flush(f);
    if (rc != 0)
      lg_log_error(f->src->component, "%s: framing at offset %" PRIu64 ": %s",
                   f->path, safe_offset(f), strerror(-rc));
  }
  hand_off(f);
  return 0;
}

/* Emits the multiline groups that waited `timeout` for another line. */
static int flush_idle_groups(file_t *f, uint64_t now) {
  if (f->ml == NULL || lg_ml_pending(f->ml) == 0)
    return 0;
  if (f->batch == NULL && (f->batch = take_batch(f->t)) == NULL)
    return -ENOBUFS;
  int rc = lg_ml_flush_idle(f->ml, f->batch, now);
  if (rc != 0)
    lg_log_error(f->src->component, "%s: multiline at offset %" PRIu64 ": %s",
                 f->path, safe_offset(f), strerror(-rc));
  hand_off(f);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Checkpoint entries. */

static void cp_update(file_t *f, uint64_t offset) {
  lg_checkpoint_entry_t e = {f->path, f->dev, f->ino, f->fp, f->fp_len, offset};
  if (lg_checkpoint_set(f->t->cp, &e) != 0)
    lg_log_error(f->src->component, "%s: checkpoint: out of memory", f->path);
}

/* ------------------------------------------------------------------ */
/* The ready queue and the reader. */

static void on_read_turn(uv_idle_t *h);

static void start_reader(lg_tail_t *t) {
  if (t->qhead != NULL && !t->paused && !t->closing && !t->starved &&
      !uv_is_active((uv_handle_t *)&t->reader))
    uv_idle_start(&t->reader, on_read_turn);
}

static void enqueue(file_t *f) {
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
  start_reader(t);
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

static void unqueue(file_t *f) {
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

static void need_tick(lg_tail_t *t) {
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

/* ------------------------------------------------------------------ */
/* Closing and forgetting files. */

static void file_free(file_t *f) {
  if (f->fd >= 0)
    close(f->fd);
  lg_framer_destroy(f->fr);
  lg_ml_destroy(f->ml);
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
  if (by_id(t, f->dev, f->ino) == NULL && !f->keep_cp)
    lg_checkpoint_remove(t->cp, f->dev, f->ino);
  /* Closing released the successor; a predecessor cannot outlive this
   * file's wait. Unlink anyway so no pointer dangles. */
  if (f->succ != NULL)
    f->succ->pred = NULL;
  if (f->pred != NULL)
    f->pred->succ = NULL;
  for (int i = 0; i < H_N; i++)
    htab_del(t, i, f);
  if (f->prev != NULL)
    f->prev->next = f->next;
  else
    t->files = f->next;
  if (f->next != NULL)
    f->next->prev = f->prev;
  file_free(f);
}

/* Drops a closed file once everything handed on from it is acknowledged. */
static void maybe_forget(file_t *f) {
  if (!f->closed || f->acked < f->handed)
    return;
  if (f->t->iterating > 0) {
    f->forget_later = 1;
    f->t->forget_later = 1;
    return;
  }
  forget_now(f);
}

static void iter_begin(lg_tail_t *t) { t->iterating++; }

static void iter_end(lg_tail_t *t) {
  if (--t->iterating > 0 || !t->forget_later)
    return;
  t->forget_later = 0;
  for (file_t *f = t->files, *nx; f != NULL; f = nx) {
    nx = f->next;
    if (f->forget_later)
      forget_now(f);
  }
}

static void restart_at_zero(file_t *f, const char *why);
static void mark_gone(file_t *f);

/* The waiting file `f` has bytes: its writer has switched to it, so all it
 * wrote to the file before it is there already. That file is read to its
 * end once more (the next read, which runs after this) and then drained,
 * without waiting for rotate_wait. A copytruncate copy before `f` holds
 * `f`'s own earlier bytes: the file before the copy is the one the writer
 * left. */
static void writer_switched(file_t *f) {
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
  enqueue(p); /* refused while it waits itself: released in turn */
}

/* A file waiting for its predecessor is not read, but it is watched as if
 * it were: a writer may fill it and logrotate may copytruncate it before
 * its first read. Its fingerprint grows with its first bytes, and a shrink
 * or other first bytes restart it at 0 the way a truncation of a file being
 * read does, which reads the unread bytes from logrotate's copy first. */
static void track_waiting(file_t *f) {
  struct stat st;
  if (f->closed || f->is_copy || fstat(f->fd, &st) != 0)
    return;
  if (st.st_nlink == 0 && !f->deleted) {
    f->deleted = 1;
    mark_gone(f);
  }
  uint64_t size = (uint64_t)st.st_size;
  uint64_t seen = f->wait_size > f->read_off ? f->wait_size : f->read_off;
  if (size < seen) {
    restart_at_zero(f, "truncated while waiting for the file before it");
    return;
  }
  char buf[LG_FP_MAX];
  ssize_t n = f->fp_len < LG_FP_MAX ? pread(f->fd, buf, sizeof buf, 0)
                                    : pread(f->fd, buf, f->fp_len, 0);
  if (n < 0)
    return;
  if ((size_t)n < f->fp_len ||
      lg_fp_update(LG_FP_INIT, buf, f->fp_len) != f->fp) {
    restart_at_zero(f, "rewritten while waiting for the file before it");
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
    writer_switched(f);
}

/* The file's writer switched to the file after it (switched_ms): has it
 * been quiet since, for the settle time? Quiet means nothing unread (its
 * size is our read offset) and no write for settle_ms by its mtime: a
 * stream whose logger thread lags behind another's has put its last
 * lines there by then. rotate_wait after the switch at the latest, for a
 * second writer that keeps appending (its lines come later, as before). */
static int settled(file_t *f) {
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
static void release_successor(file_t *f) {
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
  track_waiting(s);
  if (s->pred == NULL && !s->closed) {
    lg_log_info(s->src->component,
                "%s: the file before it (%s) is drained; reading it", s->path,
                f->path);
    enqueue(s);
    if (s->gone)
      need_tick(s->t);
  }
}

/* The file a new file at `path` must wait for: the last of the chain of
 * files that left this path and are not drained yet, or NULL. */
static file_t *find_pred(lg_tail_t *t, const file_t *nf, const char *path) {
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

/* Where a file first seen at `path` was born, when `path` is a rotated
 * name (`q` + "." or "-" + suffix: a.log.1, a.log-20240501) of a path `q`
 * that a file of the same source is at or left: q (malloc'd), or NULL. A
 * collector that lags by a rotation (Docker renames a.log to a.log.1 and
 * writes a new a.log twice before we look) first sees a file at its
 * rotated name: it still belongs between the file that left q before it
 * and the file at q now. */
static char *birth_path(lg_tail_t *t, const file_t *nf, const char *path) {
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
        return xstrdup(q);
    }
  }
  return NULL;
}

/* Puts `f`, born at `q` (birth_path), into the chain of files that left
 * q, whose last file is `end`: before the files that are at q now and
 * still wait (they were born after `f`, which has left q already), else
 * last. */
static void join_chain(file_t *f, file_t *end, const char *q) {
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
  if (f->fd < 0 || fstat(f->fd, &st) != 0)
    return 0;
  return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

/* Files of one stream found together (the first scan, a pod's files once
 * its metadata arrived, a restart after rotations) have no order from
 * events: they are chained oldest first by their last write (mtime), so
 * that none is read before the ones its writer filled before it. Only
 * files not read yet are ordered; `f` is new and has no predecessor. */
static void order_with_fresh(lg_tail_t *t, file_t *f) {
  int64_t m = mtime_ns(f);
  file_t *newer = NULL, *older = NULL;
  int64_t newer_m = 0, older_m = 0;
  for (file_t *x = t->files; x != NULL; x = x->next) {
    if (x == f || x->closed || x->is_copy || !x->fresh || x->lane != f->lane ||
        x->src != f->src)
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
    unqueue(newer);
  } else if (older != NULL) {
    f->pred = older;
    older->succ = f;
  }
}

/* Ends the reading of `f`: out of the read queue, its descriptor closed,
 * out of the device+inode and symlink-target indexes, its batch (empty:
 * handed on before), framer and multiline groups released. Its path
 * entry, rotation chain and checkpoint entry are the caller's. */
static void end_reading(file_t *f) {
  lg_tail_t *t = f->t;
  unqueue(f);
  if (f->fd >= 0)
    close(f->fd);
  f->fd = -1;
  f->closed = 1;
  htab_del(t, H_ID, f);
  htab_del(t, H_REAL, f);
  if (f->batch != NULL) {
    give_back_batch(t, f->batch);
    f->batch = NULL;
  }
  lg_framer_destroy(f->fr);
  f->fr = NULL;
  lg_ml_destroy(f->ml);
  f->ml = NULL;
}

static void close_file(file_t *f) {
  lg_tail_t *t = f->t;
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
  end_reading(f); /* open groups were flushed by at_end before */
  htab_del(t, H_PATH, f);
  release_successor(f);
  maybe_forget(f);
}

/* The file's path no longer shows it: read it to its end and close it. */
static void mark_gone(file_t *f) {
  if (f->gone || f->closed)
    return;
  f->gone = 1;
  f->drained = 0;
  f->gone_ms = now_ms(f->t);
  htab_del(f->t, H_PATH, f);
  lg_log_info(
      f->src->component,
      "%s: no longer at its path; reading it to its end (offset %" PRIu64
      " so far)",
      f->path, f->read_off);
  enqueue(f);
  need_tick(f->t);
}

/* ------------------------------------------------------------------ */
/* Reading. */

/* Copytruncate: logrotate copied the file (to a name that starts with its
 * own, in the same directory: a.log.1, a.log-20240501) and truncated it.
 * Bytes we had not read yet are in the copy only; it is found by our
 * fingerprint. Returns an fd open on the copy (and its path and stat), or
 * -1. */
static int open_copy(file_t *f, char **cpath, struct stat *cst) {
  const char *fp = f->real != NULL ? f->real : f->path;
  const char *slash = strrchr(fp, '/');
  char dir[4096];
  const char *base = slash != NULL ? slash + 1 : fp;
  size_t dlen = slash == NULL ? 0 : slash == fp ? 1 : (size_t)(slash - fp);
  if (f->fp_len == 0 || dlen >= sizeof dir)
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
        (uint64_t)st.st_size <= f->read_off ||
        by_id(f->t, (uint64_t)st.st_dev, (uint64_t)st.st_ino) != NULL)
      continue;
    int cfd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (cfd < 0)
      continue;
    ssize_t n = pread(cfd, buf, f->fp_len, 0);
    if (n == (ssize_t)f->fp_len &&
        lg_fp_update(LG_FP_INIT, buf, (size_t)n) == f->fp &&
        fstat(cfd, cst) == 0 && lseek(cfd, (off_t)f->read_off, SEEK_SET) >= 0 &&
        (*cpath = xstrdup(p)) != NULL) {
      fd = cfd;
      break;
    }
    close(cfd);
  }
  closedir(d);
  return fd;
}

/* Moves the file's old stream (framer, batch, file_key, offsets) to a new
 * entry reading the copy from our offset to its end; `f` starts over with
 * `fr` at 0 once the copy is done, so the file's records stay in order. */
static int split_to_copy(file_t *f, lg_framer_t *fr, lg_ml_t *ml) {
  lg_tail_t *t = f->t;
  char *cpath = NULL;
  struct stat cst;
  int cfd = open_copy(f, &cpath, &cst);
  if (cfd < 0)
    return -1;
  file_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    close(cfd);
    free(cpath);
    return -1;
  }
  lg_log_info(f->src->component,
              "%s: reading its last %" PRIu64 " unread bytes from the copy %s",
              f->path, (uint64_t)cst.st_size - f->read_off, cpath);
  c->t = t;
  c->src = f->src;
  c->path = cpath;
  c->meta = (lg_meta_t *)lg_meta_ref(f->meta); /* the records are f's */
  c->format = f->format;
  c->pipeline = f->pipeline;
  c->more_pipelines = f->more_pipelines;
  c->fd = cfd;
  c->dev = (uint64_t)cst.st_dev;
  c->ino = (uint64_t)cst.st_ino;
  c->fp = f->fp;
  c->fp_len = f->fp_len;
  c->read_off = f->read_off;
  c->handed = f->handed;
  c->acked = f->acked;
  c->fr = f->fr;
  c->batch = f->batch;
  c->is_copy = c->gone = 1;
  c->gone_ms = c->last_data_ms = now_ms(t);
  /* The copy takes f's place in the order: after what f waited for, before
   * f's new content. */
  c->pred = f->pred;
  if (c->pred != NULL)
    c->pred->succ = c;
  c->succ = f;
  f->pred = c;
  htab_del(t, H_KEY, f);
  c->key = f->key;
  c->lane = f->lane;
  htab_put(t, H_KEY, c, mix64(c->key));
  htab_put(t, H_ID, c, hash_id(c->dev, c->ino));
  c->next = t->files;
  t->files->prev = c;
  t->files = c;
  f->fr = fr;
  c->ml = f->ml; /* open groups are lines of the copy */
  f->ml = ml;
  f->batch = NULL;
  enqueue(c);
  return 0;
}

/* Copytruncate (or any shrink below what was read), or the first bytes
 * changed: the file is a new stream from offset 0. Batches already handed
 * on keep their old file_key, whose late acks are then ignored. */
static void restart_at_zero(file_t *f, const char *why) {
  lg_tail_t *t = f->t;
  lg_log_warn(f->src->component,
              "%s: %s at read offset %" PRIu64 "; reading it again from 0",
              f->path, why, f->read_off);
  lg_framer_t *fr = lg_framer_create(f->format, f->src->max_record_bytes, 0);
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
        f->batch = take_batch(t);
      if (f->batch == NULL || lg_ml_flush(f->ml, f->batch) != 0)
        lg_log_error(f->src->component,
                     "%s: %zu lines of an open multiline group lost with the "
                     "truncation (no batch)",
                     f->path, lg_ml_pending(f->ml));
      lg_ml_reset(f->ml);
    }
    hand_off(f);
    if (f->batch != NULL) {
      give_back_batch(t, f->batch);
      f->batch = NULL;
    }
    htab_del(t, H_KEY, f);
    lg_framer_reset(f->fr, 0);
  }
  f->key = ++t->next_key;
  htab_put(t, H_KEY, f, mix64(f->key));
  if (lseek(f->fd, 0, SEEK_SET) < 0)
    lg_log_error(f->src->component, "%s: lseek: %s", f->path, strerror(errno));
  f->read_off = 0;
  f->handed = f->acked = 0;
  f->fp = LG_FP_INIT;
  f->fp_len = 0;
  f->wait_size = 0;
  f->at_eof = 0;
  f->modify_hint = 0;
  cp_update(f, 0);
  enqueue(f);
}

/* Compares what fstat says with what we know: deletion, truncation,
 * growth. Used by the rescan and when an event brought no new bytes. */
static void check_stat(file_t *f) {
  struct stat st;
  if (f->closed)
    return;
  if (f->pred != NULL) {
    track_waiting(f);
    return;
  }
  if (fstat(f->fd, &st) != 0)
    return;
  if (st.st_nlink == 0 && !f->deleted) {
    f->deleted = 1;
    mark_gone(f);
  }
  if ((uint64_t)st.st_size < f->read_off)
    restart_at_zero(f, "truncated");
  else if ((uint64_t)st.st_size > f->read_off)
    enqueue(f);
}

/* Re-hashes the fingerprint bytes: a file truncated and rewritten past our
 * offset between two looks has other first bytes. */
static void check_fingerprint(file_t *f) {
  if (f->closed || f->fp_len == 0 || f->pred != NULL)
    return;
  char buf[LG_FP_MAX];
  ssize_t n = pread(f->fd, buf, f->fp_len, 0);
  if (n < 0)
    return;
  if ((size_t)n < f->fp_len ||
      lg_fp_update(LG_FP_INIT, buf, (size_t)n) != f->fp)
    restart_at_zero(f, "rewritten (its first bytes changed)");
}

enum { R_MORE, R_END, R_STARVED };

static int at_end(file_t *f);

static int read_turn(file_t *f) {
  lg_tail_t *t = f->t;
  f->fresh = 0;
  /* Woken at its end by an event: one fstat tells an append from a
   * truncation (copytruncate) before we read from a wrong offset. */
  if (f->modify_hint && f->at_eof) {
    f->modify_hint = 0;
    struct stat st;
    if (fstat(f->fd, &st) == 0 && (uint64_t)st.st_size < f->read_off) {
      restart_at_zero(f, "truncated");
      return R_END; /* requeued by restart_at_zero */
    }
  }
  if (f->batch == NULL && (f->batch = take_batch(t)) == NULL)
    return R_STARVED;
  ssize_t n;
  do
    n = read(f->fd, t->rbuf, t->o.read_bytes);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (!f->read_error)
      lg_log_error(f->src->component, "%s: read at offset %" PRIu64 ": %s",
                   f->path, f->read_off, strerror(errno));
    f->read_error = 1;
    return at_end(f);
  }
  if (n == 0) {
    /* An event promised a change but nothing was appended: the file may
     * have been truncated or deleted. */
    if (f->modify_hint) {
      f->modify_hint = 0;
      struct stat st;
      if (fstat(f->fd, &st) == 0 && (uint64_t)st.st_size < f->read_off) {
        restart_at_zero(f, "truncated");
        return R_END; /* requeued by restart_at_zero */
      }
    }
    return at_end(f);
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
    f->fp = lg_fp_update(f->fp, t->rbuf + from, upto - from);
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
  f->last_data_ms = now_ms(t);
  f->at_eof = 0;
  int rc = frame_feed(f, t->rbuf, len);
  if (rc != 0)
    lg_log_error(f->src->component, "%s: framing at offset %" PRIu64 ": %s",
                 f->path, f->read_off - len, strerror(-rc));
  if (f->batch->data_len >= t->o.batch_bytes)
    hand_off(f);
  if (len == t->o.read_bytes) {
    /* More to read, but other files are waiting for their turn: hand the
     * batch on now rather than keep one open batch per busy file (with
     * hundreds of busy containers that would hold hundreds of MiB that
     * the memory budget does not see). */
    if (t->qhead != NULL)
      hand_off(f);
    return R_MORE;
  }
  /* A short read of a regular file means we are at its end for now. */
  return at_end(f);
}

/* The file has no more bytes right now. */
static int at_end(file_t *f) {
  lg_tail_t *t = f->t;
  f->at_eof = 1;
  f->modify_hint = 0;
  hand_off(f);
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
    if (settled(f)) {
      if (flush_file(f) == -ENOBUFS)
        return R_STARVED;
      release_successor(f);
    } else {
      need_tick(t);
    }
  }
  if (f->gone) {
    /* Nobody writes to a copy: it closes at its end. */
    if (f->is_copy || waited) {
      if (flush_file(f) == -ENOBUFS)
        return R_STARVED;
      close_file(f); /* may free f */
      return R_END;
    } else {
      need_tick(t);
    }
  } else if (f->succ != NULL) {
    /* Renamed to a name we follow too: it stays open, but what replaced it
     * at its old path may be read once it is drained. */
    if (waited) {
      release_successor(f);
    } else {
      need_tick(t);
    }
  } else if (f->batch != NULL && f->batch->n == 0) {
    /* Idle files do not keep batches (a flush takes one when needed). */
    give_back_batch(t, f->batch);
    f->batch = NULL;
  }
  if (held(f) > 0)
    need_tick(t);
  return R_END;
}

static void on_read_turn(uv_idle_t *h) {
  lg_tail_t *t = h->data;
  iter_begin(t);
  for (int i = 0;
       i < READ_BUDGET && t->qhead != NULL && !t->paused && !t->closing; i++) {
    file_t *f = dequeue(t);
    int r = read_turn(f);
    if (r == R_MORE) {
      enqueue(f);
    } else if (r == R_STARVED) {
      /* No batch to fill: wait for the tick to try again. */
      enqueue(f);
      t->starved = 1;
      need_tick(t);
      break;
    }
  }
  if (t->qhead == NULL || t->paused || t->starved || t->closing)
    uv_idle_stop(&t->reader);
  iter_end(t);
}

/* ------------------------------------------------------------------ */
/* Opening files. */

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
static void watch_real_dir(file_t *f) {
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
  if (rc != 0 && note_once(t, dir, N_WATCH))
    lg_log_warn(f->src->component,
                "%s: cannot watch: %s; changes to %s are seen by the rescan "
                "only",
                dir, strerror(-rc), f->path);
}

/* Indexes the file by its real path when that differs from `path`. */
static void index_real(file_t *f) {
  lg_tail_t *t = f->t;
  char *real = realpath(f->path, NULL);
  htab_del(t, H_REAL, f);
  free(f->real);
  f->real = NULL;
  if (real == NULL || strcmp(real, f->path) == 0) {
    free(real);
    return;
  }
  f->real = real;
  htab_put(t, H_REAL, f, hash_str(real));
  watch_real_dir(f);
}

static int set_meta(file_t *f) { return set_meta_ex(f, 1); }

static int set_path(file_t *f, const char *path) {
  char *p = xstrdup(path);
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
  htab_del(f->t, H_PATH, f);
  htab_put(f->t, H_PATH, f, hash_str(f->path));
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

/* `st0` is what stat(2) said of `path` just before. */
static void open_new(src_t *s, const char *path, const struct stat *st0,
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
      note_once(t, path, N_HOOK_FIRST);
    note_once(t, path, N_PARKED);
    return;
  }
  note_clear(t, path, N_PARKED);
  if (!first_scan && s->on_file != NULL && noted(t, path, N_HOOK_FIRST)) {
    note_clear(t, path, N_HOOK_FIRST);
    first_scan = 1;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    lg_meta_unref(info.meta);
    if (errno != ENOENT && note_once(t, path, N_OPEN))
      lg_log_error(s->component,
                   "%s: cannot open: %s; skipped until it can "
                   "be opened",
                   path, strerror(errno));
    return;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      by_id(t, (uint64_t)st.st_dev, (uint64_t)st.st_ino) != NULL) {
    close(fd); /* replaced between stat and open: the next event decides */
    lg_meta_unref(info.meta);
    return;
  }
  note_clear(t, path, N_OPEN | N_DIR | N_NOTREG);
  /* The fingerprint bytes. */
  char fpb[LG_FP_MAX];
  ssize_t L = pread(fd, fpb, sizeof fpb, 0);
  if (L < 0) {
    if (note_once(t, path, N_OPEN))
      lg_log_error(s->component, "%s: read at offset 0: %s; skipped", path,
                   strerror(errno));
    close(fd);
    lg_meta_unref(info.meta);
    return;
  }
  uint64_t dev = (uint64_t)st.st_dev, ino = (uint64_t)st.st_ino;
  uint64_t size = (uint64_t)st.st_size, start = 0;
  const char *how = "from its start";
  const lg_checkpoint_entry_t *e = lg_checkpoint_find(t->cp, dev, ino);
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
    if (e->fp_len <= (size_t)L &&
        lg_fp_update(LG_FP_INIT, fpb, e->fp_len) == e->fingerprint) {
      if (size < e->offset) {
        lg_log_warn(s->component,
                    "%s: shorter (%" PRIu64 " bytes) than its checkpoint "
                    "(%" PRIu64 "): truncated; reading from 0",
                    path, size, e->offset);
      } else {
        start = e->offset;
        how = "at its checkpoint";
      }
    } else {
      lg_log_info(s->component,
                  "%s: inode reused (first bytes differ from the checkpoint "
                  "of %s); a new file, reading from 0",
                  path, e->path);
    }
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
  if (f == NULL || (f->path = xstrdup(path)) == NULL ||
      (f->meta == NULL && set_meta_ex(f, 0) != 0) ||
      (f->fr = lg_framer_create(info.format, s->max_record_bytes, start)) ==
          NULL ||
      (s->ml_conf != NULL &&
       (f->ml = lg_ml_create(s->ml_conf, s->max_record_bytes)) == NULL)) {
    lg_meta_unref(info.meta);
    lg_log_error(s->component, "%s: out of memory; skipped", path);
    if (f != NULL) {
      f->fd = -1;
      file_free(f);
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
  f->dev = dev;
  f->ino = ino;
  f->key = ++t->next_key;
  f->lane = mix64(hash_str(path));
  f->fp = lg_fp_update(LG_FP_INIT, fpb, (size_t)L);
  f->fp_len = (uint32_t)L;
  f->read_off = f->handed = f->acked = start;
  f->last_data_ms = now_ms(t);
  f->next = t->files;
  if (t->files != NULL)
    t->files->prev = f;
  t->files = f;
  htab_put(t, H_PATH, f, hash_str(f->path));
  htab_put(t, H_ID, f, hash_id(dev, ino));
  htab_put(t, H_KEY, f, mix64(f->key));
  index_real(f);
  /* The entry exists from the start: after a crash the file resumes where
   * it was opened, not at read_from again. */
  cp_update(f, start);

  if (size == 0 && note_once(t, path, N_EMPTY))
    lg_log_info(s->component, "%s: empty file; waiting for data", path);
  if (size > 0)
    note_clear(t, path, N_EMPTY);
  if (L > 0 && memchr(fpb, 0, (size_t)L) != NULL)
    lg_log_warn(s->component,
                "%s: looks binary (NUL bytes in its first %zd bytes); read as "
                "text anyway",
                path, L);
  lg_log_info(s->component, "%s: following it %s (offset %" PRIu64 ")", path,
              how, start);
  file_t *p = find_pred(t, f, path);
  char *born = p == NULL ? birth_path(t, f, path) : NULL;
  if (born != NULL) {
    /* Seen first at a rotated name: one stream with the files of its
     * birth path (same lane even when they are all drained). */
    f->lane = mix64(hash_str(born));
    p = find_pred(t, f, born);
    if (p != NULL) {
      join_chain(f, p, born);
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
    order_with_fresh(t, f);
    if (f->pred != NULL || f->succ != NULL)
      lg_log_info(s->component,
                  "%s: one stream with files found with it: read after %s, "
                  "before %s (oldest write first)",
                  path, f->pred != NULL ? f->pred->path : "none",
                  f->succ != NULL ? f->succ->path : "none");
  }
  if (f->pred != NULL) {
    f->lane = f->pred->lane; /* one stream: one worker, in order */
    f->wait_size = size;
    need_tick(t);
    if (size > 0)
      writer_switched(f);
  }
  if (f->succ != NULL) {
    /* A file that waits after it, with bytes: the writer left `f` too. */
    need_tick(t);
    track_waiting(f->succ);
  }
  if (size > start)
    enqueue(f); /* refused while it waits */
  else
    f->at_eof = 1;
}

/* ------------------------------------------------------------------ */
/* Discovery. */

static int excluded(const src_t *s, const char *path) {
  for (size_t i = 0; i < s->nexclude; i++)
    if (fnmatch(s->exclude[i], path, 0) == 0)
      return 1;
  return 0;
}

/* Does `path` match one of s's globs (the way glob(3) would)? */
static int matches(const src_t *s, const char *path) {
  for (size_t i = 0; i < s->npaths; i++)
    if (fnmatch(s->paths[i], path, FNM_PATHNAME | FNM_PERIOD) == 0)
      return !excluded(s, path);
  return 0;
}

/* The path went away (or shows something we do not read). */
static void path_gone(lg_tail_t *t, const char *path) {
  file_t *f = by_path(t, path);
  if (f != NULL)
    mark_gone(f);
}

/* Makes what we follow agree with what is at `path` now. */
static void reconcile(src_t *s, const char *path, int first_scan) {
  lg_tail_t *t = s->t;
  struct stat st;
  if (stat(path, &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      note_clear(t, path,
                 N_OPEN | N_DIR | N_NOTREG | N_EMPTY | N_HOOK_FIRST | N_PARKED);
    } else if (note_once(t, path, N_OPEN)) {
      lg_log_error(s->component, "%s: cannot stat: %s; skipped", path,
                   strerror(errno));
    }
    path_gone(t, path);
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    if (note_once(t, path, N_DIR))
      lg_log_warn(s->component, "%s: is a directory, not a log file; skipped",
                  path);
    path_gone(t, path);
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    if (note_once(t, path, N_NOTREG))
      lg_log_warn(s->component, "%s: not a regular file; skipped", path);
    path_gone(t, path);
    return;
  }
  file_t *f = by_id(t, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
  if (f != NULL) {
    if (f->src != s) {
      if (note_once(t, path, N_MULTI))
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
        htab_put(t, H_PATH, f, hash_str(f->path));
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
      f->left_path = xstrdup(f->path);
    }
    f->drained = 0;
    if (!f->gone)
      f->gone_ms = now_ms(t);
    f->gone = 0;
    if (set_path(f, path) != 0)
      lg_log_error(s->component, "%s: out of memory", path);
    cp_update(f, f->acked);
    return;
  }
  /* A file we do not read yet; whatever we read at this path was replaced
   * (rotation) and drains on its own. */
  path_gone(t, path);
  open_new(s, path, &st, first_scan);
}

static __thread lg_tail_t *glob_tail;
static __thread src_t *glob_src;

static int on_glob_error(const char *epath, int eerrno) {
  if (eerrno != ENOENT && eerrno != ENOTDIR && glob_tail != NULL &&
      note_once(glob_tail, epath, N_GLOB))
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

/* Watches `dir`, or its nearest existing ancestor so that the directory's
 * creation is seen. */
static void watch_dir_or_parent(lg_tail_t *t, src_t *s, const char *dir) {
  char p[4096];
  snprintf(p, sizeof p, "%s", dir);
  for (;;) {
    if (lg_inotify_watching(t->ino, p))
      return;
    int rc = lg_inotify_watch(t->ino, p);
    if (rc == 0)
      return;
    if (rc != -ENOENT && rc != -ENOTDIR) {
      if (note_once(t, p, N_WATCH))
        lg_log_warn(s->component,
                    "%s: cannot watch: %s; changes are seen by the rescan "
                    "only",
                    p, strerror(-rc));
      return;
    }
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
          lg_inotify_watch(t->ino, g.gl_pathv[k]); /* non-dirs fail */
    }
    globfree(&g);
  }
}

/* Drops checkpoint entries of files that no longer exist at their path and
 * that we do not read: they can never be resumed. Runs after the first
 * scan, which has used them. */
static void prune_checkpoints(lg_tail_t *t) {
  for (size_t i = lg_checkpoint_count(t->cp); i-- > 0;) {
    const lg_checkpoint_entry_t *e = lg_checkpoint_at(t->cp, i);
    if (by_id(t, e->dev, e->ino) != NULL)
      continue;
    struct stat st;
    if (stat(e->path, &st) == 0 && (uint64_t)st.st_dev == e->dev &&
        (uint64_t)st.st_ino == e->ino)
      continue; /* still there, just not matched (or unreadable) now */
    lg_checkpoint_remove(t->cp, e->dev, e->ino);
  }
}

static void rescan(lg_tail_t *t) {
  iter_begin(t);
  for (file_t *f = t->files; f != NULL; f = f->next)
    f->seen = 0;
  for (src_t *s = t->srcs; s != NULL; s = s->next) {
    int first = !s->scanned;
    if (first) {
      size_t n = lg_checkpoint_count(t->cp);
      for (size_t i = 0; i < n && !s->had_checkpoints; i++)
        s->had_checkpoints = matches(s, lg_checkpoint_at(t->cp, i)->path);
    }
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
        for (size_t k = 0; k < g.gl_pathc; k++)
          if (!excluded(s, g.gl_pathv[k]))
            reconcile(s, g.gl_pathv[k], first);
      } else if (rc == GLOB_NOSPACE) {
        lg_log_error(s->component, "%s: glob: out of memory", s->paths[i]);
      }
      globfree(&g);
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
        mark_gone(f);
    }
    check_stat(f);
    if (!f->closed && !f->gone) {
      check_fingerprint(f);
      watch_real_dir(f);
    }
  }
  iter_end(t);
}

static void on_rescan(uv_timer_t *h) {
  lg_tail_t *t = h->data;
  if (!t->closing)
    rescan(t);
}

static void rescan_soon(lg_tail_t *t) {
  if (!t->closing)
    uv_timer_start(&t->rescan_timer, on_rescan, 0, t->o.rescan_interval_ms);
}

static void on_tick(uv_timer_t *h) {
  lg_tail_t *t = h->data;
  uint64_t now = now_ms(t);
  int again = 0;
  if (t->starved) {
    t->starved = 0;
    start_reader(t);
  }
  iter_begin(t);
  for (file_t *f = t->files, *nx; f != NULL; f = nx) {
    nx = f->next;
    if (f->closed)
      continue;
    if (f->pred != NULL) {
      /* Waiting: its first bytes say the writer switched (inotify may
       * not tell, e.g. for a path reached through a symlink). */
      track_waiting(f);
      again = 1;
      continue;
    }
    if (f->gone || f->succ != NULL) {
      again = 1;
      if (!f->queued)
        enqueue(f); /* at_end closes it (or releases its successor) once
                       the grace is over; refused while it waits itself */
      if (f->gone)
        continue; /* at_end flushes everything before it closes */
    }
    if (f->queued || f->fr == NULL || held(f) == 0)
      continue;
    if (lg_framer_pending_bytes(f->fr) > 0) {
      if (now - f->last_data_ms >= f->src->flush_timeout_ms) {
        if (flush_file(f) == -ENOBUFS)
          again = 1;
        continue;
      }
      again = 1;
    }
    if (flush_idle_groups(f, now) == -ENOBUFS ||
        (f->ml != NULL && lg_ml_pending(f->ml) > 0))
      again = 1;
  }
  iter_end(t);
  if (!again && !t->starved && t->qhead == NULL)
    uv_timer_stop(&t->tick_timer);
}

static void on_checkpoint_timer(uv_timer_t *h) {
  lg_tail_t *t = h->data;
  lg_checkpoint_save(t->cp);
}

/* ------------------------------------------------------------------ */
/* inotify events. */

static void on_fs_event(void *ud, const char *path, const char *dir,
                        uint32_t ev) {
  lg_tail_t *t = ud;
  if (t->closing)
    return;
  if (ev & (LG_INOTIFY_OVERFLOW | LG_INOTIFY_DIR_GONE)) {
    if (ev & LG_INOTIFY_OVERFLOW)
      lg_log_warn("source", "inotify queue overflowed; rescanning everything");
    rescan_soon(t);
    return;
  }
  if ((ev & LG_INOTIFY_ISDIR) && (ev & (LG_INOTIFY_APPEARED | LG_INOTIFY_GONE)))
    rescan_soon(t); /* a new directory may hold (or lead to) log files */
  uint64_t hv = hash_str(path);
  file_t *f = by_path_h(t, path, hv);
  if (f != NULL && ev == LG_INOTIFY_MODIFIED) {
    /* The hot case: an append to a file we read. */
    if (f->pred != NULL) {
      track_waiting(f);
      return;
    }
    f->modify_hint = 1;
    enqueue(f);
    return;
  }
  if (f != NULL) {
    reconcile(f->src, path, 0);
    return;
  }
  if ((f = by_real_h(t, path, hv)) != NULL) {
    /* An event for the target of a symlink we read through. */
    if (ev == LG_INOTIFY_MODIFIED && f->pred != NULL) {
      track_waiting(f);
    } else if (ev == LG_INOTIFY_MODIFIED) {
      f->modify_hint = 1;
      enqueue(f);
    } else if (!f->gone) {
      reconcile(f->src, f->path, 0);
    }
    return;
  }
  if (ev == LG_INOTIFY_MODIFIED &&
      noted_h(t, path, hv, N_OPEN | N_DIR | N_NOTREG | N_MULTI | N_PARKED))
    return; /* a known problem, or a file its hook skipped (an excluded
               pod's, written to all the time): the rescan retries it */
  for (src_t *s = t->srcs; s != NULL; s = s->next)
    if (matches(s, path)) {
      reconcile(s, path, 0);
      break;
    }
}

/* ------------------------------------------------------------------ */
/* Public API. */

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

static char **copy_strv(const char *const *v, size_t n) {
  char **out = calloc(n ? n : 1, sizeof *out);
  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    if ((out[i] = xstrdup(v[i])) == NULL) {
      while (i-- > 0)
        free(out[i]);
      free(out);
      return NULL;
    }
  }
  return out;
}

static void free_strv(char **v, size_t n) {
  for (size_t i = 0; v != NULL && i < n; i++)
    free(v[i]);
  free(v);
}

static void src_free(src_t *s) {
  if (s == NULL)
    return;
  free(s->name);
  free(s->component);
  free_strv(s->paths, s->npaths);
  free_strv(s->exclude, s->nexclude);
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
  s->name = xstrdup(name);
  s->component = malloc(clen);
  s->paths = copy_strv(o->paths, o->npaths);
  s->exclude = copy_strv(o->exclude, o->nexclude);
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
  s->on_file = o->on_file;
  s->file_ud = o->file_ud;
  s->ml_conf = lg_ml_conf_ref(o->multiline);
  if (t->srcs_tail != NULL)
    t->srcs_tail->next = s;
  else
    t->srcs = s;
  t->srcs_tail = s;
  if (t->started) {
    rescan_soon(t);                /* its first scan, with read_from applied */
    uv_timer_stop(&t->tick_timer); /* the tick interval may shrink */
    need_tick(t);
  }
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
  iter_begin(t);
  for (file_t *f = t->files; f != NULL; f = f->next) {
    if (f->src != s || f->closed)
      continue;
    hand_off(f); /* records framed already go on; a partial line stays */
    lg_log_info(s->component,
                "%s: source removed by a reload; stopped reading at offset "
                "%" PRIu64 " (checkpoint kept at the last delivered record)",
                f->path, f->handed);
    end_reading(f); /* open groups are read again from the checkpoint */
    htab_del(t, H_PATH, f);
    f->keep_cp = 1;
    /* Its rotation chain is this source's too: all of it stops here. */
    if (f->succ != NULL)
      f->succ->pred = NULL;
    if (f->pred != NULL)
      f->pred->succ = NULL;
    f->succ = f->pred = NULL;
    maybe_forget(f);
  }
  iter_end(t);
  return 0;
}

int lg_tail_start(lg_tail_t *t) {
  if (t->started)
    return -EALREADY;
  t->started = 1;
  if (!t->no_inotify) {
    int err = 0;
    t->ino = lg_inotify_create(t->loop, on_fs_event, t, &err);
    if (t->ino == NULL)
      lg_log_warn("source",
                  "inotify unavailable (%s); changes are seen by the rescan "
                  "every %" PRIu64 " ms only",
                  strerror(-err), t->o.rescan_interval_ms);
  }
  rescan(t);
  prune_checkpoints(t);
  uv_timer_start(&t->rescan_timer, on_rescan, t->o.rescan_interval_ms,
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
  t->starved = 0; /* the engine has room again: try for a batch now */
  start_reader(t);
}

void lg_tail_ack(lg_tail_t *t, uint64_t file_key, uint64_t checkpoint_offset) {
  file_t *f = by_key(t, file_key);
  if (f == NULL)
    return; /* an earlier generation (truncated) or a forgotten file */
  if (checkpoint_offset > f->acked) {
    f->acked = checkpoint_offset;
    /* A closed file's entry is about to go (and its inode may already
     * belong to a new file). One that keeps its entry (its source was
     * removed, or its hook stopped it) leaves it to a file opened since on
     * the same inode, which has moved it on. */
    if ((!f->closed || (f->keep_cp && by_id(t, f->dev, f->ino) == NULL)) &&
        !f->is_copy)
      cp_update(f, checkpoint_offset);
  }
  maybe_forget(f);
}

void lg_tail_flush(lg_tail_t *t) {
  if (t == NULL)
    return;
  iter_begin(t);
  for (file_t *f = t->files; f != NULL; f = f->next)
    if (!f->closed)
      flush_file(f);
  iter_end(t);
}

int lg_tail_idle(const lg_tail_t *t) {
  if (t == NULL)
    return 1; /* closed: nothing is read any more */
  for (const file_t *f = t->files; f != NULL; f = f->next) {
    if (f->closed)
      continue;
    if (f->queued || !f->at_eof || f->gone ||
        (f->batch != NULL && f->batch->n > 0) || held(f) > 0)
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
      (f->batch != NULL || (f->batch = take_batch(t)) != NULL)) {
    int rc = lg_ml_flush(f->ml, f->batch);
    if (rc != 0)
      lg_log_error(f->src->component, "%s: multiline at offset %" PRIu64 ": %s",
                   f->path, safe_offset(f), strerror(-rc));
  }
  hand_off(f);
  lg_log_info(f->src->component,
              "%s: %s; stopped reading at offset %" PRIu64
              " (the records read before it go on; its checkpoint stays at "
              "the last delivered one)",
              f->path, why[0] ? why : "its source's hook stopped it",
              f->handed);
  end_reading(f);
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
    enqueue(succ);
  }
  if (!f->gone) {
    htab_del(t, H_PATH, f);
    note_once(t, f->path, N_PARKED);
  }
  maybe_forget(f);
}

void lg_tail_refresh_meta(lg_tail_t *t, uint32_t source_id) {
  /* hand_off may ack (and forget) files: freed after the loop. */
  iter_begin(t);
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
  iter_end(t);
}

void lg_tail_rescan(lg_tail_t *t) { rescan_soon(t); }

static void tail_free(lg_tail_t *t) {
  while (t->files != NULL) {
    file_t *f = t->files;
    t->files = f->next;
    file_free(f);
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
