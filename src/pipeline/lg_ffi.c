#include "pipeline/lg_ffi.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "core/lg_log.h"
#include "core/lg_time.h"
#include "pipeline/lg_record_json.h"

/* Lua passes NULL for a nil string; only an empty one may be NULL. */
#define BAD_BYTES(p, n) ((p) == NULL && (n) != 0)

/* The FFI's way of returning text: `tmp`'s bytes into out[0..cap), its
 * length into *outlen, and `tmp` freed. Returns 0, or -ENOSPC when `cap`
 * is too small (out untouched; *outlen says how much the caller must
 * give). */
static int buf_out(lg_buf_t *tmp, char *out, size_t cap, size_t *outlen) {
  *outlen = tmp->len;
  int rc = 0;
  if (tmp->len > cap)
    rc = -ENOSPC;
  else if (tmp->len > 0)
    memcpy(out, tmp->data, tmp->len);
  lg_buf_free(tmp);
  return rc;
}

/* ---- rec ---------------------------------------------------------------- */

static int field_out(const lg_batch_t *b, const lg_field_t *f,
                     lg_ffi_val_t *out) {
  switch (f->type) {
  case LG_VAL_INT:
    out->i = f->i;
    out->d = (double)f->i;
    break;
  case LG_VAL_NUM:
    out->d = f->d;
    break;
  case LG_VAL_BOOL:
    out->i = f->i;
    out->d = f->i ? 1.0 : 0.0;
    break;
  case LG_VAL_STR:
  case LG_VAL_JSON:
    out->s = b->data + f->s_off;
    out->len = f->s_len;
    break;
  default:
    break;
  }
  return (int)f->type;
}

int lg_ffi_rec_get(const lg_batch_t *b, uint32_t i, const char *key,
                   size_t klen, lg_ffi_val_t *out) {
  if (b == NULL || out == NULL || BAD_BYTES(key, klen))
    return -EINVAL;
  if (i >= b->n)
    return -ERANGE;
  const lg_rec_t *r = &b->recs[i];
  if (r->field_head >= 0) {
    const lg_field_t *f = lg_batch_find(b, i, key, klen);
    if (f != NULL)
      return field_out(b, f, out);
  }
  if (klen == 4 && memcmp(key, "body", 4) == 0) {
    out->s = b->data + r->body_off;
    out->len = r->body_len;
    return LG_VAL_STR;
  }
  if (klen == 4 && memcmp(key, "time", 4) == 0) {
    out->len = lg_time_format_rfc3339(r->time_ns, out->buf);
    out->s = out->buf;
    return LG_VAL_STR;
  }
  if (klen == 12 && memcmp(key, "log.iostream", 12) == 0) {
    if (!(r->flags & LG_REC_HAS_STREAM))
      return LG_VAL_DELETED;
    out->s = (r->flags & LG_REC_STDERR) ? "stderr" : "stdout";
    out->len = 6;
    return LG_VAL_STR;
  }
  const lg_meta_kv_t *kv = lg_meta_find(b->meta, key, klen);
  if (kv == NULL)
    return LG_VAL_DELETED;
  if (kv->str != NULL) {
    out->s = kv->str;
    out->len = kv->str_len;
    return LG_VAL_STR;
  }
  out->i = kv->num;
  out->d = (double)kv->num;
  return LG_VAL_INT;
}

int lg_ffi_rec_set_str(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                       const char *val, size_t vlen) {
  if (b == NULL || BAD_BYTES(key, klen) || BAD_BYTES(val, vlen))
    return -EINVAL;
  return lg_batch_set_str(b, i, key, klen, val ? val : "", vlen);
}

int lg_ffi_rec_set_int(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                       int64_t val) {
  if (b == NULL || BAD_BYTES(key, klen))
    return -EINVAL;
  return lg_batch_set_int(b, i, key, klen, val);
}

