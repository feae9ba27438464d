/*
 * The `kafka` output: one Kafka message per record, with librdkafka, on
 * the shared delivery layer (lg_output.h).
 *
 * Encoding (worker thread): the message value is the record's JSON
 * object; its topic (topic_field), key ("id" or "field:<name>") and the
 * headers (lugger.id, log.file.path) are read from the batch's record and
 * kept as the record's side data, so nothing re-parses the JSON.
 *
 * Sending: a request's records are produced as messages whose opaque
 * names the request and the record; librdkafka batches them itself
 * (linger, max_batch_bytes, max_batch_size), so the layer's
 * max_coalescing_delay defaults to 0 and many requests may be in flight.
 * Each delivery report sets its record's result: delivered, retry (a
 * retriable error librdkafka gave up on, e.g. a finite `retries`) or
 * rejected (message too large, authorization, unknown topic, invalid
 * record). The request ends once every record has its report. Payloads
 * point into the batch's payload (no copy): the layer keeps it until the
 * ack, and the producer is purged and destroyed before anything is
 * dropped unacked.
 *
 * Order per partition after a failure (a rewind, lg__kafka_rewind): once a
 * record is answered "retry", the newer records librdkafka still holds
 * would reach Kafka before it. So lugger produces nothing more, purges
 * librdkafka's queues, waits for what is in flight, and then answers
 * every record not delivered "retry" at once: the layer sends them again
 * in submit order. A finite message.timeout.ms (or delivery.timeout.ms)
 * set in `librdkafka` is applied by lugger for the same reason
 * (lg__kafka_check_timeout): librdkafka's own fails the old records and
 * sends the newer ones in the same pass, so librdkafka's stays infinite.
 * The retries librdkafka makes itself (an error answer, e.g.
 * NOT_LEADER_FOR_PARTITION) keep the order with idempotence, or with one
 * request in flight per connection, which lugger sets when idempotence is
 * off (kafka_init, producer_restart) unless `librdkafka` sets it.
 *
 * Threads: librdkafka runs its own broker threads, but none of them ever
 * calls into lugger. Delivery reports and errors wait on librdkafka's main
 * queue; the queue wakes a pipe (rd_kafka_queue_io_event_enable) that a
 * uv_poll watches, and the loop thread then serves the queue with
 * rd_kafka_poll(rk, 0). So every librdkafka callback (in
 * lg_out_kafka_produce.c) runs on the loop thread.
 *
 * A fatal producer error (e.g. the idempotent producer's sequence broke)
 * ends a librdkafka producer for good: it is recreated, and the records of
 * the requests in flight without a report are answered "retry" (records it
 * had delivered may then be sent twice: at-least-once; the record id in
 * the key or header lets consumers drop the copies).
 *
 * Files: this one holds the options, the librdkafka configuration, the
 * producer's lifecycle and the output type; lg_out_kafka_produce.c the
 * per-record encoding, producing and delivery reports
 * (lg_out_kafka_internal.h).
 */
#include "outputs/lg_out_kafka_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/lg_config.h"
#include "core/lg_log.h"

/* Housekeeping tick: serves the queue in case a wake-up was missed and
 * resumes producing after a full local queue. */
#define TICK_MS 20
/* After a fatal producer error the producer is recreated at once; if it
 * fails again, the next restart waits, doubling up to this. */
#define RESTART_BACKOFF_MAX_MS 30000

enum { KEY_NONE = 0, KEY_ID = 1, KEY_FIELD = 2 };

/* ---- options --------------------------------------------------------- */

static int check_key(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->s != NULL && (strcmp(v->s, "none") == 0 || strcmp(v->s, "id") == 0 ||
                       (strncmp(v->s, "field:", 6) == 0 && v->s[6] != '\0')))
    return 0;
  snprintf(err, errlen,
           "expected \"none\", \"id\" or \"field:<name>\", got \"%s\"",
           v->s != NULL ? v->s : "");
  return -EINVAL;
}

