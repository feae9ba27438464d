/*
 * lg_framing.c - bytes of one file -> records (line, CRI, Docker json-file).
 *
 * Two layers:
 *
 *  - The line layer finds LF-terminated lines. A line that arrives whole in
 *    one feed and is at most `hold` bytes long is handed over in place (no
 *    copy: the batch makes the only copy of the body). Bytes of a line that
 *    is not complete yet wait in `lb`. A line longer than `hold` is handed
 *    over in pieces (on_piece) as soon as more than `hold` of its bytes are
 *    known, so one huge line never needs more than `hold` + 1 bytes. Which
 *    path a line takes depends only on its length, never on how the input
 *    was split into feeds, so any split gives the same records.
 *
 *  - The format layer turns a line (or the pieces of a long one) into
 *    records: as is (line), after parsing the CRI header, or after parsing
 *    the Docker JSON envelope with cJSON. CRI P chunks and Docker pieces
 *    without a trailing "\n" collect in one accumulator per stream until
 *    the record ends. An accumulator that goes over max_record_bytes emits
 *    pieces of exactly max_record_bytes (flagged truncated) as soon as it
 *    knows more bytes follow, so it too stays bounded.
 *
 * Offsets: a record's offset is the file offset of its first line (for a
 * piece after the first: of its first byte, which is unique, so record ids
 * stay unique); end_offset is just past the last byte of its last line.
 *
 * Deferred framing (bytes left raw in the batch, framed by the worker) is
 * in lg_framing_deferred.c; lg_framer_feed and lg_framer_flush hand a
 * deferred framer's calls to it. Parsing a Docker json-file line is in
 * lg_framing_docker.c.
 */
#include "framing/lg_framing_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/lg_time.h"

/* Docker lines longer than this many bytes beyond 2 * max_record_bytes are
 * not parsed: cJSON needs the whole line, and `log` escaped as \uXXXX can be
 * six times as long as its text, so this bounds the held bytes instead of
 * trying to fit every possible escaping. */
#define DOCKER_SLACK 4096

/* Largest max_record_bytes accepted; the batch arena is 32-bit. */
#define MAX_RECORD_LIMIT ((size_t)1 << 30)

#define KEY_PARSE_ERROR "lugger.parse_error"

/* A line or record buffer larger than this is freed once empty: a file
 * that once had a huge line should not keep megabytes for good. */
#define BUF_KEEP ((size_t)64 << 10)

enum { LONG_RAW = -1 }; /* long_kind: raw pieces; 0/1: CRI body of stream */

int lg_format_parse(const char *name, lg_format_t *out) {
  static const char *const names[] = {"line", "cri", "docker", "auto"};
  for (int i = 0; i < 4; i++) {
    if (strcmp(name, names[i]) == 0) {
      *out = (lg_format_t)i;
      return 0;
    }
  }
  return -EINVAL;
}

const char *lg_format_name(lg_format_t f) {
  switch (f) {
  case LG_FORMAT_LINE:
    return "line";
  case LG_FORMAT_CRI:
    return "cri";
  case LG_FORMAT_DOCKER:
    return "docker";
  case LG_FORMAT_AUTO:
    return "auto";
  }
  return "?";
}

static size_t hold_for(lg_format_t fmt, size_t max) {
  switch (fmt) {
  case LG_FORMAT_LINE:
    /* One byte more than a record: a CR before the LF is not body. */
    return max + 1;
  case LG_FORMAT_CRI:
    return max + CRI_HDR_MAX;
  case LG_FORMAT_DOCKER:
  case LG_FORMAT_AUTO:
    break;
  }
  return 2 * max + DOCKER_SLACK;
}

