/* Unit tests: lg_option (typed option tables): byte sizes, durations,
 * enums, booleans and integers from config text and from Lua values, with
 * the exact error texts a user sees; defaults; lg_opt_fill into a typed
 * struct through the table's offsets; required and unknown keys. No loop. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config/lg_config.h"
#include "core/lg_option.h"
#include "outputs/lg_output.h"

static char err[1024];

static int64_t bytes_ok(const char *s) {
  int64_t v = -1;
  int rc = lg_opt_parse_bytes(s, &v);
  if (rc != 0)
    fail_msg("lg_opt_parse_bytes(\"%s\") = %d", s, rc);
  return v;
}

static int64_t dur_ok(const char *s) {
  int64_t v = -1;
  int rc = lg_opt_parse_duration(s, &v);
  if (rc != 0)
    fail_msg("lg_opt_parse_duration(\"%s\") = %d", s, rc);
  return v;
}

static int bytes_rc(const char *s) {
  int64_t v = 12345;
  int rc = lg_opt_parse_bytes(s, &v);
  assert_int_equal(v, 12345); /* untouched on error */
  return rc;
}

static int dur_rc(const char *s) {
  int64_t v = 12345;
  int rc = lg_opt_parse_duration(s, &v);
  assert_int_equal(v, 12345);
  return rc;
}

static void test_parse_bytes(void **state) {
  (void)state;
  assert_int_equal(bytes_ok("512"), 512);
  assert_int_equal(bytes_ok("0"), 0);
  assert_int_equal(bytes_ok("64KiB"), 65536);
  assert_int_equal(bytes_ok("64kib"), 65536);
  assert_int_equal(bytes_ok("64 KiB"), 65536);
  assert_int_equal(bytes_ok("1.5MiB"), 1572864);
  assert_int_equal(bytes_ok("2GB"), 2000000000);
  assert_int_equal(bytes_ok("2G"), 2000000000);
  assert_int_equal(bytes_ok("3k"), 3000);
  assert_int_equal(bytes_ok("3KB"), 3000);
  assert_int_equal(bytes_ok("7b"), 7);
  assert_int_equal(bytes_ok("1MB"), 1000000);
  assert_int_equal(bytes_ok("1GiB"), 1073741824LL);
  assert_int_equal(bytes_ok("1TiB"), 1099511627776LL);
  assert_int_equal(bytes_ok("2TB"), 2000000000000LL);
  /* Fractions of a byte round down. */
  assert_int_equal(bytes_ok("1.9"), 1);
  assert_int_equal(bytes_ok("0.001KiB"), 1);
  /* Exactly the largest int64, and one past it. */
  assert_true(bytes_ok("9223372036854775807") == INT64_MAX);
  assert_int_equal(bytes_rc("9223372036854775808"), -ERANGE);
  assert_int_equal(bytes_rc("9000000TiB"), -ERANGE);
  /* Bad syntax. */
  const char *bad[] = {"",     "KiB",     "-1",   "+1",     "1.",   ".5",
                       "64 ",  "64  KiB", " 64",  "64KiBx", "64 x", "1e3",
                       "0x10", "1,5MiB",  "64Ki", "64kibi"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
    if (bytes_rc(bad[k]) != -EINVAL)
      fail_msg("\"%s\" was accepted as a size", bad[k]);
}

static void test_parse_duration(void **state) {
  (void)state;
  assert_int_equal(dur_ok("0"), 0);
  assert_int_equal(dur_ok("500ms"), 500);
  assert_int_equal(dur_ok("5s"), 5000);
  assert_int_equal(dur_ok("1m"), 60000);
  assert_int_equal(dur_ok("2h"), 7200000);
  assert_int_equal(dur_ok("1m30s"), 90000);
  assert_int_equal(dur_ok("1h1m1s1ms"), 3661001);
  assert_int_equal(dur_ok("1m5ms"), 60005); /* "ms" is not "m" then "s" */
  assert_int_equal(dur_ok("1.5s"), 1500);
  assert_int_equal(dur_ok("0.25h"), 900000);
  assert_int_equal(dur_ok("0s"), 0);
  /* Below a millisecond rounds down. */
  assert_int_equal(dur_ok("0.5ms"), 0);
  assert_int_equal(dur_ok("1.0009s"), 1000);
  assert_int_equal(dur_rc("9999999999999999h"), -ERANGE);
  const char *bad[] = {"",    "5",   "s",   "ms", "5 s",  " 5s", "5S", "5sec",
                       "-5s", "1.s", ".5s", "5d", "1m30", "5s ", "00"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
    if (dur_rc(bad[k]) != -EINVAL)
      fail_msg("\"%s\" was accepted as a duration", bad[k]);
}

static void test_parse_enum_find(void **state) {
  (void)state;
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "never"), 0);
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "interval"), 1);
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "always"), 2);
  /* Whole words, case-sensitive. */
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "Never"),
                   -EINVAL);
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "inter"),
                   -EINVAL);
  assert_int_equal(lg_opt_parse_enum("never|interval|always", "always|"),
                   -EINVAL);
  assert_int_equal(lg_opt_parse_enum("never|interval|always", ""), -EINVAL);
  assert_int_equal(lg_opt_parse_enum("one", "one"), 0);
  assert_int_equal(lg_opt_parse_enum("", "x"), -EINVAL);
  assert_int_equal(lg_opt_parse_enum(NULL, "x"), -EINVAL);

  static const lg_option_t opts[] = {
      {.name = "a", .type = LG_OPT_INT},
      {.name = "ab", .type = LG_OPT_INT},
      {.name = NULL},
  };
  assert_int_equal(lg_opt_find(opts, "a"), 0);
  assert_int_equal(lg_opt_find(opts, "ab"), 1);
  assert_int_equal(lg_opt_find(opts, "abc"), -1);
  assert_int_equal(lg_opt_find(opts, "A"), -1);
  assert_int_equal(lg_opt_find(NULL, "a"), -1);
}

