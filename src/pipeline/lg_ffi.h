/*
 * lg_ffi.h - every C function that Lua calls through the LuaJIT FFI.
 *
 * The rules (STYLE.md, after OpenResty's lua-resty-core):
 *   - names are lg_ffi_<area>_<verb>, one thin wrapper file per area under
 *     lua/lugger/ holds the matching ffi.cdef (a spec compares the two);
 *   - every function returns an int status: 0 or a non-negative result on
 *     success, a negative errno value on error;
 *   - strings cross as pointer + length and are never NUL-terminated on the
 *     way in; results go through out-parameters;
 *   - no lua_State anywhere, and nothing here calls back into Lua.
 *
 * These functions run on the hot path of every record, so they do no
 * logging and no allocation beyond what the batch itself needs. Every
 * record index is bounds-checked against the batch (-ERANGE).
 *
 * Areas:
 *   rec    - read and change one record of a batch (lua/lugger/record.lua)
 *   json   - JSON string quoting for the Lua encoder (lua/lugger/json.lua)
 *   log    - lugger's own log, for lugger.log() (lua/lugger/log.lua)
 *   mem    - the memory limit of the running state (lua/lugger/driver.lua)
 *   batch, meta, abi - building batches and checking struct layouts, for
 *            specs and tools (lua/lugger/testing.lua); not used by the
 *            runtime itself.
 *   parse  - parsing a record's text into fields in C: regex (PCRE2),
 *            JSON, logfmt, key/value, CSV, times (lua/lugger/parse.lua);
 *            implemented in lg_regex.c, lg_parse.c and lg_parse_json.c.
 *   sample - sample logs framed into batches (lg_sample.h), for
 *            lugger.testing and `lugger repl` (lua/lugger/sample.lua);
 *            implemented in lg_sample.c.
 */
#ifndef LG_FFI_H
#define LG_FFI_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/lg_batch.h"

/* A field value read by lg_ffi_rec_get. One preallocated instance per Lua
 * state is reused for every read, so reads allocate nothing in C. */
typedef struct lg_ffi_val {
  double d;      /* LG_VAL_INT (converted: exact up to 2^53, the nearest
                    double beyond), LG_VAL_NUM, LG_VAL_BOOL (0 or 1) */
  int64_t i;     /* LG_VAL_INT exactly; LG_VAL_BOOL 0 or 1 */
  const char *s; /* LG_VAL_STR bytes, LG_VAL_JSON text; valid only until
                    the batch is next changed (its arena may move) */
  size_t len;    /* bytes at s */
  char buf[40];  /* storage behind s for values C formats (time) */
} lg_ffi_val_t;

/* ---- rec: one record ---------------------------------------------------- */

/* Reads field `key` (`klen` bytes) of record `i`: a field set by a script
 * or by framing first, then the builtins `time` (RFC 3339 text, UTC, nine
 * fractional digits), `body` and `log.iostream` ("stdout"/"stderr", absent
 * when the format has no stream), then the source's metadata.
 * Returns the value's lg_val_type_t (> 0) with the value in *out,
 * LG_VAL_DELETED (0) when the record has no such key (or it was removed),
 * or -ERANGE for a bad index, -EINVAL for a NULL argument. */
int lg_ffi_rec_get(const lg_batch_t *b, uint32_t i, const char *key,
                   size_t klen, lg_ffi_val_t *out);

/* Field setters for record `i` (see lg_batch_set_*): a new key goes last,
 * an existing one is replaced in place; a key naming a builtin or metadata
 * key shadows it. `set_json` takes JSON text (an array or object) that the
 * caller has encoded; it is copied into the output as it is.
 * Return 0, -ERANGE (bad index), -ENOMEM, -E2BIG (arena over 4 GiB) or
 * -EINVAL (NULL pointer with a non-zero length). */
