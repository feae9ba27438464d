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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "lg_config.h"
#include "lg_log.h"
#include "lg_output.h"

/* Housekeeping tick: serves the queue in case a wake-up was missed and
 * resumes producing after a full local queue. */
#define TICK_MS 20
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
  char **ids;     /* per record, from o->rec_ids; NULL without */
} kchunk_t;

typedef struct kretry {
  kchunk_t *c;
  size_t off, len;
} kretry_t;

typedef struct kout {
  lg_output_t *o;
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

  kchunk_t *head, *tail; /* unacked chunks, in submit order */
  kchunk_t *prod;        /* first chunk not fully produced */
  kretry_t *retry;       /* records to produce again (retriable DR error) */
  size_t nretry, retry_cap;

  int stalled; /* queue full: wait for reports or the tick */
  int fatal_logged;
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

static int check_positive(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i <= 0) {
    snprintf(err, errlen, "must be greater than 0");
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
     .doc = "Send headers lugger.id and log.file.path (Kafka 0.11+; older "
            "brokers drop them)."},
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
            "(needs Kafka 0.11+; set false for older brokers)."},
    {.name = "linger",
     .type = LG_OPT_DURATION,
     .def = "5ms",
     .check = check_nonneg,
     .doc = "How long to wait for more messages to fill a batch "
            "(linger.ms)."},
    {.name = "max_batch_bytes",
     .type = LG_OPT_BYTES,
     .def = "1MB",
     .check = check_positive,
     .doc = "Largest message batch in bytes (batch.size)."},
    {.name = "max_batch_size",
     .type = LG_OPT_INT,
     .def = "10000",
     .check = check_positive,
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

/* ---- chunks -------------------------------------------------------------- */

static void chunk_free(kchunk_t *c) {
  if (c->ids != NULL) {
    for (uint32_t j = 0; j < c->total; j++)
      free(c->ids[j]);
    free(c->ids);
  }
  free(c);
}

static void collect_id(void *arg, uint32_t j, const char *id, size_t len) {
  kchunk_t *c = arg;
  if (j < c->total && c->ids[j] == NULL)
    c->ids[j] = strndup(id, len);
}

/* Settles one record of `c`: status 0 delivered, < 0 failed for good. */
static void settle(kout_t *k, kchunk_t *c, int status, size_t len) {
  c->done++;
  if (status == 0) {
    k->o->records_out++;
    k->o->bytes_out += len;
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
    for (size_t i = 0; i < k->nretry; i++)
      if (k->retry[i].c == c)
        return; /* not settled: a record waits to be produced again */
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

/* The value of top-level string field `name` of a parsed record. */
static const char *json_str(const cJSON *root, const char *name) {
  const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, name);
  return cJSON_IsString(f) ? f->valuestring : NULL;
}

/* Produces record j of `c` (bytes [off, off+len) of the chunk). */
static rd_kafka_resp_err_t produce_one(kout_t *k, kchunk_t *c, size_t off,
                                       size_t len, uint32_t j) {
  const char *line = c->data + off;
  cJSON *root = NULL;
  if (k->topic_field != NULL || k->key_mode == KEY_FIELD || k->headers)
    root = cJSON_ParseWithLength(line, len);
  const char *topic = NULL;
  if (k->topic_field != NULL && root != NULL)
    topic = json_str(root, k->topic_field);
  if (topic == NULL)
    topic = k->topic;
  if (topic == NULL || topic[0] == '\0') {
    cJSON_Delete(root);
    return RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
  }
  const char *id = c->ids != NULL && j < c->total ? c->ids[j] : NULL;
  const char *key = NULL;
  char numkey[64];
  if (k->key_mode == KEY_ID) {
    key = id;
  } else if (k->key_mode == KEY_FIELD && root != NULL) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, k->key_field);
    if (cJSON_IsString(f)) {
      key = f->valuestring;
    } else if (cJSON_IsNumber(f)) {
      /* Integers are exact in the JSON text; print what was parsed. */
      snprintf(numkey, sizeof numkey, "%.17g", f->valuedouble);
      key = numkey;
    }
  }
  rd_kafka_headers_t *hdrs = NULL;
  if (k->headers) {
    const char *path = root != NULL ? json_str(root, "log.file.path") : NULL;
    if (id != NULL || path != NULL) {
      hdrs = rd_kafka_headers_new(2);
      if (id != NULL)
        rd_kafka_header_add(hdrs, "lugger.id", -1, id, -1);
      if (path != NULL)
        rd_kafka_header_add(hdrs, "log.file.path", -1, path, -1);
    }
  }
  size_t keylen = key != NULL ? strlen(key) : 0;
  rd_kafka_resp_err_t e;
  if (hdrs != NULL)
    e = rd_kafka_producev(
        k->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE((void *)line, len),
        RD_KAFKA_V_KEY(key, keylen),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(c), RD_KAFKA_V_END);
  else
    e = rd_kafka_producev(
        k->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE((void *)line, len),
        RD_KAFKA_V_KEY(key, keylen),
        RD_KAFKA_V_OPAQUE(c), RD_KAFKA_V_END);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR && hdrs != NULL)
    rd_kafka_headers_destroy(hdrs); /* owned by librdkafka only on success */
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
                 "record of %zu bytes rejected: %s; its chunk goes to the "
                 "dead-letter output",
                 len, rd_kafka_err2str(e));
    settle(k, c, err_status(e), len);
    return 1;
  }
  if (e == RD_KAFKA_RESP_ERR__FATAL) {
    if (!k->fatal_logged) {
      char buf[512];
      rd_kafka_fatal_error(k->rk, buf, sizeof buf);
      lg_log_error(k->component, "producer failed for good: %s; records "
                                 "stay unacked and are read again after a "
                                 "restart", buf);
      k->fatal_logged = 1;
    }
    k->stalled = 1;
    return 0;
  }
  /* Queue full or another local transient condition: try again later. */
  (void)off;
  if (!k->stalled)
    k->o->retries++;
  k->stalled = 1;
  return 0;
}

