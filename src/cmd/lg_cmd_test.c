/*
 * lg_cmd_test.c - `lugger test SCRIPT [SAMPLE...] [options]`: runs one
 * script over sample logs with no config and prints each kept record's
 * JSON line, exactly as an output would encode it (DESIGN.md, "Command
 * line").
 *
 * Samples are framed by the collector's own framing (lg_sample.h), or
 * read as one JSON object per line with --format json; each sample's path
 * (as given) is its log.file.path metadata; no sample means stdin. The
 * script runs in the same sandbox and driver as in the collector, in
 * batches of up to BATCH_RECORDS records. Route names need no config: each
 * name a script routes to gets an output of its own, "default" standing
 * for the pipeline's outputs.
 *
 * --expect FILE compares the kept records with a golden JSON-lines file as
 * parsed JSON objects (key order does not matter). A golden record without
 * "time" ignores the record's time (line-format samples get the time they
 * were read), and one without "log.file.path" ignores that (so goldens do
 * not depend on where the sample lies). Golden and kept records are
 * aligned as diff(1) aligns lines, so a record dropped or added shows as
 * that one record ("missing" / "unexpected") and a changed one as its
 * changed keys; a mismatch prints that diff and exits 1.
 *
 * The collector's watchdog runs too, with script_timeout's default: a
 * record the script is stuck on fails with "script_timeout: ...", and a
 * script the interrupt cannot stop ends the process (exit 1) with the
 * record's offset, instead of a hang.
 *
 * Standard output is the kept records only (users pipe it to jq): a
 * script's print() goes to standard error, each line prefixed with
 * "[<script>:<line>] " (LG_LUA_PRINT_STDERR).
 *
 * Exit status: 0 fine; 1 script errors (each printed on stderr), a load
 * error, a stuck script or a mismatch; 2 bad usage or an unreadable sample
 * or golden file.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cmd/lg_cmd.h"
#include "core/lg_buf.h"
#include "core/lg_json.h"
#include "core/lg_time.h"
#include "core/lg_util.h"
#include "framing/lg_framing.h"
#include "framing/lg_sample.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_lua.h"
#include "pipeline/lg_record_json.h"
#include "pipeline/lg_watchdog.h"

#define BATCH_RECORDS 1024
#define READ_CHUNK (64u << 10)
#define MAX_DIFFS 20
/* settings.script_timeout's default: a record the collector would
 * interrupt fails here too, instead of `lugger test` hanging on it. */
#define SCRIPT_TIMEOUT_MS 1000

typedef struct test_ctx {
  lg_lua_t *lua;
  lg_watch_t *watch;      /* the watchdog's view of the run, or NULL */
  lg_conf_pipeline_t *pc; /* "test", with the script, for its messages */
  int routes;             /* --routes */
  lg_buf_t out;           /* with --expect: the kept records' lines */
  int collect;            /* --expect given */
  size_t kept;            /* records printed / collected */
  size_t errors;          /* records failed by the script */
  const char *sample;     /* current sample, for messages */
  int compat; /* --compat fluent-bit: JSON samples' "log" is the body */
} test_ctx_t;

static void usage(FILE *f) {
  fputs(
      "usage: lugger test SCRIPT [SAMPLE...] [--format "
      "line|cri|docker|json|auto]\n"
      "                  [--routes] [--expect FILE] [--params JSON]\n"
      "                  [--compat fluent-bit --call FN [--compat-opt K=V]...\n"
      "                   [--tag TAG]]\n"
      "\n"
      "Runs SCRIPT over the sample logs (stdin without any) and prints each\n"
      "kept record as a JSON line; the script's print() goes to stderr.\n"
      "  --format F     how samples are framed (default auto); json reads one\n"
      "                 JSON object per line, its keys becoming fields\n"
      "  --routes       add \"@routes\": the outputs each record goes to\n"
      "                 (\"default\" = the pipeline's outputs)\n"
      "  --expect FILE  compare with a golden JSON-lines file; print a diff\n"
      "                 and exit 1 when they differ\n"
      "  --params JSON  the argument of the script's init(params)\n"
      "  --compat fluent-bit --call FN\n"
      "                 SCRIPT is a Fluent Bit Lua filter: call FN(tag,\n"
      "                 timestamp, record) for each record\n"
      "  --compat-opt K=V  a Fluent Bit filter option: time_as_table,\n"
      "                 type_int_key, type_array_key, enable_flb_null,\n"
      "                 protected_mode (repeatable)\n"
      "  --tag TAG      the filter's tag argument (default \"test\")\n",
      f);
}

