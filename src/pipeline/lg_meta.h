/*
 * lg_meta.h - a source's metadata: the key/value pairs (log.file.path,
 * k8s.pod.name, ...) every record of a batch carries without holding them,
 * shared by reference between a source and its batches (lg_batch.h,
 * lg_batch_set_meta), so the source can replace it while older batches
 * are still in flight.
 *
 * The struct crosses the FFI: lua/lugger/batch.lua declares the same
 * layout, and a spec checks the two agree.
 */
#ifndef LG_META_H
#define LG_META_H

#include <stddef.h>
#include <stdint.h>

/* One metadata key of a source: a string or an integer value. */
typedef struct lg_meta_kv {
  const char *key;
  size_t key_len;
  const char *str; /* NULL for an integer value */
  size_t str_len;
  int64_t num;
} lg_meta_kv_t;

/* A source's metadata, shared by its batches (reference-counted, so it can
 * be replaced while old batches are in flight). `json` holds the pairs
 * already encoded as `,"key":value,...` for the encoder. */
typedef struct lg_meta {
  int refs;
  uint32_t n;
  lg_meta_kv_t *kv;
  char *json;
  size_t json_len;
  /* Values kept only for the kubernetes map of Fluent Bit filters
   * (lua/lugger/fluentbit.lua): not in records, their JSON or lookups. */
  uint32_t nhidden;
  lg_meta_kv_t *hidden;
} lg_meta_t;

/* Metadata: build with lg_meta_create, add pairs, then lg_meta_seal (which
 * encodes `json`); after that it is shared read-only. Refcounting is
 * atomic; the last unref frees. */

/* A new empty metadata holding one reference, or NULL (out of memory). */
lg_meta_t *lg_meta_create(void);

/* Appends a pair with a string value (`vlen` bytes at `val`, copied; NUL
 * bytes allowed; NULL with vlen 0 is "") or an integer value. `key` is a C
 * string, copied. Pairs keep the order they were added in. 0 or -ENOMEM. */
int lg_meta_add_str(lg_meta_t *m, const char *key, const char *val,
                    size_t vlen);
int lg_meta_add_int(lg_meta_t *m, const char *key, int64_t val);

/* Encodes the pairs as `,"key":value,...` (JSON, RFC 8259) into
 * m->json / m->json_len, replacing an earlier encoding. 0 or -ENOMEM. */
int lg_meta_seal(lg_meta_t *m);

/* Adds a hidden string pair (see lg_meta_t.hidden), copied as by
 * lg_meta_add_str. 0 or -ENOMEM. */
int lg_meta_add_hidden_str(lg_meta_t *m, const char *key, const char *val,
                           size_t vlen);

/* The pair whose key is the `klen` bytes at `key`, or NULL when absent
 * (hidden pairs are never found; `m` may be NULL). */
const lg_meta_kv_t *lg_meta_find(const lg_meta_t *m, const char *key,
                                 size_t klen);

/* Takes another reference and returns `m`; NULL-safe. */
const lg_meta_t *lg_meta_ref(const lg_meta_t *m);

/* Drops a reference; the last one frees the pairs, their JSON and `m`.
 * NULL-safe. */
void lg_meta_unref(const lg_meta_t *m);

#endif
