/*
 * The output conformance suite: the same contract checked against every
 * output type, through the delivery layer (outputs/lg_output.h):
 *   - acks come in submit order per source lane, each batch once, and
 *     every record arrives exactly once;
 *   - a transient failure is retried (nothing acked meanwhile) and each
 *     record is delivered once after it heals;
 *   - a record rejected for good goes to the dead-letter output with the
 *     output's reason in "lugger.error", and its batch is still acked
 *     with status 0 (the checkpoint moves on);
 *   - close drains: every batch is acked before the close callback;
 *   - while the output is down nothing is acked (so the engine's memory
 *     budget stays charged and the sources pause) and at most
 *     max_in_flight requests are out; abandon then ends it without acks.
 * Records surviving kill -9 and the memory budget of a whole process with
 * its output down are checked by tests/outputs/test_conformance_process.py
 * and, for Kafka, tests/integration/test_kafka_broker.py.
 *
 * Types: file, stdout (fd 1 redirected to a file, or to a pipe nobody
 * reads for rejects), kafka (librdkafka's mock cluster: the real protocol
 * on loopback), forward (lugger's forward server on loopback, in a thread:
 * the real protocol with acks), mock (lg_out_mock.c, which this suite
 * registers), and the HTTP types against their stand-ins and a real
 * ClickHouse (conformance_http.h).
 * Transient failures: RLIMIT_FSIZE for file and stdout (writes fail with
 * EFBIG, as on a full disk), every broker down for kafka with a short
 * message.timeout.ms (so records come back to the delivery layer as
 * "retry"), the server closed (connections refused) for forward,
 * `lg_mock_down` for mock. The file and forward outputs never reject a
 * record (every write error heals or is retried), so they skip that case.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <uv.h>

#include "config/lg_config.h"
#include "core/lg_buf.h"
#include "core/lg_metrics.h"
#include "framing/lg_sample.h"
#include "helpers/lg_test.h"
#include "helpers/lg_test_kafka.h"
#include "lg_out_mock.h"
#include "outputs/lg_output.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_payload.h"
#include "pipeline/lg_record_json.h"
#include "sources/forward/lg_forward_server.h"
#include <pthread.h>

#define MAX_ACKS 256

/* ---- helpers ------------------------------------------------------------ */

typedef struct acks {
  int n;
  uintptr_t refs[MAX_ACKS];
  int status[MAX_ACKS];
} acks_t;

static void on_ack(void *ud, void *ref, int status) {
  acks_t *a = ud;
  if (a->n < MAX_ACKS) {
    a->refs[a->n] = (uintptr_t)ref;
    a->status[a->n] = status;
  }
  a->n++;
}

/* ---- the types under test ---------------------------------------------- */

typedef struct ctx ctx_t;

typedef struct driver {
  const char *type;
  int can_reject;
  void (*setup)(ctx_t *c);
  void (*teardown)(ctx_t *c);
  /* Options (pairs, NULL-terminated) for lg_config_output_new. */
  void (*kv)(ctx_t *c, const char **kv);
  void (*down)(ctx_t *c, int on);
  /* Makes the record with body "REJECT-ME" (or, for stdout, every record)
   * fail for good; its reason contains `reason`. */
  void (*reject_setup)(ctx_t *c);
  const char *reason;
  /* Appends what the backend holds, one JSON record per line. */
  void (*readback)(ctx_t *c, lg_buf_t *out);
} driver_t;

struct ctx {
  const driver_t *d;
  char dir[256];
  char path[512];
  int saved_stdout;
  struct rlimit saved_fsize;
  kfx_cluster_t kafka;
  uv_loop_t loop;
  acks_t a;
  lg_conf_output_t *conf, *dlconf;
  lg_output_t *o, *dl;
  lg_batch_t *held[MAX_ACKS];
  int nheld;
  struct fwd_peer *fwd;
};

