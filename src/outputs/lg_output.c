#include "outputs/lg_output.h"

#include <string.h>

#include "config/lg_config.h"

/* The registry: `lugger check`, the docs and the config loader walk it. A
 * new output type adds its lg_output_type_t here. */
const lg_output_type_t *const lg_output_types[] = {
    &lg__output_stdout,
    &lg__output_file,
    &lg__output_kafka,
    NULL,
};

const lg_output_type_t *lg_output_type_find(const char *name) {
  for (size_t i = 0; lg_output_types[i] != NULL; i++)
    if (strcmp(lg_output_types[i]->name, name) == 0)
      return lg_output_types[i];
  return NULL;
}

const lg_optval_t *lg_output_opt(const lg_output_t *o, const char *name) {
  int i = lg_opt_find(o->vt->options, name);
  if (i < 0 || o->conf == NULL || o->conf->opts == NULL)
    return NULL;
  return &o->conf->opts[i];
}
