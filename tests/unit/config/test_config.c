/* Unit tests: lg_option (sizes, durations, enums, Lua values) and
 * lg_config (a good config gives exact values; bad configs give exact
 * key-path messages, all of them). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers/lg_test.h"
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config/lg_config.h"
#include "core/lg_option.h"
#include "framing/lg_multiline.h"
#include "outputs/lg_output.h"
#include "sources/kubernetes/lg_k8s.h"
#include "sources/tail/lg_source_file.h"

/* ---- lg_option ------------------------------------------------------- */

/* The tail options of file source `s` (its type's conf). */
static const lg_tail_conf_t *file_tail(const lg_conf_source_t *s) {
  assert_string_equal(s->type, "file");
  assert_non_null(s->type_conf);
  return &((const lg_file_conf_t *)s->type_conf)->tail;
}
static int64_t bytes(const char *s) {
  int64_t v = -1;
  int rc = lg_opt_parse_bytes(s, &v);
  if (rc < 0) {
    print_error("lg_opt_parse_bytes(\"%s\") = %d\n", s, rc);
    fail();
  }
  return v;
}

static void test_bytes(void **state) {
  (void)state;
  assert_int_equal(bytes("0"), 0);
  assert_int_equal(bytes("512"), 512);
  assert_int_equal(bytes("512B"), 512);
  assert_int_equal(bytes("64KiB"), 65536);
  assert_int_equal(bytes("64kib"), 65536);
  assert_int_equal(bytes("64 KiB"), 65536);
  assert_int_equal(bytes("1MiB"), 1048576);
  assert_int_equal(bytes("1.5MiB"), 1572864);
  assert_int_equal(bytes("256MiB"), 268435456);
  assert_int_equal(bytes("2GB"), 2000000000);
  assert_int_equal(bytes("2G"), 2000000000);
  assert_int_equal(bytes("3GiB"), 3221225472LL);
  assert_int_equal(bytes("10KB"), 10000);
  assert_int_equal(bytes("1TiB"), 1099511627776LL);
  assert_int_equal(bytes("0.5KiB"), 512);
  int64_t v = 77;
  static const char *const bad[] = {"",     "KiB",    "-1",  "1.",    ".5",
                                    "1 ",   "1  KiB", "1XB", "1KiBs", "1,5MiB",
                                    "0x10", "1e3",    NULL};
  for (int i = 0; bad[i] != NULL; i++) {
    int rc = lg_opt_parse_bytes(bad[i], &v);
    if (rc != -EINVAL) {
      print_error("\"%s\": %d\n", bad[i], rc);
      fail();
    }
  }
  assert_int_equal(v, 77); /* untouched on error */
  assert_int_equal(lg_opt_parse_bytes("9000000TiB", &v), -ERANGE);
  assert_int_equal(lg_opt_parse_bytes("99999999999999999999", &v), -ERANGE);
}

static int64_t ms(const char *s) {
  int64_t v = -1;
  int rc = lg_opt_parse_duration(s, &v);
  if (rc < 0) {
    print_error("lg_opt_parse_duration(\"%s\") = %d\n", s, rc);
    fail();
  }
  return v;
}

static void test_durations(void **state) {
  (void)state;
  assert_int_equal(ms("0"), 0);
  assert_int_equal(ms("500ms"), 500);
  assert_int_equal(ms("5s"), 5000);
  assert_int_equal(ms("1m"), 60000);
  assert_int_equal(ms("1h"), 3600000);
  assert_int_equal(ms("1.5s"), 1500);
  assert_int_equal(ms("1m30s"), 90000);
  assert_int_equal(ms("1h2m3s4ms"), 3723004);
  assert_int_equal(ms("0.1ms"), 0);
  assert_int_equal(ms("0s"), 0);
  int64_t v;
  static const char *const bad[] = {"",    "5",    "500", "s",    "5 s", "5S",
                                    "-1s", "5sec", "1d",  "1m30", "ms5", NULL};
  for (int i = 0; bad[i] != NULL; i++) {
    int rc = lg_opt_parse_duration(bad[i], &v);
    if (rc != -EINVAL) {
      print_error("\"%s\": %d\n", bad[i], rc);
      fail();
    }
  }
  assert_int_equal(lg_opt_parse_duration("99999999999999999h", &v), -ERANGE);
}

static void test_enum(void **state) {
  (void)state;
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "never"), 0);
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "interval"), 1);
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "always"), 2);
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "Always"),
                   -EINVAL);
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "inter"),
                   -EINVAL);
  assert_int_equal(lg_opt_parse_enum("never|interval|always", ""), -EINVAL);
  assert_int_equal(lg_opt_parse_enum("a", "a"), 0);
}

static int check_even(const lg_optval_t *v, char *err, size_t errlen) {
  if (v->i % 2 != 0) {
    snprintf(err, errlen, "must be even");
    return -EINVAL;
  }
  return 0;
}

static const lg_option_t topts[] = {
    {.name = "s", .type = LG_OPT_STRING, .def = "dflt"},
    {.name = "i", .type = LG_OPT_INT, .def = "7", .check = check_even},
    {.name = "b", .type = LG_OPT_BOOL, .def = "true"},
    {.name = "sz", .type = LG_OPT_BYTES, .def = "1MiB"},
    {.name = "d", .type = LG_OPT_DURATION, .def = "1m"},
    {.name = "e", .type = LG_OPT_ENUM, .def = "b", .choices = "a|b|c"},
    {.name = "m", .type = LG_OPT_STRMAP},
    {.name = "l", .type = LG_OPT_STRLIST, .def = "one"},
    {.name = NULL},
};

/* Evaluates `expr` in L and parses it as option `name`; returns rc and
 * leaves the message in `err`. */
static int parse_expr(lua_State *L, const char *name, const char *expr,
                      lg_optval_t *v, char *err, size_t errlen) {
  char code[512];
  snprintf(code, sizeof code, "return %s", expr);
  if (luaL_dostring(L, code) != 0) {
    print_error("lua: %s\n", lua_tostring(L, -1));
    fail();
  }
  int top = lua_gettop(L);
  int i = lg_opt_find(topts, name);
  assert_true(i >= 0);
  err[0] = '\0';
  int rc = lg_opt_parse_lua(L, -1, &topts[i], "x.y", v, err, errlen);
  assert_int_equal(lua_gettop(L), top);
  lua_settop(L, 0);
  return rc;
}

static void expect_err(lua_State *L, const char *name, const char *expr,
                       const char *want) {
  lg_optval_t v;
  char err[512];
  int rc = parse_expr(L, name, expr, &v, err, sizeof err);
  if (rc != -EINVAL || strcmp(err, want) != 0) {
    print_error("%s = %s: rc %d\n  got:  %s\n  want: %s\n", name, expr, rc, err,
                want);
    fail();
  }
}

