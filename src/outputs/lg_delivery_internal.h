/*
 * lg_delivery_internal.h - the delivery layer's private state, shared by
 * its files and by no one else (output types and the engine see
 * lg_output.h only):
 *   lg_delivery.c              submissions, ordered acks, sending, drain,
 *                              lifecycle
 *   lg_delivery_settle.c       settling answers: delivered, retried with
 *                              backoff, rejected; answers parked for memory
 *   lg_delivery_queue.c        pending records as spans; cutting requests
 *                              from them; split halves
 *   lg_delivery_req.c          the request API output types call (records,
 *                              iov, per-record results)
 *   lg_delivery_dead_letter.c  rejected records to the dead-letter output
 *   lg_delivery_metrics.c      per-output metrics and the /readyz state
 *   lg_delivery_rebuild.c      the request journal: requests in flight at
 *                              a crash made again from the records read
 *                              again (output types with `journal`)
 * Everything here runs on the output's loop thread.
 */
#ifndef LG_DELIVERY_INTERNAL_H
#define LG_DELIVERY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/lg_metrics.h"
#include "outputs/lg_output.h"
#include "outputs/lg_req_journal.h"

typedef struct sub sub_t;

/* A run of records [first, first + count) of one submission's payload. */
typedef struct span {
  sub_t *s;
  uint32_t first, count;
  uint32_t attempt;
  uint32_t cap;        /* > 0: a split half, sent in a request of at most
                          this many records */
  uint64_t first_fail; /* uv_now() ms of its first failure; 0 none */
  size_t bytes;
  uint64_t entry; /* the request journal entry its records are in; 0 none;
                     requests never mix records of different entries */
} span_t;

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
  /* Such a child holding records handed on to output `handed_to` by
   * the output a reload re-created (lg__dlv_hand_on), not rejected ones;
   * NULL otherwise. */
  struct out_priv *handed_to;
  /* Request journal entries holding records of this submission, and how
   * many: an entry is removed once all its submissions are acked (the
   * checkpoint is then past its records: they are not read again). */
  struct sub_entry {
    uint64_t id;
    uint32_t n;
  } * entries;
  uint32_t nentries, entries_cap;
  /* Runs of its records that could not be queued for want of memory
   * (lg__dlv_pend_put), `nwaits` of them, on the output's `waiting` list
   * while there are some: queued from the loop (lg__dlv_pend_requeue),
   * each in its place in submit order. Room for one per run its records
   * were cut into is made when they are (lg__dlv_route_records): a run
   * waits at most once, so waiting never needs memory. */
  span_t *waits;
  uint32_t nwaits, waits_cap;
  sub_t *waiting_next;
};

/* A request of the last run (a journal entry found at the start) waiting
 * for its records to be read again (lg_delivery_rebuild.c). */