/* ---- defaults (config text) ---- */

static int def_rc(lg_opt_type_t type, const char *choices, const char *def,
                  lg_optval_t *v) {
  lg_option_t o = {.name = "x", .type = type, .def = def, .choices = choices};
  err[0] = '\0';
  return lg_opt_set_default(&o, v, err, sizeof err);
}

static void expect_def_error(lg_opt_type_t type, const char *choices,
                             const char *def, const char *want) {
  lg_optval_t v;
  assert_int_equal(def_rc(type, choices, def, &v), -EINVAL);
  assert_string_equal(err, want);
  assert_null(v.s);
  assert_null(v.vals);
  assert_int_equal(v.n, 0);
}

static void test_defaults(void **state) {
  (void)state;
  lg_optval_t v;
  assert_int_equal(def_rc(LG_OPT_BYTES, NULL, "16MiB", &v), 0);
  assert_int_equal(v.i, 16777216);
  assert_int_equal(v.set, 0);
  assert_int_equal(def_rc(LG_OPT_DURATION, NULL, "1m30s", &v), 0);
  assert_int_equal(v.i, 90000);
  assert_int_equal(def_rc(LG_OPT_INT, NULL, "-42", &v), 0);
  assert_int_equal(v.i, -42);
  assert_int_equal(def_rc(LG_OPT_INT, NULL, "9223372036854775807", &v), 0);
  assert_true(v.i == INT64_MAX);
  assert_int_equal(def_rc(LG_OPT_BOOL, NULL, "true", &v), 0);
  assert_int_equal(v.i, 1);
  assert_int_equal(def_rc(LG_OPT_BOOL, NULL, "false", &v), 0);
  assert_int_equal(v.i, 0);
  assert_int_equal(def_rc(LG_OPT_ENUM, "none|gzip", "gzip", &v), 0);
  assert_string_equal(v.s, "gzip");
  lg_optval_free(&v);
  assert_null(v.s);
  assert_int_equal(def_rc(LG_OPT_STRING, NULL, "0640", &v), 0);
  assert_string_equal(v.s, "0640");
  lg_optval_free(&v);
  assert_int_equal(def_rc(LG_OPT_STRLIST, NULL, "/var/log/*.log", &v), 0);
  assert_int_equal(v.n, 1);
  assert_string_equal(v.vals[0], "/var/log/*.log");
  lg_optval_free(&v);
  /* No default: an empty value. */
  memset(&v, 0x5a, sizeof v);
  assert_int_equal(def_rc(LG_OPT_STRING, NULL, NULL, &v), 0);
  assert_null(v.s);
  assert_int_equal(v.i, 0);
  assert_int_equal(v.n, 0);
  assert_int_equal(v.set, 0);

  expect_def_error(LG_OPT_INT, NULL, "12x", "expected an integer, got \"12x\"");
  expect_def_error(LG_OPT_INT, NULL, "", "expected an integer, got \"\"");
  expect_def_error(LG_OPT_INT, NULL, "9223372036854775808",
                   "expected an integer, got \"9223372036854775808\"");
  expect_def_error(LG_OPT_BOOL, NULL, "yes", "expected a boolean, got \"yes\"");
  expect_def_error(LG_OPT_BOOL, NULL, "TRUE",
                   "expected a boolean, got \"TRUE\"");
  expect_def_error(LG_OPT_ENUM, "never|interval|always", "sometimes",
                   "expected one of \"never\", \"interval\", \"always\", got "
                   "\"sometimes\"");
  expect_def_error(LG_OPT_BYTES, NULL, "64Ki",
                   "invalid size \"64Ki\" (expected a number of bytes or a "
                   "string like \"64KiB\", \"1MiB\", \"2GB\")");
  expect_def_error(LG_OPT_BYTES, NULL, "99999999TiB",
                   "size \"99999999TiB\" is too large");
  expect_def_error(LG_OPT_DURATION, NULL, "5",
                   "invalid duration \"5\" (expected a number of milliseconds "
                   "or a string like \"500ms\", \"5s\", \"1m\")");
  expect_def_error(LG_OPT_DURATION, NULL, "9999999999999999h",
                   "duration \"9999999999999999h\" is too long");
  expect_def_error(LG_OPT_STRMAP, NULL, "a=b", "a map has no text form");
}