/* Produces what is waiting: records to produce again, then new records in
 * submit order, until the local queue is full. */
static void pump(kout_t *k) {
  if (k->abandoned || k->rk == NULL)
    return;
  k->stalled = 0;
  while (k->nretry > 0) {
    kretry_t r = k->retry[0];
    const char *nl = r.c->data;
    uint32_t j = 0;
    for (size_t i = 0; i < r.off; i++) /* rare path: find the record index */
      if (nl[i] == '\n')
        j++;
    rd_kafka_resp_err_t e = produce_one(k, r.c, r.off, r.len, j);
    if (!produced(k, r.c, e, r.off, r.len))
      return;
    memmove(k->retry, k->retry + 1, (k->nretry - 1) * sizeof *k->retry);
    k->nretry--;
  }
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
static void serve(kout_t *k) {
  if (k->rk == NULL || k->abandoned)
    return;
  for (int i = 0; i < 10000 && rd_kafka_poll(k->rk, 0) > 0; i++)
    ;
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
  if (k->abandoned || c == NULL)
    return;
  if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    settle(k, c, 0, m->len);
    return;
  }
  if (is_permanent(m->err)) {
    lg_log_error(k->component,
                 "topic %s: record of %zu bytes rejected: %s; its chunk goes "
                 "to the dead-letter output",
                 m->rkt != NULL ? rd_kafka_topic_name(m->rkt) : "?", m->len,
                 rd_kafka_err2str(m->err));
    settle(k, c, err_status(m->err), m->len);
    return;
  }
  /* Retriable, yet librdkafka gave up on it (a finite message timeout from
   * `librdkafka`, a purge): produce it again, never drop it. */
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
  k->o->retries++;
  lg_log_warn(k->component, "delivery failed (%s); producing the record again",
              rd_kafka_err2str(m->err));
  k->retry[k->nretry++] =
      (kretry_t){.c = c, .off = (size_t)((const char *)m->payload - c->data),
                 .len = m->len};
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque) {
  (void)rk;
  kout_t *k = opaque;
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    if (!k->down_logged)
      lg_log_warn(k->component, "all brokers down (%s); retrying", reason);
    k->down_logged = 1;
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    lg_log_error(k->component, "fatal: %s", reason);
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
  free(k);
  o->impl = NULL;
  lg__output_closed(o);
}

/* Destroys the producer: what is still queued is purged without acks
 * (those records stay after the checkpoint). */
static void finish(kout_t *k) {
  if (k->finished)
    return;
  k->finished = 1;
  if (k->head != NULL)
    k->abandoned = 1;
  if (k->rk != NULL) {
    rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(k->rk, 0); /* purge reports; dr_cb ignores them */
    rd_kafka_queue_destroy(k->mainq);
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
  }
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
  const lg_optval_t *pass = lg_output_opt(o, "librdkafka");
  for (size_t i = 0; rc == 0 && pass != NULL && i < pass->n; i++)
    rc = set_prop(conf, o, pass->keys[i], pass->vals[i], err, errlen);
  if (rc < 0) {
    rd_kafka_conf_destroy(conf);
    goto fail;
  }
  rd_kafka_conf_set_opaque(conf, k);
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  char e[512];
  k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  if (k->rk == NULL) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, errlen, "outputs.%s: librdkafka: %s", name, e);
    rc = -EINVAL;
    goto fail;
  }
  if (pipe2(k->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
    rc = -errno;
    snprintf(err, errlen, "outputs.%s: pipe: %s", name, strerror(errno));
    rd_kafka_destroy(k->rk);
    goto fail;
  }
  k->mainq = rd_kafka_queue_get_main(k->rk);
  rd_kafka_queue_io_event_enable(k->mainq, k->pipefd[1], "1", 1);
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
  free(k->topic);
  free(k->topic_field);
  free(k->key_field);
  free(k);
  return rc;
}

static int kafka_submit(lg_output_t *o, const char *data, size_t len,
                        void *ref) {
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
    c->ids = calloc(c->total, sizeof *c->ids);
    if (c->ids == NULL) {
      free(c);
      return -ENOMEM;
    }
    if (o->rec_ids(o->rec_ids_ud, ref, collect_id, c) < 0) {
      for (uint32_t j = 0; j < c->total; j++)
        free(c->ids[j]);
      free(c->ids);
      c->ids = NULL;
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
