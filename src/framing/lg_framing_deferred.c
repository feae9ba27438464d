/*
 * lg_framing_deferred.c - deferred framing: a file's bytes kept raw in the
 * batch by the thread that reads, cut at a clean line end, and framed by
 * the worker (lg_framing.h, "Deferred framing").
 *
 * The framer of a file whose records may be framed by the worker keeps the
 * bytes in the batch as they are (one copy, the one framing would make) and
 * cuts them at a line end where a fresh framer holds nothing; the worker
 * frames them from a fresh framer at that offset. Because records do not
 * depend on how bytes are cut into feeds, the records are the same. What
 * cannot be cut cleanly (a line in progress, an open CRI partial record) is
 * the carry, which goes first into the next batch's bytes; a carry that
 * grows past carry_max (no clean cut in sight: a huge line, an endless run
 * of partial lines) is framed here as usual instead, until the framer holds
 * nothing again.
 */
#include "framing/lg_framing_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t carry_max(const lg_framer_t *f) {
  return 2 * f->hold + ((size_t)64 << 10);
}

int lg_framer_set_deferred(lg_framer_t *f, int on) {
  if (on && f->format != LG_FORMAT_CRI && f->format != LG_FORMAT_LINE)
    return -EINVAL;
  if (!on && f->carry)
    return -EBUSY;
  f->defer = on != 0;
  return 0;
}

/* True when the framer holds nothing but (perhaps) a carry, so the bytes
 * that follow may be left for a fresh framer. */
static int clean(const lg_framer_t *f) {
  return f->carry || (f->lb_len == 0 && !f->long_line && !f->acc[0].open &&
                      !f->acc[1].open);
}

/* lb_append without the bound of a held line (the carry is bounded by
 * carry_max instead). */
static int carry_append(lg_framer_t *f, const char *p, size_t n) {
  if (lg__framer_bytes_reserve(&f->lb, &f->lb_cap, f->lb_len + n, 1024,
                               SIZE_MAX) != 0)
    return -ENOMEM;
  memcpy(f->lb + f->lb_len, p, n);
  f->lb_len += n;
  return 0;
}

/* Opens the batch's deferred bytes at the current position: the carry
 * first. */
static int open_raw(lg_framer_t *f, lg_batch_t *b) {
  uint64_t start = f->pos - (f->carry ? f->lb_len : 0);
  uint64_t mark = b->data_len;
  if (f->carry && lg_batch_append_raw(b, f->lb, f->lb_len) < 0)
    return -ENOMEM;
  b->raw_format = (uint32_t)f->format + 1;
  b->raw_flush = 0;
  b->raw_start = mark;
  b->raw_offset = start;
  b->raw_max_record = f->max;
  if (f->carry) {
    f->carry = 0;
    lg__framer_clear_line(f);
  }
  return 0;
}

/* The carry outgrew carry_max: frame it here, from the clean point it
 * starts at. */
static int frame_carry(lg_framer_t *f, int64_t now_ns, lg_batch_t *b) {
  char *p = f->lb;
  size_t n = f->lb_len;
  f->lb = NULL;
  f->lb_len = f->lb_cap = 0;
  f->carry = 0;
  f->pos -= n;
  f->line_off = f->pos;
  int rc = lg__framer_feed_now(f, p, n, now_ns, b);
  free(p);
  return rc;
}

int lg__framer_feed_deferred(lg_framer_t *f, const char *buf, size_t len,
                             int64_t now_ns, lg_batch_t *b) {
  const char *p = buf, *e = buf + len;
  int rc;
  if (f->carry && b->raw_format == 0 && f->lb_len > carry_max(f) &&
      (rc = frame_carry(f, now_ns, b)) < 0)
    return rc;
  /* Held state of our own (a line in progress, an open partial record):
   * framed here, a line at a time, until nothing is held. */
  while (p < e && b->raw_format == 0 && !clean(f)) {
    const char *lf = memchr(p, '\n', (size_t)(e - p));
    size_t n = lf ? (size_t)(lf + 1 - p) : (size_t)(e - p);
    if ((rc = lg__framer_feed_now(f, p, n, now_ns, b)) < 0)
      return rc;
    p += n;
  }
  if (p == e)
    return 0;
  if (b->raw_format == 0 && (rc = open_raw(f, b)) < 0)
    return rc;
  if ((rc = lg_batch_append_raw(b, p, (size_t)(e - p))) < 0)
    return rc;
  f->pos += (uint64_t)(e - p);
  f->line_off = f->pos;
  b->raw_time_ns = now_ns;
  return 0;
}

char *lg_framer_raw_room(lg_framer_t *f, lg_batch_t *b, size_t want) {
  if (!f->defer)
    return NULL;
  if (b->raw_format == 0) {
    if (!clean(f) || (f->carry && f->lb_len > carry_max(f)) ||
        open_raw(f, b) < 0)
      return NULL; /* lg_framer_feed deals with it */
  }
  return lg_batch_room(b, want);
}

void lg_framer_raw_commit(lg_framer_t *f, lg_batch_t *b, size_t n,
                          int64_t now_ns) {
  b->data_len += n;
  f->pos += n;
  f->line_off = f->pos;
  if (n > 0)
    b->raw_time_ns = now_ns;
}

