/*
 * framing_fuzz.h - the libFuzzer harness shared by fuzz_line.c,
 * fuzz_cri.c, fuzz_docker.c and fuzz_auto.c.
 *
 * Input: byte 0 picks max_record_bytes, bytes 1-4 seed the cutting, the
 * rest is the file. The file is framed three ways: fed in random pieces
 * and flushed; fed whole and flushed; and again whole after
 * lg_framer_reset on the first framer. All three must give the same
 * records. cri and line are also framed deferred (lg_framer_set_deferred:
 * random pieces fed or read into the batch, batches cut and handed on at
 * random points and framed as a worker does), which must give them too,
 * with checkpoints (the safe offset after each cut) never moving back. Checked
 * on the way: offsets inside the file and ordered, bodies at most
 * max_record_bytes, safe_offset never moving back nor past the bytes fed,
 * nothing pending after a flush, and (line format) every byte accounted for.
 */
#ifndef FRAMING_FUZZ_H
#define FRAMING_FUZZ_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "framing/lg_framing.h"
#include "pipeline/lg_batch.h"

#define FUZZ_NOW 42

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c))                                                                  \
      __builtin_trap();                                                        \
  } while (0)

static uint32_t fuzz_rand(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* Checks what holds for every record of `b` framed from `len` bytes in
 * format `fmt` (as settled). */
static void fuzz_check_batch(const lg_batch_t *b, size_t len, size_t max,
                             lg_format_t fmt) {
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    CHECK(r->offset <= r->end_offset);
    CHECK(r->end_offset <= len);
    CHECK(r->body_len <= max);
    CHECK((uint64_t)r->body_off + r->body_len <= b->data_len);
    const lg_field_t *pe = lg_batch_find(b, i, "lugger.parse_error", 18);
    CHECK((pe != NULL) == ((r->flags & LG_REC_PARSE_ERROR) != 0));
    if (r->flags & LG_REC_STDERR)
      CHECK(r->flags & LG_REC_HAS_STREAM);
    /* line: never a stream nor a parse error; CRI and docker: exactly one
     * of the two. */
    int stream = (r->flags & LG_REC_HAS_STREAM) != 0;
    int perr = (r->flags & LG_REC_PARSE_ERROR) != 0;
    if (fmt == LG_FORMAT_LINE)
      CHECK(!stream && !perr);
    else if (fmt != LG_FORMAT_AUTO)
      CHECK(stream != perr);
    if (!stream)
      CHECK(r->time_ns == FUZZ_NOW);
  }
}

/* True when the two batches hold the same records. */
static int fuzz_same(const lg_batch_t *a, const lg_batch_t *b) {
  if (a->n != b->n)
    return 0;
  for (uint32_t i = 0; i < a->n; i++) {
    const lg_rec_t *x = &a->recs[i], *y = &b->recs[i];
    if (x->offset != y->offset || x->end_offset != y->end_offset ||
        x->flags != y->flags || x->time_ns != y->time_ns ||
        x->body_len != y->body_len ||
        memcmp(a->data + x->body_off, b->data + y->body_off, x->body_len))
      return 0;
    const lg_field_t *p = lg_batch_find(a, i, "lugger.parse_error", 18);
    const lg_field_t *q = lg_batch_find(b, i, "lugger.parse_error", 18);
    if ((p == NULL) != (q == NULL))
      return 0;
    if (p && (p->s_len != q->s_len ||
              memcmp(a->data + p->s_off, b->data + q->s_off, p->s_len)))
      return 0;
  }
  return 1;
}

static void fuzz_flush(lg_framer_t *f, lg_batch_t *b, size_t len) {
  CHECK(lg_framer_flush(f, FUZZ_NOW, b) == 0);
  CHECK(lg_framer_pending_bytes(f) == 0);
  CHECK(lg_framer_safe_offset(f) == len);
}

/* Deferred framing: cuts `b` as a hand-off does, frames its bytes as the
 * worker does and appends its records to `all`. */
static void fuzz_hand_off(lg_framer_t *f, lg_batch_t *b, lg_batch_t *all,
                          char **scratch, size_t *cap, uint64_t *safe) {
  CHECK(lg_framer_cut(f, b) == 0);
  uint64_t s = lg_framer_safe_offset(f);
  CHECK(s >= *safe);
  *safe = s;
  if (b->raw_format != 0) {
    size_t n;
    const char *p = lg_framer_take_deferred(b, scratch, cap, &n);
    CHECK(p != NULL);
    CHECK(lg_framer_frame_bytes(b, p, n) == 0);
    CHECK(b->raw_format == 0);
  }
  for (uint32_t i = 0; i < b->n; i++) {
    const lg_rec_t *r = &b->recs[i];
    CHECK(r->end_offset <= s || (r->flags & LG_REC_HAS_STREAM));
    int64_t k = lg_batch_add(all, b->data + r->body_off, r->body_len,
                             r->time_ns, r->offset, r->end_offset, r->flags);
    CHECK(k >= 0);
    const lg_field_t *pe = lg_batch_find(b, i, "lugger.parse_error", 18);
    if (pe != NULL)
      CHECK(lg_batch_set_str(all, (uint32_t)k, "lugger.parse_error", 18,
                             b->data + pe->s_off, pe->s_len) == 0);
  }
  lg_batch_reset(b);
}

