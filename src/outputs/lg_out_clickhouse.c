/*
 * lg_out_clickhouse.c - the `clickhouse` output: rows over ClickHouse's
 * HTTP interface (ClickHouse docs, "HTTP Interface"):
 *   POST /?query=INSERT INTO <table> FORMAT JSONEachRow
 *        &input_format_skip_unknown_fields=1&date_time_input_format=best_effort
 * with one JSON object per record (the record itself, or the columns of
 * `columns` taken from record fields).
 *
 * Both settings are sent explicitly: skip_unknown_fields defaults to 0 on
 * older servers (18.16: an unknown key fails the INSERT), and best_effort
 * is what parses RFC 3339 times into DateTime columns.
 *
 * Answers are classified by the `Code: N` ClickHouse puts in the body (or
 * its X-ClickHouse-Exception-Code header), not by the HTTP status, whose
 * mapping changed between versions: parse and type errors are permanent,
 * so the batch is split in halves until the bad rows are alone and go to
 * the dead-letter output (an INSERT of one block is atomic: none of a
 * failed batch was stored); anything else (too many parts, memory, a
 * replica or ZooKeeper away, the server down) is retried with the very same
 * rows in the very same order, which lets a ReplicatedMergeTree table
 * deduplicate a retry of a batch it did store (block hashes).
 * `insert_deduplication_token` (ClickHouse 22.2+) is sent where the server
 * knows it: a hash of the batch's record ids; a server that says
 * "Unknown setting" (Code 115) gets requests without it from then on.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_json.h"
#include "core/lg_log.h"
#include "core/lg_time.h"
#include "outputs/lg_out_http_common.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_record_json.h"

typedef struct ch_conf {
  lg_out_limits_t limits;
  lg_out_http_opts_t http;
  char *table;
  lg_opt_strmap_t columns; /* column -> record field */
  int skip_unknown_fields;
  int dedup_token; /* 0 auto, 1 off */
  char *id_field;
} ch_conf_t;

typedef struct ch {
  const ch_conf_t *conf;
  lg_out_http_t *http;
  char *path;      /* without the token */
  int token_known; /* 1 until the server says Code 115 for the token */
} ch_t;

