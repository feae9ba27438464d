/*
 * lg_source_tail.h - the tailer as a source group (lg_source.h): one
 * lg_tail and its checkpoint store serve every source type that reads
 * files (file, kubernetes).
 */
#ifndef LG_SOURCE_TAIL_H
#define LG_SOURCE_TAIL_H

#include "sources/lg_source.h"
#include "sources/tail/lg_checkpoint.h"
#include "sources/tail/lg_tail.h"
#include "sources/tail/lg_tail_conf.h"

typedef struct lg_tail_group {
  lg_sources_t *set;
  const lg_source_host_t *host;
  lg_checkpoint_t *cp;
  lg_tail_t *tail; /* NULL once closed */
} lg_tail_group_t;

extern const lg_source_group_type_t lg_tail_group;

/* The tail options of source `s`: its name, id and pipeline, and the
 * paths, framing and limits of `tc` (its type's conf). The caller sets
 * the on_file hook, if any. */
lg_tail_source_opts_t lg_tail_group_opts(const lg_source_t *s,
                                         const lg_tail_conf_t *tc);

#endif
