#include "core/lg_metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 8

enum { COUNTER, GAUGE, HISTOGRAM };

/* Histogram bucket bounds in microseconds, and as rendered. */
#define NBUCKETS 13
static const uint64_t bucket_us[NBUCKETS] = {
    1000,   5000,    10000,   25000,   50000,    100000,  250000,
    500000, 1000000, 2500000, 5000000, 10000000, 30000000};
static const char *const bucket_le[NBUCKETS] = {
    "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5",   "1",     "2.5",  "5",     "10",   "30"};

struct lg_metric {
  _Atomic uint64_t value; /* gauges keep an int64 bit pattern */
  char *labels;           /* rendered: k="v",k2="v2" (may be "") */
  /* Histograms: value is the sum in microseconds; count and the
   * per-bucket (non-cumulative) counts are kept here. */
  _Atomic uint64_t count;
  _Atomic uint64_t *buckets;
  struct lg_metric *next;
};

typedef struct family {
  char *name, *help;
  int type;
  lg_metric_t *head, *tail;
  struct family *next;
} family_t;

/* Registration and rendering take the lock; updates never do. Series are
 * only appended, never moved or freed (until reset), so a handle stays
 * valid and renderers can walk the lists while workers add. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static family_t *families, *families_tail;

/* Prometheus metric and label names: [a-zA-Z_:][a-zA-Z0-9_:]* (labels
 * without ':'). */
static int valid_name(const char *s, int label) {
  if (s == NULL || *s == '\0')
    return 0;
  for (const char *p = s; *p; p++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
             (!label && c == ':') || (p != s && c >= '0' && c <= '9');
    if (!ok)
      return 0;
  }
  return 1;
}

/* Label values escape backslash, double quote and line feed; HELP text
 * escapes backslash and line feed (exposition format 0.0.4). */
