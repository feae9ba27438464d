/* Unit tests: lg_reload (when and how the config is reloaded): a burst of
 * writes is one reload, an unchanged file none, SIGHUP always one, a
 * broken config or a failing prepare or apply is counted and reported
 * with its file and line, every script is read once and handed over with
 * its text, the reloads are serial, and the metrics and status follow.
 * Real files and a real libuv loop with inotify; the engine's side is a
 * fake that records what it is given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "helpers/lg_test.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "config/lg_config.h"
#include "core/lg_metrics.h"
#include "engine/lg_reload.h"

static char root[256];
static char conf_path[300], script_path[300];

typedef struct fake {
  int prepared, applied, discarded, begun;
  int fail_prepare, fail_apply;
  int in_prepare; /* a prepare is running (serial check) */
  int overlap;
  char script_text[256]; /* the text prepare was given for the script */
  char last_state_dir[256];
} fake_t;

static void *fake_prepare(void *ud, lg_config_t *c, lg_lua_script_t **scripts,
                          char *err, size_t errlen) {
  fake_t *f = ud;
  if (__atomic_fetch_add(&f->in_prepare, 1, __ATOMIC_SEQ_CST) != 0)
    f->overlap = 1;
  usleep(20 * 1000);
  f->prepared++;
  f->script_text[0] = '\0';
  if (c->npipelines > 0 && scripts[0] != NULL)
    snprintf(f->script_text, sizeof f->script_text, "%.*s",
             (int)scripts[0][0].src_len, scripts[0][0].src);
  snprintf(f->last_state_dir, sizeof f->last_state_dir, "%s",
           c->settings.state_dir);
  lg_config_destroy(c);
  __atomic_fetch_sub(&f->in_prepare, 1, __ATOMIC_SEQ_CST);
  if (f->fail_prepare) {
    snprintf(err, errlen, "%s:3: boom in init", script_path);
    return NULL;
  }
  return f; /* any non-NULL token */
}

static int fake_apply(void *ud, void *prepared, char *err, size_t errlen) {
  fake_t *f = ud;
  assert_ptr_equal(prepared, f);
  if (f->fail_apply) {
    snprintf(err, errlen, "outputs.out: cannot open");
    return -EINVAL;
  }
  f->applied++;
  return 0;
}

static void fake_discard(void *ud, void *prepared) {
  fake_t *f = ud;
  (void)prepared;
  f->discarded++;
}

static void fake_begin(void *ud) { ((fake_t *)ud)->begun++; }

static const lg_reload_ops_t ops = {.prepare = fake_prepare,
                                    .apply = fake_apply,
                                    .discard = fake_discard,
                                    .begin = fake_begin};

static void write_config(const char *extra) {
  char text[1024];
  snprintf(text, sizeof text,
           "return { settings = { state_dir = \"%s/state\" %s },\n"
           "  sources = { app = { type = \"file\", paths = { \"%s/*.log\" } } "
           "},\n"
           "  pipelines = { main = { sources = { \"app\" }, scripts = { "
           "\"f.lua\" }, outputs = { \"out\" } } },\n"
           "  outputs = { out = { type = \"stdout\" } } }\n",
           root, extra, root);
  lg_test_write_file(conf_path, text);
}

static int setup(void **state) {
  (void)state;
  snprintf(root, sizeof root, "%s", lg_test_tmpdir("lg_reload_"));
  snprintf(conf_path, sizeof conf_path, "%s/lugger.lua", root);
  snprintf(script_path, sizeof script_path, "%s/f.lua", root);
  lg_test_write_file(script_path, "function process(rec) rec.v = 1 end\n");
  write_config("");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  assert_int_equal(lg_test_rmtree(root), 0);
  lg_metrics_reset();
  return 0;
}

/* A reload loads the config and its scripts on the threadpool; on a
 * loaded machine (sanitizers, parallel tests) that can take far longer
 * than the debounce. Waits for what a step expects, up to this long. */
#define WAIT_MS 20000

typedef int (*until_fn)(lg_reload_t *r, const fake_t *f, uint64_t n);

typedef struct reload_cond {
  lg_reload_t *r;
  const fake_t *f;
  until_fn done;
  uint64_t n;
} reload_cond_t;

static int reload_cond_holds(void *arg) {
  reload_cond_t *c = arg;
  return c->done(c->r, c->f, c->n);
}

