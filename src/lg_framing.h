/*
 * lg_framing.h - turns the bytes of one file into records.
 *
 * Formats:
 *   line   - records end at LF; a CR before the LF is removed.
 *   cri    - the CRI logging format written by the kubelet's runtimes:
 *            `<RFC3339Nano> <stdout|stderr> <P|F> <message>`; P chunks are
 *            joined until the F chunk, separately per stream.
 *   docker - Docker json-file lines {"log":"…","stream":"…","time":"…"};
 *            pieces whose `log` has no trailing "\n" (Docker splits at
 *            16 KiB) are joined, per stream.
 *   auto   - decided per file from its first complete line.
 * A line that is not in the expected format becomes a record with the raw
 * line as body and a field `lugger.parse_error` (text saying why); nothing
 * is dropped. A record longer than max_record_bytes is cut into pieces of
 * at most that size, each flagged LG_REC_TRUNCATED.
 *
 * A framer is fed consecutive bytes of one file and keeps what it cannot
 * frame yet (an incomplete line, open partial chunks) until more bytes, a
 * flush or a reset. It is used by one thread at a time.
 */
#ifndef LG_FRAMING_H
#define LG_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#include "lg_batch.h"

typedef enum lg_format {
  LG_FORMAT_LINE = 0,
  LG_FORMAT_CRI = 1,
  LG_FORMAT_DOCKER = 2,
  LG_FORMAT_AUTO = 3,
} lg_format_t;

/* Parses "line", "cri", "docker", "auto". Returns 0 or -EINVAL. */
int lg_format_parse(const char *name, lg_format_t *out);
const char *lg_format_name(lg_format_t f);

typedef struct lg_framer lg_framer_t;

/* Creates a framer for a file whose next byte is at file offset `offset`.
 * `max_record_bytes` > 0. Returns NULL on allocation failure. */
lg_framer_t *lg_framer_create(lg_format_t format, size_t max_record_bytes,
                              uint64_t offset);
void lg_framer_destroy(lg_framer_t *f); /* NULL-safe */

/* Feeds the next `len` bytes of the file. Every record completed by them is
 * appended to `b` (time from the line, or `now_ns` for formats without
 * one). Returns 0 or -ENOMEM. */
int lg_framer_feed(lg_framer_t *f, const char *buf, size_t len, int64_t now_ns,
                   lg_batch_t *b);

/* Emits whatever is held (a last line without LF, open partial chunks) as
 * records, for the flush timeout, rotation or deletion. Returns 0 or
 * -ENOMEM. */
int lg_framer_flush(lg_framer_t *f, int64_t now_ns, lg_batch_t *b);

/* Forgets held bytes and continues at file offset `offset`
 * (copytruncate). */
void lg_framer_reset(lg_framer_t *f, uint64_t offset);

/* The lowest file offset whose bytes are not yet inside an emitted record:
 * a checkpoint must never pass it. */
uint64_t lg_framer_safe_offset(const lg_framer_t *f);

/* Bytes held back (0 when nothing waits for more input). */
size_t lg_framer_pending_bytes(const lg_framer_t *f);

/* The format in use; for auto, the detected one once known. */
lg_format_t lg_framer_format(const lg_framer_t *f);

#endif
