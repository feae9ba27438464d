/*
 * lg_test_kafka.h - the kafka output's test fixture, shared by the kafka
 * unit tests (tests/unit/outputs/test_output_kafka*.c): librdkafka's mock
 * cluster (the real Kafka protocol on loopback, in-process), a libuv loop
 * and a kafka output acking into a list, chunks of JSON records submitted
 * as the engine would, and a librdkafka consumer that reads them back.
 *
 * The records of chunk ci (KFX_CHUNK_RECS of them) have sequence numbers
 * ci*KFX_CHUNK_RECS+r, keys k<seq % KFX_NKEYS>, and record ids
 * "00000000000000ab:<ref * 1000 + r>" with ref ci + 1 (kfx_submit), so
 * kfx_consume can check each message's key, headers and order per key.
 *
 * A test that submits (kfx_submit_json, kfx_submit) must have
 * kfx_free_held as its cmocka teardown. Failures are cmocka failures.
 */
#ifndef LG_TEST_KAFKA_H
#define LG_TEST_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <uv.h>

#include "config/lg_config.h"
#include "outputs/lg_output.h"

#define KFX_MAX_ACKS 4096
#define KFX_NKEYS 5
#define KFX_CHUNK_RECS 20
#define KFX_MAX_CHUNKS 128

/* The acks an output gave (kfx_on_ack), in the order given. */
typedef struct kfx_acks {
  int n;
  uintptr_t refs[KFX_MAX_ACKS];
  int status[KFX_MAX_ACKS];
} kfx_acks_t;

/* A mock cluster; `holder` is the librdkafka handle that owns it. */
typedef struct kfx_cluster {
  rd_kafka_t *holder;
  rd_kafka_mock_cluster_t *mc;
  const char *bootstraps; /* "host:port,..." */
} kfx_cluster_t;

/* What kfx_consume read back. */
typedef struct kfx_seen {
  int count[KFX_MAX_ACKS * KFX_CHUNK_RECS / 4]; /* copies, by sequence */
  int last_per_key[KFX_NKEYS];
  int first_per_key[KFX_NKEYS]; /* the highest sequence seen (first copies) */
  /* reordered: a record after a later one of its key (copies included);
   * first_reordered: records whose first copy came after the first copy
   * of a later record of their key; bad_header: a message without the
   * log.file.path and lugger.id headers the record should have. */
  int got, dup, reordered, first_reordered, bad_header;
} kfx_seen_t;

/* One test's setting: a mock cluster, a loop, an output. */
typedef struct kfx {
  kfx_cluster_t m;
  uv_loop_t loop;
  kfx_acks_t a;
  lg_conf_output_t *c;
  lg_output_t *o;
  char *chunks[KFX_MAX_CHUNKS]; /* submitted by kfx_submit, freed by kfx_free */
  size_t lens[KFX_MAX_CHUNKS];
} kfx_t;

/* Starts `nbrokers` mock brokers in `m` with topic "logs" of `partitions`
 * partitions (replication factor 1). */
void kfx_cluster_start(kfx_cluster_t *m, int nbrokers, int partitions);

/* Destroys the mock cluster of `m` and the handle that owns it. */
void kfx_cluster_stop(kfx_cluster_t *m);

/* librdkafka properties that keep its own logging quiet. */
extern const char *const kfx_quiet[];

/* An lg_output_ack_cb: appends (ref, status) to the kfx_acks_t `ud`. */
void kfx_on_ack(void *ud, void *ref, int status);

/* A callback for lg_output_close: increments the int `ud` points to. */
void kfx_on_closed(void *ud);

/* cmocka teardown: frees the batches kfx_submit_json made. Returns 0. */
int kfx_free_held(void **state);

/* Payload bytes of every batch kfx_submit_json made in this test (the
 * records' JSON as encoded, one line each). */
uint64_t kfx_held_bytes(void);

/* Submits JSON lines `text` (`len` bytes) to output `o` as the engine
 * would: a batch whose records have the lines' keys as fields (lg_sample's
 * JSON format), encoded with the output's encoder, record ids
 * "00000000000000ab:<ref * 1000 + line>". Returns lg_output_submit's
 * status (0, or a negative errno). */
int kfx_submit_json(lg_output_t *o, const char *text, size_t len, void *ref);

/* Builds chunk `ci`: KFX_CHUNK_RECS JSON lines; record r has key
 * k<seq % KFX_NKEYS>, sequence number seq = ci*KFX_CHUNK_RECS+r, and with
 * `topic_of_odd` a "topic" field of that value on odd sequences. Returns
 * the text (malloc'd, the caller frees it) and its length in *len. */
char *kfx_make_chunk(int ci, const char *topic_of_odd, size_t *len);

/* Reads topic `topic` (3 partitions) of the cluster at `bootstraps` from
 * the start until `want` records or `ms` milliseconds, then 300 ms more to
 * catch copies, into `s` (cleared first). Checks each message's key. */
void kfx_consume(const char *bootstraps, const char *topic, int want, int ms,
                 kfx_seen_t *s);

/* The output options the tests start from (brokers `bootstraps`, topic
 * "logs", key field:k, lz4, linger 2ms), with `extra` (key, value, ...,
 * NULL; NULL = none) applied in order: a key already there gets the new
 * value in place, another is appended. A NULL-terminated key/value list
 * in static storage, until the next call. */
const char *const *kfx_kv(const char *bootstraps, const char *const *extra);

/* Reads topic `topic` back (kfx_consume, 15 s at most) and checks that
 * `want` records arrived, none twice, each in order per key, and with
 * `headers` also that each has its log.file.path and lugger.id headers. */
void kfx_assert_each_once(const char *bootstraps, const char *topic, int want,
                          int headers);

/* Sets the `librdkafka` option (librdkafka properties, passed through) of
 * kafka output config `c` to `rk` (key, value, ..., NULL), copied. */
void kfx_set_librdkafka(lg_conf_output_t *c, const char *const *rk);

/* Checks that the acks are exactly refs 1..n, in order, each status 0. */
void kfx_assert_acks_in_order(const kfx_acks_t *a, int n);

/* Starts `nbrokers` mock brokers (topic "logs", 3 partitions) and a loop;
 * the test may create more topics before kfx_output. */
kfx_t *kfx_mock(int nbrokers);

/* Opens the kafka output "k" with options `kv` (key, value, ..., NULL)
 * and librdkafka properties `rk` (the `librdkafka` option; NULL = none),
 * acking into f->a. */
void kfx_output(kfx_t *f, const char *const *kv, const char *const *rk);

/* Submits chunks [from, to) (kfx_make_chunk) with refs ci + 1; `to` at
 * most KFX_MAX_CHUNKS. */
void kfx_submit(kfx_t *f, int from, int to, const char *topic_of_odd);

/* Runs the loop until the output acked `n` batches, `ms` milliseconds at
 * most; on a timeout the failure has the output's counters (delivered, in
 * flight, retries, errors by name). */
void kfx_run_until_acks(kfx_t *f, int n, uint64_t ms);

/* Closes the output (a drain: waits for its close callback, 10 s at
 * most) and the loop, checking uv_loop_close. */
void kfx_close(kfx_t *f);

/* Frees what the test made; its loop is closed already. */
void kfx_free(kfx_t *f);

#endif
