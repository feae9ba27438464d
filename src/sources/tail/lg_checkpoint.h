/*
 * lg_checkpoint.h - where each file was read up to, kept across restarts.
 *
 * One file, `<state_dir>/checkpoints.json`, holds every entry:
 *   {"version":1,"files":[{"path":"/var/log/a.log","dev":2049,"ino":1234,
 *     "fingerprint":"9f…","fp_len":1024,"offset":52311,"sent":60120}]}
 * A path that is not UTF-8 (a file name is any bytes) also comes as
 * "path_hex" (its bytes in hex), which JSON text holds exactly.
 * It is written atomically: a temp file in the same directory, fsync,
 * rename over the old one, fsync of the directory. An entry's offset only
 * ever covers bytes whose records were delivered or dropped. "sent", when
 * present (only while it is past "offset"), is the end of the furthest
 * record handed to an output's send (lg_checkpoint_set_sent): after a
 * crash, records between the two are read again and may have reached the
 * output already, so they are counted as possible duplicates.
 *
 * Between two saves every change is also appended at once to
 * `<state_dir>/checkpoints.journal` (one JSON line, no fsync), which the
 * next open applies on top of the store: a killed process reads again
 * only what was delivered after its last ack, not a whole save interval
 * (lg_checkpoint.c says why this is safe after a machine crash too).
 */
#ifndef LG_CHECKPOINT_H
#define LG_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct lg_checkpoint_entry {
  char *path; /* where the file was last seen */
  uint64_t dev, ino;
  uint64_t fingerprint; /* hash of the first fp_len bytes */
  uint32_t fp_len;
  uint64_t offset; /* bytes before it are done */
  /* End of the furthest record sent to an output (possibly delivered, not
   * acked yet); meaningful only while > offset, else 0 or stale. */
  uint64_t sent;
} lg_checkpoint_entry_t;

typedef struct lg_checkpoint lg_checkpoint_t;

/* Opens the store in `state_dir` (created if missing, mode 0750), loads
 * the existing file and applies its journal. A corrupt file (not JSON,
 * truncated, malformed entries) is renamed aside to
 * `checkpoints.json.corrupt-<unix time>` with an error naming both, and
 * the store starts empty with lg_checkpoint_corrupt() true. Returns NULL
 * with `err` filled when the file exists but cannot be read, or the
 * directory cannot be made. */
lg_checkpoint_t *lg_checkpoint_open(const char *state_dir, char *err,
                                    size_t errlen);
void lg_checkpoint_close(lg_checkpoint_t *c); /* NULL-safe; does not save */

/* Finds the entry for dev+ino; NULL if none. The entry is the same file
 * only if its fingerprint equals the hash of the open file's first fp_len
 * bytes: the caller checks that (an inode can be reused). */
const lg_checkpoint_entry_t *lg_checkpoint_find(lg_checkpoint_t *c,
                                                uint64_t dev, uint64_t ino);

/* Inserts or updates the entry keyed by dev+ino. Returns 0 or -ENOMEM.
 * The entry's sent mark becomes the larger of the old and e->sent; it is
 * replaced by e->sent when the fingerprint changes (another file) or the
 * offset moves back (the file is read again from an earlier offset). */
int lg_checkpoint_set(lg_checkpoint_t *c, const lg_checkpoint_entry_t *e);

/* Records that the records of the file dev+ino up to byte `sent` are
 * being handed to an output's send, so that a restart after a crash knows
 * which records it reads again may be duplicates. Its journal line waits
 * for lg_checkpoint_flush (or the next other change), which the caller
 * must call before the output sees the records: the marks of one request
 * cost one write(2). Does nothing when there is no entry for dev+ino with
 * that fingerprint, or `sent` is not past both the entry's offset and its
 * sent mark. Returns 0 or -ENOMEM. */
int lg_checkpoint_set_sent(lg_checkpoint_t *c, uint64_t dev, uint64_t ino,
                           uint64_t fingerprint, uint64_t sent);

/* Writes the journal lines that wait (lg_checkpoint_set_sent) now, in one
 * write(2); they survive the process being killed from then on. */
void lg_checkpoint_flush(lg_checkpoint_t *c);

