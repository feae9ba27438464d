/*
 * The delivery layer shared by every output type (lg_output.h): the queue
 * of submitted records, requests, retries, ordered acks, dead-letter,
 * drain and abandon, and the per-output metrics.
 *
 * Records wait in `pending` as spans (a run of consecutive records of one
 * submission). A request takes spans from the front, up to max_batch_size
 * records and max_bytes bytes. When it ends, each record is settled
 * (delivered, or rejected and handed to the dead-letter output) or goes
 * back to the front of `pending` to be retried. A retry puts the whole
 * output in backoff: nothing new is sent before the retried records, so a
 * failing backend gets fewer requests, and an output with max_in_flight 1
 * (file, stdout) keeps its records in submit order even across failures.
 *
 * Metrics, labelled output="<name>" (by name: an output a reload re-creates
 * counts on in the same series):
 *   lugger_output_records_total{result="delivered|rejected|lost"}
 *   lugger_output_bytes_total{result="delivered|rejected|lost"}
 *   lugger_output_retries_total            records sent again
 *   lugger_output_dead_lettered_total      rejected records the dead-letter
 *                                          output took
 *   lugger_output_requests_in_flight       gauge
 *   lugger_output_retrying                 gauge: 1 while in backoff
 *   lugger_output_request_duration_seconds histogram, send to done
 * and, kept from before the delivery layer with the same meaning:
 *   lugger_records_delivered_total, lugger_records_output_failed_total.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/lg_config.h"
#include "core/lg_log.h"
#include "core/lg_metrics.h"
#include "engine/lg_admin_http.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_MAX_MS 30000
#define MAX_BLOCKED_LANES 32

typedef struct sub sub_t;

/* One submission: the records of one payload, acked as a unit. */
struct sub {
  sub_t *next; /* ack order */
  const lg_payload_t *p;
  lg_payload_t own; /* the payload, when the layer made it (text, DL) */
  void *ref;
  uint64_t lane;
  uint64_t seq;       /* submit order within the output */
  uint32_t unsettled; /* records neither delivered nor handed on */
  uint32_t dl_wait;   /* dead-letter submissions not acked yet */
  int status;         /* 0, or -errno once a record is lost */
  /* A dead-letter submission: the submission (of another output) whose
   * rejected records it holds; NULL once that output is gone. */
  sub_t *parent;
  struct out_priv *parent_out;
  sub_t *child_next; /* the parent output's list of such children */
  int dl_child;      /* a dead-letter submission (never acked to the
                        engine) */
};

/* A run of records [first, first + count) of one submission's payload. */
typedef struct span {
  sub_t *s;
  uint32_t first, count;
  uint32_t attempt;
  uint32_t cap;        /* > 0: a split half, sent in a request of at most
                          this many records */
  uint64_t first_fail; /* uv_now() ms of its first failure; 0 none */
  size_t bytes;
} span_t;

typedef struct out_priv {
  lg_output_t pub;
  lg_output_ack_cb ack;
  void *ack_ud;
  lg_output_t *(*dl_get)(void *ud);
  void *dl_ud;
  lg_output_sent_cb sent;
  void *sent_ud;
  const lg_out_limits_t *lim;
  char component[128];

  sub_t *head, *tail; /* unacked submissions, in submit order */
  sub_t *children;    /* DL submissions made from our rejects */

  span_t *pend; /* pending[ph, pt) */
  size_t ph, pt, pcap;
  uint64_t pend_recs, pend_bytes;
  uint64_t pend_since; /* uv_now() when the oldest pending record came */

  uv_timer_t timer;
  uint64_t timer_due; /* 0: not armed */
  uint64_t backoff_until;
  unsigned streak;    /* failed rounds of attempts in a row */
  uint64_t streak_ns; /* uv_hrtime() when the streak last grew */
  uint64_t rng;
  uint64_t next_seq;
  uint32_t in_flight;
  int closing, abandoned, finishing, type_closed, acking, ack_again;
  int pumping, pump_again;
  void (*closed_cb)(void *ud);
  void *closed_ud;

  struct {
    lg_metric_t *delivered, *rejected, *lost;
    lg_metric_t *b_delivered, *b_rejected, *b_lost;
    lg_metric_t *retries, *dead_lettered, *in_flight, *retrying, *duration;
    lg_metric_t *legacy_delivered, *legacy_failed;
  } m;
} out_priv_t;

#define PRIV(o) ((out_priv_t *)(o))

/* A request: the public part, then the spans it took. */
typedef struct req {
  lg_out_req_t pub;
  span_t *spans;
  uint32_t nspans;
  uint64_t start_ns;
  lg_out_rec_t *recs; /* built on first lg_out_req_recs */
  struct iovec *iov;  /* built on first lg_out_req_iov */
  int niov;
  uint8_t *results;    /* per record, LG_OUT_* + 1 (0: not set) */
  char **reasons;      /* per record, or NULL */
  int64_t retry_after; /* ms the answer asked to wait; -1 none */
} req_t;

static void pump(out_priv_t *p);
static void try_acks(out_priv_t *p);
static void maybe_finish(out_priv_t *p);

