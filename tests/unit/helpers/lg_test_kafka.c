/* The kafka output's test fixture (lg_test_kafka.h). */
#include "helpers/lg_test_kafka.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "framing/lg_sample.h"
#include "helpers/lg_test.h"
#include "outputs/lg_out_kafka.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_payload.h"

void kfx_on_ack(void *ud, void *ref, int status) {
  kfx_acks_t *a = ud;
  assert_true(a->n < KFX_MAX_ACKS);
  a->refs[a->n] = (uintptr_t)ref;
  a->status[a->n] = status;
  a->n++;
}

void kfx_cluster_start(kfx_cluster_t *m, int nbrokers, int partitions) {
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "log_level", "0", err, sizeof err);
  m->holder = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
  assert_non_null(m->holder);
  m->mc = rd_kafka_mock_cluster_new(m->holder, nbrokers);
  assert_non_null(m->mc);
  m->bootstraps = rd_kafka_mock_cluster_bootstraps(m->mc);
  assert_int_equal(rd_kafka_mock_topic_create(m->mc, "logs", partitions, 1), 0);
}

void kfx_cluster_stop(kfx_cluster_t *m) {
  rd_kafka_mock_cluster_destroy(m->mc);
  rd_kafka_destroy(m->holder);
}

/* Batches submitted by kfx_submit_json, freed after each test. */
typedef struct held {
  lg_batch_t *b;
  struct held *next;
} held_t;
static held_t *held_list;

int kfx_free_held(void **state) {
  (void)state;
  while (held_list != NULL) {
    held_t *h = held_list;
    held_list = h->next;
    lg_batch_destroy(h->b);
    free(h);
  }
  return 0;
}

uint64_t kfx_held_bytes(void) {
  uint64_t bytes = 0;
  for (held_t *h = held_list; h != NULL; h = h->next)
    bytes += h->b->out[0].data.len;
  return bytes;
}

/* Submits JSON lines as the engine would: a batch whose records have the
 * lines' keys as fields (lg_sample's JSON format), encoded with the
 * output's encoder, record ids "00000000000000ab:<ref * 1000 + line>". */
int kfx_submit_json(lg_output_t *o, const char *text, size_t len, void *ref) {
  lg_sample_t *s = lg_sample_create(LG_SAMPLE_JSON, NULL, 0);
  lg_batch_t *b = lg_batch_create(len + 64);
  assert_non_null(s);
  assert_non_null(b);
  char err[256];
  lg_sample_begin(s, b);
  assert_int_equal(lg_sample_feed(s, text, len, 1, b, err, sizeof err), 0);
  assert_int_equal(lg_sample_finish(s, 1, b, err, sizeof err), 0);
  lg_sample_destroy(s);
  b->fingerprint = 0xab;
  for (uint32_t j = 0; j < b->n; j++)
    b->recs[j].offset = (uintptr_t)ref * 1000 + j;
  b->out = calloc(1, sizeof *b->out);
  assert_non_null(b->out);
  b->nout = 1;
  lg_encoder_t enc = lg_output_encoder(o);
  for (uint32_t j = 0; j < b->n; j++)
    assert_int_equal(lg_payload_add(&b->out[0], &enc, b, j, NULL), 0);
  held_t *h = calloc(1, sizeof *h);
  h->b = b;
  h->next = held_list;
  held_list = h;
  return lg_output_submit(o, &b->out[0], ref, 0);
}

void kfx_set_librdkafka(lg_conf_output_t *c, const char *const *rk) {
  int i = lg_opt_find(c->vt->options, "librdkafka");
  assert_true(i >= 0);
  lg_optval_t *v = &c->opts[i];
  size_t n = 0;
  while (rk[2 * n] != NULL)
    n++;
  v->keys = calloc(n + 1, sizeof *v->keys);
  v->vals = calloc(n + 1, sizeof *v->vals);
  for (size_t j = 0; j < n; j++) {
    v->keys[j] = strdup(rk[2 * j]);
    v->vals[j] = strdup(rk[2 * j + 1]);
  }
  v->n = n;
  v->set = 1;
}

static lg_conf_output_t *make_conf(const char *const *kv,
                                   const char *const *rk) {
  char err[512] = "";
  lg_conf_output_t *c = lg_config_output_new("k", "kafka", kv, err, sizeof err);
  if (c == NULL) {
    print_error("lg_config_output_new: %s\n", err);
    fail();
  }
  if (rk != NULL)
    kfx_set_librdkafka(c, rk);
  return c;
}

static lg_output_t *open_output(uv_loop_t *loop, lg_conf_output_t *c,
                                kfx_acks_t *a) {
  char err[512] = "";
  lg_output_t *o = lg_output_create(loop, c, 0, kfx_on_ack, a, err, sizeof err);
  if (o == NULL) {
    print_error("create: %s\n", err);
    fail();
  }
  return o;
}

