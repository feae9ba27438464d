/*
 * lg_tail_internal.h - what the files of the tailer (lg_tail.h) share:
 * the tail, its sources and files, and the functions one file calls in
 * another. Not for use outside src/sources/tail/.
 *
 *   lg_tail.c         the public API: create, sources, start, pause, ack, close
 *   lg_tail_index.c   hash tables of files (path, id, real path, key, fresh
 *                     files by lane); notes
 *   lg_tail_open.c    opening a file: identity, checkpoint, order, metadata
 *   lg_tail_read.c    the ready queue, reading, framing, hand-off of batches
 *   lg_tail_rotate.c  rotation order (pred/succ chains), copytruncate, closing
 *   lg_tail_scan.c    discovery: globs, watches, rescans, inotify events
 *   lg_tail_idle.c    descriptors: closing idle files, reopening them
 *
 * The tailer: discovery (glob), watching (inotify + rescan), reading in
 * bounded chunks, framing into batches, and checkpoints.
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
#ifndef LG_TAIL_INTERNAL_H
#define LG_TAIL_INTERNAL_H

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
#include "core/lg_metrics.h"
#include "core/lg_time.h"
#include "core/lg_util.h"
#include "framing/lg_multiline.h"

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
/* Empty batches the tail keeps for its next reads (lg__tail_take_batch). */
#define SPARE_MAX 2

/* Problems reported once per path (bits of note_t.kinds). */
enum {
  N_OPEN = 1 << 0,       /* cannot open / stat */
  N_DIR = 1 << 1,        /* a directory matches the glob */
  N_NOTREG = 1 << 2,     /* a fifo, socket or device matches */
  N_EMPTY = 1 << 3,      /* empty file */
  N_MULTI = 1 << 4,      /* matched by two sources */
  N_WATCH = 1 << 5,      /* cannot watch the directory */
  N_GLOB = 1 << 6,       /* glob error in this directory */
  N_HOOK_FIRST = 1 << 7, /* the on_file hook skipped it at the first scan */
  /* The on_file hook skipped it (or stopped it): appends to it are not
   * worth a call; a rescan or another event asks the hook again. */
  N_PARKED = 1 << 8,
  N_COPY = 1 << 9, /* a copytruncate copy of a file we read: not read */
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
  int defer_framing;           /* lg_tail_source_opts_t */
  int (*on_file)(void *ud, lg_tail_file_info_t *info);
  void *file_ud;
  uint64_t rate_limit;      /* bytes/s per file, 0 = none (lg_tail_read.c) */
  int64_t max_rotated_open; /* when rotated_bounded (lg_tail_idle.c) */
  int rotated_bounded;
  lg_metric_t *m_rot_closed, *m_reopened;
  lg_metric_t *m_limited;
  lg_metric_t *m_reread; /* lugger_records_reread_total (lg_tail_read.c) */
  int scanned;           /* its first scan is done */
  /* At its first scan, a checkpoint matched its patterns: it ran before
   * on this state, so files without a checkpoint are new since then and
   * read_from = "tail" does not apply to them. */
  int had_checkpoints;
  /* lugger_source_unread_bytes: what its open files hold beyond the read
   * offset, summed at each rescan (the alert "files falling behind"). */
  lg_metric_t *m_unread;
  uint64_t unread;
  struct src *next;
} src_t;

/* The hash tables that index files: by path, by device+inode, by
 * file_key, by the target of a symlinked path (events name it), and the
 * fresh files (opened, not read yet) by lane, which the ordering of files
 * found together looks among (lg__tail_order_with_fresh). */
enum { H_PATH, H_ID, H_KEY, H_REAL, H_FRESH, H_N };