lg_framer_t *lg_framer_create(lg_format_t format, size_t max_record_bytes,
                              uint64_t offset) {
  if (max_record_bytes == 0 || (unsigned)format > LG_FORMAT_AUTO)
    return NULL;
  if (max_record_bytes > MAX_RECORD_LIMIT)
    max_record_bytes = MAX_RECORD_LIMIT;
  lg_framer_t *f = calloc(1, sizeof *f);
  if (f == NULL)
    return NULL;
  f->format = f->active = format;
  f->max = max_record_bytes;
  f->hold = hold_for(format, f->max);
  /* Auto may still settle on any format; docker's hold is the largest. */
  f->lb_max = (format == LG_FORMAT_AUTO ? hold_for(LG_FORMAT_DOCKER, f->max)
                                        : f->hold) +
              1;
  f->pos = f->line_off = offset;
  return f;
}

void lg_framer_destroy(lg_framer_t *f) {
  if (f == NULL)
    return;
  free(f->lb);
  free(f->acc[0].buf);
  free(f->acc[1].buf);
  free(f);
}

/* ---- emitting records ---------------------------------------------------- */

static int emit(lg_framer_t *f, const char *p, size_t n, int64_t t,
                uint64_t off, uint64_t end, uint32_t flags, const char *err) {
  int64_t i = lg_batch_add(f->b, p, n, t, off, end, flags);
  if (i < 0)
    return (int)i;
  if (err != NULL)
    return lg_batch_set_str(f->b, (uint32_t)i, KEY_PARSE_ERROR,
                            sizeof KEY_PARSE_ERROR - 1, err, strlen(err));
  return 0;
}

/* Emits `n` body bytes as one record, or as pieces of at most max bytes
 * (all flagged truncated) when longer. The first piece has offset `off`;
 * later ones the file offset of their first byte (`data_off` + k * max);
 * the last one ends at `end`. */
