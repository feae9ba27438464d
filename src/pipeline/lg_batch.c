/*
 * lg_batch.c - a batch's records and its arena: create, reset, fit,
 * records added and inserted, record ids, clones. The fields of records
 * and their interned keys are lg_batch_fields.c's; see lg_batch.h.
 */
#include "pipeline/lg_batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_util.h"
#include "pipeline/lg_batch_internal.h"
#include "pipeline/lg_payload.h"

/* Key epochs: unique across every batch of the process. */
static uint64_t next_key_epoch(void) {
  static uint64_t counter;
  return __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
}

lg_batch_t *lg_batch_create(size_t data_hint) {
  lg_batch_t *b = calloc(1, sizeof *b);
  if (b == NULL)
    return NULL;
  b->data_cap = data_hint ? data_hint : 4096;
  b->data = malloc(b->data_cap);
  b->recs_cap = LG_BATCH_RECS_INIT;
  b->recs = malloc(b->recs_cap * sizeof *b->recs);
  if (b->data == NULL || b->recs == NULL) {
    lg_batch_destroy(b);
    return NULL;
  }
  b->pipeline = -1;
  b->key_epoch = next_key_epoch();
  return b;
}

static void free_out(lg_batch_t *b) {
  for (uint32_t k = 0; k < b->nout; k++)
    lg_payload_free(&b->out[k]);
  free(b->out);
  b->out = NULL;
  b->nout = 0;
}

void lg_batch_destroy(lg_batch_t *b) {
  if (b == NULL)
    return;
  lg_meta_unref(b->meta);
  free_out(b);
  free(b->data);
  free(b->recs);
  free(b->fields);
  free(b->keys);
  free(b->key_slots);
  lg_buf_free(&b->errs);
  free(b);
}

void lg_batch_reset(lg_batch_t *b) {
  b->n = 0;
  b->gen++;
  b->key_epoch = next_key_epoch();
  b->data_len = 0;
  lg_buf_free(&b->errs); /* rare: not kept in the pool */
  b->nfields = 0;
  if (b->fields_cap > 4096) {
    /* A batch that kept a script's fields until its outputs were done
     * (lg_worker.c, fields_needed_after) should not hold them in the pool. */
    free(b->fields);
    b->fields = NULL;
    b->fields_cap = 0;
  }
  b->nkeys = 0;
  if (b->key_slots_cap > 4096) {
    /* One batch with many distinct keys should not make every later reset
     * of this (pooled) batch clear a big table. */
    free(b->key_slots);
    b->key_slots = NULL;
    b->key_slots_cap = 0;
  } else if (b->key_slots != NULL) {
    memset(b->key_slots, 0, b->key_slots_cap * sizeof *b->key_slots);
  }
  lg_meta_unref(b->meta);
  b->meta = NULL;
  for (uint32_t k = 0; k < b->nout; k++)
    lg_payload_reset(&b->out[k]);
  b->checkpoint_offset = 0;
  b->more_pipelines = 0;
  b->raw_format = b->raw_flush = 0;
  b->raw_start = b->raw_offset = b->raw_max_record = 0;
  b->raw_time_ns = 0;
  b->framed = 0;
  b->pending = 0;
  b->mem_bytes = 0;
  b->next = NULL;
}

void lg_batch_unfit(lg_batch_t *b, size_t data_cap) {
  if (b->data_cap < data_cap) {
    char *d = malloc(data_cap);
    if (d != NULL) {
      free(b->data);
      b->data = d;
      b->data_cap = data_cap;
    }
  }
  if (b->recs_cap < LG_BATCH_RECS_INIT) {
    lg_rec_t *r = malloc(LG_BATCH_RECS_INIT * sizeof *r);
    if (r != NULL) {
      free(b->recs);
      b->recs = r;
      b->recs_cap = LG_BATCH_RECS_INIT;
    }
  }
}

