/*
 * lg_forward_encode.h - lugger records -> Fluent forward protocol v1
 * messages (the forward output's wire form).
 *
 * Spec: Forward Protocol Specification v1. The output sends
 * PackedForward: [tag, bin(entries), {"size": n, "chunk": id,
 * "compressed": "gzip"?}], with each entry in the legacy [time, record]
 * form that every peer reads (fluentd drops Fluent Bit's
 * [[time, metadata], record] form, see the notes), time as EventTime
 * (fixext8) or, with time_as_integer, integer seconds (fluentd 0.12).
 *
 * The record map is the record as lugger's JSON encoding has it, with the
 * body under `body_key` (default "log", what Fluent Bit and fluentd
 * filters expect) and without "time" (the entry carries it): log.iostream,
 * the source's metadata, the fields scripts set (arrays and maps as
 * msgpack arrays and maps), lugger.truncated, lugger.error.
 */
#ifndef LG_FORWARD_ENCODE_H
#define LG_FORWARD_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "core/lg_buf.h"
#include "pipeline/lg_batch.h"

typedef struct lg_fwd_encode_cfg {
  const char *body_key; /* default "log" */
  int time_as_integer;  /* entries' time as integer seconds */
} lg_fwd_encode_cfg_t;

/*
 * Appends record i of b as one entry [time, {record}] to out. `error`
 * (NUL-terminated, may be NULL) adds "lugger.error". Returns 0 or -ENOMEM.
 */
int lg_fwd_encode_entry(lg_buf_t *out, const lg_fwd_encode_cfg_t *cfg,
                        const lg_batch_t *b, uint32_t i, const char *error);

/*
 * Appends one PackedForward message: tag, the n entries in
 * entries[0..len) (gzip-compressed as one member when `gzip`), and the
 * options size, chunk (when chunk != NULL) and compressed. Returns 0,
 * -ENOMEM or -EIO (zlib).
 */
int lg_fwd_encode_packed(lg_buf_t *out, const char *tag, size_t tag_len,
                         const char *entries, size_t len, uint32_t n,
                         const char *chunk, size_t chunk_len, int gzip);

/* Writes a new chunk id: base64 of 16 random bytes (24 chars) and a NUL,
 * the form the spec describes ("Base64 representation of 128 bits
 * unique_id"). Returns 0 or -EIO. */
int lg_fwd_chunk_id(char out[25]);

/*
 * Reads one ack reply {"ack": id} (a complete msgpack object). Returns 0
 * with *id and *id_len pointing into frame, or -EBADMSG for anything else (an
 * empty map from a receiver that refused the chunk included).
 */
int lg_fwd_parse_ack(const char *frame, size_t len, const char **id,
                     uint32_t *id_len);

/* Tag templates: literal text with ${field} placeholders, e.g.
 * "kube.${k8s.namespace.name}.${k8s.pod.name}". */

/* Checks a template: 0, or -EINVAL with a reason in err for an unclosed
 * "${" or an empty field name. */
int lg_fwd_tag_check(const char *tmpl, char *err, size_t errlen);

/* True when the template has no placeholder (one tag for every record). */
int lg_fwd_tag_is_static(const char *tmpl);

/*
 * Appends the tag of record i for a (checked) template: each ${field} is
 * the record's field (a string as is, a number in decimal, true/false),
 * else the source's metadata key, else "body"/"log.iostream"; a field that
 * is missing, null or an array/map becomes the empty string. Allocates
 * nothing but `out`'s growth: it runs per record on the workers. Returns 0
 * or -ENOMEM.
 */
int lg_fwd_tag_render(lg_buf_t *out, const char *tmpl, const lg_batch_t *b,
                      uint32_t i);

#endif