int lg_out_check_nonneg(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i < 0) {
    snprintf(err, errlen, "must not be negative");
    return -EINVAL;
  }
  return 0;
}

/* ---- metrics ------------------------------------------------------------ */

static void register_metrics(out_priv_t *p) {
  const char *n = p->pub.name;
  const char *rh = "Records the output settled, by result (delivered, "
                   "rejected for good, lost with no dead-letter output).";
  const char *bh = "Encoded bytes of the records the output settled, by "
                   "result.";
  p->m.delivered = lg_metrics_counter("lugger_output_records_total", rh,
                                      "output", n, "result", "delivered", NULL);
  p->m.rejected = lg_metrics_counter("lugger_output_records_total", rh,
                                     "output", n, "result", "rejected", NULL);
  p->m.lost = lg_metrics_counter("lugger_output_records_total", rh, "output", n,
                                 "result", "lost", NULL);
  p->m.b_delivered =
      lg_metrics_counter("lugger_output_bytes_total", bh, "output", n, "result",
                         "delivered", NULL);
  p->m.b_rejected = lg_metrics_counter("lugger_output_bytes_total", bh,
                                       "output", n, "result", "rejected", NULL);
  p->m.b_lost = lg_metrics_counter("lugger_output_bytes_total", bh, "output", n,
                                   "result", "lost", NULL);
  p->m.retries = lg_metrics_counter(
      "lugger_output_retries_total",
      "Records the output sent again after a failed attempt.", "output", n,
      NULL);
  p->m.dead_lettered = lg_metrics_counter(
      "lugger_output_dead_lettered_total",
      "Records the output rejected for good that the dead-letter output "
      "took.",
      "output", n, NULL);
  p->m.in_flight = lg_metrics_gauge("lugger_output_requests_in_flight",
                                    "Requests sent and not yet answered.",
                                    "output", n, NULL);
  p->m.retrying = lg_metrics_gauge(
      "lugger_output_retrying",
      "1 while the output waits to retry records that failed, else 0.",
      "output", n, NULL);
  p->m.duration = lg_metrics_histogram(
      "lugger_output_request_duration_seconds",
      "Time from sending a request to its answer.", "output", n, NULL);
  p->m.legacy_delivered = lg_metrics_counter(
      "lugger_records_delivered_total",
      "Records the output acknowledged as delivered.", "output", n, NULL);
  p->m.legacy_failed = lg_metrics_counter(
      "lugger_records_output_failed_total",
      "Records the output rejected for good.", "output", n, NULL);
}

/* The output's state on /readyz: not ready while it waits to retry. */
static void set_retrying(out_priv_t *p, const char *reason) {
  char key[96];
  snprintf(key, sizeof key, "output.%s", p->pub.name);
  if (reason != NULL) {
    char msg[512];
    snprintf(msg, sizeof msg, "retrying: %s", reason);
    lg_admin_http_set_unready(key, msg);
  } else {
    lg_admin_http_set_unready(key, NULL);
  }
  lg_metric_set(p->m.retrying, reason != NULL);
}

/* ---- pending spans ------------------------------------------------------ */

static size_t span_bytes(const sub_t *s, uint32_t first, uint32_t count) {
  size_t n = 0;
  for (uint32_t j = first; j < first + count; j++)
    n += lg_payload_len(s->p, j);
  return n;
}

static int pend_reserve(out_priv_t *p, size_t extra_front, size_t extra_back) {
  size_t used = p->pt - p->ph;
  if (p->ph >= extra_front && p->pt + extra_back <= p->pcap)
    return 0;
  size_t cap = p->pcap ? p->pcap : 64;
  while (cap < used + extra_front + extra_back + 16)
    cap *= 2;
  span_t *n = malloc(cap * sizeof *n);
  if (n == NULL)
    return -ENOMEM;
  if (used > 0)
    memcpy(n + extra_front, p->pend + p->ph, used * sizeof *n);
  free(p->pend);
  p->pend = n;
  p->pcap = cap;
  p->ph = extra_front;
  p->pt = extra_front + used;
  return 0;
}

static void pend_account(out_priv_t *p, const span_t *s) {
  if (p->pend_recs == 0)
    p->pend_since = uv_now(p->pub.loop);
  p->pend_recs += s->count;
  p->pend_bytes += s->bytes;
}

static int pend_push_back(out_priv_t *p, span_t s) {
  if (pend_reserve(p, 0, 1) != 0)
    return -ENOMEM;
  pend_account(p, &s);
  p->pend[p->pt++] = s;
  return 0;
}

static int span_before(const span_t *a, const span_t *b) {
  return a->s->seq < b->s->seq || (a->s == b->s && a->first < b->first);
}

/* Puts `n` spans (records sent before and to be sent again) back among the
 * pending ones in submit order, so a retry never overtakes records
 * submitted before it (Kafka keeps the order per key). */
static int pend_push_front(out_priv_t *p, const span_t *s, size_t n) {
  if (pend_reserve(p, n, 0) != 0)
    return -ENOMEM;
  for (size_t i = n; i-- > 0;) {
    pend_account(p, &s[i]);
    /* Usually it goes first; find its place from the front. */
    size_t at = p->ph;
    while (at < p->pt && span_before(&p->pend[at], &s[i]))
      at++;
    p->ph--;
    memmove(&p->pend[p->ph], &p->pend[p->ph + 1],
            (at - 1 - p->ph) * sizeof *p->pend);
    p->pend[at - 1] = s[i];
  }
  return 0;
}

