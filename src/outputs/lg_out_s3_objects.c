/*
 * lg_out_s3_objects.c - the `s3` output's objects: records encoded as JSON
 * lines with their key prefix (worker threads), a request's records grouped
 * into objects with their keys, the keys kept in the request journal
 * (loop thread), and the objects gzipped (libuv's thread pool). Uploading
 * them is lg_out_s3.c's; the whole output is described there.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/lg_aws_sigv4.h"
#include "core/lg_buf.h"
#include "core/lg_time.h"
#include "outputs/lg_out_http_common.h"
#include "outputs/lg_out_s3_internal.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_record_json.h"

/* ---- encoding (worker threads) ------------------------------------------ */

/* Appends the key template with its {field} parts expanded for record `i`
 * ('%' in values doubled for strftime, '/' kept; a missing field is "_");
 * {id} is kept for send. b NULL: every field is "_". */
static int expand_fields(lg_buf_t *m, const char *tpl, const lg_batch_t *b,
                         uint32_t i) {
  int rc = 0;
  for (const char *p = tpl; rc == 0 && *p;) {
    const char *e = *p == '{' ? strchr(p, '}') : NULL;
    if (!e) {
      rc = lg_buf_putc(m, *p++);
      continue;
    }
    size_t n = (size_t)(e - p - 1);
    if (n == 2 && memcmp(p + 1, "id", 2) == 0) {
      rc = lg_buf_append(m, "{id}", 4);
    } else {
      lg_ffi_val_t v;
      int t = b ? lg_ffi_rec_get(b, i, p + 1, n, &v) : 0;
      char num[40];
      const char *s = "_";
      size_t len = 1;
      if (t == LG_VAL_STR && v.len > 0) {
        s = v.s, len = v.len;
      } else if (t == LG_VAL_INT || t == LG_VAL_BOOL) {
        len = (size_t)snprintf(num, sizeof num, "%lld", (long long)v.i);
        s = num;
      }
      for (size_t k = 0; rc == 0 && k < len; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c == '%')
          rc = lg_buf_append(m, "%%", 2);
        else
          rc = lg_buf_putc(m, c < 0x20 || c == 0x7f ? '_' : (char)c);
      }
    }
    p = e + 1;
  }
  return rc;
}

/* Declared in lg_out_s3_internal.h. */
int lg__s3_encode(const void *vconf, const lg_batch_t *b, uint32_t i,
                  const char *error, lg_payload_t *out) {
  const s3_conf_t *c = vconf;
  size_t start = out->data.len, mstart = out->meta.len;
  int rc = lg_json_encode_record_err(&out->data, b, i, error,
                                     error ? strlen(error) : 0);
  if (rc == 0 && b != NULL) {
    char id[48];
    int n = lg_batch_rec_id(b, i, id, sizeof id);
    rc = expand_fields(&out->meta, c->key, b, i);
    if (rc == 0)
      rc = lg_buf_appendf(&out->meta, "%c%lld%c%s", 0,
                          (long long)b->recs[i].time_ns, 0, n > 0 ? id : "");
  }
  if (rc != 0) {
    out->data.len = start;
    out->meta.len = mstart;
  }
  return rc;
}

/* ---- objects and keys (loop thread) -------------------------------------- */

/* The object's key: its prefix (fields expanded) with {id} replaced and
 * strftime applied to the first record's time. */
static char *make_key(const char *prefix, size_t plen, int64_t time_ns,
                      const char *id) {
  lg_buf_t t = LG_BUF_INIT;
  int e = 0;
  for (size_t k = 0; k < plen;) {
    if (plen - k >= 4 && memcmp(prefix + k, "{id}", 4) == 0) {
      e |= lg_buf_appendf(&t, "%s", id);
      k += 4;
    } else {
      e |= lg_buf_putc(&t, prefix[k++]);
    }
  }
  e |= lg_buf_putc(&t, '\0');
  if (e) {
    lg_buf_free(&t);
    return NULL;
  }
  time_t sec = (time_t)(time_ns / 1000000000);
  struct tm tm;
  gmtime_r(&sec, &tm);
  size_t cap = t.len * 2 + 64;
  char *key = malloc(cap);
  size_t n = key ? strftime(key, cap, t.data, &tm) : 0;
  lg_buf_free(&t);
  if (key && n == 0) {
    free(key);
    key = NULL;
  }
  return key;
}