int lg_ffi_rec_set_str(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                       const char *val, size_t vlen);
int lg_ffi_rec_set_int(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                       int64_t val);
int lg_ffi_rec_set_num(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                       double val);
int lg_ffi_rec_set_bool(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                        int val);
int lg_ffi_rec_set_null(lg_batch_t *b, uint32_t i, const char *key,
                        size_t klen);
int lg_ffi_rec_set_json(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                        const char *json, size_t jlen);

/* Removes field `key` of record `i` (a builtin or metadata key is hidden
 * from the output). Returns 0, -ERANGE or -EINVAL. */
int lg_ffi_rec_del(lg_batch_t *b, uint32_t i, const char *key, size_t klen);

/* The id of field name `key` in batch `b` (lg_batch_key_id), for the
 * setters below, which then skip hashing the name: the record wrapper
 * looks ids up in a Lua table per batch. Valid until the batch is reset.
 * Returns the id (>= 0), -ENOMEM, -E2BIG or -EINVAL. */
int lg_ffi_key_id(lg_batch_t *b, const char *key, size_t klen);

/* lg_ffi_rec_set_str/_int/_num and lg_ffi_rec_del by key id. Return as
 * those do; -EINVAL also for an id the batch does not have. */
int lg_ffi_rec_set_str_k(lg_batch_t *b, uint32_t i, uint32_t kid,
                         const char *val, size_t vlen);
int lg_ffi_rec_set_int_k(lg_batch_t *b, uint32_t i, uint32_t kid, int64_t val);
int lg_ffi_rec_set_num_k(lg_batch_t *b, uint32_t i, uint32_t kid, double val);
int lg_ffi_rec_del_k(lg_batch_t *b, uint32_t i, uint32_t kid);

/* Sets the record's time to `ns` nanoseconds since the epoch (UTC).
 * Returns 0, -ERANGE or -ENOMEM. */
int lg_ffi_rec_set_time(lg_batch_t *b, uint32_t i, int64_t ns);

/* Sets the record's time from RFC 3339 text (`len` bytes, any offset;
 * stored in UTC). Returns 0, -EINVAL when the text is not an RFC 3339
 * time, -ERANGE or -ENOMEM. */
int lg_ffi_rec_set_time_str(lg_batch_t *b, uint32_t i, const char *s,
                            size_t len);

/* Flags record `i` dropped: it is acknowledged without being sent.
 * Returns 0 or -ERANGE. */
int lg_ffi_rec_drop(lg_batch_t *b, uint32_t i);

/* Routes record `i`: `add` = 0 replaces its routes with output `out`,
 * `add` = 1 adds output `out`; `out` = -1 with `add` = 0 routes it
 * nowhere. Sets LG_REC_ROUTED. Returns 0, -ERANGE for a bad record index,
 * -EINVAL for an output index outside [0, 64). */
int lg_ffi_rec_route(lg_batch_t *b, uint32_t i, int32_t out, int add);

/* Flags record `i` failed (LG_REC_FAILED) with the error text `msg`
 * (`len` bytes) followed by the record's source position,
 * " (file <log.file.path> offset <n>)", or " (offset <n>)" when the source
 * has no log.file.path (out of memory for that: `msg` alone). Returns
 * 0, -ERANGE, or -ENOMEM / -E2BIG when no text could be stored (the
 * record is flagged failed all the same, with empty text); a full arena
 * is not that (lg_batch_fail). */
int lg_ffi_rec_fail(lg_batch_t *b, uint32_t i, const char *msg, size_t len);

/* Writes record `i`'s stable id into `buf` (`cap` bytes, 38 are always
 * enough; NUL-terminated): lg_batch_rec_id (lg_batch.h), for Lua's
 * rec:id(). */
int lg_ffi_rec_id(const lg_batch_t *b, uint32_t i, char *buf, size_t cap);

/* ---- json -----------------------------------------------------------------
 */

