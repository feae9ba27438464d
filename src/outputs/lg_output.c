#include "outputs/lg_output.h"

#include <errno.h>
#include <string.h>

#include "core/lg_buf.h"

#include "config/lg_config.h"

/* The registry: `lugger check`, the docs and the config loader walk it. A
 * new output type adds its lg_output_type_t here. */
const lg_output_type_t *const lg_output_types[] = {
    &lg__output_stdout,
    &lg__output_file,
    &lg__output_kafka,
    &lg__output_forward,
    &lg__output_elasticsearch,
    &lg__output_loki,
    &lg__output_clickhouse,
    &lg__output_otlp,
    &lg__output_http,
    &lg__output_s3,
    &lg__output_cloudwatch_logs,
    NULL,
};

/* Types registered at run time (lg_output_register): test doubles. */
#define MAX_EXTRA 8
static const lg_output_type_t *extra_types[MAX_EXTRA];

int lg_output_register(const lg_output_type_t *t) {
  for (size_t i = 0; i < MAX_EXTRA; i++) {
    if (extra_types[i] == t)
      return 0;
    if (extra_types[i] == NULL) {
      extra_types[i] = t;
      return 0;
    }
  }
  return -ENOSPC;
}

const lg_output_type_t *lg_output_type_find(const char *name) {
  for (size_t i = 0; lg_output_types[i] != NULL; i++)
    if (strcmp(lg_output_types[i]->name, name) == 0)
      return lg_output_types[i];
  for (size_t i = 0; i < MAX_EXTRA && extra_types[i] != NULL; i++)
    if (strcmp(extra_types[i]->name, name) == 0)
      return extra_types[i];
  return NULL;
}

const lg_optval_t *lg_output_opt(const lg_output_t *o, const char *name) {
  int i = lg_opt_find(o->vt->options, name);
  if (i < 0 || o->conf == NULL || o->conf->opts == NULL)
    return NULL;
  return &o->conf->opts[i];
}

static const char *type_word(const lg_option_t *o) {
  switch (o->type) {
  case LG_OPT_STRING:
    return "string";
  case LG_OPT_INT:
    return "integer";
  case LG_OPT_BOOL:
    return "boolean";
  case LG_OPT_BYTES:
    return "size";
  case LG_OPT_DURATION:
    return "duration";
  case LG_OPT_ENUM:
    return "one of";
  case LG_OPT_STRMAP:
    return "map";
  case LG_OPT_STRLIST:
    return "string or list";
  case LG_OPT_PATH:
    return "path";
  }
  return "?";
}

/* Appends `s` for a Markdown table cell: "|" escaped. */
static int cell(lg_buf_t *b, const char *s) {
  for (; s != NULL && *s; s++) {
    int rc = *s == '|' ? lg_buf_append(b, "\\|", 2) : lg_buf_putc(b, *s);
    if (rc != 0)
      return rc;
  }
  return 0;
}

int lg_output_options_markdown(lg_buf_t *out) {
  int rc = 0;
  for (size_t t = 0; rc == 0 && lg_output_types[t] != NULL; t++) {
    const lg_output_type_t *vt = lg_output_types[t];
    rc = lg_buf_appendf(out,
                        "%s#### `type = \"%s\"`\n\n%s\n\n"
                        "| option | type | default | meaning |\n"
                        "|---|---|---|---|\n",
                        t > 0 ? "\n" : "", vt->name, vt->doc ? vt->doc : "");
    for (size_t i = 0; rc == 0 && vt->options[i].name != NULL; i++) {
      const lg_option_t *o = &vt->options[i];
      rc = lg_buf_appendf(out, "| `%s` | %s", o->name, type_word(o));
      if (rc == 0 && o->type == LG_OPT_ENUM) {
        rc = lg_buf_append(out, " `", 2);
        rc = rc ? rc : cell(out, o->choices);
        rc = rc ? rc : lg_buf_putc(out, '`');
      }
      if (rc == 0)
        rc = o->required      ? lg_buf_appendf(out, " | required | ")
             : o->def != NULL ? lg_buf_appendf(out, " | `%s` | ", o->def)
                              : lg_buf_appendf(out, " | | ");
      rc = rc ? rc : cell(out, o->doc);
      rc = rc ? rc : lg_buf_append(out, " |\n", 3);
    }
  }
  return rc;
}
