/* Unit tests: lg_lua, the production entry points (one lua_pcall per
 * batch), with scripts in real files; and the lg_ffi bounds checks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers/lg_test.h"

#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_lua.h"
#include "pipeline/lg_record_json.h"

static char dir[256];
static const char *last_script; /* path of the newest script */

/* Record i as its JSON line, NUL-terminated, in a static buffer. */
static const char *json_of(const lg_batch_t *b, uint32_t i) {
  static char out[4096];
  lg_buf_t buf = LG_BUF_INIT;
  assert_int_equal(lg_json_encode_record(&buf, b, i), 0);
  assert_true(buf.len < sizeof out);
  memcpy(out, buf.data, buf.len - 1); /* without "\n" */
  out[buf.len - 1] = '\0';
  lg_buf_free(&buf);
  return out;
}

static const char *const outputs[] = {"out", "errors"};

static lg_lua_t *state_with(const char *src, size_t memory_limit) {
  char err[512];
  lg_lua_opts_t o = {.output_names = outputs,
                     .noutputs = 2,
                     .memory_limit = memory_limit,
                     .flags = LG_LUA_QUIET};
  lg_lua_t *L = lg_lua_create(&o, err, sizeof err);
  assert_non_null(L);
  if (src != NULL) {
    lg_lua_script_t s = {.path = last_script = lg_test_script(dir, src),
                         .params_json = "{\"tag\":\"t1\"}"};
    int rc = lg_lua_add_pipeline(L, 0, "web", &s, 1, err, sizeof err);
    if (rc != 0)
      fail_msg("add_pipeline: %s", err);
  }
  return L;
}

static void test_run_fields_drop_route(void **state) {
  (void)state;
  lg_lua_t *L = state_with("local tag\n"
                           "function init(p) tag = p.tag end\n"
                           "function process(rec)\n"
                           "  if rec.body == 'drop' then return false end\n"
                           "  rec.tag = tag\n"
                           "  rec.n = 42\n"
                           "  if rec.body == 'err' then return 'errors' end\n"
                           "end\n",
                           0);
  const char *bodies[] = {"a", "drop", "err"};
  lg_batch_t *b = lg_test_batch_of(bodies, 3);
  char err[256];
  assert_int_equal(lg_lua_run(L, 0, b, err, sizeof err), 0);
  assert_string_equal(
      json_of(b, 0),
      "{\"time\":\"1970-01-01T00:00:00.000000000Z\",\"body\":\"a\","
      "\"log.file.path\":\"/var/log/t.log\",\"tag\":\"t1\",\"n\":42}");
  assert_true(b->recs[1].flags & LG_REC_DROPPED);
  assert_true(b->recs[2].flags & LG_REC_ROUTED);
  assert_int_equal(b->recs[2].routes, 2);
  assert_int_equal(b->recs[0].routes, 1);
  assert_int_equal(lg_lua_errors(L), 0);
  assert_string_equal(lg_lua_output_name(L, 1), "errors");
  assert_null(lg_lua_output_name(L, 2));
  lg_batch_destroy(b);
  lg_lua_destroy(L);
}

static void test_errors_are_per_record(void **state) {
  (void)state;
  lg_lua_t *L = state_with("function process(rec)\n"
                           "  if rec.body == 'bad' then error('boom') end\n"
                           "  rec.ok = true\n"
                           "end\n",
                           0);
  const char *bodies[] = {"a", "bad", "c"};
  lg_batch_t *b = lg_test_batch_of(bodies, 3);
  char err[256];
  assert_int_equal(lg_lua_run(L, 0, b, err, sizeof err), 0);
  assert_false(b->recs[0].flags & LG_REC_FAILED);
  assert_true(b->recs[1].flags & LG_REC_FAILED);
  assert_false(b->recs[2].flags & LG_REC_FAILED);
  char want[512];
  snprintf(want, sizeof want, "%s:2: boom (file /var/log/t.log offset 2)",
           last_script);
  assert_int_equal(b->recs[1].err_len, strlen(want));
  assert_memory_equal(b->data + b->recs[1].err_off, want, strlen(want));
  assert_int_equal(lg_lua_errors(L), 1);
  lg_batch_destroy(b);
  lg_lua_destroy(L);
}

