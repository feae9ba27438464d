/*
 * lg_forward_decode.c - see lg_forward_decode.h.
 */
#include "sources/forward/lg_forward_decode.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <msgpuck.h>
#include <zlib.h>

#include "core/lg_msgpack.h"

static const char *const default_body_keys[] = {"log", "message"};

const lg_fwd_decode_cfg_t lg_fwd_decode_defaults = {
    .tag_key = "fluent.tag",
    .body_keys = default_body_keys,
    .nbody_keys = 2,
    .max_decompressed_bytes = 256u << 20,
};

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

int lg_fwd_gunzip(const char *in, size_t n, lg_buf_t *out, size_t max) {
  z_stream z;
  memset(&z, 0, sizeof z);
  /* 16 + MAX_WBITS: gzip wrapper (RFC 1952), not zlib's. */
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
    return -ENOMEM;
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)n;
  size_t start = out->len;
  int rc = 0;
  if (n > UINT32_MAX) {
    inflateEnd(&z);
    return -EMSGSIZE;
  }
  for (;;) {
    /* Room for one byte past `max`, so going over it shows. */
    size_t produced = out->len - start;
    if (produced > max) {
      rc = -EMSGSIZE;
      break;
    }
    size_t room = 64 * 1024;
    if (room > max - produced + 1)
      room = max - produced + 1;
    if (lg_buf_reserve(out, room) != 0) {
      rc = -ENOMEM;
      break;
    }
    z.next_out = (Bytef *)(out->data + out->len);
    z.avail_out = (uInt)room;
    int zr = inflate(&z, Z_NO_FLUSH);
    out->len += room - z.avail_out;
    if (zr == Z_STREAM_END) {
      if (z.avail_in == 0) {
        if (out->len - start > max)
          rc = -EMSGSIZE;
        break;
      }
      /* Another gzip member follows: the spec allows several. */
      if (inflateReset(&z) != Z_OK) {
        rc = -EBADMSG;
        break;
      }
      continue;
    }
    if (zr == Z_OK)
      continue;
    if (zr == Z_BUF_ERROR && z.avail_out > 0) {
      rc = -EBADMSG; /* no progress with room left: input ended early */
      break;
    }
    if (zr == Z_BUF_ERROR)
      continue;
    rc = zr == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
    break;
  }
  inflateEnd(&z);
  if (rc != 0)
    out->len = start;
  return rc;
}

int lg_fwd_encode_ack(lg_buf_t *out, const char *chunk, uint32_t len) {
  if (lg_buf_reserve(out, 1 + 4 + mp_sizeof_str(len)) != 0)
    return -ENOMEM;
  char *p = out->data + out->len;
  p = mp_encode_map(p, 1);
  p = mp_encode_str(p, "ack", 3);
  p = mp_encode_str(p, chunk, len);
  out->len = (size_t)(p - out->data);
  return 0;
}

typedef struct dec {
  const lg_fwd_decode_cfg_t *cfg;
  lg_batch_t *b;
  lg_buf_t *scratch;
  const char *tag;
  uint32_t tag_len;
  char *err;
  size_t errlen;
  uint32_t nrecords;
  int64_t tag_kid; /* the tag key's id in the batch, -1 before first use */
} dec_t;

/* Sets field `key` of record i from the msgpack value at *p. */
static int set_value(dec_t *d, uint32_t i, const char *key, uint32_t klen,
                     const char **p, const char *end) {
  lg_batch_t *b = d->b;
  const char *q = *p;
  int rc;
  switch (mp_typeof(*q)) {
  case MP_STR:
  case MP_BIN: {
    uint32_t n;
    const char *s = lg_mp_decode_strbin(&q, &n);
    rc = lg_batch_set_str(b, i, key, klen, s, n);
    break;
  }
  case MP_UINT: {
    uint64_t v = mp_decode_uint(&q);
    rc = v <= INT64_MAX ? lg_batch_set_int(b, i, key, klen, (int64_t)v)
                        : lg_batch_set_num(b, i, key, klen, (double)v);
    break;
  }
  case MP_INT:
    rc = lg_batch_set_int(b, i, key, klen, mp_decode_int(&q));
    break;
  case MP_FLOAT:
    rc = lg_batch_set_num(b, i, key, klen, mp_decode_float(&q));
    break;
  case MP_DOUBLE:
    rc = lg_batch_set_num(b, i, key, klen, mp_decode_double(&q));
    break;
  case MP_BOOL:
    rc = lg_batch_set_bool(b, i, key, klen, mp_decode_bool(&q));
    break;
  case MP_NIL:
    mp_decode_nil(&q);
    rc = lg_batch_set_null(b, i, key, klen);
    break;
  default: /* array, map, ext: JSON text */
    d->scratch->len = 0;
    rc = lg_mp_to_json(d->scratch, &q, end);
    if (rc == 0)
      rc =
          lg_batch_set_json(b, i, key, klen, d->scratch->data, d->scratch->len);
    break;
  }
  *p = q;
  return rc;
}

