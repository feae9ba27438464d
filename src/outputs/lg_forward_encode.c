/*
 * lg_forward_encode.c - see lg_forward_encode.h.
 */
#include "outputs/lg_forward_encode.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <msgpuck.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <zlib.h>

#include "core/lg_msgpack.h"

/* --- msgpack writers on an lg_buf --- */

static int put_str(lg_buf_t *o, const char *s, size_t n) {
  if (n > UINT32_MAX)
    n = UINT32_MAX;
  if (lg_buf_reserve(o, mp_sizeof_str((uint32_t)n)) != 0)
    return -ENOMEM;
  o->len = (size_t)(mp_encode_str(o->data + o->len, s, (uint32_t)n) - o->data);
  return 0;
}

static int put_int(lg_buf_t *o, int64_t v) {
  if (lg_buf_reserve(o, 9) != 0)
    return -ENOMEM;
  char *p = o->data + o->len;
  p = v >= 0 ? mp_encode_uint(p, (uint64_t)v) : mp_encode_int(p, v);
  o->len = (size_t)(p - o->data);
  return 0;
}

static int put_double(lg_buf_t *o, double v) {
  if (lg_buf_reserve(o, 9) != 0)
    return -ENOMEM;
  o->len = (size_t)(mp_encode_double(o->data + o->len, v) - o->data);
  return 0;
}

static int put_byte(lg_buf_t *o, unsigned char c) {
  return lg_buf_putc(o, (char)c);
}

static int put_header(lg_buf_t *o, int map, uint32_t n) {
  if (lg_buf_reserve(o, 5) != 0)
    return -ENOMEM;
  char *p = o->data + o->len;
  p = map ? mp_encode_map(p, n) : mp_encode_array(p, n);
  o->len = (size_t)(p - o->data);
  return 0;
}

/* A JSON value (arrays and maps that scripts set) as msgpack. Integers
 * that JSON text holds exactly stay integers. */
static int json_to_mp(lg_buf_t *o, const cJSON *j) {
  if (cJSON_IsObject(j) || cJSON_IsArray(j)) {
    int n = cJSON_GetArraySize(j);
    int rc = put_header(o, cJSON_IsObject(j), (uint32_t)n);
    for (const cJSON *c = j->child; c != NULL && rc == 0; c = c->next) {
      if (cJSON_IsObject(j))
        rc = put_str(o, c->string, strlen(c->string));
      if (rc == 0)
        rc = json_to_mp(o, c);
    }
    return rc;
  }
  if (cJSON_IsString(j))
    return put_str(o, j->valuestring, strlen(j->valuestring));
  if (cJSON_IsNumber(j)) {
    double d = j->valuedouble;
    if (d == floor(d) && fabs(d) < 9007199254740992.0)
      return put_int(o, (int64_t)d);
    return put_double(o, d);
  }
  if (cJSON_IsBool(j))
    return put_byte(o, cJSON_IsTrue(j) ? 0xc3 : 0xc2);
  return put_byte(o, 0xc0);
}

static int put_field_value(lg_buf_t *o, const lg_batch_t *b,
                           const lg_field_t *f) {
  switch (f->type) {
  case LG_VAL_BOOL:
    return put_byte(o, f->i ? 0xc3 : 0xc2);
  case LG_VAL_INT:
    return put_int(o, f->i);
  case LG_VAL_NUM:
    return put_double(o, f->d);
  case LG_VAL_STR:
    return put_str(o, b->data + f->s_off, f->s_len);
  case LG_VAL_JSON: {
    cJSON *j = cJSON_ParseWithLength(b->data + f->s_off, f->s_len);
    int rc = j ? json_to_mp(o, j) : put_str(o, b->data + f->s_off, f->s_len);
    cJSON_Delete(j);
    return rc;
  }
  default:
    return put_byte(o, 0xc0);
  }
}

/* Walks the record's keys in the order the JSON encoder has them; with
 * out == NULL only counts them. */
