/*
 * lg_sample.c - sample logs as records (lg_sample.h), shared by `lugger
 * test`, `lugger repl` and lugger.testing, so that a script sees the same
 * records in all three as in the collector.
 */
#include "framing/lg_sample.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/lg_buf.h"
#include "core/lg_fingerprint.h"
#include "core/lg_time.h"
#include "framing/lg_framing.h"
#include "pipeline/lg_ffi.h"

/* Records longer than this are cut into pieces, as a source's default. */
#define MAX_RECORD_BYTES (1u << 20)

struct lg_sample {
  int format;
  lg_framer_t *fr; /* framed formats */
  lg_meta_t *meta; /* log.file.path, or NULL */
  char *path;      /* for messages: the path or "<stdin>" */
  uint64_t fp;     /* fingerprint of the first bytes */
  uint64_t fp_len; /* bytes hashed into fp */
  lg_buf_t carry;  /* json: an incomplete last line */
  uint64_t offset; /* json: file offset of carry's first byte */
  size_t lineno;   /* json: lines read */
  int log_body;    /* json: "log" is the body when there is no "body" */
};

/* The nesting depth of JSON text `p` at its byte `at`, strings skipped:
 * tells a line nested past cJSON's limit from a syntax error there. */
static size_t json_depth(const char *p, size_t at) {
  size_t depth = 0;
  int in_str = 0;
  for (size_t i = 0; i < at; i++) {
    char c = p[i];
    if (in_str) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_str = 0;
    } else if (c == '"') {
      in_str = 1;
    } else if (c == '{' || c == '[') {
      depth++;
    } else if ((c == '}' || c == ']') && depth > 0) {
      depth--;
    }
  }
  return depth;
}

int lg_sample_format_parse(const char *name, size_t len, int *out) {
  if (name == NULL || out == NULL)
    return -EINVAL;
  char tmp[16];
  if (len >= sizeof tmp)
    return -EINVAL;
  memcpy(tmp, name, len);
  tmp[len] = '\0';
  if (strcmp(tmp, "json") == 0) {
    *out = LG_SAMPLE_JSON;
    return 0;
  }
  lg_format_t f;
  if (lg_format_parse(tmp, &f) != 0)
    return -EINVAL;
  *out = (int)f;
  return 0;
}

lg_sample_t *lg_sample_create(int format, const char *path, size_t plen) {
  if (format < LG_SAMPLE_JSON || format > LG_FORMAT_AUTO)
    return NULL;
  lg_sample_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->format = format;
  s->fp = LG_FP_INIT;
  s->carry = (lg_buf_t)LG_BUF_INIT;
  int has_path = path != NULL && plen > 0;
  s->path = malloc(has_path ? plen + 1 : 8);
  if (s->path == NULL)
    goto fail;
  if (has_path) {
    memcpy(s->path, path, plen);
    s->path[plen] = '\0';
    s->meta = lg_meta_create();
    if (s->meta == NULL ||
        lg_meta_add_str(s->meta, "log.file.path", path, plen) != 0 ||
        lg_meta_seal(s->meta) != 0)
      goto fail;
  } else {
    memcpy(s->path, "<stdin>", 8);
  }
  if (format != LG_SAMPLE_JSON) {
    s->fr = lg_framer_create((lg_format_t)format, MAX_RECORD_BYTES, 0);
    if (s->fr == NULL)
      goto fail;
  }
  return s;
fail:
  lg_sample_destroy(s);
  return NULL;
}

void lg_sample_set_log_body(lg_sample_t *s, int on) {
  if (s != NULL)
    s->log_body = on != 0;
}

void lg_sample_destroy(lg_sample_t *s) {
  if (s == NULL)
    return;
  lg_framer_destroy(s->fr);
  lg_meta_unref(s->meta);
  lg_buf_free(&s->carry);
  free(s->path);
  free(s);
}

void lg_sample_begin(lg_sample_t *s, lg_batch_t *b) {
  lg_batch_reset(b);
  lg_batch_set_meta(b, s->meta);
  b->fingerprint = s->fp;
  b->pipeline = 0;
}

