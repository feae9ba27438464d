/*
 * lg_atomic_file.h - a state file replaced whole, atomically and durably,
 * by libuv's threadpool, one write at a time, coalescing.
 *
 * Why: the two fsyncs of a replacement (lg_util_write_atomic: temp file,
 * fsync, rename, fsync of the directory) take seconds on a busy node disk,
 * and the loop thread must go on reading, acking and delivering
 * meanwhile. So the loop thread only takes a snapshot of the content (the
 * owner's `fill` callback, when a write starts), a threadpool thread does
 * the I/O, and the owner's `done` callback gets the result back on the
 * loop thread. The loop thread never fsyncs, except by choice: _wait
 * blocks it until the writes end, for a synchronous save or a close.
 *
 * Coalescing: a write asked for while one is in flight (or while its
 * `done` runs) is not queued behind it as another: it is marked, and once
 * the write in flight has ended and its `done` returned, one write starts
 * with the content of that moment, for all the asks meanwhile. Under load
 * that is one write for many changes, not one each.
 *
 * Used by the checkpoint store (lg_checkpoint_save.c) and the request
 * journal (lg_req_journal.c). Loop thread only (the I/O aside).
 */
#ifndef LG_ATOMIC_FILE_H
#define LG_ATOMIC_FILE_H

#include <uv.h>

#include "core/lg_buf.h"

typedef struct lg_atomic_file lg_atomic_file_t;

/* Fills `b` (empty) with the file's new content: on the loop thread, when
 * a write starts (from within lg_atomic_file_write when none is in
 * flight, else once the one in flight ended). Returns 0, or a negative
 * errno (e.g. -ENOMEM): that write does not happen. */
typedef int (*lg_atomic_file_fill_cb)(void *ud, lg_buf_t *b);

/* A write ended, on the loop thread: `rc` 0, the file holds the content
 * `fill` gave, durably; or a negative errno, the file is as before (but
 * for "fsync of directory": new, not durably), and `step` (a static
 * string) says what failed: "encode" (`fill` failed), "queue" (no memory
 * for the job, or the threadpool refused it), or a step of
 * lg_util_write_atomic.
 * It may ask for the next write (which starts once it returned), wait,
 * and destroy the file (freed once it returned). */
typedef void (*lg_atomic_file_done_cb)(void *ud, int rc, const char *step);

/* A file `path` in directory `dir` (both kept, not copied: valid until
 * lg_atomic_file_destroy), created with permission bits `mode` (less the
 * umask), written with what `fill` gives and reported to `done`, each
 * called with `ud`. Nothing is written until asked. NULL when out of
 * memory. */
lg_atomic_file_t *lg_atomic_file_create(const char *dir, const char *path,
                                        unsigned mode,
                                        lg_atomic_file_fill_cb fill,
                                        lg_atomic_file_done_cb done, void *ud);

/* Asks for a write: started at once (`fill` runs from within) when none is
 * in flight, else once the one in flight ended and its `done` returned,
 * one write for every ask meanwhile. `done` runs on `loop` when the write
 * ended, never from within this call. Returns 0, or the negative errno of
 * a write that could not start (`fill`'s, or uv_queue_work's): nothing
 * was written and `done` does not run for it. */
int lg_atomic_file_write(lg_atomic_file_t *f, uv_loop_t *loop);

/* 1 while a write is in flight, asked for, or its `done` runs; else 0. */
int lg_atomic_file_busy(const lg_atomic_file_t *f);

/* Blocks the calling (loop) thread until no write is in flight or asked
 * for: the write in flight ends (its `done` runs from within), and a write
 * asked for meanwhile is started and waited for likewise, even when this
 * is called from within `done`. For a synchronous save, or a close. */
void lg_atomic_file_wait(lg_atomic_file_t *f);

/* Frees `f` (NULL-safe). A write in flight is waited for, without its
 * `done` (wait first to have it); a write asked for is dropped. From
 * within `done`, `f` is freed once that `done` returned. */
void lg_atomic_file_destroy(lg_atomic_file_t *f);

#endif