static void test_no_scripts_passes_through(void **state) {
  (void)state;
  char err[256];
  lg_lua_t *L = state_with(NULL, 0);
  assert_int_equal(lg_lua_add_pipeline(L, 3, "empty", NULL, 0, err, sizeof err),
                   0);
  const char *bodies[] = {"a"};
  lg_batch_t *b = lg_test_batch_of(bodies, 1);
  assert_int_equal(lg_lua_run(L, 3, b, err, sizeof err), 0);
  assert_int_equal(lg_lua_run(L, 7, b, err, sizeof err), 0); /* never added */
  assert_int_equal(b->recs[0].flags, 0);
  assert_int_equal(b->nfields, 0);
  lg_batch_destroy(b);
  lg_lua_destroy(L);
}

static void test_load_errors(void **state) {
  (void)state;
  char err[512];
  lg_lua_t *L = state_with(NULL, 0);
  lg_lua_script_t s = {
      .path = lg_test_script(dir, "function process(rec)\n  if then\nend\n")};
  assert_true(lg_lua_add_pipeline(L, 0, "p", &s, 1, err, sizeof err) < 0);
  assert_non_null(strstr(err, ".lua:2:"));
  s.path = "/nonexistent/x.lua";
  assert_true(lg_lua_add_pipeline(L, 0, "p", &s, 1, err, sizeof err) < 0);
  assert_string_equal(
      err, "/nonexistent/x.lua: cannot read: No such file or directory");
  s.path = lg_test_script(
      dir, "function init() error('no') end function process() end");
  assert_true(lg_lua_add_pipeline(L, 0, "p", &s, 1, err, sizeof err) < 0);
  assert_non_null(strstr(err, ".lua:1: no"));
  lg_lua_destroy(L);
}

/* lg_lua_pipeline_digest: the same for the file and its text handed
 * over, different for another text or params, kept by a failed reload. */
static void test_pipeline_digest(void **state) {
  (void)state;
  char err[512];
  const char *src = "function process(rec) end\n";
  lg_lua_t *L = state_with(NULL, 0);
  assert_int_equal(lg_lua_pipeline_digest(L, 0), 0); /* never added */
  lg_lua_script_t s = {.path = lg_test_script(dir, src)};
  assert_int_equal(lg_lua_add_pipeline(L, 0, "p", &s, 1, err, sizeof err), 0);
  uint64_t d = lg_lua_pipeline_digest(L, 0);
  assert_true(d != 0);
  s.src = src;
  s.src_len = strlen(src);
  assert_int_equal(lg_lua_add_pipeline(L, 1, "p", &s, 1, err, sizeof err), 0);
  assert_true(lg_lua_pipeline_digest(L, 1) == d);
  s.src = "function process(rec) end -- v2\n";
  s.src_len = strlen(s.src);
  assert_int_equal(lg_lua_add_pipeline(L, 1, "p", &s, 1, err, sizeof err), 0);
  uint64_t d2 = lg_lua_pipeline_digest(L, 1);
  assert_true(d2 != d);
  s.params_json = "{\"a\":1}";
  assert_int_equal(lg_lua_add_pipeline(L, 1, "p", &s, 1, err, sizeof err), 0);
  assert_true(lg_lua_pipeline_digest(L, 1) != d2);
  d2 = lg_lua_pipeline_digest(L, 1);
  s.src = "function process(rec) if then end\n";
  s.src_len = strlen(s.src);
  assert_true(lg_lua_add_pipeline(L, 1, "p", &s, 1, err, sizeof err) < 0);
  assert_true(lg_lua_pipeline_digest(L, 1) == d2);
  lg_lua_destroy(L);
}