/* Appends "@routes":[...] before the closing "}\n" of a record line. */
static int add_routes(test_ctx_t *c, lg_buf_t *line, const lg_rec_t *r) {
  line->len -= 2; /* "}\n" */
  int rc = 0;
  if (line->len > 1)
    rc |= lg_buf_putc(line, ',');
  rc |= lg_buf_append(line, "\"@routes\":[", 11);
  int first = 1;
  for (int k = 0; k < 64; k++) {
    if (!(r->routes & ((uint64_t)1 << k)))
      continue;
    const char *name = lg_lua_output_name(c->lua, k);
    char tmp[16];
    if (name == NULL) {
      snprintf(tmp, sizeof tmp, "#%d", k);
      name = tmp;
    }
    if (!first)
      rc |= lg_buf_putc(line, ',');
    first = 0;
    rc |= lg_json_append_string(line, name, strlen(name));
  }
  rc |= lg_buf_append(line, "]}\n", 3);
  return rc ? -ENOMEM : 0;
}

/* Runs the script over `b` and emits its kept records. */
static int run_batch(test_ctx_t *c, lg_batch_t *b) {
  if (b->n == 0)
    return 0;
  char err[1024];
  lg_watch_begin(c->watch, c->lua, b, c->pc);
  int lrc = lg_lua_run(c->lua, 0, b, err, sizeof err);
  lg_watch_end(c->watch);
  if (lrc != 0) {
    fprintf(stderr, "lugger test: %s: %s\n", c->sample, err);
    return -EIO;
  }
  lg_buf_t line = LG_BUF_INIT;
  int rc = 0;
  for (uint32_t i = 0; i < b->n && rc == 0; i++) {
    const lg_rec_t *r = &b->recs[i];
    if (r->flags & LG_REC_FAILED) {
      c->errors++;
      uint32_t elen;
      const char *etext = lg_batch_rec_error(b, i, &elen);
      fprintf(stderr, "error: %.*s\n", (int)elen, etext);
      continue;
    }
    if (r->flags & LG_REC_DROPPED)
      continue;
    line.len = 0;
    rc = lg_json_encode_record(&line, b, i);
    if (rc == 0 && c->routes)
      rc = add_routes(c, &line, r);
    if (rc != 0)
      break;
    c->kept++;
    if (c->collect)
      rc = lg_buf_append(&c->out, line.data, line.len);
    else if (fwrite(line.data, 1, line.len, stdout) != line.len)
      rc = -EIO;
  }
  lg_buf_free(&line);
  if (rc == -ENOMEM)
    fprintf(stderr, "lugger test: out of memory\n");
  return rc;
}

/* The watchdog's second stage: the interrupt did not stop the script (a
 * loop LuaJIT compiled, a long C call), so nothing will; the collector
 * would abandon the worker. Runs on the watchdog thread: say so and end
 * the process, as the stuck thread cannot be stopped. */
static void on_stuck(void *ud, const lg_watchdog_stall_t *s) {
  (void)ud;
  fflush(stdout);
  fprintf(stderr,
          "error: %s: stuck on the record at %s offset %" PRIu64
          " for %.1f s: the script_timeout interrupt did not stop it (a "
          "loop LuaJIT compiled, or a long C call such as string.rep); "
          "lugger run would abandon the worker and hold the file\n",
          s->script[0] ? s->script : "the script",
          s->path[0] ? s->path : "the sample", s->offset,
          (double)s->stalled_ms / 1000.0);
  _exit(1);
}

/* ---- samples ------------------------------------------------------------ */

/* Reads a sample and runs the script over its records, framed by
 * lg_sample (the same records `lugger repl` and lugger.testing see).
 * Returns 0, or a negative value when the run cannot go on (reported). */