/* ---- submissions and acks ---------------------------------------------- */

static void sub_free(sub_t *s) {
  lg_payload_free(&s->own);
  free(s);
}

static void dl_child_done(sub_t *child, int status);

/* Reports a settled submission: to the engine, or for a dead-letter
 * submission to the output whose records it holds. */
static void sub_ack(out_priv_t *p, sub_t *s) {
  if (s->dl_child) {
    dl_child_done(s, s->status);
  } else if (p->ack != NULL) {
    p->ack(p->ack_ud, s->ref, s->status);
  }
}

static int lane_blocked(const uint64_t *lanes, size_t n, uint64_t lane) {
  for (size_t i = 0; i < n; i++)
    if (lanes[i] == lane)
      return 1;
  return 0;
}

/* Acks every settled submission that no unsettled earlier submission of
 * the same lane holds back. */
static void try_acks(out_priv_t *p) {
  if (p->abandoned)
    return;
  if (p->acking) {
    p->ack_again = 1;
    return;
  }
  p->acking = 1;
  do {
    p->ack_again = 0;
    uint64_t blocked[MAX_BLOCKED_LANES];
    size_t nblocked = 0;
    sub_t **pp = &p->head, *prev = NULL;
    while (*pp != NULL) {
      sub_t *s = *pp;
      if (s->unsettled > 0 || s->dl_wait > 0) {
        if (nblocked == MAX_BLOCKED_LANES)
          break; /* conservative: later lanes wait for the next pass */
        if (!lane_blocked(blocked, nblocked, s->lane))
          blocked[nblocked++] = s->lane;
        prev = s;
        pp = &s->next;
        continue;
      }
      if (lane_blocked(blocked, nblocked, s->lane)) {
        prev = s;
        pp = &s->next;
        continue;
      }
      *pp = s->next;
      if (p->tail == s)
        p->tail = prev;
      sub_ack(p, s);
      sub_free(s);
      if (p->abandoned)
        break;
    }
  } while (p->ack_again && !p->abandoned);
  p->acking = 0;
  maybe_finish(p);
}

static sub_t *sub_new(out_priv_t *p, void *ref, uint64_t lane) {
  sub_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->ref = ref;
  s->lane = lane;
  s->seq = p->next_seq++;
  return s;
}

/* Queues submission `s` (its payload set) and its records. */
static int sub_enqueue(out_priv_t *p, sub_t *s) {
  s->unsettled = s->p->n;
  if (s->p->n > 0) {
    span_t sp = {.s = s, .first = 0, .count = s->p->n, .bytes = s->p->data.len};
    if (pend_push_back(p, sp) != 0)
      return -ENOMEM;
  }
  if (p->tail != NULL)
    p->tail->next = s;
  else
    p->head = s;
  p->tail = s;
  if (s->p->n == 0)
    try_acks(p);
  else
    pump(p);
  return 0;
}

int lg_output_submit(lg_output_t *o, const lg_payload_t *pl, void *ref,
                     uint64_t lane) {
  out_priv_t *p = PRIV(o);
  if (p->closing)
    return -ESHUTDOWN;
  sub_t *s = sub_new(p, ref, lane);
  if (s == NULL)
    return -ENOMEM;
  s->p = pl;
  int rc = sub_enqueue(p, s);
  if (rc != 0)
    free(s);
  return rc;
}

int lg_output_submit_text(lg_output_t *o, const char *data, size_t len,
                          void *ref) {
  out_priv_t *p = PRIV(o);
  if (p->closing)
    return -ESHUTDOWN;
  sub_t *s = sub_new(p, ref, 0);
  if (s == NULL)
    return -ENOMEM;
  if (lg_payload_add_lines(&s->own, data, len) != 0) {
    sub_free(s);
    return -ENOMEM;
  }
  s->p = &s->own;
  int rc = sub_enqueue(p, s);
  if (rc != 0)
    sub_free(s);
  return rc;
}

/* ---- dead-letter -------------------------------------------------------- */

/* A dead-letter submission of ours was acked (or its output went away):
 * the records it holds are settled for the parent. */
static void dl_child_done(sub_t *child, int status) {
  out_priv_t *pp = child->parent_out;
  sub_t *parent = child->parent;
  if (pp == NULL || parent == NULL)
    return; /* the parent output is gone (abandoned) */
  for (sub_t **c = &pp->children; *c != NULL; c = &(*c)->child_next)
    if (*c == child) {
      *c = child->child_next;
      break;
    }
  if (status < 0 && parent->status == 0)
    parent->status = status;
  parent->dl_wait--;
  try_acks(pp);
}

/* Hands rejected records j of submission `s` (all of them with their own
 * reason) to the dead-letter output; what no dead-letter output takes is
 * lost (logged, counted, and the submission acks with a negative status).
 * The records are settled for `s` either way. */
