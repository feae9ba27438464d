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
 * retriable error librdkafka gave up on: a finite message.timeout.ms from
 * `librdkafka`, a purge) or rejected (message too large, authorization,
 * unknown topic, invalid record). The request ends once every record has
 * its report. Payloads point into the batch's payload (no copy): the
 * layer keeps it until the ack, and the producer is purged and destroyed
 * before anything is dropped unacked.
 *
 * Threads: librdkafka runs its own broker threads, but none of them ever
 * calls into lugger. Delivery reports and errors wait on librdkafka's main
 * queue; the queue wakes a pipe (rd_kafka_queue_io_event_enable) that a
 * uv_poll watches, and the loop thread then serves the queue with
 * rd_kafka_poll(rk, 0). So every callback below runs on the loop thread.
 *
 * A fatal producer error (e.g. the idempotent producer's sequence broke)
 * ends a librdkafka producer for good: it is recreated, and the records of
 * the requests in flight without a report are answered "retry" (records it
 * had delivered may then be sent twice: at-least-once; the record id in
 * the key or header lets consumers drop the copies).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "config/lg_config.h"
#include "core/lg_json.h"
#include "core/lg_log.h"
#include "core/lg_metrics.h"
#include "core/lg_time.h"
#include "outputs/lg_out_kafka.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_record_json.h"

/* Housekeeping tick: serves the queue in case a wake-up was missed and
 * resumes producing after a full local queue. */
#define TICK_MS 20
/* After a fatal producer error the producer is recreated at once; if it
 * fails again, the next restart waits, doubling up to this. */
#define RESTART_BACKOFF_MAX_MS 30000
/* Kafka topic names have at most 249 bytes. */
#define TOPIC_MAX 249

enum { KEY_NONE = 0, KEY_ID = 1, KEY_FIELD = 2 };

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
  uint32_t produced; /* records handed to librdkafka (or settled at once) */
  uint32_t settled;  /* records with a result */
  uint8_t *done;     /* per record: has a result */
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
} kout_t;

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
            "explicitly to insist.",
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

/* ---- errors ------------------------------------------------------------ */

/* Errors that retrying cannot fix: the record goes to dead-letter. */
static int is_permanent(rd_kafka_resp_err_t e) {
  switch (e) {
  case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
  case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
  case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
  case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
  case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
  case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
  case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
  case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
  case RD_KAFKA_RESP_ERR_INVALID_RECORD:
  case RD_KAFKA_RESP_ERR_INVALID_MSG:
  case RD_KAFKA_RESP_ERR__INVALID_ARG:
    return 1;
  default:
    return 0;
  }
}

#define ERRORS_HELP                                                            \
  "Kafka errors by class (retriable: retried; permanent: the record went "     \
  "to the dead-letter output) and librdkafka error name."

/* Counts one error `e` by class and by name. */
static void count_err(kout_t *k, rd_kafka_resp_err_t e, int permanent) {
  atomic_fetch_add_explicit(permanent ? &k->ctr.err_permanent
                                      : &k->ctr.err_retriable,
                            1, memory_order_relaxed);
  size_t i;
  for (i = 0; i < LG_KAFKA_ERR_SLOTS; i++) {
    if (!atomic_load_explicit(&k->ctr.err[i].used, memory_order_relaxed)) {
      k->ctr.err[i].code = (int)e;
      k->ctr.err[i].permanent = permanent;
      k->ctr.err[i].m = lg_metrics_counter(
          "lugger_kafka_errors_total", ERRORS_HELP, "output", k->o->name,
          "class", permanent ? "permanent" : "retriable", "error",
          rd_kafka_err2name(e), NULL);
      atomic_store_explicit(&k->ctr.err[i].used, 1, memory_order_release);
      break;
    }
    if (k->ctr.err[i].code == (int)e && k->ctr.err[i].permanent == permanent)
      break;
  }
  if (i == LG_KAFKA_ERR_SLOTS && k->ctr.err[i].m == NULL)
    k->ctr.err[i].m = lg_metrics_counter(
        "lugger_kafka_errors_total", ERRORS_HELP, "output", k->o->name, "class",
        "other", "error", "other", NULL);
  atomic_fetch_add_explicit(&k->ctr.err[i].n, 1, memory_order_relaxed);
  lg_metric_add(k->ctr.err[i].m, 1);
}

static void count_retry(kout_t *k) {
  atomic_fetch_add_explicit(&k->ctr.retries, 1, memory_order_relaxed);
  lg_metric_add(k->ctr.m_retries, 1);
}