static int run_sample(test_ctx_t *c, const char *path, int format) {
  int is_stdin = strcmp(path, "-") == 0;
  FILE *f = is_stdin ? stdin : fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "lugger test: %s: cannot open sample: %s\n", path,
            strerror(errno));
    return -ENOENT;
  }
  c->sample = is_stdin ? "<stdin>" : path;
  lg_sample_t *s = lg_sample_create(format, is_stdin ? NULL : path,
                                    is_stdin ? 0 : strlen(path));
  lg_sample_set_log_body(s, c->compat);
  lg_batch_t *b = lg_batch_create(1 << 20);
  char *chunk = malloc(READ_CHUNK);
  char err[512] = "";
  int rc = (s == NULL || b == NULL || chunk == NULL) ? -ENOMEM : 0;
  if (rc == 0)
    lg_sample_begin(s, b);
  while (rc == 0) {
    size_t n = fread(chunk, 1, READ_CHUNK, f);
    if (n == 0) {
      if (ferror(f)) {
        fprintf(stderr, "lugger test: %s: read error: %s\n", c->sample,
                strerror(errno));
        rc = -EIO;
      }
      break;
    }
    rc = lg_sample_feed(s, chunk, n, lg_time_now_ns(), b, err, sizeof err);
    if (rc == 0 && b->n >= BATCH_RECORDS) {
      rc = run_batch(c, b);
      lg_sample_begin(s, b);
    }
  }
  if (rc == 0)
    rc = lg_sample_finish(s, lg_time_now_ns(), b, err, sizeof err);
  if (rc == 0)
    rc = run_batch(c, b);
  if (rc == -EINVAL)
    fprintf(stderr, "lugger test: %s\n", err);
  else if (rc == -ENOMEM || rc == -E2BIG)
    fprintf(stderr, "lugger test: %s: out of memory\n", c->sample);
  free(chunk);
  lg_batch_destroy(b);
  lg_sample_destroy(s);
  if (!is_stdin)
    fclose(f);
  return rc;
}

/* ---- --expect ----------------------------------------------------------- */

/* Splits text into non-blank lines (in place). */
static size_t split_lines(char *text, size_t len, char ***out) {
  size_t n = 0, cap = 0;
  char **lines = NULL;
  char *p = text, *end = text + len;
  while (p < end) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *e = nl ? nl : end;
    if (e > p && e[-1] == '\r')
      e[-1] = '\0';
    *e = '\0';
    char *q = p;
    while (*q == ' ' || *q == '\t')
      q++;
    if (*q != '\0') {
      if (LG_GROW(lines, cap, n + 1, 64) != 0)
        break;
      lines[n++] = p;
    }
    if (nl == NULL)
      break;
    p = nl + 1;
  }
  *out = lines;
  return n;
}

static void print_value(const char *prefix, const char *key, const cJSON *v) {
  char *s = v ? cJSON_PrintUnformatted(v) : NULL;
  printf("    %s %s: %s\n", prefix, key, s ? s : "(absent)");
  cJSON_free(s);
}

/* Keys a golden record may leave out: they then match anything. */
static int optional_key(const char *key) {
  return strcmp(key, "time") == 0 || strcmp(key, "log.file.path") == 0;
}

/* Whether kept record `got` matches golden record `want`: the same keys
 * and values (in any order), except optional keys `want` leaves out. */
static int records_match(const cJSON *want, const cJSON *got) {
  for (const cJSON *w = want->child; w != NULL; w = w->next) {
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(got, w->string);
    if (g == NULL || !cJSON_Compare(w, g, 1))
      return 0;
  }
  for (const cJSON *g = got->child; g != NULL; g = g->next)
    if (!optional_key(g->string) &&
        cJSON_GetObjectItemCaseSensitive(want, g->string) == NULL)
      return 0;
  return 1;
}

/* Prints how `got` differs from `want`, key by key. */
static void print_diff(const cJSON *want, const cJSON *got) {
  for (const cJSON *w = want->child; w != NULL; w = w->next) {
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(got, w->string);
    if (g == NULL) {
      print_value("missing", w->string, w);
    } else if (!cJSON_Compare(w, g, 1)) {
      print_value("expected", w->string, w);
      print_value("     got", w->string, g);
    }
  }
  for (const cJSON *g = got->child; g != NULL; g = g->next)
    if (!optional_key(g->string) &&
        cJSON_GetObjectItemCaseSensitive(want, g->string) == NULL)
      print_value("unexpected", g->string, g);
}

/* Parses each line as JSON (NULL where it is not). */
static cJSON **parse_lines(char **lines, size_t n) {
  cJSON **v = calloc(n ? n : 1, sizeof *v);
  for (size_t k = 0; v != NULL && k < n; k++)
    v[k] = cJSON_Parse(lines[k]);
  return v;
}

static void free_parsed(cJSON **v, size_t n) {
  for (size_t k = 0; v != NULL && k < n; k++)
    cJSON_Delete(v[k]);
  free(v);
}

