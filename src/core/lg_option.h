/*
 * lg_option.h - typed option tables. Each output type declares its
 * options once (name, type, default, description, and where the value
 * lives in the type's config struct); that one table drives config
 * parsing, the typed config the type's code reads (lg_opt_fill),
 * `lugger check` and the docs (`lugger check --options-markdown`).
 */
#ifndef LG_OPTION_H
#define LG_OPTION_H

#include <stddef.h>
#include <stdint.h>

typedef enum lg_opt_type {
  LG_OPT_STRING,   /* Lua string */
  LG_OPT_INT,      /* Lua integer number */
  LG_OPT_BOOL,     /* Lua boolean */
  LG_OPT_BYTES,    /* number of bytes, or a string "64KiB", "1MiB", "2GB" */
  LG_OPT_DURATION, /* milliseconds, or a string "500ms", "5s", "1m" */
  LG_OPT_ENUM,     /* one of `choices` ("a|b|c") */
  LG_OPT_STRMAP,   /* table of string keys to string/number/bool values,
                      kept as strings (e.g. librdkafka properties) */
  LG_OPT_STRLIST,  /* a string or a list of strings, kept in vals[0..n) */
  LG_OPT_PATH,     /* a file path as a string; the config loader makes a
                      relative one absolute against the config file's
                      directory */
} lg_opt_type_t;

struct lg_optval;

typedef struct lg_option {
  const char *name;
  lg_opt_type_t type;
  const char *def; /* default in config syntax; NULL = no default */
  int required;
  const char *choices; /* LG_OPT_ENUM: "none|gzip|lz4" */
  const char *doc;     /* one sentence for `lugger check` and the README */
  /* Optional extra check of a parsed value (a range, a format): 0, or a
   * negative errno with a message in `err`. */
  int (*check)(const struct lg_optval *v, char *err, size_t errlen);
  /* Where lg_opt_fill stores the value in the type's config struct
   * (offsetof), by type: STRING, PATH `char *`; ENUM `int` (index into
   * choices, -1 without a value); INT, BYTES (bytes), DURATION (ms)
   * `int64_t`; BOOL `int`; STRLIST `lg_opt_strv_t`; STRMAP
   * `lg_opt_strmap_t`. Only read for tables used with lg_opt_fill. */
  size_t offset;
} lg_option_t;

/* A filled STRLIST (values borrowed from the lg_optval_t it came from). */
typedef struct lg_opt_strv {
  char *const *v;
  size_t n;
} lg_opt_strv_t;

/* A filled STRMAP (keys and values borrowed, as above). */
typedef struct lg_opt_strmap {
  char *const *keys;
  char *const *vals;
  size_t n;
} lg_opt_strmap_t;

typedef struct lg_optval {
  int set;     /* given in the config (else the default was used) */
  char *s;     /* STRING, ENUM, PATH */
  int64_t i;   /* INT, BOOL, BYTES (bytes), DURATION (ms) */
  char **keys; /* STRMAP */
  char **vals;
  size_t n;
} lg_optval_t;

struct lua_State;

/* Parses a byte size: a decimal number (fractions allowed) with an optional
 * unit, case-insensitive, optionally after one space: B, K/KB (1000),
 * KiB (1024), M/MB, MiB, G/GB, GiB, T/TB, TiB. "64KiB" = 65536,
 * "1.5MiB" = 1572864, "2GB" = 2000000000, "512" = 512. Returns 0 and
 * *out (bytes), -EINVAL for bad syntax or -ERANGE above INT64_MAX. */
int lg_opt_parse_bytes(const char *s, int64_t *out);

/* Parses a duration into milliseconds: one or more <number><unit> parts,
 * unit ms, s, m, h ("500ms", "5s", "1m30s", "1.5s"); "0" alone is 0.
 * Fractions below a millisecond are rounded down. Returns 0, -EINVAL or
 * -ERANGE. */
int lg_opt_parse_duration(const char *s, int64_t *out_ms);

/* Index of `s` among the '|'-separated `choices` ("never|interval|always"),
 * or -EINVAL. */
int lg_opt_parse_enum(const char *choices, const char *s);

/* Finds option `name` in a {NULL}-terminated table: its index, or -1. */
int lg_opt_find(const lg_option_t *opts, const char *name);

/* The name in the NULL-terminated `names` closest to `name`, for an
 * "unknown key (did you mean ...?)" message: at most one edit away (an
 * insertion, deletion, substitution or swap of two neighbours, ignoring
 * case; two for names of 6 bytes or more). NULL when none is that close,
 * or when two are equally close. */
const char *lg_opt_closest_name(const char *const *names, const char *name);

/* lg_opt_closest_name over the names of a {NULL}-terminated option table. */
const char *lg_opt_closest(const lg_option_t *opts, const char *name);

/* Fills `v` from the option's default (its `def` text, parsed as the
 * config would parse a string). An option without a default gets an empty
 * value (s NULL, i 0, n 0). 0, or -EINVAL with `err` when `def` is bad. */
int lg_opt_set_default(const lg_option_t *opt, lg_optval_t *v, char *err,
                       size_t errlen);

/* Parses the Lua value at stack index `idx` of `L` as option `opt` into
 * `v` (set = 1), then runs opt->check. On a wrong type or bad value returns
 * -EINVAL (-ENOMEM on allocation failure) with `err` holding one message
 * that starts with the key path `path`, e.g.
 * "outputs.f.fsync: expected one of \"never\", \"interval\", \"always\",
 * got \"sometimes\"" or "sources.app.paths[2]: expected a string, got
 * number". Leaves the stack as it was. */
int lg_opt_parse_lua(struct lua_State *L, int idx, const lg_option_t *opt,
                     const char *path, lg_optval_t *v, char *err,
                     size_t errlen);

/* Fills the typed config struct `conf` from `vals` (parsed or default
 * values, one per row of the {NULL}-terminated table `opts`, as the config
 * loader makes them): each row's value goes to conf + row.offset in the
 * row type's C type (see lg_option_t.offset). Strings, lists and maps are
 * borrowed from `vals`, which must outlive `conf`; nothing is allocated.
 * Returns 0, or -EINVAL with "<name>: required" in `err` when a required
 * option has no value (the loader checks that first; this catches configs
 * built in code). */
int lg_opt_fill(const lg_option_t *opts, const struct lg_optval *vals,
                void *conf, char *err, size_t errlen);

/* Frees what `v` holds and zeroes it. NULL-safe. */
void lg_optval_free(lg_optval_t *v);

/* Checks for lg_opt_spec_t.check: an integer (size, duration, count)
 * greater than 0, or 0 or more; a string that is not empty. 0, or -EINVAL
 * with the reason in `err` ("must be greater than 0", "must be 0 or more",
 * "must not be empty"). */
int lg_opt_check_positive(const struct lg_optval *v, char *err, size_t errlen);
int lg_opt_check_nonnegative(const struct lg_optval *v, char *err,
                             size_t errlen);
int lg_opt_check_nonempty(const struct lg_optval *v, char *err, size_t errlen);

/* Lua's name of the type of the value at `idx` ("number", "string",
 * "table"...), for error messages. */
const char *lg_opt_lua_typename(struct lua_State *L, int idx);

#endif