/* ---- Lua values ---- */

static lua_State *L;

static int setup_lua(void **state) {
  (void)state;
  L = luaL_newstate();
  return L == NULL ? -1 : 0;
}

static int teardown_lua(void **state) {
  (void)state;
  lua_close(L);
  L = NULL;
  return 0;
}

/* Parses the Lua expression `expr` as option `o`; returns the rc, with
 * the message in err. Checks the stack is left as it was. */
static int lua_parse(const lg_option_t *o, const char *expr, lg_optval_t *v) {
  char chunk[512];
  snprintf(chunk, sizeof chunk, "return %s", expr);
  if (luaL_dostring(L, chunk) != 0)
    fail_msg("lua: %s", lua_tostring(L, -1));
  int top = lua_gettop(L);
  err[0] = '\0';
  int rc = lg_opt_parse_lua(L, -1, o, "outputs.f.x", v, err, sizeof err);
  assert_int_equal(lua_gettop(L), top);
  lua_pop(L, 1);
  return rc;
}

static void expect_lua_error(const lg_option_t *o, const char *expr,
                             const char *want) {
  lg_optval_t v;
  assert_int_equal(lua_parse(o, expr, &v), -EINVAL);
  assert_string_equal(err, want);
  assert_int_equal(v.set, 0);
  assert_null(v.s);
  assert_null(v.vals);
  assert_null(v.keys);
}

