/*
 * The `mock` output type: a test double the conformance suite runs like
 * every other output type, and the smallest example of one: a conf
 * struct, an option table, init/send/close, and one line to register it
 * (lg_output_register here; a real type adds its line to the registry in
 * src/outputs/lg_output.c).
 *
 * It answers each request on the next loop turn (as a network output
 * would): while `lg_mock_down` is set every record is "retry"; a record
 * whose JSON holds the option `reject` text is "rejected" with the reason
 * "mock: record matches <reject>"; the others are delivered and appended,
 * one line each, to lg_mock_delivered.
 */
#include "lg_out_mock.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outputs/lg_output.h"

lg_buf_t lg_mock_delivered = LG_BUF_INIT;
int lg_mock_down;

typedef struct mock_conf {
  lg_out_limits_t limits;
  char *reject;
} mock_conf_t;

static const lg_option_t mock_options[] = {
    {.name = "reject",
     .type = LG_OPT_STRING,
     .doc = "Records whose JSON contains this text are rejected.",
     .offset = offsetof(mock_conf_t, reject)},
    LG_OUT_DELIVERY_OPTIONS(mock_conf_t, "50", "1MiB", "0", "2", "0"),
    {.name = NULL},
};

typedef struct mock {
  lg_output_t *o;
  const mock_conf_t *c;
  uv_timer_t timer;
  lg_out_req_t *queue[64]; /* answered on the next turn */
  int n;
} mock_t;

static void answer(uv_timer_t *t) {
  mock_t *m = t->data;
  int n = m->n;
  lg_out_req_t *q[64];
  memcpy(q, m->queue, (size_t)n * sizeof *q);
  m->n = 0;
  for (int i = 0; i < n; i++) {
    lg_out_req_t *r = q[i];
    if (lg_mock_down) {
      lg_out_req_done(r, LG_OUT_RETRY, "mock: down");
      continue;
    }
    const lg_out_rec_t *recs = lg_out_req_recs(r);
    if (recs == NULL) {
      lg_out_req_done(r, LG_OUT_RETRY, "mock: out of memory");
      continue;
    }
    for (uint32_t j = 0; j < r->n; j++) {
      const char *rej = m->c->reject;
      if (rej != NULL && memmem(recs[j].data, recs[j].len, rej, strlen(rej))) {
        char why[256];
        snprintf(why, sizeof why, "mock: record matches %s", rej);
        lg_out_req_set(r, j, LG_OUT_REJECTED, why);
        continue;
      }
      lg_buf_append(&lg_mock_delivered, recs[j].data, recs[j].len);
    }
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
  }
}

static int mock_init(lg_output_t *o, const void *conf, char *err,
                     size_t errlen) {
  mock_t *m = calloc(1, sizeof *m);
  if (m == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", o->name);
    return -1;
  }
  m->o = o;
  m->c = conf;
  uv_timer_init(o->loop, &m->timer);
  m->timer.data = m;
  o->impl = m;
  return 0;
}

static void mock_send(lg_output_t *o, lg_out_req_t *r) {
  mock_t *m = o->impl;
  m->queue[m->n++] = r; /* max_in_flight bounds n */
  uv_timer_start(&m->timer, answer, 1, 0);
}

static void closed(uv_handle_t *h) {
  mock_t *m = h->data;
  lg_output_t *o = m->o;
  free(m);
  lg_output_closed(o);
}

static void mock_close(lg_output_t *o) {
  mock_t *m = o->impl;
  uv_close((uv_handle_t *)&m->timer, closed);
}

const lg_output_type_t lg_out_mock = {
    .name = "mock",
    .doc = "A test double for the conformance suite.",
    .options = mock_options,
    .conf_size = sizeof(mock_conf_t),
    .rejects = 1,
    .init = mock_init,
    .send = mock_send,
    .close = mock_close,
};
