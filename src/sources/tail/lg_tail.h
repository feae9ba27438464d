/*
 * lg_tail.h - file sources: find, watch, read and frame log files.
 *
 * One lg_tail serves every file source on one libuv loop. It finds files
 * by glob, watches their directories with inotify (create, modify, move,
 * delete; a queue overflow triggers a full rescan) and rescans
 * periodically as a safety net. A file's identity is device + inode + a
 * fingerprint of its first bytes, so inode reuse and copytruncate are
 * told apart from appends. Rotation by rename drains the old file to its
 * end before it is closed, and before the file that replaced it is read;
 * a deleted file is drained, then closed.
 *
 * Bytes are read in bounded chunks and framed (lg_framing.h) into batches
 * of one file; full batches (or what is there when a file has no more
 * data) go to the `on_batch` callback. The engine acknowledges a batch's
 * `checkpoint_offset` with lg_tail_ack once every batch before it of the
 * same file is delivered; lg_tail then moves the file's checkpoint.
 */
#ifndef LG_TAIL_H
#define LG_TAIL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "framing/lg_framing.h"
#include "pipeline/lg_batch.h"
#include "sources/tail/lg_checkpoint.h"

typedef struct lg_tail lg_tail_t;

/* What a source's on_file hook is asked about, and says about, one file. */
typedef struct lg_tail_file_info {
  const char *path;        /* in: the path the file was found at */
  int refresh;             /* in: 0 for a new file; 1 when a followed file was
                              renamed, 2 on lg_tail_refresh_meta (then meta NULL
                              keeps the file's metadata): only `meta` is used,
                              and the return value only with refresh = 2 */
  lg_format_t format;      /* in: the source's format; out: this file's */
  int pipeline;            /* in: the source's pipeline; out: this file's */
  uint64_t more_pipelines; /* out: further pipelines (bit = index) that get
                              a copy of each batch; 0 = none */
  lg_meta_t *meta;         /* out: sealed metadata (it must hold log.file.path);
                              the hook's reference passes to the tail. NULL =
                              the default, log.file.path alone */
  uint64_t dev, ino;       /* in: the file's device and inode */
  int from_end;            /* out, refresh = 0: start at the file's current end,
                              whatever its checkpoint and read_from say */
  char why[256];           /* out: when set, why the hook stops (refresh = 2,
                              LG_TAIL_SKIP) or starts (from_end) the file, for
                              the tail's log line about it */
} lg_tail_file_info_t;

/* Return values of the on_file hook. */
enum { LG_TAIL_FOLLOW = 0, LG_TAIL_SKIP = 1 };

typedef struct lg_tail_source_opts {
  const char *name;         /* config name, for logs */
  uint32_t source_id;       /* stored in every batch's source_id */
  int pipeline;             /* stored in every batch's pipeline */
  const char *const *paths; /* glob(7) patterns */
  size_t npaths;
  const char *const *exclude; /* glob patterns matched against the path */
  size_t nexclude;
  int read_from_head; /* for files present at the first scan; files
                         that appear later are always read from 0 */
  lg_format_t format;
  size_t max_record_bytes; /* default 1 MiB */
  /* Bytes per second read from each file (a token bucket per file,
   * holding 1 s); at the limit the file's reading pauses until the
   * bucket refills, nothing is dropped. 0 = no limit. */
  uint64_t rate_limit;
  /* Rotated files of one stream (a container's log) kept open once read
   * to their end; older ones are closed at the rescan (lg_tail_idle.c).
   * Applies only when rotated_bounded. */
  int64_t max_rotated_open;
  int rotated_bounded;
  uint64_t flush_timeout_ms; /* emit a last line without LF after this */
  /* Optional: asked before a newly found file is opened (refresh = 0):
   * LG_TAIL_FOLLOW reads it with info's meta, format and pipeline,
   * LG_TAIL_SKIP leaves it alone until a rescan (lg_tail_rescan, or the
   * periodic one) or an event other than an append (created, moved,
   * deleted) finds it again: appends to a skipped file cost one hash
   * lookup, not a call. Asked again with refresh = 1 for new metadata when
   * a followed file is renamed to another matching path, and with
   * refresh = 2 on lg_tail_refresh_meta, where LG_TAIL_SKIP stops
   * following the file (see lg_tail_refresh_meta). Runs on the loop
   * thread. */
  int (*on_file)(void *ud, lg_tail_file_info_t *info);
  void *file_ud;
  /* Multiline grouping after framing (lg_multiline.h), or NULL; the source
   * takes a reference. */
  const struct lg_ml_conf *multiline;
  /* Leave framing to the worker (lg_framer_set_deferred): batches carry the
   * file's bytes, cut at clean line ends. For a pipeline whose batches are
   * spread over several workers (stateless), so that the reading thread
   * does not frame every line. Applies to the cri and line formats without
   * multiline; batches are then not cloned (more_pipelines). */
  int defer_framing;
} lg_tail_source_opts_t;

