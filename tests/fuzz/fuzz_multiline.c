/* libFuzzer target: multiline grouping (lg_multiline.h) over arbitrary
 * lines. Input: byte 0 picks the rules (the java, python and go presets
 * or a start and/or continue regex) and the max_lines and max_bytes
 * limits, bytes 1-4 seed the rest, then the file, one record per line,
 * each given a stream (none, stdout or stderr) and sometimes the
 * framer's truncated or parse-error flag. Records are grouped in batches
 * of random size, with idle flushes between them, then flushed. What
 * must hold: every line ends up in exactly one record of its stream, and
 * a stream's records come out in file order; a line not in a record yet
 * is never before lg_ml_safe_offset (the checkpoint must not pass it);
 * a group of several lines is at most max_bytes; a record's time is its
 * first line's; nothing is held after the flush. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "framing/lg_multiline.h"
#include "pipeline/lg_batch.h"

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c))                                                                  \
      __builtin_trap();                                                        \
  } while (0)

#define MAX_LINES 1024

static uint32_t rnd(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

typedef struct line {
  uint64_t off, end;
  uint32_t flags, len;
  int in; /* records of its stream covering it */
} line_t;

static line_t lines[MAX_LINES];
static size_t nlines;

static int stream_of(uint32_t flags) { return (flags & LG_REC_STDERR) != 0; }

/* Accounts for the records of `out` from index `from`: each covers the
 * lines of its stream within its offsets. */
