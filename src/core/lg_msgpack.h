/*
 * lg_msgpack.h - MessagePack helpers shared by the forward source and
 * output: an incremental frame scanner with limits, EventTime, and
 * msgpack -> JSON text for nested values.
 *
 * Primitive encoding and decoding come from msgpuck (Debian
 * libmsgpuck-dev, header-only). msgpuck's own mp_check() assumes
 * well-meaning input (its element counter is an int, a map32 header of
 * 2^31 pairs overflows it) and cannot say how long an incomplete object
 * will be, so every byte that comes from a peer passes lg_mp_scan() first:
 * it is resumable over a growing buffer, rejects a declared length or
 * element count that cannot fit the caller's limit as soon as the header
 * arrives (a 100 MiB str32 header is refused after 5 bytes, not after
 * 100 MiB), and bounds the nesting depth. The mp_decode_* calls of
 * msgpuck are then only ever run over bytes the scanner accepted.
 *
 * Spec: MessagePack specification (github.com/msgpack/msgpack/spec.md),
 * Fluent forward protocol v1 for EventTime (ext type 0, 8 bytes: uint32 BE
 * seconds, uint32 BE nanoseconds).
 */
#ifndef LG_MSGPACK_H
#define LG_MSGPACK_H

#include <stddef.h>
#include <stdint.h>

#include "core/lg_buf.h"

/* Deeper nesting than this is refused: a log record with more than 64
 * levels of maps is an attack, not a log. */
#define LG_MP_MAX_DEPTH 64

/* Scanner state for one msgpack object arriving in pieces. Zero it (or
 * lg_mp_scan_init) before the first call and after each complete object. */
typedef struct lg_mp_scan {
  size_t pos;     /* bytes of the object accepted so far (may run ahead of
                     the buffer while inside a str/bin/ext payload) */
  uint32_t depth; /* open arrays/maps */
  uint64_t remain[LG_MP_MAX_DEPTH]; /* elements still due at each level */
} lg_mp_scan_t;

/* Result codes of lg_mp_scan besides negative errors. */
#define LG_MP_MORE 0     /* valid so far; call again with more bytes */
#define LG_MP_COMPLETE 1 /* s->pos is the object's length */

void lg_mp_scan_init(lg_mp_scan_t *s);

/*
 * Scans the msgpack object that starts at buf[0]; `len` bytes are available
 * (the same bytes as the previous call plus any new ones: the caller keeps
 * the object's bytes from its start). Resumes where the previous call
 * stopped, so a large object arriving in many reads is scanned once.
 * `max_bytes` bounds the whole object.
 *
 * Returns LG_MP_COMPLETE (s->pos = length), LG_MP_MORE, or
 *   -EMSGSIZE: a header declares more bytes or elements than max_bytes
 *              allows (detected as soon as the header is complete),
 *   -EBADMSG:  the reserved byte 0xc1,
 *   -ELOOP:    nesting deeper than LG_MP_MAX_DEPTH.
 */
int lg_mp_scan(lg_mp_scan_t *s, const char *buf, size_t len, size_t max_bytes);

/*
 * Checks that buf holds one complete, valid msgpack object at its start
 * and stores its length in *obj_len. Returns 0, -EBADMSG for a truncated
 * or malformed object, or the errors of lg_mp_scan.
 */
int lg_mp_check(const char *buf, size_t len, size_t *obj_len);

/*
 * Decodes a Fluent event time at *p (bytes already checked): an
 * EventTime (ext type 0 as fixext8 `d7 00` or ext8 `c7 08 00`), an
 * unsigned or signed integer of seconds, or a float of seconds (sent by
 * some loggers; accepted). Stores nanoseconds since the epoch in *ns and
 * advances *p. Returns 0, or -EINVAL for any other type (including an ext
 * of another type or size); *p is then unchanged.
 */
int lg_mp_decode_time(const char **p, const char *end, int64_t *ns);

/* Decodes the (checked) str or bin at *p: returns its bytes (not
 * NUL-terminated; they stay in the buffer), stores their length in *len
 * and advances *p. Returns NULL, with *p and *len unchanged, for any other
 * type. Peers send text as either (Fluent forward protocol v1: tags,
 * option values and HELO/PONG fields "str or bin"). */
const char *lg_mp_decode_strbin(const char **p, uint32_t *len);

/* Writes `ns` as an EventTime fixext8 (10 bytes) at p; returns p + 10. */
char *lg_mp_encode_event_time(char *p, int64_t ns);

/*
 * Appends the (checked) msgpack value at *p as JSON text and advances *p.
 * str and bin become JSON strings (invalid UTF-8 replaced, see lg_json.h),
 * map keys that are numbers, booleans or nil become their text as a
 * string, array and map keys the string "(array)" or "(map)", ext
 * values become null except EventTime, which becomes its RFC 3339 text.
 * Returns 0 or -ENOMEM.
 */
int lg_mp_to_json(lg_buf_t *out, const char **p, const char *end);

#endif
