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
 * pipelines of `c` only. Called once per load, not per worker: at start,
 * by worker 0 (a reload warns with lg_stateless_check on worker 0's new
 * state and records with lg_stateless_warned_commit once it switched).
 * Runs Lua in `lua`: only on the thread that owns it. */
void lg_stateless_warn(lg_stateless_warned_t *warned, const lg_config_t *c,
                       struct lg_lua *lua);

/* What one load warned about: its stateless pipelines' names and digests,
 * to be recorded in `warned` only if that load takes effect. */
typedef struct lg_stateless_seen lg_stateless_seen_t;

/* lg_stateless_warn in two steps, for a load that can still be rejected
 * (a reload, rejected when an output it adds cannot be created): logs the
 * same warnings against `warned` (may be NULL) but records nothing, and
 * returns what lg_stateless_warned_commit records once the load has taken
 * effect (lg_stateless_seen_free when it is rejected). NULL when `lua` is
 * NULL or out of memory (the commit then keeps the old record). Runs Lua
 * in `lua`: only on the thread that owns it. */
lg_stateless_seen_t *lg_stateless_check(lg_stateless_warned_t *warned,
                                        const lg_config_t *c,
                                        struct lg_lua *lua);

/* Makes `seen` (taken over; NULL: nothing) what `warned` holds: the
 * pipelines warned about now are those of the load that took effect, so
 * a rejected load's scripts are warned about again at the next load. */
void lg_stateless_warned_commit(lg_stateless_warned_t *warned,
                                lg_stateless_seen_t *seen);
void lg_stateless_seen_free(lg_stateless_seen_t *seen); /* NULL-safe */

#endif
