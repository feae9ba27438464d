/*
 * lg_checkpoint_internal.h - what the checkpoint store's two files share:
 * the store itself and its journal (lg_checkpoint.c) and its saves
 * (lg_checkpoint_save.c). Not for use outside them.
 */
#ifndef LG_CHECKPOINT_INTERNAL_H
#define LG_CHECKPOINT_INTERNAL_H

#include <stdint.h>
#include <time.h>

#include "core/lg_atomic_file.h"
#include "core/lg_buf.h"
#include "core/lg_metrics.h"
#include "core/lg_u64map.h"
#include "sources/tail/lg_checkpoint.h"

#define CP_NAME "checkpoints.json"
#define CP_JOURNAL "checkpoints.journal"
/* Past this size the journal stops until the next save empties it (saves
 * that keep failing must not fill the disk with journal lines). */
#define JOURNAL_MAX (64u << 20)
/* A save that keeps failing is logged again at most this often, s. */
#define FAIL_LOG_S 60
#define CP_VERSION 1
/* The permission bits of the store and of its journal. */
#define CP_MODE 0640
/* Integers above 2^53 do not survive a JSON reader that uses doubles
 * (cJSON does); such values are written as decimal strings instead. */
#define CP_EXACT_MAX (UINT64_C(1) << 53)

struct lg_checkpoint {
  char *dir;
  char *file;  /* <dir>/checkpoints.json */
  char *tmp;   /* <dir>/checkpoints.json.tmp */
  char *jfile; /* <dir>/checkpoints.journal */
  lg_checkpoint_entry_t *e;
  size_t n, cap;
  /* e's index by device+inode (id_key -> position), so that a start that
   * opens thousands of files does not search the array for each. ix_off:
   * not used until the entries are cleared (out of memory, or two
   * entries' keys collided): finds search the array. */
  lg_u64map_t ix;
  int ix_off;
  lg_checkpoint_done_t *done; /* removed entries' ends, oldest first */
  size_t ndone, done_cap;
  int64_t opened; /* unix seconds of the open: the notes found then are
                     as old as that (lg__cp_note_time) */
  int dirty;
  uint64_t gen;    /* saves of the store so far; journal lines carry it */
  int jfd;         /* journal, O_APPEND; -1 = none until the next save */
  uint64_t jbytes; /* journal size */
  int corrupt;     /* the store was set aside at open */
  /* Failing saves: the first is logged, then one line per FAIL_LOG_S. */
  uint64_t fails;
  time_t fail_since, fail_logged;
  lg_metric_t *m_fails; /* lugger_checkpoint_save_failures_total */
  lg_buf_t line; /* journal lines not written yet (deferred sent marks) */
  lg_atomic_file_t *saver; /* writes the store in the background */
  int saving;              /* a background save is in flight */
  lg_buf_t window;         /* journal lines written since its snapshot */
  /* The final save's waiter (lg_checkpoint_save_then); then_mine: the save
   * in flight is the one it waits for (else one asked before it). */
  void (*then_cb)(void *ud, int rc);
  void *then_ud;
  uv_loop_t *then_loop;
  int then_mine;
};

/* Appends entry `e` as a JSON object (the store's and the journal's
 * format). Returns 0 or -ENOMEM. */
int lg__cp_encode_entry(lg_buf_t *b, const lg_checkpoint_entry_t *e);

/* When note `d` of store `c` counts as made, for its age: its removal,
 * or the store's open if later (the collector was not running before). */
static inline int64_t lg__cp_note_time(const lg_checkpoint_t *c,
                                       const lg_checkpoint_done_t *d) {
  return d->removed > c->opened ? d->removed : c->opened;
}

/* Appends the notes of removed entries younger than
 * LG_CHECKPOINT_DONE_KEEP_S (lg__cp_note_time) as the store's "done" member:
 * ,"done":[["<fingerprint hex>",<offset>,<removed>],...]. 0 or -ENOMEM. */
int lg__cp_encode_done(lg_buf_t *b, const lg_checkpoint_t *c);

/* Writes the journal lines waiting in c->line with one write(2); a failed
 * write stops the journal until the next save (logged). */
void lg__cp_journal_flush(lg_checkpoint_t *c);

/* Opens the journal (emptied when `truncate`); on failure the journal
 * stays off until the next save (logged). */
void lg__cp_journal_open(lg_checkpoint_t *c, int truncate);

/* Creates c->saver, which writes the store in the background (for
 * lg_checkpoint_save_async). 0 or -ENOMEM. */
int lg__cp_save_init(lg_checkpoint_t *c);

/* Waits for the background save in flight, if any, and takes its result
 * (loop thread). */
void lg__cp_save_wait(lg_checkpoint_t *c);

#endif