static void account(const lg_batch_t *out, uint32_t from, uint64_t *last,
                    uint64_t max_bytes) {
  for (uint32_t i = from; i < out->n; i++) {
    const lg_rec_t *r = &out->recs[i];
    int s = stream_of(r->flags), covered = 0;
    CHECK(r->offset < r->end_offset);
    CHECK(last[s] <= r->offset); /* one stream's records in file order */
    last[s] = r->end_offset;
    for (size_t k = 0; k < nlines; k++) {
      if (stream_of(lines[k].flags) != s || lines[k].off < r->offset ||
          lines[k].end > r->end_offset)
        continue;
      if (covered == 0)
        CHECK(lines[k].off == r->offset && r->time_ns == (int64_t)lines[k].off);
      lines[k].in++;
      covered++;
    }
    CHECK(covered >= 1);
    CHECK(covered == 1 || r->body_len <= max_bytes);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lg_ml_conf_t *confs[6];
  static const uint32_t max_lines[4] = {0, 1, 3, 8};
  static const uint64_t max_bytes[4] = {0, 8, 40, 300};
  if (confs[0] == NULL) {
    const lg_ml_spec_t specs[6] = {
        {.preset = "java"}, {.preset = "python"},
        {.preset = "go"},   {.start = "^\\S", .cont = "^\\s+(at |\\.\\.\\.)"},
        {.start = "^\\d"},  {.cont = "^\\s"},
    };
    char err[256];
    for (int k = 0; k < 6; k++)
      CHECK((confs[k] = lg_ml_conf_create(&specs[k], "fuzz", err,
                                          sizeof err)) != NULL);
  }
  if (size < 5)
    return 0;
  const lg_ml_conf_t *c = confs[data[0] % 6];
  uint32_t ml = max_lines[(data[0] >> 3) & 3];
  uint64_t mb = max_bytes[(data[0] >> 5) & 3];
  uint32_t seed;
  memcpy(&seed, data + 1, 4);
  seed |= 1;
  /* The presets' own max_lines (500) is kept when ml is 0: a conf is made
   * for the other limits, once per pair. */
  static lg_ml_conf_t *limited[6][4][4];
  if (ml != 0 || mb != 0) {
    lg_ml_conf_t **slot =
        &limited[data[0] % 6][(data[0] >> 3) & 3][(data[0] >> 5) & 3];
    if (*slot == NULL) {
      static const lg_ml_spec_t base[6] = {
          {.preset = "java"}, {.preset = "python"},
          {.preset = "go"},   {.start = "^\\S", .cont = "^\\s+(at |\\.\\.\\.)"},
          {.start = "^\\d"},  {.cont = "^\\s"},
      };
      lg_ml_spec_t sp = base[data[0] % 6];
      sp.max_lines = ml;
      sp.max_bytes = mb;
      char err[256];
      CHECK((*slot = lg_ml_conf_create(&sp, "fuzz", err, sizeof err)) != NULL);
    }
    c = *slot;
  }
  const uint64_t default_max = 1 << 20;
  uint64_t limit = mb ? mb : default_max;

  lg_batch_t *in = lg_batch_create(0), *out = lg_batch_create(0);
  CHECK(in && out);
  const char *p = (const char *)data + 5, *end = (const char *)data + size;
  nlines = 0;
  for (uint64_t off = 0; p < end && nlines < MAX_LINES;) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
    uint32_t r = rnd(&seed), flags = 0;
    if (r % 3 == 1)
      flags = LG_REC_HAS_STREAM;
    else if (r % 3 == 2)
      flags = LG_REC_HAS_STREAM | LG_REC_STDERR;
    if ((r >> 8) % 16 == 0)
      flags |= LG_REC_TRUNCATED;
    else if ((r >> 8) % 16 == 1)
      flags |= LG_REC_PARSE_ERROR;
    line_t *l = &lines[nlines++];
    l->off = off;
    l->end = off + len + 1;
    l->flags = flags;
    l->len = (uint32_t)len;
    l->in = 0;
    CHECK(lg_batch_add(in, p, len, (int64_t)off, l->off, l->end, flags) >= 0);
    off = l->end;
    p += len + 1;
  }

  lg_ml_t *m = lg_ml_create(c, default_max);
  CHECK(m != NULL);
  lg_batch_t *part = lg_batch_create(0);
  CHECK(part != NULL);
  uint64_t last[2] = {0, 0}, now = 0, safe = 0;
  size_t done = 0;
  while (done < nlines) {
    size_t n = rnd(&seed) % 9 + 1;
    if (n > nlines - done)
      n = nlines - done;
    lg_batch_reset(part);
    for (size_t k = done; k < done + n; k++) {
      const lg_rec_t *r = &in->recs[k];
      CHECK(lg_batch_add(part, in->data + r->body_off, r->body_len, r->time_ns,
                         r->offset, r->end_offset, r->flags) >= 0);
    }
    uint32_t from = out->n;
    now += rnd(&seed) % 700;
    CHECK(lg_ml_process(m, part, out, now) == 0);
    done += n;
    if (rnd(&seed) % 4 == 0)
      CHECK(lg_ml_flush_idle(m, out, now) == 0);
    account(out, from, last, limit);
    /* The checkpoint: every line taken but not in a record yet is at or
     * past the safe offset, and the safe offset never moves back while
     * lines are held. */
    uint64_t s = lg_ml_safe_offset(m);
    size_t held = 0;
    for (size_t k = 0; k < done; k++) {
      CHECK(lines[k].in <= 1);
      if (lines[k].in == 0) {
        CHECK(lines[k].off >= s);
        held++;
      }
    }
    CHECK(held == lg_ml_pending(m));
    CHECK((held == 0) == (s == UINT64_MAX));
    if (s != UINT64_MAX) {
      CHECK(s >= safe);
      safe = s;
    }
  }
  uint32_t from = out->n;
  CHECK(lg_ml_flush(m, out) == 0);
  account(out, from, last, limit);
  CHECK(lg_ml_pending(m) == 0 && lg_ml_safe_offset(m) == UINT64_MAX);
  for (size_t k = 0; k < nlines; k++)
    CHECK(lines[k].in == 1);

  lg_ml_destroy(m);
  lg_batch_destroy(part);
  lg_batch_destroy(in);
  lg_batch_destroy(out);
  return 0;
}