typedef struct file {
  lg_tail_t *t;
  src_t *src;
  char *path;
  char *real; /* the file's real path when `path` is a symlink, else NULL */
  lg_meta_t *meta;
  lg_format_t format;      /* the source's, or what its on_file hook chose */
  int pipeline;            /* likewise */
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
  uint64_t fp; /* hash of the first fp_len bytes */
  uint32_t fp_len;
  uint64_t read_off; /* file offset of the next read(2) */
  uint64_t start;    /* where this process began reading it (its stream:
                        0 again after a truncation) */
  uint64_t handed;   /* checkpoint_offset of the last batch handed on */
  uint64_t acked;    /* highest offset acknowledged */
  uint64_t sent;     /* end of the furthest record sent to an output */
  /* After a restart: records up to reread_end had been sent to an output
   * before it (the checkpoint's sent mark), so reading them again may
   * duplicate them. reread counts those records as they are handed on;
   * reread_end is 0 once reading is past it (lg_tail_read.c). */
  uint64_t reread_end, reread_from, reread;
  lg_framer_t *fr;
  lg_ml_t *ml;       /* multiline grouping after framing, or NULL */
  lg_batch_t *batch; /* being filled */
  /* Bytes of fr's and ml's buffers charged to the memory budget (told to
   * on_held): a line in progress, open groups (lg__tail_account). */
  size_t charged;
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
  unsigned keep_cp : 1;      /* its source was removed, or a copy its
                                source's globs match: keep the entry */
  unsigned drained : 1;      /* left its path and read to its end after the
                                writer switched (or idle for rotate_wait):
                                what follows it may be read */
  unsigned switched : 1;     /* the file after it has bytes: the writer has
                                switched, so its next read to the end
                                drains it */
  unsigned late_noted : 1;   /* bytes after it was drained were logged */
  unsigned fresh : 1;        /* opened and not read yet */
  unsigned throttled : 1;    /* paused at its source's rate_limit */
  unsigned parked : 1;       /* idle, its descriptor closed (lg_tail_idle.c);
                                fd is -1 until its next read turn */
  unsigned leaving : 1;      /* it has been gone or had a left_path: counted
                                in lg_tail.nleaving until it is forgotten */
  unsigned in_h[H_N];
  int64_t tokens;        /* rate_limit: bytes it may read now */
  uint64_t tokens_ms;    /* loop time tokens were last refilled */
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
  /* Tables a file could not be put in (out of memory before their first
   * allocation): bit 1 << H_*; lookups there may miss files. */
  unsigned h_lossy;
  /* Files (in `files`) that are or were gone, or have or had a left_path
   * (lg__tail_mark_leaving): while 0, no file can come before a new one
   * (lg__tail_find_pred), and every open file that is not a copy is in
   * H_PATH under its path. */
  size_t nleaving;
  file_t *qhead, *qtail;
  lg_batch_t *spare;   /* empty batches, chained by next */
  int nspare;          /* at most SPARE_MAX */
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
  /* Paused at the memory budget with nothing in flight (lg_tail_drain):
   * files holding bytes are read, one at a time (`drainer`, kept until it
   * holds none, or reading resumes), until they hold none; the other
   * files wait. */
  int draining;
  struct file *drainer;
  size_t charged; /* the files' `charged`, summed */
  int pending_closes;
  /* Descriptors (lg_tail_idle.c). */
  size_t nopen;      /* files with a descriptor open */
  size_t max_open;   /* at most this many */
  size_t nparked;    /* files closed while idle, ever */
  uint64_t fd_parks; /* times files were closed to make room */
  /* inotify limits (lg_tail_scan.c). */
  size_t unwatched;     /* directories not watched: watch limit reached */
  int watch_limit_said; /* the limit was logged */
  lg_metric_t *m_inotify, *m_unwatched, *m_watched;
  size_t fd_short; /* opens refused for lack of descriptors since the last
                      rescan began: the rescan retries them */
  /* Loops over `files` in progress. They call on_batch, from which the
   * engine may ack, so files are only freed when none runs. */
  int iterating;
  int forget_later;
  void (*close_cb)(void *);
  void *close_ud;
};

static inline uint64_t hash_str(const char *s) {
  return lg_fp_update(LG_FP_INIT, s, strlen(s));
}

static inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= UINT64_C(0xff51afd7ed558ccd);
  x ^= x >> 33;
  x *= UINT64_C(0xc4ceb9fe1a85ec53);
  x ^= x >> 33;
  return x;
}

static inline uint64_t hash_id(uint64_t dev, uint64_t ino) {
  return mix64(ino ^ mix64(dev));
}

static inline uint64_t now_ms(lg_tail_t *t) { return uv_now(t->loop); }

/* `f` is gone, or gets a left_path (see lg_tail.nleaving). */
static inline void lg__tail_mark_leaving(file_t *f) {
  if (!f->leaving) {
    f->leaving = 1;
    f->t->nleaving++;
  }
}
/* lg_tail_index.c */

void lg__tail_htab_put(lg_tail_t *t, int which, file_t *f, uint64_t hv);

void lg__tail_htab_del(lg_tail_t *t, int which, file_t *f);
file_t *lg__tail_by_path_h(lg_tail_t *t, const char *path, uint64_t hv);

file_t *lg__tail_by_path(lg_tail_t *t, const char *path);

file_t *lg__tail_by_id(lg_tail_t *t, uint64_t dev, uint64_t ino);

file_t *lg__tail_by_real_h(lg_tail_t *t, const char *path, uint64_t hv);

file_t *lg__tail_by_key(lg_tail_t *t, uint64_t key);
int lg__tail_note_once(lg_tail_t *t, const char *path, uint32_t kind);

int lg__tail_noted_h(lg_tail_t *t, const char *path, uint64_t hv,
                     uint32_t kinds);

int lg__tail_noted(lg_tail_t *t, const char *path, uint32_t kinds);
void lg__tail_note_clear(lg_tail_t *t, const char *path, uint32_t kinds);

/* lg_tail_open.c */
void lg__tail_watch_real_dir(file_t *f);

int lg__tail_set_path(file_t *f, const char *path);
void lg__tail_open_new(src_t *s, const char *path, const struct stat *st0,
                       int first_scan);

/* lg_tail_read.c */

lg_batch_t *lg__tail_take_batch(lg_tail_t *t);

