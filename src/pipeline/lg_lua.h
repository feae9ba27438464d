/*
 * lg_lua.h - one LuaJIT state per worker thread, running the pipelines'
 * user scripts in the sandbox over batches.
 *
 * The Lua runtime (lua/lugger/) is compiled into the binary. User
 * scripts are loaded as text into an allow-list environment. A pipeline
 * runs over a batch in one protected call: the trusted driver loops over
 * the records in Lua, reading and writing them through lg_ffi_* (lg_ffi.h).
 */
#ifndef LG_LUA_H
#define LG_LUA_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/lg_batch.h"

/* The largest script file read, in bytes: a bigger one is an error
 * ("larger than 16 MiB") rather than a long load. */
#define LG_SCRIPT_MAX_BYTES (16u << 20)

typedef struct lg_lua lg_lua_t;

typedef struct lg_lua_script {
  const char *path;             /* file to load */
  const char *params_json;      /* argument to init(params), JSON object text;
                                   NULL means {} */
  const char *compat;           /* NULL, or "fluent-bit": run `call` as a Fluent
                                   Bit Lua filter (lua/lugger/fluentbit.lua) */
  const char *call;             /* compat: the filter function's name */
  const char *compat_opts_json; /* compat: Fluent Bit options as a JSON
                              object (time_as_table, type_int_key, ...,
                              tag); NULL means none */
  const char *src;              /* when not NULL, the script's text (src_len
                                   bytes), used instead of reading `path`, which
                                   then only names the script in errors: a
                                   reload reads each file once and gives every
                                   worker's state the same text */
  size_t src_len;
} lg_lua_script_t;

typedef struct lg_lua_opts {
  const char *const *output_names; /* route name -> output index (position) */
  size_t noutputs;
  size_t memory_limit; /* bytes per state, 0 = none */
  unsigned flags;      /* LG_LUA_* below; 0 for the collector */
} lg_lua_opts_t;

/* Route names not in output_names get the next free index instead of
 * failing the record (`lugger test`, which has no outputs); see
 * lg_lua_output_name. */
#define LG_LUA_DYNAMIC_ROUTES 0x1u
/* Do not log failed records (the caller reports them itself). */
#define LG_LUA_QUIET 0x2u
/* Scripts' print() writes to standard error, each line prefixed with
 * "[<script>:<line>] " (`lugger test`, whose standard output is the
 * records), not to lugger's log. */
#define LG_LUA_PRINT_STDERR 0x4u

/* Creates a state with the runtime loaded. NULL with `err` on failure. */
lg_lua_t *lg_lua_create(const lg_lua_opts_t *o, char *err, size_t errlen);

/* Loads pipeline `pipeline`'s scripts, in order, and runs each one's
 * init(params). Returns 0, or a negative value with `err` naming the
 * script and line. Calling it again for the same index replaces the
 * pipeline only when every new script loads (a failed reload keeps the
 * old scripts running); nscripts = 0 makes it a pass-through. */
int lg_lua_add_pipeline(lg_lua_t *L, int pipeline, const char *name,
                        const lg_lua_script_t *scripts, size_t nscripts,
                        char *err, size_t errlen);

/* Runs pipeline `pipeline` over `b` with one lua_pcall. On entry every
 * record's routes hold the pipeline's default outputs. On return records
 * are flagged DROPPED or FAILED (error text via lg_batch_fail, naming
 * script, line, file and offset), routes are replaced for ROUTED ones,
 * and fields are set. Returns 0, or a negative value with `err` when the
 * driver itself failed (-ENOMEM when the state ran out of memory, see
 * lg_lua_oom_at; -EIO otherwise; records may then be partly processed). A
 * pipeline with no scripts, or never added, returns 0 at once without touching
 * the batch. */
int lg_lua_run(lg_lua_t *L, int pipeline, lg_batch_t *b, char *err,
               size_t errlen);

/* lg_lua_run from script `script` (1-based; the pipeline's scripts before
 * it are skipped) and, in that script, from record `from` (0-based; the
 * later scripts run over the whole batch). How the worker resumes a batch
 * on a new state after lg_lua_oom_at. */
int lg_lua_run_from(lg_lua_t *L, int pipeline, lg_batch_t *b, int script,
                    uint32_t from, char *err, size_t errlen);

/* The error text the driver ends a run with when a script ran out of
 * memory (lua/lugger/driver.lua, M.OOM). */
#define LG_LUA_OOM_TAG "lugger: the Lua state ran out of memory"

/* After lg_lua_run(_from) returned -ENOMEM: the state ran out of memory
 * (settings.script_memory) in script `*script` (1-based; 0 = before any
 * script ran) at record `*rec` (-1 = before the script reached a record,
 * e.g. process_batch before records() yielded one). The driver has
 * usually failed that record (or, at -1, every remaining record of the
 * batch) with "<script>:<line>: not enough memory"; when the driver's own
 * bookkeeping ran out too, it has not, and the caller must. The memory is
 * usually still held (a cache that grew), so the state should be
 * replaced and the batch resumed after that record. Returns 1 when the
 * last run ended so, else 0 (and leaves the outputs alone). */