static void test_option_lua(void **state) {
  (void)state;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lg_optval_t v;
  char err[512];

  assert_int_equal(parse_expr(L, "s", "'hello'", &v, err, sizeof err), 0);
  assert_true(v.set);
  assert_string_equal(v.s, "hello");
  lg_optval_free(&v);
  assert_int_equal(parse_expr(L, "i", "42", &v, err, sizeof err), 0);
  assert_int_equal(v.i, 42);
  assert_int_equal(parse_expr(L, "i", "-9007199254740992", &v, err, sizeof err),
                   0);
  assert_int_equal(v.i, -9007199254740992LL);
  assert_int_equal(parse_expr(L, "b", "false", &v, err, sizeof err), 0);
  assert_int_equal(v.i, 0);
  assert_int_equal(parse_expr(L, "sz", "'64KiB'", &v, err, sizeof err), 0);
  assert_int_equal(v.i, 65536);
  assert_int_equal(parse_expr(L, "sz", "4096", &v, err, sizeof err), 0);
  assert_int_equal(v.i, 4096);
  assert_int_equal(parse_expr(L, "d", "'1m30s'", &v, err, sizeof err), 0);
  assert_int_equal(v.i, 90000);
  assert_int_equal(parse_expr(L, "d", "250", &v, err, sizeof err), 0);
  assert_int_equal(v.i, 250);
  assert_int_equal(parse_expr(L, "e", "'c'", &v, err, sizeof err), 0);
  assert_string_equal(v.s, "c");
  lg_optval_free(&v);
  assert_int_equal(parse_expr(L, "l", "'only'", &v, err, sizeof err), 0);
  assert_int_equal(v.n, 1);
  assert_string_equal(v.vals[0], "only");
  lg_optval_free(&v);
  assert_int_equal(parse_expr(L, "l", "{'a','b','c'}", &v, err, sizeof err), 0);
  assert_int_equal(v.n, 3);
  assert_string_equal(v.vals[2], "c");
  lg_optval_free(&v);
  assert_int_equal(parse_expr(L, "l", "{}", &v, err, sizeof err), 0);
  assert_int_equal(v.n, 0);
  lg_optval_free(&v);
  assert_int_equal(parse_expr(L, "m", "{z='1', a=2, big=2^53, f=0.5, t=true}",
                              &v, err, sizeof err),
                   0);
  assert_int_equal(v.n, 5);
  const char *keys[] = {"a", "big", "f", "t", "z"};
  const char *vals[] = {"2", "9007199254740992", "0.5", "true", "1"};
  for (int i = 0; i < 5; i++) {
    assert_string_equal(v.keys[i], keys[i]);
    assert_string_equal(v.vals[i], vals[i]);
  }
  lg_optval_free(&v);
  assert_null(v.keys);
  lg_optval_free(NULL);

  expect_err(L, "s", "5", "x.y: expected a string, got number");
  expect_err(L, "s", "'a\\0b'", "x.y: string contains a NUL byte");
  expect_err(L, "i", "'5'", "x.y: expected an integer, got string");
  expect_err(L, "i", "1.5", "x.y: expected an integer, got 1.5");
  expect_err(L, "i", "2^63",
             "x.y: expected an integer, got 9.2233720368547758e+18");
  expect_err(L, "i", "3", "x.y: must be even");
  expect_err(L, "b", "1", "x.y: expected a boolean, got number");
  expect_err(L, "sz", "'64XB'",
             "x.y: invalid size \"64XB\" (expected a number of bytes or a "
             "string like \"64KiB\", \"1MiB\", \"2GB\")");
  expect_err(L, "sz", "{}",
             "x.y: expected a size (a number of bytes or a string like "
             "\"64KiB\", \"1MiB\", \"2GB\"), got table");
  expect_err(L, "sz", "-1", "x.y: size must be a number from 0 up, got -1");
  expect_err(L, "sz", "0/0", "x.y: size must be a number from 0 up, got nan");
  expect_err(L, "sz", "'20000000TB'", "x.y: size \"20000000TB\" is too large");
  expect_err(L, "d", "'5'",
             "x.y: invalid duration \"5\" (expected a number of milliseconds "
             "or a string like \"500ms\", \"5s\", \"1m\")");
  expect_err(L, "d", "true",
             "x.y: expected a duration (a number of milliseconds or a string "
             "like \"500ms\", \"5s\", \"1m\"), got boolean");
  expect_err(L, "e", "'d'",
             "x.y: expected one of \"a\", \"b\", \"c\", got \"d\"");
  expect_err(L, "e", "1",
             "x.y: expected one of \"a\", \"b\", \"c\", got number");
  expect_err(L, "l", "5", "x.y: expected a list of strings, got number");
  expect_err(L, "l", "{'a', 5}", "x.y[2]: expected a string, got number");
  expect_err(L, "l", "{'a', k='b'}",
             "x.y: expected a list of strings, got a table with other keys");
  expect_err(L, "l", "{'a', nil, 'c'}",
             "x.y: expected a list of strings, got a list with holes");
  expect_err(L, "m", "'x'",
             "x.y: expected a table of names to strings, numbers or "
             "booleans, got string");
  expect_err(L, "m", "{a={}}",
             "x.y.a: expected a string, number or boolean, got table");
  expect_err(L, "m", "{'a'}", "x.y: expected string keys, got a number key");
  lua_close(L);
}

static void test_option_defaults(void **state) {
  (void)state;
  lg_optval_t v;
  char err[256];
  const int64_t want[] = {0, 7, 1, 1048576, 60000, 0, 0, 0};
  for (int i = 0; topts[i].name != NULL; i++) {
    assert_int_equal(lg_opt_set_default(&topts[i], &v, err, sizeof err), 0);
    assert_int_equal(v.set, 0);
    assert_int_equal(v.i, want[i]);
    lg_optval_free(&v);
  }
  assert_int_equal(lg_opt_set_default(&topts[0], &v, err, sizeof err), 0);
  assert_string_equal(v.s, "dflt");
  lg_optval_free(&v);
  assert_int_equal(lg_opt_set_default(&topts[7], &v, err, sizeof err), 0);
  assert_int_equal(v.n, 1);
  assert_string_equal(v.vals[0], "one");
  lg_optval_free(&v);
  lg_option_t bad = {.name = "x", .type = LG_OPT_DURATION, .def = "soon"};
  assert_int_equal(lg_opt_set_default(&bad, &v, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "invalid duration \"soon\""));
  assert_int_equal(lg_opt_find(topts, "d"), 4);
  assert_int_equal(lg_opt_find(topts, "nope"), -1);
}

/* ---- lg_config ------------------------------------------------------- */

static char tmpdir[256];

static int setup_tmp(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "%s", lg_test_tmpdir("lg_test_config."));
  unsetenv("LUGGER_STATE_DIR");
  return 0;
}

static int teardown_tmp(void **state) {
  (void)state;
  assert_int_equal(lg_test_rmtree(tmpdir), 0);
  return 0;
}

/* Writes `text` as <tmpdir>/<name>, returns its path (static buffer). */
static const char *cfg(const char *name, const char *text) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  lg_test_write_file(path, text);
  return path;
}

static const char *fixture(const char *name) {
  static char path[1024];
  const char *src = getenv("LUGGER_SOURCE_DIR");
  assert_non_null(src);
  snprintf(path, sizeof path, "%s/tests/fixtures/config/%s", src, name);
  return path;
}

/* Loads `path` and checks that it fails with exactly the messages in
 * `want` (NULL-terminated), in order; "%D" in a wanted message stands for
 * the config's directory. */