/* Writes `len` bytes of `s` as a quoted JSON string (lg_json.h rules:
 * control bytes escaped, invalid UTF-8 replaced with U+FFFD) into `out`
 * (`cap` bytes; 6 * len + 2 is always enough) and its length into
 * *outlen. Returns 0, -ENOSPC (with the length needed in *outlen) or
 * -ENOMEM. */
int lg_ffi_json_quote(const char *s, size_t len, char *out, size_t cap,
                      size_t *outlen);

/* ---- log ------------------------------------------------------------------
 */

/* Writes one line of lugger's own log (lg_log.h): `level` 0 debug, 1 info,
 * 2 warn, 3 error; `component` and `msg` are pointer + length. Returns 0 or
 * -EINVAL for a bad level. */
int lg_ffi_log_write(int level, const char *component, size_t clen,
                     const char *msg, size_t mlen);

/* ---- mem ------------------------------------------------------------------
 */

/* Lets the Lua state running on this thread exceed its memory limit by a
 * small headroom (`on` = 1) while the driver records a script's failure,
 * or ends that (`on` = 0; lg_lua_run also ends it). A no-op for states
 * without a limit and outside lg_lua. Implemented in lg_lua.c. Returns 0. */
int lg_ffi_mem_headroom(int on);

/* ---- batch, meta, abi: for specs and tools --------------------------------
 */

/* Creates an empty batch in *out (lg_batch_create). Returns 0 or -ENOMEM. */
int lg_ffi_batch_create(size_t data_hint, lg_batch_t **out);

/* Destroys a batch (NULL-safe). Returns 0. */
int lg_ffi_batch_destroy(lg_batch_t *b);

/* Empties a batch for reuse and bumps its gen (lg_batch_reset). Returns 0. */
int lg_ffi_batch_reset(lg_batch_t *b);

/* Appends a record (lg_batch_add): body bytes, time in ns, the file offsets
 * of its first byte and just past its last, LG_REC_* flags. Its routes are
 * set to `routes`. Returns its index or a negative errno. */
int lg_ffi_batch_add(lg_batch_t *b, const char *body, size_t len,
                     int64_t time_ns, uint64_t offset, uint64_t end_offset,
                     uint32_t flags, uint64_t routes);

/* Inserts a record after record `i` (lg_batch_insert: same time, offsets,
 * routes and stream flags, no fields), for splitting one record into
 * several. `body` is `len` bytes. Returns the new index (i + 1), -ERANGE,
 * -EINVAL, -ENOMEM or -E2BIG. */
int lg_ffi_batch_insert(lg_batch_t *b, uint32_t i, const char *body,
                        size_t len);

/* Sets the fingerprint used in record ids. Returns 0. */
int lg_ffi_batch_set_fingerprint(lg_batch_t *b, uint64_t fingerprint);

/* Sets the batch's metadata (takes a reference). Returns 0. */
int lg_ffi_batch_set_meta(lg_batch_t *b, const lg_meta_t *m);

/* Encodes record `i` as its JSON line (lg_json_encode_record, with the
 * trailing "\n") into `out` (`cap` bytes), its length in *outlen.
 * Returns 0, -ERANGE, -ENOSPC (length needed in *outlen) or -ENOMEM. */
int lg_ffi_batch_encode(const lg_batch_t *b, uint32_t i, char *out, size_t cap,
                        size_t *outlen);

/* Metadata: create, add string or integer pairs, seal, release. */
int lg_ffi_meta_create(lg_meta_t **out);
int lg_ffi_meta_add_str(lg_meta_t *m, const char *key, size_t klen,
                        const char *val, size_t vlen);
int lg_ffi_meta_add_int(lg_meta_t *m, const char *key, size_t klen,
                        int64_t val);
int lg_ffi_meta_add_hidden_str(lg_meta_t *m, const char *key, size_t klen,
                               const char *val, size_t vlen);
int lg_ffi_meta_seal(lg_meta_t *m);
int lg_ffi_meta_unref(const lg_meta_t *m);