static void set_default_routes(lg_batch_t *b, uint32_t from) {
  for (uint32_t i = from; i < b->n; i++)
    b->recs[i].routes = 1; /* output 0, "default" */
}

/* ---- one JSON object per line ----------------------------------------- */

static int set_json_field(lg_batch_t *b, uint32_t i, const char *key,
                          const cJSON *v) {
  size_t klen = strlen(key);
  if (cJSON_IsString(v))
    return lg_batch_set_str(b, i, key, klen, v->valuestring,
                            strlen(v->valuestring));
  if (cJSON_IsBool(v))
    return lg_batch_set_bool(b, i, key, klen, cJSON_IsTrue(v));
  if (cJSON_IsNull(v))
    return lg_batch_set_null(b, i, key, klen);
  if (cJSON_IsNumber(v)) {
    /* cJSON keeps numbers as doubles: integers beyond 2^53 are rounded. */
    double d = v->valuedouble;
    if (d == (double)(int64_t)d && d >= -9223372036854775808.0 &&
        d < 9223372036854775808.0)
      return lg_batch_set_int(b, i, key, klen, (int64_t)d);
    return lg_batch_set_num(b, i, key, klen, d);
  }
  char *text = cJSON_PrintUnformatted(v);
  if (text == NULL)
    return -ENOMEM;
  int rc = lg_batch_set_json(b, i, key, klen, text, strlen(text));
  cJSON_free(text);
  return rc;
}

/* Adds one JSON-object line (`len` bytes, no newline) as a record. */
static int add_json_record(lg_sample_t *s, lg_batch_t *b, const char *line,
                           size_t len, uint64_t end_offset, int64_t now,
                           char *err, size_t errlen) {
  cJSON *o = cJSON_ParseWithLength(line, len);
  if (o == NULL || !cJSON_IsObject(o)) {
    /* Say what is wrong: "not a JSON object" for a missing brace in a
     * long line was no help. cJSON's error pointer is global, but samples
     * are read on one thread. */
    char what[160];
    const char *ep = cJSON_GetErrorPtr();
    if (o == NULL && ep != NULL && ep >= line && ep <= line + len &&
        json_depth(line, (size_t)(ep - line)) >= CJSON_NESTING_LIMIT)
      snprintf(what, sizeof what, "JSON nested deeper than %d levels",
               CJSON_NESTING_LIMIT);
    else if (o == NULL && ep != NULL && ep >= line && ep <= line + len)
      snprintf(what, sizeof what, "invalid JSON at byte %zu",
               (size_t)(ep - line) + 1);
    else if (o == NULL)
      snprintf(what, sizeof what, "invalid JSON");
    else
      snprintf(what, sizeof what,
               "a JSON %s, not an object (--format json reads one object "
               "per line)",
               cJSON_IsArray(o)    ? "array"
               : cJSON_IsString(o) ? "string"
               : cJSON_IsNumber(o) ? "number"
                                   : "literal");
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "%s:%zu: %s", s->path, s->lineno, what);
    cJSON_Delete(o);
    return -EINVAL;
  }
  const cJSON *body = cJSON_GetObjectItemCaseSensitive(o, "body");
  if (body == NULL && s->log_body)
    body = cJSON_GetObjectItemCaseSensitive(o, "log");
  const cJSON *time = cJSON_GetObjectItemCaseSensitive(o, "time");
  const cJSON *stream = cJSON_GetObjectItemCaseSensitive(o, "log.iostream");
  int64_t ns = now;
  int time_is_field = 0;
  if (time != NULL) {
    time_is_field = !cJSON_IsString(time) ||
                    lg_time_parse_rfc3339(time->valuestring,
                                          strlen(time->valuestring), &ns) != 0;
  }
  uint32_t flags = 0;
  if (cJSON_IsString(stream) && strcmp(stream->valuestring, "stdout") == 0)
    flags = LG_REC_HAS_STREAM;
  else if (cJSON_IsString(stream) && strcmp(stream->valuestring, "stderr") == 0)
    flags = LG_REC_HAS_STREAM | LG_REC_STDERR;
  const char *btext = cJSON_IsString(body) ? body->valuestring : "";
  int64_t i =
      lg_batch_add(b, btext, strlen(btext), ns, s->offset, end_offset, flags);
  int rc = i < 0 ? (int)i : 0;
  if (rc == 0 && body == NULL)
    rc = lg_batch_del(b, (uint32_t)i, "body", 4); /* no body: none written */
  for (const cJSON *v = o->child; v != NULL && rc == 0; v = v->next) {
    if ((v == body && cJSON_IsString(v)) || (v == time && !time_is_field) ||
        (v == stream && (flags & LG_REC_HAS_STREAM)))
      continue;
    rc = set_json_field(b, (uint32_t)i, v->string, v);
  }
  cJSON_Delete(o);
  return rc;
}

