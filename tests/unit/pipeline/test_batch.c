/* Unit tests: lg_batch (records and bodies in one arena, typed fields,
 * interned keys, tombstones, shadowing, metadata, insert, clone, reset).
 * lg_meta's own tests are in test_meta.c. No loop. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/lg_util.h"
#include "helpers/lg_test.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_payload.h"
#include "pipeline/lg_record_json.h"

#define K(s) (s), (sizeof(s) - 1)

static lg_batch_t *with_bodies(size_t hint, size_t n) {
  lg_batch_t *b = lg_batch_create(hint);
  assert_non_null(b);
  for (size_t k = 0; k < n; k++) {
    char body[32];
    int len = snprintf(body, sizeof body, "line %zu", k);
    assert_int_equal(lg_batch_add(b, body, (size_t)len, (int64_t)k * 1000,
                                  k * 10, k * 10 + 10, 0),
                     (int64_t)k);
  }
  return b;
}

static void assert_body(const lg_batch_t *b, uint32_t i, const char *want,
                        size_t len) {
  assert_int_equal(b->recs[i].body_len, len);
  assert_memory_equal(b->data + b->recs[i].body_off, want, len);
}

static void assert_str_field(const lg_batch_t *b, uint32_t i, const char *key,
                             size_t klen, const char *want, size_t len) {
  const lg_field_t *f = lg_batch_find(b, i, key, klen);
  assert_non_null(f);
  assert_int_equal(f->type, LG_VAL_STR);
  assert_int_equal(f->s_len, len);
  assert_memory_equal(b->data + f->s_off, want, len);
}

/* Keys of record i, in chain order, joined by ',' (tombstones as "-k"). */
static const char *chain(const lg_batch_t *b, uint32_t i) {
  static char out[512];
  size_t o = 0;
  out[0] = '\0';
  for (int32_t f = b->recs[i].field_head; f >= 0; f = b->fields[f].next) {
    const lg_field_t *fl = &b->fields[f];
    o += (size_t)snprintf(out + o, sizeof out - o, "%s%s%.*s", o ? "," : "",
                          fl->type == LG_VAL_DELETED ? "-" : "",
                          (int)fl->key_len, b->data + fl->key_off);
  }
  return out;
}

static void test_add_records(void **state) {
  (void)state;
  lg_batch_t *b = lg_batch_create(0);
  assert_non_null(b);
  assert_int_equal(b->n, 0);
  assert_int_equal(b->pipeline, -1);
  assert_int_equal(lg_batch_add(b, K("first"), -5, 100, 106, LG_REC_STDERR), 0);
  assert_int_equal(lg_batch_add(b, "", 0, 7, 106, 107, 0), 1);
  /* A body with NUL bytes is kept whole. */
  assert_int_equal(lg_batch_add(b, "a\0b\0", 4, INT64_MAX, 107, 112, 0), 2);
  assert_int_equal(b->n, 3);
  assert_body(b, 0, "first", 5);
  assert_body(b, 1, "", 0);
  assert_body(b, 2, "a\0b\0", 4);
  assert_int_equal(b->recs[0].time_ns, -5);
  assert_true(b->recs[2].time_ns == INT64_MAX);
  assert_int_equal(b->recs[0].offset, 100);
  assert_int_equal(b->recs[0].end_offset, 106);
  assert_int_equal(b->recs[0].flags, LG_REC_STDERR);
  assert_int_equal(b->recs[0].field_head, -1);
  assert_int_equal(b->recs[0].field_tail, -1);
  assert_int_equal(b->recs[0].routes, 0);
  /* Nothing found on a record without fields or out of range. */
  assert_null(lg_batch_find(b, 0, K("x")));
  assert_null(lg_batch_find(b, 9, K("x")));
  lg_batch_destroy(b);
  lg_batch_destroy(NULL);
}