static void in_flight_add(kout_t *k, int64_t d) {
  if (d >= 0) {
    atomic_fetch_add_explicit(&k->ctr.in_flight, (uint64_t)d,
                              memory_order_relaxed);
    lg_metric_add(k->ctr.m_in_flight, (uint64_t)d);
  } else {
    atomic_fetch_sub_explicit(&k->ctr.in_flight, (uint64_t)-d,
                              memory_order_relaxed);
    lg_metric_sub(k->ctr.m_in_flight, (uint64_t)-d);
  }
}

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

/* ---- encoding (worker thread) -------------------------------------------- */

/* Side data per record, in the payload's meta: three length-prefixed
 * strings (u16 length, bytes): topic (empty: the static topic), key (or
 * none: length 0xffff), log.file.path (0xffff: none), then the record id
 * (u8 length, bytes; 0: none). */
#define NONE16 0xffffu

static int put16(lg_buf_t *m, const char *s, size_t len, int present) {
  if (!present) {
    uint16_t n = NONE16;
    return lg_buf_append(m, (const char *)&n, 2);
  }
  if (len >= NONE16)
    len = NONE16 - 1; /* longer keys/paths are cut (topics are checked) */
  uint16_t n = (uint16_t)len;
  int rc = lg_buf_append(m, (const char *)&n, 2);
  return rc == 0 ? lg_buf_append(m, s, len) : rc;
}

/* Field `name` of record `i` as text: a field a script set, then the
 * source's metadata, then the builtins body, log.iostream and time.
 * Numbers (as JSON writes them) only when `numbers`. 1 found (*p, *len,
 * maybe in `tmp`), 0 not there or not a string. */
static int field_text(const lg_batch_t *b, uint32_t i, const char *name,
                      int numbers, char *tmp, size_t tmpcap, const char **p,
                      size_t *len) {
  size_t nl = strlen(name);
  const lg_field_t *f = lg_batch_find(b, i, name, nl);
  if (f != NULL) {
    if (f->type == LG_VAL_STR) {
      *p = b->data + f->s_off;
      *len = f->s_len;
      return 1;
    }
    if (numbers && f->type == LG_VAL_INT) {
      *len = (size_t)snprintf(tmp, tmpcap, "%" PRId64, f->i);
      *p = tmp;
      return 1;
    }
    if (numbers && f->type == LG_VAL_NUM) {
      lg_buf_t nb = LG_BUF_INIT;
      if (lg_json_append_number(&nb, f->d) == 0 && nb.len < tmpcap) {
        memcpy(tmp, nb.data, nb.len);
        *len = nb.len;
        *p = tmp;
        lg_buf_free(&nb);
        return 1;
      }
      lg_buf_free(&nb);
    }
    return 0; /* removed, or not a string */
  }
  const lg_meta_kv_t *kv =
      b->meta != NULL ? lg_meta_find(b->meta, name, nl) : NULL;
  if (kv != NULL) {
    if (kv->str != NULL) {
      *p = kv->str;
      *len = kv->str_len;
      return 1;
    }
    if (!numbers)
      return 0;
    *len = (size_t)snprintf(tmp, tmpcap, "%" PRId64, kv->num);
    *p = tmp;
    return 1;
  }
  const lg_rec_t *r = &b->recs[i];
  if (strcmp(name, "body") == 0) {
    *p = b->data + r->body_off;
    *len = r->body_len;
    return 1;
  }
  if (strcmp(name, "log.iostream") == 0 && (r->flags & LG_REC_HAS_STREAM)) {
    *p = (r->flags & LG_REC_STDERR) ? "stderr" : "stdout";
    *len = 6;
    return 1;
  }
  if (strcmp(name, "time") == 0 && tmpcap >= LG_TIME_RFC3339_MAX) {
    *len = lg_time_format_rfc3339(r->time_ns, tmp);
    *p = tmp;
    return 1;
  }
  return 0;
}

