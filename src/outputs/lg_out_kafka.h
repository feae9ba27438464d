/*
 * lg_out_kafka.h - counters of the `kafka` output (lg_out_kafka.c).
 *
 * The counters are C11 atomics written by the output's loop thread and
 * readable from any thread (a metrics endpoint), relaxed: each value is
 * exact, a snapshot of several is not taken at one instant. The same
 * counts also go to the process-wide registry (lg_metrics.h, /metrics),
 * labelled by output name:
 *   lugger_kafka_messages_delivered_total, lugger_kafka_bytes_delivered_total,
 *   lugger_kafka_errors_total{class="retriable|permanent",error="<NAME>"},
 *   lugger_kafka_messages_in_flight (gauge), lugger_kafka_retries_total,
 *   lugger_kafka_producer_restarts_total.
 * This accessor reads one output's own counters (a registry series is
 * shared by every output that ever had that name).
 */
#ifndef LG_OUT_KAFKA_H
#define LG_OUT_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "outputs/lg_output.h"

/* Distinct librdkafka error codes counted by name per output; later
 * codes are counted under "other". */
#define LG_KAFKA_ERR_SLOTS 32

typedef struct lg_kafka_err_count {
  const char *name; /* rd_kafka_err2name(), e.g. "MSG_SIZE_TOO_LARGE" */
  int permanent;    /* 1: sent to dead-letter; 0: retried */
  uint64_t count;
} lg_kafka_err_count_t;

typedef struct lg_kafka_stats {
  uint64_t messages_delivered; /* records acked by the broker */
  uint64_t bytes_delivered;    /* their payload bytes (JSON, no "\n") */
  uint64_t errors_retriable;   /* delivery/produce errors retried */
  uint64_t errors_permanent;   /* records failed for good (dead-letter) */
  uint64_t in_flight;          /* messages given to librdkafka, no report yet */
  uint64_t retries;            /* re-produces, queue-full waits, restarts,
                                  plus librdkafka's own request retries */
  uint64_t producer_restarts;  /* producers recreated after a fatal error */
  size_t nerr;                 /* entries used in err[] */
  lg_kafka_err_count_t err[LG_KAFKA_ERR_SLOTS + 1]; /* by error name */
} lg_kafka_stats_t;

/* Copies the counters of kafka output `o` into `*out`. Any thread, while
 * `o` is open. Returns 0, or -EINVAL if `o` is not an open kafka output. */
int lg_output_kafka_stats(const lg_output_t *o, lg_kafka_stats_t *out);

/* For tests: the output's current librdkafka handle (it changes when the
 * producer is recreated), to call e.g. rd_kafka_test_fatal_error. Loop
 * thread only. NULL if there is none. */
struct rd_kafka_s *lg__output_kafka_rk(const lg_output_t *o);

#endif