static void test_fields_typed(void **state) {
  (void)state;
  lg_batch_t *b = with_bodies(64, 2);
  assert_int_equal(lg_batch_set_str(b, 0, K("s"), "x\0y", 3), 0);
  assert_int_equal(lg_batch_set_int(b, 0, K("big"), INT64_MAX), 0);
  assert_int_equal(lg_batch_set_int(b, 0, K("small"), INT64_MIN), 0);
  /* 2^53 + 1 is not a double: an exact int64 keeps it. */
  assert_int_equal(lg_batch_set_int(b, 0, K("odd"), 9007199254740993LL), 0);
  assert_int_equal(lg_batch_set_num(b, 0, K("d"), 0.1), 0);
  assert_int_equal(lg_batch_set_bool(b, 0, K("t"), 42), 0);
  assert_int_equal(lg_batch_set_bool(b, 0, K("f"), 0), 0);
  assert_int_equal(lg_batch_set_null(b, 0, K("n")), 0);
  assert_int_equal(lg_batch_set_json(b, 0, K("j"), K("[1,{\"a\":2}]")), 0);

  assert_str_field(b, 0, K("s"), "x\0y", 3);
  const lg_field_t *f = lg_batch_find(b, 0, K("big"));
  assert_int_equal(f->type, LG_VAL_INT);
  assert_true(f->i == INT64_MAX);
  f = lg_batch_find(b, 0, K("small"));
  assert_true(f->i == INT64_MIN);
  f = lg_batch_find(b, 0, K("odd"));
  assert_true(f->i == 9007199254740993LL);
  f = lg_batch_find(b, 0, K("d"));
  assert_int_equal(f->type, LG_VAL_NUM);
  assert_true(f->d == 0.1);
  f = lg_batch_find(b, 0, K("t"));
  assert_int_equal(f->type, LG_VAL_BOOL);
  assert_int_equal(f->i, 1);
  f = lg_batch_find(b, 0, K("f"));
  assert_int_equal(f->type, LG_VAL_BOOL);
  assert_int_equal(f->i, 0);
  assert_int_equal(lg_batch_find(b, 0, K("n"))->type, LG_VAL_NULL);
  f = lg_batch_find(b, 0, K("j"));
  assert_int_equal(f->type, LG_VAL_JSON);
  assert_int_equal(f->s_len, 11);
  assert_memory_equal(b->data + f->s_off, "[1,{\"a\":2}]", 11);
  assert_string_equal(chain(b, 0), "s,big,small,odd,d,t,f,n,j");
  /* Keys are compared whole: a prefix or a longer key is another key. */
  assert_null(lg_batch_find(b, 0, K("bi")));
  assert_null(lg_batch_find(b, 0, K("bigger")));
  /* Record 1 has none of record 0's fields. */
  assert_null(lg_batch_find(b, 1, K("s")));
  assert_string_equal(chain(b, 1), "");
  /* The bodies survive the arena moving (hint 64 bytes). */
  assert_body(b, 0, "line 0", 6);
  assert_body(b, 1, "line 1", 6);
  /* Bad record index. */
  assert_int_equal(lg_batch_set_str(b, 2, K("s"), K("v")), -ERANGE);
  assert_int_equal(lg_batch_set_int(b, 2, K("s"), 1), -ERANGE);
  assert_int_equal(lg_batch_del(b, 2, K("s")), -ERANGE);
  assert_int_equal(lg_batch_fail(b, 2, K("e")), -ERANGE);
  lg_batch_destroy(b);
}

static void test_overwrite_and_remove(void **state) {
  (void)state;
  lg_batch_t *b = with_bodies(0, 1);
  assert_int_equal(lg_batch_set_str(b, 0, K("a"), K("one")), 0);
  assert_int_equal(lg_batch_set_int(b, 0, K("b"), 2), 0);
  assert_int_equal(lg_batch_set_str(b, 0, K("c"), K("three")), 0);
  uint32_t nfields = b->nfields;
  /* Overwriting keeps the position and changes the type. */
  assert_int_equal(lg_batch_set_int(b, 0, K("a"), -1), 0);
  assert_int_equal(lg_batch_set_str(b, 0, K("b"), K("two")), 0);
  assert_int_equal(b->nfields, nfields);
  assert_string_equal(chain(b, 0), "a,b,c");
  assert_int_equal(lg_batch_find(b, 0, K("a"))->type, LG_VAL_INT);
  assert_true(lg_batch_find(b, 0, K("a"))->i == -1);
  assert_str_field(b, 0, K("b"), "two", 3);
  /* Removing leaves a tombstone in place. */
  assert_int_equal(lg_batch_del(b, 0, K("b")), 0);
  assert_int_equal(lg_batch_find(b, 0, K("b"))->type, LG_VAL_DELETED);
  assert_string_equal(chain(b, 0), "a,-b,c");
  /* Setting it again revives it where it was. */
  assert_int_equal(lg_batch_set_bool(b, 0, K("b"), 1), 0);
  assert_string_equal(chain(b, 0), "a,b,c");
  /* Removing a key the record never had and that shadows nothing adds
   * no field. */
  assert_int_equal(lg_batch_del(b, 0, K("zzz")), 0);
  assert_null(lg_batch_find(b, 0, K("zzz")));
  assert_int_equal(b->nfields, nfields);
  assert_int_equal(b->recs[0].flags & LG_REC_SHADOWED, 0);
  lg_batch_destroy(b);
}