int lg_ffi_rec_set_num(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                       double val) {
  if (b == NULL || BAD_BYTES(key, klen))
    return -EINVAL;
  return lg_batch_set_num(b, i, key, klen, val);
}

int lg_ffi_rec_set_bool(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                        int val) {
  if (b == NULL || BAD_BYTES(key, klen))
    return -EINVAL;
  return lg_batch_set_bool(b, i, key, klen, val);
}

int lg_ffi_rec_set_null(lg_batch_t *b, uint32_t i, const char *key,
                        size_t klen) {
  if (b == NULL || BAD_BYTES(key, klen))
    return -EINVAL;
  return lg_batch_set_null(b, i, key, klen);
}

int lg_ffi_rec_set_json(lg_batch_t *b, uint32_t i, const char *key, size_t klen,
                        const char *json, size_t jlen) {
  if (b == NULL || BAD_BYTES(key, klen) || json == NULL || jlen == 0)
    return -EINVAL;
  return lg_batch_set_json(b, i, key, klen, json, jlen);
}

int lg_ffi_rec_del(lg_batch_t *b, uint32_t i, const char *key, size_t klen) {
  if (b == NULL || BAD_BYTES(key, klen))
    return -EINVAL;
  return lg_batch_del(b, i, key, klen);
}

int lg_ffi_key_id(lg_batch_t *b, const char *key, size_t klen) {
  if (b == NULL || BAD_BYTES(key, klen))
    return -EINVAL;
  int64_t id = lg_batch_key_id(b, key ? key : "", klen);
  return id > INT32_MAX ? -E2BIG : (int)id;
}

int lg_ffi_rec_set_str_k(lg_batch_t *b, uint32_t i, uint32_t kid,
                         const char *val, size_t vlen) {
  if (b == NULL || BAD_BYTES(val, vlen))
    return -EINVAL;
  return lg_batch_set_str_id(b, i, kid, val ? val : "", vlen);
}

int lg_ffi_rec_set_int_k(lg_batch_t *b, uint32_t i, uint32_t kid, int64_t val) {
  if (b == NULL)
    return -EINVAL;
  return lg_batch_set_int_id(b, i, kid, val);
}

int lg_ffi_rec_set_num_k(lg_batch_t *b, uint32_t i, uint32_t kid, double val) {
  if (b == NULL)
    return -EINVAL;
  return lg_batch_set_num_id(b, i, kid, val);
}

int lg_ffi_rec_del_k(lg_batch_t *b, uint32_t i, uint32_t kid) {
  if (b == NULL)
    return -EINVAL;
  return lg_batch_del_id(b, i, kid);
}

int lg_ffi_rec_set_time(lg_batch_t *b, uint32_t i, int64_t ns) {
  if (b == NULL)
    return -EINVAL;
  if (i >= b->n)
    return -ERANGE;
  /* Once `time` was removed or replaced by a field, the field is what the
   * encoder writes, so the new time has to go there (as RFC 3339 text, the
   * type `time` always has). Otherwise the record header holds it. */
  if (lg_batch_find(b, i, "time", 4) != NULL) {
    char t[LG_TIME_RFC3339_MAX];
    size_t tl = lg_time_format_rfc3339(ns, t);
    return lg_batch_set_str(b, i, "time", 4, t, tl);
  }
  b->recs[i].time_ns = ns;
  return 0;
}

int lg_ffi_rec_set_time_str(lg_batch_t *b, uint32_t i, const char *s,
                            size_t len) {
  if (b == NULL || BAD_BYTES(s, len))
    return -EINVAL;
  if (i >= b->n)
    return -ERANGE;
  int64_t ns;
  if (lg_time_parse_rfc3339(s ? s : "", len, &ns) != 0)
    return -EINVAL;
  return lg_ffi_rec_set_time(b, i, ns);
}

