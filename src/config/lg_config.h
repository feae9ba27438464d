/*
 * lg_config.h - the configuration: one Lua file returning a table
 * (DESIGN.md, "Configuration"), checked against typed option tables.
 *
 * Every error names its key path ("outputs.kafka.topik: unknown key");
 * loading collects all errors instead of stopping at the first.
 */
#ifndef LG_CONFIG_H
#define LG_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/lg_option.h"

typedef struct lg_conf_script {
  char *path;             /* absolute (relative paths resolve against the config
                             file's directory) */
  char *params_json;      /* the entry's params table as JSON, "{}" if none */
  char *compat;           /* NULL, or "fluent-bit" (a Fluent Bit Lua filter) */
  char *call;             /* compat: the filter function to call */
  char *compat_opts_json; /* compat: the entry's Fluent Bit options
                             (time_as_table, type_int_key, type_array_key,
                             enable_flb_null, protected_mode, tag) as a
                             JSON object; NULL without compat */
} lg_conf_script_t;

/* A config load in progress, as a source type's parse sees it
 * (lg_config_parse.h). */
typedef struct lg_conf_parse lg_conf_parse_t;
struct lg_conf_source;

/* The config side of a source type: its option table and how its entry
 * is parsed, compared (for reloads) and freed. The source registry
 * (sources/lg_source.c) holds one per type and answers
 * lg_config_source_type; the config names no type. */
typedef struct lg_conf_source_type {
  const char *name;           /* the entry's `type` */
  const lg_option_t *options; /* its keys (type, default, doc) */
  /* Parses the entry at stack index `tbl` (key path `path`) into
   * s->type_conf, a conf struct of the type's own; reports problems with
   * lg_conf_parse_error. */
  void (*parse)(lg_conf_parse_t *p, struct lg_conf_source *s, const char *path,
                int tbl);
  int (*equal)(const void *a, const void *b); /* type_conf; NULL-safe */
  void (*free)(void *type_conf);              /* NULL-safe */
  /* The source picks a pipeline per file (may feed several). */
  int (*selects)(const void *type_conf);
} lg_conf_source_type_t;

/* The conf type of source type `name`, or NULL (defined by the source
 * registry, sources/lg_source.c). */
const lg_conf_source_type_t *lg_config_source_type(const char *name);

/* The `settings` keys (type, default, doc), terminated by {.name = NULL}:
 * for docs and their tests. */
const lg_option_t *lg_config_settings_options(void);

/* The known source types, ", "-separated, for messages. */
void lg_config_source_type_names(char *buf, size_t len);

typedef struct lg_conf_source {
  char *name;
  char *type;   /* the source type's name: "file", "kubernetes", ... */
  int pipeline; /* index of the pipeline that reads it, -1 if none */
  /* The type's options: parsed, compared and freed by its conf type
   * (lg_conf_source_type_t), e.g. a file source's lg_file_conf_t. */
  const struct lg_conf_source_type *stype;
  void *type_conf;
} lg_conf_source_t;

typedef struct lg_conf_pipeline {
  char *name;
  int *sources; /* indexes into config sources */
  size_t nsources;
  lg_conf_script_t *scripts;
  size_t nscripts;
  int *outputs; /* indexes into config outputs */
  size_t noutputs;
  int stateless; /* stateless = true: its scripts keep no state across
                    records, so batches of one file may be processed by
                    several workers at once (delivered in order) */
} lg_conf_pipeline_t;

typedef struct lg_conf_output {
  char *name;
  char *type;                      /* "stdout", "file", ... */
  const struct lg_output_type *vt; /* the registry entry for `type` */
  lg_optval_t *opts;               /* one per vt->options entry, in order */
} lg_conf_output_t;