static void test_lua_scalars(void **state) {
  (void)state;
  lg_optval_t v;
  lg_option_t o_int = {.name = "x", .type = LG_OPT_INT};
  assert_int_equal(lua_parse(&o_int, "-7", &v), 0);
  assert_int_equal(v.i, -7);
  assert_int_equal(v.set, 1);
  assert_int_equal(lua_parse(&o_int, "2^53", &v), 0);
  assert_int_equal(v.i, 9007199254740992LL);
  expect_lua_error(&o_int, "1.5", "outputs.f.x: expected an integer, got 1.5");
  expect_lua_error(
      &o_int, "2^63",
      "outputs.f.x: expected an integer, got 9.2233720368547758e+18");
  expect_lua_error(&o_int, "'5'",
                   "outputs.f.x: expected an integer, got string");

  lg_option_t o_bool = {.name = "x", .type = LG_OPT_BOOL};
  assert_int_equal(lua_parse(&o_bool, "true", &v), 0);
  assert_int_equal(v.i, 1);
  assert_int_equal(lua_parse(&o_bool, "false", &v), 0);
  assert_int_equal(v.i, 0);
  assert_int_equal(v.set, 1);
  expect_lua_error(&o_bool, "'true'",
                   "outputs.f.x: expected a boolean, got string");
  expect_lua_error(&o_bool, "1", "outputs.f.x: expected a boolean, got number");

  lg_option_t o_bytes = {.name = "x", .type = LG_OPT_BYTES};
  assert_int_equal(lua_parse(&o_bytes, "'1MiB'", &v), 0);
  assert_int_equal(v.i, 1048576);
  assert_int_equal(lua_parse(&o_bytes, "4096.9", &v), 0);
  assert_int_equal(v.i, 4096);
  expect_lua_error(&o_bytes, "-1",
                   "outputs.f.x: size must be a number from 0 up, got -1");
  expect_lua_error(&o_bytes, "0/0",
                   "outputs.f.x: size must be a number from 0 up, got nan");
  expect_lua_error(&o_bytes, "1/0",
                   "outputs.f.x: size must be a number from 0 up, got inf");
  expect_lua_error(&o_bytes, "'lots'",
                   "outputs.f.x: invalid size \"lots\" (expected a number of "
                   "bytes or a string like \"64KiB\", \"1MiB\", \"2GB\")");
  expect_lua_error(
      &o_bytes, "{}",
      "outputs.f.x: expected a size (a number of bytes or a string "
      "like \"64KiB\", \"1MiB\", \"2GB\"), got table");

  lg_option_t o_dur = {.name = "x", .type = LG_OPT_DURATION};
  assert_int_equal(lua_parse(&o_dur, "'1m30s'", &v), 0);
  assert_int_equal(v.i, 90000);
  assert_int_equal(lua_parse(&o_dur, "250", &v), 0);
  assert_int_equal(v.i, 250);
  expect_lua_error(&o_dur, "'5 minutes'",
                   "outputs.f.x: invalid duration \"5 minutes\" (expected a "
                   "number of milliseconds or a string like \"500ms\", \"5s\", "
                   "\"1m\")");
  expect_lua_error(&o_dur, "'99999999999999h'",
                   "outputs.f.x: duration \"99999999999999h\" is too long");
  expect_lua_error(&o_dur, "true",
                   "outputs.f.x: expected a duration (a number of milliseconds "
                   "or a string like \"500ms\", \"5s\", \"1m\"), got boolean");

  lg_option_t o_enum = {
      .name = "x", .type = LG_OPT_ENUM, .choices = "never|interval|always"};
  assert_int_equal(lua_parse(&o_enum, "'always'", &v), 0);
  assert_string_equal(v.s, "always");
  lg_optval_free(&v);
  expect_lua_error(&o_enum, "'sometimes'",
                   "outputs.f.x: expected one of \"never\", \"interval\", "
                   "\"always\", got \"sometimes\"");
  expect_lua_error(&o_enum, "2",
                   "outputs.f.x: expected one of \"never\", \"interval\", "
                   "\"always\", got number");

  lg_option_t o_str = {
      .name = "x", .type = LG_OPT_STRING, .check = lg_opt_check_nonempty};
  assert_int_equal(lua_parse(&o_str, "'hello'", &v), 0);
  assert_string_equal(v.s, "hello");
  lg_optval_free(&v);
  expect_lua_error(&o_str, "''", "outputs.f.x: must not be empty");
  expect_lua_error(&o_str, "'a\\0b'",
                   "outputs.f.x: string contains a NUL byte");
  expect_lua_error(&o_str, "nil", "outputs.f.x: expected a string, got nil");

  lg_option_t o_pos = {
      .name = "x", .type = LG_OPT_DURATION, .check = lg_opt_check_positive};
  expect_lua_error(&o_pos, "0", "outputs.f.x: must be greater than 0");
  expect_lua_error(&o_pos, "'0.5ms'", "outputs.f.x: must be greater than 0");
  assert_int_equal(lua_parse(&o_pos, "'1ms'", &v), 0);
  assert_int_equal(v.i, 1);
}