/* Golden and kept records are aligned as a diff aligns lines (a longest
 * common subsequence of matching records), so that one record dropped or
 * added shows as that one record, not as every later record differing.
 * Alignment costs (records after the common prefix)^2 comparisons, so
 * beyond this many the records are paired by position. */
#define ALIGN_MAX_CELLS (1u << 18)

typedef struct diff_out {
  size_t diffs;      /* differing, missing or unexpected records */
  char **want_lines; /* golden record texts */
  char **got_lines;  /* kept record texts */
} diff_out_t;

/* Reports the unmatched golden records want[w0, w1) and kept records
 * got[g0, g1) between two matches: pairs first, then the rest. */
static void report_gap(diff_out_t *d, cJSON **want, cJSON **got, size_t w0,
                       size_t w1, size_t g0, size_t g1) {
  while (w0 < w1 || g0 < g1) {
    if (d->diffs++ >= MAX_DIFFS) {
      w0 += w0 < w1;
      g0 += g0 < g1;
      continue;
    }
    if (w0 < w1 && g0 < g1) {
      if (w0 == g0)
        printf("record %zu differs:\n", g0 + 1);
      else
        printf("record %zu differs (expected record %zu):\n", g0 + 1, w0 + 1);
      print_diff(want[w0], got[g0]);
      w0++;
      g0++;
    } else if (w0 < w1) {
      printf("record %zu: missing; expected %s\n", w0 + 1, d->want_lines[w0]);
      w0++;
    } else {
      printf("record %zu: unexpected %s\n", g0 + 1, d->got_lines[g0]);
      g0++;
    }
  }
}

/* Aligns want[0, nw) with got[0, ng) and reports the differences. */
static void align_and_report(diff_out_t *d, cJSON **want, size_t nw,
                             cJSON **got, size_t ng) {
  size_t p = 0;
  while (p < nw && p < ng && records_match(want[p], got[p]))
    p++;
  size_t mw = nw - p, mg = ng - p;
  uint32_t *len = NULL; /* len[i][j]: LCS of want[p+i..] and got[p+j..] */
  unsigned char *eq = NULL;
  size_t cols = mg + 1;
  if (mw > 0 && mg > 0 && mw * mg <= ALIGN_MAX_CELLS) {
    len = calloc((mw + 1) * cols, sizeof *len);
    eq = calloc(mw * mg, 1);
  }
  if (len == NULL || eq == NULL) {
    free(len);
    free(eq);
    report_gap(d, want, got, p, nw, p, ng);
    return;
  }
  for (size_t i = mw; i-- > 0;)
    for (size_t j = mg; j-- > 0;) {
      eq[i * mg + j] = (unsigned char)records_match(want[p + i], got[p + j]);
      uint32_t best = eq[i * mg + j] ? len[(i + 1) * cols + j + 1] + 1 : 0;
      uint32_t a = len[(i + 1) * cols + j], b = len[i * cols + j + 1];
      if (a > best)
        best = a;
      if (b > best)
        best = b;
      len[i * cols + j] = best;
    }
  /* Walk forwards, taking a match as soon as it lies on a longest path. */
  size_t i = 0, j = 0, gw = 0, gg = 0;
  while (i < mw && j < mg) {
    if (eq[i * mg + j] &&
        len[i * cols + j] == len[(i + 1) * cols + j + 1] + 1) {
      report_gap(d, want, got, p + gw, p + i, p + gg, p + j);
      i++;
      j++;
      gw = i;
      gg = j;
    } else if (len[(i + 1) * cols + j] >= len[i * cols + j + 1]) {
      i++;
    } else {
      j++;
    }
  }
  report_gap(d, want, got, p + gw, nw, p + gg, ng);
  free(len);
  free(eq);
}

/* Compares the collected records with the golden file. Returns 0 when
 * they match, 1 when not, 2 when the golden file cannot be used. */
