#include "core/lg_buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int lg_buf_reserve(lg_buf_t *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return 0;
  size_t need = b->len + extra;
  if (need < b->len)
    return -ENOMEM;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) {
    if (cap > (size_t)-1 / 2)
      return -ENOMEM;
    cap *= 2;
  }
  char *p = realloc(b->data, cap);
  if (p == NULL)
    return -ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int lg_buf_append(lg_buf_t *b, const void *p, size_t len) {
  if (len == 0)
    return 0;
  int rc = lg_buf_reserve(b, len);
  if (rc != 0)
    return rc;
  memcpy(b->data + b->len, p, len);
  b->len += len;
  return 0;
}

int lg_buf_appendf(lg_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return -EINVAL;
  int rc = lg_buf_reserve(b, (size_t)n + 1);
  if (rc != 0)
    return rc;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

void lg_buf_consume(lg_buf_t *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void lg_buf_free(lg_buf_t *b) {
  if (b == NULL)
    return;
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
