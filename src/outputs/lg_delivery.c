/*
 * The delivery layer shared by every output type (lg_output.h): taking
 * submissions, sending requests, taking their answers (settled in
 * lg_delivery_settle.c: delivered; retried with backoff; rejected to the
 * dead-letter output), acking submissions in order per lane, drain and
 * abandon, and the output's lifecycle. Its private state and its other
 * files: lg_delivery_internal.h.
 *
 * A retry puts the whole output in backoff: nothing new is sent before the
 * retried records, so a failing backend gets fewer requests, and an output
 * with max_in_flight 1 (file, stdout) keeps its records in submit order
 * even across failures.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/lg_config.h"
#include "core/lg_log.h"
#include "outputs/lg_delivery_internal.h"
#include "pipeline/lg_batch.h"

#define MAX_BLOCKED_LANES 32

static void pump(out_priv_t *p);
static void maybe_finish(out_priv_t *p);

int lg_out_check_nonneg(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i < 0) {
    snprintf(err, errlen, "must not be negative");
    return -EINVAL;
  }
  return 0;
}

/* ---- submissions and acks ---------------------------------------------- */

void lg__dlv_sub_free(sub_t *s) {
  lg_payload_free(&s->own);
  free(s->entries);
  free(s->waits);
  free(s);
}

/* Reports a settled submission: to the engine, or for a dead-letter
 * submission to the output whose records it holds. */
static void sub_ack(out_priv_t *p, sub_t *s) {
  if (s->dl_child) {
    lg__dlv_dl_child_done(s, s->status);
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

/* Submission `s` is acked: its records leave the journal entries they are
 * in, and the runs of those entries that are its records are marked acked,
 * so that after a crash the request (answered, since they were acked) is
 * not waited for those records, which are not read again. */
static void settle_entries(out_priv_t *p, const sub_t *s) {
  const lg_payload_t *pl = s->p;
  for (uint32_t k = 0; k < s->nentries; k++) {
    if (s->entries[k].n == 0)
      continue; /* its records were handed on (lg__dlv_sub_take_entry) */
    if (pl != NULL && pl->batch != NULL && pl->n > 0) {
      const lg_batch_t *b = pl->batch;
      uint64_t lo = b->recs[lg_payload_index(pl, 0)].offset;
      uint64_t hi = b->recs[lg_payload_index(pl, pl->n - 1)].offset;
      lg_rj_settle_run(p->rj, s->entries[k].id, b->fingerprint,
                       lo < hi ? lo : hi, lo < hi ? hi : lo);
    }
    lg_rj_settle(p->rj, s->entries[k].id, s->entries[k].n);
  }
}

void lg__dlv_try_acks(out_priv_t *p) {
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
      settle_entries(p, s);
      sub_ack(p, s);
      lg__dlv_sub_free(s);
      if (p->abandoned)
        break;
    }
  } while (p->ack_again && !p->abandoned);
  p->acking = 0;
  maybe_finish(p);
}

sub_t *lg__dlv_sub_new(out_priv_t *p, void *ref, uint64_t lane) {
  sub_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->ref = ref;
  s->lane = lane;
  s->seq = p->next_seq++;
  return s;
}

int lg__dlv_sub_enqueue(out_priv_t *p, sub_t *s) {
  s->unsettled = s->p->n;
  /* Records of a file that a newer instance of this output waits for
   * (requests of the last run it took over) go on to it; a batch under
   * the old config came after the reload. */
  out_priv_t *q = s->p->n > 0 ? lg__dlv_successor_for(p, s) : NULL;
  int handed = q != NULL && lg__dlv_hand_on(p, s, 0, s->p->n, q) == 0;
  if (q != NULL && !handed)
    lg__dlv_not_handed(p, q, s, 0, s->p->n);
  if (handed) {
    /* settled once q acks them: linked below, acked from there */
  } else if (s->p->n > 0 && p->nrebuilds > 0) {
    if (lg__dlv_route_records(p, s) != 0)
      return -ENOMEM;
  } else if (s->p->n > 0) {
    span_t sp = {.s = s, .first = 0, .count = s->p->n, .bytes = s->p->data.len};
    if (lg__dlv_pend_push_back(p, sp) != 0)
      return -ENOMEM;
  }
  if (p->tail != NULL)
    p->tail->next = s;
  else
    p->head = s;
  p->tail = s;
  if (s->p->n == 0 || handed)
    lg__dlv_try_acks(p);
  else
    pump(p);
  return 0;
}

