/*
 * lg_sample.h - sample logs as records, for the tools that run a script
 * without a config: `lugger test`, `lugger repl` and the lugger.testing
 * Lua module (through lg_ffi_sample_*).
 *
 * A sample is the bytes of one log file (or of stdin, or of a string a
 * spec holds), framed by the collector's own framing (lg_framing.h) in
 * one of its formats, or read as one JSON object per line
 * (LG_SAMPLE_JSON): each object's keys become fields, "body" the body,
 * "time" the time when it is RFC 3339 text, "log.iostream" the stream
 * when it is "stdout" or "stderr". The sample's path (as given) becomes
 * the log.file.path metadata of its records; the fingerprint of its first
 * bytes makes their record ids, as in the collector. Every record gets
 * routes = 1 (output 0, "default").
 */
#ifndef LG_SAMPLE_H
#define LG_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/lg_batch.h"

/* The format value for one JSON object per line (the others are
 * lg_format_t values, which are >= 0). */
#define LG_SAMPLE_JSON (-1)

typedef struct lg_sample lg_sample_t;

/* Parses a sample format name: "line", "cri", "docker", "auto" (an
 * lg_format_t) or "json" (LG_SAMPLE_JSON), `len` bytes. Returns 0 with
 * the format in *out, or -EINVAL. */
int lg_sample_format_parse(const char *name, size_t len, int *out);

/* Creates a reader for one sample in `format` whose records get
 * log.file.path = `path` (`plen` bytes; NULL or empty: no metadata, as
 * for stdin). Returns NULL on allocation failure or a bad format. */
lg_sample_t *lg_sample_create(int format, const char *path, size_t plen);

void lg_sample_destroy(lg_sample_t *s); /* NULL-safe */

/* For Fluent Bit filters (`lugger test --compat fluent-bit`): with `on`,
 * a JSON sample line's "log" key is its body when it has no "body" key,
 * as Fluent Bit records keep the message under "log". NULL-safe. */
void lg_sample_set_log_body(lg_sample_t *s, int on);

/* Empties `b` (lg_batch_reset) and gives it the sample's metadata and
 * fingerprint, ready for the sample's next records. */
void lg_sample_begin(lg_sample_t *s, lg_batch_t *b);

/* Feeds the sample's next `len` bytes; every record they complete is
 * appended to `b` (which lg_sample_begin prepared), with the time from
 * the line or `now_ns` (nanoseconds since the epoch) for lines without
 * one. Returns 0; -EINVAL when a JSON line is not a JSON object (`err`
 * says "<path>:<line>: not a JSON object"; the records before it are in
 * `b`, the sample cannot go on); -ENOMEM or -E2BIG. */
int lg_sample_feed(lg_sample_t *s, const char *buf, size_t len, int64_t now_ns,
                   lg_batch_t *b, char *err, size_t errlen);

/* Ends the sample: a last line without a newline, or open partial
 * records, become records in `b`. Returns as lg_sample_feed. */
int lg_sample_finish(lg_sample_t *s, int64_t now_ns, lg_batch_t *b, char *err,
                     size_t errlen);

/* Appends a copy of record `i` of `src` to `dst`: body, time, offsets, the
 * stream, truncated and parse-error flags, and its fields (removed keys
 * stay removed); routes = 1, not dropped, failed or routed. An empty
 * `dst` first takes `src`'s metadata and fingerprint (a batch holds one
 * source's records). `src` and `dst` must differ. Returns
 * the new record's index, -ERANGE for a bad `i`, -EINVAL, -ENOMEM or
 * -E2BIG. */
int64_t lg_sample_copy_record(lg_batch_t *dst, const lg_batch_t *src,
                              uint32_t i);

#endif
