/*
 * The `kafka` output: one Kafka message per record, with librdkafka.
 *
 * Threads: librdkafka runs its own broker threads, but none of them ever
 * calls into lugger. Delivery reports and errors wait on librdkafka's main
 * queue; the queue wakes a pipe (rd_kafka_queue_io_event_enable) that a
 * uv_poll watches, and the loop thread then serves the queue with
 * rd_kafka_poll(rk, 0). So every callback below runs on the loop thread.
 *
 * Chunks: each record (JSON line) of a chunk is produced as one message
 * whose per-message opaque is the chunk; the chunk is acked once a
 * delivery report came back for every one of its records, and chunks are
 * acked in submit order. Message payloads point into the chunk (no copy):
 * the engine keeps it valid until its ack, and exit purges librdkafka's
 * queues and destroys the handle before anything is dropped unacked.
 *
 * Errors: librdkafka retries retriable errors itself; message.timeout.ms
 * is 0 (infinite), so a broker down or a leader change only delays
 * delivery, and backpressure (unacked chunks hold the memory budget)
 * pauses the sources. A retriable error that still comes back in a
 * delivery report (a timeout set through `librdkafka`) is produced again.
 * A full local queue leaves the rest of the chunk unproduced until the
 * next delivery report or tick. Permanent errors (message too large,
 * authorization, unknown topic, invalid record) fail the record; the
 * contract acks whole chunks, so the chunk is acked with a negative status
 * once all its records are settled and the engine sends the whole chunk to
 * dead-letter. The good records of that chunk were delivered too: they
 * appear both in Kafka and in the dead-letter output (at-least-once, and
 * the dead-letter output holds the bad record with its neighbours).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "config/lg_config.h"
#include "core/lg_log.h"
#include "core/lg_metrics.h"
#include "outputs/lg_output.h"
#include "outputs/lg_output_kafka.h"

/* Housekeeping tick: serves the queue in case a wake-up was missed and
 * resumes producing after a full local queue. */
#define TICK_MS 20
/* After a fatal producer error the producer is recreated at once; if it
 * fails again, the next restart waits, doubling up to this. */
#define RESTART_BACKOFF_MAX_MS 30000
/* After exit, how long queued messages may take before they are given up
 * (unacked, so read again at the next start). The engine has already
 * waited its own shutdown timeout for them by then. */
#define EXIT_FLUSH_MS 5000

enum { KEY_NONE = 0, KEY_ID = 1, KEY_FIELD = 2 };

typedef struct kchunk {
  struct kchunk *next;
  void *ref;
  const char *data;
  size_t len;
  size_t off;     /* next record to produce starts here */
  uint32_t total; /* records (lines) in the chunk */
  uint32_t next_j; /* index of the record at `off` */
  uint32_t done;  /* records settled: delivered or failed for good */
  int status;     /* 0, or the first permanent failure (-errno) */
  /* Record ids from o->rec_ids, NUL-terminated in one buffer: record j's
   * starts at idbuf + idoff[j] (NO_ID: none). idoff is NULL without. */
  uint32_t *idoff;
  char *idbuf;
  size_t idlen, idcap;
} kchunk_t;

typedef struct kretry {
  kchunk_t *c;
  size_t off, len;
} kretry_t;

/* Counters (lg_output_kafka.h): written on the loop thread, read from any. */
typedef struct kcounters {
  _Atomic uint64_t delivered, bytes, err_retriable, err_permanent, in_flight,
      retries, restarts, rdk_retries;
  /* Per librdkafka error code; a slot's code is set once, before its count
   * is first incremented (release), and never changes. */
  struct {
    _Atomic int used;
    int code, permanent;
    _Atomic uint64_t n;
    lg_metric_t *m; /* lugger_kafka_errors_total{class, error} */
  } err[LG_KAFKA_ERR_SLOTS + 1]; /* the last one is "other" */
  /* The same, in the process-wide registry (/metrics), labelled by output.
   * The atomics above are this output's own (lg_output_kafka_stats); a
   * registry series outlives an output of the same name (reload). */
  lg_metric_t *m_delivered, *m_bytes, *m_in_flight, *m_retries, *m_restarts;
} kcounters_t;

