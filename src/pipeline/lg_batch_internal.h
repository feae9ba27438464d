/*
 * lg_batch_internal.h - what the batch's two files share, and no one else
 * (everyone else sees lg_batch.h):
 *   lg_batch.c         the records and the arena: create, reset, fit,
 *                      records added and inserted, record ids, clones
 *   lg_batch_fields.c  the fields of records and their interned keys:
 *                      setters, lookups, tombstones, shadowing
 */
#ifndef LG_BATCH_INTERNAL_H
#define LG_BATCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/lg_batch.h"

/* Copies `len` bytes at `p` to the end of the arena (lg_batch.c); returns
 * their offset, -E2BIG (arena over 4 GiB) or -ENOMEM. Used for every
 * record body and every string field. A plain call on purpose: when
 * both files were one, the compiler kept it out of line too, so the
 * record path's code is what it was before the split. */
int64_t lg__batch_arena_put(lg_batch_t *b, const char *p, size_t len);

/* Recomputes what each interned key shadows (lg_key_t.shadow) after the
 * batch's metadata changed: a key shadows a metadata key only while the
 * batch has that metadata (lg_batch_fields.c). */
void lg__batch_keys_reshadow(lg_batch_t *b);

#endif
