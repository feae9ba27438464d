/*
 * Settling an answer (lg_out_req_done): each record of the request is
 * delivered, queued again in front with backoff (the whole output waits:
 * nothing newer is sent before the retried records), or handed to the
 * dead-letter output (rejected, or retried past max_retry_time). What
 * settling takes is reserved first; an answer that cannot be settled for
 * want of memory is parked and settled again from the loop, before
 * anything else is sent.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/lg_log.h"
#include "outputs/lg_delivery_internal.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_MAX_MS 30000
/* While the collector stops: the drain (shutdown_timeout, 10 s by
 * default) is shorter than the longest backoff. */
#define BACKOFF_STOP_MAX_MS 1000

static uint64_t backoff_ms(out_priv_t *p) {
  uint64_t max = p->stopping ? BACKOFF_STOP_MAX_MS : BACKOFF_MAX_MS;
  uint64_t d = BACKOFF_BASE_MS;
  for (unsigned i = 1; i < p->streak && d < max; i++)
    d *= 2;
  if (d > max)
    d = max;
  p->rng ^= p->rng << 13;
  p->rng ^= p->rng >> 7;
  p->rng ^= p->rng << 17;
  /* Full jitter (uniform in [0, d]), with a floor of a tenth so a retry
   * never spins. */
  return d / 10 + p->rng % (d - d / 10 + 1);
}

/* Records of request `r` failed and go again (`retry`, `nretry` spans):
 * puts them back first and sets the output's backoff. `delivered` records
 * of `r` were delivered; `reason` is the first retry's. */
