/*
 * lg_out_cloudwatch_logs.c - the `cloudwatch_logs` output: records as log
 * events in Amazon CloudWatch Logs (PutLogEvents).
 *
 * Encoding (worker threads): a record becomes its event, already JSON
 * ({"timestamp":<ms>,"message":"..."}; the message is the record as JSON,
 * or its body), in data; its log group and log stream (the name templates
 * with the record's {field}s expanded and made valid names), its time in
 * ms and the UTF-8 size of its message, in meta.
 *
 * Sending (loop thread): a request of the delivery layer is grouped by
 * (group, stream); each stream's events are sorted by time (stably: events
 * of the same millisecond keep their order) and cut into PutLogEvents
 * calls within CloudWatch's limits, enforced here rather than learnt from
 * a refusal: at most 1,048,576 bytes counting each message's UTF-8 bytes
 * plus 26, at most 10,000 events, at most 24 hours between the first and
 * the last event. Streams are sent in parallel, the calls of one stream one
 * after the other; when one is to be retried, the stream's later calls are
 * retried with it instead of being sent before it. Sorting changes only
 * the order inside a call: results are set per record, and the delivery
 * layer acks batches in their order.
 *
 * A record whose message is larger than max_event_size (message bytes plus
 * 26) goes to the dead-letter output, whole: splitting a record into
 * several events would hand CloudWatch pieces no query sees as one record.
 * So does an empty message (CloudWatch takes at least one byte).
 *
 * Answers (awsJson1.1: HTTP 200 with a JSON body, or an error status with
 * {"__type": "...", "message": "..."}): ResourceNotFoundException creates
 * the stream (CreateLogStream), and first the group when that says it is
 * missing too (CreateLogGroup; then PutRetentionPolicy when retention_days
 * is set and the group is new; ResourceAlreadyExistsException is fine at
 * each step), and sends the call again;
 * rejectedLogEventsInfo (tooOldLogEventEndIndex, tooNewLogEventStartIndex,
 * expiredLogEventEndIndex) sends those events' records to the dead-letter
 * output with the reason, the others are delivered; ThrottlingException,
 * ServiceUnavailableException, credential errors, 5xx and network errors
 * are retried (the delivery layer's backoff); InvalidParameterException and
 * other 4xx reject the call's records with CloudWatch's message.
 *
 * PutLogEvents has no idempotency key (sequence tokens are ignored since
 * 2023): an answer lost after CloudWatch stored the events makes the retry
 * store them again. Delivery is at least once.
 *
 * Follows: Amazon CloudWatch Logs API Reference (PutLogEvents,
 * CreateLogGroup, CreateLogStream, PutRetentionPolicy, Common Errors;
 * InputLogEvent; group and stream name patterns), the AWS JSON 1.1
 * protocol (X-Amz-Target: Logs_20140328.<Operation>, Content-Type
 * application/x-amz-json-1.1, error __type), SigV4 with service "logs".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/lg_aws_creds.h"
#include "core/lg_aws_sigv4.h"
#include "core/lg_buf.h"
#include "core/lg_http_client.h"
#include "core/lg_list.h"
#include "core/lg_log.h"
#include "outputs/lg_aws_conn.h"
#include "outputs/lg_out_cloudwatch_logs_internal.h"
#include "outputs/lg_out_http_common.h"
#include "outputs/lg_output.h"

/* The values PutRetentionPolicy takes (API reference, retentionInDays). */
static const int retention_values[] = {
    1,   3,   5,   7,   14,   30,   60,   90,   120,  150,  180,
    365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653};

static int check_retention(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i == 0)
    return 0;
  for (size_t k = 0; k < sizeof retention_values / sizeof *retention_values;
       k++)
    if (v->i == retention_values[k])
      return 0;
  snprintf(err, errlen,
           "one of CloudWatch's values: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, "
           "180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653 "
           "(or 0: none)");
  return -1;
}

static int check_event_size(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i <= CW_EVENT_OVERHEAD || v->i > CW_MAX_BATCH_BYTES) {
    snprintf(err, errlen, "more than 26 bytes and at most 1MiB");
    return -1;
  }
  return 0;
}