void kfx_on_closed(void *ud) { (*(int *)ud)++; }

static void close_all(uv_loop_t *loop, lg_output_t *o) {
  int closed = 0;
  lg_output_close(o, kfx_on_closed, &closed);
  lg_test_run_until_count(loop, &closed, 1, 10000, "the close callback");
  assert_int_equal(closed, 1);
  LG_TEST_LOOP_CLOSE(loop);
}

/* Builds chunk `ci`: KFX_CHUNK_RECS records, record r has key k<r % KFX_NKEYS>,
 * sequence number ci*KFX_CHUNK_RECS+r, and optionally a topic field. */
char *kfx_make_chunk(int ci, const char *topic_of_odd, size_t *len) {
  size_t cap = 8192;
  char *s = malloc(cap);
  size_t n = 0;
  for (int r = 0; r < KFX_CHUNK_RECS; r++) {
    int seq = ci * KFX_CHUNK_RECS + r;
    n += (size_t)snprintf(s + n, cap - n,
                          "{\"body\":\"line %d\",\"log.file.path\":\"/var/log/"
                          "a.log\",\"k\":\"k%d\",\"seq\":%d%s%s%s}\n",
                          seq, seq % KFX_NKEYS, seq,
                          topic_of_odd && (seq & 1) ? ",\"topic\":\"" : "",
                          topic_of_odd && (seq & 1) ? topic_of_odd : "",
                          topic_of_odd && (seq & 1) ? "\"" : "");
  }
  *len = n;
  return s;
}

static int json_int(const char *p, size_t len, const char *key) {
  char pat[32];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *s = memmem(p, len, pat, strlen(pat));
  return s != NULL ? atoi(s + strlen(pat)) : -1;
}

/* Reads topic `topic` (3 partitions) from the start until `want` records
 * or `ms`, then 300 ms more to catch duplicates. */