static void expect_errors(const char *path, const char *const *want) {
  lg_config_t *c = (lg_config_t *)1;
  lg_config_errors_t e;
  int rc = lg_config_load(path, &c, &e);
  size_t nwant = 0;
  while (want[nwant] != NULL)
    nwant++;
  char dir[512];
  snprintf(dir, sizeof dir, "%s", path);
  *strrchr(dir, '/') = '\0';
  int ok = rc < 0 && c == NULL && e.n == nwant;
  for (size_t i = 0; ok && i < nwant; i++) {
    char w[1024];
    const char *d = strstr(want[i], "%D");
    if (d != NULL)
      snprintf(w, sizeof w, "%.*s%s%s", (int)(d - want[i]), want[i], dir,
               d + 2);
    else
      snprintf(w, sizeof w, "%s", want[i]);
    ok = strcmp(e.msgs[i], w) == 0;
  }
  if (!ok) {
    print_error("config %s: rc %d, %zu messages, wanted %zu\n", path, rc, e.n,
                nwant);
    for (size_t i = 0; i < e.n; i++)
      print_error("  got:  %s\n", e.msgs[i]);
    for (size_t i = 0; i < nwant; i++)
      print_error("  want: %s\n", want[i]);
    lg_config_errors_free(&e);
    fail();
  }
  lg_config_errors_free(&e);
}

static lg_config_t *load_ok(const char *path) {
  lg_config_t *c = NULL;
  lg_config_errors_t e;
  int rc = lg_config_load(path, &c, &e);
  if (rc != 0) {
    for (size_t i = 0; i < e.n; i++)
      print_error("%s\n", e.msgs[i]);
    lg_config_errors_free(&e);
    fail();
  }
  assert_int_equal(e.n, 0);
  assert_non_null(c);
  return c;
}

static void test_good_config(void **state) {
  (void)state;
  lg_config_t *c = load_ok(fixture("good.lua"));
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", fixture(""));
  dir[strlen(dir) - 1] = '\0';
  assert_string_equal(c->dir, dir);
  char want[1200];
  snprintf(want, sizeof want, "%s/good.lua", dir);
  assert_string_equal(c->path, want);

  assert_string_equal(c->settings.state_dir, "/tmp/lugger-state");
  assert_int_equal(c->settings.memory_budget, 64 << 20);
  assert_int_equal(c->settings.workers, 3);
  assert_string_equal(c->settings.http, "127.0.0.1:2020");
  assert_int_equal(c->settings.checkpoint_interval_ms, 500);
  assert_int_equal(c->settings.rescan_interval_ms, 60000);
  assert_int_equal(c->settings.shutdown_timeout_ms, 2500);
  assert_string_equal(c->settings.dead_letter, "errors");

  /* Sorted by name: sources app, sys; pipelines raw, web; outputs
   * errors, out. */
  assert_int_equal(c->nsources, 2);
  lg_conf_source_t *s = &c->sources[0];
  assert_string_equal(s->name, "app");
  assert_string_equal(s->type, "file");
  const lg_tail_conf_t *t = file_tail(s);
  assert_int_equal(t->npaths, 2);
  assert_string_equal(t->paths[0], "/var/log/app/*.log");
  snprintf(want, sizeof want, "%s/logs/*.txt", dir);
  assert_string_equal(t->paths[1], want);
  assert_int_equal(t->nexclude, 1);
  assert_string_equal(t->exclude[0], "*.gz");
  assert_int_equal(t->read_from_head, 1);
  assert_int_equal(t->format, LG_FORMAT_CRI);
  assert_int_equal(t->max_record_bytes, 65536);
  assert_int_equal(t->flush_timeout_ms, 2000);
  assert_int_equal(s->pipeline, 1);
  s = &c->sources[1];
  assert_string_equal(s->name, "sys");
  t = file_tail(s);
  assert_int_equal(t->npaths, 1);
  assert_string_equal(t->paths[0], "/var/log/syslog");
  assert_int_equal(t->nexclude, 0);
  assert_null(t->exclude);
  assert_int_equal(t->read_from_head, 0);
  assert_int_equal(t->format, LG_FORMAT_AUTO);
  assert_int_equal(t->max_record_bytes, 1 << 20);
  assert_int_equal(t->flush_timeout_ms, 1000);
  assert_int_equal(s->pipeline, 0);

  assert_int_equal(c->noutputs, 2);
  assert_int_equal(lg_config_output_index(c, "errors"), 0);
  assert_int_equal(lg_config_output_index(c, "out"), 1);
  assert_int_equal(lg_config_output_index(c, "kafka"), -1);
  lg_conf_output_t *o = &c->outputs[0];
  assert_string_equal(o->name, "errors");
  assert_string_equal(o->type, "file");
  assert_ptr_equal(o->vt, &lg__output_file);
  int i = lg_opt_find(o->vt->options, "path");
  assert_string_equal(o->opts[i].s, "/tmp/lugger-errors.jsonl");
  assert_int_equal(o->opts[i].set, 1);
  i = lg_opt_find(o->vt->options, "fsync");
  assert_string_equal(o->opts[i].s, "always");
  i = lg_opt_find(o->vt->options, "fsync_interval");
  assert_int_equal(o->opts[i].i, 1000);
  assert_int_equal(o->opts[i].set, 0);
  i = lg_opt_find(o->vt->options, "mode");
  assert_string_equal(o->opts[i].s, "0600");
  o = &c->outputs[1];
  assert_string_equal(o->name, "out");
  assert_ptr_equal(o->vt, &lg__output_stdout);

  assert_int_equal(c->npipelines, 2);
  lg_conf_pipeline_t *p = &c->pipelines[0];
  assert_string_equal(p->name, "raw");
  assert_int_equal(p->nsources, 1);
  assert_int_equal(p->sources[0], 1);
  assert_int_equal(p->nscripts, 0);
  assert_int_equal(p->noutputs, 1);
  assert_int_equal(p->outputs[0], 1);
  p = &c->pipelines[1];
  assert_string_equal(p->name, "web");
  assert_int_equal(p->nsources, 1);
  assert_int_equal(p->sources[0], 0);
  assert_int_equal(p->nscripts, 2);
  snprintf(want, sizeof want, "%s/scripts/ok.lua", dir);
  assert_string_equal(p->scripts[0].path, want);
  assert_string_equal(p->scripts[0].params_json, "{}");
  snprintf(want, sizeof want, "%s/scripts/params.lua", dir);
  assert_string_equal(p->scripts[1].path, want);
  assert_string_equal(p->scripts[1].params_json,
                      "{\"empty\":{},\"level\":\"warn\",\"limit\":10000000000,"
                      "\"on\":true,\"ratio\":0.25,\"tags\":[\"a\",\"b\"]}");
  assert_int_equal(p->noutputs, 2);
  assert_int_equal(p->outputs[0], 1);
  assert_int_equal(p->outputs[1], 0);

  lg_config_errors_t e = {0};
  assert_int_equal(lg_config_compile_scripts(c, &e), 0);
  assert_int_equal(e.n, 0);
  lg_config_destroy(c);
  lg_config_destroy(NULL);
}

static const char minimal[] =
    "return { sources = { a = { type = 'file', paths = '/x/*.log' } },\n"
    "  pipelines = { p = { sources = { 'a' }, outputs = { 'o' } } },\n"
    "  outputs = { o = { type = 'stdout' } } }\n";