static int compare_expect(test_ctx_t *c, const char *golden) {
  char *gtext = NULL;
  size_t glen = 0;
  int src = lg_util_read_file(golden, 0, &gtext, &glen);
  if (src != 0) {
    fprintf(stderr, "lugger test: %s: cannot open golden file: %s\n", golden,
            strerror(-src));
    return 2;
  }
  lg_buf_putc(&c->out, '\0');
  char **want_l = NULL, **got_l = NULL;
  size_t nwant = split_lines(gtext, glen, &want_l);
  size_t ngot = split_lines(c->out.data ? c->out.data : "",
                            c->out.len ? c->out.len - 1 : 0, &got_l);
  cJSON **want = parse_lines(want_l, nwant);
  cJSON **got = parse_lines(got_l, ngot);
  int rc = 0;
  if (want == NULL || got == NULL) {
    fprintf(stderr, "lugger test: out of memory\n");
    rc = 2;
  }
  for (size_t k = 0; rc == 0 && k < nwant; k++)
    if (!cJSON_IsObject(want[k])) {
      fprintf(stderr, "lugger test: %s: record %zu is not a JSON object\n",
              golden, k + 1);
      rc = 2;
    }
  for (size_t k = 0; rc == 0 && k < ngot; k++)
    if (!cJSON_IsObject(got[k])) {
      fprintf(stderr, "lugger test: kept record %zu: cannot parse it back\n",
              k + 1);
      rc = 2;
    }
  if (rc == 0) {
    diff_out_t d = {.want_lines = want_l, .got_lines = got_l};
    align_and_report(&d, want, nwant, got, ngot);
    if (d.diffs == 0) {
      printf("%zu records match %s\n", ngot, golden);
    } else {
      rc = 1;
      if (d.diffs > MAX_DIFFS)
        printf("... and %zu more differing records\n", d.diffs - MAX_DIFFS);
      printf("%zu of %zu records differ from %s (%zu kept, %zu expected)\n",
             d.diffs, nwant > ngot ? nwant : ngot, golden, ngot, nwant);
    }
  }
  free_parsed(want, nwant);
  free_parsed(got, ngot);
  free(want_l);
  free(got_l);
  free(gtext);
  return rc;
}

/* ---- main ---------------------------------------------------------------- */

