/*
 * The delivery layer's queue: records wait in `pending` as spans (a run of
 * consecutive records of one submission), in submit order. A request takes
 * spans from the front, up to max_batch_size records and max_bytes bytes;
 * records to retry go back to the front, before newer ones. A span with a
 * `cap` starts a request of its own of at most that many records: the
 * halves of a split request, and the records of a frozen retry.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_log.h"
#include "outputs/lg_delivery_internal.h"

size_t lg__dlv_span_bytes(const sub_t *s, uint32_t first, uint32_t count) {
  size_t n = 0;
  for (uint32_t j = first; j < first + count; j++)
    n += lg_payload_len(s->p, j);
  return n;
}

int lg__dlv_pend_reserve(out_priv_t *p, size_t extra_front, size_t extra_back) {
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

int lg__dlv_pend_push_back(out_priv_t *p, span_t s) {
  if (lg__dlv_pend_reserve(p, 0, 1) != 0)
    return -ENOMEM;
  pend_account(p, &s);
  p->pend[p->pt++] = s;
  return 0;
}

static int span_before(const span_t *a, const span_t *b) {
  return a->s->seq < b->s->seq || (a->s == b->s && a->first < b->first);
}

/* A retry never overtakes records submitted before it (Kafka keeps the
 * order per key). */
int lg__dlv_pend_push_front(out_priv_t *p, const span_t *s, size_t n) {
  if (lg__dlv_pend_reserve(p, n, 0) != 0)
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

void lg__dlv_pend_put(out_priv_t *p, span_t sp, int back) {
  if ((back ? lg__dlv_pend_push_back(p, sp)
            : lg__dlv_pend_push_front(p, &sp, 1)) == 0)
    return;
  sub_t *s = sp.s;
  /* Room for each run its records were cut into was made then, and a run
   * is put once: it cannot run out. */
  if (s->nwaits == s->waits_cap)
    abort();
  if (s->nwaits == 0) {
    s->waiting_next = p->waiting;
    p->waiting = s;
  }
  s->waits[s->nwaits++] = sp;
  lg_log_error(p->component,
               "out of memory queueing %u record(s); queueing them again "
               "in 100 ms",
               sp.count);
}

int lg__dlv_pend_requeue(out_priv_t *p) {
  while (p->waiting != NULL) {
    sub_t *s = p->waiting;
    /* Each run in its place in submit order, so in any order here. */
    if (lg__dlv_pend_push_front(p, s->waits, s->nwaits) != 0)
      return 1;
    s->nwaits = 0;
    p->waiting = s->waiting_next;
    s->waiting_next = NULL;
  }
  return 0;
}

req_t *lg__dlv_take_request(out_priv_t *p) {
  const lg_out_limits_t *l = p->lim;
  uint64_t max_n = (uint64_t)l->max_batch_size;
  if (p->pend[p->ph].cap > 0 && p->pend[p->ph].cap < max_n)
    max_n = p->pend[p->ph].cap;
  /* Room for the records' lg_out_rec_t comes with the request: made now,
   * before any record is taken, so a request that goes out can always
   * give them. */
  req_t *r = lg__dlv_req_new(p, max_n < p->pend_recs ? max_n : p->pend_recs);
  if (r == NULL)
    return NULL;
  size_t cap = 0;
  uint64_t n = 0, bytes = 0;
  uint64_t entry = p->pend[p->ph].entry;
  while (p->ph < p->pt && n < max_n) {
    span_t *s = &p->pend[p->ph];
    if (n > 0 && s->cap > 0)
      break; /* a split half goes alone */
    if (s->entry != entry)
      break; /* a journaled request's records go alone */
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
          lg__dlv_req_free(r);
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

int lg__dlv_pend_split(out_priv_t *p, const req_t *r) {
  /* Two halves, sent one after the other, each alone. */
  uint32_t half = r->pub.n / 2, seen = 0;
  span_t *halves = malloc((r->nspans + 1) * sizeof *halves);
  if (halves == NULL)
    return -ENOMEM;
  size_t nh = 0;
  for (uint32_t i = 0; i < r->nspans; i++) {
    span_t s = r->spans[i];
    s.attempt++;
    s.cap = 0;
    if (seen < half && seen + s.count > half) {
      span_t a = s;
      a.count = half - seen;
      a.bytes = lg__dlv_span_bytes(a.s, a.first, a.count);
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
  int rc = lg__dlv_pend_push_front(p, halves, nh);
  free(halves);
  return rc;
}