/* Declared in lg_out_s3_internal.h. */
int lg__s3_build_objects(s3_send_t *sd, const s3_conf_t *conf,
                         const lg_out_rec_t *recs, uint32_t n) {
  uint32_t *group = calloc(n ? n : 1, sizeof *group);
  if (!group)
    return -ENOMEM;
  /* Group the records by key prefix (meta up to its first NUL); records
   * submitted as text have none and form one group. */
  size_t ng = 0;
  uint32_t *firsts = calloc(n ? n : 1, sizeof *firsts);
  for (uint32_t j = 0; firsts && j < n; j++) {
    size_t pl = recs[j].meta_len ? strnlen(recs[j].meta, recs[j].meta_len) : 0;
    size_t g = 0;
    for (; g < ng; g++) {
      const lg_out_rec_t *f = &recs[firsts[g]];
      size_t fl = f->meta_len ? strnlen(f->meta, f->meta_len) : 0;
      if (fl == pl && memcmp(f->meta, recs[j].meta, pl) == 0)
        break;
    }
    if (g == ng)
      firsts[ng++] = j;
    group[j] = (uint32_t)g;
  }
  sd->objs = firsts ? calloc(ng ? ng : 1, sizeof *sd->objs) : NULL;
  if (!sd->objs) {
    free(firsts);
    free(group);
    return -ENOMEM;
  }
  sd->nobjs = ng;
  int oom = 0;
  for (size_t g = 0; g < ng && !oom; g++) {
    s3_obj_t *ob = &sd->objs[g];
    ob->send = sd;
    ob->recs = malloc(n * sizeof *ob->recs);
    lg_buf_t raw = LG_BUF_INIT, ids = LG_BUF_INIT;
    oom = ob->recs == NULL;
    for (uint32_t j = 0; !oom && j < n; j++) {
      if (group[j] != g)
        continue;
      ob->recs[ob->nrecs++] = j;
      oom |= lg_buf_append(&raw, recs[j].data, recs[j].len) != 0;
      /* The id of a record: its stable id, or (text records) its bytes. */
      const char *m = recs[j].meta;
      size_t ml = recs[j].meta_len, pl = m ? strnlen(m, ml) : 0;
      const char *t = pl < ml ? m + pl + 1 : NULL;
      const char *id = t ? t + strnlen(t, ml - pl - 1) + 1 : NULL;
      if (id && id < m + ml && *id)
        oom |= lg_buf_appendf(&ids, "%.*s\n", (int)(m + ml - id), id) != 0;
      else
        oom |= lg_buf_append(&ids, recs[j].data, recs[j].len) != 0;
    }
    if (!oom) {
      const lg_out_rec_t *f = &recs[ob->recs[0]];
      size_t pl = f->meta_len ? strnlen(f->meta, f->meta_len) : 0;
      ob->prefix = pl ? f->meta : "";
      ob->plen = pl;
      int64_t t0 = pl && pl < f->meta_len ? strtoll(f->meta + pl + 1, NULL, 10)
                                          : lg_time_now_ns();
      char hex[65];
      lg_sigv4_sha256_hex(ids.data ? ids.data : "", ids.len, hex);
      hex[24] = '\0'; /* 96 bits: no two batches meet by chance */
      if (pl)
        ob->key = make_key(f->meta, pl, t0, hex);
      else {
        lg_buf_t p = LG_BUF_INIT;
        oom |= expand_fields(&p, conf->key, NULL, 0) != 0;
        ob->key = oom ? NULL : make_key(p.data, p.len, t0, hex);
        lg_buf_free(&p);
      }
      ob->body = raw.data, ob->len = raw.len; /* compressed later */
      raw.data = NULL;
      oom |= !ob->key || !ob->body;
    }
    lg_buf_free(&raw);
    lg_buf_free(&ids);
  }
  free(firsts);
  free(group);
  return oom ? -ENOMEM : 0;
}