static void test_shadowing(void **state) {
  (void)state;
  lg_batch_t *b = with_bodies(0, 3);
  lg_meta_t *m = lg_meta_create();
  assert_int_equal(lg_meta_add_str(m, "k8s.pod.name", K("web-1")), 0);
  assert_int_equal(lg_meta_seal(m), 0);
  lg_batch_set_meta(b, m);
  lg_meta_unref(m); /* the batch holds its own reference */
  assert_true(lg_batch_key_is_shadowing(b, K("time")));
  assert_true(lg_batch_key_is_shadowing(b, K("body")));
  assert_true(lg_batch_key_is_shadowing(b, K("log.iostream")));
  assert_true(lg_batch_key_is_shadowing(b, K("k8s.pod.name")));
  assert_false(lg_batch_key_is_shadowing(b, K("k8s.pod")));
  assert_false(lg_batch_key_is_shadowing(b, K("msg")));
  /* An ordinary key does not mark the record. */
  assert_int_equal(lg_batch_set_str(b, 0, K("msg"), K("x")), 0);
  assert_int_equal(b->recs[0].flags & LG_REC_SHADOWED, 0);
  /* Replacing body marks it. */
  assert_int_equal(lg_batch_set_str(b, 0, K("body"), K("new")), 0);
  assert_true(b->recs[0].flags & LG_REC_SHADOWED);
  /* Removing a metadata key the record never set leaves a tombstone. */
  assert_int_equal(lg_batch_del(b, 1, K("k8s.pod.name")), 0);
  const lg_field_t *f = lg_batch_find(b, 1, K("k8s.pod.name"));
  assert_non_null(f);
  assert_int_equal(f->type, LG_VAL_DELETED);
  assert_true(b->recs[1].flags & LG_REC_SHADOWED);
  assert_int_equal(b->recs[2].flags & LG_REC_SHADOWED, 0);
  /* The same by key id. */
  int64_t tid = lg_batch_key_id(b, K("time"));
  assert_true(tid >= 0);
  assert_int_equal(lg_batch_del_id(b, 2, (uint32_t)tid), 0);
  assert_int_equal(lg_batch_find(b, 2, K("time"))->type, LG_VAL_DELETED);
  assert_true(b->recs[2].flags & LG_REC_SHADOWED);
  /* A key interned before the metadata is set shadows once it is. */
  lg_batch_t *b2 = with_bodies(0, 1);
  int64_t id = lg_batch_key_id(b2, K("host"));
  assert_int_equal(b2->keys[id].shadow, -1);
  lg_meta_t *m2 = lg_meta_create();
  assert_int_equal(lg_meta_add_str(m2, "host", K("h1")), 0);
  assert_int_equal(lg_meta_seal(m2), 0);
  lg_batch_set_meta(b2, m2);
  assert_int_equal(b2->keys[id].shadow, 3);
  assert_int_equal(lg_batch_set_str_id(b2, 0, (uint32_t)id, K("h2")), 0);
  assert_true(b2->recs[0].flags & LG_REC_SHADOWED);
  lg_meta_unref(m2);
  lg_batch_destroy(b2);
  lg_batch_destroy(b);
}

static void test_interned_keys(void **state) {
  (void)state;
  lg_batch_t *b = with_bodies(0, 3);
  int64_t a = lg_batch_key_id(b, K("level"));
  int64_t c = lg_batch_key_id(b, K("msg"));
  assert_true(a >= 0 && c >= 0 && a != c);
  assert_int_equal(lg_batch_key_id(b, K("level")), a);
  assert_int_equal(b->nkeys, 2);
  /* Every record's field points at the one copy of the key. */
  for (uint32_t i = 0; i < 3; i++)
    assert_int_equal(lg_batch_set_int_id(b, i, (uint32_t)a, i), 0);
  assert_int_equal(lg_batch_set_str(b, 1, K("level"), K("warn")), 0);
  assert_int_equal(b->nkeys, 2);
  for (uint32_t i = 0; i < 3; i++) {
    const lg_field_t *f = lg_batch_find(b, i, K("level"));
    assert_non_null(f);
    assert_int_equal(f->key_off, b->keys[a].off);
    assert_ptr_equal(lg_batch_field_key(b, f), &b->keys[a]);
  }
  assert_str_field(b, 1, K("level"), "warn", 4);
  assert_true(lg_batch_find(b, 2, K("level"))->i == 2);
  /* The key's JSON text is stored, escaped. */
  int64_t q = lg_batch_key_id(b, K("a\"b"));
  assert_int_equal(b->keys[q].json_len, 7);
  assert_memory_equal(b->data + b->keys[q].json_off, "\"a\\\"b\":", 7);
  /* The setters by id, and a bad id. */
  assert_int_equal(lg_batch_set_num_id(b, 0, (uint32_t)c, 1.5), 0);
  assert_int_equal(lg_batch_set_bool_id(b, 1, (uint32_t)c, 1), 0);
  assert_int_equal(lg_batch_set_null_id(b, 2, (uint32_t)c), 0);
  assert_true(lg_batch_find(b, 0, K("msg"))->d == 1.5);
  assert_int_equal(lg_batch_find(b, 1, K("msg"))->type, LG_VAL_BOOL);
  assert_int_equal(lg_batch_find(b, 2, K("msg"))->type, LG_VAL_NULL);
  assert_int_equal(lg_batch_set_json_id(b, 0, (uint32_t)c, K("{}")), 0);
  assert_int_equal(lg_batch_find(b, 0, K("msg"))->type, LG_VAL_JSON);
  assert_int_equal(lg_batch_set_int_id(b, 0, 99, 1), -EINVAL);
  assert_int_equal(lg_batch_set_str_id(b, 0, 99, K("x")), -EINVAL);
  assert_int_equal(lg_batch_del_id(b, 0, 99), -EINVAL);
  assert_int_equal(lg_batch_set_int_id(b, 7, (uint32_t)a, 1), -ERANGE);
  assert_int_equal(lg_batch_del_id(b, 0, (uint32_t)c), 0);
  assert_int_equal(lg_batch_find(b, 0, K("msg"))->type, LG_VAL_DELETED);
  /* A span: a field that shares bytes of the body. */
  uint32_t bo = b->recs[0].body_off;
  assert_int_equal(lg_batch_set_span_id(b, 0, (uint32_t)c, LG_VAL_STR, bo, 4),
                   0);
  assert_str_field(b, 0, K("msg"), "line", 4);
  assert_int_equal(lg_batch_find(b, 0, K("msg"))->s_off, bo);
  assert_int_equal(
      lg_batch_set_span_id(b, 0, (uint32_t)c, LG_VAL_STR, b->data_len, 1),
      -EINVAL);
  assert_int_equal(lg_batch_set_span_id(b, 0, (uint32_t)c, LG_VAL_INT, bo, 1),
                   -EINVAL);
  lg_batch_destroy(b);
}