typedef struct rebuild {
  lg_rj_entry_t e;
  uint32_t *got;   /* per run: records that came */
  uint8_t *passed; /* per run: no more of its records will come (a later
                      record of its file came, or its file is read from
                      past it) */
  struct held {
    span_t sp;
    uint32_t run;
  } * held; /* the records that came, in arrival order, with their run */
  size_t nheld, cap;
  int partly;  /* some records will not come again (acked before) */
  int lost;    /* some of its records could not be handed on to this
                  output (lg_output_hand_over): given up once adopted */
  int no_room; /* out of memory holding a record of it (sent as a new
                  one): given up once its records are routed */
} rebuild_t;

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
  uint64_t server_until;  /* the backend's last Retry-After ends (uv_now()) */
  unsigned streak;        /* failed rounds of attempts in a row */
  char retry_reason[256]; /* the last failed attempt's, until one delivers */
  uint64_t streak_ns;     /* uv_hrtime() when the streak last grew */
  uint64_t rng;
  uint64_t next_seq;
  uint32_t in_flight;
  int closing, abandoned, finishing, type_closed, acking, ack_again;
  int pumping, pump_again;
  int held; /* lg_output_hold_sends: no request is sent */
  void (*closed_cb)(void *ud);
  void *closed_ud;
  int pressure; /* memory pressure: pending records go without waiting */
  /* Answers not settled for want of memory, oldest first: settled again
   * from the loop at `parked_until` (uv_now() ms); nothing is sent before
   * they are, so their retries keep their place. */
  struct req *parked;
  uint64_t parked_until;
  sub_t *waiting; /* submissions with records not queued yet (sub.waiting) */
  /* Rejected records not handed to the dead-letter output for want of
   * memory (lg_delivery_dead_letter.c), their reasons copied: handed on
   * again from the loop; their submissions wait for them. */
  struct rejected *dl_later;
  size_t ndl_later, dl_later_cap;

  lg_rj_t *rj;         /* request journal (types with `journal`), or NULL */
  rebuild_t *rebuilds; /* requests of the last run still to make again */
  size_t nrebuilds;
  uint64_t rebuild_until; /* uv_now() ms: then waiting ones are given up */
  int stopping; /* the collector stops (lg_output_stopping): rebuilds that
                   wait are kept for the next start, never given up */
  int adopting; /* taking over rebuilds (lg_output_hand_over): none is
                   checked, taken or given up until all their records are
                   here */
  /* The instances of one output name a reload re-created, oldest first:
   * `succ` took over this one's waiting rebuilds (lg_output_hand_over),
   * and records of their files that still come here go on to the
   * newest. */
  struct out_priv *pred, *succ;

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
  lg_out_rec_t *recs; /* allocated with the request (lg__dlv_req_new), so
                         that lg_out_req_recs never fails; filled on its
                         first call */
  int recs_filled;
  struct iovec *iov; /* built on first lg_out_req_iov */
  int niov;
  uint8_t *results;    /* per record, LG_OUT_* + 1 (0: not set) */
  char **reasons;      /* per record, or NULL */
  int64_t retry_after; /* ms the answer asked to wait; -1 none */
  int answer_lost;     /* lg_out_req_set ran out of memory: a per-record
                          result or reason was not kept */
  int partly;          /* made again from some of its journaled records */
  lg_out_journaled_cb journaled; /* waiting for its journal write */
  /* The answer, kept with the request: an answer that could not be
   * settled for want of memory waits on the output's `parked` list to be
   * settled again (nothing of it was), and rejected records that could
   * not be handed to the dead-letter output wait in p->dl_later with
   * their reasons in the request (`dl_refs` of them: it is freed once
   * they are handed on). `reason` is NULL or reason_buf (the reason,
   * cut to what a dead-letter record shows). */
  struct req *next_parked;
  int result;
  const char *reason;
  char reason_buf[1024];
  uint32_t dl_refs;
  /* Made by a fuzz target (tests/fuzz/fuzz_answers.c), in no queue:
   * lg_out_req_done keeps the answer in it (result, reason) for the
   * target to read, counts its calls (2 after the first) and settles
   * nothing. */
  int detached;
} req_t;

/* ---- lg_delivery.c ------------------------------------------------------ */

/* A new submission of `p` with the next sequence number; its payload is
 * set by the caller. NULL when out of memory. */
sub_t *lg__dlv_sub_new(out_priv_t *p, void *ref, uint64_t lane);

/* Frees a submission and the payload it owns. */
void lg__dlv_sub_free(sub_t *s);

/* Queues submission `s` (its payload set) and its records, then sends or
 * acks what it can. 0 or -ENOMEM (`s` is not queued then). */
int lg__dlv_sub_enqueue(out_priv_t *p, sub_t *s);

/* Acks every settled submission that no unsettled earlier submission of
 * the same lane holds back. */
void lg__dlv_try_acks(out_priv_t *p);

/* Has the output look at what it can send from the loop, soon (not from
 * within the caller). */
void lg__dlv_kick(out_priv_t *p);

/* Has the output look at what it can send from the loop at `due`
 * (uv_now() ms), unless it already will before. */
void lg__dlv_arm_timer(out_priv_t *p, uint64_t due);

/* ---- lg_delivery_settle.c ----------------------------------------------- */

/* An answer not settled for want of memory is settled again after this
 * (ms); so are records not queued or dead-lettered for want of memory. */
#define PARKED_RETRY_MS 100

/* Settles the records of request `r` from its answer (r->result,
 * r->reason, per-record results): delivered, queued again in front
 * (backoff), or handed to the dead-letter output. What that takes is
 * reserved first: -ENOMEM when it cannot be, and then nothing is settled
 * (the answer is settled again later, lg__dlv_park_answer); else 0. Does
 * not free `r`. */
int lg__dlv_settle(out_priv_t *p, req_t *r);

/* The answer to `r` could not be settled for want of memory: it waits,
 * with its result and reason, and is settled again from the loop
 * (lg__dlv_settle_parked) before anything else is sent. */
void lg__dlv_park_answer(out_priv_t *p, req_t *r);

/* Settles the parked answers, oldest first. Returns 1 while some still
 * wait (then nothing may be sent), else 0. */
int lg__dlv_settle_parked(out_priv_t *p);

/* Frees the parked answers (abandon, close): their records stay unacked,
 * read again at the next start. */
void lg__dlv_free_parked(out_priv_t *p);

/* ---- lg_delivery_queue.c ------------------------------------------------ */

/* The encoded bytes of records [first, first + count) of `s`. */
size_t lg__dlv_span_bytes(const sub_t *s, uint32_t first, uint32_t count);

