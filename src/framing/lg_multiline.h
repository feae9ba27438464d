/*
 * lg_multiline.h - multiline grouping: consecutive records of one stream of
 * one file joined into one record (stack traces).
 *
 * It runs after framing (so CRI and Docker partial lines are already
 * joined) and before records enter a batch. Rules, per stream (stdout and
 * stderr group separately; line-format files have one stream):
 *
 *   - `start` (a regex, optional): lines that may begin a group. Unset:
 *     any line may.
 *   - `continue` (a regex, optional): lines that extend the open group.
 *     Unset: every line that does not match `start` extends it.
 *   - A line that extends nothing ends the open group (emitted), then
 *     opens a new group if it may begin one, else is emitted alone.
 *   At least one of the two is set.
 *
 * A group becomes one record: bodies joined with "\n" (empty last lines
 * dropped), `time`, offset and stream of its first line, end_offset of its
 * last. A group emitted because of `max_lines` or `max_bytes`, and the
 * group that carries on after it, are flagged LG_REC_TRUNCATED. Records
 * the framer flagged truncated or unparsable end the open group of their
 * stream and pass through unchanged. A group idle for `timeout` is emitted
 * by lg_ml_flush_idle.
 *
 * Presets (`"java"`, `"python"`, `"go"`) are rule sets for the stack
 * traces of those runtimes; see lg_ml_conf_create.
 *
 * Checkpoints: lg_ml_safe_offset is the first line of the oldest open
 * group; the file must not be checkpointed past it, so after a crash the
 * whole group is read again.
 */
#ifndef LG_MULTILINE_H
#define LG_MULTILINE_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/lg_batch.h"

struct lua_State;

/* What a user wrote. Strings are not kept (the conf copies them). */
typedef struct lg_ml_spec {
  const char *preset;  /* "java" | "python" | "go", or NULL */
  const char *start;   /* PCRE2 pattern or NULL */
  const char *cont;    /* PCRE2 pattern or NULL ("continue") */
  uint32_t max_lines;  /* 0 = 500 */
  uint64_t max_bytes;  /* 0 = the source's max_record_bytes */
  uint64_t timeout_ms; /* 0 = 1000 */
} lg_ml_spec_t;

/* Compiled, immutable rules, shared by every file of a source (and across
 * a reload); reference-counted. Used on one thread at a time. */
typedef struct lg_ml_conf lg_ml_conf_t;

/* Compiles `spec` (regexes with PCRE2, JIT-compiled when the JIT is
 * available). `path` names the option in errors ("sources.app.multiline").
 * Returns NULL with a message in `err` ("sources.app.multiline.start:
 * invalid regex at offset 3: missing closing parenthesis") on a bad spec,
 * or "out of memory". */
lg_ml_conf_t *lg_ml_conf_create(const lg_ml_spec_t *spec, const char *path,
                                char *err, size_t errlen);

/* Reads the config value at stack index `idx` of `L` (a preset name or a
 * table { start, continue, max_lines, max_bytes, timeout }) and compiles
 * it. Used by the file and kubernetes sources. Returns 0 and *out (NULL
 * when the value is nil), or -EINVAL with every problem in `err` (one per
 * line, each naming its key path under `path`). */
int lg_ml_conf_parse_lua(struct lua_State *L, int idx, const char *path,
                         lg_ml_conf_t **out, char *err, size_t errlen);

const lg_ml_conf_t *lg_ml_conf_ref(const lg_ml_conf_t *c);
void lg_ml_conf_unref(const lg_ml_conf_t *c); /* NULL-safe */

/* 1 if both are NULL or were made from the same options. */
int lg_ml_conf_equal(const lg_ml_conf_t *a, const lg_ml_conf_t *b);

/* The options of a `multiline` table (start, continue, max_lines,
 * max_bytes, timeout), ended by an entry whose name is NULL: for the
 * README check of their defaults (tests/unit/config/test_config.c). */
const struct lg_option *lg_ml_options(void);

/* The group idle timeout, milliseconds. */
uint64_t lg_ml_conf_timeout_ms(const lg_ml_conf_t *c);

/* The grouping state of one file. */
typedef struct lg_ml lg_ml_t;

/* Creates a grouper; `default_max_bytes` applies when the conf has no
 * max_bytes. Returns NULL on allocation failure. */
lg_ml_t *lg_ml_create(const lg_ml_conf_t *c, size_t default_max_bytes);
void lg_ml_destroy(lg_ml_t *m); /* NULL-safe */

/* Groups the records of `in` (framed, in file order; `in` is not changed)
 * into `out`: completed groups and records passing through are appended,
 * open groups are held. `now_ms` is a monotonic clock for the timeout.
 * Returns 0 or -ENOMEM / -E2BIG from the batch (then records may be lost
 * from `out` but the safe offset still holds them back, so reading again
 * from lg_ml_safe_offset gives duplicates, not losses). */
int lg_ml_process(lg_ml_t *m, const lg_batch_t *in, lg_batch_t *out,
                  uint64_t now_ms);

/* Emits every open group (rotation, deletion, shutdown), oldest first.
 * Returns 0 or a negative errno from the batch. */
int lg_ml_flush(lg_ml_t *m, lg_batch_t *out);

/* Emits the open groups that got no line for the timeout. Returns 0 or a
 * negative errno. */
int lg_ml_flush_idle(lg_ml_t *m, lg_batch_t *out, uint64_t now_ms);

/* Forgets open groups (the file was truncated and no copy holds them). */
void lg_ml_reset(lg_ml_t *m);

/* File offset of the first line of the oldest open group, UINT64_MAX when
 * none is open. */
uint64_t lg_ml_safe_offset(const lg_ml_t *m);

/* Lines held in open groups (0 when nothing waits). */
size_t lg_ml_pending(const lg_ml_t *m);

/* Bytes of the buffers of the open groups (their capacity, as allocated;
 * 0 when none is open), for the memory budget. */
size_t lg_ml_held_mem(const lg_ml_t *m);

#endif
