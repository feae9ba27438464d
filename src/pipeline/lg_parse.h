/*
 * lg_parse.h - parsing a record's text into fields, in C: the shared part
 * of the parsers behind rec:parse_regex (lg_regex.c), rec:parse_json
 * (lg_parse_json.c), rec:parse_logfmt, rec:parse_kv and rec:parse_csv
 * (lg_parse.c). Their FFI entry points are in lg_ffi.h ("parse" area).
 *
 * Zero-copy: the text parsed is usually the body, which lives in the
 * batch's arena, and arena bytes never change once written. So a value
 * that is a plain piece of the text becomes a string field that points at
 * those bytes (lg_batch_set_span_id); only values that must be rewritten
 * (JSON or quoted text with escapes) are copied. Nothing becomes a Lua
 * string unless the script reads the field.
 *
 * The arena may move whenever a field is set, so the parsers keep offsets,
 * never pointers, into it while they set fields.
 */
#ifndef LG_PARSE_H
#define LG_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "core/lg_buf.h"
#include "pipeline/lg_batch.h"

/* How a parsed piece of text is stored (regex groups, CSV columns). */
typedef enum lg_parse_type {
  LG_PARSE_STR = 0,   /* a string, as written */
  LG_PARSE_INT = 1,   /* a decimal integer -> int64 */
  LG_PARSE_FLOAT = 2, /* a decimal number -> double */
  LG_PARSE_BOOL = 3,  /* true/false, yes/no, on/off, 1/0 (any case) */
} lg_parse_type_t;

/* Scratch memory one Lua state reuses for every parse: unescaped text,
 * composed keys, the JSON parser's list of values, and the key id the
 * k-th JSON member had last time (checked before use). */
#define KEY_CACHE 32
typedef struct lg_parse_scratch {
  lg_buf_t text;
  void *items; /* lg_parse_json.c */
  size_t nitems, items_cap;
  int64_t kid_cache[KEY_CACHE];
} lg_parse_scratch_t;

/* The text being parsed: `len` bytes at `p`, which are arena bytes at
 * offset `off` when `off` >= 0 (re-read p from the arena after setting a
 * field), else bytes outside the arena (metadata, a formatted time). */
typedef struct lg_parse_src {
  const char *p;
  size_t len;
  int64_t off;
  char tmp[40]; /* storage for a formatted time */
} lg_parse_src_t;

/* The text of field `key` (`klen` bytes; empty: "body") of record `i`: a
 * string field, the body, time (RFC 3339), log.iostream or a metadata
 * string. Returns 0, -ENOENT when the record has no such string, or
 * -ERANGE for a bad index. */
int lg__parse_src(const lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                  lg_parse_src_t *src);

/* Where the source's bytes are now (the arena may have moved). */
static inline const char *lg__parse_src_ptr(const lg_batch_t *b,
                                            const lg_parse_src_t *src) {
  return src->off >= 0 ? b->data + src->off : src->p;
}

/* The key id of `key` in `b`, copying the key first when it lies in the
 * arena (which interning may move). Returns the id or a negative errno. */
int64_t lg__parse_key(lg_batch_t *b, const char *key, size_t klen);

/* Sets field `kid` of record `i` to `len` bytes at `at` of the source,
 * converted to `type`; text that does not convert is stored as a string.
 * Returns 0 or a negative errno. */
int lg__parse_set(lg_batch_t *b, uint32_t i, uint32_t kid,
                  const lg_parse_src_t *src, size_t at, size_t len,
                  lg_parse_type_t type);

/* Sets string field `kid` to `len` bytes at `p`, which must not be in
 * the arena (scratch text). Returns 0 or a negative errno. */
int lg__parse_set_copy(lg_batch_t *b, uint32_t i, uint32_t kid, const char *p,
                       size_t len, lg_parse_type_t type);

/* The type named by `name` (`len` bytes: "int", "float", "bool", "str" or
 * "string"), or -1. */
int lg__parse_type(const char *name, size_t len);

/* Parses a decimal int64 (optional sign, digits only). Returns 0 or -1
 * (not an integer, or out of range). */
int lg__parse_int(const char *p, size_t len, int64_t *out);

/* The length of the UTF-8 byte order mark (EF BB BF) that `len` bytes at
 * `p` start with: 3, or 0 when they do not. Windows and .NET tools write
 * one at the start of a file, so the first line of such a file has it;
 * the JSON, logfmt, key/value and CSV parsers skip it (RFC 8259 section
 * 8.1 allows it for JSON), rec:parse_regex does not (a pattern sees the
 * text as it is). */
size_t lg__parse_bom(const char *p, size_t len);

/* Reads the 4 hex digits (either case) at `p` into `out`. Returns 0, or
 * -1 when one is not a hex digit (`out` unchanged). */
int lg__parse_hex4(const char *p, unsigned *out);

/* Writes code point `cp` (at most 0x10FFFF, not a surrogate) as UTF-8
 * into `out`. Returns the number of bytes written, 1 to 4. */
size_t lg__parse_utf8(unsigned cp, char out[4]);

#endif