static void test_defaults_and_env(void **state) {
  (void)state;
  lg_config_t *c = load_ok(cfg("min.lua", minimal));
  assert_string_equal(c->settings.state_dir, "/var/lib/lugger");
  assert_int_equal(c->settings.workers, (int)sysconf(_SC_NPROCESSORS_ONLN));
  /* 8 MiB per worker, at least 32 MiB. */
  uint64_t budget = (uint64_t)c->settings.workers * (8 << 20);
  assert_int_equal(c->settings.memory_budget,
                   budget > (32 << 20) ? budget : (32 << 20));
  assert_int_equal(c->settings.close_inactive_ms, 300000);
  assert_null(c->settings.http);
  assert_int_equal(c->settings.checkpoint_interval_ms, 1000);
  assert_int_equal(c->settings.rescan_interval_ms, 5000);
  assert_int_equal(c->settings.shutdown_timeout_ms, 10000);
  assert_null(c->settings.dead_letter);
  assert_int_equal(c->pipelines[0].nscripts, 0);
  lg_config_destroy(c);

  /* The environment wins over the file (the quick start relies on it). */
  setenv("LUGGER_STATE_DIR", "/tmp/elsewhere", 1);
  c = load_ok(fixture("good.lua"));
  assert_string_equal(c->settings.state_dir, "/tmp/elsewhere");
  lg_config_destroy(c);
  c = load_ok(cfg("min.lua", minimal));
  assert_string_equal(c->settings.state_dir, "/tmp/elsewhere");
  lg_config_destroy(c);
  unsetenv("LUGGER_STATE_DIR");

  /* os.getenv is there; a relative config path is made absolute. */
  setenv("LG_TEST_HTTP", "0.0.0.0:9999", 1);
  cfg("env.lua", "local t = dofile == nil and loadstring == nil and\n"
                 "  io == nil and print == nil and string.rep('a', 2) == 'aa'\n"
                 "  and os.execute == nil and math.floor(1.5) == 1\n"
                 "assert(t, 'sandbox')\n"
                 "return { settings = { http = os.getenv('LG_TEST_HTTP') },\n"
                 "  sources = { a = { type = 'file', paths = 'x.log' } },\n"
                 "  pipelines = { p = { sources = { 'a' }, outputs = 'o',\n"
                 "                      scripts = './s.lua' } },\n"
                 "  outputs = { o = { type = 'stdout' } } }\n");
  cfg("s.lua", "function process(r) end\n");
  char cwd[1024];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(tmpdir), 0);
  c = load_ok("./env.lua");
  assert_int_equal(chdir(cwd), 0);
  assert_string_equal(c->settings.http, "0.0.0.0:9999");
  char want[600];
  snprintf(want, sizeof want, "%s/env.lua", tmpdir);
  assert_string_equal(c->path, want);
  assert_string_equal(c->dir, tmpdir);
  snprintf(want, sizeof want, "%s/x.log", tmpdir);
  assert_string_equal(file_tail(&c->sources[0])->paths[0], want);
  snprintf(want, sizeof want, "%s/s.lua", tmpdir);
  assert_string_equal(c->pipelines[0].scripts[0].path, want);
  lg_config_destroy(c);
  unsetenv("LG_TEST_HTTP");
}

static void test_bad_fixture(void **state) {
  (void)state;
  static const char *const want[] = {
      "settings.colour: unknown key",
      "settings.memory_budget: invalid size \"lots\" (expected a number of "
      "bytes or a string like \"64KiB\", \"1MiB\", \"2GB\")",
      "settings.workers: must be from 1 to 1024, got 0",
      "sources.app.paths: expected a list of strings, got number",
      "sources.app.read_from: expected one of \"head\", \"tail\", got "
      "\"middle\"",
      "sources.pods.kube_api: expected \"in-cluster\", \"off\" or an "
      "http(s) URL, got \"sometimes\"",
      "outputs.kafka.fsync: expected one of \"never\", \"interval\", "
      "\"always\", got \"sometimes\"",
      "outputs.kafka.topik: unknown key",
      "pipelines.web.sources[2]: unknown source 'nope'",
      "pipelines.web.scripts[1]: no such file: %D/scripts/missing.lua",
      "pipelines.web.outputs[2]: unknown output 'kafak'",
      NULL};
  expect_errors(fixture("bad.lua"), want);

  /* With LG_CONFIG_PARTIAL the readable part comes back, and compiling
   * its scripts finds the syntax error too. */
  lg_config_t *c = NULL;
  lg_config_errors_t e;
  assert_int_equal(
      lg_config_load_ex(fixture("bad.lua"), LG_CONFIG_PARTIAL, &c, &e),
      -EINVAL);
  assert_non_null(c);
  assert_int_equal(e.n, 11);
  /* Sources no pipeline reads are left out, with a warning each. */
  assert_int_equal(c->nwarnings, 2);
  assert_string_equal(c->warnings[0], "sources.lonely: not read by any "
                                      "pipeline; it is not started");
  assert_string_equal(c->warnings[1], "sources.pods: not read by any "
                                      "pipeline; it is not started");
  for (size_t i = 0; i < c->nsources; i++)
    assert_string_not_equal(c->sources[i].name, "lonely");
  assert_int_equal(lg_config_compile_scripts(c, &e), -EINVAL);
  assert_int_equal(e.n, 12);
  char w[1200];
  snprintf(w, sizeof w,
           "pipelines.web.scripts[2]: %s/scripts/syntax_error.lua:2: "
           "unexpected symbol near '='",
           c->dir);
  assert_string_equal(e.msgs[11], w);
  lg_config_errors_free(&e);
  assert_int_equal(e.n, 0);
  lg_config_destroy(c);
}

static void test_lua_errors(void **state) {
  (void)state;
  const char *p = cfg("syntax.lua", "return {\n  sources = { a = { type = "
                                    "'file' paths = '/x' } },\n}\n");
  const char *want1[] = {"%D/syntax.lua:2: '}' expected near 'paths'", NULL};
  expect_errors(p, want1);
  p = cfg("runtime.lua", "local x\n\nreturn { settings = x.y }\n");
  const char *want2[] = {"%D/runtime.lua:3: attempt to index local 'x' (a nil "
                         "value)",
                         NULL};
  expect_errors(p, want2);
  p = cfg("io.lua", "local f = io.open('/etc/passwd')\n");
  /* Source a is defined, if badly, so p's reference to it is no error. */
  static const char *const want3[] = {
      "%D/io.lua:1: attempt to index global 'io' (a nil "
      "value)",
      NULL};
  expect_errors(p, want3);
  p = cfg("exec.lua", "os.execute('true')\n");
  const char *want4[] = {
      "%D/exec.lua:1: attempt to call field 'execute' (a nil value)", NULL};
  expect_errors(p, want4);
  p = cfg("number.lua", "return 5\n");
  const char *want5[] = {"%D/number.lua: must return a table, got number",
                         NULL};
  expect_errors(p, want5);
  p = cfg("loop.lua", "while true do end\n");
  const char *want6[] = {"%D/loop.lua: evaluation did not finish after "
                         "10^8 instructions (an endless loop?)",
                         NULL};
  expect_errors(p, want6);
  /* Bytecode is not loaded, only text. */
  p = cfg("bytecode.lua", "\033LJ\002garbage");
  const char *want8[] = {"%D/bytecode.lua: precompiled bytecode is not "
                         "accepted, only Lua source text",
                         NULL};
  expect_errors(p, want8);
  lg_config_t *c;
  lg_config_errors_t e;
  /* A long path is not cut short in messages. */
  char deep[512];
  snprintf(deep, sizeof deep,
           "%s/a-rather-long-directory-name/and-another-long-one", tmpdir);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", deep);
  assert_int_equal(system(cmd), 0);
  strcat(deep, "/lugger.lua");
  lg_test_write_file(deep, "return {\n\n  x = = 1 }\n");
  const char *want7[] = {"%D/lugger.lua:3: unexpected symbol near '='", NULL};
  expect_errors(deep, want7);

  assert_int_equal(lg_config_load("/nonexistent/lugger.lua", &c, &e), -ENOENT);
  assert_null(c);
  assert_int_equal(e.n, 1);
  assert_string_equal(e.msgs[0],
                      "/nonexistent/lugger.lua: No such file or directory");
  lg_config_errors_free(&e);
}

