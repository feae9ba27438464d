/*
 * lg_out_kafka_produce.c - the `kafka` output's records: encoding each one
 * as a message (worker thread), producing the records of the requests in
 * flight, and the delivery reports and errors that set their results
 * (loop thread). The producer itself (its configuration, restart, destroy)
 * is in lg_out_kafka.c; the whole output is described there.
 */
#include "outputs/lg_out_kafka_internal.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "core/lg_json.h"
#include "core/lg_log.h"
#include "core/lg_time.h"
#include "pipeline/lg_record_json.h"

/* Kafka topic names have at most 249 bytes. */
#define TOPIC_MAX 249

/* ---- errors ------------------------------------------------------------ */

/* Errors that retrying cannot fix: the record goes to dead-letter. The
 * broker's refusals of a record for what it is (Kafka protocol error codes
 * the protocol guide marks not retriable: its timestamp outside the topic's
 * message.timestamp.difference.max.ms, a create/alter policy, a feature the
 * topic's message format version lacks) come back the same each time. */
static int is_permanent(rd_kafka_resp_err_t e) {
  switch (e) {
  case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
  case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
  case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
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

void lg__kafka_count_retry(kout_t *k) {
  atomic_fetch_add_explicit(&k->ctr.retries, 1, memory_order_relaxed);
  lg_metric_add(k->ctr.m_retries, 1);
}

void lg__kafka_in_flight_add(kout_t *k, int64_t d) {
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

int lg__kafka_encode(const void *conf, const lg_batch_t *b, uint32_t i,
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
    lg__kafka_in_flight_add(k, 1);
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
    lg__kafka_count_retry(k);
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
      if (q->produced == q->settled) /* none outstanding: the clock starts */
        q->produced_at = uv_now(k->o->loop);
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

void lg__kafka_pump(kout_t *k) {
  if (k->pumping) {
    k->pump_again = 1;
    return;
  }
  k->pumping = 1;
  do {
    k->pump_again = 0;
    if (k->cancelled || k->rk == NULL || k->fatal || k->closing || k->rewinding)
      break;
    pump_once(k);
  } while (k->pump_again && !k->stalled);
  k->pumping = 0;
}

/* Delivery report: on the loop thread, from rd_kafka_poll. */
void lg__kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m,
                     void *opaque) {
  (void)rk;
  kout_t *k = opaque;
  kmsg_t *msg = m->_private;
  if (k->restarting || msg == NULL)
    return;
  lg__kafka_in_flight_add(k, -1);
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
  } else if (k->rewinding && (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
                              m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)) {
    /* Purged by the rewind: produced again. Those past lugger's message
     * timeout count as timed out; the others were only taken back. */
    if (k->msg_timeout_ms > 0 &&
        uv_now(k->o->loop) >= q->produced_at + (uint64_t)k->msg_timeout_ms)
      count_err(k, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, 0);
    lg__kafka_count_retry(k);
    settle(k, q, j, LG_OUT_RETRY, k->rewind_why);
  } else {
    /* Retriable, yet librdkafka gave up on it (a finite message.timeout.ms,
     * a finite `retries`): the layer sends it again after backoff, never
     * drops it. Newer records librdkafka still holds would go out before
     * it (a partition's order broken): the rewind takes them back first,
     * and they go again after it. */
    char why[256];
    snprintf(why, sizeof why, "%s: %s", rd_kafka_err2name(m->err),
             rd_kafka_err2str(m->err));
    count_err(k, m->err, 0);
    lg__kafka_count_retry(k);
    if (!k->retry_logged)
      lg_log_warn(k->component,
                  "delivery failed (%s); producing again, in order, every "
                  "record not delivered yet (and any others that fail "
                  "until one is delivered)",
                  why);
    k->retry_logged = 1;
    settle(k, q, j, LG_OUT_RETRY, why);
    if (!k->rewinding) {
      k->rewinding = 1;
      k->rewind_at = uv_now(k->o->loop);
      snprintf(k->rewind_why, sizeof k->rewind_why, "%s", why);
    }
  }
  maybe_done(k, q);
}

/* librdkafka statistics (statistics.interval.ms), on the loop thread: the
 * only place its own request retries (leader changes, timeouts) show. */
int lg__kafka_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
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

void lg__kafka_error_cb(rd_kafka_t *rk, int err, const char *reason,
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

/* Answers every request in flight: records without a report are retried
 * (by the layer, after backoff). */
void lg__kafka_fail_in_flight(kout_t *k, const char *why) {
  /* The layer sends nothing until the last request has ended: a request
   * made between two of these would hold the retried records of the first
   * and newer ones, ahead of the retried records of the second. */
  lg_output_hold_sends(k->o, 1);
  while (k->head != NULL) {
    kreq_t *q = k->head;
    for (uint32_t j = 0; j < q->r->n; j++)
      if (!q->done[j])
        settle(k, q, j, LG_OUT_RETRY, why);
    maybe_done(k, q);
  }
  k->rewinding = 0;
  lg_output_hold_sends(k->o, 0);
}

void lg__kafka_rewind(kout_t *k) {
  if (!k->rewinding || k->rk == NULL || k->fatal || k->cancelled)
    return;
  if (atomic_load_explicit(&k->ctr.in_flight, memory_order_relaxed) > 0) {
    /* Again at every call: a request that failed on the wire puts its
     * messages back in librdkafka's queue, to be sent once the broker is
     * back (after retry.backoff.ms), ahead of the records failed before.
     * Without waiting for the broker threads (one may be resolving a
     * name): their reports come later, and the rewind waits for them. */
    int flags = RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_NON_BLOCKING;
    if (k->msg_timeout_ms > 0 &&
        uv_now(k->o->loop) >= k->rewind_at + (uint64_t)k->msg_timeout_ms)
      flags |= RD_KAFKA_PURGE_F_INFLIGHT; /* as librdkafka's timeout would */
    rd_kafka_purge(k->rk, flags);
    k->polling = 1;
    for (int i = 0; i < 10000 && rd_kafka_poll(k->rk, 0) > 0; i++)
      ;
    k->polling = 0;
  }
  if (k->fatal || k->close_pending ||
      atomic_load_explicit(&k->ctr.in_flight, memory_order_relaxed) > 0)
    return;
  /* No message is with librdkafka: what was not delivered (failed, purged,
   * or never produced) goes back to the layer, which sends it again in
   * submit order after its backoff. */
  char why[sizeof k->rewind_why];
  memcpy(why, k->rewind_why, sizeof why);
  lg__kafka_fail_in_flight(k, why);
}

void lg__kafka_check_timeout(kout_t *k) {
  if (k->msg_timeout_ms <= 0 || k->rewinding || k->rk == NULL || k->fatal ||
      k->cancelled)
    return;
  const kreq_t *q = k->head;
  while (q != NULL && q->produced <= q->settled)
    q = q->next; /* nothing of it with librdkafka */
  uint64_t now = uv_now(k->o->loop);
  if (q == NULL || now < q->produced_at + (uint64_t)k->msg_timeout_ms)
    return;
  k->rewinding = 1;
  k->rewind_at = now;
  snprintf(k->rewind_why, sizeof k->rewind_why,
           "_MSG_TIMED_OUT: not delivered within message.timeout.ms (%" PRId64
           " ms)",
           k->msg_timeout_ms);
  if (!k->retry_logged)
    lg_log_warn(k->component,
                "records not delivered within message.timeout.ms (%" PRId64
                " ms); producing again, in order, every record not "
                "delivered yet",
                k->msg_timeout_ms);
  k->retry_logged = 1;
  lg__kafka_rewind(k);
}
