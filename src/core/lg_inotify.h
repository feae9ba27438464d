/*
 * lg_inotify.h - directory watching with Linux inotify(7), on a libuv loop.
 *
 * The tailer watches the directories its globs can match in; this module
 * owns the inotify descriptor (polled with a uv_poll_t), maps watch
 * descriptors back to directory paths and reports each event as the path
 * it concerns. It knows nothing of files or globs.
 *
 * Watches use IN_EXCL_UNLINK: once a file is unlinked its name may belong
 * to another file, so events for it under the old name would mislead.
 */
#ifndef LG_INOTIFY_H
#define LG_INOTIFY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Event bits given to the callback (several may be set). */
#define LG_INOTIFY_APPEARED 0x01u /* created or moved into the directory */
#define LG_INOTIFY_GONE 0x02u     /* deleted or moved out of it */
#define LG_INOTIFY_MODIFIED 0x04u /* written to, or closed after writing */
#define LG_INOTIFY_ATTRIB 0x08u   /* mode, owner or link count changed */
#define LG_INOTIFY_ISDIR 0x10u    /* the entry is a directory */
#define LG_INOTIFY_DIR_GONE                                                    \
  0x20u /* the watched directory itself went away                              \
           (`path` is the directory) */
#define LG_INOTIFY_OVERFLOW                                                    \
  0x40u /* the kernel queue overflowed: events were                            \
           lost, rescan everything (`path` NULL) */

typedef struct lg_inotify lg_inotify_t;

/* Called for every event: `path` is "<dir>/<name>" (NUL-terminated, valid
 * during the call), `dir` the watched directory as it was given to
 * lg_inotify_watch, `events` LG_INOTIFY_* bits. */
typedef void (*lg_inotify_cb)(void *ud, const char *path, const char *dir,
                              uint32_t events);

/* Creates the inotify instance and starts polling it on `loop`. Returns
 * NULL with *err set to a negative errno (e.g. -EMFILE when the per-user
 * instance limit is reached, -ENOSYS without inotify). */
lg_inotify_t *lg_inotify_create(uv_loop_t *loop, lg_inotify_cb cb, void *ud,
                                int *err);

/* Watches directory `dir` (no-op if it is already watched). Returns 0 or a
 * negative errno (-ENOENT, -ENOTDIR, -ENOSPC when max_user_watches is
 * reached). */
int lg_inotify_watch(lg_inotify_t *w, const char *dir);

/* True when `dir` is watched. */
int lg_inotify_watching(const lg_inotify_t *w, const char *dir);

/* Number of directories watched. */
size_t lg_inotify_count(const lg_inotify_t *w);

/* Stops polling, closes the descriptor and the libuv handle; `cb` runs from
 * the close callback, after which `w` is freed. The descriptor itself is
 * closed on libuv's threadpool (the kernel takes milliseconds to release an
 * inotify instance); the loop does not end before it is. NULL-safe (cb not
 * run). */
void lg_inotify_close(lg_inotify_t *w, void (*cb)(void *ud), void *ud);

/* Test hook: the next batch of events read from the kernel is thrown away
 * and reported as LG_INOTIFY_OVERFLOW, as if the queue had overflowed. */
void lg__inotify_drop_next(lg_inotify_t *w);

/* Test hooks of the tailer (lg_tail.c), which uses this module. */
struct lg_tail;
/* Before lg_tail_start: watch with the periodic rescan only. */
void lg__tail_disable_inotify(struct lg_tail *t);
/* The next batch of inotify events is lost as in a queue overflow. */
void lg__tail_drop_events(struct lg_tail *t);
/* True when inotify is in use. */
int lg__tail_watching(const struct lg_tail *t);

#endif