static int emit_split(lg_framer_t *f, const char *p, size_t n, int64_t t,
                      uint64_t off, uint64_t data_off, uint64_t end,
                      uint32_t flags, const char *err) {
  if (n <= f->max)
    return emit(f, p, n, t, off, end, flags, err);
  flags |= LG_REC_TRUNCATED;
  for (size_t k = 0; k < n; k += f->max) {
    size_t len = n - k < f->max ? n - k : f->max;
    uint64_t o = k == 0 ? off : data_off + k;
    uint64_t e = k + len == n ? end : data_off + k + len;
    int rc = emit(f, p + k, len, t, o, e, flags, err);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* The flags of a record on stream `s` (0 stdout, 1 stderr) of the format
 * in use: Fluent Bit compatibility shows the envelope's keys by format. */
static uint32_t stream_flags(const lg_framer_t *f, int s) {
  uint32_t fmt = f->active == LG_FORMAT_CRI      ? LG_REC_FMT_CRI
                 : f->active == LG_FORMAT_DOCKER ? LG_REC_FMT_DOCKER
                                                 : 0;
  return LG_REC_HAS_STREAM | fmt | (s ? LG_REC_STDERR : 0);
}

/* ---- per-stream accumulators ----------------------------------------------
 */

int lg__framer_bytes_reserve(char **buf, size_t *cap, size_t need, size_t first,
                             size_t max) {
  if (need <= *cap)
    return 0;
  size_t c = *cap ? *cap : first;
  while (c < need)
    c *= 2;
  if (c > max)
    c = max;
  char *nb = realloc(*buf, c);
  if (nb == NULL)
    return -ENOMEM;
  *buf = nb;
  *cap = c;
  return 0;
}

/* Frees the (empty) buffer *buf of capacity *cap when it is larger than
 * BUF_KEEP. */
static void bytes_trim(char **buf, size_t *cap) {
  if (*cap > BUF_KEEP) {
    free(*buf);
    *buf = NULL;
    *cap = 0;
  }
}

static int acc_reserve(lg_framer_t *f, acc_t *a, size_t need) {
  return lg__framer_bytes_reserve(&a->buf, &a->cap, need, 4096, f->max);
}

/* Ends stream `s`'s accumulator: no record open, nothing held. */
static void acc_clear(acc_t *a) {
  a->open = 0;
  a->len = 0;
  a->pieces = 0;
  bytes_trim(&a->buf, &a->cap);
}

/* Starts a record on stream `s` unless one is open. */
static void acc_open(lg_framer_t *f, int s, int64_t t, uint64_t line_off) {
  acc_t *a = &f->acc[s];
  if (a->open)
    return;
  a->open = 1;
  a->partial = 0;
  a->pieces = 0;
  a->len = 0;
  a->time_ns = t;
  a->rec_off = a->pin = a->last_end = line_off;
}

/* Adds `n` body bytes at file offset `p_off` (in the line starting at
 * `line_off`) to the open record of stream `s`. Emits a truncated piece of
 * max bytes whenever more bytes than that are known, so the buffer never
 * holds more than max. */
static int acc_append(lg_framer_t *f, int s, const char *p, size_t n,
                      uint64_t p_off, uint64_t line_off) {
  acc_t *a = &f->acc[s];
  if (a->len == 0)
    a->data_off = p_off;
  while (a->len + n > f->max) {
    size_t take = f->max - a->len;
    uint64_t o = a->pieces ? a->data_off : a->rec_off;
    int rc;
    if (a->len == 0) {
      rc = emit(f, p, take, a->time_ns, o, p_off + take,
                stream_flags(f, s) | LG_REC_TRUNCATED |
                    (a->partial ? LG_REC_CRI_PARTIAL : 0),
                NULL);
    } else {
      if (acc_reserve(f, a, f->max) < 0)
        return -ENOMEM;
      memcpy(a->buf + a->len, p, take);
      rc = emit(f, a->buf, f->max, a->time_ns, o, p_off + take,
                stream_flags(f, s) | LG_REC_TRUNCATED |
                    (a->partial ? LG_REC_CRI_PARTIAL : 0),
                NULL);
      a->len = 0;
    }
    if (rc < 0)
      return rc;
    a->pieces++;
    p += take;
    n -= take;
    p_off += take;
    a->data_off = p_off;
    a->pin = line_off;
  }
  if (n > 0) {
    if (acc_reserve(f, a, a->len + n) < 0)
      return -ENOMEM;
    memcpy(a->buf + a->len, p, n);
    a->len += n;
  }
  return 0;
}

/* Emits the open record of stream `s`, ending at `end`. */
static int acc_finish(lg_framer_t *f, int s, uint64_t end) {
  acc_t *a = &f->acc[s];
  uint32_t flags = stream_flags(f, s) | (a->pieces ? LG_REC_TRUNCATED : 0);
  if (a->partial)
    flags |= LG_REC_CRI_PARTIAL;
  int rc = emit(f, a->buf, a->len, a->time_ns,
                a->pieces ? a->data_off : a->rec_off, end, flags, NULL);
  if (rc < 0)
    return rc;
  acc_clear(a);
  return 0;
}

/* ---- times ----------------------------------------------------------------
 */

/* lg_time_parse_rfc3339, limited to the years whose times fit int64
 * nanoseconds (1677-09-21 to 2262-04-11): lg_time computes years 0-9999
 * and would overflow outside that range. */
int lg__framing_parse_time(const char *s, size_t n, int64_t *ns) {
  if (n < 4)
    return -EINVAL;
  unsigned y = 0;
  for (int k = 0; k < 4; k++) {
    unsigned d = (unsigned)(unsigned char)s[k] - '0';
    if (d > 9)
      return -EINVAL;
    y = y * 10 + d;
  }
  if (y < 1678 || y > 2261)
    return -EINVAL;
  return lg_time_parse_rfc3339(s, n, ns);
}

/* ---- CRI ------------------------------------------------------------------
 */

typedef struct cri_hdr {
  int stream;  /* 0 stdout, 1 stderr */
  int final;   /* tag F (else P) */
  size_t body; /* offset of the message in the line */
  int64_t time_ns;
} cri_hdr_t;

/* Parses the time with a cache: kubelet runtimes write many lines per
 * second, so the text up to the seconds usually repeats and only the
 * fraction changes. The cache holds a time whose text has the fixed
 * common shape `YYYY-MM-DDTHH:MM:SS.fffffffffZ`. */
static int cri_time(lg_framer_t *f, const char *p, size_t n, int64_t *ns) {
  if (n == 30 && p[19] == '.' && p[29] == 'Z' && f->tc_len == 19 &&
      memcmp(p, f->tc_text, 19) == 0) {
    int64_t frac = 0;
    for (int k = 20; k < 29; k++) {
      unsigned d = (unsigned)(unsigned char)p[k] - '0';
      if (d > 9)
        goto slow;
      frac = frac * 10 + d;
    }
    *ns = f->tc_ns + frac;
    return 0;
  }
slow:
  if (lg__framing_parse_time(p, n, ns) < 0)
    return -EINVAL;
  if (n == 30 && p[19] == '.' && p[29] == 'Z') {
    memcpy(f->tc_text, p, 19);
    f->tc_len = 19;
    f->tc_ns = *ns - *ns % 1000000000 - (*ns % 1000000000 < 0 ? 1000000000 : 0);
  }
  return 0;
}

/* Parses `<time> <stdout|stderr> <P|F>[:tags] ` from the first bytes of a
 * line of `n` bytes. `complete`: the line ends at n (so a tag may end the
 * line, with an empty message). Looks at no more than CRI_HDR_MAX bytes,
 * so the answer for a long line does not depend on how much of it is
 * known. Returns 0, or -EINVAL with *err saying why. */
static int cri_parse(lg_framer_t *f, const char *p, size_t n, int complete,
                     cri_hdr_t *h, const char **err) {
  size_t w = n < CRI_HDR_MAX ? n : CRI_HDR_MAX;
  const char *sp = memchr(p, ' ', w);
  if (sp == NULL || cri_time(f, p, (size_t)(sp - p), &h->time_ns) < 0) {
    *err = "cri: bad timestamp";
    return -EINVAL;
  }
  size_t q = (size_t)(sp - p) + 1;
  if (w - q >= 7 && memcmp(p + q, "stdout ", 7) == 0) {
    h->stream = 0;
  } else if (w - q >= 7 && memcmp(p + q, "stderr ", 7) == 0) {
    h->stream = 1;
  } else {
    *err = "cri: bad stream";
    return -EINVAL;
  }
  q += 7;
  if (q < w && (p[q] == 'P' || p[q] == 'F')) {
    h->final = p[q] == 'F';
    q++;
    if (q < w && p[q] == ':') { /* further tags: skip to the space */
      const char *sp2 = memchr(p + q, ' ', w - q);
      q = sp2 ? (size_t)(sp2 - p) : w;
    }
    if (q < w && p[q] == ' ') {
      h->body = q + 1;
      return 0;
    }
    if (q == n && complete) {
      h->body = n;
      return 0;
    }
  }
  *err = "cri: bad tag";
  return -EINVAL;
}

/* ---- the format layer ------------------------------------------------------
 */

static void set_active(lg_framer_t *f, lg_format_t fmt) {
  f->active = fmt;
  f->hold = hold_for(fmt, f->max);
}

/* Auto: decides from a complete line (or the first bytes of a line too
 * long to hold, where only a CRI header can be recognised). */
static void detect(lg_framer_t *f, const char *p, size_t n, int complete) {
  cri_hdr_t h;
  const char *err;
  if (cri_parse(f, p, n, complete, &h, &err) == 0)
    set_active(f, LG_FORMAT_CRI);
  else if (complete && lg__framing_docker_detect(p, n))
    set_active(f, LG_FORMAT_DOCKER);
  else
    set_active(f, LG_FORMAT_LINE);
}

/* A line that is not in the expected format: the raw line is the body. */
static int emit_raw(lg_framer_t *f, const char *p, size_t n, uint64_t off,
                    uint64_t end, int has_lf, uint32_t flags, const char *err) {
  if (has_lf && n > 0 && p[n - 1] == '\r')
    n--;
  return emit_split(f, p, n, f->now, off, off, end,
                    flags | (err ? LG_REC_PARSE_ERROR : 0), err);
}

static int cri_line(lg_framer_t *f, const char *p, size_t n, uint64_t off,
                    uint64_t end, int has_lf) {
  cri_hdr_t h;
  const char *err;
  if (cri_parse(f, p, n, 1, &h, &err) < 0)
    return emit_raw(f, p, n, off, end, has_lf, 0, err);
  acc_t *a = &f->acc[h.stream];
  if (h.final && !a->open) /* the common case: straight into the batch */
    return emit_split(f, p + h.body, n - h.body, h.time_ns, off, off + h.body,
                      end, stream_flags(f, h.stream), NULL);
  acc_open(f, h.stream, h.time_ns, off);
  if (!h.final)
    a->partial = 1;
  int rc = acc_append(f, h.stream, p + h.body, n - h.body, off + h.body, off);
  if (rc < 0)
    return rc;
  a->last_end = end;
  return h.final ? acc_finish(f, h.stream, end) : 0;
}

static int docker_line(lg_framer_t *f, const char *p, size_t n, uint64_t off,
                       uint64_t end, int has_lf) {
  docker_rec_t r;
  const char *err;
  if (n > f->hold)
    return emit_raw(f, p, n, off, end, has_lf, 0,
                    "docker: line longer than the limit");
  cJSON *root = lg__framing_docker_parse(p, n, &r, &err);
  if (root == NULL)
    return emit_raw(f, p, n, off, end, has_lf, 0, err);
  int s = r.stream, rc;
  int final = r.log_len > 0 && r.log[r.log_len - 1] == '\n';
  size_t len = r.log_len - (size_t) final;
  acc_t *a = &f->acc[s];
  if (final && !a->open) {
    /* Decoded bytes map to offsets in the line only approximately (escapes
     * shrink); off + k stays inside the line and keeps piece ids unique. */
    rc = emit_split(f, r.log, len, r.time_ns, off, off, end, stream_flags(f, s),
                    NULL);
  } else {
    acc_open(f, s, r.time_ns, off);
    rc = acc_append(f, s, r.log, len, off, off);
    a->last_end = end;
    if (rc == 0 && final)
      rc = acc_finish(f, s, end);
  }
  cJSON_Delete(root);
  return rc;
}

/* A whole line: `n` bytes at `p` (without the LF), starting at file offset
 * `off` (mid-line when earlier pieces were handed over), ending at `end`.
 * `has_lf` is 0 for a flushed last line. */
static int on_line(lg_framer_t *f, const char *p, size_t n, uint64_t off,
                   uint64_t end, int has_lf) {
  if (f->long_line) {
    if (f->long_kind == LONG_RAW)
      return emit_raw(f, p, n, off, end, has_lf, LG_REC_TRUNCATED, f->long_err);
    int s = f->long_kind;
    int rc = acc_append(f, s, p, n, off, f->line_off);
    if (rc < 0)
      return rc;
    f->acc[s].last_end = end;
    return f->long_final ? acc_finish(f, s, end) : 0;
  }
  if (f->active == LG_FORMAT_AUTO)
    detect(f, p, n, 1);
  switch (f->active) {
  case LG_FORMAT_CRI:
    return cri_line(f, p, n, off, end, has_lf);
  case LG_FORMAT_DOCKER:
    return docker_line(f, p, n, off, end, has_lf);
  default:
    return emit_raw(f, p, n, off, end, has_lf, 0, NULL);
  }
}

/* The held part of the current line is longer than `hold` and more bytes
 * of it follow: hands over a prefix of lb (at least one byte) and returns
 * how many bytes were used, or a negative errno. */
static int64_t on_piece(lg_framer_t *f) {
  uint64_t lb_off = f->pos - f->lb_len;
  if (!f->long_line) {
    f->long_line = 1;
    f->long_kind = LONG_RAW;
    f->long_err = NULL;
    if (f->active == LG_FORMAT_AUTO)
      detect(f, f->lb, f->lb_len, 0);
    if (f->active == LG_FORMAT_CRI) {
      cri_hdr_t h;
      if (cri_parse(f, f->lb, f->lb_len, 0, &h, &f->long_err) == 0) {
        f->long_kind = h.stream;
        f->long_final = h.final;
        acc_open(f, h.stream, h.time_ns, f->line_off);
        if (!h.final)
          f->acc[h.stream].partial = 1;
        int rc = acc_append(f, h.stream, f->lb + h.body, f->lb_len - h.body,
                            lb_off + h.body, f->line_off);
        return rc < 0 ? rc : (int64_t)f->lb_len;
      }
    } else if (f->active == LG_FORMAT_DOCKER) {
      f->long_err = "docker: line longer than the limit";
    }
  } else if (f->long_kind != LONG_RAW) {
    int rc = acc_append(f, f->long_kind, f->lb, f->lb_len, lb_off, f->line_off);
    return rc < 0 ? rc : (int64_t)f->lb_len;
  }
  /* Raw pieces of exactly max bytes; the rest (more than one byte, so a
   * trailing CR can still be told from the body) waits. */
  uint32_t flags = LG_REC_TRUNCATED | (f->long_err ? LG_REC_PARSE_ERROR : 0);
  int rc = emit(f, f->lb, f->max, f->now, lb_off, lb_off + f->max, flags,
                f->long_err);
  return rc < 0 ? rc : (int64_t)f->max;
}

/* ---- the line layer ---------------------------------------------------------
 */

/* Forgets the held line (its bytes have been handed over). */
void lg__framer_clear_line(lg_framer_t *f) {
  f->lb_len = 0;
  f->long_line = 0;
  f->line_off = f->pos;
  bytes_trim(&f->lb, &f->lb_cap);
}

static int lb_append(lg_framer_t *f, const char *p, size_t n) {
  if (lg__framer_bytes_reserve(&f->lb, &f->lb_cap, f->lb_len + n, 1024,
                               f->lb_max) != 0)
    return -ENOMEM;
  memcpy(f->lb + f->lb_len, p, n);
  f->lb_len += n;
  return 0;
}

int lg__framer_feed_now(lg_framer_t *f, const char *buf, size_t len,
                        int64_t now_ns, lg_batch_t *b) {
  const char *p = buf, *e = buf + len;
  int rc;
  f->now = now_ns;
  f->b = b;
  while (p < e) {
    const char *lf = memchr(p, '\n', (size_t)(e - p));
    size_t n = lf ? (size_t)(lf - p) : (size_t)(e - p);
    if (f->lb_len == 0 && !f->long_line) {
      f->line_off = f->pos;
      if (lf != NULL && n <= f->hold) { /* a whole line, used in place */
        rc = on_line(f, p, n, f->pos, f->pos + n + 1, 1);
        if (rc < 0)
          return rc;
        f->pos += n + 1;
        f->line_off = f->pos;
        p = lf + 1;
        continue;
      }
    }
    /* Hold the line's bytes, at most hold + 1 of them. */
    size_t room = f->hold + 1 - f->lb_len;
    size_t take = n < room ? n : room;
    if ((rc = lb_append(f, p, take)) < 0)
      return rc;
    f->pos += take;
    p += take;
    if (f->lb_len > f->hold) {
      while (f->lb_len > f->hold) {
        int64_t used = on_piece(f);
        if (used < 0)
          return (int)used;
        memmove(f->lb, f->lb + used, f->lb_len - (size_t)used);
        f->lb_len -= (size_t)used;
      }
      continue;
    }
    if (take == n && lf != NULL) {
      rc = on_line(f, f->lb, f->lb_len, f->pos - f->lb_len, f->pos + 1, 1);
      if (rc < 0)
        return rc;
      f->pos++;
      p++;
      lg__framer_clear_line(f);
    }
  }
  return 0;
}

int lg__framer_flush_now(lg_framer_t *f, int64_t now_ns, lg_batch_t *b) {
  int rc;
  f->now = now_ns;
  f->b = b;
  if (f->lb_len > 0 || f->long_line) {
    rc = on_line(f, f->lb, f->lb_len, f->pos - f->lb_len, f->pos, 0);
    if (rc < 0)
      return rc;
    lg__framer_clear_line(f);
  }
  /* Open records, older first. */
  int first = f->acc[1].open &&
              (!f->acc[0].open || f->acc[1].rec_off < f->acc[0].rec_off);
  for (int k = 0; k < 2; k++) {
    int s = k ^ first;
    if (f->acc[s].open && (rc = acc_finish(f, s, f->acc[s].last_end)) < 0)
      return rc;
  }
  return 0;
}

void lg_framer_reset(lg_framer_t *f, uint64_t offset) {
  f->pos = offset;
  f->carry = 0;
  lg__framer_clear_line(f);
  for (int s = 0; s < 2; s++)
    acc_clear(&f->acc[s]);
}

uint64_t lg_framer_safe_offset(const lg_framer_t *f) {
  uint64_t safe = f->pos - f->lb_len;
  for (int s = 0; s < 2; s++) {
    const acc_t *a = &f->acc[s];
    if (a->open) {
      uint64_t pin = a->pieces ? a->pin : a->rec_off;
      if (pin < safe)
        safe = pin;
    }
  }
  return safe;
}

size_t lg_framer_pending_bytes(const lg_framer_t *f) {
  size_t n = f->lb_len;
  for (int s = 0; s < 2; s++) {
    const acc_t *a = &f->acc[s];
    if (a->open) /* an open record waits even with an empty body */
      n += a->len ? a->len : 1;
  }
  return n;
}

size_t lg_framer_held_mem(const lg_framer_t *f) {
  size_t n = f->lb_len > 0 ? f->lb_cap : 0;
  for (int s = 0; s < 2; s++)
    if (f->acc[s].open || f->acc[s].len > 0)
      n += f->acc[s].cap;
  return n;
}

lg_format_t lg_framer_format(const lg_framer_t *f) { return f->active; }

/* ---- entry points of feeding and flushing -----------------------------------
 */

int lg_framer_feed(lg_framer_t *f, const char *buf, size_t len, int64_t now_ns,
                   lg_batch_t *b) {
  if (f->defer)
    return lg__framer_feed_deferred(f, buf, len, now_ns, b);
  return lg__framer_feed_now(f, buf, len, now_ns, b);
}

int lg_framer_flush(lg_framer_t *f, int64_t now_ns, lg_batch_t *b) {
  if (f->defer)
    return lg__framer_flush_deferred(f, now_ns, b);
  return lg__framer_flush_now(f, now_ns, b);
}

/* ---- CRI line kinds, for deferred framing's clean cut
 * ------------------------
 */

void lg__framer_cri_probe_init(lg_framer_t *probe, size_t max_record_bytes) {
  memset(probe, 0, sizeof *probe);
  probe->max =
      max_record_bytes > MAX_RECORD_LIMIT ? MAX_RECORD_LIMIT : max_record_bytes;
  probe->hold = hold_for(LG_FORMAT_CRI, probe->max);
}

int lg__framer_cri_kind(lg_framer_t *probe, const char *p, size_t n,
                        int *stream, int *final) {
  cri_hdr_t h;
  const char *err;
  if (n > probe->hold) {
    /* Framed as a long line: its header is parsed from its first bytes,
     * without the end in view. */
    if (cri_parse(probe, p, n, 0, &h, &err) < 0)
      return -1;
  } else if (cri_parse(probe, p, n, 1, &h, &err) < 0) {
    return -1;
  }
  *stream = h.stream;
  *final = h.final;
  return 0;
}