/* Runs the loop until `done(r, f, n)` holds; fails the test, saying what
 * it waited for, after WAIT_MS. */
static void run_until(uv_loop_t *loop, lg_reload_t *r, const fake_t *f,
                      until_fn done, uint64_t n, const char *what) {
  reload_cond_t c = {r, f, done, n};
  char w[128];
  snprintf(w, sizeof w, "%s = %llu", what, (unsigned long long)n);
  lg_test_run_until(loop, reload_cond_holds, &c, WAIT_MS, w);
}

static int applied_is(lg_reload_t *r, const fake_t *f, uint64_t n) {
  (void)r;
  return (uint64_t)f->applied >= n;
}

static int begun_is(lg_reload_t *r, const fake_t *f, uint64_t n) {
  (void)r;
  return (uint64_t)f->begun >= n;
}

static int failures_is(lg_reload_t *r, const fake_t *f, uint64_t n) {
  (void)f;
  lg_reload_stats_t st;
  lg_reload_stats(r, &st);
  return st.failures >= n;
}

static void on_closed(void *ud) { *(int *)ud = 1; }

static void close_and_check(uv_loop_t *loop, lg_reload_t *r) {
  int closed = 0;
  lg_reload_close(r, on_closed, &closed);
  lg_test_run_until_count(loop, &closed, 1, WAIT_MS, "the close callback");
  LG_TEST_LOOP_CLOSE(loop);
}

static lg_reload_t *start(uv_loop_t *loop, fake_t *f, lg_config_t **conf) {
  lg_config_errors_t errs;
  assert_int_equal(lg_config_load(conf_path, conf, &errs), 0);
  lg_config_errors_free(&errs);
  assert_int_equal(uv_loop_init(loop), 0);
  lg_reload_t *r =
      lg_reload_create(loop, *conf, lg_reload_fingerprint(*conf), &ops, f);
  assert_non_null(r);
  return r;
}

/* Ten writes in a row are one reload (debounce), with the script's text
 * as it is now; touching another file in the directory, or writing the
 * same bytes again, is none.
 *
 * The writes are ~10 ms apart, far inside the debounce, but a loaded
 * machine can stall this thread for longer than the debounce between two
 * of them, and then two reloads are right. So each burst is timed: write
 * i+1's event is handled by the time write i+2 starts, so when every
 * t[i+2] - t[i] is below the debounce (and the burst below the debounce's
 * upper bound) the burst must be exactly one reload. A burst that stalled
 * proves nothing and is done again (up to 5 times). */