/* Many distinct keys: the hash table grows past its first size and the
 * key Bloom word of a record (32 bits) has collisions that must not make
 * one key find another's field. */
static void test_many_keys(void **state) {
  (void)state;
  lg_batch_t *b = with_bodies(0, 2);
  char key[16];
  for (int k = 0; k < 300; k++) {
    int len = snprintf(key, sizeof key, "k%d", k);
    if (k % 2 == 0)
      assert_int_equal(lg_batch_set_int(b, 0, key, (size_t)len, k), 0);
    else
      assert_int_equal(lg_batch_set_int(b, 1, key, (size_t)len, -k), 0);
  }
  assert_int_equal(b->nkeys, 300);
  assert_true(b->key_slots_cap >= 600);
  for (int k = 0; k < 300; k++) {
    int len = snprintf(key, sizeof key, "k%d", k);
    const lg_field_t *f0 = lg_batch_find(b, 0, key, (size_t)len);
    const lg_field_t *f1 = lg_batch_find(b, 1, key, (size_t)len);
    if (k % 2 == 0) {
      assert_non_null(f0);
      assert_null(f1);
      assert_int_equal(f0->i, k);
    } else {
      assert_null(f0);
      assert_non_null(f1);
      assert_int_equal(f1->i, -k);
    }
  }
  /* Reset forgets keys (a new epoch) and keeps working. */
  uint64_t epoch = b->key_epoch;
  uint32_t gen = b->gen;
  lg_batch_reset(b);
  assert_int_equal(b->n, 0);
  assert_int_equal(b->nkeys, 0);
  assert_int_equal(b->nfields, 0);
  assert_int_equal(b->data_len, 0);
  assert_int_equal(b->gen, gen + 1);
  assert_true(b->key_epoch != epoch);
  assert_int_equal(lg_batch_add(b, K("again"), 0, 0, 5, 0), 0);
  assert_null(lg_batch_find(b, 0, K("k0")));
  assert_int_equal(lg_batch_set_str(b, 0, K("k0"), K("v")), 0);
  assert_str_field(b, 0, K("k0"), "v", 1);
  assert_int_equal(lg_batch_key_id(b, K("k0")), 0);
  lg_batch_destroy(b);
}

/* Many records with fields in a batch that starts tiny: the arena, the
 * record array and the field array all move many times. */
/* A record with very many keys (a 1 MiB JSON or logfmt line): setting
 * and finding each one must not walk the record's fields, which made n
 * keys cost O(n^2) (80,000 keys: 7-11 s). 100,000 keys set on one record
 * and read back, all set again (updates), all set on the next record and
 * read back, as a script does record after record; then keys set on
 * records out of order and after the fields were reset as a worker
 * returns them: every lookup finds its own record's value. (Reading an
 * earlier record's key after a later record set it still walks.) */
