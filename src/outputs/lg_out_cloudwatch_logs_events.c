/*
 * lg_out_cloudwatch_logs_events.c - the `cloudwatch_logs` output's events:
 * a record encoded as its PutLogEvents event with its log group and stream
 * names (worker threads), and a request of the delivery layer cut into
 * PutLogEvents calls within CloudWatch's limits (loop thread). Sending the
 * calls is lg_out_cloudwatch_logs.c's; the whole output is described there.
 *
 * Follows: Amazon CloudWatch Logs API Reference (PutLogEvents limits;
 * InputLogEvent; group and stream name patterns).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "core/lg_time.h"
#include "outputs/lg_out_cloudwatch_logs_internal.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_record_json.h"

/* ---- encoding (worker threads) ------------------------------------------ */

/* Whether CloudWatch allows byte `c` in a name: log groups
 * [\.\-_/#A-Za-z0-9]+, log streams anything but ':' and '*'. Control
 * bytes are refused in both (they only make names no one can type). */
static int name_byte_ok(unsigned char c, int group) {
  if (c < 0x20 || c == 0x7f)
    return 0;
  if (!group)
    return c != ':' && c != '*';
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' ||
         c == '/' || c == '#';
}

/* Appends the name template `tpl` with its {field}s expanded for record
 * `i` of `b` (b NULL: every field missing), then a NUL. A missing or empty
 * field is "_"; bytes the name may not hold become '_'; the name is cut at
 * 512 bytes (CloudWatch's longest). */
static int expand_name(lg_buf_t *m, const char *tpl, const lg_batch_t *b,
                       uint32_t i, int group) {
  size_t start = m->len;
  int rc = 0;
  for (const char *p = tpl; rc == 0 && *p;) {
    const char *e = *p == '{' ? strchr(p, '}') : NULL;
    const char *s = p;
    size_t len = 1;
    char num[40];
    if (e) {
      lg_ffi_val_t v;
      int t = b ? lg_ffi_rec_get(b, i, p + 1, (size_t)(e - p - 1), &v) : 0;
      s = "_";
      if (t == LG_VAL_STR && v.len > 0) {
        s = v.s, len = v.len;
      } else if (t == LG_VAL_INT || t == LG_VAL_BOOL) {
        len = (size_t)snprintf(num, sizeof num, "%lld", (long long)v.i);
        s = num;
      }
      p = e + 1;
    } else {
      p++;
    }
    for (size_t k = 0; rc == 0 && k < len; k++) {
      unsigned char c = (unsigned char)s[k];
      /* Multi-byte UTF-8 is allowed in stream names, not in group names. */
      rc = lg_buf_putc(
          m, name_byte_ok(c, group) || (!group && c >= 0x80) ? (char)c : '_');
    }
  }
  if (rc == 0 && m->len - start > CW_MAX_NAME) {
    /* Cut at 512 bytes, and before a UTF-8 character the cut would split:
     * back over its continuation bytes to its lead byte, which says how
     * long it is. */
    size_t end = start + CW_MAX_NAME, q = end;
    while (q > start && ((unsigned char)m->data[q - 1] & 0xc0) == 0x80)
      q--;
    if (q > start) {
      unsigned char lead = (unsigned char)m->data[q - 1];
      size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
      if (end - (q - 1) < need)
        end = q - 1;
    }
    m->len = end;
  }
  if (rc == 0)
    rc = lg_buf_putc(m, '\0');
  if (rc != 0)
    m->len = start;
  return rc;
}

/* The UTF-8 size of the string a JSON string literal (as lg_json writes
 * it: `len` bytes with the quotes, escapes only for '"', '\\' and control
 * bytes) decodes to. */
static size_t decoded_size(const char *s, size_t len) {
  size_t n = 0;
  for (size_t k = 1; k + 1 < len; k++, n++)
    if (s[k] == '\\')
      k += s[k + 1] == 'u' ? 5 : 1;
  return n;
}

