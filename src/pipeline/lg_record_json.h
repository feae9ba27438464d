/*
 * lg_record_json.h - a record as its JSON line (DESIGN.md, "Records"): the
 * default encoding of every output, and what `lugger test` prints.
 * Strings follow lg_json.h (escapes, invalid UTF-8 replaced).
 */
#ifndef LG_RECORD_JSON_H
#define LG_RECORD_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "core/lg_buf.h"
#include "pipeline/lg_batch.h"

/* Appends record `i` of `b` as one JSON object followed by "\n", in the
 * contract's shape: "time", "body", "log.iostream", then the source's
 * metadata, then the fields scripts set, in the order first set. A field
 * that a script set or removed under the name of time, body or a metadata
 * key replaces or removes it. Returns 0 or -ENOMEM. */
int lg_json_encode_record(lg_buf_t *out, const lg_batch_t *b, uint32_t i);

/* lg_json_encode_record, with "lugger.error": `error` (`errlen` bytes) as
 * the last key instead of the script error of a failed record: how a
 * record an output rejected for good reaches the dead-letter output.
 * `error` NULL is lg_json_encode_record. Returns 0 or -ENOMEM. */
int lg_json_encode_record_err(lg_buf_t *out, const lg_batch_t *b, uint32_t i,
                              const char *error, size_t errlen);

/* Appends record `i` of `b` as one JSON string (quoted and escaped), for
 * outputs whose log line is text (Loki's line, CloudWatch's message): with
 * `body_only` (and no `error`), the record's body (its "body" field when a
 * script set one; "" when that is not a string); else the record's JSON
 * line (lg_json_encode_record_err with `error`, NUL-terminated or NULL)
 * without its "\n". Returns 0 or -ENOMEM. */
int lg_json_append_record_string(lg_buf_t *out, const lg_batch_t *b, uint32_t i,
                                 int body_only, const char *error);

#endif