static void test_use_after_batch(void **state) {
  (void)state;
  lg_lua_t *L = state_with("local kept\n"
                           "function process(rec)\n"
                           "  if kept then rec.e = select(2, pcall(function() "
                           "return kept.body end)) end\n"
                           "  kept = rec\n"
                           "end\n",
                           0);
  const char *bodies[] = {"a"};
  char err[256];
  lg_batch_t *b1 = lg_test_batch_of(bodies, 1);
  assert_int_equal(lg_lua_run(L, 0, b1, err, sizeof err), 0);
  lg_batch_destroy(b1); /* ASan would catch a read of it */
  lg_batch_t *b2 = lg_test_batch_of(bodies, 1);
  assert_int_equal(lg_lua_run(L, 0, b2, err, sizeof err), 0);
  assert_non_null(
      strstr(json_of(b2, 0), "\"e\":\"record used after its batch is gone\""));
  lg_batch_destroy(b2);
  lg_lua_destroy(L);
}

/* Sets rec.ok on every record; on the one whose body is "hog" it first
 * allocates 1 KB strings until the state's memory limit stops it (line 2
 * of the script is `process`). */
#define HOG_SCRIPT                                                             \
  "local keep = {}\n"                                                          \
  "function process(rec)\n"                                                    \
  "  if rec.body == 'hog' then\n"                                              \
  "    for i = 1, 1e9 do keep[i] = string.rep('x', 1000) .. i end\n"           \
  "  end\n"                                                                    \
  "  rec.ok = true\n"                                                          \
  "end\n"

/* A script that hits the memory limit: its record fails with the script's
 * name, the run stops there with -ENOMEM and says where (lg_lua_oom_at),
 * and a new state resumes after that record. */
static void test_memory_limit(void **state) {
  (void)state;
  const char *src = HOG_SCRIPT;
  lg_lua_t *L = state_with(src, 16u << 20);
  const char *bodies[] = {"fine", "hog", "fine2"};
  lg_batch_t *b = lg_test_batch_of(bodies, 3);
  char err[256] = "";
  int script = -5;
  int64_t rec = -5;
  assert_int_equal(lg_lua_oom_at(L, &script, &rec), 0);
  assert_int_equal(lg_lua_run(L, 0, b, err, sizeof err), -ENOMEM);
  assert_int_equal(lg_lua_oom_at(L, &script, &rec), 1);
  assert_int_equal(script, 1);
  assert_int_equal(rec, 1);
  assert_int_equal(lg_lua_runs(L), 0);
  assert_false(b->recs[0].flags & LG_REC_FAILED);
  assert_non_null(strstr(json_of(b, 0), "\"ok\":true"));
  assert_true(b->recs[1].flags & LG_REC_FAILED);
  const char *e = b->data + b->recs[1].err_off;
  assert_non_null(strstr(e, ".lua:2: not enough memory"));
  assert_non_null(strstr(e, "offset"));
  assert_false(b->recs[2].flags & LG_REC_FAILED);
  assert_true(lg_lua_memory(L) <= (16u << 20) + (1u << 20));
  lg_lua_destroy(L);
  /* A new state resumes after the record. */
  L = state_with(src, 16u << 20);
  assert_int_equal(lg_lua_run_from(L, 0, b, 1, 2, err, sizeof err), 0);
  assert_int_equal(lg_lua_oom_at(L, &script, &rec), 0);
  assert_int_equal(lg_lua_runs(L), 1);
  assert_non_null(strstr(json_of(b, 2), "\"ok\":true"));
  lg_batch_destroy(b);
  lg_lua_destroy(L);
}

/* Where a script runs out of memory moves with the limit (and, from run
 * to run, with LuaJIT's randomised string hashing): at every point it
 * must end as a memory error of that record (-ENOMEM, lg_lua_oom_at on
 * the record, the record failed), never as a failure of the driver
 * (-EIO, which fails the whole batch and keeps the full state). Once,
 * the driver's first use of lg_ffi_mem_headroom resolved the FFI symbol
 * right then, an allocation that failed outside its xpcall: about 1 limit
 * in 6 here ended in -EIO, and test_memory_limit failed now and then. */