static int check_acks(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->s != NULL && (strcmp(v->s, "all") == 0 || strcmp(v->s, "-1") == 0 ||
                       strcmp(v->s, "1") == 0 || strcmp(v->s, "0") == 0))
    return 0;
  snprintf(err, errlen, "expected \"all\", \"1\" or \"0\", got \"%s\"",
           v->s != NULL ? v->s : "");
  return -EINVAL;
}

static const lg_option_t kafka_options[] = {
    {.name = "brokers",
     .type = LG_OPT_STRLIST,
     .required = 1,
     .doc = "Bootstrap brokers: \"host:port\", a comma-separated string or "
            "a list.",
     .offset = offsetof(kafka_conf_t, brokers)},
    {.name = "topic",
     .type = LG_OPT_STRING,
     .doc = "Topic of every record (or of those without topic_field).",
     .offset = offsetof(kafka_conf_t, topic)},
    {.name = "topic_field",
     .type = LG_OPT_STRING,
     .doc = "Field of the record (a string) that names its topic; records "
            "without it go to `topic`. One of topic and topic_field is "
            "required.",
     .offset = offsetof(kafka_conf_t, topic_field)},
    {.name = "key",
     .type = LG_OPT_STRING,
     .def = "none",
     .check = check_key,
     .doc = "Message key: \"none\"; \"id\" = the record id (`<file "
            "fingerprint>:<offset>`, stable across restarts); "
            "\"field:<name>\" = a field of the record (strings as they are, "
            "numbers printed). Messages with one key go to one partition, "
            "in order.",
     .offset = offsetof(kafka_conf_t, key)},
    {.name = "headers",
     .type = LG_OPT_BOOL,
     .def = "true",
     .doc = "Headers `lugger.id` (the record id) and `log.file.path`; "
            "Kafka 0.11+ (to older brokers librdkafka sends messages "
            "without them).",
     .offset = offsetof(kafka_conf_t, headers)},
    {.name = "compression",
     .type = LG_OPT_ENUM,
     .def = "none",
     .choices = "none|gzip|snappy|lz4|zstd",
     .doc = "Compression codec of message batches (zstd: Kafka 2.1+).",
     .offset = offsetof(kafka_conf_t, compression)},
    {.name = "acks",
     .type = LG_OPT_STRING,
     .def = "all",
     .check = check_acks,
     .doc = "Broker acknowledgements a message needs: \"all\" (\"-1\"), "
            "\"1\" or \"0\".",
     .offset = offsetof(kafka_conf_t, acks)},
    {.name = "idempotence",
     .type = LG_OPT_BOOL,
     .def = "true",
     .doc = "Idempotent producer: retries make no duplicates and no "
            "reordering; Kafka 0.11+. Left at the default, it is turned off "
            "(with a warning) when the broker refuses it; set true "
            "explicitly to insist. Off, one request per connection is in "
            "flight, so librdkafka's retries keep the order too.",
     .offset = offsetof(kafka_conf_t, idempotence)},
    {.name = "linger",
     .type = LG_OPT_DURATION,
     .def = "5ms",
     .check = lg_out_check_nonneg,
     .doc = "How long librdkafka waits for more messages to fill a batch "
            "(linger.ms).",
     .offset = offsetof(kafka_conf_t, linger_ms)},
    {.name = "max_batch_bytes",
     .type = LG_OPT_BYTES,
     .def = "1MB",
     .check = lg_opt_check_positive,
     .doc = "Largest message batch in bytes (batch.size).",
     .offset = offsetof(kafka_conf_t, max_batch_bytes)},
    {.name = "librdkafka",
     .type = LG_OPT_STRMAP,
     .doc = "Any other librdkafka property (TLS, SASL, client.id, ...), "
            "e.g. { [\"security.protocol\"] = \"ssl\" }; applied last, so it "
            "overrides the options above.",
     .offset = offsetof(kafka_conf_t, librdkafka)},
    {.name = "max_batch_size",
     .type = LG_OPT_INT,
     .def = "10000",
     .check = lg_opt_check_positive,
     .doc = "Most messages in one batch (batch.num.messages), and most "
            "records in one request of the delivery layer.",
     .offset = offsetof(kafka_conf_t, limits.max_batch_size)},
    LG_OUT_DELIVERY_OPTIONS_REST(kafka_conf_t, "16MiB", "0", "64", "0"),
    {.name = NULL},
};