static int walk(lg_buf_t *out, const lg_fwd_encode_cfg_t *cfg,
                const lg_batch_t *b, uint32_t i, const char *error,
                uint32_t *count) {
  const lg_rec_t *r = &b->recs[i];
  const lg_meta_t *m = b->meta;
  int shadowed = (r->flags & LG_REC_SHADOWED) != 0;
  const char *bk = cfg->body_key ? cfg->body_key : "log";
  uint32_t n = 0;
  int rc = 0;
#define EMIT(stmt)                                                             \
  do {                                                                         \
    n++;                                                                       \
    if (out != NULL && rc == 0)                                                \
      rc = (stmt);                                                             \
  } while (0)
  if (!shadowed || lg_batch_find(b, i, "body", 4) == NULL)
    EMIT(put_str(out, bk, strlen(bk)) ||
         put_str(out, b->data + r->body_off, r->body_len));
  if ((r->flags & LG_REC_HAS_STREAM) &&
      (!shadowed || lg_batch_find(b, i, "log.iostream", 12) == NULL))
    EMIT(put_str(out, "log.iostream", 12) ||
         put_str(out, (r->flags & LG_REC_STDERR) ? "stderr" : "stdout", 6));
  for (uint32_t k = 0; m != NULL && k < m->n; k++) {
    const lg_meta_kv_t *e = &m->kv[k];
    if (shadowed && lg_batch_find(b, i, e->key, e->key_len) != NULL)
      continue;
    EMIT(put_str(out, e->key, e->key_len) ||
         (e->str ? put_str(out, e->str, e->str_len) : put_int(out, e->num)));
  }
  for (int32_t f = r->field_head; f >= 0; f = b->fields[f].next) {
    const lg_field_t *fp = &b->fields[f];
    if (fp->type == LG_VAL_DELETED)
      continue;
    const char *key = b->data + fp->key_off;
    size_t klen = fp->key_len;
    if (klen == 4 && memcmp(key, "body", 4) == 0)
      key = bk, klen = strlen(bk); /* the body, replaced by a script */
    EMIT(put_str(out, key, klen) || put_field_value(out, b, fp));
  }
  if (r->flags & LG_REC_TRUNCATED)
    EMIT(put_str(out, "lugger.truncated", 16) || put_byte(out, 0xc3));
  if (error != NULL)
    EMIT(put_str(out, "lugger.error", 12) ||
         put_str(out, error, strlen(error)));
  else if (r->flags & LG_REC_FAILED) {
    uint32_t elen;
    const char *etext = lg_batch_rec_error(b, i, &elen);
    EMIT(put_str(out, "lugger.error", 12) || put_str(out, etext, elen));
  }
#undef EMIT
  *count = n;
  return rc ? -ENOMEM : 0;
}

int lg_fwd_encode_entry(lg_buf_t *out, const lg_fwd_encode_cfg_t *cfg,
                        const lg_batch_t *b, uint32_t i, const char *error) {
  uint32_t n;
  walk(NULL, cfg, b, i, error, &n);
  size_t start = out->len;
  if (lg_buf_reserve(out, 16) != 0)
    return -ENOMEM;
  char *p = mp_encode_array(out->data + out->len, 2);
  int64_t ns = b->recs[i].time_ns;
  if (cfg->time_as_integer)
    p = mp_encode_uint(p, ns > 0 ? (uint64_t)(ns / 1000000000) : 0);
  else
    p = lg_mp_encode_event_time(p, ns);
  p = mp_encode_map(p, n);
  out->len = (size_t)(p - out->data);
  uint32_t again;
  if (walk(out, cfg, b, i, error, &again) != 0) {
    out->len = start;
    return -ENOMEM;
  }
  return 0;
}

static int gzip_member(const char *in, size_t n, lg_buf_t *out) {
  z_stream z;
  memset(&z, 0, sizeof z);
  /* Level 1: logs compress well even at the fastest level, and the CPU
   * of the default level (6) costs more than the bytes it saves. */
  if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK)
    return -ENOMEM;
  size_t bound = deflateBound(&z, (uLong)n) + 32;
  if (lg_buf_reserve(out, bound) != 0) {
    deflateEnd(&z);
    return -ENOMEM;
  }
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)n;
  z.next_out = (Bytef *)(out->data + out->len);
  z.avail_out = (uInt)bound;
  int zr = deflate(&z, Z_FINISH);
  if (zr == Z_STREAM_END)
    out->len += bound - z.avail_out;
  deflateEnd(&z);
  return zr == Z_STREAM_END ? 0 : -EIO;
}

int lg_fwd_encode_packed(lg_buf_t *out, const char *tag, size_t tag_len,
                         const char *entries, size_t len, uint32_t n,
                         const char *chunk, size_t chunk_len, int gzip) {
  lg_buf_t z = LG_BUF_INIT;
  if (gzip) {
    int rc = gzip_member(entries, len, &z);
    if (rc != 0) {
      lg_buf_free(&z);
      return rc;
    }
    entries = z.data;
    len = z.len;
  }
  int rc = put_header(out, 0, 3);
  if (rc == 0)
    rc = put_str(out, tag, tag_len);
  if (rc == 0 && lg_buf_reserve(out, 5 + len) == 0) {
    out->len = (size_t)(mp_encode_binl(out->data + out->len, (uint32_t)len) -
                        out->data);
    memcpy(out->data + out->len, entries, len);
    out->len += len;
  } else {
    rc = -ENOMEM;
  }
  if (rc == 0)
    rc = put_header(out, 1, 1 + (chunk != NULL) + (gzip != 0));
  if (rc == 0)
    rc = put_str(out, "size", 4) || put_int(out, n) ? -ENOMEM : 0;
  if (rc == 0 && chunk != NULL)
    rc = put_str(out, "chunk", 5) || put_str(out, chunk, chunk_len) ? -ENOMEM
                                                                    : 0;
  if (rc == 0 && gzip)
    rc =
        put_str(out, "compressed", 10) || put_str(out, "gzip", 4) ? -ENOMEM : 0;
  lg_buf_free(&z);
  return rc;
}