static void test_burst_is_one_reload(void **state) {
  (void)state;
  uv_loop_t loop;
  fake_t f = {0};
  lg_config_t *conf;
  lg_reload_t *r = start(&loop, &f, &conf);
  int v = 1, gen = 0, clean = 0;
  for (int attempt = 0; attempt < 5 && !clean; attempt++) {
    uint64_t t[12];
    int prepared0 = f.prepared;
    for (int i = 0; i < 10; i++) {
      char text[128];
      t[i] = lg_test_now_ms();
      snprintf(text, sizeof text, "function process(rec) rec.v = %d end\n",
               ++v);
      lg_test_write_file(script_path, text);
      lg_test_run_for(&loop, 10);
    }
    t[10] = t[11] = lg_test_now_ms();
    uint64_t worst = 0;
    for (int i = 0; i + 2 < 12; i++)
      if (t[i + 2] - t[i] > worst)
        worst = t[i + 2] - t[i];
    clean = worst < LG_RELOAD_DEBOUNCE_MS - 20 &&
            t[10] - t[0] < LG_RELOAD_DEBOUNCE_MAX_MS - 100;
    run_until(&loop, r, &f, applied_is, (uint64_t)gen + 1, "applied");
    /* Time for a second reload to show if the burst had been split. */
    lg_test_run_for(&loop, LG_RELOAD_DEBOUNCE_MS + 300);
    if (!clean) {
      print_message("burst %d stalled (%llu ms between writes i and i+2, "
                    "%llu ms in all): again\n",
                    attempt, (unsigned long long)worst,
                    (unsigned long long)(t[10] - t[0]));
      /* Let any split reload finish before the next burst. */
      lg_test_run_for(&loop, LG_RELOAD_DEBOUNCE_MS + 300);
      gen = f.applied;
      continue;
    }
    assert_int_equal(f.prepared, prepared0 + 1);
    assert_int_equal(f.applied, gen + 1);
    gen = f.applied;
  }
  if (!clean)
    fail_msg("5 bursts of writes all stalled past the debounce");
  char want[128];
  snprintf(want, sizeof want, "function process(rec) rec.v = %d end\n", v);
  assert_string_equal(f.script_text, want);
  lg_reload_stats_t st;
  lg_reload_stats(r, &st);
  assert_int_equal(st.reloads, (uint64_t)gen);
  assert_int_equal(st.generation, (uint64_t)gen);
  assert_int_equal(st.failures, 0);

  /* Not a file of the config: nothing. */
  char other[320];
  snprintf(other, sizeof other, "%s/out.jsonl", root);
  lg_test_write_file(other, "x\n");
  /* The same bytes again: looked at, nothing applied. */
  int begun = f.begun;
  lg_test_write_file(script_path, want);
  run_until(&loop, r, &f, begun_is, (uint64_t)begun + 1, "reloads begun");
  assert_int_equal(f.applied, gen);
  assert_int_equal(f.discarded, 0);

  /* SIGHUP: a reload even with nothing changed. Reloads are serial, so
   * when it has applied, the one above has ended without applying. */
  lg_reload_request(r, "SIGHUP");
  run_until(&loop, r, &f, applied_is, (uint64_t)gen + 1, "applied");
  lg_test_run_for(&loop, 50);
  assert_int_equal(f.begun, begun + 2);
  assert_int_equal(f.applied, gen + 1);
  assert_int_equal(f.discarded, 0);
  lg_reload_stats(r, &st);
  assert_int_equal(st.generation, (uint64_t)gen + 1);
  assert_int_equal(f.overlap, 0);
  close_and_check(&loop, r);
  lg_config_destroy(conf);
}

/* A config syntax error, a failing prepare (init) and a failing apply
 * each leave the running one, are counted, and say why; the next good
 * version takes effect and clears the status. */
static void test_failures(void **state) {
  (void)state;
  uv_loop_t loop;
  fake_t f = {0};
  lg_config_t *conf;
  lg_reload_t *r = start(&loop, &f, &conf);
  char buf[4096];
  assert_int_equal(lg_reload_status(buf, sizeof buf), 0);

  lg_test_write_file(conf_path,
                     "return {\n  settings = { workers = 2,, }\n}\n");
  run_until(&loop, r, &f, failures_is, 1, "failures");
  assert_int_equal(f.prepared, 0);
  lg_reload_stats_t st;
  lg_reload_stats(r, &st);
  assert_int_equal(st.failures, 1);
  assert_int_equal(st.generation, 0);
  char want[400];
  snprintf(want, sizeof want, "%s:2:", conf_path);
  assert_non_null(strstr(st.last_error, want));
  assert_int_equal(lg_reload_status(buf, sizeof buf), 1);
  assert_non_null(strstr(buf, want));

  f.fail_prepare = 1;
  write_config(", workers = 3");
  run_until(&loop, r, &f, failures_is, 2, "failures");
  lg_reload_stats(r, &st);
  assert_int_equal(st.failures, 2);
  assert_non_null(strstr(st.last_error, "f.lua:3: boom in init"));

  f.fail_prepare = 0;
  f.fail_apply = 1;
  lg_reload_request(r, "SIGHUP");
  run_until(&loop, r, &f, failures_is, 3, "failures");
  lg_reload_stats(r, &st);
  assert_int_equal(st.failures, 3);
  assert_non_null(strstr(st.last_error, "outputs.out: cannot open"));
  assert_int_equal(lg_reload_status(NULL, 0), 3);

  /* A missing script is a failure naming it. */
  f.fail_apply = 0;
  assert_int_equal(unlink(script_path), 0);
  run_until(&loop, r, &f, failures_is, 4, "failures");
  lg_reload_stats(r, &st);
  assert_int_equal(st.failures, 4);
  assert_non_null(strstr(st.last_error, "f.lua"));

  lg_test_write_file(script_path, "function process(rec) end\n");
  run_until(&loop, r, &f, applied_is, 1, "applied");
  lg_reload_stats(r, &st);
  assert_int_equal(st.failures, 4);
  assert_int_equal(st.generation, 1);
  assert_int_equal(f.applied, 1);
  assert_int_equal(lg_reload_status(buf, sizeof buf), 0);
  assert_string_equal(buf, "");
  close_and_check(&loop, r);
  lg_config_destroy(conf);
}