typedef struct lg_tail_opts {
  uint64_t rescan_interval_ms;     /* default 5000 */
  uint64_t checkpoint_interval_ms; /* default 1000 */
  /* A file idle this long is closed, its checkpoint kept, and reopened by
   * identity when it changes; 0 = never (files are still closed, idlest
   * first, when the descriptor limit is reached). lg_tail_idle.c. */
  uint64_t close_inactive_ms;
  size_t batch_bytes; /* a batch is handed on at about this size (1 MiB) */
  size_t read_bytes;  /* read(2) chunk size (256 KiB) */
  /* A file whose path went away (renamed, deleted) is kept open until it
   * has been idle at its end this long (since it went away and since its
   * last bytes), for writers that still append to it (0 = 1000 ms). A new
   * file at its path is read once the old one is drained: soon after the
   * new file has bytes (its writer switched: the old file is read to its
   * end once more, and its last records go on first; see
   * switch_settle_ms), or else after this wait. Bytes appended to the old
   * file after it was drained (a second writer) are read too, after the
   * new file's first records. */
  uint64_t rotate_wait_ms;
  /* After the new file got bytes, the old file is drained once it has
   * been quiet this long (read to its end, and no write to it since, by
   * its mtime), or rotate_wait_ms after the new file's first bytes were
   * seen at the latest (0 = 100 ms). A runtime that writes each stream
   * through its own pipe and thread (containerd: one logger goroutine per
   * stream, both writing to the log file) may still be putting one
   * stream's last lines into the old file when another stream's first
   * line is in the new one already. */
  uint64_t switch_settle_ms;
  /* Hands a filled batch to the engine, which owns it from then on. The
   * batch has source_id, pipeline, file_key, lane, fingerprint,
   * checkpoint_offset and meta (log.file.path) set. `lane` is the same
   * for a file and the files that follow it by rotation (see lg_batch.h):
   * batches of one lane must be processed in the order handed on. */
  void (*on_batch)(void *ud, lg_batch_t *b);
  /* Gives an empty batch to fill (the engine pools them); NULL = out of
   * memory, reading waits for the next event. */
  lg_batch_t *(*get_batch)(void *ud);
  /* What files hold outside batches changed by `delta` bytes: a line in
   * progress (up to ~2 x max_record_bytes per file: lg_framer_held_mem)
   * and open multiline groups (lg_ml_held_mem), counted by their buffers'
   * sizes while they hold bytes. The memory budget charges them as it
   * does batches: at the budget it pauses reading (lg_tail_pause), and
   * when they alone fill it, lets them be read to their ends
   * (lg_tail_drain). NULL: not told. */
  void (*on_held)(void *ud, int64_t delta);
  /* A file is opened to be read from its checkpoint, byte `offset` > 0:
   * its records before `offset` were delivered (or dropped) and are not
   * read again. `fingerprint` is its batches' (lg_batch_t.fingerprint). An
   * output waiting for records of the last run uses it (after a restart,
   * a file rotated away and acked to its end gets no later record to show
   * that no more of its records come). Also told at lg_tail_start for each
   * file whose entry was removed, read to its end and gone (the store's
   * notes, lg_checkpoint_done_t), with the offset it ended at. NULL: not
   * told. */
  void (*on_resume)(void *ud, uint64_t fingerprint, uint64_t offset);
  /* A file is opened to be read from an offset under LG_FP_MAX (its
   * first bytes may have been read before a restart while it was
   * shorter, under a shorter fingerprint): `fingerprint` is its batches',
   * prefix[j] the hash of its first j + 1 bytes, for the n it has now
   * (up to LG_FP_MAX). An output waiting for records of the last run
   * matches them (lg_output_file_prefixes). NULL: not told. */
  void (*on_prefixes)(void *ud, uint64_t fingerprint, const uint64_t *prefix,
                      uint32_t n);
  /* Optional: asked before the prefix hashes of a file are computed for
   * on_prefixes (up to LG_FP_MAX hash steps per file opened near its
   * start): 0 = nobody waits for them now (no output has a request of the
   * last run waiting for its records), so they are neither computed nor
   * told; anything else = compute them and call on_prefixes. Asked at
   * each such open, so a waiter that appears later is told of the files
   * opened from then on. NULL: always computed (when on_prefixes is set).
   * Runs on the loop thread. */
  int (*want_prefixes)(void *ud);
  void *ud;
} lg_tail_opts_t;