void lg__tail_give_back_batch(lg_tail_t *t, lg_batch_t *b);
size_t lg__tail_held(const file_t *f);
lg_framer_t *lg__tail_framer(const src_t *s, lg_format_t format,
                             uint64_t offset);
int lg__tail_batch_empty(const lg_batch_t *b);
uint64_t lg__tail_safe_offset(const file_t *f);
void lg__tail_hand_off(file_t *f);
/* Tells on_held how much more (or less) the file's framer and multiline
 * groups hold since the last call: what they hold outside batches counts
 * against the memory budget as batches do. Called wherever that changes;
 * nothing once the tailer is closing. */
void lg__tail_account(file_t *f);
/* Logs the records read again after the restart (f->reread), once. */
void lg__tail_reread_done(file_t *f);
int lg__tail_flush_file(file_t *f);

void lg__tail_cp_update(file_t *f, uint64_t offset);

void lg__tail_start_reader(lg_tail_t *t);

void lg__tail_enqueue(file_t *f);

void lg__tail_unqueue(file_t *f);

void lg__tail_need_tick(lg_tail_t *t);
void lg__tail_check_stat(file_t *f);
void lg__tail_check_fingerprint(file_t *f);
int lg__tail_at_end(file_t *f);

/* lg_tail_rotate.c */

void lg__tail_file_free(file_t *f);
void lg__tail_maybe_forget(file_t *f);

void lg__tail_iter_begin(lg_tail_t *t);

void lg__tail_iter_end(lg_tail_t *t);
void lg__tail_writer_switched(file_t *f);
void lg__tail_track_waiting(file_t *f);
int lg__tail_settled(file_t *f);
void lg__tail_release_successor(file_t *f);
file_t *lg__tail_find_pred(lg_tail_t *t, const file_t *nf, const char *path);
char *lg__tail_birth_path(lg_tail_t *t, const file_t *nf, const char *path);
void lg__tail_join_chain(file_t *f, file_t *end, const char *q);
void lg__tail_order_with_fresh(lg_tail_t *t, file_t *f);
void lg__tail_end_reading(file_t *f);

/* Logs that `f` (read to its end) was deleted or renamed away, then
 * lg__tail_drop_file. May free `f`. */
void lg__tail_close_file(file_t *f);
/* Closes `f` for good and forgets it (maybe freed), without a log line:
 * the caller said why. */
void lg__tail_drop_file(file_t *f);
void lg__tail_mark_gone(file_t *f);
void lg__tail_restart_at_zero(file_t *f, const char *why);
/* After a restart, `f` (just opened, read from 0) is at the device+inode
 * of a checkpoint entry (`fpv` over its first `fp_len` bytes, `off` its
 * offset, `sent` its sent mark) but no longer holds those bytes: it was
 * copytruncated while lugger was stopped. Looks for logrotate's copy the
 * way a truncation seen while running does (same directory, f's name plus
 * a suffix, the entry's first bytes, at least `off` bytes, no entry of its
 * own) and reads it from `off` to its end before f (the copy comes first
 * in f's stream). Returns 0 when a copy was found, -1 if not (or out of
 * memory: logged). */
int lg__tail_resume_copy(file_t *f, uint64_t fpv, uint32_t fp_len, uint64_t off,
                         uint64_t sent);

/* lg_tail_idle.c */
/* Sizes max_open from the soft RLIMIT_NOFILE now (at the start, and at
 * every rescan: the limit of a running process can be changed, prlimit
 * --pid), closing idle files at once when more are open than it allows. */
void lg__tail_fd_limits(lg_tail_t *t);
void lg__tail_park(file_t *f);
int lg__tail_room_for_one(lg_tail_t *t);
/* open(2) of a log file within max_open, parking idle files for room.
 * Returns the fd, or -1 with errno (EMFILE when no room can be made). */
int lg__tail_open_fd(lg_tail_t *t, const char *path);
/* Reopens a parked file: by its path, or, when that shows another file or
 * none, under any name in its directory that has its inode (renamed while
 * closed). 0, -EMFILE (no descriptor now: try later), -ENOENT (not in its
 * directory any more) or another -errno. */
int lg__tail_unpark(file_t *f);
/* Ends a parked file that cannot be reopened (unpark's -errno `err`),
 * logged with the offset its reading ends at. */
void lg__tail_lost_parked(file_t *f, int err);
void lg__tail_park_idle(lg_tail_t *t);
void lg__tail_check_parked(file_t *f);

/* lg_tail_scan.c */
/* A number from a /proc file (an inotify sysctl), -1 when unreadable. */
long lg__tail_proc_long(const char *path);

int lg__tail_excluded(const src_t *s, const char *path);
int lg__tail_matches(const src_t *s, const char *path);
void lg__tail_prune_checkpoints(lg_tail_t *t);

void lg__tail_rescan(lg_tail_t *t);

void lg__tail_on_rescan(uv_timer_t *h);

void lg__tail_rescan_soon(lg_tail_t *t);

void lg__tail_on_fs_event(void *ud, const char *path, const char *dir,
                          uint32_t ev);

#endif