typedef struct kout {
  lg_output_t *o;
  kcounters_t ctr;
  rd_kafka_conf_t *conf_tpl; /* a copy to recreate the producer from */
  char component[128];
  rd_kafka_t *rk;
  rd_kafka_queue_t *mainq;
  int pipefd[2];
  uv_poll_t poll;
  uv_timer_t tick;
  uv_timer_t exit_timer;
  int handles_open;

  char *topic;       /* static topic; NULL without */
  char *topic_field; /* NULL without */
  int key_mode;
  char *key_field;
  int headers;
  int idemp_auto; /* idempotence on by default: turn it off if unsupported */

  kchunk_t *head, *tail; /* unacked chunks, in submit order */
  kchunk_t *prod;        /* first chunk not fully produced */
  kretry_t *retry;       /* records to produce again (retriable DR error) */
  size_t retry_head, nretry, retry_cap; /* a queue: [retry_head, nretry) */
  int retry_logged; /* one warning per run of re-produced records */

  int stalled; /* queue full: wait for reports or the tick */
  int fatal;      /* the producer hit a fatal error: recreate it */
  int restarting; /* destroying the old producer: ignore its reports */
  uint64_t restart_at;         /* uv_now() ms: earliest next restart */
  uint64_t restart_backoff_ms; /* 0 until a restart did not help */
  uint64_t rdk_retries_seen;   /* txretries of the current producer */
  int down_logged;
  int closing, abandoned, finished;
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
  if (v->s != NULL &&
      (strcmp(v->s, "all") == 0 || strcmp(v->s, "-1") == 0 ||
       strcmp(v->s, "1") == 0 || strcmp(v->s, "0") == 0))
    return 0;
  snprintf(err, errlen, "expected \"all\", \"1\" or \"0\", got \"%s\"",
           v->s != NULL ? v->s : "");
  return -EINVAL;
}

static int check_nonneg(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i < 0) {
    snprintf(err, errlen, "must not be negative");
    return -EINVAL;
  }
  return 0;
}

static const lg_option_t kafka_options[] = {
    {.name = "brokers",
     .type = LG_OPT_STRLIST,
     .required = 1,
     .doc = "Bootstrap brokers, \"host:port\" or a list of them."},
    {.name = "topic",
     .type = LG_OPT_STRING,
     .doc = "Topic of every record (or of those without topic_field)."},
    {.name = "topic_field",
     .type = LG_OPT_STRING,
     .doc = "Top-level string field of the record that names its topic; "
            "records without it go to `topic`."},
    {.name = "key",
     .type = LG_OPT_STRING,
     .def = "none",
     .check = check_key,
     .doc = "Message key: \"none\", \"id\" (the record id) or "
            "\"field:<name>\" (a top-level field)."},
    {.name = "headers",
     .type = LG_OPT_BOOL,
     .def = "true",
     .doc = "Send headers lugger.id and log.file.path (Kafka 0.11+; to "
            "older brokers librdkafka sends the messages without them)."},
    {.name = "compression",
     .type = LG_OPT_ENUM,
     .def = "none",
     .choices = "none|gzip|snappy|lz4|zstd",
     .doc = "Compression codec of message batches."},
    {.name = "acks",
     .type = LG_OPT_STRING,
     .def = "all",
     .check = check_acks,
     .doc = "Broker acknowledgements a message needs: \"all\", \"1\" or "
            "\"0\"."},
    {.name = "idempotence",
     .type = LG_OPT_BOOL,
     .def = "true",
     .doc = "Idempotent producer: no duplicates or reordering from retries "
            "(Kafka 0.11+; left at the default, it is turned off with a "
            "warning when the broker refuses it)."},
    {.name = "linger",
     .type = LG_OPT_DURATION,
     .def = "5ms",
     .check = check_nonneg,
     .doc = "How long to wait for more messages to fill a batch "
            "(linger.ms)."},
    {.name = "max_batch_bytes",
     .type = LG_OPT_BYTES,
     .def = "1MB",
     .check = lg_opt_check_positive,
     .doc = "Largest message batch in bytes (batch.size)."},
    {.name = "max_batch_size",
     .type = LG_OPT_INT,
     .def = "10000",
     .check = lg_opt_check_positive,
     .doc = "Most messages in one batch (batch.num.messages)."},
    {.name = "librdkafka",
     .type = LG_OPT_STRMAP,
     .doc = "Any other librdkafka property, e.g. { [\"security.protocol\"] "
            "= \"ssl\" }; applied last, so it overrides the options above."},
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

static int err_status(rd_kafka_resp_err_t e) {
  switch (e) {
  case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
  case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    return -EMSGSIZE;
  case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
  case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    return -EACCES;
  case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
  case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
  case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    return -ENOENT;
  case RD_KAFKA_RESP_ERR_INVALID_RECORD:
  case RD_KAFKA_RESP_ERR_INVALID_MSG:
  case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
  case RD_KAFKA_RESP_ERR__INVALID_ARG:
    return -EINVAL;
  default:
    return -EIO;
  }
}

#define ERRORS_HELP                                                          \
  "Kafka errors by class (retriable: retried; permanent: the record went "    \
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
          "lugger_kafka_errors_total", ERRORS_HELP, "output", k->o->conf->name, "class",
          permanent ? "permanent" : "retriable", "error", rd_kafka_err2name(e),
          NULL);
      atomic_store_explicit(&k->ctr.err[i].used, 1, memory_order_release);
      break;
    }
    if (k->ctr.err[i].code == (int)e && k->ctr.err[i].permanent == permanent)
      break;
  }
  if (i == LG_KAFKA_ERR_SLOTS && k->ctr.err[i].m == NULL)
    k->ctr.err[i].m = lg_metrics_counter(
        "lugger_kafka_errors_total", ERRORS_HELP, "output", k->o->conf->name, "class",
        "other", "error", "other", NULL);
  atomic_fetch_add_explicit(&k->ctr.err[i].n, 1, memory_order_relaxed);
  lg_metric_add(k->ctr.err[i].m, 1);
}