static void test_lua_lists_maps(void **state) {
  (void)state;
  lg_optval_t v;
  lg_option_t o_list = {.name = "x", .type = LG_OPT_STRLIST};
  assert_int_equal(lua_parse(&o_list, "{'a', 'b', 'c'}", &v), 0);
  assert_int_equal(v.n, 3);
  assert_string_equal(v.vals[0], "a");
  assert_string_equal(v.vals[2], "c");
  lg_optval_free(&v);
  assert_int_equal(lua_parse(&o_list, "'only'", &v), 0);
  assert_int_equal(v.n, 1);
  assert_string_equal(v.vals[0], "only");
  lg_optval_free(&v);
  assert_int_equal(lua_parse(&o_list, "{}", &v), 0);
  assert_int_equal(v.n, 0);
  lg_optval_free(&v);
  expect_lua_error(&o_list, "{'a', 2}",
                   "outputs.f.x[2]: expected a string, got number");
  expect_lua_error(&o_list, "{'a', k = 'b'}",
                   "outputs.f.x: expected a list of strings, got a table with "
                   "other keys");
  expect_lua_error(&o_list, "{[1] = 'a', [3] = 'c'}",
                   "outputs.f.x: expected a list of strings, got a list with "
                   "holes");
  expect_lua_error(&o_list, "5",
                   "outputs.f.x: expected a list of strings, got number");

  lg_option_t o_map = {.name = "x", .type = LG_OPT_STRMAP};
  assert_int_equal(lua_parse(&o_map,
                             "{['linger.ms'] = 5, acks = 'all', b = true, "
                             "a = 1.5, z = -3}",
                             &v),
                   0);
  /* Sorted by key; numbers and booleans as text. */
  assert_int_equal(v.n, 5);
  const char *keys[] = {"a", "acks", "b", "linger.ms", "z"};
  const char *vals[] = {"1.5", "all", "true", "5", "-3"};
  for (size_t k = 0; k < 5; k++) {
    assert_string_equal(v.keys[k], keys[k]);
    assert_string_equal(v.vals[k], vals[k]);
  }
  lg_optval_free(&v);
  expect_lua_error(&o_map, "{'a'}",
                   "outputs.f.x: expected string keys, got a number key");
  expect_lua_error(&o_map, "{a = {}}",
                   "outputs.f.x.a: expected a string, number or boolean, got "
                   "table");
  expect_lua_error(&o_map, "'a=b'",
                   "outputs.f.x: expected a table of names to strings, numbers "
                   "or booleans, got string");
}

/* ---- a typed conf struct filled through a table's offsets ---- */

typedef struct conf {
  char *path;
  int level;
  int64_t max_bytes;
  int64_t timeout_ms;
  int64_t count;
  int flag;
  lg_opt_strv_t paths;
  lg_opt_strmap_t props;
  char *maybe;
  int mode;
} conf_t;

static const lg_option_t conf_opts[] = {
    {.name = "path",
     .type = LG_OPT_PATH,
     .required = 1,
     .offset = offsetof(conf_t, path)},
    {.name = "level",
     .type = LG_OPT_ENUM,
     .def = "warn",
     .choices = "debug|info|warn|error",
     .offset = offsetof(conf_t, level)},
    {.name = "max_bytes",
     .type = LG_OPT_BYTES,
     .def = "16MiB",
     .offset = offsetof(conf_t, max_bytes)},
    {.name = "timeout",
     .type = LG_OPT_DURATION,
     .def = "1m30s",
     .offset = offsetof(conf_t, timeout_ms)},
    {.name = "count",
     .type = LG_OPT_INT,
     .def = "-3",
     .offset = offsetof(conf_t, count)},
    {.name = "flag",
     .type = LG_OPT_BOOL,
     .def = "true",
     .offset = offsetof(conf_t, flag)},
    {.name = "paths",
     .type = LG_OPT_STRLIST,
     .def = "/a",
     .offset = offsetof(conf_t, paths)},
    {.name = "props", .type = LG_OPT_STRMAP, .offset = offsetof(conf_t, props)},
    {.name = "maybe", .type = LG_OPT_STRING, .offset = offsetof(conf_t, maybe)},
    {.name = "mode",
     .type = LG_OPT_ENUM,
     .choices = "a|b",
     .offset = offsetof(conf_t, mode)},
    {.name = NULL},
};
#define NOPTS (sizeof conf_opts / sizeof conf_opts[0] - 1)

static void free_vals(lg_optval_t *vals) {
  for (size_t k = 0; k < NOPTS; k++)
    lg_optval_free(&vals[k]);
}