void kfx_consume(const char *bootstraps, const char *topic, int want, int ms,
                 kfx_seen_t *s) {
  char err[512];
  memset(s, 0, sizeof *s);
  for (int i = 0; i < KFX_NKEYS; i++)
    s->last_per_key[i] = s->first_per_key[i] = -1;
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, err, sizeof err);
  rd_kafka_conf_set(c, "group.id", "t", err, sizeof err);
  rd_kafka_conf_set(c, "enable.auto.commit", "false", err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
  assert_non_null(rk);
  rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(3);
  for (int p = 0; p < 3; p++)
    rd_kafka_topic_partition_list_add(tl, topic, p)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  assert_int_equal(rd_kafka_assign(rk, tl), 0);
  rd_kafka_topic_partition_list_destroy(tl);
  int64_t end = (int64_t)lg_test_now_ms() + ms;
  int64_t extra = -1;
  while ((int64_t)lg_test_now_ms() < end &&
         (extra < 0 || (int64_t)lg_test_now_ms() < extra)) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
    if (s->got >= want && extra < 0)
      extra = (int64_t)lg_test_now_ms() + 300;
    if (m == NULL)
      continue;
    if (m->err) {
      rd_kafka_message_destroy(m);
      continue;
    }
    int seq = json_int(m->payload, m->len, "seq");
    assert_true(seq >= 0 && seq < (int)(sizeof s->count / sizeof *s->count));
    int key = seq % KFX_NKEYS;
    if (s->count[seq]++ > 0) {
      s->dup++;
    } else {
      if (seq < s->first_per_key[key])
        s->first_reordered++;
      else
        s->first_per_key[key] = seq;
    }
    s->got++;
    char kbuf[16];
    snprintf(kbuf, sizeof kbuf, "k%d", key);
    assert_int_equal(m->key_len, strlen(kbuf));
    assert_memory_equal(m->key, kbuf, m->key_len);
    if (seq < s->last_per_key[key])
      s->reordered++;
    s->last_per_key[key] = seq;
    rd_kafka_headers_t *h;
    const void *v;
    size_t sz;
    if (rd_kafka_message_headers(m, &h) != 0 ||
        rd_kafka_header_get_last(h, "log.file.path", &v, &sz) != 0 ||
        sz != strlen("/var/log/a.log") ||
        memcmp(v, "/var/log/a.log", sz) != 0 ||
        rd_kafka_header_get_last(h, "lugger.id", &v, &sz) != 0) {
      s->bad_header++;
    } else {
      char want_id[64];
      int ci = seq / KFX_CHUNK_RECS, r = seq % KFX_CHUNK_RECS;
      /* refs are ci + 1 */
      int n = snprintf(want_id, sizeof want_id, "00000000000000ab:%d",
                       (ci + 1) * 1000 + r);
      if ((int)sz != n || memcmp(v, want_id, sz) != 0)
        s->bad_header++;
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

const char *const *kfx_kv(const char *bootstraps, const char *const *extra) {
  static const char *kv[32];
  int n = 0;
  kv[n++] = "brokers";
  kv[n++] = bootstraps;
  kv[n++] = "topic";
  kv[n++] = "logs";
  kv[n++] = "key";
  kv[n++] = "field:k";
  kv[n++] = "compression";
  kv[n++] = "lz4";
  kv[n++] = "linger";
  kv[n++] = "2ms";
  for (int e = 0; extra != NULL && extra[e] != NULL; e += 2) {
    int k = 0;
    while (k < n && strcmp(kv[k], extra[e]) != 0)
      k += 2;
    if (k == n) {
      assert_true(n + 3 <= (int)(sizeof kv / sizeof *kv));
      kv[n++] = extra[e];
      n++;
    }
    kv[k + 1] = extra[e + 1];
  }
  kv[n] = NULL;
  return kv;
}

const char *const kfx_quiet[] = {"log_level", "0", NULL};

/* Submits chunks [from, to) with refs ci + 1. */
static void submit_range(lg_output_t *o, char **chunks, size_t *lens, int from,
                         int to, const char *topic_of_odd) {
  for (int ci = from; ci < to; ci++) {
    chunks[ci] = kfx_make_chunk(ci, topic_of_odd, &lens[ci]);
    assert_int_equal(
        kfx_submit_json(o, chunks[ci], lens[ci], (void *)(uintptr_t)(ci + 1)),
        0);
  }
}

void kfx_assert_each_once(const char *bootstraps, const char *topic, int want,
                          int headers) {
  kfx_seen_t *s = calloc(1, sizeof *s);
  assert_non_null(s);
  kfx_consume(bootstraps, topic, want, 15000, s);
  assert_int_equal(s->got, want);
  assert_int_equal(s->dup, 0);
  assert_int_equal(s->reordered, 0);
  if (headers)
    assert_int_equal(s->bad_header, 0);
  free(s);
}

void kfx_assert_acks_in_order(const kfx_acks_t *a, int n) {
  assert_int_equal(a->n, n);
  for (int i = 0; i < n; i++) {
    assert_int_equal(a->refs[i], (uintptr_t)(i + 1));
    assert_int_equal(a->status[i], 0);
  }
}

/* Starts `nbrokers` mock brokers (topic "logs", 3 partitions) and a loop;
 * the test may create more topics before kfx_output. */
kfx_t *kfx_mock(int nbrokers) {
  kfx_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  kfx_cluster_start(&f->m, nbrokers, 3);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  return f;
}

/* Opens the kafka output with options `kv` and librdkafka properties `rk`
 * (make_conf), acking into f->a. */
void kfx_output(kfx_t *f, const char *const *kv, const char *const *rk) {
  f->c = make_conf(kv, rk);
  f->o = open_output(&f->loop, f->c, &f->a);
}

/* Submits chunks [from, to) with refs ci + 1 (submit_range). */
void kfx_submit(kfx_t *f, int from, int to, const char *topic_of_odd) {
  assert_true(to <= KFX_MAX_CHUNKS);
  submit_range(f->o, f->chunks, f->lens, from, to, topic_of_odd);
}

typedef struct acks_wait {
  kfx_t *f;
  int want;
} acks_wait_t;

static int acks_reached(void *arg) {
  const acks_wait_t *w = arg;
  return w->f->a.n >= w->want;
}

/* The acks so far and what the output holds, for a wait that timed out. */
static void describe_acks(void *arg, char *buf, size_t len) {
  const acks_wait_t *w = arg;
  lg_kafka_stats_t st;
  size_t n = (size_t)snprintf(buf, len, "%d of %d", w->f->a.n, w->want);
  if (n >= len || lg_output_kafka_stats(w->f->o, &st) != 0)
    return;
  n += (size_t)snprintf(buf + n, len - n,
                        "; %" PRIu64 " delivered, %" PRIu64
                        " in flight, %" PRIu64 " retries, %" PRIu64
                        " producer restarts, %" PRIu64
                        " sent again by the layer; errors:",
                        st.messages_delivered, st.in_flight, st.retries,
                        st.producer_restarts, w->f->o->retries);
  for (size_t e = 0; e < st.nerr && n < len; e++)
    n += (size_t)snprintf(buf + n, len - n, " %s=%" PRIu64, st.err[e].name,
                          st.err[e].count);
}

void kfx_run_until_acks(kfx_t *f, int n, uint64_t ms) {
  acks_wait_t w = {f, n};
  lg_test_run_until_ex(&f->loop, acks_reached, &w, ms, "acks", describe_acks);
}

/* Closes the output (a drain) and the loop, checking uv_loop_close. */
void kfx_close(kfx_t *f) { close_all(&f->loop, f->o); }

/* Frees what the test made; its loop is closed already. */
void kfx_free(kfx_t *f) {
  for (int i = 0; i < KFX_MAX_CHUNKS; i++)
    free(f->chunks[i]);
  lg_config_output_free(f->c);
  kfx_cluster_stop(&f->m);
  free(f);
}