static void test_structure_errors(void **state) {
  (void)state;
  const char *want1[] = {"sources: no sources defined",
                         "outputs: no outputs defined",
                         "pipelines: no pipelines defined", NULL};
  expect_errors(cfg("empty.lua", "return {}"), want1);

  const char *want2[] = {
      "[1]: unexpected list item",
      "extra: unknown key (expected settings, sources, pipelines, outputs)",
      "settings: expected a table, got string",
      "sources[1]: expected name = { ... } entries, got a list item",
      "sources: no sources defined",
      "outputs.o: expected a table, got string",
      "pipelines: expected a table, got number",
      "pipelines: no pipelines defined",
      NULL};
  expect_errors(cfg("shape.lua",
                    "return { 'x', extra = 1, settings = 'fast',\n"
                    "  sources = { { type = 'file' } },\n"
                    "  outputs = { o = 'stdout' }, pipelines = 5 }\n"),
                want2);

  /* Source a is defined, if badly, so p's reference to it is no error. */
  static const char *const want3[] = {
      "settings.checkpoint_interval: must be greater than 0",
      "settings.dead_letter: expected a string, got boolean",
      "settings.http: expected a string, got number",
      "settings.rescan_interval: invalid duration \"5 parsecs\" (expected a "
      "number of milliseconds or a string like \"500ms\", \"5s\", \"1m\")",
      "settings.state_dir: must not be empty",
      "settings.workers: expected an integer, got 1.5",
      "sources.a: expected a table, got string",
      "sources.b.type: required key missing",
      "sources.c.type: expected a string, got number",
      "sources.d.type: unknown source type 'syslog' (known: file, kubernetes, "
      "forward)",
      "sources.e.exclude[1]: expected a string, got boolean",
      "sources.e.flush_timeout: must be greater than 0",
      "sources.e.format: expected one of \"line\", \"cri\", \"docker\", "
      "\"auto\", got \"json\"",
      "sources.e.max_record_bytes: invalid size \"2XB\" (expected a number "
      "of bytes or a string like \"64KiB\", \"1MiB\", \"2GB\")",
      "sources.e.paths: needs at least one path",
      "sources.f.paths: required key missing",
      "outputs.f.fsync_interval: expected a duration (a number of "
      "milliseconds or a string like \"500ms\", \"5s\", \"1m\"), got table",
      "outputs.f.mode: expected an octal permission mode as a string like "
      "\"0640\", got \"rw\"",
      "outputs.f.path: required key missing",
      "outputs.g.mode: expected a string, got number",
      "outputs.g.path: must not be empty",
      "outputs.k.type: unknown output type 'kafak' (known: stdout, file, "
      "kafka, forward, elasticsearch, loki, clickhouse, otlp, http, s3, "
      "cloudwatch_logs)",
      "outputs.n.type: required key missing",
      "outputs.s.path: unknown key",
      "pipelines.p.outputs: required key missing",
      NULL};
  expect_errors(
      cfg("types.lua",
          "return {\n"
          "  settings = { checkpoint_interval = 0, dead_letter = true,\n"
          "    http = 2020, rescan_interval = '5 parsecs', state_dir = '',\n"
          "    workers = 1.5 },\n"
          "  sources = { a = 'file', b = {}, c = { type = 1 },\n"
          "    d = { type = 'syslog' },\n"
          "    e = { type = 'file', paths = {}, exclude = { true },\n"
          "          flush_timeout = '0s', format = 'json',\n"
          "          max_record_bytes = '2XB' },\n"
          "    f = { type = 'file' } },\n"
          "  pipelines = { p = { sources = { 'a' } } },\n"
          "  outputs = { f = { type = 'file', fsync_interval = {},\n"
          "                    mode = 'rw' },\n"
          "    g = { type = 'file', path = '', mode = 0640 },\n"
          "    k = { type = 'kafak' }, n = { path = 'x' },\n"
          "    s = { type = 'stdout', path = '/x' } },\n"
          "}\n"),
      want3);
}

/* Option combinations each output type checks (lg_output_type_t.check)
 * are config errors, found by the load (`lugger check`, a reload) and not
 * only when the output starts. */
static void test_output_combinations(void **state) {
  (void)state;
  static const char *const want[] = {
      "outputs.cw: log_group_name and log_stream_name must not be empty",
      "outputs.es.hosts: host 2, \"es:9200\", is not an http:// or https:// "
      "URL",
      /* libcurl's URL parser's words (it once passed, then every request
       * failed). */
      "outputs.es2.hosts: host 1, \"http://\": No host part in the URL",
      "outputs.fw.username: needs shared_key (user authentication is part "
      "of the handshake)",
      "outputs.fw2.servers[2]: \"agg:port\": bad port",
      "outputs.h.path: must start with '/'",
      "outputs.k: needs `topic` or `topic_field`",
      "outputs.k2.librdkafka: property no.such.prop=1: No such configuration "
      "property: \"no.such.prop\"",
      "outputs.lo.max_in_flight: must be 1 for loki (a stream's entries are "
      "never in two requests at once)",
      "outputs.lo2.labels: two labels named \"app_name\"",
      "outputs.s3.key: a key template that does not start with '/'",
      "outputs.so.max_in_flight: must be 1 for this output (lines are "
      "appended in order)",
      NULL};
  expect_errors(
      cfg("combos.lua",
          "return {\n"
          "  sources = { app = { type = 'file', paths = { '/x/*.log' } } },\n"
          "  pipelines = { p = { sources = { 'app' }, outputs = { 'k' } } },\n"
          "  outputs = {\n"
          "    k = { type = 'kafka', brokers = 'k:9092' },\n"
          "    k2 = { type = 'kafka', brokers = 'k:9092', topic = 't',\n"
          "           librdkafka = { ['no.such.prop'] = '1' } },\n"
          "    h = { type = 'http', hosts = 'http://x', path = 'ingest' },\n"
          "    so = { type = 'stdout', max_in_flight = 2 },\n"
          "    lo = { type = 'loki', hosts = 'http://x', max_in_flight = 2 },\n"
          "    lo2 = { type = 'loki', hosts = 'http://x',\n"
          "            labels = { ['app.name'] = 'a' },\n"
          "            static_labels = { app_name = 'b' } },\n"
          "    s3 = { type = 's3', bucket = 'b', key = '/x' },\n"
          "    cw = { type = 'cloudwatch_logs', log_group_name = '',\n"
          "           log_stream_name = 's' },\n"
          "    fw = { type = 'forward', username = 'u' },\n"
          "    fw2 = { type = 'forward', servers = { 'unix:/s', 'agg:port' } "
          "},\n"
          "    es = { type = 'elasticsearch',\n"
          "           hosts = { 'https://es:9200', 'es:9200' } },\n"
          "    es2 = { type = 'elasticsearch', hosts = 'http://' },\n"
          "    ok = { type = 'kafka', brokers = 'k:9092', topic_field = 't' "
          "},\n"
          "  },\n"
          "}\n"),
      want);
}