static void dead_letter(out_priv_t *p, sub_t *s, const uint32_t *js,
                        char *const *reasons, uint32_t n) {
  lg_output_t *dl = p->dl_get != NULL ? p->dl_get(p->dl_ud) : NULL;
  out_priv_t *dp = dl != NULL ? PRIV(dl) : NULL;
  sub_t *c = NULL;
  if (dp != NULL && dp != p && !dp->closing) {
    c = sub_new(dp, NULL, 0);
    if (c != NULL) {
      c->p = &c->own;
      lg_encoder_t enc = lg_output_encoder(dl);
      for (uint32_t k = 0; k < n && c != NULL; k++) {
        uint32_t rlen;
        const char *rdata = lg_payload_rec(s->p, js[k], &rlen);
        const char *why = reasons[k] != NULL ? reasons[k] : "rejected";
        char msg[1024];
        snprintf(msg, sizeof msg, "output %s rejected the records for good: %s",
                 p->pub.name, why);
        int rc = s->p->batch != NULL
                     ? lg_payload_add(&c->own, &enc, s->p->batch,
                                      lg_payload_index(s->p, js[k]), msg)
                     : lg_payload_add_text(&c->own, rdata, rlen);
        if (rc != 0) {
          lg_log_error(p->component,
                       "cannot encode a rejected record for the dead-letter "
                       "output %s: %s",
                       dl->name, strerror(-rc));
          sub_free(c);
          c = NULL;
        }
      }
    }
  }
  size_t bytes = 0;
  for (uint32_t k = 0; k < n; k++)
    bytes += lg_payload_len(s->p, js[k]);
  lg_metric_add(p->m.rejected, n);
  lg_metric_add(p->m.b_rejected, bytes);
  lg_metric_add(p->m.legacy_failed, n);
  p->pub.errors += n;
  s->unsettled -= n;
  lg_log_error(p->component, "%u record(s) rejected for good (%s); %s", n,
               reasons[0] != NULL ? reasons[0] : "rejected",
               c != NULL ? "sending them to the dead-letter output"
                         : "no dead-letter output takes them: lost");
  if (c != NULL) {
    c->parent = s;
    c->parent_out = p;
    c->dl_child = 1;
    c->child_next = p->children;
    p->children = c;
    s->dl_wait++;
    lg_metric_add(p->m.dead_lettered, n);
    if (sub_enqueue(dp, c) == 0)
      return;
    p->children = c->child_next;
    s->dl_wait--;
    sub_free(c);
  }
  lg_metric_add(p->m.lost, n);
  lg_metric_add(p->m.b_lost, bytes);
  if (s->status == 0)
    s->status = -EIO;
}

/* ---- requests ----------------------------------------------------------- */

static uint64_t backoff_ms(out_priv_t *p) {
  uint64_t d = BACKOFF_BASE_MS;
  for (unsigned i = 1; i < p->streak && d < BACKOFF_MAX_MS; i++)
    d *= 2;
  if (d > BACKOFF_MAX_MS)
    d = BACKOFF_MAX_MS;
  p->rng ^= p->rng << 13;
  p->rng ^= p->rng >> 7;
  p->rng ^= p->rng << 17;
  /* Full jitter (uniform in [0, d]), with a floor of a tenth so a retry
   * never spins. */
  return d / 10 + p->rng % (d - d / 10 + 1);
}

const lg_out_rec_t *lg_out_req_recs(lg_out_req_t *pr) {
  req_t *r = (req_t *)pr;
  if (r->recs != NULL || r->pub.n == 0)
    return r->recs;
  r->recs = malloc(r->pub.n * sizeof *r->recs);
  if (r->recs == NULL)
    return NULL;
  uint32_t j = 0;
  for (uint32_t i = 0; i < r->nspans; i++) {
    const span_t *s = &r->spans[i];
    const lg_payload_t *pl = s->s->p;
    uint32_t idx = lg_payload_index(pl, s->first);
    for (uint32_t k = s->first; k < s->first + s->count; k++) {
      lg_out_rec_t *o = &r->recs[j++];
      o->data = lg_payload_rec(pl, k, &o->len);
      o->meta = lg_payload_meta(pl, k, &o->meta_len);
      o->batch = pl->batch;
      o->index = idx;
      idx = lg_payload_next_index(pl, idx);
    }
  }
  return r->recs;
}

int lg_out_req_iov(lg_out_req_t *pr, const struct iovec **iov, int *niov) {
  req_t *r = (req_t *)pr;
  if (r->iov == NULL && r->nspans > 0) {
    r->iov = malloc(r->nspans * sizeof *r->iov);
    if (r->iov == NULL)
      return -ENOMEM;
    int n = 0;
    for (uint32_t i = 0; i < r->nspans; i++) {
      const span_t *s = &r->spans[i];
      const lg_payload_t *pl = s->s->p;
      uint32_t zlen, last = s->first + s->count - 1;
      char *start = pl->data.data + pl->off[s->first];
      const char *z = lg_payload_rec(pl, last, &zlen);
      size_t len = (size_t)(z + zlen - start);
      if (n > 0 &&
          (char *)r->iov[n - 1].iov_base + r->iov[n - 1].iov_len == start)
        r->iov[n - 1].iov_len += len;
      else
        r->iov[n++] = (struct iovec){start, len};
    }
    r->niov = n;
  }
  *iov = r->iov;
  *niov = r->niov;
  return 0;
}