static int kafka_encode(const void *conf, const lg_batch_t *b, uint32_t i,
                        const char *error, lg_payload_t *out) {
  const kafka_conf_t *c = conf;
  int rc = lg_json_encode_record_err(&out->data, b, i, error,
                                     error != NULL ? strlen(error) : 0);
  if (rc != 0)
    return rc;
  out->data.len--; /* the message is the object, without the "\n" */
  char tmp[64];
  const char *v = NULL;
  size_t vlen = 0;
  int has = c->topic_field != NULL &&
            field_text(b, i, c->topic_field, 0, tmp, sizeof tmp, &v, &vlen);
  rc = put16(&out->meta, has ? v : "", has ? vlen : 0, 1);
  char id[64];
  int idlen = lg_batch_rec_id(b, i, id, sizeof id);
  const char *key = c->key;
  if (rc == 0 && key != NULL && strcmp(key, "id") == 0) {
    rc = put16(&out->meta, id, idlen > 0 ? (size_t)idlen : 0, idlen > 0);
  } else if (rc == 0 && key != NULL && strncmp(key, "field:", 6) == 0) {
    has = field_text(b, i, key + 6, 1, tmp, sizeof tmp, &v, &vlen);
    rc = put16(&out->meta, v, vlen, has);
  } else if (rc == 0) {
    rc = put16(&out->meta, NULL, 0, 0);
  }
  if (rc == 0) {
    has = c->headers &&
          field_text(b, i, "log.file.path", 0, tmp, sizeof tmp, &v, &vlen);
    rc = put16(&out->meta, v, vlen, has);
  }
  if (rc == 0) {
    uint8_t n = c->headers && idlen > 0 ? (uint8_t)idlen : 0;
    rc = lg_buf_append(&out->meta, (const char *)&n, 1);
    if (rc == 0 && n > 0)
      rc = lg_buf_append(&out->meta, id, n);
  }
  return rc;
}

/* The side data of a record, decoded. */
typedef struct kside {
  const char *topic, *key, *path, *id;
  size_t topic_len, key_len, path_len, id_len;
  int has_key, has_path;
} kside_t;

static const char *get16(const char *m, const char *end, const char **s,
                         size_t *len, int *present) {
  uint16_t n;
  if (m + 2 > end)
    return end;
  memcpy(&n, m, 2);
  m += 2;
  *present = n != NONE16;
  *len = *present ? n : 0;
  *s = m;
  return *present ? m + n : m;
}

static void side_decode(const lg_out_rec_t *r, kside_t *s) {
  memset(s, 0, sizeof *s);
  if (r->meta == NULL)
    return; /* a record submitted as text: static topic, no key */
  const char *m = r->meta, *end = r->meta + r->meta_len;
  int present;
  m = get16(m, end, &s->topic, &s->topic_len, &present);
  m = get16(m, end, &s->key, &s->key_len, &s->has_key);
  m = get16(m, end, &s->path, &s->path_len, &s->has_path);
  if (m < end) {
    s->id_len = (uint8_t)*m;
    s->id = m + 1;
    if (s->id + s->id_len > end)
      s->id_len = 0;
  }
}

/* ---- producing (loop thread) ------------------------------------------- */

static void settle(kout_t *k, kreq_t *q, uint32_t j, lg_out_result_t res,
                   const char *why) {
  if (q->done[j])
    return;
  q->done[j] = 1;
  q->settled++;
  if (res == LG_OUT_DELIVERED) {
    atomic_fetch_add_explicit(&k->ctr.delivered, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&k->ctr.bytes, q->recs[j].len,
                              memory_order_relaxed);
    lg_metric_add(k->ctr.m_delivered, 1);
    lg_metric_add(k->ctr.m_bytes, q->recs[j].len);
  }
  lg_out_req_set(q->r, j, res, why);
}

static void kreq_unlink(kout_t *k, kreq_t *q) {
  if (q->prev != NULL)
    q->prev->next = q->next;
  else
    k->head = q->next;
  if (q->next != NULL)
    q->next->prev = q->prev;
  else
    k->tail = q->prev;
}

/* Ends request `q` once every record has its result. */
static void maybe_done(kout_t *k, kreq_t *q) {
  if (q->settled < q->r->n)
    return;
  kreq_unlink(k, q);
  lg_out_req_t *r = q->r;
  free(q->msgs);
  free(q->done);
  free(q);
  if (k->head == NULL && !k->closing)
    uv_unref((uv_handle_t *)&k->poll); /* idle: keeps no loop alive */
  lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
}

static void reject_err(kout_t *k, kreq_t *q, uint32_t j, rd_kafka_resp_err_t e,
                       const char *topic) {
  char why[512];
  snprintf(why, sizeof why, "topic %s: %s (%s)", topic ? topic : "?",
           rd_kafka_err2name(e), rd_kafka_err2str(e));
  lg_log_error(k->component, "record of %u bytes rejected: %s", q->recs[j].len,
               why);
  count_err(k, e, 1);
  settle(k, q, j, LG_OUT_REJECTED, why);
}