static void retry_later(out_priv_t *p, const req_t *r, span_t *retry,
                        size_t nretry, uint64_t delivered, const char *reason,
                        uint64_t now) {
  uint64_t nrec = 0;
  for (size_t i = 0; i < nretry; i++)
    nrec += retry[i].count;
  lg__dlv_count_retries(p, nrec, 1);
  /* frozen_retries: the records go again as they were, those retried and
   * nothing else (the first span caps the request at their count; the
   * rest of them follow it). */
  if (p->pub.vt->frozen_retries || p->pub.vt->journal)
    retry[0].cap = (uint32_t)nrec;
  snprintf(p->retry_reason, sizeof p->retry_reason, "%s",
           reason ? reason : "retry");
  if (p->streak == 0) {
    lg_log_warn(p->component,
                "%" PRIu64 " record(s) not delivered (%s); "
                "retrying with backoff",
                nrec, reason ? reason : "retry");
    lg__dlv_set_retrying(p, reason ? reason : "retry");
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
  if (r->retry_after > 0)
    p->server_until = now + (uint64_t)r->retry_after;
  /* In the room lg__dlv_settle reserved, with nothing called out in
   * between: cannot fail. */
  if (lg__dlv_pend_push_front(p, retry, nretry) != 0)
    abort();
}

/* A request delivered after failures: the backoff ends. */
static void delivering_again(out_priv_t *p) {
  lg_log_info(p->component, "delivering again after %u failed attempts",
              p->streak);
  p->streak = 0;
  p->backoff_until = 0;
  p->server_until = 0;
  p->retry_reason[0] = '\0';
  lg__dlv_set_retrying(p, NULL);
}

/* How a record of an answer settles. */
typedef enum rec_fate {
  FATE_DELIVERED,
  FATE_RETRY,
  FATE_REJECTED,
  FATE_EXPIRED, /* a retry past max_retry_time: rejected */
} rec_fate_t;

/* The fate of record k of span `sp`, the j-th of request `r`, answered
 * `result` (for records without one of their own), and in *why its
 * reason. */
static rec_fate_t rec_fate(const out_priv_t *p, const req_t *r,
                           const span_t *sp, uint32_t j, lg_out_result_t result,
                           const char *reason, uint64_t now, const char **why) {
  lg_out_result_t res = r->results != NULL && r->results[j]
                            ? (lg_out_result_t)(r->results[j] - 1)
                            : result;
  *why = r->reasons != NULL && r->reasons[j] != NULL ? r->reasons[j] : reason;
  if (res == LG_OUT_RETRY && p->lim->max_retry_time > 0 &&
      sp->first_fail != 0 &&
      now >= sp->first_fail + (uint64_t)p->lim->max_retry_time)
    return FATE_EXPIRED;
  return res == LG_OUT_DELIVERED ? FATE_DELIVERED
         : res == LG_OUT_RETRY   ? FATE_RETRY
                                 : FATE_REJECTED;
}

int lg__dlv_settle(out_priv_t *p, req_t *r) {
  lg_out_result_t result = (lg_out_result_t)r->result;
  const char *reason = r->reason;
  uint64_t now = uv_now(p->pub.loop);
  uint64_t delivered = 0, dbytes = 0;
  if (result == LG_OUT_DELIVERED && r->results == NULL) {
    /* The whole request delivered (the common answer): settled span by
     * span, without a walk over its records (a span knows its bytes). */
    for (uint32_t i = 0; i < r->nspans; i++) {
      r->spans[i].s->unsettled -= r->spans[i].count;
      delivered += r->spans[i].count;
      dbytes += r->spans[i].bytes;
    }
    lg__dlv_count_delivered(p, delivered, dbytes);
    if (delivered > 0 && p->streak > 0)
      delivering_again(p);
    return 0;
  }
  /* The room its retries and rejects take, counted without settling
   * anything: a run of retried records is one span at most. */
  size_t nruns = 0;
  uint32_t nrejected = 0, j = 0;
  const char *why;
  for (uint32_t i = 0; i < r->nspans; i++) {
    const span_t *s = &r->spans[i];
    int in_run = 0;
    for (uint32_t k = s->first; k < s->first + s->count; k++, j++) {
      rec_fate_t f = rec_fate(p, r, s, j, result, reason, now, &why);
      if (f == FATE_RETRY && !in_run)
        nruns++;
      in_run = f == FATE_RETRY;
      nrejected += f == FATE_REJECTED || f == FATE_EXPIRED;
    }
  }
  span_t *retry = nruns > 0 ? malloc(nruns * sizeof *retry) : NULL;
  reject_run_t rr = {0};
  if ((nruns > 0 && retry == NULL) || lg__dlv_pend_reserve(p, nruns, 0) != 0 ||
      lg__dlv_reject_reserve(p, &rr, nrejected) != 0) {
    free(retry);
    free(rr.e);
    return -ENOMEM;
  }
  size_t nretry = 0;
  const char *retry_reason = NULL;
  j = 0;
  for (uint32_t i = 0; i < r->nspans; i++) {
    span_t *s = &r->spans[i];
    for (uint32_t k = s->first; k < s->first + s->count; k++, j++) {
      rec_fate_t f = rec_fate(p, r, s, j, result, reason, now, &why);
      uint32_t len = lg_payload_len(s->s->p, k);
      if (f == FATE_DELIVERED) {
        s->s->unsettled--;
        delivered++;
        dbytes += len;
      } else if (f == FATE_RETRY) {
        if (retry_reason == NULL)
          retry_reason = why;
        if (nretry > 0 && retry[nretry - 1].s == s->s &&
            retry[nretry - 1].first + retry[nretry - 1].count == k) {
          retry[nretry - 1].count++;
          retry[nretry - 1].bytes += len;
        } else {
          retry[nretry++] = (span_t){
              .s = s->s,
              .first = k,
              .count = 1,
              .attempt = s->attempt + 1,
              .first_fail = s->first_fail ? s->first_fail : (now ? now : 1),
              .bytes = len,
              .entry = s->entry,
          };
        }
      } else {
        lg__dlv_reject_add(&rr, s->s, k, f == FATE_EXPIRED, why);
      }
    }
  }
  /* The retries go back first, in the room reserved, before the rejects
   * are handed on (which may call out: dead-letter acks). */
  lg__dlv_count_delivered(p, delivered, dbytes);
  if (nretry > 0)
    retry_later(p, r, retry, nretry, delivered, retry_reason, now);
  else if (delivered > 0 && p->streak > 0)
    delivering_again(p);
  free(retry);
  lg__dlv_reject_end(p, &rr, r);
  return 0;
}

void lg__dlv_park_answer(out_priv_t *p, req_t *r) {
  r->next_parked = NULL;
  req_t **pp = &p->parked;
  while (*pp != NULL)
    pp = &(*pp)->next_parked;
  *pp = r;
  lg_log_error(p->component,
               "out of memory settling the answer to a request of %u "
               "record(s); settling it again in %d ms",
               r->pub.n, PARKED_RETRY_MS);
  p->parked_until = uv_now(p->pub.loop) + PARKED_RETRY_MS;
  lg__dlv_arm_timer(p, p->parked_until);
}

int lg__dlv_settle_parked(out_priv_t *p) {
  if (p->parked == NULL)
    return 0;
  uint64_t now = uv_now(p->pub.loop);
  if (now < p->parked_until) {
    lg__dlv_arm_timer(p, p->parked_until);
    return 1;
  }
  while (p->parked != NULL) {
    req_t *r = p->parked;
    if (lg__dlv_settle(p, r) != 0) {
      p->parked_until = now + PARKED_RETRY_MS;
      lg__dlv_arm_timer(p, p->parked_until);
      return 1;
    }
    p->parked = r->next_parked;
    lg__dlv_req_release(r);
  }
  lg__dlv_try_acks(p);
  return 0;
}

void lg__dlv_free_parked(out_priv_t *p) {
  while (p->parked != NULL) {
    req_t *r = p->parked;
    p->parked = r->next_parked;
    lg__dlv_req_free(r);
  }
}
