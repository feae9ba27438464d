/* Comparing sources and outputs of two configs: what a reload keeps. */
#include "config/lg_config_internal.h"

static int optval_eq(const lg_optval_t *a, const lg_optval_t *b) {
  return lg_util_str_eq(a->s, b->s) && a->i == b->i &&
         lg_util_strv_eq(a->keys, a->keys ? a->n : 0, b->keys,
                         b->keys ? b->n : 0) &&
         lg_util_strv_eq(a->vals, a->n, b->vals, b->n);
}

int lg_config_output_equal(const lg_conf_output_t *a,
                           const lg_conf_output_t *b) {
  if (!lg_util_str_eq(a->name, b->name) || !lg_util_str_eq(a->type, b->type) ||
      a->vt != b->vt)
    return 0;
  if (a->vt == NULL)
    return 1;
  for (size_t i = 0; a->vt->options[i].name != NULL; i++)
    if (!optval_eq(&a->opts[i], &b->opts[i]))
      return 0;
  return 1;
}

/* The type-specific options: the same type, and equal by its rules. */
static int type_conf_eq(const lg_conf_source_t *a, const lg_conf_source_t *b) {
  if (a->stype != b->stype)
    return 0;
  if (a->stype == NULL || a->stype->equal == NULL)
    return a->type_conf == NULL && b->type_conf == NULL;
  return a->stype->equal(a->type_conf, b->type_conf);
}

int lg_config_source_equal(const lg_conf_source_t *a,
                           const lg_conf_source_t *b) {
  return lg_util_str_eq(a->name, b->name) && lg_util_str_eq(a->type, b->type) &&
         type_conf_eq(a, b);
}
