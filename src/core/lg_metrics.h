/*
 * lg_metrics.h - a process-wide registry of counters and gauges, rendered
 * in the Prometheus text exposition format (version 0.0.4) for /metrics.
 *
 * Usage, from any module and any thread:
 *
 *   static lg_metric_t *sent;   // look it up once, keep the handle
 *   sent = lg_metrics_counter("lugger_kafka_messages_sent_total",
 *                             "Messages the broker acknowledged.",
 *                             "output", name, NULL);
 *   lg_metric_add(sent, n);     // one atomic add, no lock
 *
 * - A metric is a family name plus a set of label pairs (a "series").
 *   Registering the same name and labels again returns the same handle,
 *   so modules need not coordinate; handles stay valid until
 *   lg_metrics_reset() (tests only), so never free them.
 * - Names follow Prometheus conventions: `lugger_` prefix, snake_case,
 *   counters end in `_total`, units in the name (`_bytes`, `_seconds`).
 *   Label values may hold any bytes; they are escaped when rendered.
 * - Counters only go up (lg_metric_add); gauges are set or moved
 *   (lg_metric_set, lg_metric_add with a negative delta through
 *   lg_metric_sub). Values are 64-bit integers: count bytes, not MiB.
 * - A family registered once as a counter and once as a gauge is an
 *   error (NULL).
 *
 * Updates are relaxed atomics: a scrape sees each value as it was at some
 * moment during the scrape, not one snapshot across all of them.
 */
#ifndef LG_METRICS_H
#define LG_METRICS_H

#include <stdint.h>

#include "core/lg_buf.h"

typedef struct lg_metric lg_metric_t;

/* Registers (or finds) counter `name` with the label pairs that follow
 * (key, value, key, value, ..., NULL; at most 8 pairs). `help` is the
 * family's # HELP text (the first registration's wins). Returns the
 * handle, or NULL when out of memory, the name or a label key is not a
 * valid Prometheus name, there are too many labels, or the family exists
 * with another type. Thread-safe. */
lg_metric_t *lg_metrics_counter(const char *name, const char *help, ...)
    __attribute__((sentinel));

/* The same for a gauge. */
lg_metric_t *lg_metrics_gauge(const char *name, const char *help, ...)
    __attribute__((sentinel));

/* The same for a histogram of durations in seconds, with the buckets
 * (upper bounds, seconds) 0.001 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5
 * 5 10 30 +Inf. Rendered as name_bucket{...,le="..."}, name_sum (seconds)
 * and name_count. */
lg_metric_t *lg_metrics_histogram(const char *name, const char *help, ...)
    __attribute__((sentinel));

/* Records one observation of `us` microseconds in a histogram. NULL-safe.
 * Lock-free. */
void lg_metric_observe_us(lg_metric_t *m, uint64_t us);

/* Adds `n` to a counter or gauge. NULL-safe (does nothing), so a failed
 * registration never crashes the caller. Lock-free. */
void lg_metric_add(lg_metric_t *m, uint64_t n);

/* Subtracts `n` from a gauge. NULL-safe. */
void lg_metric_sub(lg_metric_t *m, uint64_t n);

/* Sets a gauge to `v`. NULL-safe. */
void lg_metric_set(lg_metric_t *m, int64_t v);

/* The current value (counters read as their uint64 bit pattern cast to
 * int64; tests). 0 for NULL. */
int64_t lg_metric_get(const lg_metric_t *m);

/* Appends every family, in registration order, in the text exposition
 * format: "# HELP", "# TYPE", then one line per series,
 * `name{k="v",...} value`. Returns 0 or -ENOMEM. Thread-safe. */
int lg_metrics_render(lg_buf_t *out);

/* Forgets every metric and frees the registry; handles handed out before
 * become invalid. For tests and the end of the process only. */
void lg_metrics_reset(void);

#endif