static void count_retry(kout_t *k) {
  k->o->retries++;
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
  const char *n = k->o->conf->name;
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
      "Producers recreated after a fatal librdkafka error.", "output", n,
      NULL);
  lg_metric_set(k->ctr.m_in_flight, 0);
}

/* ---- chunks -------------------------------------------------------------- */

#define NO_ID UINT32_MAX

static void chunk_free(kchunk_t *c) {
  free(c->idoff);
  free(c->idbuf);
  free(c);
}

static void collect_id(void *arg, uint32_t j, const char *id, size_t len) {
  kchunk_t *c = arg;
  if (j >= c->total || c->idoff[j] != NO_ID || len >= NO_ID / 2)
    return;
  if (c->idlen + len + 1 > c->idcap) {
    size_t cap = c->idcap ? c->idcap : (size_t)c->total * 32;
    while (cap < c->idlen + len + 1)
      cap *= 2;
    if (cap >= NO_ID)
      return;
    char *b = realloc(c->idbuf, cap);
    if (b == NULL)
      return; /* the record goes without its id */
    c->idbuf = b;
    c->idcap = cap;
  }
  memcpy(c->idbuf + c->idlen, id, len);
  c->idbuf[c->idlen + len] = '\0';
  c->idoff[j] = (uint32_t)c->idlen;
  c->idlen += len + 1;
}

static const char *chunk_id(const kchunk_t *c, uint32_t j) {
  return c->idoff != NULL && j < c->total && c->idoff[j] != NO_ID
             ? c->idbuf + c->idoff[j]
             : NULL;
}

/* Settles one record of `c`: status 0 delivered, < 0 failed for good. */
static void settle(kout_t *k, kchunk_t *c, int status, size_t len) {
  c->done++;
  if (status == 0) {
    k->o->records_out++;
    k->o->bytes_out += len;
    atomic_fetch_add_explicit(&k->ctr.delivered, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&k->ctr.bytes, len, memory_order_relaxed);
    lg_metric_add(k->ctr.m_delivered, 1);
    lg_metric_add(k->ctr.m_bytes, len);
  } else {
    k->o->errors++;
    if (c->status == 0)
      c->status = status;
  }
}

static void ack_ready_inner(kout_t *k);

/* Acks the settled chunks at the head, in order. */
static void ack_ready(kout_t *k) {
  ack_ready_inner(k);
  /* Unacked chunks keep the loop alive (the pipe watch is ref'd); an idle
   * output does not. */
  if (!k->finished) {
    if (k->head != NULL || k->closing)
      uv_ref((uv_handle_t *)&k->poll);
    else
      uv_unref((uv_handle_t *)&k->poll);
  }
}

static void ack_ready_inner(kout_t *k) {
  while (k->head != NULL && !k->abandoned) {
    kchunk_t *c = k->head;
    if (c->off < c->len || c->done < c->total)
      break;
    /* (A record waiting in k->retry is not settled: done < total.) */
    k->head = c->next;
    if (k->head == NULL)
      k->tail = NULL;
    if (k->prod == c)
      k->prod = k->head;
    void *ref = c->ref;
    int status = c->status;
    chunk_free(c);
    k->o->ack(k->o->ack_ud, ref, status);
  }
}

/* ---- fields of a record's JSON ------------------------------------------ */

static const char *skip_ws(const char *s, const char *e) {
  while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
    s++;
  return s;
}

/* `s` is at a '"': returns the byte after the closing quote (NULL if
 * none); sets *esc when the string holds an escape. */
static const char *skip_string(const char *s, const char *e, int *esc) {
  for (s++; s < e; s++) {
    if (*s == '\\') {
      *esc = 1;
      s++;
    } else if (*s == '"') {
      return s + 1;
    }
  }
  return NULL;
}

/* `s` is at a value that is not a string: returns the byte after it. */
static const char *skip_other(const char *s, const char *e) {
  int depth = 0, esc = 0;
  while (s < e) {
    char ch = *s;
    if (ch == '"') {
      s = skip_string(s, e, &esc);
      if (s == NULL)
        return NULL;
      continue;
    }
    if (ch == '{' || ch == '[') {
      depth++;
    } else if (ch == '}' || ch == ']') {
      if (depth == 0)
        return s; /* the end of the enclosing object */
      if (--depth == 0)
        return s + 1;
    } else if (depth == 0 && (ch == ',' || ch == ' ' || ch == '\t' ||
                              ch == '\n' || ch == '\r')) {
      return s;
    }
    s++;
  }
  return depth == 0 ? s : NULL;
}