/* Produces record j of q. 1: go on, 0: stop (queue full, fatal). */
static int produce_one(kout_t *k, kreq_t *q, uint32_t j) {
  const lg_out_rec_t *rec = &q->recs[j];
  kside_t sd;
  side_decode(rec, &sd);
  char topic[TOPIC_MAX + 1];
  if (sd.topic_len > TOPIC_MAX) {
    reject_err(k, q, j, RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION, "(too long)");
    return 1;
  }
  if (sd.topic_len > 0) {
    memcpy(topic, sd.topic, sd.topic_len);
    topic[sd.topic_len] = '\0';
  } else if (k->c->topic != NULL && k->c->topic[0] != '\0') {
    snprintf(topic, sizeof topic, "%s", k->c->topic);
  } else {
    reject_err(k, q, j, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC, NULL);
    return 1;
  }
  rd_kafka_headers_t *hdrs = NULL;
  if (k->c->headers && (sd.id_len > 0 || sd.has_path)) {
    hdrs = rd_kafka_headers_new(2);
    if (sd.id_len > 0)
      rd_kafka_header_add(hdrs, "lugger.id", -1, sd.id, (ssize_t)sd.id_len);
    if (sd.has_path)
      rd_kafka_header_add(hdrs, "log.file.path", -1, sd.path,
                          (ssize_t)sd.path_len);
  }
  q->msgs[j] = (kmsg_t){q, j};
  rd_kafka_resp_err_t e;
  const void *key = sd.has_key ? sd.key : NULL;
  size_t klen = sd.has_key ? sd.key_len : 0;
  if (hdrs != NULL)
    e = rd_kafka_producev(k->rk, RD_KAFKA_V_TOPIC(topic),
                          RD_KAFKA_V_VALUE((void *)rec->data, rec->len),
                          RD_KAFKA_V_KEY(key, klen), RD_KAFKA_V_HEADERS(hdrs),
                          RD_KAFKA_V_OPAQUE(&q->msgs[j]), RD_KAFKA_V_END);
  else
    e = rd_kafka_producev(k->rk, RD_KAFKA_V_TOPIC(topic),
                          RD_KAFKA_V_VALUE((void *)rec->data, rec->len),
                          RD_KAFKA_V_KEY(key, klen),
                          RD_KAFKA_V_OPAQUE(&q->msgs[j]), RD_KAFKA_V_END);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR && hdrs != NULL)
    rd_kafka_headers_destroy(hdrs); /* owned by librdkafka only on success */
  if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
    in_flight_add(k, 1);
    return 1;
  }
  if (is_permanent(e)) {
    reject_err(k, q, j, e, topic);
    return 1;
  }
  if (e == RD_KAFKA_RESP_ERR__FATAL) {
    k->fatal = 1; /* serve() recreates the producer */
    return 0;
  }
  /* Queue full or another local transient condition: try again later. */
  if (!k->stalled) {
    count_err(k, e, 0);
    count_retry(k);
  }
  k->stalled = 1;
  return 0;
}

/* Produces what is waiting, in send order, until the local queue is
 * full. */
static void pump_once(kout_t *k) {
  k->stalled = 0;
  for (kreq_t *q = k->head; q != NULL;) {
    kreq_t *next = q->next;
    while (q->produced < q->r->n) {
      if (!produce_one(k, q, q->produced))
        return;
      q->produced++;
    }
    /* Records rejected at produce may have ended it; ending it may send
     * the next request (appended, and produced by the loop again). */
    maybe_done(k, q);
    q = next;
  }
}

static void pump(kout_t *k) {
  if (k->pumping) {
    k->pump_again = 1;
    return;
  }
  k->pumping = 1;
  do {
    k->pump_again = 0;
    if (k->cancelled || k->rk == NULL || k->fatal || k->closing)
      break;
    pump_once(k);
  } while (k->pump_again && !k->stalled);
  k->pumping = 0;
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
  if (k->close_pending) {
    do_close(k);
    return;
  }
  if (k->fatal && uv_now(k->o->loop) >= k->restart_at) {
    producer_restart(k);
    if (k->rk == NULL)
      return;
  }
  pump(k);
}

/* Delivery report: on the loop thread, from rd_kafka_poll. */
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  kout_t *k = opaque;
  kmsg_t *msg = m->_private;
  if (k->restarting || msg == NULL)
    return;
  in_flight_add(k, -1);
  kreq_t *q = msg->q;
  uint32_t j = msg->j;
  if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    k->restart_backoff_ms = 0; /* the (new) producer works */
    k->retry_logged = 0;
    k->down_logged = 0;
    settle(k, q, j, LG_OUT_DELIVERED, NULL);
  } else if (m->err == RD_KAFKA_RESP_ERR__FATAL || k->fatal) {
    k->fatal = 1; /* the restart answers the request */
    return;
  } else if (is_permanent(m->err)) {
    reject_err(k, q, j, m->err,
               m->rkt != NULL ? rd_kafka_topic_name(m->rkt) : NULL);
  } else {
    /* Retriable, yet librdkafka gave up on it: the layer sends it again
     * after backoff, never drops it. */
    char why[256];
    snprintf(why, sizeof why, "%s: %s", rd_kafka_err2name(m->err),
             rd_kafka_err2str(m->err));
    count_err(k, m->err, 0);
    count_retry(k);
    if (!k->retry_logged)
      lg_log_warn(k->component,
                  "delivery failed (%s); producing the record "
                  "again (and any others that fail until one "
                  "is delivered)",
                  why);
    k->retry_logged = 1;
    settle(k, q, j, LG_OUT_RETRY, why);
  }
  maybe_done(k, q);
}