int lg_output_submit(lg_output_t *o, const lg_payload_t *pl, void *ref,
                     uint64_t lane) {
  out_priv_t *p = PRIV(o);
  if (p->closing)
    return -ESHUTDOWN;
  sub_t *s = lg__dlv_sub_new(p, ref, lane);
  if (s == NULL)
    return -ENOMEM;
  s->p = pl;
  int rc = lg__dlv_sub_enqueue(p, s);
  if (rc != 0)
    free(s);
  return rc;
}

int lg_output_submit_text(lg_output_t *o, const char *data, size_t len,
                          void *ref) {
  out_priv_t *p = PRIV(o);
  if (p->closing)
    return -ESHUTDOWN;
  sub_t *s = lg__dlv_sub_new(p, ref, 0);
  if (s == NULL)
    return -ENOMEM;
  if (lg_payload_add_lines(&s->own, data, len) != 0) {
    lg__dlv_sub_free(s);
    return -ENOMEM;
  }
  s->p = &s->own;
  int rc = lg__dlv_sub_enqueue(p, s);
  if (rc != 0)
    lg__dlv_sub_free(s);
  return rc;
}

/* ---- sending ----------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

void lg__dlv_arm_timer(out_priv_t *p, uint64_t due) {
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

void lg__dlv_kick(out_priv_t *p) {
  if (!p->finishing && !p->abandoned)
    lg__dlv_arm_timer(p, uv_now(p->pub.loop));
}

/* Tells the engine, before the request goes out, the last record of each
 * submission in it (lg_output_set_sent). Dead-letter submissions are left
 * out: their records were sent to their own output first (not those
 * handed on by a re-created output: they were not). */
static void report_sent(out_priv_t *p, const req_t *r) {
  int any = 0;
  for (uint32_t i = 0; i < r->nspans; i++) {
    const span_t *sp = &r->spans[i];
    const lg_payload_t *pl = sp->s->p;
    if ((sp->s->dl_child && sp->s->handed_to == NULL) || pl->batch == NULL ||
        sp->count == 0)
      continue;
    p->sent(p->sent_ud, sp->s->ref, pl->batch,
            lg_payload_index(pl, sp->first + sp->count - 1));
    any = 1;
  }
  if (any)
    p->sent(p->sent_ud, NULL, NULL, 0); /* all of the request's are in */
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
  if (!p->abandoned && lg__dlv_settle_parked(p))
    return;
  if (!p->abandoned && p->ndl_later > 0) {
    /* Rejected records that waited for memory: dead-lettered now. */
    if (lg__dlv_dl_later_retry(p))
      lg__dlv_arm_timer(p, uv_now(p->pub.loop) + PARKED_RETRY_MS);
    lg__dlv_try_acks(p);
  }
  if (p->nrebuilds > 0 && !p->abandoned) {
    uint64_t due = lg__dlv_rebuild_expire(p, 0);
    if (due != 0)
      lg__dlv_arm_timer(p, due);
  }
  /* Records that waited for memory to be queued: queued first, nothing
   * sent before them (submit order). */
  if (!p->abandoned && p->waiting != NULL && lg__dlv_pend_requeue(p)) {
    lg__dlv_arm_timer(p, uv_now(p->pub.loop) + PARKED_RETRY_MS);
    return;
  }
  while (!p->abandoned && !p->finishing && !p->held &&
         (p->pend_recs > 0 || p->nrebuilds > 0) &&
         p->in_flight < (uint64_t)l->max_in_flight) {
    uint64_t now = uv_now(p->pub.loop);
    if (now < p->backoff_until) {
      lg__dlv_arm_timer(p, p->backoff_until);
      return;
    }
    /* A request in flight before a restart, made again, goes first. */
    int none = 1;
    req_t *r = p->nrebuilds > 0 ? lg__dlv_rebuild_take(p, &none) : NULL;
    if (none && p->pend_recs == 0)
      return;
    if (none) {
      int full = p->pend_recs >= (uint64_t)l->max_batch_size ||
                 p->pend_bytes >= (uint64_t)l->max_bytes;
      int retry = p->pend[p->ph].attempt > 0 || p->pend[p->ph].entry != 0;
      /* Under memory pressure what waits is sent now: smaller requests
       * rather than reading paused until the delay is over; and so at the
       * stop, whose drain (shutdown_timeout) is shorter than a delay of
       * minutes. */
      if (!full && !retry && !p->closing && !p->pressure && !p->stopping &&
          l->max_coalescing_delay > 0 &&
          now < p->pend_since + (uint64_t)l->max_coalescing_delay) {
        lg__dlv_arm_timer(p, p->pend_since + (uint64_t)l->max_coalescing_delay);
        return;
      }
      r = lg__dlv_take_request(p);
    }
    if (r == NULL) {
      lg_log_error(p->component, "out of memory making a request; retrying");
      lg__dlv_arm_timer(p, now + 100);
      return;
    }
    lg__dlv_count_request_sent(p);
    if (p->sent != NULL)
      report_sent(p, r);
    r->start_ns = uv_hrtime();
    r->retry_after = -1;
    p->pub.vt->send(&p->pub, &r->pub);
  }
}