int lg__kafka_json_member(const char *p, size_t len, const char *name,
                          const char **val, size_t *vlen, int *kind) {
  const char *e = p + len, *s = skip_ws(p, e);
  size_t namelen = strlen(name);
  if (s == e || *s != '{')
    return -EINVAL;
  s++;
  for (;;) {
    s = skip_ws(s, e);
    if (s < e && *s == '}')
      return 0;
    if (s == e || *s != '"')
      return -EINVAL;
    int kesc = 0;
    const char *kend = skip_string(s, e, &kesc);
    if (kend == NULL)
      return -EINVAL;
    /* Keys are compared as written: a key with an escape never matches. */
    int match = !kesc && (size_t)(kend - 1 - (s + 1)) == namelen &&
                memcmp(s + 1, name, namelen) == 0;
    s = skip_ws(kend, e);
    if (s == e || *s != ':')
      return -EINVAL;
    s = skip_ws(s + 1, e);
    if (s == e)
      return -EINVAL;
    const char *vend;
    int vesc = 0;
    if (*s == '"') {
      vend = skip_string(s, e, &vesc);
      if (vend == NULL)
        return -EINVAL;
      if (match) {
        *val = s + 1;
        *vlen = (size_t)(vend - 1 - (s + 1));
        *kind = vesc ? LG_KAFKA_JSON_ESCAPED : LG_KAFKA_JSON_STRING;
        return 1;
      }
    } else {
      vend = skip_other(s, e);
      if (vend == NULL || vend == s)
        return -EINVAL;
      if (match) {
        *val = s;
        *vlen = (size_t)(vend - s);
        *kind = (*s == '-' || (*s >= '0' && *s <= '9')) ? LG_KAFKA_JSON_NUMBER
                                                         : LG_KAFKA_JSON_OTHER;
        return 1;
      }
    }
    s = skip_ws(vend, e);
    if (s < e && *s == ',') {
      s++;
      continue;
    }
    if (s < e && *s == '}')
      return 0;
    return -EINVAL;
  }
}

/* One field of a record for the message: its bytes, or NULL. */
typedef struct kfield {
  const char *p;
  size_t len;
} kfield_t;

/* Top-level field `name` of record `line` as a string (strings, and
 * numbers as written when `numbers`). Records are lugger's own JSON, so
 * the scan above finds almost every field in place; a value with escapes
 * (or a line that does not scan) is read through cJSON, parsed once per
 * record into *root. */
static kfield_t record_field(const char *line, size_t len, const char *name,
                             int numbers, cJSON **root) {
  kfield_t f = {NULL, 0};
  const char *v;
  size_t vlen;
  int kind;
  int rc = *root == NULL ? lg__kafka_json_member(line, len, name, &v, &vlen, &kind)
                         : -EINVAL;
  if (rc == 0)
    return f;
  if (rc == 1 && kind == LG_KAFKA_JSON_STRING)
    return (kfield_t){v, vlen};
  if (rc == 1 && kind == LG_KAFKA_JSON_NUMBER)
    return numbers ? (kfield_t){v, vlen} : f;
  if (rc == 1 && kind == LG_KAFKA_JSON_OTHER)
    return f;
  if (*root == NULL)
    *root = cJSON_ParseWithLength(line, len);
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(*root, name);
  if (cJSON_IsString(j))
    return (kfield_t){j->valuestring, strlen(j->valuestring)};
  return f;
}

/* Produces record j of `c` (bytes [off, off+len) of the chunk). */
static rd_kafka_resp_err_t produce_one(kout_t *k, kchunk_t *c, size_t off,
                                       size_t len, uint32_t j) {
  const char *line = c->data + off;
  cJSON *root = NULL;
  const char *topic = k->topic;
  char topicbuf[256];
  if (k->topic_field != NULL) {
    kfield_t t = record_field(line, len, k->topic_field, 0, &root);
    if (t.p != NULL && t.len > 0 && t.len < sizeof topicbuf) {
      memcpy(topicbuf, t.p, t.len);
      topicbuf[t.len] = '\0';
      topic = topicbuf;
    } else if (t.p != NULL && t.len > 0) {
      /* Kafka topic names have at most 249 bytes: rejected for good. */
      cJSON_Delete(root);
      return RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION;
    }
  }
  if (topic == NULL || topic[0] == '\0') {
    cJSON_Delete(root);
    return RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
  }
  const char *id = chunk_id(c, j);
  kfield_t key = {NULL, 0};
  if (k->key_mode == KEY_ID && id != NULL)
    key = (kfield_t){id, strlen(id)};
  else if (k->key_mode == KEY_FIELD)
    key = record_field(line, len, k->key_field, 1, &root);
  rd_kafka_headers_t *hdrs = NULL;
  if (k->headers) {
    kfield_t path = record_field(line, len, "log.file.path", 0, &root);
    if (id != NULL || path.p != NULL) {
      hdrs = rd_kafka_headers_new(2);
      if (id != NULL)
        rd_kafka_header_add(hdrs, "lugger.id", -1, id, -1);
      if (path.p != NULL)
        rd_kafka_header_add(hdrs, "log.file.path", -1, path.p,
                            (ssize_t)path.len);
    }
  }
  rd_kafka_resp_err_t e;
  if (hdrs != NULL)
    e = rd_kafka_producev(
        k->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE((void *)line, len),
        RD_KAFKA_V_KEY(key.p, key.len), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE(c), RD_KAFKA_V_END);
  else
    e = rd_kafka_producev(
        k->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE((void *)line, len),
        RD_KAFKA_V_KEY(key.p, key.len), RD_KAFKA_V_OPAQUE(c), RD_KAFKA_V_END);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR && hdrs != NULL)
    rd_kafka_headers_destroy(hdrs); /* owned by librdkafka only on success */
  if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
    in_flight_add(k, 1);
  cJSON_Delete(root);
  return e;
}

