/*
 * lg_tail_conf.h - the options every source type that reads files through
 * the tailer shares (file, kubernetes). Each such type parses them into
 * its own conf (lg_conf_source_t.type_conf) with the rest of its options,
 * and lg_tail_group_opts (lg_source_tail.h) turns them into tail options.
 */
#ifndef LG_TAIL_CONF_H
#define LG_TAIL_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "framing/lg_framing.h"

struct lg_ml_conf;

typedef struct lg_tail_conf {
  char **paths; /* globs, absolute (file: relative ones resolved against
                   the config file's directory; kubernetes: none, its
                   patterns come from the pod log layout) */
  size_t npaths;
  char **exclude; /* globs, as written */
  size_t nexclude;
  int read_from_head;           /* read_from = "head" (1) | "tail" (0) */
  lg_format_t format;           /* framing */
  uint64_t max_record_bytes;    /* longer records are cut */
  uint64_t flush_timeout_ms;    /* a last line without "\n" waits this long */
  uint64_t rate_limit;          /* bytes/s read per file; 0 = none */
  int64_t max_rotated_open;     /* rotated files kept open per container, when
                                   rotated_bounded */
  int rotated_bounded;          /* max_rotated_open is set */
  struct lg_ml_conf *multiline; /* multiline grouping (lg_multiline.h) or
                                   NULL; owned */
} lg_tail_conf_t;

/* Frees what `c` holds (not `c` itself) and zeroes it. NULL-safe. */
void lg_tail_conf_clear(lg_tail_conf_t *c);

/* Hot reload: 1 when a source with `a` reads the same files the same way
 * as one with `b`, else 0. A field added to lg_tail_conf_t must be
 * compared here. */
int lg_tail_conf_equal(const lg_tail_conf_t *a, const lg_tail_conf_t *b);

#endif
