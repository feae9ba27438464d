/*
 * lg_meta.c - a source's metadata; see lg_meta.h.
 */
#include "pipeline/lg_meta.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/lg_buf.h"
#include "core/lg_json.h"

lg_meta_t *lg_meta_create(void) {
  lg_meta_t *m = calloc(1, sizeof *m);
  if (m != NULL)
    m->refs = 1;
  return m;
}

static int meta_add(lg_meta_t *m, const char *key, const char *val, size_t vlen,
                    int64_t num) {
  lg_meta_kv_t *kv = realloc(m->kv, (m->n + 1) * sizeof *kv);
  if (kv == NULL)
    return -ENOMEM;
  m->kv = kv;
  lg_meta_kv_t *e = &kv[m->n];
  memset(e, 0, sizeof *e);
  e->key_len = strlen(key);
  char *k = malloc(e->key_len + 1);
  char *v = val ? malloc(vlen + 1) : NULL;
  if (k == NULL || (val && v == NULL)) {
    free(k);
    free(v);
    return -ENOMEM;
  }
  memcpy(k, key, e->key_len + 1);
  if (v) {
    memcpy(v, val, vlen);
    v[vlen] = '\0';
  }
  e->key = k;
  e->str = v;
  e->str_len = vlen;
  e->num = num;
  m->n++;
  return 0;
}

int lg_meta_add_str(lg_meta_t *m, const char *key, const char *val,
                    size_t vlen) {
  return meta_add(m, key, val ? val : "", vlen, 0);
}

int lg_meta_add_int(lg_meta_t *m, const char *key, int64_t val) {
  return meta_add(m, key, NULL, 0, val);
}

int lg_meta_add_hidden_str(lg_meta_t *m, const char *key, const char *val,
                           size_t vlen) {
  /* meta_add appends to kv; swap the arrays so it appends to hidden. */
  lg_meta_kv_t *kv = m->kv;
  uint32_t n = m->n;
  m->kv = m->hidden;
  m->n = m->nhidden;
  int rc = meta_add(m, key, val ? val : "", vlen, 0);
  m->hidden = m->kv;
  m->nhidden = m->n;
  m->kv = kv;
  m->n = n;
  return rc;
}

int lg_meta_seal(lg_meta_t *m) {
  lg_buf_t b = LG_BUF_INIT;
  int rc = 0;
  for (uint32_t k = 0; k < m->n && rc == 0; k++) {
    const lg_meta_kv_t *e = &m->kv[k];
    rc |= lg_buf_putc(&b, ',');
    rc |= lg_json_append_string(&b, e->key, e->key_len);
    rc |= lg_buf_putc(&b, ':');
    if (e->str)
      rc |= lg_json_append_string(&b, e->str, e->str_len);
    else
      rc |= lg_json_append_int(&b, e->num);
  }
  if (rc != 0) {
    lg_buf_free(&b);
    return -ENOMEM;
  }
  free(m->json);
  m->json = b.data;
  m->json_len = b.len;
  return 0;
}

const lg_meta_kv_t *lg_meta_find(const lg_meta_t *m, const char *key,
                                 size_t klen) {
  for (uint32_t k = 0; m != NULL && k < m->n; k++)
    if (m->kv[k].key_len == klen && memcmp(m->kv[k].key, key, klen) == 0)
      return &m->kv[k];
  return NULL;
}

const lg_meta_t *lg_meta_ref(const lg_meta_t *m) {
  if (m != NULL)
    __atomic_add_fetch(&((lg_meta_t *)m)->refs, 1, __ATOMIC_RELAXED);
  return m;
}

void lg_meta_unref(const lg_meta_t *cm) {
  lg_meta_t *m = (lg_meta_t *)cm;
  if (m == NULL || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  for (uint32_t k = 0; k < m->n; k++) {
    free((char *)m->kv[k].key);
    free((char *)m->kv[k].str);
  }
  for (uint32_t k = 0; k < m->nhidden; k++) {
    free((char *)m->hidden[k].key);
    free((char *)m->hidden[k].str);
  }
  free(m->kv);
  free(m->hidden);
  free(m->json);
  free(m);
}
