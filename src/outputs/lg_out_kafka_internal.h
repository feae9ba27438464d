/*
 * lg_out_kafka_internal.h - what the `kafka` output's files share: its
 * typed config, the requests in flight, the counters and the output's
 * state. Not for use outside src/outputs/lg_out_kafka*.c.
 *
 *   lg_out_kafka.c          options, the librdkafka configuration, the
 *                           producer's lifecycle (create, restart after a
 *                           fatal error, purge and destroy), loop handles,
 *                           the output type, counters accessor
 *   lg_out_kafka_produce.c  per record: encoding (worker thread), producing
 *                           requests' records, delivery reports, errors and
 *                           their counters (loop thread)
 */
#ifndef LG_OUT_KAFKA_INTERNAL_H
#define LG_OUT_KAFKA_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "core/lg_metrics.h"
#include "outputs/lg_out_kafka.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"

/* The typed config (filled from kafka_options). */
typedef struct kafka_conf {
  lg_out_limits_t limits;
  lg_opt_strv_t brokers;
  char *topic;
  char *topic_field;
  char *key;
  int headers;
  int compression; /* index in the choices */
  char *acks;
  int idempotence;
  int64_t linger_ms;
  int64_t max_batch_bytes;
  lg_opt_strmap_t librdkafka;
} kafka_conf_t;

struct kout;

/* One message: its request and its record there (the message opaque). */
typedef struct kmsg {
  struct kreq *q;
  uint32_t j;
} kmsg_t;

/* A request being produced. */
typedef struct kreq {
  struct kreq *next, *prev; /* in flight */
  lg_out_req_t *r;
  const lg_out_rec_t *recs;
  kmsg_t *msgs;
  uint32_t produced;    /* records handed to librdkafka (or settled at once) */
  uint64_t produced_at; /* uv_now() ms: the oldest record with librdkafka
                           (produced when none of its was outstanding) */
  uint32_t settled;     /* records with a result */
  uint8_t *done;        /* per record: has a result */
} kreq_t;

/* Counters (lg_out_kafka.h): written on the loop thread, read from any. */
typedef struct kcounters {
  _Atomic uint64_t delivered, bytes, err_retriable, err_permanent, in_flight,
      retries, restarts, rdk_retries;
  /* Per librdkafka error code; a slot's code is set once, before its count
   * is first incremented (release), and never changes. */
  struct {
    _Atomic int used;
    int code, permanent;
    _Atomic uint64_t n;
    lg_metric_t *m;              /* lugger_kafka_errors_total{class, error} */
  } err[LG_KAFKA_ERR_SLOTS + 1]; /* the last one is "other" */
  /* The same, in the process-wide registry (/metrics), labelled by output.
   * The atomics above are this output's own (lg_output_kafka_stats); a
   * registry series outlives an output of the same name (reload). */
  lg_metric_t *m_delivered, *m_bytes, *m_in_flight, *m_retries, *m_restarts;
} kcounters_t;

typedef struct kout {
  lg_output_t *o;
  const kafka_conf_t *c;
  kcounters_t ctr;
  rd_kafka_conf_t *conf_tpl; /* a copy to recreate the producer from */
  char component[128];
  rd_kafka_t *rk;
  rd_kafka_queue_t *mainq;
  int pipefd[2];
  uv_poll_t poll;
  uv_timer_t tick;
  int handles_open;
  int idemp_auto; /* idempotence on by default: turn it off if unsupported */
  int in_flight_user; /* `librdkafka` sets max.in.flight(.requests.per.
                         connection): lugger leaves it alone */

  kreq_t *head, *tail; /* requests in flight, in send order */
  int stalled;         /* queue full: wait for reports or the tick */
  int fatal;           /* the producer hit a fatal error: recreate it */
  int restarting;      /* destroying the old producer: ignore its reports */
  uint64_t restart_at; /* uv_now() ms: earliest next restart */
  uint64_t restart_backoff_ms; /* 0 until a restart did not help */
  uint64_t rdk_retries_seen;   /* txretries of the current producer */
  int down_logged, retry_logged;
  int cancelled, closing;
  int polling;       /* inside rd_kafka_poll: the handle must live on */
  int close_pending; /* close asked for while polling */
  int pumping, pump_again;
  /* A delivery failed (retriable): lugger produces nothing more, purges
   * what librdkafka still queues, and once every message has its report
   * hands every record not delivered back to the layer at once, which
   * sends them again in submit order (lg__kafka_rewind). */
  int rewinding;
  uint64_t rewind_at;   /* uv_now() ms when it started */
  char rewind_why[256]; /* the failure that started it */
  /* message.timeout.ms (or delivery.timeout.ms) from `librdkafka`, applied
   * by lugger (librdkafka's stays infinite): a record not delivered within
   * it starts a rewind. 0: none. */
  int64_t msg_timeout_ms;
} kout_t;