/* Adds the line of `len` bytes at `line` unless it is blank; `consumed`
 * bytes of the file (line and newline) move the offset on. */
static int json_line(lg_sample_t *s, lg_batch_t *b, const char *line,
                     size_t len, size_t consumed, int64_t now, char *err,
                     size_t errlen) {
  s->lineno++;
  size_t tl = len > 0 && line[len - 1] == '\r' ? len - 1 : len;
  size_t ws = 0;
  while (ws < tl && (line[ws] == ' ' || line[ws] == '\t'))
    ws++;
  int rc = 0;
  if (ws < tl)
    rc =
        add_json_record(s, b, line, tl, s->offset + consumed, now, err, errlen);
  s->offset += consumed;
  return rc;
}

static int feed_json(lg_sample_t *s, const char *buf, size_t len, int64_t now,
                     lg_batch_t *b, char *err, size_t errlen) {
  size_t old = s->carry.len;
  if (lg_buf_append(&s->carry, buf, len) != 0)
    return -ENOMEM;
  int rc = 0;
  size_t start = 0;
  /* Only the new bytes can hold the first newline. */
  for (const char *p = s->carry.data + old, *end = s->carry.data + s->carry.len,
                  *nl;
       rc == 0 && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL;
       p = nl + 1) {
    size_t n = (size_t)(nl - (s->carry.data + start));
    rc = json_line(s, b, s->carry.data + start, n, n + 1, now, err, errlen);
    start += n + 1;
  }
  lg_buf_consume(&s->carry, start);
  return rc;
}

/* ---- feeding -------------------------------------------------------------
 */

int lg_sample_feed(lg_sample_t *s, const char *buf, size_t len, int64_t now_ns,
                   lg_batch_t *b, char *err, size_t errlen) {
  if (s == NULL || b == NULL || (buf == NULL && len > 0))
    return -EINVAL;
  if (len == 0)
    return 0;
  if (s->fp_len < LG_FP_MAX) {
    size_t k = len < LG_FP_MAX - s->fp_len ? len : LG_FP_MAX - s->fp_len;
    s->fp = lg_fp_update(s->fp, buf, k);
    s->fp_len += k;
    b->fingerprint = s->fp;
  }
  uint32_t before = b->n;
  int rc = s->format == LG_SAMPLE_JSON
               ? feed_json(s, buf, len, now_ns, b, err, errlen)
               : lg_framer_feed(s->fr, buf, len, now_ns, b);
  set_default_routes(b, before);
  return rc;
}

int lg_sample_finish(lg_sample_t *s, int64_t now_ns, lg_batch_t *b, char *err,
                     size_t errlen) {
  if (s == NULL || b == NULL)
    return -EINVAL;
  uint32_t before = b->n;
  int rc = 0;
  if (s->format != LG_SAMPLE_JSON) {
    rc = lg_framer_flush(s->fr, now_ns, b);
  } else if (s->carry.len > 0) {
    size_t n = s->carry.len;
    rc = json_line(s, b, s->carry.data, n, n, now_ns, err, errlen);
    lg_buf_consume(&s->carry, n);
  }
  set_default_routes(b, before);
  return rc;
}

