/*
 * Records an output rejects for good (or that ran out of max_retry_time)
 * go to the dead-letter output: encoded from their batch by that output's
 * encoder, with the reason in "lugger.error", as one submission of the
 * dead-letter output per run of records of one submission (a "child" of
 * that submission). The rejecting output's submission is settled, and can
 * be acked, only once its children are acked. What no dead-letter output
 * takes (or its encoder refuses) is lost: logged with where it was read,
 * counted, and the submission acks with a negative status. Out of memory
 * is not a loss: the records wait (p->dl_later, unsettled, their reasons
 * kept by their request) and are handed on again from the loop. Records
 * an output hands on to the output a reload made in its place
 * (lg__dlv_hand_on) travel as such children too.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_log.h"
#include "outputs/lg_delivery_internal.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_meta.h"

/* A dead-letter submission of ours was acked (or its output went away):
 * the records it holds are settled for the parent. */
void lg__dlv_dl_child_done(sub_t *child, int status) {
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
  lg__dlv_try_acks(pp);
}

/* Queues `c`, a submission of output `dp` holding records of submission
 * `s` of `p`, as a child of `s`: `s` is settled for them once `c` is
 * acked. 0, or -ENOMEM (`c` freed, nothing changed). */
static int enqueue_child(out_priv_t *p, sub_t *s, sub_t *c, out_priv_t *dp) {
  c->parent = s;
  c->parent_out = p;
  c->dl_child = 1;
  c->child_next = p->children;
  p->children = c;
  s->dl_wait++;
  if (lg__dlv_sub_enqueue(dp, c) == 0)
    return 0;
  p->children = c->child_next;
  s->dl_wait--;
  lg__dlv_sub_free(c);
  return -ENOMEM;
}

int lg__dlv_hand_on(out_priv_t *p, sub_t *s, uint32_t first, uint32_t count,
                    out_priv_t *q) {
  const lg_batch_t *b = s->p->batch;
  if (b == NULL || count == 0 || q->closing)
    return -EINVAL; /* records without a batch cannot be encoded again */
  /* In the parent's lane: q acks the lane's later records after them. */
  sub_t *c = lg__dlv_sub_new(q, NULL, s->lane);
  if (c == NULL)
    return -ENOMEM;
  c->p = &c->own;
  lg_encoder_t enc = lg_output_encoder(&q->pub);
  for (uint32_t k = first; k < first + count; k++) {
    int rc = lg_payload_add(&c->own, &enc, b, lg_payload_index(s->p, k), NULL);
    if (rc != 0) {
      lg__dlv_sub_free(c);
      return rc;
    }
  }
  c->handed_to = q;
  /* Settled here before q may ack them (from within the queueing). */
  s->unsettled -= count;
  if (enqueue_child(p, s, c, q) != 0) {
    s->unsettled += count;
    return -ENOMEM;
  }
  return 0;
}

/* The reason record `e` goes to the dead-letter output with, in `buf`. */
static const char *reject_reason(const out_priv_t *p, const struct rejected *e,
                                 char *buf, size_t len) {
  const char *why = e->why != NULL ? e->why : e->expired ? "retry" : "rejected";
  if (!e->expired)
    return why;
  snprintf(buf, len, "still failing after max_retry_time (%" PRId64 " ms): %s",
           p->lim->max_retry_time, why);
  return buf;
}

/* Where record j of `s` was read, for the error log: "at file F offset
 * O", "at offset O", or "given as text" (no batch behind it). */
static void rec_where(const sub_t *s, uint32_t j, char *buf, size_t len) {
  const lg_batch_t *b = s->p->batch;
  uint32_t i = b != NULL ? lg_payload_index(s->p, j) : 0;
  if (b == NULL || i >= b->n) {
    snprintf(buf, len, "given as text");
    return;
  }
  const lg_meta_kv_t *path = lg_meta_find(b->meta, "log.file.path", 13);
  if (path != NULL && path->str != NULL)
    snprintf(buf, len, "at file %.*s offset %" PRIu64,
             (int)(path->str_len > 1024 ? 1024 : path->str_len), path->str,
             b->recs[i].offset);
  else
    snprintf(buf, len, "at offset %" PRIu64, b->recs[i].offset);
}

/* Hands the rejected records `e` (n, all of submission `s`, each with its
 * own reason) to the dead-letter output, as one submission of it, and
 * settles them for `s`. What no dead-letter output takes, and a record it
 * cannot encode, is lost: logged with where it was read, counted, and the
 * submission acks with a negative status. A dead-letter submission whose
 * payload is full (4 GiB: -E2BIG) ends there: the records after it are
 * left to the next call. Returns how many of `e` were settled (> 0), or
 * -ENOMEM: out of memory, nothing was settled, counted or logged (the
 * caller tries again). */