/* The C compiler's view of a struct crossing the FFI: with `field` empty,
 * sizeof(`type`); else offsetof(`type`, `field`), into *out. `type` is one
 * of lg_batch_t, lg_rec_t, lg_field_t, lg_meta_t, lg_meta_kv_t,
 * lg_ffi_val_t. Returns 0 or -ENOENT. A spec compares these with
 * ffi.sizeof / ffi.offsetof of the Lua declarations. */
int lg_ffi_abi_layout(const char *type, size_t tlen, const char *field,
                      size_t flen, uint64_t *out);

/* ---- sample: sample logs as records (lg_sample.h) -------------------------
 */

struct lg_sample;

/* The sample format named by `name` (`len` bytes: line, cri, docker, auto,
 * json) into *out. Returns 0 or -EINVAL. */
int lg_ffi_sample_format(const char *name, size_t len, int *out);

/* Creates a sample reader (lg_sample_create) in *out: `format` from
 * lg_ffi_sample_format, `path` (`plen` bytes, may be empty) the
 * log.file.path of its records. Returns 0, -EINVAL or -ENOMEM. */
int lg_ffi_sample_create(int format, const char *path, size_t plen,
                         struct lg_sample **out);

/* Destroys a sample reader (NULL-safe). Returns 0. */
int lg_ffi_sample_destroy(struct lg_sample *s);

/* Empties `b` and gives it the sample's metadata and fingerprint
 * (lg_sample_begin). Returns 0 or -EINVAL. */
int lg_ffi_sample_begin(struct lg_sample *s, lg_batch_t *b);

/* Feeds `len` bytes of the sample, appending completed records to `b`;
 * lines without a time get `now_ns` (ns since the epoch; <= 0: the
 * current time). Error text for -EINVAL (a JSON line that is not an
 * object) goes to `err` (`errlen` bytes, NUL-terminated). Returns 0,
 * -EINVAL, -ENOMEM or -E2BIG (lg_sample_feed). */
int lg_ffi_sample_feed(struct lg_sample *s, const char *buf, size_t len,
                       int64_t now_ns, lg_batch_t *b, char *err, size_t errlen);

/* Ends the sample (lg_sample_finish); as lg_ffi_sample_feed. */
int lg_ffi_sample_finish(struct lg_sample *s, int64_t now_ns, lg_batch_t *b,
                         char *err, size_t errlen);

/* Appends a copy of record `i` of `src` to `dst` (lg_sample_copy_record).
 * Returns the new index, -ERANGE, -EINVAL, -ENOMEM or -E2BIG. */
int lg_ffi_sample_copy(lg_batch_t *dst, const lg_batch_t *src, uint32_t i);

/* ---- parse: text into fields (lg_parse.h, lg_regex.h) --------------------
 *
 * The rec functions parse field `field` (`flen` bytes; empty: the body) of
 * record `i` and return -ENOENT when the record has no such string field.
 */

struct lg_regex;
struct lg_parse_scratch;

/* Scratch memory for the parsers, one per Lua state. Returns 0 or
 * -ENOMEM; destroy is NULL-safe and returns 0. */
int lg_ffi_parse_scratch_create(struct lg_parse_scratch **out);
int lg_ffi_parse_scratch_destroy(struct lg_parse_scratch *s);

/* Compiles a PCRE2 pattern (lg_regex_create; `flags` is text of i, m, s,
 * x, u). Returns 0 or -EINVAL with the reason in `err` (`errlen` bytes),
 * or -ENOMEM. */
int lg_ffi_parse_regex_create(const char *pat, size_t len, const char *flags,
                              size_t flen, struct lg_regex **out, char *err,
                              size_t errlen);
int lg_ffi_parse_regex_destroy(struct lg_regex *re);

/* Types named group `name`: `type` is int, float, bool or str. Returns 0,
 * -ENOENT (no such group) or -EINVAL (no such type). */