/* ---- copying a record ----------------------------------------------------
 */

int64_t lg_sample_copy_record(lg_batch_t *dst, const lg_batch_t *src,
                              uint32_t i) {
  if (dst == NULL || src == NULL || dst == src)
    return -EINVAL;
  if (i >= src->n)
    return -ERANGE;
  if (dst->n == 0) {
    lg_batch_set_meta(dst, src->meta);
    dst->fingerprint = src->fingerprint;
  }
  const lg_rec_t *r = &src->recs[i];
  const uint32_t keep = LG_REC_ORIGIN;
  int64_t k =
      lg_batch_add(dst, src->data + r->body_off, r->body_len, r->time_ns,
                   r->offset, r->end_offset, r->flags & keep);
  if (k < 0)
    return k;
  uint32_t j = (uint32_t)k;
  dst->recs[j].routes = 1;
  int rc = 0;
  for (int32_t f = r->field_head; f >= 0 && rc == 0; f = src->fields[f].next) {
    const lg_field_t *fl = &src->fields[f];
    /* The source's bytes are copied out first: setting a field may move
     * dst's arena, never src's (they differ). */
    const char *key = src->data + fl->key_off;
    const char *sv = src->data + fl->s_off;
    switch ((lg_val_type_t)fl->type) {
    case LG_VAL_DELETED:
      rc = lg_batch_del(dst, j, key, fl->key_len);
      break;
    case LG_VAL_NULL:
      rc = lg_batch_set_null(dst, j, key, fl->key_len);
      break;
    case LG_VAL_BOOL:
      rc = lg_batch_set_bool(dst, j, key, fl->key_len, fl->i != 0);
      break;
    case LG_VAL_INT:
      rc = lg_batch_set_int(dst, j, key, fl->key_len, fl->i);
      break;
    case LG_VAL_NUM:
      rc = lg_batch_set_num(dst, j, key, fl->key_len, fl->d);
      break;
    case LG_VAL_STR:
      rc = lg_batch_set_str(dst, j, key, fl->key_len, sv, fl->s_len);
      break;
    case LG_VAL_JSON:
      rc = lg_batch_set_json(dst, j, key, fl->key_len, sv, fl->s_len);
      break;
    }
  }
  return rc < 0 ? rc : k;
}

/* ---- lg_ffi_sample_* -------------------------------------------------------
 */

int lg_ffi_sample_format(const char *name, size_t len, int *out) {
  return lg_sample_format_parse(name, len, out);
}

int lg_ffi_sample_create(int format, const char *path, size_t plen,
                         lg_sample_t **out) {
  if (out == NULL || (path == NULL && plen > 0))
    return -EINVAL;
  if (format < LG_SAMPLE_JSON || format > LG_FORMAT_AUTO)
    return -EINVAL;
  *out = lg_sample_create(format, path, plen);
  return *out ? 0 : -ENOMEM;
}

int lg_ffi_sample_destroy(lg_sample_t *s) {
  lg_sample_destroy(s);
  return 0;
}

int lg_ffi_sample_begin(lg_sample_t *s, lg_batch_t *b) {
  if (s == NULL || b == NULL)
    return -EINVAL;
  lg_sample_begin(s, b);
  return 0;
}

int lg_ffi_sample_feed(lg_sample_t *s, const char *buf, size_t len,
                       int64_t now_ns, lg_batch_t *b, char *err,
                       size_t errlen) {
  return lg_sample_feed(s, buf, len, now_ns > 0 ? now_ns : lg_time_now_ns(), b,
                        err, errlen);
}

int lg_ffi_sample_finish(lg_sample_t *s, int64_t now_ns, lg_batch_t *b,
                         char *err, size_t errlen) {
  return lg_sample_finish(s, now_ns > 0 ? now_ns : lg_time_now_ns(), b, err,
                          errlen);
}

int lg_ffi_sample_copy(lg_batch_t *dst, const lg_batch_t *src, uint32_t i) {
  int64_t k = lg_sample_copy_record(dst, src, i);
  return (int)k;
}