static const lg_option_t cw_options[] = {
    {.name = "log_group_name",
     .type = LG_OPT_STRING,
     .required = 1,
     .doc = "Log group name template: {field} from the record "
            "(\"/k8s/{k8s.namespace.name}\"); characters CloudWatch does not "
            "allow in group names become '_'.",
     .offset = offsetof(cw_conf_t, log_group_name)},
    {.name = "log_stream_name",
     .type = LG_OPT_STRING,
     .required = 1,
     .doc = "Log stream name template (\"{k8s.pod.name}/"
            "{k8s.container.name}\"); ':' and '*' become '_', a missing field "
            "is \"_\".",
     .offset = offsetof(cw_conf_t, log_stream_name)},
    {.name = "retention_days",
     .type = LG_OPT_INT,
     .def = "0",
     .check = check_retention,
     .doc = "Retention set (PutRetentionPolicy) on log groups this output "
            "creates; 0: CloudWatch's default (never expire).",
     .offset = offsetof(cw_conf_t, retention_days)},
    {.name = "message",
     .type = LG_OPT_ENUM,
     .def = "json",
     .choices = "json|body",
     .doc = "The event's message: the record as JSON, or its body only.",
     .offset = offsetof(cw_conf_t, message)},
    {.name = "max_event_size",
     .type = LG_OPT_BYTES,
     .def = "256KiB",
     .check = check_event_size,
     .doc = "Largest event, message bytes plus 26; a larger record goes to "
            "the dead-letter output.",
     .offset = offsetof(cw_conf_t, max_event_size)},
    LG_AWS_CONN_REGION_OPTION(cw_conf_t),
    {.name = "endpoint",
     .type = LG_OPT_STRING,
     .doc = "URL of the CloudWatch Logs API; default: "
            "https://logs.<region>.amazonaws.com (.amazonaws.com.cn in the "
            "China regions).",
     .offset = offsetof(cw_conf_t, endpoint)},
    LG_AWS_CONN_OPTIONS(cw_conf_t),
    {.name = "timeout",
     .type = LG_OPT_DURATION,
     .def = "30s",
     .check = lg_opt_check_positive,
     .doc = "Time for one API call and its answer; then it is retried.",
     .offset = offsetof(cw_conf_t, timeout_ms)},
    LG_OUT_DELIVERY_OPTIONS(cw_conf_t, "10000", "1MiB", "5s", "2", "0"),
    {.name = NULL},
};

/* ---- sending (loop thread) --------------------------------------------- */

enum { STEP_PUT, STEP_GROUP, STEP_RETENTION, STEP_STREAM };

struct cw_out {
  lg_output_t *o;
  const cw_conf_t *conf;
  lg_aws_conn_t aws;
  cw_send_t *sends; /* in flight */
};

static void send_free(cw_send_t *sd) {
  cw_out_t *s = sd->s;
  LG_LIST_UNLINK(s->sends, sd);
  for (size_t k = 0; k < sd->ncalls; k++) {
    free(sd->calls[k].recs);
    lg_buf_free(&sd->calls[k].body);
    free(sd->calls[k].aux);
  }
  free(sd->calls);
  free(sd->evs);
  lg_buf_free(&sd->conv);
  free(sd);
}

static void call_start(cw_call_t *c);

/* Ends call `c` with `res` for every record it holds that has no result
 * of its own yet (recs[k] == UINT32_MAX: set already), then starts the
 * next call of its stream, or ends the request after its last call. */
static void call_end(cw_call_t *c, lg_out_result_t res, const char *reason) {
  cw_send_t *sd = c->sd;
  c->hr = NULL;
  for (uint32_t k = 0; k < c->n; k++)
    if (c->recs[k] != UINT32_MAX)
      lg_out_req_set(sd->r, c->recs[k], res,
                     res == LG_OUT_DELIVERED ? NULL : reason);
  if (c->next_in_stream != NULL && res == LG_OUT_RETRY) {
    /* The stream's later events wait for these: sent now, they would be
     * stored before the ones retried. */
    char why[1200];
    snprintf(why, sizeof why,
             "sent after an earlier call of its stream, which failed: %s",
             reason ? reason : "?");
    for (cw_call_t *x = c->next_in_stream; x; x = x->next_in_stream)
      for (uint32_t k = 0; k < x->n; k++)
        lg_out_req_set(sd->r, x->recs[k], LG_OUT_RETRY, why);
  } else if (c->next_in_stream != NULL) {
    call_start(c->next_in_stream);
    return; /* its end counts down instead */
  }
  if (--sd->pending == 0) {
    lg_out_req_t *r = sd->r;
    send_free(sd); /* first: the last request's end may close the output */
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
  }
}