int lg_lua_oom_at(const lg_lua_t *L, int *script, int64_t *rec);

/* "<script>:<line>" of pipeline `pipeline`'s script `script` (1-based):
 * the chunk name and the line where its process (or process_batch, or
 * Fluent Bit) function is defined, into `buf` (`len` bytes, truncated).
 * Kept in C when the pipeline is added, so it is there when the state has
 * no memory left. Returns 0 or -ENOENT. */
int lg_lua_script_where(const lg_lua_t *L, int pipeline, int script, char *buf,
                        size_t len);

/* A 64-bit FNV-1a digest of what pipeline `pipeline` was last added
 * with: each script's path, text, params, compat, call and compat
 * options, in order. Two loads of the same scripts have the same digest
 * whether the text came from the file or from lg_lua_script_t.src; a
 * change to any script's text or options changes it (but for a 2^-64
 * collision). 0 for a pipeline never added. lg_stateless_warn
 * warns again only when it changes. */
uint64_t lg_lua_pipeline_digest(const lg_lua_t *L, int pipeline);

/* Where pipeline `pipeline`'s scripts keep state from one record to the
 * next, as far as their bytecode shows (lua/lugger/statecheck.lua): one
 * "<script>:<line>: <what>" per line, into `buf` (`len` bytes, truncated
 * at a line end), "" when none is found. For `lugger check` and
 * `lugger run` (lg_stateless_warn) on a `stateless = true`
 * pipeline. Returns the number of lines, or a negative
 * value when the runtime failed (`buf` then holds its message). */
int lg_lua_state_writes(lg_lua_t *L, int pipeline, char *buf, size_t len);

/* What `lugger check` and `lugger run` say after each line of
 * lg_lua_state_writes on a stateless pipeline, so both say the same. */
#define LG_LUA_STATE_WRITES_WHY                                                \
  "kept across records, but each worker has its own copy, so it sees only "    \
  "some of a file's records (keep no state, or remove stateless = true)"

/* The output names pipeline `pipeline`'s scripts route to as constants
 * (`return "errors"`, `rec:route("audit")`; lua/lugger/routecheck.lua)
 * that are not among the state's output names: one "<script>:<line>:
 * routes to '<name>', which is not an output (outputs: ...)" per line, as
 * lg_lua_state_writes returns them. For `lugger check`: each record that
 * takes such a route would fail. */
int lg_lua_unknown_routes(lg_lua_t *L, int pipeline, char *buf, size_t len);

/* lg_lua_run(_from) calls that returned 0 since the state was created. */
uint64_t lg_lua_runs(const lg_lua_t *L);

void lg_lua_destroy(lg_lua_t *L); /* NULL-safe */

/* Records failed by scripts in this state since it was created. */
uint64_t lg_lua_errors(const lg_lua_t *L);

/* Bytes of memory the state uses now. */
size_t lg_lua_memory(lg_lua_t *L);

/* The route name of output index `out`: output_names[out], or with
 * LG_LUA_DYNAMIC_ROUTES the name a script routed to that got index `out`.
 * NULL when none. The string lives as long as the state. */
const char *lg_lua_output_name(lg_lua_t *L, int out);

/* ---- watchdog (lg_watchdog.c) ----
 *
 * A script that loops is found by sampling: the driver stores the record
 * index it is at, and a watchdog thread that sees the same call and record
 * for longer than settings.script_timeout interrupts the state. */

/* Any thread: returns 1 while `L` is inside lg_lua_run (else 0) and sets
 * `seq` (calls started so far: a new call has a new value), `rec` (index
 * of the record being processed, -1 before the first) and, when not NULL,
 * `script` (1-based index of the pipeline's script running, 0 = none). */
int lg_lua_progress(lg_lua_t *L, uint64_t *seq, int64_t *rec, int *script);

/* Every timeout error starts with this text (the sandbox's pcall, xpcall
 * and coroutine.resume pass it on instead of catching it). */
#define LG_LUA_TIMEOUT_TAG "script_timeout:"

/* Any thread: if `L` is still in call `seq`, sets a count hook that raises
 * "<script>:<line>: script_timeout: <why>" in the next user-script
 * instruction the interpreter runs; the driver fails the record being
 * processed with it and goes on. JIT-compiled loops and long C functions
 * never see the hook. Returns 0, or -ESRCH when the call is over. */
int lg_lua_interrupt(lg_lua_t *L, uint64_t seq, const char *why);

/* Internal: registers the embedded modules of lua/lugger/ in
 * package.preload of `L` (used by lg_lua.c and `lugger lua`). */
struct lua_State;
void lg__lua_preload(struct lua_State *L);

#endif
