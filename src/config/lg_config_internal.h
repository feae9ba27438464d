/*
 * lg_config_internal.h - what the config loader's files share: the load
 * context, the error list, and the walking helpers. Not for use outside
 * src/config/.
 *
 *   lg_config.c           load, walk the sections, settings, outputs, destroy
 *   lg_config_lua.c       the config's Lua state, table walking, Lua -> JSON
 *   lg_config_source.c    sources: the file source options, multiline
 *   lg_config_k8s.c       kubernetes source options, filters, select()
 *   lg_config_pipeline.c  pipelines: scripts, routes
 *   lg_config_diff.c      comparing sources and outputs (hot reload)
 *
 * Loads the configuration (DESIGN.md, "Configuration"): the file is Lua,
 * evaluated in a fresh state with a few safe libraries, and the table it
 * returns is walked with the C API into an lg_config_t.
 *
 * Every problem becomes one message "<key path>: <what is wrong>", and the
 * walk goes on after a problem, so a user sees all of them at once. Keys
 * are visited in sorted order so messages and output indexes do not
 * depend on Lua's hash order.
 */
#ifndef LG_CONFIG_INTERNAL_H
#define LG_CONFIG_INTERNAL_H

#include "config/lg_config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "config/lg_config_parse.h"
#include "core/lg_util.h"
#include "framing/lg_multiline.h"
#include "outputs/lg_output.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* Evaluating the config is bounded, so that `lugger check` of a config
 * with an endless loop fails instead of hanging: hook calls every
 * HOOK_EVERY instructions, at most HOOK_MAX times (10^8 instructions). */
#define HOOK_EVERY 1000000
#define HOOK_MAX 100
#define PARAMS_MAX_DEPTH 32
#define MAX_OUTPUTS 64 /* lg_rec_t.routes is a 64-bit mask */
/* Lua cuts chunk names to LUA_IDSIZE (60) characters, so a long path
 * would show as "...fig/lugger.lua:3:". Files are loaded under this short
 * name instead, and messages get the full path back. */
#define CHUNK_MARK "lugger-chunk"

typedef struct lg_conf_parse {
  lua_State *L;
  lg_config_t *c;
  lg_config_errors_t *errs;
  int hook_calls;
  int keep_lua; /* a source type kept a function in L: keep L */
} ctx_t;

/* Calls f for each entry of the named map at `tbl` (sources, pipelines,
 * outputs), in name order, with the entry's value on top of the stack. */
typedef void (*entry_fn)(ctx_t *x, const char *name, const char *path, size_t i,
                         void *ud);
/* lg_config.c */

/* lg_config_lua.c */
/* The load whose config is being evaluated, for the count hook. */
extern _Thread_local ctx_t *lg__config_hook_ctx;

__attribute__((format(printf, 2, 3))) void
lg__config_err_add(ctx_t *x, const char *fmt, ...);

/* Appends the message `fmt` formats (up to 1023 bytes) to the vector
 * *msgs of *n strings: the config's errors and its warnings. */
void lg__config_msg_vadd(char ***msgs, size_t *n, const char *fmt, va_list ap);

char *lg__config_xstrdup(ctx_t *x, const char *s);

void lg__config_count_hook(lua_State *L, lua_Debug *ar);
lua_State *lg__config_new_state(void);

void lg__config_add_lua_error(ctx_t *x, const char *prefix, const char *msg,
                              const char *path);
int lg__config_load_text(lua_State *L, const char *buf, size_t len);

char **lg__config_sorted_keys(ctx_t *x, int tbl, const char *path,
                              const char *what, size_t *n);
char *lg__config_resolve_path(ctx_t *x, const char *p);
size_t lg__config_parse_opts(ctx_t *x, int tbl, const char *path,
                             const lg_option_t *opts, lg_optval_t *vals,
                             const char *const *extra);

size_t lg__config_each_entry(ctx_t *x, int tbl, const char *section,
                             const char *what, size_t n_max, entry_fn f,
                             void *ud);

cJSON *lg__config_to_json(ctx_t *x, int idx, const char *path, int depth);

/* lg_config_source.c */
/* The source picks a pipeline per file (lg_conf_source_type_t.selects). */
static inline int lg__config_source_selects(const lg_conf_source_t *s) {
  return s->stype != NULL && s->stype->selects != NULL &&
         s->stype->selects(s->type_conf);
}

char **lg__config_copy_strv(ctx_t *x, const lg_optval_t *v, int resolve,
                            size_t *n);
const char *lg__config_entry_type(ctx_t *x, const char *path, int *tbl);

void lg__config_load_source(ctx_t *x, const char *name, const char *path,
                            size_t i, void *ud);

/* lg_config_k8s.c */

/* lg_config_pipeline.c */

void lg__config_load_pipeline(ctx_t *x, const char *name, const char *path,
                              size_t pi, void *ud);

#endif