static void on_answer(void *ud, lg_http_req_t *hr,
                      const lg_http_response_t *res);

/* Signs and sends one awsJson1.1 call of operation `op` with `body`. */
static void call_send(cw_call_t *c, const char *op, const char *body,
                      size_t len) {
  cw_out_t *s = c->sd->s;
  char target[64];
  snprintf(target, sizeof target, "Logs_20140328.%s", op);
  const char *hn[1] = {"X-Amz-Target"}, *hv[1] = {target};
  lg_aws_conn_req_t r = {0};
  r.method = "POST";
  r.path = "/";
  r.service = "logs";
  r.content_type = "application/x-amz-json-1.1";
  r.header_names = hn;
  r.header_values = hv;
  r.nheaders = 1;
  r.body = body;
  r.body_len = len;
  char why[512];
  c->hr = lg_aws_conn_send(&s->aws, &r, on_answer, c, why, sizeof why);
  if (!c->hr)
    call_end(c, LG_OUT_RETRY, why);
}

/* Sends a create call (CreateLogGroup, PutRetentionPolicy,
 * CreateLogStream) for call `c`'s group and stream. */
static void call_create(cw_call_t *c, int step) {
  cJSON *o = cJSON_CreateObject();
  const char *op = step == STEP_GROUP       ? "CreateLogGroup"
                   : step == STEP_RETENTION ? "PutRetentionPolicy"
                                            : "CreateLogStream";
  int ok = o && cJSON_AddStringToObject(o, "logGroupName", c->group);
  if (ok && step == STEP_STREAM)
    ok = cJSON_AddStringToObject(o, "logStreamName", c->stream) != NULL;
  if (ok && step == STEP_RETENTION)
    ok =
        cJSON_AddNumberToObject(o, "retentionInDays",
                                (double)c->sd->s->conf->retention_days) != NULL;
  free(c->aux);
  c->aux = ok ? cJSON_PrintUnformatted(o) : NULL;
  cJSON_Delete(o);
  if (!c->aux) {
    call_end(c, LG_OUT_RETRY, "out of memory");
    return;
  }
  c->step = step;
  call_send(c, op, c->aux, strlen(c->aux));
}

static void call_start(cw_call_t *c) {
  c->step = STEP_PUT;
  call_send(c, "PutLogEvents", c->body.data, c->body.len);
}

/* The error's name from an awsJson1.1 answer: the body's "__type" (or the
 * x-amzn-ErrorType header), without a "namespace#" prefix or a ":..."
 * suffix, into `type`; its "message" (or "Message") into `msg`. */
static void error_of(lg_http_req_t *hr, const cJSON *root, char *type,
                     size_t tcap, char *msg, size_t mcap) {
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "__type");
  const char *v = cJSON_IsString(t) ? t->valuestring : NULL;
  if (!v && hr)
    v = lg_http_response_header(hr, "x-amzn-ErrorType");
  v = v ? v : "";
  const char *h = strrchr(v, '#');
  v = h ? h + 1 : v;
  snprintf(type, tcap, "%.*s", (int)strcspn(v, ":"), v);
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "message");
  if (!cJSON_IsString(m))
    m = cJSON_GetObjectItemCaseSensitive(root, "Message");
  snprintf(msg, mcap, "%s", cJSON_IsString(m) ? m->valuestring : "");
}

/* What an error answer means for the records (awsJson1.1 and CloudWatch
 * Logs' errors; RFC 9110 for statuses without a known __type). */
static lg_out_result_t classify_error(const lg_http_response_t *res,
                                      const char *type) {
  static const char *const retry[] = {
      "ThrottlingException", "ServiceUnavailableException",
      "LimitExceededException", "OperationAbortedException",
      "InvalidSequenceTokenException",
      /* Credentials and permissions: the operator fixes them. */
      "UnrecognizedClientException", "AccessDeniedException",
      "ExpiredTokenException", "InvalidSignatureException",
      "IncompleteSignature", "InvalidClientTokenId",
      "MissingAuthenticationToken", "SignatureDoesNotMatch", "RequestExpired",
      NULL};
  if (res->status == 0 || res->status >= 500 || res->status == 429 ||
      res->status == 408 || res->status == 401 || res->status == 403)
    return LG_OUT_RETRY;
  for (int k = 0; retry[k]; k++)
    if (strcmp(type, retry[k]) == 0)
      return LG_OUT_RETRY;
  if (strcmp(type, "DataAlreadyAcceptedException") == 0)
    return LG_OUT_DELIVERED;
  /* Still missing after the create calls (deleted meanwhile): later. */
  if (strcmp(type, "ResourceNotFoundException") == 0)
    return LG_OUT_RETRY;
  return LG_OUT_REJECTED;
}