/* Creates the tailer on `loop` using checkpoint store `cp` (not owned).
 * Returns NULL on allocation failure. */
lg_tail_t *lg_tail_create(uv_loop_t *loop, lg_checkpoint_t *cp,
                          const lg_tail_opts_t *opts);

/* Adds a source; strings are copied. Returns 0 or a negative errno. */
int lg_tail_add_source(lg_tail_t *t, const lg_tail_source_opts_t *o);

/* Replaces the glob patterns of source `source_id` (copied) and rescans
 * soon: files of new patterns are found (read from their start, as any
 * file found after the first scan). Followed files no pattern matches any
 * more are read on until they leave their path (deleted, renamed), then
 * read to their end and closed, as always. For sources whose patterns follow
 * something else (the kubernetes source's files declared by pods). Returns 0,
 * -ENOENT (no such source) or -ENOMEM (the old patterns stay). */
int lg_tail_set_source_paths(lg_tail_t *t, uint32_t source_id,
                             const char *const *paths, size_t npaths);

/* Hot reload: removes source `source_id`. Its files stop being read; the
 * records framed already are handed on (on_batch runs from here); a
 * partial last line is not. Each file is forgotten once everything handed
 * on is acked, and its checkpoint entry stays (moved by those acks), so
 * the source added back later resumes there. 0, or -ENOENT. */
int lg_tail_remove_source(lg_tail_t *t, uint32_t source_id);

/* Starts watching: the first scan, inotify and the timers. 0 or -errno. */
int lg_tail_start(lg_tail_t *t);

/* Backpressure: stop and resume reading (watching goes on). */
void lg_tail_pause(lg_tail_t *t);
void lg_tail_resume(lg_tail_t *t);

/* While paused (on != 0): the bytes files hold (on_held) fill the memory
 * budget and no batch is in flight, so only reading on frees memory. One
 * file holding bytes is read until it holds none (its line completed and
 * handed on), and only then another: memory grows by at most one file's
 * line in progress (~2 x max_record_bytes). While that file waits at its
 * end for its writer, nothing is read; the writer or flush_timeout (which
 * hands the partial line on) ends the wait. Files holding nothing stay
 * paused. A batch handed on means memory will come back: the caller turns
 * draining off (on = 0) then, and on again if reading is still paused with
 * nothing in flight; the same file goes on. Ignored while not paused;
 * lg_tail_resume ends it. */
void lg_tail_drain(lg_tail_t *t, int on);

/* Bytes the files hold outside batches (the sum on_held was told). */
size_t lg_tail_held_bytes(const lg_tail_t *t);

/* Everything in the batch that ended at `checkpoint_offset` of file
 * `file_key`, and all before it, is delivered or dropped. */
void lg_tail_ack(lg_tail_t *t, uint64_t file_key, uint64_t checkpoint_offset);

