/*
 * The delivery layer's metrics per output, labelled output="<name>" (by
 * name: an output a reload re-creates counts on in the same series):
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
 * Also the output's own counters (lg_output_t) and its state on /readyz.
 */
#include <stdio.h>

#include "engine/lg_admin_http.h"
#include "outputs/lg_delivery_internal.h"

void lg__dlv_metrics_register(out_priv_t *p) {
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
void lg__dlv_set_retrying(out_priv_t *p, const char *reason) {
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

void lg__dlv_count_request_sent(out_priv_t *p) {
  p->in_flight++;
  lg_metric_set(p->m.in_flight, p->in_flight);
}

void lg__dlv_count_request_done(out_priv_t *p, uint64_t start_ns) {
  p->in_flight--;
  lg_metric_set(p->m.in_flight, p->in_flight);
  lg_metric_observe_us(p->m.duration, (uv_hrtime() - start_ns) / 1000);
}

void lg__dlv_count_delivered(out_priv_t *p, uint64_t n, uint64_t bytes) {
  p->pub.records_out += n;
  p->pub.bytes_out += bytes;
  lg_metric_add(p->m.delivered, n);
  lg_metric_add(p->m.b_delivered, bytes);
  lg_metric_add(p->m.legacy_delivered, n);
}

void lg__dlv_count_retries(out_priv_t *p, uint64_t n, int failed_attempt) {
  if (failed_attempt)
    p->pub.errors++;
  p->pub.retries += n;
  lg_metric_add(p->m.retries, n);
}

void lg__dlv_count_rejected(out_priv_t *p, uint64_t n, uint64_t bytes) {
  lg_metric_add(p->m.rejected, n);
  lg_metric_add(p->m.b_rejected, bytes);
  lg_metric_add(p->m.legacy_failed, n);
  p->pub.errors += n;
}

void lg__dlv_count_dead_lettered(out_priv_t *p, uint64_t n) {
  lg_metric_add(p->m.dead_lettered, n);
}

void lg__dlv_count_lost(out_priv_t *p, uint64_t n, uint64_t bytes) {
  lg_metric_add(p->m.lost, n);
  lg_metric_add(p->m.b_lost, bytes);
}