/* Handles a produce() result. 1: go on, 0: stop (queue full / fatal). */
static int produced(kout_t *k, kchunk_t *c, rd_kafka_resp_err_t e,
                    size_t off, size_t len) {
  if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
    return 1;
  if (is_permanent(e)) {
    lg_log_error(k->component,
                 "record of %zu bytes rejected: %s (%s); its chunk goes to "
                 "the dead-letter output",
                 len, rd_kafka_err2name(e), rd_kafka_err2str(e));
    count_err(k, e, 1);
    settle(k, c, err_status(e), len);
    return 1;
  }
  if (e == RD_KAFKA_RESP_ERR__FATAL) {
    k->fatal = 1; /* serve() recreates the producer */
    k->stalled = 1;
    return 0;
  }
  /* Queue full or another local transient condition: try again later. */
  (void)off;
  if (!k->stalled) {
    count_err(k, e, 0);
    count_retry(k);
  }
  k->stalled = 1;
  return 0;
}

/* Produces what is waiting: records to produce again, then new records in
 * submit order, until the local queue is full. */
static void pump(kout_t *k) {
  if (k->abandoned || k->rk == NULL || k->fatal)
    return;
  k->stalled = 0;
  /* The record index (for its id) is counted from the previous retry of
   * the same chunk: reports come back in produce order per partition, so
   * a run of failures costs one pass over the chunk, not one per record. */
  const kchunk_t *jc = NULL;
  size_t joff = 0;
  uint32_t jj = 0;
  while (k->retry_head < k->nretry) {
    kretry_t r = k->retry[k->retry_head];
    if (r.c != jc || r.off < joff) {
      jc = r.c;
      joff = 0;
      jj = 0;
    }
    for (const char *p = r.c->data + joff, *end = r.c->data + r.off;
         (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
      jj++;
    joff = r.off;
    rd_kafka_resp_err_t e = produce_one(k, r.c, r.off, r.len, jj);
    if (!produced(k, r.c, e, r.off, r.len))
      return;
    k->retry_head++;
  }
  k->retry_head = k->nretry = 0;
  while (k->prod != NULL) {
    kchunk_t *c = k->prod;
    while (c->off < c->len) {
      const char *p = c->data + c->off;
      const char *nl = memchr(p, '\n', c->len - c->off);
      size_t len = nl != NULL ? (size_t)(nl - p) : c->len - c->off;
      size_t next = c->off + len + (nl != NULL);
      if (len == 0) {
        c->off = next;
        c->next_j++;
        c->done++;
        continue;
      }
      rd_kafka_resp_err_t e = produce_one(k, c, c->off, len, c->next_j);
      if (!produced(k, c, e, c->off, len))
        return;
      c->off = next;
      c->next_j++;
    }
    k->prod = c->next;
  }
}

/* Serves librdkafka's queue (delivery reports, errors), then produces and
 * acks. */
static void producer_restart(kout_t *k);

static void serve(kout_t *k) {
  if (k->abandoned || k->finished)
    return;
  if ((k->fatal || k->rk == NULL) && uv_now(k->o->loop) >= k->restart_at)
    producer_restart(k);
  if (k->rk == NULL)
    return;
  for (int i = 0; i < 10000 && rd_kafka_poll(k->rk, 0) > 0; i++)
    ;
  if (k->fatal && uv_now(k->o->loop) >= k->restart_at) {
    producer_restart(k);
    if (k->rk == NULL)
      return;
  }
  pump(k);
  ack_ready(k);
}

static void finish(kout_t *k);

static void maybe_finish(kout_t *k) {
  if (k->closing && !k->finished && k->head == NULL)
    finish(k);
}

/* Delivery report: on the loop thread, from rd_kafka_poll. */
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  kout_t *k = opaque;
  kchunk_t *c = m->_private;
  if (k->abandoned || k->restarting || c == NULL)
    return;
  in_flight_add(k, -1);
  if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    k->restart_backoff_ms = 0; /* the (new) producer works */
    k->retry_logged = 0;
    k->down_logged = 0;
    settle(k, c, 0, m->len);
    return;
  }
  if (m->err == RD_KAFKA_RESP_ERR__FATAL || k->fatal) {
    /* The restart produces the whole chunk again. */
    k->fatal = 1;
    return;
  }
  if (is_permanent(m->err)) {
    lg_log_error(k->component,
                 "topic %s: record of %zu bytes rejected: %s (%s); its chunk "
                 "goes to the dead-letter output",
                 m->rkt != NULL ? rd_kafka_topic_name(m->rkt) : "?", m->len,
                 rd_kafka_err2name(m->err), rd_kafka_err2str(m->err));
    count_err(k, m->err, 1);
    settle(k, c, err_status(m->err), m->len);
    return;
  }
  /* Retriable, yet librdkafka gave up on it (a finite message timeout from
   * `librdkafka`, a purge): produce it again, never drop it. */
  if (k->nretry == k->retry_cap && k->retry_head > 0) {
    memmove(k->retry, k->retry + k->retry_head,
            (k->nretry - k->retry_head) * sizeof *k->retry);
    k->nretry -= k->retry_head;
    k->retry_head = 0;
  }
  if (k->nretry == k->retry_cap) {
    size_t cap = k->retry_cap ? k->retry_cap * 2 : 64;
    kretry_t *r = realloc(k->retry, cap * sizeof *r);
    if (r == NULL) {
      lg_log_error(k->component, "out of memory; record left unacked");
      return; /* the chunk never acks: read again after a restart */
    }
    k->retry = r;
    k->retry_cap = cap;
  }
  k->o->errors++;
  count_err(k, m->err, 0);
  count_retry(k);
  if (!k->retry_logged)
    lg_log_warn(k->component,
                "delivery failed (%s: %s); producing the record again (and "
                "any others that fail until one is delivered)",
                rd_kafka_err2name(m->err), rd_kafka_err2str(m->err));
  k->retry_logged = 1;
  k->retry[k->nretry++] =
      (kretry_t){.c = c, .off = (size_t)((const char *)m->payload - c->data),
                 .len = m->len};
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

/* ---- loop handles ---------------------------------------------------------- */

static void on_pipe(uv_poll_t *h, int status, int events) {
  kout_t *k = h->data;
  (void)status;
  (void)events;
  char buf[256];
  while (read(k->pipefd[0], buf, sizeof buf) > 0)
    ;
  serve(k);
  maybe_finish(k);
}

static void on_tick(uv_timer_t *t) {
  kout_t *k = t->data;
  serve(k);
  maybe_finish(k);
}

static void on_exit_timeout(uv_timer_t *t) {
  kout_t *k = t->data;
  if (k->finished)
    return;
  lg_log_warn(k->component,
              "exit: records still undelivered after %d ms; giving up on "
              "them (read again at the next start)",
              EXIT_FLUSH_MS);
  k->abandoned = 1;
  finish(k);
}

static void handle_closed(uv_handle_t *h) {
  kout_t *k = h->data;
  if (--k->handles_open > 0)
    return;
  lg_output_t *o = k->o;
  if (k->pipefd[0] >= 0)
    close(k->pipefd[0]);
  if (k->pipefd[1] >= 0)
    close(k->pipefd[1]);
  while (k->head != NULL) {
    kchunk_t *c = k->head;
    k->head = c->next;
    chunk_free(c);
  }
  free(k->retry);
  free(k->topic);
  free(k->topic_field);
  free(k->key_field);
  rd_kafka_conf_destroy(k->conf_tpl);
  free(k);
  o->impl = NULL;
  lg__output_closed(o);
}

/* Creates the producer from k->conf_tpl and points its main queue at the
 * pipe. 0, or -EINVAL with `err`. */
static int producer_new(kout_t *k, char *err, size_t errlen) {
  rd_kafka_conf_t *conf = rd_kafka_conf_dup(k->conf_tpl);
  char e[512];
  k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  if (k->rk == NULL) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, errlen, "outputs.%s: librdkafka: %s", k->o->conf->name, e);
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

/* A fatal error (e.g. the idempotent producer's sequence broke, see
 * rd_kafka_fatal_error) ends a librdkafka producer for good; lugger makes
 * a new one and produces every unacked record again. Records the old one
 * had delivered are then sent twice (at-least-once; the record id in the
 * key or header lets consumers drop the copies). Chunks whose records are
 * all settled keep their result. */
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
  size_t nchunks = 0;
  for (kchunk_t *c = k->head; c != NULL; c = c->next)
    if (c->off < c->len || c->done < c->total)
      nchunks++;
  if (!quick)
    lg_log_error(k->component,
               "producer failed for good (%s: %s); recreating it and "
               "producing %zu unacked chunks again (records it had already "
               "delivered may be duplicated)",
               name, reason, nchunks);
  producer_destroy(k);
  for (kchunk_t *c = k->head; c != NULL; c = c->next) {
    if (c->off >= c->len && c->done >= c->total)
      continue;
    c->off = 0;
    c->next_j = 0;
    c->done = 0;
    c->status = 0;
  }
  k->prod = k->head;
  k->retry_head = k->nretry = 0;
  k->fatal = 0;
  k->stalled = 0;
  atomic_fetch_add_explicit(&k->ctr.restarts, 1, memory_order_relaxed);
  lg_metric_add(k->ctr.m_restarts, 1);
  count_retry(k);
  /* If this one fails too, wait longer before the next. */
  k->restart_backoff_ms = quick                       ? 0
                          : k->restart_backoff_ms == 0 ? 100
                          : k->restart_backoff_ms * 2 > RESTART_BACKOFF_MAX_MS
                              ? RESTART_BACKOFF_MAX_MS
                              : k->restart_backoff_ms * 2;
  k->restart_at = uv_now(k->o->loop) + k->restart_backoff_ms;
  char err[512];
  if (producer_new(k, err, sizeof err) < 0)
    lg_log_error(k->component, "%s; trying again in %" PRIu64 " ms", err,
                 k->restart_backoff_ms);
}