int lg_ffi_rec_drop(lg_batch_t *b, uint32_t i) {
  if (b == NULL)
    return -EINVAL;
  if (i >= b->n)
    return -ERANGE;
  b->recs[i].flags |= LG_REC_DROPPED;
  return 0;
}

int lg_ffi_rec_route(lg_batch_t *b, uint32_t i, int32_t out, int add) {
  if (b == NULL)
    return -EINVAL;
  if (i >= b->n)
    return -ERANGE;
  if (out < -1 || out >= 64 || (out == -1 && add))
    return -EINVAL;
  lg_rec_t *r = &b->recs[i];
  uint64_t bit = out < 0 ? 0 : (uint64_t)1 << out;
  r->routes = add ? r->routes | bit : bit;
  r->flags |= LG_REC_ROUTED;
  return 0;
}

int lg_ffi_rec_fail(lg_batch_t *b, uint32_t i, const char *msg, size_t len) {
  if (b == NULL || BAD_BYTES(msg, len))
    return -EINVAL;
  if (i >= b->n)
    return -ERANGE;
  lg_buf_t t = LG_BUF_INIT;
  int rc = lg_buf_append(&t, msg ? msg : "", len);
  const lg_meta_kv_t *path = lg_meta_find(b->meta, "log.file.path", 13);
  if (path != NULL && path->str != NULL)
    rc |= lg_buf_appendf(&t, " (file %.*s offset %" PRIu64 ")",
                         (int)(path->str_len > 4096 ? 4096 : path->str_len),
                         path->str, b->recs[i].offset);
  else
    rc |= lg_buf_appendf(&t, " (offset %" PRIu64 ")", b->recs[i].offset);
  /* Out of memory for the text with where the record was read: the
   * script's text alone (lg_batch_fail flags the record FAILED, even when
   * it cannot keep any text). */
  rc = rc != 0 ? lg_batch_fail(b, i, msg ? msg : "", len)
               : lg_batch_fail(b, i, t.data, t.len);
  lg_buf_free(&t);
  return rc;
}

int lg_ffi_rec_id(const lg_batch_t *b, uint32_t i, char *buf, size_t cap) {
  return lg_batch_rec_id(b, i, buf, cap);
}

/* ---- json ---------------------------------------------------------------- */

int lg_ffi_json_quote(const char *s, size_t len, char *out, size_t cap,
                      size_t *outlen) {
  if (BAD_BYTES(s, len) || outlen == NULL || (out == NULL && cap != 0))
    return -EINVAL;
  lg_buf_t tmp = LG_BUF_INIT;
  if (lg_json_append_string(&tmp, s ? s : "", len) != 0) {
    lg_buf_free(&tmp);
    return -ENOMEM;
  }
  return buf_out(&tmp, out, cap, outlen);
}

/* ---- log ----------------------------------------------------------------- */

int lg_ffi_log_write(int level, const char *component, size_t clen,
                     const char *msg, size_t mlen) {
  if (level < LG_LOG_DEBUG || level > LG_LOG_ERROR ||
      BAD_BYTES(component, clen) || BAD_BYTES(msg, mlen))
    return -EINVAL;
  if ((lg_log_level_t)level < lg_log_get_level())
    return 0;
  /* Lengths above INT_MAX cannot go through "%.*s"; lg_log cuts long
   * messages anyway. */
  int cl = clen > 256 ? 256 : (int)clen;
  char comp[257];
  memcpy(comp, component ? component : "", (size_t)cl);
  comp[cl] = '\0';
  int ml = mlen > 65536 ? 65536 : (int)mlen;
  lg_log((lg_log_level_t)level, comp, "%.*s", ml, msg ? msg : "");
  return 0;
}

/* ---- batch, meta, abi ------------------------------------------------------
 */

int lg_ffi_batch_create(size_t data_hint, lg_batch_t **out) {
  if (out == NULL)
    return -EINVAL;
  *out = lg_batch_create(data_hint);
  return *out ? 0 : -ENOMEM;
}