/* PutLogEvents answered 200: the events named in rejectedLogEventsInfo go
 * to the dead-letter output, the others are delivered. */
static void put_ok(cw_call_t *c, const cJSON *root) {
  const cJSON *ri =
      cJSON_GetObjectItemCaseSensitive(root, "rejectedLogEventsInfo");
  static const struct {
    const char *key;
    int before; /* the index ends a prefix (exclusive), or starts a suffix */
    const char *why;
  } kinds[] = {
      {"tooOldLogEventEndIndex", 1,
       "older than 14 days or than the log group's retention"},
      {"expiredLogEventEndIndex", 1, "older than the log group's retention"},
      {"tooNewLogEventStartIndex", 0, "more than 2 hours in the future"},
  };
  for (size_t k = 0; cJSON_IsObject(ri) && k < 3; k++) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(ri, kinds[k].key);
    if (!cJSON_IsNumber(x))
      continue;
    double at = x->valuedouble;
    char reason[768];
    snprintf(reason, sizeof reason,
             "cloudwatch_logs: PutLogEvents rejected the event (%s %.0f: %s) "
             "in %s / %s",
             kinds[k].key, at, kinds[k].why, c->group, c->stream);
    for (uint32_t e = 0; e < c->n; e++) {
      int hit = kinds[k].before ? (double)e < at : (double)e >= at;
      if (hit && c->recs[e] != UINT32_MAX) {
        lg_out_req_set(c->sd->r, c->recs[e], LG_OUT_REJECTED, reason);
        c->recs[e] = UINT32_MAX; /* has its result */
      }
    }
  }
  call_end(c, LG_OUT_DELIVERED, NULL);
}

static void on_answer(void *ud, lg_http_req_t *hr,
                      const lg_http_response_t *res) {
  cw_call_t *c = ud;
  cw_out_t *s = c->sd->s;
  c->hr = NULL;
  cJSON *root = res->body_len && !res->truncated
                    ? cJSON_ParseWithLength(res->body, res->body_len)
                    : NULL;
  if (res->status == 200) {
    if (c->step == STEP_PUT)
      put_ok(c, root);
    else if (c->step == STEP_GROUP)
      call_create(c,
                  s->conf->retention_days > 0 ? STEP_RETENTION : STEP_STREAM);
    else if (c->step == STEP_RETENTION)
      call_create(c, STEP_STREAM);
    else
      call_start(c);
    cJSON_Delete(root);
    return;
  }
  char type[128], msg[512], reason[1024];
  error_of(hr, root, type, sizeof type, msg, sizeof msg);
  cJSON_Delete(root);
  static const char *const ops[] = {"PutLogEvents", "CreateLogGroup",
                                    "PutRetentionPolicy", "CreateLogStream"};
  if (res->status == 0) {
    snprintf(reason, sizeof reason, "cloudwatch_logs %s: %s", ops[c->step],
             res->error);
  } else if (*type) {
    snprintf(reason, sizeof reason, "cloudwatch_logs %s: HTTP %d %s: %s",
             ops[c->step], res->status, type, msg);
  } else {
    char r2[600];
    lg_out_http_classify(res, r2, sizeof r2);
    snprintf(reason, sizeof reason, "cloudwatch_logs %s: %s", ops[c->step], r2);
  }
  if (res->status == 0 || res->status >= 500)
    lg_http_req_host_failed(hr);
  int missing = strcmp(type, "ResourceNotFoundException") == 0;
  /* A missing stream in an existing group is the common case (a new pod):
   * CreateLogStream first, and CreateLogGroup only when it says the group
   * is missing too, so a role without logs:CreateLogGroup works with
   * groups made beforehand. */
  if (c->step == STEP_PUT && missing && !c->created) {
    c->created = 1;
    call_create(c, STEP_STREAM);
    return;
  }
  if (c->step == STEP_STREAM && missing && !c->group_tried) {
    c->group_tried = 1;
    call_create(c, STEP_GROUP);
    return;
  }
  if (c->step == STEP_GROUP &&
      strcmp(type, "ResourceAlreadyExistsException") == 0) {
    /* Someone else's group: its retention is theirs to set. */
    call_create(c, STEP_STREAM);
    return;
  }
  if (c->step == STEP_STREAM &&
      strcmp(type, "ResourceAlreadyExistsException") == 0) {
    call_start(c);
    return;
  }
  if (c->step == STEP_RETENTION && res->status != 0 &&
      classify_error(res, type) != LG_OUT_RETRY) {
    /* The group exists; a retention CloudWatch refuses does not keep the
     * events out. */
    lg_log_warn("output.cloudwatch_logs", "%s: %s", s->o->name, reason);
    call_create(c, STEP_STREAM);
    return;
  }
  call_end(c, classify_error(res, type), reason);
}

