/*
 * lg_framing.h - turns the bytes of one file into records.
 *
 * Formats:
 *   line   - records end at LF; a CR before the LF is removed. Time: the
 *            now_ns of the feed or flush that completed the record.
 *   cri    - the CRI logging format written by the kubelet's runtimes
 *            (kubernetes/cri-api, "CRI container log format"):
 *            `<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <message>`, the
 *            time with 0-9 fractional digits (more are truncated to the
 *            nanosecond, as Go's time.Parse does) and `Z` or `±hh:mm` (years
 *            1678-2261, which fit int64 nanoseconds); P chunks are joined
 *            until the F chunk, separately per stream. The record's time is
 *            its first chunk's; flags LG_REC_HAS_STREAM (+ LG_REC_STDERR).
 *            The message is kept as written (a CR before the LF included).
 *   docker - Docker json-file lines {"log":"…","stream":"…","time":"…"},
 *            parsed with cJSON; `log` unescaped (NUL bytes kept) and its
 *            trailing "\n" removed; pieces whose `log` has no trailing "\n"
 *            (Docker splits at 16 KiB) are joined, per stream. Lines longer
 *            than 2 * max_record_bytes + 4 KiB are not parsed (raw pieces
 *            with a parse error).
 *   auto   - decided per file from its first complete line (or the line
 *            flushed first): CRI if it parses as CRI, docker if it is a JSON
 *            object with "log", else line. A first line too long to hold is
 *            decided from its start: CRI or line. Kept across a reset.
 * A line that is not in the expected format becomes a record with the raw
 * line as body (a CR before the LF removed), flag LG_REC_PARSE_ERROR and a
 * string field `lugger.parse_error` saying why ("cri: bad timestamp",
 * "cri: bad stream", "cri: bad tag", "docker: invalid JSON", "docker: not
 * a JSON object", "docker: no log string", "docker: bad stream", "docker:
 * bad time", "docker: line longer than the limit"); nothing is dropped.
 * Bytes are bytes: NUL and invalid UTF-8 pass through.
 *
 * A record longer than max_record_bytes is cut into pieces of exactly that
 * size and a last, shorter one, each flagged LG_REC_TRUNCATED. A piece is
 * emitted as soon as more bytes are known to follow it, so a framer holds
 * at most about one line of max_record_bytes (2x + 4 KiB for docker and
 * auto) plus one record per stream, however long a line is.
 *
 * Offsets: a record's offset is the file offset of its first line (for a
 * joined record, of its first chunk's line); a piece after the first has
 * the offset of its first byte (for docker, an offset inside its line),
 * so offsets, and record ids made from them, are unique. end_offset is
 * just past the last byte (LF included) of the record's last line.
 *
 * The records do not depend on how the bytes are cut into feeds.
 *
 * A framer is fed consecutive bytes of one file and keeps what it cannot
 * frame yet (an incomplete line, open partial chunks) until more bytes, a
 * flush or a reset. It is used by one thread at a time.
 */
#ifndef LG_FRAMING_H
#define LG_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/lg_batch.h"

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
 * `max_record_bytes` > 0 (values over 1 GiB count as 1 GiB). Returns NULL
 * on allocation failure or a bad argument. Buffers are allocated as lines
 * need them. */
lg_framer_t *lg_framer_create(lg_format_t format, size_t max_record_bytes,
                              uint64_t offset);
void lg_framer_destroy(lg_framer_t *f); /* NULL-safe */

/* Feeds the next `len` bytes of the file. Every record completed by them is
 * appended to `b` (time from the line, or `now_ns` for formats without
 * one). Returns 0, or -ENOMEM (or -E2BIG from a batch over 4 GiB); then
 * some records may have been appended and the framer's state is only good
 * for lg_framer_reset(f, lg_framer_safe_offset(f)) and reading again from
 * that offset (which gives duplicates, never a loss). */
int lg_framer_feed(lg_framer_t *f, const char *buf, size_t len, int64_t now_ns,
                   lg_batch_t *b);

/* Emits whatever is held (a last line without LF, open partial chunks) as
 * records, for the flush timeout, rotation or deletion; open records
 * oldest first. A flushed line keeps a CR at its end (no LF followed it);
 * bytes fed afterwards start a new line. Returns 0 or -ENOMEM. */
int lg_framer_flush(lg_framer_t *f, int64_t now_ns, lg_batch_t *b);

/* Forgets held bytes and continues at file offset `offset`
 * (copytruncate). */
void lg_framer_reset(lg_framer_t *f, uint64_t offset);

/* The lowest file offset whose bytes are not yet inside an emitted record:
 * a checkpoint must never pass it. An open partial record of one stream
 * holds it at the start of that record's first line (after a truncated
 * piece: of the line holding its next byte) while the other stream's
 * records are emitted. A line cut into pieces (line format) holds it at
 * its first byte not emitted yet. Never decreases, except by a reset. */
uint64_t lg_framer_safe_offset(const lg_framer_t *f);

/* Bytes held back: of the incomplete line and of open joined records (an
 * open record with an empty body counts 1), so 0 exactly when nothing
 * waits for more input or a flush. */