int lg_ffi_batch_destroy(lg_batch_t *b) {
  lg_batch_destroy(b);
  return 0;
}

int lg_ffi_batch_reset(lg_batch_t *b) {
  if (b == NULL)
    return -EINVAL;
  lg_batch_reset(b);
  return 0;
}

int lg_ffi_batch_insert(lg_batch_t *b, uint32_t i, const char *body,
                        size_t len) {
  if (b == NULL || BAD_BYTES(body, len))
    return -EINVAL;
  int64_t idx = lg_batch_insert(b, i, body ? body : "", len);
  return (int)idx;
}

int lg_ffi_batch_add(lg_batch_t *b, const char *body, size_t len,
                     int64_t time_ns, uint64_t offset, uint64_t end_offset,
                     uint32_t flags, uint64_t routes) {
  if (b == NULL || BAD_BYTES(body, len))
    return -EINVAL;
  int64_t idx = lg_batch_add(b, body ? body : "", len, time_ns, offset,
                             end_offset, flags);
  if (idx < 0)
    return (int)idx;
  b->recs[idx].routes = routes;
  return (int)idx;
}

int lg_ffi_batch_set_fingerprint(lg_batch_t *b, uint64_t fingerprint) {
  if (b == NULL)
    return -EINVAL;
  b->fingerprint = fingerprint;
  return 0;
}

int lg_ffi_batch_set_meta(lg_batch_t *b, const lg_meta_t *m) {
  if (b == NULL)
    return -EINVAL;
  lg_batch_set_meta(b, m);
  return 0;
}

int lg_ffi_batch_encode(const lg_batch_t *b, uint32_t i, char *out, size_t cap,
                        size_t *outlen) {
  if (b == NULL || outlen == NULL || (out == NULL && cap != 0))
    return -EINVAL;
  if (i >= b->n)
    return -ERANGE;
  lg_buf_t tmp = LG_BUF_INIT;
  if (lg_json_encode_record(&tmp, b, i) != 0) {
    lg_buf_free(&tmp);
    return -ENOMEM;
  }
  return buf_out(&tmp, out, cap, outlen);
}

int lg_ffi_meta_create(lg_meta_t **out) {
  if (out == NULL)
    return -EINVAL;
  *out = lg_meta_create();
  return *out ? 0 : -ENOMEM;
}

enum meta_kind { META_STR, META_HIDDEN_STR, META_INT };

/* lg_meta_add_str, lg_meta_add_hidden_str or lg_meta_add_int (`kind`) of
 * (key, klen): lg_meta takes NUL-terminated keys, FFI strings come with a
 * length. `val` (NULL: "") and `vlen` are the string, `num` the integer.
 * Returns what lg_meta_add_* returns, or -ENOMEM. */
static int meta_add(lg_meta_t *m, const char *key, size_t klen,
                    enum meta_kind kind, const char *val, size_t vlen,
                    int64_t num) {
  char *k = malloc(klen + 1);
  if (k == NULL)
    return -ENOMEM;
  memcpy(k, key, klen);
  k[klen] = '\0';
  int rc = kind == META_INT ? lg_meta_add_int(m, k, num)
           : kind == META_HIDDEN_STR
               ? lg_meta_add_hidden_str(m, k, val ? val : "", vlen)
               : lg_meta_add_str(m, k, val ? val : "", vlen);
  free(k);
  return rc;
}

int lg_ffi_meta_add_str(lg_meta_t *m, const char *key, size_t klen,
                        const char *val, size_t vlen) {
  if (m == NULL || key == NULL || BAD_BYTES(val, vlen))
    return -EINVAL;
  return meta_add(m, key, klen, META_STR, val, vlen, 0);
}

int lg_ffi_meta_add_int(lg_meta_t *m, const char *key, size_t klen,
                        int64_t val) {
  if (m == NULL || key == NULL)
    return -EINVAL;
  return meta_add(m, key, klen, META_INT, NULL, 0, val);
}