static void set_fsize_to_current(ctx_t *c, int on) {
  if (!on) {
    setrlimit(RLIMIT_FSIZE, &c->saved_fsize);
    return;
  }
  signal(SIGXFSZ, SIG_IGN);
  struct stat st;
  off_t size = stat(c->path, &st) == 0 ? st.st_size : 0;
  struct rlimit lim = c->saved_fsize;
  lim.rlim_cur = (rlim_t)size + 1; /* no whole record fits any more */
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
}

static void read_file(const char *path, lg_buf_t *out) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    lg_buf_append(out, buf, n);
  fclose(f);
}

/* file */
static void file_setup(ctx_t *c) {
  snprintf(c->path, sizeof c->path, "%s/out.jsonl", c->dir);
}
static void file_kv(ctx_t *c, const char **kv) {
  int i = 0;
  kv[i++] = "path";
  kv[i++] = c->path;
  kv[i++] = "max_batch_size";
  kv[i++] = "7"; /* several requests per test */
  kv[i] = NULL;
}
static void file_readback(ctx_t *c, lg_buf_t *out) { read_file(c->path, out); }

/* stdout: fd 1 goes to a file for the test */
static void stdout_setup(ctx_t *c) {
  snprintf(c->path, sizeof c->path, "%s/stdout.jsonl", c->dir);
  fflush(stdout);
  c->saved_stdout = dup(STDOUT_FILENO);
  int fd = open(c->path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  assert_true(fd >= 0);
  dup2(fd, STDOUT_FILENO);
  close(fd);
}
static void stdout_teardown(ctx_t *c) {
  fflush(stdout);
  dup2(c->saved_stdout, STDOUT_FILENO);
  close(c->saved_stdout);
}
static void stdout_kv(ctx_t *c, const char **kv) {
  (void)c;
  kv[0] = "max_batch_size";
  kv[1] = "7";
  kv[2] = NULL;
}
/* A pipe whose reader is gone: every write fails with EPIPE for good. */
static void stdout_reject_setup(ctx_t *c) {
  (void)c;
  int p[2];
  assert_int_equal(pipe(p), 0);
  close(p[0]);
  dup2(p[1], STDOUT_FILENO);
  close(p[1]);
}

/* kafka: librdkafka's mock cluster */
static void kafka_setup(ctx_t *c) { kfx_cluster_start(&c->kafka, 1, 2); }
static void kafka_teardown(ctx_t *c) { kfx_cluster_stop(&c->kafka); }
static void kafka_kv(ctx_t *c, const char **kv) {
  int i = 0;
  kv[i++] = "brokers";
  kv[i++] = c->kafka.bootstraps;
  kv[i++] = "topic";
  kv[i++] = "logs";
  kv[i++] = "key";
  kv[i++] = "id";
  kv[i++] = "linger";
  kv[i++] = "2ms";
  kv[i++] = "max_batch_size";
  kv[i++] = "7";
  kv[i] = NULL;
}
static void kafka_down(ctx_t *c, int on) {
  if (on)
    rd_kafka_mock_broker_set_down(c->kafka.mc, 1);
  else
    rd_kafka_mock_broker_set_up(c->kafka.mc, 1);
}
static void kafka_readback(ctx_t *c, lg_buf_t *out) {
  char err[512];
  rd_kafka_conf_t *kc = rd_kafka_conf_new();
  rd_kafka_conf_set(kc, "bootstrap.servers", c->kafka.bootstraps, err,
                    sizeof err);
  rd_kafka_conf_set(kc, "group.id", "conformance", err, sizeof err);
  rd_kafka_conf_set(kc, "log_level", "0", err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof err);
  assert_non_null(rk);
  rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(2);
  for (int p = 0; p < 2; p++)
    rd_kafka_topic_partition_list_add(tl, "logs", p)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  assert_int_equal(rd_kafka_assign(rk, tl), 0);
  rd_kafka_topic_partition_list_destroy(tl);
  /* Read up to each partition's high watermark as it is now (every
   * record acked so far is below it), not until the broker has been quiet
   * for a while: on a loaded machine a pause between two fetches cut the
   * read short. */
  int64_t end[2], next[2] = {0, 0};
  for (int p = 0; p < 2; p++) {
    int64_t lo = 0;
    assert_int_equal(
        rd_kafka_query_watermark_offsets(rk, "logs", p, &lo, &end[p], 10000),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    next[p] = lo;
  }
  int64_t deadline = (int64_t)lg_test_now_ms() + 30000;
  while ((next[0] < end[0] || next[1] < end[1]) &&
         (int64_t)lg_test_now_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
    if (m == NULL)
      continue;
    if (!m->err) {
      lg_buf_append(out, m->payload, m->len);
      lg_buf_putc(out, '\n');
      if (m->partition >= 0 && m->partition < 2)
        next[m->partition] = m->offset + 1;
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
}

/* mock */
static void mock_setup(ctx_t *c) {
  (void)c;
  lg_mock_delivered.len = 0;
  lg_mock_down = 0;
}
static void mock_kv(ctx_t *c, const char **kv) {
  (void)c;
  kv[0] = "reject";
  kv[1] = "REJECT-ME";
  kv[2] = NULL;
}
static void mock_down(ctx_t *c, int on) {
  (void)c;
  lg_mock_down = on;
}
static void mock_readback(ctx_t *c, lg_buf_t *out) {
  (void)c;
  lg_buf_append(out, lg_mock_delivered.data, lg_mock_delivered.len);
}
/* forward: lugger's forward server (src/sources/forward/) on its own loop
 * in a thread, as a receiver elsewhere would be. Down: the server is
 * closed (connections refused); up: it listens again on the same port. */
typedef struct fwd_peer {
  pthread_t thread;
  uv_loop_t loop;
  uv_async_t cmd;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  lg_fwd_server_t *srv;
  int port;
  int want;     /* 1 down, 2 up, 3 stop */
  int done;     /* the last command ran */
  lg_buf_t got; /* records received, JSON lines */
} fwd_peer_t;

static void fwd_on_batch(void *ud, lg_batch_t *b, lg_fwd_ack_t *ack,
                         const char *peer, uint64_t conn_id) {
  fwd_peer_t *f = ud;
  (void)peer, (void)conn_id;
  pthread_mutex_lock(&f->mu);
  for (uint32_t i = 0; i < b->n; i++)
    lg_json_encode_record(&f->got, b, i);
  pthread_mutex_unlock(&f->mu);
  lg_batch_destroy(b);
  lg_fwd_ack_release(ack, 1);
}

static void fwd_listen(fwd_peer_t *f) {
  lg_fwd_server_cfg_t cfg;
  lg_fwd_server_cfg_defaults(&cfg);
  cfg.host = "127.0.0.1";
  cfg.port = f->port;
  cfg.udp_heartbeat = 0;
  cfg.on_batch = fwd_on_batch;
  cfg.ud = f;
  char err[256];
  if (lg_fwd_server_start(&f->loop, &cfg, &f->srv, err, sizeof err) != 0) {
    fprintf(stderr, "forward peer: %s\n", err);
    abort();
  }
  f->port = lg_fwd_server_port(f->srv);
}

static void fwd_on_cmd(uv_async_t *a) {
  fwd_peer_t *f = a->data;
  pthread_mutex_lock(&f->mu);
  int want = f->want;
  pthread_mutex_unlock(&f->mu);
  if ((want == 1 || want == 3) && f->srv != NULL) {
    lg_fwd_server_close(f->srv, NULL, NULL);
    f->srv = NULL;
  }
  if (want == 2 && f->srv == NULL)
    fwd_listen(f);
  if (want == 3)
    uv_close((uv_handle_t *)&f->cmd, NULL);
  pthread_mutex_lock(&f->mu);
  f->done = 1;
  pthread_cond_signal(&f->cv);
  pthread_mutex_unlock(&f->mu);
}

static void *fwd_main(void *arg) {
  fwd_peer_t *f = arg;
  uv_run(&f->loop, UV_RUN_DEFAULT);
  return NULL;
}

static void fwd_command(fwd_peer_t *f, int want) {
  pthread_mutex_lock(&f->mu);
  f->want = want;
  f->done = 0;
  uv_async_send(&f->cmd);
  while (!f->done)
    pthread_cond_wait(&f->cv, &f->mu);
  pthread_mutex_unlock(&f->mu);
}

static void forward_setup(ctx_t *c) {
  fwd_peer_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  uv_loop_init(&f->loop);
  uv_async_init(&f->loop, &f->cmd, fwd_on_cmd);
  f->cmd.data = f;
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
  fwd_listen(f); /* before the thread runs the loop */
  pthread_create(&f->thread, NULL, fwd_main, f);
  c->fwd = f;
  snprintf(c->path, sizeof c->path, "127.0.0.1:%d", f->port);
}
static void forward_teardown(ctx_t *c) {
  fwd_peer_t *f = c->fwd;
  fwd_command(f, 3);
  pthread_join(f->thread, NULL);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  lg_buf_free(&f->got);
  pthread_mutex_destroy(&f->mu);
  pthread_cond_destroy(&f->cv);
  free(f);
  c->fwd = NULL;
}
static void forward_kv(ctx_t *c, const char **kv) {
  int i = 0;
  kv[i++] = "servers";
  kv[i++] = c->path;
  kv[i++] = "max_batch_size";
  kv[i++] = "7";
  /* Down closes the connections; an ack that is only late (a loaded
   * machine) must not make the chunk be sent again (a second copy). */
  kv[i++] = "ack_timeout";
  kv[i++] = "10s";
  kv[i++] = "connect_timeout";
  kv[i++] = "1s";
  kv[i] = NULL;
}
static void forward_down(ctx_t *c, int on) { fwd_command(c->fwd, on ? 1 : 2); }
static void forward_readback(ctx_t *c, lg_buf_t *out) {
  fwd_peer_t *f = c->fwd;
  pthread_mutex_lock(&f->mu);
  lg_buf_append(out, f->got.data, f->got.len);
  pthread_mutex_unlock(&f->mu);
}

static void nothing(ctx_t *c) { (void)c; }

#include "conformance_http.h" /* elasticsearch, loki, clickhouse, otlp, http */
#include "conformance_s3.h"   /* s3 */

/* After conformance_http.h, whose process helpers it uses. */
#include "conformance_cloudwatch_logs.h" /* cloudwatch_logs */

static const driver_t drivers[] = {
    {.type = "file",
     .setup = file_setup,
     .teardown = nothing,
     .kv = file_kv,
     .down = set_fsize_to_current,
     .readback = file_readback},
    {.type = "stdout",
     .can_reject = 1,
     .setup = stdout_setup,
     .teardown = stdout_teardown,
     .kv = stdout_kv,
     .down = set_fsize_to_current,
     .reject_setup = stdout_reject_setup,
     .reason = "Broken pipe",
     .readback = file_readback},
    {.type = "kafka",
     .can_reject = 1,
     .setup = kafka_setup,
     .teardown = kafka_teardown,
     .kv = kafka_kv,
     .down = kafka_down,
     .reject_setup = NULL,
     .reason = "MSG_SIZE_TOO_LARGE",
     .readback = kafka_readback},
    /* The forward protocol has no per-record refusal: nothing to reject. */
    {.type = "forward",
     .setup = forward_setup,
     .teardown = forward_teardown,
     .kv = forward_kv,
     .down = forward_down,
     .readback = forward_readback},
    {.type = "mock",
     .can_reject = 1,
     .setup = mock_setup,
     .teardown = nothing,
     .kv = mock_kv,
     .down = mock_down,
     .reason = "mock: record matches REJECT-ME",
     .readback = mock_readback},
    S3_DRIVERS,
    CLOUDWATCH_LOGS_DRIVERS,
    HTTP_DRIVERS,
};

/* librdkafka properties of the kafka driver: small messages only (the
 * reject case), and locally timed-out messages while the broker is down
 * (so they come back to the delivery layer as "retry"). */
static void kafka_props(lg_conf_output_t *conf) {
  static const char *const rk[] = {
      "log_level", "0", "message.max.bytes", "3000", "message.timeout.ms",
      "1000",      NULL};
  kfx_set_librdkafka(conf, rk);
}

static lg_output_t *dl_get(void *ud) { return ((ctx_t *)ud)->dl; }

static void ctx_open(ctx_t *c, const driver_t *d) {
  memset(c, 0, sizeof *c);
  c->d = d;
  snprintf(c->dir, sizeof c->dir, "%s", lg_test_tmpdir("lg_conformance."));
  getrlimit(RLIMIT_FSIZE, &c->saved_fsize);
  d->setup(c);
  assert_int_equal(uv_loop_init(&c->loop), 0);
  const char *kv[32];
  d->kv(c, kv);
  char err[512] = "";
  c->conf = lg_config_output_new("conf", d->type, kv, err, sizeof err);
  if (c->conf == NULL)
    fail_msg("%s: %s", d->type, err);
  if (strcmp(d->type, "kafka") == 0)
    kafka_props(c->conf);
  c->o = lg_output_create(&c->loop, c->conf, 0, on_ack, &c->a, err, sizeof err);
  if (c->o == NULL)
    fail_msg("%s: %s", d->type, err);
  /* The dead-letter output: a file, as the built-in one. */
  char dlpath[600];
  snprintf(dlpath, sizeof dlpath, "%s/dead-letter.jsonl", c->dir);
  const char *dkv[] = {"path", dlpath, NULL};
  c->dlconf = lg_config_output_new("dl", "file", dkv, err, sizeof err);
  assert_non_null(c->dlconf);
  c->dl =
      lg_output_create(&c->loop, c->dlconf, 1, on_ack, &c->a, err, sizeof err);
  assert_non_null(c->dl);
  lg_output_set_dead_letter(c->o, dl_get, c);
}

static void on_closed(void *ud) { (*(int *)ud)++; }

static void ctx_close(ctx_t *c) {
  int closed = 0;
  if (c->o != NULL)
    lg_output_close(c->o, on_closed, &closed);
  lg_output_close(c->dl, on_closed, &closed);
  lg_test_run_until_count(&c->loop, &closed, c->o != NULL ? 2 : 1, 15000,
                          "the close callback");
  assert_int_equal(closed, c->o != NULL ? 2 : 1);
  LG_TEST_LOOP_CLOSE(&c->loop);
  c->d->teardown(c);
  for (int i = 0; i < c->nheld; i++)
    lg_batch_destroy(c->held[i]);
  lg_config_output_free(c->conf);
  lg_config_output_free(c->dlconf);
  assert_int_equal(lg_test_rmtree(c->dir), 0);
}

/* Submits a batch of records with the given bodies (NULL-terminated) on
 * `lane`, encoded as the engine's workers encode: by the output's encoder,
 * from a batch whose records have fields. */
static void submit(ctx_t *c, uint64_t lane, uintptr_t ref,
                   const char *const *bodies) {
  lg_buf_t text = LG_BUF_INIT;
  for (int i = 0; bodies[i] != NULL; i++)
    lg_buf_appendf(&text, "{\"body\":\"%s\",\"ref\":%d}\n", bodies[i],
                   (int)ref);
  lg_sample_t *s = lg_sample_create(LG_SAMPLE_JSON, NULL, 0);
  lg_batch_t *b = lg_batch_create(text.len + 64);
  char err[256];
  lg_sample_begin(s, b);
  assert_int_equal(
      lg_sample_feed(s, text.data, text.len, 1, b, err, sizeof err), 0);
  assert_int_equal(lg_sample_finish(s, 1, b, err, sizeof err), 0);
  lg_sample_destroy(s);
  lg_buf_free(&text);
  b->fingerprint = 0xc0ffee;
  for (uint32_t j = 0; j < b->n; j++)
    b->recs[j].offset = ref * 1000 + j;
  b->out = calloc(1, sizeof *b->out);
  b->nout = 1;
  lg_encoder_t enc = lg_output_encoder(c->o);
  for (uint32_t j = 0; j < b->n; j++)
    assert_int_equal(lg_payload_add(&b->out[0], &enc, b, j, NULL), 0);
  assert_true(c->nheld < MAX_ACKS);
  c->held[c->nheld++] = b;
  assert_int_equal(lg_output_submit(c->o, &b->out[0], (void *)ref, lane), 0);
}

/* How many records with body `body` the text holds. */
static int count(const lg_buf_t *text, const char *body) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"body\":\"%s\"", body);
  int n = 0;
  const char *p = text->data, *end = text->data + text->len;
  while (p < end && (p = memmem(p, (size_t)(end - p), pat, strlen(pat)))) {
    n++;
    p += strlen(pat);
  }
  return n;
}

/* Bodies "<prefix>-<i>" for i in [0, n). */
static const char *const *bodies(const char *prefix, int n) {
  static char buf[16][32];
  static const char *out[17];
  for (int i = 0; i < n && i < 16; i++) {
    snprintf(buf[i], sizeof buf[i], "%s-%d", prefix, i);
    out[i] = buf[i];
  }
  out[n] = NULL;
  return out;
}

/* LG_CONFORMANCE_ONLY=<type>: run the suite for that output type only
 * (while working on one type). */
static int skipped(const driver_t *d) {
  const char *only = getenv("LG_CONFORMANCE_ONLY");
  return only != NULL && *only != '\0' && strcmp(only, d->type) != 0;
}

#define FOR_EACH_DRIVER(d)                                                     \
  for (const driver_t *d = drivers;                                            \
       d < drivers + sizeof drivers / sizeof *drivers; d++)                    \
    if (!skipped(d))

/* ---- the contract ------------------------------------------------------- */

static void test_acks_in_order(void **state) {
  (void)state;
  FOR_EACH_DRIVER(d) {
    ctx_t c;
    ctx_open(&c, d);
    /* Two sources (lanes), interleaved. */
    for (int i = 0; i < 10; i++) {
      char pfx[16];
      snprintf(pfx, sizeof pfx, "a%d", i);
      submit(&c, 1, (uintptr_t)(100 + i), bodies(pfx, 5));
      snprintf(pfx, sizeof pfx, "b%d", i);
      submit(&c, 2, (uintptr_t)(200 + i), bodies(pfx, 3));
    }
    lg_test_run_until_count(&c.loop, &c.a.n, 20, 20000, "acks");
    assert_int_equal(c.a.n, 20);
    int na = 0, nb = 0;
    for (int i = 0; i < 20; i++) {
      assert_int_equal(c.a.status[i], 0);
      if (c.a.refs[i] < 200)
        assert_int_equal(c.a.refs[i], 100 + na++);
      else
        assert_int_equal(c.a.refs[i], 200 + nb++);
    }
    assert_int_equal(c.o->records_out, 80);
    lg_buf_t got = LG_BUF_INIT;
    d->readback(&c, &got);
    for (int i = 0; i < 10; i++)
      for (int r = 0; r < 5; r++) {
        char body[32];
        snprintf(body, sizeof body, "a%d-%d", i, r);
        if (count(&got, body) != 1)
          fail_msg("%s: %s arrived %d times", d->type, body, count(&got, body));
      }
    lg_buf_free(&got);
    fprintf(stderr, "%s: acks in order per lane, 80 records once each\n",
            d->type);
    ctx_close(&c);
  }
}

static void test_transient_failure(void **state) {
  (void)state;
  FOR_EACH_DRIVER(d) {
    ctx_t c;
    ctx_open(&c, d);
    submit(&c, 1, 1, bodies("before", 3));
    lg_test_run_until_count(&c.loop, &c.a.n, 1, 10000, "acks");
    assert_int_equal(c.a.n, 1);
    d->down(&c, 1);
    submit(&c, 1, 2, bodies("during", 4));
    submit(&c, 1, 3, bodies("during2", 4));
    /* Until a failed attempt came back (Kafka: message.timeout.ms, checked
     * by librdkafka about once a second), and a little longer. */
    int64_t until = (int64_t)lg_test_now_ms() + 20000;
    while (c.o->retries == 0 && (int64_t)lg_test_now_ms() < until)
      lg_test_run_for(&c.loop, 100);
    lg_test_run_for(&c.loop, 300);
    assert_int_equal(c.a.n, 1); /* nothing acked while it fails */
    assert_true(c.o->retries >= 1);
    d->down(&c, 0);
    lg_test_run_until_count(&c.loop, &c.a.n, 3, 40000, "acks");
    assert_int_equal(c.a.n, 3);
    assert_int_equal(c.a.refs[1], 2);
    assert_int_equal(c.a.refs[2], 3);
    assert_int_equal(c.a.status[1], 0);
    assert_int_equal(c.a.status[2], 0);
    lg_buf_t got = LG_BUF_INIT;
    d->readback(&c, &got);
    const char *const names[] = {"before-0",  "during-0",  "during-3",
                                 "during2-0", "during2-3", NULL};
    for (int i = 0; names[i] != NULL; i++)
      if (count(&got, names[i]) != 1)
        fail_msg("%s: %s arrived %d times", d->type, names[i],
                 count(&got, names[i]));
    lg_buf_free(&got);
    fprintf(stderr,
            "%s: transient failure retried (%llu records sent again), "
            "each record delivered once\n",
            d->type, (unsigned long long)c.o->retries);
    ctx_close(&c);
  }
}

static void test_reject_to_dead_letter(void **state) {
  (void)state;
  FOR_EACH_DRIVER(d) {
    if (!d->can_reject) {
      fprintf(stderr, "%s: never rejects a record (write errors are retried)\n",
              d->type);
      continue;
    }
    ctx_t c;
    ctx_open(&c, d);
    if (d->reject_setup != NULL)
      d->reject_setup(&c);
    char big[5001];
    memset(big, 'x', 5000);
    big[5000] = '\0';
    /* Kafka and CloudWatch Logs refuse a record by its size. */
    const char *bad =
        strcmp(d->type, "kafka") == 0 || strcmp(d->type, "cloudwatch_logs") == 0
            ? big
            : "REJECT-ME";
    const char *const recs[] = {"ok-1", bad, "ok-2", NULL};
    submit(&c, 1, 7, recs);
    lg_test_run_until_count(&c.loop, &c.a.n, 1, 20000, "acks");
    assert_int_equal(c.a.n, 1);
    assert_int_equal(c.a.refs[0], 7);
    assert_int_equal(c.a.status[0], 0); /* the checkpoint moves on */
    int closed = 0;
    lg_output_close(c.o, on_closed, &closed);
    lg_test_run_until_count(&c.loop, &closed, 1, 10000, "the close callback");
    c.o = NULL;
    lg_output_close(c.dl, on_closed, &closed);
    lg_test_run_until_count(&c.loop, &closed, 2, 10000, "the close callback");
    c.dl = NULL;
    char dlpath[600];
    snprintf(dlpath, sizeof dlpath, "%s/dead-letter.jsonl", c.dir);
    lg_buf_t dead = LG_BUF_INIT;
    read_file(dlpath, &dead);
    lg_buf_putc(&dead, '\0');
    assert_int_equal(count(&dead, bad), 1);
    assert_non_null(strstr(dead.data, "\"lugger.error\":\"output conf rejected "
                                      "the records for good: "));
    if (strstr(dead.data, d->reason) == NULL)
      fail_msg("%s: dead-letter record lacks the reason %s: %s", d->type,
               d->reason, dead.data);
    int all = strcmp(d->type, "stdout") == 0; /* EPIPE rejects them all */
    assert_int_equal(count(&dead, "ok-1"), all);
    lg_buf_free(&dead);
    if (!all) {
      lg_buf_t got = LG_BUF_INIT;
      d->readback(&c, &got);
      assert_int_equal(count(&got, "ok-1"), 1);
      assert_int_equal(count(&got, "ok-2"), 1);
      assert_int_equal(count(&got, bad), 0);
      lg_buf_free(&got);
    }
    fprintf(stderr,
            "%s: rejected record in the dead-letter output with "
            "\"%s\", batch acked\n",
            d->type, d->reason);
    /* Both outputs are closed already. */
    LG_TEST_LOOP_CLOSE(&c.loop);
    d->teardown(&c);
    for (int i = 0; i < c.nheld; i++)
      lg_batch_destroy(c.held[i]);
    lg_config_output_free(c.conf);
    lg_config_output_free(c.dlconf);
    assert_int_equal(lg_test_rmtree(c.dir), 0);
  }
}

static void test_drain_at_stop(void **state) {
  (void)state;
  FOR_EACH_DRIVER(d) {
    ctx_t c;
    ctx_open(&c, d);
    for (int i = 0; i < 10; i++) {
      char pfx[16];
      snprintf(pfx, sizeof pfx, "d%d", i);
      submit(&c, 1, (uintptr_t)(i + 1), bodies(pfx, 6));
    }
    int closed = 0;
    lg_output_close(c.o, on_closed, &closed);
    assert_int_equal(lg_output_submit_text(c.o, "{}\n", 3, (void *)99),
                     -ESHUTDOWN);
    lg_test_run_until_count(&c.loop, &closed, 1, 20000, "the close callback");
    assert_int_equal(closed, 1);
    assert_int_equal(c.a.n, 10); /* every batch acked before the callback */
    for (int i = 0; i < 10; i++)
      assert_int_equal(c.a.refs[i], i + 1);
    c.o = NULL;
    lg_buf_t got = LG_BUF_INIT;
    d->readback(&c, &got);
    assert_int_equal(count(&got, "d0-0"), 1);
    assert_int_equal(count(&got, "d9-5"), 1);
    lg_buf_free(&got);
    fprintf(stderr, "%s: close drained 10 batches\n", d->type);
    ctx_close(&c);
  }
}

static void test_down_then_abandon(void **state) {
  (void)state;
  FOR_EACH_DRIVER(d) {
    ctx_t c;
    ctx_open(&c, d);
    submit(&c, 1, 1, bodies("first", 2));
    lg_test_run_until_count(&c.loop, &c.a.n, 1, 10000, "acks");
    d->down(&c, 1);
    for (int i = 0; i < 30; i++) {
      char pfx[16];
      snprintf(pfx, sizeof pfx, "w%d", i);
      submit(&c, 1, (uintptr_t)(i + 2), bodies(pfx, 5));
    }
    lg_test_run_for(&c.loop, 1000);
    /* Nothing acked: the engine's budget stays charged, sources pause. */
    assert_int_equal(c.a.n, 1);
    char name[64];
    snprintf(name, sizeof name, "%s", "lugger_output_requests_in_flight");
    lg_buf_t m = LG_BUF_INIT;
    assert_int_equal(lg_metrics_render(&m), 0);
    lg_buf_putc(&m, '\0');
    const char *g =
        strstr(m.data, "lugger_output_requests_in_flight{output=\"conf\"} ");
    assert_non_null(g);
    int64_t in_flight =
        atoll(g + strlen("lugger_output_requests_in_flight{output=\"conf\"} "));
    const lg_optval_t *mif = lg_output_opt(c.o, "max_in_flight");
    assert_true(in_flight <= mif->i);
    lg_buf_free(&m);
    int closed = 0;
    lg_output_close(c.o, on_closed, &closed);
    lg_test_run_for(&c.loop, 300);
    assert_int_equal(closed, 0); /* drain waits for the backend */
    lg_output_abandon(c.o);
    lg_test_run_until_count(&c.loop, &closed, 1, 10000, "the close callback");
    assert_int_equal(closed, 1);
    assert_int_equal(c.a.n, 1); /* abandoned: no acks, read again later */
    c.o = NULL;
    d->down(&c, 0);
    fprintf(stderr,
            "%s: down: nothing acked, %lld request(s) in flight, "
            "abandon ends it\n",
            d->type, (long long)in_flight);
    ctx_close(&c);
  }
}

int main(void) {
  /* The suite's own output type: one registration line. */
  if (lg_output_register(&lg_out_mock) != 0)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_acks_in_order),
      cmocka_unit_test(test_transient_failure),
      cmocka_unit_test(test_reject_to_dead_letter),
      cmocka_unit_test(test_drain_at_stop),
      cmocka_unit_test(test_down_then_abandon),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  lg_buf_free(&lg_mock_delivered);
  lg_metrics_reset();
  return rc;
}