static void test_memory_limit_anywhere(void **state) {
  (void)state;
  const char *src = HOG_SCRIPT;
  const char *bodies[] = {"fine", "hog", "fine2"};
  for (int k = 0; k < 64; k++) {
    size_t limit = (4u << 20) + (size_t)k * 997; /* not a round step */
    lg_lua_t *L = state_with(src, limit);
    lg_batch_t *b = lg_test_batch_of(bodies, 3);
    char err[256] = "";
    int script = -5;
    int64_t rec = -5;
    int rc = lg_lua_run(L, 0, b, err, sizeof err);
    int at = lg_lua_oom_at(L, &script, &rec);
    int failed = (b->recs[1].flags & LG_REC_FAILED) != 0;
    lg_batch_destroy(b);
    lg_lua_destroy(L);
    if (rc != -ENOMEM || at != 1 || script != 1 || rec != 1 || !failed)
      fail_msg("limit %zu: run %d (%s), oom_at %d (script %d, record %lld), "
               "record failed %d; want -ENOMEM at script 1, record 1, failed",
               limit, rc, err, at, script, (long long)rec, failed);
  }
}

static void test_ffi_bounds(void **state) {
  (void)state;
  const char *bodies[] = {"a"};
  lg_batch_t *b = lg_test_batch_of(bodies, 1);
  lg_ffi_val_t v;
  assert_int_equal(lg_ffi_rec_get(b, 1, "body", 4, &v), -ERANGE);
  assert_int_equal(lg_ffi_rec_get(b, UINT32_MAX, "body", 4, &v), -ERANGE);
  assert_int_equal(lg_ffi_rec_set_str(b, 1, "k", 1, "v", 1), -ERANGE);
  assert_int_equal(lg_ffi_rec_set_int(b, 5, "k", 1, 1), -ERANGE);
  assert_int_equal(lg_ffi_rec_del(b, 1, "k", 1), -ERANGE);
  assert_int_equal(lg_ffi_rec_drop(b, 1), -ERANGE);
  assert_int_equal(lg_ffi_rec_route(b, 1, 0, 0), -ERANGE);
  assert_int_equal(lg_ffi_rec_route(b, 0, 64, 0), -EINVAL);
  assert_int_equal(lg_ffi_rec_route(b, 0, -1, 1), -EINVAL);
  assert_int_equal(lg_ffi_rec_fail(b, 1, "x", 1), -ERANGE);
  assert_int_equal(lg_ffi_rec_set_time(b, 1, 0), -ERANGE);
  assert_int_equal(lg_ffi_rec_set_time_str(b, 0, "nope", 4), -EINVAL);
  assert_int_equal(lg_ffi_rec_set_str(b, 0, NULL, 3, "v", 1), -EINVAL);
  assert_int_equal(lg_ffi_rec_get(NULL, 0, "body", 4, &v), -EINVAL);
  char id[8];
  assert_int_equal(lg_ffi_rec_id(b, 0, id, sizeof id), -ENOSPC);
  char id2[64];
  assert_int_equal(lg_ffi_rec_id(b, 0, id2, sizeof id2), 18);
  assert_string_equal(id2, "0000000000000000:0");
  assert_int_equal(lg_ffi_rec_get(b, 0, "log.file.path", 13, &v), LG_VAL_STR);
  assert_int_equal(v.len, 14);
  assert_int_equal(lg_ffi_rec_get(b, 0, "missing", 7, &v), LG_VAL_DELETED);
  lg_batch_destroy(b);
}

int main(void) {
  snprintf(dir, sizeof dir, "%s", lg_test_tmpdir("lg_test_lua_"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_run_fields_drop_route),
      cmocka_unit_test(test_errors_are_per_record),
      cmocka_unit_test(test_no_scripts_passes_through),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_pipeline_digest),
      cmocka_unit_test(test_use_after_batch),
      cmocka_unit_test(test_memory_limit),
      cmocka_unit_test(test_memory_limit_anywhere),
      cmocka_unit_test(test_ffi_bounds),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  if (lg_test_rmtree(dir) != 0)
    rc = rc ? rc : 1;
  return rc;
}