/* A ConfigMap volume: the kubelet renames a new `..data` link into place;
 * that one event reloads from the new directory. */
static void test_kubelet_swap(void **state) {
  (void)state;
  char d1[320], d2[320], cmd[2600];
  snprintf(d1, sizeof d1, "%s/..2026_11_21_10_00_00.1", root);
  snprintf(d2, sizeof d2, "%s/..2026_11_21_10_00_01.2", root);
  snprintf(cmd, sizeof cmd,
           "set -e; cd %s; mkdir %s; mv lugger.lua f.lua %s/;"
           " ln -s %s ..data; ln -s ..data/lugger.lua lugger.lua;"
           " ln -s ..data/f.lua f.lua",
           root, d1, d1, strrchr(d1, '/') + 1);
  assert_int_equal(system(cmd), 0);
  uv_loop_t loop;
  fake_t f = {0};
  lg_config_t *conf;
  lg_reload_t *r = start(&loop, &f, &conf);
  snprintf(cmd, sizeof cmd,
           "set -e; cd %s; mkdir %s; cp %s/lugger.lua %s/;"
           " echo 'function process(rec) rec.v = 2 end' > %s/f.lua;"
           " ln -s %s ..data_tmp; mv -T ..data_tmp ..data; rm -rf %s",
           root, d2, d1, d2, d2, strrchr(d2, '/') + 1, d1);
  assert_int_equal(system(cmd), 0);
  run_until(&loop, r, &f, applied_is, 1, "applied");
  assert_int_equal(f.applied, 1);
  assert_string_equal(f.script_text, "function process(rec) rec.v = 2 end\n");
  close_and_check(&loop, r);
  lg_config_destroy(conf);
}

/* A change made after the config was loaded but before the reloader
 * watched its files (lugger starting: outputs, workers, sources) sends
 * no event the watch sees; the reloader finds it by the files' contents
 * and reloads at once. A config whose files did not change is not
 * reloaded. Then the same for the config file itself: changed bytes the
 * load did not parse are a change, even when a later reload had been
 * computed from them. */
static void test_changed_while_starting(void **state) {
  (void)state;
  for (int which = 0; which < 3; which++) {
    uv_loop_t loop;
    fake_t f = {0};
    lg_config_t *conf;
    lg_config_errors_t errs;
    assert_int_equal(lg_config_load(conf_path, &conf, &errs), 0);
    lg_config_errors_free(&errs);
    uint64_t fp = lg_reload_fingerprint(conf);
    if (which == 1)
      lg_test_write_file(script_path, "function process(rec) rec.v = 7 end\n");
    else if (which == 2)
      write_config(", workers = 1");
    assert_int_equal(uv_loop_init(&loop), 0);
    lg_reload_t *r = lg_reload_create(&loop, conf, fp, &ops, &f);
    assert_non_null(r);
    if (which == 0) {
      lg_test_run_for(&loop, LG_RELOAD_DEBOUNCE_MS + 300);
      assert_int_equal(f.begun, 0);
    } else {
      run_until(&loop, r, &f, applied_is, 1, "applied");
      lg_test_run_for(&loop, LG_RELOAD_DEBOUNCE_MS + 300);
      assert_int_equal(f.applied, 1);
      if (which == 1)
        assert_string_equal(f.script_text,
                            "function process(rec) rec.v = 7 end\n");
    }
    close_and_check(&loop, r);
    lg_config_destroy(conf);
  }
}

/* Closing while a reload is being prepared discards it. */
static void test_close_discards(void **state) {
  (void)state;
  uv_loop_t loop;
  fake_t f = {0};
  lg_config_t *conf;
  lg_reload_t *r = start(&loop, &f, &conf);
  lg_reload_request(r, "SIGHUP");
  close_and_check(&loop, r);
  assert_int_equal(f.applied, 0);
  assert_int_equal(f.prepared, 1);
  assert_int_equal(f.discarded, 1);
  lg_config_destroy(conf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_burst_is_one_reload, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_failures, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kubelet_swap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_discards, setup, teardown),
      cmocka_unit_test_setup_teardown(test_changed_while_starting, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
