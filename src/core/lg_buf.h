/*
 * lg_buf.h - growable byte buffer.
 *
 * Used for encoded output, framer carry-over and anything that appends
 * bytes. Growth doubles the capacity; allocation failure is reported as
 * -ENOMEM and leaves the buffer unchanged.
 */
#ifndef LG_BUF_H
#define LG_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct lg_buf {
  char *data;
  size_t len; /* bytes in use */
  size_t cap; /* bytes allocated */
} lg_buf_t;

#define LG_BUF_INIT                                                            \
  { NULL, 0, 0 }

/* Ensures room for `extra` more bytes. Returns 0 or -ENOMEM. */
int lg_buf_reserve(lg_buf_t *b, size_t extra);

/* Appends `len` bytes. Returns 0 or -ENOMEM. */
int lg_buf_append(lg_buf_t *b, const void *p, size_t len);

/* Appends a printf-formatted string. Returns 0, -ENOMEM or -EINVAL. */
int lg_buf_appendf(lg_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Drops the first `n` bytes, moving the rest to the front. */
void lg_buf_consume(lg_buf_t *b, size_t n);

/* Frees the memory; the buffer is empty and reusable afterwards. NULL-safe. */
void lg_buf_free(lg_buf_t *b);

static inline int lg_buf_putc(lg_buf_t *b, char c) {
  if (b->len == b->cap && lg_buf_reserve(b, 1) != 0)
    return -12; /* -ENOMEM */
  b->data[b->len++] = c;
  return 0;
}

#endif