void lg_out_req_done(lg_out_req_t *pr, lg_out_result_t result,
                     const char *reason) {
  req_t *r = (req_t *)pr;
  out_priv_t *p = PRIV(r->pub.o);
#ifdef LUGGER_FUZZ_HOOKS
  if (r->detached) {
    r->detached++; /* 2 once done; more would be a second end */
    r->result = (int)result;
    snprintf(r->reason_buf, sizeof r->reason_buf, "%s", reason ? reason : "");
    return;
  }
#endif
  lg__dlv_count_request_done(p, r->start_ns);
  if (p->abandoned) {
    lg__dlv_req_free(r);
    maybe_finish(p);
    return;
  }
  if (r->answer_lost) {
    /* Some record's own answer was not kept (out of memory): taking the
     * request's for it could count a rejected record as delivered. Every
     * record goes again (those delivered twice, at least once). */
    lg_log_error(p->component,
                 "out of memory keeping the answer to each of %u record(s); "
                 "sending them again",
                 r->pub.n);
    r->answer_lost = 0;
    result = LG_OUT_RETRY;
    reason = "out of memory keeping the answer";
    for (uint32_t j = 0; r->reasons != NULL && j < r->pub.n; j++)
      free(r->reasons[j]);
    free(r->reasons);
    free(r->results);
    r->reasons = NULL;
    r->results = NULL;
  }
  if (result == LG_OUT_SPLIT) {
    if (r->pub.n > 1 && r->results == NULL) {
      if (lg__dlv_pend_split(p, r) == 0) {
        lg__dlv_count_retries(p, r->pub.n, 0);
        lg__dlv_req_free(r);
        pump(p);
        return;
      }
      result = LG_OUT_RETRY; /* out of memory: retry it whole */
    } else {
      result = LG_OUT_REJECTED;
    }
  }
  r->result = (int)result;
  r->reason = NULL;
  if (reason != NULL) {
    snprintf(r->reason_buf, sizeof r->reason_buf, "%s", reason);
    r->reason = r->reason_buf;
  }
  /* Behind an answer still parked, so that retries keep their order. */
  if (p->parked != NULL || lg__dlv_settle(p, r) != 0)
    lg__dlv_park_answer(p, r);
  else
    lg__dlv_req_release(r);
  lg__dlv_try_acks(p);
  pump(p);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void timer_closed(uv_handle_t *h) {
  out_priv_t *p = h->data;
  lg__dlv_dl_detach(p);
  if (p->pred != NULL)
    p->pred->succ = p->succ;
  if (p->succ != NULL)
    p->succ->pred = p->pred;
  while (p->head != NULL) {
    sub_t *s = p->head;
    p->head = s->next;
    lg__dlv_sub_free(s);
  }
  free(p->pend);
  lg__dlv_free_parked(p);
  lg__dlv_dl_later_free(p);
  lg__dlv_rebuild_free_all(p);
  lg_rj_close(p->rj);
  lg__dlv_set_retrying(p, NULL);
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
  /* Removed by a reload: requests of the last run that still wait for
   * records go out with what came of them (the records are here, the
   * checkpoint moves on); re-created, the new output took them over
   * (lg_output_hand_over), none is left. At the stop they are kept for
   * the next start (lg__dlv_rebuild_expire does nothing then). */
  lg__dlv_rebuild_expire(p, 1);
  pump(p);
  maybe_finish(p);
}

void lg_output_abandon(lg_output_t *o) {
  out_priv_t *p = PRIV(o);
  if (!p->closing || p->abandoned || p->finishing)
    return;
  /* Every record not delivered: pending, in the requests cancelled below,
   * waiting for a retry or for the dead-letter output. Those held for
   * requests of the last run have their own message. */
  uint64_t kept = lg__dlv_rebuild_held(p);
  uint64_t left = 0;
  for (const sub_t *s = p->head; s != NULL; s = s->next)
    left += s->unsettled;
  if (kept != UINT64_MAX)
    left = left > kept ? left - kept : 0;
  /* Why: the cancelled requests had no answer yet; records waiting for
   * a retry, what their last attempt met (a backend down). */
  char why[sizeof p->retry_reason + 40] = "";
  if (p->retry_reason[0] != '\0')
    snprintf(why, sizeof why, "; waiting to retry after: %s", p->retry_reason);
  if (left > 0 || p->in_flight > 0)
    lg_log_warn(p->component,
                "shutdown timeout: %" PRIu64 " record(s) not delivered "
                "(%" PRIu32 " request(s) in flight cancelled, %" PRIu64
                " record(s) not sent%s): left unacked, the checkpoint stays "
                "before them and they are sent again at the next start",
                left, p->in_flight, p->pend_recs, why);
  if (kept > 0 && kept != UINT64_MAX)
    lg_log_info(p->component,
                "%" PRIu64 " record(s) held for requests of the last run "
                "that wait for records not read again before the stop: "
                "kept unacked, read again and made into those requests at "
                "the next start",
                kept);
  p->abandoned = 1;
  lg__dlv_free_parked(p);
  p->waiting = NULL; /* their submissions are freed at close */
  lg__dlv_dl_later_free(p);
  lg__dlv_rebuild_free_all(p); /* their entries stay: made again next time */
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

void lg_output_set_pressure(lg_output_t *o, int on) {
  out_priv_t *p = PRIV(o);
  if (p->pressure == !!on)
    return;
  p->pressure = !!on;
  /* From the loop, not from within the engine's accounting that called
   * this: a send may end and ack at once. */
  if (on && !p->closing && p->pend_recs > 0)
    lg__dlv_arm_timer(p, uv_now(o->loop));
}

void lg_output_hold_sends(lg_output_t *o, int on) {
  out_priv_t *p = PRIV(o);
  p->held = !!on;
  if (!on)
    pump(p);
}

void lg_output_stopping(lg_output_t *o) {
  out_priv_t *p = PRIV(o);
  p->stopping = 1;
  /* Records that wait out a backoff go again now, and later retries wait
   * at most BACKOFF_STOP_MAX_MS: after a long outage the backoff (up to
   * 30 s) outlasts the drain, which would end without trying a backend
   * that is back meanwhile. A Retry-After of the backend's own still
   * holds. */
  uint64_t now = uv_now(o->loop);
  if (p->backoff_until > now)
    p->backoff_until = p->server_until > now ? p->server_until : now;
  /* From the loop, not from within the engine's stop that called this. */
  if (!p->closing && p->pend_recs > 0)
    lg__dlv_arm_timer(p, uv_now(o->loop));
}

/* 1 when every child of submission `s` holds records handed on to an
 * output that has nothing more to do in this process (its rebuilds keep
 * them for the next start). */
static int children_kept(const out_priv_t *p, const sub_t *s) {
  for (const sub_t *c = p->children; c != NULL; c = c->child_next)
    if (c->parent == s &&
        (c->handed_to == NULL || !lg_output_drained(&c->handed_to->pub)))
      return 0;
  return 1;
}

int lg_output_drained(lg_output_t *o) {
  const out_priv_t *p = PRIV(o);
  if (p->pend_recs > 0 || p->in_flight > 0)
    return 0;
  uint64_t unsettled = 0;
  for (const sub_t *s = p->head; s != NULL; s = s->next) {
    if (s->dl_wait > 0 && !children_kept(p, s))
      return 0;
    unsettled += s->unsettled;
  }
  uint64_t held = lg__dlv_rebuild_held(p);
  return unsettled == 0 || (p->stopping && held == unsettled);
}

void lg_output_file_resumed(lg_output_t *o, uint64_t fingerprint,
                            uint64_t offset) {
  out_priv_t *p = PRIV(o);
  if (p->nrebuilds == 0 || p->abandoned)
    return;
  /* A rebuild made ready goes out from the loop, not from within the
   * source's opening of the file that told us. */
  if (lg__dlv_rebuild_resumed(p, fingerprint, offset))
    lg__dlv_arm_timer(p, uv_now(o->loop));
}

int lg_output_waits_for_files(const lg_output_t *o) {
  const out_priv_t *p = (const out_priv_t *)o;
  return p->nrebuilds > 0 && !p->abandoned;
}

void lg_output_file_read(lg_output_t *o, uint64_t fingerprint, uint64_t from,
                         uint64_t to) {
  out_priv_t *p = PRIV(o);
  if (p->nrebuilds > 0 && !p->abandoned && !p->closing &&
      lg__dlv_rebuild_read(p, fingerprint, from, to,
                           "some of its records were read before a reload "
                           "created this output"))
    lg__dlv_arm_timer(
        p, uv_now(o->loop)); /* what it held goes out from the loop */
}

void lg_output_file_prefixes(lg_output_t *o, uint64_t fingerprint,
                             const uint64_t *prefix, uint32_t n) {
  out_priv_t *p = PRIV(o);
  if (p->nrebuilds > 0 && !p->abandoned)
    lg__dlv_rebuild_prefixes(p, fingerprint, prefix, n);
}

void lg_output_set_sent(lg_output_t *o, lg_output_sent_cb cb, void *ud) {
  PRIV(o)->sent = cb;
  PRIV(o)->sent_ud = ud;
}

int lg_output_retrying(const lg_output_t *o) {
  return ((const out_priv_t *)o)->streak > 0;
}

lg_encoder_t lg_output_encoder(const lg_output_t *o) {
  const lg_out_limits_t *lim = o->typed_conf;
  return (lg_encoder_t){o->vt->encode, o->typed_conf,
                        o->vt->rejects || lim->max_retry_time > 0};
}

/* The typed conf of `conf` (lg_opt_fill: it points into conf->opts),
 * checked: the delivery limits, then the type's check. NULL with `err`
 * filled when anything is wrong. */
static void *typed_conf(const lg_output_type_t *vt,
                        const struct lg_conf_output *conf, char *err,
                        size_t errlen) {
  void *tc = calloc(1, vt->conf_size > sizeof(lg_out_limits_t)
                           ? vt->conf_size
                           : sizeof(lg_out_limits_t));
  if (tc == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", conf->name);
    return NULL;
  }
  char why[256];
  if (conf->opts == NULL ||
      lg_opt_fill(vt->options, conf->opts, tc, why, sizeof why) != 0) {
    snprintf(err, errlen, "outputs.%s.%s", conf->name,
             conf->opts == NULL ? "options: missing" : why);
    free(tc);
    return NULL;
  }
  const lg_out_limits_t *lim = tc;
  if (lim->max_batch_size < 1 || lim->max_bytes < 1 || lim->max_in_flight < 1) {
    snprintf(err, errlen,
             "outputs.%s: max_batch_size, max_bytes and max_in_flight must "
             "be greater than 0",
             conf->name);
    free(tc);
    return NULL;
  }
  if (vt->check != NULL && vt->check(conf->name, tc, err, errlen) < 0) {
    free(tc);
    return NULL;
  }
  return tc;
}

static const lg_output_type_t *conf_type(const struct lg_conf_output *conf,
                                         char *err, size_t errlen) {
  const lg_output_type_t *vt = conf->vt;
  if (vt == NULL)
    vt = lg_output_type_find(conf->type);
  if (vt == NULL)
    snprintf(err, errlen, "outputs.%s: unknown output type '%s'", conf->name,
             conf->type);
  return vt;
}

int lg_output_check_conf(const struct lg_conf_output *conf, char *err,
                         size_t errlen) {
  const lg_output_type_t *vt = conf_type(conf, err, errlen);
  if (vt == NULL)
    return -EINVAL;
  void *tc = typed_conf(vt, conf, err, errlen);
  if (tc == NULL)
    return -EINVAL;
  free(tc);
  return 0;
}

lg_output_t *lg_output_create(uv_loop_t *loop,
                              const struct lg_conf_output *conf, int index,
                              lg_output_ack_cb ack, void *ack_ud, char *err,
                              size_t errlen) {
  const lg_output_type_t *vt = conf_type(conf, err, errlen);
  if (vt == NULL)
    return NULL;
  void *tc = typed_conf(vt, conf, err, errlen);
  if (tc == NULL)
    return NULL;
  out_priv_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", conf->name);
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
  if (vt->init(o, tc, err, errlen) < 0) {
    free(p);
    free(tc);
    return NULL;
  }
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  lg__dlv_metrics_register(p);
  return o;
}