static int dead_letter(out_priv_t *p, sub_t *s, const struct rejected *e,
                       uint32_t n) {
  lg_output_t *dl = p->dl_get != NULL ? p->dl_get(p->dl_ud) : NULL;
  out_priv_t *dp = dl != NULL ? PRIV(dl) : NULL;
  sub_t *c = NULL;
  char why[512], where[1200];
  uint32_t nlost = 0, first_lost = 0;
  int lost_rc = 0;
  size_t lost_bytes = 0;
  if (dp != NULL && dp != p && !dp->closing) {
    c = lg__dlv_sub_new(dp, NULL, 0);
    if (c == NULL)
      return -ENOMEM;
    c->p = &c->own;
    lg_encoder_t enc = lg_output_encoder(dl);
    for (uint32_t k = 0; k < n; k++) {
      uint32_t rlen;
      const char *rdata = lg_payload_rec(s->p, e[k].j, &rlen);
      char msg[1024];
      snprintf(msg, sizeof msg, "output %s rejected the records for good: %s",
               p->pub.name, reject_reason(p, &e[k], why, sizeof why));
      int rc = s->p->batch != NULL
                   ? lg_payload_add(&c->own, &enc, s->p->batch,
                                    lg_payload_index(s->p, e[k].j), msg)
                   : lg_payload_add_text(&c->own, rdata, rlen);
      if (rc == -ENOMEM) {
        lg__dlv_sub_free(c);
        return -ENOMEM;
      }
      if (rc == -E2BIG && c->own.n > 0) {
        n = k; /* this submission is full: the rest go in the next */
        break;
      }
      if (rc != 0) {
        /* The dead-letter output can never send this one (its encoder
         * refuses it): lost, not the others. */
        if (nlost++ == 0) {
          first_lost = e[k].j;
          lost_rc = rc;
        }
        lost_bytes += rlen;
      }
    }
    if (c->own.n == 0) {
      lg__dlv_sub_free(c);
      c = NULL;
    } else if (enqueue_child(p, s, c, dp) != 0) {
      return -ENOMEM; /* c freed */
    }
  } else {
    nlost = n;
    first_lost = e[0].j;
    for (uint32_t k = 0; k < n; k++)
      lost_bytes += lg_payload_len(s->p, e[k].j);
  }
  size_t bytes = 0;
  for (uint32_t k = 0; k < n; k++)
    bytes += lg_payload_len(s->p, e[k].j);
  lg__dlv_count_rejected(p, n, bytes);
  s->unsettled -= n;
  if (c != NULL) {
    lg_log_error(p->component,
                 "%u record(s) rejected for good (%s); sending them to the "
                 "dead-letter output",
                 n - nlost, reject_reason(p, &e[0], why, sizeof why));
    lg__dlv_count_dead_lettered(p, n - nlost);
  }
  if (nlost == 0)
    return (int)n;
  rec_where(s, first_lost, where, sizeof where);
  if (lost_rc != 0)
    lg_log_error(p->component,
                 "%u record(s) rejected for good (%s): the dead-letter output "
                 "%s cannot encode them (%s): lost (the first %s)",
                 nlost, reject_reason(p, &e[0], why, sizeof why), dl->name,
                 strerror(-lost_rc), where);
  else
    lg_log_error(p->component,
                 "%u record(s) rejected for good (%s); no dead-letter output "
                 "takes them: lost (the first %s)",
                 nlost, reject_reason(p, &e[0], why, sizeof why), where);
  lg__dlv_count_lost(p, nlost, lost_bytes);
  if (s->status == 0)
    s->status = -EIO;
  return (int)n;
}

/* Rejected records `e` (n, of one submission) that could not be handed
 * to the dead-letter output for want of memory wait in p->dl_later, with
 * a copy of their reasons, unsettled, and are handed on again from the
 * loop (lg__dlv_dl_later_retry). In the room reserved
 * (lg__dlv_reject_reserve); should that be gone, they are lost (logged
 * with where they were read, counted). */