/* Decodes one entry [time, record] or [[time, metadata], record] at *p
 * (a checked object) into a record. */
static int decode_entry(dec_t *d, const char **p, const char *end,
                        uint32_t index) {
  const char *q = *p;
  if (mp_typeof(*q) != MP_ARRAY || mp_decode_array(&q) != 2)
    return fail(d->err, d->errlen, -EBADMSG,
                "entry %u: not an array [time, record]", index);
  const char *meta = NULL;
  int64_t ns;
  if (mp_typeof(*q) == MP_ARRAY) {
    /* Fluent Bit >= 2.1: [[time, metadata], record]. */
    const char *t = q;
    if (mp_decode_array(&t) != 2 || lg_mp_decode_time(&t, end, &ns) != 0 ||
        mp_typeof(*t) != MP_MAP)
      return fail(d->err, d->errlen, -EBADMSG,
                  "entry %u: bad [time, metadata] header", index);
    meta = t;
    mp_next(&t);
    q = t;
  } else if (lg_mp_decode_time(&q, end, &ns) != 0) {
    return fail(d->err, d->errlen, -EBADMSG,
                "entry %u: time is not an EventTime or an integer", index);
  }
  if (mp_typeof(*q) != MP_MAP)
    return fail(d->err, d->errlen, -EBADMSG, "entry %u: record is not a map",
                index);
  /* First pass: which key is the body (the first of body_keys, in the
   * configured order, whose value is a string). */
  const char *rec = q;
  uint32_t npairs = mp_decode_map(&q);
  size_t best = d->cfg->nbody_keys;
  const char *body = "";
  uint32_t body_len = 0;
  int64_t body_pair = -1;
  for (uint32_t k = 0; k < npairs; k++) {
    uint32_t klen;
    const char *key = lg_mp_decode_strbin(&q, &klen);
    if (key == NULL) {
      mp_next(&q);
      mp_next(&q);
      continue;
    }
    enum mp_type vt = mp_typeof(*q);
    for (size_t j = 0; j < best; j++) {
      const char *bk = d->cfg->body_keys[j];
      if ((vt == MP_STR || vt == MP_BIN) && strlen(bk) == klen &&
          memcmp(bk, key, klen) == 0) {
        const char *v = q;
        body = lg_mp_decode_strbin(&v, &body_len);
        body_pair = k;
        best = j;
        break;
      }
    }
    mp_next(&q);
  }
  const char *rec_end = q;
  int64_t idx = lg_batch_add(d->b, body, body_len, ns, 0, 0, 0);
  if (idx < 0)
    return fail(d->err, d->errlen, (int)idx, "entry %u: %s", index,
                strerror((int)-idx));
  uint32_t i = (uint32_t)idx;
  int rc = 0;
  if (d->cfg->tag_key != NULL) {
    if (d->tag_kid < 0)
      d->tag_kid =
          lg_batch_key_id(d->b, d->cfg->tag_key, strlen(d->cfg->tag_key));
    rc = d->tag_kid < 0 ? (int)d->tag_kid
                        : lg_batch_set_str_id(d->b, i, (uint32_t)d->tag_kid,
                                              d->tag, d->tag_len);
  }
  /* Second pass: the other keys become fields, in the record's order. */
  q = rec;
  mp_decode_map(&q);
  for (uint32_t k = 0; k < npairs && rc == 0; k++) {
    if ((int64_t)k == body_pair) {
      mp_next(&q);
      mp_next(&q);
      continue;
    }
    uint32_t klen;
    const char *key = lg_mp_decode_strbin(&q, &klen);
    if (key != NULL && klen == 12 && memcmp(key, "log.iostream", 12) == 0 &&
        mp_typeof(*q) == MP_STR) {
      /* lugger's own key (a lugger sender): the record's stream, not a
       * field, so it stays what the file source made of it. */
      const char *v = q;
      uint32_t vl;
      const char *vs = mp_decode_str(&v, &vl);
      int err = vl == 6 && memcmp(vs, "stderr", 6) == 0;
      if (err || (vl == 6 && memcmp(vs, "stdout", 6) == 0)) {
        d->b->recs[i].flags |= LG_REC_HAS_STREAM | (err ? LG_REC_STDERR : 0);
        q = v;
        continue;
      }
    }
    if (key == NULL) {
      /* Keys should be strings; anything else keeps its JSON text. */
      lg_buf_t kt = LG_BUF_INIT;
      const char *kq = q;
      rc = lg_mp_to_json(&kt, &kq, end);
      if (rc == 0) {
        q = kq;
        rc = set_value(d, i, kt.data, (uint32_t)kt.len, &q, end);
      }
      lg_buf_free(&kt);
      continue;
    }
    rc = set_value(d, i, key, klen, &q, end);
  }
  if (rc == 0 && meta != NULL) {
    const char *mq = meta;
    if (mp_decode_map(&mq) > 0) {
      mq = meta;
      rc = set_value(d, i, "fluent.metadata", 15, &mq, end);
    }
  }
  if (rc != 0)
    return fail(d->err, d->errlen, rc, "entry %u: %s", index, strerror(-rc));
  *p = rec_end;
  d->nrecords++;
  return 0;
}