static void test_many_keys_one_record(void **state) {
  (void)state;
  enum { N = 100000 };
  lg_batch_t *b = with_bodies(0, 3);
  char key[16];
  clock_t t0 = clock();
  for (int pass = 0; pass < 3; pass++) {
    uint32_t rec = pass == 2 ? 1 : 0;
    for (int k = 0; k < N; k++) {
      int len = snprintf(key, sizeof key, "k%d", k);
      assert_int_equal(lg_batch_set_int(b, rec, key, (size_t)len, k + pass * N),
                       0);
    }
    for (int k = 0; k < N; k++) {
      int len = snprintf(key, sizeof key, "k%d", k);
      const lg_field_t *f = lg_batch_find(b, rec, key, (size_t)len);
      assert_non_null(f);
      assert_int_equal(f->i, k + pass * N);
      assert_null(lg_batch_find(b, 2, key, (size_t)len));
    }
  }
  double cpu = (double)(clock() - t0) / CLOCKS_PER_SEC;
  /* About 0.2 s under ASan; the walks took minutes. */
  assert_true(cpu < 5.0);
  assert_int_equal(b->nfields, 2 * N);
  assert_int_equal(lg_batch_find(b, 0, K("k0"))->i, N);
  assert_int_equal(lg_batch_find(b, 0, K("k99999"))->i, 99999 + N);

  /* Out of order: a key on record 2, then 0, then 2 again. */
  assert_int_equal(lg_batch_set_int(b, 2, K("x"), 1), 0);
  assert_int_equal(lg_batch_set_int(b, 0, K("x"), 2), 0);
  assert_int_equal(lg_batch_set_int(b, 2, K("x"), 3), 0);
  assert_int_equal(lg_batch_find(b, 2, K("x"))->i, 3);
  assert_int_equal(lg_batch_find(b, 0, K("x"))->i, 2);
  assert_null(lg_batch_find(b, 1, K("x")));
  assert_string_equal(chain(b, 2), "x");

  /* Fields reset as lg_worker.c returns them (keys kept): the keys'
   * newest fields are gone, and indexes are used again. */
  b->nfields = 0;
  for (uint32_t i = 0; i < b->n; i++) {
    b->recs[i].field_head = b->recs[i].field_tail = -1;
    b->recs[i].key_bloom = 0;
  }
  assert_int_equal(lg_batch_set_int(b, 1, K("y"), 10), 0);
  assert_int_equal(lg_batch_set_int(b, 1, K("x"), 11), 0);
  assert_int_equal(lg_batch_set_int(b, 2, K("k5"), 12), 0);
  assert_int_equal(lg_batch_set_int(b, 2, K("x"), 13), 0);
  assert_int_equal(lg_batch_find(b, 1, K("x"))->i, 11);
  assert_int_equal(lg_batch_find(b, 2, K("x"))->i, 13);
  assert_null(lg_batch_find(b, 0, K("x")));
  assert_null(lg_batch_find(b, 1, K("k5")));
  assert_string_equal(chain(b, 1), "y,x");
  assert_string_equal(chain(b, 2), "k5,x");
  lg_batch_destroy(b);
}

static void test_arena_growth(void **state) {
  (void)state;
  enum { N = 5000 };
  lg_batch_t *b = lg_batch_create(16);
  assert_non_null(b);
  char body[64], val[64];
  for (uint32_t i = 0; i < N; i++) {
    int len = snprintf(body, sizeof body, "record number %u with text", i);
    assert_int_equal(lg_batch_add(b, body, (size_t)len, i, (uint64_t)i * 100,
                                  (uint64_t)i * 100 + 100, 0),
                     (int64_t)i);
    int vlen = snprintf(val, sizeof val, "v%u", i * 7);
    assert_int_equal(lg_batch_set_str(b, i, K("v"), val, (size_t)vlen), 0);
    assert_int_equal(lg_batch_set_int(b, i, K("i"), (int64_t)i << 33), 0);
  }
  assert_int_equal(b->n, N);
  assert_true(b->recs_cap >= N);
  assert_int_equal(b->nfields, 2 * N);
  assert_int_equal(b->nkeys, 2);
  for (uint32_t i = 0; i < N; i++) {
    int len = snprintf(body, sizeof body, "record number %u with text", i);
    assert_body(b, i, body, (size_t)len);
    int vlen = snprintf(val, sizeof val, "v%u", i * 7);
    assert_str_field(b, i, K("v"), val, (size_t)vlen);
    assert_true(lg_batch_find(b, i, K("i"))->i == (int64_t)i << 33);
    assert_int_equal(b->recs[i].offset, (uint64_t)i * 100);
  }
  lg_batch_destroy(b);
}

static void test_flags_routes_fail(void **state) {
  (void)state;
  lg_batch_t *b = with_bodies(0, 3);
  b->recs[0].flags |= LG_REC_DROPPED;
  b->recs[1].routes = 0x5;
  b->recs[1].flags |= LG_REC_ROUTED;
  assert_int_equal(lg_batch_fail(b, 2, K("attempt to index nil")), 0);
  assert_true(b->recs[2].flags & LG_REC_FAILED);
  assert_int_equal(b->recs[2].err_len, 20);
  assert_memory_equal(b->data + b->recs[2].err_off, "attempt to index nil", 20);
  /* Failing does not touch the body or other records. */
  assert_body(b, 2, "line 2", 6);
  assert_int_equal(b->recs[1].flags & LG_REC_FAILED, 0);
  assert_int_equal(b->recs[0].flags, LG_REC_DROPPED);
  assert_int_equal(b->recs[1].routes, 0x5);
  lg_batch_destroy(b);
}

/* A batch whose arena is full (4 GiB: data_len set to the limit, none of
 * it allocated; lg__batch_arena_put refuses before it would grow) still
 * keeps the error text of a record a script fails on: the record's JSON
 * for the dead-letter output carries it in "lugger.error". Before, the
 * text was dropped (err_len 0: "lugger.error":"") and lg_batch_fail did
 * not even flag the record failed. */