/* ---- metrics ------------------------------------------------------------ */

static void register_metrics(kout_t *k) {
  const char *n = k->o->name;
  k->ctr.m_delivered = lg_metrics_counter(
      "lugger_kafka_messages_delivered_total",
      "Messages (records) the Kafka broker acknowledged.", "output", n, NULL);
  k->ctr.m_bytes = lg_metrics_counter(
      "lugger_kafka_bytes_delivered_total",
      "Payload bytes (record JSON) of the messages the broker acknowledged.",
      "output", n, NULL);
  k->ctr.m_in_flight = lg_metrics_gauge(
      "lugger_kafka_messages_in_flight",
      "Messages handed to librdkafka and not yet acknowledged or failed.",
      "output", n, NULL);
  k->ctr.m_retries = lg_metrics_counter(
      "lugger_kafka_retries_total",
      "Retries: librdkafka request retries, records produced again, waits "
      "for a full local queue, producer restarts.",
      "output", n, NULL);
  k->ctr.m_restarts = lg_metrics_counter(
      "lugger_kafka_producer_restarts_total",
      "Producers recreated after a fatal librdkafka error.", "output", n, NULL);
  lg_metric_set(k->ctr.m_in_flight, 0);
}

static void do_close(kout_t *k);

static void producer_restart(kout_t *k);

/* Serves librdkafka's queue (delivery reports, errors), then produces. */
static void serve(kout_t *k) {
  if (k->cancelled || k->closing)
    return;
  if ((k->fatal || k->rk == NULL) && uv_now(k->o->loop) >= k->restart_at)
    producer_restart(k);
  if (k->rk == NULL)
    return;
  k->polling = 1;
  for (int i = 0; i < 10000 && rd_kafka_poll(k->rk, 0) > 0; i++)
    ;
  k->polling = 0;
  lg__kafka_check_timeout(k);
  lg__kafka_rewind(k);
  if (k->close_pending) {
    do_close(k);
    return;
  }
  if (k->fatal && uv_now(k->o->loop) >= k->restart_at) {
    producer_restart(k);
    if (k->rk == NULL)
      return;
  }
  lg__kafka_pump(k);
}

/* ---- the producer -----------------------------------------------------------
 */

/* Creates the producer from k->conf_tpl and points its main queue at the
 * pipe. 0, or -EINVAL with `err`. */
static int producer_new(kout_t *k, char *err, size_t errlen) {
  rd_kafka_conf_t *conf = rd_kafka_conf_dup(k->conf_tpl);
  char e[512];
  k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  if (k->rk == NULL) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, errlen, "outputs.%s: librdkafka: %s", k->o->name, e);
    return -EINVAL;
  }
  k->mainq = rd_kafka_queue_get_main(k->rk);
  rd_kafka_queue_io_event_enable(k->mainq, k->pipefd[1], "1", 1);
  k->rdk_retries_seen = 0;
  return 0;
}

/* Destroys the producer, purging what it holds; its delivery reports are
 * ignored. */
static void producer_destroy(kout_t *k) {
  if (k->rk == NULL)
    return;
  k->restarting = 1;
  rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  while (rd_kafka_poll(k->rk, 0) > 0)
    ;
  rd_kafka_queue_destroy(k->mainq);
  k->mainq = NULL;
  rd_kafka_destroy(k->rk);
  k->rk = NULL;
  k->restarting = 0;
  lg__kafka_in_flight_add(k, -(int64_t)atomic_load_explicit(
                                 &k->ctr.in_flight, memory_order_relaxed));
}

