/*
 * lg_stateless_warn.h - `lugger run`'s warning about scripts of
 * `stateless = true` pipelines that keep state across records, logged
 * when a pipeline's scripts or its flag change, not at every reload.
 */
#ifndef LG_STATELESS_WARN_H
#define LG_STATELESS_WARN_H

#include "config/lg_config.h"

struct lg_lua;

/* What has been warned about: per stateless pipeline name, the digest of
 * its scripts (lg_lua_pipeline_digest) at the last warning. Thread-safe:
 * the start (a worker thread) and reloads (the thread pool) share it. */
typedef struct lg_stateless_warned lg_stateless_warned_t;

/* NULL when out of memory (lg_stateless_warn then warns every time). */
lg_stateless_warned_t *lg_stateless_warned_create(void);
void lg_stateless_warned_destroy(lg_stateless_warned_t *w); /* NULL-safe */

/* Logs a warning (component "config") for each write to state across
 * records found in the scripts of each `stateless = true` pipeline of
 * `c` loaded in `lua` (lg_lua_state_writes; the text `lugger check`
 * prints, after the config's path). Such a pipeline's batches run on
 * every worker at once, so the state sees only some records. A warning,
 * not an error: the flag is the user's declaration and the bytecode scan
 * can see state where there is none (a cache).
 *
 * A pipeline is looked at only when `warned` (may be NULL: always) has no
 * entry for its name with the same digest: at start, when its scripts
 * (text, path, params, compat options) changed, or when it became
 * stateless; so a reload of an unchanged pipeline (SIGHUP, a change to
 * another pipeline) repeats nothing. `warned` then holds the stateless
 * pipelines of `c` only. Called once per load (at start by worker 0, at a
 * reload on worker 0's new state), not per worker. Runs Lua in `lua`:
 * only on the thread that owns it. */
void lg_stateless_warn(lg_stateless_warned_t *warned, const lg_config_t *c,
                       struct lg_lua *lua);

#endif