static void test_fail_in_a_full_arena(void **state) {
  (void)state;
  const char *bodies[] = {"a", "b", "c"};
  lg_batch_t *b = lg_test_batch_of(bodies, 3);
  uint64_t real_len = b->data_len;
  b->data_len = UINT32_MAX - 8;
  assert_int_equal(lg_batch_append_raw(b, "0123456789", 10), -E2BIG);
  assert_int_equal(lg_ffi_rec_fail(b, 1, K("attempt to index a nil value")), 0);
  assert_int_equal(lg_batch_fail(b, 2, K("the batch's pipeline is gone")), 0);
  b->data_len = real_len;
  assert_true(b->recs[1].flags & LG_REC_FAILED);
  assert_true(b->recs[2].flags & LG_REC_FAILED);
  lg_buf_t out = LG_BUF_INIT;
  assert_int_equal(lg_json_encode_record(&out, b, 1), 0);
  assert_int_equal(lg_json_encode_record(&out, b, 2), 0);
  lg_buf_putc(&out, '\0');
  if (strstr(out.data, "\"lugger.error\":\"attempt to index a nil value "
                       "(file /var/log/t.log offset 2)\"}\n") == NULL ||
      strstr(out.data,
             "\"lugger.error\":\"the batch's pipeline is gone\"}\n") == NULL)
    fail_msg("records for the dead-letter output: %s", out.data);
  lg_buf_free(&out);
  lg_batch_destroy(b);
}

static void test_insert(void **state) {
  (void)state;
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(
      lg_batch_add(b, K("a"), 11, 0, 2, LG_REC_STDERR | LG_REC_HAS_STREAM), 0);
  assert_int_equal(lg_batch_add(b, K("b"), 22, 2, 4, 0), 1);
  b->recs[0].routes = 0x3;
  b->recs[0].flags |= LG_REC_ROUTED | LG_REC_DROPPED | LG_REC_FAILED;
  assert_int_equal(lg_batch_set_str(b, 0, K("f"), K("on a")), 0);
  assert_int_equal(lg_batch_set_str(b, 1, K("f"), K("on b")), 0);
  assert_int_equal(lg_batch_insert(b, 0, K("a2")), 1);
  assert_int_equal(lg_batch_insert(b, 1, K("a3")), 2);
  assert_int_equal(b->n, 4);
  assert_body(b, 0, "a", 1);
  assert_body(b, 1, "a2", 2);
  assert_body(b, 2, "a3", 2);
  assert_body(b, 3, "b", 1);
  /* The split-off records take the source's time, offsets, routes and
   * origin/routed flags, not its dropped/failed state or its fields. */
  for (uint32_t i = 1; i <= 2; i++) {
    assert_int_equal(b->recs[i].time_ns, 11);
    assert_int_equal(b->recs[i].offset, 0);
    assert_int_equal(b->recs[i].end_offset, 2);
    assert_int_equal(b->recs[i].routes, 0x3);
    assert_int_equal(b->recs[i].flags,
                     LG_REC_STDERR | LG_REC_HAS_STREAM | LG_REC_ROUTED);
    assert_null(lg_batch_find(b, i, K("f")));
  }
  /* The moved record keeps its fields. */
  assert_str_field(b, 3, K("f"), "on b", 4);
  assert_int_equal(b->recs[3].time_ns, 22);
  assert_str_field(b, 0, K("f"), "on a", 4);
  assert_int_equal(lg_batch_insert(b, 4, K("x")), -ERANGE);
  lg_batch_destroy(b);
}

static void test_clone(void **state) {
  (void)state;
  const char *bodies[] = {"one", "two\0x", "three"};
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(lg_batch_add(b, bodies[0], 3, 1, 0, 4, LG_REC_FMT_CRI), 0);
  assert_int_equal(lg_batch_add(b, bodies[1], 5, 2, 4, 10, LG_REC_STDERR), 1);
  assert_int_equal(lg_batch_add(b, bodies[2], 5, 3, 10, 16, 0), 2);
  lg_meta_t *m = lg_meta_create();
  assert_int_equal(lg_meta_add_str(m, "log.file.path", K("/x")), 0);
  assert_int_equal(lg_meta_seal(m), 0);
  lg_batch_set_meta(b, m);
  lg_meta_unref(m);
  b->source_id = 7;
  b->pipeline = 2;
  b->fingerprint = 0xfeedULL;
  b->checkpoint_offset = 16;
  b->file_key = 0xabcdULL;
  b->lane = 0x1a2eULL;
  b->recs[0].routes = 1;

  lg_batch_t *c = lg_batch_clone(b);
  assert_non_null(c);
  assert_ptr_not_equal(c->data, b->data);
  assert_int_equal(c->n, 3);
  assert_body(c, 0, "one", 3);
  assert_body(c, 1, "two\0x", 5);
  assert_body(c, 2, "three", 5);
  for (uint32_t i = 0; i < 3; i++) {
    assert_int_equal(c->recs[i].time_ns, b->recs[i].time_ns);
    assert_int_equal(c->recs[i].offset, b->recs[i].offset);
    assert_int_equal(c->recs[i].end_offset, b->recs[i].end_offset);
    assert_int_equal(c->recs[i].flags, b->recs[i].flags);
    assert_int_equal(c->recs[i].routes, 0); /* routes are not copied */
  }
  assert_ptr_equal(c->meta, b->meta);
  assert_int_equal(b->meta->refs, 2);
  assert_int_equal(c->source_id, 7);
  assert_int_equal(c->pipeline, 2);
  assert_int_equal(c->fingerprint, 0xfeedULL);
  assert_int_equal(c->checkpoint_offset, 16);
  assert_int_equal(c->file_key, 0xabcdULL);
  assert_int_equal(c->lane, 0x1a2eULL); /* its stream's order and worker */
  /* The copy is independent: fields on it do not show on the original. */
  assert_int_equal(lg_batch_set_str(c, 0, K("k"), K("v")), 0);
  assert_null(lg_batch_find(b, 0, K("k")));
  /* A batch with fields is not cloned. */
  assert_null(lg_batch_clone(c));
  lg_batch_destroy(b);
  assert_int_equal(c->meta->refs, 1);
  lg_batch_destroy(c);
}