void lg_out_req_retry_after(lg_out_req_t *pr, int64_t ms) {
  ((req_t *)pr)->retry_after = ms;
}

void lg_out_req_set(lg_out_req_t *pr, uint32_t j, lg_out_result_t result,
                    const char *reason) {
  req_t *r = (req_t *)pr;
  if (j >= r->pub.n || result == LG_OUT_SPLIT)
    return;
  if (r->results == NULL &&
      (r->results = calloc(r->pub.n, sizeof *r->results)) == NULL)
    return; /* the request's result applies to it instead */
  r->results[j] = (uint8_t)(result + 1);
  if (reason != NULL) {
    if (r->reasons == NULL)
      r->reasons = calloc(r->pub.n, sizeof *r->reasons);
    if (r->reasons != NULL) {
      free(r->reasons[j]);
      r->reasons[j] = strdup(reason);
    }
  }
}

static void req_free(req_t *r) {
  if (r->reasons != NULL)
    for (uint32_t j = 0; j < r->pub.n; j++)
      free(r->reasons[j]);
  free(r->reasons);
  free(r->results);
  free(r->recs);
  free(r->iov);
  free(r->spans);
  free(r);
}

/* Takes a request's worth of records from the front of `pending`. */
static req_t *take_request(out_priv_t *p) {
  const lg_out_limits_t *l = p->lim;
  uint64_t max_n = (uint64_t)l->max_batch_size;
  if (p->pend[p->ph].cap > 0 && p->pend[p->ph].cap < max_n)
    max_n = p->pend[p->ph].cap;
  req_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  size_t cap = 0;
  uint64_t n = 0, bytes = 0;
  while (p->ph < p->pt && n < max_n) {
    span_t *s = &p->pend[p->ph];
    if (n > 0 && s->cap > 0)
      break; /* a split half goes alone */
    uint32_t take = 0;
    size_t tb = 0;
    if (n + s->count <= max_n &&
        (n == 0 || bytes + s->bytes <= (uint64_t)l->max_bytes) &&
        (s->count == 1 || bytes + s->bytes <= (uint64_t)l->max_bytes)) {
      take = s->count; /* the whole span fits: no walk over its records */
      tb = s->bytes;
    }
    while (take < s->count && n + take < max_n) {
      size_t rb = lg_payload_len(s->s->p, s->first + take);
      if (n + take > 0 && bytes + tb + rb > (uint64_t)l->max_bytes)
        break;
      tb += rb;
      take++;
    }
    if (take == 0)
      break;
    if (r->nspans == cap) {
      cap = cap ? cap * 2 : 8;
      span_t *ns = realloc(r->spans, cap * sizeof *ns);
      if (ns == NULL) {
        if (r->nspans == 0) {
          free(r);
          return NULL;
        }
        break;
      }
      r->spans = ns;
    }
    span_t piece = *s;
    piece.count = take;
    piece.bytes = tb;
    r->spans[r->nspans++] = piece;
    if (piece.attempt > r->pub.attempt)
      r->pub.attempt = piece.attempt;
    n += take;
    bytes += tb;
    p->pend_recs -= take;
    p->pend_bytes -= tb;
    if (take == s->count) {
      p->ph++;
    } else {
      s->first += take;
      s->count -= take;
      s->bytes -= tb;
      s->cap = 0;
      break; /* full */
    }
  }
  if (p->ph == p->pt)
    p->ph = p->pt = 0;
  else if (p->pend_recs > 0)
    p->pend_since = uv_now(p->pub.loop); /* the rest waits anew */
  r->pub.o = &p->pub;
  r->pub.n = (uint32_t)n;
  r->pub.bytes = bytes;
  return r;
}

static void on_timer(uv_timer_t *t);

static void arm_timer(out_priv_t *p, uint64_t due) {
  if (p->timer_due != 0 && p->timer_due <= due)
    return;
  uint64_t now = uv_now(p->pub.loop);
  p->timer_due = due;
  uv_timer_start(&p->timer, on_timer, due > now ? due - now : 0, 0);
}

static void on_timer(uv_timer_t *t) {
  out_priv_t *p = t->data;
  p->timer_due = 0;
  pump(p);
}

/* Tells the engine, before the request goes out, the last record of each
 * submission in it (lg_output_set_sent). Dead-letter submissions are left
 * out: their records were sent to their own output first. */
static void report_sent(out_priv_t *p, const req_t *r) {
  for (uint32_t i = 0; i < r->nspans; i++) {
    const span_t *sp = &r->spans[i];
    const lg_payload_t *pl = sp->s->p;
    if (sp->s->dl_child || pl->batch == NULL || sp->count == 0)
      continue;
    p->sent(p->sent_ud, sp->s->ref, pl->batch,
            lg_payload_index(pl, sp->first + sp->count - 1));
  }
}

/* Sends requests while there are records, a free request slot, no backoff,
 * and a full request or one whose coalescing delay is over. */
