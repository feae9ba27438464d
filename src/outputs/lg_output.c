#include "outputs/lg_output.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The public struct plus what only this file tracks. */
typedef struct output_priv {
  lg_output_t pub;
  int closing;
} output_priv_t;

lg_output_t *lg_output_create(uv_loop_t *loop,
                              const struct lg_conf_output *conf, int index,
                              lg_output_ack_cb ack, void *ack_ud, char *err,
                              size_t errlen) {
  const lg_output_type_t *vt = conf->vt;
  if (vt == NULL)
    vt = lg_output_type_find(conf->type);
  if (vt == NULL) {
    snprintf(err, errlen, "outputs.%s: unknown output type '%s'", conf->name,
             conf->type);
    return NULL;
  }
  output_priv_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", conf->name);
    return NULL;
  }
  lg_output_t *o = &p->pub;
  o->vt = vt;
  o->conf = conf;
  o->index = index;
  o->loop = loop;
  o->ack = ack;
  o->ack_ud = ack_ud;
  int rc = vt->init(o, err, errlen);
  if (rc < 0) {
    free(p);
    return NULL;
  }
  return o;
}

int lg_output_submit_n(lg_output_t *o, const char *data, size_t len,
                       uint32_t nrecs, void *ref) {
  output_priv_t *p = (output_priv_t *)o;
  if (p->closing)
    return -ESHUTDOWN;
  return o->vt->submit(o, data, len, nrecs, ref);
}

int lg_output_submit(lg_output_t *o, const char *data, size_t len, void *ref) {
  uint32_t n = 0;
  for (const char *p = data, *end = data + len;
       (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
    n++;
  return lg_output_submit_n(o, data, len, n, ref);
}

void lg_output_reopen(lg_output_t *o) {
  output_priv_t *p = (output_priv_t *)o;
  if (!p->closing && o->vt->reopen != NULL)
    o->vt->reopen(o);
}

void lg_output_close(lg_output_t *o, void (*cb)(void *ud), void *ud) {
  output_priv_t *p = (output_priv_t *)o;
  if (p->closing)
    return;
  p->closing = 1;
  o->closed_cb = cb;
  o->closed_ud = ud;
  o->vt->exit(o);
}

void lg_output_abandon(lg_output_t *o) {
  output_priv_t *p = (output_priv_t *)o;
  if (p->closing && o->vt->abandon != NULL)
    o->vt->abandon(o);
}

void lg__output_closed(lg_output_t *o) {
  if (o->closed_cb != NULL)
    o->closed_cb(o->closed_ud);
  free((output_priv_t *)o);
}

const lg_optval_t *lg_output_opt(const lg_output_t *o, const char *name) {
  int i = lg_opt_find(o->vt->options, name);
  if (i < 0 || o->conf == NULL || o->conf->opts == NULL)
    return NULL;
  return &o->conf->opts[i];
}