typedef struct lg_config {
  char *path; /* absolute path of the config file */
  /* 64-bit FNV-1a (lg_fp_update from LG_FP_INIT) of the config file's
   * bytes as they were parsed: a reload compares it with the file's
   * bytes now, so a change made while they were being parsed or while
   * lugger started is not mistaken for what runs. */
  uint64_t text_hash;
  char *dir; /* its directory */
  struct {
    char *state_dir;        /* default /var/lib/lugger; env
                               LUGGER_STATE_DIR overrides; relative
                               to the config file's directory */
    uint64_t memory_budget; /* bytes; default 8 MiB x workers, >= 32 MiB */
    int workers; /* default: the CPUs the process may use (lg_cgroup.h) */
    /* When `workers` was not set: what decided it ("online CPUs", "CPU
     * affinity", "cgroup CPU quota"; static), else NULL. */
    const char *workers_by;
    char *http;                      /* listen address, NULL = off */
    uint64_t checkpoint_interval_ms; /* default 1000 */
    uint64_t rescan_interval_ms;     /* default 5000 */
    uint64_t close_inactive_ms;      /* default 300000; 0 = never */
    uint64_t shutdown_timeout_ms;    /* drain bound on SIGTERM, default 10000 */
    char *dead_letter;          /* output name; NULL = the built-in file output
                                   <state_dir>/dead-letter.jsonl */
    uint64_t script_timeout_ms; /* watchdog: no progress on a record for
                                   this long interrupts the script; 0 =
                                   off; default 1000 */
    uint64_t script_memory;     /* bytes per Lua state, default 64 MiB */
  } settings;
  lg_conf_source_t *sources;
  size_t nsources;
  lg_conf_pipeline_t *pipelines;
  size_t npipelines;
  lg_conf_output_t *outputs;
  size_t noutputs;
  /* The config's Lua state, kept when a kubernetes source has a select()
   * function (run on the loop thread, once per new file); else NULL. */
  struct lua_State *lua;
  /* What the config does that is allowed but probably not meant ("key.path:
   * message", e.g. a source no pipeline reads, which is left out): `lugger
   * check` prints them, run and reload log them. */
  char **warnings;
  size_t nwarnings;
} lg_config_t;

/* One problem found while loading: "key.path: message". */
typedef struct lg_config_errors {
  char **msgs;
  size_t n;
} lg_config_errors_t;

/* Loads and checks the config at `path`. On success returns 0 and sets
 * *out. Otherwise returns -EINVAL (or another negative errno) with every
 * problem in `errs` and *out NULL. Script files are not compiled here (see
 * lg_lua). */
int lg_config_load(const char *path, lg_config_t **out,
                   lg_config_errors_t *errs);

/* Flags for lg_config_load_ex. */
#define LG_CONFIG_PARTIAL 1u /* set *out even when there are errors */

/* As lg_config_load. With LG_CONFIG_PARTIAL, a config whose Lua evaluated
 * to a table is returned in *out even when it has errors (what could be
 * read of it), so `lugger check` can still compile the scripts it names;
 * the caller destroys it. */
int lg_config_load_ex(const char *path, unsigned flags, lg_config_t **out,
                      lg_config_errors_t *errs);

/* Compiles every pipeline script as Lua text (syntax only; nothing runs)
 * and appends one message per failure to `errs`, e.g.
 * "pipelines.web.scripts[1]: /etc/lugger/nginx.lua:3: unexpected symbol
 * near '='". Returns 0, or -EINVAL when a script failed. Scripts that
 * cannot be read are skipped (lg_config_load reported them). */
int lg_config_compile_scripts(const lg_config_t *c, lg_config_errors_t *errs);

void lg_config_destroy(lg_config_t *c); /* NULL-safe */
void lg_config_errors_free(lg_config_errors_t *e);

/* Builds one output's config outside a config file, e.g. the built-in
 * dead-letter output: type `type` with options from `kv`, pairs of option
 * name and value in config text syntax ({"path", "/x.jsonl", "fsync",
 * "always", NULL}); other options get their defaults. Paths are taken as
 * given. Returns NULL with `err` ("outputs.<name>.<key>: ...") on an
 * unknown type or key, a bad value or a missing required option. Free it
 * with lg_config_output_free. */
lg_conf_output_t *lg_config_output_new(const char *name, const char *type,
                                       const char *const *kv, char *err,
                                       size_t errlen);
void lg_config_output_free(lg_conf_output_t *o); /* NULL-safe */

/* Hot reload: 1 when two outputs have the same name, type and option
 * values (an unchanged output is kept, connections and all), else 0. */
int lg_config_output_equal(const lg_conf_output_t *a,
                           const lg_conf_output_t *b);

/* Hot reload: 1 when two sources have the same name and type and their
 * type's conf says they read the same input the same way (everything but
 * the pipeline that reads them), else 0. */
int lg_config_source_equal(const lg_conf_source_t *a,
                           const lg_conf_source_t *b);

/* Finds an output by name; -1 if none. */
int lg_config_output_index(const lg_config_t *c, const char *name);

#endif