static void producer_restart(kout_t *k) {
  char reason[512] = "no producer";
  const char *name = "";
  int quick = 0; /* a known cause fixed here: no backoff, no error */
  if (k->rk != NULL) {
    rd_kafka_resp_err_t fe = rd_kafka_fatal_error(k->rk, reason, sizeof reason);
    name = rd_kafka_err2name(fe);
  }
  if (k->rk != NULL && k->idemp_auto &&
      rd_kafka_fatal_error(k->rk, NULL, 0) ==
          RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE) {
    /* "idempotence (default on where the broker supports it)": a broker
     * before 0.11 refuses it, so go on without it. Nothing was delivered
     * by a producer that never got a producer id. */
    char e[256];
    if (rd_kafka_conf_set(k->conf_tpl, "enable.idempotence", "false", e,
                          sizeof e) == RD_KAFKA_CONF_OK &&
        (k->in_flight_user ||
         rd_kafka_conf_set(k->conf_tpl, "max.in.flight.requests.per.connection",
                           "1", e, sizeof e) == RD_KAFKA_CONF_OK)) {
      /* Without idempotence, one request at a time keeps the order (as
       * kafka_init sets it). */
      lg_log_warn(k->component,
                  "%s; producing without idempotence (set idempotence = "
                  "false for this broker to skip this)",
                  reason);
      k->idemp_auto = 0;
      quick = 1;
    }
  }
  size_t nreq = 0;
  for (kreq_t *q = k->head; q != NULL; q = q->next)
    nreq++;
  if (!quick)
    lg_log_error(k->component,
                 "producer failed for good (%s: %s); recreating it and "
                 "producing the records of %zu requests again (records it "
                 "had already delivered may be duplicated)",
                 name, reason, nreq);
  producer_destroy(k);
  k->fatal = 0;
  k->stalled = 0;
  atomic_fetch_add_explicit(&k->ctr.restarts, 1, memory_order_relaxed);
  lg_metric_add(k->ctr.m_restarts, 1);
  lg__kafka_count_retry(k);
  /* If this one fails too, wait longer before the next. */
  k->restart_backoff_ms = quick                        ? 0
                          : k->restart_backoff_ms == 0 ? 100
                          : k->restart_backoff_ms * 2 > RESTART_BACKOFF_MAX_MS
                              ? RESTART_BACKOFF_MAX_MS
                              : k->restart_backoff_ms * 2;
  k->restart_at = uv_now(k->o->loop) + k->restart_backoff_ms;
  char err[512];
  if (producer_new(k, err, sizeof err) < 0)
    lg_log_error(k->component, "%s; trying again in %" PRIu64 " ms", err,
                 k->restart_backoff_ms);
  char why[600];
  snprintf(why, sizeof why, "producer restarted after %s: %s",
           quick ? "UNSUPPORTED_FEATURE" : name, reason);
  if (quick) {
    /* Produce them again at once with the new producer. */
    for (kreq_t *q = k->head; q != NULL; q = q->next)
      q->produced = q->settled; /* (their clocks start again) */
    return;
  }
  lg__kafka_fail_in_flight(k, why);
}

/* ---- loop handles ----------------------------------------------------------
 */

static void on_pipe(uv_poll_t *h, int status, int events) {
  kout_t *k = h->data;
  (void)status;
  (void)events;
  char buf[256];
  while (read(k->pipefd[0], buf, sizeof buf) > 0)
    ;
  serve(k);
}

static void on_tick(uv_timer_t *t) { serve(t->data); }

static void handle_closed(uv_handle_t *h) {
  kout_t *k = h->data;
  if (--k->handles_open > 0)
    return;
  lg_output_t *o = k->o;
  if (k->pipefd[0] >= 0)
    close(k->pipefd[0]);
  if (k->pipefd[1] >= 0)
    close(k->pipefd[1]);
  rd_kafka_conf_destroy(k->conf_tpl);
  free(k);
  o->impl = NULL;
  lg_output_closed(o);
}

/* ---- the type --------------------------------------------------------------
 */