/* Record ids: "<fingerprint, 16 hex>:<offset>", the longest fitting
 * LG_BATCH_REC_ID_MAX, and the errors. */
static void test_rec_id(void **state) {
  (void)state;
  lg_batch_t *b = lg_batch_create(0);
  assert_int_equal(lg_batch_add(b, K("a"), 0, 0, 2, 0), 0);
  assert_int_equal(lg_batch_add(b, K("b"), 0, UINT64_MAX, UINT64_MAX, 0), 1);
  b->fingerprint = 0x00c0ffee12345678ULL;
  char id[LG_BATCH_REC_ID_MAX];
  assert_int_equal(lg_batch_rec_id(b, 0, id, sizeof id), 18);
  assert_string_equal(id, "00c0ffee12345678:0");
  b->fingerprint = UINT64_MAX;
  /* The longest id: 16 + 1 + 20 digits, and its NUL. */
  assert_int_equal(lg_batch_rec_id(b, 1, id, sizeof id), 37);
  assert_string_equal(id, "ffffffffffffffff:18446744073709551615");
  assert_int_equal(lg_batch_rec_id(b, 1, id, 37), -ENOSPC);
  assert_int_equal(lg_batch_rec_id(b, 2, id, sizeof id), -ERANGE);
  assert_int_equal(lg_batch_rec_id(NULL, 0, id, sizeof id), -EINVAL);
  assert_int_equal(lg_batch_rec_id(b, 0, NULL, 0), -EINVAL);
  lg_batch_destroy(b);
}

/* The shared helper's batch: what the other tests build on. */
static void test_helper_batch(void **state) {
  (void)state;
  const char *bodies[] = {"a", "bc"};
  lg_batch_t *b = lg_test_batch_of(bodies, 2);
  assert_non_null(b);
  assert_int_equal(b->n, 2);
  assert_body(b, 1, "bc", 2);
  assert_int_equal(b->recs[0].routes & 1, 1);
  assert_non_null(lg_meta_find(b->meta, K("log.file.path")));
  lg_batch_destroy(b);
}

/* lg_batch_fit: a batch of two lines in a 1.25 MiB arena, with a record
 * array and an output buffer a busy batch grew, is cut to what it holds,
 * bodies, fields and encoded records unchanged; a full batch keeps its
 * buffers (no cut and regrow per batch), an output buffer holding a few
 * records among full ones is cut on its own. */
