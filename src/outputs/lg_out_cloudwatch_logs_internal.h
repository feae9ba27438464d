/*
 * lg_out_cloudwatch_logs_internal.h - the `cloudwatch_logs` output's
 * private types, shared by its two files and by no one else:
 *   lg_out_cloudwatch_logs.c         options, sending (PutLogEvents and the
 *                                    create calls, answers), lifecycle
 *   lg_out_cloudwatch_logs_events.c  encoding records as events (worker
 *                                    threads), and cutting a request into
 *                                    PutLogEvents calls within CloudWatch's
 *                                    limits (loop thread)
 */
#ifndef LG_OUT_CLOUDWATCH_LOGS_INTERNAL_H
#define LG_OUT_CLOUDWATCH_LOGS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/lg_buf.h"
#include "core/lg_http_client.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"

/* PutLogEvents limits (API reference, PutLogEvents). */
#define CW_MAX_BATCH_BYTES 1048576
#define CW_EVENT_OVERHEAD 26
#define CW_MAX_EVENTS 10000
#define CW_MAX_SPAN_MS (24LL * 3600 * 1000)
#define CW_MAX_NAME 512

typedef struct cw_conf {
  lg_out_limits_t limits;
  char *log_group_name, *log_stream_name;
  int64_t retention_days;
  int message; /* 0 json, 1 body */
  int64_t max_event_size;
  char *region, *endpoint;
  char *access_key_id, *secret_access_key, *session_token;
  char *ca_file;
  int tls_verify;
  int64_t timeout_ms;
} cw_conf_t;

typedef struct cw_out cw_out_t; /* the output's state (sending's own) */
typedef struct cw_send cw_send_t;

/* One record of a request as send sees it. */
typedef struct cw_ev {
  const char *group, *stream; /* NUL-terminated (meta, or the send's) */
  const char *data;           /* the event's JSON */
  uint32_t len;
  uint32_t j; /* index in the request */
  int64_t ms;
  size_t msg; /* message bytes */
} cw_ev_t;

/* One PutLogEvents call, with the calls that create what it needs. */
typedef struct cw_call {
  cw_send_t *sd;
  const char *group, *stream;
  uint32_t *recs; /* request indexes, in the call's (chronological) order */
  uint32_t n;
  lg_buf_t body;   /* PutLogEvents body */
  char *aux;       /* body of a create call in flight */
  int step;        /* the operation in flight (sending's STEP_*) */
  int created;     /* the create calls ran once already */
  int group_tried; /* CreateLogGroup was called */
  lg_http_req_t *hr;
  struct cw_call *next_in_stream; /* sent after this one */
  int chained;                    /* some call's next_in_stream */
} cw_call_t;

struct cw_send {
  cw_out_t *s;
  lg_out_req_t *r;
  cw_ev_t *evs;
  lg_buf_t conv; /* events and names of records submitted as text */
  cw_call_t *calls;
  size_t ncalls, pending;
  struct cw_send *next, *prev;
};

/* The output type's `encode` (lg_encode_fn, worker threads): appends
 * record `i` of `b` as its event, {"timestamp":<ms>,"message":"..."}
 * (message: the record as JSON, with `error` as "lugger.error" when not
 * NULL, or its body with message = body), to out->data, and
 * "<group>\0<stream>\0<ms>\0<message bytes>" to out->meta: the names
 * are the conf's templates expanded for the record, <message bytes> the
 * message's decoded UTF-8 size. `vconf` is a cw_conf_t. Returns 0, or
 * -ENOMEM with `out` as it was. */
int lg__cwl_encode(const void *vconf, const lg_batch_t *b, uint32_t i,
                   const char *error, lg_payload_t *out);

/* Cuts the `n` records `recs` of request sd->r into PutLogEvents calls
 * (loop thread): reads each record's event and names (its meta, or made
 * here for records submitted as text, into sd->conv), sorts them by
 * (group, stream), then time, stably, and fills sd->calls (sd->ncalls),
 * one chain of calls per stream within CloudWatch's limits (1,048,576
 * bytes counting each message plus 26, 10,000 events, under 24 hours from
 * first to last), counting each chain in sd->pending. Records larger than
 * conf->max_event_size or empty get LG_OUT_REJECTED now. sd->evs must hold
 * `n` zeroed entries. Returns 0, -ENOMEM, or -EINVAL (meta not as
 * lg__cwl_encode writes it); on error the calls made so far are in
 * sd->calls for the caller to free. */
int lg__cwl_plan(cw_send_t *sd, const cw_conf_t *conf, const lg_out_rec_t *recs,
                 uint32_t n);

#endif
