/*
 * lg_req_journal.h - the request journal: which records each request of an
 * output was made of, kept in state_dir while the request is unsettled, so
 * that after a crash the delivery layer can make the same requests again
 * from the records read again (lg_delivery.c).
 *
 * Why: an output whose request becomes something named by what it holds
 * (an S3 object keyed by its records) overwrites its own earlier attempt
 * when a retry holds exactly the same records. Within one process the
 * delivery layer retries requests frozen; across a crash the records read
 * again past the checkpoint arrive in other batches at other times, and
 * would be cut into other requests: another key, and the object written
 * before the crash stays, a second copy of its records. With the journal
 * the request in flight at the crash is made again at exactly its old
 * boundaries, and its PUT overwrites.
 *
 * A request is recorded as its runs of records in request order: per run
 * the file's fingerprint and the file offsets of its first and last record
 * and the number of records (the record id is fingerprint:offset,
 * lg_ffi_rec_id), plus a note of the output's (the S3 output keeps its
 * object keys there, so a rebuilt object keeps its key even when its
 * records' read times changed). An entry is written (fsync'd, atomically)
 * before the request is sent, and removed once all its records are
 * acked (settled, and the submissions before them in their lane too: the
 * checkpoint is then past them, they are not read again); removals are
 * written with the next write (or at close): an entry left over whose
 * records were acked is recognised after a restart by records past it
 * arriving and none of its own. So are the runs of an entry acked before
 * the rest of it (lg_rj_settle_run), which a restart then need not wait
 * for.
 *
 * One file per output name, <state_dir>/requests-<name>.json (characters
 * of the name other than letters, digits, '.', '_' and '-' as '_'); a journal
 * is shared by the instances of one output name (a reload re-creates an output
 * while the old one drains), and the entries found at the first open are handed
 * out once. Loop thread only.
 *
 * Written on libuv's threadpool (temp file, fsync, rename, fsync of the
 * directory): on a busy node disk an fsync takes seconds, and the loop
 * thread must go on reading, acking and serving the other outputs
 * meanwhile. lg_rj_add returns at once and its callback says when the
 * entry is durable (the request is sent only then); entries added while
 * a write is in flight go together in the next one, so under load there
 * is one write for many requests, not one each.
 */
#ifndef LG_REQ_JOURNAL_H
#define LG_REQ_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct lg_rj lg_rj_t;

/* A run of records of one file: fingerprint, offsets of the first and the
 * last record, and how many records (several may share an offset); and
 * whether they were acked (lg_rj_settle_run), which a request made again
 * after a restart need not wait for: they are not read again. */
typedef struct lg_rj_run {
  uint64_t fp, first, last;
  uint32_t count;
  uint8_t acked;
} lg_rj_run_t;

/* A request as journaled. */
typedef struct lg_rj_entry {
  uint64_t id; /* > 0, unique in its journal */
  lg_rj_run_t *runs;
  uint32_t nruns;
  uint64_t left; /* records not yet acked */
  char *note;    /* the output's note; "" when none */
} lg_rj_entry_t;

/* Opens (or shares) the journal of output `name` in `state_dir`, loading
 * its file the first time; its writes complete on `loop` (the loop thread
 * of every instance sharing it). NULL with `err` filled when the file
 * cannot be read (a corrupt file is moved aside, logged, and the journal
 * starts empty). */
lg_rj_t *lg_rj_open(uv_loop_t *loop, const char *state_dir, const char *name,
                    char *err, size_t errlen);

/* Drops a reference; the last one waits for the write in flight, has what
 * changed since (removals) written the same way and waits for that too
 * (blocking the loop thread for as long as those writes' fsyncs take; the
 * threadpool does them), and frees it. Adds still waiting then (none
 * from the delivery layer, which closes its journal once every request
 * ended) get their callbacks from within it: the write's result if they
 * were in it, else -ECANCELED (not written); the callbacks must not use
 * the journal. */
void lg_rj_close(lg_rj_t *j);

/* The entries the file held at the first open, once (later calls: 0):
 * *out gets copies the caller owns (lg_rj_entry_free each, then free the
 * array). They stay in the journal until settled or dropped. */
size_t lg_rj_take_found(lg_rj_t *j, lg_rj_entry_t **out);

/* Called on the loop thread when the write holding entry `id` ended:
 * `status` 0, the entry is durable; or a negative errno (the write failed,
 * logged with the file and the step; the entry has left the journal, so
 * the request must not be sent: journal it again to retry). */
typedef void (*lg_rj_done_cb)(void *ud, uint64_t id, int status);

/* Adds an entry of `nruns` runs (copied) with `note` (copied; may be NULL)
 * and has it written: at once when no write is in flight, else with the
 * next write, which starts when the one in flight ends and holds every
 * entry added meanwhile. `cb(ud, id, status)` runs once that write ended,
 * never from within lg_rj_add. Returns the entry's id (> 0), or -ENOMEM
 * (nothing added; `cb` will not run). */
int64_t lg_rj_add(lg_rj_t *j, const lg_rj_run_t *runs, uint32_t nruns,
                  const char *note, lg_rj_done_cb cb, void *ud);

/* The note of entry `id`, or NULL if there is no such entry. Valid until
 * the entry is removed. */
const char *lg_rj_note(const lg_rj_t *j, uint64_t id);

/* `n` records of entry `id` are acked; at 0 left the entry is removed
 * (written with the next write, or at the last close). Unknown ids are
 * ignored. */
void lg_rj_settle(lg_rj_t *j, uint64_t id, uint64_t n);

/* The records of file `fp` at offsets `lo` to `hi` (a submission's) were
 * acked: the runs of entry `id` of that file within them are marked acked,
 * in the file from the next write on (or the last close); no write starts
 * for it. Unknown ids are ignored. Call before lg_rj_settle. */
void lg_rj_settle_run(lg_rj_t *j, uint64_t id, uint64_t fp, uint64_t lo,
                      uint64_t hi);

/* Removes entry `id` (its request will not be made again). */
void lg_rj_drop(lg_rj_t *j, uint64_t id);

/* Frees what an entry holds. */
void lg_rj_entry_free(lg_rj_entry_t *e);

#endif