static void test_fit(void **state) {
  (void)state;
  lg_batch_t *b = with_bodies(1280u << 10, 2);
  assert_int_equal(lg_batch_set_str(b, 1, K("k"), K("value")), 0);
  assert_int_equal(LG_GROW(b->recs, b->recs_cap, 16384, 256), 0);
  b->out = calloc(2, sizeof *b->out);
  assert_non_null(b->out);
  b->nout = 2;
  assert_int_equal(lg_buf_reserve(&b->out[1].data, 2u << 20), 0);
  for (uint32_t i = 0; i < 2; i++)
    assert_int_equal(lg_payload_add(&b->out[0], NULL, b, i, NULL), 0);
  assert_int_equal(lg_buf_reserve(&b->out[0].data, 2u << 20), 0);
  uint32_t len0;
  const char *r0 = lg_payload_rec(&b->out[0], 1, &len0);
  char enc[256];
  assert_true(len0 < sizeof enc);
  memcpy(enc, r0, len0);
  size_t before = (size_t)b->data_cap + b->recs_cap * sizeof *b->recs +
                  lg_payload_mem(&b->out[0]) + lg_payload_mem(&b->out[1]);

  size_t freed = lg_batch_fit(b);
  size_t after = (size_t)b->data_cap + b->recs_cap * sizeof *b->recs +
                 lg_payload_mem(&b->out[0]) + lg_payload_mem(&b->out[1]);
  assert_int_equal(freed, before - after);
  assert_true(b->data_cap >= b->data_len && b->data_cap <= 256);
  assert_int_equal(b->recs_cap, 16);
  assert_true(after < 8192);
  assert_body(b, 0, "line 0", 6);
  assert_body(b, 1, "line 1", 6);
  assert_str_field(b, 1, K("k"), K("value"));
  assert_int_equal(b->out[0].n, 2);
  uint32_t len1;
  const char *r1 = lg_payload_rec(&b->out[0], 1, &len1);
  assert_int_equal(len1, len0);
  assert_memory_equal(r1, enc, len0);
  /* Empty: room for 4 x the arena's bytes (the budget's reserve). */
  assert_true(b->out[1].data.cap >= 4 * b->data_len &&
              b->out[1].data.cap <= 4 * b->data_len + 256);
  /* Still a batch: records and fields can be added. */
  assert_int_equal(lg_batch_add(b, K("line 2"), 2, 20, 30, 0), 2);
  assert_int_equal(lg_batch_set_str(b, 2, K("k"), K("v2")), 0);
  assert_body(b, 2, "line 2", 6);
  assert_int_equal(lg_batch_fit(b), 0); /* nothing more to give back */
  /* Reused from the pool: full size again, empty. */
  lg_batch_reset(b);
  lg_batch_unfit(b, 1u << 20);
  assert_int_equal(b->data_cap, 1u << 20);
  assert_int_equal(b->recs_cap, LG_BATCH_RECS_INIT);
  assert_int_equal(lg_batch_add(b, K("again"), 1, 2, 3, 0), 0);
  assert_body(b, 0, "again", 5);
  lg_batch_destroy(b);

  /* A full batch: nothing is cut, not even an empty output buffer that
   * the next batch routed there needs again. */
  b = with_bodies(256u << 10, 0);
  static char line[1000];
  memset(line, 'x', sizeof line);
  while (b->data_len < b->data_cap / 2)
    assert_true(lg_batch_add(b, line, sizeof line, 0, 0, 0, 0) >= 0);
  b->out = calloc(2, sizeof *b->out);
  b->nout = 2;
  for (uint32_t i = 0; i < b->n; i++)
    assert_int_equal(lg_payload_add(&b->out[0], NULL, b, i, NULL), 0);
  assert_int_equal(lg_buf_reserve(&b->out[1].data, 2u << 20), 0);
  uint64_t cap = b->data_cap;
  size_t cap0 = b->out[0].data.cap, cap1 = b->out[1].data.cap;
  assert_int_equal(lg_batch_fit(b), 0);
  assert_int_equal(b->data_cap, cap);
  assert_int_equal(b->out[0].data.cap, cap0);
  assert_int_equal(b->out[1].data.cap, cap1);
  /* An output buffer with a few records of this batch, grown by an
   * earlier one: cut on its own. */
  lg_payload_reset(&b->out[1]);
  assert_int_equal(lg_payload_add(&b->out[1], NULL, b, 0, NULL), 0);
  assert_true(lg_batch_fit(b) > (1u << 20));
  assert_true(b->out[1].data.cap < 8192);
  assert_int_equal(b->data_cap, cap);
  assert_int_equal(b->out[0].data.cap, cap0);
  lg_batch_destroy(b);

  /* A batch filling a tenth of its arena (a moderately busy file): cut,
   * its empty pooled output buffer keeping room for 4 x its bytes, so
   * encoding them does not grow it by doubling from nothing. */
  b = with_bodies(1280u << 10, 0);
  while (b->data_len < (128u << 10))
    assert_true(lg_batch_add(b, line, sizeof line, 0, 0, 0, 0) >= 0);
  b->out = calloc(1, sizeof *b->out);
  b->nout = 1;
  assert_int_equal(lg_buf_reserve(&b->out[0].data, 8u << 20), 0);
  assert_true(lg_batch_fit(b) > (6u << 20));
  assert_true(b->data_cap >= b->data_len && b->data_cap < b->data_len + 256);
  assert_true(b->out[0].data.cap >= 4 * b->data_len &&
              b->out[0].data.cap < 4 * b->data_len + 256);
  lg_batch_destroy(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_add_records),
      cmocka_unit_test(test_fields_typed),
      cmocka_unit_test(test_overwrite_and_remove),
      cmocka_unit_test(test_shadowing),
      cmocka_unit_test(test_interned_keys),
      cmocka_unit_test(test_many_keys),
      cmocka_unit_test(test_many_keys_one_record),
      cmocka_unit_test(test_arena_growth),
      cmocka_unit_test(test_flags_routes_fail),
      cmocka_unit_test(test_fail_in_a_full_arena),
      cmocka_unit_test(test_insert),
      cmocka_unit_test(test_clone),
      cmocka_unit_test(test_fit),
      cmocka_unit_test(test_rec_id),
      cmocka_unit_test(test_helper_batch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