size_t lg_batch_fit(lg_batch_t *b) {
  size_t freed = 0;
  int small = b->data_cap > LG_BATCH_FIT_MIN &&
              b->data_len < b->data_cap / LG_BATCH_FIT_RATIO;
  if (small) {
    /* By 256 bytes (256 at least): a script's fields then grow it by
     * doubling. */
    size_t to = lg_util_round_up(b->data_len > 0 ? b->data_len : 1, 256);
    char *d = realloc(b->data, to);
    if (d != NULL) {
      freed += (size_t)b->data_cap - to;
      b->data = d;
      b->data_cap = to;
    }
    /* The records too (16 KiB from lg_batch_create, a busy file's 13,000
     * records from a pooled batch), by 16. */
    uint32_t rto = (uint32_t)lg_util_round_up(b->n > 0 ? b->n : 1, 16);
    lg_rec_t *r = rto < b->recs_cap ? realloc(b->recs, rto * sizeof *r) : NULL;
    if (r != NULL) {
      freed += (size_t)(b->recs_cap - rto) * sizeof *r;
      b->recs = r;
      b->recs_cap = rto;
    }
  }
  /* A cut batch's output buffers keep room for what its records will
   * encode to, as much as the budget reserves for them before the worker
   * runs (lg_acks.c): a file filling an eighth of its batches does not
   * grow them again by doubling for every batch. */
  size_t keep = small ? (size_t)LG_BATCH_FIT_OUT_KEEP * b->data_len : 0;
  for (uint32_t k = 0; k < b->nout; k++)
    if (small || b->out[k].n > 0)
      freed += lg_payload_fit(&b->out[k], LG_BATCH_FIT_MIN, LG_BATCH_FIT_RATIO,
                              keep);
  return freed;
}

void lg_batch_set_meta(lg_batch_t *b, const lg_meta_t *meta) {
  const lg_meta_t *old = b->meta;
  b->meta = meta ? lg_meta_ref(meta) : NULL;
  lg_meta_unref(old);
  lg__batch_keys_reshadow(b);
}

int64_t lg__batch_arena_put(lg_batch_t *b, const char *p, size_t len) {
  if (b->data_len + len > UINT32_MAX)
    return -E2BIG;
  if (LG_GROW(b->data, b->data_cap, b->data_len + len, 4096) != 0)
    return -ENOMEM;
  int64_t off = (int64_t)b->data_len;
  if (len)
    memcpy(b->data + off, p, len);
  b->data_len += len;
  return off;
}

int lg_batch_append_raw(lg_batch_t *b, const char *p, size_t len) {
  int64_t off = lg__batch_arena_put(b, p, len);
  return off < 0 ? (int)off : 0;
}

char *lg_batch_room(lg_batch_t *b, size_t len) {
  if (b->data_len + len > UINT32_MAX ||
      LG_GROW(b->data, b->data_cap, b->data_len + len, 4096) != 0)
    return NULL;
  return b->data + b->data_len;
}

int64_t lg_batch_add(lg_batch_t *b, const char *body, size_t len,
                     int64_t time_ns, uint64_t offset, uint64_t end_offset,
                     uint32_t flags) {
  if (LG_GROW(b->recs, b->recs_cap, (size_t)b->n + 1, 256) != 0)
    return -ENOMEM;
  int64_t off = lg__batch_arena_put(b, body, len);
  if (off < 0)
    return off;
  lg_rec_t *r = &b->recs[b->n];
  memset(r, 0, sizeof *r);
  r->time_ns = time_ns;
  r->offset = offset;
  r->end_offset = end_offset;
  r->body_off = (uint32_t)off;
  r->body_len = (uint32_t)len;
  r->field_head = r->field_tail = -1;
  r->flags = flags;
  return b->n++;
}

int64_t lg_batch_insert(lg_batch_t *b, uint32_t after, const char *body,
                        size_t len) {
  if (after >= b->n)
    return -ERANGE;
  lg_rec_t src = b->recs[after];
  int64_t idx =
      lg_batch_add(b, body, len, src.time_ns, src.offset, src.end_offset,
                   src.flags & (LG_REC_ORIGIN | LG_REC_ROUTED));
  if (idx < 0)
    return idx;
  lg_rec_t r = b->recs[idx];
  r.routes = src.routes;
  /* Fields are chained by index into b->fields, not by record position,
   * so records move without touching their fields. */
  memmove(&b->recs[after + 2], &b->recs[after + 1],
          (size_t)(b->n - 1 - (after + 1)) * sizeof r);
  b->recs[after + 1] = r;
  return (int64_t)after + 1;
}