static void pump_inner(out_priv_t *p);

static void pump(out_priv_t *p) {
  if (p->pumping) {
    p->pump_again = 1; /* a send that ended its request at once */
    return;
  }
  p->pumping = 1;
  do {
    p->pump_again = 0;
    pump_inner(p);
  } while (p->pump_again);
  p->pumping = 0;
  maybe_finish(p);
}

static void pump_inner(out_priv_t *p) {
  const lg_out_limits_t *l = p->lim;
  while (!p->abandoned && !p->finishing && p->pend_recs > 0 &&
         p->in_flight < (uint64_t)l->max_in_flight) {
    uint64_t now = uv_now(p->pub.loop);
    if (now < p->backoff_until) {
      arm_timer(p, p->backoff_until);
      return;
    }
    int full = p->pend_recs >= (uint64_t)l->max_batch_size ||
               p->pend_bytes >= (uint64_t)l->max_bytes;
    int retry = p->pend[p->ph].attempt > 0;
    if (!full && !retry && !p->closing && l->max_coalescing_delay > 0 &&
        now < p->pend_since + (uint64_t)l->max_coalescing_delay) {
      arm_timer(p, p->pend_since + (uint64_t)l->max_coalescing_delay);
      return;
    }
    req_t *r = take_request(p);
    if (r == NULL) {
      lg_log_error(p->component, "out of memory making a request; retrying");
      arm_timer(p, now + 100);
      return;
    }
    p->in_flight++;
    lg_metric_set(p->m.in_flight, p->in_flight);
    if (p->sent != NULL)
      report_sent(p, r);
    r->start_ns = uv_hrtime();
    r->retry_after = -1;
    p->pub.vt->send(&p->pub, &r->pub);
  }
}

/* Groups consecutive rejected records of one submission for
 * dead_letter(). */
typedef struct reject_run {
  sub_t *s;
  uint32_t n, cap;
  uint32_t *js;
  char **why;
} reject_run_t;

static void reject_flush(out_priv_t *p, reject_run_t *rr) {
  if (rr->n > 0)
    dead_letter(p, rr->s, rr->js, rr->why, rr->n);
  for (uint32_t k = 0; k < rr->n; k++)
    free(rr->why[k]);
  rr->n = 0;
  rr->s = NULL;
}

static void reject_add(out_priv_t *p, reject_run_t *rr, sub_t *s, uint32_t j,
                       const char *why) {
  if (rr->s != s)
    reject_flush(p, rr);
  if (rr->n == rr->cap) {
    uint32_t cap = rr->cap ? rr->cap * 2 : 16;
    uint32_t *js = realloc(rr->js, cap * sizeof *js);
    char **w = js != NULL ? realloc(rr->why, cap * sizeof *w) : NULL;
    if (js != NULL)
      rr->js = js;
    if (w == NULL) {
      /* Out of memory: hand on what is gathered, then this one alone. */
      reject_flush(p, rr);
      char *one = why != NULL ? strdup(why) : NULL;
      dead_letter(p, s, &j, &one, 1);
      free(one);
      return;
    }
    rr->why = w;
    rr->cap = cap;
  }
  rr->s = s;
  rr->js[rr->n] = j;
  rr->why[rr->n++] = why != NULL ? strdup(why) : NULL;
}

