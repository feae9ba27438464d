/*
 * lg_regex.h - compiled PCRE2 patterns for scripts (lugger.regex,
 * rec:parse_regex, re:match).
 *
 * A pattern is compiled once, when the script calls lugger.regex (at
 * load), and JIT-compiled by PCRE2 where the platform allows. Named groups
 * become fields: (?<status>\d+). A group name may carry a type,
 * (?<status:int>\d+), which is taken out of the pattern before PCRE2 sees
 * it (PCRE2 names are word characters only); lg_regex_set_type does the
 * same from an option table. Types are those of lg_parse.h; a value that
 * does not convert is stored as the string it is.
 *
 * A group named "time" is the record's time instead of a field: its
 * "type" is a time format (lg_timefmt.h; default rfc3339), as in
 * (?<time:nginx>[^\]]+), or lg_regex_set_time_format for formats that
 * are not a word (strftime-style text).
 *
 * A compiled pattern belongs to one Lua state, hence to one thread: it
 * owns its match data and the key ids it caches for the batch being run.
 */
#ifndef LG_REGEX_H
#define LG_REGEX_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/lg_batch.h"

typedef struct lg_regex lg_regex_t;

/* Pattern flags for lg_regex_create. */
#define LG_REGEX_CASELESS 0x1u  /* "i" */
#define LG_REGEX_MULTILINE 0x2u /* "m": ^ and $ at line breaks */
#define LG_REGEX_DOTALL 0x4u    /* "s": . matches \n */
#define LG_REGEX_EXTENDED 0x8u  /* "x": white space and # comments ignored */
#define LG_REGEX_UTF                                                           \
  0x10u /* "u": UTF-8 mode (invalid UTF-8 in a                                 \
           subject never matches a character) */

/* Compiles `len` bytes of `pattern` with LG_REGEX_* `flags` into *out.
 * Returns 0, -EINVAL with a message in `err` (`errlen` bytes, NUL-
 * terminated: PCRE2's text and the offset in the pattern, or a bad type
 * suffix), or -ENOMEM. */
int lg_regex_create(const char *pattern, size_t len, uint32_t flags,
                    lg_regex_t **out, char *err, size_t errlen);

/* Frees a pattern. NULL-safe. */
void lg_regex_destroy(lg_regex_t *re);

/* Gives named group `name` (`nlen` bytes) type `type` (lg_parse_type_t).
 * Returns 0, -ENOENT when the pattern has no such group, or -EINVAL. */
int lg_regex_set_type(lg_regex_t *re, const char *name, size_t nlen, int type);

/* Gives the group named "time" the time format `fmt` (`flen` bytes).
 * Returns 0, -ENOENT (no such group), -EINVAL (a bad format; the reason in
 * `err`, `errlen` bytes) or -ENOMEM. */
int lg_regex_set_time_format(lg_regex_t *re, const char *fmt, size_t flen,
                             char *err, size_t errlen);

/* The number of capture groups (numbered and named). */
uint32_t lg_regex_groups(const lg_regex_t *re);

/* Matches `len` bytes at `s`. On a match, writes the start and end byte
 * offsets of the whole match and of each group into `spans` (2 * (groups
 * + 1) entries at most `nspans`; -1, -1 for a group that did not take
 * part; otherwise 0 <= start <= end <= len: a span PCRE2 reports ending
 * before its start, as \K in a lookahead could, is made empty). int32 offsets:
 * re:match's subjects are Lua strings, under 2 GiB in LuaJIT, and LuaJIT reads
 * an int32 as a number with no boxing or conversion, which int64 took per
 * offset (32 groups: 345 ns a call instead of 395). Returns 1 on a match, 0 on
 * none, -ERANGE for `len` over INT32_MAX, -EOVERFLOW when PCRE2 gave up (match,
 * depth or heap limit, JIT stack: the pattern backtracks too much on this
 * text), -ENOMEM. */
int lg_regex_exec(lg_regex_t *re, const char *s, size_t len, int32_t *spans,
                  uint32_t nspans);

/* Matches field `field` (`flen` bytes; empty: the body) of record `i` and
 * sets each named group that took part as a field, typed, and the group
 * "time" as the record's time. Returns 1 on a match, 2 on a match whose
 * "time" is not in its format (the reason in `err`, `errlen` bytes; the
 * record's time unchanged, the other groups set), 0 on none, -ENOENT when
 * the record has no such string field, -ERANGE, -EOVERFLOW (as
 * lg_regex_exec), -E2BIG (the batch's arena is full) or -ENOMEM. */
int lg_regex_rec(lg_batch_t *b, uint32_t i, lg_regex_t *re, const char *field,
                 size_t flen, char *err, size_t errlen);

#endif
