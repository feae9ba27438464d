/*
 * bench_record.c - CPU cost per record of the worker's record path, by
 * stage, for the parse workloads of scripts/bench (not a test; run by hand
 * on a file that scripts/bench --keep left, or any file of such lines):
 *
 *   bench_record d FILE [N]   FILE: CRI lines of nginx "combined" access
 *                             logs; the message after the CRI prefix is
 *                             parsed as bench (d) does (rec:parse_regex
 *                             with a time:nginx group, health probes
 *                             answered 200 dropped, body removed)
 *   bench_record j FILE [N]   FILE: JSON lines; parsed as bench (j) does
 *                             (rec:parse_json, level "debug" dropped, body
 *                             removed)
 *
 * The first N lines (default 200,000) go into batches of 1 MiB, as the
 * file source hands them on; each batch is parsed record by record with
 * the C helpers the Lua methods call (no Lua: the FFI boundary is not
 * measured), then every record kept is encoded as its JSON line into one
 * output buffer, as the file output's payload is. Prints the CPU
 * nanoseconds per line of each stage: the least of 7 rounds, each timed
 * with the thread's CPU clock, so that other processes on a loaded
 * machine add little.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/lg_buf.h"
#include "pipeline/lg_batch.h"
#include "pipeline/lg_ffi.h"
#include "pipeline/lg_parse.h"
#include "pipeline/lg_record_json.h"
#include "pipeline/lg_regex.h"

#define BATCH_BYTES (1u << 20)
#define ROUNDS 7

static double cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static const char COMBINED[] =
    "^(?<remote_addr>\\S+) \\S+ (?<remote_user>\\S+) "
    "\\[(?<time_local>(?<time:nginx>[^\\]]+))\\] \"(?<method>\\S+) "
    "(?<path>\\S+) [^\"]*\" (?<status:int>\\d+) (?<body_bytes_sent:int>\\d+) "
    "\"(?<referer>[^\"]*)\" \"(?<user_agent>[^\"]*)\"";

typedef struct line {
  const char *p;
  size_t len;
} line_t;

static char err[256];

/* bench (d)'s script on record i. */
static void parse_d(lg_batch_t *b, uint32_t i, lg_regex_t *re) {
  if (lg_regex_rec(b, i, re, "", 0, err, sizeof err) <= 0)
    return;
  lg_ffi_val_t v;
  if (lg_ffi_rec_get(b, i, "status", 6, &v) == LG_VAL_INT && v.i == 200 &&
      lg_ffi_rec_get(b, i, "path", 4, &v) == LG_VAL_STR && v.len >= 7 &&
      memcmp(v.s, "/health", 7) == 0) {
    b->recs[i].flags |= LG_REC_DROPPED;
    return;
  }
  lg_batch_del(b, i, "body", 4);
}

/* bench (j)'s script on record i. */
static void parse_j(lg_batch_t *b, uint32_t i, lg_parse_scratch_t *s) {
  if (lg_ffi_parse_rec_json(b, i, "", 0, "", 0, "", 0, s, err, sizeof err) < 0)
    return;
  lg_ffi_val_t v;
  if (lg_ffi_rec_get(b, i, "level", 5, &v) == LG_VAL_STR && v.len == 5 &&
      memcmp(v.s, "debug", 5) == 0) {
    b->recs[i].flags |= LG_REC_DROPPED;
    return;
  }
  lg_batch_del(b, i, "body", 4);
}

int main(int argc, char **argv) {
  if (argc < 3 || (strcmp(argv[1], "d") != 0 && strcmp(argv[1], "j") != 0)) {
    fprintf(stderr, "usage: bench_record d|j FILE [LINES]\n");
    return 2;
  }
  int cri = argv[1][0] == 'd';
  size_t want = argc > 3 ? strtoul(argv[3], NULL, 10) : 200000;
  FILE *f = fopen(argv[2], "rb");
  if (f == NULL) {
    perror(argv[2]);
    return 1;
  }
  line_t *lines = calloc(want, sizeof *lines);
  size_t n = 0;
  char *l = NULL;
  size_t cap = 0;
  ssize_t got;
  while (n < want && (got = getline(&l, &cap, f)) > 0) {
    const char *p = l;
    size_t len = (size_t)got - (l[got - 1] == '\n');
    if (cri) { /* the message after "<stamp> <stream> <P|F> " */
      const char *e = p + len;
      for (int sp = 0; sp < 3 && p < e; sp++) {
        const char *q = memchr(p, ' ', (size_t)(e - p));
        p = q != NULL ? q + 1 : e;
      }
      len = (size_t)(e - p);
    }
    char *c = malloc(len ? len : 1);
    memcpy(c, p, len);
    lines[n++] = (line_t){c, len};
  }
  free(l);
  fclose(f);
  lg_regex_t *re = NULL;
  if (lg_regex_create(COMBINED, sizeof COMBINED - 1, 0, &re, err, sizeof err) !=
      0) {
    fprintf(stderr, "regex: %s\n", err);
    return 1;
  }
  lg_parse_scratch_t *s = NULL;
  lg_ffi_parse_scratch_create(&s);
  lg_batch_t *b = lg_batch_create(BATCH_BYTES + BATCH_BYTES / 4);
  /* The file source's metadata: the file's path. */
  lg_meta_t *meta = lg_meta_create();
  lg_meta_add_str(meta, "log.file.path", argv[2], strlen(argv[2]));
  lg_meta_seal(meta);
  lg_buf_t out = LG_BUF_INIT;
  double best_parse = 0, best_enc = 0;
  size_t bytes = 0;
  for (int round = 0; round < ROUNDS; round++) {
    double parse = 0, enc = 0;
    bytes = 0;
    for (size_t at = 0; at < n;) {
      lg_batch_reset(b);
      lg_batch_set_meta(b, meta);
      while (at < n && b->data_len < BATCH_BYTES) {
        lg_batch_add(b, lines[at].p, lines[at].len,
                     1763719200000000123 + (int64_t)at * 1000000, at * 300,
                     at * 300 + 300, LG_REC_HAS_STREAM);
        at++;
      }
      double t0 = cpu_ns();
      for (uint32_t i = 0; i < b->n; i++) {
        if (cri)
          parse_d(b, i, re);
        else
          parse_j(b, i, s);
      }
      double t1 = cpu_ns();
      out.len = 0;
      for (uint32_t i = 0; i < b->n; i++)
        if (!(b->recs[i].flags & LG_REC_DROPPED))
          lg_json_encode_record(&out, b, i);
      double t2 = cpu_ns();
      parse += t1 - t0;
      enc += t2 - t1;
      bytes += out.len;
    }
    if (round == 0 || parse < best_parse)
      best_parse = parse;
    if (round == 0 || enc < best_enc)
      best_enc = enc;
  }
  printf("%s: %zu lines, %.0f output bytes per line; CPU ns per line, least "
         "of %d rounds: parse %.1f, encode %.1f\n",
         argv[1], n, (double)bytes / (double)n, ROUNDS, best_parse / (double)n,
         best_enc / (double)n);
  lg_buf_free(&out);
  lg_batch_destroy(b);
  lg_meta_unref(meta);
  lg_ffi_parse_scratch_destroy(s);
  lg_regex_destroy(re);
  for (size_t k = 0; k < n; k++)
    free((void *)lines[k].p);
  free(lines);
  return 0;
}