static int append_escaped(lg_buf_t *b, const char *s, int quote) {
  for (; *s; s++) {
    int rc;
    if (*s == '\\')
      rc = lg_buf_append(b, "\\\\", 2);
    else if (*s == '\n')
      rc = lg_buf_append(b, "\\n", 2);
    else if (quote && *s == '"')
      rc = lg_buf_append(b, "\\\"", 2);
    else
      rc = lg_buf_putc(b, *s);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static char *render_labels(va_list ap) {
  lg_buf_t b = LG_BUF_INIT;
  int n = 0;
  const char *k;
  while ((k = va_arg(ap, const char *)) != NULL) {
    const char *v = va_arg(ap, const char *);
    if (++n > MAX_LABELS || !valid_name(k, 1) || v == NULL)
      goto fail;
    if ((n > 1 && lg_buf_putc(&b, ',') != 0) ||
        lg_buf_appendf(&b, "%s=\"", k) != 0 || append_escaped(&b, v, 1) != 0 ||
        lg_buf_putc(&b, '"') != 0)
      goto fail;
  }
  if (lg_buf_putc(&b, '\0') != 0)
    goto fail;
  return b.data;
fail:
  lg_buf_free(&b);
  return NULL;
}

static lg_metric_t *lookup(int type, const char *name, const char *help,
                           va_list ap) {
  if (!valid_name(name, 0))
    return NULL;
  char *labels = render_labels(ap);
  if (labels == NULL)
    return NULL;
  lg_metric_t *m = NULL;
  pthread_mutex_lock(&mu);
  family_t *f = families;
  while (f != NULL && strcmp(f->name, name) != 0)
    f = f->next;
  if (f == NULL) {
    f = calloc(1, sizeof *f);
    if (f == NULL)
      goto out;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->type = type;
    if (f->name == NULL || f->help == NULL) {
      free(f->name);
      free(f->help);
      free(f);
      goto out;
    }
    if (families_tail)
      families_tail->next = f;
    else
      families = f;
    families_tail = f;
  } else if (f->type != type) {
    goto out;
  }
  for (m = f->head; m != NULL; m = m->next)
    if (strcmp(m->labels, labels) == 0)
      goto out;
  m = calloc(1, sizeof *m);
  if (m == NULL)
    goto out;
  if (type == HISTOGRAM &&
      (m->buckets = calloc(NBUCKETS, sizeof *m->buckets)) == NULL) {
    free(m);
    m = NULL;
    goto out;
  }
  m->labels = labels;
  labels = NULL;
  if (f->tail)
    f->tail->next = m;
  else
    f->head = m;
  f->tail = m;
out:
  pthread_mutex_unlock(&mu);
  free(labels);
  return m;
}

lg_metric_t *lg_metrics_counter(const char *name, const char *help, ...) {
  va_list ap;
  va_start(ap, help);
  lg_metric_t *m = lookup(COUNTER, name, help, ap);
  va_end(ap);
  return m;
}

lg_metric_t *lg_metrics_gauge(const char *name, const char *help, ...) {
  va_list ap;
  va_start(ap, help);
  lg_metric_t *m = lookup(GAUGE, name, help, ap);
  va_end(ap);
  return m;
}

lg_metric_t *lg_metrics_histogram(const char *name, const char *help, ...) {
  va_list ap;
  va_start(ap, help);
  lg_metric_t *m = lookup(HISTOGRAM, name, help, ap);
  va_end(ap);
  return m;
}

void lg_metric_observe_us(lg_metric_t *m, uint64_t us) {
  if (m == NULL || m->buckets == NULL)
    return;
  for (int i = 0; i < NBUCKETS; i++)
    if (us <= bucket_us[i]) {
      atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
      break;
    }
  atomic_fetch_add_explicit(&m->value, us, memory_order_relaxed);
  atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
}

/* One histogram series: cumulative buckets, sum and count. */
static int render_histogram(lg_buf_t *out, const family_t *f, lg_metric_t *m) {
  const char *sep = m->labels[0] ? "," : "";
  uint64_t cum = 0;
  int rc = 0;
  for (int i = 0; i < NBUCKETS && rc == 0; i++) {
    cum += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
    rc = lg_buf_appendf(out, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", f->name,
                        m->labels, sep, bucket_le[i], cum);
  }
  uint64_t count = atomic_load_explicit(&m->count, memory_order_relaxed);
  uint64_t sum = atomic_load_explicit(&m->value, memory_order_relaxed);
  const char *lo = m->labels[0] ? "{" : "", *lc = m->labels[0] ? "}" : "";
  if (rc == 0)
    rc = lg_buf_appendf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n",
                        f->name, m->labels, sep, count);
  if (rc == 0)
    rc =
        lg_buf_appendf(out, "%s_sum%s%s%s %" PRIu64 ".%06" PRIu64 "\n", f->name,
                       lo, m->labels, lc, sum / 1000000, sum % 1000000);
  if (rc == 0)
    rc = lg_buf_appendf(out, "%s_count%s%s%s %" PRIu64 "\n", f->name, lo,
                        m->labels, lc, count);
  return rc;
}

void lg_metric_add(lg_metric_t *m, uint64_t n) {
  if (m != NULL)
    atomic_fetch_add_explicit(&m->value, n, memory_order_relaxed);
}

void lg_metric_sub(lg_metric_t *m, uint64_t n) {
  if (m != NULL)
    atomic_fetch_sub_explicit(&m->value, n, memory_order_relaxed);
}

void lg_metric_set(lg_metric_t *m, int64_t v) {
  if (m != NULL)
    atomic_store_explicit(&m->value, (uint64_t)v, memory_order_relaxed);
}

int64_t lg_metric_get(const lg_metric_t *m) {
  if (m == NULL)
    return 0;
  return (int64_t)atomic_load_explicit(&((lg_metric_t *)m)->value,
                                       memory_order_relaxed);
}

int lg_metrics_render(lg_buf_t *out) {
  int rc = 0;
  pthread_mutex_lock(&mu);
  for (family_t *f = families; f != NULL && rc == 0; f = f->next) {
    rc = lg_buf_appendf(out, "# HELP %s ", f->name);
    if (rc == 0)
      rc = append_escaped(out, f->help, 0);
    if (rc == 0)
      rc = lg_buf_appendf(out, "\n# TYPE %s %s\n", f->name,
                          f->type == COUNTER ? "counter"
                          : f->type == GAUGE ? "gauge"
                                             : "histogram");
    for (lg_metric_t *m = f->head; m != NULL && rc == 0; m = m->next) {
      if (f->type == HISTOGRAM) {
        rc = render_histogram(out, f, m);
        continue;
      }
      uint64_t v = atomic_load_explicit(&m->value, memory_order_relaxed);
      const char *lo = m->labels[0] ? "{" : "", *lc = m->labels[0] ? "}" : "";
      if (f->type == COUNTER)
        rc = lg_buf_appendf(out, "%s%s%s%s %" PRIu64 "\n", f->name, lo,
                            m->labels, lc, v);
      else
        rc = lg_buf_appendf(out, "%s%s%s%s %" PRId64 "\n", f->name, lo,
                            m->labels, lc, (int64_t)v);
    }
  }
  pthread_mutex_unlock(&mu);
  return rc;
}

void lg_metrics_reset(void) {
  pthread_mutex_lock(&mu);
  family_t *f = families;
  families = families_tail = NULL;
  pthread_mutex_unlock(&mu);
  while (f != NULL) {
    family_t *fn = f->next;
    lg_metric_t *m = f->head;
    while (m != NULL) {
      lg_metric_t *mn = m->next;
      free(m->labels);
      free(m->buckets);
      free(m);
      m = mn;
    }
    free(f->name);
    free(f->help);
    free(f);
    f = fn;
  }
}