static int check_table(const lg_optval_t *v, char *err, size_t errlen) {
  for (const char *p = v->s ? v->s : ""; *p; p++)
    if (!(*p == '_' || *p == '.' || (*p >= 'a' && *p <= 'z') ||
          (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) {
      snprintf(err, errlen,
               "\"%s\": a table name is letters, digits, '_' and one '.' "
               "between database and table",
               v->s);
      return -EINVAL;
    }
  return lg_opt_check_nonempty(v, err, errlen);
}

static const lg_option_t ch_options[] = {
    LG_OUT_HTTP_OPTIONS(ch_conf_t,
                        "Base URLs of the servers' HTTP interface "
                        "(\"http://clickhouse:8123\").",
                        "gzip"),
    {.name = "table",
     .type = LG_OPT_STRING,
     .required = 1,
     .check = check_table,
     .doc = "Table to insert into, \"table\" or \"database.table\".",
     .offset = offsetof(ch_conf_t, table)},
    {.name = "columns",
     .type = LG_OPT_STRMAP,
     .doc = "Column -> record field (e.g. { ts = \"time\", msg = \"body\", "
            "pod = \"k8s.pod.name\" }); without it each row is the record "
            "itself, its keys matched to column names.",
     .offset = offsetof(ch_conf_t, columns)},
    {.name = "skip_unknown_fields",
     .type = LG_OPT_BOOL,
     .def = "true",
     .doc = "Sent as input_format_skip_unknown_fields: keys with no column "
            "are ignored (false: such a row is rejected).",
     .offset = offsetof(ch_conf_t, skip_unknown_fields)},
    {.name = "dedup_token",
     .type = LG_OPT_ENUM,
     .def = "auto",
     .choices = "auto|off",
     .doc = "Send insert_deduplication_token (a hash of the batch's record "
            "ids) where the server knows it (22.2+).",
     .offset = offsetof(ch_conf_t, dedup_token)},
    {.name = "id_field",
     .type = LG_OPT_STRING,
     .def = "lugger.id",
     .doc = "Key that carries the record's stable id in each row (and the "
            "field name a columns entry uses for it; \"\": none). Give "
            "the table such a column: rows that differ only in it are "
            "otherwise equal blocks, which a ReplicatedMergeTree table "
            "would take for a retry and drop.",
     .offset = offsetof(ch_conf_t, id_field)},
    LG_OUT_DELIVERY_OPTIONS(ch_conf_t, "10000", "16MiB", "1s", "2", "0"),
    {.name = NULL},
};

/* ---- encoding (worker threads) ------------------------------------------ */

static int put_id(lg_buf_t *d, const lg_batch_t *b, uint32_t i) {
  char id[48];
  int n = lg_out_record_id(b, i, id, sizeof id);
  if (n <= 0)
    return lg_buf_append(d, "null", 4);
  return lg_json_append_string(d, id, (size_t)n);
}

static int put_value(const ch_conf_t *c, lg_buf_t *d, const lg_batch_t *b,
                     uint32_t i, const char *field) {
  if (c->id_field != NULL && c->id_field[0] != '\0' &&
      strcmp(field, c->id_field) == 0)
    return put_id(d, b, i);
  lg_ffi_val_t v;
  int t = lg_ffi_rec_get(b, i, field, strlen(field), &v);
  switch (t) {
  case LG_VAL_STR:
    return lg_json_append_string(d, v.s, v.len);
  case LG_VAL_JSON:
    return lg_buf_append(d, v.s, v.len);
  case LG_VAL_INT:
    return lg_json_append_int(d, v.i);
  case LG_VAL_NUM:
    return lg_json_append_number(d, v.d);
  case LG_VAL_BOOL:
    return lg_buf_append(d, v.i ? "true" : "false", v.i ? 4 : 5);
  default:
    return lg_buf_append(d, "null", 4);
  }
}

static int ch_encode(const void *vconf, const lg_batch_t *b, uint32_t i,
                     const char *error, lg_payload_t *out) {
  const ch_conf_t *c = vconf;
  lg_buf_t *d = &out->data;
  size_t start = d->len;
  int rc;
  if (c->columns.n == 0 || b == NULL) {
    rc = lg_json_encode_record_err(d, b, i, error,
                                   error != NULL ? strlen(error) : 0);
    if (rc == 0 && b != NULL && c->id_field != NULL && c->id_field[0] != '\0' &&
        d->len - start >= 3) {
      d->len -= 2; /* "}\n" */
      rc = lg_buf_appendf(d, "%s", d->len - start > 1 ? "," : "");
      if (rc == 0)
        rc = lg_json_append_string(d, c->id_field, strlen(c->id_field));
      if (rc == 0)
        rc = lg_buf_putc(d, ':');
      if (rc == 0)
        rc = put_id(d, b, i);
      if (rc == 0)
        rc = lg_buf_append(d, "}\n", 2);
    }
    if (rc != 0)
      d->len = start;
    return rc;
  }
  rc = lg_buf_putc(d, '{');
  for (size_t k = 0; rc == 0 && k < c->columns.n; k++) {
    if (k > 0)
      rc = lg_buf_putc(d, ',');
    if (rc == 0)
      rc = lg_json_append_string(d, c->columns.keys[k],
                                 strlen(c->columns.keys[k]));
    if (rc == 0)
      rc = lg_buf_putc(d, ':');
    if (rc == 0)
      rc = put_value(c, d, b, i, c->columns.vals[k]);
  }
  if (rc == 0 && error != NULL) {
    rc = lg_buf_append(d, ",\"lugger.error\":", 16);
    if (rc == 0)
      rc = lg_json_append_string(d, error, strlen(error));
  }
  if (rc == 0)
    rc = lg_buf_append(d, "}\n", 2);
  if (rc != 0)
    d->len = start;
  return rc;
}

/* ---- answers (loop thread) ----------------------------------------------- */

/* ClickHouse error codes (src/Common/ErrorCodes.cpp) that say a row's
 * content is wrong for the table: retrying the same rows cannot work. */
static int code_is_data_error(int code) {
  switch (code) {
  case 6:   /* CANNOT_PARSE_TEXT */
  case 26:  /* CANNOT_PARSE_QUOTED_STRING */
  case 27:  /* CANNOT_PARSE_INPUT_ASSERTION_FAILED */
  case 32:  /* ATTEMPT_TO_READ_AFTER_EOF */
  case 38:  /* CANNOT_PARSE_DATE */
  case 41:  /* CANNOT_PARSE_DATETIME */
  case 53:  /* TYPE_MISMATCH */
  case 69:  /* ARGUMENT_OUT_OF_BOUND */
  case 70:  /* CANNOT_CONVERT_TYPE */
  case 72:  /* CANNOT_PARSE_NUMBER */
  case 117: /* INCORRECT_DATA (unknown field without skip_unknown_fields) */
  case 349: /* CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN */
  case 395: /* FUNCTION_THROW_IF_VALUE_IS_NON_ZERO: a check on the row's
               values, e.g. a MATERIALIZED throwIf() column */
  case 457: /* VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE */
    return 1;
  default:
    return 0;
  }
}

/* The `Code: N` of an answer: the header modern servers send, else the
 * body ("Code: 27, e.displayText() = ..." on 18.16, "Code: 27. DB::..."
 * later). -1 when there is none. */
static int answer_code(lg_http_req_t *hr, const lg_http_response_t *res) {
  const char *h = lg_http_response_header(hr, "X-ClickHouse-Exception-Code");
  if (h != NULL)
    return atoi(h);
  const char *p = res->body_len >= 6 ? strstr(res->body, "Code: ") : NULL;
  if (p == NULL)
    return -1;
  return atoi(p + 6);
}

static void ch_answer(void *ud, lg_out_req_t *r, lg_http_req_t *hr,
                      const lg_http_response_t *res) {
  ch_t *c = ud;
  char reason[1024];
  int code = res->status != 0 ? answer_code(hr, res) : -1;
  if (res->status == 200 && code < 0) {
    lg_out_req_done(r, LG_OUT_DELIVERED, NULL);
    return;
  }
  if (code < 0) {
    lg_out_result_t k = lg_out_http_classify(res, reason, sizeof reason);
    if (k == LG_OUT_REJECTED) /* a 4xx without a ClickHouse code: a proxy */
      k = LG_OUT_RETRY;
    if (res->status == 0)
      lg_http_req_host_failed(hr);
    lg_out_req_done(r, k, reason);
    return;
  }
  snprintf(reason, sizeof reason, "clickhouse %s: ", res->host);
  lg_out_http_quote(reason, sizeof reason, res->body, res->body_len, 400);
  if (code == 115 && c->token_known &&
      strstr(res->body, "insert_deduplication_token") != NULL) {
    c->token_known = 0;
    lg_log_warn("output.clickhouse",
                "%s: the server has no "
                "insert_deduplication_token (before 22.2); sending without it",
                res->host);
    lg_out_req_done(r, LG_OUT_RETRY, reason);
    return;
  }
  if (code_is_data_error(code)) {
    /* Which row is bad is in the text ("at row 2") only for some errors
     * and versions; halving finds it for all of them. */
    lg_out_req_done(r, LG_OUT_SPLIT, reason);
    return;
  }
  lg_out_req_done(r, LG_OUT_RETRY, reason);
}

/* FNV-1a over the records' ids: the same batch gives the same token. */
static uint64_t batch_hash(lg_out_req_t *r) {
  uint64_t h = 1469598103934665603ull;
  const lg_out_rec_t *recs = lg_out_req_recs(r);
  char id[48];
  for (uint32_t j = 0; j < r->n; j++) {
    int n = recs[j].batch != NULL
                ? lg_out_record_id(recs[j].batch, recs[j].index, id, sizeof id)
                : 0;
    if (n <= 0) /* text records: hash their bytes */
      for (uint32_t k = 0; k < recs[j].len; k++)
        h = (h ^ (unsigned char)recs[j].data[k]) * 1099511628211ull;
    for (int k = 0; k < n; k++)
      h = (h ^ (unsigned char)id[k]) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  }
  return h;
}

static void ch_send(lg_output_t *o, lg_out_req_t *r) {
  ch_t *c = o->impl;
  lg_buf_t body = LG_BUF_INIT;
  if (lg_out_http_body(r, &body, 1) != 0) {
    lg_buf_free(&body);
    lg_out_req_done(r, LG_OUT_RETRY, "out of memory");
    return;
  }
  char path[1024];
  if (c->token_known && c->conf->dedup_token == 0)
    snprintf(path, sizeof path,
             "%s&insert_deduplication_token=lugger-%016llx-%u", c->path,
             (unsigned long long)batch_hash(r), r->n);
  else
    snprintf(path, sizeof path, "%s", c->path);
  lg_out_http_send(c->http, r, "POST", path, "application/x-ndjson", NULL, 0,
                   &body, ch_answer, c);
}

/* ---- lifecycle ------------------------------------------------------------
 */

static int ch_init(lg_output_t *o, const void *vconf, char *err,
                   size_t errlen) {
  const ch_conf_t *conf = vconf;
  ch_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return -ENOMEM;
  c->conf = conf;
  c->token_known = 1;
  char q[512];
  snprintf(q, sizeof q, "INSERT INTO %s FORMAT JSONEachRow", conf->table);
  char *eq = lg_http_escape(q);
  lg_buf_t p = LG_BUF_INIT;
  lg_buf_appendf(&p,
                 "/?query=%s&input_format_skip_unknown_fields=%d"
                 "&date_time_input_format=best_effort",
                 eq ? eq : "", conf->skip_unknown_fields ? 1 : 0);
  free(eq);
  if (lg_buf_putc(&p, '\0') != 0) {
    free(c);
    return -ENOMEM;
  }
  c->path = p.data;
  c->http = lg_out_http_create(o, &conf->http, NULL, err, errlen);
  if (c->http == NULL) {
    free(c->path);
    free(c);
    return -EINVAL;
  }
  o->impl = c;
  return 0;
}

static void ch_cancel(lg_output_t *o) {
  ch_t *c = o->impl;
  lg_out_http_cancel(c->http);
}

static void ch_close(lg_output_t *o) {
  ch_t *c = o->impl;
  lg_out_http_t *h = c->http;
  free(c->path);
  free(c);
  o->impl = NULL;
  lg_out_http_close(h);
}

const lg_output_type_t lg__output_clickhouse = {
    .name = "clickhouse",
    .doc = "Inserts records as rows into a ClickHouse table over HTTP "
           "(JSONEachRow); bad rows go to the dead-letter output.",
    .options = ch_options,
    .conf_size = sizeof(ch_conf_t),
    .rejects = 1,
    .frozen_retries = 1,
    .encode = ch_encode,
    .init = ch_init,
    .send = ch_send,
    .cancel = ch_cancel,
    .close = ch_close,
};
