#include "pipeline/lg_payload.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_json.h"
#include "pipeline/lg_record_json.h"
#include "pipeline/lg_batch.h"

int lg_payload_encode_json(const void *conf, const lg_batch_t *b, uint32_t i,
                           const char *error, lg_payload_t *out) {
  (void)conf;
  return lg_json_encode_record_err(&out->data, b, i, error,
                                   error != NULL ? strlen(error) : 0);
}

static int push(lg_payload_t *p, uint32_t index, size_t off, size_t moff) {
  if (p->data.len > UINT32_MAX || p->meta.len > UINT32_MAX)
    return -E2BIG;
  if (p->n == p->cap) {
    uint32_t cap = p->cap ? p->cap * 2 : 64;
    lg_payload_rec_t *r = realloc(p->recs, cap * sizeof *r);
    if (r == NULL)
      return -ENOMEM;
    p->recs = r;
    p->cap = cap;
  }
  p->recs[p->n++] = (lg_payload_rec_t){
      .index = index,
      .off = (uint32_t)off,
      .len = (uint32_t)(p->data.len - off),
      .meta_off = (uint32_t)moff,
      .meta_len = (uint32_t)(p->meta.len - moff),
  };
  return 0;
}

int lg_payload_add(lg_payload_t *p, const lg_encoder_t *enc,
                   const lg_batch_t *b, uint32_t i, const char *error) {
  size_t off = p->data.len, moff = p->meta.len;
  p->batch = b;
  int rc = enc != NULL && enc->fn != NULL
               ? enc->fn(enc->conf, b, i, error, p)
               : lg_payload_encode_json(NULL, b, i, error, p);
  if (rc == 0)
    rc = push(p, i, off, moff);
  if (rc != 0) {
    p->data.len = off;
    p->meta.len = moff;
  }
  return rc;
}

int lg_payload_add_text(lg_payload_t *p, const char *text, size_t len) {
  size_t off = p->data.len;
  int rc = lg_buf_append(&p->data, text, len);
  if (rc == 0)
    rc = push(p, p->n, off, p->meta.len);
  if (rc != 0)
    p->data.len = off;
  return rc;
}

int lg_payload_add_lines(lg_payload_t *p, const char *text, size_t len) {
  for (const char *s = text, *end = text + len; s < end;) {
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    size_t n = nl != NULL ? (size_t)(nl - s) + 1 : (size_t)(end - s);
    int rc = lg_payload_add_text(p, s, n);
    if (rc != 0)
      return rc;
    s += n;
  }
  return 0;
}

size_t lg_payload_mem(const lg_payload_t *p) {
  return p->data.cap + p->meta.cap + (size_t)p->cap * sizeof *p->recs;
}

void lg_payload_reset(lg_payload_t *p) {
  p->batch = NULL;
  p->data.len = 0;
  p->meta.len = 0;
  p->n = 0;
}

void lg_payload_free(lg_payload_t *p) {
  if (p == NULL)
    return;
  lg_buf_free(&p->data);
  lg_buf_free(&p->meta);
  free(p->recs);
  memset(p, 0, sizeof *p);
}
