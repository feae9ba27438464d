/* The tail-reading source types' shared options (lg_tail_conf.h). */
#include "sources/tail/lg_tail_conf.h"

#include <string.h>

#include "core/lg_util.h"
#include "framing/lg_multiline.h"

void lg_tail_conf_clear(lg_tail_conf_t *c) {
  if (c == NULL)
    return;
  lg_util_strv_free(c->paths, c->npaths);
  lg_util_strv_free(c->exclude, c->nexclude);
  lg_ml_conf_unref(c->multiline);
  memset(c, 0, sizeof *c);
}

int lg_tail_conf_equal(const lg_tail_conf_t *a, const lg_tail_conf_t *b) {
  return lg_util_strv_eq(a->paths, a->npaths, b->paths, b->npaths) &&
         lg_util_strv_eq(a->exclude, a->nexclude, b->exclude, b->nexclude) &&
         a->read_from_head == b->read_from_head && a->format == b->format &&
         a->max_record_bytes == b->max_record_bytes &&
         a->flush_timeout_ms == b->flush_timeout_ms &&
         a->rate_limit == b->rate_limit &&
         a->rotated_bounded == b->rotated_bounded &&
         a->max_rotated_open == b->max_rotated_open &&
         lg_ml_conf_equal(a->multiline, b->multiline);
}