/* Destroys the producer: what is still queued is purged without acks
 * (those records stay after the checkpoint). */
static void finish(kout_t *k) {
  if (k->finished)
    return;
  k->finished = 1;
  if (k->head != NULL)
    k->abandoned = 1;
  producer_destroy(k);
  uv_close((uv_handle_t *)&k->poll, handle_closed);
  uv_close((uv_handle_t *)&k->tick, handle_closed);
  uv_close((uv_handle_t *)&k->exit_timer, handle_closed);
}

/* ---- the type -------------------------------------------------------------- */

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

static char *opt_str(const lg_output_t *o, const char *name) {
  const lg_optval_t *v = lg_output_opt(o, name);
  return v != NULL && v->s != NULL && v->s[0] != '\0' ? v->s : NULL;
}

static int64_t opt_int(const lg_output_t *o, const char *name, int64_t def) {
  const lg_optval_t *v = lg_output_opt(o, name);
  return v != NULL ? v->i : def;
}

static int kafka_init(lg_output_t *o, char *err, size_t errlen) {
  const char *name = o->conf->name;
  const lg_optval_t *brokers = lg_output_opt(o, "brokers");
  if (brokers == NULL || brokers->n == 0) {
    snprintf(err, errlen, "outputs.%s.brokers: required", name);
    return -EINVAL;
  }
  const char *topic = opt_str(o, "topic");
  const char *topic_field = opt_str(o, "topic_field");
  if (topic == NULL && topic_field == NULL) {
    snprintf(err, errlen, "outputs.%s: needs `topic` or `topic_field`", name);
    return -EINVAL;
  }
  const char *key = opt_str(o, "key");
  kout_t *k = calloc(1, sizeof *k);
  if (k == NULL) {
    snprintf(err, errlen, "outputs.%s: out of memory", name);
    return -ENOMEM;
  }
  k->o = o;
  k->pipefd[0] = k->pipefd[1] = -1;
  register_metrics(k);
  snprintf(k->component, sizeof k->component, "output.%s", name);
  k->topic = topic != NULL ? strdup(topic) : NULL;
  k->topic_field = topic_field != NULL ? strdup(topic_field) : NULL;
  if (key == NULL || strcmp(key, "none") == 0) {
    k->key_mode = KEY_NONE;
  } else if (strcmp(key, "id") == 0) {
    k->key_mode = KEY_ID;
  } else {
    k->key_mode = KEY_FIELD;
    k->key_field = strdup(key + 6);
  }
  k->headers = (int)opt_int(o, "headers", 1);

  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  char list[4096] = "";
  size_t used = 0;
  for (size_t i = 0; i < brokers->n; i++)
    used += (size_t)snprintf(list + used, used < sizeof list ? sizeof list - used : 0,
                             "%s%s", i ? "," : "", brokers->vals[i]);
  char num[32];
  int rc = set_prop(conf, o, "bootstrap.servers", list, err, errlen);
  /* Retriable failures never end a message: it waits until delivered. */
  rc = rc ? rc : set_prop(conf, o, "message.timeout.ms", "0", err, errlen);
  const char *comp = opt_str(o, "compression");
  rc = rc ? rc
          : set_prop(conf, o, "compression.codec", comp ? comp : "none", err,
                     errlen);
  const char *acks = opt_str(o, "acks");
  rc = rc ? rc : set_prop(conf, o, "acks", acks ? acks : "all", err, errlen);
  rc = rc ? rc
          : set_prop(conf, o, "enable.idempotence",
                     opt_int(o, "idempotence", 1) ? "true" : "false", err,
                     errlen);
  snprintf(num, sizeof num, "%" PRId64, opt_int(o, "linger", 5));
  rc = rc ? rc : set_prop(conf, o, "linger.ms", num, err, errlen);
  snprintf(num, sizeof num, "%" PRId64, opt_int(o, "max_batch_bytes", 1000000));
  rc = rc ? rc : set_prop(conf, o, "batch.size", num, err, errlen);
  snprintf(num, sizeof num, "%" PRId64, opt_int(o, "max_batch_size", 10000));
  rc = rc ? rc : set_prop(conf, o, "batch.num.messages", num, err, errlen);
  /* Statistics carry librdkafka's own retry count (stats_cb). */
  rc = rc ? rc
          : set_prop(conf, o, "statistics.interval.ms", "1000", err, errlen);
  const lg_optval_t *pass = lg_output_opt(o, "librdkafka");
  const lg_optval_t *idemp = lg_output_opt(o, "idempotence");
  k->idemp_auto = idemp != NULL && !idemp->set && idemp->i;
  for (size_t i = 0; rc == 0 && pass != NULL && i < pass->n; i++) {
    rc = set_prop(conf, o, pass->keys[i], pass->vals[i], err, errlen);
    if (strcmp(pass->keys[i], "enable.idempotence") == 0)
      k->idemp_auto = 0;
  }
  if (rc < 0) {
    rd_kafka_conf_destroy(conf);
    goto fail;
  }
  rd_kafka_conf_set_opaque(conf, k);
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  rd_kafka_conf_set_stats_cb(conf, stats_cb);
  k->conf_tpl = conf;
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
  uv_timer_init(o->loop, &k->exit_timer);
  k->poll.data = k->tick.data = k->exit_timer.data = k;
  k->handles_open = 3;
  uv_poll_start(&k->poll, UV_READABLE, on_pipe);
  uv_timer_start(&k->tick, on_tick, TICK_MS, TICK_MS);
  /* Neither the idle pipe watch nor the tick keeps a loop alive; exit
   * refs the pipe watch while it drains. */
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
  free(k->topic);
  free(k->topic_field);
  free(k->key_field);
  free(k);
  return rc;
}