int lg_batch_fail(lg_batch_t *b, uint32_t i, const char *msg, size_t len) {
  if (i >= b->n)
    return -ERANGE;
  lg_rec_t *r = &b->recs[i];
  r->flags = (r->flags | LG_REC_FAILED) & ~LG_REC_ERR_SIDE;
  r->err_off = r->err_len = 0;
  int64_t off = lg__batch_arena_put(b, msg, len);
  if (off >= 0) {
    r->err_off = (uint32_t)off;
    r->err_len = (uint32_t)len;
    return 0;
  }
  /* The arena is full (its offsets are 32-bit) or cannot grow: the text
   * goes beside it, so that the dead-letter record still says why. */
  if (b->errs.len + len > UINT32_MAX)
    return -E2BIG;
  size_t at = b->errs.len;
  if (lg_buf_append(&b->errs, msg, len) != 0)
    return (int)off;
  r->err_off = (uint32_t)at;
  r->err_len = (uint32_t)len;
  r->flags |= LG_REC_ERR_SIDE;
  return 0;
}

const char *lg_batch_rec_error(const lg_batch_t *b, uint32_t i, uint32_t *len) {
  const lg_rec_t *r = &b->recs[i];
  *len = r->err_len;
  if (r->err_len == 0)
    return "";
  return (r->flags & LG_REC_ERR_SIDE) ? b->errs.data + r->err_off
                                      : b->data + r->err_off;
}

int lg_batch_rec_id(const lg_batch_t *b, uint32_t i, char *buf, size_t cap) {
  if (b == NULL || buf == NULL)
    return -EINVAL;
  if (i >= b->n)
    return -ERANGE;
  /* By hand, not snprintf: outputs that send ids (Elasticsearch _id,
   * Kafka keys) call this for every record. */
  char tmp[40];
  uint64_t fp = b->fingerprint, off = b->recs[i].offset;
  for (int k = 15; k >= 0; k--, fp >>= 4)
    tmp[k] = "0123456789abcdef"[fp & 15];
  tmp[16] = ':';
  char dec[24];
  int nd = 0;
  do {
    dec[nd++] = (char)('0' + off % 10);
    off /= 10;
  } while (off > 0);
  int n = 17;
  while (nd > 0)
    tmp[n++] = dec[--nd];
  if ((size_t)n >= cap)
    return -ENOSPC;
  memcpy(buf, tmp, (size_t)n);
  buf[n] = '\0';
  return n;
}

lg_batch_t *lg_batch_clone(const lg_batch_t *b) {
  if (b->nfields > 0 || b->raw_format != 0)
    return NULL;
  lg_batch_t *c = lg_batch_create(b->data_len);
  if (c == NULL)
    return NULL;
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    if (lg_batch_add(c, b->data + r->body_off, r->body_len, r->time_ns,
                     r->offset, r->end_offset,
                     r->flags & ~(LG_REC_FAILED | LG_REC_ERR_SIDE)) < 0) {
      lg_batch_destroy(c);
      return NULL;
    }
    /* A failed record keeps its reason in the copy too. */
    uint32_t elen;
    const char *etext = lg_batch_rec_error(b, i, &elen);
    if ((r->flags & LG_REC_FAILED) && lg_batch_fail(c, i, etext, elen) != 0) {
      lg_batch_destroy(c);
      return NULL;
    }
  }
  lg_batch_set_meta(c, b->meta);
  c->source_id = b->source_id;
  c->pipeline = b->pipeline;
  c->fingerprint = b->fingerprint;
  c->checkpoint_offset = b->checkpoint_offset;
  c->file_key = b->file_key;
  c->lane = b->lane;
  return c;
}