int lg_ffi_parse_regex_set_type(struct lg_regex *re, const char *name,
                                size_t nlen, const char *type, size_t tlen);

/* The number of capture groups, or -EINVAL. */
int lg_ffi_parse_regex_groups(const struct lg_regex *re);

/* Matches `len` bytes at `s`: lg_regex_exec (1 match with the byte spans
 * of the match and of each group in `spans`, 0 none, or a negative
 * errno). */
int lg_ffi_parse_regex_exec(struct lg_regex *re, const char *s, size_t len,
                            int32_t *spans, uint32_t nspans);

/* Gives the group "time" a time format (lg_regex_set_time_format). */
int lg_ffi_parse_regex_set_time(struct lg_regex *re, const char *fmt,
                                size_t flen, char *err, size_t errlen);

/* Sets the named groups of a match as fields and "time" as the record's
 * time (lg_regex_rec). Returns 1 on a match, 2 on a match whose time did
 * not parse (the reason in `err`), 0 on none, or a negative errno. */
int lg_ffi_parse_rec_regex(lg_batch_t *b, uint32_t i, struct lg_regex *re,
                           const char *field, size_t flen, char *err,
                           size_t errlen);

/* Sets the members of a JSON object (lg_parse_json.c; a UTF-8 byte order
 * mark before it is skipped, as RFC 8259 section 8.1 allows) as fields; with a
 * separator `sep` (`seplen` > 0) nested objects are flattened, keys are
 * prefixed with `prefix`. Returns the number of fields set, -EINVAL with
 * the reason in `err` (the record unchanged), -ENOENT, -ERANGE or -ENOMEM.
 */
int lg_ffi_parse_rec_json(lg_batch_t *b, uint32_t i, const char *field,
                          size_t flen, const char *sep, size_t seplen,
                          const char *prefix, size_t plen,
                          struct lg_parse_scratch *s, char *err, size_t errlen);

/* Sets logfmt pairs (key=value, key="quoted \" value", bare key = true)
 * as string fields. Returns the number set or a negative errno. */
int lg_ffi_parse_rec_logfmt(lg_batch_t *b, uint32_t i, const char *field,
                            size_t flen, struct lg_parse_scratch *s);

/* Sets key/value pairs split by `psep` and `kvsep` (a blank `psep` is any
 * run of blanks; keys and values trimmed, values may be quoted) as string
 * fields. Returns the number set or a negative errno. */
int lg_ffi_parse_rec_kv(lg_batch_t *b, uint32_t i, const char *field,
                        size_t flen, const char *psep, size_t pslen,
                        const char *kvsep, size_t kvlen,
                        struct lg_parse_scratch *s);

/* Sets CSV columns (RFC 4180 quoting, separator byte `sep`) as fields
 * named by `cols`: names joined by NUL bytes, each optionally "name:type",
 * an empty name skips its column. Returns the number set, -EINVAL with the
 * reason in `err` (bad quoting, unknown type) or a negative errno. */
int lg_ffi_parse_rec_csv(lg_batch_t *b, uint32_t i, const char *field,
                         size_t flen, const char *cols, size_t clen, int sep,
                         struct lg_parse_scratch *s, char *err, size_t errlen);

/* Parses time text `s` in format `fmt` (lg_timefmt.h) into *out, ns since
 * the epoch. Returns 0, -EINVAL (no match) or -EOPNOTSUPP (bad format),
 * with the reason in `err` (`errlen` bytes). */
int lg_ffi_parse_time(const char *s, size_t len, const char *fmt, size_t flen,
                      int64_t *out, char *err, size_t errlen);

/* As lg_ffi_parse_time, and sets the result as record `i`'s time. */
int lg_ffi_parse_rec_time(lg_batch_t *b, uint32_t i, const char *s, size_t len,
                          const char *fmt, size_t flen, char *err,
                          size_t errlen);

#endif