/* Every key the config accepts is in the README's configuration
 * reference (the output types' tables are generated and checked in
 * test_output): `settings.<key>`, and each source type's keys as `<key>`
 * or `sources.X.<key>`. */
static void test_readme_keys(void **state) {
  (void)state;
  const char *text = lg_test_readme();
  char want[256], alt[256];
  int missing = 0;
  for (const lg_option_t *o = lg_config_settings_options(); o->name; o++) {
    snprintf(want, sizeof want, "`settings.%s`", o->name);
    if (strstr(text, want) == NULL) {
      print_error("README.md does not document %s\n", want);
      missing++;
    }
  }
  static const char *const types[] = {"file", "kubernetes", "forward", NULL};
  for (int t = 0; types[t] != NULL; t++) {
    const lg_conf_source_type_t *st = lg_config_source_type(types[t]);
    assert_non_null(st);
    for (const lg_option_t *o = st->options; o->name; o++) {
      snprintf(want, sizeof want, "`%s`", o->name);
      snprintf(alt, sizeof alt, "`sources.X.%s`", o->name);
      if (strstr(text, want) == NULL && strstr(text, alt) == NULL) {
        print_error("README.md does not document %s sources' %s\n", types[t],
                    want);
        missing++;
      }
    }
  }
  assert_int_equal(missing, 0);
}

/* The second cell of the first README table row after `marker` whose
 * first cell names `name` (as "`name`", alone or among others), copied to
 * `cell`; 0 when there is no such row. */
static int readme_default_cell(const char *text, const char *marker,
                               const char *name, char *cell, size_t cellsz) {
  const char *p = strstr(text, marker);
  char want[192]; /* names come from buffers of up to 160 bytes */
  snprintf(want, sizeof want, "`%s`", name);
  for (; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (strncmp(p, "| ", 2) != 0)
      continue;
    const char *c1 = strstr(p + 2, " | ");
    const char *eol = strchr(p, '\n');
    if (c1 == NULL || (eol != NULL && c1 > eol))
      continue;
    size_t n1 = (size_t)(c1 - p);
    char first[512];
    if (n1 >= sizeof first)
      continue;
    memcpy(first, p, n1);
    first[n1] = '\0';
    if (strstr(first, want) == NULL)
      continue;
    const char *c2 = strstr(c1 + 3, " |");
    size_t n2 = c2 != NULL ? (size_t)(c2 - (c1 + 3)) : 0;
    if (n2 >= cellsz)
      n2 = cellsz - 1;
    memcpy(cell, c1 + 3, n2);
    cell[n2] = '\0';
    return 1;
  }
  return 0;
}

/* Whether a README default cell says `o`'s default: its text is in the
 * cell (an empty one as `""`), or the cell says "as file sources" and the
 * file source's option of that name has the same default. */
static int readme_says_default(const lg_option_t *o, const char *cell) {
  if (strstr(cell, "as file sources") != NULL) {
    const lg_conf_source_type_t *f = lg_config_source_type("file");
    for (const lg_option_t *fo = f->options; fo->name; fo++)
      if (strcmp(fo->name, o->name) == 0)
        return fo->def != NULL && strcmp(fo->def, o->def) == 0;
    return 0;
  }
  return strstr(cell, o->def[0] != '\0' ? o->def : "\"\"") != NULL;
}

/* The defaults the README's configuration tables state are the code's:
 * settings and file sources in "Configuration", kubernetes sources in
 * their section's key table, forward sources under "Options", multiline
 * tables under "Multiline" (the output
 * types' tables are generated and checked in test_output). */
static void test_readme_defaults(void **state) {
  (void)state;
  const char *text = lg_test_readme();
  char name[160], cell[512];
  int wrong = 0;
  static const struct {
    const char *type, *marker, *prefix;
  } tables[] = {
      {NULL, "## Configuration", "settings."},
      {"file", "## Configuration", "sources.X."},
      {"kubernetes", "### DaemonSet: every container", ""},
      {"forward", "`type = \"forward\"` source:", ""},
      {"multiline", "### Multiline (stack traces)", ""},
  };
  for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
    const lg_option_t *opts = lg_config_settings_options();
    if (tables[t].type != NULL && strcmp(tables[t].type, "multiline") == 0)
      opts = lg_ml_options();
    else if (tables[t].type != NULL)
      opts = lg_config_source_type(tables[t].type)->options;
    int seen = 0;
    for (const lg_option_t *o = opts; o->name; o++) {
      if (o->def == NULL)
        continue;
      snprintf(name, sizeof name, "%s%s", tables[t].prefix, o->name);
      if (!readme_default_cell(text, tables[t].marker, name, cell,
                               sizeof cell)) {
        print_error("README.md: no table row for %s after \"%s\"\n", name,
                    tables[t].marker);
        wrong++;
      } else if (!readme_says_default(o, cell)) {
        print_error("README.md: %s: default \"%s\" in the code, \"%s\" in "
                    "the README\n",
                    name, o->def, cell);
        wrong++;
      }
      seen++;
    }
    assert_true(seen > 0);
  }
  assert_int_equal(wrong, 0);
}