int lg_cmd_test(int argc, char **argv) {
  const char *script = NULL, *expect = NULL, *params = NULL;
  const char *compat = NULL, *call = NULL;
  cJSON *copts = cJSON_CreateObject();
  int format = LG_FORMAT_AUTO, routes = 0;
  const char **samples = calloc((size_t)argc + 1, sizeof *samples);
  size_t nsamples = 0;
  if (samples == NULL || copts == NULL) {
    free(samples);
    cJSON_Delete(copts);
    return 2;
  }
  for (int k = 1; k < argc; k++) {
    const char *a = argv[k];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      free(samples);
      cJSON_Delete(copts);
      return 0;
    } else if (strcmp(a, "--routes") == 0) {
      routes = 1;
    } else if (strcmp(a, "--format") == 0 || strcmp(a, "--expect") == 0 ||
               strcmp(a, "--params") == 0 || strcmp(a, "--compat") == 0 ||
               strcmp(a, "--call") == 0 || strcmp(a, "--compat-opt") == 0 ||
               strcmp(a, "--tag") == 0) {
      if (k + 1 >= argc) {
        fprintf(stderr, "lugger test: %s needs a value\n", a);
        free(samples);
        cJSON_Delete(copts);
        return 2;
      }
      const char *v = argv[++k];
      if (strcmp(a, "--expect") == 0) {
        expect = v;
      } else if (strcmp(a, "--compat") == 0) {
        if (strcmp(v, "fluent-bit") != 0) {
          fprintf(stderr, "lugger test: unknown compat '%s' (fluent-bit)\n", v);
          free(samples);
          cJSON_Delete(copts);
          return 2;
        }
        compat = v;
      } else if (strcmp(a, "--call") == 0) {
        call = v;
      } else if (strcmp(a, "--compat-opt") == 0 || strcmp(a, "--tag") == 0) {
        const char *eq = strchr(v, '=');
        char key[64];
        const char *val = v;
        if (strcmp(a, "--tag") == 0) {
          snprintf(key, sizeof key, "tag");
        } else if (eq == NULL || eq == v || (size_t)(eq - v) >= sizeof key) {
          fprintf(stderr,
                  "lugger test: --compat-opt takes KEY=VALUE, not '%s'\n", v);
          free(samples);
          cJSON_Delete(copts);
          return 2;
        } else {
          memcpy(key, v, (size_t)(eq - v));
          key[eq - v] = '\0';
          val = eq + 1;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(copts, key);
        cJSON_AddStringToObject(copts, key, val);
      } else if (strcmp(a, "--params") == 0) {
        params = v;
      } else if (strcmp(v, "json") == 0) {
        format = LG_SAMPLE_JSON;
      } else {
        lg_format_t fmt;
        if (lg_format_parse(v, &fmt) != 0) {
          fprintf(stderr,
                  "lugger test: unknown format '%s' (line, cri, docker, json, "
                  "auto)\n",
                  v);
          free(samples);
          cJSON_Delete(copts);
          return 2;
        }
        format = (int)fmt;
      }
    } else if (a[0] == '-' && a[1] == '-') {
      fprintf(stderr, "lugger test: unknown option %s\n\n", a);
      usage(stderr);
      free(samples);
      cJSON_Delete(copts);
      return 2;
    } else if (script == NULL) {
      script = a;
    } else {
      samples[nsamples++] = a;
    }
  }
  if (script == NULL) {
    fprintf(stderr, "lugger test: which script? (lugger test SCRIPT "
                    "[SAMPLE...])\n\n");
    usage(stderr);
    free(samples);
    cJSON_Delete(copts);
    return 2;
  }
  if ((compat == NULL) != (call == NULL) ||
      (compat == NULL && copts->child != NULL)) {
    fprintf(stderr, "lugger test: --compat and --call go together; "
                    "--compat-opt and --tag need them\n");
    free(samples);
    cJSON_Delete(copts);
    return 2;
  }
  if (nsamples == 0)
    samples[nsamples++] = "-";
  for (size_t k = 0; k < nsamples; k++) {
    FILE *f = strcmp(samples[k], "-") == 0 ? NULL : fopen(samples[k], "rb");
    if (f == NULL && strcmp(samples[k], "-") != 0) {
      fprintf(stderr, "lugger test: %s: cannot open sample: %s\n", samples[k],
              strerror(errno));
      free(samples);
      cJSON_Delete(copts);
      return 2;
    }
    if (f != NULL)
      fclose(f);
  }

  static const char *const names[] = {"default"};
  lg_lua_opts_t o = {.output_names = names,
                     .noutputs = 1,
                     .flags = LG_LUA_DYNAMIC_ROUTES | LG_LUA_QUIET |
                              LG_LUA_PRINT_STDERR};
  char err[2048];
  test_ctx_t c = {.routes = routes,
                  .collect = expect != NULL,
                  .compat = compat != NULL,
                  .out = LG_BUF_INIT};
  c.lua = lg_lua_create(&o, err, sizeof err);
  if (c.lua == NULL) {
    fprintf(stderr, "lugger test: %s\n", err);
    free(samples);
    cJSON_Delete(copts);
    return 1;
  }
  char *copts_json = cJSON_PrintUnformatted(copts);
  cJSON_Delete(copts);
  copts = NULL;
  lg_lua_script_t s = {.path = script,
                       .params_json = params,
                       .compat = compat,
                       .call = call,
                       .compat_opts_json = compat ? copts_json : NULL};
  int arc = lg_lua_add_pipeline(c.lua, 0, "test", &s, 1, err, sizeof err);
  free(copts_json);
  if (arc != 0) {
    fprintf(stderr, "lugger test: %s\n", err);
    lg_lua_destroy(c.lua);
    free(samples);
    cJSON_Delete(copts);
    return 1;
  }
  /* The collector's watchdog, without poison markers (no state_dir). */
  lg_conf_script_t cs = {.path = (char *)script};
  lg_conf_pipeline_t pc = {
      .name = (char *)"test", .scripts = &cs, .nscripts = 1};
  lg_watchdog_opts_t wo = {.timeout_ms = SCRIPT_TIMEOUT_MS, .stuck = on_stuck};
  lg_watchdog_t *wd = lg_watchdog_create(&wo, err, sizeof err);
  c.pc = &pc;
  c.watch = lg_watchdog_watch(wd, 0);
  int rc = 0;
  for (size_t k = 0; k < nsamples && rc == 0; k++)
    if (run_sample(&c, samples[k], format) != 0)
      rc = 2;
  lg_watchdog_destroy(wd);
  fflush(stdout);
  if (rc == 0 && c.errors > 0) {
    fprintf(stderr, "%zu script error%s\n", c.errors, c.errors == 1 ? "" : "s");
    rc = 1;
  }
  if (expect != NULL && rc != 2) {
    int er = compare_expect(&c, expect);
    if (er != 0)
      rc = er;
  }
  fflush(stdout);
  lg_buf_free(&c.out);
  lg_lua_destroy(c.lua);
  free(samples);
  cJSON_Delete(copts);
  return rc;
}