static void test_fill(void **state) {
  (void)state;
  lg_optval_t vals[NOPTS];
  for (size_t k = 0; k < NOPTS; k++)
    assert_int_equal(
        lg_opt_set_default(&conf_opts[k], &vals[k], err, sizeof err), 0);
  conf_t c;
  memset(&c, 0x5a, sizeof c);
  /* The required path has no value yet. */
  assert_int_equal(lg_opt_fill(conf_opts, vals, &c, err, sizeof err), -EINVAL);
  assert_string_equal(err, "path: required");

  /* Given values replace some defaults; the rest keep theirs. */
  lg_optval_free(&vals[0]);
  lg_optval_free(&vals[1]);
  assert_int_equal(lua_parse(&conf_opts[0], "'/var/log/out.log'", &vals[0]), 0);
  assert_int_equal(lua_parse(&conf_opts[1], "'error'", &vals[1]), 0);
  assert_int_equal(lua_parse(&conf_opts[3], "'2s'", &vals[3]), 0);
  assert_int_equal(lua_parse(&conf_opts[7], "{k = 'v'}", &vals[7]), 0);
  memset(&c, 0x5a, sizeof c);
  assert_int_equal(lg_opt_fill(conf_opts, vals, &c, err, sizeof err), 0);
  assert_string_equal(c.path, "/var/log/out.log");
  assert_ptr_equal(c.path, vals[0].s); /* borrowed, not copied */
  assert_int_equal(c.level, 3);
  assert_int_equal(c.max_bytes, 16777216);
  assert_int_equal(c.timeout_ms, 2000);
  assert_int_equal(c.count, -3);
  assert_int_equal(c.flag, 1);
  assert_int_equal(c.paths.n, 1);
  assert_string_equal(c.paths.v[0], "/a");
  assert_int_equal(c.props.n, 1);
  assert_string_equal(c.props.keys[0], "k");
  assert_string_equal(c.props.vals[0], "v");
  assert_null(c.maybe);
  assert_int_equal(c.mode, -1); /* an enum without a value */
  free_vals(vals);
}

/* Required options of every type: without a value each is reported, by
 * name; with one, none is. */
static void test_fill_required(void **state) {
  (void)state;
  typedef struct {
    int64_t n;
    int b;
    lg_opt_strv_t l;
    lg_opt_strmap_t m;
    int e;
  } req_t;
  const lg_option_t req[] = {
      {.name = "n",
       .type = LG_OPT_DURATION,
       .required = 1,
       .offset = offsetof(req_t, n)},
      {.name = "b",
       .type = LG_OPT_BOOL,
       .required = 1,
       .offset = offsetof(req_t, b)},
      {.name = "l",
       .type = LG_OPT_STRLIST,
       .required = 1,
       .offset = offsetof(req_t, l)},
      {.name = "m",
       .type = LG_OPT_STRMAP,
       .required = 1,
       .offset = offsetof(req_t, m)},
      {.name = "e",
       .type = LG_OPT_ENUM,
       .choices = "x|y",
       .required = 1,
       .offset = offsetof(req_t, e)},
      {.name = NULL},
  };
  const char *given[] = {"0", "false", "{'p'}", "{k = 1}", "'y'"};
  lg_optval_t vals[5];
  req_t r;
  for (size_t missing = 0; missing < 5; missing++) {
    for (size_t k = 0; k < 5; k++) {
      if (k == missing)
        assert_int_equal(lg_opt_set_default(&req[k], &vals[k], err, sizeof err),
                         0);
      else
        assert_int_equal(lua_parse(&req[k], given[k], &vals[k]), 0);
    }
    char want[32];
    snprintf(want, sizeof want, "%s: required", req[missing].name);
    assert_int_equal(lg_opt_fill(req, vals, &r, err, sizeof err), -EINVAL);
    assert_string_equal(err, want);
    for (size_t k = 0; k < 5; k++)
      lg_optval_free(&vals[k]);
  }
  /* All given: a zero duration and false are values, not missing. */
  for (size_t k = 0; k < 5; k++)
    assert_int_equal(lua_parse(&req[k], given[k], &vals[k]), 0);
  memset(&r, 0x5a, sizeof r);
  assert_int_equal(lg_opt_fill(req, vals, &r, err, sizeof err), 0);
  assert_int_equal(r.n, 0);
  assert_int_equal(r.b, 0);
  assert_int_equal(r.l.n, 1);
  assert_string_equal(r.m.vals[0], "1");
  assert_int_equal(r.e, 1);
  for (size_t k = 0; k < 5; k++)
    lg_optval_free(&vals[k]);
}

/* The config loader's use of a real table (the file output): unknown
 * keys, a missing required key, bad values with the key path, and the
 * defaults that fill the rest. */