/* Removes the entry for dev+ino (file gone and drained). An entry past
 * offset 0 leaves a note of where its file ended (lg_checkpoint_done_t). */
void lg_checkpoint_remove(lg_checkpoint_t *c, uint64_t dev, uint64_t ino);

/* Where a file whose entry was removed (read to its end and gone, or not
 * found at a start) ended: its fingerprint and its entry's last offset,
 * before which its records were delivered or dropped; `removed` in unix
 * seconds. Kept in the store (and its journal: a removal's line leaves
 * the note when replayed) for LG_CHECKPOINT_DONE_KEEP_S of the collector
 * running (a note found at lg_checkpoint_open counts as made then, however
 * long the collector was down: that start tells it), at most
 * LG_CHECKPOINT_DONE_MAX of the newest, so that the next start can tell
 * outputs that no more of such a file's records come (a request of the
 * last run waiting for them, lg_output_file_resumed), which its entry,
 * gone, no longer says. */
typedef struct lg_checkpoint_done {
  uint64_t fingerprint, offset;
  int64_t removed;
} lg_checkpoint_done_t;
#define LG_CHECKPOINT_DONE_KEEP_S 3600
#define LG_CHECKPOINT_DONE_MAX 1024

/* The notes of removed entries (oldest first) and note `i` (0 <= i <
 * count; NULL past it). Valid until the next remove. */
size_t lg_checkpoint_done_count(const lg_checkpoint_t *c);
const lg_checkpoint_done_t *lg_checkpoint_done_at(const lg_checkpoint_t *c,
                                                  size_t i);

/* Writes the store atomically if anything changed since the last save,
 * then empties the journal. Returns 0 or a negative errno. A failure
 * (disk full, read-only, I/O error) leaves the previous store file as it
 * was and the changes pending for the next call; it is logged (once, then
 * once a minute) and shown on /readyz under "checkpoint" until a save
 * succeeds. */
int lg_checkpoint_save(lg_checkpoint_t *c);

/* lg_checkpoint_save without blocking the loop thread on the disk: the
 * store is encoded now and written, fsync'd and renamed on libuv's
 * threadpool; the journal is emptied on `loop` when that has succeeded
 * (changes made meanwhile stay in the journal), and a failure is handled
 * as lg_checkpoint_save's. Returns 0 (started, or nothing to save) or
 * -EBUSY while the previous save is still being written. Falls back to a
 * synchronous save when it cannot start one (out of memory). A later
 * lg_checkpoint_save or lg_checkpoint_close waits for it first. */
int lg_checkpoint_save_async(lg_checkpoint_t *c, uv_loop_t *loop);

/* The last save before a close, without blocking the loop thread on the
 * disk: as lg_checkpoint_save_async, and when a save is in flight, a save
 * once it ended (with the changes made since). `cb(ud, rc)` runs on
 * `loop` when the store on disk holds every change made before this call
 * (rc 0), or that save failed (rc < 0, handled as lg_checkpoint_save's:
 * the journal keeps the changes). It runs from within this call when
 * there is nothing to save (rc 0) or a background save cannot start (the
 * synchronous save's result). Saves never overlap and each snapshot is
 * taken when its write starts, so an earlier save never overwrites a
 * later one. Returns 0, or -EBUSY while another waits (one at a time). */
int lg_checkpoint_save_then(lg_checkpoint_t *c, uv_loop_t *loop,
                            void (*cb)(void *ud, int rc), void *ud);

/* 1 when the store file was corrupt at open and set aside: nothing is
 * known about what was read, and sources must read existing files from
 * their start (never from their end) to lose nothing. */
int lg_checkpoint_corrupt(const lg_checkpoint_t *c);

/* Iteration, for start-up decisions and pruning: the number of entries and
 * entry `i` (0 <= i < count). Pointers returned by lg_checkpoint_find and
 * lg_checkpoint_at stay valid only until the next set or remove. */
size_t lg_checkpoint_count(const lg_checkpoint_t *c);
const lg_checkpoint_entry_t *lg_checkpoint_at(const lg_checkpoint_t *c,
                                              size_t i);

/* The path of the store file (`<state_dir>/checkpoints.json`). */
const char *lg_checkpoint_file(const lg_checkpoint_t *c);

#endif
