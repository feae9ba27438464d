/*
 * lg_json.h - a JSON text writer (RFC 8259): strings, integers and numbers
 * appended to an lg_buf_t. A leaf: records are encoded above the batch
 * (pipeline/lg_record_json.h).
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

#include <string.h>

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

/* 1 when the `len` bytes at `s` are valid UTF-8 (RFC 3629: no overlongs,
 * no surrogates, at most U+10FFFF), which lg_json_append_string keeps as
 * they are; else 0 (it would replace some with U+FFFD). */
int lg_json_utf8_valid(const char *s, size_t len);

/* For encoders that reserve room once and then store: */

/* Room lg_json_put_string needs for `len` bytes (every byte as \u00XX, or
 * U+FFFD for a byte that is not UTF-8, at most 3; and the quotes). */
static inline size_t lg_json_string_room(size_t len) { return len * 6 + 2; }

/* Writes `len` bytes of `str` as a quoted JSON string at p, which has
 * room for lg_json_string_room(len) bytes. Returns the end of what was
 * written. */
char *lg_json_put_string(char *p, const char *str, size_t len);

/* Writes v in decimal at p (room for 20 bytes); returns the end. */
static inline char *lg_json_put_int(char *p, int64_t v) {
  char tmp[24];
  char *e = tmp + sizeof tmp;
  char *q = e;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do {
    *--q = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0)
    *--q = '-';
  memcpy(p, q, (size_t)(e - q));
  return p + (e - q);
}

/* Writes v as lg_json_append_number does at p (room for 32 bytes);
 * returns the end. */
char *lg_json_put_number(char *p, double v);

#endif