static int set_prop(rd_kafka_conf_t *conf, const lg_output_t *o,
                    const char *name, const char *val, char *err,
                    size_t errlen) {
  char e[256];
  if (rd_kafka_conf_set(conf, name, val, e, sizeof e) != RD_KAFKA_CONF_OK) {
    snprintf(err, errlen, "outputs.%s: librdkafka property %s=%s: %s",
             o->conf->name, name, val, e);
    return -EINVAL;
  }
  return 0;
}

/* lg_output_type_t.check: a topic, and librdkafka properties that
 * librdkafka accepts (set on a conf that is thrown away). */
static int kafka_check(const char *name, const void *conf, char *err,
                       size_t errlen) {
  const kafka_conf_t *c = conf;
  if ((c->topic == NULL || c->topic[0] == '\0') &&
      (c->topic_field == NULL || c->topic_field[0] == '\0')) {
    snprintf(err, errlen, "outputs.%s: needs `topic` or `topic_field`", name);
    return -EINVAL;
  }
  if (c->librdkafka.n == 0)
    return 0;
  rd_kafka_conf_t *rc_conf = rd_kafka_conf_new();
  int rc = 0;
  char e[256];
  for (size_t i = 0; rc == 0 && i < c->librdkafka.n; i++)
    if (rd_kafka_conf_set(rc_conf, c->librdkafka.keys[i], c->librdkafka.vals[i],
                          e, sizeof e) != RD_KAFKA_CONF_OK) {
      snprintf(err, errlen, "outputs.%s.librdkafka: property %s=%s: %s", name,
               c->librdkafka.keys[i], c->librdkafka.vals[i], e);
      rc = -EINVAL;
    }
  rd_kafka_conf_destroy(rc_conf);
  return rc;
}

