/*
 * lg_json.h - JSON text output (RFC 8259) for records and logs.
 *
 * Encoding is lugger's own because it is on the record path; parsing JSON
 * input uses cJSON.
 *
 * Strings: `"` and `\` are escaped, control bytes below 0x20 become \n, \r,
 * \t, \b, \f or \u00XX, and bytes that are not valid UTF-8 (stray
 * continuation bytes, overlong forms, surrogates, truncated sequences) are
 * each replaced with U+FFFD, so the output is always valid UTF-8 JSON.
 */
#ifndef LG_JSON_H
#define LG_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/lg_batch.h"
#include "core/lg_buf.h"

/* Appends `len` bytes of `s` as a quoted JSON string. Returns 0 or -ENOMEM. */
int lg_json_append_string(lg_buf_t *out, const char *s, size_t len);

/* Appends a 64-bit integer in decimal. Returns 0 or -ENOMEM. */
int lg_json_append_int(lg_buf_t *out, int64_t v);

/* Appends a double the shortest way that reads back exactly ("%.17g"
 * fallback); integral values within 2^53 are written without a fraction;
 * NaN and infinities, which JSON cannot hold, are written as null.
 * Returns 0 or -ENOMEM. */
int lg_json_append_number(lg_buf_t *out, double v);

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

#endif