static void fuzz_deferred(lg_format_t fmt, size_t max, const char *in,
                          size_t len, uint32_t seed, const lg_batch_t *want) {
  lg_framer_t *f = lg_framer_create(fmt, max, 0);
  lg_batch_t *b = lg_batch_create(0), *all = lg_batch_create(0);
  CHECK(f && b && all);
  CHECK(lg_framer_set_deferred(f, 1) == 0);
  char *scratch = NULL;
  size_t cap = 0;
  uint64_t safe = 0;
  for (size_t at = 0; at < len;) {
    size_t n = fuzz_rand(&seed) % 65;
    if (n > len - at)
      n = len - at;
    char *room = fuzz_rand(&seed) & 1 ? lg_framer_raw_room(f, b, n) : NULL;
    if (room != NULL) {
      memcpy(room, in + at, n);
      lg_framer_raw_commit(f, b, n, FUZZ_NOW);
    } else {
      CHECK(lg_framer_feed(f, in + at, n, FUZZ_NOW, b) == 0);
    }
    at += n;
    if (fuzz_rand(&seed) % 4 == 0)
      fuzz_hand_off(f, b, all, &scratch, &cap, &safe);
  }
  CHECK(lg_framer_flush(f, FUZZ_NOW, b) == 0);
  fuzz_hand_off(f, b, all, &scratch, &cap, &safe);
  CHECK(lg_framer_pending_bytes(f) == 0);
  CHECK(lg_framer_safe_offset(f) == len);
  CHECK(fuzz_same(want, all));
  free(scratch);
  lg_batch_destroy(b);
  lg_batch_destroy(all);
  lg_framer_destroy(f);
}

static int fuzz_framing(lg_format_t fmt, const uint8_t *data, size_t size) {
  static const size_t maxes[8] = {1, 2, 3, 5, 8, 16, 64, 4096};
  if (size < 5)
    return 0;
  size_t max = maxes[data[0] & 7];
  uint32_t seed;
  memcpy(&seed, data + 1, 4);
  seed |= 1;
  const char *in = (const char *)data + 5;
  size_t len = size - 5;

  /* In random pieces (up to 64 bytes, sometimes empty). */
  lg_framer_t *f = lg_framer_create(fmt, max, 0);
  lg_batch_t *b1 = lg_batch_create(0);
  CHECK(f && b1);
  uint64_t safe = 0;
  for (size_t at = 0; at < len;) {
    size_t n = fuzz_rand(&seed) % 65;
    if (n > len - at)
      n = len - at;
    CHECK(lg_framer_feed(f, in + at, n, FUZZ_NOW, b1) == 0);
    at += n;
    uint64_t s = lg_framer_safe_offset(f);
    CHECK(s >= safe && s <= at);
    safe = s;
    /* Held bytes stay bounded: a line (at most twice max plus a little,
     * for docker) and one record per stream. */
    CHECK(lg_framer_pending_bytes(f) <= 2 * max + 4097 + 2 * max);
  }
  fuzz_flush(f, b1, len);
  fuzz_check_batch(b1, len, max, lg_framer_format(f));

  /* Whole. */
  lg_framer_t *g = lg_framer_create(fmt, max, 0);
  lg_batch_t *b2 = lg_batch_create(0);
  CHECK(g && b2);
  CHECK(lg_framer_feed(g, in, len, FUZZ_NOW, b2) == 0);
  fuzz_flush(g, b2, len);
  CHECK(fuzz_same(b1, b2));
  CHECK(lg_framer_format(f) == lg_framer_format(g));

  /* Again after a reset (copytruncate), on the first framer. */
  lg_batch_t *b3 = lg_batch_create(0);
  CHECK(b3);
  lg_framer_reset(f, 0);
  CHECK(lg_framer_safe_offset(f) == 0 && lg_framer_pending_bytes(f) == 0);
  CHECK(lg_framer_feed(f, in, len, FUZZ_NOW, b3) == 0);
  fuzz_flush(f, b3, len);
  CHECK(fuzz_same(b2, b3));

  if (fmt == LG_FORMAT_CRI || fmt == LG_FORMAT_LINE)
    fuzz_deferred(fmt, max, in, len, seed, b2);

  if (lg_framer_format(f) == LG_FORMAT_LINE) {
    /* Records tile the file, and every byte is a body byte, an LF or the
     * CR of a CRLF. */
    size_t lfs = 0, crlfs = 0, bodies = 0;
    for (size_t i = 0; i < len; i++) {
      lfs += in[i] == '\n';
      crlfs += in[i] == '\n' && i > 0 && in[i - 1] == '\r';
    }
    uint64_t at = 0;
    for (uint32_t i = 0; i < b2->n; i++) {
      CHECK(b2->recs[i].offset == at);
      at = b2->recs[i].end_offset;
      bodies += b2->recs[i].body_len;
      CHECK(b2->recs[i].time_ns == FUZZ_NOW);
    }
    CHECK(at == len);
    CHECK(bodies + lfs + crlfs == len);
  } else {
    size_t bodies = 0;
    for (uint32_t i = 0; i < b2->n; i++)
      bodies += b2->recs[i].body_len;
    CHECK(bodies <= len);
  }

  lg_batch_destroy(b1);
  lg_batch_destroy(b2);
  lg_batch_destroy(b3);
  lg_framer_destroy(f);
  lg_framer_destroy(g);
  return 0;
}

#endif