void lg_out_req_done(lg_out_req_t *pr, lg_out_result_t result,
                     const char *reason) {
  req_t *r = (req_t *)pr;
  out_priv_t *p = PRIV(r->pub.o);
  uint64_t now = uv_now(p->pub.loop);
  p->in_flight--;
  lg_metric_set(p->m.in_flight, p->in_flight);
  lg_metric_observe_us(p->m.duration, (uv_hrtime() - r->start_ns) / 1000);
  if (p->abandoned) {
    req_free(r);
    maybe_finish(p);
    return;
  }
  if (result == LG_OUT_SPLIT) {
    if (r->pub.n > 1 && r->results == NULL) {
      /* Two halves, sent one after the other, each alone. */
      uint32_t half = r->pub.n / 2, seen = 0;
      span_t *halves = malloc((r->nspans + 1) * sizeof *halves);
      if (halves != NULL) {
        size_t nh = 0;
        for (uint32_t i = 0; i < r->nspans; i++) {
          span_t s = r->spans[i];
          s.attempt++;
          s.cap = 0;
          if (seen < half && seen + s.count > half) {
            span_t a = s;
            a.count = half - seen;
            a.bytes = span_bytes(a.s, a.first, a.count);
            s.first += a.count;
            s.count -= a.count;
            s.bytes -= a.bytes;
            halves[nh++] = a;
            seen += a.count;
          }
          halves[nh++] = s;
          seen += s.count;
        }
        /* Mark where each half starts: cap = its record count. */
        uint32_t at = 0;
        for (size_t i = 0; i < nh; i++) {
          if (at == 0)
            halves[i].cap = half;
          else if (at == half)
            halves[i].cap = r->pub.n - half;
          at += halves[i].count;
        }
        p->pub.retries += r->pub.n;
        lg_metric_add(p->m.retries, r->pub.n);
        if (pend_push_front(p, halves, nh) == 0) {
          free(halves);
          req_free(r);
          pump(p);
          return;
        }
        free(halves);
      }
      result = LG_OUT_RETRY; /* out of memory: retry it whole */
    } else {
      result = LG_OUT_REJECTED;
    }
  }
  span_t *retry = NULL;
  size_t nretry = 0, retry_cap = 0;
  reject_run_t rr = {0};
  const char *retry_reason = NULL;
  uint64_t delivered = 0, dbytes = 0;
  uint32_t j = 0;
  for (uint32_t i = 0; i < r->nspans; i++) {
    span_t *s = &r->spans[i];
    for (uint32_t k = s->first; k < s->first + s->count; k++, j++) {
      lg_out_result_t res = r->results != NULL && r->results[j]
                                ? (lg_out_result_t)(r->results[j] - 1)
                                : result;
      const char *why =
          r->reasons != NULL && r->reasons[j] != NULL ? r->reasons[j] : reason;
      uint32_t len = lg_payload_len(s->s->p, k);
      if (res == LG_OUT_RETRY && p->lim->max_retry_time > 0 &&
          s->first_fail != 0 &&
          now >= s->first_fail + (uint64_t)p->lim->max_retry_time) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "still failing after max_retry_time (%" PRId64 " ms): %s",
                 p->lim->max_retry_time, why ? why : "retry");
        reject_add(p, &rr, s->s, k, msg);
        continue;
      }
      if (res == LG_OUT_DELIVERED) {
        s->s->unsettled--;
        delivered++;
        dbytes += len;
      } else if (res == LG_OUT_RETRY) {
        if (retry_reason == NULL)
          retry_reason = why;
        if (nretry > 0 && retry[nretry - 1].s == s->s &&
            retry[nretry - 1].first + retry[nretry - 1].count == k) {
          retry[nretry - 1].count++;
          retry[nretry - 1].bytes += len;
        } else {
          if (nretry == retry_cap) {
            retry_cap = retry_cap ? retry_cap * 2 : 8;
            span_t *nr = realloc(retry, retry_cap * sizeof *nr);
            if (nr == NULL) {
              /* Out of memory: this record is left unsettled, so its
               * batch is never acked and is read again after a restart. */
              lg_log_error(p->component, "out of memory; a record is left "
                                         "unacked");
              retry_cap = nretry;
              continue;
            }
            retry = nr;
          }
          /* frozen_retries: the request goes again as it was, the same
           * records and nothing else (the first span caps the request at
           * their count; the rest of them follow it). */
          uint32_t fcap =
              p->pub.vt->frozen_retries && nretry == 0 ? r->pub.n : 0;
          retry[nretry++] = (span_t){
              .s = s->s,
              .first = k,
              .count = 1,
              .cap = fcap,
              .attempt = s->attempt + 1,
              .first_fail = s->first_fail ? s->first_fail : (now ? now : 1),
              .bytes = len,
          };
        }
      } else {
        reject_add(p, &rr, s->s, k, why);
      }
    }
  }
  reject_flush(p, &rr);
  free(rr.js);
  free(rr.why);
  p->pub.records_out += delivered;
  p->pub.bytes_out += dbytes;
  lg_metric_add(p->m.delivered, delivered);
  lg_metric_add(p->m.b_delivered, dbytes);
  lg_metric_add(p->m.legacy_delivered, delivered);
  if (nretry > 0) {
    uint64_t nrec = 0;
    for (size_t i = 0; i < nretry; i++)
      nrec += retry[i].count;
    p->pub.errors++;
    p->pub.retries += nrec;
    lg_metric_add(p->m.retries, nrec);
    if (p->streak == 0) {
      lg_log_warn(p->component,
                  "%" PRIu64 " record(s) not delivered (%s); "
                  "retrying with backoff",
                  nrec, retry_reason ? retry_reason : "retry");
      set_retrying(p, retry_reason ? retry_reason : "retry");
    }
    /* Requests that were already in flight when the last failure came
     * back fail for the same cause: one round, one step of backoff. */
    /* A request that delivered some of its records made progress (a
     * backend shedding part of a bulk: per-item 429s): its retries wait
     * one first step, and the streak does not grow. */
    if (delivered > 0 && p->streak > 1)
      p->streak = 1;
    if (p->streak == 0 || (r->start_ns >= p->streak_ns && delivered == 0)) {
      p->streak++;
      p->streak_ns = uv_hrtime();
      p->backoff_until = now + backoff_ms(p);
    }
    /* The backend said when (Retry-After): not sooner than that. */
    if (r->retry_after > 0 && p->backoff_until < now + (uint64_t)r->retry_after)
      p->backoff_until = now + (uint64_t)r->retry_after;
    if (pend_push_front(p, retry, nretry) != 0)
      lg_log_error(p->component, "out of memory; records left unacked");
  } else if (delivered > 0 && p->streak > 0) {
    lg_log_info(p->component, "delivering again after %u failed attempts",
                p->streak);
    p->streak = 0;
    p->backoff_until = 0;
    set_retrying(p, NULL);
  }
  free(retry);
  req_free(r);
  try_acks(p);
  pump(p);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void timer_closed(uv_handle_t *h) {
  out_priv_t *p = h->data;
  /* Dead-letter submissions still holding our records: their acks no
   * longer reach us. */
  for (sub_t *c = p->children; c != NULL; c = c->child_next) {
    c->parent = NULL;
    c->parent_out = NULL;
  }
  while (p->head != NULL) {
    sub_t *s = p->head;
    p->head = s->next;
    if (s->parent_out != NULL) {
      /* Our own dead-letter submissions for another output: that output
       * no longer waits for them. */
      for (sub_t **c = &s->parent_out->children; *c != NULL;
           c = &(*c)->child_next)
        if (*c == s) {
          *c = s->child_next;
          break;
        }
    }
    sub_free(s);
  }
  free(p->pend);
  set_retrying(p, NULL);
  void (*cb)(void *) = p->closed_cb;
  void *ud = p->closed_ud;
  free((void *)p->pub.typed_conf);
  free(p);
  if (cb != NULL)
    cb(ud);
}