/* Declared in lg_out_cloudwatch_logs_internal.h. */
int lg__cwl_encode(const void *vconf, const lg_batch_t *b, uint32_t i,
                   const char *error, lg_payload_t *out) {
  const cw_conf_t *c = vconf;
  lg_buf_t *d = &out->data;
  size_t start = d->len, mstart = out->meta.len;
  int64_t ms = (b ? b->recs[i].time_ns : lg_time_now_ns()) / 1000000;
  int rc = lg_buf_appendf(d, "{\"timestamp\":%lld,\"message\":", (long long)ms);
  size_t mark = d->len;
  if (rc == 0)
    rc = lg_json_append_record_string(d, b, i, c->message == 1, error);
  size_t msg = rc == 0 ? decoded_size(d->data + mark, d->len - mark) : 0;
  if (rc == 0)
    rc = lg_buf_putc(d, '}');
  if (rc == 0)
    rc = expand_name(&out->meta, c->log_group_name, b, i, 1);
  if (rc == 0)
    rc = expand_name(&out->meta, c->log_stream_name, b, i, 0);
  if (rc == 0)
    rc = lg_buf_appendf(&out->meta, "%lld%c%zu", (long long)ms, 0, msg);
  if (rc != 0) {
    d->len = start;
    out->meta.len = mstart;
  }
  return rc;
}

/* ---- cutting a request into calls (loop thread) ------------------------- */

/* Reads record j's event and names: its meta, or (records submitted as
 * text) made here into sd->conv. Offsets into conv are fixed up after all
 * are made (conv may move). */
static int read_events(cw_send_t *sd, const cw_conf_t *conf,
                       const lg_out_rec_t *recs, uint32_t n, size_t *conv_off) {
  int64_t now = lg_time_now_ns() / 1000000;
  for (uint32_t j = 0; j < n; j++) {
    cw_ev_t *e = &sd->evs[j];
    e->j = j;
    const char *m = recs[j].meta;
    size_t ml = recs[j].meta_len;
    if (ml > 0) {
      /* "<group>\0<stream>\0<ms>\0<message bytes>" (lg__cwl_encode). */
      const char *f[4], *p = m, *end = m + ml;
      for (int k = 0; k < 4; k++) {
        if (p >= end)
          return -EINVAL;
        f[k] = p;
        p += strnlen(p, (size_t)(end - p)) + 1;
      }
      e->group = f[0];
      e->stream = f[1];
      e->ms = strtoll(f[2], NULL, 10);
      /* The last field ends where the meta ends, without a NUL: the next
       * record's meta may follow it directly. */
      char num[24];
      size_t nl = (size_t)(end - f[3]) < sizeof num - 1 ? (size_t)(end - f[3])
                                                        : sizeof num - 1;
      memcpy(num, f[3], nl);
      num[nl] = '\0';
      e->msg = (size_t)strtoull(num, NULL, 10);
      e->data = recs[j].data;
      e->len = recs[j].len;
      continue;
    }
    /* Text: no fields, so the names are the templates with "_"s. */
    size_t len = recs[j].len;
    if (len > 0 && recs[j].data[len - 1] == '\n')
      len--;
    conv_off[3 * j] = sd->conv.len;
    if (expand_name(&sd->conv, conf->log_group_name, NULL, 0, 1) != 0)
      return -ENOMEM;
    conv_off[3 * j + 1] = sd->conv.len;
    if (expand_name(&sd->conv, conf->log_stream_name, NULL, 0, 0) != 0)
      return -ENOMEM;
    conv_off[3 * j + 2] = sd->conv.len;
    if (lg_buf_appendf(&sd->conv,
                       "{\"timestamp\":%lld,\"message\":", (long long)now) != 0)
      return -ENOMEM;
    size_t mark = sd->conv.len;
    if (lg_json_append_string(&sd->conv, recs[j].data, len) != 0)
      return -ENOMEM;
    e->msg = decoded_size(sd->conv.data + mark, sd->conv.len - mark);
    if (lg_buf_putc(&sd->conv, '}') != 0)
      return -ENOMEM;
    e->len = (uint32_t)(sd->conv.len - conv_off[3 * j + 2]);
    e->ms = now;
    e->data = NULL; /* fixed up below */
  }
  for (uint32_t j = 0; j < n; j++)
    if (sd->evs[j].data == NULL) {
      sd->evs[j].group = sd->conv.data + conv_off[3 * j];
      sd->evs[j].stream = sd->conv.data + conv_off[3 * j + 1];
      sd->evs[j].data = sd->conv.data + conv_off[3 * j + 2];
    }
  return 0;
}

/* Order of events in a stream: by (group, stream), then time, then their
 * place in the request, which makes qsort stable. */
static int ev_cmp(const void *a, const void *b) {
  const cw_ev_t *x = a, *y = b;
  int c = strcmp(x->group, y->group);
  if (c == 0)
    c = strcmp(x->stream, y->stream);
  if (c != 0)
    return c;
  if (x->ms != y->ms)
    return x->ms < y->ms ? -1 : 1;
  return x->j < y->j ? -1 : x->j > y->j;
}