static int kafka_submit(lg_output_t *o, const char *data, size_t len,
                        uint32_t nrecs, void *ref) {
  (void)nrecs; /* the chunk is split at its newlines anyway */
  kout_t *k = o->impl;
  if (k->closing)
    return -ESHUTDOWN;
  kchunk_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return -ENOMEM;
  c->ref = ref;
  c->data = data;
  c->len = len;
  for (const char *p = data, *end = data + len; p < end;) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    c->total++;
    p = nl != NULL ? nl + 1 : end;
  }
  if (o->rec_ids != NULL && c->total > 0 &&
      (k->key_mode == KEY_ID || k->headers)) {
    c->idoff = malloc(c->total * sizeof *c->idoff);
    if (c->idoff == NULL) {
      free(c);
      return -ENOMEM;
    }
    memset(c->idoff, 0xff, c->total * sizeof *c->idoff); /* NO_ID */
    if (o->rec_ids(o->rec_ids_ud, ref, collect_id, c) < 0) {
      free(c->idoff);
      free(c->idbuf);
      c->idoff = NULL;
      c->idbuf = NULL;
    }
  }
  if (k->tail != NULL)
    k->tail->next = c;
  else
    k->head = c;
  k->tail = c;
  if (k->prod == NULL)
    k->prod = c;
  pump(k);
  /* An empty chunk (or one whose records all failed at produce) acks now;
   * that may recurse into submit from the ack callback, which is fine:
   * the queue is consistent here. */
  ack_ready(k);
  return 0;
}