static void cw_send(lg_output_t *o, lg_out_req_t *r) {
  cw_out_t *s = o->impl;
  cw_send_t *sd = calloc(1, sizeof *sd);
  cw_ev_t *evs = calloc(r->n ? r->n : 1, sizeof *evs);
  if (sd == NULL || evs == NULL) {
    free(sd);
    free(evs);
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  sd->s = s;
  sd->r = r;
  sd->evs = evs;
  LG_LIST_PUSH(s->sends, sd); /* linked first: send_free unlinks */
  int rc = lg__cwl_plan(sd, s->conf, lg_out_req_recs(r), r->n);
  if (rc != 0) {
    send_free(sd);
    lg_out_req_done(r, LG_OUT_RETRY,
                    rc == -ENOMEM ? "out of memory" : "bad event metadata");
    return;
  }
  if (sd->pending == 0) { /* every record was rejected above */
    send_free(sd);
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
    return;
  }
  /* One extra count while starting: a call may end at once. */
  sd->pending++;
  for (size_t c = 0; c < sd->ncalls; c++)
    if (!sd->calls[c].chained)
      call_start(&sd->calls[c]);
  if (--sd->pending == 0) {
    send_free(sd);
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
  }
}

/* ---- lifecycle ----------------------------------------------------------- */

/* lg_output_type_t.check. */
static int cw_check(const char *name, const void *vconf, char *err,
                    size_t errlen) {
  const cw_conf_t *c = vconf;
  if (!c->log_group_name || !*c->log_group_name || !c->log_stream_name ||
      !*c->log_stream_name) {
    snprintf(err, errlen,
             "outputs.%s: log_group_name and log_stream_name must not be "
             "empty",
             name);
    return -EINVAL;
  }
  return 0;
}

static int cw_init(lg_output_t *o, const void *vconf, char *err,
                   size_t errlen) {
  const cw_conf_t *c = vconf;
  cw_out_t *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->o = o;
  s->conf = c;
  lg_aws_conn_conf_t ac = LG_AWS_CONN_CONF(c);
  int rc =
      lg_aws_conn_open(&s->aws, o->loop, o->name, "logs", &ac, err, errlen);
  if (rc != 0) {
    free(s);
    return rc;
  }
  o->impl = s;
  return 0;
}

/* Ends every call in flight, and those not started, as RETRY: the client
 * is closed and its answers no longer come. Records of calls that ended
 * already keep their results (set when each call ended). */
static void cw_cancel(lg_output_t *o) {
  cw_out_t *s = o->impl;
  lg_aws_conn_cancel(&s->aws);
  for (cw_send_t *sd = s->sends, *next; sd; sd = next) {
    next = sd->next;
    lg_out_req_t *r = sd->r;
    /* Freed first: the last request's end closes the output, and `s`
     * with it. */
    send_free(sd);
    lg_out_req_done(r, LG_OUT_RETRY, "cancelled at shutdown");
  }
}

static void cw_close(lg_output_t *o) {
  cw_out_t *s = o->impl;
  lg_aws_conn_close(&s->aws, o);
}

const lg_output_type_t lg__output_cloudwatch_logs = {
    .name = "cloudwatch_logs",
    .doc = "Sends records as log events to Amazon CloudWatch Logs "
           "(PutLogEvents), group and stream from record fields, created "
           "when missing; events CloudWatch rejects go to the dead-letter "
           "output.",
    .options = cw_options,
    .conf_size = sizeof(cw_conf_t),
    .rejects = 1,
    .encode = lg__cwl_encode,
    .check = cw_check,
    .init = cw_init,
    .send = cw_send,
    .cancel = cw_cancel,
    .close = cw_close,
};