int lg_fwd_chunk_id(char out[25]) {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1)
    return -EIO;
  EVP_EncodeBlock((unsigned char *)out, raw, sizeof raw); /* 24 + NUL */
  return 0;
}

int lg_fwd_parse_ack(const char *frame, size_t len, const char **id,
                     uint32_t *id_len) {
  const char *p = frame;
  if (len == 0 || mp_typeof(*p) != MP_MAP)
    return -EBADMSG;
  uint32_t n = mp_decode_map(&p);
  for (uint32_t k = 0; k < n; k++) {
    if (mp_typeof(*p) == MP_STR) {
      uint32_t kl;
      const char *key = mp_decode_str(&p, &kl);
      if (kl == 3 && memcmp(key, "ack", 3) == 0) {
        const char *v = lg_mp_decode_strbin(&p, id_len);
        if (v == NULL)
          return -EBADMSG;
        *id = v;
        return 0;
      }
    } else {
      mp_next(&p);
    }
    mp_next(&p);
  }
  return -EBADMSG;
}

/* --- tag templates --- */

int lg_fwd_tag_check(const char *tmpl, char *err, size_t errlen) {
  for (const char *p = strstr(tmpl, "${"); p != NULL; p = strstr(p, "${")) {
    const char *close = strchr(p + 2, '}');
    if (close == NULL || close == p + 2) {
      snprintf(err, errlen, "tag \"%s\": %s", tmpl,
               close ? "empty ${}" : "\"${\" without \"}\"");
      return -EINVAL;
    }
    p = close + 1;
  }
  return 0;
}

int lg_fwd_tag_is_static(const char *tmpl) {
  return strstr(tmpl, "${") == NULL;
}

/* Appends the value of `name` for record i (see lg_fwd_tag_render). */
static int render_field(lg_buf_t *out, const char *name, size_t len,
                        const lg_batch_t *b, uint32_t i) {
  const lg_rec_t *r = &b->recs[i];
  const lg_field_t *f = lg_batch_find(b, i, name, len);
  if (f != NULL) {
    if (f->type == LG_VAL_STR)
      return lg_buf_append(out, b->data + f->s_off, f->s_len);
    if (f->type == LG_VAL_INT)
      return lg_buf_appendf(out, "%lld", (long long)f->i);
    if (f->type == LG_VAL_NUM)
      return lg_buf_appendf(out, "%.17g", f->d);
    if (f->type == LG_VAL_BOOL)
      return lg_buf_appendf(out, "%s", f->i ? "true" : "false");
    return 0;
  }
  const lg_meta_kv_t *m = b->meta ? lg_meta_find(b->meta, name, len) : NULL;
  if (m != NULL)
    return m->str ? lg_buf_append(out, m->str, m->str_len)
                  : lg_buf_appendf(out, "%lld", (long long)m->num);
  if (len == 4 && memcmp(name, "body", 4) == 0)
    return lg_buf_append(out, b->data + r->body_off, r->body_len);
  if (len == 12 && memcmp(name, "log.iostream", 12) == 0 &&
      (r->flags & LG_REC_HAS_STREAM))
    return lg_buf_appendf(out, "%s",
                          (r->flags & LG_REC_STDERR) ? "stderr" : "stdout");
  return 0;
}

int lg_fwd_tag_render(lg_buf_t *out, const char *tmpl, const lg_batch_t *b,
                      uint32_t i) {
  const char *p = tmpl;
  for (;;) {
    const char *open = strstr(p, "${");
    const char *close = open ? strchr(open + 2, '}') : NULL;
    if (close == NULL)
      return lg_buf_append(out, p, strlen(p)) ? -ENOMEM : 0;
    if (lg_buf_append(out, p, (size_t)(open - p)) != 0 ||
        render_field(out, open + 2, (size_t)(close - open - 2), b, i) != 0)
      return -ENOMEM;
    p = close + 1;
  }
}