static void test_output_table(void **state) {
  (void)state;
  const char *unknown[] = {"path", "/tmp/x", "fsynk", "never", NULL};
  assert_null(lg_config_output_new("f", "file", unknown, err, sizeof err));
  assert_string_equal(err, "outputs.f.fsynk: unknown key");
  const char *none[] = {NULL};
  assert_null(lg_config_output_new("f", "file", none, err, sizeof err));
  assert_string_equal(err, "outputs.f.path: required key missing");
  const char *bad_enum[] = {"path", "/tmp/x", "fsync", "sometimes", NULL};
  assert_null(lg_config_output_new("f", "file", bad_enum, err, sizeof err));
  assert_string_equal(err, "outputs.f.fsync: expected one of \"never\", "
                           "\"interval\", \"always\", got \"sometimes\"");
  const char *bad_dur[] = {"path", "/tmp/x", "fsync_interval", "0s", NULL};
  assert_null(lg_config_output_new("f", "file", bad_dur, err, sizeof err));
  assert_string_equal(err, "outputs.f.fsync_interval: must be greater than 0");

  const char *good[] = {"path", "/tmp/x", "fsync", "always", NULL};
  lg_conf_output_t *o =
      lg_config_output_new("f", "file", good, err, sizeof err);
  assert_non_null(o);
  const lg_option_t *opts = o->vt->options;
  int p = lg_opt_find(opts, "path"), f = lg_opt_find(opts, "fsync");
  int fi = lg_opt_find(opts, "fsync_interval");
  assert_true(p >= 0 && f >= 0 && fi >= 0);
  assert_string_equal(o->opts[p].s, "/tmp/x");
  assert_int_equal(o->opts[p].set, 1);
  assert_string_equal(o->opts[f].s, "always");
  assert_int_equal(o->opts[fi].i, 1000); /* default "1s" */
  assert_int_equal(o->opts[fi].set, 0);
  lg_config_output_free(o);
}

/* "unknown key (did you mean ...?)": one edit away for short names, two
 * for names of 6 bytes or more; a swap of neighbours is one edit; case is
 * ignored; nothing when none is that close or two are equally close. */
static void test_closest_name(void **state) {
  (void)state;
  static const char *const names[] = {"read_from", "format", "paths", "type",
                                      "exclude",   "port",   "path",  NULL};
  assert_string_equal(lg_opt_closest_name(names, "read_form"), "read_from");
  assert_string_equal(lg_opt_closest_name(names, "readfrom"), "read_from");
  assert_string_equal(lg_opt_closest_name(names, "Format"), "format");
  assert_string_equal(lg_opt_closest_name(names, "fromat"), "format");
  assert_string_equal(lg_opt_closest_name(names, "tpye"), "type");
  assert_string_equal(lg_opt_closest_name(names, "exclud"), "exclude");
  assert_string_equal(lg_opt_closest_name(names, "prot"), "port");
  assert_string_equal(lg_opt_closest_name(names, "pth"), "path");
  assert_null(lg_opt_closest_name(names, "pats")); /* path or paths: a tie */
  assert_null(lg_opt_closest_name(names, "colour"));
  assert_null(lg_opt_closest_name(names, "ty"));
  assert_null(lg_opt_closest_name(names, ""));
  assert_null(lg_opt_closest_name(names, "read_from_tail_now"));
  static const char *const two[] = {"pathx", "pathy", NULL};
  assert_null(lg_opt_closest_name(two, "path")); /* a tie again */
  char err[256];
  const char *good[] = {"path", "/tmp/x", NULL};
  lg_conf_output_t *o =
      lg_config_output_new("f", "file", good, err, sizeof err);
  assert_non_null(o);
  assert_string_equal(lg_opt_closest(o->vt->options, "fsynk"), "fsync");
  assert_string_equal(lg_opt_closest(o->vt->options, "max_inflight"),
                      "max_in_flight");
  lg_config_output_free(o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_closest_name),
      cmocka_unit_test(test_parse_bytes),
      cmocka_unit_test(test_parse_duration),
      cmocka_unit_test(test_parse_enum_find),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_lua_scalars),
      cmocka_unit_test(test_lua_lists_maps),
      cmocka_unit_test(test_fill),
      cmocka_unit_test(test_fill_required),
      cmocka_unit_test(test_output_table),
  };
  return cmocka_run_group_tests(tests, setup_lua, teardown_lua);
}