/* Starts a PutLogEvents body for group `g`, stream `st`. */
static int body_begin(lg_buf_t *b, const char *g, const char *st) {
  int rc = lg_buf_append(b, "{\"logGroupName\":", 16);
  rc |= lg_json_append_string(b, g, strlen(g));
  rc |= lg_buf_append(b, ",\"logStreamName\":", 17);
  rc |= lg_json_append_string(b, st, strlen(st));
  rc |= lg_buf_append(b, ",\"logEvents\":[", 14);
  return rc ? -ENOMEM : 0;
}

/* Cuts the sorted events into calls within PutLogEvents' limits; records
 * too large or empty get their result now. Fills sd->calls. */
static int plan_calls(cw_send_t *sd, int64_t max_event, uint32_t n) {
  sd->calls = calloc(n ? n : 1, sizeof *sd->calls); /* at most one each */
  if (!sd->calls)
    return -ENOMEM;
  cw_call_t *cur = NULL;
  size_t bytes = 0;
  for (uint32_t k = 0; k < n; k++) {
    const cw_ev_t *e = &sd->evs[k];
    char why[256];
    if (e->msg == 0 || (int64_t)(e->msg + CW_EVENT_OVERHEAD) > max_event) {
      if (e->msg == 0)
        snprintf(why, sizeof why,
                 "cloudwatch_logs: empty message (CloudWatch takes events "
                 "of at least 1 byte)");
      else
        snprintf(why, sizeof why,
                 "cloudwatch_logs: event of %zu bytes (message plus 26) is "
                 "larger than max_event_size (%lld)",
                 e->msg + CW_EVENT_OVERHEAD, (long long)max_event);
      lg_out_req_set(sd->r, e->j, LG_OUT_REJECTED, why);
      continue;
    }
    size_t sz = e->msg + CW_EVENT_OVERHEAD;
    int same = cur && strcmp(cur->group, e->group) == 0 &&
               strcmp(cur->stream, e->stream) == 0;
    const cw_ev_t *first = same ? &sd->evs[cur->recs[0]] : NULL;
    if (same && (cur->n >= CW_MAX_EVENTS || bytes + sz > CW_MAX_BATCH_BYTES ||
                 e->ms - first->ms >= CW_MAX_SPAN_MS)) {
      /* Full: the next call of the same stream, sent after this one. */
      if (lg_buf_append(&cur->body, "]}", 2) != 0)
        return -ENOMEM;
      cw_call_t *nx = &sd->calls[sd->ncalls++];
      cur->next_in_stream = nx;
      nx->chained = 1;
      cur = nx;
      same = 0;
    } else if (!same) {
      if (cur && lg_buf_append(&cur->body, "]}", 2) != 0)
        return -ENOMEM;
      cur = &sd->calls[sd->ncalls++];
      sd->pending++; /* a stream: its chain ends once */
    }
    if (!same) {
      cur->sd = sd;
      cur->group = e->group;
      cur->stream = e->stream;
      cur->recs = malloc(sizeof *cur->recs *
                         (n - k < CW_MAX_EVENTS ? n - k : CW_MAX_EVENTS));
      if (!cur->recs || body_begin(&cur->body, e->group, e->stream) != 0)
        return -ENOMEM;
      bytes = 0;
    }
    /* recs[] holds indexes into evs (sorted) while planning. */
    if ((cur->n > 0 && lg_buf_putc(&cur->body, ',') != 0) ||
        lg_buf_append(&cur->body, e->data, e->len) != 0)
      return -ENOMEM;
    cur->recs[cur->n++] = k;
    bytes += sz;
  }
  if (cur && lg_buf_append(&cur->body, "]}", 2) != 0)
    return -ENOMEM;
  /* From sorted positions to request indexes. */
  for (size_t c = 0; c < sd->ncalls; c++)
    for (uint32_t k = 0; k < sd->calls[c].n; k++)
      sd->calls[c].recs[k] = sd->evs[sd->calls[c].recs[k]].j;
  return 0;
}

/* Declared in lg_out_cloudwatch_logs_internal.h. */
int lg__cwl_plan(cw_send_t *sd, const cw_conf_t *conf, const lg_out_rec_t *recs,
                 uint32_t n) {
  size_t *conv_off = calloc(n ? 3 * (size_t)n : 1, sizeof *conv_off);
  if (!conv_off)
    return -ENOMEM;
  int rc = read_events(sd, conf, recs, n, conv_off);
  free(conv_off);
  if (rc == 0) {
    qsort(sd->evs, n, sizeof *sd->evs, ev_cmp);
    rc = plan_calls(sd, conf->max_event_size, n);
  }
  return rc;
}