/* Makes room for `front` spans put back in front and `back` appended
 * (lg__dlv_pend_push_front, lg__dlv_pend_push_back then need no memory,
 * until the queue changes otherwise). 0 or -ENOMEM. */
int lg__dlv_pend_reserve(out_priv_t *p, size_t front, size_t back);

/* Appends span `s` to the pending records. 0 or -ENOMEM. */
int lg__dlv_pend_push_back(out_priv_t *p, span_t s);

/* Queues span `sp`, one of the runs lg__dlv_route_records cut its
 * submission into (or all of one), at the end of the pending records
 * (`back`: new ones) or in its place in submit order; out of memory, it
 * waits in its submission (sub.waits, room made when the runs were cut)
 * and is queued from the loop (an error is logged). */
void lg__dlv_pend_put(out_priv_t *p, span_t sp, int back);

/* Queues the records waiting for memory (lg__dlv_pend_put). Returns 1 while
 * some still wait, else 0. */
int lg__dlv_pend_requeue(out_priv_t *p);

/* Puts `n` spans (records sent before, to be sent again) back among the
 * pending ones in submit order. 0 or -ENOMEM. */
int lg__dlv_pend_push_front(out_priv_t *p, const span_t *s, size_t n);

/* Puts the records of request `r` (more than one) back in front as two
 * halves, each sent alone. 0, or -ENOMEM (nothing queued; `r` is left as
 * it was). */
int lg__dlv_pend_split(out_priv_t *p, const req_t *r);

/* Takes a request's worth of records from the front of the pending ones
 * (there must be some). NULL when out of memory. */
req_t *lg__dlv_take_request(out_priv_t *p);

/* ---- lg_delivery_req.c -------------------------------------------------- */

/* A request of `p` for at most `n` records, with room for their
 * lg_out_rec_t (output types use lg_out_req_recs without a check). NULL
 * when out of memory. */
req_t *lg__dlv_req_new(out_priv_t *p, uint64_t n);

/* Frees a request and what it built (records, iov, results). */
void lg__dlv_req_free(req_t *r);

/* The layer is done with answered request `r`: freed, unless rejected
 * records waiting in p->dl_later still hold its reasons (then freed with
 * the last of them). */
void lg__dlv_req_release(req_t *r);

/* ---- lg_delivery_rebuild.c ---------------------------------------------- */

/* `n` records of submission `s` are in journal entry `id`. */
void lg__dlv_sub_add_entry(out_priv_t *p, sub_t *s, uint64_t id, uint32_t n);

/* `n` records of submission `s` are no longer in journal entry `id`
 * (handed on to another output, whose submission is in it then). */
void lg__dlv_sub_take_entry(sub_t *s, uint64_t id, uint32_t n);

/* The output that took over the rebuilds of `p` (lg_output_hand_over)
 * and waits for records of the file of submission `s`: the records go
 * there (lg__dlv_hand_on); NULL when none does. */
out_priv_t *lg__dlv_successor_for(const out_priv_t *p, const sub_t *s);

/* Hands records [first, first + count) of submission `s` of `p` on to
 * output `q` as one submission of q's, encoded again from their batch by
 * q's encoder, which q queues like its own (a rebuild of q's takes those
 * of its runs): `s` is settled once q acks them (as a dead-letter
 * submission settles its parent). 0, or a negative errno: nothing
 * handed. */
int lg__dlv_hand_on(out_priv_t *p, sub_t *s, uint32_t first, uint32_t count,
                    out_priv_t *q);

/* Records [first, first + count) of submission `s` of `p`, of a file
 * that `q` (p's successor) waits for, could not be handed on to q
 * (lg__dlv_hand_on failed): p sends them as new ones. q gives up the
 * requests of the last run that wait for some of them: made again
 * without them, as `partly`, the records that came would be taken as
 * written before the crash, and lost if that request wrote nothing. */
void lg__dlv_not_handed(out_priv_t *p, out_priv_t *q, const sub_t *s,
                        uint32_t first, uint32_t count);

/* Queues the records of submission `s` while requests of the last run
 * wait (p->nrebuilds > 0): the records of such a request are held with
 * it, the others go to the pending ones. 0, or -ENOMEM: nothing is
 * taken. */
int lg__dlv_route_records(out_priv_t *p, sub_t *s);

/* Runs whose fingerprint is the hash of a prefix of a file now read with
 * fingerprint `fp` take `fp` (lg_output_file_prefixes). */
void lg__dlv_rebuild_prefixes(out_priv_t *p, uint64_t fp,
                              const uint64_t *prefix, uint32_t n);

/* File `fp` is read from `offset` on (lg_output_file_resumed): runs of
 * it that end before `offset` get no more records. Returns 1 when a
 * rebuild became ready to send, else 0. */