void lg_output_closed(lg_output_t *o) {
  out_priv_t *p = PRIV(o);
  p->type_closed = 1;
  uv_close((uv_handle_t *)&p->timer, timer_closed);
}

static void maybe_finish(out_priv_t *p) {
  if (!p->closing || p->finishing || p->in_flight > 0 || p->acking ||
      p->pumping)
    return;
  if (!p->abandoned && (p->head != NULL || p->pend_recs > 0))
    return;
  p->finishing = 1;
  uv_timer_stop(&p->timer);
  p->pub.vt->close(&p->pub);
}

void lg_output_close(lg_output_t *o, void (*cb)(void *ud), void *ud) {
  out_priv_t *p = PRIV(o);
  if (p->closing)
    return;
  p->closing = 1;
  p->closed_cb = cb;
  p->closed_ud = ud;
  pump(p);
  maybe_finish(p);
}

void lg_output_abandon(lg_output_t *o) {
  out_priv_t *p = PRIV(o);
  if (!p->closing || p->abandoned || p->finishing)
    return;
  if (p->pend_recs > 0 || p->head != NULL)
    lg_log_warn(p->component,
                "gave up on %" PRIu64 " unsent record(s) at exit (read again "
                "at the next start)",
                p->pend_recs);
  p->abandoned = 1;
  p->ph = p->pt = 0;
  p->pend_recs = p->pend_bytes = 0;
  uv_timer_stop(&p->timer);
  p->timer_due = 0;
  if (p->in_flight > 0 && p->pub.vt->cancel != NULL)
    p->pub.vt->cancel(&p->pub);
  maybe_finish(p);
}

void lg_output_reopen(lg_output_t *o) {
  out_priv_t *p = PRIV(o);
  if (!p->closing && o->vt->reopen != NULL)
    o->vt->reopen(o);
}

void lg_output_set_dead_letter(lg_output_t *o, lg_output_t *(*get)(void *ud),
                               void *ud) {
  PRIV(o)->dl_get = get;
  PRIV(o)->dl_ud = ud;
}

void lg_output_set_sent(lg_output_t *o, lg_output_sent_cb cb, void *ud) {
  PRIV(o)->sent = cb;
  PRIV(o)->sent_ud = ud;
}

int lg_output_retrying(const lg_output_t *o) {
  return ((const out_priv_t *)o)->streak > 0;
}

lg_encoder_t lg_output_encoder(const lg_output_t *o) {
  return (lg_encoder_t){o->vt->encode, o->typed_conf};
}

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
  out_priv_t *p = calloc(1, sizeof *p);
  void *tc = calloc(1, vt->conf_size > sizeof(lg_out_limits_t)
                           ? vt->conf_size
                           : sizeof(lg_out_limits_t));
  if (p == NULL || tc == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", conf->name);
    free(p);
    free(tc);
    return NULL;
  }
  char why[256];
  if (conf->opts == NULL ||
      lg_opt_fill(vt->options, conf->opts, tc, why, sizeof why) != 0) {
    snprintf(err, errlen, "outputs.%s.%s", conf->name,
             conf->opts == NULL ? "options: missing" : why);
    free(p);
    free(tc);
    return NULL;
  }
  lg_output_t *o = &p->pub;
  o->vt = vt;
  o->conf = conf;
  o->typed_conf = tc;
  o->name = conf->name;
  o->index = index;
  o->loop = loop;
  p->ack = ack;
  p->ack_ud = ack_ud;
  p->lim = tc;
  snprintf(p->component, sizeof p->component, "output.%s", conf->name);
  p->rng = (uint64_t)(uintptr_t)p ^ (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15u;
  if (p->rng == 0)
    p->rng = 1;
  if (p->lim->max_batch_size < 1 || p->lim->max_bytes < 1 ||
      p->lim->max_in_flight < 1) {
    snprintf(err, errlen,
             "outputs.%s: max_batch_size, max_bytes and max_in_flight must "
             "be greater than 0",
             conf->name);
    free(p);
    free(tc);
    return NULL;
  }
  if (vt->init(o, tc, err, errlen) < 0) {
    free(p);
    free(tc);
    return NULL;
  }
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  register_metrics(p);
  return o;
}
