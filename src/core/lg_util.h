/*
 * lg_util.h - small helpers every module may use: reading a whole file,
 * replacing a file durably, copying and comparing strings and string
 * vectors, and growing an array.
 *
 * Allocation failures are returned (NULL or -ENOMEM), never logged: the
 * caller knows what the memory was for and says so.
 */
#ifndef LG_UTIL_H
#define LG_UTIL_H

#include <errno.h>
#include <stddef.h>

/* Reads the whole file at `path` into a new buffer, NUL-terminated (the
 * NUL is not counted in *len), which the caller frees. `max` is the
 * largest size accepted, in bytes (0: no limit). Returns 0, -errno from
 * open/read, -EFBIG when the file is larger than `max`, or -ENOMEM; on
 * error *buf and *len are unchanged. */
int lg_util_read_file(const char *path, size_t max, char **buf, size_t *len);

/* Replaces the file `path` with `len` bytes at `data`, durably and
 * atomically: written to "<path>.tmp" (created with permission bits `mode`,
 * e.g. 0600, less the umask), fsync'd, renamed over `path`, and the
 * directory `dir` (the one `path` is in) fsync'd, so after a crash `path`
 * holds either the old or the new bytes, whole. Any thread may call it.
 * Returns 0, or -errno of the step that failed (*step, when `step` is not
 * NULL, gets "create temp file", "write", "fsync", "close" or "rename":
 * the temp file is removed and the old file is unchanged; or "fsync of
 * directory": `path` holds the new bytes, but a machine crash may bring
 * the old ones back, so the caller treats it as failed and writes again).
 * Logs nothing: the caller says what failed, as often as it sees fit. */
int lg_util_write_atomic(const char *dir, const char *path, const void *data,
                         size_t len, unsigned mode, const char **step);

/* A malloc'ed copy of `s`, or NULL when out of memory or `s` is NULL. */
char *lg_util_strdup(const char *s);

/* A malloc'ed copy of `n` strings (the vector and each string), or NULL
 * when out of memory. n == 0 gives a valid empty vector. */
char **lg_util_strv_copy(const char *const *v, size_t n);

/* Frees a vector of `n` malloc'ed strings and the vector. NULL-safe. */
void lg_util_strv_free(char **v, size_t n);

/* 1 when `a` and `b` are both NULL or the same text, else 0. */
int lg_util_str_eq(const char *a, const char *b);

/* 1 when the vectors a[0..na) and b[0..nb) have the same length and equal
 * strings in the same order (lg_util_str_eq: NULL equals only NULL), else
 * 0. */
int lg_util_strv_eq(char *const *a, size_t na, char *const *b, size_t nb);

/* `n` rounded up to a multiple of `unit`, a power of two (0 stays 0): the
 * capacity a buffer cut to `n` is given, so that a few more bytes or
 * entries do not realloc it again. */
static inline size_t lg_util_round_up(size_t n, size_t unit) {
  return (n + unit - 1) & ~(unit - 1);
}

/* Grows the array `p` of `size`-byte elements, with room for `*cap`
 * elements, to room for at least `need` elements: the capacity doubles
 * (from `min` when 0). Returns the array (moved, possibly), with *cap
 * updated, or NULL when out of memory or the size overflows, with `p` and
 * *cap unchanged. Use LG_GROW. */
void *lg_util_grow(void *p, size_t *cap, size_t need, size_t size, size_t min);

/* Makes room for `need` elements in the array `p` whose capacity is the
 * integer lvalue `cap` (any unsigned type; a capacity that type cannot
 * hold is -ENOMEM), doubling from `min` elements. Evaluates to 0, or
 * -ENOMEM with `cap` unchanged (and `p` still valid). */
#define LG_GROW(p, cap, need, min)                                             \
  __extension__({                                                              \
    size_t lg_grow_cap_ = (cap), lg_grow_need_ = (need);                       \
    int lg_grow_rc_ = 0;                                                       \
    if (lg_grow_need_ > lg_grow_cap_) {                                        \
      void *lg_grow_p_ =                                                       \
          lg_util_grow((p), &lg_grow_cap_, lg_grow_need_, sizeof *(p), (min)); \
      __typeof__(cap) lg_grow_c_ = (__typeof__(cap))lg_grow_cap_;              \
      if (lg_grow_p_ != NULL)                                                  \
        (p) = lg_grow_p_;                                                      \
      if (lg_grow_p_ == NULL || (size_t)lg_grow_c_ != lg_grow_cap_)            \
        lg_grow_rc_ = -ENOMEM;                                                 \
      else                                                                     \
        (cap) = lg_grow_c_;                                                    \
    }                                                                          \
    lg_grow_rc_;                                                               \
  })

#endif
