/*
 * lg_option.h - typed option tables. Each output type declares its
 * options once (name, type, default, description); that one table drives
 * config parsing, `lugger check` and the docs.
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
} lg_opt_type_t;

typedef struct lg_option {
  const char *name;
  lg_opt_type_t type;
  const char *def;     /* default in config syntax; NULL = no default */
  int required;
  const char *choices; /* LG_OPT_ENUM: "none|gzip|lz4" */
  const char *doc;     /* one sentence for `lugger check` and the README */
} lg_option_t;

typedef struct lg_optval {
  int set;       /* given in the config (else the default was used) */
  char *s;       /* STRING, ENUM */
  int64_t i;     /* INT, BOOL, BYTES (bytes), DURATION (ms) */
  char **keys;   /* STRMAP */
  char **vals;
  size_t n;
} lg_optval_t;

#endif