static void test_pipeline_errors(void **state) {
  (void)state;
  cfg("ok.lua", "function process(r) end\n");
  char sub[600];
  snprintf(sub, sizeof sub, "%s/dir.lua", tmpdir);
  mkdir(sub, 0755);
  /* Per pipeline: unknown keys, then sources, scripts, outputs; the
   * dead-letter output is resolved once every output is known. */
  static const char *const want[] = {
      "pipelines.a.scripts[1]: expected a script path or a table { path = "
      "..., params = {...} }, got number",
      "pipelines.a.scripts[2].colour: unknown key",
      "pipelines.a.scripts[2].params: expected a table, got string",
      "pipelines.a.scripts[3].path: required key missing",
      "pipelines.a.scripts[4].path: expected a string, got boolean",
      "pipelines.a.scripts[5].params.f: expected a string, number, boolean "
      "or table, got function",
      "pipelines.a.scripts[6].params.mixed: expected a list (keys 1..n) or a "
      "map (string keys), got a table that mixes both",
      "pipelines.a.scripts[7].params.inf: expected a finite number, got inf",
      "pipelines.a.scripts[8]: not a regular file: %D/dir.lua",
      "pipelines.a.scripts[9]: the script path is empty",
      "pipelines.a.outputs: needs at least one output",
      "pipelines.b.colour: unknown key",
      "pipelines.b.sources[1]: unknown source 'nope'",
      "pipelines.b.sources[2]: source 'x' already feeds pipeline 'a' (a "
      "source can feed only one pipeline)",
      "pipelines.b.sources[4]: source 'y' is listed twice",
      "pipelines.b.scripts: expected a list of scripts, got a table with "
      "other keys",
      "pipelines.b.outputs[2]: output 'o' is listed twice",
      "pipelines.c.sources: needs at least one source",
      "pipelines.c.scripts: expected a list of scripts, got boolean",
      "pipelines.c.outputs: expected a list of strings, got number",
      "pipelines.c.stateless: expected a boolean, got string",
      "settings.dead_letter: unknown output 'nowhere'",
      NULL};
  expect_errors(
      cfg("pipes.lua",
          "return {\n"
          "  settings = { dead_letter = 'nowhere' },\n"
          "  sources = { x = { type = 'file', paths = '/x' },\n"
          "              y = { type = 'file', paths = '/y' } },\n"
          "  pipelines = {\n"
          "    a = { sources = { 'x' }, outputs = {}, scripts = { 5,\n"
          "          { path = 'ok.lua', params = 'p', colour = 1 },\n"
          "          { params = {} }, { path = true },\n"
          "          { path = 'ok.lua', params = { f = print or type } },\n"
          "          { path = 'ok.lua', params = { mixed = { 1, k = 2 } } },\n"
          "          { path = 'ok.lua', params = { inf = 1/0 } },\n"
          "          'dir.lua', '' } },\n"
          "    b = { sources = { 'nope', 'x', 'y', 'y' }, scripts = { k = 'v' "
          "},\n"
          "          outputs = { 'o', 'o' }, colour = 'red' },\n"
          "    c = { sources = {}, scripts = true, outputs = 5,\n"
          "          stateless = 'yes' },\n"
          "  },\n"
          "  outputs = { o = { type = 'stdout' } },\n"
          "}\n"),
      want);
}

static void test_params_json(void **state) {
  (void)state;
  cfg("s.lua", "function process(r) end\n");
  lg_config_t *c = load_ok(
      cfg("params.lua",
          "return {\n"
          "  sources = { a = { type = 'file', paths = '/x' } },\n"
          "  pipelines = { p = { sources = 'a', outputs = 'o', scripts = {\n"
          "    { path = 's.lua' },\n"
          "    { path = 's.lua', params = {} },\n"
          "    { path = 's.lua', params = { n = -9007199254740992, z = 0,\n"
          "        big = 2^63 - 2^10, neg = -0.5, s = 'a\"b\\n',\n"
          "        deep = { { { x = { 1, 2.5, false } } } } } } } } },\n"
          "  outputs = { o = { type = 'stdout' } } }\n"));
  lg_conf_pipeline_t *p = &c->pipelines[0];
  assert_int_equal(p->nscripts, 3);
  assert_string_equal(p->scripts[0].params_json, "{}");
  assert_string_equal(p->scripts[1].params_json, "{}");
  assert_string_equal(p->scripts[2].params_json,
                      "{\"big\":9223372036854774784,"
                      "\"deep\":[[{\"x\":[1,2.5,false]}]],"
                      "\"n\":-9007199254740992,\"neg\":-0.5,"
                      "\"s\":\"a\\\"b\\n\",\"z\":0}");
  lg_config_destroy(c);

  const char *want[] = {
      "pipelines.p.scripts[1].params.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a"
      ".a.a.a.a.a.a.a.a.a.a.a.a.a: nested more than 32 levels deep",
      NULL};
  expect_errors(
      cfg("deep.lua",
          "local t = {}\nlocal cur = t\n"
          "for i = 1, 40 do cur.a = {}; cur = cur.a end\n"
          "return {\n"
          "  sources = { a = { type = 'file', paths = '/x' } },\n"
          "  pipelines = { p = { sources = 'a', outputs = 'o', scripts = {\n"
          "    { path = 's.lua', params = t } } } },\n"
          "  outputs = { o = { type = 'stdout' } } }\n"),
      want);
}