static void kafka_exit(lg_output_t *o) {
  kout_t *k = o->impl;
  k->closing = 1;
  if (k->head == NULL) {
    finish(k);
    return;
  }
  uv_ref((uv_handle_t *)&k->poll);
  uv_timer_start(&k->exit_timer, on_exit_timeout, EXIT_FLUSH_MS, 0);
  serve(k);
  maybe_finish(k);
}

static void kafka_abandon(lg_output_t *o) {
  kout_t *k = o->impl;
  if (k == NULL || k->finished)
    return;
  if (k->head != NULL)
    lg_log_warn(k->component, "gave up on undelivered chunks at exit");
  k->abandoned = 1;
  finish(k);
}

const lg_output_type_t lg__output_kafka = {
    .name = "kafka",
    .options = kafka_options,
    .init = kafka_init,
    .submit = kafka_submit,
    .reopen = NULL,
    .exit = kafka_exit,
    .abandon = kafka_abandon,
};

int lg_output_kafka_stats(const lg_output_t *o, lg_kafka_stats_t *out) {
  if (o == NULL || o->vt != &lg__output_kafka || o->impl == NULL ||
      out == NULL)
    return -EINVAL;
  const kcounters_t *c = &((const kout_t *)o->impl)->ctr;
  memset(out, 0, sizeof *out);
  out->messages_delivered = atomic_load_explicit(&c->delivered, memory_order_relaxed);
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