int lg_ffi_meta_add_hidden_str(lg_meta_t *m, const char *key, size_t klen,
                               const char *val, size_t vlen) {
  if (m == NULL || key == NULL || BAD_BYTES(val, vlen))
    return -EINVAL;
  return meta_add(m, key, klen, META_HIDDEN_STR, val, vlen, 0);
}

int lg_ffi_meta_seal(lg_meta_t *m) {
  if (m == NULL)
    return -EINVAL;
  return lg_meta_seal(m);
}

int lg_ffi_meta_unref(const lg_meta_t *m) {
  lg_meta_unref(m);
  return 0;
}

typedef struct layout {
  const char *type, *field;
  uint64_t value;
} layout_t;

#define SIZE(T)                                                                \
  { #T, "", sizeof(T) }
#define OFF(T, F)                                                              \
  { #T, #F, offsetof(T, F) }
static const layout_t layouts[] = {
    OFF(lg_batch_t, n),        OFF(lg_batch_t, gen),
    OFF(lg_batch_t, recs),     OFF(lg_batch_t, data),
    OFF(lg_batch_t, data_len), OFF(lg_batch_t, fields),
    OFF(lg_batch_t, nfields),  OFF(lg_batch_t, source_id),
    OFF(lg_batch_t, meta),     SIZE(lg_rec_t),
    OFF(lg_rec_t, time_ns),    OFF(lg_rec_t, offset),
    OFF(lg_rec_t, end_offset), OFF(lg_rec_t, body_off),
    OFF(lg_rec_t, body_len),   OFF(lg_rec_t, field_head),
    OFF(lg_rec_t, field_tail), OFF(lg_rec_t, routes),
    OFF(lg_rec_t, flags),      OFF(lg_rec_t, err_off),
    OFF(lg_rec_t, err_len),    OFF(lg_rec_t, key_bloom),
    SIZE(lg_field_t),          OFF(lg_field_t, key_off),
    OFF(lg_field_t, key_len),  OFF(lg_field_t, next),
    OFF(lg_field_t, type),     OFF(lg_field_t, i),
    OFF(lg_field_t, d),        OFF(lg_field_t, s_off),
    OFF(lg_field_t, s_len),    SIZE(lg_meta_kv_t),
    OFF(lg_meta_kv_t, key),    OFF(lg_meta_kv_t, key_len),
    OFF(lg_meta_kv_t, str),    OFF(lg_meta_kv_t, str_len),
    OFF(lg_meta_kv_t, num),    SIZE(lg_meta_t),
    OFF(lg_meta_t, refs),      OFF(lg_meta_t, n),
    OFF(lg_meta_t, kv),        OFF(lg_meta_t, json),
    OFF(lg_meta_t, json_len),  OFF(lg_meta_t, nhidden),
    OFF(lg_meta_t, hidden),    SIZE(lg_ffi_val_t),
    OFF(lg_ffi_val_t, d),      OFF(lg_ffi_val_t, i),
    OFF(lg_ffi_val_t, s),      OFF(lg_ffi_val_t, len),
    OFF(lg_ffi_val_t, buf),
};
#undef SIZE
#undef OFF

int lg_ffi_abi_layout(const char *type, size_t tlen, const char *field,
                      size_t flen, uint64_t *out) {
  if (type == NULL || BAD_BYTES(field, flen) || out == NULL)
    return -EINVAL;
  for (size_t k = 0; k < sizeof layouts / sizeof layouts[0]; k++) {
    const layout_t *l = &layouts[k];
    if (strlen(l->type) == tlen && memcmp(l->type, type, tlen) == 0 &&
        strlen(l->field) == flen &&
        (flen == 0 || memcmp(l->field, field, flen) == 0)) {
      *out = l->value;
      return 0;
    }
  }
  return -ENOENT;
}
