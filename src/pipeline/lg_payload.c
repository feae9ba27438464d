#include "pipeline/lg_payload.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_json.h"
#include "core/lg_util.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_record_json.h"

int lg_payload_encode_json(const void *conf, const lg_batch_t *b, uint32_t i,
                           const char *error, lg_payload_t *out) {
  (void)conf;
  return lg_json_encode_record_err(&out->data, b, i, error,
                                   error != NULL ? strlen(error) : 0);
}

/* Grows the per-record arrays (those in use) to hold one more. */
static int grow(lg_payload_t *p) {
  if (p->n < p->cap)
    return 0;
  uint32_t cap = p->cap ? p->cap * 2 : 256;
  uint32_t *o = realloc(p->off, cap * sizeof *o);
  if (o == NULL)
    return -ENOMEM;
  p->off = o;
  if (p->meta_off != NULL) {
    uint32_t *m = realloc(p->meta_off, cap * sizeof *m);
    if (m == NULL)
      return -ENOMEM;
    p->meta_off = m;
  }
  p->cap = cap;
  return 0;
}

/* Starts the side-data offsets at the first record that has some: the
 * records before have none. */
static uint32_t *start_array(const lg_payload_t *p) {
  return calloc(p->cap ? p->cap : 1, sizeof(uint32_t));
}

/* Starts the kept bits at the first record that is not batch record n:
 * records 0..n-1 were. */
static int start_kept(lg_payload_t *p, uint32_t batch_n) {
  uint32_t words = batch_n / 64 + 1;
  p->kept = calloc(words, sizeof *p->kept);
  if (p->kept == NULL)
    return -ENOMEM;
  p->kept_words = words;
  for (uint32_t j = 0; j < p->n; j++)
    p->kept[j / 64] |= 1ull << (j % 64);
  return 0;
}

uint32_t lg_payload_index(const lg_payload_t *p, uint32_t j) {
  if (p->kept == NULL)
    return j;
  for (uint32_t w = 0; w < p->kept_words; w++) {
    uint32_t c = (uint32_t)__builtin_popcountll(p->kept[w]);
    if (j < c) {
      uint64_t bits = p->kept[w];
      for (uint32_t k = 0; k < j; k++)
        bits &= bits - 1;
      return w * 64 + (uint32_t)__builtin_ctzll(bits);
    }
    j -= c;
  }
  return UINT32_MAX;
}

uint32_t lg_payload_next_index(const lg_payload_t *p, uint32_t i) {
  if (p->kept == NULL)
    return i + 1;
  for (uint32_t at = i + 1; at / 64 < p->kept_words;) {
    uint64_t bits = p->kept[at / 64] >> (at % 64);
    if (bits != 0)
      return at + (uint32_t)__builtin_ctzll(bits);
    at = (at / 64 + 1) * 64;
  }
  return UINT32_MAX;
}

/* Records the entry of a record whose bytes start at `off` in data and
 * `moff` in meta. */
static int push(lg_payload_t *p, uint32_t index, size_t off, size_t moff) {
  if (p->data.len > UINT32_MAX || p->meta.len > UINT32_MAX)
    return -E2BIG;
  if (grow(p) != 0)
    return -ENOMEM;
  if (p->kept == NULL && index != p->n &&
      start_kept(p, p->batch != NULL ? p->batch->n : index + 1) != 0)
    return -ENOMEM;
  if (p->kept != NULL && index / 64 >= p->kept_words)
    return -ERANGE; /* records of one batch only, at most its n */
  if (p->meta_off == NULL && p->meta.len > moff &&
      (p->meta_off = start_array(p)) == NULL)
    return -ENOMEM;
  p->off[p->n] = (uint32_t)off;
  if (p->kept != NULL)
    p->kept[index / 64] |= 1ull << (index % 64);
  if (p->meta_off != NULL)
    p->meta_off[p->n] = (uint32_t)moff;
  p->n++;
  return 0;
}

int lg_payload_add(lg_payload_t *p, const lg_encoder_t *enc,
                   const lg_batch_t *b, uint32_t i, const char *error) {
  size_t off = p->data.len, moff = p->meta.len;
  p->batch = b;
  int rc = enc != NULL && enc->fn != NULL
               ? enc->fn(enc->conf, b, i, error, p)
               : lg_json_encode_record_err(&p->data, b, i, error,
                                           error != NULL ? strlen(error) : 0);
  if (rc == 0 && p->n < p->cap && p->kept == NULL && i == p->n &&
      p->meta_off == NULL && p->meta.len == moff && p->data.len <= UINT32_MAX) {
    /* The usual case, on the record path: one offset more. */
    p->off[p->n++] = (uint32_t)off;
    return 0;
  }
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
  size_t per = sizeof *p->off + (p->meta_off ? sizeof *p->meta_off : 0);
  return p->data.cap + p->meta.cap + (size_t)p->cap * per +
         (size_t)p->kept_words * sizeof *p->kept;
}

void lg_payload_reset(lg_payload_t *p) {
  p->batch = NULL;
  p->data.len = 0;
  p->meta.len = 0;
  p->n = 0;
  /* The next batch's records may map one for one again. */
  free(p->kept);
  p->kept = NULL;
  p->kept_words = 0;
  free(p->meta_off);
  p->meta_off = NULL;
}

/* Cuts the array *p of `size`-byte elements to `to` elements (0: frees
 * it). Returns 1 when it was cut, 0 when realloc failed (*p unchanged). */
static int cut(void **p, size_t to, size_t size) {
  if (to == 0) {
    free(*p);
    *p = NULL;
    return 1;
  }
  void *n = realloc(*p, to * size);
  if (n == NULL)
    return 0;
  *p = n;
  return 1;
}

static int over(size_t used, size_t cap, size_t min, size_t ratio) {
  return cap > min && used < cap / ratio;
}

static void buf_fit(lg_buf_t *b, size_t min, size_t ratio, size_t keep) {
  size_t used = b->len > keep ? b->len : keep;
  if (!over(used, b->cap, min, ratio))
    return;
  size_t to = lg_util_round_up(used, 256);
  void *d = b->data;
  if (cut(&d, to, 1)) {
    b->data = d;
    b->cap = to;
  }
}

size_t lg_payload_fit(lg_payload_t *p, size_t min, size_t ratio, size_t keep) {
  size_t before = lg_payload_mem(p);
  buf_fit(&p->data, min, ratio, keep);
  buf_fit(&p->meta, min, ratio, 0);
  size_t per = sizeof *p->off + (p->meta_off ? sizeof *p->meta_off : 0);
  if (over((size_t)p->n * per, (size_t)p->cap * per, min, ratio)) {
    /* Offsets by 1024 entries (grow() doubles from any capacity). */
    uint32_t to = (uint32_t)lg_util_round_up(p->n, 1024);
    void *o = p->off, *m = p->meta_off;
    if (cut(&o, to, sizeof *p->off)) {
      p->off = o;
      p->cap = to;
      /* A meta_off realloc could not cut keeps more room than cap: the
       * next grow() reallocs it to the new cap like off. */
      if (m != NULL && cut(&m, to, sizeof *p->meta_off))
        p->meta_off = m;
    }
  }
  return before - lg_payload_mem(p);
}

void lg_payload_free(lg_payload_t *p) {
  if (p == NULL)
    return;
  lg_buf_free(&p->data);
  lg_buf_free(&p->meta);
  free(p->off);
  free(p->kept);
  free(p->meta_off);
  memset(p, 0, sizeof *p);
}