static void test_output_new(void **state) {
  (void)state;
  char err[512];
  const char *kv[] = {"path", "rel/x.jsonl", "fsync", "always", NULL};
  lg_conf_output_t *o = lg_config_output_new("dl", "file", kv, err, sizeof err);
  assert_non_null(o);
  assert_string_equal(o->name, "dl");
  assert_string_equal(o->type, "file");
  assert_ptr_equal(o->vt, &lg__output_file);
  int i = lg_opt_find(o->vt->options, "path");
  assert_string_equal(o->opts[i].s, "rel/x.jsonl"); /* as given */
  assert_int_equal(o->opts[i].set, 1);
  i = lg_opt_find(o->vt->options, "fsync_interval");
  assert_int_equal(o->opts[i].i, 1000);
  assert_int_equal(o->opts[i].set, 0);
  lg_config_output_free(o);
  lg_config_output_free(NULL);

  struct {
    const char *type;
    const char *kv[5];
    const char *want;
  } bad[] = {
      {"kafak", {NULL}, "outputs.dl.type: unknown output type 'kafak'"},
      {"file", {"topik", "x", NULL}, "outputs.dl.topik: unknown key"},
      {"file", {NULL}, "outputs.dl.path: required key missing"},
      {"file",
       {"path", "/x", "fsync", "often", NULL},
       "outputs.dl.fsync: expected one of \"never\", \"interval\", "
       "\"always\", got \"often\""},
      {"file",
       {"path", "/x", "mode", "999", NULL},
       "outputs.dl.mode: expected an octal permission mode as a string like "
       "\"0640\", got \"999\""},
      {"file", {"path", "", NULL}, "outputs.dl.path: must not be empty"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    err[0] = '\0';
    assert_null(
        lg_config_output_new("dl", bad[k].type, bad[k].kv, err, sizeof err));
    assert_string_equal(err, bad[k].want);
  }
}

static void test_relative_paths_and_listen(void **state) {
  (void)state;
  lg_config_t *c = load_ok(
      cfg("rel.lua",
          "return { settings = { state_dir = 'state', http = ':2020' },\n"
          "  sources = { a = { type = 'file', paths = { 'logs/*.log',\n"
          "                    '/abs/*.log' }, exclude = 'old/*' } },\n"
          "  pipelines = { p = { sources = 'a', outputs = 'f' } },\n"
          "  outputs = { f = { type = 'file', path = 'out/x.jsonl' } } }\n"));
  char want[600];
  snprintf(want, sizeof want, "%s/state", tmpdir);
  assert_string_equal(c->settings.state_dir, want);
  assert_string_equal(c->settings.http, ":2020");
  snprintf(want, sizeof want, "%s/logs/*.log", tmpdir);
  assert_string_equal(file_tail(&c->sources[0])->paths[0], want);
  assert_string_equal(file_tail(&c->sources[0])->paths[1], "/abs/*.log");
  assert_string_equal(file_tail(&c->sources[0])->exclude[0], "old/*");
  snprintf(want, sizeof want, "%s/out/x.jsonl", tmpdir);
  int i = lg_opt_find(c->outputs[0].vt->options, "path");
  assert_string_equal(c->outputs[0].opts[i].s, want);
  lg_config_destroy(c);

  static const char *const want2[] = {
      "settings.http: expected a listen address like \"0.0.0.0:2020\" or "
      "\":2020\", got \"localhost\"",
      NULL};
  expect_errors(cfg("listen.lua",
                    "return { settings = { http = 'localhost' },\n"
                    "  sources = { a = { type = 'file', paths = '/x' } },\n"
                    "  pipelines = { p = { sources = 'a', outputs = 'o' } },\n"
                    "  outputs = { o = { type = 'stdout' } } }\n"),
                want2);
  static const char *const want3[] = {
      "settings.http: expected a listen address like \"0.0.0.0:2020\" or "
      "\":2020\", got \"0.0.0.0:99999\"",
      NULL};
  expect_errors(cfg("listen.lua",
                    "return { settings = { http = '0.0.0.0:99999' },\n"
                    "  sources = { a = { type = 'file', paths = '/x' } },\n"
                    "  pipelines = { p = { sources = 'a', outputs = 'o' } },\n"
                    "  outputs = { o = { type = 'stdout' } } }\n"),
                want3);
}

/* A kubernetes source with include.pods = {`pods`} and select() returning
 * `sel` after `pad` newlines. */
static lg_config_t *k8s_conf(const char *name, const char *pods,
                             const char *sel, int pad) {
  char text[2048];
  snprintf(text, sizeof text,
           "%.*sreturn { sources = { k = { type = 'kubernetes', "
           "kube_api = 'off', pods_dir = '/x', docker_dir = '',\n"
           "  include = { pods = { '%s' } },\n"
           "  select = function(m) return '%s' end } },\n"
           "  pipelines = { p = { sources = { 'k' }, outputs = { 'o' } },\n"
           "                q = { sources = { 'k' }, outputs = { 'o' } } },\n"
           "  outputs = { o = { type = 'stdout' } } }\n",
           pad, "\n\n\n\n\n\n\n\n", pods, sel);
  return load_ok(cfg(name, text));
}

/* Reload compares a kubernetes source's regex texts and select() code, not
 * only their counts and presence. */
static void test_k8s_source_equal(void **state) {
  (void)state;
  lg_config_t *a = k8s_conf("a.lua", "^web-", "p", 0);
  lg_config_t *same = k8s_conf("b.lua", "^web-", "p", 0);
  lg_config_t *moved = k8s_conf("c.lua", "^web-", "p", 5);
  lg_config_t *pat = k8s_conf("d.lua", "^api-", "p", 0);
  lg_config_t *sel = k8s_conf("e.lua", "^web-", "q", 0);
  const lg_k8s_conf_t *ak = a->sources[0].type_conf;
  assert_non_null(ak);
  assert_non_null(ak->select_code);
  assert_true(lg_config_source_equal(&a->sources[0], &same->sources[0]));
  assert_true(lg_config_source_equal(&a->sources[0], &moved->sources[0]));
  assert_false(lg_config_source_equal(&a->sources[0], &pat->sources[0]));
  assert_false(lg_config_source_equal(&a->sources[0], &sel->sources[0]));
  lg_config_destroy(a);
  lg_config_destroy(same);
  lg_config_destroy(moved);
  lg_config_destroy(pat);
  lg_config_destroy(sel);
}

/* A config with one source `s` whose entry is `{ <entry> }`. */
static lg_config_t *source_conf(const char *name, const char *entry) {
  char text[2048];
  snprintf(text, sizeof text,
           "return { sources = { s = { %s } },\n"
           "  pipelines = { p = { sources = { 's' }, outputs = { 'o' } } },\n"
           "  outputs = { o = { type = 'stdout' } } }\n",
           entry);
  return load_ok(cfg(name, text));
}

/* Reload keeps a source only when its type's conf says it reads the same
 * input the same way: every option of a file source counts, and the tail
 * options of a kubernetes source (rate_limit, max_rotated_open too). */
static void test_source_equal(void **state) {
  (void)state;
  static const char *const base = "type = 'file', paths = '/x/*.log'";
  static const char *const differ[] = {
      "type = 'file', paths = '/y/*.log'",
      "type = 'file', paths = '/x/*.log', exclude = '*.gz'",
      "type = 'file', paths = '/x/*.log', read_from = 'head'",
      "type = 'file', paths = '/x/*.log', format = 'cri'",
      "type = 'file', paths = '/x/*.log', max_record_bytes = '64KiB'",
      "type = 'file', paths = '/x/*.log', flush_timeout = '2s'",
      "type = 'file', paths = '/x/*.log', k8s = 'downward'",
      "type = 'file', paths = '/x/*.log', multiline = 'java'",
      "type = 'kubernetes', kube_api = 'off', pods_dir = '/x'",
  };
  lg_config_t *a = source_conf("a.lua", base);
  lg_config_t *same = source_conf("b.lua", base);
  assert_true(lg_config_source_equal(&a->sources[0], &same->sources[0]));
  for (size_t i = 0; i < sizeof differ / sizeof differ[0]; i++) {
    lg_config_t *d = source_conf("d.lua", differ[i]);
    if (lg_config_source_equal(&a->sources[0], &d->sources[0]))
      fail_msg("equal to \"%s\": %s", base, differ[i]);
    lg_config_destroy(d);
  }
  lg_config_destroy(a);
  lg_config_destroy(same);

  static const char *const k8s =
      "type = 'kubernetes', kube_api = 'off', pods_dir = '/x'";
  static const char *const k8s_differ[] = {
      "type = 'kubernetes', kube_api = 'off', pods_dir = '/x', "
      "rate_limit = '1MiB'",
      "type = 'kubernetes', kube_api = 'off', pods_dir = '/x', "
      "max_rotated_open = 2",
      "type = 'kubernetes', kube_api = 'off', pods_dir = '/x', "
      "read_from = 'head'",
  };
  a = source_conf("k.lua", k8s);
  same = source_conf("l.lua", k8s);
  assert_true(lg_config_source_equal(&a->sources[0], &same->sources[0]));
  for (size_t i = 0; i < sizeof k8s_differ / sizeof k8s_differ[0]; i++) {
    lg_config_t *d = source_conf("m.lua", k8s_differ[i]);
    if (lg_config_source_equal(&a->sources[0], &d->sources[0]))
      fail_msg("equal to \"%s\": %s", k8s, k8s_differ[i]);
    lg_config_destroy(d);
  }
  lg_config_destroy(a);
  lg_config_destroy(same);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bytes),
      cmocka_unit_test(test_durations),
      cmocka_unit_test(test_enum),
      cmocka_unit_test(test_option_lua),
      cmocka_unit_test(test_option_defaults),
      cmocka_unit_test_setup_teardown(test_good_config, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_defaults_and_env, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_bad_fixture, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_lua_errors, setup_tmp, teardown_tmp),
      cmocka_unit_test_setup_teardown(test_structure_errors, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_pipeline_errors, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_params_json, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test(test_output_new),
      cmocka_unit_test(test_readme_keys),
      cmocka_unit_test(test_readme_defaults),
      cmocka_unit_test_setup_teardown(test_output_combinations, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_relative_paths_and_listen, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_source_equal, setup_tmp,
                                      teardown_tmp),
      cmocka_unit_test_setup_teardown(test_k8s_source_equal, setup_tmp,
                                      teardown_tmp),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