/* Decodes the concatenated entries of a (Compressed)PackedForward
 * payload. The payload is bytes from the peer that no scanner has seen
 * yet: each entry is checked before it is read. */
static int decode_packed(dec_t *d, const char *p, size_t n) {
  const char *end = p + n;
  uint32_t index = 0;
  while (p < end) {
    size_t olen;
    int rc = lg_mp_check(p, (size_t)(end - p), &olen);
    if (rc != 0)
      return fail(d->err, d->errlen, -EBADMSG,
                  "entry %u: malformed msgpack in the packed entries", index);
    const char *q = p;
    rc = decode_entry(d, &q, p + olen, index);
    if (rc != 0)
      return rc;
    p += olen;
    index++;
  }
  return 0;
}

/* Reads the option map at *p (or nothing if p == end). */
static int decode_options(dec_t *d, const char *p, const char *end,
                          lg_fwd_msg_t *msg, int *gzip) {
  *gzip = 0;
  if (p >= end)
    return 0;
  if (mp_typeof(*p) == MP_NIL)
    return 0;
  if (mp_typeof(*p) != MP_MAP)
    return fail(d->err, d->errlen, -EBADMSG, "option is not a map");
  uint32_t n = mp_decode_map(&p);
  for (uint32_t k = 0; k < n; k++) {
    uint32_t klen;
    const char *key = lg_mp_decode_strbin(&p, &klen);
    if (key == NULL) {
      mp_next(&p);
      mp_next(&p);
      continue;
    }
    if (klen == 5 && memcmp(key, "chunk", 5) == 0) {
      uint32_t clen;
      const char *c = lg_mp_decode_strbin(&p, &clen);
      if (c == NULL)
        return fail(d->err, d->errlen, -EBADMSG,
                    "option chunk is not a string");
      msg->chunk = c;
      msg->chunk_len = clen;
    } else if (klen == 4 && memcmp(key, "size", 4) == 0 &&
               mp_typeof(*p) == MP_UINT) {
      uint64_t v = mp_decode_uint(&p);
      msg->size = v > INT64_MAX ? INT64_MAX : (int64_t)v;
    } else if (klen == 10 && memcmp(key, "compressed", 10) == 0 &&
               mp_typeof(*p) == MP_STR) {
      uint32_t vlen;
      const char *v = mp_decode_str(&p, &vlen);
      if (vlen == 4 && memcmp(v, "gzip", 4) == 0)
        *gzip = 1;
      else if (vlen == 4 && memcmp(v, "zstd", 4) == 0)
        /* Not in the v1 spec (fluentd 1.19 experimental, Fluent Bit);
         * reading it as text would turn data into garbage records. */
        return fail(d->err, d->errlen, -EBADMSG,
                    "compressed \"zstd\" is not supported (use gzip)");
      /* "text" (fluentd) and other values: not compressed, as the spec
       * says other values are ignored. */
    } else {
      mp_next(&p);
    }
  }
  return 0;
}