/* The output type's encode (worker thread, lg_output.h): the message value
 * is record `i` of `b` as its JSON object (with `error`, if not NULL, as the
 * record's error field), without the trailing "\n", in out->data; its
 * topic (topic_field), key and headers go to out->meta as side data.
 * `conf` is the output's kafka_conf_t. Returns 0 or a negative errno. */
int lg__kafka_encode(const void *conf, const lg_batch_t *b, uint32_t i,
                     const char *error, lg_payload_t *out);

/* Produces the records waiting in the requests in flight, in send order,
 * until librdkafka's local queue is full (k->stalled) or the producer is
 * gone, fatal or closing. Reentrant calls (a request ended while producing
 * sends the next) are folded into the running one. Loop thread. */
void lg__kafka_pump(kout_t *k);

/* Answers every request in flight: records without a result yet get
 * LG_OUT_RETRY with reason `why` (the layer sends them again after its
 * backoff, in submit order: it sends nothing before the last request has
 * ended), and each request ends; a rewind ends with it. Loop thread. */
void lg__kafka_fail_in_flight(kout_t *k, const char *why);

/* The rewind after a failed delivery (kout_t.rewinding), one step: while
 * messages are with librdkafka, purges its queues (RD_KAFKA_PURGE_F_QUEUE:
 * messages not on the wire, including those it put back after a failed
 * request) and serves their reports. Messages in flight are waited for
 * (they may be delivered), with a message timeout for that long at most:
 * then they are purged too (RD_KAFKA_PURGE_F_INFLIGHT; the broker may
 * still write them: copies). Once none is left, every record not
 * delivered is answered LG_OUT_RETRY (lg__kafka_fail_in_flight). Called
 * after each round of rd_kafka_poll; does nothing when not rewinding.
 * Loop thread. */
void lg__kafka_rewind(kout_t *k);

/* With a message timeout (kout_t.msg_timeout_ms): when the oldest record
 * librdkafka holds was produced that long ago, starts a rewind
 * (lg__kafka_rewind), which takes back every record not delivered, the
 * newer ones too. librdkafka's own timeout fails only the records past it
 * and sends the newer ones as soon as the broker answers (in the same pass
 * of its broker thread), ahead of the older ones lugger produces again.
 * Loop thread. */
void lg__kafka_check_timeout(kout_t *k);

/* Adds `d` (negative: subtracts) to the messages in flight (counter and
 * gauge lugger_kafka_messages_in_flight). */
void lg__kafka_in_flight_add(kout_t *k, int64_t d);

/* Counts one retry (lugger_kafka_retries_total). */
void lg__kafka_count_retry(kout_t *k);

/* librdkafka callbacks, set on the producer's configuration with `k` as
 * the opaque; they run on the loop thread, inside rd_kafka_poll.
 * lg__kafka_dr_cb: a message's delivery report (rd_kafka_conf_set_dr_msg_cb)
 * sets its record's result: delivered, rejected (a permanent error) or
 * retry. lg__kafka_stats_cb: the statistics JSON (statistics.interval.ms),
 * for librdkafka's own request retries; returns 0 (librdkafka frees
 * `json`). lg__kafka_error_cb: counts errors, marks a fatal one for the
 * producer's restart. */
void lg__kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
int lg__kafka_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque);
void lg__kafka_error_cb(rd_kafka_t *rk, int err, const char *reason,
                        void *opaque);

#endif