static void dl_later_add(out_priv_t *p, const struct rejected *e, uint32_t n,
                         req_t *owner) {
  char why[512], where[1200];
  rec_where(e[0].s, e[0].j, where, sizeof where);
  if (p->ndl_later + n > p->dl_later_cap) {
    size_t bytes = 0;
    for (uint32_t k = 0; k < n; k++)
      bytes += lg_payload_len(e[0].s->p, e[k].j);
    lg_log_error(p->component,
                 "%u record(s) rejected for good (%s): out of memory handing "
                 "them to the dead-letter output: lost (the first %s)",
                 n, reject_reason(p, &e[0], why, sizeof why), where);
    lg__dlv_count_rejected(p, n, bytes);
    lg__dlv_count_lost(p, n, bytes);
    e[0].s->unsettled -= n;
    if (e[0].s->status == 0)
      e[0].s->status = -EIO;
    return;
  }
  lg_log_error(p->component,
               "out of memory handing %u rejected record(s) to the "
               "dead-letter output (%s); trying again (the first %s)",
               n, reject_reason(p, &e[0], why, sizeof why), where);
  for (uint32_t k = 0; k < n; k++) {
    p->dl_later[p->ndl_later] = e[k];
    p->dl_later[p->ndl_later++].owner = owner;
  }
  owner->dl_refs += n;
}

int lg__dlv_dl_later_retry(out_priv_t *p) {
  int left = 0;
  for (size_t a = 0, b; a < p->ndl_later; a = b) {
    for (b = a + 1; b < p->ndl_later && p->dl_later[b].s == p->dl_later[a].s;)
      b++;
    int done =
        dead_letter(p, p->dl_later[a].s, p->dl_later + a, (uint32_t)(b - a));
    if (done < 0) {
      left = 1;
      continue;
    }
    b = a + (size_t)done; /* the rest of the run: next time round */
    for (size_t k = a; k < b; k++)
      if (--p->dl_later[k].owner->dl_refs == 0)
        lg__dlv_req_free(p->dl_later[k].owner);
    memmove(p->dl_later + a, p->dl_later + b,
            (p->ndl_later - b) * sizeof *p->dl_later);
    p->ndl_later -= b - a;
    b = a;
  }
  return left;
}

void lg__dlv_dl_later_free(out_priv_t *p) {
  for (size_t k = 0; k < p->ndl_later; k++)
    if (--p->dl_later[k].owner->dl_refs == 0)
      lg__dlv_req_free(p->dl_later[k].owner);
  free(p->dl_later);
  p->dl_later = NULL;
  p->ndl_later = p->dl_later_cap = 0;
}

int lg__dlv_reject_reserve(out_priv_t *p, reject_run_t *rr, uint32_t n) {
  if (n > rr->cap) {
    struct rejected *e = realloc(rr->e, n * sizeof *e);
    if (e == NULL)
      return -ENOMEM;
    rr->e = e;
    rr->cap = n;
  }
  /* Room for all of them to wait, should the dead-letter output's
   * submission need memory that is not there. */
  if (p->ndl_later + n > p->dl_later_cap) {
    struct rejected *w =
        realloc(p->dl_later, (p->ndl_later + n) * sizeof *p->dl_later);
    if (w == NULL)
      return -ENOMEM;
    p->dl_later = w;
    p->dl_later_cap = p->ndl_later + n;
  }
  return 0;
}

void lg__dlv_reject_add(reject_run_t *rr, sub_t *s, uint32_t j, int expired,
                        const char *why) {
  if (rr->n == rr->cap)
    abort(); /* a caller's bug: settling reserves the room first */
  rr->e[rr->n++] = (struct rejected){s, j, expired, why, NULL};
}

void lg__dlv_reject_end(out_priv_t *p, reject_run_t *rr, req_t *owner) {
  for (uint32_t a = 0, b; a < rr->n; a = b) {
    for (b = a + 1; b < rr->n && rr->e[b].s == rr->e[a].s;)
      b++;
    for (uint32_t at = a; at < b;) {
      int done = dead_letter(p, rr->e[at].s, rr->e + at, b - at);
      if (done < 0) {
        dl_later_add(p, rr->e + at, b - at, owner);
        break;
      }
      at += (uint32_t)done;
    }
  }
  free(rr->e);
  *rr = (reject_run_t){0};
}

void lg__dlv_dl_detach(out_priv_t *p) {
  /* Dead-letter submissions still holding our records: their acks no
   * longer reach us. */
  for (sub_t *c = p->children; c != NULL; c = c->child_next) {
    c->parent = NULL;
    c->parent_out = NULL;
  }
  p->children = NULL;
  /* Our own dead-letter submissions for other outputs: those outputs no
   * longer wait for them. */
  for (sub_t *s = p->head; s != NULL; s = s->next) {
    if (s->parent_out == NULL)
      continue;
    for (sub_t **c = &s->parent_out->children; *c != NULL;
         c = &(*c)->child_next)
      if (*c == s) {
        *c = s->child_next;
        break;
      }
  }
}

void lg_output_set_dead_letter(lg_output_t *o, lg_output_t *(*get)(void *ud),
                               void *ud) {
  PRIV(o)->dl_get = get;
  PRIV(o)->dl_ud = ud;
}