int lg__framer_flush_deferred(lg_framer_t *f, int64_t now_ns, lg_batch_t *b) {
  if (b->raw_format == 0 && !f->carry)
    return lg__framer_flush_now(f, now_ns, b);
  int rc;
  if (b->raw_format == 0 && (rc = open_raw(f, b)) < 0)
    return rc;
  b->raw_flush = 1;
  b->raw_time_ns = now_ns;
  f->line_off = f->pos;
  return 0;
}

size_t lg_framer_clean_prefix(lg_format_t format, size_t max_record_bytes,
                              const char *p, size_t len) {
  const char *lf = len ? memrchr(p, '\n', len) : NULL;
  if (lf == NULL)
    return 0;
  size_t x = (size_t)(lf - p) + 1;
  if (format != LG_FORMAT_CRI)
    return x;
  /* Walk back over whole lines: x is clean once each stream's last CRI
   * line before it is final (F), or the stream has none since the start
   * (which is clean). A stream whose last line is partial (P) is open at
   * x: x moves to that line's start and the walk goes on from there. */
  lg_framer_t tc;
  lg__framer_cri_probe_init(&tc, max_record_bytes);
  int seen[2] = {0, 0};
  size_t pos = x;
  while (pos > 0) {
    size_t end = pos - 1; /* the line's LF */
    const char *prev = end ? memrchr(p, '\n', end) : NULL;
    size_t ls = prev ? (size_t)(prev - p) + 1 : 0;
    int st, fin;
    if (lg__framer_cri_kind(&tc, p + ls, end - ls, &st, &fin) == 0 &&
        !seen[st]) {
      if (fin) {
        seen[st] = 1;
        if (seen[0] && seen[1])
          return x;
      } else {
        x = ls;
        seen[0] = seen[1] = 0;
      }
    }
    pos = ls;
  }
  return x;
}

int lg_framer_cut(lg_framer_t *f, lg_batch_t *b) {
  if (b->raw_format == 0 || b->raw_flush)
    return 0;
  const char *p = b->data + b->raw_start;
  size_t n = (size_t)(b->data_len - b->raw_start);
  size_t c =
      lg_framer_clean_prefix((lg_format_t)(b->raw_format - 1), f->max, p, n);
  if (c < n) {
    if (f->carry || f->lb_len != 0) /* cannot happen: the carry went first */
      return -EINVAL;
    if (carry_append(f, p + c, n - c) < 0)
      return -ENOMEM;
    f->carry = 1;
    b->data_len = b->raw_start + c;
  }
  if (c == 0)
    b->raw_format = 0;
  return 0;
}

const char *lg_framer_take_deferred(lg_batch_t *b, char **scratch, size_t *cap,
                                    size_t *len) {
  size_t n = (size_t)(b->data_len - b->raw_start);
  if (n == 0) {
    *len = 0;
    return "";
  }
  if (*scratch != NULL && b->raw_start == 0 && b->nkeys == 0 &&
      b->nfields == 0 && b->data_cap >= *cap / 8) {
    /* Only raw bytes: the batch takes the scratch buffer (an earlier
     * batch's arena, never NULL) as its arena and the scratch keeps the
     * bytes (no copy). Not for an arena far smaller than the scratch (a
     * quiet file's batch, cut to its few lines: lg_batch_fit): the batch
     * would be given a busy batch's arena to hold them, and the scratch
     * a small one that the next busy batch then grows by doubling; its
     * few bytes are copied instead. */
    char *d = b->data;
    size_t dc = (size_t)b->data_cap;
    b->data = *scratch;
    b->data_cap = *cap;
    *scratch = d;
    *cap = dc;
  } else {
    if (n > *cap) {
      char *nb = realloc(*scratch, n);
      if (nb == NULL)
        return NULL;
      *scratch = nb;
      *cap = n;
    }
    memcpy(*scratch, b->data + b->raw_start, n);
  }
  b->data_len = b->raw_start;
  *len = n;
  return *scratch;
}

void lg_framer_scratch_trim(char **scratch, size_t *cap) {
  if (*cap <= LG_FRAMER_SCRATCH_KEEP)
    return;
  free(*scratch);
  *scratch = NULL;
  *cap = 0;
}

int lg_framer_frame_bytes(lg_batch_t *b, const char *p, size_t len) {
  lg_format_t fmt = (lg_format_t)(b->raw_format - 1);
  uint32_t n0 = b->n, nf0 = b->nfields;
  lg_framer_t *f =
      lg_framer_create(fmt, (size_t)b->raw_max_record, b->raw_offset);
  if (f == NULL)
    return -ENOMEM;
  int rc = lg__framer_feed_now(f, p, len, b->raw_time_ns, b);
  if (rc == 0 && b->raw_flush)
    rc = lg__framer_flush_now(f, b->raw_time_ns, b);
  lg_framer_destroy(f);
  if (rc < 0) {
    /* Forget the records; the arena keeps what was written (interned keys
     * may be among it), so a retry appends after it. */
    b->n = n0;
    b->nfields = nf0;
    return rc;
  }
  b->framed += b->n - n0;
  b->raw_format = b->raw_flush = 0;
  return 0;
}