static int kafka_init(lg_output_t *o, const void *conf, char *err,
                      size_t errlen) {
  const kafka_conf_t *c = conf;
  const char *name = o->name;
  kout_t *k = calloc(1, sizeof *k);
  if (k == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", name);
    return -ENOMEM;
  }
  k->o = o;
  k->c = c;
  k->pipefd[0] = k->pipefd[1] = -1;
  register_metrics(k);
  snprintf(k->component, sizeof k->component, "output.%s", name);

  rd_kafka_conf_t *rc_conf = rd_kafka_conf_new();
  char list[4096] = "";
  size_t used = 0;
  for (size_t i = 0; i < c->brokers.n; i++)
    used += (size_t)snprintf(list + used,
                             used < sizeof list ? sizeof list - used : 0,
                             "%s%s", i ? "," : "", c->brokers.v[i]);
  static const char *const codecs[] = {"none", "gzip", "snappy", "lz4", "zstd"};
  char num[32];
  int rc = set_prop(rc_conf, o, "bootstrap.servers", list, err, errlen);
  /* Retriable failures never end a message: it waits until delivered. */
  rc = rc ? rc : set_prop(rc_conf, o, "message.timeout.ms", "0", err, errlen);
  rc =
      rc ? rc
         : set_prop(
               rc_conf, o, "compression.codec",
               codecs[c->compression >= 0 && c->compression < 5 ? c->compression
                                                                : 0],
               err, errlen);
  rc =
      rc ? rc
         : set_prop(rc_conf, o, "acks", c->acks ? c->acks : "all", err, errlen);
  rc = rc ? rc
          : set_prop(rc_conf, o, "enable.idempotence",
                     c->idempotence ? "true" : "false", err, errlen);
  snprintf(num, sizeof num, "%" PRId64, c->linger_ms);
  rc = rc ? rc : set_prop(rc_conf, o, "linger.ms", num, err, errlen);
  snprintf(num, sizeof num, "%" PRId64, c->max_batch_bytes);
  rc = rc ? rc : set_prop(rc_conf, o, "batch.size", num, err, errlen);
  snprintf(num, sizeof num, "%" PRId64, c->limits.max_batch_size);
  rc = rc ? rc : set_prop(rc_conf, o, "batch.num.messages", num, err, errlen);
  /* Statistics carry librdkafka's own retry count (lg__kafka_stats_cb). */
  rc = rc ? rc
          : set_prop(rc_conf, o, "statistics.interval.ms", "1000", err, errlen);
  const lg_optval_t *idemp = lg_output_opt(o, "idempotence");
  k->idemp_auto = idemp != NULL && !idemp->set && c->idempotence;
  int idemp_on = c->idempotence;
  for (size_t i = 0; i < c->librdkafka.n; i++) {
    const char *key = c->librdkafka.keys[i];
    if (strcmp(key, "max.in.flight.requests.per.connection") == 0 ||
        strcmp(key, "max.in.flight") == 0)
      k->in_flight_user = 1;
    if (strcmp(key, "enable.idempotence") == 0)
      idemp_on = strcmp(c->librdkafka.vals[i], "true") == 0;
  }
  /* Without idempotence, librdkafka retries a request the broker answered
   * with an error (a broker just restarted answers NOT_LEADER_FOR_PARTITION
   * until it leads its partitions) after the partition's later requests
   * went out: those land first. One request at a time per connection keeps
   * each partition in order (librdkafka's INTRODUCTION.md: retries keep the
   * order with max.in.flight=1). The user's own setting, applied below,
   * wins. */
  if (!idemp_on && !k->in_flight_user)
    rc = rc ? rc
            : set_prop(rc_conf, o, "max.in.flight.requests.per.connection", "1",
                       err, errlen);
  for (size_t i = 0; rc == 0 && i < c->librdkafka.n; i++) {
    const char *key = c->librdkafka.keys[i];
    if (strcmp(key, "message.timeout.ms") == 0 ||
        strcmp(key, "delivery.timeout.ms") == 0) {
      /* lugger applies it (lg__kafka_check_timeout); librdkafka's own
       * would send newer records ahead of those it failed. kafka_check
       * had librdkafka accept the value. */
      k->msg_timeout_ms = strtoll(c->librdkafka.vals[i], NULL, 10);
      continue;
    }
    rc = set_prop(rc_conf, o, c->librdkafka.keys[i], c->librdkafka.vals[i], err,
                  errlen);
    if (strcmp(c->librdkafka.keys[i], "enable.idempotence") == 0)
      k->idemp_auto = 0;
  }
  if (rc < 0) {
    rd_kafka_conf_destroy(rc_conf);
    goto fail;
  }
  rd_kafka_conf_set_opaque(rc_conf, k);
  rd_kafka_conf_set_dr_msg_cb(rc_conf, lg__kafka_dr_cb);
  rd_kafka_conf_set_error_cb(rc_conf, lg__kafka_error_cb);
  rd_kafka_conf_set_stats_cb(rc_conf, lg__kafka_stats_cb);
  k->conf_tpl = rc_conf;
  if (pipe2(k->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
    rc = -errno;
    snprintf(err, errlen, "outputs.%s: pipe: %s", name, strerror(errno));
    goto fail;
  }
  rc = producer_new(k, err, errlen);
  if (rc < 0)
    goto fail;
  uv_poll_init(o->loop, &k->poll, k->pipefd[0]);
  uv_timer_init(o->loop, &k->tick);
  k->poll.data = k->tick.data = k;
  k->handles_open = 2;
  uv_poll_start(&k->poll, UV_READABLE, on_pipe);
  uv_timer_start(&k->tick, on_tick, TICK_MS, TICK_MS);
  /* Neither the idle pipe watch nor the tick keeps a loop alive; the pipe
   * watch is ref'd while requests are in flight. */
  uv_unref((uv_handle_t *)&k->poll);
  uv_unref((uv_handle_t *)&k->tick);
  o->impl = k;
  return 0;
fail:
  if (k->pipefd[0] >= 0) {
    close(k->pipefd[0]);
    close(k->pipefd[1]);
  }
  if (k->conf_tpl != NULL)
    rd_kafka_conf_destroy(k->conf_tpl);
  free(k);
  return rc;
}

static void kafka_send(lg_output_t *o, lg_out_req_t *r) {
  kout_t *k = o->impl;
  kreq_t *q = calloc(1, sizeof *q);
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  if (q != NULL) {
    q->msgs = malloc(r->n * sizeof *q->msgs);
    q->done = calloc(r->n, 1);
  }
  if (q == NULL || recs == NULL || q->msgs == NULL || q->done == NULL) {
    if (q != NULL) {
      free(q->msgs);
      free(q->done);
      free(q);
    }
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  q->r = r;
  q->recs = recs;
  q->prev = k->tail;
  if (k->tail != NULL)
    k->tail->next = q;
  else
    k->head = q;
  k->tail = q;
  uv_ref((uv_handle_t *)&k->poll);
  if (!k->stalled)
    lg__kafka_pump(k);
}

/* After the shutdown timeout: purge and destroy the producer; the requests
 * in flight end at once (the layer ignores their results). */
static void kafka_cancel(lg_output_t *o) {
  kout_t *k = o->impl;
  if (k->head != NULL)
    lg_log_warn(k->component, "gave up on undelivered records at exit");
  k->cancelled = 1;
  producer_destroy(k);
  lg__kafka_fail_in_flight(k, "cancelled at exit");
}

static void do_close(kout_t *k) {
  k->close_pending = 0;
  producer_destroy(k);
  uv_close((uv_handle_t *)&k->poll, handle_closed);
  uv_close((uv_handle_t *)&k->tick, handle_closed);
}

static void kafka_close(lg_output_t *o) {
  kout_t *k = o->impl;
  k->closing = 1;
  /* The last request usually ends in a delivery report, inside
   * rd_kafka_poll: the producer is destroyed once that returns. */
  if (k->polling)
    k->close_pending = 1;
  else
    do_close(k);
}

const lg_output_type_t lg__output_kafka = {
    .name = "kafka",
    .doc = "Produces one Kafka message per record (librdkafka).",
    .options = kafka_options,
    .conf_size = sizeof(kafka_conf_t),
    .rejects = 1,
    .encode = lg__kafka_encode,
    .check = kafka_check,
    .init = kafka_init,
    .send = kafka_send,
    .cancel = kafka_cancel,
    .close = kafka_close,
};

int lg_output_kafka_stats(const lg_output_t *o, lg_kafka_stats_t *out) {
  if (o == NULL || o->vt != &lg__output_kafka || o->impl == NULL || out == NULL)
    return -EINVAL;
  const kcounters_t *c = &((const kout_t *)o->impl)->ctr;
  memset(out, 0, sizeof *out);
  out->messages_delivered =
      atomic_load_explicit(&c->delivered, memory_order_relaxed);
  out->bytes_delivered = atomic_load_explicit(&c->bytes, memory_order_relaxed);
  out->errors_retriable =
      atomic_load_explicit(&c->err_retriable, memory_order_relaxed);
  out->errors_permanent =
      atomic_load_explicit(&c->err_permanent, memory_order_relaxed);
  out->in_flight = atomic_load_explicit(&c->in_flight, memory_order_relaxed);
  out->retries = atomic_load_explicit(&c->retries, memory_order_relaxed);
  out->producer_restarts =
      atomic_load_explicit(&c->restarts, memory_order_relaxed);
  for (size_t i = 0; i <= LG_KAFKA_ERR_SLOTS; i++) {
    uint64_t n = atomic_load_explicit(&c->err[i].n, memory_order_relaxed);
    if (n == 0)
      continue;
    lg_kafka_err_count_t *e = &out->err[out->nerr++];
    if (i == LG_KAFKA_ERR_SLOTS) {
      e->name = "other";
    } else {
      /* The acquire pairs with the release in count_err: code is set. */
      (void)atomic_load_explicit(&c->err[i].used, memory_order_acquire);
      e->name = rd_kafka_err2name((rd_kafka_resp_err_t)c->err[i].code);
      e->permanent = c->err[i].permanent;
    }
    e->count = n;
  }
  return 0;
}

struct rd_kafka_s *lg__output_kafka_rk(const lg_output_t *o) {
  if (o == NULL || o->vt != &lg__output_kafka || o->impl == NULL)
    return NULL;
  return ((const kout_t *)o->impl)->rk;
}
