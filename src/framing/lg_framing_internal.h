/*
 * lg_framing_internal.h - what the framer's files share: the framer's
 * state and the framing steps deferred framing calls. Not for use outside
 * src/framing/.
 *
 *   lg_framing.c           the framer: lines, CRI, Docker, auto, records
 *   lg_framing_deferred.c  deferred framing: bytes kept raw in the batch,
 *                          cut at a clean line end, framed on the worker
 *   lg_framing_docker.c    parsing a Docker json-file line
 */
#ifndef LG_FRAMING_INTERNAL_H
#define LG_FRAMING_INTERNAL_H

#include <cjson/cJSON.h>

#include "framing/lg_framing.h"

/* A CRI header (`<time> <stream> <tag> `) must lie within this many bytes:
 * the longest RFC 3339 time is 35 bytes, so 64 leaves room for a tag with
 * `:`-separated extras. */
#define CRI_HDR_MAX 64

/* Joins the pieces of one stream's record (CRI P...F, Docker pieces). */
typedef struct acc {
  char *buf;
  size_t len, cap;
  int open;          /* a record of this stream has started */
  int pieces;        /* truncated pieces already emitted */
  int64_t time_ns;   /* time of the first chunk */
  uint64_t rec_off;  /* offset of the line of the first chunk */
  uint64_t data_off; /* file offset of buf[0] (for pieces after the first) */
  uint64_t pin;      /* line start of the line holding buf[0] */
  uint64_t last_end; /* end of the last line that added to the record */
  int partial;       /* CRI: the record began with a partial (P) line */
} acc_t;

struct lg_framer {
  lg_format_t format; /* as configured */
  lg_format_t active; /* in use; LG_FORMAT_AUTO until detected */
  size_t max;         /* max_record_bytes */
  size_t hold;        /* longest line handed over whole */
  uint64_t pos;       /* file offset of the next byte fed */
  uint64_t line_off;  /* file offset where the current line started */
  char *lb;           /* bytes of the current line, ending at pos */
  size_t lb_len, lb_cap, lb_max;
  int long_line;  /* pieces of the current line were handed over */
  int long_kind;  /* LONG_RAW or the CRI stream of the long line */
  int long_final; /* CRI long line: tag F */
  const char *long_err;
  int64_t long_time;
  acc_t acc[2]; /* 0 stdout, 1 stderr */
  /* Deferred framing (lg_framer_set_deferred): `carry` says lb holds the
   * bytes after the last cut, which start where the framer held nothing
   * (whole lines and perhaps a partial last one), not a line in progress. */
  int defer;
  int carry;
  /* Per feed. */
  int64_t now;
  lg_batch_t *b;
  /* CRI time cache: the last header's text up to the seconds, its zone
   * and the epoch seconds they give. */
  char tc_text[CRI_HDR_MAX];
  size_t tc_len;
  int64_t tc_ns;
};

/* Frames `len` bytes now, as lg_framer_feed does for a framer that is not
 * deferred: records completed by them go to `b`, the rest is held.
 * Returns 0, or -ENOMEM / -E2BIG (state as after lg_framer_feed). */
int lg__framer_feed_now(lg_framer_t *f, const char *buf, size_t len,
                        int64_t now_ns, lg_batch_t *b);

/* Emits everything held now, as lg_framer_flush does for a framer that is
 * not deferred. Returns 0 or -ENOMEM. */
int lg__framer_flush_now(lg_framer_t *f, int64_t now_ns, lg_batch_t *b);

/* Forgets the held line (lb) and starts the next line at f->pos; frees a
 * large line buffer. */
void lg__framer_clear_line(lg_framer_t *f);

/* Makes room for `need` bytes in the buffer *buf of capacity *cap: the
 * capacity doubles from `first` bytes, up to `max` (the callers bound
 * `need` by it). Returns 0, or -ENOMEM with the buffer unchanged. */
int lg__framer_bytes_reserve(char **buf, size_t *cap, size_t need, size_t first,
                             size_t max);

/* lg_framer_feed and lg_framer_flush of a deferred framer
 * (lg_framing_deferred.c); same arguments, returns and errors. */
int lg__framer_feed_deferred(lg_framer_t *f, const char *buf, size_t len,
                             int64_t now_ns, lg_batch_t *b);
int lg__framer_flush_deferred(lg_framer_t *f, int64_t now_ns, lg_batch_t *b);

/* Readies `probe` (a framer on the caller's stack, nothing allocated, no
 * destroy) for lg__framer_cri_kind on lines of a file framed with
 * `max_record_bytes`. */
void lg__framer_cri_probe_init(lg_framer_t *probe, size_t max_record_bytes);

/* CRI: the stream (0 stdout, 1 stderr) and tag (final: 1 for F, 0 for P) of
 * a complete line of `n` bytes (LF not included), if the framer takes it
 * for a CRI line (the same parse, a long line's header from its first
 * bytes). Returns 0, or -1 for a line the framer frames raw. */
int lg__framer_cri_kind(lg_framer_t *probe, const char *p, size_t n,
                        int *stream, int *final);

/* lg_time_parse_rfc3339 (RFC 3339 text of `n` bytes -> *ns, Unix epoch
 * nanoseconds), limited to the years 1678-2261 whose times fit int64
 * nanoseconds. Returns 0 or -EINVAL. */
int lg__framing_parse_time(const char *s, size_t n, int64_t *ns);

/* One Docker json-file line, parsed. */
typedef struct docker_rec {
  const char *log;
  size_t log_len;
  int stream;
  int64_t time_ns;
} docker_rec_t;

/* Parses one json-file line of `n` bytes (no LF): an object with a string
 * `log` (decoded, NUL bytes kept, r->log_len its length), `stream` "stdout"
 * or "stderr" and an RFC 3339 `time`; only blanks may follow it. Returns
 * the cJSON tree (the caller cJSON_Deletes it; r->log points into it), or
 * NULL with *err the record's parse error ("docker: invalid JSON", "docker:
 * not a JSON object", "docker: no log string", "docker: bad stream",
 * "docker: bad time"). */
cJSON *lg__framing_docker_parse(const char *p, size_t n, docker_rec_t *r,
                                const char **err);

/* 1 when the line of `n` bytes is a JSON object with a "log" member (auto
 * format detection), else 0. */
int lg__framing_docker_detect(const char *p, size_t n);

#endif