size_t lg_framer_pending_bytes(const lg_framer_t *f);

/* Bytes of the buffers that hold what lg_framer_pending_bytes counts (their
 * capacity, as allocated), 0 when it is 0: what the framer holds for a file
 * outside batches, for the memory budget. An empty buffer it keeps for the
 * next line (at most 64 KiB each; larger ones are freed once empty) is not
 * counted: no reading would free it. */
size_t lg_framer_held_mem(const lg_framer_t *f);

/* The format in use; for auto, the detected one once known. */
lg_format_t lg_framer_format(const lg_framer_t *f);

/*
 * Deferred framing: records framed by the worker instead of the thread
 * that reads (one hot file on several workers).
 *
 * A framer set deferred (formats cri and line; -EINVAL for others) keeps
 * fed bytes in the batch as they are (b->raw_*, lg_batch.h) whenever it
 * holds nothing of its own; lg_framer_cut, before the batch is handed on,
 * ends them at the last line end where a fresh framer would hold nothing
 * (for CRI: no stream with an open partial record) and keeps the rest (the
 * carry) for the next batch. The worker then takes the bytes
 * (lg_framer_take_deferred) and frames them (lg_framer_frame_bytes) from a
 * fresh framer at that offset: since records do not depend on how bytes
 * are cut into feeds, they are the records this framer would have made,
 * except that records without a time of their own (line format, lines that
 * are not CRI) get the time of the last feed of their batch. A flush marks
 * the bytes to be flushed after framing (b->raw_flush). A carry longer than
 * about 2 * max_record_bytes is framed by this framer as usual, until it
 * holds nothing again. lg_framer_pending_bytes counts the carry, and
 * lg_framer_safe_offset is the carry's start: the batch's checkpoint.
 * (Implemented in lg_framing_deferred.c.)
 */
/* Turns deferred framing on (0, or -EINVAL for a format that cannot be)
 * or off (0, or -EBUSY while it holds a carry, which only it can frame). */
int lg_framer_set_deferred(lg_framer_t *f, int on);

/* Room for `want` bytes at the end of b's raw bytes, for read(2) to fill
 * directly (no copy through a read buffer); then lg_framer_raw_commit with
 * the count read. NULL when the framer frames the next bytes itself (it
 * holds a line in progress, or the framer is not deferred) or memory is
 * short: read elsewhere and lg_framer_feed them. */
char *lg_framer_raw_room(lg_framer_t *f, lg_batch_t *b, size_t want);
void lg_framer_raw_commit(lg_framer_t *f, lg_batch_t *b, size_t n,
                          int64_t now_ns);

/* Before the batch `b` (filled by `f`) is handed on: ends its raw bytes at
 * a clean line end and keeps the rest in `f` (may leave b without raw
 * bytes). Returns 0, -ENOMEM (b unchanged) or -EINVAL. */
int lg_framer_cut(lg_framer_t *f, lg_batch_t *b);

/* The length of the longest prefix of `len` bytes (whole lines of a file,
 * starting where a framer held nothing) after which a fresh framer of
 * `format` holds nothing: up to the last LF, and for CRI not inside a
 * record of partial (P) lines. 0 if there is none. */
size_t lg_framer_clean_prefix(lg_format_t format, size_t max_record_bytes,
                              const char *p, size_t len);

/* Worker: moves b's raw bytes (b->raw_format != 0) out of its arena into
 * *scratch (grown as needed; a batch of raw bytes only swaps arenas with it,
 * no copy, unless its arena is under 1/8 of the scratch's size) and returns
 * them, their length in *len; NULL on allocation failure (b unchanged). */
const char *lg_framer_take_deferred(lg_batch_t *b, char **scratch, size_t *cap,
                                    size_t *len);

/* The most a worker's scratch keeps between batches: the arena of a batch
 * the pool keeps (the engine's 4 x 1 MiB batches). */
#define LG_FRAMER_SCRATCH_KEEP ((size_t)4 << 20)

/* Worker, once the bytes lg_framer_take_deferred returned are framed:
 * frees *scratch when it is over LG_FRAMER_SCRATCH_KEEP. The memory budget
 * charges batches, not the scratch. While a batch is framed, the scratch
 * holds its raw bytes, which its charge covers: the arena it gave up (as
 * charged when it was read) or a copy of at most its bytes read (within
 * its 4x reserve for records not made yet). Kept afterwards, though, a
 * huge line's arena (a batch of a carry up to ~2 x max_record_bytes, say
 * 40 MiB at max_record_bytes 16 MiB) stayed in every worker that framed
 * one, uncharged, until a batch of at least 1/8 of it came (normal ones
 * are 1.25 MiB); now each worker keeps at most 4 MiB (1.25 MiB usually). */
void lg_framer_scratch_trim(char **scratch, size_t *cap);

/* Worker: frames `len` bytes taken from b (b->raw_* say how) and appends
 * their records to b, counted in b->framed; clears b->raw_format. On
 * -ENOMEM (or -E2BIG) no record was added and it may be called again. */
int lg_framer_frame_bytes(lg_batch_t *b, const char *p, size_t len);

#endif
