/*
 * bench_framing.c - CPU cost of framing per line (scripts/bench_framing.sh
 * builds and runs it; not a test).
 *
 * Builds in memory the workload of scripts/bench: nginx "combined" access
 * log lines of about 225 bytes, in CRI framing with 1% of records split
 * into P...F chunks and 0.1% malformed lines; and the same messages as
 * plain lines (and, for comparison, Docker json-file lines). Frames each
 * from 64 KiB reads, as the file source does, into batches of up to 1024
 * records or 1 MiB, reset when full, and prints CPU nanoseconds per line
 * (best of five rounds; docker: one).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "framing/lg_framing.h"
#include "pipeline/lg_batch.h"

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 32);
}

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct buf {
  char *p;
  size_t len, cap;
} buf_t;

static void put(buf_t *b, const char *s, size_t n) {
  if (b->len + n > b->cap) {
    while (b->len + n > b->cap)
      b->cap = b->cap ? b->cap * 2 : 1 << 20;
    b->p = realloc(b->p, b->cap);
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static const char *paths[] = {"/api/v1/users",
                              "/health",
                              "/static/js/app.5f3c1.js",
                              "/api/v1/orders/1234",
                              "/index.html",
                              "/health",
                              "/login",
                              "/health"};

static size_t nginx_line(char *out, uint64_t i) {
  const char *path = (i % 10 == 0) ? "/health" : paths[rnd() % 8];
  int status =
      (i % 10 == 0) ? 200 : (int[]){200, 201, 304, 404, 500}[rnd() % 5];
  return (size_t)sprintf(
      out,
      "10.%u.%u.%u - - [01/May/2024:12:%02u:%02u +0000] \"GET %s HTTP/1.1\" "
      "%d %u \"https://example.com/page\" \"Mozilla/5.0 (X11; Linux x86_64) "
      "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36\"",
      rnd() % 256, rnd() % 256, rnd() % 256, (unsigned)(i / 60000 % 60),
      (unsigned)(i / 1000 % 60), path, status, rnd() % 50000);
}

static void make(uint64_t nlines, buf_t *cri, buf_t *line, buf_t *docker) {
  char msg[512], hdr[64], js[1024];
  for (uint64_t i = 0; i < nlines; i++) {
    size_t n = nginx_line(msg, i);
    put(line, msg, n);
    put(line, "\n", 1);
    size_t jl = 0;
    jl += (size_t)sprintf(js, "{\"log\":\"");
    for (size_t k = 0; k < n; k++) {
      if (msg[k] == '"')
        js[jl++] = '\\';
      js[jl++] = msg[k];
    }
    jl += (size_t)sprintf(js + jl,
                          "\\n\",\"stream\":\"stdout\",\"time\":"
                          "\"2024-05-01T12:00:00.%09uZ\"}\n",
                          (unsigned)(i % 1000000000));
    put(docker, js, jl);
    uint64_t ns = 1714564800000000000ull + i * 1000;
    size_t hl = (size_t)sprintf(hdr, "2024-05-01T12:%02u:%02u.%09uZ stdout ",
                                (unsigned)(ns / 60000000000ull % 60),
                                (unsigned)(ns / 1000000000ull % 60),
                                (unsigned)(ns % 1000000000ull));
    if (i % 1000 == 999) { /* 0.1% malformed */
      put(cri, "garbage ", 8);
      put(cri, msg, n);
      put(cri, "\n", 1);
    } else if (i % 100 == 50) { /* 1% split into P...F */
      size_t half = n / 2;
      put(cri, hdr, hl);
      put(cri, "P ", 2);
      put(cri, msg, half);
      put(cri, "\n", 1);
      put(cri, hdr, hl);
      put(cri, "F ", 2);
      put(cri, msg + half, n - half);
      put(cri, "\n", 1);
    } else {
      put(cri, hdr, hl);
      put(cri, "F ", 2);
      put(cri, msg, n);
      put(cri, "\n", 1);
    }
  }
}

static double run(lg_format_t fmt, const buf_t *in, uint64_t *recs) {
  lg_framer_t *f = lg_framer_create(fmt, 1 << 20, 0);
  lg_batch_t *b = lg_batch_create(1 << 20);
  const size_t rd = 65536;
  *recs = 0;
  double t0 = cpu_s();
  for (size_t at = 0; at < in->len; at += rd) {
    size_t n = in->len - at < rd ? in->len - at : rd;
    if (lg_framer_feed(f, in->p + at, n, 1, b) != 0)
      abort();
    if (b->n >= 1024 || b->data_len >= (1 << 20)) {
      *recs += b->n;
      lg_batch_reset(b);
    }
  }
  lg_framer_flush(f, 1, b);
  *recs += b->n;
  double t = cpu_s() - t0;
  lg_batch_destroy(b);
  lg_framer_destroy(f);
  return t;
}

int main(int argc, char **argv) {
  uint64_t nlines = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000000;
  buf_t cri = {0}, line = {0}, docker = {0};
  make(nlines, &cri, &line, &docker);
  printf("%llu messages; cri %.1f MB (%.0f B/line), line %.1f MB\n",
         (unsigned long long)nlines, cri.len / 1e6, (double)cri.len / nlines,
         line.len / 1e6);
  const struct {
    const char *name;
    lg_format_t fmt;
    const buf_t *in;
  } cases[] = {{"line", LG_FORMAT_LINE, &line},
               {"cri", LG_FORMAT_CRI, &cri},
               {"auto(cri)", LG_FORMAT_AUTO, &cri},
               {"docker", LG_FORMAT_DOCKER, &docker}};
  for (int c = 0; c < 4; c++) {
    double best = 1e9;
    uint64_t recs = 0;
    for (int round = 0; round < (c == 3 ? 1 : 5); round++) {
      double t = run(cases[c].fmt, cases[c].in, &recs);
      if (t < best)
        best = t;
    }
    printf("%-10s %8llu records  %6.1f ns/line  %7.0f MB/s  %.3f CPU-s per "
           "million lines\n",
           cases[c].name, (unsigned long long)recs, best * 1e9 / nlines,
           cases[c].in->len / best / 1e6, best * 1e6 / nlines);
  }
  free(cri.p);
  free(line.p);
  free(docker.p);
  return 0;
}