/* librdkafka statistics (statistics.interval.ms), on the loop thread: the
 * only place its own request retries (leader changes, timeouts) show. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
  (void)rk;
  kout_t *k = opaque;
  cJSON *root = cJSON_ParseWithLength(json, len);
  const cJSON *brokers = cJSON_GetObjectItemCaseSensitive(root, "brokers");
  uint64_t sum = 0;
  const cJSON *b;
  cJSON_ArrayForEach(b, brokers) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(b, "txretries");
    if (cJSON_IsNumber(r) && r->valuedouble > 0)
      sum += (uint64_t)r->valuedouble;
  }
  cJSON_Delete(root);
  if (sum > k->rdk_retries_seen) {
    atomic_fetch_add_explicit(&k->ctr.retries, sum - k->rdk_retries_seen,
                              memory_order_relaxed);
    lg_metric_add(k->ctr.m_retries, sum - k->rdk_retries_seen);
    k->rdk_retries_seen = sum;
  }
  return 0; /* librdkafka frees `json` */
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque) {
  (void)rk;
  kout_t *k = opaque;
  if (err != RD_KAFKA_RESP_ERR__FATAL)
    count_err(k, (rd_kafka_resp_err_t)err, 0);
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    if (!k->down_logged)
      lg_log_warn(k->component, "all brokers down (%s); retrying", reason);
    k->down_logged = 1;
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    /* Logged with the underlying error when the producer is recreated. */
    lg_log_debug(k->component, "fatal: %s", reason);
    k->fatal = 1;
    return;
  }
  lg_log_debug(k->component, "%s: %s", rd_kafka_err2name(err), reason);
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
  in_flight_add(k, -(int64_t)atomic_load_explicit(&k->ctr.in_flight,
                                                  memory_order_relaxed));
}

/* Answers every request in flight: records without a report are retried
 * (by the layer, after backoff). */
static void fail_in_flight(kout_t *k, const char *why) {
  while (k->head != NULL) {
    kreq_t *q = k->head;
    for (uint32_t j = 0; j < q->r->n; j++)
      if (!q->done[j])
        settle(k, q, j, LG_OUT_RETRY, why);
    maybe_done(k, q);
  }
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
                          sizeof e) == RD_KAFKA_CONF_OK) {
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
  count_retry(k);
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
      q->produced = q->settled;
    return;
  }
  fail_in_flight(k, why);
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

static int kafka_init(lg_output_t *o, const void *conf, char *err,
                      size_t errlen) {
  const kafka_conf_t *c = conf;
  const char *name = o->name;
  if ((c->topic == NULL || c->topic[0] == '\0') &&
      (c->topic_field == NULL || c->topic_field[0] == '\0')) {
    snprintf(err, errlen, "outputs.%s: needs `topic` or `topic_field`", name);
    return -EINVAL;
  }
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
  /* Statistics carry librdkafka's own retry count (stats_cb). */
  rc = rc ? rc
          : set_prop(rc_conf, o, "statistics.interval.ms", "1000", err, errlen);
  const lg_optval_t *idemp = lg_output_opt(o, "idempotence");
  k->idemp_auto = idemp != NULL && !idemp->set && c->idempotence;
  for (size_t i = 0; rc == 0 && i < c->librdkafka.n; i++) {
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
  rd_kafka_conf_set_dr_msg_cb(rc_conf, dr_cb);
  rd_kafka_conf_set_error_cb(rc_conf, error_cb);
  rd_kafka_conf_set_stats_cb(rc_conf, stats_cb);
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
    pump(k);
}

/* After the shutdown timeout: purge and destroy the producer; the requests
 * in flight end at once (the layer ignores their results). */
static void kafka_cancel(lg_output_t *o) {
  kout_t *k = o->impl;
  if (k->head != NULL)
    lg_log_warn(k->component, "gave up on undelivered records at exit");
  k->cancelled = 1;
  producer_destroy(k);
  fail_in_flight(k, "cancelled at exit");
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
    .encode = kafka_encode,
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
