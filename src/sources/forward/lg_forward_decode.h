/*
 * lg_forward_decode.h - Fluent forward protocol v1: one received message
 * (a complete msgpack object, see lg_mp_scan) -> lugger records.
 *
 * Spec: Forward Protocol Specification v1 (fluent/fluentd wiki,
 * "Forward-Protocol-Specification-v1"). All four event modes are read:
 *   Message                  [tag, time, record, option?]
 *   Forward                  [tag, [[time, record], ...], option?]
 *   PackedForward            [tag, bin|str (concatenated entries), option?]
 *   CompressedPackedForward  same, bin of gzip (one or several members),
 *                            option {"compressed": "gzip"}
 * The carrier mode is told from the type of element [1], as the spec says.
 * An entry is [time, record] or Fluent Bit's [[time, metadata], record];
 * time is an EventTime (ext type 0, fixext8 or ext8), an integer or a float
 * of seconds. A msgpack nil on its own is a keep-alive.
 *
 * Records: the tag becomes the field `tag_key` (default "fluent.tag", the
 * attribute name the OpenTelemetry Collector's fluentforward receiver
 * uses); the first key of `body_keys` (default "log", then "message")
 * whose value is a string becomes the body; every other key becomes a
 * field (strings, integers exact, floats, booleans, null; arrays and maps
 * as JSON). A non-empty metadata map of the [[time, metadata], record]
 * form becomes the field "fluent.metadata" (JSON).
 */
#ifndef LG_FORWARD_DECODE_H
#define LG_FORWARD_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "core/lg_buf.h"
#include "pipeline/lg_batch.h"

typedef enum lg_fwd_mode {
  LG_FWD_HEARTBEAT = 0, /* a lone nil */
  LG_FWD_MESSAGE = 1,
  LG_FWD_FORWARD = 2,
  LG_FWD_PACKED = 3,
  LG_FWD_COMPRESSED = 4,
} lg_fwd_mode_t;

typedef struct lg_fwd_decode_cfg {
  const char *tag_key;          /* NULL: the tag is not kept */
  const char *const *body_keys; /* tried in order */
  size_t nbody_keys;
  size_t max_decompressed_bytes; /* CompressedPackedForward inflated size */
} lg_fwd_decode_cfg_t;

/* The defaults above: "fluent.tag", {"log", "message"}, 256 MiB
 * (fluentd's decompression_size_limit). */
extern const lg_fwd_decode_cfg_t lg_fwd_decode_defaults;

/* What a message carried, besides its records. Pointers point into the
 * frame given to lg_fwd_decode. */
typedef struct lg_fwd_msg {
  lg_fwd_mode_t mode;
  const char *tag;
  uint32_t tag_len;
  const char *chunk; /* option "chunk" (str or bin), NULL if absent: the
                        ack must echo exactly these bytes */
  uint32_t chunk_len;
  int64_t size;      /* option "size", -1 if absent */
  uint32_t nrecords; /* records appended to the batch */
} lg_fwd_msg_t;

/*
 * Decodes the forward message in frame[0..len) (one complete msgpack
 * object) and appends its records to `b` (with time_ns from the entry,
 * offset and end_offset 0, flags 0). `scratch` is reused for inflated
 * payloads and JSON text; the caller frees it.
 *
 * Returns 0, or a negative errno with a reason in err (NUL-terminated):
 *   -EBADMSG  not a forward message (wrong shape or types, bad entry,
 *             unknown compression, corrupt gzip),
 *   -EMSGSIZE the inflated payload is over max_decompressed_bytes,
 *   -ENOMEM.
 * On error the batch may hold some of the message's records: the caller
 * drops the batch (a malformed message closes the connection).
 */
int lg_fwd_decode(const lg_fwd_decode_cfg_t *cfg, const char *frame, size_t len,
                  lg_batch_t *b, lg_fwd_msg_t *msg, lg_buf_t *scratch,
                  char *err, size_t errlen);

/*
 * Inflates a gzip stream of one or more members (RFC 1952; concatenated
 * members are one stream, as CompressedPackedForward allows) from
 * in[0..n) and appends it to out. Returns 0, -EBADMSG (corrupt or
 * truncated), -EMSGSIZE (over max bytes of output) or -ENOMEM.
 */
int lg_fwd_gunzip(const char *in, size_t n, lg_buf_t *out, size_t max);

/* Appends the ack reply {"ack": chunk} as a msgpack map (what fluentd and
 * Fluent Bit expect: the map form, chunk as str). Returns 0 or -ENOMEM. */
int lg_fwd_encode_ack(lg_buf_t *out, const char *chunk, uint32_t len);

#endif
