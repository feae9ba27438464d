/*
 * lg_config_parse.h - what a source type's parse (lg_conf_source_type_t)
 * may use of the config load in progress: the config's Lua state, the
 * option-table parser, error reporting with the key path, and copies that
 * report running out of memory. Every function reports its problems as
 * "<key path>: <what is wrong>" in the load's error list and goes on, so
 * a user sees every problem at once.
 */
#ifndef LG_CONFIG_PARSE_H
#define LG_CONFIG_PARSE_H

#include <stddef.h>

#include <lua.h>

#include "config/lg_config.h"
#include "core/lg_option.h"

/* The config's Lua state; the entry's table is at the index parse got. */
lua_State *lg_conf_parse_lua(lg_conf_parse_t *p);

/* Keeps the config's Lua state after the load (a function of the config,
 * e.g. select(), is referenced from the registry and runs later). */
void lg_conf_parse_keep_lua(lg_conf_parse_t *p);

/* Adds an error message (printf format). */
__attribute__((format(printf, 2, 3))) void
lg_conf_parse_error(lg_conf_parse_t *p, const char *fmt, ...);

/* Parses the table at `tbl` (key path `path`) with option table `opts`
 * into vals (lg_optval_free each after use); keys neither in opts nor in
 * the NULL-terminated `extra` are errors. Returns the number of errors. */
size_t lg_conf_parse_options(lg_conf_parse_t *p, int tbl, const char *path,
                             const lg_option_t *opts, lg_optval_t *vals,
                             const char *const *extra);

struct lg_ml_conf;

/* Parses the entry's `multiline` key (lg_multiline.h) into *out (NULL
 * when the key is not there; the caller owns it: lg_ml_conf_unref). */
void lg_conf_parse_multiline(lg_conf_parse_t *p, const char *path, int tbl,
                             struct lg_ml_conf **out);

/* A copy of s; NULL (and an error) when out of memory. */
char *lg_conf_parse_strdup(lg_conf_parse_t *p, const char *s);

/* `path` made absolute against the config file's directory (a copy). */
char *lg_conf_parse_resolve(lg_conf_parse_t *p, const char *path);

/* A copy of a string-list value (its count in *n); with `resolve`, paths
 * are made absolute against the config file's directory. */
char **lg_conf_parse_strv(lg_conf_parse_t *p, const lg_optval_t *v, int resolve,
                          size_t *n);

/* The keys of the table at `tbl`, sorted (free with lg_util_strv_free);
 * non-string keys are errors "<path><key>: <what>". */
char **lg_conf_parse_keys(lg_conf_parse_t *p, int tbl, const char *path,
                          const char *what, size_t *n);

#endif