/* The request journal (lg_out_req_journal): before anything is uploaded,
 * the request is journaled with a note of one line per object, "<records>
 * TAB <key template with fields> TAB <key>". A retry, or the request made
 * again after a restart, finds each object's line by its template: the
 * same records get the same key even when the first record's time (the
 * read time of lines without a time of their own) changed; in a request
 * made again from some of its records (lg_out_req_partly), an object with
 * fewer records than its line was written before the crash (its other
 * records were acked): the ones that came are in it, delivered unsent. A
 * request of one object, then and now, takes its line whatever its
 * template: `key` changed since, the object is still the one written
 * then (else its records would be in it and in one under the new key).
 * 1 (the journal write is in flight: wait for `cb`), 0 (upload at once),
 * or -errno: nothing may be uploaded. */
int lg__s3_journal_keys(s3_send_t *sd, lg_out_journaled_cb cb) {
  const char *note = lg_out_req_note(sd->r);
  if (note != NULL) {
    int partly = lg_out_req_partly(sd->r);
    /* One object then and now: the same records, whatever the key
     * template is now (a reload or restart changed `key`). */
    int one = sd->nobjs == 1 && strchr(note, '\n') == NULL;
    for (const char *l = note; *l;) {
      size_t len = strcspn(l, "\n");
      const char *t1 = memchr(l, '\t', len);
      const char *t2 =
          t1 ? memchr(t1 + 1, '\t', len - (size_t)(t1 + 1 - l)) : NULL;
      for (size_t g = 0; t2 && g < sd->nobjs; g++) {
        s3_obj_t *ob = &sd->objs[g];
        if (!one && (ob->plen != (size_t)(t2 - t1 - 1) ||
                     memcmp(ob->prefix, t1 + 1, ob->plen) != 0))
          continue;
        unsigned long n = strtoul(l, NULL, 10);
        if (n == ob->nrecs) {
          char *k = strndup(t2 + 1, (size_t)(l + len - t2 - 1));
          if (k == NULL)
            return -ENOMEM;
          free(ob->key);
          ob->key = k;
        } else if (partly && n > ob->nrecs) {
          ob->written = 1;
        }
      }
      l += len + (l[len] == '\n');
    }
    return 0;
  }
  lg_buf_t b = LG_BUF_INIT;
  int e = 0;
  for (size_t g = 0; g < sd->nobjs; g++)
    e |= lg_buf_appendf(&b, "%s%u\t%.*s\t%s", g ? "\n" : "", sd->objs[g].nrecs,
                        (int)sd->objs[g].plen, sd->objs[g].prefix,
                        sd->objs[g].key);
  e |= lg_buf_putc(&b, '\0');
  int rc = e ? -ENOMEM : lg_out_req_journal(sd->r, b.data, cb);
  lg_buf_free(&b);
  return rc;
}

/* ---- compression (thread pool) ------------------------------------------ */

/* Thread pool: each object's body becomes one gzip member (NULL when out
 * of memory). Touches only this send's objects. */
void lg__s3_gzip_objects(uv_work_t *w) {
  s3_send_t *sd = w->data;
  for (size_t g = 0; g < sd->nobjs; g++) {
    s3_obj_t *ob = &sd->objs[g];
    if (ob->written)
      continue;
    size_t zl = 0;
    char *z = lg_http_gzip(ob->body, ob->len, &zl);
    free(ob->body);
    ob->body = z;
    ob->len = z ? zl : 0;
  }
}