/* The records of file `file_key` up to byte `end_offset` (the end of the
 * last one) are being sent to an output: its checkpoint entry's sent mark
 * moves there, journaled (lg_tail_sent_flush) before the send, so a
 * restart after a crash
 * counts the records it reads again up to it as possible duplicates
 * (lugger_records_reread_total). */
void lg_tail_sent(lg_tail_t *t, uint64_t file_key, uint64_t end_offset);

/* Makes the marks of lg_tail_sent calls since the last flush durable
 * against a kill (one write of the journal): call it before the records
 * go out. */
void lg_tail_sent_flush(lg_tail_t *t);

/* Calls `cb(ud, fingerprint, from, to)` for every file known (open or
 * closed, not yet forgotten) of which this process handed records on:
 * its batches' fingerprint now, and the records at offsets from `from`
 * (where it began reading the file) up to `to` (the end of what it
 * handed on: later records are handed on after this call). NULL-safe. */
void lg_tail_each_read(lg_tail_t *t,
                       void (*cb)(void *ud, uint64_t fingerprint, uint64_t from,
                                  uint64_t to),
                       void *ud);

/* Calls `cb(ud, fingerprint, prefix, n)` for every file followed (open,
 * or closed while idle: opened again for this), as its open did for
 * on_prefixes (lg_tail_opts_t): the hashes of its first 1, 2, ..., n
 * bytes, n its fingerprint's length, read again now (one pread of at most
 * LG_FP_MAX bytes per file; a file whose first bytes no longer hash to its
 * fingerprint, or that cannot be opened, is left out). For an output
 * created after the files were opened. NULL-safe. */
void lg_tail_each_prefixes(lg_tail_t *t,
                           void (*cb)(void *ud, uint64_t fingerprint,
                                      const uint64_t *prefix, uint32_t n),
                           void *ud);

/* Emits records held by framers (a last line without LF) now. NULL-safe. */
void lg_tail_flush(lg_tail_t *t);

/* True when every file has been read to its current end and no framer
 * holds bytes: used by `lugger run --once`. NULL (a closed tailer) is
 * idle. */
int lg_tail_idle(const lg_tail_t *t);

/* Asks the on_file hook of source `source_id` for new metadata of each
 * file it follows (open or draining); batches handed on from then on carry
 * it. Used when pod metadata arrives from the Kubernetes API. A file whose
 * hook answers LG_TAIL_SKIP stops being read: the records framed already
 * are handed on (open multiline groups too; a partial last line is not),
 * the file is closed, and its checkpoint entry stays, moved by the acks of
 * what was handed on. Its path is then skipped like a new file the hook
 * skipped, until a rescan asks the hook again. */
void lg_tail_refresh_meta(lg_tail_t *t, uint32_t source_id);

/* Rescans every source's patterns soon (on the next loop turn), e.g. when
 * a hook that skipped files may decide otherwise now. */
void lg_tail_rescan(lg_tail_t *t);

/* True when every file has been read to its current end (no file waits
 * for a read turn); bytes held by framers or open multiline groups do not
 * count. `lugger run --once` flushes held bytes only then: earlier, the
 * rest of a held line may just not have been read yet. */
int lg_tail_read_to_end(const lg_tail_t *t);

/* Log files with a descriptor open now (lg_tail_idle.c). */
size_t lg_tail_open_files(const lg_tail_t *t);

/* Paths a source matches that could not be opened or read (permissions,
 * I/O errors, no descriptor), as logged; `first`, when not NULL, gets one
 * of them (valid until the next rescan). For `run --once`, which fails
 * when it could not read everything. */
size_t lg_tail_unreadable(const lg_tail_t *t, const char **first);

/* Writes the checkpoints now (atomically). 0 or -errno. */
int lg_tail_save(lg_tail_t *t);

/* Stops reading and watching and closes handles; `cb` runs once all
 * libuv handles are closed, then the tailer is freed. Batches obtained from
 * get_batch and not handed on yet (partly filled) are freed then with
 * lg_batch_destroy; their bytes are read again after a restart. */
void lg_tail_close(lg_tail_t *t, void (*cb)(void *ud), void *ud);

#endif