int lg__dlv_rebuild_resumed(out_priv_t *p, uint64_t fp, uint64_t offset);

/* Records of file `fp` at offsets [from, to) will never come
 * (lg_output_file_read; `why`, logged): the rebuilds that wait for some of
 * them are given up. Returns 1 when one was, else 0. */
int lg__dlv_rebuild_read(out_priv_t *p, uint64_t fp, uint64_t from, uint64_t to,
                         const char *why);

/* Gives up the rebuilds still waiting at their time limit (`all`: every
 * one, at close): their records go out like any others. Returns the
 * uv_now() time to check again (0: none wait). Once stopping, none is
 * given up (they are kept for the next start): returns 0. */
uint64_t lg__dlv_rebuild_expire(out_priv_t *p, int all);

/* The records the waiting rebuilds hold; UINT64_MAX when one of them is
 * ready to go (it has work left in this process). */
uint64_t lg__dlv_rebuild_held(const out_priv_t *p);

/* The request of a rebuild that has its records, frozen (exactly them, in
 * their journaled order); NULL when none is ready or out of memory
 * (*none says which). */
req_t *lg__dlv_rebuild_take(out_priv_t *p, int *none);

/* Frees the rebuilds (their entries stay journaled: at abandon and
 * close). */
void lg__dlv_rebuild_free_all(out_priv_t *p);

/* ---- lg_delivery_dead_letter.c ------------------------------------------ */

/* The records an answer rejects for good, gathered while it is settled
 * and handed on to the dead-letter output at its end (runs of one
 * submission go as one dead-letter submission). Zero-initialised. */
typedef struct reject_run {
  struct rejected {
    sub_t *s;
    uint32_t j;
    int expired;       /* retried until max_retry_time ran out; `why` is the
                          last failure's reason */
    const char *why;   /* borrowed until lg__dlv_reject_end; NULL: none */
    struct req *owner; /* in p->dl_later: the request holding `why` */
  } * e;
  uint32_t n, cap;
} reject_run_t;

/* Makes room for `n` records in the run, so that lg__dlv_reject_add needs
 * no memory, and for them in p->dl_later. 0 or -ENOMEM. */
int lg__dlv_reject_reserve(out_priv_t *p, reject_run_t *rr, uint32_t n);

/* Adds record j of `s`, rejected for good because of `why` (kept as a
 * pointer: it must live until lg__dlv_reject_end), to the run, within the
 * room reserved. */
void lg__dlv_reject_add(reject_run_t *rr, sub_t *s, uint32_t j, int expired,
                        const char *why);

/* Hands the gathered records on and frees the run's memory. Records the
 * dead-letter output cannot be given for want of memory wait in
 * p->dl_later, unsettled, their reasons held by request `owner`
 * (whose reasons they are). */
void lg__dlv_reject_end(out_priv_t *p, reject_run_t *rr, struct req *owner);

/* Hands the records waiting in p->dl_later on again. Returns 1 when some
 * still wait (out of memory again), else 0. */
int lg__dlv_dl_later_retry(out_priv_t *p);

/* Frees p->dl_later and the requests it holds (abandon, close: their
 * records stay unacked). */
void lg__dlv_dl_later_free(out_priv_t *p);

/* A dead-letter submission (`child`, of another output) was acked or its
 * output went away: the records it holds are settled for its parent. */
void lg__dlv_dl_child_done(sub_t *child, int status);

/* Output `p` is going away: unlinks it from the dead-letter submissions
 * that hold its records and from those it holds for other outputs. */
void lg__dlv_dl_detach(out_priv_t *p);

/* ---- lg_delivery_metrics.c ---------------------------------------------- */

/* Registers (or finds: by output name) the output's metric series. */
void lg__dlv_metrics_register(out_priv_t *p);

/* The output's state on /readyz and in lugger_output_retrying: `reason`
 * non-NULL while it waits to retry, NULL once it delivers again. */
void lg__dlv_set_retrying(out_priv_t *p, const char *reason);

/* Counting, in the output's counters and its metric series. */
void lg__dlv_count_request_sent(out_priv_t *p);
void lg__dlv_count_request_done(out_priv_t *p, uint64_t start_ns);
void lg__dlv_count_delivered(out_priv_t *p, uint64_t n, uint64_t bytes);
/* `n` records go again; `failed_attempt` counts one failed attempt. */
void lg__dlv_count_retries(out_priv_t *p, uint64_t n, int failed_attempt);
void lg__dlv_count_rejected(out_priv_t *p, uint64_t n, uint64_t bytes);
void lg__dlv_count_dead_lettered(out_priv_t *p, uint64_t n);
void lg__dlv_count_lost(out_priv_t *p, uint64_t n, uint64_t bytes);

#endif
