/*
 * lg_crew.h - the workers of one engine, so that one out of batches can
 * take a batch waiting on another.
 *
 * The engine gives a batch to the worker with the fewest queued when the
 * batch is read, not when it is run: without a crew a batch can wait
 * behind a long one on a busy worker (a slow script, a core shared with
 * the loop) while another worker sleeps. A worker out of batches asks its
 * crew (lg_crew_take) and each other member in turn decides, in its give
 * callback, whether to hand over the batch at the head of its queue
 * (lg_worker.c: a stateless pipeline's batch, lg_batch_t.any_worker, that
 * both workers would process with the same config generation). The
 * records' order does not change: the engine delivers batches in their
 * sequence (lg_reorder.c).
 *
 * The crew holds the members by slot (a worker's slot is its id) and
 * knows nothing of queues or versions; it makes sure a member is never
 * given from while it goes away: lg_crew_leave waits for a take in
 * progress.
 *
 * Locking: the crew has one mutex, held for the whole of lg_crew_join,
 * lg_crew_leave and lg_crew_take, and so while a give callback runs. Lock
 * order: the crew's mutex, then a member's own lock (which the give
 * callback takes). A worker therefore never holds its own lock while it
 * calls lg_crew_take: another worker's take may be waiting in give for
 * that lock while holding the crew's.
 */
#ifndef LG_CREW_H
#define LG_CREW_H

#include "pipeline/lg_batch.h"

typedef struct lg_crew lg_crew_t;

/* A member's answer to a take (lg_crew_take), called on the taking
 * worker's thread with the crew's mutex held: removes the batch at the
 * head of `member`'s queue and returns it when `taker` (what the taking
 * worker passed to lg_crew_take: for workers, the config version it
 * processes batches with now) may process it, else returns NULL and
 * changes nothing. Takes and releases the member's own lock; must not
 * call into the crew. */
typedef lg_batch_t *(*lg_crew_give_cb)(void *member, const void *taker);

/* Creates an empty crew with slots 0..n-1 (one per worker). Returns NULL
 * when out of memory or n < 1. */
lg_crew_t *lg_crew_create(int n);

/* Frees a crew whose members have all left. NULL-safe. */
void lg_crew_destroy(lg_crew_t *c);

/* Puts `member` in slot `slot` (0..n-1; out of range: nothing happens),
 * replacing whatever was there; from now on other members' takes may call
 * give(member, ...). Thread-safe (the crew's mutex). */
void lg_crew_join(lg_crew_t *c, int slot, void *member, lg_crew_give_cb give);

/* Empties slot `slot` if it holds `member` (a member that has already
 * been replaced in its slot leaves nothing). When it returns, no give
 * callback runs on `member` and none will: a take in progress is waited
 * for. Thread-safe; c NULL or slot out of range: nothing happens. */
void lg_crew_leave(lg_crew_t *c, int slot, void *member);

/* For the member in slot `slot` (0..n-1), out of batches: asks the other
 * slots' members in turn, starting after `slot` and wrapping around, to
 * give their oldest waiting batch (their give callback, with `taker`) and
 * returns the first batch given, now the caller's, or NULL when none was
 * (or `slot` is out of range). The caller must not hold its own member's
 * lock (see "Locking" above). */
lg_batch_t *lg_crew_take(lg_crew_t *c, int slot, const void *taker);

#endif