int lg_fwd_decode(const lg_fwd_decode_cfg_t *cfg, const char *frame, size_t len,
                  lg_batch_t *b, lg_fwd_msg_t *msg, lg_buf_t *scratch,
                  char *err, size_t errlen) {
  memset(msg, 0, sizeof *msg);
  msg->size = -1;
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  dec_t d = {.cfg = cfg,
             .b = b,
             .scratch = scratch,
             .err = err,
             .errlen = errlen,
             .tag_kid = -1};
  const char *p = frame, *end = frame + len;
  if (len == 0)
    return fail(err, errlen, -EBADMSG, "empty message");
  if (mp_typeof(*p) == MP_NIL) {
    msg->mode = LG_FWD_HEARTBEAT;
    return 0;
  }
  if (mp_typeof(*p) != MP_ARRAY)
    return fail(err, errlen, -EBADMSG,
                "not a forward message (first byte 0x%02x is not an array)",
                (unsigned char)*p);
  uint32_t n = mp_decode_array(&p);
  if (n < 2 || n > 4)
    return fail(err, errlen, -EBADMSG,
                "not a forward message (array of %u elements)", n);
  if (mp_typeof(*p) != MP_STR)
    return fail(err, errlen, -EBADMSG, "tag is not a string");
  msg->tag = mp_decode_str(&p, &msg->tag_len);
  d.tag = msg->tag;
  d.tag_len = msg->tag_len;
  int gzip = 0, rc;
  switch (mp_typeof(*p)) {
  case MP_ARRAY: { /* Forward */
    if (n > 3)
      return fail(err, errlen, -EBADMSG, "Forward mode with %u elements", n);
    msg->mode = LG_FWD_FORWARD;
    const char *entries = p;
    mp_next(&p);
    if ((rc = decode_options(&d, p, end, msg, &gzip)) != 0)
      return rc;
    uint32_t ne = mp_decode_array(&entries);
    for (uint32_t k = 0; k < ne; k++)
      if ((rc = decode_entry(&d, &entries, end, k)) != 0)
        return rc;
    break;
  }
  case MP_STR:
  case MP_BIN: { /* PackedForward / CompressedPackedForward */
    if (n > 3)
      return fail(err, errlen, -EBADMSG, "PackedForward mode with %u elements",
                  n);
    uint32_t plen;
    const char *payload = lg_mp_decode_strbin(&p, &plen);
    if ((rc = decode_options(&d, p, end, msg, &gzip)) != 0)
      return rc;
    if (gzip) {
      msg->mode = LG_FWD_COMPRESSED;
      lg_buf_t in = LG_BUF_INIT;
      rc = lg_fwd_gunzip(payload, plen, &in, cfg->max_decompressed_bytes);
      if (rc == 0)
        rc = decode_packed(&d, in.data ? in.data : "", in.len);
      else if (rc == -EMSGSIZE)
        fail(err, errlen, rc, "gzip payload inflates to over %zu bytes",
             cfg->max_decompressed_bytes);
      else if (rc == -EBADMSG)
        fail(err, errlen, rc, "corrupt or truncated gzip payload");
      else
        fail(err, errlen, rc, "%s", strerror(-rc));
      lg_buf_free(&in);
      if (rc != 0)
        return rc;
    } else {
      msg->mode = LG_FWD_PACKED;
      if ((rc = decode_packed(&d, payload, plen)) != 0)
        return rc;
    }
    break;
  }
  default: { /* Message: [tag, time, record, option?] */
    if (n < 3)
      return fail(err, errlen, -EBADMSG, "Message mode with %u elements", n);
    msg->mode = LG_FWD_MESSAGE;
    const char *opt = p;
    mp_next(&opt);
    mp_next(&opt);
    if (n == 4 && (rc = decode_options(&d, opt, end, msg, &gzip)) != 0)
      return rc;
    /* The entry is the time and record that follow the tag: decode them
     * as the entry form by walking the same bytes. */
    int64_t ns;
    const char *t = p;
    if (lg_mp_decode_time(&t, end, &ns) != 0)
      return fail(err, errlen, -EBADMSG,
                  "time is not an EventTime or an integer");
    lg_buf_t entry = LG_BUF_INIT;
    size_t rlen = (size_t)(opt - t);
    if (lg_buf_reserve(&entry, 1 + (size_t)(t - p) + rlen) != 0)
      return fail(err, errlen, -ENOMEM, "out of memory");
    entry.data[0] = (char)0x92; /* [time, record] */
    memcpy(entry.data + 1, p, (size_t)(opt - p));
    entry.len = 1 + (size_t)(opt - p);
    const char *e = entry.data;
    rc = decode_entry(&d, &e, entry.data + entry.len, 0);
    lg_buf_free(&entry);
    if (rc != 0)
      return rc;
    break;
  }
  }
  msg->nrecords = d.nrecords;
  return 0;
}
